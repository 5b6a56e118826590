//! The admin API (`/admin/*`, bearer token): the local equivalent of editing KV flags in the
//! Cloudflare dashboard, plus the FAQ hot set and knowledge-base upload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use tidegate_core::faq;
use tidegate_core::{budget, Problem, Reason};

use crate::server::{body_problem, now, problem, read_body, App, KB_KEY};

/// Largest knowledge base (JSONL) or flag value the admin API takes: the most one Workers KV
/// value may hold.
pub const MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;
/// How long an admin upload may take (a 25 MiB knowledge base over a slow link).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

fn admin_problem(status: u16, title: &str, detail: impl Into<String>) -> Response {
    problem(Problem::new(Reason::BadRequest, status, title, detail))
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison.
    let want = app.admin_token.as_bytes();
    let ok = given.len() == want.len()
        && given
            .bytes()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !ok || want.is_empty() {
        let mut r = admin_problem(
            401,
            "Unauthorized",
            "send `Authorization: Bearer <admin token>`",
        );
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

async fn list(State(app): State<Arc<App>>) -> Response {
    match app.kv.list() {
        Ok(keys) => Json(
            keys.into_iter()
                .map(|(k, n)| serde_json::json!({"key": k, "bytes": n}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => admin_problem(500, "KV error", e.to_string()),
    }
}

async fn get_flag(State(app): State<Arc<App>>, Path(key): Path<String>) -> Response {
    match app.kv.get(&key) {
        Ok(Some(v)) => v.into_response(),
        Ok(None) => admin_problem(404, "No such flag", format!("flag `{key}` is not set")),
        Err(e) => admin_problem(500, "KV error", e.to_string()),
    }
}

async fn put_flag(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&headers, body, MAX_UPLOAD_BYTES, UPLOAD_TIMEOUT).await {
        Ok(b) => b,
        Err(p) => return body_problem(p),
    };
    let cfg = app.gw.config();
    let text = String::from_utf8_lossy(&body);
    if key == cfg.tiers.flag_key && tidegate_core::tier::Tier::parse(&text).is_none() {
        return admin_problem(
            422,
            "Invalid tier",
            format!(
                "`{}` must be one of normal, economy, cache-first, fallback",
                key
            ),
        );
    }
    if key == KB_KEY {
        if let Err(e) = faq::KnowledgeBase::from_artifact(&body) {
            return admin_problem(422, "Invalid artefact", e.to_string());
        }
    }
    if let Err(e) = app.kv.put(&key, &body) {
        return admin_problem(500, "KV error", e.to_string());
    }
    if let Err(e) = app.refresh_flags() {
        return admin_problem(500, "KV error", e.to_string());
    }
    tracing::info!(%key, bytes = body.len(), "flag set");
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_flag(State(app): State<Arc<App>>, Path(key): Path<String>) -> Response {
    match app.kv.delete(&key) {
        Ok(true) => {
            let _ = app.refresh_flags();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => admin_problem(404, "No such flag", format!("flag `{key}` is not set")),
        Err(e) => admin_problem(500, "KV error", e.to_string()),
    }
}

/// `PUT /admin/kb`: a knowledge base in JSONL, built and stored (errors name the line).
async fn put_kb(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&headers, body, MAX_UPLOAD_BYTES, UPLOAD_TIMEOUT).await {
        Ok(b) => b,
        Err(p) => return body_problem(p),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return admin_problem(
            400,
            "Invalid UTF-8",
            "the knowledge base must be UTF-8 JSONL",
        );
    };
    let artefact = match faq::build_artifact(text) {
        Ok(a) => a,
        Err(errs) => {
            let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            return admin_problem(422, "Knowledge base rejected", lines.join("; "));
        }
    };
    if let Err(e) = app
        .kv
        .put(KB_KEY, &artefact)
        .and_then(|()| app.refresh_flags())
    {
        return admin_problem(500, "KV error", e.to_string());
    }
    let f = app.flags.read().ok().and_then(|f| f.kb.clone());
    Json(serde_json::json!({
        "entries": f.as_ref().map_or(0, |k| k.len()),
        "version": f.as_ref().map(|k| k.version().to_owned()),
        "bytes": artefact.len(),
    }))
    .into_response()
}

/// `GET /admin/faq/top?n=10`: the hot set, by hits since start.
async fn faq_top(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let n = q
        .get("n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(10)
        .min(1000);
    let mut hits: Vec<(String, u64)> = app
        .store
        .scan("faqhits:")
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("faqhits:").to_owned(), v))
        .collect();
    hits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    hits.truncate(n);
    Json(
        hits.into_iter()
            .map(|(id, hits)| serde_json::json!({"id": id, "hits": hits}))
            .collect::<Vec<_>>(),
    )
    .into_response()
}

/// `GET /admin/budget`: tokens spent this month.
async fn budget_status(State(app): State<Arc<App>>) -> Response {
    let cap = app.gw.config().budget.monthly_tokens;
    let now = now();
    match budget::status(&app.store, now, cap) {
        Ok(s) => Json(serde_json::json!({
            "month": now.month_key(), "spent": s.spent, "cap": cap, "remaining": s.remaining(),
            "cache_only": cap > 0 && s.exhausted(),
        }))
        .into_response(),
        Err(e) => admin_problem(500, "Store error", e.to_string()),
    }
}

/// `PUT /admin/budget` with a number: sets this month's spend (0 resets the budget).
async fn set_budget(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    let Some(spent) = std::str::from_utf8(&body)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
    else {
        return admin_problem(
            422,
            "Invalid spend",
            "send the tokens spent this month as a number",
        );
    };
    match budget::set_spent(&app.store, now(), spent) {
        Ok(()) => {
            tracing::warn!(spent, "budget spend set by an operator");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => admin_problem(500, "Store error", e.to_string()),
    }
}

/// The admin routes, behind the bearer token.
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/flags", get(list))
        .route(
            "/flags/{key}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route("/kb", put(put_kb))
        .route("/faq/top", get(faq_top))
        .route("/budget", get(budget_status).put(set_budget))
        .route_layer(middleware::from_fn_with_state(app, auth))
}
