//! Tests of the reply filter as hosts drive it: bytes in, split anywhere; bytes out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

const VALID: [&str; 2] = ["SPRING618", "SAVE50NOW"];

fn validator() -> Arc<Validator> {
    Arc::new(Validator::new(&ValidationConfig::default()).unwrap())
}

fn codes() -> Arc<CodeSet> {
    Arc::new(CodeSet::from_codes(VALID))
}

fn repl() -> String {
    ValidationConfig::default().replacement
}

/// An OpenAI stream carrying `deltas`.
fn openai_sse(deltas: &[&str], usage: bool, done: bool) -> Vec<u8> {
    let env = |choices: Value| {
        json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",
               "choices": choices})
    };
    let mut s = String::new();
    let mut ev = |v: Value| s.push_str(&format!("data: {v}\n\n"));
    ev(env(
        json!([{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]),
    ));
    for d in deltas {
        ev(env(
            json!([{"index":0,"delta":{"content":d},"finish_reason":null}]),
        ));
    }
    ev(env(json!([{"index":0,"delta":{},"finish_reason":"stop"}])));
    if usage {
        let mut u = env(json!([]));
        u["usage"] = json!({"prompt_tokens":11,"completion_tokens":22,"total_tokens":33});
        ev(u);
    }
    if done {
        s.push_str("data: [DONE]\n\n");
    }
    s.into_bytes()
}

/// A Dify stream carrying `deltas`.
fn dify_sse(deltas: &[&str], end: bool) -> Vec<u8> {
    let mut s = String::from("event: ping\n\n");
    for d in deltas {
        let v = json!({"event":"message","task_id":"t1","message_id":"m1",
                       "conversation_id":"c1","answer":d,"created_at":1});
        s.push_str(&format!("data: {v}\n\n"));
    }
    if end {
        let v = json!({"event":"message_end","task_id":"t1","message_id":"m1",
                       "conversation_id":"c1","metadata":{"usage":{"prompt_tokens":7,
                       "completion_tokens":8,"total_tokens":15,"currency":"USD"}}});
        s.push_str(&format!("data: {v}\n\n"));
    }
    s.into_bytes()
}

/// Pushes `bytes` cut at `cuts` (byte offsets, any order); returns every push's output and
/// the final output.
fn drive(f: &mut ReplyFilter, bytes: &[u8], cuts: &[usize], ok: bool) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    let outs = cuts
        .windows(2)
        .map(|w| f.push(&bytes[w[0]..w[1]]))
        .collect();
    (outs, f.finish(ok))
}

fn stream_filter(shape: Shape) -> ReplyFilter {
    ReplyFilter::new(shape, true, validator(), codes())
}

/// The events of an SSE body as data payloads (test-side parser, independent of `sse.rs`).
fn data_events(out: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(out).expect("output is UTF-8");
    text.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The text a client would show.
fn client_text(shape: Shape, out: &[u8]) -> String {
    let mut text = String::new();
    for d in data_events(out) {
        let Ok(v) = serde_json::from_str::<Value>(&d) else {
            continue;
        };
        match shape {
            Shape::OpenAi => {
                for c in v["choices"].as_array().into_iter().flatten() {
                    if let Some(s) = c["delta"]["content"].as_str() {
                        text.push_str(s);
                    }
                }
            }
            Shape::Dify => match v["event"].as_str() {
                Some("message") => text.push_str(v["answer"].as_str().unwrap_or("")),
                Some("message_replace") => text = v["answer"].as_str().unwrap_or("").to_owned(),
                _ => {}
            },
        }
    }
    text
}

fn sse_for(shape: Shape, deltas: &[&str]) -> Vec<u8> {
    match shape {
        Shape::OpenAi => openai_sse(deltas, true, true),
        Shape::Dify => dify_sse(deltas, true),
    }
}

#[test]
fn regression_pattern_split_across_reads_is_caught() {
    for shape in [Shape::OpenAi, Shape::Dify] {
        // Split between deltas, and inside the JSON line of a delta.
        let bytes = sse_for(
            shape,
            &["Use code FAKE", "99X at checkout, or SPRI", "NG618."],
        );
        let mid = bytes.windows(4).position(|w| w == b"FAKE").unwrap() + 2;
        for cuts in [vec![], vec![mid], (0..bytes.len()).collect::<Vec<_>>()] {
            let mut f = stream_filter(shape);
            let (outs, last) = drive(&mut f, &bytes, &cuts, true);
            let all: Vec<u8> = outs.concat().into_iter().chain(last).collect();
            let want = format!("Use code {} at checkout, or SPRING618.", repl());
            assert_eq!(client_text(shape, &all), want, "{shape:?} {cuts:?}");
            assert_eq!(f.report().codes_replaced, 1);
            assert_eq!(f.report().codes_kept, 1);
            assert_eq!(f.report().end, End::Complete);
            assert!(!String::from_utf8_lossy(&all).contains("FAKE"));
        }
    }
}

#[test]
fn regression_multibyte_char_split_across_reads_stays_intact() {
    for shape in [Shape::OpenAi, Shape::Dify] {
        let bytes = sse_for(shape, &["退款政策 😀 ", "请看优惠页"]);
        let tui = "退".as_bytes();
        let at = bytes.windows(3).position(|w| w == tui).unwrap();
        let emoji = bytes.windows(4).position(|w| w == "😀".as_bytes()).unwrap();
        let mut f = stream_filter(shape);
        let (outs, last) = drive(
            &mut f,
            &bytes,
            &[at + 1, at + 2, emoji + 1, emoji + 3],
            true,
        );
        let all: Vec<u8> = outs.concat().into_iter().chain(last).collect();
        assert_eq!(client_text(shape, &all), "退款政策 😀 请看优惠页");
        assert!(std::str::from_utf8(&all).is_ok());
    }
}

#[test]
fn regression_buffering_kills_streaming_first_byte_released() {
    for shape in [Shape::OpenAi, Shape::Dify] {
        let bytes = sse_for(shape, &["Hello there, ", "how can I help?"]);
        let first_event_end = bytes.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        let second_end = first_event_end
            + bytes[first_event_end..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .unwrap()
            + 2;
        let third_end = second_end
            + bytes[second_end..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .unwrap()
            + 2;
        let mut f = stream_filter(shape);
        let mut seen = Vec::new();
        seen.extend(f.push(&bytes[..third_end]));
        assert!(
            client_text(shape, &seen).starts_with("Hello there, "),
            "{shape:?}: the first delta must go out in the same push"
        );
        // And each following delta too: at most a trailing possible code is held back.
        seen.extend(f.push(&bytes[third_end..]));
        assert_eq!(client_text(shape, &seen), "Hello there, how can I help?");
    }
}

#[test]
fn held_text_goes_out_before_the_terminator() {
    let bytes = openai_sse(&["Try SPRING618"], false, true);
    let mut f = stream_filter(Shape::OpenAi);
    let (outs, last) = drive(&mut f, &bytes, &[], true);
    let all: Vec<u8> = outs.concat().into_iter().chain(last).collect();
    let events = data_events(&all);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(client_text(Shape::OpenAi, &all), "Try SPRING618");
    // The code arrives in an event before [DONE] (here: the finish chunk).
    let pos_code = events.iter().position(|e| e.contains("SPRING618")).unwrap();
    assert!(pos_code < events.len() - 1);
}

#[test]
fn regression_origin_dying_mid_stream_is_not_a_clean_answer() {
    for shape in [Shape::OpenAi, Shape::Dify] {
        // No terminator at all.
        let bytes = match shape {
            Shape::OpenAi => openai_sse(&["Half an ans", "wer SAVE50NOW"], false, false),
            Shape::Dify => dify_sse(&["Half an ans", "wer SAVE50NOW"], false),
        };
        for ok in [true, false] {
            let mut f = stream_filter(shape);
            let (outs, last) = drive(&mut f, &bytes, &[17], ok);
            let all: Vec<u8> = outs.concat().into_iter().chain(last).collect();
            let events = data_events(&all);
            let tail: Value = serde_json::from_str(events.last().unwrap()).unwrap();
            match shape {
                Shape::OpenAi => {
                    assert_eq!(tail["error"]["code"], "stream_cut");
                    assert_eq!(tail["error"]["type"], "tidegate_error");
                    assert!(!events.iter().any(|e| e == "[DONE]"));
                }
                Shape::Dify => {
                    assert_eq!(tail["event"], "error");
                    assert_eq!(tail["code"], "stream_cut");
                    assert_eq!(tail["status"], 502);
                    assert_eq!(tail["conversation_id"], "c1");
                }
            }
            assert_eq!(client_text(shape, &all), "Half an answer SAVE50NOW");
            let r = f.report();
            assert_eq!(r.end, End::Cut);
            assert_eq!(
                r.reason,
                Some(if ok { "stream_cut" } else { "upstream_failed" })
            );
            assert!(!r.is_clean());
        }
    }
}

#[test]
fn regression_an_event_cut_mid_line_is_dropped_not_relayed_half_written() {
    // A tester saw `data: {"choices":[...` (half a JSON object) dispatched to the client
    // before the error event: an SDK fails on the bad JSON before it sees the error.
    let bytes = openai_sse(&["abc def"], false, false);
    for ok in [false, true] {
        let mut f = stream_filter(Shape::OpenAi);
        let mut out = f.push(&bytes[..bytes.len() - 12]);
        out.extend(f.finish(ok));
        let text = String::from_utf8_lossy(&out).into_owned();
        for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "a data line the client cannot parse: {line:?} in {text:?}"
            );
        }
        assert!(
            text.contains("abc def"),
            "whole events before the cut are relayed"
        );
        assert!(text.contains("stream_cut"));
        assert_eq!(f.report().end, End::Cut);
    }
    // A last event whose data is whole but whose line ending never came is kept.
    let mut f = stream_filter(Shape::OpenAi);
    let mut out = f.push(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tail\"}}]}");
    out.extend(f.finish(true));
    assert!(String::from_utf8_lossy(&out).contains("tail"));
}

#[test]
fn origin_error_events_are_relayed_once() {
    let mut f = stream_filter(Shape::Dify);
    let mut bytes = dify_sse(&["Checking SPRING6"], false);
    bytes.extend_from_slice(
        b"data: {\"event\":\"error\",\"task_id\":\"t1\",\"status\":500,\"code\":\"x\",\"message\":\"model overloaded\"}\n\n",
    );
    let (outs, last) = drive(&mut f, &bytes, &[], true);
    let all: Vec<u8> = outs.concat().into_iter().chain(last).collect();
    let events = data_events(&all);
    assert_eq!(events.iter().filter(|e| e.contains("\"error\"")).count(), 1);
    // The held word was judged before the error went out.
    assert_eq!(
        client_text(Shape::Dify, &all),
        format!("Checking {}", repl())
    );
    assert_eq!(f.report().end, End::OriginError("model overloaded".into()));
    assert_eq!(f.report().reason, Some("origin_error"));

    let mut f = stream_filter(Shape::OpenAi);
    let mut bytes = openai_sse(&["partial"], false, false);
    bytes.extend_from_slice(
        b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
    );
    let (_, last) = drive(&mut f, &bytes, &[], true);
    assert!(last.is_empty(), "no second error event");
    assert_eq!(f.report().end, End::OriginError("boom".into()));
}

#[test]
fn dify_message_replace_is_validated() {
    let mut bytes = dify_sse(&["Use SPRIN"], false);
    let rep = json!({"event":"message_replace","task_id":"t1","message_id":"m1",
                     "conversation_id":"c1","answer":"Sorry: FAKE2024 is not a code, SPRING618 is."});
    bytes.extend_from_slice(format!("data: {rep}\n\n").as_bytes());
    bytes.extend_from_slice(&dify_sse(&[" Thanks"], true)[13..]);
    let mut f = stream_filter(Shape::Dify);
    let (outs, last) = drive(&mut f, &bytes, &[40, 41, 150], true);
    let all: Vec<u8> = outs.concat().into_iter().chain(last).collect();
    let want = format!("Sorry: {} is not a code, SPRING618 is. Thanks", repl());
    assert_eq!(client_text(Shape::Dify, &all), want);
    // The held "SPRIN" belonged to the replaced text and never reaches the client.
    assert!(!String::from_utf8_lossy(&all).contains("SPRIN\""));
    let r = f.report();
    assert_eq!(r.text, want);
    assert_eq!(r.codes_replaced, 1);
    assert_eq!(r.end, End::Complete);
}

#[test]
fn a_hidden_usage_chunk_still_counts_but_never_reaches_the_client() {
    let bytes = openai_sse(&["hi"], true, true);
    let mut f = stream_filter(Shape::OpenAi).hiding_usage(true);
    let (outs, last) = drive(&mut f, &bytes, &[7, 40, 200], true);
    let out: Vec<u8> = outs.into_iter().flatten().chain(last).collect();
    let events = data_events(&out);
    assert!(
        events.iter().all(|e| !e.contains("\"usage\"")),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(f.report().usage.map(|u| u.total_tokens), Some(33));
    // Not hidden by default.
    let mut f = stream_filter(Shape::OpenAi);
    let (outs, last) = drive(&mut f, &bytes, &[7], true);
    let out: Vec<u8> = outs.into_iter().flatten().chain(last).collect();
    assert!(data_events(&out).iter().any(|e| e.contains("\"usage\"")));
}

#[test]
fn usage_from_both_shapes() {
    let mut f = stream_filter(Shape::OpenAi);
    drive(&mut f, &openai_sse(&["hi"], true, true), &[5], true);
    assert_eq!(f.report().usage.map(|u| u.total_tokens), Some(33));
    assert_eq!(f.report().tokens_to_charge(1000), 33);

    let mut f = stream_filter(Shape::Dify);
    drive(&mut f, &dify_sse(&["hi"], true), &[5], true);
    let u = f.report().usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (7, 8, 15)
    );

    let body = json!({"id":"x","object":"chat.completion","choices":[{"index":0,
        "message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}});
    let mut f = ReplyFilter::new(Shape::OpenAi, false, validator(), codes());
    drive(&mut f, body.to_string().as_bytes(), &[9], true);
    assert_eq!(f.report().usage.map(|u| u.total_tokens), Some(3));

    let body = json!({"event":"message","answer":"ok","metadata":{"usage":{"prompt_tokens":4,
        "completion_tokens":5,"total_tokens":9}}});
    let mut f = ReplyFilter::new(Shape::Dify, false, validator(), codes());
    drive(&mut f, body.to_string().as_bytes(), &[], true);
    assert_eq!(f.report().usage.map(|u| u.total_tokens), Some(9));
}

#[test]
fn regression_stream_tokens_charged_without_usage_chunk() {
    // No usage chunk, and the stream is cut: the relayed text is still charged.
    let text = "退款需要七个工作日 and then some more words here";
    let bytes = openai_sse(&[text], false, false);
    let mut f = stream_filter(Shape::OpenAi);
    drive(&mut f, &bytes, &[30], false);
    assert_eq!(f.report().usage, None);
    let want = 50 + crate::budget::estimate_tokens(text);
    assert_eq!(f.report().tokens_to_charge(50), want);
    assert!(want > 50 + 9);
}

#[test]
fn regression_rewritten_body_changes_length() {
    let openai = |content: &str| {
        json!({"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,
            "message":{"role":"assistant","content":content},"finish_reason":"stop"}]})
        .to_string()
    };
    // Longer: a short code becomes the default sentence.
    let input = openai("Use FAKE1 now");
    let mut f = ReplyFilter::new(Shape::OpenAi, false, validator(), codes());
    let (outs, out) = drive(&mut f, input.as_bytes(), &[10, 20], true);
    assert!(
        outs.iter().all(Vec::is_empty),
        "a whole reply goes out at finish"
    );
    assert!(out.len() > input.len());
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("Use {} now", repl())
    );
    assert_eq!(f.report().codes_replaced, 1);
    assert!(f.report().is_clean());

    // Shorter: a long code becomes a short configured sentence (Dify blocking reply).
    let cfg = ValidationConfig {
        replacement: "[invalid]".into(),
        ..Default::default()
    };
    let v = Arc::new(Validator::new(&cfg).unwrap());
    let input = json!({"event":"message","answer":"用VERYLONGCODE2024领取","conversation_id":"c"})
        .to_string();
    let mut f = ReplyFilter::new(Shape::Dify, false, v, codes());
    let (_, out) = drive(&mut f, input.as_bytes(), &[3], true);
    assert!(out.len() < input.len());
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["answer"], "用[invalid]领取");
    assert_eq!(v["conversation_id"], "c");

    // Unchanged replies keep their exact bytes.
    let input = openai("Use SPRING618 now");
    let mut f = ReplyFilter::new(Shape::OpenAi, false, validator(), codes());
    let (_, out) = drive(&mut f, input.as_bytes(), &[], true);
    assert_eq!(out, input.as_bytes());
}

#[test]
fn whole_reply_faults() {
    // Not JSON: passed through unchanged, flagged.
    let mut f = ReplyFilter::new(Shape::OpenAi, false, validator(), codes());
    let (_, out) = drive(&mut f, b"<html>bad gateway FAKE99X</html>", &[], true);
    assert_eq!(out, b"<html>bad gateway FAKE99X</html>");
    assert_eq!(f.report().reason, Some("not_json"));
    assert!(!f.report().is_clean());

    // Truncated JSON although the connection closed cleanly: cut, not passed on.
    let mut f = ReplyFilter::new(Shape::OpenAi, false, validator(), codes());
    let (_, out) = drive(
        &mut f,
        br#"  {"choices":[{"message":{"content":"Use FAKE"#,
        &[],
        true,
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["error"]["code"], "stream_cut");
    assert_eq!(
        (f.report().end.clone(), f.error_status()),
        (End::Cut, Some(502))
    );

    // Cut: an error body the host sends with 502.
    let mut f = ReplyFilter::new(Shape::Dify, false, validator(), codes());
    let (_, out) = drive(&mut f, br#"{"answer":"half"#, &[], false);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["code"], "stream_cut");
    assert_eq!(f.error_status(), Some(502));
    assert_eq!(f.report().end, End::Cut);

    // Too large: bounded, error body.
    let mut f = ReplyFilter::new(Shape::OpenAi, false, validator(), codes());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..5 {
        assert!(f.push(&chunk).is_empty());
    }
    let v: Value = serde_json::from_slice(&f.finish(true)).unwrap();
    assert_eq!(v["error"]["code"], "reply_too_large");
    assert_eq!(f.report().reason, Some("reply_too_large"));

    // Origin error body: unchanged, reported.
    let mut f = ReplyFilter::new(Shape::Dify, false, validator(), codes());
    let body = br#"{"code":"invalid_param","message":"bad query","status":400}"#;
    let (_, out) = drive(&mut f, body, &[], true);
    assert_eq!(out, body);
    assert_eq!(f.report().end, End::OriginError("bad query".into()));
}

#[test]
fn oversized_event_ends_the_stream() {
    let mut f = stream_filter(Shape::OpenAi);
    assert!(!f.push(&openai_sse(&["fine "], false, false)).is_empty());
    let mut big = b"data: {\"x\":\"".to_vec();
    big.resize(MAX_EVENT_BYTES + 10, b'a');
    let out = f.push(&big);
    assert!(String::from_utf8_lossy(&out).contains("reply_too_large"));
    assert!(f.push(b"\n\ndata: [DONE]\n\n").is_empty());
    assert!(f.finish(true).is_empty());
    assert_eq!(f.report().end, End::Cut);
    assert_eq!(f.report().reason, Some("event_too_large"));
}

#[test]
fn other_events_and_line_endings_pass_unchanged() {
    let input =
        b": keep-alive\r\n\r\nevent: ping\r\n\r\nid: 7\ndata: {\"event\":\"workflow_started\"}\n\n";
    for cuts in [vec![], vec![13], vec![14], (0..input.len()).collect()] {
        let mut f = stream_filter(Shape::Dify);
        let (outs, last) = drive(&mut f, input, &cuts, true);
        let all: Vec<u8> = outs.concat();
        assert_eq!(all, input, "{cuts:?}");
        assert!(String::from_utf8_lossy(&last).contains("stream_cut"));
    }
    // CRLF text events are rewritten with their other fields kept.
    let input = "event: message\r\ndata: {\"event\":\"message\",\"answer\":\"FAKE99X!\"}\r\n\r\n";
    let mut f = stream_filter(Shape::Dify);
    let out = f.push(input.as_bytes());
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("event: message\n"), "{s}");
    assert_eq!(
        client_text(Shape::Dify, s.as_bytes()),
        format!("{}!", repl())
    );
}

#[test]
fn validation_off_still_watches_the_stream() {
    let cfg = ValidationConfig {
        enabled: false,
        ..Default::default()
    };
    let v = Arc::new(Validator::new(&cfg).unwrap());
    let bytes = openai_sse(&["FAKE", "99X"], false, false);
    let mut f = ReplyFilter::new(Shape::OpenAi, true, v, codes());
    let (outs, last) = drive(&mut f, &bytes, &[], true);
    assert_eq!(outs.concat(), bytes);
    assert!(String::from_utf8_lossy(&last).contains("stream_cut"));
    assert_eq!(f.report().codes_replaced, 0);
}

/// One piece of generated reply text and what the client must see for it.
fn segment() -> impl Strategy<Value = (String, String, u32)> {
    prop_oneof![
        // A valid code, any case.
        (0..2usize, any::<bool>()).prop_map(|(i, lower)| {
            let c = if lower {
                VALID[i].to_lowercase()
            } else {
                VALID[i].to_owned()
            };
            let shown = c.clone();
            (c, shown, 0)
        }),
        // An invented code.
        "[A-Z]{3,6}[0-9]{2,4}[A-Z]{0,3}".prop_filter_map("valid by chance", |c| {
            (!VALID.contains(&c.as_str())).then(|| (c, repl(), 1))
        }),
        "[0-9]{2,3}OFF|[0-9]{1,3}-DEAL".prop_map(|c| (c, repl(), 1)),
        // Text that is never a code.
        "[a-z]{1,9}".prop_map(|w| (w.clone(), w, 0)),
        "[A-Z]{1,12}".prop_map(|w| (w.clone(), w, 0)),
        "[0-9]{1,8}".prop_map(|w| (w.clone(), w, 0)),
        "[A-Z]{9}[0-9]{8}".prop_map(|w| (w.clone(), w, 0)), // longer than max_len
        "Spring[0-9]{3}".prop_map(|w| (w.clone(), w, 0)),
        "[退款政策优惠码请问您好]{1,6}".prop_map(|w| (w.clone(), w, 0)),
        "[😀🎉👍]{1,3}".prop_map(|w| (w.clone(), w, 0)),
    ]
}

fn separator() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(" ".to_owned()),
        Just("，".to_owned()),
        Just("。".to_owned()),
        Just("! ".to_owned()),
        Just("\n".to_owned()),
        Just("😀".to_owned()),
        Just("\"".to_owned()),
        Just("**".to_owned()),
    ]
}

/// A reply text, the text the client must see, and the number of invalid codes.
fn reply_text() -> impl Strategy<Value = (String, String, u32)> {
    proptest::collection::vec((segment(), separator()), 0..24).prop_map(|parts| {
        let (mut text, mut want, mut n) = (String::new(), String::new(), 0);
        for ((t, w, k), sep) in parts {
            text.push_str(&t);
            text.push_str(&sep);
            want.push_str(&w);
            want.push_str(&sep);
            n += k;
        }
        (text, want, n)
    })
}

/// Cuts `text` into deltas at character boundaries picked by `points`.
fn deltas(text: &str, points: &[usize]) -> Vec<String> {
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).skip(1).collect();
    let mut cuts: Vec<usize> = points
        .iter()
        .filter(|_| !bounds.is_empty())
        .map(|p| bounds[p % bounds.len()])
        .collect();
    cuts.push(0);
    cuts.push(text.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| text[w[0]..w[1]].to_owned())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// The core property: however the origin splits its text into deltas and the network
    /// splits the bytes into reads, the client sees the expected rewritten text, and what it
    /// has seen so far is always a prefix of it.
    #[test]
    fn any_split_gives_the_expected_text(
        (text, want, invalid) in reply_text(),
        delta_points in proptest::collection::vec(any::<usize>(), 0..12),
        byte_cuts in proptest::collection::vec(any::<usize>(), 0..40),
        dify in any::<bool>(),
    ) {
        let shape = if dify { Shape::Dify } else { Shape::OpenAi };
        let d = deltas(&text, &delta_points);
        let refs: Vec<&str> = d.iter().map(String::as_str).collect();
        let bytes = sse_for(shape, &refs);

        let mut whole = stream_filter(shape);
        let (outs, last) = drive(&mut whole, &bytes, &[], true);
        let one: Vec<u8> = outs.concat().into_iter().chain(last).collect();
        prop_assert_eq!(client_text(shape, &one), want.clone());

        let mut split = stream_filter(shape);
        let (outs, last) = drive(&mut split, &bytes, &byte_cuts, true);
        let mut seen = Vec::new();
        for o in outs {
            seen.extend(o);
            let so_far = client_text(shape, &seen);
            prop_assert!(want.starts_with(&so_far), "{:?} is not a prefix of {:?}", so_far, want);
        }
        seen.extend(last);
        prop_assert_eq!(client_text(shape, &seen), want.clone());
        let r = split.report();
        prop_assert_eq!(r.codes_replaced, invalid);
        prop_assert_eq!(&r.end, &End::Complete);
        prop_assert_eq!(&r.text, &want);
        prop_assert_eq!(r.text_chars, want.chars().count());
        prop_assert!(std::str::from_utf8(&seen).is_ok());
    }

    /// Text with nothing code-like passes through byte for byte.
    #[test]
    fn plain_text_streams_unchanged(
        words in proptest::collection::vec("[a-z退款😀]{1,8}[ ，]", 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        dify in any::<bool>(),
    ) {
        let shape = if dify { Shape::Dify } else { Shape::OpenAi };
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let bytes = sse_for(shape, &refs);
        let mut f = stream_filter(shape);
        let (outs, last) = drive(&mut f, &bytes, &cuts, true);
        prop_assert_eq!(outs.concat(), bytes);
        prop_assert!(last.is_empty());
    }

    /// Whole replies: the rewritten text, however the body is split.
    #[test]
    fn whole_reply_any_split(
        (text, want, invalid) in reply_text(),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let body = json!({"choices":[{"index":0,"message":{"role":"assistant","content":text}}]});
        let mut f = ReplyFilter::new(Shape::OpenAi, false, validator(), codes());
        let (_, out) = drive(&mut f, body.to_string().as_bytes(), &cuts, true);
        let v: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some(want.as_str()));
        prop_assert_eq!(f.report().codes_replaced, invalid);
    }

    /// Nothing a misbehaving origin sends makes the filter panic, and the output is bounded.
    #[test]
    fn never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        dify in any::<bool>(),
        stream in any::<bool>(),
        ok in any::<bool>(),
    ) {
        let shape = if dify { Shape::Dify } else { Shape::OpenAi };
        let mut f = ReplyFilter::new(shape, stream, validator(), codes());
        let (outs, last) = drive(&mut f, &bytes, &cuts, ok);
        let n = outs.iter().map(Vec::len).sum::<usize>() + last.len();
        prop_assert!(n <= bytes.len() * 2 + 4096);
        prop_assert!(f.report().end != End::Pending);
    }

    /// Arbitrary text inside well-formed events, including JSON escapes and control
    /// characters, never panics and never loses the stream's structure.
    #[test]
    fn never_panics_on_arbitrary_text(
        d in proptest::collection::vec(any::<String>(), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        dify in any::<bool>(),
    ) {
        let shape = if dify { Shape::Dify } else { Shape::OpenAi };
        let refs: Vec<&str> = d.iter().map(String::as_str).collect();
        let mut f = stream_filter(shape);
        let (outs, last) = drive(&mut f, &sse_for(shape, &refs), &cuts, true);
        let all: Vec<u8> = outs.concat().into_iter().chain(last).collect();
        prop_assert_eq!(&f.report().end, &End::Complete);
        let want = validator().rewrite(&d.concat(), &codes()).0;
        prop_assert_eq!(client_text(shape, &all), want);
    }
}

/// The tree path for a whole OpenAI body, bypassing `openai::check_body`.
fn whole_by_tree(body: &[u8]) -> (Vec<u8>, ReplyReport) {
    let v = validator();
    let c = codes();
    let mut report = ReplyReport::default();
    let mut cx = Ctx {
        v: &v,
        codes: &c,
        report: &mut report,
    };
    let out = match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => match openai::rewrite_body(&mut value, &mut cx) {
            Seen::Terminator if cx.report.codes_replaced > 0 => value.to_string().into_bytes(),
            _ => body.to_vec(),
        },
        Err(_) => body.to_vec(),
    };
    (out, report)
}

#[test]
fn whole_openai_fast_path_agrees_with_the_tree_path() {
    // The fast path must leave the body and the report exactly as the tree path would, or
    // step aside (`None`) and leave the report untouched.
    let bodies: Vec<Value> = vec![
        json!({"id":"a","choices":[{"index":0,"message":{"role":"assistant","content":"Use SPRING618 today."}}],
               "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":3}}),
        json!({"choices":[{"message":{"content":"Try FAKE2024X now"}}]}),
        json!({"choices":[{"index":1,"message":{"content":"second"}},{"index":0,"message":{"content":null}}],
               "usage":{"prompt_tokens":5}}),
        json!({"choices":null,"usage":null}),
        json!({"choices":[{"index":"0","message":{"content":"x"}}]}),
        json!({"choices":[{"message":{"content":[{"type":"text","text":"multi"}]}}]}),
        json!({"choices":[{"message":"plain"}]}),
        json!({"error":null,"choices":[]}),
        json!({"usage":{"prompt_tokens":1.5},"choices":[]}),
        json!([1, 2, 3]),
        json!({"choices":[{"message":{"content":"Escaped \"quote\" and é"}}]}),
    ];
    for b in bodies {
        let bytes = b.to_string().into_bytes();
        let (want_out, want) = whole_by_tree(&bytes);
        let v = validator();
        let c = codes();
        let mut report = ReplyReport::default();
        let mut cx = Ctx {
            v: &v,
            codes: &c,
            report: &mut report,
        };
        match openai::check_body(&bytes, &mut cx) {
            Some(_) => {
                assert_eq!(bytes, want_out, "{b}");
                assert_eq!(report, want, "{b}");
            }
            None => assert_eq!(report, ReplyReport::default(), "{b}"),
        }
        // And through the filter, whichever path it takes.
        let mut f = ReplyFilter::new(Shape::OpenAi, false, validator(), codes());
        let _ = f.push(&bytes);
        let out = f.finish(true);
        assert_eq!(out, want_out, "{b}");
        assert_eq!(f.report().usage, want.usage, "{b}");
        assert_eq!(f.report().text, want.text, "{b}");
        assert_eq!(f.report().codes_replaced, want.codes_replaced, "{b}");
    }
    // A repeated key takes the tree path (serde_json keeps the last value there).
    let dup = br#"{"choices":[],"choices":[{"message":{"content":"FAKE2024X"}}]}"#;
    let v = validator();
    let c = codes();
    let mut report = ReplyReport::default();
    let mut cx = Ctx {
        v: &v,
        codes: &c,
        report: &mut report,
    };
    assert!(openai::check_body(dup, &mut cx).is_none());
}
