//! OpenAI chat completions: rewriting `chat.completion.chunk` events and whole
//! `chat.completion` bodies.

use std::borrow::Cow;

use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::codes::Scanner;
use super::report::Usage;
use super::sse::{self, Event};
use super::{Ctx, Seen};

/// Most distinct `choices[].index` values tracked; text of further choices passes unchanged.
const MAX_CHOICES: usize = 128;

/// State of one OpenAI stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stream {
    /// One scanner per choice index.
    choices: Vec<(u64, Scanner)>,
    /// `id`, `model`, `created`... of the first chunk, for chunks the filter adds.
    envelope: Option<Map<String, Value>>,
    /// Read the usage chunk (empty `choices`, a `usage` object) but do not relay it.
    pub(crate) hide_usage: bool,
}

impl Stream {
    fn scanner(&mut self, index: u64) -> Option<&mut Scanner> {
        let pos = match self.choices.iter().position(|(i, _)| *i == index) {
            Some(pos) => pos,
            None if self.choices.len() < MAX_CHOICES => {
                self.choices.push((index, Scanner::default()));
                self.choices.len() - 1
            }
            None => return None,
        };
        self.choices.get_mut(pos).map(|(_, s)| s)
    }

    /// Handles one event; writes what the client gets to `out`.
    pub(crate) fn on_event(&mut self, ev: &Event, cx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Seen {
        let Some(data) = ev.data_str() else {
            out.extend_from_slice(&ev.raw);
            return Seen::Other;
        };
        if data.trim() == "[DONE]" {
            self.flush(cx, out);
            out.extend_from_slice(&ev.raw);
            return Seen::Terminator;
        }
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(data) else {
            out.extend_from_slice(&ev.raw);
            return Seen::Other;
        };
        if let Some(err) = obj.get("error") {
            self.flush(cx, out);
            cx.report.origin_error(&error_message(err));
            out.extend_from_slice(&ev.raw);
            return Seen::Error;
        }
        if let Some(u) = obj.get("usage").and_then(Usage::from_json) {
            cx.report.usage = Some(u);
            let no_choices = obj
                .get("choices")
                .is_none_or(|c| c.as_array().is_some_and(Vec::is_empty));
            if self.hide_usage && no_choices {
                return Seen::Other;
            }
        }
        let mut changed = false;
        if let Some(Value::Array(choices)) = obj.get_mut("choices") {
            for (pos, choice) in choices.iter_mut().enumerate() {
                changed |= self.rewrite_choice(pos, choice, cx);
            }
            if self.envelope.is_none() {
                let mut env = obj.clone();
                env.remove("choices");
                env.remove("usage");
                self.envelope = Some(env);
            }
        }
        if changed {
            out.extend_from_slice(&ev.with_data(&Value::Object(obj).to_string()));
        } else {
            out.extend_from_slice(&ev.raw);
        }
        Seen::Other
    }

    /// Rewrites `choices[pos].delta.content`; true if it changed.
    fn rewrite_choice(&mut self, pos: usize, choice: &mut Value, cx: &mut Ctx<'_>) -> bool {
        let index = choice
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(pos as u64);
        let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        let Some(choice) = choice.as_object_mut() else {
            return false;
        };
        let content = choice
            .get("delta")
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str);
        if content.is_none() && !finished {
            return false;
        }
        let Some(scanner) = self.scanner(index) else {
            cx.report.reason.get_or_insert("too_many_choices");
            return false;
        };
        let old = content.unwrap_or("");
        let new = cx.rewrite(scanner, old, finished, index == 0);
        if content.is_some_and(|c| c == new) || (content.is_none() && new.is_empty()) {
            return false;
        }
        let delta = choice.entry("delta").or_insert_with(|| json!({}));
        match delta.as_object_mut() {
            Some(d) => {
                d.insert("content".to_owned(), Value::String(new));
                true
            }
            None => false,
        }
    }

    /// Releases every choice's held text, as chunks of its own.
    pub(crate) fn flush(&mut self, cx: &mut Ctx<'_>, out: &mut Vec<u8>) {
        let mut pieces = Vec::new();
        for (index, scanner) in &mut self.choices {
            let text = cx.rewrite(scanner, "", true, *index == 0);
            if !text.is_empty() {
                pieces.push((*index, text));
            }
        }
        for (index, text) in pieces {
            let mut chunk = self.envelope.clone().unwrap_or_default();
            chunk
                .entry("object")
                .or_insert_with(|| json!("chat.completion.chunk"));
            chunk.insert(
                "choices".to_owned(),
                json!([{"index": index, "delta": {"content": text}, "finish_reason": null}]),
            );
            out.extend_from_slice(&sse::data_event(&Value::Object(chunk).to_string()));
        }
    }
}

/// The error event that ends a stream which did not finish cleanly (no `[DONE]` follows).
pub(crate) fn error_event(code: &str, message: &str) -> Vec<u8> {
    sse::data_event(&error_body(code, message).to_string())
}

/// An OpenAI-style error body.
pub(crate) fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": "tidegate_error", "code": code}})
}

fn error_message(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        v => v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("origin error")
            .to_owned(),
    }
}

/// A field that is only checked for presence (any value, `null` included).
#[derive(Debug, Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// The parts of a whole `chat.completion` that [`rewrite_body`] reads, borrowed from the body.
/// Any other shape (a field of another type, a repeated key) fails to parse here.
#[derive(Debug, Deserialize)]
struct WholeView<'a> {
    #[serde(default)]
    error: Present,
    usage: Option<UsageView>,
    #[serde(borrow)]
    choices: Option<Vec<ChoiceView<'a>>>,
}

#[derive(Debug, Deserialize)]
struct UsageView {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ChoiceView<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    message: Option<MessageView<'a>>,
}

#[derive(Debug, Deserialize)]
struct MessageView<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

/// [`rewrite_body`] without building a JSON tree, for the common case: a well-formed
/// `chat.completion` whose text keeps every code-shaped word (nothing to rewrite). Returns
/// what `rewrite_body` would have seen, with the same effect on the report; `None` (report
/// untouched) when the body has another shape or a code must be replaced, so that the caller
/// takes the general path.
pub(crate) fn check_body(body: &[u8], cx: &mut Ctx<'_>) -> Option<Seen> {
    let view: WholeView<'_> = serde_json::from_slice(body).ok()?;
    if view.error.0 {
        return None;
    }
    let saved = cx.report.clone();
    if let Some(u) = view.usage {
        let (p, c, t) = (u.prompt_tokens, u.completion_tokens, u.total_tokens);
        if p.is_some() || c.is_some() || t.is_some() {
            let (p, c) = (p.unwrap_or(0), c.unwrap_or(0));
            cx.report.usage = Some(Usage {
                prompt_tokens: p,
                completion_tokens: c,
                total_tokens: t.unwrap_or(0).max(p.saturating_add(c)),
            });
        }
    }
    let Some(choices) = view.choices else {
        return Some(Seen::Other);
    };
    for (pos, choice) in choices.iter().enumerate() {
        let index = choice.index.unwrap_or(pos as u64);
        let Some(text) = choice.message.as_ref().and_then(|m| m.content.as_deref()) else {
            continue;
        };
        let new = cx.rewrite(&mut Scanner::default(), text, true, index == 0);
        if new != text {
            *cx.report = saved;
            return None;
        }
    }
    Some(Seen::Terminator)
}

/// Rewrites a whole `chat.completion` body in place.
pub(crate) fn rewrite_body(body: &mut Value, cx: &mut Ctx<'_>) -> Seen {
    if let Some(err) = body.get("error") {
        cx.report.origin_error(&error_message(err));
        return Seen::Error;
    }
    if let Some(u) = body.get("usage").and_then(Usage::from_json) {
        cx.report.usage = Some(u);
    }
    let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) else {
        return Seen::Other;
    };
    for (pos, choice) in choices.iter_mut().enumerate() {
        let index = choice
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(pos as u64);
        let Some(content) = choice.pointer_mut("/message/content") else {
            continue;
        };
        if let Value::String(text) = content {
            let new = cx.rewrite(&mut Scanner::default(), text, true, index == 0);
            *text = new;
        }
    }
    Seen::Terminator
}
