//! The OCI (and Docker schema 2) names strata reads and writes: media types, the files of an
//! image layout, and the annotation that tags an image in one.
//!
//! It also holds what every reader of a local layout shares ([`read_blob`], [`ref_name`]):
//! `FROM oci-layout://` (`image::layout`), `strata diff` (`diff::source`) and the local remote
//! cache (`remote_cache`) each choose an image their own way (platform and `latest` rules;
//! containerd names and the first non-attestation manifest; a cache tag), but read and verify
//! blobs the same way.
//!
//! Every other module takes these names from here; a literal media type or layout file name elsewhere
//! is a copy to fold. strata's own artifact types (the remote cache's) live with their owner
//! (`remote_cache`). The spec texts: OCI image-spec `media-types.md`, `image-layout.md` and
//! `annotations.md`; Docker's `manifest-v2-2.md`.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use strata_cache::Digest;

/// OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image configuration.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The OCI empty descriptor's media type (`{}` as a config or layer).
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Docker schema 2 image manifest; read, never written.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list (an index); read, never written.
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// Media type of an uncompressed OCI layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed OCI layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd-compressed OCI layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker's (schema 2) media type of a gzip-compressed layer; accepted when reading.
pub const MEDIA_TYPE_DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header of a registry manifest request: the four kinds above, index first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Whether a manifest-ish media type is an index (OCI index or Docker manifest list).
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST
}

/// The layout's marker file, holding [`LAYOUT_VERSION_JSON`].
pub const LAYOUT_FILE: &str = "oci-layout";
/// What strata writes into [`LAYOUT_FILE`].
pub const LAYOUT_VERSION_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The layout's index of images.
pub const INDEX_FILE: &str = "index.json";
/// Where a layout keeps its sha256 blobs, relative to the layout root.
pub const BLOBS_SHA256: &str = "blobs/sha256";
/// The annotation naming an image in a layout's `index.json` (its tag).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// [`REF_NAME_ANNOTATION`] as a JSON pointer into a descriptor.
pub const REF_NAME_POINTER: &str = "/annotations/org.opencontainers.image.ref.name";

/// The path of blob `digest` in the layout at `root`.
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join(BLOBS_SHA256).join(digest.hex())
}

/// The tag of an image descriptor of `index.json` ([`REF_NAME_ANNOTATION`]), if any.
pub fn ref_name(descriptor: &Value) -> Option<&str> {
    descriptor.pointer(REF_NAME_POINTER).and_then(Value::as_str)
}

/// Why a layout blob could not be read ([`read_blob`]); each reader words it for its users.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("`{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("blob {digest} is over {limit} bytes")]
    TooLarge { digest: Digest, limit: u64 },
    /// The bytes do not hash to the digest, or are not `size` long.
    #[error("blob {digest} does not match its digest or size")]
    Mismatch { path: PathBuf, digest: Digest },
}

/// Reads blob `digest` of the layout at `root` whole and checks it against its digest and, when
/// given, its descriptor's `size`. A blob over `limit` bytes (when given) is refused before it
/// is read.
pub fn read_blob(
    root: &Path,
    digest: &Digest,
    size: Option<u64>,
    limit: Option<u64>,
) -> Result<Vec<u8>, BlobError> {
    let path = blob_path(root, digest);
    let io = |source| BlobError::Io {
        path: path.clone(),
        source,
    };
    if let Some(limit) = limit {
        if std::fs::metadata(&path).map_err(io)?.len() > limit {
            return Err(BlobError::TooLarge {
                digest: *digest,
                limit,
            });
        }
    }
    let data = std::fs::read(&path).map_err(io)?;
    if Digest::of(&data) != *digest || size.is_some_and(|s| s != data.len() as u64) {
        return Err(BlobError::Mismatch {
            path,
            digest: *digest,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_agree_with_their_parts() {
        assert_eq!(
            REF_NAME_POINTER,
            format!("/annotations/{REF_NAME_ANNOTATION}")
        );
        assert!(is_index_media_type(MEDIA_TYPE_DOCKER_LIST));
        assert!(!is_index_media_type(MEDIA_TYPE_MANIFEST));
        let accept = [
            MEDIA_TYPE_INDEX,
            MEDIA_TYPE_MANIFEST,
            MEDIA_TYPE_DOCKER_LIST,
            MEDIA_TYPE_DOCKER_MANIFEST,
        ];
        assert_eq!(MANIFEST_ACCEPT, accept.join(", "));
    }

    #[test]
    fn blobs_are_read_verified() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(BLOBS_SHA256)).unwrap();
        let d = Digest::of(b"{}");
        std::fs::write(blob_path(dir.path(), &d), b"{}").unwrap();
        assert_eq!(read_blob(dir.path(), &d, Some(2), Some(2)).unwrap(), b"{}");
        assert!(matches!(
            read_blob(dir.path(), &d, Some(3), None),
            Err(BlobError::Mismatch { .. })
        ));
        assert!(matches!(
            read_blob(dir.path(), &d, None, Some(1)),
            Err(BlobError::TooLarge { limit: 1, .. })
        ));
        std::fs::write(blob_path(dir.path(), &d), b"[]").unwrap();
        assert!(matches!(
            read_blob(dir.path(), &d, None, None),
            Err(BlobError::Mismatch { .. })
        ));
        let missing = Digest::of(b"x");
        assert!(matches!(
            read_blob(dir.path(), &missing, None, None),
            Err(BlobError::Io { .. })
        ));
        let desc = serde_json::json!({"annotations": {REF_NAME_ANNOTATION: "1"}});
        assert_eq!(ref_name(&desc), Some("1"));
        assert_eq!(ref_name(&serde_json::json!({})), None);
    }
}
