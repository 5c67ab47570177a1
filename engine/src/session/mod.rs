//! A session: what every command of one process shares — the store, the registry settings
//! (`--insecure-registry` hosts, `registries.conf` read once) — and the orchestration of the
//! commands over them. Each entry point takes a request and returns a report; the caller (the
//! CLI) parses flags into the request and presents the report.
//!
//! - [`Session::build`] ([`build`]): Dockerfile → plan → lock → context → [`solve::run`] →
//!   tags, outputs, lock file, `--cache-to`.
//! - [`Session::lock`] ([`lock`]): resolve and pin every reference without building.
//! - [`Session::rebase`] ([`rebase`]): swap an image's base layers without executing anything.
//! - [`Session::write_output`], [`Session::push`]: an image in the store to a destination.
//! - [`Session::pull`] ([`pull`]): a registry image into the store, without building.
//! - [`Session::sign`], [`Session::verify_signature`] ([`sign`]): cosign signatures of a store
//!   tag, an OCI layout or a registry image.
//!
//! Progress goes to the `&dyn Progress` a call is given (a workspace gives each image its own,
//! labelled one); the session itself never prints.
//!
//! [`solve::run`]: crate::solve::run

pub mod build;
pub mod cache;
pub mod lock;
pub mod output;
pub mod pull;
pub mod rebase;
pub mod sign;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use strata_cache::{Digest, Store};

use crate::fetch::FetchOptions;
use crate::image::{ImageOverride, ImageResolver, LocalImages, Overrides};
use crate::lock::LockedImages;
use crate::plan::{Base, Plan};
use crate::registry::push::PushReport;
use crate::registry::{AuthSources, Client, ClientOptions, Reference, RegistriesConf};

pub use build::{BuildReport, BuildRequest, CacheSource, LockUse};
pub use lock::{LockImage, LockReport, LockRequest, PinChange, PinLine};
pub use output::{Output, Written};
pub use rebase::{RebaseReport, RebaseRequest};

/// How the session reaches registries: the global flags of `strata`.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `--insecure-registry HOST[:PORT]`: reached over plain HTTP (loopback always is).
    pub insecure: Vec<String>,
    /// `--registries-conf FILE`; `None`: `$CONTAINERS_REGISTRIES_CONF`, the user's or the
    /// system's file and drop-ins.
    pub registries_conf: Option<PathBuf>,
}

/// The store and registry settings of one process, and the commands over them.
pub struct Session {
    store: Store,
    registry: RegistryOptions,
    /// `registries.conf`, read once, when a command first needs a registry (an error is kept
    /// as text: every later use reports it again).
    conf: OnceLock<Result<Arc<RegistriesConf>, String>>,
    /// What the builds of this session share: a step two images have in common runs once, a
    /// parent two images stand on is read once (`solve::Shared`).
    shared: Arc<crate::solve::Shared>,
    /// Images given for references ([`Session::override_image`]), answered before any lookup.
    overrides: Mutex<Vec<ImageOverride>>,
}

impl Session {
    pub fn new(store: Store, registry: RegistryOptions) -> Session {
        Session {
            store,
            registry,
            conf: OnceLock::new(),
            shared: Default::default(),
            overrides: Mutex::default(),
        }
    }

    /// From now on, this session's builds resolve `image.reference` (on `platform`) to `image`
    /// instead of looking it up: `strata bench` builds on a patched registry base this way,
    /// without pushing it anywhere. A lock would pin the given image's digest like any other;
    /// [`Session::clear_image_overrides`] undoes it.
    pub fn override_image(&self, image: crate::image::BaseImage, platform: crate::image::Platform) {
        self.overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ImageOverride { image, platform });
    }

    /// References resolve as before [`Session::override_image`].
    pub fn clear_image_overrides(&self) {
        self.overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry_options(&self) -> &RegistryOptions {
        &self.registry
    }

    /// `registries.conf` (`--registries-conf`, `$CONTAINERS_REGISTRIES_CONF`, the user's or
    /// the system's file and drop-ins).
    pub fn registries_conf(&self) -> anyhow::Result<Arc<RegistriesConf>> {
        self.conf
            .get_or_init(|| {
                RegistriesConf::discover(self.registry.registries_conf.as_deref())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// `--insecure-registry` hosts and those `registries.conf` marks `insecure`. A malformed
    /// file is reported by the image resolver, which every pull goes through.
    fn insecure_hosts(&self) -> Vec<String> {
        let mut insecure = self.registry.insecure.clone();
        if let Ok(conf) = self.registries_conf() {
            insecure.extend(conf.insecure_hosts());
        }
        insecure
    }

    /// The registry client: the insecure hosts, and credentials from the environment
    /// (`$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG`, `~/.docker`).
    pub fn registry_client(&self) -> Client {
        Client::new(ClientOptions {
            insecure: self.insecure_hosts(),
            auth: AuthSources::from_env(),
            ..Default::default()
        })
    }

    /// How `ADD <url>` / `ADD <git url>` fetch: plain HTTP to loopback and the insecure hosts,
    /// pins in `lock`.
    pub fn fetch_options(&self, lock: Option<Arc<LockedImages>>) -> FetchOptions {
        FetchOptions {
            insecure: self.insecure_hosts(),
            pins: lock,
        }
    }

    /// The planner's image resolver: `oci-layout://` in `context_dir`, registry references
    /// pulled with [`Session::registry_client`] through the mirrors of `registries.conf`, their
    /// manifests and configs kept in the store; in front of them, the images given by
    /// [`Session::override_image`].
    pub fn image_resolver(&self, context_dir: &Path) -> anyhow::Result<Arc<dyn ImageResolver>> {
        use crate::registry::RegistryImages;
        let conf = self.registries_conf()?;
        let resolver: Arc<dyn ImageResolver> = Arc::new(RegistryImages::with_conf(
            LocalImages::new(context_dir),
            Arc::new(self.registry_client()),
            self.store.blobs().clone(),
            conf,
        ));
        let overrides = self
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(if overrides.is_empty() {
            resolver
        } else {
            Arc::new(Overrides::new(resolver, overrides))
        })
    }

    /// Pushes the manifest `digest` from the store to `target`, and records where its blobs
    /// now are, for later cross-repository mounts.
    pub fn push(&self, digest: &Digest, target: &Reference) -> anyhow::Result<PushReport> {
        let client = self.registry_client();
        let index = self.store.index();
        let origins = |d: &Digest| index.get_blob_origins(d).unwrap_or_default();
        let report =
            crate::registry::push::push(&client, self.store.blobs(), digest, target, &origins)
                .with_context(|| format!("pushing to `{target}`"))?;
        // Every blob the manifest names is now in the target repository.
        let bytes = self.store.blobs().read_verified(digest)?;
        if let Ok(crate::registry::manifest::Parsed::Manifest { config, layers, .. }) =
            crate::registry::manifest::parse(&bytes, None)
        {
            for d in std::iter::once(&config).chain(&layers) {
                if let Ok(dg) = d.digest() {
                    let _ = index.add_blob_origin(&dg, &target.name());
                }
            }
        }
        Ok(report)
    }

    /// Remembers which registry repository each pulled base blob came from, so a later push to
    /// another repository of that registry can mount it instead of uploading it.
    fn record_base_origins(&self, plan: &Plan) {
        for stage in &plan.stages {
            let Base::Image(img) = &stage.base else {
                continue;
            };
            if img.reference.contains("://") {
                continue;
            }
            let Ok(r) = Reference::parse(&img.reference) else {
                continue;
            };
            let name = r.name();
            for d in std::iter::once(&img.config_digest).chain(img.layers.iter().map(|l| &l.digest))
            {
                let _ = self.store.index().add_blob_origin(d, &name);
            }
        }
    }
}

/// The text of the Dockerfile `dockerfile` of the build context `context_dir`: read inside
/// the context when it lies there (never through a symlink out of it), at most
/// `plan::limits::MAX_DOCKERFILE_BYTES`, and only a regular file there
/// (`crate::context::file`).
pub fn read_dockerfile(context_dir: &Path, dockerfile: &Path) -> anyhow::Result<String> {
    use crate::context::read_context_file;
    let limit = crate::plan::limits::MAX_DOCKERFILE_BYTES;
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

/// The Dockerfile when `-f` is not given: `CONTEXT/Dockerfile`, else `CONTEXT/Containerfile`
/// (podman and buildah users' name). When both exist, `Dockerfile` wins, as with docker
/// (buildah would take `Containerfile`). When neither does, `Dockerfile` (named in the error).
pub fn default_dockerfile(context: &Path) -> PathBuf {
    let docker = context.join("Dockerfile");
    let container = context.join("Containerfile");
    if !docker.exists() && container.exists() {
        container
    } else {
        docker
    }
}

/// The directory of a Dockerfile's lock file: its parent, `.` for a bare name.
pub fn dockerfile_dir(dockerfile: &Path) -> PathBuf {
    match dockerfile.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_dockerfile_name_locks_in_the_current_directory() {
        assert_eq!(dockerfile_dir(Path::new("Dockerfile")), PathBuf::from("."));
        assert_eq!(
            dockerfile_dir(Path::new("a/b/Dockerfile")),
            PathBuf::from("a/b")
        );
        assert_eq!(dockerfile_dir(Path::new("/Dockerfile")), PathBuf::from("/"));
    }

    #[test]
    fn containerfile_only_when_there_is_no_dockerfile() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(default_dockerfile(d.path()), d.path().join("Dockerfile"));
        std::fs::write(d.path().join("Containerfile"), "FROM scratch\n").unwrap();
        assert_eq!(default_dockerfile(d.path()), d.path().join("Containerfile"));
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        assert_eq!(default_dockerfile(d.path()), d.path().join("Dockerfile"));
    }
}
