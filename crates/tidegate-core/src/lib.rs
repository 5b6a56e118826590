//! tidegate's policy core.
//!
//! The core is sans-IO: it reads no clock, no randomness, no KV store and no network. Every
//! call takes what the host observed (the time as [`UnixMs`], request facts, stored state) and
//! returns what the host must do: a [`decision`], state writes through a [`store::CounterStore`],
//! or outbound calls described as data (siteverify, alert, handoff). The same code runs in the
//! native gateway, the Cloudflare Worker and the Envoy filter.
//!
//! One module per policy:
//! - [`ratelimit`]: GCRA limits per IP, per user, the global origin cap and business APIs;
//! - [`budget`]: the monthly LLM token budget;
//! - [`turnstile`]: the bot challenge (siteverify request and verdict);
//! - [`faq`]: normalisation, the knowledge-base artefact and the matcher;
//! - [`tier`]: degradation tiers and the QPS-based recommendation;
//! - [`reply`]: streaming post-validation of origin replies (promo codes, usage, cut streams);
//! - [`handoff`]: template reply and the once-per-conversation human handoff.

pub mod answer;
pub mod budget;
pub mod config;
pub mod decision;
pub mod faq;
pub mod gateway;
pub mod handoff;
pub mod identity;
pub mod ratelimit;
pub mod reply;
pub mod request;
pub mod store;
pub mod tier;
pub mod time;
pub mod turnstile;

pub use config::{Config, ConfigError};
pub use decision::{Problem, Reason};
pub use time::UnixMs;
