//! strata's build engine.
//!
//! The pipeline runs in one direction; each arrow is a module:
//!
//! ```text
//! Dockerfile ─frontend─▶ ast ─plan─▶ Plan (stages, steps, cache keys)
//!            ─solve─▶ step results (COPY/ADD → layer::write_layer → store)
//!            ─image─▶ config + manifest (canonical JSON) ─export─▶ OCI dir / archives
//! ```
//!
//! - [`frontend`]: Dockerfile parsing, word expansion, diagnostics.
//! - [`context`]: the build context — `.dockerignore`, globbing, safe source resolution.
//! - [`layer`]: the canonical layer form — tar writing, chunked parallel compression, archive reading.
//! - [`plan`]: stages and steps, ARG/ENV scoping, cache keys.
//! - [`solve`]: the solver — the scheduler and step execution against the content store.
//! - [`oci`]: OCI media types and image-layout names, defined once.
//! - [`image`]: OCI config and manifest assembly, canonical JSON.
//! - [`export`]: OCI layout, OCI archive and docker-archive outputs.
//! - [`attest`]: in-toto attestations (SLSA provenance) in an attestation manifest beside the image.
//! - [`fetch`]: remote `ADD` sources — HTTP(S) downloads and git checkouts.
//! - [`sandbox`]: running RUN steps; [`sandbox::capture`] turns an overlay upper dir into layer entries.
//! - [`sbom`]: the packages an image holds (dpkg, apk, Python, npm metadata), as SPDX 2.3 or
//!   CycloneDX 1.5 JSON.
//! - [`sign`]: cosign-compatible image signatures (simple signing, ECDSA P-256, `.sig` tags).
//! - [`diff`]: comparing two images (manifest, config, layers file by file).
//! - [`session`]: the orchestration of a command over one store and one registry
//!   configuration — `build`, `lock`, `rebase` take a request and return a report.

pub mod attest;
pub mod context;
pub mod diff;
pub mod export;
pub mod fetch;
pub mod frontend;
pub mod image;
pub mod layer;
#[cfg(feature = "store")]
mod layer_sidecar;
pub mod lock;
pub mod oci;
pub mod plan;
#[cfg(feature = "store")]
pub mod readset;
pub mod registry;
pub mod remote_cache;
pub mod sandbox;
#[cfg(feature = "store")]
pub mod sbom;
#[cfg(feature = "store")]
pub mod session;
pub mod sign;
#[cfg(feature = "store")]
pub mod solve;
