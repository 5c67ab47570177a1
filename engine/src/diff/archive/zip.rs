//! Zip archives (jar, war, wheel, apk, …), read from memory through the central directory
//! (zip64 included). What is compared of a member: its data (stored or deflated, inflated when
//! compared; other methods by CRC-32 and size), its times (the extended Unix timestamp, else
//! the DOS time), Unix mode, Unix uid/gid, compression method, flags, "made by", other extra
//! fields and comment; and the member order.

use std::collections::HashMap;

use super::{Data, Listing, Member, Meta};
use crate::diff::Cause;

const EOCD: u32 = 0x0605_4b50;
const EOCD64_LOCATOR: u32 = 0x0706_4b50;
const EOCD64: u32 = 0x0606_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

// Offsets come from the archive (untrusted): every addition is checked.
fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(i..i.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(i..i.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(i..i.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// `(central directory offset, entry count)`.
fn directory(b: &[u8]) -> Result<(usize, usize), String> {
    let min = b.len().saturating_sub(22 + 65_535);
    let at = (min..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| u32_at(b, i) == Some(EOCD))
        .ok_or("no end of central directory record")?;
    let count = u16_at(b, at + 10).unwrap_or(0);
    let offset = u32_at(b, at + 16).unwrap_or(0);
    if count != 0xffff && offset != 0xffff_ffff {
        return Ok((offset as usize, count as usize));
    }
    // Zip64: the locator sits just before the record.
    let loc = at.checked_sub(20).ok_or("truncated zip64 locator")?;
    if u32_at(b, loc) != Some(EOCD64_LOCATOR) {
        return Err("zip64 locator missing".into());
    }
    let rec = u64_at(b, loc + 8).ok_or("truncated zip64 locator")? as usize;
    if u32_at(b, rec) != Some(EOCD64) {
        return Err("zip64 end of central directory missing".into());
    }
    let field = |k: usize| rec.checked_add(k).and_then(|i| u64_at(b, i));
    let count = field(32).ok_or("truncated zip64 record")?;
    let offset = field(48).ok_or("truncated zip64 record")?;
    Ok((offset as usize, count as usize))
}

/// `YYYY-MM-DD HH:MM:SS (DOS)`: local time, 2-second resolution.
fn dos_time(date: u16, time: u16) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} (DOS)",
        1980 + (date >> 9),
        (date >> 5) & 0xf,
        date & 0x1f,
        time >> 11,
        (time >> 5) & 0x3f,
        (time & 0x1f) * 2
    )
}

fn method_name(m: u16) -> String {
    match m {
        0 => "stored".into(),
        8 => "deflate".into(),
        9 => "deflate64".into(),
        12 => "bzip2".into(),
        14 => "lzma".into(),
        93 => "zstd".into(),
        95 => "xz".into(),
        _ => format!("method {m}"),
    }
}

fn host_name(h: u8) -> String {
    match h {
        0 => "DOS".into(),
        3 => "Unix".into(),
        10 => "NTFS".into(),
        19 => "OS X".into(),
        _ => format!("host {h}"),
    }
}

/// The members of the zip `bytes`, in central-directory order.
pub(crate) fn list(bytes: &[u8]) -> Result<Listing<'_>, String> {
    let (mut pos, count) = directory(bytes)?;
    let mut out = Listing::default();
    let mut seen = HashMap::new();
    for _ in 0..count {
        let c = bytes.get(pos..).unwrap_or_default();
        if u32_at(c, 0) != Some(CENTRAL) {
            out.notes.push(format!(
                "bad central directory entry at offset {pos}: read stopped"
            ));
            break;
        }
        let field = |i| u16_at(c, i).unwrap_or(0);
        let (made_by, flags, method) = (field(4), field(8), field(10));
        let (time, date) = (field(12), field(14));
        let crc = u32_at(c, 16).unwrap_or(0);
        let mut csize = u64::from(u32_at(c, 20).unwrap_or(0));
        let mut usize_ = u64::from(u32_at(c, 24).unwrap_or(0));
        let (nlen, xlen, clen) = (field(28) as usize, field(30) as usize, field(32) as usize);
        let external = u32_at(c, 38).unwrap_or(0);
        let mut local = u64::from(u32_at(c, 42).unwrap_or(0));
        let Some(name) = c.get(46..46 + nlen) else {
            out.notes
                .push("truncated central directory: read stopped".into());
            break;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let extra = c.get(46 + nlen..46 + nlen + xlen).unwrap_or_default();
        let comment = c
            .get(46 + nlen + xlen..46 + nlen + xlen + clen)
            .unwrap_or_default();
        pos += 46 + nlen + xlen + clen;

        let mut attrs = Vec::new();
        let mut attr = |l: &str, c: Cause, v: String| attrs.push((l.to_string(), c, v));
        let mut unix_mtime = None;
        let mut i = 0;
        while i + 4 <= extra.len() {
            let id = u16_at(extra, i).unwrap_or(0);
            let len = u16_at(extra, i + 2).unwrap_or(0) as usize;
            let body = extra.get(i + 4..i + 4 + len).unwrap_or_default();
            i += 4 + len;
            match id {
                0x0001 => {
                    // Zip64: the 8-byte values of the fields that are 0xffffffff, in order.
                    let mut k = 0;
                    for v in [&mut usize_, &mut csize, &mut local] {
                        if *v == 0xffff_ffff {
                            if let Some(x) = u64_at(body, k) {
                                *v = x;
                                k += 8;
                            }
                        }
                    }
                }
                0x5455 if body.first().is_some_and(|f| f & 1 != 0) => {
                    unix_mtime = u32_at(body, 1);
                }
                0x7875 if body.first() == Some(&1) => {
                    // Info-ZIP Unix uid/gid: version, uid size, uid, gid size, gid.
                    let n = |at: usize| -> Option<(u64, usize)> {
                        let size = *body.get(at)? as usize;
                        let v = body.get(at + 1..at + 1 + size)?;
                        let v = v.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
                        Some((v, at + 1 + size))
                    };
                    if let Some((uid, next)) = n(1) {
                        attr("uid", Cause::Uid, uid.to_string());
                        if let Some((gid, _)) = n(next) {
                            attr("gid", Cause::Gid, gid.to_string());
                        }
                    }
                }
                _ => attr(
                    &format!("extra 0x{id:04x}"),
                    Cause::Xattrs,
                    hex::encode(body),
                ),
            }
        }
        match unix_mtime {
            Some(t) => {
                attr("mtime", Cause::Mtime, t.to_string());
                attr("dos mtime", Cause::Mtime, dos_time(date, time));
            }
            None => attr("mtime", Cause::Mtime, dos_time(date, time)),
        }
        let host = (made_by >> 8) as u8;
        let mode = external >> 16;
        if host == 3 && mode != 0 {
            attr("mode", Cause::Mode, format!("{:04o}", mode & 0o7777));
            let kind = match mode & 0o170_000 {
                0o040_000 => "dir",
                0o120_000 => "symlink",
                _ => "file",
            };
            attr("type", Cause::Type, kind.into());
        } else if external != 0 {
            attr("mode", Cause::Mode, format!("attributes 0x{external:08x}"));
        }
        attr("method", Cause::Format, method_name(method));
        attr("flags", Cause::Format, format!("0x{flags:04x}"));
        attr(
            "made by",
            Cause::Format,
            format!(
                "{} {}.{}",
                host_name(host),
                (made_by & 0xff) / 10,
                (made_by & 0xff) % 10
            ),
        );
        if !comment.is_empty() {
            attr(
                "comment",
                Cause::Value,
                String::from_utf8_lossy(comment).into(),
            );
        }
        let data = member_data(bytes, local as usize, csize, usize_, method, flags, crc);
        let data = match data {
            Ok(d) => d,
            Err(why) => Data::Opaque {
                fingerprint: format!("crc32 {crc:08x}, {usize_} bytes"),
                why,
            },
        };
        out.push(
            Member {
                name,
                meta: Meta::Attrs(attrs),
                data,
            },
            &mut seen,
        );
    }
    Ok(out)
}

/// Where a member's data is, from its local header.
fn member_data(
    bytes: &[u8],
    local: usize,
    csize: u64,
    size: u64,
    method: u16,
    flags: u16,
    crc: u32,
) -> Result<Data<'_>, String> {
    if u32_at(bytes, local) != Some(LOCAL) {
        return Err(format!("no local header at offset {local}"));
    }
    // `local` is below `bytes.len()`: the signature was read there.
    let nlen = u16_at(bytes, local + 26).unwrap_or(0) as usize;
    let xlen = u16_at(bytes, local + 28).unwrap_or(0) as usize;
    let start = local + 30 + nlen + xlen;
    let raw = bytes
        .get(start..start.saturating_add(csize as usize))
        .ok_or_else(|| format!("data runs past the end (offset {start})"))?;
    if flags & 1 != 0 {
        return Err("encrypted".into());
    }
    match method {
        0 => Ok(Data::Bytes(raw)),
        8 => Ok(Data::Deflate { raw, size }),
        m => Err(format!(
            "compressed with {} (crc32 {crc:08x})",
            method_name(m)
        )),
    }
}
