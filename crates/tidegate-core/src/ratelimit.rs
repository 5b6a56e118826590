//! Exact rate limits with the generic cell rate algorithm (GCRA).
//!
//! A limit of `limit` requests per `window` admits a burst of `limit` and then one request
//! every `window / limit`: there is no window boundary, so no double burst. The whole state
//! of one limit for one key is a single `u64`, the theoretical arrival time (TAT) of the next
//! request in nanoseconds, updated through [`crate::store::update`] so that concurrent
//! requests cannot slip past.
//!
//! A limit may have a wait queue (`max_wait_ms`): a request that would conform within that
//! wait is admitted with a delay (it "takes a number") instead of being refused. The queue is
//! bounded because the delay is.

use crate::store::{self, CounterStore, StoreError};
use crate::time::{ceil_secs, UnixMs};

/// One configured limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Stable policy name used in headers and problems (`ip`, `user`, `origin`, `api-orders`).
    pub policy: String,
    /// Requests admitted per window.
    pub limit: u32,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Longest wait a request may be queued for instead of refused (0: no queue).
    pub max_wait_ms: u64,
}

impl Quota {
    /// A quota without a wait queue.
    pub fn new(policy: &str, limit: u32, window_ms: u64) -> Self {
        Quota {
            policy: policy.to_owned(),
            limit,
            window_ms,
            max_wait_ms: 0,
        }
    }

    fn interval_ns(&self) -> u64 {
        (self.window_ms.saturating_mul(1_000_000) / u64::from(self.limit.max(1))).max(1)
    }

    fn tolerance_ns(&self) -> u64 {
        self.interval_ns()
            .saturating_mul(u64::from(self.limit.max(1)) - 1)
    }

    /// `RateLimit-Policy` item: `"user";q=10;w=60`.
    pub fn policy_item(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.policy,
            self.limit,
            self.window_ms.div_ceil(1000)
        )
    }
}

/// What a limit said about one request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted now.
    Allow,
    /// Admitted after waiting this many milliseconds (queued).
    Delay {
        /// How long the host must hold the request before passing it on.
        wait_ms: u64,
    },
    /// Refused; a retry after this many whole seconds will conform.
    Reject {
        /// Seconds until the next request conforms (at least 1).
        retry_after_secs: u64,
    },
}

/// A limit's verdict with the figures the `RateLimit` header reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The limit that was applied.
    pub quota: Quota,
    /// The verdict.
    pub verdict: Verdict,
    /// Requests that would still be admitted immediately after this one.
    pub remaining: u32,
    /// Seconds until the quota is whole again (or, when refused, until a retry conforms).
    pub reset_secs: u64,
}

impl Outcome {
    /// `RateLimit` item: `"user";r=3;t=12`.
    pub fn header_item(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.quota.policy, self.remaining, self.reset_secs
        )
    }

    /// True unless refused.
    pub fn admitted(&self) -> bool {
        !matches!(self.verdict, Verdict::Reject { .. })
    }
}

/// One GCRA step: the stored TAT (if any) and the time in, the new TAT (if it changes) and
/// the outcome out. Pure: the caller stores the new state.
pub fn step(tat: Option<u64>, now: UnixMs, quota: &Quota) -> (Option<u64>, Outcome) {
    let now_ns = now.as_nanos();
    let t = quota.interval_ns();
    let tau = quota.tolerance_ns();
    let tat = tat.unwrap_or(now_ns).max(now_ns);
    // Earliest instant at which this request conforms.
    let allowed_at = tat.saturating_sub(tau);
    let wait_ns = allowed_at.saturating_sub(now_ns);
    let max_wait_ns = quota.max_wait_ms.saturating_mul(1_000_000);
    if wait_ns > max_wait_ns {
        let retry = ceil_secs(wait_ns.saturating_sub(max_wait_ns)).max(1);
        let outcome = Outcome {
            quota: quota.clone(),
            verdict: Verdict::Reject {
                retry_after_secs: retry,
            },
            remaining: 0,
            reset_secs: retry,
        };
        return (None, outcome);
    }
    let new_tat = tat.saturating_add(t);
    let ahead = new_tat.saturating_sub(now_ns);
    let capacity = t.saturating_mul(u64::from(quota.limit.max(1)));
    let remaining = (capacity.saturating_sub(ahead) / t) as u32;
    let verdict = if wait_ns == 0 {
        Verdict::Allow
    } else {
        Verdict::Delay {
            wait_ms: wait_ns.div_ceil(1_000_000),
        }
    };
    let reset_secs = if remaining == 0 {
        // Until the next request conforms.
        ceil_secs(new_tat.saturating_sub(tau).saturating_sub(now_ns)).max(1)
    } else {
        ceil_secs(ahead)
    };
    (
        Some(new_tat),
        Outcome {
            quota: quota.clone(),
            verdict,
            remaining,
            reset_secs,
        },
    )
}

/// Applies `quota` to `key` in `store` atomically.
pub fn check<S: CounterStore + ?Sized>(
    store: &S,
    key: &str,
    now: UnixMs,
    quota: &Quota,
) -> Result<Outcome, StoreError> {
    store::update(store, key, |tat| step(tat, now, quota))
}

/// Renders the `RateLimit-Policy` and `RateLimit` header values for the outcomes of one
/// request (one list item per policy), or `None` when there were none.
pub fn headers(outcomes: &[Outcome]) -> Option<(String, String)> {
    if outcomes.is_empty() {
        return None;
    }
    let policy = outcomes
        .iter()
        .map(|o| o.quota.policy_item())
        .collect::<Vec<_>>()
        .join(", ");
    let state = outcomes
        .iter()
        .map(|o| o.header_item())
        .collect::<Vec<_>>()
        .join(", ");
    Some((policy, state))
}

/// The first refusal among `outcomes`, if any.
pub fn first_rejection(outcomes: &[Outcome]) -> Option<&Outcome> {
    outcomes.iter().find(|o| !o.admitted())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const MIN: u64 = 60_000;

    fn run(store: &MemoryStore, key: &str, now: u64, q: &Quota) -> Outcome {
        check(store, key, UnixMs(now), q).unwrap()
    }

    #[test]
    fn admits_exactly_the_limit_then_refuses_with_retry_after() {
        let s = MemoryStore::new();
        let q = Quota::new("user", 10, MIN);
        let t0 = 1_000_000;
        for i in 0..10 {
            let o = run(&s, "u", t0, &q);
            assert_eq!(o.verdict, Verdict::Allow, "request {i}");
            assert_eq!(o.remaining, 9 - i);
        }
        let o = run(&s, "u", t0, &q);
        assert_eq!(
            o.verdict,
            Verdict::Reject {
                retry_after_secs: 6
            }
        );
        assert_eq!(o.remaining, 0);
        assert!(o.reset_secs <= 6);
        // One interval later exactly one more conforms.
        assert_eq!(run(&s, "u", t0 + 6_000, &q).verdict, Verdict::Allow);
        assert!(!run(&s, "u", t0 + 6_000, &q).admitted());
    }

    #[test]
    fn regression_no_double_burst_across_a_window_boundary() {
        // Fault class: fixed windows admit 2x the limit around a boundary (59.9 s then 60.0 s).
        let s = MemoryStore::new();
        let q = Quota::new("ip", 30, MIN);
        let mut admitted = 0;
        for _ in 0..30 {
            admitted += u32::from(run(&s, "ip", 59_900, &q).admitted());
        }
        for _ in 0..30 {
            admitted += u32::from(run(&s, "ip", 60_000, &q).admitted());
        }
        assert_eq!(admitted, 30);
    }

    #[test]
    fn any_window_admits_at_most_limit_plus_refill() {
        // Over any span of length w at most limit + floor(w/T) - 1 requests pass: the burst plus
        // what the steady rate refills, never two bursts.
        let s = MemoryStore::new();
        let q = Quota::new("ip", 30, MIN);
        let mut times = Vec::new();
        let mut now = 0;
        while now < 5 * MIN {
            if run(&s, "k", now, &q).admitted() {
                times.push(now);
            }
            now += 97;
        }
        for (i, &t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|&&x| x < t + MIN).count();
            assert!(in_window <= 59, "{in_window} in one window from {t}");
        }
        assert!(times.len() >= 30 + 4 * 30 - 1);
    }

    #[test]
    fn queue_delays_then_refuses() {
        let s = MemoryStore::new();
        let q = Quota {
            max_wait_ms: 50,
            ..Quota::new("api-orders", 200, 1000)
        };
        for _ in 0..200 {
            assert_eq!(run(&s, "a", 0, &q).verdict, Verdict::Allow);
        }
        // Each further request waits 5 ms more, up to the 50 ms bound: 10 queued.
        for i in 1..=10u64 {
            assert_eq!(
                run(&s, "a", 0, &q).verdict,
                Verdict::Delay { wait_ms: 5 * i }
            );
        }
        assert!(matches!(
            run(&s, "a", 0, &q).verdict,
            Verdict::Reject { .. }
        ));
    }

    #[test]
    fn concurrent_requests_never_exceed_the_limit() {
        let s = std::sync::Arc::new(MemoryStore::new());
        let q = Quota::new("user", 10, MIN);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (s, q) = (s.clone(), q.clone());
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| check(&*s, "u", UnixMs(5), &q).unwrap().admitted())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn headers_list_every_policy() {
        let s = MemoryStore::new();
        let a = run(&s, "i", 0, &Quota::new("ip", 30, MIN));
        let b = run(&s, "u", 0, &Quota::new("user", 10, MIN));
        let (p, r) = headers(&[a, b]).unwrap();
        assert_eq!(p, "\"ip\";q=30;w=60, \"user\";q=10;w=60");
        assert_eq!(r, "\"ip\";r=29;t=2, \"user\";r=9;t=6");
    }

    proptest::proptest! {
        #[test]
        fn step_never_panics(tat in proptest::option::of(proptest::num::u64::ANY),
                             now in proptest::num::u64::ANY,
                             limit in proptest::num::u32::ANY,
                             window in proptest::num::u64::ANY,
                             wait in proptest::num::u64::ANY) {
            let q = Quota { policy: "p".into(), limit, window_ms: window, max_wait_ms: wait };
            let (_, o) = step(tat, UnixMs(now), &q);
            if let Verdict::Reject { retry_after_secs } = o.verdict {
                proptest::prop_assert!(retry_after_secs >= 1);
                proptest::prop_assert!(o.reset_secs <= retry_after_secs);
            }
        }
    }
}
