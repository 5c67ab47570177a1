//! Python distributions installed as wheels are: `NAME-VERSION.dist-info/METADATA`, email
//! headers (core metadata) followed by the description. Only the headers are read.

use serde::{Deserialize, Serialize};

use super::purl;

/// One installed distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// As `Name:` spells it.
    pub name: String,
    pub version: String,
    /// `License-Expression:` (PEP 639), else a one-line `License:` other than `UNKNOWN` (some
    /// packages put the whole license text there; that is not a license name).
    pub license: Option<String>,
}

/// The distribution a METADATA file describes, if it has a name and a version.
pub fn parse_metadata(text: &str) -> Option<Record> {
    let (mut name, mut version, mut expression, mut license) = (None, None, None, None);
    let mut license_continued = false;
    let mut last = "";
    for line in text.lines() {
        if line.trim().is_empty() {
            break; // the body (description) starts here
        }
        if line.starts_with([' ', '\t']) {
            if last == "license" {
                license_continued = true;
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            last = "";
            continue;
        };
        let value = value.trim();
        last = "";
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(value),
            "version" => version = Some(value),
            "license-expression" => expression = Some(value),
            "license" => {
                license = Some(value);
                last = "license";
            }
            _ => {}
        }
    }
    let license = expression.filter(|e| !e.is_empty()).or(license.filter(|l| {
        !license_continued && !l.is_empty() && l.len() <= 200 && !l.eq_ignore_ascii_case("UNKNOWN")
    }));
    match (name, version) {
        (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => Some(Record {
            name: n.to_string(),
            version: v.to_string(),
            license: license.map(str::to_string),
        }),
        _ => None,
    }
}

/// PEP 503's normalised name: lower case, each run of `-`, `_`, `.` one `-`.
pub fn normalise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// `pkg:pypi/NORMALISED-NAME@VERSION`.
pub fn purl(r: &Record) -> String {
    purl::purl("pypi", "", &normalise(&r.name), &r.version, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_core_metadata_headers() {
        let m = "\
Metadata-Version: 2.1
Name: Typing_Extensions
Version: 4.12.2
Summary: Backported type hints
License: PSF-2.0
Classifier: License :: OSI Approved :: Python Software Foundation License
Requires-Python: >=3.8

Name: not-a-header
License: in the description
";
        let r = parse_metadata(m).unwrap();
        assert_eq!(
            (r.name.as_str(), r.version.as_str(), r.license.as_deref()),
            ("Typing_Extensions", "4.12.2", Some("PSF-2.0"))
        );
        assert_eq!(purl(&r), "pkg:pypi/typing-extensions@4.12.2");
        assert_eq!(normalise("zope.interface"), "zope-interface");
        assert_eq!(normalise("A__b-.C"), "a-b-c");

        let long = "Name: x\nVersion: 1\nLicense: Copyright (c) 2000\n        Permission is hereby granted\nLicense-Expression: MIT OR Apache-2.0\n";
        assert_eq!(
            parse_metadata(long).unwrap().license.as_deref(),
            Some("MIT OR Apache-2.0")
        );
        let unknown = "Name: x\nVersion: 1\nLicense: UNKNOWN\n";
        assert_eq!(parse_metadata(unknown).unwrap().license, None);
        let text_only =
            "Name: x\nVersion: 1\nLicense: Copyright (c) 2000\n  Permission is granted\n";
        assert_eq!(parse_metadata(text_only).unwrap().license, None);
        assert!(parse_metadata("Name: x\n").is_none());
    }
}
