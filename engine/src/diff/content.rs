//! A deeper look into two contents that differ: archives are opened down to the member that
//! differs ([`super::archive`]), compressed streams decompressed, text gets a unified diff and
//! binary content the offset of its first difference ([`super::binary`]); in the differing
//! regions, values that look like build timestamps are flagged ([`super::stamp`]).
//!
//! Bounds, so that a hostile or huge image cannot exhaust memory: a member (or a decompressed
//! stream) is read only up to [`MEMBER_MAX`], archives are opened [`MAX_DEPTH`] levels deep, and
//! one file's look decompresses at most [`BUDGET`] bytes in all. A bound that is hit is named
//! in the detail's notes.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::Read;

use super::archive::{self, stream, Kind};
use super::{binary, stamp, text, Cause, ContentDetail, FileChange, FileDiff};

/// Largest member, file or decompressed stream read into memory: 256 MiB.
pub(crate) const MEMBER_MAX: u64 = 256 << 20;
/// Archives inside archives opened, at most.
pub(crate) const MAX_DEPTH: usize = 4;
/// Bytes decompressed in all while looking into one file: 1 GiB.
const BUDGET: u64 = 1 << 30;
/// Lines of a unified diff.
const TEXT_LINES: usize = 20;

/// What one look shares down its levels: the time "now" is (for Unix-seconds timestamps) and
/// what is left of the decompression budget.
pub(crate) struct Ctx {
    now: i64,
    left: Cell<u64>,
}

impl Ctx {
    fn new(now: i64) -> Ctx {
        Ctx::with_budget(now, BUDGET)
    }

    pub(crate) fn with_budget(now: i64, budget: u64) -> Ctx {
        Ctx {
            now,
            left: Cell::new(budget),
        }
    }

    /// Reads `r` to its end, at most [`MEMBER_MAX`] bytes and what is left of the budget.
    pub(crate) fn read_bounded(&self, r: impl Read) -> Result<Vec<u8>, String> {
        let cap = MEMBER_MAX.min(self.left.get());
        let mut buf = Vec::new();
        r.take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot decompress: {e}"))?;
        if buf.len() as u64 > cap {
            return Err(if cap == MEMBER_MAX && self.left.get() > MEMBER_MAX {
                format!(
                    "larger than {} MiB once decompressed: not opened",
                    MEMBER_MAX >> 20
                )
            } else {
                format!(
                    "not opened: the decompression budget of one file ({} MiB) is used up",
                    BUDGET >> 20
                )
            });
        }
        self.left.set(self.left.get() - buf.len() as u64);
        Ok(buf)
    }
}

/// The current Unix time, which Unix-seconds timestamps must be near.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Looks into the differing contents `a` and `b` of the file `path`.
pub(crate) fn inspect(path: &str, a: &[u8], b: &[u8], now: i64) -> ContentDetail {
    look(path, a, b, &Ctx::new(now), 0)
}

/// [`inspect`] at `depth` archives down.
pub(crate) fn look(path: &str, a: &[u8], b: &[u8], ctx: &Ctx, depth: usize) -> ContentDetail {
    let mut d = ContentDetail::default();
    let (ka, kb) = (archive::detect(path, a), archive::detect(path, b));
    match (ka, kb) {
        (Some(k), Some(l)) if k == l && depth >= MAX_DEPTH => d.notes.push(format!(
            "a {} archive nested {MAX_DEPTH} archives deep: not opened",
            k.name()
        )),
        (Some(k), Some(l)) if k == l && k.is_stream() => {
            match (stream::decompress(k, a, ctx), stream::decompress(k, b, ctx)) {
                (Ok(x), Ok(y)) => return decompressed(path, k, a, b, &x, &y, ctx, depth),
                (Err(e), _) | (_, Err(e)) => d.notes.push(format!("{}: {e}", k.name())),
            }
        }
        (Some(k), Some(l)) if k == l => match (archive::open(k, a), archive::open(k, b)) {
            (Ok(la), Ok(lb)) => {
                let (members, order) = archive::compare(path, &la, &lb, ctx, depth);
                d.archive = Some(k.name().to_string());
                for (side, l) in [("A", &la), ("B", &lb)] {
                    d.notes
                        .extend(l.notes.iter().map(|n| format!("{side}: {} {n}", k.name())));
                }
                if members.is_empty() && order.is_none() {
                    d.notes.push(format!(
                        "no member differs: the {} archives differ outside them (headers, padding, comments)",
                        k.name()
                    ));
                    d.binary = binary::describe(a, b);
                }
                d.members = members;
                d.order = order;
                return d;
            }
            (Err(e), _) | (_, Err(e)) => d.notes.push(format!("not opened as {}: {e}", k.name())),
        },
        (Some(k), Some(l)) => d.notes.push(format!(
            "A is a {} archive, B a {} archive",
            k.name(),
            l.name()
        )),
        (Some(k), None) => d.notes.push(format!("only A is a {} archive", k.name())),
        (None, Some(l)) => d.notes.push(format!("only B is a {} archive", l.name())),
        (None, None) => {}
    }
    plain(path, a, b, ctx, &mut d);
    d
}

/// A compressed stream: its header, and what it holds, looked into one level down.
#[allow(clippy::too_many_arguments)]
fn decompressed(
    path: &str,
    k: Kind,
    a: &[u8],
    b: &[u8],
    x: &[u8],
    y: &[u8],
    ctx: &Ctx,
    depth: usize,
) -> ContentDetail {
    let mut d = if x == y {
        let mut d = ContentDetail::default();
        d.notes.push(format!(
            "same content once decompressed: only the {} bytes differ",
            k.name()
        ));
        d
    } else {
        look(path, x, y, ctx, depth + 1)
    };
    d.archive = Some(match d.archive.take() {
        Some(inner) => format!("{}+{inner}", k.name()),
        None => k.name().to_string(),
    });
    if k == Kind::Gzip {
        let (ha, hb) = (stream::gzip_header(a), stream::gzip_header(b));
        let mut changes = Vec::new();
        let get = |h: &[(String, Cause, String)], label: &str| {
            h.iter()
                .find(|(l, _, _)| l == label)
                .map(|(_, c, v)| (*c, v.clone()))
        };
        let labels: BTreeSet<&String> = ha.iter().chain(&hb).map(|(l, _, _)| l).collect();
        for label in labels {
            let (va, vb) = (get(&ha, label), get(&hb, label));
            if va == vb {
                continue;
            }
            let cause = va
                .as_ref()
                .or(vb.as_ref())
                .map_or(Cause::Value, |(c, _)| *c);
            let named = |v: Option<(Cause, String)>| {
                v.map(|(_, v)| {
                    if label == cause.name() {
                        v
                    } else {
                        format!("{label} {v}")
                    }
                })
            };
            changes.push(FileChange::new(cause, named(va), named(vb)));
        }
        if !changes.is_empty() {
            changes.sort_by_key(|c| c.cause);
            d.members.insert(
                0,
                FileDiff {
                    path: format!("{path} (gzip header)"),
                    changes,
                },
            );
        }
    }
    d
}

/// UTF-8 without control characters other than tab, newlines, form feed and escape.
fn as_text(b: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(b).ok()?;
    s.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c' | '\x1b'))
        .then_some(s)
}

/// Text or binary content: a unified diff or the first difference, and the timestamps in
/// what differs.
fn plain(path: &str, a: &[u8], b: &[u8], ctx: &Ctx, d: &mut ContentDetail) {
    if let (Some(x), Some(y)) = (as_text(a), as_text(b)) {
        let ld = text::unified_with_changes(path, x, y, TEXT_LINES);
        let scan = |lines: &[(usize, &str)]| -> Vec<stamp::Stamp> {
            lines
                .iter()
                .flat_map(|(n, l)| {
                    stamp::find(l.as_bytes(), ctx.now)
                        .into_iter()
                        .map(|s| stamp::Stamp { at: *n, ..s })
                })
                .collect()
        };
        let line = |n: usize| format!("line {n}");
        d.timestamps = stamp::differing(&scan(&ld.removed), &scan(&ld.added), &line, &line);
        d.text_diff = Some(ld.text);
        return;
    }
    d.binary = binary::describe(a, b);
    // Timestamps in the differing regions, with some context either side (a changed digit
    // is inside the date it belongs to).
    let mut sa = Vec::new();
    let mut sb = Vec::new();
    for r in binary::regions(a, b) {
        for (bytes, out) in [(a, &mut sa), (b, &mut sb)] {
            let from = r.start.saturating_sub(CONTEXT).min(bytes.len());
            let to = (r.end + CONTEXT).min(bytes.len());
            out.extend(
                stamp::find(&bytes[from..to], ctx.now)
                    .into_iter()
                    .filter(|s| s.at + from < r.end && s.at + from + s.text.len() > r.start)
                    .map(|s| stamp::Stamp {
                        at: s.at + from,
                        ..s
                    }),
            );
        }
    }
    let off = |n: usize| format!("offset 0x{n:x}");
    d.timestamps = stamp::differing(&sa, &sb, &off, &off);
}

/// Bytes scanned either side of a differing region.
const CONTEXT: usize = 40;
