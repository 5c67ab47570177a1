//! `strata export NAME --output SPEC…`: writes a tagged image from the store.

use anyhow::Context as _;
use strata_engine::export::ArchiveKind;
use strata_engine::export::{ImageName, Root, Stored};
use strata_engine::session::output::OutputKind;

use super::common::{self, source_date_epoch};
use super::Globals;
use crate::args::ExportArgs;

pub fn run(g: &Globals, a: ExportArgs) -> anyhow::Result<i32> {
    let session = g.session()?;
    let store = session.store();
    let (name, tag) = super::find_tag(store, &a.name)?;
    // A tag names an image, an image with its attestations (an index holding both), or a
    // multi-platform build's index over its platforms' images.
    let stored = Stored::load(store.blobs(), &tag.manifest, &tag.media_type)
        .with_context(|| format!("reading image `{name}`"))?;
    let img = stored.root();
    let names = [ImageName::parse(&name)?];
    for o in &a.outputs {
        let written = match o.kind() {
            OutputKind::OciDir(d) => session
                .write_output(img, &names, o, 0)
                .with_context(|| format!("exporting `{name}` to `{}`", d.display()))?,
            OutputKind::Archive(kind, f) => {
                // Archive entry mtimes: SOURCE_DATE_EPOCH as for `build --output`, else 0.
                let mtime = source_date_epoch(None)?;
                // A docker-archive holds one image manifest: an attested image goes without
                // its attestations, said on stderr (the build refuses instead, where they were
                // asked for).
                let img = match (kind, img) {
                    (ArchiveKind::Docker, Root::Attested(i, _)) => {
                        eprintln!(
                            "note: `{}`: a docker-archive cannot carry attestations; `{name}` is written without them",
                            f.display()
                        );
                        Root::Image(i)
                    }
                    _ => img,
                };
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
