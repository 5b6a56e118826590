//! The tier recommendation from origin QPS, computed once for all of Envoy's workers.
//!
//! Each worker VM counts the requests it forwards to the origin, per second, in memory
//! ([`Local`]): no host call on the request path. On its root tick a worker adds every
//! finished second to a ring of [`RING`] shared cells `tg:q:<i>` holding (second, count). Once
//! per second, [`SETTLE_MS`] into it (every worker's 50 ms tick has flushed the second before
//! by then), the worker that wins the compare-and-swap on the state cell `tg:tw` averages the
//! last [`WINDOW_SECS`] whole seconds, as the native gateway's meter does, and feeds the
//! core's [`Recommender`], whose state lives in that cell. One recommender for all workers:
//! a change is reported by exactly one of them, once.
//!
//! Every cell is created when a VM starts ([`init`]), so every later write is a plain
//! compare-and-swap (see [`crate::shared`] for the first-write race).

use std::cell::RefCell;

use tidegate_core::tier::{Recommendation, Recommender, Tier, TierConfig};
use tidegate_core::UnixMs;

use crate::shared::SharedData;

/// Cells in the per-second ring: the window plus room for a late flush.
pub const RING: u64 = 16;
/// Seconds averaged (the native gateway's `QpsMeter::new(10)`).
pub const WINDOW_SECS: u64 = 10;
/// How far into a second the previous one is evaluated.
pub const SETTLE_MS: u64 = 200;
/// The shared recommender's state.
pub const STATE_KEY: &str = "tg:tw";
/// Attempts of a compare-and-swap on a ring cell before the count is dropped.
const ATTEMPTS: usize = 64;

fn ring_key(sec: u64) -> String {
    format!("tg:q:{}", sec % RING)
}

fn u64_at(v: &[u8], at: usize) -> u64 {
    v.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The shared state: the last second evaluated and the recommender.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    evaluated: u64,
    current: Tier,
    low_since: Option<UnixMs>,
}

impl State {
    fn decode(v: &[u8]) -> State {
        let low = u64_at(v, 9);
        State {
            evaluated: u64_at(v, 0),
            current: v
                .get(8)
                .and_then(|l| Tier::from_level(*l))
                .unwrap_or_default(),
            low_since: (low != 0).then_some(UnixMs(low)),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(17);
        v.extend_from_slice(&self.evaluated.to_le_bytes());
        v.push(self.current.level());
        v.extend_from_slice(&self.low_since.map_or(0, |t| t.0).to_le_bytes());
        v
    }
}

/// Creates the ring and state cells when a VM starts (before any request).
pub fn init<D: SharedData + ?Sized>(d: &D) -> Result<(), String> {
    if d.get(STATE_KEY)?.is_none() {
        d.set(STATE_KEY, &State::default().encode(), None)?;
    }
    for i in 0..RING {
        let k = ring_key(i);
        if d.get(&k)?.is_none() {
            d.set(&k, &[0u8; 16], None)?;
        }
    }
    Ok(())
}

/// One VM's origin requests not yet added to the ring: (second, count), oldest first.
#[derive(Debug, Default)]
pub struct Local(RefCell<Vec<(u64, u64)>>);

impl Local {
    /// Counts one request forwarded to the origin at `now`.
    pub fn record(&self, now: UnixMs) {
        let sec = now.as_secs();
        let mut v = self.0.borrow_mut();
        match v.last_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => v.push((sec, 1)),
        }
    }

    /// Adds every second before `now`'s to the ring. A count that cannot be added (the
    /// store fails, or the cell stays contended) is dropped: the meter reads low, never high.
    pub fn flush<D: SharedData + ?Sized>(&self, d: &D, now: UnixMs) -> Result<(), String> {
        let sec = now.as_secs();
        let done: Vec<(u64, u64)> = {
            let mut v = self.0.borrow_mut();
            let split = v.iter().take_while(|(s, _)| *s < sec).count();
            v.drain(..split).collect()
        };
        let mut result = Ok(());
        for (s, n) in done {
            if let Err(e) = add(d, s, n) {
                result = Err(e);
            }
        }
        result
    }
}

/// Adds `n` requests to second `sec` of the ring.
fn add<D: SharedData + ?Sized>(d: &D, sec: u64, n: u64) -> Result<(), String> {
    let key = ring_key(sec);
    for _ in 0..ATTEMPTS {
        let (v, cas) = d.get(&key)?.unwrap_or_default();
        let (stored, count) = (u64_at(&v, 0), u64_at(&v, 8));
        let next = match stored {
            s if s == sec => count.saturating_add(n),
            s if s > sec => return Ok(()), // the cell moved on: too late to count
            _ => n,
        };
        let mut value = sec.to_le_bytes().to_vec();
        value.extend_from_slice(&next.to_le_bytes());
        if d.set(&key, &value, Some(cas))? {
            return Ok(());
        }
    }
    Err(format!("`{key}` stayed contended"))
}

/// Origin requests per second over the [`WINDOW_SECS`] whole seconds before `sec`.
pub fn rate<D: SharedData + ?Sized>(d: &D, sec: u64) -> f64 {
    let total: u64 = (1..=WINDOW_SECS)
        .filter_map(|back| sec.checked_sub(back))
        .filter_map(|s| {
            let (v, _) = d.get(&ring_key(s)).ok().flatten()?;
            (u64_at(&v, 0) == s).then(|| u64_at(&v, 8))
        })
        .sum();
    total as f64 / WINDOW_SECS as f64
}

/// A second's evaluation, made by the one worker that won it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Origin requests per second.
    pub qps: f64,
    /// The recommendation, when it changed.
    pub change: Option<Recommendation>,
}

/// Evaluates the current second if it is due and this caller wins it; `None` otherwise (not
/// yet [`SETTLE_MS`] into the second, evaluated already, or another worker won the race).
pub fn evaluate<D: SharedData + ?Sized>(
    d: &D,
    now: UnixMs,
    cfg: &TierConfig,
) -> Result<Option<Reading>, String> {
    let sec = now.as_secs();
    if now.0 % 1000 < SETTLE_MS {
        return Ok(None);
    }
    let Some((v, cas)) = d.get(STATE_KEY)? else {
        return Err(format!("`{STATE_KEY}` was not created at VM start"));
    };
    let state = State::decode(&v);
    if state.evaluated >= sec {
        return Ok(None);
    }
    let qps = rate(d, sec);
    let mut r = Recommender::resume(state.current, state.low_since);
    let change = r.observe(qps, now, cfg);
    let next = State {
        evaluated: sec,
        current: r.current(),
        low_since: r.low_since(),
    };
    if d.set(STATE_KEY, &next.encode(), Some(cas))? {
        Ok(Some(Reading { qps, change }))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    type Map = crate::testing::EnvoyLike;

    fn cfg() -> TierConfig {
        TierConfig {
            thresholds_qps: [1.0, 400.0, 800.0],
            cooldown_secs: 30,
            ..TierConfig::default()
        }
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn two_workers_sum_into_one_rate_and_one_of_them_reports_the_change() {
        let d = Map::default();
        init(&d).unwrap();
        let (a, b) = (Local::default(), Local::default());
        // 30 origin requests in one second, split between two workers: 3 req/s over 10 s.
        for i in 0..30 {
            let w = if i % 3 == 0 { &a } else { &b };
            w.record(UnixMs(T0 + i * 20));
        }
        let next = UnixMs(T0 + 1000 + SETTLE_MS);
        assert_eq!(
            evaluate(&d, UnixMs(T0 + 1050), &cfg()).unwrap(),
            None,
            "too early"
        );
        a.flush(&d, next).unwrap();
        b.flush(&d, next).unwrap();
        assert!((rate(&d, T0 / 1000 + 1) - 3.0).abs() < 1e-9);
        let first = evaluate(&d, next, &cfg()).unwrap().unwrap();
        let rec = first.change.unwrap();
        assert_eq!((rec.from, rec.to), (Tier::Normal, Tier::Economy));
        assert_eq!(
            evaluate(&d, UnixMs(next.0 + 50), &cfg()).unwrap(),
            None,
            "the second worker's tick in the same second finds it evaluated"
        );
        // Later seconds, traffic still in the window: no repeat.
        let later = evaluate(&d, UnixMs(next.0 + 1000), &cfg())
            .unwrap()
            .unwrap();
        assert_eq!(later.change, None);
    }

    #[test]
    fn the_recommendation_comes_down_after_the_cooldown_only() {
        let d = Map::default();
        init(&d).unwrap();
        let w = Local::default();
        for i in 0..30 {
            w.record(UnixMs(T0 + i));
        }
        let at = |s: u64| UnixMs(T0 + s * 1000 + SETTLE_MS);
        w.flush(&d, at(1)).unwrap();
        assert!(evaluate(&d, at(1), &cfg())
            .unwrap()
            .unwrap()
            .change
            .is_some());
        // The burst leaves the window after 10 s; the cooldown runs from then.
        for s in 2..=10 {
            assert_eq!(evaluate(&d, at(s), &cfg()).unwrap().unwrap().change, None);
        }
        let quiet = evaluate(&d, at(11), &cfg()).unwrap().unwrap();
        assert_eq!((quiet.qps, quiet.change), (0.0, None));
        for s in 12..41 {
            assert_eq!(
                evaluate(&d, at(s), &cfg()).unwrap().unwrap().change,
                None,
                "{s}"
            );
        }
        let down = evaluate(&d, at(41), &cfg())
            .unwrap()
            .unwrap()
            .change
            .unwrap();
        assert_eq!(down.to, Tier::Normal);
    }

    #[test]
    fn a_stale_ring_cell_is_overwritten_and_a_late_count_dropped() {
        let d = Map::default();
        init(&d).unwrap();
        add(&d, 100, 5).unwrap();
        add(&d, 100 + RING, 2).unwrap();
        assert_eq!(rate(&d, 101 + RING), 0.2, "only the newer second counts");
        add(&d, 100, 7).unwrap();
        assert_eq!(
            rate(&d, 101 + RING),
            0.2,
            "a count for a second gone by is dropped"
        );
    }

    #[test]
    fn the_state_survives_encoding() {
        let s = State {
            evaluated: 12,
            current: Tier::CacheFirst,
            low_since: Some(UnixMs(99)),
        };
        assert_eq!(State::decode(&s.encode()), s);
        assert_eq!(State::decode(b"junk"), State::default());
    }
}
