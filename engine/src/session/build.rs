//! [`Session::build`]: the whole of `strata build` but the presentation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use strata_cache::{Digest, LayerRecord, TagRecord};

use super::{cache, Output, Session, Written};
use crate::attest::provenance::{self, ProvenanceInputs, ProvenanceMode};
use crate::attest::sbom::{sbom_statement, SbomFormat};
use crate::attest::{self, Attested};
use crate::context::{self, Context};
use crate::export::ImageName;
use crate::export::Root;
use crate::image::index::assemble_index;
use crate::image::{Platform, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::layer::Compression;
use crate::lock::{LockMode, LockedImages, Lockfile, LOCK_FILE};
use crate::plan::key::Key;
use crate::plan::{self, PlanRequest};
use crate::remote_cache::RemoteSteps;
use crate::sandbox::emulation;
use crate::solve::{self, BuildOptions, Event, Progress, RunOptions};

/// Which lock the build resolves image references (and `ADD` pins) through.
#[derive(Clone)]
pub enum LockUse {
    /// `strata.lock` beside the Dockerfile, in this mode; written after a successful build
    /// (never in [`LockMode::Locked`]).
    BesideDockerfile(LockMode),
    /// A workspace's lock, shared by its images (each resolving `oci-layout://` in its own
    /// context); the caller saves it ([`Session::save_lock`]).
    Shared(Arc<LockedImages>),
    /// No lock: references resolve afresh every time (`strata bench`, whose scenarios change
    /// a base behind its tag).
    None,
}

/// Where steps the store misses are looked up.
#[derive(Clone)]
pub enum CacheSource {
    /// `--cache-from` specs, imported by the build.
    Specs(Vec<String>),
    /// Caches already imported (a workspace imports once for all its images).
    Imported(Option<Arc<dyn RemoteSteps>>),
}

/// What [`Session::build`] builds. The flags are parsed (and checked) by the caller; the
/// context, the Dockerfile and the specs of the caches are checked here, in that order.
#[derive(Clone)]
pub struct BuildRequest {
    pub context_dir: PathBuf,
    pub dockerfile: PathBuf,
    /// Whether the Dockerfile was named (`-f`): a missing default one gets its own message.
    pub dockerfile_named: bool,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// The platforms to build (at least one, no two alike): one gives an image manifest,
    /// several an index over one image per platform ([`target_platforms`]).
    pub platforms: Vec<Platform>,
    pub tags: Vec<ImageName>,
    pub outputs: Vec<Output>,
    pub compression: Compression,
    pub source_date_epoch: u64,
    /// Whether `SOURCE_DATE_EPOCH` was given (flag or environment): RUN steps see it then.
    pub source_date_epoch_given: bool,
    pub no_cache: bool,
    pub explain: bool,
    /// Stages at once, and threads for hashing and compression (≥ 1).
    pub jobs: usize,
    pub run: RunOptions,
    pub lock: LockUse,
    pub cache_from: CacheSource,
    /// `--cache-to` specs: this build's steps are exported there after it.
    pub cache_to: Vec<String>,
    /// `--provenance`: attach SLSA provenance (docs/attestations.md). Off by default: it
    /// wraps the image in an index, so what the tag and outputs name has another digest.
    pub provenance: Option<ProvenanceMode>,
    /// `--sbom`: attach the image's packages as SPDX or CycloneDX (docs/sbom.md). Off by
    /// default, for the same reason as `provenance`.
    pub sbom: Option<SbomFormat>,
}

/// What [`Session::build`] made.
#[derive(Debug)]
pub struct BuildReport {
    /// The image manifest, or for several platforms the index over them.
    pub manifest_digest: Digest,
    /// The image config (the image ID docker prints); for an index, the index's digest (as
    /// buildx's `--iidfile` of a multi-platform build).
    pub config_digest: Digest,
    pub manifest_size: u64,
    /// What `manifest_digest` is: [`MEDIA_TYPE_MANIFEST`] or [`MEDIA_TYPE_INDEX`].
    pub media_type: &'static str,
    /// Each platform's image manifest, in the order asked for.
    pub images: Vec<(Platform, Digest)>,
    pub executed: usize,
    pub cached: usize,
    /// RUN steps reused by read set (docs/read-set.md).
    pub reused: usize,
    /// From the start of the steps to the end of the outputs.
    pub elapsed: Duration,
    /// Every step of the build, for a workspace's `--cache-to`.
    pub steps: Vec<(Key, Option<LayerRecord>)>,
    /// The read sets of its RUN steps (reuse key, step key, read set), for `--cache-to`.
    pub readsets: Vec<(Key, Key, Vec<u8>)>,
    /// Each output, in the order given.
    pub outputs: Vec<Written>,
    /// With attestations: the image index holding the image and them (what the tags, the
    /// outputs and stdout name).
    pub attested: Option<Attested>,
}

impl BuildReport {
    /// What the build's tags and outputs name: the index when attestations were attached,
    /// else the image manifest.
    pub fn digest(&self) -> Digest {
        self.attested
            .as_ref()
            .map_or(self.manifest_digest, |a| a.index_digest)
    }

    /// `--metadata-file`: the keys docker buildx writes for an image build. `image.name` (the
    /// tags as stored, `NAME:TAG`, comma-separated as buildx) only when the image is named.
    pub fn buildx_metadata(&self, tags: &[ImageName]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if self.media_type == MEDIA_TYPE_MANIFEST || self.attested.is_some() {
            m.insert(
                "containerimage.config.digest".into(),
                self.config_digest.to_string().into(),
            );
        }
        // With attestations the build's result is the index (as buildx reports it); a
        // multi-platform build's is its index (`manifest_digest`, `media_type`).
        let (descriptor, digest) = match &self.attested {
            Some(a) => (a.descriptor(), a.index_digest),
            None => (
                serde_json::json!({
                    "mediaType": self.media_type,
                    "digest": self.manifest_digest.to_string(),
                    "size": self.manifest_size,
                }),
                self.manifest_digest,
            ),
        };
        m.insert("containerimage.descriptor".into(), descriptor);
        m.insert("containerimage.digest".into(), digest.to_string().into());
        if !tags.is_empty() {
            let names: Vec<String> = tags.iter().map(ImageName::full).collect();
            m.insert("image.name".into(), names.join(",").into());
        }
        serde_json::Value::Object(m)
    }
}

/// The platforms to build for: `--platform` (comma-separated, each normalised, none twice),
/// else the host's.
pub fn target_platforms(flag: Option<&str>) -> anyhow::Result<Vec<Platform>> {
    let Some(flag) = flag else {
        return Ok(vec![Platform::host()]);
    };
    let mut out: Vec<Platform> = Vec::new();
    for part in flag.split(',') {
        let p = Platform::parse(part).map_err(|e| {
            let hint = e.hint().map(|h| format!("\nhint: {h}")).unwrap_or_default();
            anyhow::anyhow!("--platform: {e}{hint}")
        })?;
        if out.contains(&p) {
            bail!("--platform names {p} twice (`{flag}`)");
        }
        out.push(p);
    }
    Ok(out)
}

/// Fails before anything is built when a RUN step of some stage needs an emulator this host
/// lacks ([`emulation::check`]).
fn check_emulation(plans: &[plan::Plan]) -> anyhow::Result<()> {
    let dir = emulation::binfmt_dir();
    for plan in plans {
        for &i in &plan.order {
            let stage = &plan.stages[i];
            if !stage
                .steps
                .iter()
                .any(|s| matches!(s.kind, plan::StepKind::Run(_)))
            {
                continue;
            }
            if let Err(e) = emulation::check(&dir, &stage.platform) {
                bail!("{e}\nhint: {}", e.hint());
            }
        }
    }
    Ok(())
}

impl Session {
    /// Builds the image `req` describes: plans the Dockerfile (resolving references through
    /// the lock), checks every context source, runs the steps ([`solve::run`]), tags the
    /// image, writes the outputs (an [`Event::Exported`] for each file output), saves the
    /// lock beside the Dockerfile and exports the step cache.
    pub fn build(
        &self,
        req: &BuildRequest,
        progress: &dyn Progress,
    ) -> anyhow::Result<BuildReport> {
        if req.provenance.is_some() || req.sbom.is_some() {
            check_attestable(&req.outputs)?;
            if req.platforms.len() > 1 {
                bail!(
                    "--provenance and --sbom of a multi-platform build ({} platforms) are not supported yet\n\
                     hint: attest each platform's image with its own build (--platform {})",
                    req.platforms.len(),
                    req.platforms[0]
                );
            }
        }
        // Hashing and compression use this pool; the output never depends on its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(req.jobs)
            .build_global();
        let context_dir = std::fs::canonicalize(&req.context_dir)
            .with_context(|| format!("build context `{}`", req.context_dir.display()))?;
        if !context_dir.is_dir() {
            bail!(
                "build context `{}` is not a directory",
                req.context_dir.display()
            );
        }
        let dockerfile = &req.dockerfile;
        if dockerfile.as_os_str() == "-" {
            bail!("reading the Dockerfile from stdin is not supported yet");
        }
        if !req.dockerfile_named && !dockerfile.exists() {
            bail!(
                "no Dockerfile in the build context: neither `{}` nor `{}` exists\nhint: pass -f PATH, or give the context directory that holds the Dockerfile",
                context_dir.join("Dockerfile").display(),
                context_dir.join("Containerfile").display()
            );
        }
        let source = super::read_dockerfile(&context_dir, dockerfile)?;
        // Image references resolve through the lock (crate::lock): the workspace's (this image
        // resolving `oci-layout://` in its own context), or the one beside the Dockerfile.
        let resolver = self.image_resolver(&context_dir)?;
        let (lock, images, own_lock) = match &req.lock {
            LockUse::Shared(shared) => (
                Some(shared.clone()),
                Some(Arc::new(shared.with_resolver(resolver.clone()))),
                false,
            ),
            LockUse::BesideDockerfile(mode) => {
                let dir = super::dockerfile_dir(dockerfile);
                let l = open_lock(&dir, resolver.clone(), mode.clone())?;
                (Some(l.clone()), Some(l), true)
            }
            LockUse::None => (None, None, false),
        };
        if req.platforms.is_empty() {
            bail!("no platform to build for");
        }
        if req.platforms.len() > 1 {
            if let Some(o) = req.outputs.iter().find(|o| !o.holds_index()) {
                bail!(
                    "--output `{o}`: a docker-archive holds one image per name, and --platform asks for {} ({})\nhint: use --output type=oci or type=oci-archive for a multi-platform image, or build one --platform",
                    req.platforms.len(),
                    req.platforms.iter().map(Platform::to_string).collect::<Vec<_>>().join(", ")
                );
            }
        }
        let resolve: Arc<dyn crate::image::ImageResolver> = match &images {
            Some(i) => i.clone(),
            None => resolver,
        };
        let mut plans = Vec::with_capacity(req.platforms.len());
        for platform in &req.platforms {
            plans.push(plan::plan(&PlanRequest {
                dockerfile_name: dockerfile.display().to_string(),
                source: source.clone(),
                context_dir: context_dir.clone(),
                build_args: req.build_args.clone(),
                target: req.target.clone(),
                platform: platform.clone(),
                images: Some(resolve.clone()),
            })?);
        }
        if let (Some(lock), Some(images)) = (&lock, &images) {
            lock.absorb(images)?;
        }
        let ignore = context::load_ignore(&context_dir, dockerfile)?;
        let ignore = match &lock {
            Some(lock) => crate::lock::exclude_lock_file(ignore, &context_dir, lock.path()),
            None => ignore,
        };
        let ctx = Context::open(&context_dir, ignore)?;
        // Every COPY/ADD source must resolve before anything is built.
        for plan in &plans {
            self.check_sources(plan, &ctx, dockerfile, &source)?;
        }
        check_emulation(&plans)?;

        let cache_targets = cache::check_targets(&req.cache_to)?;
        let remote = match &req.cache_from {
            CacheSource::Imported(r) => r.clone(),
            CacheSource::Specs(specs) => self.import_caches(specs)?,
        };
        let dockerfile_abs = std::fs::canonicalize(dockerfile).unwrap_or(dockerfile.clone());
        let opts = BuildOptions {
            compression: req.compression,
            source_date_epoch: req.source_date_epoch,
            no_cache: req.no_cache,
            jobs: req.jobs,
            explain_scope: format!("{}\0{}", context_dir.display(), dockerfile_abs.display()),
            dockerfile: dockerfile.display().to_string(),
            sde_env: req.source_date_epoch_given.then_some(req.source_date_epoch),
            explain: req.explain,
            remote,
            run: req.run.clone(),
            fetch: self.fetch_options(lock.clone()),
            shared: self.shared.clone(),
            record_context: req.provenance.is_some(),
        };
        let started = Instant::now();
        let outs = if plans.len() == 1 {
            vec![solve::run(&plans[0], &ctx, self.store(), &opts, progress)?]
        } else {
            // One build per platform, at once, sharing the session's step locks: a stage whose
            // keys do not depend on the platform (`FROM --platform=$BUILDPLATFORM`, COPY-only)
            // runs in one of them, and the others find it cached.
            let results: Vec<anyhow::Result<solve::BuildOutput>> = std::thread::scope(|sc| {
                let handles: Vec<_> = plans
                    .iter()
                    .zip(&req.platforms)
                    .map(|(plan, p)| {
                        let (ctx, opts) = (&ctx, &opts);
                        sc.spawn(move || {
                            let progress = solve::ForPlatform {
                                inner: progress,
                                platform: p.to_string(),
                            };
                            solve::run(plan, ctx, self.store(), opts, &progress)
                                .with_context(|| format!("building for {p}"))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| bail!("a platform's build panicked"))
                    })
                    .collect()
            });
            results.into_iter().collect::<anyhow::Result<Vec<_>>>()?
        };
        for plan in &plans {
            self.record_base_origins(plan);
        }
        let index = (outs.len() > 1).then(|| {
            assemble_index(
                req.platforms
                    .iter()
                    .cloned()
                    .zip(outs.iter().map(|o| o.image.clone()))
                    .collect(),
            )
        });
        // Every attestation of the image, each an in-toto statement about its manifest; they
        // share one attestation manifest. A multi-platform build is refused them up front.
        let mut statements = Vec::new();
        if let Some(mode) = req.provenance {
            statements.push(provenance::provenance(&ProvenanceInputs {
                mode,
                plan: &plans[0],
                dockerfile: &provenance::dockerfile_path(&context_dir, dockerfile),
                dockerfile_digest: Digest::of(source.as_bytes()),
                target: req.target.as_deref(),
                build_args: &req.build_args,
                platform: &req.platforms[0],
                compression: req.compression,
                source_date_epoch: req.source_date_epoch,
                context: provenance::context_digest(&outs[0].context_files),
                lock: lock.as_deref(),
                step_keys: &outs[0].step_keys,
            }));
        }
        if let Some(format) = req.sbom {
            statements.push(
                sbom_statement(self.store(), &outs[0].image, format, req.source_date_epoch)
                    .context("making the SBOM (--sbom)")?,
            );
        }
        let attested = if statements.is_empty() {
            None
        } else {
            Some(attest::attach(
                self.store().blobs(),
                &outs[0].image,
                &req.platforms[0],
                &statements,
            )?)
        };
        // What the report's `manifest_digest` is: the multi-platform index, else the image
        // manifest (with attestations, `attested` has the index that holds it).
        let (root, media_type, config_digest, size) = match &index {
            Some(x) => {
                self.store().blobs().put(&x.bytes)?;
                (Root::Index(x), MEDIA_TYPE_INDEX, x.digest, x.bytes.len())
            }
            None => {
                let img = &outs[0].image;
                (
                    match &attested {
                        Some(a) => Root::Attested(img, a),
                        None => Root::Image(img),
                    },
                    MEDIA_TYPE_MANIFEST,
                    img.config_digest,
                    img.manifest.len(),
                )
            }
        };
        for n in &req.tags {
            self.store().index().put_tag(
                &n.full(),
                &TagRecord {
                    manifest: root.digest(),
                    config: config_digest,
                    media_type: root.media_type().to_string(),
                },
            )?;
        }
        let mut written = Vec::new();
        for o in &req.outputs {
            let w = self.write_output(root, &req.tags, o, req.source_date_epoch)?;
            if let Written::File { kind, dest } = &w {
                progress.event(&Event::Exported {
                    kind: kind.to_string(),
                    dest: dest.display().to_string(),
                });
            }
            written.push(w);
        }
        if let (true, Some(lock)) = (own_lock, &lock) {
            self.save_lock(lock)?;
        }
        let mut steps = Vec::new();
        let mut readsets = Vec::new();
        let (mut executed, mut cached, mut reused) = (0, 0, 0);
        for o in &outs {
            steps.extend(o.steps.iter().cloned());
            readsets.extend(o.readsets.iter().cloned());
            executed += o.steps_executed;
            cached += o.steps_cached;
            reused += o.steps_reused;
        }
        if !cache_targets.is_empty() {
            self.export_caches(&cache_targets, &steps, &readsets)?;
        }
        Ok(BuildReport {
            manifest_digest: match &index {
                Some(x) => x.digest,
                None => outs[0].image.manifest_digest,
            },
            config_digest,
            manifest_size: size as u64,
            media_type,
            images: req
                .platforms
                .iter()
                .cloned()
                .zip(outs.iter().map(|o| o.image.manifest_digest))
                .collect(),
            executed,
            cached,
            reused,
            elapsed: started.elapsed(),
            steps,
            readsets,
            outputs: written,
            attested,
        })
    }

    /// Fails with a diagnostic pointing into the Dockerfile when a COPY/ADD source of `plan`
    /// does not resolve in the context.
    fn check_sources(
        &self,
        plan: &plan::Plan,
        ctx: &Context,
        dockerfile: &Path,
        source: &str,
    ) -> anyhow::Result<()> {
        if let Err(p) = solve::check_sources(plan, ctx) {
            let mut d = crate::frontend::Diagnostic::new(
                &dockerfile.display().to_string(),
                source,
                p.span,
                p.error.to_string(),
            );
            if let Some(h) = p.error.hint() {
                d = d.with_hint(h);
            }
            return Err(d.into());
        }

        Ok(())
    }

    /// After a successful build: adds what it resolved to the lock file (never under
    /// `--locked`).
    pub fn save_lock(&self, l: &LockedImages) -> anyhow::Result<()> {
        if *l.mode() == LockMode::Locked {
            return Ok(());
        }
        let merged = l.merged();
        if &merged != l.lock() {
            merged.write(l.path())?;
        }
        Ok(())
    }
}

/// Refuses outputs that cannot carry attestations before anything is built: a docker-archive
/// (`docker load` of an image index fails on Docker's classic image store, and buildx refuses
/// `--load` with attestations for the same reason: it does not drop them silently).
pub fn check_attestable(outputs: &[Output]) -> anyhow::Result<()> {
    for o in outputs {
        if let super::output::OutputKind::Archive(crate::export::ArchiveKind::Docker, _) = o.kind()
        {
            bail!(
                "--output `{o}`: a docker-archive cannot carry attestations (--provenance, --sbom)\n\
                 hint: write type=oci or type=oci-archive (skopeo and podman load those with \
                 their attestations), or build without --provenance and --sbom"
            );
        }
    }
    Ok(())
}

/// Opens the lock at `dir/strata.lock` for a run in `mode`, over `inner`.
pub fn open_lock(
    dir: &Path,
    inner: Arc<dyn crate::image::ImageResolver>,
    mode: LockMode,
) -> anyhow::Result<Arc<LockedImages>> {
    let path = dir.join(LOCK_FILE);
    let lock = match Lockfile::read(&path)? {
        Some(l) => l,
        None if mode == LockMode::Locked => bail!(
            "--locked: no lock file `{}`\nhint: run `strata lock` and commit strata.lock",
            path.display()
        ),
        None => Lockfile::default(),
    };
    Ok(Arc::new(LockedImages::new(inner, lock, &path, mode)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> BuildReport {
        BuildReport {
            manifest_digest: Digest::of(b"manifest"),
            config_digest: Digest::of(b"config"),
            manifest_size: 8,
            media_type: MEDIA_TYPE_MANIFEST,
            images: Vec::new(),
            executed: 1,
            cached: 2,
            reused: 0,
            elapsed: Duration::from_millis(5),
            steps: Vec::new(),
            readsets: Vec::new(),
            outputs: Vec::new(),
            attested: None,
        }
    }

    #[test]
    fn buildx_metadata_names_the_image_only_when_tagged() {
        let r = report();
        let m = r.buildx_metadata(&[]);
        assert_eq!(
            m["containerimage.digest"],
            Digest::of(b"manifest").to_string()
        );
        assert_eq!(
            m["containerimage.config.digest"],
            Digest::of(b"config").to_string()
        );
        assert_eq!(m["containerimage.descriptor"]["size"], 8);
        assert_eq!(
            m["containerimage.descriptor"]["mediaType"],
            MEDIA_TYPE_MANIFEST
        );
        assert!(m.get("image.name").is_none());
        let tags = [
            ImageName::parse("app").unwrap(),
            ImageName::parse("reg.example/x:1").unwrap(),
        ];
        let m = r.buildx_metadata(&tags);
        assert_eq!(m["image.name"], "app:latest,reg.example/x:1");
    }

    #[test]
    fn buildx_metadata_names_the_index_of_an_attested_image() {
        let mut r = report();
        let index = b"{\"manifests\":[]}".to_vec();
        r.attested = Some(Attested {
            index_digest: Digest::of(&index),
            index,
            image: r.manifest_digest,
            manifest_digest: Digest::of(b"attestations"),
            entry: serde_json::json!({}),
            layers: Vec::new(),
            blobs: Vec::new(),
        });
        let m = r.buildx_metadata(&[]);
        let index_digest = Digest::of(b"{\"manifests\":[]}").to_string();
        assert_eq!(m["containerimage.digest"], index_digest);
        assert_eq!(
            m["containerimage.descriptor"]["mediaType"],
            MEDIA_TYPE_INDEX
        );
        assert_eq!(m["containerimage.descriptor"]["size"], 16);
        assert_eq!(r.digest().to_string(), index_digest);
    }

    #[test]
    fn platforms_parse_as_a_list_each_once() {
        assert_eq!(target_platforms(None).unwrap(), vec![Platform::host()]);
        let two = target_platforms(Some("linux/amd64, linux/arm64/v8")).unwrap();
        assert_eq!(
            two.iter().map(Platform::to_string).collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm64"]
        );
        let e = format!(
            "{:#}",
            target_platforms(Some("linux/amd64,linux/amd46")).unwrap_err()
        );
        assert!(e.contains("`linux/amd46`") && e.contains("hint:"), "{e}");
        let e = target_platforms(Some("linux/arm64,linux/aarch64"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux/arm64 twice"), "{e}");
    }
}
