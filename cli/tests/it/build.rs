//! End-to-end tests of `strata build`: reproducibility, real clients (skopeo, umoci) reading the
//! output, the cache, and error reporting.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{self, build, copy_tree, have, strata, testdata, write, Run};

/// The golden digest of the bundled example. It changes only when the canonical layer form,
/// the config/manifest form or the example itself changes — on purpose, in the same commit,
/// with a note in docs/layer-format.md or docs/cache-keys.md.
const GOLDEN_EXAMPLE: &str =
    "sha256:79c7be85463b08877dee45dc7cd6f197a41d226294a65901580ecd6396bfcac7";

#[test]
fn golden_digest_of_bundled_example() {
    let store = tempfile::tempdir().unwrap();
    let r = build(store.path(), &testdata("example"), &[]).ok();
    assert_eq!(r.digest(), GOLDEN_EXAMPLE);
}

#[test]
fn same_digest_from_another_store_path_mtime_umask_owner_xattrs_and_env() {
    let store_a = tempfile::tempdir().unwrap();
    let a = build(store_a.path(), &testdata("example"), &[])
        .ok()
        .digest();

    // Another copy of the context: other path (on tmpfs, so another readdir order), other
    // mtimes, group/other write bits, another owner, extra xattrs, another environment.
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let ctx = base.path().join("somewhere/else");
    fs::create_dir_all(&ctx).unwrap();
    copy_tree(&testdata("example"), &ctx);
    let st = Command::new("sh")
        .arg("-c")
        .arg("find . -exec touch -h -d '2031-05-06 07:08:09' {} + && chmod -R g+w,o+w . && chown -R 12345:54321 . && (command -v setfattr >/dev/null && setfattr -n user.origin -v laptop Dockerfile bin/hello || true)")
        .current_dir(&ctx)
        .status()
        .unwrap();
    assert!(st.success());
    let store_b = tempfile::tempdir().unwrap();
    let out = strata()
        .arg("--store")
        .arg(store_b.path())
        .args(["build", "--progress", "plain", "-j", "1"])
        .arg(&ctx)
        .env("TZ", "Asia/Kolkata")
        .env("LANG", "tr_TR.UTF-8")
        .env("HOME", "/nonexistent")
        .env("USER", "someone")
        .output()
        .unwrap();
    let b = Run { out }.ok().digest();
    assert_eq!(a, b, "the same inputs must give the same image digest");
}

#[test]
fn rebuild_with_nothing_changed_executes_nothing_and_one_change_reexecutes_dependents() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY a.txt /a.txt\nENV X=1\nCOPY b/ /b/\nCMD [\"/b/x\"]\n",
    );
    write(&ctx.path().join("a.txt"), "alpha\n");
    write(&ctx.path().join("b/x"), "x\n");
    write(&ctx.path().join("b/y"), "y\n");
    let first = build(store.path(), ctx.path(), &[]).ok();
    assert_eq!(first.executed().len(), 4);
    let second = build(store.path(), ctx.path(), &[]).ok();
    assert_eq!(
        second.executed(),
        Vec::<String>::new(),
        "a no-op rebuild must execute nothing"
    );
    assert_eq!(second.steps().len(), 4);
    assert_eq!(first.digest(), second.digest());

    // Change a file of the second COPY: only that COPY and what follows re-run.
    write(&ctx.path().join("b/y"), "y changed\n");
    let third = build(store.path(), ctx.path(), &["--explain"]).ok();
    assert_eq!(
        third.executed(),
        vec!["COPY b/ /b/".to_string(), "CMD [\"/b/x\"]".to_string()]
    );
    let copy_step = third
        .steps()
        .into_iter()
        .find(|s| s["instruction"] == "COPY b/ /b/")
        .unwrap();
    let why = copy_step["explain"].to_string();
    assert!(
        why.contains("b/y (content)"),
        "explain should name the changed file: {why}"
    );
    assert_ne!(third.digest(), first.digest());

    // Touching a file (same content) changes nothing.
    let st = Command::new("touch")
        .arg("-d")
        .arg("2030-01-01")
        .arg(ctx.path().join("a.txt"))
        .status()
        .unwrap();
    assert!(st.success());
    let fourth = build(store.path(), ctx.path(), &[]).ok();
    assert!(fourth.executed().is_empty());
    assert_eq!(fourth.digest(), third.digest());
}

#[test]
fn build_arg_change_invalidates_only_steps_after_its_arg() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY a /a\nARG V=1\nCOPY a /b/${V}\n",
    );
    write(&ctx.path().join("a"), "a\n");
    let one = build(store.path(), ctx.path(), &[]).ok();
    let two = build(store.path(), ctx.path(), &["--build-arg", "V=2"]).ok();
    assert_eq!(
        two.executed(),
        vec!["ARG V=1".to_string(), "COPY a /b/${V}".to_string()]
    );
    assert_ne!(one.digest(), two.digest());
}

#[test]
fn real_clients_read_the_output() {
    if !have("skopeo") || !have("umoci") {
        panic!("skopeo and umoci are required (installed by .ci/install-deps)");
    }
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("oci");
    let archive = out.path().join("image.tar");
    let docker = out.path().join("docker.tar");
    let r = build(
        store.path(),
        &testdata("example"),
        &[
            "-t",
            "example:1.0",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            "--output",
            &format!("type=oci-archive,dest={}", archive.display()),
            "--output",
            &format!("type=docker-archive,dest={}", docker.display()),
        ],
    )
    .ok();
    let digest = r.digest();

    let insp = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:1.0", oci.display()))
        .output()
        .unwrap();
    assert!(
        insp.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&insp.stderr)
    );
    let v: Value = serde_json::from_slice(&insp.stdout).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    assert_eq!(v["Labels"]["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(v["Created"], "1970-01-01T00:00:00Z");

    let bundle = out.path().join("bundle");
    support::unpack(&oci, "1.0", &bundle);
    let root = bundle.join("rootfs");
    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::read_to_string(root.join("app/bin/hello")).unwrap(),
        "#!/bin/sh\necho \"hello from strata\"\n"
    );
    assert_eq!(meta("app/bin/hello").permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        meta("app/etc/server.toml").permissions().mode() & 0o7777,
        0o644
    );
    assert!(
        !root.join("app/etc/README").exists(),
        "only *.toml files are copied"
    );
    assert_eq!(meta("app/etc/server.toml").uid(), 0);
    assert_eq!(
        fs::read_to_string(root.join("srv/VERSION")).unwrap(),
        "strata example 1.0.0\n"
    );
    assert!(root.join("srv/static/css/site.css").is_file());
    assert!(
        !root.join("srv/static/secrets.env").exists(),
        ".dockerignore must exclude secrets.env"
    );
    assert_eq!(
        fs::read_to_string(root.join("opt/vendor/lib/libfoo.txt")).unwrap(),
        "vendored library v2\n"
    );
    assert_eq!(
        fs::read_link(root.join("opt/vendor/lib/libfoo-current.txt")).unwrap(),
        Path::new("libfoo.txt")
    );
    let cfg: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["cwd"], "/app");
    assert_eq!(cfg["process"]["user"]["uid"], 1000);

    // The archive is a valid OCI archive for skopeo, with the same manifest.
    let copied = out.path().join("copied");
    let st = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}:1.0", archive.display()))
        .arg(format!("oci:{}:x", copied.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", docker.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo inspect docker-archive: {}",
        String::from_utf8_lossy(&st.stderr)
    );

    // Exporting again gives identical archive bytes.
    let archive2 = out.path().join("image2.tar");
    build(
        store.path(),
        &testdata("example"),
        &[
            "-t",
            "example:1.0",
            "--output",
            &format!("type=oci-archive,dest={}", archive2.display()),
        ],
    )
    .ok();
    assert_eq!(fs::read(&archive).unwrap(), fs::read(&archive2).unwrap());
}

#[test]
fn from_oci_layout_builds_on_a_local_image() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let base_ctx = work.path().join("base");
    write(
        &base_ctx.join("Dockerfile"),
        "FROM scratch\nCOPY etc/ /etc/\nENV BASE=yes\nCMD [\"/bin/true\"]\n",
    );
    write(
        &base_ctx.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    );
    write(&base_ctx.join("etc/group"), "root:x:0:\napp:x:1000:\n");
    let layout = work.path().join("ctx/layout");
    build(
        store.path(),
        &base_ctx,
        &[
            "-t",
            "base:1",
            "--output",
            &format!("type=oci,dest={}", layout.display()),
        ],
    )
    .ok();

    let ctx = work.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        "FROM oci-layout://layout:1\nENV PATH=/x:$BASE\nCOPY --chown=app app.txt /home/app/\n",
    );
    write(&ctx.join("app.txt"), "app\n");
    let oci = work.path().join("out");
    build(
        store.path(),
        &ctx,
        &[
            "-t",
            "app:1",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
        ],
    )
    .ok();
    let bundle = work.path().join("bundle");
    let st = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", oci.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(bundle.join("rootfs/home/app/app.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    assert!(bundle.join("rootfs/etc/passwd").is_file());
    let cfg: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let env = cfg["process"]["env"].to_string();
    assert!(env.contains("PATH=/x:yes"), "{env}");
    assert_eq!(cfg["process"]["args"][0], "/bin/true");
}

#[test]
fn errors_are_clear_and_build_nothing() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "FROM scratch\nRUN --mount=type=ssh,uid=1 cat /x\n",
            "RUN --mount=type=ssh option `uid` is not supported yet",
            &["Dockerfile:2:"],
        ),
        (
            "FROM scratch\nCOPY a /a\nCOPY missing.txt /x\n",
            "`missing.txt` not found",
            &["Dockerfile:3:1", "hint:"],
        ),
        (
            "FROM oci-layout:///etc:latest\n",
            "outside the build context",
            &["Dockerfile:1:6"],
        ),
        (
            "FROM scratch\nCOPPY a /a\n",
            "unknown instruction",
            &["did you mean `COPY`"],
        ),
        (
            "FROM scratch\nCOPY missing.txt /x\n",
            "missing.txt",
            &["not found"],
        ),
        ("FROM scratch\nCOPY ../outside /x\n", "outside", &[]),
        (
            "FROM NoSuchStage AS a\n",
            "must be lower case",
            &["hint: registries only accept lower-case repository names"],
        ),
        (
            "FROM scratch\nCOPY --from=later /a /a\nFROM scratch AS later\nCOPY --from=0 /a /a\n",
            "which is defined later",
            &[
                "Dockerfile:2:",
                "hint: a stage can only copy from stages above it",
            ],
        ),
        ("FROM scratch\nCOPY --chwon=1 a /a\n", "unknown flag", &[]),
        (
            "FROM scratch\nCOPY a a /dest\n",
            "must be a directory",
            &["Dockerfile:2:", "hint: write `/dest/`"],
        ),
        (
            "FROM scratch\nCOPY --chmod=9z9 a /a\n",
            "invalid --chmod",
            &[],
        ),
    ];
    for (dockerfile, expect, also) in cases {
        let store = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let inner = ctx.path().join("ctx");
        write(&inner.join("Dockerfile"), dockerfile);
        write(&inner.join("a"), "a\n");
        write(&ctx.path().join("outside"), "secret\n");
        let r = build(store.path(), &inner, &[]).fails();
        let err = r.stderr();
        assert!(
            err.contains("error:"),
            "{dockerfile:?}: no `error:` in {err}"
        );
        assert!(
            err.contains(expect),
            "{dockerfile:?}: expected {expect:?} in:\n{err}"
        );
        for a in *also {
            assert!(err.contains(a), "{dockerfile:?}: expected {a:?} in:\n{err}");
        }
        assert!(
            r.stdout().is_empty(),
            "nothing on stdout for a failed build"
        );
        assert!(r.executed().is_empty(), "{dockerfile:?}: nothing may run");
    }
}

#[test]
fn symlink_out_of_the_context_is_refused() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY link /x\n",
    );
    std::os::unix::fs::symlink("/etc/passwd", ctx.path().join("link")).unwrap();
    let r = build(store.path(), ctx.path(), &[]).fails();
    assert!(r.stderr().contains("outside"), "{}", r.stderr());
}

/// Issue 18: `ln -s /etc/passwd ctx/Dockerfile` was followed and the parse error printed the
/// host file's first line. A Dockerfile or .dockerignore that leads out of the context is
/// refused, and nothing of the target is shown; an explicit -f outside the context is read.
#[test]
fn dockerfile_or_dockerignore_symlinked_out_of_the_context_is_refused_unread() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret");
    write(&secret, "root:x:0:0:s3cr3t:/root:/bin/bash\n");
    let ctx = work.path().join("ctx");
    write(&ctx.join("a"), "a\n");
    std::os::unix::fs::symlink(&secret, ctx.join("Dockerfile")).unwrap();
    let store = work.path().join("store");
    let r = build(&store, &ctx, &[]).fails();
    let err = r.stderr();
    assert!(
        err.contains("is a symlink that points outside the build context"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!err.contains("s3cr3t") && !err.contains("root:x"), "{err}");
    // Named with -f, the same file is the user's choice: read, and still not echoed, since
    // its first line is no instruction.
    let r = build(&store, &ctx, &["-f", secret.to_str().unwrap()]).fails();
    let err = r.stderr();
    assert!(
        err.contains("does not start with a Dockerfile instruction"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t") && !err.contains("root:x"), "{err}");
    // A symlink inside the context is fine.
    fs::remove_file(ctx.join("Dockerfile")).unwrap();
    write(
        &ctx.join("build/Dockerfile.real"),
        "FROM scratch\nCOPY a /a\n",
    );
    std::os::unix::fs::symlink("build/Dockerfile.real", ctx.join("Dockerfile")).unwrap();
    build(&store, &ctx, &[]).ok().digest();
    // A .dockerignore leading out: refused too (it would decide what the build sees).
    std::os::unix::fs::symlink(&secret, ctx.join(".dockerignore")).unwrap();
    let r = build(&store, &ctx, &[]).fails();
    let err = r.stderr();
    assert!(err.contains("points outside the build context"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
}

/// Issue 18: `-f /dev/zero` never returned; a FIFO named Dockerfile in a context would block.
#[test]
fn dockerfile_that_is_a_device_fifo_or_too_large_fails_fast() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let store = work.path().join("store");
    let t = std::time::Instant::now();
    let r = build(&store, &ctx, &["-f", "/dev/zero"]).fails();
    assert!(
        r.stderr().contains("larger than 4194304 bytes"),
        "{}",
        r.stderr()
    );
    let st = Command::new("mkfifo")
        .arg(ctx.join("Dockerfile"))
        .status()
        .unwrap();
    assert!(st.success());
    let r = build(&store, &ctx, &[]).fails();
    assert!(
        r.stderr().contains("not a regular file (it is a FIFO)"),
        "{}",
        r.stderr()
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        t.elapsed()
    );
}

/// Issue 18: `-j 99999999999` started 15,608 threads; `-j 0` was accepted silently.
#[test]
fn jobs_must_be_between_1_and_512() {
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("Dockerfile"), "FROM scratch\n");
    for j in ["0", "513", "99999999999", "-1"] {
        let o = strata()
            .arg("build")
            .arg(format!("--jobs={j}"))
            .arg(ctx.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "-j {j}: {err}");
        assert!(err.contains("--jobs"), "-j {j}: {err}");
    }
    let o = strata()
        .args(["build", "-j", "0"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 is not in 1..=512"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let store = tempfile::tempdir().unwrap();
    build(store.path(), ctx.path(), &["-j", "512"])
        .ok()
        .digest();
}

/// Issue 18: `--output type=oci,dest=DIR` wrote layout files into any directory (with
/// `dest=/`: `/blobs/`, `/oci-layout`) before it failed, and an archive output replaced any
/// file. Destinations are checked before the build, a new layout appears whole or not at all,
/// and only an image archive is replaced.
#[test]
fn outputs_are_checked_first_and_never_mix_into_or_overwrite_other_files() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    write(&ctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\n");
    write(&ctx.join("a"), "a\n");
    let store = work.path().join("store");
    let out = |spec: String| build(&store, &ctx, &["--output", &spec]);

    // A non-empty directory that is no layout: refused before anything runs, left as it was.
    let docs = work.path().join("docs");
    write(&docs.join("notes.txt"), "mine\n");
    let r = out(format!("type=oci,dest={}", docs.display())).fails();
    assert!(
        r.stderr()
            .contains("is a non-empty directory, not an OCI image layout"),
        "{}",
        r.stderr()
    );
    assert!(r.executed().is_empty(), "checked before the build");
    assert_eq!(fs::read_dir(&docs).unwrap().count(), 1);
    // A file where a directory should be.
    let r = out(format!(
        "type=oci,dest={}",
        docs.join("notes.txt").display()
    ))
    .fails();
    assert!(r.stderr().contains("not a directory"), "{}", r.stderr());

    // New and empty directories get a whole layout; nothing is left beside them.
    let fresh = work.path().join("out/new");
    let empty = work.path().join("empty");
    fs::create_dir(&empty).unwrap();
    for d in [&fresh, &empty] {
        out(format!("type=oci,dest={}", d.display())).ok();
        assert!(d.join("oci-layout").is_file() && d.join("index.json").is_file());
    }
    let beside: Vec<_> = fs::read_dir(work.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["new"], "no temp dir left beside the layout");
    // An existing layout gets the image added.
    build(
        &store,
        &ctx,
        &[
            "-t",
            "app:2",
            "--output",
            &format!("type=oci,dest={}", fresh.display()),
        ],
    )
    .ok();
    let index = fs::read_to_string(fresh.join("index.json")).unwrap();
    assert!(index.contains("app:2"), "{index}");
    // A layout whose index.json is broken is refused, not rewritten.
    let broken = work.path().join("broken");
    write(
        &broken.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    write(&broken.join("index.json"), "{not json");
    out(format!("type=oci,dest={}", broken.display())).fails();
    assert_eq!(
        fs::read_to_string(broken.join("index.json")).unwrap(),
        "{not json"
    );

    // Archives: a new file, then the same path again (an image archive: replaced).
    let tar = work.path().join("img.tar");
    out(format!("type=oci-archive,dest={}", tar.display())).ok();
    out(format!("type=oci-archive,dest={}", tar.display())).ok();
    out(format!("type=docker-archive,dest={}", tar.display())).ok();
    // Any other file is not overwritten; nor is a directory or a FIFO.
    let other = work.path().join("report.txt");
    write(&other, "precious\n");
    let r = out(format!("type=oci-archive,dest={}", other.display())).fails();
    assert!(
        r.stderr()
            .contains("is not an image archive: refusing to overwrite it"),
        "{}",
        r.stderr()
    );
    assert!(r.executed().is_empty());
    assert_eq!(fs::read_to_string(&other).unwrap(), "precious\n");
    let r = out(format!("type=docker-archive,dest={}", docs.display())).fails();
    assert!(r.stderr().contains("is a directory"), "{}", r.stderr());
    let fifo = work.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let r = out(format!("type=oci-archive,dest={}", fifo.display())).fails();
    assert!(r.stderr().contains("not a regular file"), "{}", r.stderr());
}

/// Issue 18: expansion bombs, a nesting that overflowed the stack, and resource limits on the
/// Dockerfile: each is an error naming the line, quickly.
#[test]
fn expansion_bombs_and_oversized_dockerfiles_fail_with_the_line() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let check = |dockerfile: String, expect: &str, line: &str| {
        let ctx = work.path().join("ctx");
        let _ = fs::remove_dir_all(&ctx);
        write(&ctx.join("Dockerfile"), &dockerfile);
        let t = std::time::Instant::now();
        let r = build(&store, &ctx, &[]).fails();
        let err = r.stderr();
        assert_eq!(r.out.status.code(), Some(2), "{err}");
        assert!(err.contains(expect), "expected {expect:?}:\n{err}");
        assert!(err.contains(line), "expected {line:?}:\n{err}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "{expect}: {:?}",
            t.elapsed()
        );
    };
    // 40 doubling ARGs: was 1 GB RSS at 22 levels.
    let mut df = String::from("ARG a0=xxxxxxxxxxxxxxxx\n");
    for i in 1..40 {
        df.push_str(&format!("ARG a{i}=${{a{}}}${{a{}}}\n", i - 1, i - 1));
    }
    df.push_str("FROM scratch\n");
    check(df, "larger than 1 MiB", "Dockerfile:18:");
    // Nested 20,000 deep: was SIGABRT (exit 134).
    let deep = format!(
        "FROM scratch\nENV A={}x{}\n",
        "${a:-".repeat(20_000),
        "}".repeat(20_000)
    );
    check(deep, "nested more than 64 levels deep", "Dockerfile:2:");
    // Too many stages / instructions.
    let stages: String = (0..10_001).map(|_| "FROM scratch\n").collect();
    check(stages, "more than 10000 stages", "Dockerfile:10001:");
    let mut many = String::from("FROM scratch\n");
    many.push_str(&"ENV A=1\n".repeat(50_000));
    check(many, "more than 50000 instructions", "Dockerfile:50001:");
}

/// 5,000 stages that each only rename the one before build in seconds (a guard, not a fix:
/// this was already fast). Issue 18's slow chain is one where every stage adds an ENV: each
/// stage's config then lists the whole chain's history and env, which stays quadratic
/// (docs/security.md, known gaps); the stage limit bounds it.
#[test]
fn five_thousand_plain_chained_stages_build_in_seconds() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    // Each stage only renames the one before: nothing grows along the chain, so nothing
    // should cost more than linear time.
    let mut df = String::from("FROM scratch AS s0\nCOPY a /a\n");
    for i in 1..5000 {
        df.push_str(&format!("FROM s{} AS s{i}\n", i - 1));
    }
    write(&ctx.join("Dockerfile"), &df);
    write(&ctx.join("a"), "a\n");
    let store = work.path().join("store");
    let t = std::time::Instant::now();
    build(&store, &ctx, &[]).ok().digest();
    let took = t.elapsed();
    eprintln!("5000 chained stages: {took:?}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}

#[test]
fn unused_stages_are_not_built_and_target_selects_a_stage() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("Dockerfile"), "FROM scratch AS unused\nCOPY a /unused\nFROM scratch AS one\nCOPY a /one\nFROM scratch\nCOPY --from=one /one /two\n");
    write(&ctx.path().join("a"), "a\n");
    let r = build(store.path(), ctx.path(), &[]).ok();
    assert!(
        !r.executed().iter().any(|s| s.contains("/unused")),
        "{:?}",
        r.executed()
    );
    let t = build(store.path(), ctx.path(), &["--target", "unused"]).ok();
    assert_eq!(t.executed(), vec!["COPY a /unused".to_string()]);
}
