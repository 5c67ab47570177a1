//! Reading archives (ADD's auto-extraction) and layer blobs.

use std::fs::File;
use std::io::{self, BufRead, Cursor, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::tar::BLOCK;
use super::{Compression, LayerError};

/// Largest zstd window accepted when reading (128 MiB, zstd's default limit): bounds the
/// decoder's memory whatever the frame header claims.
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 27;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Magic {
    Gzip,
    Zstd,
    Bzip2,
    Xz,
    Plain,
}

fn detect(head: &[u8]) -> Magic {
    if head.starts_with(&[0x1f, 0x8b]) {
        Magic::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Magic::Zstd
    } else if head.starts_with(b"BZh") {
        Magic::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Magic::Xz
    } else {
        Magic::Plain
    }
}

fn zstd_reader(r: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let mut d = zstd::stream::read::Decoder::new(r)?;
    d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    Ok(Box::new(d))
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

/// Whether `block` is a plausible tar header: not all zeros, and its checksum verifies
/// (unsigned or, as some old writers did, signed sum).
fn is_tar_header(block: &[u8; BLOCK]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Ok(s) = std::str::from_utf8(&digits) else {
        return false;
    };
    let Ok(stored) = u64::from_str_radix(s, 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Opens a possibly compressed tar archive: gzip, zstd, bzip2, xz or plain tar, detected by
/// magic bytes. Returns `Ok(None)` when the file is not a tar archive in any of these forms
/// (its first 512 decompressed bytes are not a valid tar header) — ADD then copies it as is,
/// as Docker does. The file is opened with `O_NOFOLLOW`. Errors are reserved for failing to
/// open/read the file itself.
pub fn open_archive(path: &Path) -> Result<Option<tar::Archive<Box<dyn Read + Send>>>, LayerError> {
    let err = |source| LayerError::Archive {
        path: path.into(),
        source,
    };
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(err)?;
    if !f.metadata().map_err(err)?.is_file() {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    f.seek(SeekFrom::Start(0)).map_err(err)?;
    let file: Box<dyn Read + Send> = Box::new(io::BufReader::with_capacity(1 << 16, f));
    let mut reader: Box<dyn Read + Send> = match detect(&head[..n]) {
        Magic::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Magic::Zstd => match zstd_reader(file) {
            Ok(r) => r,
            Err(_) => return Ok(None),
        },
        Magic::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        Magic::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(file)),
        Magic::Plain => file,
    };
    let mut block = [0u8; BLOCK];
    // A decoding error or a short stream means "not an archive", not a failure.
    if reader.read_exact(&mut block).is_err() || !is_tar_header(&block) {
        return Ok(None);
    }
    let chained: Box<dyn Read + Send> = Box::new(Cursor::new(block).chain(reader));
    Ok(Some(tar::Archive::new(chained)))
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
/// wherever it reads one (snapshots for RUN, the read-only view COPY uses), so what it reads is
/// what every reader sees. The one accepted difference is ustar size 0 with a PAX size too large
/// for the 12-byte octal field.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The committed CVE-2025-62518 layers: the shared check (used by the snapshot unpacker and
    /// by the read-only view COPY reads base layers through) refuses both directions.
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

    fn sh(script: &str, dir: &Path) {
        let st = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    }

    fn names(a: Option<tar::Archive<Box<dyn Read + Send>>>) -> Vec<String> {
        let mut a = a.expect("an archive");
        let mut v: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn detects_every_compression_and_rejects_non_archives() {
        let d = tempfile::tempdir().unwrap();
        sh(
            "mkdir src && echo hi > src/a && echo yo > src/b \
             && tar -cf plain.tar -C src a b \
             && gzip -6 -c plain.tar > t.tgz && bzip2 -c plain.tar > t.tbz2 \
             && xz -c plain.tar > t.txz && zstd -q -c plain.tar > t.tzst \
             && cat t.tgz t.tgz > multi.tgz \
             && echo 'just some text, definitely not a tar archive' > text.txt \
             && gzip -c text.txt > text.gz && zstd -q -c text.txt > text.zst \
             && xz -c text.txt > text.xz && bzip2 -c text.txt > text.bz2 \
             && : > empty && head -c 1024 /dev/zero > zeros.tar \
             && printf '\\037\\213garbage' > badgz",
            d.path(),
        );
        for f in ["plain.tar", "t.tgz", "t.tbz2", "t.txz", "t.tzst"] {
            assert_eq!(
                names(open_archive(&d.path().join(f)).unwrap()),
                ["a", "b"],
                "{f}"
            );
        }
        // Multi-member gzip: the second member's entries are past the first end-of-archive
        // marker; tar readers stop at it, but decoding must not fail.
        assert_eq!(
            names(open_archive(&d.path().join("multi.tgz")).unwrap()),
            ["a", "b"]
        );
        for f in [
            "text.txt",
            "text.gz",
            "text.zst",
            "text.xz",
            "text.bz2",
            "empty",
            "zeros.tar",
            "badgz",
        ] {
            assert!(
                open_archive(&d.path().join(f)).unwrap().is_none(),
                "{f} is not an archive"
            );
        }
        assert!(open_archive(&d.path().join("missing")).is_err());
        std::os::unix::fs::symlink("plain.tar", d.path().join("link.tar")).unwrap();
        assert!(
            open_archive(&d.path().join("link.tar")).is_err(),
            "O_NOFOLLOW"
        );
        assert!(open_archive(&d.path().join("src")).is_err());
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
}
