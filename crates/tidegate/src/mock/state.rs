//! Shared state of the mock: configuration, load, and the record of every call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use super::MockArgs;

/// Requests in flight that add one base latency to every reply (see [`MockState::latency`]).
const LOAD_STEP: u64 = 50;
/// Upper bound of the load factor: 200 ms grows to at most 8 s, as in the case study.
const MAX_LOAD_FACTOR: u64 = 40;
/// Models remembered per user in `/mock/calls`; older entries are dropped first.
const MAX_MODELS_PER_USER: usize = 1000;
/// Alert bodies remembered; older ones are dropped first.
const MAX_ALERTS: usize = 1000;

/// Everything the handlers share.
#[derive(Debug)]
pub struct MockState {
    /// The options the mock was started with.
    pub args: MockArgs,
    inflight: AtomicUsize,
    seq: AtomicU64,
    record: Mutex<Record>,
}

/// What the mock remembers between requests. Cleared by `POST /mock/reset`.
#[derive(Debug, Default)]
pub struct Record {
    /// Chat requests seen on either chat API (valid or not).
    pub chat_total: u64,
    /// Chat requests per API: `openai`, `dify`.
    pub chat_by_api: BTreeMap<String, u64>,
    /// Chat requests per user (`x-user-id` header, else the body's `user`, else `-`).
    pub chat_by_user: BTreeMap<String, u64>,
    /// Model of each chat request, per user, oldest first.
    pub models_by_user: BTreeMap<String, Vec<String>>,
    /// The reply cap (`max_tokens`, else `max_completion_tokens`; 0 for none) of each user's
    /// latest OpenAI request.
    pub max_tokens_by_user: BTreeMap<String, u64>,
    /// siteverify calls seen.
    pub siteverify_total: u64,
    /// Outcome of each token verified with the real secret, by token.
    pub tokens: HashMap<String, TokenUse>,
    /// `toggle_status` calls per conversation id.
    pub toggle_status: BTreeMap<String, u64>,
    /// Every `toggle_status` call, oldest first.
    pub toggle_status_log: Vec<Value>,
    /// Current Chatwoot status per conversation id (absent means `pending`: the bot owns it).
    pub conversation_status: HashMap<String, String>,
    /// Chatwoot messages posted per conversation id.
    pub messages: BTreeMap<String, u64>,
    /// Chatwoot messages posted while the conversation was no longer `pending`.
    pub messages_after_handoff: BTreeMap<String, u64>,
    /// Dify conversations created, with the user that owns each.
    pub dify_conversations: HashMap<String, String>,
    /// Alert webhook bodies, oldest first.
    pub alerts: Vec<Value>,
}

/// The first verification of a single-use Turnstile token.
#[derive(Debug, Clone)]
pub struct TokenUse {
    /// The `idempotency_key` sent with the first verification, if any.
    pub idempotency_key: Option<String>,
    /// The reply given then, replayed to a retry with the same key.
    pub reply: Value,
}

/// Keeps a request counted as in flight until dropped.
#[derive(Debug)]
pub struct InflightGuard {
    state: Arc<MockState>,
    /// Requests in flight when this one arrived, not counting itself.
    pub others: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.state.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MockState {
    /// Fresh state for `args`.
    pub fn new(args: MockArgs) -> Self {
        Self {
            args,
            inflight: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            record: Mutex::new(Record::default()),
        }
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        let others = self.inflight.fetch_add(1, Ordering::SeqCst);
        InflightGuard {
            state: Arc::clone(self),
            others,
        }
    }

    /// The latency before the first byte, given how many other requests are in flight.
    pub fn latency(&self, others: usize) -> Duration {
        let base = self.args.latency_ms;
        let others = u64::try_from(others).unwrap_or(u64::MAX);
        let factor_x50 = LOAD_STEP
            .saturating_add(others)
            .min(LOAD_STEP * MAX_LOAD_FACTOR);
        Duration::from_millis(base.saturating_mul(factor_x50) / LOAD_STEP)
    }

    /// The configured delay between two writes of a stream.
    pub fn chunk_delay(&self) -> Duration {
        Duration::from_millis(self.args.chunk_delay_ms)
    }

    /// A number unique within this process, for ids.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// A UUID-shaped id, unique within this process.
    pub fn next_uuid(&self) -> String {
        let n = self.next_seq();
        format!(
            "7e1d9a7e-{:04x}-4000-8000-{:012x}",
            (n >> 48) & 0xffff,
            n & 0xffff_ffff_ffff
        )
    }

    /// Locks the record. A panic in another handler does not poison it for good.
    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one chat request.
    pub fn record_chat(&self, api: &str, user: &str, model: Option<&str>) {
        let mut rec = self.record();
        rec.chat_total += 1;
        *rec.chat_by_api.entry(api.to_owned()).or_default() += 1;
        *rec.chat_by_user.entry(user.to_owned()).or_default() += 1;
        if let Some(model) = model {
            let models = rec.models_by_user.entry(user.to_owned()).or_default();
            if models.len() >= MAX_MODELS_PER_USER {
                models.remove(0);
            }
            models.push(model.to_owned());
        }
    }

    /// Records the reply cap of `user`'s latest OpenAI request.
    pub fn record_max_tokens(&self, user: &str, cap: u64) {
        self.record()
            .max_tokens_by_user
            .insert(user.to_owned(), cap);
    }

    /// Records one alert body.
    pub fn record_alert(&self, body: Value) {
        let mut rec = self.record();
        if rec.alerts.len() >= MAX_ALERTS {
            rec.alerts.remove(0);
        }
        rec.alerts.push(body);
    }

    /// Forgets everything recorded.
    pub fn reset(&self) {
        *self.record() = Record::default();
    }

    /// The `/mock/calls` document.
    pub fn calls_json(&self) -> Value {
        let rec = self.record();
        json!({
            "chat_total": rec.chat_total,
            "chat_by_api": rec.chat_by_api,
            "chat_by_user": rec.chat_by_user,
            "models_by_user": rec.models_by_user,
            "max_tokens_by_user": rec.max_tokens_by_user,
            "siteverify_total": rec.siteverify_total,
            "toggle_status": rec.toggle_status,
            "toggle_status_log": rec.toggle_status_log,
            "messages": rec.messages,
            "messages_after_handoff": rec.messages_after_handoff,
            "alerts": rec.alerts,
            "in_flight": self.inflight.load(Ordering::SeqCst),
        })
    }
}
