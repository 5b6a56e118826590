//! Counters behind a small compare-and-swap interface.
//!
//! Every counter the core needs (a GCRA arrival time, tokens spent this month, a challenge
//! pass, a handoff mark, an FAQ hit count) is one `u64` cell under a string key. Hosts back the
//! cells with what their platform has: memory in the native gateway, proxy-wasm shared data in
//! Envoy, Durable Object storage in the Worker. The core only ever reads a cell with its
//! version and writes it back if the version is unchanged, so a check and its update are one
//! atomic step even with many concurrent requests.

use std::collections::HashMap;
use std::sync::Mutex;

/// The version of a cell as last read; opaque to the core.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Version(pub u64);

/// Why a store operation could not be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The backing store could not be reached or answered with an error.
    Unavailable(String),
    /// The cell kept changing under us: every compare-and-swap attempt lost.
    Contended,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "counter store unavailable: {why}"),
            StoreError::Contended => f.write_str("counter store contended: CAS retries exhausted"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A map of `u64` cells with compare-and-swap writes.
pub trait CounterStore {
    /// The cell's value and version, or `None` if the key has never been written.
    fn load(&self, key: &str) -> Result<Option<(u64, Version)>, StoreError>;

    /// Writes `value` if the cell is still at `expected`. `expected == None` means "only if
    /// the key is absent": hosts must make that first write atomic too. Returns `Ok(false)`
    /// when another writer got there first.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Version>,
        value: u64,
    ) -> Result<bool, StoreError>;
}

/// How many times [`update`] retries a lost compare-and-swap before giving up.
pub const MAX_CAS_ATTEMPTS: usize = 64;

/// Reads a cell, lets `f` decide the new value, and writes it atomically, retrying when
/// another writer won. `f` returns `(Some(new), result)` to write or `(None, result)` to leave
/// the cell as it is; it may run several times and must not have side effects.
pub fn update<S, R, F>(store: &S, key: &str, mut f: F) -> Result<R, StoreError>
where
    S: CounterStore + ?Sized,
    F: FnMut(Option<u64>) -> (Option<u64>, R),
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let current = store.load(key)?;
        let (next, result) = f(current.map(|(v, _)| v));
        let Some(next) = next else {
            return Ok(result);
        };
        if store.compare_and_swap(key, current.map(|(_, ver)| ver), next)? {
            return Ok(result);
        }
    }
    Err(StoreError::Contended)
}

/// An in-process store: the native gateway's counters and the core's tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    cells: Mutex<HashMap<String, (u64, Version)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every cell for which `keep` returns false (hosts call this to forget idle
    /// clients, e.g. GCRA cells whose arrival time is in the past).
    pub fn retain(&self, mut keep: impl FnMut(&str, u64) -> bool) {
        if let Ok(mut cells) = self.cells.lock() {
            cells.retain(|k, (v, _)| keep(k, *v));
        }
    }

    /// Number of cells held.
    pub fn len(&self) -> usize {
        self.cells.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// True when no cell is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every cell whose key starts with `prefix`.
    pub fn scan(&self, prefix: &str) -> Vec<(String, u64)> {
        self.cells
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, (v, _))| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl CounterStore for MemoryStore {
    fn load(&self, key: &str) -> Result<Option<(u64, Version)>, StoreError> {
        let cells = self
            .cells
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))?;
        Ok(cells.get(key).copied())
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Version>,
        value: u64,
    ) -> Result<bool, StoreError> {
        let mut cells = self
            .cells
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))?;
        let current = cells.get(key).map(|(_, ver)| *ver);
        if current != expected {
            return Ok(false);
        }
        let next = Version(current.map_or(1, |v| v.0.wrapping_add(1)));
        cells.insert(key.to_owned(), (value, next));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_is_insert_if_absent() {
        let s = MemoryStore::new();
        assert!(s.compare_and_swap("k", None, 1).unwrap());
        assert!(
            !s.compare_and_swap("k", None, 2).unwrap(),
            "second blind insert must lose"
        );
        let (v, ver) = s.load("k").unwrap().unwrap();
        assert_eq!(v, 1);
        assert!(s.compare_and_swap("k", Some(ver), 3).unwrap());
        assert!(
            !s.compare_and_swap("k", Some(ver), 4).unwrap(),
            "stale version must lose"
        );
    }

    #[test]
    fn concurrent_increments_are_exact() {
        let s = std::sync::Arc::new(MemoryStore::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        update(&*s, "n", |v| (Some(v.unwrap_or(0) + 1), ())).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.load("n").unwrap().unwrap().0, 8000);
    }
}
