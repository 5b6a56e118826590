//! The proxy-wasm contexts: one root context per worker VM (configuration, the timer, KV
//! pulls, outbound calls) and one HTTP context per request (the core's three stages).
//!
//! Host calls go through `proxy_wasm::hostcalls`, whose `Result`s are ignored or mapped, never
//! unwrapped: a panic aborts the VM and with it every request on that worker.
//!
//! The QPS-based tier recommendation runs on the root tick ([`crate::watch`]): requests
//! forwarded to the origin are counted in memory, one worker a second evaluates them, writes
//! the recommendation to the KV source and posts the alert.
//! Per-request cost (docs/benchmarks-envoy.md): every host call that returns data also calls
//! back into the VM to allocate, so the request path reads the request headers with one
//! `get_map`, reads the flags from a copy the root context refreshes on its tick, leaves
//! headers and bodies alone when nothing about them changes, and lets Envoy hold a small
//! whole reply until it is validated instead of copying it into the VM chunk by chunk.
//! TODO(#6): the 10% throughput target is not met. An admitted chat request costs Envoy about
//! three times its own CPU, and no proxy-wasm filter doing what #6 asks can meet it: the floor
//! probe (`envoy/bench/floor-probe`), which makes only the unavoidable host calls, costs about
//! 70% on its own. What remains above that floor is the core's work in V8 (FAQ lookup, request
//! parse and splice, reply validation). `pass_through` paths meet the target only because
//! `envoy/gen-config` routes them past the filter; when the filter sees one itself it costs
//! what an empty module does plus one `:path` read. Figures in docs/benchmarks-envoy.md.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use tidegate_core::decision::HttpCall;
use tidegate_core::gateway::{
    self, Admitted, Answer, Challenge, Forward, Gateway, OriginOutcome, Plan, Refusal, RequestFacts,
};
use tidegate_core::ratelimit::{Outcome, Verdict};
use tidegate_core::reply::{ReplyFilter, Validator};
use tidegate_core::request::Shape;
use tidegate_core::tier::{Recommendation, Tier};
use tidegate_core::{turnstile, Problem, Reason, UnixMs};

use crate::flags::{self, FlagKeys, Flags, Pulled};
use crate::settings::{self, FilterConfig};
use crate::shared::{self, SharedData, SharedStore};
use crate::watch;

/// How often the root context wakes: queued requests, outbound calls, KV refresh.
const TICK: Duration = Duration::from_millis(50);
/// Attempts of a handoff or alert call.
const CALL_ATTEMPTS: u32 = 3;

/// Shared data through the host.
struct Host;

impl SharedData for Host {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, String> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), cas)) => Ok(Some((v, cas.unwrap_or(0)))),
            Ok((None, _)) => Ok(None),
            Err(s) => Err(format!("get_shared_data: {s:?}")),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(s) => Err(format!("set_shared_data: {s:?}")),
        }
    }
}

/// A call the root context makes for a request (handoff, alert), with retries.
#[derive(Clone, Debug)]
struct Outbound {
    cluster: String,
    authority: String,
    path: String,
    call: HttpCall,
    what: &'static str,
    attempt: u32,
    /// A write of the recommended tier to the tier flag (`[tiers] auto_activate`): the alert
    /// is posted once the write is answered, saying whether it took.
    activates: Option<Recommendation>,
    /// A handoff's conversation (as the core scoped it): given back to the bot when the call
    /// is refused or abandoned, so nobody is left with a silent bot and no human.
    conversation: Option<String>,
}

thread_local! {
    /// Calls waiting for the root context's next tick.
    static OUTBOX: RefCell<Vec<Outbound>> = const { RefCell::new(Vec::new()) };
    /// Requests held by the origin cap's queue: (context id, resume at ms).
    static WAKE: RefCell<Vec<(u32, u64)>> = const { RefCell::new(Vec::new()) };
}

fn now() -> UnixMs {
    let t = hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    UnixMs(t)
}

/// Metric ids of this VM.
#[derive(Debug, Default)]
struct Metrics {
    decisions: Vec<(Reason, u32)>,
    tier: Option<u32>,
    tier_recommended: Option<u32>,
    origin_qps: Option<u32>,
    origin_failures: Option<u32>,
    codes_replaced: Option<u32>,
    tokens_charged: Option<u32>,
    handoffs: Option<u32>,
    kv_failures: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Metrics {
            decisions: Reason::ALL
                .iter()
                .filter_map(|r| {
                    counter(&format!("tidegate.decision.{}", r.as_str())).map(|id| (*r, id))
                })
                .collect(),
            tier: hostcalls::define_metric(MetricType::Gauge, "tidegate.tier").ok(),
            tier_recommended: hostcalls::define_metric(
                MetricType::Gauge,
                "tidegate.tier_recommended",
            )
            .ok(),
            origin_qps: hostcalls::define_metric(MetricType::Gauge, "tidegate.origin_qps").ok(),
            origin_failures: counter("tidegate.origin_failures"),
            codes_replaced: counter("tidegate.codes_replaced"),
            tokens_charged: counter("tidegate.tokens_charged"),
            handoffs: counter("tidegate.handoffs"),
            kv_failures: counter("tidegate.kv_failures"),
        }
    }

    fn decision(&self, reason: Reason) {
        if let Some((_, id)) = self.decisions.iter().find(|(r, _)| *r == reason) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }

    fn add(id: Option<u32>, n: u64) {
        if let (Some(id), Ok(n)) = (id, i64::try_from(n)) {
            if n > 0 {
                let _ = hostcalls::increment_metric(id, n);
            }
        }
    }

    fn set(id: Option<u32>, v: u64) {
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, v);
        }
    }
}

/// What every context of a VM shares.
struct Filter {
    cfg: FilterConfig,
    gw: Gateway,
    validator: Arc<Validator>,
    keys: FlagKeys,
    metrics: Metrics,
    /// This VM's copy of the flags, refreshed by the root context ([`Filter::refresh_flags`]).
    flags: RefCell<Rc<Flags>>,
    tag: u16,
    /// This VM's origin requests not yet added to the shared meter.
    origin_meter: watch::Local,
}

impl Filter {
    fn store(&self, now: UnixMs) -> SharedStore<'static, Host> {
        SharedStore::new(&Host, now.0, self.tag)
    }

    /// The flags as last refreshed: no host call, so requests pay nothing for them.
    fn flags(&self) -> Rc<Flags> {
        self.flags.borrow().clone()
    }

    /// Re-reads the flags from shared data when their generation moved. The root context calls
    /// this on every tick and right after it stored a pulled change, so a request sees a change
    /// at most one tick (50 ms) after any worker stored it.
    fn refresh_flags(&self) {
        let generation = flags::generation(&Host);
        let last = self.flags();
        if last.generation == generation {
            return;
        }
        let (next, err) = flags::load(&Host, &self.keys, generation, &last);
        if let Some(e) = err {
            warn!("tidegate: {e}; keeping the last knowledge base");
        }
        Metrics::set(self.metrics.tier, u64::from(next.tier_level()));
        *self.flags.borrow_mut() = Rc::new(next);
    }

    /// Queues a handoff of `conversation`, or an alert call, for the root context.
    fn send(&self, call: HttpCall, what: &'static str, conversation: Option<String>) {
        let cluster = match what {
            "handoff" => &self.cfg.envoy.chatwoot_cluster,
            _ => &self.cfg.envoy.alert_cluster,
        };
        let Some((authority, path)) = settings::split_url(&call.url) else {
            warn!("tidegate: {what} call to an unusable URL dropped");
            return;
        };
        OUTBOX.with(|o| {
            o.borrow_mut().push(Outbound {
                cluster: cluster.clone(),
                authority,
                path,
                call,
                what,
                attempt: 1,
                activates: None,
                conversation,
            })
        });
    }
}

/// The root context of one VM.
pub struct Root {
    filter: Option<Rc<Filter>>,
    kv_calls: HashMap<u32, String>,
    out_calls: HashMap<u32, Outbound>,
}

/// Creates the root context (registered in `lib.rs`).
pub fn new_root(_context_id: u32) -> Box<dyn RootContext> {
    Box::new(Root {
        filter: None,
        kv_calls: HashMap::new(),
        out_calls: HashMap::new(),
    })
}

fn vm_tag() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now().0);
    (h.finish() & 0xffff) as u16
}

impl Root {
    fn dispatch(&mut self, o: Outbound, timeout_ms: u64) {
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", o.call.method),
            (":path", &o.path),
            (":authority", &o.authority),
        ];
        for (k, v) in &o.call.headers {
            headers.push((k, v));
        }
        match hostcalls::dispatch_http_call(
            &o.cluster,
            headers,
            Some(o.call.body.as_bytes()),
            vec![],
            Duration::from_millis(timeout_ms),
        ) {
            Ok(token) => {
                self.out_calls.insert(token, o);
            }
            Err(s) => error!(
                "tidegate: {} call to cluster `{}` could not be made: {s:?}",
                o.what, o.cluster
            ),
        }
    }

    /// The tier recommendation ([`watch`]): this VM's finished seconds go to the shared meter,
    /// and the worker that wins the second's evaluation publishes a change: the recommendation
    /// (and with `auto_activate` the tier flag) written to the KV source, then the alert.
    fn watch_tiers(&mut self, f: &Filter, now: UnixMs) {
        if let Err(e) = f.origin_meter.flush(&Host, now) {
            warn!("tidegate: origin meter: {e}");
        }
        let cfg = &f.cfg.core.tiers;
        let reading = match watch::evaluate(&Host, now, cfg) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                warn!("tidegate: tier watch: {e}");
                return;
            }
        };
        Metrics::set(f.metrics.origin_qps, reading.qps.round() as u64);
        let Some(rec) = reading.change else { return };
        Metrics::set(f.metrics.tier_recommended, u64::from(rec.to.level()));
        warn!(
            "tidegate: tier recommendation {} -> {} at {:.1} origin req/s",
            rec.from.as_str(),
            rec.to.as_str(),
            rec.qps
        );
        let kv = &f.cfg.envoy.kv;
        let timeout = f.cfg.envoy.call_timeout_ms;
        if kv.cluster.is_empty() {
            warn!("tidegate: no [envoy.kv] cluster: the tier recommendation is not stored");
        } else {
            self.dispatch(kv_write(kv, &cfg.recommendation_key, rec.to, None), timeout);
            if cfg.auto_activate {
                // The alert waits for this write's answer: it says whether the tier changed.
                self.dispatch(kv_write(kv, &cfg.flag_key, rec.to, Some(rec)), timeout);
                return;
            }
        }
        alert(f, &rec, false);
    }

    fn pull_flags(&mut self, f: &Filter, now: UnixMs) {
        let kv = &f.cfg.envoy.kv;
        if kv.cluster.is_empty() || !flags::claim_refresh(&Host, now.0, kv.refresh_ms) {
            return;
        }
        let auth = format!("Bearer {}", kv.token);
        for key in f.keys.all() {
            let path = kv.path_for(key);
            let mut headers = vec![
                (":method", "GET"),
                (":path", path.as_str()),
                (":authority", kv.authority.as_str()),
            ];
            if !kv.token.is_empty() {
                headers.push(("authorization", auth.as_str()));
            }
            match hostcalls::dispatch_http_call(
                &kv.cluster,
                headers,
                None,
                vec![],
                Duration::from_millis(kv.timeout_ms),
            ) {
                Ok(token) => {
                    self.kv_calls.insert(token, key.to_owned());
                }
                Err(s) => {
                    Metrics::add(f.metrics.kv_failures, 1);
                    warn!("tidegate: KV pull of `{key}` could not start: {s:?}");
                }
            }
        }
    }
}

/// A `PUT` of `tier` under `key` at the KV source: the native admin API
/// (`PUT /admin/flags/{key}`) and the Cloudflare KV REST API (`PUT .../values/{key}`) both
/// take the value as the raw body at the path they are read from.
fn kv_write(
    kv: &settings::KvSource,
    key: &str,
    tier: Tier,
    activates: Option<Recommendation>,
) -> Outbound {
    let mut headers = vec![("content-type".to_owned(), "text/plain".to_owned())];
    if !kv.token.is_empty() {
        headers.push(("authorization".to_owned(), format!("Bearer {}", kv.token)));
    }
    Outbound {
        cluster: kv.cluster.clone(),
        authority: kv.authority.clone(),
        path: kv.path_for(key),
        call: HttpCall {
            method: "PUT",
            url: String::new(),
            headers,
            body: tier.as_str().to_owned(),
        },
        what: "kv write",
        attempt: 1,
        activates,
        conversation: None,
    }
}

/// Posts the alert for a recommendation. `activated`: the tier flag now holds it.
fn alert(f: &Filter, rec: &Recommendation, activated: bool) {
    let active = if activated {
        rec.to
    } else {
        f.gw.tier(f.flags().tier.as_deref())
    };
    if let Some(call) = rec.alert_call(&f.cfg.core.tiers, active, activated) {
        f.send(call, "alert", None);
    }
}

fn call_reply(num_headers: usize, body_size: usize) -> Option<(u16, Vec<u8>)> {
    if num_headers == 0 {
        return None; // timeout or connection failure
    }
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok())?;
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    Some((status, body))
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(f) = self.filter.clone() else { return };
        let reply = call_reply(num_headers, body_size);
        if let Some(key) = self.kv_calls.remove(&token_id) {
            let pulled = flags::classify(reply);
            if let Pulled::Failed(why) = &pulled {
                Metrics::add(f.metrics.kv_failures, 1);
                warn!("tidegate: KV pull of `{key}` failed ({why}); keeping the last good value");
            }
            match flags::store(&Host, &key, &pulled) {
                Ok(true) => {
                    info!("tidegate: flag `{key}` changed");
                    f.refresh_flags();
                }
                Ok(false) => {}
                Err(e) => warn!("tidegate: flag `{key}` not stored: {e}"),
            }
            return;
        }
        let Some(mut o) = self.out_calls.remove(&token_id) else {
            return;
        };
        match reply {
            Some((s, _)) if (200..300).contains(&s) => {
                if o.what == "handoff" {
                    Metrics::add(f.metrics.handoffs, 1);
                }
                info!("tidegate: {} call done ({s})", o.what);
                if let Some(rec) = o.activates.take() {
                    // In force on every worker at once, not only after the next pull.
                    let tier = Pulled::Value(rec.to.as_str().as_bytes().to_vec());
                    if let Err(e) = flags::store(&Host, &f.keys.tier, &tier) {
                        warn!("tidegate: activated tier not stored locally: {e}");
                    }
                    f.refresh_flags();
                    alert(&f, &rec, true);
                }
            }
            Some((s, _)) if (400..500).contains(&s) => {
                warn!("tidegate: {} call refused ({s})", o.what);
                if let Some(rec) = o.activates.take() {
                    alert(&f, &rec, false);
                }
                give_back(&f, o.conversation.take());
            }
            other => {
                let status = other.map(|(s, _)| s);
                if o.attempt < CALL_ATTEMPTS {
                    warn!(
                        "tidegate: {} call failed ({status:?}), attempt {}",
                        o.what, o.attempt
                    );
                    o.attempt += 1;
                    OUTBOX.with(|q| q.borrow_mut().push(o));
                } else {
                    error!(
                        "tidegate: {} call abandoned after {CALL_ATTEMPTS} attempts",
                        o.what
                    );
                    if let Some(rec) = o.activates.take() {
                        alert(&f, &rec, false);
                    }
                    give_back(&f, o.conversation.take());
                }
            }
        }
    }
}

/// True when Envoy ended the stream because the client went away (its response code details
/// `downstream_remote_disconnect`, `downstream_local_disconnect(...)`), not the origin.
fn client_left() -> bool {
    hostcalls::get_property(vec!["response", "code_details"])
        .ok()
        .flatten()
        .is_some_and(|d| d.starts_with(b"downstream_"))
}

/// A handoff that could not be delivered: the conversation goes back to the bot.
fn give_back(f: &Filter, conversation: Option<String>) {
    let Some(conv) = conversation else { return };
    match tidegate_core::handoff::release(&f.store(now()), &conv) {
        Ok(()) => warn!("tidegate: handoff of {conv} not delivered; it is back with the bot"),
        Err(e) => error!("tidegate: handoff of {conv} not delivered and not released: {e}"),
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // Create the lock and flag cells before any request: see `shared`.
        if let Err(e) = shared::init_lock(&Host)
            .and_then(|()| flags::init(&Host))
            .and_then(|()| watch::init(&Host))
        {
            error!("tidegate: shared data not initialised: {e}");
            return false;
        }
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let Ok(text) = std::str::from_utf8(&raw) else {
            error!("tidegate: the plugin configuration is not UTF-8");
            return false;
        };
        let cfg = match settings::parse(text) {
            Ok(c) => c,
            Err(e) => {
                error!("tidegate: configuration: {e}");
                return false;
            }
        };
        let validator = match Validator::new(&cfg.core.validation) {
            Ok(v) => Arc::new(v),
            Err((field, m)) => {
                error!("tidegate: configuration: `validation.{field}`: {m}");
                return false;
            }
        };
        let gw = match Gateway::new(cfg.core.clone()) {
            Ok(g) => g,
            Err(e) => {
                error!("tidegate: configuration: {e}");
                return false;
            }
        };
        let keys = FlagKeys {
            tier: cfg.core.tiers.flag_key.clone(),
            codes: validator.codes_key().to_owned(),
            faq: cfg.envoy.kv.faq_key.clone(),
        };
        if cfg.envoy.kv.cluster.is_empty() {
            warn!("tidegate: no [envoy.kv] cluster: flags, valid codes and the FAQ stay unset");
        }
        info!(
            "tidegate: configured (limits ip {}/{}s user {}/{}s, KV refresh {} ms)",
            cfg.core.limits.ip.limit,
            cfg.core.limits.ip.window_secs,
            cfg.core.limits.user.limit,
            cfg.core.limits.user.window_secs,
            cfg.envoy.kv.refresh_ms
        );
        self.filter = Some(Rc::new(Filter {
            cfg,
            gw,
            validator,
            keys,
            metrics: Metrics::define(),
            flags: RefCell::new(Rc::new(Flags::default())),
            tag: vm_tag(),
            origin_meter: watch::Local::default(),
        }));
        if let Some(f) = &self.filter {
            f.refresh_flags();
        }
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(f) = self.filter.clone() else { return };
        f.refresh_flags();
        let now = now();
        let due: Vec<u32> = WAKE.with(|w| {
            let mut w = w.borrow_mut();
            let ready = w.iter().filter(|(_, at)| *at <= now.0).map(|(id, _)| *id);
            let ready: Vec<u32> = ready.collect();
            w.retain(|(_, at)| *at > now.0);
            ready
        });
        for id in due {
            if hostcalls::set_effective_context(id).is_ok() {
                let _ = hostcalls::resume_http_request();
            }
        }
        let out = OUTBOX.with(|o| std::mem::take(&mut *o.borrow_mut()));
        for o in out {
            self.dispatch(o, f.cfg.envoy.call_timeout_ms);
        }
        self.pull_flags(&f, now);
        self.watch_tiers(&f, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(context_id, self.filter.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Largest whole reply left in Envoy's buffer until it ends; a bigger one is moved into the
/// reply filter chunk by chunk, so Envoy's buffer limit never refuses it.
const HOLD_IN_ENVOY: usize = 64 * 1024;

/// A forwarded request on its way back.
struct Relay {
    admitted: Admitted,
    forward: Forward,
    /// The flags the request was planned with (the reply is validated with their codes).
    flags: Rc<Flags>,
    /// The reply filter, once the origin answered 2xx.
    reply: Option<ReplyFilter>,
    /// Part of a whole reply was moved out of Envoy's buffer into the reply filter.
    drained: bool,
    /// A body that replaces the origin's (origin failure turned into an answer).
    replace: Option<Vec<u8>>,
    /// Response headers were seen.
    answered: bool,
    /// The budget was settled.
    settled: bool,
}

/// The request headers the filter reads, fetched with one host call.
#[derive(Debug, Default)]
struct ReqHeaders {
    path: String,
    content_length: Option<String>,
    content_type: Option<String>,
    user: Option<String>,
    conversation: Option<String>,
    forwarded_for: Option<String>,
    token: Option<String>,
    /// The route header is present (the client's own value is removed).
    route: bool,
}

impl ReqHeaders {
    /// The request path without its query: one `get_map_value`, the only host call a request
    /// the filter does not act on costs (see [`EnvoySettings::passes_through`]).
    ///
    /// [`EnvoySettings::passes_through`]: crate::settings::EnvoySettings::passes_through
    fn path() -> String {
        let p = hostcalls::get_map_value(MapType::HttpRequestHeaders, ":path")
            .ok()
            .flatten()
            .unwrap_or_default();
        without_query(p)
    }

    /// Every request header: one `get_map`, one host call (and one allocation callback)
    /// instead of one of each per header.
    fn all() -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    /// The path (no query) among `pairs`, as [`ReqHeaders::path`] reads it.
    fn path_in(pairs: &[(String, String)]) -> String {
        let p = pairs.iter().find(|(k, _)| k == ":path");
        without_query(p.map(|(_, v)| v.clone()).unwrap_or_default())
    }

    /// The headers of a chat request the filter reads, from [`ReqHeaders::all`]. A repeated
    /// header counts with its first value, as `get_map_value` would return it.
    fn read(f: &Filter, path: String, pairs: &[(String, String)]) -> Self {
        let mut h = ReqHeaders {
            path,
            ..ReqHeaders::default()
        };
        let first = |slot: &mut Option<String>, v: &str| {
            if slot.is_none() {
                *slot = Some(v.to_owned());
            }
        };
        let c = &f.cfg.core.client;
        for (k, v) in pairs {
            match k.as_str() {
                "content-length" => first(&mut h.content_length, v),
                "content-type" => first(&mut h.content_type, v),
                "x-forwarded-for" => first(&mut h.forwarded_for, v),
                k if k.starts_with(':') => {}
                k if k.eq_ignore_ascii_case(&c.user_header) => first(&mut h.user, v),
                k if k.eq_ignore_ascii_case(&c.conversation_header) => {
                    first(&mut h.conversation, v)
                }
                k if k.eq_ignore_ascii_case(&f.cfg.core.turnstile.token_header) => {
                    first(&mut h.token, v)
                }
                k if k.eq_ignore_ascii_case(&f.cfg.envoy.route_header) => h.route = true,
                _ => {}
            }
        }
        h
    }
}

/// One request.
struct Http {
    id: u32,
    f: Option<Rc<Filter>>,
    /// The filter sent a local reply: response hooks leave it alone.
    local: bool,
    /// A path the filter does not act on ([`crate::settings::EnvoySettings::pass_through`]).
    passing: bool,
    req: ReqHeaders,
    /// The request body as received (empty until it ended).
    body: Vec<u8>,
    body_len: usize,
    /// Siteverify in flight for this admitted request.
    verifying: Option<(u32, Admitted)>,
    relay: Option<Relay>,
    /// Decision headers for a business API pass-through.
    api_limits: Option<Vec<Outcome>>,
    queued: Cell<bool>,
}

fn without_query(mut path: String) -> String {
    if let Some(q) = path.find('?') {
        path.truncate(q);
    }
    path
}

fn reason_of(p: &Problem) -> Reason {
    Reason::ALL
        .into_iter()
        .find(|r| r.as_str() == p.code)
        .unwrap_or(Reason::BadRequest)
}

fn peer() -> IpAddr {
    let raw = hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .unwrap_or_default();
    let s = String::from_utf8_lossy(&raw);
    s.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| s.parse::<IpAddr>())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// A response as the filter wants it sent: status, headers, body.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Http {
    fn new(id: u32, f: Option<Rc<Filter>>) -> Self {
        Http {
            id,
            f,
            local: false,
            passing: false,
            req: ReqHeaders::default(),
            body: Vec::new(),
            body_len: 0,
            verifying: None,
            relay: None,
            api_limits: None,
            queued: Cell::new(false),
        }
    }

    fn send_local(&mut self, r: Reply) -> Action {
        self.local = true;
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Err(s) = hostcalls::send_http_response(u32::from(r.status), headers, Some(&r.body)) {
            error!("tidegate: local reply not sent: {s:?}");
        }
        Action::Pause
    }

    fn refusal_reply(f: &Filter, r: &Refusal, tier: Option<Tier>) -> Reply {
        let p = &r.problem;
        let reason = reason_of(p);
        f.metrics.decision(reason);
        let mut headers = gateway::response_headers(&r.limits, reason, tier, p.retry_after);
        headers.push(("content-type", Problem::CONTENT_TYPE.to_owned()));
        if p.status == 429 {
            headers.push(("x-envoy-ratelimited", "true".to_owned()));
        }
        Reply {
            status: p.status,
            headers,
            body: p.to_json().into_bytes(),
        }
    }

    fn answer_reply(f: &Filter, a: Answer) -> Reply {
        f.metrics.decision(a.reason);
        if let Some(call) = a.handoff.clone() {
            f.send(call, "handoff", a.conversation.clone());
        }
        let mut headers = gateway::response_headers(&a.limits, a.reason, Some(a.tier), None);
        headers.push(("content-type", a.reply.content_type.to_owned()));
        if let Some(id) = a.faq_id {
            headers.push(("x-tidegate-faq-id", id));
        }
        if a.handed_off {
            headers.push(("x-tidegate-handoff", "true".to_owned()));
        }
        Reply {
            status: 200,
            headers,
            body: a.reply.body.into_bytes(),
        }
    }

    fn plan_reply(f: &Filter, plan: Plan) -> Reply {
        match plan {
            Plan::Answer(a) => Self::answer_reply(f, a),
            Plan::Refuse(r) => Self::refusal_reply(f, &r, None),
            // `origin_failed` never forwards again.
            Plan::Forward(_) => Self::refusal_reply(
                f,
                &Refusal {
                    problem: Problem::new(
                        Reason::Handoff,
                        502,
                        "Origin failed",
                        "the origin could not answer",
                    ),
                    limits: Vec::new(),
                },
                None,
            ),
        }
    }

    fn healthz(&mut self, f: &Filter) -> Action {
        let fl = f.flags();
        let body = serde_json::json!({
            "status": "ok",
            "host": "envoy",
            "tier": f.gw.tier(fl.tier.as_deref()).as_str(),
            "kb_version": fl.kb.as_ref().map(|k| k.version().to_owned()),
            "valid_codes": fl.codes.len(),
            "flags_generation": fl.generation,
        });
        self.send_local(Reply {
            status: 200,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string().into_bytes(),
        })
    }

    fn hold_until(&self, at_ms: u64) {
        self.queued.set(true);
        WAKE.with(|w| w.borrow_mut().push((self.id, at_ms)));
    }

    /// Stage 1 and the challenge, once the whole request body is here.
    fn decide(&mut self, f: &Rc<Filter>) -> Action {
        let t0 = crate::stages::span("rb.facts");
        let now = now();
        let facts = RequestFacts {
            path: &self.req.path,
            peer: peer(),
            forwarded_for: self.req.forwarded_for.as_deref(),
            user: self.req.user.as_deref(),
            conversation: self.req.conversation.as_deref(),
            body: &self.body,
            now,
        };
        let store = f.store(now);
        drop(t0);
        let t1 = crate::stages::span("rb.admit");
        let admitted = match f.gw.admit(&store, &facts) {
            Ok(a) => a,
            Err(r) => {
                let tier = f.gw.tier(f.flags().tier.as_deref());
                return self.send_local(Self::refusal_reply(f, &r, Some(tier)));
            }
        };
        drop(t1);
        let t = &f.cfg.core.turnstile;
        if !t.enabled {
            return self.plan(f, admitted, Challenge::Passed, now, true);
        }
        let subject = admitted.client.subject();
        let remembered = turnstile::is_remembered(&store, &subject, now).unwrap_or(false);
        let ip = admitted.client.ip.to_string();
        let challenge = match turnstile::precheck(
            t,
            self.req.token.as_deref(),
            Some(&ip),
            &subject,
            remembered,
        ) {
            turnstile::Precheck::Pass => Challenge::Passed,
            turnstile::Precheck::Fail(codes) => Challenge::Failed(codes),
            turnstile::Precheck::Verify(req) => {
                let Some((authority, path)) = settings::split_url(&req.url) else {
                    let ch = self.judged(f, None, &subject, now);
                    return self.plan(f, admitted, ch, now, true);
                };
                let sent = hostcalls::dispatch_http_call(
                    &f.cfg.envoy.turnstile_cluster,
                    vec![
                        (":method", "POST"),
                        (":path", &path),
                        (":authority", &authority),
                        ("content-type", turnstile::SiteverifyRequest::CONTENT_TYPE),
                    ],
                    Some(req.body.as_bytes()),
                    vec![],
                    Duration::from_millis(f.cfg.envoy.call_timeout_ms),
                );
                match sent {
                    Ok(token) => {
                        self.verifying = Some((token, admitted));
                        return Action::Pause;
                    }
                    Err(s) => {
                        warn!("tidegate: siteverify call could not start: {s:?}");
                        self.judged(f, None, &subject, now)
                    }
                }
            }
        };
        self.plan(f, admitted, challenge, now, true)
    }

    fn judged(
        &self,
        f: &Filter,
        reply: Option<(u16, &[u8])>,
        subject: &str,
        now: UnixMs,
    ) -> Challenge {
        let t = &f.cfg.core.turnstile;
        match turnstile::judge(t, reply) {
            turnstile::Verdict::Pass => {
                let _ = turnstile::remember(&f.store(now), subject, now, t);
                Challenge::Passed
            }
            turnstile::Verdict::Fail(codes) => Challenge::Failed(codes),
        }
    }

    /// Stage 2 at `now` (the clock read of the hook that calls it). `sync`: called from a
    /// request hook (return `Continue` to forward) rather than from a callback (resume the
    /// request instead).
    fn plan(
        &mut self,
        f: &Rc<Filter>,
        admitted: Admitted,
        ch: Challenge,
        now: UnixMs,
        sync: bool,
    ) -> Action {
        let fl = f.flags();
        let store = f.store(now);
        let t1 = crate::stages::span("rb.plan");
        let plan = f.gw.plan(
            &store,
            &admitted,
            fl.kb.as_deref(),
            fl.tier.as_deref(),
            &ch,
            now,
        );
        drop(t1);
        let _t2 = crate::stages::span("rb.forward");
        let tier = f.gw.tier(fl.tier.as_deref());
        let fw = match plan {
            Plan::Answer(a) => return self.send_local(Self::answer_reply(f, a)),
            Plan::Refuse(r) => return self.send_local(Self::refusal_reply(f, &r, Some(tier))),
            Plan::Forward(fw) => fw,
        };
        f.origin_meter.record(now);
        // Only what changes is written: every host call costs, and a changed request header
        // also makes Envoy clear its route cache.
        let set = |k: &str, v: Option<&str>| {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, k, v);
        };
        if fw.body != self.body {
            let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, self.body_len, &fw.body);
            set("content-length", Some(&fw.body.len().to_string()));
        }
        if self.req.content_type.as_deref() != Some("application/json") {
            set("content-type", Some("application/json"));
        }
        if self.req.token.is_some() {
            set(&f.cfg.core.turnstile.token_header, None);
        }
        let key = if fw.route.fallback_origin && !f.cfg.core.tiers.fallback_api_key.is_empty() {
            &f.cfg.core.tiers.fallback_api_key
        } else {
            &f.cfg.core.origin.api_key
        };
        if !key.is_empty() {
            set("authorization", Some(&format!("Bearer {key}")));
        }
        if fw.route.fallback_origin {
            set(&f.cfg.envoy.route_header, Some("fallback"));
        } else if self.req.route {
            set(&f.cfg.envoy.route_header, None);
        }
        self.body = Vec::new();
        let delay = fw.delay_ms;
        self.relay = Some(Relay {
            admitted,
            forward: fw,
            flags: fl,
            reply: None,
            drained: false,
            replace: None,
            answered: false,
            settled: false,
        });
        if delay > 0 {
            // Queued by the origin cap: the root context resumes the request.
            self.hold_until(now.0.saturating_add(delay));
            return Action::Pause;
        }
        if sync {
            Action::Continue
        } else {
            let _ = hostcalls::resume_http_request();
            Action::Pause
        }
    }

    fn outcome(f: &Filter, filter: &ReplyFilter, admitted: &Admitted) -> OriginOutcome {
        let report = filter.report();
        Metrics::add(f.metrics.codes_replaced, u64::from(report.codes_replaced));
        let outcome = f.gw.outcome(admitted, report);
        Metrics::add(f.metrics.tokens_charged, outcome.tokens);
        outcome
    }

    /// Replaces the origin's response headers by `r`'s; its body goes out at the end.
    fn replace_headers(r: &Reply, len: usize) {
        let status = r.status.to_string();
        let len = len.to_string();
        let mut h: Vec<(&str, &str)> = vec![(":status", &status), ("content-length", &len)];
        for (k, v) in &r.headers {
            h.push((k, v));
        }
        let _ = hostcalls::set_map(MapType::HttpResponseHeaders, h);
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(f) = self.f.clone() else { return };
        let Some((token, admitted)) = self.verifying.take() else {
            return;
        };
        if token != token_id {
            self.verifying = Some((token, admitted));
            return;
        }
        let reply = call_reply(num_headers, body_size);
        let subject = admitted.client.subject();
        let now = now();
        let ch = self.judged(
            &f,
            reply.as_ref().map(|(s, b)| (*s, b.as_slice())),
            &subject,
            now,
        );
        let _ = self.plan(&f, admitted, ch, now, false);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _t = crate::stages::span("req_headers");
        let Some(f) = self.f.clone() else {
            return self.send_local(Reply {
                status: 503,
                headers: vec![("content-type", "text/plain".into())],
                body: b"tidegate is not configured".to_vec(),
            });
        };
        // With pass-through prefixes, the path alone decides whether the filter acts (one
        // small host call for the paths it leaves alone); without, every request needs the
        // headers, so they are read at once, the path among them.
        let (path, pairs) = if f.cfg.envoy.pass_through.is_empty() {
            let pairs = ReqHeaders::all();
            (ReqHeaders::path_in(&pairs), Some(pairs))
        } else {
            (ReqHeaders::path(), None)
        };
        if path == "/healthz" {
            return self.healthz(&f);
        }
        if Shape::from_path(&path).is_none() {
            if f.cfg.core.api_for(&path).is_none() && f.cfg.envoy.passes_through(&path) {
                // Not the filter's: no other host call, and every later hook returns at once.
                self.passing = true;
                return Action::Continue;
            }
            let now = now();
            return match f.gw.admit_api(&f.store(now), &path, now) {
                None => self.send_local(Self::refusal_reply(
                    &f,
                    &Refusal {
                        problem: Problem::new(
                            Reason::BadRequest,
                            404,
                            "Not found",
                            "no chat endpoint here",
                        ),
                        limits: Vec::new(),
                    },
                    None,
                )),
                Some(Err(r)) => self.send_local(Self::refusal_reply(&f, &r, None)),
                Some(Ok(o)) => {
                    let wait = match o.verdict {
                        Verdict::Delay { wait_ms } => wait_ms,
                        _ => 0,
                    };
                    f.metrics.decision(Reason::Forwarded);
                    self.api_limits = Some(vec![o]);
                    if wait > 0 {
                        self.hold_until(now.0.saturating_add(wait));
                        Action::Pause
                    } else {
                        Action::Continue
                    }
                }
            };
        }
        let pairs = pairs.unwrap_or_else(ReqHeaders::all);
        if let Some((_, m)) = pairs.iter().find(|(k, _)| k == ":method") {
            if m != "POST" {
                let p = gateway::method_not_allowed(m, &path);
                let mut reply = Self::refusal_reply(
                    &f,
                    &Refusal {
                        problem: p,
                        limits: Vec::new(),
                    },
                    None,
                );
                reply.headers.push(("allow", "POST".to_owned()));
                return self.send_local(reply);
            }
        }
        self.req = ReqHeaders::read(&f, path, &pairs);
        let max = f.cfg.core.client.max_body_bytes;
        let declared =
            (self.req.content_length.as_deref()).and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n > max) {
            return self.too_large(&f);
        }
        if end_of_stream {
            return self.decide(&f);
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _t = crate::stages::span("req_body");
        let Some(f) = self.f.clone() else {
            return Action::Pause;
        };
        if self.passing || self.local || self.relay.is_some() || self.api_limits.is_some() {
            return Action::Continue;
        }
        self.body_len = body_size;
        if body_size > f.cfg.core.client.max_body_bytes {
            return self.too_large(&f);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.decide(&f)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _t = crate::stages::span("resp_headers");
        if self.local {
            return Action::Continue;
        }
        let Some(f) = self.f.clone() else {
            return Action::Continue;
        };
        let get = |k: &str| {
            hostcalls::get_map_value(MapType::HttpResponseHeaders, k)
                .ok()
                .flatten()
        };
        let set = |k: &str, v: Option<&str>| {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, k, v);
        };
        if let Some(limits) = &self.api_limits {
            for (k, v) in gateway::response_headers(limits, Reason::Forwarded, None, None) {
                set(k, Some(&v));
            }
            return Action::Continue;
        }
        let Some(relay) = self.relay.as_mut() else {
            return Action::Continue;
        };
        relay.answered = true;
        let status = get(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(502);
        let now = now();
        let store = f.store(now);
        if status == 429 || status >= 500 {
            // The origin (or Envoy on its behalf: connect failure, timeout) could not answer.
            Metrics::add(f.metrics.origin_failures, 1);
            let ra = get("retry-after");
            warn!("tidegate: origin answered {status} (retry-after {ra:?})");
            let plan = f.gw.origin_failed(
                &store,
                &relay.admitted,
                &relay.forward,
                Some(status),
                ra.as_deref(),
                now,
            );
            relay.settled = true;
            let r = Self::plan_reply(&f, plan);
            if end_of_stream {
                return self.send_local(r);
            }
            Self::replace_headers(&r, r.body.len());
            relay.replace = Some(r.body);
            return Action::Pause;
        }
        let tier = relay.forward.route.tier;
        let mut decision =
            gateway::response_headers(&relay.forward.limits, Reason::Forwarded, Some(tier), None);
        decision.push(("x-tidegate-model", relay.forward.route.model.clone()));
        for (k, v) in &decision {
            set(k, Some(v));
        }
        if !(200..300).contains(&status) {
            // The origin refused the request itself: relay it, charge nothing.
            let outcome = OriginOutcome {
                tokens: 0,
                complete: true,
                dont_know: false,
            };
            f.gw.settle(&store, &relay.admitted, &relay.forward, &outcome, now);
            relay.settled = true;
            f.metrics.decision(Reason::Forwarded);
            return Action::Continue;
        }
        let stream = relay.admitted.req.stream;
        relay.reply = Some(
            ReplyFilter::new(
                relay.admitted.req.shape,
                stream,
                f.validator.clone(),
                relay.flags.codes.clone(),
            )
            .hiding_usage(relay.forward.usage_added),
        );
        if stream {
            // Chunks may change length: never pass the origin's Content-Length on. (A whole
            // reply keeps it unless its body changes: see `on_http_response_body`.)
            set("content-length", None);
            f.metrics.decision(Reason::Forwarded);
            set("cache-control", Some("no-cache"));
            set("x-accel-buffering", Some("no"));
            return Action::Continue;
        }
        if end_of_stream {
            return Action::Continue;
        }
        // A whole reply: hold the headers until the rewritten body's length is known.
        Action::Pause
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _t = crate::stages::span("resp_body");
        if self.local {
            return Action::Continue;
        }
        let Some(f) = self.f.clone() else {
            return Action::Continue;
        };
        let Some(relay) = self.relay.as_mut() else {
            return Action::Continue;
        };
        if let Some(body) = &relay.replace {
            let out: &[u8] = if end_of_stream { body } else { &[] };
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, out);
            return if end_of_stream {
                Action::Continue
            } else {
                Action::Pause
            };
        }
        let Some(filter) = relay.reply.as_mut() else {
            return Action::Continue;
        };
        let stream = relay.admitted.req.stream;
        if !stream && !end_of_stream && !relay.drained && body_size <= HOLD_IN_ENVOY {
            // A small whole reply stays in Envoy's buffer until it ends: no copy into the VM,
            // and no copy back when validation leaves it as it is.
            return Action::Pause;
        }
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut out = filter.push(&chunk);
        let now = now();
        if stream {
            if end_of_stream {
                out.extend_from_slice(&filter.finish(true));
                let outcome = Self::outcome(&f, filter, &relay.admitted);
                if !outcome.complete {
                    Metrics::add(f.metrics.origin_failures, 1);
                }
                let s = f.gw.settle(
                    &f.store(now),
                    &relay.admitted,
                    &relay.forward,
                    &outcome,
                    now,
                );
                relay.settled = true;
                if let Some(call) = s.handoff {
                    f.send(call, "handoff", s.conversation);
                }
            }
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out);
            return Action::Continue;
        }
        // A large whole reply: the core buffers it; Envoy's copy is dropped chunk by chunk.
        if !end_of_stream {
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &[]);
            relay.drained = true;
            return Action::Pause;
        }
        let tf = crate::stages::span("rsb.finish");
        out.extend_from_slice(&filter.finish(true));
        drop(tf);
        let to = crate::stages::span("rsb.outcome");
        let outcome = Self::outcome(&f, filter, &relay.admitted);
        drop(to);
        let store = f.store(now);
        relay.settled = true;
        if let Some(plan) =
            f.gw.finish_whole(&store, &relay.admitted, &relay.forward, &outcome, now)
        {
            // Nothing was relayed yet: answer with the template and hand over instead.
            Metrics::add(f.metrics.origin_failures, 1);
            let r = Self::plan_reply(&f, plan);
            Self::replace_headers(&r, r.body.len());
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &r.body);
            return Action::Continue;
        }
        f.metrics.decision(Reason::Forwarded);
        let set = |k: &str, v: &str| {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, k, Some(v));
        };
        if let Some(s) = filter.error_status() {
            set(":status", &s.to_string());
        }
        // Envoy still holds the whole reply unless it was drained: when validation left it as
        // it was, the body and its Content-Length go out untouched.
        if relay.drained || out != chunk {
            set("content-length", &out.len().to_string());
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        crate::stages::request_done();
        let _t = crate::stages::span("log");
        let Some(f) = self.f.clone() else { return };
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if relay.settled {
            return;
        }
        relay.settled = true;
        let now = now();
        let store = f.store(now);
        match relay.reply.as_mut() {
            // The client went away mid-reply (stop button, closed tab): charge what came,
            // but it is no origin failure and nobody asked for a human.
            Some(filter) if client_left() => {
                let _ = filter.finish(false);
                let outcome = Self::outcome(&f, filter, &relay.admitted);
                f.gw.settle_client_left(&store, &relay.forward, &outcome);
            }
            // The reply broke off (origin reset): charge what came, hand over.
            Some(filter) => {
                let _ = filter.finish(false);
                let outcome = Self::outcome(&f, filter, &relay.admitted);
                Metrics::add(f.metrics.origin_failures, 1);
                warn!("tidegate: the origin reply ended early");
                let s =
                    f.gw.settle(&store, &relay.admitted, &relay.forward, &outcome, now);
                if let Some(call) = s.handoff {
                    f.send(call, "handoff", s.conversation);
                }
            }
            // No reply at all (the client left first): give the reservation back.
            None if !relay.answered => {
                let outcome = OriginOutcome {
                    tokens: 0,
                    complete: true,
                    dont_know: false,
                };
                f.gw.settle(&store, &relay.admitted, &relay.forward, &outcome, now);
            }
            None => {}
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        if self.queued.get() {
            let id = self.id;
            WAKE.with(|w| w.borrow_mut().retain(|(c, _)| *c != id));
        }
    }
}

impl Http {
    fn too_large(&mut self, f: &Filter) -> Action {
        let p = gateway::body_too_large(f.cfg.core.client.max_body_bytes);
        self.send_local(Self::refusal_reply(
            f,
            &Refusal {
                problem: p,
                limits: Vec::new(),
            },
            None,
        ))
    }
}
