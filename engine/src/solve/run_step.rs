//! Executing a RUN step: parent layers as overlay lower dirs (unpacked once per diff_id), the
//! command in the sandbox, the upper dir captured as a canonical layer.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use strata_cache::{Digest, LayerRecord, Store};

use crate::context::Context;
use crate::image::LayerDesc;
use crate::layer;
use crate::plan::{Network, RunMountKind, RunStep};
use crate::sandbox::capture::{self, CaptureOptions};
use crate::sandbox::exec::{self, Mount, MountKind, RunOutcome, RunSpec};
use crate::sandbox::snapshot::Snapshots;
use crate::solve::copy::CopyEnv;
use crate::solve::keys::LayerForm;
use crate::solve::mounts::{self, PreparedSource};
use crate::solve::reuse;
use crate::solve::RunCost;
use crate::solve::{
    chunk_cache, BuildError, BuildOptions, Compressed, Event, Progress, StageResult,
};

/// Where a step's mounts come from.
pub(crate) struct Sources<'a> {
    pub ctx: &'a Context,
    /// A finished stage's result (`from=STAGE`).
    pub stage: &'a dyn Fn(usize) -> StageResult,
    /// Where the step's warnings go.
    pub progress: &'a dyn Progress,
    /// The bind mounts' sources, prepared for the key, in the order of the step's binds.
    pub binds: Vec<PreparedSource>,
}

/// A RUN that ran: its layer, how much of it was compressed, and (traced) what it observed.
pub(crate) struct Ran {
    pub layer: LayerRecord,
    pub counts: Compressed,
    pub trace: Option<reuse::Trace>,
    /// Where the time went (the read-set phase is the caller's).
    pub cost: RunCost,
}

/// Runs `run` over `layers` and captures its layer; `trace`: observe it for read-set reuse.
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute(
    store: &Store,
    run: &RunStep,
    env: &[String],
    layers: &[LayerDesc],
    similar: &HashMap<Digest, Digest>,
    opts: &BuildOptions,
    tmp: &Path,
    sources: Sources<'_>,
    trace: bool,
) -> Result<Ran, BuildError> {
    let t0 = Instant::now();
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
    // The same merged view, in the form overlay accepts (no repeated or empty lower dirs).
    let mounted = crate::sandbox::overlay_lowers(&lowers);
    let t_rootfs = t0.elapsed();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { path, source }
    };
    // How mount sources are copied (as a `COPY --link` of them would be).
    let cenv = CopyEnv {
        store,
        shared: &opts.shared,
        ctx: sources.ctx,
        form: LayerForm {
            compression: opts.compression.id(),
            source_date_epoch: opts.source_date_epoch,
        },
        no_cache: false,
        spool: tmp,
    };
    let cache_root = strata_cache::Area::CacheMounts.path(store.root());
    let mut cache_mounts = Vec::new();
    let mut spec_mounts = Vec::new();
    for m in &run.cache_mounts {
        let d = store.use_cache_mount(blake3::hash(m.id.as_bytes()).to_hex().as_str())?;
        if !d.exists() {
            std::fs::create_dir_all(&cache_root).map_err(io(&cache_root))?;
            match &m.from {
                // A new cache starts as a copy of `source` of that stage or image (BuildKit).
                Some((from, source)) => {
                    let p = mounts::prepare_source(&cenv, from, source, sources.stage)?;
                    let t = tempfile::Builder::new()
                        .prefix(".seed-")
                        .tempdir_in(&cache_root)
                        .map_err(io(&cache_root))?;
                    let (at, is_dir) = p.materialize(&cenv, t.path())?;
                    if !is_dir {
                        return Err(BuildError::Io {
                            path: d,
                            source: std::io::Error::other(format!(
                                "RUN --mount=type=cache: from= source `{source}` is not a directory"
                            )),
                        });
                    }
                    // Another build may have made it meanwhile: theirs is as good.
                    if std::fs::rename(&at, &d).is_err() && !d.is_dir() {
                        std::fs::rename(&at, &d).map_err(io(&d))?;
                    }
                    if crate::sandbox::userns::current().is_some() {
                        let _ = exec::remove_tree(t.path());
                    }
                }
                None => std::fs::create_dir_all(&d).map_err(io(&d))?,
            }
            use std::os::unix::fs::PermissionsExt;
            if let Some(mode) = m.mode {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
                    .map_err(io(&d))?;
            }
            if m.uid.is_some() || m.gid.is_some() {
                std::os::unix::fs::chown(&d, m.uid, m.gid).map_err(io(&d))?;
            }
        }
        if m.readonly {
            spec_mounts.push(Mount {
                target: m.target.clone(),
                kind: MountKind::Bind {
                    source: d,
                    dir: true,
                    rw: false,
                },
            });
        } else {
            cache_mounts.push((d, m.target.clone()));
        }
    }
    let mut binds = sources.binds.into_iter();
    // The first SSH agent mounted, for `SSH_AUTH_SOCK` (as BuildKit sets it).
    let mut ssh_sock: Option<String> = None;
    // `type=secret,env=VAR`: `VAR=secret`, added to the command's environment only.
    let mut secret_env: Vec<String> = Vec::new();
    for (i, m) in run.mounts.iter().enumerate() {
        let kind = match &m.kind {
            RunMountKind::Bind { rw, .. } => {
                let p = binds
                    .next()
                    .expect("a prepared source for every bind mount");
                let at = dir.path().join(format!("mount-{i}"));
                std::fs::create_dir(&at).map_err(io(&at))?;
                let (source, is_dir) = p.materialize(&cenv, &at)?;
                MountKind::Bind {
                    source,
                    dir: is_dir,
                    rw: *rw,
                }
            }
            RunMountKind::Tmpfs { size } => MountKind::Tmpfs { size: *size },
            RunMountKind::Ssh { id, required } => match opts.run.ssh.get(id) {
                Some(socket) => {
                    if ssh_sock.is_none() {
                        ssh_sock = Some(m.target.clone());
                    }
                    MountKind::Bind {
                        source: socket.clone(),
                        dir: false,
                        rw: true,
                    }
                }
                None if *required => return Err(BuildError::MissingSsh { id: id.clone() }),
                None => continue,
            },
            RunMountKind::Secret {
                id,
                file,
                env: var,
                required,
                mode,
                uid,
                gid,
            } => match opts.run.secrets.get(id) {
                Some(secret) => {
                    if let Some(v) = var {
                        // Only in the process environment: never in the key or the config.
                        let value = String::from_utf8(secret.0.clone())
                            .map_err(|_| BuildError::SecretNotText { id: id.clone() })?;
                        secret_env.push(format!("{v}={value}"));
                    }
                    if !file {
                        continue;
                    }
                    MountKind::Secret {
                        data: secret.0.clone(),
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    }
                }
                None if *required => return Err(BuildError::MissingSecret { id: id.clone() }),
                // BuildKit: an optional secret that was not given is not mounted.
                None => continue,
            },
        };
        spec_mounts.push(Mount {
            target: m.target.clone(),
            kind,
        });
    }
    let network = mounts::network_of(run, &opts.run);
    let mut env = env.to_vec();
    for e in secret_env {
        let name = e.split('=').next().unwrap_or_default().to_string();
        env.retain(|x| x.split('=').next() != Some(name.as_str()));
        env.push(e);
    }
    if let Some(sock) = ssh_sock {
        if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
            env.push(format!("SSH_AUTH_SOCK={sock}"));
        }
    }
    let spec = RunSpec {
        lowers: mounted.clone(),
        upper,
        work,
        argv: run.argv.clone(),
        env,
        cwd: run.workdir.clone(),
        user: run.user.clone(),
        network: match network {
            Network::None => exec::Network::None,
            Network::Host => exec::Network::Host,
        },
        hostname: "strata".into(),
        cache_mounts,
        mounts: spec_mounts,
        limits: opts.run.limits,
        // The step's output is the build log: it goes to stderr with the progress.
        output: exec::Output::Stderr,
        trace,
    };
    if let Some(w) = crate::sandbox::userns::single_id_warning() {
        sources.progress.event(&Event::Warning(w));
    }
    let t_mounts = t0.elapsed() - t_rootfs;
    let result = run_and_capture(store, run, &spec, &mounted, opts).map(|mut r| {
        r.cost.rootfs = t_rootfs;
        r.cost.mounts = t_mounts;
        r
    });
    // Rootless, the upper dir can hold files of other container ids and read-only
    // directories: only container root (in the user namespace) can remove those.
    if crate::sandbox::userns::current().is_some() {
        if let Err(e) = exec::remove_tree(dir.path()) {
            sources.progress.event(&Event::Warning(format!(
                "could not remove `{}`: {e}",
                dir.path().display()
            )));
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
) -> Result<Ran, BuildError> {
    let (upper, lowers) = (&spec.upper, lowers);
    let t0 = Instant::now();
    let (outcome, tail, observed) = exec::run_observed(spec)?;
    let t_command = t0.elapsed();
    let command = run.argv.last().cloned().unwrap_or_default();
    let without_network = spec.network == exec::Network::None;
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
                without_network,
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
    Ok(Ran {
        layer: rec,
        counts,
        trace: observed.map(|o| reuse::Trace::new(spec, o)),
        cost: RunCost {
            command: t_command,
            layer: t0.elapsed() - t_command,
            ..RunCost::default()
        },
    })
}
