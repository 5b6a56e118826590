//! tidegate as an Envoy HTTP filter (proxy-wasm, V8 runtime).
//!
//! The policy core runs unchanged; this crate maps proxy-wasm to it and back:
//! - counters live in proxy-wasm shared data ([`shared`]), exact across worker threads;
//! - flags, the valid-code list and the FAQ artefact are pulled from a KV source on a timer and
//!   kept in shared data ([`flags`]), the last good copy kept when the source is down;
//! - the tier recommendation from origin QPS is computed once for all workers ([`watch`]);
//! - the plugin configuration is the core's TOML config plus an `[envoy]` table ([`settings`]);
//! - the proxy-wasm contexts themselves (`filter`, wasm32 only) drive the core's three stages,
//!   make the siteverify, Chatwoot and KV calls with `dispatch_http_call`, and validate replies
//!   chunk by chunk in `on_http_response_body`.
//!
//! Only the contexts touch the host; everything else is plain code tested natively.

pub mod flags;
pub mod settings;
pub mod shared;
pub mod watch;

#[cfg(test)]
mod testing;

#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(target_arch = "wasm32")]
mod stages;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(filter::new_root);
}}
