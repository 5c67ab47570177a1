//! strata's content store: blobs by sha256 and the RocksDB index.
//!
//! - [`Store`] opens (creating if needed) a store directory and checks its layout version.
//! - [`BlobStore`] holds content blobs under `blobs/sha256/<hex>`. Writes go through a
//!   [`BlobWriter`] (hash while writing, fsync, atomic rename); reads are checked against the
//!   digest, whole ([`BlobStore::read_verified`]) or streaming ([`VerifyingReader`]).
//! - [`Index`] maps step keys to [`StepRecord`]s, layer diff_ids to compressed
//!   [`LayerRecord`]s, host paths to [`StatEntry`]s (the stat cache) and tag names to
//!   [`TagRecord`]s.
//! - [`fsck()`] re-hashes every blob and checks every record's references; [`gc()`] evicts
//!   least recently used step records, layers, snapshots and cache mounts, never what a tag
//!   references.
//!
//! Without the default feature `index` only the blob store, digests and errors are built (no
//! RocksDB): the fuzz targets (`fuzz/`) use that.
//!
//! On disk (every name under the root is an [`Area`]):
//!
//! ```text
//! <root>/strata-store.json   {"version":1}
//! <root>/blobs/sha256/<hex>  content blobs (OCI image-layout shape, so exports can hard-link)
//! <root>/tmp/p-<pid>-<n>/    one scratch directory per open `Store` (temp files for writes,
//!                            stage scratch trees, RUN upper dirs, unpacking snapshots), locked
//!                            by `tmp/p-<pid>-<n>.lock` while its owner lives
//! <root>/index-v1/           RocksDB
//! <root>/index-v1.lock       the index lock (`flock`), held only around index operations
//! <root>/snapshots-v2/<hex>/ unpacked layers by diff_id (evicted by gc)
//! <root>/cache-mounts-v1/    `RUN --mount=type=cache` directories and their last use (evicted
//!                            by gc)
//! <root>/readset-index-v1/   the engine's per-layer path indexes by diff_id (read-set reuse;
//!                            gc removes those whose blob is gone)
//! <root>/sbom-index-v1/      the engine's per-layer SBOM scans by diff_id (gc removes those
//!                            whose blob is gone)
//! ```
//!
//! Many strata processes can use a store at once (docs/store.md): the index is opened on
//! demand under the index lock and closed when idle ([`index`]); blobs and snapshots are
//! written to the scratch directory and renamed into place, which is atomic and idempotent.
//! A wait for the index lock longer than [`lock::QUIET_WAIT`] is reported through `on_wait`;
//! after [`LOCK_WAIT`] it fails.

pub mod areas;
pub mod blobs;
pub mod boot_id;
#[cfg(feature = "index")]
pub mod cache_mounts;
pub mod digest;
pub mod error;
#[cfg(feature = "index")]
pub mod fsck;
#[cfg(feature = "index")]
pub mod gc;
#[cfg(feature = "index")]
pub mod index;
#[cfg(feature = "index")]
pub mod lock;
pub mod records;
pub mod snapshot_use;
#[cfg(feature = "index")]
mod stat_set;
#[cfg(feature = "index")]
mod store;

pub use areas::Area;
pub use blobs::{BlobStore, BlobWriter, VerifyingReader};
pub use digest::{Digest, DigestParseError, Sha256Hasher};
pub use error::StoreError;
#[cfg(feature = "index")]
pub use fsck::{fsck, FsckReport, Problem};
#[cfg(feature = "index")]
pub use gc::{gc, GcOptions, GcPolicy, GcReport, RootlessSnapshots, CHUNK_REFS_DIR};
#[cfg(feature = "index")]
pub use index::{Index, IndexHold, Lineage, OnWait, ParentFacts, StatEntry, TagRecord};
pub use records::{
    ExplainInput, ExplainRecord, FileCursor, FileFacts, FileFactsBuilder, LayerRecord, StepRecord,
};
#[cfg(feature = "index")]
pub use store::{Store, LOCK_WAIT, STORE_VERSION};

/// Seconds since the Unix epoch now (0 if the clock is before it): what records store as their
/// creation or last-use time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `1.2 GiB`, `512 B`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}
