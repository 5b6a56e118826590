//! `tidegate mock-origin`: a stand-in for everything outside tidegate.
//!
//! One HTTP server plays every service the gateway talks to, closely enough that the gateway's
//! tests exercise the same success and failure paths they would meet in production:
//!
//! | Path | Plays |
//! |---|---|
//! | `POST /v1/chat/completions` | an OpenAI-compatible chat origin, blocking or SSE ([`openai`]) |
//! | `POST /v1/chat-messages` | a Dify chat app, blocking or SSE ([`dify`]) |
//! | `POST /turnstile/v0/siteverify` | Cloudflare Turnstile's siteverify ([`turnstile`]) |
//! | `POST /api/v1/accounts/{a}/conversations/{id}/toggle_status` | Chatwoot ([`chatwoot`]) |
//! | `POST /api/v1/accounts/{a}/conversations/{id}/messages` | Chatwoot ([`chatwoot`]) |
//! | `POST /alerts` | an alert webhook sink ([`introspect`]) |
//! | `GET /mock/calls`, `POST /mock/reset` | what the mock saw, for tests ([`introspect`]) |
//!
//! Both chat APIs can be steered per request by an optional `"mock"` object in the request
//! body (reply text, write split points, an abrupt cut, missing usage, error statuses with
//! `Retry-After`, latency); see [`steer`]. The gateway forwards bodies unchanged, so a test
//! steers the origin through any host.
//!
//! The origin slows down as it gets busy, like the case study's retrieval service (200 ms to
//! 8 s): the latency before the first byte is `latency_ms * (1 + in_flight / 50)`, capped at
//! 40 times the base.

pub mod chatwoot;
pub mod dify;
pub mod introspect;
pub mod openai;
pub mod state;
pub mod steer;
pub mod text;
pub mod turnstile;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::{get, post};
use axum::Router;

use self::state::MockState;

/// Command-line options of `tidegate mock-origin`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// When set, the chat endpoints require `Authorization: Bearer KEY` and answer 401 in the
    /// API's own error shape otherwise.
    #[arg(long, env = "TIDEGATE_MOCK_API_KEY")]
    pub api_key: Option<String>,
    /// Base latency before the first byte of a chat reply, in milliseconds. Grows with the
    /// number of requests in flight.
    #[arg(long, default_value_t = 300)]
    pub latency_ms: u64,
    /// Delay between two writes of a streamed reply, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub chunk_delay_ms: u64,
    /// A "real" Turnstile secret that siteverify accepts besides the public test secrets.
    #[arg(long, env = "TIDEGATE_MOCK_TURNSTILE_SECRET")]
    pub turnstile_secret: Option<String>,
    /// Hostname that siteverify reports for tokens verified with the real secret.
    #[arg(long, default_value = "localhost")]
    pub turnstile_hostname: String,
    /// The Chatwoot `api_access_token` the mock accepts (an agent bot's token).
    #[arg(
        long,
        env = "TIDEGATE_MOCK_CHATWOOT_TOKEN",
        default_value = "test-token"
    )]
    pub chatwoot_token: String,
}

impl Default for MockArgs {
    /// The same values as the command-line defaults.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            api_key: None,
            latency_ms: 300,
            chunk_delay_ms: 20,
            turnstile_secret: None,
            turnstile_hostname: "localhost".to_owned(),
            chatwoot_token: "test-token".to_owned(),
        }
    }
}

/// The user a chat request belongs to: the `x-user-id` header, else the body's `user` field,
/// else `-`.
pub(crate) fn request_user(
    headers: &axum::http::HeaderMap,
    body: Option<&serde_json::Value>,
) -> String {
    if let Some(user) = headers.get("x-user-id").and_then(|v| v.to_str().ok()) {
        return user.to_owned();
    }
    body.and_then(|b| b.get("user"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| "-".to_owned(), str::to_owned)
}

/// Checks `Authorization: Bearer KEY` against `--api-key`. `Ok` when no key is configured.
/// `Err(true)` when the header is missing or not a bearer token, `Err(false)` when the key
/// is wrong.
pub(crate) fn check_bearer(
    headers: &axum::http::HeaderMap,
    expected: Option<&str>,
) -> Result<(), bool> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None | Some("") => Err(true),
        Some(key) if key == expected => Ok(()),
        Some(_) => Err(false),
    }
}

/// Builds the mock's router around fresh state.
pub fn router(args: MockArgs) -> Router {
    let state = Arc::new(MockState::new(args));
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/chat-messages", post(dify::chat_messages))
        .route("/turnstile/v0/siteverify", post(turnstile::siteverify))
        .route(
            "/api/v1/accounts/{account}/conversations/{conversation}/toggle_status",
            post(chatwoot::toggle_status),
        )
        .route(
            "/api/v1/accounts/{account}/conversations/{conversation}/messages",
            post(chatwoot::create_message),
        )
        .route("/alerts", post(introspect::alert))
        .route("/mock/calls", get(introspect::calls))
        .route("/mock/reset", post(introspect::reset))
        .fallback(introspect::not_found)
        .with_state(state)
}

/// Binds `args.listen` and serves the mock until ctrl-c.
pub async fn run(args: MockArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("mock-origin: cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("mock-origin: no local address")?;
    tracing::info!(%addr, "mock-origin listening");
    axum::serve(crate::server::no_delay(listener), router(args))
        .with_graceful_shutdown(async {
            // If the signal handler cannot be installed, serve until the process is killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("mock-origin: server failed")?;
    tracing::info!("mock-origin stopped");
    Ok(())
}

/// Binds `args.listen` (port 0 allowed) and serves the mock in a background tokio task.
///
/// Returns the bound address. The task runs until the runtime shuts down.
pub async fn spawn(args: MockArgs) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("mock-origin: cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("mock-origin: no local address")?;
    let app = router(args);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(crate::server::no_delay(listener), app).await {
            tracing::error!(%err, "mock-origin stopped with an error");
        }
    });
    tracing::info!(%addr, "mock-origin listening (in process)");
    Ok(addr)
}
