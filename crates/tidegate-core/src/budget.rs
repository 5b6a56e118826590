//! The monthly LLM token budget.
//!
//! Tokens spent this UTC month live in one counter cell, `budget:<YYYY-MM>`. A request
//! reserves its prompt estimate before the origin is called; when the reply ends, the host
//! charges the difference between what the origin reported (OpenAI's usage chunk, Dify's
//! `message_end`) and the reservation, or an estimate from the text actually relayed when the
//! origin reported nothing. A client therefore cannot dodge the budget by streaming or by
//! cutting the stream. When the budget is spent the gateway runs cache-only.

use crate::store::{self, CounterStore, StoreError};
use crate::time::UnixMs;

/// Most tokens one reply is charged, whatever the origin reports: a corrupt or hostile usage
/// figure (say `u64::MAX`) must not spend a month's budget in one request.
pub const MAX_TOKENS_PER_REPLY: u64 = 1_000_000;

/// The counter key for the month containing `now`.
pub fn key(now: UnixMs) -> String {
    format!("budget:{}", now.month_key())
}

/// Rough token count of `text` for when the origin reports none: one token per CJK
/// character, one per four other characters (rounded up).
pub fn estimate_tokens(text: &str) -> u64 {
    let (mut cjk, mut other) = (0u64, 0u64);
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
        } else {
            other += 1;
        }
    }
    cjk + other.div_ceil(4)
}

/// Token estimate for `chars` characters of unknown script (prompt sizing).
pub fn estimate_from_chars(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF | 0x20000..=0x2FFFF)
}

/// The budget's state as seen by one request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Tokens spent this month (including reservations in flight).
    pub spent: u64,
    /// The monthly cap.
    pub cap: u64,
}

impl Status {
    /// True when nothing is left: the gateway runs cache-only.
    pub fn exhausted(&self) -> bool {
        self.spent >= self.cap
    }

    /// Tokens left.
    pub fn remaining(&self) -> u64 {
        self.cap.saturating_sub(self.spent)
    }
}

/// Reserves `tokens` if the budget is not yet spent. Returns the status before the
/// reservation; when it is exhausted, nothing is reserved.
pub fn reserve<S: CounterStore + ?Sized>(
    store: &S,
    now: UnixMs,
    cap: u64,
    tokens: u64,
) -> Result<Status, StoreError> {
    store::update(store, &key(now), |spent| {
        let spent = spent.unwrap_or(0);
        let status = Status { spent, cap };
        if status.exhausted() {
            (None, status)
        } else {
            (Some(spent.saturating_add(tokens)), status)
        }
    })
}

/// Settles a request: `actual` tokens were used against `reserved` reserved earlier (in the
/// month of `reserved_at`). Charges the difference, which may give tokens back.
pub fn settle<S: CounterStore + ?Sized>(
    store: &S,
    reserved_at: UnixMs,
    reserved: u64,
    actual: u64,
) -> Result<Status, StoreError> {
    let actual = actual.min(MAX_TOKENS_PER_REPLY);
    store::update(store, &key(reserved_at), |spent| {
        let spent = spent.unwrap_or(0);
        let next = spent.saturating_sub(reserved).saturating_add(actual);
        (
            Some(next),
            Status {
                spent: next,
                cap: 0,
            },
        )
    })
}

/// Sets this month's spend to `spent` (an operator raising or resetting the budget).
pub fn set_spent<S: CounterStore + ?Sized>(
    store: &S,
    now: UnixMs,
    spent: u64,
) -> Result<(), StoreError> {
    store::update(store, &key(now), |_| (Some(spent), ()))
}

/// Reads the status without changing it.
pub fn status<S: CounterStore + ?Sized>(
    store: &S,
    now: UnixMs,
    cap: u64,
) -> Result<Status, StoreError> {
    Ok(Status {
        spent: store.load(&key(now))?.map_or(0, |(v, _)| v),
        cap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn reserve_settle_and_exhaust() {
        let s = MemoryStore::new();
        let now = UnixMs(1_796_316_540_000);
        assert!(!reserve(&s, now, 100, 10).unwrap().exhausted());
        settle(&s, now, 10, 95).unwrap();
        assert_eq!(status(&s, now, 100).unwrap().spent, 95);
        assert!(!reserve(&s, now, 100, 10).unwrap().exhausted());
        assert!(reserve(&s, now, 100, 10).unwrap().exhausted(), "105 >= 100");
        // A hostile usage figure is capped.
        settle(&s, now, 0, u64::MAX).unwrap();
        assert_eq!(
            status(&s, now, 100).unwrap().spent,
            105 + MAX_TOKENS_PER_REPLY
        );
        // Next month starts fresh.
        let later = now.plus_ms(now.ms_until_next_month());
        assert_eq!(status(&s, later, 100).unwrap().spent, 0);
    }

    #[test]
    fn estimates() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("退款政策"), 4);
    }
}
