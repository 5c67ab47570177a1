//! [`Overrides`]: an [`ImageResolver`] that answers some references with images it was given,
//! and every other reference through the resolver it wraps.
//!
//! `strata bench` uses it (through `Session::override_image`) for the base-image change of a
//! registry base: for one scenario the user's own reference names a patched image, with nothing
//! pushed to the registry, no lock file written and the Dockerfile unchanged — so ARG-expanded
//! `FROM`s and `COPY --from=IMAGE` follow the patch exactly as they would follow a moved tag.

use std::fmt;
use std::sync::Arc;

use super::{BaseImage, ImageError, ImageResolver, Platform};
use crate::registry::Reference;

/// One image given for a reference on one platform.
#[derive(Debug, Clone)]
pub struct ImageOverride {
    /// Its `reference` is what it answers (`debian:12` also answers `docker.io/library/debian:12`).
    pub image: BaseImage,
    pub platform: Platform,
}

pub struct Overrides {
    inner: Arc<dyn ImageResolver>,
    images: Vec<ImageOverride>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("inner", &self.inner)
            .field(
                "references",
                &self
                    .images
                    .iter()
                    .map(|o| o.image.reference.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Overrides {
    pub fn new(inner: Arc<dyn ImageResolver>, images: Vec<ImageOverride>) -> Overrides {
        Overrides { inner, images }
    }
}

/// The same image name: equal text, or equal once both are normalised as registry references.
fn same_reference(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if a.contains("://") || b.contains("://") {
        return false;
    }
    matches!((Reference::parse(a), Reference::parse(b)), (Ok(x), Ok(y)) if x == y)
}

impl ImageResolver for Overrides {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, ImageError> {
        let given = self
            .images
            .iter()
            .find(|o| o.platform == *platform && same_reference(&o.image.reference, reference));
        match given {
            Some(o) => Ok(BaseImage {
                // As this Dockerfile spells it, for messages and history.
                reference: reference.to_string(),
                ..o.image.clone()
            }),
            None => self.inner.resolve(reference, platform),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::BlobSource;
    use serde_json::json;
    use strata_cache::Digest;

    fn image(reference: &str, tag: &str) -> BaseImage {
        let d = Digest::of(tag.as_bytes());
        BaseImage {
            reference: reference.to_string(),
            source: BlobSource::Layout("/nonexistent".into()),
            pinned: d,
            manifest_digest: d,
            config_digest: d,
            config: json!({}),
            layers: Vec::new(),
        }
    }

    /// Answers every reference with an image named after it.
    #[derive(Debug)]
    struct Inner;
    impl ImageResolver for Inner {
        fn resolve(&self, reference: &str, _: &Platform) -> Result<BaseImage, ImageError> {
            Ok(image(reference, "inner"))
        }
    }

    #[test]
    fn given_reference_on_its_platform_gets_the_given_image_others_go_through() {
        let host = Platform::host();
        let o = Overrides::new(
            Arc::new(Inner),
            vec![ImageOverride {
                image: image("debian:12", "patched"),
                platform: host.clone(),
            }],
        );
        let patched = Digest::of(b"patched");
        for spelling in ["debian:12", "docker.io/library/debian:12"] {
            let got = o.resolve(spelling, &host).unwrap();
            assert_eq!(got.manifest_digest, patched, "{spelling}");
            assert_eq!(got.reference, spelling);
        }
        let inner = Digest::of(b"inner");
        assert_eq!(
            o.resolve("debian:13", &host).unwrap().manifest_digest,
            inner
        );
        assert_eq!(
            o.resolve("oci-layout://debian:12", &host)
                .unwrap()
                .manifest_digest,
            inner
        );
        let other = Platform::parse("linux/s390x").unwrap();
        assert_eq!(
            o.resolve("debian:12", &other).unwrap().manifest_digest,
            inner
        );
    }
}
