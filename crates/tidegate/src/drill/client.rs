//! The load generator's client: sends one chat message the way a chat widget does and records
//! exactly what came back. Every scorecard figure is computed from these records.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::{json, Value};

use super::workload::{Message, Source, Steer, Who, VALID_CODES};

/// The longest a client waits for a whole reply before it gives up (counted as no answer).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Marker of the gateway's replacement for an invalid promo code (the default
/// `[validation].replacement`).
pub const REPLACEMENT_MARK: &str = "this code is not valid";

/// Who a request claims to be.
#[derive(Clone, Debug)]
pub struct Ident {
    /// `x-user-id`.
    pub user: String,
    /// Client IP, sent as `X-Forwarded-For` (the drill's gateway trusts loopback).
    pub ip: String,
    /// `x-conversation-id`.
    pub conversation: Option<String>,
    /// `cf-turnstile-response`.
    pub token: Option<String>,
}

/// What the client made of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Got {
    /// An answer from the FAQ knowledge base.
    Faq,
    /// A complete answer from the LLM.
    Llm,
    /// A complete LLM reply saying it does not know (the gateway hands the conversation over
    /// once it has been relayed).
    DontKnow,
    /// The template reply: a person takes over.
    Template,
    /// The conversation is with a person; the bot stays silent (409 `handed_off`).
    HandedOff,
    /// The reply started but ended with an explicit error event (the conversation is handed
    /// over).
    Broken,
    /// A refusal that says why and when to retry (problem+json).
    Refused,
    /// Nothing usable: transport error, timeout, an unexplained error status, or a stream
    /// that just stopped.
    Nothing,
}

/// One request as the client saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// When it was sent, ms since the drill started.
    pub at_ms: u64,
    /// Phase of the day.
    pub phase: &'static str,
    /// Who sent it.
    pub who: Who,
    /// Where the question came from.
    pub source: Source,
    /// How the origin was steered.
    pub steer: &'static str,
    /// User id.
    pub user: String,
    /// Conversation id.
    pub conversation: Option<String>,
    /// Streamed or blocking.
    pub stream: bool,
    /// HTTP status (0: no response).
    pub status: u16,
    /// `x-tidegate-reason`.
    pub reason: Option<String>,
    /// `x-tidegate-cache`.
    pub cache: Option<String>,
    /// `x-tidegate-tier`.
    pub tier: Option<String>,
    /// `x-tidegate-model`.
    pub model: Option<String>,
    /// `x-tidegate-faq-id`.
    pub faq_id: Option<String>,
    /// The entry that should answer (`None`: none should).
    pub expected: Option<String>,
    /// The problem's `code` on refusals.
    pub problem_code: Option<String>,
    /// The problem's `policy` on refusals.
    pub policy: Option<String>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// Time to the first byte of answer text, ms.
    pub first_text_ms: Option<u64>,
    /// Time to the end of the reply, ms.
    pub total_ms: u64,
    /// Characters of answer text received.
    pub text_chars: usize,
    /// What the client got.
    pub got: Got,
    /// The invented code the origin was told to put in its reply.
    pub fake_code: Option<String>,
    /// The invented code reached the client.
    pub code_leaked: bool,
    /// The client saw the replacement sentence.
    pub code_replaced: bool,
    /// With a valid code steered into an LLM reply: whether both valid codes arrived intact.
    pub valid_code_kept: Option<bool>,
    /// Tokens the reply reported (`usage.total_tokens`).
    pub tokens: Option<u64>,
    /// Transport or parse failure, if any.
    pub error: Option<String>,
}

/// What is known before a reply arrives.
#[derive(Debug)]
pub struct Sent<'a> {
    /// The message.
    pub msg: &'a Message,
    /// Its sender.
    pub ident: &'a Ident,
    /// Drill start.
    pub t0: Instant,
    /// Phase name.
    pub phase: &'static str,
}

/// The request body (OpenAI chat completions shape, with the mock's steering object).
pub fn body(msg: &Message) -> Value {
    let mut b = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": msg.text}],
        "stream": msg.stream,
    });
    if let (Some(m), Some(obj)) = (msg.steer.mock_json(&msg.text), b.as_object_mut()) {
        obj.insert("mock".into(), m);
    }
    b
}

/// Sends `s.msg` to `base` and records the outcome. Never fails: a failure is a record.
pub async fn send(http: &reqwest::Client, base: &str, s: Sent<'_>) -> Record {
    let start = Instant::now();
    let mut rec = Record {
        at_ms: ms(start.saturating_duration_since(s.t0)),
        phase: s.phase,
        who: s.msg.who,
        source: s.msg.source,
        steer: s.msg.steer.name(),
        user: s.ident.user.clone(),
        conversation: s.ident.conversation.clone(),
        stream: s.msg.stream,
        status: 0,
        reason: None,
        cache: None,
        tier: None,
        model: None,
        faq_id: None,
        expected: s.msg.expected.clone(),
        problem_code: None,
        policy: None,
        retry_after: None,
        first_text_ms: None,
        total_ms: 0,
        text_chars: 0,
        got: Got::Nothing,
        fake_code: match &s.msg.steer {
            Steer::FakeCode(c) => Some(c.clone()),
            _ => None,
        },
        code_leaked: false,
        code_replaced: false,
        valid_code_kept: None,
        tokens: None,
        error: None,
    };
    let mut text = String::new();
    let outcome = tokio::time::timeout(
        CLIENT_TIMEOUT,
        exchange(http, base, &s, start, &mut rec, &mut text),
    )
    .await;
    let end = match outcome {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => {
            rec.error = Some(e);
            End::Failed
        }
        Err(_) => {
            rec.error = Some("client timeout".into());
            End::Failed
        }
    };
    rec.total_ms = ms(start.elapsed());
    rec.text_chars = text.chars().count();
    rec.got = classify(&rec, end, &text);
    if rec.got == Got::Llm {
        if let Some(code) = &rec.fake_code {
            rec.code_leaked = text.contains(code.as_str());
            rec.code_replaced = text.contains(REPLACEMENT_MARK);
        }
        if s.msg.steer == Steer::ValidCode {
            rec.valid_code_kept = Some(VALID_CODES.iter().all(|c| text.contains(c)));
        }
    }
    rec
}

/// How a reply body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// A whole body (blocking) or a stream that ended with `[DONE]`.
    Complete,
    /// A stream that ended with an explicit error event.
    ErrorEvent,
    /// A stream that stopped without either.
    Eof,
    /// No usable response.
    Failed,
}

fn classify(rec: &Record, end: End, text: &str) -> Got {
    let reason = rec.reason.as_deref().unwrap_or("");
    if rec.status == 409 && rec.problem_code.as_deref() == Some("handed_off") {
        return Got::HandedOff;
    }
    if (rec.status == 429 || rec.status == 503 || rec.status == 403)
        && rec.problem_code.is_some()
        && (rec.status == 403 || rec.retry_after.is_some())
    {
        return Got::Refused;
    }
    if rec.status != 200 {
        return Got::Nothing;
    }
    match end {
        End::ErrorEvent => return Got::Broken,
        End::Eof | End::Failed => return Got::Nothing,
        End::Complete => {}
    }
    if text.trim().is_empty() {
        return Got::Nothing;
    }
    match reason {
        "faq_hit" => Got::Faq,
        "forwarded" if is_dont_know(text) => Got::DontKnow,
        "forwarded" => Got::Llm,
        "handoff" | "budget_spent" => Got::Template,
        _ => Got::Nothing,
    }
}

/// The reply says it does not know, by the gateway's default phrases.
fn is_dont_know(text: &str) -> bool {
    let lower = text.to_lowercase();
    tidegate_core::config::HandoffConfig::default()
        .dont_know_phrases
        .iter()
        .any(|p| lower.contains(&p.to_lowercase()))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn exchange(
    http: &reqwest::Client,
    base: &str,
    s: &Sent<'_>,
    start: Instant,
    rec: &mut Record,
    text: &mut String,
) -> Result<End, String> {
    let mut rb = http
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-user-id", &s.ident.user)
        .header("x-forwarded-for", &s.ident.ip)
        .body(body(s.msg).to_string());
    if let Some(c) = &s.ident.conversation {
        rb = rb.header("x-conversation-id", c);
    }
    if let Some(t) = &s.ident.token {
        rb = rb.header("cf-turnstile-response", t);
    }
    let resp = rb.send().await.map_err(|e| format!("send: {e}"))?;
    rec.status = resp.status().as_u16();
    rec.reason = header(&resp, "x-tidegate-reason");
    rec.cache = header(&resp, "x-tidegate-cache");
    rec.tier = header(&resp, "x-tidegate-tier");
    rec.model = header(&resp, "x-tidegate-model");
    rec.faq_id = header(&resp, "x-tidegate-faq-id");
    rec.retry_after = header(&resp, "retry-after").and_then(|v| v.trim().parse().ok());
    let is_sse = header(&resp, "content-type").is_some_and(|c| c.starts_with("text/event-stream"));
    if is_sse {
        return read_stream(resp, start, rec, text).await;
    }
    let bytes = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("json: {e}"))?;
    if rec.status != 200 {
        rec.problem_code = v.get("code").and_then(Value::as_str).map(str::to_owned);
        rec.policy = v.get("policy").and_then(Value::as_str).map(str::to_owned);
        return Ok(End::Complete);
    }
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    text.push_str(content);
    if !content.is_empty() {
        rec.first_text_ms = Some(ms(start.elapsed()));
    }
    rec.tokens = v.pointer("/usage/total_tokens").and_then(Value::as_u64);
    Ok(End::Complete)
}

/// Reads an OpenAI SSE stream, event by event, however the network splits it.
async fn read_stream(
    resp: reqwest::Response,
    start: Instant,
    rec: &mut Record,
    text: &mut String,
) -> Result<End, String> {
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut end = End::Eof;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                rec.error = Some(format!("stream: {e}"));
                break;
            }
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = find(&buf, b"\n\n") {
            let event: Vec<u8> = buf.drain(..pos + 2).collect();
            let event = String::from_utf8_lossy(&event);
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    end = End::Complete;
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if let Some(err) = v.get("error") {
                    rec.problem_code = err
                        .get("code")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| Some("stream_error".into()));
                    end = End::ErrorEvent;
                    continue;
                }
                if let Some(t) = v
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                {
                    if !t.is_empty() && rec.first_text_ms.is_none() {
                        rec.first_text_ms = Some(ms(start.elapsed()));
                    }
                    text.push_str(t);
                }
                if let Some(n) = v.pointer("/usage/total_tokens").and_then(Value::as_u64) {
                    rec.tokens = Some(n);
                }
            }
        }
    }
    Ok(end)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            at_ms: 0,
            phase: "night",
            who: Who::Customer,
            source: Source::FreeText,
            steer: "normal",
            user: "u".into(),
            conversation: None,
            stream: true,
            status: 200,
            reason: Some("forwarded".into()),
            cache: None,
            tier: None,
            model: None,
            faq_id: None,
            expected: None,
            problem_code: None,
            policy: None,
            retry_after: None,
            first_text_ms: None,
            total_ms: 0,
            text_chars: 0,
            got: Got::Nothing,
            fake_code: None,
            code_leaked: false,
            code_replaced: false,
            valid_code_kept: None,
            tokens: None,
            error: None,
        }
    }

    #[test]
    fn a_stream_that_just_stops_is_no_answer() {
        let r = rec();
        assert_eq!(classify(&r, End::Eof, "half an ans"), Got::Nothing);
        assert_eq!(classify(&r, End::ErrorEvent, "half"), Got::Broken);
        assert_eq!(classify(&r, End::Complete, "whole"), Got::Llm);
        assert_eq!(classify(&r, End::Complete, "  "), Got::Nothing);
        assert_eq!(
            classify(&r, End::Complete, "I don't know the answer to that."),
            Got::DontKnow
        );
    }

    #[test]
    fn refusals_need_a_reason_and_a_retry_time() {
        let mut r = rec();
        r.status = 503;
        assert_eq!(classify(&r, End::Complete, ""), Got::Nothing);
        r.problem_code = Some("origin_capped".into());
        r.retry_after = Some(1);
        assert_eq!(classify(&r, End::Complete, ""), Got::Refused);
        r.status = 409;
        r.problem_code = Some("handed_off".into());
        assert_eq!(classify(&r, End::Complete, ""), Got::HandedOff);
    }
}
