//! The step cache shared between machines (`--cache-to` / `--cache-from`).
//!
//! A build's step records (step key → the layer it produced, or none for config-only steps) are
//! exported as an OCI artifact: an image manifest whose `artifactType` is
//! [`ARTIFACT_TYPE`], whose config is the OCI empty descriptor, and whose layers are the records
//! blob ([`MEDIA_TYPE_RECORDS`], canonical JSON, sorted by key) followed by every layer blob the
//! records name. The same manifest goes to a registry or into a local OCI layout
//! (`type=local,dest=DIR`, e.g. a CI cache directory).
//!
//! Importing reads the manifest and the records blob only. A build that hits an imported record
//! fetches that one layer blob (verified against its digest), writes it into the store, then
//! the record — a machine with an empty store pulls only the layers it needs and runs nothing
//! that was cached. Keys are the same on every machine (docs/cache-keys.md), so the digests are
//! too. An imported record is trusted like a local one: the cache source must be as trusted as
//! the store (docs/security.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_cache::{BlobStore, Digest, LayerRecord, StepRecord};

use crate::image::{BlobFetchError, BlobFetcher, LayerDesc};
use crate::oci::{self, REF_NAME_ANNOTATION};
use crate::plan::key::{Key, KEY_VERSION};

pub const ARTIFACT_TYPE: &str = "application/vnd.strata.cache.v1";
pub const MEDIA_TYPE_RECORDS: &str = "application/vnd.strata.cache.records.v1+json";
/// The largest records blob accepted on import (about 100k steps).
pub const MAX_RECORDS_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RemoteCacheError {
    #[error("cache {origin}: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("cache {origin}: `{}`: {source}", path.display())]
    Io {
        origin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] strata_cache::StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordsFile {
    key_version: u32,
    steps: Vec<StepEntry>,
    /// Read-set reuse candidates (docs/read-set.md); absent in caches written before them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    readsets: Vec<ReadSetEntry>,
}

/// A RUN step of `steps` that may be reused by read set: its reuse key and its read set (the
/// engine's bincode, base64; versioned inside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ReadSetEntry {
    reuse: String,
    step: String,
    readset: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StepEntry {
    key: String,
    layer: Option<LayerRecord>,
}

/// The step records of one or more builds, ready to export.
#[derive(Debug, Clone, Default)]
pub struct CacheRecords {
    steps: BTreeMap<Key, Option<LayerRecord>>,
    /// Reuse key → (step key, read set bytes), for steps of `steps`.
    readsets: BTreeMap<Key, Vec<(Key, Vec<u8>)>>,
}

impl CacheRecords {
    pub fn insert(&mut self, key: Key, layer: Option<LayerRecord>) {
        self.steps.insert(key, layer);
    }

    /// Adds a read-set candidate of step `step` (which must be inserted too).
    pub fn insert_readset(&mut self, reuse: Key, step: Key, readset: Vec<u8>) {
        let v = self.readsets.entry(reuse).or_default();
        if !v.iter().any(|(s, _)| *s == step) {
            v.push((step, readset));
            v.sort();
        }
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The records blob: canonical JSON, sorted by key.
    pub fn to_json(&self) -> Vec<u8> {
        let file = RecordsFile {
            key_version: KEY_VERSION,
            steps: self
                .steps
                .iter()
                .map(|(k, l)| StepEntry {
                    key: hex::encode(k),
                    layer: l.clone(),
                })
                .collect(),
            readsets: self
                .readsets
                .iter()
                .flat_map(|(reuse, v)| {
                    v.iter().map(move |(step, rs)| ReadSetEntry {
                        reuse: hex::encode(reuse),
                        step: hex::encode(step),
                        readset: base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            rs,
                        ),
                    })
                })
                .collect(),
        };
        serde_json::to_vec(&file).expect("records serialise")
    }

    pub fn from_json(bytes: &[u8], origin: &str) -> Result<CacheRecords, RemoteCacheError> {
        let invalid = |reason: String| RemoteCacheError::Invalid {
            origin: origin.to_string(),
            reason,
        };
        let file: RecordsFile =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("records: {e}")))?;
        if file.key_version != KEY_VERSION {
            // Keys of another version never match ours: nothing to import, not an error.
            return Ok(CacheRecords::default());
        }
        let key = |hex_key: &str| {
            let mut k = [0u8; 32];
            hex::decode_to_slice(hex_key, &mut k)
                .map_err(|_| invalid(format!("records: bad key `{hex_key}`")))?;
            Ok::<Key, RemoteCacheError>(k)
        };
        let mut steps = BTreeMap::new();
        for s in file.steps {
            steps.insert(key(&s.key)?, s.layer);
        }
        let mut records = CacheRecords {
            steps,
            readsets: BTreeMap::new(),
        };
        for r in file.readsets {
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &r.readset)
                    .map_err(|_| invalid("records: a read set is not base64".into()))?;
            let step = key(&r.step)?;
            if !records.steps.contains_key(&step) {
                return Err(invalid(format!(
                    "records: read set of step {} that has no record",
                    r.step
                )));
            }
            records.insert_readset(key(&r.reuse)?, step, bytes);
        }
        Ok(records)
    }

    /// The distinct layer blobs the records name, sorted by digest.
    pub fn layers(&self) -> Vec<LayerRecord> {
        let mut by_digest: BTreeMap<Digest, LayerRecord> = BTreeMap::new();
        for l in self.steps.values().flatten() {
            by_digest.entry(l.digest).or_insert_with(|| l.clone());
        }
        by_digest.into_values().collect()
    }
}

/// The artifact manifest for `records` whose records blob is `records_json`.
pub fn manifest(records: &CacheRecords, records_json: &[u8]) -> Vec<u8> {
    let mut layers = vec![json!({
        "mediaType": MEDIA_TYPE_RECORDS,
        "digest": Digest::of(records_json).to_string(),
        "size": records_json.len(),
    })];
    for l in records.layers() {
        layers.push(json!({
            "mediaType": l.media_type,
            "digest": l.digest.to_string(),
            "size": l.size,
        }));
    }
    let m = json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_TYPE_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": oci::MEDIA_TYPE_EMPTY,
            "digest": Digest::of(b"{}").to_string(),
            "size": 2,
        },
        "layers": layers,
    });
    // serde_json's map is sorted: the bytes are canonical.
    serde_json::to_vec(&m).expect("manifest serialises")
}

/// The records blob's descriptor in a cache manifest, checked to be one.
pub fn records_descriptor(
    manifest: &[u8],
    origin: &str,
) -> Result<(Digest, u64), RemoteCacheError> {
    let invalid = |reason: String| RemoteCacheError::Invalid {
        origin: origin.to_string(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| invalid(format!("manifest: {e}")))?;
    if v.get("artifactType").and_then(|a| a.as_str()) != Some(ARTIFACT_TYPE) {
        return Err(invalid(format!(
            "not a strata cache (artifactType is not `{ARTIFACT_TYPE}`)"
        )));
    }
    let first = v
        .pointer("/layers/0")
        .ok_or_else(|| invalid("manifest has no records blob".into()))?;
    if first.get("mediaType").and_then(|m| m.as_str()) != Some(MEDIA_TYPE_RECORDS) {
        return Err(invalid("the first blob is not the records blob".into()));
    }
    let digest: Digest = first
        .get("digest")
        .and_then(|d| d.as_str())
        .unwrap_or_default()
        .parse()
        .map_err(|e| invalid(format!("records digest: {e}")))?;
    let size = first.get("size").and_then(|s| s.as_u64()).unwrap_or(0);
    if size > MAX_RECORDS_BYTES {
        return Err(invalid(format!(
            "records blob of {size} bytes is over the {MAX_RECORDS_BYTES}-byte limit"
        )));
    }
    Ok((digest, size))
}

/// Step records from elsewhere, consulted when the local store misses.
pub trait RemoteSteps: Send + Sync {
    /// The record for `key`, if the imported caches have one.
    fn step(&self, key: &Key) -> Option<StepRecord>;
    /// Puts `layer` into `store`, verified, nothing partial kept on failure.
    fn fetch_layer(&self, layer: &LayerRecord, store: &BlobStore) -> Result<(), BlobFetchError>;
    /// Where the records come from, for messages.
    fn origin(&self) -> String;
    /// Read-set candidates under reuse key `reuse`: (step key, read set bytes).
    fn readsets(&self, _reuse: &Key) -> Vec<(Key, Vec<u8>)> {
        Vec::new()
    }
}

/// One imported cache: its records and where to fetch their layers.
pub struct ImportedCache {
    records: CacheRecords,
    /// The layer blobs the records name (asked at every fetch: a set, not a scan).
    layers: std::collections::HashSet<Digest>,
    blobs: Arc<dyn BlobFetcher>,
}

impl ImportedCache {
    pub fn new(records: CacheRecords, blobs: Arc<dyn BlobFetcher>) -> ImportedCache {
        let layers = records.steps.values().flatten().map(|l| l.digest).collect();
        ImportedCache {
            records,
            layers,
            blobs,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Several imported caches, asked in order (`--cache-from` is repeatable).
#[derive(Default)]
pub struct ImportedCaches(pub Vec<ImportedCache>);

impl std::fmt::Debug for dyn RemoteSteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteSteps({})", self.origin())
    }
}

impl RemoteSteps for ImportedCaches {
    fn readsets(&self, reuse: &Key) -> Vec<(Key, Vec<u8>)> {
        self.0
            .iter()
            .flat_map(|c| c.records.readsets.get(reuse).cloned().unwrap_or_default())
            .collect()
    }

    fn step(&self, key: &Key) -> Option<StepRecord> {
        self.0.iter().find_map(|c| {
            c.records.steps.get(key).map(|layer| StepRecord {
                layer: layer.clone(),
                created_unix: 0,
            })
        })
    }

    fn fetch_layer(&self, layer: &LayerRecord, store: &BlobStore) -> Result<(), BlobFetchError> {
        let desc = LayerDesc {
            digest: layer.digest,
            size: layer.size,
            media_type: layer.media_type.clone(),
            diff_id: layer.diff_id,
        };
        let mut last = BlobFetchError::NotCached;
        for c in &self.0 {
            if !c.layers.contains(&layer.digest) {
                continue;
            }
            match c.blobs.fetch(&desc, store) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = BlobFetchError::From {
                        origin: c.blobs.origin(),
                        source: Box::new(e),
                    }
                }
            }
        }
        Err(last)
    }

    fn origin(&self) -> String {
        self.0
            .iter()
            .map(|c| c.blobs.origin())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Blobs of a local OCI layout, verified on the way into the store.
#[derive(Debug)]
pub struct LayoutBlobs(pub PathBuf);

impl BlobFetcher for LayoutBlobs {
    fn fetch(&self, layer: &LayerDesc, store: &BlobStore) -> Result<(), BlobFetchError> {
        let src = oci::blob_path(&self.0, &layer.digest);
        store.import_file(&src, Some(&layer.digest))?;
        Ok(())
    }

    fn origin(&self) -> String {
        format!("OCI layout `{}`", self.0.display())
    }
}

/// Writes `records` and their layer blobs (from `store`) into the OCI layout `dir`, as the image
/// tagged `tag`; other images of the layout are kept. Returns the manifest digest.
pub fn export_to_layout(
    records: &CacheRecords,
    store: &BlobStore,
    dir: &Path,
    tag: &str,
) -> Result<Digest, RemoteCacheError> {
    let origin = format!("OCI layout `{}`", dir.display());
    let io = |path: &Path, source| RemoteCacheError::Io {
        origin: origin.clone(),
        path: path.to_path_buf(),
        source,
    };
    let blobs = dir.join(oci::BLOBS_SHA256);
    std::fs::create_dir_all(&blobs).map_err(|e| io(&blobs, e))?;
    let put_bytes = |bytes: &[u8]| -> Result<Digest, RemoteCacheError> {
        let d = Digest::of(bytes);
        let p = blobs.join(d.hex());
        if !p.exists() {
            write_atomic(&p, bytes).map_err(|e| io(&p, e))?;
        }
        Ok(d)
    };
    let records_json = records.to_json();
    put_bytes(&records_json)?;
    put_bytes(b"{}")?;
    for l in records.layers() {
        let p = blobs.join(l.digest.hex());
        if p.exists() {
            continue;
        }
        let mut r = store.open(&l.digest)?;
        let tmp = blobs.join(format!(".tmp-{}", l.digest.hex()));
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        std::io::copy(&mut r, &mut f).map_err(|e| io(&p, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| io(&p, e))?;
    }
    let m = manifest(records, &records_json);
    let md = put_bytes(&m)?;
    // index.json: this tag now names the cache manifest; other entries stay.
    let index_path = dir.join(oci::INDEX_FILE);
    let mut manifests: Vec<serde_json::Value> = match std::fs::read(&index_path) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    manifests.retain(|d| oci::ref_name(d) != Some(tag));
    manifests.push(json!({
        "mediaType": oci::MEDIA_TYPE_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "digest": md.to_string(),
        "size": m.len(),
        "annotations": {REF_NAME_ANNOTATION: tag},
    }));
    let index =
        json!({"schemaVersion": 2, "mediaType": oci::MEDIA_TYPE_INDEX, "manifests": manifests});
    let layout_file = dir.join(oci::LAYOUT_FILE);
    write_atomic(&layout_file, oci::LAYOUT_VERSION_JSON).map_err(|e| io(&layout_file, e))?;
    write_atomic(&index_path, &serde_json::to_vec(&index).expect("index"))
        .map_err(|e| io(&index_path, e))?;
    Ok(md)
}

/// Reads the cache tagged `tag` from the OCI layout `dir`. A missing layout or tag is an empty
/// cache (the first CI run has none), not an error.
pub fn import_from_layout(dir: &Path, tag: &str) -> Result<ImportedCache, RemoteCacheError> {
    let origin = format!("OCI layout `{}`", dir.display());
    let invalid = |reason: String| RemoteCacheError::Invalid {
        origin: origin.clone(),
        reason,
    };
    let empty = || ImportedCache::new(CacheRecords::default(), Arc::new(LayoutBlobs(dir.into())));
    let index: serde_json::Value = match std::fs::read(dir.join(oci::INDEX_FILE)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| invalid(format!("index.json: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty()),
        Err(source) => {
            return Err(RemoteCacheError::Io {
                origin,
                path: dir.join(oci::INDEX_FILE),
                source,
            })
        }
    };
    let Some(desc) = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .and_then(|m| m.iter().find(|d| oci::ref_name(d) == Some(tag)))
    else {
        return Ok(empty());
    };
    let md: Digest = desc
        .get("digest")
        .and_then(|d| d.as_str())
        .unwrap_or_default()
        .parse()
        .map_err(|e| invalid(format!("index.json: {e}")))?;
    let read = |d: &Digest, limit: u64| -> Result<Vec<u8>, RemoteCacheError> {
        oci::read_blob(dir, d, None, Some(limit)).map_err(|e| match e {
            oci::BlobError::Io { path, source } => RemoteCacheError::Io {
                origin: origin.clone(),
                path,
                source,
            },
            e @ oci::BlobError::TooLarge { .. } => invalid(e.to_string()),
            oci::BlobError::Mismatch { .. } => {
                invalid(format!("blob {d} does not match its digest"))
            }
        })
    };
    let m = read(&md, 4 << 20)?;
    let (rd, _) = records_descriptor(&m, &origin)?;
    let records = CacheRecords::from_json(&read(&rd, MAX_RECORDS_BYTES)?, &origin)?;
    Ok(ImportedCache::new(
        records,
        Arc::new(LayoutBlobs(dir.into())),
    ))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> LayerRecord {
        LayerRecord {
            diff_id: Digest::of(&[n, 1]),
            digest: Digest::of(&[n]),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            uncompressed_size: 2,
        }
    }

    #[test]
    fn records_round_trip_sorted_and_deduplicated() {
        let mut r = CacheRecords::default();
        r.insert([9; 32], Some(rec(1)));
        r.insert([1; 32], None);
        r.insert([5; 32], Some(rec(1)));
        r.insert([7; 32], Some(rec(2)));
        let j = r.to_json();
        let back = CacheRecords::from_json(&j, "t").unwrap();
        assert_eq!(back.steps, r.steps);
        assert_eq!(back.to_json(), j, "canonical");
        assert_eq!(r.layers().len(), 2);
        let m = manifest(&r, &j);
        assert_eq!(records_descriptor(&m, "t").unwrap().0, Digest::of(&j));
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn read_sets_travel_with_their_steps() {
        let mut r = CacheRecords::default();
        r.insert([5; 32], Some(rec(1)));
        r.insert_readset([8; 32], [5; 32], vec![1, 2, 3]);
        r.insert_readset([8; 32], [5; 32], vec![1, 2, 3]);
        let j = r.to_json();
        let back = CacheRecords::from_json(&j, "t").unwrap();
        let caches = ImportedCaches(vec![ImportedCache::new(
            back,
            Arc::new(LayoutBlobs("/nowhere".into())),
        )]);
        assert_eq!(caches.readsets(&[8; 32]), vec![([5; 32], vec![1, 2, 3])]);
        assert!(caches.readsets(&[9; 32]).is_empty());
        // Caches written before read sets have none; a read set must name an exported step.
        assert!(!String::from_utf8_lossy(&{
            let mut plain = CacheRecords::default();
            plain.insert([5; 32], None);
            plain.to_json()
        })
        .contains("readsets"));
        let mut orphan = CacheRecords::default();
        orphan.insert_readset([8; 32], [6; 32], vec![1]);
        let e = CacheRecords::from_json(&orphan.to_json(), "t").unwrap_err();
        assert!(e.to_string().contains("has no record"), "{e}");
    }

    #[test]
    fn foreign_manifests_and_other_key_versions_are_handled() {
        let e = records_descriptor(br#"{"schemaVersion":2,"layers":[]}"#, "t").unwrap_err();
        assert!(e.to_string().contains("not a strata cache"), "{e}");
        let other = serde_json::to_vec(&RecordsFile {
            key_version: KEY_VERSION + 1,
            steps: vec![StepEntry {
                key: hex::encode([1u8; 32]),
                layer: None,
            }],
            readsets: vec![],
        })
        .unwrap();
        assert!(CacheRecords::from_json(&other, "t").unwrap().is_empty());
        assert!(CacheRecords::from_json(b"{", "t").is_err());
    }

    #[test]
    fn a_missing_layout_or_tag_is_an_empty_cache() {
        let d = tempfile::tempdir().unwrap();
        assert!(import_from_layout(&d.path().join("none"), "cache")
            .unwrap()
            .is_empty());
    }
}
