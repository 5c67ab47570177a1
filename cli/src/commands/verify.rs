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
use strata_engine::diff::{self, DiffOptions, DiffReport};

use crate::args::{BuildArgs, VerifyArgs};

/// Fixed, odd mtime for the copied contexts: 2003-03-03 03:03:03 UTC, plus the run number.
const ODD_MTIME: i64 = 1_046_660_583;

/// The conditions of one run.
struct Conditions {
    context: PathBuf,
    dockerfile: PathBuf,
    umask: u32,
    /// `None`: inherited from `strata verify`.
    tz: Option<&'static str>,
    lang: Option<&'static str>,
    jobs: usize,
}

struct RunResult {
    n: u32,
    cond: Conditions,
    digest: String,
    oci: PathBuf,
}

enum Verdict {
    Reproducible,
    /// Run `n` differs from run 1.
    RunsDiffer(u32),
    AgainstDiffers,
}

pub fn run(a: VerifyArgs, registry_args: Vec<OsString>) -> anyhow::Result<i32> {
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
    let result = verify(&a, base.path(), &mut runs, &registry_args);
    let code = match &result {
        Ok((Verdict::Reproducible, ..)) => 0,
        Ok(_) => 1,
        Err(_) => 2,
    };
    let (verdict, run_diff, against) = match &result {
        Ok((v, d, ag)) => (verdict_text(v), d.as_ref(), ag.as_ref()),
        Err(_) => ("error".to_string(), None, None),
    };
    let error = result.as_ref().err().map(|e| format!("{e:#}"));
    if let Some(md) = &a.markdown {
        let text = markdown(&verdict, &runs, run_diff, against, error.as_deref(), &a);
        fs::write(md, text).with_context(|| format!("--markdown `{}`", md.display()))?;
    }
    if a.json {
        let v = json_report(&verdict, &runs, run_diff, against, error.as_deref(), &a);
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
            match v {
                Verdict::Reproducible => {
                    eprintln!("verify: reproducible ({} runs)", runs.len());
                    if !a.json {
                        println!("{}", runs[0].digest);
                    }
                }
                Verdict::RunsDiffer(n) => {
                    let r = d.as_ref().expect("a diff for differing runs");
                    eprintln!(
                        "verify: NOT reproducible: run {n} differs from run 1: {}",
                        diff::summary(r)
                    );
                    eprint!("{}", diff::render_text(r));
                }
                Verdict::AgainstDiffers => {}
            }
            if let Some((spec, r)) = &ag {
                if r.is_identical() {
                    eprintln!("verify: run 1 is identical to {spec}");
                } else {
                    eprintln!("verify: run 1 differs from {spec}: {}", diff::summary(r));
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

type Outcome = (Verdict, Option<DiffReport>, Option<(String, DiffReport)>);

fn verify(
    a: &VerifyArgs,
    base: &Path,
    runs: &mut Vec<RunResult>,
    registry_args: &[OsString],
) -> anyhow::Result<Outcome> {
    let b = &a.build;
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
    for n in 1..=a.runs {
        let dir = base.join(format!("run-{n}"));
        fs::create_dir_all(&dir)?;
        let cond = if n == 1 {
            Conditions {
                context: context.clone(),
                dockerfile: dockerfile.clone(),
                umask: current_umask,
                tz: None,
                lang: None,
                jobs: jobs1,
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
            }
        };
        let oci = dir.join("oci");
        let digest = build_once(&exe, b, registry_args, &dir, &cond, &oci, n == 1)
            .with_context(|| format!("run {n}/{}", a.runs))?;
        eprintln!(
            "run {n}/{}: {digest} (context at {}, umask {:03o}, TZ={}, LANG={}, jobs {})",
            a.runs,
            cond.context.display(),
            cond.umask,
            inherited_or(cond.tz, "TZ"),
            inherited_or(cond.lang, "LANG"),
            cond.jobs
        );
        runs.push(RunResult {
            n,
            cond,
            digest,
            oci,
        });
    }
    let spec = |r: &RunResult| format!("oci:{}", r.oci.display());
    let first = &runs[0];
    let mut verdict = Verdict::Reproducible;
    let mut run_diff = None;
    if let Some(other) = runs.iter().find(|r| r.digest != first.digest) {
        verdict = Verdict::RunsDiffer(other.n);
        run_diff = Some(compare(&spec(first), &spec(other))?);
    }
    let mut against = None;
    if let Some(r) = &a.against {
        let report = compare(&spec(first), r)?;
        if !report.is_identical() && matches!(verdict, Verdict::Reproducible) {
            verdict = Verdict::AgainstDiffers;
        }
        against = Some((r.clone(), report));
    }
    Ok((verdict, run_diff, against))
}

fn compare(a: &str, b: &str) -> anyhow::Result<DiffReport> {
    let run = || -> Result<DiffReport, diff::DiffError> {
        let (x, y) = rayon::join(|| diff::load_image(a), || diff::load_image(b));
        diff::diff(&x?, &y?, &DiffOptions::default())
    };
    run().map_err(|e| match e.hint() {
        Some(h) => anyhow::anyhow!("comparing {a} with {b}: {e}\nhint: {h}"),
        None => anyhow::anyhow!("comparing {a} with {b}: {e}"),
    })
}

/// One `strata build` in a child process, into a fresh store under `dir`; returns the digest.
fn build_once(
    exe: &Path,
    b: &BuildArgs,
    registry_args: &[OsString],
    dir: &Path,
    cond: &Conditions,
    oci: &Path,
    first: bool,
) -> anyhow::Result<String> {
    let mut cmd = Command::new(exe);
    cmd.arg("--store").arg(dir.join("store"));
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
    if let Some(lang) = cond.lang {
        cmd.env("LANG", lang)
            .env("LC_ALL", lang)
            .env("STRATA_VERIFY_NOISE", format!("{}", dir.display()))
            .env("HOME", dir)
            .env("TMPDIR", dir);
    }
    let umask = cond.umask as libc::mode_t;
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask);
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

fn inherited_or(set: Option<&str>, var: &str) -> String {
    match set {
        Some(v) => v.to_string(),
        None => std::env::var(var).unwrap_or_else(|_| "(unset)".into()),
    }
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
                "output": a.keep.as_ref().map(|_| &r.oci),
            })
        })
        .collect();
    json!({
        "version": 1,
        "verdict": verdict,
        "reproducible": error.is_none() && run_diff.is_none(),
        "digest": runs.first().map(|r| r["digest"].clone()),
        "runs": runs,
        "diff": run_diff.map(|d| json!({"summary": diff::summary(d), "report": d})),
        "against": against.map(|(spec, d)| json!({
            "spec": spec,
            "identical": d.is_identical(),
            "summary": diff::summary(d),
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
        "Context `{}`, {} runs.\n",
        a.build.context.display(),
        a.runs
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
        if d.is_identical() {
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
