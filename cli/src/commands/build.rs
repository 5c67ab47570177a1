//! `strata build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use strata_cache::{Store, TagRecord};
use strata_engine::build::{self, BuildOptions};
use strata_engine::context::{self, Context};
use strata_engine::export::{self, ArchiveKind, ImageName};
use strata_engine::image::{Platform, MEDIA_TYPE_MANIFEST};
use strata_engine::layer::Compression;
use strata_engine::lock::{LockMode, LockedImages};
use strata_engine::plan::{self, PlanRequest};
use strata_engine::remote_cache::RemoteSteps;

use crate::args::BuildArgs;
use crate::progress::Reporter;

pub(crate) enum Output {
    OciDir(PathBuf),
    Archive(ArchiveKind, PathBuf),
    Registry(strata_engine::registry::Reference),
}

pub(crate) fn parse_output(spec: &str) -> anyhow::Result<Output> {
    let mut kv = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("invalid --output `{spec}`: expected type=…,dest=…"))?;
        kv.insert(k.trim(), v.trim());
    }
    let dest = kv.get("dest").map(PathBuf::from);
    let need_dest = || {
        dest.clone()
            .with_context(|| format!("--output `{spec}` needs dest=PATH"))
    };
    // Each destination is checked here, before anything is built or written (issue 18): the
    // writers check again, for what changed meanwhile.
    let checked = |e: export::ExportError| anyhow::anyhow!("--output `{spec}`: {e}");
    Ok(match kv.get("type").copied() {
        Some("oci") => {
            let d = need_dest()?;
            export::check_oci_dir(&d).map_err(checked)?;
            Output::OciDir(d)
        }
        Some(t @ ("oci-archive" | "docker-archive" | "docker")) => {
            let d = need_dest()?;
            export::check_archive_dest(&d).map_err(checked)?;
            let kind = if t == "oci-archive" {
                ArchiveKind::Oci
            } else {
                ArchiveKind::Docker
            };
            Output::Archive(kind, d)
        }
        Some("registry") => {
            let name = kv
                .get("name")
                .with_context(|| format!("--output `{spec}` needs name=REF (e.g. type=registry,name=registry.example/app:1)"))?;
            Output::Registry(
                strata_engine::registry::Reference::parse(name)
                    .map_err(strata_engine::registry::RegistryError::from)
                    .with_context(|| format!("--output `{spec}`"))?,
            )
        }
        Some(t @ ("image" | "local" | "tar")) => {
            bail!("--output type={t} is not supported yet (supported: oci, oci-archive, docker-archive, registry)")
        }
        Some(t) => {
            bail!("unknown --output type `{t}` (supported: oci, oci-archive, docker-archive, registry)")
        }
        None => bail!("--output `{spec}` needs type=oci|oci-archive|docker-archive|registry"),
    })
}

/// Looks up an environment variable; [`process_env`] reads this process's environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as an [`Env`].
pub(crate) fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

pub(crate) fn source_date_epoch(flag: Option<u64>) -> anyhow::Result<u64> {
    source_date_epoch_in(flag, &process_env)
}

fn source_date_epoch_in(flag: Option<u64>, env: Env) -> anyhow::Result<u64> {
    if let Some(v) = flag {
        return Ok(v);
    }
    match env("SOURCE_DATE_EPOCH") {
        Some(v) if !v.is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds")),
        _ => Ok(0),
    }
}

pub(crate) fn build_args_of(raw: &[String], env: Env) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("invalid --build-arg `{a}`: expected KEY=VALUE"),
            // `--build-arg KEY` takes the value from the environment, as docker does; unset
            // means the argument is not given at all.
            None => {
                if let Some(v) = env(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// What [`build_image`] builds: the options of `strata build`, with the store, the context,
/// the Dockerfile and the environment (for `SOURCE_DATE_EPOCH` and `--build-arg KEY`) given
/// explicitly rather than taken from `args` and the process.
pub(crate) struct BuildRequest<'a> {
    pub store_dir: &'a Path,
    pub context_dir: &'a Path,
    pub dockerfile: &'a Path,
    pub env: Env<'a>,
    pub args: &'a BuildArgs,
    /// An already open store (a workspace build shares one); else `store_dir` is opened.
    pub store: Option<&'a Store>,
    /// Prefix for progress lines (the image name in a workspace build).
    pub label: Option<&'a str>,
    /// The workspace's lock (shared by its images); `None`: the lock beside the Dockerfile,
    /// written after a successful build.
    pub lock: Option<Arc<LockedImages>>,
    /// Imported caches shared by a workspace's images; `None`: `--cache-from` is read here.
    pub remote: Option<Arc<dyn RemoteSteps>>,
    /// Export `--cache-to` after the build (a workspace exports all its images' steps at once).
    pub export_cache: bool,
}

/// What [`build_image`] made: the manifest digest and where each `--output` was written.
pub(crate) struct Built {
    pub manifest_digest: String,
    pub executed: usize,
    pub cached: usize,
    pub seconds: f64,
    /// Every step of the build, for a workspace's `--cache-to`.
    pub steps: Vec<(
        strata_engine::plan::key::Key,
        Option<strata_cache::LayerRecord>,
    )>,
    #[allow(dead_code)] // `strata build` only prints the digest
    pub outputs: Vec<PathBuf>,
}

pub fn run(store_dir: &Path, a: BuildArgs) -> anyhow::Result<i32> {
    let dockerfile = a
        .file
        .clone()
        .unwrap_or_else(|| a.context.join("Dockerfile"));
    let built = build_image(&BuildRequest {
        store_dir,
        context_dir: &a.context,
        dockerfile: &dockerfile,
        env: &process_env,
        args: &a,
        store: None,
        label: None,
        lock: None,
        remote: None,
        export_cache: true,
    })?;
    println!("{}", built.manifest_digest);
    Ok(0)
}

/// The whole of `strata build` but printing the digest.
pub(crate) fn build_image(req: &BuildRequest) -> anyhow::Result<Built> {
    let (a, env) = (req.args, req.env);
    let sde = source_date_epoch_in(a.source_date_epoch, env)?;
    let sde_explicit =
        a.source_date_epoch.is_some() || env("SOURCE_DATE_EPOCH").is_some_and(|v| !v.is_empty());
    let compression: Compression = a
        .compression
        .parse()
        .map_err(|e| anyhow::anyhow!("--compression: {e}"))?;
    let outputs = a
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names = a
        .tags
        .iter()
        .map(|t| ImageName::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let host = Platform::host();
    let platform = match &a.platform {
        Some(p) => {
            let p = Platform::parse(p).map_err(anyhow::Error::msg)?;
            if p.os != host.os || p.architecture != host.architecture {
                bail!("building for platform {p} is not supported yet (this host builds {host})");
            }
            p
        }
        None => host,
    };
    let jobs = a.jobs.unwrap_or_else(super::cpus).max(1);
    // Hashing and compression use this pool; the output never depends on its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build_global();

    let context_dir = std::fs::canonicalize(req.context_dir)
        .with_context(|| format!("build context `{}`", req.context_dir.display()))?;
    if !context_dir.is_dir() {
        bail!(
            "build context `{}` is not a directory",
            req.context_dir.display()
        );
    }
    let dockerfile = req.dockerfile.to_path_buf();
    if dockerfile.as_os_str() == "-" {
        bail!("reading the Dockerfile from stdin is not supported yet");
    }
    let source = super::read_dockerfile(&context_dir, &dockerfile)?;
    // Opened before planning: registry bases keep their manifests and configs in the store.
    let opened;
    let store = match req.store {
        Some(s) => s,
        None => {
            opened = super::open_store(req.store_dir)?;
            &opened
        }
    };
    let mode = if a.locked {
        LockMode::Locked
    } else {
        LockMode::Use
    };
    // Image references resolve through the lock (engine/src/lock.rs): the workspace's (this
    // image resolving `oci-layout://` in its own context), or the one beside the Dockerfile.
    let resolver = super::image_resolver(&context_dir, store)?;
    let (lock, images, own_lock) = match &req.lock {
        Some(shared) => (
            shared.clone(),
            Arc::new(shared.with_resolver(resolver)),
            false,
        ),
        None => {
            let dir = match dockerfile.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let l = super::lock::open(&dir, resolver, mode)?;
            (l.clone(), l, true)
        }
    };
    let plan = plan::plan(&PlanRequest {
        dockerfile_name: dockerfile.display().to_string(),
        source: source.clone(),
        context_dir: context_dir.clone(),
        build_args: build_args_of(&a.build_args, env)?,
        target: a.target.clone(),
        platform,
        images: Some(images.clone()),
    })?;
    lock.absorb(&images)?;
    let ignore = strata_engine::lock::exclude_lock_file(
        context::load_ignore(&context_dir, &dockerfile)?,
        &context_dir,
        lock.path(),
    );
    let ctx = Context::open(&context_dir, ignore)?;
    // Every COPY/ADD source must resolve before anything is built.
    if let Err(p) = build::check_sources(&plan, &ctx) {
        let mut d = strata_engine::frontend::Diagnostic::new(
            &dockerfile.display().to_string(),
            &source,
            p.span,
            p.error.to_string(),
        );
        if let Some(h) = p.error.hint() {
            d = d.with_hint(h);
        }
        return Err(d.into());
    }

    let cache_targets = super::shared_cache::check_targets(&a.cache_to)?;
    let remote = match &req.remote {
        Some(r) => Some(r.clone()),
        None => super::shared_cache::import(&a.cache_from, store.blobs())?,
    };
    let reporter = Reporter::new(a.progress, a.explain).with_label(req.label);
    let dockerfile_abs = std::fs::canonicalize(&dockerfile).unwrap_or(dockerfile.clone());
    let opts = BuildOptions {
        compression,
        source_date_epoch: sde,
        no_cache: a.no_cache,
        jobs,
        explain_scope: format!("{}\0{}", context_dir.display(), dockerfile_abs.display()),
        dockerfile: dockerfile.display().to_string(),
        sde_env: sde_explicit.then_some(sde),
        explain: a.explain,
        remote,
    };
    let started = std::time::Instant::now();
    let out = build::run(&plan, &ctx, store, &opts, &reporter)?;
    super::record_base_origins(store, &plan);
    let img = &out.image;
    for n in &names {
        store.index().put_tag(
            &n.full(),
            &TagRecord {
                manifest: img.manifest_digest,
                config: img.config_digest,
                media_type: MEDIA_TYPE_MANIFEST.to_string(),
            },
        )?;
    }
    let mut written = Vec::new();
    for o in &outputs {
        match o {
            Output::OciDir(d) => {
                written.push(d.clone());
                export::write_oci_dir(store.blobs(), img, &names, d)?;
                reporter.exported("oci", d);
            }
            Output::Archive(kind, f) => {
                written.push(f.clone());
                export::write_archive(store.blobs(), img, &names, *kind, f, sde)?;
                reporter.exported(
                    if *kind == ArchiveKind::Oci {
                        "oci-archive"
                    } else {
                        "docker-archive"
                    },
                    f,
                );
            }
            Output::Registry(r) => {
                super::push::push_image(store, &img.manifest_digest, r)?;
            }
        }
    }
    if own_lock {
        super::lock::save_after_build(&lock)?;
    }
    if req.export_cache && !cache_targets.is_empty() {
        super::shared_cache::export(&cache_targets, &out.steps, store.blobs())?;
    }
    reporter.finish(out.steps_executed, out.steps_cached, started.elapsed());
    Ok(Built {
        manifest_digest: img.manifest_digest.to_string(),
        executed: out.steps_executed,
        cached: out.steps_cached,
        seconds: started.elapsed().as_secs_f64(),
        steps: out.steps,
        outputs: written,
    })
}
