//! `strata export NAME --output SPEC…`: writes a tagged image from the store.

use anyhow::Context as _;
use strata_engine::export::{ImageName, Root};
use strata_engine::image::index::AssembledIndex;
use strata_engine::image::{AssembledImage, MEDIA_TYPE_INDEX};
use strata_engine::session::output::OutputKind;

use super::common::{self, source_date_epoch};
use super::Globals;
use crate::args::ExportArgs;

pub fn run(g: &Globals, a: ExportArgs) -> anyhow::Result<i32> {
    let session = g.session()?;
    let store = session.store();
    let (name, tag) = super::find_tag(store, &a.name)?;
    // A multi-platform build's tag names an index over its platforms' images.
    let (image, index);
    let img: Root<'_> = if tag.media_type == MEDIA_TYPE_INDEX {
        index = AssembledIndex::from_store(store.blobs(), &tag.manifest)
            .with_context(|| format!("reading image `{name}`"))?;
        Root::Index(&index)
    } else {
        image = AssembledImage::from_store(store.blobs(), &tag.manifest)
            .with_context(|| format!("reading image `{name}`"))?;
        Root::Image(&image)
    };
    let names = [ImageName::parse(&name)?];
    for o in &a.outputs {
        let written = match o.kind() {
            OutputKind::OciDir(d) => session
                .write_output(img, &names, o, 0)
                .with_context(|| format!("exporting `{name}` to `{}`", d.display()))?,
            OutputKind::Archive(_, f) => {
                // Archive entry mtimes: SOURCE_DATE_EPOCH as for `build --output`, else 0.
                let mtime = source_date_epoch(None)?;
                session
                    .write_output(img, &names, o, mtime)
                    .with_context(|| format!("exporting `{name}` to `{}`", f.display()))?
            }
            OutputKind::Registry(_) => session.write_output(img, &names, o, 0)?,
        };
        common::report_pushes(std::slice::from_ref(&written));
    }
    println!("{}", img.digest());
    Ok(0)
}
