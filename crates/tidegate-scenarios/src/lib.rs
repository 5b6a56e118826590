//! tidegate's end-to-end scenario runner.
//!
//! Scenarios are TOML files describing HTTP behaviour only (requests in; status, headers and
//! body properties out), so the same files run against every host of the policy core: the
//! native gateway, the Cloudflare Worker and the Envoy filter. The runner takes a base URL.
//! The format is documented for authors in `tests/scenarios/README.md`.
//!
//! - [`format`]: the file format, parsed once into checked types;
//! - [`vars`]: `{name}` placeholders and per-run unique values;
//! - [`sse`]: incremental reading of streamed replies, in both API shapes;
//! - [`expect`]: expectations on a response and the pure check;
//! - [`runner`]: HTTP execution, flag backends, reports.

pub mod expect;
pub mod format;
pub mod runner;
pub mod sse;
pub mod vars;

pub use format::{load_file, Host, Scenario, ScenarioFile};
pub use runner::{FlagBackend, Options, Outcome, Report, Runner, Summary};
