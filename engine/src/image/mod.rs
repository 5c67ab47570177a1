//! Image assembly: the OCI image configuration and manifest, as canonical JSON.
//!
//! Canonical means: object keys sorted bytewise at every level, no insignificant whitespace,
//! absent fields omitted, every timestamp = SOURCE_DATE_EPOCH. Nothing host-derived (hostname,
//! builder version, random ids) is ever written.

pub mod index;
pub mod layout;
pub mod overrides;
mod platform;
pub mod resolve;

use std::path::PathBuf;

use serde_json::{json, Map, Value};
use strata_cache::{BlobStore, Digest};

pub use layout::{BaseImage, LayerDesc};
pub use overrides::{ImageOverride, Overrides};
pub use platform::Platform;
pub use resolve::{BlobFetchError, BlobFetcher, BlobSource, ImageResolver, LocalImages};

/// (Defined in [`crate::oci`]; re-exported for the callers that name them through `image`.)
pub use crate::oci::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference `{reference}`: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("`{}`: {reason}", layout.display())]
    Layout { layout: PathBuf, reason: String },
    #[error("image `{reference}` not found in the OCI layout (tags there: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    NotFound {
        reference: String,
        available: Vec<String>,
    },
    #[error("image `{reference}` has no manifest for platform {platform} (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("reading `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("OCI layout `{layout}` is outside the build context")]
    OutsideContext { layout: String },
    #[error("`{reference}`: {what} is not supported yet")]
    Unsupported {
        reference: String,
        what: String,
        hint: String,
    },
    /// A registry operation that failed (the registry module fills in what and a hint).
    #[error("{message}")]
    Registry {
        message: String,
        hint: Option<String>,
    },
    #[error("invalid platform `{platform}`: {reason}")]
    BadPlatform { platform: String, reason: String },
    /// A stored manifest or config that cannot be read back into an image.
    #[error("stored image {digest}: {reason}")]
    Stored { digest: Digest, reason: String },
}

impl ImageError {
    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            ImageError::OutsideContext { .. } => Some(
                "copy the layout into the build context (a symlink pointing outside is refused too)"
                    .into(),
            ),
            ImageError::Unsupported { hint, .. } => Some(hint.clone()),
            ImageError::Registry { hint, .. } => hint.clone(),
            ImageError::BadPlatform { .. } => Some(platform::HINT.into()),
            ImageError::NoPlatform { .. } => Some(
                "build for a platform the image has, or name an image that has this one".into(),
            ),
            _ => None,
        }
    }
}

/// Serialises `v` canonically: keys sorted at every level, compact. Done by hand so the result
/// never depends on serde_json's `preserve_order` feature being switched on by some dependency.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).expect("string serialises"));
                    out.push(b':');
                    write(&m[k], out);
                }
                out.push(b'}');
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out);
                }
                out.push(b']');
            }
            other => out.extend(serde_json::to_vec(&sort(other)).expect("scalar serialises")),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// RFC 3339 UTC timestamp for a Unix time (`1970-01-01T00:00:00Z`).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for the whole u64 range we accept.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// One history entry of the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub created_by: String,
    pub empty_layer: bool,
}

/// A layer of the finished image.
pub type ImageLayer = LayerDesc;

/// Everything needed to write an image: its config and its layers.
#[derive(Debug)]
pub struct AssembledImage {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub layers: Vec<ImageLayer>,
}

impl AssembledImage {
    /// Reads an image back from the store: the manifest `manifest_digest`, its config and the
    /// layer descriptors (diff_ids from the config's `rootfs`). Both JSON blobs are verified
    /// against their digests; the layer blobs are not read.
    pub fn from_store(
        blobs: &BlobStore,
        manifest_digest: &Digest,
    ) -> Result<AssembledImage, ImageError> {
        let bad = |digest: &Digest, reason: String| ImageError::Stored {
            digest: *digest,
            reason,
        };
        let read = |d: &Digest| {
            blobs
                .read_verified(d)
                .map_err(|e| bad(manifest_digest, e.to_string()))
        };
        let parse = |d: &Digest, bytes: &[u8]| {
            serde_json::from_slice::<Value>(bytes)
                .map_err(|e| bad(d, format!("does not parse: {e}")))
        };
        let digest_in = |v: &Value, what: &str| -> Result<Digest, ImageError> {
            v["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(manifest_digest, format!("{what} has no valid digest")))
        };
        let manifest = read(manifest_digest)?;
        let m = parse(manifest_digest, &manifest)?;
        let config_digest = digest_in(&m["config"], "the config descriptor")?;
        let config = read(&config_digest)?;
        let c = parse(&config_digest, &config)?;
        let descs = m["layers"].as_array().cloned().unwrap_or_default();
        let diff_ids = c["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if descs.len() != diff_ids.len() {
            return Err(bad(
                manifest_digest,
                format!(
                    "{} layers in the manifest but {} diff_ids in the config",
                    descs.len(),
                    diff_ids.len()
                ),
            ));
        }
        let layers = descs
            .iter()
            .zip(&diff_ids)
            .map(|(l, diff_id)| {
                Ok(ImageLayer {
                    digest: digest_in(l, "a layer descriptor")?,
                    size: l["size"].as_u64().unwrap_or(0),
                    media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                    diff_id: diff_id
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad(&config_digest, "invalid diff_id".into()))?,
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        Ok(AssembledImage {
            config,
            config_digest,
            manifest,
            manifest_digest: *manifest_digest,
            layers,
        })
    }
}

/// Inputs to [`assemble`].
pub struct ImageInputs<'a> {
    pub platform: &'a Platform,
    pub source_date_epoch: u64,
    /// The `config` object (from `ConfigState::to_config_object`).
    pub config_object: Value,
    pub author: Option<&'a str>,
    /// The base image config (for history and unknown top-level fields), if any.
    pub base_config: Option<&'a Value>,
    pub new_history: &'a [History],
    pub layers: &'a [ImageLayer],
}

/// Builds the config and manifest JSON, canonically.
pub fn assemble(inp: ImageInputs<'_>) -> AssembledImage {
    let created = rfc3339(inp.source_date_epoch);
    let mut top = match inp.base_config.and_then(Value::as_object) {
        Some(m) => m.clone(),
        None => Map::new(),
    };
    // Host- or builder-specific fields a base may carry are not ours to repeat.
    for k in [
        "container",
        "container_config",
        "docker_version",
        "id",
        "parent",
    ] {
        top.remove(k);
    }
    let mut history: Vec<Value> = match inp.base_config {
        Some(b) => b
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        None => Vec::new(),
    };
    for h in inp.new_history {
        let mut e = Map::new();
        e.insert("created".into(), Value::String(created.clone()));
        e.insert("created_by".into(), Value::String(h.created_by.clone()));
        e.insert(
            "comment".into(),
            Value::String("strata.dockerfile.v1".into()),
        );
        if h.empty_layer {
            e.insert("empty_layer".into(), Value::Bool(true));
        }
        history.push(Value::Object(e));
    }
    top.insert("created".into(), Value::String(created));
    top.insert(
        "architecture".into(),
        Value::String(inp.platform.architecture.clone()),
    );
    top.insert("os".into(), Value::String(inp.platform.os.clone()));
    match &inp.platform.variant {
        Some(v) => top.insert("variant".into(), Value::String(v.clone())),
        None => top.remove("variant"),
    };
    match inp.author {
        Some(a) => top.insert("author".into(), Value::String(a.to_string())),
        None => top.remove("author"),
    };
    top.insert("config".into(), inp.config_object);
    top.insert(
        "rootfs".into(),
        json!({
            "type": "layers",
            "diff_ids": inp.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        }),
    );
    if history.is_empty() {
        top.remove("history");
    } else {
        top.insert("history".into(), Value::Array(history));
    }
    from_config(&Value::Object(top), inp.layers.to_vec())
}

/// Serialises a config canonically and builds its manifest over `layers`.
pub fn from_config(config: &Value, layers: Vec<ImageLayer>) -> AssembledImage {
    let config = canonical_json(config);
    let config_digest = Digest::of(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_CONFIG,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "digest": l.digest.to_string(),
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let manifest = canonical_json(&manifest);
    AssembledImage {
        manifest_digest: Digest::of(&manifest),
        config,
        config_digest,
        manifest,
        layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": "x"}});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn from_store_reads_back_what_assemble_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = strata_cache::Store::open(dir.path()).unwrap();
        let layers = [ImageLayer {
            digest: Digest::of(b"layer"),
            size: 5,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_id: Digest::of(b"tar"),
        }];
        let img = assemble(ImageInputs {
            platform: &Platform::host(),
            source_date_epoch: 0,
            config_object: json!({"Labels": {"a": "b"}}),
            author: None,
            base_config: None,
            new_history: &[],
            layers: &layers,
        });
        store.blobs().put(&img.config).unwrap();
        store.blobs().put(&img.manifest).unwrap();
        let back = AssembledImage::from_store(store.blobs(), &img.manifest_digest).unwrap();
        assert_eq!(back.manifest, img.manifest);
        assert_eq!(back.config, img.config);
        assert_eq!(back.config_digest, img.config_digest);
        assert_eq!(back.layers, img.layers);
        assert!(matches!(
            AssembledImage::from_store(store.blobs(), &Digest::of(b"nothing")),
            Err(ImageError::Stored { .. })
        ));
    }
}
