//! The SBOM attestation (`strata build --sbom`): the packages of the built image
//! ([`crate::sbom`]) as an SPDX 2.3 (default) or CycloneDX 1.5 document, in an in-toto
//! statement with the predicate type BuildKit uses for each, so tools that read BuildKit's SBOM
//! attestations read strata's.
//!
//! Deterministic like the rest of the index: the document is made from the image's layers
//! (each scanned once per diff_id and cached), its creation time is `SOURCE_DATE_EPOCH`, and
//! its subject is named `image` with the manifest digest, never a tag (the same image built with
//! another `-t` has the same attestation).

use crate::image::AssembledImage;
use crate::sbom::{self, SbomError, Subject};

use super::Statement;

/// SPDX documents' in-toto predicate type (BuildKit's).
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";
/// CycloneDX documents' in-toto predicate type.
pub const PREDICATE_CYCLONEDX: &str = "https://cyclonedx.org/bom";

/// The document format of `--sbom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON (BuildKit's format; the default).
    Spdx,
    /// CycloneDX 1.5 JSON.
    CycloneDx,
}

impl SbomFormat {
    /// Parses a `--sbom` value: `true`/`1`/`format=spdx` → SPDX, `format=cyclonedx` →
    /// CycloneDX, `false`/`0` → none. An empty value (bare `--sbom`) is SPDX.
    pub fn parse_flag(v: &str) -> Result<Option<SbomFormat>, String> {
        let mut f = Some(SbomFormat::Spdx);
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "true" | "1" => {}
                "false" | "0" => f = None,
                "format=spdx" => f = Some(SbomFormat::Spdx),
                "format=cyclonedx" => f = Some(SbomFormat::CycloneDx),
                other => {
                    return Err(format!(
                        "unknown --sbom value `{other}` (expected format=spdx, format=cyclonedx, true or false)"
                    ))
                }
            }
        }
        Ok(f)
    }
}

/// The SBOM statement of `img` (whose layers are in `store`), created at `epoch`.
pub fn sbom_statement(
    store: &strata_cache::Store,
    img: &AssembledImage,
    format: SbomFormat,
    epoch: u64,
) -> Result<Statement, SbomError> {
    let packages = sbom::scan_image(store, &img.layers)?;
    let subject = Subject {
        name: "image".to_string(),
        digest: img.manifest_digest,
    };
    let (predicate_type, doc) = match format {
        SbomFormat::Spdx => (PREDICATE_SPDX, sbom::spdx_json(&subject, &packages, epoch)),
        SbomFormat::CycloneDx => (
            PREDICATE_CYCLONEDX,
            sbom::cyclonedx_json(&subject, &packages, epoch),
        ),
    };
    let predicate = serde_json::from_slice(&doc).map_err(|e| SbomError::Document(e.to_string()))?;
    Ok(Statement {
        predicate_type: predicate_type.to_string(),
        predicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_values() {
        assert_eq!(SbomFormat::parse_flag(""), Ok(Some(SbomFormat::Spdx)));
        assert_eq!(SbomFormat::parse_flag("true"), Ok(Some(SbomFormat::Spdx)));
        assert_eq!(
            SbomFormat::parse_flag("format=cyclonedx"),
            Ok(Some(SbomFormat::CycloneDx))
        );
        assert_eq!(SbomFormat::parse_flag("false"), Ok(None));
        let e = SbomFormat::parse_flag("format=swid").unwrap_err();
        assert!(
            e.contains("format=swid") && e.contains("format=cyclonedx"),
            "{e}"
        );
    }
}
