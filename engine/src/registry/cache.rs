//! The shared step cache in a registry: [`crate::remote_cache`]'s artifact, pushed and pulled
//! with the same client as images. Pushing skips the layer blobs the registry has; pulling
//! reads the manifest and the records blob only — layers come later, one by one, when a build
//! reuses their step.

use std::sync::Arc;

use strata_cache::{BlobStore, Digest};

use super::client::Client;
use super::error::RegistryError;
use super::images::RegistryFetcher;
use super::pull;
use super::push::{self, PushReport};
use super::reference::Reference;
use crate::remote_cache::{self, CacheRecords, ImportedCache};

/// Pushes `records` (their layer blobs must be in `store`) as the cache `target`.
pub fn push_cache(
    client: &Client,
    store: &BlobStore,
    records: &CacheRecords,
    target: &Reference,
) -> Result<PushReport, RegistryError> {
    let json = records.to_json();
    store.put(&json)?;
    store.put(b"{}")?;
    let (manifest, _) = store.put(&remote_cache::manifest(records, &json))?;
    push::push(client, store, &manifest, target, &|_| Vec::new())
}

/// Reads the cache `source`: its manifest and records (verified, kept in `store`). A cache that
/// does not exist yet (the first CI run) is empty, not an error.
pub fn pull_cache(
    client: Arc<Client>,
    store: &BlobStore,
    source: &Reference,
) -> Result<ImportedCache, RegistryError> {
    let origin = format!("registry:{source}");
    let fetcher = Arc::new(RegistryFetcher::new(client.clone(), source.clone()));
    let (_, manifest, _) = match pull::get_manifest(&client, store, source, &source.manifest_ref())
    {
        Ok(m) => m,
        Err(e) if e.is_not_found() => {
            return Ok(ImportedCache::new(CacheRecords::default(), fetcher))
        }
        Err(e) => return Err(e),
    };
    let bad = |e: remote_cache::RemoteCacheError| RegistryError::BadResponse {
        site: super::error::Site {
            registry: source.registry.clone(),
            repository: source.repository.clone(),
            op: "pull cache".into(),
        },
        reason: e.to_string(),
    };
    let (records_digest, size): (Digest, u64) =
        remote_cache::records_descriptor(&manifest, &origin).map_err(bad)?;
    pull::fetch_blob(&client, store, source, &records_digest, size, None)?;
    let json = store.read_verified(&records_digest)?;
    let records = CacheRecords::from_json(&json, &origin).map_err(bad)?;
    Ok(ImportedCache::new(records, fetcher))
}
