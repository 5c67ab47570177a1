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
    let stored =
        strata_engine::export::Stored::load(store.blobs(), &tag.manifest, &tag.media_type)?;
    let mut out = match &stored {
        // A multi-platform build's tag names an index (its `config` is the index itself).
        strata_engine::export::Stored::Index(_) => json!({
            "name": name,
            "digest": tag.manifest.to_string(),
            "mediaType": tag.media_type,
            "index": config,
        }),
        _ => json!({
            "name": name,
            "digest": tag.manifest.to_string(),
            "mediaType": tag.media_type,
            "configDigest": tag.config.to_string(),
            "config": config,
        }),
    };
    if let strata_engine::export::Stored::Attested(_, a) = &stored {
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
