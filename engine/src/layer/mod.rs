//! The canonical layer form: entries → canonical tar → chunked, parallel, deterministic
//! compression; and reading archives/layer blobs back.
//!
//! The byte-level specification lives in `docs/layer-format.md`; every rule there is
//! implemented here and pinned by the golden-digest tests in [`compress`].
//!
//! - [`canonicalize`] sorts entries, adds parent directories, rejects bad or duplicate paths
//!   and drops xattrs other than `security.capability`.
//! - [`write_layer`] streams the canonical tar of canonical entries through the compressor
//!   and returns diff_id / digest / sizes.
//! - [`LayerReader`] reads layer blobs safely (decompression by media type, [`Limits`], the
//!   PAX size check, path checks, [`whiteout`]s classified): snapshots, deltas, the COPY
//!   parent view.
//! - [`open_archive`] reads ADD's local archives.

mod ahead;
mod archive;
mod compress;
mod entry;
mod read;
mod tar;
pub mod whiteout;

use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use crate::oci::{
    MEDIA_TYPE_DOCKER_TAR_GZIP, MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD,
};

pub use ahead::ReadAhead;
pub use archive::open_archive;
/// Public for the benches (`benches/benches/layer.rs`).
pub use compress::looks_incompressible;
pub use compress::{
    write_layer, write_layer_cached, write_layer_tee, BlobSink, ChunkCache, ChunkDir, ChunkRef,
    Hashing, RawTee, CHUNK_MAX, CHUNK_MIN, GZIP_CLASS_BLOCK,
};
pub use entry::{canonicalize, path_cmp, Content, Entry, EntryKind, KEPT_XATTRS};
pub use read::{
    check_pax_size, decompress_reader, decompress_reader_limited, for_each_with_diff_id,
    path_components, HashedStream, LayerEntry, LayerReader, Limits, PaxSize, ReadError,
    MAX_USTAR_SIZE,
};
pub use tar::CHUNK_SOFT;

/// The layer compression. Every parameter is fixed (see `docs/layer-format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The OCI media type of a layer blob written with this compression.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_TYPE_TAR_GZIP,
            Compression::Zstd => MEDIA_TYPE_TAR_ZSTD,
            Compression::None => MEDIA_TYPE_TAR,
        }
    }

    /// Identifies compressor, library version, parameters and chunking rule. It goes into cache
    /// keys: two layers with the same diff_id and the same `id()` have the same digest.
    /// Bump it whenever any of these change (the tests check the library versions against
    /// `Cargo.lock`).
    pub fn id(&self) -> &'static str {
        match self {
            Compression::Gzip => "gzip-zlibrs0.6.8-l6-store4k-chi512vd-os255-cdc4m8m16m-v3",
            Compression::Zstd => "zstd1.5.7-l3-wlog21-nocksum-csize-w0-cdc4m8m16m-v2",
            Compression::None => "none-v1",
        }
    }

    /// The compression of a layer blob with the given media type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            MEDIA_TYPE_TAR_GZIP | MEDIA_TYPE_DOCKER_TAR_GZIP => Some(Compression::Gzip),
            MEDIA_TYPE_TAR_ZSTD => Some(Compression::Zstd),
            MEDIA_TYPE_TAR => Some(Compression::None),
            _ => None,
        }
    }
}

/// The name [`FromStr`] reads (`gzip`, `zstd`, `none`).
impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        })
    }
}

impl FromStr for Compression {
    type Err = LayerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            _ => Err(LayerError::UnknownCompression(s.to_string())),
        }
    }
}

/// The result of [`write_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOutput {
    /// sha256 of the uncompressed tar.
    pub diff_id: strata_cache::Digest,
    /// sha256 of the compressed blob (equals `diff_id` for [`Compression::None`]).
    pub digest: strata_cache::Digest,
    /// Compressed bytes written to `out`.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    pub media_type: &'static str,
    /// Where the full-size compressed chunks lie in the blob: hand them to
    /// [`ChunkCache::record`] once the blob is committed (empty without a chunk cache).
    pub chunks: Vec<ChunkRef>,
    /// Tar bytes that went through the compressor, and tar bytes whose compressed chunk was
    /// reused from the [`ChunkCache`] (both 0 for [`Compression::None`]).
    pub compressed_raw: u64,
    pub reused_raw: u64,
}

/// Errors of the layer module. Each names the entry path (or host path) it is about.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("invalid layer path `{path}`: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("duplicate layer path `{path}`")]
    Duplicate { path: String },
    #[error("`{path}` needs parent `{parent}` to be a directory, but it is not")]
    ParentNotDirectory { path: String, parent: String },
    #[error("hard link `{path}` -> `{target}`: {reason}")]
    BadHardLink {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("entry `{path}` cannot be represented in the layer: {reason}")]
    Unrepresentable { path: String, reason: String },
    #[error("reading `{}` for layer entry `{path}`: {source}", host.display())]
    ReadSource {
        path: String,
        host: PathBuf,
        source: io::Error,
    },
    #[error("`{}` (layer entry `{path}`) is not a regular file", host.display())]
    NotRegularFile { path: String, host: PathBuf },
    #[error(
        "`{}` (layer entry `{path}`) changed during the build: expected {expected} bytes, found {found}",
        host.display()
    )]
    SourceChanged {
        path: String,
        host: PathBuf,
        expected: u64,
        found: String,
    },
    #[error("compressing layer chunk {chunk}: {source}")]
    Compress { chunk: u64, source: io::Error },
    #[error("writing layer output: {0}")]
    Write(#[source] io::Error),
    #[error("opening archive `{}`: {source}", path.display())]
    Archive { path: PathBuf, source: io::Error },
    #[error(
        "zstd frame needs a window of {window} bytes, more than the limit of 2^{limit_log} (a decompression bomb, or a layer compressed with `zstd --long`): recompress it with a smaller window"
    )]
    ZstdWindow { window: u64, limit_log: u32 },
    #[error("unsupported layer media type `{0}`")]
    UnsupportedMediaType(String),
    #[error("unknown compression `{0}` (expected gzip, zstd or none)")]
    UnknownCompression(String),
}
