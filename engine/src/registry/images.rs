//! [`RegistryImages`]: the [`ImageResolver`] that pulls. `oci-layout://` references go to the
//! wrapped [`LocalImages`]; everything else is a registry reference (`debian:12`,
//! `host:port/ns/name@sha256:…`), resolved to a platform's manifest and config (kept in the store)
//! with a [`RegistryFetcher`] that streams the layers in when a step needs them. Where a
//! reference is pulled from (mirrors, another location, blocked names) is decided by
//! `registries.conf` ([`RegistriesConf`]).

use std::sync::Arc;

use strata_cache::BlobStore;

use super::client::Client;
use super::error::RegistryError;
use super::pull;
use super::reference::Reference;
use super::registries_conf::RegistriesConf;
use crate::image::{
    BaseImage, BlobFetchError, BlobFetcher, BlobSource, ImageError, ImageResolver, LayerDesc,
    LocalImages, Platform,
};

pub struct RegistryImages {
    local: LocalImages,
    client: Arc<Client>,
    blobs: BlobStore,
    conf: Arc<RegistriesConf>,
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
        RegistryImages::with_conf(local, client, blobs, Arc::default())
    }

    /// Pulls through the mirrors and locations `conf` names (its insecure hosts must already
    /// be in the client's options).
    pub fn with_conf(
        local: LocalImages,
        client: Arc<Client>,
        blobs: BlobStore,
        conf: Arc<RegistriesConf>,
    ) -> RegistryImages {
        RegistryImages {
            local,
            client,
            blobs,
            conf,
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
        let endpoints = self.conf.endpoints(&r).map_err(|b| {
            let text = b.to_string();
            let (message, hint) = text.split_once("\nhint: ").unwrap_or((&text, ""));
            ImageError::Registry {
                message: message.to_string(),
                hint: Some(hint.to_string()).filter(|h| !h.is_empty()),
            }
        })?;
        // Mirrors in order, then the location: the first that has the image serves it. Every
        // byte is verified against its digest, so which one served changes nothing but speed.
        let mut failed_mirrors: Vec<String> = Vec::new();
        let mut served = None;
        for (i, ep) in endpoints.iter().enumerate() {
            match pull::resolve(&self.client, &self.blobs, &ep.reference, platform) {
                Ok(resolved) => {
                    served = Some((i, resolved));
                    break;
                }
                Err(e) if ep.mirror => {
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or_default().to_string();
                    failed_mirrors.push(first);
                }
                Err(e) => {
                    let mut err = image_error(e);
                    if let ImageError::Registry { message, .. } = &mut err {
                        if !failed_mirrors.is_empty() {
                            message.push_str(&format!(
                                "\n(after its mirrors in registries.conf failed:\n  {})",
                                failed_mirrors.join("\n  ")
                            ));
                        }
                    }
                    return Err(err);
                }
            }
        }
        let (i, resolved) = served.expect("the last endpoint is never a mirror");
        // Layers come from the endpoint that served the manifest first, then from the others.
        let mut sources = vec![endpoints[i].reference.clone()];
        sources.extend(
            endpoints
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, ep)| ep.reference.clone()),
        );
        Ok(BaseImage {
            reference: reference.to_string(),
            source: BlobSource::Fetcher(Arc::new(RegistryFetcher {
                client: self.client.clone(),
                sources,
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
    /// Where the blobs may come from, in order (a mirror that served the manifest first).
    sources: Vec<Reference>,
}

impl RegistryFetcher {
    pub fn new(client: Arc<Client>, reference: Reference) -> RegistryFetcher {
        RegistryFetcher {
            client,
            sources: vec![reference],
        }
    }

    /// `registry/repository`: where the blobs come from (a cross-repository mount source).
    pub fn name(&self) -> String {
        self.sources[0].name()
    }
}

impl BlobFetcher for RegistryFetcher {
    fn fetch(&self, layer: &LayerDesc, store: &BlobStore) -> Result<(), BlobFetchError> {
        self.fetch_observed(layer, store, &mut |_| false)
    }

    fn fetch_observed(
        &self,
        layer: &LayerDesc,
        store: &BlobStore,
        observe: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), BlobFetchError> {
        let mut first_err = None;
        // Only the first download is shown: a second one (another source) would show the
        // observer a stream that starts over.
        let mut observe = Some(observe);
        for r in &self.sources {
            match pull::fetch_blob(
                &self.client,
                store,
                r,
                &layer.digest,
                layer.size,
                observe.take(),
            ) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.map_or(BlobFetchError::NoSource, |e| Box::new(e).into()))
    }

    fn origin(&self) -> String {
        format!(
            "registry `{}`, repository `{}`",
            self.sources[0].registry, self.sources[0].repository
        )
    }
}
