//! Reading chat requests in the two origin shapes the gateway fronts.

use serde_json::Value;

use crate::decision::Problem;

/// Request headers a host never copies from the client to the origin: hop-by-hop headers,
/// and the framing headers the host sets itself.
pub const HOP_BY_HOP_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
];

/// The API shape of a request and of the origin's reply.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// OpenAI chat completions: `POST /v1/chat/completions`.
    OpenAi,
    /// Dify chat app: `POST /v1/chat-messages`.
    Dify,
}

impl Shape {
    /// The shape served at `path`, if any.
    pub fn from_path(path: &str) -> Option<Shape> {
        match path {
            "/v1/chat/completions" => Some(Shape::OpenAi),
            "/v1/chat-messages" => Some(Shape::Dify),
            _ => None,
        }
    }

    /// The request path of this shape.
    pub fn path(self) -> &'static str {
        match self {
            Shape::OpenAi => "/v1/chat/completions",
            Shape::Dify => "/v1/chat-messages",
        }
    }

    /// Stable name (`openai`, `dify`).
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::OpenAi => "openai",
            Shape::Dify => "dify",
        }
    }
}

/// What the policies need to know about a chat request.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The API shape.
    pub shape: Shape,
    /// The text of the last user message (what the FAQ matches against).
    pub question: String,
    /// Every prompt character the origin would read, for the token estimate.
    pub prompt_chars: usize,
    /// The model asked for (OpenAI), if any.
    pub model: Option<String>,
    /// Whether the client asked for a streamed reply.
    pub stream: bool,
    /// The conversation id, when the body carries one (Dify `conversation_id`).
    pub conversation_id: Option<String>,
    /// The body's own user field (Dify `user`, OpenAI `user`).
    pub body_user: Option<String>,
    /// The body as parsed, to be forwarded (possibly with the model rewritten).
    pub body: Value,
    /// The body as received: [`ChatRequest::edited_body`] splices its edits into these bytes.
    pub raw: Vec<u8>,
}

/// Top-level fields the gateway sets in a body it forwards ([`ChatRequest::edited_body`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyEdits<'a> {
    /// Set `model` to this.
    pub model: Option<&'a str>,
    /// Set `user` to this.
    pub user: Option<&'a str>,
    /// Set `stream_options.include_usage` to `true` (added with `stream_options` when absent;
    /// a `stream_options` that is not an object is left alone).
    pub include_usage: bool,
    /// Cap on the reply's tokens, and the field to add it as when the request names none:
    /// `max_tokens` and `max_completion_tokens` above the cap are lowered to it.
    pub max_output: Option<(u64, &'a str)>,
}

/// The fields by which an OpenAI request bounds its reply's tokens.
pub const OUTPUT_TOKEN_FIELDS: [&str; 2] = ["max_tokens", "max_completion_tokens"];

impl ChatRequest {
    /// The body to forward with `edits` applied. The edits are spliced into the client's
    /// bytes, which otherwise go out exactly as sent (no parse tree is cloned or serialised,
    /// and a body that needs no change comes back byte for byte). When a splice could not say
    /// the same as the parsed tree (a key written twice or with escapes, or an edit inside
    /// `stream_options` other than adding `include_usage` to it), the tree is edited and
    /// serialised instead.
    pub fn edited_body(&self, edits: &BodyEdits<'_>) -> Vec<u8> {
        splice(&self.raw, edits).unwrap_or_else(|| self.edited_tree(edits))
    }

    fn edited_tree(&self, edits: &BodyEdits<'_>) -> Vec<u8> {
        let mut body = self.body.clone();
        if let Some(obj) = body.as_object_mut() {
            if let Some(u) = edits.user {
                obj.insert("user".into(), u.into());
            }
            if let Some(m) = edits.model {
                obj.insert("model".into(), m.into());
            }
            if edits.include_usage {
                let opts = obj
                    .entry("stream_options")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(o) = opts.as_object_mut() {
                    o.insert("include_usage".into(), true.into());
                }
            }
            if let Some((cap, field)) = edits.max_output {
                let mut named = false;
                for f in OUTPUT_TOKEN_FIELDS {
                    if let Some(v) = obj.get_mut(f).filter(|v| !v.is_null()) {
                        named = true;
                        if v.as_u64().is_none_or(|n| n > cap) {
                            *v = cap.into();
                        }
                    }
                }
                if !named {
                    obj.insert(field.into(), cap.into());
                }
            }
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// A member of a JSON object: its key as written between its quotes, and the byte range of
/// its value.
type Member<'a> = (&'a str, std::ops::Range<usize>);

/// The members of the JSON object starting at `at` in `text` (which parsed as JSON), and where
/// its closing brace is. `None` if `at` is not an object.
fn members(text: &str, at: usize) -> Option<(Vec<Member<'_>>, usize)> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, at);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return Some((out, i));
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key = text.get(i + 1..key_end - 1)?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let end = value_end(b, i)?;
        out.push((key, i..end));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some((out, i)),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index just past the string whose opening quote is at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// The index just past the JSON value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The one member named `key`: `Err` when it is written twice (a splice would leave the
/// other copy for the origin to read).
fn only<'m>(
    members: &'m [Member<'_>],
    key: &str,
) -> Result<Option<&'m std::ops::Range<usize>>, ()> {
    let mut found = members.iter().filter(|(k, _)| *k == key).map(|(_, r)| r);
    let first = found.next();
    match found.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

/// [`ChatRequest::edited_body`] by splicing; `None` when the tree must be used.
fn splice(raw: &[u8], edits: &BodyEdits<'_>) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(raw).ok()?;
    let (top, close) = members(text, 0)?;
    if top.iter().any(|(k, _)| k.contains('\\')) {
        return None; // an escaped key may name a field we set
    }
    // (position, bytes to remove, text to put there), in body order once sorted.
    let mut edits_at: Vec<(usize, usize, String)> = Vec::new();
    let mut added = !top.is_empty();
    if let Some((cap, field)) = edits.max_output {
        let mut named = false;
        for f in OUTPUT_TOKEN_FIELDS {
            let Some(r) = only(&top, f).ok()? else {
                continue;
            };
            let value = text.get(r.clone())?;
            if value == "null" {
                continue;
            }
            named = true;
            if value.parse::<u64>().map_or(true, |n| n > cap) {
                edits_at.push((r.start, r.len(), cap.to_string()));
            }
        }
        if !named {
            let comma = if added { "," } else { "" };
            added = true;
            edits_at.push((close, 0, format!("{comma}\"{field}\":{cap}")));
        }
    }
    let mut set = |key: &str, value: &str| -> Option<()> {
        let encoded = serde_json::to_string(value).ok()?;
        match only(&top, key).ok()? {
            Some(r) if text.get(r.clone()) == Some(encoded.as_str()) => {}
            Some(r) => edits_at.push((r.start, r.len(), encoded)),
            None => {
                let comma = if added { "," } else { "" };
                added = true;
                edits_at.push((close, 0, format!("{comma}\"{key}\":{encoded}")));
            }
        }
        Some(())
    };
    if let Some(u) = edits.user {
        set("user", u)?;
    }
    if let Some(m) = edits.model {
        set("model", m)?;
    }
    if edits.include_usage {
        match only(&top, "stream_options").ok()? {
            None => {
                let comma = if added { "," } else { "" };
                edits_at.push((
                    close,
                    0,
                    format!("{comma}\"stream_options\":{{\"include_usage\":true}}"),
                ));
            }
            Some(r) => match members(text, r.start) {
                // Not an object: left as it is, like the tree does.
                None => {}
                Some((inner, inner_close)) => {
                    if inner.iter().any(|(k, _)| k.contains('\\')) {
                        return None;
                    }
                    match only(&inner, "include_usage").ok()? {
                        Some(u) if text.get(u.clone()) == Some("true") => {}
                        Some(u) => edits_at.push((u.start, u.len(), "true".to_owned())),
                        None => {
                            let comma = if inner.is_empty() { "" } else { "," };
                            edits_at.push((
                                inner_close,
                                0,
                                format!("{comma}\"include_usage\":true"),
                            ));
                        }
                    }
                }
            },
        }
    }
    if edits_at.is_empty() {
        return Some(raw.to_vec());
    }
    edits_at.sort_by_key(|(at, _, _)| *at);
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut from = 0;
    for (at, len, put) in &edits_at {
        out.extend_from_slice(raw.get(from..*at)?);
        out.extend_from_slice(put.as_bytes());
        from = at + len;
    }
    out.extend_from_slice(raw.get(from..)?);
    Some(out)
}

/// Parses a request body of `shape`. Errors are client errors with a sentence saying what is
/// wrong; nothing here panics on any input.
pub fn parse_chat(shape: Shape, body: &[u8]) -> Result<ChatRequest, Problem> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Problem::bad_request(format!(
            "request body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let body: Value = serde_json::from_str(text)
        .map_err(|e| Problem::bad_request(format!("request body is not valid JSON: {e}")))?;
    let obj = body
        .as_object()
        .ok_or_else(|| Problem::bad_request("request body must be a JSON object"))?;
    let str_field = |name: &str| -> Result<Option<String>, Problem> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Problem::bad_request(format!(
                "field `{name}` must be a string"
            ))),
        }
    };
    let stream = match shape {
        Shape::OpenAi => match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Problem::bad_request("field `stream` must be a boolean")),
        },
        Shape::Dify => match str_field("response_mode")?.as_deref() {
            None | Some("blocking") => false,
            Some("streaming") => true,
            Some(other) => {
                return Err(Problem::bad_request(format!(
                    "field `response_mode` must be \"streaming\" or \"blocking\", not {other:?}"
                )))
            }
        },
    };
    if shape == Shape::OpenAi {
        match obj.get("n") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(1) => {}
            Some(_) => {
                return Err(Problem::bad_request(
                    "field `n` must be 1: the gateway answers with one reply",
                ))
            }
        }
        for f in OUTPUT_TOKEN_FIELDS {
            match obj.get(f) {
                None | Some(Value::Null) => {}
                Some(v) if v.as_u64().is_some_and(|n| n > 0) => {}
                Some(_) => {
                    return Err(Problem::bad_request(format!(
                        "field `{f}` must be a positive integer"
                    )))
                }
            }
        }
    }
    let (question, prompt_chars) = match shape {
        Shape::OpenAi => openai_question(obj.get("messages"))?,
        Shape::Dify => {
            let q = str_field("query")?
                .ok_or_else(|| Problem::bad_request("field `query` is required"))?;
            let n = q.chars().count();
            (q, n)
        }
    };
    Ok(ChatRequest {
        shape,
        question,
        prompt_chars,
        model: if shape == Shape::OpenAi {
            str_field("model")?
        } else {
            None
        },
        stream,
        conversation_id: match obj.get("conversation_id") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => str_field("conversation_id")?.filter(|s| !s.is_empty()),
        },
        body_user: str_field("user")?,
        body,
        raw: text.as_bytes().to_vec(),
    })
}

fn openai_question(messages: Option<&Value>) -> Result<(String, usize), Problem> {
    let messages = messages
        .and_then(Value::as_array)
        .ok_or_else(|| Problem::bad_request("field `messages` must be an array"))?;
    if messages.is_empty() {
        return Err(Problem::bad_request("field `messages` must not be empty"));
    }
    let mut total = 0usize;
    let mut last_user = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| Problem::bad_request(format!("messages[{i}].role must be a string")))?;
        let content = message_text(m.get("content")).ok_or_else(|| {
            Problem::bad_request(format!(
                "messages[{i}].content must be a string or text parts"
            ))
        })?;
        total = total.saturating_add(content.chars().count());
        if role == "user" {
            last_user = Some(content);
        }
    }
    let q = last_user.ok_or_else(|| Problem::bad_request("`messages` has no user message"))?;
    Ok((q, total))
}

fn message_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                }
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_last_user_message_and_stream() {
        let b = br#"{"model":"gpt-4o","stream":true,"messages":[
            {"role":"system","content":"be nice"},{"role":"user","content":"hi"},
            {"role":"assistant","content":"hello"},{"role":"user","content":[{"type":"text","text":"refund?"}]}]}"#;
        let r = parse_chat(Shape::OpenAi, b).unwrap();
        assert_eq!(r.question, "refund?");
        assert!(r.stream);
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        assert_eq!(r.prompt_chars, 7 + 2 + 5 + 7);
    }

    #[test]
    fn dify_fields() {
        let b = r#"{"query":"退款","user":"u1","conversation_id":"c9","response_mode":"streaming","inputs":{}}"#;
        let r = parse_chat(Shape::Dify, b.as_bytes()).unwrap();
        assert_eq!(r.question, "退款");
        assert_eq!(r.conversation_id.as_deref(), Some("c9"));
        assert_eq!(r.body_user.as_deref(), Some("u1"));
        assert!(r.stream);
    }

    #[test]
    fn bad_input_is_a_clear_400() {
        for (shape, body, needle) in [
            (Shape::OpenAi, &b"{"[..], "not valid JSON"),
            (Shape::OpenAi, &b"\xff\xfe"[..], "UTF-8"),
            (Shape::OpenAi, &b"[1]"[..], "JSON object"),
            (
                Shape::OpenAi,
                &br#"{"messages":[]}"#[..],
                "must not be empty",
            ),
            (
                Shape::OpenAi,
                &br#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#[..],
                "`stream`",
            ),
            (Shape::Dify, &br#"{"user":"u"}"#[..], "`query`"),
            (
                Shape::Dify,
                &br#"{"query":"q","response_mode":"fast"}"#[..],
                "response_mode",
            ),
        ] {
            let p = parse_chat(shape, body).unwrap_err();
            assert_eq!(p.status, 400);
            assert!(p.detail.contains(needle), "{} lacks {needle}", p.detail);
        }
    }

    fn edits(stream: bool) -> BodyEdits<'static> {
        BodyEdits {
            model: Some("gpt-4o-mini"),
            user: Some("alice"),
            include_usage: stream,
            max_output: Some((1024, "max_tokens")),
        }
    }

    // Found by testing: `n` and `max_tokens` reached the origin as sent, so one request could
    // ask for 50 replies of 100,000 tokens each.
    #[test]
    fn regression_the_client_does_not_set_the_cost_of_a_request() {
        for (body, needle) in [
            (r#""n":50"#, "`n`"),
            (r#""n":"1""#, "`n`"),
            (r#""max_tokens":-5"#, "`max_tokens`"),
            (r#""max_completion_tokens":1.5"#, "`max_completion_tokens`"),
            (r#""max_tokens":0"#, "`max_tokens`"),
        ] {
            let b = format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],{body}}}"#);
            let p = parse_chat(Shape::OpenAi, b.as_bytes()).unwrap_err();
            assert!(p.detail.contains(needle), "{body}: {}", p.detail);
        }
        let tokens = |body: &str, field: &str| -> Vec<Option<u64>> {
            let r = parse_chat(Shape::OpenAi, body.as_bytes()).unwrap();
            let e = BodyEdits {
                max_output: Some((1024, field)),
                ..BodyEdits::default()
            };
            let out: Value = serde_json::from_slice(&r.edited_body(&e)).unwrap();
            OUTPUT_TOKEN_FIELDS
                .iter()
                .map(|f| out[f].as_u64())
                .collect()
        };
        let m = r#"{"messages":[{"role":"user","content":"hi"}]"#;
        assert_eq!(
            tokens(&format!("{m},\"n\":1}}"), "max_tokens"),
            [Some(1024), None]
        );
        assert_eq!(
            tokens(&format!("{m}}}"), "max_completion_tokens"),
            [None, Some(1024)]
        );
        assert_eq!(
            tokens(&format!("{m},\"max_tokens\":100000}}"), "max_tokens"),
            [Some(1024), None]
        );
        assert_eq!(
            tokens(
                &format!("{m},\"max_completion_tokens\":200}}"),
                "max_tokens"
            ),
            [None, Some(200)]
        );
        assert_eq!(
            tokens(
                &format!("{m},\"max_tokens\":9000000000,\"max_completion_tokens\":99999}}"),
                "max_tokens"
            ),
            [Some(1024), Some(1024)]
        );
        assert!(
            parse_chat(Shape::Dify, br#"{"query":"q","n":5}"#).is_ok(),
            "OpenAI fields only"
        );
    }

    #[test]
    fn spliced_bodies_say_what_the_edited_tree_says() {
        for body in [
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"user":"bob"}"#,
            r#"  { "messages" : [ {"role":"user","content":"a \"model\": x"} ] , "user" : null }  "#,
            r#"{"messages":[{"role":"user","content":"hi","model":"inner"}],"stream":true}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{}}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":false,"x":[1,{"y":"}"}]}}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":7}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini","user":"alice"}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":99999}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":null}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":7,"n":1}"#,
            r#"{"max_tokens":2000,"max_completion_tokens":3000,"messages":[{"role":"user","content":"hi"}]}"#,
            // Keys the splice must not trust: the tree is used.
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_tokens":99999}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"user":"bob","user":"eve"}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"\u0075ser":"eve"}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":false,"include_usage":false}}"#,
        ] {
            for stream in [false, true] {
                let r = parse_chat(Shape::OpenAi, body.as_bytes()).unwrap();
                let e = edits(stream);
                let spliced: Value = serde_json::from_slice(&r.edited_body(&e)).unwrap();
                let tree: Value = serde_json::from_slice(&r.edited_tree(&e)).unwrap();
                assert_eq!(spliced, tree, "{body}");
            }
        }
    }

    #[test]
    fn a_body_needing_no_change_goes_out_byte_for_byte() {
        let body = br#"{ "user":"alice", "model" : "gpt-4o-mini",
            "messages":[{"role":"user","content":"hi"}], "stream":true, "max_tokens": 300,
            "stream_options":{"include_usage":true} }"#;
        let r = parse_chat(Shape::OpenAi, body).unwrap();
        assert_eq!(r.edited_body(&edits(true)), body.to_vec());
        let only_model = BodyEdits {
            model: Some("gpt-4o"),
            ..BodyEdits::default()
        };
        let out = String::from_utf8(r.edited_body(&only_model)).unwrap();
        assert_eq!(
            out,
            String::from_utf8_lossy(body).replace("gpt-4o-mini", "gpt-4o")
        );
    }

    #[test]
    fn regression_a_repeated_user_key_cannot_reach_the_origin() {
        // An origin that reads the first of two `user` keys must still see the verified user.
        let body = br#"{"user":"eve","messages":[{"role":"user","content":"hi"}],"user":"x"}"#;
        let r = parse_chat(Shape::OpenAi, body).unwrap();
        let out = String::from_utf8(r.edited_body(&edits(false))).unwrap();
        assert_eq!(out.matches("\"user\":").count(), 1, "{out}");
        assert!(out.contains("\"user\":\"alice\""), "{out}");
    }

    #[test]
    fn dify_bodies_get_the_user_added() {
        let body = br#"{"query":"q","inputs":{}}"#;
        let r = parse_chat(Shape::Dify, body).unwrap();
        let e = BodyEdits {
            user: Some("u\"1"),
            ..BodyEdits::default()
        };
        let out: Value = serde_json::from_slice(&r.edited_body(&e)).unwrap();
        assert_eq!(out["user"], "u\"1");
        assert_eq!(out["query"], "q");
        let empty = parse_chat(Shape::Dify, br#"{"query":"q"}"#).unwrap();
        let out: Value = serde_json::from_slice(&empty.edited_body(&e)).unwrap();
        assert_eq!(out["user"], "u\"1");
    }

    proptest::proptest! {
        #[test]
        fn splicing_never_panics(text in "[ {}\\[\\]\",:a-z0-9\\\\]{0,64}") {
            let _ = splice(text.as_bytes(), &edits(true));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_chat(Shape::OpenAi, &bytes);
            let _ = parse_chat(Shape::Dify, &bytes);
        }
    }
}
