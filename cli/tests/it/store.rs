//! End-to-end tests of store management: `images`, `inspect`, `export`, `fsck`, `gc`, `rmi`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::{example, text};

use crate::support::strata_at as strata;

fn run(c: &mut Command) -> Output {
    c.output().expect("runs strata")
}

#[track_caller]
fn ok(c: &mut Command) -> Output {
    let out = run(c);
    assert!(
        out.status.success(),
        "{c:?} failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn build(store: &Path, args: &[&str], context: &Path) -> String {
    let out = ok(strata(store)
        .args(["build", "--progress", "plain"])
        .args(args)
        .arg(context));
    text(&out.stdout).trim().to_string()
}

fn skopeo_inspect(layout: &Path, tag: &str) {
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{tag}", layout.display()))
        .output()
        .expect("skopeo is installed (.ci/install-deps)");
    assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
}

fn blob(store: &Path, digest: &str) -> PathBuf {
    store
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The config and layer digests of a stored manifest.
fn manifest_blobs(store: &Path, manifest: &str) -> Vec<String> {
    let m: Value = serde_json::from_slice(&fs::read(blob(store, manifest)).unwrap()).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

/// Makes every blob look an hour old: gc leaves younger unreferenced blobs alone, as they may
/// belong to a build in progress.
fn age_blobs(store: &Path) {
    for e in fs::read_dir(store.join("blobs/sha256")).unwrap() {
        fs::File::options()
            .write(true)
            .open(e.unwrap().path())
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }
}

#[test]
fn images_inspect_export_fsck_gc_rmi() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let digest = build(&store, &["-t", "ex:1"], &example());

    // images
    let out = ok(strata(&store).arg("images"));
    assert!(
        text(&out.stdout).contains(&format!("ex:1\t{digest}")),
        "{}",
        text(&out.stdout)
    );

    // inspect
    let out = ok(strata(&store).args(["inspect", "ex:1"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(
        v["config"]["config"]["Labels"]["org.opencontainers.image.title"],
        "strata example"
    );
    assert_eq!(
        v["config"]["config"]["Labels"]["org.opencontainers.image.version"],
        "1.0.0"
    );
    assert!(!run(strata(&store).args(["inspect", "nope:1"]))
        .status
        .success());

    // export
    let oci = tmp.path().join("oci");
    let out = ok(strata(&store)
        .args(["export", "ex:1", "--output"])
        .arg(format!("type=oci,dest={}", oci.display())));
    assert_eq!(text(&out.stdout).trim(), digest);
    skopeo_inspect(&oci, "1");
    let archive = tmp.path().join("ex.tar");
    ok(strata(&store)
        .args(["export", "ex:1", "-o"])
        .arg(format!("type=docker-archive,dest={}", archive.display())));
    assert!(archive.metadata().unwrap().len() > 0);

    // fsck: clean, then a corrupt layer is found, repaired, and rebuilt.
    ok(strata(&store).arg("fsck"));
    let layer = manifest_blobs(&store, &digest)[1].clone();
    let path = blob(&store, &layer);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let out = run(strata(&store).arg("fsck"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("corrupt blob {layer}")),
        "{}",
        text(&out.stderr)
    );
    ok(strata(&store).args(["fsck", "--repair"]));
    ok(strata(&store).arg("fsck"));
    assert!(!path.exists());
    assert_eq!(build(&store, &["-t", "ex:1"], &example()), digest);
    assert!(path.exists(), "the rebuild restored the layer");
    ok(strata(&store).arg("fsck"));

    // gc: an untagged build's layers go, the tagged image stays exportable.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    fs::write(other.join("f"), "not tagged").unwrap();
    let untagged = build(&store, &[], &other);
    let untagged_layer = manifest_blobs(&store, &untagged)[1].clone();
    assert!(blob(&store, &untagged_layer).exists());
    // Fresh blobs are left alone (a build may be writing them).
    ok(strata(&store).args(["gc", "--keep-storage", "0"]));
    assert!(blob(&store, &untagged_layer).exists());
    age_blobs(&store);
    let out = ok(strata(&store).args(["gc", "--keep-storage", "0", "--dry-run"]));
    assert!(
        text(&out.stderr).contains("would free"),
        "{}",
        text(&out.stderr)
    );
    assert!(blob(&store, &untagged_layer).exists());
    let out = ok(strata(&store).args(["gc", "--keep-storage", "0"]));
    assert!(
        text(&out.stderr).starts_with("freed "),
        "{}",
        text(&out.stderr)
    );
    assert!(!blob(&store, &untagged_layer).exists());
    assert!(!blob(&store, &untagged).exists());
    for d in manifest_blobs(&store, &digest) {
        assert!(blob(&store, &d).exists(), "{d} of the tagged image");
    }
    let oci2 = tmp.path().join("oci2");
    ok(strata(&store)
        .args(["export", "ex:1", "--output"])
        .arg(format!("type=oci,dest={}", oci2.display())));
    skopeo_inspect(&oci2, "1");
    ok(strata(&store).arg("fsck"));

    // rmi, then gc frees the image.
    let out = ok(strata(&store).args(["rmi", "ex:1"]));
    assert_eq!(text(&out.stdout).trim(), "untagged ex:1");
    assert!(!text(&ok(strata(&store).arg("images")).stdout).contains("ex:1"));
    assert_eq!(
        run(strata(&store).args(["rmi", "ex:1"])).status.code(),
        Some(1)
    );
    ok(strata(&store).args(["gc", "--keep-storage", "0"]));
    assert!(!blob(&store, &digest).exists());
    assert_eq!(
        fs::read_dir(store.join("blobs/sha256")).unwrap().count(),
        0,
        "nothing is left"
    );
    ok(strata(&store).arg("fsck"));
}

#[test]
fn gc_needs_exactly_one_policy_and_valid_values() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    assert_eq!(run(strata(&store).arg("gc")).status.code(), Some(2));
    assert_eq!(
        run(strata(&store).args(["gc", "--keep-storage", "1GB", "--keep-duration", "7d"]))
            .status
            .code(),
        Some(2)
    );
    let out = run(strata(&store).args(["gc", "--keep-storage", "lots"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid size"),
        "{}",
        text(&out.stderr)
    );
    ok(strata(&store).args(["gc", "--keep-duration", "7d"]));
}
