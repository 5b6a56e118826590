//! What the host learns from a reply once it has been relayed: usage, text, codes, how it
//! ended.

use serde_json::Value;

use crate::budget::estimate_tokens;

/// Most bytes of answer text kept in [`ReplyReport::text`].
pub const MAX_REPORT_TEXT_BYTES: usize = 8 * 1024;

/// Origin text is estimated in batches of this many bytes (see [`ReplyReport::tokens_to_charge`]).
const ESTIMATE_BATCH_BYTES: usize = 4 * 1024;

/// How a reply ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum End {
    /// Not finished yet (before [`super::ReplyFilter::finish`]).
    #[default]
    Pending,
    /// The reply arrived whole: `data: [DONE]`, Dify `message_end`, or a whole JSON body.
    Complete,
    /// The reply did not arrive whole: the connection broke or timed out, the stream ended
    /// without its terminator, or the reply was too large to validate. The client was sent
    /// an explicit error; [`ReplyReport::reason`] says which case it was.
    Cut,
    /// The origin reported an error inside the reply (OpenAI `error` object, Dify `error`
    /// event or error body); carries the origin's message.
    OriginError(String),
}

/// Token usage reported by the origin.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens read.
    pub prompt_tokens: u64,
    /// Tokens written.
    pub completion_tokens: u64,
    /// Tokens billed (never less than the sum of the other two).
    pub total_tokens: u64,
}

impl Usage {
    /// Reads an OpenAI `usage` object or Dify `metadata.usage`. `None` when it holds no
    /// token counts.
    pub(crate) fn from_json(v: &Value) -> Option<Usage> {
        let field = |name: &str| v.get(name).and_then(Value::as_u64);
        let (p, c, t) = (
            field("prompt_tokens"),
            field("completion_tokens"),
            field("total_tokens"),
        );
        if p.is_none() && c.is_none() && t.is_none() {
            return None;
        }
        let (p, c) = (p.unwrap_or(0), c.unwrap_or(0));
        let sum = p.saturating_add(c);
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: t.unwrap_or(0).max(sum),
        })
    }
}

/// What the host learns from a relayed reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyReport {
    /// Usage as the origin reported it (OpenAI `usage`, Dify `metadata.usage`), if it did.
    pub usage: Option<Usage>,
    /// The answer text as the client received it (after rewriting), first
    /// [`MAX_REPORT_TEXT_BYTES`] bytes. For OpenAI, choice 0. After a Dify `message_replace`,
    /// the replacement text.
    pub text: String,
    /// Characters of answer text the client received, including those beyond `text`.
    pub text_chars: usize,
    /// Invalid codes replaced.
    pub codes_replaced: u32,
    /// Valid codes left as they were.
    pub codes_kept: u32,
    /// How the reply ended.
    pub end: End,
    /// Stable name of what went wrong, if anything: `stream_cut` (ended without its
    /// terminator), `upstream_failed` (the host reported a broken or timed-out connection),
    /// `event_too_large`, `reply_too_large`, `origin_error`, `not_json` (a whole body that
    /// was not a JSON reply, passed on unchanged and unvalidated), `not_a_reply` (JSON of an
    /// unknown shape, passed on unchanged).
    pub reason: Option<&'static str>,
    /// Token estimate of the origin's text in finished batches.
    est_tokens: u64,
    /// Origin text not yet estimated.
    est_pending: String,
}

impl ReplyReport {
    /// True when the reply arrived whole and was validated: the only kind worth caching.
    pub fn is_clean(&self) -> bool {
        self.end == End::Complete && self.reason.is_none()
    }

    /// True when [`ReplyReport::text`] holds all of the answer text.
    pub fn text_is_whole(&self) -> bool {
        self.text.chars().count() == self.text_chars
    }

    /// Tokens to charge to the budget: the origin's total when it reported usage, otherwise
    /// `prompt_estimate` plus an estimate of the text the origin produced (every delta
    /// received, whether or not the stream finished; estimated in 4 KiB batches, so never
    /// less than [`estimate_tokens`] of the whole text).
    pub fn tokens_to_charge(&self, prompt_estimate: u64) -> u64 {
        match self.usage {
            Some(u) => u.total_tokens,
            None => prompt_estimate
                .saturating_add(self.est_tokens)
                .saturating_add(estimate_tokens(&self.est_pending)),
        }
    }

    /// Notes text the origin produced (for the estimate).
    pub(crate) fn note_origin_text(&mut self, s: &str) {
        self.est_pending.push_str(s);
        if self.est_pending.len() >= ESTIMATE_BATCH_BYTES {
            self.est_tokens = self
                .est_tokens
                .saturating_add(estimate_tokens(&self.est_pending));
            self.est_pending.clear();
        }
    }

    /// Notes text the client received.
    pub(crate) fn note_relayed(&mut self, s: &str) {
        self.text_chars = self.text_chars.saturating_add(s.chars().count());
        let room = MAX_REPORT_TEXT_BYTES.saturating_sub(self.text.len());
        if room >= s.len() {
            self.text.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(s.get(..cut).unwrap_or(""));
        }
    }

    /// The client's text was replaced as a whole (Dify `message_replace`).
    pub(crate) fn reset_relayed(&mut self) {
        self.text.clear();
        self.text_chars = 0;
    }

    /// Records an origin error (the first one wins).
    pub(crate) fn origin_error(&mut self, message: &str) {
        if !matches!(self.end, End::OriginError(_)) {
            self.end = End::OriginError(message.chars().take(500).collect());
        }
        self.reason.get_or_insert("origin_error");
    }

    /// Records the reply as cut for `reason`, unless an origin error already explains it.
    pub(crate) fn cut(&mut self, reason: &'static str) {
        if !matches!(self.end, End::OriginError(_)) {
            self.end = End::Cut;
            self.reason = Some(reason);
        }
    }

    /// Records the reply as complete, unless an origin error was seen.
    pub(crate) fn complete(&mut self) {
        if !matches!(self.end, End::OriginError(_)) {
            self.end = End::Complete;
        }
    }

    /// Adds the codes one piece of text held.
    pub(crate) fn add_tally(&mut self, t: super::codes::Tally) {
        self.codes_replaced = self.codes_replaced.saturating_add(t.replaced);
        self.codes_kept = self.codes_kept.saturating_add(t.kept);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn estimate_never_below_whole_text() {
        let mut r = ReplyReport::default();
        let piece = "退款 refund 政策 policy ";
        let mut whole = String::new();
        for _ in 0..2000 {
            r.note_origin_text(piece);
            whole.push_str(piece);
        }
        let charged = r.tokens_to_charge(10);
        let exact = 10 + estimate_tokens(&whole);
        assert!(
            charged >= exact && charged <= exact + 20,
            "{charged} vs {exact}"
        );
        r.usage = Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
        });
        assert_eq!(r.tokens_to_charge(10), 7);
    }

    #[test]
    fn text_cap_keeps_characters_whole() {
        let mut r = ReplyReport::default();
        for _ in 0..5000 {
            r.note_relayed("退");
        }
        assert!(r.text.len() <= MAX_REPORT_TEXT_BYTES);
        assert_eq!(r.text.chars().count(), MAX_REPORT_TEXT_BYTES / 3);
        assert_eq!(r.text_chars, 5000);
        assert!(!r.text_is_whole());
    }

    #[test]
    fn usage_total_is_never_below_the_sum() {
        let u = Usage::from_json(&serde_json::json!({"prompt_tokens": 5, "completion_tokens": 7}));
        assert_eq!(u.map(|u| u.total_tokens), Some(12));
        assert_eq!(
            Usage::from_json(&serde_json::json!({"prompt_price": "0.1"})),
            None
        );
    }
}
