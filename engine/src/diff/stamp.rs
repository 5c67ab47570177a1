//! Embedded build timestamps: values that look like a date or time in common formats, found in
//! the regions where two contents differ. A date that differs between two builds of the same
//! inputs is the most common cause of unreproducible files, so it is named outright.
//!
//! Formats: ISO 8601 (`2026-12-02`, `2026-12-02T22:41:07Z`, `2026-12-02 22:41:07+01:00`), the
//! `date` command's default (`Wed Dec  2 22:41:07 UTC 2026`, and `asctime` without a zone),
//! RFC 2822 / HTTP dates (`Wed, 02 Dec 2026 22:41:07 +0000`), and Unix seconds (9–10 digits
//! within [`UNIX_PAST`] before and [`UNIX_FUTURE`] after now). Matching is on bytes, so binary
//! content is scanned as it is.

use std::collections::BTreeSet;

use super::Timestamp;

/// How far back a number of seconds may be and still look like a build time: 15 years.
const UNIX_PAST: i64 = 15 * 365 * 86_400;
/// And ahead (clocks shifted by `strata verify`, builds dated in the future): 2 years.
const UNIX_FUTURE: i64 = 2 * 365 * 86_400;
/// Timestamps reported per content.
const MAX_REPORTED: usize = 8;

/// One match: its format, text and byte offset in the scanned input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub format: &'static str,
    pub text: String,
    pub at: usize,
}

const DAYS: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Every timestamp in `s`, in order (matches do not overlap).
pub(crate) fn find(s: &[u8], now: i64) -> Vec<Stamp> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !s[i - 1].is_ascii_alphanumeric();
        let m = if !boundary {
            None
        } else if s[i].is_ascii_digit() {
            iso(s, i)
                .map(|e| ("iso8601", e))
                .or_else(|| rfc2822(s, i).map(|e| ("rfc2822", e)))
                .or_else(|| unix(s, i, now).map(|e| ("unix", e)))
        } else if s[i].is_ascii_uppercase() {
            date(s, i)
                .map(|e| ("date", e))
                .or_else(|| rfc2822(s, i).map(|e| ("rfc2822", e)))
        } else {
            None
        };
        match m {
            Some((format, end)) => {
                out.push(Stamp {
                    format,
                    text: String::from_utf8_lossy(&s[i..end]).into_owned(),
                    at: i,
                });
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

/// The timestamps of side A and side B that the other side does not have (same format and
/// text), paired in order of appearance per format. `where_a`/`where_b` say where a match is
/// (a line, an offset).
pub(crate) fn differing(
    a: &[Stamp],
    b: &[Stamp],
    where_a: &dyn Fn(usize) -> String,
    where_b: &dyn Fn(usize) -> String,
) -> Vec<Timestamp> {
    let key = |s: &Stamp| (s.format, s.text.clone());
    let in_a: BTreeSet<_> = a.iter().map(key).collect();
    let in_b: BTreeSet<_> = b.iter().map(key).collect();
    let only_a: Vec<&Stamp> = dedup(a.iter().filter(|s| !in_b.contains(&key(s))));
    let only_b: Vec<&Stamp> = dedup(b.iter().filter(|s| !in_a.contains(&key(s))));
    let mut out = Vec::new();
    let mut used_b = vec![false; only_b.len()];
    // Same format first; then a date in one format against one in another.
    let mut pairs: Vec<Option<usize>> = vec![None; only_a.len()];
    for same_format in [true, false] {
        for (i, x) in only_a.iter().enumerate() {
            if pairs[i].is_some() {
                continue;
            }
            let j = (0..only_b.len())
                .find(|&j| !used_b[j] && (!same_format || only_b[j].format == x.format));
            if let Some(j) = j {
                used_b[j] = true;
                pairs[i] = Some(j);
            }
        }
    }
    for (x, j) in only_a.iter().zip(&pairs) {
        let pair = j.map(|j| only_b[j]);
        out.push(Timestamp {
            format: match pair {
                Some(y) if y.format != x.format => format!("{} / {}", x.format, y.format),
                _ => x.format.to_string(),
            },
            a: Some(show(x)),
            b: pair.map(show),
            a_at: Some(where_a(x.at)),
            b_at: pair.map(|y| where_b(y.at)),
        });
    }
    for (y, _) in only_b.iter().zip(&used_b).filter(|(_, u)| !**u) {
        out.push(Timestamp {
            format: y.format.to_string(),
            a: None,
            b: Some(show(y)),
            a_at: None,
            b_at: Some(where_b(y.at)),
        });
    }
    out.truncate(MAX_REPORTED);
    out
}

/// Each (format, text) once, first occurrence kept.
fn dedup<'a>(it: impl Iterator<Item = &'a Stamp>) -> Vec<&'a Stamp> {
    let mut seen = BTreeSet::new();
    it.filter(|s| seen.insert((s.format, s.text.clone())))
        .collect()
}

/// The text, and for Unix seconds the date they are.
fn show(s: &Stamp) -> String {
    match s.format {
        "unix" => {
            let secs: u64 = s.text.split('.').next().unwrap_or("").parse().unwrap_or(0);
            format!("{} ({})", s.text, crate::image::rfc3339(secs))
        }
        _ => s.text.clone(),
    }
}

fn digits(s: &[u8], i: usize, n: usize) -> Option<u32> {
    let d = s.get(i..i + n)?;
    if !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0, |v, c| v * 10 + u32::from(c - b'0')))
}

fn byte(s: &[u8], i: usize, c: u8) -> bool {
    s.get(i) == Some(&c)
}

/// Nothing alphanumeric right after a match.
fn ends(s: &[u8], i: usize) -> bool {
    !matches!(s.get(i), Some(c) if c.is_ascii_alphanumeric())
}

fn plausible_year(y: u32) -> bool {
    (1970..=2100).contains(&y)
}

/// `HH:MM[:SS[.frac]]` at `i`: its end.
fn clock(s: &[u8], i: usize, seconds_required: bool) -> Option<usize> {
    let (h, m) = (digits(s, i, 2)?, digits(s, i + 3, 2)?);
    if !byte(s, i + 2, b':') || h > 23 || m > 59 {
        return None;
    }
    let mut j = i + 5;
    if byte(s, j, b':') {
        let sec = digits(s, j + 1, 2)?;
        if sec > 60 {
            return None;
        }
        j += 3;
        if byte(s, j, b'.') && s.get(j + 1).is_some_and(u8::is_ascii_digit) {
            j += 1;
            while s.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
        }
    } else if seconds_required {
        return None;
    }
    Some(j)
}

/// `Z`, `+HH:MM`, `+HHMM` or `+HH` at `i`: its end.
fn offset(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'Z' => Some(i + 1),
        b'+' | b'-' => {
            digits(s, i + 1, 2)?;
            if byte(s, i + 3, b':') && digits(s, i + 4, 2).is_some() {
                Some(i + 6)
            } else if digits(s, i + 3, 2).is_some() {
                Some(i + 5)
            } else {
                Some(i + 3)
            }
        }
        _ => None,
    }
}

/// ISO 8601: `YYYY-MM-DD`, optionally `[T ]HH:MM[:SS[.frac]]` and an offset.
fn iso(s: &[u8], i: usize) -> Option<usize> {
    let (y, mo, d) = (digits(s, i, 4)?, digits(s, i + 5, 2)?, digits(s, i + 8, 2)?);
    if !byte(s, i + 4, b'-') || !byte(s, i + 7, b'-') {
        return None;
    }
    if !plausible_year(y) || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let date_end = i + 10;
    if matches!(s.get(date_end), Some(b'T' | b' ')) {
        if let Some(mut j) = clock(s, date_end + 1, false) {
            if let Some(k) = offset(s, j) {
                j = k;
            }
            if ends(s, j) {
                return Some(j);
            }
        }
    }
    // A date alone; `2026-12-02-1` is a version, not a date.
    (ends(s, date_end) && !byte(s, date_end, b'-')).then_some(date_end)
}

fn month(s: &[u8], i: usize) -> bool {
    s.get(i..i + 3)
        .is_some_and(|w| MONTHS.iter().any(|m| m.as_slice() == w))
}

fn weekday(s: &[u8], i: usize) -> bool {
    s.get(i..i + 3)
        .is_some_and(|w| DAYS.iter().any(|d| d.as_slice() == w))
}

/// An upper-case zone name (`UTC`, `CEST`) at `i`: its end.
fn zone_name(s: &[u8], i: usize) -> Option<usize> {
    let n = s[i.min(s.len())..]
        .iter()
        .take(6)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    (2..=5).contains(&n).then_some(i + n)
}

/// `date`'s default: `Wed Dec  2 22:41:07 UTC 2026` (zone optional: `asctime`).
fn date(s: &[u8], i: usize) -> Option<usize> {
    if !weekday(s, i) || !byte(s, i + 3, b' ') || !month(s, i + 4) || !byte(s, i + 7, b' ') {
        return None;
    }
    let mut j = i + 8;
    let day = if byte(s, j, b' ') {
        j += 1;
        digits(s, j, 1)?
    } else if let Some(d) = digits(s, j, 2) {
        j += 1;
        d
    } else {
        digits(s, j, 1)?
    };
    if !(1..=31).contains(&day) {
        return None;
    }
    j += 1;
    if !byte(s, j, b' ') {
        return None;
    }
    j = clock(s, j + 1, true)?;
    if !byte(s, j, b' ') {
        return None;
    }
    j += 1;
    if let Some(k) = zone_name(s, j).or_else(|| offset(s, j).filter(|_| s[j] != b'Z')) {
        if !byte(s, k, b' ') {
            return None;
        }
        j = k + 1;
    }
    let y = digits(s, j, 4)?;
    (plausible_year(y) && ends(s, j + 4)).then_some(j + 4)
}

/// RFC 2822: `[Wed, ]02 Dec 2026 22:41:07 +0000` (or a zone name: `GMT`).
fn rfc2822(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if weekday(s, j) {
        if !byte(s, j + 3, b',') || !byte(s, j + 4, b' ') {
            return None;
        }
        j += 5;
    }
    let day = match digits(s, j, 2) {
        Some(d) => {
            j += 2;
            d
        }
        None => {
            j += 1;
            digits(s, j - 1, 1)?
        }
    };
    if !(1..=31).contains(&day) || !byte(s, j, b' ') || !month(s, j + 1) {
        return None;
    }
    j += 4;
    let y = digits(s, j + 1, 4)?;
    if !byte(s, j, b' ') || !plausible_year(y) || !byte(s, j + 5, b' ') {
        return None;
    }
    j = clock(s, j + 6, false)?;
    if byte(s, j, b' ') {
        if let Some(k) = offset(s, j + 1)
            .filter(|_| s[j + 1] != b'Z')
            .or_else(|| zone_name(s, j + 1))
        {
            j = k;
        }
    }
    ends(s, j).then_some(j)
}

/// 9–10 digits (optionally `.fraction`) whose value is near `now`.
fn unix(s: &[u8], i: usize, now: i64) -> Option<usize> {
    let n = s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(9..=10).contains(&n) {
        return None;
    }
    let v = s[i..i + n]
        .iter()
        .fold(0i64, |v, c| v * 10 + i64::from(c - b'0'));
    if v < now - UNIX_PAST || v > now + UNIX_FUTURE {
        return None;
    }
    let mut j = i + n;
    if byte(s, j, b'.') && s.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j += 1;
        while s.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
    }
    ends(s, j).then_some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02T22:41:07Z.
    const NOW: i64 = 1_796_251_267;

    fn found(s: &str) -> Vec<(&'static str, String)> {
        find(s.as_bytes(), NOW)
            .into_iter()
            .map(|m| (m.format, m.text))
            .collect()
    }

    #[test]
    fn finds_each_format() {
        let cases = [
            (
                "built 2026-12-02T22:41:07 here",
                "iso8601",
                "2026-12-02T22:41:07",
            ),
            (
                "at 2026-12-02T22:41:07Z.",
                "iso8601",
                "2026-12-02T22:41:07Z",
            ),
            (
                "t=2026-12-02 22:41:07.123+01:00",
                "iso8601",
                "2026-12-02 22:41:07.123+01:00",
            ),
            ("day: 2026-12-02\n", "iso8601", "2026-12-02"),
            (
                "Wed Dec  2 22:41:07 UTC 2026\n",
                "date",
                "Wed Dec  2 22:41:07 UTC 2026",
            ),
            (
                "Wed Dec 12 22:41:07 2026",
                "date",
                "Wed Dec 12 22:41:07 2026",
            ),
            (
                "Wed Dec 2 22:41:07 +0100 2026",
                "date",
                "Wed Dec 2 22:41:07 +0100 2026",
            ),
            (
                "Date: Wed, 02 Dec 2026 22:41:07 +0000",
                "rfc2822",
                "Wed, 02 Dec 2026 22:41:07 +0000",
            ),
            (
                "Last-Modified: Wed, 02 Dec 2026 22:41:07 GMT",
                "rfc2822",
                "Wed, 02 Dec 2026 22:41:07 GMT",
            ),
            (
                "2 Dec 2026 22:41 -0500",
                "rfc2822",
                "2 Dec 2026 22:41 -0500",
            ),
            ("BUILD_TIME=1796251267\n", "unix", "1796251267"),
            ("ts 1796251267.123456789;", "unix", "1796251267.123456789"),
        ];
        for (input, format, text) in cases {
            assert_eq!(found(input), vec![(format, text.to_string())], "{input:?}");
        }
    }

    #[test]
    fn ignores_what_is_not_a_time() {
        for input in [
            "version 1.2.3",
            "2026-13-02",           // no month 13
            "1899-12-02",           // implausible year
            "20261202",             // no separators: not taken
            "id 17962512670000",    // too many digits
            "sha 9a1796251267b",    // inside a word
            "port 8080 and 123456", // small numbers
            "100000000",            // 9 digits, 1973: not near now
            "9999999999",           // 2286: not near now
            "pkg-2026-12-02-1",     // a version
            "Wed Foo  2 22:41:07 UTC 2026",
            "Mon, 32 Dec 2026 22:41:07 +0000",
            "ISO2026-12-02",
        ] {
            assert_eq!(found(input), vec![], "{input:?}");
        }
    }

    #[test]
    fn finds_several_in_binary_bytes() {
        let mut bytes = b"\x00\x01PK\x03\x042026-12-02T22:41:07\x00\xff1796251267\x00".to_vec();
        bytes.extend_from_slice(b"Wed Dec  2 22:41:07 UTC 2026");
        let f = find(&bytes, NOW);
        let formats: Vec<_> = f.iter().map(|m| m.format).collect();
        assert_eq!(formats, ["iso8601", "unix", "date"]);
        assert_eq!(f[0].at, 6);
    }

    #[test]
    fn only_what_differs_between_the_sides_is_reported() {
        let a = find(
            b"same 2026-01-01 then 2026-12-02T22:41:07 and 1796251267",
            NOW,
        );
        let b = find(
            b"same 2026-01-01 then 2026-12-02T22:41:09 and 1796251267",
            NOW,
        );
        let at = |i: usize| format!("offset {i}");
        let d = differing(&a, &b, &at, &at);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].format, "iso8601");
        assert_eq!(d[0].a.as_deref(), Some("2026-12-02T22:41:07"));
        assert_eq!(d[0].b.as_deref(), Some("2026-12-02T22:41:09"));
        // Equal sides: nothing.
        assert!(differing(&a, &a, &at, &at).is_empty());
        // Unix seconds are shown with their date.
        let b = find(
            b"same 2026-01-01 then 2026-12-02T22:41:07 and 1796251268",
            NOW,
        );
        let d = differing(&a, &b, &at, &at);
        assert_eq!(
            d[0].b.as_deref(),
            Some("1796251268 (2026-12-02T22:41:08Z)"),
            "{d:?}"
        );
        // Only on one side.
        let b = find(b"same 2026-01-01 then and 1796251267", NOW);
        let d = differing(&a, &b, &at, &at);
        assert_eq!((d[0].a.is_some(), d[0].b.is_none()), (true, true), "{d:?}");
        // Another format on the other side: paired all the same.
        let b = find(
            b"same 2026-01-01 then Thu Dec  3 09:00:00 UTC 2026 and 1796251267",
            NOW,
        );
        let d = differing(&a, &b, &at, &at);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].format, "iso8601 / date");
        assert_eq!(d[0].b.as_deref(), Some("Thu Dec  3 09:00:00 UTC 2026"));
    }
}
