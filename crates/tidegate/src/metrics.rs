//! Prometheus text metrics of the native gateway.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use tidegate_core::Reason;

/// Counters and gauges, updated lock-free.
#[derive(Debug, Default)]
pub struct Metrics {
    decisions: [AtomicU64; Reason::ALL.len()],
    /// Requests sent to the origin.
    pub origin_requests: AtomicU64,
    /// Origin replies that failed (transport, 5xx, cut).
    pub origin_failures: AtomicU64,
    /// Invented promo codes replaced.
    pub codes_replaced: AtomicU64,
    /// Tokens charged to the budget.
    pub tokens_charged: AtomicU64,
    /// Handoffs to a human sent to Chatwoot.
    pub handoffs: AtomicU64,
    /// Alerts posted.
    pub alerts: AtomicU64,
    /// Outbound calls (handoff, alert) abandoned after their retries.
    pub call_failures: AtomicU64,
    /// Current tier level (0..=3).
    pub tier: AtomicU64,
    /// Recommended tier level (0..=3).
    pub tier_recommended: AtomicU64,
    /// Origin QPS x1000.
    pub origin_qps_milli: AtomicU64,
}

impl Metrics {
    /// Counts one decision.
    pub fn decision(&self, r: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|x| *x == r) {
            if let Some(c) = self.decisions.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "# HELP tidegate_decisions_total Requests by decision reason."
        );
        let _ = writeln!(s, "# TYPE tidegate_decisions_total counter");
        for (r, c) in Reason::ALL.iter().zip(self.decisions.iter()) {
            let _ = writeln!(
                s,
                "tidegate_decisions_total{{reason=\"{}\"}} {}",
                r.as_str(),
                g(c)
            );
        }
        for (name, help, kind, v) in [
            (
                "origin_requests_total",
                "Requests sent to the origin.",
                "counter",
                g(&self.origin_requests),
            ),
            (
                "origin_failures_total",
                "Origin replies that failed.",
                "counter",
                g(&self.origin_failures),
            ),
            (
                "codes_replaced_total",
                "Invented promo codes replaced.",
                "counter",
                g(&self.codes_replaced),
            ),
            (
                "tokens_charged_total",
                "LLM tokens charged to the budget.",
                "counter",
                g(&self.tokens_charged),
            ),
            (
                "handoffs_total",
                "Conversations handed to a human.",
                "counter",
                g(&self.handoffs),
            ),
            (
                "alerts_total",
                "Tier alerts posted.",
                "counter",
                g(&self.alerts),
            ),
            (
                "tier",
                "Active tier (0 normal .. 3 fallback).",
                "gauge",
                g(&self.tier),
            ),
            (
                "tier_recommended",
                "Recommended tier.",
                "gauge",
                g(&self.tier_recommended),
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP tidegate_{name} {help}\n# TYPE tidegate_{name} {kind}"
            );
            let _ = writeln!(s, "tidegate_{name} {v}");
        }
        let qps = g(&self.origin_qps_milli) as f64 / 1000.0;
        let _ = writeln!(
            s,
            "# HELP tidegate_origin_qps Origin requests per second (10 s average)."
        );
        let _ = writeln!(
            s,
            "# TYPE tidegate_origin_qps gauge\ntidegate_origin_qps {qps}"
        );
        s
    }
}
