//! Configuration (TOML), parsed once into checked types.

use crate::faq::FaqConfig;
use crate::reply::ValidationConfig;
use serde::Deserialize;

/// A config error that names the field and says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `limits.user.limit`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[faq]`.
    pub faq: FaqConfig,
    /// `[validation]`.
    pub validation: ValidationConfig,
}
