//! [`Store`]: opening a store directory, its layout version, scratch directories and the sweep
//! of what dead processes left (see the crate docs and docs/store.md).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::{fsck, lock, Area, BlobStore, Index, OnWait, StoreError};

use crate::error::IoContext;

/// The store layout version written to `strata-store.json`. Bumping it is deliberate: stores
/// written by older strata are then refused with [`StoreError::Version`]; the test
/// `refuses_a_store_with_another_version` must change with it.
pub const STORE_VERSION: u32 = 1;

/// How long an index operation waits for another process's lock before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// In a store handle's scratch directory: the step keys it has hit (`Index::use_step`).
pub(crate) const IN_USE: &str = "in-use";

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
    scratch: lock::Scratch,
}

impl Store {
    /// Opens the store at `root`, creating it if needed; waits silently for the lock.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_with(root, Arc::new(|_: &str| {}))
    }

    /// Like [`Store::open`]; `on_wait` is called with a message for the user whenever an
    /// index operation has waited more than [`lock::QUIET_WAIT`] for another strata process.
    pub fn open_with(root: &Path, on_wait: OnWait) -> Result<Store, StoreError> {
        Store::open_inner(root, on_wait, LOCK_WAIT)
    }

    fn open_inner(root: &Path, on_wait: OnWait, max_wait: Duration) -> Result<Store, StoreError> {
        fs::create_dir_all(root).at("create directory", root)?;
        check_marker(root)?;
        let tmp = Area::Tmp.path(root);
        let blobs = BlobStore::new(root)?;
        sweep_leftovers(root);
        let scratch = lock::Scratch::create(&tmp)?;
        let blobs = blobs.with_tmp(scratch.path());
        let index = Index::new(
            &Area::Index.path(root),
            &Area::IndexLock.path(root),
            on_wait,
            max_wait,
            Some(&scratch.path().join(IN_USE)),
        )?;
        // Fail now, not at the first lookup, if the index cannot be opened at all.
        index.check_open()?;
        Ok(Store {
            root: root.to_path_buf(),
            blobs,
            index,
            scratch,
        })
    }

    /// This handle's private scratch directory (`<root>/tmp/p-<pid>-<n>/`), on the store's file
    /// system: temporary trees and files that are renamed into the store go here. Removed when
    /// the `Store` is dropped; swept by the next `Store::open` if this process dies.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
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
    let path = Area::Marker.path(root);
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
    let temp = root.join(format!(
        "{}.{}.tmp",
        Area::Marker.name(),
        std::process::id()
    ));
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

/// Removes what killed processes left behind: the scratch directories in `tmp/` whose lock
/// nobody holds (blob temp files, `copy-*` stage scratch trees, RUN upper dirs, snapshots being
/// unpacked) and, by age ([`fsck::STALE_TEMP_AGE`]), anything else in `tmp/` and half-unpacked
/// snapshots (`snapshots-v*/.tmp-*`) written by older strata versions.
///
/// Safe while other processes use the store: a live handle holds its scratch lock (and RUN
/// sandboxes die with their parent: `PR_SET_PDEATHSIG`). Best effort: a leftover that cannot be
/// removed stays for `fsck --repair`.
/// `.p-<pid>-….lock.new`: a scratch lock file its creator had not yet renamed into place
/// (`lock::Scratch::create`), left only when the creator was killed in between — it holds the
/// name for microseconds otherwise. Orphaned once that process is gone; a reused pid only
/// keeps it until it is stale.
fn orphan_pending_lock(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b".p-") else {
        return false;
    };
    if !name.ends_with(b".lock.new") {
        return false;
    }
    let pid = rest
        .split(|b| *b == b'-')
        .next()
        .and_then(|p| std::str::from_utf8(p).ok()?.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    pid.is_some_and(|pid| rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH))
}

fn sweep_leftovers(root: &Path) {
    let remove = |p: &Path| {
        let _ = if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(p)
        } else {
            fs::remove_file(p)
        };
    };
    let stale = |p: &Path| {
        fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > fsck::STALE_TEMP_AGE)
    };
    let tmp = Area::Tmp.path(root);
    if let Ok(entries) = fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.as_encoded_bytes();
            let p = e.path();
            if name.starts_with(b"p-") {
                // Directory first, then its lock file (removing the lock file of a live owner
                // would let the next sweeper take its directory).
                if !name.ends_with(b".lock") && !lock::scratch_is_live(&tmp, name) {
                    remove(&p);
                    let mut l = p.into_os_string();
                    l.push(".lock");
                    let l = PathBuf::from(l);
                    if !lock::scratch_is_live(&tmp, name) {
                        remove(&l);
                    }
                } else if name.ends_with(b".lock") && !lock::scratch_is_live(&tmp, name) {
                    let dir = p.with_extension("");
                    if !dir.exists() {
                        remove(&p);
                    }
                }
            } else if orphan_pending_lock(name) || stale(&p) {
                remove(&p);
            }
        }
    }
    if let Ok(entries) = fs::read_dir(root) {
        for dir in entries.flatten() {
            if !dir
                .file_name()
                .as_encoded_bytes()
                .starts_with(crate::areas::SNAPSHOT_AREAS_PREFIX.as_bytes())
            {
                continue;
            }
            for e in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                if e.file_name().as_encoded_bytes().starts_with(b".tmp-") && stale(&e.path()) {
                    remove(&e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Digest, TagRecord};
    use std::sync::atomic::{AtomicUsize, Ordering};

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
    fn an_open_waits_for_a_hold_in_another_handle_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let first = Store::open(&root).unwrap();
        let hold = first.index().hold().unwrap();
        let waits = Arc::new(AtomicUsize::new(0));
        let second = {
            let waits = Arc::clone(&waits);
            std::thread::spawn(move || {
                let store = Store::open_with(
                    &root,
                    Arc::new(move |msg: &str| {
                        assert!(msg.contains("store lock"), "{msg}");
                        waits.fetch_add(1, Ordering::SeqCst);
                    }),
                )
                .unwrap();
                store.blobs().put(b"from the second").unwrap();
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while waits.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(waits.load(Ordering::SeqCst), 1);
        drop(hold);
        second.join().unwrap();
        assert_eq!(waits.load(Ordering::SeqCst), 1, "on_wait is called once");
    }

    #[test]
    fn two_handles_share_the_store_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open_with(dir.path(), Arc::new(|m: &str| panic!("waited: {m}"))).unwrap();
        let tag = TagRecord {
            manifest: Digest::of(b"m"),
            config: Digest::of(b"c"),
            media_type: String::new(),
        };
        a.index().put_tag("t", &tag).unwrap();
        assert_eq!(b.index().get_tag("t").unwrap(), Some(tag));
        assert_ne!(a.scratch(), b.scratch());
    }

    #[test]
    fn opening_sweeps_what_dead_processes_left_and_nothing_live() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let live = Store::open(root).unwrap();
        fs::write(live.scratch().join("blob-1-2-3"), b"in progress").unwrap();
        // A dead process's scratch directory: its lock file exists but nobody holds it.
        let dead = root.join("tmp/p-999999-0-0");
        fs::create_dir_all(dead.join("copy-abc/src/d")).unwrap();
        fs::write(dead.join("copy-abc/src/d/f"), b"x").unwrap();
        fs::write(root.join("tmp/p-999999-0-0.lock"), b"").unwrap();
        // Killed between creating its lock file and renaming it into place.
        fs::write(root.join("tmp/.p-999999-1-0.lock.new"), b"").unwrap();
        let ours = format!("tmp/.p-{}-99-0.lock.new", std::process::id());
        fs::write(root.join(&ours), b"").unwrap();
        // An old strata's temp file: removed only once stale.
        fs::write(root.join("tmp/blob-1-2-3"), b"half").unwrap();
        fs::create_dir_all(root.join("snapshots-v1/00ff/etc")).unwrap();
        let other = Store::open(root).unwrap();
        assert!(!dead.exists());
        assert!(!root.join("tmp/p-999999-0-0.lock").exists());
        assert!(!root.join("tmp/.p-999999-1-0.lock.new").exists());
        assert!(root.join(&ours).exists(), "its creator is alive");
        assert!(
            live.scratch().join("blob-1-2-3").is_file(),
            "a live handle's files stay"
        );
        assert!(other.scratch().is_dir());
        assert!(
            root.join("tmp/blob-1-2-3").is_file(),
            "young legacy temp stays"
        );
        assert!(
            root.join("snapshots-v1/00ff/etc").is_dir(),
            "snapshots stay"
        );
        // Blob writes go to the handle's scratch directory.
        let w = other.blobs().writer().unwrap();
        assert_eq!(
            fs::read_dir(other.scratch()).unwrap().count(),
            2,
            "in-use + the temp"
        );
        drop(w);
        let scratch = other.scratch().to_path_buf();
        drop(other);
        assert!(
            !scratch.exists(),
            "a dropped handle removes its scratch directory"
        );
    }

    #[test]
    fn gives_up_after_the_wait_limit() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let _hold = first.index().hold().unwrap();
        let err = Store::open_inner(
            dir.path(),
            Arc::new(|_: &str| {}),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::LockTimeout { .. }), "{err:?}");
    }
}
