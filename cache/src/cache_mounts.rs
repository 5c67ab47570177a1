//! The directories of `RUN --mount=type=cache` ([`Area::CacheMounts`], `cache-mounts-v1/`),
//! their last use, and the builds using them.
//!
//! Layout: `cache-mounts-v1/<name>/data/` is the directory a RUN mounts (the engine names a
//! cache by the BLAKE3 of its `id`), and `cache-mounts-v1/<name>/last-use`, an empty file whose
//! mtime is the cache's last use (set each time a RUN mounts it, [`Store::use_cache_mount`]).
//! The mounted directory's own times are the RUN's business, so they say nothing to gc.
//! Entries whose name starts with `.` are seeds being made (`.seed-*`) and not caches yet.
//!
//! In use: like snapshots ([`crate::snapshot_use`]), each store handle lists the caches it has
//! mounted in `<scratch dir>/cache-mounts-in-use`, and gc never removes a cache listed by a
//! live handle. A build lists a cache holding the snapshot lock shared; gc reads the lists and
//! moves a cache away holding it exclusive: either gc moved it first (the build then starts an
//! empty cache, as a cache may always be), or gc sees the name.
//!
//! The unversioned `cache-mounts/` of earlier strata (the mounted directories directly under
//! it, no last use) is [`Area::LegacyCacheMounts`]: never used again; `strata gc` removes it
//! whatever the policy, like `snapshots-v1/`. Its caches start empty once.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, StoreError};
use crate::{Area, Store};

/// In a store handle's scratch directory: the names of the cache mounts it has mounted.
pub const CACHE_MOUNTS_IN_USE: &str = "cache-mounts-in-use";
/// In a cache's directory: the directory a RUN mounts.
pub const DATA: &str = "data";
/// In a cache's directory: the empty file whose mtime is the cache's last use.
pub const LAST_USE: &str = "last-use";

/// A cache name is a file name: not empty, no `/`, not starting with `.`.
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(StoreError::Io {
            op: "name cache mount",
            path: PathBuf::from(name),
            source: std::io::Error::other(
                "a cache mount's name must be a file name not starting with `.` (the engine \
                 passes the hex of its id's hash)",
            ),
        });
    }
    Ok(())
}

impl Store {
    /// Lists the cache mount `name` in this handle's in-use list (so gc leaves it while the
    /// handle lives), records its last use (now), and returns its directory to mount,
    /// `cache-mounts-v1/<name>/data`. That directory may not exist yet: the caller makes it
    /// (empty, or seeded by renaming a directory onto it); its parent exists.
    pub fn use_cache_mount(&self, name: &str) -> Result<PathBuf, StoreError> {
        check_name(name)?;
        let cache = Area::CacheMounts.path(self.root()).join(name);
        let lock_path = Area::SnapshotLock.path(self.root());
        let _lock = crate::snapshot_use::lock(self.root(), false).at("lock", &lock_path)?;
        let list = self.scratch().join(CACHE_MOUNTS_IN_USE);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&list)
            .and_then(|mut f| f.write_all(format!("{name}\n").as_bytes()))
            .at("write", &list)?;
        fs::create_dir_all(&cache).at("create directory", &cache)?;
        let stamp = cache.join(LAST_USE);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&stamp)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .at("record last use in", &stamp)?;
        Ok(cache.join(DATA))
    }
}

/// One cache mount as gc sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountEntry {
    /// `cache-mounts-v1/<name>`.
    pub path: PathBuf,
    /// Last use, in seconds since the epoch (its `last-use` mtime; else the directory's).
    pub last_use: u64,
    /// Bytes of its files.
    pub size: u64,
}

/// The cache mounts of the store at `root` (none if the area does not exist).
pub fn list(root: &Path) -> Result<Vec<CacheMountEntry>, StoreError> {
    let dir = Area::CacheMounts.path(root);
    let entries = match fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r.at("read directory", &dir)?,
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.at("read directory", &dir)?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        let last_use = last_use(&path);
        let size = crate::gc::dir_size(&path);
        out.push(CacheMountEntry {
            path,
            last_use,
            size,
        });
    }
    Ok(out)
}

/// The last use of the cache at `path` (`cache-mounts-v1/<name>`), in seconds since the epoch:
/// its `last-use` mtime, else the directory's (0 if neither can be read).
pub fn last_use(path: &Path) -> u64 {
    let mtime = |p: &Path| fs::symlink_metadata(p).and_then(|m| m.modified()).ok();
    mtime(&path.join(LAST_USE))
        .or_else(|| mtime(path))
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// The cache names that live store handles have mounted.
pub(crate) fn in_use(root: &Path) -> std::collections::BTreeSet<String> {
    crate::lock::live_lists(&Area::Tmp.path(root), CACHE_MOUNTS_IN_USE)
        .into_iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Sets the last use of the cache at `cache` (tests).
#[cfg(test)]
pub(crate) fn set_last_use(cache: &Path, t: SystemTime) {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(cache.join(LAST_USE))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_lists_the_cache_and_records_its_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let before = SystemTime::now() - std::time::Duration::from_secs(1);
        let d = store.use_cache_mount("ab12").unwrap();
        assert_eq!(d, dir.path().join("cache-mounts-v1/ab12/data"));
        assert!(d.parent().unwrap().is_dir());
        fs::create_dir(&d).unwrap();
        fs::write(d.join("f"), "12345").unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, dir.path().join("cache-mounts-v1/ab12"));
        assert!(listed[0].size >= 5, "{listed:?}");
        let used = UNIX_EPOCH + std::time::Duration::from_secs(listed[0].last_use);
        assert!(
            used >= before - std::time::Duration::from_secs(1),
            "{listed:?}"
        );
        assert!(in_use(dir.path()).contains("ab12"));
        drop(store);
        assert!(
            in_use(dir.path()).is_empty(),
            "a dropped handle's list no longer counts"
        );
    }

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for bad in ["", "../x", ".seed-1", "a/b"] {
            let e = store.use_cache_mount(bad).unwrap_err().to_string();
            assert!(e.contains("file name"), "{bad}: {e}");
        }
    }
}
