//! No match: a template reply and a human handoff, exactly once per conversation.
//!
//! The first request that needs a human claims the conversation with an insert-if-absent
//! write (`handoff:<conversation>`); only that request calls Chatwoot's `toggle_status`, so
//! concurrent failures cannot hand over twice. Afterwards the bot stays silent for that
//! conversation.
//!
//! The mark is kept per client ([`scoped`]: the user id, or the IP without one) and
//! conversation id: conversation ids are client-supplied and often sequential (Chatwoot's),
//! so a mark by id alone let any client silence anyone's conversation.

use serde_json::Value;

use crate::config::HandoffConfig;
use crate::decision::{HttpCall, Problem, Reason};
use crate::store::{CounterStore, StoreError};
use crate::time::UnixMs;

fn key(conversation: &str) -> String {
    format!("handoff:{conversation}")
}

/// The conversation as the handoff functions take it: `subject` (the client's
/// [`crate::gateway::Client::subject`]) and the conversation id.
pub fn scoped(subject: &str, conversation: &str) -> String {
    format!("{subject}/{conversation}")
}

/// Claims the handoff of `conversation`. `Ok(true)`: this caller won and must notify
/// Chatwoot; `Ok(false)`: it was already handed over.
pub fn claim<S: CounterStore + ?Sized>(
    store: &S,
    conversation: &str,
    now: UnixMs,
) -> Result<bool, StoreError> {
    let k = key(conversation);
    let current = store.load(&k)?;
    if current.is_some_and(|(v, _)| v > 0) {
        return Ok(false);
    }
    store.compare_and_swap(&k, current.map(|(_, ver)| ver), now.0.max(1))
}

/// Gives a claimed conversation back to the bot: the host calls this when the handoff could
/// not be delivered (Chatwoot unreachable after retries), so the customer is not left with a
/// silent bot and no human. The next message that needs a human claims it again.
pub fn release<S: CounterStore + ?Sized>(store: &S, conversation: &str) -> Result<(), StoreError> {
    crate::store::update(store, &key(conversation), |_| (Some(0), ()))
}

/// True when a human owns `conversation`.
pub fn is_handed_off<S: CounterStore + ?Sized>(
    store: &S,
    conversation: &str,
) -> Result<bool, StoreError> {
    Ok(store.load(&key(conversation))?.is_some_and(|(v, _)| v > 0))
}

/// The Chatwoot call that hands `conversation` to a human (`toggle_status` to `open`), or
/// `None` when Chatwoot is not configured or the id is not a Chatwoot conversation number.
pub fn toggle_status_call(cfg: &HandoffConfig, conversation: &str) -> Option<HttpCall> {
    if cfg.chatwoot_url.is_empty() || !conversation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(HttpCall {
        method: "POST",
        url: format!(
            "{}/api/v1/accounts/{}/conversations/{}/toggle_status",
            cfg.chatwoot_url.trim_end_matches('/'),
            cfg.chatwoot_account,
            conversation
        ),
        headers: vec![
            ("api_access_token".into(), cfg.chatwoot_token.clone()),
            ("content-type".into(), "application/json".into()),
        ],
        body: r#"{"status":"open"}"#.into(),
    })
}

/// The template reply in the language of `question` (Chinese when most letters are CJK):
/// `[handoff].template` when a human took the conversation over, `unattended` when nobody
/// could be told.
pub fn template<'a>(cfg: &'a HandoffConfig, question: &str, handed_off: bool) -> &'a str {
    let (cjk, other) =
        question
            .chars()
            .filter(|c| c.is_alphanumeric())
            .fold((0, 0), |(a, b), c| {
                if matches!(c as u32, 0x3400..=0x9FFF | 0xF900..=0xFAFF) {
                    (a + 1, b)
                } else {
                    (a, b + 1)
                }
            });
    let (en, zh) = if handed_off {
        (&cfg.template, &cfg.template_zh)
    } else {
        (&cfg.unattended, &cfg.unattended_zh)
    };
    if cjk > other && !zh.is_empty() {
        zh
    } else {
        en
    }
}

/// The answer to a request on a conversation a human already owns: the bot stays silent.
pub fn handed_off_problem() -> Problem {
    Problem::new(
        Reason::HandedOff,
        409,
        "Conversation handed to a human",
        "A member of the support team has taken over this conversation; the assistant will \
         not reply to it any more.",
    )
    .with_still_available(&["human"])
}

/// What to do with a Chatwoot webhook delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookAction {
    /// Not for the bot; the reason says why (stable names).
    Ignore(&'static str),
    /// An incoming message from a contact in a conversation the bot owns.
    Answer {
        /// Conversation id.
        conversation: String,
        /// Message text.
        content: String,
        /// Contact id, used as the user id.
        contact: String,
    },
}

/// Reads a Chatwoot webhook body: acts only on `message_created` for an incoming message from
/// a contact while the conversation is `pending` (the bot's).
pub fn webhook_action(body: &[u8]) -> WebhookAction {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return WebhookAction::Ignore("not_json");
    };
    if v.get("event").and_then(Value::as_str) != Some("message_created") {
        return WebhookAction::Ignore("not_message_created");
    }
    let incoming = match v.get("message_type") {
        Some(Value::String(s)) => s == "incoming",
        Some(Value::Number(n)) => n.as_u64() == Some(0),
        _ => false,
    };
    if !incoming {
        return WebhookAction::Ignore("not_incoming");
    }
    if v.pointer("/sender/type")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
        != Some("contact")
    {
        return WebhookAction::Ignore("not_from_contact");
    }
    if v.pointer("/conversation/status").and_then(Value::as_str) != Some("pending") {
        return WebhookAction::Ignore("not_pending");
    }
    let id = |p: &str| match v.pointer(p) {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let (Some(conversation), Some(content)) = (
        id("/conversation/id"),
        v.get("content")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty()),
    ) else {
        return WebhookAction::Ignore("incomplete");
    };
    WebhookAction::Answer {
        conversation,
        content: content.to_owned(),
        contact: id("/sender/id").unwrap_or_else(|| "-".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn regression_handoff_exactly_once_under_concurrency() {
        // Fault class: a conversation handed over twice (two concurrent failures).
        let s = std::sync::Arc::new(MemoryStore::new());
        let wins: usize = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || usize::from(claim(&*s, "42", UnixMs(7)).unwrap()))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(wins, 1);
        assert!(is_handed_off(&*s, "42").unwrap());
        assert!(!is_handed_off(&*s, "43").unwrap());
        // A handoff that could not be delivered is given back, and can be claimed again once.
        release(&*s, "42").unwrap();
        assert!(!is_handed_off(&*s, "42").unwrap());
        assert!(claim(&*s, "42", UnixMs(8)).unwrap());
        assert!(!claim(&*s, "42", UnixMs(9)).unwrap());
    }

    #[test]
    fn toggle_call_shape() {
        let cfg = HandoffConfig {
            chatwoot_url: "http://cw.local/".into(),
            chatwoot_account: 3,
            chatwoot_token: "t".into(),
            ..HandoffConfig::default()
        };
        let c = toggle_status_call(&cfg, "17").unwrap();
        assert_eq!(
            c.url,
            "http://cw.local/api/v1/accounts/3/conversations/17/toggle_status"
        );
        assert_eq!(c.body, r#"{"status":"open"}"#);
        assert!(toggle_status_call(&cfg, "abc").is_none());
        assert!(toggle_status_call(&HandoffConfig::default(), "17").is_none());
    }

    #[test]
    fn template_language() {
        let cfg = HandoffConfig::default();
        assert!(template(&cfg, "怎么退款？", true).starts_with("抱歉"));
        assert!(template(&cfg, "refund please", true).starts_with("Sorry"));
        // Found by testing: with no conversation to hand over, the reply still said staff
        // had been notified.
        assert!(!template(&cfg, "refund please", false).contains("notified"));
        assert!(template(&cfg, "怎么退款？", false).contains("请稍后再试"));
    }

    #[test]
    fn webhook_filter() {
        let ok = br#"{"event":"message_created","message_type":"incoming","content":"hi",
            "sender":{"id":5,"type":"contact"},"conversation":{"id":9,"status":"pending"}}"#;
        assert_eq!(
            webhook_action(ok),
            WebhookAction::Answer {
                conversation: "9".into(),
                content: "hi".into(),
                contact: "5".into()
            }
        );
        let open = String::from_utf8_lossy(ok).replace("pending", "open");
        assert_eq!(
            webhook_action(open.as_bytes()),
            WebhookAction::Ignore("not_pending")
        );
        let out = String::from_utf8_lossy(ok).replace("incoming", "outgoing");
        assert_eq!(
            webhook_action(out.as_bytes()),
            WebhookAction::Ignore("not_incoming")
        );
        let agent = String::from_utf8_lossy(ok).replace("contact", "user");
        assert_eq!(
            webhook_action(agent.as_bytes()),
            WebhookAction::Ignore("not_from_contact")
        );
        assert_eq!(webhook_action(b"{"), WebhookAction::Ignore("not_json"));
    }
}
