//! Matching one query against a 1,000-entry knowledge base, and loading its artefact.
//!
//! The knowledge base is built from the banking77 phrasings in `data/banking77/kb-all.jsonl`
//! (6,998 real customer questions) dealt round-robin into 1,000 entries of about seven
//! phrasings each, so the vocabulary and posting lists are those of real support text.
//! Run: `cargo bench -p tidegate-core --bench faq`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tidegate_core::faq::normalize::normalize;
use tidegate_core::faq::{build_artifact, FaqConfig, KnowledgeBase};

const SOURCE: &str = include_str!("../../../data/banking77/kb-all.jsonl");
const ENTRIES: usize = 1000;

fn thousand_entry_artifact() -> Vec<u8> {
    let mut phrasings: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in SOURCE.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for q in v["questions"].as_array().unwrap() {
            let q = q.as_str().unwrap();
            // Phrasings equal after normalisation may not go to two entries.
            if seen.insert(normalize(q)) {
                phrasings.push(q.to_owned());
            }
        }
    }
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); ENTRIES];
    for (i, p) in phrasings.into_iter().enumerate() {
        groups[i % ENTRIES].push(p);
    }
    let mut src = String::new();
    for (i, g) in groups.into_iter().enumerate() {
        let line = serde_json::json!({
            "id": format!("entry-{i}"),
            "questions": g,
            "answer": format!("Answer number {i}, about as long as a real FAQ answer is on a sale day."),
        });
        src.push_str(&line.to_string());
        src.push('\n');
    }
    build_artifact(&src).unwrap()
}

fn bench(c: &mut Criterion) {
    let artifact = thousand_entry_artifact();
    let kb = KnowledgeBase::from_artifact(&artifact).unwrap();
    assert_eq!(kb.len(), ENTRIES);
    eprintln!("1,000-entry artefact: {} bytes", artifact.len());
    let cfg = FaqConfig::default();
    // `FAQ_LOOPS=N FAQ_QUERY=TEXT`: time N lookups of one question outside criterion and exit
    // (run it under `perf stat -e task-clock` for CPU time on a shared machine).
    if let Ok(n) = std::env::var("FAQ_LOOPS") {
        let n: usize = n.parse().unwrap();
        let q = std::env::var("FAQ_QUERY").unwrap();
        let t = std::time::Instant::now();
        for _ in 0..n {
            black_box(kb.lookup(black_box(&q), None, &cfg));
        }
        eprintln!(
            "{:.2} us per lookup",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
        std::process::exit(0);
    }
    c.bench_function("faq/lookup 1000 entries (en)", |b| {
        b.iter(|| {
            kb.lookup(
                black_box("I still haven't received my new card, what can I do?"),
                None,
                &cfg,
            )
        })
    });
    c.bench_function("faq/lookup 1000 entries (short)", |b| {
        b.iter(|| kb.lookup(black_box("card declined"), None, &cfg))
    });
    c.bench_function("faq/lookup 1000 entries (zh, no match)", |b| {
        b.iter(|| kb.lookup(black_box("我的卡还没有收到，怎么办？"), None, &cfg))
    });
    c.bench_function("faq/load 1000-entry artefact", |b| {
        b.iter(|| KnowledgeBase::from_artifact(black_box(&artifact)).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
