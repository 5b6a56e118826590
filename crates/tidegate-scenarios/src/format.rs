//! The scenario file format (TOML), parsed once into checked types.
//!
//! `tests/scenarios/README.md` is the reference for authors; this module enforces it. Unknown
//! keys are errors everywhere, so a misspelt expectation cannot silently check nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::expect::{toml_to_json, Expect};

/// Largest number of copies (`repeat` x `parallel`) one step may send.
pub const MAX_COPIES: u64 = 100_000;
/// Largest `parallel`.
pub const MAX_PARALLEL: u32 = 2_000;
/// Largest body a step may build, in bytes.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The host a run targets; scenarios may be limited to some hosts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// The native `tidegate serve` gateway.
    Native,
    /// The Cloudflare Worker (on workerd).
    Worker,
    /// The Envoy proxy-wasm filter.
    Envoy,
}

impl Host {
    /// The name used on the command line and in `hosts = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Host::Native => "native",
            Host::Worker => "worker",
            Host::Envoy => "envoy",
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Host {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "native" => Ok(Host::Native),
            "worker" => Ok(Host::Worker),
            "envoy" => Ok(Host::Envoy),
            other => bail!("unknown host {other:?} (expected native, worker or envoy)"),
        }
    }
}

/// A loaded scenario file.
#[derive(Clone, Debug)]
pub struct ScenarioFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its scenarios, in file order.
    pub scenarios: Vec<Scenario>,
}

/// One scenario: steps run in order against a fresh set of unique values.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Unique within its file.
    pub name: String,
    /// Free text for readers.
    pub description: Option<String>,
    /// Hosts it runs on; `None` means all.
    pub hosts: Option<Vec<Host>>,
    /// Run alone, with no other scenario in flight (set for scenarios that change flags).
    pub exclusive: bool,
    /// Scenario constants, themselves substituted once per run.
    pub vars: BTreeMap<String, String>,
    /// The steps.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Whether it runs on `host`.
    pub fn runs_on(&self, host: Host) -> bool {
        self.hosts.as_ref().is_none_or(|h| h.contains(&host))
    }
}

/// One step of a scenario.
#[derive(Clone, Debug)]
pub struct Step {
    /// A label for reports.
    pub name: Option<String>,
    /// What it does.
    pub kind: StepKind,
}

impl Step {
    /// A short label: the name, or what the step does.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match &self.kind {
            StepKind::Request(r) => format!("{} {}", r.method, r.path),
            StepKind::Flag(f) => format!("flag {} = {:?}", f.key, f.value),
            StepKind::Mock(_) => "mock calls".to_owned(),
            StepKind::Sleep(ms) => format!("sleep {ms} ms"),
        }
    }
}

/// The kinds of step.
#[derive(Clone, Debug)]
pub enum StepKind {
    /// Send a request (possibly many copies) and check the response(s).
    Request(Box<RequestStep>),
    /// Set a KV flag through the flag backend.
    Flag(FlagSet),
    /// Check the mock origin's call record.
    Mock(MockCheck),
    /// Wait this many milliseconds.
    Sleep(u64),
}

/// A request step.
#[derive(Clone, Debug)]
pub struct RequestStep {
    /// HTTP method, upper case.
    pub method: String,
    /// Path (with placeholders) appended to the base URL, or a full URL.
    pub path: String,
    /// Request headers (with placeholders), scenario defaults merged in.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// Sequential rounds.
    pub repeat: u32,
    /// Concurrent copies per round.
    pub parallel: u32,
    /// Per-response expectations.
    pub expect: Expect,
    /// Exact count of each status over all copies.
    pub count_status: Option<BTreeMap<u16, usize>>,
    /// Variable name -> `/json/pointer` or `header:name`, captured after the step passes.
    pub save: Vec<(String, String)>,
    /// Stop reading after this many body reads and close the connection, as a client that
    /// presses stop does (the expectations see what came until then).
    pub hang_up_after_reads: Option<u32>,
}

impl RequestStep {
    /// Copies sent in total.
    pub fn copies(&self) -> u64 {
        u64::from(self.repeat) * u64::from(self.parallel)
    }
}

/// A request body, before placeholders are replaced.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// No body.
    Empty,
    /// JSON (from an inline TOML value); sent with `content-type: application/json` unless
    /// the step sets one.
    Json(serde_json::Value),
    /// Text as written.
    Raw(String),
    /// `prefix` + `text` x `times` + `suffix`, for oversized bodies.
    Repeat {
        /// Written once first.
        prefix: String,
        /// Repeated.
        text: String,
        /// How often.
        times: u64,
        /// Written once last.
        suffix: String,
    },
    /// Exact bytes (from `body_hex`); no placeholders.
    Bytes(Vec<u8>),
}

/// `flag = { key = ..., value = ... }`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FlagSet {
    /// The KV key (placeholders allowed).
    pub key: String,
    /// The value (placeholders allowed).
    pub value: String,
}

/// `mock = { "/pointer" = value, ... }`.
#[derive(Clone, Debug, PartialEq)]
pub struct MockCheck {
    /// JSON pointer (with placeholders) -> expected value.
    pub checks: Vec<(String, serde_json::Value)>,
    /// Poll the record until every check holds, for at most this long.
    pub within_ms: u64,
}

/// How long a mock step polls by default.
pub const DEFAULT_MOCK_WITHIN_MS: u64 = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    scenario: Vec<RawScenario>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    description: Option<String>,
    hosts: Option<Vec<String>>,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    step: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<String>,
    method: Option<String>,
    path: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    json: Option<toml::Value>,
    body: Option<String>,
    body_repeat: Option<RawRepeat>,
    body_hex: Option<String>,
    repeat: Option<u32>,
    parallel: Option<u32>,
    expect: Option<Expect>,
    #[serde(default)]
    save: BTreeMap<String, String>,
    flag: Option<FlagSet>,
    mock: Option<BTreeMap<String, toml::Value>>,
    within_ms: Option<u64>,
    sleep_ms: Option<u64>,
    hang_up_after_reads: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepeat {
    #[serde(default)]
    prefix: String,
    text: String,
    times: u64,
    #[serde(default)]
    suffix: String,
}

/// Reads and checks a scenario file.
pub fn load_file(path: &Path) -> Result<ScenarioFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, path).with_context(|| format!("in {}", path.display()))
}

/// Parses and checks scenario file text; `path` is recorded for reports.
pub fn parse(text: &str, path: &Path) -> Result<ScenarioFile> {
    let raw: RawFile = toml::from_str(text)?;
    if raw.scenario.is_empty() {
        bail!("no [[scenario]] in the file");
    }
    let mut scenarios = Vec::with_capacity(raw.scenario.len());
    for (i, rs) in raw.scenario.into_iter().enumerate() {
        let name = rs.name.clone();
        if scenarios.iter().any(|s: &Scenario| s.name == name) {
            bail!("scenario {} {name:?}: the name is used twice", i + 1);
        }
        scenarios.push(scenario(rs).with_context(|| format!("scenario {} {name:?}", i + 1))?);
    }
    Ok(ScenarioFile {
        path: path.to_owned(),
        scenarios,
    })
}

fn scenario(rs: RawScenario) -> Result<Scenario> {
    if rs.name.trim().is_empty() {
        bail!("`name` is empty");
    }
    let hosts = match rs.hosts {
        None => None,
        Some(list) => {
            if list.is_empty() {
                bail!("`hosts` is empty: list at least one of native, worker, envoy");
            }
            Some(
                list.iter()
                    .map(|h| h.parse())
                    .collect::<Result<Vec<Host>>>()?,
            )
        }
    };
    for name in rs.vars.keys() {
        check_var_name(name).context("`vars`")?;
        if BUILTIN_VARS.contains(&name.as_str()) {
            bail!("`vars`: {name:?} is a built-in variable and cannot be redefined");
        }
    }
    for name in rs.headers.keys() {
        check_header_name(name).context("`headers`")?;
    }
    if rs.step.is_empty() {
        bail!("no [[scenario.step]]");
    }
    let mut steps = Vec::with_capacity(rs.step.len());
    for (i, raw) in rs.step.into_iter().enumerate() {
        steps.push(step(raw, &rs.headers).with_context(|| format!("step {}", i + 1))?);
    }
    let changes_flags = steps.iter().any(|s| matches!(s.kind, StepKind::Flag(_)));
    Ok(Scenario {
        name: rs.name,
        description: rs.description,
        hosts,
        exclusive: rs.exclusive || changes_flags,
        vars: rs.vars,
        steps,
    })
}

/// Variables the runner defines; a scenario's `vars` and `save` may not redefine them.
pub const BUILTIN_VARS: &[&str] = &["run", "ip", "conv", "base", "mock", "host", "i", "ip_i"];

fn check_var_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("{name:?} is not a variable name (letters, digits and _, not starting with a digit)");
    }
    Ok(())
}

fn check_header_name(name: &str) -> Result<()> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| anyhow!("{name:?} is not a valid header name"))
}

fn step(raw: RawStep, scenario_headers: &BTreeMap<String, String>) -> Result<Step> {
    let kinds = [
        raw.path.is_some(),
        raw.flag.is_some(),
        raw.mock.is_some(),
        raw.sleep_ms.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        1 => {}
        0 => bail!("a step needs one of `path` (request), `flag`, `mock` or `sleep_ms`"),
        _ => bail!("a step has exactly one of `path`, `flag`, `mock`, `sleep_ms`"),
    }
    let name = raw.name.clone();
    if let Some(path) = raw.path.clone() {
        return request_step(raw, path, scenario_headers).map(|r| Step {
            name,
            kind: StepKind::Request(Box::new(r)),
        });
    }
    let request_only = [
        ("method", raw.method.is_some()),
        ("headers", !raw.headers.is_empty()),
        ("json", raw.json.is_some()),
        ("body", raw.body.is_some()),
        ("body_repeat", raw.body_repeat.is_some()),
        ("body_hex", raw.body_hex.is_some()),
        ("repeat", raw.repeat.is_some()),
        ("parallel", raw.parallel.is_some()),
        ("expect", raw.expect.is_some()),
        ("save", !raw.save.is_empty()),
    ];
    if let Some((key, _)) = request_only.iter().find(|(_, set)| *set) {
        bail!("`{key}` belongs to request steps (those with `path`)");
    }
    if raw.within_ms.is_some() && raw.mock.is_none() {
        bail!("`within_ms` belongs to mock steps");
    }
    let kind = if let Some(flag) = raw.flag {
        if flag.key.is_empty() {
            bail!("`flag.key` is empty");
        }
        StepKind::Flag(flag)
    } else if let Some(mock) = raw.mock {
        if mock.is_empty() {
            bail!("`mock` has no checks");
        }
        for pointer in mock.keys() {
            if !pointer.starts_with('/') {
                bail!("`mock`: {pointer:?} is not a JSON pointer (starts with `/`)");
            }
        }
        StepKind::Mock(MockCheck {
            checks: mock
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
            within_ms: raw.within_ms.unwrap_or(DEFAULT_MOCK_WITHIN_MS),
        })
    } else {
        StepKind::Sleep(raw.sleep_ms.unwrap_or(0))
    };
    Ok(Step { name, kind })
}

fn request_step(
    raw: RawStep,
    path: String,
    scenario_headers: &BTreeMap<String, String>,
) -> Result<RequestStep> {
    if !(path.starts_with('/') || path.starts_with('{')) {
        bail!("`path` {path:?} must start with `/` (or a variable such as `{{mock}}`)");
    }
    let bodies = [
        raw.json.is_some(),
        raw.body.is_some(),
        raw.body_repeat.is_some(),
        raw.body_hex.is_some(),
    ];
    if bodies.iter().filter(|b| **b).count() > 1 {
        bail!("a step has at most one of `json`, `body`, `body_repeat`, `body_hex`");
    }
    let body = if let Some(v) = &raw.json {
        Body::Json(toml_to_json(v))
    } else if let Some(s) = raw.body {
        Body::Raw(s)
    } else if let Some(r) = raw.body_repeat {
        let total = (r.text.len() as u64)
            .saturating_mul(r.times)
            .saturating_add((r.prefix.len() + r.suffix.len()) as u64);
        if total > MAX_BODY_BYTES {
            bail!("`body_repeat` builds {total} bytes, more than {MAX_BODY_BYTES}");
        }
        Body::Repeat {
            prefix: r.prefix,
            text: r.text,
            times: r.times,
            suffix: r.suffix,
        }
    } else if let Some(hex) = raw.body_hex {
        Body::Bytes(parse_hex(&hex).context("`body_hex`")?)
    } else {
        Body::Empty
    };
    let method = match raw.method {
        Some(m) => m,
        None if body == Body::Empty => "GET".to_owned(),
        None => "POST".to_owned(),
    };
    if reqwest::Method::from_bytes(method.as_bytes()).is_err() || method != method.to_uppercase() {
        bail!("`method` {method:?} is not an upper-case HTTP method");
    }
    let repeat = raw.repeat.unwrap_or(1);
    let parallel = raw.parallel.unwrap_or(1);
    if repeat == 0 || parallel == 0 {
        bail!("`repeat` and `parallel` are at least 1");
    }
    if parallel > MAX_PARALLEL {
        bail!("`parallel` is at most {MAX_PARALLEL}");
    }
    if u64::from(repeat) * u64::from(parallel) > MAX_COPIES {
        bail!("`repeat` x `parallel` is at most {MAX_COPIES}");
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in scenario_headers.iter().chain(raw.headers.iter()) {
        check_header_name(name).context("`headers`")?;
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_ascii_lowercase(), value.clone()));
    }
    let expect = raw.expect.unwrap_or_default();
    let count_status = match &expect.count_status {
        None => None,
        Some(map) => {
            if expect.status.is_some() {
                bail!("`expect.status` and `expect.count_status` exclude each other");
            }
            let mut out = BTreeMap::new();
            for (k, n) in map {
                let status: u16 = k
                    .parse()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| anyhow!("`expect.count_status`: {k:?} is not an HTTP status"))?;
                out.insert(status, *n);
            }
            let total: u64 = out.values().map(|n| *n as u64).sum();
            let copies = u64::from(repeat) * u64::from(parallel);
            if total != copies {
                bail!("`expect.count_status` counts {total} responses but the step sends {copies}");
            }
            Some(out)
        }
    };
    for (name, pointer) in &raw.save {
        check_var_name(name).context("`save`")?;
        if BUILTIN_VARS.contains(&name.as_str()) {
            bail!("`save`: {name:?} is a built-in variable");
        }
        if !(pointer.starts_with('/') || pointer.starts_with("header:")) {
            bail!(
                "`save.{name}`: {pointer:?} is neither a JSON pointer (`/a/b`) nor `header:NAME`"
            );
        }
    }
    if !raw.save.is_empty() && repeat * parallel != 1 {
        bail!("`save` needs a single request (no `repeat` / `parallel`)");
    }
    Ok(RequestStep {
        method,
        path,
        headers,
        body,
        repeat,
        parallel,
        expect,
        count_status,
        save: raw.save.into_iter().collect(),
        hang_up_after_reads: match raw.hang_up_after_reads {
            Some(0) => bail!("`hang_up_after_reads` is at least 1"),
            n => n,
        },
    })
}

/// Hex digits to bytes; whitespace between byte pairs is allowed.
pub fn parse_hex(text: &str) -> Result<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| anyhow!("not hex"))?;
            u8::from_str_radix(s, 16).map_err(|_| anyhow!("{s:?} is not a hex byte"))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::expect::StatusSet;

    fn parse_str(text: &str) -> Result<ScenarioFile> {
        parse(text, Path::new("t.toml"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse_str(text).unwrap_err())
    }

    #[test]
    fn full_example_parses() {
        let f = parse_str(
            r#"
            [[scenario]]
            name = "user limit"
            hosts = ["native", "worker"]
            vars = { who = "u-{run}" }
            headers = { x-user-id = "{who}", X-Forwarded-For = "{ip}" }

            [[scenario.step]]
            path = "/v1/chat/completions"
            json = { model = "m", messages = [{ role = "user", content = "hi {run}" }], stream = false }
            repeat = 10
            expect.status = 200
            expect.headers_match = { ratelimit = '"user";r=#;t=#' }

            [[scenario.step]]
            name = "eleventh is refused"
            path = "/v1/chat/completions"
            headers = { x-forwarded-for = "{ip_i}" }
            body = '{"messages":[{"role":"user","content":"hi"}]}'
            parallel = 3
            expect.count_status = { 429 = 3 }

            [[scenario.step]]
            flag = { key = "tier", value = "economy" }

            [[scenario.step]]
            mock = { "/toggle_status/{conv}" = 1 }
            within_ms = 200

            [[scenario.step]]
            sleep_ms = 1100

            [[scenario.step]]
            method = "PUT"
            path = "/x"
            body_hex = "ff fe 00"
            save = { token = "/token", etag = "header:etag" }
            [scenario.step.expect]
            status = [200, 204]
            json = { "/ok" = true }
            "#,
        )
        .unwrap();
        let s = &f.scenarios[0];
        assert_eq!(s.hosts, Some(vec![Host::Native, Host::Worker]));
        assert!(s.exclusive, "a flag step makes the scenario exclusive");
        assert!(s.runs_on(Host::Worker) && !s.runs_on(Host::Envoy));
        let StepKind::Request(r) = &s.steps[0].kind else {
            panic!()
        };
        assert_eq!(r.method, "POST");
        assert_eq!(r.repeat, 10);
        assert_eq!(r.expect.status, Some(StatusSet::One(200)));
        assert_eq!(
            r.headers,
            vec![
                ("x-forwarded-for".into(), "{ip}".into()),
                ("x-user-id".into(), "{who}".into())
            ]
        );
        assert!(matches!(&r.body, Body::Json(v) if v["messages"][0]["content"] == "hi {run}"));
        let StepKind::Request(r) = &s.steps[1].kind else {
            panic!()
        };
        assert_eq!(s.steps[1].label(), "eleventh is refused");
        assert_eq!(r.count_status.as_ref().unwrap()[&429], 3);
        // The step's header overrides the scenario default, whatever its case.
        assert_eq!(
            r.headers
                .iter()
                .filter(|(n, _)| n == "x-forwarded-for")
                .count(),
            1
        );
        assert!(r
            .headers
            .contains(&("x-forwarded-for".into(), "{ip_i}".into())));
        assert!(matches!(&s.steps[2].kind, StepKind::Flag(f) if f.value == "economy"));
        let StepKind::Mock(m) = &s.steps[3].kind else {
            panic!()
        };
        assert_eq!(m.within_ms, 200);
        assert_eq!(
            m.checks,
            vec![("/toggle_status/{conv}".into(), serde_json::json!(1))]
        );
        assert!(matches!(s.steps[4].kind, StepKind::Sleep(1100)));
        let StepKind::Request(r) = &s.steps[5].kind else {
            panic!()
        };
        assert_eq!(r.body, Body::Bytes(vec![0xff, 0xfe, 0]));
        assert_eq!(r.save.len(), 2);
        assert_eq!(r.expect.status, Some(StatusSet::Any(vec![200, 204])));
        assert_eq!(s.steps[5].label(), "PUT /x");
    }

    #[test]
    fn get_is_the_default_without_body() {
        let f = parse_str("[[scenario]]\nname='h'\n[[scenario.step]]\npath='/healthz'\n").unwrap();
        let StepKind::Request(r) = &f.scenarios[0].steps[0].kind else {
            panic!()
        };
        assert_eq!(r.method, "GET");
        assert!(!f.scenarios[0].exclusive);
    }

    #[test]
    fn mistakes_are_named() {
        let head = "[[scenario]]\nname = 's'\n[[scenario.step]]\n";
        let cases = [
            ("path = '/'\nexpect.stauts = 200", "unknown field `stauts`"),
            (
                "path = '/'\nexpect = { status = 200, count_status = { 200 = 1 } }",
                "exclude each other",
            ),
            (
                "path = '/'\nrepeat = 5\nexpect.count_status = { 200 = 4 }",
                "counts 4 responses but the step sends 5",
            ),
            (
                "path = '/'\nexpect.count_status = { ok = 1 }",
                "\"ok\" is not an HTTP status",
            ),
            (
                "path = '/'\nflag = { key = 'a', value = 'b' }",
                "exactly one of",
            ),
            ("method = 'GET'", "needs one of `path`"),
            ("path = 'v1/x'", "must start with `/`"),
            ("path = '/'\nmethod = 'get'", "upper-case HTTP method"),
            (
                "path = '/'\nbody = 'a'\njson = { a = 1 }",
                "at most one of `json`",
            ),
            ("path = '/'\nbody_hex = 'f'", "odd number of hex digits"),
            ("path = '/'\nbody_hex = 'zz'", "\"zz\" is not a hex byte"),
            (
                "path = '/'\nbody_repeat = { text = 'aaaa', times = 100000000 }",
                "more than",
            ),
            ("path = '/'\nparallel = 0", "at least 1"),
            ("path = '/'\nparallel = 5000", "at most 2000"),
            (
                "path = '/'\nheaders = { 'bad header' = 'x' }",
                "not a valid header name",
            ),
            ("path = '/'\nsave = { run = '/a' }", "built-in variable"),
            ("path = '/'\nsave = { a = 'a' }", "neither a JSON pointer"),
            (
                "path = '/'\nrepeat = 2\nsave = { a = '/a' }",
                "needs a single request",
            ),
            (
                "sleep_ms = 5\nexpect.status = 200",
                "`expect` belongs to request steps",
            ),
            ("flag = { key = 'tier' }", "missing field `value`"),
            ("mock = { 'a' = 1 }", "not a JSON pointer"),
            (
                "sleep_ms = 1\nwithin_ms = 5",
                "`within_ms` belongs to mock steps",
            ),
            (
                "path = '/'\nexpect.sse = { dnoe = true }",
                "unknown field `dnoe`",
            ),
        ];
        for (step, want) in cases {
            let e = err(&format!("{head}{step}\n"));
            assert!(e.contains(want), "{step}: {e}");
            if !want.starts_with("unknown") && !want.starts_with("missing") {
                assert!(e.contains("step 1"), "{step}: {e}");
            }
        }
    }

    #[test]
    fn scenario_level_mistakes() {
        assert!(err("").contains("no [[scenario]]"));
        assert!(err("[[scenario]]\nname='a'\n").contains("no [[scenario.step]]"));
        assert!(
            err("[[scenario]]\nname='a'\nhosts=['nginx']\n[[scenario.step]]\nsleep_ms=1")
                .contains("unknown host \"nginx\"")
        );
        assert!(
            err("[[scenario]]\nname='a'\nvars={ip='x'}\n[[scenario.step]]\nsleep_ms=1")
                .contains("built-in")
        );
        let twice = "[[scenario]]\nname='a'\n[[scenario.step]]\nsleep_ms=1\n";
        assert!(err(&format!("{twice}{twice}")).contains("used twice"));
        assert!(err("[[scenaro]]\nname='a'").contains("unknown field `scenaro`"));
    }

    #[test]
    fn hex_with_spaces() {
        assert_eq!(parse_hex("c3 28\n a0").unwrap(), vec![0xc3, 0x28, 0xa0]);
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
    }
}
