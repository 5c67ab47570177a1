//! Attestations: in-toto statements about a built image, stored as BuildKit stores them so
//! existing tools (skopeo, regctl, `docker buildx imagetools`, Scout) read them.
//!
//! - [`Statement`] ([`statement`]): a predicate type and body; [`statement::statement`] wraps
//!   it in an in-toto Statement v1 about the image manifest, as canonical JSON.
//! - [`provenance`]: the SLSA provenance v1 predicate of a build (`strata build --provenance`).
//! - [`sbom`]: the image's packages as SPDX or CycloneDX (`strata build --sbom`).
//! - [`vsa`]: the SLSA Verification Summary of a reproducibility check (`strata verify
//!   --attest-verification`).
//! - [`attach`]: writes the *attestation manifest* (one `application/vnd.in-toto+json` layer
//!   per statement) and the image index that holds the image and it; [`Attested`] is that
//!   index, read back by [`Attested::from_store`].
//!
//! The layout (BuildKit's "attestation storage", docs/attestations.md): the image index lists
//! the image manifest (with its platform), then the attestation manifest with platform
//! `unknown/unknown` (so no runtime picks it) and the annotations
//! `vnd.docker.reference.type: attestation-manifest` and `vnd.docker.reference.digest:
//! <image manifest digest>`. Every byte is canonical JSON with no clock, host or path in it:
//! the index digest reproduces like the image digest does.

pub mod provenance;
#[cfg(feature = "store")]
pub mod sbom;
pub mod statement;
pub mod vsa;

use serde_json::{json, Value};
use strata_cache::{BlobStore, Digest, StoreError};

use crate::image::{canonical_json, AssembledImage, ImageError, Platform};
use crate::oci::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
pub use statement::Statement;

/// Media type of a layer holding an in-toto statement (JSON).
pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
/// Layer annotation: the statement's `predicateType`, so a reader can pick one without
/// fetching the others.
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// Index-entry annotation: what kind of artifact the entry is.
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
/// Index-entry annotation: the digest of the manifest the attestations are about.
pub const REFERENCE_DIGEST_ANNOTATION: &str = "vnd.docker.reference.digest";
/// [`REFERENCE_TYPE_ANNOTATION`]'s value on an attestation manifest.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A stored index that is not one strata can read back as an attested image.
    #[error("stored image index {digest}: {reason}")]
    BadIndex { digest: Digest, reason: String },
}

/// One attestation of an image, as its layer descriptor says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationLayer {
    pub predicate_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// An image index holding an image and its attestation manifest.
#[derive(Debug, Clone)]
pub struct Attested {
    /// The index, canonical JSON, as stored.
    pub index: Vec<u8>,
    pub index_digest: Digest,
    /// The image manifest it holds (the subject of every statement).
    pub image: Digest,
    /// The attestation manifest.
    pub manifest_digest: Digest,
    /// The attestation manifest's entry in the index.
    pub entry: Value,
    /// Its statements, in layer order.
    pub layers: Vec<AttestationLayer>,
    /// Every blob the attestations add to the image's: the statements, the config and the
    /// attestation manifest (not the index).
    pub blobs: Vec<Digest>,
}

impl Attested {
    /// The index's descriptor (what `index.json` or a tag names).
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": MEDIA_TYPE_INDEX,
            "digest": self.index_digest.to_string(),
            "size": self.index.len(),
        })
    }

    /// Its statements as [`Statement`]s again (to attach them with another: `attach` writes
    /// the same statement bytes back, since a statement is a function of subject and
    /// predicate).
    pub fn statements(&self, blobs: &BlobStore) -> Result<Vec<Statement>, AttestError> {
        let mut out = Vec::new();
        for l in &self.layers {
            let v: Value =
                serde_json::from_slice(&blobs.read_verified(&l.digest)?).map_err(|e| {
                    AttestError::BadIndex {
                        digest: self.index_digest,
                        reason: format!("statement {} does not parse: {e}", l.digest),
                    }
                })?;
            out.push(Statement {
                predicate_type: v["predicateType"].as_str().unwrap_or_default().to_string(),
                predicate: v["predicate"].clone(),
            });
        }
        Ok(out)
    }

    /// Reads back an index [`attach`] wrote (or any index with one image manifest and
    /// BuildKit-style attestation manifests): the image, and the attestations of the first
    /// attestation manifest that refers to it.
    pub fn from_store(
        blobs: &BlobStore,
        index_digest: &Digest,
    ) -> Result<(AssembledImage, Attested), AttestError> {
        let bad = |reason: String| AttestError::BadIndex {
            digest: *index_digest,
            reason,
        };
        let index = blobs.read_verified(index_digest)?;
        let v: Value =
            serde_json::from_slice(&index).map_err(|e| bad(format!("does not parse: {e}")))?;
        let entries = v["manifests"].as_array().cloned().unwrap_or_default();
        let digest_of = |e: &Value| -> Result<Digest, AttestError> {
            e["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("an entry without a valid digest".into()))
        };
        let is_attestation = |e: &Value| e["annotations"][REFERENCE_TYPE_ANNOTATION].is_string();
        let images: Vec<&Value> = entries.iter().filter(|e| !is_attestation(e)).collect();
        let [image_entry] = images.as_slice() else {
            return Err(bad(format!(
                "{} image manifests (strata reads back one)",
                images.len()
            )));
        };
        let image_digest = digest_of(image_entry)?;
        let img = AssembledImage::from_store(blobs, &image_digest)?;
        let entry = entries
            .iter()
            .find(|e| {
                e["annotations"][REFERENCE_TYPE_ANNOTATION] == ATTESTATION_MANIFEST
                    && e["annotations"][REFERENCE_DIGEST_ANNOTATION] == image_digest.to_string()
            })
            .ok_or_else(|| bad("no attestation manifest for its image".into()))?
            .clone();
        let manifest_digest = digest_of(&entry)?;
        let m: Value = serde_json::from_slice(&blobs.read_verified(&manifest_digest)?)
            .map_err(|e| bad(format!("the attestation manifest does not parse: {e}")))?;
        let mut layers = Vec::new();
        for l in m["layers"].as_array().into_iter().flatten() {
            layers.push(AttestationLayer {
                predicate_type: l["annotations"][PREDICATE_TYPE_ANNOTATION]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                digest: digest_of(l)?,
                size: l["size"].as_u64().unwrap_or(0),
            });
        }
        let mut all: Vec<Digest> = layers.iter().map(|l| l.digest).collect();
        all.push(digest_of(&m["config"])?);
        all.push(manifest_digest);
        Ok((
            img,
            Attested {
                index,
                index_digest: *index_digest,
                image: image_digest,
                manifest_digest,
                entry,
                layers,
                blobs: all,
            },
        ))
    }
}

/// The config of an attestation manifest, as BuildKit writes it: a valid image config for
/// platform `unknown/unknown` whose `rootfs` names the statements (readers are told to ignore
/// it; it is there so registries and tools that expect an image config accept the manifest).
fn attestation_config(layers: &[AttestationLayer]) -> Vec<u8> {
    canonical_json(&json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
    }))
}

/// Writes the attestation manifest of `statements` about `image` (for `platform`) into
/// `blobs`, and the image index holding both; returns them. Nothing is written for no
/// statements: callers attach only when asked to.
pub fn attach(
    blobs: &BlobStore,
    image: &AssembledImage,
    platform: &Platform,
    statements: &[Statement],
) -> Result<Attested, AttestError> {
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for s in statements {
        let bytes = statement::statement(&image.manifest_digest, s);
        let (digest, size) = blobs.put(&bytes)?;
        descs.push(json!({
            "mediaType": MEDIA_TYPE_IN_TOTO,
            "digest": digest.to_string(),
            "size": size,
            "annotations": { PREDICATE_TYPE_ANNOTATION: s.predicate_type },
        }));
        layers.push(AttestationLayer {
            predicate_type: s.predicate_type.clone(),
            digest,
            size,
        });
    }
    let config = attestation_config(&layers);
    let (config_digest, config_size) = blobs.put(&config)?;
    let manifest = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_size,
        },
        "layers": descs,
    }));
    let (manifest_digest, manifest_size) = blobs.put(&manifest)?;
    let entry = json!({
        "mediaType": MEDIA_TYPE_MANIFEST,
        "digest": manifest_digest.to_string(),
        "size": manifest_size,
        "platform": { "architecture": "unknown", "os": "unknown" },
        "annotations": {
            REFERENCE_TYPE_ANNOTATION: ATTESTATION_MANIFEST,
            REFERENCE_DIGEST_ANNOTATION: image.manifest_digest.to_string(),
        },
    });
    // The runnable manifest first, attestations after it (the storage spec's order).
    let index = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": image.manifest_digest.to_string(),
                "size": image.manifest.len(),
                "platform": crate::image::index::platform_json(platform),
            },
            entry,
        ],
    }));
    let (index_digest, _) = blobs.put(&index)?;
    let mut all: Vec<Digest> = layers.iter().map(|l| l.digest).collect();
    all.push(config_digest);
    all.push(manifest_digest);
    Ok(Attested {
        index,
        index_digest,
        image: image.manifest_digest,
        manifest_digest,
        entry,
        layers,
        blobs: all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(blobs: &BlobStore) -> AssembledImage {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#;
        let (cd, cs) = blobs.put(config).unwrap();
        let manifest = canonical_json(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": cd.to_string(), "size": cs},
            "layers": [],
        }));
        let (md, _) = blobs.put(&manifest).unwrap();
        AssembledImage {
            config: config.to_vec(),
            config_digest: cd,
            manifest,
            manifest_digest: md,
            layers: Vec::new(),
        }
    }

    #[test]
    fn attached_index_reads_back_and_reproduces() {
        let dir = tempfile::tempdir().unwrap();
        let store = strata_cache::Store::open(&dir.path().join("store")).unwrap();
        let blobs = store.blobs();
        let img = image(blobs);
        let p = Platform::parse("linux/arm/v7").unwrap();
        let s = Statement {
            predicate_type: "https://slsa.dev/provenance/v1".into(),
            predicate: json!({"buildDefinition": {}}),
        };
        let a = attach(blobs, &img, &p, std::slice::from_ref(&s)).unwrap();
        let again = attach(blobs, &img, &p, &[s]).unwrap();
        assert_eq!(a.index_digest, again.index_digest);
        assert_eq!(
            a.entry["platform"],
            json!({"architecture":"unknown","os":"unknown"})
        );
        assert_eq!(
            a.entry["annotations"][REFERENCE_DIGEST_ANNOTATION],
            img.manifest_digest.to_string()
        );
        let index: Value = serde_json::from_slice(&a.index).unwrap();
        assert_eq!(index["manifests"][0]["platform"]["variant"], "v7");
        assert_eq!(index["manifests"][1], a.entry);

        let crate::export::Stored::Attested(back, att) =
            crate::export::Stored::load(blobs, &a.index_digest, MEDIA_TYPE_INDEX).unwrap()
        else {
            panic!("an attested image reads back as one");
        };
        assert_eq!(back.manifest_digest, img.manifest_digest);
        assert_eq!(att.layers, a.layers);
        assert_eq!(att.blobs, a.blobs);
        assert_eq!(a.layers[0].predicate_type, "https://slsa.dev/provenance/v1");
        let m: Value =
            serde_json::from_slice(&blobs.read_verified(&a.manifest_digest).unwrap()).unwrap();
        assert_eq!(m["layers"][0]["mediaType"], MEDIA_TYPE_IN_TOTO);
        let c: Value = serde_json::from_slice(
            &blobs
                .read_verified(&m["config"]["digest"].as_str().unwrap().parse().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(c["os"], "unknown");
        assert_eq!(c["rootfs"]["diff_ids"][0], a.layers[0].digest.to_string());
    }
}
