//! A floor probe for the tidegate Envoy filter (issue #6, docs/benchmarks-envoy.md).
//!
//! A proxy-wasm HTTP filter that makes only the host calls an admitted chat request cannot do
//! without, and no policy: it reads what tidegate must read and writes what it must write, in
//! the same hooks, with the same pauses, and decides nothing. Envoy's CPU per request with it,
//! minus Envoy's without a filter, is the least any proxy-wasm filter doing what #6 asks can
//! cost.
//!
//! The plugin configuration is any text; a line `floor_steps = "a,b,..."` in it picks the
//! steps (so `envoy/gen-config` can write it like tidegate's TOML). Steps:
//! - `headers`: the request headers, one `get_map` (the path is among them);
//! - `body`: the request held until its body has ended, then read with one `get_buffer`;
//! - `peer`: the client address (`source.address`), which the IP limit keys on;
//! - `counters`: the IP, user, origin-cap and budget cells, each read with `get_shared_data`
//!   and written back with `set_shared_data` and the read's compare-and-swap token;
//! - `status`: the reply's `:status`;
//! - `settle`: the budget cell read and written again when the reply has ended;
//! - `reply`: a whole reply held until it ends, then read with one `get_buffer` (reply
//!   validation);
//! - `decision`: the nine decision headers tidegate writes on a forwarded reply
//!   (`RateLimit-Policy`, `RateLimit`, three `x-ratelimit-*`, four `x-tidegate-*`), one
//!   `set_map_value` each;
//! - `map`: `status` and `decision` with one `get_map` and one `set_map` of the whole response
//!   header map instead (an experiment: fewer host calls, more bytes through each).
//!
//! Without the line, the steps are `headers,body,peer,counters,status,settle`; `all` adds
//! `reply` and `decision`; `none` is a filter whose hooks all continue.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, Status};

/// What the probe does per request.
#[derive(Clone, Copy, Debug, Default)]
struct Steps {
    headers: bool,
    body: bool,
    peer: bool,
    counters: bool,
    status: bool,
    settle: bool,
    reply: bool,
    decision: bool,
    map: bool,
}

impl Steps {
    const DEFAULT: &'static str = "headers,body,peer,counters,status,settle";

    /// Reads the steps from the plugin configuration; `Err` names an unknown step.
    fn parse(config: &str) -> Result<Self, String> {
        let list = config
            .lines()
            .filter_map(|l| l.trim().strip_prefix("floor_steps"))
            .filter_map(|rest| rest.trim_start().strip_prefix('='))
            .map(|v| v.trim().trim_matches('"'))
            .next_back()
            .unwrap_or(Self::DEFAULT);
        let mut s = Steps::default();
        for step in list.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            match step {
                "none" => {}
                "all" => {
                    s = Self::parse(&format!("floor_steps = \"{}\"", Self::DEFAULT))?;
                    s.reply = true;
                    s.decision = true;
                }
                "headers" => s.headers = true,
                "body" => s.body = true,
                "peer" => s.peer = true,
                "counters" => s.counters = true,
                "status" => s.status = true,
                "settle" => s.settle = true,
                "reply" => s.reply = true,
                "decision" => s.decision = true,
                "map" => s.map = true,
                other => return Err(format!("unknown floor step `{other}`")),
            }
        }
        Ok(s)
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(Root { steps: Rc::new(Steps::default()) }));
}}

struct Root {
    steps: Rc<Steps>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match Steps::parse(&String::from_utf8_lossy(&raw)) {
            Ok(s) => {
                log::warn!("floor-probe: {s:?}");
                self.steps = Rc::new(s);
                true
            }
            Err(e) => {
                log::error!("floor-probe: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            steps: self.steps.clone(),
            user: String::new(),
            settled: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    steps: Rc<Steps>,
    /// The `x-user-id` header: the user cell's key.
    user: String,
    settled: bool,
}

/// Adds 1 to a counter cell with compare-and-swap, as the filter's counters do (the first
/// write of a key carries no token; the probe does not close that race, a benchmark never
/// races on it). Returns the value written.
fn bump(key: &str) -> u64 {
    for _ in 0..16 {
        let (value, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
        let n = value
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_le_bytes)
            .wrapping_add(1);
        match hostcalls::set_shared_data(key, Some(&n.to_le_bytes()), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return n,
        }
    }
    0
}

impl Probe {
    /// Reads what an admitted request needs once its body is here, and bumps its counters.
    fn admit(&mut self) {
        let s = *self.steps;
        let mut ip = String::new();
        if s.peer {
            let raw = hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
                .unwrap_or_default();
            ip = String::from_utf8_lossy(&raw).into_owned();
            if let Some(colon) = ip.rfind(':') {
                ip.truncate(colon);
            }
        }
        if s.counters {
            let _ = hostcalls::get_current_time();
            bump(&format!("tg:c:ip:{ip}"));
            bump(&format!("tg:c:user:{}", self.user));
            bump("tg:c:budget");
            bump("tg:c:origin");
        }
    }
}

/// The decision headers tidegate writes on a forwarded chat reply (values as in the benchmark).
const DECISION: [(&str, &str); 9] = [
    (
        "ratelimit-policy",
        "\"ip\";q=1000000000;w=60, \"user\";q=1000000000;w=60",
    ),
    (
        "ratelimit",
        "\"ip\";r=999999999;t=0, \"user\";r=999999999;t=0",
    ),
    ("x-ratelimit-limit-requests", "10000000"),
    ("x-ratelimit-remaining-requests", "9999999"),
    ("x-ratelimit-reset-requests", "0s"),
    ("x-tidegate-reason", "forwarded"),
    ("x-tidegate-cache", "miss"),
    ("x-tidegate-tier", "normal"),
    ("x-tidegate-model", "gpt-4o"),
];

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        if self.steps.headers {
            let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
            if let Some((_, v)) = headers.into_iter().find(|(k, _)| k == "x-user-id") {
                self.user = v;
            }
        }
        if self.steps.body && !end_of_stream {
            return Action::Pause;
        }
        self.admit();
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !self.steps.body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        if body.first() == Some(&b'{') {
            self.admit();
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let s = *self.steps;
        if s.map {
            // The response headers read with one `get_map` (`:status` among them) and written
            // back with the decision headers in one `set_map`.
            let mut h = hostcalls::get_map(MapType::HttpResponseHeaders).unwrap_or_default();
            if s.decision {
                h.retain(|(k, _)| !DECISION.iter().any(|(d, _)| d == k));
                h.extend(
                    DECISION
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                );
                let pairs: Vec<(&str, &str)> =
                    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let _ = hostcalls::set_map(MapType::HttpResponseHeaders, pairs);
            }
        } else {
            if s.status {
                let _ = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status");
            }
            if s.decision {
                for (k, v) in DECISION {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, k, Some(v));
                }
            }
        }
        if s.reply && !end_of_stream {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let s = *self.steps;
        if s.reply {
            if !end_of_stream {
                return Action::Pause;
            }
            let _ = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size);
        }
        if end_of_stream && s.settle && !self.settled {
            self.settled = true;
            bump("tg:c:budget");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.steps.settle && !self.settled {
            self.settled = true;
            bump("tg:c:budget");
        }
    }
}
