//! Executing a RUN step: parent layers as overlay lower dirs (unpacked once per diff_id), the
//! command in the sandbox, the upper dir captured as a canonical layer.

use std::collections::HashMap;
use std::path::Path;

use strata_cache::{Digest, LayerRecord, Store};

use crate::build::{chunk_cache, BuildError, BuildOptions, Compressed};
use crate::image::LayerDesc;
use crate::layer;
use crate::plan::{Network, RunStep};
use crate::sandbox::capture::{self, CaptureOptions};
use crate::sandbox::exec::{self, RunOutcome, RunSpec};
use crate::sandbox::snapshot::Snapshots;

pub(crate) fn execute(
    store: &Store,
    run: &RunStep,
    env: &[String],
    layers: &[LayerDesc],
    similar: &HashMap<Digest, Digest>,
    opts: &BuildOptions,
    tmp: &Path,
) -> Result<(LayerRecord, Compressed), BuildError> {
    let snaps = Snapshots::new(store.root()).with_scratch(store.scratch());
    let mut lowers = Vec::new();
    for l in layers {
        lowers.extend(snaps.ensure_stack(
            store.blobs(),
            &l.diff_id,
            &l.digest,
            &l.media_type,
            similar.get(&l.diff_id),
        )?);
    }
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(tmp)
        .map_err(|e| BuildError::Io {
            path: tmp.to_path_buf(),
            source: e,
        })?;
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    for d in [&upper, &work] {
        std::fs::create_dir(d).map_err(|e| BuildError::Io {
            path: d.clone(),
            source: e,
        })?;
    }
    // The container's `/` is the upper dir's root (overlay shows the upper's attributes): it
    // gets the top layer's mode, and SOURCE_DATE_EPOCH as its times (a snapshot's own root
    // time is its last use, for gc), never when this directory was made.
    if let Some(top) = lowers.last() {
        root_like(top, &upper, opts.source_date_epoch).map_err(|e| BuildError::Io {
            path: upper.clone(),
            source: e,
        })?;
    }
    let cache_root = store.root().join("cache-mounts");
    let mut cache_mounts = Vec::new();
    for m in &run.cache_mounts {
        let d = cache_root.join(blake3::hash(m.id.as_bytes()).to_hex().as_str());
        std::fs::create_dir_all(&d).map_err(|e| BuildError::Io {
            path: d.clone(),
            source: e,
        })?;
        cache_mounts.push((d, m.target.clone()));
    }
    let spec = RunSpec {
        lowers: lowers.clone(),
        upper,
        work,
        argv: run.argv.clone(),
        env: env.to_vec(),
        cwd: run.workdir.clone(),
        user: run.user.clone(),
        network: match run.network {
            Network::None => exec::Network::None,
            Network::Host => exec::Network::Host,
        },
        hostname: "strata".into(),
        cache_mounts,
        // The step's output is the build log: it goes to stderr with the progress.
        output: exec::Output::Stderr,
    };
    let result = run_and_capture(store, run, &spec, &lowers, opts);
    // Rootless, the upper dir can hold files of other container ids and read-only
    // directories: only container root (in the user namespace) can remove those.
    if crate::sandbox::userns::current().is_some() {
        if let Err(e) = exec::remove_tree(dir.path()) {
            eprintln!(
                "strata: warning: could not remove `{}`: {e}",
                dir.path().display()
            );
        }
    }
    drop(dir);
    result
}

/// Less free than this (or than [`FULL_FRACTION`] of the size) counts as full: a file system
/// out of space keeps a few blocks back (ext4's reserve is for root only, and overlay's copy-up
/// fails on the last ones), so exactly 0 is rarely seen.
const FULL_BELOW: u64 = 1 << 20;
const FULL_FRACTION: u64 = 200; // 0.5 %

/// Whether the file system of `upper` (in the store at `store_root`) is full, of space or of
/// inodes: a description naming the store and what is free, for the error of a failed RUN.
fn full_file_system(upper: &Path, store_root: &Path) -> Option<String> {
    let st = rustix::fs::statvfs(upper).ok()?;
    let block = st.f_frsize.max(1);
    let (free, total) = (st.f_bavail * block, st.f_blocks * block);
    let size = strata_cache::gc::format_size;
    if free < FULL_BELOW.max(total / FULL_FRACTION) {
        return Some(format!(
            "`{}` has {} free of {}",
            store_root.display(),
            size(free),
            size(total)
        ));
    }
    if st.f_files > 0 && st.f_favail == 0 {
        return Some(format!(
            "`{}` has no free inodes (of {})",
            store_root.display(),
            st.f_files
        ));
    }
    None
}

/// Gives directory `dir` the permissions of directory `like`, and `epoch` as its times.
fn root_like(like: &Path, dir: &Path, epoch: u64) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(like)?.permissions().mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
    std::fs::File::open(dir)?.set_times(times)
}

fn run_and_capture(
    store: &Store,
    run: &RunStep,
    spec: &RunSpec,
    lowers: &[std::path::PathBuf],
    opts: &BuildOptions,
) -> Result<(LayerRecord, Compressed), BuildError> {
    let (upper, lowers) = (&spec.upper, lowers);
    let (outcome, tail) = exec::run_logged(spec)?;
    let command = run.argv.last().cloned().unwrap_or_default();
    let status = match outcome {
        RunOutcome::Exited(0) => None,
        RunOutcome::Exited(c) => Some(format!("exited with code {c}")),
        RunOutcome::Signaled(s) => Some(format!("was killed by signal {s}")),
    };
    if let Some(status) = status {
        // Looked at while the upper dir still holds what the command wrote.
        return Err(match full_file_system(upper, store.root()) {
            Some(detail) => BuildError::RunDiskFull {
                command,
                status,
                detail,
                output: tail.text(),
            },
            None => BuildError::RunFailed {
                command,
                status,
                output: tail.text(),
            },
        });
    }
    let exclude = exec::injected_paths(spec);
    let mut w = store.blobs().writer()?;
    let chunks = chunk_cache(store);
    let (diff_id, media_type, uncompressed_size, refs, counts) =
        match crate::sandbox::userns::current() {
            None => {
                let entries = capture::capture(&CaptureOptions {
                    upper,
                    lowers,
                    mtime: opts.source_date_epoch,
                    exclude: &exclude,
                    id_map: None,
                })?;
                let entries = layer::canonicalize(entries, opts.source_date_epoch)?;
                let out = layer::write_layer_cached(
                    &entries,
                    opts.compression,
                    &mut w,
                    Some(chunks.clone()),
                )?;
                (
                    out.diff_id,
                    out.media_type.to_string(),
                    out.uncompressed_size,
                    out.chunks,
                    Compressed {
                        compressed: out.compressed_raw,
                        reused: out.reused_raw,
                    },
                )
            }
            // Rootless: captured inside the user namespace, where container root can read every
            // file of the upper dir (a file of another container id with mode 0600 cannot be read
            // from outside) and stat shows container ids.
            Some(ns) => {
                let job = exec::CaptureJob {
                    upper: upper.clone(),
                    lowers: lowers.to_vec(),
                    mtime: opts.source_date_epoch,
                    exclude: exclude.clone(),
                    compression: match opts.compression {
                        layer::Compression::Gzip => "gzip",
                        layer::Compression::Zstd => "zstd",
                        layer::Compression::None => "none",
                    }
                    .into(),
                };
                let l = exec::capture_in_userns(ns, &job, &mut w)?;
                // The helper writes without the chunk cache: everything went through the compressor.
                let counts = Compressed {
                    compressed: l.uncompressed_size,
                    reused: 0,
                };
                (
                    l.diff_id,
                    l.media_type,
                    l.uncompressed_size,
                    Vec::new(),
                    counts,
                )
            }
        };
    let (digest, size) = w.commit()?;
    chunks.record(&digest, &refs);
    let rec = LayerRecord {
        diff_id,
        digest,
        size,
        media_type,
        uncompressed_size,
    };
    store
        .index()
        .put_layer(&diff_id, opts.compression.id(), &rec)?;
    Ok((rec, counts))
}
