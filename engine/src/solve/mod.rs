//! Running a plan: the scheduler and step execution against the content store.
//!
//! Stages run in dependency order: each starts as soon as the stages it depends on are done, at
//! most `jobs` at a time ([`schedule`]). Within a stage, steps run in order. A step whose key is in the index
//! (and whose layer blob is present) is a hit: nothing runs. Results are recorded only after
//! their blobs are committed, so an interrupted build caches nothing partial.

pub mod copy;
pub mod layer_tree;
pub mod mounts;
pub mod progress;
mod remote;
mod run_step;
mod workdir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use strata_cache::{
    Digest, ExplainInput, ExplainRecord, LayerRecord, StepRecord, Store, StoreError,
};

use crate::context::{Context, ContextError};
use crate::image::{self, AssembledImage, ImageInputs, LayerDesc};
use crate::layer::{self, Compression, LayerError};
use crate::plan::key::{self, Key, KeyHasher};
use crate::plan::{self, Base, CopyFrom, Plan, StepKind};
pub use mounts::{RunOptions, Secret};
pub use progress::{Event, NoProgress, Progress, StepStatus};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Rootfs(#[from] layer_tree::RootfsError),
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` changed while it was being read; run the build again", path.display())]
    ContextChanged { path: PathBuf },
    #[error("--chown={spec}: {message}")]
    Chown { spec: String, message: String },
    #[error("WORKDIR {path}: {message}")]
    Workdir { path: String, message: String },
    #[error("COPY --from source `{path}` not found in the source stage")]
    FromSourceMissing { path: String },
    #[error(
        "the destination `{dest}` must be a directory ending in `/` (or an existing \
         directory): {sources} sources, after wildcard expansion, would be copied to it\n\
         hint: write `{dest}/` to copy them into a directory"
    )]
    CopyDestNotDir { dest: String, sources: usize },
    #[error("ADD `{}`: {message}", path.display())]
    Archive { path: PathBuf, message: String },
    #[error("base image blob {digest} from {origin}: {source}")]
    BaseBlob {
        digest: Digest,
        origin: String,
        /// Boxed: it would make every `BuildError` larger.
        source: Box<image::BlobFetchError>,
    },
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Capture(#[from] crate::sandbox::capture::CaptureError),
    #[error("RUN failed: `{command}` {status}{}{}", output_tail(.output), network_hint(*.without_network))]
    RunFailed {
        command: String,
        status: String,
        /// The last lines of its combined stdout and stderr (see `sandbox::exec::Tail`).
        output: String,
        /// It ran without network: the error ends with how to allow it.
        without_network: bool,
    },
    #[error("RUN --mount=type=secret,id={id}: no secret `{id}` was given to the build\nhint: pass it with `strata build --secret id={id},src=FILE` (or `env=VAR`), or mark the mount optional by leaving out `required`")]
    MissingSecret { id: String },
    #[error("RUN --mount=type=ssh,id={id}: no SSH agent `{id}` was given to the build\nhint: pass it with `strata build --ssh {id}=SOCKET` (`--ssh default` forwards $SSH_AUTH_SOCK), or leave out `required`")]
    MissingSsh { id: String },
    #[error("RUN --mount=type=secret,id={id},env=…: the secret is not UTF-8 text, so it cannot be an environment variable\nhint: mount it as a file (leave out env=)")]
    SecretNotText { id: String },
    /// A RUN failed while the file system of its upper dir (the store's) was full: the
    /// command's own message is rarely clear about it (`head: standard output: I/O error`).
    #[error(
        "RUN failed: `{command}` {status}, and the store's file system is full: {detail}{}\n\
         hint: free space there (`strata gc --keep-storage SIZE` removes cached layers), or \
         use a store on a larger file system (--store)",
        output_tail(.output)
    )]
    RunDiskFull {
        command: String,
        status: String,
        /// Which path, and how much is free.
        detail: String,
        output: String,
    },
    #[error(
        "layer {digest} is missing from the store (removed while the build ran, e.g. by \
         `strata fsck --repair` in another process)\nhint: run the build again; it rebuilds \
         what is missing"
    )]
    LayerEvicted { digest: Digest },
    #[error("{stage_step}: {source}")]
    Step {
        stage_step: String,
        source: Box<BuildError>,
    },
}

fn output_tail(tail: &str) -> String {
    if tail.is_empty() {
        return "; it printed nothing".into();
    }
    let n = tail.lines().count();
    let mut s = format!(
        "; last {} of its output:",
        if n == 1 {
            "line".to_string()
        } else {
            format!("{n} lines")
        }
    );
    for l in tail.lines() {
        s.push_str("\n  | ");
        s.push_str(l);
    }
    s
}

/// The end of the error of a RUN that failed without network: many failures are that (a
/// download, a package index), and the sandbox does not say so itself.
fn network_hint(without: bool) -> &'static str {
    if without {
        "\nhint: the step ran without network (builds are hermetic by default); if it needs \
         the network, allow it for this step with `RUN --network=host` or for the whole build \
         with `strata build --network host`"
    } else {
        ""
    }
}

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub compression: Compression,
    pub source_date_epoch: u64,
    /// Ignore cached step results (results are still recorded).
    pub no_cache: bool,
    /// Maximum number of stages built at once.
    pub jobs: usize,
    /// Identifies the Dockerfile for `--explain` (the last key seen at each step).
    pub explain_scope: String,
    /// The Dockerfile as the user named it, for `file:line` in step errors.
    pub dockerfile: String,
    /// `SOURCE_DATE_EPOCH` given explicitly by the user: RUN steps see it in their environment.
    pub sde_env: Option<u64>,
    /// Say why each executed step missed (`--explain`). Off, nothing is compared — the previous
    /// record of a COPY over many files is large — but the inputs are still recorded.
    pub explain: bool,
    /// Step records imported from elsewhere (`--cache-from`), asked when the store misses.
    pub remote: Option<std::sync::Arc<dyn crate::remote_cache::RemoteSteps>>,
    /// `--network`, `--secret`: what RUN steps may use beyond their rootfs.
    pub run: RunOptions,
    /// How `ADD <url>` and `ADD <git url>` fetch, and the lock that pins them.
    pub fetch: crate::fetch::FetchOptions,
}

/// What a stage left behind.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub key: Key,
    pub layers: Vec<LayerDesc>,
    /// Assembled only for the target ([`StageImage::assemble`]).
    pub image: std::sync::Arc<StageImage>,
    /// What the stage stands on (for `strata rebase`).
    pub lineage: strata_cache::Lineage,
}

/// What a stage's image is made of, kept unassembled: only the target's config is serialised.
/// A stage on another stage inherits that stage's bottom config and history segments (shared,
/// not copied), so a chain of stages that each add to what they inherit does a constant amount
/// of image work per stage instead of serialising, parsing and hashing a config that grows
/// along the chain (issue 18: 5,000 chained stages). Assembling gives exactly what assembling
/// every stage on its parent's config gave: a stage overrides every top-level field its parent
/// set, so only the bottom image's other fields and the history carry through.
#[derive(Debug)]
pub struct StageImage {
    /// The config of the image at the bottom of the stage chain (`None`: scratch).
    root: Option<std::sync::Arc<Value>>,
    /// History entries added above `root`, by stage, bottom first (empty segments left out).
    history: Vec<std::sync::Arc<[image::History]>>,
    /// The stage of the plan whose config this is.
    stage: usize,
    source_date_epoch: u64,
    layers: Vec<LayerDesc>,
}

impl StageImage {
    /// The stage's config and manifest, canonical (`plan`: the plan the stage was built from).
    pub fn assemble(&self, plan: &Plan) -> AssembledImage {
        let stage = &plan.stages[self.stage];
        let history: Vec<image::History> = self
            .history
            .iter()
            .flat_map(|seg| seg.iter().cloned())
            .collect();
        image::assemble(ImageInputs {
            platform: &stage.platform,
            source_date_epoch: self.source_date_epoch,
            config_object: stage.config.to_config_object(),
            author: stage.config.author.as_deref(),
            base_config: self.root.as_deref(),
            new_history: &history,
            layers: &self.layers,
        })
    }
}

/// The outcome of a build.
pub struct BuildOutput {
    pub image: std::sync::Arc<AssembledImage>,
    pub steps_executed: usize,
    pub steps_cached: usize,
    /// Every step of the build (executed or cached), for `--cache-to`.
    pub steps: Vec<(Key, Option<LayerRecord>)>,
}

struct Counters {
    executed: usize,
    cached: usize,
    steps: Vec<(Key, Option<LayerRecord>)>,
}

/// Runs `plan` for the target stage, storing layers, config and manifest in `store`.
pub fn run(
    plan: &Plan,
    ctx: &Context,
    store: &Store,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildOutput, BuildError> {
    for w in &plan.warnings {
        progress.event(&Event::Warning(w.clone()));
    }
    check_secrets(plan, opts)?;
    check_pins(plan, opts)?;
    let results: Mutex<BTreeMap<usize, StageResult>> = Mutex::new(BTreeMap::new());
    let counters = Mutex::new(Counters {
        executed: 0,
        cached: 0,
        steps: Vec::new(),
    });
    schedule(plan, opts.jobs, &results, |s| {
        run_stage(plan, s, ctx, store, opts, progress, &results, &counters)
    })?;
    let results = results.into_inner().unwrap();
    let c = counters.into_inner().unwrap();
    let target = &results[&plan.target];
    let img = std::sync::Arc::new(target.image.assemble(plan));
    // gc keeps what running builds hit, but `fsck --repair` (or a hand) may remove a corrupt
    // blob meanwhile: never write a manifest naming a missing layer.
    for l in &target.layers {
        if !store.blobs().contains(&l.digest) {
            return Err(BuildError::LayerEvicted { digest: l.digest });
        }
    }
    // Config and manifest go into the store too, so the image can be tagged and exported.
    store.blobs().put(&img.config)?;
    store.blobs().put(&img.manifest)?;
    store
        .index()
        .put_lineage(&img.manifest_digest, &target.lineage)?;
    Ok(BuildOutput {
        image: img,
        steps_executed: c.executed,
        steps_cached: c.cached,
        steps: c.steps,
    })
}

/// Runs every stage of `plan.order` through `run`, each as soon as the stages it depends on are
/// done, at most `jobs` at once (a slow stage holds back only the stages that need it). A stage's
/// result is dropped once every stage that uses it is done (the target's is kept), so a long
/// chain of stages holds only its frontier in memory. After the first error no stage starts;
/// those running finish, and the error is returned.
fn schedule(
    plan: &Plan,
    jobs: usize,
    results: &Mutex<BTreeMap<usize, StageResult>>,
    run: impl Fn(usize) -> Result<StageResult, BuildError> + Sync,
) -> Result<(), BuildError> {
    // Position in `plan.order`: ready stages start in that order (the build's output never
    // depends on it; progress reads better).
    let pos: BTreeMap<usize, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, i))
        .collect();
    let mut users: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut deps_of: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &s in &plan.order {
        let mut deps = plan.stages[s].deps.clone();
        deps.sort_unstable();
        deps.dedup();
        for &d in &deps {
            users.entry(d).or_default().push(s);
        }
        deps_of.insert(s, deps);
    }
    let waiting: BTreeMap<usize, usize> = deps_of.iter().map(|(s, d)| (*s, d.len())).collect();
    struct State {
        /// Ready stages by their position in `plan.order`.
        ready: std::collections::BTreeSet<usize>,
        waiting: BTreeMap<usize, usize>,
        /// Per stage: how many of its users have not finished (its result is dropped at 0).
        uses_left: BTreeMap<usize, usize>,
        running: usize,
        left: usize,
        error: Option<BuildError>,
    }
    let state = Mutex::new(State {
        ready: plan
            .order
            .iter()
            .filter(|s| waiting[s] == 0)
            .map(|s| pos[s])
            .collect(),
        uses_left: plan
            .order
            .iter()
            .map(|s| (*s, users.get(s).map_or(0, Vec::len)))
            .collect(),
        waiting,
        running: 0,
        left: plan.order.len(),
        error: None,
    });
    let wake = std::sync::Condvar::new();
    let worker = || loop {
        let s = {
            let mut st = state.lock().unwrap();
            loop {
                if st.error.is_some() || st.left == 0 {
                    return;
                }
                if let Some(p) = st.ready.pop_first() {
                    st.running += 1;
                    break plan.order[p];
                }
                // Nothing ready and nothing running with stages left would be a cycle: the
                // planner lets a stage use only stages defined before it.
                assert!(st.running > 0, "stage dependencies form a cycle");
                st = wake.wait(st).unwrap();
            }
        };
        let r = run(s);
        let mut st = state.lock().unwrap();
        st.running -= 1;
        st.left -= 1;
        match r {
            Ok(r) => {
                results.lock().unwrap().insert(s, r);
                for &u in users.get(&s).into_iter().flatten() {
                    let w = st.waiting.get_mut(&u).expect("a stage of the plan");
                    *w -= 1;
                    if *w == 0 {
                        st.ready.insert(pos[&u]);
                    }
                }
                for &d in &deps_of[&s] {
                    let n = st.uses_left.get_mut(&d).expect("a stage of the plan");
                    *n -= 1;
                    if *n == 0 && d != plan.target {
                        results.lock().unwrap().remove(&d);
                    }
                }
            }
            Err(e) => {
                if st.error.is_none() {
                    st.error = Some(e);
                }
            }
        }
        wake.notify_all();
    };
    std::thread::scope(|sc| {
        for _ in 0..jobs.clamp(1, plan.order.len().max(1)) {
            sc.spawn(worker);
        }
    });
    match state.into_inner().unwrap().error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `e`, located at step `i` (0-based) of stage `s`: `Dockerfile:LINE: stage S, step N (`TEXT`)`.
fn at_step(
    opts: &BuildOptions,
    s: usize,
    i: usize,
    step: &plan::Step,
    e: BuildError,
) -> BuildError {
    BuildError::Step {
        stage_step: format!(
            "{}:{}: stage {s}, step {} (`{}`)",
            opts.dockerfile,
            step.span.line,
            i + 1,
            step.text
        ),
        source: Box::new(e),
    }
}

/// A required secret or SSH agent that was not given fails the build before anything runs.
fn check_secrets(plan: &Plan, opts: &BuildOptions) -> Result<(), BuildError> {
    for &s in &plan.order {
        for (i, step) in plan.stages[s].steps.iter().enumerate() {
            let StepKind::Run(run) = &step.kind else {
                continue;
            };
            for m in &run.mounts {
                let missing = match &m.kind {
                    plan::RunMountKind::Secret {
                        id, required: true, ..
                    } if !opts.run.secrets.contains_key(id) => {
                        BuildError::MissingSecret { id: id.clone() }
                    }
                    plan::RunMountKind::Ssh { id, required: true }
                        if !opts.run.ssh.contains_key(id) =>
                    {
                        BuildError::MissingSsh { id: id.clone() }
                    }
                    _ => continue,
                };
                return Err(at_step(opts, s, i, step, missing));
            }
        }
    }
    Ok(())
}

/// Under `--locked`, an ADD URL or git ref without a pin fails the build before anything runs.
fn check_pins(plan: &Plan, opts: &BuildOptions) -> Result<(), BuildError> {
    for &s in &plan.order {
        for (i, step) in plan.stages[s].steps.iter().enumerate() {
            let StepKind::Copy(spec) = &step.kind else {
                continue;
            };
            for src in &spec.sources {
                let r = match src {
                    plan::CopySource::Url(u) => crate::fetch::RemoteRef::Url(u),
                    plan::CopySource::Git(g) => crate::fetch::RemoteRef::Git(g),
                    _ => continue,
                };
                if let Some(e) = crate::fetch::missing_pin(r, &opts.fetch) {
                    return Err(at_step(opts, s, i, step, e.into()));
                }
            }
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The diff_id of the layer the step at `loc` made the last time it ran.
fn previous_layer(store: &Store, loc: &Key) -> Result<Option<Digest>, StoreError> {
    let Some(prev) = store.index().get_last_at(loc)? else {
        return Ok(None);
    };
    Ok(store
        .index()
        .get_step(&prev)?
        .and_then(|r| r.layer)
        .map(|l| l.diff_id))
}

fn location(opts: &BuildOptions, stage: usize, step: usize) -> Key {
    KeyHasher::new("location")
        .str("scope", &opts.explain_scope)
        .u64("stage", stage as u64)
        .u64("step", step as u64)
        .finish()
}

/// Says why a step missed, comparing what it ran on with the explain record of the last key
/// recorded at this step.
fn explain_miss(
    store: &Store,
    loc: &Key,
    new: &ExplainRecord,
    no_cache: bool,
) -> Result<Vec<String>, BuildError> {
    if no_cache {
        return Ok(vec!["--no-cache".into()]);
    }
    let Some(prev_key) = store.index().get_last_at(loc)? else {
        return Ok(vec!["first build of this step".into()]);
    };
    if store.index().get_step(&prev_key)?.is_none() {
        return Ok(vec![
            "the previous result of this step is no longer in the store".into(),
        ]);
    }
    let Some(old) = store.index().get_explain(&prev_key)? else {
        return Ok(vec![
            "the inputs of the previous build of this step were not recorded (an older strata \
             or a shared cache built it)"
                .into(),
        ]);
    };
    Ok(explain_diff(&old, new))
}

/// The reasons `new` differs from `old`, most general first; the changed files by path.
fn explain_diff(old: &ExplainRecord, new: &ExplainRecord) -> Vec<String> {
    let mut reasons = Vec::new();
    let both_differ = |name: &str| {
        let (o, n) = (old.input(name), new.input(name));
        o.is_some() && n.is_some() && o != n
    };
    if both_differ("parent") {
        reasons.push("the previous step changed".to_string());
    }
    if both_differ("parent-facts") {
        reasons.push(
            "the directories on the way to the destination changed in the parent rootfs \
             (existence, type, mode, owner or symlinks)"
                .to_string(),
        );
    }
    if old.input("instruction") != new.input("instruction") {
        reasons.push("the instruction or a variable it uses changed".to_string());
    }
    if both_differ("sources") {
        reasons.push(
            "the content of a URL or the commit of a git repository it adds changed".to_string(),
        );
    }
    if both_differ("mounts") {
        reasons.push("what a bind mount shows, or the network, changed".to_string());
    }
    if old.input("state") != new.input("state") {
        reasons.push("its result (config or ARG values) changed".to_string());
    }
    // Both lists are sorted by path: one merge, no map of either.
    let (mut o, mut n) = (old.files.cursor(), new.files.cursor());
    let (mut o_at, mut n_at) = (o.advance(), n.advance());
    let mut changed = 0usize;
    let mut files: Vec<(String, Vec<&str>)> = Vec::new();
    let mut note = |path: &str, what: Vec<&'static str>| {
        changed += 1;
        if files.len() < 5 {
            files.push((path.to_string(), what));
        }
    };
    while o_at || n_at {
        let order = match (o_at, n_at) {
            (true, true) => o.path().cmp(n.path()),
            (true, false) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                note(o.path(), vec!["removed"]);
                o_at = o.advance();
            }
            std::cmp::Ordering::Greater => {
                note(n.path(), vec!["added"]);
                n_at = n.advance();
            }
            std::cmp::Ordering::Equal => {
                let mut what = Vec::new();
                if o.content() != n.content() {
                    what.push("content");
                }
                if o.mode() != n.mode() {
                    what.push("mode");
                }
                if !what.is_empty() {
                    note(n.path(), what);
                }
                o_at = o.advance();
                n_at = n.advance();
            }
        }
    }
    if changed > 0 {
        let shown: Vec<String> = files
            .iter()
            .map(|(p, w)| format!("{p} ({})", w.join(", ")))
            .collect();
        reasons.push(format!(
            "{changed} file{} changed: {}{}",
            if changed == 1 { "" } else { "s" },
            shown.join("; "),
            if changed > 5 {
                format!("; and {} more", changed - 5)
            } else {
                String::new()
            }
        ));
    }
    if reasons.is_empty() {
        reasons.push("inputs differ from the last recorded build".into());
    }
    reasons
}

#[allow(clippy::too_many_arguments)]
fn run_stage(
    plan: &Plan,
    s: usize,
    ctx: &Context,
    store: &Store,
    opts: &BuildOptions,
    progress: &dyn Progress,
    results: &Mutex<BTreeMap<usize, StageResult>>,
    counters: &Mutex<Counters>,
) -> Result<StageResult, BuildError> {
    let stage = &plan.stages[s];
    progress.event(&Event::StageStart {
        stage: s,
        name: stage.name.clone(),
        steps: stage.steps.len(),
    });
    let base_stage = |i: usize| {
        results
            .lock()
            .unwrap()
            .get(&i)
            .cloned()
            .expect("dependencies run first")
    };
    let mut lineage = strata_cache::Lineage {
        base_manifest: None,
        base_layers: 0,
        base_history: 0,
        upper: Vec::new(),
    };
    type Root = Option<std::sync::Arc<Value>>;
    type Segments = Vec<std::sync::Arc<[image::History]>>;
    let (mut parent, mut layers, root, inherited): (Key, Vec<LayerDesc>, Root, Segments) =
        match &stage.base {
            Base::Scratch => (
                KeyHasher::new("base")
                    .str("scratch", "")
                    .str("platform", &stage.platform.to_string())
                    .finish(),
                Vec::new(),
                None,
                Vec::new(),
            ),
            Base::Stage(i) => {
                let r = base_stage(*i);
                lineage = r.lineage.clone();
                (
                    r.key,
                    r.layers.clone(),
                    r.image.root.clone(),
                    r.image.history.clone(),
                )
            }
            Base::Image(img) => {
                import_base(store, img)?;
                lineage.base_manifest = Some(img.manifest_digest);
                lineage.base_layers = img.layers.len() as u32;
                lineage.base_history = img
                    .config
                    .get("history")
                    .and_then(Value::as_array)
                    .map(|h| h.len() as u32)
                    .unwrap_or(0);
                let k = KeyHasher::new("base")
                    .str("image", &img.manifest_digest.to_string())
                    .str("platform", &stage.platform.to_string())
                    .finish();
                (
                    k,
                    img.layers.clone(),
                    Some(std::sync::Arc::new(img.config.clone())),
                    Vec::new(),
                )
            }
        };
    let mut history = Vec::new();
    // New COPY layer diff_id → the diff_id of the layer the same step made before.
    let mut similar: std::collections::HashMap<Digest, Digest> = Default::default();
    // Scratch space for COPY, WORKDIR and RUN mounts, made when a step first needs it (a mkdir
    // per stage showed in profiles of long chains of config-only stages).
    let scratch = std::cell::OnceCell::new();
    let tmp = || -> Result<&tempfile::TempDir, BuildError> {
        if let Some(t) = scratch.get() {
            return Ok(t);
        }
        let t = tempfile::Builder::new()
            .prefix("copy-")
            .tempdir_in(store.scratch())
            .map_err(|e| BuildError::Io {
                path: store.scratch().to_path_buf(),
                source: e,
            })?;
        Ok(scratch.get_or_init(|| t))
    };
    // Parent layers being unpacked for a RUN of this stage (see the COPY step). Dropped with
    // the stage: what is still unpacking then is not needed (the stage failed) and stops.
    let mut prefetched: Vec<crate::sandbox::Prefetch> = Vec::new();
    for (i, step) in stage.steps.iter().enumerate() {
        let start = Instant::now();
        progress.event(&Event::StepStart {
            stage: s,
            step: i,
            text: step.text.clone(),
        });
        let wrap = |e: BuildError| at_step(opts, s, i, step, e);
        let loc = location(opts, s, i);
        // Held until the step's record is written: the same step in another stage or image of
        // this process waits, then finds it cached instead of running it again.
        let mut inflight: Option<KeyLock> = None;
        // The key the next step stands on, when it is not this step's key (see `copy::chain`).
        let mut next_parent: Option<Key> = None;
        // What `--explain` will compare a later build of this step with: built for a step
        // that runs (it is stored with its record), never for a cache hit.
        let (key, explain_record, status, layer) = match &step.kind {
            StepKind::Config { state } => {
                let k = KeyHasher::new("config")
                    .key("parent", &parent)
                    .bytes("state", state)
                    .finish();
                let inputs = vec![
                    ExplainInput {
                        name: "parent".into(),
                        value: parent,
                    },
                    ExplainInput {
                        name: "state".into(),
                        value: *blake3::hash(state).as_bytes(),
                    },
                ];
                let hit = cached_step(store, opts, progress, &k)?.is_some();
                (
                    k,
                    Some(ExplainRecord {
                        inputs,
                        files: Default::default(),
                    }),
                    if hit {
                        StepStatus::Cached
                    } else {
                        StepStatus::Executed
                    },
                    None,
                )
            }
            StepKind::Run(run) => {
                let mut env = run.env.clone();
                if let Some(sde) = opts.sde_env {
                    env.push(format!("SOURCE_DATE_EPOCH={sde}"));
                }
                let network = mounts::network_of(run, &opts.run);
                let mut k = KeyHasher::new("run");
                k.key("parent", &parent)
                    .str("rootfs", crate::sandbox::ROOTFS_VIEW)
                    .strs("argv", &run.argv)
                    .strs("env", &env)
                    .str("user", &run.user)
                    .str("workdir", &run.workdir)
                    .str(
                        "network",
                        if network == plan::Network::Host {
                            "host"
                        } else {
                            "none"
                        },
                    )
                    .str("compression", opts.compression.id())
                    .u64("source-date-epoch", opts.source_date_epoch);
                for m in &run.cache_mounts {
                    k.str("cache-mount", &m.target);
                    // Only what is set, so the keys of plain cache mounts stay as they were.
                    // The cache's contents (and so what `from=` seeds it with) never enter.
                    if m.readonly {
                        k.u64("cache-ro", 1);
                    }
                    for (tag, v) in [
                        ("cache-mode", m.mode),
                        ("cache-uid", m.uid),
                        ("cache-gid", m.gid),
                    ] {
                        if let Some(v) = v {
                            k.u64(tag, v as u64);
                        }
                    }
                }
                // Bind sources by content (as a COPY of them is keyed); secrets never.
                let mut binds = Vec::new();
                for m in &run.mounts {
                    match &m.kind {
                        plan::RunMountKind::Bind { from, source, rw } => {
                            let p = mounts::prepare_source(
                                store,
                                ctx,
                                from,
                                source,
                                &base_stage,
                                opts.compression.id(),
                                opts.source_date_epoch,
                                tmp().map_err(wrap)?.path(),
                            )
                            .map_err(wrap)?;
                            k.str("bind-mount", &m.target)
                                .key("bind-source", &p.key)
                                .u64("bind-rw", *rw as u64);
                            binds.push(p);
                        }
                        plan::RunMountKind::Tmpfs { size } => {
                            k.str("tmpfs-mount", &m.target)
                                .u64("tmpfs-size", size.unwrap_or(0));
                        }
                        plan::RunMountKind::Ssh { id, .. } => {
                            k.str("ssh-mount", &m.target).str("ssh-id", id);
                        }
                        plan::RunMountKind::Secret {
                            id,
                            file,
                            env: var,
                            required,
                            mode,
                            uid,
                            gid,
                        } => {
                            if *required && !opts.run.secrets.contains_key(id) {
                                return Err(wrap(BuildError::MissingSecret { id: id.clone() }));
                            }
                            if let Some(v) = var {
                                k.str("secret-env", v);
                            }
                            k.str("secret-mount", if *file { &m.target } else { "" })
                                .str("secret-id", id)
                                .u64("secret-mode", *mode as u64)
                                .u64("secret-uid", *uid as u64)
                                .u64("secret-gid", *gid as u64);
                        }
                    }
                }
                // For `--explain` only: what the step mounts and its network, in one digest.
                let mounts_input = {
                    let mut h = KeyHasher::new("run-mounts");
                    h.str(
                        "network",
                        if network == plan::Network::Host {
                            "host"
                        } else {
                            "none"
                        },
                    );
                    for p in &binds {
                        h.key("bind-source", &p.key);
                    }
                    h.finish()
                };
                let k = k.finish();
                let ins = KeyHasher::new("run-instruction")
                    .strs("argv", &run.argv)
                    .strs("env", &env)
                    .str("user", &run.user)
                    .str("workdir", &run.workdir)
                    .finish();
                let inputs = vec![
                    ExplainInput {
                        name: "parent".into(),
                        value: parent,
                    },
                    ExplainInput {
                        name: "instruction".into(),
                        value: ins,
                    },
                    ExplainInput {
                        name: "mounts".into(),
                        value: mounts_input,
                    },
                ];
                let inputs = ExplainRecord {
                    inputs,
                    files: Default::default(),
                };
                inflight = Some(KeyLock::acquire(k));
                let cached_layer = cached_step(store, opts, progress, &k)?.and_then(|r| r.layer);
                match cached_layer {
                    Some(l) => (k, Some(inputs), StepStatus::Cached, Some(l)),
                    None => {
                        let (rec, counts) = run_step::execute(
                            store,
                            run,
                            &env,
                            &layers,
                            &similar,
                            opts,
                            tmp().map_err(wrap)?.path(),
                            run_step::Sources {
                                ctx,
                                stage: &base_stage,
                                progress,
                                binds,
                            },
                        )
                        .map_err(wrap)?;
                        counts.report(progress, s, i);
                        (k, Some(inputs), StepStatus::Executed, Some(rec))
                    }
                }
            }
            StepKind::Workdir(w) => {
                let k = KeyHasher::new("workdir")
                    .key("parent", &parent)
                    .bytes("state", &w.state)
                    .str("path", &w.path)
                    .opt_str("user", w.user.as_deref())
                    .str("compression", opts.compression.id())
                    .u64("source-date-epoch", opts.source_date_epoch)
                    .finish();
                let inputs = ExplainRecord {
                    inputs: vec![
                        ExplainInput {
                            name: "parent".into(),
                            value: parent,
                        },
                        ExplainInput {
                            name: "state".into(),
                            value: *blake3::hash(&w.state).as_bytes(),
                        },
                    ],
                    files: Default::default(),
                };
                inflight = Some(KeyLock::acquire(k));
                match cached_step(store, opts, progress, &k)?.and_then(|r| r.layer) {
                    Some(l) => (k, Some(inputs), StepStatus::Cached, Some(l)),
                    None => {
                        let rec =
                            workdir::execute(store, w, &layers, opts, tmp().map_err(wrap)?.path())
                                .map_err(wrap)?;
                        (k, Some(inputs), StepStatus::Executed, Some(rec))
                    }
                }
            }
            StepKind::Copy(spec) if spec.is_remote() => {
                let mut prep = remote::prepare(
                    spec,
                    &parent,
                    &opts.fetch,
                    opts.compression.id(),
                    opts.source_date_epoch,
                    tmp().map_err(wrap)?.path(),
                )
                .map_err(wrap)?;
                if !prep.includes_parent {
                    next_parent = Some(copy::chain(&parent, &prep.key));
                }
                inflight = Some(KeyLock::acquire(prep.key));
                match cached_step(store, opts, progress, &prep.key)?.and_then(|r| r.layer) {
                    Some(l) => (prep.key, None, StepStatus::Cached, Some(l)),
                    None => {
                        let explain = prep.explain_record();
                        let entries = remote::build_entries(
                            store,
                            spec,
                            &mut prep,
                            &layers,
                            &opts.fetch,
                            opts.source_date_epoch,
                            tmp().map_err(wrap)?.path(),
                        )
                        .map_err(wrap)?;
                        let entries = layer::canonicalize(entries, opts.source_date_epoch)
                            .map_err(|e| wrap(e.into()))?;
                        let rec = write_layer(store, &entries, opts, progress, s, i)?;
                        (prep.key, Some(explain), StepStatus::Executed, Some(rec))
                    }
                }
            }
            StepKind::Copy(spec) => {
                let from_result;
                let from = match &spec.from {
                    CopyFrom::Context => copy::FromSource::Context,
                    CopyFrom::Stage(j) => {
                        from_result = base_stage(*j);
                        copy::FromSource::Rootfs {
                            key: from_result.key,
                            layers: &from_result.layers,
                        }
                    }
                    CopyFrom::Image(img) => {
                        import_base(store, img).map_err(wrap)?;
                        let k = KeyHasher::new("base")
                            .str("image", &img.manifest_digest.to_string())
                            .finish();
                        copy::FromSource::Rootfs {
                            key: k,
                            layers: &img.layers,
                        }
                    }
                };
                // A RUN later in this stage needs the rootfs unpacked: the parent layers in the
                // background once this step misses the cache, and this layer as it is written.
                let run_follows = stage.steps[i + 1..]
                    .iter()
                    .any(|s| matches!(s.kind, StepKind::Run(_)));
                let snaps = run_follows.then(|| {
                    crate::sandbox::Snapshots::new(store.root()).with_scratch(store.scratch())
                });
                let snaps = snaps.as_ref();
                let mut prep = copy::prepare(
                    store,
                    ctx,
                    spec,
                    &parent,
                    &layers,
                    &from,
                    opts.compression.id(),
                    opts.source_date_epoch,
                    opts.no_cache,
                    tmp().map_err(wrap)?.path(),
                )
                .map_err(wrap)?;
                if !prep.includes_parent {
                    next_parent = Some(copy::chain(&parent, &prep.key));
                }
                progress.event(&Event::Hashing {
                    stage: s,
                    step: i,
                    files: prep.files,
                    hashed: prep.hashed,
                    bytes_hashed: prep.bytes_hashed,
                });
                inflight = Some(KeyLock::acquire(prep.key));
                let cached_layer =
                    cached_step(store, opts, progress, &prep.key)?.and_then(|r| r.layer);
                match cached_layer {
                    Some(l) => (prep.key, None, StepStatus::Cached, Some(l)),
                    None => {
                        if let Some(p) = snaps.and_then(|sn| sn.prefetch(store.blobs(), &layers)) {
                            prefetched.push(p);
                        }
                        let explain = prep.explain_record();
                        let entries = copy::build_entries(
                            store,
                            spec,
                            &mut prep,
                            &layers,
                            &from,
                            opts.source_date_epoch,
                            tmp().map_err(wrap)?.path(),
                        )
                        .map_err(wrap)?;
                        // The walk of the sources (one entry per file) is not needed any more:
                        // free it before the layer writer's buffers are allocated.
                        prep.sources = Vec::new();
                        let entries = layer::canonicalize(entries, opts.source_date_epoch)
                            .map_err(|e| wrap(e.into()))?;
                        // Unpack this layer for the RUN from the tar being written (no
                        // decompression, no second read of the blob), as a delta over the
                        // snapshot of the layer this step made last time when there is one
                        // (sandbox::delta), else in full.
                        let delta = if let Some(snaps) = snaps {
                            match previous_layer(store, &loc)? {
                                Some(prev) => snaps.start_delta(&prev),
                                None => None,
                            }
                            .or_else(|| snaps.start_full())
                        } else {
                            None
                        };
                        let (tee, delta) = match delta {
                            Some((tx, d)) => (Some(tx), Some(d)),
                            None => (None, None),
                        };
                        let mut w = store.blobs().writer()?;
                        let chunks = chunk_cache(store);
                        let written = layer::write_layer_tee(
                            &entries,
                            opts.compression,
                            &mut w,
                            Some(chunks.clone()),
                            tee,
                        );
                        if let Some(d) = delta {
                            d.finish(written.as_ref().ok().map(|o| &o.diff_id));
                        }
                        let out = written.map_err(|e| wrap(e.into()))?;
                        Compressed {
                            compressed: out.compressed_raw,
                            reused: out.reused_raw,
                        }
                        .report(progress, s, i);
                        let rec = commit_layer(store, w, &out, chunks.as_ref(), opts.compression)?;
                        (prep.key, Some(explain), StepStatus::Executed, Some(rec))
                    }
                }
            }
        };
        let explain = match (&explain_record, status) {
            (Some(new), StepStatus::Executed) if opts.explain => {
                explain_miss(store, &loc, new, opts.no_cache)?
            }
            _ => Vec::new(),
        };
        if status == StepStatus::Executed {
            // Interrupted (Ctrl-C / SIGTERM): a step that finished meanwhile is not recorded.
            if let Some(sig) = crate::sandbox::cancelled() {
                return Err(crate::sandbox::SandboxError::Interrupted(sig).into());
            }
            store.index().put_step(
                &key,
                &StepRecord {
                    layer: layer.clone(),
                    created_unix: unix_now(),
                },
                explain_record.as_ref(),
            )?;
            drop(explain_record);
            counters.lock().unwrap().executed += 1;
        } else {
            // The last use (for `strata gc`) was recorded by `use_step` with the lookup.
            counters.lock().unwrap().cached += 1;
        }
        if let (StepKind::Copy(_), StepStatus::Executed, Some(l)) = (&step.kind, status, &layer) {
            // The layer this step made last time is likely a near copy of this one: a RUN
            // after it can stack a small delta on that layer's snapshot (sandbox::delta).
            if let Some(prev) = previous_layer(store, &loc)? {
                similar.insert(l.diff_id, prev);
            }
        }
        store.index().put_last_at(&loc, &key)?;
        counters.lock().unwrap().steps.push((key, layer.clone()));
        drop(inflight);
        if let Some(l) = &layer {
            // Base-independent: only COPY --link from the context (no name lookup in the rootfs).
            let independent = match &step.kind {
                StepKind::Copy(spec) => {
                    spec.link
                        && matches!(spec.from, CopyFrom::Context)
                        && !spec
                            .chown
                            .as_deref()
                            .is_some_and(|c| c.chars().any(|ch| ch.is_ascii_alphabetic()))
                }
                _ => false,
            };
            lineage.upper.push((step.text.clone(), independent));
            layers.push(LayerDesc {
                digest: l.digest,
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: l.diff_id,
            });
        }
        if let Some(h) = &step.history {
            history.push(h.clone());
        }
        progress.event(&Event::StepDone {
            stage: s,
            step: i,
            text: step.text.clone(),
            status,
            key: key::short(&key),
            duration: start.elapsed(),
            layer_bytes: layer.as_ref().map(|l| l.size).unwrap_or(0),
            explain,
        });
        parent = next_parent.unwrap_or(key);
    }
    let mut segments = inherited;
    if !history.is_empty() {
        segments.push(history.into());
    }
    let image = StageImage {
        root,
        history: segments,
        stage: s,
        source_date_epoch: opts.source_date_epoch,
        layers: layers.clone(),
    };
    Ok(StageResult {
        key: parent,
        layers,
        image: std::sync::Arc::new(image),
        lineage,
    })
}

/// Writes `entries` as a layer into the store (no snapshot is unpacked alongside: a RUN after
/// the step unpacks the layer itself).
fn write_layer(
    store: &Store,
    entries: &[layer::Entry],
    opts: &BuildOptions,
    progress: &dyn Progress,
    stage: usize,
    step: usize,
) -> Result<LayerRecord, BuildError> {
    let mut w = store.blobs().writer()?;
    let chunks = chunk_cache(store);
    let out = layer::write_layer_tee(
        entries,
        opts.compression,
        &mut w,
        Some(chunks.clone()),
        None,
    )?;
    Compressed {
        compressed: out.compressed_raw,
        reused: out.reused_raw,
    }
    .report(progress, stage, step);
    commit_layer(store, w, &out, chunks.as_ref(), opts.compression)
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

/// A COPY/ADD source that cannot be resolved, found before anything is built.
#[derive(Debug)]
pub struct SourceProblem {
    pub span: crate::frontend::Span,
    pub instruction: String,
    pub error: ContextError,
}

/// Resolves the context sources of every COPY/ADD the build will run, so a missing source or one
/// outside the context fails before any step executes. The results are memoised in `ctx` and
/// reused by the build.
pub fn check_sources(plan: &Plan, ctx: &Context) -> Result<(), Box<SourceProblem>> {
    for &s in &plan.order {
        for step in &plan.stages[s].steps {
            let StepKind::Copy(spec) = &step.kind else {
                continue;
            };
            if !matches!(spec.from, CopyFrom::Context) {
                continue;
            }
            for src in &spec.sources {
                if let plan::CopySource::Path(p) = src {
                    ctx.prefetch_with(std::slice::from_ref(p), &spec.excludes, spec.parents)
                        .map_err(|error| {
                            Box::new(SourceProblem {
                                span: step.span,
                                instruction: step.text.clone(),
                                error,
                            })
                        })?;
                }
            }
        }
    }
    Ok(())
}

/// The record of step `k` if it can be reused: the store's (when its layer blob is present),
/// else an imported cache's, whose layer is then fetched into the store and the record written
/// (records after blobs). A failed fetch is a miss, with a warning: the step runs.
fn cached_step(
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
    r.created_unix = unix_now();
    store.index().put_step(k, &r, None)?;
    store.index().use_step(k)?;
    Ok(Some(r))
}

/// A process-wide lock on one step key (see its use in `run_stage`).
struct KeyLock(Key);

fn inflight() -> &'static (Mutex<std::collections::HashSet<Key>>, std::sync::Condvar) {
    static INFLIGHT: std::sync::OnceLock<(
        Mutex<std::collections::HashSet<Key>>,
        std::sync::Condvar,
    )> = std::sync::OnceLock::new();
    INFLIGHT.get_or_init(Default::default)
}

impl KeyLock {
    fn acquire(key: Key) -> KeyLock {
        let (m, cv) = inflight();
        let mut set = m.lock().unwrap();
        while set.contains(&key) {
            set = cv.wait(set).unwrap();
        }
        set.insert(key);
        KeyLock(key)
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        let (m, cv) = inflight();
        m.lock().unwrap().remove(&self.0);
        cv.notify_all();
    }
}

/// Tar bytes of a written layer that were compressed vs reused ([`Event::Compressed`]).
pub(crate) struct Compressed {
    pub compressed: u64,
    pub reused: u64,
}

impl Compressed {
    fn report(&self, progress: &dyn Progress, stage: usize, step: usize) {
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
    for l in &img.layers {
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
            image::BlobSource::Fetcher(f) => f.fetch(l, store.blobs()),
        };
        result.map_err(|source| BuildError::BaseBlob {
            digest: l.digest,
            origin: img.source.origin(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{self, Context};
    use crate::image::Platform;
    use crate::plan::PlanRequest;
    use std::path::Path;
    use strata_cache::FileFactsBuilder;

    /// The explain lines, and per COPY (files, files hashed).
    struct Collect(Mutex<Vec<String>>, Mutex<Vec<(usize, usize)>>);

    impl Progress for Collect {
        fn event(&self, e: &Event) {
            match e {
                Event::StepDone { explain, .. } => {
                    self.0.lock().unwrap().extend(explain.iter().cloned())
                }
                Event::Hashing { files, hashed, .. } => {
                    self.1.lock().unwrap().push((*files, *hashed))
                }
                _ => {}
            }
        }
    }

    fn build(dir: &Path, store: &Store, df: &str) -> (BuildOutput, Vec<String>) {
        let (out, why, _) = build_hashing(dir, store, df);
        (out, why)
    }

    fn build_hashing(
        dir: &Path,
        store: &Store,
        df: &str,
    ) -> (BuildOutput, Vec<String>, Vec<(usize, usize)>) {
        let req = PlanRequest {
            dockerfile_name: "Dockerfile".into(),
            source: df.to_string(),
            context_dir: dir.to_path_buf(),
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            images: None,
        };
        let plan = plan::plan(&req).unwrap();
        let ctx = Context::open(dir, context::IgnoreMatcher::empty()).unwrap();
        let opts = BuildOptions {
            compression: Compression::Gzip,
            source_date_epoch: 0,
            no_cache: false,
            jobs: 1,
            explain_scope: "test".into(),
            dockerfile: "Dockerfile".into(),
            sde_env: None,
            explain: true,
            remote: None,
            run: Default::default(),
            fetch: Default::default(),
        };
        let why = Collect(Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        let out = run(&plan, &ctx, store, &opts, &why).unwrap();
        (
            out,
            why.0.into_inner().unwrap(),
            why.1.into_inner().unwrap(),
        )
    }

    /// Golden step keys. A key changes only on purpose: a new key makes every user's cached
    /// step run again, so a change here goes with a note in docs/cache-keys.md. Covers COPY
    /// from the context over a parent (parent facts), a config step, a heredoc and `--chmod`.
    #[test]
    fn golden_step_keys() {
        let dir = tempfile::tempdir().unwrap();
        for (n, body) in [
            ("app/main.c", "int main(void) { return 0; }\n"),
            ("app/lib/util.h", "#define UTIL 1\n"),
            ("README", "hello\n"),
        ] {
            let p = dir.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, body).unwrap();
        }
        std::os::unix::fs::symlink("main.c", dir.path().join("app/link")).unwrap();
        let df = "FROM scratch\nCOPY README /etc/motd\nENV A=1\nCOPY app/ /src/\n\
                  COPY --chmod=0600 <<EOF /etc/note\nnote\nEOF\n";
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let (out, _) = build(dir.path(), &store, df);
        let keys: Vec<String> = out.steps.iter().map(|(k, _)| hex::encode(k)).collect();
        assert_eq!(keys, GOLDEN_KEYS, "step keys changed");
    }

    /// Golden WORKDIR step (key version 3): its key and its layer's diff_id, for a directory
    /// it creates as a numeric USER and for one that exists (an empty layer).
    #[test]
    fn golden_workdir_step() {
        let dir = tempfile::tempdir().unwrap();
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let df = "FROM scratch\nUSER 5:6\nWORKDIR /app/x\nWORKDIR /app\n";
        let (out, _) = build(dir.path(), &store, df);
        let got: Vec<(String, String)> = out
            .steps
            .iter()
            .filter_map(|(k, l)| Some((hex::encode(k), l.as_ref()?.diff_id.to_string())))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "350efc217a65b1049c05dfd3441f73579fbee9663726345504d8feae59a25f78".to_string(),
                    "sha256:6d985426102d6ec95c77fa91861df2ebe96d9f9c348e24c9128e7f4c46420a05"
                        .to_string()
                ),
                (
                    "d8ea86179a1053dac4229be75c73b49a5fc9eb51351857751156b41d84c3d64d".to_string(),
                    // The tar of no entries (two zero blocks): the well-known empty layer.
                    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
                        .to_string()
                )
            ],
            "WORKDIR keys or layers changed"
        );
    }

    /// Changed on purpose twice in issue 17: `copy-semantics` 2 in COPY keys (an existing
    /// destination keeps its metadata, `--from` symlink sources are followed) and key version 3
    /// (WORKDIR layers, the default PATH in the config state).
    const GOLDEN_KEYS: [&str; 4] = [
        "2001743ef7b746e50e6e38b9cb7973f0981aa1b54541a5a623471c50822bd1f2",
        "25fbd194a00b30a2abe3a34b4e4dbfff6c9e678c3ddbd7cfb7b2313a797b28df",
        "16bb2a18930222d0348f805216103c26555a8eac51220786bd1113c685676c40",
        "5bd0d53cf46265d4a37e0b710d1341000ddeb03b90655995d527f37accc66bd0",
    ];

    /// The stat set is matched with the walk by one merge in walk order (component-wise:
    /// `d/x` before `d.txt`): a file added or removed anywhere leaves the others trusted.
    #[test]
    fn stat_cache_survives_added_and_removed_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["d/x", "d/y", "d.txt", "d0/z", "e", "f/g/h", "f/i"];
        for n in names {
            let p = dir.path().join("src").join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, n).unwrap();
        }
        // Older than the set's recorded time (now - 50 ms), so not racy.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let df = "FROM scratch\nCOPY src/ /src/\n";
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let (_, _, h) = build_hashing(dir.path(), &store, df);
        assert_eq!(h, vec![(11, 7)], "4 directories + 7 files, all hashed");
        let (_, _, h) = build_hashing(dir.path(), &store, df);
        assert_eq!(h, vec![(11, 0)], "a rebuild trusts every entry");

        std::fs::remove_file(dir.path().join("src/d/y")).unwrap();
        std::fs::write(dir.path().join("src/d/a"), "new").unwrap();
        std::fs::write(dir.path().join("src/f/j"), "new").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        let (_, why, h) = build_hashing(dir.path(), &store, df);
        assert_eq!(h, vec![(12, 2)], "only the two new files are read");
        assert_eq!(
            why,
            vec!["3 files changed: src/d/a (added); src/d/y (removed); src/f/j (added)"]
        );
        let (_, _, h) = build_hashing(dir.path(), &store, df);
        assert_eq!(h, vec![(12, 0)]);
    }

    /// The stat-cache merge in `copy::hash_entries` relies on this: a real context walk (names
    /// where bytewise and component-wise order disagree: `d/x` vs `d-e`, `d.txt`, `d0`) comes out
    /// strictly increasing under `componentwise`.
    #[test]
    fn componentwise_order_is_the_walk_order() {
        use std::cmp::Ordering::*;
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(copy::componentwise(b"/c/d/x", b"/c/d.txt"), Less);
        assert_eq!(copy::componentwise(b"/c/d0/z", b"/c/d/x"), Greater);
        assert_eq!(copy::componentwise(b"/c/d", b"/c/d/x"), Less);
        assert_eq!(copy::componentwise(b"/c/e", b"/c/e"), Equal);

        let dir = tempfile::tempdir().unwrap();
        for f in ["c/e", "c/d0/z", "c/d.txt", "c/d-e", "c/d/x"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        let ctx = Context::open(dir.path(), context::IgnoreMatcher::empty()).unwrap();
        let src = ctx.resolve(&["c".to_string()], &[]).unwrap();
        let names: Vec<&str> = src[0]
            .entries
            .iter()
            .map(|e| e.rel_in_source.as_str())
            .collect();
        assert_eq!(names, ["d", "d/x", "d-e", "d.txt", "d0", "d0/z", "e"]);
        for w in src[0].entries.windows(2) {
            let (a, b) = (&w[0].host_path, &w[1].host_path);
            assert_eq!(
                copy::componentwise(a.as_os_str().as_bytes(), b.as_os_str().as_bytes()),
                Less,
                "{a:?} then {b:?}"
            );
        }
    }

    /// The per-file explain data of a COPY lives in its own record, written when the step
    /// runs: a cache hit reads a step record of a few dozen bytes whatever the file count
    /// (a COPY of 55k files made it ~10 MB, decoded at every hit), and `--explain` still names
    /// the changed file from the explain records.
    #[test]
    fn copy_step_records_carry_no_per_file_explain_data() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..300 {
            let p = dir.path().join(format!("src/d{}/f{i}.txt", i % 7));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("file {i}\n")).unwrap();
        }
        let df = "FROM scratch\nCOPY src/ /src/\n";
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let (first, _) = build(dir.path(), &store, df);
        let (key, _) = first.steps[0];
        let explain = store.index().get_explain(&key).unwrap().unwrap();
        assert_eq!(explain.files.len(), 307, "300 files and 7 directories");
        assert!(explain.input("instruction").is_some());
        assert!(
            explain.files.encoded_len() < 300 * 24,
            "{} bytes",
            explain.files.encoded_len()
        );
        let rec = store.index().get_step(&key).unwrap().unwrap();
        let encoded = serde_json::to_vec(&rec).unwrap();
        assert!(
            encoded.len() < 600,
            "step record of {} bytes",
            encoded.len()
        );

        let (hit, _) = build(dir.path(), &store, df);
        assert_eq!((hit.steps_executed, hit.steps_cached), (0, 1));

        std::fs::write(dir.path().join("src/d3/f10.txt"), "changed\n").unwrap();
        std::fs::remove_file(dir.path().join("src/d0/f0.txt")).unwrap();
        std::fs::write(dir.path().join("src/d0/new.txt"), "new\n").unwrap();
        let (changed, why) = build(dir.path(), &store, df);
        assert_eq!(changed.steps_executed, 1);
        assert_eq!(
            why,
            vec![
                "3 files changed: src/d0/f0.txt (removed); src/d0/new.txt (added); \
                 src/d3/f10.txt (content)"
                    .to_string()
            ]
        );
    }

    fn record(inputs: &[(&str, u8)], files: &[(&str, u64, u32)]) -> ExplainRecord {
        let mut b = FileFactsBuilder::default();
        for (p, c, m) in files {
            b.push(p, *c, *m);
        }
        ExplainRecord {
            inputs: inputs
                .iter()
                .map(|(n, v)| ExplainInput {
                    name: n.to_string(),
                    value: [*v; 32],
                })
                .collect(),
            files: b.finish(),
        }
    }

    #[test]
    fn explain_names_each_kind_of_file_change_in_path_order() {
        let old = record(
            &[("parent", 1), ("instruction", 2)],
            &[
                ("a", 1, 0o644),
                ("b", 2, 0o644),
                ("c", 3, 0o644),
                ("d", 4, 0o644),
            ],
        );
        let new = record(
            &[("parent", 1), ("instruction", 2)],
            &[
                ("a", 1, 0o755),
                ("b", 9, 0o600),
                ("c", 3, 0o644),
                ("e", 5, 0o644),
            ],
        );
        assert_eq!(
            explain_diff(&old, &new),
            vec!["4 files changed: a (mode); b (content, mode); d (removed); e (added)"]
        );
        assert_eq!(
            explain_diff(&old, &old),
            vec!["inputs differ from the last recorded build"]
        );
        let moved = record(&[("parent", 7), ("instruction", 3)], &[]);
        assert_eq!(
            explain_diff(&old, &moved),
            vec![
                "the previous step changed",
                "the instruction or a variable it uses changed",
                "4 files changed: a (removed); b (removed); c (removed); d (removed)",
            ]
        );
        let many: Vec<(String, u64, u32)> =
            (0..12).map(|i| (format!("f{i:02}"), i, 0o644)).collect();
        let many: Vec<(&str, u64, u32)> =
            many.iter().map(|(p, c, m)| (p.as_str(), *c, *m)).collect();
        let none = record(&[], &[]);
        assert_eq!(
            explain_diff(&none, &record(&[], &many)),
            vec![
                "12 files changed: f00 (added); f01 (added); f02 (added); f03 (added); \
                 f04 (added); and 7 more"
            ]
        );
    }
}
