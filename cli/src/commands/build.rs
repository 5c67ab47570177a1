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
    // Read before building: a key that cannot sign fails now, not after the build.
    let sign_key = a.sign_key.as_deref().map(common::signing_key).transpose()?;
    // Opened after the flags are checked: registry bases keep their manifests and configs in
    // the store.
    let session = g.session()?;
    let reporter = Reporter::new(a.progress, a.explain);
    let built = session.build(&req, &reporter)?;
    common::report_pushes(&built.outputs);
    if let Some(key) = &sign_key {
        let (signed, skipped) =
            session.sign_outputs(&built.digest(), &req.tags, &built.outputs, key)?;
        for s in &signed {
            eprintln!("{}", common::signed_line(s));
        }
        for s in skipped {
            eprintln!("not signed: {s} (an archive holds no signature tag; sign the image after loading it)");
        }
        if signed.is_empty() {
            eprintln!("not signed: the build has no tag, OCI layout or registry output to hold a signature\nhint: add -t NAME");
        }
    }
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
