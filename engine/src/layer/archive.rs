//! Reading archives for ADD's auto-extraction: any local file that is a tar, plain or
//! compressed (gzip, zstd, bzip2, xz, detected by magic bytes).
//!
//! An ADD archive is not a layer: it comes from the build context rather than the store, may
//! be bzip2 or xz, and its entries become new layer entries (`solve/copy.rs`), so neither
//! whiteouts nor the layer [`super::Limits`] apply. Layer blobs are read by [`super::LayerReader`].

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::read::ZSTD_WINDOW_LOG_MAX;
use super::tar::BLOCK;
use super::LayerError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

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
}
