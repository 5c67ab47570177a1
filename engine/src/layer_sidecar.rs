//! Files kept in the store beside a layer, by diff_id: what is derived from a layer once and
//! read on every later build (the read-set index, `readset::index`; the SBOM scan,
//! `sbom::cache`).
//!
//! `<store>/<area>/<diff_id hex>` holds the `sha256:<hex>` of the blob the layer was read from
//! (71 bytes: `strata gc` removes a file whose blob is gone), an 8-byte magic, the payload's
//! format (u32 LE), the BLAKE3 of the payload, then the payload. It is written to the store's
//! scratch directory and renamed into place, so a killed process never leaves a partial file;
//! a file that fails any check (torn, another format, damaged) reads as absent and is rebuilt
//! by its owner, never trusted.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use strata_cache::{Area, Digest};

/// Length of the `sha256:<hex>` blob reference that starts a file.
const BLOB_REF_LEN: usize = 71;

/// One kind of sidecar file: where it lives and how its payload is marked.
pub(crate) struct Sidecar {
    pub area: Area,
    pub magic: &'static [u8; 8],
    /// The payload's format: a file of another is absent.
    pub format: u32,
    /// The temp file's name prefix, for a person looking at the scratch directory.
    pub temp_prefix: &'static str,
}

/// Why a sidecar file could not be written.
#[derive(Debug)]
pub(crate) struct WriteError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl Sidecar {
    /// Where the file of layer `diff_id` is kept in the store at `root`.
    pub fn path(&self, root: &Path, diff_id: &Digest) -> PathBuf {
        self.area.path(root).join(diff_id.hex())
    }

    /// The payload in `path` if the file is whole and of this kind and format. The caller
    /// checks that the payload is of the diff_id it asked for.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let bytes = std::fs::read(path).ok()?;
        let rest = bytes.get(BLOB_REF_LEN..)?;
        let rest = rest.strip_prefix(self.magic.as_slice())?;
        let (version, rest) = rest.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*version) != self.format {
            return None;
        }
        let (sum, payload) = rest.split_first_chunk::<32>()?;
        (blake3::hash(payload).as_bytes() == sum).then(|| payload.to_vec())
    }

    /// Writes `payload`, derived from the blob `blob`, to `path`: a temp file in the store's
    /// scratch directory (same file system) renamed into place.
    pub fn write(
        &self,
        store: &strata_cache::Store,
        path: &Path,
        blob: &Digest,
        payload: &[u8],
    ) -> Result<(), WriteError> {
        let err = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| WriteError {
                op,
                path: p,
                source,
            }
        };
        let blob_ref = blob.to_string();
        debug_assert_eq!(blob_ref.len(), BLOB_REF_LEN);
        let mut tmp = tempfile::Builder::new()
            .prefix(self.temp_prefix)
            .tempfile_in(store.scratch())
            .map_err(err("create temp file in", store.scratch()))?;
        let tmp_path = tmp.path().to_path_buf();
        let mut w = io::BufWriter::new(tmp.as_file_mut());
        (|| {
            w.write_all(blob_ref.as_bytes())?;
            w.write_all(self.magic)?;
            w.write_all(&self.format.to_le_bytes())?;
            w.write_all(blake3::hash(payload).as_bytes())?;
            w.write_all(payload)?;
            w.flush()
        })()
        .map_err(err("write", &tmp_path))?;
        drop(w);
        let dir = path.parent().unwrap_or(path);
        std::fs::create_dir_all(dir).map_err(err("create directory", dir))?;
        tmp.persist(path)
            .map_err(|e| err("rename into place", path)(e.error))?;
        Ok(())
    }
}
