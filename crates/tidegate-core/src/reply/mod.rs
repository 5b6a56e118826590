//! Post-validation of origin replies, whole or streamed.
//!
//! STUB: interface agreed with the host code; the reply helper replaces the body.

use serde::Deserialize;

/// `[validation]` in the config.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {}

impl ValidationConfig {
    /// Checks values serde cannot; the error names the field (relative to `[validation]`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}
