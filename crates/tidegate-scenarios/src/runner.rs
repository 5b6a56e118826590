//! Runs scenarios over HTTP and reports on each.
//!
//! Scenarios run concurrently (up to `jobs` at a time); steps within a scenario run in order.
//! Scenarios marked exclusive (every scenario that sets a flag) run afterwards, one at a
//! time, so a flag never changes under another scenario's feet.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};

use crate::expect::{check, excerpt_text, json_eq, Observed};
use crate::format::{
    Body, FlagSet, Host, MockCheck, RequestStep, Scenario, ScenarioFile, StepKind,
};
use crate::sse::SseAssembler;
use crate::vars::{Uniques, VarError, Vars};

/// How `flag` steps set a KV flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagBackend {
    /// `PUT {base}/admin/flags/{key}` with the value as raw body and
    /// `Authorization: Bearer {admin_token}` (the native gateway's admin API).
    Admin,
    /// A shell command template run with `sh -c`; `{key}` and `{value}` are replaced by the
    /// shell-quoted key and value (e.g. `wrangler kv key put --binding FLAGS {key} {value}`).
    Command(String),
}

impl FromStr for FlagBackend {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "admin" {
            return Ok(FlagBackend::Admin);
        }
        match s.strip_prefix("cmd:") {
            Some(t) if !t.trim().is_empty() => Ok(FlagBackend::Command(t.to_owned())),
            _ => bail!("--flags is `admin` or `cmd:<shell template with {{key}} and {{value}}>`"),
        }
    }
}

/// Everything a run needs besides the scenarios.
#[derive(Clone, Debug)]
pub struct Options {
    /// The gateway under test, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// The mock origin, for `mock` steps and `{mock}`.
    pub mock_url: Option<String>,
    /// Which host is under test (scenarios may be limited to some).
    pub host: Host,
    /// `--var` values; they override a scenario's own `vars`.
    pub vars: Vec<(String, String)>,
    /// Scenarios in flight at once (at least 1).
    pub jobs: usize,
    /// How `flag` steps set flags.
    pub flags: FlagBackend,
    /// Limit for one request, from sending to the end of the body.
    pub timeout: Duration,
    /// Run only scenarios whose name contains this.
    pub filter: Option<String>,
}

/// Why a scenario failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// 1-based index of the failing step.
    pub step: usize,
    /// The step's label.
    pub label: String,
    /// Which copy of a repeat/parallel step failed, and how many there were.
    pub copy: Option<(u64, u64)>,
    /// The failed expectations.
    pub message: String,
    /// What was actually received (status, headers, body excerpt), when something was.
    pub actual: Option<String>,
}

/// A scenario's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step passed.
    Passed,
    /// A step failed; later steps did not run.
    Failed(Failure),
    /// Not run on this host; the text says why.
    Skipped(String),
}

/// One line (or, for a failure, a few) of output about one scenario.
#[derive(Clone, Debug)]
pub struct Report {
    /// The file, as given.
    pub file: String,
    /// The scenario's name.
    pub scenario: String,
    /// What happened.
    pub outcome: Outcome,
    /// Wall time of the scenario.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.elapsed.as_millis();
        match &self.outcome {
            Outcome::Passed => write!(f, "ok   {}: {} ({ms} ms)", self.file, self.scenario),
            Outcome::Skipped(why) => write!(f, "skip {}: {} ({why})", self.file, self.scenario),
            Outcome::Failed(fail) => {
                write!(
                    f,
                    "FAIL {}: {}: step {} `{}`",
                    self.file, self.scenario, fail.step, fail.label
                )?;
                if let Some((i, n)) = fail.copy {
                    write!(f, " (copy {} of {n})", i + 1)?;
                }
                write!(f, ": {} ({ms} ms)", fail.message)?;
                if let Some(actual) = &fail.actual {
                    write!(f, "\n     got {actual}")?;
                }
                Ok(())
            }
        }
    }
}

/// Counts of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Scenarios that passed.
    pub passed: usize,
    /// Scenarios that failed.
    pub failed: usize,
    /// Scenarios skipped on this host.
    pub skipped: usize,
}

impl Summary {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Skipped(_) => self.skipped += 1,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// A step that did not pass.
struct StepFail {
    message: String,
    copy: Option<(u64, u64)>,
    actual: Option<String>,
}

impl StepFail {
    fn msg(message: impl Into<String>) -> Self {
        StepFail {
            message: message.into(),
            copy: None,
            actual: None,
        }
    }
}

impl From<VarError> for StepFail {
    fn from(e: VarError) -> Self {
        StepFail::msg(e.to_string())
    }
}

/// How much body text a failure report shows.
const EXCERPT_CHARS: usize = 300;

/// Runs scenarios against one deployment.
#[derive(Debug)]
pub struct Runner {
    client: reqwest::Client,
    opts: Options,
    uniques: Uniques,
}

impl Runner {
    /// A runner; fails only if the HTTP client cannot be built.
    pub fn new(opts: Options) -> Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            // Below any host's idle-connection timeout (the native gateway closes after 30 s),
            // so a request never goes out on a connection the server is closing: a scenario
            // that waits as long as the server's timeout would otherwise race the close.
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Runner {
            client,
            opts,
            uniques: Uniques::random(),
        })
    }

    /// Runs every selected scenario of `files`, calling `on_report` as each finishes.
    pub async fn run_files(
        &self,
        files: &[ScenarioFile],
        mut on_report: impl FnMut(&Report),
    ) -> Summary {
        let mut summary = Summary::default();
        let mut shared = Vec::new();
        let mut exclusive = Vec::new();
        for file in files {
            let shown = file.path.display().to_string();
            for s in &file.scenarios {
                if self
                    .opts
                    .filter
                    .as_ref()
                    .is_some_and(|f| !s.name.contains(f.as_str()))
                {
                    continue;
                }
                if !s.runs_on(self.opts.host) {
                    let hosts: Vec<&str> = s.hosts.iter().flatten().map(|h| h.as_str()).collect();
                    let report = Report {
                        file: shown.clone(),
                        scenario: s.name.clone(),
                        outcome: Outcome::Skipped(format!("only on {}", hosts.join(", "))),
                        elapsed: Duration::ZERO,
                    };
                    summary.add(&report.outcome);
                    on_report(&report);
                } else if s.exclusive {
                    exclusive.push((shown.clone(), s));
                } else {
                    shared.push((shown.clone(), s));
                }
            }
        }
        let mut done = stream::iter(shared)
            .map(|(file, s)| self.timed(file, s))
            .buffer_unordered(self.opts.jobs.max(1));
        while let Some(report) = done.next().await {
            summary.add(&report.outcome);
            on_report(&report);
        }
        for (file, s) in exclusive {
            let report = self.timed(file, s).await;
            summary.add(&report.outcome);
            on_report(&report);
        }
        summary
    }

    async fn timed(&self, file: String, s: &Scenario) -> Report {
        let start = Instant::now();
        let outcome = self.run_scenario(s).await;
        Report {
            file,
            scenario: s.name.clone(),
            outcome,
            elapsed: start.elapsed(),
        }
    }

    /// Runs one scenario (whatever its `hosts`) with fresh unique values.
    pub async fn run_scenario(&self, s: &Scenario) -> Outcome {
        let mut vars = match self.scenario_vars(s) {
            Ok(v) => v,
            Err(e) => {
                return Outcome::Failed(Failure {
                    step: 0,
                    label: "vars".into(),
                    copy: None,
                    message: e.to_string(),
                    actual: None,
                })
            }
        };
        for (n, step) in s.steps.iter().enumerate() {
            let result = match &step.kind {
                StepKind::Request(r) => self.request_step(r, &mut vars).await,
                StepKind::Flag(f) => self.flag_step(f, &vars).await,
                StepKind::Mock(m) => self.mock_step(m, &vars).await,
                StepKind::Sleep(ms) => {
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                    Ok(())
                }
            };
            if let Err(fail) = result {
                return Outcome::Failed(Failure {
                    step: n + 1,
                    label: step.label(),
                    copy: fail.copy,
                    message: fail.message,
                    actual: fail.actual,
                });
            }
        }
        Outcome::Passed
    }

    fn scenario_vars(&self, s: &Scenario) -> Result<Vars, VarError> {
        let mut base = Vars::new();
        base.set("base", self.opts.base_url.trim_end_matches('/'));
        if let Some(m) = &self.opts.mock_url {
            base.set("mock", m.trim_end_matches('/'));
        }
        base.set("host", self.opts.host.as_str());
        base.set("run", self.uniques.run_id());
        base.set("ip", self.uniques.ip());
        base.set("conv", self.uniques.conv().to_string());
        for (k, v) in &self.opts.vars {
            base.set(k.clone(), v.clone());
        }
        let mut vars = base.clone();
        for (k, v) in &s.vars {
            // A `--var` of the same name wins over the scenario's default.
            if base.get(k).is_none() {
                vars.set(k.clone(), base.substitute(v)?);
            }
        }
        Ok(vars)
    }

    async fn request_step(&self, r: &RequestStep, vars: &mut Vars) -> Result<(), StepFail> {
        let copies = r.copies();
        let mut counts: std::collections::BTreeMap<u16, usize> = Default::default();
        let mut first_fail: Option<StepFail> = None;
        let mut last: Option<Observed> = None;
        for round in 0..u64::from(r.repeat) {
            let batch = (0..u64::from(r.parallel)).map(|j| {
                let i = round * u64::from(r.parallel) + j;
                let mut v = vars.clone();
                v.set("i", i.to_string());
                v.set("ip_i", self.uniques.ip());
                async move { (i, self.send(r, &v).await, v) }
            });
            for (i, result, v) in join_all(batch).await {
                let copy = (copies > 1).then_some((i, copies));
                match result {
                    Err(mut fail) => {
                        fail.copy = copy;
                        first_fail.get_or_insert(fail);
                    }
                    Ok(obs) => {
                        *counts.entry(obs.status).or_default() += 1;
                        let fails = check(&r.expect, &obs, &v)?;
                        if !fails.is_empty() && first_fail.is_none() {
                            first_fail = Some(StepFail {
                                message: fails.join("; "),
                                copy,
                                actual: Some(obs.excerpt(EXCERPT_CHARS)),
                            });
                        }
                        last = Some(obs);
                    }
                }
            }
            if let Some(fail) = first_fail {
                return Err(fail);
            }
        }
        if let Some(want) = &r.count_status {
            if *want != counts {
                return Err(StepFail::msg(format!(
                    "count_status: expected {}, got {}",
                    show_counts(want),
                    show_counts(&counts)
                )));
            }
        }
        if let Some(obs) = last.filter(|_| !r.save.is_empty()) {
            save(&r.save, &obs, vars)?;
        }
        Ok(())
    }

    /// Sends one copy of a request step and reads the whole reply.
    async fn send(&self, r: &RequestStep, vars: &Vars) -> Result<Observed, StepFail> {
        let url = self.url(&vars.substitute(&r.path)?);
        let method = reqwest::Method::from_bytes(r.method.as_bytes())
            .map_err(|_| StepFail::msg(format!("bad method {:?}", r.method)))?;
        let mut req = self.client.request(method, &url).timeout(self.opts.timeout);
        let mut has_content_type = false;
        for (name, value) in &r.headers {
            has_content_type |= name.eq_ignore_ascii_case("content-type");
            req = req.header(name.as_str(), vars.substitute(value)?);
        }
        let body: Option<Vec<u8>> = match &r.body {
            Body::Empty => None,
            Body::Json(v) => {
                if !has_content_type {
                    req = req.header("content-type", "application/json");
                }
                let v = vars.substitute_json(v)?;
                Some(serde_json::to_vec(&v).map_err(|e| StepFail::msg(e.to_string()))?)
            }
            Body::Raw(s) => Some(vars.substitute(s)?.into_bytes()),
            Body::Repeat {
                prefix,
                text,
                times,
                suffix,
            } => {
                let (prefix, text, suffix) = (
                    vars.substitute(prefix)?,
                    vars.substitute(text)?,
                    vars.substitute(suffix)?,
                );
                let mut out = prefix.into_bytes();
                let reps = usize::try_from(*times).unwrap_or(usize::MAX);
                out.extend_from_slice(text.repeat(reps).as_bytes());
                out.extend_from_slice(suffix.as_bytes());
                Some(out)
            }
            Body::Bytes(b) => Some(b.clone()),
        };
        if let Some(b) = body {
            req = req.body(b);
        }
        read_reply(req, r.hang_up_after_reads).await
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.opts.base_url.trim_end_matches('/'))
        }
    }

    async fn flag_step(&self, flag: &FlagSet, vars: &Vars) -> Result<(), StepFail> {
        let key = vars.substitute(&flag.key)?;
        let value = vars.substitute(&flag.value)?;
        match &self.opts.flags {
            FlagBackend::Admin => {
                let token = vars.get("admin_token").ok_or_else(|| {
                    StepFail::msg("the `admin` flag backend needs --var admin_token=TOKEN")
                })?;
                let req = self
                    .client
                    .put(self.url(&format!("/admin/flags/{key}")))
                    .timeout(self.opts.timeout)
                    .bearer_auth(token)
                    .body(value.clone());
                let obs = read_reply(req, None).await?;
                if !(200..300).contains(&obs.status) {
                    return Err(StepFail {
                        message: format!("setting flag {key} = {value:?}: status {}", obs.status),
                        copy: None,
                        actual: Some(obs.excerpt(EXCERPT_CHARS)),
                    });
                }
                Ok(())
            }
            FlagBackend::Command(template) => {
                let mut fill = Vars::new();
                fill.set("key", shell_quote(&key));
                fill.set("value", shell_quote(&value));
                let cmd = fill.substitute(template)?;
                let out = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .kill_on_drop(true)
                    .output();
                let out = tokio::time::timeout(self.opts.timeout, out)
                    .await
                    .map_err(|_| StepFail::msg(format!("flag command timed out: {cmd}")))?
                    .map_err(|e| StepFail::msg(format!("flag command could not start: {e}")))?;
                if !out.status.success() {
                    return Err(StepFail {
                        message: format!("flag command failed ({}): {cmd}", out.status),
                        copy: None,
                        actual: Some(format!(
                            "stderr {}",
                            excerpt_text(&String::from_utf8_lossy(&out.stderr), EXCERPT_CHARS)
                        )),
                    });
                }
                Ok(())
            }
        }
    }

    async fn mock_step(&self, m: &MockCheck, vars: &Vars) -> Result<(), StepFail> {
        let Some(mock) = &self.opts.mock_url else {
            return Err(StepFail::msg("a mock step needs --mock-url"));
        };
        let url = format!("{}/mock/calls", mock.trim_end_matches('/'));
        let checks = m
            .checks
            .iter()
            .map(|(p, want)| Ok((vars.substitute(p)?, vars.substitute_json(want)?)))
            .collect::<Result<Vec<_>, VarError>>()?;
        let deadline = Instant::now() + Duration::from_millis(m.within_ms);
        loop {
            let obs = read_reply(self.client.get(&url).timeout(self.opts.timeout), None).await?;
            let fails = match serde_json::from_slice::<serde_json::Value>(&obs.body) {
                Ok(record) if obs.status == 200 => mock_fails(&checks, &record),
                _ => vec![format!(
                    "GET {url}: status {}, not a JSON record",
                    obs.status
                )],
            };
            if fails.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StepFail {
                    message: format!("{} (waited {} ms)", fails.join("; "), m.within_ms),
                    copy: None,
                    actual: Some(obs.excerpt(EXCERPT_CHARS)),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `req` and reads the reply incrementally, counting network reads and feeding the
/// SSE assembler when the reply is an event stream. With `hang_up`, stops after that many
/// reads and drops the reply, which closes its connection mid-body.
async fn read_reply(
    req: reqwest::RequestBuilder,
    hang_up: Option<u32>,
) -> Result<Observed, StepFail> {
    let start = Instant::now();
    let mut resp = req
        .send()
        .await
        .map_err(|e| StepFail::msg(format!("request failed: {}", error_chain(&e))))?;
    let mut obs = Observed {
        status: resp.status().as_u16(),
        headers: resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        ..Observed::default()
    };
    let is_sse = obs.header("content-type").is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    });
    let mut sse = is_sse.then(SseAssembler::new);
    // TODO(#2): a "read" is one body frame from hyper, which is one socket read's worth of
    // decoded data in practice; a frame can span two chunks that arrived together, so
    // `min_reads` proves "not buffered" only when the origin pauses between writes.
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => {
                if bytes.is_empty() {
                    continue;
                }
                obs.reads += 1;
                obs.first_read_ms.get_or_insert_with(|| millis(start));
                if let Some(a) = sse.as_mut() {
                    a.feed(&bytes);
                }
                obs.body.extend_from_slice(&bytes);
                if hang_up.is_some_and(|n| obs.reads >= usize::try_from(n).unwrap_or(usize::MAX)) {
                    drop(resp);
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                obs.elapsed_ms = millis(start);
                obs.sse = sse.map(SseAssembler::finish);
                return Err(StepFail {
                    message: format!(
                        "reading the body failed after {} bytes: {}",
                        obs.body.len(),
                        error_chain(&e)
                    ),
                    copy: None,
                    actual: Some(obs.excerpt(EXCERPT_CHARS)),
                });
            }
        }
    }
    obs.elapsed_ms = millis(start);
    obs.sse = sse.map(SseAssembler::finish);
    Ok(obs)
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An error and its causes, one after another.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn show_counts(map: &std::collections::BTreeMap<u16, usize>) -> String {
    let parts: Vec<String> = map.iter().map(|(s, n)| format!("{s} x{n}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Failed mock checks: a missing pointer counts as 0 where a number is expected.
fn mock_fails(checks: &[(String, serde_json::Value)], record: &serde_json::Value) -> Vec<String> {
    let zero = serde_json::Value::from(0);
    checks
        .iter()
        .filter_map(|(pointer, want)| {
            let got = record
                .pointer(pointer)
                .or(want.is_number().then_some(&zero));
            match got {
                Some(got) if json_eq(want, got) => None,
                Some(got) => Some(format!("mock {pointer}: expected {want}, got {got}")),
                None => Some(format!("mock {pointer}: expected {want}, missing")),
            }
        })
        .collect()
}

/// Captures `save` values into `vars`.
fn save(save: &[(String, String)], obs: &Observed, vars: &mut Vars) -> Result<(), StepFail> {
    let doc = serde_json::from_slice::<serde_json::Value>(&obs.body).ok();
    for (name, source) in save {
        let value = if let Some(header) = source.strip_prefix("header:") {
            obs.header(header)
        } else {
            doc.as_ref()
                .and_then(|d| d.pointer(source))
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
        };
        let Some(value) = value else {
            return Err(StepFail {
                message: format!("save {name}: {source} not found in the reply"),
                copy: None,
                actual: Some(obs.excerpt(EXCERPT_CHARS)),
            });
        };
        vars.set(name.clone(), value);
    }
    Ok(())
}

/// `s` as one single-quoted shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runner(vars: &[(&str, &str)]) -> Runner {
        Runner::new(Options {
            base_url: "http://gw.test/".into(),
            mock_url: None,
            host: Host::Worker,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            jobs: 1,
            flags: FlagBackend::Admin,
            timeout: Duration::from_secs(1),
            filter: None,
        })
        .unwrap()
    }

    fn one_scenario(text: &str) -> Scenario {
        let f = crate::format::parse(text, std::path::Path::new("x.toml")).unwrap();
        f.scenarios.into_iter().next().unwrap()
    }

    #[test]
    fn scenario_vars_are_layered_and_fresh_per_run() {
        let r = runner(&[("admin_token", "t0k"), ("model", "from-cli")]);
        let s = one_scenario(
            "[[scenario]]\nname='a'\nvars = { model = 'm-{host}', who = 'u-{run}', \
             tok = '{admin_token}', where = '{base}/x' }\n[[scenario.step]]\nsleep_ms = 0\n",
        );
        let a = r.scenario_vars(&s).unwrap();
        let b = r.scenario_vars(&s).unwrap();
        assert_eq!(
            a.get("model"),
            Some("from-cli"),
            "--var overrides the scenario default"
        );
        assert_eq!(a.get("tok"), Some("t0k"));
        assert_eq!(a.get("where"), Some("http://gw.test/x"));
        assert_eq!(a.get("host"), Some("worker"));
        assert_eq!(a.get("mock"), None);
        assert_eq!(
            a.get("who").unwrap(),
            format!("u-{}", a.get("run").unwrap())
        );
        for name in ["run", "ip", "conv"] {
            assert_ne!(a.get(name), b.get(name), "{name} must differ between runs");
        }
    }

    #[tokio::test]
    async fn undefined_variables_fail_the_scenario_not_the_run() {
        let r = runner(&[]);
        let s = one_scenario(
            "[[scenario]]\nname='a'\nvars = { tok = '{admin_tokn}' }\n[[scenario.step]]\nsleep_ms = 0\n",
        );
        let Outcome::Failed(f) = r.run_scenario(&s).await else {
            panic!()
        };
        assert_eq!(
            (f.step, f.message.as_str()),
            (0, "undefined variable {admin_tokn}")
        );

        let s = one_scenario("[[scenario]]\nname='a'\n[[scenario.step]]\npath='/u/{nope}'\n");
        let Outcome::Failed(f) = r.run_scenario(&s).await else {
            panic!()
        };
        assert_eq!(
            (f.step, f.message.as_str()),
            (1, "undefined variable {nope}")
        );

        // A flag step without a token and a mock step without --mock-url say what is missing.
        let s = one_scenario(
            "[[scenario]]\nname='a'\n[[scenario.step]]\nflag = { key = 'tier', value = 'x' }\n",
        );
        let Outcome::Failed(f) = r.run_scenario(&s).await else {
            panic!()
        };
        assert!(f.message.contains("--var admin_token="), "{}", f.message);
        let s = one_scenario("[[scenario]]\nname='a'\n[[scenario.step]]\nmock = { '/a' = 1 }\n");
        let Outcome::Failed(f) = r.run_scenario(&s).await else {
            panic!()
        };
        assert!(f.message.contains("--mock-url"), "{}", f.message);
    }

    #[test]
    fn summary_line_has_the_exact_form() {
        let mut s = Summary {
            passed: 3,
            failed: 1,
            skipped: 0,
        };
        assert_eq!(s.to_string(), "3 passed, 1 failed");
        s.skipped = 2;
        assert_eq!(s.to_string(), "3 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn flag_backend_parses() {
        assert_eq!("admin".parse::<FlagBackend>().unwrap(), FlagBackend::Admin);
        assert_eq!(
            "cmd:wrangler kv key put {key} {value}"
                .parse::<FlagBackend>()
                .unwrap(),
            FlagBackend::Command("wrangler kv key put {key} {value}".into())
        );
        assert!("cmd:".parse::<FlagBackend>().is_err());
        assert!("kv".parse::<FlagBackend>().is_err());
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("economy"), "'economy'");
        assert_eq!(shell_quote("it's; rm -rf /"), r"'it'\''s; rm -rf /'");
    }

    #[test]
    fn mock_checks_treat_missing_as_zero() {
        let record = json!({"toggle_status": {"42": 1}, "chat_by_user": {"u-a": 3}});
        let checks = vec![
            ("/toggle_status/42".to_owned(), json!(1)),
            ("/toggle_status/43".to_owned(), json!(0)),
            ("/chat_by_user/u-b".to_owned(), json!(0)),
        ];
        assert!(mock_fails(&checks, &record).is_empty());
        let bad = vec![
            ("/toggle_status/42".to_owned(), json!(2)),
            ("/toggle_status/43".to_owned(), json!(1)),
            ("/nope".to_owned(), json!("x")),
        ];
        let fails = mock_fails(&bad, &record);
        assert_eq!(
            fails,
            vec![
                "mock /toggle_status/42: expected 2, got 1",
                "mock /toggle_status/43: expected 1, got 0",
                "mock /nope: expected \"x\", missing",
            ]
        );
    }

    #[test]
    fn save_from_json_and_header() {
        let obs = Observed {
            status: 200,
            headers: vec![("x-ticket".into(), "T-9".into())],
            body: br#"{"id":"abc","n":3}"#.to_vec(),
            ..Default::default()
        };
        let mut vars = Vars::new();
        let spec = vec![
            ("id".to_owned(), "/id".to_owned()),
            ("n".to_owned(), "/n".to_owned()),
            ("t".to_owned(), "header:X-Ticket".to_owned()),
        ];
        assert!(save(&spec, &obs, &mut vars).is_ok());
        assert_eq!(vars.get("id"), Some("abc"));
        assert_eq!(vars.get("n"), Some("3"));
        assert_eq!(vars.get("t"), Some("T-9"));
        let missing = vec![("x".to_owned(), "/missing".to_owned())];
        let err = save(&missing, &obs, &mut vars).err().unwrap();
        assert!(err.message.contains("/missing not found"));
    }

    #[test]
    fn failure_report_format() {
        let r = Report {
            file: "a.toml".into(),
            scenario: "limit".into(),
            outcome: Outcome::Failed(Failure {
                step: 2,
                label: "POST /v1/chat/completions".into(),
                copy: Some((10, 11)),
                message: "status: expected 429, got 200".into(),
                actual: Some("status 200; headers: ; body: \"\"".into()),
            }),
            elapsed: Duration::from_millis(5),
        };
        assert_eq!(
            r.to_string(),
            "FAIL a.toml: limit: step 2 `POST /v1/chat/completions` (copy 11 of 11): \
             status: expected 429, got 200 (5 ms)\n     got status 200; headers: ; body: \"\""
        );
    }
}
