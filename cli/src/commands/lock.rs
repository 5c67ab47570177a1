//! `strata lock` and the lock file of `strata build` (engine/src/lock.rs has the format).
//!
//! A build pins every image reference it resolves: a new reference is resolved and added to
//! `strata.lock` (beside the Dockerfile, or beside `strata.toml` for a workspace) after the
//! build succeeds; a pinned one is resolved by its digest, so a moved tag changes nothing.
//! `--locked` (CI) fails when a reference is not pinned and never writes the file.
//! `strata lock` resolves without building and writes exactly the references in use;
//! `strata lock --update [REF…]` re-resolves (all, or those) and prints what moved.
//! `ADD` URLs (without `--checksum`) and git refs are pinned the same way: `strata lock`
//! downloads each unpinned URL once to learn its digest and resolves each unpinned ref with
//! `git ls-remote`; `--update URL` or `--update REPO#REF` re-pins one of them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use strata_engine::fetch::RemoteRef;
use strata_engine::image::{ImageResolver, LocalImages, Platform};
use strata_engine::lock::{LockMode, LockedImages, Lockfile, LOCK_FILE};
use strata_engine::plan::{self, PlanRequest};

use super::build::{build_args_of, process_env};
use crate::args::LockArgs;

/// Opens the lock at `dir/strata.lock` for a run in `mode`, over `inner`.
pub(crate) fn open(
    dir: &Path,
    inner: Arc<dyn ImageResolver>,
    mode: LockMode,
) -> anyhow::Result<Arc<LockedImages>> {
    let path = dir.join(LOCK_FILE);
    let lock = match Lockfile::read(&path)? {
        Some(l) => l,
        None if mode == LockMode::Locked => bail!(
            "--locked: no lock file `{}`\nhint: run `strata lock` and commit strata.lock",
            path.display()
        ),
        None => Lockfile::default(),
    };
    Ok(Arc::new(LockedImages::new(inner, lock, &path, mode)))
}

/// After a successful build: adds what it resolved to the lock file (never under --locked).
pub(crate) fn save_after_build(l: &LockedImages) -> anyhow::Result<()> {
    if *l.mode() == LockMode::Locked {
        return Ok(());
    }
    let merged = l.merged();
    if &merged != l.lock() {
        merged.write(l.path())?;
    }
    Ok(())
}

/// Prints how the pins of one table changed (as for images); returns how many moved.
fn report<V: PartialEq + std::fmt::Display>(
    old: &std::collections::BTreeMap<String, V>,
    new: &std::collections::BTreeMap<String, V>,
) -> usize {
    let mut moved = 0;
    for (r, d) in new {
        match old.get(r) {
            Some(o) if o == d => {}
            Some(o) => {
                moved += 1;
                println!("{r}: {o} -> {d}");
            }
            None => println!("{r}: pinned {d}"),
        }
    }
    for r in old.keys().filter(|r| !new.contains_key(*r)) {
        println!("{r}: removed (no longer used)");
    }
    moved
}

pub fn run(store_dir: &Path, a: LockArgs) -> anyhow::Result<i32> {
    // Registry manifests and configs land in the store, as in a build.
    let store = super::open_store(store_dir)?;
    let mode = match &a.update {
        Some(refs) => LockMode::Update(refs.iter().cloned().collect::<BTreeSet<_>>()),
        None => LockMode::Use,
    };
    let b = &a.build;
    // (dir of the lock, [(context, dockerfile, args)])
    let (lock_dir, images) = if b.all || b.workspace.is_some() {
        let file = b.workspace.clone().unwrap_or_else(|| "strata.toml".into());
        if !file.is_file() {
            bail!("no workspace file `{}`\nhint: run in the folder that holds strata.toml, or pass --workspace FILE", file.display());
        }
        let planned = super::workspace::plan_images(&file, b)?;
        let dir = std::fs::canonicalize(&file)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let list = planned
            .into_iter()
            .map(|p| (p.context, p.dockerfile, p.args))
            .collect::<Vec<_>>();
        (dir, list)
    } else {
        let dockerfile = b
            .file
            .clone()
            .unwrap_or_else(|| super::default_dockerfile(&b.context));
        let dir = dockerfile
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (dir, vec![(b.context.clone(), dockerfile, b.clone())])
    };
    let mut lock: Option<Arc<LockedImages>> = None;
    for (context, dockerfile, args) in &images {
        let context_dir = std::fs::canonicalize(context)
            .with_context(|| format!("build context `{}`", context.display()))?;
        let l = match &lock {
            Some(l) => l.clone(),
            None => {
                let l = open(&lock_dir, LocalImages::shared(&context_dir), mode.clone())?;
                lock = Some(l.clone());
                l
            }
        };
        // One lock for the workspace; each image resolves layouts in its own context.
        let per_image = Arc::new(l.with_resolver(super::image_resolver(&context_dir, &store)?));
        let source = super::read_dockerfile(&context_dir, dockerfile)?;
        let platform = match &args.platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        };
        let planned = plan::plan(&PlanRequest {
            dockerfile_name: dockerfile.display().to_string(),
            source,
            context_dir,
            build_args: build_args_of(&args.build_args, &process_env)?,
            target: args.target.clone(),
            platform,
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
        strata_engine::fetch::resolve_pins(
            remote,
            &super::fetch_options(Some(l.clone())),
            scratch.path(),
        )?;
    }
    let Some(l) = lock else {
        bail!("nothing to lock");
    };
    let resolved = l.resolved();
    let old = l.lock();
    for (r, d) in &resolved {
        match old.pins.get(r) {
            Some(o) if o == d => {}
            Some(o) => println!("{r}: {o} -> {d}"),
            None => println!("{r}: pinned {d}"),
        }
    }
    for r in old.pins.keys().filter(|r| !resolved.contains_key(*r)) {
        println!("{r}: removed (no longer used)");
    }
    let mut moved = resolved
        .iter()
        .filter(|(r, d)| old.pins.get(*r).is_some_and(|o| o != *d))
        .count();
    let urls = l.resolved_urls();
    let git = l.resolved_git();
    moved += report(&old.urls, &urls);
    moved += report(&old.git, &git);
    let new = Lockfile {
        pins: resolved,
        urls,
        git,
    };
    if &new != old {
        new.write(l.path())?;
    }
    let extra = if new.urls.is_empty() && new.git.is_empty() {
        String::new()
    } else {
        format!(", {} URL(s), {} git ref(s)", new.urls.len(), new.git.len())
    };
    eprintln!(
        "{}: {} image reference(s){extra}, {moved} moved",
        l.path().display(),
        new.pins.len()
    );
    Ok(0)
}
