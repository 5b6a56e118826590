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

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_chat(Shape::OpenAi, &bytes);
            let _ = parse_chat(Shape::Dify, &bytes);
        }
    }
}
