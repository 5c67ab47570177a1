//! Base changes: after the base image is patched, only base-dependent work runs again (RUN),
//! COPY layers are reused unless the directories they land in changed, and every result is
//! bit-identical to a from-scratch build against the new base.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{self, require_run, write};

pub(crate) fn strata(store: &Path, dir: &Path, args: &[&str]) -> Output {
    support::strata()
        .current_dir(dir)
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// (stdout, stderr) of a successful run.
pub(crate) fn ok(o: Output) -> (String, String) {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "strata failed:\n{err}");
    (String::from_utf8(o.stdout).unwrap().trim().to_string(), err)
}

/// A busybox base built by strata itself (FROM scratch + COPY busybox + RUN busybox --install),
/// patch level `level`, then `extra` Dockerfile lines; exported as tag `1` of the OCI layout
/// `dest` (moving the tag if it is there already).
pub(crate) fn build_base(store: &Path, work: &Path, level: &str, extra: &str, dest: &Path) {
    let ctx = work.join("base-ctx");
    if !ctx.join("busybox").is_file() {
        fs::create_dir_all(&ctx).unwrap();
        fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
        write(&ctx.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
        write(&ctx.join("etc/group"), "root:x:0:\n");
    }
    write(&ctx.join("etc/patch-level"), format!("{level}\n"));
    write(
        &ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/usr/bin\", \"/sbin\", \"/usr/sbin\", \"/tmp\", \"/home\", \"/root\"]\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\"]\nCOPY etc/ /etc/\n{extra}"
        ),
    );
    ok(strata(
        store,
        work,
        &[
            "build",
            "-t",
            "base:1",
            "--output",
            &format!("type=oci,dest={}", dest.display()),
            ctx.to_str().unwrap(),
        ],
    ));
}

const APP: &str = "FROM oci-layout://base:1\nCOPY src/ /app/\n\
    RUN echo 'app:x:1000:1000::/app:/bin/sh' >> /etc/passwd && chown -R app /app\n";

#[test]
fn copy_is_reused_across_a_base_patch_unless_its_destination_directories_change() {
    require_run("the fleet tests");
    let w = tempfile::tempdir().unwrap();
    let base_store = tempfile::tempdir().unwrap();
    let app = w.path().join("app");
    write(&app.join("Dockerfile"), APP);
    write(&app.join("src/main.py"), "print('hello')\n");
    write(&app.join("src/lib/util.py"), "X = 1\n");
    let appdir = app.to_str().unwrap();
    let layout = app.join("base");
    let store = tempfile::tempdir().unwrap();
    let build = |store: &Path| {
        ok(strata(
            store,
            w.path(),
            &["build", "--progress", "plain", "--explain", appdir],
        ))
    };
    let fresh = || build(tempfile::tempdir().unwrap().path()).0;
    // The base tag moved: strata.lock keeps the old digest until it is updated.
    let relock = || {
        ok(strata(
            store.path(),
            w.path(),
            &["lock", appdir, "--update"],
        ));
    };

    build_base(base_store.path(), w.path(), "1", "", &layout);
    let (d1, err) = build(store.path());
    assert!(err.contains("done: 2 steps executed"), "{err}");

    // (a) A patch elsewhere in the base (/etc): the COPY is a hit, only the RUN executes.
    build_base(base_store.path(), w.path(), "2 (security fix)", "", &layout);
    let (d_locked, _) = build(store.path());
    assert_eq!(
        d_locked, d1,
        "the lock pins the old base until `strata lock --update`"
    );
    relock();
    let (d2, err) = build(store.path());
    assert!(err.contains("CACHED COPY src/ /app/"), "{err}");
    // The RUN observed nothing the patch changed: reused by read set.
    assert!(err.contains("REUSED RUN echo"), "{err}");
    assert!(
        err.contains("done: 0 steps executed, 1 cached, 1 reused by read set"),
        "{err}"
    );
    assert_ne!(d1, d2, "the base changed, so the image does");
    // (c) Bit-identical to a from-scratch build against the new base, in a fresh store.
    assert_eq!(d2, fresh());

    // (b) The base now has /app, mode 0700: the COPY layer carries /app's metadata, so it
    // is written again.
    build_base(
        base_store.path(),
        w.path(),
        "2 (security fix)",
        "RUN mkdir -m 700 /app\n",
        &layout,
    );
    relock();
    let (d3, err) = build(store.path());
    assert!(!err.contains("CACHED COPY"), "{err}");
    assert!(
        err.contains("why: the directories on the way to the destination changed"),
        "{err}"
    );
    assert!(err.contains("done: 2 steps executed"), "{err}");
    assert_eq!(d3, fresh());

    // (b) /app becomes a symlink to /srv: the files land in /srv.
    build_base(
        base_store.path(),
        w.path(),
        "2 (security fix)",
        "RUN mkdir /srv && ln -s /srv /app\n",
        &layout,
    );
    relock();
    let (d4, err) = build(store.path());
    assert!(!err.contains("CACHED COPY"), "{err}");
    assert!(err.contains("done: 2 steps executed"), "{err}");
    assert_ne!(d4, d3);
    assert_eq!(d4, fresh());

    // Back to a base without /app: the first COPY layer is found again (its facts match).
    build_base(base_store.path(), w.path(), "3", "", &layout);
    relock();
    let (d5, err) = build(store.path());
    assert!(err.contains("CACHED COPY src/ /app/"), "{err}");
    assert_eq!(d5, fresh());
}

#[test]
fn a_run_after_copy_link_sees_a_new_base() {
    // COPY --link's key has no parent; the RUN after it must still re-run on a new base.
    require_run("the fleet tests");
    let w = tempfile::tempdir().unwrap();
    let base_store = tempfile::tempdir().unwrap();
    let app = w.path().join("app");
    write(
        &app.join("Dockerfile"),
        "FROM oci-layout://base:1\nCOPY --link src/ /app/\nRUN cat /etc/patch-level > /app/level\n",
    );
    write(&app.join("src/main.py"), "print('hello')\n");
    let store = tempfile::tempdir().unwrap();
    build_base(base_store.path(), w.path(), "1", "", &app.join("base"));
    let args = ["build", "--progress", "plain", app.to_str().unwrap()];
    ok(strata(store.path(), w.path(), &args));
    build_base(base_store.path(), w.path(), "2", "", &app.join("base"));
    ok(strata(
        store.path(),
        w.path(),
        &["lock", app.to_str().unwrap(), "--update"],
    ));
    let (d, err) = ok(strata(store.path(), w.path(), &args));
    assert!(err.contains("CACHED COPY --link src/ /app/"), "{err}");
    assert!(err.contains("done: 1 steps executed"), "{err}");
    let (fresh, _) = ok(strata(tempfile::tempdir().unwrap().path(), w.path(), &args));
    assert_eq!(d, fresh);
}

fn gen_fleet() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/scripts/gen-fleet.py")
}

fn build_all(ws: &Path, store: &Path) -> (Value, String) {
    support::build_all(ws, store, &[])
}

/// Every image of `report` has the digest a from-scratch build of `ws` in a fresh store gives.
fn assert_same_as_from_scratch(ws: &Path, report: &Value) {
    let (scratch, _) = build_all(ws, tempfile::tempdir().unwrap().path());
    for i in images(report) {
        let s = images(&scratch)
            .iter()
            .find(|s| s["image"] == i["image"])
            .unwrap();
        assert_eq!(i["digest"], s["digest"], "{}", i["image"]);
    }
}

fn images(r: &Value) -> &Vec<Value> {
    r["images"].as_array().unwrap()
}

#[test]
fn fleet_base_patch_reruns_only_run_steps_and_matches_from_scratch_builds() {
    require_run("the fleet tests");
    let w = tempfile::tempdir().unwrap();
    let ws = w.path().join("fleet");
    let base_store = tempfile::tempdir().unwrap();
    let n = 6;
    let st = Command::new("python3")
        .arg(gen_fleet())
        .arg(&ws)
        .args(["--apps", &n.to_string(), "--kb", "64"])
        .status()
        .unwrap();
    assert!(st.success());
    let link = || {
        let st = Command::new("python3")
            .arg(gen_fleet())
            .arg(&ws)
            .arg("--link-base")
            .status()
            .unwrap();
        assert!(st.success());
    };
    build_base(base_store.path(), w.path(), "1", "", &ws.join("base"));
    link();
    let store = tempfile::tempdir().unwrap();

    // Cold: every image changes, each runs its COPY and its RUN.
    let (cold, _) = build_all(&ws, store.path());
    assert_eq!(images(&cold).len(), n);
    let digests: std::collections::BTreeSet<&str> = images(&cold)
        .iter()
        .map(|i| i["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), n, "the apps differ");
    for i in images(&cold) {
        assert_eq!(i["changed"], true);
        assert_eq!(i["executed"], 2, "{i}");
    }

    // No-op: nothing executes, nothing changes.
    let (noop, err) = build_all(&ws, store.path());
    for i in images(&noop) {
        assert_eq!(i["executed"], 0, "{err}");
        assert_eq!(i["changed"], false);
    }
    assert!(
        err.contains(&format!("{n} images: 0 changed, {n} unchanged")),
        "{err}"
    );

    // The base tag moves to a patched image: only the RUN steps execute.
    build_base(
        base_store.path(),
        w.path(),
        "2 (security fix)",
        "",
        &ws.join("base"),
    );
    link();
    // `strata lock --update` says which reference moved; then the fleet rebuilds.
    let (moved, _) = ok(strata(store.path(), &ws, &["lock", "--all", "--update"]));
    assert!(
        moved.starts_with("oci-layout://base:1: sha256:") && moved.contains(" -> sha256:"),
        "{moved}"
    );
    let (patched, err) = build_all(&ws, store.path());
    for i in images(&patched) {
        // The RUN (append to /etc/passwd, chown) observed nothing the patch changed
        // (/etc/patch-level): it is reused by read set, not run (docs/read-set.md).
        assert_eq!(i["executed"], 0, "nothing runs: {i}\n{err}");
        assert_eq!(i["reused"], 1, "the RUN is reused: {i}\n{err}");
        assert_eq!(i["changed"], true, "{i}");
        assert_eq!(
            i["previous"],
            images(&cold)
                .iter()
                .find(|c| c["image"] == i["image"])
                .unwrap()["digest"]
        );
    }
    assert_eq!(
        err.matches("CACHED COPY src/ /app/").count(),
        n,
        "every COPY is a hit: {err}"
    );
    assert!(
        err.contains(&format!("{n} images: {n} changed, 0 unchanged")),
        "{err}"
    );

    // Every image equals a from-scratch build against the new base, in a fresh store.
    assert_same_as_from_scratch(&ws, &patched);
}

/// The same base patch with the base in a real registry (docker-registry), where users' bases
/// live: `lock --all --update` moves the one pin, each RUN is reused (its base layer read once,
/// as it downloads: solve::base_scan), and every image equals a from-scratch build.
#[test]
fn a_fleet_on_a_registry_base_reuses_its_run_steps_after_a_patch() {
    require_run("the fleet tests");
    let reg = support::registry::Registry::start();
    let w = tempfile::tempdir().unwrap();
    let ws = w.path().join("fleet");
    let base_store = tempfile::tempdir().unwrap();
    let base_ref = format!("{}/fleet/base:1", reg.host);
    let n = 4;
    let st = Command::new("python3")
        .arg(gen_fleet())
        .arg(&ws)
        .args(["--apps", &n.to_string(), "--kb", "16", "--base", &base_ref])
        .status()
        .unwrap();
    assert!(st.success());
    let push_base = |level: &str| {
        build_base(
            base_store.path(),
            w.path(),
            level,
            "",
            &w.path().join("base-layout"),
        );
        ok(strata(
            base_store.path(),
            w.path(),
            &["push", "base:1", &base_ref],
        ));
    };
    push_base("1");
    let store = tempfile::tempdir().unwrap();
    let (cold, _) = build_all(&ws, store.path());
    for i in images(&cold) {
        assert_eq!(i["executed"], 2, "{i}");
    }

    push_base("2 (security fix)");
    let (moved, _) = ok(strata(store.path(), &ws, &["lock", "--all", "--update"]));
    assert_eq!(moved.lines().count(), 1, "one reference, one pin: {moved}");
    assert!(
        moved.starts_with(&format!("{base_ref}: sha256:")),
        "{moved}"
    );
    let (patched, err) = build_all(&ws, store.path());
    for i in images(&patched) {
        assert_eq!(i["executed"], 0, "nothing runs: {i}\n{err}");
        assert_eq!(i["reused"], 1, "the RUN is reused: {i}\n{err}");
        assert_eq!(i["changed"], true, "{i}");
    }
    assert_same_as_from_scratch(&ws, &patched);
}
