//! Committing what steps make: layers into the store (blob, chunk references, layer record),
//! the cache lookup of a step key (the store's, else an imported cache's), and base image
//! blobs.
//!
//! Results are recorded only after their blobs are committed, so an interrupted build caches
//! nothing partial.

use strata_cache::{Digest, LayerRecord, StepRecord, Store, StoreError};

use super::{BuildError, BuildOptions, Event, Progress};
use crate::image;
use crate::layer::{self, Compression};
use crate::plan::key::Key;

/// Writes `entries` as a layer into the store (no snapshot is unpacked alongside: a RUN after
/// the step unpacks the layer itself).
pub(crate) fn write_layer(
    store: &Store,
    entries: &[layer::Entry],
    opts: &BuildOptions,
    progress: &dyn Progress,
    stage: usize,
    step: usize,
) -> Result<LayerRecord, BuildError> {
    write_layer_unpacking(store, entries, opts, progress, (stage, step), None, &|e| e)
}

/// Commits a layer written into `w` (its bytes described by `out`) to the store: the blob, the
/// chunk references that let the next similar layer reuse its compressed chunks, and the layer
/// record by diff_id. Every step that writes a layer ends here.
pub(crate) fn commit_layer(
    store: &Store,
    w: strata_cache::BlobWriter,
    out: &layer::LayerOutput,
    chunks: &dyn layer::ChunkCache,
    compression: Compression,
) -> Result<LayerRecord, BuildError> {
    let (digest, size) = w.commit()?;
    debug_assert_eq!(digest, out.digest);
    chunks.record(&digest, &out.chunks);
    let rec = LayerRecord {
        diff_id: out.diff_id,
        digest,
        size,
        media_type: out.media_type.to_string(),
        uncompressed_size: out.uncompressed_size,
    };
    store
        .index()
        .put_layer(&out.diff_id, compression.id(), &rec)?;
    Ok(rec)
}

/// Writes `entries` as a layer into the store while unpacking it into a snapshot for a RUN
/// later in the stage (`delta`: the tee's receiving end, see `sandbox::delta`). An error of the
/// write itself goes through `wrap` (it belongs to the step).
pub(crate) fn write_layer_unpacking(
    store: &Store,
    entries: &[layer::Entry],
    opts: &BuildOptions,
    progress: &dyn Progress,
    (stage, step): (usize, usize),
    delta: Option<(layer::RawTee, crate::sandbox::snapshot::DeltaInProgress)>,
    wrap: &dyn Fn(BuildError) -> BuildError,
) -> Result<LayerRecord, BuildError> {
    let (tee, delta) = match delta {
        Some((tx, d)) => (Some(tx), Some(d)),
        None => (None, None),
    };
    let mut w = store.blobs().writer()?;
    let chunks = chunk_cache(store);
    let written =
        layer::write_layer_tee(entries, opts.compression, &mut w, Some(chunks.clone()), tee);
    if let Some(d) = delta {
        d.finish(written.as_ref().ok().map(|o| &o.diff_id));
    }
    let out = written.map_err(|e| wrap(e.into()))?;
    Compressed {
        compressed: out.compressed_raw,
        reused: out.reused_raw,
    }
    .report(progress, stage, step);
    commit_layer(store, w, &out, chunks.as_ref(), opts.compression)
}

/// The record of step `k` if it can be reused: the store's (when its layer blob is present),
/// else an imported cache's, whose layer is then fetched into the store and the record written
/// (records after blobs). A failed fetch is a miss, with a warning: the step runs.
pub(crate) fn cached_step(
    store: &Store,
    opts: &BuildOptions,
    progress: &dyn Progress,
    k: &Key,
) -> Result<Option<StepRecord>, BuildError> {
    if opts.no_cache {
        return Ok(None);
    }
    let present = |r: &StepRecord| {
        r.layer
            .as_ref()
            .is_none_or(|l| store.blobs().contains(&l.digest))
    };
    // `use_step` also marks the step in use by this build, so a concurrent gc keeps it.
    if let Some(r) = store.index().use_step(k)? {
        if present(&r) {
            return Ok(Some(r));
        }
    }
    let Some(remote) = &opts.remote else {
        return Ok(None);
    };
    let Some(mut r) = remote.step(k) else {
        return Ok(None);
    };
    if let Some(l) = &r.layer {
        if !store.blobs().contains(&l.digest) {
            if let Err(e) = remote.fetch_layer(l, store.blobs()) {
                progress.event(&Event::Warning(format!(
                    "cache {}: layer {} could not be fetched ({e}); running the step instead",
                    remote.origin(),
                    l.digest
                )));
                return Ok(None);
            }
        }
    }
    r.created_unix = strata_cache::unix_now();
    store.index().put_step(k, &r, None)?;
    store.index().use_step(k)?;
    Ok(Some(r))
}

/// Tar bytes of a written layer that were compressed vs reused ([`Event::Compressed`]).
pub(crate) struct Compressed {
    pub compressed: u64,
    pub reused: u64,
}

impl Compressed {
    pub(crate) fn report(&self, progress: &dyn Progress, stage: usize, step: usize) {
        progress.event(&Event::Compressed {
            stage,
            step,
            compressed: self.compressed,
            reused: self.reused,
        });
    }
}

/// Compressed chunks of earlier layers, as references into their blobs (`<store>/chunks-v2/`):
/// a layer that differs in a few files recompresses only the chunks they fall in.
pub(crate) fn chunk_cache(store: &Store) -> std::sync::Arc<dyn layer::ChunkCache> {
    let blobs = store.blobs().clone();
    std::sync::Arc::new(layer::ChunkDir::new(
        store.root().join(strata_cache::CHUNK_REFS_DIR),
        move |d| blobs.path(d),
    ))
}

/// Puts a base image's layer blobs into the store (from its layout or registry), verifying
/// each against its digest.
pub fn import_base(store: &Store, img: &image::BaseImage) -> Result<(), BuildError> {
    import_base_fed(store, img, None)
}

/// [`import_base`], showing a registry base's layer bytes to `feeds` as they download (the
/// reader of a fresh base works meanwhile: `base_scan`).
pub(crate) fn import_base_fed(
    store: &Store,
    img: &image::BaseImage,
    mut feeds: Option<&mut super::base_scan::Feeds>,
) -> Result<(), BuildError> {
    for (i, l) in img.layers.iter().enumerate() {
        if store.blobs().contains(&l.digest) {
            continue;
        }
        let result = match &img.source {
            image::BlobSource::Layout(dir) => {
                let src = dir.join("blobs/sha256").join(l.digest.hex());
                store
                    .blobs()
                    .import_file(&src, Some(&l.digest))
                    .map(|_| ())
                    .map_err(image::BlobFetchError::from)
            }
            image::BlobSource::Fetcher(f) => match feeds.as_deref_mut() {
                Some(feeds) => f.fetch_observed(l, store.blobs(), &mut feeds.observer(i)),
                None => f.fetch(l, store.blobs()),
            },
        };
        result.map_err(|source| BuildError::BaseBlob {
            digest: l.digest,
            origin: img.source.origin(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// The diff_id of the layer the step at `loc` made the last time it ran.
pub(crate) fn previous_layer(store: &Store, loc: &Key) -> Result<Option<Digest>, StoreError> {
    let Some(prev) = store.index().get_last_at(loc)? else {
        return Ok(None);
    };
    Ok(store
        .index()
        .get_step(&prev)?
        .and_then(|r| r.layer)
        .map(|l| l.diff_id))
}
