//! CycloneDX 1.5 JSON (cyclonedx.org/docs/1.5/json): `metadata.component` is the image (type
//! `container`), `components` its packages (type `library`) with their PURL, licenses and the
//! properties `strata:layer` and `strata:path`; the image depends on every package.
//!
//! Deterministic as the SPDX document is: keys sorted, packages in order, `bom-ref`s derived
//! from content, `metadata.timestamp` the given epoch, and `serialNumber` a UUID made of the
//! hash of the document written without it (version nibble 5, the variant bits of RFC 9562, as
//! the schema's pattern asks).

use serde_json::{json, Value};

use super::{license, spdx, Package, Subject, TOOL_VERSION};

/// The CycloneDX 1.5 JSON document of `packages` in the image `subject`, created at
/// `created_epoch` (`SOURCE_DATE_EPOCH`). Canonical JSON: same inputs, same bytes.
pub fn cyclonedx_json(subject: &Subject, packages: &[Package], created_epoch: u64) -> Vec<u8> {
    let mut components = Vec::with_capacity(packages.len());
    let mut refs = Vec::with_capacity(packages.len());
    for p in packages {
        let bom_ref = spdx::package_id(p)
            .trim_start_matches("SPDXRef-")
            .to_string();
        let mut c = json!({
            "type": "library",
            "bom-ref": bom_ref,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "properties": [
                {"name": "strata:layer", "value": p.layer.to_string()},
                {"name": "strata:path", "value": p.path},
            ],
        });
        if let Some(l) = &p.license {
            c["licenses"] = match license::spdx_expression(l) {
                Some(e) => json!([{ "expression": e }]),
                None => json!([{ "license": { "name": l } }]),
            };
        }
        refs.push(Value::String(bom_ref));
        components.push(c);
    }
    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": crate::image::rfc3339(created_epoch),
            "tools": {
                "components": [
                    {"type": "application", "name": "strata", "version": TOOL_VERSION},
                ],
            },
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": subject.name,
                "version": subject.digest.to_string(),
                "purl": spdx::image_purl(subject),
            },
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": refs}],
    });
    let unnumbered = crate::image::canonical_json(&doc);
    let h = blake3::hash(&unnumbered).to_hex();
    let h = h.as_str();
    let variant = ["8", "9", "a", "b"][usize::from(h.as_bytes()[16] % 4)];
    doc["serialNumber"] = Value::String(format!(
        "urn:uuid:{}-{}-5{}-{variant}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    ));
    crate::image::canonical_json(&doc)
}
