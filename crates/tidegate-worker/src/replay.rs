//! Running the core's synchronous stages over counters that live in Durable Objects.
//!
//! The core reads and writes counters through [`CounterStore`], a synchronous interface; a
//! Worker reaches its Durable Objects only asynchronously. [`run`] bridges the two without
//! moving any policy out of the core, by deterministic replay:
//!
//! 1. the stage runs against a [`ReplayStore`] that serves the cells fetched so far and records
//!    the keys it lacks (a lacking key reads as unavailable, and the stage's result is thrown
//!    away);
//! 2. the lacking cells are fetched from their objects, all at once, and the stage runs again;
//! 3. once a run needs nothing more, its writes are committed in the order the stage first
//!    wrote them, each as one compare-and-swap in the cell's own object;
//! 4. when a compare-and-swap loses (another request changed the cell), the stage runs again
//!    with the fresh cell. The cells committed before it are replayed from the state they had
//!    before this request, so the stage (which is deterministic: `now` is fixed) computes the
//!    same values for them and they are not charged twice.
//!
//! Every cell is therefore updated with its own atomic step, exactly as in the native gateway;
//! a cell that cannot be fetched or written reads as [`StoreError::Unavailable`], which the
//! core maps to the configured fail-open or fail-closed decision.

use std::cell::RefCell;
use std::collections::HashMap;

use futures_util::future::join_all;
use tidegate_core::store::{CounterStore, StoreError, Version};
use tidegate_core::UnixMs;

/// Most runs of a stage before it gives up with [`StoreError::Contended`].
pub const MAX_RUNS: usize = tidegate_core::store::MAX_CAS_ATTEMPTS;

/// A cell as stored in its object: value and version, or absent.
pub type Cell = Option<(u64, Version)>;

/// What a remote compare-and-swap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasResult {
    /// Written; the cell's new version.
    Written(Version),
    /// Another writer got there first; the cell as it is now.
    Lost(Cell),
}

/// Where the cells live (Durable Objects in the Worker, memory in tests).
#[allow(async_fn_in_trait)]
pub trait Remote {
    /// Held by a stage from the moment it first needs a cell until it returns.
    type Guard;
    /// Waits until no other stage of this process holds `key`, then holds it. Requests that
    /// race for one cell then take turns instead of all losing but one compare-and-swap per
    /// round (which costs a number of object calls quadratic in the racers). A stage takes
    /// the turns of all its cells at once, in key order, so two stages never wait for each
    /// other.
    async fn hold(&self, key: &str) -> Self::Guard;
    /// The time now (the Worker's clock advances only across I/O).
    fn now(&self) -> UnixMs;
    /// The cells for `keys`, in order (fetched concurrently). May answer from a cache of what
    /// this process last saw: writes are checked by their compare-and-swap, and cells that
    /// were only read are checked with [`Remote::fresh`] before the stage's result is used.
    async fn load(&self, keys: &[String]) -> Vec<Result<Cell, StoreError>>;
    /// The cells for `keys` as the objects hold them now (never from a cache).
    async fn fresh(&self, keys: &[String]) -> Vec<Result<Cell, StoreError>>;
    /// Writes `value` to `key` if its version is still `expected` (`None`: only if absent).
    async fn cas(
        &self,
        key: &str,
        expected: Option<Version>,
        value: u64,
    ) -> Result<CasResult, StoreError>;
}

/// What [`run`] knows about one cell.
#[derive(Clone, Debug)]
struct Known {
    /// The cell before this request touched it (what every run starts from).
    before: Result<Cell, StoreError>,
    /// What this request has committed to it so far: value and version.
    committed: Option<(u64, Version)>,
}

/// A [`CounterStore`] for one run of a stage: fetched cells in, lacking keys and writes out.
#[derive(Debug, Default)]
pub struct ReplayStore {
    cells: RefCell<HashMap<String, Result<Cell, StoreError>>>,
    missing: RefCell<Vec<String>>,
    /// Keys in the order of their first write, with their latest value.
    writes: RefCell<Vec<(String, u64)>>,
}

impl ReplayStore {
    fn new(known: &HashMap<String, Known>) -> Self {
        let cells = known
            .iter()
            .map(|(k, c)| (k.clone(), c.before.clone()))
            .collect();
        ReplayStore {
            cells: RefCell::new(cells),
            ..Default::default()
        }
    }
}

impl CounterStore for ReplayStore {
    fn load(&self, key: &str) -> Result<Cell, StoreError> {
        if let Some(c) = self.cells.borrow().get(key) {
            return c.clone();
        }
        let mut missing = self.missing.borrow_mut();
        if !missing.iter().any(|k| k == key) {
            missing.push(key.to_owned());
        }
        Err(StoreError::Unavailable("not fetched yet".into()))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Version>,
        value: u64,
    ) -> Result<bool, StoreError> {
        let mut cells = self.cells.borrow_mut();
        let current = match cells.get(key) {
            Some(Ok(c)) => *c,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(StoreError::Unavailable("not fetched yet".into())),
        };
        if current.map(|(_, v)| v) != expected {
            return Ok(false);
        }
        // Local versions only have to differ from the previous one within this run.
        let next = Version(expected.map_or(1, |v| v.0.wrapping_add(1)));
        cells.insert(key.to_owned(), Ok(Some((value, next))));
        let mut writes = self.writes.borrow_mut();
        match writes.iter_mut().find(|(k, _)| k == key) {
            Some(w) => w.1 = value,
            None => writes.push((key.to_owned(), value)),
        }
        Ok(true)
    }
}

/// A store whose every operation fails with the same error.
#[derive(Debug)]
pub struct FailingStore(StoreError);

impl CounterStore for FailingStore {
    fn load(&self, _key: &str) -> Result<Cell, StoreError> {
        Err(self.0.clone())
    }

    fn compare_and_swap(
        &self,
        _key: &str,
        _expected: Option<Version>,
        _value: u64,
    ) -> Result<bool, StoreError> {
        Err(self.0.clone())
    }
}

/// Runs `stage` until it has every cell it needs and its writes are committed, and returns
/// the result of that run. `stage` gets the time to decide with and must be deterministic
/// (same cells and time in, same result out), as the core's stages are. The time is read
/// afresh for every run until this request has committed a cell, then kept, so that a replay
/// recomputes exactly what was committed; a stage that waited for its turn or for objects does
/// not decide with a time other requests have already left behind.
pub async fn run<R: Remote, T>(
    remote: &R,
    mut stage: impl FnMut(&dyn CounterStore, UnixMs) -> T,
) -> T {
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut held = Vec::new();
    let mut now = remote.now();
    for _ in 0..MAX_RUNS {
        if known.values().all(|k| k.committed.is_none()) {
            now = remote.now();
        }
        let store = ReplayStore::new(&known);
        let out = stage(&store, now);
        let missing = store.missing.take();
        if !missing.is_empty() {
            // Discovering cells happens without turns. A cell first needed after the turns
            // were taken means giving them back and taking them again in order.
            held.clear();
            let cells = remote.load(&missing).await;
            for (key, cell) in missing.into_iter().zip(cells) {
                known.insert(
                    key,
                    Known {
                        before: cell,
                        committed: None,
                    },
                );
            }
            continue;
        }
        if held.is_empty() && !known.is_empty() {
            // Every cell is known: take their turns in key order (so two stages never wait
            // for each other), then run again on the cells as they are now (the process's
            // latest view, refreshed by whoever held the turn before).
            let mut keys: Vec<String> = known.keys().cloned().collect();
            keys.sort();
            for key in &keys {
                held.push(remote.hold(key).await);
            }
            let cells = remote.load(&keys).await;
            for (key, cell) in keys.into_iter().zip(cells) {
                if let Some(k) = known.get_mut(&key) {
                    if k.committed.is_none() {
                        k.before = cell;
                    }
                }
            }
            continue;
        }
        let writes = store.writes.take();
        let read_only: Vec<String> = known
            .iter()
            .filter(|(k, c)| c.before.is_ok() && !writes.iter().any(|(w, _)| w == *k))
            .map(|(k, _)| k.clone())
            .collect();
        if !commit(remote, &mut known, writes).await {
            continue;
        }
        if read_only.is_empty() {
            return out;
        }
        // Cells the stage only read may have come from a cache: check them, and run again
        // with the current ones if any changed.
        let now_cells = remote.fresh(&read_only).await;
        let mut changed = false;
        for (key, cell) in read_only.into_iter().zip(now_cells) {
            if let Some(k) = known.get_mut(&key) {
                if k.before != cell {
                    k.before = cell;
                    changed = true;
                }
            }
        }
        if !changed {
            return out;
        }
    }
    stage(&FailingStore(StoreError::Contended), now)
}

/// Commits one run's writes in order; false when a compare-and-swap lost or failed (the cell
/// is refreshed in `known` and the stage must run again).
async fn commit<R: Remote>(
    remote: &R,
    known: &mut HashMap<String, Known>,
    writes: Vec<(String, u64)>,
) -> bool {
    let mut pending = Vec::new();
    for (key, value) in writes {
        let Some(cell) = known.get(&key) else {
            // Every written cell was loaded first; nothing to commit against otherwise.
            continue;
        };
        let expected = match (cell.committed, &cell.before) {
            (Some((v, _)), _) if v == value => continue,
            (Some((_, ver)), _) => Some(ver),
            (None, Ok(Some((v, _)))) if *v == value => continue,
            (None, Ok(before)) => before.map(|(_, ver)| ver),
            // The stage wrote a cell it could not read: the core never does that.
            (None, Err(_)) => continue,
        };
        pending.push((key, expected, value));
    }
    // The cells live in different objects: write them all at once.
    let results = join_all(
        pending
            .iter()
            .map(|(key, expected, value)| remote.cas(key, *expected, *value)),
    )
    .await;
    let mut all_written = true;
    for ((key, _, value), result) in pending.into_iter().zip(results) {
        let Some(cell) = known.get_mut(&key) else {
            continue;
        };
        match result {
            Ok(CasResult::Written(ver)) => cell.committed = Some((value, ver)),
            Ok(CasResult::Lost(now)) => {
                // TODO(#5): when another request wins a cell, the cells this one committed in
                // the same round stay charged even if the re-run no longer writes them (say,
                // the user counter when the IP now refuses): an over-count by one, never an
                // under-count. Within an isolate the per-key turns prevent such races.
                cell.before = Ok(now);
                cell.committed = None;
                all_written = false;
            }
            Err(e) => {
                cell.before = Err(e);
                cell.committed = None;
                all_written = false;
            }
        }
    }
    all_written
}

/// Blocks on a future that never waits for anything outside itself (tests and in-memory
/// remotes): polls it until ready.
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::cell::Cell as StdCell;
    use tidegate_core::ratelimit::{self, Quota};
    use tidegate_core::store::MemoryStore;

    /// Durable Objects stood in by a memory store; `hook` runs before each compare-and-swap
    /// (to let "another request" write in between), and failing keys model an unreachable
    /// object.
    type Hook<'a> = Box<dyn Fn(&MemoryStore, &str) + 'a>;

    struct Mem<'a> {
        cells: MemoryStore,
        loads: StdCell<usize>,
        cases: StdCell<usize>,
        hook: Hook<'a>,
        down: Vec<&'static str>,
        /// What `load` answers for these keys instead of the truth: a stale cache.
        stale: HashMap<String, Cell>,
    }

    impl<'a> Mem<'a> {
        fn new() -> Self {
            Mem {
                cells: MemoryStore::new(),
                loads: StdCell::new(0),
                cases: StdCell::new(0),
                hook: Box::new(|_, _| {}),
                down: Vec::new(),
                stale: HashMap::new(),
            }
        }
    }

    impl Remote for Mem<'_> {
        type Guard = ();

        async fn fresh(&self, keys: &[String]) -> Vec<Result<Cell, StoreError>> {
            keys.iter().map(|k| self.cells.load(k)).collect()
        }

        async fn hold(&self, _key: &str) {}

        fn now(&self) -> UnixMs {
            UnixMs(1_000)
        }

        async fn load(&self, keys: &[String]) -> Vec<Result<Cell, StoreError>> {
            self.loads.set(self.loads.get() + 1);
            keys.iter()
                .map(|k| {
                    if self.down.contains(&k.as_str()) {
                        Err(StoreError::Unavailable("object down".into()))
                    } else if let Some(c) = self.stale.get(k) {
                        Ok(*c)
                    } else {
                        self.cells.load(k)
                    }
                })
                .collect()
        }

        async fn cas(
            &self,
            key: &str,
            expected: Option<Version>,
            value: u64,
        ) -> Result<CasResult, StoreError> {
            self.cases.set(self.cases.get() + 1);
            (self.hook)(&self.cells, key);
            if self.cells.compare_and_swap(key, expected, value)? {
                Ok(CasResult::Written(self.cells.load(key)?.unwrap().1))
            } else {
                Ok(CasResult::Lost(self.cells.load(key)?))
            }
        }
    }

    fn two_limits(s: &dyn CounterStore, now: u64) -> Result<(u32, u32), StoreError> {
        let ip = ratelimit::check(s, "ip:a", UnixMs(now), &Quota::new("ip", 30, 60_000))?;
        if !ip.admitted() {
            return Ok((ip.remaining, 0));
        }
        let user = ratelimit::check(s, "user:u", UnixMs(now), &Quota::new("user", 3, 60_000))?;
        Ok((
            ip.remaining,
            if user.admitted() { user.remaining } else { 99 },
        ))
    }

    #[test]
    fn fetches_then_commits_each_cell_once() {
        let m = Mem::new();
        let r = block_on(run(&m, |s, now| two_limits(s, now.0)));
        assert_eq!(r, Ok((29, 2)));
        // ip fetched, then user fetched, then both read again under their turns (the Worker
        // answers that one from its isolate cache), then both written.
        assert_eq!(m.loads.get(), 3);
        assert_eq!(m.cases.get(), 2);
        let r = block_on(run(&m, |s, now| two_limits(s, now.0)));
        assert_eq!(r, Ok((28, 1)));
    }

    #[test]
    fn regression_concurrent_writer_does_not_slip_past_the_limit() {
        // Another request takes the user's last slot between our read and our write: the
        // replay must see it and refuse, and must not charge the IP twice.
        let q = Quota::new("user", 3, 60_000);
        let raced = StdCell::new(false);
        let mut m = Mem::new();
        for _ in 0..2 {
            ratelimit::check(&m.cells, "user:u", UnixMs(1_000), &q).unwrap();
        }
        m.hook = Box::new(|cells, key| {
            if key == "user:u" && !raced.replace(true) {
                ratelimit::check(cells, "user:u", UnixMs(1_000), &q).unwrap();
            }
        });
        let r = block_on(run(&m, |s, now| two_limits(s, now.0)));
        assert_eq!(
            r,
            Ok((29, 99)),
            "refused by the user limit, IP charged once"
        );
        let ip_before = m.cells.load("ip:a").unwrap().unwrap().0;
        let again = ratelimit::check(
            &m.cells,
            "ip:a",
            UnixMs(1_000),
            &Quota::new("ip", 30, 60_000),
        );
        assert_eq!(
            again.unwrap().remaining,
            28,
            "ip cell {ip_before} charged exactly once"
        );
    }

    #[test]
    fn unreachable_object_reads_as_unavailable() {
        let mut m = Mem::new();
        m.down = vec!["user:u"];
        let r = block_on(run(&m, |s, now| two_limits(s, now.0)));
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    }

    #[test]
    fn endless_contention_gives_up_as_contended() {
        // Another writer bumps the cell before every one of our writes (without using up the
        // limit), so every compare-and-swap loses.
        let mut m = Mem::new();
        m.hook = Box::new(|cells, _| {
            tidegate_core::store::update(cells, "ip:a", |v| (Some(v.unwrap_or(0) + 1), ()))
                .unwrap();
        });
        let r = block_on(run(&m, |s, now| two_limits(s, now.0)));
        assert_eq!(r, Err(StoreError::Contended));
    }

    #[test]
    fn successive_requests_admit_exactly_the_limit() {
        let m = Mem::new();
        let mut admitted = 0;
        for i in 0..10 {
            let q = Quota::new("user", 5, 60_000);
            let r = block_on(run(&m, |s, now| {
                ratelimit::check(s, "user:u", UnixMs(now.0 + i), &q)
            }))
            .unwrap();
            if r.admitted() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
    }

    fn gateway(extra: &str) -> tidegate_core::gateway::Gateway {
        let text = format!("[limits.user]\nlimit = 10\nwindow_secs = 60\n{extra}");
        tidegate_core::gateway::Gateway::new(tidegate_core::Config::from_toml(&text).unwrap())
            .unwrap()
    }

    fn admit(
        gw: &tidegate_core::gateway::Gateway,
        m: &Mem<'_>,
        conv: Option<&str>,
    ) -> Result<tidegate_core::gateway::Admitted, tidegate_core::gateway::Refusal> {
        let body = br#"{"messages":[{"role":"user","content":"hello"}]}"#;
        let facts = tidegate_core::gateway::RequestFacts {
            path: "/v1/chat/completions",
            peer: "203.0.113.9".parse().unwrap(),
            forwarded_for: None,
            user: Some("alice"),
            conversation: conv,
            body,
            now: UnixMs(1_700_000_000_000),
        };
        block_on(run(m, |s, _| gw.admit(s, &facts)))
    }

    #[test]
    fn the_core_admit_stage_runs_unchanged_over_remote_cells() {
        let gw = gateway("");
        let m = Mem::new();
        for i in 0..10 {
            let a = admit(&gw, &m, Some("c1"));
            assert!(a.is_ok(), "request {i} refused: {a:?}");
        }
        let r = admit(&gw, &m, Some("c1")).unwrap_err();
        assert_eq!(r.problem.status, 429);
        assert_eq!(r.problem.code, "user_limited");
    }

    #[test]
    fn an_unreachable_object_follows_the_configured_fail_mode() {
        let mut m = Mem::new();
        m.down = vec!["user:alice"];
        let open = gateway("");
        assert!(
            admit(&open, &m, None).is_ok(),
            "fail-open lets the request through"
        );
        let closed = gateway("[limits]\non_store_error = \"closed\"\n");
        let r = admit(&closed, &m, None).unwrap_err();
        assert_eq!(r.problem.status, 503);
        assert_eq!(r.problem.code, "store_unavailable");
    }

    #[test]
    fn regression_a_stale_cached_read_is_checked_before_it_is_trusted() {
        // Another isolate handed the conversation over; this isolate's cache still says it
        // is not. The admit stage only reads that cell, so no compare-and-swap would catch it.
        let gw = gateway("");
        let mut m = Mem::new();
        let conv = tidegate_core::handoff::scoped("u:alice", "c9");
        tidegate_core::handoff::claim(&m.cells, &conv, UnixMs(1_000)).unwrap();
        let key = "handoff:u:alice/c9";
        assert!(m.cells.load(key).unwrap().is_some(), "claim writes {key}");
        m.stale.insert(key.into(), None);
        let r = admit(&gw, &m, Some("c9")).unwrap_err();
        assert_eq!(r.problem.code, "handed_off");
    }
}
