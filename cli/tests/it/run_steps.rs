//! RUN steps end to end: a busybox base built by strata itself, commands in the sandbox, the
//! change captured as a layer, read back by umoci and run by podman.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{
    build, busybox_context, is_root, layer_listing, sha256, strata, testdata, unpack, walk, write,
    Run,
};

#[test]
fn run_steps_change_the_rootfs_hermetically() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nARG GREETING=hello\nENV APP=demo\nWORKDIR /work/dir\nRUN echo \"$GREETING from $(hostname)\" > /greeting && env | sort > /env.txt && pwd > /pwd.txt\nRUN rm /bin/ls && cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /netdevs && ls /dev > /devs\nRUN <<EOF\nset -e\necho heredoc > /heredoc.txt\nid -u > /id.txt\nEOF\nRUN mkdir -p /opq/sub /keep && touch /opq/a /opq/sub/b /keep/x /keep/y\nRUN rm -rf /opq && mkdir /opq && echo new > /opq/new && rm /keep/x && echo hl > /hl1 && ln /hl1 /hl2 && echo s > /suid && chmod 4755 /suid\nUSER app\nRUN id > /tmp/as-app\n",
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
    // The tree umoci unpacked: an opaque directory (removed and recreated: only the new
    // content), a whiteout in a kept directory, a hard link pair, a setuid file.
    let names = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root.join(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("opq"), ["new"], "opaque dir: base content gone");
    assert_eq!(read("opq/new"), "new\n");
    assert_eq!(names("keep"), ["y"], "whiteout of keep/x");
    {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            fs::symlink_metadata(root.join("hl1")).unwrap(),
            fs::symlink_metadata(root.join("hl2")).unwrap(),
        );
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "hard link pair");
        assert_eq!(read("hl2"), "hl\n");
        let m = fs::symlink_metadata(root.join("suid")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755, "setuid bit");
    }
    // ... and in the layer itself, the canonical forms (the RUN before `USER app`).
    let listing = layer_listing(&oci, "1", 1);
    for l in ["opq/.wh..wh..opq", "keep/.wh.x", "hl2 link to hl1"] {
        assert!(listing.lines().any(|x| x.ends_with(l)), "{l} in: {listing}");
    }
    assert!(
        !listing.contains("opq/a") && !listing.contains(".wh.sub"),
        "{listing}"
    );
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
        "FROM base\nRUN echo partial > /partial && for i in $(seq 1 30); do echo \"out $i\"; echo \"err $i\" >&2; done && exit 3\n",
    );
    let r = build(store.path(), ctx.path(), &[]).fails();
    let err = r.stderr();
    // The error names the command, the exit code and the last 20 lines of the combined
    // output, in the order they were written.
    let (_, msg) = err.split_once("error: ").expect(&err);
    assert!(
        msg.contains("RUN failed: `echo partial > /partial && for i in $(seq 1 30); do echo \"out $i\"; echo \"err $i\" >&2; done && exit 3` exited with code 3; last 20 lines of its output:\n  | out 21\n  | err 21\n"),
        "{msg}"
    );
    // ... and, as it ran without network, how to allow that.
    assert!(
        msg.trim_end().ends_with("  | out 30\n  | err 30\nhint: the step ran without network (builds are hermetic by default); if it needs the network, allow it for this step with `RUN --network=host` or for the whole build with `strata build --network host`"),
        "{msg}"
    );
    assert!(!msg.contains("| err 20"), "{msg}");
    // The output was also shown as it came (the build log).
    assert!(err.contains("out 1\nerr 1\n"), "{err}");
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
    let list = layer_listing(oci, tag, back);
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

/// A RUN sees the times the layers give (SOURCE_DATE_EPOCH for what strata made, the base's
/// own), never when a snapshot was unpacked or its container set up: two cold builds a second
/// apart, with a RUN that records times of files, directories, symlinks and `/`, give one image.
#[test]
fn run_sees_the_layers_times_not_the_unpack_time() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    busybox_context(
        c,
        "FROM base\nCOPY app/ /app/\nRUN t=$(stat -c '%n %Y %X' / /etc /bin /bin/sh /app /app/sub /app/sub/f /app/a.txt) && echo \"$t\" > /times\n",
    );
    write(&c.join("app/a.txt"), "a\n");
    write(&c.join("app/sub/f"), "f\n");
    let out = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for i in 0..2 {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let store = tempfile::tempdir().unwrap();
        let oci = out.path().join(format!("oci{i}"));
        let r = build(
            store.path(),
            c,
            &[
                "-t",
                "t:1",
                "--output",
                &format!("type=oci,dest={}", oci.display()),
            ],
        )
        .ok();
        digests.push(r.digest());
        if i == 0 {
            let bundle = out.path().join("b");
            unpack(&oci, "1", &bundle);
            let times = fs::read_to_string(bundle.join("rootfs/times")).unwrap();
            for line in times.lines() {
                let (name, t) = line.split_once(' ').unwrap();
                // What the COPY made, and `/`: SOURCE_DATE_EPOCH (0). The busybox base's
                // RUN layers are canonical too: 0 as well.
                assert_eq!(t, "0 0", "{name}: {times}");
            }
        }
    }
    assert_eq!(digests[0], digests[1], "two cold builds, one image");
}

/// The snapshots (unpacked layers) in a store: `snapshots-v2*/[boot-<id>/]<name>`.
fn snapshots_in(store: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for top in fs::read_dir(store).unwrap().map(|e| e.unwrap()) {
        if !top
            .file_name()
            .to_string_lossy()
            .starts_with("snapshots-v2")
        {
            continue;
        }
        for e in fs::read_dir(top.path()).unwrap().map(|e| e.unwrap()) {
            if e.file_name().to_string_lossy().starts_with("boot-") {
                found.extend(fs::read_dir(e.path()).unwrap().map(|e| e.unwrap().path()));
            } else {
                found.push(e.path());
            }
        }
    }
    found
}

/// `strata gc` removes the snapshots RUN steps unpacked, as root and rootless: there, a
/// snapshot holds files and a 0700 directory of subordinate ids, which the user cannot remove
/// directly (gc has the sandbox helper remove them inside the user namespace). The store stays
/// usable: the same build again gives the same image.
#[test]
fn gc_removes_the_snapshots_run_steps_unpacked() {
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nRUN mkdir -p /home/app && touch /home/app/f && chown -R 1000:1000 /home/app && chmod 700 /home/app\nRUN ls /home > /listing\n",
    );
    let store = tempfile::tempdir().unwrap();
    let first = build(store.path(), ctx.path(), &[]).ok().digest();
    let snaps = snapshots_in(store.path());
    assert!(snaps.len() >= 4, "{snaps:?}");
    let err = gc_all_as_if_an_hour_later(store.path(), &snaps);
    assert!(
        err.contains(&format!(", {} snapshots,", snaps.len())),
        "every snapshot counted: {err}"
    );
    assert_eq!(snapshots_in(store.path()), Vec::<std::path::PathBuf>::new());
    let leftovers: Vec<_> = walk(&store.path().join("tmp"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("gc-snapshot"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(build(store.path(), ctx.path(), &[]).ok().digest(), first);
}

/// Issue 18: `strata gc` beside a running build deleted a snapshot the build was about to
/// mount ("opening lower …: No such file or directory"), 4 times in 4 on a fresh store. A
/// stress test: three uncached builds with RUN steps at once, `gc --keep-storage 0` in a loop
/// beside them, two rounds on one store; every build must succeed, and the store stays
/// usable. Run as root and rootless (.ci/run-rootless-tests runs `run_steps`).
#[test]
fn gc_in_a_loop_beside_builds_never_takes_a_snapshot_they_use() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nARG N=0\nRUN for i in 1 2 3 4 5 6; do echo $i$N > /f$i; sleep 0.1; done\nRUN cat /f* > /all && sleep 0.2\n",
    );
    let store = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let gc_runs = std::thread::scope(|t| {
        let gc = t.spawn(|| {
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) {
                let o = strata()
                    .arg("--store")
                    .arg(store.path())
                    .args(["gc", "--keep-storage", "0"])
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(o.status.success(), "gc failed: {err}");
                runs += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            runs
        });
        for round in 0..2 {
            let builds: Vec<_> = (0..3)
                .map(|i| {
                    let arg = format!("N={round}{i}");
                    let (store, ctx) = (store.path(), ctx.path());
                    t.spawn(move || build(store, ctx, &["--no-cache", "--build-arg", &arg]))
                })
                .collect();
            for b in builds {
                b.join().unwrap().ok().digest();
            }
        }
        stop.store(true, Ordering::SeqCst);
        gc.join().unwrap()
    });
    assert!(gc_runs >= 3, "gc ran {gc_runs} times");
    // Nothing a build used is half-gone: the same build again, cached or not, works.
    build(store.path(), ctx.path(), &[]).ok().digest();
}

/// gc runs no RUN step, so it does not print the single-id warning of a user without a subuid
/// range, and it removes that user's snapshots too. (.ci/run-rootless-tests runs this as such a
/// user, `strata-ci-single`; as root or with a range there is no warning to print either.)
#[test]
fn gc_prints_no_run_warning_and_removes_single_id_snapshots() {
    let ctx = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", ctx.path().join("busybox")).unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        // Two different RUNs: the second's parent (the first's layer) is unpacked. (The same
        // RUN twice would be reused by read set: its layer is the first one's.)
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\nRUN [\"/bin/busybox\", \"true\", \"again\"]\n",
    );
    let store = tempfile::tempdir().unwrap();
    build(store.path(), ctx.path(), &[]).ok();
    let snaps = snapshots_in(store.path());
    assert!(snaps.len() >= 2, "{snaps:?}");
    let err = gc_all_as_if_an_hour_later(store.path(), &snaps);
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(snapshots_in(store.path()), Vec::<std::path::PathBuf>::new());
}

/// Makes `snaps` last used an hour ago (gc leaves snapshots used in the last 10 minutes: a
/// build may be unpacking them), then runs `strata gc --keep-storage 0`, which must succeed.
/// Its stderr.
fn gc_all_as_if_an_hour_later(store: &Path, snaps: &[std::path::PathBuf]) -> String {
    for s in snaps {
        fs::File::open(s)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
    }
    let gc = strata()
        .arg("--store")
        .arg(store)
        .args(["gc", "--keep-storage", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&gc.stderr).into_owned();
    assert!(gc.status.success(), "{err}");
    err
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
        "FROM base\nCOPY app/ /app/\nRUN cd /app && find . | sort > /files && stat -c '%n %a %s %h %u %Y' $(find . -type f | sort) > /stat && stat -c '%n %a %u %Y' $(find . -type d | sort) >> /stat && cat $(find . -type f | sort) | md5sum > /sum\n",
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
    // New snapshots live in this boot's directory (strata_cache::boot).
    let snapshots = match strata_cache::boot_id::boot_dir_name() {
        Some(b) => store.path().join("snapshots-v2").join(b),
        None => store.path().join("snapshots-v2"),
    };
    let deltas = || -> Vec<String> {
        fs::read_dir(&snapshots)
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

/// `sha256:<hex>` of `bytes` (via sha256sum, as the other layout tests do).
/// An OCI layout at `dir` with one image, tag `1`, whose only layer is `layer` (raw bytes of
/// `media_type`) with uncompressed digest `diff_id`.
fn one_layer_layout(dir: &Path, layer: &[u8], media_type: &str, diff_id: &str) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> (String, usize) {
        let d = sha256(b);
        fs::write(blobs.join(&d[7..]), b).unwrap();
        (d, b.len())
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let (l, l_size) = put(layer);
    let config = serde_json::json!({
        "architecture": arch, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let (c, c_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": c_size},
        "layers": [{"mediaType": media_type, "digest": l, "size": l_size}],
    });
    let (m, m_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m,
            "size": m_size, "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// The crafted layers of testdata/malicious/ as the base of a RUN step, through the CLI: the
/// snapshot unpack (as root, or in the user namespace rootless) refuses or contains each, the
/// `sentinel/` next to the store (where the layers aim: `<work>/store/snapshots-v2/.tmp-…/`
/// + `../../../sentinel`) stays as it was, no temp snapshot is left and fsck is clean.
#[test]
fn malicious_base_layers_are_refused_or_contained() {
    let work = tempfile::tempdir().unwrap();
    let sentinel = work.path().join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    fs::write(sentinel.join("secret"), "host\n").unwrap();
    let store = work.path().join("store");
    let ctx = work.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    write(
        &ctx.join("Dockerfile"),
        "FROM oci-layout://base:1\nRUN [\"/no-such-command\"]\n",
    );
    let cases = [
        (
            "dotdot.tar",
            "unsafe layer entry `../../../sentinel/pwned`: `..` component",
        ),
        (
            "symlink-replaces-dir.tar",
            "create parent directories of `d/pwned`",
        ),
        (
            "hardlink-outside.tar",
            "unsafe layer entry `h`: `..` component",
        ),
        ("symlink-dot.tar", "the root can only be a directory"),
        ("symlink-slash.tar", "the root can only be a directory"),
        (
            "pax-size-smaller.tar",
            "PAX `size` 0 disagrees with the ustar header size 1024",
        ),
        (
            "zstd-window.tar.zst",
            "zstd frame needs a window of 2147483648 bytes",
        ),
        // Contained: unpacked (the write lands in the layer's own /sentinel), then the RUN
        // itself fails, as the command does not exist.
        ("rel-symlink-escape.tar", "exited with code 127"),
    ];
    for (name, expected) in cases {
        let bytes = fs::read(testdata(&format!("malicious/{name}"))).unwrap();
        let (media_type, tar) = if name.ends_with(".zst") {
            let o = Command::new("zstd")
                .args(["-d", "--long=31", "-c"])
                .arg(testdata(&format!("malicious/{name}")))
                .output()
                .unwrap();
            assert!(o.status.success());
            ("application/vnd.oci.image.layer.v1.tar+zstd", o.stdout)
        } else {
            ("application/vnd.oci.image.layer.v1.tar", bytes.clone())
        };
        let base = ctx.join("base");
        let _ = fs::remove_dir_all(&base);
        one_layer_layout(&base, &bytes, media_type, &sha256(&tar));
        let r = build(&store, &ctx, &[]).fails();
        let err = r.stderr();
        assert!(
            err.contains(expected),
            "{name}: expected `{expected}` in: {err}"
        );
        let mut left: Vec<_> = fs::read_dir(&sentinel)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["secret"], "{name} wrote into the sentinel");
        assert_eq!(
            fs::read_to_string(sentinel.join("secret")).unwrap(),
            "host\n"
        );
        let mut top: Vec<_> = fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        top.sort();
        assert_eq!(top, ["ctx", "sentinel", "store"], "{name}");
        for d in fs::read_dir(&store).unwrap() {
            let d = d.unwrap();
            let n = d.file_name();
            if n.to_string_lossy().starts_with("snapshots-v2") {
                // Snapshots, including those in boot directories (strata_cache::boot).
                let mut snaps = Vec::new();
                for s in fs::read_dir(d.path()).unwrap() {
                    let s = s.unwrap();
                    if s.file_name().to_string_lossy().starts_with("boot-") {
                        snaps.extend(fs::read_dir(s.path()).unwrap().map(|e| e.unwrap()));
                    } else {
                        snaps.push(s);
                    }
                }
                for s in snaps {
                    assert!(
                        !s.file_name().to_string_lossy().starts_with(".tmp-"),
                        "{name}: a half-unpacked snapshot was left: {:?}",
                        s.path()
                    );
                    if name == "rel-symlink-escape.tar" {
                        assert_eq!(
                            fs::read_to_string(s.path().join("sentinel/pwned")).unwrap(),
                            "pwned\n",
                            "contained inside the snapshot"
                        );
                    }
                }
            }
        }
    }
    let fsck = strata()
        .arg("--store")
        .arg(&store)
        .arg("fsck")
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&fsck.stderr)
    );
}

/// (pid, parent pid, cmdline with NULs as spaces) of every process.
fn processes() -> Vec<(u32, u32, String)> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(stat), Ok(cmd)) = (
            fs::read_to_string(e.path().join("stat")),
            fs::read(e.path().join("cmdline")),
        ) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        v.push((pid, ppid, cmd.trim_end().to_string()));
    }
    v
}

/// Ctrl-C / SIGTERM during a long RUN: strata stops the sandbox (the command and every
/// helper), removes its temp dirs, records nothing, exits 128 + signal within seconds; the
/// store is then clean and the next build gives the normal digest.
#[test]
fn sigterm_or_sigint_during_run_stops_the_sandbox_and_cleans_up() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let work = tempfile::tempdir().unwrap();
        let store = work.path().join("store");
        let tmp = work.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let ctx = work.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        // A sleep no other process on the machine runs. It only sleeps the first time (the
        // cache mount, which is not part of the step's key, remembers): so the rebuild shows
        // whether the interrupted step was recorded, without sleeping again.
        let secs = format!("{}{}", 600_000 + std::process::id() % 1000 * 10, sig);
        let run = format!("RUN --mount=type=cache,target=/c,id=sig if [ ! -e /c/started ]; then touch /c/started; sleep {secs}; fi; echo done > /done");
        busybox_context(&ctx, &format!("FROM base\n{run}\n"));
        let child = strata()
            .env("TMPDIR", &tmp)
            .arg("--store")
            .arg(&store)
            .args(["build", "--progress", "plain"])
            .arg(&ctx)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let strata_pid = child.id();
        let sleep_cmd = format!("sleep {secs}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let descendants = loop {
            let ps = processes();
            if ps.iter().any(|p| p.2 == sleep_cmd) {
                // Everything strata started, down to the command.
                let mut tree = vec![strata_pid];
                let mut grew = true;
                while grew {
                    grew = false;
                    for p in &ps {
                        if tree.contains(&p.1) && !tree.contains(&p.0) {
                            tree.push(p.0);
                            grew = true;
                        }
                    }
                }
                break tree;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the RUN never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(
            descendants.len() >= 5,
            "strata, helper, pid 1, sh, sleep: {descendants:?}"
        );
        // SAFETY: kill with a valid pid and signal.
        assert_eq!(unsafe { libc::kill(strata_pid as i32, sig) }, 0);
        let t0 = std::time::Instant::now();
        let out = child.wait_with_output().unwrap();
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{name}: strata exited {took:?} after the signal");
        assert!(
            took < std::time::Duration::from_secs(4),
            "{name}: took {took:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(128 + sig), "{name}: {err}");
        assert!(
            err.contains("Dockerfile:7: stage 1, step 1")
                && err.contains(&format!(
                    "interrupted by {name}: the sandbox was stopped and nothing of this step was cached"
                )),
            "{name}: {err}"
        );
        assert!(out.stdout.is_empty(), "no digest on stdout");
        // No process of the sandbox is left.
        let left: Vec<_> = processes()
            .into_iter()
            .filter(|p| descendants.contains(&p.0) || p.2 == sleep_cmd)
            .collect();
        assert!(left.is_empty(), "{name}: left running: {left:?}");
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let w = work.path().to_str().unwrap();
        assert!(!mountinfo.contains(w), "{name}: mounts left: {mountinfo}");
        // Temp dirs: the helper's (TMPDIR) and the step's upper/work dirs (store tmp/).
        let names = |p: &Path| -> Vec<String> {
            fs::read_dir(p)
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(names(&tmp), Vec::<String>::new(), "{name}: helper temp dir");
        assert_eq!(
            names(&store.join("tmp")),
            Vec::<String>::new(),
            "{name}: store tmp/"
        );
        let fsck = strata()
            .arg("--store")
            .arg(&store)
            .arg("fsck")
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{name}: fsck: {}",
            String::from_utf8_lossy(&fsck.stderr)
        );
        // The interrupted step was not recorded: it runs again (without sleeping now).
        let again = build(&store, &ctx, &[]).ok();
        assert_eq!(again.executed(), std::slice::from_ref(&run), "{name}");
        // The normal digest: a fresh store whose cache mount says the same.
        let reference = work.path().join("reference");
        let mounts = names(&store.join("cache-mounts-v1"));
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        let m = reference
            .join("cache-mounts-v1")
            .join(&mounts[0])
            .join("data");
        fs::create_dir_all(&m).unwrap();
        fs::write(m.join("started"), "").unwrap();
        assert_eq!(
            again.digest(),
            build(&reference, &ctx, &[]).ok().digest(),
            "{name}"
        );
    }
}

#[allow(dead_code)]
fn _uses(_: Run) {}
