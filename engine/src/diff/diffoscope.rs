//! `strata diff --diffoscope DIR`: the full report of the external `diffoscope` tool on the
//! files whose content differs, extracted from both images into a temporary directory
//! (`a/layer-N/PATH`, `b/layer-N/PATH`). diffoscope is never required: when it is not on
//! `PATH`, the outcome says so and nothing else changes.

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::{content, layer, Cause, DiffError, DiffReport, ImageSource, LayerStatus};

/// Files extracted for diffoscope, at most, per image.
const FILES_MAX: usize = 64;

/// What `--diffoscope DIR` did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `written` (reports in `dir`), `missing` (no `diffoscope` on `PATH`), `nothing` (no
    /// file content differs), `failed` (diffoscope exited with an error).
    pub status: &'static str,
    pub dir: PathBuf,
    /// Files handed to diffoscope (per side).
    pub files: usize,
    /// The reports written.
    pub reports: Vec<PathBuf>,
    /// For people: what happened, and what to do when diffoscope is missing.
    pub note: String,
}

/// `diffoscope` on `PATH`, if there.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("diffoscope"))
        .find(|p| p.is_file())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiffError + '_ {
    move |source| DiffError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A layer path as a relative path with no `..` (a hostile tar may name anything).
fn safe(p: &str) -> Option<PathBuf> {
    let rel = Path::new(p.trim_start_matches('/'));
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| rel.to_path_buf())
}

/// Runs diffoscope on the files of `report` whose content differs (both sides present),
/// writing `DIR/diffoscope.html` and `DIR/diffoscope.txt`.
pub fn run(
    report: &DiffReport,
    a: &ImageSource,
    b: &ImageSource,
    dir: &Path,
) -> Result<Outcome, DiffError> {
    let mut outcome = Outcome {
        status: "missing",
        dir: dir.to_path_buf(),
        files: 0,
        reports: Vec::new(),
        note: String::new(),
    };
    let Some(bin) = find() else {
        outcome.note = format!(
            "diffoscope is not installed (not on PATH): no report in `{}`; the report above is strata's own. For diffoscope's, install it (Debian/Ubuntu: `apt-get install diffoscope`; or `pip install diffoscope`) and run again",
            dir.display()
        );
        return Ok(outcome);
    };
    let tmp = tempfile::Builder::new()
        .prefix("strata-diffoscope-")
        .tempdir()
        .map_err(io(&std::env::temp_dir()))?;
    let mut files = 0;
    for l in report
        .layers
        .iter()
        .filter(|l| l.status == LayerStatus::Different)
    {
        let want: std::collections::HashSet<String> = l
            .files
            .iter()
            .filter(|f| {
                f.changes
                    .iter()
                    .any(|c| c.cause == Cause::Content && c.a.is_some() && c.b.is_some())
            })
            .map(|f| f.path[1..].to_string())
            .filter(|p| safe(p).is_some())
            .take(FILES_MAX - files)
            .collect();
        if want.is_empty() {
            continue;
        }
        let (la, lb) = (&a.layers[l.index], &b.layers[l.index]);
        let limit = content::MEMBER_MAX;
        let (ba, bb) = rayon::join(
            || layer::fetch(la, &want, limit),
            || layer::fetch(lb, &want, limit),
        );
        let (ba, bb) = (ba?, bb?);
        for p in &want {
            let (Some(x), Some(y), Some(rel)) = (ba.get(p), bb.get(p), safe(p)) else {
                continue;
            };
            // A path that cannot be written (a hostile layer may have `x` and `x/y`) is left
            // out rather than failing the diff.
            let written = [("a", x), ("b", y)].into_iter().all(|(side, bytes)| {
                let to = tmp
                    .path()
                    .join(side)
                    .join(format!("layer-{}", l.index + 1))
                    .join(&rel);
                to.parent()
                    .is_some_and(|parent| std::fs::create_dir_all(parent).is_ok())
                    && std::fs::write(&to, bytes).is_ok()
            });
            if written {
                files += 1;
            }
        }
        if files >= FILES_MAX {
            break;
        }
    }
    outcome.files = files;
    if files == 0 {
        outcome.status = "nothing";
        outcome.note =
            "no file content differs (both sides present): diffoscope was not run".into();
        return Ok(outcome);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (html, txt) = (dir.join("diffoscope.html"), dir.join("diffoscope.txt"));
    let out = Command::new(&bin)
        .arg("--html")
        .arg(&html)
        .arg("--text")
        .arg(&txt)
        .arg(tmp.path().join("a"))
        .arg(tmp.path().join("b"))
        .stdin(Stdio::null())
        .output()
        .map_err(io(&bin))?;
    // diffoscope: 0 identical, 1 different, anything else an error.
    match out.status.code() {
        Some(0 | 1) => {
            outcome.status = "written";
            outcome.reports = vec![html, txt];
            outcome.note = format!(
                "diffoscope compared {files} file{} (extracted from the differing layers): reports in `{}`",
                if files == 1 { "" } else { "s" },
                dir.display()
            );
        }
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            outcome.status = "failed";
            outcome.note = format!(
                "diffoscope failed ({}): {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            );
        }
    }
    Ok(outcome)
}
