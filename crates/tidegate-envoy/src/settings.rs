//! The filter's configuration: the core's TOML config, plus an `[envoy]` table for what only
//! the Envoy host needs (cluster names, the KV source). Both travel as one TOML document in
//! the plugin `configuration` of `envoy.yaml`.

use serde::Deserialize;
use tidegate_core::{Config, ConfigError};

/// `[envoy]`: where the filter's outbound calls go.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoySettings {
    /// Request header the filter sets to `fallback` when the tier routes to the fallback
    /// provider; `envoy.yaml` matches it in a route to pick the fallback cluster.
    pub route_header: String,
    /// Cluster of the Turnstile siteverify endpoint (`[turnstile].siteverify_url`).
    pub turnstile_cluster: String,
    /// Cluster of Chatwoot (`[handoff].chatwoot_url`).
    pub chatwoot_cluster: String,
    /// Cluster of the tier alert webhook (`[tiers].alert_webhook`).
    pub alert_cluster: String,
    /// Timeout of siteverify, handoff and alert calls (ms).
    pub call_timeout_ms: u64,
    /// Path prefixes the filter forwards untouched: no limit, no header but `:path` read, no
    /// decision headers. The chat endpoints, `/healthz` and the `[[limits.api]]` paths are
    /// matched first; any other path not listed here gets a 404 problem, as from the native
    /// gateway. Useful when the filter sits in front of more than the chat origin.
    /// `envoy/gen-config` also routes these prefixes past the filter, so Envoy does not enter
    /// the VM for them at all.
    pub pass_through: Vec<String>,
    /// `[envoy.kv]`: the flag and knowledge-base source.
    pub kv: KvSource,
}

impl Default for EnvoySettings {
    fn default() -> Self {
        EnvoySettings {
            route_header: "x-tidegate-route".into(),
            turnstile_cluster: "turnstile".into(),
            chatwoot_cluster: "chatwoot".into(),
            alert_cluster: "alert".into(),
            call_timeout_ms: 5_000,
            pass_through: Vec::new(),
            kv: KvSource::default(),
        }
    }
}

impl EnvoySettings {
    /// True when `path` (no query) is under one of the [`EnvoySettings::pass_through`]
    /// prefixes.
    pub fn passes_through(&self, path: &str) -> bool {
        self.pass_through
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }
}

/// `[envoy.kv]`: a KV source read with `GET <path with {key}>` and a bearer token. Both the
/// native gateway's admin API (`/admin/flags/{key}`) and the Cloudflare KV REST API
/// (`/client/v4/accounts/<account>/storage/kv/namespaces/<namespace>/values/{key}`) have this
/// shape: the raw value with 200, 404 when the key is absent.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KvSource {
    /// Envoy cluster of the source; empty disables pulling (flags stay unset).
    pub cluster: String,
    /// `:authority` sent to the source.
    pub authority: String,
    /// Path template; `{key}` is replaced by the percent-encoded key.
    pub path: String,
    /// Bearer token (empty: no `Authorization` header).
    pub token: String,
    /// How often the flags are pulled (ms).
    pub refresh_ms: u64,
    /// Give up on one pull after this long (ms); the last good value is kept.
    pub timeout_ms: u64,
    /// Key of the FAQ artefact.
    pub faq_key: String,
}

impl Default for KvSource {
    fn default() -> Self {
        KvSource {
            cluster: String::new(),
            authority: "kv".into(),
            path: "/admin/flags/{key}".into(),
            token: String::new(),
            refresh_ms: 5_000,
            timeout_ms: 2_000,
            faq_key: "faq_kb".into(),
        }
    }
}

impl KvSource {
    /// The request path for `key`.
    pub fn path_for(&self, key: &str) -> String {
        self.path.replace("{key}", &percent_encode(key))
    }
}

/// Everything the plugin configuration holds.
#[derive(Clone, Debug)]
pub struct FilterConfig {
    /// The core's config.
    pub core: Config,
    /// The `[envoy]` table.
    pub envoy: EnvoySettings,
}

/// Parses the plugin configuration. Errors name the field, like the native gateway's.
pub fn parse(text: &str) -> Result<FilterConfig, ConfigError> {
    let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        field: "configuration".into(),
        message: e.message().to_owned(),
    })?;
    let envoy = match doc.remove("envoy") {
        Some(v) => v.try_into::<EnvoySettings>().map_err(|e| ConfigError {
            field: "envoy".into(),
            message: e.message().to_owned(),
        })?,
        None => EnvoySettings::default(),
    };
    let rest = toml::to_string(&doc).map_err(|e| ConfigError {
        field: "configuration".into(),
        message: e.to_string(),
    })?;
    let core = Config::parse_toml(&rest)?;
    core.validate_without_admin_api()?;
    let e = &envoy;
    let check = |ok: bool, field: &str, message: &str| {
        if ok {
            Ok(())
        } else {
            Err(ConfigError {
                field: field.into(),
                message: message.into(),
            })
        }
    };
    check(
        !e.route_header.is_empty(),
        "envoy.route_header",
        "must not be empty",
    )?;
    check(
        e.pass_through.iter().all(|p| p.starts_with('/')),
        "envoy.pass_through",
        "every prefix must start with `/`",
    )?;
    check(
        (100..=60_000).contains(&e.call_timeout_ms),
        "envoy.call_timeout_ms",
        "must be between 100 and 60000",
    )?;
    check(
        (100..=3_600_000).contains(&e.kv.refresh_ms),
        "envoy.kv.refresh_ms",
        "must be between 100 and 3600000",
    )?;
    check(
        (100..=60_000).contains(&e.kv.timeout_ms),
        "envoy.kv.timeout_ms",
        "must be between 100 and 60000",
    )?;
    check(
        e.kv.cluster.is_empty() || e.kv.path.contains("{key}"),
        "envoy.kv.path",
        "must contain `{key}`",
    )?;
    check(
        !core.turnstile.enabled || split_url(&core.turnstile.siteverify_url).is_some(),
        "turnstile.siteverify_url",
        "must be an http(s) URL",
    )?;
    Ok(FilterConfig { core, envoy })
}

/// Splits `http(s)://authority/path?query` into the `:authority` and `:path` of a
/// `dispatch_http_call` (the cluster is chosen by the caller).
pub fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    Some((authority.to_owned(), path.to_owned()))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn core_config_and_envoy_table_parse_together() {
        let c = parse(
            "[limits.user]\nlimit = 4\nwindow_secs = 2\n\n[envoy]\nchatwoot_cluster = \"cw\"\n\
             [envoy.kv]\ncluster = \"flags\"\nrefresh_ms = 1000\n",
        )
        .unwrap();
        assert_eq!(c.core.limits.user.limit, 4);
        assert_eq!(c.envoy.chatwoot_cluster, "cw");
        assert_eq!(c.envoy.kv.cluster, "flags");
        assert_eq!(c.envoy.kv.refresh_ms, 1000);
        assert_eq!(c.envoy.turnstile_cluster, "turnstile");
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("[envoy]\nchatwot_cluster = \"x\"\n").unwrap_err();
        assert_eq!(e.field, "envoy");
        assert!(e.message.contains("chatwot_cluster"), "{e}");
        let e = parse("[envoy.kv]\nrefresh_ms = 5\n").unwrap_err();
        assert_eq!(e.field, "envoy.kv.refresh_ms");
        let e = parse("[limits.user]\nlimit = 3\nwindow_secs = 0\n").unwrap_err();
        assert_eq!(e.field, "limits.user.window_secs");
        assert!(parse("not toml [").is_err());
        let e = parse("[envoy.kv]\ncluster = \"kv\"\npath = \"/flags\"\n").unwrap_err();
        assert_eq!(e.field, "envoy.kv.path");
        let e = parse("[envoy]\npass_through = [\"static/\"]\n").unwrap_err();
        assert_eq!(e.field, "envoy.pass_through");
    }

    #[test]
    fn pass_through_matches_prefixes_only() {
        let c = parse("[envoy]\npass_through = [\"/static/\", \"/status\"]\n").unwrap();
        assert!(c.envoy.passes_through("/static/app.js"));
        assert!(c.envoy.passes_through("/status"));
        assert!(!c.envoy.passes_through("/v1/nothing-here"));
        assert!(!c.envoy.passes_through("/stat"));
        assert!(!parse("").unwrap().envoy.passes_through("/status"));
    }

    #[test]
    fn empty_configuration_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.core.limits.user.limit, 10);
        assert!(c.envoy.kv.cluster.is_empty());
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("https://challenges.cloudflare.com/turnstile/v0/siteverify"),
            Some((
                "challenges.cloudflare.com".into(),
                "/turnstile/v0/siteverify".into()
            ))
        );
        assert_eq!(
            split_url("http://127.0.0.1:27081"),
            Some(("127.0.0.1:27081".into(), "/".into()))
        );
        assert_eq!(split_url("ftp://x/y"), None);
        assert_eq!(split_url("http:///y"), None);
    }

    #[test]
    fn kv_paths_encode_the_key() {
        let kv = KvSource {
            path: "/client/v4/accounts/a/storage/kv/namespaces/n/values/{key}".into(),
            ..KvSource::default()
        };
        assert_eq!(
            kv.path_for("tier"),
            "/client/v4/accounts/a/storage/kv/namespaces/n/values/tier"
        );
        assert_eq!(
            KvSource::default().path_for("a b/c"),
            "/admin/flags/a%20b%2Fc"
        );
    }
}
