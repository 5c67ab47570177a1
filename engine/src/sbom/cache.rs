//! The per-layer cache of [`LayerPackages`], in the store by diff_id, in the form of the
//! read-set layer indexes (`readset::index`):
//!
//! `<store>/sbom-index-v1/<diff_id hex>` is the `sha256:<hex>` of the blob the layer was read
//! from (71 bytes: `strata gc` removes an entry whose blob is gone), [`MAGIC`], the format
//! version (u32 LE), the BLAKE3 of the payload, then the payload (bincode of
//! [`LayerPackages`]). It is written to the store's scratch directory and renamed into place,
//! so a killed process never leaves a partial file; a file that fails any check (torn by a
//! crash, of another format, of another diff_id) is rebuilt from the layer, never trusted.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use strata_cache::{Area, Digest};

use super::{LayerPackages, SbomError};
use crate::image::LayerDesc;

/// Marks a cache file (after the blob reference).
pub const MAGIC: &[u8; 8] = b"SSBOMIDX";
/// The payload's format: bump it when [`LayerPackages`] or what a scan reads changes (a new
/// ecosystem, a parser fix), so that old entries are rebuilt.
pub const FORMAT: u32 = 1;
/// Length of the `sha256:<hex>` blob reference that starts a file.
const BLOB_REF_LEN: usize = 71;

/// Where the entry of layer `diff_id` is kept in the store at `root`.
pub fn index_path(root: &Path, diff_id: &Digest) -> PathBuf {
    Area::SbomIndex.path(root).join(diff_id.hex())
}

/// The entry in `path` if it is whole, of the current format, and of `diff_id`.
pub fn read(path: &Path, diff_id: &Digest) -> Option<LayerPackages> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.get(BLOB_REF_LEN..)?;
    let rest = rest.strip_prefix(MAGIC.as_slice())?;
    let (version, rest) = rest.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != FORMAT {
        return None;
    }
    let (sum, payload) = rest.split_first_chunk::<32>()?;
    if blake3::hash(payload).as_bytes() != sum {
        return None;
    }
    let p: LayerPackages = bincode::deserialize(payload).ok()?;
    (p.diff_id == *diff_id).then_some(p)
}

/// Writes `scanned` (of `layer`) to `path`: a temp file in the store's scratch directory (same
/// file system) renamed into place.
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
    let io_err = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| SbomError::Io {
            op,
            path: p,
            source,
        }
    };
    let blob_ref = layer.digest.to_string();
    debug_assert_eq!(blob_ref.len(), BLOB_REF_LEN);
    let mut tmp = tempfile::Builder::new()
        .prefix("sbom-index-")
        .tempfile_in(store.scratch())
        .map_err(io_err("create temp file in", store.scratch()))?;
    let tmp_path = tmp.path().to_path_buf();
    let mut w = io::BufWriter::new(tmp.as_file_mut());
    (|| {
        w.write_all(blob_ref.as_bytes())?;
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT.to_le_bytes())?;
        w.write_all(blake3::hash(&payload).as_bytes())?;
        w.write_all(&payload)?;
        w.flush()
    })()
    .map_err(io_err("write", &tmp_path))?;
    drop(w);
    let dir = path.parent().unwrap_or(path);
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    tmp.persist(path)
        .map_err(|e| io_err("rename into place", path)(e.error))?;
    Ok(())
}
