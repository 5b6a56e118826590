//! The core's counters in proxy-wasm shared data.
//!
//! Shared data is one map per `vm_id`, shared by every worker's VM, with a compare-and-swap
//! token (`cas`) per key. Envoy ignores the token when the key does not exist yet, so two
//! workers that both see a key absent would both "create" it and one write would be lost: a
//! limit could admit one request too many. This module closes that race: the first write of a
//! key happens under a lock cell (`tg:lock`), which the filter creates when its VMs start,
//! before any request is served. Every later write is a plain compare-and-swap.
//!
//! TODO(#6): cells are never removed (removing one reopens the first-write race for writers
//! holding its old token), so memory grows with distinct clients until Envoy restarts.

use tidegate_core::store::{CounterStore, StoreError, Version};

/// Shared data as the filter sees it: proxy-wasm's `get_shared_data` / `set_shared_data`.
pub trait SharedData {
    /// The value and its `cas` token, or `None` when the key is absent.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, String>;
    /// Writes `value`; with `cas`, only if the key still has that token (`Ok(false)` when it
    /// does not). Without `cas`, or when the key is absent, the write always happens.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String>;
}

/// Key of the lock cell that serialises first writes.
pub const LOCK_KEY: &str = "tg:lock";

/// How long a lock holder may keep the lock before others may break it (ms). A holder keeps
/// it for one read and one write; a VM that died holding it must not stop every worker.
pub const LOCK_LEASE_MS: u64 = 50;

/// How many times a first write tries to take the lock.
pub const LOCK_ATTEMPTS: usize = 20_000;

/// Prefix of counter cells.
pub const COUNTER_PREFIX: &str = "tg:c:";

/// Creates the lock cell if it does not exist. The filter calls this when a VM starts (Envoy
/// starts the main-thread VM before the workers'), so it exists before any request.
pub fn init_lock<D: SharedData + ?Sized>(d: &D) -> Result<(), String> {
    if d.get(LOCK_KEY)?.is_none() {
        d.set(LOCK_KEY, &0u64.to_le_bytes(), None)?;
    }
    Ok(())
}

/// The core's [`CounterStore`] over shared data. Built per request: it carries the time (for
/// the lock lease) and a tag that tells this holder's lock value apart from others'.
#[derive(Debug)]
pub struct SharedStore<'a, D: ?Sized> {
    data: &'a D,
    now_ms: u64,
    tag: u16,
}

impl<'a, D: SharedData + ?Sized> SharedStore<'a, D> {
    /// A store over `data` at `now_ms`; `tag` should differ between VMs (any value works, a
    /// collision only weakens lock-breaking after a crash).
    pub fn new(data: &'a D, now_ms: u64, tag: u16) -> Self {
        SharedStore { data, now_ms, tag }
    }

    fn lock_value(&self) -> u64 {
        (self.now_ms.saturating_add(LOCK_LEASE_MS) << 16) | u64::from(self.tag)
    }

    fn acquire(&self) -> Result<u64, StoreError> {
        let mine = self.lock_value();
        for _ in 0..LOCK_ATTEMPTS {
            match self.data.get(LOCK_KEY).map_err(StoreError::Unavailable)? {
                None => {
                    // Not created at VM start (should not happen): create it now.
                    init_lock(self.data).map_err(StoreError::Unavailable)?;
                }
                Some((v, cas)) => {
                    let held = decode(&v).unwrap_or(0);
                    let expired = (held >> 16) < self.now_ms;
                    if (held == 0 || expired)
                        && self
                            .data
                            .set(LOCK_KEY, &mine.to_le_bytes(), Some(cas))
                            .map_err(StoreError::Unavailable)?
                    {
                        return Ok(mine);
                    }
                }
            }
        }
        Err(StoreError::Contended)
    }

    fn release(&self, mine: u64) {
        for _ in 0..8 {
            match self.data.get(LOCK_KEY) {
                Ok(Some((v, cas))) if decode(&v) == Some(mine) => {
                    if let Ok(true) = self.data.set(LOCK_KEY, &0u64.to_le_bytes(), Some(cas)) {
                        return;
                    }
                }
                // Someone broke an expired lease, or the cell is gone: nothing to release.
                _ => return,
            }
        }
    }
}

fn decode(v: &[u8]) -> Option<u64> {
    let b: [u8; 8] = v.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

impl<D: SharedData + ?Sized> CounterStore for SharedStore<'_, D> {
    fn load(&self, key: &str) -> Result<Option<(u64, Version)>, StoreError> {
        let k = format!("{COUNTER_PREFIX}{key}");
        match self.data.get(&k).map_err(StoreError::Unavailable)? {
            None => Ok(None),
            Some((v, cas)) => match decode(&v) {
                Some(n) => Ok(Some((n, Version(u64::from(cas))))),
                None => Err(StoreError::Unavailable(format!("cell `{key}` is corrupt"))),
            },
        }
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Version>,
        value: u64,
    ) -> Result<bool, StoreError> {
        let k = format!("{COUNTER_PREFIX}{key}");
        let bytes = value.to_le_bytes();
        match expected {
            Some(Version(v)) => {
                // A zero token would make the write unconditional.
                let Some(cas) = u32::try_from(v).ok().filter(|c| *c != 0) else {
                    return Ok(false);
                };
                self.data
                    .set(&k, &bytes, Some(cas))
                    .map_err(StoreError::Unavailable)
            }
            None => {
                let mine = self.acquire()?;
                let result = match self.data.get(&k) {
                    Ok(Some(_)) => Ok(false),
                    Ok(None) => self
                        .data
                        .set(&k, &bytes, None)
                        .map_err(StoreError::Unavailable),
                    Err(e) => Err(StoreError::Unavailable(e)),
                };
                self.release(mine);
                result
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tidegate_core::ratelimit::{self, Quota};
    use tidegate_core::UnixMs;

    use crate::testing::EnvoyLike;

    #[test]
    fn first_write_is_insert_if_absent() {
        let d = EnvoyLike::default();
        init_lock(&d).unwrap();
        let s = SharedStore::new(&d, 1_000, 1);
        assert!(s.compare_and_swap("k", None, 1).unwrap());
        assert!(
            !s.compare_and_swap("k", None, 2).unwrap(),
            "second create must lose"
        );
        let (v, ver) = s.load("k").unwrap().unwrap();
        assert_eq!(v, 1);
        assert!(s.compare_and_swap("k", Some(ver), 3).unwrap());
        assert!(
            !s.compare_and_swap("k", Some(ver), 4).unwrap(),
            "stale token must lose"
        );
        assert!(!s.compare_and_swap("k", Some(Version(0)), 5).unwrap());
        assert_eq!(d.get(LOCK_KEY).unwrap().unwrap().0, 0u64.to_le_bytes());
    }

    #[test]
    fn regression_first_write_race_does_not_admit_extra_requests() {
        // Regression: without the lock, workers racing on a new key each "create" it and the
        // limit admits more than its quota. 8 threads, 40 requests each, one new user.
        let d = Arc::new(EnvoyLike::default());
        init_lock(&*d).unwrap();
        let quota = Quota::new("user", 10, 60_000);
        let admitted = Arc::new(Mutex::new(0u32));
        let threads: Vec<_> = (0..8u16)
            .map(|t| {
                let (d, quota, admitted) = (d.clone(), quota.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..40 {
                        let s = SharedStore::new(&*d, 5_000, t);
                        let o = ratelimit::check(&s, "user:u1", UnixMs(5_000), &quota).unwrap();
                        if o.admitted() {
                            *admitted.lock().unwrap() += 1;
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*admitted.lock().unwrap(), 10);
    }

    #[test]
    fn an_expired_lock_is_broken_and_a_held_one_is_not() {
        let d = EnvoyLike::default();
        init_lock(&d).unwrap();
        // A holder that died at t=1000 (lease until 1050).
        d.set(LOCK_KEY, &((1_050u64 << 16) | 9).to_le_bytes(), None)
            .unwrap();
        let s = SharedStore::new(&d, 1_020, 1);
        assert_eq!(s.compare_and_swap("k", None, 1), Err(StoreError::Contended));
        let s = SharedStore::new(&d, 2_000, 1);
        assert!(s.compare_and_swap("k", None, 1).unwrap());
    }

    #[test]
    fn corrupt_cells_are_errors_not_panics() {
        let d = EnvoyLike::default();
        d.set("tg:c:x", b"abc", None).unwrap();
        let s = SharedStore::new(&d, 0, 0);
        assert!(matches!(s.load("x"), Err(StoreError::Unavailable(_))));
    }
}
