//! What a RUN step sees beyond its rootfs: `RUN --mount` sources, and the build-wide options of
//! RUN steps (`strata build --network`, `--secret`).
//!
//! A bind mount's source (a path of the context, a stage or an image) is made as a COPY of it
//! would be — the same resolution, `.dockerignore`, hashing and content key — then written to a
//! private directory for the step: so what it shows enters the RUN key by content, `rw` writes
//! land in that copy and are thrown away, and nothing on the host is ever mounted into the
//! sandbox. The same copy seeds a new cache mount from `from=STAGE,source=…`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::image::LayerDesc;
use crate::layer;
use crate::plan::key::Key;
use crate::plan::{self, CopyFrom, CopySource, CopySpec, RunStep};
use crate::solve::copy::{self, CopyEnv, FromSource};
use crate::solve::keys;
use crate::solve::{BuildError, StageResult};

/// Build-wide options of RUN steps.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The network of a RUN without `--network` (`strata build --network`; default: none).
    pub network: plan::Network,
    /// `strata build --secret id=ID,…`: the secrets RUN steps may mount, by id.
    pub secrets: BTreeMap<String, Secret>,
    /// `strata build --ssh ID=SOCKET`: SSH agent sockets (absolute paths) by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `strata build --memory`, `--cpus`: per-step caps (never in a key).
    pub limits: crate::sandbox::ResourceLimits,
    /// `strata build --no-readset`: RUN steps are neither traced nor reused by read set
    /// (docs/read-set.md).
    pub no_readset: bool,
}

/// A secret's bytes. Never printed, never in a key, a layer or a record.
#[derive(Clone)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The network a RUN step gets: its own `--network`, else the build's.
pub(crate) fn network_of(run: &RunStep, opts: &RunOptions) -> plan::Network {
    run.network.unwrap_or(opts.network)
}

/// A mount source resolved and hashed (a COPY of it to `/src`, prepared but not built).
pub(crate) struct PreparedSource {
    pub key: Key,
    spec: CopySpec,
    prep: copy::PreparedCopy,
    /// The stage's or image's key and layers (`FromSource::Rootfs`), `None`: the context.
    rootfs: Option<(Key, Vec<LayerDesc>)>,
}

/// Where the copy of a source puts it inside the directory it is written to.
const SRC: &str = "src";

/// Resolves and hashes `source` of `from`; `stage` gives a finished stage's result.
pub(crate) fn prepare_source(
    env: &CopyEnv<'_>,
    from: &CopyFrom,
    source: &str,
    stage: &dyn Fn(usize) -> StageResult,
) -> Result<PreparedSource, BuildError> {
    let rootfs = match from {
        CopyFrom::Context => None,
        CopyFrom::Stage(i) => {
            let r = stage(*i);
            Some((r.key, r.layers.clone()))
        }
        CopyFrom::Image(img) => {
            super::import_base(env.store, img)?;
            Some((keys::image(&img.manifest_digest, None), img.layers.clone()))
        }
    };
    let src = source.trim_start_matches('/');
    let spec = CopySpec {
        add: false,
        from: from.clone(),
        sources: vec![CopySource::Path(match (&rootfs, src.is_empty()) {
            (_, false) => src.to_string(),
            (None, true) => ".".to_string(),
            (Some(_), true) => "/".to_string(),
        })],
        dest: format!("/{SRC}"),
        chown: None,
        chmod: None,
        // Independent of any parent rootfs: the copy lands in an empty directory.
        link: true,
        excludes: Vec::new(),
        parents: false,
    };
    let fs = match &rootfs {
        None => FromSource::Context,
        Some((key, layers)) => FromSource::Rootfs { key: *key, layers },
    };
    // The memo of parent facts is never consulted: a `--link` copy reads no parent.
    let env = CopyEnv {
        no_cache: false,
        ..*env
    };
    let prep = copy::prepare(&env, &spec, &keys::mount_parent(), &[], &fs)?;
    Ok(PreparedSource {
        key: prep.key,
        spec,
        prep,
        rootfs,
    })
}

impl PreparedSource {
    /// The context files the source reads (none for a stage or image source): the
    /// provenance's context digest counts them as a COPY's.
    pub(crate) fn context_files(&self) -> Vec<crate::attest::provenance::ContextFile> {
        match self.rootfs {
            None => self.prep.context_files(),
            Some(_) => Vec::new(),
        }
    }

    /// Writes the source into `dir` (an empty directory) and returns its path there and
    /// whether it is a directory.
    pub(crate) fn materialize(
        mut self,
        env: &CopyEnv<'_>,
        dir: &Path,
    ) -> Result<(PathBuf, bool), BuildError> {
        let (sde, spool) = (env.form.source_date_epoch, env.spool);
        let fs = match &self.rootfs {
            None => FromSource::Context,
            Some((key, layers)) => FromSource::Rootfs { key: *key, layers },
        };
        let entries = copy::build_entries(env, &self.spec, &mut self.prep, &[], &fs)?;
        let entries = layer::canonicalize(entries, sde)?;
        let tar_path = spool.join(format!("mount-{}.tar", hex::encode(&self.key[..8])));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Io { path, source }
        };
        let mut f = std::fs::File::create(&tar_path).map_err(io(&tar_path))?;
        layer::write_layer(&entries, layer::Compression::None, &mut f)?;
        drop(f);
        let tar = std::fs::File::open(&tar_path).map_err(io(&tar_path))?;
        let limits = crate::sandbox::Limits::default();
        let unpacked = match crate::sandbox::userns::current() {
            None => crate::sandbox::snapshot::unpack(tar, dir, limits),
            Some(ns) => crate::sandbox::exec::unpack_in_userns(ns, tar, dir, limits),
        };
        let _ = std::fs::remove_file(&tar_path);
        unpacked?;
        let at = dir.join(SRC);
        match std::fs::symlink_metadata(&at) {
            Ok(m) => Ok((at, m.is_dir())),
            // Nothing matched (an empty directory of the context): an empty directory.
            Err(_) => {
                std::fs::create_dir(&at).map_err(io(&at))?;
                Ok((at, true))
            }
        }
    }
}
