//! Software bills of materials (issue 22): the packages an image holds, read from the package
//! managers' own metadata in its layers, as deterministic SPDX 2.3 or CycloneDX 1.5 JSON.
//!
//! The API is four functions:
//!
//! - [`scan_layer`]: one layer's package metadata ([`LayerPackages`]), read by streaming the
//!   stored layer blob once (only metadata files are read into memory, each bounded), and cached
//!   in the store by diff_id (`<store>/sbom-index-v1/`, see [`cache`]).
//! - [`scan_image`]: the image's [`Package`]s: the layers' metadata files merged as overlayfs
//!   shows them (a later layer's file replaces an earlier one's at the same path; a whiteout,
//!   an opaque directory or a non-directory removes what is below), then read as packages.
//!   For a built image: `scan_image(&store, &assembled.layers)` (`image::AssembledImage`).
//! - [`spdx_json`] and [`cyclonedx_json`]: the documents, for a [`Subject`] (the image's name
//!   and manifest digest) and a creation time (`SOURCE_DATE_EPOCH`). Same inputs, same bytes.
//!
//! What is scanned (docs/sbom.md): dpkg ([`dpkg`]: `/var/lib/dpkg/status`, and
//! `/var/lib/dpkg/status.d/*` as distroless images have, licenses from DEP-5
//! `/usr/share/doc/NAME/copyright`), apk ([`apk`]: `/lib/apk/db/installed`), Python
//! ([`python`]: `*.dist-info/METADATA`), npm ([`npm`]: `node_modules/**/package.json`), and
//! `/etc/os-release` (or `/usr/lib/os-release`) for the distribution in deb and apk PURLs.
//! Files a package manager did not record (a binary copied in, a static Go program) are not in
//! the SBOM.

pub mod apk;
pub mod cache;
pub mod cyclonedx;
pub mod dpkg;
mod license;
pub mod npm;
mod purl;
pub mod python;
mod scan;
pub mod spdx;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use strata_cache::Digest;

use crate::image::LayerDesc;

pub use cyclonedx::cyclonedx_json;
pub use spdx::spdx_json;

/// The version of strata that writes the documents (`Tool: strata-<version>`).
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One package of an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Package URL (purl-spec), e.g. `pkg:deb/debian/libc6@2.36-9%2Bdeb12u7?arch=amd64`.
    pub purl: String,
    /// The license as the metadata states it (dpkg: the DEP-5 `License:` names joined with
    /// `AND`); not necessarily an SPDX expression (the documents convert it).
    pub license: Option<String>,
    /// The diff_id of the layer that last wrote the package's metadata file.
    pub layer: Digest,
    /// The metadata file, absolute (`/var/lib/dpkg/status`).
    pub path: String,
}

/// The package manager a [`Package`] was recorded by. The order is the documents' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Ecosystem {
    Deb,
    Apk,
    Python,
    Npm,
}

impl Ecosystem {
    /// The PURL type (`deb`, `apk`, `pypi`, `npm`).
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Python => "pypi",
            Ecosystem::Npm => "npm",
        }
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.purl_type())
    }
}

/// What an SBOM describes: the image's name as the user gave it and its manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub digest: Digest,
}

/// What one layer says about package metadata: the metadata files it writes and what it removes
/// from the layers below. This is what [`cache`] stores per diff_id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPackages {
    pub diff_id: Digest,
    /// The metadata files the layer writes, by relative path (no leading `/`), sorted.
    pub files: Vec<(String, MetaFile)>,
    /// Paths the layer's whiteouts remove (with everything below them), sorted.
    pub removed: Vec<String>,
    /// Directories the layer makes opaque (everything the layers below had in them is hidden),
    /// sorted; the root is "".
    pub opaque: Vec<String>,
    /// The [`path_key`] of every path where the layer has something other than a directory,
    /// sorted: what the layers below had under such a path is hidden (a directory of packages
    /// replaced by a symlink). Keys, not paths: a layer has many files, and this is all that is
    /// kept of most of them.
    pub replaced: Vec<u64>,
}

/// A metadata file, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaFile {
    /// `var/lib/dpkg/status` or a file of `var/lib/dpkg/status.d/`: the installed packages.
    Dpkg(Vec<dpkg::Record>),
    /// `lib/apk/db/installed`.
    Apk(Vec<apk::Record>),
    /// A `*.dist-info/METADATA`.
    Python(python::Record),
    /// A `node_modules/[@scope/]name/package.json`.
    Npm(npm::Record),
    /// `etc/os-release` or `usr/lib/os-release`.
    OsRelease(OsRelease),
    /// `usr/share/doc/NAME/copyright`: its license if it is machine-readable (DEP-5).
    Copyright(Option<String>),
    /// Something at a metadata path that names no package (not a regular file, a file without
    /// name or version, an unreadable one): it hides what the layers below had there.
    Other,
}

/// The distribution, from os-release(5).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OsRelease {
    /// `ID` (`debian`, `alpine`, `ubuntu`).
    pub id: Option<String>,
    /// `VERSION_ID` (`12`, `3.20.3`).
    pub version_id: Option<String>,
}

/// Why an image or layer could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("store: {0}")]
    Store(#[from] strata_cache::StoreError),
    #[error("layer {digest}: {source}")]
    Layer {
        digest: Digest,
        source: crate::layer::LayerError,
    },
    #[error("layer {digest}: {source}")]
    Read {
        digest: Digest,
        source: crate::layer::ReadError,
    },
    #[error("layer {digest}: its content has diff_id {found}, not {expected}")]
    DiffId {
        digest: Digest,
        expected: Digest,
        found: Digest,
    },
    /// A package database larger than strata reads into memory.
    #[error("layer {digest}: `/{path}` is larger than {limit} bytes, the most an SBOM scan reads of a package database")]
    TooLarge {
        digest: Digest,
        path: String,
        limit: u64,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("writing the SBOM document: {0}")]
    Document(String),
    #[error("encoding the SBOM index of layer {digest}: {source}")]
    Encode {
        digest: Digest,
        source: bincode::Error,
    },
}

/// One layer's package metadata, from the store's cache when it holds a sound entry for its
/// diff_id, else read from the layer blob (checked against the diff_id) and cached.
pub fn scan_layer(
    store: &strata_cache::Store,
    layer: &LayerDesc,
) -> Result<LayerPackages, SbomError> {
    let path = cache::index_path(store.root(), &layer.diff_id);
    if let Some(found) = cache::read(&path, &layer.diff_id) {
        return Ok(found);
    }
    let scanned = scan::scan_blob(store.blobs(), layer)?;
    cache::write(store, &path, layer, &scanned)?;
    Ok(scanned)
}

/// The packages of the image whose layers are `layers` (bottom first), sorted by ecosystem,
/// name, version, then path.
pub fn scan_image(
    store: &strata_cache::Store,
    layers: &[LayerDesc],
) -> Result<Vec<Package>, SbomError> {
    let mut scanned = Vec::with_capacity(layers.len());
    for l in layers {
        scanned.push(scan_layer(store, l)?);
    }
    Ok(packages(&merge(&scanned)))
}

/// The key of a layer path in [`LayerPackages::replaced`]: the first 8 bytes of its BLAKE3
/// (stable: it is cached).
pub fn path_key(rel: &str) -> u64 {
    let h = blake3::hash(rel.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The metadata files of the merged root file system: path → (file, diff_id of its layer).
pub(crate) fn merge(layers: &[LayerPackages]) -> BTreeMap<String, (MetaFile, Digest)> {
    /// A file and the [`path_key`]s of its proper ancestors (the root excluded: it is always a
    /// directory).
    struct Merged {
        file: MetaFile,
        layer: Digest,
        ancestors: Vec<u64>,
    }
    let mut fs: BTreeMap<String, Merged> = BTreeMap::new();
    let remove_below = |fs: &mut BTreeMap<String, Merged>, dir: &str| {
        if dir.is_empty() {
            fs.clear();
            return;
        }
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = fs
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            fs.remove(&p);
        }
    };
    for l in layers {
        // A layer's whiteouts, opaque markers and non-directories apply to the layers below
        // it only.
        for p in &l.removed {
            fs.remove(p);
            remove_below(&mut fs, p);
        }
        for d in &l.opaque {
            remove_below(&mut fs, d);
        }
        if !l.replaced.is_empty() {
            fs.retain(|_, m| {
                !m.ancestors
                    .iter()
                    .any(|k| l.replaced.binary_search(k).is_ok())
            });
        }
        for (p, f) in &l.files {
            let ancestors = p
                .match_indices('/')
                .map(|(i, _)| path_key(&p[..i]))
                .collect();
            fs.insert(
                p.clone(),
                Merged {
                    file: f.clone(),
                    layer: l.diff_id,
                    ancestors,
                },
            );
        }
    }
    fs.into_iter()
        .map(|(p, m)| (p, (m.file, m.layer)))
        .collect()
}

/// The packages the merged metadata files name (module docs).
pub(crate) fn packages(fs: &BTreeMap<String, (MetaFile, Digest)>) -> Vec<Package> {
    // os-release(5): /etc/os-release, else /usr/lib/os-release (Debian's /etc one is a
    // symlink to the other, which a layer records as `Other`).
    let os = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| match fs.get(*p) {
            Some((MetaFile::OsRelease(os), _)) => Some(os.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let copyright = |name: &str| match fs.get(&format!("usr/share/doc/{name}/copyright")) {
        Some((MetaFile::Copyright(l), _)) => l.clone(),
        _ => None,
    };
    let mut out = Vec::new();
    for (path, (file, layer)) in fs {
        let mut push = |ecosystem, name: &str, version: &str, purl, license| {
            out.push(Package {
                ecosystem,
                name: name.to_string(),
                version: version.to_string(),
                purl,
                license,
                layer: *layer,
                path: format!("/{path}"),
            })
        };
        match file {
            MetaFile::Dpkg(records) => {
                for r in records {
                    push(
                        Ecosystem::Deb,
                        &r.package,
                        &r.version,
                        dpkg::purl(r, &os),
                        copyright(&r.package),
                    );
                }
            }
            MetaFile::Apk(records) => {
                for r in records {
                    push(
                        Ecosystem::Apk,
                        &r.name,
                        &r.version,
                        apk::purl(r, &os),
                        r.license.clone(),
                    );
                }
            }
            MetaFile::Python(r) => push(
                Ecosystem::Python,
                &r.name,
                &r.version,
                python::purl(r),
                r.license.clone(),
            ),
            MetaFile::Npm(r) => push(
                Ecosystem::Npm,
                &r.name,
                &r.version,
                npm::purl(r),
                r.license.clone(),
            ),
            MetaFile::OsRelease(_) | MetaFile::Copyright(_) | MetaFile::Other => {}
        }
    }
    out.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.path, &a.purl).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            &b.path,
            &b.purl,
        ))
    });
    // A stanza listed twice in one file would be one package twice (and one SPDX id twice).
    out.dedup();
    out
}

/// A short, stable hash of `parts` (hex), for identifiers derived from content.
pub(crate) fn short_hash(parts: &[&str], hex_len: usize) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        // Length-prefixed: ("ab", "c") and ("a", "bc") differ.
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let mut s = h.finalize().to_hex().to_string();
    s.truncate(hex_len);
    s
}

#[cfg(test)]
mod tests;
