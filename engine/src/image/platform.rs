//! Platforms (`linux/amd64`, `linux/arm64`, `linux/arm/v7`): parsed once, normalised as
//! containerd's `platforms.Normalize` does (what BuildKit puts in `TARGETPLATFORM`, the image
//! config and the index), so that one platform has one spelling everywhere it enters a key.
//!
//! - architecture aliases: `x86_64`/`x86-64` → `amd64`, `aarch64` → `arm64`, `i386`/`i686` →
//!   `386`, `armhf` → `arm/v7`, `armel` → `arm/v6`;
//! - `arm64/v8` is `arm64` (v8 is its only base variant: an index entry may or may not say it);
//! - `arm` without a variant is `arm/v7`; `amd64/v1` is `amd64`.
//!
//! Only `linux` and the architectures below are accepted: a typo (`linux/amd46`) is an error
//! naming the platform, not an image search that fails later for an unclear reason.

use std::fmt;

use super::ImageError;

/// What a bad platform's error suggests.
pub(crate) const HINT: &str = "write OS/ARCH[/VARIANT] with OS `linux` and ARCH one of amd64, arm64, arm (v5, v6, v7), 386, ppc64le, s390x, riscv64, mips64le, loong64, e.g. --platform linux/arm64";

/// Architectures strata knows (OCI / Go `GOARCH` names).
const ARCHES: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64",
];

/// A target platform (`linux/amd64`, `linux/arm/v7`), normalised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform strata runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "mips64" => "mips64le",
            "loongarch64" => "loong64",
            other => other,
        };
        normalise("linux", arch, None).unwrap_or(Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
        })
    }

    /// Parses `OS/ARCH[/VARIANT]`, normalised (see the module docs).
    pub fn parse(s: &str) -> Result<Platform, ImageError> {
        let bad = |reason: &str| ImageError::BadPlatform {
            platform: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(*v)),
            _ => return Err(bad("expected OS/ARCH[/VARIANT], e.g. linux/amd64")),
        };
        if os.is_empty() || arch.is_empty() || variant.is_some_and(str::is_empty) {
            return Err(bad("expected OS/ARCH[/VARIANT], e.g. linux/amd64"));
        }
        normalise(os, arch, variant).map_err(|r| bad(&r))
    }

    /// Whether an index entry's platform (as written there) is this one.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        normalise(os, architecture, variant).is_ok_and(|p| p == *self)
    }

    /// Whether an image config's `os` and `architecture` are this platform's (the variant
    /// aside: an arm/v6 image runs on arm/v7). A config without `architecture` says nothing.
    pub fn runs_config(&self, config: &serde_json::Value) -> bool {
        let Some(arch) = config["architecture"].as_str() else {
            return true;
        };
        let os = config["os"].as_str().unwrap_or("linux");
        normalise(os, arch, None)
            .is_ok_and(|p| p.os == self.os && p.architecture == self.architecture)
    }

    /// The name of the CPU as `uname -m` and QEMU call it (`aarch64` for `arm64`): the name of
    /// the binfmt_misc handler Debian's qemu-user-static registers (`qemu-aarch64`).
    pub fn machine(&self) -> &str {
        match self.architecture.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "386" => "i386",
            "mips64le" => "mips64el",
            "loong64" => "loongarch64",
            other => other,
        }
    }

    /// Whether this host's kernel runs the platform's binaries itself (no emulator): the host
    /// platform, and i386 on an x86_64 kernel.
    pub fn runs_natively(&self) -> bool {
        let host = Platform::host();
        self.os == host.os
            && (self.architecture == host.architecture
                || (self.architecture == "386" && host.architecture == "amd64"))
    }
}

fn normalise(os: &str, arch: &str, variant: Option<&str>) -> Result<Platform, String> {
    let os = os.to_ascii_lowercase();
    if os != "linux" {
        return Err(format!("OS `{os}`: strata builds linux images only"));
    }
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(str::to_ascii_lowercase);
    let (arch, variant) = match (arch.as_str(), variant.as_deref()) {
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.filter(|v| *v != "v1")),
        ("aarch64" | "arm64", Some("v8" | "8" | "v8.0") | None) => ("arm64", None),
        ("aarch64" | "arm64", v) => ("arm64", v),
        ("armhf", None) => ("arm", Some("v7")),
        ("armel", None) => ("arm", Some("v6")),
        ("arm", None) => ("arm", Some("v7")),
        ("arm", Some(v @ ("5" | "6" | "7" | "8"))) => {
            return Ok(Platform {
                os,
                architecture: "arm".into(),
                variant: Some(format!("v{v}")),
            })
        }
        ("arm", Some(v @ ("v5" | "v6" | "v7" | "v8"))) => ("arm", Some(v)),
        ("arm", Some(v)) => return Err(format!("`arm/{v}`: arm variants are v5 to v8")),
        ("i386" | "i686" | "386", v) => ("386", v),
        (a, v) if ARCHES.contains(&a) => (a, v),
        (a, _) => return Err(format!("unknown architecture `{a}`")),
    };
    Ok(Platform {
        os,
        architecture: arch.to_string(),
        variant: variant.map(str::to_string),
    })
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Platform::parse(s).unwrap().to_string()
    }

    #[test]
    fn platforms_are_normalised_as_containerd_does() {
        assert_eq!(norm("linux/arm64/v8"), "linux/arm64");
        assert_eq!(norm("linux/aarch64"), "linux/arm64");
        assert_eq!(norm("linux/arm"), "linux/arm/v7");
        assert_eq!(norm("linux/armhf"), "linux/arm/v7");
        assert_eq!(norm("linux/arm/6"), "linux/arm/v6");
        assert_eq!(norm("linux/x86_64"), "linux/amd64");
        assert_eq!(norm("Linux/AMD64"), "linux/amd64");
        assert_eq!(norm("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(norm("linux/i386"), "linux/386");
    }

    #[test]
    fn unknown_platforms_are_refused_naming_what_is_wrong() {
        for (s, why) in [
            ("linux", "expected OS/ARCH"),
            ("linux//", "expected OS/ARCH"),
            ("linux/amd46", "unknown architecture `amd46`"),
            ("windows/amd64", "linux images only"),
            ("linux/arm/v9", "arm variants"),
        ] {
            let e = Platform::parse(s).unwrap_err();
            assert!(e.to_string().contains(s), "{e}");
            assert!(e.to_string().contains(why), "{e}");
            assert!(e.hint().unwrap().contains("linux/arm64"));
        }
    }

    #[test]
    fn index_entries_match_with_the_variant_rules() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(arm64.matches("linux", "arm64", Some("v8")));
        assert!(arm64.matches("linux", "arm64", None));
        assert!(!arm64.matches("linux", "arm", Some("v7")));
        let arm = Platform::parse("linux/arm").unwrap();
        assert!(arm.matches("linux", "arm", None));
        assert!(arm.matches("linux", "arm", Some("v7")));
        assert!(!arm.matches("linux", "arm", Some("v6")));
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert!(amd64.matches("linux", "amd64", None));
        assert!(!amd64.matches("linux", "amd64", Some("v3")));
        assert!(!amd64.matches("linux", "weird", None));
    }

    #[test]
    fn a_config_of_another_architecture_is_not_this_platforms() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let c = |a: &str| serde_json::json!({"architecture": a, "os": "linux", "variant": "v8"});
        assert!(arm64.runs_config(&c("arm64")));
        assert!(!arm64.runs_config(&c("amd64")));
        assert!(arm64.runs_config(&serde_json::json!({})));
    }

    #[test]
    fn machines_are_qemu_names() {
        assert_eq!(Platform::parse("linux/arm64").unwrap().machine(), "aarch64");
        assert_eq!(Platform::parse("linux/arm/v7").unwrap().machine(), "arm");
        assert_eq!(Platform::parse("linux/amd64").unwrap().machine(), "x86_64");
    }
}
