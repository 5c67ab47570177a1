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
//!   least recently used step records, layers and snapshots, never what a tag references.
//!
//! On disk:
//!
//! ```text
//! <root>/strata-store.json   {"version":1}
//! <root>/blobs/sha256/<hex>  content blobs (OCI image-layout shape, so exports can hard-link)
//! <root>/tmp/                temporary files for writes (same file system: atomic rename)
//! <root>/index-v1/           RocksDB
//! <root>/snapshots-v1/<hex>/ unpacked layers by diff_id (evicted by gc)
//! ```
//!
//! A store is used by one process at a time: RocksDB's lock on `index-v1` is the store lock.
//! [`Store::open_with`] waits (up to [`LOCK_WAIT`]) for another strata process to release it.

pub mod blobs;
pub mod digest;
pub mod error;
pub mod fsck;
pub mod gc;
pub mod index;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use blobs::{BlobStore, BlobWriter, VerifyingReader};
pub use digest::{Digest, DigestParseError, Sha256Hasher};
pub use error::StoreError;
pub use fsck::{fsck, FsckReport, Problem};
pub use gc::{gc, GcOptions, GcPolicy, GcReport};
pub use index::{ExplainInput, Index, LayerRecord, Lineage, StatEntry, StepRecord, TagRecord};

use error::IoContext;

/// The store layout version written to `strata-store.json`. Bumping it is deliberate: stores
/// written by older strata are then refused with [`StoreError::Version`]; the test
/// `refuses_a_store_with_another_version` must change with it.
pub const STORE_VERSION: u32 = 1;

/// How long [`Store::open`] waits for another process's lock before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

const MARKER: &str = "strata-store.json";
const INDEX_DIR: &str = "index-v1";

#[derive(Serialize, Deserialize)]
struct Marker {
    version: u32,
}

/// An open content store. `Send + Sync`: share it by reference or in an `Arc`.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blobs: BlobStore,
    index: Index,
}

impl Store {
    /// Opens the store at `root`, creating it if needed; waits silently for the lock.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_with(root, &|_| {})
    }

    /// Like [`Store::open`]; `on_wait` is called once, with a message for the user, if the
    /// store is locked by another strata process and we have to wait.
    pub fn open_with(root: &Path, on_wait: &dyn Fn(&str)) -> Result<Store, StoreError> {
        Store::open_inner(root, on_wait, LOCK_WAIT)
    }

    fn open_inner(
        root: &Path,
        on_wait: &dyn Fn(&str),
        max_wait: Duration,
    ) -> Result<Store, StoreError> {
        fs::create_dir_all(root).at("create directory", root)?;
        check_marker(root)?;
        let blobs = BlobStore::new(root)?;
        let index = open_index_waiting(&root.join(INDEX_DIR), on_wait, max_wait)?;
        sweep_leftovers(root);
        Ok(Store {
            root: root.to_path_buf(),
            blobs,
            index,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn index(&self) -> &Index {
        &self.index
    }
}

/// Reads `strata-store.json`, or writes it (atomically) for a new store.
fn check_marker(root: &Path) -> Result<(), StoreError> {
    let path = root.join(MARKER);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_marker(root, &path)?;
            return Ok(());
        }
        Err(e) => return Err(e).at("read", &path),
    };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|source| StoreError::Marker {
        path: path.clone(),
        source,
    })?;
    if marker.version != STORE_VERSION {
        return Err(StoreError::Version {
            path: root.to_path_buf(),
            found: marker.version,
            expected: STORE_VERSION,
        });
    }
    Ok(())
}

fn write_marker(root: &Path, path: &Path) -> Result<(), StoreError> {
    // Write-then-rename so two processes creating the same store never see half a file.
    let temp = root.join(format!("{MARKER}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec(&Marker {
        version: STORE_VERSION,
    })
    .expect("marker serialises");
    let mut f = fs::File::create(&temp).at("create", &temp)?;
    f.write_all(&json).at("write", &temp)?;
    f.sync_all().at("fsync", &temp)?;
    fs::rename(&temp, path).at("rename", path)?;
    Ok(())
}

/// Removes what killed processes left behind: everything in `tmp/` (blob temp files, `copy-*`
/// stage scratch trees, RUN upper dirs) and half-unpacked snapshots (`snapshots-v1/.tmp-*`).
///
/// Called with the index lock held. That lock is the store lock, held for a process's whole
/// lifetime (and RUN sandboxes die with their parent: `PR_SET_PDEATHSIG`), so nothing there can
/// belong to a live process. If the store ever allows several processes at once, this must
/// go by age instead (as `fsck` does with [`fsck::STALE_TEMP_AGE`]). Best effort: a leftover
/// that cannot be removed stays for `fsck --repair`.
fn sweep_leftovers(root: &Path) {
    let remove = |p: &Path| {
        let _ = if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(p)
        } else {
            fs::remove_file(p)
        };
    };
    if let Ok(entries) = fs::read_dir(root.join("tmp")) {
        for e in entries.flatten() {
            remove(&e.path());
        }
    }
    if let Ok(entries) = fs::read_dir(root.join("snapshots-v1")) {
        for e in entries.flatten() {
            if e.file_name().as_encoded_bytes().starts_with(b".tmp-") {
                remove(&e.path());
            }
        }
    }
}

/// RocksDB reports a held lock as an `IOError` naming the `LOCK` file, whether the holder is
/// another process ("Resource temporarily unavailable") or this one ("lock hold by current
/// process").
fn is_lock_error(e: &rocksdb::Error) -> bool {
    e.kind() == rocksdb::ErrorKind::IOError
        && AsRef::<str>::as_ref(e)
            .to_ascii_lowercase()
            .contains("lock")
}

fn open_index_waiting(
    path: &Path,
    on_wait: &dyn Fn(&str),
    max_wait: Duration,
) -> Result<Index, StoreError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(25);
    let mut told = false;
    loop {
        match Index::open(path) {
            Ok(index) => return Ok(index),
            Err(e) if is_lock_error(&e) => {
                if start.elapsed() >= max_wait {
                    return Err(StoreError::LockTimeout {
                        path: path.to_path_buf(),
                        waited: start.elapsed(),
                    });
                }
                if !told {
                    on_wait("waiting for the store lock held by another strata process");
                    told = true;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
    }

    #[test]
    fn creates_the_layout_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let d = {
            let store = Store::open(&root).unwrap();
            assert_eq!(store.root(), root);
            store.blobs().put(b"x").unwrap().0
        };
        for p in ["strata-store.json", "blobs/sha256", "tmp", "index-v1"] {
            assert!(root.join(p).exists(), "{p}");
        }
        assert_eq!(
            fs::read_to_string(root.join("strata-store.json")).unwrap(),
            r#"{"version":1}"#
        );
        let store = Store::open(&root).unwrap();
        assert!(store.blobs().contains(&d));
    }

    #[test]
    fn refuses_a_store_with_another_version() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("strata-store.json"), r#"{"version":2}"#).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Version {
                    found: 2,
                    expected: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("hint:"), "{err}");
        // Refused before anything else was created.
        assert!(!dir.path().join("index-v1").exists());

        fs::write(dir.path().join("strata-store.json"), "nonsense").unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Marker { .. })
        ));
    }

    #[test]
    fn second_open_waits_for_the_first_to_close() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let first = Store::open(&root).unwrap();
        let waits = Arc::new(AtomicUsize::new(0));
        let second = {
            let waits = Arc::clone(&waits);
            std::thread::spawn(move || {
                let store = Store::open_with(&root, &|msg: &str| {
                    assert!(msg.contains("store lock"));
                    waits.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
                store.blobs().put(b"from the second").unwrap();
            })
        };
        // Let the second one find the lock taken before releasing it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while waits.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(waits.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(200));
        drop(first);
        second.join().unwrap();
        assert_eq!(waits.load(Ordering::SeqCst), 1, "on_wait is called once");
    }

    #[test]
    fn opening_sweeps_what_killed_processes_left() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        drop(Store::open(root).unwrap());
        fs::write(root.join("tmp/blob-1-2-3"), b"half").unwrap();
        fs::create_dir_all(root.join("tmp/copy-abc/src/d")).unwrap();
        fs::write(root.join("tmp/copy-abc/src/d/f"), b"x").unwrap();
        fs::create_dir_all(root.join("snapshots-v1/.tmp-00ff-xyz/etc")).unwrap();
        fs::create_dir_all(root.join("snapshots-v1/00ff/etc")).unwrap();
        let store = Store::open(root).unwrap();
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        assert!(!root.join("snapshots-v1/.tmp-00ff-xyz").exists());
        assert!(
            root.join("snapshots-v1/00ff/etc").is_dir(),
            "snapshots stay"
        );
        // A write in progress in this process is not touched by another handle's checks.
        let w = store.blobs().writer().unwrap();
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 1);
        drop(w);
    }

    #[test]
    fn gives_up_after_the_wait_limit() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open_inner(dir.path(), &|_| {}, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, StoreError::LockTimeout { .. }), "{err:?}");
    }
}
