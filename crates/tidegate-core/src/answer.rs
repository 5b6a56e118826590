//! Answers the gateway writes itself (FAQ hits, template replies), in the client's API shape,
//! whole or as a stream.

use serde_json::json;

use crate::request::Shape;

/// A reply body and its content type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// `application/json` or `text/event-stream`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Renders `text` as a complete answer of `shape`. `id` is a stable reply id, `model` the name
/// reported (e.g. `tidegate-faq`), `conversation` Dify's conversation id, `created` seconds.
pub fn render(
    shape: Shape,
    stream: bool,
    text: &str,
    id: &str,
    model: &str,
    conversation: Option<&str>,
    created: u64,
) -> Rendered {
    let conv = conversation.unwrap_or("");
    let usage = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
    match (shape, stream) {
        (Shape::OpenAi, false) => Rendered {
            content_type: "application/json",
            body: json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text}}],
                "usage": usage,
            })
            .to_string(),
        },
        (Shape::OpenAi, true) => {
            let chunk = |delta: serde_json::Value, finish: Option<&str>| {
                let c = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [{"index": 0, "delta": delta,
                    "finish_reason": finish}]});
                format!("data: {c}\n\n")
            };
            let mut body = chunk(json!({"role": "assistant", "content": text}), None);
            body.push_str(&chunk(json!({}), Some("stop")));
            body.push_str("data: [DONE]\n\n");
            Rendered {
                content_type: "text/event-stream",
                body,
            }
        }
        (Shape::Dify, false) => Rendered {
            content_type: "application/json",
            body: json!({
                "event": "message", "message_id": id, "conversation_id": conv, "mode": "chat",
                "answer": text, "metadata": {"usage": usage}, "created_at": created,
            })
            .to_string(),
        },
        (Shape::Dify, true) => {
            let msg = json!({"event": "message", "message_id": id, "conversation_id": conv,
                "answer": text, "created_at": created});
            let end = json!({"event": "message_end", "message_id": id, "conversation_id": conv,
                "metadata": {"usage": usage}});
            Rendered {
                content_type: "text/event-stream",
                body: format!("data: {msg}\n\ndata: {end}\n\n"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let r = render(
            Shape::OpenAi,
            false,
            "hi ✓",
            "faq-1",
            "tidegate-faq",
            None,
            5,
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hi ✓");
        let r = render(Shape::OpenAi, true, "hi", "faq-1", "m", None, 5);
        assert!(r.body.ends_with("data: [DONE]\n\n"));
        assert_eq!(r.content_type, "text/event-stream");
        let r = render(Shape::Dify, true, "你好", "m1", "m", Some("c1"), 5);
        assert!(r.body.contains("message_end") && r.body.contains("你好"));
        let r = render(Shape::Dify, false, "x", "m1", "m", Some("c1"), 5);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["conversation_id"], "c1");
    }
}
