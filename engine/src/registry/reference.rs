//! Image references as Docker writes them: `debian:12`, `ghcr.io/ns/name:tag`,
//! `localhost:5000/name@sha256:…`, `name:tag@sha256:…`.
//!
//! The rules are Docker's (distribution's reference grammar), not ours: the first path
//! component is a registry host only when it contains a `.` or a `:` or is `localhost`;
//! otherwise the registry is `docker.io`, where a single-component name means `library/NAME`.
//! Repository paths are lower case; a tag is at most 128 characters of `[A-Za-z0-9_.-]` and
//! does not start with `.` or `-`.

use std::fmt;

use strata_cache::Digest;

/// The registry that unqualified names refer to.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/debian`, `ns/name`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{input}`: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
    pub hint: Option<&'static str>,
}

impl Reference {
    /// Parses `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: String, hint: Option<&'static str>| ReferenceError {
            input: input.to_string(),
            reason,
            hint,
        };
        if input.is_empty() {
            return Err(err("empty".into(), None));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest: Digest = d.parse().map_err(|e: strata_cache::DigestParseError| {
                    err(
                        format!("digest `{d}`: {}", e.reason),
                        Some("a digest is `sha256:` followed by 64 lower-case hex characters"),
                    )
                })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A `:` after the last `/` separates the tag (a `:` before it is a port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(c) => (&rest[..last_slash + c], Some(&rest[last_slash + c + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(|r| {
                err(
                    r.to_string(),
                    Some("a tag is up to 128 of A-Z a-z 0-9 _ . - and does not start with . or -"),
                )
            })?;
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        check_host(&registry).map_err(|r| err(r.to_string(), None))?;
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err(
                format!("repository name `{path}` must be lower case"),
                Some("registries only accept lower-case repository names (the tag may be mixed case)"),
            ));
        }
        for component in path.split('/') {
            check_component(component).map_err(|r| {
                err(
                    r.to_string(),
                    Some("path components are lower-case letters and digits, separated by `.`, `_`, `__` or `-`"),
                )
            })?;
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(err("name longer than 255 characters".into(), None));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The tag, or `latest` when neither a tag nor a digest was given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// What a manifest request names: the digest when there is one (it wins over the tag, as
    /// in Docker), else the tag (default `latest`).
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, self.tag_or_latest()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => unreachable!("a reference has a tag or a digest"),
        }
    }

    /// The host the registry API answers on (`docker.io` → `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

/// The host the registry API answers on for a registry name.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_API
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Why one part of a reference (tag, registry host, path component) is refused: the
/// `reason` of a [`ReferenceError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PartError {
    #[error("empty tag")]
    EmptyTag,
    #[error("tag `{0}` is longer than 128 characters")]
    LongTag(String),
    #[error("invalid tag `{0}`")]
    Tag(String),
    #[error("registry `{0}`: unclosed `[`")]
    UnclosedBracket(String),
    #[error("registry `{host}`: invalid port `{port}`")]
    Port { host: String, port: String },
    #[error("invalid registry host `{0}`")]
    Host(String),
    #[error("empty repository path component (`//` or a trailing `/`)")]
    EmptyComponent,
    #[error("invalid repository path component `{0}`")]
    Component(String),
}

fn check_tag(t: &str) -> Result<(), PartError> {
    if t.is_empty() {
        return Err(PartError::EmptyTag);
    }
    if t.len() > 128 {
        return Err(PartError::LongTag(t.to_string()));
    }
    let ok = t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok || t.starts_with('.') || t.starts_with('-') {
        return Err(PartError::Tag(t.to_string()));
    }
    Ok(())
}

fn check_host(h: &str) -> Result<(), PartError> {
    // `[v6]:port`, `host:port`, `host`.
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => (v6, tail.strip_prefix(':')),
            None => return Err(PartError::UnclosedBracket(h.to_string())),
        }
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(PartError::Port {
                host: h.to_string(),
                port: p.to_string(),
            });
        }
    }
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    if !ok {
        return Err(PartError::Host(h.to_string()));
    }
    Ok(())
}

fn check_component(c: &str) -> Result<(), PartError> {
    let bad = || Err(PartError::Component(c.to_string()));
    if c.is_empty() {
        return Err(PartError::EmptyComponent);
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return bad();
    }
    // Separators: `.`, `_`, `__`, or one or more `-`, each between alphanumerics.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_names_get_library() {
        let r = p("debian:12");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/debian");
        assert_eq!(r.tag.as_deref(), Some("12"));
        assert_eq!(r.to_string(), "docker.io/library/debian:12");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("debian").manifest_ref(), "latest");
        assert_eq!(p("bitnami/redis").repository, "bitnami/redis");
        assert_eq!(p("docker.io/debian").repository, "library/debian");
    }

    #[test]
    fn hosts_ports_and_tags() {
        let r = p("localhost:5000/ns/app:v1.2");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "ns/app", Some("v1.2"))
        );
        let r = p("127.0.0.1:5000/app");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.tag, None);
        let r = p("localhost/app");
        assert_eq!(r.registry, "localhost");
        let r = p("ghcr.io/o/r");
        assert_eq!(r.registry, "ghcr.io");
        let r = p("[::1]:5000/app:x");
        assert_eq!(r.registry, "[::1]:5000");
        // Not a host: no `.`, no `:`, not localhost.
        assert_eq!(p("myorg/app").registry, "docker.io");
        assert_eq!(p("a:Mixed_Case-1").tag.as_deref(), Some("Mixed_Case-1"));
    }

    #[test]
    fn digests_win_over_tags() {
        let d = Digest::of(b"m");
        let r = p(&format!("debian@{d}"));
        assert_eq!(r.digest, Some(d));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), d.to_string());
        let r = p(&format!("localhost:5000/a/b:1@{d}"));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.manifest_ref(), d.to_string());
        assert_eq!(r.to_string(), format!("localhost:5000/a/b:1@{d}"));
    }

    #[test]
    fn errors_say_what_and_hint() {
        let e = Reference::parse("Debian:12").unwrap_err();
        assert!(e.reason.contains("lower case"), "{e}");
        assert!(e.hint.is_some());
        let e = Reference::parse("debian@sha256:abc").unwrap_err();
        assert!(e.reason.contains("64"), "{e}");
        assert!(Reference::parse("debian@md5:abc").is_err());
        assert!(Reference::parse("debian:").is_err());
        assert!(Reference::parse("debian:-x").is_err());
        assert!(Reference::parse("a//b").is_err());
        assert!(Reference::parse("a/b/").is_err());
        assert!(Reference::parse("a..b").is_err());
        assert!(Reference::parse("-a").is_err());
        assert!(Reference::parse("a___b").is_err());
        assert!(Reference::parse("host:99999/a").is_err());
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse(&format!("a:{}", "x".repeat(129))).is_err());
        assert!(Reference::parse("a__b.c-d---e").is_ok());
    }
}
