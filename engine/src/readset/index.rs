//! What one layer says about each path: [`LayerIndex`], built by streaming the layer blob once
//! through strata's layer reader, cached in the store by diff_id.
//!
//! The index mirrors what the snapshot unpacker (`sandbox::snapshot`) makes of the layer, since
//! that is what a RUN sees through overlayfs: directories a layer implies without listing them
//! are directories (mode 0755, owner 0:0, the epoch); a later entry replaces an earlier one at
//! the same path, except that a directory over a directory keeps its children (and its opaque
//! mark); a non-directory or whiteout replaces a whole subtree; hard links name an inode of the
//! same layer (their metadata is the target's); only `security.capability` xattrs of regular
//! files count; symlinks are mode 0777. Whatever the unpacker refuses (an entry under a
//! non-directory, a hard link to nothing, an unsupported tar type) the index refuses too: no
//! RUN can have run on such a layer.
//!
//! On disk, `<store>/readset-index-v1/<diff_id hex>` is: the `sha256:<hex>` of the blob the
//! index was read from (71 bytes: `strata gc` removes an index whose blob is gone, the rule of
//! chunk references), [`MAGIC`], the format version (u32 LE), the BLAKE3 of the payload, then
//! the payload (bincode). It is written to the store's scratch directory and renamed into
//! place, so a killed process never leaves a partial index (its scratch directory is swept);
//! an index that fails any check (torn by a crash: it is not synced) is rebuilt, not trusted.

use std::collections::{hash_map::RandomState, BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use strata_cache::{Area, BlobStore, Digest};

use super::ReadSetError;
use crate::image::LayerDesc;
use crate::layer::{self, whiteout::Whiteout};
use crate::layer_sidecar::Sidecar;

/// Marks an index file (after the blob reference).
pub const MAGIC: &[u8; 8] = b"SRSINDEX";
/// The payload's format; a file of another version is rebuilt.
pub const INDEX_FORMAT: u32 = 1;
/// Hard-link hops followed inside one layer (the builder keeps them one hop long).
const MAX_LINK_HOPS: usize = 8;

/// What a layer says about one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Modification time: seconds, and the nanoseconds a PAX `mtime` gives.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Links to the inode in its layer (1, or more with hard links); `stat` shows it.
    pub nlink: u32,
    /// Only `security.capability` of regular files (what the unpacker applies).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// `opaque`: the lower layers' children are hidden (`.wh..wh..opq`).
    Dir {
        opaque: bool,
    },
    File {
        size: u64,
        blake3: [u8; 32],
    },
    Symlink(String),
    /// Another path of the same layer (relative), never itself a hard link.
    HardLink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// The path is removed from the layers below (`.wh.<name>`).
    Whiteout,
}

impl Entry {
    /// A directory the layer implies without listing it (what the unpacker creates).
    pub const IMPLICIT_DIR: Entry = Entry {
        kind: EntryKind::Dir { opaque: false },
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        nlink: 1,
        xattrs: BTreeMap::new(),
    };

    /// A whiteout (its metadata means nothing).
    pub const WHITEOUT: Entry = Entry {
        kind: EntryKind::Whiteout,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        nlink: 1,
        xattrs: BTreeMap::new(),
    };

    /// A plain entry of `kind` (mode 0644, or 0755 for a directory; 0:0; the epoch), for tests
    /// and callers that build indexes by hand.
    pub fn new(kind: EntryKind) -> Entry {
        let mode = match kind {
            EntryKind::Dir { .. } => 0o755,
            EntryKind::Symlink(_) => 0o777,
            _ => 0o644,
        };
        Entry {
            kind,
            mode,
            ..Entry::IMPLICIT_DIR
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir { .. })
    }
}

/// One layer's entries by relative path (no leading `/`, the root is ""), sorted bytewise,
/// with a hash table for point lookups (a check does thousands of them: see `view`).
#[derive(Debug)]
pub struct LayerIndex {
    entries: Vec<(String, Entry)>,
    /// [`path_hash`] of a path → position in `entries`; `spill` holds the paths whose hash
    /// another path had already (never in practice with a random key, but correct anyway).
    slots: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    spill: HashMap<String, u32>,
    /// The children of entry `i` are `kids[kid_start[i]..kid_start[i + 1]]` (positions in
    /// `entries`, in name order).
    kids: Vec<u32>,
    kid_start: Vec<u32>,
}

/// The key of every layer's table, random per process (no crafted paths can collide on
/// purpose): one hash of a path serves the lookups in every layer of a chain.
fn path_keys() -> &'static RandomState {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new)
}

/// The keyed hash of `rel` for [`LayerIndex::get_hashed`].
pub fn path_hash(rel: &str) -> u64 {
    path_keys().hash_one(rel)
}

/// The hasher of tables keyed by [`path_hash`]es: they are hashes already.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The serialized form.
#[derive(Deserialize)]
struct Payload {
    diff_id: Digest,
    entries: Vec<(String, Entry)>,
}

/// [`Payload`] as written (the same bincode), without a copy of the entries.
#[derive(Serialize)]
struct PayloadRef<'a> {
    diff_id: &'a Digest,
    entries: &'a [(String, Entry)],
}

impl LayerIndex {
    /// An index of `entries` as one layer would list them, in order (the unpacker's rules:
    /// module docs). A whiteout is given as [`EntryKind::Whiteout`] at the path it removes, an
    /// opaque directory as `Dir { opaque: true }`, a hard link as `HardLink(target)`.
    pub fn from_entries<S: Into<String>>(
        entries: impl IntoIterator<Item = (S, Entry)>,
    ) -> Result<LayerIndex, String> {
        let mut b = Builder::new();
        for (path, e) in entries {
            let path = path.into();
            let path = path.trim_matches('/').to_string();
            match e.kind {
                EntryKind::HardLink(ref t) => {
                    let t = t.trim_matches('/').to_string();
                    b.link(path, &t)?
                }
                _ => b.put(path, e)?,
            }
        }
        Ok(b.finish())
    }

    fn from_sorted(entries: Vec<(String, Entry)>) -> LayerIndex {
        let mut slots =
            HashMap::with_capacity_and_hasher(entries.len(), BuildHasherDefault::default());
        let mut spill = HashMap::new();
        for (i, (p, _)) in entries.iter().enumerate() {
            match slots.entry(path_hash(p)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i as u32);
                }
                std::collections::hash_map::Entry::Occupied(_) => {
                    spill.insert(p.clone(), i as u32);
                }
            }
        }
        let mut ix = LayerIndex {
            entries,
            slots,
            spill,
            kids: Vec::new(),
            kid_start: Vec::new(),
        };
        // Each entry's children, in entry order (name order: they share their prefix).
        let n = ix.entries.len();
        let mut parent_of = vec![u32::MAX; n];
        let mut start = vec![0u32; n + 1];
        for (i, (p, _)) in ix.entries.iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let parent = p.rfind('/').map_or("", |s| &p[..s]);
            if let Some(j) = ix.position(parent, path_hash(parent)) {
                parent_of[i] = j as u32;
                start[j + 1] += 1;
            }
        }
        for j in 0..n {
            start[j + 1] += start[j];
        }
        let mut next = start.clone();
        let mut kids = vec![0u32; start[n] as usize];
        for (i, &j) in parent_of.iter().enumerate() {
            if j != u32::MAX {
                kids[next[j as usize] as usize] = i as u32;
                next[j as usize] += 1;
            }
        }
        ix.kids = kids;
        ix.kid_start = start;
        ix
    }

    /// The entry the layer has at `rel`, as written (a hard link is a [`EntryKind::HardLink`]).
    pub fn get(&self, rel: &str) -> Option<&Entry> {
        self.get_hashed(rel, path_hash(rel))
    }

    /// [`get`](Self::get) with `hash` = [`path_hash`]`(rel)`, computed once for all layers.
    pub fn get_hashed(&self, rel: &str, hash: u64) -> Option<&Entry> {
        Some(&self.entries[self.position(rel, hash)?].1)
    }

    /// Where `rel` (whose [`path_hash`] is `hash`) is in `entries`.
    fn position(&self, rel: &str, hash: u64) -> Option<usize> {
        let i = *self.slots.get(&hash)? as usize;
        if self.entries[i].0 == rel {
            return Some(i);
        }
        self.spill.get(rel).map(|&i| i as usize)
    }

    /// The entry at `rel` with hard links resolved to their target's (one inode: same content
    /// and metadata).
    pub fn get_effective(&self, rel: &str) -> Option<&Entry> {
        self.effective(self.get(rel)?)
    }

    /// `e` (an entry of this layer) with a hard link resolved to its target's entry.
    pub fn effective<'a>(&'a self, mut e: &'a Entry) -> Option<&'a Entry> {
        for _ in 0..MAX_LINK_HOPS {
            match &e.kind {
                EntryKind::HardLink(t) => e = self.get(t)?,
                _ => return Some(e),
            }
        }
        None
    }

    /// Every entry, sorted by path.
    pub fn entries(&self) -> &[(String, Entry)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The direct children of the directory `rel` in this layer, in name order (whiteouts
    /// included).
    pub fn children<'a>(&'a self, rel: &str) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        let kids = match self.position(rel, path_hash(rel)) {
            Some(i) => &self.kids[self.kid_start[i] as usize..self.kid_start[i + 1] as usize],
            None => &[],
        };
        kids.iter().map(|&k| {
            let (p, e) = &self.entries[k as usize];
            (p.rfind('/').map_or(p.as_str(), |s| &p[s + 1..]), e)
        })
    }

    /// Indexes the layer blob `layer` from `blobs` ([`build_from`](Self::build_from) of the
    /// blob's file).
    pub fn build(blobs: &BlobStore, layer: &LayerDesc) -> Result<LayerIndex, ReadSetError> {
        LayerIndex::build_from(&blobs.path(&layer.digest), layer)
    }

    /// Indexes the compressed layer `layer` read from the file `blob` in one streaming pass:
    /// decompression, the layer reader's checks, BLAKE3 of every regular file, and sha256 of
    /// the tar stream, which must be the layer's diff_id. That check is what makes the index
    /// trustworthy (it is kept by diff_id, so it must describe it), wherever the file is: the
    /// store's blob, or a base's OCI layout while the store imports it. The compressed digest
    /// is left to the store's import, which checks it.
    pub fn build_from(blob: &Path, layer: &LayerDesc) -> Result<LayerIndex, ReadSetError> {
        LayerIndex::build_from_with(blob, layer, |_| {})
    }

    /// [`build_from`](Self::build_from), handing every entry to `also` first (before the
    /// index reads its content), for a caller that derives something else from the same pass.
    /// What `also` made must be dropped when this fails: the layer was not what it claimed.
    pub fn build_from_with(
        blob: &Path,
        layer: &LayerDesc,
        also: impl FnMut(&mut layer::LayerEntry<'_, layer::HashedStream>),
    ) -> Result<LayerIndex, ReadSetError> {
        let file = std::fs::File::open(blob).map_err(|source| ReadSetError::Io {
            op: "open layer blob",
            path: blob.to_path_buf(),
            source,
        })?;
        LayerIndex::build_from_reader(
            Box::new(io::BufReader::with_capacity(256 << 10, file)),
            layer,
            also,
        )
    }

    /// [`build_from_with`](Self::build_from_with) of the compressed layer's bytes read from
    /// `blob` (a file, or a download as it arrives).
    pub fn build_from_reader(
        blob: Box<dyn io::Read + Send>,
        layer: &LayerDesc,
        mut also: impl FnMut(&mut layer::LayerEntry<'_, layer::HashedStream>),
    ) -> Result<LayerIndex, ReadSetError> {
        let digest = layer.digest;
        let limits = layer::Limits::default();
        let mut b = Builder::new();
        let mut buf = vec![0u8; 256 << 10];
        // Inflating on a second core while this one hashes and parses: about the larger of the
        // two instead of their sum.
        let found = layer::for_each_with_diff_id(
            blob,
            &layer.media_type,
            limits,
            |source| ReadSetError::Layer { digest, source },
            |source| ReadSetError::Read { digest, source },
            |mut le| {
                also(&mut le);
                add_tar_entry(&mut b, &mut le, &mut buf, &digest)?;
                Ok(ControlFlow::Continue(()))
            },
        )?;
        if found != layer.diff_id {
            return Err(ReadSetError::DiffId {
                digest,
                expected: layer.diff_id,
                found,
            });
        }
        Ok(b.finish())
    }

    /// The index of `layer`, from `<store>/readset-index-v1/<diff_id hex>` when that file is
    /// sound, else built ([`build`](Self::build)) and written there. Builds of one session share
    /// loaded indexes through `solve::Shared` (one memo, which also makes concurrent requests
    /// for the same layer wait for one build).
    pub fn load_or_build(
        store: &strata_cache::Store,
        layer: &LayerDesc,
    ) -> Result<Arc<LayerIndex>, ReadSetError> {
        if let Some(ix) = LayerIndex::load(store, layer) {
            return Ok(Arc::new(ix));
        }
        let ix = LayerIndex::build(store.blobs(), layer)?;
        ix.save(store, layer)?;
        Ok(Arc::new(ix))
    }

    /// The index of `layer` kept in the store, if it has a sound one.
    pub fn load(store: &strata_cache::Store, layer: &LayerDesc) -> Option<LayerIndex> {
        read_index(&index_path(store.root(), &layer.diff_id), &layer.diff_id)
    }

    /// Keeps this index (of `layer`) in the store, where [`load`](Self::load) finds it.
    pub fn save(&self, store: &strata_cache::Store, layer: &LayerDesc) -> Result<(), ReadSetError> {
        write_index(
            store,
            &index_path(store.root(), &layer.diff_id),
            layer,
            self,
        )
    }
}

/// The index files (`layer_sidecar`).
const FILE: Sidecar = Sidecar {
    area: Area::ReadsetIndex,
    magic: MAGIC,
    format: INDEX_FORMAT,
    temp_prefix: "readset-index-",
};

/// Where the index of layer `diff_id` is kept in the store at `root`.
pub fn index_path(root: &Path, diff_id: &Digest) -> PathBuf {
    FILE.path(root, diff_id)
}

/// The index in `path` if it is whole, of the current format, and of `diff_id`.
fn read_index(path: &Path, diff_id: &Digest) -> Option<LayerIndex> {
    let payload = FILE.read(path)?;
    let p: Payload = bincode::deserialize(&payload).ok()?;
    let sorted = p.entries.windows(2).all(|w| w[0].0 < w[1].0);
    (p.diff_id == *diff_id && sorted).then(|| LayerIndex::from_sorted(p.entries))
}

/// Writes `ix` (of `layer`) to `path` ([`Sidecar::write`]).
fn write_index(
    store: &strata_cache::Store,
    path: &Path,
    layer: &LayerDesc,
    ix: &LayerIndex,
) -> Result<(), ReadSetError> {
    let payload = bincode::serialize(&PayloadRef {
        diff_id: &layer.diff_id,
        entries: &ix.entries,
    })
    .map_err(|source| ReadSetError::Encode {
        digest: layer.digest,
        source,
    })?;
    FILE.write(store, path, &layer.digest, &payload)
        .map_err(|e| ReadSetError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        })
}

/// Applies one tar entry of layer `digest` to the index being built.
fn add_tar_entry<R: Read>(
    b: &mut Builder,
    le: &mut layer::LayerEntry<'_, R>,
    buf: &mut [u8],
    digest: &Digest,
) -> Result<(), ReadSetError> {
    let shown = le.shown();
    let bad = |reason: String| ReadSetError::Entry {
        digest: *digest,
        path: shown.clone(),
        reason,
    };
    let stream = |e: io::Error| ReadSetError::Read {
        digest: *digest,
        source: layer::ReadError::Stream(e),
    };
    let mut parts = Vec::with_capacity(le.components.len());
    for c in &le.components {
        parts.push(
            c.to_str()
                .ok_or_else(|| bad("a path that is not UTF-8".into()))?,
        );
    }
    let whiteout = le.whiteout();
    let Some((name, dir)) = parts.split_last() else {
        // The root: only a directory may describe it (the unpacker's rule).
        if !le.entry.header().entry_type().is_dir() {
            return Err(bad("the root can only be a directory".into()));
        }
        let e = metadata(le, EntryKind::Dir { opaque: false }).map_err(stream)?;
        return b.put(String::new(), e).map_err(bad);
    };
    let dir = dir.join("/");
    let join = |name: &str| {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    match whiteout {
        None => {}
        Some(Whiteout::Opaque) => return b.opaque(&dir).map_err(bad),
        Some(Whiteout::AufsMeta(_)) => return Ok(()),
        Some(Whiteout::Remove(target)) => {
            let target =
                std::str::from_utf8(target).map_err(|_| bad("a path that is not UTF-8".into()))?;
            if target.is_empty() || target == "." || target == ".." {
                return Err(bad("whiteout of an invalid name".into()));
            }
            return b.put(join(target), Entry::WHITEOUT).map_err(bad);
        }
    }
    let path = join(name);
    let h = le.entry.header();
    let et = h.entry_type();
    use tar::EntryType as T;
    let link_target = || {
        le.entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .filter(|t| !t.is_empty() && !t.contains(&0))
    };
    let kind = match et {
        T::Regular | T::Continuous => {
            let size = le.entry.size();
            let mut hasher = blake3::Hasher::new();
            let mut content = (&mut le.entry).take(size);
            let mut n = 0u64;
            loop {
                let got = match content.read(buf) {
                    Ok(0) => break,
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(stream(e)),
                };
                hasher.update(&buf[..got]);
                n += got as u64;
            }
            if n != size {
                return Err(bad("truncated file content".into()));
            }
            EntryKind::File {
                size,
                blake3: *hasher.finalize().as_bytes(),
            }
        }
        T::Directory => EntryKind::Dir { opaque: false },
        T::Symlink => {
            let t = link_target().ok_or_else(|| bad("invalid symlink target".into()))?;
            EntryKind::Symlink(
                String::from_utf8(t)
                    .map_err(|_| bad("a symlink target that is not UTF-8".into()))?,
            )
        }
        T::Link => {
            let t = link_target().ok_or_else(|| bad("hard link without a target".into()))?;
            let t = layer::path_components(&t).map_err(|r| bad(r.into()))?;
            let t: Vec<&str> = t
                .iter()
                .map(|c| c.to_str())
                .collect::<Option<_>>()
                .ok_or_else(|| bad("a hard link target that is not UTF-8".into()))?;
            if t.is_empty() {
                return Err(bad("hard link to the root".into()));
            }
            return b.link(path, &t.join("/")).map_err(bad);
        }
        T::Char | T::Block => {
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            if et == T::Char && (major, minor) == (0, 0) {
                // What the unpacker makes of it is overlayfs' form of a whiteout.
                EntryKind::Whiteout
            } else if et == T::Char {
                EntryKind::Char(major, minor)
            } else {
                EntryKind::Block(major, minor)
            }
        }
        T::Fifo => EntryKind::Fifo,
        other => {
            return Err(bad(format!(
                "tar type {:?} is not supported",
                other.as_byte() as char
            )))
        }
    };
    let e = metadata(le, kind).map_err(stream)?;
    b.put(path, e).map_err(bad)
}

/// The entry of `kind` with the tar entry's metadata, as the unpacker applies it.
fn metadata<R: Read>(le: &mut layer::LayerEntry<'_, R>, kind: EntryKind) -> io::Result<Entry> {
    let h = le.entry.header();
    let mode = match kind {
        EntryKind::Symlink(_) => 0o777,
        _ => h.mode()? & 0o7777,
    };
    let (uid, gid) = (h.uid()?, h.gid()?);
    let times = crate::sandbox::snapshot::entry_times(&mut le.entry)?;
    let mut xattrs = BTreeMap::new();
    if matches!(kind, EntryKind::File { .. }) {
        if let Some(exts) = le.entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                for kept in layer::KEPT_XATTRS {
                    if ext.key_bytes().strip_prefix(b"SCHILY.xattr.") == Some(kept.as_bytes()) {
                        xattrs.insert(kept.to_string(), ext.value_bytes().to_vec());
                    }
                }
            }
        }
    }
    Ok(Entry {
        kind,
        mode,
        uid,
        gid,
        mtime: times.last_modification.tv_sec,
        mtime_nsec: times.last_modification.tv_nsec as u32,
        nlink: 1,
        xattrs,
    })
}

/// A layer's entries as they are applied, one by one (module docs).
struct Builder {
    map: BTreeMap<String, Entry>,
    /// Hard links by target: the links of each inode that has any.
    links: HashMap<String, Vec<String>>,
    /// The last parent known to exist as a directory (entries come sorted, mostly).
    last_parent: String,
}

impl Builder {
    fn new() -> Builder {
        let mut map = BTreeMap::new();
        map.insert(String::new(), Entry::IMPLICIT_DIR);
        Builder {
            map,
            links: HashMap::new(),
            last_parent: String::new(),
        }
    }

    /// Makes the parents of `path` directories, as `mkdir -p` in the unpacker does; a parent
    /// that is something else is an error there, and here.
    fn parents(&mut self, path: &str) -> Result<(), String> {
        let parent = path.rfind('/').map_or("", |i| &path[..i]);
        if parent == self.last_parent {
            return Ok(());
        }
        for (i, _) in path.match_indices('/') {
            let p = &path[..i];
            match self.map.get(p) {
                None => {
                    self.map.insert(p.to_string(), Entry::IMPLICIT_DIR);
                }
                Some(e) if e.is_dir() => {}
                Some(_) => return Err(format!("parent `{p}` is not a directory")),
            }
        }
        self.last_parent = parent.to_string();
        Ok(())
    }

    /// Puts `e` at `path`: a directory over a directory merges (keeping the opaque mark),
    /// anything else replaces the subtree.
    fn put(&mut self, path: String, mut e: Entry) -> Result<(), String> {
        if path.is_empty() && !e.is_dir() {
            return Err("the root can only be a directory".into());
        }
        self.parents(&path)?;
        match (self.map.get(&path).map(|old| &old.kind), &mut e.kind) {
            (Some(EntryKind::Dir { opaque: was }), EntryKind::Dir { opaque }) => *opaque |= *was,
            (Some(_), _) => self.remove_subtree(&path),
            (None, _) => {}
        }
        self.map.insert(path, e);
        Ok(())
    }

    /// `.wh..wh..opq` in `dir`: marks it opaque (creating it as the unpacker would).
    fn opaque(&mut self, dir: &str) -> Result<(), String> {
        self.parents(dir)?;
        match self.map.get_mut(dir) {
            None => {
                let mut d = Entry::IMPLICIT_DIR;
                d.kind = EntryKind::Dir { opaque: true };
                self.map.insert(dir.to_string(), d);
            }
            Some(Entry {
                kind: EntryKind::Dir { opaque },
                ..
            }) => *opaque = true,
            Some(_) => return Err(format!("opaque marker in `{dir}`, not a directory")),
        }
        Ok(())
    }

    /// A hard link at `path` to `target` of this layer (after whatever was at `path` is gone,
    /// as with `linkat`).
    fn link(&mut self, path: String, target: &str) -> Result<(), String> {
        self.parents(&path)?;
        if self.map.contains_key(&path) {
            self.remove_subtree(&path);
        }
        let (target, e) = match self.map.get(target) {
            None => return Err(format!("hard link target `{target}` is not in the layer")),
            Some(e) if e.is_dir() => return Err("hard link to a directory".into()),
            Some(Entry {
                kind: EntryKind::HardLink(t),
                ..
            }) => (t.clone(), self.map.get(t.as_str())),
            Some(e) => (target.to_string(), Some(e)),
        };
        let Some(e) = e else {
            return Err(format!("hard link target `{target}` is not in the layer"));
        };
        let link = Entry {
            kind: EntryKind::HardLink(target.clone()),
            ..e.clone()
        };
        self.links.entry(target).or_default().push(path.clone());
        self.map.insert(path, link);
        Ok(())
    }

    /// Removes `path` and everything below it. An inode that still has other names keeps
    /// them: its first remaining link becomes the entry, the others link to it.
    fn remove_subtree(&mut self, path: &str) {
        self.last_parent.clear();
        let prefix = format!("{path}/");
        let mut doomed: Vec<String> = self
            .map
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        doomed.push(path.to_string());
        let mut removed = Vec::new();
        for k in &doomed {
            if let Some(e) = self.map.remove(k) {
                removed.push((k, e));
            }
        }
        for (k, e) in removed {
            let Some(links) = self.links.remove(k.as_str()) else {
                continue;
            };
            let alive: Vec<String> = links
                .into_iter()
                .filter(|l| {
                    matches!(self.map.get(l), Some(Entry { kind: EntryKind::HardLink(t), .. }) if t == k)
                })
                .collect();
            let Some((first, rest)) = alive.split_first() else {
                continue;
            };
            self.map.insert(first.clone(), e.clone());
            for l in rest {
                if let Some(Entry {
                    kind: EntryKind::HardLink(t),
                    ..
                }) = self.map.get_mut(l)
                {
                    *t = first.clone();
                }
            }
            if !rest.is_empty() {
                self.links.insert(first.clone(), rest.to_vec());
            }
        }
    }

    /// The index, with each inode's link count.
    fn finish(mut self) -> LayerIndex {
        let mut counts: HashMap<String, u32> = HashMap::new();
        for e in self.map.values() {
            if let EntryKind::HardLink(t) = &e.kind {
                *counts.entry(t.clone()).or_default() += 1;
            }
        }
        for (target, n) in &counts {
            if let Some(e) = self.map.get_mut(target) {
                e.nlink = 1 + n;
            }
        }
        for e in self.map.values_mut() {
            if let EntryKind::HardLink(t) = &e.kind {
                e.nlink = 1 + counts.get(t).copied().unwrap_or(0);
            }
        }
        LayerIndex::from_sorted(self.map.into_iter().collect())
    }
}
