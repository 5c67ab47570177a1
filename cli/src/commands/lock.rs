//! `strata lock` (engine/src/lock.rs has the format; engine/src/session/lock.rs does the work).
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
use std::path::{Path, PathBuf};

use strata_engine::lock::LockMode;
use strata_engine::session::build::target_platforms;
use strata_engine::session::lock::workspace_lock_dir;
use strata_engine::session::{dockerfile_dir, LockImage, LockRequest};

use super::common::{build_args_of, dockerfile_of, process_env};
use super::{workspace_file, Globals};
use crate::args::LockArgs;

pub fn run(g: &Globals, a: LockArgs) -> anyhow::Result<i32> {
    // Registry manifests and configs land in the store, as in a build.
    let session = g.session()?;
    let mode = match &a.update {
        Some(refs) => LockMode::Update(refs.iter().cloned().collect::<BTreeSet<_>>()),
        None => LockMode::Use,
    };
    // Each platform resolves its own references (`FROM base-$TARGETARCH`) and must find its
    // entry in every index; `--platform` wins over a workspace image's `platforms`.
    let image = |context: &Path,
                 dockerfile: PathBuf,
                 build_args: &[String],
                 target: Option<String>,
                 platforms: Option<String>| {
        let platforms = target_platforms(a.platform.as_deref().or(platforms.as_deref()))?;
        let build_args = build_args_of(build_args, &process_env)?;
        anyhow::Ok(
            platforms
                .into_iter()
                .map(|platform| LockImage {
                    context: context.to_path_buf(),
                    dockerfile: dockerfile.clone(),
                    build_args: build_args.clone(),
                    target: target.clone(),
                    platform,
                })
                .collect::<Vec<_>>(),
        )
    };
    let (lock_dir, images) = if a.all || a.workspace.is_some() {
        let file = workspace_file::file_of(a.workspace.as_ref())?;
        let images = workspace_file::read(&file, &a.build_args)?
            .into_iter()
            .map(|p| {
                let target = p.target.or(a.target.clone());
                let platforms = p.platforms.map(|ps| ps.join(","));
                image(&p.context, p.dockerfile, &p.build_args, target, platforms)
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        (workspace_lock_dir(&file)?, images)
    } else {
        let dockerfile = dockerfile_of(a.file.as_ref(), &a.context);
        let dir = dockerfile_dir(&dockerfile);
        let each = image(
            &a.context,
            dockerfile,
            &a.build_args,
            a.target.clone(),
            None,
        )?;
        (dir, each)
    };
    let report = session.lock(&LockRequest {
        lock_dir,
        mode,
        images,
    })?;
    for line in &report.changes {
        println!("{line}");
    }
    eprintln!("{}", report.summary());
    Ok(0)
}
