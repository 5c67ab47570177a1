//! The image index of a multi-platform build: one OCI index over the image manifest of each
//! platform, in the order the platforms were asked for (as buildx writes it), canonical JSON.
//! Each entry's `platform` is the normalised one the image's config carries, so the index, the
//! configs and `TARGETPLATFORM` agree.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use strata_cache::Digest;

use super::{canonical_json, AssembledImage, ImageError, Platform};
use crate::oci::{MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use strata_cache::BlobStore;

/// An index and the images it lists.
#[derive(Debug)]
pub struct AssembledIndex {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub images: Vec<(Platform, Arc<AssembledImage>)>,
}

impl AssembledIndex {
    /// Reads an index back from the store (a multi-platform build's tag): the index
    /// `digest`, and each image it lists ([`AssembledImage::from_store`]).
    pub fn from_store(blobs: &BlobStore, digest: &Digest) -> Result<AssembledIndex, ImageError> {
        let bad = |reason: String| ImageError::Stored {
            digest: *digest,
            reason,
        };
        let bytes = blobs
            .read_verified(digest)
            .map_err(|e| bad(e.to_string()))?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("does not parse: {e}")))?;
        let mut images = Vec::new();
        for m in v["manifests"].as_array().into_iter().flatten() {
            let d: Digest = m["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("an entry has no valid digest".into()))?;
            let p = &m["platform"];
            let text = format!(
                "{}/{}{}",
                p["os"].as_str().unwrap_or_default(),
                p["architecture"].as_str().unwrap_or_default(),
                p["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            );
            let platform = Platform::parse(&text).map_err(|e| bad(e.to_string()))?;
            images.push((platform, Arc::new(AssembledImage::from_store(blobs, &d)?)));
        }
        Ok(AssembledIndex {
            bytes,
            digest: *digest,
            images,
        })
    }
}

/// The `platform` object of an index entry.
pub fn platform_json(p: &Platform) -> Value {
    let mut m = Map::new();
    m.insert("architecture".into(), p.architecture.clone().into());
    m.insert("os".into(), p.os.clone().into());
    if let Some(v) = &p.variant {
        m.insert("variant".into(), v.clone().into());
    }
    Value::Object(m)
}

/// The index over `images` (one per platform, in this order).
pub fn assemble_index(images: Vec<(Platform, Arc<AssembledImage>)>) -> AssembledIndex {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(p, img)| {
            json!({
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": img.manifest_digest.to_string(),
                "size": img.manifest.len(),
                "platform": platform_json(p),
            })
        })
        .collect();
    let bytes = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": manifests,
    }));
    AssembledIndex {
        digest: Digest::of(&bytes),
        bytes,
        images,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tag: &[u8]) -> Arc<AssembledImage> {
        Arc::new(AssembledImage {
            config: tag.to_vec(),
            config_digest: Digest::of(tag),
            manifest: tag.to_vec(),
            manifest_digest: Digest::of(tag),
            layers: Vec::new(),
        })
    }

    #[test]
    fn the_index_lists_each_platform_in_order_canonically() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let arm = Platform::parse("linux/arm").unwrap();
        let idx = assemble_index(vec![(amd64, image(b"a")), (arm, image(b"bb"))]);
        let v: Value = serde_json::from_slice(&idx.bytes).unwrap();
        assert_eq!(v["mediaType"], MEDIA_TYPE_INDEX);
        assert_eq!(v["manifests"][0]["platform"]["architecture"], "amd64");
        assert!(v["manifests"][0]["platform"].get("variant").is_none());
        assert_eq!(v["manifests"][1]["platform"]["variant"], "v7");
        assert_eq!(v["manifests"][1]["size"], 2);
        assert_eq!(idx.digest, Digest::of(&idx.bytes));
        assert_eq!(canonical_json(&v), idx.bytes);
    }
}
