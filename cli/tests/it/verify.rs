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
    // One build (--against alone): it does not reproduce the given image.
    assert_eq!(v["reproducible"], false, "{v}");
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
    // The control build (run 1's conditions) differs again: no variation is to blame.
    assert!(
        err.contains("  /stamp: cause: nondeterminism (RUN at Dockerfile:6 wrote /stamp)"),
        "{err}"
    );
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

/// The differences of `--json`'s `causes` for `path`: (cause, text).
fn cause_of(v: &serde_json::Value, path: &str) -> (serde_json::Value, String) {
    let d = v["causes"]["differences"]
        .as_array()
        .unwrap_or_else(|| panic!("no causes: {v}"))
        .iter()
        .find(|d| d["path"] == path)
        .unwrap_or_else(|| panic!("no cause for {path}: {v}"));
    (d["cause"].clone(), d["text"].as_str().unwrap().to_string())
}

fn machine_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `nproc` sees another CPU count in run 2 (its affinity), and the rebuilds blame that.
#[test]
fn nproc_in_a_run_step_is_caught_and_blamed_on_the_cpu_count() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "RUN nproc > /cpus && cat /sys/devices/system/cpu/online > /online\n",
    );
    let (code, o) = verify(&["--json"], ctx.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cpus = &v["variations"][0];
    assert_eq!(cpus["name"], "cpu_count", "{v}");
    if machine_cpus() < 2 {
        // One CPU: the count cannot differ, and the report says so.
        assert_eq!(code, 0, "{}", show(&o));
        assert_eq!(cpus["varied"], false, "{v}");
        return;
    }
    assert_eq!(code, 1, "{}", show(&o));
    assert_eq!(cpus["varied"], true, "{v}");
    assert_eq!(cpus["run2"], 1, "{v}");
    let (cause, said) = cause_of(&v, "/cpus");
    assert_eq!(cause, "cpu_count", "{v}");
    assert_eq!(said, "cause: CPU count (RUN at Dockerfile:6 wrote /cpus)");
    assert_eq!(cause_of(&v, "/online").0, "cpu_count", "{v}");
    assert_eq!(v["causes"]["isolated"], true, "{v}");
    // A control build (no variation) first, then the CPU count: two rebuilds.
    let builds: Vec<&str> = v["causes"]["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["varied"].as_str().unwrap())
        .collect();
    assert_eq!(builds, ["none", "cpu_count"], "{v}");
    let err = text(&o.stderr);
    assert!(
        err.contains("  /cpus: cause: CPU count (RUN at Dockerfile:6 wrote /cpus)"),
        "{err}"
    );
    assert!(
        err.contains("run 2/2: sha256:") && err.contains(", CPUs 1, host verify-run2"),
        "{err}"
    );
}

#[test]
fn the_host_name_in_a_run_step_is_caught_and_named() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "RUN echo hi > /same && hostname > /host && cat /proc/sys/kernel/domainname > /domain\n",
    );
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 1, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (cause, said) = cause_of(&v, "/host");
    assert_eq!(cause, "host_name", "{v}");
    assert_eq!(said, "cause: host name (RUN at Dockerfile:6 wrote /host)");
    assert_eq!(cause_of(&v, "/domain").0, "host_name", "{v}");
    let paths: Vec<&serde_json::Value> = v["causes"]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["path"])
        .collect();
    assert_eq!(paths, ["/domain", "/host"], "{v}");

    // Too few builds to get to the host name: said so, per file.
    let (code, o) = verify(&["--max-builds", "1"], ctx.path());
    assert_eq!(code, 1, "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "  /host: cause not found (RUN at Dockerfile:6 wrote /host) within --max-builds 1"
        ),
        "{err}"
    );
}

/// The seconds: runs never share one, so `date +%s` always differs; the control build (no
/// variation) brings the difference back, and the value is a time of the run.
#[test]
fn the_time_in_seconds_from_a_run_step_is_caught_and_named() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path(), "RUN date +%s > /built-at\n");
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 1, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (cause, said) = cause_of(&v, "/built-at");
    assert_eq!(cause, "time", "{v}");
    assert!(
        said.starts_with("cause: the time (RUN at Dockerfile:6 wrote /built-at: it holds 1")
            && said.ends_with(", a time during run 1)"),
        "{said}"
    );
    assert_eq!(v["causes"]["builds"].as_array().unwrap().len(), 1, "{v}");
}

/// `uname -r`: run 2 sees the same numeric version with another suffix (`uname(2)` answered by
/// pid 1, `/proc/sys/kernel/osrelease` covered), and the rebuilds name it.
#[test]
fn the_kernel_version_string_in_a_run_step_is_caught_and_named() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        // The second RUN is not traced (a cache mount): `uname` is notified on its own.
        "RUN uname -r > /release && uname -v > /version && cat /proc/sys/kernel/osrelease > /osrelease\n\
         RUN --mount=type=cache,target=/cache uname -r > /untraced\n",
    );
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 1, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (cause, said) = cause_of(&v, "/release");
    assert_eq!(cause, "kernel_version", "{v}");
    assert_eq!(
        said,
        "cause: kernel version string (RUN at Dockerfile:6 wrote /release)"
    );
    assert_eq!(cause_of(&v, "/version").0, "kernel_version", "{v}");
    assert_eq!(cause_of(&v, "/osrelease").0, "kernel_version", "{v}");
    let (cause, said) = cause_of(&v, "/untraced");
    assert_eq!(cause, "kernel_version", "{v}");
    assert_eq!(
        said,
        "cause: kernel version string (RUN at Dockerfile:7 wrote /untraced)"
    );
    // The numeric version is the kernel's own: only what follows it differs.
    let real = text(&Command::new("uname").arg("-r").output().unwrap().stdout);
    let numeric: String = real
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("+{}-verify-run2\n", numeric.trim_end_matches('.'))),
        "{err}"
    );
    assert!(err.contains(", kernel *-verify-run2"), "{err}");
}

/// A printed address: run 1 is randomized, run 2 has a fixed layout; the control rebuild
/// differs again (randomized), the rebuild with the fixed layout alone gives run 2's bytes.
#[test]
fn a_printed_address_is_caught_and_blamed_on_the_layout() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path(), "RUN grep stack /proc/self/maps > /layout\n");
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 1, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (cause, said) = cause_of(&v, "/layout");
    assert_eq!(cause, "address_layout", "{v}");
    assert_eq!(
        said,
        "cause: address-space layout (ASLR) (RUN at Dockerfile:6 wrote /layout)"
    );
    let builds: Vec<&str> = v["causes"]["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["varied"].as_str().unwrap())
        .collect();
    assert_eq!(builds, ["none", "address_layout"], "{v}");
}

/// The `rootless` entry of `--json`'s `variations`.
fn rootless_of(v: &serde_json::Value) -> serde_json::Value {
    v["variations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "rootless")
        .unwrap_or_else(|| panic!("no rootless variation: {v}"))
        .clone()
}

/// As root on a machine with a full /etc/subuid range (CI's `strata-ci`), run 2 builds
/// rootless: the same digest as root's for ownership of other ids; a RUN that writes its uid
/// map differs, and the rebuilds name rootless. Without such a user the report says why.
#[test]
fn run_2_is_rootless_where_a_subordinate_range_exists() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "RUN mkdir -p /home/app && touch /home/app/f && chown -R 1000:1000 /home/app && chmod 700 /home/app && echo x > /g && chown 1000 /g\n",
    );
    let (code, o) = verify(&["--json"], ctx.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rootless = rootless_of(&v);
    if rootless["varied"] != true {
        assert_eq!(code, 0, "{}", show(&o));
        assert!(
            rootless["how"]
                .as_str()
                .unwrap()
                .starts_with("not varied: "),
            "{v}"
        );
        let not: Vec<&serde_json::Value> = v["not_varied"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["what"] == "rootless")
            .collect();
        assert_eq!(not.len(), 1, "{v}");
        eprintln!("rootless variation not available here: {}", rootless["how"]);
        return;
    }
    assert_eq!(code, 0, "root and rootless differ: {}", show(&o));
    let user = v["runs"][1]["user"].as_str().unwrap().to_string();
    assert_ne!(user, v["runs"][0]["user"].as_str().unwrap(), "{v}");
    assert!(
        text(&o.stderr).contains(&format!(", rootless as {user})")),
        "{}",
        show(&o)
    );
    // `--no-rootless`: root in every run, and the report says so.
    let (code, o) = verify(&["--json", "--no-rootless"], ctx.path());
    assert_eq!(code, 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rootless_of(&v)["how"], "not varied: --no-rootless", "{v}");

    // What strata cannot build rootless (a device node): run 2 is built as root, and the
    // report says why rootless was not varied.
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path(), "RUN mknod /null2 c 1 3\nRUN echo x > /y\n");
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let how = rootless_of(&v)["how"].as_str().unwrap().to_string();
    assert!(
        how.starts_with(&format!(
            "not varied: the rootless build (as {user}) failed: "
        )),
        "{v}"
    );
    assert_eq!(v["runs"][1]["user"], "root (or verify's own user)", "{v}");
    assert!(
        text(&o.stderr).contains("run 2/2: built as root instead; rootless is not varied"),
        "{}",
        show(&o)
    );

    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path(), "RUN cat /proc/self/uid_map > /map\n");
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 1, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (cause, said) = cause_of(&v, "/map");
    assert_eq!(cause, "rootless", "{v}");
    assert_eq!(
        said,
        "cause: rootless (another user, a user namespace) (RUN at Dockerfile:6 wrote /map)"
    );
}

/// The date alone is the same in every run of a day (the wall clock is not varied): verify
/// finds run 1's date in what RUN steps wrote, and fails with the date as the cause.
#[test]
fn the_date_from_a_run_step_is_caught_and_named() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "RUN date +%Y-%m-%d > /day && echo same > /same\n",
    );
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 1, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reproducible"], false, "{v}");
    let dated = v["dated_files"].as_array().unwrap();
    assert_eq!(dated.len(), 1, "{v}");
    assert_eq!(dated[0]["path"], "/day", "{v}");
    assert_eq!(dated[0]["cause"], "date", "{v}");
    assert!(
        dated[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("cause: the date (RUN at Dockerfile:6 wrote /day: it holds `20"),
        "{v}"
    );
    assert!(
        text(&o.stderr).contains("verify: NOT reproducible: the 2 runs are identical, but files hold the date of the build"),
        "{}",
        show(&o)
    );
}

/// A date the build's inputs hold too (a context file edited today, SOURCE_DATE_EPOCH's day)
/// is only a note: a correct build must not fail.
#[test]
fn a_date_the_inputs_hold_is_only_a_note() {
    let ctx = tempfile::tempdir().unwrap();
    let today = text(
        &Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .unwrap()
            .stdout,
    );
    fs::write(ctx.path().join("CHANGES"), format!("## {today}")).unwrap();
    busybox_context(
        ctx.path(),
        "COPY CHANGES /src/CHANGES\nRUN cp /src/CHANGES /doc\n",
    );
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dated = v["dated_files"].as_array().unwrap();
    assert!(
        dated
            .iter()
            .all(|d| d["in_inputs"] == true && d["cause"].is_null()),
        "{v}"
    );
    assert!(text(&o.stderr).contains("/doc: note: "), "{}", show(&o));

    // `--source-date-epoch` of today: a RUN that writes that date is right to.
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path(), "RUN date -u +%Y-%m-%d > /day\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let (code, o) = verify(&["--source-date-epoch", &now], ctx.path());
    assert_eq!(code, 0, "{}", show(&o));
}

/// A clean Dockerfile passes under every variation, and the report lists them.
#[test]
fn a_clean_build_passes_and_the_report_lists_what_was_varied() {
    let ctx = tempfile::tempdir().unwrap();
    // The numeric kernel version is never varied (version checks must keep passing), and a
    // 32-bit personality keeps the kernel's own answer (`i686`).
    busybox_context(
        ctx.path(),
        "RUN echo hi > /x && ls / > /listing && uname -s > /os && uname -r | cut -d- -f1 > /kernel\n\
         RUN linux32 uname -m > /machine32 && linux32 uname -r > /release32\n",
    );
    let (code, o) = verify(&["--json"], ctx.path());
    assert_eq!(code, 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["causes"].is_null(), "{v}");
    let varied: Vec<(&str, bool)> = v["variations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["name"].as_str().unwrap(), x["varied"].as_bool().unwrap()))
        .collect();
    assert!(varied.contains(&("host_name", true)), "{v}");
    assert!(varied.contains(&("clock", true)), "{v}");
    assert!(varied.contains(&("cpu_count", machine_cpus() >= 2)), "{v}");
    assert!(varied.contains(&("address_layout", true)), "{v}");
    let names = |k: &str, field: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("no {k}: {v}"))
            .iter()
            .map(|x| match field {
                "" => x.as_str().unwrap().to_string(),
                f => x[f].as_str().unwrap().to_string(),
            })
            .collect()
    };
    let listed = names("varied", "");
    for want in ["host_name", "clock", "address_layout", "umask", "tz"] {
        assert!(listed.iter().any(|n| n == want), "{want}: {v}");
    }
    if cfg!(target_arch = "x86_64") {
        assert!(varied.contains(&("kernel_version", true)), "{v}");
        assert!(listed.iter().any(|n| n == "kernel_version"), "{v}");
    }
    let not = names("not_varied", "what");
    for want in ["wall_clock", "user_name_and_home", "numeric_kernel_version"] {
        assert!(not.iter().any(|n| n == want), "{want}: {v}");
    }
    assert!(
        v["not_varied"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["why"].as_str().is_some_and(|w| !w.is_empty())),
        "{v}"
    );
    // This machine: /tmp on ext4 and /dev/shm a tmpfs (CI's too), so the order is varied.
    let order = v["variations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "file_order")
        .unwrap();
    let err = text(&o.stderr);
    if order["varied"] == true {
        assert!(err.contains(", store on "), "{err}");
    } else {
        assert!(
            order["how"].as_str().unwrap().starts_with("not varied"),
            "{v}"
        );
        assert!(!err.contains(", store on "), "{err}");
    }
}

/// Directory order: run 2's store is on a file system that lists directories in another
/// order (tmpfs by creation, ext4 by name hash), so `find` over 200 copied files differs.
#[test]
fn directory_order_in_a_run_step_is_caught_and_named() {
    let ctx = tempfile::tempdir().unwrap();
    fs::create_dir(ctx.path().join("many")).unwrap();
    for i in 0..200 {
        fs::write(ctx.path().join(format!("many/f{i}")), format!("{i}\n")).unwrap();
    }
    busybox_context(ctx.path(), "COPY many /many\nRUN find /many > /order\n");
    let (code, o) = verify(&["--json"], ctx.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let order = v["variations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "file_order")
        .unwrap()
        .clone();
    if order["varied"] != true {
        // No file system with another order here: not caught, and the report says why.
        assert_eq!(code, 0, "{}", show(&o));
        assert!(
            order["how"].as_str().unwrap().starts_with("not varied"),
            "{v}"
        );
        return;
    }
    assert_eq!(code, 1, "{}", show(&o));
    let (cause, said) = cause_of(&v, "/order");
    assert_eq!(cause, "file_order", "{v}");
    assert_eq!(said, "cause: file order (RUN at Dockerfile:7 wrote /order)");
}

/// The variation verify hands to its builds is refused on a build of one's own: it would cache
/// what RUN steps made under varied CPUs, host names and clocks in the user's store.
#[test]
fn the_internal_variation_variable_is_refused_outside_verify() {
    let store = tempfile::tempdir().unwrap();
    let o = strata()
        .env("STRATA_VERIFY_VARIATION", "{}")
        .arg("--store")
        .arg(store.path())
        .arg("build")
        .arg(example())
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("STRATA_VERIFY_VARIATION is set: it is internal to `strata verify`")
            && err.contains("hint: unset it"),
        "{err}"
    );
}

/// `verify --against registry:REF`: one build, compared with what was pushed. The image
/// pushed from a build of the same inputs is bit-identical (exit 0); one built with another
/// SOURCE_DATE_EPOCH is not (exit 1, with the diff). `strata diff` takes the same reference.
#[test]
fn verify_against_a_pushed_image() {
    let reg = crate::support::registry::Registry::start();
    let store = tempfile::tempdir().unwrap();
    let push = |epoch: &str, target: &str| {
        let o = strata()
            .arg("--store")
            .arg(store.path())
            .args(["build", "-t", "example:pushed", "--progress", "plain"])
            .args(["--source-date-epoch", epoch])
            .arg(example())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let digest = text(&o.stdout).trim().to_string();
        let o = strata()
            .arg("--store")
            .arg(store.path())
            .args(["push", "example:pushed", target])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        digest
    };
    let same = format!("{}/example:same", reg.host);
    let other = format!("{}/example:other", reg.host);
    let digest = push("0", &same);
    push("1700000000", &other);

    let (code, o) = verify(&["--against", &format!("registry:{same}")], &example());
    assert_eq!(code, 0, "{}", show(&o));
    assert_eq!(text(&o.stdout).trim(), digest);
    let err = text(&o.stderr);
    assert!(err.contains("run 1/1: sha256:"), "{err}");
    assert!(!err.contains("run 2/"), "one build only: {err}");
    assert!(
        err.contains(&format!(
            "reproducible: the build is bit-identical to registry:{same}"
        )),
        "{err}"
    );

    let (code, o) = verify(
        &["--against", &format!("registry:{other}"), "--json"],
        &example(),
    );
    assert_eq!(code, 1, "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "NOT reproducible: run 1 differs from registry:{other}: "
        )),
        "{err}"
    );
    assert!(err.contains("by mtime only"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reproducible"], false, "{v}");
    assert_eq!(v["against"]["identical"], false, "{v}");
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");

    // `strata diff` compares the registry image with the store's, without building.
    let o = strata()
        .arg("--store")
        .arg(store.path())
        .args(["diff", &format!("registry:{same}"), "tag:example:pushed"])
        .output()
        .unwrap();
    // The store's tag now names the epoch-1700000000 build: they differ by mtime.
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stdout).starts_with(&format!("A: registry:{same}\nB: tag:example:pushed")));
    let o = strata()
        .args([
            "diff",
            &format!("registry:{other}"),
            &format!("registry:{other}"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // A reference that is not there: exit 2, named.
    let o = strata()
        .args([
            "diff",
            &format!("registry:{}/nothing:here", reg.host),
            "registry:x",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).contains("nothing"), "{}", show(&o));
}
