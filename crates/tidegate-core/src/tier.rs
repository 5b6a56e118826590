//! Degradation tiers: which origin and model serve a request, chosen by a KV flag that a person
//! sets; and the QPS-based recommendation the gateway raises when traffic passes a threshold.

use serde::Deserialize;

use crate::decision::HttpCall;
use crate::time::UnixMs;

/// A degradation tier, in order of increasing load.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Primary origin, primary model.
    #[default]
    Normal,
    /// Primary origin, the cheaper model.
    Economy,
    /// FAQ answers first even where the FAQ is otherwise off; the cheaper model on a miss.
    CacheFirst,
    /// The fallback provider.
    Fallback,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 4] = [
        Tier::Normal,
        Tier::Economy,
        Tier::CacheFirst,
        Tier::Fallback,
    ];

    /// The flag value and stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Normal => "normal",
            Tier::Economy => "economy",
            Tier::CacheFirst => "cache-first",
            Tier::Fallback => "fallback",
        }
    }

    /// Parses a flag value (case and surrounding whitespace ignored; `cache_first` accepted).
    pub fn parse(s: &str) -> Option<Tier> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "normal" => Some(Tier::Normal),
            "economy" => Some(Tier::Economy),
            "cache-first" => Some(Tier::CacheFirst),
            "fallback" => Some(Tier::Fallback),
            _ => None,
        }
    }

    /// Index 0..=3 (the tier gauge).
    pub fn level(self) -> u8 {
        self as u8
    }

    /// The tier of a [`Tier::level`] (`None` past the highest).
    pub fn from_level(level: u8) -> Option<Tier> {
        Tier::ALL.get(usize::from(level)).copied()
    }
}

/// `[tiers]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TierConfig {
    /// KV key of the tier flag.
    pub flag_key: String,
    /// KV key where the gateway writes its recommendation.
    pub recommendation_key: String,
    /// Origin QPS at which economy, cache-first and fallback are recommended.
    pub thresholds_qps: [f64; 3],
    /// Seconds traffic must stay below a threshold before a lower tier is recommended.
    pub cooldown_secs: u64,
    /// Switch the flag automatically instead of waiting for a person.
    pub auto_activate: bool,
    /// Webhook that receives alerts (empty: none).
    pub alert_webhook: String,
    /// Model used in the economy and cache-first tiers.
    pub economy_model: String,
    /// Base URL of the fallback provider (empty: the primary origin).
    pub fallback_url: String,
    /// Model used in the fallback tier (empty: `economy_model`, so that a fallback tier with
    /// no fallback provider configured still names a model the primary origin serves).
    pub fallback_model: String,
    /// API key for the fallback provider (empty: the primary's).
    pub fallback_api_key: String,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            flag_key: "tier".into(),
            recommendation_key: "tier_recommended".into(),
            thresholds_qps: [80.0, 150.0, 250.0],
            cooldown_secs: 120,
            auto_activate: false,
            alert_webhook: String::new(),
            economy_model: "gpt-4o-mini".into(),
            fallback_url: String::new(),
            fallback_model: String::new(),
            fallback_api_key: String::new(),
        }
    }
}

impl TierConfig {
    /// Checks values serde cannot; the field is relative to `[tiers]`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let t = self.thresholds_qps;
        if !(t.iter().all(|x| x.is_finite() && *x > 0.0) && t[0] < t[1] && t[1] < t[2]) {
            return Err((
                "thresholds_qps".into(),
                "must be three positive, strictly increasing numbers".into(),
            ));
        }
        if self.flag_key.is_empty() || self.flag_key == self.recommendation_key {
            return Err((
                "flag_key".into(),
                "must be non-empty and differ from recommendation_key".into(),
            ));
        }
        if !self.alert_webhook.is_empty() && !self.alert_webhook.starts_with("http") {
            return Err(("alert_webhook".into(), "must be an http(s) URL".into()));
        }
        if !self.fallback_url.is_empty() && !self.fallback_url.starts_with("http") {
            return Err(("fallback_url".into(), "must be an http(s) URL".into()));
        }
        if self.economy_model.trim().is_empty() {
            return Err(("economy_model".into(), "must not be empty".into()));
        }
        if !self.fallback_url.is_empty() && self.fallback_model.trim().is_empty() {
            return Err((
                "fallback_model".into(),
                "must name the fallback provider's model when fallback_url is set".into(),
            ));
        }
        Ok(())
    }

    /// The tier the traffic level `qps` calls for.
    pub fn tier_for(&self, qps: f64) -> Tier {
        let t = self.thresholds_qps;
        if qps > t[2] {
            Tier::Fallback
        } else if qps > t[1] {
            Tier::CacheFirst
        } else if qps > t[0] {
            Tier::Economy
        } else {
            Tier::Normal
        }
    }
}

/// How a tier serves a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The tier.
    pub tier: Tier,
    /// Use the fallback provider instead of the primary origin.
    pub fallback_origin: bool,
    /// The model to put in the request (OpenAI shape).
    pub model: String,
    /// Consult the FAQ before the origin even if `[faq]` keeps it off in normal operation.
    pub force_faq: bool,
}

/// The route for `tier`; `primary_model` is `[origin].model`.
pub fn route(tier: Tier, cfg: &TierConfig, primary_model: &str) -> Route {
    let (fallback_origin, model, force_faq) = match tier {
        Tier::Normal => (false, primary_model, false),
        Tier::Economy => (false, cfg.economy_model.as_str(), false),
        Tier::CacheFirst => (false, cfg.economy_model.as_str(), true),
        Tier::Fallback => {
            let m = cfg.fallback_model.as_str();
            (
                true,
                if m.is_empty() { &cfg.economy_model } else { m },
                true,
            )
        }
    };
    Route {
        tier,
        fallback_origin,
        model: model.to_owned(),
        force_faq,
    }
}

/// Requests per second over a sliding window of whole seconds; pure state the host keeps.
#[derive(Clone, Debug)]
pub struct QpsMeter {
    buckets: Vec<(u64, u32)>,
}

impl QpsMeter {
    /// A meter averaging over `window_secs` seconds (at least 1).
    pub fn new(window_secs: usize) -> Self {
        QpsMeter {
            buckets: vec![(u64::MAX, 0); window_secs.max(1)],
        }
    }

    /// Counts one request at `now`.
    pub fn record(&mut self, now: UnixMs) {
        let sec = now.as_secs();
        let n = self.buckets.len() as u64;
        if let Some(b) = self.buckets.get_mut((sec % n) as usize) {
            if b.0 != sec {
                *b = (sec, 0);
            }
            b.1 = b.1.saturating_add(1);
        }
    }

    /// Average requests per second over the window ending at `now` (the current, partial
    /// second excluded so a fresh second does not halve the rate).
    pub fn rate(&self, now: UnixMs) -> f64 {
        let sec = now.as_secs();
        let n = self.buckets.len() as u64;
        let total: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s != u64::MAX && *s < sec && sec - *s <= n)
            .map(|(_, c)| u64::from(*c))
            .sum();
        total as f64 / n as f64
    }
}

/// A change of recommendation worth an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// The tier recommended before.
    pub from: Tier,
    /// The tier recommended now.
    pub to: Tier,
    /// Origin QPS that caused it.
    pub qps: f64,
    /// When.
    pub at: UnixMs,
}

impl Recommendation {
    /// The alert webhook body: JSON with a human sentence (`text`, Slack-compatible) and the
    /// facts.
    pub fn alert_json(&self, active: Tier, auto_activated: bool) -> String {
        let action = if auto_activated {
            format!("Activated automatically: tier is now {}.", self.to.as_str())
        } else if active == self.to {
            "The tier flag already has this value.".to_owned()
        } else {
            format!(
                "Current tier is {}. To switch, set the `tier` flag to \"{}\".",
                active.as_str(),
                self.to.as_str()
            )
        };
        serde_json::json!({
            "text": format!(
                "tidegate: origin at {:.0} req/s, recommended tier {} (was {}). {}",
                self.qps, self.to.as_str(), self.from.as_str(), action
            ),
            "event": "tier_recommendation",
            "from": self.from.as_str(),
            "to": self.to.as_str(),
            "active": active.as_str(),
            "qps": (self.qps * 10.0).round() / 10.0,
            "auto_activated": auto_activated,
            "at_ms": self.at.0,
        })
        .to_string()
    }

    /// The alert to post to `[tiers].alert_webhook` (`None` when no webhook is set).
    /// `activated`: the host wrote the recommended tier to the tier flag itself.
    pub fn alert_call(&self, cfg: &TierConfig, active: Tier, activated: bool) -> Option<HttpCall> {
        if cfg.alert_webhook.is_empty() {
            return None;
        }
        Some(HttpCall {
            method: "POST",
            url: cfg.alert_webhook.clone(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: self.alert_json(active, activated),
        })
    }
}

/// Turns a QPS reading into a recommendation, raising at once and lowering only after the
/// traffic stayed low for the cooldown, so a flapping load does not flood the alert channel.
#[derive(Clone, Debug, Default)]
pub struct Recommender {
    current: Tier,
    low_since: Option<UnixMs>,
}

impl Recommender {
    /// A recommender in a given state, for a host that keeps the state outside this struct
    /// (the Envoy filter shares one recommender between its workers through shared data).
    pub fn resume(current: Tier, low_since: Option<UnixMs>) -> Self {
        Recommender { current, low_since }
    }

    /// Since when the traffic has asked for a lower tier than the current one (the cooldown
    /// runs from here).
    pub fn low_since(&self) -> Option<UnixMs> {
        self.low_since
    }

    /// The tier currently recommended.
    pub fn current(&self) -> Tier {
        self.current
    }

    /// Feeds a reading; returns a recommendation when it changes.
    pub fn observe(&mut self, qps: f64, now: UnixMs, cfg: &TierConfig) -> Option<Recommendation> {
        let wanted = cfg.tier_for(qps);
        if wanted > self.current {
            self.low_since = None;
            return Some(self.change(wanted, qps, now));
        }
        if wanted == self.current {
            self.low_since = None;
            return None;
        }
        let since = *self.low_since.get_or_insert(now);
        if now.0.saturating_sub(since.0) >= cfg.cooldown_secs.saturating_mul(1000) {
            self.low_since = None;
            return Some(self.change(wanted, qps, now));
        }
        None
    }

    fn change(&mut self, to: Tier, qps: f64, at: UnixMs) -> Recommendation {
        let from = std::mem::replace(&mut self.current, to);
        Recommendation { from, to, qps, at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_route() {
        assert_eq!(Tier::parse(" Cache_First\n"), Some(Tier::CacheFirst));
        assert_eq!(Tier::parse("turbo"), None);
        let cfg = TierConfig::default();
        assert_eq!(route(Tier::Normal, &cfg, "gpt-4o").model, "gpt-4o");
        assert_eq!(route(Tier::Economy, &cfg, "gpt-4o").model, "gpt-4o-mini");
        assert!(route(Tier::CacheFirst, &cfg, "gpt-4o").force_faq);
        assert!(route(Tier::Fallback, &cfg, "gpt-4o").fallback_origin);
        // Found by testing: the shipped configs set no fallback provider, and the fallback
        // tier sent the placeholder model "fallback-model" to the primary origin.
        assert_eq!(route(Tier::Fallback, &cfg, "gpt-4o").model, "gpt-4o-mini");
        let with = TierConfig {
            fallback_url: "https://backup.example".into(),
            ..TierConfig::default()
        };
        assert_eq!(with.validate().unwrap_err().0, "fallback_model");
    }

    #[test]
    fn thresholds_from_the_case_study() {
        let cfg = TierConfig::default();
        assert_eq!(cfg.tier_for(80.0), Tier::Normal);
        assert_eq!(cfg.tier_for(81.0), Tier::Economy);
        assert_eq!(cfg.tier_for(151.0), Tier::CacheFirst);
        assert_eq!(cfg.tier_for(251.0), Tier::Fallback);
    }

    #[test]
    fn meter_measures_a_steady_rate() {
        let mut m = QpsMeter::new(10);
        for ms in (0..20_000).step_by(10) {
            m.record(UnixMs(1_000_000 + ms));
        }
        let r = m.rate(UnixMs(1_020_000));
        assert!((r - 100.0).abs() < 0.01, "{r}");
        assert_eq!(m.rate(UnixMs(1_100_000)), 0.0, "old seconds fall out");
    }

    #[test]
    fn recommender_raises_at_once_and_lowers_after_cooldown() {
        let cfg = TierConfig {
            cooldown_secs: 60,
            ..TierConfig::default()
        };
        let mut r = Recommender::default();
        let up = r.observe(160.0, UnixMs(0), &cfg).unwrap();
        assert_eq!((up.from, up.to), (Tier::Normal, Tier::CacheFirst));
        assert!(
            r.observe(170.0, UnixMs(1000), &cfg).is_none(),
            "no repeat alerts"
        );
        assert!(r.observe(10.0, UnixMs(2000), &cfg).is_none());
        assert!(r.observe(10.0, UnixMs(61_000), &cfg).is_none());
        let down = r.observe(10.0, UnixMs(62_000), &cfg).unwrap();
        assert_eq!(down.to, Tier::Normal);
        let body: serde_json::Value =
            serde_json::from_str(&up.alert_json(Tier::Normal, false)).unwrap();
        assert_eq!(body["to"], "cache-first");
        assert!(body["text"]
            .as_str()
            .unwrap()
            .contains("set the `tier` flag"));
    }

    #[test]
    fn a_resumed_recommender_keeps_its_cooldown() {
        let cfg = TierConfig {
            cooldown_secs: 60,
            ..TierConfig::default()
        };
        let mut r = Recommender::default();
        r.observe(160.0, UnixMs(0), &cfg).unwrap();
        assert!(r.observe(10.0, UnixMs(2000), &cfg).is_none());
        // The state leaves the struct (shared data in Envoy) and comes back.
        let mut back = Recommender::resume(r.current(), r.low_since());
        assert_eq!(back.low_since(), Some(UnixMs(2000)));
        assert!(back.observe(10.0, UnixMs(61_000), &cfg).is_none());
        assert_eq!(
            back.observe(10.0, UnixMs(62_000), &cfg).unwrap().to,
            Tier::Normal
        );
        for t in Tier::ALL {
            assert_eq!(Tier::from_level(t.level()), Some(t));
        }
        assert_eq!(Tier::from_level(4), None);
    }

    #[test]
    fn the_alert_call_goes_to_the_webhook_only_when_one_is_set() {
        let rec = Recommendation {
            from: Tier::Normal,
            to: Tier::Economy,
            qps: 90.0,
            at: UnixMs(5),
        };
        assert!(rec
            .alert_call(&TierConfig::default(), Tier::Normal, false)
            .is_none());
        let cfg = TierConfig {
            alert_webhook: "http://127.0.0.1:9/hook".into(),
            ..TierConfig::default()
        };
        let call = rec.alert_call(&cfg, Tier::Economy, true).unwrap();
        assert_eq!(
            (call.method, call.url.as_str()),
            ("POST", "http://127.0.0.1:9/hook")
        );
        let body: serde_json::Value = serde_json::from_str(&call.body).unwrap();
        assert_eq!(body["auto_activated"], true);
        assert_eq!(body["active"], "economy");
    }
}
