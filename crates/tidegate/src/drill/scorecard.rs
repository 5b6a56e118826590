//! The scorecard: every figure computed from the client records, laid out like the case
//! study's table (target, their day, this drill), plus the stand-in origin's own counts as a
//! cross-check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::client::{Got, Record};
use super::profile;
use super::workload::Who;
use super::ProfileName;

/// A change of the gateway's tier flags, as the drill saw it.
#[derive(Clone, Debug, Serialize)]
pub struct TierEvent {
    /// Ms since the drill started.
    pub at_ms: u64,
    /// `recommended` (KV `tier_recommended`) or `active` (KV `tier`).
    pub kind: &'static str,
    /// The tier.
    pub tier: String,
}

/// What the drill knows besides the records.
#[derive(Debug)]
pub struct Context {
    /// Profile run.
    pub profile: ProfileName,
    /// Planned duration, s.
    pub duration_s: f64,
    /// Actual time from first send to the end of the schedule, s.
    pub elapsed_s: f64,
    /// Traffic scale.
    pub scale: f64,
    /// Query-mix seed.
    pub seed: u64,
    /// Gateway URL.
    pub gateway: String,
    /// Origin URL.
    pub origin: String,
    /// Knowledge base description.
    pub kb: String,
    /// Token budget the drill configured.
    pub budget_configured: Option<u64>,
    /// Requests not sent because the load generator was at `--max-in-flight`.
    pub not_sent: u64,
    /// Tier flag changes.
    pub tier_events: Vec<TierEvent>,
    /// `GET /mock/calls` after the run.
    pub mock_calls: Option<Value>,
    /// `GET /admin/budget` after the run.
    pub budget: Option<Value>,
}

/// One line of the main table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Metric name.
    pub metric: &'static str,
    /// The case study's target.
    pub target: &'static str,
    /// The case study's actual figure.
    pub case_study: &'static str,
    /// This drill's figure, formatted.
    pub actual: String,
    /// The figure as a number (share 0..1, seconds, or a count).
    pub value: Option<f64>,
    /// Whether the target was met (`None`: no data).
    pub met: Option<bool>,
}

/// Refusals and other non-answers by layer and by who received them.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    /// HTTP status.
    pub status: u16,
    /// Stable reason (`ip_limited`, `origin_capped`, ...).
    pub code: String,
    /// The policy the problem named.
    pub policy: Option<String>,
    /// Counts by sender kind.
    pub by_who: BTreeMap<String, u64>,
    /// Total.
    pub total: u64,
    /// How many carried `Retry-After`.
    pub with_retry_after: u64,
}

/// A tier change, with the day clock.
#[derive(Clone, Debug, Serialize)]
pub struct TierLine {
    /// Ms since the drill started.
    pub at_ms: u64,
    /// Day clock (`HH:MM`), for the day profile.
    pub clock: String,
    /// `recommended` or `active`.
    pub kind: &'static str,
    /// The tier.
    pub tier: String,
}

/// One second of the drill.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bucket {
    /// Second since the start.
    pub t: u64,
    /// Requests sent in that second.
    pub sent: u64,
    /// Answers by kind, for requests sent in that second.
    pub got: BTreeMap<String, u64>,
    /// First-response p50, ms.
    pub p50_ms: Option<u64>,
    /// First-response p95, ms.
    pub p95_ms: Option<u64>,
    /// Requests that reached the origin (client view).
    pub origin: u64,
    /// The tier the last reply of that second carried.
    pub tier: Option<String>,
}

/// A baseline step.
#[derive(Clone, Debug, Serialize)]
pub struct StepRow {
    /// Step name.
    pub step: &'static str,
    /// Virtual users.
    pub users: u64,
    /// Requests.
    pub requests: u64,
    /// Answered (FAQ, LLM, template).
    pub answered: u64,
    /// No answer or refused.
    pub errors: u64,
    /// First response avg, ms.
    pub avg_ms: Option<f64>,
    /// p95, ms.
    pub p95_ms: Option<u64>,
    /// p99, ms.
    pub p99_ms: Option<u64>,
    /// `holds`, `slow` (p95 over 5 s) or `errors`.
    pub verdict: &'static str,
}

/// Every figure of a drill.
#[derive(Clone, Debug, Serialize)]
pub struct Scorecard {
    /// `day` or `baseline`.
    pub profile: &'static str,
    /// Planned duration, s.
    pub duration_s: f64,
    /// Actual schedule time, s.
    pub elapsed_s: f64,
    /// Traffic scale.
    pub scale: f64,
    /// Seed.
    pub seed: u64,
    /// Gateway URL.
    pub gateway: String,
    /// Origin URL.
    pub origin: String,
    /// Knowledge base.
    pub kb: String,
    /// Requests sent.
    pub requests: u64,
    /// Requests by sender kind.
    pub by_who: BTreeMap<String, u64>,
    /// Customer conversations.
    pub conversations: u64,
    /// Peak client QPS (one-second buckets).
    pub peak_qps: u64,
    /// Requests the load generator could not send (at `--max-in-flight`).
    pub not_sent: u64,
    /// The main table.
    pub rows: Vec<Row>,
    /// What customers got, by kind.
    pub customer_got: BTreeMap<String, u64>,
    /// Refusals by layer.
    pub layers: Vec<LayerRow>,
    /// Tier changes.
    pub tiers: Vec<TierLine>,
    /// Alerts the gateway posted (from the origin's alert sink).
    pub alerts: Vec<Value>,
    /// Figures about the cache.
    pub cache: BTreeMap<&'static str, f64>,
    /// Figures about tokens and LLM calls.
    pub tokens: BTreeMap<&'static str, f64>,
    /// Figures about invented promo codes.
    pub codes: BTreeMap<&'static str, u64>,
    /// Figures about the bot challenge.
    pub challenge: BTreeMap<&'static str, u64>,
    /// Client counts beside the origin's own.
    pub crosscheck: BTreeMap<&'static str, Option<u64>>,
    /// Per-second timeline.
    pub timeline: Vec<Bucket>,
    /// Baseline steps (baseline profile only).
    pub baseline: Vec<StepRow>,
    /// The first baseline step that did not hold.
    pub breaks_at: Option<&'static str>,
}

/// The name of a baseline step.
pub fn step_name(step: u32) -> &'static str {
    match step {
        500 => "500 chats",
        1_000 => "1,000 chats",
        2_000 => "2,000 chats",
        5_000 => "5,000 chats",
        10_000 => "10,000 chats",
        _ => "step",
    }
}

fn who_name(w: Who) -> &'static str {
    match w {
        Who::Customer => "customer",
        Who::WidgetFailed => "customer_widget_failed",
        Who::Bot => "bot",
        Who::Hammer => "hammering_ip",
        Who::Burster => "bursting_user",
    }
}

fn got_name(g: Got) -> &'static str {
    match g {
        Got::Faq => "faq",
        Got::Llm => "llm",
        Got::DontKnow => "llm_dont_know_handoff",
        Got::Template => "template_handoff",
        Got::HandedOff => "silent_after_handoff",
        Got::Broken => "error_event_handoff",
        Got::Refused => "refused_with_retry",
        Got::Nothing => "no_answer",
    }
}

/// The client saw that a person takes (or took) the conversation over: the template, a
/// "don't know" reply, an error event, or the bot's silence after a handover.
pub fn handed_over(g: Got) -> bool {
    matches!(
        g,
        Got::Template | Got::DontKnow | Got::Broken | Got::HandedOff
    )
}

/// A real customer (with a working or a failing widget).
pub fn is_customer(r: &Record) -> bool {
    matches!(r.who, Who::Customer | Who::WidgetFailed)
}

/// A request that, without the FAQ cache, would have gone to the LLM: it passed the limits
/// and had a valid challenge token (bots' FAQ answers do not count: the challenge would have
/// stopped them).
pub fn would_reach_llm(r: &Record) -> bool {
    matches!(r.who, Who::Customer | Who::Burster)
        && matches!(
            r.reason.as_deref(),
            Some(
                "faq_hit"
                    | "forwarded"
                    | "handoff"
                    | "origin_busy"
                    | "origin_capped"
                    | "budget_spent"
            )
        )
}

/// The client saw that the origin was called for this request (exactly once each).
pub fn reached_origin(r: &Record) -> bool {
    matches!(
        r.reason.as_deref(),
        Some("forwarded" | "handoff" | "origin_busy")
    )
}

/// Percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn share(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or("-".into(), |v| format!("{:.2} s", v / 1000.0))
}

/// Computes the scorecard.
pub fn compute(ctx: &Context, records: &[Record]) -> Scorecard {
    let customers: Vec<&Record> = records.iter().filter(|r| is_customer(r)).collect();
    let mut by_who = BTreeMap::new();
    for r in records {
        *by_who.entry(who_name(r.who).to_owned()).or_insert(0u64) += 1;
    }

    // Conversations of customers.
    let mut convs: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for r in &customers {
        let Some(c) = r.conversation.as_deref() else {
            continue;
        };
        let e = convs.entry(c).or_insert((false, false));
        if r.got != Got::Refused && r.got != Got::Nothing {
            e.0 = true;
        }
        if handed_over(r.got) {
            e.1 = true;
        }
    }
    let answered_convs = convs.values().filter(|(a, _)| *a).count() as u64;
    let handed_convs = convs.values().filter(|(a, h)| *a && *h).count() as u64;
    let deflection = share(answered_convs - handed_convs, answered_convs);
    let handoff_rate = share(handed_convs, answered_convs);

    let mut frt: Vec<u64> = customers.iter().filter_map(|r| r.first_text_ms).collect();
    frt.sort_unstable();
    let avg = (!frt.is_empty()).then(|| frt.iter().sum::<u64>() as f64 / frt.len() as f64);
    let p95 = percentile(&frt, 95.0);
    let p99 = percentile(&frt, 99.0);
    let nothing_all = records.iter().filter(|r| r.got == Got::Nothing).count() as u64;
    let nothing_customers = customers.iter().filter(|r| r.got == Got::Nothing).count() as u64;

    let rows = vec![
        Row {
            metric: "AI deflection",
            target: "> 70%",
            case_study: "81%",
            actual: format!(
                "{} ({} of {} conversations)",
                pct(deflection),
                answered_convs - handed_convs,
                answered_convs
            ),
            value: deflection,
            met: deflection.map(|d| d > 0.70),
        },
        Row {
            metric: "First response (avg)",
            target: "< 5 s",
            case_study: "1.8 s",
            actual: secs(avg),
            value: avg.map(|v| v / 1000.0),
            met: avg.map(|v| v < 5000.0),
        },
        Row {
            metric: "First response P95",
            target: "< 8 s",
            case_study: "4.2 s",
            actual: secs(p95.map(|v| v as f64)),
            value: p95.map(|v| v as f64 / 1000.0),
            met: p95.map(|v| v < 8000),
        },
        Row {
            metric: "First response P99",
            target: "< 15 s",
            case_study: "9.8 s",
            actual: secs(p99.map(|v| v as f64)),
            value: p99.map(|v| v as f64 / 1000.0),
            met: p99.map(|v| v < 15_000),
        },
        Row {
            metric: "Handoff rate",
            target: "< 30%",
            case_study: "19%",
            actual: format!("{} ({} conversations)", pct(handoff_rate), handed_convs),
            value: handoff_rate,
            met: handoff_rate.map(|h| h < 0.30),
        },
        Row {
            metric: "Downtime (no answer at all)",
            target: "0",
            case_study: "0",
            actual: format!(
                "{nothing_all} of {} requests ({nothing_customers} customers')",
                records.len()
            ),
            value: Some(nothing_all as f64),
            met: Some(nothing_all == 0),
        },
    ];

    let mut customer_got = BTreeMap::new();
    for r in &customers {
        *customer_got
            .entry(got_name(r.got).to_owned())
            .or_insert(0u64) += 1;
    }

    // Layers.
    let mut layers: BTreeMap<(u16, String), LayerRow> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status != 200) {
        let code = r.problem_code.clone().unwrap_or_else(|| {
            if r.status == 0 {
                "no_response".into()
            } else {
                "unexplained".into()
            }
        });
        let row = layers
            .entry((r.status, code.clone()))
            .or_insert_with(|| LayerRow {
                status: r.status,
                code,
                policy: r.policy.clone(),
                by_who: BTreeMap::new(),
                total: 0,
                with_retry_after: 0,
            });
        *row.by_who.entry(who_name(r.who).to_owned()).or_insert(0) += 1;
        row.total += 1;
        if r.retry_after.is_some() {
            row.with_retry_after += 1;
        }
    }

    // Tiers, on the day clock.
    let clock_of = |ms: u64| match ctx.profile {
        ProfileName::Day => profile::clock(profile::at(ms as f64 / 1000.0 / ctx.duration_s).1),
        ProfileName::Baseline => format!("{:.1} s", ms as f64 / 1000.0),
    };
    let tiers: Vec<TierLine> = ctx
        .tier_events
        .iter()
        .map(|e| TierLine {
            at_ms: e.at_ms,
            clock: clock_of(e.at_ms),
            kind: e.kind,
            tier: e.tier.clone(),
        })
        .collect();
    let calls = ctx.mock_calls.as_ref();
    let alerts: Vec<Value> = calls
        .and_then(|c| c.get("alerts"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    // Cache.
    let bound: Vec<&Record> = records.iter().filter(|r| would_reach_llm(r)).collect();
    let faq_bound = bound.iter().filter(|r| r.got == Got::Faq).count() as u64;
    let faq_all: Vec<&Record> = records.iter().filter(|r| r.got == Got::Faq).collect();
    let right = faq_all
        .iter()
        .filter(|r| r.expected.is_some() && r.expected == r.faq_id)
        .count() as u64;
    let wrong_entry = faq_all
        .iter()
        .filter(|r| r.expected.is_some() && r.expected != r.faq_id)
        .count() as u64;
    let should_miss_served = faq_all.iter().filter(|r| r.expected.is_none()).count() as u64;
    let should_miss_asked = records.iter().filter(|r| r.expected.is_none()).count() as u64;
    let mut cache = BTreeMap::new();
    cache.insert("llm_bound_requests", bound.len() as f64);
    cache.insert("faq_answers_of_llm_bound", faq_bound as f64);
    cache.insert(
        "hit_share_of_llm_bound",
        share(faq_bound, bound.len() as u64).unwrap_or(0.0),
    );
    cache.insert("faq_answers_all", faq_all.len() as f64);
    cache.insert("faq_right_entry", right as f64);
    cache.insert("faq_wrong_entry", wrong_entry as f64);
    cache.insert("should_miss_asked", should_miss_asked as f64);
    cache.insert("should_miss_served_from_cache", should_miss_served as f64);

    // Tokens and LLM calls.
    let reached = records.iter().filter(|r| reached_origin(r)).count() as u64;
    let client_tokens: u64 = records
        .iter()
        .filter(|r| matches!(r.got, Got::Llm | Got::DontKnow))
        .filter_map(|r| r.tokens)
        .sum();
    let mut tokens = BTreeMap::new();
    tokens.insert("requests", records.len() as f64);
    tokens.insert("llm_calls_seen_by_clients", reached as f64);
    tokens.insert(
        "llm_calls_per_request",
        share(reached, records.len() as u64).unwrap_or(0.0),
    );
    tokens.insert("tokens_reported_to_clients", client_tokens as f64);
    if let Some(b) = &ctx.budget {
        if let Some(s) = b.get("spent").and_then(Value::as_u64) {
            tokens.insert("tokens_charged_by_gateway", s as f64);
        }
        if let Some(c) = b.get("cap").and_then(Value::as_u64) {
            tokens.insert("budget", c as f64);
        }
    } else if let Some(c) = ctx.budget_configured {
        tokens.insert("budget", c as f64);
    }

    // Codes.
    let steered_fake: Vec<&Record> = records.iter().filter(|r| r.fake_code.is_some()).collect();
    let fake_llm: Vec<&&Record> = steered_fake.iter().filter(|r| r.got == Got::Llm).collect();
    let mut codes = BTreeMap::new();
    codes.insert("fake_codes_steered", steered_fake.len() as u64);
    codes.insert("fake_codes_in_llm_replies", fake_llm.len() as u64);
    codes.insert(
        "caught",
        fake_llm.iter().filter(|r| !r.code_leaked).count() as u64,
    );
    codes.insert(
        "leaked",
        fake_llm.iter().filter(|r| r.code_leaked).count() as u64,
    );
    codes.insert(
        "replacement_seen",
        fake_llm.iter().filter(|r| r.code_replaced).count() as u64,
    );
    let valid: Vec<bool> = records.iter().filter_map(|r| r.valid_code_kept).collect();
    codes.insert("valid_code_replies", valid.len() as u64);
    codes.insert(
        "valid_codes_kept",
        valid.iter().filter(|k| **k).count() as u64,
    );

    // Challenge.
    let mut challenge = BTreeMap::new();
    fn failed(r: &&Record) -> bool {
        matches!(
            r.problem_code.as_deref(),
            Some("challenge_failed" | "challenge_unavailable")
        )
    }
    challenge.insert("refused_403", records.iter().filter(failed).count() as u64);
    for (who, key_faq, key_403, key_all) in [
        (Who::Bot, "bots_faq_answers", "bots_403", "bot_requests"),
        (
            Who::WidgetFailed,
            "widget_failed_faq_answers",
            "widget_failed_403",
            "widget_failed_requests",
        ),
        (
            Who::Hammer,
            "hammer_faq_answers",
            "hammer_403",
            "hammer_requests",
        ),
    ] {
        let mine: Vec<&Record> = records.iter().filter(|r| r.who == who).collect();
        challenge.insert(key_all, mine.len() as u64);
        challenge.insert(
            key_faq,
            mine.iter().filter(|r| r.got == Got::Faq).count() as u64,
        );
        challenge.insert(key_403, mine.iter().filter(|r| failed(r)).count() as u64);
    }
    challenge.insert(
        "refusals_offering_faq_retry_handoff",
        records.iter().filter(failed).count() as u64,
    );

    // Cross-check against the origin's own counts.
    let handed_client: BTreeSet<&str> = records
        .iter()
        .filter(|r| handed_over(r.got))
        .filter_map(|r| r.conversation.as_deref())
        .collect();
    let mut cross = BTreeMap::new();
    cross.insert("origin_calls_seen_by_clients", Some(reached));
    cross.insert(
        "origin_calls_counted_by_origin",
        calls
            .and_then(|c| c.get("chat_total"))
            .and_then(Value::as_u64),
    );
    cross.insert(
        "handoff_conversations_seen_by_clients",
        Some(handed_client.len() as u64),
    );
    let toggles = calls
        .and_then(|c| c.get("toggle_status"))
        .and_then(Value::as_object);
    cross.insert(
        "handoff_conversations_counted_by_chatwoot",
        toggles.map(|t| t.len() as u64),
    );
    cross.insert(
        "max_handoffs_per_conversation",
        toggles.map(|t| t.values().filter_map(Value::as_u64).max().unwrap_or(0)),
    );
    cross.insert(
        "siteverify_calls",
        calls
            .and_then(|c| c.get("siteverify_total"))
            .and_then(Value::as_u64),
    );

    // Timeline.
    let secs_n = (ctx.elapsed_s.ceil() as u64).max(1);
    let mut timeline: Vec<Bucket> = (0..secs_n)
        .map(|t| Bucket {
            t,
            ..Bucket::default()
        })
        .collect();
    let mut frt_by_sec: Vec<Vec<u64>> = vec![Vec::new(); timeline.len()];
    for r in records {
        let i = (r.at_ms / 1000) as usize;
        let (Some(b), Some(f)) = (timeline.get_mut(i), frt_by_sec.get_mut(i)) else {
            continue;
        };
        b.sent += 1;
        *b.got.entry(got_name(r.got).to_owned()).or_insert(0) += 1;
        if reached_origin(r) {
            b.origin += 1;
        }
        if r.tier.is_some() {
            b.tier.clone_from(&r.tier);
        }
        if is_customer(r) {
            if let Some(ms) = r.first_text_ms {
                f.push(ms);
            }
        }
    }
    for (b, f) in timeline.iter_mut().zip(frt_by_sec.iter_mut()) {
        f.sort_unstable();
        b.p50_ms = percentile(f, 50.0);
        b.p95_ms = percentile(f, 95.0);
    }
    let peak_qps = timeline.iter().map(|b| b.sent).max().unwrap_or(0);

    // Baseline steps.
    let mut baseline = Vec::new();
    let mut breaks_at = None;
    if ctx.profile == ProfileName::Baseline {
        for step in profile::BASELINE_STEPS {
            let name = step_name(step);
            let mine: Vec<&Record> = records.iter().filter(|r| r.phase == name).collect();
            let users: BTreeSet<&str> = mine.iter().map(|r| r.user.as_str()).collect();
            let mut f: Vec<u64> = mine.iter().filter_map(|r| r.first_text_ms).collect();
            f.sort_unstable();
            let answered = mine
                .iter()
                .filter(|r| matches!(r.got, Got::Faq | Got::Llm | Got::DontKnow | Got::Template))
                .count() as u64;
            let errors = mine
                .iter()
                .filter(|r| matches!(r.got, Got::Nothing | Got::Refused))
                .count() as u64;
            let p95 = percentile(&f, 95.0);
            let verdict = if errors as f64 > 0.01 * mine.len() as f64 {
                "errors"
            } else if p95.is_some_and(|p| p > 5000) {
                "slow"
            } else {
                "holds"
            };
            if verdict != "holds" && breaks_at.is_none() {
                breaks_at = Some(name);
            }
            baseline.push(StepRow {
                step: name,
                users: users.len() as u64,
                requests: mine.len() as u64,
                answered,
                errors,
                avg_ms: (!f.is_empty()).then(|| f.iter().sum::<u64>() as f64 / f.len() as f64),
                p95_ms: p95,
                p99_ms: percentile(&f, 99.0),
                verdict,
            });
        }
    }

    Scorecard {
        profile: match ctx.profile {
            ProfileName::Day => "day",
            ProfileName::Baseline => "baseline",
        },
        duration_s: ctx.duration_s,
        elapsed_s: ctx.elapsed_s,
        scale: ctx.scale,
        seed: ctx.seed,
        gateway: ctx.gateway.clone(),
        origin: ctx.origin.clone(),
        kb: ctx.kb.clone(),
        requests: records.len() as u64,
        by_who,
        conversations: convs.len() as u64,
        peak_qps,
        not_sent: ctx.not_sent,
        rows,
        customer_got,
        layers: layers.into_values().collect(),
        tiers,
        alerts,
        cache,
        tokens,
        codes,
        challenge,
        crosscheck: cross,
        timeline,
        baseline,
        breaks_at,
    }
}

/// The scorecard as JSON.
pub fn to_json(card: &Scorecard) -> Value {
    serde_json::to_value(card).unwrap_or(Value::Null)
}

fn mark(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    }
}

fn g(map: &BTreeMap<&'static str, f64>, k: &str) -> f64 {
    map.get(k).copied().unwrap_or(0.0)
}

fn n(map: &BTreeMap<&'static str, u64>, k: &str) -> u64 {
    map.get(k).copied().unwrap_or(0)
}

/// The scorecard as text, for the terminal.
pub fn render_text(c: &Scorecard) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== tidegate drill scorecard ({} profile, {:.0} s, scale {}, seed {}) ==",
        c.profile, c.elapsed_s, c.scale, c.seed
    );
    let _ = writeln!(
        s,
        "{} requests ({}), {} customer conversations, peak {} req/s{}",
        c.requests,
        c.by_who
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        c.conversations,
        c.peak_qps,
        if c.not_sent > 0 {
            format!(
                "; {} not sent: the load generator was at --max-in-flight",
                c.not_sent
            )
        } else {
            String::new()
        }
    );
    if c.profile == "baseline" {
        let _ = writeln!(
            s,
            "\nWeek-1 baseline (case study: 500 ok, 1,000 ok, 2,000 FRT 5 s, 5,000 OOM, 10,000 down)"
        );
        let _ = writeln!(
            s,
            "{:<14}{:>7}{:>10}{:>10}{:>8}{:>10}{:>10}{:>10}  verdict",
            "step", "active", "requests", "answered", "errors", "avg", "p95", "p99"
        );
        for r in &c.baseline {
            let _ = writeln!(
                s,
                "{:<14}{:>7}{:>10}{:>10}{:>8}{:>10}{:>10}{:>10}  {}",
                r.step,
                r.users,
                r.requests,
                r.answered,
                r.errors,
                secs(r.avg_ms),
                secs(r.p95_ms.map(|v| v as f64)),
                secs(r.p99_ms.map(|v| v as f64)),
                r.verdict
            );
        }
        let _ = writeln!(
            s,
            "{}",
            match c.breaks_at {
                Some(step) => format!(
                    "First step where first response passes 5 s (p95) or errors appear: {step}"
                ),
                None => "Every step held: p95 first response under 5 s and no errors.".into(),
            }
        );
    }
    let _ = writeln!(
        s,
        "\n{:<30}{:<9}{:<12}{:<44}",
        "Metric", "Target", "Case study", "This drill"
    );
    for r in &c.rows {
        let _ = writeln!(
            s,
            "{:<30}{:<9}{:<12}{:<44}{}",
            r.metric,
            r.target,
            r.case_study,
            r.actual,
            mark(r.met)
        );
    }
    let _ = writeln!(
        s,
        "(first response = time to the first byte of answer text, customers only; \
         deflection and handoff per customer conversation)"
    );
    let _ = writeln!(
        s,
        "What customers got: {}",
        c.customer_got
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(s, "\nRefusals by layer (status, reason: who got them)");
    if c.layers.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for l in &c.layers {
        let _ = writeln!(
            s,
            "  {} {:<22} {:>5}  {}{}",
            l.status,
            l.code,
            l.total,
            l.by_who
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            if matches!(l.status, 429 | 503) {
                format!("; Retry-After on {} of {}", l.with_retry_after, l.total)
            } else {
                String::new()
            }
        );
    }

    let _ = writeln!(
        s,
        "\nDegradation tiers (the drill's config sets auto_activate = true and thresholds \
         scaled to its QPS)"
    );
    if c.tiers.is_empty() {
        let _ = writeln!(s, "  no tier changes seen");
    }
    for t in &c.tiers {
        let when = if c.profile == "day" {
            format!("{} ({:5.1} s)", t.clock, t.at_ms as f64 / 1000.0)
        } else {
            format!("{:5.1} s", t.at_ms as f64 / 1000.0)
        };
        let _ = writeln!(s, "  {when}  {:<11} {}", t.kind, t.tier);
    }
    if !c.alerts.is_empty() {
        let _ = writeln!(s, "  alerts posted by the gateway: {}", c.alerts.len());
    }

    let cache = &c.cache;
    let _ = writeln!(
        s,
        "\nHot-FAQ cache (case study: top-100 cache absorbed 60% of LLM calls)\n  \
         {:.1}% of the traffic that would have reached the LLM was answered from the cache \
         ({:.0} of {:.0})\n  FAQ answers: {:.0}, right entry {:.0}, another entry {:.0}; \
         out-of-scope questions served from cache: {:.0} of {:.0} asked (target 0)",
        100.0 * g(cache, "hit_share_of_llm_bound"),
        g(cache, "faq_answers_of_llm_bound"),
        g(cache, "llm_bound_requests"),
        g(cache, "faq_answers_all"),
        g(cache, "faq_right_entry"),
        g(cache, "faq_wrong_entry"),
        g(cache, "should_miss_served_from_cache"),
        g(cache, "should_miss_asked"),
    );
    let t = &c.tokens;
    let _ = writeln!(
        s,
        "\nLLM spend (case study: 14x the tokens for 48x the traffic, i.e. 0.29 per unit of \
         traffic)\n  LLM calls {:.0} for {:.0} requests ({:.2} per request); tokens reported \
         in replies {:.0}; charged by the gateway {} of a budget of {}",
        g(t, "llm_calls_seen_by_clients"),
        g(t, "requests"),
        g(t, "llm_calls_per_request"),
        g(t, "tokens_reported_to_clients"),
        t.get("tokens_charged_by_gateway")
            .map_or("-".into(), |v| format!("{v:.0}")),
        t.get("budget").map_or("-".into(), |v| format!(
            "{v:.0} ({:.1}% used)",
            100.0 * g(t, "tokens_charged_by_gateway") / v.max(1.0)
        )),
    );
    let k = &c.codes;
    let _ = writeln!(
        s,
        "\nInvented promo codes (case study: 5 reached customers at 13:42)\n  origin invented \
         {} codes in replies that reached customers' screens; caught {}, leaked {} (target 0); \
         valid codes kept intact {} of {}",
        n(k, "fake_codes_in_llm_replies"),
        n(k, "caught"),
        n(k, "leaked"),
        n(k, "valid_codes_kept"),
        n(k, "valid_code_replies"),
    );
    let ch = &c.challenge;
    let _ = writeln!(
        s,
        "\nBot challenge (Turnstile against the stand-in siteverify, real secret)\n  {} requests \
         failed the challenge. Bots: {} requests, {} got a FAQ answer, {} a 403 offering FAQ / \
         retry / handoff.\n  Customers whose widget failed (the 19:23 incident): {} requests, \
         {} got a FAQ answer instead, {} the 403 fallback",
        n(ch, "refused_403"),
        n(ch, "bot_requests"),
        n(ch, "bots_faq_answers"),
        n(ch, "bots_403"),
        n(ch, "widget_failed_requests"),
        n(ch, "widget_failed_faq_answers"),
        n(ch, "widget_failed_403"),
    );
    let x = &c.crosscheck;
    let v = |k: &str| {
        x.get(k)
            .copied()
            .flatten()
            .map_or("-".into(), |n| n.to_string())
    };
    let _ = writeln!(
        s,
        "\nCross-check with the stand-in origin\n  origin calls: clients saw {}, origin counted \
         {}; handed-over conversations: clients saw {}, Chatwoot got {} (at most {} per \
         conversation); siteverify calls {}",
        v("origin_calls_seen_by_clients"),
        v("origin_calls_counted_by_origin"),
        v("handoff_conversations_seen_by_clients"),
        v("handoff_conversations_counted_by_chatwoot"),
        v("max_handoffs_per_conversation"),
        v("siteverify_calls"),
    );
    let _ = writeln!(
        s,
        "\nGateway {}  origin {}\nKnowledge base: {}",
        c.gateway, c.origin, c.kb
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 95.0), Some(95));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
