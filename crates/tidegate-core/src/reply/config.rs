//! `[validation]`: what a promo code looks like and what replaces an invalid one.

use serde::Deserialize;

/// Longest `max_len` accepted: it bounds how much text a stream may hold back.
pub const MAX_CODE_LEN: usize = 64;

/// Longest replacement sentence accepted, in characters.
pub const MAX_REPLACEMENT_CHARS: usize = 1000;

/// `[validation]` in the config.
///
/// A reply is cut into *words*: maximal runs of ASCII letters, digits, `-` and `_`. A word is
/// *code-shaped* when it is `min_len..=max_len` characters long, made only of `alphabet`, and
/// matches one of `patterns` in full, and matches none of `exempt`. A code-shaped word that is not in the valid-code list
/// (KV key `codes_key`) is replaced by `replacement`.
///
/// ```toml
/// [validation]
/// enabled = true
/// alphabet = "A-Z0-9_-"
/// patterns = ["[A-Z0-9_-]*[A-Z][A-Z0-9_-]*[0-9][A-Z0-9_-]*",
///             "[A-Z0-9_-]*[0-9][A-Z0-9_-]*[A-Z][A-Z0-9_-]*"]
/// exempt = ["ORD[0-9]+"]
/// min_len = 5
/// max_len = 16
/// replacement = "[this code is not valid - see the promotions page for current offers]"
/// codes_key = "promo_codes"
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Validate replies at all. When off, replies are still watched for usage data and cut
    /// streams, but no text is held back or replaced.
    pub enabled: bool,
    /// Regular expressions (`regex-lite` syntax) a code matches in full (they are anchored
    /// for you). A word is code-shaped if any one matches. The default: a word with at least
    /// one capital letter and one digit, such as `SPRING618` or `SAVE50NOW`.
    pub patterns: Vec<String>,
    /// Regular expressions for words that are never codes even when code-shaped, such as
    /// the shop's order numbers (`ORD[0-9]+`) or product models. Default: none.
    // TODO(#2): the default cannot know a shop's order-number format; an order number that
    // looks like a code (ORD20240618) is replaced until it is listed here.
    pub exempt: Vec<String>,
    /// The characters codes are made of, as the inside of a regex character class
    /// (`A-Z0-9_-`). Only ASCII letters, digits, `-` and `_` can be in it. A streamed word
    /// is held back only while every character so far is in the alphabet, so ordinary words
    /// ("Hello") are released at once.
    pub alphabet: String,
    /// Shortest code, in characters.
    pub min_len: usize,
    /// Longest code, in characters (at most 64). Also the most text a stream holds back.
    pub max_len: usize,
    /// What an invalid code is replaced by.
    pub replacement: String,
    /// The KV key holding the valid codes: a JSON array of strings or one code per line.
    pub codes_key: String,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            enabled: true,
            patterns: vec![
                "[A-Z0-9_-]*[A-Z][A-Z0-9_-]*[0-9][A-Z0-9_-]*".to_owned(),
                "[A-Z0-9_-]*[0-9][A-Z0-9_-]*[A-Z][A-Z0-9_-]*".to_owned(),
            ],
            exempt: Vec::new(),
            alphabet: "A-Z0-9_-".to_owned(),
            min_len: 5,
            max_len: 16,
            replacement: "[this code is not valid - see the promotions page for current offers]"
                .to_owned(),
            codes_key: "promo_codes".to_owned(),
        }
    }
}

impl ValidationConfig {
    /// Checks values serde cannot; the error names the field (relative to `[validation]`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        super::Validator::new(self).map(|_| ())
    }
}
