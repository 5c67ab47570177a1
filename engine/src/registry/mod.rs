//! Registries: pulling base images and pushing results over the OCI distribution API.
//!
//! - [`reference`]: `debian:12` → `docker.io/library/debian:12`, Docker's rules and errors.
//! - [`auth`]: credentials (docker `config.json`, podman `auth.json`, credential helpers) and
//!   `WWW-Authenticate` challenges.
//! - [`client`]: the synchronous HTTP client (ureq + rustls): auth, retries with backoff,
//!   plain HTTP only for loopback and `--insecure-registry` hosts.
//! - [`manifest`]: OCI / Docker schema 2 manifests and indexes, platform selection, size limits.
//! - [`pull`]: resolve a reference to a [`pull::PulledImage`] image; stream verified blobs into
//!   the store.
//! - [`images`]: [`RegistryImages`], the planner's image resolver that pulls (wrapping
//!   [`crate::image::LocalImages`]), and its layer fetcher.
//! - [`registries_conf`]: `registries.conf` as podman reads it: mirrors, other locations,
//!   plain-HTTP and blocked registries.
//! - [`push`]: push an image from the store (skip, mount, monolithic or chunked upload).
//! - [`cache`]: `--cache-to` / `--cache-from registry:REF` (the artifact of [`crate::remote_cache`]).
//!
//! Trust: a registry is untrusted. Nothing it sends is stored before its sha256 matches the
//! digest it was asked for (or, for a manifest fetched by tag, the digest it announced);
//! manifests and configs are size-limited before they are read; layers are streamed, never held
//! in memory, and are checked for size as they arrive.

pub mod auth;
pub mod cache;
pub mod client;
pub mod error;
pub mod images;
pub mod manifest;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registries_conf;

pub use auth::AuthSources;
pub use client::{Client, ClientOptions, RetryPolicy};
pub use error::RegistryError;
pub use images::{RegistryFetcher, RegistryImages};
pub use push::PushReport;
pub use reference::Reference;
pub use registries_conf::RegistriesConf;
