//! Expectations on one HTTP response, and the pure check that compares them with what was
//! observed.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::sse::SseSummary;
use crate::vars::{VarError, Vars};

/// One status or a list of accepted statuses.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatusSet {
    /// Exactly this status.
    One(u16),
    /// Any of these.
    Any(Vec<u16>),
}

impl StatusSet {
    /// Whether `status` is accepted.
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            StatusSet::One(s) => *s == status,
            StatusSet::Any(list) => list.contains(&status),
        }
    }
}

/// A string or a list of strings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StrList {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Default for StrList {
    fn default() -> Self {
        StrList::Many(Vec::new())
    }
}

impl StrList {
    /// The strings.
    pub fn items(&self) -> &[String] {
        match self {
            StrList::One(s) => std::slice::from_ref(s),
            StrList::Many(v) => v,
        }
    }
}

/// Expectations on a streamed (SSE) reply.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SseExpect {
    /// The assembled text, exactly.
    pub text: Option<String>,
    /// Substrings the assembled text must contain.
    #[serde(default)]
    pub text_contains: StrList,
    /// Substrings the assembled text must not contain.
    #[serde(default)]
    pub text_not_contains: StrList,
    /// Whether the stream ended with `[DONE]` / `message_end`.
    pub done: Option<bool>,
    /// Whether an error event came.
    pub error: Option<bool>,
    /// The error event's code (implies `error = true`).
    pub error_code: Option<String>,
    /// Whether usage data came.
    pub usage: Option<bool>,
    /// At least this many network reads of the body (proves the reply was not buffered).
    pub min_reads: Option<usize>,
    /// At least this many events.
    pub min_events: Option<usize>,
    /// The first body bytes arrived within this many milliseconds of sending the request.
    pub first_read_within_ms: Option<u64>,
}

/// Expectations on one response (`expect` of a request step).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status, or a list of accepted ones.
    pub status: Option<StatusSet>,
    /// Over all copies of a `repeat` / `parallel` step: exact number of each status
    /// (keys are statuses). Checked by the runner, not per response.
    pub count_status: Option<BTreeMap<String, usize>>,
    /// Header values, exactly (names case-insensitive; repeated headers joined with `, `).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header values must contain these substrings.
    #[serde(default)]
    pub headers_contain: BTreeMap<String, String>,
    /// Headers that must not be present.
    #[serde(default)]
    pub headers_absent: Vec<String>,
    /// Header values must match these patterns (see [`glob_match`]).
    #[serde(default)]
    pub headers_match: BTreeMap<String, String>,
    /// JSON pointer -> expected value in the JSON body.
    #[serde(default)]
    pub json: BTreeMap<String, toml::Value>,
    /// JSON pointers that must not resolve.
    #[serde(default)]
    pub json_absent: Vec<String>,
    /// The body, exactly.
    pub body: Option<String>,
    /// Substrings the body must contain.
    #[serde(default)]
    pub body_contains: StrList,
    /// Substrings the body must not contain.
    #[serde(default)]
    pub body_not_contains: StrList,
    /// Expectations on a streamed reply.
    pub sse: Option<SseExpect>,
    /// The whole response (head and body) took at most this many milliseconds.
    pub max_ms: Option<u64>,
}

/// What came back for one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// HTTP status.
    pub status: u16,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// Non-empty network reads of the body.
    pub reads: usize,
    /// Milliseconds from sending the request to the first body bytes.
    pub first_read_ms: Option<u64>,
    /// Milliseconds from sending the request to the end of the body.
    pub elapsed_ms: u64,
    /// The SSE reading, when the reply was `text/event-stream`.
    pub sse: Option<SseSummary>,
}

impl Observed {
    /// The value of header `name` (any case); repeated headers joined with `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A one-line account for failure reports: status, headers, body excerpt.
    pub fn excerpt(&self, max_body: usize) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| n != "date")
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        let mut out = format!("status {}; headers: {}", self.status, headers.join("; "));
        out.push_str(&format!(
            "; body: {}",
            excerpt_text(&self.body_text(), max_body)
        ));
        if let Some(sse) = &self.sse {
            out.push_str(&format!(
                "; sse: reads={} events={} done={} error={:?} text={}",
                self.reads,
                sse.events,
                sse.done,
                sse.error_code
                    .as_deref()
                    .filter(|_| sse.error)
                    .or(sse.error.then_some("")),
                excerpt_text(&sse.text, 120)
            ));
        }
        out
    }
}

/// `text` on one line (control characters escaped), cut to about `max` characters.
pub fn excerpt_text(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n >= max {
            out.push_str(&format!("… ({} bytes)", text.len()));
            break;
        }
        out.extend(c.escape_debug());
    }
    format!("\"{out}\"")
}

/// A TOML value as JSON (datetimes become strings).
pub fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
pub fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Matches `text` against a simple pattern: `*` any run of characters (also none), `?` one
/// character, `#` one or more ASCII digits, `\` makes the next character literal; everything
/// else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p {
        [] => t.is_empty(),
        ['*', rest @ ..] => (0..=t.len()).any(|skip| glob_at(rest, t.get(skip..).unwrap_or(&[]))),
        ['#', rest @ ..] => {
            let digits = t.iter().take_while(|c| c.is_ascii_digit()).count();
            (1..=digits).any(|n| glob_at(rest, t.get(n..).unwrap_or(&[])))
        }
        ['?', rest @ ..] => match t {
            [_, t_rest @ ..] => glob_at(rest, t_rest),
            [] => false,
        },
        ['\\', lit, rest @ ..] | [lit, rest @ ..] => match t {
            [c, t_rest @ ..] if c == lit => glob_at(rest, t_rest),
            _ => false,
        },
    }
}

/// Checks `obs` against every per-response expectation of `expect` (all but `count_status`),
/// with placeholders in expected values replaced from `vars`. Returns every failed
/// expectation, described with the actual value; an empty list means pass.
pub fn check(expect: &Expect, obs: &Observed, vars: &Vars) -> Result<Vec<String>, VarError> {
    let mut fails = Vec::new();
    if let Some(want) = &expect.status {
        if !want.accepts(obs.status) {
            let want = match want {
                StatusSet::One(s) => s.to_string(),
                StatusSet::Any(l) => format!("one of {l:?}"),
            };
            fails.push(format!("status: expected {want}, got {}", obs.status));
        }
    }
    for (name, want) in &expect.headers {
        let want = vars.substitute(want)?;
        match obs.header(name) {
            Some(got) if got == want => {}
            Some(got) => fails.push(format!("header {name}: expected {want:?}, got {got:?}")),
            None => fails.push(format!("header {name}: expected {want:?}, missing")),
        }
    }
    for (name, want) in &expect.headers_contain {
        let want = vars.substitute(want)?;
        match obs.header(name) {
            Some(got) if got.contains(&want) => {}
            Some(got) => fails.push(format!(
                "header {name}: expected to contain {want:?}, got {got:?}"
            )),
            None => fails.push(format!(
                "header {name}: expected to contain {want:?}, missing"
            )),
        }
    }
    for name in &expect.headers_absent {
        if let Some(got) = obs.header(name) {
            fails.push(format!("header {name}: expected absent, got {got:?}"));
        }
    }
    for (name, pattern) in &expect.headers_match {
        let pattern = vars.substitute(pattern)?;
        match obs.header(name) {
            Some(got) if glob_match(&pattern, &got) => {}
            Some(got) => fails.push(format!(
                "header {name}: expected to match {pattern:?}, got {got:?}"
            )),
            None => fails.push(format!(
                "header {name}: expected to match {pattern:?}, missing"
            )),
        }
    }
    if !expect.json.is_empty() || !expect.json_absent.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&obs.body) {
            Err(e) => fails.push(format!("json: body is not JSON ({e})")),
            Ok(doc) => {
                for (pointer, want) in &expect.json {
                    let pointer = vars.substitute(pointer)?;
                    let want = vars.substitute_json(&toml_to_json(want))?;
                    match doc.pointer(&pointer) {
                        Some(got) if json_eq(&want, got) => {}
                        Some(got) => {
                            fails.push(format!("json {pointer}: expected {want}, got {got}"))
                        }
                        None => fails.push(format!("json {pointer}: expected {want}, missing")),
                    }
                }
                for pointer in &expect.json_absent {
                    let pointer = vars.substitute(pointer)?;
                    if let Some(got) = doc.pointer(&pointer) {
                        fails.push(format!("json {pointer}: expected absent, got {got}"));
                    }
                }
            }
        }
    }
    let body = obs.body_text();
    if let Some(want) = &expect.body {
        let want = vars.substitute(want)?;
        if body != want {
            fails.push(format!(
                "body: expected {} ({} bytes), got {} bytes",
                excerpt_text(&want, 80),
                want.len(),
                obs.body.len()
            ));
        }
    }
    for want in expect.body_contains.items() {
        let want = vars.substitute(want)?;
        if !body.contains(&want) {
            fails.push(format!("body: expected to contain {want:?}"));
        }
    }
    for bad in expect.body_not_contains.items() {
        let bad = vars.substitute(bad)?;
        if body.contains(&bad) {
            fails.push(format!("body: expected not to contain {bad:?}"));
        }
    }
    if let Some(sse) = &expect.sse {
        check_sse(sse, obs, vars, &mut fails)?;
    }
    if let Some(max) = expect.max_ms {
        if obs.elapsed_ms > max {
            fails.push(format!(
                "max_ms: expected at most {max} ms, took {} ms",
                obs.elapsed_ms
            ));
        }
    }
    Ok(fails)
}

fn check_sse(
    want: &SseExpect,
    obs: &Observed,
    vars: &Vars,
    fails: &mut Vec<String>,
) -> Result<(), VarError> {
    let Some(got) = &obs.sse else {
        let ct = obs.header("content-type").unwrap_or_default();
        fails.push(format!(
            "sse: reply is not an event stream (content-type {ct:?})"
        ));
        return Ok(());
    };
    if let Some(text) = &want.text {
        let text = vars.substitute(text)?;
        if got.text != text {
            fails.push(format!("sse text: expected {text:?}, got {:?}", got.text));
        }
    }
    for part in want.text_contains.items() {
        let part = vars.substitute(part)?;
        if !got.text.contains(&part) {
            fails.push(format!(
                "sse text: expected to contain {part:?}, got {:?}",
                got.text
            ));
        }
    }
    for part in want.text_not_contains.items() {
        let part = vars.substitute(part)?;
        if got.text.contains(&part) {
            fails.push(format!(
                "sse text: expected not to contain {part:?}, got {:?}",
                got.text
            ));
        }
    }
    if got.invalid_utf8 {
        fails.push("sse: a line was not valid UTF-8 (a character was split or garbled)".into());
    }
    if let Some(done) = want.done {
        if got.done != done {
            fails.push(format!("sse done: expected {done}, got {}", got.done));
        }
    }
    let want_error = want.error.or(want.error_code.as_ref().map(|_| true));
    if let Some(error) = want_error {
        if got.error != error {
            fails.push(format!(
                "sse error: expected {error}, got {} (code {:?})",
                got.error, got.error_code
            ));
        }
    }
    if let Some(code) = &want.error_code {
        let code = vars.substitute(code)?;
        if got.error_code.as_deref() != Some(code.as_str()) {
            fails.push(format!(
                "sse error_code: expected {code:?}, got {:?}",
                got.error_code
            ));
        }
    }
    if let Some(usage) = want.usage {
        if got.usage != usage {
            fails.push(format!("sse usage: expected {usage}, got {}", got.usage));
        }
    }
    if let Some(min) = want.min_reads {
        if obs.reads < min {
            fails.push(format!(
                "sse min_reads: expected at least {min}, got {}",
                obs.reads
            ));
        }
    }
    if let Some(min) = want.min_events {
        if got.events < min {
            fails.push(format!(
                "sse min_events: expected at least {min}, got {}",
                got.events
            ));
        }
    }
    if let Some(max) = want.first_read_within_ms {
        match obs.first_read_ms {
            Some(ms) if ms <= max => {}
            Some(ms) => fails.push(format!(
                "sse first read: expected within {max} ms, took {ms} ms"
            )),
            None => fails.push(format!(
                "sse first read: expected within {max} ms, body was empty"
            )),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::sse::SseAssembler;

    fn expect(toml_text: &str) -> Expect {
        toml::from_str(toml_text).unwrap()
    }

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.set("run", "r1");
        v
    }

    fn problem_429() -> Observed {
        Observed {
            status: 429,
            headers: vec![
                ("content-type".into(), "application/problem+json".into()),
                ("retry-after".into(), "12".into()),
                ("ratelimit-policy".into(), "\"user\";q=10;w=60".into()),
                ("ratelimit".into(), "\"user\";r=0;t=12".into()),
                ("x-tidegate-reason".into(), "user_limited".into()),
                ("vary".into(), "a".into()),
                ("Vary".into(), "b".into()),
            ],
            body: br#"{"code":"user_limited","policy":"user","retry_after":12,"user":"u-r1"}"#
                .to_vec(),
            reads: 1,
            first_read_ms: Some(3),
            elapsed_ms: 4,
            sse: None,
        }
    }

    fn fails(e: &str, obs: &Observed) -> Vec<String> {
        check(&expect(e), obs, &vars()).unwrap()
    }

    #[test]
    fn a_matching_refusal_passes() {
        let e = r##"
            status = 429
            headers = { x-tidegate-reason = "user_limited", Content-Type = "application/problem+json" }
            headers_contain = { ratelimit = "r=0" }
            headers_absent = ["x-tidegate-cache"]
            headers_match = { retry-after = "#", ratelimit = '"user";r=#;t=#', ratelimit-policy = '"user";q=10;w=*' }
            json = { "/code" = "user_limited", "/retry_after" = 12.0, "/user" = "u-{run}" }
            json_absent = ["/detail/x"]
            body_contains = ["user_limited"]
            body_not_contains = "forwarded"
            max_ms = 1000
        "##;
        assert_eq!(fails(e, &problem_429()), Vec::<String>::new());
    }

    #[test]
    fn each_expectation_can_fail() {
        let obs = problem_429();
        let cases = [
            ("status = 200", "status: expected 200, got 429"),
            (
                "status = [200, 201]",
                "status: expected one of [200, 201], got 429",
            ),
            (
                "headers = { x-tidegate-reason = \"forwarded\" }",
                "header x-tidegate-reason",
            ),
            (
                "headers = { x-nope = \"1\" }",
                "header x-nope: expected \"1\", missing",
            ),
            (
                "headers_contain = { ratelimit = \"r=1\" }",
                "expected to contain \"r=1\"",
            ),
            (
                "headers_absent = [\"Retry-After\"]",
                "header Retry-After: expected absent",
            ),
            (
                "headers_match = { retry-after = \"#s\" }",
                "expected to match \"#s\"",
            ),
            (
                "json = { \"/code\" = \"ip_limited\" }",
                "json /code: expected \"ip_limited\"",
            ),
            (
                "json = { \"/nope\" = 1 }",
                "json /nope: expected 1, missing",
            ),
            (
                "json_absent = [\"/policy\"]",
                "json /policy: expected absent",
            ),
            ("body = \"x\"", "body: expected \"x\""),
            (
                "body_contains = [\"forwarded\"]",
                "expected to contain \"forwarded\"",
            ),
            (
                "body_not_contains = [\"u-{run}\"]",
                "expected not to contain \"u-r1\"",
            ),
            ("max_ms = 2", "max_ms: expected at most 2 ms, took 4 ms"),
            ("sse = { done = true }", "sse: reply is not an event stream"),
        ];
        for (e, want) in cases {
            let got = fails(e, &obs);
            assert_eq!(got.len(), 1, "{e}: {got:?}");
            assert!(got[0].contains(want), "{e}: {got:?} lacks {want}");
        }
    }

    #[test]
    fn repeated_headers_are_joined() {
        assert_eq!(problem_429().header("VARY").as_deref(), Some("a, b"));
        assert!(fails("headers = { vary = \"a, b\" }", &problem_429()).is_empty());
    }

    #[test]
    fn json_on_a_non_json_body_fails_cleanly() {
        let obs = Observed {
            status: 200,
            body: b"<html>".to_vec(),
            ..Default::default()
        };
        let got = fails("json = { \"/a\" = 1 }", &obs);
        assert!(got[0].starts_with("json: body is not JSON"), "{got:?}");
    }

    #[test]
    fn undefined_variable_in_an_expectation_is_an_error() {
        let err = check(
            &expect("body_contains = [\"{nope}\"]"),
            &problem_429(),
            &vars(),
        );
        assert_eq!(err.unwrap_err().name, "nope");
    }

    fn streamed(body: &str, reads: usize) -> Observed {
        let mut a = SseAssembler::new();
        a.feed(body.as_bytes());
        Observed {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: body.as_bytes().to_vec(),
            reads,
            first_read_ms: Some(40),
            elapsed_ms: 90,
            sse: Some(a.finish()),
        }
    }

    #[test]
    fn sse_expectations() {
        let cut = streamed(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Use code X\"}}]}\n\nevent: error\ndata: {\"error\":{\"code\":\"stream_cut\"}}\n\n",
            3,
        );
        assert!(fails(
            r#"sse = { text = "Use code X", text_contains = ["code"], text_not_contains = "SAVE", done = false, error_code = "stream_cut", min_reads = 2, min_events = 2, first_read_within_ms = 50, usage = false }"#,
            &cut
        )
        .is_empty());
        let got = fails(
            r#"sse = { done = true, min_reads = 4, first_read_within_ms = 10 }"#,
            &cut,
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("sse done: expected true, got false"));
        assert!(got[1].contains("expected at least 4, got 3"));
        assert!(got[2].contains("expected within 10 ms, took 40 ms"));
        // error_code alone implies an error is expected.
        let clean = streamed(
            "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: [DONE]\n\n",
            1,
        );
        let got = fails(r#"sse = { error_code = "stream_cut" }"#, &clean);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(fails(
            r#"sse = { error = false, done = true, text = "ok" }"#,
            &clean
        )
        .is_empty());
    }

    #[test]
    fn garbled_stream_text_always_fails_an_sse_check() {
        let mut obs = streamed(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            1,
        );
        if let Some(s) = obs.sse.as_mut() {
            s.invalid_utf8 = true;
        }
        let got = fails("sse = { text = \"a\" }", &obs);
        assert!(got[0].contains("not valid UTF-8"), "{got:?}");
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("#", "12"));
        assert!(!glob_match("#", ""));
        assert!(!glob_match("#", "1.5"));
        assert!(!glob_match("#", "Wed, 21 Oct 2015 07:28:00 GMT"));
        assert!(glob_match("\"ip\";r=#;t=#", "\"ip\";r=0;t=12"));
        assert!(!glob_match("\"ip\";r=#;t=#", "\"ip\";r=;t=12"));
        assert!(glob_match("*;w=60", "\"user\";q=10;w=60"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("?é?", "xéy"));
        assert!(glob_match("\\*\\#\\?", "*#?"));
        assert!(!glob_match("\\*", "x"));
        assert!(glob_match("#1", "11"));
        assert!(glob_match("", ""));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn json_numbers_compare_by_value() {
        use serde_json::json;
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!({"a": [1, "x"]}), &json!({"a": [1.0, "x"]})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_eq(&json!("1"), &json!(1)));
    }

    #[test]
    fn excerpt_is_one_line_and_bounded() {
        let obs = Observed {
            status: 500,
            body: "a\nb\"c".repeat(100).into_bytes(),
            ..Default::default()
        };
        let e = obs.excerpt(10);
        assert!(!e.contains('\n'));
        assert!(e.contains("a\\nb\\\"ca\\nb\\\"c"), "{e}");
        assert!(e.contains("(500 bytes)"), "{e}");
    }
}
