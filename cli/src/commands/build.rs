//! `strata build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use strata_cache::{Store, TagRecord};
use strata_engine::context::{self, Context};
use strata_engine::export::{self, ArchiveKind, ImageName};
use strata_engine::image::{Platform, MEDIA_TYPE_MANIFEST};
use strata_engine::layer::Compression;
use strata_engine::lock::{LockMode, LockedImages};
use strata_engine::plan::{self, PlanRequest};
use strata_engine::remote_cache::RemoteSteps;
use strata_engine::solve::{self, BuildOptions};

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

/// `--memory SIZE`, `--cpus N`: caps per RUN step (engine/src/sandbox/limits.rs).
pub(crate) fn limits_of(
    a: &crate::args::BuildArgs,
) -> anyhow::Result<strata_engine::sandbox::ResourceLimits> {
    let memory = a
        .memory
        .as_deref()
        .map(strata_engine::sandbox::ResourceLimits::parse_memory)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--memory {e}\nhint: a size such as 512m or 2g"))?;
    let cpu_quota_us = a
        .cpus
        .as_deref()
        .map(strata_engine::sandbox::ResourceLimits::parse_cpus)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--cpus {e}"))?;
    Ok(strata_engine::sandbox::ResourceLimits {
        memory,
        cpu_quota_us,
    })
}

/// `--network none|host` (`default` is none, as for `docker build`).
pub(crate) fn network_of(v: &str) -> anyhow::Result<plan::Network> {
    match v {
        "none" | "default" => Ok(plan::Network::None),
        "host" => Ok(plan::Network::Host),
        _ => bail!(
            "--network `{v}`: unknown network\nhint: use --network none (the default: RUN steps see only loopback) or --network host"
        ),
    }
}

/// `--secret id=ID,src=FILE | id=ID,env=VAR` (as `docker buildx build`; `source=` for
/// `src=`, and `type=file|env` accepted). Without src or env, the variable named ID.
pub(crate) fn secrets_of(
    raw: &[String],
    env: Env,
) -> anyhow::Result<BTreeMap<String, solve::Secret>> {
    let mut out = BTreeMap::new();
    for spec in raw {
        let mut id = None;
        let mut src = None;
        let mut var = None;
        let mut ty = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("env", v)) => var = Some(v.to_string()),
                Some(("type", v)) if v == "file" || v == "env" => ty = Some(v.to_string()),
                _ => bail!(
                    "--secret `{spec}`: unknown option `{part}`\nhint: write --secret id=ID,src=FILE or --secret id=ID,env=VAR"
                ),
            }
        }
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            bail!("--secret `{spec}` has no id\nhint: write --secret id=ID,src=FILE or --secret id=ID,env=VAR");
        };
        // `type=env,src=VAR` names a variable, as in buildx.
        if ty.as_deref() == Some("env") && var.is_none() {
            var = src.take();
        }
        let bytes = match (src, var) {
            (Some(_), Some(_)) => bail!("--secret `{spec}`: give src= or env=, not both"),
            (Some(f), None) => std::fs::read(&f).with_context(|| {
                format!(
                    "--secret id={id}: reading `{f}`\nhint: src= names a file holding the secret"
                )
            })?,
            (None, v) => {
                let v = v.unwrap_or_else(|| id.clone());
                match env(&v) {
                    Some(x) => x.into_bytes(),
                    None => bail!(
                        "--secret id={id}: the environment variable `{v}` is not set\nhint: export it, or give the secret from a file with src=FILE"
                    ),
                }
            }
        };
        if out.insert(id.clone(), solve::Secret(bytes)).is_some() {
            bail!("--secret id={id} is given twice");
        }
    }
    Ok(out)
}

/// `--ssh default | ID=SOCKET[,SOCKET…]` (as `docker buildx build`): `default` alone is
/// `$SSH_AUTH_SOCK`. Only agent sockets: buildx also takes private key files, which would need
/// an agent of strata's own.
pub(crate) fn ssh_of(raw: &[String], env: Env) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = BTreeMap::new();
    for spec in raw {
        let (id, path) = match spec.split_once('=') {
            Some((id, p)) => (id.to_string(), p.to_string()),
            None => match env("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
                Some(p) => (spec.clone(), p),
                None => bail!(
                    "--ssh {spec}: SSH_AUTH_SOCK is not set\nhint: start an agent (`eval $(ssh-agent)`, `ssh-add`) or name its socket: --ssh {spec}=SOCKET"
                ),
            },
        };
        if id.is_empty() {
            bail!("--ssh `{spec}` has no id\nhint: write --ssh default or --ssh ID=SOCKET");
        }
        if path.contains(',') {
            bail!("--ssh {id}: several paths for one id are not supported yet\nhint: give one agent socket");
        }
        let abs = std::fs::canonicalize(&path)
            .with_context(|| format!("--ssh {id}: `{path}`\nhint: name an SSH agent socket"))?;
        let meta = std::fs::metadata(&abs).with_context(|| format!("--ssh {id}: `{path}`"))?;
        if !meta.file_type().is_socket() {
            bail!(
                "--ssh {id}: `{path}` is not a socket: private key files are not supported yet\nhint: load the key into an agent (`ssh-add KEY`) and pass --ssh {id}=$SSH_AUTH_SOCK"
            );
        }
        if out.insert(id.clone(), abs).is_some() {
            bail!("--ssh {id} is given twice");
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
    pub config_digest: String,
    pub manifest_size: u64,
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
        .unwrap_or_else(|| super::default_dockerfile(&a.context));
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
    if let Some(f) = &a.iidfile {
        // The image ID as docker and buildx write it: the config digest, no newline.
        std::fs::write(f, &built.config_digest)
            .with_context(|| format!("writing --iidfile `{}`", f.display()))?;
    }
    if let Some(f) = &a.metadata_file {
        let json = serde_json::to_vec_pretty(&metadata(&built, &a.tags))?;
        std::fs::write(f, json)
            .with_context(|| format!("writing --metadata-file `{}`", f.display()))?;
    }
    println!("{}", built.manifest_digest);
    Ok(0)
}

/// `--metadata-file`: the keys docker buildx writes for an image build. `image.name` (the tags
/// as stored, `NAME:TAG`, comma-separated as buildx) only when the image is named.
fn metadata(built: &Built, tags: &[String]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert(
        "containerimage.config.digest".into(),
        built.config_digest.clone().into(),
    );
    m.insert(
        "containerimage.descriptor".into(),
        serde_json::json!({
            "mediaType": MEDIA_TYPE_MANIFEST,
            "digest": built.manifest_digest,
            "size": built.manifest_size,
        }),
    );
    m.insert(
        "containerimage.digest".into(),
        built.manifest_digest.clone().into(),
    );
    let names: Vec<String> = tags
        .iter()
        .map(|t| {
            ImageName::parse(t)
                .map(|n| n.full())
                .unwrap_or_else(|_| t.clone())
        })
        .collect();
    if !names.is_empty() {
        m.insert("image.name".into(), names.join(",").into());
    }
    serde_json::Value::Object(m)
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
            let p = Platform::parse(p)?;
            if p.os != host.os || p.architecture != host.architecture {
                bail!("building for platform {p} is not supported yet (this host builds {host})");
            }
            p
        }
        None => host,
    };
    let network = network_of(&a.network)?;
    let secrets = secrets_of(&a.secrets, env)?;
    let ssh = ssh_of(&a.ssh, env)?;
    let limits = limits_of(a)?;
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
    if a.file.is_none() && !dockerfile.exists() {
        bail!(
            "no Dockerfile in the build context: neither `{}` nor `{}` exists\nhint: pass -f PATH, or give the context directory that holds the Dockerfile",
            context_dir.join("Dockerfile").display(),
            context_dir.join("Containerfile").display()
        );
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
    if let Err(p) = solve::check_sources(&plan, &ctx) {
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
        run: solve::RunOptions {
            network,
            secrets,
            ssh,
            limits,
        },
        fetch: super::fetch_options(Some(lock.clone())),
        // One for the process: the images of a workspace share step locks and parent trees.
        shared: {
            static SHARED: std::sync::OnceLock<std::sync::Arc<solve::Shared>> =
                std::sync::OnceLock::new();
            SHARED.get_or_init(Default::default).clone()
        },
    };
    let started = std::time::Instant::now();
    let out = solve::run(&plan, &ctx, store, &opts, &reporter)?;
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
        config_digest: img.config_digest.to_string(),
        manifest_size: img.manifest.len() as u64,
        executed: out.steps_executed,
        cached: out.steps_cached,
        seconds: started.elapsed().as_secs_f64(),
        steps: out.steps,
        outputs: written,
    })
}
