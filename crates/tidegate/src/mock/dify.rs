//! The Dify chat-app origin: `POST /v1/chat-messages`.
//!
//! Blocking replies are one `message` object with `metadata.usage`. Streams (`response_mode:
//! "streaming"`) are SSE `data:` lines with events `message` (a delta in `answer`),
//! optionally `message_replace`, then `message_end` (usage in `metadata.usage`) or `error`;
//! while the answer is not ready for longer than the ping interval, `event: ping` keeps the
//! connection alive. Errors use Dify's shape: `{"code", "message", "status"}`.
//!
//! A `conversation_id` must be one this mock created for the same user, as in Dify (else
//! 404 "Conversation Not Exists.").

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::state::{InflightGuard, MockState};
use super::steer::{Pings, Reply, Steer, Usage, DIFY_PING_INTERVAL};
use super::text::{default_reply, estimate_tokens, stream_pieces, unix_secs};
use super::{check_bearer, request_user};

/// Tokens a Dify app's own prompt template adds to every query.
const APP_PROMPT_TOKENS: u64 = 50;
/// The model name used in replies when `inputs.model` is absent.
const DEFAULT_MODEL: &str = "dify-app";

/// Handles `POST /v1/chat-messages`.
pub async fn chat_messages(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let guard = state.enter();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let user = request_user(&headers, parsed.as_ref());
    let model = parsed.as_ref().map(model_of);
    state.record_chat("dify", &user, model.as_deref());

    if let Err(missing) = check_bearer(&headers, state.args.api_key.as_deref()) {
        let message = if missing {
            "Authorization header must be given as 'Bearer <app key>'."
        } else {
            "Access token is invalid."
        };
        return send(
            error(StatusCode::UNAUTHORIZED, "unauthorized", message),
            &state,
            guard,
        );
    }
    let Some(body) = parsed else {
        let reply = error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The body is not valid JSON.",
        );
        return send(reply, &state, guard);
    };
    let steer = match Steer::from_body(&body) {
        Ok(steer) => steer,
        Err(message) => return send(invalid(&message), &state, guard),
    };
    let request = match validate(&body) {
        Ok(request) => request,
        Err(message) => return send(invalid(&message), &state, guard),
    };
    let conversation_id = match &request.conversation_id {
        Some(id) => {
            let owner = state.record().dify_conversations.get(id).cloned();
            if owner.as_deref() != Some(request.user.as_str()) {
                let reply = error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "Conversation Not Exists.",
                );
                return send(reply, &state, guard);
            }
            id.clone()
        }
        None => state.next_uuid(),
    };

    let latency = steer
        .latency_ms
        .map_or_else(|| state.latency(guard.others), Duration::from_millis);
    let ping_every = steer
        .ping_interval_ms
        .map_or(DIFY_PING_INTERVAL, Duration::from_millis);
    let pinged = request.streaming && steer.status.is_none() && latency > ping_every;
    if !pinged {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = steer.status {
        let reply = steered_error(status).with_retry_after(&steer);
        return reply.deliver(&steer, state.chunk_delay(), guard);
    }
    if request.conversation_id.is_none() {
        state
            .record()
            .dify_conversations
            .insert(conversation_id.clone(), request.user.clone());
    }

    let model = model_of(&body);
    let text = steer.reply_text(|| default_reply(&model, &request.query));
    let prompt = estimate_tokens(&request.query) + APP_PROMPT_TOKENS;
    let usage = (!steer.omit_usage).then(|| steer.usage(prompt, &text));
    let ids = Ids {
        task: state.next_uuid(),
        message: state.next_uuid(),
        conversation: conversation_id,
        created: unix_secs(),
    };
    let latency_s = latency.as_secs_f64();
    let mut reply = if request.streaming {
        stream_reply(&ids, &text, usage, latency_s, &steer)
    } else {
        let mut body = json!({
            "event": "message",
            "task_id": ids.task,
            "id": ids.message,
            "message_id": ids.message,
            "conversation_id": ids.conversation,
            "mode": "chat",
            "answer": text,
            "metadata": metadata(usage, latency_s),
            "created_at": ids.created,
        });
        if let Some(obj) = body.as_object_mut() {
            obj.insert("from_variable_selector".to_owned(), Value::Null);
        }
        Reply::json(StatusCode::OK, &body)
    };
    if pinged {
        reply.pings = Some(Pings {
            wait: latency,
            every: ping_every,
            ping: Bytes::from_static(b"event: ping\n\n"),
        });
    }
    reply.deliver(&steer, state.chunk_delay(), guard)
}

/// The model a Dify request names: `inputs.model`, else `dify-app`.
fn model_of(body: &Value) -> String {
    body.get("inputs")
        .and_then(|i| i.get("model"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(DEFAULT_MODEL)
        .to_owned()
}

#[derive(Debug)]
struct ChatRequest {
    query: String,
    user: String,
    conversation_id: Option<String>,
    streaming: bool,
}

#[derive(Debug)]
struct Ids {
    task: String,
    message: String,
    conversation: String,
    created: u64,
}

fn send(reply: Reply, state: &MockState, guard: InflightGuard) -> Response {
    reply.deliver(&Steer::default(), state.chunk_delay(), guard)
}

/// A Dify error reply.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"code": code, "message": message, "status": status.as_u16()}),
    )
}

fn invalid(message: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, "invalid_param", message)
}

/// The error Dify sends with `status`.
fn steered_error(status: u16) -> Reply {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (name, message) = match status {
        400 => ("invalid_param", "The request was refused."),
        401 => ("unauthorized", "Access token is invalid."),
        403 => ("forbidden", "The app is not available to this key."),
        404 => ("not_found", "Conversation Not Exists."),
        429 => ("too_many_requests", "Too many requests; try again later."),
        500..=599 => ("internal_server_error", "The server hit an internal error."),
        _ => ("bad_request", "The request was refused."),
    };
    error(code, name, message)
}

/// Checks the request as Dify's service API does.
fn validate(body: &Value) -> Result<ChatRequest, String> {
    if !body.is_object() {
        return Err("The body must be a JSON object.".into());
    }
    let query = match body.get("query") {
        Some(Value::String(q)) => q.clone(),
        None | Some(Value::Null) => return Err("'query' is required.".into()),
        Some(_) => return Err("'query' must be a string.".into()),
    };
    match body.get("inputs") {
        Some(Value::Object(_)) => {}
        None | Some(Value::Null) => return Err("'inputs' is required (use {} for none).".into()),
        Some(_) => return Err("'inputs' must be an object.".into()),
    }
    let user = match body.get("user") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => return Err("'user' is required: a non-empty string.".into()),
    };
    let streaming = match body.get("response_mode") {
        None | Some(Value::Null) => false,
        Some(Value::String(m)) if m == "blocking" => false,
        Some(Value::String(m)) if m == "streaming" => true,
        Some(_) => return Err("'response_mode' must be 'blocking' or 'streaming'.".into()),
    };
    let conversation_id = match body.get("conversation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.is_empty() => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(_) => return Err("'conversation_id' must be a string.".into()),
    };
    Ok(ChatRequest {
        query,
        user,
        conversation_id,
        streaming,
    })
}

/// `metadata` with Dify's usage object (prices in strings, as Dify sends them).
fn metadata(usage: Option<Usage>, latency_s: f64) -> Value {
    let mut meta = json!({"retriever_resources": []});
    if let (Some(u), Some(obj)) = (usage, meta.as_object_mut()) {
        // Prices per token, as configured in a typical Dify model provider.
        let prompt_price = u.prompt as f64 * 0.000_001;
        let completion_price = u.completion as f64 * 0.000_002;
        obj.insert(
            "usage".to_owned(),
            json!({
                "prompt_tokens": u.prompt,
                "prompt_unit_price": "0.001",
                "prompt_price_unit": "0.001",
                "prompt_price": format!("{prompt_price:.7}"),
                "completion_tokens": u.completion,
                "completion_unit_price": "0.002",
                "completion_price_unit": "0.001",
                "completion_price": format!("{completion_price:.7}"),
                "total_tokens": u.total,
                "total_price": format!("{:.7}", prompt_price + completion_price),
                "currency": "USD",
                "latency": latency_s,
            }),
        );
    }
    meta
}

/// The SSE events of a streamed answer, one write per event.
fn stream_reply(
    ids: &Ids,
    text: &str,
    usage: Option<Usage>,
    latency_s: f64,
    steer: &Steer,
) -> Reply {
    let event = |v: Value| Bytes::from(format!("data: {v}\n\n"));
    let mut events: Vec<Bytes> = stream_pieces(text)
        .into_iter()
        .map(|piece| {
            event(json!({
                "event": "message",
                "task_id": ids.task,
                "id": ids.message,
                "message_id": ids.message,
                "conversation_id": ids.conversation,
                "answer": piece,
                "created_at": ids.created,
            }))
        })
        .collect();
    if let Some(replacement) = &steer.replace {
        events.push(event(json!({
            "event": "message_replace",
            "task_id": ids.task,
            "message_id": ids.message,
            "conversation_id": ids.conversation,
            "answer": replacement,
            "created_at": ids.created,
        })));
    }
    if steer.stream_error {
        events.push(event(json!({
            "event": "error",
            "task_id": ids.task,
            "message_id": ids.message,
            "status": 500,
            "code": "internal_server_error",
            "message": "The model provider failed while generating the answer.",
        })));
    } else {
        events.push(event(json!({
            "event": "message_end",
            "task_id": ids.task,
            "id": ids.message,
            "message_id": ids.message,
            "conversation_id": ids.conversation,
            "metadata": metadata(usage, latency_s),
        })));
    }
    Reply::sse(events)
}
