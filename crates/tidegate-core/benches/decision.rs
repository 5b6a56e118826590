//! The core's decision time per request: stage 1 (admit) + stage 2 (plan) against the demo
//! knowledge base, for a FAQ hit and for a request forwarded to the origin; and the reply
//! filter over a streamed answer. Run: `cargo bench -p tidegate-core --bench decision`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidegate_core::config::Config;
use tidegate_core::faq::{build_artifact, KnowledgeBase};
use tidegate_core::gateway::{Challenge, Gateway, Plan, RequestFacts};
use tidegate_core::reply::{CodeSet, ReplyFilter, ValidationConfig, Validator};
use tidegate_core::request::Shape;
use tidegate_core::store::MemoryStore;
use tidegate_core::UnixMs;

fn setup() -> (Gateway, KnowledgeBase) {
    let cfg = Config::from_toml(
        "[client]\ntrusted_proxies = [\"127.0.0.1\"]\n[limits.user]\nlimit = 1000000000\n\
         [limits.ip]\nlimit = 1000000000\n[limits.origin]\nlimit = 1000000000\n",
    )
    .unwrap();
    let kb = build_artifact(include_str!("../../../kb/demo.jsonl")).unwrap();
    (
        Gateway::new(cfg).unwrap(),
        KnowledgeBase::from_artifact(&kb).unwrap(),
    )
}

fn decide(g: &Gateway, s: &MemoryStore, kb: &KnowledgeBase, body: &[u8], i: u64) -> bool {
    let user = format!("user-{}", i % 1000);
    let facts = RequestFacts {
        path: "/v1/chat/completions",
        peer: IpAddr::from([127, 0, 0, 1]),
        forwarded_for: Some("198.51.100.7"),
        user: Some(&user),
        conversation: None,
        body,
        now: UnixMs(1_796_316_540_000 + i),
    };
    let a = g.admit(s, &facts).unwrap();
    matches!(
        g.plan(s, &a, Some(kb), None, &Challenge::Passed, facts.now),
        Plan::Answer(_)
    )
}

fn bench_decision(c: &mut Criterion) {
    let (g, kb) = setup();
    let s = MemoryStore::new();
    let hit = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are the support assistant of an online coding school."},{"role":"user","content":"How do I get a refund?"}]}"#;
    let miss = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are the support assistant of an online coding school."},{"role":"user","content":"Can you explain how recursion works in Python?"}]}"#;
    let mut i = 0u64;
    assert!(decide(&g, &s, &kb, hit, 0));
    assert!(!decide(&g, &s, &kb, miss, 0));
    c.bench_function("decision/faq_hit", |b| {
        b.iter(|| {
            i += 1;
            decide(&g, &s, &kb, hit, i)
        })
    });
    c.bench_function("decision/forward", |b| {
        b.iter(|| {
            i += 1;
            decide(&g, &s, &kb, miss, i)
        })
    });
}

fn bench_reply(c: &mut Criterion) {
    let v = Arc::new(Validator::new(&ValidationConfig::default()).unwrap());
    let codes = Arc::new(CodeSet::parse("SPRING618\nGROUP3"));
    let mut stream = String::new();
    for k in 0..200 {
        let word = if k % 50 == 7 { "FAKE2024X " } else { "lesson " };
        let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
        stream.push_str(&format!("data: {chunk}\n\n"));
    }
    stream.push_str("data: [DONE]\n\n");
    let bytes = stream.into_bytes();
    let mut g = c.benchmark_group("reply");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("openai_stream_200_chunks", |b| {
        b.iter(|| {
            let mut f = ReplyFilter::new(Shape::OpenAi, true, v.clone(), codes.clone());
            let mut n = 0;
            for piece in bytes.chunks(97) {
                n += f.push(piece).len();
            }
            n + f.finish(true).len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decision, bench_reply);
criterion_main!(benches);
