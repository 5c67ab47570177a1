//! `BlobStore`: content-addressed blobs under `<root>/blobs/sha256/<hex>`.
//!
//! The layout is the OCI image-layout one, so an export can hard-link blobs straight into an
//! `oci-layout` directory. Every write goes through a [`BlobWriter`]: the bytes are hashed while
//! they are written to a temporary file in `<root>/tmp` (same file system, so the final rename
//! is atomic), then the file is fsynced, renamed to its digest and the directory fsynced. A
//! reader therefore either sees a complete blob or none at all.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, StoreError};
use crate::{Digest, Sha256Hasher};

/// Blobs addressed by their sha256. Cloning gives a second handle on the same blobs (and the same
/// scratch directory): safe, every write is a temp file renamed into place.
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// `<root>/blobs/sha256`
    dir: PathBuf,
    /// `<root>/tmp`
    tmp: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl BlobStore {
    /// Creates the directories if needed.
    #[cfg_attr(not(feature = "index"), allow(dead_code))]
    pub(crate) fn new(root: &Path) -> Result<BlobStore, StoreError> {
        let dir = crate::Area::Blobs.path(root);
        let tmp = crate::Area::Tmp.path(root);
        fs::create_dir_all(&dir).at("create directory", &dir)?;
        fs::create_dir_all(&tmp).at("create directory", &tmp)?;
        Ok(BlobStore { dir, tmp })
    }

    /// Temporary files go to `tmp` instead (a store handle's scratch directory; it must be on
    /// the same file system as the blobs).
    #[cfg_attr(not(feature = "index"), allow(dead_code))]
    pub(crate) fn with_tmp(mut self, tmp: &Path) -> BlobStore {
        self.tmp = tmp.to_path_buf();
        self
    }

    /// Where the blob `d` lives (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    /// Whether the blob is present. Does not verify its content.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// A writer to a fresh temporary file; nothing is visible until [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .tmp
            .join(format!("blob-{}-{n}-{nanos}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .at("create temporary file", &temp)?;
        Ok(BlobWriter {
            file: Some(file),
            block: Aligned::with_capacity(DIRECT_BLOCK),
            direct: Direct::Untried,
            hasher: Sha256Hasher::new(),
            size: 0,
            flushing_from: 0,
            failed: false,
            temp,
            dir: self.dir.clone(),
        })
    }

    /// Stores `bytes`, returning their digest and size.
    pub fn put(&self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        // Every build puts its config and manifest; when they are already stored (a cached
        // rebuild), skip the temp file and its fsync.
        let digest = Digest::of(bytes);
        let dest = self.path(&digest);
        if dest.is_file() {
            touch(&dest);
            return Ok((digest, bytes.len() as u64));
        }
        let mut w = self.writer()?;
        w.write_all(bytes).at("write", w.temp.clone())?;
        w.commit()
    }

    /// Reads a whole (small) blob and checks its digest. Meant for JSON (manifests, configs);
    /// use [`BlobStore::open`] for layers.
    pub fn read_verified(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path(d);
        let bytes = fs::read(&path).at("read blob", &path)?;
        let found = Digest::of(&bytes);
        if found != *d {
            return Err(StoreError::DigestMismatch {
                expected: *d,
                found,
                path,
            });
        }
        Ok(bytes)
    }

    /// A streaming reader of blob `d` that fails at end of file if the content does not hash
    /// to `d` (or, with [`VerifyingReader::expect_size`], has the wrong length).
    pub fn open(&self, d: &Digest) -> Result<VerifyingReader, StoreError> {
        let path = self.path(d);
        let file = File::open(&path).at("open blob", &path)?;
        Ok(VerifyingReader {
            inner: file,
            hasher: Some(Sha256Hasher::new()),
            failed: None,
            expected: *d,
            expected_size: None,
            size: 0,
            path,
        })
    }

    /// Copies the file at `path` into the store, hashing it on the way, and returns its digest
    /// and size. With `expected`, a mismatch is an error and nothing is stored.
    ///
    /// On file systems that support it (btrfs, XFS) the data is reflinked (`FICLONE`) rather
    /// than copied, then re-hashed from the clone. We never hard-link the source: it is a file
    /// the caller still owns, and a later in-place write to it would silently change a blob
    /// that is addressed by its old content.
    pub fn import_file(
        &self,
        path: &Path,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        let mut src = File::open(path).at("open", path)?;
        let mut w = self.writer()?;
        let cloned = {
            let dst = w.file.as_ref().expect("writer is live");
            rustix::fs::ioctl_ficlone(dst, &src).is_ok()
        };
        if cloned {
            // Hash what is now in the temp file: that is exactly what will be committed.
            let mut clone = File::open(&w.temp).at("open", w.temp.clone())?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = clone.read(&mut buf).at("read", w.temp.clone())?;
                if n == 0 {
                    break;
                }
                w.hasher.update(&buf[..n]);
                w.size += n as u64;
            }
        } else {
            io::copy(&mut src, &mut w).at("copy into the store", path)?;
        }
        match expected {
            Some(e) => w.commit_verified(e).map(|size| (*e, size)),
            None => w.commit(),
        }
    }
}

/// Writes one blob: hashes as it goes, into a temporary file, in blocks of [`DIRECT_BLOCK`].
/// Dropping it without [`commit`](BlobWriter::commit) removes the temporary file.
///
/// Full blocks are written with `O_DIRECT` where the file system takes it: the bytes go from
/// our buffer to the disk without a page-cache copy. On VMs that hand freed guest memory back
/// to the host (virtio-balloon free page reporting), every page-cache page of a new file is a
/// host fault: a 600 MB layer cost 1.8 s of CPU written through the cache and 0.1–0.2 s
/// written directly. A blob shorter than one block, the tail of a blob, and every block on a
/// file system without `O_DIRECT` (tmpfs before Linux 6.6, some network file systems) are
/// written through the page cache.
pub struct BlobWriter {
    file: Option<File>,
    /// The next block, up to [`DIRECT_BLOCK`] bytes.
    block: Aligned,
    direct: Direct,
    hasher: Sha256Hasher,
    size: u64,
    /// Writeback of the file up to here has been started ([`DIRECT_BLOCK`]; buffered writes).
    flushing_from: u64,
    /// A write failed: the file no longer matches `hasher`/`size`, so every later write fails
    /// too (and Drop removes the file).
    failed: bool,
    temp: PathBuf,
    dir: PathBuf,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the 8 MiB block.
        f.debug_struct("BlobWriter")
            .field("temp", &self.temp)
            .field("size", &self.size)
            .field("filled", &self.block.len())
            .field("direct", &self.direct)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Whether the temp file is written with `O_DIRECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    /// No full block written yet.
    Untried,
    On,
    /// Not supported here (or failed once): every write goes through the page cache.
    Off,
}

/// A blob is written in blocks of this many bytes. Written through the page cache, each block
/// is handed to the disk as it is written (`sync_file_range`), so the fsync at commit finds
/// little left to write.
const DIRECT_BLOCK: usize = 8 << 20;
/// Buffer address, file offset and length alignment of an `O_DIRECT` write (the largest
/// logical block size in use).
const DIRECT_ALIGN: usize = 4096;

/// Bytes at an address aligned to [`DIRECT_ALIGN`], as `O_DIRECT` needs (a `Vec` with room to
/// align, so no unsafe code). The capacity is reserved, not zeroed: a page is touched only
/// when bytes are put in it, so a small blob's writer costs one page, not the whole block.
struct Aligned {
    buf: Vec<u8>,
    /// Where the aligned bytes start in `buf` (the padding before them is zeros).
    start: usize,
}

impl Aligned {
    fn with_capacity(n: usize) -> Self {
        let mut buf = Vec::<u8>::with_capacity(n + DIRECT_ALIGN);
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        buf.resize(start, 0);
        Aligned { buf, start }
    }

    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Within the capacity asked for (else the buffer would move and lose its alignment).
    fn extend(&mut self, bytes: &[u8]) {
        assert!(
            self.buf.len() + bytes.len() <= self.buf.capacity(),
            "an aligned buffer never grows"
        );
        self.buf.extend_from_slice(bytes);
    }

    fn clear(&mut self) {
        self.buf.truncate(self.start);
    }
}

/// `len` bytes at `offset` of the file at `path` (a blob; a layer's chunk). Read with
/// `O_DIRECT` where the file system takes it — the aligned range around them, into an aligned
/// buffer — because the store writes large blobs past the page cache: filling the cache to
/// read a chunk once would cost as much CPU as [`BlobWriter`] saved. Otherwise a plain read.
pub fn read_range(path: impl AsRef<Path>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let path = path.as_ref();
    if let Some(bytes) = read_range_direct(path, offset, len) {
        return Ok(bytes);
    }
    let mut body = vec![0; len];
    File::open(path)?.read_exact_at(&mut body, offset)?;
    Ok(body)
}

/// [`read_range`] with `O_DIRECT`, or `None` where that does not work.
fn read_range_direct(path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let align = DIRECT_ALIGN as u64;
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()?;
        let from = offset / align * align;
        let span = ((offset + len as u64).div_ceil(align) * align - from) as usize;
        let mut a = Aligned::with_capacity(span);
        a.buf.resize(a.start + span, 0);
        // The last block may be short (end of file): read what there is.
        let mut got = 0;
        while got < span {
            match f.read_at(&mut a.buf[a.start + got..], from + got as u64) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    // A short read is the end of the file: reading on would be unaligned.
                    if n % DIRECT_ALIGN != 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let head = (offset - from) as usize;
        if got < head + len {
            return None;
        }
        let at = a.start + head;
        let mut bytes = a.buf;
        bytes.copy_within(at..at + len, 0);
        bytes.truncate(len);
        Some(bytes)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, offset, len);
        None
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("an earlier write of this blob failed"));
        }
        let n = buf.len().min(DIRECT_BLOCK - self.block.len());
        self.block.extend(&buf[..n]);
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if self.block.len() == DIRECT_BLOCK {
            if let Err(e) = self.write_block() {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(n)
    }

    /// Nothing to do: the buffered bytes reach the file at [`commit`](BlobWriter::commit),
    /// the only point where the file becomes visible. (Writing a partial block here would
    /// misalign every later `O_DIRECT` write.)
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The sha256 of the bytes written so far: the digest [`commit`](BlobWriter::commit) will
    /// store the blob under. A producer that needs the digest before committing asks here
    /// instead of hashing the same bytes a second time.
    pub fn sha256(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// Makes the blob durable and visible under its digest.
    pub fn commit(mut self) -> Result<(Digest, u64), StoreError> {
        let digest = self.finish()?;
        self.place(&digest)?;
        Ok((digest, self.size))
    }

    /// Like [`commit`](BlobWriter::commit), but stores nothing unless the content hashes to
    /// `expected`.
    pub fn commit_verified(mut self, expected: &Digest) -> Result<u64, StoreError> {
        let found = self.finish()?;
        if found != *expected {
            // Drop removes the temp file.
            return Err(StoreError::DigestMismatch {
                expected: *expected,
                found,
                path: self.temp.clone(),
            });
        }
        self.place(&found)?;
        Ok(self.size)
    }

    /// Writes the full block: directly when the file system allows it, else through the page
    /// cache with writeback started.
    fn write_block(&mut self) -> io::Result<()> {
        let file = self.file.as_mut().expect("writer is live until commit");
        let data = self.block.data();
        let full = data.len() == DIRECT_BLOCK;
        // Tried on the first full block: a blob shorter than one never pays the two fcntls.
        if self.direct == Direct::Untried && full {
            self.direct = if set_direct(file, true) {
                Direct::On
            } else {
                Direct::Off
            };
        }
        // Full blocks only, so the file offset stays aligned.
        if self.direct == Direct::On && full {
            match file.write_all(data) {
                Ok(()) => {
                    self.block.clear();
                    return Ok(());
                }
                // A file system that accepted the flag but not this write (alignment): a short
                // direct write leaves the offset where it stopped, so seek back to the block.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    use std::io::Seek;
                    let at = self.size - data.len() as u64;
                    file.seek(io::SeekFrom::Start(at))?;
                    set_direct(file, false);
                    self.direct = Direct::Off;
                }
                Err(e) => return Err(e),
            }
        }
        if self.direct == Direct::On {
            // The tail of the blob: not a multiple of the alignment.
            set_direct(file, false);
            self.direct = Direct::Off;
        }
        file.write_all(data)?;
        self.block.clear();
        let written = self.size;
        if written - self.flushing_from >= DIRECT_BLOCK as u64 {
            start_writeback(file, self.flushing_from, written - self.flushing_from);
            self.flushing_from = written;
        }
        Ok(())
    }

    /// Writes the last partial block and fsyncs the temp file; returns the digest.
    fn finish(&mut self) -> Result<Digest, StoreError> {
        if self.failed {
            return Err(io::Error::other("an earlier write of this blob failed"))
                .at("write", self.temp.clone());
        }
        if self.block.len() > 0 {
            self.write_block().at("write", self.temp.clone())?;
        }
        let file = self.file.take().expect("finish is called once");
        file.sync_all().at("fsync", self.temp.clone())?;
        Ok(std::mem::take(&mut self.hasher).finish())
    }

    fn place(&mut self, digest: &Digest) -> Result<(), StoreError> {
        let dest = self.dir.join(digest.hex());
        // Same content is already there: Drop removes our copy. Refresh its mtime instead: gc
        // deletes an unreferenced blob only once it is old (gc::MIN_BLOB_AGE), and this one is
        // about to be referenced again. gc (perhaps in another process) moves a blob away
        // before it checks the age for the last time, so either it sees our refresh and puts
        // the blob back, or the refresh finds no file and we place ours. Best effort otherwise:
        // a read-only store still works.
        if touch(&dest) {
            return Ok(());
        }
        fs::rename(&self.temp, &dest).at("rename into the store", &dest)?;
        // Renamed: nothing left for Drop to clean up.
        self.temp = PathBuf::new();
        // The rename is only durable once the directory entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .at("fsync directory", &self.dir)?;
        Ok(())
    }
}

/// Turns `O_DIRECT` on or off for `file`; whether that worked (not every file system takes it).
fn set_direct(file: &File, on: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::OFlags;
        let Ok(flags) = rustix::fs::fcntl_getfl(file) else {
            return false;
        };
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        rustix::fs::fcntl_setfl(file, flags).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        false
    }
}

/// Starts writing `len` bytes at `offset` of `file` to the disk without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Only a head start for the fsync that makes the
/// blob durable, so failures are ignored.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a descriptor we own; it reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Reads a blob while hashing it; the read that reaches end of file returns
/// `io::ErrorKind::InvalidData` if the digest (or expected size) does not match, so a consumer
/// that reads to the end (tar, decompressors, `io::copy`) cannot miss corruption.
#[derive(Debug)]
pub struct VerifyingReader {
    inner: File,
    /// `None` once verified at end of file.
    hasher: Option<Sha256Hasher>,
    /// Set when verification failed; every later read repeats the error, so a consumer that
    /// retries cannot mistake corruption for a clean end of file.
    failed: Option<String>,
    expected: Digest,
    expected_size: Option<u64>,
    size: u64,
    path: PathBuf,
}

impl VerifyingReader {
    /// Also require the blob to be exactly `size` bytes (as a descriptor says). Reading past
    /// `size` fails immediately rather than at end of file.
    pub fn expect_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn invalid(&mut self, what: String) -> io::Error {
        let msg = format!("blob `{}`: {what}", self.path.display());
        self.failed = Some(msg.clone());
        self.hasher = None;
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone()));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(n);
        };
        hasher.update(&buf[..n]);
        self.size += n as u64;
        if let Some(want) = self.expected_size {
            if self.size > want {
                return Err(self.invalid(format!("larger than the expected {want} bytes")));
            }
        }
        if n == 0 {
            let found = self.hasher.take().expect("checked above").finish();
            let size = self.size;
            if let Some(want) = self.expected_size {
                if size != want {
                    return Err(self.invalid(format!(
                        "size {size} does not match the expected {want} bytes"
                    )));
                }
            }
            if found != self.expected {
                let expected = self.expected;
                return Err(self.invalid(format!(
                    "digest mismatch: expected {expected}, found {found}"
                )));
            }
        }
        Ok(n)
    }
}

/// Refreshes a stored blob's mtime: gc deletes an unreferenced blob only once it is old
/// (gc::MIN_BLOB_AGE), and this one is about to be referenced again. Best effort: a read-only
/// store still works.
/// Sets `path`'s mtime to now; `false` only if there is no such file.
fn touch(path: &Path) -> bool {
    match File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        _ => path.is_file(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path()).unwrap();
        (dir, blobs)
    }

    fn temp_files(dir: &Path) -> usize {
        fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    /// Pieces of odd sizes, some larger than a block, written to the store in `dir`: the
    /// blob is exact, and written directly exactly when the file system takes `O_DIRECT`
    /// (unless `buffered` forces the page-cache path, which a file system without O_DIRECT
    /// takes).
    fn write_in_odd_pieces(dir: &Path, buffered: bool) {
        let blobs = BlobStore::new(dir).unwrap();
        let probe = File::create(dir.join("probe")).unwrap();
        let direct_works = set_direct(&probe, true) && !buffered;
        let data: Vec<u8> = (0..(2 * DIRECT_BLOCK + 12345) as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut w = blobs.writer().unwrap();
        if buffered {
            w.direct = Direct::Off;
        }
        let mut rest = &data[..];
        for n in [1usize, 4095, 300 << 10, 5 << 20, 17].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*n).min(rest.len()));
            w.write_all(piece).unwrap();
            rest = tail;
        }
        if direct_works {
            assert_eq!(w.direct, Direct::On, "full blocks bypass the page cache");
        } else {
            assert_eq!(w.direct, Direct::Off);
            assert!(
                w.flushing_from >= DIRECT_BLOCK as u64,
                "writeback was started"
            );
        }
        let (d, size) = w.commit().unwrap();
        assert_eq!((d, size), (Digest::of(&data), data.len() as u64));
        assert_eq!(blobs.read_verified(&d).unwrap(), data);
        assert_eq!(temp_files(dir), 0);
    }

    #[test]
    fn a_blob_of_several_blocks_is_stored_exactly_direct() {
        // The test's temp dir: a disk file system here (ext4), where O_DIRECT is used.
        let dir = tempfile::tempdir().unwrap();
        write_in_odd_pieces(dir.path(), false);
    }

    #[test]
    fn a_blob_of_several_blocks_is_stored_exactly_through_the_page_cache() {
        // The path of a file system without O_DIRECT (tmpfs before Linux 6.6).
        let dir = tempfile::tempdir().unwrap();
        write_in_odd_pieces(dir.path(), true);
    }

    /// Direct reads of unaligned ranges give the same bytes as plain reads, up to the end of
    /// the file; a range past the end is refused.
    #[test]
    fn direct_reads_of_unaligned_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        for (off, len) in [
            (0, 1),
            (1, 4095),
            (4095, 2),
            (4096, 4096),
            (12345, 50_000),
            (99_000, 1000),
        ] {
            if let Some(got) = read_range_direct(&path, off as u64, len) {
                assert_eq!(got, &data[off..off + len], "{off}+{len}");
            }
            // With or without O_DIRECT.
            let got = read_range(&path, off as u64, len).unwrap();
            assert_eq!(got, &data[off..off + len], "{off}+{len}");
        }
        assert_eq!(read_range_direct(&path, 99_500, 1000), None);
        assert!(read_range(&path, 99_500, 1000).is_err());
    }

    /// After a failed write the writer refuses more bytes and commits nothing.
    #[test]
    fn a_failed_writer_stays_failed() {
        let (dir, blobs) = store();
        let mut w = blobs.writer().unwrap();
        w.write_all(b"abc").unwrap();
        w.failed = true;
        assert!(w.write_all(b"def").is_err());
        assert!(w.commit().is_err());
        assert_eq!(temp_files(dir.path()), 0);
        assert!(
            format!("{:?}", blobs.writer().unwrap()).len() < 300,
            "Debug skips the block"
        );
    }

    /// A blob of exactly one block, and one of a block and one byte: the boundaries of the
    /// direct path (a full block written at commit; a tail after a direct block).
    #[test]
    fn block_boundaries() {
        let (dir, blobs) = store();
        for len in [DIRECT_BLOCK, DIRECT_BLOCK + 1, DIRECT_ALIGN, 0] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut w = blobs.writer().unwrap();
            w.write_all(&data).unwrap();
            let (d, size) = w.commit().unwrap();
            assert_eq!((d, size), (Digest::of(&data), len as u64), "{len}");
            assert_eq!(blobs.read_verified(&d).unwrap(), data, "{len}");
        }
        assert_eq!(temp_files(dir.path()), 0);
    }

    fn flip_byte(path: &Path, at: usize) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at] ^= 0x01;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn put_then_read_round_trips() {
        let (dir, blobs) = store();
        let (d, size) = blobs.put(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(size, 5);
        assert!(blobs.contains(&d));
        assert_eq!(
            blobs.path(&d),
            dir.path().join("blobs/sha256").join(d.hex())
        );
        assert_eq!(blobs.read_verified(&d).unwrap(), b"hello");
        let mut streamed = Vec::new();
        blobs.open(&d).unwrap().read_to_end(&mut streamed).unwrap();
        assert_eq!(streamed, b"hello");
        // Storing the same content again is fine and leaves no temp file behind.
        assert_eq!(blobs.put(b"hello").unwrap(), (d, 5));
        assert_eq!(temp_files(dir.path()), 0);
        assert!(!blobs.contains(&Digest::of(b"other")));
    }

    #[test]
    fn dropped_writer_leaves_nothing_visible() {
        let (dir, blobs) = store();
        let mut w = blobs.writer().unwrap();
        w.write_all(b"partial").unwrap();
        w.flush().unwrap();
        assert_eq!(temp_files(dir.path()), 1);
        drop(w);
        assert_eq!(temp_files(dir.path()), 0);
        assert!(!blobs.contains(&Digest::of(b"partial")));
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn commit_verified_mismatch_stores_nothing() {
        let (dir, blobs) = store();
        let mut w = blobs.writer().unwrap();
        w.write_all(b"actual").unwrap();
        let expected = Digest::of(b"claimed");
        match w.commit_verified(&expected) {
            Err(StoreError::DigestMismatch {
                expected: e, found, ..
            }) => {
                assert_eq!(e, expected);
                assert_eq!(found, Digest::of(b"actual"));
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        assert!(!blobs.contains(&expected));
        assert!(!blobs.contains(&Digest::of(b"actual")));
        assert_eq!(temp_files(dir.path()), 0);

        let mut w = blobs.writer().unwrap();
        w.write_all(b"actual").unwrap();
        assert_eq!(w.commit_verified(&Digest::of(b"actual")).unwrap(), 6);
    }

    #[test]
    fn read_verified_detects_a_flipped_byte() {
        let (_dir, blobs) = store();
        let (d, _) = blobs.put(b"{\"config\":true}").unwrap();
        flip_byte(&blobs.path(&d), 3);
        match blobs.read_verified(&d) {
            Err(StoreError::DigestMismatch { expected, path, .. }) => {
                assert_eq!(expected, d);
                assert_eq!(path, blobs.path(&d));
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
    }

    #[test]
    fn verifying_reader_fails_at_eof_on_corruption() {
        let (_dir, blobs) = store();
        let data = vec![7u8; 300_000];
        let (d, _) = blobs.put(&data).unwrap();
        flip_byte(&blobs.path(&d), 150_000);
        let mut r = blobs.open(&d).unwrap();
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        // A retry must not look like a clean end of file.
        assert!(r.read(&mut [0u8; 16]).is_err());

        // Size checks: a good blob with the wrong declared size fails too.
        let (good, _) = blobs.put(b"abc").unwrap();
        let mut buf = Vec::new();
        let err = blobs
            .open(&good)
            .unwrap()
            .expect_size(2)
            .read_to_end(&mut buf)
            .unwrap_err();
        assert!(err.to_string().contains("expected 2 bytes"), "{err}");
        let err = blobs
            .open(&good)
            .unwrap()
            .expect_size(4)
            .read_to_end(&mut buf)
            .unwrap_err();
        assert!(err.to_string().contains("size 3"), "{err}");
        let mut buf = Vec::new();
        blobs
            .open(&good)
            .unwrap()
            .expect_size(3)
            .read_to_end(&mut buf)
            .unwrap();
        assert_eq!(buf, b"abc");
    }

    #[test]
    fn import_file_verifies_and_copies() {
        let (dir, blobs) = store();
        let src = dir.path().join("layer.tar");
        fs::write(&src, b"layer bytes").unwrap();
        let d = Digest::of(b"layer bytes");
        assert_eq!(blobs.import_file(&src, None).unwrap(), (d, 11));
        assert_eq!(blobs.import_file(&src, Some(&d)).unwrap(), (d, 11));
        // The blob is its own file: changing the source later does not change the blob.
        fs::write(&src, b"LAYER BYTES").unwrap();
        assert_eq!(blobs.read_verified(&d).unwrap(), b"layer bytes");
        let err = blobs.import_file(&src, Some(&d)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!blobs.contains(&Digest::of(b"LAYER BYTES")));
        assert_eq!(temp_files(dir.path()), 0);
    }
}
