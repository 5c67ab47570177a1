//! `strata push NAME [REF]`.

use std::path::Path;

use anyhow::Context as _;
use strata_cache::Store;
use strata_engine::registry::{push, Reference};

use crate::args::PushArgs;

pub fn run(store_dir: &Path, a: PushArgs) -> anyhow::Result<i32> {
    let store = super::open_store(store_dir)?;
    let (full, tag) = super::find_tag(&store, &a.name)?;
    let target = Reference::parse(a.reference.as_deref().unwrap_or(&full))
        .map_err(strata_engine::registry::RegistryError::from)?;
    let digest = push_image(&store, &tag.manifest, &target)?;
    println!("{digest}");
    Ok(0)
}

/// Pushes the manifest `digest` from the store to `target`, says what it did on stderr and
/// returns the pushed digest. Records where its blobs now are, for later cross-repository mounts.
pub(crate) fn push_image(
    store: &Store,
    digest: &strata_cache::Digest,
    target: &Reference,
) -> anyhow::Result<strata_cache::Digest> {
    let client = super::registry_client();
    let index = store.index();
    let origins = |d: &strata_cache::Digest| index.get_blob_origins(d).unwrap_or_default();
    let report = push::push(&client, store.blobs(), digest, target, &origins)
        .with_context(|| format!("pushing to `{target}`"))?;
    // Every blob the manifest names is now in the target repository.
    let bytes = store.blobs().read_verified(digest)?;
    if let Ok(strata_engine::registry::manifest::Parsed::Manifest { config, layers, .. }) =
        strata_engine::registry::manifest::parse(&bytes, None)
    {
        for d in std::iter::once(&config).chain(&layers) {
            if let Ok(dg) = d.digest() {
                let _ = index.add_blob_origin(&dg, &target.name());
            }
        }
    }
    eprintln!(
        "pushed {target}: {} blobs uploaded ({} chunked, {} bytes), {} mounted, {} already there",
        report.uploaded, report.chunked, report.bytes, report.mounted, report.skipped
    );
    Ok(*digest)
}
