//! End-to-end tests of `strata verify`, the reproducibility gate. RUN steps need root, as in
//! `run_steps`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{busybox_context, example, strata, text};

fn verify(args: &[&str], context: &Path) -> (i32, Output) {
    let out = strata()
        .arg("verify")
        .args(args)
        .arg(context)
        .output()
        .unwrap();
    (out.status.code().expect("exited"), out)
}

fn show(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr))
}

#[test]
fn the_example_is_reproducible_and_matches_a_separate_build() {
    let (code, o) = verify(&[], &example());
    assert_eq!(code, 0, "{}", show(&o));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{}", show(&o));
    assert!(lines[0].starts_with("sha256:"), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("run 1/2: sha256:"), "{err}");
    assert!(
        err.contains("run 2/2: sha256:") && err.contains("umask 002") && err.contains("jobs "),
        "{err}"
    );

    // --against an OCI layout built separately from the same inputs: identical, exit 0;
    // the markdown summary says so.
    let store = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let build = |dest: &Path, epoch: &str| {
        let o = strata()
            .arg("--store")
            .arg(store.path())
            .args(["build", "--progress", "plain", "--source-date-epoch", epoch])
            .arg("--output")
            .arg(format!("type=oci,dest={}", dest.display()))
            .arg(example())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        text(&o.stdout).trim().to_string()
    };
    let same = out_dir.path().join("same");
    let digest = build(&same, "0");
    assert_eq!(digest, lines[0]);
    let md = out_dir.path().join("summary.md");
    let against = format!("oci:{}", same.display());
    let (code, o) = verify(
        &[
            "--against",
            &against,
            "--markdown",
            md.to_str().unwrap(),
            "--runs",
            "3",
        ],
        &example(),
    );
    assert_eq!(code, 0, "{}", show(&o));
    assert_eq!(text(&o.stdout).trim(), digest);
    let md_text = fs::read_to_string(&md).unwrap();
    assert!(md_text.contains("reproducible"), "{md_text}");
    assert!(md_text.contains("| 3 | `sha256:"), "{md_text}");
    assert!(md_text.contains("identical to"), "{md_text}");

    // Built with another SOURCE_DATE_EPOCH: differs, exit 1, with the diff.
    let other = out_dir.path().join("other");
    let store2 = tempfile::tempdir().unwrap();
    let o = strata()
        .arg("--store")
        .arg(store2.path())
        .args([
            "build",
            "--progress",
            "plain",
            "--source-date-epoch",
            "1700000000",
        ])
        .arg("--output")
        .arg(format!("type=oci,dest={}", other.display()))
        .arg(example())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let against = format!("oci:{}", other.display());
    let (code, o) = verify(&["--against", &against, "--json"], &example());
    assert_eq!(code, 1, "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("run 1 differs from"), "{err}");
    assert!(err.contains("[mtime]"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reproducible"], true, "{v}");
    assert_eq!(v["against"]["identical"], false, "{v}");
    assert!(v["verdict"].as_str().unwrap().contains("differs"), "{v}");
}

#[test]
fn a_deterministic_run_step_is_reproducible() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "RUN echo hi > /x && mkdir -p /d && touch /d/f\n",
    );
    let (code, o) = verify(&[], ctx.path());
    assert_eq!(code, 0, "{}", show(&o));
    assert!(text(&o.stdout).trim().starts_with("sha256:"));
}

/// RUN mounts (a bind of the context, a stage and a tmpfs, a cache, a secret) keep a build
/// reproducible: nothing they show reaches a layer unless the command writes it there.
#[test]
fn run_steps_with_mounts_and_a_secret_are_reproducible() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ctx.path().join("src")).unwrap();
    std::fs::write(ctx.path().join("src/in.txt"), "input\n").unwrap();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "token").unwrap();
    busybox_context(
        ctx.path(),
        "RUN --mount=type=bind,source=src,target=/src --mount=type=tmpfs,target=/scratch --mount=type=cache,target=/cache --mount=type=secret,id=t cp /src/in.txt /out && test -s /run/secrets/t && date > /cache/stamp && date > /scratch/stamp\n",
    );
    let arg = format!("id=t,src={}", secret.path().display());
    let (code, o) = verify(&["--secret", &arg], ctx.path());
    assert_eq!(code, 0, "{}", show(&o));
}

#[test]
fn random_data_from_a_run_step_fails_and_names_the_file() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path(), "RUN od -An -N8 -tx1 /dev/urandom > /stamp\n");
    let keep = tempfile::tempdir().unwrap();
    let md = keep.path().join("summary.md");
    let (code, o) = verify(
        &[
            "--markdown",
            md.to_str().unwrap(),
            "--keep",
            keep.path().join("k").to_str().unwrap(),
        ],
        ctx.path(),
    );
    assert_eq!(code, 1, "{}", show(&o));
    assert!(text(&o.stdout).is_empty(), "{}", show(&o));
    let err = text(&o.stderr);
    let verdict = err
        .lines()
        .find(|l| l.starts_with("verify:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        verdict.contains("NOT reproducible") && verdict.contains("/stamp"),
        "the summary line first names the file: {err}"
    );
    assert!(err.contains("/stamp [content]"), "{err}");
    // The differing bytes, as a text diff of the file.
    assert!(
        err.lines().any(|l| l.trim_start().starts_with("-"))
            && err.lines().any(|l| l.trim_start().starts_with("+")),
        "{err}"
    );
    let md_text = fs::read_to_string(&md).unwrap();
    assert!(md_text.contains("not reproducible"), "{md_text}");
    assert!(
        md_text.contains("<details>") && md_text.contains("/stamp"),
        "{md_text}"
    );
    // --keep leaves both runs' outputs behind.
    assert!(keep.path().join("k/run-1/oci/index.json").exists());
    assert!(keep.path().join("k/run-2/oci/index.json").exists());
}

#[test]
fn a_failing_build_exits_2() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path(), "RUN exit 3\n");
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 2, "{}", show(&o));
    assert!(text(&o.stderr).contains("run 1/2"), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "error", "{v}");
}

#[test]
fn a_timestamp_from_a_run_step_fails() {
    let ctx = tempfile::tempdir().unwrap();
    // busybox `date` has no %N: the seconds, then the uptime in centiseconds, so two builds in
    // the same second still differ.
    busybox_context(
        ctx.path(),
        "RUN date +%s > /built-at && cat /proc/uptime >> /built-at\n",
    );
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 1, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reproducible"], false, "{v}");
    assert!(
        v["diff"]["summary"].as_str().unwrap().contains("/built-at"),
        "{v}"
    );
    assert!(
        text(&o.stderr).contains("/built-at [content]"),
        "{}",
        show(&o)
    );
}

#[test]
fn the_copied_context_leaves_out_what_dockerignore_excludes() {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY . /app/\n",
    )
    .unwrap();
    fs::write(ctx.path().join(".dockerignore"), "junk\nDockerfile\n").unwrap();
    fs::create_dir_all(ctx.path().join("src/sub")).unwrap();
    fs::write(ctx.path().join("src/sub/a.txt"), "a\n").unwrap();
    fs::write(ctx.path().join("b.txt"), "b\n").unwrap();
    fs::create_dir(ctx.path().join("junk")).unwrap();
    // A FIFO could not be copied: it must not be looked at.
    let st = Command::new("mkfifo")
        .arg(ctx.path().join("junk/fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    let keep = tempfile::tempdir().unwrap();
    let (code, o) = verify(&["--keep", keep.path().to_str().unwrap()], ctx.path());
    assert_eq!(code, 0, "{}", show(&o));
    let copy = keep.path().join("run-2/ctx 2/moved/context");
    assert!(copy.join("src/sub/a.txt").exists() && copy.join("Dockerfile").exists());
    assert!(!copy.join("junk").exists());
}
