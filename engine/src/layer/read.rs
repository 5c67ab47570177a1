//! Reading layer blobs safely: the one way strata walks the entries of a layer it did not
//! necessarily write (a base image's, a cache's, its own).
//!
//! - [`decompress_reader`] opens a blob by its media type (gzip, zstd, plain tar), with the
//!   zstd window bounded ([`Limits::zstd_window_log_max`]).
//! - [`LayerReader`] walks the tar stream under [`Limits`] (uncompressed bytes, entry count,
//!   path length: CVE-2023-25153 and decompression bombs), refuses an entry whose PAX `size`
//!   and ustar size disagree ([`check_pax_size`], CVE-2025-62518) or whose path leaves the root
//!   (a `..` component, a NUL byte), hands each entry on with its whiteout classified
//!   ([`super::whiteout`]), and reads the stream to its end so a verifying reader underneath
//!   checks the blob's digest.
//!
//! Its users: snapshots for RUN (`sandbox::snapshot`), delta snapshots (`sandbox::delta`) and
//! the COPY parent view (`solve::layer_tree`). What each does with an entry is its own; what may
//! reach it is decided here. (`strata diff` reads layers as they are, to show them, and ADD's
//! archives are not layers: see [`super::open_archive`].)

use std::cell::Cell;
use std::ffi::OsString;
use std::io::{self, BufRead, Read};
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStringExt;
use std::rc::Rc;

use super::whiteout::{self, Whiteout};
use super::{Compression, LayerError};

/// Largest zstd window accepted when reading (128 MiB, zstd's default limit): bounds the
/// decoder's memory whatever the frame header claims.
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Caps on what one layer may unpack to (CVE-2023-25153: unbounded reads; decompression
/// bombs).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Uncompressed bytes of the layer tar stream (headers, contents, padding and anything
    /// after the end-of-archive marker), and of the file contents it declares.
    pub max_bytes: u64,
    pub max_entries: u64,
    pub max_path_len: usize,
    /// zstd frames may ask for a window of at most `2^zstd_window_log_max` bytes (the
    /// decoder's memory).
    pub zstd_window_log_max: u32,
}

impl Limits {
    /// Checks the `count`th entry of a layer, named `path`, against the entry-count and
    /// path-length limits.
    pub fn admit(&self, count: u64, path: &[u8]) -> Result<(), ReadError> {
        if count > self.max_entries {
            return Err(ReadError::Limit {
                what: "entry count",
                limit: self.max_entries,
            });
        }
        if path.len() > self.max_path_len {
            return Err(ReadError::Limit {
                what: "path length",
                limit: self.max_path_len as u64,
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
            max_path_len: 4096,
            zstd_window_log_max: ZSTD_WINDOW_LOG_MAX,
        }
    }
}

/// Why a layer could not be read. The texts are the ones users have always seen from the
/// snapshot unpacker; each caller adds where (a snapshot directory, a layer digest).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed: decompression, tar framing, or the verifying reader underneath.
    #[error("{0}")]
    Stream(io::Error),
    #[error("layer exceeds the {what} limit of {limit} (a decompression bomb or an unusually large layer)")]
    Limit { what: &'static str, limit: u64 },
    /// An entry's PAX header could not be read.
    #[error("read PAX header of `{path}`: {source}")]
    PaxHeader { path: String, source: io::Error },
    /// CVE-2025-62518: the entry's PAX `size` and ustar size disagree (or are malformed).
    #[error("unsafe layer entry `{path}`: {reason}; readers honouring different size fields would see different entries (CVE-2025-62518), so the layer is refused (hint: rewrite it with a tar that emits consistent headers)")]
    PaxSizeDesync { path: String, reason: String },
    /// A path that would leave the root.
    #[error("unsafe layer entry `{path}`: {reason}")]
    UnsafePath { path: String, reason: &'static str },
}

/// The components of a layer path, refusing what would leave the root: `/`, `.` and empty
/// components are dropped (`/etc//x/./y/` is `etc/x/y`; `.` and `/` are the root, no
/// components), a `..` component or a NUL byte is an error (the reason).
pub fn path_components(path: &[u8]) -> Result<Vec<OsString>, &'static str> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("`..` component"),
            c if c.contains(&0) => return Err("NUL byte in path"),
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

/// Counts the uncompressed bytes read and fails once there are more than `max`.
pub struct Counted<R> {
    inner: R,
    read: u64,
    max: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read = self.read.saturating_add(n as u64);
        if self.read > self.max {
            self.exceeded.set(true);
            return Err(io::Error::other(
                "layer exceeds the uncompressed size limit",
            ));
        }
        Ok(n)
    }
}

/// A layer's uncompressed tar stream, read under [`Limits`] (module docs).
pub struct LayerReader<R: Read> {
    archive: tar::Archive<Counted<R>>,
    limits: Limits,
    exceeded: Rc<Cell<bool>>,
}

/// One entry of a layer, admitted by the checks of [`LayerReader`].
pub struct LayerEntry<'a, R: Read> {
    /// The tar entry; its contents are read through the byte limit.
    pub entry: tar::Entry<'a, Counted<R>>,
    /// The path as the archive gives it (PAX `path` when present).
    pub raw_path: Vec<u8>,
    /// The path's components ([`path_components`]); empty for the root.
    pub components: Vec<OsString>,
}

impl<R: Read> LayerEntry<'_, R> {
    /// The path, lossily decoded, for messages.
    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.raw_path).into_owned()
    }

    /// What the entry's name means as a whiteout, if it is one.
    pub fn whiteout(&self) -> Option<Whiteout<&[u8]>> {
        whiteout::classify(self.components.last()?.as_encoded_bytes())
    }
}

impl<R: Read> LayerReader<R> {
    /// Reads the uncompressed layer tar `tar` under `limits`.
    pub fn new(tar: R, limits: Limits) -> Self {
        let exceeded = Rc::new(Cell::new(false));
        let counted = Counted {
            inner: tar,
            read: 0,
            max: limits.max_bytes,
            exceeded: exceeded.clone(),
        };
        LayerReader {
            archive: tar::Archive::new(counted),
            limits,
            exceeded,
        }
    }

    /// Hands every entry to `each` until it breaks, then reads the rest of the stream
    /// (padding, anything after the end-of-archive marker, still bounded): a verifying reader
    /// underneath reports a digest mismatch here. `read_err` makes the caller's error of a
    /// refusal; any error once the byte limit is passed (even one `each` returns after reading
    /// content) is that limit's.
    pub fn for_each<E>(
        mut self,
        read_err: impl Fn(ReadError) -> E,
        mut each: impl FnMut(LayerEntry<'_, R>) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        let (limits, exceeded) = (self.limits, self.exceeded.clone());
        let over = || ReadError::Limit {
            what: "uncompressed size",
            limit: limits.max_bytes,
        };
        let walked = (|| -> Result<(), E> {
            let stream = |e| read_err(ReadError::Stream(e));
            let mut count = 0u64;
            for entry in self.archive.entries().map_err(stream)? {
                let entry =
                    admit(entry.map_err(stream)?, &limits, &mut count).map_err(&read_err)?;
                if each(entry)?.is_break() {
                    break;
                }
            }
            Ok(())
        })();
        if exceeded.get() {
            return Err(read_err(over()));
        }
        walked?;
        let drained = io::copy(&mut self.archive.into_inner(), &mut io::sink());
        if exceeded.get() {
            return Err(read_err(over()));
        }
        drained
            .map(drop)
            .map_err(|e| read_err(ReadError::Stream(e)))
    }
}

/// The checks every entry passes before its reader sees it, in this order: the entry-count and
/// path-length limits, the PAX size check, the path.
fn admit<'a, R: Read>(
    mut entry: tar::Entry<'a, Counted<R>>,
    limits: &Limits,
    count: &mut u64,
) -> Result<LayerEntry<'a, R>, ReadError> {
    let raw_path = entry.path_bytes().into_owned();
    let shown = || String::from_utf8_lossy(&raw_path).into_owned();
    *count += 1;
    limits.admit(*count, &raw_path)?;
    check_pax_size(&mut entry).map_err(|p| match p {
        PaxSize::Io(source) => ReadError::PaxHeader {
            path: shown(),
            source,
        },
        PaxSize::Desync(reason) => ReadError::PaxSizeDesync {
            path: shown(),
            reason,
        },
    })?;
    let components = path_components(&raw_path).map_err(|reason| ReadError::UnsafePath {
        path: shown(),
        reason,
    })?;
    Ok(LayerEntry {
        entry,
        raw_path,
        components,
    })
}

/// The window size a zstd frame header (`head`, from the frame's magic number on) asks for:
/// the Window_Descriptor, or for a single-segment frame its content size (RFC 8878 §3.1.1.1).
/// `None` if `head` is too short or not a zstd frame.
pub(crate) fn zstd_frame_window(head: &[u8]) -> Option<u64> {
    let rest = head.strip_prefix(&[0x28, 0xb5, 0x2f, 0xfd])?;
    let fhd = *rest.first()?;
    let single_segment = fhd & 0x20 != 0;
    if !single_segment {
        let wd = *rest.get(1)?;
        let log = 10 + u32::from(wd >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(wd & 7));
    }
    let dict_len = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_len = [1, 2, 4, 8][usize::from(fhd >> 6)];
    let fcs = rest.get(1 + dict_len..1 + dict_len + fcs_len)?;
    let mut v = 0u64;
    for (i, b) in fcs.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Some(if fcs_len == 2 { v + 256 } else { v })
}

/// A zstd reader that refuses windows larger than `2^window_log_max`: the first frame's header
/// is checked up front for a clear error; the decoder enforces the limit on every frame.
fn zstd_reader_limited(
    r: Box<dyn Read + Send>,
    media_type: &str,
    window_log_max: u32,
) -> Result<Box<dyn Read + Send>, LayerError> {
    let archive_err = |source| LayerError::Archive {
        path: format!("<{media_type} blob>").into(),
        source,
    };
    let mut br = io::BufReader::new(r);
    let head = br.fill_buf().map_err(archive_err)?;
    if let Some(window) = zstd_frame_window(head) {
        if window > 1u64 << window_log_max {
            return Err(LayerError::ZstdWindow {
                window,
                limit_log: window_log_max,
            });
        }
    }
    let mut d = zstd::stream::read::Decoder::with_buffer(br).map_err(archive_err)?;
    d.window_log_max(window_log_max).map_err(archive_err)?;
    Ok(Box::new(d))
}

/// A reader of the decompressed bytes of a layer blob with the given media type (gzip,
/// including multi-member; zstd, including multi-frame; or plain tar). zstd windows are
/// limited to 2^27 bytes ([`decompress_reader_limited`] takes another limit).
pub fn decompress_reader(
    r: Box<dyn Read + Send>,
    media_type: &str,
) -> Result<Box<dyn Read + Send>, LayerError> {
    decompress_reader_limited(r, media_type, ZSTD_WINDOW_LOG_MAX)
}

/// [`decompress_reader`] with a zstd window limit of `2^zstd_window_log_max` bytes.
pub fn decompress_reader_limited(
    r: Box<dyn Read + Send>,
    media_type: &str,
    zstd_window_log_max: u32,
) -> Result<Box<dyn Read + Send>, LayerError> {
    match Compression::from_media_type(media_type) {
        Some(Compression::Gzip) => Ok(Box::new(flate2::read::MultiGzDecoder::new(r))),
        Some(Compression::Zstd) => zstd_reader_limited(r, media_type, zstd_window_log_max),
        Some(Compression::None) => Ok(r),
        None => Err(LayerError::UnsupportedMediaType(media_type.to_string())),
    }
}

impl LayerReader<Box<dyn Read + Send>> {
    /// Opens the layer blob `blob` with the given media type ([`decompress_reader_limited`]
    /// with the limits' zstd window).
    pub fn open(
        blob: Box<dyn Read + Send>,
        media_type: &str,
        limits: Limits,
    ) -> Result<Self, LayerError> {
        let tar = decompress_reader_limited(blob, media_type, limits.zstd_window_log_max)?;
        Ok(LayerReader::new(tar, limits))
    }
}

/// Largest size a 12-byte octal ustar field holds; a larger file has ustar size 0 and a PAX
/// `size` record (what strata's own writer and Go's `archive/tar` emit).
pub const MAX_USTAR_SIZE: u64 = 0o77777777777;

/// Why an entry's PAX `size` cannot be trusted.
#[derive(Debug)]
pub enum PaxSize {
    /// The PAX header could not be read.
    Io(io::Error),
    /// The sizes disagree (or the record is malformed): the reason.
    Desync(String),
}

/// CVE-2025-62518 (TARmageddon): when a PAX `size` record and the ustar size field disagree,
/// readers that honour different ones split the stream differently, and one of them sees
/// entries hidden in the other's file content. tar-rs honours PAX; strata refuses such a layer
/// wherever it reads one ([`LayerReader`]), so what it reads is what every reader sees. The one
/// accepted difference is ustar size 0 with a PAX size too large for the 12-byte octal field.
pub fn check_pax_size<R: Read>(e: &mut tar::Entry<R>) -> Result<(), PaxSize> {
    let Some(exts) = e.pax_extensions().map_err(PaxSize::Io)? else {
        return Ok(());
    };
    let mut sizes = Vec::new();
    for ext in exts {
        let ext = ext.map_err(PaxSize::Io)?;
        if ext.key_bytes() == b"size" {
            sizes.push(ext.value_bytes().to_vec());
        }
    }
    let pax = match sizes.as_slice() {
        [] => return Ok(()),
        [one] => one,
        _ => {
            return Err(PaxSize::Desync(format!(
                "{} PAX `size` records",
                sizes.len()
            )))
        }
    };
    let pax = std::str::from_utf8(pax)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            PaxSize::Desync(format!(
                "PAX `size` record `{}` is not a number",
                String::from_utf8_lossy(pax)
            ))
        })?;
    let ustar = e
        .header()
        .entry_size()
        .map_err(|_| PaxSize::Desync("the ustar size field is not a number".into()))?;
    if pax != ustar && !(ustar == 0 && pax > MAX_USTAR_SIZE) {
        return Err(PaxSize::Desync(format!(
            "PAX `size` {pax} disagrees with the ustar header size {ustar}"
        )));
    }
    Ok(())
}

/// Hashes what it reads: the uncompressed tar stream, whose sha256 is the layer's diff_id.
pub struct DiffIdTee<R> {
    inner: R,
    sha: Rc<std::cell::RefCell<strata_cache::Sha256Hasher>>,
}

impl<R: Read> Read for DiffIdTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// The reader [`for_each_with_diff_id`] hands its entries from.
pub type HashedStream = DiffIdTee<super::ReadAhead>;

/// Reads the compressed layer `blob` (of `media_type`) under `limits` as [`LayerReader::for_each`]
/// does, inflating on a second thread ([`super::ReadAhead`]) while `each` runs, and returns the
/// sha256 of the tar stream: the diff_id the layer really has, for the caller to compare with
/// the one it was given. What is derived from a layer and kept by diff_id (the read-set index,
/// the SBOM scan) is checked this way, so it is sound wherever the blob's bytes came from.
pub fn for_each_with_diff_id<E>(
    blob: Box<dyn Read + Send>,
    media_type: &str,
    limits: Limits,
    open_err: impl FnOnce(LayerError) -> E,
    read_err: impl Fn(ReadError) -> E,
    each: impl FnMut(LayerEntry<'_, HashedStream>) -> Result<ControlFlow<()>, E>,
) -> Result<strata_cache::Digest, E> {
    let tar = match decompress_reader_limited(blob, media_type, limits.zstd_window_log_max) {
        Ok(t) => t,
        Err(e) => return Err(open_err(e)),
    };
    let tar = super::ReadAhead::new(tar).map_err(|e| read_err(ReadError::Stream(e)))?;
    let sha = Rc::new(std::cell::RefCell::new(strata_cache::Sha256Hasher::new()));
    let tee = DiffIdTee {
        inner: tar,
        sha: sha.clone(),
    };
    LayerReader::new(tee, limits).for_each(read_err, each)?;
    Ok(sha.replace(strata_cache::Sha256Hasher::new()).finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Cursor;
    use std::path::Path;

    /// The committed CVE-2025-62518 layers: the shared check refuses both directions.
    #[test]
    fn pax_size_desync_layers_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/malicious");
        for f in ["pax-size-larger.tar", "pax-size-smaller.tar"] {
            let mut ar = tar::Archive::new(File::open(dir.join(f)).unwrap());
            let mut refused = None;
            for e in ar.entries().unwrap() {
                let Ok(mut e) = e else { break };
                if let Err(PaxSize::Desync(reason)) = check_pax_size(&mut e) {
                    refused = Some(reason);
                    break;
                }
            }
            let reason = refused.unwrap_or_else(|| panic!("{f}: not refused"));
            assert!(
                reason.contains("disagrees with the ustar header size"),
                "{f}: {reason}"
            );
            // And through the reader every caller uses.
            let r = LayerReader::new(File::open(dir.join(f)).unwrap(), Limits::default());
            let err = r
                .for_each(|e| e, |_| Ok(ControlFlow::Continue(())))
                .unwrap_err();
            assert!(matches!(err, ReadError::PaxSizeDesync { .. }), "{f}: {err}");
        }
        // strata's own form for files over the ustar limit is accepted.
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path("big").unwrap();
        h.set_cksum();
        let big = (MAX_USTAR_SIZE + 1).to_string();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", big.as_bytes())]).unwrap();
        b.append(&h, std::io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        assert!(check_pax_size(&mut e).is_ok());
    }

    #[test]
    fn reads_our_own_layers_by_media_type() {
        use crate::layer::{write_layer, Entry};
        let entries = vec![Entry::file_bytes("f", 0o644, 0, b"content")];
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut blob = Vec::new();
            write_layer(&entries, c, &mut blob).unwrap();
            let r = decompress_reader(Box::new(Cursor::new(blob)), c.media_type()).unwrap();
            let mut a = tar::Archive::new(r);
            let mut e = a.entries().unwrap().next().unwrap().unwrap();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            assert_eq!(s, "content");
        }
        assert!(matches!(
            decompress_reader(Box::new(io::empty()), "application/x-foo"),
            Err(LayerError::UnsupportedMediaType(_))
        ));
    }

    fn tar_of(paths: &[&str]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for p in paths {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            // `set_path` refuses `..`: write the name field directly.
            h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn walk(tar: &[u8], limits: Limits) -> Result<Vec<(String, bool)>, ReadError> {
        let mut seen = Vec::new();
        LayerReader::new(tar, limits).for_each(
            |e| e,
            |e| {
                seen.push((e.shown(), e.whiteout().is_some()));
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(seen)
    }

    #[test]
    fn entries_are_admitted_by_limits_and_path_and_classified() {
        let tar = tar_of(&["a", "./d/.wh.x", "d/.wh..wh..opq"]);
        assert_eq!(
            walk(&tar, Limits::default()).unwrap(),
            [
                ("a".to_string(), false),
                ("./d/.wh.x".to_string(), true),
                ("d/.wh..wh..opq".to_string(), true)
            ]
        );
        let two = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let err = walk(&tar, two).unwrap_err();
        assert_eq!(
            err.to_string(),
            "layer exceeds the entry count limit of 2 (a decompression bomb or an unusually large layer)"
        );
        let small = Limits {
            max_bytes: 1024,
            ..Limits::default()
        };
        assert!(matches!(
            walk(&tar, small).unwrap_err(),
            ReadError::Limit {
                what: "uncompressed size",
                ..
            }
        ));
        let err = walk(&tar_of(&["a/../../b"]), Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsafe layer entry `a/../../b`: `..` component"
        );
    }

    #[test]
    fn components_drop_roots_and_refuse_dotdot_and_nul() {
        let c = |p: &[u8]| path_components(p);
        assert_eq!(c(b"/etc//x/./y/").unwrap(), ["etc", "x", "y"]);
        assert_eq!(c(b"./a").unwrap(), ["a"]);
        assert!(c(b".").unwrap().is_empty());
        assert!(c(b"a/../b").is_err());
        assert!(c(b"../escape").is_err());
        assert_eq!(c(b"a\0b"), Err("NUL byte in path"));
    }
}
