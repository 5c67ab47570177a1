//! The per-layer cache of [`LayerPackages`], in the store by diff_id, a `layer_sidecar` file as
//! the read-set layer indexes are (`readset::index`):
//!
//! `<store>/sbom-index-v1/<diff_id hex>` is the `sha256:<hex>` of the blob the layer was read
//! from (71 bytes: `strata gc` removes an entry whose blob is gone), [`MAGIC`], the format
//! version (u32 LE), the BLAKE3 of the payload, then the payload (bincode of
//! [`LayerPackages`]). It is written to the store's scratch directory and renamed into place,
//! so a killed process never leaves a partial file; a file that fails any check (torn by a
//! crash, of another format, of another diff_id) is rebuilt from the layer, never trusted.

use std::path::{Path, PathBuf};

use strata_cache::{Area, Digest};

use super::{LayerPackages, SbomError};
use crate::image::LayerDesc;
use crate::layer_sidecar::Sidecar;

/// Marks a cache file (after the blob reference).
pub const MAGIC: &[u8; 8] = b"SSBOMIDX";
/// The payload's format: bump it when [`LayerPackages`] or what a scan reads changes (a new
/// ecosystem, a parser fix), so that old entries are rebuilt.
pub const FORMAT: u32 = 1;

const FILE: Sidecar = Sidecar {
    area: Area::SbomIndex,
    magic: MAGIC,
    format: FORMAT,
    temp_prefix: "sbom-index-",
};

/// Where the entry of layer `diff_id` is kept in the store at `root`.
pub fn index_path(root: &Path, diff_id: &Digest) -> PathBuf {
    FILE.path(root, diff_id)
}

/// The entry in `path` if it is whole, of the current format, and of `diff_id`.
pub fn read(path: &Path, diff_id: &Digest) -> Option<LayerPackages> {
    let payload = FILE.read(path)?;
    let p: LayerPackages = bincode::deserialize(&payload).ok()?;
    (p.diff_id == *diff_id).then_some(p)
}

/// Writes `scanned` (of `layer`) to `path` ([`Sidecar::write`]).
pub fn write(
    store: &strata_cache::Store,
    path: &Path,
    layer: &LayerDesc,
    scanned: &LayerPackages,
) -> Result<(), SbomError> {
    let payload = bincode::serialize(scanned).map_err(|source| SbomError::Encode {
        digest: layer.digest,
        source,
    })?;
    FILE.write(store, path, &layer.digest, &payload)
        .map_err(|e| SbomError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        })
}
