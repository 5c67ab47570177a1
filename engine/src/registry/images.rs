//! [`RegistryImages`]: the [`ImageResolver`] that pulls. `oci-layout://` references go to the
//! wrapped [`LocalImages`]; everything else is a registry reference (`debian:12`,
//! `host:port/ns/name@sha256:…`), resolved to a platform's manifest and config (kept in the store)
//! with a [`RegistryFetcher`] that streams the layers in when a step needs them.

use std::sync::Arc;

use strata_cache::BlobStore;

use super::client::Client;
use super::error::RegistryError;
use super::pull;
use super::reference::Reference;
use crate::image::{
    BaseImage, BlobFetcher, BlobSource, ImageError, ImageResolver, LayerDesc, LocalImages, Platform,
};

pub struct RegistryImages {
    local: LocalImages,
    client: Arc<Client>,
    blobs: BlobStore,
}

impl std::fmt::Debug for RegistryImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryImages")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl RegistryImages {
    /// `blobs` is where manifests and configs are kept (the build's store).
    pub fn new(local: LocalImages, client: Arc<Client>, blobs: BlobStore) -> RegistryImages {
        RegistryImages {
            local,
            client,
            blobs,
        }
    }
}

/// A registry error as the planner reports it: the message, and the hint on its own.
pub fn image_error(e: RegistryError) -> ImageError {
    let text = e.to_string();
    let (message, hint) = match text.split_once("\nhint: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (text, None),
    };
    ImageError::Registry { message, hint }
}

impl ImageResolver for RegistryImages {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, ImageError> {
        if reference.contains("://") {
            return self.local.resolve(reference, platform);
        }
        let r = Reference::parse(reference).map_err(|e| image_error(e.into()))?;
        let resolved =
            pull::resolve(&self.client, &self.blobs, &r, platform).map_err(image_error)?;
        Ok(BaseImage {
            reference: reference.to_string(),
            source: BlobSource::Fetcher(Arc::new(RegistryFetcher {
                client: self.client.clone(),
                reference: r,
            })),
            pinned: resolved.pinned,
            manifest_digest: resolved.manifest_digest,
            config_digest: resolved.config_digest,
            config: resolved.config,
            layers: resolved.layers,
        })
    }
}

/// Streams an image's layers from its registry repository into the store, verified.
pub struct RegistryFetcher {
    client: Arc<Client>,
    reference: Reference,
}

impl RegistryFetcher {
    pub fn new(client: Arc<Client>, reference: Reference) -> RegistryFetcher {
        RegistryFetcher { client, reference }
    }

    /// `registry/repository`: where the blobs come from (a cross-repository mount source).
    pub fn name(&self) -> String {
        self.reference.name()
    }
}

impl BlobFetcher for RegistryFetcher {
    fn fetch(&self, layer: &LayerDesc, store: &BlobStore) -> Result<(), String> {
        pull::fetch_blob(
            &self.client,
            store,
            &self.reference,
            &layer.digest,
            layer.size,
        )
        .map_err(|e| e.to_string())
    }

    fn origin(&self) -> String {
        format!(
            "registry `{}`, repository `{}`",
            self.reference.registry, self.reference.repository
        )
    }
}
