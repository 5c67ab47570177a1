//! Manifests and indexes as registries serve them: OCI image manifest and index, Docker
//! schema 2 manifest and manifest list (schema 1 is refused). Platform selection for indexes.

use serde::Deserialize;
use strata_cache::Digest;

use crate::image::Platform;
use crate::oci::{
    MEDIA_TYPE_DOCKER_LIST as DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST as DOCKER_MANIFEST,
    MEDIA_TYPE_INDEX as OCI_INDEX, MEDIA_TYPE_MANIFEST as OCI_MANIFEST,
};

/// The `Accept` header of a manifest request: every kind we can read.
pub use crate::oci::MANIFEST_ACCEPT as ACCEPT;

/// Manifests and indexes larger than this are refused before they are read whole.
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// Image configs larger than this are refused (they are read whole, as JSON).
pub const CONFIG_LIMIT: u64 = 8 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

/// Why manifest bytes or one of their descriptors cannot be used (the registry module puts
/// it in a `BadResponse` naming the registry and the manifest).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("descriptor digest: {0}")]
    Digest(#[source] strata_cache::DigestParseError),
    #[error("not a manifest: {0}")]
    Json(#[source] serde_json::Error),
    #[error(
        "Docker schema 1 manifests are not supported (re-push the image with a current client)"
    )]
    Schema1,
    #[error("unsupported manifest media type `{0}`")]
    MediaType(String),
    #[error("an index without `manifests`")]
    IndexWithoutManifests,
    #[error("a manifest without `config`")]
    ManifestWithoutConfig,
}

impl Descriptor {
    pub fn digest(&self) -> Result<Digest, ManifestError> {
        self.digest.parse().map_err(ManifestError::Digest)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PlatformJson {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl PlatformJson {
    fn matches(&self, p: &Platform) -> bool {
        p.matches(&self.os, &self.architecture, self.variant.as_deref())
    }

    fn label(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone)]
pub enum Parsed {
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
    Manifest {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

impl Parsed {
    pub fn media_type(&self) -> &str {
        match self {
            Parsed::Index { media_type, .. } | Parsed::Manifest { media_type, .. } => media_type,
        }
    }
}

/// Parses manifest bytes; `content_type` is the response header, used when the JSON has no
/// `mediaType` (it is optional in OCI).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, ManifestError> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
    if raw.schema_version == Some(1) {
        return Err(ManifestError::Schema1);
    }
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| c.starts_with("application/vnd."));
    let media_type = raw.media_type.clone().or(content_type);
    let is_index = match media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => return Err(ManifestError::MediaType(other.to_string())),
        None => raw.manifests.is_some(),
    };
    if is_index {
        let manifests = raw.manifests.ok_or(ManifestError::IndexWithoutManifests)?;
        Ok(Parsed::Index {
            media_type: media_type.unwrap_or_else(|| OCI_INDEX.into()),
            manifests,
        })
    } else {
        let config = raw.config.ok_or(ManifestError::ManifestWithoutConfig)?;
        Ok(Parsed::Manifest {
            media_type: media_type.unwrap_or_else(|| OCI_MANIFEST.into()),
            config,
            layers: raw.layers.unwrap_or_default(),
        })
    }
}

/// An index without an entry for the platform asked for: the platforms it has (displayed as
/// `linux/arm/v7, linux/amd64`, or `no platforms listed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", if .available.is_empty() { "no platforms listed".to_string() } else { .available.join(", ") })]
pub struct NoPlatform {
    pub available: Vec<String>,
}

/// The index entry for `platform`, or the list of platforms the index has.
pub fn select<'a>(
    manifests: &'a [Descriptor],
    platform: &Platform,
) -> Result<&'a Descriptor, NoPlatform> {
    manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(platform)))
        .ok_or_else(|| NoPlatform {
            available: manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(PlatformJson::label))
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plat(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parses_oci_and_docker_shapes() {
        let d = Digest::of(b"c");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{d}","size":1}},"layers":[{{"mediaType":"l","digest":"{d}","size":3}}]}}"#
        );
        let Parsed::Manifest {
            media_type,
            config,
            layers,
        } = parse(m.as_bytes(), None).unwrap()
        else {
            panic!()
        };
        assert_eq!(media_type, DOCKER_MANIFEST);
        assert_eq!(config.digest().unwrap(), d);
        assert_eq!(layers[0].size, 3);
        // OCI without mediaType: the Content-Type header says what it is.
        let m = r#"{"schemaVersion":2,"manifests":[]}"#.to_string();
        assert!(matches!(
            parse(m.as_bytes(), Some(&format!("{OCI_INDEX}; charset=utf-8"))).unwrap(),
            Parsed::Index { .. }
        ));
        assert!(parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None)
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
        assert!(parse(br#"{"mediaType":"application/vnd.foo+json"}"#, None)
            .unwrap_err()
            .to_string()
            .contains("unsupported"));
        assert!(parse(b"not json", None).is_err());
    }

    #[test]
    fn selects_the_platform() {
        let d = Digest::of(b"x");
        let idx = format!(
            r#"{{"mediaType":"{OCI_INDEX}","manifests":[
              {{"digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
              {{"digest":"{d}","size":2,"platform":{{"os":"linux","architecture":"arm64"}}}},
              {{"digest":"{d}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let Parsed::Index { manifests, .. } = parse(idx.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(select(&manifests, &plat("linux/amd64")).unwrap().size, 3);
        assert_eq!(select(&manifests, &plat("linux/arm64/v8")).unwrap().size, 2);
        assert_eq!(select(&manifests, &plat("linux/arm/v7")).unwrap().size, 1);
        let e = select(&manifests, &plat("linux/s390x")).unwrap_err();
        assert_eq!(e.to_string(), "linux/arm/v7, linux/arm64, linux/amd64");
        assert_eq!(
            select(&[], &plat("linux/amd64")).unwrap_err().to_string(),
            "no platforms listed"
        );
    }
}
