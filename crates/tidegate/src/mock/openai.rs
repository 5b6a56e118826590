//! The OpenAI-compatible chat origin: `POST /v1/chat/completions`.
//!
//! Blocking replies are a `chat.completion` object with `usage`. Streams are SSE: a role
//! chunk, content chunks, a `finish_reason` chunk, a usage chunk (empty `choices`) only when
//! `stream_options.include_usage` is true, then `data: [DONE]`. Errors use OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::state::{InflightGuard, MockState};
use super::steer::{Reply, Steer, Usage};
use super::text::{default_reply, estimate_tokens, stream_pieces, unix_secs};
use super::{check_bearer, request_user};

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Handles `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let guard = state.enter();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let user = request_user(&headers, parsed.as_ref());
    let model = parsed
        .as_ref()
        .and_then(|b| b.get("model"))
        .and_then(Value::as_str);
    state.record_chat("openai", &user, model);
    let cap = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|f| parsed.as_ref()?.get(f)?.as_u64())
        .unwrap_or(0);
    state.record_max_tokens(&user, cap);

    if let Err(missing) = check_bearer(&headers, state.args.api_key.as_deref()) {
        let (message, code) = if missing {
            (
                "No API key was provided. Send it as 'Authorization: Bearer KEY'.",
                Value::Null,
            )
        } else {
            ("Incorrect API key provided.", json!("invalid_api_key"))
        };
        return send(
            error(
                StatusCode::UNAUTHORIZED,
                message,
                "invalid_request_error",
                Value::Null,
                code,
            ),
            &state,
            guard,
        );
    }
    let Some(body) = parsed else {
        let message = "The request body is not valid JSON.";
        return send(invalid(message, Value::Null, Value::Null), &state, guard);
    };
    let steer = match Steer::from_body(&body) {
        Ok(steer) => steer,
        Err(message) => return send(invalid(&message, json!("mock"), Value::Null), &state, guard),
    };
    let request = match validate(&body) {
        Ok(request) => request,
        Err((message, param, code)) => return send(invalid(&message, param, code), &state, guard),
    };

    let latency = steer.latency_ms.map_or_else(
        || state.latency(guard.others),
        std::time::Duration::from_millis,
    );
    tokio::time::sleep(latency).await;

    if let Some(status) = steer.status {
        let mut reply = steered_error(status).with_retry_after(&steer);
        reply.headers.insert("x-request-id", request_id(&state));
        return reply.deliver(&steer, state.chunk_delay(), guard);
    }

    let text = steer.reply_text(|| default_reply(&request.model, &request.question));
    let usage = (!steer.omit_usage).then(|| steer.usage(request.prompt_tokens, &text));
    let id = format!("chatcmpl-mock{:06}", state.next_seq());
    let created = unix_secs();
    let mut reply = if request.stream {
        stream_reply(&id, created, &request, &text, usage, steer.stream_error)
    } else {
        Reply::json(
            StatusCode::OK,
            &completion(&id, created, &request.model, &text, usage),
        )
    };
    reply.headers.insert("x-request-id", request_id(&state));
    let processing_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    reply
        .headers
        .insert("openai-processing-ms", HeaderValue::from(processing_ms));
    reply.deliver(&steer, state.chunk_delay(), guard)
}

/// What the mock needs from a valid request.
#[derive(Debug)]
struct ChatRequest {
    model: String,
    question: String,
    prompt_tokens: u64,
    stream: bool,
    include_usage: bool,
}

fn send(reply: Reply, state: &MockState, guard: InflightGuard) -> Response {
    let mut reply = reply;
    reply.headers.insert("x-request-id", request_id(state));
    reply.deliver(&Steer::default(), state.chunk_delay(), guard)
}

fn request_id(state: &MockState) -> HeaderValue {
    HeaderValue::from_str(&format!("req_mock{:08}", state.next_seq()))
        .unwrap_or_else(|_| HeaderValue::from_static("req_mock"))
}

/// An OpenAI error reply.
fn error(status: StatusCode, message: &str, kind: &str, param: Value, code: Value) -> Reply {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    Reply::json(status, &body)
}

fn invalid(message: &str, param: Value, code: Value) -> Reply {
    error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        param,
        code,
    )
}

/// The error OpenAI sends with `status`.
fn steered_error(status: u16) -> Reply {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (message, kind, err_code) = match status {
        401 => (
            "Incorrect API key provided.",
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        403 => (
            "This project is not allowed to use the model.",
            "invalid_request_error",
            json!("model_not_allowed"),
        ),
        404 => (
            "The model does not exist or you have no access to it.",
            "invalid_request_error",
            json!("model_not_found"),
        ),
        429 => (
            "Rate limit reached for requests; try again later.",
            "requests",
            json!("rate_limit_exceeded"),
        ),
        503 => (
            "The model is overloaded right now; try again later.",
            "server_error",
            Value::Null,
        ),
        500..=599 => (
            "The server hit an error while processing the request; retry it.",
            "server_error",
            Value::Null,
        ),
        _ => (
            "The request was refused.",
            "invalid_request_error",
            Value::Null,
        ),
    };
    error(code, message, kind, Value::Null, err_code)
}

/// A 400 not yet turned into a reply: message, `param`, `code`.
type Invalid = (String, Value, Value);

fn bad(message: &str, param: Value, code: Value) -> Invalid {
    (message.to_owned(), param, code)
}

/// Checks the request as OpenAI does and extracts what the reply needs.
fn validate(body: &Value) -> Result<ChatRequest, Invalid> {
    if !body.is_object() {
        return Err(bad(
            "The request body must be a JSON object.",
            Value::Null,
            json!("invalid_type"),
        ));
    }
    let model = match body.get("model") {
        None | Some(Value::Null) => {
            return Err(bad(
                "A 'model' parameter is required.",
                Value::Null,
                Value::Null,
            ))
        }
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(bad(
                "Invalid type for 'model': expected a non-empty string.",
                json!("model"),
                json!("invalid_type"),
            ))
        }
    };
    let messages = match body.get("messages") {
        None => {
            return Err(bad(
                "Missing required parameter: 'messages'.",
                json!("messages"),
                json!("missing_required_parameter"),
            ))
        }
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(bad(
                "Invalid 'messages': the array is empty; at least one message is required.",
                json!("messages"),
                json!("empty_array"),
            ))
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(bad(
                "Invalid type for 'messages': expected an array of objects.",
                json!("messages"),
                json!("invalid_type"),
            ))
        }
    };
    let mut prompt_tokens = 3u64;
    let mut question = String::new();
    for (i, message) in messages.iter().enumerate() {
        let param = json!(format!("messages[{i}].role"));
        let role = match message.get("role") {
            None => {
                return Err(bad(
                    &format!("Missing required parameter: 'messages[{i}].role'."),
                    param,
                    json!("missing_required_parameter"),
                ))
            }
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.as_str(),
            Some(other) => {
                return Err(bad(
                    &format!("Invalid value for 'messages[{i}].role': {other}."),
                    param,
                    json!("invalid_value"),
                ))
            }
        };
        let text = match message.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            Some(_) => {
                return Err(bad(
                    &format!("Invalid type for 'messages[{i}].content': expected text or parts."),
                    json!(format!("messages[{i}].content")),
                    json!("invalid_type"),
                ))
            }
        };
        prompt_tokens = prompt_tokens.saturating_add(estimate_tokens(&text) + 4);
        if role == "user" {
            question = text;
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(bad(
                "Invalid type for 'stream': expected a boolean.",
                json!("stream"),
                json!("invalid_type"),
            ))
        }
    };
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(_) if !stream => {
            return Err(bad(
                "'stream_options' is only allowed when 'stream' is true.",
                json!("stream_options"),
                json!("invalid_value"),
            ))
        }
        Some(opts) => match opts.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(bad(
                    "Invalid type for 'stream_options.include_usage': expected a boolean.",
                    json!("stream_options.include_usage"),
                    json!("invalid_type"),
                ))
            }
        },
    };
    Ok(ChatRequest {
        model,
        question,
        prompt_tokens,
        stream,
        include_usage,
    })
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.total,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    })
}

/// A blocking `chat.completion` object.
fn completion(id: &str, created: u64, model: &str, text: &str, usage: Option<Usage>) -> Value {
    let mut body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    });
    if let (Some(u), Some(obj)) = (usage, body.as_object_mut()) {
        obj.insert("usage".to_owned(), usage_json(u));
    }
    body
}

/// The SSE events of a streamed completion, one write per event.
fn stream_reply(
    id: &str,
    created: u64,
    request: &ChatRequest,
    text: &str,
    usage: Option<Usage>,
    stream_error: bool,
) -> Reply {
    let with_usage_field = request.include_usage && usage.is_some();
    let chunk = |choices: Value, usage: Value| {
        let mut obj = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": choices,
        });
        if with_usage_field {
            if let Some(map) = obj.as_object_mut() {
                map.insert("usage".to_owned(), usage);
            }
        }
        Bytes::from(format!("data: {obj}\n\n"))
    };
    let delta = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let mut events = vec![chunk(
        delta(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
        Value::Null,
    )];
    for piece in stream_pieces(text) {
        events.push(chunk(
            delta(json!({"content": piece}), Value::Null),
            Value::Null,
        ));
    }
    if stream_error {
        let err = json!({"error": {"message": "The server hit an error while generating the reply.", "type": "server_error", "param": null, "code": null}});
        events.push(Bytes::from(format!("data: {err}\n\n")));
        return Reply::sse(events);
    }
    events.push(chunk(delta(json!({}), json!("stop")), Value::Null));
    if let (true, Some(u)) = (request.include_usage, usage) {
        events.push(chunk(json!([]), usage_json(u)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::sse(events)
}
