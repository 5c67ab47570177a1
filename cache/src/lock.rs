//! File locks (`flock(2)`) that let several strata processes share one store.
//!
//! - The **index lock** (`<root>/index-v1.lock`): taken around every batch of index operations
//!   (see [`crate::index`]), never for a whole build.
//! - **Scratch locks** (`<root>/tmp/p-<pid>-<n>.lock`): each open [`crate::Store`] works in its own
//!   scratch directory `<root>/tmp/p-<pid>-<n>/` and holds that directory's lock while it lives,
//!   so `Store::open` in another process sweeps only the scratch directories of dead processes.
//!
//! `flock` locks belong to an open file description: they are released when the process dies
//! (even by SIGKILL), and two handles in the same process exclude each other like two processes.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use crate::error::{IoContext, StoreError};

/// Tries to take an exclusive lock on `file` without blocking: `Ok(false)` if someone holds it.
pub(crate) fn try_lock(file: &File, path: &Path) -> Result<bool, StoreError> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)).at("lock", path),
    }
}

/// How long a wait for the index lock stays silent: index operations are short, so a wait of a
/// few milliseconds is normal traffic; only a longer one (gc, fsck --repair, a long batch) is
/// worth telling the user about.
pub const QUIET_WAIT: Duration = Duration::from_secs(1);

/// Opens (creating) `path` and takes an exclusive lock on it, polling until `max_wait`.
/// `on_wait` is called once if the wait lasts longer than [`QUIET_WAIT`].
pub(crate) fn lock_waiting(
    path: &Path,
    on_wait: &dyn Fn(&str),
    max_wait: Duration,
) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at("open lock file", path)?;
    let start = Instant::now();
    let mut told = false;
    let mut delay = Duration::from_micros(500);
    loop {
        if try_lock(&file, path)? {
            return Ok(file);
        }
        let waited = start.elapsed();
        if waited >= max_wait {
            return Err(StoreError::LockTimeout {
                path: path.to_path_buf(),
                waited,
            });
        }
        if !told && waited >= QUIET_WAIT {
            on_wait(&format!(
                "waiting for the store lock held by another strata process (`{}`)",
                path.display()
            ));
            told = true;
        }
        std::thread::sleep(delay);
        // Short polls: holders release within milliseconds, and a long sleep here would let
        // the holder take the lock again before we look.
        delay = (delay * 2).min(Duration::from_millis(5));
    }
}

static SCRATCH_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A store handle's private scratch directory under `<root>/tmp`, locked while it lives and
/// removed when dropped.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl Scratch {
    /// Creates `tmp/p-<pid>-<n>/` and its locked `tmp/p-<pid>-<n>.lock`.
    ///
    /// The lock file is created and locked under a temporary name first and then renamed into
    /// place, so whoever sees `p-….lock` sees a locked file: a sweeping process can never take
    /// the lock in the moment between our create and our `flock`.
    pub(crate) fn create(tmp: &Path) -> Result<Scratch, StoreError> {
        let n = SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("p-{}-{n}-{nanos:x}", std::process::id());
        let dir = tmp.join(&name);
        let lock_path = tmp.join(format!("{name}.lock"));
        let pending = tmp.join(format!(".{name}.lock.new"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&pending)
            .at("create lock file", &pending)?;
        if !try_lock(&file, &pending)? {
            return Err(StoreError::Io {
                op: "lock",
                path: pending,
                source: std::io::Error::other("a fresh lock file is already locked"),
            });
        }
        fs::rename(&pending, &lock_path).at("rename lock file to", &lock_path)?;
        fs::create_dir(&dir).at("create directory", &dir)?;
        Ok(Scratch {
            dir,
            lock_path,
            _lock: file,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Whether the entry `tmp/<name>` belongs to a live store handle: it is a scratch directory (or
/// its lock file) whose lock someone holds. Errors count as live (never delete on doubt).
pub(crate) fn scratch_is_live(tmp: &Path, name: &[u8]) -> bool {
    let Some(base) = scratch_name(name) else {
        return false;
    };
    let lock_path = tmp.join(format!("{base}.lock"));
    let Ok(file) = OpenOptions::new().read(true).write(true).open(&lock_path) else {
        // No lock file: a directory whose owner died after removing it, or one being created
        // (the lock file comes first, so that cannot be).
        return false;
    };
    !matches!(try_lock(&file, &lock_path), Ok(true))
}

/// `p-<pid>-<n>-<x>` for `p-<pid>-<n>-<x>` or `p-<pid>-<n>-<x>.lock`.
fn scratch_name(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    let base = name.strip_suffix(".lock").unwrap_or(name);
    base.starts_with("p-").then(|| base.to_string())
}

/// The step keys that live store handles have hit: the union of the `in-use` lists in the
/// scratch directories whose lock is held. Unreadable lists and malformed lines are skipped.
pub(crate) fn steps_in_use(tmp: &Path) -> std::collections::BTreeSet<[u8; 32]> {
    let mut out = std::collections::BTreeSet::new();
    for line in live_lists(tmp, crate::store::IN_USE) {
        let mut k = [0u8; 32];
        if hex::decode_to_slice(line.trim(), &mut k).is_ok() {
            out.insert(k);
        }
    }
    out
}

/// The snapshot names that live store handles use ([`crate::snapshot_use`]).
pub(crate) fn snapshots_in_use(tmp: &Path) -> std::collections::BTreeSet<String> {
    live_lists(tmp, crate::snapshot_use::SNAPSHOTS_IN_USE)
        .into_iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The lines of the lists named `file` in the scratch directories whose lock is held.
pub(crate) fn live_lists(tmp: &Path, file: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(tmp) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.as_encoded_bytes();
        if !name.starts_with(b"p-") || name.ends_with(b".lock") || !scratch_is_live(tmp, name) {
            continue;
        }
        let Ok(text) = fs::read_to_string(e.path().join(file)) else {
            continue;
        };
        out.extend(text.lines().map(str::to_string));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_dir_is_live_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch::create(dir.path()).unwrap();
        let name = s.path().file_name().unwrap().as_encoded_bytes().to_vec();
        assert!(s.path().is_dir());
        assert!(scratch_is_live(dir.path(), &name));
        let mut lock_name = name.clone();
        lock_name.extend_from_slice(b".lock");
        assert!(scratch_is_live(dir.path(), &lock_name));
        let path = s.path().to_path_buf();
        drop(s);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // A directory left without its lock (owner killed mid-cleanup) is not live.
        fs::create_dir(&path).unwrap();
        assert!(!scratch_is_live(dir.path(), &name));
    }

    #[test]
    fn lock_waiting_times_out_and_tells_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        let held = lock_waiting(&p, &|_| {}, Duration::ZERO).unwrap();
        let told = std::sync::atomic::AtomicUsize::new(0);
        let err = lock_waiting(
            &p,
            &|m| {
                assert!(m.contains("store lock"), "{m}");
                told.fetch_add(1, Ordering::SeqCst);
            },
            QUIET_WAIT + Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::LockTimeout { .. }), "{err:?}");
        assert_eq!(told.load(Ordering::SeqCst), 1);
        drop(held);
        lock_waiting(&p, &|_| panic!("no wait"), Duration::ZERO).unwrap();
    }
}
