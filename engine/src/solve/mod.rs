//! The solver: running a plan against the content store.
//!
//! Stages are the vertices of a DAG: each starts as soon as the stages it uses are done, at
//! most `jobs` at a time ([`schedule`]). Within a stage ([`stage`]), steps run in order: the
//! step's key ([`keys`], the one place every key domain is composed), a cache lookup, and on a
//! miss the step's execution (`copy`, `remote`, `run_step`, `workdir`) and the commit of its
//! layer ([`commit`]). A step whose key is in the index (and whose layer blob is present) is a
//! hit: nothing runs. Results are recorded only after their blobs are committed, so an
//! interrupted build caches nothing partial. Before anything runs, [`preflight`] checks the
//! whole plan; `--explain` says why a step missed ([`explain`]).

mod base_scan;
mod commit;
pub mod copy;
mod error;
mod explain;
mod keys;
pub mod layer_tree;
pub mod mounts;
mod preflight;
pub mod progress;
mod remote;
mod reuse;
mod run_step;
mod schedule;
mod shared;
mod stage;
mod workdir;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use strata_cache::{LayerRecord, Store};

use crate::attest::provenance::ContextFile;
use crate::context::Context;
use crate::image::AssembledImage;
use crate::layer::Compression;
use crate::plan::key::Key;
use crate::plan::{self, Plan};
pub use commit::import_base;
pub(crate) use commit::{chunk_cache, commit_layer, Compressed};
pub use error::BuildError;
pub use mounts::{RunOptions, Secret};
pub use preflight::{check_sources, SourceProblem};
pub use progress::{Event, ForPlatform, NoProgress, Progress, RunCost, StepStatus};
pub use shared::Shared;
pub use stage::{StageImage, StageResult};

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
    /// What this build shares with the other builds of its session (step key locks, parent
    /// trees): the same `Arc` for every image of a workspace.
    pub shared: std::sync::Arc<Shared>,
    /// Collect the context files COPY steps read ([`BuildOutput::context_files`]): only
    /// `--provenance` needs them.
    pub record_context: bool,
}

/// The outcome of a build.
pub struct BuildOutput {
    pub image: std::sync::Arc<AssembledImage>,
    pub steps_executed: usize,
    pub steps_cached: usize,
    /// RUN steps not run because their read set held (counted in neither of the above).
    pub steps_reused: usize,
    /// (reuse key, step key, read set) of the RUN steps that ran traced or were reused, for
    /// `--cache-to`.
    pub readsets: Vec<(Key, Key, Vec<u8>)>,
    /// Every step of the build (executed or cached), for `--cache-to`.
    pub steps: Vec<(Key, Option<LayerRecord>)>,
    /// Every step's key by (stage, step): the step DAG of `--provenance=mode=max`.
    pub step_keys: BTreeMap<(usize, usize), Key>,
    /// The context files the build's COPY/ADD steps read (the provenance's context digest).
    pub context_files: BTreeSet<ContextFile>,
}

/// What the stages of one build count together.
struct Counters {
    executed: usize,
    cached: usize,
    /// RUN steps reused by read set (docs/read-set.md).
    reused: usize,
    /// (reuse key, step key, read set) of the RUN steps this build ran traced or reused.
    readsets: Vec<(Key, Key, Vec<u8>)>,
    steps: Vec<(Key, Option<LayerRecord>)>,
    step_keys: BTreeMap<(usize, usize), Key>,
    context_files: BTreeSet<ContextFile>,
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
    preflight::check_secrets(plan, opts)?;
    preflight::check_pins(plan, opts)?;
    let build = stage::Build {
        plan,
        ctx,
        store,
        opts,
        progress,
        results: Mutex::new(BTreeMap::new()),
        counters: Mutex::new(Counters {
            executed: 0,
            cached: 0,
            reused: 0,
            readsets: Vec::new(),
            steps: Vec::new(),
            step_keys: BTreeMap::new(),
            context_files: BTreeSet::new(),
        }),
    };
    schedule::schedule(plan, opts.jobs, &build.results, |s| build.run_stage(s))?;
    let results = build.results.into_inner().unwrap();
    let c = build.counters.into_inner().unwrap();
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
        steps_reused: c.reused,
        steps: c.steps,
        readsets: c.readsets,
        step_keys: c.step_keys,
        context_files: c.context_files,
    })
}

/// `e`, located at step `i` (0-based) of stage `s`: `Dockerfile:LINE: stage S, step N (`TEXT`)`.
fn at_step(dockerfile: &str, s: usize, i: usize, step: &plan::Step, e: BuildError) -> BuildError {
    BuildError::Step {
        stage_step: format!(
            "{}:{}: stage {s}, step {} (`{}`)",
            dockerfile,
            step.span.line,
            i + 1,
            step.text
        ),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::explain::explain_diff;
    use super::*;
    use crate::context::{self, Context};
    use crate::image::Platform;
    use crate::plan::PlanRequest;
    use std::path::Path;
    use strata_cache::FileFactsBuilder;
    use strata_cache::{ExplainInput, ExplainRecord};

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
        build_for(dir, store, df, Platform::host())
    }

    fn build_for(
        dir: &Path,
        store: &Store,
        df: &str,
        platform: Platform,
    ) -> (BuildOutput, Vec<String>, Vec<(usize, usize)>) {
        let req = PlanRequest {
            dockerfile_name: "Dockerfile".into(),
            source: df.to_string(),
            context_dir: dir.to_path_buf(),
            build_args: BTreeMap::new(),
            target: None,
            platform,
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
            shared: Default::default(),
            record_context: false,
        };
        let why = Collect(Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        let out = run(&plan, &ctx, store, &opts, &why).unwrap();
        (
            out,
            why.0.into_inner().unwrap(),
            why.1.into_inner().unwrap(),
        )
    }

    /// The context and Dockerfile of the golden key tests: COPY from the context over a parent
    /// (parent facts), a config step, a heredoc and `--chmod`.
    fn golden_context() -> (tempfile::TempDir, &'static str) {
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
        (dir, df)
    }

    /// Golden step keys. A key changes only on purpose: a new key makes every user's cached
    /// step run again, so a change here goes with a note in docs/cache-keys.md. Covers COPY
    /// from the context over a parent (parent facts), a config step, a heredoc and `--chmod`.
    #[test]
    fn golden_step_keys() {
        let (dir, df) = golden_context();
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let (out, _) = build(dir.path(), &store, df);
        let keys: Vec<String> = out.steps.iter().map(|(k, _)| hex::encode(k)).collect();
        assert_eq!(keys, GOLDEN_KEYS, "step keys changed");
    }

    /// The platform is a key input (issue 21) wherever a step's result can depend on it: it is
    /// in the key of every base (`FROM scratch`, an image), so steps keyed by their parent's
    /// key (config steps, RUN) differ between platforms. COPY keys hold only the facts of the
    /// parent the copy depends on (`parent_use`), and a COPY layer's bytes never depend on the
    /// platform: those keys are shared, and so are the layers. The Dockerfile of
    /// `golden_step_keys` for linux/amd64 (the host's platform here and in CI) gives exactly the
    /// golden keys. A stage pinned to one platform (`FROM --platform=linux/amd64`, as
    /// `$BUILDPLATFORM` expands on this host) has the same keys whatever the target.
    #[test]
    fn golden_step_keys_per_platform() {
        let (dir, df) = golden_context();
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let p = |s: &str| Platform::parse(s).unwrap();
        let keys = |out: &BuildOutput| -> Vec<String> {
            out.steps.iter().map(|(k, _)| hex::encode(k)).collect()
        };
        let layers = |out: &BuildOutput| -> Vec<String> {
            out.steps
                .iter()
                .filter_map(|(_, l)| Some(l.as_ref()?.diff_id.to_string()))
                .collect()
        };
        let (amd64, _, _) = build_for(dir.path(), &store, df, p("linux/amd64"));
        let (arm64, _, _) = build_for(dir.path(), &store, df, p("linux/arm64"));
        assert_eq!(keys(&amd64), GOLDEN_KEYS, "amd64 step keys changed");
        assert_eq!(keys(&arm64), GOLDEN_KEYS_ARM64, "arm64 step keys changed");
        let differ: Vec<usize> = (0..4)
            .filter(|i| keys(&amd64)[*i] != keys(&arm64)[*i])
            .collect();
        assert_eq!(
            differ,
            [1],
            "the ENV step is keyed by its parent, the COPY steps are not"
        );
        assert_eq!(layers(&amd64), layers(&arm64));
        assert_ne!(amd64.image.config, arm64.image.config);
        let config: serde_json::Value = serde_json::from_slice(&arm64.image.config).unwrap();
        assert_eq!(config["architecture"], "arm64");
        assert!(config.get("variant").is_none());

        let pinned = df.replace("FROM scratch", "FROM --platform=linux/amd64 scratch");
        let (a, _, _) = build_for(dir.path(), &store, &pinned, p("linux/amd64"));
        let (b, _, _) = build_for(dir.path(), &store, &pinned, p("linux/arm64"));
        assert_eq!(keys(&a), GOLDEN_KEYS);
        assert_eq!(keys(&b), GOLDEN_KEYS);
    }

    /// `GOLDEN_KEYS`' Dockerfile for linux/arm64.
    const GOLDEN_KEYS_ARM64: [&str; 4] = [
        "2001743ef7b746e50e6e38b9cb7973f0981aa1b54541a5a623471c50822bd1f2",
        "e3f10a46092a3f8b413b0f4bda1a12c4fb98aefdfaae5571eef36ae4d1a97469",
        "16bb2a18930222d0348f805216103c26555a8eac51220786bd1113c685676c40",
        "5bd0d53cf46265d4a37e0b710d1341000ddeb03b90655995d527f37accc66bd0",
    ];

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
