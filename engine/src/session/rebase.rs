//! [`Session::rebase`]: `strata rebase IMAGE --onto NEWBASE [--from OLDBASE] [--force]` —
//! swap the base layers of an image without executing anything (crane rebase's idea), with the
//! safety check crane lacks: every layer above the base must be known not to depend on the
//! base's content. strata records that when it builds (`COPY --link` from the context is
//! base-independent; RUN and plain COPY are not); for images built elsewhere, `force` asserts it.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde_json::Value;
use strata_cache::{Digest, Lineage, TagRecord};

use super::{Output, Session, Written};
use crate::export::ImageName;
use crate::image::{self, layout, Platform};
use crate::oci::MEDIA_TYPE_MANIFEST;
use crate::solve::import_base;

/// What [`Session::rebase`] does.
#[derive(Debug, Clone)]
pub struct RebaseRequest {
    /// The image in the store, `NAME[:TAG]`.
    pub image: String,
    /// The new base: `oci-layout://DIR[:TAG|@DIGEST]`.
    pub onto: String,
    /// The old base (for images strata has no record of).
    pub from: Option<String>,
    /// Assert that the layers above the base do not depend on it.
    pub force: bool,
    /// Names of the result, `NAME[:TAG]` (none: the image's own name).
    pub tags: Vec<String>,
    pub outputs: Vec<Output>,
    /// Where relative layout paths are.
    pub cwd: PathBuf,
}

/// What [`Session::rebase`] made.
#[derive(Debug)]
pub struct RebaseReport {
    /// The image's canonical name.
    pub image: String,
    pub manifest_digest: Digest,
    /// Layers of the old base (replaced).
    pub old_base_layers: usize,
    /// Layers of the new base.
    pub new_base_layers: usize,
    /// Layers above the base (kept).
    pub kept_layers: usize,
    pub outputs: Vec<Written>,
}

fn layout_spec(s: &str) -> &str {
    s.strip_prefix("oci-layout://")
        .or_else(|| s.strip_prefix("oci:"))
        .unwrap_or(s)
}

impl Session {
    /// Rebases `req.image` onto `req.onto`, tags the result and writes its outputs.
    pub fn rebase(&self, a: &RebaseRequest) -> anyhow::Result<RebaseReport> {
        let store = self.store();
        let full = ImageName::parse(&a.image)?.full();
        let Some(tag) = store.index().get_tag(&full)? else {
            bail!("no image `{full}` in the store\nhint: `strata images` lists the tags")
        };
        // An attested image is rebased without its attestations: its provenance describes the
        // build, not the rebased image.
        let img = match crate::export::Stored::load(store.blobs(), &tag.manifest, &tag.media_type)? {
            crate::export::Stored::Image(i) | crate::export::Stored::Attested(i, _) => i,
            crate::export::Stored::Index(_) => bail!("`{full}` is a multi-platform image (an index): rebasing one is not supported yet\nhint: rebase a single-platform build of it"),
        };
        let mut config: Value = serde_json::from_slice(&img.config).context("the image config")?;
        let lineage = store.index().get_lineage(&img.manifest_digest)?;
        let platform = Platform::host();
        let cwd = &a.cwd;

        // How many of the image's layers (and history entries) are the old base's.
        let (base_n, base_hist) = match (&a.from, &lineage) {
        (Some(from), _) => {
            let old = layout::load(layout_spec(from), cwd, &platform)?;
            let ok = old.layers.len() <= img.layers.len()
                && old.layers.iter().zip(&img.layers).all(|(o, i)| o.diff_id == i.diff_id);
            if !ok {
                bail!("`{full}` is not built on `{from}`: its first layers are not that image's layers");
            }
            let h = old.config.get("history").and_then(Value::as_array).map(|h| h.len()).unwrap_or(0);
            (old.layers.len(), h)
        }
        (None, Some(l)) if l.base_manifest.is_some() => (l.base_layers as usize, l.base_history as usize),
        (None, Some(_)) => bail!("`{full}` was built FROM scratch or a stage of its own; it has no base image to swap"),
        (None, None) => bail!("strata has no record of how `{full}` was built\nhint: name its base with --from OCI-LAYOUT"),
    };
        let upper = &img.layers[base_n..];
        // The safety check.
        match &lineage {
        Some(l) if l.upper.len() == upper.len() => {
            let dependent: Vec<&str> = l.upper.iter().filter(|(_, ind)| !ind).map(|(s, _)| s.as_str()).collect();
            if !dependent.is_empty() && !a.force {
                bail!(
                    "refusing to rebase `{full}`: {} layer(s) above the base were made by steps that depend on the base's content: {}\nhint: rebuild against the new base instead (only `COPY --link` layers can be moved), or pass --force if you know better",
                    dependent.len(),
                    dependent.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                );
            }
        }
        _ if !a.force => bail!(
            "strata cannot tell whether the {} layer(s) above the base of `{full}` depend on it\nhint: pass --force to assert they do not",
            upper.len()
        ),
        _ => {}
    }

        let new = layout::load(layout_spec(&a.onto), cwd, &platform)?;
        import_base(store, &new)?;
        // History: the new base's, then the image's entries after the old base's.
        let hist = config
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let cut = base_hist.min(hist.len());
        let mut new_hist: Vec<Value> = new
            .config
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        new_hist.extend(hist.into_iter().skip(cut));
        let mut layers = new.layers.clone();
        layers.extend(upper.iter().cloned());
        config["history"] = Value::Array(new_hist);
        config["rootfs"] = serde_json::json!({
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        });
        let out = image::from_config(&config, layers);
        store.blobs().put(&out.config)?;
        store.blobs().put(&out.manifest)?;
        store.index().put_lineage(
            &out.manifest_digest,
            &Lineage {
                base_manifest: Some(new.manifest_digest),
                base_layers: new.layers.len() as u32,
                base_history: new
                    .config
                    .get("history")
                    .and_then(Value::as_array)
                    .map(|h| h.len() as u32)
                    .unwrap_or(0),
                upper: lineage.map(|l| l.upper).unwrap_or_else(|| {
                    upper
                        .iter()
                        .map(|_| ("(forced)".to_string(), true))
                        .collect()
                }),
            },
        )?;
        let names: Vec<ImageName> = if a.tags.is_empty() {
            vec![ImageName::parse(&full)?]
        } else {
            a.tags
                .iter()
                .map(|t| ImageName::parse(t))
                .collect::<Result<_, _>>()?
        };
        for n in &names {
            store.index().put_tag(
                &n.full(),
                &TagRecord {
                    manifest: out.manifest_digest,
                    config: out.config_digest,
                    media_type: MEDIA_TYPE_MANIFEST.to_string(),
                },
            )?;
        }
        let mut written = Vec::new();
        for o in &a.outputs {
            written.push(self.write_output(&out, &names, o, 0)?);
        }
        Ok(RebaseReport {
            image: full,
            manifest_digest: out.manifest_digest,
            old_base_layers: base_n,
            new_base_layers: new.layers.len(),
            kept_layers: upper.len(),
            outputs: written,
        })
    }
}
