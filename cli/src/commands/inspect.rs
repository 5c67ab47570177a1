//! `strata inspect NAME`: the manifest digest and config of a tagged image, as pretty JSON.

use std::path::Path;

use serde_json::{json, Value};

use crate::args::InspectArgs;

pub fn run(store_dir: &Path, a: InspectArgs) -> anyhow::Result<i32> {
    let store = super::open_store(store_dir)?;
    let (name, tag) = super::find_tag(&store, &a.name)?;
    let config = store.blobs().read_verified(&tag.config)?;
    let config: Value = serde_json::from_slice(&config)?;
    // A multi-platform build's tag names an index (its `config` is the index itself).
    let out = if tag.media_type == strata_engine::image::MEDIA_TYPE_INDEX {
        json!({
            "name": name,
            "digest": tag.manifest.to_string(),
            "mediaType": tag.media_type,
            "index": config,
        })
    } else {
        json!({
            "name": name,
            "digest": tag.manifest.to_string(),
            "mediaType": tag.media_type,
            "configDigest": tag.config.to_string(),
            "config": config,
        })
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
