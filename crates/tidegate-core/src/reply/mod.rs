//! Post-validation of origin replies, whole or streamed.
//!
//! The LLM behind the origin sometimes invents promo codes. Every code-shaped word in a reply
//! (see [`ValidationConfig`]) must be in the valid-code list from KV ([`CodeSet`]); any other
//! is replaced by a configured sentence. The same pass reads the origin's token usage, notices
//! a stream that did not finish, and keeps the answer text for the host's later questions
//! ([`is_personal`], [`is_dont_know`]).
//!
//! [`ReplyFilter`] is the one object every host drives, one per reply: `push` each body chunk
//! as it arrives and send what it returns at once, then call `finish` and send that too, then
//! read the [`ReplyReport`].
//!
//! - **Streams** (OpenAI SSE, Dify events) are rewritten event by event. Only a trailing word
//!   that could still become a code is held back (at most `max_len` characters); a partial
//!   event line waits for its end, so a multi-byte character split across reads is never cut.
//!   Everything else goes out in the same `push`. Held text goes out in the next text event,
//!   or in a text event of its own before `[DONE]` / `message_end` / an error.
//! - A stream that ends without `[DONE]` (OpenAI) or `message_end` (Dify), or whose host
//!   reports a broken connection, ends with an explicit error event (code `stream_cut`) and
//!   never looks like a clean answer. When the origin's own error event was the last thing
//!   relayed, no second error is added.
//! - **Whole replies** (non-streaming) are buffered up to [`MAX_BODY_BYTES`], rewritten and
//!   re-serialised in `finish`. **The length may change** (a replaced code is usually shorter
//!   or longer than its sentence): the host must send the `Content-Length` of the output, not
//!   the origin's. When the reply is cut or too large, `finish` returns an error body and
//!   [`ReplyFilter::error_status`] says which status to send.
//!
//! Hosts run the filter on successful (2xx) origin replies; error statuses pass unchanged.

mod classify;
mod codes;
mod config;
mod dify;
mod openai;
mod report;
mod sse;

use std::sync::Arc;

pub use classify::{is_dont_know, is_personal, DontKnow};
pub use codes::{CodeSet, Tally, Validator};
pub use config::{ValidationConfig, MAX_CODE_LEN, MAX_REPLACEMENT_CHARS};
pub use report::{End, ReplyReport, Usage, MAX_REPORT_TEXT_BYTES};

use crate::request::Shape;
use codes::Scanner;

/// Largest whole (non-streamed) reply that is buffered and validated.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Largest single stream event; a bigger one ends the stream with an error.
pub const MAX_EVENT_BYTES: usize = sse::MAX_EVENT_BYTES;

const CUT_MESSAGE: &str = "The answer was cut off before it was complete. Please try again, \
     or ask for a human agent.";
const TOO_LARGE_MESSAGE: &str = "The answer was too large to check and was not delivered. \
     Please try again, or ask for a human agent.";

/// What an event turned out to be.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Anything else.
    Other,
    /// The end of a clean answer (`[DONE]`, `message_end`, a recognised whole reply).
    Terminator,
    /// The origin's own error.
    Error,
}

/// What the shape handlers share: the rules, the valid codes and the report.
pub(crate) struct Ctx<'a> {
    v: &'a Validator,
    codes: &'a CodeSet,
    report: &'a mut ReplyReport,
}

impl Ctx<'_> {
    /// Feeds `text` through `scanner` (and flushes it when `finish`); notes the origin's text
    /// for the estimate and, for the `primary` answer, the text the client receives.
    pub(crate) fn rewrite(
        &mut self,
        scanner: &mut Scanner,
        text: &str,
        finish: bool,
        primary: bool,
    ) -> String {
        let mut out = String::with_capacity(text.len());
        let mut tally = Tally::default();
        scanner.feed(text, self.v, self.codes, &mut out, &mut tally);
        if finish {
            scanner.flush(self.v, self.codes, &mut out, &mut tally);
        }
        self.report.note_origin_text(text);
        if primary {
            self.report.note_relayed(&out);
        }
        self.report.add_tally(tally);
        out
    }
}

#[derive(Debug)]
enum StreamShape {
    OpenAi(openai::Stream),
    Dify(dify::Stream),
}

#[derive(Debug)]
enum Mode {
    Stream {
        parser: sse::Parser,
        shape: StreamShape,
        /// `[DONE]` or `message_end` was relayed.
        terminated: bool,
        /// The last event with data was the origin's error.
        last_was_error: bool,
    },
    Whole {
        body: Vec<u8>,
        too_large: bool,
        error_status: Option<u16>,
    },
}

/// Validates one origin reply on its way to the client. Owns all its state; one per reply.
#[derive(Debug)]
pub struct ReplyFilter {
    shape: Shape,
    validator: Arc<Validator>,
    codes: Arc<CodeSet>,
    mode: Mode,
    report: ReplyReport,
    /// `finish` ran, or the stream was ended early: ignore further input.
    done: bool,
}

impl ReplyFilter {
    /// A filter for a reply of `shape`; `stream` when the client asked for a streamed reply
    /// (SSE), else a whole JSON body.
    pub fn new(shape: Shape, stream: bool, validator: Arc<Validator>, codes: Arc<CodeSet>) -> Self {
        let mode = if stream {
            Mode::Stream {
                parser: sse::Parser::default(),
                shape: match shape {
                    Shape::OpenAi => StreamShape::OpenAi(openai::Stream::default()),
                    Shape::Dify => StreamShape::Dify(dify::Stream::default()),
                },
                terminated: false,
                last_was_error: false,
            }
        } else {
            Mode::Whole {
                body: Vec::new(),
                too_large: false,
                error_status: None,
            }
        };
        ReplyFilter {
            shape,
            validator,
            codes,
            mode,
            report: ReplyReport::default(),
            done: false,
        }
    }

    /// Takes the next chunk of the origin's body, split anywhere; returns the bytes to send
    /// to the client now (for a whole reply, nothing until [`ReplyFilter::finish`]).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let mut cx = Ctx {
            v: &self.validator,
            codes: &self.codes,
            report: &mut self.report,
        };
        match &mut self.mode {
            Mode::Stream {
                parser,
                shape,
                terminated,
                last_was_error,
            } => {
                let mut events = Vec::new();
                let overflow = parser.feed(chunk, &mut events).is_err();
                for ev in &events {
                    relay(shape, ev, &mut cx, &mut out, terminated, last_was_error);
                }
                if overflow {
                    // TODO(#2): an oversized event ends the stream; a streaming JSON reader
                    // could validate and pass it on instead.
                    flush_stream(shape, &mut cx, &mut out);
                    out.extend_from_slice(&error_event(
                        shape,
                        "reply_too_large",
                        TOO_LARGE_MESSAGE,
                    ));
                    cx.report.cut("event_too_large");
                    self.done = true;
                }
            }
            Mode::Whole {
                body, too_large, ..
            } => {
                if !*too_large {
                    if body.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
                        *too_large = true;
                        *body = Vec::new();
                    } else {
                        body.extend_from_slice(chunk);
                    }
                }
            }
        }
        out
    }

    /// Keeps the OpenAI usage chunk (empty `choices`, a `usage` object) from the client when
    /// `hide` is true (the gateway asked for it, the client did not: [`Forward::usage_added`]);
    /// its figures still count for the budget.
    ///
    /// [`Forward::usage_added`]: crate::gateway::Forward::usage_added
    pub fn hiding_usage(mut self, hide: bool) -> Self {
        if let Mode::Stream {
            shape: StreamShape::OpenAi(s),
            ..
        } = &mut self.mode
        {
            s.hide_usage = hide;
        }
        self
    }

    /// The origin's body ended; `upstream_ok` is false when the connection broke or timed
    /// out. Returns the last bytes to send: held-back text, and for an unfinished stream the
    /// error event; for a whole reply, the whole (rewritten) body. Later calls return nothing.
    pub fn finish(&mut self, upstream_ok: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.done = true;
        let shape = self.shape;
        let mut cx = Ctx {
            v: &self.validator,
            codes: &self.codes,
            report: &mut self.report,
        };
        match &mut self.mode {
            Mode::Stream {
                parser,
                shape: s,
                terminated,
                last_was_error,
            } => {
                let mut events = Vec::new();
                parser.finish(&mut events, |ev| {
                    ev.data_str().is_some_and(|d| {
                        d.trim() == "[DONE]"
                            || serde_json::from_str::<serde::de::IgnoredAny>(d).is_ok()
                    })
                });
                for ev in &events {
                    relay(s, ev, &mut cx, &mut out, terminated, last_was_error);
                }
                flush_stream(s, &mut cx, &mut out);
                if *terminated {
                    cx.report.complete();
                } else {
                    if !*last_was_error {
                        out.extend_from_slice(&error_event(s, "stream_cut", CUT_MESSAGE));
                    }
                    cx.report.cut(if upstream_ok {
                        "stream_cut"
                    } else {
                        "upstream_failed"
                    });
                }
            }
            Mode::Whole {
                body,
                too_large,
                error_status,
            } => {
                let failure = if !upstream_ok {
                    Some(("upstream_failed", "stream_cut", CUT_MESSAGE))
                } else if *too_large {
                    Some(("reply_too_large", "reply_too_large", TOO_LARGE_MESSAGE))
                } else {
                    None
                };
                let (body, status) = match failure {
                    Some((reason, code, message)) => {
                        cut_body(shape, &mut cx, reason, code, message)
                    }
                    None => whole_reply(shape, std::mem::take(body), &mut cx),
                };
                out = body;
                *error_status = status;
            }
        }
        out
    }

    /// What was learnt about the reply so far (final after [`ReplyFilter::finish`]).
    pub fn report(&self) -> &ReplyReport {
        &self.report
    }

    /// For a whole reply that `finish` replaced by an error body (cut or too large), the
    /// status the host should send instead of the origin's (502).
    pub fn error_status(&self) -> Option<u16> {
        match self.mode {
            Mode::Whole { error_status, .. } => error_status,
            Mode::Stream { .. } => None,
        }
    }
}

fn relay(
    shape: &mut StreamShape,
    ev: &sse::Event,
    cx: &mut Ctx<'_>,
    out: &mut Vec<u8>,
    terminated: &mut bool,
    last_was_error: &mut bool,
) {
    let seen = match shape {
        StreamShape::OpenAi(s) => s.on_event(ev, cx, out),
        StreamShape::Dify(s) => s.on_event(ev, cx, out),
    };
    if seen == Seen::Terminator {
        *terminated = true;
        cx.report.complete();
    }
    if ev.data.is_some() {
        *last_was_error = seen == Seen::Error;
    }
}

fn flush_stream(shape: &mut StreamShape, cx: &mut Ctx<'_>, out: &mut Vec<u8>) {
    match shape {
        StreamShape::OpenAi(s) => s.flush(cx, out),
        StreamShape::Dify(s) => s.flush(cx, out),
    }
}

fn error_event(shape: &StreamShape, code: &str, message: &str) -> Vec<u8> {
    match shape {
        StreamShape::OpenAi(_) => openai::error_event(code, message),
        StreamShape::Dify(s) => s.error_event(code, message),
    }
}

/// The error body that replaces a whole reply which did not arrive whole, and its status.
fn cut_body(
    shape: Shape,
    cx: &mut Ctx<'_>,
    reason: &'static str,
    code: &str,
    message: &str,
) -> (Vec<u8>, Option<u16>) {
    cx.report.cut(reason);
    let err = match shape {
        Shape::OpenAi => openai::error_body(code, message),
        Shape::Dify => dify::error_body(code, message),
    };
    (err.to_string().into_bytes(), Some(502))
}

/// Validates a whole JSON reply; returns the body to send and, when it was replaced by an
/// error body, the status to send with it.
fn whole_reply(shape: Shape, body: Vec<u8>, cx: &mut Ctx<'_>) -> (Vec<u8>, Option<u16>) {
    // The common case (an OpenAI reply with nothing to replace) needs no JSON tree.
    if shape == Shape::OpenAi {
        match openai::check_body(&body, cx) {
            Some(Seen::Terminator) => {
                cx.report.complete();
                return (body, None);
            }
            Some(Seen::Other) => {
                cx.report.complete();
                cx.report.reason = Some("not_a_reply");
                return (body, None);
            }
            Some(Seen::Error) | None => {}
        }
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        let looks_like_json = matches!(body.trim_ascii_start().first(), Some(b'{' | b'['));
        if looks_like_json {
            // A JSON reply that stops short: the origin died mid-body.
            return cut_body(shape, cx, "stream_cut", "stream_cut", CUT_MESSAGE);
        }
        cx.report.complete();
        cx.report.reason = Some("not_json");
        return (body, None);
    };
    let seen = match shape {
        Shape::OpenAi => openai::rewrite_body(&mut value, cx),
        Shape::Dify => dify::rewrite_body(&mut value, cx),
    };
    match seen {
        Seen::Terminator => {
            cx.report.complete();
            if cx.report.codes_replaced > 0 {
                return (value.to_string().into_bytes(), None);
            }
        }
        Seen::Error => {}
        Seen::Other => {
            cx.report.complete();
            cx.report.reason = Some("not_a_reply");
        }
    }
    (body, None)
}

#[cfg(test)]
mod tests;
