//! Package URLs (purl-spec): `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`, each part
//! percent-encoded, qualifiers sorted by key.

/// `s` with every byte outside purl's unreserved set (`A-Z a-z 0-9 . - _ ~`) percent-encoded:
/// a version's epoch colon and `+` are `%3A` and `%2B`, a scope's `@` is `%40`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The purl of type `ty` (`namespace` may be empty; empty qualifier values are left out).
pub fn purl(
    ty: &str,
    namespace: &str,
    name: &str,
    version: &str,
    qualifiers: &[(&str, &str)],
) -> String {
    let mut s = format!("pkg:{ty}/");
    if !namespace.is_empty() {
        s.push_str(&encode(namespace));
        s.push('/');
    }
    s.push_str(&encode(name));
    if !version.is_empty() {
        s.push('@');
        s.push_str(&encode(version));
    }
    let mut q: Vec<&(&str, &str)> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort();
    for (i, (k, v)) in q.into_iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&encode(v));
    }
    s
}

/// `ID-VERSION_ID` of the distribution, for the `distro` qualifier (empty when unknown).
pub fn distro(os: &super::OsRelease) -> String {
    match (&os.id, &os.version_id) {
        (Some(id), Some(v)) => format!("{id}-{v}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_purl_spec_says() {
        assert_eq!(
            purl(
                "deb",
                "debian",
                "libc6",
                "1:2.36-9+deb12u7",
                &[("distro", "debian-12"), ("arch", "amd64")]
            ),
            "pkg:deb/debian/libc6@1%3A2.36-9%2Bdeb12u7?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            purl("npm", "@types", "node", "20.1.0", &[]),
            "pkg:npm/%40types/node@20.1.0"
        );
        assert_eq!(
            purl("pypi", "", "requests", "2.31.0", &[("x", "")]),
            "pkg:pypi/requests@2.31.0"
        );
    }
}
