//! `strata bench` end to end: scenarios, figures and advice on a small Dockerfile.

use std::fs;

use serde_json::Value;

use crate::support::registry::Registry;
use crate::support::strata;

#[test]
fn bench_reports_scenarios_and_advice() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::create_dir_all(c.join("src")).unwrap();
    for i in 0..20 {
        fs::write(c.join(format!("src/f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    fs::write(c.join("lock.txt"), "lock\n").unwrap();
    fs::write(
        c.join("Dockerfile"),
        "FROM scratch\nARG V=1\nCOPY . /app/\nENV X=$V\nCOPY lock.txt /lock\nLABEL l=1\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let (json, html) = (out.path().join("r.json"), out.path().join("r.html"));
    let o = strata()
        .arg("bench")
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg(c)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let sc = r["scenarios"].as_array().unwrap();
    let by = |n: &str| {
        sc.iter()
            .find(|s| s["name"].as_str().unwrap().starts_with(n))
            .unwrap_or_else(|| panic!("no scenario {n}: {r}"))
    };
    assert_eq!(by("cold")["executed"], 5);
    assert_eq!(by("no-op")["executed"], 0);
    // Every tar byte of the cold build's two COPY layers went through the compressor; a no-op
    // compresses nothing.
    let cold_compressed = by("cold")["bytes_compressed"].as_u64().unwrap();
    assert!(cold_compressed >= 20 * 512, "{}", by("cold"));
    assert_eq!(by("cold")["bytes_reused"], 0);
    assert_eq!(by("no-op")["bytes_compressed"], 0);
    let arg = by("build-arg V");
    // ARG V and the steps whose key includes the previous one run again; the two COPYs read
    // nothing of the config the ARG changes (parent facts, docs/cache-keys.md) and are reused.
    assert_eq!(
        arg["executed"], 3,
        "ARG V, ENV X=$V and LABEL; not the COPYs: {arg}"
    );
    let statuses: Vec<&str> = arg["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["executed", "cached", "executed", "cached", "executed"]
    );
    let change = sc
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("change "))
        .unwrap();
    // `COPY .`, and the config steps after it; `COPY lock.txt` does not read /app and is reused.
    assert_eq!(change["executed"], 3, "{change}");
    assert!(
        r["advice"][0].as_str().unwrap().contains("COPY . /app/"),
        "{}",
        r["advice"]
    );
    let page = fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && !page.contains("<script"),
        "self-contained HTML with SVG charts"
    );
    // The user's context is untouched.
    assert_eq!(
        fs::read_to_string(c.join("src/f0.txt")).unwrap(),
        "file 0\n"
    );
}

/// The base-image change scenario: a patched copy of an `oci-layout://` base (one more layer, same
/// tag) re-runs the steps that depend on the base; the user's layout is left as it was.
#[test]
fn bench_base_change_rebuilds_on_a_patched_layout() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let base_ctx = work.path().join("base");
    fs::create_dir_all(base_ctx.join("etc")).unwrap();
    fs::write(base_ctx.join("etc/os-release"), "ID=test\n").unwrap();
    fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nCOPY etc/ /etc/\n",
    )
    .unwrap();
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let layout = ctx.join("layout");
    let o = strata()
        .arg("--store")
        .arg(&store)
        .args(["build", "-t", "base:1", "--output"])
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(&base_ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index_before = fs::read(layout.join("index.json")).unwrap();
    fs::write(ctx.join("app.txt"), "app\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM oci-layout://layout:1\nCOPY app.txt /app/\nLABEL x=1\n",
    )
    .unwrap();
    let json = work.path().join("r.json");
    let o = strata()
        .arg("bench")
        .arg("--json")
        .arg(&json)
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let sc = r["scenarios"].as_array().unwrap();
    let base = sc
        .iter()
        .find(|s| s["name"] == "base layout:1")
        .unwrap_or_else(|| panic!("no base scenario: {r}"));
    // The patch does not touch /app: the COPY is reused (its parent facts are equal), the
    // LABEL after it runs again on the new base.
    assert_eq!(base["executed"], 1, "{base}");
    assert_eq!(base["cached"], 1, "{base}");
    assert!(
        base["change"].as_str().unwrap().contains("patched image"),
        "{base}"
    );
    // Nothing is compressed again: the COPY's layer is the one it made before.
    assert_eq!(base["bytes_written"].as_u64().unwrap(), 0, "{base}");
    assert_eq!(r["notes"].as_array().unwrap().len(), 0, "{}", r["notes"]);
    assert_eq!(fs::read(layout.join("index.json")).unwrap(), index_before);
}

/// The base-image change scenario for a registry base (`FROM 127.0.0.1:PORT/base:1`, a real
/// registry): the same reference names a patched image for that scenario only, the steps that
/// depend on the base run again, and the registry, the context and its lock are left as they were.
#[test]
fn bench_base_change_rebuilds_on_a_patched_registry_base() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let base_ctx = work.path().join("base");
    fs::create_dir_all(base_ctx.join("etc")).unwrap();
    fs::write(base_ctx.join("etc/os-release"), "ID=test\n").unwrap();
    fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nCOPY etc/ /etc/\n",
    )
    .unwrap();
    let base_ref = format!("{}/base:1", reg.host);
    let o = strata()
        .arg("--store")
        .arg(&store)
        .args(["build", "--output"])
        .arg(format!("type=registry,name={base_ref}"))
        .arg(&base_ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // stdout: the manifest digest, which the registry's tag names.
    let pushed = String::from_utf8(o.stdout).unwrap();
    assert!(pushed.trim().starts_with("sha256:"), "{pushed}");
    let writes = |reg: &Registry| {
        reg.requests()
            .into_iter()
            .filter(|(m, _)| m != "GET" && m != "HEAD")
            .count()
    };
    let writes_before = writes(&reg);

    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("app.txt"), "app\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base_ref}\nCOPY app.txt /app/\nLABEL x=1\n"),
    )
    .unwrap();
    let json = work.path().join("r.json");
    let o = strata()
        .arg("bench")
        .arg("--json")
        .arg(&json)
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let sc = r["scenarios"].as_array().unwrap();
    let base = sc
        .iter()
        .find(|s| s["name"] == format!("base {base_ref}"))
        .unwrap_or_else(|| panic!("no base scenario: {r}"));
    // As for a layout: the COPY is reused (the patch does not touch /app), the LABEL runs again
    // on the new base, and nothing is compressed again.
    assert_eq!(base["executed"], 1, "{base}");
    assert_eq!(base["cached"], 1, "{base}");
    assert_eq!(base["bytes_written"].as_u64().unwrap(), 0, "{base}");
    let change = base["change"].as_str().unwrap();
    assert!(
        change.contains("patched image") && change.contains(&base_ref),
        "{base}"
    );
    assert!(!change.contains(pushed.trim()), "a new digest: {base}");
    assert_eq!(r["notes"].as_array().unwrap().len(), 0, "{}", r["notes"]);
    // The scenarios after it would see the original again: the no-op before it saw the base.
    assert_eq!(
        sc.iter().find(|s| s["name"] == "no-op").unwrap()["executed"],
        0
    );

    // Nothing the user owns changed: the registry got no write, its tag names the pushed
    // image; the context has no lock file or anything else new.
    assert_eq!(writes(&reg), writes_before, "{:?}", reg.requests());
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{base_ref}"))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inspect: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inspect["Digest"], pushed.trim());
    let mut names: Vec<_> = fs::read_dir(&ctx)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Dockerfile", "app.txt"]);
}

/// `--peer buildah` builds every scenario with `buildah bud --layers` too and reports its wall
/// time and the ratio; buildah's cache must see the same changes (its no-op rebuild is cached,
/// so it is faster than its cold build).
#[test]
fn bench_peer_buildah_reports_ratios() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::write(c.join("a.txt"), "a\n").unwrap();
    fs::write(c.join("b.txt"), "b\n").unwrap();
    fs::write(
        c.join("Dockerfile"),
        "FROM scratch\nARG V=1\nCOPY a.txt /a/\nCOPY b.txt /b/\nLABEL v=$V\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let (json, html) = (out.path().join("r.json"), out.path().join("r.html"));
    // The bench's temp dir under this test's: the mount check below is about this bench only.
    let tmp = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let o = strata()
        .args(["bench", "--peer", "buildah", "--json"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg(c)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("buildah s") && stderr.contains("speedup"),
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let sc = r["scenarios"].as_array().unwrap();
    assert_eq!(sc.len(), 5, "cold, no-op, two changes, build-arg: {r}");
    let page = fs::read_to_string(&html).unwrap();
    // The figures are measured, not made up: strata's and buildah's wall times of all the
    // scenarios, run one after the other, fit in the time this test saw the bench take; and the
    // table on stderr and the page show the JSON's figures.
    let mut both = 0.0;
    for s in sc {
        let p = &s["peer"];
        assert_eq!(p["builder"], "buildah", "{s}");
        let (pw, w) = (
            p["wall_seconds"].as_f64().unwrap(),
            s["wall_seconds"].as_f64().unwrap(),
        );
        assert!(pw > 0.0 && w > 0.0, "{s}");
        both += pw + w;
        let ratio = p["speedup"].as_f64().unwrap();
        assert!(
            stderr.contains(&format!(" {pw:>10.2} {:>9}", format!("{ratio:.1}x"))),
            "the table shows {s}: {stderr}"
        );
        assert!(
            page.contains(&format!("<td>{pw:.2}</td><td>{ratio:.1}x</td>")),
            "the page shows {s}"
        );
    }
    assert!(
        both <= elapsed,
        "scenario wall times add up to {both:.3} s, more than the {elapsed:.3} s the bench took"
    );
    let wall = |n: &str| {
        sc.iter().find(|s| s["name"] == n).unwrap()["peer"]["wall_seconds"]
            .as_f64()
            .unwrap()
    };
    assert!(
        wall("no-op") < wall("cold"),
        "buildah's layer cache was used: {r}"
    );
    assert!(page.contains("buildah wall time") && page.contains("<th>speedup</th>"));
    // buildah's storage is removed with the bench's temp dir: no mounts left behind.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(tmp.path().to_str().unwrap()), "{mounts}");
}

/// Without buildah on PATH, `--peer buildah` fails before doing anything, and says how to fix it.
#[test]
fn bench_peer_buildah_missing_is_a_clear_error() {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nLABEL a=1\n").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let o = strata()
        .args(["bench", "--peer", "buildah"])
        .arg(ctx.path())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("`buildah` is not on PATH") && stderr.contains("hint: install it"),
        "{stderr}"
    );
    assert!(!stderr.contains("scenario"), "nothing ran: {stderr}");
}

/// `--peer buildkit` builds every scenario with BuildKit (`docker build`) against a private
/// dockerd it starts in its temp dir: BuildKit's cache sees the same changes (its no-op rebuild
/// is faster than its cold build), and the daemon, its mounts and its files are gone afterwards.
#[test]
fn bench_peer_buildkit_reports_ratios_and_leaves_no_daemon() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::write(c.join("a.txt"), "a\n").unwrap();
    // 24 MiB that gzip cannot shrink: BuildKit's cold build must copy and compress it, its
    // no-op rebuild must not, so "cached is faster" is not lost in its fixed per-build cost.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..24 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(c.join("big.bin"), big).unwrap();
    fs::write(
        c.join("Dockerfile"),
        "FROM scratch\nARG V=1\nCOPY big.bin /big/\nCOPY a.txt /a/\nLABEL v=$V\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("r.json");
    // The bench's temp dir (and the daemon's storage) under a directory of this test's, so the
    // checks below see only this bench's leftovers, not those of a test running beside it.
    let tmp = tempfile::tempdir().unwrap();
    let o = strata()
        .args(["bench", "--peer", "buildkit", "--json"])
        .arg(&json)
        .arg(c)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("buildkit s") && stderr.contains("speedup"),
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let sc = r["scenarios"].as_array().unwrap();
    assert_eq!(sc.len(), 5, "cold, no-op, two changes, build-arg: {r}");
    let wall = |n: &str| {
        let s = sc.iter().find(|s| s["name"] == n).unwrap();
        assert_eq!(s["peer"]["builder"], "buildkit", "{s}");
        assert_eq!(s["peer"]["storage"], "overlay2", "{s}");
        s["peer"]["wall_seconds"].as_f64().unwrap()
    };
    assert!(
        wall("no-op") < wall("cold"),
        "BuildKit's cache was used: {r}"
    );
    assert!(wall("change a.txt") > 0.0);
    // The private daemon is stopped and its storage unmounted and removed.
    let here = tmp.path().to_str().unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(here), "{mounts}");
    for p in fs::read_dir("/proc").unwrap().flatten() {
        let cmd = fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        assert!(
            !(cmd.contains("dockerd") && cmd.contains(here)),
            "a private dockerd is still running: {cmd}"
        );
    }
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "the bench's temp dir is removed"
    );
}

/// A `--peer buildkit` whose dockerd is missing fails before doing anything, and says how to
/// fix it.
#[test]
fn bench_peer_buildkit_missing_dockerd_is_a_clear_error() {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nLABEL a=1\n").unwrap();
    let o = strata()
        .args(["bench", "--peer", "buildkit"])
        .arg(ctx.path())
        .env("STRATA_DOCKERD", "/nonexistent/dockerd")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("STRATA_DOCKERD=/nonexistent/dockerd is not an executable")
            && stderr.contains("apt-get install docker.io"),
        "{stderr}"
    );
    assert!(!stderr.contains("scenario"), "nothing ran: {stderr}");
}

#[test]
fn bench_changes_a_stage_arg_not_the_one_naming_the_base() {
    // `ARG B` before FROM names the base: changing it would ask for an image that does not
    // exist. The build-arg scenario takes the first ARG inside a stage.
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::write(c.join("a.txt"), "a\n").unwrap();
    fs::write(
        c.join("Dockerfile"),
        "ARG B=scratch\nFROM $B\nARG V=1\nCOPY a.txt /a\nENV X=$V\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("r.json");
    let o = strata()
        .arg("bench")
        .arg("--json")
        .arg(&json)
        .arg(c)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let names: Vec<&str> = r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"build-arg V"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("build-arg B")),
        "{names:?}"
    );
}
