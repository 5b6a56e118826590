//! Chatwoot's application API, as an agent bot sees it.
//!
//! - `POST /api/v1/accounts/{account}/conversations/{id}/toggle_status` with
//!   `{"status": "open"|"pending"|"resolved"|"snoozed"}` (no status toggles open/resolved).
//! - `POST /api/v1/accounts/{account}/conversations/{id}/messages` with `{"content", ...}`.
//!
//! Both need the `api_access_token` header (`--chatwoot-token`, an agent bot's token). Every
//! conversation starts `pending` (owned by the bot). As in Chatwoot, a bot moving a pending
//! conversation to `open` is a handoff whose reply carries `"success": null`: check the HTTP
//! status and `current_status`, not `success`. Messages posted after the handoff are counted
//! in `/mock/calls` under `messages_after_handoff`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::state::MockState;
use super::text::unix_secs;

const STATUSES: [&str; 4] = ["open", "pending", "resolved", "snoozed"];

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// An error reply not yet turned into a response.
type Refusal = (StatusCode, Value);

/// Checks the token and the path; `Err` is the response to send.
fn admit(
    state: &MockState,
    headers: &HeaderMap,
    account: &str,
    conversation: &str,
) -> Result<u64, Refusal> {
    match headers
        .get("api_access_token")
        .and_then(|v| v.to_str().ok())
    {
        None => {
            let body = json!({"errors": ["You need to sign in or sign up before continuing."]});
            return Err((StatusCode::UNAUTHORIZED, body));
        }
        Some(token) if token != state.args.chatwoot_token => {
            return Err((
                StatusCode::UNAUTHORIZED,
                json!({"error": "Invalid Access Token"}),
            ));
        }
        Some(_) => {}
    }
    // Chatwoot keeps conversation ids in a 32-bit column: a larger one cannot exist.
    match (account.parse::<u64>(), conversation.parse::<u64>()) {
        (Ok(_), Ok(id)) if id <= i32::MAX as u64 => Ok(id),
        _ => Err((
            StatusCode::NOT_FOUND,
            json!({"error": "Resource could not be found"}),
        )),
    }
}

/// Reads an optional JSON object body; `Err` is a 400.
fn json_body(body: &Bytes) -> Result<Value, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err((
            StatusCode::BAD_REQUEST,
            json!({"error": "The body is not a JSON object."}),
        )),
    }
}

/// Handles `toggle_status`.
pub async fn toggle_status(
    State(state): State<Arc<MockState>>,
    Path((account, conversation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let requested = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("status").cloned())
        .unwrap_or(Value::Null);
    let response = decide_toggle(&state, &headers, &account, &conversation, &body);
    let mut rec = state.record();
    *rec.toggle_status.entry(conversation.clone()).or_default() += 1;
    let current = rec.conversation_status.get(&conversation).cloned();
    rec.toggle_status_log.push(json!({
        "account": account,
        "conversation": conversation,
        "requested": requested,
        "http_status": response.status().as_u16(),
        "current_status": current.unwrap_or_else(|| "pending".to_owned()),
    }));
    response
}

fn decide_toggle(
    state: &MockState,
    headers: &HeaderMap,
    account: &str,
    conversation: &str,
    body: &Bytes,
) -> Response {
    let id = match admit(state, headers, account, conversation) {
        Ok(id) => id,
        Err((status, body)) => return reply(status, body),
    };
    let body = match json_body(body) {
        Ok(body) => body,
        Err((status, body)) => return reply(status, body),
    };
    let requested = match body.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if STATUSES.contains(&s.as_str()) => Some(s.clone()),
        Some(other) => {
            let shown = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            let body = json!({"error": format!("'{shown}' is not a valid status")});
            return reply(StatusCode::UNPROCESSABLE_ENTITY, body);
        }
    };
    let mut rec = state.record();
    let current = rec
        .conversation_status
        .get(conversation)
        .cloned()
        .unwrap_or_else(|| "pending".to_owned());
    let (next, success) = match requested {
        // An agent bot handing a pending conversation over: Chatwoot sets no success flag.
        Some(s) if s == "open" && current == "pending" => (s, Value::Null),
        Some(s) => (s, Value::Bool(true)),
        None if current == "open" => ("resolved".to_owned(), Value::Bool(true)),
        None => ("open".to_owned(), Value::Bool(true)),
    };
    rec.conversation_status
        .insert(conversation.to_owned(), next.clone());
    reply(
        StatusCode::OK,
        json!({
            "meta": {},
            "payload": {
                "success": success,
                "conversation_id": id,
                "current_status": next,
                "snoozed_until": null,
            }
        }),
    )
}

/// Handles `messages` (a bot posting into a conversation).
pub async fn create_message(
    State(state): State<Arc<MockState>>,
    Path((account, conversation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = decide_message(&state, &headers, &account, &conversation, &body);
    let mut rec = state.record();
    *rec.messages.entry(conversation.clone()).or_default() += 1;
    let handed_over = rec
        .conversation_status
        .get(&conversation)
        .is_some_and(|s| s != "pending");
    if handed_over && response.status() == StatusCode::OK {
        *rec.messages_after_handoff.entry(conversation).or_default() += 1;
    }
    response
}

fn decide_message(
    state: &MockState,
    headers: &HeaderMap,
    account: &str,
    conversation: &str,
    body: &Bytes,
) -> Response {
    let id = match admit(state, headers, account, conversation) {
        Ok(id) => id,
        Err((status, body)) => return reply(status, body),
    };
    let body = match json_body(body) {
        Ok(body) => body,
        Err((status, body)) => return reply(status, body),
    };
    let content = match body.get("content") {
        Some(Value::String(c)) if !c.trim().is_empty() => c.clone(),
        _ => {
            let body = json!({"error": "Content can't be blank"});
            return reply(StatusCode::UNPROCESSABLE_ENTITY, body);
        }
    };
    let message_type = match body
        .get("message_type")
        .and_then(Value::as_str)
        .unwrap_or("outgoing")
    {
        "incoming" => 0,
        "outgoing" => 1,
        "activity" => 2,
        "template" => 3,
        other => {
            let body = json!({"error": format!("'{other}' is not a valid message_type")});
            return reply(StatusCode::UNPROCESSABLE_ENTITY, body);
        }
    };
    let private = body
        .get("private")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let message_id = state.next_seq();
    reply(
        StatusCode::OK,
        json!({
            "id": message_id,
            "content": content,
            "inbox_id": 1,
            "conversation_id": id,
            "message_type": message_type,
            "content_type": body.get("content_type").and_then(Value::as_str).unwrap_or("text"),
            "status": "sent",
            "content_attributes": body.get("content_attributes").cloned().unwrap_or(json!({})),
            "created_at": unix_secs(),
            "private": private,
            "source_id": null,
            "sender": {"id": 1, "name": "tidegate", "type": "agent_bot"},
        }),
    )
}
