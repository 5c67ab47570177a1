//! The base-image change scenario: a "patched" copy of an `oci-layout://` base — the same
//! image plus one small layer (as a distribution security update would add), with the same tag
//! (or the layout's default image) now pointing to it.
//!
//! The patch is written into the bench's own copy of the context (bases must live inside the
//! context), and [`Patched::restore`] puts the original `index.json` back afterwards.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use strata_cache::Digest;
use strata_engine::image::layout::{parse_layout_ref, Selector};
use strata_engine::image::BaseImage;
use strata_engine::layer::{self, Compression, Entry};
use strata_engine::oci::{self, MEDIA_TYPE_DOCKER_TAR_GZIP};

/// Where the patch layer puts its file (an os-release-like marker).
pub const PATCH_PATH: &str = "etc/strata-bench-patch";

/// A layout whose selected image was replaced by its patched version.
pub struct Patched {
    layout: PathBuf,
    original_index: Vec<u8>,
    pub manifest: Digest,
}

impl Patched {
    /// Points the layout back at the original image (the new blobs stay; they are unreferenced).
    pub fn restore(self) -> anyhow::Result<()> {
        let p = self.layout.join(oci::INDEX_FILE);
        std::fs::write(&p, &self.original_index)
            .with_context(|| format!("restoring `{}`", p.display()))
    }
}

fn write_blob(layout: &Path, data: &[u8]) -> anyhow::Result<(Digest, u64)> {
    let d = Digest::of(data);
    let p = oci::blob_path(layout, &d);
    std::fs::write(&p, data).with_context(|| format!("writing `{}`", p.display()))?;
    Ok((d, data.len() as u64))
}

fn read_json(p: &Path) -> anyhow::Result<Value> {
    let b = std::fs::read(p).with_context(|| format!("reading `{}`", p.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("parsing `{}`", p.display()))
}

/// Adds one layer with [`PATCH_PATH`] to `base` (an image of the layout at `base.layout`) and
/// points the reference that selected it at the result. `patch_level` goes into the file so two
/// patches differ. Bases pinned by digest cannot follow a patch: an error says so.
pub fn patch(base: &BaseImage, patch_level: u32) -> anyhow::Result<Patched> {
    let strata_engine::image::BlobSource::Layout(layout) = &base.source else {
        bail!("error: a base-image change for the registry image `{}` is not supported yet (bench patches OCI layout bases)", base.reference);
    };
    let (_, selector) = parse_layout_ref(&base.reference)?;
    if let Selector::Digest(d) = &selector {
        bail!("error: a base-image change for `oci-layout://{}` (pinned by digest {d}) is not supported yet: a patched image has another digest", base.reference);
    }
    let blob_path = |d: &Digest| oci::blob_path(layout, d);

    // The patch layer, in the compression of the base's last layer.
    let last_mt = base
        .layers
        .last()
        .map(|l| l.media_type.as_str())
        .unwrap_or("");
    let compression = Compression::from_media_type(last_mt).unwrap_or(Compression::Gzip);
    let content = format!("PATCH_LEVEL={patch_level}\nPATCHED_BY=\"strata bench\"\n");
    let entries = layer::canonicalize(
        vec![
            Entry::dir("etc", 0o755, 0, 0, 0),
            Entry::file_bytes(PATCH_PATH, 0o644, 0, content.as_bytes()),
        ],
        0,
    )?;
    let mut blob = Vec::new();
    let out = layer::write_layer(&entries, compression, &mut blob)?;
    let (layer_digest, layer_size) = write_blob(layout, &blob)?;
    let media_type = if last_mt == MEDIA_TYPE_DOCKER_TAR_GZIP {
        MEDIA_TYPE_DOCKER_TAR_GZIP
    } else {
        out.media_type
    };

    // Config: one more diff_id, one more history entry (if the base keeps history).
    let mut config = base.config.clone();
    config
        .pointer_mut("/rootfs/diff_ids")
        .and_then(Value::as_array_mut)
        .context("the base config has no rootfs.diff_ids")?
        .push(json!(out.diff_id.to_string()));
    if let Some(h) = config.get_mut("history").and_then(Value::as_array_mut) {
        h.push(json!({
            "created": "1970-01-01T00:00:00Z",
            "created_by": format!("strata bench: simulated base patch (/{PATCH_PATH})"),
        }));
    }
    let (config_digest, config_size) = write_blob(layout, &serde_json::to_vec(&config)?)?;

    let mut manifest = read_json(&blob_path(&base.manifest_digest))?;
    manifest["config"]["digest"] = json!(config_digest.to_string());
    manifest["config"]["size"] = json!(config_size);
    manifest["layers"]
        .as_array_mut()
        .context("the base manifest has no layers array")?
        .push(json!({ "mediaType": media_type, "digest": layer_digest.to_string(), "size": layer_size }));
    let (manifest_digest, manifest_size) = write_blob(layout, &serde_json::to_vec(&manifest)?)?;

    // index.json: the descriptor that selected the base now points at the patched manifest
    // (through a nested index for multi-platform images).
    let index_path = layout.join(oci::INDEX_FILE);
    let original_index = std::fs::read(&index_path)
        .with_context(|| format!("reading `{}`", index_path.display()))?;
    let mut index: Value = serde_json::from_slice(&original_index)
        .with_context(|| format!("parsing `{}`", index_path.display()))?;
    let old = base.manifest_digest.to_string();
    let manifests = index["manifests"]
        .as_array_mut()
        .with_context(|| format!("`{}` has no manifests", index_path.display()))?;
    let wanted = |d: &Value| match &selector {
        Selector::Tag(t) => oci::ref_name(d) == Some(t.as_str()),
        _ => true,
    };
    let mut replaced = false;
    for d in manifests.iter_mut().filter(|d| wanted(d)) {
        let mt = d["mediaType"].as_str().unwrap_or("");
        if d["digest"].as_str() == Some(old.as_str()) {
            d["digest"] = json!(manifest_digest.to_string());
            d["size"] = json!(manifest_size);
            replaced = true;
        } else if oci::is_index_media_type(mt) {
            let nested_digest: Digest = d["digest"].as_str().unwrap_or("").parse()?;
            let mut nested = read_json(&blob_path(&nested_digest))?;
            let mut hit = false;
            for m in nested["manifests"].as_array_mut().into_iter().flatten() {
                if m["digest"].as_str() == Some(old.as_str()) {
                    m["digest"] = json!(manifest_digest.to_string());
                    m["size"] = json!(manifest_size);
                    hit = true;
                }
            }
            if hit {
                let (nd, ns) = write_blob(layout, &serde_json::to_vec(&nested)?)?;
                d["digest"] = json!(nd.to_string());
                d["size"] = json!(ns);
                replaced = true;
            }
        }
    }
    if !replaced {
        bail!(
            "the image {old} selected by `oci-layout://{}` is not referenced from `{}`",
            base.reference,
            index_path.display()
        );
    }
    std::fs::write(&index_path, serde_json::to_vec(&index)?)
        .with_context(|| format!("writing `{}`", index_path.display()))?;
    Ok(Patched {
        layout: layout.clone(),
        original_index,
        manifest: manifest_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::image::layout;
    use strata_engine::image::Platform;

    /// A one-layer image in a new layout, tagged `1`, written by hand (no strata build involved).
    fn make_layout(dir: &Path) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let entries = layer::canonicalize(
            vec![Entry::file_bytes("etc/os-release", 0o644, 0, b"ID=test\n")],
            0,
        )
        .unwrap();
        let mut blob = Vec::new();
        let out = layer::write_layer(&entries, Compression::Gzip, &mut blob).unwrap();
        let (ld, ls) = write_blob(dir, &blob).unwrap();
        let p = Platform::host();
        let config = json!({
            "architecture": p.architecture, "os": p.os,
            "config": {"Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": [out.diff_id.to_string()]},
            "history": [{"created_by": "base"}],
        });
        let (cd, cs) = write_blob(dir, &serde_json::to_vec(&config).unwrap()).unwrap();
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cs},
            "layers": [{"mediaType": out.media_type, "digest": ld.to_string(), "size": ls}],
        });
        let (md, ms) = write_blob(dir, &serde_json::to_vec(&manifest).unwrap()).unwrap();
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": ms,
                           "annotations": {oci::REF_NAME_ANNOTATION: "1"}}],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    #[test]
    fn patched_base_has_one_more_layer_under_the_same_tag_and_restores() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("layout");
        make_layout(&dir);
        let p = Platform::host();
        let before = layout::load("layout:1", t.path(), &p).unwrap();
        let patched = patch(&before, 7).unwrap();
        let after = layout::load("layout:1", t.path(), &p).unwrap();
        assert_eq!(after.manifest_digest, patched.manifest);
        assert_ne!(after.manifest_digest, before.manifest_digest);
        assert_eq!(after.layers.len(), 2);
        assert_eq!(
            after.layers[0], before.layers[0],
            "the base layers are kept"
        );
        assert_eq!(after.config["history"].as_array().unwrap().len(), 2);
        assert_eq!(after.config["config"], before.config["config"]);

        // A real client reads the patched image: umoci unpacks both layers.
        let bundle = t.path().join("bundle");
        let o = std::process::Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:1", dir.display()))
            .arg(&bundle)
            .output()
            .expect("umoci is installed (.ci/install-deps)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rootfs = bundle.join("rootfs");
        assert_eq!(
            std::fs::read_to_string(rootfs.join(PATCH_PATH)).unwrap(),
            "PATCH_LEVEL=7\nPATCHED_BY=\"strata bench\"\n"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/os-release")).unwrap(),
            "ID=test\n"
        );

        patched.restore().unwrap();
        let restored = layout::load("layout:1", t.path(), &p).unwrap();
        assert_eq!(restored.manifest_digest, before.manifest_digest);
    }

    #[test]
    fn base_pinned_by_digest_is_not_supported_yet() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("layout");
        make_layout(&dir);
        let p = Platform::host();
        let tagged = layout::load("layout:1", t.path(), &p).unwrap();
        let pinned =
            layout::load(&format!("layout@{}", tagged.manifest_digest), t.path(), &p).unwrap();
        let e = patch(&pinned, 1).err().unwrap().to_string();
        assert!(
            e.contains("not supported yet") && e.contains("pinned by digest"),
            "{e}"
        );
    }
}
