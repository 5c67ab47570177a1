//! `strata push NAME [REF]`.

use strata_engine::registry::Reference;

use super::{common, Globals};
use crate::args::PushArgs;

pub fn run(g: &Globals, a: PushArgs) -> anyhow::Result<i32> {
    let session = g.session()?;
    let (full, tag) = super::find_tag(session.store(), &a.name)?;
    let target = Reference::parse(a.reference.as_deref().unwrap_or(&full))
        .map_err(strata_engine::registry::RegistryError::from)?;
    let report = session.push(&tag.manifest, &target)?;
    eprintln!("{}", common::pushed_line(&target, &report));
    println!("{}", tag.manifest);
    Ok(0)
}
