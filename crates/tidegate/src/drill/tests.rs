//! A short drill end to end, checked against what the stand-in origin saw.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use serde_json::Value;

use super::client::Got;
use super::scorecard::{self, handed_over, is_customer, reached_origin};
use super::{execute, DrillArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_drill_figures_match_the_origin_and_the_clients() {
    let args = DrillArgs {
        duration: 6.0,
        scale: 0.3,
        origin_latency_ms: 150,
        quiet: true,
        ..DrillArgs::defaults()
    };
    let out = execute(&args).await.unwrap();
    let recs = &out.records;
    let card = &out.card;
    assert!(recs.len() > 100, "only {} requests", recs.len());

    // Asked independently of the drill, after it finished.
    let calls: Value = reqwest::get(format!("{}/mock/calls", out.stack.mock))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Every request the clients saw reach the origin was counted there, once.
    let reached = recs.iter().filter(|r| reached_origin(r)).count() as u64;
    assert_eq!(calls["chat_total"].as_u64(), Some(reached));
    assert_eq!(
        card.crosscheck["origin_calls_counted_by_origin"],
        Some(reached)
    );

    // Handoffs: exactly once per conversation, and the same conversations the clients saw.
    let toggles = calls["toggle_status"].as_object().unwrap();
    assert!(
        toggles.values().all(|n| n.as_u64() == Some(1)),
        "{toggles:?}"
    );
    let chatwoot: BTreeSet<&str> = toggles.keys().map(String::as_str).collect();
    let clients: BTreeSet<&str> = recs
        .iter()
        .filter(|r| handed_over(r.got))
        .filter_map(|r| r.conversation.as_deref())
        .collect();
    assert_eq!(chatwoot, clients);

    // The JSON says what the records say.
    let json = scorecard::to_json(card);
    assert_eq!(json["requests"].as_u64(), Some(recs.len() as u64));
    let nothing = recs.iter().filter(|r| r.got == Got::Nothing).count() as f64;
    let downtime = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "Downtime (no answer at all)")
        .unwrap();
    assert_eq!(downtime["value"].as_f64(), Some(nothing));
    let customers = recs.iter().filter(|r| is_customer(r)).count() as u64;
    let got_sum: u64 = json["customer_got"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(got_sum, customers);
    let faq = recs.iter().filter(|r| r.got == Got::Faq).count() as f64;
    assert_eq!(json["cache"]["faq_answers_all"].as_f64(), Some(faq));

    // Nothing the origin invented reached a client; the valid codes did.
    assert!(recs.iter().all(|r| !r.code_leaked));
    assert_eq!(json["codes"]["leaked"].as_u64(), Some(0));
    assert!(recs.iter().all(|r| r.valid_code_kept != Some(false)));

    // Out-of-scope questions served from the cache are counted honestly, and stay rare: the
    // matcher's false-serve rate on held-out should-miss queries is under 1% (issue #4
    // measures it with `tidegate kb eval`); a drill of a few hundred questions may see one.
    let oos_asked = recs
        .iter()
        .filter(|r| is_customer(r) && r.expected.is_none())
        .count();
    let oos_served = recs
        .iter()
        .filter(|r| r.got == Got::Faq && r.expected.is_none())
        .count();
    assert_eq!(
        json["cache"]["should_miss_served_from_cache"].as_f64(),
        Some(oos_served as f64)
    );
    assert!(
        oos_served * 50 <= oos_asked.max(50),
        "{oos_served} of {oos_asked} out-of-scope served"
    );

    // First response figures are computed from the customers' own timings.
    let mut frt: Vec<u64> = recs
        .iter()
        .filter(|r| is_customer(r))
        .filter_map(|r| r.first_text_ms)
        .collect();
    frt.sort_unstable();
    let p95 = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "First response P95")
        .unwrap()["value"]
        .as_f64()
        .unwrap();
    assert_eq!(
        p95,
        scorecard::percentile(&frt, 95.0).unwrap() as f64 / 1000.0
    );
}
