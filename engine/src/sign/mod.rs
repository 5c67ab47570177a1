//! Image signatures that `cosign verify --key` accepts (key-based, no transparency log).
//!
//! - [`payload`]: cosign's "simple signing" JSON naming the image manifest digest.
//! - [`sign`]: ECDSA P-256 over SHA-256 of the payload ([`key`] reads the PEM keys), and the
//!   [`SignatureImage`] cosign stores it in: an OCI manifest tagged [`signature_tag`]
//!   (`sha256-<hex>.sig`) in the image's repository, one `simplesigning` layer (the payload)
//!   annotated with the base64 DER signature.
//! - [`verify`]: reads such a manifest back and checks signature, then digest.
//!
//! Deterministic like the rest of strata: the payload is canonical JSON (cosign verifies the
//! bytes it fetched, so any encoding verifies; canonical is what cosign writes too), the
//! nonces are RFC 6979's (derived from key and message, so a re-sign gives the same bytes), and
//! the config and manifest hold no time. Where the signature goes (store tag, OCI layout,
//! registry) is [`crate::session::sign`]'s job. docs/signing.md.

pub mod key;

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature};
/// The key types, re-exported so callers need no `p256` of their own.
pub use p256::ecdsa::{SigningKey, VerifyingKey};
use serde_json::{json, Value};
use strata_cache::Digest;

use crate::image::canonical_json;
use crate::oci::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST};

/// The media type of a signature layer (the payload).
pub const MEDIA_TYPE_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 DER signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// Why a signature does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no signature: `{tag}` not found")]
    NoSignature { tag: String },
    #[error("signature manifest {manifest}: {reason}")]
    Malformed { manifest: Digest, reason: String },
    #[error("bad signature: {reason}")]
    BadSignature { reason: String },
    #[error("digest mismatch: the signature is for {found}, the image is {expected}")]
    DigestMismatch { expected: Digest, found: String },
}

/// The tag cosign stores the signatures of manifest `digest` under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The simple-signing payload saying `docker_reference` is the image with manifest `digest`,
/// as canonical JSON (cosign's own encoding, keys sorted, happens to be the same).
pub fn payload(docker_reference: &str, digest: &Digest) -> Vec<u8> {
    canonical_json(&json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": digest.to_string() },
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    }))
}

/// A signature as cosign stores it: three blobs and the manifest naming them.
#[derive(Debug, Clone)]
pub struct SignatureImage {
    pub payload: Vec<u8>,
    /// Base64 of the DER signature (the layer annotation's value).
    pub signature: String,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

impl SignatureImage {
    /// Every blob, manifest last (the order to write them in: nothing names a missing blob).
    pub fn blobs(&self) -> [&[u8]; 3] {
        [&self.payload, &self.config, &self.manifest]
    }
}

/// The config of a signature manifest, byte for byte as cosign writes it (go-containerregistry's
/// empty image with the payload appended): no time, no platform.
fn signature_config(payload_digest: &Digest) -> Vec<u8> {
    format!(
        r#"{{"architecture":"","os":"","rootfs":{{"type":"layers","diff_ids":["{payload_digest}"]}},"config":{{}}}}"#
    )
    .into_bytes()
}

/// Signs manifest `digest` as `docker_reference` with `key`.
pub fn sign(key: &SigningKey, docker_reference: &str, digest: &Digest) -> SignatureImage {
    let payload = payload(docker_reference, digest);
    // `Signer` hashes with SHA-256 and takes its nonce from RFC 6979.
    let sig: Signature = key.sign(&payload);
    let der: DerSignature = sig.to_der();
    let signature = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
    let payload_digest = Digest::of(&payload);
    let config = signature_config(&payload_digest);
    let manifest = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_CONFIG,
            "digest": Digest::of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": MEDIA_TYPE_SIMPLE_SIGNING,
            "digest": payload_digest.to_string(),
            "size": payload.len(),
            "annotations": { SIGNATURE_ANNOTATION: signature },
        }],
    }));
    let manifest_digest = Digest::of(&manifest);
    SignatureImage {
        payload,
        signature,
        config,
        manifest,
        manifest_digest,
    }
}

/// What a verified signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The payload's `docker-reference` (cosign does not check it; see docs/signing.md).
    pub docker_reference: String,
    pub payload_digest: Digest,
}

/// One signature layer of a signature manifest.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    pub payload_digest: Digest,
    pub size: u64,
    pub signature: String,
}

/// The signature layers of a signature manifest (`manifest_digest` names it in errors).
pub fn signature_layers(
    manifest: &[u8],
    manifest_digest: &Digest,
) -> Result<Vec<SignatureLayer>, VerifyError> {
    let bad = |reason: &str| VerifyError::Malformed {
        manifest: *manifest_digest,
        reason: reason.to_string(),
    };
    let v: Value = serde_json::from_slice(manifest).map_err(|_| bad("not JSON"))?;
    let mut out = Vec::new();
    for l in v["layers"].as_array().into_iter().flatten() {
        if l["mediaType"] != MEDIA_TYPE_SIMPLE_SIGNING {
            continue;
        }
        out.push(SignatureLayer {
            payload_digest: l["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("a layer without a valid digest"))?,
            size: l["size"].as_u64().unwrap_or(0),
            signature: l["annotations"][SIGNATURE_ANNOTATION]
                .as_str()
                .ok_or_else(|| bad("a layer without a signature annotation"))?
                .to_string(),
        });
    }
    if out.is_empty() {
        return Err(bad("no simple-signing layer"));
    }
    Ok(out)
}

/// Checks one signature layer: `payload` (its blob, already checked against its digest) is
/// signed by `key`, and names `image`.
pub fn verify_payload(
    key: &VerifyingKey,
    image: &Digest,
    payload: &[u8],
    signature_b64: &str,
) -> Result<Verified, VerifyError> {
    let bad = |reason: String| VerifyError::BadSignature { reason };
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| bad(format!("the annotation is not base64: {e}")))?;
    let sig = Signature::from_der(&der)
        .map_err(|_| bad("the annotation is not a DER ECDSA signature".into()))?;
    key.verify(payload, &sig)
        .map_err(|_| bad("it does not verify with the given public key".into()))?;
    let v: Value = serde_json::from_slice(payload)
        .map_err(|_| bad("the signed payload is not JSON".into()))?;
    if v["critical"]["type"] != SIGNATURE_TYPE {
        return Err(bad(format!("the payload's type is not `{SIGNATURE_TYPE}`")));
    }
    let found = v["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if found != image.to_string() {
        return Err(VerifyError::DigestMismatch {
            expected: *image,
            found: found.to_string(),
        });
    }
    Ok(Verified {
        docker_reference: v["critical"]["identity"]["docker-reference"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        payload_digest: Digest::of(payload),
    })
}

/// Verifies the signature manifest `manifest` of `image` with `key`: accepted when any of its
/// signature layers verifies (cosign appends one layer per signer). `read` returns a payload
/// blob, checked against its digest. When none verifies, the error of the first layer says why.
pub fn verify(
    key: &VerifyingKey,
    image: &Digest,
    manifest: &[u8],
    manifest_digest: &Digest,
    read: &mut dyn FnMut(&SignatureLayer) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Verified> {
    let mut first = None;
    for l in signature_layers(manifest, manifest_digest)? {
        let payload = read(&l)?;
        if Digest::of(&payload) != l.payload_digest {
            anyhow::bail!(
                "payload blob {} does not match its digest",
                l.payload_digest
            );
        }
        match verify_payload(key, image, &payload, &l.signature) {
            Ok(v) => return Ok(v),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.expect("signature_layers returns at least one").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    #[test]
    fn payload_is_cosigns_simple_signing_json() {
        let d = Digest::of(b"m");
        assert_eq!(
            String::from_utf8(payload("reg.example/app", &d)).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"reg.example/app"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
    }

    #[test]
    fn signing_is_deterministic_and_verifies() {
        let d = Digest::of(b"m");
        let a = sign(&key(7), "app", &d);
        let b = sign(&key(7), "app", &d);
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.signature, b.signature);
        let config: Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            Digest::of(&a.payload).to_string()
        );
        let vk = VerifyingKey::from(&key(7));
        let mut read = |_: &SignatureLayer| Ok(a.payload.clone());
        let v = verify(&vk, &d, &a.manifest, &a.manifest_digest, &mut read).unwrap();
        assert_eq!(v.docker_reference, "app");
    }

    #[test]
    fn another_key_another_image_or_an_edited_payload_fail() {
        let d = Digest::of(b"m");
        let a = sign(&key(7), "app", &d);
        let other = VerifyingKey::from(&key(8));
        let e = verify_payload(&other, &d, &a.payload, &a.signature).unwrap_err();
        assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
        let vk = VerifyingKey::from(&key(7));
        let e = verify_payload(&vk, &Digest::of(b"x"), &a.payload, &a.signature).unwrap_err();
        assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
        let edited = String::from_utf8(a.payload.clone())
            .unwrap()
            .replace("app", "evil");
        let e = verify_payload(&vk, &d, edited.as_bytes(), &a.signature).unwrap_err();
        assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
    }
}
