//! Compressed streams: gzip, xz, zstd, bzip2. One payload each, decompressed within the
//! limits of a [`Ctx`]; gzip's header (mtime, file name, OS) is compared too, since a gzip
//! mtime is a classic build timestamp.

use super::Kind;
use crate::diff::content::Ctx;
use crate::diff::Cause;

/// The gzip header's fields that can differ between builds: `(label, cause, value)`.
pub(crate) fn gzip_header(b: &[u8]) -> Vec<(String, Cause, String)> {
    let mut out = Vec::new();
    if b.len() < 10 {
        return out;
    }
    let flags = b[3];
    let mtime = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    out.push(("mtime".to_string(), Cause::Mtime, mtime.to_string()));
    out.push(("xfl".to_string(), Cause::Compression, b[8].to_string()));
    out.push(("os".to_string(), Cause::Format, b[9].to_string()));
    let mut i = 10;
    if flags & 4 != 0 {
        let n = b
            .get(10..12)
            .map_or(0, |x| u16::from_le_bytes([x[0], x[1]]) as usize);
        i += 2 + n;
    }
    let mut zstring = |label: &str, out: &mut Vec<(String, Cause, String)>| {
        let rest = b.get(i..).unwrap_or_default();
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        out.push((
            label.to_string(),
            Cause::Value,
            String::from_utf8_lossy(&rest[..end]).into_owned(),
        ));
        i += end + 1;
    };
    if flags & 8 != 0 {
        zstring("name", &mut out);
    }
    if flags & 16 != 0 {
        zstring("comment", &mut out);
    }
    out
}

/// The decompressed payload of the stream `kind`.
pub(crate) fn decompress(kind: Kind, b: &[u8], ctx: &Ctx) -> Result<Vec<u8>, String> {
    match kind {
        Kind::Gzip => ctx.read_bounded(flate2::read::MultiGzDecoder::new(b)),
        Kind::Xz => ctx.read_bounded(xz2::read::XzDecoder::new_multi_decoder(b)),
        Kind::Bzip2 => ctx.read_bounded(bzip2::read::MultiBzDecoder::new(b)),
        Kind::Zstd => {
            // zstd's default window limit (128 MiB) stays: a frame may ask for a window
            // allocated up front, whatever its payload.
            let d =
                zstd::stream::read::Decoder::with_buffer(b).map_err(|e| format!("zstd: {e}"))?;
            ctx.read_bounded(d)
        }
        _ => Err(format!("{} is not a compressed stream", kind.name())),
    }
}
