//! Reply text, token estimates, stream pieces and timestamps shared by both chat APIs.

use std::time::{SystemTime, UNIX_EPOCH};

/// What the origin says when steered with `"dont_know": true`.
pub const DONT_KNOW: &str = "I don't know the answer to that.";

/// The deterministic default reply: names the model so a test can see which one answered.
pub fn default_reply(model: &str, question: &str) -> String {
    format!("[{model}] Thanks for asking about: {}", question.trim())
}

/// A rough token count: four ASCII characters per token, one token per other character
/// (CJK text runs close to one token per character). Never zero for non-empty text.
pub fn estimate_tokens(text: &str) -> u64 {
    let (ascii, other) = text.chars().fold((0u64, 0u64), |(a, o), c| {
        if c.is_ascii() {
            (a + 1, o)
        } else {
            (a, o + 1)
        }
    });
    ascii.div_ceil(4) + other
}

/// Splits a reply into stream deltas roughly the size of tokens: a word with its trailing
/// space, or up to three non-ASCII characters, or sixteen characters of an unbroken run.
/// Never splits a character; concatenating the pieces gives back `text`.
pub fn stream_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let (mut chars, mut wide) = (0usize, 0usize);
    for c in text.chars() {
        current.push(c);
        chars += 1;
        if !c.is_ascii() {
            wide += 1;
        }
        if c.is_whitespace() || wide >= 3 || chars >= 16 {
            pieces.push(std::mem::take(&mut current));
            chars = 0;
            wide = 0;
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current time as an RFC 3339 UTC timestamp with milliseconds, as Turnstile writes it.
pub fn now_rfc3339() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    rfc3339_from_unix_ms(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_from_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Gregorian date of a day count since 1970-01-01 (proleptic calendar, era arithmetic).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unit {
    use super::*;

    #[test]
    fn pieces_rejoin_and_keep_characters_whole() {
        for text in [
            "Hello there, how are you?",
            "你好，订单在哪里？🎉🎉 ok",
            "",
            "x",
        ] {
            let pieces = stream_pieces(text);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|p| !p.is_empty()));
        }
        assert!(stream_pieces("one two three four").len() >= 4);
    }

    #[test]
    fn token_estimate_is_about_chars_over_four() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("你好"), 2);
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339_from_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_unix_ms(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339_from_unix_ms(1_709_210_096_000),
            "2024-02-29T12:34:56.000Z"
        );
    }
}
