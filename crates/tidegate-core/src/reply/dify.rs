//! Dify chat apps: rewriting `message` / `message_replace` events and whole blocking replies.

use serde_json::{json, Map, Value};

use super::codes::Scanner;
use super::report::Usage;
use super::sse::{self, Event};
use super::{Ctx, Seen};

/// Fields copied from the origin's events into events the filter adds.
const ENVELOPE_FIELDS: [&str; 5] = [
    "task_id",
    "message_id",
    "conversation_id",
    "id",
    "created_at",
];

/// State of one Dify stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stream {
    scanner: Scanner,
    /// `task_id`, `message_id`, `conversation_id`... for events the filter adds.
    envelope: Option<Map<String, Value>>,
}

impl Stream {
    /// Handles one event; writes what the client gets to `out`.
    pub(crate) fn on_event(&mut self, ev: &Event, cx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Seen {
        let parsed = ev
            .data_str()
            .and_then(|d| serde_json::from_str::<Value>(d).ok());
        let Some(Value::Object(mut obj)) = parsed else {
            // `event: ping`, comments, or data we do not understand.
            out.extend_from_slice(&ev.raw);
            return Seen::Other;
        };
        if self.envelope.is_none() && obj.contains_key("task_id") {
            self.envelope = Some(envelope_of(&obj));
        }
        let kind = obj
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match kind.as_str() {
            "message" | "agent_message" => {
                let Some(old) = obj.get("answer").and_then(Value::as_str) else {
                    out.extend_from_slice(&ev.raw);
                    return Seen::Other;
                };
                let new = cx.rewrite(&mut self.scanner, old, false, true);
                if new == old {
                    out.extend_from_slice(&ev.raw);
                } else {
                    obj.insert("answer".to_owned(), Value::String(new));
                    out.extend_from_slice(&ev.with_data(&Value::Object(obj).to_string()));
                }
                Seen::Other
            }
            "message_replace" => {
                let Some(old) = obj.get("answer").and_then(Value::as_str) else {
                    out.extend_from_slice(&ev.raw);
                    return Seen::Other;
                };
                // Everything so far is replaced, the held-back tail included: drop it.
                self.scanner = Scanner::default();
                cx.report.reset_relayed();
                let new = cx.rewrite(&mut self.scanner, old, true, true);
                if new == old {
                    out.extend_from_slice(&ev.raw);
                } else {
                    obj.insert("answer".to_owned(), Value::String(new));
                    out.extend_from_slice(&ev.with_data(&Value::Object(obj).to_string()));
                }
                Seen::Other
            }
            "message_end" => {
                self.flush(cx, out);
                if let Some(u) = obj.get("metadata").and_then(|m| m.get("usage")) {
                    if let Some(u) = Usage::from_json(u) {
                        cx.report.usage = Some(u);
                    }
                }
                out.extend_from_slice(&ev.raw);
                Seen::Terminator
            }
            "error" => {
                self.flush(cx, out);
                let msg = obj
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("origin error");
                cx.report.origin_error(msg);
                out.extend_from_slice(&ev.raw);
                Seen::Error
            }
            _ => {
                out.extend_from_slice(&ev.raw);
                Seen::Other
            }
        }
    }

    /// Releases held text as a `message` event of its own.
    pub(crate) fn flush(&mut self, cx: &mut Ctx<'_>, out: &mut Vec<u8>) {
        let text = cx.rewrite(&mut self.scanner, "", true, true);
        if text.is_empty() {
            return;
        }
        let mut ev = self.envelope.clone().unwrap_or_default();
        ev.insert("event".to_owned(), json!("message"));
        ev.insert("answer".to_owned(), Value::String(text));
        out.extend_from_slice(&sse::data_event(&Value::Object(ev).to_string()));
    }

    /// The error event that ends a stream which did not finish cleanly.
    pub(crate) fn error_event(&self, code: &str, message: &str) -> Vec<u8> {
        let mut ev = self.envelope.clone().unwrap_or_default();
        ev.remove("id");
        ev.remove("created_at");
        ev.insert("event".to_owned(), json!("error"));
        ev.insert("status".to_owned(), json!(502));
        ev.insert("code".to_owned(), json!(code));
        ev.insert("message".to_owned(), json!(message));
        sse::data_event(&Value::Object(ev).to_string())
    }
}

fn envelope_of(obj: &Map<String, Value>) -> Map<String, Value> {
    ENVELOPE_FIELDS
        .iter()
        .filter_map(|k| obj.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect()
}

/// A Dify-style error body for a whole reply that could not be relayed.
pub(crate) fn error_body(code: &str, message: &str) -> Value {
    json!({"status": 502, "code": code, "message": message})
}

/// Rewrites a whole blocking reply in place.
pub(crate) fn rewrite_body(body: &mut Value, cx: &mut Ctx<'_>) -> Seen {
    if let Some(u) = body.pointer("/metadata/usage").and_then(Usage::from_json) {
        cx.report.usage = Some(u);
    }
    match body.get_mut("answer") {
        Some(Value::String(text)) => {
            *text = cx.rewrite(&mut Scanner::default(), text, true, true);
            Seen::Terminator
        }
        _ => {
            let is_error = body.get("code").is_some() && body.get("message").is_some();
            if is_error {
                let msg = body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("origin error");
                cx.report.origin_error(msg);
                Seen::Error
            } else {
                Seen::Other
            }
        }
    }
}
