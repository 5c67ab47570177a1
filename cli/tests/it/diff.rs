//! End-to-end tests of `strata diff` on images built by `strata build` from the bundled example.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{example, strata, text};

/// Builds the example into an OCI layout at `dest`.
fn build(store: &Path, dest: &Path, epoch: &str) {
    build_to(store, &[format!("type=oci,dest={}", dest.display())], epoch)
}

fn build_to(store: &Path, outputs: &[String], epoch: &str) {
    let mut cmd = strata();
    cmd.arg("--store")
        .arg(store)
        .args(["build", "-t", "example:1.0", "--progress", "plain"])
        .args(["--source-date-epoch", epoch]);
    for o in outputs {
        cmd.arg("--output").arg(o);
    }
    let out = cmd.arg(example()).output().unwrap();
    assert!(out.status.success(), "build: {}", text(&out.stderr));
}

fn diff(args: &[&str]) -> (i32, Output) {
    let out = strata().arg("diff").args(args).output().unwrap();
    (out.status.code().expect("exited"), out)
}

fn oci(p: &Path) -> String {
    format!("oci:{}", p.display())
}

#[test]
fn diff_builds_of_the_example() {
    // One store per epoch: a shared store reuses the epoch-0 layers for the second build
    // (see `source_date_epoch_changes_layers_with_a_shared_store`).
    let (s0, s1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        out.path().join("a"),
        out.path().join("b"),
        out.path().join("c"),
    );
    build(s0.path(), &a, "0");
    build(s1.path(), &b, "1700000000");
    build(s0.path(), &c, "0");

    // Same flags: identical, exit 0.
    let (code, o) = diff(&[&oci(&a), &oci(&c)]);
    assert_eq!(code, 0, "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).trim_end().ends_with("identical"));

    // Another SOURCE_DATE_EPOCH: entry mtimes and config dates differ, exit 1.
    let (code, o) = diff(&[&oci(&a), &oci(&b)]);
    let s = text(&o.stdout);
    assert_eq!(code, 1, "{s}{}", text(&o.stderr));
    assert!(s.contains("[mtime]"), "{s}");
    assert!(s.contains("created [created]"), "{s}");
    assert!(s.lines().last().unwrap().contains("by mtime only"), "{s}");

    // JSON: the same findings, machine-readable.
    let (code, o) = diff(&["--json", &oci(&a), &oci(&b)]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert!(v["config"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["field"] == "created" && c["cause"] == "created"));
    let causes: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["files"].as_array().unwrap())
        .flat_map(|f| f["changes"].as_array().unwrap())
        .map(|c| c["cause"].as_str().unwrap())
        .collect();
    assert!(!causes.is_empty());
    assert!(causes.iter().all(|&c| c == "mtime"), "{causes:?}");

    // Semantically the same image.
    let (code, o) = diff(&["--ignore", "mtime,created", &oci(&a), &oci(&b)]);
    assert_eq!(code, 0, "{}", text(&o.stdout));
}

/// Regression test, found with `strata diff`: the step cache key did not include
/// SOURCE_DATE_EPOCH, so a rebuild with another epoch in the same store reused layers carrying
/// the old mtimes.
#[test]
fn source_date_epoch_changes_layers_with_a_shared_store() {
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("a"), out.path().join("b"));
    build(store.path(), &a, "0");
    build(store.path(), &b, "1700000000");
    let (code, o) = diff(&["--json", &oci(&a), &oci(&b)]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let differing = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["differs"] == true);
    // Every layer of the example: its WORKDIR (a layer since key version 3), COPY, COPY, ADD,
    // COPY --from.
    assert_eq!(differing.count(), 5, "{}", text(&o.stdout));
}

#[test]
fn diff_oci_layout_vs_skopeo_oci_archive() {
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (a, d) = (out.path().join("a"), out.path().join("docker.tar"));
    build_to(
        store.path(),
        &[
            format!("type=oci,dest={}", a.display()),
            format!("type=docker-archive,dest={}", d.display()),
        ],
        "0",
    );
    // strata's docker-archive (new shape: OCI layout + manifest.json) holds the same image.
    let (code, o) = diff(&[&oci(&a), &format!("docker-archive:{}", d.display())]);
    assert_eq!(code, 0, "{}{}", text(&o.stdout), text(&o.stderr));
    let x = out.path().join("x.tar");
    let st = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:1.0", a.display()))
        .arg(format!("oci-archive:{}", x.display()))
        .output()
        .expect("skopeo is installed");
    assert!(st.status.success(), "skopeo copy: {}", text(&st.stderr));
    let (code, o) = diff(&[&oci(&a), &format!("oci-archive:{}", x.display())]);
    assert_eq!(code, 0, "{}{}", text(&o.stdout), text(&o.stderr));
    // A bare path is detected as an archive.
    let (code, o) = diff(&[&oci(&a), &x.display().to_string()]);
    assert_eq!(code, 0, "{}{}", text(&o.stdout), text(&o.stderr));
}

#[test]
fn diff_bad_input_exits_2_with_a_hint() {
    let missing = "/nonexistent/strata-diff-input";
    let (code, o) = diff(&[&format!("oci:{missing}"), &format!("oci:{missing}")]);
    assert_eq!(code, 2);
    let err = text(&o.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(missing), "{err}");
    assert!(err.contains("hint: "), "{err}");
    let (code, o) = diff(&["docker://alpine", "docker://alpine"]);
    assert_eq!(code, 2);
    assert!(text(&o.stderr).contains("not supported yet"));
    let (code, o) = diff(&["--ignore", "bogus", "a", "b"]);
    assert_eq!(code, 2);
    assert!(text(&o.stderr).contains("`bogus`"));
}

#[test]
fn images_in_the_store_compare_by_name() {
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = out.path().join("a");
    build(store.path(), &a, "0");
    let run = |x: &str, y: &str| {
        let o = strata()
            .arg("--store")
            .arg(store.path())
            .args(["diff", x, y])
            .output()
            .unwrap();
        (o.status.code().unwrap(), text(&o.stderr), text(&o.stdout))
    };
    let (code, err, _) = run("store:example:1.0", &format!("oci:{}:1.0", a.display()));
    assert_eq!(code, 0, "{err}");
    let (code, err, _) = run("store:example:1.0", "store:missing:1");
    assert_eq!(code, 2);
    assert!(err.contains("no image `missing:1` in the store"), "{err}");
}
