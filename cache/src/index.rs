//! `Index`: strata's RocksDB index (`<root>/index-v1`).
//!
//! One column family; records are told apart by a two-byte key prefix:
//!
//! | prefix | key after the prefix                          | value          |
//! |--------|-----------------------------------------------|----------------|
//! | `s/`   | 32-byte step key (blake3, from the engine)    | [`StepRecord`] (schema [`STEP_SCHEMA`]) |
//! | `e/`   | 32-byte step key                              | [`ExplainRecord`]: what `--explain` compares, read only then |
//! | `l/`   | 32-byte location (dockerfile + stage + step)  | 32-byte step key |
//! | `y/`   | 32-byte diff_id, then the compression id      | [`LayerRecord`] |
//! | `t/`   | absolute host path, raw bytes                 | [`StatEntry`]  |
//! | `g/`   | tag name, UTF-8 (`myapp:1.0`)                 | [`TagRecord`]  |
//! | `u/`   | 32-byte step key                              | `u64` last use, unix seconds |
//! | `b/`   | 32-byte manifest digest of an image strata built | [`Lineage`] |
//! | `T/`   | 32-byte stat-set id (engine: one per COPY source root) | [`StatSet`] (schema [`STAT_SET_SCHEMA`], its own layout) |
//! | `o/`   | 32-byte blob digest                           | `Vec<String>`: `registry/repository`s it was pulled from or pushed to (cross-repository mounts) |
//! | `f/`   | 32-byte memo key (engine: a COPY's parent key + its other inputs) | [`ParentFacts`]: the digest of the parent facts the COPY reads, and the answers it was made from |
//!
//! Every value is one schema-version byte ([`VALUE_SCHEMA`]) followed by its bincode encoding.
//! A value with another version byte is reported as [`StoreError::Schema`], never a panic.
//! Bumping [`VALUE_SCHEMA`] is a deliberate act: the tests `unknown_schema_version_is_an_error`
//! and `round_trips_every_record` must change with it. Step records have their own version,
//! [`STEP_SCHEMA`] (2: the per-file explain inputs moved out to `e/`); version 1 records, from
//! older strata, are still read (their explain inputs skipped), so an upgrade keeps the cache. A change to the key layout instead bumps
//! the directory name (`index-v1`), so old and new strata never read each other's keys.
//!
//! Durability: step records, layer records and tags are written with
//! `sync = true`, since a build result the engine believes cached must survive a crash (and
//! the engine only writes them after the blob they name is committed). Stat-cache writes are not
//! synced: losing them costs a re-hash, never a wrong answer; nor are last-at pointers (`l/`, read
//! only by `--explain`). Last-use times (`u/`, written by
//! [`Index::touch_step`] on cache hits, read by `gc`) are not synced either: losing one only
//! makes a step look older to the LRU eviction. They live apart from [`StepRecord`] so its
//! schema does not change and a cache hit does not rewrite the whole record.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use rocksdb::{DBCompressionType, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
pub use crate::records::{ExplainInput, ExplainRecord, LayerRecord, StepRecord};
use crate::Digest;

/// The schema version byte in front of every value but step records.
pub const VALUE_SCHEMA: u8 = 1;

/// The schema version byte in front of a step record. 1: `(layer, explain inputs,
/// created_unix)`, explain inputs being two named digests per source file (~10 MB for a COPY of
/// 55k files, decoded at every cache hit); 2: `(layer, created_unix)`, the explain data in its
/// own `e/` record. Tests: `round_trips_every_record`, `reads_version_1_step_records`.
pub const STEP_SCHEMA: u8 = 2;

const STEP: &[u8] = b"s/";
const LAST_AT: &[u8] = b"l/";
const LAYER: &[u8] = b"y/";
const STAT: &[u8] = b"t/";
const TAG: &[u8] = b"g/";
const USED: &[u8] = b"u/";
const STAT_SET: &[u8] = b"T/";
const LINEAGE: &[u8] = b"b/";
const ORIGIN: &[u8] = b"o/";
/// At most this many origins are kept per blob (the most recent ones).
const MAX_ORIGINS: usize = 8;
const FACTS: &[u8] = b"f/";
const EXPLAIN: &[u8] = b"e/";
/// A read-set candidate as listed: `(step key, created_unix, read set bytes)`.
pub type ReadSetRow = ([u8; 32], u64, Vec<u8>);

/// Read-set reuse candidates of RUN steps: `r/<reuse key><step key>` → `(created_unix, read
/// set bytes)` (docs/read-set.md). The read set's own encoding is the engine's, versioned there.
const READSET: &[u8] = b"r/";

/// What an image strata built stands on, for `strata rebase`: the base image (if any), how many
/// of the image's layers are the base's, and for each layer above it whether the step that made
/// it could not depend on the base's content (`COPY --link` from the context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub base_manifest: Option<Digest>,
    pub base_layers: u32,
    /// How many history entries of the image are the base's.
    pub base_history: u32,
    /// One per layer above the base: (created_by, base-independent).
    pub upper: Vec<(String, bool)>,
}

pub use crate::stat_set::{StatCursor, StatSet, StatSetBuilder, STAT_SET_SCHEMA};

/// What a tag points at.
/// A memoised parent-facts digest (the engine's COPY) and the answers it was computed from, so
/// that a step that must run can build its layer without reading the parent layers again.
/// `answers` is the engine's encoding; the store does not look into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentFacts {
    pub facts: [u8; 32],
    pub answers: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub manifest: Digest,
    pub config: Digest,
    pub media_type: String,
}

/// A cached file hash with the stat fields it was taken under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatEntry {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub mode: u32,
    /// When the file was stat'ed for hashing, in ns since the epoch on the same clock as file
    /// timestamps (`CLOCK_REALTIME`). Must be taken *before* the file is read.
    pub recorded_ns: i128,
    pub blake3: [u8; 32],
}

impl StatEntry {
    /// Whether the cached hash may be used for a file that stats as given.
    ///
    /// This is git's "racy clean" rule: all stat fields must be equal, *and* the file's last
    /// change (`max(mtime, ctime)`) must be strictly older than `recorded_ns`. A file changed
    /// at or after the moment we recorded it may have been changed again, within the same
    /// timestamp tick, after we hashed it — its stat fields would then still match while its
    /// content does not. Such an entry is racy and the file must be re-hashed; re-recording it
    /// later (once the clock has moved on) makes it trustworthy.
    ///
    /// Caveat: the rule assumes file timestamps are at least as fine as `recorded_ns`. On file
    /// systems with coarse timestamps (FAT: 2 s, some network file systems: 1 s) a change just
    /// after recording can be stamped *before* `recorded_ns`; callers that care should take
    /// `recorded_ns` from a file timestamp on the same file system, as git does with its index.
    pub fn matches(
        &self,
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i128,
        ctime_ns: i128,
        mode: u32,
    ) -> bool {
        self.dev == dev
            && self.ino == ino
            && self.size == size
            && self.mtime_ns == mtime_ns
            && self.ctime_ns == ctime_ns
            && self.mode == mode
            && !self.is_racy()
    }

    /// The file changed at or after it was recorded, so the hash cannot be trusted.
    pub fn is_racy(&self) -> bool {
        self.mtime_ns.max(self.ctime_ns) >= self.recorded_ns
    }
}

/// Values at least this large are kept in RocksDB blob files, not in table blocks.
const BLOB_MIN: u64 = 64 << 10;

/// How long an open handle may sit unused before it is closed and the index lock released.
pub const IDLE_CLOSE: Duration = Duration::from_millis(20);

/// The longest a handle stays open without a break, however busy this process is, so other
/// processes get their turn (an 80-step no-op rebuild reopens once or twice, not 80 times).
pub const MAX_HOLD: Duration = Duration::from_millis(250);

/// Called with a message when a lock wait gets long (see [`crate::lock::QUIET_WAIT`]).
pub type OnWait = Arc<dyn Fn(&str) + Send + Sync>;

/// The RocksDB index, shared by the strata processes using a store.
///
/// RocksDB lets one process open a database at a time. So the handle is opened on demand, by
/// the first index operation, under the store's index lock (`<root>/index-v1.lock`, `flock`),
/// and closed again — releasing the lock — once it has been unused for [`IDLE_CLOSE`] or open
/// for [`MAX_HOLD`] (a background thread per `Index` does this). Operations that follow each
/// other closely (the lookups of a no-op rebuild) share one open; a step that compresses a layer
/// or runs a command closes it meanwhile, so other builds get the index. [`Index::hold`] keeps it
/// open (and other processes out) for a whole critical section: gc, fsck --repair.
pub struct Index {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    lock_path: PathBuf,
    on_wait: OnWait,
    max_wait: Duration,
    db: RwLock<Option<Open>>,
    /// Milliseconds since `epoch` of the last operation's end, and of the last open.
    last_used_ms: AtomicU64,
    opened_ms: AtomicU64,
    epoch: Instant,
    /// [`Index::hold`] guards alive.
    holds: AtomicUsize,
    /// How many times the database was opened (for tests and measurements).
    opens: AtomicU64,
    /// This handle's in-use list (see [`Index::use_step`]).
    in_use: Option<std::sync::Mutex<File>>,
    closer: OnceLock<std::thread::Thread>,
}

struct Open {
    db: DB,
    /// Released after `db` is closed (fields drop in order).
    _lock: File,
}

impl Drop for Open {
    /// Flushes the memtable so the next opener does not replay a large write-ahead log into
    /// memory (a COPY over 50k files writes several MB of records; RocksDB would also write it
    /// out as an SST file while opening). Durability does not depend on this: synced writes are
    /// already in the WAL.
    fn drop(&mut self) {
        let _ = self.db.flush();
    }
}

/// Keeps the index open, and the index lock held, while it lives. From [`Index::hold`].
pub struct IndexHold<'a> {
    index: &'a Index,
}

impl Drop for IndexHold<'_> {
    fn drop(&mut self) {
        self.index.shared.holds.fetch_sub(1, Ordering::SeqCst);
        self.index.shared.touch();
    }
}

impl Drop for Index {
    /// Closes the database here and now, not in the closer thread (which may hold the shared
    /// state for a moment): a process must not exit with RocksDB closing in another thread.
    fn drop(&mut self) {
        if let Ok(mut g) = self.shared.db.write() {
            *g = None;
        }
        if let Some(t) = self.shared.closer.get() {
            t.unpark();
        }
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_used_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    fn open_db(&self) -> Result<Open, StoreError> {
        let lock = crate::lock::lock_waiting(&self.lock_path, &*self.on_wait, self.max_wait)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // The index is small (tens of MB at most); keep memory and file handles modest.
        opts.set_write_buffer_size(4 << 20);
        opts.set_max_open_files(64);
        opts.set_compression_type(DBCompressionType::None);
        opts.set_keep_log_file_num(2);
        // Opened many times a build (docs/store.md): skip what an open does that the index
        // does not need. The stats are only RocksDB's size estimates; each open starts a new
        // MANIFEST, which need not be preallocated at 4 MB.
        opts.set_skip_stats_update_on_db_open(true);
        opts.set_manifest_preallocation_size(64 << 10);
        // Large values (a stat set of 55k files is ~4 MB, an explain record ~1.5 MB) go to blob
        // files at flush, where a read fetches exactly the value and compaction moves only a
        // reference. In table blocks, every compaction of a level-0 file re-read and rebuilt
        // each one as one huge block (~14 MB of a 55k-file no-op rebuild's heap, in RocksDB's
        // background thread). Blob GC (at compaction) reclaims the space of replaced values.
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(BLOB_MIN);
        opts.set_enable_blob_gc(true);
        // Opened with the default column family named, so `cf_handle` can return it for the
        // batched multi-get in `get_stats` — and with these options: `DB::open_cf` would open
        // it with `Options::default()`, leaving every column-family option above (write
        // buffer, compression, blob files) unapplied.
        let db = DB::open_cf_with_opts(
            &opts,
            &self.path,
            [(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone())],
        )?;
        self.opens.fetch_add(1, Ordering::SeqCst);
        let now = self.now_ms();
        self.opened_ms.store(now, Ordering::SeqCst);
        self.last_used_ms.store(now, Ordering::SeqCst);
        Ok(Open { db, _lock: lock })
    }

    /// Closes the handle if nobody holds it and it is idle or has been open too long; returns
    /// how long to sleep before looking again.
    fn maybe_close(&self) -> Option<Duration> {
        if self.db.read().unwrap().is_none() {
            return None;
        }
        let now = self.now_ms();
        let idle = now.saturating_sub(self.last_used_ms.load(Ordering::SeqCst));
        let open = now.saturating_sub(self.opened_ms.load(Ordering::SeqCst));
        let idle_limit = IDLE_CLOSE.as_millis() as u64;
        let hold_limit = MAX_HOLD.as_millis() as u64;
        if self.holds.load(Ordering::SeqCst) > 0 || (idle < idle_limit && open < hold_limit) {
            let wait = (idle_limit - idle.min(idle_limit)).min(hold_limit - open.min(hold_limit));
            return Some(Duration::from_millis(wait.max(1)));
        }
        let mut g = self.db.write().unwrap();
        if self.holds.load(Ordering::SeqCst) == 0 {
            *g = None;
        }
        Some(Duration::from_millis(1))
    }
}

/// The background closer of one [`Index`]: parks while the handle is closed, exits when the
/// index is dropped.
fn closer(shared: Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let next = s.maybe_close();
        drop(s);
        match next {
            Some(d) => std::thread::sleep(d),
            None => std::thread::park_timeout(Duration::from_secs(5)),
        }
    }
}

fn key(prefix: &[u8], rest: &[&[u8]]) -> Vec<u8> {
    let len = prefix.len() + rest.iter().map(|r| r.len()).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.extend_from_slice(prefix);
    for r in rest {
        k.extend_from_slice(r);
    }
    k
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_SCHEMA];
    // Serialising our own plain structs into a Vec cannot fail.
    bincode::serialize_into(&mut out, value).expect("bincode encoding of index record");
    out
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(StoreError::Corrupt {
            what,
            reason: "empty value".into(),
        });
    };
    if version != VALUE_SCHEMA {
        return Err(StoreError::Schema {
            what,
            found: version,
            expected: VALUE_SCHEMA,
        });
    }
    bincode::deserialize(body).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

/// A step record of version [`STEP_SCHEMA`], or of version 1 (its explain inputs skipped).
fn decode_step(bytes: &[u8]) -> Result<StepRecord, StoreError> {
    /// The version 1 layout; its explain inputs are decoded (bincode cannot skip a value)
    /// and dropped: not worth converting, a later `--explain` says the previous inputs are
    /// unknown.
    #[derive(Deserialize)]
    struct StepRecordV1 {
        layer: Option<LayerRecord>,
        #[allow(dead_code)]
        explain: Vec<ExplainInput>,
        created_unix: u64,
    }
    let corrupt = |e: bincode::Error| StoreError::Corrupt {
        what: "step",
        reason: e.to_string(),
    };
    match bytes.split_first() {
        Some((&STEP_SCHEMA, body)) => bincode::deserialize(body).map_err(corrupt),
        Some((1, body)) => {
            let old: StepRecordV1 = bincode::deserialize(body).map_err(corrupt)?;
            Ok(StepRecord {
                layer: old.layer,
                created_unix: old.created_unix,
            })
        }
        Some((&found, _)) => Err(StoreError::Schema {
            what: "step",
            found,
            expected: STEP_SCHEMA,
        }),
        None => Err(StoreError::Corrupt {
            what: "step",
            reason: "empty value".into(),
        }),
    }
}

fn encode_step(rec: &StepRecord) -> Vec<u8> {
    let mut out = vec![STEP_SCHEMA];
    bincode::serialize_into(&mut out, rec).expect("bincode encoding of a step record");
    out
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

impl Index {
    /// An index on the database at `path` (created by the first operation if missing), locked
    /// by `lock_path`. Nothing is opened yet.
    ///
    /// `in_use`: a file listing the steps this handle has hit (hex keys, one a line), which
    /// `gc` in any process reads while the handle lives (the store puts it in the handle's
    /// locked scratch directory).
    pub(crate) fn new(
        path: &Path,
        lock_path: &Path,
        on_wait: OnWait,
        max_wait: Duration,
        in_use: Option<&Path>,
    ) -> Result<Index, StoreError> {
        let in_use = match in_use {
            Some(p) => Some(std::sync::Mutex::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| StoreError::Io {
                        op: "create",
                        path: p.to_path_buf(),
                        source: e,
                    })?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            lock_path: lock_path.to_path_buf(),
            on_wait,
            max_wait,
            db: RwLock::new(None),
            last_used_ms: AtomicU64::new(0),
            opened_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            holds: AtomicUsize::new(0),
            opens: AtomicU64::new(0),
            in_use,
            closer: OnceLock::new(),
        });
        let weak = Arc::downgrade(&shared);
        let thread = std::thread::Builder::new()
            .name("strata-index-closer".into())
            .spawn(move || closer(weak))
            .map_err(|e| StoreError::Io {
                op: "start the index closer thread for",
                path: path.to_path_buf(),
                source: e,
            })?;
        let _ = shared.closer.set(thread.thread().clone());
        Ok(Index { shared })
    }

    /// Opens the index now (waiting for the lock) and checks that it can be read.
    pub(crate) fn check_open(&self) -> Result<(), StoreError> {
        self.with_db(|_| Ok(()))
    }

    /// Runs `f` on the open database, opening it first (under the index lock) if needed.
    fn with_db<R>(&self, f: impl FnOnce(&DB) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut f = Some(f);
        loop {
            {
                let g = self.shared.db.read().unwrap();
                if let Some(open) = g.as_ref() {
                    let f = f.take().expect("called once");
                    let r = f(&open.db);
                    self.shared.touch();
                    return r;
                }
            }
            let mut g = self.shared.db.write().unwrap();
            if g.is_none() {
                *g = Some(self.shared.open_db()?);
                if let Some(t) = self.shared.closer.get() {
                    t.unpark();
                }
            }
        }
    }

    /// Keeps the index open and its lock held until the guard is dropped: for operations that
    /// must not interleave with other processes' index operations (gc, fsck --repair).
    pub fn hold(&self) -> Result<IndexHold<'_>, StoreError> {
        self.shared.holds.fetch_add(1, Ordering::SeqCst);
        let hold = IndexHold { index: self };
        self.check_open()?;
        Ok(hold)
    }

    /// Closes the handle now (releasing the index lock) unless an [`IndexHold`] is alive.
    pub fn release(&self) {
        let mut g = self.shared.db.write().unwrap();
        if self.shared.holds.load(Ordering::SeqCst) == 0 {
            *g = None;
        }
    }

    /// Whether the handle is open (this process holds the index lock) right now.
    pub fn is_open(&self) -> bool {
        self.shared.db.read().unwrap().is_some()
    }

    /// How many times this `Index` has opened the database.
    pub fn opens(&self) -> u64 {
        self.shared.opens.load(Ordering::SeqCst)
    }

    fn get<T: DeserializeOwned>(
        &self,
        what: &'static str,
        k: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.with_db(|db| match db.get_pinned(k)? {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        })
    }

    fn put<T: Serialize>(&self, k: &[u8], value: &T, sync: bool) -> Result<(), StoreError> {
        let v = encode(value);
        self.with_db(|db| {
            if sync {
                db.put_opt(k, v, &synced())?;
            } else {
                db.put(k, v)?;
            }
            Ok(())
        })
    }

    pub fn get_step(&self, key32: &[u8; 32]) -> Result<Option<StepRecord>, StoreError> {
        let k = key(STEP, &[&key32[..]]);
        self.with_db(|db| match db.get_pinned(k)? {
            Some(v) => decode_step(&v).map(Some),
            None => Ok(None),
        })
    }

    /// Writes a step record and, when given, what `--explain` will compare a later build of
    /// the step with (one synced batch). Call only after the layer blob the record names is
    /// committed. Without `explain`, an older explain record of the step is removed.
    pub fn put_step(
        &self,
        key32: &[u8; 32],
        rec: &StepRecord,
        explain: Option<&ExplainRecord>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(key(STEP, &[&key32[..]]), encode_step(rec));
        match explain {
            Some(e) => batch.put(key(EXPLAIN, &[&key32[..]]), encode(e)),
            None => batch.delete(key(EXPLAIN, &[&key32[..]])),
        }
        self.with_db(|db| Ok(db.write_opt(batch, &synced())?))
    }

    /// The explain record of step `key32`; read only by `--explain`, for a step that missed.
    pub fn get_explain(&self, key32: &[u8; 32]) -> Result<Option<ExplainRecord>, StoreError> {
        let rec: Option<ExplainRecord> = self.get("explain", &key(EXPLAIN, &[&key32[..]]))?;
        if let Some(r) = &rec {
            r.files.check().map_err(|reason| StoreError::Corrupt {
                what: "explain",
                reason: reason.to_string(),
            })?;
        }
        Ok(rec)
    }

    /// The last step key seen at `location`, for `--explain`.
    pub fn get_last_at(&self, location: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        self.get("last-at", &key(LAST_AT, &[&location[..]]))
    }

    pub fn put_last_at(&self, location: &[u8; 32], key32: &[u8; 32]) -> Result<(), StoreError> {
        // Only `--explain` reads it, and every step of every build writes it: not synced (a
        // lost pointer costs one "first build of this step" explanation, never a wrong result).
        self.put(&key(LAST_AT, &[&location[..]]), key32, false)
    }

    /// A compressed form of the layer `diff_id`, so it can be reused instead of recompressed.
    pub fn get_layer(
        &self,
        diff_id: &Digest,
        compression: &str,
    ) -> Result<Option<LayerRecord>, StoreError> {
        self.get(
            "layer",
            &key(LAYER, &[&diff_id.as_bytes()[..], compression.as_bytes()]),
        )
    }

    pub fn put_layer(
        &self,
        diff_id: &Digest,
        compression: &str,
        rec: &LayerRecord,
    ) -> Result<(), StoreError> {
        self.put(
            &key(LAYER, &[&diff_id.as_bytes()[..], compression.as_bytes()]),
            rec,
            true,
        )
    }

    /// Looks up many stat entries at once (RocksDB batched multi-get), in the order given.
    pub fn get_stats(&self, paths: &[&[u8]]) -> Result<Vec<Option<StatEntry>>, StoreError> {
        let keys: Vec<Vec<u8>> = paths.iter().map(|p| key(STAT, &[*p])).collect();
        self.with_db(|db| {
            let cf = db
                .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
                .expect("the default column family always exists");
            db.batched_multi_get_cf(cf, &keys, false)
                .into_iter()
                .map(|r| -> Result<Option<StatEntry>, StoreError> {
                    match r? {
                        Some(v) => decode("stat", &v).map(Some),
                        None => Ok(None),
                    }
                })
                .collect()
        })
    }

    /// Writes stat entries in one batch, not synced (a lost entry only costs a re-hash).
    pub fn put_stats(&self, entries: &[(&[u8], StatEntry)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (path, entry) in entries {
            batch.put(key(STAT, &[*path]), encode(entry));
        }
        self.with_db(|db| Ok(db.write(batch)?))
    }

    /// The stat entries of a whole source tree in one record: one read instead of one lookup per
    /// file (55k files: ~115 ms of multi-get became one get). A set written by older strata
    /// (schema 1) reads as none: the tree is hashed once more.
    pub fn get_stat_set(&self, id: &[u8; 32]) -> Result<Option<StatSet>, StoreError> {
        let k = key(STAT_SET, &[id]);
        self.with_db(|db| match db.get_pinned(k)? {
            Some(v) => StatSet::from_value(&v).map_err(|reason| StoreError::Corrupt {
                what: "stat set",
                reason: reason.to_string(),
            }),
            None => Ok(None),
        })
    }

    /// Replaces a stat set, not synced (a lost set only costs a re-hash).
    pub fn put_stat_set(&self, id: &[u8; 32], set: &StatSet) -> Result<(), StoreError> {
        let v = set.to_value();
        self.with_db(|db| Ok(db.put(key(STAT_SET, &[id]), v)?))
    }

    /// A memoised digest of what a COPY reads of its parent rootfs, with the answers it was
    /// made from (see the engine's `solve::copy`): a function of the memo key, so it never goes
    /// stale. Not synced: a lost one is recomputed from the parent layers.
    pub fn get_parent_facts(&self, memo: &[u8; 32]) -> Result<Option<ParentFacts>, StoreError> {
        self.get("parent facts", &key(FACTS, &[memo]))
    }

    pub fn put_parent_facts(&self, memo: &[u8; 32], facts: &ParentFacts) -> Result<(), StoreError> {
        self.put(&key(FACTS, &[memo]), facts, false)
    }

    pub fn get_lineage(&self, manifest: &Digest) -> Result<Option<Lineage>, StoreError> {
        self.get("lineage", &key(LINEAGE, &[manifest.as_bytes()]))
    }

    pub fn put_lineage(&self, manifest: &Digest, rec: &Lineage) -> Result<(), StoreError> {
        self.put(&key(LINEAGE, &[manifest.as_bytes()]), rec, true)
    }

    /// Where blob `d` is known to exist in registries (`registry/repository`), most recent last.
    pub fn get_blob_origins(&self, d: &Digest) -> Result<Vec<String>, StoreError> {
        Ok(self
            .get("blob origins", &key(ORIGIN, &[d.as_bytes()]))?
            .unwrap_or_default())
    }

    /// Records that blob `d` exists in the registry repository `name` (a hint for
    /// cross-repository mounts; losing it costs an upload, so it is not synced).
    pub fn add_blob_origin(&self, d: &Digest, name: &str) -> Result<(), StoreError> {
        let mut all = self.get_blob_origins(d)?;
        all.retain(|n| n != name);
        all.push(name.to_string());
        if all.len() > MAX_ORIGINS {
            all.drain(..all.len() - MAX_ORIGINS);
        }
        self.put(&key(ORIGIN, &[d.as_bytes()]), &all, false)
    }

    pub fn get_tag(&self, name: &str) -> Result<Option<TagRecord>, StoreError> {
        self.get("tag", &key(TAG, &[name.as_bytes()]))
    }

    pub fn put_tag(&self, name: &str, rec: &TagRecord) -> Result<(), StoreError> {
        self.put(&key(TAG, &[name.as_bytes()]), rec, true)
    }

    /// Removes a tag; `false` if there was none.
    pub fn delete_tag(&self, name: &str) -> Result<bool, StoreError> {
        let k = key(TAG, &[name.as_bytes()]);
        self.with_db(|db| {
            if db.get_pinned(&k)?.is_none() {
                return Ok(false);
            }
            db.delete_opt(&k, &synced())?;
            Ok(true)
        })
    }

    /// All tags, sorted by name (byte order).
    pub fn list_tags(&self) -> Result<Vec<(String, TagRecord)>, StoreError> {
        self.scan(TAG)?
            .into_iter()
            .map(|(name, v)| {
                let name = String::from_utf8(name).map_err(|_| StoreError::Corrupt {
                    what: "tag",
                    reason: "tag name is not UTF-8".into(),
                })?;
                Ok((name, decode("tag", &v)?))
            })
            .collect()
    }

    /// Every `(key, value)` whose key starts with `prefix`, prefix stripped, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        self.with_db(|db| {
            let mut out = Vec::new();
            for item in db.iterator(IteratorMode::From(prefix, Direction::Forward)) {
                let (k, v) = item?;
                let Some(rest) = k.strip_prefix(prefix) else {
                    break;
                };
                out.push((rest.to_vec(), v));
            }
            Ok(out)
        })
    }

    /// Records that step `key32` was used now (a cache hit), for `gc`'s least-recently-used
    /// eviction. Not synced: a lost update only makes the step look older.
    pub fn touch_step(&self, key32: &[u8; 32]) -> Result<(), StoreError> {
        self.touch_step_at(key32, crate::unix_now())
    }

    /// A step record for a cache hit: looks it up and, if present, records its last use (as
    /// [`Index::touch_step`]) and adds the key to this handle's in-use list, in the same
    /// critical section. A `gc` in another process holds the index lock for its run, so it
    /// either ran before (the record is gone: a miss) or sees the step in the list of a live
    /// handle and keeps it, and its layer, for as long as this handle lives.
    pub fn use_step(&self, key32: &[u8; 32]) -> Result<Option<StepRecord>, StoreError> {
        let k = key(STEP, &[&key32[..]]);
        let used = key(USED, &[&key32[..]]);
        let now = encode(&crate::unix_now());
        self.with_db(|db| {
            let Some(v) = db.get_pinned(&k)? else {
                return Ok(None);
            };
            let rec = decode_step(&v)?;
            db.put(&used, &now)?;
            if let Some(f) = &self.shared.in_use {
                use std::io::Write as _;
                let line = format!("{}\n", hex::encode(key32));
                let mut f = f.lock().unwrap();
                f.write_all(line.as_bytes()).map_err(|e| StoreError::Io {
                    op: "write the in-use list of",
                    path: self.shared.path.clone(),
                    source: e,
                })?;
            }
            Ok(Some(rec))
        })
    }

    /// [`Index::touch_step`] with an explicit time (seconds since the epoch).
    pub fn touch_step_at(&self, key32: &[u8; 32], unix: u64) -> Result<(), StoreError> {
        self.put(&key(USED, &[&key32[..]]), &unix, false)
    }

    /// When step `key32` was last used (`touch_step`), if ever recorded.
    pub fn step_last_used(&self, key32: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        self.get("last-used", &key(USED, &[&key32[..]]))
    }

    /// All last-use times, by step key.
    pub fn list_last_used(&self) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        self.scan(USED)?
            .into_iter()
            .map(|(k, v)| Ok((key32_of("last-used", &k)?, decode("last-used", &v)?)))
            .collect()
    }

    /// All step records, by key order.
    pub fn list_steps(&self) -> Result<Vec<([u8; 32], StepRecord)>, StoreError> {
        self.scan(STEP)?
            .into_iter()
            .map(|(k, v)| Ok((key32_of("step", &k)?, decode_step(&v)?)))
            .collect()
    }

    /// Removes a step record, its explain record and its last-use time (synced, in one batch).
    pub fn delete_step(&self, key32: &[u8; 32]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete(key(STEP, &[&key32[..]]));
        batch.delete(key(EXPLAIN, &[&key32[..]]));
        batch.delete(key(USED, &[&key32[..]]));
        self.with_db(|db| Ok(db.write_opt(batch, &synced())?))
    }

    /// Records that step `step` (its record already written) may be reused, by read set, for
    /// another parent with the same reuse key. Not capped: a fleet's images share reuse keys
    /// (the same RUN over different COPY layers), and each image's own candidate must stay;
    /// `gc` removes candidates with their step records ([`Index::prune_readsets`]).
    pub fn put_readset(
        &self,
        reuse: &[u8; 32],
        step: &[u8; 32],
        readset: &[u8],
    ) -> Result<(), StoreError> {
        self.put(
            &key(READSET, &[&reuse[..], &step[..]]),
            &(crate::unix_now(), readset),
            false,
        )
    }

    /// The candidate of step `step` under `reuse`, if recorded: `(created_unix, read set)`.
    pub fn readset(
        &self,
        reuse: &[u8; 32],
        step: &[u8; 32],
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.get("readset", &key(READSET, &[&reuse[..], &step[..]]))
    }

    /// At most `limit` candidates of `reuse`, in key order: `(step key, created_unix, bytes)`.
    pub fn readsets(&self, reuse: &[u8; 32], limit: usize) -> Result<Vec<ReadSetRow>, StoreError> {
        let prefix = key(READSET, &[&reuse[..]]);
        self.with_db(|db| {
            let mut out = Vec::new();
            for item in db.iterator(IteratorMode::From(&prefix, Direction::Forward)) {
                let (k, v) = item?;
                let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                    break;
                };
                if out.len() >= limit {
                    break;
                }
                let (created, bytes): (u64, Vec<u8>) = decode("readset", &v)?;
                out.push((key32_of("readset", rest)?, created, bytes));
            }
            Ok(out)
        })
    }

    /// Removes the candidates whose step record is gone; returns how many (for `gc`).
    pub fn prune_readsets(&self) -> Result<usize, StoreError> {
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for (k, _) in self.scan(READSET)? {
            let live = k.len() == 64
                && self
                    .get_step(k[32..].try_into().expect("32 bytes"))?
                    .is_some();
            if !live {
                batch.delete(key(READSET, &[&k]));
                n += 1;
            }
        }
        if n > 0 {
            self.with_db(|db| Ok(db.write_opt(batch, &synced())?))?;
        }
        Ok(n)
    }

    /// Forgets one candidate (its step record is gone, or its read set is of another version).
    pub fn delete_readset(&self, reuse: &[u8; 32], step: &[u8; 32]) -> Result<(), StoreError> {
        let k = key(READSET, &[&reuse[..], &step[..]]);
        self.with_db(|db| Ok(db.delete(k)?))
    }

    /// All layer records: `(diff_id, compression id, record)`.
    pub fn list_layers(&self) -> Result<Vec<(Digest, String, LayerRecord)>, StoreError> {
        self.scan(LAYER)?
            .into_iter()
            .map(|(k, v)| {
                let corrupt = || StoreError::Corrupt {
                    what: "layer",
                    reason: "malformed key".into(),
                };
                if k.len() < 32 {
                    return Err(corrupt());
                }
                let diff_id = Digest::from_bytes(k[..32].try_into().expect("32 bytes"));
                let compression = String::from_utf8(k[32..].to_vec()).map_err(|_| corrupt())?;
                Ok((diff_id, compression, decode("layer", &v)?))
            })
            .collect()
    }

    pub fn delete_layer(&self, diff_id: &Digest, compression: &str) -> Result<(), StoreError> {
        let k = key(LAYER, &[&diff_id.as_bytes()[..], compression.as_bytes()]);
        self.with_db(|db| Ok(db.delete_opt(k, &synced())?))
    }

    /// Writes a raw value; for tests of schema handling.
    #[cfg(test)]
    fn put_raw(&self, k: &[u8], v: &[u8]) {
        self.with_db(|db| Ok(db.put(k, v)?)).unwrap();
    }
}

/// A raw `(key without prefix, value)` pair from [`Index::scan`].
type KeyValue = (Vec<u8>, Box<[u8]>);

fn key32_of(what: &'static str, k: &[u8]) -> Result<[u8; 32], StoreError> {
    k.try_into().map_err(|_| StoreError::Corrupt {
        what,
        reason: format!("key of {} bytes, expected 32", k.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path());
        (dir, index)
    }

    fn open(dir: &Path) -> Index {
        Index::new(
            &dir.join("index-v1"),
            &dir.join("index-v1.lock"),
            Arc::new(|_: &str| {}),
            Duration::from_secs(60),
            None,
        )
        .unwrap()
    }

    #[test]
    fn the_handle_closes_when_idle_and_two_indexes_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path());
        let b = open(dir.path());
        assert!(
            !a.is_open() && !b.is_open(),
            "nothing is opened before the first operation"
        );
        a.put_tag(
            "x",
            &TagRecord {
                manifest: Digest::of(b"m"),
                config: Digest::of(b"c"),
                media_type: String::new(),
            },
        )
        .unwrap();
        assert!(a.is_open());
        // b waits for a's idle close, then sees a's write.
        assert!(b.get_tag("x").unwrap().is_some());
        assert!(!a.is_open(), "a closed after being idle, letting b in");
        assert_eq!(a.opens(), 1);
        // Back-to-back operations share one open.
        let before = b.opens();
        for i in 0..200u8 {
            b.touch_step_at(&[i; 32], 1).unwrap();
            assert!(b.step_last_used(&[i; 32]).unwrap().is_some());
        }
        assert!(b.opens() - before <= 2, "{} opens", b.opens() - before);
        // A hold keeps the lock across idle time: a waits until it is dropped.
        let hold = b.hold().unwrap();
        std::thread::sleep(IDLE_CLOSE * 3);
        assert!(b.is_open());
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(150));
                drop(hold);
            });
            assert!(a.get_tag("x").unwrap().is_some());
        });
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    fn layer(n: u8) -> LayerRecord {
        LayerRecord {
            diff_id: Digest::of(&[n]),
            digest: Digest::of(&[n, n]),
            size: 1234,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            uncompressed_size: 5678,
        }
    }

    fn stat(n: u8) -> StatEntry {
        StatEntry {
            dev: 1,
            ino: n as u64,
            size: 10,
            mtime_ns: 1_000,
            ctime_ns: 1_500,
            mode: 0o100644,
            recorded_ns: 2_000,
            blake3: [n; 32],
        }
    }

    #[test]
    fn blob_origins_are_unique_recent_and_bounded() {
        let (_dir, ix) = index();
        let d = Digest::of(b"blob");
        assert!(ix.get_blob_origins(&d).unwrap().is_empty());
        ix.add_blob_origin(&d, "r/a").unwrap();
        ix.add_blob_origin(&d, "r/b").unwrap();
        ix.add_blob_origin(&d, "r/a").unwrap();
        assert_eq!(ix.get_blob_origins(&d).unwrap(), vec!["r/b", "r/a"]);
        for i in 0..20 {
            ix.add_blob_origin(&d, &format!("r/{i}")).unwrap();
        }
        let all = ix.get_blob_origins(&d).unwrap();
        assert_eq!(all.len(), MAX_ORIGINS);
        assert_eq!(all.last().unwrap(), "r/19");
    }

    #[test]
    fn readsets_are_found_by_step_and_pruned_with_their_step_records() {
        let (_dir, ix) = index();
        let reuse = [7u8; 32];
        let rec = StepRecord {
            layer: Some(layer(1)),
            created_unix: 1,
        };
        for n in 0..6u8 {
            ix.put_step(&[n; 32], &rec, None).unwrap();
            ix.put_readset(&reuse, &[n; 32], &[n]).unwrap();
        }
        // Not capped: every image of a fleet keeps its own candidate.
        assert_eq!(ix.readsets(&reuse, 100).unwrap().len(), 6);
        assert_eq!(ix.readsets(&reuse, 2).unwrap().len(), 2);
        assert_eq!(ix.readset(&reuse, &[3; 32]).unwrap().unwrap().1, vec![3]);
        assert!(ix.readset(&reuse, &[9; 32]).unwrap().is_none());
        assert!(ix.readsets(&[8u8; 32], 100).unwrap().is_empty());
        ix.delete_readset(&reuse, &[5; 32]).unwrap();
        ix.delete_step(&[4; 32]).unwrap();
        assert_eq!(ix.prune_readsets().unwrap(), 1, "the candidate of step 4");
        let left: Vec<u8> = ix
            .readsets(&reuse, 100)
            .unwrap()
            .iter()
            .map(|(s, _, _)| s[0])
            .collect();
        assert_eq!(left, [0, 1, 2, 3]);
    }

    #[test]
    fn round_trips_every_record() {
        let (_dir, ix) = index();

        let step = StepRecord {
            layer: Some(layer(1)),
            created_unix: 1_700_000_000,
        };
        let mut files = crate::records::FileFactsBuilder::default();
        files.push("src/main.rs", 9, 0o644);
        let explain = ExplainRecord {
            inputs: vec![ExplainInput {
                name: "instruction".into(),
                value: [9; 32],
            }],
            files: files.finish(),
        };
        assert_eq!(ix.get_step(&[1; 32]).unwrap(), None);
        assert_eq!(ix.get_explain(&[1; 32]).unwrap(), None);
        ix.put_step(&[1; 32], &step, Some(&explain)).unwrap();
        assert_eq!(ix.get_step(&[1; 32]).unwrap(), Some(step.clone()));
        assert_eq!(ix.get_explain(&[1; 32]).unwrap(), Some(explain));
        // Rewritten without explain data (imported from a shared cache): none is left behind.
        ix.put_step(&[1; 32], &step, None).unwrap();
        assert_eq!(ix.get_explain(&[1; 32]).unwrap(), None);
        let no_layer = StepRecord {
            layer: None,
            created_unix: 0,
        };
        ix.put_step(&[2; 32], &no_layer, None).unwrap();
        assert_eq!(ix.get_step(&[2; 32]).unwrap(), Some(no_layer));

        assert_eq!(ix.get_last_at(&[3; 32]).unwrap(), None);
        ix.put_last_at(&[3; 32], &[1; 32]).unwrap();
        assert_eq!(ix.get_last_at(&[3; 32]).unwrap(), Some([1; 32]));

        assert_eq!(ix.get_parent_facts(&[4; 32]).unwrap(), None);
        let facts = ParentFacts {
            facts: [5; 32],
            answers: vec![1, 2, 3],
        };
        ix.put_parent_facts(&[4; 32], &facts).unwrap();
        assert_eq!(ix.get_parent_facts(&[4; 32]).unwrap(), Some(facts));

        let diff = Digest::of(b"tar");
        ix.put_layer(&diff, "gzip-6", &layer(1)).unwrap();
        ix.put_layer(&diff, "zstd-3", &layer(2)).unwrap();
        assert_eq!(ix.get_layer(&diff, "gzip-6").unwrap(), Some(layer(1)));
        assert_eq!(ix.get_layer(&diff, "zstd-3").unwrap(), Some(layer(2)));
        assert_eq!(ix.get_layer(&diff, "gzip").unwrap(), None);

        let a: &[u8] = b"/src/a";
        let b: &[u8] = b"/src/b";
        ix.put_stats(&[(a, stat(1)), (b, stat(2))]).unwrap();
        assert_eq!(
            ix.get_stats(&[b, &b"/missing"[..], a]).unwrap(),
            vec![Some(stat(2)), None, Some(stat(1))]
        );

        let tag = |n: u8| TagRecord {
            manifest: Digest::of(&[n]),
            config: Digest::of(&[n, 1]),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        };
        ix.put_tag("myapp:1.0", &tag(1)).unwrap();
        ix.put_tag("alpha:latest", &tag(2)).unwrap();
        // Keys of other kinds that sort after `g/` must not leak into the listing.
        assert_eq!(ix.get_tag("myapp:1.0").unwrap(), Some(tag(1)));
        assert_eq!(
            ix.list_tags().unwrap(),
            vec![
                (String::from("alpha:latest"), tag(2)),
                (String::from("myapp:1.0"), tag(1))
            ]
        );
        assert!(ix.delete_tag("alpha:latest").unwrap());
        assert!(!ix.delete_tag("alpha:latest").unwrap());
        assert_eq!(ix.get_tag("alpha:latest").unwrap(), None);
        assert_eq!(ix.list_tags().unwrap().len(), 1);
    }

    #[test]
    fn lists_and_deletes_steps_layers_and_last_use() {
        let (_dir, ix) = index();
        let rec = |n: u8| StepRecord {
            layer: Some(layer(n)),
            created_unix: n as u64,
        };
        ix.put_step(&[2; 32], &rec(2), None).unwrap();
        ix.put_step(&[1; 32], &rec(1), Some(&ExplainRecord::default()))
            .unwrap();
        // Records of other kinds around `s/` must not leak into the listing.
        ix.put_tag(
            "z",
            &TagRecord {
                manifest: Digest::of(b"m"),
                config: Digest::of(b"c"),
                media_type: String::new(),
            },
        )
        .unwrap();
        ix.put_last_at(&[1; 32], &[1; 32]).unwrap();
        assert_eq!(
            ix.list_steps().unwrap(),
            vec![([1; 32], rec(1)), ([2; 32], rec(2))]
        );
        assert_eq!(ix.step_last_used(&[1; 32]).unwrap(), None);
        ix.touch_step_at(&[1; 32], 42).unwrap();
        assert_eq!(ix.step_last_used(&[1; 32]).unwrap(), Some(42));
        assert_eq!(ix.list_last_used().unwrap(), vec![([1; 32], 42)]);
        assert!(ix.get_explain(&[1; 32]).unwrap().is_some());
        ix.delete_step(&[1; 32]).unwrap();
        assert_eq!(ix.get_step(&[1; 32]).unwrap(), None);
        assert_eq!(ix.get_explain(&[1; 32]).unwrap(), None);
        assert_eq!(ix.step_last_used(&[1; 32]).unwrap(), None);
        assert_eq!(ix.list_steps().unwrap().len(), 1);

        ix.put_layer(&Digest::of(b"d"), "gzip-6", &layer(3))
            .unwrap();
        assert_eq!(
            ix.list_layers().unwrap(),
            vec![(Digest::of(b"d"), "gzip-6".to_string(), layer(3))]
        );
        ix.delete_layer(&Digest::of(b"d"), "gzip-6").unwrap();
        assert!(ix.list_layers().unwrap().is_empty());
    }

    #[test]
    fn unknown_schema_version_is_an_error() {
        let (_dir, ix) = index();
        let mut v = encode(&stat(1));
        v[0] = STEP_SCHEMA + 1;
        ix.put_raw(&key(STEP, &[&[5u8; 32][..]]), &v);
        v[0] = VALUE_SCHEMA + 1;
        ix.put_raw(&key(STAT, &[&b"/x"[..]]), &v);
        ix.put_raw(&key(TAG, &[&b"t"[..]]), &[]);
        ix.put_raw(&key(LAST_AT, &[&[5u8; 32][..]]), &[VALUE_SCHEMA, 1, 2]);
        assert!(matches!(
            ix.get_step(&[5; 32]),
            Err(StoreError::Schema {
                what: "step",
                found: 3,
                expected: 2
            })
        ));
        assert!(matches!(
            ix.get_stats(&[&b"/x"[..]]),
            Err(StoreError::Schema { what: "stat", .. })
        ));
        assert!(matches!(
            ix.get_tag("t"),
            Err(StoreError::Corrupt { what: "tag", .. })
        ));
        assert!(matches!(
            ix.get_last_at(&[5; 32]),
            Err(StoreError::Corrupt {
                what: "last-at",
                ..
            })
        ));
    }

    /// A store written by strata before step records lost their explain inputs keeps its
    /// cache: version 1 records are read, their per-file inputs skipped.
    #[test]
    fn reads_version_1_step_records() {
        let (_dir, ix) = index();
        #[derive(Serialize)]
        struct V1 {
            layer: Option<LayerRecord>,
            explain: Vec<ExplainInput>,
            created_unix: u64,
        }
        let old = V1 {
            layer: Some(layer(3)),
            explain: (0..1000)
                .map(|i| ExplainInput {
                    name: format!("content:src/{i}.rs"),
                    value: [i as u8; 32],
                })
                .collect(),
            created_unix: 77,
        };
        let mut v = vec![1u8];
        bincode::serialize_into(&mut v, &old).unwrap();
        ix.put_raw(&key(STEP, &[&[6u8; 32][..]]), &v);
        let want = StepRecord {
            layer: Some(layer(3)),
            created_unix: 77,
        };
        assert_eq!(ix.get_step(&[6; 32]).unwrap(), Some(want.clone()));
        assert_eq!(ix.use_step(&[6; 32]).unwrap(), Some(want.clone()));
        assert_eq!(ix.list_steps().unwrap(), vec![([6; 32], want)]);
        assert_eq!(ix.get_explain(&[6; 32]).unwrap(), None);
    }

    /// Speed is measured by the benches (`benches/benches/engine.rs`), not asserted here: a
    /// timed assertion fails on a loaded machine and proves nothing on an idle one.
    #[test]
    fn get_stats_round_trips_many_paths() {
        let (_dir, ix) = index();
        let paths: Vec<Vec<u8>> = (0..50_000)
            .map(|i| format!("/home/user/project/src/file{i}.rs").into_bytes())
            .collect();
        let entries: Vec<(&[u8], StatEntry)> =
            paths.iter().map(|p| (p.as_slice(), stat(1))).collect();
        ix.put_stats(&entries).unwrap();
        let refs: Vec<&[u8]> = paths.iter().map(|p| p.as_slice()).collect();
        let got = ix.get_stats(&refs).unwrap();
        assert_eq!(got.len(), 50_000);
        assert!(got.iter().all(|e| e == &Some(stat(1))));
        let mut set = StatSetBuilder::new(2_000, paths.len());
        for p in &paths {
            assert!(set.push(p, &stat(2)));
        }
        let set = set.finish();
        ix.put_stat_set(&[7; 32], &set).unwrap();
        assert_eq!(ix.get_stat_set(&[7; 32]).unwrap(), Some(set));
        assert_eq!(ix.get_stat_set(&[8; 32]).unwrap(), None);
        // A schema 1 set (older strata) is no set; a corrupt one is an error.
        ix.put_raw(
            &key(STAT_SET, &[&[9u8; 32][..]]),
            &encode(&vec![(b"/a".to_vec(), stat(1))]),
        );
        assert_eq!(ix.get_stat_set(&[9; 32]).unwrap(), None);
        ix.put_raw(&key(STAT_SET, &[&[9u8; 32][..]]), &[STAT_SET_SCHEMA, 1]);
        assert!(matches!(
            ix.get_stat_set(&[9; 32]),
            Err(StoreError::Corrupt {
                what: "stat set",
                ..
            })
        ));
    }

    /// The column family is opened with the index's options (not RocksDB's defaults): a large
    /// value lands in a blob file at flush, and reads back through it.
    #[test]
    fn large_values_go_to_blob_files() {
        let (dir, ix) = index();
        let mut set = StatSetBuilder::new(2_000, 5_000);
        for i in 0..5_000 {
            set.push(format!("/ctx/src/{i}").as_bytes(), &stat(1));
        }
        let set = set.finish();
        ix.put_stat_set(&[1; 32], &set).unwrap();
        ix.put_last_at(&[2; 32], &[3; 32]).unwrap();
        ix.release(); // closing flushes the memtable
        let blobs = std::fs::read_dir(dir.path().join("index-v1"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".blob")
            })
            .count();
        assert_eq!(blobs, 1, "a ~350 KB stat set is stored in a blob file");
        assert_eq!(ix.get_stat_set(&[1; 32]).unwrap(), Some(set));
        assert_eq!(ix.get_last_at(&[2; 32]).unwrap(), Some([3; 32]));
    }

    #[test]
    fn stat_entry_follows_the_racy_rule() {
        let e = stat(1);
        assert!(!e.is_racy());
        assert!(e.matches(1, 1, 10, 1_000, 1_500, 0o100644));
        // Any stat field differing means the file changed.
        assert!(!e.matches(2, 1, 10, 1_000, 1_500, 0o100644));
        assert!(!e.matches(1, 2, 10, 1_000, 1_500, 0o100644));
        assert!(!e.matches(1, 1, 11, 1_000, 1_500, 0o100644));
        assert!(!e.matches(1, 1, 10, 1_001, 1_500, 0o100644));
        assert!(!e.matches(1, 1, 10, 1_000, 1_501, 0o100644));
        assert!(!e.matches(1, 1, 10, 1_000, 1_500, 0o100755));
        // Changed at (or after) the moment it was recorded: racy even though fields match.
        for (mtime, ctime) in [(2_000, 1_500), (1_000, 2_000), (3_000, 3_000)] {
            let racy = StatEntry {
                mtime_ns: mtime,
                ctime_ns: ctime,
                ..e
            };
            assert!(racy.is_racy());
            assert!(!racy.matches(1, 1, 10, mtime, ctime, 0o100644));
        }
        let just_before = StatEntry {
            mtime_ns: 1_999,
            ctime_ns: 1_999,
            ..e
        };
        assert!(just_before.matches(1, 1, 10, 1_999, 1_999, 0o100644));
    }
}
