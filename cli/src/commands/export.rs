//! `strata export NAME --output SPEC…`: writes a tagged image from the store.

use std::path::Path;

use anyhow::Context as _;
use strata_engine::export::{self, ImageName};
use strata_engine::image::AssembledImage;

use super::build::{parse_output, source_date_epoch, Output};
use crate::args::ExportArgs;

pub fn run(store_dir: &Path, a: ExportArgs) -> anyhow::Result<i32> {
    let outputs = a
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = super::open_store(store_dir)?;
    let (name, tag) = super::find_tag(&store, &a.name)?;
    let img = AssembledImage::from_store(store.blobs(), &tag.manifest)
        .with_context(|| format!("reading image `{name}`"))?;
    let names = [ImageName::parse(&name)?];
    for o in &outputs {
        match o {
            Output::OciDir(d) => export::write_oci_dir(store.blobs(), &img, &names, d)
                .with_context(|| format!("exporting `{name}` to `{}`", d.display()))?,
            Output::Archive(kind, f) => {
                // Archive entry mtimes: SOURCE_DATE_EPOCH as for `build --output`, else 0.
                let mtime = source_date_epoch(None)?;
                export::write_archive(store.blobs(), &img, &names, *kind, f, mtime)
                    .with_context(|| format!("exporting `{name}` to `{}`", f.display()))?;
            }
            Output::Registry(r) => {
                super::push::push_image(&store, &img.manifest_digest, r)?;
            }
        }
    }
    println!("{}", img.manifest_digest);
    Ok(0)
}
