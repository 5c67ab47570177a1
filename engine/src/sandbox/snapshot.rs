//! Base layers unpacked once per diff_id, in overlayfs lower-dir form.
//!
//! `<store>/snapshots-v2/<diff_id hex>/` holds the unpacked layer: OCI whiteouts `.wh.x` become
//! char 0/0 devices `x`, `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory.
//! A snapshot is unpacked into a temp dir beside it and renamed into place, so a killed build
//! never leaves half a snapshot under the final name. Bump `-v1` if the on-disk form changes.
//!
//! Every entry gets the time its tar entry gives ([`entry_times`]), directories once all their
//! entries are in: a RUN must see the layer's times, not when the snapshot was unpacked
//! (`-v1` had no times, and a RUN that read them made cold builds differ).
//!
//! New snapshots are not synced: they go to `snapshots-v2/boot-<id>/` and are used only during
//! the boot that wrote them (`strata_cache::boot`), since only a crash can tear unsynced files.
//! After a restart they are unpacked again. Snapshots directly under `snapshots-v2/` (written
//! only where there is no boot id, each synced before its rename) are used in any boot.
//! docs/store.md has both rules.
//!
//! Rootless ([`super::userns`]), snapshots live in `snapshots-v2-rootless-<mapping>/`: they are
//! unpacked by a helper inside the user namespace (files carry host ids through the mapping,
//! so another mapping needs other snapshots) and opaque directories carry
//! `user.overlay.opaque=y`, which overlay reads under `userxattr`. Whiteouts stay char 0/0
//! devices: creating those needs no privilege (Linux 5.8).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use rustix::fs::{
    self as rfs, AtFlags, Dev, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use strata_cache::{BlobStore, Digest};

use super::confined::{
    components, create_new_file, mkdir_all_in_root, open_in_root, remove_all_at,
};
use super::SandboxError;
use crate::layer::whiteout::{self, Whiteout};

/// The layer limits, defined with the layer reader (re-exported: `sandbox::Limits`).
pub use crate::layer::Limits;

/// How a snapshot is written.
#[derive(Debug, Clone, Copy)]
pub struct Form {
    /// The xattr marking an opaque directory: `trusted.overlay.opaque` (root) or
    /// `user.overlay.opaque` (in a user namespace, for overlay's `userxattr`).
    pub opaque_xattr: &'static str,
    /// In a single-id user namespace: owners other than root cannot be set and are dropped.
    pub single_id: bool,
    /// In a user namespace: device nodes (other than whiteouts) cannot be created.
    pub userns: bool,
}

impl Default for Form {
    fn default() -> Self {
        Form {
            opaque_xattr: whiteout::OPAQUE_XATTR_TRUSTED,
            single_id: false,
            userns: false,
        }
    }
}

/// The directory of a rootless build's snapshots: one per id mapping (module docs).
fn rootless_dir_name(ns: &super::userns::UserNs) -> String {
    strata_cache::areas::rootless_snapshots(&ns.key())
}

/// The snapshot directory of a store.
#[derive(Debug, Clone)]
pub struct Snapshots {
    /// Durable snapshots (synced before their rename), valid in any boot.
    root: PathBuf,
    /// Where new snapshots go: `root/boot-<id>` (not synced, valid in this boot only), or
    /// `root` itself where there is no boot id.
    home: PathBuf,
    limits: Limits,
    ns: Option<&'static super::userns::UserNs>,
    /// Where layers are unpacked before being renamed into `root` (same file system): the
    /// store handle's scratch directory, which also holds its list of the snapshots it uses
    /// (`strata_cache::snapshot_use`, so `strata gc` keeps them).
    scratch: Option<PathBuf>,
    /// The store's root, for the snapshot lock.
    store_root: PathBuf,
}

/// The snapshot lock held shared while a build lists the snapshots it uses and looks them up
/// (`strata_cache::snapshot_use`); `None` without a store handle's scratch directory (unit
/// tests), where nothing is listed.
struct InUse<'a> {
    scratch: Option<&'a Path>,
    _lock: Option<strata_cache::snapshot_use::SnapshotLock>,
}

impl InUse<'_> {
    /// Lists `names` as used by this store handle: `strata gc` keeps them (and the deltas of
    /// those layers) while the handle lives.
    fn mark(&self, names: &[&str]) -> Result<(), SandboxError> {
        match self.scratch {
            Some(dir) => strata_cache::snapshot_use::mark_in_use(dir, names).map_err(|e| {
                SandboxError::io("write the snapshot in-use list in", dir.display(), e)
            }),
            None => Ok(()),
        }
    }
}

impl Snapshots {
    pub fn new(store_root: &Path) -> Self {
        let ns = super::userns::current();
        let dir = match ns {
            None => strata_cache::Area::Snapshots.name().to_string(),
            Some(ns) => rootless_dir_name(ns),
        };
        let root = store_root.join(dir);
        let home = match strata_cache::boot_id::boot_dir_name() {
            Some(boot) => root.join(boot),
            None => root.clone(),
        };
        Snapshots {
            root,
            home,
            limits: Limits::default(),
            ns,
            scratch: None,
            store_root: store_root.to_path_buf(),
        }
    }

    /// Unpack into `dir` (a store handle's scratch directory, which another process's
    /// `Store::open` never sweeps while we live) instead of `.tmp-*` next to the snapshots.
    pub fn with_scratch(mut self, dir: &Path) -> Self {
        self.scratch = Some(dir.to_path_buf());
        self
    }

    /// For `strata gc`, run by a user without privilege: where that user's rootless builds keep
    /// their snapshots, and how to remove one (its files belong to subordinate ids: a helper
    /// removes it inside the user namespace). `None` as root, whose gc removes snapshots itself.
    #[cfg(feature = "store")]
    pub fn rootless_gc() -> Option<strata_cache::RootlessSnapshots> {
        let ns = super::userns::detected()?;
        Some(strata_cache::RootlessSnapshots {
            dir_name: rootless_dir_name(ns),
            remove: |path| super::exec::remove_tree(path).map_err(io::Error::other),
        })
    }

    /// Takes the snapshot lock shared, to list snapshots and look them up as one step as gc
    /// sees it. Never hold it while unpacking: gc waits for it.
    fn in_use(&self) -> Result<InUse<'_>, SandboxError> {
        let Some(scratch) = self.scratch.as_deref() else {
            return Ok(InUse {
                scratch: None,
                _lock: None,
            });
        };
        let lock = strata_cache::snapshot_use::lock(&self.store_root, false).map_err(|e| {
            SandboxError::io(
                "take the snapshot lock",
                self.store_root
                    .join(strata_cache::snapshot_use::SNAPSHOT_LOCK)
                    .display(),
                e,
            )
        })?;
        Ok(InUse {
            scratch: Some(scratch),
            _lock: Some(lock),
        })
    }

    /// Where new snapshots go (module docs).
    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Returns the directory holding layer `diff_id` unpacked, unpacking it first from blob
    /// `digest` (with `media_type`) if needed. The blob's digest is verified while reading.
    /// When [`prefetch`](Snapshots::prefetch) is unpacking that layer, waits for it first.
    pub fn ensure(
        &self,
        blobs: &BlobStore,
        diff_id: &Digest,
        digest: &Digest,
        media_type: &str,
    ) -> Result<PathBuf, SandboxError> {
        self.wait_for_prefetch(&diff_id.hex());
        self.ensure_now(blobs, diff_id, digest, media_type, None)
    }

    /// [`ensure`](Snapshots::ensure) without waiting for a prefetch; the unpacking fails as soon
    /// as `stop` is set.
    fn ensure_now(
        &self,
        blobs: &BlobStore,
        diff_id: &Digest,
        digest: &Digest,
        media_type: &str,
        stop: Option<&Arc<AtomicBool>>,
    ) -> Result<PathBuf, SandboxError> {
        let hex = diff_id.hex();
        {
            // Listed before the lookup, under the lock: gc either moved it away before (we
            // find nothing and unpack it again) or keeps it while this store handle lives. The
            // listing also covers the snapshot unpacked below, from before it appears.
            let in_use = self.in_use()?;
            in_use.mark(&[hex.as_str()])?;
            // Reused: refresh its mtime too, its last use for gc's LRU order.
            for dest in self.candidates(&hex) {
                match std::fs::File::open(&dest)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()))
                {
                    Ok(()) => return Ok(dest),
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound && dest.is_dir() => {
                        return Ok(dest)
                    }
                    Err(_) => {}
                }
            }
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|e| SandboxError::io("create directory", self.root.display(), e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{hex}-"))
            .tempdir_in(self.scratch.as_deref().unwrap_or(&self.root))
            .map_err(|e| SandboxError::io("create temp dir in", self.root.display(), e))?;
        let blob = Stoppable {
            inner: blobs.open(digest)?,
            stop: stop.cloned(),
        };
        let reader = crate::layer::decompress_reader_limited(
            Box::new(blob),
            media_type,
            self.limits.zstd_window_log_max,
        )?;
        let tmp_path = tmp.keep();
        #[cfg(test)]
        tests::UNPACKED.lock().unwrap().push(self.home.join(&hex));
        // A panic too leaves nothing behind: rootless, the temp dir holds files of subordinate
        // ids that no later sweep (a plain removal as the user) could delete.
        let unpacked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match self.ns {
            None => unpack(reader, &tmp_path, self.limits),
            Some(ns) => super::exec::unpack_in_userns(ns, reader, &tmp_path, self.limits),
        }))
        .unwrap_or_else(|_| {
            Err(SandboxError::io(
                "unpack",
                tmp_path.display(),
                io::Error::other("the unpacker panicked"),
            ))
        });
        if let Err(e) = unpacked {
            self.remove(&tmp_path);
            return Err(e);
        }
        self.place(&tmp_path, &hex)
    }

    /// Where a snapshot named `name` may be: the durable one first, then this boot's.
    fn candidates(&self, name: &str) -> Vec<PathBuf> {
        let mut c = vec![self.root.join(name)];
        if self.home != self.root {
            c.push(self.home.join(name));
        }
        c
    }

    /// The snapshot named `name`, if it is there.
    fn find(&self, name: &str) -> Option<PathBuf> {
        self.candidates(name).into_iter().find(|p| p.is_dir())
    }

    /// The delta snapshots of layer `hex` that are there (`<hex>.delta-<base hex>`), each with
    /// its base's hex.
    fn deltas(&self, hex: &str) -> Vec<(PathBuf, String)> {
        let prefix = format!("{hex}.delta-");
        let mut found = Vec::new();
        for dir in self.candidates("") {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                if let Some(base_hex) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) {
                    found.push((e.path(), base_hex.to_string()));
                }
            }
        }
        found
    }

    /// Makes the unpacked directory `tmp` the snapshot `name` and returns where it is. Into the
    /// durable directory only after a `syncfs` (module docs). When another build placed the
    /// same snapshot meanwhile, theirs is as good as ours and `tmp` is removed.
    fn place(&self, tmp: &Path, name: &str) -> Result<PathBuf, SandboxError> {
        let dest = self.home.join(name);
        let placed = (|| {
            if self.home == self.root {
                let dir = rfs::open(tmp, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
                rfs::syncfs(&dir)?;
            }
            std::fs::create_dir_all(&self.home)?;
            std::fs::rename(tmp, &dest)
        })();
        match placed {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                self.remove(tmp);
                Ok(dest)
            }
            Err(e) => {
                self.remove(tmp);
                Err(SandboxError::io("place snapshot at", dest.display(), e))
            }
        }
    }

    fn remove(&self, path: &Path) {
        match self.ns {
            None => drop(remove_tree(path)),
            Some(_) => drop(super::exec::remove_tree(path)),
        }
    }
}

impl Snapshots {
    /// The lower dirs (bottom first) that show layer `diff_id`: its full snapshot, or a delta
    /// snapshot stacked on the full snapshot of a similar layer ([`super::delta`]). A new
    /// snapshot is made as a delta over `similar` (e.g. the same COPY step's previous layer)
    /// when that one's full snapshot exists and the layer fits the delta model; else in full.
    pub fn ensure_stack(
        &self,
        blobs: &BlobStore,
        diff_id: &Digest,
        digest: &Digest,
        media_type: &str,
        similar: Option<&Digest>,
    ) -> Result<Vec<PathBuf>, SandboxError> {
        self.wait_for_prefetch(&diff_id.hex());
        let base = {
            // Everything found here is listed before the lock is released (`ensure`).
            let in_use = self.in_use()?;
            in_use.mark(&[diff_id.hex().as_str()])?;
            if self.ns.is_some() || self.find(&diff_id.hex()).is_some() {
                // Rootless snapshots are unpacked by a helper in the user namespace: full only.
                drop(in_use);
                return Ok(vec![self.ensure(blobs, diff_id, digest, media_type)?]);
            }
            // A delta made earlier (named `<diff_id>.delta-<base diff_id>`), if its base is
            // still there.
            for (delta, base_hex) in self.deltas(&diff_id.hex()) {
                if let Some(base) = self.find(&base_hex) {
                    in_use.mark(&[base_hex.as_str()])?;
                    return Ok(vec![base, delta]);
                }
                // Its base was evicted: the delta alone shows nothing useful.
                let _ = remove_tree(&delta);
            }
            match similar.filter(|s| *s != diff_id) {
                Some(similar) => self.full_base(similar, &in_use)?,
                None => None,
            }
        };
        if let Some((base_hex, base)) = base {
            std::fs::create_dir_all(&self.root)
                .map_err(|e| SandboxError::io("create directory", self.root.display(), e))?;
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".tmp-{}-", diff_id.hex()))
                .tempdir_in(self.scratch.as_deref().unwrap_or(&self.root))
                .map_err(|e| SandboxError::io("create temp dir in", self.root.display(), e))?
                .keep();
            let blob = blobs.open(digest)?;
            let reader = crate::layer::decompress_reader_limited(
                Box::new(blob),
                media_type,
                self.limits.zstd_window_log_max,
            )?;
            match super::delta::unpack_delta(reader, &tmp, &base, self.limits) {
                Ok(super::delta::Delta::Done { .. }) => {
                    let name = format!("{}.delta-{base_hex}", diff_id.hex());
                    return Ok(vec![base, self.place(&tmp, &name)?]);
                }
                Ok(super::delta::Delta::Unsuitable(_)) => {
                    let _ = remove_tree(&tmp);
                }
                Err(e) => {
                    let _ = remove_tree(&tmp);
                    return Err(e);
                }
            }
        }
        Ok(vec![self.ensure(blobs, diff_id, digest, media_type)?])
    }
}

/// The lower dirs to mount for a stack of snapshot dirs (bottom first), as overlayfs accepts
/// them: it refuses a directory that appears twice (`ELOOP`, "Too many levels of symbolic
/// links"), which three `RUN true` in a row produce (three identical empty layers), as do two
/// identical COPYs. The merged view stays the same: an empty snapshot contributes nothing, and
/// of a directory that appears several times only the topmost occurrence counts — every path
/// it writes (a file, a whiteout, an opaque directory) it writes again there, above whatever
/// lies between, and paths it does not write are not affected by it anywhere. Empty: scratch.
pub fn overlay_lowers(stack: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut top_first: Vec<PathBuf> = Vec::with_capacity(stack.len());
    for dir in stack.iter().rev() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        // Unreadable (a rootless snapshot whose root is container root's 0700): kept.
        let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
        if !empty {
            top_first.push(dir.clone());
        }
    }
    top_first.reverse();
    top_first
}

/// A delta snapshot being made from the uncompressed tar of a layer while the layer is
/// written ([`Snapshots::start_delta`]).
pub struct DeltaInProgress {
    snaps: Snapshots,
    /// `None`: a full snapshot is being unpacked.
    base_hex: Option<String>,
    tmp: PathBuf,
    /// Whether the snapshot is complete and usable.
    worker: std::thread::JoinHandle<Result<bool, SandboxError>>,
}

/// Reads the chunks a [`crate::layer::RawTee`] sends; the end when the sender is dropped.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<std::sync::Arc<Vec<u8>>>,
    cur: std::sync::Arc<Vec<u8>>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => (self.cur, self.pos) = (c, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Snapshots {
    /// Starts unpacking a layer that is about to be written as a delta over the full snapshot
    /// of `similar`, fed by the returned sender (pass it to [`crate::layer::write_layer_tee`]):
    /// no decompression and no second read of the blob. `None` if that snapshot is not there
    /// (or rootless: snapshots are unpacked by a helper there).
    pub fn start_delta(&self, similar: &Digest) -> Option<(crate::layer::RawTee, DeltaInProgress)> {
        if self.ns.is_some() {
            return None;
        }
        let base = {
            let in_use = self.in_use().ok()?;
            self.full_base(similar, &in_use).ok()??
        };
        self.start(Some(base))
    }

    /// Like [`start_delta`](Snapshots::start_delta), for a layer with no similar snapshot: a
    /// full snapshot unpacked from the tar being written.
    pub fn start_full(&self) -> Option<(crate::layer::RawTee, DeltaInProgress)> {
        if self.ns.is_some() {
            return None;
        }
        self.start(None)
    }

    fn start(
        &self,
        base: Option<(String, PathBuf)>,
    ) -> Option<(crate::layer::RawTee, DeltaInProgress)> {
        std::fs::create_dir_all(&self.root).ok()?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-tee-")
            .tempdir_in(self.scratch.as_deref().unwrap_or(&self.root))
            .ok()?
            .keep();
        // Nothing buffered: the writer hands over each chunk as the unpacker takes it, so
        // memory grows by at most the chunk being unpacked.
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
        let (dest, limits) = (tmp.clone(), self.limits);
        let base_hex = base.as_ref().map(|(h, _)| h.clone());
        let worker = std::thread::spawn(move || {
            let reader = ChunkReader {
                rx,
                cur: Default::default(),
                pos: 0,
            };
            match base {
                Some((_, base)) => super::delta::unpack_delta(reader, &dest, &base, limits)
                    .map(|d| matches!(d, super::delta::Delta::Done { .. })),
                None => unpack(reader, &dest, limits).map(|()| true),
            }
        });
        Some((
            tx,
            DeltaInProgress {
                snaps: self.clone(),
                base_hex,
                tmp,
                worker,
            },
        ))
    }
}

impl Snapshots {
    /// The full snapshot a delta for a layer like `similar` can be made over: `similar`'s own,
    /// or, when `similar` is itself a delta (an edit after an edit), the full snapshot under it
    /// — deltas never stack on deltas.
    /// The base found is listed in `in_use` (held by the caller until the base is listed).
    fn full_base(
        &self,
        similar: &Digest,
        in_use: &InUse<'_>,
    ) -> Result<Option<(String, PathBuf)>, SandboxError> {
        let found = match self.find(&similar.hex()) {
            Some(own) => Some((similar.hex(), own)),
            None => self
                .deltas(&similar.hex())
                .into_iter()
                .find_map(|(_, base_hex)| Some((base_hex.clone(), self.find(&base_hex)?))),
        };
        if let Some((base_hex, _)) = &found {
            in_use.mark(&[base_hex.as_str()])?;
        }
        Ok(found)
    }
}

impl DeltaInProgress {
    /// Waits for the unpacking; keeps the delta as the snapshot of `diff_id` (the layer whose
    /// tar was sent, `None` if writing it failed) when it is complete. Whether it was kept.
    pub fn finish(self, diff_id: Option<&Digest>) -> bool {
        let outcome = self.worker.join();
        // (A layer equal to its base has that full snapshot already.)
        let diff_id = diff_id.filter(|d| self.base_hex.as_deref() != Some(d.hex().as_str()));
        if let (Some(d), Ok(Ok(true))) = (diff_id, outcome) {
            let name = match &self.base_hex {
                Some(b) => format!("{}.delta-{b}", d.hex()),
                None => d.hex(),
            };
            // Listed before it appears (`Snapshots::ensure`): the next RUN mounts it.
            let listed = self
                .snaps
                .in_use()
                .and_then(|u| u.mark(&[d.hex().as_str()]));
            if listed.is_ok() {
                return self.snaps.place(&self.tmp, &name).is_ok();
            }
        }
        let _ = remove_tree(&self.tmp);
        false
    }
}

/// Fails every read once `stop` is set: a prefetch that is no longer wanted stops early.
struct Stoppable<R> {
    inner: R,
    stop: Option<Arc<AtomicBool>>,
}

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            // (Not `Interrupted`: readers retry that.)
            return Err(io::Error::other(
                "unpacking stopped: the build no longer needs it",
            ));
        }
        self.inner.read(buf)
    }
}

/// One layer a prefetch has promised: `true` once it is placed or given up.
#[derive(Default)]
struct Promise {
    done: Mutex<bool>,
    cv: Condvar,
}

/// The layers being unpacked in the background in this process, by the snapshot path they are
/// placed at: whoever needs one of them waits rather than unpacking it a second time.
fn promised() -> &'static Mutex<HashMap<PathBuf, Arc<Promise>>> {
    static PROMISED: OnceLock<Mutex<HashMap<PathBuf, Arc<Promise>>>> = OnceLock::new();
    PROMISED.get_or_init(Default::default)
}

/// Layers being unpacked in the background ([`Snapshots::prefetch`]). Dropping it stops what
/// is not unpacked yet (nothing partial is kept) and waits for its thread.
pub struct Prefetch {
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Snapshots {
    /// Starts unpacking, on a background thread and bottom first, each of `layers` that has no
    /// snapshot yet (full, or a delta: see [`ensure_stack`](Snapshots::ensure_stack)) and that
    /// no other prefetch is unpacking. For a RUN later in the stage: a COPY calls this when it
    /// misses the cache, and the layers unpack while it writes its own layer instead of before
    /// it. [`ensure`](Snapshots::ensure) waits for a promised layer. `None` if there is nothing
    /// to do. A failure is not reported here: `ensure` then unpacks again and reports it.
    pub fn prefetch(
        &self,
        blobs: &BlobStore,
        layers: &[crate::image::LayerDesc],
    ) -> Option<Prefetch> {
        let mut todo = Vec::new();
        {
            let mut p = promised().lock().unwrap();
            for l in layers {
                let hex = l.diff_id.hex();
                let at = self.home.join(&hex);
                if p.contains_key(&at) || self.find(&hex).is_some() || !self.deltas(&hex).is_empty()
                {
                    continue;
                }
                let promise = Arc::new(Promise::default());
                p.insert(at.clone(), promise.clone());
                todo.push((l.clone(), at, promise));
            }
        }
        if todo.is_empty() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (snaps, blobs, flag) = (self.clone(), blobs.clone(), stop.clone());
        // Kept here too: a failed spawn drops the thread's list, and every promise must be kept.
        let promises: Vec<(PathBuf, Arc<Promise>)> = todo
            .iter()
            .map(|(_, at, p)| (at.clone(), p.clone()))
            .collect();
        let spawned = std::thread::Builder::new()
            .name("snapshot-prefetch".into())
            .spawn(move || {
                for (l, at, promise) in todo {
                    if !flag.load(Ordering::Relaxed) {
                        // Every promise is kept, even after a panic: a RUN waits for it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let (d, g, mt) = (&l.diff_id, &l.digest, &l.media_type);
                            snaps.ensure_now(&blobs, d, g, mt, Some(&flag))
                        }));
                    }
                    keep(&at, &promise);
                }
            });
        match spawned {
            Ok(worker) => Some(Prefetch {
                stop,
                worker: Some(worker),
            }),
            Err(_) => {
                for (at, promise) in &promises {
                    keep(at, promise);
                }
                None
            }
        }
    }

    /// Waits while a prefetch is unpacking layer `hex`.
    fn wait_for_prefetch(&self, hex: &str) {
        let promise = promised()
            .lock()
            .unwrap()
            .get(&self.home.join(hex))
            .cloned();
        if let Some(p) = promise {
            let mut done = p.done.lock().unwrap();
            while !*done {
                done = p.cv.wait(done).unwrap();
            }
        }
    }
}

/// A promised layer is placed or given up: forget it, and wake whoever waits for it.
fn keep(at: &Path, promise: &Promise) {
    promised().lock().unwrap().remove(at);
    *promise.done.lock().unwrap() = true;
    promise.cv.notify_all();
}

pub(crate) fn remove_tree(path: &Path) -> Result<(), Errno> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = rfs::open(parent, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    remove_all_at(dir.as_fd(), path.file_name().unwrap_or_default())
}

/// Unpacks a layer tar into `dest` (an existing directory), in overlayfs lower-dir form. The
/// whole stream is read, so a verifying reader reports a digest mismatch as an error here.
pub fn unpack(reader: impl Read, dest: &Path, limits: Limits) -> Result<(), SandboxError> {
    unpack_with(reader, dest, limits, Form::default())
}

/// [`unpack`] in the given [`Form`].
pub fn unpack_with(
    reader: impl Read,
    dest: &Path,
    limits: Limits,
    form: Form,
) -> Result<(), SandboxError> {
    let root = rfs::open(
        dest,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SandboxError::io("open", dest.display(), e.into()))?;
    // The snapshot root becomes the container's `/` when it is the bottom layer.
    rfs::fchmod(&root, Mode::from_raw_mode(0o755))
        .map_err(|e| SandboxError::io("chmod", dest.display(), e.into()))?;
    let mut u = Unpacker {
        root,
        limits,
        bytes: 0,
        is_root: rustix::process::geteuid().is_root(),
        form,
        last_parent: None,
        dir_times: std::collections::HashMap::new(),
        buf: vec![0; 256 << 10],
    };
    let read_err = |e| read_error(e, dest);
    crate::layer::LayerReader::new(reader, limits).for_each(read_err, |mut e| {
        u.entry(&mut e)?;
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    u.set_dir_times()
}

/// A refusal of the layer reader as the unpacker reports it (`dest`: the snapshot directory).
pub(super) fn read_error(e: crate::layer::ReadError, dest: &Path) -> SandboxError {
    use crate::layer::ReadError as R;
    match e {
        R::Stream(e) => SandboxError::io("read layer", dest.display(), e),
        R::Limit { what, limit } => SandboxError::Limit { what, limit },
        R::PaxHeader { path, source } => SandboxError::io("read PAX header of", path, source),
        R::PaxSizeDesync { path, reason } => SandboxError::PaxSizeDesync { path, reason },
        R::UnsafePath { path, reason } => SandboxError::UnsafeEntry { path, reason },
    }
}

struct Unpacker {
    root: OwnedFd,
    limits: Limits,
    bytes: u64,
    is_root: bool,
    form: Form,
    /// The parent directory of the last entry, still open: a layer's entries are sorted, so
    /// most entries share their parent with the one before. An entry only creates, replaces or
    /// marks children of its parent, never the parent itself, so the handle stays right for
    /// the next entry with the same parent path; any other path is opened afresh.
    last_parent: Option<(Vec<std::ffi::OsString>, OwnedFd)>,
    /// The times of every directory, set once all entries are in (a new entry changes its
    /// directory's mtime): the layer's for those it lists, the epoch for parents it implies.
    dir_times: std::collections::HashMap<Vec<std::ffi::OsString>, Timestamps>,
    /// File contents are copied through this.
    buf: Vec<u8>,
}

fn unsafe_entry(path: &[u8], reason: &'static str) -> SandboxError {
    SandboxError::UnsafeEntry {
        path: String::from_utf8_lossy(path).into_owned(),
        reason,
    }
}

impl Unpacker {
    fn entry<R: Read>(
        &mut self,
        le: &mut crate::layer::LayerEntry<'_, R>,
    ) -> Result<(), SandboxError> {
        let raw_path = std::mem::take(&mut le.raw_path);
        let comps = std::mem::take(&mut le.components);
        let e = &mut le.entry;
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let shown_ref = &shown;
        let io_err =
            |op: &'static str| move |err: Errno| SandboxError::io(op, shown_ref, err.into());
        let header = e.header().clone();
        let kind = header.entry_type();
        let mode = header
            .mode()
            .map_err(|err| SandboxError::io("read mode of", &shown, err))?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|err| SandboxError::io("read uid of", &shown, err))?;
        let gid = header
            .gid()
            .map_err(|err| SandboxError::io("read gid of", &shown, err))?;
        let times =
            entry_times(e).map_err(|err| SandboxError::io("read PAX header of", &shown, err))?;

        let Some((name, parent)) = comps.split_last() else {
            // `.` or `/`: only a directory may describe the root; a symlink named `.` replaced
            // umoci's rootfs (CVE-2021-29136).
            if !kind.is_dir() {
                return Err(unsafe_entry(&raw_path, "the root can only be a directory"));
            }
            self.set_owner_mode(self.root.as_fd(), uid, gid, mode)
                .map_err(io_err("set owner and mode of"))?;
            self.dir_times.insert(Vec::new(), times);
            return Ok(());
        };
        let parent_fd = match self.last_parent.take() {
            Some((p, fd)) if p.as_slice() == parent => fd,
            _ => {
                for i in 0..=parent.len() {
                    if !self.dir_times.contains_key(&parent[..i]) {
                        self.dir_times.insert(parent[..i].to_vec(), epoch());
                    }
                }
                mkdir_all_in_root(self.root.as_fd(), parent, 0o755)
                    .map_err(io_err("create parent directories of"))?
            }
        };
        let r = self.entry_in(
            e,
            &parent_fd,
            name,
            &raw_path,
            &shown,
            kind,
            mode,
            (uid, gid),
            &times,
        );
        self.last_parent = Some((parent.to_vec(), parent_fd));
        if r.is_ok() && kind.is_dir() {
            self.dir_times.insert(comps, times);
        }
        r
    }

    /// Sets the times of every directory, now that no entry will change them.
    fn set_dir_times(&self) -> Result<(), SandboxError> {
        for (comps, times) in &self.dir_times {
            let path = super::confined::join(comps);
            let shown = String::from_utf8_lossy(path.as_bytes()).into_owned();
            // No symlink on the way: a directory a later entry replaced (by a file, a symlink,
            // or a whiteout) took its time with it, and a symlink must not redirect this.
            let opened = super::confined::open_in_root_no_symlinks(
                self.root.as_fd(),
                comps,
                OFlags::DIRECTORY | OFlags::RDONLY,
            );
            let d = match opened {
                Ok(d) => d,
                Err(Errno::NOTDIR | Errno::NOENT | Errno::LOOP) => continue,
                Err(e) => return Err(SandboxError::io("open directory", &shown, e.into())),
            };
            rfs::futimens(&d, times)
                .map_err(|e| SandboxError::io("set times of", &shown, e.into()))?;
        }
        Ok(())
    }

    /// [`entry`](Self::entry) once its parent directory is open.
    #[allow(clippy::too_many_arguments)]
    fn entry_in<R: Read>(
        &mut self,
        e: &mut tar::Entry<R>,
        parent_fd: &OwnedFd,
        name: &std::ffi::OsString,
        raw_path: &[u8],
        shown: &String,
        kind: tar::EntryType,
        mode: u32,
        (uid, gid): (u64, u64),
        times: &Timestamps,
    ) -> Result<(), SandboxError> {
        let header = e.header().clone();
        let io_err = |op: &'static str| move |err: Errno| SandboxError::io(op, shown, err.into());
        let name_b = name.as_encoded_bytes();

        // Whiteouts.
        match whiteout::classify(name_b) {
            None => {}
            Some(Whiteout::Opaque) => {
                return rfs::fsetxattr(
                    parent_fd,
                    self.form.opaque_xattr,
                    b"y",
                    XattrFlags::empty(),
                )
                .map_err(io_err("mark opaque"));
            }
            Some(Whiteout::AufsMeta(_)) => return Ok(()),
            Some(Whiteout::Remove(target)) => {
                if target.is_empty() || target == b"." || target == b".." {
                    return Err(unsafe_entry(raw_path, "whiteout of an invalid name"));
                }
                let target = OsStr::from_bytes(target);
                remove_all_at(parent_fd.as_fd(), target).map_err(io_err("remove whited-out"))?;
                return self.mknod(
                    parent_fd.as_fd(),
                    target,
                    FileType::CharacterDevice,
                    0,
                    0,
                    shown,
                );
            }
        }

        use tar::EntryType as T;
        // Replace whatever is there, except that a directory over a directory merges. A
        // regular file is created exclusively first and looks only when that fails: in a
        // fresh snapshot nothing is there, and the stat is a syscall per file.
        let regular = matches!(kind, T::Regular | T::Continuous);
        let existing = if regular {
            None
        } else {
            match rfs::statat(parent_fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
                Err(Errno::NOENT) => None,
                Err(err) => return Err(io_err("stat")(err)),
            }
        };
        if !(kind.is_dir() && existing == Some(FileType::Directory)) && existing.is_some() {
            remove_all_at(parent_fd.as_fd(), name).map_err(io_err("replace"))?;
        }

        match kind {
            T::Regular | T::Continuous => {
                // The size the archive is positioned by (PAX `size` when present, which the
                // layer reader made sure agrees with the ustar field).
                let size = e.size();
                self.bytes = self.bytes.saturating_add(size);
                if self.bytes > self.limits.max_bytes {
                    return Err(SandboxError::Limit {
                        what: "uncompressed size",
                        limit: self.limits.max_bytes,
                    });
                }
                let create = || create_new_file(parent_fd.as_fd(), name.as_os_str(), 0o600);
                let f = match create() {
                    Err(Errno::EXIST) => {
                        remove_all_at(parent_fd.as_fd(), name).map_err(io_err("replace"))?;
                        create()
                    }
                    r => r,
                }
                .map_err(io_err("create"))?;
                let mut file = std::fs::File::from(f);
                let mut content = e.take(size);
                let mut n = 0u64;
                loop {
                    let got = match content.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(got) => got,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Err(SandboxError::io("write", shown, err)),
                    };
                    file.write_all(&self.buf[..got])
                        .map_err(|err| SandboxError::io("write", shown, err))?;
                    n += got as u64;
                }
                if n != size {
                    return Err(unsafe_entry(raw_path, "truncated file content"));
                }
                // chown clears setuid bits and file capabilities: owner, then mode, then xattrs.
                self.set_owner_mode(file.as_fd(), uid, gid, mode)
                    .map_err(io_err("set owner and mode of"))?;
                if let Some(exts) = e
                    .pax_extensions()
                    .map_err(|err| SandboxError::io("read", shown, err))?
                {
                    for ext in exts {
                        let ext = ext.map_err(|err| SandboxError::io("read", shown, err))?;
                        // Only file capabilities: `trusted.overlay.*` from a layer would steer
                        // overlayfs (redirects, metacopy) — never apply those.
                        if ext.key_bytes() == b"SCHILY.xattr.security.capability" {
                            rfs::fsetxattr(
                                &file,
                                "security.capability",
                                ext.value_bytes(),
                                XattrFlags::empty(),
                            )
                            .map_err(io_err("set capabilities of"))?;
                        }
                    }
                }
                rfs::futimens(&file, times).map_err(io_err("set times of"))
            }
            T::Directory => {
                if existing != Some(FileType::Directory) {
                    rfs::mkdirat(parent_fd, name.as_os_str(), Mode::from_raw_mode(0o700))
                        .map_err(io_err("create directory"))?;
                }
                let d = rfs::openat(
                    parent_fd,
                    name.as_os_str(),
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open directory"))?;
                self.set_owner_mode(d.as_fd(), uid, gid, mode)
                    .map_err(io_err("set owner and mode of"))
            }
            T::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(raw_path, "symlink without a target"))?;
                if target.is_empty() || target.contains(&0) {
                    return Err(unsafe_entry(raw_path, "invalid symlink target"));
                }
                rfs::symlinkat(OsStr::from_bytes(&target), parent_fd, name.as_os_str())
                    .map_err(io_err("create symlink"))?;
                self.lchown(parent_fd.as_fd(), name, uid, gid)
                    .map_err(io_err("chown"))?;
                set_times_at(parent_fd.as_fd(), name, times).map_err(io_err("set times of"))
            }
            T::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(raw_path, "hard link without a target"))?;
                let tcomps = components(&target).map_err(|r| unsafe_entry(raw_path, r))?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(unsafe_entry(raw_path, "hard link to the root"));
                };
                // Resolved inside the snapshot: a link to `/etc/shadow` means the layer's own.
                let tparent_fd =
                    open_in_root(self.root.as_fd(), tparent, OFlags::DIRECTORY | OFlags::PATH)
                        .map_err(io_err("resolve hard link target of"))?;
                rfs::linkat(
                    &tparent_fd,
                    tname.as_os_str(),
                    parent_fd,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(io_err("create hard link"))
            }
            T::Char | T::Block | T::Fifo => {
                let ft = match kind {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.mknod(parent_fd.as_fd(), name, ft, major, minor, shown)?;
                self.lchown(parent_fd.as_fd(), name, uid, gid)
                    .map_err(io_err("chown"))?;
                rfs::chmodat(
                    parent_fd,
                    name.as_os_str(),
                    Mode::from_raw_mode(mode),
                    AtFlags::empty(),
                )
                .map_err(io_err("chmod"))?;
                set_times_at(parent_fd.as_fd(), name, times).map_err(io_err("set times of"))
            }
            other => Err(SandboxError::Unsupported(format!(
                "layer entry `{shown}` of tar type {:?} is not supported",
                other.as_byte() as char
            ))),
        }
    }

    fn mknod(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        ft: FileType,
        major: u32,
        minor: u32,
        shown: &str,
    ) -> Result<(), SandboxError> {
        let whiteout = ft == FileType::CharacterDevice && major == 0 && minor == 0;
        if ft != FileType::Fifo && !whiteout && (!self.is_root || self.form.userns) {
            return Err(SandboxError::Unsupported(format!(
                "device node `{shown}` can only be unpacked as root (rootless: device nodes in base layers are not supported yet; the kernel refuses mknod in a user namespace)"
            )));
        }
        let dev: Dev = rustix::fs::makedev(major, minor);
        rfs::mknodat(dir, name, ft, Mode::from_raw_mode(0o600), dev)
            .map_err(|e| SandboxError::io("create device node", shown, e.into()))
    }

    fn set_owner_mode(
        &self,
        fd: BorrowedFd<'_>,
        uid: u64,
        gid: u64,
        mode: u32,
    ) -> Result<(), Errno> {
        // Not mapped in a single-id namespace: stays root's (the warned-about loss).
        chown_chmod(fd, self.is_root, (uid, gid), mode, self.form.single_id)
    }

    fn lchown(&self, dir: BorrowedFd<'_>, name: &OsStr, uid: u64, gid: u64) -> Result<(), Errno> {
        if !self.is_root {
            return Ok(());
        }
        let (u, g) = ids(uid, gid)?;
        match rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::INVAL) if self.form.single_id => Ok(()),
            r => r,
        }
    }
}

/// What a snapshot gives an entry as both its access and modification time: the layer's
/// (PAX `mtime`, with its fraction, when present, else the ustar field). A RUN that reads times
/// (make, `find -newer`, `stat`, a tool that hashes a tree with its times) must see the
/// layer's, never when the snapshot happened to be unpacked: that made a RUN's output differ
/// between two cold builds of the same inputs. An unreadable ustar field counts as the epoch.
pub(crate) fn entry_times<R: Read>(e: &mut tar::Entry<R>) -> io::Result<Timestamps> {
    let secs = e.header().mtime().unwrap_or(0).min(i64::MAX as u64) as i64;
    let mut t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    if let Some(exts) = e.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if ext.key_bytes() == b"mtime" {
                if let Some(p) = parse_pax_time(ext.value_bytes()) {
                    t = p;
                }
            }
        }
    }
    Ok(stamps(t))
}

/// Sets the times of `name` in `dir` itself (a symlink's own, never its target's).
fn set_times_at(dir: BorrowedFd<'_>, name: &OsStr, times: &Timestamps) -> Result<(), Errno> {
    rfs::utimensat(dir, name, times, AtFlags::SYMLINK_NOFOLLOW)
}

/// The epoch, for directories a layer implies without listing them.
pub(super) fn epoch() -> Timestamps {
    stamps(Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    })
}

/// `t` as both access and modification time.
pub(super) fn stamps(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The access and modification times of a `stat`.
pub(super) fn times_of(st: &rfs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// A PAX time: decimal seconds, optionally negative, with an optional fraction.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = &frac[..frac.len().min(9)];
    let mut nanos: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    for _ in digits.len()..9 {
        nanos *= 10;
    }
    Some(if int.starts_with('-') && nanos > 0 {
        // -1.25 is 1.25 s before the epoch: -2 s + 0.75 s.
        Timespec {
            tv_sec: secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        }
    } else {
        Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    })
}

/// Sets the owner (only as root: nobody else may give a file away) and then the mode — in that
/// order, since chown clears setuid bits. `unmapped_ok`: an id the user namespace does not map
/// (`EINVAL`) leaves the owner as it is.
pub(super) fn chown_chmod(
    fd: BorrowedFd<'_>,
    is_root: bool,
    (uid, gid): (u64, u64),
    mode: u32,
    unmapped_ok: bool,
) -> Result<(), Errno> {
    // Most entries are new files and directories that already have the owner (ours: root) and
    // often the mode: a stat costs far less than a chown or chmod, each of which dirties the
    // inode (on a 50k-file layer they were a sixth of the unpacking).
    let st = rfs::fstat(fd)?;
    if is_root && (u64::from(st.st_uid), u64::from(st.st_gid)) != (uid, gid) {
        let (u, g) = ids(uid, gid)?;
        match rfs::fchown(fd, Some(u), Some(g)) {
            Err(Errno::INVAL) if unmapped_ok => {}
            r => r?,
        }
        // (A chown may clear the set-id bits: the mode is set below in any case.)
        return rfs::fchmod(fd, Mode::from_raw_mode(mode));
    }
    if st.st_mode & 0o7777 != mode & 0o7777 {
        rfs::fchmod(fd, Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

fn ids(uid: u64, gid: u64) -> Result<(Uid, Gid), Errno> {
    let u = u32::try_from(uid).map_err(|_| Errno::INVAL)?;
    let g = u32::try_from(gid).map_err(|_| Errno::INVAL)?;
    Ok((Uid::from_raw(u), Gid::from_raw(g)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use tar::{EntryType, Header};

    /// A tar built from raw headers: the `tar` crate's `set_path` refuses `..` and absolute
    /// paths, which is exactly what a hostile layer contains.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Tar(tar::Builder::new(Vec::new()))
        }
        fn raw(mut self, path: &str, kind: EntryType, link: &str, data: &[u8], mode: u32) -> Self {
            let mut h = Header::new_ustar();
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }
        fn file(self, path: &str, data: &[u8]) -> Self {
            self.raw(path, EntryType::Regular, "", data, 0o644)
        }
        fn dir(self, path: &str) -> Self {
            self.raw(path, EntryType::Directory, "", b"", 0o755)
        }
        fn symlink(self, path: &str, target: &str) -> Self {
            self.raw(path, EntryType::Symlink, target, b"", 0o777)
        }
        fn hardlink(self, path: &str, target: &str) -> Self {
            self.raw(path, EntryType::Link, target, b"", 0o644)
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    /// `<tmp>/outside/` (with a file `secret`) and `<tmp>/a/b/snap/` — three levels deep, so a
    /// `../../..` that escaped would land in `<tmp>`.
    struct Fixture {
        tmp: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
            std::fs::write(tmp.path().join("outside/secret"), b"host").unwrap();
            std::fs::create_dir_all(tmp.path().join("a/b/snap")).unwrap();
            Fixture { tmp }
        }
        fn outside(&self) -> PathBuf {
            self.tmp.path().join("outside")
        }
        fn snap(&self) -> PathBuf {
            self.tmp.path().join("a/b/snap")
        }
        fn unpack(&self, tar: Vec<u8>) -> Result<(), SandboxError> {
            unpack(&tar[..], &self.snap(), Limits::default())
        }
        /// Nothing outside the snapshot was created or changed.
        fn assert_contained(&self) {
            let mut names: Vec<_> = std::fs::read_dir(self.tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            assert_eq!(names, ["a", "outside"]);
            let outside: Vec<_> = std::fs::read_dir(self.outside()).unwrap().collect();
            assert_eq!(outside.len(), 1, "something was written into outside/");
            assert_eq!(
                std::fs::read(self.outside().join("secret")).unwrap(),
                b"host"
            );
            assert_eq!(
                std::fs::read_dir(self.tmp.path().join("a"))
                    .unwrap()
                    .count(),
                1
            );
            assert_eq!(
                std::fs::read_dir(self.tmp.path().join("a/b"))
                    .unwrap()
                    .count(),
                1
            );
        }
    }

    #[test]
    fn dotdot_path_is_refused() {
        let f = Fixture::new();
        let err = f
            .unpack(Tar::new().file("../../../pwned", b"x").bytes())
            .unwrap_err();
        assert!(err.to_string().contains("`..`"), "{err}");
        f.assert_contained();
    }

    #[test]
    fn absolute_path_lands_inside() {
        let f = Fixture::new();
        let abs = format!("{}/pwned", f.outside().display());
        f.unpack(Tar::new().file(&abs, b"x").bytes()).unwrap();
        f.assert_contained();
        assert!(f.snap().join(abs.trim_start_matches('/')).is_file());
    }

    #[test]
    fn a_later_entry_replaces_a_file_or_symlink_and_never_writes_through_it() {
        let f = Fixture::new();
        let elsewhere = tempfile::tempdir().unwrap();
        let host = elsewhere.path().join("host-file");
        std::fs::write(&host, b"host").unwrap();
        f.unpack(
            Tar::new()
                .file("d/a", b"first")
                .file("d/a", b"second")
                .symlink("d/l", &host.display().to_string())
                .file("d/l", b"layer")
                .symlink("d/m", "a")
                .file("d/m", b"own")
                .bytes(),
        )
        .unwrap();
        f.assert_contained();
        assert_eq!(std::fs::read(&host).unwrap(), b"host");
        assert_eq!(std::fs::read(f.snap().join("d/a")).unwrap(), b"second");
        assert_eq!(std::fs::read(f.snap().join("d/l")).unwrap(), b"layer");
        assert_eq!(std::fs::read(f.snap().join("d/m")).unwrap(), b"own");
        assert!(!f.snap().join("d/l").is_symlink());
    }

    #[test]
    fn symlink_to_root_then_write_through_it_stays_inside() {
        let f = Fixture::new();
        let target = f.outside().display().to_string();
        f.unpack(Tar::new().symlink("a", "/").file("a/pwned", b"x").bytes())
            .unwrap();
        f.assert_contained();
        assert!(f.snap().join("pwned").is_file());
        // A symlink to a host directory is dangling inside the snapshot: writing under it is
        // an error, never a write to the host.
        let err = f
            .unpack(
                Tar::new()
                    .symlink("o", &target)
                    .file("o/secret", b"layer")
                    .bytes(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("o/secret"), "{err}");
        f.assert_contained();
    }

    #[test]
    fn relative_symlink_climbing_out_stays_inside() {
        let f = Fixture::new();
        f.unpack(
            Tar::new()
                .symlink("up", "../../..")
                .file("up/pwned", b"x")
                .dir("outside")
                .symlink("d/up2", "../../../../outside")
                .file("d/up2/secret", b"layer")
                .bytes(),
        )
        .unwrap();
        f.assert_contained();
        assert!(f.snap().join("pwned").is_file());
        assert_eq!(
            std::fs::read(f.snap().join("outside/secret")).unwrap(),
            b"layer"
        );
    }

    #[test]
    fn hardlink_to_host_file_is_refused() {
        let f = Fixture::new();
        let secret = format!("{}/secret", f.outside().display());
        assert!(f.unpack(Tar::new().hardlink("s", &secret).bytes()).is_err());
        assert!(f
            .unpack(Tar::new().hardlink("s2", "/etc/shadow").bytes())
            .is_err());
        assert!(f
            .unpack(Tar::new().hardlink("s3", "../../../outside/secret").bytes())
            .is_err());
        f.assert_contained();
        assert!(!f.snap().join("s").exists());
    }

    #[test]
    fn hardlink_inside_works() {
        let f = Fixture::new();
        f.unpack(Tar::new().file("x", b"data").hardlink("y", "/x").bytes())
            .unwrap();
        let (a, b) = (
            std::fs::metadata(f.snap().join("x")).unwrap(),
            std::fs::metadata(f.snap().join("y")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
    }

    #[test]
    fn dot_replaced_by_symlink_is_refused() {
        let f = Fixture::new();
        let target = f.outside().display().to_string();
        for name in [".", "./", "/"] {
            let err = f
                .unpack(
                    Tar::new()
                        .symlink(name, &target)
                        .file("pwned", b"x")
                        .bytes(),
                )
                .unwrap_err();
            assert!(err.to_string().contains("root"), "{err}");
        }
        f.assert_contained();
    }

    #[test]
    fn dir_replaced_by_symlink_then_written_under_stays_inside() {
        let f = Fixture::new();
        let target = f.outside().display().to_string();
        let dup = |link: &str| {
            Tar::new()
                .dir("d")
                .file("d/keep", b"k")
                .symlink("d", link)
                .file("d/pwned", b"x")
                .bytes()
        };
        // Dangling inside the snapshot: an error.
        assert!(f.unpack(dup(&target)).is_err());
        assert!(f.unpack(dup("../../../outside")).is_err());
        f.assert_contained();
        // Pointing at a directory of the snapshot: followed, inside.
        f.unpack(Tar::new().dir("inner").bytes()).unwrap();
        f.unpack(dup("/inner")).unwrap();
        f.assert_contained();
        assert!(std::fs::symlink_metadata(f.snap().join("d"))
            .unwrap()
            .is_symlink());
        assert!(f.snap().join("inner/pwned").is_file());
    }

    #[test]
    fn whiteouts_become_overlay_form_and_modes_survive() {
        let f = Fixture::new();
        f.unpack(
            Tar::new()
                .dir("etc")
                .raw("etc/tool", EntryType::Regular, "", b"#!", 0o4755)
                .file("etc/.wh.gone", b"")
                .dir("opq")
                .file("opq/.wh..wh..opq", b"")
                .raw("ro", EntryType::Directory, "", b"", 0o555)
                .file("ro/f", b"x")
                .bytes(),
        )
        .unwrap();
        let wh = std::fs::symlink_metadata(f.snap().join("etc/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        let m = std::fs::metadata(f.snap().join("etc/tool")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
        assert!(!f.snap().join("opq/.wh..wh..opq").exists());
        let mut v = [0u8; 4];
        let n = rfs::getxattr(f.snap().join("opq"), "trusted.overlay.opaque", &mut v).unwrap();
        assert_eq!(&v[..n], b"y");
        let m = std::fs::metadata(f.snap().join("ro")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o555);
    }

    #[test]
    fn limits_are_enforced() {
        let f = Fixture::new();
        let tar = Tar::new().file("a", &[0; 100]).file("b", &[0; 100]).bytes();
        let lim = Limits {
            max_bytes: 150,
            ..Limits::default()
        };
        let err = unpack(&tar[..], &f.snap(), lim).unwrap_err();
        assert!(err.to_string().contains("uncompressed size"), "{err}");
        let lim = Limits {
            max_entries: 1,
            ..Limits::default()
        };
        assert!(unpack(&tar[..], &f.snap(), lim)
            .unwrap_err()
            .to_string()
            .contains("entry count"));
    }

    #[test]
    fn ensure_unpacks_once_and_verifies_the_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let store = strata_cache::Store::open(&tmp.path().join("store")).unwrap();
        let tar = Tar::new()
            .dir("etc")
            .file("etc/os-release", b"ID=test\n")
            .bytes();
        let (digest, _) = store.blobs().put(&tar).unwrap();
        let snaps = Snapshots::new(store.root());
        let mt = "application/vnd.oci.image.layer.v1.tar";
        let dir = snaps.ensure(store.blobs(), &digest, &digest, mt).unwrap();
        assert_eq!(
            std::fs::read(dir.join("etc/os-release")).unwrap(),
            b"ID=test\n"
        );
        assert_eq!(
            snaps.ensure(store.blobs(), &digest, &digest, mt).unwrap(),
            dir
        );
        // No temp dirs left behind.
        assert_eq!(std::fs::read_dir(dir.parent().unwrap()).unwrap().count(), 1);
        // A corrupted blob is an error and leaves no snapshot.
        let (d2, _) = store
            .blobs()
            .put(&Tar::new().file("x", b"1").bytes())
            .unwrap();
        std::fs::write(store.blobs().path(&d2), Tar::new().file("x", b"2").bytes()).unwrap();
        assert!(snaps.ensure(store.blobs(), &d2, &d2, mt).is_err());
        assert_eq!(std::fs::read_dir(dir.parent().unwrap()).unwrap().count(), 1);
    }

    /// Owner, then mode, each only when it differs: a set-id mode survives a change of owner
    /// (which clears it), and a file that already has both is left untouched.
    #[test]
    fn chown_chmod_sets_what_differs_and_keeps_set_id_bits() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let is_root = rustix::process::geteuid().is_root();
        let f = std::fs::File::create(&path).unwrap();
        let (uid, gid) = if is_root { (1000, 50) } else { (0, 0) };
        let check = |want_mode: u32, want_ids: (u32, u32)| {
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, want_mode);
            if is_root {
                assert_eq!((m.uid(), m.gid()), want_ids);
            }
        };
        chown_chmod(f.as_fd(), is_root, (uid, gid), 0o4755, false).unwrap();
        check(0o4755, (uid as u32, gid as u32));
        // The same again: nothing to do (and nothing changes).
        let ctime = std::fs::metadata(&path).unwrap().ctime_nsec();
        chown_chmod(f.as_fd(), is_root, (uid, gid), 0o4755, false).unwrap();
        check(0o4755, (uid as u32, gid as u32));
        assert_eq!(std::fs::metadata(&path).unwrap().ctime_nsec(), ctime);
        if is_root {
            // Another owner, same set-id mode: the chown clears the bit, the chmod restores it.
            chown_chmod(f.as_fd(), true, (7, 8), 0o6750, false).unwrap();
            check(0o6750, (7, 8));
            chown_chmod(f.as_fd(), true, (0, 0), 0o6750, false).unwrap();
            check(0o6750, (0, 0));
        }
        chown_chmod(f.as_fd(), is_root, (0, 0), 0o600, false).unwrap();
        check(0o600, (0, 0));
    }

    /// Where each unpacking by `ensure` (or a prefetch) was to place its snapshot, in order:
    /// a test filters by its own store.
    pub(super) static UNPACKED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

    fn layer_desc(digest: &Digest, mt: &str) -> crate::image::LayerDesc {
        crate::image::LayerDesc {
            digest: *digest,
            size: 0,
            media_type: mt.into(),
            diff_id: *digest,
        }
    }

    /// The scratch directory's entries but the snapshot in-use list (`ensure` writes it).
    fn scratch_names(d: &Path) -> Vec<String> {
        let mut n = names(d);
        n.retain(|n| n != strata_cache::snapshot_use::SNAPSHOTS_IN_USE);
        n
    }

    fn names(d: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// A prefetch unpacks each layer once, in the background: `ensure` waits for it instead of
    /// unpacking again, a layer already there is not prefetched, and a blob that fails
    /// verification leaves no snapshot and no temp dir (`ensure` then reports the error).
    #[test]
    fn prefetch_unpacks_once_and_ensure_waits_for_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = strata_cache::Store::open(&tmp.path().join("store")).unwrap();
        let mt = "application/vnd.oci.image.layer.v1.tar";
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut tar = Tar::new().dir("etc").file("etc/os-release", b"ID=test\n");
        for i in 0..200 {
            tar = tar.file(&format!("f{i}"), &big[..i * 100]);
        }
        let (a, _) = store.blobs().put(&tar.file("big", &big).bytes()).unwrap();
        let (b, _) = store
            .blobs()
            .put(&Tar::new().file("second", b"2").bytes())
            .unwrap();
        let snaps = Snapshots::new(store.root()).with_scratch(store.scratch());
        let layers = [layer_desc(&a, mt), layer_desc(&b, mt)];
        let unpacked = || -> Vec<PathBuf> {
            let all = UNPACKED.lock().unwrap();
            all.iter()
                .filter(|p| p.starts_with(snaps.home()))
                .cloned()
                .collect()
        };
        let p = snaps
            .prefetch(store.blobs(), &layers)
            .expect("two layers to unpack");
        // Asked for again meanwhile (another COPY): already promised, nothing more to do.
        assert!(snaps.prefetch(store.blobs(), &layers).is_none());
        // The RUN's `ensure` waits for the prefetched snapshot rather than making its own.
        let dir_b = snaps.ensure(store.blobs(), &b, &b, mt).unwrap();
        let dir_a = snaps
            .ensure_stack(store.blobs(), &a, &a, mt, None)
            .unwrap()
            .remove(0);
        drop(p);
        assert_eq!(
            unpacked(),
            vec![snaps.home().join(a.hex()), snaps.home().join(b.hex())],
            "each layer unpacked once, by the prefetch"
        );
        assert_eq!(std::fs::read(dir_a.join("big")).unwrap(), big);
        assert_eq!(std::fs::read(dir_b.join("second")).unwrap(), b"2");
        let mut want = vec![a.hex(), b.hex()];
        want.sort();
        assert_eq!(names(snaps.home()), want, "one snapshot each, no temp dir");
        assert_eq!(scratch_names(store.scratch()), vec!["in-use".to_string()]);
        assert!(
            snaps.prefetch(store.blobs(), &layers).is_none(),
            "both are there"
        );

        // A blob whose bytes no longer match its digest.
        let (bad, _) = store
            .blobs()
            .put(&Tar::new().file("x", b"1").bytes())
            .unwrap();
        std::fs::write(store.blobs().path(&bad), Tar::new().file("x", b"2").bytes()).unwrap();
        let p = snaps.prefetch(store.blobs(), &[layer_desc(&bad, mt)]);
        assert!(p.is_some());
        assert!(snaps.ensure(store.blobs(), &bad, &bad, mt).is_err());
        drop(p);
        assert_eq!(names(snaps.home()), want);
        assert_eq!(scratch_names(store.scratch()), vec!["in-use".to_string()]);
    }

    /// Dropping a prefetch (the stage failed) stops it: whatever it had not finished leaves
    /// nothing behind, and what it did finish is whole.
    #[test]
    fn a_dropped_prefetch_stops_and_keeps_nothing_partial() {
        let tmp = tempfile::tempdir().unwrap();
        let store = strata_cache::Store::open(&tmp.path().join("store")).unwrap();
        let mt = "application/vnd.oci.image.layer.v1.tar";
        let mut layers = Vec::new();
        for l in 0..4 {
            let mut tar = Tar::new();
            for i in 0..5000 {
                tar = tar.file(&format!("l{l}-f{i}"), &[l as u8; 100]);
            }
            let (d, _) = store.blobs().put(&tar.bytes()).unwrap();
            layers.push(layer_desc(&d, mt));
        }
        let snaps = Snapshots::new(store.root()).with_scratch(store.scratch());
        drop(snaps.prefetch(store.blobs(), &layers).unwrap());
        // Not all four were unpacked by the time the drop returned...
        let home = snaps.home();
        let done = if home.exists() {
            names(home)
        } else {
            Vec::new()
        };
        assert!(done.len() < 4, "{done:?}");
        // ... those that were are whole, and no temp dir is left.
        for name in &done {
            assert_eq!(std::fs::read_dir(home.join(name)).unwrap().count(), 5000);
        }
        assert_eq!(scratch_names(store.scratch()), vec!["in-use".to_string()]);
        // Nothing is promised any more: `ensure` unpacks at once.
        let d = &layers[3];
        let dir = snaps
            .ensure(store.blobs(), &d.diff_id, &d.digest, mt)
            .unwrap();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 5000);
    }

    #[test]
    fn new_snapshots_are_valid_for_this_boot_only_and_durable_ones_always() {
        let tmp = tempfile::tempdir().unwrap();
        let store = strata_cache::Store::open(&tmp.path().join("store")).unwrap();
        let snaps = Snapshots::new(store.root());
        let Some(boot) = strata_cache::boot_id::boot_dir_name() else {
            // No boot id: new snapshots are synced and durable.
            assert_eq!(snaps.home(), store.root().join("snapshots-v2"));
            return;
        };
        let root = store.root().join("snapshots-v2");
        assert_eq!(snaps.home(), root.join(&boot));
        let mt = "application/vnd.oci.image.layer.v1.tar";
        let (a, _) = store
            .blobs()
            .put(&Tar::new().file("v", b"a").bytes())
            .unwrap();
        let (b, _) = store
            .blobs()
            .put(&Tar::new().file("v", b"b").bytes())
            .unwrap();
        // Left by another boot (perhaps torn by a crash): never used.
        let stale = root.join("boot-0000000000000000").join(a.hex());
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("v"), b"torn").unwrap();
        // Durable (synced before its rename): used in any boot.
        let durable = root.join(b.hex());
        std::fs::create_dir_all(&durable).unwrap();
        std::fs::write(durable.join("v"), b"durable").unwrap();

        let dir = snaps.ensure(store.blobs(), &a, &a, mt).unwrap();
        assert_eq!(dir, root.join(&boot).join(a.hex()));
        assert_eq!(std::fs::read(dir.join("v")).unwrap(), b"a");
        assert_eq!(snaps.ensure(store.blobs(), &b, &b, mt).unwrap(), durable);
        assert_eq!(
            snaps
                .ensure_stack(store.blobs(), &b, &b, mt, Some(&a))
                .unwrap(),
            vec![durable.clone()]
        );
        // A delta over this boot's snapshot goes to this boot's directory too.
        let (c, _) = store
            .blobs()
            .put(&Tar::new().file("v", b"a").file("w", b"c").bytes())
            .unwrap();
        let stack = snaps
            .ensure_stack(store.blobs(), &c, &c, mt, Some(&a))
            .unwrap();
        assert_eq!(
            stack,
            vec![
                dir.clone(),
                root.join(&boot)
                    .join(format!("{}.delta-{}", c.hex(), a.hex()))
            ]
        );
        assert_eq!(
            snaps.ensure_stack(store.blobs(), &c, &c, mt, None).unwrap(),
            stack
        );
    }

    #[test]
    fn every_entry_gets_the_layers_times_and_implied_directories_the_epoch() {
        let mut b = tar::Builder::new(Vec::new());
        let add = |b: &mut tar::Builder<Vec<u8>>,
                   path: &str,
                   kind: EntryType,
                   link: &str,
                   data: &[u8],
                   mtime: u64| {
            let mut h = Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(data.len() as u64);
            if kind.is_symlink() || kind.is_hard_link() {
                b.append_link(&mut h, path, link).unwrap();
            } else {
                b.append_data(&mut h, path, data).unwrap();
            }
        };
        add(&mut b, "./", EntryType::Directory, "", b"", 50);
        add(&mut b, "d", EntryType::Directory, "", b"", 1000);
        add(&mut b, "d/f", EntryType::Regular, "", b"data", 2000);
        add(&mut b, "d/l", EntryType::Symlink, "f", b"", 3000);
        add(&mut b, "d/h", EntryType::Link, "d/f", b"", 2500);
        add(
            &mut b,
            "x/y/z",
            EntryType::Regular,
            "",
            b"implied parents",
            4000,
        );
        b.append_pax_extensions([("mtime", &b"1234.5"[..])])
            .unwrap();
        add(&mut b, "d/pax", EntryType::Regular, "", b"p", 1);
        let tar = b.into_inner().unwrap();
        let f = Fixture::new();
        unpack(&tar[..], &f.snap(), Limits::default()).unwrap();
        let times = |p: &str| {
            let m = std::fs::symlink_metadata(f.snap().join(p)).unwrap();
            (m.mtime(), m.mtime_nsec(), m.atime())
        };
        assert_eq!(times(""), (50, 0, 50), "the root, as listed");
        assert_eq!(
            times("d"),
            (1000, 0, 1000),
            "set after its entries were made"
        );
        assert_eq!(times("d/f"), (2000, 0, 2000), "a hard link shares it");
        assert_eq!(times("d/l"), (3000, 0, 3000), "the link itself");
        assert_eq!(times("x/y/z"), (4000, 0, 4000));
        assert_eq!(times("x").0, 0, "implied: the epoch");
        assert_eq!(times("x/y").0, 0);
        assert_eq!(
            times("d/pax"),
            (1234, 500_000_000, 1234),
            "PAX mtime, fraction kept"
        );
    }

    #[test]
    fn pax_times_parse_as_posix_says() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("12"), Some((12, 0)));
        assert_eq!(t("12.25"), Some((12, 250_000_000)));
        assert_eq!(t("12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        assert_eq!(t("1.2x"), None);
        assert_eq!(t(""), None);
    }

    /// Overlay refuses a lower dir given twice: any sequence of snapshots, with repeats
    /// anywhere, mounts as its topmost occurrences of non-empty dirs, in order.
    #[test]
    fn overlay_lowers_drop_repeats_and_empty_snapshots() {
        let tmp = tempfile::tempdir().unwrap();
        let d = |n: &str, full: bool| {
            let p = tmp.path().join(n);
            std::fs::create_dir(&p).unwrap();
            if full {
                std::fs::write(p.join("f"), n).unwrap();
            }
            p
        };
        let (a, b, c, e) = (d("a", true), d("b", true), d("c", true), d("e", false));
        let v = |x: &[&PathBuf]| x.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>();
        // Three empty RUN layers in a row; an empty layer in the middle.
        assert_eq!(overlay_lowers(&v(&[&a, &e, &e, &e])), v(&[&a]));
        assert_eq!(overlay_lowers(&v(&[&a, &e, &b])), v(&[&a, &b]));
        // A non-empty layer repeated (two identical COPYs), at the bottom, middle and top.
        assert_eq!(overlay_lowers(&v(&[&a, &b, &a])), v(&[&b, &a]));
        assert_eq!(overlay_lowers(&v(&[&a, &b, &b, &c])), v(&[&a, &b, &c]));
        assert_eq!(overlay_lowers(&v(&[&a, &b, &c, &c])), v(&[&a, &b, &c]));
        assert_eq!(
            overlay_lowers(&v(&[&a, &b, &a, &c, &b, &e, &a])),
            v(&[&c, &b, &a])
        );
        // Only empty layers: nothing (the sandbox mounts its empty lower, as for scratch).
        assert!(overlay_lowers(&v(&[&e, &e])).is_empty());
        assert!(overlay_lowers(&[]).is_empty());
    }
}
