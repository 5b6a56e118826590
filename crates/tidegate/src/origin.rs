//! Talking to the origin: forwarding a planned request, streaming the reply through the core's
//! reply filter, settling the budget and handing over when the origin could not answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tidegate_core::gateway::{self, Admitted, Answer, Forward, OriginOutcome, Plan};
use tidegate_core::ratelimit::{Outcome, Verdict};
use tidegate_core::reply::ReplyFilter;
use tidegate_core::{Problem, Reason};
use tracing::{debug, warn};

use crate::server::{decorate, now, problem, refusal, App, Flags};

/// Sends an answer the gateway wrote itself.
pub fn answer(app: &Arc<App>, a: Answer) -> Response {
    app.metrics.decision(a.reason);
    if let Some(call) = a.handoff.clone() {
        app.send_call(call, "handoff", a.conversation.clone());
    }
    let mut resp = (StatusCode::OK, a.reply.body).into_response();
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(a.reply.content_type),
    );
    let mut h = gateway::response_headers(&a.limits, a.reason, Some(a.tier), None);
    if let Some(id) = a.faq_id {
        h.push(("x-tidegate-faq-id", id));
    }
    if a.handed_off {
        h.push(("x-tidegate-handoff", "true".into()));
    }
    decorate(&mut resp, h);
    resp
}

fn plan_response(app: &Arc<App>, plan: Plan) -> Response {
    match plan {
        Plan::Answer(a) => answer(app, a),
        Plan::Refuse(r) => {
            app.metrics.decision(Reason::OriginBusy);
            refusal(&r, None)
        }
        // origin_failed never forwards again.
        Plan::Forward(_) => problem(Problem::new(
            Reason::Handoff,
            502,
            "Origin failed",
            "the origin could not answer",
        )),
    }
}

fn copy_request_headers(
    mut rb: reqwest::RequestBuilder,
    headers: &HeaderMap,
) -> reqwest::RequestBuilder {
    for (k, v) in headers {
        let name = k.as_str();
        if tidegate_core::request::HOP_BY_HOP_HEADERS.contains(&name)
            || name == "content-type"
            || name.starts_with("cf-turnstile")
        {
            continue;
        }
        rb = rb.header(name, v.as_bytes());
    }
    rb
}

/// Forwards `f` to the origin and relays the reply.
pub async fn forward(
    app: Arc<App>,
    admitted: Admitted,
    f: Forward,
    headers: HeaderMap,
    flags: Flags,
) -> Response {
    if f.delay_ms > 0 {
        // Queued by the origin cap: "take a number".
        tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
    }
    let cfg = app.gw.config();
    let tiers = &cfg.tiers;
    let (base, key) = if f.route.fallback_origin && !tiers.fallback_url.is_empty() {
        let key = if tiers.fallback_api_key.is_empty() {
            &cfg.origin.api_key
        } else {
            &tiers.fallback_api_key
        };
        (
            tiers.fallback_url.trim_end_matches('/').to_owned(),
            key.clone(),
        )
    } else {
        (app.origin_url.clone(), cfg.origin.api_key.clone())
    };
    let shape = admitted.req.shape;
    let url = format!("{base}{}", shape.path());
    let mut rb = copy_request_headers(app.http.post(&url), &headers)
        .header("content-type", "application/json")
        .body(f.body.clone());
    if !key.is_empty() {
        rb = rb.bearer_auth(&key);
    }
    app.metrics
        .origin_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut q) = app.qps.lock() {
        q.record(now());
    }
    let first_byte = Duration::from_millis(cfg.origin.first_byte_timeout_ms);
    let sent = tokio::time::timeout(first_byte, rb.send()).await;
    let resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            warn!(error = %e, %url, "origin unreachable");
            app.metrics
                .origin_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let plan = app
                .gw
                .origin_failed(&app.store, &admitted, &f, None, None, now());
            return plan_response(&app, plan);
        }
        Err(_) => {
            warn!(%url, "origin timed out before the first byte");
            app.metrics
                .origin_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let plan = app
                .gw
                .origin_failed(&app.store, &admitted, &f, None, None, now());
            return plan_response(&app, plan);
        }
    };
    let status = resp.status();
    if status.as_u16() == 429 || status.is_server_error() {
        app.metrics
            .origin_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ra = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        warn!(%status, retry_after = ?ra, "origin refused");
        let plan = app.gw.origin_failed(
            &app.store,
            &admitted,
            &f,
            Some(status.as_u16()),
            ra.as_deref(),
            now(),
        );
        return plan_response(&app, plan);
    }
    let tier = f.route.tier;
    let mut decision = gateway::response_headers(&f.limits, Reason::Forwarded, Some(tier), None);
    decision.push(("x-tidegate-model", f.route.model.clone()));
    if !status.is_success() {
        // The origin refused the request itself (bad model, bad key...): relay it, charge
        // nothing.
        let outcome = OriginOutcome {
            tokens: 0,
            complete: true,
            dont_know: false,
        };
        app.gw.settle(&app.store, &admitted, &f, &outcome, now());
        let ct = resp.headers().get("content-type").cloned();
        let body = resp.bytes().await.unwrap_or_default();
        let mut out = (
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            body,
        )
            .into_response();
        if let Some(ct) = ct {
            out.headers_mut().insert("content-type", ct);
        }
        app.metrics.decision(Reason::Forwarded);
        decorate(&mut out, decision);
        return out;
    }
    let content_type = resp.headers().get("content-type").cloned();
    let filter = ReplyFilter::new(
        shape,
        admitted.req.stream,
        app.validator.clone(),
        flags.codes.clone(),
    )
    .hiding_usage(f.usage_added);
    if admitted.req.stream {
        app.metrics.decision(Reason::Forwarded);
        let body = relay_stream(app.clone(), admitted, f, resp, filter);
        let mut out = (StatusCode::OK, body).into_response();
        let h = out.headers_mut();
        h.insert(
            "content-type",
            content_type.unwrap_or(HeaderValue::from_static("text/event-stream")),
        );
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        decorate(&mut out, decision);
        out
    } else {
        relay_whole(&app, admitted, f, resp, filter, content_type, decision).await
    }
}

fn outcome_of(app: &App, filter: &ReplyFilter, admitted: &Admitted) -> OriginOutcome {
    let report = filter.report();
    app.metrics.codes_replaced.fetch_add(
        u64::from(report.codes_replaced),
        std::sync::atomic::Ordering::Relaxed,
    );
    let outcome = app.gw.outcome(admitted, report);
    app.metrics
        .tokens_charged
        .fetch_add(outcome.tokens, std::sync::atomic::Ordering::Relaxed);
    outcome
}

async fn relay_whole(
    app: &Arc<App>,
    admitted: Admitted,
    f: Forward,
    resp: reqwest::Response,
    mut filter: ReplyFilter,
    content_type: Option<HeaderValue>,
    decision: Vec<(&'static str, String)>,
) -> Response {
    let total = Duration::from_millis(app.gw.config().origin.total_timeout_ms);
    let mut stream = resp.bytes_stream();
    let mut ok = true;
    let mut out = Vec::new();
    let read = tokio::time::timeout(total, async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => out.extend_from_slice(&filter.push(&b)),
                Err(e) => {
                    debug!(error = %e, "origin body broke");
                    return false;
                }
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        ok = false;
    }
    out.extend_from_slice(&filter.finish(ok));
    let outcome = outcome_of(app, &filter, &admitted);
    if let Some(plan) = app
        .gw
        .finish_whole(&app.store, &admitted, &f, &outcome, now())
    {
        // Nothing usable was relayed yet: the template and a handoff go out instead.
        app.metrics
            .origin_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return plan_response(app, plan);
    }
    app.metrics.decision(Reason::Forwarded);
    // The body may have changed length: the response carries the new Content-Length.
    let mut resp = (StatusCode::OK, out).into_response();
    resp.headers_mut().insert(
        "content-type",
        content_type.unwrap_or(HeaderValue::from_static("application/json")),
    );
    decorate(&mut resp, decision);
    resp
}

fn relay_stream(
    app: Arc<App>,
    admitted: Admitted,
    f: Forward,
    resp: reqwest::Response,
    mut filter: ReplyFilter,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let total = tokio::time::sleep(Duration::from_millis(
            app.gw.config().origin.total_timeout_ms,
        ));
        tokio::pin!(total);
        let mut upstream = resp.bytes_stream();
        let mut ok = true;
        let mut client_gone = false;
        loop {
            tokio::select! {
                chunk = upstream.next() => match chunk {
                    Some(Ok(b)) => {
                        let out = filter.push(&b);
                        if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                            client_gone = true;
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "origin stream broke");
                        ok = false;
                        break;
                    }
                    None => break,
                },
                () = &mut total => {
                    warn!("origin stream exceeded the total timeout");
                    ok = false;
                    break;
                }
            }
        }
        let tail = filter.finish(ok && !client_gone);
        if !client_gone && !tail.is_empty() {
            let _ = tx.send(Ok(Bytes::from(tail))).await;
        }
        let outcome = outcome_of(&app, &filter, &admitted);
        if client_gone {
            // The customer stopped reading: no origin failure, nobody to hand over to.
            app.gw.settle_client_left(&app.store, &f, &outcome);
            return;
        }
        if !outcome.complete {
            app.metrics
                .origin_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let s = app.gw.settle(&app.store, &admitted, &f, &outcome, now());
        if let Some(call) = s.handoff {
            app.send_call(call, "handoff", s.conversation);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

/// Proxies a business API request admitted (possibly queued) by its limit.
pub async fn proxy_api(
    app: &Arc<App>,
    outcome: Outcome,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Verdict::Delay { wait_ms } = outcome.verdict {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    }
    let path = uri.path();
    let Some((api, _)) = app.gw.config().api_for(path) else {
        return problem(Problem::new(
            Reason::BadRequest,
            404,
            "Not found",
            "no such endpoint",
        ));
    };
    let limits = vec![outcome];
    let decorate_all = |mut r: Response| {
        decorate(
            &mut r,
            gateway::response_headers(&limits, Reason::Forwarded, None, None),
        );
        r
    };
    if api.upstream.is_empty() {
        return decorate_all(problem(Problem::new(
            Reason::BadRequest,
            502,
            "No upstream",
            format!("business API `{}` has no upstream configured", api.name),
        )));
    }
    let max = app.gw.config().client.max_body_bytes;
    let bytes =
        match crate::server::read_body(&headers, body, max, crate::server::BODY_READ_TIMEOUT).await
        {
            Ok(b) => b,
            Err(p) => return crate::server::body_problem(p),
        };
    let url = format!(
        "{}{}",
        api.upstream.trim_end_matches('/'),
        uri.path_and_query().map_or(path, |p| p.as_str())
    );
    let m = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut rb = copy_request_headers(app.http.request(m, &url), &headers).body(bytes);
    if let Some(ct) = headers.get("content-type") {
        rb = rb.header("content-type", ct.as_bytes());
    }
    match rb.timeout(Duration::from_secs(30)).send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = r.headers().get("content-type").cloned();
            let body = Body::from_stream(r.bytes_stream());
            let mut out = (status, body).into_response();
            if let Some(ct) = ct {
                out.headers_mut().insert("content-type", ct);
            }
            decorate_all(out)
        }
        Err(e) => {
            warn!(error = %e, %url, "business API upstream failed");
            decorate_all(problem(
                Problem::new(
                    Reason::OriginBusy,
                    503,
                    "Upstream unavailable",
                    "the business API did not answer",
                )
                .with_retry_after(1),
            ))
        }
    }
}
