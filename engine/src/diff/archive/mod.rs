//! Archives inside files: both sides opened in memory, member by member, down to the member
//! that differs (`/usr/lib/app.jar!/META-INF/MANIFEST.MF`), as diffoscope does.
//!
//! - [`detect`]: what a content is, by its magic bytes (and `.tar` for old v7 tars).
//! - [`tar`], [`zip`] (jar, wheel, apk, …), [`ar`] (`.a`, `.deb`): each lists its
//!   [`Member`]s — name, metadata, and where the data is (borrowed from the archive's bytes,
//!   or deflated and inflated only when compared).
//! - [`stream`]: gzip, xz, zstd and bzip2 streams: one payload and (gzip) a header.
//! - [`compare`]: two listings member by member (presence, metadata, content, order); a member
//!   whose content differs is looked into again ([`super::content`]), one level deeper.

pub(crate) mod ar;
pub(crate) mod stream;
pub(crate) mod tar;
pub(crate) mod zip;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use super::content::{self, Ctx};
use super::layer::{compare_entries, EntrySummary};
use super::{Cause, ContentDetail, FileChange, FileDiff, OrderDiff};

/// What a content is, as far as opening it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tar,
    Zip,
    Ar,
    Gzip,
    Xz,
    Zstd,
    Bzip2,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tar => "tar",
            Kind::Zip => "zip",
            Kind::Ar => "ar",
            Kind::Gzip => "gzip",
            Kind::Xz => "xz",
            Kind::Zstd => "zstd",
            Kind::Bzip2 => "bzip2",
        }
    }

    /// A compressed stream (one payload) rather than an archive of members.
    pub fn is_stream(self) -> bool {
        matches!(self, Kind::Gzip | Kind::Xz | Kind::Zstd | Kind::Bzip2)
    }
}

/// The kind of `bytes` (named `name`), by magic bytes; `.tar` files without the ustar magic
/// (v7) by their header checksum.
pub(crate) fn detect(name: &str, bytes: &[u8]) -> Option<Kind> {
    let starts = |m: &[u8]| bytes.starts_with(m);
    if starts(&[0x1f, 0x8b, 0x08]) {
        Some(Kind::Gzip)
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Kind::Xz)
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Kind::Zstd)
    } else if starts(b"BZh") && bytes.get(3).is_some_and(|c| (b'1'..=b'9').contains(c)) {
        Some(Kind::Bzip2)
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        Some(Kind::Zip)
    } else if starts(b"!<arch>\n") {
        Some(Kind::Ar)
    } else if bytes.len() >= 512
        && (bytes[257..262] == *b"ustar" || (name.ends_with(".tar") && tar::checksum_ok(bytes)))
    {
        Some(Kind::Tar)
    } else {
        None
    }
}

/// Where a member's data is.
pub(crate) enum Data<'a> {
    /// No data (directories, links).
    None,
    /// Stored as is.
    Bytes(&'a [u8]),
    /// Raw deflate (zip method 8) of `size` bytes once inflated.
    Deflate { raw: &'a [u8], size: u64 },
    /// Not opened (another compression method, encryption, a sparse file): compared by
    /// `fingerprint` only.
    Opaque { why: String, fingerprint: String },
}

/// A member's metadata: a tar entry (compared as layer entries are), or labelled values.
pub(crate) enum Meta {
    Tar(Box<EntrySummary>),
    /// `(label, cause, value)`; values with the same label are compared.
    Attrs(Vec<(String, Cause, String)>),
}

pub(crate) struct Member<'a> {
    pub name: String,
    pub meta: Meta,
    pub data: Data<'a>,
}

/// An opened archive: its members in archive order (names made unique), and what could not
/// be read.
#[derive(Default)]
pub(crate) struct Listing<'a> {
    pub members: Vec<Member<'a>>,
    pub notes: Vec<String>,
}

impl<'a> Listing<'a> {
    /// Adds `m`, renaming a second `x` to `x (2)` (zip and ar allow duplicates; tar's later
    /// entry wins, as when a layer is applied, and is handled by [`tar::list`]).
    pub fn push(&mut self, mut m: Member<'a>, seen: &mut HashMap<String, usize>) {
        let k = seen.entry(m.name.clone()).or_default();
        *k += 1;
        if *k > 1 {
            m.name = format!("{} ({k})", m.name);
        }
        self.members.push(m);
    }
}

/// Opens `bytes` as the archive `kind` (not a stream).
pub(crate) fn open(kind: Kind, bytes: &[u8]) -> Result<Listing<'_>, String> {
    match kind {
        Kind::Tar => tar::list(bytes),
        Kind::Zip => zip::list(bytes),
        Kind::Ar => ar::list(bytes),
        _ => Err(format!("{} is a stream, not an archive", kind.name())),
    }
}

/// The bytes of `d`: borrowed, or inflated within the limits of `ctx`.
fn load<'a>(d: &Data<'a>, ctx: &Ctx) -> Result<Option<Cow<'a, [u8]>>, String> {
    match d {
        Data::None | Data::Opaque { .. } => Ok(None),
        Data::Bytes(b) => Ok(Some(Cow::Borrowed(b))),
        Data::Deflate { raw, size } => {
            if *size > content::MEMBER_MAX {
                return Err(format!(
                    "{size} bytes once inflated, over the {} MiB limit: not opened",
                    content::MEMBER_MAX >> 20
                ));
            }
            let r = flate2::read::DeflateDecoder::new(*raw);
            ctx.read_bounded(r).map(|v| Some(Cow::Owned(v)))
        }
    }
}

fn describe_data(d: &Data<'_>) -> String {
    match d {
        Data::None => "no data".into(),
        Data::Bytes(b) => format!("{} bytes", b.len()),
        Data::Deflate { size, .. } => format!("{size} bytes"),
        Data::Opaque { fingerprint, .. } => fingerprint.clone(),
    }
}

/// The members of `a` and `b` that differ, most telling first (paths `outer!/member`), and
/// their order when it differs. Content that differs is looked into at `depth + 1`.
pub(crate) fn compare(
    outer: &str,
    a: &Listing<'_>,
    b: &Listing<'_>,
    ctx: &Ctx,
    depth: usize,
) -> (Vec<FileDiff>, Option<OrderDiff>) {
    let index = |l: &Listing<'_>| -> HashMap<String, usize> {
        l.members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect()
    };
    let (ia, ib) = (index(a), index(b));
    let names: BTreeSet<&String> = ia.keys().chain(ib.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let path = format!("{outer}!/{}", name.trim_start_matches('/'));
        let changes = match (ia.get(name), ib.get(name)) {
            (Some(&x), Some(&y)) => member_changes(&path, &a.members[x], &b.members[y], ctx, depth),
            (Some(&x), None) => vec![FileChange::new(
                Cause::Presence,
                Some(describe_data(&a.members[x].data)),
                None,
            )],
            (None, Some(&y)) => vec![FileChange::new(
                Cause::Presence,
                None,
                Some(describe_data(&b.members[y].data)),
            )],
            (None, None) => unreachable!("a name from one of the listings"),
        };
        if !changes.is_empty() {
            out.push(FileDiff { path, changes });
        }
    }
    for f in &mut out {
        f.changes.sort_by_key(|c| c.cause);
    }
    out.sort_by_key(|f| f.changes[0].cause);
    (out, order(outer, a, b, &ia, &ib))
}

fn order(
    outer: &str,
    a: &Listing<'_>,
    b: &Listing<'_>,
    ia: &HashMap<String, usize>,
    ib: &HashMap<String, usize>,
) -> Option<OrderDiff> {
    let ca: Vec<&String> = a
        .members
        .iter()
        .map(|m| &m.name)
        .filter(|n| ib.contains_key(*n))
        .collect();
    let cb: Vec<&String> = b
        .members
        .iter()
        .map(|m| &m.name)
        .filter(|n| ia.contains_key(*n))
        .collect();
    let i = ca.iter().zip(&cb).position(|(x, y)| x != y)?;
    Some(OrderDiff {
        common_paths: ca.len(),
        same_set: ia.len() == ib.len() && ca.len() == ia.len(),
        first_at: i,
        a: format!("{outer}!/{}", ca[i]),
        b: format!("{outer}!/{}", cb[i]),
    })
}

/// The changes between two members of the same name.
fn member_changes(
    path: &str,
    x: &Member<'_>,
    y: &Member<'_>,
    ctx: &Ctx,
    depth: usize,
) -> Vec<FileChange> {
    let mut out = match (&x.meta, &y.meta) {
        (Meta::Tar(ea), Meta::Tar(eb)) => compare_entries(ea, eb),
        (Meta::Attrs(aa), Meta::Attrs(ab)) => compare_attrs(aa, ab),
        _ => Vec::new(),
    };
    // A tar entry's content change is already there (by sha256): details attach to it.
    let mut content = |detail: ContentDetail, a: String, b: String| match out
        .iter_mut()
        .find(|c| c.cause == Cause::Content)
    {
        Some(c) => c.attach(detail),
        None => {
            let mut c = FileChange::new(Cause::Content, Some(a), Some(b));
            c.attach(detail);
            out.push(c);
        }
    };
    match content_change(path, &x.data, &y.data, ctx, depth) {
        Verdict::Same => {}
        Verdict::Differs(detail, a, b) => content(*detail, a, b),
        Verdict::Unknown(why) => content(
            ContentDetail {
                notes: vec![why],
                ..Default::default()
            },
            describe_data(&x.data),
            describe_data(&y.data),
        ),
        Verdict::Recompressed => out.push(FileChange::new(
            Cause::Compression,
            Some("same content, compressed differently".into()),
            Some("same content, compressed differently".into()),
        )),
    }
    out
}

enum Verdict {
    Same,
    /// What the deeper look found, and the two sides described.
    Differs(Box<ContentDetail>, String, String),
    /// Same bytes once inflated; different compressed bytes.
    Recompressed,
    /// Could not be compared byte by byte, and the fingerprints differ (or cannot be told).
    Unknown(String),
}

fn content_change(path: &str, a: &Data<'_>, b: &Data<'_>, ctx: &Ctx, depth: usize) -> Verdict {
    match (a, b) {
        (Data::None, Data::None) => return Verdict::Same,
        (
            Data::Opaque {
                fingerprint: fa, ..
            },
            Data::Opaque {
                fingerprint: fb,
                why,
            },
        ) => {
            return if fa == fb {
                Verdict::Same
            } else {
                Verdict::Unknown(format!("{why}: compared by checksum and size only"))
            };
        }
        (Data::Deflate { raw: ra, .. }, Data::Deflate { raw: rb, .. }) if ra == rb => {
            return Verdict::Same
        }
        (Data::Bytes(x), Data::Bytes(y)) if x == y => return Verdict::Same,
        _ => {}
    }
    let (la, lb) = (load(a, ctx), load(b, ctx));
    match (la, lb) {
        (Ok(Some(x)), Ok(Some(y))) => {
            if x == y {
                return Verdict::Recompressed;
            }
            let detail = content::look(path, &x, &y, ctx, depth + 1);
            Verdict::Differs(
                Box::new(detail),
                format!("{} bytes", x.len()),
                format!("{} bytes", y.len()),
            )
        }
        (Err(e), _) | (_, Err(e)) => Verdict::Unknown(e),
        _ => Verdict::Differs(Box::default(), describe_data(a), describe_data(b)),
    }
}

/// Labelled values that differ. An extended (Unix) mtime that differs makes the DOS time's
/// difference redundant: it is left out then.
fn compare_attrs(a: &[(String, Cause, String)], b: &[(String, Cause, String)]) -> Vec<FileChange> {
    let get = |l: &[(String, Cause, String)], k: &str| {
        l.iter()
            .find(|(label, _, _)| label == k)
            .map(|(_, c, v)| (*c, v.clone()))
    };
    let labels: BTreeSet<&String> = a.iter().chain(b).map(|(l, _, _)| l).collect();
    let mut out = Vec::new();
    let mtime_differs = get(a, "mtime") != get(b, "mtime");
    for l in labels {
        let (x, y) = (get(a, l), get(b, l));
        if x == y || (l == "dos mtime" && mtime_differs) {
            continue;
        }
        let cause = x.as_ref().or(y.as_ref()).map_or(Cause::Value, |(c, _)| *c);
        // `method deflate`, but `0644` for mode and `1700000000` for mtime.
        let plain = l.starts_with(cause.name()) || l.ends_with(cause.name());
        let named =
            |v: Option<(Cause, String)>| v.map(|(_, v)| if plain { v } else { format!("{l} {v}") });
        out.push(FileChange::new(cause, named(x), named(y)));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
