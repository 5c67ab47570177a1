//! File-by-file comparison of two layers. Each tar is streamed once into a per-path summary
//! (metadata + content sha256), so memory grows with the number of entries, not their bytes.
//! A second pass fetches the few files whose differing content is looked into.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use strata_cache::{Digest, Sha256Hasher};

use super::source::LayerRef;
use super::{content, Cause, ContentDetail, DiffError, FileChange, FileDiff, OrderDiff};

/// Files looked into ([`add_details`]) per layer pair.
const DETAIL_PER_LAYER: usize = 10;
/// Bytes read a side per layer pair for [`add_details`].
const DETAIL_BYTES_PER_LAYER: u64 = 512 << 20;
/// Held while one layer pair's files are read and looked into: layers are compared in
/// parallel, and without it the memory of a diff would grow with the number of threads (each
/// pair up to 2 × [`DETAIL_BYTES_PER_LAYER`] read, plus what an archive inflates to). With it,
/// one pair's at a time.
static DETAILS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What is compared of one tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntrySummary {
    pub kind: &'static str,
    pub size: u64,
    pub sha256: Option<Digest>,
    pub mode: u32,
    pub uid: String,
    pub gid: String,
    pub uname: String,
    pub gname: String,
    pub mtime: String,
    /// PAX `atime`/`ctime`: compared (and ignored) with mtime.
    pub times: BTreeMap<String, String>,
    pub link: Option<String>,
    pub dev: Option<(u32, u32)>,
    /// Other PAX records (xattrs, vendor keys), values lossily decoded.
    pub pax: BTreeMap<String, String>,
    pub format: &'static str,
}

#[derive(Debug, Default)]
pub(crate) struct LayerSummary {
    /// sha256 of the uncompressed tar, as read.
    pub diff_id: Option<Digest>,
    pub entries: HashMap<String, EntrySummary>,
    pub order: Vec<String>,
}

/// Hashes what passes through it (the diff_id of the decompressed stream).
struct HashRead<R> {
    inner: R,
    hasher: Sha256Hasher,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct HashWrite(Sha256Hasher, u64);

impl Write for HashWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hashes the compressed bytes on their way to the decompressor; the hasher is shared so it
/// can be finished once the decompressor (which owns this reader) has been dropped.
struct BlobHash {
    inner: File,
    hasher: Arc<Mutex<Sha256Hasher>>,
}

impl Read for BlobHash {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher
            .lock()
            .expect("hasher lock never poisoned")
            .update(&buf[..n]);
        Ok(n)
    }
}

/// The shared hasher of a blob's compressed bytes.
type BlobHasher = Arc<Mutex<Sha256Hasher>>;

fn open(layer: &LayerRef) -> Result<(Box<dyn Read + Send>, BlobHasher), DiffError> {
    let f = File::open(&layer.path).map_err(|source| DiffError::Io {
        path: layer.path.clone(),
        source,
    })?;
    let hasher = Arc::new(Mutex::new(Sha256Hasher::new()));
    let blob = BlobHash {
        inner: f,
        hasher: Arc::clone(&hasher),
    };
    let r = crate::layer::decompress_reader(
        Box::new(io::BufReader::with_capacity(256 * 1024, blob)),
        &layer.media_type,
    )?;
    Ok((r, hasher))
}

/// Layer paths without `./`, leading or trailing `/` (the root itself is ``).
fn normalise(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

fn kind_of(t: tar::EntryType) -> &'static str {
    use tar::EntryType as T;
    match t {
        T::Regular | T::Continuous | T::GNUSparse => "file",
        T::Directory => "dir",
        T::Symlink => "symlink",
        T::Link => "hardlink",
        T::Char => "char-device",
        T::Block => "block-device",
        T::Fifo => "fifo",
        _ => "other",
    }
}

fn bad_tar(layer: &LayerRef, e: io::Error) -> DiffError {
    DiffError::BadLayer {
        path: layer.path.clone(),
        reason: e.to_string(),
    }
}

/// The path and metadata of one tar entry (`sha256` unset, `size` from the header); `None` for
/// a PAX global header. Shared by layers and tars inside them ([`super::archive`]).
pub(crate) fn entry_summary<R: Read>(
    e: &mut tar::Entry<R>,
) -> io::Result<Option<(String, EntrySummary)>> {
    let h = e.header().clone();
    let etype = h.entry_type();
    if matches!(etype, tar::EntryType::XGlobalHeader) {
        return Ok(None);
    }
    let path = normalise(&String::from_utf8_lossy(&e.path_bytes()));
    let had_pax = matches!(e.pax_extensions(), Ok(Some(_)));
    let mut pax = BTreeMap::new();
    let mut times = BTreeMap::new();
    let (mut uid, mut gid, mut mtime) = (None, None, None);
    if let Some(exts) = e.pax_extensions()? {
        for x in exts {
            let x = x?;
            let key = String::from_utf8_lossy(x.key_bytes()).into_owned();
            let val = String::from_utf8_lossy(x.value_bytes()).into_owned();
            match key.as_str() {
                "path" | "linkpath" | "size" => {}
                "uid" => uid = Some(val),
                "gid" => gid = Some(val),
                "mtime" => mtime = Some(val),
                "atime" | "ctime" => {
                    times.insert(key, val);
                }
                _ => {
                    pax.insert(key, val);
                }
            }
        }
    }
    let format = if had_pax {
        "pax"
    } else if h.as_ustar().is_some() {
        "ustar"
    } else if h.as_gnu().is_some() {
        "gnu"
    } else {
        "v7"
    };
    let kind = kind_of(etype);
    let link = match kind {
        "symlink" | "hardlink" => e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .map(|l| if kind == "hardlink" { normalise(&l) } else { l }),
        _ => None,
    };
    let dev = match kind {
        "char-device" | "block-device" => Some((
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        )),
        _ => None,
    };
    let num = |v: io::Result<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    let name = |v: Option<&[u8]>| v.map(|b| String::from_utf8_lossy(b).into_owned());
    let summary = EntrySummary {
        kind,
        size: if kind == "file" { e.size() } else { 0 },
        sha256: None,
        mode: h.mode().unwrap_or(0) & 0o7777,
        uid: uid.unwrap_or_else(|| num(h.uid())),
        gid: gid.unwrap_or_else(|| num(h.gid())),
        uname: name(h.username_bytes()).unwrap_or_default(),
        gname: name(h.groupname_bytes()).unwrap_or_default(),
        mtime: mtime.unwrap_or_else(|| num(h.mtime())),
        times,
        link,
        dev,
        pax,
        format,
    };
    Ok(Some((path, summary)))
}

/// Streams `layer` once into its per-path summary.
pub(crate) fn summarize(layer: &LayerRef) -> Result<LayerSummary, DiffError> {
    let (inner, blob_hasher) = open(layer)?;
    let reader = HashRead {
        inner,
        hasher: Sha256Hasher::new(),
    };
    let mut ar = tar::Archive::new(reader);
    let mut out = LayerSummary::default();
    for e in ar.entries().map_err(|e| bad_tar(layer, e))? {
        let mut e = e.map_err(|e| bad_tar(layer, e))?;
        let Some((path, mut summary)) = entry_summary(&mut e).map_err(|e| bad_tar(layer, e))?
        else {
            continue;
        };
        if summary.kind == "file" {
            let mut w = HashWrite(Sha256Hasher::new(), 0);
            io::copy(&mut e, &mut w).map_err(|e| bad_tar(layer, e))?;
            summary.sha256 = Some(w.0.finish());
            summary.size = w.1;
        }
        // Later duplicates win, as when the layer is applied.
        if out.entries.insert(path.clone(), summary).is_none() {
            out.order.push(path);
        }
    }
    let mut reader = ar.into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(|e| bad_tar(layer, e))?;
    let HashRead { inner, hasher } = reader;
    out.diff_id = Some(hasher.finish());
    // The decompressors read their input to the end (multi-member gzip, multi-frame zstd), so
    // the blob has been hashed whole once the tar stream is drained.
    drop(inner);
    if let (Some(expected), Ok(h)) = (layer.digest, Arc::try_unwrap(blob_hasher)) {
        let found = h.into_inner().expect("hasher lock never poisoned").finish();
        if found != expected {
            return Err(DiffError::BadLayer {
                path: layer.path.clone(),
                reason: format!("blob does not match its digest {expected} (found {found})"),
            });
        }
    }
    Ok(out)
}

/// The bytes of the regular files in `want` (each at most `limit` bytes: larger ones are left
/// out), in one more pass over `layer`.
pub(crate) fn fetch(
    layer: &LayerRef,
    want: &HashSet<String>,
    limit: u64,
) -> Result<HashMap<String, Vec<u8>>, DiffError> {
    let mut out = HashMap::new();
    if want.is_empty() {
        return Ok(out);
    }
    let mut ar = tar::Archive::new(open(layer)?.0);
    for e in ar.entries().map_err(|e| bad_tar(layer, e))? {
        let mut e = e.map_err(|e| bad_tar(layer, e))?;
        let path = normalise(&String::from_utf8_lossy(&e.path_bytes()));
        if want.contains(&path) && kind_of(e.header().entry_type()) == "file" {
            let mut buf = Vec::new();
            (&mut e)
                .take(limit + 1)
                .read_to_end(&mut buf)
                .map_err(|e| bad_tar(layer, e))?;
            if buf.len() as u64 > limit {
                out.remove(&path);
            } else {
                // Later duplicates win, as in `summarize`.
                out.insert(path, buf);
            }
        }
    }
    Ok(out)
}

/// The regular files of `layer` (their first `max_bytes`) holding one of `needles`: (path,
/// index of the first needle found), in layer order. For `strata verify`'s look for the build's
/// date in files (a date the same in every run is not caught by comparing runs).
pub fn find_in_layer(
    layer: &LayerRef,
    needles: &[Vec<u8>],
    max_bytes: u64,
) -> Result<Vec<(String, usize)>, DiffError> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(open(layer)?.0);
    let mut buf = Vec::new();
    for e in ar.entries().map_err(|e| bad_tar(layer, e))? {
        let mut e = e.map_err(|e| bad_tar(layer, e))?;
        if kind_of(e.header().entry_type()) != "file" {
            continue;
        }
        let path = normalise(&String::from_utf8_lossy(&e.path_bytes()));
        buf.clear();
        (&mut e)
            .take(max_bytes)
            .read_to_end(&mut buf)
            .map_err(|e| bad_tar(layer, e))?;
        if let Some(i) = needles.iter().position(|n| contains(&buf, n)) {
            out.push((format!("/{path}"), i));
        }
    }
    Ok(out)
}

/// Whether `hay` holds `needle` (non-empty).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return false;
    };
    let mut at = 0;
    while let Some(i) = hay[at..].iter().position(|&b| b == first) {
        let start = at + i + 1;
        if hay.len() - start < rest.len() {
            return false;
        }
        if &hay[start..start + rest.len()] == rest {
            return true;
        }
        at = start;
    }
    false
}

fn describe(e: &EntrySummary) -> String {
    match (&e.link, e.sha256) {
        (Some(l), _) => format!("{} -> {l}", e.kind),
        (None, Some(d)) => format!("file {d} ({} bytes)", e.size),
        _ => e.kind.to_string(),
    }
}

fn change(cause: Cause, a: impl Into<String>, b: impl Into<String>) -> FileChange {
    FileChange::new(cause, Some(a.into()), Some(b.into()))
}

pub(crate) fn compare_entries(a: &EntrySummary, b: &EntrySummary) -> Vec<FileChange> {
    let mut out = Vec::new();
    if a.kind != b.kind {
        let hardlink = matches!(
            (a.kind, b.kind),
            ("file", "hardlink") | ("hardlink", "file")
        );
        let cause = if hardlink {
            Cause::Hardlink
        } else {
            Cause::Type
        };
        out.push(change(cause, describe(a), describe(b)));
    } else {
        if a.sha256 != b.sha256 {
            out.push(change(Cause::Content, describe(a), describe(b)));
        }
        if a.link != b.link {
            let cause = if a.kind == "hardlink" {
                Cause::Hardlink
            } else {
                Cause::Link
            };
            out.push(change(
                cause,
                a.link.clone().unwrap_or_default(),
                b.link.clone().unwrap_or_default(),
            ));
        }
        if a.dev != b.dev {
            out.push(change(
                Cause::Type,
                format!("{:?}", a.dev),
                format!("{:?}", b.dev),
            ));
        }
    }
    if a.mode != b.mode {
        out.push(change(
            Cause::Mode,
            format!("{:04o}", a.mode),
            format!("{:04o}", b.mode),
        ));
    }
    if a.uid != b.uid {
        out.push(change(Cause::Uid, &a.uid, &b.uid));
    }
    if a.gid != b.gid {
        out.push(change(Cause::Gid, &a.gid, &b.gid));
    }
    if a.uname != b.uname {
        out.push(change(Cause::Uname, &a.uname, &b.uname));
    }
    if a.gname != b.gname {
        out.push(change(Cause::Gname, &a.gname, &b.gname));
    }
    if a.pax != b.pax {
        let keys: BTreeSet<&String> = a.pax.keys().chain(b.pax.keys()).collect();
        for k in keys {
            let (va, vb) = (a.pax.get(k), b.pax.get(k));
            if va != vb {
                out.push(FileChange::new(
                    Cause::Xattrs,
                    va.map(|v| format!("{k}={}", v.escape_debug())),
                    vb.map(|v| format!("{k}={}", v.escape_debug())),
                ));
            }
        }
    }
    if a.mtime != b.mtime {
        out.push(change(Cause::Mtime, &a.mtime, &b.mtime));
    }
    if a.times != b.times {
        out.push(change(
            Cause::Mtime,
            format!("{:?}", a.times),
            format!("{:?}", b.times),
        ));
    }
    if a.format != b.format {
        out.push(change(Cause::Format, a.format, b.format));
    }
    out
}

/// Compares two summaries: per-path changes (most telling first) and the entry order.
/// Changes whose cause `ignored` says to drop are counted in `ignored_counts` instead.
pub(crate) fn compare(
    a: &LayerSummary,
    b: &LayerSummary,
    ignored: &dyn Fn(Cause) -> bool,
    ignored_counts: &mut BTreeMap<Cause, usize>,
) -> (Vec<FileDiff>, Option<OrderDiff>) {
    let paths: BTreeSet<&String> = a.entries.keys().chain(b.entries.keys()).collect();
    let mut files = Vec::new();
    for p in paths {
        let changes = match (a.entries.get(p), b.entries.get(p)) {
            (Some(x), Some(y)) => compare_entries(x, y),
            (Some(x), None) => vec![FileChange::new(Cause::Presence, Some(describe(x)), None)],
            (None, Some(y)) => vec![FileChange::new(Cause::Presence, None, Some(describe(y)))],
            (None, None) => unreachable!("path from one of the maps"),
        };
        let mut kept = Vec::new();
        for c in changes {
            if ignored(c.cause) {
                *ignored_counts.entry(c.cause).or_default() += 1;
            } else {
                kept.push(c);
            }
        }
        if !kept.is_empty() {
            kept.sort_by_key(|c| c.cause);
            files.push(FileDiff {
                path: format!("/{p}"),
                changes: kept,
            });
        }
    }
    files.sort_by(|x, y| x.changes[0].cause.cmp(&y.changes[0].cause));
    let order = order_diff(a, b);
    let order = match order {
        Some(_) if ignored(Cause::Order) => {
            *ignored_counts.entry(Cause::Order).or_default() += 1;
            None
        }
        o => o,
    };
    (files, order)
}

/// Whether the paths both layers hold come in a different order.
fn order_diff(a: &LayerSummary, b: &LayerSummary) -> Option<OrderDiff> {
    let common = |x: &LayerSummary, y: &LayerSummary| -> Vec<String> {
        x.order
            .iter()
            .filter(|p| y.entries.contains_key(*p))
            .cloned()
            .collect()
    };
    let (ca, cb) = (common(a, b), common(b, a));
    let i = ca.iter().zip(&cb).position(|(x, y)| x != y)?;
    Some(OrderDiff {
        common_paths: ca.len(),
        same_set: a.entries.len() == b.entries.len() && ca.len() == a.entries.len(),
        first_at: i,
        a: format!("/{}", ca[i]),
        b: format!("/{}", cb[i]),
    })
}

/// Looks into the files whose content differs ([`content::inspect`]: archives opened, text
/// diffs, first binary difference, timestamps), in a second pass over each layer. At most
/// [`DETAIL_PER_LAYER`] files and [`DETAIL_BYTES_PER_LAYER`] bytes a side are read: a file
/// too large gets a note; the layer's notes (returned) count those left out.
pub(crate) fn add_details(
    files: &mut [FileDiff],
    la: &LayerRef,
    lb: &LayerRef,
    a: &LayerSummary,
    b: &LayerSummary,
) -> Result<Vec<String>, DiffError> {
    let mut want = HashSet::new();
    let mut bytes = 0u64;
    let (mut too_large, mut past_count, mut past_bytes) = (HashSet::new(), 0, 0);
    for f in files.iter() {
        if !f.changes.iter().any(|c| c.cause == Cause::Content) {
            continue;
        }
        let p = &f.path[1..];
        let size = |s: &LayerSummary| s.entries.get(p).map_or(0, |e| e.size);
        let largest = size(a).max(size(b));
        if largest > content::MEMBER_MAX {
            too_large.insert(f.path.clone());
        } else if want.len() == DETAIL_PER_LAYER {
            past_count += 1;
        } else if bytes + largest > DETAIL_BYTES_PER_LAYER {
            past_bytes += 1;
        } else {
            bytes += largest;
            want.insert(p.to_string());
        }
    }
    let mut notes = Vec::new();
    if past_count > 0 {
        notes.push(format!(
            "{past_count} more files whose content differs were not looked into (the first {DETAIL_PER_LAYER} of a layer are)"
        ));
    }
    if past_bytes > 0 {
        notes.push(format!(
            "{past_bytes} more files whose content differs were not looked into ({} MiB a side are read per layer)",
            DETAIL_BYTES_PER_LAYER >> 20
        ));
    }
    for f in files.iter_mut().filter(|f| too_large.contains(&f.path)) {
        if let Some(c) = f.changes.iter_mut().find(|c| c.cause == Cause::Content) {
            c.attach(ContentDetail {
                notes: vec![format!(
                    "larger than {} MiB: not read (compared by sha256 only)",
                    content::MEMBER_MAX >> 20
                )],
                ..Default::default()
            });
        }
    }
    if want.is_empty() {
        return Ok(notes);
    }
    let limit = content::MEMBER_MAX;
    let _one_at_a_time = DETAILS.lock().unwrap_or_else(|p| p.into_inner());
    // Plain threads, not rayon: a rayon thread waiting in `join` may run another layer's
    // task, which would wait for this lock on the thread that holds it.
    let (ba, bb) = std::thread::scope(|sc| {
        let a = sc.spawn(|| fetch(la, &want, limit));
        let b = fetch(lb, &want, limit);
        (a.join().expect("fetch does not panic"), b)
    });
    let (ba, bb) = (ba?, bb?);
    let now = content::now();
    for f in files.iter_mut() {
        let p = &f.path[1..];
        let (Some(x), Some(y)) = (ba.get(p), bb.get(p)) else {
            continue;
        };
        if let Some(c) = f.changes.iter_mut().find(|c| c.cause == Cause::Content) {
            c.attach(content::inspect(&f.path, x, y, now));
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod search_tests {
    use super::contains;

    #[test]
    fn contains_finds_needles_anywhere_and_nothing_past_the_end() {
        assert!(contains(b"built 2026-12-02\n", b"2026-12-02"));
        assert!(contains(b"2026-12-02", b"2026-12-02"));
        assert!(contains(b"22026-12-02", b"2026-12-02"));
        assert!(!contains(b"2026-12-0", b"2026-12-02"));
        assert!(!contains(b"2026-12-03 2026-11-02", b"2026-12-02"));
        assert!(!contains(b"abc", b""));
    }
}
