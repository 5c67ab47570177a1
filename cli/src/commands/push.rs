//! `strata push NAME [REF]`; a signature of the image in the store (`strata sign`, `build
//! --sign-key`) goes along to the same repository, as cosign keeps it.

use strata_engine::export::ImageName;
use strata_engine::registry::Reference;
use strata_engine::sign::signature_tag;

use super::{common, Globals};
use crate::args::PushArgs;

pub fn run(g: &Globals, a: PushArgs) -> anyhow::Result<i32> {
    let session = g.session()?;
    let (full, tag) = super::find_tag(session.store(), &a.name)?;
    let target = Reference::parse(a.reference.as_deref().unwrap_or(&full))
        .map_err(strata_engine::registry::RegistryError::from)?;
    let report = session.push(&tag.manifest, &target)?;
    eprintln!("{}", common::pushed_line(&target, &report));
    if let Some(sig) = session.stored_signature(&ImageName::parse(&full)?, &tag.manifest)? {
        let to = target.with_tag(&signature_tag(&tag.manifest));
        let report = session.push(&sig, &to)?;
        eprintln!("{}", common::pushed_line(&to, &report));
    }
    println!("{}", tag.manifest);
    Ok(0)
}
