//! What a counter object does between requests (host-testable): when to wake up, whether its
//! cell may go, and, in the origin-cap object, the tier recommendation from origin QPS.
//!
//! Every request the Worker forwards takes a slot of the global origin cap, one
//! compare-and-swap in the single `origin` object, so that object sees the whole deployment's
//! origin traffic: it meters it and runs the core's [`Recommender`] once a second, as the
//! native gateway's tier watch does. The other limit objects wake up once their GCRA cell has
//! drained and delete it ([`tidegate_core::gateway::is_idle_cell`]), so idle users and
//! addresses leave no storage behind.

use tidegate_core::gateway::is_idle_cell;
use tidegate_core::store::Version;
use tidegate_core::tier::{QpsMeter, Recommendation, Recommender, TierConfig};
use tidegate_core::UnixMs;

/// The core's key of the global origin-cap cell.
pub const ORIGIN_KEY: &str = "origin";
/// Seconds of traffic the origin QPS is averaged over (as in the native gateway).
pub const QPS_WINDOW_SECS: usize = 10;
/// How often the origin object looks at its QPS while there is traffic.
pub const TICK_MS: u64 = 1_000;
/// How long after a limit cell has drained its object deletes it.
pub const SWEEP_GRACE_MS: u64 = 60_000;

/// When an object holding `key` with `value` should wake up next, after a write at `now`;
/// `None`: never (cells that are not limits keep their meaning until overwritten).
pub fn wake_after_write(key: &str, value: u64, now: UnixMs) -> Option<UnixMs> {
    if key == ORIGIN_KEY {
        return Some(UnixMs(now.0.saturating_add(TICK_MS)));
    }
    drained_wake(key, value, now)
}

/// For a limit cell: the time its cell has drained, plus the grace (never before `now`).
fn drained_wake(key: &str, value: u64, now: UnixMs) -> Option<UnixMs> {
    // A limit cell becomes idle at its theoretical arrival time (nanoseconds).
    if !is_idle_cell(key, 0, now) {
        return None;
    }
    let drained_ms = value / 1_000_000;
    Some(UnixMs(drained_ms.max(now.0).saturating_add(SWEEP_GRACE_MS)))
}

/// What an object's alarm decided for its cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// Delete the cell: it holds nothing a request would miss.
    Delete,
    /// Look again at this time.
    WakeAt(UnixMs),
    /// Nothing to do and no need to wake again.
    Idle,
}

/// What to do with `cell` of `key` when the object wakes up at `now`.
pub fn sweep(key: &str, cell: Option<(u64, Version)>, now: UnixMs) -> Sweep {
    match cell {
        Some((v, _)) if is_idle_cell(key, v, now) => Sweep::Delete,
        Some((v, _)) => drained_wake(key, v, now).map_or(Sweep::Idle, Sweep::WakeAt),
        None => Sweep::Idle,
    }
}

/// The version a cell gets when it is written while absent. Derived from the object's clock,
/// so a cell deleted by [`sweep`] and written again never repeats a version an isolate may
/// still hold in its cache (a compare-and-swap against a recycled version would succeed on a
/// cell it never saw). An object serves far fewer than 1,024 writes a millisecond.
pub fn first_version(now: UnixMs) -> Version {
    Version(now.0.saturating_mul(1024).max(1))
}

/// The origin object's meter and recommender; in memory only (an evicted object starts over,
/// as a restarted native gateway does).
#[derive(Clone, Debug)]
pub struct TierWatch {
    meter: QpsMeter,
    recommender: Recommender,
}

impl Default for TierWatch {
    fn default() -> Self {
        TierWatch {
            meter: QpsMeter::new(QPS_WINDOW_SECS),
            recommender: Recommender::default(),
        }
    }
}

/// One look at the origin QPS.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    /// The origin QPS over the window.
    pub qps: f64,
    /// A new recommendation to publish (KV flag, alert), if it changed.
    pub recommendation: Option<Recommendation>,
    /// Whether to look again in [`TICK_MS`]: while there is traffic in the window, or a
    /// raised tier still has to come down after its cooldown.
    pub again: bool,
}

impl TierWatch {
    /// Counts one request admitted to the origin at `now`.
    pub fn record(&mut self, now: UnixMs) {
        self.meter.record(now);
    }

    /// Looks at the QPS at `now`.
    pub fn tick(&mut self, now: UnixMs, cfg: &TierConfig) -> Tick {
        let qps = self.meter.rate(now);
        let recommendation = self.recommender.observe(qps, now, cfg);
        // The current second is not in the rate yet: keep looking while it may hold requests.
        let recent = self.meter.rate(UnixMs(now.0.saturating_add(TICK_MS))) > 0.0;
        Tick {
            qps,
            recommendation,
            again: qps > 0.0 || recent || self.recommender.current() != Default::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tidegate_core::tier::Tier;

    const T0: UnixMs = UnixMs(1_700_000_000_000);

    #[test]
    fn origin_object_ticks_and_limit_objects_wake_when_drained() {
        assert_eq!(
            wake_after_write(ORIGIN_KEY, 0, T0),
            Some(UnixMs(T0.0 + TICK_MS))
        );
        let tat_ns = (T0.0 + 30_000) * 1_000_000;
        assert_eq!(
            wake_after_write("user:alice", tat_ns, T0),
            Some(UnixMs(T0.0 + 30_000 + SWEEP_GRACE_MS))
        );
        // Budget, handoff and challenge cells keep their meaning: no sweep.
        assert_eq!(wake_after_write("budget:2026-12", 5, T0), None);
        assert_eq!(wake_after_write("handoff:c1", 1, T0), None);
    }

    #[test]
    fn a_drained_limit_cell_is_deleted_and_a_busy_one_waits() {
        let busy = Some(((T0.0 + 5_000) * 1_000_000, Version(3)));
        assert_eq!(
            sweep("ip:203.0.113.9", busy, T0),
            Sweep::WakeAt(UnixMs(T0.0 + 5_000 + SWEEP_GRACE_MS))
        );
        assert_eq!(
            sweep("ip:203.0.113.9", busy, UnixMs(T0.0 + 5_001)),
            Sweep::Delete
        );
        assert_eq!(sweep("ip:203.0.113.9", None, T0), Sweep::Idle);
        assert_eq!(
            sweep("budget:2026-12", Some((9, Version(1))), T0),
            Sweep::Idle
        );
    }

    #[test]
    fn regression_a_recreated_cell_never_reuses_a_version() {
        // Written at T0 (version from T0), then 500 writes, swept, written again 1 ms later.
        let old = first_version(T0).0 + 500;
        assert!(first_version(UnixMs(T0.0 + 1)).0 > old);
        assert_eq!(first_version(UnixMs(0)), Version(1));
    }

    fn cfg() -> TierConfig {
        TierConfig {
            thresholds_qps: [2.0, 50.0, 100.0],
            cooldown_secs: 5,
            ..TierConfig::default()
        }
    }

    #[test]
    fn origin_traffic_raises_then_lowers_the_recommendation() {
        let mut w = TierWatch::default();
        for i in 0..40 {
            w.record(UnixMs(T0.0 + i * 10));
        }
        let t = w.tick(UnixMs(T0.0 + 1_000), &cfg());
        assert_eq!(t.qps, 4.0);
        let r = t.recommendation.unwrap();
        assert_eq!((r.from, r.to), (Tier::Normal, Tier::Economy));
        assert!(t.again);
        // Quiet: the window empties, then the cooldown passes, then it comes down once.
        let mut down = Vec::new();
        let mut last = None;
        for s in 2..30 {
            let t = w.tick(UnixMs(T0.0 + s * 1_000), &cfg());
            down.extend(t.recommendation.map(|r| r.to));
            last = Some(t.again);
        }
        assert_eq!(down, vec![Tier::Normal]);
        assert_eq!(
            last,
            Some(false),
            "no traffic, normal tier: the object stops ticking"
        );
    }

    #[test]
    fn a_request_in_the_current_second_keeps_the_watch_going() {
        let mut w = TierWatch::default();
        w.record(UnixMs(T0.0 + 1_500));
        let t = w.tick(UnixMs(T0.0 + 1_600), &cfg());
        assert_eq!(t.qps, 0.0);
        assert!(t.again);
    }
}
