//! Pulling: resolve a reference to a platform's manifest, config and layer list (JSON only,
//! each verified against its digest and kept in the store), and stream layer blobs into the
//! store, verified before they become visible.

use std::io::{self, Read};

use serde_json::Value;
use strata_cache::{BlobStore, Digest, StoreError};
use ureq::http::Method;

use super::client::{header, Call, Client, Payload};
use super::error::RegistryError;
use super::manifest::{self, Parsed, ACCEPT, CONFIG_LIMIT, MANIFEST_LIMIT};
use super::reference::Reference;
use crate::image::{LayerDesc, Platform};

/// What a reference resolved to for one platform.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The digest the reference named or its tag pointed at (an index or a manifest): what a
    /// lockfile pins.
    pub pinned: Digest,
    /// The platform's image manifest.
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// The config JSON exactly as stored.
    pub config: Value,
    pub layers: Vec<LayerDesc>,
}

fn call<'a>(r: &'a Reference, op: String) -> Call<'a> {
    Call {
        registry: &r.registry,
        repository: &r.repository,
        op,
        actions: "pull",
    }
}

/// Resolves `r` for `platform`. A reference by digest whose manifest (and config) are already
/// in the store needs no network.
pub fn resolve(
    client: &Client,
    store: &BlobStore,
    r: &Reference,
    platform: &Platform,
) -> Result<PulledImage, RegistryError> {
    let (pinned, bytes, content_type) = get_manifest(client, store, r, &r.manifest_ref())?;
    let parsed = manifest::parse(&bytes, content_type.as_deref()).map_err(|reason| {
        RegistryError::BadResponse {
            site: call(r, format!("manifest `{}`", r.manifest_ref())).site(),
            reason: reason.to_string(),
        }
    })?;
    let (manifest_digest, parsed) = match parsed {
        Parsed::Index { manifests, .. } => {
            let d = manifest::select(&manifests, platform).map_err(|available| {
                RegistryError::NoPlatform {
                    reference: r.to_string(),
                    platform: platform.to_string(),
                    available: available.to_string(),
                }
            })?;
            let bad = |reason: String| RegistryError::BadResponse {
                site: call(r, format!("index {pinned}")).site(),
                reason,
            };
            let digest = d.digest().map_err(|e| bad(e.to_string()))?;
            if d.size > MANIFEST_LIMIT {
                return Err(RegistryError::TooLarge {
                    site: call(r, format!("manifest {digest}")).site(),
                    what: "the manifest",
                    limit: MANIFEST_LIMIT,
                });
            }
            let (_, bytes, ct) = get_manifest(client, store, r, &digest.to_string())?;
            let parsed = manifest::parse(&bytes, ct.as_deref()).map_err(|reason| {
                RegistryError::BadResponse {
                    site: call(r, format!("manifest {digest}")).site(),
                    reason: reason.to_string(),
                }
            })?;
            if matches!(parsed, Parsed::Index { .. }) {
                return Err(bad("an index inside an index is not supported".into()));
            }
            (digest, parsed)
        }
        m => (pinned, m),
    };
    let Parsed::Manifest { config, layers, .. } = parsed else {
        unreachable!("indexes are resolved above")
    };
    let site = |op: String| call(r, op).site();
    let bad = |reason: String| RegistryError::BadResponse {
        site: site(format!("manifest {manifest_digest}")),
        reason,
    };
    let config_digest = config.digest().map_err(|e| bad(e.to_string()))?;
    if config.size > CONFIG_LIMIT {
        return Err(RegistryError::TooLarge {
            site: site(format!("config {config_digest}")),
            what: "the image config",
            limit: CONFIG_LIMIT,
        });
    }
    fetch_blob(client, store, r, &config_digest, config.size, None)?;
    let config_bytes = store.read_verified(&config_digest)?;
    let config_json: Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad(format!("config {config_digest} is not JSON: {e}")))?;
    let diff_ids: Vec<Digest> = config_json
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(bad(format!(
            "{} layers but the config lists {} diff_ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    let mut out = Vec::new();
    for (l, diff_id) in layers.iter().zip(diff_ids) {
        if crate::layer::Compression::from_media_type(&l.media_type).is_none() {
            return Err(bad(format!(
                "layer {} has media type `{}`, which strata cannot unpack (supported: tar, tar+gzip, tar+zstd)",
                l.digest, l.media_type
            )));
        }
        out.push(LayerDesc {
            digest: l.digest().map_err(|e| bad(e.to_string()))?,
            size: l.size,
            media_type: l.media_type.clone(),
            diff_id,
        });
    }
    Ok(PulledImage {
        pinned,
        manifest_digest,
        config_digest,
        config: config_json,
        layers: out,
    })
}

/// Fetches the manifest `reference` (a tag or a digest) of `r`'s repository, verifies it
/// (against the digest asked for, or the `Docker-Content-Digest` the registry sent) and keeps it
/// in the store. Returns its digest, bytes and content type.
pub(crate) fn get_manifest(
    client: &Client,
    store: &BlobStore,
    r: &Reference,
    reference: &str,
) -> Result<(Digest, Vec<u8>, Option<String>), RegistryError> {
    let c = call(r, format!("pull manifest `{reference}`"));
    let by_digest: Option<Digest> = reference.parse().ok();
    if let Some(d) = by_digest {
        if store.contains(&d) {
            // Content-addressed: what the store has under this digest is this manifest.
            if let Ok(bytes) = store.read_verified(&d) {
                return Ok((d, bytes, None));
            }
        }
    }
    let url = client.url(
        &r.registry,
        &r.repository,
        &format!("manifests/{reference}"),
    );
    let mut resp = client.send_expect(
        &c,
        Method::GET,
        &url,
        &[("accept", ACCEPT)],
        &Payload::Empty,
        &[200],
    )?;
    let too_large = || RegistryError::TooLarge {
        site: c.site(),
        what: "the manifest",
        limit: MANIFEST_LIMIT,
    };
    if header(&resp, "content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MANIFEST_LIMIT)
    {
        return Err(too_large());
    }
    let content_type = header(&resp, "content-type");
    let sent_digest = header(&resp, "docker-content-digest");
    let bytes = match resp
        .body_mut()
        .with_config()
        .limit(MANIFEST_LIMIT)
        .read_to_vec()
    {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(_)) => return Err(too_large()),
        Err(e) => {
            return Err(RegistryError::Network {
                site: c.site(),
                reason: format!("reading the manifest: {e}"),
                attempts: 1,
            })
        }
    };
    let found = Digest::of(&bytes);
    let expected = match by_digest {
        Some(d) => Some(d),
        None => sent_digest.and_then(|s| s.parse().ok()),
    };
    if let Some(expected) = expected {
        if expected != found {
            return Err(RegistryError::DigestMismatch {
                site: Box::new(c.site()),
                expected,
                found,
            });
        }
    }
    let mut w = store.writer()?;
    io::Write::write_all(&mut w, &bytes).map_err(|e| StoreError::Io {
        op: "write",
        path: store.path(&found),
        source: e,
    })?;
    w.commit_verified(&found)?;
    Ok((found, bytes, content_type))
}

/// Streams blob `digest` of `r`'s repository into the store unless it is there already.
/// Nothing is stored unless the whole blob arrived with the expected size and digest; a
/// connection that breaks off mid-blob is retried from the start.
pub fn fetch_blob(
    client: &Client,
    store: &BlobStore,
    r: &Reference,
    digest: &Digest,
    size: u64,
    mut observe: Option<Observer<'_>>,
) -> Result<(), RegistryError> {
    if store.contains(digest) {
        return Ok(());
    }
    let c = call(r, format!("pull blob {digest}"));
    let url = client.url(&r.registry, &r.repository, &format!("blobs/{digest}"));
    let attempts = client.retry_policy().attempts;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let resp = client.send_expect(&c, Method::GET, &url, &[], &Payload::Empty, &[200])?;
        if let Some(n) = header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            if n != size {
                return Err(RegistryError::SizeMismatch {
                    site: c.site(),
                    expected: size,
                    found: n,
                });
            }
        }
        let mut w = store.writer()?;
        // One byte more than expected is enough to tell an oversized blob.
        // Through a 256 KiB buffer, which `io::copy` writes out as it fills (its own is 8 KiB):
        // a download shown to an observer goes over in a few hundred pieces per 50 MB.
        let mut body =
            io::BufReader::with_capacity(256 << 10, resp.into_body().into_reader().take(size + 1));
        // The first attempt's bytes are shown to `observe`; a retry's are not (they start over).
        let copied = io::copy(
            &mut body,
            &mut Shown {
                inner: &mut w,
                observe: observe.take(),
            },
        );
        let got = w.size();
        match copied {
            Ok(_) if got > size => {
                return Err(RegistryError::SizeMismatch {
                    site: c.site(),
                    expected: size,
                    found: got,
                })
            }
            Ok(_) if got == size => {
                return match w.commit_verified(digest) {
                    Ok(_) => Ok(()),
                    Err(StoreError::DigestMismatch { found, .. }) => {
                        Err(RegistryError::DigestMismatch {
                            site: Box::new(c.site()),
                            expected: *digest,
                            found,
                        })
                    }
                    Err(e) => Err(e.into()),
                };
            }
            result => {
                // Short: the connection broke off (or closed early). Drop removes the temp file.
                drop(w);
                let why = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "connection closed".into(),
                };
                if attempt >= attempts {
                    return Err(RegistryError::Network {
                        site: c.site(),
                        reason: format!("blob truncated: received {got} of {size} bytes ({why}); nothing was stored"),
                        attempts: attempt,
                    });
                }
                std::thread::sleep(client.retry_policy().initial * attempt);
            }
        }
    }
}

/// What a download is shown to as it arrives (`BlobFetcher::fetch_observed`); false: no more.
pub type Observer<'a> = &'a mut dyn FnMut(&[u8]) -> bool;

/// Writes to `inner` and shows what was written to `observe`, until it wants no more.
struct Shown<'w, 'o, W> {
    inner: &'w mut W,
    observe: Option<Observer<'o>>,
}

impl<W: io::Write> io::Write for Shown<'_, '_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(o) = self.observe.as_mut() {
            if !o(&buf[..n]) {
                self.observe = None;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
