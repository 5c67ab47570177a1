//! `strata verify`: the build's date in files written by RUN steps (issue 23).
//!
//! The wall clock is the one thing verify cannot vary: `CLOCK_REALTIME` has no namespace, and
//! `clock_gettime`/`time`/`gettimeofday` are answered by the vDSO without a syscall, so neither
//! seccomp nor ptrace sees them (libfaketime covers only dynamically linked programs). Runs
//! start in different seconds, which catches `date +%s` and times of day; a RUN writing only the
//! date gives the same bytes in every run of one day. So run 1's RUN layers are searched for
//! run 1's UTC date in common forms. A hit fails verify (`cause: the date`) unless the build's
//! inputs hold the same text — the context's files, the layers not made by RUN (base image,
//! COPY, ADD), or the date of `SOURCE_DATE_EPOCH` — since then the RUN may have copied or
//! derived it (a CHANGELOG edited today, `date -d @$SOURCE_DATE_EPOCH`): only a note then, so a
//! correct build never fails. Not caught: other date forms, a date a RUN downloads.

use std::fmt::Write as _;

use serde_json::{json, Value};
use strata_engine::diff;

use super::verify::RunResult;

/// Bytes of each file searched (the start of larger ones).
const MAX_BYTES: u64 = 4 << 20;

/// A file of a RUN layer that holds run 1's date.
pub(super) struct Dated {
    path: String,
    /// `RUN at Dockerfile:5`.
    step: String,
    /// The date as found (`2026-12-02`).
    found: String,
    /// The build's inputs hold the same text (or it is `SOURCE_DATE_EPOCH`'s date): a note.
    in_inputs: bool,
}

/// Run 1's date (UTC, each day it spanned) in the forms programs write it: `%Y-%m-%d`,
/// `%Y%m%d`, C's `__DATE__` (`%b %e %Y`) and `date`'s default (`%a %b %e`).
fn needles(start: i64, end: i64) -> Vec<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let mut out = Vec::new();
    let (first, last) = (start.max(0) / 86_400, end.max(start).max(0) / 86_400);
    for day in first..=last {
        let iso = strata_engine::image::rfc3339(day as u64 * 86_400);
        let (y, m, d) = (&iso[0..4], &iso[5..7], &iso[8..10]);
        let (mi, di): (usize, u32) = (m.parse().unwrap_or(1), d.parse().unwrap_or(1));
        let mon = MONTHS[mi.clamp(1, 12) - 1];
        let wkd = DAYS[(day.rem_euclid(7)) as usize];
        out.push(format!("{y}-{m}-{d}"));
        out.push(format!("{y}{m}{d}"));
        out.push(format!("{mon} {di:>2} {y}"));
        out.push(format!("{wkd} {mon} {di:>2}"));
    }
    out
}

/// The files of run 1's RUN layers that hold its date. Errors reading the image give none (run
/// 1's image was read already). `source_date_epoch`: the build's, if set.
pub(super) fn find(first: &RunResult, source_date_epoch: Option<i64>) -> Vec<Dated> {
    let Ok(img) = diff::load_image(&format!("oci:{}", first.oci.display())) else {
        return Vec::new();
    };
    let steps = super::verify_cause::layer_steps(first);
    let forms = needles(first.started, first.ended);
    let bytes: Vec<Vec<u8>> = forms.iter().map(|n| n.clone().into_bytes()).collect();
    let mut out = Vec::new();
    let mut inputs = Vec::new();
    for (k, layer) in img.layers.iter().enumerate() {
        let Some(step) = steps
            .get(k)
            .cloned()
            .flatten()
            .filter(|s| s.starts_with("RUN "))
        else {
            inputs.push(layer);
            continue;
        };
        for (path, i) in diff::find_in_layer(layer, &bytes, MAX_BYTES).unwrap_or_default() {
            out.push(Dated {
                path,
                step: step.clone(),
                found: forms[i].clone(),
                in_inputs: false,
            });
        }
    }
    if out.is_empty() {
        return out;
    }
    // Only now (rarely): which of the forms found the inputs hold too.
    let found: Vec<String> = out.iter().map(|d| d.found.clone()).collect();
    let mut explained: Vec<String> = source_date_epoch
        .map(|t| needles(t, t))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| found.contains(n))
        .collect();
    let wanted: Vec<Vec<u8>> = found.iter().map(|f| f.clone().into_bytes()).collect();
    for layer in inputs {
        for (_, i) in diff::find_in_layer(layer, &wanted, MAX_BYTES).unwrap_or_default() {
            explained.push(found[i].clone());
        }
    }
    in_tree(&first.cond.context, &wanted, &found, &mut explained);
    for d in &mut out {
        d.in_inputs = explained.contains(&d.found);
    }
    out
}

/// Adds to `explained` each of `found` (as bytes in `wanted`) that a file under `dir` holds
/// (its first [`MAX_BYTES`]).
fn in_tree(
    dir: &std::path::Path,
    wanted: &[Vec<u8>],
    found: &[String],
    explained: &mut Vec<String>,
) {
    use std::io::Read as _;
    let mut stack = vec![dir.to_path_buf()];
    let mut buf = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    buf.clear();
                    let read = std::fs::File::open(e.path())
                        .and_then(|f| f.take(MAX_BYTES).read_to_end(&mut buf));
                    if read.is_ok() {
                        for (w, f) in wanted.iter().zip(found) {
                            if strata_engine::diff::contains(&buf, w) {
                                explained.push(f.clone());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether a file holds run 1's date that the inputs do not explain: verify fails.
pub(super) fn fails(dated: &[Dated]) -> bool {
    dated.iter().any(|d| !d.in_inputs)
}

impl Dated {
    fn cause_text(&self) -> String {
        if self.in_inputs {
            format!(
                "note: {} wrote {}, which holds `{}`, run 1's date; so do the build's inputs (context, base or COPY layers, SOURCE_DATE_EPOCH): not counted",
                self.step, self.path, self.found
            )
        } else {
            format!(
                "cause: the date ({} wrote {}: it holds `{}`, run 1's date, the same in every run of one day: the wall clock is not varied)",
                self.step, self.path, self.found
            )
        }
    }
}

/// The note on stderr (empty for none).
pub(super) fn text(dated: &[Dated]) -> String {
    let mut s = String::new();
    if dated.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "verify: files that hold run 1's date (UTC; runs are compared within a day, so the date alone does not differ between them):"
    );
    for d in dated {
        let _ = writeln!(s, "  {}: {}", d.path, d.cause_text());
    }
    s
}

pub(super) fn to_json(dated: &[Dated]) -> Value {
    json!(dated
        .iter()
        .map(|d| json!({
            "path": d.path,
            "step": d.step,
            "found": d.found,
            "cause": if d.in_inputs { Value::Null } else { "date".into() },
            "in_inputs": d.in_inputs,
            "text": d.cause_text(),
        }))
        .collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_in_the_forms_programs_write() {
        // 2026-12-02 23:08:53 UTC, a Wednesday.
        let t = 1_796_252_933;
        assert_eq!(
            needles(t, t + 5),
            ["2026-12-02", "20261202", "Dec  2 2026", "Wed Dec  2"]
        );
        // Across midnight: both days.
        assert_eq!(needles(t, t + 86_400).len(), 8);
        assert_eq!(needles(0, 0)[3], "Thu Jan  1");
    }
}
