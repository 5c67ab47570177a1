//! `StoreError`: every failure of the content store and its index.
//!
//! Variants carry the facts (paths, digests, versions) so the CLI can print
//! `error:` + what + where, and a `hint:` where there is a likely fix.

use std::path::PathBuf;
use std::time::Duration;

use crate::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed; `path` names the file or directory.
    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The store was created by a strata with a different on-disk layout.
    #[error(
        "store `{path}` has layout version {found}, this strata uses version {expected}\n\
         hint: use a strata release that matches the store, or point `--store` at a new directory"
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },

    /// `strata-store.json` exists but cannot be parsed.
    #[error("store marker `{path}` is not valid: {source}")]
    Marker {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// Blob content does not hash to the digest it was stored or requested under.
    /// For writes (`commit_verified`) `path` is the temporary file, which has been removed.
    #[error("digest mismatch for `{path}`: expected {expected}, found {found}")]
    DigestMismatch {
        expected: Digest,
        found: Digest,
        path: PathBuf,
    },

    /// Another strata process kept the index lock for longer than we are willing to wait.
    #[error(
        "timed out after {}s waiting for the store lock on `{path}`\n\
         hint: another strata process is using this store; wait for it or use a different `--store`",
        .waited.as_secs()
    )]
    LockTimeout { path: PathBuf, waited: Duration },

    /// RocksDB reported an error.
    #[cfg(feature = "index")]
    #[error("store index: {0}")]
    Db(#[from] rocksdb::Error),

    /// An index value was written by a newer (or unknown) schema.
    #[error("store index: {what} record has schema version {found}, expected {expected}")]
    Schema {
        what: &'static str,
        found: u8,
        expected: u8,
    },

    /// An index value has the right schema version but does not decode.
    #[error("store index: corrupt {what} record: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

/// Attaches the operation and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
