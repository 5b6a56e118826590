//! The order in which the policies apply to one chat request, shared by every host.
//!
//! A host drives a request through three stages and does the IO in between:
//! 1. [`Gateway::admit`]: body, identity, silence after handoff, per-IP and per-user limits;
//! 2. the host runs the Turnstile check ([`crate::turnstile`]) when enabled, then
//!    [`Gateway::plan`]: FAQ answer, budget, tier and origin cap, giving an answer to send, a
//!    refusal, or a request to forward;
//! 3. the host forwards, streams the reply through [`crate::reply::ReplyFilter`], and calls
//!    [`Gateway::settle`] (or [`Gateway::origin_failed`]) to charge tokens and hand over to a
//!    human when the origin could not answer.

use std::net::IpAddr;

use crate::answer::{self, Rendered};
use crate::budget;
use crate::config::{Config, ConfigError, FailMode};
use crate::decision::{HttpCall, Problem, Reason};
use crate::faq::KnowledgeBase;
use crate::handoff;
use crate::identity::{self, Cidr};
use crate::ratelimit::{self, Outcome, Quota, Verdict};
use crate::reply::{self, End, ReplyReport};
use crate::request::{self, ChatRequest, Shape};
use crate::store::{self, CounterStore, StoreError};
use crate::tier::{self, Route, Tier};
use crate::time::UnixMs;
use crate::turnstile;

/// The policies compiled from a config.
#[derive(Debug)]
pub struct Gateway {
    cfg: Config,
    trusted: Vec<Cidr>,
    /// `[handoff].dont_know_phrases`, normalised once.
    dont_know: reply::DontKnow,
}

/// What the host observed about a request.
#[derive(Clone, Debug)]
pub struct RequestFacts<'a> {
    /// Request path (no query).
    pub path: &'a str,
    /// Socket peer address.
    pub peer: IpAddr,
    /// `X-Forwarded-For`, if sent.
    pub forwarded_for: Option<&'a str>,
    /// The configured user header, if sent.
    pub user: Option<&'a str>,
    /// The configured conversation header, if sent.
    pub conversation: Option<&'a str>,
    /// The request body.
    pub body: &'a [u8],
    /// When the request arrived.
    pub now: UnixMs,
}

/// The answer to a chat endpoint asked with another method than `POST` (every host sends it
/// with `Allow: POST`).
pub fn method_not_allowed(method: &str, path: &str) -> Problem {
    Problem::new(
        Reason::BadRequest,
        405,
        "Method not allowed",
        format!("{method} is not allowed on {path}; chat endpoints take POST"),
    )
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Client IP (after trusted proxies).
    pub ip: IpAddr,
    /// Verified user id.
    pub user: Option<String>,
    /// Conversation id (header, else the Dify body's).
    pub conversation: Option<String>,
}

impl Client {
    /// Whom a challenge pass is remembered for: the user, else the IP.
    pub fn subject(&self) -> String {
        Client::subject_of(self.user.as_deref(), self.ip)
    }

    fn subject_of(user: Option<&str>, ip: IpAddr) -> String {
        match user {
            Some(u) => format!("u:{u}"),
            None => format!("ip:{ip}"),
        }
    }
}

/// A request that passed stage 1.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The parsed request.
    pub req: ChatRequest,
    /// Who sent it.
    pub client: Client,
    /// Limit outcomes so far (for the headers).
    pub limits: Vec<Outcome>,
}

/// A refusal: the problem to send and the limit outcomes for the headers.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The problem document (its status is the HTTP status).
    pub problem: Problem,
    /// Limit outcomes so far.
    pub limits: Vec<Outcome>,
}

/// The outcome of stage 2.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Send this answer without calling the origin.
    Answer(Answer),
    /// Refuse.
    Refuse(Refusal),
    /// Call the origin.
    Forward(Forward),
}

/// An answer the gateway writes itself.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Why (`faq_hit`, `handoff`, `budget_spent`).
    pub reason: Reason,
    /// The rendered body.
    pub reply: Rendered,
    /// The FAQ entry served, if any.
    pub faq_id: Option<String>,
    /// Chatwoot call to make (this request won the handoff).
    pub handoff: Option<HttpCall>,
    /// True when the conversation is now with a human.
    pub handed_off: bool,
    /// The conversation handed over, [`crate::handoff::scoped`] to its client; give it back
    /// with [`crate::handoff::release`] if the Chatwoot call cannot be delivered.
    pub conversation: Option<String>,
    /// The tier in force.
    pub tier: Tier,
    /// Limit outcomes (for the headers).
    pub limits: Vec<Outcome>,
}

/// A request to forward to the origin.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Origin and model.
    pub route: Route,
    /// The body to send (model rewritten for the tier; usage requested for streams).
    pub body: Vec<u8>,
    /// Hold the request this long first (it was queued by the origin cap).
    pub delay_ms: u64,
    /// Tokens reserved from the budget.
    pub reserved: u64,
    /// When they were reserved (the budget month).
    pub reserved_at: UnixMs,
    /// Limit outcomes (for the headers).
    pub limits: Vec<Outcome>,
    /// The gateway asked the origin for a usage chunk the client did not ask for: the host
    /// passes this to [`ReplyFilter::hiding_usage`](crate::reply::ReplyFilter::hiding_usage)
    /// so the client does not get a chunk with empty `choices` it never requested.
    pub usage_added: bool,
}

/// How the challenge went for this request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Not required, remembered, or verified.
    Passed,
    /// Failed with these codes.
    Failed(Vec<String>),
}

/// What the origin did, as observed by the host after the reply ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginOutcome {
    /// Tokens to charge (the reply filter's `tokens_to_charge`).
    pub tokens: u64,
    /// The reply ended cleanly (not cut, no origin error event).
    pub complete: bool,
    /// The origin said it does not know.
    pub dont_know: bool,
}

/// What stage 3 asks of the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Chatwoot call to make (this request won the handoff).
    pub handoff: Option<HttpCall>,
    /// True when the conversation is now with a human.
    pub handed_off: bool,
    /// The conversation handed over (see [`Answer::conversation`]).
    pub conversation: Option<String>,
}

impl Gateway {
    /// Judges what the reply filter observed: tokens to charge (the origin's usage, else an
    /// estimate from the prompt and the text relayed), whether the reply ended cleanly, and
    /// whether it was the origin's own "I don't know".
    pub fn outcome(&self, admitted: &Admitted, report: &ReplyReport) -> OriginOutcome {
        let prompt = budget::estimate_from_chars(admitted.req.prompt_chars);
        OriginOutcome {
            tokens: report.tokens_to_charge(prompt),
            complete: matches!(report.end, End::Complete),
            dont_know: self.dont_know.matches(&report.text),
        }
    }

    /// Stage 3 for a whole (non-streamed) reply, before anything was relayed: charges the
    /// budget, and when the reply is unusable (cut, origin error, "I don't know") returns the
    /// template answer with a handoff to send instead. `None`: relay the filtered reply.
    pub fn finish_whole<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        admitted: &Admitted,
        forward: &Forward,
        outcome: &OriginOutcome,
        now: UnixMs,
    ) -> Option<Plan> {
        if outcome.complete && !outcome.dont_know {
            self.settle(store, admitted, forward, outcome, now);
            return None;
        }
        // The tokens were spent even though the reply is not used.
        let charged = OriginOutcome {
            complete: true,
            dont_know: false,
            ..outcome.clone()
        };
        self.settle(store, admitted, forward, &charged, now);
        let settled = Forward {
            reserved: 0,
            ..forward.clone()
        };
        Some(self.origin_failed(store, admitted, &settled, None, None, now))
    }

    /// Compiles a validated config.
    pub fn new(cfg: Config) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let trusted = cfg
            .client
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Cidr::parse(p).map_err(|m| ConfigError {
                    field: format!("client.trusted_proxies[{i}]"),
                    message: m,
                })
            })
            .collect::<Result<_, _>>()?;
        let dont_know = reply::DontKnow::new(&cfg.handoff.dont_know_phrases);
        Ok(Gateway {
            cfg,
            trusted,
            dont_know,
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The client IP for a peer and its forwarding header.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        identity::client_ip(peer, forwarded_for, &self.trusted)
    }

    fn limit<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        key: &str,
        quota: &Quota,
        now: UnixMs,
    ) -> Result<Option<Outcome>, Problem> {
        match ratelimit::check(store, key, now, quota) {
            Ok(o) => Ok(Some(o)),
            Err(e) => self.store_failed(e).map(|()| None),
        }
    }

    fn store_failed(&self, e: StoreError) -> Result<(), Problem> {
        match self.cfg.limits.on_store_error {
            FailMode::Open => Ok(()),
            FailMode::Closed => Err(store_problem(&e)),
        }
    }

    /// Stage 1: reads the request and applies the client limits.
    pub fn admit<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        facts: &RequestFacts<'_>,
    ) -> Result<Admitted, Refusal> {
        let refuse = |problem, limits| Refusal { problem, limits };
        let c = &self.cfg.client;
        if facts.body.len() > c.max_body_bytes {
            return Err(refuse(body_too_large(c.max_body_bytes), Vec::new()));
        }
        let Some(shape) = Shape::from_path(facts.path) else {
            let p = Problem::new(
                Reason::BadRequest,
                404,
                "Not found",
                "no chat endpoint here",
            );
            return Err(refuse(p, Vec::new()));
        };
        let ip = self.client_ip(facts.peer, facts.forwarded_for);
        let mut limits = Vec::new();
        if let Some(q) = self.cfg.ip_quota() {
            let network = identity::limit_network(ip, self.cfg.client.ipv6_prefix);
            match self.limit(store, &format!("ip:{network}"), &q, facts.now) {
                Ok(Some(o)) => limits.push(o),
                Ok(None) => {}
                Err(p) => return Err(refuse(p, limits)),
            }
            if let Some(p) = limited(&limits, Reason::IpLimited) {
                return Err(refuse(p, limits));
            }
        }
        let req = request::parse_chat(shape, facts.body).map_err(|p| refuse(p, limits.clone()))?;
        let user = match facts.user.or(req.body_user.as_deref()) {
            Some(raw) => Some(
                identity::verify_user(raw, c.user_signing_secret.as_deref())
                    .map_err(|p| refuse(p, limits.clone()))?,
            ),
            None if c.require_user => {
                let p = Problem::new(
                    Reason::BadIdentity,
                    401,
                    "User id required",
                    format!("send the user id in the `{}` header", c.user_header),
                );
                return Err(refuse(p, limits));
            }
            None => None,
        };
        let header_conv = facts
            .conversation
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .map(str::to_owned);
        // The body's id is the origin's own (Dify); it wins, and a handoff on either id
        // silences the bot, so a client cannot talk past a handoff by adding a header.
        let conversation = req.conversation_id.clone().or_else(|| header_conv.clone());
        let subject = Client::subject_of(user.as_deref(), ip);
        for conv in [&req.conversation_id, &header_conv].into_iter().flatten() {
            match handoff::is_handed_off(store, &handoff::scoped(&subject, conv)) {
                Ok(true) => return Err(refuse(handoff::handed_off_problem(), limits)),
                Ok(false) => {}
                Err(e) => self
                    .store_failed(e)
                    .map_err(|p| refuse(p, limits.clone()))?,
            }
        }
        if let (Some(q), Some(u)) = (self.cfg.user_quota(), &user) {
            match self.limit(store, &format!("user:{u}"), &q, facts.now) {
                Ok(Some(o)) => limits.push(o),
                Ok(None) => {}
                Err(p) => return Err(refuse(p, limits)),
            }
            if let Some(p) = limited(&limits, Reason::UserLimited) {
                return Err(refuse(p, limits));
            }
        }
        Ok(Admitted {
            req,
            client: Client {
                ip,
                user,
                conversation,
            },
            limits,
        })
    }

    /// The tier in force given the raw flag value (unknown values keep `normal`).
    pub fn tier(&self, flag: Option<&str>) -> Tier {
        flag.and_then(Tier::parse).unwrap_or_default()
    }

    /// Stage 2: FAQ, budget, tier, origin cap.
    pub fn plan<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        admitted: &Admitted,
        kb: Option<&KnowledgeBase>,
        tier_flag: Option<&str>,
        challenge: &Challenge,
        now: UnixMs,
    ) -> Plan {
        let mut limits = admitted.limits.clone();
        let req = &admitted.req;
        let tier = self.tier(tier_flag);
        let route = tier::route(tier, &self.cfg.tiers, &self.cfg.origin.model);
        let faq_on = self.cfg.faq.enabled || route.force_faq;
        if let (true, Some(kb)) = (faq_on, kb) {
            // TODO(#4): pass the client's locale once requests carry one reliably; entries of
            // every locale compete today, which the matcher's script-aware tokens keep apart.
            if let Some(hit) = kb.lookup(&req.question, None, &self.cfg.faq) {
                let id = hit.id.to_owned();
                // Hit counts are best effort: a store failure must not lose the answer.
                let _ = store::update(store, &format!("faqhits:{id}"), |n| {
                    (Some(n.unwrap_or(0).saturating_add(1)), ())
                });
                let reply = self.render(admitted, hit.answer, &format!("faq-{id}"), now);
                return Plan::Answer(Answer {
                    reason: Reason::FaqHit,
                    reply,
                    faq_id: Some(id),
                    handoff: None,
                    handed_off: false,
                    conversation: None,
                    tier,
                    limits,
                });
            }
        }
        if let Challenge::Failed(codes) = challenge {
            return Plan::Refuse(Refusal {
                problem: turnstile::fallback_problem(codes),
                limits,
            });
        }
        let estimate = budget::estimate_from_chars(req.prompt_chars);
        let cap = self.cfg.budget.monthly_tokens;
        if cap > 0 {
            match budget::reserve(store, now, cap, estimate) {
                Ok(status) if status.exhausted() => {
                    return Plan::Answer(self.template_answer(
                        store,
                        admitted,
                        Reason::BudgetSpent,
                        tier,
                        limits,
                        now,
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    if let Err(p) = self.store_failed(e) {
                        return Plan::Refuse(Refusal { problem: p, limits });
                    }
                }
            }
        }
        let reserved = if cap > 0 { estimate } else { 0 };
        // Every limit with a queue (`max_wait_ms`) may have admitted this request for a later
        // slot: it waits for the latest of them, so the origin never sees a burst past any.
        let waited = |o: &Outcome| match o.verdict {
            Verdict::Delay { wait_ms } => wait_ms,
            _ => 0,
        };
        let mut delay_ms = limits.iter().map(waited).max().unwrap_or(0);
        if let Some(q) = self.cfg.origin_quota() {
            match self.limit(store, "origin", &q, now) {
                Ok(Some(o)) => {
                    delay_ms = delay_ms.max(waited(&o));
                    limits.push(o);
                }
                Ok(None) => {}
                Err(p) => {
                    self.release(store, now, reserved);
                    return Plan::Refuse(Refusal { problem: p, limits });
                }
            }
            if let Some(p) = limited(&limits, Reason::OriginCapped) {
                self.release(store, now, reserved);
                return Plan::Refuse(Refusal { problem: p, limits });
            }
        }
        let usage_added = req.shape == Shape::OpenAi
            && req.stream
            && req
                .body
                .pointer("/stream_options/include_usage")
                .and_then(serde_json::Value::as_bool)
                != Some(true);
        Plan::Forward(Forward {
            body: self.origin_body(req, admitted.client.user.as_deref(), &route),
            usage_added,
            route,
            delay_ms,
            reserved,
            reserved_at: now,
            limits,
        })
    }

    fn release<S: CounterStore + ?Sized>(&self, store: &S, now: UnixMs, reserved: u64) {
        if reserved > 0 {
            let _ = budget::settle(store, now, reserved, 0);
        }
    }

    /// The body to send to the origin: OpenAI requests get the tier's model and, when
    /// streaming, `stream_options.include_usage` so tokens can be charged exactly. Spliced into
    /// the client's bytes ([`ChatRequest::edited_body`]).
    fn origin_body(&self, req: &ChatRequest, user: Option<&str>, route: &Route) -> Vec<u8> {
        let openai = req.shape == Shape::OpenAi;
        let edits = request::BodyEdits {
            // The origin sees the identity the limits were applied to, not a body field the
            // client may have set to someone else (Dify scopes conversations by `user`).
            user: user.filter(|_| req.shape == Shape::Dify || req.body.get("user").is_some()),
            model: openai.then_some(route.model.as_str()),
            include_usage: openai && req.stream,
            max_output: (openai && self.cfg.origin.max_output_tokens > 0).then_some((
                self.cfg.origin.max_output_tokens,
                self.cfg.origin.max_output_tokens_field.as_str(),
            )),
        };
        req.edited_body(&edits)
    }

    fn render(&self, admitted: &Admitted, text: &str, id: &str, now: UnixMs) -> Rendered {
        let req = &admitted.req;
        answer::render(
            req.shape,
            req.stream,
            text,
            id,
            "tidegate",
            admitted.client.conversation.as_deref(),
            now.as_secs(),
        )
    }

    fn template_answer<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        admitted: &Admitted,
        reason: Reason,
        tier: Tier,
        limits: Vec<Outcome>,
        now: UnixMs,
    ) -> Answer {
        let s = self.hand_over(store, admitted, now);
        let text = handoff::template(&self.cfg.handoff, &admitted.req.question, s.handed_off);
        Answer {
            reason,
            reply: self.render(admitted, text, "handoff", now),
            faq_id: None,
            handoff: s.handoff,
            handed_off: s.handed_off,
            conversation: s.conversation,
            tier,
            limits,
        }
    }

    fn hand_over<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        admitted: &Admitted,
        now: UnixMs,
    ) -> Settlement {
        let Some(conv) = &admitted.client.conversation else {
            return Settlement::default();
        };
        let call = handoff::toggle_status_call(&self.cfg.handoff, conv);
        if call.is_none() && !self.cfg.handoff.chatwoot_url.is_empty() {
            // Chatwoot is configured but this id is not one of its conversation numbers:
            // nobody could be told, so the conversation stays with the bot rather than going
            // silent with no human behind it.
            return Settlement::default();
        }
        let scoped = handoff::scoped(&admitted.client.subject(), conv);
        match handoff::claim(store, &scoped, now) {
            Ok(true) => Settlement {
                handoff: call,
                handed_off: true,
                conversation: Some(scoped),
            },
            Ok(false) => Settlement {
                handoff: None,
                handed_off: true,
                conversation: None,
            },
            Err(_) => Settlement::default(),
        }
    }

    /// Stage 3 after a reply was relayed: charges the budget and hands over when the origin
    /// did not really answer (cut stream, origin error event, "I don't know").
    pub fn settle<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        admitted: &Admitted,
        forward: &Forward,
        outcome: &OriginOutcome,
        now: UnixMs,
    ) -> Settlement {
        self.charge(store, forward, outcome);
        if outcome.complete && !outcome.dont_know {
            return Settlement::default();
        }
        self.hand_over(store, admitted, now)
    }

    /// Stage 3 when the client went away before the reply ended (pressed stop, closed the
    /// tab, lost its network): what came is charged, but nobody is handed over, since the
    /// origin did not fail and the customer did not ask for a human.
    pub fn settle_client_left<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        forward: &Forward,
        outcome: &OriginOutcome,
    ) {
        self.charge(store, forward, outcome);
    }

    /// Settles the budget reservation of `forward` with the tokens the reply used.
    fn charge<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        forward: &Forward,
        outcome: &OriginOutcome,
    ) {
        if self.cfg.budget.monthly_tokens > 0 {
            let _ = budget::settle(store, forward.reserved_at, forward.reserved, outcome.tokens);
        }
    }

    /// Stage 3 when the origin gave no usable reply at all (connection error, timeout, 5xx,
    /// 429): an origin that asks to slow down gets the client a 503 with its `Retry-After`
    /// (either form), anything else gets the template answer and a handoff.
    pub fn origin_failed<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        admitted: &Admitted,
        forward: &Forward,
        status: Option<u16>,
        retry_after: Option<&str>,
        now: UnixMs,
    ) -> Plan {
        self.release(store, forward.reserved_at, forward.reserved);
        if matches!(status, Some(429) | Some(503)) {
            // Capped at an hour: clients should come back and see, not wait for a far date.
            let parsed = retry_after.and_then(|v| crate::time::parse_retry_after(v, now));
            if let Some(secs) = parsed.map(|s| s.min(3600)) {
                let p = Problem::new(
                    Reason::OriginBusy,
                    503,
                    "Origin busy",
                    "The assistant is at capacity. Please retry shortly.",
                )
                .with_policy("origin")
                .with_retry_after(secs)
                .with_still_available(&["faq", "retry", "handoff"]);
                return Plan::Refuse(Refusal {
                    problem: p,
                    limits: forward.limits.clone(),
                });
            }
        }
        Plan::Answer(self.template_answer(
            store,
            admitted,
            Reason::Handoff,
            forward.route.tier,
            forward.limits.clone(),
            now,
        ))
    }

    /// Applies a business API's limit and queue to `path`: `None` when no API matches.
    pub fn admit_api<S: CounterStore + ?Sized>(
        &self,
        store: &S,
        path: &str,
        now: UnixMs,
    ) -> Option<Result<Outcome, Refusal>> {
        let (api, quota) = self.cfg.api_for(path)?;
        let quota = quota?;
        let key = format!("api:{}", api.name);
        Some(match self.limit(store, &key, &quota, now) {
            Ok(Some(o)) if o.admitted() => Ok(o),
            Ok(Some(o)) => {
                let limits = vec![o];
                let problem = limited(&limits, Reason::ApiCapped)
                    .unwrap_or_else(|| Problem::bad_request("limit refused"));
                Err(Refusal { problem, limits })
            }
            // The store failed and limits fail open.
            Ok(None) => Ok(open_outcome(&quota)),
            Err(p) => Err(Refusal {
                problem: p,
                limits: Vec::new(),
            }),
        })
    }
}

/// True when a counter cell written by the gateway's limits can be forgotten: a GCRA arrival
/// time in the past is the same state as no cell. Hosts with a memory store sweep with it;
/// budget, challenge-pass, handoff and hit-count cells are never idle.
pub fn is_idle_cell(key: &str, value: u64, now: UnixMs) -> bool {
    let is_limit = ["ip:", "user:", "api:"].iter().any(|p| key.starts_with(p)) || key == "origin";
    is_limit && value <= now.as_nanos()
}

fn open_outcome(q: &Quota) -> Outcome {
    Outcome {
        quota: q.clone(),
        verdict: Verdict::Allow,
        remaining: q.limit,
        reset_secs: 0,
    }
}

/// The answer to a request body over `max` bytes (every host sends it, declared or read).
pub fn body_too_large(max: usize) -> Problem {
    Problem::new(
        Reason::TooLarge,
        413,
        "Request too large",
        format!("the request body exceeds {max} bytes"),
    )
}

fn store_problem(e: &StoreError) -> Problem {
    Problem::new(
        Reason::StoreUnavailable,
        503,
        "Temporarily unavailable",
        e.to_string(),
    )
    .with_retry_after(1)
    .with_still_available(&["retry"])
}

/// The 429/503 problem for the last outcome if it refused.
fn limited(limits: &[Outcome], reason: Reason) -> Option<Problem> {
    let o = limits.last().filter(|o| !o.admitted())?;
    let Verdict::Reject { retry_after_secs } = o.verdict else {
        return None;
    };
    let (status, title, detail) = match reason {
        Reason::IpLimited => (
            429,
            "Too many requests",
            format!(
                "This network sent more than {} requests in {} s. Please wait before sending more.",
                o.quota.limit,
                o.quota.window_ms / 1000
            ),
        ),
        Reason::UserLimited => (
            429,
            "Too many requests",
            format!(
                "You sent more than {} messages in {} s. Please wait a moment before the next one.",
                o.quota.limit,
                o.quota.window_ms / 1000
            ),
        ),
        _ => (
            503,
            "At capacity",
            "The assistant is at capacity and the wait queue is full. Please retry shortly."
                .to_owned(),
        ),
    };
    Some(
        Problem::new(reason, status, title, detail)
            .with_policy(&o.quota.policy)
            .with_retry_after(retry_after_secs),
    )
}

/// Response headers describing a decision: `RateLimit-Policy`/`RateLimit` (IETF draft), the
/// OpenAI-style `x-ratelimit-*` for the tightest limit, `Retry-After` on refusals, and
/// tidegate's own `x-tidegate-*`.
pub fn response_headers(
    limits: &[Outcome],
    reason: Reason,
    tier: Option<Tier>,
    retry_after: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    if let Some((policy, state)) = ratelimit::headers(limits) {
        h.push(("ratelimit-policy", policy));
        h.push(("ratelimit", state));
    }
    if let Some(tight) = limits
        .iter()
        .min_by_key(|o| (o.remaining, std::cmp::Reverse(o.reset_secs)))
    {
        h.push(("x-ratelimit-limit-requests", tight.quota.limit.to_string()));
        h.push((
            "x-ratelimit-remaining-requests",
            tight.remaining.to_string(),
        ));
        h.push((
            "x-ratelimit-reset-requests",
            format!("{}s", tight.reset_secs),
        ));
    }
    if let Some(secs) = retry_after {
        // Never earlier than any refusing limit's `t`.
        let t = limits
            .iter()
            .filter(|o| !o.admitted())
            .map(|o| o.reset_secs)
            .max()
            .unwrap_or(0);
        h.push(("retry-after", secs.max(t).max(1).to_string()));
    }
    h.push(("x-tidegate-reason", reason.as_str().to_owned()));
    h.push((
        "x-tidegate-cache",
        if reason == Reason::FaqHit {
            "hit"
        } else {
            "miss"
        }
        .into(),
    ));
    if let Some(t) = tier {
        h.push(("x-tidegate-tier", t.as_str().to_owned()));
    }
    h
}
