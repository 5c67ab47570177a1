//! The base-image change scenario: a "patched" base — the same image plus one small layer (as a
//! distribution security update would add) — named by the reference the Dockerfile already uses.
//!
//! - `oci-layout://` bases: the patched image is written into the layout of the bench's own copy
//!   of the context (bases must live inside the context) and the tag (or the layout's default
//!   image) is pointed at it; [`Applied::restore`] puts the original `index.json` back.
//! - Registry bases (`debian:12`, `host:port/ns/name:tag`): the bench must not push to the
//!   user's registry, and a temporary layout would need a rewritten Dockerfile (ARG-expanded
//!   `FROM`s, `COPY --from=IMAGE`) and a context that holds it (changing what `COPY .` sees).
//!   So the patched manifest and config go into the bench's throwaway store, beside the base's
//!   (the bench pulled them there), and the session is told to answer the same reference with
//!   the patched image ([`Session::override_image`]); its layer blobs come from the registry
//!   as before, the patch layer from memory ([`PatchFetcher`]). [`Applied::restore`] drops the
//!   override. Nothing outside the bench's temp dir is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use strata_cache::{BlobStore, Digest};
use strata_engine::image::layout::{parse_layout_ref, Selector};
use strata_engine::image::{
    BaseImage, BlobFetchError, BlobFetcher, BlobSource, LayerDesc, Platform,
};
use strata_engine::layer::{self, Compression, Entry};
use strata_engine::oci::{self, MEDIA_TYPE_DOCKER_TAR_GZIP};
use strata_engine::registry::Reference;
use strata_engine::session::Session;

/// Where the patch layer puts its file (an os-release-like marker).
pub const PATCH_PATH: &str = "etc/strata-bench-patch";

/// A base whose reference now names its patched version.
pub struct Applied {
    undo: Undo,
    pub manifest: Digest,
}

enum Undo {
    /// The layout's `index.json` before the patch.
    Layout {
        layout: PathBuf,
        original_index: Vec<u8>,
    },
    /// The session's override.
    Override,
}

impl Applied {
    /// The reference names the original image again (the new blobs stay; they are unreferenced).
    pub fn restore(self, session: &Session) -> anyhow::Result<()> {
        match self.undo {
            Undo::Layout {
                layout,
                original_index,
            } => {
                let p = layout.join(oci::INDEX_FILE);
                std::fs::write(&p, &original_index)
                    .with_context(|| format!("restoring `{}`", p.display()))
            }
            Undo::Override => {
                session.clear_image_overrides();
                Ok(())
            }
        }
    }
}

/// The reference as the user wrote it in `FROM` (layouts with their `oci-layout://`).
pub fn shown(base: &BaseImage) -> String {
    match &base.source {
        BlobSource::Layout(_) => format!("oci-layout://{}", base.reference),
        BlobSource::Fetcher(_) => base.reference.clone(),
    }
}

/// Patches `base` and points the reference that selected it at the result: in its layout, or
/// (a registry base) in `session`. `patch_level` goes into the file so two patches differ.
/// Bases pinned by digest cannot follow a patch: an error says so.
pub fn apply(base: &BaseImage, session: &Session, patch_level: u32) -> anyhow::Result<Applied> {
    match &base.source {
        BlobSource::Layout(layout) => patch_layout(base, layout, patch_level),
        BlobSource::Fetcher(inner) => patch_registry(base, inner, session, patch_level),
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

/// The patched image: its new blobs, for whoever stores them.
struct PatchedImage {
    layer: LayerDesc,
    layer_blob: Vec<u8>,
    config: Value,
    config_bytes: Vec<u8>,
    manifest_bytes: Vec<u8>,
}

/// `base` (whose manifest is `manifest`) plus the patch layer: one more layer in the manifest
/// (in the compression of the base's last layer), one more diff_id and history entry in the
/// config.
fn patched_image(
    base: &BaseImage,
    mut manifest: Value,
    patch_level: u32,
) -> anyhow::Result<PatchedImage> {
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
    let mut layer_blob = Vec::new();
    let out = layer::write_layer(&entries, compression, &mut layer_blob)?;
    let media_type = if last_mt == MEDIA_TYPE_DOCKER_TAR_GZIP {
        MEDIA_TYPE_DOCKER_TAR_GZIP.to_string()
    } else {
        out.media_type.to_string()
    };
    let layer = LayerDesc {
        digest: Digest::of(&layer_blob),
        size: layer_blob.len() as u64,
        media_type,
        diff_id: out.diff_id,
    };

    let mut config = base.config.clone();
    config
        .pointer_mut("/rootfs/diff_ids")
        .and_then(Value::as_array_mut)
        .context("the base config has no rootfs.diff_ids")?
        .push(json!(layer.diff_id.to_string()));
    if let Some(h) = config.get_mut("history").and_then(Value::as_array_mut) {
        h.push(json!({
            "created": "1970-01-01T00:00:00Z",
            "created_by": format!("strata bench: simulated base patch (/{PATCH_PATH})"),
        }));
    }
    let config_bytes = serde_json::to_vec(&config)?;

    manifest["config"]["digest"] = json!(Digest::of(&config_bytes).to_string());
    manifest["config"]["size"] = json!(config_bytes.len());
    manifest["layers"]
        .as_array_mut()
        .context("the base manifest has no layers array")?
        .push(json!({ "mediaType": layer.media_type, "digest": layer.digest.to_string(), "size": layer.size }));
    Ok(PatchedImage {
        layer,
        layer_blob,
        config,
        config_bytes,
        manifest_bytes: serde_json::to_vec(&manifest)?,
    })
}

/// The `oci-layout://` variant: new blobs in the layout, the selecting descriptor of
/// `index.json` re-pointed.
fn patch_layout(base: &BaseImage, layout: &Path, patch_level: u32) -> anyhow::Result<Applied> {
    let (_, selector) = parse_layout_ref(&base.reference)?;
    if let Selector::Digest(d) = &selector {
        bail!("error: a base-image change for `oci-layout://{}` (pinned by digest {d}) is not supported yet: a patched image has another digest", base.reference);
    }
    let blob_path = |d: &Digest| oci::blob_path(layout, d);
    let p = patched_image(
        base,
        read_json(&blob_path(&base.manifest_digest))?,
        patch_level,
    )?;
    write_blob(layout, &p.layer_blob)?;
    write_blob(layout, &p.config_bytes)?;
    let (manifest_digest, manifest_size) = write_blob(layout, &p.manifest_bytes)?;

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
    Ok(Applied {
        undo: Undo::Layout {
            layout: layout.to_path_buf(),
            original_index,
        },
        manifest: manifest_digest,
    })
}

/// The registry variant: the patched manifest and config in the session's (throwaway) store,
/// the reference answered with the patched image by the session until [`Applied::restore`].
fn patch_registry(
    base: &BaseImage,
    inner: &Arc<dyn BlobFetcher>,
    session: &Session,
    patch_level: u32,
) -> anyhow::Result<Applied> {
    if let Ok(Reference {
        digest: Some(d), ..
    }) = Reference::parse(&base.reference)
    {
        bail!("error: a base-image change for `{}` (pinned by digest {d}) is not supported yet: a patched image has another digest\nhint: to measure it, bench a copy of the Dockerfile whose FROM names the image by its tag", base.reference);
    }
    // Resolving the base put its manifest into the store (verified against its digest).
    let blobs = session.store().blobs();
    let manifest = blobs
        .read_verified(&base.manifest_digest)
        .with_context(|| format!("reading the manifest of `{}`", base.reference))?;
    let manifest: Value = serde_json::from_slice(&manifest)
        .with_context(|| format!("parsing the manifest of `{}`", base.reference))?;
    let p = patched_image(base, manifest, patch_level)?;
    let (config_digest, _) = blobs.put(&p.config_bytes)?;
    let (manifest_digest, _) = blobs.put(&p.manifest_bytes)?;
    let mut layers = base.layers.clone();
    layers.push(p.layer.clone());
    let patched = BaseImage {
        reference: base.reference.clone(),
        source: BlobSource::Fetcher(Arc::new(PatchFetcher {
            layer: p.layer,
            blob: p.layer_blob,
            inner: inner.clone(),
        })),
        // No index: the tag names the platform's manifest directly.
        pinned: manifest_digest,
        manifest_digest,
        config_digest,
        config: p.config,
        layers,
    };
    session.override_image(patched, Platform::host());
    Ok(Applied {
        undo: Undo::Override,
        manifest: manifest_digest,
    })
}

/// The patched registry image's layer blobs: the patch layer from memory, every other from
/// where the base's come from.
struct PatchFetcher {
    layer: LayerDesc,
    blob: Vec<u8>,
    inner: Arc<dyn BlobFetcher>,
}

impl BlobFetcher for PatchFetcher {
    fn fetch(&self, layer: &LayerDesc, store: &BlobStore) -> Result<(), BlobFetchError> {
        if layer.digest != self.layer.digest {
            return self.inner.fetch(layer, store);
        }
        store.put(&self.blob)?;
        Ok(())
    }

    fn origin(&self) -> String {
        format!("{}, patched by strata bench", self.inner.origin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_cache::Store;
    use strata_engine::image::layout;
    use strata_engine::session::RegistryOptions;

    fn session(dir: &Path) -> Session {
        Session::new(
            Store::open(&dir.join("store")).unwrap(),
            RegistryOptions::default(),
        )
    }

    /// Serves blobs from a layout, as a registry would.
    struct FromLayout(PathBuf);
    impl BlobFetcher for FromLayout {
        fn fetch(&self, layer: &LayerDesc, store: &BlobStore) -> Result<(), BlobFetchError> {
            store.import_file(&oci::blob_path(&self.0, &layer.digest), Some(&layer.digest))?;
            Ok(())
        }
        fn origin(&self) -> String {
            "test registry".into()
        }
    }

    /// The image of `make_layout`, as if resolved from the registry `reference` into `s`'s store.
    fn as_registry_image(dir: &Path, s: &Session, reference: &str) -> BaseImage {
        let img = layout::load("layout:1", dir.parent().unwrap(), &Platform::host()).unwrap();
        for d in [&img.manifest_digest, &img.config_digest] {
            s.store()
                .blobs()
                .import_file(&oci::blob_path(dir, d), Some(d))
                .unwrap();
        }
        BaseImage {
            reference: reference.into(),
            source: BlobSource::Fetcher(Arc::new(FromLayout(dir.to_path_buf()))),
            ..img
        }
    }

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
        let patched = patch_layout(&before, &dir, 7).unwrap();
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

        patched.restore(&session(t.path())).unwrap();
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
        let e = patch_layout(&pinned, &dir, 1).err().unwrap().to_string();
        assert!(
            e.contains("not supported yet") && e.contains("pinned by digest"),
            "{e}"
        );
    }

    #[test]
    fn registry_base_is_answered_with_the_patched_image_until_restored() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("layout");
        make_layout(&dir);
        let s = session(t.path());
        let reference = "127.0.0.1:9/base:1";
        let base = as_registry_image(&dir, &s, reference);
        let index_before = std::fs::read(dir.join("index.json")).unwrap();
        let applied = apply(&base, &s, 4).unwrap();
        let resolver = s.image_resolver(t.path()).unwrap();
        let got = resolver.resolve(reference, &Platform::host()).unwrap();
        assert_eq!(got.manifest_digest, applied.manifest);
        assert_eq!(got.reference, reference);
        assert_eq!(got.layers.len(), 2);
        assert_eq!(got.layers[0], base.layers[0]);
        assert_eq!(got.config["config"], base.config["config"]);
        // The patched manifest and config are in the store and name each other and the layers.
        let m: Value = serde_json::from_slice(
            &s.store()
                .blobs()
                .read_verified(&got.manifest_digest)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(m["config"]["digest"], got.config_digest.to_string());
        assert_eq!(m["layers"][1]["digest"], got.layers[1].digest.to_string());
        let c: Value =
            serde_json::from_slice(&s.store().blobs().read_verified(&got.config_digest).unwrap())
                .unwrap();
        assert_eq!(c, got.config);
        // Both layers come in: the base's from "the registry", the patch from memory.
        let BlobSource::Fetcher(f) = &got.source else {
            panic!("a registry image is fetched");
        };
        for l in &got.layers {
            f.fetch(l, s.store().blobs()).unwrap();
            assert!(s.store().blobs().contains(&l.digest));
        }
        applied.restore(&s).unwrap();
        let after = format!("{:?}", s.image_resolver(t.path()).unwrap());
        assert!(!after.contains("Overrides"), "{after}");
        // Nothing of the "registry" changed.
        assert_eq!(std::fs::read(dir.join("index.json")).unwrap(), index_before);
    }

    #[test]
    fn registry_base_pinned_by_digest_is_not_supported_yet() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("layout");
        make_layout(&dir);
        let s = session(t.path());
        let d = Digest::of(b"x");
        let base = as_registry_image(&dir, &s, &format!("127.0.0.1:9/base@{d}"));
        let e = apply(&base, &s, 1).err().unwrap().to_string();
        assert!(
            e.contains("not supported yet")
                && e.contains("pinned by digest")
                && e.contains("hint:"),
            "{e}"
        );
        let after = format!("{:?}", s.image_resolver(t.path()).unwrap());
        assert!(!after.contains("Overrides"), "{after}");
    }
}
