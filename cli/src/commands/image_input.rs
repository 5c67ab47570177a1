//! The image inputs of `strata diff` and `strata verify --against` beyond those the engine
//! opens itself (`oci:`, `oci-archive:`, `docker-archive:`, a path): `store:NAME[:TAG]` (or
//! `tag:NAME[:TAG]`), an image in strata's store, and `registry:REF`, an image pulled from its
//! registry without building anything. Both are written to a temporary OCI layout (blobs
//! hard-linked) and compared from there, like any other layout.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use strata_engine::diff::{self, DiffError, ImageSource};
use strata_engine::export::{self, ImageName};
use strata_engine::image::Platform;
use strata_engine::session::Session;

use super::Globals;

/// Resolves inputs into loadable specs, keeping the temporary layouts alive.
pub(crate) struct Inputs<'g> {
    g: &'g Globals,
    /// Layouts written for `store:` and `registry:` inputs; also the throwaway store pulls go
    /// to (a comparison leaves the user's store as it was).
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    platform: Platform,
    pulls: Option<Session>,
    n: usize,
}

/// An input resolved: what to load, and the name to show for it.
pub(crate) struct Input {
    pub spec: String,
    pub shown: String,
}

impl<'g> Inputs<'g> {
    /// Temporary layouts under `dir` (a fresh temporary directory when `None`); registry
    /// images for `platform` (`--platform`, default the host's).
    pub fn new(g: &'g Globals, dir: Option<&Path>, platform: Option<&str>) -> anyhow::Result<Self> {
        // The build's own parser (normalisation, hints); a registry image is compared for one
        // platform.
        let platform = match strata_engine::session::build::target_platforms(platform)?.as_slice() {
            [p] => p.clone(),
            more => anyhow::bail!(
                "--platform: a registry image is compared for one platform, not {}\nhint: give one --platform (e.g. --platform {})",
                more.len(),
                more[0]
            ),
        };
        let (dir, tmp) = match dir {
            Some(d) => (d.to_path_buf(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("strata-diff-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        Ok(Inputs {
            g,
            dir,
            _tmp: tmp,
            platform,
            pulls: None,
            n: 0,
        })
    }

    /// What to hand to [`diff::load_image`] for `spec`.
    pub fn resolve(&mut self, spec: &str) -> anyhow::Result<Input> {
        self.n += 1;
        let dest = self.dir.join(format!("input-{}", self.n));
        let resolved = if let Some(name) = spec
            .strip_prefix("store:")
            .or_else(|| spec.strip_prefix("tag:"))
        {
            let store = super::open_store(&self.g.store_dir)?;
            let (full, tag) = super::find_tag(&store, name)?;
            write_layout(store.blobs(), &tag.manifest, &tag.media_type, &full, &dest)?
        } else if let Some(reference) = spec.strip_prefix("registry:") {
            let session = match &self.pulls {
                Some(s) => s,
                None => {
                    let store = super::open_store(&self.dir.join("pulled"))?;
                    self.pulls
                        .insert(Session::new(store, self.g.registry.clone()))
                }
            };
            let digest = session
                .pull(reference, &self.platform)
                .with_context(|| format!("pulling `{reference}`"))?;
            // The layout's tag: the reference's, else `pulled`.
            let name = ImageName::parse(reference)
                .map(|n| n.full())
                .unwrap_or_else(|_| "pulled:latest".into());
            write_layout(
                session.store().blobs(),
                &digest,
                strata_engine::oci::MEDIA_TYPE_MANIFEST,
                &name,
                &dest,
            )?
        } else {
            spec.to_string()
        };
        Ok(Input {
            spec: resolved,
            shown: spec.to_string(),
        })
    }
}

/// Writes the image `manifest` (of `media_type`; an attested image's index gives the image in
/// it: the diff compares images, not their attestations) as an OCI layout at `dest`.
fn write_layout(
    blobs: &strata_cache::BlobStore,
    manifest: &strata_cache::Digest,
    media_type: &str,
    name: &str,
    dest: &Path,
) -> anyhow::Result<String> {
    let img = match export::Stored::load(blobs, manifest, media_type)? {
        export::Stored::Image(i) | export::Stored::Attested(i, _) => i,
        export::Stored::Index(_) => anyhow::bail!(
            "`{name}` is a multi-platform image (an index): comparing one is not supported yet\nhint: compare a single-platform build of it"
        ),
    };
    let n = ImageName::parse(name)
        .or_else(|_| ImageName::parse("image:latest"))
        .context("naming the layout")?;
    export::write_oci_dir(blobs, &img, std::slice::from_ref(&n), dest)?;
    Ok(format!("oci:{}:{}", dest.display(), n.tag))
}

/// Loads a resolved input, showing it under the name the user gave.
pub(crate) fn load(input: &Input) -> Result<ImageSource, DiffError> {
    let mut img = diff::load_image(&input.spec)?;
    img.spec = input.shown.clone();
    Ok(img)
}
