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

use crate::attest::Attested;
use crate::image::index::AssembledIndex;
use crate::image::{canonical_json, AssembledImage};
use crate::oci::{
    self, BLOBS_SHA256, INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION_JSON as OCI_LAYOUT,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, REF_NAME_ANNOTATION,
};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("`{}` is not an OCI image layout: {reason}", path.display())]
    NotLayout { path: PathBuf, reason: String },
    /// An `--output type=oci` destination that holds something else: layout files would be
    /// mixed into it (issue 18: `dest=/` wrote `/blobs/` and `/oci-layout`).
    #[error(
        "`{}` is {what}, not an OCI image layout: refusing to write an image into it\n\
         hint: name a new or empty directory, or an existing OCI layout to add the image to",
        path.display()
    )]
    NotLayoutDir { path: PathBuf, what: &'static str },
    /// An archive destination that exists and is not an image archive.
    #[error(
        "`{}` exists and is {what}: refusing to overwrite it\n\
         hint: name a new file, or an image archive (OCI or docker) to replace",
        path.display()
    )]
    NotArchive { path: PathBuf, what: &'static str },
    #[error(transparent)]
    Store(#[from] strata_cache::StoreError),
    #[error("invalid image name `{0}`: expected NAME[:TAG] in lower case")]
    BadName(String),
    #[error("a docker-archive holds one image per name, and this build made an index over {0} platforms\nhint: use --output type=oci or type=oci-archive for a multi-platform image, or build one --platform")]
    DockerArchiveIndex(usize),
    /// `docker load` cannot take an image index (Docker's classic image store has none), so a
    /// docker-archive holds one image manifest and nothing else.
    #[error(
        "`{}`: a docker-archive cannot carry attestations\n\
         hint: write type=oci or type=oci-archive, or export the image without them",
        path.display()
    )]
    Attested { path: PathBuf },
}

/// What an output writes: one image, an image with its attestations (the index holding both,
/// `--provenance`/`--sbom`), or the index over the images of a multi-platform build.
#[derive(Debug, Clone, Copy)]
pub enum Root<'a> {
    Image(&'a AssembledImage),
    Attested(&'a AssembledImage, &'a Attested),
    Index(&'a AssembledIndex),
}

impl<'a> From<&'a AssembledImage> for Root<'a> {
    fn from(i: &'a AssembledImage) -> Self {
        Root::Image(i)
    }
}

impl<'a> From<&'a AssembledIndex> for Root<'a> {
    fn from(i: &'a AssembledIndex) -> Self {
        Root::Index(i)
    }
}

impl Root<'_> {
    /// The digest of the manifest or index.
    pub fn digest(&self) -> Digest {
        match self {
            Root::Image(i) => i.manifest_digest,
            Root::Attested(_, a) => a.index_digest,
            Root::Index(x) => x.digest,
        }
    }

    pub fn media_type(&self) -> &'static str {
        match self {
            Root::Image(_) => MEDIA_TYPE_MANIFEST,
            Root::Attested(..) | Root::Index(_) => MEDIA_TYPE_INDEX,
        }
    }

    fn size(&self) -> usize {
        match self {
            Root::Image(i) => i.manifest.len(),
            Root::Attested(_, a) => a.index.len(),
            Root::Index(x) => x.bytes.len(),
        }
    }

    /// Every blob it needs, sorted: layers, configs, manifests (and the index).
    fn blobs(&self) -> Vec<Digest> {
        let mut v = Vec::new();
        match self {
            Root::Image(i) => v.extend(image_blobs(i, None)),
            Root::Attested(i, a) => v.extend(image_blobs(i, Some(a))),
            Root::Index(x) => {
                v.push(x.digest);
                for (_, i) in &x.images {
                    v.extend(image_blobs(i, None));
                }
            }
        }
        v.sort();
        v.dedup();
        v
    }
}

/// An image as a tag names it, read back from the store: a plain image, an image with its
/// attestations (an index holding both: `--provenance`, `--sbom`), or a multi-platform index.
pub enum Stored {
    Image(AssembledImage),
    Attested(AssembledImage, Attested),
    Index(AssembledIndex),
}

impl Stored {
    /// Reads the manifest or index `digest` (of `media_type`, as the tag records it). An index
    /// whose entries include an attestation manifest is an attested image; any other index is a
    /// multi-platform build's.
    pub fn load(blobs: &BlobStore, digest: &Digest, media_type: &str) -> anyhow::Result<Stored> {
        if !crate::oci::is_index_media_type(media_type) {
            return Ok(Stored::Image(AssembledImage::from_store(blobs, digest)?));
        }
        let bytes = blobs.read_verified(digest)?;
        let v: Value = serde_json::from_slice(&bytes)?;
        let attested = v["manifests"].as_array().into_iter().flatten().any(|m| {
            m["annotations"][crate::attest::REFERENCE_TYPE_ANNOTATION]
                == crate::attest::ATTESTATION_MANIFEST
        });
        Ok(if attested {
            let (img, a) = Attested::from_store(blobs, digest)?;
            Stored::Attested(img, a)
        } else {
            Stored::Index(AssembledIndex::from_store(blobs, digest)?)
        })
    }

    /// What an output of it writes.
    pub fn root(&self) -> Root<'_> {
        match self {
            Stored::Image(i) => Root::Image(i),
            Stored::Attested(i, a) => Root::Attested(i, a),
            Stored::Index(x) => Root::Index(x),
        }
    }
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

/// The blobs of an image (and of its attestations and their index, if any), in the order
/// they appear in an archive.
fn image_blobs(img: &AssembledImage, attested: Option<&Attested>) -> Vec<Digest> {
    let mut v: Vec<Digest> = img.layers.iter().map(|l| l.digest).collect();
    v.push(img.config_digest);
    v.push(img.manifest_digest);
    if let Some(a) = attested {
        v.extend(a.blobs.iter().copied());
        v.push(a.index_digest);
    }
    v.sort();
    v.dedup();
    v
}

fn manifest_descriptor(root: Root<'_>, name: Option<&ImageName>) -> Value {
    let mut d = json!({
        "mediaType": root.media_type(),
        "digest": root.digest().to_string(),
        "size": root.size(),
    });
    if let Some(n) = name {
        d["annotations"] = json!({
            "io.containerd.image.name": n.full(),
            REF_NAME_ANNOTATION: n.tag,
        });
    }
    d
}

/// What an `--output type=oci` destination holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OciDest {
    /// Nothing yet, or an empty directory: the layout is written beside it and renamed in.
    New,
    /// An OCI image layout (an `oci-layout` file and a readable `index.json`, if any): the
    /// image is added to it.
    Layout,
}

/// Checks an `--output type=oci` destination before anything is built or written: a new
/// path, an empty directory or an OCI layout. Anything else is refused.
pub fn check_oci_dir(dest: &Path) -> Result<(), ExportError> {
    oci_dest(dest).map(|_| ())
}

fn oci_dest(dest: &Path) -> Result<OciDest, ExportError> {
    let refuse = |what| ExportError::NotLayoutDir {
        path: dest.to_path_buf(),
        what,
    };
    let meta = match fs::metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(OciDest::New),
        r => r.map_err(io_err(dest))?,
    };
    if !meta.is_dir() {
        return Err(refuse("not a directory"));
    }
    let mut entries = fs::read_dir(dest).map_err(io_err(dest))?;
    if entries.next().is_none() {
        return Ok(OciDest::New);
    }
    let layout: Value = match fs::read(dest.join(LAYOUT_FILE)) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|_| refuse("a directory whose `oci-layout` is not JSON"))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(refuse("a non-empty directory"))
        }
        Err(e) => return Err(io_err(dest)(e)),
    };
    if layout
        .get("imageLayoutVersion")
        .and_then(Value::as_str)
        .is_none()
    {
        return Err(refuse(
            "a directory whose `oci-layout` has no imageLayoutVersion",
        ));
    }
    read_index(dest)?;
    Ok(OciDest::Layout)
}

/// The manifests of the layout at `dest` (none if it has no `index.json` yet).
fn read_index(dest: &Path) -> Result<Vec<Value>, ExportError> {
    let index_path = dest.join(INDEX_FILE);
    match fs::read(&index_path) {
        Ok(b) => {
            let v: Value = serde_json::from_slice(&b).map_err(|e| ExportError::NotLayout {
                path: dest.to_path_buf(),
                reason: format!("index.json: {e}"),
            })?;
            Ok(v.get("manifests")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ExportError::Io {
            path: index_path,
            source: e,
        }),
    }
}

/// Writes (or adds to) an OCI image layout at `dest`. Blobs are hard-linked from the store
/// when it is on the same filesystem, else copied.
///
/// Checked first ([`check_oci_dir`]): a new layout is written into a temp directory beside
/// `dest` and renamed into place, so a failure leaves nothing; an image added to an existing
/// layout has its blobs placed first (each atomically) and `index.json` replaced last, so the
/// layout is valid at every moment.
pub fn write_oci_dir<'a>(
    blobs: &BlobStore,
    img: impl Into<Root<'a>>,
    names: &[ImageName],
    dest: &Path,
) -> Result<(), ExportError> {
    let img = img.into();
    match oci_dest(dest)? {
        OciDest::Layout => write_layout(blobs, img, names, dest),
        OciDest::New => {
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            fs::create_dir_all(parent).map_err(io_err(parent))?;
            // Made with mkdir, so it gets the mode any new directory gets (umask applied),
            // not a temp dir's 0700.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = parent.join(format!(".strata-export-{}-{nanos:x}", std::process::id()));
            fs::create_dir(&tmp).map_err(io_err(&tmp))?;
            let written = write_layout(blobs, img, names, &tmp).and_then(|()| {
                // Over an empty directory too (rename(2) replaces one); one that filled up
                // meanwhile makes it fail.
                fs::rename(&tmp, dest).map_err(io_err(dest))
            });
            if written.is_err() {
                let _ = fs::remove_dir_all(&tmp);
            }
            written
        }
    }
}

fn write_layout(
    blobs: &BlobStore,
    img: Root<'_>,
    names: &[ImageName],
    dest: &Path,
) -> Result<(), ExportError> {
    let mut manifests = read_index(dest)?;
    let blob_dir = dest.join(BLOBS_SHA256);
    fs::create_dir_all(&blob_dir).map_err(io_err(&blob_dir))?;
    let layout_file = dest.join(LAYOUT_FILE);
    if !layout_file.exists() {
        fs::write(&layout_file, OCI_LAYOUT).map_err(io_err(&layout_file))?;
    }
    for d in img.blobs() {
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
    let index_path = dest.join(INDEX_FILE);
    let ref_of = |v: &Value| oci::ref_name(v).map(str::to_string);
    let digest = img.digest().to_string();
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

/// Checks an archive destination before anything is built or written: a new path, or a
/// regular file that is an image archive already (an OCI archive or docker-archive, by
/// strata or another tool: a tar with an `oci-layout` or `manifest.json` at its top), which
/// is replaced, as `docker save -o` and buildx's tar outputs replace theirs. Anything else —
/// a directory, a device, a file of other content — is refused rather than overwritten.
pub fn check_archive_dest(dest: &Path) -> Result<(), ExportError> {
    let refuse = |what| ExportError::NotArchive {
        path: dest.to_path_buf(),
        what,
    };
    let meta = match fs::metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r.map_err(io_err(dest))?,
    };
    if meta.is_dir() {
        return Err(refuse("a directory"));
    }
    if !meta.is_file() {
        return Err(refuse("not a regular file"));
    }
    if meta.len() == 0 {
        return Ok(()); // e.g. made by mktemp for us
    }
    let f = fs::File::open(dest).map_err(io_err(dest))?;
    let mut archive = tar::Archive::new(f);
    let is_image = archive.entries_with_seek().is_ok_and(|entries| {
        entries.take(100_000).map_while(Result::ok).any(|e| {
            e.path().is_ok_and(|p| {
                let p = p.to_string_lossy();
                let p = p.trim_start_matches("./");
                p == LAYOUT_FILE || p == "manifest.json"
            })
        })
    });
    if !is_image {
        return Err(refuse("not an image archive"));
    }
    Ok(())
}

/// Writes an OCI archive or docker-archive to `dest` (atomically: temp file + rename), after
/// [`check_archive_dest`].
pub fn write_archive<'a>(
    blobs: &BlobStore,
    img: impl Into<Root<'a>>,
    names: &[ImageName],
    kind: ArchiveKind,
    dest: &Path,
    mtime: u64,
) -> Result<(), ExportError> {
    let img = img.into();
    let docker_image = match (kind, img) {
        (ArchiveKind::Docker, Root::Index(x)) => {
            return Err(ExportError::DockerArchiveIndex(x.images.len()))
        }
        (ArchiveKind::Docker, Root::Attested(..)) => {
            return Err(ExportError::Attested {
                path: dest.to_path_buf(),
            })
        }
        (_, Root::Image(i)) => Some(i),
        _ => None,
    };
    check_archive_dest(dest)?;
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
            b.append(&header(&format!("{BLOBS_SHA256}/"), 0, true, mtime), io::empty())?;
            for d in img.blobs() {
                let p = blobs.path(&d);
                let f = fs::File::open(&p)?;
                let size = f.metadata()?.len();
                b.append(&header(&format!("{BLOBS_SHA256}/{}", d.hex()), size, false, mtime), f)?;
            }
            let manifests: Vec<Value> = if names.is_empty() {
                vec![manifest_descriptor(img, None)]
            } else {
                names.iter().map(|n| manifest_descriptor(img, Some(n))).collect()
            };
            let index = json!({ "schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests });
            add_bytes(&mut b, INDEX_FILE, &canonical_json(&index))?;
            if let (ArchiveKind::Docker, Some(img)) = (kind, docker_image) {
                let m = json!([{
                    "Config": format!("{BLOBS_SHA256}/{}", img.config_digest.hex()),
                    "RepoTags": names.iter().map(|n| n.full()).collect::<Vec<_>>(),
                    "Layers": img.layers.iter().map(|l| format!("{BLOBS_SHA256}/{}", l.digest.hex())).collect::<Vec<_>>(),
                }]);
                add_bytes(&mut b, "manifest.json", &canonical_json(&m))?;
            }
            add_bytes(&mut b, LAYOUT_FILE, OCI_LAYOUT)?;
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
