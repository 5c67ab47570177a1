//! RUN steps end to end: a busybox base built by strata itself, commands in the sandbox, the
//! change captured as a layer, read back by umoci and run by podman.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{build, write, Run};

/// A context whose Dockerfile starts from a busybox rootfs made with RUN itself.
fn busybox_context(dir: &Path, rest: &str) {
    fs::copy("/bin/busybox", dir.join("busybox"))
        .expect("busybox-static is installed by .ci/install-deps");
    write(
        &dir.join("Dockerfile"),
        &format!(
            "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/usr/bin\", \"/sbin\", \"/usr/sbin\", \"/etc\", \"/tmp\"]\nRUN [\"/bin/busybox\", \"--install\", \"-s\"]\nRUN echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'root:x:0:' > /etc/group && echo 'app:x:1000:' >> /etc/group && chmod 1777 /tmp\n{rest}"
        ),
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn unpack(oci: &Path, tag: &str, bundle: &Path) {
    let mut c = Command::new("umoci");
    c.arg("unpack");
    if !is_root() {
        c.arg("--rootless");
    }
    let st = c
        .arg("--image")
        .arg(format!("{}:{tag}", oci.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn run_steps_change_the_rootfs_hermetically() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nARG GREETING=hello\nENV APP=demo\nWORKDIR /work/dir\nRUN echo \"$GREETING from $(hostname)\" > /greeting && env | sort > /env.txt && pwd > /pwd.txt\nRUN rm /bin/ls && cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /netdevs && ls /dev > /devs\nRUN <<EOF\nset -e\necho heredoc > /heredoc.txt\nid -u > /id.txt\nEOF\nUSER app\nRUN id > /tmp/as-app\n",
    );
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("oci");
    let r = build(
        store.path(),
        ctx.path(),
        &[
            "-t",
            "t:1",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
        ],
    )
    .ok();
    let bundle = out.path().join("b");
    unpack(&oci, "1", &bundle);
    let root = bundle.join("rootfs");
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("greeting"), "hello from strata\n");
    assert_eq!(read("pwd.txt"), "/work/dir\n");
    let env = read("env.txt");
    let mut expected: Vec<&str> = vec![
        "APP=demo",
        "GREETING=hello",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PWD=/work/dir",
        "SHLVL=1",
    ];
    expected.sort();
    let got: Vec<&str> = env.lines().filter(|l| !l.starts_with("_=")).collect();
    assert_eq!(
        got, expected,
        "the environment is exactly the image's Env and the ARGs in scope"
    );
    assert_eq!(read("netdevs").trim(), "lo", "no network but loopback");
    let devs = read("devs");
    for d in [
        "null", "zero", "urandom", "random", "full", "tty", "ptmx", "pts", "shm",
    ] {
        assert!(devs.lines().any(|l| l == d), "/dev/{d} missing: {devs}");
    }
    assert!(
        !root.join("bin/ls").exists(),
        "a deleted file must be a whiteout in the layer"
    );
    assert!(root.join("bin/cat").exists());
    assert_eq!(read("heredoc.txt"), "heredoc\n");
    assert_eq!(read("id.txt"), "0\n");
    assert!(
        read("tmp/as-app").starts_with("uid=1000(app) gid=1000(app)"),
        "{}",
        read("tmp/as-app")
    );
    // Injected files and mount points never reach a layer.
    assert!(
        !root.join("etc/hosts").exists()
            && !root.join("etc/resolv.conf").exists()
            && !root.join("etc/hostname").exists()
    );
    assert!(
        !root.join("proc").exists() || fs::read_dir(root.join("proc")).unwrap().next().is_none()
    );

    // The same build in a fresh store gives the same digest; a rebuild runs nothing.
    let store2 = tempfile::tempdir().unwrap();
    let r2 = build(store2.path(), ctx.path(), &[]).ok();
    assert_eq!(r.digest(), r2.digest());
    let again = build(store.path(), ctx.path(), &[]).ok();
    assert!(again.executed().is_empty(), "{:?}", again.executed());
}

#[test]
fn failed_run_reports_the_exit_code_and_caches_nothing() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nRUN echo partial > /partial && exit 3\n",
    );
    let r = build(store.path(), ctx.path(), &[]).fails();
    assert!(r.stderr().contains("exited with code 3"), "{}", r.stderr());
    assert!(
        r.stderr().contains("Dockerfile:7: stage 1, step 1"),
        "the error names file:line: {}",
        r.stderr()
    );
    // The base steps were cached; the failed step was not.
    let again = build(store.path(), ctx.path(), &[]).fails();
    assert_eq!(
        again.executed(),
        Vec::<String>::new(),
        "the failed RUN must not be recorded as done"
    );
}

#[test]
fn podman_runs_the_result() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nRUN echo 'echo ran in podman' > /hello.sh\nCMD [\"/bin/sh\", \"/hello.sh\"]\n",
    );
    // podman reads `oci:PATH` as a reference: the path must be lower case.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let out = tempfile::Builder::new()
        .prefix(&format!("strata-podman-{nanos}"))
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    let oci = out.path().join("oci");
    build(
        store.path(),
        ctx.path(),
        &[
            "-t",
            "hello:1",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
        ],
    )
    .ok();
    let root = out.path().join("podman-root");
    let run = out.path().join("podman-run");
    let o = Command::new("podman")
        .arg("--root")
        .arg(&root)
        .arg("--runroot")
        .arg(&run)
        .args([
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
            "run",
            "--rm",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--network",
            "none",
        ])
        .arg(format!("oci:{}:1", oci.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran in podman\n");
    if !is_root() {
        // Rootless podman's storage holds files of subordinate ids: only its user namespace
        // can remove them (the temp dir's own cleanup cannot).
        let _ = Command::new("podman")
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&run)
            .args(["--storage-driver", "vfs", "unshare", "rm", "-rf"])
            .arg(&root)
            .arg(&run)
            .status();
    }
}

/// The uid/gid of `path` in layer `back` from the top (0 = last) of the image `tag` in `oci`,
/// as `tar` lists it.
fn owner_in_layer(oci: &Path, tag: &str, back: usize, path: &str) -> String {
    let json =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let blob = |d: &serde_json::Value| {
        let d = d.as_str().unwrap();
        oci.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = json(&oci.join("index.json"));
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in index");
    let manifest = json(&blob(&m["digest"]));
    let layers = manifest["layers"].as_array().unwrap();
    let layer = blob(&layers[layers.len() - 1 - back]["digest"]);
    let o = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(&layer)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = list
        .lines()
        .find(|l| l.ends_with(&format!(" {path}")) || l.ends_with(&format!(" {path}/")))
        .unwrap_or_else(|| panic!("{path} not in the top layer: {list}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

/// RUN as container root works in every id mapping: as root, rootless with an /etc/subuid
/// range, and in the single-id fallback (`STRATA_TEST_SINGLE_ID=1`, run by
/// `.ci/run-rootless-tests` as a user without a range), where chown to another id fails and
/// the warning says so.
#[test]
fn run_as_container_root_in_any_id_mapping() {
    let single = std::env::var_os("STRATA_TEST_SINGLE_ID").is_some();
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let owned = if single {
        ""
    } else {
        "RUN touch /owned && chown 1000:1000 /owned && chmod 600 /owned\n"
    };
    busybox_context(
        ctx.path(),
        &format!("FROM base\nRUN echo hi > /hi && rm /bin/ls && mkdir -p /d/e && touch /d/e/f && id -u > /id\n{owned}"),
    );
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("oci");
    let r = build(
        store.path(),
        ctx.path(),
        &[
            "-t",
            "t:1",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
        ],
    )
    .ok();
    assert_eq!(
        r.stderr().contains("RUN steps run with a single id"),
        single,
        "{}",
        r.stderr()
    );
    let bundle = out.path().join("b");
    unpack(&oci, "1", &bundle);
    let root = bundle.join("rootfs");
    assert_eq!(fs::read_to_string(root.join("hi")).unwrap(), "hi\n");
    assert_eq!(fs::read_to_string(root.join("id")).unwrap(), "0\n");
    assert!(root.join("d/e/f").is_file());
    assert!(!root.join("bin/ls").exists() && root.join("bin/cat").exists());
    if !single {
        // Captured as seen in the container, not as the host's subordinate id.
        // Mode 0600 of another id: readable only inside the user namespace.
        assert_eq!(owner_in_layer(&oci, "1", 0, "owned"), "1000/1000");
    }
    let back = usize::from(!single);
    assert_eq!(owner_in_layer(&oci, "1", back, "hi"), "0/0");

    // Building again in the same store needs no snapshot of the base twice and leaves no
    // temp dirs behind (rootless, they hold ids only the user namespace can remove).
    let tmp_left: Vec<_> = fs::read_dir(store.path().join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(tmp_left.is_empty(), "{tmp_left:?}");

    if single {
        let ctx2 = tempfile::tempdir().unwrap();
        busybox_context(
            ctx2.path(),
            "FROM base\nRUN touch /hi2 && chown 1000 /hi2\n",
        );
        let r = build(store.path(), ctx2.path(), &[]).fails();
        let err = r.stderr();
        assert!(
            err.contains("chown: /hi2: Invalid argument") && err.contains("exited with code 1"),
            "{err}"
        );
    }
}

/// A RUN after a COPY whose source changed by a few files sees exactly the new tree: the COPY
/// layer's snapshot is then a small delta over the previous one (sandbox::delta), and the image
/// equals a cold build's. `%h` pins the files' link count: reused files are not hard links.
/// (Directories are left out: a directory in both snapshots of the stack is merged by overlay,
/// which reports link count 1 and the top directory's size — as the host file system's own
/// directory link counts and sizes, these were never part of what strata reproduces.)
#[test]
fn run_after_a_small_copy_change_matches_a_cold_build() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    busybox_context(
        c,
        "FROM base\nCOPY app/ /app/\nRUN cd /app && find . | sort > /files && stat -c '%n %a %s %h %u' $(find . -type f | sort) > /stat && stat -c '%n %a %u' $(find . -type d | sort) >> /stat && cat $(find . -type f | sort) | md5sum > /sum\n",
    );
    for (p, body) in [
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
        ("sub/c.txt", "c\n"),
        ("sub/del.txt", "del\n"),
    ] {
        write(&c.join("app").join(p), body);
    }
    let first = build(store.path(), c, &[]).ok().digest();
    write(&c.join("app/a.txt"), "a, longer now\n");
    write(&c.join("app/sub/new.txt"), "new\n");
    let r = build(store.path(), c, &[]).ok();
    assert_eq!(r.executed().len(), 2, "COPY and RUN: {:?}", r.executed());
    let second = r.digest();
    assert_ne!(first, second);
    let deltas = || -> Vec<String> {
        fs::read_dir(store.path().join("snapshots-v1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".delta-"))
            .collect()
    };
    if is_root() {
        assert_eq!(
            deltas().len(),
            1,
            "the changed COPY layer is unpacked as a delta"
        );
    }
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(
        build(fresh.path(), c, &[]).ok().digest(),
        second,
        "same image as a cold build"
    );

    // An edit after an edit: the previous layer is itself a delta; the new one goes over the
    // same full snapshot (deltas never stack on deltas).
    write(&c.join("app/b.txt"), "b2\n");
    let third = build(store.path(), c, &[]).ok().digest();
    if is_root() {
        let d = deltas();
        assert_eq!(d.len(), 2, "{d:?}");
        let base_of = |n: &String| n.split(".delta-").nth(1).unwrap().to_string();
        assert_eq!(base_of(&d[0]), base_of(&d[1]), "{d:?}");
    }
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(
        build(fresh.path(), c, &[]).ok().digest(),
        third,
        "same image as a cold build"
    );

    // A file removed from the source: a delta would need a whiteout, which would also hide
    // what the layers under the previous COPY layer have at that path — so the layer is
    // unpacked in full (no new delta), and the image still equals a cold build's.
    fs::remove_file(c.join("app/sub/del.txt")).unwrap();
    let fourth = build(store.path(), c, &[]).ok().digest();
    if is_root() {
        assert_eq!(deltas().len(), 2, "no delta for a layer that lost a path");
    }
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(
        build(fresh.path(), c, &[]).ok().digest(),
        fourth,
        "same image as a cold build"
    );
}

#[allow(dead_code)]
fn _uses(_: Run) {}
