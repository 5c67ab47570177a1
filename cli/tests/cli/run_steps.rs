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

fn unpack(oci: &Path, tag: &str, bundle: &Path) {
    let st = Command::new("umoci")
        .args(["unpack", "--image"])
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
}

#[allow(dead_code)]
fn _uses(_: Run) {}
