//! Outputs: an OCI image layout directory, an OCI archive, a docker-archive.
//!
//! Everything written is deterministic: `index.json` is canonical JSON, archives have sorted
//! entries, fixed modes, root ownership and mtime = SOURCE_DATE_EPOCH, so exporting the same
//! image twice gives the same bytes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use strata_cache::{BlobStore, Digest};

use crate::image::{canonical_json, AssembledImage, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("`{}` is not an OCI image layout: {reason}", path.display())]
    NotLayout { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] strata_cache::StoreError),
    #[error("invalid image name `{0}`: expected NAME[:TAG] in lower case")]
    BadName(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A parsed `-t NAME[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub name: String,
    pub tag: String,
}

impl ImageName {
    pub fn parse(s: &str) -> Result<ImageName, ExportError> {
        let last_slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, "latest"),
        };
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
            && !name.starts_with(['.', '-', '/'])
            && !name.ends_with('/');
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !name_ok || !tag_ok || s.contains('@') {
            return Err(ExportError::BadName(s.to_string()));
        }
        Ok(ImageName {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    pub fn full(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

/// The blobs of an image, in the order they appear in an archive.
fn image_blobs(img: &AssembledImage) -> Vec<Digest> {
    let mut v: Vec<Digest> = img.layers.iter().map(|l| l.digest).collect();
    v.push(img.config_digest);
    v.push(img.manifest_digest);
    v.sort();
    v.dedup();
    v
}

fn manifest_descriptor(img: &AssembledImage, name: Option<&ImageName>) -> Value {
    let mut d = json!({
        "mediaType": MEDIA_TYPE_MANIFEST,
        "digest": img.manifest_digest.to_string(),
        "size": img.manifest.len(),
    });
    if let Some(n) = name {
        d["annotations"] = json!({
            "io.containerd.image.name": n.full(),
            "org.opencontainers.image.ref.name": n.tag,
        });
    }
    d
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes (or adds to) an OCI image layout at `dest`. Blobs are hard-linked from the store
/// when it is on the same filesystem, else copied.
pub fn write_oci_dir(
    blobs: &BlobStore,
    img: &AssembledImage,
    names: &[ImageName],
    dest: &Path,
) -> Result<(), ExportError> {
    let blob_dir = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(io_err(&blob_dir))?;
    let layout_file = dest.join("oci-layout");
    fs::write(&layout_file, OCI_LAYOUT).map_err(io_err(&layout_file))?;
    for d in image_blobs(img) {
        let to = blob_dir.join(d.hex());
        if to.exists() {
            continue;
        }
        let from = blobs.path(&d);
        if fs::hard_link(&from, &to).is_err() {
            let tmp = blob_dir.join(format!(".tmp-{}", d.hex()));
            fs::copy(&from, &tmp).map_err(io_err(&from))?;
            fs::rename(&tmp, &to).map_err(io_err(&to))?;
        }
    }
    let index_path = dest.join("index.json");
    let mut manifests: Vec<Value> = match fs::read(&index_path) {
        Ok(b) => {
            let v: Value = serde_json::from_slice(&b).map_err(|e| ExportError::NotLayout {
                path: dest.to_path_buf(),
                reason: format!("index.json: {e}"),
            })?;
            v.get("manifests")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(ExportError::Io {
                path: index_path,
                source: e,
            })
        }
    };
    let ref_of = |v: &Value| {
        v.pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let digest = img.manifest_digest.to_string();
    if names.is_empty() {
        if !manifests.iter().any(|m| {
            m.get("digest").and_then(Value::as_str) == Some(&digest) && ref_of(m).is_none()
        }) {
            manifests.push(manifest_descriptor(img, None));
        }
    } else {
        for n in names {
            manifests.retain(|m| ref_of(m).as_deref() != Some(n.tag.as_str()));
            manifests.push(manifest_descriptor(img, Some(n)));
        }
    }
    let index =
        json!({ "schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests });
    let tmp = dest.join(".index.json.tmp");
    fs::write(&tmp, canonical_json(&index)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &index_path).map_err(io_err(&index_path))?;
    Ok(())
}

/// The shape of an archive output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// An OCI image layout in a tar.
    Oci,
    /// `docker load`-able: an OCI layout plus Docker's `manifest.json` (both shapes in one tar).
    Docker,
}

fn header(path: &str, size: u64, dir: bool, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).expect("short ascii path");
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    h
}

/// Writes an OCI archive or docker-archive to `dest` (atomically: temp file + rename).
pub fn write_archive(
    blobs: &BlobStore,
    img: &AssembledImage,
    names: &[ImageName],
    kind: ArchiveKind,
    dest: &Path,
    mtime: u64,
) -> Result<(), ExportError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(".strata-export-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    {
        let mut b = tar::Builder::new(io::BufWriter::new(tmp.as_file()));
        let add_bytes = |b: &mut tar::Builder<_>, path: &str, data: &[u8]| -> io::Result<()> {
            let h = header(path, data.len() as u64, false, mtime);
            b.append(&h, data)
        };
        let e = io_err(dest);
        (|| -> io::Result<()> {
            b.append(&header("blobs/", 0, true, mtime), io::empty())?;
            b.append(&header("blobs/sha256/", 0, true, mtime), io::empty())?;
            for d in image_blobs(img) {
                let p = blobs.path(&d);
                let f = fs::File::open(&p)?;
                let size = f.metadata()?.len();
                b.append(&header(&format!("blobs/sha256/{}", d.hex()), size, false, mtime), f)?;
            }
            let manifests: Vec<Value> = if names.is_empty() {
                vec![manifest_descriptor(img, None)]
            } else {
                names.iter().map(|n| manifest_descriptor(img, Some(n))).collect()
            };
            let index = json!({ "schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests });
            add_bytes(&mut b, "index.json", &canonical_json(&index))?;
            if kind == ArchiveKind::Docker {
                let m = json!([{
                    "Config": format!("blobs/sha256/{}", img.config_digest.hex()),
                    "RepoTags": names.iter().map(|n| n.full()).collect::<Vec<_>>(),
                    "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
                }]);
                add_bytes(&mut b, "manifest.json", &canonical_json(&m))?;
            }
            add_bytes(&mut b, "oci-layout", OCI_LAYOUT)?;
            b.finish()?;
            b.into_inner()?.flush()?;
            Ok(())
        })()
        .map_err(e)?;
    }
    tmp.as_file().sync_all().map_err(io_err(dest))?;
    tmp.persist(dest).map_err(|e| ExportError::Io {
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_names() {
        assert_eq!(ImageName::parse("app").unwrap().full(), "app:latest");
        assert_eq!(
            ImageName::parse("reg:5000/ns/app:1.2").unwrap(),
            ImageName {
                name: "reg:5000/ns/app".into(),
                tag: "1.2".into()
            }
        );
        assert!(ImageName::parse("App").is_err());
        assert!(ImageName::parse("app:").is_err());
        assert!(ImageName::parse("app@sha256:00").is_err());
        assert!(ImageName::parse("").is_err());
    }
}
