//! The SLSA Verification Summary Attestation v1 (https://slsa.dev/verification_summary/v1)
//! that `strata verify --attest-verification` attaches: "this image was built N times from
//! nothing under these variations and came out bit-identical".
//!
//! Deterministic like the other statements: `timeVerified` is `SOURCE_DATE_EPOCH` when the
//! build was given one and left out otherwise (it is optional; the wall clock would make every
//! verification a new attestation); no path, host or run time. What was verified (the number of
//! runs, the digest, the variations) is in `policy.annotations`: the VSA has no field for it,
//! and `policy` is a ResourceDescriptor, whose `annotations` are free-form.

use serde_json::{json, Value};
use strata_cache::Digest;

use super::Statement;

pub const PREDICATE_TYPE: &str = "https://slsa.dev/verification_summary/v1";
/// `verifier.id`.
pub const VERIFIER_ID: &str = "https://strata.dev/verify";
/// `policy.uri`: every run from nothing gives the same digest.
pub const POLICY_URI: &str = "https://strata.dev/verify/reproducible/v1";
/// The level `verifiedLevels` names (a custom one: the VSA reserves `SLSA_` names for SLSA's
/// own levels, and reproducibility is not one of them).
pub const LEVEL: &str = "STRATA_REPRODUCIBLE";

/// What `strata verify` established.
#[derive(Debug, Clone)]
pub struct Verification<'a> {
    /// What was verified: a reference with its digest when the image has a name, else the digest.
    pub resource_uri: String,
    /// The digest every run produced (the image manifest, or the index with attestations).
    pub digest: &'a Digest,
    pub runs: u32,
    /// The conditions varied between runs (short names: `cpu_count`, `umask`, …).
    pub variations: Vec<String>,
    /// The other statements attached beside this one (predicate type, statement blob digest).
    pub inputs: Vec<(String, Digest)>,
    /// `timeVerified`, when the build has a `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<u64>,
}

/// The VSA statement of `v`.
pub fn verification_summary(v: &Verification<'_>) -> Statement {
    let mut p = json!({
        "verifier": {
            "id": VERIFIER_ID,
            "version": { "strata": env!("CARGO_PKG_VERSION") },
        },
        "resourceUri": v.resource_uri,
        "policy": {
            "uri": POLICY_URI,
            "annotations": {
                "runs": v.runs,
                "digest": v.digest.to_string(),
                "variations": v.variations,
            },
        },
        "verificationResult": "PASSED",
        "verifiedLevels": [LEVEL],
    });
    if !v.inputs.is_empty() {
        p["inputAttestations"] = v
            .inputs
            .iter()
            .map(|(t, d)| json!({ "uri": t, "digest": { "sha256": d.hex() } }))
            .collect::<Value>();
    }
    if let Some(t) = v.source_date_epoch {
        p["timeVerified"] = json!(crate::image::rfc3339(t));
    }
    Statement {
        predicate_type: PREDICATE_TYPE.into(),
        predicate: p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_the_vsa_fields_and_no_time_without_an_epoch() {
        let d = Digest::of(b"i");
        let mut v = Verification {
            resource_uri: format!("reg.example/app@{d}"),
            digest: &d,
            runs: 3,
            variations: vec!["umask".into()],
            inputs: vec![("https://slsa.dev/provenance/v1".into(), Digest::of(b"p"))],
            source_date_epoch: None,
        };
        let s = verification_summary(&v);
        assert_eq!(s.predicate_type, PREDICATE_TYPE);
        assert_eq!(s.predicate["verificationResult"], "PASSED");
        assert_eq!(s.predicate["policy"]["annotations"]["runs"], 3);
        assert!(s.predicate.get("timeVerified").is_none());
        assert_eq!(
            s.predicate["inputAttestations"][0]["digest"]["sha256"],
            Digest::of(b"p").hex()
        );
        assert_eq!(verification_summary(&v), s);
        v.source_date_epoch = Some(0);
        assert_eq!(
            verification_summary(&v).predicate["timeVerified"],
            "1970-01-01T00:00:00Z"
        );
    }
}
