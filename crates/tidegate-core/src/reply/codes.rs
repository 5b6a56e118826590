//! Recognising promo codes, the valid-code list, and the streaming scanner that rewrites text
//! arriving in pieces.

use std::collections::BTreeSet;

use regex_lite::Regex;

use super::config::{ValidationConfig, MAX_CODE_LEN, MAX_REPLACEMENT_CHARS};

/// True for the characters words are made of: ASCII letters, digits, `-` and `_` (after
/// [`fold`]).
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The full-width forms of ASCII (`Ａ`, `１`, `－`: what a Chinese or Japanese reply may write
/// a code in) read as ASCII, so `ＦＡＫＥ２０２４` is judged like `FAKE2024`.
fn fold(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// A compiled [`ValidationConfig`]: decides whether a word is code-shaped.
#[derive(Clone, Debug)]
pub struct Validator {
    enabled: bool,
    patterns: Vec<Regex>,
    exempt: Vec<Regex>,
    /// Bit `b` set when ASCII byte `b` is in the alphabet.
    alphabet: u128,
    min_len: usize,
    max_len: usize,
    replacement: String,
    codes_key: String,
}

impl Validator {
    /// Compiles `cfg`. The error names the field (relative to `[validation]`) and says what
    /// is wrong with it.
    pub fn new(cfg: &ValidationConfig) -> Result<Validator, (String, String)> {
        let err = |field: &str, msg: String| (field.to_owned(), msg);
        let mut patterns = Vec::with_capacity(cfg.patterns.len());
        for (i, p) in cfg.patterns.iter().enumerate() {
            let re = Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| err(&format!("patterns[{i}]"), format!("not a valid regex: {e}")))?;
            patterns.push(re);
        }
        let mut exempt = Vec::with_capacity(cfg.exempt.len());
        for (i, p) in cfg.exempt.iter().enumerate() {
            let re = Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| err(&format!("exempt[{i}]"), format!("not a valid regex: {e}")))?;
            exempt.push(re);
        }
        if cfg.enabled && patterns.is_empty() {
            return Err(err(
                "patterns",
                "must name at least one pattern when enabled".into(),
            ));
        }
        let class = Regex::new(&format!("^[{}]$", cfg.alphabet)).map_err(|e| {
            err(
                "alphabet",
                format!("not a valid character class body (like A-Z0-9_-): {e}"),
            )
        })?;
        let mut alphabet = 0u128;
        let mut buf = [0u8; 4];
        for b in 0u8..128 {
            let c = char::from(b);
            if class.is_match(c.encode_utf8(&mut buf)) {
                if !is_word_char(c) {
                    return Err(err(
                        "alphabet",
                        format!("may hold only ASCII letters, digits, - and _, not {c:?}"),
                    ));
                }
                alphabet |= 1u128 << b;
            }
        }
        if alphabet == 0 {
            return Err(err("alphabet", "matches no character".into()));
        }
        if cfg.min_len == 0 {
            return Err(err("min_len", "must be at least 1".into()));
        }
        if cfg.max_len < cfg.min_len || cfg.max_len > MAX_CODE_LEN {
            return Err(err(
                "max_len",
                format!(
                    "must be between min_len ({}) and {MAX_CODE_LEN}",
                    cfg.min_len
                ),
            ));
        }
        if cfg.replacement.chars().count() > MAX_REPLACEMENT_CHARS {
            return Err(err(
                "replacement",
                format!("must be at most {MAX_REPLACEMENT_CHARS} characters"),
            ));
        }
        if cfg.codes_key.trim().is_empty() {
            return Err(err("codes_key", "must not be empty".into()));
        }
        Ok(Validator {
            enabled: cfg.enabled,
            patterns,
            exempt,
            alphabet,
            min_len: cfg.min_len,
            max_len: cfg.max_len,
            replacement: cfg.replacement.clone(),
            codes_key: cfg.codes_key.clone(),
        })
    }

    /// Whether replies are validated at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The sentence that replaces an invalid code.
    pub fn replacement(&self) -> &str {
        &self.replacement
    }

    /// The KV key of the valid-code list.
    pub fn codes_key(&self) -> &str {
        &self.codes_key
    }

    fn in_alphabet(&self, c: char) -> bool {
        let b = c as u32;
        b < 128 && self.alphabet & (1u128 << b) != 0
    }

    /// True when the whole of `word` looks like a promo code (length, alphabet, a pattern,
    /// not exempt).
    pub fn is_code_shaped(&self, word: &str) -> bool {
        let n = word.len();
        n >= self.min_len
            && n <= self.max_len
            && word.chars().all(|c| self.in_alphabet(c))
            && self.patterns.iter().any(|p| p.is_match(word))
            && !self.exempt.iter().any(|p| p.is_match(word))
    }

    /// Rewrites a whole text at once: every code-shaped word not in `codes` is replaced.
    /// Returns the text and how many codes were replaced and kept.
    pub fn rewrite(&self, text: &str, codes: &CodeSet) -> (String, Tally) {
        let mut out = String::with_capacity(text.len());
        let mut tally = Tally::default();
        let mut s = Scanner::default();
        s.feed(text, self, codes, &mut out, &mut tally);
        s.flush(self, codes, &mut out, &mut tally);
        (out, tally)
    }
}

/// How many code-shaped words a text held.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Invalid codes that were replaced.
    pub replaced: u32,
    /// Valid codes that were kept.
    pub kept: u32,
}

/// The valid promo codes, read from KV. Comparison ignores case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeSet {
    codes: BTreeSet<String>,
}

impl CodeSet {
    /// Reads a KV value: a JSON array of strings, or codes separated by new lines, commas,
    /// semicolons or spaces (what people type into a dashboard field; a code never holds
    /// any of them); lines starting with `#` are skipped. Never fails: what cannot be read is
    /// no code, so an unreadable list makes every code invalid (fail closed).
    pub fn parse(kv_value: &str) -> CodeSet {
        let trimmed = kv_value.trim_start_matches('\u{feff}').trim();
        if trimmed.starts_with('[') {
            if let Ok(items) = serde_json::from_str::<Vec<serde_json::Value>>(trimmed) {
                return CodeSet::from_codes(items.iter().filter_map(|v| v.as_str()));
            }
        }
        CodeSet::from_codes(
            trimmed
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(|l| l.split(|c: char| c == ',' || c == ';' || c.is_whitespace())),
        )
    }

    /// A set of the given codes (trimmed; empty ones skipped).
    pub fn from_codes<'a, I: IntoIterator<Item = &'a str>>(codes: I) -> CodeSet {
        let codes = codes
            .into_iter()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_uppercase)
            .collect();
        CodeSet { codes }
    }

    /// Whether `code` is valid (case-insensitive).
    pub fn contains(&self, code: &str) -> bool {
        self.codes.contains(&code.trim().to_uppercase())
    }

    /// Number of valid codes.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// True when no code is valid.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

/// Rewrites a text that arrives in pieces. It holds back only a trailing word that could
/// still become a code (every character so far in the alphabet, at most `max_len` long);
/// everything else is released as soon as it is fed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scanner {
    /// The unfinished word that may still be a code, as written.
    held: String,
    /// The same word [`fold`]ed to ASCII, as it is judged.
    folded: String,
    /// Inside a word that can no longer be a code: release its characters at once.
    in_plain_word: bool,
}

impl Scanner {
    /// Feeds the next piece of text; appends what may be released to `out`.
    pub(crate) fn feed(
        &mut self,
        text: &str,
        v: &Validator,
        codes: &CodeSet,
        out: &mut String,
        tally: &mut Tally,
    ) {
        if !v.enabled {
            out.push_str(text);
            return;
        }
        for c in text.chars() {
            let a = fold(c);
            if !is_word_char(a) {
                self.settle(v, codes, out, tally);
                self.in_plain_word = false;
                out.push(c);
            } else if self.in_plain_word {
                out.push(c);
            } else if v.in_alphabet(a) && self.folded.len() < v.max_len {
                self.held.push(c);
                self.folded.push(a);
            } else {
                // This word can no longer be a code: too long, or a character codes lack.
                out.push_str(&self.held);
                self.held.clear();
                self.folded.clear();
                out.push(c);
                self.in_plain_word = true;
            }
        }
    }

    /// The text ended: the held word is complete, judge it and release the result.
    pub(crate) fn flush(
        &mut self,
        v: &Validator,
        codes: &CodeSet,
        out: &mut String,
        tally: &mut Tally,
    ) {
        self.settle(v, codes, out, tally);
        self.in_plain_word = false;
    }

    /// The text held back so far.
    #[cfg(test)]
    pub(crate) fn held(&self) -> &str {
        &self.held
    }

    fn settle(&mut self, v: &Validator, codes: &CodeSet, out: &mut String, tally: &mut Tally) {
        if self.held.is_empty() {
            return;
        }
        if v.is_code_shaped(&self.folded) {
            if codes.contains(&self.folded) {
                tally.kept = tally.kept.saturating_add(1);
                out.push_str(&self.held);
            } else {
                tally.replaced = tally.replaced.saturating_add(1);
                out.push_str(&v.replacement);
            }
        } else {
            out.push_str(&self.held);
        }
        self.held.clear();
        self.folded.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn v() -> Validator {
        Validator::new(&ValidationConfig::default()).unwrap()
    }

    #[test]
    fn default_shape() {
        let v = v();
        for w in [
            "SPRING618",
            "SAVE50NOW",
            "SAVE-50",
            "VIP_2024",
            "A1B2C",
            "50OFF",
        ] {
            assert!(v.is_code_shaped(w), "{w}");
        }
        for w in [
            "SPRING",
            "12345678",
            "S618",
            "Spring618",
            "spring618",
            "ABCDEFGHIJKLMNOP1",
        ] {
            assert!(!v.is_code_shaped(w), "{w}");
        }
    }

    #[test]
    fn regression_full_width_codes_are_judged_like_ascii() {
        // Found by testing: an invented code written in full-width forms, as a Chinese reply
        // may write it, went out unchanged.
        let v = v();
        let codes = CodeSet::parse("SPRING618");
        let (out, t) = v.rewrite("用ＦＡＫＥ２０２４Ｘ下单，或ＳＰＲＩＮＧ６１８。", &codes);
        assert!(!out.contains("ＦＡＫＥ"), "{out}");
        assert!(
            out.contains("ＳＰＲＩＮＧ６１８"),
            "a valid code is kept as written: {out}"
        );
        assert_eq!((t.replaced, t.kept), (1, 1));
        // Split across pieces, as a stream delivers it.
        let mut s = Scanner::default();
        let (mut out, mut t) = (String::new(), Tally::default());
        for piece in ["用ＦＡＫ", "Ｅ２０", "２４Ｘ下单"] {
            s.feed(piece, &v, &codes, &mut out, &mut t);
        }
        s.flush(&v, &codes, &mut out, &mut t);
        assert_eq!(t.replaced, 1, "{out}");
    }

    #[test]
    fn exempt_words_are_never_codes() {
        let cfg = ValidationConfig {
            exempt: vec!["ORD[0-9]+".into()],
            ..Default::default()
        };
        let v = Validator::new(&cfg).unwrap();
        let (out, t) = v.rewrite(
            "Order ORD20240618 shipped; FAKE99X is no code.",
            &CodeSet::default(),
        );
        assert_eq!(
            out,
            format!("Order ORD20240618 shipped; {} is no code.", v.replacement())
        );
        assert_eq!(t.replaced, 1);
    }

    #[test]
    fn code_set_forms_and_case() {
        let a = CodeSet::parse(r#"["SPRING618", " save50now ", 3, ""]"#);
        assert_eq!(a.len(), 2);
        assert!(a.contains("spring618") && a.contains("SAVE50NOW"));
        let b = CodeSet::parse("\u{feff}# valid codes\nSPRING618\r\n\n  save50now\n");
        assert_eq!(a, b);
        assert!(CodeSet::parse("").is_empty());
        assert!(CodeSet::parse("[not-json").contains("[NOT-JSON"));
        // regression: `SPRING618,GROUP3` typed into the dashboard was one code, so every real
        // code was replaced in replies.
        for typed in [
            "SPRING618,GROUP3",
            "SPRING618, GROUP3",
            "SPRING618;GROUP3",
            "SPRING618 GROUP3",
        ] {
            let c = CodeSet::parse(typed);
            assert_eq!(c.len(), 2, "{typed}");
            assert!(c.contains("GROUP3"), "{typed}");
        }
    }

    #[test]
    fn rewrite_whole_text() {
        let codes = CodeSet::from_codes(["SPRING618"]);
        let (out, t) = v().rewrite("Use SPRING618 or **FAKE99X**, 使用SAVE50NOW即可.", &codes);
        let r = v().replacement().to_owned();
        assert_eq!(out, format!("Use SPRING618 or **{r}**, 使用{r}即可."));
        assert_eq!(
            t,
            Tally {
                replaced: 2,
                kept: 1
            }
        );
    }

    #[test]
    fn holds_back_only_a_possible_code() {
        let v = v();
        let codes = CodeSet::default();
        let (mut s, mut out, mut t) = (Scanner::default(), String::new(), Tally::default());
        s.feed("Hello there, use SPR", &v, &codes, &mut out, &mut t);
        assert_eq!(out, "Hello there, use ");
        assert_eq!(s.held(), "SPR");
        s.feed("ING618", &v, &codes, &mut out, &mut t);
        assert_eq!(s.held(), "SPRING618");
        s.feed(" now", &v, &codes, &mut out, &mut t);
        assert_eq!(out, format!("Hello there, use {} now", v.replacement()));
        // A lower-case letter ends the hold: "OKay" cannot be a code.
        s.feed(" OK", &v, &codes, &mut out, &mut t);
        assert_eq!(s.held(), "OK");
        s.feed("ay", &v, &codes, &mut out, &mut t);
        assert_eq!(s.held(), "");
        assert!(out.ends_with(" OKay"));
        // A word longer than max_len is released and stays released.
        s.feed(" ABCDEFGHIJKLMNOPQ", &v, &codes, &mut out, &mut t);
        assert_eq!(s.held(), "");
        s.feed("R1", &v, &codes, &mut out, &mut t);
        assert!(out.ends_with(" ABCDEFGHIJKLMNOPQR1"));
        assert_eq!(t.replaced, 1);
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = |f: fn(&mut ValidationConfig)| {
            let mut c = ValidationConfig::default();
            f(&mut c);
            Validator::new(&c).unwrap_err().0
        };
        assert_eq!(bad(|c| c.patterns.push("(".into())), "patterns[2]");
        assert_eq!(bad(|c| c.patterns.clear()), "patterns");
        assert_eq!(
            bad(|c| c.exempt = vec!["ok".into(), "[".into()]),
            "exempt[1]"
        );
        assert_eq!(bad(|c| c.alphabet = "A-Z.".into()), "alphabet");
        assert_eq!(bad(|c| c.alphabet = "[".into()), "alphabet");
        assert_eq!(bad(|c| c.min_len = 0), "min_len");
        assert_eq!(bad(|c| c.max_len = 65), "max_len");
        assert_eq!(bad(|c| c.max_len = 4), "max_len");
        assert_eq!(bad(|c| c.replacement = "x".repeat(1001)), "replacement");
        assert_eq!(bad(|c| c.codes_key = " ".into()), "codes_key");
        let off = ValidationConfig {
            enabled: false,
            patterns: vec![],
            ..Default::default()
        };
        assert!(Validator::new(&off).is_ok());
    }
}
