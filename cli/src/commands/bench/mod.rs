//! `strata bench`: cache scenarios on the user's own Dockerfile — how much work each kind of
//! change costs, step by step, and which Dockerfile patterns make it expensive.
//!
//! Everything runs on a copy of the context in a throwaway store, so the user's files and store
//! are never touched. Scenarios: cold build; no-op rebuild; for each COPY/ADD, a one-file content
//! change in its first source; a build-arg change; for each base image (`oci-layout://` or a
//! registry's), a patched base: one more small layer under the same reference ([`base`]; the
//! user's layout, lock file and registry are never written).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;
use strata_cache::Store;
use strata_engine::context::{self, Context, ContextKind};
use strata_engine::frontend::{self, Command};
use strata_engine::image::Platform;
use strata_engine::layer::Compression;
use strata_engine::plan::{self, CopySource, PlanRequest, StepKind};
use strata_engine::session::{
    default_dockerfile, BuildRequest, CacheSource, LockUse, RegistryOptions, Session,
};
use strata_engine::solve::{Event, Progress, StepStatus};

use crate::args::{BenchArgs, Peer};

mod base;
mod peer;

#[derive(Debug, Clone, Serialize)]
struct StepRow {
    stage: usize,
    step: usize,
    instruction: String,
    status: &'static str,
    seconds: f64,
    layer_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Scenario {
    name: String,
    change: String,
    executed: usize,
    cached: usize,
    /// RUN steps reused by read set (docs/read-set.md).
    reused: usize,
    bytes_hashed: u64,
    /// Tar bytes that went through the compressor (the rest of the layers' tar bytes were
    /// reused compressed from earlier layers: `bytes_reused`).
    bytes_compressed: u64,
    bytes_reused: u64,
    bytes_written: u64,
    wall_seconds: f64,
    cpu_seconds: f64,
    peak_rss_kb: u64,
    steps: Vec<StepRow>,
    /// The same scenario built by `--peer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<PeerRun>,
}

#[derive(Debug, Clone, Serialize)]
struct PeerRun {
    builder: &'static str,
    storage: &'static str,
    wall_seconds: f64,
    /// The peer's wall time over strata's: how many times faster strata was.
    speedup: f64,
}

#[derive(Default)]
struct Collector {
    steps: Mutex<Vec<StepRow>>,
    hashed: Mutex<u64>,
    /// (compressed, reused) tar bytes.
    compressed: Mutex<(u64, u64)>,
}

impl Progress for Collector {
    fn event(&self, e: &Event) {
        match e {
            Event::StepDone {
                stage,
                step,
                text,
                status,
                duration,
                layer_bytes,
                ..
            } => {
                self.steps.lock().unwrap().push(StepRow {
                    stage: *stage,
                    step: *step,
                    instruction: text.clone(),
                    status: status.as_str(),
                    seconds: duration.as_secs_f64(),
                    layer_bytes: if *status == StepStatus::Executed {
                        *layer_bytes
                    } else {
                        0
                    },
                });
            }
            Event::Hashing { bytes_hashed, .. } => *self.hashed.lock().unwrap() += bytes_hashed,
            Event::Compressed {
                compressed, reused, ..
            } => {
                let mut c = self.compressed.lock().unwrap();
                c.0 += compressed;
                c.1 += reused;
            }
            _ => {}
        }
    }
}

fn rusage() -> (Duration, u64) {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

struct Bench {
    ctx_dir: PathBuf,
    dockerfile: PathBuf,
    /// Over the throwaway store.
    session: Session,
    target: Option<String>,
    jobs: usize,
    compression: Compression,
    peer: RefCell<Option<peer::PeerBuilder>>,
}

impl Bench {
    fn build(
        &self,
        name: &str,
        change: &str,
        build_args: &BTreeMap<String, String>,
    ) -> anyhow::Result<Scenario> {
        self.build_with(name, change, build_args, true)
    }

    /// [`Bench::build`]; the peer builds the scenario too when `with_peer` (and there is one).
    fn build_with(
        &self,
        name: &str,
        change: &str,
        build_args: &BTreeMap<String, String>,
        with_peer: bool,
    ) -> anyhow::Result<Scenario> {
        // As `strata build` would, but without a lock: a base-image scenario changes what a
        // tag names, which a pin would hide.
        let req = BuildRequest {
            context_dir: self.ctx_dir.clone(),
            dockerfile: self.dockerfile.clone(),
            dockerfile_named: true,
            build_args: build_args.clone(),
            target: self.target.clone(),
            platforms: vec![Platform::host()],
            tags: Vec::new(),
            outputs: Vec::new(),
            compression: self.compression,
            source_date_epoch: 0,
            source_date_epoch_given: false,
            no_cache: false,
            explain: false,
            jobs: self.jobs,
            run: Default::default(),
            lock: LockUse::None,
            cache_from: CacheSource::Imported(None),
            cache_to: Vec::new(),
            provenance: None,
            sbom: None,
        };
        let col = Collector::default();
        let (cpu0, _) = rusage();
        let t0 = Instant::now();
        self.session
            .build(&req, &col)
            .with_context(|| format!("scenario `{name}`"))?;
        let wall = t0.elapsed();
        let (cpu1, rss) = rusage();
        let mut steps = col.steps.into_inner().unwrap();
        steps.sort_by_key(|s| (s.stage, s.step));
        let peer = match self.peer.borrow_mut().as_mut() {
            Some(b) if with_peer => {
                let w = b
                    .build(build_args)
                    .with_context(|| format!("scenario `{name}` with {}", b.name()))?;
                Some(PeerRun {
                    builder: b.name(),
                    storage: b.storage(),
                    wall_seconds: w.as_secs_f64(),
                    speedup: w.as_secs_f64() / wall.as_secs_f64().max(1e-6),
                })
            }
            _ => None,
        };
        let (bytes_compressed, bytes_reused) = *col.compressed.lock().unwrap();
        Ok(Scenario {
            peer,
            name: name.to_string(),
            change: change.to_string(),
            executed: steps.iter().filter(|s| s.status == "executed").count(),
            cached: steps.iter().filter(|s| s.status == "cached").count(),
            reused: steps.iter().filter(|s| s.status == "reused").count(),
            bytes_hashed: col.hashed.into_inner().unwrap(),
            bytes_compressed,
            bytes_reused,
            bytes_written: steps.iter().map(|s| s.layer_bytes).sum(),
            wall_seconds: wall.as_secs_f64(),
            cpu_seconds: (cpu1 - cpu0).as_secs_f64(),
            peak_rss_kb: rss,
            steps,
        })
    }
}

fn copy_context(from: &Path, to: &Path) -> anyhow::Result<()> {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .context("running cp")?;
    if !st.success() {
        bail!("copying the context `{}` failed", from.display());
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> anyhow::Result<i32> {
    let ctx_src = std::fs::canonicalize(&a.context)
        .with_context(|| format!("build context `{}`", a.context.display()))?;
    // Before copying a big context: a missing peer fails in a moment.
    match a.peer {
        Some(Peer::Buildah) => drop(peer::buildah::find()?),
        Some(Peer::Buildkit) => drop(peer::buildkit::find()?),
        None => {}
    }
    let work = tempfile::Builder::new().prefix("strata-bench-").tempdir()?;
    let ctx_dir = work.path().join("context");
    std::fs::create_dir(&ctx_dir)?;
    copy_context(&ctx_src, &ctx_dir)?;
    let dockerfile = match &a.file {
        Some(f) => {
            let f = std::fs::canonicalize(f)
                .with_context(|| format!("Dockerfile `{}`", f.display()))?;
            match f.strip_prefix(&ctx_src) {
                Ok(rel) => ctx_dir.join(rel),
                Err(_) => f,
            }
        }
        None => default_dockerfile(&ctx_dir),
    };
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("invalid --build-arg `{kv}`: expected KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let jobs = a.jobs.unwrap_or_else(super::common::cpus);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build_global();
    let peer = match a.peer {
        Some(Peer::Buildah) => Some(peer::PeerBuilder::Buildah(peer::Buildah::new(
            work.path(),
            &dockerfile,
            &ctx_dir,
            a.target.clone(),
        )?)),
        Some(Peer::Buildkit) => Some(peer::PeerBuilder::BuildKit(peer::BuildKit::new(
            work.path(),
            &dockerfile,
            &ctx_dir,
            a.target.clone(),
        )?)),
        None => None,
    };
    let bench = Bench {
        peer: RefCell::new(peer),
        ctx_dir: ctx_dir.clone(),
        dockerfile: dockerfile.clone(),
        session: Session::new(
            Store::open(&work.path().join("store"))?,
            RegistryOptions::default(),
        ),
        target: a.target.clone(),
        jobs,
        compression: a.compression,
    };
    let mut scenarios = vec![bench.build("cold", "empty store", &build_args)?];
    scenarios.push(bench.build("no-op", "nothing changed", &build_args)?);

    // One scenario per COPY/ADD from the context: change the content of one file of its first source.
    let source = std::fs::read_to_string(&dockerfile)?;
    let plan0 = plan::plan(&PlanRequest {
        dockerfile_name: "Dockerfile".into(),
        source: source.clone(),
        context_dir: ctx_dir.clone(),
        build_args: build_args.clone(),
        target: a.target.clone(),
        platform: Platform::host(),
        images: Some(bench.session.image_resolver(&ctx_dir)?),
    })?;
    let ctx = Context::open(&ctx_dir, context::load_ignore(&ctx_dir, &dockerfile)?)?;
    let mut advice = Vec::new();
    let mut touched = std::collections::BTreeSet::new();
    for &s in &plan0.order {
        for (i, step) in plan0.stages[s].steps.iter().enumerate() {
            let StepKind::Copy(spec) = &step.kind else {
                continue;
            };
            if !matches!(spec.from, plan::CopyFrom::Context) {
                continue;
            }
            let Some(CopySource::Path(p)) = spec
                .sources
                .iter()
                .find(|s| matches!(s, CopySource::Path(_)))
            else {
                continue;
            };
            let resolved = ctx.resolve(std::slice::from_ref(p), &spec.excludes)?;
            let Some(file) = resolved
                .iter()
                .flat_map(|r| r.entries.iter())
                .find(|e| matches!(e.kind, ContextKind::File { .. }))
            else {
                continue;
            };
            if !touched.insert(file.host_path.clone()) {
                continue;
            }
            let n_files: usize = resolved.iter().map(|r| r.entries.len()).sum();
            let original = std::fs::read(&file.host_path)?;
            let mut changed = original.clone();
            changed.extend_from_slice(b"\n# strata bench\n");
            std::fs::write(&file.host_path, &changed)?;
            let rel = file
                .host_path
                .strip_prefix(&ctx_dir)
                .unwrap_or(&file.host_path)
                .display()
                .to_string();
            let sc = bench.build(
                &format!("change {rel}"),
                &format!("content of `{rel}` (a source of `{}`)", step.text),
                &build_args,
            );
            std::fs::write(&file.host_path, &original)?;
            let sc = sc?;
            let later: Vec<&StepRow> = sc
                .steps
                .iter()
                .filter(|r| r.status == "executed" && (r.stage, r.step) > (s, i))
                .collect();
            let later_secs: f64 = later.iter().map(|r| r.seconds).sum();
            if n_files > 1 && later.len() >= 2 {
                advice.push(format!(
                    "`{}` (stage {s}, step {}) covers {n_files} files; a change to any of them re-runs {} later steps ({later_secs:.2}s). Copy what those steps need (dependency manifests, lockfiles) in an earlier, narrower COPY and the rest after them.",
                    step.text,
                    i + 1,
                    later.len()
                ));
            }
            scenarios.push(sc);
        }
    }
    // A build-arg change: the first ARG declared inside a stage. An ARG before the first FROM
    // may name the base image (`ARG B=img:1` / `FROM $B`): changing it would ask for an image
    // that does not exist, not measure a changed argument.
    let df = frontend::parse("Dockerfile", &source)?;
    let first_arg = df
        .instructions
        .iter()
        .skip_while(|ins| !matches!(ins.command, Command::From(_)))
        .find_map(|ins| match &ins.command {
            Command::Arg(kvs) => kvs.first().map(|kv| kv.key.raw.clone()),
            _ => None,
        });
    if let Some(name) = first_arg {
        let mut args = build_args.clone();
        args.insert(name.clone(), "strata-bench-changed".into());
        scenarios.push(bench.build(
            &format!("build-arg {name}"),
            &format!("--build-arg {name}=strata-bench-changed"),
            &args,
        )?);
    }
    // A base-image change: each base in turn, patched with one small layer under the same
    // reference (an `oci-layout://` base in the bench's copy of its layout, a registry base in
    // the bench's store and session only: `base`).
    let mut notes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for &s in &plan0.order {
        let plan::Base::Image(img) = &plan0.stages[s].base else {
            continue;
        };
        if !seen.insert((format!("{:?}", img.source), img.reference.clone())) {
            continue;
        }
        let shown = base::shown(img);
        let applied = match base::apply(img, &bench.session, seen.len() as u32) {
            Ok(p) => p,
            Err(e) => {
                notes.push(format!("base-image change of `{shown}`: {e:#}"));
                continue;
            }
        };
        // The peer would pull the registry's unpatched image: no peer figure for that one.
        let registry = matches!(img.source, strata_engine::image::BlobSource::Fetcher(_));
        if registry && bench.peer.borrow().is_some() {
            notes.push(format!(
                "base-image change of `{shown}`: not built with the peer (it would pull the unpatched image from the registry)"
            ));
        }
        let sc = bench.build_with(
            &format!("base {}", img.reference),
            &format!(
                "`{shown}` now names a patched image ({}: one more layer with /{}){}",
                applied.manifest,
                base::PATCH_PATH,
                if registry {
                    "; the registry is not changed"
                } else {
                    ""
                }
            ),
            &build_args,
            !registry,
        );
        applied.restore(&bench.session)?;
        scenarios.push(sc?);
    }
    if seen.is_empty() {
        notes.push(
            "base-image change: the Dockerfile has no base image (only `scratch` and stages)"
                .to_string(),
        );
    }

    eprintln!("{}", table(&scenarios));
    for n in &notes {
        eprintln!("note: {n}");
    }
    for a in &advice {
        eprintln!("advice: {a}");
    }
    let report = serde_json::json!({ "scenarios": scenarios, "advice": advice, "notes": notes });
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing `{}`", p.display()))?;
    }
    if let Some(p) = &a.html {
        std::fs::write(p, html(&scenarios, &advice))
            .with_context(|| format!("writing `{}`", p.display()))?;
    }
    Ok(0)
}

fn mb(b: u64) -> String {
    format!("{:.1}", b as f64 / 1_048_576.0)
}

fn table(sc: &[Scenario]) -> String {
    let peer = sc.iter().find_map(|s| s.peer.as_ref().map(|p| p.builder));
    let mut out = format!(
        "{:<40} {:>8} {:>7} {:>7} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "scenario",
        "executed",
        "cached",
        "reused",
        "hashed MB",
        "compr. MB",
        "stored MB",
        "wall s",
        "cpu s",
        "peak MB"
    );
    if let Some(p) = peer {
        let _ = write!(out, " {:>10} {:>9}", format!("{p} s"), "speedup");
    }
    out.push('\n');
    for s in sc {
        let name: String = s.name.chars().take(40).collect();
        let _ = write!(
            out,
            "{:<40} {:>8} {:>7} {:>7} {:>10} {:>10} {:>10} {:>8.2} {:>8.2} {:>9}",
            name,
            s.executed,
            s.cached,
            s.reused,
            mb(s.bytes_hashed),
            mb(s.bytes_compressed),
            mb(s.bytes_written),
            s.wall_seconds,
            s.cpu_seconds,
            s.peak_rss_kb / 1024
        );
        if let Some(p) = &s.peer {
            let _ = write!(
                out,
                " {:>10.2} {:>9}",
                p.wall_seconds,
                format!("{:.1}x", p.speedup)
            );
        }
        out.push('\n');
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained page: one inline SVG bar chart per scenario (step durations, executed steps
/// in orange, cached in grey). No scripts, no network.
fn html(sc: &[Scenario], advice: &[String]) -> String {
    let mut h = String::from("<!doctype html><meta charset=utf-8><title>strata bench</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}</style><h1>strata bench</h1>");
    let peer = sc.iter().find_map(|s| s.peer.as_ref().map(|p| p.builder));
    h.push_str("<table><tr><th>scenario</th><th>executed</th><th>cached</th><th>hashed MB</th><th>compressed MB</th><th>stored MB</th><th>wall s</th><th>cpu s</th>");
    if let Some(p) = peer {
        let _ = write!(h, "<th>{p} wall s</th><th>speedup</th>");
    }
    h.push_str("</tr>");
    for s in sc {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td>",
            esc(&s.name),
            s.executed,
            s.cached,
            mb(s.bytes_hashed),
            mb(s.bytes_compressed),
            mb(s.bytes_written),
            s.wall_seconds,
            s.cpu_seconds
        );
        if let Some(p) = &s.peer {
            let _ = write!(
                h,
                "<td>{:.2}</td><td>{:.1}x</td>",
                p.wall_seconds, p.speedup
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    for a in advice {
        let _ = write!(h, "<p><b>advice:</b> {}</p>", esc(a));
    }
    let max = sc
        .iter()
        .flat_map(|s| s.steps.iter().map(|r| r.seconds))
        .fold(0.001f64, f64::max);
    for s in sc {
        let rows = s.steps.len().max(1);
        let (w, row_h, label_w) = (900.0, 18.0, 420.0);
        let _ = write!(h, "<h2>{}</h2><p>{}</p>", esc(&s.name), esc(&s.change));
        if let Some(p) = &s.peer {
            // Two bars on one scale: strata's wall time and the peer's.
            let top = p.wall_seconds.max(s.wall_seconds).max(1e-6);
            let scale = (w - label_w - 80.0) / top;
            let _ = write!(
                h,
                "<p>strata {:.1}x faster than {} ({} storage)</p><svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='40' role='img'>",
                p.speedup, p.builder, p.storage
            );
            for (k, (who, secs, color)) in [
                ("strata", s.wall_seconds, "#e8772e"),
                (p.builder, p.wall_seconds, "#4a7fc1"),
            ]
            .into_iter()
            .enumerate()
            {
                let y = k as f64 * row_h;
                let bw = (secs * scale).max(1.0);
                let _ = write!(
                    h,
                    "<text x='0' y='{}' font-size='12'>{who} wall time</text><rect x='{label_w}' y='{}' width='{bw:.1}' height='{}' fill='{color}'/><text x='{}' y='{}' font-size='11'>{secs:.3}s</text>",
                    y + 13.0,
                    y + 2.0,
                    row_h - 4.0,
                    label_w + bw + 4.0,
                    y + 13.0
                );
            }
            h.push_str("</svg>");
        }
        let _ = write!(
            h,
            "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{}' role='img'>",
            rows as f64 * row_h + 4.0
        );
        for (k, r) in s.steps.iter().enumerate() {
            let y = k as f64 * row_h;
            let bw = ((r.seconds / max) * (w - label_w - 80.0)).max(1.0);
            let color = if r.status == "executed" {
                "#e8772e"
            } else {
                "#bbb"
            };
            let label: String = format!("#{}.{} {}", r.stage, r.step + 1, r.instruction)
                .chars()
                .take(60)
                .collect();
            let _ = write!(
                h,
                "<text x='0' y='{}' font-size='12'>{}</text><rect x='{label_w}' y='{}' width='{bw:.1}' height='{}' fill='{color}'><title>{} {:.3}s</title></rect><text x='{}' y='{}' font-size='11'>{:.3}s {}</text>",
                y + 13.0,
                esc(&label),
                y + 2.0,
                row_h - 4.0,
                r.status,
                r.seconds,
                label_w + bw + 4.0,
                y + 13.0,
                r.seconds,
                r.status
            );
        }
        h.push_str("</svg>");
    }
    h
}
