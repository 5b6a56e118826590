//! Per-request steering and the byte-exact delivery of chat replies.
//!
//! A chat request body may carry a `"mock"` object; every field is optional:
//!
//! | Field | Effect |
//! |---|---|
//! | `reply` | exact reply text (any UTF-8) instead of the default |
//! | `dont_know` | reply [`DONT_KNOW`](super::text::DONT_KNOW) |
//! | `chunks` | byte sizes of the body writes, e.g. `[5, 1]`; the last size repeats. Each write is flushed on its own, `chunk_delay_ms` apart, so SSE events, promo codes and multi-byte characters can be split across network reads |
//! | `chunk_delay_ms` | override of the delay between writes |
//! | `cut_after_bytes` | write at most this many body bytes, then drop the connection without a clean end (no `[DONE]`, no `message_end`, no chunked terminator) |
//! | `omit_usage` | never send usage data |
//! | `usage` | `{prompt_tokens, completion_tokens, total_tokens}` to report instead of the estimate |
//! | `status`, `retry_after` | answer with this status (400-599) and the API's error body; `retry_after` (string or number) is sent verbatim as `Retry-After` |
//! | `latency_ms` | exact latency before the first byte (no load factor) |
//! | `ping_interval_ms` | Dify only: the keep-alive ping interval (default 10 000) |
//! | `replace` | Dify only: send a `message_replace` event with this text after the answer |
//! | `stream_error` | end the stream with the API's in-stream error instead of a normal end |
//!
//! Unknown fields are refused with a 400, so a typo in a test does not pass silently.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use super::state::InflightGuard;
use super::text::{estimate_tokens, DONT_KNOW};

/// Default interval of Dify's keep-alive pings.
pub const DIFY_PING_INTERVAL: Duration = Duration::from_secs(10);

/// The `"mock"` object of a chat request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steer {
    /// Exact reply text.
    pub reply: Option<String>,
    /// Reply "I don't know the answer to that."
    #[serde(default)]
    pub dont_know: bool,
    /// Sizes of the body writes; the last one repeats.
    pub chunks: Option<Vec<usize>>,
    /// Delay between writes, overriding `--chunk-delay-ms`.
    pub chunk_delay_ms: Option<u64>,
    /// Drop the connection after this many body bytes.
    pub cut_after_bytes: Option<usize>,
    /// Never send usage data.
    #[serde(default)]
    pub omit_usage: bool,
    /// Usage to report instead of the estimate.
    pub usage: Option<UsageOverride>,
    /// Answer with this error status.
    pub status: Option<u16>,
    /// `Retry-After` value to send verbatim with `status`.
    pub retry_after: Option<Value>,
    /// Exact latency before the first byte.
    pub latency_ms: Option<u64>,
    /// Dify keep-alive ping interval.
    pub ping_interval_ms: Option<u64>,
    /// Dify `message_replace` text.
    pub replace: Option<String>,
    /// End the stream with an in-stream error event.
    #[serde(default)]
    pub stream_error: bool,
}

/// Usage numbers a test wants reported.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageOverride {
    /// Prompt (input) tokens.
    pub prompt_tokens: Option<u64>,
    /// Completion (output) tokens.
    pub completion_tokens: Option<u64>,
    /// Total; defaults to the sum.
    pub total_tokens: Option<u64>,
}

/// Token usage of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Completion (output) tokens.
    pub completion: u64,
    /// Total tokens.
    pub total: u64,
}

impl Steer {
    /// Reads the `"mock"` object of a request body, if any.
    pub fn from_body(body: &Value) -> Result<Self, String> {
        let Some(raw) = body.get("mock") else {
            return Ok(Self::default());
        };
        let steer: Self =
            serde_json::from_value(raw.clone()).map_err(|err| format!("invalid 'mock': {err}"))?;
        if let Some(status) = steer.status {
            if !(400..=599).contains(&status) {
                return Err(format!("invalid 'mock.status' {status}: must be 400-599"));
            }
        }
        if let Some(chunks) = &steer.chunks {
            if chunks.is_empty() || chunks.contains(&0) {
                return Err("invalid 'mock.chunks': sizes must be non-empty and positive".into());
            }
        }
        if let Some(retry_after) = &steer.retry_after {
            if retry_after_text(retry_after).is_none() {
                return Err("invalid 'mock.retry_after': a string or a number".into());
            }
        }
        if steer.ping_interval_ms == Some(0) {
            return Err("invalid 'mock.ping_interval_ms': must be positive".into());
        }
        Ok(steer)
    }

    /// The reply text: `reply`, else the "don't know" sentence, else `default`.
    pub fn reply_text(&self, default: impl FnOnce() -> String) -> String {
        match (&self.reply, self.dont_know) {
            (Some(reply), _) => reply.clone(),
            (None, true) => DONT_KNOW.to_owned(),
            (None, false) => default(),
        }
    }

    /// Usage to report: the override where given, else the estimate from the texts.
    pub fn usage(&self, estimated_prompt: u64, reply: &str) -> Usage {
        let o = self.usage.unwrap_or_default();
        let prompt = o.prompt_tokens.unwrap_or(estimated_prompt);
        let completion = o
            .completion_tokens
            .unwrap_or_else(|| estimate_tokens(reply).max(1));
        let total = o.total_tokens.unwrap_or(prompt.saturating_add(completion));
        Usage {
            prompt,
            completion,
            total,
        }
    }

    /// The `Retry-After` header to send with a steered error, if any.
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        let text = retry_after_text(self.retry_after.as_ref()?)?;
        HeaderValue::from_str(&text).ok()
    }
}

fn retry_after_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Keep-alive pings sent while the reply is not ready yet (Dify streams).
#[derive(Debug, Clone)]
pub struct Pings {
    /// Time until the first real write.
    pub wait: Duration,
    /// Interval between pings.
    pub every: Duration,
    /// The ping's bytes.
    pub ping: Bytes,
}

/// A reply before delivery: status, headers and its natural writes (one per SSE event, or
/// the whole JSON body).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers besides `content-type` and `content-length`.
    pub headers: HeaderMap,
    /// `content-type`.
    pub content_type: &'static str,
    /// The body, in its natural writes.
    pub writes: Vec<Bytes>,
    /// Whether to announce the full length (`Content-Length`) rather than stream chunked.
    pub sized: bool,
    /// Pings to send before the first write.
    pub pings: Option<Pings>,
}

impl Reply {
    /// A complete JSON reply.
    pub fn json(status: StatusCode, body: &Value) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            content_type: "application/json",
            writes: vec![Bytes::from(body.to_string())],
            sized: true,
            pings: None,
        }
    }

    /// A server-sent-events reply, one write per event.
    pub fn sse(events: Vec<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            content_type: "text/event-stream; charset=utf-8",
            writes: events,
            sized: false,
            pings: None,
        }
    }

    /// Adds `Retry-After` when the steering asks for it.
    pub fn with_retry_after(mut self, steer: &Steer) -> Self {
        if let Some(value) = steer.retry_after_header() {
            self.headers.insert(RETRY_AFTER, value);
        }
        self
    }

    /// Turns the reply into a response that writes exactly as steered. `guard` keeps the
    /// request counted as in flight until the last byte is written or the client goes away.
    pub fn deliver(self, steer: &Steer, default_delay: Duration, guard: InflightGuard) -> Response {
        let full_len: usize = self.writes.iter().map(Bytes::len).sum();
        let mut writes = match &steer.chunks {
            Some(sizes) => split_at_sizes(&self.writes, sizes),
            None => self.writes,
        };
        let cut = steer.cut_after_bytes.is_some();
        if let Some(limit) = steer.cut_after_bytes {
            truncate_writes(&mut writes, limit);
        }
        let mut delay = steer
            .chunk_delay_ms
            .map_or(default_delay, Duration::from_millis);
        if steer.chunks.is_some() {
            // A write must leave the server before the next one is handed over, or the two
            // may go out in one segment.
            delay = delay.max(Duration::from_millis(1));
        }

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let pings = self.pings;
        tokio::spawn(async move {
            let _guard = guard;
            // TODO(#2): pings are written outside `chunks` and `cut_after_bytes` accounting.
            if let Some(p) = pings {
                let mut left = p.wait;
                while left > p.every {
                    tokio::time::sleep(p.every).await;
                    if tx.send(Ok(p.ping.clone())).await.is_err() {
                        return;
                    }
                    left -= p.every;
                }
                tokio::time::sleep(left).await;
            }
            for (i, write) in writes.into_iter().enumerate() {
                if i > 0 {
                    pause(delay).await;
                }
                if tx.send(Ok(write)).await.is_err() {
                    return;
                }
            }
            if cut {
                // Let the last write leave before the connection is torn down.
                tokio::time::sleep(delay.max(Duration::from_millis(5))).await;
                let _ = tx
                    .send(Err(std::io::Error::other("mock-origin: cut as steered")))
                    .await;
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });

        let mut response = Response::new(Body::from_stream(stream));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.extend(self.headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if self.sized {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(full_len));
        } else {
            headers.insert("cache-control", HeaderValue::from_static("no-cache"));
        }
        response
    }
}

async fn pause(delay: Duration) {
    if delay.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(delay).await;
    }
}

/// Re-splits the concatenation of `writes` at the given sizes; the last size repeats.
pub fn split_at_sizes(writes: &[Bytes], sizes: &[usize]) -> Vec<Bytes> {
    let mut all = BytesMut::new();
    for w in writes {
        all.extend_from_slice(w);
    }
    let mut all = all.freeze();
    let mut out = Vec::new();
    let mut sizes = sizes.iter().copied().filter(|&s| s > 0);
    let mut size = sizes.next().unwrap_or(usize::MAX);
    while !all.is_empty() {
        let take = size.min(all.len());
        out.push(all.split_to(take));
        if let Some(next) = sizes.next() {
            size = next;
        }
    }
    out
}

/// Keeps at most `limit` bytes of `writes`.
pub fn truncate_writes(writes: &mut Vec<Bytes>, limit: usize) {
    let mut left = limit;
    let mut kept = Vec::with_capacity(writes.len());
    for mut w in writes.drain(..) {
        if left == 0 {
            break;
        }
        if w.len() > left {
            w.truncate(left);
        }
        left -= w.len();
        kept.push(w);
    }
    *writes = kept;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unit {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn split_sizes_repeat_the_last_one() {
        let out = split_at_sizes(&[b("abc"), b("defgh")], &[2, 3]);
        assert_eq!(out, vec![b("ab"), b("cde"), b("fgh")]);
        let out = split_at_sizes(&[b("abcdefg")], &[3]);
        assert_eq!(out, vec![b("abc"), b("def"), b("g")]);
    }

    #[test]
    fn truncate_keeps_exactly_limit_bytes() {
        let mut w = vec![b("abc"), b("def")];
        truncate_writes(&mut w, 4);
        assert_eq!(w, vec![b("abc"), b("d")]);
        let mut w = vec![b("abc")];
        truncate_writes(&mut w, 0);
        assert!(w.is_empty());
    }

    #[test]
    fn steer_refuses_unknown_fields_and_bad_status() {
        let body = serde_json::json!({"mock": {"replyy": "x"}});
        assert!(Steer::from_body(&body).is_err());
        let body = serde_json::json!({"mock": {"status": 200}});
        assert!(Steer::from_body(&body).is_err());
        let body = serde_json::json!({"mock": {"chunks": []}});
        assert!(Steer::from_body(&body).is_err());
        let body = serde_json::json!({"mock": {"status": 429, "retry_after": 7}});
        let steer = Steer::from_body(&body).unwrap();
        assert_eq!(steer.retry_after_header().unwrap(), "7");
    }
}
