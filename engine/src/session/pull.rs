//! [`Session::pull`]: a registry image into the store without building anything, for
//! commands that compare a published image with a local one (`strata diff registry:REF`,
//! `strata verify --against registry:REF`).

use std::path::Path;

use anyhow::Context as _;
use strata_cache::Digest;

use super::Session;
use crate::image::{BlobSource, Platform};

impl Session {
    /// Resolves the registry reference `reference` for `platform` (through the mirrors of
    /// `registries.conf`, with the session's credentials and insecure hosts) and brings its
    /// manifest, config and layers into the store, each verified against its digest.
    /// Returns the manifest digest; nothing is tagged.
    pub fn pull(&self, reference: &str, platform: &Platform) -> anyhow::Result<Digest> {
        if reference.contains("://") {
            anyhow::bail!(
                "`{reference}` is not a registry reference\nhint: name it as `registry:HOST/NAME:TAG` (or `@sha256:…`)"
            );
        }
        let resolver = self.image_resolver(Path::new("."))?;
        let base = resolver
            .resolve(reference, platform)
            .map_err(|e| match e.hint() {
                Some(h) => anyhow::anyhow!("{e}\nhint: {h}"),
                None => anyhow::anyhow!("{e}"),
            })?;
        let BlobSource::Fetcher(fetcher) = &base.source else {
            anyhow::bail!(
                "`{reference}` resolved to {}, not a registry",
                base.source.origin()
            );
        };
        for l in &base.layers {
            fetcher
                .fetch(l, self.store().blobs())
                .with_context(|| format!("pulling layer {} of `{reference}`", l.digest))?;
        }
        Ok(base.manifest_digest)
    }
}
