//! End-to-end test of the runner binary against a tiny canned HTTP server: passing, failing
//! and skipped scenarios are reported right, and the exit code follows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct State {
    per_user: HashMap<String, u32>,
    flags: HashMap<String, String>,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(mut s: &TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

/// Writes a chunked event stream in separate network writes, pausing between them.
fn stream_sse(mut s: &TcpStream, pieces: &[&[u8]]) {
    s.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    for p in pieces {
        s.write_all(format!("{:x}\r\n", p.len()).as_bytes())
            .unwrap();
        s.write_all(p).unwrap();
        s.write_all(b"\r\n").unwrap();
        s.flush().unwrap();
        thread::sleep(Duration::from_millis(40));
    }
    s.write_all(b"0\r\n\r\n").unwrap();
}

fn handle(stream: TcpStream, state: Arc<Mutex<State>>) {
    let Some(req) = read_request(&stream) else {
        return;
    };
    let json = [("content-type", "application/json")];
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/healthz") => respond(&stream, "200 OK", &[("content-type", "text/plain")], b"ok"),
        ("POST", "/echo") => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), v.clone().into()))
                .collect();
            let body = serde_json::json!({
                "headers": headers,
                "len": req.body.len(),
                "body": String::from_utf8_lossy(&req.body),
                "json": serde_json::from_slice::<serde_json::Value>(&req.body).ok(),
            });
            respond(&stream, "200 OK", &json, body.to_string().as_bytes());
        }
        ("POST", "/limited") => {
            let user = req.header("x-user-id").unwrap_or("").to_owned();
            let n = {
                let mut st = state.lock().unwrap();
                let n = st.per_user.entry(user).or_default();
                *n += 1;
                *n
            };
            if n <= 3 {
                let remaining = (3 - n).to_string();
                let rl = format!("\"user\";r={remaining};t=0");
                respond(
                    &stream,
                    "200 OK",
                    &[("ratelimit", &rl), ("x-tidegate-reason", "forwarded")],
                    b"{}",
                );
            } else {
                respond(
                    &stream,
                    "429 Too Many Requests",
                    &[
                        ("content-type", "application/problem+json"),
                        ("retry-after", "7"),
                        ("ratelimit", "\"user\";r=0;t=7"),
                        ("x-tidegate-reason", "user_limited"),
                    ],
                    br#"{"code":"user_limited","policy":"user","retry_after":7}"#,
                );
            }
        }
        ("GET", "/sse") => {
            // "世" (E4 B8 96) is split across two network writes.
            stream_sse(
                &stream,
                &[
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello \xe4",
                    b"\xb8\x96\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\n",
                    b"\ndata: [DONE]\n\n",
                ],
            );
        }
        ("GET", "/sse-cut") => stream_sse(
            &stream,
            &[
                b"data: {\"choices\":[{\"delta\":{\"content\":\"Half\"}}]}\n\n",
                b"event: error\ndata: {\"error\":{\"code\":\"stream_cut\"}}\n\n",
            ],
        ),
        ("PUT", p) if p.starts_with("/admin/flags/") => {
            if req.header("authorization") != Some("Bearer t0k") {
                respond(&stream, "401 Unauthorized", &[], b"");
                return;
            }
            let key = p.trim_start_matches("/admin/flags/").to_owned();
            let value = String::from_utf8(req.body).unwrap();
            state.lock().unwrap().flags.insert(key, value);
            respond(&stream, "204 No Content", &[], b"");
        }
        ("GET", "/mock/calls") => {
            let flags = state.lock().unwrap().flags.clone();
            let body = serde_json::json!({ "flags": flags, "toggle_status": { "7": 1 } });
            respond(&stream, "200 OK", &json, body.to_string().as_bytes());
        }
        _ => respond(&stream, "404 Not Found", &[], b"no route"),
    }
}

/// Starts the canned server; returns its base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(Mutex::new(State::default()));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = state.clone();
            thread::spawn(move || handle(stream, state));
        }
    });
    format!("http://{addr}")
}

fn write_scenarios(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidegate-scenarios-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(base: &str, extra: &[&str], file: &PathBuf) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate-scenarios"))
        .args([
            "--base-url",
            base,
            "--mock-url",
            base,
            "--var",
            "admin_token=t0k",
        ])
        .args(extra)
        .arg(file)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    // Shown with `--nocapture`, to eyeball the report format.
    eprintln!("{stdout}");
    (out, stdout)
}

const PASSING: &str = r##"
[[scenario]]
name = "health answers"
[[scenario.step]]
path = "/healthz"
expect = { status = 200, body = "ok", headers_contain = { content-type = "text/plain" } }

[[scenario]]
name = "substitution and bodies"
headers = { x-user-id = "u-{run}", x-forwarded-for = "{ip}" }
vars = { greeting = "hi from {host}" }
[[scenario.step]]
path = "/echo"
json = { user = "u-{run}", messages = [{ role = "user", content = "{greeting} 世界" }] }
save = { who = "/json/user" }
expect.json = { "/json/messages/0/content" = "hi from native 世界", "/headers/x-user-id" = "u-{run}", "/headers/content-type" = "application/json" }
expect.headers_absent = ["x-tidegate-cache"]
[[scenario.step]]
path = "/echo"
body_repeat = { prefix = '{"q":"', text = "ab", times = 5000, suffix = '"}' }
expect.json = { "/len" = 10008, "/headers/x-user-id" = "{who}" }
[[scenario.step]]
path = "/echo"
body_hex = "ff fe"
expect.json = { "/len" = 2, "/body" = "\ufffd\ufffd" }

[[scenario]]
name = "limit trips under concurrency"
headers = { x-user-id = "u-{run}" }
[[scenario.step]]
path = "/limited"
json = { n = "{i}" }
parallel = 10
expect.count_status = { 200 = 3, 429 = 7 }
[[scenario.step]]
path = "/limited"
body = "{}"
expect = { status = 429, headers_match = { retry-after = "#", ratelimit = '"user";r=0;t=#' }, json = { "/code" = "user_limited", "/retry_after" = 7 } }

[[scenario]]
name = "stream with a split character"
[[scenario.step]]
path = "/sse"
expect.sse = { text = "Hello 世!", done = true, error = false, min_reads = 3, first_read_within_ms = 2000 }

[[scenario]]
name = "cut stream ends with an error event"
[[scenario.step]]
path = "/sse-cut"
expect.sse = { text = "Half", done = false, error_code = "stream_cut", min_reads = 2 }

[[scenario]]
name = "flag then mock record"
[[scenario.step]]
flag = { key = "tier", value = "economy {run}" }
[[scenario.step]]
mock = { "/flags/tier" = "economy {run}", "/toggle_status/7" = 1, "/toggle_status/8" = 0 }

[[scenario]]
name = "envoy only"
hosts = ["envoy"]
[[scenario.step]]
path = "/healthz"
expect.status = 599
"##;

const FAILING: &str = r#"
[[scenario]]
name = "health passes"
[[scenario.step]]
path = "/healthz"
expect.status = 200

[[scenario]]
name = "wrong expectation fails"
[[scenario.step]]
path = "/healthz"
expect.status = 200
[[scenario.step]]
name = "limited refusal"
path = "/limited"
headers = { x-user-id = "u-{run}" }
body = "{}"
repeat = 4
expect = { status = 200, headers = { x-tidegate-reason = "forwarded" } }
"#;

#[test]
fn passing_and_skipped_scenarios_exit_zero() {
    let base = serve();
    let file = write_scenarios("passing.toml", PASSING);
    let (out, stdout) = run(&base, &[], &file);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"6 passed, 0 failed, 1 skipped"),
        "{stdout}"
    );
    for name in [
        "health answers",
        "substitution and bodies",
        "limit trips under concurrency",
        "stream with a split character",
        "cut stream ends with an error event",
        "flag then mock record",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ok   ") && l.contains(name)),
            "{name}: {stdout}"
        );
    }
    assert!(lines
        .iter()
        .any(|l| l.starts_with("skip ") && l.contains("envoy only (only on envoy)")));
}

#[test]
fn a_failing_scenario_is_reported_with_step_expectation_and_actual() {
    let base = serve();
    let file = write_scenarios("failing.toml", FAILING);
    let (out, stdout) = run(&base, &["--jobs", "1"], &file);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("1 passed, 1 failed"),
        "{stdout}"
    );
    let fail = stdout.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        fail.contains("wrong expectation fails: step 2 `limited refusal` (copy 4 of 4)"),
        "{fail}"
    );
    assert!(fail.contains("status: expected 200, got 429"), "{fail}");
    assert!(
        fail.contains("header x-tidegate-reason: expected \"forwarded\", got \"user_limited\""),
        "{fail}"
    );
    let got = stdout
        .lines()
        .skip_while(|l| !l.starts_with("FAIL"))
        .nth(1)
        .unwrap();
    assert!(got.trim_start().starts_with("got status 429"), "{got}");
    assert!(
        got.contains("retry-after: 7") && got.contains("user_limited"),
        "{got}"
    );
}

#[test]
fn filter_and_load_errors() {
    let base = serve();
    let file = write_scenarios("filter.toml", FAILING);
    let (out, stdout) = run(&base, &["--filter", "health"], &file);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("1 passed, 0 failed"));

    let bad = write_scenarios(
        "bad.toml",
        "[[scenario]]\nname='x'\n[[scenario.step]]\npath='/'\nexpect.stauts=1\n",
    );
    let (out, _) = run(&base, &[], &bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("stauts"), "{err}");
}

#[test]
fn unreachable_gateway_fails_cleanly() {
    // Bind and drop to get a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let file = write_scenarios(
        "unreachable.toml",
        "[[scenario]]\nname='h'\n[[scenario.step]]\npath='/healthz'\nexpect.status=200\n",
    );
    let (out, stdout) = run(&base, &[], &file);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("request failed"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("0 passed, 1 failed"));
}
