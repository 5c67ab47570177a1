//! `fsck`: checks (and optionally repairs) a store.
//!
//! Checked, in this order:
//! - every file in `blobs/sha256/` is re-hashed (in parallel, rayon) and must be named by its
//!   sha256 (`ocidir-rs`'s `fsck`);
//! - every step record's layer blob exists and has the recorded size;
//! - every layer record's blob exists and has the recorded size;
//! - every tag's manifest blob exists and parses, and the config and layer blobs it names exist;
//! - files in `tmp/` older than [`STALE_TEMP_AGE`] are leftovers of killed writes.
//!   (Opening the store already sweeps `tmp/`, so this only finds files that could not be
//!   removed then.)
//!
//! `repair` deletes corrupt blobs and stray files, drops index entries that point at missing
//! blobs, drops broken tags and removes stale temp files, then checks again. Deleting a corrupt
//! blob can make records that pointed at it dangling, so the check/repair cycle runs until the
//! store is clean (at most a few rounds; the report keeps whatever is left).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use serde_json::Value;

use crate::error::{IoContext, StoreError};
use crate::{Digest, Sha256Hasher, Store};

/// Temp files younger than this may belong to a write in progress and are left alone.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The blob's content does not hash to its name.
    CorruptBlob { digest: Digest, found: Digest },
    /// A file in `blobs/sha256/` whose name is not a sha256 hex digest.
    StrayFile { path: PathBuf },
    /// A step record names a layer blob that is not in the store (or has another size).
    StepBlob {
        step: [u8; 32],
        digest: Digest,
        /// `None`: the blob is missing; `Some((expected, found))`: the sizes differ.
        size: Option<(u64, u64)>,
    },
    /// A layer record names a blob that is not in the store (or has another size).
    LayerBlob {
        diff_id: Digest,
        compression: String,
        digest: Digest,
        size: Option<(u64, u64)>,
    },
    /// A tag whose manifest, config or layers are missing, or whose manifest does not parse.
    DanglingTag { name: String, reason: String },
    /// A leftover temporary file older than [`STALE_TEMP_AGE`].
    StaleTemp { path: PathBuf, age: Duration },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |f: &mut fmt::Formatter<'_>, s: &Option<(u64, u64)>| match s {
            None => write!(f, "missing blob"),
            Some((want, got)) => write!(f, "wrong size ({got} bytes, recorded {want}) for blob"),
        };
        match self {
            Problem::CorruptBlob { digest, found } => {
                write!(f, "corrupt blob {digest} (content hashes to {found})")
            }
            Problem::StrayFile { path } => {
                write!(f, "unexpected file `{}` in the blob store", path.display())
            }
            Problem::StepBlob {
                step,
                digest,
                size: s,
            } => {
                size(f, s)?;
                write!(f, " {digest} referenced by step {}", hex::encode(step))
            }
            Problem::LayerBlob {
                diff_id,
                compression,
                digest,
                size: s,
            } => {
                size(f, s)?;
                write!(
                    f,
                    " {digest} referenced by layer record {diff_id} ({compression})"
                )
            }
            Problem::DanglingTag { name, reason } => write!(f, "dangling tag {name}: {reason}"),
            Problem::StaleTemp { path, age } => write!(
                f,
                "stale temporary file `{}` ({} min old)",
                path.display(),
                age.as_secs() / 60
            ),
        }
    }
}

/// What [`fsck`] found.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Problems still present (after repair, if repairing).
    pub problems: Vec<Problem>,
    /// Problems that were repaired.
    pub repaired: Vec<Problem>,
    /// Blobs re-hashed (in the last round).
    pub blobs_checked: usize,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store; with `repair`, fixes what it finds and checks again.
///
/// With `repair` it holds the index lock throughout ([`crate::Index::hold`]), so no other
/// process's build writes records while records are being checked and dropped; other strata
/// processes wait (and say so) until it is done. A check alone does not lock: builds record a
/// step only after its blob is committed, so what it reads is consistent at every moment.
pub fn fsck(store: &Store, repair: bool) -> Result<FsckReport, StoreError> {
    let _hold = if repair {
        Some(store.index().hold()?)
    } else {
        None
    };
    let mut repaired = Vec::new();
    let mut round = 0;
    loop {
        let (problems, blobs_checked) = check(store)?;
        round += 1;
        if !repair || problems.is_empty() || round > 4 {
            return Ok(FsckReport {
                problems,
                repaired,
                blobs_checked,
            });
        }
        for p in problems {
            fix(store, &p)?;
            repaired.push(p);
        }
    }
}

fn check(store: &Store) -> Result<(Vec<Problem>, usize), StoreError> {
    let mut problems = Vec::new();
    let blob_dir = crate::Area::Blobs.path(store.root());
    let mut files = Vec::new();
    for entry in fs::read_dir(&blob_dir).at("read directory", &blob_dir)? {
        let entry = entry.at("read directory", &blob_dir)?;
        files.push(entry.path());
    }
    files.sort();
    let hashed: Vec<Result<Option<Problem>, StoreError>> =
        files.par_iter().map(|p| check_blob(p)).collect();
    let blobs_checked = files.len();
    let mut corrupt = BTreeSet::new();
    for r in hashed {
        if let Some(p) = r? {
            if let Problem::CorruptBlob { digest, .. } = &p {
                corrupt.insert(*digest);
            }
            problems.push(p);
        }
    }

    // A reference to a corrupt blob is reported once, as the corrupt blob; repairing deletes
    // it, and the next round reports (and drops) the references.
    let size_problem = |d: &Digest, want: u64| -> Option<Option<(u64, u64)>> {
        if corrupt.contains(d) {
            return None;
        }
        match fs::metadata(store.blobs().path(d)) {
            Ok(m) if m.is_file() && m.len() == want => None,
            Ok(m) if m.is_file() => Some(Some((want, m.len()))),
            _ => Some(None),
        }
    };
    for (step, rec) in store.index().list_steps()? {
        if let Some(l) = &rec.layer {
            if let Some(size) = size_problem(&l.digest, l.size) {
                problems.push(Problem::StepBlob {
                    step,
                    digest: l.digest,
                    size,
                });
            }
        }
    }
    for (diff_id, compression, rec) in store.index().list_layers()? {
        if let Some(size) = size_problem(&rec.digest, rec.size) {
            problems.push(Problem::LayerBlob {
                diff_id,
                compression,
                digest: rec.digest,
                size,
            });
        }
    }
    for (name, tag) in store.index().list_tags()? {
        if corrupt.contains(&tag.manifest) || corrupt.contains(&tag.config) {
            continue;
        }
        let reason = match tag_blobs(store, &tag.manifest) {
            Err(reason) => Some(reason.to_string()),
            Ok(blobs) => blobs
                .iter()
                .chain([&tag.config])
                .find(|d| !corrupt.contains(d) && !store.blobs().contains(d))
                .map(|d| format!("blob {d} is missing")),
        };
        if let Some(reason) = reason {
            problems.push(Problem::DanglingTag { name, reason });
        }
    }

    let tmp = crate::Area::Tmp.path(store.root());
    let now = SystemTime::now();
    if let Ok(entries) = fs::read_dir(&tmp) {
        for entry in entries {
            let entry = entry.at("read directory", &tmp)?;
            // Another process's scratch directory (or its lock file) while it is alive.
            if crate::lock::scratch_is_live(&tmp, entry.file_name().as_encoded_bytes()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age > STALE_TEMP_AGE {
                problems.push(Problem::StaleTemp {
                    path: entry.path(),
                    age,
                });
            }
        }
    }
    Ok((problems, blobs_checked))
}

/// Why the blobs of a tag's manifest cannot be listed (fsck reports the tag as dangling).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TagBlobsError {
    #[error("manifest {0} is missing")]
    Missing(Digest),
    #[error("manifest {manifest}: {source}")]
    Read {
        manifest: Digest,
        source: StoreError,
    },
    #[error("manifest {manifest} does not parse: {source}")]
    Parse {
        manifest: Digest,
        source: serde_json::Error,
    },
    #[error("manifest {0} has a descriptor without a valid digest")]
    BadDescriptor(Digest),
}

/// The config and layer digests a manifest names — for an image index (a multi-platform
/// build's tag), each image manifest it lists and their configs and layers; `Err` with a reason
/// if one is missing or does not parse.
pub(crate) fn tag_blobs(store: &Store, manifest: &Digest) -> Result<Vec<Digest>, TagBlobsError> {
    let v = read_json(store, manifest)?;
    match v.get("manifests").and_then(Value::as_array) {
        Some(children) => {
            let mut out = Vec::new();
            for c in children {
                let d = digest_of(manifest, c)?;
                out.push(d);
                out.extend(image_blobs(manifest, &read_json(store, &d)?)?);
            }
            Ok(out)
        }
        None => image_blobs(manifest, &v),
    }
}

/// The config digests of the images a tag names: its manifest's, or each of its index's.
pub(crate) fn tag_configs(store: &Store, manifest: &Digest) -> Result<Vec<Digest>, TagBlobsError> {
    let v = read_json(store, manifest)?;
    match v.get("manifests").and_then(Value::as_array) {
        Some(children) => children
            .iter()
            .map(|c| {
                let d = digest_of(manifest, c)?;
                digest_of(&d, &read_json(store, &d)?["config"])
            })
            .collect(),
        None => Ok(vec![digest_of(manifest, &v["config"])?]),
    }
}

fn read_json(store: &Store, manifest: &Digest) -> Result<Value, TagBlobsError> {
    if !store.blobs().contains(manifest) {
        return Err(TagBlobsError::Missing(*manifest));
    }
    let bytes = store
        .blobs()
        .read_verified(manifest)
        .map_err(|source| TagBlobsError::Read {
            manifest: *manifest,
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|source| TagBlobsError::Parse {
        manifest: *manifest,
        source,
    })
}

fn digest_of(manifest: &Digest, d: &Value) -> Result<Digest, TagBlobsError> {
    d.get("digest")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or(TagBlobsError::BadDescriptor(*manifest))
}

/// The config and layers of the image manifest `v` (`manifest`).
fn image_blobs(manifest: &Digest, v: &Value) -> Result<Vec<Digest>, TagBlobsError> {
    let mut out = vec![digest_of(manifest, &v["config"])?];
    for l in v["layers"].as_array().into_iter().flatten() {
        out.push(digest_of(manifest, l)?);
    }
    Ok(out)
}

fn check_blob(path: &Path) -> Result<Option<Problem>, StoreError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Ok(digest) = Digest::from_hex(name) else {
        return Ok(Some(Problem::StrayFile {
            path: path.to_path_buf(),
        }));
    };
    if !path.is_file() {
        return Ok(Some(Problem::StrayFile {
            path: path.to_path_buf(),
        }));
    }
    let mut file = File::open(path).at("open blob", path)?;
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).at("read blob", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let found = hasher.finish();
    Ok((found != digest).then_some(Problem::CorruptBlob { digest, found }))
}

fn remove(path: &Path) -> Result<(), StoreError> {
    let r = if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at("remove", path),
        _ => Ok(()),
    }
}

fn fix(store: &Store, p: &Problem) -> Result<(), StoreError> {
    match p {
        Problem::CorruptBlob { digest, .. } => remove(&store.blobs().path(digest)),
        Problem::StrayFile { path } | Problem::StaleTemp { path, .. } => remove(path),
        Problem::StepBlob { step, .. } => store.index().delete_step(step),
        Problem::LayerBlob {
            diff_id,
            compression,
            ..
        } => store.index().delete_layer(diff_id, compression),
        Problem::DanglingTag { name, .. } => store.index().delete_tag(name).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LayerRecord, StepRecord, TagRecord};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
    }

    fn layer(store: &Store, content: &[u8]) -> LayerRecord {
        let (digest, size) = store.blobs().put(content).unwrap();
        LayerRecord {
            diff_id: Digest::of(&[content, b"-tar"].concat()),
            digest,
            size,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            uncompressed_size: size,
        }
    }

    fn step(store: &Store, n: u8, l: &LayerRecord) {
        store
            .index()
            .put_step(
                &[n; 32],
                &StepRecord {
                    layer: Some(l.clone()),
                    created_unix: 1,
                },
                None,
            )
            .unwrap();
        store.index().put_layer(&l.diff_id, "gzip-6", l).unwrap();
    }

    /// Tags `name` with an image made of `layers`; returns the manifest digest.
    fn tag(store: &Store, name: &str, layers: &[&LayerRecord]) -> Digest {
        let (config, _) = store
            .blobs()
            .put(format!("{{\"n\":\"{name}\"}}").as_bytes())
            .unwrap();
        let manifest = serde_json::json!({
            "config": {"digest": config.to_string()},
            "layers": layers.iter().map(|l| serde_json::json!({"digest": l.digest.to_string()})).collect::<Vec<_>>(),
        });
        let (m, _) = store.blobs().put(manifest.to_string().as_bytes()).unwrap();
        store
            .index()
            .put_tag(
                name,
                &TagRecord {
                    manifest: m,
                    config,
                    media_type: String::new(),
                },
            )
            .unwrap();
        m
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Fixture { _dir: dir, store }
    }

    fn flip_byte(path: &Path) {
        let mut bytes = fs::read(path).unwrap();
        bytes[0] ^= 1;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn clean_store_is_clean() {
        let f = fixture();
        let l = layer(&f.store, b"layer one");
        step(&f.store, 1, &l);
        tag(&f.store, "a:1", &[&l]);
        let r = fsck(&f.store, false).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
        assert_eq!(r.blobs_checked, 3);
    }

    #[test]
    fn detects_each_kind_of_damage_and_repair_makes_it_clean() {
        let f = fixture();
        let s = &f.store;
        let flipped = layer(s, b"flipped layer");
        let truncated = layer(s, b"truncated layer");
        let missing = layer(s, b"missing layer");
        let tagged = layer(s, b"tagged layer");
        step(s, 1, &flipped);
        step(s, 2, &truncated);
        step(s, 3, &missing);
        step(s, 4, &tagged);
        // A dangling index entry: a step record for a blob that was never written.
        let never = LayerRecord {
            digest: Digest::of(b"never written"),
            ..tagged.clone()
        };
        s.index()
            .put_step(
                &[5; 32],
                &StepRecord {
                    layer: Some(never.clone()),
                    created_unix: 1,
                },
                None,
            )
            .unwrap();
        // A dangling tag: its manifest names a layer that is not there.
        tag(s, "dangling:1", &[&never]);
        let good = tag(s, "good:1", &[&tagged]);
        flip_byte(&s.blobs().path(&flipped.digest));
        let p = s.blobs().path(&truncated.digest);
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        fs::remove_file(s.blobs().path(&missing.digest)).unwrap();
        // A stale temp file, and a fresh one that might be a write in progress.
        let stale = s.root().join("tmp/blob-1-2-3");
        fs::write(&stale, b"half").unwrap();
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        fs::write(s.root().join("tmp/blob-fresh"), b"half").unwrap();

        let r = fsck(s, false).unwrap();
        let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| {
            assert!(
                text.iter().any(|t| t.contains(needle)),
                "no `{needle}` in {text:#?}"
            )
        };
        has(&format!("corrupt blob {}", flipped.digest));
        has(&format!("corrupt blob {}", truncated.digest));
        has(&format!(
            "missing blob {} referenced by step {}",
            missing.digest,
            hex::encode([3u8; 32])
        ));
        has(&format!(
            "missing blob {} referenced by step {}",
            never.digest,
            hex::encode([5u8; 32])
        ));
        has(&format!(
            "missing blob {} referenced by layer record",
            missing.digest
        ));
        has("dangling tag dangling:1");
        has("stale temporary file");
        assert!(!text
            .iter()
            .any(|t| t.contains("good:1") || t.contains("blob-fresh")));
        // Nothing was changed without --repair.
        assert!(s.blobs().contains(&flipped.digest));
        assert_eq!(fsck(s, false).unwrap().problems.len(), r.problems.len());

        let r = fsck(s, true).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
        assert!(r.repaired.len() >= 7, "{:?}", r.repaired);
        assert!(fsck(s, false).unwrap().is_clean());
        // What was sound is still there.
        assert!(s.index().get_step(&[4; 32]).unwrap().is_some());
        assert_eq!(s.index().get_tag("good:1").unwrap().unwrap().manifest, good);
        assert!(s.root().join("tmp/blob-fresh").exists());
        // What was broken is gone.
        assert!(!s.blobs().contains(&flipped.digest));
        for n in [1, 2, 3, 5] {
            assert_eq!(s.index().get_step(&[n; 32]).unwrap(), None, "step {n}");
        }
        assert_eq!(s.index().get_tag("dangling:1").unwrap(), None);
        assert!(!stale.exists());
    }

    #[test]
    fn a_corrupt_tagged_layer_drops_the_tag_on_repair() {
        let f = fixture();
        let l = layer(&f.store, b"tagged");
        step(&f.store, 1, &l);
        tag(&f.store, "t:1", &[&l]);
        flip_byte(&f.store.blobs().path(&l.digest));
        let r = fsck(&f.store, false).unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        let r = fsck(&f.store, true).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
        assert_eq!(f.store.index().get_tag("t:1").unwrap(), None);
        assert_eq!(f.store.index().get_step(&[1; 32]).unwrap(), None);
    }

    /// An attested image (`strata build --provenance`) is tagged by its index: the blobs of the
    /// manifests it lists count as the tag's, so a missing attestation layer is reported.
    #[test]
    fn a_tagged_index_covers_the_blobs_of_its_manifests() {
        let f = fixture();
        let s = &f.store;
        let image = layer(s, b"image layer");
        let statement = layer(s, b"statement");
        let m_image = tag(s, "img:1", &[&image]);
        let m_att = tag(s, "att:1", &[&statement]);
        let index = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"digest": m_image.to_string()}, {"digest": m_att.to_string()}],
        });
        let (i, _) = s.blobs().put(index.to_string().as_bytes()).unwrap();
        let mut rec = s.index().get_tag("img:1").unwrap().unwrap();
        rec.manifest = i;
        s.index().put_tag("both:1", &rec).unwrap();
        let blobs = tag_blobs(s, &i).unwrap();
        for d in [m_image, m_att, image.digest, statement.digest] {
            assert!(blobs.contains(&d), "{d} not covered");
        }
        assert!(fsck(s, false).unwrap().is_clean());
        fs::remove_file(s.blobs().path(&statement.digest)).unwrap();
        let text: Vec<String> = fsck(s, false)
            .unwrap()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert!(
            text.iter().any(|t| t.contains("dangling tag both:1")),
            "{text:?}"
        );
    }

    #[test]
    fn a_stray_file_is_reported() {
        let f = fixture();
        fs::write(f.store.root().join("blobs/sha256/not-a-digest"), b"x").unwrap();
        let r = fsck(&f.store, false).unwrap();
        assert!(matches!(&r.problems[..], [Problem::StrayFile { .. }]));
        assert!(fsck(&f.store, true).unwrap().is_clean());
    }
}
