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
//! Cost: one pass over the posting lists of the query's known terms gives every phrasing
//! cosine; an entry's centroid cosine is the sum of its phrasing cosines times a length stored
//! at load, so centroids need no posting lists; the `k` best entries are kept in a small sorted
//! array while entries are scored.
//!
//! The decision ([`decide`]) serves the best entry only when all hold:
//! - its score is at least `min_score`;
//! - it leads the runner-up (the better of the next two the query does not conflict with) by
//!   at least `min_margin`, scaled up for an entry with few phrasings
//!   (`FaqConfig::margin_for`);
//! - the query does not take the opposite side of a meaning-flip pair from the entry as a
//!   whole (the entry says only "disable", the query only "enable": no answer, however high
//!   the score);
//! - the query holds no negation, or some phrasing of the entry does ([`Candidate::unnegated`]).
//!
//! One exception to the score and margin: a query whose terms are exactly those of one of the
//! entry's phrasings ([`EXACT_COSINE`]: the operator's own question, as a quick-reply button
//! sends it) is served unless it is in conflict. Building refuses a phrasing shared by two
//! entries, so an exact match names one entry; without this, an entry of one or two phrasings
//! could never be served, even for its own question, since its margin is scaled up.

use super::index::{tf_weight, EntryData, Index};
use super::normalize::{for_markers, normalize};
use super::tokenize::{group_key, markers, terms, words, Kind};
use super::{FaqConfig, Hit};

/// Share of the nearest-phrasing cosine in an entry's score (the rest is the centroid).
pub const NEAREST_SHARE: f32 = 0.5;
/// Factor on the cosine of a phrasing whose negation differs from the query's.
pub const NEGATION_FACTOR: f32 = 0.85;
/// Cosine with one phrasing from which a query counts as that phrasing itself (the same
/// terms; the rest is rounding).
pub const EXACT_COSINE: f32 = 0.9999;

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
    /// Number of phrasings of the entry (the evidence behind its score).
    pub phrasings: u32,
    /// The query has exactly the terms of one of the entry's phrasings ([`EXACT_COSINE`]).
    pub exact: bool,
    /// The query holds a negation and none of the entry's phrasings does ("I don't want to
    /// deactivate it", `别转人工`): the entry answers a question the query may be refusing.
    /// Ranked as usual, never served.
    pub unnegated: bool,
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
    let q_markers = markers(&for_markers(query, &norm));
    let mut hashes: Vec<u64> = Vec::with_capacity(4 * norm.len());
    terms(&norm, &mut hashes);
    hashes.sort_unstable();

    // Query vector: known terms with their index, weight and count (ascending: the vocabulary
    // is sorted by hash), and the norm over all terms.
    let mut known: Vec<(u32, f32, u32)> = Vec::with_capacity(hashes.len());
    let mut norm_sq = 0.0f32;
    for run in hashes.chunk_by(|a, b| a == b) {
        let Some(&h) = run.first() else { continue };
        let kind_w = Kind::of(h).map_or(0.0, Kind::weight);
        let tf = tf_weight(run.len() as u32);
        match idx.vocab.binary_search(&h) {
            Ok(t) => {
                let w = kind_w * tf * idx.idf.get(t).copied().unwrap_or(0.0);
                norm_sq += w * w;
                known.push((t as u32, w, run.len() as u32));
            }
            Err(_) => {
                let w = kind_w * tf * idx.idf_unknown;
                norm_sq += w * w;
            }
        }
    }
    if known.is_empty() || norm_sq <= 0.0 {
        return Vec::new();
    }
    let q_scale = 1.0 / norm_sq.sqrt();

    // Cosine with every phrasing, term at a time. The centroid cosines follow from these (see
    // `EntryData::centroid_scale`), so this is the only pass over posting lists.
    // TODO(#4): a lookup is ~30 us CPU at 1,000 entries / 7,000 phrasings (target 50 us wall):
    // this pass (~18,000 postings for an 11-word question) and the per-entry pass below, which
    // visits every phrasing because `i` and `my` reach most of them. Skipping entries that
    // cannot reach `min_score - min_margin` (a max-score bound per entry) is the next step.
    let mut by_phrasing = vec![0.0f32; idx.phrasing_entry.len()];
    // A word whose terms (stem and character n-grams) each occur once in the query adds its
    // group's precomputed posting list instead of one list per term (`Index::group_postings`):
    // the same sums in a third of the work for common words. Its terms are then marked done
    // (count 0).
    for word in words(&norm) {
        let Ok(g) = idx.group_keys.binary_search(&group_key(word)) else {
            continue;
        };
        let members = idx.group_terms.row(g);
        if idx.group_postings.row(g).is_empty() {
            // A rare word: no group list was built (see `index::group_postings`).
            continue;
        }
        let once = |t: &u32| {
            let i = known.binary_search_by_key(t, |k| k.0);
            i.ok().and_then(|i| known.get(i)).is_some_and(|k| k.2 == 1)
        };
        if !members.iter().all(once) {
            continue;
        }
        for t in members {
            if let Ok(i) = known.binary_search_by_key(t, |k| k.0) {
                if let Some(k) = known.get_mut(i) {
                    k.2 = 0;
                }
            }
        }
        idx.group_postings.add_row(g, q_scale, &mut by_phrasing);
    }
    for (t, w, _) in known.iter().filter(|k| k.2 != 0) {
        idx.by_phrasing
            .add_row(*t as usize, w * q_scale, &mut by_phrasing);
    }

    // The `k` best (score, entry, exact), best first; on equal scores the earlier entry stays
    // ahead.
    let mut top: Vec<(f32, usize, bool)> = Vec::with_capacity(k + 1);
    for (e, entry) in idx.entries.iter().enumerate() {
        let (a, b) = (entry.phrasings.0 as usize, entry.phrasings.1 as usize);
        let cosines = by_phrasing.get(a..b).unwrap_or(&[]);
        let markers = idx.phrasing_markers.get(a..b).unwrap_or(&[]);
        let mut sum = 0.0f32;
        let mut nearest = 0.0f32;
        for (cos, m) in cosines.iter().zip(markers) {
            sum += cos;
            if *cos <= nearest || q_markers.flip_conflict(m) {
                continue;
            }
            let s = if m.negated == q_markers.negated {
                *cos
            } else {
                cos * NEGATION_FACTOR
            };
            nearest = nearest.max(s);
        }
        let centroid = sum * entry.centroid_scale;
        if centroid <= 0.0 {
            continue;
        }
        let score = (NEAREST_SHARE * nearest + (1.0 - NEAREST_SHARE) * centroid).clamp(0.0, 1.0);
        if top.len() == k && top.last().is_some_and(|(s, _, _)| score <= *s) {
            continue;
        }
        if !locale_ok(entry, locale) {
            continue;
        }
        let at = top.partition_point(|(s, _, _)| *s >= score);
        top.insert(at, (score, e, nearest >= EXACT_COSINE));
        top.truncate(k);
    }
    top.iter()
        .filter_map(|(score, e, exact)| {
            let entry = idx.entries.get(*e)?;
            Some(Candidate {
                id: &entry.id,
                answer: &entry.answer,
                score: *score,
                conflict: q_markers.flip_conflict(&entry.markers),
                phrasings: entry.phrasings.1.saturating_sub(entry.phrasings.0),
                exact: *exact,
                unnegated: q_markers.negated && !entry.markers.negated,
            })
        })
        .collect()
}

/// Serves the best candidate of `ranked` (best first) if the rule in the module
/// documentation allows it.
pub(crate) fn decide<'a>(ranked: &[Candidate<'a>], cfg: &FaqConfig) -> Option<Hit<'a>> {
    if !cfg.enabled {
        return None;
    }
    let best = ranked.first()?;
    // The runner-up is the better of the next two that the query does not conflict with: an
    // entry on the other side of a flip pair is never served for this query, so being
    // lexically close to it is no doubt about the answer ("I opened the book" is close to
    // "I haven't opened the book"). If both conflict, the second one's score stands in as a
    // bound for the rest. Only the first three candidates count, so that a ranking of three
    // (lookup) and of five (evaluation) decide alike.
    let next = ranked.get(1..3).unwrap_or(ranked.get(1..).unwrap_or(&[]));
    let runner_up = next
        .iter()
        .find(|c| !c.conflict)
        .or(next.last())
        .map_or(0.0, |c| c.score);
    let serve = !best.conflict
        && !best.unnegated
        && (best.exact
            || best.score >= cfg.min_score
                && best.score - runner_up >= cfg.margin_for(best.phrasings));
    serve.then_some(Hit {
        id: best.id,
        answer: best.answer,
        score: best.score,
    })
}
