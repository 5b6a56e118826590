//! Decisions are data: every outcome has a reason with a stable name, used in headers,
//! metrics and logs, and every refusal renders as an `application/problem+json` body.

use serde::Serialize;

/// Why the gateway answered the way it did. The `as_str` names are stable API.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Passed to the origin.
    Forwarded,
    /// Answered from the FAQ knowledge base without calling the origin.
    FaqHit,
    /// Per-IP limit exceeded.
    IpLimited,
    /// Per-user limit exceeded.
    UserLimited,
    /// Global origin cap exceeded and its wait queue full.
    OriginCapped,
    /// A business API's limit exceeded and its wait queue full.
    ApiCapped,
    /// The monthly token budget is spent and the FAQ had no answer.
    BudgetSpent,
    /// The bot challenge failed or was missing.
    ChallengeFailed,
    /// The challenge service could not be reached and the config fails closed.
    ChallengeUnavailable,
    /// Template reply and human handoff: the origin could not answer.
    Handoff,
    /// The conversation belongs to a human agent; the bot stays silent.
    HandedOff,
    /// The origin itself said to slow down.
    OriginBusy,
    /// The request body was not acceptable.
    BadRequest,
    /// The request body was larger than allowed.
    TooLarge,
    /// The user id was missing or its signature did not verify.
    BadIdentity,
    /// A counter store failed and the config fails closed.
    StoreUnavailable,
    /// The gateway's own configuration or platform bindings are broken (the log says why).
    Misconfigured,
}

impl Reason {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Forwarded => "forwarded",
            Reason::FaqHit => "faq_hit",
            Reason::IpLimited => "ip_limited",
            Reason::UserLimited => "user_limited",
            Reason::OriginCapped => "origin_capped",
            Reason::ApiCapped => "api_capped",
            Reason::BudgetSpent => "budget_spent",
            Reason::ChallengeFailed => "challenge_failed",
            Reason::ChallengeUnavailable => "challenge_unavailable",
            Reason::Handoff => "handoff",
            Reason::HandedOff => "handed_off",
            Reason::OriginBusy => "origin_busy",
            Reason::BadRequest => "bad_request",
            Reason::TooLarge => "too_large",
            Reason::BadIdentity => "bad_identity",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::Misconfigured => "misconfigured",
        }
    }

    /// Every reason, for metrics that list them all.
    pub const ALL: [Reason; 17] = [
        Reason::Forwarded,
        Reason::FaqHit,
        Reason::IpLimited,
        Reason::UserLimited,
        Reason::OriginCapped,
        Reason::ApiCapped,
        Reason::BudgetSpent,
        Reason::ChallengeFailed,
        Reason::ChallengeUnavailable,
        Reason::Handoff,
        Reason::HandedOff,
        Reason::OriginBusy,
        Reason::BadRequest,
        Reason::TooLarge,
        Reason::BadIdentity,
        Reason::StoreUnavailable,
        Reason::Misconfigured,
    ];
}

/// An RFC 9457 problem document, with tidegate's extension members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A URI naming the problem type: `https://tidegate.dev/problems/<reason>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short human summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// A human sentence about this occurrence.
    pub detail: String,
    /// The stable reason name (see [`Reason::as_str`]).
    pub code: &'static str,
    /// The policy that refused, when one did (`ip`, `user`, `origin`, `budget`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Seconds until a retry can succeed, mirrored in `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// What still works for this client (e.g. `faq`, `retry`, `handoff`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub still_available: Vec<&'static str>,
}

impl Problem {
    /// A problem for `reason` with HTTP `status` and a human `detail`.
    pub fn new(reason: Reason, status: u16, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("https://tidegate.dev/problems/{}", reason.as_str()),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            code: reason.as_str(),
            policy: None,
            retry_after: None,
            still_available: Vec::new(),
        }
    }

    /// Names the policy that refused.
    pub fn with_policy(mut self, policy: &str) -> Self {
        self.policy = Some(policy.to_owned());
        self
    }

    /// Sets the retry delay in seconds (at least 1).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// Lists what still works.
    pub fn with_still_available(mut self, what: &[&'static str]) -> Self {
        self.still_available = what.to_vec();
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!(r#"{{"status":{},"code":"{}"}}"#, self.status, self.code))
    }

    /// The media type of [`Problem::to_json`].
    pub const CONTENT_TYPE: &'static str = "application/problem+json";

    /// A 400 for input the gateway could not read.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(Reason::BadRequest, 400, "Bad request", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    #[test]
    fn problem_json_has_required_members() {
        let p = Problem::new(Reason::UserLimited, 429, "Too many requests", "slow down")
            .with_policy("user")
            .with_retry_after(0);
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["status"], 429);
        assert_eq!(v["code"], "user_limited");
        assert_eq!(v["policy"], "user");
        assert_eq!(v["retry_after"], 1);
        assert!(v.get("still_available").is_none());
    }
}

/// An outbound HTTP call the host must make on the core's behalf (alert, handoff).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// `POST`, `PUT`, ...
    pub method: &'static str,
    /// Full URL.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: String,
}
