//! Executing one stage: its base, then each step in order — key, cache lookup, execution on a
//! miss, record — and what the stage leaves for the stages that use it.
//!
//! [`Build`] is what every stage of one build shares; [`StageRun`] is one stage under way (its
//! parent key and layers so far, history, scratch space); each step kind has one method
//! returning a [`StepOutcome`], and [`StageRun::record`] does what follows every step. The
//! keys come from [`keys`](super::keys); layers are committed by [`commit`](super::commit).

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use strata_cache::{Digest, ExplainInput, ExplainRecord, LayerRecord, Lineage, StepRecord, Store};

use super::base_scan;
use super::commit::{self, cached_step, import_base, previous_layer};
use super::copy::{self, CopyEnv};
use super::keys::{self, LayerForm, ParentUse};
use super::shared::KeyLock;
use super::{
    explain, mounts, remote, reuse, run_step, workdir, BuildError, BuildOptions, Counters,
};
use super::{Event, Progress, StepStatus};
use crate::context::Context;
use crate::image::{self, AssembledImage, ImageInputs, LayerDesc};
use crate::layer;
use crate::plan::key::{self, Key};
use crate::plan::{self, Base, CopyFrom, CopySpec, Plan, RunStep, StepKind, WorkdirStep};

/// What a stage left behind.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub key: Key,
    pub layers: Vec<LayerDesc>,
    /// Assembled only for the target ([`StageImage::assemble`]).
    pub image: Arc<StageImage>,
    /// What the stage stands on (for `strata rebase`).
    pub lineage: Lineage,
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
    root: Option<Arc<Value>>,
    /// History entries added above `root`, by stage, bottom first (empty segments left out).
    history: Vec<Arc<[image::History]>>,
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

/// What every stage of one build shares.
pub(super) struct Build<'a> {
    pub plan: &'a Plan,
    pub ctx: &'a Context,
    pub store: &'a Store,
    pub opts: &'a BuildOptions,
    pub progress: &'a dyn Progress,
    /// Finished stages (dropped once their users are done: `schedule`).
    pub results: Mutex<BTreeMap<usize, StageResult>>,
    pub counters: Mutex<Counters>,
}

impl<'a> Build<'a> {
    /// The result of a finished stage this one depends on.
    fn stage_result(&self, i: usize) -> StageResult {
        self.results
            .lock()
            .unwrap()
            .get(&i)
            .cloned()
            .expect("dependencies run first")
    }

    fn form(&self) -> LayerForm<'_> {
        LayerForm {
            compression: self.opts.compression.id(),
            source_date_epoch: self.opts.source_date_epoch,
        }
    }

    /// Runs stage `s` (the stages it uses are done).
    pub(super) fn run_stage(&self, s: usize) -> Result<StageResult, BuildError> {
        let stage = &self.plan.stages[s];
        self.progress.event(&Event::StageStart {
            stage: s,
            name: stage.name.clone(),
            steps: stage.steps.len(),
        });
        let run = std::thread::scope(|sc| {
            // One import at a time of a base: a fleet's images start on it together. Held from
            // before the scan below claims its slots, so the image that imports is the one
            // whose scan reads the download.
            let importing = match &stage.base {
                Base::Image(img) => Some(self.opts.shared.lock(keys::import(&img.manifest_digest))),
                _ => None,
            };
            // A new base (a layer the store has no blob of) is read once for what the stage
            // will ask of it (base_scan): an OCI layout's from the layout while the store
            // imports it, a registry's as it downloads (base_scan::Feeds).
            let scan = match &stage.base {
                Base::Image(img) => {
                    let fresh: Vec<bool> = img
                        .layers
                        .iter()
                        .map(|l| !self.store.blobs().contains(&l.digest))
                        .collect();
                    fresh.contains(&true).then_some((img, fresh))
                }
                _ => None,
            };
            let mut feeds = None;
            if let Some((img, fresh)) = scan {
                let readers = match &img.source {
                    image::BlobSource::Layout(_) => Vec::new(),
                    image::BlobSource::Fetcher(_) => {
                        let (f, r) = base_scan::feeds(&fresh);
                        feeds = Some(f);
                        r
                    }
                };
                self.start_base_scan(sc, s, img, fresh, readers);
            }
            let mut run = StageRun::start(self, s, feeds.as_mut())?;
            // The import is over: a feed nobody read ends here.
            drop(feeds);
            drop(importing);
            self.steps(sc, s, &mut run)?;
            Ok::<_, BuildError>(run)
        })?;
        Ok(run.finish())
    }

    /// Starts [`base_scan::scan`] of `img` on `sc`, and returns once it holds the slots it will
    /// fill: the steps then wait for its pass instead of reading the base again.
    fn start_base_scan<'s, 'env>(
        &'env self,
        sc: &'s std::thread::Scope<'s, 'env>,
        s: usize,
        img: &'env image::BaseImage,
        fresh: Vec<bool>,
        feeds: Vec<Option<base_scan::FeedReader>>,
    ) {
        let stage = &self.plan.stages[s];
        let wants = base_scan::Wants {
            index: self.readset_eligible(s),
            tree: stage.steps.first().is_some_and(|st| match &st.kind {
                // Exactly the COPYs whose key reads the session's parent tree (`copy::prepare`).
                StepKind::Copy(spec) => keys::parent_use(spec) == ParentUse::Facts,
                _ => false,
            }),
        };
        let (claimed, is_claimed) = std::sync::mpsc::sync_channel(1);
        sc.spawn(move || {
            base_scan::scan(
                self.store,
                &self.opts.shared,
                img,
                &fresh,
                feeds,
                wants,
                || {
                    let _ = claimed.send(());
                },
            )
        });
        let _ = is_claimed.recv();
    }

    /// Whether stage `s` has a RUN that may be reused by read set (and so needs its parents'
    /// indexes).
    fn readset_eligible(&self, s: usize) -> bool {
        self.plan.stages[s].steps.iter().any(|st| match &st.kind {
            StepKind::Run(r) => {
                reuse::eligible(r, mounts::network_of(r, &self.opts.run), self.opts)
            }
            _ => false,
        })
    }

    /// The steps of stage `s`. A stage whose RUN may be reused by read set starts indexing its
    /// base's layers in the background (`sc`), while the steps before that RUN run: after a
    /// base patch the new base is indexed at the same time as a COPY reads its tree.
    fn steps<'s, 'env>(
        &'env self,
        sc: &'s std::thread::Scope<'s, 'env>,
        s: usize,
        run: &mut StageRun<'env, 'a>,
    ) -> Result<(), BuildError> {
        let stage = &self.plan.stages[s];
        if self.readset_eligible(s) && !run.layers.is_empty() {
            let layers = run.layers.clone();
            // Its result lands in the session's index slots; an error is met again, and
            // handled, by the RUN that needs the view.
            sc.spawn(move || reuse::view(self.store, &self.opts.shared, &layers).map(drop));
        }
        for (i, step) in stage.steps.iter().enumerate() {
            let start = Instant::now();
            self.progress.event(&Event::StepStart {
                stage: s,
                step: i,
                text: step.text.clone(),
            });
            let cx = StepCx {
                s,
                i,
                step,
                loc: keys::location(&self.opts.explain_scope, s, i),
            };
            let outcome = match &step.kind {
                StepKind::Config { state } => run.config(&cx, state),
                StepKind::Run(r) => run.run(&cx, r),
                StepKind::Workdir(w) => run.workdir(&cx, w),
                StepKind::Copy(spec) if spec.is_remote() => run.add_remote(&cx, spec),
                StepKind::Copy(spec) => run.copy(&cx, spec),
            }?;
            let executed = outcome.status == StepStatus::Executed;
            run.record(&cx, outcome, start)?;
            if executed {
                release_freed_memory();
            }
        }
        Ok(())
    }
}

/// Hands the memory a finished step freed back to the system. glibc keeps freed memory in the
/// arena of the thread that used it: after a COPY of 50k files hashed and written on several
/// threads, tens of MB stayed resident through the steps after it, and a build's peak RSS
/// was that plus the next step's own. Only after a step that ran (a cached or reused one frees
/// little, and a fleet has thousands of them); it costs up to a millisecond.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The step being run: where it is, for errors and `--explain`.
struct StepCx<'p> {
    s: usize,
    i: usize,
    step: &'p plan::Step,
    /// Its location key (`--explain` looks up the last key recorded there).
    loc: Key,
}

impl StepCx<'_> {
    /// `e`, located at this step (`Dockerfile:LINE: stage S, step N (`TEXT`)`).
    fn wrap(&self, opts: &BuildOptions) -> impl Fn(BuildError) -> BuildError + '_ {
        let dockerfile = opts.dockerfile.clone();
        move |e| super::at_step(&dockerfile, self.s, self.i, self.step, e)
    }
}

/// What a step's kind-specific part hands to [`StageRun::record`].
struct StepOutcome<'l> {
    key: Key,
    /// What `--explain` will compare a later build of this step with: built for a step that
    /// runs (it is stored with its record); `None` for a hit of a COPY.
    explain: Option<ExplainRecord>,
    status: StepStatus,
    layer: Option<LayerRecord>,
    /// The key the next step stands on, when it is not this step's key ([`keys::chain`]).
    next_parent: Option<Key>,
    /// Held until the step's record is written: the same step in another stage or image of
    /// this process waits, then finds it cached instead of running it again.
    lock: Option<KeyLock<'l>>,
    /// A RUN that ran traced: its reuse key and encoded read set, stored after its record.
    readset: Option<(Key, Vec<u8>)>,
    /// What read-set reuse did or found (shown with the step, and with `--explain`).
    note: Option<String>,
}

impl<'l> StepOutcome<'l> {
    fn pending(key: Key, explain: Option<ExplainRecord>, lock: KeyLock<'l>) -> Self {
        StepOutcome {
            key,
            explain,
            status: StepStatus::Executed,
            layer: None,
            next_parent: None,
            lock: Some(lock),
            readset: None,
            note: None,
        }
    }

    /// A RUN whose earlier layer holds for this parent (read-set reuse).
    fn reused(mut self, layer: LayerRecord, note: String) -> Self {
        self.status = StepStatus::Reused;
        self.layer = Some(layer);
        self.note = Some(note);
        self
    }

    fn cached(mut self, layer: LayerRecord) -> Self {
        self.status = StepStatus::Cached;
        self.layer = Some(layer);
        self
    }

    fn executed(mut self, layer: LayerRecord) -> Self {
        self.status = StepStatus::Executed;
        self.layer = Some(layer);
        self
    }
}

fn explain_record(inputs: Vec<ExplainInput>) -> ExplainRecord {
    ExplainRecord {
        inputs,
        files: Default::default(),
    }
}

fn parent_and_state(parent: &Key, state: &[u8]) -> Vec<ExplainInput> {
    vec![
        ExplainInput {
            name: "parent".into(),
            value: *parent,
        },
        ExplainInput {
            name: "state".into(),
            value: *blake3::hash(state).as_bytes(),
        },
    ]
}

/// One stage under way.
struct StageRun<'b, 'a> {
    b: &'b Build<'a>,
    s: usize,
    /// The key of the rootfs the next step stands on.
    parent: Key,
    /// The stage's layers so far, base first.
    layers: Vec<LayerDesc>,
    root: Option<Arc<Value>>,
    inherited: Vec<Arc<[image::History]>>,
    history: Vec<image::History>,
    lineage: Lineage,
    /// New COPY layer diff_id → the diff_id of the layer the same step made before.
    similar: HashMap<Digest, Digest>,
    /// Scratch space for COPY, WORKDIR and RUN mounts, made when a step first needs it (a mkdir
    /// per stage showed in profiles of long chains of config-only stages).
    scratch: OnceCell<tempfile::TempDir>,
    /// Parent layers being unpacked for a RUN of this stage (see [`StageRun::copy`]). Dropped
    /// with the stage: what is still unpacking then is not needed (the stage failed) and stops.
    prefetched: Vec<crate::sandbox::Prefetch>,
}

impl<'b, 'a> StageRun<'b, 'a> {
    /// The stage's base: its key, layers and config.
    fn start(
        b: &'b Build<'a>,
        s: usize,
        feeds: Option<&mut base_scan::Feeds>,
    ) -> Result<Self, BuildError> {
        let stage = &b.plan.stages[s];
        let platform = stage.platform.to_string();
        let mut lineage = Lineage {
            base_manifest: None,
            base_layers: 0,
            base_history: 0,
            upper: Vec::new(),
        };
        let (parent, layers, root, inherited) = match &stage.base {
            Base::Scratch => (keys::scratch(&platform), Vec::new(), None, Vec::new()),
            Base::Stage(i) => {
                let r = b.stage_result(*i);
                lineage = r.lineage.clone();
                (
                    r.key,
                    r.layers.clone(),
                    r.image.root.clone(),
                    r.image.history.clone(),
                )
            }
            Base::Image(img) => {
                // (Under the session's import lock of this base: `Build::run_stage`.)
                commit::import_base_fed(b.store, img, feeds)?;
                lineage.base_manifest = Some(img.manifest_digest);
                lineage.base_layers = img.layers.len() as u32;
                lineage.base_history = img
                    .config
                    .get("history")
                    .and_then(Value::as_array)
                    .map(|h| h.len() as u32)
                    .unwrap_or(0);
                (
                    keys::image(&img.manifest_digest, Some(&platform)),
                    img.layers.clone(),
                    Some(Arc::new(img.config.clone())),
                    Vec::new(),
                )
            }
        };
        Ok(StageRun {
            b,
            s,
            parent,
            layers,
            root,
            inherited,
            history: Vec::new(),
            lineage,
            similar: HashMap::new(),
            scratch: OnceCell::new(),
            prefetched: Vec::new(),
        })
    }

    fn scratch(&self) -> Result<PathBuf, BuildError> {
        if let Some(t) = self.scratch.get() {
            return Ok(t.path().to_path_buf());
        }
        let store = self.b.store;
        let t = tempfile::Builder::new()
            .prefix("copy-")
            .tempdir_in(store.scratch())
            .map_err(|e| BuildError::Io {
                path: store.scratch().to_path_buf(),
                source: e,
            })?;
        Ok(self.scratch.get_or_init(|| t).path().to_path_buf())
    }

    fn copy_env<'s>(&'s self, spool: &'s Path) -> CopyEnv<'s> {
        CopyEnv {
            store: self.b.store,
            shared: &self.b.opts.shared,
            ctx: self.b.ctx,
            form: self.b.form(),
            no_cache: self.b.opts.no_cache,
            spool,
        }
    }

    fn lookup(&self, key: &Key) -> Result<Option<StepRecord>, BuildError> {
        cached_step(self.b.store, self.b.opts, self.b.progress, key)
    }

    /// A config-only step: nothing to execute; a miss is "executed" by recording it.
    fn config(&mut self, _cx: &StepCx, state: &[u8]) -> Result<StepOutcome<'a>, BuildError> {
        let k = keys::config(&self.parent, state);
        let explain = explain_record(parent_and_state(&self.parent, state));
        let hit = self.lookup(&k)?.is_some();
        Ok(StepOutcome {
            key: k,
            explain: Some(explain),
            status: if hit {
                StepStatus::Cached
            } else {
                StepStatus::Executed
            },
            layer: None,
            next_parent: None,
            lock: None,
            readset: None,
            note: None,
        })
    }

    fn run(&mut self, cx: &StepCx, run: &RunStep) -> Result<StepOutcome<'a>, BuildError> {
        let (b, opts) = (self.b, self.b.opts);
        let wrap = cx.wrap(opts);
        let mut env = run.env.clone();
        if let Some(sde) = opts.sde_env {
            env.push(format!("SOURCE_DATE_EPOCH={sde}"));
        }
        let network = mounts::network_of(run, &opts.run);
        // Bind sources by content (as a COPY of them is keyed); secrets never. (A missing
        // required secret failed the build before anything ran: `preflight`.)
        let mut binds = Vec::new();
        for m in &run.mounts {
            if let plan::RunMountKind::Bind { from, source, .. } = &m.kind {
                let spool = self.scratch().map_err(&wrap)?;
                let cenv = CopyEnv {
                    no_cache: false,
                    ..self.copy_env(&spool)
                };
                let p = mounts::prepare_source(&cenv, from, source, &|i| b.stage_result(i))
                    .map_err(&wrap)?;
                if opts.record_context {
                    let files = p.context_files();
                    b.counters.lock().unwrap().context_files.extend(files);
                }
                binds.push(p);
            }
        }
        let bind_keys: Vec<Key> = binds.iter().map(|p| p.key).collect();
        let inputs = keys::RunInputs {
            parent: &self.parent,
            env: &env,
            network,
            binds: &bind_keys,
            form: b.form(),
        };
        let k = keys::run(run, &inputs);
        let explain = explain_record(vec![
            ExplainInput {
                name: "parent".into(),
                value: self.parent,
            },
            ExplainInput {
                name: "instruction".into(),
                value: keys::run_instruction(run, &env),
            },
            ExplainInput {
                name: "mounts".into(),
                value: keys::run_mounts(network, &bind_keys),
            },
        ]);
        let mut out = StepOutcome::pending(k, Some(explain), self.b.opts.shared.lock(k));
        if let Some(l) = self.lookup(&k)?.and_then(|r| r.layer) {
            return Ok(out.cached(l));
        }
        let store = b.store;
        let platform = b.plan.stages[self.s].platform.to_string();
        let reuse_key =
            reuse::eligible(run, network, opts).then(|| keys::run_reuse(run, &inputs, &platform));
        let layers = &self.layers;
        let parent_view = || reuse::view(store, &opts.shared, layers).map(Arc::new);
        if let (Some(rk), false) = (&reuse_key, opts.no_cache) {
            let step = |c: &Key| self.lookup(c);
            let last = store.index().get_last_at(&cx.loc)?;
            match reuse::find(store, opts.remote.as_deref(), rk, last, &parent_view, &step)
                .map_err(&wrap)?
            {
                reuse::Found::Reuse {
                    record,
                    paths,
                    readset,
                } => {
                    let layer = record.layer.expect("a RUN record has a layer");
                    out.readset = Some((*rk, readset));
                    return Ok(out.reused(
                        layer,
                        format!("reused by read set: its {paths} observed paths are unchanged"),
                    ));
                }
                reuse::Found::Changed(why) => {
                    out.note = Some(format!("ran again: it {why}"));
                }
                reuse::Found::Nothing => {}
            }
        }
        let scratch = self.scratch().map_err(&wrap)?;
        // The parent's view, for the read set, is made while the command runs.
        let (ran, view) = std::thread::scope(|sc| {
            let view = reuse_key.map(|_| sc.spawn(parent_view));
            let ran = run_step::execute(
                store,
                run,
                &env,
                layers,
                &self.similar,
                opts,
                &scratch,
                run_step::Sources {
                    ctx: b.ctx,
                    stage: &|i| b.stage_result(i),
                    progress: b.progress,
                    binds,
                },
                reuse_key.is_some(),
            );
            (
                ran,
                view.map(|h| h.join().expect("the view thread does not panic")),
            )
        });
        let mut ran = ran.map_err(&wrap)?;
        ran.counts.report(b.progress, cx.s, cx.i);
        let t_readset = Instant::now();
        if let (Some(rk), Some(trace), Some(view)) = (reuse_key, &ran.trace, view) {
            // Read sets are an optimisation: a parent or layer that cannot be indexed only
            // means this run is not offered for reuse.
            let recorded = match view {
                Ok(view) => {
                    reuse::record(store, &opts.shared, &view, trace, &ran.layer).map_err(&wrap)?
                }
                Err(e) => Err(format!("its parent cannot be indexed ({e})")),
            };
            match recorded {
                Ok(rs) => out.readset = Some((rk, reuse::encode(&rs))),
                Err(why) => {
                    out.note = Some(format!("not recorded for read-set reuse: {why}"));
                }
            }
        }
        ran.cost.readset = t_readset.elapsed();
        b.progress.event(&Event::RunCost {
            stage: cx.s,
            step: cx.i,
            cost: ran.cost,
        });
        Ok(out.executed(ran.layer))
    }

    fn workdir(&mut self, cx: &StepCx, w: &WorkdirStep) -> Result<StepOutcome<'a>, BuildError> {
        let wrap = cx.wrap(self.b.opts);
        let k = keys::workdir(&self.parent, w, self.b.form());
        let explain = explain_record(parent_and_state(&self.parent, &w.state));
        let out = StepOutcome::pending(k, Some(explain), self.b.opts.shared.lock(k));
        if let Some(l) = self.lookup(&k)?.and_then(|r| r.layer) {
            return Ok(out.cached(l));
        }
        let rec = workdir::execute(
            self.b.store,
            w,
            &self.layers,
            self.b.opts,
            &self.scratch().map_err(&wrap)?,
        )
        .map_err(&wrap)?;
        Ok(out.executed(rec))
    }

    /// `ADD <url>` / `ADD <git>`.
    fn add_remote(&mut self, cx: &StepCx, spec: &CopySpec) -> Result<StepOutcome<'a>, BuildError> {
        let (b, opts) = (self.b, self.b.opts);
        let wrap = cx.wrap(opts);
        let scratch = self.scratch().map_err(&wrap)?;
        let mut prep =
            remote::prepare(spec, &self.parent, &opts.fetch, b.form(), &scratch).map_err(&wrap)?;
        let mut out = StepOutcome::pending(prep.key, None, self.b.opts.shared.lock(prep.key));
        if !prep.includes_parent {
            out.next_parent = Some(keys::chain(&self.parent, &prep.key));
        }
        if let Some(l) = self.lookup(&prep.key)?.and_then(|r| r.layer) {
            return Ok(out.cached(l));
        }
        out.explain = Some(prep.explain_record());
        let entries = remote::build_entries(
            &self.copy_env(&scratch),
            spec,
            &mut prep,
            &self.layers,
            &opts.fetch,
        )
        .map_err(&wrap)?;
        let entries =
            layer::canonicalize(entries, opts.source_date_epoch).map_err(|e| wrap(e.into()))?;
        let rec = commit::write_layer(b.store, &entries, opts, b.progress, cx.s, cx.i)?;
        Ok(out.executed(rec))
    }

    /// COPY / ADD of the context, a stage or an image.
    fn copy(&mut self, cx: &StepCx, spec: &CopySpec) -> Result<StepOutcome<'a>, BuildError> {
        let (b, opts, store) = (self.b, self.b.opts, self.b.store);
        let wrap = cx.wrap(opts);
        let from_result;
        let from_key;
        let from = match &spec.from {
            CopyFrom::Context => copy::FromSource::Context,
            CopyFrom::Stage(j) => {
                from_result = b.stage_result(*j);
                copy::FromSource::Rootfs {
                    key: from_result.key,
                    layers: &from_result.layers,
                }
            }
            CopyFrom::Image(img) => {
                import_base(store, img).map_err(&wrap)?;
                from_key = keys::image(&img.manifest_digest, None);
                copy::FromSource::Rootfs {
                    key: from_key,
                    layers: &img.layers,
                }
            }
        };
        // A RUN later in this stage needs the rootfs unpacked: the parent layers in the
        // background once this step misses the cache, and this layer as it is written.
        let run_follows = b.plan.stages[self.s].steps[cx.i + 1..]
            .iter()
            .any(|s| matches!(s.kind, StepKind::Run(_)));
        let snaps = run_follows
            .then(|| crate::sandbox::Snapshots::new(store.root()).with_scratch(store.scratch()));
        let scratch = self.scratch().map_err(&wrap)?;
        let mut prep = copy::prepare(
            &self.copy_env(&scratch),
            spec,
            &self.parent,
            &self.layers,
            &from,
        )
        .map_err(&wrap)?;
        if opts.record_context && matches!(spec.from, CopyFrom::Context) {
            let files = prep.context_files();
            b.counters.lock().unwrap().context_files.extend(files);
        }
        b.progress.event(&Event::Hashing {
            stage: cx.s,
            step: cx.i,
            files: prep.files,
            hashed: prep.hashed,
            bytes_hashed: prep.bytes_hashed,
        });
        let mut out = StepOutcome::pending(prep.key, None, self.b.opts.shared.lock(prep.key));
        if !prep.includes_parent {
            out.next_parent = Some(keys::chain(&self.parent, &prep.key));
        }
        if let Some(l) = self.lookup(&prep.key)?.and_then(|r| r.layer) {
            return Ok(out.cached(l));
        }
        if let Some(p) = snaps
            .as_ref()
            .and_then(|sn| sn.prefetch(store.blobs(), &self.layers))
        {
            self.prefetched.push(p);
        }
        out.explain = Some(prep.explain_record());
        let entries = copy::build_entries(
            &self.copy_env(&scratch),
            spec,
            &mut prep,
            &self.layers,
            &from,
        )
        .map_err(&wrap)?;
        // The walk of the sources (one entry per file) is not needed any more: free it before
        // the layer writer's buffers are allocated.
        prep.sources = Vec::new();
        let entries =
            layer::canonicalize(entries, opts.source_date_epoch).map_err(|e| wrap(e.into()))?;
        // Unpack this layer for the RUN from the tar being written (no decompression, no second
        // read of the blob), as a delta over the snapshot of the layer this step made last time
        // when there is one (sandbox::delta), else in full.
        let delta = match &snaps {
            Some(snaps) => match previous_layer(store, &cx.loc)? {
                Some(prev) => snaps.start_delta(&prev),
                None => None,
            }
            .or_else(|| snaps.start_full()),
            None => None,
        };
        let rec = commit::write_layer_unpacking(
            store,
            &entries,
            opts,
            b.progress,
            (cx.s, cx.i),
            delta,
            &wrap,
        )?;
        Ok(out.executed(rec))
    }

    /// What follows every step: `--explain`, the step record (executed steps), the location
    /// record, lineage, layers, history, progress; then the next step's parent.
    fn record(
        &mut self,
        cx: &StepCx,
        out: StepOutcome<'_>,
        start: Instant,
    ) -> Result<(), BuildError> {
        let (b, opts, store) = (self.b, self.b.opts, self.b.store);
        let StepOutcome {
            key,
            explain: explain_rec,
            status,
            layer,
            next_parent,
            lock,
            readset,
            note,
        } = out;
        let mut explain = match (&explain_rec, status) {
            (Some(new), StepStatus::Executed) if opts.explain => {
                explain::explain_miss(store, &cx.loc, new, opts.no_cache)?
            }
            _ => Vec::new(),
        };
        if let Some(n) = note {
            if status == StepStatus::Reused || opts.explain {
                explain.push(n);
            }
        }
        if status != StepStatus::Cached {
            // Interrupted (Ctrl-C / SIGTERM): a step that finished meanwhile is not recorded.
            if let Some(sig) = crate::sandbox::cancelled() {
                return Err(crate::sandbox::SandboxError::Interrupted(sig).into());
            }
            store.index().put_step(
                &key,
                &StepRecord {
                    layer: layer.clone(),
                    created_unix: strata_cache::unix_now(),
                },
                explain_rec.as_ref(),
            )?;
            drop(explain_rec);
            let mut c = b.counters.lock().unwrap();
            if let Some((rk, bytes)) = readset {
                store.index().put_readset(&rk, &key, &bytes)?;
                c.readsets.push((rk, key, bytes));
            }
            match status {
                StepStatus::Reused => c.reused += 1,
                _ => c.executed += 1,
            }
        } else {
            // The last use (for `strata gc`) was recorded by `use_step` with the lookup.
            b.counters.lock().unwrap().cached += 1;
        }
        if let (StepKind::Copy(_), StepStatus::Executed, Some(l)) = (&cx.step.kind, status, &layer)
        {
            // The layer this step made last time is likely a near copy of this one: a RUN
            // after it can stack a small delta on that layer's snapshot (sandbox::delta).
            if let Some(prev) = previous_layer(store, &cx.loc)? {
                self.similar.insert(l.diff_id, prev);
            }
        }
        store.index().put_last_at(&cx.loc, &key)?;
        {
            let mut c = b.counters.lock().unwrap();
            c.steps.push((key, layer.clone()));
            c.step_keys.insert((cx.s, cx.i), key);
        }
        drop(lock);
        if let Some(l) = &layer {
            self.lineage
                .upper
                .push((cx.step.text.clone(), keys::base_independent(&cx.step.kind)));
            self.layers.push(LayerDesc {
                digest: l.digest,
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: l.diff_id,
            });
        }
        if let Some(h) = &cx.step.history {
            self.history.push(h.clone());
        }
        b.progress.event(&Event::StepDone {
            stage: cx.s,
            step: cx.i,
            text: cx.step.text.clone(),
            status,
            key: key::short(&key),
            duration: start.elapsed(),
            layer_bytes: layer.as_ref().map(|l| l.size).unwrap_or(0),
            explain,
        });
        self.parent = next_parent.unwrap_or(key);
        Ok(())
    }

    fn finish(self) -> StageResult {
        let mut segments = self.inherited;
        if !self.history.is_empty() {
            segments.push(self.history.into());
        }
        let image = StageImage {
            root: self.root,
            history: segments,
            stage: self.s,
            source_date_epoch: self.b.opts.source_date_epoch,
            layers: self.layers.clone(),
        };
        StageResult {
            key: self.parent,
            layers: self.layers,
            image: Arc::new(image),
            lineage: self.lineage,
        }
    }
}
