//! Pushing an image from the store: blobs first (skipping what the registry has, mounting
//! from another repository of the same registry when we know one that has the blob, else
//! uploading: monolithic when small, chunked when large), then the manifest (children of an
//! index before the index). The manifest bytes are pushed exactly as stored, so the digest the
//! registry reports is the local one; a different answer is an error.

use strata_cache::{BlobStore, Digest};
use ureq::http::Method;

use super::client::{header, Call, Client, Payload};
use super::error::RegistryError;
use super::manifest::{self, Parsed};
use super::reference::Reference;

/// Blobs up to this size go up in one `PUT`; larger ones in `PATCH` chunks of this size.
pub const CHUNK: u64 = 8 << 20;

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// The digest of the manifest (or index) pushed under the reference.
    pub digest: Option<Digest>,
    /// Blobs the registry already had (`HEAD` said so).
    pub skipped: usize,
    /// Blobs mounted from another repository of the same registry.
    pub mounted: usize,
    /// Blobs uploaded whole.
    pub uploaded: usize,
    /// Blobs uploaded in chunks (also counted in `uploaded`).
    pub chunked: usize,
    /// Bytes sent for blobs.
    pub bytes: u64,
}

/// Where else a blob is known to be: `registry/repository` names (the pull that brought it).
pub type Origins<'a> = &'a dyn Fn(&Digest) -> Vec<String>;

/// Pushes the manifest or index `digest` (in the store, with its `media_type`) to `target`
/// (its tag, or by digest when it has none).
pub fn push(
    client: &Client,
    store: &BlobStore,
    digest: &Digest,
    target: &Reference,
    origins: Origins,
) -> Result<PushReport, RegistryError> {
    let mut report = PushReport::default();
    let tag = target.tag.clone().unwrap_or_else(|| digest.to_string());
    push_manifest(client, store, digest, target, &tag, origins, &mut report)?;
    report.digest = Some(*digest);
    Ok(report)
}

fn call<'a>(t: &'a Reference, op: String) -> Call<'a> {
    Call {
        registry: &t.registry,
        repository: &t.repository,
        op,
        actions: "pull,push",
    }
}

fn push_manifest(
    client: &Client,
    store: &BlobStore,
    digest: &Digest,
    t: &Reference,
    reference: &str,
    origins: Origins,
    report: &mut PushReport,
) -> Result<(), RegistryError> {
    let c = call(t, format!("push manifest {digest}"));
    let bytes = store.read_verified(digest)?;
    let parsed = manifest::parse(&bytes, None).map_err(|reason| RegistryError::BadResponse {
        site: c.site(),
        reason: format!("the stored manifest: {reason}"),
    })?;
    let bad = |reason: String| RegistryError::BadResponse {
        site: c.site(),
        reason,
    };
    match &parsed {
        Parsed::Index { manifests, .. } => {
            for m in manifests {
                let d = m.digest().map_err(|e| bad(e.to_string()))?;
                push_manifest(client, store, &d, t, &d.to_string(), origins, report)?;
            }
        }
        Parsed::Manifest { config, layers, .. } => {
            for d in std::iter::once(config).chain(layers) {
                let dg = d.digest().map_err(|e| bad(e.to_string()))?;
                push_blob(client, store, &dg, d.size, t, origins, report)?;
            }
        }
    }
    let url = client.url(
        &t.registry,
        &t.repository,
        &format!("manifests/{reference}"),
    );
    let resp = client.send_expect(
        &c,
        Method::PUT,
        &url,
        &[("content-type", parsed.media_type())],
        &Payload::Bytes(&bytes),
        &[200, 201],
    )?;
    if let Some(d) = header(&resp, "docker-content-digest") {
        if d != digest.to_string() {
            return Err(RegistryError::BadResponse {
                site: c.site(),
                reason: format!("the registry stored the manifest as {d}, not {digest}"),
            });
        }
    }
    Ok(())
}

fn push_blob(
    client: &Client,
    store: &BlobStore,
    digest: &Digest,
    size: u64,
    t: &Reference,
    origins: Origins,
    report: &mut PushReport,
) -> Result<(), RegistryError> {
    let c = call(t, format!("push blob {digest}"));
    let blob_url = client.url(&t.registry, &t.repository, &format!("blobs/{digest}"));
    let head = client.send(&c, Method::HEAD, &blob_url, &[], &Payload::Empty)?;
    match head.status().as_u16() {
        200 => {
            report.skipped += 1;
            return Ok(());
        }
        404 => {}
        _ => return Err(super::client::status_error(&c, head, 1)),
    }
    let path = store.path(digest);
    if !path.is_file() {
        return Err(RegistryError::BadResponse {
            site: c.site(),
            reason: format!(
                "blob {digest} is not in the store (`{}`); run `strata fsck`",
                path.display()
            ),
        });
    }
    // Cross-repository mount: only from a repository of the same registry.
    let prefix = format!("{}/", t.registry);
    let mut location = None;
    for origin in origins(digest) {
        let Some(from) = origin.strip_prefix(&prefix) else {
            continue;
        };
        if from == t.repository {
            continue;
        }
        let url = client.url(
            &t.registry,
            &t.repository,
            &format!("blobs/uploads/?mount={digest}&from={from}"),
        );
        let resp = client.send_expect(&c, Method::POST, &url, &[], &Payload::Empty, &[201, 202])?;
        if resp.status().as_u16() == 201 {
            report.mounted += 1;
            return Ok(());
        }
        // 202: the registry would not mount; it opened an upload session instead.
        location = header(&resp, "location");
        break;
    }
    let location = match location {
        Some(l) => l,
        None => {
            let url = client.url(&t.registry, &t.repository, "blobs/uploads/");
            let resp = client.send_expect(&c, Method::POST, &url, &[], &Payload::Empty, &[202])?;
            header(&resp, "location").ok_or_else(|| RegistryError::BadResponse {
                site: c.site(),
                reason: "upload session without a Location".into(),
            })?
        }
    };
    let mut location = client.absolute(&t.registry, &location);
    if size > CHUNK {
        let mut offset = 0;
        while offset < size {
            let len = CHUNK.min(size - offset);
            let range = format!("{}-{}", offset, offset + len - 1);
            let resp = client.send_expect(
                &c,
                Method::PATCH,
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                ],
                &Payload::File {
                    path: path.clone(),
                    offset,
                    len,
                },
                &[202],
            )?;
            let next = header(&resp, "location").ok_or_else(|| RegistryError::BadResponse {
                site: c.site(),
                reason: "chunk accepted without a Location".into(),
            })?;
            location = client.absolute(&t.registry, &next);
            offset += len;
        }
        report.chunked += 1;
        let url = with_digest(&location, digest);
        client.send_expect(&c, Method::PUT, &url, &[], &Payload::Empty, &[201])?;
    } else {
        let url = with_digest(&location, digest);
        client.send_expect(
            &c,
            Method::PUT,
            &url,
            &[("content-type", "application/octet-stream")],
            &Payload::File {
                path,
                offset: 0,
                len: size,
            },
            &[201],
        )?;
    }
    report.uploaded += 1;
    report.bytes += size;
    Ok(())
}

fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!(
        "{location}{sep}digest={}",
        digest.to_string().replace(':', "%3A")
    )
}
