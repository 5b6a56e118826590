//! Turns normalised text into weighted terms and meaning-flip markers.
//!
//! Text is cut into runs of CJK characters (Han, kana, Hangul) and runs of anything else.
//! Non-CJK runs are words separated by spaces. The terms of a text are:
//! - each word, lightly stemmed (`charged`, `charging`, `charges` all become `charg`);
//! - each pair of consecutive stemmed words, which keeps some word order (`card arrive`);
//! - character 4-grams of each unstemmed word of three or more characters, with boundary
//!   marks, which tolerate typos and inflections stemming misses (`recieve` still shares most
//!   n-grams with `receive`);
//! - in CJK runs, every character bigram, and every single character at a low weight (a
//!   single character carries little meaning on its own: `退款` and `退货` share `退`).
//!
//! Each term is a 64-bit hash whose top four bits name its kind, so that the artefact stores
//! eight bytes per vocabulary term instead of the text, and the query path allocates nothing
//! per term.
//!
//! Next to the terms, [`Markers`] records polarity: whether the text is negated (`not`,
//! `never`, `don't`, `不`, `没`, `未`...) and which side of each meaning-flip pair it takes
//! (enable / disable, opened / unopened, lock / unlock, `退款` / `退货`...). The matcher uses
//! them to refuse answers to the opposite question.

/// Kinds of term, stored in the top four bits of a term hash.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A stemmed word.
    Word = 1,
    /// Two consecutive stemmed words.
    WordPair = 2,
    /// A character n-gram of a word.
    CharGram = 3,
    /// Two consecutive CJK characters.
    CjkPair = 4,
    /// One CJK character.
    CjkChar = 5,
}

impl Kind {
    pub(crate) fn of(hash: u64) -> Option<Kind> {
        match hash >> 60 {
            1 => Some(Kind::Word),
            2 => Some(Kind::WordPair),
            3 => Some(Kind::CharGram),
            4 => Some(Kind::CjkPair),
            5 => Some(Kind::CjkChar),
            _ => None,
        }
    }

    /// Relative weight of one term of this kind.
    pub(crate) fn weight(self) -> f32 {
        match self {
            Kind::Word => 1.0,
            Kind::WordPair => 0.25,
            Kind::CharGram => 0.35,
            Kind::CjkPair => 1.0,
            Kind::CjkChar => 0.3,
        }
    }
}

/// Shortest and longest character n-gram taken from a word (boundary marks included). Only
/// 4-grams: on the banking77 dev split they rank as well as 3- to 5-grams (MRR@5 0.917 against
/// 0.915) with half the terms, so half the artefact and half the posting-list work per query.
const CHAR_GRAM_MIN: usize = 4;
const CHAR_GRAM_MAX: usize = 4;
/// Shortest word that gives character n-grams; shorter ones have only their word term.
const CHAR_GRAM_WORD_MIN: usize = 3;

/// 64-bit FNV-1a, the hash of terms and of the artefact's content.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) const fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn write_char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.write(c.encode_utf8(&mut buf).as_bytes());
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }

    fn term(self, kind: Kind) -> u64 {
        (self.0 & 0x0FFF_FFFF_FFFF_FFFF) | (u64::from(kind as u8) << 60)
    }
}

/// Polarity of a text: negation and the sides taken in meaning-flip pairs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Markers {
    /// The text contains a negation.
    pub negated: bool,
    /// Bit `2g` set: side A of flip group `g` is present; bit `2g + 1`: side B.
    pub flips: u64,
}

impl Markers {
    /// True when `self` and `other` take opposite sides of some flip pair: one has only side
    /// A and the other only side B.
    pub(crate) fn flip_conflict(&self, other: &Markers) -> bool {
        const A: u64 = 0x5555_5555_5555_5555;
        let a1 = self.flips & A;
        let b1 = (self.flips >> 1) & A;
        let a2 = other.flips & A;
        let b2 = (other.flips >> 1) & A;
        let only_a1 = a1 & !b1;
        let only_b1 = b1 & !a1;
        let only_a2 = a2 & !b2;
        let only_b2 = b2 & !a2;
        (only_a1 & only_b2) | (only_b1 & only_a2) != 0
    }
}

/// Meaning-flip pairs: (side A, side B). English entries are one or two whole words,
/// matched before stemming; CJK entries are matched inside CJK runs, longest first (so
/// `未拆封` is not read as `拆封`).
const FLIP_GROUPS: &[(&[&str], &[&str])] = &[
    (
        &[
            "enable",
            "enabled",
            "enabling",
            "activate",
            "activated",
            "activating",
            "activation",
            "turn on",
            "switch on",
            "开启",
            "启用",
            "打开",
            "开通",
            "激活",
        ],
        &[
            "disable",
            "disabled",
            "disabling",
            "deactivate",
            "deactivated",
            "deactivating",
            "deactivation",
            "turn off",
            "switch off",
            "关闭",
            "禁用",
            "停用",
            "关掉",
        ],
    ),
    (
        &["opened", "open", "拆封", "已拆封", "拆开", "开封", "已开封"],
        &["unopened", "sealed", "未拆封", "没拆封", "未开封", "没开封"],
    ),
    (
        &[
            "lock", "locked", "freeze", "frozen", "block", "blocked", "冻结", "锁定",
        ],
        &[
            "unlock",
            "unlocked",
            "unfreeze",
            "unblock",
            "unblocked",
            "解冻",
            "解锁",
            "解封",
        ],
    ),
    (
        &["subscribe", "subscribed", "订阅"],
        &["unsubscribe", "unsubscribed", "取消订阅", "退订"],
    ),
    (
        &["add", "added", "添加", "增加"],
        &["remove", "removed", "delete", "deleted", "删除", "移除"],
    ),
    (
        &["increase", "increased", "raise", "提高", "提升"],
        &["decrease", "decreased", "reduce", "降低"],
    ),
    (
        &["upgrade", "upgraded", "升级"],
        &["downgrade", "downgraded", "降级"],
    ),
    (
        &["link", "linked", "bind", "绑定"],
        &[
            "unlink",
            "unlinked",
            "unbind",
            "解绑",
            "解除绑定",
            "取消绑定",
        ],
    ),
    (
        &["log in", "login", "sign in", "signin", "登录", "登陆"],
        &[
            "log out",
            "logout",
            "sign out",
            "signout",
            "退出登录",
            "注销",
        ],
    ),
    (&["退款"], &["退货"]),
    (&["退货"], &["换货"]),
    (&["退款"], &["换货"]),
    (&["encrypted", "encrypt"], &["unencrypted", "decrypt"]),
    (&["verified", "verify"], &["unverified"]),
    (&["paid"], &["unpaid"]),
];

/// Flip groups whose two sides are a state and its absence, so that a negated side A means
/// side B: "haven't opened", "never opened", `没有拆封` are "unopened"; "not paid" is "unpaid".
/// (Not so for actions: "can't log in" is not "log out", "I didn't enable it" is not a
/// question about disabling, and `不退款` is not `退货`.) Indices into [`FLIP_GROUPS`].
const STATE_GROUPS: &[usize] = &[1, 12, 13, 14];

/// Words that negate what follows but never turn a state into its opposite (see
/// [`STATE_GROUPS`]): ability and absence ("can't open it" is not "unopened").
const NON_STATE_NEGATORS: &[&str] = &[
    "cant", "cannot", "wont", "couldnt", "shouldnt", "wouldnt", "without", "nothing", "neither",
    "nor", "unable",
];

/// CJK negations that do not turn a state into its opposite (`无法拆开`: cannot open).
const CJK_NON_STATE_NEGATORS: &[&str] = &["无法", "别"];

/// How far a negation reaches forward to a state flip term: the term is the next word or the
/// one after ("haven't opened", "haven't even opened"); in CJK, the next character or the one
/// after (`没拆开`, `没有拆封`).
const NEGATION_REACH: usize = 2;

/// Bits of both sides of every [`STATE_GROUPS`] group.
fn state_mask() -> u64 {
    STATE_GROUPS
        .iter()
        .fold(0u64, |m, g| m | (0b11u64 << (2 * g)))
}

/// `bits` with the sides of its state groups swapped.
fn negate_states(bits: u64) -> u64 {
    const A: u64 = 0x5555_5555_5555_5555;
    let state = bits & state_mask();
    let swapped = ((state & A) << 1) | ((state >> 1) & A);
    (bits & !state_mask()) | swapped
}

// TODO(#4): CJK near-misses outside this list (one character apart, like 退款/退货) are
// caught only by the score and margin; a build-time scan for one-character-apart bigrams of
// different entries would cover them in general.

/// Words that negate what follows (after normalisation: apostrophes are gone).
const NEGATORS: &[&str] = &[
    "not", "no", "never", "dont", "doesnt", "didnt", "cant", "cannot", "wont", "isnt", "arent",
    "wasnt", "werent", "havent", "hasnt", "hadnt", "couldnt", "shouldnt", "wouldnt", "without",
    "nothing", "neither", "nor", "unable", "non",
];

/// CJK negations.
const CJK_NEGATORS: &[&str] = &["不", "没", "未", "无法", "别", "非"];

fn is_cjk(c: char) -> bool {
    super::normalize::joins_cjk(c) || ('\u{AC00}'..='\u{D7AF}').contains(&c)
}

/// One run of the text.
#[derive(Copy, Clone, Debug)]
enum Run<'a> {
    Word(&'a str),
    Cjk(&'a str),
}

/// Splits normalised text into words and CJK runs, in order, without allocating.
fn runs(text: &str) -> Runs<'_> {
    Runs {
        words: text.split(' '),
        rest: "",
    }
}

/// Iterator of [`runs`].
struct Runs<'a> {
    words: std::str::Split<'a, char>,
    /// What is left of the current space-separated chunk.
    rest: &'a str,
}

impl<'a> Iterator for Runs<'a> {
    type Item = Run<'a>;

    fn next(&mut self) -> Option<Run<'a>> {
        while self.rest.is_empty() {
            self.rest = self.words.next()?;
        }
        let mut chars = self.rest.char_indices();
        let cjk = chars.next().is_some_and(|(_, c)| is_cjk(c));
        let end = chars
            .find(|(_, c)| is_cjk(*c) != cjk)
            .map_or(self.rest.len(), |(i, _)| i);
        let (run, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(if cjk { Run::Cjk(run) } else { Run::Word(run) })
    }
}

/// A light English stemmer: plural `s`, `ing`, `ed` and a final `e`.
pub(crate) fn stem(word: &str) -> &str {
    if word.len() <= 3 || !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return word;
    }
    let mut w = word;
    if let Some(s) = w.strip_suffix("ies") {
        if s.len() >= 3 {
            // `companies` -> `compan`, like `company` below.
            return s;
        }
    }
    if w.ends_with("sses") {
        w = &w[..w.len() - 2];
    } else if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        w = &w[..w.len() - 1];
    }
    let mut stripped = false;
    for suffix in ["ing", "ed"] {
        if let Some(s) = w.strip_suffix(suffix) {
            if s.len() >= 3 && s.bytes().any(|b| is_vowel(&b)) {
                w = s;
                stripped = true;
                break;
            }
        }
    }
    let b = w.as_bytes();
    if stripped && b.len() >= 4 {
        let (x, y) = (b[b.len() - 1], b[b.len() - 2]);
        if x == y && !matches!(x, b'l' | b's' | b'z') && !is_vowel(&x) {
            w = &w[..w.len() - 1];
        }
    }
    if w.len() > 3 {
        if let Some(s) = w.strip_suffix('e') {
            w = s;
        }
    }
    if let Some(s) = w.strip_suffix('y') {
        if s.len() >= 3 {
            return s;
        }
    }
    w
}

fn is_vowel(b: &u8) -> bool {
    matches!(b, b'a' | b'e' | b'i' | b'o' | b'u' | b'y')
}

/// Receives the terms of a text.
pub(crate) trait Sink {
    fn term(&mut self, hash: u64);
}

impl Sink for Vec<u64> {
    fn term(&mut self, hash: u64) {
        self.push(hash);
    }
}

/// Feeds every term of normalised `text` to `sink` (a term repeats as often as it occurs).
pub(crate) fn terms(text: &str, sink: &mut impl Sink) {
    let mut prev_stem: Option<&str> = None;
    for run in runs(text) {
        match run {
            Run::Word(word) => {
                let s = stem(word);
                if let Some(p) = prev_stem {
                    let mut h = Fnv::new();
                    h.write(p.as_bytes());
                    h.write(b" ");
                    h.write(s.as_bytes());
                    sink.term(h.term(Kind::WordPair));
                }
                prev_stem = Some(s);
                word_terms(word, sink);
            }
            Run::Cjk(run) => {
                prev_stem = None;
                let mut prev: Option<char> = None;
                for c in run.chars() {
                    let mut h = Fnv::new();
                    h.write_char(c);
                    sink.term(h.term(Kind::CjkChar));
                    if let Some(p) = prev {
                        let mut h = Fnv::new();
                        h.write_char(p);
                        h.write_char(c);
                        sink.term(h.term(Kind::CjkPair));
                    }
                    prev = Some(c);
                }
            }
        }
    }
}

/// The terms of one word on its own: its stem and its character n-grams (not the pair with
/// the previous word). [`terms`] gives these for every word.
fn word_terms(word: &str, sink: &mut impl Sink) {
    let mut h = Fnv::new();
    h.write(stem(word).as_bytes());
    sink.term(h.term(Kind::Word));
    char_grams(word, sink);
}

/// The words of normalised `text` (not its CJK runs), in order.
pub(crate) fn words(text: &str) -> impl Iterator<Item = &str> {
    runs(text).filter_map(|r| match r {
        Run::Word(w) => Some(w),
        Run::Cjk(_) => None,
    })
}

/// Key of the term group of `word` (see [`word_group`]): a hash of the word as written.
pub(crate) fn group_key(word: &str) -> u64 {
    let mut h = Fnv::new();
    h.write(word.as_bytes());
    h.finish()
}

/// The terms of `word` on its own ([`word_terms`]) into `out`, sorted and without repeats,
/// when it has more than one (a word with character n-grams); else `out` is left empty.
/// The matcher scores such a group through one precomputed posting list instead of one list
/// per term.
pub(crate) fn word_group(word: &str, out: &mut Vec<u64>) {
    out.clear();
    word_terms(word, out);
    out.sort_unstable();
    out.dedup();
    if out.len() < 2 {
        out.clear();
    }
}

/// Character n-grams of `^word$` (n from [`CHAR_GRAM_MIN`] to [`CHAR_GRAM_MAX`]). Words shorter
/// than [`CHAR_GRAM_WORD_MIN`] characters give none: the word term covers them.
fn char_grams(word: &str, sink: &mut impl Sink) {
    let mut chars: [char; 34] = ['\0'; 34];
    let mut n = 0;
    chars[n] = '^';
    n += 1;
    for c in word.chars() {
        if n >= chars.len() - 1 {
            // Very long "words" (pasted tokens, URLs) get n-grams of their first 32 characters.
            break;
        }
        chars[n] = c;
        n += 1;
    }
    chars[n] = '$';
    n += 1;
    if n < CHAR_GRAM_WORD_MIN + 2 {
        return;
    }
    for len in CHAR_GRAM_MIN..=CHAR_GRAM_MAX {
        if len > n {
            break;
        }
        for start in 0..=n - len {
            let mut h = Fnv::new();
            for c in &chars[start..start + len] {
                h.write_char(*c);
            }
            sink.term(h.term(Kind::CharGram));
        }
    }
}

/// Negation and meaning-flip markers of normalised `text`.
///
/// A negation right before a state flip term ([`STATE_GROUPS`], within [`NEGATION_REACH`])
/// turns it into the other side and is used up: "I haven't opened the book" takes the
/// "unopened" side and is not negated as a whole, so it matches "an unopened book" and
/// conflicts with "an opened book".
pub(crate) fn markers(text: &str) -> Markers {
    let table = flip_table();
    let mut m = Markers::default();
    let mut prev: Option<&str> = None;
    // Negations not used up by a state term, and the word index of the last one that may be.
    let mut negations = 0usize;
    let mut state_negation: Option<usize> = None;
    for (i, run) in runs(text).enumerate() {
        match run {
            Run::Word(word) => {
                let mut bits = table.bits(word);
                if bits & state_mask() != 0
                    && state_negation.is_some_and(|j| i - j <= NEGATION_REACH)
                {
                    bits = negate_states(bits);
                    negations -= 1;
                    state_negation = None;
                }
                m.flips |= bits;
                if NEGATORS.contains(&word) {
                    negations += 1;
                    if !NON_STATE_NEGATORS.contains(&word) {
                        state_negation = Some(i);
                    }
                }
                if let Some(p) = prev {
                    // Two-word flip terms ("turn on") are short: a pair that does not fit the
                    // buffer is not one of them.
                    let mut buf = [0u8; 32];
                    let len = p.len() + 1 + word.len();
                    if let Some(dst) = buf.get_mut(..len) {
                        dst[..p.len()].copy_from_slice(p.as_bytes());
                        dst[p.len()] = b' ';
                        dst[p.len() + 1..].copy_from_slice(word.as_bytes());
                        if let Ok(pair) = std::str::from_utf8(dst) {
                            m.flips |= table.bits(pair);
                        }
                    }
                }
                prev = Some(word);
            }
            Run::Cjk(run) => {
                prev = None;
                state_negation = None;
                let (bits, n) = table.cjk_markers(run);
                m.flips |= bits;
                negations += n;
            }
        }
    }
    m.negated = negations > 0;
    m
}

/// [`FLIP_GROUPS`] as a sorted table: every term once, with the bits of every side it is on.
#[derive(Debug)]
struct FlipTable {
    terms: Vec<(&'static str, u64)>,
}

fn flip_table() -> &'static FlipTable {
    static TABLE: std::sync::OnceLock<FlipTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut terms: Vec<(&'static str, u64)> = Vec::new();
        for (g, (a, b)) in FLIP_GROUPS.iter().enumerate() {
            terms.extend(a.iter().map(|t| (*t, 1u64 << (2 * g))));
            terms.extend(b.iter().map(|t| (*t, 1u64 << (2 * g + 1))));
        }
        terms.sort_unstable();
        let mut merged: Vec<(&'static str, u64)> = Vec::with_capacity(terms.len());
        for (t, bits) in terms {
            match merged.last_mut() {
                Some((last, b)) if *last == t => *b |= bits,
                _ => merged.push((t, bits)),
            }
        }
        FlipTable { terms: merged }
    })
}

impl FlipTable {
    /// The flip bits of one whole term (a word or two words).
    fn bits(&self, term: &str) -> u64 {
        self.terms
            .binary_search_by(|(t, _)| (*t).cmp(term))
            .map_or(0, |i| self.terms[i].1)
    }

    /// Scans a CJK run left to right, taking the longest flip term at each position: its
    /// flip bits and how many negations it has that no state term used up (see [`markers`]).
    fn cjk_markers(&self, run: &str) -> (u64, usize) {
        let mut bits = 0;
        let mut negations = 0;
        // Character index just after the last negation a state term may use up.
        let mut state_negation: Option<usize> = None;
        let mut i = 0;
        let mut chars = 0usize;
        while let Some(rest) = run.get(i..) {
            let Some(c) = rest.chars().next() else { break };
            let mut first = [0u8; 4];
            let first = c.encode_utf8(&mut first).as_bytes();
            // Terms starting with `c` are contiguous in the sorted table.
            let from = self.terms.partition_point(|(t, _)| t.as_bytes() < first);
            let best = self.terms[from..]
                .iter()
                .take_while(|(t, _)| t.as_bytes().starts_with(first))
                .filter(|(t, _)| rest.starts_with(t))
                .max_by_key(|(t, _)| t.len());
            if let Some((t, b)) = best {
                let mut b = *b;
                if b & state_mask() != 0
                    && state_negation.is_some_and(|end| chars - end < NEGATION_REACH)
                {
                    b = negate_states(b);
                    negations -= 1;
                    state_negation = None;
                }
                bits |= b;
                i += t.len();
                chars += t.chars().count();
                continue;
            }
            if let Some(n) = CJK_NEGATORS.iter().find(|n| rest.starts_with(**n)) {
                negations += 1;
                i += n.len();
                chars += n.chars().count();
                if !CJK_NON_STATE_NEGATORS.contains(n) {
                    state_negation = Some(chars);
                }
                continue;
            }
            i += c.len_utf8();
            chars += 1;
        }
        (bits, negations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faq::normalize::normalize;

    fn m(text: &str) -> Markers {
        markers(&normalize(text))
    }

    #[test]
    fn stems_inflections_together() {
        for w in ["charge", "charged", "charges", "charging"] {
            assert_eq!(stem(w), "charg", "{w}");
        }
        assert_eq!(stem("transferred"), "transfer");
        assert_eq!(stem("transfers"), "transfer");
        assert_eq!(stem("cards"), "card");
        assert_eq!(stem("address"), "address");
        assert_eq!(stem("bus"), "bus");
        assert_eq!(stem("top"), "top");
        assert_eq!(stem("topping"), "top");
        assert_eq!(stem("退款"), "退款");
    }

    #[test]
    fn splits_cjk_from_latin() {
        let mut t = Vec::new();
        terms(&normalize("用SPRING618下单"), &mut t);
        let words = t
            .iter()
            .filter(|h| Kind::of(**h) == Some(Kind::Word))
            .count();
        let cjk_pairs = t
            .iter()
            .filter(|h| Kind::of(**h) == Some(Kind::CjkPair))
            .count();
        // `spring618` is one word; `用` and `下单` are CJK runs: one pair (`下单`).
        assert_eq!(words, 1);
        assert_eq!(cjk_pairs, 1);
    }

    #[test]
    fn cjk_terms_tell_refund_from_return() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        terms("退款", &mut a);
        terms("退货", &mut b);
        let pairs = |v: &Vec<u64>| -> Vec<u64> {
            v.iter()
                .copied()
                .filter(|h| Kind::of(*h) == Some(Kind::CjkPair))
                .collect()
        };
        assert_ne!(pairs(&a), pairs(&b));
    }

    #[test]
    fn negation_in_both_languages() {
        assert!(m("My card hasn't arrived").negated);
        assert!(m("I did not get my refund").negated);
        assert!(!m("When will my card arrive?").negated);
        assert!(m("课程还没收到").negated);
        assert!(m("我不想要了").negated);
        assert!(!m("课程什么时候到").negated);
    }

    #[test]
    fn flip_pairs_conflict_only_across_sides() {
        assert!(
            m("How do I enable notifications").flip_conflict(&m("how to disable notifications"))
        );
        assert!(m("Refund for an unopened book").flip_conflict(&m("refund for an opened book")));
        assert!(m("turn on two-factor").flip_conflict(&m("turn off two factor")));
        assert!(m("退款政策是什么").flip_conflict(&m("退货政策是什么")));
        assert!(m("怎么开启自动续费").flip_conflict(&m("怎么关闭自动续费")));
        assert!(m("未拆封的教材能退吗").flip_conflict(&m("已拆封的教材能退吗")));
        assert!(!m("enable notifications").flip_conflict(&m("how do I enable notifications")));
        assert!(!m("未拆封的教材能退吗").flip_conflict(&m("没拆封的书可以退吗")));
        // A text that mentions both sides conflicts with neither.
        assert!(!m("enable or disable alerts").flip_conflict(&m("disable alerts")));
        // A text without the pair does not conflict.
        assert!(!m("notifications settings").flip_conflict(&m("disable notifications")));
    }

    // Regression (fault class: opposite question): "I haven't opened the textbook" was read as
    // "opened" (plus a negation that only lowered the score) and matched "return an opened book".
    #[test]
    fn regression_negated_state_takes_the_other_side() {
        let opened = m("Can I return an opened textbook?");
        let unopened = m("Can I return an unopened textbook?");
        for q in [
            "I haven't opened the textbook, can I return it?",
            "never opened the book",
            "the workbook has not been opened",
            "I haven't even opened it",
        ] {
            assert!(m(q).flip_conflict(&opened), "{q}");
            assert!(!m(q).flip_conflict(&unopened), "{q}");
        }
        // The negation is used up by the state: the question itself is not negated.
        assert!(!m("I haven't opened the textbook, can I return it?").negated);
        assert!(m("I haven't opened it and it is not working").negated);
        let opened = m("已拆封的教材能退货吗");
        for q in [
            "我还没拆开教材，可以退吗",
            "没有拆封的教材能退货吗",
            "教材没拆封可以退吗",
            "还没开封的书",
        ] {
            assert!(m(q).flip_conflict(&opened), "{q}");
            assert!(!m(q).flip_conflict(&m("未拆封的教材能退吗")), "{q}");
            assert!(!m(q).negated, "{q}");
        }
        assert!(m("not paid").flip_conflict(&m("paid invoice")));
        assert!(!m("not paid").flip_conflict(&m("unpaid invoice")));
    }

    // Only states flip: an action that cannot be done is still that action ("can't log in" is
    // a log-in question, `不退款` is not `退货`), and ability never turns a state around.
    #[test]
    fn negated_actions_keep_their_side() {
        assert!(!m("I can't log in").flip_conflict(&m("how do I log in")));
        assert!(m("I can't log in").flip_conflict(&m("how do I log out")));
        assert!(!m("I didn't enable auto renew").flip_conflict(&m("enable auto renew")));
        assert!(!m("为什么不退款").flip_conflict(&m("怎么退款")));
        assert!(m("为什么不退款").flip_conflict(&m("怎么退货")));
        assert!(!m("I can't open the book").flip_conflict(&m("opened book")));
        assert!(!m("无法拆开包装").flip_conflict(&m("已拆封")));
        // Too far from the negation: "not" does not reach "opened" three words on.
        assert!(!m("not sure if the box was opened").flip_conflict(&m("opened box")));
    }
}
