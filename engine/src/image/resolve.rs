//! Resolving image references (`FROM`, `COPY --from=`) to base images.
//!
//! The planner knows scratch and stages; every other image word goes to an [`ImageResolver`].
//! [`LocalImages`] reads `oci-layout://` references (confined to the build context); a registry
//! resolver wraps it, and the lockfile wraps either, pinning each reference to a digest.
//!
//! Resolution reads only small JSON (index, manifest, config), each checked against its digest;
//! layer blobs come later, through the image's [`BlobSource`], when a step needs them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_cache::BlobStore;

use super::layout::{self, BaseImage, LayerDesc};
use super::{ImageError, Platform};

/// Turns an image reference (after ARG expansion) into an image for one platform.
pub trait ImageResolver: Send + Sync + fmt::Debug {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, ImageError>;
}

/// Why a layer blob could not be put into the store (by a [`BlobFetcher`] or an imported
/// cache).
#[derive(Debug, thiserror::Error)]
pub enum BlobFetchError {
    /// Copying or verifying the blob into the store failed (a layout's blob missing, a
    /// digest mismatch, the store's file system).
    #[error(transparent)]
    Store(#[from] strata_cache::StoreError),
    /// The registry did not deliver it (boxed: the registry error is large).
    #[error(transparent)]
    Registry(#[from] Box<crate::registry::RegistryError>),
    /// A fetcher with no source to ask (a registry fetcher always has one).
    #[error("no source to fetch from")]
    NoSource,
    /// None of the imported caches names the layer.
    #[error("no cache has it")]
    NotCached,
    /// What the last source asked answered, with where that was.
    #[error("{origin}: {source}")]
    From {
        origin: String,
        source: Box<BlobFetchError>,
    },
}

/// Fetches a base image's layer blobs into the store.
pub trait BlobFetcher: Send + Sync {
    /// Puts `layer` into `store`, verified against its digest before it becomes visible;
    /// nothing partial is kept on failure.
    fn fetch(&self, layer: &LayerDesc, store: &BlobStore) -> Result<(), BlobFetchError>;
    /// [`fetch`](Self::fetch), showing the blob's bytes to `observe` in order as they arrive,
    /// for a reader of the layer that works while it downloads (`solve::base_scan`); `observe`
    /// returns false when it wants no more. The bytes shown are the blob only if the fetch
    /// succeeds (a download that was retried may have shown a broken stream): the reader must
    /// check what it read (a layer's diff_id). The default fetches, then shows the stored blob.
    fn fetch_observed(
        &self,
        layer: &LayerDesc,
        store: &BlobStore,
        observe: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), BlobFetchError> {
        self.fetch(layer, store)?;
        // Read as a plain file: the fetch verified the digest, and the reader checks the
        // diff_id (a `BlobStore::open` would hash the blob a second time).
        let Ok(mut r) = std::fs::File::open(store.path(&layer.digest)) else {
            return Ok(());
        };
        let mut buf = vec![0u8; 256 << 10];
        while let Ok(n) = std::io::Read::read(&mut r, &mut buf) {
            if n == 0 || !observe(&buf[..n]) {
                break;
            }
        }
        Ok(())
    }
    /// Where the blobs come from, for messages (`registry 127.0.0.1:5000, repository app`).
    fn origin(&self) -> String;
}

/// Where a base image's layer blobs come from.
#[derive(Clone)]
pub enum BlobSource {
    /// `blobs/sha256/…` of a local OCI layout.
    Layout(PathBuf),
    /// Somewhere else (a registry).
    Fetcher(Arc<dyn BlobFetcher>),
}

impl BlobSource {
    pub fn origin(&self) -> String {
        match self {
            BlobSource::Layout(p) => format!("OCI layout `{}`", p.display()),
            BlobSource::Fetcher(f) => f.origin(),
        }
    }
}

impl fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

/// `oci-layout://DIR[:TAG|@DIGEST]` inside the build context; registry references are refused.
#[derive(Debug, Clone)]
pub struct LocalImages {
    context_dir: PathBuf,
}

impl LocalImages {
    pub fn new(context_dir: &Path) -> LocalImages {
        LocalImages {
            context_dir: context_dir.to_path_buf(),
        }
    }

    /// The default resolver for a build context, shared.
    pub fn shared(context_dir: &Path) -> Arc<dyn ImageResolver> {
        Arc::new(LocalImages::new(context_dir))
    }
}

impl ImageResolver for LocalImages {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, ImageError> {
        if let Some(rest) = reference.strip_prefix("oci-layout://") {
            // The Dockerfile is untrusted input: it may only name layouts inside the build
            // context, never an arbitrary directory of the host (`/`, `../`).
            let (dir, _) = layout::parse_layout_ref(rest)?;
            let root = std::fs::canonicalize(&self.context_dir).unwrap_or(self.context_dir.clone());
            let inside = std::fs::canonicalize(root.join(&dir)).map(|p| p.starts_with(&root));
            if let Ok(false) = inside {
                return Err(ImageError::OutsideContext { layout: dir });
            }
            return layout::load(rest, &self.context_dir, platform);
        }
        if reference.contains("://") {
            return Err(ImageError::Unsupported {
                reference: reference.to_string(),
                what: "this kind of image source".into(),
                hint: "use `scratch`, an earlier stage, or `oci-layout://DIR[:TAG]`".into(),
            });
        }
        Err(ImageError::Unsupported {
            reference: reference.to_string(),
            what: "pulling from a registry".into(),
            hint: format!(
                "export the image to an OCI layout (e.g. `skopeo copy docker://{reference} oci:base:tag`) and use `FROM oci-layout://base:tag`"
            ),
        })
    }
}
