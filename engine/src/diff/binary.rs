//! Binary content: where two byte strings first differ, an `xxd`-style window of both there,
//! and the regions that differ (where embedded timestamps are looked for).

use std::fmt::Write as _;
use std::ops::Range;

use super::BinaryDiff;

/// Bytes per window line, and lines per window.
const ROW: usize = 16;
const ROWS: usize = 2;
/// Differing bytes closer than this are one region.
const GAP: usize = 8;
/// Regions returned by [`regions`].
const MAX_REGIONS: usize = 32;
/// Past the shorter length (or after an insertion), one region this long is scanned.
const TAIL: usize = 256;

/// Offset of the first byte that differs; the shorter length when one is a prefix of the
/// other; `None` when equal.
pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len())),
    )
}

/// The first difference of `a` and `b` (which differ) with a window of each side.
pub(crate) fn describe(a: &[u8], b: &[u8]) -> Option<BinaryDiff> {
    let offset = first_difference(a, b)?;
    let differing_bytes =
        (a.len() == b.len()).then(|| a.iter().zip(b).filter(|(x, y)| x != y).count() as u64);
    Some(BinaryDiff {
        offset: offset as u64,
        a_size: a.len() as u64,
        b_size: b.len() as u64,
        differing_bytes,
        a: window(a, offset),
        b: window(b, offset),
    })
}

/// [`ROWS`] lines of hex and ASCII from the row holding `offset` (`xxd` layout).
pub(crate) fn window(bytes: &[u8], offset: usize) -> Vec<String> {
    let start = offset / ROW * ROW;
    let mut out = Vec::new();
    for row in 0..ROWS {
        let from = start + row * ROW;
        if from >= bytes.len() {
            if row == 0 {
                out.push(format!("{from:08x}: (end of content)"));
            }
            break;
        }
        let chunk = &bytes[from..(from + ROW).min(bytes.len())];
        let mut hex = String::new();
        for (i, b) in chunk.iter().enumerate() {
            let _ = write!(hex, "{b:02x}");
            if i % 2 == 1 {
                hex.push(' ');
            }
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push(format!("{from:08x}: {hex:<40} {ascii}"));
    }
    out
}

/// The byte ranges where `a` and `b` differ, as ranges of the common length (gaps shorter
/// than [`GAP`] joined), plus one range of [`TAIL`] bytes from the first difference when the
/// lengths differ (an insertion shifts everything after it). At most [`MAX_REGIONS`].
pub(crate) fn regions(a: &[u8], b: &[u8]) -> Vec<Range<usize>> {
    let n = a.len().min(b.len());
    let mut out: Vec<Range<usize>> = Vec::new();
    if a.len() != b.len() {
        let first = first_difference(a, b).unwrap_or(n);
        out.push(first..first + TAIL);
        return out;
    }
    let mut i = 0;
    while i < n && out.len() < MAX_REGIONS {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        let mut j = end;
        while j < n && j < end + GAP {
            if a[j] != b[j] {
                end = j + 1;
            }
            j += 1;
        }
        out.push(start..end);
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_and_window() {
        let a = b"\x7fELF\x02\x01\x01\x00built 2026-12-02 by ci\x00\x00rest".to_vec();
        let mut b = a.clone();
        b[23] = b'3';
        assert_eq!(first_difference(&a, &b), Some(23));
        let d = describe(&a, &b).unwrap();
        assert_eq!((d.offset, d.differing_bytes), (23, Some(1)));
        assert_eq!(
            d.a[0],
            "00000010: 3236 2d31 322d 3032 2062 7920 6369 0000  26-12-02 by ci.."
        );
        assert_eq!(
            d.b[0],
            "00000010: 3236 2d31 322d 3033 2062 7920 6369 0000  26-12-03 by ci.."
        );
        assert_eq!(d.a.len(), 2);
        assert!(describe(&a, &a).is_none());
        // A prefix: the difference is where the shorter one ends.
        let d = describe(&a[..20], &a).unwrap();
        assert_eq!((d.offset, d.differing_bytes), (20, None));
        assert_eq!(d.a, [format!("00000010: 3236 2d31{}26-1", " ".repeat(32))]);
    }

    #[test]
    fn regions_join_close_differences() {
        let a = vec![0u8; 100];
        let mut b = a.clone();
        b[10] = 1;
        b[14] = 1;
        b[60] = 1;
        assert_eq!(regions(&a, &b), vec![10..15, 60..61]);
        assert_eq!(regions(&a, &a), vec![]);
        assert_eq!(regions(&a[..50], &b), vec![10..266]);
    }
}
