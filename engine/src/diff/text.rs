//! The human rendering of a [`DiffReport`], and short unified text diffs.
//!
//! The unified diff is a plain LCS over lines: inputs are capped at 64 KiB (and at
//! [`LINES_MAX`] lines), so the quadratic table stays small and no dependency is needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Cause, DiffReport, FieldChange, LayerStatus};

const LINES_MAX: usize = 2000;
/// Files listed per layer and cause in the text rendering (the JSON has them all).
const FILES_PER_CAUSE: usize = 50;

/// A unified diff of `a` → `b` with 3 lines of context, at most `max_lines` lines long.
pub(crate) fn unified(path: &str, a: &str, b: &str, max_lines: usize) -> String {
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let mut out = vec![format!("--- a{path}"), format!("+++ b{path}")];
    if la.len() > LINES_MAX || lb.len() > LINES_MAX {
        out.push("(too many lines for a text diff)".into());
        return out.join("\n");
    }
    // ops: (tag, line index in a, line index in b); tag ' ', '-', '+'.
    let (n, m) = (la.len(), lb.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * (m + 1) + j] = if la[i] == lb[j] {
                lcs[(i + 1) * (m + 1) + j + 1] + 1
            } else {
                lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
            };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && la[i] == lb[j] {
            ops.push((' ', i, j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i * (m + 1) + j + 1] >= lcs[(i + 1) * (m + 1) + j]) {
            ops.push(('+', i, j));
            j += 1;
        } else {
            ops.push(('-', i, j));
            i += 1;
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
    out.join("\n")
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
        let mut groups: BTreeMap<Cause, (usize, bool, Vec<&str>)> = BTreeMap::new();
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
                    g.2.push(&f.path);
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
    }
    parts.join("; ")
}
