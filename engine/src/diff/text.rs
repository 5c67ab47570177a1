//! The human rendering of a [`DiffReport`], and short unified text diffs.
//!
//! The unified diff is a plain LCS over lines: inputs are capped at 64 KiB (and at
//! [`LINES_MAX`] lines), so the quadratic table stays small and no dependency is needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Cause, ContentDetail, DiffReport, FieldChange, FileChange, FileDiff, LayerStatus};

const LINES_MAX: usize = 2000;
/// Files listed per layer and cause in the text rendering (the JSON has them all).
const FILES_PER_CAUSE: usize = 50;
/// Archive members listed per archive in the text rendering.
const MEMBERS_SHOWN: usize = 20;

/// A unified diff of `a` → `b` with 3 lines of context, at most `max_lines` lines long.
#[cfg(test)]
pub(crate) fn unified(path: &str, a: &str, b: &str, max_lines: usize) -> String {
    unified_with_changes(path, a, b, max_lines).text
}

/// A unified diff and the lines it removes and adds.
pub(crate) struct LineDiff<'a> {
    pub text: String,
    /// (1-based line number in A, line) for removed lines; at most [`CHANGED_MAX`].
    pub removed: Vec<(usize, &'a str)>,
    /// The same for lines added in B.
    pub added: Vec<(usize, &'a str)>,
}

/// Changed lines kept per side in a [`LineDiff`] (where timestamps are looked for).
const CHANGED_MAX: usize = 200;

/// [`unified`], with the changed lines. The common leading and trailing lines are set aside
/// first, so a long file with a few changes is diffed in the changed middle only.
pub(crate) fn unified_with_changes<'a>(
    path: &str,
    a: &'a str,
    b: &'a str,
    max_lines: usize,
) -> LineDiff<'a> {
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let mut out = vec![format!("--- a{path}"), format!("+++ b{path}")];
    let (n, m) = (la.len(), lb.len());
    let pre = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
    let suf = la[pre..]
        .iter()
        .rev()
        .zip(lb[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ca, cb) = (&la[pre..n - suf], &lb[pre..m - suf]);
    let mut removed: Vec<(usize, &str)> = Vec::new();
    let mut added: Vec<(usize, &str)> = Vec::new();
    if ca.len() > LINES_MAX || cb.len() > LINES_MAX {
        out.push(format!(
            "@@ -{},{} +{},{} @@ (too many changed lines for a text diff)",
            pre + 1,
            ca.len(),
            pre + 1,
            cb.len()
        ));
        removed.extend(ca.iter().enumerate().map(|(i, l)| (pre + i + 1, *l)));
        added.extend(cb.iter().enumerate().map(|(i, l)| (pre + i + 1, *l)));
        removed.truncate(CHANGED_MAX);
        added.truncate(CHANGED_MAX);
        return LineDiff {
            text: out.join("\n"),
            removed,
            added,
        };
    }
    // ops: (tag, line index in a, line index in b); tag ' ', '-', '+'.
    let (cn, cm) = (ca.len(), cb.len());
    let mut lcs = vec![0u32; (cn + 1) * (cm + 1)];
    for i in (0..cn).rev() {
        for j in (0..cm).rev() {
            lcs[i * (cm + 1) + j] = if ca[i] == cb[j] {
                lcs[(i + 1) * (cm + 1) + j + 1] + 1
            } else {
                lcs[(i + 1) * (cm + 1) + j].max(lcs[i * (cm + 1) + j + 1])
            };
        }
    }
    let mut ops: Vec<(char, usize, usize)> = (0..pre).map(|k| (' ', k, k)).collect();
    let (mut i, mut j) = (0, 0);
    while i < cn || j < cm {
        if i < cn && j < cm && ca[i] == cb[j] {
            ops.push((' ', pre + i, pre + j));
            i += 1;
            j += 1;
        } else if i < cn && (j == cm || lcs[(i + 1) * (cm + 1) + j] >= lcs[i * (cm + 1) + j + 1]) {
            // Removals before additions, as `diff -u` shows them.
            ops.push(('-', pre + i, pre + j));
            i += 1;
        } else {
            ops.push(('+', pre + i, pre + j));
            j += 1;
        }
    }
    ops.extend((0..suf).map(|k| (' ', n - suf + k, m - suf + k)));
    for &(t, x, y) in &ops {
        match t {
            '-' if removed.len() < CHANGED_MAX => removed.push((x + 1, la[x])),
            '+' if added.len() < CHANGED_MAX => added.push((y + 1, lb[y])),
            _ => {}
        }
    }
    // Hunks: changed ops with 3 lines of context around them.
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(3);
        let mut end = (changed[k] + 4).min(ops.len());
        while k + 1 < changed.len() && changed[k + 1] <= end + 3 {
            k += 1;
            end = (changed[k] + 4).min(ops.len());
        }
        let h = &ops[start..end];
        let a_len = h.iter().filter(|o| o.0 != '+').count();
        let b_len = h.iter().filter(|o| o.0 != '-').count();
        out.push(format!(
            "@@ -{},{a_len} +{},{b_len} @@",
            h[0].1 + usize::from(a_len > 0),
            h[0].2 + usize::from(b_len > 0)
        ));
        for &(t, x, y) in h {
            let line = if t == '+' { lb[y] } else { la[x] };
            out.push(format!("{t}{line}"));
        }
        k += 1;
    }
    if out.len() > max_lines {
        let more = out.len() - max_lines;
        out.truncate(max_lines);
        out.push(format!("… ({more} more lines)"));
    }
    LineDiff {
        text: out.join("\n"),
        removed,
        added,
    }
}

fn field_line(out: &mut String, c: &FieldChange) {
    let show = |v: &Option<serde_json::Value>| match v {
        None => "(absent)".to_string(),
        Some(v) => v.to_string(),
    };
    let _ = writeln!(
        out,
        "  {} [{}]: {} → {}",
        c.field,
        c.cause.name(),
        show(&c.a),
        show(&c.b)
    );
}

/// The report for people: sections in order (manifest, config, layers), most telling
/// differences first within each, then one summary line.
pub fn render_text(r: &DiffReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {}", r.a.spec);
    let _ = writeln!(out, "B: {}", r.b.spec);
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if !r.manifest.is_empty() {
        let _ = writeln!(out, "\n== manifest ==");
        r.manifest.iter().for_each(|c| field_line(&mut out, c));
    }
    if !r.config.is_empty() {
        let _ = writeln!(out, "\n== config ==");
        r.config.iter().for_each(|c| field_line(&mut out, c));
    }
    let n = r.layers.len();
    for l in r.layers.iter().filter(|l| l.differs) {
        let _ = write!(out, "\n== layer {}/{n}: ", l.index + 1);
        let id = |x: &Option<super::LayerInfo>| {
            x.as_ref()
                .and_then(|i| i.diff_id.map(|d| d.to_string()))
                .unwrap_or_else(|| "-".into())
        };
        match l.status {
            LayerStatus::OnlyInA => {
                let _ = writeln!(out, "only in A (diff_id {}) ==", id(&l.a));
            }
            LayerStatus::OnlyInB => {
                let _ = writeln!(out, "only in B (diff_id {}) ==", id(&l.b));
            }
            LayerStatus::CompressionOnly => {
                let (a, b) = (l.a.as_ref().unwrap(), l.b.as_ref().unwrap());
                let _ = writeln!(
                    out,
                    "compression only: same diff_id {}, different blobs ==",
                    id(&l.a)
                );
                for (s, i) in [("A", a), ("B", b)] {
                    let _ = writeln!(
                        out,
                        "  {s}: {} {} ({} bytes)",
                        i.digest.map(|d| d.to_string()).unwrap_or_default(),
                        i.media_type,
                        i.size
                    );
                }
            }
            _ => {
                let _ = writeln!(out, "different: diff_id {} → {} ==", id(&l.a), id(&l.b));
            }
        }
        for n in &l.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        let mut shown: BTreeMap<Cause, usize> = BTreeMap::new();
        for f in &l.files {
            let top = f.changes[0].cause;
            let k = shown.entry(top).or_default();
            *k += 1;
            if *k > FILES_PER_CAUSE {
                continue;
            }
            for c in &f.changes {
                let a = c.a.as_deref().unwrap_or("(absent)");
                let b = c.b.as_deref().unwrap_or("(absent)");
                let _ = writeln!(out, "  {} [{}]: {a} → {b}", f.path, c.cause.name());
                if let Some(t) = &c.text_diff {
                    for line in t.lines() {
                        let _ = writeln!(out, "      {line}");
                    }
                }
                if let Some(d) = &c.detail {
                    render_detail(&mut out, d, 6);
                }
            }
        }
        for (cause, k) in shown.into_iter().filter(|(_, k)| *k > FILES_PER_CAUSE) {
            let _ = writeln!(
                out,
                "  … and {} more files whose first difference is {} (see --json)",
                k - FILES_PER_CAUSE,
                cause.name()
            );
        }
        if let Some(o) = &l.order {
            let _ = writeln!(
                out,
                "  [order]: {} in a different order; first at #{}: {} (A) vs {} (B)",
                if o.same_set {
                    format!("same {} paths", o.common_paths)
                } else {
                    format!("{} common paths", o.common_paths)
                },
                o.first_at,
                o.a,
                o.b
            );
        }
    }
    if let Some(d) = &r.diffoscope {
        let _ = writeln!(out, "\ndiffoscope: {}", d.note);
    }
    if !r.ignored.is_empty() {
        let parts: Vec<String> = r
            .ignored
            .iter()
            .map(|(c, k)| format!("{k} {}", c.name()))
            .collect();
        let _ = writeln!(out, "\nignored: {}", parts.join(", "));
    }
    let _ = writeln!(out, "\n{}", summary(r));
    out
}

/// `A` / `B` and where, for a timestamp.
fn stamp_side(v: &Option<String>, at: &Option<String>, side: &str) -> String {
    match (v, at) {
        (Some(v), Some(at)) => format!("{v} ({side}, {at})"),
        (Some(v), None) => format!("{v} ({side})"),
        (None, _) => format!("nothing in {side}"),
    }
}

/// One member's change: `mtime 1700000000 vs 1700003600`, `only in B (12 bytes)`.
fn member_change(c: &FileChange) -> String {
    match (&c.a, &c.b) {
        (Some(a), None) if c.cause == Cause::Presence => format!("only in A ({a})"),
        (None, Some(b)) if c.cause == Cause::Presence => format!("only in B ({b})"),
        (a, b) => format!(
            "{} {} vs {}",
            c.cause.name(),
            a.as_deref().unwrap_or("(absent)"),
            b.as_deref().unwrap_or("(absent)")
        ),
    }
}

/// What a deeper look found, indented by `pad` spaces: timestamps first, then the archive's
/// members (recursively), order, the first binary difference and notes.
fn render_detail(out: &mut String, d: &ContentDetail, pad: usize) {
    let sp = " ".repeat(pad);
    for t in &d.timestamps {
        let _ = writeln!(
            out,
            "{sp}looks like a build timestamp ({}): {} vs {}",
            t.format,
            stamp_side(&t.a, &t.a_at, "A"),
            stamp_side(&t.b, &t.b_at, "B")
        );
    }
    if let Some(k) = &d.archive {
        let n = d.members.len();
        let _ = writeln!(
            out,
            "{sp}{k}: {n} member{} differ{}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" }
        );
    }
    for m in d.members.iter().take(MEMBERS_SHOWN) {
        render_member(out, m, pad + 2);
    }
    if d.members.len() > MEMBERS_SHOWN {
        let _ = writeln!(
            out,
            "{sp}  … and {} more differing members (see --json)",
            d.members.len() - MEMBERS_SHOWN
        );
    }
    if let Some(o) = &d.order {
        let _ = writeln!(
            out,
            "{sp}[order]: members in a different order; first at #{}: {} (A) vs {} (B)",
            o.first_at, o.a, o.b
        );
    }
    if let Some(b) = &d.binary {
        let _ = writeln!(
            out,
            "{sp}first difference at offset {} (0x{:x}) of {} vs {} bytes{}:",
            b.offset,
            b.offset,
            b.a_size,
            b.b_size,
            b.differing_bytes
                .map(|n| format!(", {n} bytes differ"))
                .unwrap_or_default()
        );
        for (side, lines) in [("A", &b.a), ("B", &b.b)] {
            for l in lines {
                let _ = writeln!(out, "{sp}  {side} {l}");
            }
        }
    }
    for n in &d.notes {
        let _ = writeln!(out, "{sp}note: {n}");
    }
}

fn render_member(out: &mut String, m: &FileDiff, pad: usize) {
    let sp = " ".repeat(pad);
    for c in &m.changes {
        let _ = writeln!(out, "{sp}{}: {}", m.path, member_change(c));
        if let Some(t) = &c.text_diff {
            for line in t.lines() {
                let _ = writeln!(out, "{sp}    {line}");
            }
        }
        if let Some(d) = &c.detail {
            render_detail(out, d, pad + 2);
        }
    }
}

/// The innermost archive member that differs first, depth first: `(path, cause)`.
fn first_member(d: &ContentDetail) -> Option<(&str, Cause)> {
    let m = d.members.first()?;
    let inner = m
        .changes
        .iter()
        .find_map(|c| c.detail.as_deref().and_then(first_member));
    Some(inner.unwrap_or((&m.path, m.changes[0].cause)))
}

/// A file's path for the summary line, with the archive member that differs when it is one:
/// `/usr/lib/app.jar (/usr/lib/app.jar!/META-INF/MANIFEST.MF by mtime)`.
fn with_member(f: &FileDiff) -> String {
    let inner = f
        .changes
        .iter()
        .find_map(|c| c.detail.as_deref().and_then(first_member));
    match inner {
        Some((p, cause)) => format!("{} ({p} by {})", f.path, cause.name()),
        None => f.path.clone(),
    }
}

/// Paths (files and members, depth first) whose look found timestamps.
fn stamped<'a>(path: &'a str, d: &'a ContentDetail, out: &mut Vec<&'a str>) {
    if !d.timestamps.is_empty() {
        out.push(path);
    }
    for m in &d.members {
        for c in &m.changes {
            if let Some(inner) = &c.detail {
                stamped(&m.path, inner, out);
            }
        }
    }
}

/// One line: `identical`, or what differs, e.g.
/// `3 layers differ: 41 files by mtime only, 1 file by content: /usr/lib/x.pyc`.
pub fn summary(r: &DiffReport) -> String {
    if r.is_identical() {
        return if r.ignored.is_empty() {
            "identical".into()
        } else {
            "identical (after ignores)".into()
        };
    }
    let mut parts = Vec::new();
    if !r.manifest.is_empty() {
        parts.push(format!("manifest: {} fields", r.manifest.len()));
    }
    let derived = |c: &&FieldChange| c.field.starts_with("rootfs.diff_ids");
    let fields: Vec<&FieldChange> = r.config.iter().filter(|c| !derived(c)).collect();
    if !fields.is_empty() {
        let names: Vec<&str> = fields.iter().take(3).map(|c| c.field.as_str()).collect();
        let more = if fields.len() > 3 { ", …" } else { "" };
        parts.push(format!(
            "config: {} field{} ({}{more})",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" },
            names.join(", ")
        ));
    }
    let differing: Vec<_> = r.layers.iter().filter(|l| l.differs).collect();
    if !differing.is_empty() {
        // Files grouped by their most telling cause; "only" when that is their sole cause.
        let mut groups: BTreeMap<Cause, (usize, bool, Vec<String>)> = BTreeMap::new();
        let mut other = Vec::new();
        for l in &differing {
            match l.status {
                LayerStatus::CompressionOnly => other.push("compression only".to_string()),
                LayerStatus::OnlyInA => other.push(format!("layer {} only in A", l.index + 1)),
                LayerStatus::OnlyInB => other.push(format!("layer {} only in B", l.index + 1)),
                _ => {}
            }
            if l.order.is_some() {
                other.push(format!("entry order in layer {}", l.index + 1));
            }
            for f in &l.files {
                let g = groups
                    .entry(f.changes[0].cause)
                    .or_insert((0, true, Vec::new()));
                g.0 += 1;
                g.1 &= f.changes.iter().all(|c| c.cause == f.changes[0].cause);
                if g.2.len() < 3 {
                    g.2.push(with_member(f));
                }
            }
        }
        let mut s = format!(
            "{} layer{} differ{}",
            differing.len(),
            if differing.len() == 1 { "" } else { "s" },
            if differing.len() == 1 { "s" } else { "" }
        );
        let mut items = Vec::new();
        for (cause, (k, only, paths)) in groups {
            let mut item = format!(
                "{k} file{} by {}{}",
                if k == 1 { "" } else { "s" },
                cause.name(),
                if only { " only" } else { "" }
            );
            if k <= 3 {
                item.push_str(": ");
                item.push_str(&paths.join(" "));
            }
            items.push(item);
        }
        items.extend(other);
        if !items.is_empty() {
            s.push_str(": ");
            s.push_str(&items.join(", "));
        }
        parts.push(s);
        let mut with_stamps = Vec::new();
        for f in differing.iter().flat_map(|l| &l.files) {
            for c in &f.changes {
                if let Some(d) = &c.detail {
                    stamped(&f.path, d, &mut with_stamps);
                }
            }
        }
        if !with_stamps.is_empty() {
            let more = with_stamps.len().saturating_sub(3);
            with_stamps.truncate(3);
            parts.push(format!(
                "build timestamps in {}{}",
                with_stamps.join(" "),
                if more > 0 { " …" } else { "" }
            ));
        }
    }
    parts.join("; ")
}
