//! Helpers shared by the command bodies (and only by them): the process environment, and the
//! `strata build` flags turned into a [`BuildRequest`]. Command modules import this module,
//! never each other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use strata_engine::export::ImageName;
use strata_engine::lock::LockMode;
use strata_engine::plan;
use strata_engine::registry::push::PushReport;
use strata_engine::registry::Reference;
use strata_engine::session::{self, BuildRequest, CacheSource, LockUse, Written};
use strata_engine::solve;

use crate::args::BuildArgs;

/// Looks up an environment variable; [`process_env`] reads this process's environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as an [`Env`].
pub(crate) fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

pub(crate) fn source_date_epoch(flag: Option<u64>) -> anyhow::Result<u64> {
    source_date_epoch_in(flag, &process_env)
}

pub(crate) fn source_date_epoch_in(flag: Option<u64>, env: Env) -> anyhow::Result<u64> {
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
pub(crate) fn limits_of(a: &BuildArgs) -> anyhow::Result<strata_engine::sandbox::ResourceLimits> {
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

/// The default for `-j/--jobs`: the number of CPUs.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The Dockerfile of `strata build`/`lock`: `-f`, else the default one of the context.
pub(crate) fn dockerfile_of(file: Option<&PathBuf>, context: &std::path::Path) -> PathBuf {
    file.cloned()
        .unwrap_or_else(|| session::default_dockerfile(context))
}

/// The request of `strata build` with these flags, reading `env` (for `SOURCE_DATE_EPOCH`,
/// `--build-arg KEY`, `--secret`, `--ssh`): the lock beside the Dockerfile, `--cache-from`
/// and `--cache-to` as given (a workspace replaces them with its shared ones).
pub(crate) fn build_request(a: &BuildArgs, env: Env) -> anyhow::Result<BuildRequest> {
    let vary = strata_engine::sandbox::vary::ENV;
    if env(vary).is_some() && !a.verify_child {
        anyhow::bail!(
            "{vary} is set: it is internal to `strata verify`, which uses it to vary what RUN \
             steps see (CPUs, host name, clocks), and a build with it would cache those \
             results\nhint: unset it (`env -u {vary} strata build …`)"
        );
    }
    let source_date_epoch = source_date_epoch_in(a.source_date_epoch, env)?;
    let source_date_epoch_given =
        a.source_date_epoch.is_some() || env("SOURCE_DATE_EPOCH").is_some_and(|v| !v.is_empty());
    let tags = a
        .tags
        .iter()
        .map(|t| ImageName::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let platforms = session::build::target_platforms(a.platform.as_deref())?;
    let run = solve::RunOptions {
        network: network_of(&a.network)?,
        secrets: secrets_of(&a.secrets, env)?,
        ssh: ssh_of(&a.ssh, env)?,
        limits: limits_of(a)?,
        no_readset: a.no_readset,
    };
    let jobs = a.jobs.unwrap_or_else(cpus).max(1);
    let mode = if a.locked {
        LockMode::Locked
    } else {
        LockMode::Use
    };
    Ok(BuildRequest {
        dockerfile: dockerfile_of(a.file.as_ref(), &a.context),
        dockerfile_named: a.file.is_some(),
        context_dir: a.context.clone(),
        build_args: build_args_of(&a.build_args, env)?,
        target: a.target.clone(),
        platforms,
        tags,
        outputs: a.outputs.clone(),
        compression: a.compression,
        source_date_epoch,
        source_date_epoch_given,
        no_cache: a.no_cache,
        explain: a.explain,
        jobs,
        run,
        lock: LockUse::BesideDockerfile(mode),
        cache_from: CacheSource::Specs(a.cache_from.clone()),
        cache_to: a.cache_to.clone(),
        provenance: a.provenance.and_then(|p| p.0),
        sbom: a.sbom.and_then(|p| p.0),
    })
}

/// What a push says on stderr.
pub(crate) fn pushed_line(target: &Reference, report: &PushReport) -> String {
    format!(
        "pushed {target}: {} blobs uploaded ({} chunked, {} bytes), {} mounted, {} already there",
        report.uploaded, report.chunked, report.bytes, report.mounted, report.skipped
    )
}

/// Says on stderr what each pushed output did (file outputs are progress events).
pub(crate) fn report_pushes(written: &[Written]) {
    for w in written {
        if let Written::Pushed { target, report } = w {
            eprintln!("{}", pushed_line(target, report));
        }
    }
}

/// Reads a PEM signing key (`--key`, `--sign-key`); an unsupported one says what to run.
pub(crate) fn signing_key(
    path: &std::path::Path,
) -> anyhow::Result<strata_engine::sign::SigningKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key `{}`", path.display()))?;
    strata_engine::sign::key::signing_key(&pem).map_err(|e| key_error(path, &e))
}

/// Reads a PEM public key (`verify-signature --key`).
pub(crate) fn verifying_key(
    path: &std::path::Path,
) -> anyhow::Result<strata_engine::sign::VerifyingKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key `{}`", path.display()))?;
    strata_engine::sign::key::verifying_key(&pem).map_err(|e| key_error(path, &e))
}

fn key_error(path: &std::path::Path, e: &strata_engine::sign::key::KeyError) -> anyhow::Error {
    match e.hint() {
        Some(h) => anyhow::anyhow!("the key `{}`: {e}\nhint: {h}", path.display()),
        None => anyhow::anyhow!("the key `{}`: {e}", path.display()),
    }
}

/// What a signature says on stderr.
pub(crate) fn signed_line(s: &session::sign::Signed) -> String {
    format!(
        "signed {} as `{}`: {} ({})",
        s.image, s.docker_reference, s.at, s.signature
    )
}
