//! `tidegate drill`: the promo-day dry run as one command.
//!
//! Starts a gateway and the stand-in origin on loopback (or points at a running gateway with
//! `--target`), replays the case study's sale day compressed into about a minute with real
//! customer questions, abusive clients and bots, and prints a scorecard laid out like the
//! case study's table, target beside actual. Every figure is computed from what the clients
//! received; the origin's own counts are shown beside them as a cross-check.
//!
//! - [`profile`]: the traffic curve and the baseline steps;
//! - [`workload`]: the query mix and the origin steering;
//! - [`client`]: one request, recorded exactly as received;
//! - [`scorecard`]: the figures, the text table and the JSON;
//! - [`report`]: the self-contained HTML page with inline SVG charts.

pub mod client;
pub mod profile;
pub mod report;
pub mod scorecard;
pub mod workload;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use self::client::{Got, Ident, Record, Sent};
use self::workload::{Corpus, Message, Rng, Who};

/// Which traffic to replay.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileName {
    /// The case study's sale day, compressed.
    Day,
    /// The case study's week-1 load test: step up concurrent chats.
    Baseline,
}

/// Options of `tidegate drill`.
#[derive(clap::Args, Debug, Clone)]
pub struct DrillArgs {
    /// Length of the drill in seconds (the whole day, or all baseline steps).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Traffic as a share of the case study's (1.0 = 500 QPS at the opening).
    #[arg(long, default_value_t = 0.1)]
    pub scale: f64,
    /// `day` (the sale day) or `baseline` (500 .. 10,000 concurrent chats, scaled).
    #[arg(long, value_enum, default_value_t = ProfileName::Day)]
    pub profile: ProfileName,
    /// An already running gateway (`http://127.0.0.1:PORT`); it must use `--mock-url` as its
    /// origin. Without it the drill starts its own gateway and stand-in origin.
    #[arg(long, requires = "mock_url")]
    pub target: Option<String>,
    /// The stand-in origin behind `--target` (`tidegate mock-origin`).
    #[arg(long)]
    pub mock_url: Option<String>,
    /// Admin token of `--target`, to load the knowledge base and codes and watch the tier.
    #[arg(long, env = "TIDEGATE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Write the scorecard as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write every request as the client saw it (JSON lines) to this file.
    #[arg(long)]
    pub records: Option<PathBuf>,
    /// Seed of the query mix (same seed, same questions in the same order).
    #[arg(long, default_value_t = 618)]
    pub seed: u64,
    /// Base latency of the stand-in origin before its first byte, in ms (it grows with load).
    #[arg(long, default_value_t = 900)]
    pub origin_latency_ms: u64,
    /// Token budget for the drill (default: sized for the day with headroom).
    #[arg(long)]
    pub budget: Option<u64>,
    /// Most requests the load generator keeps open at once (bounds memory and CPU).
    #[arg(long, default_value_t = 3000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_in_flight: usize,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
}

impl DrillArgs {
    /// The defaults, as on the command line.
    #[cfg(test)]
    pub fn defaults() -> Self {
        DrillArgs {
            duration: 60.0,
            scale: 0.1,
            profile: ProfileName::Day,
            target: None,
            mock_url: None,
            admin_token: None,
            json: None,
            report: None,
            records: None,
            seed: 618,
            origin_latency_ms: 900,
            budget: None,
            max_in_flight: 3000,
            quiet: false,
        }
    }
}

/// `tidegate drill`.
pub async fn run(args: DrillArgs) -> anyhow::Result<()> {
    let outcome = execute(&args).await?;
    let text = scorecard::render_text(&outcome.card);
    println!("{text}");
    if let Some(path) = &args.json {
        let doc = scorecard::to_json(&outcome.card);
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report::render(&outcome.card))
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "Report written to {} (opens offline in any browser)",
            path.display()
        );
    }
    if let Some(path) = &args.records {
        let mut out = String::new();
        for r in &outcome.records {
            out.push_str(&serde_json::to_string(r)?);
            out.push('\n');
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{} request records written to {}",
            outcome.records.len(),
            path.display()
        );
    }
    if let (Some(cfg), Some(log)) = (&outcome.stack.config_path, &outcome.stack.log_path) {
        println!("Gateway config {} and log {}", cfg.display(), log.display());
    }
    Ok(())
}

/// What a drill leaves behind: the records, the scorecard, and the stack (still running, so
/// a test can ask the stand-in origin what it saw).
#[derive(Debug)]
pub struct Outcome {
    /// Every request as the client saw it.
    pub records: Vec<Record>,
    /// The figures.
    pub card: scorecard::Scorecard,
    /// The gateway and origin used.
    pub stack: Stack,
}

/// Runs a drill and computes its scorecard without printing it.
pub async fn execute(args: &DrillArgs) -> anyhow::Result<Outcome> {
    if !(args.duration.is_finite() && (1.0..=3600.0).contains(&args.duration)) {
        anyhow::bail!("--duration must be between 1 and 3600 seconds");
    }
    if !(args.scale.is_finite() && args.scale > 0.0 && args.scale <= 10.0) {
        anyhow::bail!("--scale must be above 0 and at most 10");
    }
    let corpus = Corpus::load(args.seed)?;
    let budget = args.budget.unwrap_or_else(|| default_budget(args));
    let stack = match &args.target {
        Some(t) => Stack::external(t, args)?,
        None => Stack::start(args, budget).await?,
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()?;
    let setup = stack.prepare(&http).await?;
    let say = |s: String| {
        if !args.quiet {
            eprintln!("{s}");
        }
    };
    say(format!(
        "tidegate drill: {} profile, {:.0} s, scale {} ({})",
        match args.profile {
            ProfileName::Day => "sale-day",
            ProfileName::Baseline => "baseline",
        },
        args.duration,
        args.scale,
        scale_note(args)
    ));
    say(format!(
        "  gateway {}  origin {}  knowledge base {}",
        stack.gateway, stack.mock, setup.kb
    ));
    if let Some(cfg) = &stack.config_path {
        say(format!(
            "  gateway config {} (tier thresholds scaled to {:.1}/{:.1}/{:.1} origin QPS, \
             auto_activate on); gateway log {}",
            cfg.display(),
            80.0 * args.scale,
            150.0 * args.scale,
            250.0 * args.scale,
            stack
                .log_path
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        ));
    }
    let live = Arc::new(Live::default());
    let t0 = Instant::now();
    let watch = TierWatch::spawn(http.clone(), &stack, live.clone(), t0);
    let records = match args.profile {
        ProfileName::Day => day(args, &corpus, &http, &stack.gateway, live.clone(), t0).await,
        ProfileName::Baseline => {
            baseline(args, &corpus, &http, &stack.gateway, live.clone(), t0).await
        }
    };
    let elapsed = t0.elapsed();
    if !args.quiet && std::io::stderr().is_terminal() {
        eprintln!();
    }
    // Let handoff calls and alerts land (a retried delivery takes a while on a loaded
    // machine) before the origin is asked what it saw.
    let mock_calls = settled_calls(&http, &format!("{}/mock/calls", stack.mock)).await;
    let tier_events = watch.stop().await;
    let budget_doc = get_json(
        &http,
        &format!("{}/admin/budget", stack.gateway),
        stack.admin_token.as_deref(),
    )
    .await;
    let ctx = scorecard::Context {
        profile: args.profile,
        duration_s: args.duration,
        elapsed_s: elapsed.as_secs_f64(),
        scale: args.scale,
        seed: args.seed,
        gateway: stack.gateway.clone(),
        origin: stack.mock.clone(),
        kb: setup.kb.clone(),
        budget_configured: stack.config_path.as_ref().map(|_| budget),
        not_sent: live.not_sent.load(Ordering::Relaxed),
        tier_events,
        mock_calls,
        budget: budget_doc,
    };
    let card = scorecard::compute(&ctx, &records);
    Ok(Outcome {
        records,
        card,
        stack,
    })
}

fn scale_note(args: &DrillArgs) -> String {
    match args.profile {
        ProfileName::Day => format!(
            "opening peak {:.0} QPS instead of {:.0}, about {:.0} requests",
            profile::PEAK_QPS * args.scale,
            profile::PEAK_QPS,
            profile::expected_requests(args.duration, args.scale)
        ),
        ProfileName::Baseline => format!(
            "{} concurrent chats instead of {}",
            profile::BASELINE_STEPS
                .iter()
                .map(|n| baseline_users(*n, args.scale).to_string())
                .collect::<Vec<_>>()
                .join(", "),
            profile::BASELINE_STEPS
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Tokens for the day: about 60 per expected request (a short prompt and reply) with 50%
/// headroom, as an operator would size a day's share of the monthly cap.
fn default_budget(args: &DrillArgs) -> u64 {
    let n = match args.profile {
        ProfileName::Day => profile::expected_requests(args.duration, args.scale),
        ProfileName::Baseline => {
            let users: u32 = profile::BASELINE_STEPS
                .iter()
                .map(|s| baseline_users(*s, args.scale))
                .sum();
            f64::from(users) * args.duration / 5.0 / 8.0
        }
    };
    ((n * 60.0 * 1.5) as u64).max(10_000)
}

fn baseline_users(step: u32, scale: f64) -> u32 {
    ((f64::from(step) * scale).round() as u32).max(1)
}

/// The stand-in's record once the gateway's outbound calls (handoffs, alerts) have stopped
/// arriving: unchanged over 500 ms, after at least 600 ms and at most 10 s.
async fn settled_calls(http: &reqwest::Client, url: &str) -> Option<Value> {
    let outbound = |v: &Option<Value>| {
        v.as_ref().map(|v| {
            let toggles: u64 = v["toggle_status"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
            (toggles, v["alerts"].as_array().map_or(0, Vec::len))
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut last = get_json(http, url, None).await;
    for _ in 0..19 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = get_json(http, url, None).await;
        let same = outbound(&now) == outbound(&last);
        last = now;
        if same {
            break;
        }
    }
    last
}

async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> Option<Value> {
    let mut rb = http.get(url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Only loopback: the drill never sends load anywhere else.
fn check_loopback(url: &str, what: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{what} {url:?}"))?;
    match parsed.host_str() {
        Some("127.0.0.1") | Some("localhost") => {}
        other => anyhow::bail!(
            "{what} must be on 127.0.0.1 (the drill sends load nowhere else), got {:?}",
            other.unwrap_or("")
        ),
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The gateway and stand-in origin a drill runs against.
#[derive(Debug)]
pub struct Stack {
    /// Gateway base URL.
    pub gateway: String,
    /// Stand-in origin base URL.
    pub mock: String,
    /// Admin bearer token, when known.
    pub admin_token: Option<String>,
    /// The config the drill wrote (own stack only).
    pub config_path: Option<PathBuf>,
    /// The gateway's log file (own stack only).
    pub log_path: Option<PathBuf>,
    dir: Option<PathBuf>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What was loaded into the gateway.
#[derive(Debug)]
struct Setup {
    kb: String,
}

/// The Turnstile secret the drill's gateway and stand-in siteverify share. Not a public test
/// secret: siteverify checks tokens for real (single use, hostname, action).
const DRILL_TURNSTILE_SECRET: &str = "0x4AAAAAAAdrill-secret-not-a-test-key";

impl Stack {
    fn external(target: &str, args: &DrillArgs) -> anyhow::Result<Stack> {
        let gateway = check_loopback(target, "--target")?;
        let mock = check_loopback(args.mock_url.as_deref().unwrap_or(""), "--mock-url")?;
        Ok(Stack {
            gateway,
            mock,
            admin_token: args.admin_token.clone(),
            config_path: None,
            log_path: None,
            dir: None,
            shutdown: None,
            thread: None,
        })
    }

    /// Starts the stand-in origin and `tidegate serve` on their own runtime (two threads, so
    /// the load generator and the gateway do not starve each other), logging to a file.
    async fn start(args: &DrillArgs, budget: u64) -> anyhow::Result<Stack> {
        let dir = std::env::temp_dir().join(format!(
            "tidegate-drill-{}-{}",
            std::process::id(),
            server_now_ms()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join("gateway.log");
        let log = std::fs::File::create(&log_path)?;
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(Mutex::new(log))
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish(),
        );
        let admin_token = format!("drill-admin-{:x}", server_now_ms());
        let latency = args.origin_latency_ms;
        let scale = args.scale;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let cfg_dir = dir.clone();
        let token = admin_token.clone();
        let thread = std::thread::Builder::new()
            .name("drill-gateway".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                let d = dispatch.clone();
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("drill-gw")
                    .on_thread_start(move || {
                        // The gateway's logs go to the drill's log file, not the terminal.
                        std::mem::forget(tracing::dispatcher::set_default(&d));
                    })
                    .enable_all()
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("gateway runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let started = start_stack(&cfg_dir, latency, scale, budget, &token).await;
                    let _ = ready_tx.send(started);
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        let (gateway, mock, config_path) = ready_rx
            .await
            .map_err(|_| anyhow::anyhow!("the gateway thread stopped"))??;
        let stack = Stack {
            gateway,
            mock,
            admin_token: Some(admin_token),
            config_path: Some(config_path),
            log_path: Some(log_path),
            dir: Some(dir),
            shutdown: Some(stop_tx),
            thread: Some(thread),
        };
        let http = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = http
                .get(format!("{}/healthz", stack.gateway))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the drill's gateway did not come up; see {}",
                    stack
                        .log_path
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(stack)
    }

    /// Loads the knowledge base and the valid codes (when the admin token is known) and says
    /// what the gateway serves.
    async fn prepare(&self, http: &reqwest::Client) -> anyhow::Result<Setup> {
        let artefact = tidegate_core::faq::build_artifact(workload::KB_JSONL)
            .map_err(|e| anyhow::anyhow!("the drill's knowledge base does not build: {e:?}"))?;
        let kb = tidegate_core::faq::KnowledgeBase::from_artifact(&artefact)
            .map_err(|e| anyhow::anyhow!("the drill's knowledge base does not load: {e:?}"))?;
        let Some(token) = &self.admin_token else {
            let health = get_json(http, &format!("{}/healthz", self.gateway), None).await;
            let version = health
                .as_ref()
                .and_then(|h| h.get("kb_version"))
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return Ok(Setup {
                kb: format!(
                    "as loaded in the target (version {version}; no admin token, so the drill's \
                     banking77 knowledge base was not loaded)"
                ),
            });
        };
        for (key, value) in [
            (crate::server::KB_KEY, artefact.clone()),
            ("promo_codes", workload::VALID_CODES.join("\n").into_bytes()),
            ("tier", b"normal".to_vec()),
        ] {
            let r = http
                .put(format!("{}/admin/flags/{key}", self.gateway))
                .bearer_auth(token)
                .body(value)
                .send()
                .await
                .with_context(|| format!("setting `{key}` on the gateway"))?;
            if !r.status().is_success() {
                anyhow::bail!(
                    "setting `{key}` on the gateway: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
        }
        Ok(Setup {
            kb: format!(
                "banking77, {} entries, five phrasings each, version {}",
                kb.len(),
                kb.version()
            ),
        })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(dir) = &self.dir {
            // Keep the log and config for a look afterwards; drop the KV store.
            let _ = std::fs::remove_file(dir.join("kv.redb"));
        }
    }
}

fn server_now_ms() -> u64 {
    crate::server::now().0
}

/// Starts the mock and the gateway inside the gateway runtime.
async fn start_stack(
    dir: &std::path::Path,
    latency_ms: u64,
    scale: f64,
    budget: u64,
    admin_token: &str,
) -> anyhow::Result<(String, String, PathBuf)> {
    let mock_addr = crate::mock::spawn(crate::mock::MockArgs {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        latency_ms,
        chunk_delay_ms: 25,
        turnstile_secret: Some(DRILL_TURNSTILE_SECRET.to_owned()),
        ..crate::mock::MockArgs::default()
    })
    .await?;
    let mock = format!("http://{mock_addr}");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let listen = format!("127.0.0.1:{port}");
    let cfg = gateway_config(&mock, &listen, scale, budget, admin_token, dir);
    let path = dir.join("drill.toml");
    std::fs::write(&path, &cfg)?;
    let p = path.clone();
    let d = dir.to_path_buf();
    tokio::spawn(async move {
        if let Err(e) = crate::server::serve(Some(p), None, Some(d)).await {
            tracing::error!(error = %e, "the drill's gateway stopped");
        }
    });
    Ok((format!("http://{listen}"), mock, path))
}

/// The drill gateway's config: the case study's limits, origin cap and tier thresholds
/// scaled to the drill's traffic, Turnstile against the stand-in siteverify with a real
/// (non-test) secret, Chatwoot handoff and tier alerts to the stand-in.
pub fn gateway_config(
    mock: &str,
    listen: &str,
    scale: f64,
    budget: u64,
    admin_token: &str,
    dir: &std::path::Path,
) -> String {
    let cap = ((300.0 * scale).round() as u64).max(1);
    let t = |x: f64| (x * scale * 10.0).round() / 10.0;
    let (t1, t2, t3) = (t(80.0), t(150.0), t(250.0));
    // Keep the thresholds strictly increasing at tiny scales.
    let t1 = t1.max(0.1);
    let t2 = t2.max(t1 + 0.1);
    let t3 = t3.max(t2 + 0.1);
    format!(
        r#"# Written by `tidegate drill`: the case study's settings, traffic-dependent ones scaled by {scale}.
[server]
listen = "{listen}"
admin_token = "{admin_token}"
data_dir = "{dir}"

[client]
trusted_proxies = ["127.0.0.1", "::1"]

[origin]
url = "{mock}"
model = "qwen-72b"
first_byte_timeout_ms = 15000
total_timeout_ms = 60000

[limits.ip]
limit = 30
window_secs = 60

[limits.user]
limit = 10
window_secs = 60

[limits.origin]
# The case study's 300 QPS cap on the LLM app, scaled; excess waits up to 2 s, then 503.
limit = {cap}
window_secs = 1
max_wait_ms = 2000

[budget]
monthly_tokens = {budget}

[turnstile]
enabled = true
secret = "{secret}"
siteverify_url = "{mock}/turnstile/v0/siteverify"
expected_hostname = "localhost"
expected_action = "chat"

[tiers]
# 80 / 150 / 250 QPS in the case study, scaled. The drill switches tiers automatically so
# that activations happen; in production a person confirms (auto_activate = false).
thresholds_qps = [{t1}, {t2}, {t3}]
cooldown_secs = 6
auto_activate = true
alert_webhook = "{mock}/alerts"
economy_model = "deepseek-v3"
fallback_url = "{mock}"
fallback_model = "anythingllm"

[handoff]
chatwoot_url = "{mock}"
chatwoot_token = "test-token"
"#,
        dir = dir.display().to_string().replace('\\', "/"),
        secret = DRILL_TURNSTILE_SECRET,
    )
}

/// Counters the progress display and the schedulers share.
#[derive(Debug, Default)]
pub struct Live {
    sent: AtomicU64,
    done: AtomicU64,
    faq: AtomicU64,
    llm_bound: AtomicU64,
    answered: AtomicU64,
    not_sent: AtomicU64,
    tier: Mutex<String>,
    step: Mutex<String>,
}

impl Live {
    fn record(&self, r: &Record) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if r.got == Got::Faq {
            self.faq.fetch_add(1, Ordering::Relaxed);
        }
        if scorecard::would_reach_llm(r) {
            self.llm_bound.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(r.got, Got::Faq | Got::Llm | Got::DontKnow | Got::Template) {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(t), Ok(mut cur)) = (&r.tier, self.tier.lock()) {
            if *cur != *t {
                *cur = t.clone();
            }
        }
    }
}

/// Prints the progress line twice a second (a line every 5 s when stderr is not a terminal).
fn spawn_progress(
    args: &DrillArgs,
    live: Arc<Live>,
    t0: Instant,
) -> Option<tokio::task::JoinHandle<()>> {
    if args.quiet {
        return None;
    }
    let duration = args.duration;
    let profile = args.profile;
    let tty = std::io::stderr().is_terminal();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut window: VecDeque<(Instant, u64)> = VecDeque::new();
        let mut last_line = Instant::now();
        loop {
            tick.tick().await;
            let now = Instant::now();
            let sent = live.sent.load(Ordering::Relaxed);
            window.push_back((now, sent));
            while window.len() > 3 {
                window.pop_front();
            }
            let qps = match (window.front(), window.back()) {
                (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 / (b.0 - a.0).as_secs_f64(),
                _ => 0.0,
            };
            let el = t0.elapsed().as_secs_f64();
            let f = el / duration;
            let when = match profile {
                ProfileName::Day => {
                    let (p, h) = profile::at(f);
                    format!("{} {:<9}", profile::clock(h), p.name)
                }
                ProfileName::Baseline => live.step.lock().map(|s| s.clone()).unwrap_or_default(),
            };
            let done = live.done.load(Ordering::Relaxed).max(1);
            let bound = live.llm_bound.load(Ordering::Relaxed).max(1);
            let line = format!(
                "[{el:5.1}s] {when} QPS {qps:6.1}  open {:4}  tier {:<11}  cache hits {:3.0}% of LLM-bound  answered {:5.1}%",
                sent.saturating_sub(live.done.load(Ordering::Relaxed)),
                live.tier.lock().map(|t| t.clone()).unwrap_or_default(),
                100.0 * live.faq.load(Ordering::Relaxed) as f64 / bound as f64,
                100.0 * live.answered.load(Ordering::Relaxed) as f64 / done as f64,
            );
            if tty {
                eprint!("\r{line}\x1b[K");
                let _ = std::io::stderr().flush();
            } else if last_line.elapsed() >= Duration::from_secs(5) {
                eprintln!("{line}");
                last_line = Instant::now();
            }
        }
    }))
}

/// A customer's chat: one user, one conversation, a few messages.
#[derive(Clone, Debug)]
struct Session {
    ident: Ident,
    who: Who,
    sent: u32,
    max: u32,
    ready_at: Instant,
}

/// Shared state of one run's request tasks.
#[derive(Debug)]
struct Runner {
    http: reqwest::Client,
    base: String,
    t0: Instant,
    records: Mutex<Vec<Record>>,
    live: Arc<Live>,
    idle: Mutex<VecDeque<Session>>,
    permits: Arc<tokio::sync::Semaphore>,
    seq: AtomicU64,
}

impl Runner {
    /// Sends `msg` as `ident` in the background; `after` runs with the record.
    fn launch(
        self: &Arc<Self>,
        msg: Message,
        ident: Ident,
        phase: &'static str,
        after: Option<Session>,
    ) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.live.not_sent.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.live.sent.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        tokio::spawn(async move {
            let rec = client::send(
                &me.http,
                &me.base,
                Sent {
                    msg: &msg,
                    ident: &ident,
                    t0: me.t0,
                    phase,
                },
            )
            .await;
            drop(permit);
            me.live.record(&rec);
            if let Some(mut s) = after {
                let keep = match rec.got {
                    Got::Faq | Got::Llm => s.sent < s.max,
                    // Some people write again after the handover: the bot must stay silent.
                    Got::Template | Got::Broken | Got::DontKnow => {
                        s.sent < s.max && s.sent % 2 == 1
                    }
                    _ => false,
                };
                if keep {
                    let think = 300 + (me.seq.fetch_add(1, Ordering::Relaxed) * 7919) % 1200;
                    s.ready_at = Instant::now() + Duration::from_millis(think);
                    if let Ok(mut idle) = me.idle.lock() {
                        idle.push_back(s);
                    }
                }
            }
            if let Ok(mut r) = me.records.lock() {
                r.push(rec);
            }
        });
    }

    fn take_records(&self) -> Vec<Record> {
        let mut v = self
            .records
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        v.sort_by_key(|r| r.at_ms);
        v
    }

    /// Waits until every launched request has finished (or the client timeout passed).
    async fn drain(&self, max: usize) {
        let deadline = Instant::now() + client::CLIENT_TIMEOUT + Duration::from_secs(2);
        while self.permits.available_permits() < max && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn customer_ident(n: u64) -> Ident {
    Ident {
        user: format!("c{n}"),
        ip: format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff),
        // Chatwoot conversation ids are numbers.
        conversation: Some((1_000_000 + n).to_string()),
        token: None,
    }
}

/// A fresh widget token for one message: single use, action `chat`.
fn token_for(who: Who, seq: u64) -> Option<String> {
    match who {
        Who::Customer | Who::Burster => Some(format!("pass-chat.m{seq}")),
        Who::WidgetFailed => Some(format!("fail-mobile-{seq}")),
        Who::Bot => seq.is_multiple_of(2).then(|| format!("bot-forged-{seq}")),
        Who::Hammer => None,
    }
}

/// The sale day: open-loop arrivals following the curve, conversations, abusers and bots.
async fn day(
    args: &DrillArgs,
    corpus: &Corpus,
    http: &reqwest::Client,
    base: &str,
    live: Arc<Live>,
    t0: Instant,
) -> Vec<Record> {
    let runner = Arc::new(Runner {
        http: http.clone(),
        base: base.to_owned(),
        t0,
        records: Mutex::new(Vec::new()),
        live: live.clone(),
        idle: Mutex::new(VecDeque::new()),
        permits: Arc::new(tokio::sync::Semaphore::new(args.max_in_flight)),
        seq: AtomicU64::new(0),
    });
    let progress = spawn_progress(args, live, t0);
    let mut rng = Rng::new(args.seed);
    let mut owed = 0.0f64;
    let mut next_user = 0u64;
    let mut seq = 0u64;
    let mut hammer_owed = 0.0f64;
    let mut bursts_done = [false, false];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => {
                eprintln!("\ninterrupted: scoring what was sent so far");
                break;
            }
        }
        let now = Instant::now();
        let f = now.saturating_duration_since(t0).as_secs_f64() / args.duration;
        if f >= 1.0 {
            break;
        }
        let dt = now.saturating_duration_since(last).as_secs_f64();
        last = now;
        let (phase, hour) = profile::at(f);
        owed += profile::day_qps(hour) * args.scale * dt;
        // One IP hammering from the opening to noon: 8 requests a second, new user ids.
        if (9.0..12.0).contains(&hour) {
            hammer_owed += 8.0 * dt;
            while hammer_owed >= 1.0 {
                hammer_owed -= 1.0;
                seq += 1;
                let msg = corpus.other_message(Who::Hammer, &mut rng);
                let ident = Ident {
                    user: format!("h{seq}"),
                    ip: "203.0.113.66".into(),
                    conversation: None,
                    token: token_for(Who::Hammer, seq),
                };
                runner.launch(msg, ident, phase.name, None);
            }
        }
        // One user bursting: 25 messages in a few hundred ms, at 09:05 and at 18:30.
        for (i, at) in [9.08, 18.5].into_iter().enumerate() {
            if hour >= at && !bursts_done[i] {
                bursts_done[i] = true;
                for _ in 0..25 {
                    seq += 1;
                    let mut msg = corpus.customer_message(Who::Burster, &mut rng, seq);
                    msg.steer = workload::Steer::Normal;
                    let ident = Ident {
                        user: "burst-user".into(),
                        ip: "192.0.2.25".into(),
                        conversation: Some("999999".into()),
                        token: token_for(Who::Burster, seq),
                    };
                    runner.launch(msg, ident, phase.name, None);
                }
            }
        }
        while owed >= 1.0 {
            owed -= 1.0;
            seq += 1;
            if rng.chance(0.04) {
                // A bot: no token or a forged one, a fresh identity each time.
                let msg = corpus.other_message(Who::Bot, &mut rng);
                let ident = Ident {
                    user: format!("b{seq}"),
                    ip: format!("198.51.100.{}", seq % 250 + 1),
                    conversation: None,
                    token: token_for(Who::Bot, seq),
                };
                runner.launch(msg, ident, phase.name, None);
                continue;
            }
            let ready = runner.idle.lock().ok().and_then(|mut idle| {
                let front_ready = idle.front().is_some_and(|s| s.ready_at <= now);
                (front_ready && rng.chance(0.5))
                    .then(|| idle.pop_front())
                    .flatten()
            });
            let mut session = match ready {
                Some(s) => s,
                None => {
                    next_user += 1;
                    // 19:00-21:00: the widget fails for some phones (the 19:23 incident).
                    let who = if (19.0..21.0).contains(&hour) && rng.chance(0.15) {
                        Who::WidgetFailed
                    } else {
                        Who::Customer
                    };
                    Session {
                        ident: customer_ident(next_user),
                        who,
                        sent: 0,
                        max: 1 + rng.below(4) as u32,
                        ready_at: now,
                    }
                }
            };
            session.sent += 1;
            let msg = corpus.customer_message(session.who, &mut rng, seq);
            let mut ident = session.ident.clone();
            ident.token = token_for(session.who, seq);
            runner.launch(msg, ident, phase.name, Some(session));
        }
    }
    runner.drain(args.max_in_flight).await;
    if let Some(p) = progress {
        p.abort();
    }
    runner.take_records()
}

/// The week-1 baseline: closed-loop virtual users, stepped up.
async fn baseline(
    args: &DrillArgs,
    corpus: &Corpus,
    http: &reqwest::Client,
    base: &str,
    live: Arc<Live>,
    t0: Instant,
) -> Vec<Record> {
    let runner = Arc::new(Runner {
        http: http.clone(),
        base: base.to_owned(),
        t0,
        records: Mutex::new(Vec::new()),
        live: live.clone(),
        idle: Mutex::new(VecDeque::new()),
        permits: Arc::new(tokio::sync::Semaphore::new(args.max_in_flight)),
        seq: AtomicU64::new(0),
    });
    let progress = spawn_progress(args, live.clone(), t0);
    let step_len = Duration::from_secs_f64(args.duration / profile::BASELINE_STEPS.len() as f64);
    let corpus = Arc::new(corpus.clone());
    for (i, step) in profile::BASELINE_STEPS.iter().enumerate() {
        let users = baseline_users(*step, args.scale);
        let name = scorecard::step_name(*step);
        if let Ok(mut s) = live.step.lock() {
            *s = format!("step {}/5: {users:>5} chats ({step} scaled)", i + 1);
        }
        let end = Instant::now() + step_len;
        let step_ms = step_len.as_millis() as usize;
        let mut tasks = Vec::new();
        for u in 0..users {
            let runner = runner.clone();
            let corpus = corpus.clone();
            let seed = args.seed ^ (u64::from(u) << 20) ^ (i as u64) << 48;
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                let n = (i as u64) << 32 | u64::from(u);
                let mut ident = customer_ident(n);
                ident.user = format!("s{i}u{u}");
                // Stagger the start over one think time.
                let spread = (step_ms / 2).clamp(1, 6000);
                tokio::time::sleep(Duration::from_millis(rng.below(spread) as u64)).await;
                let mut k = 0u64;
                while Instant::now() < end {
                    k += 1;
                    let seq = runner.seq.fetch_add(1, Ordering::Relaxed);
                    let mut msg = corpus.customer_message(Who::Customer, &mut rng, seq);
                    msg.steer = workload::Steer::Normal;
                    let mut id = ident.clone();
                    id.token = token_for(Who::Customer, seq);
                    id.conversation =
                        Some(((i as u64 + 1) * 100_000_000 + u64::from(u) * 1000 + k).to_string());
                    let Ok(permit) = runner.permits.clone().try_acquire_owned() else {
                        runner.live.not_sent.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    };
                    runner.live.sent.fetch_add(1, Ordering::Relaxed);
                    let mut rec = client::send(
                        &runner.http,
                        &runner.base,
                        Sent {
                            msg: &msg,
                            ident: &id,
                            t0: runner.t0,
                            phase: name,
                        },
                    )
                    .await;
                    drop(permit);
                    rec.phase = name;
                    runner.live.record(&rec);
                    if let Ok(mut r) = runner.records.lock() {
                        r.push(rec);
                    }
                    // Think time: 6-9 s, under the per-user limit of 10 a minute.
                    tokio::time::sleep(Duration::from_millis(6000 + rng.below(3000) as u64)).await;
                }
            }));
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
        for t in tasks {
            t.abort();
        }
    }
    runner.drain(args.max_in_flight).await;
    if let Some(p) = progress {
        p.abort();
    }
    runner.take_records()
}

/// Watches the gateway's tier flags (recommendation and active tier) four times a second.
#[derive(Debug)]
struct TierWatch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<scorecard::TierEvent>>,
}

impl TierWatch {
    fn spawn(http: reqwest::Client, stack: &Stack, live: Arc<Live>, t0: Instant) -> Self {
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let base = stack.gateway.clone();
        let token = stack.admin_token.clone();
        let task = tokio::spawn(async move {
            let mut events = Vec::new();
            let Some(token) = token else {
                return events;
            };
            let mut last: [Option<String>; 2] = [None, None];
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stop_rx => break,
                }
                for (i, (key, kind)) in [("tier_recommended", "recommended"), ("tier", "active")]
                    .into_iter()
                    .enumerate()
                {
                    let r = http
                        .get(format!("{base}/admin/flags/{key}"))
                        .bearer_auth(&token)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await;
                    let Ok(r) = r else { continue };
                    if !r.status().is_success() {
                        continue;
                    }
                    let v = r.text().await.unwrap_or_default().trim().to_owned();
                    if last.get(i).cloned().flatten().as_deref() != Some(v.as_str()) {
                        if let Some(slot) = last.get_mut(i) {
                            *slot = Some(v.clone());
                        }
                        if kind == "active" {
                            if let Ok(mut t) = live.tier.lock() {
                                t.clone_from(&v);
                            }
                        }
                        events.push(scorecard::TierEvent {
                            at_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
                            kind,
                            tier: v,
                        });
                    }
                }
            }
            events
        });
        TierWatch { stop, task }
    }

    async fn stop(self) -> Vec<scorecard::TierEvent> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
