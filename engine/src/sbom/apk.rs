//! apk's database, `/lib/apk/db/installed`: one paragraph per installed package, one field
//! per line as `X:value` (`P` name, `V` version, `A` architecture, `L` license; the other
//! letters list files and checksums, and are skipped).

use serde::{Deserialize, Serialize};

use super::{dpkg::paragraphs, purl, OsRelease};

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// As the package states it (Alpine uses SPDX expressions, mostly).
    pub license: Option<String>,
}

/// The packages of an `installed` file (those with a name and a version).
pub fn parse_installed(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let (mut name, mut version, mut arch, mut license) = (None, None, None, None);
        for line in p.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = Some(value.trim()).filter(|v| !v.is_empty());
            match key {
                "P" => name = value,
                "V" => version = value,
                "A" => arch = value,
                "L" => license = value,
                _ => {}
            }
        }
        if let (Some(name), Some(version)) = (name, version) {
            out.push(Record {
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.map(str::to_string),
                license: license.map(str::to_string),
            });
        }
    }
    out
}

/// `pkg:apk/<os ID, else alpine>/NAME@VERSION?arch=ARCH&distro=ID-VERSION_ID`.
pub fn purl(r: &Record, os: &OsRelease) -> String {
    let ns = os.id.as_deref().unwrap_or("alpine");
    purl::purl(
        "apk",
        ns,
        &r.name,
        &r.version,
        &[
            ("arch", r.arch.as_deref().unwrap_or("")),
            ("distro", &purl::distro(os)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_installed_packages() {
        let db = "\
C:Q1abcdefabcdefabcdefabcdefabcdef=
P:musl
V:1.2.5-r0
A:x86_64
S:407697
L:MIT
o:musl
F:lib
R:ld-musl-x86_64.so.1
Z:Q1fedcba=

C:Q1other=
P:busybox
V:1.36.1-r29
A:x86_64
L:GPL-2.0-only
F:bin
R:busybox

P:broken-no-version
A:x86_64
";
        let r = parse_installed(db);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            Record {
                name: "musl".into(),
                version: "1.2.5-r0".into(),
                arch: Some("x86_64".into()),
                license: Some("MIT".into()),
            }
        );
        let os = OsRelease {
            id: Some("alpine".into()),
            version_id: Some("3.20.3".into()),
        };
        assert_eq!(
            purl(&r[1], &os),
            "pkg:apk/alpine/busybox@1.36.1-r29?arch=x86_64&distro=alpine-3.20.3"
        );
    }
}
