//! Ranking and the serve-or-not decision.
//!
//! A query and every phrasing are unit vectors of TF-IDF term weights (see
//! [`super::tokenize`] for the terms; document frequency counts entries, not phrasings). An
//! entry's score blends two cosines:
//! - the best cosine between the query and one of the entry's phrasings (nearest phrasing),
//!   where a phrasing whose negation differs from the query's counts only
//!   [`NEGATION_FACTOR`] of its cosine and a phrasing on the opposite side of a meaning-flip
//!   pair does not count at all;
//! - the cosine between the query and the entry's centroid (the normalised sum of its
//!   phrasings), which rewards entries whose phrasings agree with each other.
//!
//! Query terms the knowledge base has never seen still count in the query's norm, so a query
//! that is mostly about something else scores low even if it shares a word or two.
//!
//! The decision ([`decide`]) serves the best entry only when all hold:
//! - its score is at least `min_score`;
//! - it leads the runner-up by at least `min_margin`;
//! - the query does not take the opposite side of a meaning-flip pair from the entry as a
//!   whole (the entry says only "disable", the query only "enable": no answer, however high
//!   the score).

use super::index::{tf_weight, EntryData, Index};
use super::normalize::normalize;
use super::tokenize::{markers, terms, Kind, Markers};
use super::{FaqConfig, Hit};

/// Share of the nearest-phrasing cosine in an entry's score (the rest is the centroid).
pub const NEAREST_SHARE: f32 = 0.5;
/// Factor on the cosine of a phrasing whose negation differs from the query's.
pub const NEGATION_FACTOR: f32 = 0.85;

/// One ranked entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<'a> {
    /// Entry id.
    pub id: &'a str,
    /// Answer text.
    pub answer: &'a str,
    /// Score in `0.0..=1.0` (higher is closer).
    pub score: f32,
    /// The query takes the opposite side of a meaning-flip pair from this entry: never served.
    pub conflict: bool,
}

fn locale_ok(entry: &EntryData, query: Option<&str>) -> bool {
    let Some(q) = query else { return true };
    if entry.locale.is_empty() {
        return true;
    }
    let primary = |s: &str| -> String {
        s.split(['-', '_'])
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    primary(&entry.locale) == primary(q)
}

/// The `k` best entries for `query` (restricted to `locale` when given), best first.
pub(crate) fn rank<'a>(
    idx: &'a Index,
    query: &str,
    locale: Option<&str>,
    k: usize,
) -> Vec<Candidate<'a>> {
    let norm = normalize(query);
    if norm.is_empty() || idx.entries.is_empty() || k == 0 {
        return Vec::new();
    }
    let q_markers = markers(&norm);
    let mut hashes: Vec<u64> = Vec::new();
    terms(&norm, &mut hashes);
    hashes.sort_unstable();

    // Query vector: known terms with their index, and the norm over all terms.
    let mut known: Vec<(u32, f32)> = Vec::with_capacity(hashes.len());
    let mut norm_sq = 0.0f32;
    let mut i = 0;
    while i < hashes.len() {
        let h = hashes[i];
        let mut j = i + 1;
        while j < hashes.len() && hashes[j] == h {
            j += 1;
        }
        let count = (j - i) as u32;
        let kind_w = Kind::of(h).map_or(0.0, Kind::weight);
        match idx.vocab.get(&h) {
            Some(t) => {
                let w = kind_w * tf_weight(count) * idx.idf[*t as usize];
                norm_sq += w * w;
                known.push((*t, w));
            }
            None => {
                let w = kind_w * tf_weight(count) * idx.idf_unknown;
                norm_sq += w * w;
            }
        }
        i = j;
    }
    if known.is_empty() || norm_sq <= 0.0 {
        return Vec::new();
    }
    let q_norm = norm_sq.sqrt();

    // TODO(#4): common character n-grams touch most phrasings of a large knowledge base
    // (~226 us per query at 1,000 entries / 7,000 phrasings against a 50 us target): prune
    // low-idf postings or score phrasings only for entries the rarer terms reach.
    let mut by_phrasing = vec![0.0f32; idx.phrasing_entry.len()];
    let mut by_entry = vec![0.0f32; idx.entries.len()];
    for (t, w) in &known {
        let w = w / q_norm;
        let (cols, vals) = idx.by_phrasing.row(*t as usize);
        for (c, v) in cols.iter().zip(vals) {
            if let Some(acc) = by_phrasing.get_mut(*c as usize) {
                *acc += w * v;
            }
        }
        let (cols, vals) = idx.by_entry.row(*t as usize);
        for (c, v) in cols.iter().zip(vals) {
            if let Some(acc) = by_entry.get_mut(*c as usize) {
                *acc += w * v;
            }
        }
    }

    let mut scored: Vec<Candidate<'a>> = Vec::new();
    for (e, entry) in idx.entries.iter().enumerate() {
        let centroid = by_entry.get(e).copied().unwrap_or(0.0);
        if centroid <= 0.0 || !locale_ok(entry, locale) {
            continue;
        }
        let (a, b) = (entry.phrasings.0 as usize, entry.phrasings.1 as usize);
        let mut nearest = 0.0f32;
        for (p, cos) in by_phrasing.get(a..b).unwrap_or(&[]).iter().enumerate() {
            let m: &Markers = match idx.phrasing_markers.get(a + p) {
                Some(m) => m,
                None => continue,
            };
            if q_markers.flip_conflict(m) {
                continue;
            }
            let s = if m.negated == q_markers.negated {
                *cos
            } else {
                cos * NEGATION_FACTOR
            };
            nearest = nearest.max(s);
        }
        let score = (NEAREST_SHARE * nearest + (1.0 - NEAREST_SHARE) * centroid).clamp(0.0, 1.0);
        scored.push(Candidate {
            id: &entry.id,
            answer: &entry.answer,
            score,
            conflict: q_markers.flip_conflict(&entry.markers),
        });
    }
    let by_score = |x: &Candidate<'_>, y: &Candidate<'_>| y.score.total_cmp(&x.score);
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, by_score);
        scored.truncate(k);
    }
    scored.sort_by(by_score);
    scored
}

/// Serves the best candidate of `ranked` (best first) if the rule in the module
/// documentation allows it.
pub(crate) fn decide<'a>(ranked: &[Candidate<'a>], cfg: &FaqConfig) -> Option<Hit<'a>> {
    if !cfg.enabled {
        return None;
    }
    let best = ranked.first()?;
    let runner_up = ranked.get(1).map_or(0.0, |c| c.score);
    let serve =
        !best.conflict && best.score >= cfg.min_score && best.score - runner_up >= cfg.min_margin;
    serve.then_some(Hit {
        id: best.id,
        answer: best.answer,
        score: best.score,
    })
}
