//! npm packages: `node_modules/NAME/package.json` and `node_modules/@SCOPE/NAME/package.json`,
//! at any depth (nested `node_modules` of a dependency included). Other `package.json` files
//! inside a package (`node_modules/x/lib/package.json`) describe no installed package.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::purl;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `@scope/name` or `name`.
    pub name: String,
    pub version: String,
    /// `license` (a string, or the `type` of the old object form), else the old `licenses`
    /// list joined with ` OR `.
    pub license: Option<String>,
}

/// Whether `rel` (a layer path) is the manifest of an installed package.
pub fn is_manifest(rel: &str) -> bool {
    let Some(dir) = rel.strip_suffix("/package.json") else {
        return false;
    };
    let parts: Vec<&str> = dir.split('/').collect();
    match parts.as_slice() {
        [.., nm, name] if *nm == "node_modules" => !name.starts_with(['@', '.']),
        [.., nm, scope, name] if *nm == "node_modules" => {
            scope.len() > 1 && scope.starts_with('@') && !name.starts_with(['@', '.'])
        }
        _ => false,
    }
}

/// The package a `package.json` describes, if it is JSON with a name and a version.
pub fn parse_manifest(bytes: &[u8]) -> Option<Record> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let s = |v: &Value| {
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let name = s(v.get("name")?)?;
    let version = s(v.get("version")?)?;
    let license = match v.get("license") {
        Some(Value::Object(o)) => o.get("type").and_then(s),
        Some(l) => s(l),
        None => None,
    }
    .or_else(|| {
        let list: Vec<String> = v
            .get("licenses")?
            .as_array()?
            .iter()
            .filter_map(|l| s(l).or_else(|| l.get("type").and_then(s)))
            .collect();
        (!list.is_empty()).then(|| list.join(" OR "))
    });
    Some(Record {
        name,
        version,
        license,
    })
}

/// `pkg:npm/NAME@VERSION`, or `pkg:npm/%40SCOPE/NAME@VERSION` for a scoped package.
pub fn purl(r: &Record) -> String {
    let (scope, name) = match r.name.split_once('/') {
        Some((scope, name)) if scope.starts_with('@') => (scope, name),
        _ => ("", r.name.as_str()),
    };
    purl::purl("npm", scope, name, &r.version, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_of_installed_packages_only() {
        for yes in [
            "usr/lib/node_modules/npm/package.json",
            "app/node_modules/a/node_modules/b/package.json",
            "app/node_modules/@types/node/package.json",
            "node_modules/x/package.json",
        ] {
            assert!(is_manifest(yes), "{yes}");
        }
        for no in [
            "app/package.json",
            "app/node_modules/a/lib/package.json",
            "app/node_modules/@types/package.json",
            "app/node_modules/.bin/package.json",
            "app/node_modules/@/x/package.json",
        ] {
            assert!(!is_manifest(no), "{no}");
        }
    }

    #[test]
    fn reads_name_version_and_license_forms() {
        let r = parse_manifest(br#"{"name":"@babel/core","version":"7.26.0","license":"MIT"}"#)
            .unwrap();
        assert_eq!(purl(&r), "pkg:npm/%40babel/core@7.26.0");
        assert_eq!(r.license.as_deref(), Some("MIT"));
        let old = parse_manifest(
            br#"{"name":"x","version":"1.0.0","licenses":[{"type":"MIT"},{"type":"Apache-2.0"}]}"#,
        )
        .unwrap();
        assert_eq!(old.license.as_deref(), Some("MIT OR Apache-2.0"));
        let obj =
            parse_manifest(br#"{"name":"y","version":"2.0.0","license":{"type":"ISC","url":"u"}}"#)
                .unwrap();
        assert_eq!(obj.license.as_deref(), Some("ISC"));
        assert_eq!(purl(&obj), "pkg:npm/y@2.0.0");
        assert!(parse_manifest(br#"{"name":"z"}"#).is_none());
        assert!(parse_manifest(b"not json").is_none());
    }
}
