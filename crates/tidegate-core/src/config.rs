//! Configuration (TOML), parsed once into checked types.
//!
//! Every section has defaults taken from the brief (the case study's settings), so an empty
//! file is a valid config. Unknown fields are errors, and every error names the field.

use serde::Deserialize;

use crate::faq::FaqConfig;
use crate::ratelimit::Quota;
use crate::reply::ValidationConfig;
use crate::request::Shape;
use crate::tier::TierConfig;

/// A config error that names the field and says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `limits.user.limit` (empty when the document
    /// itself is unreadable).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Whether this is a production deployment (stricter checks) or development.
#[derive(Copy, Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local runs, drills and tests: public test secrets allowed.
    #[default]
    Development,
    /// Refuses to start with public Turnstile test secrets or without an admin token.
    Production,
}

/// What to do when a dependency (counter store, challenge service) fails.
#[derive(Copy, Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Let the request through without the policy.
    #[default]
    Open,
    /// Refuse the request with a 503 that says why.
    Closed,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `development` (default) or `production`.
    pub mode: Mode,
    /// `[client]`: who is asking.
    pub client: ClientConfig,
    /// `[origin]`: the LLM app behind the gateway.
    pub origin: OriginConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[budget]`.
    pub budget: BudgetConfig,
    /// `[turnstile]`.
    pub turnstile: TurnstileConfig,
    /// `[faq]`.
    pub faq: FaqConfig,
    /// `[tiers]`.
    pub tiers: TierConfig,
    /// `[validation]`.
    pub validation: ValidationConfig,
    /// `[handoff]`.
    pub handoff: HandoffConfig,
    /// `[server]`: settings of the native gateway only (the Worker and Envoy ignore it).
    pub server: ServerConfig,
}

/// `[server]` (native gateway only).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: String,
    /// Bearer token of the admin API (`/admin/*`). Empty: a random one is made at start and
    /// written to `<data_dir>/admin-token`.
    pub admin_token: String,
    /// Where the embedded KV store and the admin token live.
    pub data_dir: String,
    /// Seed the demo knowledge base and promo codes into KV when they are absent (always on
    /// when `tidegate serve` runs without a config file).
    pub demo_data: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_token: String::new(),
            data_dir: ".tidegate".into(),
            demo_data: false,
        }
    }
}

/// `[client]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Header carrying the user id.
    pub user_header: String,
    /// Header carrying the conversation id (Dify bodies carry their own).
    pub conversation_header: String,
    /// Peers (IPs or CIDR ranges) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// When set, user ids must be `<id>.<hex HMAC-SHA256(secret, id)>`.
    pub user_signing_secret: Option<String>,
    /// Refuse chat requests without a user id.
    pub require_user: bool,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Per-IP limits count an IPv6 client by its network of this many bits (1-128).
    pub ipv6_prefix: u8,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            user_header: "x-user-id".into(),
            conversation_header: "x-conversation-id".into(),
            trusted_proxies: Vec::new(),
            user_signing_secret: None,
            require_user: false,
            max_body_bytes: 64 * 1024,
            ipv6_prefix: 64,
        }
    }
}

/// `[origin]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// Base URL of the origin (`https://api.openai.com`, `http://dify.internal`). Empty: the
    /// native gateway starts its built-in stand-in origin.
    pub url: String,
    /// Bearer key sent to the origin (empty: the client's `Authorization` is passed on).
    pub api_key: String,
    /// Model used in the normal tier (OpenAI shape; rewrites the request's model).
    pub model: String,
    /// Give up on the origin after this long without a first byte (ms).
    pub first_byte_timeout_ms: u64,
    /// Give up on a reply that takes longer than this in total (ms).
    pub total_timeout_ms: u64,
    /// Most tokens a reply may have (OpenAI shape): a request's `max_tokens` or
    /// `max_completion_tokens` above it is lowered to it, and a request naming neither gets
    /// `max_output_tokens_field` set to it. 0: the client decides.
    pub max_output_tokens: u64,
    /// The field added when a request names no cap: `max_tokens` (understood by every
    /// OpenAI-compatible server) or `max_completion_tokens` (OpenAI's reasoning models refuse
    /// `max_tokens`).
    pub max_output_tokens_field: String,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            url: String::new(),
            api_key: String::new(),
            model: "gpt-4o".into(),
            first_byte_timeout_ms: 15_000,
            total_timeout_ms: 120_000,
            max_output_tokens: 1024,
            max_output_tokens_field: "max_tokens".into(),
        }
    }
}

/// A limit as written in the config.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Requests per window; 0 disables the limit.
    pub limit: u32,
    /// Window length in seconds.
    #[serde(default = "sixty")]
    pub window_secs: u64,
    /// Longest queue wait before refusing, in ms (0: refuse at once).
    #[serde(default)]
    pub max_wait_ms: u64,
}

fn sixty() -> u64 {
    60
}

impl LimitSpec {
    /// The quota for `policy`, or `None` when disabled.
    pub fn quota(&self, policy: &str) -> Option<Quota> {
        (self.limit > 0).then(|| Quota {
            policy: policy.to_owned(),
            limit: self.limit,
            window_ms: self.window_secs.saturating_mul(1000),
            max_wait_ms: self.max_wait_ms,
        })
    }

    fn check(&self, field: &str) -> Result<(), ConfigError> {
        if self.limit > 0 && self.window_secs == 0 {
            return Err(ConfigError::new(
                format!("{field}.window_secs"),
                "must be at least 1",
            ));
        }
        if self.window_secs > 86_400 * 31 {
            return Err(ConfigError::new(
                format!("{field}.window_secs"),
                "must be at most 31 days",
            ));
        }
        if self.max_wait_ms > 60_000 {
            return Err(ConfigError::new(
                format!("{field}.max_wait_ms"),
                "must be at most 60000: longer waits belong in a real queue",
            ));
        }
        Ok(())
    }
}

/// A business API path with its own limit and wait queue.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiLimit {
    /// Policy name suffix: the policy is `api-<name>`.
    pub name: String,
    /// Requests whose path starts with this are counted.
    pub path_prefix: String,
    /// Where to forward them (native gateway).
    #[serde(default)]
    pub upstream: String,
    /// The limit.
    #[serde(flatten)]
    pub spec: LimitSpec,
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Per client IP.
    pub ip: LimitSpec,
    /// Per user id.
    pub user: LimitSpec,
    /// Global cap on requests reaching the origin.
    pub origin: LimitSpec,
    /// Business APIs.
    pub api: Vec<ApiLimit>,
    /// On a counter-store failure: `open` (skip the limit) or `closed` (503).
    pub on_store_error: FailMode,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            ip: LimitSpec {
                limit: 30,
                window_secs: 60,
                max_wait_ms: 0,
            },
            user: LimitSpec {
                limit: 10,
                window_secs: 60,
                max_wait_ms: 0,
            },
            origin: LimitSpec {
                limit: 300,
                window_secs: 1,
                max_wait_ms: 2_000,
            },
            api: vec![ApiLimit {
                name: "orders".into(),
                path_prefix: "/api/orders".into(),
                upstream: String::new(),
                spec: LimitSpec {
                    limit: 200,
                    window_secs: 1,
                    max_wait_ms: 500,
                },
            }],
            on_store_error: FailMode::Open,
        }
    }
}

/// `[budget]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// LLM tokens per UTC month; 0 disables the budget.
    pub monthly_tokens: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            monthly_tokens: 200_000_000,
        }
    }
}

/// `[turnstile]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TurnstileConfig {
    /// Require a challenge pass before the origin is called.
    pub enabled: bool,
    /// The siteverify secret.
    pub secret: String,
    /// The siteverify endpoint.
    pub siteverify_url: String,
    /// Expected `hostname` in the verdict (empty: not checked).
    pub expected_hostname: String,
    /// Expected `action` in the verdict (empty: not checked).
    pub expected_action: String,
    /// How long a pass is remembered for the user (seconds).
    pub pass_ttl_secs: u64,
    /// Request header carrying the token.
    pub token_header: String,
    /// When siteverify cannot be reached: `open` (let through) or `closed` (challenge fails).
    pub on_unavailable: FailMode,
}

impl Default for TurnstileConfig {
    fn default() -> Self {
        TurnstileConfig {
            enabled: false,
            secret: String::new(),
            siteverify_url: "https://challenges.cloudflare.com/turnstile/v0/siteverify".into(),
            expected_hostname: String::new(),
            expected_action: String::new(),
            pass_ttl_secs: 1800,
            token_header: "cf-turnstile-response".into(),
            on_unavailable: FailMode::Closed,
        }
    }
}

/// `[handoff]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// The template reply sent when the bot cannot answer and a human takes over.
    pub template: String,
    /// Same in Chinese, used when the question is mostly CJK.
    pub template_zh: String,
    /// The reply when nobody could be told (no conversation id, or not a Chatwoot
    /// conversation number while Chatwoot is configured): it must not promise a human.
    pub unattended: String,
    /// Same in Chinese.
    pub unattended_zh: String,
    /// Phrases by which the origin says it does not know (case-insensitive).
    pub dont_know_phrases: Vec<String>,
    /// Chatwoot base URL (empty: no Chatwoot call, the handoff is only marked).
    pub chatwoot_url: String,
    /// Chatwoot account id.
    pub chatwoot_account: u64,
    /// Chatwoot API access token (agent bot).
    pub chatwoot_token: String,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            template: "Sorry, I can't answer that reliably right now. A member of our support \
                       team has been notified and will reply in this conversation."
                .into(),
            template_zh:
                "抱歉，我暂时无法准确回答这个问题。已通知人工客服，稍后会在此对话中回复您。".into(),
            unattended: "Sorry, I can't answer that reliably right now. Please try again in a \
                         moment, or contact our support team."
                .into(),
            unattended_zh: "抱歉，我暂时无法准确回答这个问题。请稍后再试，或联系人工客服。".into(),
            dont_know_phrases: vec![
                "I don't know".into(),
                "I do not know".into(),
                "I'm not sure".into(),
                "我不知道".into(),
                "无法回答".into(),
            ],
            chatwoot_url: String::new(),
            chatwoot_account: 1,
            chatwoot_token: String::new(),
        }
    }
}

/// Public Turnstile test secrets: they accept or refuse anything, so production refuses them.
pub const TURNSTILE_TEST_SECRETS: [&str; 3] = [
    "1x0000000000000000000000000000000AA",
    "2x0000000000000000000000000000000AA",
    "3x0000000000000000000000000000000AA",
];

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg = Config::parse_toml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses without [`Config::validate`] (for hosts that lay secrets over the config
    /// first); errors name the field as [`Config::from_toml`]'s do.
    pub fn parse_toml(text: &str) -> Result<Config, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| toml_error(text, e))
    }

    /// Checks what serde cannot, for the native gateway (which serves the admin API).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(true)
    }

    /// [`Config::validate`] for a host without the admin API (the Worker, the Envoy filter):
    /// `[server]` is not used there, so production mode does not ask for an admin token.
    pub fn validate_without_admin_api(&self) -> Result<(), ConfigError> {
        self.check(false)
    }

    fn check(&self, admin_api: bool) -> Result<(), ConfigError> {
        let c = &self.client;
        if c.user_header.trim().is_empty() || !is_token(&c.user_header) {
            return Err(ConfigError::new(
                "client.user_header",
                "must be a valid header name",
            ));
        }
        if !is_token(&c.conversation_header) {
            return Err(ConfigError::new(
                "client.conversation_header",
                "must be a valid header name",
            ));
        }
        for (i, p) in c.trusted_proxies.iter().enumerate() {
            crate::identity::Cidr::parse(p).map_err(|e| {
                ConfigError::new(
                    format!("client.trusted_proxies[{i}]"),
                    format!("{p:?}: {e}"),
                )
            })?;
        }
        if let Some(s) = &c.user_signing_secret {
            if s.len() < 16 {
                return Err(ConfigError::new(
                    "client.user_signing_secret",
                    "must be at least 16 characters",
                ));
            }
        }
        if c.ipv6_prefix == 0 || c.ipv6_prefix > 128 {
            return Err(ConfigError::new(
                "client.ipv6_prefix",
                "must be 1-128 (64: one subscriber's network)",
            ));
        }
        if c.max_body_bytes < 256 || c.max_body_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "client.max_body_bytes",
                "must be between 256 and 16777216",
            ));
        }
        let o = &self.origin;
        if !(o.url.is_empty() || o.url.starts_with("http://") || o.url.starts_with("https://")) {
            return Err(ConfigError::new(
                "origin.url",
                "must start with http:// or https://",
            ));
        }
        if o.first_byte_timeout_ms == 0 || o.total_timeout_ms < o.first_byte_timeout_ms {
            return Err(ConfigError::new(
                "origin.total_timeout_ms",
                "timeouts must be positive and total_timeout_ms >= first_byte_timeout_ms",
            ));
        }
        if o.max_output_tokens > 1_000_000 {
            return Err(ConfigError::new(
                "origin.max_output_tokens",
                "must be at most 1000000 (0: no cap)",
            ));
        }
        if !crate::request::OUTPUT_TOKEN_FIELDS.contains(&o.max_output_tokens_field.as_str()) {
            return Err(ConfigError::new(
                "origin.max_output_tokens_field",
                "must be \"max_tokens\" or \"max_completion_tokens\"",
            ));
        }
        let token = &self.server.admin_token;
        if token.trim() != token {
            return Err(ConfigError::new(
                "server.admin_token",
                "has leading or trailing whitespace, which no client can send in a header",
            ));
        }
        if admin_api && self.mode == Mode::Production && token.trim().len() < 16 {
            return Err(ConfigError::new(
                "server.admin_token",
                "production mode needs an admin token of at least 16 characters",
            ));
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "server.listen",
                "must be an address like 127.0.0.1:8080",
            ));
        }
        let l = &self.limits;
        l.ip.check("limits.ip")?;
        l.user.check("limits.user")?;
        l.origin.check("limits.origin")?;
        for (i, a) in l.api.iter().enumerate() {
            let f = format!("limits.api[{i}]");
            a.spec.check(&f)?;
            if a.name.is_empty()
                || !a
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(ConfigError::new(
                    format!("{f}.name"),
                    "must be [A-Za-z0-9-]+",
                ));
            }
            if !a.path_prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{f}.path_prefix"),
                    "must start with /",
                ));
            }
            if Shape::from_path(&a.path_prefix).is_some() {
                return Err(ConfigError::new(
                    format!("{f}.path_prefix"),
                    "must not be a chat endpoint",
                ));
            }
        }
        let t = &self.turnstile;
        if t.enabled {
            if t.secret.is_empty() {
                return Err(ConfigError::new(
                    "turnstile.secret",
                    "is required when enabled",
                ));
            }
            if t.secret.trim() != t.secret {
                return Err(ConfigError::new(
                    "turnstile.secret",
                    "has leading or trailing whitespace, which Turnstile would refuse",
                ));
            }
            if self.mode == Mode::Production && TURNSTILE_TEST_SECRETS.contains(&t.secret.trim()) {
                return Err(ConfigError::new(
                    "turnstile.secret",
                    "is a public Turnstile test secret, which accepts or refuses everything; \
                     production mode refuses to start with it",
                ));
            }
            if !t.siteverify_url.starts_with("http") {
                return Err(ConfigError::new(
                    "turnstile.siteverify_url",
                    "must be an http(s) URL",
                ));
            }
            if !is_token(&t.token_header) {
                return Err(ConfigError::new(
                    "turnstile.token_header",
                    "must be a header name",
                ));
            }
            if t.pass_ttl_secs == 0 || t.pass_ttl_secs > 86_400 {
                return Err(ConfigError::new(
                    "turnstile.pass_ttl_secs",
                    "must be between 1 and 86400",
                ));
            }
        }
        self.faq
            .validate()
            .map_err(|(f, m)| ConfigError::new(format!("faq.{f}"), m))?;
        self.tiers
            .validate()
            .map_err(|(f, m)| ConfigError::new(format!("tiers.{f}"), m))?;
        self.validation
            .validate()
            .map_err(|(f, m)| ConfigError::new(format!("validation.{f}"), m))?;
        let h = &self.handoff;
        if h.template.trim().is_empty() {
            return Err(ConfigError::new("handoff.template", "must not be empty"));
        }
        if h.unattended.trim().is_empty() {
            return Err(ConfigError::new("handoff.unattended", "must not be empty"));
        }
        if !h.chatwoot_url.is_empty() {
            if !h.chatwoot_url.starts_with("http") {
                return Err(ConfigError::new(
                    "handoff.chatwoot_url",
                    "must be an http(s) URL",
                ));
            }
            if h.chatwoot_token.is_empty() {
                return Err(ConfigError::new(
                    "handoff.chatwoot_token",
                    "is required when chatwoot_url is set",
                ));
            }
        }
        Ok(())
    }

    /// The per-IP quota, if enabled.
    pub fn ip_quota(&self) -> Option<Quota> {
        self.limits.ip.quota("ip")
    }

    /// The per-user quota, if enabled.
    pub fn user_quota(&self) -> Option<Quota> {
        self.limits.user.quota("user")
    }

    /// The global origin cap, if enabled.
    pub fn origin_quota(&self) -> Option<Quota> {
        self.limits.origin.quota("origin")
    }

    /// The business API limit covering `path`, if any.
    pub fn api_for(&self, path: &str) -> Option<(&ApiLimit, Option<Quota>)> {
        self.limits
            .api
            .iter()
            .find(|a| path.starts_with(&a.path_prefix))
            .map(|a| (a, a.spec.quota(&format!("api-{}", a.name))))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

fn toml_error(text: &str, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let mut message = inner.message().trim().to_owned();
    // serde_path_to_error names the table for an unknown key; name the key itself.
    let mut field = if path == "." { String::new() } else { path };
    if let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        if !field.ends_with(key) {
            field = if field.is_empty() {
                key.to_owned()
            } else {
                format!("{field}.{key}")
            };
        }
    }
    // The position, never the source line itself: a config line may hold a secret, and this
    // message can reach a log or a client.
    if let Some(span) = inner.span() {
        let before = text.get(..span.start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        message = format!("{message} (line {line}, column {column})");
    }
    ConfigError { field, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_the_case_study_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.ip_quota().unwrap().limit, 30);
        assert_eq!(c.user_quota().unwrap().limit, 10);
        assert_eq!(c.origin_quota().unwrap().limit, 300);
        assert_eq!(c.origin_quota().unwrap().window_ms, 1000);
        assert_eq!(c.api_for("/api/orders/42").unwrap().1.unwrap().limit, 200);
    }

    #[test]
    fn errors_name_the_field() {
        for (doc, field) in [
            (
                "[limits.user]\nlimit = 5\nwindow_secs = 0",
                "limits.user.window_secs",
            ),
            ("[client]\nmax_body_bytes = 1", "client.max_body_bytes"),
            (
                "[client]\ntrusted_proxies = [\"10.0.0.0/99\"]",
                "client.trusted_proxies[0]",
            ),
            ("[origin]\nurl = \"ftp://x\"", "origin.url"),
            ("[turnstile]\nenabled = true", "turnstile.secret"),
            (
                "mode = \"production\"\n[server]\nadmin_token = \"0123456789abcdefXYZ\"\n\
                 [turnstile]\nenabled = true\n\
                 secret = \"1x0000000000000000000000000000000AA\"",
                "turnstile.secret",
            ),
            (
                "[[limits.api]]\nname = \"x\"\npath_prefix = \"api\"\nlimit = 1",
                "limits.api[0].path_prefix",
            ),
        ] {
            let e = Config::from_toml(doc).unwrap_err();
            assert_eq!(e.field, field, "{doc}: {e}");
        }
    }

    #[test]
    fn regression_type_errors_name_the_dotted_field_and_never_echo_the_line() {
        // A tester's `api_key = ["sk-live-..."]` came back verbatim in a public 500.
        let e = Config::from_toml("[origin]\napi_key = [\"sk-live-TOPSECRET-123\"]").unwrap_err();
        assert_eq!(e.field, "origin.api_key", "{e}");
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        let e = Config::from_toml("[limits.user]\nlimit = \"ten\"").unwrap_err();
        assert_eq!(e.field, "limits.user.limit", "{e}");
        assert!(e.message.contains("line 2"), "{e}");
        let e = Config::from_toml("[limits.usr]\nlimit = 3").unwrap_err();
        assert_eq!(e.field, "limits.usr", "{e}");
        let e = Config::from_toml("this is not toml").unwrap_err();
        assert!(e.message.contains("line 1"), "{e}");
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let e = Config::from_toml("[limits.user]\nlimt = 5").unwrap_err();
        assert!(e.to_string().contains("limt"), "{e}");
        let e = Config::from_toml("[limits.user]\nlimit = \"ten\"").unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        let e = Config::from_toml("mode = \"prod\"").unwrap_err();
        assert!(e.to_string().contains("mode"), "{e}");
    }

    #[test]
    fn the_documented_example_is_exactly_the_defaults() {
        let doc = include_str!("../../../docs/tidegate.example.toml");
        assert_eq!(Config::from_toml(doc).unwrap(), Config::default());
    }

    #[test]
    fn regression_production_checks_are_not_bypassed_by_whitespace() {
        // Found by testing: the Turnstile test secret wrapped in spaces and an admin token of
        // 20 spaces both passed `tidegate check-config` in production mode.
        for (doc, field) in [
            (
                "mode = \"production\"\n[server]\nadmin_token = \"0123456789abcdefXYZ\"\n\
                 [turnstile]\nenabled = true\n\
                 secret = \" 1x0000000000000000000000000000000AA \"",
                "turnstile.secret",
            ),
            (
                "[turnstile]\nenabled = true\nsecret = \"0x4AAAAAAAreal\\n\"",
                "turnstile.secret",
            ),
            (
                "mode = \"production\"\n[server]\nadmin_token = \"                    \"",
                "server.admin_token",
            ),
            (
                "[server]\nadmin_token = \" 0123456789abcdefXYZ\"",
                "server.admin_token",
            ),
        ] {
            let e = Config::from_toml(doc).unwrap_err();
            assert_eq!(e.field, field, "{doc}: {e}");
        }
    }

    #[test]
    fn production_accepts_a_real_secret() {
        let doc = "mode = \"production\"\n[server]\nadmin_token = \"0123456789abcdefXYZ\"\n\
                   [turnstile]\nenabled = true\nsecret = \"0x4AAAAAAAreal\"";
        assert!(Config::from_toml(doc).is_ok());
    }
}
