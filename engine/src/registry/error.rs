//! `RegistryError`: what failed, on which registry and repository, during which operation,
//! and (in the message, on its own `hint:` line) what to do about it.

use std::fmt;

use strata_cache::{Digest, StoreError};

use super::reference::ReferenceError;

/// Where a registry operation happened: for messages.
#[derive(Debug, Clone)]
pub struct Site {
    pub registry: String,
    pub repository: String,
    /// `pull manifest 12`, `push blob sha256:…`.
    pub op: String,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registry `{}`, repository `{}`: {}",
            self.registry, self.repository, self.op
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{err}{}", err.hint.map(|h| format!("\nhint: {h}")).unwrap_or_default())]
    Reference { err: ReferenceError },
    #[error("{site}: authentication required (HTTP 401){detail}\nhint: log in: credentials go in ~/.docker/config.json (or $DOCKER_CONFIG/config.json) or $REGISTRY_AUTH_FILE, as `docker login`/`podman login` write them")]
    Unauthorized { site: Site, detail: String },
    #[error("{site}: access denied (HTTP 403){detail}\nhint: the credentials in use are not allowed to do this; check the repository name and your permissions on it")]
    Denied { site: Site, detail: String },
    #[error("{site}: not found (HTTP 404){detail}\nhint: check the name and tag (`skopeo inspect docker://REF` lists what the registry has)")]
    NotFound { site: Site, detail: String },
    #[error("{site}: too many requests (HTTP 429), still refused after {attempts} attempts\nhint: the registry is rate-limiting; wait, or log in (authenticated pulls have higher limits)")]
    TooManyRequests { site: Site, attempts: u32 },
    #[error("{site}: HTTP {status}{detail}{}", if *.attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() })]
    Status {
        site: Site,
        status: u16,
        detail: String,
        attempts: u32,
    },
    #[error("{site}: {reason}{}\nhint: check the network and that `{}` is the right registry; plain-HTTP registries other than loopback need `--insecure-registry HOST[:PORT]`", if *.attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() }, site.registry)]
    Network {
        site: Site,
        reason: String,
        attempts: u32,
    },
    #[error("{site}: the content hashes to {found}, not to {expected}, the digest it was fetched by; nothing was stored\nhint: the registry (or something between it and you) served corrupt data")]
    DigestMismatch {
        site: Box<Site>,
        expected: Digest,
        found: Digest,
    },
    #[error("{site}: {what} is larger than {limit} bytes; refused")]
    TooLarge {
        site: Site,
        what: &'static str,
        limit: u64,
    },
    #[error("{site}: blob size {found} does not match the {expected} bytes its descriptor says; nothing was stored")]
    SizeMismatch {
        site: Site,
        expected: u64,
        found: u64,
    },
    #[error("{site}: {reason}")]
    BadResponse { site: Site, reason: String },
    #[error("image `{reference}` has no manifest for platform {platform} (it has: {available})\nhint: pick one of those with `--platform` or `FROM --platform=`")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("credentials for `{registry}`: {source}")]
    Credentials {
        registry: String,
        source: super::auth::AuthError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// Whether the registry said the thing does not exist (for callers that probe).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }
}

impl From<ReferenceError> for RegistryError {
    fn from(err: ReferenceError) -> Self {
        RegistryError::Reference { err }
    }
}
