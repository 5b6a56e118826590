//! The Worker itself: the fetch handler, the per-isolate flag cache and the origin relay.
//!
//! Every policy decision is made by [`tidegate_core::gateway::Gateway`]; this module only maps
//! Workers to it: KV for flags and the FAQ artefact, the [`crate::counter`] Durable Objects
//! for counters (through [`crate::replay`]), `fetch` for siteverify, the origin, Chatwoot and
//! alerts, and a streamed response body fed chunk by chunk through the core's reply filter.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::future::{select, Either};
use futures_util::{SinkExt, StreamExt};
use tidegate_core::decision::HttpCall;
use tidegate_core::faq::KnowledgeBase;
use tidegate_core::gateway::{
    self, Admitted, Answer, Challenge, Forward, Gateway, OriginOutcome, Plan, Refusal, RequestFacts,
};
use tidegate_core::ratelimit::{Outcome, Verdict};
use tidegate_core::reply::{CodeSet, ReplyFilter, Validator};
use tidegate_core::tier::Tier;
use tidegate_core::{handoff, turnstile, Problem, Reason, UnixMs};
use worker::{
    console_error, console_warn, event, AbortController, Context, Date, Delay, Env, Fetch, Headers,
    Method, Request, RequestInit, Response,
};

use crate::counter::DoRemote;
use crate::replay;
use crate::settings::{self, Settings, KB_KEY};

/// KV binding for flags (`tier`, the valid promo codes, `tier_recommended`).
pub const FLAGS_BINDING: &str = "FLAGS";
/// KV binding for the FAQ knowledge base.
pub const FAQ_BINDING: &str = "FAQ";

/// Flags as last read from KV by this isolate.
#[derive(Clone, Debug, Default)]
struct Flags {
    tier: Option<String>,
    codes: Arc<CodeSet>,
    kb: Option<Arc<KnowledgeBase>>,
    /// Length and hash of the artefact the KB was parsed from (skip re-parsing).
    kb_fingerprint: Option<(usize, u64)>,
    /// Fingerprint of an artefact that did not load: the same bytes are not parsed (and
    /// warned about) again on each refresh; the last good KB stays in use.
    kb_rejected: Option<(usize, u64)>,
    fetched_at: Option<UnixMs>,
}

/// What one isolate keeps between requests.
#[derive(Debug)]
struct Isolate {
    gw: Gateway,
    validator: Arc<Validator>,
    flags_ttl_secs: u64,
    flags: RefCell<Flags>,
}

thread_local! {
    static ISOLATE: RefCell<Option<Rc<Isolate>>> = const { RefCell::new(None) };
}

fn now() -> UnixMs {
    UnixMs(Date::now().as_millis())
}

pub(crate) fn env_text(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .ok()
        .map(|s| s.to_string())
        .or_else(|| env.var(name).ok().map(|v| v.to_string()))
}

/// The isolate's compiled settings, built on first use (lazily: nothing runs at startup).
fn isolate(env: &Env) -> Result<Rc<Isolate>, Problem> {
    if let Some(i) = ISOLATE.with(|c| c.borrow().clone()) {
        return Ok(i);
    }
    let built = settings::load(
        env_text(env, settings::CONFIG_VAR).as_deref(),
        |n| env_text(env, n),
        env_text(env, settings::FLAGS_TTL_VAR).as_deref(),
    )
    .and_then(
        |Settings {
             config,
             validator,
             flags_ttl_secs,
         }| {
            Ok(Isolate {
                gw: Gateway::new(config)?,
                validator: Arc::new(validator),
                flags_ttl_secs,
                flags: RefCell::new(Flags::default()),
            })
        },
    );
    match built {
        Ok(i) => {
            let i = Rc::new(i);
            ISOLATE.with(|c| *c.borrow_mut() = Some(i.clone()));
            Ok(i)
        }
        Err(e) => {
            console_error!("tidegate: config error: {e}");
            // The client learns which field, never the message: it may quote a value.
            let which = if e.field.is_empty() {
                String::new()
            } else {
                format!(" (`{}`)", e.field)
            };
            Err(Problem::new(
                Reason::Misconfigured,
                500,
                "Misconfigured",
                format!("the gateway's configuration is invalid{which}; its log says why"),
            ))
        }
    }
}

fn fingerprint(bytes: &[u8]) -> (usize, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    (bytes.len(), h.finish())
}

/// The flags, re-read from KV once they are older than the TTL. A KV failure keeps the last
/// flags (or the defaults: tier `normal`, no valid codes, no FAQ) and is logged.
async fn flags(iso: &Isolate, env: &Env, now: UnixMs) -> Flags {
    let current = iso.flags.borrow().clone();
    let fresh = current
        .fetched_at
        .is_some_and(|t| now.0.saturating_sub(t.0) < iso.flags_ttl_secs.saturating_mul(1000));
    if fresh {
        return current;
    }
    let ttl = settings::kv_cache_ttl(iso.flags_ttl_secs);
    let mut next = current.clone();
    next.fetched_at = Some(now);
    match env.kv(FLAGS_BINDING) {
        Ok(kv) => {
            let cfg = iso.gw.config();
            match kv.get(&cfg.tiers.flag_key).cache_ttl(ttl).text().await {
                Ok(t) => {
                    if let Some(bad) = t.as_deref().filter(|v| Tier::parse(v).is_none()) {
                        console_warn!(
                            "tidegate: KV {} = {bad:?} is not a tier (normal, economy, \
                             cache-first, fallback); serving normal",
                            cfg.tiers.flag_key
                        );
                    }
                    next.tier = t
                }
                Err(e) => console_warn!("tidegate: KV tier flag unreadable, keeping last: {e}"),
            }
            match kv
                .get(iso.validator.codes_key())
                .cache_ttl(ttl)
                .text()
                .await
            {
                Ok(t) => next.codes = Arc::new(CodeSet::parse(t.as_deref().unwrap_or(""))),
                Err(e) => console_warn!("tidegate: KV promo codes unreadable, keeping last: {e}"),
            }
        }
        Err(e) => console_warn!("tidegate: no {FLAGS_BINDING} KV binding: {e}"),
    }
    match env.kv(FAQ_BINDING) {
        Ok(kv) => match kv.get(KB_KEY).cache_ttl(ttl).bytes().await {
            Ok(Some(bytes)) => {
                let fp = fingerprint(&bytes);
                if next.kb_fingerprint != Some(fp) && next.kb_rejected != Some(fp) {
                    match KnowledgeBase::from_artifact(&bytes) {
                        Ok(kb) => {
                            next.kb = Some(Arc::new(kb));
                            next.kb_fingerprint = Some(fp);
                            next.kb_rejected = None;
                        }
                        Err(e) => {
                            next.kb_rejected = Some(fp);
                            console_warn!(
                                "tidegate: FAQ artefact does not load, keeping the last good \
                                 one until it changes: {e}"
                            );
                        }
                    }
                }
            }
            Ok(None) => {
                next.kb = None;
                next.kb_fingerprint = None;
                next.kb_rejected = None;
            }
            Err(e) => console_warn!("tidegate: KV FAQ unreadable, keeping last: {e}"),
        },
        Err(e) => console_warn!("tidegate: no {FAQ_BINDING} KV binding: {e}"),
    }
    *iso.flags.borrow_mut() = next.clone();
    next
}

fn reason_of(p: &Problem) -> Reason {
    Reason::ALL
        .into_iter()
        .find(|r| r.as_str() == p.code)
        .unwrap_or(Reason::BadRequest)
}

fn with_headers(mut resp: Response, headers: Vec<(&'static str, String)>) -> Response {
    let h = resp.headers_mut();
    for (k, v) in headers {
        let _ = h.set(k, &v);
    }
    resp
}

fn body_response(status: u16, content_type: &str, body: Vec<u8>) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", content_type);
    match Response::from_bytes(body) {
        Ok(r) => r.with_status(status).with_headers(headers),
        Err(_) => Response::error("internal error", 500)
            .unwrap_or_else(|_| Response::empty().unwrap_or_else(|_| unreachable_response())),
    }
}

/// Only reached if the runtime cannot build an empty response, which it always can.
fn unreachable_response() -> Response {
    Response::builder().with_status(500).empty()
}

fn refusal(r: &Refusal, tier: Option<Tier>) -> Response {
    let p = &r.problem;
    let resp = body_response(p.status, Problem::CONTENT_TYPE, p.to_json().into_bytes());
    with_headers(
        resp,
        gateway::response_headers(&r.limits, reason_of(p), tier, p.retry_after),
    )
}

fn problem(p: Problem) -> Response {
    refusal(
        &Refusal {
            problem: p,
            limits: Vec::new(),
        },
        None,
    )
}

/// Makes an outbound call, retrying transient failures twice; true when it was delivered.
pub(crate) async fn deliver(call: HttpCall, what: &'static str) -> bool {
    for attempt in 1..=3u64 {
        match post(&call).await {
            Ok(s) if (200..300).contains(&s) => return true,
            Ok(s) if (400..500).contains(&s) => {
                console_warn!("tidegate: {what} refused with {s}");
                return false;
            }
            Ok(s) => console_warn!("tidegate: {what} attempt {attempt} failed with {s}"),
            Err(e) => console_warn!("tidegate: {what} attempt {attempt} failed: {e}"),
        }
        Delay::from(Duration::from_millis(200 * attempt)).await;
    }
    console_error!("tidegate: {what} abandoned after 3 attempts");
    false
}

/// Delivers a handoff. When Chatwoot refuses it or cannot be reached, the conversation goes
/// back to the bot (as in the native gateway), so the customer is not left with neither a
/// bot nor a human; the next message that needs a human tries again.
async fn hand_over(call: HttpCall, conversation: Option<String>, remote: DoRemote) {
    if deliver(call, "handoff").await {
        return;
    }
    let Some(conv) = conversation else {
        return;
    };
    match replay::run(&remote, |s, _| handoff::release(s, &conv)).await {
        Ok(()) => console_error!(
            "tidegate: handoff of conversation {conv} not delivered; it is back with the bot"
        ),
        Err(e) => console_error!(
            "tidegate: handoff of conversation {conv} not delivered and not released: {e}"
        ),
    }
}

async fn post(call: &HttpCall) -> worker::Result<u16> {
    let headers = Headers::new();
    for (k, v) in &call.headers {
        headers.set(k, v)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::from(call.method.to_owned()))
        .with_headers(headers)
        .with_body(Some(call.body.clone().into()));
    let req = Request::new_with_init(&call.url, &init)?;
    Ok(Fetch::Request(req).send().await?.status_code())
}

/// `fetch` with a deadline for the response head; `None` on timeout.
async fn fetch_within(req: Request, ms: u64) -> Option<worker::Result<Response>> {
    let ctrl = AbortController::default();
    let signal = ctrl.signal();
    let sent = Box::pin(async move { Fetch::Request(req).send_with_signal(&signal).await });
    let timer = Box::pin(Delay::from(Duration::from_millis(ms)));
    match select(sent, timer).await {
        Either::Left((r, _)) => Some(r),
        Either::Right(((), _)) => {
            ctrl.abort();
            None
        }
    }
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let now = now();
    let iso = match isolate(&env) {
        Ok(i) => i,
        Err(p) => return Ok(problem(p)),
    };
    let path = req.path();
    if path == "/healthz" {
        let f = flags(&iso, &env, now).await;
        let body = serde_json::json!({
            "status": "ok",
            "host": "worker",
            "tier": iso.gw.tier(f.tier.as_deref()).as_str(),
            "kb_version": f.kb.as_ref().map(|k| k.version().to_owned()),
            "valid_codes": f.codes.len(),
        });
        return Ok(body_response(
            200,
            "application/json",
            body.to_string().into_bytes(),
        ));
    }
    let remote = match DoRemote::from_env(&env, now) {
        Ok(r) => r,
        Err(e) => {
            console_error!("tidegate: no counter namespace: {e}");
            return Ok(problem(Problem::new(
                Reason::Misconfigured,
                500,
                "Misconfigured",
                "the counter store is not bound (`COUNTERS`)",
            )));
        }
    };
    if req.method() != Method::Post && gateway_shape(&path).is_some() {
        let m = req.method().to_string();
        let mut r = problem(gateway::method_not_allowed(&m, &path));
        let _ = r.headers_mut().set("allow", "POST");
        return Ok(r);
    }
    if req.method() != Method::Post || gateway_shape(&path).is_none() {
        return Ok(business_api(&iso, &remote, req, &path).await);
    }
    let cfg = iso.gw.config();
    let body = match read_body(&mut req, cfg.client.max_body_bytes).await {
        Ok(b) => b,
        Err(p) => return Ok(problem(p)),
    };
    let peer = header(&req, "cf-connecting-ip")
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let xff = header(&req, "x-forwarded-for");
    let user = header(&req, &cfg.client.user_header);
    let conversation = header(&req, &cfg.client.conversation_header);
    let facts = RequestFacts {
        path: &path,
        peer,
        forwarded_for: xff.as_deref(),
        user: user.as_deref(),
        conversation: conversation.as_deref(),
        body: &body,
        now,
    };
    let admitted = match replay::run(&remote, |s, now| {
        let facts = RequestFacts {
            now,
            ..facts.clone()
        };
        iso.gw.admit(s, &facts)
    })
    .await
    {
        Ok(a) => a,
        Err(r) => {
            // The flags are cached per isolate: the refusal says the tier like the others.
            let f = flags(&iso, &env, now).await;
            return Ok(refusal(&r, Some(iso.gw.tier(f.tier.as_deref()))));
        }
    };
    let challenge = challenge(&iso, &remote, &admitted, &req).await;
    let f = flags(&iso, &env, now).await;
    let plan = replay::run(&remote, |s, now| {
        iso.gw.plan(
            s,
            &admitted,
            f.kb.as_deref(),
            f.tier.as_deref(),
            &challenge,
            now,
        )
    })
    .await;
    let tier = iso.gw.tier(f.tier.as_deref());
    Ok(match plan {
        Plan::Answer(a) => answer(&ctx, &remote, a),
        Plan::Refuse(r) => refusal(&r, Some(tier)),
        Plan::Forward(fw) => forward(iso.clone(), remote, &ctx, &req, admitted, fw, f).await,
    })
}

/// Bytes of an oversized body read and dropped before answering 413, so the connection can
/// carry the client's next request; past this the 413 goes out at once.
const DRAIN_LIMIT: usize = 16 << 20;

/// Reads the request body chunk by chunk, keeping at most `max` bytes: an oversized body is
/// never held in memory.
async fn read_body(req: &mut Request, max: usize) -> Result<Vec<u8>, Problem> {
    let declared = header(req, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(gateway::body_too_large(max));
    }
    let Ok(stream) = req.stream() else {
        // No body at all.
        return Ok(Vec::new());
    };
    let mut stream = Box::pin(stream);
    let mut body = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Problem::bad_request(format!("unreadable body: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total <= max {
            body.extend_from_slice(&chunk);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > max {
        return Err(gateway::body_too_large(max));
    }
    Ok(body)
}

fn gateway_shape(path: &str) -> Option<tidegate_core::request::Shape> {
    tidegate_core::request::Shape::from_path(path)
}

/// A header as text (`None` when absent or unreadable).
fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

async fn challenge(
    iso: &Isolate,
    remote: &DoRemote,
    admitted: &Admitted,
    req: &Request,
) -> Challenge {
    let t = &iso.gw.config().turnstile;
    if !t.enabled {
        return Challenge::Passed;
    }
    let subject = admitted.client.subject();
    let remembered = replay::run(remote, |s, now| turnstile::is_remembered(s, &subject, now))
        .await
        .unwrap_or(false);
    let ip = admitted.client.ip.to_string();
    let token = header(req, &t.token_header);
    match turnstile::precheck(t, token.as_deref(), Some(&ip), &subject, remembered) {
        turnstile::Precheck::Pass => Challenge::Passed,
        turnstile::Precheck::Fail(codes) => Challenge::Failed(codes),
        turnstile::Precheck::Verify(v) => {
            let reply = siteverify(&v).await;
            match turnstile::judge(t, reply.as_ref().map(|(s, b)| (*s, &b[..]))) {
                turnstile::Verdict::Pass => {
                    let _ = replay::run(remote, |s, now| turnstile::remember(s, &subject, now, t))
                        .await;
                    Challenge::Passed
                }
                turnstile::Verdict::Fail(codes) => Challenge::Failed(codes),
            }
        }
    }
}

async fn siteverify(v: &turnstile::SiteverifyRequest) -> Option<(u16, Vec<u8>)> {
    let headers = Headers::new();
    headers
        .set("content-type", turnstile::SiteverifyRequest::CONTENT_TYPE)
        .ok()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(v.body.clone().into()));
    let req = Request::new_with_init(&v.url, &init).ok()?;
    match fetch_within(req, 5_000).await {
        Some(Ok(mut r)) => {
            let status = r.status_code();
            r.bytes().await.ok().map(|b| (status, b))
        }
        Some(Err(e)) => {
            console_warn!("tidegate: siteverify unreachable: {e}");
            None
        }
        None => {
            console_warn!("tidegate: siteverify timed out");
            None
        }
    }
}

fn answer(ctx: &Context, remote: &DoRemote, a: Answer) -> Response {
    if let Some(call) = a.handoff.clone() {
        ctx.wait_until(hand_over(call, a.conversation.clone(), remote.clone()));
    }
    let resp = body_response(200, a.reply.content_type, a.reply.body.into_bytes());
    let mut h = gateway::response_headers(&a.limits, a.reason, Some(a.tier), None);
    if let Some(id) = a.faq_id {
        h.push(("x-tidegate-faq-id", id));
    }
    if a.handed_off {
        h.push(("x-tidegate-handoff", "true".into()));
    }
    with_headers(resp, h)
}

fn plan_response(ctx: &Context, remote: &DoRemote, plan: Plan) -> Response {
    match plan {
        Plan::Answer(a) => answer(ctx, remote, a),
        Plan::Refuse(r) => refusal(&r, None),
        Plan::Forward(_) => problem(Problem::new(
            Reason::Handoff,
            502,
            "Origin failed",
            "the origin could not answer",
        )),
    }
}

fn origin_headers(from: &Request, api_key: &str) -> worker::Result<Headers> {
    let h = Headers::new();
    for (k, v) in from.headers().entries() {
        if tidegate_core::request::HOP_BY_HOP_HEADERS.contains(&k.as_str())
            || k == "content-type"
            || k.starts_with("cf-")
            || k.starts_with("cf-turnstile")
        {
            continue;
        }
        h.set(&k, &v)?;
    }
    h.set("content-type", "application/json")?;
    if !api_key.is_empty() {
        h.set("authorization", &format!("Bearer {api_key}"))?;
    }
    Ok(h)
}

fn outcome_of(iso: &Isolate, filter: &ReplyFilter, admitted: &Admitted) -> OriginOutcome {
    iso.gw.outcome(admitted, filter.report())
}

async fn forward(
    iso: Rc<Isolate>,
    remote: DoRemote,
    ctx: &Context,
    client_req: &Request,
    admitted: Admitted,
    f: Forward,
    flags: Flags,
) -> Response {
    if f.delay_ms > 0 {
        Delay::from(Duration::from_millis(f.delay_ms)).await;
    }
    let cfg = iso.gw.config();
    let tiers = &cfg.tiers;
    let (base, key) = if f.route.fallback_origin && !tiers.fallback_url.is_empty() {
        let key = if tiers.fallback_api_key.is_empty() {
            &cfg.origin.api_key
        } else {
            &tiers.fallback_api_key
        };
        (tiers.fallback_url.trim_end_matches('/'), key.as_str())
    } else {
        (
            cfg.origin.url.trim_end_matches('/'),
            cfg.origin.api_key.as_str(),
        )
    };
    let shape = admitted.req.shape;
    let url = format!("{base}{}", shape.path());
    let failed = |status: Option<u16>, retry_after: Option<String>| {
        let iso = iso.clone();
        let admitted = admitted.clone();
        let f = f.clone();
        let remote = remote.clone();
        async move {
            replay::run(&remote, |s, now| {
                iso.gw
                    .origin_failed(s, &admitted, &f, status, retry_after.as_deref(), now)
            })
            .await
        }
    };
    let req = match origin_headers(client_req, key).and_then(|h| {
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(h)
            .with_body(Some(worker::js_sys::Uint8Array::from(&f.body[..]).into()));
        Request::new_with_init(&url, &init)
    }) {
        Ok(r) => r,
        Err(e) => {
            console_error!("tidegate: origin request could not be built: {e}");
            return plan_response(ctx, &remote, failed(None, None).await);
        }
    };
    let mut resp = match fetch_within(req, cfg.origin.first_byte_timeout_ms).await {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            console_warn!("tidegate: origin unreachable: {e}");
            return plan_response(ctx, &remote, failed(None, None).await);
        }
        None => {
            console_warn!("tidegate: origin timed out before the first byte");
            return plan_response(ctx, &remote, failed(None, None).await);
        }
    };
    let status = resp.status_code();
    if status == 429 || status >= 500 {
        let ra = resp.headers().get("retry-after").ok().flatten();
        console_warn!("tidegate: origin refused with {status}");
        return plan_response(ctx, &remote, failed(Some(status), ra).await);
    }
    let mut decision =
        gateway::response_headers(&f.limits, Reason::Forwarded, Some(f.route.tier), None);
    decision.push(("x-tidegate-model", f.route.model.clone()));
    let content_type = resp.headers().get("content-type").ok().flatten();
    if !(200..300).contains(&status) {
        let outcome = OriginOutcome {
            tokens: 0,
            complete: true,
            dont_know: false,
        };
        replay::run(&remote, |s, now| {
            iso.gw.settle(s, &admitted, &f, &outcome, now)
        })
        .await;
        let body = resp.bytes().await.unwrap_or_default();
        let ct = content_type.unwrap_or_else(|| "application/json".into());
        return with_headers(body_response(status, &ct, body), decision);
    }
    let filter = ReplyFilter::new(
        shape,
        admitted.req.stream,
        iso.validator.clone(),
        flags.codes.clone(),
    )
    .hiding_usage(f.usage_added);
    let upstream = match resp.stream() {
        Ok(s) => s,
        Err(e) => {
            console_warn!("tidegate: origin body unreadable: {e}");
            return plan_response(ctx, &remote, failed(None, None).await);
        }
    };
    let total = cfg.origin.total_timeout_ms;
    if admitted.req.stream {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
        let pump = pump(
            iso.clone(),
            remote,
            admitted,
            f,
            upstream,
            filter,
            tx,
            total,
        );
        ctx.wait_until(pump);
        let body = match Response::from_stream(rx.map(Ok::<Vec<u8>, worker::Error>)) {
            Ok(r) => r,
            Err(e) => {
                console_error!("tidegate: stream response failed: {e}");
                return problem(Problem::new(
                    Reason::Handoff,
                    502,
                    "Origin failed",
                    "relay failed",
                ));
            }
        };
        let h = body.headers();
        let _ = h.set(
            "content-type",
            content_type.as_deref().unwrap_or("text/event-stream"),
        );
        let _ = h.set("cache-control", "no-cache");
        return with_headers(body, decision);
    }
    relay_whole(
        &iso,
        &remote,
        ctx,
        admitted,
        f,
        upstream,
        filter,
        content_type,
        decision,
        total,
    )
    .await
}

/// Reads the origin stream, filters it chunk by chunk into `tx`, then settles the budget and
/// hands over when the stream did not really answer. Runs under `waitUntil`, so a client that
/// leaves does not stop the settlement.
#[allow(clippy::too_many_arguments)]
async fn pump(
    iso: Rc<Isolate>,
    remote: DoRemote,
    admitted: Admitted,
    f: Forward,
    upstream: worker::ByteStream,
    mut filter: ReplyFilter,
    mut tx: mpsc::Sender<Vec<u8>>,
    total_ms: u64,
) {
    let mut upstream = Box::pin(upstream);
    let mut deadline = Box::pin(Delay::from(Duration::from_millis(total_ms)));
    let mut ok = true;
    let mut client_gone = false;
    loop {
        match select(upstream.next(), deadline.as_mut()).await {
            Either::Left((Some(Ok(chunk)), _)) => {
                let out = filter.push(&chunk);
                if !out.is_empty() && tx.send(out).await.is_err() {
                    client_gone = true;
                    break;
                }
            }
            Either::Left((Some(Err(e)), _)) => {
                console_warn!("tidegate: origin stream broke: {e}");
                ok = false;
                break;
            }
            Either::Left((None, _)) => break,
            Either::Right(((), _)) => {
                console_warn!("tidegate: origin stream exceeded the total timeout");
                ok = false;
                break;
            }
        }
    }
    let tail = filter.finish(ok && !client_gone);
    if !client_gone && !tail.is_empty() {
        let _ = tx.send(tail).await;
    }
    drop(tx);
    let outcome = outcome_of(&iso, &filter, &admitted);
    let s = replay::run(&remote, |s, now| {
        iso.gw.settle(s, &admitted, &f, &outcome, now)
    })
    .await;
    if let Some(call) = s.handoff {
        hand_over(call, s.conversation, remote.clone()).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn relay_whole(
    iso: &Isolate,
    remote: &DoRemote,
    ctx: &Context,
    admitted: Admitted,
    f: Forward,
    upstream: worker::ByteStream,
    mut filter: ReplyFilter,
    content_type: Option<String>,
    decision: Vec<(&'static str, String)>,
    total_ms: u64,
) -> Response {
    let mut upstream = Box::pin(upstream);
    let mut deadline = Box::pin(Delay::from(Duration::from_millis(total_ms)));
    let mut out = Vec::new();
    let mut ok = true;
    loop {
        match select(upstream.next(), deadline.as_mut()).await {
            Either::Left((Some(Ok(chunk)), _)) => out.extend_from_slice(&filter.push(&chunk)),
            Either::Left((Some(Err(_)), _)) | Either::Right(_) => {
                ok = false;
                break;
            }
            Either::Left((None, _)) => break,
        }
    }
    out.extend_from_slice(&filter.finish(ok));
    let outcome = outcome_of(iso, &filter, &admitted);
    let unusable = replay::run(remote, |s, now| {
        iso.gw.finish_whole(s, &admitted, &f, &outcome, now)
    })
    .await;
    if let Some(plan) = unusable {
        return plan_response(ctx, remote, plan);
    }
    let ct = content_type.unwrap_or_else(|| "application/json".into());
    with_headers(body_response(200, &ct, out), decision)
}

/// A business API request: its limit and queue from the core, then a plain proxy.
async fn business_api(iso: &Isolate, remote: &DoRemote, mut req: Request, path: &str) -> Response {
    // Read (or drain) the body before any answer: a request body left unread makes the
    // runtime drop the connection, which the client may be about to reuse.
    let body = read_body(&mut req, iso.gw.config().client.max_body_bytes).await;
    let Some(decision) = replay::run(remote, |s, now| iso.gw.admit_api(s, path, now)).await else {
        return problem(Problem::new(
            Reason::BadRequest,
            404,
            "Not found",
            "no such endpoint",
        ));
    };
    let outcome: Outcome = match decision {
        Ok(o) => o,
        Err(r) => return refusal(&r, None),
    };
    if let Verdict::Delay { wait_ms } = outcome.verdict {
        Delay::from(Duration::from_millis(wait_ms)).await;
    }
    let decorate = |r: Response, o: &Outcome| {
        with_headers(
            r,
            gateway::response_headers(std::slice::from_ref(o), Reason::Forwarded, None, None),
        )
    };
    let Some((api, _)) = iso.gw.config().api_for(path) else {
        return problem(Problem::new(
            Reason::BadRequest,
            404,
            "Not found",
            "no such endpoint",
        ));
    };
    if api.upstream.is_empty() {
        let p = Problem::new(
            Reason::BadRequest,
            502,
            "No upstream",
            format!("business API `{}` has no upstream configured", api.name),
        );
        return decorate(problem(p), &outcome);
    }
    let query = req
        .url()
        .ok()
        .and_then(|u| u.query().map(|q| format!("?{q}")));
    let url = format!(
        "{}{path}{}",
        api.upstream.trim_end_matches('/'),
        query.unwrap_or_default()
    );
    let body = match body {
        Ok(b) => b,
        Err(p) => return decorate(problem(p), &outcome),
    };
    let built = origin_headers(&req, "").and_then(|h| {
        if let Some(ct) = header(&req, "content-type") {
            h.set("content-type", &ct)?;
        }
        let mut init = RequestInit::new();
        init.with_method(req.method()).with_headers(h);
        if !body.is_empty() {
            init.with_body(Some(worker::js_sys::Uint8Array::from(&body[..]).into()));
        }
        Request::new_with_init(&url, &init)
    });
    let sent = match built {
        Ok(r) => fetch_within(r, 30_000).await,
        Err(e) => Some(Err(e)),
    };
    match sent {
        Some(Ok(mut r)) => {
            // A fetched response's headers are immutable: re-wrap its body.
            let status = r.status_code();
            let h = Headers::new();
            if let Some(ct) = r.headers().get("content-type").ok().flatten() {
                let _ = h.set("content-type", &ct);
            }
            match r.stream().and_then(Response::from_stream) {
                Ok(out) => decorate(out.with_status(status).with_headers(h), &outcome),
                Err(e) => {
                    console_warn!("tidegate: business API body unreadable: {e}");
                    decorate(
                        problem(Problem::bad_request("upstream body unreadable")),
                        &outcome,
                    )
                }
            }
        }
        _ => {
            console_warn!("tidegate: business API upstream failed: {url}");
            let p = Problem::new(
                Reason::OriginBusy,
                503,
                "Upstream unavailable",
                "the business API did not answer",
            )
            .with_retry_after(1);
            decorate(problem(p), &outcome)
        }
    }
}
