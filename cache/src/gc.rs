//! `gc`: least-recently-used eviction of step records, their layer blobs, unreferenced blobs,
//! unpacked snapshots (`<root>/snapshots-v2/[boot-<id>/]<diff_id hex>/`) and the caches of
//! `RUN --mount=type=cache` (`<root>/cache-mounts-v1/<name>/`, [`crate::cache_mounts`]).
//!
//! Never removed: anything a tag references — the manifest, the config and the layers it
//! names (tag → manifest → config + layers), and the snapshots of those layers' diff_ids. Step
//! records whose layer is tagged are kept too: they cost no space and keep rebuilds cached.
//!
//! Last use: a step's last use is the later of its `created_unix` and the time the engine last
//! recorded a cache hit with [`Index::touch_step`](crate::Index::touch_step); a snapshot's is
//! its directory's mtime; a cache mount's is the mtime of its `last-use` file, set each time a
//! RUN mounts it. Cache mounts count towards `--keep-storage` and are evicted in the same
//! least-recently-used order; one that a live build has mounted is never removed (listed like
//! snapshots in use, checked again under the snapshot lock right before it is moved away). The
//! legacy unversioned `cache-mounts/` is removed whatever the policy.
//!
//! Delta snapshots (`<diff_id hex>.delta-<base diff_id hex>/`, a small layer stacked on the full
//! snapshot of a similar one) are evicted by last use only, tagged or not: the engine drops a
//! delta whose base is gone and unpacks that layer again when a RUN needs it. Snapshots in the
//! directory of another boot (`boot-<id>/`, [`crate::boot`]) are removed first, whatever the
//! policy: they are never used again.
//!
//! Concurrency: a blob becomes referenced by a step record only after it is committed, so a
//! blob that a concurrent build has just written (and not yet recorded) looks unreferenced. gc
//! therefore deletes a blob only if it is unreferenced *and* its mtime is older than
//! [`MIN_BLOB_AGE`] (10 minutes). A commit that finds its content already stored refreshes the
//! existing blob's mtime (`BlobWriter::place`), so a reused old blob is protected the same way.
//!
//! Several strata processes may use the store while gc runs. gc holds the index lock for its
//! whole run ([`crate::Index::hold`]), so every build's index operations happen wholly before
//! or after it. A build that hits a cached step adds it to its store handle's in-use list in
//! the same operation ([`crate::Index::use_step`]), and gc never evicts a step in the list of a
//! live handle, nor its layer (a step just executed is kept by its young blob), however long
//! that build runs. Blobs and snapshots are moved away and checked once more before they are
//! deleted (`Removal::blob`). The engine still checks every layer blob is present before it
//! writes a manifest, and fails with a hint to build again rather than produce a broken image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::{IoContext, StoreError};
use crate::{Area, Digest, Store};

/// Blobs younger than this are never deleted (see the module docs).
pub const MIN_BLOB_AGE: Duration = Duration::from_secs(600);

/// The directory of unpacked layers, one per diff_id ([`Area::Snapshots`]).
pub const SNAPSHOTS_DIR: &str = Area::Snapshots.name();
/// Snapshots made before files and directories got their layer's times (docs/store.md):
/// never used; gc removes them ([`Area::LegacySnapshots`]).
pub const LEGACY_SNAPSHOTS_DIR: &str = Area::LegacySnapshots.name();

/// References to compressed chunks inside layer blobs (the engine's `layer::ChunkDir`): one
/// small file per chunk, starting with the `sha256:<hex>` of the blob that holds the chunk
/// ([`Area::ChunkRefs`]).
pub const CHUNK_REFS_DIR: &str = Area::ChunkRefs.name();
/// Copies of compressed chunks, from before chunk references: never read any more.
const LEGACY_CHUNKS_DIR: &str = Area::LegacyChunks.name();

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcPolicy {
    /// Evict least recently used entries until blobs + snapshots + cache mounts take at most
    /// this many bytes.
    KeepStorage(u64),
    /// Evict everything not used for this long.
    KeepDuration(Duration),
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub policy: GcPolicy,
    /// Report what would be freed; delete nothing.
    pub dry_run: bool,
    /// The current time (tests pass a fixed one).
    pub now: SystemTime,
    /// Normally [`MIN_BLOB_AGE`].
    pub min_blob_age: Duration,
    /// The snapshots of a rootless build, if gc may collect them (see [`RootlessSnapshots`]).
    pub rootless: Option<RootlessSnapshots>,
}

/// A rootless build's snapshots: `<root>/<dir_name>/[boot-<id>/]<name>/`. Their files belong to
/// subordinate ids, which the user cannot remove directly; `remove` deletes a whole tree (the
/// engine enters the user namespace to do it). Snapshots of another mapping are left alone.
#[derive(Debug, Clone)]
pub struct RootlessSnapshots {
    pub dir_name: String,
    pub remove: fn(&Path) -> std::io::Result<()>,
}

impl GcOptions {
    pub fn new(policy: GcPolicy) -> GcOptions {
        GcOptions {
            policy,
            dry_run: false,
            now: SystemTime::now(),
            min_blob_age: MIN_BLOB_AGE,
            rootless: None,
        }
    }
}

/// What [`gc`] freed (or, with `dry_run`, would free).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub freed_bytes: u64,
    /// Layer blobs removed (blobs some step record referenced).
    pub layers: usize,
    /// Other unreferenced blobs removed (configs and manifests of untagged builds, orphans).
    pub other_blobs: usize,
    pub step_records: usize,
    pub snapshots: usize,
    /// Cache mounts removed (`RUN --mount=type=cache` directories), and their bytes.
    pub cache_mounts: usize,
    pub cache_mount_bytes: u64,
    /// Bytes of blobs, snapshots and cache mounts left.
    pub kept_bytes: u64,
    /// Every blob removed.
    pub removed_blobs: Vec<Digest>,
    /// Rootless snapshots the remover failed on (why), left in place for the next gc: their
    /// files belong to subordinate ids, so a failure of the helper must not stop the rest of
    /// gc, nor leave them in the trash.
    pub unremoved: Vec<String>,
    /// How many of `unremoved` are cache mounts (their files may belong to ids the user
    /// running gc cannot remove).
    pub unremoved_cache_mounts: usize,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} layers, {} step records, {} snapshots, {} other blobs, {} cache mounts ({})",
            format_size(self.freed_bytes),
            self.layers,
            self.step_records,
            self.snapshots,
            self.other_blobs,
            self.cache_mounts,
            format_size(self.cache_mount_bytes),
        )?;
        let snapshots = self.unremoved.len() - self.unremoved_cache_mounts;
        if snapshots > 0 {
            write!(f, " ({snapshots} rootless snapshots could not be removed)")?;
        }
        if self.unremoved_cache_mounts > 0 {
            write!(
                f,
                " ({} cache mounts could not be removed)",
                self.unremoved_cache_mounts
            )?;
        }
        Ok(())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_boot_dir(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with(crate::boot_id::BOOT_DIR_PREFIX))
}

/// A directory whose entries are snapshots.
struct SnapshotDir {
    path: PathBuf,
    /// Another boot's (or the legacy form's): never used again.
    dead: bool,
    /// A rootless build's: removed with [`RootlessSnapshots::remove`].
    rootless: bool,
}

/// The directories whose entries are snapshots: `snapshots-v2/` itself (durable snapshots) and
/// its `boot-<id>/` directories, the legacy `snapshots-v1/` (all dead), and the same two
/// levels of `rootless`'s directory when gc may collect it.
fn snapshot_dirs(root: &Path, rootless: Option<&str>) -> Result<Vec<SnapshotDir>, StoreError> {
    let mut dirs = vec![SnapshotDir {
        path: root.join(LEGACY_SNAPSHOTS_DIR),
        dead: true,
        rootless: false,
    }];
    let this_boot = crate::boot_id::boot_dir_name();
    let tops = [(SNAPSHOTS_DIR, false)]
        .into_iter()
        .chain(rootless.map(|d| (d, true)));
    for (top, rootless) in tops {
        let snap_dir = root.join(top);
        dirs.push(SnapshotDir {
            path: snap_dir.clone(),
            dead: false,
            rootless,
        });
        let Ok(entries) = fs::read_dir(&snap_dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.at("read directory", &snap_dir)?;
            let name = entry.file_name();
            if is_boot_dir(&name) {
                dirs.push(SnapshotDir {
                    path: entry.path(),
                    dead: this_boot.as_deref() != name.to_str(),
                    rootless,
                });
            }
        }
    }
    Ok(dirs)
}

struct BlobInfo {
    size: u64,
    mtime: SystemTime,
}

/// One thing LRU eviction can remove.
enum Unit {
    Step([u8; 32], Option<Digest>),
    /// Path, size, whether it is a rootless build's.
    Snapshot(PathBuf, u64, bool),
    /// `cache-mounts-v1/<name>`, its size and last use.
    CacheMount(PathBuf, u64, u64),
}

/// Runs garbage collection.
pub fn gc(store: &Store, opts: &GcOptions) -> Result<GcReport, StoreError> {
    // Held from the first index read to the last index write; see the module docs.
    let _hold = store.index().hold()?;
    let (protected, protected_diff_ids) = protected(store)?;

    let blob_dir = Area::Blobs.path(store.root());
    let mut blobs: BTreeMap<Digest, BlobInfo> = BTreeMap::new();
    for entry in fs::read_dir(&blob_dir).at("read directory", &blob_dir)? {
        let entry = entry.at("read directory", &blob_dir)?;
        let Some(d) = entry
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        blobs.insert(
            d,
            BlobInfo {
                size: meta.len(),
                mtime: meta.modified().unwrap_or(UNIX_EPOCH),
            },
        );
    }

    let last_used: BTreeMap<[u8; 32], u64> = store.index().list_last_used()?.into_iter().collect();
    let steps = store.index().list_steps()?;
    // Read under the index lock (held above): every hit recorded before it is in a list.
    let in_use = crate::lock::steps_in_use(&Area::Tmp.path(store.root()));
    // How many remaining step records reference each blob.
    let mut refs: BTreeMap<Digest, usize> = BTreeMap::new();
    for (_, rec) in &steps {
        if let Some(l) = &rec.layer {
            *refs.entry(l.digest).or_default() += 1;
        }
    }

    let young = |mtime: SystemTime| {
        opts.now
            .duration_since(mtime)
            .map_or(true, |age| age < opts.min_blob_age)
    };
    let old_enough = |b: &BlobInfo| !young(b.mtime);

    // Snapshots count towards usage whether or not they may go. A young one may be being
    // unpacked by a build (the same rule as for blobs); a tagged layer's is kept. Those of
    // another boot (`boot-<id>/`, crate::boot) are never used again: they go first, whatever
    // the policy, once they are not young.
    // Those a live build uses are kept like tagged ones (crate::snapshot_use); checked once
    // more, under the snapshot lock, right before one is moved away.
    let snapshots_in_use = crate::lock::snapshots_in_use(&Area::Tmp.path(store.root()));
    let mut snapshots = Vec::new();
    let mut dead_snapshots = Vec::new();
    let mut snapshot_bytes = 0;
    let rootless_dir = opts.rootless.as_ref().map(|r| r.dir_name.as_str());
    for SnapshotDir {
        path: dir,
        dead,
        rootless,
    } in snapshot_dirs(store.root(), rootless_dir)?
    {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.at("read directory", &dir)?;
            let name = entry.file_name();
            if is_boot_dir(&name) && !dir.file_name().is_some_and(is_boot_dir) {
                continue; // listed by snapshot_dirs
            }
            let size = dir_size(&entry.path());
            snapshot_bytes += size;
            let protected = name
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
                .is_some_and(|d| protected_diff_ids.contains(&d))
                || in_use_snapshot(&snapshots_in_use, &name);
            let mtime = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            if young(mtime) {
                continue;
            }
            if dead {
                dead_snapshots.push((entry.path(), size, rootless));
            } else if !protected {
                snapshots.push((unix(mtime), Unit::Snapshot(entry.path(), size, rootless)));
            }
        }
    }

    let mut units: Vec<(u64, Unit)> = snapshots;
    // Cache mounts: by their last use; those a live build mounted stay (checked again under
    // the snapshot lock before one is moved away).
    let mounts_in_use = crate::cache_mounts::in_use(store.root());
    let mut cache_mount_bytes = 0;
    for m in crate::cache_mounts::list(store.root())? {
        cache_mount_bytes += m.size;
        if !in_use_cache_mount(&mounts_in_use, &m.path) {
            units.push((m.last_use, Unit::CacheMount(m.path, m.size, m.last_use)));
        }
    }
    let legacy_mounts = Area::LegacyCacheMounts.path(store.root());
    let legacy_mounts = legacy_mounts
        .is_dir()
        .then(|| (dir_size(&legacy_mounts), legacy_mounts));
    for (key, rec) in &steps {
        let layer = rec.layer.as_ref().map(|l| l.digest);
        if layer.is_some_and(|d| protected.contains(&d)) {
            continue;
        }
        // A step whose layer was just written is not a candidate: its blob stays anyway (the
        // age rule), and dropping the record would only orphan it.
        if layer.is_some_and(|d| blobs.get(&d).is_some_and(|b| young(b.mtime))) {
            continue;
        }
        // A running build hit it and may be about to name its layer in a manifest. (A step
        // just executed is covered by its young blob, above.)
        if in_use.contains(key) {
            continue;
        }
        let used = last_used
            .get(key)
            .copied()
            .unwrap_or(0)
            .max(rec.created_unix);
        units.push((used, Unit::Step(*key, layer)));
    }
    lru_order(&mut units);

    let mut usage: u64 = blobs.values().map(|b| b.size).sum::<u64>()
        + snapshot_bytes
        + cache_mount_bytes
        + legacy_mounts.as_ref().map_or(0, |(size, _)| *size);
    let over = |usage: u64, used: u64| match opts.policy {
        GcPolicy::KeepStorage(max) => usage > max,
        GcPolicy::KeepDuration(d) => unix(opts.now).saturating_sub(used) > d.as_secs(),
    };

    let mut report = GcReport::default();
    let ctx = Removal {
        store,
        dry_run: opts.dry_run,
        now: opts.now,
        min_age: opts.min_blob_age,
        rootless: opts.rootless.as_ref(),
    };
    // 0. Snapshots of another boot: never valid again (crate::boot).
    for (path, size, rootless) in dead_snapshots {
        if !opts.dry_run {
            if let Err(e) = ctx.remove_tree(&path, rootless) {
                // The helper could not do it (`GcReport::unremoved`): the rest of gc goes on.
                if !rootless {
                    return Err(e);
                }
                report.unremoved.push(e.to_string());
                continue;
            }
            // The boot directory itself once it is empty (best effort).
            if let Some(parent) = path.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
        report.freed_bytes += size;
        usage = usage.saturating_sub(size);
        report.snapshots += 1;
    }

    // 0b. The unversioned cache mounts of earlier strata: never mounted again.
    if let Some((size, path)) = legacy_mounts {
        let n = fs::read_dir(&path).map_or(0, |rd| rd.count());
        if !opts.dry_run {
            if let Err(e) = ctx.remove_cache_mount(&path) {
                report.unremoved.push(e.to_string());
                report.unremoved_cache_mounts += 1;
            }
        }
        if opts.dry_run || !path.exists() {
            report.freed_bytes += size;
            usage = usage.saturating_sub(size);
            report.cache_mounts += n;
            report.cache_mount_bytes += size;
        }
    }

    // 1. Blobs nothing references (no step record, no tag): oldest first.
    let mut unreferenced: Vec<(SystemTime, Digest)> = blobs
        .iter()
        .filter(|(d, b)| !protected.contains(d) && !refs.contains_key(d) && old_enough(b))
        .map(|(d, b)| (b.mtime, *d))
        .collect();
    unreferenced.sort();
    for (mtime, d) in unreferenced {
        if !over(usage, unix(mtime)) {
            continue;
        }
        ctx.blob(&mut blobs, d, false, &mut report, &mut usage)?;
    }

    // 2. Step records and snapshots, least recently used first.
    for (used, unit) in units {
        // Units are sorted by last use: once one may stay, so may everything after it.
        if !over(usage, used) {
            break;
        }
        match unit {
            Unit::Step(key, layer) => {
                if !opts.dry_run {
                    store.index().delete_step(&key)?;
                }
                report.step_records += 1;
                let Some(d) = layer else { continue };
                let n = refs.get_mut(&d).expect("counted above");
                *n -= 1;
                if *n == 0 && blobs.get(&d).is_some_and(old_enough) {
                    ctx.blob(&mut blobs, d, true, &mut report, &mut usage)?;
                }
            }
            Unit::Snapshot(path, size, rootless) => {
                if !opts.dry_run {
                    // As for blobs: a build that reuses a snapshot refreshes its mtime first
                    // (`Snapshots::ensure`), so one used since the scan goes back.
                    let name = path.file_name().unwrap_or_default();
                    let trash = store
                        .scratch()
                        .join(format!("gc-snapshot-{}", name.to_string_lossy()));
                    // A build lists a snapshot and looks it up under the shared lock, so with
                    // it held here, either the build listed it already or it will find nothing
                    // (crate::snapshot_use).
                    let moved = {
                        let _lock = crate::snapshot_use::lock(store.root(), true).at(
                            "lock",
                            store.root().join(crate::snapshot_use::SNAPSHOT_LOCK),
                        )?;
                        let in_use = crate::lock::snapshots_in_use(&Area::Tmp.path(store.root()));
                        if in_use_snapshot(&in_use, name) {
                            continue;
                        }
                        fs::rename(&path, &trash)
                    };
                    match moved {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).at("remove snapshot", &path),
                        Ok(()) if ctx.refreshed(&trash) => {
                            ctx.put_back(&trash, &path, rootless)?;
                            continue;
                        }
                        Ok(()) => {
                            if let Err(e) = ctx.remove_tree(&trash, rootless) {
                                if !rootless {
                                    return Err(e);
                                }
                                // Back where the next gc finds it (a snapshot of subordinate
                                // ids left in the trash would stay there for good).
                                ctx.put_back(&trash, &path, rootless)?;
                                report.unremoved.push(e.to_string());
                                continue;
                            }
                        }
                    }
                }
                report.freed_bytes += size;
                usage = usage.saturating_sub(size);
                report.snapshots += 1;
            }
            Unit::CacheMount(path, size, last_use) => {
                if !opts.dry_run && !ctx.cache_mount(&path, last_use, &mut report)? {
                    continue;
                }
                report.freed_bytes += size;
                usage = usage.saturating_sub(size);
                report.cache_mounts += 1;
                report.cache_mount_bytes += size;
            }
        }
    }

    // 3. Layer records whose blob is gone would only mislead; drop them.
    if !opts.dry_run {
        let removed: BTreeSet<Digest> = report.removed_blobs.iter().copied().collect();
        for (diff_id, compression, rec) in store.index().list_layers()? {
            if removed.contains(&rec.digest) {
                store.index().delete_layer(&diff_id, &compression)?;
            }
        }
    }
    // 4. Chunk references, read-set layer indexes and SBOM layer scans whose blob is gone (a
    // miss anyway), and the legacy chunk copies.
    if !opts.dry_run {
        // Read-set candidates of the step records removed above (docs/read-set.md).
        store.index().prune_readsets()?;
        prune_chunk_refs(store, opts.now, opts.min_blob_age)?;
        for area in [Area::ReadsetIndex, Area::SbomIndex] {
            prune_blob_refs(store, area.name(), opts.now, opts.min_blob_age)?;
        }
    }
    report.kept_bytes = usage;
    Ok(report)
}

/// Removes chunk references to absent blobs, temp files older than `min_age` (a killed
/// writer's), and the legacy `chunks-v1/` copies.
fn prune_chunk_refs(store: &Store, now: SystemTime, min_age: Duration) -> Result<(), StoreError> {
    let legacy = store.root().join(LEGACY_CHUNKS_DIR);
    if legacy.exists() {
        fs::remove_dir_all(&legacy).at("remove legacy chunk cache", &legacy)?;
    }
    prune_blob_refs(store, CHUNK_REFS_DIR, now, min_age)
}

/// Removes the files of `<root>/<area>/` that start with the `sha256:<hex>` of a blob no longer
/// in the store (or with none), and `.tmp-*` files older than `min_age`.
fn prune_blob_refs(
    store: &Store,
    area: &str,
    now: SystemTime,
    min_age: Duration,
) -> Result<(), StoreError> {
    let dir = store.root().join(area);
    let entries = match fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r.at("list", &dir)?,
    };
    for entry in entries {
        let entry = entry.at("list", &dir)?;
        let path = entry.path();
        let name = entry.file_name();
        let stale = if name.as_encoded_bytes().starts_with(b".tmp-") {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age >= min_age))
        } else {
            let mut head = [0u8; 71];
            let blob = fs::File::open(&path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .ok()
                .and_then(|()| std::str::from_utf8(&head).ok()?.parse::<Digest>().ok());
            !blob.is_some_and(|d| store.blobs().contains(&d))
        };
        if stale {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).at("remove stale blob reference", &path)
                }
                _ => {}
            }
        }
    }
    Ok(())
}

struct Removal<'a> {
    store: &'a Store,
    dry_run: bool,
    now: SystemTime,
    min_age: Duration,
    rootless: Option<&'a RootlessSnapshots>,
}

impl Removal<'_> {
    /// Removes the snapshot tree at `path` (gone already is fine).
    fn remove_tree(&self, path: &Path, rootless: bool) -> Result<(), StoreError> {
        let removed = match self.rootless.filter(|_| rootless) {
            Some(r) => (r.remove)(path),
            None => fs::remove_dir_all(path),
        };
        match removed {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.at("remove snapshot", path),
        }
    }

    /// Removes a cache mount's tree (gone already is fine). Its files may belong to any id a
    /// RUN used; for a rootless gc, the remover (in the user namespace) gets what the user
    /// cannot remove directly.
    fn remove_cache_mount(&self, path: &Path) -> Result<(), StoreError> {
        let removed = match fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => match self.rootless {
                Some(r) => (r.remove)(path),
                None => Err(e),
            },
            r => r,
        };
        match removed {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.at("remove cache mount", path),
        }
    }

    /// Removes the cache mount at `path`, last used at `last_use` when gc listed it, unless a
    /// live build has mounted it or it was used since: whether it is gone. A removal that
    /// fails leaves it in place (in `report.unremoved`) for the next gc.
    fn cache_mount(
        &self,
        path: &Path,
        last_use: u64,
        report: &mut GcReport,
    ) -> Result<bool, StoreError> {
        let root = self.store.root();
        let name = path.file_name().unwrap_or_default();
        let trash = self
            .store
            .scratch()
            .join(format!("gc-cache-mount-{}", name.to_string_lossy()));
        // A build lists a cache under the shared lock before it mounts it: with the lock held
        // here, either it listed it already or it will make a new one (crate::cache_mounts).
        let moved = {
            let _lock =
                crate::snapshot_use::lock(root, true).at("lock", Area::SnapshotLock.path(root))?;
            let in_use = crate::cache_mounts::in_use(root);
            let used_since = crate::cache_mounts::last_use(path) > last_use;
            if in_use_cache_mount(&in_use, path) || used_since {
                return Ok(false);
            }
            fs::rename(path, &trash)
        };
        match moved {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).at("remove cache mount", path),
            Ok(()) => match self.remove_cache_mount(&trash) {
                Ok(()) => Ok(true),
                Err(e) => {
                    // Back where the next gc finds it, unless a build made a new one there.
                    if fs::rename(&trash, path).is_err() {
                        let _ = fs::remove_dir_all(&trash);
                    }
                    report.unremoved.push(e.to_string());
                    report.unremoved_cache_mounts += 1;
                    Ok(false)
                }
            },
        }
    }

    /// Moves a snapshot gc took back to `path`. A build that found nothing there meanwhile may
    /// have unpacked the layer again: its copy is as good, and ours goes.
    fn put_back(&self, trash: &Path, path: &Path, rootless: bool) -> Result<(), StoreError> {
        match fs::rename(trash, path) {
            Err(_) if path.is_dir() => self.remove_tree(trash, rootless),
            r => r.at("put back snapshot", path),
        }
    }

    /// Whether `path` was modified less than the minimum age ago (used again since the scan).
    fn refreshed(&self, path: &Path) -> bool {
        fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .map(|m| {
                self.now
                    .duration_since(m)
                    .map_or(true, |age| age < self.min_age)
            })
            .unwrap_or(false)
    }

    fn blob(
        &self,
        blobs: &mut BTreeMap<Digest, BlobInfo>,
        d: Digest,
        is_layer: bool,
        report: &mut GcReport,
        usage: &mut u64,
    ) -> Result<(), StoreError> {
        let Some(info) = blobs.remove(&d) else {
            return Ok(());
        };
        if !self.dry_run {
            let p = self.store.blobs().path(&d);
            // Move it away, then look at its age once more: a build (in any process) that
            // committed the same content meanwhile refreshed its mtime (`BlobWriter::place`)
            // and will reference it. Such a blob goes back.
            let trash = self.store.scratch().join(format!("gc-{}", d.hex()));
            match fs::rename(&p, &trash) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at("remove blob", &p),
                Ok(()) => {
                    if self.refreshed(&trash) {
                        fs::rename(&trash, &p).at("put back blob", &p)?;
                        blobs.insert(d, info);
                        return Ok(());
                    }
                    fs::remove_file(&trash).at("remove blob", &trash)?;
                }
            }
        }
        report.freed_bytes += info.size;
        *usage = usage.saturating_sub(info.size);
        if is_layer {
            report.layers += 1;
        } else {
            report.other_blobs += 1;
        }
        report.removed_blobs.push(d);
        Ok(())
    }
}

/// Blobs (manifest, config, layers) and layer diff_ids that tags reference.
fn protected(store: &Store) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>), StoreError> {
    let mut blobs = BTreeSet::new();
    let mut diff_ids = BTreeSet::new();
    for (_, tag) in store.index().list_tags()? {
        blobs.insert(tag.manifest);
        blobs.insert(tag.config);
        // A tag whose manifest cannot be read protects what it names directly; fsck reports it.
        if let Ok(ds) = crate::fsck::tag_blobs(store, &tag.manifest) {
            blobs.extend(ds);
        }
        // The configs of the images it names (each platform's, for an index).
        let configs = crate::fsck::tag_configs(store, &tag.manifest).unwrap_or_default();
        for c in std::iter::once(&tag.config).chain(&configs) {
            let Ok(bytes) = store.blobs().read_verified(c) else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                for d in v["rootfs"]["diff_ids"].as_array().into_iter().flatten() {
                    if let Some(d) = d.as_str().and_then(|s| s.parse().ok()) {
                        diff_ids.insert(d);
                    }
                }
            }
        }
    }
    Ok((blobs, diff_ids))
}

/// Least recently used first; ties broken by what they are, so the order is stable.
fn lru_order(units: &mut [(u64, Unit)]) {
    fn rank(u: &Unit) -> u8 {
        match u {
            Unit::Step(..) => 0,
            Unit::Snapshot(..) => 1,
            Unit::CacheMount(..) => 2,
        }
    }
    units.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| match (&a.1, &b.1) {
            (Unit::Step(x, _), Unit::Step(y, _)) => x.cmp(y),
            (Unit::Snapshot(x, ..), Unit::Snapshot(y, ..)) => x.cmp(y),
            (Unit::CacheMount(x, ..), Unit::CacheMount(y, ..)) => x.cmp(y),
            (x, y) => rank(x).cmp(&rank(y)),
        })
    });
}

/// Whether the cache mount at `path` (`cache-mounts-v1/<name>`) is one a live build mounted.
fn in_use_cache_mount(in_use: &BTreeSet<String>, path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| in_use.contains(n))
}

/// Whether the snapshot directory `name` is one a live build uses.
fn in_use_snapshot(in_use: &BTreeSet<String>, name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| in_use.iter().any(|u| crate::snapshot_use::covers(u, n)))
}

pub(crate) fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Why a `--keep-storage` size or `--keep-duration` duration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyValueError {
    #[error("invalid size `{0}`: expected a number and a unit, e.g. 10GB")]
    SizeNumber(String),
    #[error("invalid size `{size}`: unknown unit `{unit}`")]
    SizeUnit { size: String, unit: String },
    #[error("invalid duration `{0}`: expected e.g. 7d, 12h, 30m")]
    Duration(String),
}

/// Parses `10GB`, `500MiB`, `1.5G`, `0` (decimal units are powers of 1000, `i` units of 1024).
pub fn parse_size(s: &str) -> Result<u64, PolicyValueError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| PolicyValueError::SizeNumber(s.to_string()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u64.pow(2),
        "g" | "gb" => 1000_u64.pow(3),
        "t" | "tb" => 1000_u64.pow(4),
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        u => {
            return Err(PolicyValueError::SizeUnit {
                size: s.to_string(),
                unit: u.to_string(),
            })
        }
    };
    Ok((num * mult as f64) as u64)
}

/// Parses `7d`, `12h`, `30m`, `45s`, `2w`, or combinations such as `1d12h`.
pub fn parse_duration(s: &str) -> Result<Duration, PolicyValueError> {
    let err = || PolicyValueError::Duration(s.to_string());
    let mut total = 0u64;
    let mut num = String::new();
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(err()),
        };
        total += n * unit;
    }
    if !num.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

pub use crate::format_size;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LayerRecord, StepRecord, TagRecord};
    use std::fs::File;

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn age(store: &Store, d: &Digest, secs: u64) {
        File::options()
            .write(true)
            .open(store.blobs().path(d))
            .unwrap()
            .set_modified(now() - Duration::from_secs(secs))
            .unwrap();
    }

    /// A step record (created `secs_ago`) with a layer blob of `size` bytes, aged an hour.
    fn step(store: &Store, n: u8, size: usize, secs_ago: u64) -> LayerRecord {
        let content = vec![n; size];
        let (digest, size) = store.blobs().put(&content).unwrap();
        age(store, &digest, 3600);
        let l = LayerRecord {
            diff_id: Digest::of(&[n, 0xff]),
            digest,
            size,
            media_type: String::new(),
            uncompressed_size: size,
        };
        store
            .index()
            .put_step(
                &[n; 32],
                &StepRecord {
                    layer: Some(l.clone()),
                    created_unix: NOW - secs_ago,
                },
                None,
            )
            .unwrap();
        store.index().put_layer(&l.diff_id, "gzip-6", &l).unwrap();
        l
    }

    fn tag(store: &Store, name: &str, l: &LayerRecord) -> (Digest, Digest) {
        let config = serde_json::json!({"rootfs": {"diff_ids": [l.diff_id.to_string()]}});
        let (c, _) = store.blobs().put(config.to_string().as_bytes()).unwrap();
        let manifest = serde_json::json!({
            "config": {"digest": c.to_string()},
            "layers": [{"digest": l.digest.to_string()}],
        });
        let (m, _) = store.blobs().put(manifest.to_string().as_bytes()).unwrap();
        age(store, &c, 3600);
        age(store, &m, 3600);
        store
            .index()
            .put_tag(
                name,
                &TagRecord {
                    manifest: m,
                    config: c,
                    media_type: String::new(),
                },
            )
            .unwrap();
        (m, c)
    }

    /// Sets a directory's mtime (a snapshot's last use) `secs` before [`NOW`]: never in the
    /// future of the clock the tests pass, whatever the date.
    fn age_dir(p: &Path, secs: u64) {
        File::open(p)
            .unwrap()
            .set_modified(now() - Duration::from_secs(secs))
            .unwrap();
    }

    static REMOVED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

    fn recording_remove(p: &Path) -> std::io::Result<()> {
        REMOVED.lock().unwrap().push(p.to_path_buf());
        fs::remove_dir_all(p)
    }

    /// A rootless build's snapshots (files of subordinate ids) are collected only when gc is
    /// given their directory and remover, always through that remover, and the directories of
    /// another id mapping are left alone.
    #[test]
    fn rootless_snapshots_are_collected_through_their_remover() {
        let (_dir, s) = store();
        let mine = "snapshots-v2-rootless-0-1000-1_1-100000-65536";
        let snap = |top: &str, boot: &str, name: &str| {
            let p = s.root().join(top).join(boot).join(name);
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("f"), vec![0u8; 300]).unwrap();
            age_dir(&p, 3600);
            p
        };
        let lru = snap(mine, "", &"ab".repeat(32));
        let dead = snap(mine, "boot-0000000000000000", &"cd".repeat(32));
        let foreign = snap("snapshots-v2-rootless-0-2000-1", "", &"ef".repeat(32));
        let young = snap(mine, "", &"12".repeat(32));
        age_dir(&young, 10);

        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert_eq!(r.snapshots, 0, "without a remover: {r:?}");
        assert!(lru.exists() && dead.exists());

        let with = |dry_run| GcOptions {
            dry_run,
            rootless: Some(RootlessSnapshots {
                dir_name: mine.into(),
                remove: recording_remove,
            }),
            ..opts(GcPolicy::KeepStorage(0))
        };
        let dry = gc(&s, &with(true)).unwrap();
        assert!(lru.exists() && dead.exists(), "a dry run deletes nothing");
        let r = gc(&s, &with(false)).unwrap();
        assert_eq!(r, dry);
        assert_eq!((r.snapshots, r.freed_bytes), (2, 600), "{r:?}");
        assert!(!lru.exists() && !dead.exists());
        assert!(foreign.exists(), "another mapping's");
        assert!(young.exists(), "perhaps being unpacked");
        // Each through the remover: the dead one where it was, the other from gc's trash.
        let removed = std::mem::take(&mut *REMOVED.lock().unwrap());
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(removed.contains(&dead));
        assert!(removed.iter().any(|p| p.starts_with(s.scratch())
            && p.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(&"ab".repeat(32))));
        assert!(!fs::read_dir(s.scratch()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("gc-")));
    }

    fn failing_remove(_: &Path) -> std::io::Result<()> {
        Err(std::io::Error::other("the helper failed"))
    }

    /// A remover that fails (the helper cannot start) leaves each rootless snapshot where it
    /// was, for the next gc, says so in the report, and the rest of gc goes on.
    #[test]
    fn a_failing_rootless_remover_leaves_the_snapshots_in_place_and_gc_goes_on() {
        let (_dir, s) = store();
        let mine = "snapshots-v2-rootless-0-1000-1";
        let snap = |boot: &str, name: &str| {
            let p = s.root().join(mine).join(boot).join(name);
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("f"), vec![0u8; 300]).unwrap();
            age_dir(&p, 3600);
            p
        };
        let lru = snap("", &"ab".repeat(32));
        let dead = snap("boot-0000000000000000", &"cd".repeat(32));
        let (orphan, _) = s.blobs().put(b"nothing refers to this").unwrap();
        age(&s, &orphan, 3600);
        let r = gc(
            &s,
            &GcOptions {
                rootless: Some(RootlessSnapshots {
                    dir_name: mine.into(),
                    remove: failing_remove,
                }),
                ..opts(GcPolicy::KeepStorage(0))
            },
        )
        .unwrap();
        assert_eq!(r.unremoved.len(), 2, "{r:?}");
        assert!(r.unremoved[0].contains("the helper failed"), "{r:?}");
        assert!(r
            .to_string()
            .contains("2 rootless snapshots could not be removed"));
        assert_eq!((r.snapshots, r.other_blobs), (0, 1), "{r:?}");
        assert!(lru.exists() && dead.exists());
        assert!(!s.blobs().path(&orphan).exists());
        assert!(!fs::read_dir(s.scratch()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("gc-")));
    }

    fn opts(policy: GcPolicy) -> GcOptions {
        GcOptions {
            now: now(),
            ..GcOptions::new(policy)
        }
    }

    #[test]
    fn snapshots_of_another_boot_or_format_go_first_whatever_the_policy() {
        let (_dir, s) = store();
        let root = s.root().join(SNAPSHOTS_DIR);
        let snap = |boot: &str, name: &str| {
            let p = root.join(boot).join(name);
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("f"), vec![0u8; 300]).unwrap();
            age_dir(&p, 3600);
            p
        };
        let other = snap("boot-0000000000000000", &"ab".repeat(32));
        // From before snapshots had their layer's times: never used either.
        let legacy = s.root().join(LEGACY_SNAPSHOTS_DIR).join("12".repeat(32));
        fs::create_dir_all(&legacy).unwrap();
        age_dir(&legacy, 3600);
        let durable = snap("", &"ef".repeat(32));
        let this = crate::boot_id::boot_dir_name().map(|b| snap(&b, &"cd".repeat(32)));

        let dry = gc(
            &s,
            &GcOptions {
                dry_run: true,
                ..opts(GcPolicy::KeepStorage(u64::MAX))
            },
        )
        .unwrap();
        assert!(other.exists(), "dry run deletes nothing");
        let r = gc(&s, &opts(GcPolicy::KeepStorage(u64::MAX))).unwrap();
        assert_eq!(r, dry);
        assert_eq!(r.snapshots, 2, "{r:?}");
        assert!(
            !other.parent().unwrap().exists(),
            "the empty boot dir goes too"
        );
        assert!(!legacy.parent().unwrap().exists(), "and the legacy dir");
        assert!(durable.exists(), "within budget");
        if let Some(this) = &this {
            assert!(this.exists(), "this boot's snapshot is within budget");
        }
        // Over budget, this boot's snapshots are evicted like durable ones.
        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert_eq!(r.snapshots, 1 + this.is_some() as usize, "{r:?}");
        assert!(!durable.exists());
    }

    /// A multi-platform build's tag names an index: every platform's manifest, config, layers
    /// and snapshots are kept as a tagged image's are.
    #[test]
    fn an_index_tag_keeps_every_platforms_image() {
        let (_dir, s) = store();
        let a = step(&s, 1, 1000, 10 * 86_400);
        let b = step(&s, 2, 1000, 10 * 86_400);
        let (ma, ca) = tag(&s, "a:1", &a);
        let (mb, cb) = tag(&s, "b:1", &b);
        s.index().delete_tag("a:1").unwrap();
        s.index().delete_tag("b:1").unwrap();
        let index = serde_json::json!({"manifests": [
            {"digest": ma.to_string()}, {"digest": mb.to_string()}
        ]});
        let (x, _) = s.blobs().put(index.to_string().as_bytes()).unwrap();
        age(&s, &x, 3600);
        s.index()
            .put_tag(
                "multi:1",
                &TagRecord {
                    manifest: x,
                    config: x,
                    media_type: "application/vnd.oci.image.index.v1+json".into(),
                },
            )
            .unwrap();
        let snap = |d: &Digest| s.root().join(SNAPSHOTS_DIR).join(d.hex());
        fs::create_dir_all(snap(&a.diff_id)).unwrap();
        fs::create_dir_all(snap(&b.diff_id)).unwrap();
        gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        for d in [x, ma, ca, a.digest, mb, cb, b.digest] {
            assert!(s.blobs().contains(&d), "{d} was removed");
        }
        assert!(snap(&a.diff_id).exists() && snap(&b.diff_id).exists());
        assert_eq!(crate::fsck::tag_blobs(&s, &x).unwrap().len(), 6);
    }

    #[test]
    fn keep_storage_evicts_least_recently_used_first_and_never_tagged_blobs() {
        let (_dir, s) = store();
        let old = step(&s, 1, 1000, 5 * 86_400);
        let mid = step(&s, 2, 1000, 3 * 86_400);
        let new = step(&s, 3, 1000, 86_400);
        let tagged = step(&s, 4, 1000, 10 * 86_400);
        let (m, c) = tag(&s, "keep:1", &tagged);
        // The oldest step was used recently: it is now the newest.
        s.index().touch_step_at(&[1; 32], NOW - 3600).unwrap();
        // Snapshots: one for the tagged layer (kept), one stale.
        let snap = |d: &Digest| s.root().join(SNAPSHOTS_DIR).join(d.hex());
        fs::create_dir_all(snap(&tagged.diff_id)).unwrap();
        fs::create_dir_all(snap(&mid.diff_id)).unwrap();
        fs::write(snap(&mid.diff_id).join("f"), vec![0u8; 500]).unwrap();

        // Budget for roughly two 1000-byte layers plus the tagged image.
        let budget = 2000 + 1400;
        let dry = gc(
            &s,
            &GcOptions {
                dry_run: true,
                ..opts(GcPolicy::KeepStorage(budget))
            },
        )
        .unwrap();
        assert!(s.blobs().contains(&mid.digest), "dry run deletes nothing");
        let r = gc(&s, &opts(GcPolicy::KeepStorage(budget))).unwrap();
        assert_eq!(r, dry);
        assert!(!s.blobs().contains(&mid.digest));
        assert!(!snap(&mid.diff_id).exists());
        assert!(s.blobs().contains(&old.digest), "touched recently");
        assert!(s.blobs().contains(&new.digest));
        assert_eq!(s.index().get_step(&[2; 32]).unwrap(), None);
        assert!(s
            .index()
            .get_layer(&mid.diff_id, "gzip-6")
            .unwrap()
            .is_none());
        assert_eq!((r.layers, r.step_records, r.snapshots), (1, 1, 1), "{r:?}");
        assert!(r.kept_bytes <= budget, "{r:?}");

        // Keep nothing: everything untagged goes, the tagged image stays whole, and so does a
        // step that a live store handle (a running build) has hit, however old.
        let hit = step(&s, 5, 1000, 10 * 86_400);
        let other = Store::open(s.root()).unwrap();
        other.index().use_step(&[5; 32]).unwrap().unwrap();
        s.index().touch_step_at(&[5; 32], NOW - 86_400).unwrap();
        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert_eq!(r.layers, 2, "{r:?}");
        assert!(s.blobs().contains(&hit.digest), "in use by a live handle");
        assert!(s.index().get_step(&[5; 32]).unwrap().is_some());
        // Once that handle is gone, it may go.
        drop(other);
        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert_eq!(r.layers, 1, "{r:?}");
        assert!(!s.blobs().contains(&hit.digest));
        for d in [tagged.digest, m, c] {
            assert!(s.blobs().contains(&d));
        }
        assert!(snap(&tagged.diff_id).exists());
        assert!(s.index().get_step(&[4; 32]).unwrap().is_some());
        assert_eq!(s.index().list_steps().unwrap().len(), 1);
    }

    /// Issue 18: gc beside a build deleted a snapshot the build was about to mount (its mtime
    /// is the layer's, not its last use). A snapshot listed by a live handle stays, with its
    /// deltas, however old it looks; once the handle is gone it may go.
    #[test]
    fn snapshots_a_live_handle_uses_are_kept_with_their_deltas() {
        let (dir, s) = store();
        let snaps = s.root().join(SNAPSHOTS_DIR);
        for name in ["aa", "aa.delta-bb", "bb", "cc"] {
            fs::create_dir_all(snaps.join(name)).unwrap();
            fs::write(snaps.join(name).join("f"), vec![0u8; 100]).unwrap();
        }
        let other = Store::open(dir.path()).unwrap();
        crate::snapshot_use::mark_in_use(other.scratch(), &["aa", "bb"]).unwrap();
        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert_eq!(r.snapshots, 1, "{r:?}");
        for name in ["aa", "aa.delta-bb", "bb"] {
            assert!(snaps.join(name).is_dir(), "{name} is in use");
        }
        assert!(!snaps.join("cc").exists());
        drop(other);
        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert_eq!(r.snapshots, 3, "{r:?}");
    }

    /// A build lists a snapshot and looks it up under the shared snapshot lock; gc checks the
    /// lists and moves a snapshot under the exclusive one. So gc cannot take a snapshot between
    /// a build's listing and its lookup: here gc waits for the lock, then sees the name.
    #[test]
    fn gc_waits_for_a_build_listing_a_snapshot_and_then_keeps_it() {
        let (dir, s) = store();
        let snap = s.root().join(SNAPSHOTS_DIR).join("aa");
        fs::create_dir_all(&snap).unwrap();
        let other = Store::open(dir.path()).unwrap();
        let shared = crate::snapshot_use::lock(s.root(), false).unwrap();
        std::thread::scope(|t| {
            let gc = t.spawn(|| gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap());
            std::thread::sleep(Duration::from_millis(300));
            assert!(snap.is_dir(), "gc must wait for the lock");
            crate::snapshot_use::mark_in_use(other.scratch(), &["aa"]).unwrap();
            drop(shared);
            assert_eq!(gc.join().unwrap().snapshots, 0);
        });
        assert!(snap.is_dir());
    }

    #[test]
    fn chunk_refs_to_absent_blobs_stale_temps_and_legacy_copies_are_removed() {
        let (_dir, s) = store();
        let l = step(&s, 1, 10, 0);
        let refs = s.root().join(CHUNK_REFS_DIR);
        fs::create_dir_all(&refs).unwrap();
        let write_ref = |name: &str, blob: &Digest| {
            let mut data = blob.to_string().into_bytes();
            data.extend_from_slice(&[0; 48]);
            fs::write(refs.join(name), data).unwrap();
        };
        write_ref("aa", &l.digest);
        write_ref("bb", &Digest::of(b"collected long ago"));
        fs::write(refs.join("cc"), b"short").unwrap();
        fs::write(refs.join(".tmp-dd-1"), b"").unwrap();
        File::options()
            .write(true)
            .open(refs.join(".tmp-dd-1"))
            .unwrap()
            .set_modified(now() - Duration::from_secs(60))
            .unwrap();
        let legacy = s.root().join("chunks-v1");
        fs::create_dir_all(&legacy).unwrap();
        fs::write(legacy.join("ee"), vec![0; 4096]).unwrap();
        gc(&s, &opts(GcPolicy::KeepStorage(u64::MAX))).unwrap();
        assert!(refs.join("aa").exists(), "its blob is there");
        assert!(!refs.join("bb").exists(), "its blob is gone");
        assert!(!refs.join("cc").exists(), "unreadable");
        assert!(refs.join(".tmp-dd-1").exists(), "may be a live writer's");
        assert!(!legacy.exists());
        // Much later, the temp file is a dead writer's.
        gc(
            &s,
            &GcOptions {
                now: now() + MIN_BLOB_AGE * 2,
                ..opts(GcPolicy::KeepStorage(u64::MAX))
            },
        )
        .unwrap();
        assert!(!refs.join(".tmp-dd-1").exists());
        assert!(refs.join("aa").exists());
    }

    /// Read-set layer indexes and SBOM layer scans go with their blob, like chunk references.
    #[test]
    fn readset_indexes_of_absent_blobs_are_removed() {
        let (_dir, s) = store();
        let l = step(&s, 1, 10, 0);
        for (area, magic) in [
            (Area::ReadsetIndex, b"SRSINDEX"),
            (Area::SbomIndex, b"SSBOMIDX"),
        ] {
            let dir = area.path(s.root());
            fs::create_dir_all(&dir).unwrap();
            let index = |blob: &Digest| {
                let mut data = blob.to_string().into_bytes();
                data.extend_from_slice(magic);
                data
            };
            fs::write(dir.join("aa"), index(&l.digest)).unwrap();
            fs::write(dir.join("bb"), index(&Digest::of(b"collected long ago"))).unwrap();
        }
        gc(&s, &opts(GcPolicy::KeepStorage(u64::MAX))).unwrap();
        for area in [Area::ReadsetIndex, Area::SbomIndex] {
            let dir = area.path(s.root());
            assert!(dir.join("aa").exists(), "{area:?}: its blob is there");
            assert!(!dir.join("bb").exists(), "{area:?}: its blob is gone");
        }
    }

    /// A cache mount of `size` bytes named `name`, last used `secs` before [`NOW`].
    fn cache_mount(store: &Store, name: &str, size: usize, secs: u64) -> PathBuf {
        let other = Store::open(store.root()).unwrap();
        let data = other.use_cache_mount(name).unwrap();
        drop(other);
        fs::create_dir(&data).unwrap();
        fs::write(data.join("f"), vec![0u8; size]).unwrap();
        let dir = data.parent().unwrap().to_path_buf();
        crate::cache_mounts::set_last_use(&dir, now() - Duration::from_secs(secs));
        dir
    }

    /// Cache mounts count towards `--keep-storage` and go least recently used first, in one
    /// order with steps and snapshots; the report names them.
    #[test]
    fn cache_mounts_go_least_recently_used_first() {
        let (_dir, s) = store();
        let old = cache_mount(&s, "aa", 1000, 3 * 3600);
        let step_between = step(&s, 1, 1000, 2 * 3600);
        let new = cache_mount(&s, "bb", 1000, 3600);
        // Room for one of the three: the cache used 3 h ago goes, then the step, and the
        // cache used an hour ago stays.
        let r = gc(&s, &opts(GcPolicy::KeepStorage(1500))).unwrap();
        assert_eq!(
            (r.cache_mounts, r.step_records, r.layers),
            (1, 1, 1),
            "{r:?}"
        );
        assert!(r.cache_mount_bytes >= 1000, "{r:?}");
        assert!(!old.exists());
        assert!(!s.blobs().contains(&step_between.digest));
        assert!(new.join("data/f").is_file());
        assert!(r.to_string().contains("1 cache mounts ("), "{r}");
        assert_eq!(
            fs::read_dir(s.root().join("cache-mounts-v1"))
                .unwrap()
                .count(),
            1
        );
        // By last use, not by name or by the data's mtime.
        let (_dir, s) = store();
        let a = cache_mount(&s, "aa", 10, 60);
        let b = cache_mount(&s, "bb", 10, 120);
        let r = gc(&s, &opts(GcPolicy::KeepStorage(15))).unwrap();
        assert_eq!(r.cache_mounts, 1, "{r:?}");
        assert!(a.exists() && !b.exists());
        // --keep-duration: those not used for that long.
        let r = gc(&s, &opts(GcPolicy::KeepDuration(Duration::from_secs(30)))).unwrap();
        assert_eq!(r.cache_mounts, 1, "{r:?}");
        assert!(!a.exists());
    }

    /// A cache mount a live store handle has mounted stays, whatever the policy; once the
    /// handle is dropped it is collected. The legacy `cache-mounts/` goes whatever the policy.
    #[test]
    fn cache_mounts_in_use_stay_and_legacy_ones_go() {
        let (_dir, s) = store();
        let building = Store::open(s.root()).unwrap();
        let data = building.use_cache_mount("cc").unwrap();
        fs::create_dir(&data).unwrap();
        fs::write(data.join("f"), "x").unwrap();
        crate::cache_mounts::set_last_use(
            data.parent().unwrap(),
            now() - Duration::from_secs(86_400),
        );
        let legacy = s.root().join("cache-mounts").join("0123");
        fs::create_dir_all(&legacy).unwrap();
        fs::write(legacy.join("f"), vec![0u8; 100]).unwrap();

        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert!(data.join("f").is_file(), "in use by a live handle: {r:?}");
        assert!(!s.root().join("cache-mounts").exists(), "{r:?}");
        assert_eq!((r.cache_mounts, r.cache_mount_bytes), (1, 100), "{r:?}");
        let r = gc(&s, &opts(GcPolicy::KeepDuration(Duration::from_secs(60)))).unwrap();
        assert_eq!(r.cache_mounts, 0, "{r:?}");
        drop(building);
        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert_eq!(r.cache_mounts, 1, "{r:?}");
        assert!(!data.parent().unwrap().exists());
        assert!(r.unremoved.is_empty(), "{r:?}");
    }

    #[test]
    fn keep_duration_evicts_what_was_not_used_for_that_long() {
        let (_dir, s) = store();
        let old = step(&s, 1, 10, 8 * 86_400);
        let new = step(&s, 2, 10, 86_400);
        let r = gc(
            &s,
            &opts(GcPolicy::KeepDuration(Duration::from_secs(7 * 86_400))),
        )
        .unwrap();
        assert_eq!((r.layers, r.step_records), (1, 1));
        assert!(!s.blobs().contains(&old.digest));
        assert!(s.blobs().contains(&new.digest));
    }

    #[test]
    fn young_unreferenced_blobs_are_left_for_a_build_in_progress() {
        let (_dir, s) = store();
        // Just written, not yet recorded by a step: maybe a concurrent build's.
        let (fresh, _) = s.blobs().put(b"being built").unwrap();
        File::options()
            .write(true)
            .open(s.blobs().path(&fresh))
            .unwrap()
            .set_modified(now() - Duration::from_secs(60))
            .unwrap();
        let (orphan, _) = s.blobs().put(b"orphan").unwrap();
        age(&s, &orphan, 3600);
        // A step recorded just now, and a snapshot being unpacked.
        let l = step(&s, 7, 10, 0);
        age(&s, &l.digest, 60);
        let snap = s.root().join(SNAPSHOTS_DIR).join(l.diff_id.hex());
        fs::create_dir_all(&snap).unwrap();
        File::open(&snap)
            .unwrap()
            .set_modified(now() - Duration::from_secs(60))
            .unwrap();
        let r = gc(&s, &opts(GcPolicy::KeepStorage(0))).unwrap();
        assert!(s.blobs().contains(&fresh));
        assert!(!s.blobs().contains(&orphan));
        assert!(s.blobs().contains(&l.digest));
        assert!(s.index().get_step(&[7; 32]).unwrap().is_some());
        assert!(snap.exists());
        assert_eq!((r.other_blobs, r.step_records, r.snapshots), (1, 0, 0));
    }

    #[test]
    fn parses_sizes_and_durations() {
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1.5k").unwrap(), 1500);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert_eq!(format_size(1_288_490_189), "1.2 GiB");
        assert_eq!(format_size(12), "12 B");
    }
}
