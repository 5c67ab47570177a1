//! Snapshots that running builds use, kept from `strata gc` however long the build runs.
//!
//! A snapshot (an unpacked layer, the engine's `sandbox::snapshot`) is in use from the moment a
//! build looks it up until the build's store handle is dropped: it may be an overlay lower dir
//! of a RUN that runs for an hour, or the base of a delta being unpacked. Its mtime cannot say
//! so (it carries the layer's time, and a lower dir is not touched while mounted), so each
//! store handle lists the snapshot names it has used in `<scratch dir>/snapshots-in-use`, one a
//! line, as it lists the steps it has hit (`Index::use_step`). gc never removes a snapshot in
//! the list of a live handle (its scratch lock is held); once the process exits, or dies, its
//! list no longer counts.
//!
//! Listing a name and looking the snapshot up must be one step as gc sees it, or gc could read
//! the lists, then the build list and find the snapshot, then gc move it away. The
//! **snapshot lock** (`<root>/snapshots.lock`) makes it so: a build holds it shared while it
//! lists names and looks them up (microseconds; never while unpacking), gc holds it exclusive
//! while it reads the lists and moves one snapshot out of the way. So either gc moved it first
//! (the build finds nothing and unpacks the layer again from its blob), or gc sees the name.
//!
//! A name covers the delta snapshots of the same layer (`<name>.delta-<base>`), since the
//! engine looks those up by the layer's name.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// In a store handle's scratch directory: the snapshot names it has used.
pub const SNAPSHOTS_IN_USE: &str = "snapshots-in-use";
/// In the store's root: the snapshot lock (module docs; [`crate::Area::SnapshotLock`]).
pub const SNAPSHOT_LOCK: &str = crate::Area::SnapshotLock.name();

/// The snapshot lock, held until dropped.
#[derive(Debug)]
pub struct SnapshotLock {
    _file: File,
}

/// Takes the snapshot lock of the store at `root`: shared for a build's lookups, exclusive for
/// gc's check-and-move. Blocks: both sides hold it for a few file operations only.
pub fn lock(root: &Path, exclusive: bool) -> std::io::Result<SnapshotLock> {
    let path = root.join(SNAPSHOT_LOCK);
    // Read-only is enough for `flock`, and lets a user lock a file root created.
    let file = match File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?,
        r => r?,
    };
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    loop {
        match flock(&file, op) {
            Ok(()) => return Ok(SnapshotLock { _file: file }),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Adds `names` to the in-use list in the scratch directory `scratch` (a live store handle's).
/// Call it with the shared [`lock`] held, before the lookups it protects.
pub fn mark_in_use(scratch: &Path, names: &[&str]) -> std::io::Result<()> {
    let mut text = String::new();
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    // One `write` with O_APPEND: a concurrent reader sees whole lines.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(scratch.join(SNAPSHOTS_IN_USE))?
        .write_all(text.as_bytes())
}

/// Whether the snapshot named `snapshot` (a directory name in a snapshot directory) is covered
/// by an in-use `name`: the same name, or a delta snapshot of that layer.
pub fn covers(name: &str, snapshot: &str) -> bool {
    snapshot == name
        || snapshot
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(".delta-"))
}

/// The path of a scratch directory's in-use list.
pub fn list_path(scratch: &Path) -> PathBuf {
    scratch.join(SNAPSHOTS_IN_USE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_covers_itself_and_its_deltas_only() {
        assert!(covers("ab", "ab"));
        assert!(covers("ab", "ab.delta-cd"));
        assert!(!covers("ab", "abc"));
        assert!(!covers("ab", "cd.delta-ab"));
        assert!(!covers("ab.delta-cd", "ab"));
    }

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock(dir.path(), false).unwrap();
        let b = lock(dir.path(), false).unwrap();
        let f = File::open(dir.path().join(SNAPSHOT_LOCK)).unwrap();
        assert_eq!(
            flock(&f, FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        );
        drop((a, b));
        flock(&f, FlockOperation::NonBlockingLockExclusive).unwrap();
    }
}
