//! Text normalisation applied to every phrasing at build time and every query at lookup.
//!
//! Two strings that a person reads as the same question must normalise to the same text:
//! full-width and half-width forms, letter case, punctuation (ASCII, general and CJK),
//! any kind of whitespace (including the ideographic space U+3000) and invisible characters
//! (zero-width spaces, joiners, the byte-order mark, soft hyphens, variation selectors) must
//! not change what a query matches.
//!
//! The steps, in order:
//! 1. drop invisible characters;
//! 2. Unicode NFKC (full-width `Ａ` and `１` become `A` and `1`, half-width katakana become
//!    full-width, U+3000 becomes a space, ligatures split);
//! 3. case folding (lowercase, plus `ß` to `ss` and final sigma to sigma), then NFKC again
//!    because lowercasing can leave a string that is no longer in NFKC;
//! 4. apostrophes inside a word are dropped (`don't` to `dont`, so contractions stay one
//!    word), and so is a hyphen after a word that is a reversing prefix ([`JOINED_PREFIXES`]:
//!    `un-opened` to `unopened`, `de-activate` to `deactivate`, so the meaning-flip guards
//!    see the word they know); every other punctuation, symbol-like separator, control or
//!    whitespace character becomes a space;
//! 5. runs of spaces collapse to one, and the ends are trimmed, except after a lone `un`:
//!    any separator there joins it to the next word (`un opened`, `un/opened`, `un_lock`
//!    read as `unopened`, `unlock`: a stray space must not drop the prefix that flips the
//!    meaning).
//!
//! [`for_markers`] is the same text with plain whitespace between two CJK characters also
//! dropped (Chinese and Japanese do not space words: `未 拆封` is `未拆封`, `退 货` is `退货`),
//! for the meaning-flip guards only. It is not idempotent (a comma between two CJK
//! characters becomes a space, which a second pass would drop), so terms and the duplicate
//! check use [`normalize`].
//!
//! The result is idempotent: `normalize(&normalize(s)) == normalize(s)` (property-tested).
//!
//! Text made only of ASCII, CJK unified ideographs and the commonest CJK punctuation (most
//! queries) takes a single pass that gives the same result without the Unicode tables: those
//! characters are already in NFKC (or, for full-width `，？！：；`, map to ASCII punctuation,
//! which is a separator either way), none is invisible, none composes with another, and only
//! ASCII letters have case. A property test compares both paths on such text.

use unicode_normalization::UnicodeNormalization;

/// Normalises `text` for matching (see the module documentation for the steps).
pub fn normalize(text: &str) -> String {
    normalize_with(text, false)
}

/// The text the meaning-flip guards read: `raw` normalised, with plain whitespace between two
/// CJK characters dropped; `norm` (its [`normalize`]d form) when that changes nothing.
pub(crate) fn for_markers<'a>(raw: &str, norm: &'a str) -> std::borrow::Cow<'a, str> {
    let spaced_cjk = norm.as_bytes().iter().enumerate().any(|(i, b)| {
        *b == b' '
            && norm[..i].chars().next_back().is_some_and(joins_cjk)
            && norm[i + 1..].chars().next().is_some_and(joins_cjk)
    });
    if spaced_cjk {
        std::borrow::Cow::Owned(normalize_with(raw, true))
    } else {
        std::borrow::Cow::Borrowed(norm)
    }
}

fn normalize_with(text: &str, cjk_spaces: bool) -> String {
    if text.chars().all(is_simple) {
        return normalize_simple(text, cjk_spaces);
    }
    normalize_unicode(text, cjk_spaces)
}

/// Characters the one-pass path handles (see the module documentation).
fn is_simple(c: char) -> bool {
    c.is_ascii()
        || matches!(
            c,
            '\u{4E00}'..='\u{9FFF}'
                | '\u{3000}'..='\u{3002}'
                | '\u{300A}'..='\u{3011}'
                | '\u{FF01}'
                | '\u{FF0C}'
                | '\u{FF1A}'
                | '\u{FF1B}'
                | '\u{FF1F}'
        )
}

/// Steps 3 to 5 in one pass, for text of [`is_simple`] characters only (steps 1 and 2 change
/// nothing there but turn full-width punctuation and U+3000 into ASCII separators).
fn normalize_simple(text: &str, cjk_spaces: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev_word = false;
    let mut gap = Gap::new(cjk_spaces);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next_word = chars.peek().is_some_and(|n| n.is_alphanumeric());
        if is_apostrophe(c) {
            if !(prev_word && next_word) {
                gap.add(c);
                prev_word = false;
            }
            continue;
        }
        if is_separator(c) {
            gap.add(c);
            prev_word = false;
            continue;
        }
        gap.close(&mut out, c);
        out.push(c.to_ascii_lowercase());
        prev_word = c.is_alphanumeric();
    }
    out
}

/// The full path: every step with the Unicode tables.
fn normalize_unicode(text: &str, cjk_spaces: bool) -> String {
    let visible: String = text.chars().filter(|c| !is_invisible(*c)).collect();
    let mut folded = fold_nfkc(&visible);
    // Case folding and NFKC can feed each other for a few exotic characters; a second round
    // reaches the fixed point for everything the property test has found.
    let again = fold_nfkc(&folded);
    if again != folded {
        folded = again;
    }
    separate(&folded, cjk_spaces)
}

/// NFKC, case folding, NFKC.
fn fold_nfkc(text: &str) -> String {
    let mut lower = String::with_capacity(text.len());
    for c in text.nfkc() {
        match c {
            'ß' | 'ẞ' => lower.push_str("ss"),
            'ς' => lower.push('σ'),
            _ => lower.extend(c.to_lowercase()),
        }
    }
    lower.nfkc().collect()
}

/// Steps 4 and 5: apostrophes, punctuation and whitespace.
fn separate(text: &str, cjk_spaces: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut prev_word = false;
    let mut gap = Gap::new(cjk_spaces);
    while let Some(c) = chars.next() {
        let next_word = chars.peek().is_some_and(|n| n.is_alphanumeric());
        if is_apostrophe(c) {
            if prev_word && next_word {
                continue;
            }
            gap.add(c);
            prev_word = false;
            continue;
        }
        if is_separator(c) {
            gap.add(c);
            prev_word = false;
            continue;
        }
        gap.close(&mut out, c);
        out.push(c);
        prev_word = c.is_alphanumeric();
    }
    out
}

/// Prefixes that reverse the word they are hyphenated to (`un-opened`, `de-activate`,
/// `dis-connect`): the hyphen is dropped so the word reads as it is usually written. (`non-`
/// stays a word of its own, a negation: `non opened` reads as not opened.) `un`, never a word
/// of its own in English, joins the next word across any separator.
pub const JOINED_PREFIXES: &[&str] = &["un", "de", "dis"];

/// The separators between two words, as they are read: `len` characters, all whitespace or
/// not, and whether the only one is a dash.
struct Gap {
    len: usize,
    punctuation: bool,
    dash: bool,
    /// Whitespace between two CJK characters joins them ([`for_markers`]).
    cjk_spaces: bool,
}

impl Gap {
    fn new(cjk_spaces: bool) -> Self {
        Gap {
            len: 0,
            punctuation: false,
            dash: false,
            cjk_spaces,
        }
    }

    fn add(&mut self, c: char) {
        self.dash = self.len == 0 && is_dash(c);
        self.punctuation |= !c.is_whitespace();
        self.len += 1;
    }

    /// Ends the gap before `next` (a word character): writes the space to `out` unless the
    /// gap [`joins`](Gap::joins) the words around it, and resets.
    fn close(&mut self, out: &mut String, next: char) {
        if self.len > 0 && !out.is_empty() && !self.joins(out, next) {
            out.push(' ');
        }
        *self = Gap::new(self.cjk_spaces);
    }

    /// A gap that does not separate: one dash after a [`JOINED_PREFIXES`] word, any separator
    /// after a lone `un`, and for [`for_markers`] whitespace only between two CJK characters.
    fn joins(&self, out: &str, next: char) -> bool {
        let before = out.chars().next_back().unwrap_or(' ');
        if self.cjk_spaces && !self.punctuation && joins_cjk(before) && joins_cjk(next) {
            return true;
        }
        if !next.is_alphanumeric() || joins_cjk(next) {
            return false;
        }
        let word = out.rsplit(' ').next().unwrap_or("");
        word == "un" || (self.len == 1 && self.dash && JOINED_PREFIXES.contains(&word))
    }
}

/// Hyphens and dashes that can join a prefix to its word (NFKC has already made the
/// full-width and small hyphen-minus plain `-` on the full path).
fn is_dash(c: char) -> bool {
    matches!(c, '-' | '_' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

/// Characters of scripts written without spaces between words: Han, kana.
pub(crate) fn joins_cjk(c: char) -> bool {
    matches!(
        c,
        '\u{3040}'..='\u{30FF}'
            | '\u{3005}'..='\u{3007}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{20000}'..='\u{2FA1F}'
    )
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{2018}' | '`' | '\u{02BC}')
}

/// Characters that are never shown: removing them must not change a match.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Punctuation, whitespace and control characters: they separate words and carry no meaning
/// for matching.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || c.is_ascii_punctuation()
        || matches!(
            c,
            // Latin-1 punctuation and symbols: ¡ ¦ § ¨ « ¬ ¯ ° ± ´ ¶ · ¸ » ¿ × ÷
            '\u{00A1}'
                | '\u{00A6}'..='\u{00A8}'
                | '\u{00AB}'
                | '\u{00AC}'
                | '\u{00AF}'..='\u{00B1}'
                | '\u{00B4}'
                | '\u{00B6}'..='\u{00B8}'
                | '\u{00BB}'
                | '\u{00BF}'
                | '\u{00D7}'
                | '\u{00F7}'
                // General punctuation: dashes, quotes, ellipsis, bullets, per-mille...
                | '\u{2010}'..='\u{205E}'
                // Arrows, shapes and dingbats often used as bullets.
                | '\u{2190}'..='\u{21FF}'
                | '\u{25A0}'..='\u{25FF}'
                | '\u{2700}'..='\u{27BF}'
                // Supplemental punctuation.
                | '\u{2E00}'..='\u{2E7F}'
                // CJK symbols and punctuation: 、。〃〈〉《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟 etc.
                // (U+3005-U+3007 are letters: 々 〆 〇.)
                | '\u{3000}'..='\u{3004}'
                | '\u{3008}'..='\u{3020}'
                | '\u{3030}'
                | '\u{303D}'
                | '\u{30FB}'
                // Vertical and small form variants, CJK compatibility forms.
                | '\u{FE10}'..='\u{FE19}'
                | '\u{FE30}'..='\u{FE6F}'
                // Full-width and half-width punctuation that NFKC leaves alone.
                | '\u{FF01}'..='\u{FF0F}'
                | '\u{FF1A}'..='\u{FF20}'
                | '\u{FF3B}'..='\u{FF40}'
                | '\u{FF5B}'..='\u{FF65}'
                | '\u{FFE0}'..='\u{FFEE}'
        )
}

#[cfg(test)]
mod tests {
    use super::{for_markers, normalize, normalize_unicode};
    use proptest::prelude::*;

    #[test]
    fn folds_case_and_full_width_forms() {
        assert_eq!(
            normalize("ＨＯＷ  do I Get a REFUND？"),
            "how do i get a refund"
        );
        assert_eq!(normalize("ＳＰＲＩＮＧ６１８"), "spring618");
        assert_eq!(normalize("Straße"), "strasse");
        assert_eq!(normalize("ﬁnal ﬂash sale"), "final flash sale");
    }

    #[test]
    fn removes_punctuation_including_cjk() {
        assert_eq!(normalize("退款，怎么申请？"), "退款 怎么申请");
        assert_eq!(normalize("【限时秒杀】几点开始！！"), "限时秒杀 几点开始");
        assert_eq!(
            normalize("《Python入门》课程、发票。"),
            "python入门 课程 发票"
        );
        assert_eq!(normalize("refund... (please!) -- now"), "refund please now");
        assert_eq!(
            normalize("“smart quotes” «guillemets»"),
            "smart quotes guillemets"
        );
    }

    #[test]
    fn whitespace_of_every_kind_collapses() {
        assert_eq!(normalize("退款\u{3000}政策"), "退款 政策");
        assert_eq!(
            normalize("\t refund\u{00A0}\u{2003}policy \r\n"),
            "refund policy"
        );
        assert_eq!(normalize("   "), "");
    }

    #[test]
    fn invisible_characters_are_dropped() {
        assert_eq!(normalize("re\u{200B}fund"), "refund");
        assert_eq!(normalize("\u{FEFF}退\u{200D}款"), "退款");
        assert_eq!(normalize("pro\u{00AD}mo code\u{FE0F}"), "promo code");
    }

    #[test]
    fn contractions_stay_one_word() {
        assert_eq!(normalize("I don't want it"), "i dont want it");
        assert_eq!(normalize("I can\u{2019}t log in"), "i cant log in");
        assert_eq!(normalize("'quoted'"), "quoted");
    }

    #[test]
    fn regression_a_space_does_not_split_a_word_that_flips_meaning() {
        // Found by testing: `未 拆封` and `un opened` lost the part that flips the meaning
        // and were served the opposite answer (`已拆封`, `opened`); `退 货` was served 退款.
        let m = |q: &str| for_markers(q, &normalize(q)).into_owned();
        assert_eq!(m("未 拆封的教材"), "未拆封的教材");
        assert_eq!(m("未\u{3000}拆封"), "未拆封");
        assert_eq!(m("怎么申请退 货"), "怎么申请退货");
        assert_eq!(m("カタ カナ"), "カタカナ");
        assert_eq!(m("退款，怎么申请"), "退款 怎么申请");
        assert_eq!(m("un 退款 refund"), "un 退款 refund");
        assert_eq!(normalize("未 拆封"), "未 拆封");
        for q in [
            "an un opened book",
            "an un_opened book",
            "an un\u{2013}opened book",
        ] {
            assert_eq!(normalize(q), "an unopened book", "{q}");
        }
        assert_eq!(normalize("un/opened, UN.opened"), "unopened unopened");
        assert_eq!(
            normalize("de-activate, de\u{2014}activate"),
            "deactivate deactivate"
        );
        // Only a lone dash joins `de`/`dis`; punctuation between CJK still separates.
        assert_eq!(normalize("de - activate"), "de activate");
        assert_eq!(normalize("un 退款"), "un 退款");
    }

    #[test]
    fn half_width_katakana_become_full_width() {
        assert_eq!(normalize("ｶﾀｶﾅ"), "カタカナ");
    }

    proptest! {
        #[test]
        fn idempotent_on_any_text(s in any::<String>()) {
            let once = normalize(&s);
            prop_assert_eq!(normalize(&once), once.clone());
            prop_assert!(!once.starts_with(' ') && !once.ends_with(' '));
            prop_assert!(!once.contains("  "));
        }

        #[test]
        fn one_pass_path_matches_the_unicode_path(s in "[ -~\t\n\r\x00-\x1f\x7f]{0,60}") {
            prop_assert_eq!(normalize(&s), normalize_unicode(&s, false));
        }

        #[test]
        fn one_pass_path_matches_on_chinese(s in "[a-zA-Z0-9 ,.?!'\u{4E00}-\u{4E20}\u{9FF0}-\u{9FFF}\u{3000}-\u{3002}\u{300A}-\u{3011}\u{FF01}\u{FF0C}\u{FF1A}\u{FF1B}\u{FF1F}]{0,40}") {
            prop_assert_eq!(normalize(&s), normalize_unicode(&s, false));
            prop_assert_eq!(super::normalize_with(&s, true), normalize_unicode(&s, true));
        }

        #[test]
        fn idempotent_on_mixed_scripts(s in "[a-zA-Z0-9 ,.!?'’\u{3000}-\u{303F}\u{4E00}-\u{4E80}\u{FF01}-\u{FF5E}\u{200B}\u{FEFF}\u{0300}-\u{0310}]{0,40}") {
            let once = normalize(&s);
            prop_assert_eq!(normalize(&once), once);
        }
    }
}
