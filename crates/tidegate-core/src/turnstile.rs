//! The bot challenge: Turnstile server-side verification as data.
//!
//! The core builds the siteverify request and judges the reply; the host sends it. A pass is
//! remembered per user for `pass_ttl_secs`, and the idempotency key is derived from the token,
//! so a retry after an origin error is neither re-verified nor rejected as a duplicate.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{FailMode, TurnstileConfig};
use crate::decision::{Problem, Reason};
use crate::store::{self, CounterStore, StoreError};
use crate::time::UnixMs;

/// Longest token Turnstile issues.
pub const MAX_TOKEN_LEN: usize = 2048;

/// A siteverify call for the host to make (`POST`, form-encoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteverifyRequest {
    /// Endpoint.
    pub url: String,
    /// `application/x-www-form-urlencoded` body.
    pub body: String,
}

impl SiteverifyRequest {
    /// The content type of [`SiteverifyRequest::body`].
    pub const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";
}

/// What to do about the challenge for one request, before any network call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precheck {
    /// No challenge configured, or a pass is remembered for this user.
    Pass,
    /// Call siteverify with this request, then [`judge`] the reply.
    Verify(SiteverifyRequest),
    /// Refuse without calling anything (missing or malformed token).
    Fail(Vec<String>),
}

/// The verdict on a request's challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Human enough.
    Pass,
    /// Failed, with Turnstile's error codes or ours (`hostname-mismatch`, `action-mismatch`).
    Fail(Vec<String>),
}

/// Decides what the challenge needs for a request carrying `token` from `remote_ip`, sent by
/// `subject` (see [`crate::gateway::Client::subject`]), who `remembered` (see
/// [`is_remembered`]) a pass or not.
pub fn precheck(
    cfg: &TurnstileConfig,
    token: Option<&str>,
    remote_ip: Option<&str>,
    subject: &str,
    remembered: bool,
) -> Precheck {
    if !cfg.enabled || remembered {
        return Precheck::Pass;
    }
    let token = token.map(str::trim).unwrap_or("");
    if token.is_empty() {
        return Precheck::Fail(vec!["missing-input-response".into()]);
    }
    if token.len() > MAX_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Precheck::Fail(vec!["invalid-input-response".into()]);
    }
    let mut body = format!(
        "secret={}&response={}&idempotency_key={}",
        form_encode(&cfg.secret),
        form_encode(token),
        idempotency_key(token, subject)
    );
    if let Some(ip) = remote_ip {
        body.push_str("&remoteip=");
        body.push_str(&form_encode(ip));
    }
    Precheck::Verify(SiteverifyRequest {
        url: cfg.siteverify_url.clone(),
        body,
    })
}

/// A UUID-formatted key derived from the token and who sent it: the same client retrying the
/// same token gets the same key, so Turnstile replays its verdict instead of answering
/// `timeout-or-duplicate`; anyone else presenting that token gets another key, so the token
/// stays single-use across clients.
pub fn idempotency_key(token: &str, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(subject.as_bytes());
    h.update([0u8]);
    h.update(token.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Deserialize)]
struct Reply {
    success: bool,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

/// Judges siteverify's reply (`status` and body), or `None` for a transport failure. Reports
/// an unreachable or broken service per `on_unavailable`.
pub fn judge(cfg: &TurnstileConfig, reply: Option<(u16, &[u8])>) -> Verdict {
    let unavailable = |why: &str| match cfg.on_unavailable {
        FailMode::Open => Verdict::Pass,
        FailMode::Closed => Verdict::Fail(vec![why.to_owned()]),
    };
    let Some((status, body)) = reply else {
        return unavailable("siteverify-unreachable");
    };
    let parsed: Result<Reply, _> = serde_json::from_slice(body);
    let Ok(r) = parsed else {
        return unavailable("siteverify-bad-reply");
    };
    if !r.success {
        if r.error_codes.iter().any(|c| c == "internal-error") || status >= 500 {
            return unavailable("internal-error");
        }
        let codes = if r.error_codes.is_empty() {
            vec!["unknown-error".into()]
        } else {
            r.error_codes
        };
        return Verdict::Fail(codes);
    }
    let mut codes = Vec::new();
    if !cfg.expected_hostname.is_empty() && r.hostname.as_deref() != Some(&cfg.expected_hostname) {
        codes.push("hostname-mismatch".to_owned());
    }
    if !cfg.expected_action.is_empty() && r.action.as_deref() != Some(&cfg.expected_action) {
        codes.push("action-mismatch".to_owned());
    }
    if codes.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(codes)
    }
}

fn pass_key(subject: &str) -> String {
    format!("challenge:{subject}")
}

/// True when `subject` (a user id, else the client IP) passed within the pass lifetime.
pub fn is_remembered<S: CounterStore + ?Sized>(
    store: &S,
    subject: &str,
    now: UnixMs,
) -> Result<bool, StoreError> {
    Ok(store
        .load(&pass_key(subject))?
        .is_some_and(|(until, _)| until > now.0))
}

/// Remembers a pass for `subject` until `now + pass_ttl_secs`.
pub fn remember<S: CounterStore + ?Sized>(
    store: &S,
    subject: &str,
    now: UnixMs,
    cfg: &TurnstileConfig,
) -> Result<(), StoreError> {
    let until = now.plus_ms(cfg.pass_ttl_secs.saturating_mul(1000)).0;
    store::update(store, &pass_key(subject), |old| {
        (Some(old.unwrap_or(0).max(until)), ())
    })
}

/// The refusal a client gets when its challenge fails and the FAQ had nothing: a code, a human
/// sentence and what still works. Never a bare 403.
pub fn fallback_problem(codes: &[String]) -> Problem {
    let unavailable = codes
        .iter()
        .any(|c| c.starts_with("siteverify") || c == "internal-error");
    let (reason, detail) = if unavailable {
        (
            Reason::ChallengeUnavailable,
            "We could not check that you are human right now. Common questions are still \
             answered; please retry in a moment, or ask for a person and we will hand you over.",
        )
    } else {
        (
            Reason::ChallengeFailed,
            "We could not confirm that you are human. Please complete the check again and \
             resend your message. Common questions are still answered, and you can ask for a \
             person at any time.",
        )
    };
    let mut p = Problem::new(reason, 403, "Challenge required", detail)
        .with_policy("turnstile")
        .with_still_available(&["faq", "retry", "handoff"]);
    p.detail
        .push_str(&format!(" (checks: {})", codes.join(", ")));
    p
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn cfg() -> TurnstileConfig {
        TurnstileConfig {
            enabled: true,
            secret: "s3cret".into(),
            expected_hostname: "shop.example".into(),
            expected_action: "chat".into(),
            ..TurnstileConfig::default()
        }
    }

    #[test]
    fn precheck_builds_a_form_with_a_stable_idempotency_key() {
        let Precheck::Verify(req) =
            precheck(&cfg(), Some("tok+en/="), Some("1.2.3.4"), "u:a", false)
        else {
            panic!("expected a siteverify call")
        };
        assert!(req
            .body
            .starts_with("secret=s3cret&response=tok%2Ben%2F%3D&idempotency_key="));
        assert!(req.body.ends_with("&remoteip=1.2.3.4"));
        assert_eq!(idempotency_key("a", "u:1"), idempotency_key("a", "u:1"));
        assert_ne!(idempotency_key("a", "u:1"), idempotency_key("b", "u:1"));
        assert_eq!(idempotency_key("a", "u:1").len(), 36);
        assert_eq!(
            precheck(&cfg(), None, None, "u:a", false),
            Precheck::Fail(vec!["missing-input-response".into()])
        );
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            precheck(&cfg(), Some(&long), None, "u:a", false),
            Precheck::Fail(_)
        ));
        assert_eq!(precheck(&cfg(), None, None, "u:a", true), Precheck::Pass);
    }

    #[test]
    fn regression_one_token_is_not_a_pass_for_every_user() {
        // Found by testing: with a key derived from the token alone, siteverify replayed one
        // human's success for any number of other users presenting that token.
        assert_ne!(
            idempotency_key("tok", "u:human"),
            idempotency_key("tok", "u:bot")
        );
        assert_ne!(
            idempotency_key("tok", "ip:1.2.3.4"),
            idempotency_key("tok", "ip:1.2.3.5")
        );
    }

    #[test]
    fn judge_checks_hostname_and_action() {
        let ok = br#"{"success":true,"hostname":"shop.example","action":"chat","error-codes":[]}"#;
        assert_eq!(judge(&cfg(), Some((200, ok))), Verdict::Pass);
        let other = br#"{"success":true,"hostname":"evil.example","action":"login"}"#;
        assert_eq!(
            judge(&cfg(), Some((200, other))),
            Verdict::Fail(vec!["hostname-mismatch".into(), "action-mismatch".into()])
        );
        let dup = br#"{"success":false,"error-codes":["timeout-or-duplicate"]}"#;
        assert_eq!(
            judge(&cfg(), Some((200, dup))),
            Verdict::Fail(vec!["timeout-or-duplicate".into()])
        );
    }

    #[test]
    fn unavailable_service_follows_the_fail_mode() {
        let closed = cfg();
        assert!(matches!(judge(&closed, None), Verdict::Fail(_)));
        let ie = br#"{"success":false,"error-codes":["internal-error"]}"#;
        assert!(matches!(judge(&closed, Some((200, ie))), Verdict::Fail(_)));
        let open = TurnstileConfig {
            on_unavailable: FailMode::Open,
            ..cfg()
        };
        assert_eq!(judge(&open, None), Verdict::Pass);
        assert_eq!(judge(&open, Some((502, b"<html>"))), Verdict::Pass);
    }

    #[test]
    fn regression_retry_after_origin_error_is_not_a_duplicate() {
        // Fault class: a token retried after a 502 is rejected as timeout-or-duplicate. The pass
        // is remembered, so the retry never reaches siteverify.
        let s = MemoryStore::new();
        let c = cfg();
        let now = UnixMs(1_000_000);
        assert!(!is_remembered(&s, "u1", now).unwrap());
        remember(&s, "u1", now, &c).unwrap();
        assert!(is_remembered(&s, "u1", now.plus_ms(60_000)).unwrap());
        assert_eq!(
            precheck(&c, Some("same-token"), None, "u:u1", true),
            Precheck::Pass
        );
        assert!(
            !is_remembered(&s, "u1", now.plus_ms(1_800_001)).unwrap(),
            "pass expires"
        );
    }

    #[test]
    fn fallback_is_never_bare() {
        let p = fallback_problem(&["invalid-input-response".into()]);
        assert_eq!(p.status, 403);
        assert_eq!(p.code, "challenge_failed");
        assert_eq!(p.still_available, vec!["faq", "retry", "handoff"]);
        assert_eq!(
            fallback_problem(&["siteverify-unreachable".into()]).code,
            "challenge_unavailable"
        );
    }
}
