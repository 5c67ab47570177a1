//! `strata sign`, `strata verify-signature` and `build --sign-key`: where a
//! [`crate::sign::SignatureImage`] goes and is read back from, for each way strata names an
//! image.
//!
//! - A store tag `NAME[:TAG]`: the signature is the store tag `NAME:sha256-<hex>.sig` (what
//!   `strata push` sends along, to the same repository as cosign expects).
//! - An OCI layout `oci:DIR[:TAG]`: the signature manifest in `index.json`, its ref name
//!   `sha256-<hex>.sig` (skopeo copies it as that tag).
//! - A registry reference: the manifest pushed to the tag `sha256-<hex>.sig` of its repository.
//!
//! A new signature replaces the one under the tag (cosign appends signers' layers; strata
//! writes one, so re-signing reproduces the same manifest).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use p256::ecdsa::{SigningKey, VerifyingKey};
use serde_json::{json, Value};
use strata_cache::{Digest, TagRecord};

use super::{Session, Written};
use crate::export::ImageName;
use crate::oci::{self, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::registry::pull::{fetch_blob, get_manifest};
use crate::registry::{Reference, RegistryError};
use crate::sign::{self, signature_tag, SignatureImage, Verified, VerifyError};

/// An image to sign or verify, as the commands name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignTarget {
    /// A tag in the store, `NAME[:TAG]`.
    Store(String),
    /// An OCI image layout, `oci:DIR[:TAG]`.
    Layout { dir: PathBuf, tag: Option<String> },
    /// A registry reference (`docker://REF`, or a name with a registry host not in the store).
    Registry(Reference),
}

impl SignTarget {
    /// `oci:DIR[:TAG]` | `docker://REF` | `NAME[:TAG]` (a store tag when the store has it, else
    /// a registry reference when its first component is a host: `localhost`, or with a `.` or
    /// `:`).
    pub fn parse(session: &Session, spec: &str) -> anyhow::Result<SignTarget> {
        if let Some(rest) = spec.strip_prefix("oci:") {
            let slash = rest.rfind('/').map_or(0, |i| i + 1);
            let (dir, tag) = match rest[slash..].rfind(':') {
                Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
                None => (rest, None),
            };
            return Ok(SignTarget::Layout {
                dir: PathBuf::from(dir),
                tag,
            });
        }
        let registry = |s: &str| -> anyhow::Result<SignTarget> {
            Ok(SignTarget::Registry(
                Reference::parse(s).map_err(RegistryError::from)?,
            ))
        };
        if let Some(rest) = spec.strip_prefix("docker://") {
            return registry(rest);
        }
        if let Ok(n) = ImageName::parse(spec) {
            if session.store().index().get_tag(&n.full())?.is_some() {
                return Ok(SignTarget::Store(n.full()));
            }
        }
        let first = spec.split('/').next().unwrap_or_default();
        if spec.contains('/') && (first == "localhost" || first.contains(['.', ':'])) {
            return registry(spec);
        }
        bail!(
            "no image `{spec}` in the store\nhint: `strata images` lists the tags; name a layout as oci:DIR[:TAG] and a registry image as docker://REF"
        )
    }
}

/// Where a signature was written.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The manifest (or index) signed.
    pub image: Digest,
    pub signature: Digest,
    /// Where it is: `NAME:sha256-….sig`, `oci:DIR:sha256-….sig` or `REF:sha256-….sig`.
    pub at: String,
    pub docker_reference: String,
}

/// A verified signature and where it was read.
#[derive(Debug, Clone)]
pub struct VerifiedAt {
    pub image: Digest,
    pub at: String,
    pub verified: Verified,
}

impl Session {
    /// Signs `target` with `key`; the payload's `docker-reference` is `reference`, else the
    /// image's repository (a layout image needs an `io.containerd.image.name` then).
    pub fn sign(
        &self,
        target: &SignTarget,
        key: &SigningKey,
        reference: Option<&str>,
    ) -> anyhow::Result<Signed> {
        match target {
            SignTarget::Store(name) => {
                let tag = self.tag(name)?;
                let n = ImageName::parse(name)?;
                self.sign_in_store(&n, &tag.manifest, key, reference.unwrap_or(&n.name))
            }
            SignTarget::Layout { dir, tag } => {
                let desc = layout_entry(dir, tag.as_deref())?;
                let digest = descriptor_digest(&desc)?;
                let name = desc
                    .pointer("/annotations/io.containerd.image.name")
                    .and_then(Value::as_str)
                    .and_then(|n| ImageName::parse(n).ok())
                    .map(|n| n.name);
                let docker_ref = reference.map(str::to_string).or(name).with_context(|| {
                    format!(
                        "the image in `{}` has no name (io.containerd.image.name) for the signature's docker-reference\nhint: pass --reference REPOSITORY",
                        dir.display()
                    )
                })?;
                sign_in_layout(dir, &digest, key, &docker_ref)
            }
            SignTarget::Registry(r) => {
                let (digest, _, _) = get_manifest(
                    &self.registry_client(),
                    self.store().blobs(),
                    r,
                    &r.manifest_ref(),
                )
                .with_context(|| format!("resolving `{r}`"))?;
                self.sign_in_registry(r, &digest, key, reference.unwrap_or(&r.name()))
            }
        }
    }

    /// `build --sign-key`: signs what the build tagged and wrote (`digest`): each store tag,
    /// each OCI layout, each registry push. Returns the signatures and the outputs that cannot
    /// hold one (archives).
    pub fn sign_outputs(
        &self,
        digest: &Digest,
        tags: &[ImageName],
        outputs: &[Written],
        key: &SigningKey,
    ) -> anyhow::Result<(Vec<Signed>, Vec<String>)> {
        let mut signed = Vec::new();
        let mut skipped = Vec::new();
        for n in tags {
            signed.push(self.sign_in_store(n, digest, key, &n.name)?);
        }
        for w in outputs {
            match w {
                Written::File { kind: "oci", dest } => {
                    let name = tags.first().with_context(|| {
                        format!("--sign-key: the image written to `{}` has no name for the signature's docker-reference\nhint: add -t NAME", dest.display())
                    })?;
                    signed.push(sign_in_layout(dest, digest, key, &name.name)?);
                }
                Written::File { kind, dest } => {
                    skipped.push(format!("{kind} `{}`", dest.display()));
                }
                Written::Pushed { target, .. } => {
                    signed.push(self.sign_in_registry(target, digest, key, &target.name())?);
                }
            }
        }
        Ok((signed, skipped))
    }

    /// Checks the signature of `target` with `key`. A [`VerifyError`] in the chain says the
    /// signature is missing or does not verify (as opposed to the image not being found).
    pub fn verify_signature(
        &self,
        target: &SignTarget,
        key: &VerifyingKey,
    ) -> anyhow::Result<VerifiedAt> {
        let blobs = self.store().blobs();
        match target {
            SignTarget::Store(name) => {
                let image = self.tag(name)?.manifest;
                let n = ImageName::parse(name)?;
                let at = format!("{}:{}", n.name, signature_tag(&image));
                let sig = self
                    .store()
                    .index()
                    .get_tag(&at)?
                    .ok_or_else(|| VerifyError::NoSignature { tag: at.clone() })?;
                let manifest = blobs.read_verified(&sig.manifest)?;
                let verified = sign::verify(key, &image, &manifest, &sig.manifest, &mut |l| {
                    Ok(blobs.read_verified(&l.payload_digest)?)
                })?;
                Ok(VerifiedAt {
                    image,
                    at,
                    verified,
                })
            }
            SignTarget::Layout { dir, tag } => {
                let image = descriptor_digest(&layout_entry(dir, tag.as_deref())?)?;
                let sig_tag = signature_tag(&image);
                let at = format!("oci:{}:{sig_tag}", dir.display());
                let desc = layout_entry(dir, Some(&sig_tag))
                    .map_err(|_| VerifyError::NoSignature { tag: at.clone() })?;
                let sig = descriptor_digest(&desc)?;
                let manifest = oci::read_blob(dir, &sig, None, Some(4 << 20))?;
                let verified = sign::verify(key, &image, &manifest, &sig, &mut |l| {
                    Ok(oci::read_blob(
                        dir,
                        &l.payload_digest,
                        Some(l.size),
                        Some(4 << 20),
                    )?)
                })?;
                Ok(VerifiedAt {
                    image,
                    at,
                    verified,
                })
            }
            SignTarget::Registry(r) => {
                let client = self.registry_client();
                let (image, _, _) = get_manifest(&client, blobs, r, &r.manifest_ref())
                    .with_context(|| format!("resolving `{r}`"))?;
                let sig_ref = r.with_tag(&signature_tag(&image));
                let at = sig_ref.to_string();
                let (sig, manifest, _) =
                    match get_manifest(&client, blobs, &sig_ref, &sig_ref.manifest_ref()) {
                        Ok(m) => m,
                        Err(e) if e.is_not_found() => {
                            return Err(VerifyError::NoSignature { tag: at }.into())
                        }
                        Err(e) => return Err(e.into()),
                    };
                let verified = sign::verify(key, &image, &manifest, &sig, &mut |l| {
                    fetch_blob(&client, blobs, &sig_ref, &l.payload_digest, l.size, None)?;
                    Ok(blobs.read_verified(&l.payload_digest)?)
                })?;
                Ok(VerifiedAt {
                    image,
                    at,
                    verified,
                })
            }
        }
    }

    fn tag(&self, name: &str) -> anyhow::Result<TagRecord> {
        self.store().index().get_tag(name)?.with_context(|| {
            format!("no image `{name}` in the store\nhint: `strata images` lists the tags")
        })
    }

    fn sign_in_store(
        &self,
        name: &ImageName,
        digest: &Digest,
        key: &SigningKey,
        docker_ref: &str,
    ) -> anyhow::Result<Signed> {
        let sig = sign::sign(key, docker_ref, digest);
        self.put_signature(&sig)?;
        let at = format!("{}:{}", name.name, signature_tag(digest));
        self.store().index().put_tag(
            &at,
            &TagRecord {
                manifest: sig.manifest_digest,
                config: Digest::of(&sig.config),
                media_type: MEDIA_TYPE_MANIFEST.to_string(),
            },
        )?;
        Ok(signed(digest, &sig, at, docker_ref))
    }

    fn sign_in_registry(
        &self,
        r: &Reference,
        digest: &Digest,
        key: &SigningKey,
        docker_ref: &str,
    ) -> anyhow::Result<Signed> {
        let sig = sign::sign(key, docker_ref, digest);
        self.put_signature(&sig)?;
        let to = r.with_tag(&signature_tag(digest));
        self.push(&sig.manifest_digest, &to)?;
        Ok(signed(digest, &sig, to.to_string(), docker_ref))
    }

    fn put_signature(&self, sig: &SignatureImage) -> anyhow::Result<()> {
        for b in sig.blobs() {
            self.store().blobs().put(b)?;
        }
        Ok(())
    }

    /// The signature of `digest` in the store under `name`'s repository, if any (what `strata
    /// push` sends along).
    pub fn stored_signature(
        &self,
        name: &ImageName,
        digest: &Digest,
    ) -> anyhow::Result<Option<Digest>> {
        let at = format!("{}:{}", name.name, signature_tag(digest));
        Ok(self.store().index().get_tag(&at)?.map(|t| t.manifest))
    }
}

fn signed(digest: &Digest, sig: &SignatureImage, at: String, docker_ref: &str) -> Signed {
    Signed {
        image: *digest,
        signature: sig.manifest_digest,
        at,
        docker_reference: docker_ref.to_string(),
    }
}

fn read_layout_index(dir: &Path) -> anyhow::Result<Value> {
    let path = dir.join(oci::INDEX_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading `{}`", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("`{}` does not parse", path.display()))
}

/// The `index.json` entry of the layout at `dir` tagged `tag`; without a tag, the only entry
/// that is not a signature, else the one tagged `latest`.
fn layout_entry(dir: &Path, tag: Option<&str>) -> anyhow::Result<Value> {
    let index = read_layout_index(dir)?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let found = match tag {
        Some(t) => entries.iter().find(|e| oci::ref_name(e) == Some(t)),
        None => {
            let images: Vec<&Value> = entries
                .iter()
                .filter(|e| !oci::ref_name(e).is_some_and(|t| t.ends_with(".sig")))
                .collect();
            match images.as_slice() {
                [one] => Some(*one),
                _ => entries.iter().find(|e| oci::ref_name(e) == Some("latest")),
            }
        }
    };
    let tags: Vec<&str> = entries.iter().filter_map(oci::ref_name).collect();
    found.cloned().with_context(|| {
        format!(
            "no image{} in the layout `{}` (tags: {})",
            tag.map(|t| format!(" tagged `{t}`")).unwrap_or_default(),
            dir.display(),
            if tags.is_empty() {
                "none".to_string()
            } else {
                tags.join(", ")
            }
        )
    })
}

fn descriptor_digest(desc: &Value) -> anyhow::Result<Digest> {
    desc["digest"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("an index.json entry without a valid digest")
}

/// Writes the signature of `digest` into the layout at `dir`: its blobs (each atomically),
/// then `index.json` with the signature manifest tagged `sha256-<hex>.sig`, replaced last.
fn sign_in_layout(
    dir: &Path,
    digest: &Digest,
    key: &SigningKey,
    docker_ref: &str,
) -> anyhow::Result<Signed> {
    let sig = sign::sign(key, docker_ref, digest);
    let blob_dir = dir.join(oci::BLOBS_SHA256);
    for b in sig.blobs() {
        let d = Digest::of(b);
        let to = blob_dir.join(d.hex());
        if to.exists() {
            continue;
        }
        let tmp = blob_dir.join(format!(".tmp-{}", d.hex()));
        std::fs::write(&tmp, b).with_context(|| format!("writing `{}`", tmp.display()))?;
        std::fs::rename(&tmp, &to).with_context(|| format!("writing `{}`", to.display()))?;
    }
    let tag = signature_tag(digest);
    let mut index = read_layout_index(dir)?;
    let mut entries = index["manifests"].as_array().cloned().unwrap_or_default();
    entries.retain(|e| oci::ref_name(e) != Some(tag.as_str()));
    entries.push(json!({
        "mediaType": MEDIA_TYPE_MANIFEST,
        "digest": sig.manifest_digest.to_string(),
        "size": sig.manifest.len(),
        "annotations": { oci::REF_NAME_ANNOTATION: tag },
    }));
    index["manifests"] = Value::Array(entries);
    if index.get("mediaType").is_none() {
        index["mediaType"] = json!(MEDIA_TYPE_INDEX);
    }
    let path = dir.join(oci::INDEX_FILE);
    let tmp = dir.join(".index.json.tmp");
    std::fs::write(&tmp, crate::image::canonical_json(&index))
        .with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing `{}`", path.display()))?;
    Ok(signed(
        digest,
        &sig,
        format!("oci:{}:{tag}", dir.display()),
        docker_ref,
    ))
}
