//! The three gateway stages driven with a fake clock and an in-memory store, as every host
//! drives them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use tidegate_core::config::Config;
use tidegate_core::faq::{build_artifact, KnowledgeBase};
use tidegate_core::gateway::{Challenge, Gateway, OriginOutcome, Plan, RequestFacts};
use tidegate_core::store::MemoryStore;
use tidegate_core::{Reason, UnixMs};

const T0: UnixMs = UnixMs(1_796_316_540_000);

fn gw(extra: &str) -> Gateway {
    let doc = format!(
        "[client]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [handoff]\nchatwoot_url = \"http://cw\"\nchatwoot_token = \"t\"\n{extra}"
    );
    Gateway::new(Config::from_toml(&doc).unwrap()).unwrap()
}

fn body(q: &str, stream: bool) -> Vec<u8> {
    serde_json::json!({"model": "gpt-4o", "stream": stream,
        "messages": [{"role": "user", "content": q}]})
    .to_string()
    .into_bytes()
}

fn facts<'a>(b: &'a [u8], user: &'a str, conv: Option<&'a str>, now: UnixMs) -> RequestFacts<'a> {
    RequestFacts {
        path: "/v1/chat/completions",
        peer: "127.0.0.1".parse::<IpAddr>().unwrap(),
        forwarded_for: Some("198.51.100.4"),
        user: Some(user),
        conversation: conv,
        body: b,
        now,
    }
}

fn kb() -> KnowledgeBase {
    let jsonl = r#"{"id":"refund-window","questions":["How long do I have to ask for a refund?","What is the refund window?"],"answer":"You can ask for a refund within 14 days."}
{"id":"group-buying","questions":["How does group buying work?","Can I buy a course with friends for a discount?"],"answer":"Groups of three get 30% off."}"#;
    KnowledgeBase::from_artifact(&build_artifact(jsonl).unwrap()).unwrap()
}

#[test]
fn user_limit_trips_with_headers_and_refills_on_the_fake_clock() {
    let g = gw("");
    let s = MemoryStore::new();
    let b = body("hello there", false);
    for _ in 0..10 {
        g.admit(&s, &facts(&b, "u1", None, T0)).unwrap();
    }
    let r = g.admit(&s, &facts(&b, "u1", None, T0)).unwrap_err();
    assert_eq!(r.problem.status, 429);
    assert_eq!(r.problem.code, "user_limited");
    assert_eq!(r.problem.retry_after, Some(6));
    let h = tidegate_core::gateway::response_headers(
        &r.limits,
        Reason::UserLimited,
        None,
        r.problem.retry_after,
    );
    let get = |k: &str| {
        h.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        get("ratelimit-policy"),
        "\"ip\";q=30;w=60, \"user\";q=10;w=60"
    );
    assert!(get("ratelimit").contains("\"user\";r=0;t=6"));
    assert_eq!(get("retry-after"), "6");
    // Another user behind the same IP is not affected; the first refills after 6 s.
    assert!(g.admit(&s, &facts(&b, "u2", None, T0)).is_ok());
    assert!(g
        .admit(&s, &facts(&b, "u1", None, T0.plus_ms(6_000)))
        .is_ok());
}

#[test]
fn faq_answers_without_the_origin_and_counts_hits() {
    let g = gw("");
    let s = MemoryStore::new();
    let kb = kb();
    let b = body("what is the refund window?", true);
    let a = g.admit(&s, &facts(&b, "u1", None, T0)).unwrap();
    let Plan::Answer(ans) = g.plan(&s, &a, Some(&kb), None, &Challenge::Passed, T0) else {
        panic!("expected a FAQ answer")
    };
    assert_eq!(ans.reason, Reason::FaqHit);
    assert_eq!(ans.faq_id.as_deref(), Some("refund-window"));
    assert!(ans.reply.body.contains("14 days") && ans.reply.body.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        s.scan("faqhits:"),
        vec![("faqhits:refund-window".to_owned(), 1)]
    );
}

#[test]
fn failed_challenge_still_gets_faq_but_never_the_origin() {
    let g = gw("");
    let s = MemoryStore::new();
    let kb = kb();
    let failed = Challenge::Failed(vec!["invalid-input-response".into()]);
    let b = body("what is the refund window?", false);
    let a = g.admit(&s, &facts(&b, "u1", None, T0)).unwrap();
    assert!(matches!(
        g.plan(&s, &a, Some(&kb), None, &failed, T0),
        Plan::Answer(_)
    ));
    let b = body("tell me a story about dragons", false);
    let a = g.admit(&s, &facts(&b, "u1", None, T0)).unwrap();
    let Plan::Refuse(r) = g.plan(&s, &a, Some(&kb), None, &failed, T0) else {
        panic!("expected the challenge fallback")
    };
    assert_eq!(r.problem.code, "challenge_failed");
    assert_eq!(r.problem.still_available, vec!["faq", "retry", "handoff"]);
}

#[test]
fn tier_flag_rewrites_the_model_and_streams_ask_for_usage() {
    let g = gw("");
    let s = MemoryStore::new();
    let b = body("explain recursion", true);
    let a = g.admit(&s, &facts(&b, "u1", None, T0)).unwrap();
    let Plan::Forward(f) = g.plan(&s, &a, None, Some("economy"), &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    let sent: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let Plan::Forward(f) = g.plan(&s, &a, None, Some("bogus"), &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    assert_eq!(
        f.route.model, "gpt-4o",
        "an unknown flag value keeps the normal tier"
    );
}

#[test]
fn spent_budget_goes_cache_only_with_one_handoff() {
    let g = gw("[budget]\nmonthly_tokens = 50");
    let s = MemoryStore::new();
    let kb = kb();
    let b = body("please explain my invoice in great detail", true);
    let a = g.admit(&s, &facts(&b, "u1", Some("77"), T0)).unwrap();
    let Plan::Forward(f) = g.plan(&s, &a, Some(&kb), None, &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    // A streamed reply without usage is charged from its text; it spends the budget.
    let out = OriginOutcome {
        tokens: 80,
        complete: true,
        dont_know: false,
    };
    assert_eq!(g.settle(&s, &a, &f, &out, T0), Default::default());
    let a = g.admit(&s, &facts(&b, "u1", Some("77"), T0)).unwrap();
    let Plan::Answer(ans) = g.plan(&s, &a, Some(&kb), None, &Challenge::Passed, T0) else {
        panic!("expected cache-only")
    };
    assert_eq!(ans.reason, Reason::BudgetSpent);
    assert!(ans.handoff.is_some() && ans.handed_off);
    // FAQ answers still flow for everyone else.
    let q = body("What is the refund window?", false);
    let a = g.admit(&s, &facts(&q, "u2", None, T0)).unwrap();
    assert!(matches!(
        g.plan(&s, &a, Some(&kb), None, &Challenge::Passed, T0),
        Plan::Answer(x) if x.reason == Reason::FaqHit
    ));
    // The handed-off conversation is silent from now on.
    let r = g.admit(&s, &facts(&b, "u1", Some("77"), T0)).unwrap_err();
    assert_eq!(r.problem.code, "handed_off");
}

#[test]
fn regression_origin_retry_after_http_date_is_read_as_a_date() {
    // Fault class: an upstream Retry-After sent as an HTTP date is misread.
    let g = gw("");
    let s = MemoryStore::new();
    let b = body("hi", false);
    let a = g.admit(&s, &facts(&b, "u1", None, T0)).unwrap();
    let Plan::Forward(f) = g.plan(&s, &a, None, None, &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    // T0 is Thu, 03 Dec 2026 16:49:00 GMT; the origin says retry at 16:50:30.
    let date = "Thu, 03 Dec 2026 16:50:30 GMT";
    let Plan::Refuse(r) = g.origin_failed(&s, &a, &f, Some(429), Some(date), T0) else {
        panic!("expected a 503")
    };
    assert_eq!((r.problem.status, r.problem.retry_after), (503, Some(90)));
    // A 500 hands over instead (once).
    let Plan::Answer(ans) = g.origin_failed(&s, &a, &f, Some(500), None, T0) else {
        panic!("expected the template")
    };
    assert_eq!(ans.reason, Reason::Handoff);
}

#[test]
fn origin_cap_queues_then_refuses_with_retry_after() {
    let g = gw("[limits.origin]\nlimit = 2\nwindow_secs = 1\nmax_wait_ms = 500");
    let s = MemoryStore::new();
    let b = body("hi", false);
    let mut delays = Vec::new();
    let mut refused = None;
    for i in 0..5 {
        let a = g.admit(&s, &facts(&b, &format!("u{i}"), None, T0)).unwrap();
        match g.plan(&s, &a, None, None, &Challenge::Passed, T0) {
            Plan::Forward(f) => delays.push(f.delay_ms),
            Plan::Refuse(r) => refused = Some(r),
            Plan::Answer(_) => panic!("no answer expected"),
        }
    }
    assert_eq!(delays, vec![0, 0, 500]);
    let r = refused.unwrap();
    assert_eq!((r.problem.status, r.problem.code), (503, "origin_capped"));
    assert!(r.problem.retry_after.unwrap() >= 1);
}

// Found by testing: `max_wait_ms` on the user (or IP) limit admitted a burst for later slots
// but only the origin cap's wait was applied, so 10 requests of a 5-per-10-s user reached the
// origin at once.
#[test]
fn regression_user_and_ip_queues_delay_the_forwarded_request() {
    let g = gw(
        "[limits.user]\nlimit = 2\nwindow_secs = 10\nmax_wait_ms = 10000\n\
                [limits.ip]\nlimit = 0\n[limits.origin]\nlimit = 0",
    );
    let s = MemoryStore::new();
    let b = body("hi", false);
    let mut delays = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        match g.admit(&s, &facts(&b, "u1", None, T0)) {
            Ok(a) => match g.plan(&s, &a, None, None, &Challenge::Passed, T0) {
                Plan::Forward(f) => delays.push(f.delay_ms),
                other => panic!("expected a forward, got {other:?}"),
            },
            Err(_) => refused += 1,
        }
    }
    // Two at once, then one slot every 5 s for the 10 s the queue may wait.
    assert_eq!(delays, vec![0, 0, 5_000, 10_000]);
    assert_eq!(refused, 2);
}

#[test]
fn oversized_and_malformed_bodies_are_clear_errors() {
    let cfg = "[client]\nmax_body_bytes = 256\ntrusted_proxies = [\"127.0.0.1\"]";
    let g = Gateway::new(Config::from_toml(cfg).unwrap()).unwrap();
    let s = MemoryStore::new();
    let big = body(&"x".repeat(300), false);
    assert_eq!(
        g.admit(&s, &facts(&big, "u", None, T0))
            .unwrap_err()
            .problem
            .status,
        413
    );
    let r = g
        .admit(&s, &facts(b"{\"messages\":", "u", None, T0))
        .unwrap_err();
    assert_eq!((r.problem.status, r.problem.code), (400, "bad_request"));
}

#[test]
fn regression_the_origin_sees_the_limited_identity_not_the_body_user() {
    // Found by testing: a client limited as "bob" could ask Dify as "victim".
    let g = gw("");
    let s = MemoryStore::new();
    let b =
        br#"{"query":"explain recursion","user":"victim","response_mode":"blocking","inputs":{}}"#;
    let f = RequestFacts {
        path: "/v1/chat-messages",
        ..facts(b, "bob", None, T0)
    };
    let a = g.admit(&s, &f).unwrap();
    let Plan::Forward(fw) = g.plan(&s, &a, None, None, &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    let sent: serde_json::Value = serde_json::from_slice(&fw.body).unwrap();
    assert_eq!(sent["user"], "bob");
}

#[test]
fn an_undelivered_handoff_gives_the_conversation_back() {
    let g = gw("");
    let s = MemoryStore::new();
    let b = body("where is my certificate", false);
    let a = g.admit(&s, &facts(&b, "u1", Some("88"), T0)).unwrap();
    let Plan::Forward(f) = g.plan(&s, &a, None, None, &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    let Plan::Answer(ans) = g.origin_failed(&s, &a, &f, Some(502), None, T0) else {
        panic!("expected the template")
    };
    assert_eq!(ans.conversation.as_deref(), Some("u:u1/88"));
    assert!(
        g.admit(&s, &facts(&b, "u1", Some("88"), T0)).is_err(),
        "silent while handed off"
    );
    // Found by testing: the mark was kept by conversation id alone, so any client could
    // silence anyone's conversation by sending its (sequential) id and a failing question.
    assert!(
        g.admit(&s, &facts(&b, "u2", Some("88"), T0)).is_ok(),
        "another client's conversation 88 is not silenced"
    );
    tidegate_core::handoff::release(&s, "u:u1/88").unwrap();
    assert!(
        g.admit(&s, &facts(&b, "u1", Some("88"), T0)).is_ok(),
        "back with the bot"
    );
}

#[test]
fn a_whole_reply_that_is_not_an_answer_becomes_the_template_and_is_still_charged() {
    let g = gw("[budget]\nmonthly_tokens = 1000");
    let s = MemoryStore::new();
    let b = body("what is the meaning of life", false);
    let a = g.admit(&s, &facts(&b, "u1", Some("91"), T0)).unwrap();
    let Plan::Forward(f) = g.plan(&s, &a, None, None, &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    let good = OriginOutcome {
        tokens: 40,
        complete: true,
        dont_know: false,
    };
    assert!(
        g.finish_whole(&s, &a, &f, &good, T0).is_none(),
        "a real answer is relayed"
    );
    let Plan::Forward(f) = g.plan(&s, &a, None, None, &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    let dont_know = OriginOutcome {
        tokens: 30,
        complete: true,
        dont_know: true,
    };
    let Some(Plan::Answer(ans)) = g.finish_whole(&s, &a, &f, &dont_know, T0) else {
        panic!("expected the template")
    };
    assert_eq!(ans.reason, Reason::Handoff);
    assert!(ans.handed_off);
    let spent = tidegate_core::budget::status(&s, T0, 1000).unwrap().spent;
    assert_eq!(spent, 70, "both replies charged, reservations returned");
}

#[test]
fn only_limit_cells_in_the_past_are_idle() {
    use tidegate_core::gateway::is_idle_cell;
    let now = T0;
    let past = now.as_nanos() - 1;
    let future = now.as_nanos() + 1;
    assert!(is_idle_cell("user:bob", past, now));
    assert!(is_idle_cell("origin", past, now));
    assert!(!is_idle_cell("ip:1.2.3.4", future, now));
    for key in [
        "budget:2026-12",
        "challenge:u:bob",
        "handoff:42",
        "faqhits:refund",
    ] {
        assert!(!is_idle_cell(key, 0, now), "{key} must be kept");
    }
}

#[test]
fn regression_the_usage_chunk_is_hidden_only_when_the_gateway_asked_for_it() {
    // A tester's streaming client, which never asked for usage, got a chunk with empty
    // `choices` (the gateway asks the origin for usage to charge the budget exactly).
    let g = gw("");
    let s = MemoryStore::new();
    let plan = |b: &[u8], user: &str| {
        let a = g.admit(&s, &facts(b, user, None, T0)).unwrap();
        match g.plan(&s, &a, None, None, &Challenge::Passed, T0) {
            Plan::Forward(f) => f,
            other => panic!("expected a forward, got {other:?}"),
        }
    };
    let f = plan(&body("tell me about generators", true), "u1");
    assert!(f.usage_added);
    let origin: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
    assert_eq!(origin["stream_options"]["include_usage"], true);
    let asked = br#"{"stream":true,"stream_options":{"include_usage":true},
        "messages":[{"role":"user","content":"tell me about generators"}]}"#;
    assert!(
        !plan(asked, "u2").usage_added,
        "the client asked: it gets the chunk"
    );
    assert!(!plan(&body("tell me about generators", false), "u3").usage_added);
}

#[test]
fn regression_an_id_chatwoot_cannot_take_is_not_silenced() {
    // A tester's conversation `convX-1` got the template and then 409 for good: the claim was
    // made, but no toggle_status call can name a non-numeric conversation.
    let g = gw("");
    let s = MemoryStore::new();
    let b = body("where is my certificate", false);
    let a = g.admit(&s, &facts(&b, "u1", Some("convX-1"), T0)).unwrap();
    let Plan::Forward(f) = g.plan(&s, &a, None, None, &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    let Plan::Answer(ans) = g.origin_failed(&s, &a, &f, Some(502), None, T0) else {
        panic!("expected the template")
    };
    assert!(ans.handoff.is_none() && !ans.handed_off);
    assert!(
        g.admit(&s, &facts(&b, "u1", Some("convX-1"), T0)).is_ok(),
        "the bot keeps answering"
    );
    // Without Chatwoot, the header tells the client app, which owns the human side.
    let g =
        Gateway::new(Config::from_toml("[client]\ntrusted_proxies = [\"127.0.0.1\"]\n").unwrap())
            .unwrap();
    let a = g.admit(&s, &facts(&b, "u2", Some("convY"), T0)).unwrap();
    let Plan::Forward(f) = g.plan(&s, &a, None, None, &Challenge::Passed, T0) else {
        panic!("expected a forward")
    };
    let Plan::Answer(ans) = g.origin_failed(&s, &a, &f, Some(502), None, T0) else {
        panic!("expected the template")
    };
    assert!(ans.handed_off);
}
