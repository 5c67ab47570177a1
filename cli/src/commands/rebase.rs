//! `strata rebase IMAGE --onto NEWBASE [--from OLDBASE] [--force]`: swap the base layers of an
//! image without executing anything (engine/src/session/rebase.rs says how, and the safety
//! check).

use strata_engine::session::RebaseRequest;

use super::{common, Globals};
use crate::args::RebaseArgs;

pub fn run(g: &Globals, a: RebaseArgs) -> anyhow::Result<i32> {
    let session = g.session()?;
    let report = session.rebase(&RebaseRequest {
        image: a.image,
        onto: a.onto.clone(),
        from: a.from,
        force: a.force,
        tags: a.tags,
        outputs: a.outputs,
        cwd: std::env::current_dir()?,
    })?;
    common::report_pushes(&report.outputs);
    eprintln!(
        "rebased `{}` onto `{}`: {} base layer(s) replaced by {}, {} layer(s) kept",
        report.image, a.onto, report.old_base_layers, report.new_base_layers, report.kept_layers
    );
    println!("{}", report.manifest_digest);
    Ok(0)
}
