//! The Worker's settings: the core's TOML config from the `TIDEGATE_CONFIG` variable, with
//! the secrets set by `wrangler secret put` laid over it, and the Worker's own knobs.

use tidegate_core::reply::Validator;
use tidegate_core::{Config, ConfigError};

/// Variable holding the core config as TOML (empty or absent: built-in defaults).
pub const CONFIG_VAR: &str = "TIDEGATE_CONFIG";
/// Variable: seconds a flag or the FAQ artefact is kept per isolate and at the KV edge cache.
pub const FLAGS_TTL_VAR: &str = "FLAGS_CACHE_TTL_SECS";
/// Workers KV's lowest accepted `cacheTtl`.
pub const MIN_KV_CACHE_TTL_SECS: u64 = 60;
/// Default time an isolate keeps flags before it asks KV again.
pub const DEFAULT_FLAGS_TTL_SECS: u64 = 60;
/// KV key (in the FAQ namespace) of the knowledge-base artefact built by `tidegate kb build`.
pub const KB_KEY: &str = "faq_kb";

/// Secrets (or variables) that override a config field when set and non-empty:
/// `(binding name, config field)`.
pub const SECRETS: [(&str, &str); 6] = [
    ("ORIGIN_URL", "origin.url"),
    ("ORIGIN_API_KEY", "origin.api_key"),
    ("TURNSTILE_SECRET", "turnstile.secret"),
    ("CHATWOOT_TOKEN", "handoff.chatwoot_token"),
    ("ALERT_WEBHOOK", "tiers.alert_webhook"),
    ("USER_SIGNING_SECRET", "client.user_signing_secret"),
];

/// Everything compiled once per isolate.
#[derive(Debug)]
pub struct Settings {
    /// The core config (secrets applied, validated).
    pub config: Config,
    /// The reply validator built from `[validation]`.
    pub validator: Validator,
    /// Seconds flags are kept per isolate (also the KV `cacheTtl`, at least 60).
    pub flags_ttl_secs: u64,
}

/// Builds the settings from the config text, a lookup for secrets and the TTL variable.
pub fn load(
    config_text: Option<&str>,
    secret: impl Fn(&str) -> Option<String>,
    flags_ttl: Option<&str>,
) -> Result<Settings, ConfigError> {
    let mut config = match config_text.map(str::trim).filter(|t| !t.is_empty()) {
        // Validation waits until the secrets are in.
        Some(t) => Config::parse_toml(t)?,
        None => Config::default(),
    };
    for (name, field) in SECRETS {
        let Some(v) = secret(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        match field {
            "origin.url" => config.origin.url = v,
            "origin.api_key" => config.origin.api_key = v,
            "turnstile.secret" => config.turnstile.secret = v,
            "handoff.chatwoot_token" => config.handoff.chatwoot_token = v,
            "tiers.alert_webhook" => config.tiers.alert_webhook = v,
            _ => config.client.user_signing_secret = Some(v),
        }
    }
    // Secrets may break a rule (e.g. a test Turnstile secret in production).
    config.validate_without_admin_api()?;
    if config.origin.url.trim().is_empty() {
        return Err(ConfigError {
            field: "origin.url".into(),
            message: "the Worker has no built-in origin: set it in TIDEGATE_CONFIG or the \
                      ORIGIN_URL secret"
                .into(),
        });
    }
    let validator = Validator::new(&config.validation).map_err(|(f, m)| ConfigError {
        field: format!("validation.{f}"),
        message: m,
    })?;
    let flags_ttl_secs = match flags_ttl.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.parse::<u64>().map_err(|_| ConfigError {
            field: FLAGS_TTL_VAR.into(),
            message: "must be a whole number of seconds".into(),
        })?,
        None => DEFAULT_FLAGS_TTL_SECS,
    };
    Ok(Settings {
        config,
        validator,
        flags_ttl_secs,
    })
}

/// The `cacheTtl` to pass to KV for a per-isolate TTL (KV refuses values under 60 s).
pub fn kv_cache_ttl(flags_ttl_secs: u64) -> u64 {
    flags_ttl_secs.max(MIN_KV_CACHE_TTL_SECS)
}

/// The longest time a dashboard flip takes to reach every request: the KV edge cache
/// (`cacheTtl`, which also bounds how long a location serves its cached copy), plus the
/// isolate's own copy, plus KV's propagation (about 60 s, not bounded by us).
pub fn worst_flip_delay_secs(flags_ttl_secs: u64) -> u64 {
    kv_cache_ttl(flags_ttl_secs) + flags_ttl_secs + 60
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn secrets_override_the_config() {
        let text = "[origin]\nurl = \"http://a\"\napi_key = \"from-config\"\n";
        let s = load(
            Some(text),
            |n| (n == "ORIGIN_API_KEY").then(|| "from-secret".to_owned()),
            None,
        )
        .unwrap();
        assert_eq!(s.config.origin.api_key, "from-secret");
        assert_eq!(s.config.origin.url, "http://a");
        assert_eq!(s.flags_ttl_secs, DEFAULT_FLAGS_TTL_SECS);
    }

    #[test]
    fn no_origin_is_a_config_error_naming_the_field() {
        let e = load(None, none, None).unwrap_err();
        assert_eq!(e.field, "origin.url");
        let s = load(
            None,
            |n| (n == "ORIGIN_URL").then(|| "http://o".into()),
            None,
        )
        .unwrap();
        assert_eq!(s.config.origin.url, "http://o");
    }

    #[test]
    fn bad_config_and_ttl_are_refused_not_panicked() {
        assert!(load(Some("[limits.ip]\nlimit = \"x\""), none, None).is_err());
        let e = load(Some("[origin]\nurl = \"http://a\""), none, Some("soon")).unwrap_err();
        assert_eq!(e.field, FLAGS_TTL_VAR);
    }

    #[test]
    fn shipped_wrangler_config_loads() {
        let w: toml::Value = toml::from_str(include_str!("../../../wrangler.toml")).unwrap();
        let vars = &w["vars"];
        let text = vars[CONFIG_VAR].as_str().unwrap();
        let ttl = vars[FLAGS_TTL_VAR].as_str();
        // Found by testing: the Worker asked for an ADMIN_TOKEN it never uses (no admin
        // routes), and without it every request was a 500.
        let origin = |n: &str| (n == "ORIGIN_URL").then(|| "https://llm.example".to_owned());
        let s = load(Some(text), origin, ttl).unwrap();
        assert_eq!(s.flags_ttl_secs, 60);
        assert_eq!(s.config.limits.user.limit, 10);
        let bindings: Vec<&str> = w["kv_namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["binding"].as_str().unwrap())
            .collect();
        assert_eq!(bindings, ["FLAGS", "FAQ"]);
    }

    #[test]
    fn kv_ttl_never_below_the_platform_minimum() {
        assert_eq!(kv_cache_ttl(5), 60);
        assert_eq!(kv_cache_ttl(300), 300);
        assert_eq!(worst_flip_delay_secs(5), 125);
    }
}
