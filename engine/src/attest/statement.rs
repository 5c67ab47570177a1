//! The in-toto Statement v1 (https://github.com/in-toto/attestation, `spec/v1/statement.md`)
//! that wraps every predicate strata attaches: one subject, the image manifest, by digest.

use serde_json::{json, Value};
use strata_cache::Digest;

use crate::image::canonical_json;

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// The subject's name. The statement names the image manifest by digest only: a tag is a
/// mutable pointer, not part of what was built, so the same image gets the same attestation
/// bytes whatever `-t` names it (BuildKit writes `_` too when it has no name to give).
pub const SUBJECT_NAME: &str = "_";

/// A predicate to attach to an image: its type URI and body. Producers (provenance, the SBOM)
/// build these; [`super::attach`] wraps each in a [`statement`] and stores it as one layer of
/// the attestation manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub predicate_type: String,
    pub predicate: Value,
}

/// The Statement for `s` about the image manifest `subject`, as canonical JSON (keys sorted,
/// compact): equal inputs give equal bytes, so the attestation's digest reproduces.
pub fn statement(subject: &Digest, s: &Statement) -> Vec<u8> {
    canonical_json(&json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": SUBJECT_NAME,
            "digest": { "sha256": subject.hex() },
        }],
        "predicateType": s.predicate_type,
        "predicate": s.predicate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_is_canonical_and_names_the_manifest() {
        let d = Digest::of(b"manifest");
        let s = Statement {
            predicate_type: "https://example.com/p/v1".into(),
            predicate: json!({"z": 1, "a": {"y": [2, 1], "b": null}}),
        };
        let bytes = statement(&d, &s);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","predicate":{{"a":{{"b":null,"y":[2,1]}},"z":1}},"predicateType":"https://example.com/p/v1","subject":[{{"digest":{{"sha256":"{}"}},"name":"_"}}]}}"#,
                d.hex()
            )
        );
        assert_eq!(statement(&d, &s), bytes, "deterministic");
    }
}
