//! Hot-FAQ answers from a knowledge base held in KV.
//!
//! STUB: interface agreed with the host code; the FAQ helper replaces the body.

use serde::Deserialize;

/// `[faq]` in the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FaqConfig {
    /// Serve FAQ answers at all.
    pub enabled: bool,
}

impl Default for FaqConfig {
    fn default() -> Self {
        FaqConfig { enabled: true }
    }
}

impl FaqConfig {
    /// Checks values serde cannot; the error names the field (relative to `[faq]`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}

/// A served answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit<'a> {
    /// Entry id.
    pub id: &'a str,
    /// Answer text.
    pub answer: &'a str,
    /// Match score.
    pub score: f32,
}

/// Why a knowledge-base artefact could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KbError(pub String);

/// A loaded knowledge base.
#[derive(Clone, Debug, Default)]
pub struct KnowledgeBase {
    version: String,
}

impl KnowledgeBase {
    /// Loads the artefact `tidegate kb build` writes.
    pub fn from_artifact(_bytes: &[u8]) -> Result<Self, KbError> {
        Ok(KnowledgeBase::default())
    }

    /// The artefact's version (part of every cache key).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The answer to serve for `query`, if one is strong and clearly ahead of the rest.
    pub fn lookup(&self, _query: &str, _locale: Option<&str>, _cfg: &FaqConfig) -> Option<Hit<'_>> {
        None
    }
}
