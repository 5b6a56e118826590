//! Questions the host asks about a finished answer: is it personal (never cache it), and is it
//! the origin's own "I don't know" (hand over to a human)?

use std::sync::OnceLock;

use regex_lite::Regex;
use unicode_normalization::UnicodeNormalization;

struct Patterns {
    email: Regex,
    phone: Regex,
    date: Regex,
    long_number: Regex,
    order_ref: Regex,
}

fn patterns() -> Option<&'static Patterns> {
    static P: OnceLock<Option<Patterns>> = OnceLock::new();
    P.get_or_init(|| {
        Some(Patterns {
            email: Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
                .ok()?,
            phone: Regex::new(
                r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{2,5}(?:[ .-]?[0-9]{2,5}){1,4}",
            )
            .ok()?,
            date: Regex::new(r"^[0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}$").ok()?,
            long_number: Regex::new(r"[0-9]{6,}").ok()?,
            order_ref: Regex::new(
                r"(?i)(?:order|tracking|invoice|booking|ticket|订单|单号|运单|工单)[^0-9A-Za-z]{0,12}[A-Za-z]{0,4}[0-9]{4,}",
            )
            .ok()?,
        })
    })
    .as_ref()
}

/// True when `text` holds personal data: an email address, a phone number, an order or
/// tracking number (any run of six or more digits, or a number of four or more digits right
/// after a word like "order" / "订单"). Such replies are never cached. Errs on the side of
/// "personal": a date written as `20240618` counts too, and only costs a cache entry.
pub fn is_personal(text: &str) -> bool {
    let Some(p) = patterns() else { return true };
    let text: String = text.nfkc().collect();
    if p.email.is_match(&text) || p.long_number.is_match(&text) || p.order_ref.is_match(&text) {
        return true;
    }
    p.phone.find_iter(&text).any(|m| {
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        digits >= 8 && !p.date.is_match(m.as_str().trim())
    })
}

/// Case-, width- and whitespace-insensitive form used to compare "I don't know" phrases.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    let mut push = |c: char| {
        let c = match c {
            '\u{2018}' | '\u{2019}' | '\u{02bc}' => '\'',
            c => c,
        };
        if c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    };
    if text.is_ascii() {
        // NFKC leaves ASCII as it is: skip the decomposition tables (the common case).
        text.chars()
            .map(|c| c.to_ascii_lowercase())
            .for_each(&mut push);
    } else {
        text.nfkc().flat_map(char::to_lowercase).for_each(&mut push);
    }
    out
}

/// Replies longer than this are an answer, whatever phrase they contain.
const DONT_KNOW_MAX_CHARS: usize = 240;

/// True when the reply is the origin's own "I don't know": a short reply (at most 240
/// characters) containing one of `phrases`, ignoring case, full-width forms, curly apostrophes
/// and runs of whitespace. A long answer that says "I'm not sure which course you mean, but..."
/// is an answer, not a reason to hand over.
///
/// Normalises `phrases` on every call; a host that asks once per reply keeps a [`DontKnow`].
pub fn is_dont_know(text: &str, phrases: &[String]) -> bool {
    DontKnow::new(phrases).matches(text)
}

/// "I don't know" phrases normalised once, for asking [`is_dont_know`]'s question of many
/// replies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DontKnow {
    /// Normalised, non-empty phrases.
    phrases: Vec<String>,
}

impl DontKnow {
    /// Normalises `phrases`; empty ones (after normalising) are dropped.
    pub fn new(phrases: &[String]) -> Self {
        DontKnow {
            phrases: phrases
                .iter()
                .map(|p| normalise(p))
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Same answer as [`is_dont_know`] with the phrases given to [`DontKnow::new`].
    pub fn matches(&self, text: &str) -> bool {
        if self.phrases.is_empty() || text.chars().nth(DONT_KNOW_MAX_CHARS).is_some() {
            return false;
        }
        let text = normalise(text);
        self.phrases.iter().any(|p| text.contains(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dont_know_only_when_the_reply_is_short() {
        let phrases = vec!["I'm not sure".to_owned(), "我不知道".to_owned()];
        assert!(is_dont_know("I’m  NOT sure, sorry.", &phrases));
        assert!(is_dont_know("抱歉，我不知道。", &phrases));
        let long = format!(
            "I'm not sure which course you mean, but {}",
            "here is more. ".repeat(20)
        );
        assert!(!is_dont_know(&long, &phrases));
        assert!(!is_dont_know("Refunds take 3 days.", &phrases));
    }

    #[test]
    fn personal_replies() {
        for t in [
            "Your order ORD20240618001 has shipped.",
            "订单号：2024061812 已发货",
            "Order #4521 is on its way",
            "Write to jane.doe@example.com for details",
            "Call us on +1 (555) 123-4567.",
            "客服电话 138 0013 8000",
            "Call 0１0-6552-1234", // full-width digit
        ] {
            assert!(is_personal(t), "{t}");
        }
        for t in [
            "Refunds take 3-5 business days.",
            "Use SPRING618 for 20% off until 2024-06-18.",
            "Our hours are 9:00-18:00, Monday to Friday.",
            "The course costs ¥1,299 and has 12 lessons.",
            "退款政策：7天无理由退货",
        ] {
            assert!(!is_personal(t), "{t}");
        }
    }

    #[test]
    fn the_prepared_matcher_agrees_with_is_dont_know() {
        let phrases = vec![
            "I don't know".to_owned(),
            "我不知道".to_owned(),
            "Ｎｏ Idea".to_owned(),
            "  ".to_owned(),
        ];
        let m = DontKnow::new(&phrases);
        for t in [
            "Sorry,  I DON\u{2019}T\n know that.",
            "抱歉，我不知道。",
            "no   idea, sorry",
            "ＮＯ ＩＤＥＡ",
            "I know the answer",
            "",
            "   ",
        ] {
            assert_eq!(m.matches(t), is_dont_know(t, &phrases), "{t:?}");
        }
        assert!(m.matches("No idea!"));
        assert!(!DontKnow::new(&[]).matches("I don't know"));
    }

    #[test]
    fn ascii_fast_path_normalises_like_nfkc() {
        for t in ["I  Don't\tKNOW", " a\r\nB  c ", "", "ABC-xyz 123"] {
            let slow: String = {
                let mut out = String::new();
                let mut space = false;
                for c in t.nfkc().flat_map(char::to_lowercase) {
                    if c.is_whitespace() {
                        space = !out.is_empty();
                    } else {
                        if space {
                            out.push(' ');
                            space = false;
                        }
                        out.push(c);
                    }
                }
                out
            };
            assert_eq!(normalise(t), slow, "{t:?}");
        }
    }

    #[test]
    fn dont_know_normalises() {
        let phrases = vec![
            "I don't know".to_owned(),
            "我不知道".to_owned(),
            " ".to_owned(),
        ];
        assert!(is_dont_know(
            "Sorry,  I DON\u{2019}T\n know that.",
            &phrases
        ));
        assert!(is_dont_know("抱歉，我不知道。", &phrases));
        assert!(is_dont_know("Ｉ don't know", &phrases));
        assert!(!is_dont_know("I know the answer", &phrases));
        assert!(!is_dont_know("anything", &[]));
    }
}
