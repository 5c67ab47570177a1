//! Subcommand bodies: short, they call the libraries.

mod bench;
mod build;
mod diff;
mod export;
mod fsck;
mod gc;
mod images;
mod inspect;
mod lock;
mod push;
mod rebase;
mod rmi;
mod shared_cache;
mod verify;
mod verify_cause;
mod workspace;

use std::path::PathBuf;

use anyhow::Context as _;
use strata_cache::Store;

use crate::args::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // `bench` works in its own throwaway store.
    if let Command::Bench(a) = cli.command {
        return bench::run(a);
    }
    let store_dir = store_dir(cli.store)?;
    set_insecure_registries(cli.insecure_registries);
    let _ = REGISTRIES_CONF_FLAG.set(cli.registries_conf);
    match cli.command {
        Command::Build(a) if a.all || a.workspace.is_some() => workspace::run(&store_dir, a),
        Command::Build(a) if a.shard.is_some() || !a.images.is_empty() => anyhow::bail!(
            "--shard and --image select images of a workspace\nhint: add --all (with strata.toml in the current directory) or --workspace FILE"
        ),
        Command::Build(a) => build::run(&store_dir, a),
        Command::Bench(_) => unreachable!("handled above"),
        Command::Images => images::run(&store_dir),
        Command::Rebase(a) => rebase::run(&store_dir, a),
        Command::Fsck(a) => fsck::run(&store_dir, a),
        Command::Gc(a) => gc::run(&store_dir, a),
        Command::Rmi(a) => rmi::run(&store_dir, a),
        Command::Inspect(a) => inspect::run(&store_dir, a),
        Command::Export(a) => export::run(&store_dir, a),
        Command::Push(a) => push::run(&store_dir, a),
        Command::Diff(a) => diff::run(&store_dir, a),
        Command::Verify(a) => verify::run(a),
        Command::Lock(a) => lock::run(&store_dir, a),
    }
}

static INSECURE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn set_insecure_registries(hosts: Vec<String>) {
    let _ = INSECURE.set(hosts);
}

/// The global registry flags as given (`--insecure-registry`, `--registries-conf`), for a
/// command that runs strata again in a child process (`verify`).
pub(crate) fn global_registry_args() -> Vec<std::ffi::OsString> {
    let mut v = Vec::new();
    for h in INSECURE.get().into_iter().flatten() {
        v.push("--insecure-registry".into());
        v.push(h.into());
    }
    if let Some(Some(p)) = REGISTRIES_CONF_FLAG.get() {
        v.push("--registries-conf".into());
        v.push(p.into());
    }
    v
}

static REGISTRIES_CONF_FLAG: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
type SharedConf = std::sync::Arc<strata_engine::registry::RegistriesConf>;
static REGISTRIES_CONF: std::sync::OnceLock<Result<SharedConf, String>> =
    std::sync::OnceLock::new();

/// `registries.conf` (`--registries-conf`, `$CONTAINERS_REGISTRIES_CONF`, the user's or the
/// system's file and drop-ins), read once, when a command first needs a registry.
pub(crate) fn registries_conf() -> anyhow::Result<SharedConf> {
    REGISTRIES_CONF
        .get_or_init(|| {
            let flag = REGISTRIES_CONF_FLAG.get().cloned().flatten();
            strata_engine::registry::RegistriesConf::discover(flag.as_deref())
                .map(std::sync::Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The registry client every command shares the settings of: `--insecure-registry` hosts and
/// those `registries.conf` marks `insecure`, and credentials from the environment
/// (`$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG`, `~/.docker`).
pub(crate) fn registry_client() -> strata_engine::registry::Client {
    use strata_engine::registry::{AuthSources, Client, ClientOptions};
    let mut insecure = INSECURE.get().cloned().unwrap_or_default();
    // A malformed file is reported by the image resolver, which every pull goes through.
    if let Ok(conf) = registries_conf() {
        insecure.extend(conf.insecure_hosts());
    }
    Client::new(ClientOptions {
        insecure,
        auth: AuthSources::from_env(),
        ..Default::default()
    })
}

/// How `ADD <url>` / `ADD <git url>` fetch: plain HTTP to loopback and the
/// `--insecure-registry` hosts (those of `registries.conf` too), pins in `lock`.
pub(crate) fn fetch_options(
    lock: Option<std::sync::Arc<strata_engine::lock::LockedImages>>,
) -> strata_engine::fetch::FetchOptions {
    let mut insecure = INSECURE.get().cloned().unwrap_or_default();
    if let Ok(conf) = registries_conf() {
        insecure.extend(conf.insecure_hosts());
    }
    strata_engine::fetch::FetchOptions {
        insecure,
        pins: lock,
    }
}

/// The planner's image resolver: `oci-layout://` in the context, registry references pulled
/// with [`registry_client`] through the mirrors of [`registries_conf`], their manifests and
/// configs kept in `store`.
pub(crate) fn image_resolver(
    context_dir: &std::path::Path,
    store: &Store,
) -> anyhow::Result<std::sync::Arc<dyn strata_engine::image::ImageResolver>> {
    use strata_engine::image::LocalImages;
    use strata_engine::registry::RegistryImages;
    let conf = registries_conf()?;
    Ok(std::sync::Arc::new(RegistryImages::with_conf(
        LocalImages::new(context_dir),
        std::sync::Arc::new(registry_client()),
        store.blobs().clone(),
        conf,
    )))
}

/// Remembers which registry repository each pulled base blob came from, so a later push to
/// another repository of that registry can mount it instead of uploading it.
pub(crate) fn record_base_origins(store: &Store, plan: &strata_engine::plan::Plan) {
    use strata_engine::plan::Base;
    for stage in &plan.stages {
        let Base::Image(img) = &stage.base else {
            continue;
        };
        if img.reference.contains("://") {
            continue;
        }
        let Ok(r) = strata_engine::registry::Reference::parse(&img.reference) else {
            continue;
        };
        let name = r.name();
        for d in std::iter::once(&img.config_digest).chain(img.layers.iter().map(|l| &l.digest)) {
            let _ = store.index().add_blob_origin(d, &name);
        }
    }
}

/// The Dockerfile when `-f` is not given: `CONTEXT/Dockerfile`, else `CONTEXT/Containerfile`
/// (podman and buildah users' name). When both exist, `Dockerfile` wins, as with docker
/// (buildah would take `Containerfile`). When neither does, `Dockerfile` (named in the error).
pub(crate) fn default_dockerfile(context: &std::path::Path) -> PathBuf {
    let docker = context.join("Dockerfile");
    let container = context.join("Containerfile");
    if !docker.exists() && container.exists() {
        container
    } else {
        docker
    }
}

/// The default for `-j/--jobs`: the number of CPUs.
/// The text of the Dockerfile `dockerfile` of the build context `context_dir`: read inside
/// the context when it lies there (never through a symlink out of it), at most
/// `plan::limits::MAX_DOCKERFILE_BYTES`, and only a regular file there
/// (`strata_engine::context::file`).
pub(crate) fn read_dockerfile(
    context_dir: &std::path::Path,
    dockerfile: &std::path::Path,
) -> anyhow::Result<String> {
    use strata_engine::context::read_context_file;
    let limit = strata_engine::plan::limits::MAX_DOCKERFILE_BYTES;
    let bytes = read_context_file(context_dir, dockerfile, "the Dockerfile", limit)
        .map_err(|e| anyhow::anyhow!("{e}\nhint: {}", e.hint()))?
        .with_context(|| {
            format!(
                "reading the Dockerfile `{}`: No such file or directory\nhint: name it with -f, \
                 or put a file named Dockerfile in the build context",
                dockerfile.display()
            )
        })?;
    String::from_utf8(bytes).map_err(|_| {
        // Not echoed: a file that is not UTF-8 is not a Dockerfile, and may be anything.
        anyhow::anyhow!(
            "the Dockerfile `{}` is not UTF-8 text\nhint: check that -f names the right file",
            dockerfile.display()
        )
    })
}

pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `--store`, else `$STRATA_STORE`, else `$XDG_DATA_HOME/strata`, else `~/.local/share/strata`.
fn store_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("STRATA_STORE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p).join("strata"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("cannot find a store: set --store, $STRATA_STORE or $HOME")?;
    Ok(PathBuf::from(home).join(".local/share/strata"))
}

pub fn open_store(dir: &std::path::Path) -> anyhow::Result<Store> {
    Store::open_with(dir, std::sync::Arc::new(|msg: &str| eprintln!("{msg}")))
        .with_context(|| format!("opening the store at `{}`", dir.display()))
}

/// The stored tag for `NAME[:TAG]` (`:latest` when no tag is given), with its canonical name.
fn find_tag(store: &Store, name: &str) -> anyhow::Result<(String, strata_cache::TagRecord)> {
    let full = strata_engine::export::ImageName::parse(name)?.full();
    match store.index().get_tag(&full)? {
        Some(t) => Ok((full, t)),
        None => {
            anyhow::bail!("no image `{full}` in the store\nhint: `strata images` lists the tags")
        }
    }
}
