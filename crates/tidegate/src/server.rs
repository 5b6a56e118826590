//! `tidegate serve`: the policy core behind an HTTP server.
//!
//! The host's job is only IO: read the request, keep counters in memory and flags in the
//! embedded KV store, call siteverify, the origin, Chatwoot and the alert webhook, and map the
//! core's decisions to HTTP. Every policy decision is made in `tidegate_core`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tidegate_core::decision::HttpCall;
use tidegate_core::faq::{self, KnowledgeBase};
use tidegate_core::gateway::{self, Challenge, Gateway, Plan, Refusal, RequestFacts};
use tidegate_core::reply::{CodeSet, Validator};
use tidegate_core::store::MemoryStore;
use tidegate_core::tier::{QpsMeter, Recommender, Tier};
use tidegate_core::{turnstile, Config, Problem, Reason, UnixMs};
use tracing::{info, warn};

use crate::kv::Kv;
use crate::metrics::Metrics;

/// KV key of the FAQ artefact.
pub const KB_KEY: &str = "faq_kb";
/// The demo knowledge base served by the no-config quick start.
const DEMO_KB: &str = include_str!("../../../kb/demo.jsonl");
/// The demo's valid promo codes.
const DEMO_CODES: &str = "SPRING618\nGROUP3\n";

/// Flags as last read from KV, shared by all requests.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// Raw tier flag.
    pub tier: Option<String>,
    /// Valid promo codes.
    pub codes: Arc<CodeSet>,
    /// The FAQ knowledge base.
    pub kb: Option<Arc<KnowledgeBase>>,
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub gw: Gateway,
    pub store: MemoryStore,
    pub kv: Kv,
    pub flags: RwLock<Flags>,
    pub validator: Arc<Validator>,
    pub http: reqwest::Client,
    pub origin_url: String,
    pub admin_token: String,
    pub metrics: Metrics,
    pub qps: Mutex<QpsMeter>,
    pub recommender: Mutex<Recommender>,
}

/// Milliseconds since the epoch, from the system clock.
pub fn now() -> UnixMs {
    UnixMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// Reads and validates a config file; errors name the file and the field.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    Config::from_toml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
}

/// `tidegate check-config FILE`.
pub fn check_config(path: &Path) -> anyhow::Result<()> {
    let cfg = load_config(path)?;
    Validator::new(&cfg.validation)
        .map_err(|(f, m)| anyhow::anyhow!("config {}: `validation.{f}`: {m}", path.display()))?;
    println!(
        "{}: ok (mode {:?}, origin {}, limits ip {}/{}s user {}/{}s origin {}/{}s)",
        path.display(),
        cfg.mode,
        if cfg.origin.url.is_empty() {
            "built-in stand-in"
        } else {
            &cfg.origin.url
        },
        cfg.limits.ip.limit,
        cfg.limits.ip.window_secs,
        cfg.limits.user.limit,
        cfg.limits.user.window_secs,
        cfg.limits.origin.limit,
        cfg.limits.origin.window_secs,
    );
    Ok(())
}

impl App {
    /// Re-reads the flags from KV (after an admin write, and at start).
    pub fn refresh_flags(&self) -> anyhow::Result<()> {
        let cfg = self.gw.config();
        let tier = self
            .kv
            .get(&cfg.tiers.flag_key)?
            .map(|v| String::from_utf8_lossy(&v).into());
        let codes = self
            .kv
            .get(self.validator.codes_key())?
            .map(|v| CodeSet::parse(&String::from_utf8_lossy(&v)))
            .unwrap_or_default();
        let kb = match self.kv.get(KB_KEY)? {
            Some(bytes) => match KnowledgeBase::from_artifact(&bytes) {
                Ok(kb) => Some(Arc::new(kb)),
                Err(e) => {
                    warn!(error = ?e, "stored FAQ artefact does not load; keeping the last one");
                    self.flags.read().ok().and_then(|f| f.kb.clone())
                }
            },
            None => None,
        };
        let level = tier
            .as_deref()
            .and_then(Tier::parse)
            .unwrap_or_default()
            .level();
        self.metrics
            .tier
            .store(u64::from(level), std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut f) = self.flags.write() {
            *f = Flags {
                tier,
                codes: Arc::new(codes),
                kb,
            };
        }
        Ok(())
    }

    fn flags(&self) -> Flags {
        self.flags.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// Makes an outbound call the core asked for (handoff, alert), retrying transient failures.
    /// A handoff that cannot be delivered gives the conversation back to the bot (`release`),
    /// so the customer is not left with neither a bot nor a human.
    pub fn send_call(
        self: &Arc<Self>,
        call: HttpCall,
        what: &'static str,
        release: Option<String>,
    ) {
        let app = self.clone();
        tokio::spawn(async move {
            for attempt in 1..=3u32 {
                let mut rb = app
                    .http
                    .request(reqwest::Method::POST, &call.url)
                    .timeout(Duration::from_secs(5))
                    .body(call.body.clone());
                for (k, v) in &call.headers {
                    rb = rb.header(k, v);
                }
                match rb.send().await {
                    Ok(r) if r.status().is_success() => {
                        let c = if what == "handoff" {
                            &app.metrics.handoffs
                        } else {
                            &app.metrics.alerts
                        };
                        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        info!(what, url = %call.url, "outbound call done");
                        return;
                    }
                    Ok(r) if r.status().is_client_error() => {
                        warn!(what, status = %r.status(), url = %call.url, "outbound call refused");
                        break;
                    }
                    Ok(r) => warn!(what, attempt, status = %r.status(), "outbound call failed"),
                    Err(e) => warn!(what, attempt, error = %e, "outbound call failed"),
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            app.metrics
                .call_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(conv) = release {
                let _ = tidegate_core::handoff::release(&app.store, &conv);
                tracing::error!(what, url = %call.url, conversation = %conv,
                    "handoff not delivered; the conversation is back with the bot");
            } else {
                tracing::error!(what, url = %call.url, "outbound call abandoned");
            }
        });
    }

    async fn challenge(
        &self,
        admitted: &gateway::Admitted,
        headers: &HeaderMap,
        now: UnixMs,
    ) -> Challenge {
        let t = &self.gw.config().turnstile;
        if !t.enabled {
            return Challenge::Passed;
        }
        let subject = admitted.client.subject();
        let remembered = turnstile::is_remembered(&self.store, &subject, now).unwrap_or(false);
        let ip = admitted.client.ip.to_string();
        let token = header(headers, &t.token_header);
        match turnstile::precheck(t, token.as_deref(), Some(&ip), &subject, remembered) {
            turnstile::Precheck::Pass => Challenge::Passed,
            turnstile::Precheck::Fail(codes) => Challenge::Failed(codes),
            turnstile::Precheck::Verify(req) => {
                let sent = self
                    .http
                    .post(&req.url)
                    .header("content-type", turnstile::SiteverifyRequest::CONTENT_TYPE)
                    .body(req.body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let reply = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        r.bytes().await.ok().map(|b| (status, b))
                    }
                    Err(e) => {
                        warn!(error = %e, "siteverify unreachable");
                        None
                    }
                };
                match turnstile::judge(t, reply.as_ref().map(|(s, b)| (*s, &b[..]))) {
                    turnstile::Verdict::Pass => {
                        let _ = turnstile::remember(&self.store, &subject, now, t);
                        Challenge::Passed
                    }
                    turnstile::Verdict::Fail(codes) => Challenge::Failed(codes),
                }
            }
        }
    }
}

/// A header's value as text. Several lines of the same header are joined with `, ` (as HTTP
/// allows), so a forged first line cannot hide a proxy's appended one. UTF-8 values are kept as
/// they are; other bytes are percent-encoded, so distinct raw values stay distinct.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = text_of(first.as_bytes());
    for more in values {
        let o = out.to_mut();
        o.push_str(", ");
        o.push_str(&text_of(more.as_bytes()));
    }
    Some(out)
}

fn text_of(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            bytes
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() && b != b'%' || b == b' ' {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect(),
        ),
    }
}

/// The reason named by a problem's code.
fn reason_of(p: &Problem) -> Reason {
    Reason::ALL
        .into_iter()
        .find(|r| r.as_str() == p.code)
        .unwrap_or(Reason::BadRequest)
}

/// Sets the core's decision headers on a response.
pub fn decorate(resp: &mut Response, headers: Vec<(&'static str, String)>) {
    let h = resp.headers_mut();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
}

/// A refusal as an `application/problem+json` response with all decision headers.
pub fn refusal(r: &Refusal, tier: Option<Tier>) -> Response {
    let p = &r.problem;
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, p.to_json()).into_response();
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(Problem::CONTENT_TYPE),
    );
    decorate(
        &mut resp,
        gateway::response_headers(&r.limits, reason_of(p), tier, p.retry_after),
    );
    resp
}

/// A problem with no limit outcomes.
pub fn problem(p: Problem) -> Response {
    refusal(
        &Refusal {
            problem: p,
            limits: Vec::new(),
        },
        None,
    )
}

/// The answer to a request whose body was not read to its end ([`read_body`] failed): the
/// problem, with `Connection: close`, since what is left of the body on the connection would
/// be read as the next request. Without it a client may reuse the connection and have its
/// next request fail.
pub(crate) fn body_problem(p: Problem) -> Response {
    let mut r = problem(p);
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}

/// How long a client may take to send its request body.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads a request body of at most `max` bytes within `timeout`. A declared `Content-Length`
/// above `max` is refused at once, before any of the body is read. The error is the problem to
/// send; its code is the reason to count.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, Problem> {
    let too_large = || gateway::body_too_large(max);
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let Ok(read) = tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await else {
        return Err(Problem::new(
            Reason::BadRequest,
            408,
            "Request timeout",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        ));
    };
    read.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if over {
            too_large()
        } else {
            Problem::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

async fn chat(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = now();
    let cfg = app.gw.config();
    let bytes = match read_body(&headers, body, cfg.client.max_body_bytes, BODY_READ_TIMEOUT).await
    {
        Ok(b) => b,
        Err(p) => {
            app.metrics.decision(reason_of(&p));
            return body_problem(p);
        }
    };
    let forwarded_for = header(&headers, "x-forwarded-for");
    let user = header(&headers, &cfg.client.user_header);
    let conversation = header(&headers, &cfg.client.conversation_header);
    let facts = RequestFacts {
        path: uri.path(),
        peer: peer.ip(),
        forwarded_for: forwarded_for.as_deref(),
        user: user.as_deref(),
        conversation: conversation.as_deref(),
        body: &bytes,
        now,
    };
    let flags = app.flags();
    let tier = app.gw.tier(flags.tier.as_deref());
    let admitted = match app.gw.admit(&app.store, &facts) {
        Ok(a) => a,
        Err(r) => {
            app.metrics.decision(reason_of(&r.problem));
            return refusal(&r, Some(tier));
        }
    };
    let challenge = app.challenge(&admitted, &headers, now).await;
    let plan = app.gw.plan(
        &app.store,
        &admitted,
        flags.kb.as_deref(),
        flags.tier.as_deref(),
        &challenge,
        now,
    );
    match plan {
        Plan::Answer(a) => crate::origin::answer(&app, a),
        Plan::Refuse(r) => {
            app.metrics.decision(reason_of(&r.problem));
            refusal(&r, Some(tier))
        }
        Plan::Forward(f) => crate::origin::forward(app.clone(), admitted, f, headers, flags).await,
    }
}

async fn business_api(
    State(app): State<Arc<App>>,
    uri: Uri,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = now();
    let Some(decision) = app.gw.admit_api(&app.store, uri.path(), now) else {
        return problem(Problem::new(
            Reason::BadRequest,
            404,
            "Not found",
            "no such endpoint",
        ));
    };
    let outcome = match decision {
        Ok(o) => o,
        Err(r) => {
            app.metrics.decision(Reason::ApiCapped);
            return refusal(&r, None);
        }
    };
    crate::origin::proxy_api(&app, outcome, uri, method, headers, body).await
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Response {
    let mut r = problem(gateway::method_not_allowed(method.as_str(), uri.path()));
    r.headers_mut()
        .insert("allow", HeaderValue::from_static("POST"));
    r
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let f = app.flags();
    axum::Json(serde_json::json!({
        "status": "ok",
        "tier": app.gw.tier(f.tier.as_deref()).as_str(),
        "kb_version": f.kb.as_ref().map(|k| k.version().to_owned()),
        "valid_codes": f.codes.len(),
    }))
    .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut r = app.metrics.render().into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// The router (also used by tests).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        // The chat endpoints answer another method with the core's 405 problem; the other
        // routes with axum's 405, whose `Allow` lists what they take.
        .route(
            "/v1/chat/completions",
            post(chat).fallback(method_not_allowed),
        )
        .route("/v1/chat-messages", post(chat).fallback(method_not_allowed))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/admin", crate::admin::router(app.clone()))
        .fallback(business_api)
        .with_state(app)
}

/// Writes a secret readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

fn random_token() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    if buf == [0u8; 16] {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        buf = (t ^ u128::from(std::process::id()) << 64).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the app from a config (shared by `serve` and tests). `demo` seeds the demo KB and
/// codes when absent.
pub async fn build_app(mut cfg: Config, data_dir: &Path, demo: bool) -> anyhow::Result<Arc<App>> {
    let validator = Validator::new(&cfg.validation)
        .map_err(|(f, m)| anyhow::anyhow!("config: `validation.{f}`: {m}"))?;
    let origin_url = if cfg.origin.url.is_empty() {
        let addr = crate::mock::spawn(mock_defaults()?).await?;
        info!(%addr, "no origin configured: started the built-in stand-in origin");
        format!("http://{addr}")
    } else {
        cfg.origin.url.trim_end_matches('/').to_owned()
    };
    if cfg.server.admin_token.is_empty() {
        let path = data_dir.join("admin-token");
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 16 => t.trim().to_owned(),
            _ => {
                let t = random_token();
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("creating data directory {}", data_dir.display()))?;
                write_private(&path, &t).with_context(|| format!("writing {}", path.display()))?;
                t
            }
        };
        info!(path = %path.display(), "admin token (bearer) is in this file");
        cfg.server.admin_token = token;
    }
    let kv = Kv::open(&data_dir.join("kv.redb"))?;
    if demo {
        let artefact = faq::build_artifact(DEMO_KB)
            .map_err(|e| anyhow::anyhow!("demo knowledge base does not build: {e:?}"))?;
        kv.put_if_absent(KB_KEY, &artefact)?;
        kv.put_if_absent(validator.codes_key(), DEMO_CODES.as_bytes())?;
    }
    let gw = Gateway::new(cfg.clone()).map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    let app = Arc::new(App {
        gw,
        store: MemoryStore::new(),
        kv,
        flags: RwLock::new(Flags::default()),
        validator: Arc::new(validator),
        http,
        origin_url,
        admin_token: cfg.server.admin_token.clone(),
        metrics: Metrics::default(),
        qps: Mutex::new(QpsMeter::new(10)),
        recommender: Mutex::new(Recommender::default()),
    });
    app.refresh_flags()?;
    Ok(app)
}

fn mock_defaults() -> anyhow::Result<crate::mock::MockArgs> {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: crate::mock::MockArgs,
    }
    use clap::Parser;
    Ok(Wrap::try_parse_from(["mock-origin", "--listen", "127.0.0.1:0"])?.args)
}

/// Watches origin QPS once a second and raises tier recommendations.
fn spawn_tier_watch(app: Arc<App>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = now();
            let rate = app.qps.lock().map(|m| m.rate(now)).unwrap_or(0.0);
            app.metrics
                .origin_qps_milli
                .store((rate * 1000.0) as u64, std::sync::atomic::Ordering::Relaxed);
            let cfg = &app.gw.config().tiers;
            let rec = app
                .recommender
                .lock()
                .ok()
                .and_then(|mut r| r.observe(rate, now, cfg));
            let Some(rec) = rec else { continue };
            app.metrics.tier_recommended.store(
                u64::from(rec.to.level()),
                std::sync::atomic::Ordering::Relaxed,
            );
            warn!(
                from = rec.from.as_str(),
                to = rec.to.as_str(),
                qps = rate,
                "tier recommendation"
            );
            if let Err(e) = app
                .kv
                .put(&cfg.recommendation_key, rec.to.as_str().as_bytes())
            {
                warn!(error = %e, "could not store the tier recommendation");
            }
            let activated = cfg.auto_activate
                && match app.kv.put(&cfg.flag_key, rec.to.as_str().as_bytes()) {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(error = %e, "could not activate the recommended tier");
                        false
                    }
                };
            if activated {
                let _ = app.refresh_flags();
            }
            let active = app.gw.tier(app.flags().tier.as_deref());
            if let Some(call) = rec.alert_call(cfg, active, activated) {
                app.send_call(call, "alert", None);
            }
        }
    });
}

/// `tidegate serve`.
pub async fn serve(
    config: Option<PathBuf>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let demo = config.is_none();
    let mut cfg = match &config {
        Some(p) => load_config(p)?,
        None => Config::default(),
    };
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(&cfg.server.data_dir));
    let addr: SocketAddr = cfg
        .server
        .listen
        .parse()
        .with_context(|| format!("listen address {:?}", cfg.server.listen))?;
    let demo = demo || cfg.server.demo_data;
    // Bound first: a port in use is reported before anything is written to the data directory.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let app = build_app(cfg, &data_dir, demo).await?;
    let listener = no_delay(listener);
    let f = app.flags();
    info!(
        listen = %bound,
        origin = %app.origin_url,
        tier = app.gw.tier(f.tier.as_deref()).as_str(),
        kb_entries = f.kb.as_ref().map_or(0, |k| k.len()),
        "tidegate serving"
    );
    spawn_tier_watch(app.clone());
    let store_app = app.clone();
    tokio::spawn(async move {
        // Forget idle clients: a GCRA cell whose arrival time is in the past is a fresh state.
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = now();
            store_app
                .store
                .retain(|k, v| !gateway::is_idle_cell(k, v, now));
        }
    });
    serve_http(listener, router(app), HEADER_READ_TIMEOUT, async {
        let _ = tokio::signal::ctrl_c().await;
        info!("shutting down");
    })
    .await;
    Ok(())
}

/// How long a connection may take to send a request's headers, counted from when the server
/// starts waiting for them (so an idle keep-alive connection is closed after this long too).
/// hyper's own default; clients should keep pooled connections idle for less.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` over HTTP/1.1 on `listener` until `shutdown` resolves, then waits for the
/// requests in flight. Unlike `axum::serve`, a connection that sends no request, or sends its
/// headers a byte at a time, is closed after `header_timeout` (so a slow client cannot hold
/// sockets open for ever), and accepted sockets have Nagle's algorithm off ([`no_delay`]).
pub(crate) async fn serve_http(
    listener: NoDelay,
    router: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use axum::serve::Listener;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut listener = listener;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let svc = hyper::service::service_fn(move |mut req: axum::http::Request<_>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower_service::Service::call(&mut router.clone(), req)
        });
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// Accepted connections with Nagle's algorithm off: a small write (a reply's headers, one SSE
/// event) goes out at once instead of waiting up to a delayed ACK (~40 ms on Linux) for the
/// previous one, which would hold back the first token of a streamed reply.
pub(crate) fn no_delay(listener: tokio::net::TcpListener) -> NoDelay {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set on an accepted connection");
        }
    }
    listener.tap_io(set)
}

/// The listener [`no_delay`] returns (a concrete type, so connect info still works).
pub(crate) type NoDelay =
    axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOKEN: &str = "0123456789abcdef0123";

    /// A gateway on a loopback port, with its own data directory and no origin.
    async fn serve_test_app(name: &str) -> (Arc<App>, SocketAddr) {
        let dir = std::env::temp_dir().join(format!("tidegate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = Config::default();
        cfg.origin.url = "http://127.0.0.1:9".into();
        cfg.server.admin_token = TOKEN.into();
        let app = build_app(cfg, &dir, false).await.unwrap();
        // The open store keeps working once unlinked (Unix); nothing is left behind.
        let _ = std::fs::remove_dir_all(&dir);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = router(app.clone());
        tokio::spawn(serve_http(
            no_delay(listener),
            r,
            HEADER_READ_TIMEOUT,
            std::future::pending(),
        ));
        (app, addr)
    }

    /// Sends raw bytes and returns what came back within 5 s (the whole response when the
    /// server answers at once; an unanswered request comes back empty).
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.parse::<usize>().ok());
                if len.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn regression_distinct_raw_header_values_stay_distinct() {
        // Found by testing: every non-ASCII value became U+FFFD, so all such users shared one
        // limit, one challenge pass and one handoff state.
        let mut h = HeaderMap::new();
        h.insert(
            "x-user-id",
            HeaderValue::from_bytes("张三".as_bytes()).unwrap(),
        );
        h.insert(
            "x-other",
            HeaderValue::from_bytes("李四".as_bytes()).unwrap(),
        );
        h.insert("x-bad", HeaderValue::from_bytes(b"abc\xff").unwrap());
        h.insert("x-bad2", HeaderValue::from_bytes(b"abc\xfe").unwrap());
        assert_eq!(header(&h, "x-user-id").as_deref(), Some("张三"));
        assert_eq!(header(&h, "x-other").as_deref(), Some("李四"));
        assert_eq!(header(&h, "x-bad").as_deref(), Some("abc%FF"));
        assert_ne!(header(&h, "x-bad"), header(&h, "x-bad2"));
        assert_eq!(header(&h, "x-missing"), None);
    }

    #[test]
    fn regression_every_forwarded_for_line_is_read() {
        // Found by testing: only the first X-Forwarded-For line was read, so a forged first
        // line hid the hop a proxy appended as a second line.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.50"));
        assert_eq!(
            header(&h, "x-forwarded-for").as_deref(),
            Some("7.7.7.7, 10.0.0.50")
        );
    }

    #[tokio::test]
    async fn regression_405_names_the_methods_of_its_own_route() {
        // Found by testing: the chat endpoints' 405 (`Allow: POST`, "chat endpoints take
        // POST") answered every route, so `POST /admin/flags/tier` was refused with
        // `Allow: POST`.
        let (_, addr) = serve_test_app("allow").await;
        let chat = raw(
            addr,
            b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        assert!(chat.starts_with("HTTP/1.1 405"), "{chat}");
        assert!(chat.contains("allow: POST"), "{chat}");
        assert!(chat.contains("application/problem+json"), "{chat}");
        let req = format!(
            "POST /admin/flags/tier HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
             content-length: 0\r\n\r\n"
        );
        let admin = raw(addr, req.as_bytes()).await;
        assert!(admin.starts_with("HTTP/1.1 405"), "{admin}");
        let allow = admin
            .lines()
            .find_map(|l| l.strip_prefix("allow: "))
            .unwrap_or_default();
        assert!(allow.contains("GET") && allow.contains("PUT"), "{admin}");
        assert!(!allow.contains("POST"), "{admin}");
        let health = raw(
            addr,
            b"POST /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        );
        let health = health.await;
        assert!(health.starts_with("HTTP/1.1 405"), "{health}");
        assert!(!health.contains("allow: POST"), "{health}");
    }

    #[tokio::test]
    async fn regression_slow_or_silent_connections_are_closed() {
        // Found by testing: a connection that sent nothing stayed open for minutes, and
        // headers sent a line a second were still accepted after 45 s (slowloris).
        let (app, _) = serve_test_app("slowloris").await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_millis(300);
        tokio::spawn(serve_http(
            no_delay(listener),
            router(app),
            timeout,
            std::future::pending(),
        ));
        let closed_within = |mut s: tokio::net::TcpStream| async move {
            let mut buf = [0u8; 512];
            let t0 = tokio::time::Instant::now();
            loop {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return t0.elapsed(),
                    Ok(Ok(_)) => {}
                    Err(_) => panic!("still open after 5 s"),
                }
            }
        };
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(silent).await < Duration::from_secs(4));
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        assert!(closed_within(slow).await < Duration::from_secs(4));
        // A prompt request on the same server is answered.
        let ok = raw(
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        assert!(ok.await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn regression_accepted_connections_have_nagle_off() {
        // Found by measuring: with Nagle on, a forwarded request through workerd waited ~45 ms
        // for a delayed ACK before the stand-in's reply went out.
        use axum::serve::Listener;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = no_delay(listener);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await;
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(accepted.nodelay().unwrap());
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = tokio::net::TcpStream::connect(plain.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = plain.accept().await.unwrap();
        assert!(
            !s.nodelay().unwrap(),
            "the check can fail: a plain socket has Nagle on"
        );
    }

    #[tokio::test]
    async fn regression_kb_upload_takes_more_than_2_mb_and_refuses_as_problem_json() {
        // Found by testing: `kb push` of a knowledge base over 2 MB got axum's plain-text 413,
        // and a rejected one a 422 whose detail was Rust debug text.
        let (_app, addr) = serve_test_app("kb-upload").await;
        let answer = "x".repeat(60_000);
        let entry = |i| {
            serde_json::json!({"id": format!("e{i}"), "questions": [format!("question {i}")],
                "answer": answer})
        };
        let kb: String = (0..50).map(|i| format!("{}\n", entry(i))).collect();
        assert!(kb.len() > 2_500_000);
        let http = reqwest::Client::new();
        let put = |body: String| {
            http.put(format!("http://{addr}/admin/kb"))
                .bearer_auth(TOKEN)
                .body(body)
                .send()
        };
        let r = put(kb).await.unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let r = put(
            "{\"id\": \"a\", \"questions\": [\"q\"], \"answer\": \"a\"}\n{\"id\": \"a\"}".into(),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 422);
        let p: serde_json::Value = r.json().await.unwrap();
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.starts_with("line 2: "), "{detail}");
        let over = format!(
            "PUT /admin/kb HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            crate::admin::MAX_UPLOAD_BYTES + 1
        );
        let resp = raw(addr, over.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
        assert!(resp.contains("application/problem+json"), "{resp}");
    }

    #[tokio::test]
    async fn regression_body_read_failures_are_counted_under_their_own_reason() {
        // Found by testing: a bad chunk and a Content-Length + Transfer-Encoding request got a
        // 400 `bad_request` but were counted as `too_large` in /metrics.
        let (app, addr) = serve_test_app("body-reasons").await;
        for req in [
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\
             connection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\nhello",
        ] {
            let resp = raw(addr, req.as_bytes()).await;
            assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
            assert!(resp.contains("bad_request"), "{resp}");
        }
        let m = app.metrics.render();
        assert!(
            m.contains("tidegate_decisions_total{reason=\"bad_request\"} 2"),
            "{m}"
        );
        assert!(
            m.contains("tidegate_decisions_total{reason=\"too_large\"} 0"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn regression_declared_oversize_body_is_refused_at_once() {
        // Found by testing: a Content-Length above `max_body_bytes` waited 15 s for the body
        // and then got a 408 instead of the 413.
        let (app, addr) = serve_test_app("declared-oversize").await;
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            app.gw.config().client.max_body_bytes + 1
        );
        let resp = raw(addr, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
        assert!(resp.contains("application/problem+json"), "{resp}");
        // The body was never read: the connection must not be reused (a scenario run showed a
        // client's next request on it failing).
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{resp}"
        );
        assert!(
            app.metrics
                .render()
                .contains("tidegate_decisions_total{reason=\"too_large\"} 1"),
            "counted as too large"
        );
    }
}
