//! `strata inspect NAME`: the manifest digest and config of a tagged image, as pretty JSON;
//! for an attested image also its index and attestations (predicate type, digest, size).

use std::path::Path;

use serde_json::{json, Value};

use crate::args::InspectArgs;

pub fn run(store_dir: &Path, a: InspectArgs) -> anyhow::Result<i32> {
    let store = super::open_store(store_dir)?;
    let (name, tag) = super::find_tag(&store, &a.name)?;
    let config = store.blobs().read_verified(&tag.config)?;
    let config: Value = serde_json::from_slice(&config)?;
    let mut out = json!({
        "name": name,
        "digest": tag.manifest.to_string(),
        "mediaType": tag.media_type,
        "configDigest": tag.config.to_string(),
        "config": config,
    });
    let (_, attested) =
        strata_engine::attest::stored_image(store.blobs(), &tag.manifest, &tag.media_type)?;
    if let Some(a) = attested {
        out["manifestDigest"] = json!(a.image.to_string());
        out["attestationManifest"] = json!(a.manifest_digest.to_string());
        out["attestations"] = a
            .layers
            .iter()
            .map(|l| {
                json!({
                    "predicateType": l.predicate_type,
                    "digest": l.digest.to_string(),
                    "size": l.size,
                })
            })
            .collect();
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
