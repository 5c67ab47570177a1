//! SPDX 2.3 JSON (spdx.github.io/spdx-spec/v2.3): the document describes one package for the
//! image (`primaryPackagePurpose: CONTAINER`), which CONTAINS one package per [`Package`].
//!
//! Deterministic: keys sorted (`image::canonical_json`), packages in [`scan_image`] order,
//! SPDX ids derived from each package's PURL, metadata path and layer, `created` the given
//! epoch, and `documentNamespace` `https://strata.dev/spdx/<name>-<manifest digest hex>-<hash>`
//! where the hash is of the document itself written with an empty namespace.
//!
//! [`scan_image`]: super::scan_image

use serde::{Deserialize, Serialize};

use super::{license, short_hash, Package, Subject, TOOL_VERSION};

/// The document, field for field as written (and as the tests read it back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: String,
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<SpdxPackage>,
    pub relationships: Vec<Relationship>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreationInfo {
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub version_info: String,
    pub download_location: String,
    pub files_analyzed: bool,
    pub license_concluded: String,
    pub license_declared: String,
    pub copyright_text: String,
    pub external_refs: Vec<ExternalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: String,
    pub reference_type: String,
    pub reference_locator: String,
}

/// Where a package was found: `strata:layer=<diff_id>` and `strata:path=<metadata file>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Annotation {
    pub annotator: String,
    pub annotation_date: String,
    pub annotation_type: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

/// A license statement that is no SPDX expression, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtractedLicense {
    pub license_id: String,
    pub extracted_text: String,
    pub name: String,
}

const NOASSERTION: &str = "NOASSERTION";
const IMAGE_ID: &str = "SPDXRef-Image";

/// `[A-Za-z0-9.-]` of `s` (others `-`), at most `max` characters: SPDX ids and the namespace.
pub(crate) fn id_part(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(max);
    out
}

/// The SPDX id of `p`: readable, unique by a hash of what distinguishes two packages.
pub(crate) fn package_id(p: &Package) -> String {
    format!(
        "SPDXRef-Package-{}-{}-{}",
        p.ecosystem,
        id_part(&p.name, 64),
        short_hash(&[&p.purl, &p.path, &p.layer.to_string()], 16)
    )
}

/// `pkg:oci/NAME@DIGEST?repository_url=REPO` of the image (purl-spec's oci type: the name is
/// the repository's last component, without tag).
pub(crate) fn image_purl(subject: &Subject) -> String {
    let repo = subject.name.split('@').next().unwrap_or("");
    let last_slash = repo.rfind('/').map_or(0, |i| i + 1);
    let repo = match repo[last_slash..].rfind(':') {
        Some(i) => &repo[..last_slash + i],
        None => repo,
    };
    let name = repo[last_slash.min(repo.len())..].to_ascii_lowercase();
    let name = if name.is_empty() {
        "image".to_string()
    } else {
        name
    };
    super::purl::purl(
        "oci",
        "",
        &name,
        &subject.digest.to_string(),
        &[("repository_url", repo)],
    )
}

/// The SPDX 2.3 JSON document of `packages` in the image `subject`, created at `created_epoch`
/// (seconds since the epoch: `SOURCE_DATE_EPOCH`). Canonical JSON: same inputs, same bytes.
pub fn spdx_json(subject: &Subject, packages: &[Package], created_epoch: u64) -> Vec<u8> {
    let mut doc = document(subject, packages, created_epoch);
    let unnamed = crate::image::canonical_json(&serde_json::to_value(&doc).expect("serialises"));
    doc.document_namespace = format!(
        "https://strata.dev/spdx/{}-{}-{}",
        id_part(&subject.name, 64),
        subject.digest.hex(),
        short_hash(&[&String::from_utf8_lossy(&unnamed)], 16)
    );
    crate::image::canonical_json(&serde_json::to_value(&doc).expect("serialises"))
}

/// The document with an empty namespace ([`spdx_json`] derives it).
fn document(subject: &Subject, packages: &[Package], created_epoch: u64) -> Document {
    let created = crate::image::rfc3339(created_epoch);
    let tool = format!("Tool: strata-{TOOL_VERSION}");
    let purl_ref = |locator: String| ExternalRef {
        reference_category: "PACKAGE-MANAGER".into(),
        reference_type: "purl".into(),
        reference_locator: locator,
    };
    let mut extracted: Vec<ExtractedLicense> = Vec::new();
    let mut out = vec![SpdxPackage {
        spdx_id: IMAGE_ID.into(),
        name: subject.name.clone(),
        version_info: subject.digest.to_string(),
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        license_concluded: NOASSERTION.into(),
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION.into(),
        external_refs: vec![purl_ref(image_purl(subject))],
        primary_package_purpose: Some("CONTAINER".into()),
        annotations: Vec::new(),
    }];
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES".into(),
        related_spdx_element: IMAGE_ID.into(),
    }];
    for p in packages {
        let declared = match &p.license {
            None => NOASSERTION.to_string(),
            Some(l) => {
                let (expression, refs) = license::spdx_declared(l);
                for (id, text) in refs {
                    extracted.push(ExtractedLicense {
                        license_id: id,
                        extracted_text: text.clone(),
                        name: text,
                    });
                }
                expression
            }
        };
        let note = |comment: String| Annotation {
            annotator: tool.clone(),
            annotation_date: created.clone(),
            annotation_type: "OTHER".into(),
            comment,
        };
        let id = package_id(p);
        out.push(SpdxPackage {
            spdx_id: id.clone(),
            name: p.name.clone(),
            version_info: p.version.clone(),
            download_location: NOASSERTION.into(),
            files_analyzed: false,
            license_concluded: NOASSERTION.into(),
            license_declared: declared,
            copyright_text: NOASSERTION.into(),
            external_refs: vec![purl_ref(p.purl.clone())],
            primary_package_purpose: None,
            annotations: vec![
                note(format!("strata:layer={}", p.layer)),
                note(format!("strata:path={}", p.path)),
            ],
        });
        relationships.push(Relationship {
            spdx_element_id: IMAGE_ID.into(),
            relationship_type: "CONTAINS".into(),
            related_spdx_element: id,
        });
    }
    extracted.sort_by(|a, b| a.license_id.cmp(&b.license_id));
    extracted.dedup();
    Document {
        spdx_version: "SPDX-2.3".into(),
        data_license: "CC0-1.0".into(),
        spdx_id: "SPDXRef-DOCUMENT".into(),
        name: subject.name.clone(),
        document_namespace: String::new(),
        creation_info: CreationInfo {
            created,
            creators: vec![tool],
        },
        packages: out,
        relationships,
        has_extracted_licensing_infos: extracted,
    }
}
