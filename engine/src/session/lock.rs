//! [`Session::lock`]: `strata lock` — resolve every image reference, `ADD` URL and git ref of
//! one Dockerfile or a workspace's, and pin them in one `strata.lock`, without building.
//!
//! A build pins what it resolves too ([`super::LockUse`]); `strata lock` writes exactly the
//! references in use; `--update [REF…]` re-resolves (all, or those). Unpinned `ADD` URLs
//! (without `--checksum`) are downloaded once to learn their digest, unpinned git refs resolved
//! with `git ls-remote`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};

use super::build::open_lock;
use super::Session;
use crate::fetch::RemoteRef;
use crate::image::{LocalImages, Platform};
use crate::lock::{LockMode, LockedImages, Lockfile};
use crate::plan::{self, PlanRequest};

/// One Dockerfile to resolve.
#[derive(Debug, Clone)]
pub struct LockImage {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
}

/// What [`Session::lock`] resolves: the images sharing the lock `lock_dir/strata.lock`.
#[derive(Debug, Clone)]
pub struct LockRequest {
    pub lock_dir: PathBuf,
    pub mode: LockMode,
    pub images: Vec<LockImage>,
}

/// How one pin changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinChange {
    /// Pinned before to `from`, now to `to`.
    Moved { from: String, to: String },
    /// Not pinned before.
    Pinned(String),
    /// Pinned before, no longer used.
    Removed,
}

/// One line of [`LockReport::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinLine {
    pub reference: String,
    pub change: PinChange,
}

impl std::fmt::Display for PinLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.reference;
        match &self.change {
            PinChange::Moved { from, to } => write!(f, "{r}: {from} -> {to}"),
            PinChange::Pinned(d) => write!(f, "{r}: pinned {d}"),
            PinChange::Removed => write!(f, "{r}: removed (no longer used)"),
        }
    }
}

/// What [`Session::lock`] did.
#[derive(Debug)]
pub struct LockReport {
    /// The lock file (written when it changed).
    pub path: PathBuf,
    /// Images, then URLs, then git refs: each table's new and moved pins in order, then its
    /// removed ones.
    pub changes: Vec<PinLine>,
    /// The lock as written.
    pub lock: Lockfile,
}

impl LockReport {
    /// How many pins moved to another digest or commit.
    pub fn moved(&self) -> usize {
        self.changes
            .iter()
            .filter(|l| matches!(l.change, PinChange::Moved { .. }))
            .count()
    }

    /// The one-line summary `strata lock` ends with.
    pub fn summary(&self) -> String {
        let new = &self.lock;
        let extra = if new.urls.is_empty() && new.git.is_empty() {
            String::new()
        } else {
            format!(", {} URL(s), {} git ref(s)", new.urls.len(), new.git.len())
        };
        format!(
            "{}: {} image reference(s){extra}, {} moved",
            self.path.display(),
            new.pins.len(),
            self.moved()
        )
    }
}

/// The changes from `old` to `new` of one table: new and moved pins in order, then removed.
fn changes<V: PartialEq + std::fmt::Display>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    out: &mut Vec<PinLine>,
) {
    for (r, d) in new {
        let change = match old.get(r) {
            Some(o) if o == d => continue,
            Some(o) => PinChange::Moved {
                from: o.to_string(),
                to: d.to_string(),
            },
            None => PinChange::Pinned(d.to_string()),
        };
        out.push(PinLine {
            reference: r.clone(),
            change,
        });
    }
    for r in old.keys().filter(|r| !new.contains_key(*r)) {
        out.push(PinLine {
            reference: r.clone(),
            change: PinChange::Removed,
        });
    }
}

impl Session {
    /// Plans each image (resolving its references through one lock), resolves its unpinned
    /// `ADD` URLs and git refs, and writes the lock when it changed.
    pub fn lock(&self, req: &LockRequest) -> anyhow::Result<LockReport> {
        let mut lock: Option<Arc<LockedImages>> = None;
        for im in &req.images {
            let context_dir = std::fs::canonicalize(&im.context)
                .with_context(|| format!("build context `{}`", im.context.display()))?;
            let l = match &lock {
                Some(l) => l.clone(),
                None => {
                    let l = open_lock(
                        &req.lock_dir,
                        LocalImages::shared(&context_dir),
                        req.mode.clone(),
                    )?;
                    lock = Some(l.clone());
                    l
                }
            };
            // One lock for the workspace; each image resolves layouts in its own context.
            let per_image = Arc::new(l.with_resolver(self.image_resolver(&context_dir)?));
            let source = super::read_dockerfile(&context_dir, &im.dockerfile)?;
            let planned = plan::plan(&PlanRequest {
                dockerfile_name: im.dockerfile.display().to_string(),
                source,
                context_dir,
                build_args: im.build_args.clone(),
                target: im.target.clone(),
                platform: im.platform.clone(),
                images: Some(per_image.clone()),
            })?;
            l.absorb(&per_image)?;
            let remote = planned
                .order
                .iter()
                .flat_map(|&s| &planned.stages[s].steps)
                .filter_map(|step| match &step.kind {
                    plan::StepKind::Copy(spec) => Some(&spec.sources),
                    _ => None,
                })
                .flatten()
                .filter_map(|src| match src {
                    plan::CopySource::Url(u) => Some(RemoteRef::Url(u)),
                    plan::CopySource::Git(g) => Some(RemoteRef::Git(g)),
                    _ => None,
                });
            let scratch = tempfile::tempdir().context("a temporary directory for ADD downloads")?;
            crate::fetch::resolve_pins(
                remote,
                &self.fetch_options(Some(l.clone())),
                scratch.path(),
            )?;
        }
        let Some(l) = lock else {
            bail!("nothing to lock");
        };
        let old = l.lock();
        let new = Lockfile {
            pins: l.resolved(),
            urls: l.resolved_urls(),
            git: l.resolved_git(),
        };
        let mut lines = Vec::new();
        changes(&old.pins, &new.pins, &mut lines);
        changes(&old.urls, &new.urls, &mut lines);
        changes(&old.git, &new.git, &mut lines);
        if &new != old {
            new.write(l.path())?;
        }
        Ok(LockReport {
            path: l.path().to_path_buf(),
            changes: lines,
            lock: new,
        })
    }
}

/// The directory of a workspace file, where its `strata.lock` is.
pub fn workspace_lock_dir(file: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::fs::canonicalize(file)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_list_new_and_moved_pins_then_removed_ones() {
        let old: BTreeMap<String, String> = [("a", "1"), ("b", "2"), ("c", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let new: BTreeMap<String, String> = [("a", "1"), ("b", "9"), ("d", "4")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut lines = Vec::new();
        changes(&old, &new, &mut lines);
        let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["b: 2 -> 9", "d: pinned 4", "c: removed (no longer used)"]
        );
        let report = LockReport {
            path: "/w/strata.lock".into(),
            changes: lines,
            lock: Lockfile::default(),
        };
        assert_eq!(report.moved(), 1);
        assert_eq!(
            report.summary(),
            "/w/strata.lock: 0 image reference(s), 1 moved"
        );
    }
}
