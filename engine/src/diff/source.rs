//! Opening one side of a diff: an OCI layout directory, an OCI archive, or a docker-archive
//! (old shape: `manifest.json` + `<id>/layer.tar`; new shape: an OCI layout plus
//! `manifest.json`). Archives are unpacked sequentially into a temporary directory, so memory
//! stays bounded whatever the layer sizes.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_cache::Digest;

use super::DiffError;
use crate::oci;

/// How an image was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Oci,
    OciArchive,
    DockerArchive,
}

/// One layer of an opened image: where its bytes are and how to read them.
#[derive(Debug, Clone)]
pub struct LayerRef {
    /// The blob digest; `None` for an old-shape docker-archive, whose `layer.tar` files are not
    /// content-addressed blobs (their compression is not part of the image there).
    pub digest: Option<Digest>,
    pub media_type: String,
    pub size: u64,
    pub path: PathBuf,
}

/// An opened image: its JSON documents, parsed, and its layers on disk.
#[derive(Debug)]
pub struct ImageSource {
    pub spec: String,
    pub kind: SourceKind,
    /// `index.json`; `None` for an old-shape docker-archive.
    pub index: Option<Value>,
    /// The descriptor of the manifest, as the index lists it (innermost index if nested).
    pub descriptor: Option<Value>,
    /// The image manifest; `None` for an old-shape docker-archive.
    pub manifest: Option<Value>,
    pub manifest_digest: Option<Digest>,
    pub config: Value,
    pub config_digest: Digest,
    pub layers: Vec<LayerRef>,
    _tmp: Option<tempfile::TempDir>,
}

/// Opens `spec`: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:TAG]`, or a
/// bare path (a directory with `index.json` is an OCI layout; a file is an archive whose kind
/// is read from its contents).
pub fn load_image(spec: &str) -> Result<ImageSource, DiffError> {
    let (transport, rest) = match spec.split_once(':') {
        Some((t @ ("oci" | "oci-archive" | "docker-archive"), rest)) => (Some(t), rest),
        Some((
            t @ ("docker" | "docker-daemon" | "containers-storage" | "registry" | "store" | "dir"),
            _,
        )) => {
            return Err(DiffError::NotSupported {
                spec: spec.to_string(),
                what: format!("`{t}:`"),
            })
        }
        _ => (None, spec),
    };
    let (path, tag) = split_tag(rest);
    let path = PathBuf::from(path);
    let meta = std::fs::metadata(&path).map_err(|source| {
        if transport.is_none()
            && source.kind() == std::io::ErrorKind::NotFound
            && !rest.contains('/')
            && rest.contains(':')
        {
            // `name:tag` with no such file: most likely an image name.
            DiffError::NotSupported {
                spec: spec.to_string(),
                what: "store and registry".to_string(),
            }
        } else {
            DiffError::Io {
                path: path.clone(),
                source,
            }
        }
    })?;
    let kind = match transport {
        Some("oci") => SourceKind::Oci,
        Some("oci-archive") => SourceKind::OciArchive,
        Some(_) => SourceKind::DockerArchive,
        None if meta.is_dir() => SourceKind::Oci,
        None => SourceKind::OciArchive, // refined below from the contents
    };
    if meta.is_dir() {
        let mut img = open_dir(&path, tag, kind)?;
        img.spec = spec.to_string();
        return Ok(img);
    }
    if kind == SourceKind::Oci {
        return Err(DiffError::NotAnImage {
            path,
            reason: "`oci:` needs an OCI layout directory, this is a file".into(),
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix("strata-diff-")
        .tempdir()
        .map_err(|source| DiffError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    unpack(&path, tmp.path())?;
    let mut img = open_dir(tmp.path(), tag, kind).map_err(|e| match e {
        DiffError::NotAnImage { reason, .. } => DiffError::NotAnImage {
            path: path.clone(),
            reason,
        },
        e => e,
    })?;
    if transport.is_none() && img.index.is_none() {
        img.kind = SourceKind::DockerArchive;
    }
    img.spec = spec.to_string();
    img._tmp = Some(tmp);
    Ok(img)
}

/// `PATH:TAG` → (`PATH`, `Some(TAG)`) unless `PATH:TAG` itself exists or the tail has a `/`.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    if Path::new(s).exists() {
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((p, t)) if !t.is_empty() && !t.contains('/') && !p.is_empty() => (p, Some(t)),
        _ => (s, None),
    }
}

fn unpack(archive: &Path, dest: &Path) -> Result<(), DiffError> {
    let io = |source| DiffError::Io {
        path: archive.to_path_buf(),
        source,
    };
    let f = File::open(archive).map_err(io)?;
    let mut ar = tar::Archive::new(f);
    ar.set_preserve_permissions(false);
    ar.set_preserve_mtime(false);
    ar.set_unpack_xattrs(false);
    // `unpack` refuses entries that would land outside `dest`.
    ar.unpack(dest).map_err(|e| DiffError::NotAnImage {
        path: archive.to_path_buf(),
        reason: format!("not a readable tar archive ({e})"),
    })
}

fn read_json(path: &Path) -> Result<Value, DiffError> {
    let bytes = std::fs::read(path).map_err(|source| DiffError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| DiffError::NotAnImage {
        path: path.to_path_buf(),
        reason: format!("invalid JSON: {e}"),
    })
}

fn parse_digest(root: &Path, v: &Value) -> Result<Digest, DiffError> {
    let s = v.as_str().unwrap_or_default();
    s.parse().map_err(|_| DiffError::NotAnImage {
        path: root.to_path_buf(),
        reason: format!("unsupported or invalid digest {v}"),
    })
}

/// Reads a JSON blob and checks its digest.
fn read_blob_json(root: &Path, d: &Digest) -> Result<Value, DiffError> {
    let path = oci::blob_path(root, d);
    let bytes = oci::read_blob(root, d, None, None).map_err(|e| match e {
        oci::BlobError::Io { path, source } => DiffError::Io { path, source },
        _ => DiffError::NotAnImage {
            path: path.clone(),
            reason: format!("blob does not match its digest {d}"),
        },
    })?;
    serde_json::from_slice(&bytes).map_err(|e| DiffError::NotAnImage {
        path,
        reason: format!("invalid JSON: {e}"),
    })
}

fn open_dir(root: &Path, tag: Option<&str>, kind: SourceKind) -> Result<ImageSource, DiffError> {
    if root.join(oci::INDEX_FILE).is_file() {
        open_oci(root, tag, kind)
    } else if root.join("manifest.json").is_file() {
        open_docker(root, tag)
    } else {
        Err(DiffError::NotAnImage {
            path: root.to_path_buf(),
            reason: "neither `index.json` (OCI layout) nor `manifest.json` (docker-archive) found"
                .into(),
        })
    }
}

fn open_oci(root: &Path, tag: Option<&str>, kind: SourceKind) -> Result<ImageSource, DiffError> {
    let index = read_json(&root.join(oci::INDEX_FILE))?;
    let descs: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
    let tags: Vec<&str> = descs.iter().filter_map(oci::ref_name).collect();
    let chosen = match tag {
        Some(t) => descs.iter().find(|d| {
            oci::ref_name(d) == Some(t)
                || d.pointer("/annotations/io.containerd.image.name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n == t || n.ends_with(&format!(":{t}")))
        }),
        None if descs.len() == 1 => descs.first(),
        None => descs.iter().find(|d| oci::ref_name(d) == Some("latest")),
    };
    let Some(desc) = chosen else {
        let available = if tags.is_empty() {
            "none tagged".to_string()
        } else {
            tags.join(", ")
        };
        return Err(no_image(root, tag, available));
    };
    let mut descriptor = desc.clone();
    let mut digest = parse_digest(root, &desc["digest"])?;
    let mut manifest = read_blob_json(root, &digest)?;
    // A nested index (docker save, multi-platform layouts): take the first image manifest that
    // is not an attestation.
    for _ in 0..4 {
        let mt = manifest["mediaType"].as_str().unwrap_or_default();
        if !oci::is_index_media_type(mt) && manifest.get("manifests").is_none() {
            break;
        }
        let inner = manifest["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|d| {
                    d.pointer("/annotations/vnd.docker.reference.type")
                        .is_none()
                })
            })
            .cloned()
            .ok_or_else(|| DiffError::NotAnImage {
                path: root.to_path_buf(),
                reason: format!("index {digest} lists no image manifest"),
            })?;
        digest = parse_digest(root, &inner["digest"])?;
        descriptor = inner;
        manifest = read_blob_json(root, &digest)?;
    }
    let config_digest = parse_digest(root, &manifest["config"]["digest"])?;
    let config = read_blob_json(root, &config_digest)?;
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().into_iter().flatten() {
        let d = parse_digest(root, &l["digest"])?;
        layers.push(LayerRef {
            path: oci::blob_path(root, &d),
            digest: Some(d),
            media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
            size: l["size"].as_u64().unwrap_or(0),
        });
    }
    Ok(ImageSource {
        spec: String::new(),
        kind,
        index: Some(index),
        descriptor: Some(descriptor),
        manifest: Some(manifest),
        manifest_digest: Some(digest),
        config,
        config_digest,
        layers,
        _tmp: None,
    })
}

/// Old-shape docker-archive: `manifest.json` = `[{Config, RepoTags, Layers}]`.
fn open_docker(root: &Path, tag: Option<&str>) -> Result<ImageSource, DiffError> {
    let m = read_json(&root.join("manifest.json"))?;
    let entries = m.as_array().cloned().unwrap_or_default();
    let repo_tags = |e: &Value| -> Vec<String> {
        e["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()
    };
    let chosen = match tag {
        Some(t) => entries.iter().find(|e| {
            repo_tags(e)
                .iter()
                .any(|rt| rt == t || rt.ends_with(&format!(":{t}")))
        }),
        None if entries.len() == 1 => entries.first(),
        None => None,
    };
    let Some(entry) = chosen else {
        let available = entries
            .iter()
            .flat_map(repo_tags)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(no_image(root, tag, available));
    };
    let rel = |v: &Value| -> Result<PathBuf, DiffError> {
        let s = v.as_str().unwrap_or_default();
        let p = Path::new(s);
        if s.is_empty() || p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
            return Err(DiffError::NotAnImage {
                path: root.join("manifest.json"),
                reason: format!("bad path {v} in manifest.json"),
            });
        }
        Ok(root.join(p))
    };
    let config_path = rel(&entry["Config"])?;
    let bytes = std::fs::read(&config_path).map_err(|source| DiffError::Io {
        path: config_path.clone(),
        source,
    })?;
    let config: Value = serde_json::from_slice(&bytes).map_err(|e| DiffError::NotAnImage {
        path: config_path.clone(),
        reason: format!("invalid JSON: {e}"),
    })?;
    let mut layers = Vec::new();
    for l in entry["Layers"].as_array().into_iter().flatten() {
        let path = rel(l)?;
        let mut head = [0u8; 4];
        let mut f = File::open(&path).map_err(|source| DiffError::Io {
            path: path.clone(),
            source,
        })?;
        let n = f.read(&mut head).unwrap_or(0);
        let media_type = if head[..n].starts_with(&[0x1f, 0x8b]) {
            oci::MEDIA_TYPE_TAR_GZIP
        } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            oci::MEDIA_TYPE_TAR_ZSTD
        } else {
            oci::MEDIA_TYPE_TAR
        };
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        layers.push(LayerRef {
            digest: None,
            media_type: media_type.to_string(),
            size,
            path,
        });
    }
    Ok(ImageSource {
        spec: String::new(),
        kind: SourceKind::DockerArchive,
        index: None,
        descriptor: None,
        manifest: None,
        manifest_digest: None,
        config,
        config_digest: Digest::of(&bytes),
        layers,
        _tmp: None,
    })
}

/// No image in the layout at `root` answers `tag` (or, without a tag, several do).
fn no_image(root: &Path, tag: Option<&str>, available: String) -> DiffError {
    match tag {
        Some(t) => DiffError::NoSuchTag {
            path: root.to_path_buf(),
            tag: t.to_string(),
            available,
        },
        None => DiffError::Ambiguous {
            path: root.to_path_buf(),
            available,
        },
    }
}
