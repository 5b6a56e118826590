//! Cloudflare Turnstile's siteverify: `POST /turnstile/v0/siteverify`.
//!
//! Accepts form-urlencoded, multipart or JSON bodies with `secret`, `response`, `remoteip`
//! and `idempotency_key`, and answers HTTP 200 with `success`, `challenge_ts`, `hostname`,
//! `action`, `cdata` and `error-codes`, like the real service.
//!
//! Secrets: the three public test secrets behave as documented (always pass with hostname
//! `example.com`; always fail; always `timeout-or-duplicate`). With `--turnstile-secret`:
//!
//! | Token | Result |
//! |---|---|
//! | `pass[-ACTION[.CDATA[...]]]` | success once, `action` = ACTION or `chat`, `cdata` = CDATA or empty; a second use is `timeout-or-duplicate` unless it carries the first use's `idempotency_key`, which replays the first result |
//! | `fail...` | `invalid-input-response` |
//! | `error...` | `internal-error` (retry) |
//! | `expired...` | `timeout-or-duplicate` |
//! | longer than 2048 characters, or anything else | `invalid-input-response` |
//! | empty | `missing-input-response` |

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::state::{MockState, TokenUse};
use super::text::now_rfc3339;

/// Public test secret that always passes.
pub const TEST_SECRET_PASS: &str = "1x0000000000000000000000000000000AA";
/// Public test secret that always fails.
pub const TEST_SECRET_FAIL: &str = "2x0000000000000000000000000000000AA";
/// Public test secret whose tokens are always already spent.
pub const TEST_SECRET_SPENT: &str = "3x0000000000000000000000000000000AA";
/// Longest token Turnstile issues.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Tokens remembered for the single-use check; a load test cannot grow the map further.
const MAX_REMEMBERED_TOKENS: usize = 100_000;

/// The fields of a siteverify request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VerifyForm {
    /// The widget's secret key.
    pub secret: Option<String>,
    /// The token from the widget.
    pub response: Option<String>,
    /// The visitor's IP.
    pub remoteip: Option<String>,
    /// Key that makes a retry of the same verification replay its result.
    pub idempotency_key: Option<String>,
}

/// Handles `POST /turnstile/v0/siteverify`.
pub async fn siteverify(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.record().siteverify_total += 1;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let form = match parse(&content_type, &body) {
        Some(form) => form,
        None => return failure("bad-request"),
    };
    let reply = verify(&state, form);
    (StatusCode::OK, Json(reply)).into_response()
}

fn failure(code: &str) -> Response {
    (StatusCode::OK, Json(failure_json(code))).into_response()
}

fn failure_json(code: &str) -> Value {
    json!({"success": false, "error-codes": [code], "messages": []})
}

fn success_json(hostname: &str, action: &str, cdata: &str) -> Value {
    json!({
        "success": true,
        "challenge_ts": now_rfc3339(),
        "hostname": hostname,
        "error-codes": [],
        "action": action,
        "cdata": cdata,
        "metadata": {"interactive": false},
    })
}

/// Decides a verification, updating the single-use record.
fn verify(state: &MockState, form: VerifyForm) -> Value {
    let secret = form.secret.unwrap_or_default();
    if secret.is_empty() {
        return failure_json("missing-input-secret");
    }
    let real = state
        .args
        .turnstile_secret
        .as_deref()
        .filter(|s| !s.is_empty());
    let is_test =
        [TEST_SECRET_PASS, TEST_SECRET_FAIL, TEST_SECRET_SPENT].contains(&secret.as_str());
    if !is_test && Some(secret.as_str()) != real {
        return failure_json("invalid-input-secret");
    }
    let token = form.response.unwrap_or_default();
    if token.is_empty() {
        return failure_json("missing-input-response");
    }
    match secret.as_str() {
        TEST_SECRET_PASS => return success_json("example.com", "", ""),
        TEST_SECRET_FAIL => return failure_json("invalid-input-response"),
        TEST_SECRET_SPENT => return failure_json("timeout-or-duplicate"),
        _ => {}
    }
    if token.chars().count() > MAX_TOKEN_LEN {
        return failure_json("invalid-input-response");
    }
    // TODO(#2): tokens never expire by age (real ones live 300 s); use an `expired` token.
    let key = form.idempotency_key.filter(|k| !k.is_empty());
    let mut rec = state.record();
    if let Some(first) = rec.tokens.get(&token) {
        return match (&first.idempotency_key, &key) {
            (Some(a), Some(b)) if a == b => first.reply.clone(),
            _ => failure_json("timeout-or-duplicate"),
        };
    }
    if let Some(rest) = token.strip_prefix("pass") {
        let (action, cdata) = action_and_cdata(rest);
        let reply = success_json(&state.args.turnstile_hostname, &action, &cdata);
        if rec.tokens.len() >= MAX_REMEMBERED_TOKENS {
            rec.tokens.clear();
        }
        rec.tokens.insert(
            token,
            TokenUse {
                idempotency_key: key,
                reply: reply.clone(),
            },
        );
        return reply;
    }
    if token.starts_with("error") {
        return failure_json("internal-error");
    }
    if token.starts_with("expired") {
        return failure_json("timeout-or-duplicate");
    }
    failure_json("invalid-input-response")
}

/// `-ACTION.CDATA.rest` after `pass`: the action defaults to `chat`, the cdata to empty.
fn action_and_cdata(rest: &str) -> (String, String) {
    let Some(rest) = rest.strip_prefix('-') else {
        return ("chat".to_owned(), String::new());
    };
    let mut parts = rest.split('.');
    let action = parts.next().filter(|a| !a.is_empty()).unwrap_or("chat");
    let cdata = parts.next().unwrap_or("");
    (action.to_owned(), cdata.to_owned())
}

/// Reads the fields from a JSON, multipart or form-urlencoded body. `None` is `bad-request`.
pub fn parse(content_type: &str, body: &[u8]) -> Option<VerifyForm> {
    let mut form = VerifyForm::default();
    if content_type.starts_with("application/json") {
        let value: Value = serde_json::from_slice(body).ok()?;
        let obj = value.as_object()?;
        for (name, value) in obj {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                _ => return None,
            };
            set(&mut form, name, text);
        }
        return Some(form);
    }
    if content_type.starts_with("multipart/form-data") {
        for (name, value) in multipart_fields(content_type, body)? {
            set(&mut form, &name, value);
        }
        return Some(form);
    }
    let text = std::str::from_utf8(body).ok()?;
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        set(&mut form, &percent_decode(name)?, percent_decode(value)?);
    }
    Some(form)
}

fn set(form: &mut VerifyForm, name: &str, value: String) {
    match name {
        "secret" => form.secret = Some(value),
        "response" => form.response = Some(value),
        "remoteip" => form.remoteip = Some(value),
        "idempotency_key" => form.idempotency_key = Some(value),
        _ => {}
    }
}

/// Decodes one `application/x-www-form-urlencoded` component.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The text fields of a `multipart/form-data` body.
fn multipart_fields(content_type: &str, body: &[u8]) -> Option<Vec<(String, String)>> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()?
        .trim_matches('"');
    let text = std::str::from_utf8(body).ok()?;
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let (head, value) = part.split_once("\r\n\r\n")?;
        let name = head
            .split("\r\n")
            .find(|h| h.to_ascii_lowercase().starts_with("content-disposition"))?
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("name="))
            .next()?
            .trim_matches('"')
            .to_owned();
        let value = value.strip_suffix("\r\n").unwrap_or(value).to_owned();
        fields.push((name, value));
    }
    Some(fields)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unit {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        let form = parse(
            "application/x-www-form-urlencoded",
            b"secret=s%20x&response=pass-chat.c1&idempotency_key=k+1&other=1",
        )
        .unwrap();
        assert_eq!(form.secret.as_deref(), Some("s x"));
        assert_eq!(form.response.as_deref(), Some("pass-chat.c1"));
        assert_eq!(form.idempotency_key.as_deref(), Some("k 1"));
        assert!(parse("application/x-www-form-urlencoded", b"secret=%zz").is_none());
        assert!(parse("application/x-www-form-urlencoded", b"secret=%4").is_none());
    }

    #[test]
    fn multipart_and_json_bodies_decode() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"secret\"\r\n\r\nabc\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"response\"\r\n\r\npass\r\n--XyZ--\r\n";
        let form = parse("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
        assert_eq!(form.secret.as_deref(), Some("abc"));
        assert_eq!(form.response.as_deref(), Some("pass"));
        let form = parse("application/json", br#"{"secret":"a","response":"b"}"#).unwrap();
        assert_eq!(form.response.as_deref(), Some("b"));
        assert!(parse("application/json", b"{nope").is_none());
        assert!(parse("application/json", br#"{"secret":1}"#).is_none());
    }

    #[test]
    fn action_and_cdata_from_token() {
        assert_eq!(action_and_cdata(""), ("chat".into(), String::new()));
        assert_eq!(action_and_cdata("-login"), ("login".into(), String::new()));
        assert_eq!(
            action_and_cdata("-chat.sess42.x"),
            ("chat".into(), "sess42".into())
        );
    }
}
