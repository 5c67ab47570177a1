//! `strata export NAME --output SPEC…`: writes a tagged image from the store.

use anyhow::Context as _;
use strata_engine::export::ImageName;
use strata_engine::image::AssembledImage;
use strata_engine::session::output::OutputKind;

use super::common::{self, source_date_epoch};
use super::Globals;
use crate::args::ExportArgs;

pub fn run(g: &Globals, a: ExportArgs) -> anyhow::Result<i32> {
    let session = g.session()?;
    let store = session.store();
    let (name, tag) = super::find_tag(store, &a.name)?;
    let img = AssembledImage::from_store(store.blobs(), &tag.manifest)
        .with_context(|| format!("reading image `{name}`"))?;
    let names = [ImageName::parse(&name)?];
    for o in &a.outputs {
        let written = match o.kind() {
            OutputKind::OciDir(d) => session
                .write_output(&img, &names, o, 0)
                .with_context(|| format!("exporting `{name}` to `{}`", d.display()))?,
            OutputKind::Archive(_, f) => {
                // Archive entry mtimes: SOURCE_DATE_EPOCH as for `build --output`, else 0.
                let mtime = source_date_epoch(None)?;
                session
                    .write_output(&img, &names, o, mtime)
                    .with_context(|| format!("exporting `{name}` to `{}`", f.display()))?
            }
            OutputKind::Registry(_) => session.write_output(&img, &names, o, 0)?,
        };
        common::report_pushes(std::slice::from_ref(&written));
    }
    println!("{}", img.manifest_digest);
    Ok(0)
}
