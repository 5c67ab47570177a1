//! `strata build` (one Dockerfile; `--all` is [`super::workspace`]): the flags into a
//! [`strata_engine::session::BuildRequest`], [`strata_engine::session::Session::build`], the
//! digest on stdout.

use anyhow::Context as _;

use super::common::{self, process_env};
use super::Globals;
use crate::args::BuildArgs;
use crate::progress::Reporter;

pub fn run(g: &Globals, a: BuildArgs) -> anyhow::Result<i32> {
    let req = common::build_request(&a, &process_env)?;
    // Opened after the flags are checked: registry bases keep their manifests and configs in
    // the store.
    let session = g.session()?;
    let reporter = Reporter::new(a.progress, a.explain);
    let built = session.build(&req, &reporter)?;
    common::report_pushes(&built.outputs);
    reporter.finish(built.executed, built.cached, built.reused, built.elapsed);
    if let Some(f) = &a.iidfile {
        // The image ID as docker and buildx write it: the config digest, no newline.
        std::fs::write(f, built.config_digest.to_string())
            .with_context(|| format!("writing --iidfile `{}`", f.display()))?;
    }
    if let Some(f) = &a.metadata_file {
        let json = serde_json::to_vec_pretty(&built.buildx_metadata(&req.tags))?;
        std::fs::write(f, json)
            .with_context(|| format!("writing --metadata-file `{}`", f.display()))?;
    }
    // What the tags and outputs name: the image manifest, or the index holding it and its
    // attestations.
    println!("{}", built.digest());
    Ok(0)
}
