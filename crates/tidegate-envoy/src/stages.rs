//! Per-stage timers for profiling the filter inside Envoy (feature `stage-timers`).
//!
//! Each [`span`] measures the wall time from its creation to its drop with the host clock and
//! adds it to its stage; every [`REPORT_EVERY`] requests the averages go to Envoy's log at
//! `error` level (so that a benchmark running Envoy with `-l error` still shows them). Without
//! the feature a span is a zero-sized value and costs nothing.

#[cfg(feature = "stage-timers")]
mod on {
    use std::cell::RefCell;
    use std::time::UNIX_EPOCH;

    /// Requests between two reports.
    pub const REPORT_EVERY: u64 = 5_000;

    /// Requests counted, and per stage: name, total ns, spans.
    type Totals = (u64, Vec<(&'static str, u64, u64)>);

    thread_local! {
        static TOTALS: RefCell<Totals> = const { RefCell::new((0, Vec::new())) };
    }

    fn now_ns() -> u64 {
        proxy_wasm::hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64)
    }

    /// A running timer for one stage.
    #[derive(Debug)]
    pub struct Span {
        stage: &'static str,
        start: u64,
    }

    /// Starts timing `stage`.
    pub fn span(stage: &'static str) -> Span {
        Span {
            stage,
            start: now_ns(),
        }
    }

    impl Drop for Span {
        fn drop(&mut self) {
            let d = now_ns().saturating_sub(self.start);
            TOTALS.with(|t| {
                let mut t = t.borrow_mut();
                match t.1.iter_mut().find(|(s, _, _)| *s == self.stage) {
                    Some(e) => {
                        e.1 += d;
                        e.2 += 1;
                    }
                    None => t.1.push((self.stage, d, 1)),
                }
            });
        }
    }

    /// Counts one finished request; logs and resets the averages every [`REPORT_EVERY`].
    pub fn request_done() {
        TOTALS.with(|t| {
            let mut t = t.borrow_mut();
            t.0 += 1;
            if t.0 < REPORT_EVERY {
                return;
            }
            let n = t.0;
            let line: Vec<String> =
                t.1.iter()
                    .map(|(s, ns, c)| {
                        format!(
                            "{s}={:.1}us/{:.2}",
                            *ns as f64 / 1e3 / n as f64,
                            *c as f64 / n as f64
                        )
                    })
                    .collect();
            log::error!("tidegate stages over {n} requests: {}", line.join(" "));
            t.0 = 0;
            t.1.clear();
        });
    }
}

#[cfg(not(feature = "stage-timers"))]
mod on {
    /// A disabled timer.
    #[derive(Debug)]
    pub struct Span;

    impl Drop for Span {
        // Ends a span like the enabled timer does, so call sites read the same either way.
        #[inline(always)]
        fn drop(&mut self) {}
    }

    /// Does nothing without the `stage-timers` feature.
    #[inline(always)]
    pub fn span(_stage: &'static str) -> Span {
        Span
    }

    /// Does nothing without the `stage-timers` feature.
    #[inline(always)]
    pub fn request_done() {}
}

pub use on::*;
