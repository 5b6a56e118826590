//! tidegate as a Cloudflare Worker: the policy core on workers-rs.
//!
//! The Worker maps the platform to [`tidegate_core`] and decides nothing itself:
//! - flags (`tier`, the valid promo codes) and the FAQ artefact come from Workers KV, read
//!   with a `cacheTtl` and kept per isolate ([`settings`] says for how long);
//! - counters live in Durable Objects, one per counter key ([`counter`]), and the core's
//!   synchronous stages run over them by deterministic replay ([`replay`]);
//! - siteverify, the origin, Chatwoot and alerts go out through `fetch`, and a streamed reply
//!   passes through the core's reply filter chunk by chunk.
//!
//! Everything that needs the Workers runtime is compiled for `wasm32` only; the rest is
//! tested on the host with `cargo test -p tidegate-worker`.

pub mod replay;
pub mod settings;
pub mod watch;
pub mod wire;

#[cfg(target_arch = "wasm32")]
pub mod counter;
#[cfg(target_arch = "wasm32")]
mod edge;
