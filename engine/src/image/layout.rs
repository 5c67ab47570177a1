//! Reading images out of a local OCI image layout (`FROM oci-layout://DIR[:TAG|@DIGEST]`).
//!
//! Only small JSON blobs (index, manifest, config) are read at plan time, each checked against
//! its digest; layer blobs are verified when they are imported into the store.

use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde_json::Value;
use strata_cache::Digest;

use crate::image::{BlobSource, ImageError, Platform};
use crate::oci;

/// A base image found in an OCI layout.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// As the user wrote it, for messages and history.
    pub reference: String,
    /// Where the layer blobs come from.
    pub source: BlobSource,
    /// What the reference resolved to before platform selection (an index or a manifest): the
    /// digest a lockfile pins.
    pub pinned: Digest,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// The config JSON, exactly as stored (base history is kept as it came).
    pub config: Value,
    pub layers: Vec<LayerDesc>,
}

/// A layer of an image, as its manifest and config describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDesc {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

/// What part of `oci-layout://…` selects the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Tag(String),
    Digest(Digest),
    /// No tag or digest: the only image in the layout, else `latest`.
    Default,
}

/// Splits `PATH[:TAG|@DIGEST]`.
pub fn parse_layout_ref(spec: &str) -> Result<(String, Selector), ImageError> {
    if let Some((path, dig)) = spec.rsplit_once('@') {
        let d: Digest = dig.parse().map_err(|e| ImageError::BadReference {
            reference: spec.to_string(),
            reason: format!("{e}"),
        })?;
        return Ok((path.to_string(), Selector::Digest(d)));
    }
    // A `:` after the last `/` is a tag separator.
    let last_slash = spec.rfind('/').map(|i| i + 1).unwrap_or(0);
    if let Some(colon) = spec[last_slash..].rfind(':') {
        let (path, tag) = spec.split_at(last_slash + colon);
        let tag = &tag[1..];
        if tag.is_empty() {
            return Err(ImageError::BadReference {
                reference: spec.to_string(),
                reason: "empty tag".into(),
            });
        }
        return Ok((path.to_string(), Selector::Tag(tag.to_string())));
    }
    Ok((spec.to_string(), Selector::Default))
}

fn read_blob(
    layout: &Path,
    desc_digest: &str,
    expected_size: Option<u64>,
) -> Result<Vec<u8>, ImageError> {
    let digest: Digest = desc_digest.parse().map_err(|e| ImageError::Layout {
        layout: layout.to_path_buf(),
        reason: format!("{e}"),
    })?;
    oci::read_blob(layout, &digest, expected_size, None).map_err(|e| match e {
        oci::BlobError::Io { path, source } => ImageError::Io { path, source },
        e => ImageError::Layout {
            layout: layout.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

fn oci_digest(d: &Descriptor) -> String {
    d.digest().to_string()
}

/// The platforms an index lists, as written there (`linux/arm64/v8, linux/amd64`).
fn platforms_listed(index: &ImageIndex) -> String {
    let listed: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|m| m.platform().as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect();
    if listed.is_empty() {
        "no platforms listed".into()
    } else {
        listed.join(", ")
    }
}

fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex) || mt.to_string() == oci::MEDIA_TYPE_DOCKER_LIST
}

/// Loads the image that `spec` selects from an OCI layout. `base_dir` resolves relative paths.
pub fn load(spec: &str, base_dir: &Path, platform: &Platform) -> Result<BaseImage, ImageError> {
    let (path, selector) = parse_layout_ref(spec)?;
    let layout = base_dir.join(&path);
    let index_path = layout.join(oci::INDEX_FILE);
    if !layout.join(oci::LAYOUT_FILE).is_file() || !index_path.is_file() {
        return Err(ImageError::Layout {
            layout: layout.clone(),
            reason: "not an OCI image layout (no `oci-layout` and `index.json`)".into(),
        });
    }
    let index = ImageIndex::from_file(&index_path).map_err(|e| ImageError::Layout {
        layout: layout.clone(),
        reason: format!("index.json: {e}"),
    })?;
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match &selector {
            Selector::Tag(t) => ref_name(d).as_deref() == Some(t.as_str()),
            Selector::Digest(dig) => oci_digest(d) == dig.to_string(),
            Selector::Default => true,
        })
        .collect();
    let desc = match (&selector, candidates.as_slice()) {
        (_, [one]) => (*one).clone(),
        (Selector::Default, many) if many.len() > 1 => {
            let latest: Vec<_> = many
                .iter()
                .filter(|d| ref_name(d).as_deref() == Some("latest"))
                .collect();
            match latest.as_slice() {
                [one] => (**one).clone(),
                _ => {
                    return Err(ImageError::Layout {
                        layout,
                        reason: format!(
                            "{} images in the layout and none tagged `latest`; name one with `:TAG` or `@sha256:…`",
                            many.len()
                        ),
                    })
                }
            }
        }
        (Selector::Digest(d), []) if oci::blob_path(&layout, d).is_file() => {
            // Pinned by digest (a lockfile) while the tag has moved on: the blob is still there.
            unlisted_descriptor(&layout, d)?
        }
        _ => {
            let tags: Vec<String> = index.manifests().iter().filter_map(ref_name).collect();
            return Err(ImageError::NotFound {
                reference: spec.to_string(),
                available: tags,
            });
        }
    };
    let pinned: Digest = oci_digest(&desc).parse().map_err(|e| ImageError::Layout {
        layout: layout.clone(),
        reason: format!("{e}"),
    })?;
    let manifest_desc = if is_index(desc.media_type()) {
        let data = read_blob(&layout, &oci_digest(&desc), Some(desc.size()))?;
        let nested = ImageIndex::from_reader(&data[..]).map_err(|e| ImageError::Layout {
            layout: layout.clone(),
            reason: format!("nested index: {e}"),
        })?;
        let found = nested
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    platform.matches(
                        &p.os().to_string(),
                        &p.architecture().to_string(),
                        p.variant().as_deref(),
                    )
                })
            })
            .cloned();
        found.ok_or_else(|| ImageError::NoPlatform {
            reference: spec.to_string(),
            platform: platform.to_string(),
            available: platforms_listed(&nested),
        })?
    } else {
        desc
    };
    let manifest_bytes = read_blob(
        &layout,
        &oci_digest(&manifest_desc),
        Some(manifest_desc.size()),
    )?;
    let manifest =
        ImageManifest::from_reader(&manifest_bytes[..]).map_err(|e| ImageError::Layout {
            layout: layout.clone(),
            reason: format!("manifest: {e}"),
        })?;
    let config_bytes = read_blob(
        &layout,
        &oci_digest(manifest.config()),
        Some(manifest.config().size()),
    )?;
    let config: Value = serde_json::from_slice(&config_bytes).map_err(|e| ImageError::Layout {
        layout: layout.clone(),
        reason: format!("config: {e}"),
    })?;
    let diff_ids: Vec<Digest> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::Layout {
            layout,
            reason: format!(
                "manifest has {} layers but config has {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
        layers.push(LayerDesc {
            digest: oci_digest(l).parse().map_err(|e| ImageError::Layout {
                layout: layout.clone(),
                reason: format!("{e}"),
            })?,
            size: l.size(),
            media_type: l.media_type().to_string(),
            diff_id,
        });
    }
    Ok(BaseImage {
        reference: spec.to_string(),
        source: BlobSource::Layout(layout),
        pinned,
        manifest_digest: Digest::of(&manifest_bytes),
        config_digest: Digest::of(&config_bytes),
        config,
        layers,
    })
}

/// A descriptor for a manifest or index that is in the layout's blobs but not in index.json.
fn unlisted_descriptor(layout: &Path, d: &Digest) -> Result<Descriptor, ImageError> {
    let data = read_blob(layout, &d.to_string(), None)?;
    let v: Value = serde_json::from_slice(&data).map_err(|e| ImageError::Layout {
        layout: layout.to_path_buf(),
        reason: format!("blob {d}: {e}"),
    })?;
    let media_type = match v.get("mediaType").and_then(Value::as_str) {
        Some(m) => MediaType::from(m),
        None if v.get("manifests").is_some() => MediaType::ImageIndex,
        None => MediaType::ImageManifest,
    };
    let digest: oci_spec::image::Digest =
        d.to_string().parse().map_err(|e| ImageError::Layout {
            layout: layout.to_path_buf(),
            reason: format!("{e}"),
        })?;
    Ok(Descriptor::new(media_type, data.len() as u64, digest))
}

fn ref_name(d: &Descriptor) -> Option<String> {
    d.annotations()
        .as_ref()?
        .get(oci::REF_NAME_ANNOTATION)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_layout_references() {
        assert_eq!(
            parse_layout_ref("dir").unwrap(),
            ("dir".into(), Selector::Default)
        );
        assert_eq!(
            parse_layout_ref("a/b:v1").unwrap(),
            ("a/b".into(), Selector::Tag("v1".into()))
        );
        assert_eq!(
            parse_layout_ref("./x:1/dir").unwrap(),
            ("./x:1/dir".into(), Selector::Default)
        );
        let d = Digest::of(b"x");
        assert_eq!(
            parse_layout_ref(&format!("dir@{d}")).unwrap(),
            ("dir".into(), Selector::Digest(d))
        );
        assert!(parse_layout_ref("dir@sha256:zz").is_err());
        assert!(parse_layout_ref("dir:").is_err());
    }
}
