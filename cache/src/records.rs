//! The records of build steps and their layers: plain data, shared by the index (which stores
//! them) and by what exports or imports them without an index (the shared step cache).

use serde::{Deserialize, Serialize};

use crate::Digest;

/// The cached result of one build step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The layer the step produced; `None` for steps that only change the config.
    pub layer: Option<LayerRecord>,
    /// The named inputs of the step key, so `--explain` can say why a later key differs.
    pub explain: Vec<ExplainInput>,
    pub created_unix: u64,
}

/// A layer blob in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob as stored (compressed).
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub uncompressed_size: u64,
}

/// One named input of a step key, e.g. `("file:src/main.rs", blake3)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainInput {
    pub name: String,
    pub value: [u8; 32],
}
