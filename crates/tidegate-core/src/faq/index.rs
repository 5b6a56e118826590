//! The knowledge-base artefact: building it from JSONL, its binary format, and the index the
//! matcher searches.
//!
//! # Source format
//! One JSON object a line: `{"id": "refund-window", "questions": ["...", "..."],
//! "answer": "...", "locale": "en", "tags": ["promo"]}`; `locale` and `tags` are optional,
//! unknown fields are an error (a typo such as `"question"` must not be silently ignored).
//! Blank lines are skipped. An id goes out in a response header (`x-tidegate-faq-id`), so it
//! must be printable ASCII without spaces (`!` to `~`). Building rejects, with the 1-based line
//! number: bad JSON, empty, duplicate or ill-formed ids, empty answers, entries without
//! phrasings, phrasings that normalise to nothing, and a phrasing shared by two entries (after
//! normalisation). A phrasing repeated within one entry is kept once.
//!
//! # Artefact format (version 3, integers are LEB128 varints unless noted)
//! ```text
//! "TGKB" | format: u8 = 3 | content hash: u64 LE (FNV-1a 64 of everything after it)
//! entries: n, then per entry: id, answer, locale ("" = any), n tags + tags, n phrasings
//! vocabulary: n, then n term hashes as u64 LE, ascending
//! phrasings (in entry order): negated: u8, flip bits, n terms, then n times
//!     (term index delta from the previous one, term count)
//! word groups: n, then per group (ascending keys): key: u64 LE, n terms, then n term index
//!     deltas (ascending)
//! strings: byte length, then UTF-8
//! ```
//! A word group is the stem and character n-grams of one word as written in some phrasing,
//! keyed by a hash of the word: the matcher scores a query word's group through one posting
//! list instead of one per term (see [`Index::group_postings`]).
//! The artefact stores term hashes and counts, not phrasing text: loading derives weights and
//! posting lists in one pass without tokenising anything. The version is the content hash in
//! hex, so any change to the knowledge base (or to how it is tokenised) yields a new version.
//! Older formats are refused with a message asking for a rebuild: format 1 stored character 3-
//! to 5-grams, whose hashes would not match today's query terms, and format 2 has no word
//! groups.

use super::normalize::{for_markers, normalize};
use super::tokenize::{group_key, markers, terms, word_group, words, Fnv, Kind, Markers};
use serde::Deserialize;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;

const MAGIC: &[u8; 4] = b"TGKB";
const FORMAT: u8 = 3;
const HEADER_LEN: usize = 4 + 1 + 8;
/// Longest accepted id, answer and phrasing, in bytes.
const MAX_ID: usize = 200;
const MAX_TEXT: usize = 64 * 1024;

/// A problem in the knowledge-base source, with its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    /// 1-based line of the JSONL source.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for BuildError {}

/// Why a knowledge-base artefact could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KbError(pub String);

impl std::fmt::Display for KbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid knowledge-base artefact: {}", self.0)
    }
}

impl std::error::Error for KbError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceEntry {
    id: String,
    questions: Vec<String>,
    answer: String,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// One entry as built, before encoding.
struct BuiltEntry {
    id: String,
    answer: String,
    locale: String,
    tags: Vec<String>,
    /// Per phrasing: markers and (term hash, count), sorted by hash.
    phrasings: Vec<(Markers, Vec<(u64, u32)>)>,
}

/// Compiles JSONL knowledge-base source into the artefact the hosts load.
///
/// Every problem found is reported, each with its line number.
pub fn build_artifact(jsonl: &str) -> Result<Vec<u8>, Vec<BuildError>> {
    let mut errors = Vec::new();
    let mut entries: Vec<BuiltEntry> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut owners: HashMap<String, (String, usize)> = HashMap::new();
    // Word groups by key (see the module documentation).
    let mut groups: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut group_terms: Vec<u64> = Vec::new();
    // A byte-order mark (what some editors save UTF-8 with) is not part of the first line.
    let jsonl = jsonl.strip_prefix('\u{feff}').unwrap_or(jsonl);
    for (idx, raw) in jsonl.lines().enumerate() {
        let line = idx + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let mut err = |message: String| errors.push(BuildError { line, message });
        let src: SourceEntry = match serde_json::from_str(raw) {
            Ok(s) => s,
            Err(e) => {
                err(format!("not a valid entry: {e}"));
                continue;
            }
        };
        let id = src.id.trim().to_owned();
        if id.is_empty() {
            err("`id` is empty".into());
            continue;
        }
        if id.len() > MAX_ID {
            err(format!("`id` is longer than {MAX_ID} bytes"));
            continue;
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            err(format!(
                "`id` {id:?} may hold only printable ASCII without spaces (`!` to `~`): it is \
                 sent in the `x-tidegate-faq-id` header"
            ));
            continue;
        }
        match ids.entry(id.clone()) {
            MapEntry::Occupied(first) => {
                err(format!(
                    "duplicate id `{id}` (first on line {})",
                    first.get()
                ));
                continue;
            }
            MapEntry::Vacant(v) => {
                v.insert(line);
            }
        }
        let answer = src.answer.trim().to_owned();
        if answer.is_empty() {
            err(format!("entry `{id}` has an empty answer"));
        } else if answer.len() > MAX_TEXT {
            err(format!(
                "entry `{id}`: answer is longer than {MAX_TEXT} bytes"
            ));
        }
        if src.questions.is_empty() {
            err(format!("entry `{id}` has no questions"));
        }
        let mut seen: Vec<String> = Vec::new();
        let mut phrasings = Vec::new();
        for q in &src.questions {
            if q.len() > MAX_TEXT {
                err(format!(
                    "entry `{id}`: a question is longer than {MAX_TEXT} bytes"
                ));
                continue;
            }
            let norm = normalize(q);
            if norm.is_empty() {
                err(format!(
                    "entry `{id}`: question {q:?} is empty after normalisation"
                ));
                continue;
            }
            if seen.contains(&norm) {
                continue;
            }
            match owners.get(&norm) {
                Some((other, other_line)) => {
                    err(format!(
                        "question {q:?} of `{id}` is also a question of `{other}` (line {other_line})"
                    ));
                    continue;
                }
                None => {
                    owners.insert(norm.clone(), (id.clone(), line));
                }
            }
            phrasings.push((markers(&for_markers(q, &norm)), counted_terms(&norm)));
            for word in words(&norm) {
                let key = group_key(word);
                if let MapEntry::Vacant(slot) = groups.entry(key) {
                    word_group(word, &mut group_terms);
                    if !group_terms.is_empty() {
                        slot.insert(group_terms.clone());
                    }
                }
            }
            seen.push(norm);
        }
        let locale = src
            .locale
            .map(|l| l.trim().to_ascii_lowercase())
            .unwrap_or_default();
        entries.push(BuiltEntry {
            id,
            answer,
            locale,
            tags: src.tags,
            phrasings,
        });
    }
    if entries.is_empty() && errors.is_empty() {
        errors.push(BuildError {
            line: 1,
            message: "the knowledge base has no entries".into(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(encode(&entries, &groups))
}

/// Terms of normalised text with their counts, sorted by hash.
pub(crate) fn counted_terms(norm: &str) -> Vec<(u64, u32)> {
    let mut hashes: Vec<u64> = Vec::new();
    terms(norm, &mut hashes);
    hashes.sort_unstable();
    let mut out: Vec<(u64, u32)> = Vec::with_capacity(hashes.len());
    for h in hashes {
        match out.last_mut() {
            Some((last, n)) if *last == h => *n += 1,
            _ => out.push((h, 1)),
        }
    }
    out
}

fn encode(entries: &[BuiltEntry], groups: &HashMap<u64, Vec<u64>>) -> Vec<u8> {
    let mut vocab: Vec<u64> = entries
        .iter()
        .flat_map(|e| e.phrasings.iter())
        .flat_map(|p| p.1.iter().map(|t| t.0))
        .collect();
    vocab.sort_unstable();
    vocab.dedup();
    let mut body = Vec::new();
    put_varint(&mut body, entries.len() as u64);
    for e in entries {
        put_str(&mut body, &e.id);
        put_str(&mut body, &e.answer);
        put_str(&mut body, &e.locale);
        put_varint(&mut body, e.tags.len() as u64);
        for t in &e.tags {
            put_str(&mut body, t);
        }
        put_varint(&mut body, e.phrasings.len() as u64);
    }
    put_varint(&mut body, vocab.len() as u64);
    for h in &vocab {
        body.extend_from_slice(&h.to_le_bytes());
    }
    for e in entries {
        for (m, ts) in &e.phrasings {
            body.push(u8::from(m.negated));
            put_varint(&mut body, m.flips);
            put_varint(&mut body, ts.len() as u64);
            let mut prev = 0u64;
            for (h, n) in ts {
                // Terms are sorted by hash and the vocabulary too, so indices ascend.
                let idx = vocab.binary_search(h).unwrap_or(0) as u64;
                put_varint(&mut body, idx - prev);
                put_varint(&mut body, u64::from(*n));
                prev = idx;
            }
        }
    }
    let mut keys: Vec<u64> = groups.keys().copied().collect();
    keys.sort_unstable();
    put_varint(&mut body, keys.len() as u64);
    for key in keys {
        body.extend_from_slice(&key.to_le_bytes());
        let mut idxs: Vec<u64> = groups
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|h| vocab.binary_search(h).ok())
            .map(|i| i as u64)
            .collect();
        idxs.sort_unstable();
        put_varint(&mut body, idxs.len() as u64);
        let mut prev = 0u64;
        for i in idxs {
            put_varint(&mut body, i - prev);
            prev = i;
        }
    }
    let mut fnv = Fnv::new();
    fnv.write(&body);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&fnv.finish().to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads the artefact body, checking every bound.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> KbError {
        KbError(format!("{what} at byte {}", self.pos + HEADER_LEN))
    }

    fn byte(&mut self) -> Result<u8, KbError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, KbError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    /// A count of items that each take at least `min_bytes`: refuses counts the remaining
    /// bytes cannot hold, so a corrupt count cannot trigger a huge allocation.
    fn count(&mut self, min_bytes: usize) -> Result<usize, KbError> {
        let n = self.varint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes.max(1) as u64) > left {
            return Err(self.err("count larger than the artefact"));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], KbError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| self.err("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, KbError> {
        let n = self.count(1)?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("invalid UTF-8"))
    }

    fn u64_le(&mut self) -> Result<u64, KbError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// One loaded entry.
#[derive(Clone, Debug)]
pub(crate) struct EntryData {
    pub id: String,
    pub answer: String,
    /// Lowercase locale, "" for any.
    pub locale: String,
    pub tags: Vec<String>,
    /// Phrasings `phrasings.0 .. phrasings.1` in [`Index::phrasing_markers`].
    pub phrasings: (u32, u32),
    /// One over the length of the sum of its phrasings' unit vectors: the cosine with the
    /// entry's centroid is the sum of the phrasing cosines times this.
    pub centroid_scale: f32,
    /// Union of the markers of all its phrasings.
    pub markers: Markers,
}

/// A sparse matrix in compressed rows: row `r` is `items[offs[r]..offs[r + 1]]`, each item a
/// (column, value) pair by default, so one posting is one eight-byte read. Rows that reach a
/// large share of the columns also have a dense copy (see [`Postings::densify`]).
#[derive(Clone, Debug)]
pub(crate) struct Postings<T = (u32, f32)> {
    pub offs: Vec<u32>,
    pub items: Vec<T>,
    /// Per row: its index in `dense`, or `u32::MAX` for none (empty: no dense rows).
    dense_of: Vec<u32>,
    /// Dense rows, `width` values each.
    dense: Vec<f32>,
    width: usize,
}

impl<T> Default for Postings<T> {
    fn default() -> Self {
        Postings {
            offs: vec![0],
            items: Vec::new(),
            dense_of: Vec::new(),
            dense: Vec::new(),
            width: 0,
        }
    }
}

impl<T> Postings<T> {
    /// Appends a row.
    fn push_row(&mut self, row: impl IntoIterator<Item = T>) {
        self.items.extend(row);
        self.offs.push(self.items.len() as u32);
    }

    /// Row `r` (empty for a row out of range).
    pub(crate) fn row(&self, r: usize) -> &[T] {
        let a = self.offs.get(r).copied().unwrap_or(0) as usize;
        let b = self.offs.get(r + 1).copied().unwrap_or(0) as usize;
        self.items.get(a..b).unwrap_or(&[])
    }
}

impl Postings {
    /// Builds term-major postings from row-major `(term, weight)` rows.
    fn from_rows(n_terms: usize, rows: &[Vec<(u32, f32)>]) -> Self {
        let mut offs = vec![0u32; n_terms + 1];
        for row in rows {
            for (t, _) in row {
                offs[*t as usize + 1] += 1;
            }
        }
        for i in 1..offs.len() {
            offs[i] += offs[i - 1];
        }
        let mut items = vec![(0u32, 0f32); offs[n_terms] as usize];
        let mut fill = offs.clone();
        for (r, row) in rows.iter().enumerate() {
            for (t, w) in row {
                let slot = &mut fill[*t as usize];
                items[*slot as usize] = (r as u32, *w);
                *slot += 1;
            }
        }
        Postings {
            offs,
            items,
            ..Postings::default()
        }
    }

    /// Gives every row with at least one posting in [`DENSE_SHARE`] of the `width` columns a
    /// dense copy: adding a dense row is a straight loop the compiler vectorises, several
    /// times faster than scattering that many postings (`i` and `my` reach half of all
    /// phrasings).
    fn densify(&mut self, width: usize) {
        let rows = self.offs.len().saturating_sub(1);
        let min = (width / DENSE_SHARE).max(DENSE_MIN);
        self.width = width;
        self.dense_of = vec![u32::MAX; rows];
        self.dense.clear();
        let mut n = 0u32;
        for r in 0..rows {
            let (a, b) = (self.offs[r] as usize, self.offs[r + 1] as usize);
            if b - a < min {
                continue;
            }
            let start = self.dense.len();
            self.dense.resize(start + width, 0.0);
            for (c, v) in &self.items[a..b] {
                if let Some(slot) = self.dense.get_mut(start + *c as usize) {
                    *slot = *v;
                }
            }
            self.dense_of[r] = n;
            n += 1;
        }
    }

    /// Adds `w` times row `r` to `acc` (one value per column).
    pub(crate) fn add_row(&self, r: usize, w: f32, acc: &mut [f32]) {
        let dense = self.dense_of.get(r).copied().unwrap_or(u32::MAX) as usize;
        if let Some(row) = self.dense.get(dense * self.width..(dense + 1) * self.width) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += w * v;
            }
            return;
        }
        for (c, v) in self.row(r) {
            if let Some(a) = acc.get_mut(*c as usize) {
                *a += w * v;
            }
        }
    }
}

/// A word group gets a posting list if its terms have one posting per this many phrasings...
const GROUP_MIN_SHARE: usize = 8;
/// ... and at least this many.
const GROUP_MIN_POSTINGS: usize = 64;

/// A posting list reaching at least one column in this many gets a dense copy.
const DENSE_SHARE: usize = 4;
/// ... and at least this many columns (small knowledge bases keep sparse rows only).
const DENSE_MIN: usize = 256;

/// The searchable index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    pub version: String,
    pub entries: Vec<EntryData>,
    /// Term hashes, ascending: a term's index is its position.
    pub vocab: Vec<u64>,
    /// Inverse document frequency per term (documents are entries); 0 for a stop term.
    pub idf: Vec<f32>,
    /// Weight of a query term the knowledge base has never seen.
    pub idf_unknown: f32,
    pub phrasing_entry: Vec<u32>,
    pub phrasing_markers: Vec<Markers>,
    /// term -> (phrasing, weight in the phrasing's unit vector).
    pub by_phrasing: Postings,
    /// Word-group keys, ascending (see the module documentation).
    pub group_keys: Vec<u64>,
    /// Per group, its term indices, ascending.
    pub group_terms: Postings<u32>,
    /// group -> (phrasing, sum over the group's terms t of kind weight(t) x idf(t) x the
    /// phrasing's weight for t). A query word whose group terms each occur once in the query
    /// adds `q_scale` times this to each phrasing's cosine: the sum its terms' posting lists
    /// would add one by one, in one pass (common words such as `card` have four terms with
    /// thousands of postings each, mostly the same phrasings).
    pub group_postings: Postings,
}

/// Weight of a term occurring `count` times (sublinear).
pub(crate) fn tf_weight(count: u32) -> f32 {
    1.0 + (count.max(1) as f32).ln()
}

impl Index {
    pub(crate) fn load(bytes: &[u8]) -> Result<Index, KbError> {
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Err(KbError("not a tidegate knowledge base (bad magic)".into()));
        }
        if bytes[4] != FORMAT {
            return Err(KbError(format!(
                "unsupported format {} (expected {FORMAT}); rebuild it with `tidegate kb build`",
                bytes[4]
            )));
        }
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&bytes[5..13]);
        let hash = u64::from_le_bytes(hash);
        let body = &bytes[HEADER_LEN..];
        let mut fnv = Fnv::new();
        fnv.write(body);
        if fnv.finish() != hash {
            return Err(KbError(
                "content hash mismatch (corrupt or truncated)".into(),
            ));
        }
        let mut r = Reader { buf: body, pos: 0 };
        let n_entries = r.count(4)?;
        let mut entries = Vec::with_capacity(n_entries);
        let mut n_phrasings = 0usize;
        for _ in 0..n_entries {
            let id = r.string()?;
            let answer = r.string()?;
            let locale = r.string()?;
            let n_tags = r.count(1)?;
            let mut tags = Vec::with_capacity(n_tags);
            for _ in 0..n_tags {
                tags.push(r.string()?);
            }
            let n = r.count(3)?;
            let start = n_phrasings as u32;
            n_phrasings += n;
            let end = u32::try_from(n_phrasings).map_err(|_| r.err("too many phrasings"))?;
            entries.push(EntryData {
                id,
                answer,
                locale,
                tags,
                phrasings: (start, end),
                centroid_scale: 0.0,
                markers: Markers::default(),
            });
        }
        let n_terms = r.count(8)?;
        let mut terms = Vec::with_capacity(n_terms);
        for _ in 0..n_terms {
            terms.push(r.u64_le()?);
        }
        // Raw phrasing rows: (term, count).
        let mut rows: Vec<Vec<(u32, u32)>> = Vec::with_capacity(n_phrasings);
        let mut phrasing_entry = Vec::with_capacity(n_phrasings);
        let mut phrasing_markers = Vec::with_capacity(n_phrasings);
        for (e, entry) in entries.iter_mut().enumerate() {
            for _ in entry.phrasings.0..entry.phrasings.1 {
                let negated = r.byte()? != 0;
                let flips = r.varint()?;
                let m = Markers { negated, flips };
                entry.markers.negated |= negated;
                entry.markers.flips |= flips;
                let n = r.count(2)?;
                let mut row = Vec::with_capacity(n);
                let mut idx = 0u64;
                for i in 0..n {
                    let delta = r.varint()?;
                    if i > 0 && delta == 0 {
                        return Err(r.err("repeated term"));
                    }
                    idx = idx
                        .checked_add(delta)
                        .ok_or_else(|| r.err("term index overflow"))?;
                    if idx >= n_terms as u64 {
                        return Err(r.err("term index out of range"));
                    }
                    let count = u32::try_from(r.varint()?).map_err(|_| r.err("term count"))?;
                    row.push((idx as u32, count));
                }
                rows.push(row);
                phrasing_entry.push(e as u32);
                phrasing_markers.push(m);
            }
        }
        let n_groups = r.count(9)?;
        let mut group_keys = Vec::with_capacity(n_groups);
        let mut group_terms: Postings<u32> = Postings::default();
        let mut members: Vec<u32> = Vec::new();
        for _ in 0..n_groups {
            let key = r.u64_le()?;
            if group_keys.last().is_some_and(|last| *last >= key) {
                return Err(r.err("word groups out of order"));
            }
            group_keys.push(key);
            let n = r.count(1)?;
            members.clear();
            let mut idx = 0u64;
            for i in 0..n {
                let delta = r.varint()?;
                if i > 0 && delta == 0 {
                    return Err(r.err("repeated term"));
                }
                idx = idx
                    .checked_add(delta)
                    .ok_or_else(|| r.err("term index overflow"))?;
                if idx >= n_terms as u64 {
                    return Err(r.err("term index out of range"));
                }
                members.push(idx as u32);
            }
            group_terms.push_row(members.iter().copied());
        }
        if r.pos != body.len() {
            return Err(r.err("trailing bytes"));
        }
        let mut index = Self::assemble(
            version_of(hash),
            entries,
            terms,
            rows,
            phrasing_entry,
            phrasing_markers,
        );
        index.group_postings = group_postings(&index, &group_terms);
        let width = index.phrasing_entry.len();
        index.by_phrasing.densify(width);
        index.group_postings.densify(width);
        index.group_keys = group_keys;
        index.group_terms = group_terms;
        Ok(index)
    }

    fn assemble(
        version: String,
        mut entries: Vec<EntryData>,
        terms: Vec<u64>,
        rows: Vec<Vec<(u32, u32)>>,
        phrasing_entry: Vec<u32>,
        phrasing_markers: Vec<Markers>,
    ) -> Index {
        let n_terms = terms.len();
        // Entry-level document frequency: a term used by every phrasing of one entry is
        // distinctive for that entry, not common.
        let mut df = vec![0u32; n_terms];
        let mut last_entry = vec![u32::MAX; n_terms];
        for (row, e) in rows.iter().zip(&phrasing_entry) {
            for (t, _) in row {
                let t = *t as usize;
                if last_entry[t] != *e {
                    last_entry[t] = *e;
                    df[t] += 1;
                }
            }
        }
        let n = entries.len() as f32;
        let idf: Vec<f32> = df
            .iter()
            .map(|d| ((n + 1.0) / (*d as f32 + 1.0)).ln() + 1.0)
            .collect();
        let idf_unknown = (n + 1.0).ln() + 1.0;
        let unit_rows: Vec<Vec<(u32, f32)>> = rows
            .iter()
            .map(|row| {
                let mut v: Vec<(u32, f32)> = row
                    .iter()
                    .map(|(t, c)| {
                        let kind_w = Kind::of(terms[*t as usize]).map_or(0.0, Kind::weight);
                        (*t, kind_w * tf_weight(*c) * idf[*t as usize])
                    })
                    .collect();
                normalise_vec(&mut v);
                v
            })
            .collect();
        // The centroid is the normalised sum of an entry's unit phrasing vectors, so its
        // cosine with a query is the sum of the phrasing cosines over the length of that sum:
        // only the length is kept, and no posting list is needed for centroids.
        let mut dense = vec![0f32; n_terms];
        let mut touched: Vec<u32> = Vec::new();
        for entry in &mut entries {
            let (a, b) = (entry.phrasings.0 as usize, entry.phrasings.1 as usize);
            for row in &unit_rows[a..b] {
                for (t, w) in row {
                    let slot = &mut dense[*t as usize];
                    if *slot == 0.0 {
                        touched.push(*t);
                    }
                    *slot += *w;
                }
            }
            let mut sq = 0.0f32;
            for t in touched.drain(..) {
                let w = std::mem::take(&mut dense[t as usize]);
                sq += w * w;
            }
            entry.centroid_scale = if sq > 0.0 { 1.0 / sq.sqrt() } else { 0.0 };
        }
        Index {
            version,
            entries,
            by_phrasing: Postings::from_rows(n_terms, &unit_rows),
            vocab: terms,
            idf,
            idf_unknown,
            phrasing_entry,
            phrasing_markers,
            group_keys: Vec::new(),
            group_terms: Postings::default(),
            group_postings: Postings::default(),
        }
    }
}

/// The posting list of every word group (see [`Index::group_postings`]), from the term
/// posting lists. Only groups whose terms have at least [`GROUP_MIN_SHARE`] of the phrasings'
/// postings between them get one (the others' rows are empty, and the matcher walks their
/// terms' lists): rare words gain nothing, and building every group would make loading
/// several times slower.
fn group_postings(idx: &Index, groups: &Postings<u32>) -> Postings {
    let n_groups = groups.offs.len().saturating_sub(1);
    let mut out = Postings::default();
    let mut acc = vec![0f32; idx.phrasing_entry.len()];
    let mut touched: Vec<u32> = Vec::new();
    let min = (idx.phrasing_entry.len() / GROUP_MIN_SHARE).max(GROUP_MIN_POSTINGS);
    for g in 0..n_groups {
        let postings: usize = groups
            .row(g)
            .iter()
            .map(|t| idx.by_phrasing.row(*t as usize).len())
            .sum();
        if postings < min {
            out.push_row([]);
            continue;
        }
        for t in groups.row(g) {
            let t = *t as usize;
            let kind_idf = idx
                .vocab
                .get(t)
                .and_then(|h| Kind::of(*h))
                .map_or(0.0, Kind::weight)
                * idx.idf.get(t).copied().unwrap_or(0.0);
            for (p, v) in idx.by_phrasing.row(t) {
                if let Some(slot) = acc.get_mut(*p as usize) {
                    if *slot == 0.0 {
                        touched.push(*p);
                    }
                    *slot += kind_idf * v;
                }
            }
        }
        if touched.len() > acc.len() / 16 {
            // Many phrasings: one pass over all of them beats sorting the touched ones.
            touched.clear();
            out.push_row(
                acc.iter_mut()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(p, v)| (p as u32, std::mem::take(v))),
            );
        } else {
            touched.sort_unstable();
            out.push_row(touched.drain(..).map(|p| {
                let v = acc.get_mut(p as usize).map_or(0.0, std::mem::take);
                (p, v)
            }));
        }
    }
    out
}

fn normalise_vec(v: &mut [(u32, f32)]) {
    let norm = v.iter().map(|x| x.1 * x.1).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            x.1 /= norm;
        }
    }
}

fn version_of(hash: u64) -> String {
    format!("{hash:016x}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const KB: &str = r#"{"id": "refund", "questions": ["How do I get a refund?", "refund please"], "answer": "Within 7 days.", "locale": "en"}
{"id": "refund-zh", "questions": ["怎么退款", "退款多久到账"], "answer": "7天内原路退回。", "locale": "zh", "tags": ["refund"]}
"#;

    #[test]
    fn builds_and_loads() {
        let a = build_artifact(KB).unwrap();
        let idx = Index::load(&a).unwrap();
        assert_eq!(idx.entries.len(), 2);
        assert_eq!(idx.entries[1].id, "refund-zh");
        assert_eq!(idx.entries[1].tags, vec!["refund".to_string()]);
        assert_eq!(idx.phrasing_entry, vec![0, 0, 1, 1]);
        assert_eq!(idx.version.len(), 16);
    }

    #[test]
    fn version_follows_content() {
        let a = Index::load(&build_artifact(KB).unwrap()).unwrap();
        let b = Index::load(&build_artifact(KB).unwrap()).unwrap();
        assert_eq!(a.version, b.version, "same content, same version");
        let changed = KB.replace("Within 7 days.", "Within 14 days.");
        let c = Index::load(&build_artifact(&changed).unwrap()).unwrap();
        assert_ne!(
            a.version, c.version,
            "a changed answer must change the version"
        );
    }

    #[test]
    fn reports_errors_with_line_numbers() {
        let src = r#"{"id": "a", "questions": ["Hello there"], "answer": "hi"}

{"id": "a", "questions": ["other"], "answer": "x"}
{"id": "b", "questions": ["HELLO, there!"], "answer": "y"}
{"id": "c", "questions": ["c?"], "answer": "   "}
{"id": "d", "question": ["typo"], "answer": "z"}
not json
{"id": "e", "questions": [], "answer": "z"}
{"id": "", "questions": ["q"], "answer": "z"}
{"id": "f", "questions": ["?!"], "answer": "z"}
"#;
        let errs = build_artifact(src).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9, 10], "{errs:#?}");
        assert!(errs[0]
            .message
            .contains("duplicate id `a` (first on line 1)"));
        assert!(errs[1].message.contains("also a question of `a` (line 1)"));
        assert!(errs[2].message.contains("empty answer"));
        assert!(errs[3].message.contains("unknown field"));
        assert!(errs[5].message.contains("no questions"));
        assert!(errs[7].message.contains("empty after normalisation"));
    }

    #[test]
    fn empty_source_is_an_error() {
        assert_eq!(build_artifact("\n\n").unwrap_err()[0].line, 1);
    }

    #[test]
    fn regression_ids_must_be_printable_ascii_without_spaces() {
        // Found by testing: an id holding a newline lost its `x-tidegate-faq-id` header, a
        // Chinese id went out as raw UTF-8 in it, and `kb top` printed the newline as it was.
        let src = r#"{"id": "ok-id_1.v2", "questions": ["hello there"], "answer": "hi"}
{"id": "refund\npolicy", "questions": ["refund"], "answer": "x"}
{"id": "退款-zh", "questions": ["退款"], "answer": "x"}
{"id": "two words", "questions": ["two words"], "answer": "x"}
{"id": "tab\there", "questions": ["tab"], "answer": "x"}
{"id": "del\u007f", "questions": ["del"], "answer": "x"}
"#;
        let errs = build_artifact(src).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6], "{errs:#?}");
        for e in &errs {
            assert!(
                e.message
                    .contains("only printable ASCII without spaces (`!` to `~`)"),
                "{e}"
            );
        }
        assert!(build_artifact(r#"{"id": " padded ", "questions": ["q"], "answer": "a"}"#).is_ok());
    }

    #[test]
    fn refuses_older_formats_with_a_rebuild_hint() {
        // Format 1 stored 3- to 5-gram hashes, format 2 had no word groups.
        for old in [1u8, 2] {
            let mut a = build_artifact(KB).unwrap();
            a[4] = old;
            let e = Index::load(&a).unwrap_err();
            assert!(
                e.0.contains(&format!("unsupported format {old} (expected 3)")),
                "{e}"
            );
            assert!(e.0.contains("tidegate kb build"), "{e}");
        }
    }

    #[test]
    fn word_groups_give_the_same_scores_as_their_terms() {
        // Enough phrasings for `card` to get a group list and a dense row.
        let mut src = String::new();
        for i in 0..600 {
            src.push_str(&format!(
                "{{\"id\": \"e{i}\", \"questions\": [\"my card number {i} was declined\", \"card {i} arrived late\"], \"answer\": \"a\"}}\n"
            ));
        }
        let idx = Index::load(&build_artifact(&src).unwrap()).unwrap();
        let g = idx.group_keys.binary_search(&group_key("card")).unwrap();
        assert!(!idx.group_postings.row(g).is_empty());
        let mut plain = idx.clone();
        plain.group_keys.clear();
        for q in [
            "my card was declined",
            "card card declined",
            "declined card 17",
        ] {
            let a = crate::faq::matcher::rank(&idx, q, None, 5);
            let b = crate::faq::matcher::rank(&plain, q, None, 5);
            assert_eq!(a.len(), b.len(), "{q}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.id, y.id, "{q}");
                assert!((x.score - y.score).abs() < 1e-5, "{q}: {x:?} {y:?}");
            }
        }
    }

    #[test]
    fn rejects_corrupt_artefacts() {
        let a = build_artifact(KB).unwrap();
        assert!(Index::load(&a[..a.len() - 1]).is_err());
        assert!(Index::load(b"TGKB").is_err());
        assert!(Index::load(b"").is_err());
        let mut flipped = a.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(Index::load(&flipped).is_err());
        let mut fmt = a.clone();
        fmt[4] = 9;
        assert!(Index::load(&fmt).is_err());
    }
}
