//! The alert webhook sink and what tests read back: `POST /alerts`, `GET /mock/calls`,
//! `POST /mock/reset`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::state::MockState;

/// Records an alert. A body that is not JSON is kept as a string.
pub async fn alert(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let value = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    state.record_alert(value);
    (StatusCode::OK, "ok").into_response()
}

/// `GET /mock/calls`: counts of everything the mock has seen since start or the last reset.
pub async fn calls(State(state): State<Arc<MockState>>) -> Json<Value> {
    Json(state.calls_json())
}

/// `POST /mock/reset`: forgets recorded calls, spent tokens and conversation states.
pub async fn reset(State(state): State<Arc<MockState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

/// Any other path.
pub async fn not_found() -> Response {
    let body = json!({"error": "mock-origin has no such endpoint"});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
