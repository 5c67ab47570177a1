//! dpkg's database: `/var/lib/dpkg/status` (every package dpkg knows, with its state) and the
//! files of `/var/lib/dpkg/status.d/` (one per package, as distroless images have them, often
//! without a `Status` field), and the machine-readable (DEP-5) `/usr/share/doc/NAME/copyright`
//! files a package's license is read from.

use serde::{Deserialize, Serialize};

use super::{purl, OsRelease};

/// An installed package, as its stanza in the status file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub package: String,
    /// With the epoch when there is one (`1:2.3-4`), as dpkg-query shows it.
    pub version: String,
    pub architecture: Option<String>,
}

/// The fields of a deb822 paragraph: name and the value's first line (trimmed). Continuation
/// lines (starting with a space or tab) belong to the field before them and are skipped:
/// nothing read here spans lines.
pub(crate) fn fields(paragraph: &str) -> impl Iterator<Item = (&str, &str)> {
    paragraph.lines().filter_map(|line| {
        if line.starts_with([' ', '\t']) || line.starts_with('#') {
            return None;
        }
        let (name, value) = line.split_once(':')?;
        Some((name.trim(), value.trim()))
    })
}

/// The paragraphs of a deb822 file (separated by lines that are empty or only whitespace).
pub(crate) fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The installed packages of a status file. `Status: WANT FLAG STATE` counts when STATE is
/// `installed` (dpkg's "install ok installed", or held); a package removed but not purged
/// (`config-files`), half-installed or only unpacked does not. Without a `Status` field a
/// stanza counts only when `status_optional` (the `status.d/` files).
pub fn parse_status(text: &str, status_optional: bool) -> Vec<Record> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let (mut package, mut version, mut arch, mut status) = (None, None, None, None);
        for (name, value) in fields(&p) {
            match name.to_ascii_lowercase().as_str() {
                "package" => package = Some(value),
                "version" => version = Some(value),
                "architecture" => arch = Some(value),
                "status" => status = Some(value),
                _ => {}
            }
        }
        let installed = match status {
            Some(s) => s.split_whitespace().nth(2) == Some("installed"),
            None => status_optional,
        };
        if let (true, Some(package), Some(version)) = (installed, package, version) {
            if !package.is_empty() && !version.is_empty() {
                out.push(Record {
                    package: package.to_string(),
                    version: version.to_string(),
                    architecture: arch.filter(|a| !a.is_empty()).map(str::to_string),
                });
            }
        }
    }
    out
}

/// The license of a machine-readable copyright file (DEP-5: a header paragraph with a
/// `Format:` field naming the copyright format): its distinct `License:` short names, sorted,
/// joined with ` AND ` (each file of the package is under one of them; a name that is itself
/// a choice, `GPL-2+ or Artistic`, is parenthesised). `None` for a free-form file.
pub fn copyright_license(text: &str) -> Option<String> {
    let paras = paragraphs(text);
    let header = paras.first()?;
    let machine_readable = fields(header).any(|(n, v)| {
        n.eq_ignore_ascii_case("format") && (v.contains("copyright-format") || v.contains("dep5"))
    });
    if !machine_readable {
        return None;
    }
    let mut names: Vec<String> = paras
        .iter()
        .flat_map(|p| fields(p))
        .filter(|(n, v)| n.eq_ignore_ascii_case("license") && !v.is_empty())
        .map(|(_, v)| v.to_string())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return None;
    }
    if names.len() == 1 {
        return names.pop();
    }
    let parts: Vec<String> = names
        .into_iter()
        .map(|n| {
            let compound = n
                .split_whitespace()
                .any(|w| ["or", "and"].iter().any(|op| w.eq_ignore_ascii_case(op)));
            if compound {
                format!("({n})")
            } else {
                n
            }
        })
        .collect();
    Some(parts.join(" AND "))
}

/// `pkg:deb/<os ID, else debian>/NAME@VERSION?arch=ARCH&distro=ID-VERSION_ID`.
pub fn purl(r: &Record, os: &OsRelease) -> String {
    let ns = os.id.as_deref().unwrap_or("debian");
    purl::purl(
        "deb",
        ns,
        &r.package,
        &r.version,
        &[
            ("arch", r.architecture.as_deref().unwrap_or("")),
            ("distro", &purl::distro(os)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 12.4+deb12u7
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy.
 .
 Package: not-a-field

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: tzdata
Status: hold ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: libfoo
Status: install ok half-installed
Version: 2

Package: perl-base
Status: install ok installed
Architecture: amd64
Version: 1:5.36.0-7+deb12u1
";

    #[test]
    fn status_lists_installed_packages_with_epochs() {
        let r = parse_status(STATUS, false);
        let got: Vec<(&str, &str, Option<&str>)> = r
            .iter()
            .map(|r| {
                (
                    r.package.as_str(),
                    r.version.as_str(),
                    r.architecture.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("base-files", "12.4+deb12u7", Some("amd64")),
                ("tzdata", "2024a-0+deb12u1", Some("all")),
                ("perl-base", "1:5.36.0-7+deb12u1", Some("amd64")),
            ]
        );
        // status.d stanzas have no Status field; the status file's always do.
        let bare = "Package: libssl3\nVersion: 3.0.15-1~deb12u1\nArchitecture: arm64\n";
        assert!(parse_status(bare, false).is_empty());
        assert_eq!(parse_status(bare, true)[0].package, "libssl3");
    }

    #[test]
    fn copyright_license_only_from_machine_readable_files() {
        let dep5 = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: foo

Files: *
Copyright: 2000 Someone
License: GPL-2+

Files: lib/*
License: GPL-2+ or Artistic
 Long text that mentions License: MIT on a continuation line.

License: GPL-2+
 The text of the license.
";
        assert_eq!(
            copyright_license(dep5).as_deref(),
            Some("GPL-2+ AND (GPL-2+ or Artistic)")
        );
        let single = "Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0\n\nFiles: *\nLicense: Expat\n";
        assert_eq!(copyright_license(single).as_deref(), Some("Expat"));
        assert_eq!(
            copyright_license("This is foo, written by me.\n\nLicense: GPL\n"),
            None
        );
    }

    #[test]
    fn purl_names_the_distribution() {
        let r = Record {
            package: "perl-base".into(),
            version: "1:5.36.0-7+deb12u1".into(),
            architecture: Some("amd64".into()),
        };
        let os = OsRelease {
            id: Some("debian".into()),
            version_id: Some("12".into()),
        };
        assert_eq!(
            purl(&r, &os),
            "pkg:deb/debian/perl-base@1%3A5.36.0-7%2Bdeb12u1?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            purl(&r, &OsRelease::default()),
            "pkg:deb/debian/perl-base@1%3A5.36.0-7%2Bdeb12u1?arch=amd64"
        );
    }
}
