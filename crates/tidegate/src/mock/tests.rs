//! End-to-end tests of the mock over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{spawn, MockArgs};

const REAL_SECRET: &str = "0x4AAAAAAAreal-secret";

fn args() -> MockArgs {
    MockArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        latency_ms: 0,
        chunk_delay_ms: 5,
        turnstile_secret: Some(REAL_SECRET.to_owned()),
        turnstile_hostname: "chat.example.test".to_owned(),
        ..MockArgs::default()
    }
}

async fn start(args: MockArgs) -> (reqwest::Client, String) {
    let addr = spawn(args).await.unwrap();
    (reqwest::Client::new(), format!("http://{addr}"))
}

fn chat(model: &str, question: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": question}
    ]})
}

/// Splits an SSE body into its `data:` payloads (and `event:` lines as `event:NAME`).
fn sse_items(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .map(str::to_owned)
                .unwrap_or_else(|| e.replace("event: ", "event:"))
        })
        .collect()
}

/// Reads a response body as its individual frames.
async fn read_frames(response: reqwest::Response) -> (Vec<Vec<u8>>, bool) {
    let mut stream = response.bytes_stream();
    let mut out = Vec::new();
    let mut failed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => out.push(bytes.to_vec()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    (out, failed)
}

async fn calls(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/mock/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn openai_blocking_names_the_model_and_reports_usage() {
    let (client, base) = start(args()).await;
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .header("x-user-id", "u1")
        .json(&chat("gpt-4o-mini", "Where is my order?"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let len: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(len > 100);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        text,
        "[gpt-4o-mini] Thanks for asking about: Where is my order?"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    // Two messages of 24 and 18 characters: ceil(chars / 4) + 4 each, + 3.
    assert_eq!(usage["prompt_tokens"], (6 + 4) + (5 + 4) + 3);
    assert_eq!(usage["completion_tokens"], (text.len() as u64).div_ceil(4));
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn openai_stream_has_role_content_finish_usage_and_done() {
    let (client, base) = start(args()).await;
    let mut body = chat("gpt-4o", "How do refunds work?");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let items = sse_items(&text);
    assert_eq!(items.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = items[..items.len() - 1]
        .iter()
        .map(|i| serde_json::from_str(i).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["model"] == "gpt-4o" && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content,
        "[gpt-4o] Thanks for asking about: How do refunds work?"
    );
    assert!(chunks.len() > 4, "content comes in several chunks");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Without include_usage there is no usage chunk at all.
    body["stream_options"] = json!({"include_usage": false});
    let text = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("\"usage\""));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn openai_rejects_bad_requests_in_its_error_shape() {
    let (client, base) = start(args()).await;
    let url = format!("{base}/v1/chat/completions");
    let cases = [
        ("{not json".to_owned(), Value::Null),
        (json!({"model": "m"}).to_string(), json!("messages")),
        (
            json!({"model": "m", "messages": []}).to_string(),
            json!("messages"),
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}).to_string(),
            Value::Null,
        ),
        (
            json!({"model": "m", "messages": [{"role": "robot"}]}).to_string(),
            json!("messages[0].role"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                   "stream_options": {"include_usage": true}})
            .to_string(),
            json!("stream_options"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user"}], "mock": {"nope": 1}}).to_string(),
            json!("mock"),
        ),
    ];
    for (body, param) in cases {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let err: Value = response.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error", "{body}");
        assert!(err["error"]["message"].as_str().unwrap().len() > 5);
        assert_eq!(err["error"]["param"], param, "{body}");
        assert!(err["error"].as_object().unwrap().contains_key("code"));
    }
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let (client, base) = start(MockArgs {
        api_key: Some("sk-good".into()),
        ..args()
    })
    .await;
    let openai = format!("{base}/v1/chat/completions");
    let r = client
        .post(&openai)
        .json(&chat("m", "q"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let r = client
        .post(&openai)
        .bearer_auth("sk-bad")
        .json(&chat("m", "q"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );
    let r = client
        .post(&openai)
        .bearer_auth("sk-good")
        .json(&chat("m", "q"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let dify = format!("{base}/v1/chat-messages");
    let body = json!({"query": "q", "inputs": {}, "user": "u"});
    let r = client
        .post(&dify)
        .bearer_auth("sk-bad")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["code"], "unauthorized");
    assert_eq!(err["status"], 401);
    let r = client
        .post(&dify)
        .bearer_auth("sk-good")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn dify_blocking_keeps_conversations_like_dify() {
    let (client, base) = start(args()).await;
    let url = format!("{base}/v1/chat-messages");
    let body = json!({"query": "订单在哪里？", "inputs": {}, "user": "alice"});
    let reply: Value = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["event"], "message");
    assert_eq!(reply["mode"], "chat");
    assert_eq!(
        reply["answer"],
        "[dify-app] Thanks for asking about: 订单在哪里？"
    );
    assert_eq!(reply["message_id"], reply["id"]);
    let usage = &reply["metadata"]["usage"];
    assert_eq!(usage["prompt_tokens"], 6 + 50);
    assert_eq!(usage["currency"], "USD");
    let conversation = reply["conversation_id"].as_str().unwrap().to_owned();

    // The same user continues the conversation, with another model named in inputs.
    let body = json!({"query": "and now?", "inputs": {"model": "economy"}, "user": "alice",
                      "conversation_id": conversation, "response_mode": "blocking"});
    let reply: Value = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["conversation_id"], conversation.as_str());
    assert!(reply["answer"].as_str().unwrap().starts_with("[economy] "));

    // Someone else's or an unknown conversation is not found.
    for user in ["bob", "alice"] {
        let id = if user == "bob" {
            conversation.clone()
        } else {
            "no-such-id".to_owned()
        };
        let body = json!({"query": "x", "inputs": {}, "user": user, "conversation_id": id});
        let r = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    }

    // Missing fields are 400 invalid_param; a broken body is 400 too.
    for body in [
        json!({"inputs": {}, "user": "u"}),
        json!({"query": "q", "user": "u"}),
        json!({"query": "q", "inputs": {}}),
        json!({"query": "q", "inputs": {}, "user": "u", "response_mode": "fast"}),
    ] {
        let r = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["code"], "invalid_param");
        assert_eq!(err["status"], 400);
    }
    let r = client.post(&url).body("{{").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], 400);
}

#[tokio::test]
async fn dify_stream_sends_messages_replace_end_and_pings() {
    let (client, base) = start(args()).await;
    let url = format!("{base}/v1/chat-messages");
    let body = json!({"query": "hi", "inputs": {}, "user": "u", "response_mode": "streaming",
                      "mock": {"reply": "Use code SAVE10 today", "replace": "Use code [removed] today",
                               "latency_ms": 350, "ping_interval_ms": 100}});
    let started = Instant::now();
    let text = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(350));
    let items = sse_items(&text);
    let pings = items.iter().take_while(|i| *i == "event:ping").count();
    assert_eq!(pings, 3, "{items:?}");
    let events: Vec<Value> = items[pings..]
        .iter()
        .map(|i| serde_json::from_str(i).unwrap())
        .collect();
    let answer: String = events
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| e["answer"].as_str().unwrap())
        .collect();
    assert_eq!(answer, "Use code SAVE10 today");
    let n = events.len();
    assert_eq!(events[n - 2]["event"], "message_replace");
    assert_eq!(events[n - 2]["answer"], "Use code [removed] today");
    assert_eq!(events[n - 1]["event"], "message_end");
    assert!(
        events[n - 1]["metadata"]["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // A stream error ends with an error event and no message_end.
    let body = json!({"query": "hi", "inputs": {}, "user": "u", "response_mode": "streaming",
                      "mock": {"stream_error": true}});
    let text = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last: Value = serde_json::from_str(sse_items(&text).last().unwrap()).unwrap();
    assert_eq!(last["event"], "error");
    assert!(!text.contains("message_end"));
}

#[tokio::test]
async fn chunks_split_writes_exactly_even_inside_characters() {
    let (client, base) = start(args()).await;
    // Streamed: every frame the client reads is exactly the steered size (last may be short).
    let mut body = chat("m", "q");
    body["stream"] = json!(true);
    body["mock"] = json!({"reply": "你好🎉 code SAVE10", "chunks": [7, 3], "chunk_delay_ms": 1});
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (frames, failed) = read_frames(response).await;
    assert!(!failed);
    let sizes: Vec<usize> = frames.iter().map(Vec::len).collect();
    assert_eq!(sizes[0], 7);
    assert!(
        sizes[1..sizes.len() - 1].iter().all(|&s| s == 3),
        "{sizes:?}"
    );
    let whole: Vec<u8> = frames.concat();
    let text = String::from_utf8(whole).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    // Some frame boundary falls inside a multi-byte character.
    let mut offset = 0;
    let mut split_char = false;
    for f in &frames {
        offset += f.len();
        split_char |= !text.is_char_boundary(offset);
    }
    assert!(split_char);

    // Blocking: a sized body still arrives intact through split writes.
    body["stream"] = json!(false);
    body["mock"] = json!({"reply": "短い reply", "chunks": [5]});
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("content-length"));
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["choices"][0]["message"]["content"], "短い reply");
}

#[tokio::test]
async fn cut_after_bytes_ends_the_stream_abruptly() {
    let (client, base) = start(args()).await;
    let mut body = chat("m", "a question long enough to need several chunks");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["mock"] = json!({"cut_after_bytes": 300});
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (frames, failed) = read_frames(response).await;
    assert!(failed, "the client must see an error, not a clean end");
    let received = frames.concat();
    assert_eq!(received.len(), 300);
    assert!(!String::from_utf8_lossy(&received).contains("[DONE]"));

    // A sized blocking body cut short: fewer bytes than Content-Length, then an error.
    body["stream"] = json!(false);
    body.as_object_mut().unwrap().remove("stream_options");
    body["mock"] = json!({"cut_after_bytes": 40});
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.bytes().await.is_err());

    // Dify: no message_end.
    let body = json!({"query": "hi there", "inputs": {}, "user": "u", "response_mode": "streaming",
                      "mock": {"cut_after_bytes": 150}});
    let response = client
        .post(format!("{base}/v1/chat-messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (frames, failed) = read_frames(response).await;
    assert!(failed);
    assert!(!String::from_utf8_lossy(&frames.concat()).contains("message_end"));
}

/// Regression guard for the fault class "an origin that dies mid-stream is relayed as a
/// clean, complete answer": on the wire, the cut leaves no chunked terminator.
#[tokio::test]
async fn cut_leaves_no_chunked_terminator_on_the_wire() {
    let addr = spawn(args()).await.unwrap();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": true,
                      "mock": {"cut_after_bytes": 120}})
    .to_string();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut raw)).await;
    // Either EOF or a reset ends the read; both are abrupt.
    let _ = read.expect("the server must close the connection");
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"));
    assert!(raw.contains("transfer-encoding: chunked"));
    assert!(!raw.ends_with("0\r\n\r\n"), "{raw}");
    assert!(!raw.contains("[DONE]"));
}

#[tokio::test]
async fn omit_usage_and_usage_override() {
    let (client, base) = start(args()).await;
    let url = format!("{base}/v1/chat/completions");
    let mut body = chat("m", "q");
    body["mock"] = json!({"omit_usage": true});
    let value: Value = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(value.get("usage").is_none());
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("usage"));
    assert!(text.ends_with("data: [DONE]\n\n"));

    body["mock"] = json!({"usage": {"prompt_tokens": 1000, "completion_tokens": 24}});
    let text = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let items = sse_items(&text);
    let usage: Value = serde_json::from_str(&items[items.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 1024);

    let dify = json!({"query": "q", "inputs": {}, "user": "u", "response_mode": "streaming",
                      "mock": {"omit_usage": true}});
    let text = client
        .post(format!("{base}/v1/chat-messages"))
        .json(&dify)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("message_end"));
    assert!(!text.contains("usage"));
}

#[tokio::test]
async fn steered_status_sends_error_shape_and_retry_after_verbatim() {
    let (client, base) = start(args()).await;
    let date = "Wed, 21 Oct 2037 07:28:00 GMT";
    let mut body = chat("m", "q");
    body["stream"] = json!(true);
    body["mock"] = json!({"status": 429, "retry_after": date});
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], date);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");

    body["mock"] = json!({"status": 503, "retry_after": 12});
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "12");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "server_error"
    );

    let dify = json!({"query": "q", "inputs": {}, "user": "u", "mock": {"status": 502}});
    let r = client
        .post(format!("{base}/v1/chat-messages"))
        .json(&dify)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("retry-after").is_none());
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["status"], 502);
    assert_eq!(err["code"], "internal_server_error");
}

#[tokio::test]
async fn reply_text_steering_and_latency() {
    let (client, base) = start(MockArgs {
        latency_ms: 150,
        ..args()
    })
    .await;
    let url = format!("{base}/v1/chat/completions");
    let mut body = chat("m", "q");
    body["mock"] = json!({"reply": "您好！😀 优惠码 VIP2024"});
    let started = Instant::now();
    let value: Value = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "base latency applies"
    );
    assert_eq!(
        value["choices"][0]["message"]["content"],
        "您好！😀 优惠码 VIP2024"
    );
    body["mock"] = json!({"dont_know": true, "latency_ms": 0});
    let started = Instant::now();
    let value: Value = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "latency_ms overrides"
    );
    assert_eq!(
        value["choices"][0]["message"]["content"],
        "I don't know the answer to that."
    );
}

#[test]
fn latency_grows_with_load_and_is_capped() {
    let state = super::state::MockState::new(MockArgs {
        latency_ms: 200,
        ..MockArgs::default()
    });
    assert_eq!(state.latency(0), Duration::from_millis(200));
    assert_eq!(state.latency(50), Duration::from_millis(400));
    assert_eq!(state.latency(1200), Duration::from_millis(5000));
    assert_eq!(state.latency(1_000_000), Duration::from_secs(8));
}

async fn verify(client: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> Value {
    let r = client
        .post(format!("{base}/turnstile/v0/siteverify"))
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn codes(v: &Value) -> Vec<String> {
    v["error-codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn turnstile_secrets_and_token_outcomes() {
    let (client, base) = start(args()).await;
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("response", "pass")], "missing-input-secret"),
        (
            &[("secret", "wrong"), ("response", "pass")],
            "invalid-input-secret",
        ),
        (&[("secret", REAL_SECRET)], "missing-input-response"),
        (
            &[
                ("secret", "2x0000000000000000000000000000000AA"),
                ("response", "x"),
            ],
            "invalid-input-response",
        ),
        (
            &[
                ("secret", "3x0000000000000000000000000000000AA"),
                ("response", "x"),
            ],
            "timeout-or-duplicate",
        ),
        (
            &[("secret", REAL_SECRET), ("response", "fail-1")],
            "invalid-input-response",
        ),
        (
            &[("secret", REAL_SECRET), ("response", "error-1")],
            "internal-error",
        ),
        (
            &[("secret", REAL_SECRET), ("response", "expired-1")],
            "timeout-or-duplicate",
        ),
        (
            &[("secret", REAL_SECRET), ("response", "garbage")],
            "invalid-input-response",
        ),
    ];
    for (form, code) in cases {
        let v = verify(&client, &base, form).await;
        assert_eq!(v["success"], false, "{form:?}");
        assert_eq!(codes(&v), vec![code.to_owned()], "{form:?}");
    }
    let long = format!("pass-{}", "a".repeat(2100));
    let v = verify(
        &client,
        &base,
        &[("secret", REAL_SECRET), ("response", &long)],
    )
    .await;
    assert_eq!(codes(&v), vec!["invalid-input-response"]);

    let v = verify(
        &client,
        &base,
        &[
            ("secret", "1x0000000000000000000000000000000AA"),
            ("response", "x"),
        ],
    )
    .await;
    assert_eq!(v["success"], true);
    assert_eq!(v["hostname"], "example.com");

    // JSON bodies work too; a broken one is bad-request.
    let r = client
        .post(format!("{base}/turnstile/v0/siteverify"))
        .json(&json!({"secret": REAL_SECRET, "response": "pass-login.s1"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["action"], "login");
    assert_eq!(v["cdata"], "s1");
    assert_eq!(v["hostname"], "chat.example.test");
    assert_eq!(codes(&v), Vec::<String>::new());
    assert!(v["challenge_ts"].as_str().unwrap().ends_with('Z'));
    let r = client
        .post(format!("{base}/turnstile/v0/siteverify"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(codes(&r.json().await.unwrap()), vec!["bad-request"]);
}

/// Regression guard for "a Turnstile token retried after an origin error is rejected as a
/// duplicate": only a retry with the same idempotency key is accepted.
#[tokio::test]
async fn turnstile_token_is_single_use_unless_idempotent_retry() {
    let (client, base) = start(args()).await;
    let first = verify(
        &client,
        &base,
        &[
            ("secret", REAL_SECRET),
            ("response", "pass-chat"),
            ("idempotency_key", "k-1"),
        ],
    )
    .await;
    assert_eq!(first["success"], true);
    assert_eq!(first["action"], "chat");
    let replay = verify(
        &client,
        &base,
        &[
            ("secret", REAL_SECRET),
            ("response", "pass-chat"),
            ("idempotency_key", "k-1"),
        ],
    )
    .await;
    assert_eq!(replay, first, "same key replays the first result");
    for key in [None, Some("k-2")] {
        let mut form = vec![("secret", REAL_SECRET), ("response", "pass-chat")];
        if let Some(k) = key {
            form.push(("idempotency_key", k));
        }
        let v = verify(&client, &base, &form).await;
        assert_eq!(codes(&v), vec!["timeout-or-duplicate"], "{key:?}");
    }
    // Without a key the first use succeeds and any second use is a duplicate.
    let form = [("secret", REAL_SECRET), ("response", "pass")];
    assert_eq!(verify(&client, &base, &form).await["success"], true);
    assert_eq!(
        codes(&verify(&client, &base, &form).await),
        vec!["timeout-or-duplicate"]
    );
    assert_eq!(calls(&client, &base).await["siteverify_total"], 6);
}

#[tokio::test]
async fn chatwoot_handoff_and_messages_are_recorded() {
    let (client, base) = start(args()).await;
    let toggle = format!("{base}/api/v1/accounts/1/conversations/42/toggle_status");
    let messages = format!("{base}/api/v1/accounts/1/conversations/42/messages");

    let r = client
        .post(&toggle)
        .json(&json!({"status": "open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&toggle)
        .header("api_access_token", "nope")
        .json(&json!({"status": "open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "Invalid Access Token"
    );
    let r = client
        .post(&toggle)
        .header("api_access_token", "test-token")
        .json(&json!({"status": "closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // The bot posts its template message, then hands over.
    let r = client
        .post(&messages)
        .header("api_access_token", "test-token")
        .json(&json!({"content": "A person will take over.", "message_type": "outgoing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let message: Value = r.json().await.unwrap();
    assert_eq!(message["conversation_id"], 42);
    assert_eq!(message["message_type"], 1);
    let r = client
        .post(&toggle)
        .header("api_access_token", "test-token")
        .json(&json!({"status": "open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["payload"]["current_status"], "open");
    assert_eq!(v["payload"]["conversation_id"], 42);
    assert_eq!(
        v["payload"]["success"],
        Value::Null,
        "a bot handoff has no success flag"
    );

    // A message after the handoff is counted as one.
    client
        .post(&messages)
        .header("api_access_token", "test-token")
        .json(&json!({"content": "still here"}))
        .send()
        .await
        .unwrap();
    let c = calls(&client, &base).await;
    assert_eq!(c["toggle_status"]["42"], 4);
    assert_eq!(c["messages"]["42"], 2);
    assert_eq!(c["messages_after_handoff"]["42"], 1);
    let log = c["toggle_status_log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["http_status"], 200);

    // Resolving works as a plain status change.
    let v: Value = client
        .post(&toggle)
        .header("api_access_token", "test-token")
        .json(&json!({"status": "resolved"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["payload"]["success"], true);
    assert_eq!(v["payload"]["current_status"], "resolved");
}

#[tokio::test]
async fn calls_count_users_models_alerts_and_reset_clears() {
    let (client, base) = start(args()).await;
    for (user, model) in [
        ("u1", "gpt-4o-mini"),
        ("u1", "gpt-4o"),
        ("u2", "gpt-4o-mini"),
    ] {
        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .header("x-user-id", user)
            .json(&chat(model, "q"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut body = chat("from-body", "q");
    body["user"] = json!("u3");
    client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/v1/chat-messages"))
        .json(&json!({"query": "q", "inputs": {}, "user": "d1"}))
        .send()
        .await
        .unwrap();
    let r = client
        .post(format!("{base}/alerts"))
        .json(&json!({"kind": "tier", "recommend": "economy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let c = calls(&client, &base).await;
    assert_eq!(c["chat_total"], 5);
    assert_eq!(
        c["chat_by_user"],
        json!({"u1": 2, "u2": 1, "u3": 1, "d1": 1})
    );
    assert_eq!(c["models_by_user"]["u1"], json!(["gpt-4o-mini", "gpt-4o"]));
    assert_eq!(c["models_by_user"]["d1"], json!(["dify-app"]));
    assert_eq!(
        c["alerts"],
        json!([{"kind": "tier", "recommend": "economy"}])
    );
    assert_eq!(c["in_flight"], 0);

    let r = client
        .post(format!("{base}/mock/reset"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let c = calls(&client, &base).await;
    assert_eq!(c["chat_total"], 0);
    assert_eq!(c["alerts"], json!([]));
    assert_eq!(c["chat_by_user"], json!({}));
}
