//! `ADD <url>` and `ADD <git url>` end to end, served from loopback only: a small static HTTP
//! server written here serves files and a bare git repository over git's dumb HTTP protocol
//! (`git update-server-info`). Checked: the layer (unpacked by umoci), the pins in
//! `strata.lock`, cached rebuilds without the server, `--locked`, errors with line and hint,
//! and reproducibility across stores.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::{build, sha256, strata, write, Run};

/// A static file server on 127.0.0.1: `GET /path` answers the file under `root` (query
/// ignored), 404 otherwise. Stopped (and its thread joined) on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(root: &Path) -> Server {
        Self::start_on(root, 0)
    }

    fn start_on(root: &Path, port: u16) -> Server {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (root, st, rq) = (root.to_path_buf(), stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                rq.fetch_add(1, Ordering::SeqCst);
                let _ = serve_one(&root, conn);
            }
        });
        Server {
            port,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(root: &Path, conn: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let rel = path.trim_start_matches('/');
    let file = root.join(rel);
    let mut w = conn;
    let body = if rel.split('/').any(|c| c == "..") || !file.is_file() {
        None
    } else {
        fs::read(&file).ok()
    };
    match body {
        Some(b) => {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                b.len()
            )?;
            if method != "HEAD" {
                w.write_all(&b)?;
            }
        }
        None => {
            write!(
                w,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
    }
    w.flush()
}

/// `sha256:HEX` of `b`, by coreutils' `sha256sum`.
/// `git` without the machine's configuration, with a fixed identity and dates.
fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
        .output()
        .expect("git is installed by .ci/install-deps");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A bare repository `srv/repo.git` (served as `repo.git`): commit A (tag `v1`, annotated),
/// then commit B on `main`. Returns (A, B) and the work tree to add commits from.
fn make_repo(srv: &Path) -> (String, String, PathBuf) {
    let bare = srv.join("repo.git");
    fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let work = srv.parent().unwrap().join("work");
    fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    write(&work.join("README"), "version one\n");
    write(&work.join("docs/guide.txt"), "guide\n");
    write(&work.join("bin/run.sh"), "#!/bin/sh\necho run\n");
    fs::set_permissions(work.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("README", work.join("link")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let a = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["tag", "-a", "-m", "v1", "v1"]);
    write(&work.join("README"), "version two\n");
    git(&work, &["commit", "-q", "-am", "two"]);
    let b = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main", "v1"]);
    git(&bare, &["update-server-info"]);
    (a, b, work)
}

/// Unpacks the OCI layout `oci` (tag `1`) and returns the bundle's rootfs.
fn unpack(oci: &Path, dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    crate::support::unpack(oci, "1", &bundle);
    bundle.join("rootfs")
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn oci_args(oci: &Path) -> Vec<String> {
    vec![
        "-t".into(),
        "t:1".into(),
        "--output".into(),
        format!("type=oci,dest={}", oci.display()),
    ]
}

fn build_with(store: &Path, ctx: &Path, extra: &[String]) -> Run {
    let v: Vec<&str> = extra.iter().map(String::as_str).collect();
    build(store, ctx, &v)
}

fn lock(store: &Path, ctx: &Path, extra: &[&str]) -> Run {
    let out = strata()
        .arg("--store")
        .arg(store)
        .arg("lock")
        // The context first: `--update` takes the words after it.
        .arg(ctx)
        .args(extra)
        .output()
        .unwrap();
    Run { out }
}

#[test]
fn add_url_pins_the_digest_caches_offline_and_refuses_changed_content() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    // A real gzip'd tar: ADD of a URL must not extract it.
    let tarball = {
        let src = dir.path().join("t");
        write(&src.join("inside.txt"), "inside\n");
        let out = srv.join("files/tool.tar.gz");
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let st = Command::new("tar")
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg("inside.txt")
            .status()
            .unwrap();
        assert!(st.success());
        fs::read(&out).unwrap()
    };
    write(&srv.join("files/conf.txt"), "setting=1\n");
    let server = Server::start(&srv);
    let port = server.port;
    let ctx = dir.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD --checksum={} {} /opt/\nADD {} /etc/conf\nADD --chmod=644 --chown=1:2 {} /x/\n",
            sha256(&tarball),
            server.url("files/tool.tar.gz"),
            server.url("files/conf.txt"),
            server.url("files/conf.txt"),
        ),
    );
    let store1 = dir.path().join("store1");
    let oci = dir.path().join("oci1");
    let first = build_with(&store1, &ctx, &oci_args(&oci)).ok();
    let digest = first.digest();
    let root = unpack(&oci, &dir.path().join("u1"));
    assert_eq!(fs::read(root.join("opt/tool.tar.gz")).unwrap(), tarball);
    assert!(
        !root.join("opt/inside.txt").exists(),
        "a URL is never extracted"
    );
    assert_eq!(
        mode(&root.join("opt/tool.tar.gz")),
        0o600,
        "Docker's mode for URLs"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/conf")).unwrap(),
        "setting=1\n"
    );
    assert_eq!(mode(&root.join("etc/conf")), 0o600);
    let m = fs::metadata(root.join("x/conf.txt")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 1, 2));

    // The lock pins the URL without --checksum (and only it).
    let lock_text = fs::read_to_string(ctx.join("strata.lock")).unwrap();
    assert!(lock_text.contains("[urls]"), "{lock_text}");
    assert!(
        lock_text.contains(&format!(
            "\"{}\" = \"{}\"",
            server.url("files/conf.txt"),
            sha256(b"setting=1\n")
        )),
        "{lock_text}"
    );
    assert!(!lock_text.contains("tool.tar.gz"), "{lock_text}");

    // Another store: the same image.
    let store2 = dir.path().join("store2");
    assert_eq!(build(&store2, &ctx, &[]).ok().digest(), digest);

    // Server stopped: the cached rebuild needs no network at all.
    drop(server);
    let again = build(&store1, &ctx, &[]).ok();
    assert!(again.executed().is_empty(), "{:?}", again.executed());
    assert_eq!(again.digest(), digest);

    // The content behind the pinned URL changes: a build that must fetch refuses it.
    let server = Server::start_on(&srv, port);
    write(&srv.join("files/conf.txt"), "setting=2\n");
    let store3 = dir.path().join("store3");
    let e = build(&store3, &ctx, &[]).fails().stderr();
    assert!(e.contains("Dockerfile:3"), "{e}");
    assert!(e.contains("the content changed"), "{e}");
    assert!(
        e.contains(&sha256(b"setting=1\n")) && e.contains(&sha256(b"setting=2\n")),
        "{e}"
    );
    assert!(e.contains("strata lock --update"), "{e}");
    // Nothing half-made stays: the store checks clean.
    let fsck = strata()
        .arg("--store")
        .arg(&store3)
        .arg("fsck")
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );

    // `strata lock --update` re-pins it; the build then succeeds with the new content.
    let l = lock(&store3, &ctx, &["--update"]).ok();
    assert!(
        l.stdout().contains(&sha256(b"setting=2\n")),
        "{}",
        l.stdout()
    );
    let changed = build(&store3, &ctx, &[]).ok().digest();
    assert_ne!(changed, digest);

    // --locked refuses a URL without a pin, before anything runs.
    write(
        &ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD {} /etc/conf\nADD {} /new\n",
            server.url("files/conf.txt"),
            server.url("files/tool.tar.gz")
        ),
    );
    let before = server.requests();
    let e = build(&store3, &ctx, &["--locked"]).fails().stderr();
    assert!(e.contains("Dockerfile:3"), "{e}");
    assert!(e.contains("is not pinned") && e.contains("--locked"), "{e}");
    assert!(e.contains("hint: run `strata lock`"), "{e}");
    assert_eq!(
        server.requests(),
        before,
        "--locked refused before fetching"
    );
}

#[test]
fn add_url_errors_name_the_line_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    write(&srv.join("f.txt"), "data\n");
    let server = Server::start(&srv);
    let wrong = sha256(b"something else");
    for (line, hint, want) in [
        (
            format!("ADD --checksum={wrong} {} /f", server.url("f.txt")),
            "update --checksum",
            vec![
                "checksum mismatch".to_string(),
                wrong.clone(),
                sha256(b"data\n"),
            ],
        ),
        (
            format!("ADD {} /f", server.url("missing.txt")),
            "not (or no longer) there",
            vec!["answered HTTP 404".to_string()],
        ),
        (
            // Nothing listens on port 1.
            "ADD http://127.0.0.1:1/x /f".to_string(),
            "reachable",
            vec!["ADD `http://127.0.0.1:1/x`".to_string()],
        ),
        (
            "ADD http://example.invalid/x /f".to_string(),
            "--insecure-registry",
            vec!["plain HTTP".to_string()],
        ),
        (
            "ADD https:///x /f".to_string(),
            "full URL",
            vec!["invalid URL".to_string()],
        ),
        (
            format!("ADD --checksum=md5:abc {} /f", server.url("f.txt")),
            "sha256:<64",
            vec!["invalid --checksum".to_string()],
        ),
        (
            format!("ADD {} local.txt /d/", server.url("f.txt")),
            "two ADD",
            vec!["cannot mix".to_string()],
        ),
    ] {
        let ctx = tempfile::tempdir().unwrap();
        write(&ctx.path().join("local.txt"), "x");
        write(
            &ctx.path().join("Dockerfile"),
            format!("FROM scratch\nENV A=1\n{line}\n"),
        );
        let store = tempfile::tempdir().unwrap();
        let e = build(store.path(), ctx.path(), &[]).fails().stderr();
        assert!(e.contains("Dockerfile:3"), "{line}: {e}");
        assert!(e.contains("hint:") && e.contains(hint), "{line}: {e}");
        for w in want {
            assert!(e.contains(&w), "{line}: want {w}: {e}");
        }
        assert!(
            !ctx.path().join("strata.lock").exists(),
            "{line}: a failed build writes no lock"
        );
    }
}

#[test]
fn add_git_ref_subdir_keep_git_dir_pinned_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    let (a, b, work) = make_repo(&srv);
    let server = Server::start(&srv);
    let repo = server.url("repo.git");
    let ctx = dir.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD {repo}#v1 /src/\nADD --chown=7:8 {repo}#main:docs /docs\n\
             ADD --keep-git-dir {repo}#refs/heads/main /withgit\n"
        ),
    );
    let store1 = dir.path().join("store1");
    let oci = dir.path().join("oci1");
    let first = build_with(&store1, &ctx, &oci_args(&oci)).ok();
    let digest = first.digest();
    let root = unpack(&oci, &dir.path().join("u1"));
    // The tag: commit A, git's modes, symlinks kept, no .git.
    assert_eq!(
        fs::read_to_string(root.join("src/README")).unwrap(),
        "version one\n"
    );
    assert_eq!(mode(&root.join("src/bin/run.sh")), 0o755);
    assert_eq!(mode(&root.join("src/README")), 0o644);
    assert_eq!(
        fs::read_link(root.join("src/link")).unwrap(),
        PathBuf::from("README")
    );
    assert!(!root.join("src/.git").exists());
    assert_eq!(fs::metadata(root.join("src/README")).unwrap().uid(), 0);
    // The subdir of the branch: only its contents, owned as --chown says.
    assert_eq!(
        fs::read_to_string(root.join("docs/guide.txt")).unwrap(),
        "guide\n"
    );
    assert!(!root.join("docs/README").exists());
    let m = fs::metadata(root.join("docs/guide.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (7, 8));
    // --keep-git-dir: a .git git itself reads, on the branch, at B, with a clean status.
    let wg = root.join("withgit");
    assert_eq!(
        fs::read_to_string(wg.join(".git/HEAD")).unwrap(),
        "ref: refs/heads/main\n"
    );
    assert_eq!(git(&wg, &["rev-parse", "HEAD"]), b);
    assert_eq!(git(&wg, &["log", "-1", "--format=%s"]), "two");
    assert_eq!(git(&wg, &["status", "--porcelain"]), "");
    assert!(wg.join(".git/shallow").exists());

    // The lock pins every ref to its commit.
    let lock_text = fs::read_to_string(ctx.join("strata.lock")).unwrap();
    for (k, c) in [("#v1", &a), ("#main", &b), ("#refs/heads/main", &b)] {
        assert!(
            lock_text.contains(&format!("\"{repo}{k}\" = \"{c}\"")),
            "{k}: {lock_text}"
        );
    }

    // Another store: the same image, `.git` included.
    let store2 = dir.path().join("store2");
    assert_eq!(build(&store2, &ctx, &[]).ok().digest(), digest);

    // The branch moves: the pin holds (same image) until `strata lock --update`.
    write(&work.join("README"), "version three\n");
    git(&work, &["commit", "-q", "-am", "three"]);
    let c = git(&work, &["rev-parse", "HEAD"]);
    git(
        &work,
        &["push", "-q", srv.join("repo.git").to_str().unwrap(), "main"],
    );
    git(&srv.join("repo.git"), &["update-server-info"]);
    let store3 = dir.path().join("store3");
    assert_eq!(build(&store3, &ctx, &[]).ok().digest(), digest);
    let l = lock(&store3, &ctx, &["--update"]).ok();
    assert!(
        l.stdout().contains(&format!("{b} -> {c}")),
        "{}",
        l.stdout()
    );
    assert_ne!(build(&store3, &ctx, &[]).ok().digest(), digest);

    // Cached rebuild with the server gone: no network needed.
    drop(server);
    let again = build(&store3, &ctx, &[]).ok();
    assert!(again.executed().is_empty(), "{:?}", again.executed());
}

#[test]
fn add_git_unknown_ref_checksum_and_locked_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    let (a, b, _) = make_repo(&srv);
    let server = Server::start(&srv);
    let repo = server.url("repo.git");
    let ctx = dir.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        format!("FROM scratch\nADD {repo}#nope /src/\n"),
    );
    let store = dir.path().join("store");
    let e = build(&store, &ctx, &[]).fails().stderr();
    assert!(e.contains("Dockerfile:2"), "{e}");
    assert!(e.contains("unknown ref `nope`"), "{e}");
    assert!(
        e.contains("hint:") && e.contains("`main`") && e.contains("`v1`"),
        "{e}"
    );

    write(
        &ctx.join("Dockerfile"),
        format!("FROM scratch\nADD {repo}#v1:missing /src/\n"),
    );
    let e = build(&store, &ctx, &[]).fails().stderr();
    assert!(e.contains("Dockerfile:2") && e.contains("`missing`"), "{e}");
    assert!(e.contains("hint:"), "{e}");

    // --checksum of a git source: the commit the ref must resolve to (a prefix will do).
    write(
        &ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD --checksum={} {repo}#v1 /src/\n",
            &a[..12]
        ),
    );
    build(&store, &ctx, &[]).ok();
    write(
        &ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={b} {repo}#v1 /src/\n"),
    );
    let e = build(&store, &ctx, &[]).fails().stderr();
    assert!(
        e.contains("Dockerfile:2") && e.contains("checksum mismatch"),
        "{e}"
    );
    assert!(
        e.contains(&a) && e.contains(&b) && e.contains("hint:"),
        "{e}"
    );
    fs::remove_file(ctx.join("strata.lock")).unwrap();

    // A lock without the ref's pin: --locked refuses; `strata lock` pins it.
    write(
        &ctx.join("Dockerfile"),
        format!("FROM scratch\nADD {repo}#v1 /src/\n"),
    );
    write(&ctx.join("strata.lock"), "version = 1\n\n[images]\n");
    let e = build(&store, &ctx, &["--locked"]).fails().stderr();
    assert!(
        e.contains("is not pinned") && e.contains(&format!("{repo}#v1")),
        "{e}"
    );
    lock(&store, &ctx, &[]).ok();
    assert!(fs::read_to_string(ctx.join("strata.lock"))
        .unwrap()
        .contains("[git]"));
    build(&store, &ctx, &["--locked"]).ok();
}

/// `strata verify` (several builds from nothing under different umasks, clocks, locales and
/// thread counts) finds ADD of a URL and of a git repository — `.git` included — reproducible.
#[test]
fn verify_passes_on_add_of_a_url_and_a_git_repository() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    make_repo(&srv);
    write(&srv.join("files/conf.txt"), "setting=1\n");
    let server = Server::start(&srv);
    let repo = server.url("repo.git");
    let ctx = dir.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD {} /etc/\nADD --keep-git-dir {repo}#refs/heads/main /g\n\
             ADD --chmod=640 {repo}#v1:docs /d/\n",
            server.url("files/conf.txt")
        ),
    );
    let out = strata().arg("verify").arg(&ctx).output().unwrap();
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
}

/// `git daemon` on loopback for one test (the `git://` protocol, shallow fetches by commit),
/// killed on drop.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        // A free port: bind, read it, release it (git daemon binds it right after).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // `git-daemon` itself, not `git daemon`: the wrapper would leave its child running
        // when killed.
        let exec_path = git(base, &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon (package git)");
        let d = GitDaemon { child, port };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("git daemon did not listen on {port}");
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same commit over `git://` (smart protocol, a shallow fetch) and over dumb HTTP is the
/// same step: the key and the tree depend on the commit, not on the transport or URL. (The
/// images differ only in their history, which records the instruction as written.)
#[test]
fn add_git_over_git_daemon_is_the_same_step_as_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    let (a, _, _) = make_repo(&srv);
    let daemon = GitDaemon::start(&srv);
    let server = Server::start(&srv);
    let store = dir.path().join("store");
    for (i, repo) in [
        format!("git://127.0.0.1:{}/repo.git", daemon.port),
        server.url("repo.git"),
    ]
    .iter()
    .enumerate()
    {
        let ctx = dir.path().join(format!("ctx{i}"));
        write(
            &ctx.join("Dockerfile"),
            format!("FROM scratch\nADD {repo}#v1 /src/\n"),
        );
        let r = build(&store, &ctx, &[]).ok();
        let added = r.executed().iter().any(|s| s.starts_with("ADD"));
        assert_eq!(added, i == 0, "{repo}: {:?}", r.executed());
        let lock_text = fs::read_to_string(ctx.join("strata.lock")).unwrap();
        assert!(
            lock_text.contains(&format!("\"{repo}#v1\" = \"{a}\"")),
            "{lock_text}"
        );
    }
    drop(daemon);
}

/// `--provenance`: an ADD URL is a resolved dependency with the sha256 `strata.lock` pins, an
/// ADD of a git ref one with the commit it pins; a cached rebuild without the server writes the
/// same provenance (the pins come from the lock, not from a fetch).
#[test]
fn add_url_and_git_pins_are_resolved_dependencies_of_the_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    let (a, _, _) = make_repo(&srv);
    write(&srv.join("tool.txt"), "a downloaded tool\n");
    let server = Server::start(&srv);
    let (url, repo) = (server.url("tool.txt"), server.url("repo.git"));
    let ctx = dir.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        format!("FROM scratch\nADD {url} /tool.txt\nADD {repo}#v1 /src/\n"),
    );
    let deps = |name: &str| -> Vec<serde_json::Value> {
        let oci = dir.path().join(name);
        let mut args = oci_args(&oci);
        args.push("--provenance".into());
        build_with(&dir.path().join("store"), &ctx, &args).ok();
        let read = |p: &Path| -> serde_json::Value {
            serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
        };
        let blob = |d: &serde_json::Value| {
            oci.join("blobs/sha256")
                .join(d.as_str().unwrap().trim_start_matches("sha256:"))
        };
        let top = read(&oci.join("index.json"));
        let index = read(&blob(&top["manifests"][0]["digest"]));
        let att = read(&blob(&index["manifests"][1]["digest"]));
        let st = read(&blob(&att["layers"][0]["digest"]));
        st["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .clone()
    };
    let first = deps("oci1");
    let find = |v: &[serde_json::Value], uri: &str| {
        v.iter()
            .find(|d| d["uri"] == uri)
            .unwrap_or_else(|| panic!("no {uri} in {v:?}"))
            .clone()
    };
    assert_eq!(
        find(&first, &url)["digest"]["sha256"],
        sha256(b"a downloaded tool\n").trim_start_matches("sha256:")
    );
    assert_eq!(
        find(&first, &format!("{repo}#v1"))["digest"]["gitCommit"],
        a.as_str()
    );
    drop(server);
    assert_eq!(deps("oci2"), first, "cached, offline: the same provenance");
}
