//! `strata verify`: the reproducibility gate. Builds the same inputs N times, each from nothing
//! in a throwaway store and under deliberately different conditions, then compares digests
//! (and, with `--against`, run 1 with a given image).
//!
//! Each run is a child `strata build` process: the umask, `TZ`/`LANG` and the size of the
//! hashing/compression thread pool are per-process state, so only a fresh process varies them
//! for real. The child runs `strata build` like any other (the global registry flags passed on).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use strata_engine::attest::provenance::ProvenanceMode;
use strata_engine::attest::sbom::SbomFormat;
use strata_engine::diff::{self, DiffOptions, DiffReport};

use strata_cache::Digest;
use strata_engine::export::ImageName;
use strata_engine::oci::MEDIA_TYPE_MANIFEST;
use strata_engine::sandbox::userns::RootlessUser;
use strata_engine::sandbox::Variation;
use strata_engine::session::output::OutputKind;
use strata_engine::session::{RegistryOptions, Session};

use super::image_input::{self, Inputs};
use super::verify_cause::{self, Causes};
use super::verify_dates;
use super::Globals;
use crate::args::{BuildArgs, VerifyArgs};

/// Fixed, odd mtime for the copied contexts: 2003-03-03 03:03:03 UTC, plus the run number.
const ODD_MTIME: i64 = 1_046_660_583;

/// The conditions of one run.
#[derive(Clone)]
pub(super) struct Conditions {
    pub(super) context: PathBuf,
    pub(super) dockerfile: PathBuf,
    pub(super) umask: u32,
    /// `None`: inherited from `strata verify`.
    pub(super) tz: Option<&'static str>,
    pub(super) lang: Option<&'static str>,
    pub(super) jobs: usize,
    /// What RUN commands see (`sandbox::vary`); none in run 1.
    pub(super) vary: Variation,
    /// Put the build's store in a fresh directory under this one (another kind of file system:
    /// RUN steps list directories in its order) instead of the run's directory; removed after.
    pub(super) store_on: Option<FsChoice>,
    /// Build as this user, rootless (verify runs as root); `None`: as verify's own user.
    pub(super) rootless: Option<RootlessUser>,
}

/// A file system for a run's store other than run 1's.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) struct FsChoice {
    pub(super) dir: PathBuf,
    /// `tmpfs`, `ext4`, …
    pub(super) kind: String,
}

pub(super) struct RunResult {
    pub(super) n: u32,
    pub(super) cond: Conditions,
    pub(super) digest: String,
    pub(super) oci: PathBuf,
    /// The wall-clock seconds (Unix time) the build started and ended in.
    pub(super) started: i64,
    pub(super) ended: i64,
}

enum Verdict {
    Reproducible,
    /// Run `n` differs from run 1.
    RunsDiffer(u32),
    AgainstDiffers,
}

/// The number of builds: `--runs`, else 2, or 1 with `--against` (one build compared with
/// what was shipped).
fn run_count(a: &VerifyArgs) -> u32 {
    a.runs.unwrap_or(if a.against.is_some() { 1 } else { 2 })
}

pub fn run(g: &Globals, a: VerifyArgs) -> anyhow::Result<i32> {
    if run_count(&a) == 1 && a.against.is_none() {
        bail!("--runs 1 compares nothing\nhint: give --against IMAGE to compare one build with it, or --runs 2 or more");
    }
    let registry_args = g.registry_args();
    if a.attest_verification {
        // Checked before any build: the attested index must have somewhere to go.
        if a.build.outputs.is_empty() {
            bail!("--attest-verification needs an --output to write the attested image to\nhint: add --output type=oci,dest=DIR (or type=oci-archive, type=registry)");
        }
        strata_engine::session::build::check_attestable(&a.build.outputs)?;
    }
    let base = match &a.keep {
        Some(d) => {
            fs::create_dir_all(d).with_context(|| format!("--keep `{}`", d.display()))?;
            Workdir::Kept(fs::canonicalize(d)?)
        }
        None => Workdir::Temp(
            tempfile::Builder::new()
                .prefix("strata-verify-")
                .tempdir()
                .context("creating a temporary directory")?,
        ),
    };
    let mut runs = Vec::new();
    let mut rootless = rootless_choice(&a);
    let result = verify(g, &a, base.path(), &mut runs, &registry_args, &mut rootless);
    // The date, which no run varies (`verify_dates`): looked for whatever the verdict.
    let dated = match (&result, runs.first()) {
        (Ok(_), Some(first)) => verify_dates::find(first, source_date_epoch(&a.build)),
        _ => Vec::new(),
    };
    let date_fails = verify_dates::fails(&dated);
    let code = match &result {
        Ok((Verdict::Reproducible, ..)) if !date_fails => 0,
        Ok(_) => 1,
        Err(_) => 2,
    };
    let (verdict, run_diff, against) = match &result {
        Ok((Verdict::Reproducible, d, ag)) if date_fails => (
            "not reproducible (files hold the date of the build)".to_string(),
            d.as_ref().map(|(d, _)| d),
            ag.as_ref(),
        ),
        Ok((v, d, ag)) => (verdict_text(v), d.as_ref().map(|(d, _)| d), ag.as_ref()),
        Err(_) => ("error".to_string(), None, None),
    };
    let causes = match &result {
        Ok((_, Some((_, c)), _)) => Some(c),
        _ => None,
    };
    let error = result.as_ref().err().map(|e| format!("{e:#}"));
    if let Some(md) = &a.markdown {
        let mut text = markdown(&verdict, &runs, run_diff, against, error.as_deref(), &a);
        text.push_str(&verify_cause::markdown(&runs, causes));
        fs::write(md, text).with_context(|| format!("--markdown `{}`", md.display()))?;
    }
    if a.json {
        let mut v = json_report(&verdict, &runs, run_diff, against, error.as_deref(), &a);
        v["variations"] = variations_json(&runs, &rootless);
        let (varied, not_varied) = varied_lists(&v["variations"]);
        v["varied"] = varied;
        v["not_varied"] = not_varied;
        v["causes"] = causes.map_or(Value::Null, Causes::to_json);
        v["dated_files"] = verify_dates::to_json(&dated);
        if date_fails {
            v["reproducible"] = false.into();
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
    }
    let kept = || {
        if let Some(d) = &a.keep {
            eprintln!(
                "kept: stores, contexts, outputs and build logs in {}",
                d.display()
            );
        }
    };
    match result {
        Err(e) => {
            kept();
            Err(e)
        }
        Ok((v, d, ag)) => {
            eprint!("{}", verify_dates::text(&dated));
            match v {
                Verdict::Reproducible if date_fails => {
                    eprintln!(
                        "verify: NOT reproducible: the {} runs are identical, but files hold the date of the build (above)",
                        runs.len()
                    );
                }
                Verdict::Reproducible => {
                    match (&ag, runs.len()) {
                        (Some((spec, _)), 1) => {
                            eprintln!("verify: reproducible: the build is bit-identical to {spec}")
                        }
                        _ => eprintln!("verify: reproducible ({} runs)", runs.len()),
                    }
                    let printed = if a.attest_verification {
                        let d = attest_verification(&a, &runs, base.path(), &g.registry, &rootless)
                            .context("--attest-verification")?;
                        eprintln!(
                            "verify: verification summary attached: the outputs now name {d}"
                        );
                        d.to_string()
                    } else {
                        runs[0].digest.clone()
                    };
                    if !a.json {
                        println!("{printed}");
                    }
                }
                Verdict::RunsDiffer(n) => {
                    let (r, causes) = d.as_ref().expect("a diff for differing runs");
                    eprintln!(
                        "verify: NOT reproducible: run {n} differs from run 1: {}",
                        diff::summary(r)
                    );
                    eprint!("{}", diff::render_text(r));
                    eprint!("{}", causes.text());
                }
                Verdict::AgainstDiffers => {}
            }
            if let Some((spec, r)) = &ag {
                if bit_identical(r) {
                    if runs.len() > 1 {
                        eprintln!("verify: run 1 is identical to {spec}");
                    }
                } else {
                    let not = if runs.len() == 1 {
                        "NOT reproducible: "
                    } else {
                        ""
                    };
                    eprintln!(
                        "verify: {not}run 1 differs from {spec}: {}",
                        against_summary(r)
                    );
                    eprint!("{}", diff::render_text(r));
                }
            }
            kept();
            Ok(code)
        }
    }
}

enum Workdir {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Workdir {
    fn path(&self) -> &Path {
        match self {
            Workdir::Kept(p) => p,
            Workdir::Temp(t) => t.path(),
        }
    }
}

/// The verdict, run 1 against the first differing run (and why they differ), and against
/// `--against`.
type Outcome = (
    Verdict,
    Option<(DiffReport, Causes)>,
    Option<(String, DiffReport)>,
);

fn verify(
    g: &Globals,
    a: &VerifyArgs,
    base: &Path,
    runs: &mut Vec<RunResult>,
    registry_args: &[OsString],
    rootless: &mut Result<RootlessUser, String>,
) -> anyhow::Result<Outcome> {
    let b = &a.build;
    // The image to compare with, first: a registry reference that does not resolve should
    // fail before anything is built.
    let against_dir = base.join("against");
    let mut against_input = None;
    let mut inputs = None;
    if let Some(spec) = &a.against {
        fs::create_dir_all(&against_dir)
            .with_context(|| format!("creating `{}`", against_dir.display()))?;
        let mut i = Inputs::new(g, Some(&against_dir), b.platform.as_deref())?;
        against_input = Some(
            i.resolve(spec)
                .with_context(|| format!("--against `{spec}`"))?,
        );
        inputs = Some(i);
    }
    let total = run_count(a);
    let context = fs::canonicalize(&b.context)
        .with_context(|| format!("build context `{}`", b.context.display()))?;
    if !context.is_dir() {
        bail!("build context `{}` is not a directory", b.context.display());
    }
    let dockerfile = match &b.file {
        Some(f) => fs::canonicalize(f).with_context(|| format!("Dockerfile `{}`", f.display()))?,
        None => strata_engine::session::default_dockerfile(&context),
    };
    let cpus = super::common::cpus();
    let jobs1 = b.jobs.unwrap_or(cpus).max(1);
    let other_jobs = if jobs1 == 1 { cpus.max(4) } else { 1 };
    let current_umask = unsafe {
        // Read the umask by setting it and putting it back (single-threaded here).
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    };
    let exe = std::env::current_exe().context("finding the strata executable")?;
    if let Ok(u) = &*rootless {
        // The rootless runs' directories are below `base`: it must let them through.
        let mode = fs::metadata(base)?.permissions().mode();
        fs::set_permissions(base, fs::Permissions::from_mode(mode | 0o011))
            .with_context(|| format!("letting {} into `{}`", u.name, base.display()))?;
    }
    let mut file_order = None;
    for n in 1..=total {
        if n == 2 {
            file_order = other_file_system(base, &base.join("run-1/store"));
        }
        let dir = base.join(format!("run-{n}"));
        fs::create_dir_all(&dir)?;
        let mut cond = if n == 1 {
            Conditions {
                context: context.clone(),
                dockerfile: dockerfile.clone(),
                umask: current_umask,
                tz: None,
                lang: None,
                jobs: jobs1,
                vary: Variation::default(),
                store_on: None,
                rootless: None,
            }
        } else {
            // Another path (deeper, with a space), other mtimes and modes, reversed creation
            // order; the Dockerfile moves with the context when it is inside it.
            let ctx = dir.join(format!("ctx {n}/moved/context"));
            fs::create_dir_all(&ctx)?;
            let ignore = strata_engine::context::load_ignore(&context, &dockerfile)?;
            let keep = |rel: &str, is_dir: bool| {
                // The Dockerfile and ignore files always, whatever the ignore file says.
                rel.ends_with(".dockerignore")
                    || rel.ends_with(".containerignore")
                    || context.join(rel) == dockerfile
                    || !ignore.is_excluded(rel)
                    || (is_dir && ignore.may_reinclude_below(rel))
            };
            copy_reversed(&context, &ctx, "", &keep, ODD_MTIME + i64::from(n))
                .with_context(|| format!("copying the context to `{}`", ctx.display()))?;
            let df = match dockerfile.strip_prefix(&context) {
                Ok(rel) => ctx.join(rel),
                Err(_) => dockerfile.clone(),
            };
            let odd = n % 2 == 0;
            Conditions {
                context: ctx,
                dockerfile: df,
                umask: if odd { 0o002 } else { 0o077 },
                tz: Some(if odd {
                    "Pacific/Chatham"
                } else {
                    "America/St_Johns"
                }),
                lang: Some(if odd { "tr_TR.UTF-8" } else { "ja_JP.eucJP" }),
                jobs: if odd { other_jobs } else { jobs1 },
                vary: inside_variation(n),
                store_on: file_order.clone(),
                rootless: rootless.clone().ok().filter(|_| odd),
            }
        };
        let oci = dir.join("oci");
        // Never in a second an earlier run used: `date +%s` must differ.
        let mut started = after_second(runs.last().map(|r: &RunResult| r.ended));
        let mut built = build_once(&exe, b, registry_args, &dir, &cond, &oci, n == 1);
        if let (Err(e), Some(u)) = (&built, &cond.rootless) {
            // What strata cannot do rootless (device nodes in a base layer, say) is no fault of
            // the Dockerfile: the run is made as root, and the report says rootless was not
            // varied, and why.
            let why = e.to_string();
            let why = why
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or(why.lines().last().unwrap_or_default())
                .trim_start_matches("error: ")
                .to_string();
            eprintln!(
                "run {n}/{total}: the rootless build (as {}) failed: {why}\nrun {n}/{total}: built as root instead; rootless is not varied",
                u.name
            );
            *rootless = Err(format!("the rootless build (as {}) failed: {why}", u.name));
            cond.rootless = None;
            // A fresh store and output; the context copy stays.
            for p in [dir.join("store"), oci.clone()] {
                if p.exists() {
                    fs::remove_dir_all(&p)
                        .with_context(|| format!("removing `{}`", p.display()))?;
                }
            }
            started = after_second(Some(now_secs()));
            built = build_once(&exe, b, registry_args, &dir, &cond, &oci, n == 1);
        }
        let digest = built.with_context(|| format!("run {n}/{total}"))?;
        eprintln!(
            "run {n}/{total}: {digest} (context at {}, umask {:03o}, TZ={}, LANG={}, jobs {}{})",
            cond.context.display(),
            cond.umask,
            inherited_or(cond.tz, "TZ"),
            inherited_or(cond.lang, "LANG"),
            cond.jobs,
            vary_text(&cond.vary) + &store_text(&cond.store_on) + &user_text(&cond.rootless)
        );
        runs.push(RunResult {
            n,
            cond,
            digest,
            oci,
            started,
            ended: now_secs(),
        });
    }
    let spec = |r: &RunResult| format!("oci:{}", r.oci.display());
    let first = &runs[0];
    let mut verdict = Verdict::Reproducible;
    let mut run_diff = None;
    if let Some(other) = runs.iter().find(|r| r.digest != first.digest) {
        verdict = Verdict::RunsDiffer(other.n);
        let d = compare(&spec(first), &spec(other))?;
        let causes = verify_cause::find(
            &verify_cause::Job {
                exe: &exe,
                build: b,
                registry_args,
                base,
                max_builds: a.max_builds,
            },
            first,
            other,
            &d,
        )?;
        run_diff = Some((d, causes));
    }
    let mut against = None;
    if let Some(input) = &against_input {
        let report = compare_with(&spec(first), input)?;
        if !bit_identical(&report) && matches!(verdict, Verdict::Reproducible) {
            verdict = Verdict::AgainstDiffers;
        }
        against = Some((input.shown.clone(), report));
    }
    drop(inputs);
    Ok((verdict, run_diff, against))
}

/// Run 1 (`built`, an OCI layout) against the `--against` image.
fn compare_with(built: &str, input: &image_input::Input) -> anyhow::Result<DiffReport> {
    let run = || -> Result<DiffReport, diff::DiffError> {
        let (x, y) = rayon::join(|| diff::load_image(built), || image_input::load(input));
        let mut r = diff::diff(&x?, &y?, &DiffOptions::default())?;
        if r.is_identical() && !bit_identical(&r) {
            r.notes.push(
                "the manifests have the same fields but not the same bytes (JSON formatting or key order): not bit-identical".into(),
            );
        }
        Ok(r)
    };
    run().map_err(|e| match e.hint() {
        Some(h) => anyhow::anyhow!("comparing the build with {}: {e}\nhint: {h}", input.shown),
        None => anyhow::anyhow!("comparing the build with {}: {e}", input.shown),
    })
}

/// Whether the build is the `--against` image bit for bit: the same manifest digest (which
/// pins the config and every layer blob); for inputs without one, no difference at all.
fn bit_identical(r: &DiffReport) -> bool {
    match (r.a.manifest_digest, r.b.manifest_digest) {
        (Some(x), Some(y)) => x == y,
        _ => r.is_identical(),
    }
}

/// [`diff::summary`], unless the images differ in their manifest bytes only.
fn against_summary(r: &DiffReport) -> String {
    if r.is_identical() {
        "the manifests differ in their bytes only (same fields)".into()
    } else {
        diff::summary(r)
    }
}

pub(super) fn compare(a: &str, b: &str) -> anyhow::Result<DiffReport> {
    let run = || -> Result<DiffReport, diff::DiffError> {
        let (x, y) = rayon::join(|| diff::load_image(a), || diff::load_image(b));
        diff::diff(&x?, &y?, &DiffOptions::default())
    };
    run().map_err(|e| match e.hint() {
        Some(h) => anyhow::anyhow!("comparing {a} with {b}: {e}\nhint: {h}"),
        None => anyhow::anyhow!("comparing {a} with {b}: {e}"),
    })
}

/// `--attest-verification`: the VSA of the reproducible `runs` attached to run 1's image (in
/// run 1's store) beside its other statements, written to the user's outputs again; returns
/// the new index's digest.
fn attest_verification(
    a: &VerifyArgs,
    runs: &[RunResult],
    base: &Path,
    registry: &RegistryOptions,
    rootless: &Result<RootlessUser, String>,
) -> anyhow::Result<Digest> {
    use strata_engine::attest::{self, vsa};
    let session = Session::new(
        super::open_store(&base.join("run-1/store"))?,
        registry.clone(),
    );
    let blobs = session.store().blobs();
    let digest: Digest = runs[0].digest.parse()?;
    let top: Value = serde_json::from_slice(&blobs.read_verified(&digest)?)?;
    let media_type = top["mediaType"].as_str().unwrap_or(MEDIA_TYPE_MANIFEST);
    let (img, attested) = match strata_engine::export::Stored::load(blobs, &digest, media_type)? {
        strata_engine::export::Stored::Image(i) => (i, None),
        strata_engine::export::Stored::Attested(i, a) => (i, Some(a)),
        strata_engine::export::Stored::Index(_) => {
            bail!("--attest-verification of a multi-platform build is not supported yet\nhint: verify each platform with its own --platform")
        }
    };
    let (mut statements, inputs) = match &attested {
        Some(at) => (
            at.statements(blobs)?,
            at.layers
                .iter()
                .map(|l| (l.predicate_type.clone(), l.digest))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let tags = a
        .build
        .tags
        .iter()
        .map(|t| ImageName::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let named = a
        .build
        .outputs
        .iter()
        .find_map(|o| match o.kind() {
            OutputKind::Registry(r) => Some(r.name()),
            _ => None,
        })
        .or_else(|| tags.first().map(|t| t.name.clone()));
    let variations = variations_json(runs, rootless)
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["varied"] == true)
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    let sde_given = a.build.source_date_epoch.is_some()
        || std::env::var("SOURCE_DATE_EPOCH").is_ok_and(|v| !v.is_empty());
    let sde = super::common::source_date_epoch(a.build.source_date_epoch)?;
    statements.push(vsa::verification_summary(&vsa::Verification {
        resource_uri: match named {
            Some(n) => format!("{n}@{digest}"),
            None => digest.to_string(),
        },
        digest: &digest,
        runs: runs.len() as u32,
        variations,
        inputs,
        source_date_epoch: sde_given.then_some(sde),
    }));
    let platforms = strata_engine::session::build::target_platforms(a.build.platform.as_deref())?;
    let [platform] = platforms.as_slice() else {
        bail!("--attest-verification of a multi-platform build is not supported yet\nhint: verify each platform with its own --platform");
    };
    let att = attest::attach(blobs, &img, platform, &statements)?;
    for o in &a.build.outputs {
        let w = session.write_output(
            strata_engine::export::Root::Attested(&img, &att),
            &tags,
            o,
            sde,
        )?;
        if let strata_engine::session::Written::Pushed { target, report } = &w {
            eprintln!("{}", super::common::pushed_line(target, report));
        }
    }
    Ok(att.index_digest)
}

/// One `strata build` in a child process, into a fresh store under `dir`; returns the digest.
pub(super) fn build_once(
    exe: &Path,
    b: &BuildArgs,
    registry_args: &[OsString],
    dir: &Path,
    cond: &Conditions,
    oci: &Path,
    first: bool,
) -> anyhow::Result<String> {
    // Removed when this returns: the OCI output is outside the store.
    let elsewhere = match &cond.store_on {
        Some(fs) => Some(
            tempfile::Builder::new()
                .prefix("strata-verify-store-")
                .tempdir_in(&fs.dir)
                .with_context(|| format!("creating a store in `{}`", fs.dir.display()))?,
        ),
        None => None,
    };
    let store = match &elsewhere {
        Some(t) => t.path().join("store"),
        None => dir.join("store"),
    };
    if let Some(u) = &cond.rootless {
        // Everything the build writes is the user's; the context copy is below `dir`.
        let mut own = vec![dir.to_path_buf()];
        own.extend(elsewhere.as_ref().map(|t| t.path().to_path_buf()));
        for p in own {
            chown_tree(&p, u).with_context(|| {
                format!("giving `{}` to {} (rootless run)", p.display(), u.name)
            })?;
        }
    }
    let mut cmd = Command::new(exe);
    cmd.arg("--store").arg(&store);
    cmd.args(registry_args);
    cmd.arg("build");
    cmd.args(forwarded(b, first));
    cmd.arg("--jobs").arg(cond.jobs.to_string());
    cmd.args(["--progress", "plain"]);
    cmd.arg("--output")
        .arg(format!("type=oci,dest={}", oci.display()));
    cmd.arg("--file").arg(&cond.dockerfile).arg(&cond.context);
    if let Some(tz) = cond.tz {
        cmd.env("TZ", tz);
    }
    if cond.rootless.is_some() {
        // Not root's home, which the user cannot read (auth and registries.conf lookups).
        cmd.env("HOME", dir);
    }
    if let Some(lang) = cond.lang {
        cmd.env("LANG", lang)
            .env("LC_ALL", lang)
            .env("STRATA_VERIFY_NOISE", format!("{}", dir.display()))
            .env("HOME", dir)
            .env("TMPDIR", dir);
    }
    if !cond.vary.is_none() {
        let json = serde_json::to_string(&cond.vary).expect("serializes");
        cmd.env(strata_engine::sandbox::vary::ENV, json);
        cmd.arg("--verify-child");
    }
    let umask = cond.umask as libc::mode_t;
    let user = cond.rootless.as_ref().map(|u| (u.uid, u.gid));
    // SAFETY: umask, setgroups, setgid and setuid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask);
            if let Some((uid, gid)) = user {
                become_user(uid, gid)?;
            }
            Ok(())
        });
    }
    let log = dir.join("build.log");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&log)?);
    let out = cmd.output().context("starting strata build")?;
    if !out.status.success() {
        let err = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("the build failed:\n{}", tail.join("\n"));
    }
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !digest.starts_with("sha256:") {
        bail!("the build printed `{digest}`, not a digest");
    }
    Ok(digest)
}

/// The `strata build` options to pass on (not the context, Dockerfile, jobs, progress: set per
/// run). The user's `--output`s go to run 1 only.
fn forwarded(b: &BuildArgs, first: bool) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    let mut push = |k: &str, val: &str| {
        v.push(k.into());
        v.push(val.into());
    };
    for t in &b.tags {
        push("--tag", t);
    }
    for x in &b.build_args {
        push("--build-arg", x);
    }
    if let Some(t) = &b.target {
        push("--target", t);
    }
    if let Some(p) = &b.platform {
        push("--platform", p);
    }
    push("--compression", &b.compression.to_string());
    if let Some(s) = b.source_date_epoch {
        push("--source-date-epoch", &s.to_string());
    }
    // What RUN steps may use: every run gets the same (a child inherits the environment and
    // the working directory, so `env=VAR` and relative `src=` read the same).
    push("--network", &b.network);
    for x in &b.secrets {
        push("--secret", x);
    }
    for x in &b.ssh {
        push("--ssh", x);
    }
    if let Some(m) = &b.memory {
        push("--memory", m);
    }
    if let Some(c) = &b.cpus {
        push("--cpus", c);
    }
    if first {
        for o in &b.outputs {
            push("--output", o.spec());
        }
    }
    if b.no_cache {
        v.push("--no-cache".into());
    }
    // Every run attests as the user asked: the whole index (image and provenance) is compared.
    match b.provenance.and_then(|p| p.0) {
        Some(ProvenanceMode::Min) => v.push("--provenance=mode=min".into()),
        Some(ProvenanceMode::Max) => v.push("--provenance=mode=max".into()),
        None => {}
    }
    match b.sbom.and_then(|p| p.0) {
        Some(SbomFormat::Spdx) => v.push("--sbom=format=spdx".into()),
        Some(SbomFormat::CycloneDx) => v.push("--sbom=format=cyclonedx".into()),
        None => {}
    }
    v
}

/// Copies `from` into the existing `to`: entries created in reverse name order, modes with
/// g+w,o+w added, every mtime (and atime) set to `mtime`. Entries `keep(rel, is_dir)` refuses
/// (those `.dockerignore` excludes) are not copied.
fn copy_reversed(
    from: &Path,
    to: &Path,
    rel: &str,
    keep: &dyn Fn(&str, bool) -> bool,
    mtime: i64,
) -> anyhow::Result<()> {
    let mut names: Vec<OsString> = fs::read_dir(from)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    names.reverse();
    for name in names {
        let (src, dst) = (from.join(&name), to.join(&name));
        let md = fs::symlink_metadata(&src)?;
        let ft = md.file_type();
        let sub = match rel {
            "" => name.to_string_lossy().into_owned(),
            _ => format!("{rel}/{}", name.to_string_lossy()),
        };
        if !keep(&sub, ft.is_dir()) {
            continue;
        }
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if ft.is_dir() {
            fs::create_dir(&dst)?;
            copy_reversed(&src, &dst, &sub, keep, mtime)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777 | 0o022))?;
        } else if ft.is_file() {
            fs::copy(&src, &dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777 | 0o022))?;
        } else {
            bail!("`{}`: not a file, directory or symlink", src.display());
        }
        set_mtime(&dst, mtime)?;
    }
    set_mtime(to, mtime)
}

fn set_mtime(p: &Path, t: i64) -> anyhow::Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())?;
    let ts = libc::timespec {
        tv_sec: t as libc::time_t,
        tv_nsec: 123_456_789,
    };
    let times = [ts, ts];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the mtime of `{}`", p.display()));
    }
    Ok(())
}

/// What RUN commands see in run `n` (2+): fewer CPUs, other host and domain names, clocks
/// shifted by `n - 1` times 400 days, another kernel version string, a fixed address-space
/// layout (`sandbox::vary`).
fn inside_variation(n: u32) -> Variation {
    let cpus = strata_engine::sandbox::vary::allowed_cpus().len();
    Variation {
        // 1 of several; on a machine with one CPU the count cannot differ.
        cpus: (cpus >= 2).then_some(1),
        hostname: Some(format!("verify-run{n}")),
        domainname: Some(format!("run{n}.verify.invalid")),
        clock_offset: Some(u64::from(n - 1) * CLOCK_STEP),
        kernel: cfg!(target_arch = "x86_64").then(|| format!("verify-run{n}")),
        // Run 1 (a plain build) is randomized: a layout that differs from run 1's in every
        // run 2, and the same in every rebuild with it, so the cause search can name it.
        fixed_layout: true,
    }
}

/// The file system kinds whose directory order differs from each other's: tmpfs lists entries
/// by creation, ext4/xfs/btrfs by a hash of the name.
fn fs_kind(p: &Path) -> Option<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid C string and a zeroed statfs to fill.
    let st = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st) == 0).then_some(st)?
    };
    Some(
        match st.f_type as i64 {
            0x0102_1994 => "tmpfs",
            0xEF53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x794C_7630 => "overlay",
            _ => "other",
        }
        .to_string(),
    )
}

/// Where runs 2+ keep their store so that RUN steps see another directory order than run 1's:
/// a tmpfs (creation order) when run 1's is on a hashing file system, else the other way round,
/// if it has room for twice run 1's store. `None`: no such file system here.
fn other_file_system(base: &Path, run1_store: &Path) -> Option<FsChoice> {
    let ours = fs_kind(base)?;
    let need = 2 * tree_size(run1_store) + (64 << 20);
    ["/dev/shm", "/var/tmp", "/tmp"]
        .into_iter()
        .map(PathBuf::from)
        .find_map(|dir| {
            let kind = fs_kind(&dir)?;
            let orders_differ = (kind == "tmpfs") != (ours == "tmpfs");
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
            // SAFETY: a valid C string and a zeroed statvfs to fill.
            let (free, writable) = unsafe {
                let mut st: libc::statvfs = std::mem::zeroed();
                if libc::statvfs(c.as_ptr(), &mut st) != 0 {
                    return None;
                }
                (
                    st.f_bavail as u64 * st.f_frsize as u64,
                    libc::access(c.as_ptr(), libc::W_OK) == 0,
                )
            };
            (orders_differ && free >= need && writable).then_some(FsChoice { dir, kind })
        })
}

/// Bytes of the regular files under `p`.
fn tree_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// The user runs 2, 4, … build as, rootless, or why there is none: verify must run as root,
/// the machine must have a user with full subordinate ranges (`userns::rootless_user`), and
/// what the build reads must be readable by that user.
fn rootless_choice(a: &VerifyArgs) -> Result<RootlessUser, String> {
    if a.no_rootless {
        return Err("--no-rootless".into());
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("verify does not run as root: every run is rootless already".into());
    }
    let b = &a.build;
    if b.memory.is_some() || b.cpus.is_some() {
        return Err("--memory and --cpus need cgroups a rootless user may not have".into());
    }
    if !b.secrets.is_empty() || !b.ssh.is_empty() {
        return Err("--secret and --ssh sources may not be readable by another user".into());
    }
    for var in ["REGISTRY_AUTH_FILE", "DOCKER_CONFIG"] {
        if std::env::var_os(var).is_some() {
            return Err(format!(
                "{var} is set: another user may not read the credentials"
            ));
        }
    }
    if let (Some(f), Ok(ctx)) = (&b.file, fs::canonicalize(&b.context)) {
        if fs::canonicalize(f).is_ok_and(|f| !f.starts_with(&ctx)) {
            return Err(
                "the Dockerfile is outside the context (not copied for another user)".into(),
            );
        }
    }
    let user = strata_engine::sandbox::userns::rootless_user()?;
    // The executable must be reachable by the user (not under /root, say).
    let exe = std::env::current_exe().map_err(|e| format!("finding the strata executable: {e}"))?;
    let mut probe = Command::new(&exe);
    probe
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (uid, gid) = (user.uid, user.gid);
    // SAFETY: setgroups, setgid and setuid are async-signal-safe.
    unsafe {
        probe.pre_exec(move || become_user(uid, gid));
    }
    match probe.status() {
        Ok(s) if s.success() => Ok(user),
        _ => Err(format!(
            "{} (the user with a subordinate range) cannot run `{}`",
            user.name,
            exe.display()
        )),
    }
}

/// In a child between fork and exec: drop to `uid`/`gid`, with no supplementary groups.
fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives `p` and everything below it to `u` (not following symlinks).
fn chown_tree(p: &Path, u: &RootlessUser) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(u.uid), Some(u.gid))?;
    if fs::symlink_metadata(p)?.is_dir() {
        for e in fs::read_dir(p)? {
            chown_tree(&e?.path(), u)?;
        }
    }
    Ok(())
}

/// `, rootless as strata-ci` for a run's line.
pub(super) fn user_text(u: &Option<RootlessUser>) -> String {
    match u {
        Some(u) => format!(", rootless as {}", u.name),
        None => String::new(),
    }
}

/// `, store on tmpfs` for a run's line.
pub(super) fn store_text(s: &Option<FsChoice>) -> String {
    match s {
        Some(fs) => format!(", store on {} ({})", fs.kind, fs.dir.display()),
        None => String::new(),
    }
}

/// How far each run's monotonic and boot clocks are ahead of the previous run's: 400 days.
const CLOCK_STEP: u64 = 400 * 86_400;

/// `, CPUs 1, host verify-run2, …` for a run's line (empty for none).
pub(super) fn vary_text(v: &Variation) -> String {
    let mut s = String::new();
    if let Some(c) = v.cpus {
        let _ = write!(s, ", CPUs {c}");
    }
    if let Some(h) = &v.hostname {
        let _ = write!(s, ", host {h}");
    }
    if let Some(d) = &v.domainname {
        let _ = write!(s, ", domain {d}");
    }
    if let Some(o) = v.clock_offset {
        let _ = write!(s, ", uptime +{} days", o / 86_400);
    }
    if let Some(k) = &v.kernel {
        let _ = write!(s, ", kernel *-{k}");
    }
    if v.fixed_layout {
        let _ = write!(s, ", fixed address layout");
    }
    s
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Waits until the wall clock is past second `last` (if any); returns the current second.
pub(super) fn after_second(last: Option<i64>) -> i64 {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        match last {
            Some(l) if now.as_secs() as i64 <= l => {
                std::thread::sleep(
                    std::time::Duration::from_secs(1)
                        - std::time::Duration::from_nanos(u64::from(now.subsec_nanos())),
                );
            }
            _ => return now.as_secs() as i64,
        }
    }
}

/// What verify never varies, and why (the JSON report's `not_varied`, besides the variations
/// this machine could not make).
const NEVER_VARIED: [(&str, &str); 4] = [
    (
        "wall_clock",
        "CLOCK_REALTIME has no namespace, and the vDSO answers clock_gettime without a syscall (no seccomp, no ptrace; LD_PRELOAD misses static binaries): runs start in different seconds, so `date +%s` differs; run 1's date in common forms is looked for in RUN layers (dated_files); other date forms pass unless the runs straddle midnight UTC",
    ),
    (
        "user_name_and_home",
        "the user (root without USER) and HOME (the Dockerfile's ENV) are inputs the Dockerfile and the base image's /etc/passwd define: another would change what a correct build gives (pip install --user, ~/.cache)",
    ),
    (
        "numeric_kernel_version",
        "programs (glibc before 2.36 among them) check it and refuse to run below their minimum: only the text after it is varied",
    ),
    (
        "cpu_model",
        "/proc/cpuinfo and `nproc --all` show the machine's CPUs",
    ),
];

/// The `varied` names and `not_varied` `{what, why}` of the JSON report, from `variations`.
fn varied_lists(variations: &Value) -> (Value, Value) {
    let all = variations.as_array().cloned().unwrap_or_default();
    let varied: Vec<&str> = all
        .iter()
        .filter(|x| x["varied"] == true)
        .filter_map(|x| x["name"].as_str())
        .collect();
    let mut not: Vec<Value> = all
        .iter()
        .filter(|x| x["varied"] != true)
        .map(|x| json!({"what": x["name"], "why": x["how"]}))
        .collect();
    not.extend(
        NEVER_VARIED
            .iter()
            .map(|(what, why)| json!({"what": what, "why": why})),
    );
    (json!(varied), json!(not))
}

/// What verify varies (and cannot) inside RUN steps, for the JSON report.
fn variations_json(runs: &[RunResult], rootless: &Result<RootlessUser, String>) -> Value {
    let other = runs.iter().find(|r| r.n == 2);
    let vary = other.map(|r| r.cond.vary.clone()).unwrap_or_default();
    let cpus = strata_engine::sandbox::vary::allowed_cpus().len();
    json!([
        {
            "name": "cpu_count",
            "varied": vary.cpus.is_some(),
            "run1": cpus,
            "run2": vary.cpus,
            "how": if vary.cpus.is_some() {
                "sched_setaffinity of every RUN (nproc, sched_getaffinity) and /sys/devices/system/cpu/online; not /proc/cpuinfo or `nproc --all`"
            } else {
                "not varied: strata may use only 1 CPU here"
            },
        },
        {
            "name": "host_name",
            "varied": vary.hostname.is_some(),
            "run1": "strata",
            "run2": vary.hostname,
            "how": "UTS host name, /etc/hostname and /etc/hosts; and the UTS domain name",
        },
        {
            "name": "clock",
            "varied": vary.clock_offset.is_some(),
            "run2": vary.clock_offset.map(|s| format!("+{} days", s / 86_400)),
            "how": "CLOCK_MONOTONIC and CLOCK_BOOTTIME shifted (a time namespace: uptime, /proc/uptime); the wall clock (CLOCK_REALTIME) is not shifted: each run starts in a later second than the previous one ended",
        },
        {
            "name": "kernel_version",
            "varied": vary.kernel.is_some(),
            "run2": vary.kernel.as_ref().map(|k| format!("*-{k}")),
            "how": if vary.kernel.is_some() {
                "uname -r keeps the numeric version and gets another suffix, uname -v is replaced (uname(2) answered through seccomp user notification), and so are /proc/version and /proc/sys/kernel/{osrelease,version}; not for i386/x32 processes"
            } else {
                "not varied: uname(2) is answered only on x86_64"
            },
        },
        {
            "name": "address_layout",
            "varied": vary.fixed_layout,
            "run1": "randomized",
            "run2": vary.fixed_layout.then_some("fixed (personality ADDR_NO_RANDOMIZE)"),
            "how": "run 1 randomized as in a plain build, runs 2+ with a fixed layout: a printed pointer differs from run 1, and the cause search names the layout when a rebuild with it alone gives run 2's bytes (set-user-ID programs are randomized again)",
        },
        match other.and_then(|r| r.cond.store_on.as_ref()) {
            Some(fs) => json!({
                "name": "file_order",
                "varied": true,
                "run1": runs.first().and_then(|r| fs_kind(&r.oci)),
                "run2": fs.kind,
                "how": format!("the store of runs 2+ (snapshots, RUN upper dirs) on {} in {}: RUN steps list directories in another order (tmpfs: by creation; ext4, xfs, btrfs: by a hash of the name)", fs.kind, fs.dir.display()),
            }),
            None => json!({
                "name": "file_order",
                "varied": false,
                "how": "not varied: no file system here with another directory order than run 1's store (tmpfs against ext4/xfs/btrfs) and room for twice run 1's store",
            }),
        },
        match (other.and_then(|r| r.cond.rootless.as_ref()), rootless) {
            (Some(u), _) => json!({
                "name": "rootless",
                "varied": true,
                "run1": "root",
                "run2": format!("{} (uid {})", u.name, u.uid),
                "how": format!("runs 2, 4, … build as {}, rootless: a user namespace mapped with its /etc/subuid and /etc/subgid ranges", u.name),
            }),
            (None, Err(why)) => json!({
                "name": "rootless",
                "varied": false,
                "how": format!("not varied: {why}"),
            }),
            (None, Ok(_)) => json!({
                "name": "rootless",
                "varied": false,
                "how": "not varied: only runs 2, 4, … are rootless",
            }),
        },
        {"name": "context", "varied": true, "how": "another path, reversed creation order, g+w,o+w, odd mtimes"},
        {"name": "umask", "varied": true},
        {"name": "tz", "varied": true},
        {"name": "locale", "varied": true, "how": "LANG, LC_ALL, HOME, TMPDIR of strata"},
        {"name": "jobs", "varied": true},
    ])
}

fn inherited_or(set: Option<&str>, var: &str) -> String {
    match set {
        Some(v) => v.to_string(),
        None => std::env::var(var).unwrap_or_else(|_| "(unset)".into()),
    }
}

/// `--source-date-epoch`, else `--build-arg SOURCE_DATE_EPOCH=N`, else `SOURCE_DATE_EPOCH`:
/// a date a RUN may rightly write.
fn source_date_epoch(b: &BuildArgs) -> Option<i64> {
    let arg = b
        .build_args
        .iter()
        .find_map(|x| x.strip_prefix("SOURCE_DATE_EPOCH="))
        .map(str::to_string);
    b.source_date_epoch.map(|s| s as i64).or_else(|| {
        arg.or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
            .and_then(|v| v.trim().parse().ok())
    })
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Reproducible => "reproducible".into(),
        Verdict::RunsDiffer(n) => format!("not reproducible (run {n} differs from run 1)"),
        Verdict::AgainstDiffers => "reproducible, but differs from --against".into(),
    }
}

fn json_report(
    verdict: &str,
    runs: &[RunResult],
    run_diff: Option<&DiffReport>,
    against: Option<&(String, DiffReport)>,
    error: Option<&str>,
    a: &VerifyArgs,
) -> Value {
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "run": r.n,
                "digest": r.digest,
                "context": r.cond.context,
                "umask": format!("{:03o}", r.cond.umask),
                "tz": r.cond.tz,
                "lang": r.cond.lang,
                "jobs": r.cond.jobs,
                "user": r.cond.rootless.as_ref().map_or("root (or verify's own user)".to_string(), |u| u.name.clone()),
                "output": a.keep.as_ref().map(|_| &r.oci),
            })
        })
        .collect();
    json!({
        "version": 1,
        "verdict": verdict,
        // One build (`--against` alone): reproducible means it matches the given image.
        "reproducible": error.is_none() && run_diff.is_none()
            && (runs.len() > 1 || against.is_some_and(|(_, d)| bit_identical(d))),
        "digest": runs.first().map(|r| r["digest"].clone()),
        "runs": runs,
        "diff": run_diff.map(|d| json!({"summary": diff::summary(d), "report": d})),
        "against": against.map(|(spec, d)| json!({
            "spec": spec,
            "identical": bit_identical(d),
            "digests": [d.a.manifest_digest, d.b.manifest_digest],
            "summary": against_summary(d),
            "report": d,
        })),
        "error": error,
    })
}

fn markdown(
    verdict: &str,
    runs: &[RunResult],
    run_diff: Option<&DiffReport>,
    against: Option<&(String, DiffReport)>,
    error: Option<&str>,
    a: &VerifyArgs,
) -> String {
    let mut s = String::new();
    let icon = if verdict == "reproducible" {
        "✅"
    } else {
        "❌"
    };
    let _ = writeln!(s, "## strata verify: {icon} {verdict}\n");
    let _ = writeln!(
        s,
        "Context `{}`, {} run{}.\n",
        a.build.context.display(),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(s, "| run | digest | context | umask | TZ | LANG | jobs |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | `{}` | `{}` | {:03o} | {} | {} | {} |",
            r.n,
            r.digest,
            r.cond.context.display(),
            r.cond.umask,
            r.cond.tz.unwrap_or("(inherited)"),
            r.cond.lang.unwrap_or("(inherited)"),
            r.cond.jobs
        );
    }
    if let Some(e) = error {
        let _ = writeln!(s, "\n**Error:**\n\n```\n{e}\n```");
    }
    if let Some(d) = run_diff {
        md_details(&mut s, "Runs differ", d);
    }
    if let Some((spec, d)) = against {
        if bit_identical(d) {
            let _ = writeln!(s, "\nRun 1 is identical to `{spec}`.");
        } else {
            md_details(&mut s, &format!("Run 1 vs `{spec}`"), d);
        }
    }
    s
}

fn md_details(s: &mut String, title: &str, d: &DiffReport) {
    let _ = writeln!(s, "\n**{title}:** {}\n", diff::summary(d));
    let _ = writeln!(
        s,
        "<details><summary>diff</summary>\n\n```\n{}```\n\n</details>",
        diff::render_text(d)
    );
}
