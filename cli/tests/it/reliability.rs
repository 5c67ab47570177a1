//! Reliability and safety tests of the `strata` binary: SIGKILL at random points, concurrent
//! builds on one store, a full disk, and a catalogue of bad (or hostile) inputs.
//!
//! Several tests need root (tmpfs mounts, device nodes, the RUN sandbox); without it they fail,
//! saying how to provide it. Figures (kill counts, durations) go to stderr: run with
//! `--nocapture` to see them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{is_root, require_run, sha256_hex, strata, text, tree, walk, write};

fn build_cmd(store: &Path, context: &Path, extra: &[&str]) -> Command {
    let mut c = strata();
    c.arg("build")
        .arg("--store")
        .arg(store)
        .args(["--progress", "plain"])
        .args(extra)
        .arg(context);
    c
}

fn build(store: &Path, context: &Path, extra: &[&str]) -> Output {
    build_cmd(store, context, extra)
        .output()
        .expect("run strata")
}

fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// The one stdout line of a successful build.
fn digest(o: &Output) -> String {
    assert!(
        o.status.success(),
        "strata failed ({:?}):\n{}",
        o.status,
        stderr(o)
    );
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        s.starts_with("sha256:") && s.len() == 71,
        "not a digest: {s:?}"
    );
    s
}

/// Runs `strata fsck`; returns (exit code, stderr).
fn fsck(store: &Path) -> (i32, String) {
    let o = strata()
        .arg("fsck")
        .arg("--store")
        .arg(store)
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), stderr(&o))
}

fn assert_fsck_clean(store: &Path, when: &str) {
    let (code, err) = fsck(store);
    assert_eq!(code, 0, "fsck {when}: {err}");
    assert!(err.contains(" 0 problems"), "fsck {when}: {err}");
}

/// Files left in `<store>/tmp` (recursively).
fn temp_leftovers(store: &Path) -> usize {
    fn count(p: &Path) -> usize {
        let Ok(rd) = fs::read_dir(p) else { return 0 };
        rd.flatten()
            .map(|e| {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    1 + count(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }
    count(&store.join("tmp"))
}

/// A deterministic PRNG (xorshift64*), so a failing kill schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// A context of `dirs × per_dir` small files plus a few incompressible MB, built by a
/// two-stage Dockerfile with several COPY steps and a `COPY --from`.
fn moderate_context(dir: &Path, seed: u64, dirs: usize, per_dir: usize) {
    let mut rng = Rng(seed);
    for d in 0..dirs {
        for f in 0..per_dir {
            let n = 100 + rng.below(2000) as usize;
            // Half text (compressible), half random.
            let data = if f % 2 == 0 {
                format!("file {d}/{f}\n").repeat(n / 12 + 1).into_bytes()
            } else {
                rng.bytes(n)
            };
            write(&dir.join(format!("src/d{d:02}/f{f:03}.dat")), data);
        }
    }
    // Random letters: deflate works on them (random bytes would be stored, and fast), so a
    // build lasts long enough for the concurrency test to see builds overlap.
    for a in 0..4 {
        let text: Vec<u8> = rng
            .bytes(2_500_000)
            .iter()
            .map(|b| b"etaoin shrdlu cmfwyp\n"[*b as usize % 21])
            .collect();
        write(&dir.join(format!("assets/a{a}.txt")), text);
    }
    write(&dir.join("conf.txt"), "original\n");
    write(
        &dir.join("Dockerfile"),
        "FROM scratch AS build\n\
         COPY src /src\n\
         COPY assets /assets\n\
         COPY conf.txt /etc/conf.txt\n\
         FROM scratch\n\
         COPY --from=build /src /app/src\n\
         COPY --from=build /assets/a0.txt /app/a0.txt\n\
         COPY conf.txt /conf.txt\n",
    );
}

#[test]
fn sigkill_at_random_points_leaves_a_usable_store() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    moderate_context(&ctx, 0x5EED_0001, 40, 75);

    // Reference: a clean build in a fresh store.
    let fresh = work.path().join("fresh");
    let t0 = Instant::now();
    let reference = digest(&build(&fresh, &ctx, &[]));
    let clean_time = t0.elapsed();
    eprintln!("clean build: {clean_time:?}");

    let store = work.path().join("store");
    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    // Bounded in count and time; under load (CI machines are shared) a round takes longer, so
    // the time bound is generous and the loop stops as soon as enough kills have landed.
    let budget = Duration::from_secs(150);
    let started = Instant::now();
    let (mut kills, mut finished_first) = (0, 0);
    // Delays up to 1.2× a clean build, at least 1 s, so kills land in every phase (store
    // open, hashing, compression, blob rename, index writes, export).
    let mut max_delay_ms = (clean_time.as_millis() as u64 * 12 / 10).max(1000);
    for i in 0..50u64 {
        if started.elapsed() > budget || kills >= 25 {
            break;
        }
        // Change an input each round so the steps miss the cache and do real work; every
        // third round ignores the cache altogether.
        write(&ctx.join("conf.txt"), format!("round {i}\n"));
        write(
            &ctx.join(format!("src/d{:02}/f000.dat", i % 40)),
            format!("changed in round {i}\n"),
        );
        let mut extra = vec![];
        if i % 3 == 0 {
            extra.push("--no-cache");
        }
        let mut child: Child = build_cmd(&store, &ctx, &extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.below(max_delay_ms));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            finished_first += 1;
            // The clean build's time (taken on a loaded machine, say) overstates a build's:
            // this one took less than `delay`, so later delays stay within it.
            max_delay_ms = max_delay_ms.min((delay.as_millis() as u64).max(200));
        } else {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let status = child.wait().unwrap();
        assert!(
            status.success() || status.code().is_none(),
            "round {i}: a build that was not killed failed: {status:?}"
        );
        if i % 10 == 9 {
            assert_fsck_clean(&store, &format!("after round {i}"));
        }
    }
    // Left by the last build only: each open sweeps what the previous (killed) one left.
    let leftovers = temp_leftovers(&store);
    eprintln!(
        "{kills} kills, {finished_first} builds finished before their kill, {:?} in total; \
         {leftovers} temp files/dirs left in tmp/",
        started.elapsed()
    );
    assert!(kills >= 15, "too few kills landed: {kills}");
    let (code, report) = fsck(&store);
    eprintln!("fsck after the kills: {report}");
    assert_eq!(code, 0, "{report}");

    // Back to the original inputs: the killed store builds the reference digest.
    fs::remove_dir_all(&ctx).unwrap();
    moderate_context(&ctx, 0x5EED_0001, 40, 75);
    let after = build(&store, &ctx, &[]);
    assert_eq!(digest(&after), reference, "{}", stderr(&after));
    let again = build(&store, &ctx, &["--no-cache"]);
    assert_eq!(digest(&again), reference);
    assert_fsck_clean(&store, "after the final builds");
    // Opening the store swept what the killed builds left in tmp/ (it used to keep every
    // killed build's `copy-*` scratch tree, thousands of files each, until `fsck --repair`
    // an hour later).
    let left: Vec<_> = walk(&store.join("tmp"));
    assert_eq!(
        temp_leftovers(&store),
        0,
        "tmp/ is swept when the store is opened; left: {left:?}"
    );
}

/// Every path under `dir`, for a failure message.
/// A build whose stderr is read as it comes: records when the first step finished (a `DONE` or
/// `CACHED` line: the build got past the store open and did index work) and when it exited.
struct Timed {
    out: Output,
    first_step: Duration,
    exited: Duration,
}

fn spawn_timed(mut c: Command, t0: Instant) -> std::thread::JoinHandle<Timed> {
    use std::io::{BufRead, Read};
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::spawn(move || {
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut stderr_bytes = Vec::new();
        let mut first_step = None;
        let mut line = Vec::new();
        while err.read_until(b'\n', &mut line).unwrap() > 0 {
            let l = String::from_utf8_lossy(&line);
            if first_step.is_none() && (l.contains(" DONE ") || l.contains(" CACHED ")) {
                first_step = Some(t0.elapsed());
            }
            stderr_bytes.append(&mut line);
        }
        let mut stdout = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        let status = child.wait().unwrap();
        let exited = t0.elapsed();
        Timed {
            out: Output {
                status,
                stdout,
                stderr: stderr_bytes,
            },
            first_step: first_step.unwrap_or(exited),
            exited,
        }
    })
}

/// Four `strata build` processes on one store (two identical, two different), with `strata gc`
/// running in a loop beside them: all succeed, at the same time (not one after another: the
/// store lock is held only around index operations), identical inputs give identical digests,
/// each digest equals a build in a fresh store, and fsck is clean.
#[test]
fn concurrent_builds_on_one_store() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let mut ctxs = vec![];
    for (i, seed) in [1u64, 1, 2, 3].iter().enumerate() {
        let ctx = work.path().join(format!("ctx{i}"));
        moderate_context(&ctx, *seed, 10, 50);
        ctxs.push(ctx);
    }
    // Something in the store for gc to look at, built before.
    let old = work.path().join("old");
    moderate_context(&old, 9, 3, 20);
    digest(&build(&store, &old, &[]));

    let t0 = Instant::now();
    let builds: Vec<_> = ctxs
        .iter()
        .map(|ctx| spawn_timed(build_cmd(&store, ctx, &[]), t0))
        .collect();
    // gc beside the builds, until they are done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (stop, store) = (stop.clone(), store.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let o = strata()
                    .args(["gc", "--keep-storage", "0", "--store"])
                    .arg(&store)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "gc failed: {}", stderr(&o));
                runs += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            runs
        })
    };
    let mut timed = vec![];
    for b in builds {
        timed.push(b.join().unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let gc_runs = gc.join().unwrap();
    let mut digests = vec![];
    for (i, t) in timed.iter().enumerate() {
        let d = digest(&t.out);
        eprintln!(
            "build {i}: {d}: first step done at {:?}, exited at {:?}",
            t.first_step, t.exited
        );
        digests.push(d);
    }
    // Concurrent, not serialised: each build was busy (between its first step and its exit)
    // while another one was. One after another, these intervals would not overlap at all.
    for (i, a) in timed.iter().enumerate() {
        let overlaps = timed
            .iter()
            .enumerate()
            .filter(|(j, b)| *j != i && a.first_step < b.exited && b.first_step < a.exited)
            .count();
        assert!(
            overlaps >= 1,
            "build {i} ran alone ({:?}..{:?}): the builds were serialised",
            a.first_step,
            a.exited
        );
    }
    let last_first_step = timed.iter().map(|t| t.first_step).max().unwrap();
    let first_exit = timed.iter().map(|t| t.exited).min().unwrap();
    eprintln!(
        "4 concurrent builds: last first-step at {last_first_step:?}, first exit at \
         {first_exit:?}; {gc_runs} gc runs beside them"
    );
    assert!(gc_runs >= 1);
    assert_eq!(
        digests[0], digests[1],
        "identical inputs, identical digests"
    );
    assert_ne!(digests[0], digests[2]);
    assert_ne!(digests[2], digests[3]);
    assert_fsck_clean(&store, "after concurrent builds");
    assert_eq!(
        temp_leftovers(&store),
        0,
        "every build removed its scratch directory"
    );
    // Each digest matches a build in a fresh store of its own, and the shared store still
    // builds them (from cache).
    for (i, ctx) in ctxs.iter().enumerate().skip(1) {
        let fresh = work.path().join(format!("fresh{i}"));
        assert_eq!(digest(&build(&fresh, ctx, &[])), digests[i]);
        assert_eq!(digest(&build(&store, ctx, &[])), digests[i]);
    }
}

/// A tmpfs mounted for the test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_cleanly_and_recovers() {
    assert!(
        is_root(),
        "this test mounts a small tmpfs as the store: run it as root (.ci/test does)"
    );
    let work = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&work.path().join("mnt"), "8m")
        .expect("mounting an 8 MiB tmpfs failed: run as root on a host that allows tmpfs mounts");
    let store = mnt.0.join("store");
    let ctx = work.path().join("ctx");
    let mut rng = Rng(7);
    // 3 × 4 MB of incompressible data: no compressor saves it.
    for i in 0..3 {
        write(&ctx.join(format!("data/part{i}")), rng.bytes(4_000_000));
    }
    write(&ctx.join("small.txt"), "small\n");
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch\nCOPY small.txt /small.txt\nCOPY data /data\n",
    );
    let o = build(&store, &ctx, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error:") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "no digest on failure");
    assert_eq!(
        temp_leftovers(&store),
        0,
        "the failed write left its temp file"
    );
    assert_fsck_clean(&store, "after ENOSPC");

    // Make room: the same store now builds, with the digest of a build elsewhere.
    mnt.resize("64m");
    let d = digest(&build(&store, &ctx, &[]));
    let fresh = work.path().join("fresh");
    assert_eq!(d, digest(&build(&fresh, &ctx, &[])));
    assert_fsck_clean(&store, "after the retry");
}

/// Issue 18: a RUN that filled the disk failed with `head: standard output: I/O error` and
/// nothing said the store's file system was full. Now the error says so, with the store's
/// path and what is free; and the store recovers once there is room.
#[test]
fn a_run_that_fills_the_store_says_the_file_system_is_full() {
    require_run("this test");
    let work = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&work.path().join("mnt"), "24m")
        .expect("mounting a 24 MiB tmpfs failed: run as root on a host that allows tmpfs mounts");
    let store = mnt.0.join("store");
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox head -c 100000000 /dev/zero > /big\"]\n",
    );
    let o = build(&store, &ctx, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the store's file system is full")
            && err.contains(&format!("`{}` has ", store.display()))
            && err.contains(" free of "),
        "{err}"
    );
    assert!(err.contains("hint: free space there"), "{err}");
    assert_eq!(temp_leftovers(&store), 0, "the upper dir was removed");
    // With room, the same store builds it.
    mnt.resize("256m");
    digest(&build(&store, &ctx, &[]));
    assert_fsck_clean(&store, "after the full RUN");
}

/// Lists every path under `dir` (relative), for "nothing was written here" checks.
#[test]
fn bad_inputs_fail_clearly_and_write_nothing_outside_the_store() {
    type Setup = fn(&Path);
    let none: Setup = |_| {};
    let cases: Vec<(&str, &str, Setup, &str)> = vec![
        (
            "unterminated heredoc",
            "FROM scratch\nCOPY <<EOF /x\nhello\n",
            none,
            "unterminated heredoc `EOF`",
        ),
        (
            "SHELL with bad JSON",
            "FROM scratch\nSHELL [\"/bin/sh\", \"-c\"\n",
            none,
            "SHELL requires the arguments to be in JSON form",
        ),
        (
            "SHELL with a non-string",
            "FROM scratch\nSHELL [\"/bin/sh\", 3]\n",
            none,
            "SHELL in JSON array form must be an array of strings only",
        ),
        (
            "unknown flag",
            "FROM scratch\nCOPY --bogus=1 a.txt /a\n",
            none,
            "unknown flag `--bogus` for COPY",
        ),
        (
            "FROM missing",
            "COPY a.txt /a\n",
            none,
            "only ARG instructions may come before the first FROM",
        ),
        (
            "empty Dockerfile",
            "",
            none,
            "error:",
        ),
        (
            "COPY from outside the context",
            "FROM scratch\nCOPY ../outside.txt /x\n",
            none,
            "points outside the build context",
        ),
        (
            "COPY of an absolute-looking path",
            "FROM scratch\nCOPY /etc/passwd /x\n",
            none,
            "error:",
        ),
        (
            "symlink escaping the context",
            "FROM scratch\nCOPY pw /pw\n",
            |c| std::os::unix::fs::symlink("/etc/passwd", c.join("pw")).unwrap(),
            "points outside the build context",
        ),
        (
            "relative symlink escaping the context",
            "FROM scratch\nCOPY up/outside.txt /x\n",
            |c| std::os::unix::fs::symlink("..", c.join("up")).unwrap(),
            "outside the build context",
        ),
        (
            "non-UTF-8 file name in a copied directory",
            "FROM scratch\nCOPY d /d\n",
            |c| {
                use std::os::unix::ffi::OsStrExt;
                fs::create_dir(c.join("d")).unwrap();
                let name = std::ffi::OsStr::from_bytes(b"bad-\xff\xfe");
                fs::write(c.join("d").join(name), "x").unwrap();
            },
            "file name is not valid UTF-8",
        ),
        (
            "cyclic stages (a RUN mount may name a later stage)",
            "FROM scratch AS a\nRUN --mount=from=b,target=/m true\nFROM scratch AS b\nCOPY --from=a a.txt /a\n",
            none,
            "stages form a cycle",
        ),
        (
            "COPY --from a later stage",
            "FROM scratch AS a\nCOPY --from=b a.txt /a\nFROM scratch AS b\nCOPY --from=a a.txt /a\n",
            none,
            "which is defined later",
        ),
        (
            "FROM a later stage",
            "FROM b AS a\nFROM scratch AS b\n",
            none,
            "which is defined later",
        ),
        (
            "COPY --from an unknown stage",
            "FROM scratch\nCOPY --from=nope a.txt /a\n",
            none,
            "error:",
        ),
    ];
    let mut failures = vec![];
    for (name, dockerfile, setup, expected) in cases {
        let work = tempfile::tempdir().unwrap();
        let ctx = work.path().join("ctx");
        write(&ctx.join("Dockerfile"), dockerfile);
        write(&ctx.join("a.txt"), "a\n");
        write(&work.path().join("outside.txt"), "outside\n");
        setup(&ctx);
        let cwd = work.path().join("cwd");
        fs::create_dir(&cwd).unwrap();
        let before = tree(work.path());
        let store = work.path().join("store");
        let out = work.path().join("out");
        let o = build_cmd(
            &store,
            &ctx,
            &["--output", &format!("type=oci,dest={}", out.display())],
        )
        .current_dir(&cwd)
        .output()
        .unwrap();
        let err = stderr(&o);
        let mut after = tree(work.path());
        after.retain(|p| !p.starts_with("store"));
        let ok = o.status.code() == Some(2)
            && err.contains("error:")
            && err.contains(expected)
            && o.stdout.is_empty()
            && after == before
            && !out.exists();
        eprintln!("{name}: exit {:?}, {}", o.status.code(), err.trim());
        if !ok {
            failures.push(format!(
                "{name}: exit {:?}, expected `{expected}`; new files: {:?}\n{err}",
                o.status.code(),
                after
                    .iter()
                    .filter(|p| !before.contains(p))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn device_node_in_the_context_is_refused() {
    assert!(
        is_root(),
        "mknod needs root: run this test as root (.ci/test does)"
    );
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    write(&ctx.join("a.txt"), "a\n");
    let st = Command::new("mknod")
        .arg(ctx.join("dev"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    let store = work.path().join("store");
    for df in ["FROM scratch\nCOPY dev /dev\n", "FROM scratch\nCOPY . /\n"] {
        write(&ctx.join("Dockerfile"), df);
        let o = build(&store, &ctx, &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("error:") && err.contains("cannot copy character device"),
            "{err}"
        );
    }
    // Excluded by .dockerignore, it is no obstacle.
    write(&ctx.join(".dockerignore"), "dev\n");
    digest(&build(&store, &ctx, &[]));
}

#[test]
fn a_file_larger_than_8_gib_is_copied_with_a_pax_size() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let size: u64 = 9 << 30;
    let f = fs::File::create(ctx.join("huge")).unwrap();
    f.set_len(size).unwrap(); // sparse
    drop(f);
    write(&ctx.join("Dockerfile"), "FROM scratch\nCOPY huge /huge\n");
    let store = work.path().join("store");
    let out = work.path().join("out");
    let started = Instant::now();
    let o = build(
        &store,
        &ctx,
        &[
            // zstd, not `none`: 9 GiB of zeros compress to a few hundred kB, so the test
            // needs no free disk beyond the sparse source (an uncompressed layer in the store
            // and again in the OCI output took 18 GiB and filled CI's disk).
            "--compression",
            "zstd",
            "--output",
            &format!("type=oci,dest={}", out.display()),
        ],
    );
    let took = started.elapsed();
    digest(&o);
    eprintln!("9 GiB COPY (zstd layer): {took:?}");
    // The layer is the biggest blob; list it with zstd | tar, streaming.
    let blobs = out.join("blobs/sha256");
    let layer = fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let l = Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; zstd -dc \"$1\" | tar -tvf -")
        .arg("bash")
        .arg(&layer)
        .output()
        .unwrap();
    assert!(l.status.success(), "{}", stderr(&l));
    let listing = String::from_utf8_lossy(&l.stdout);
    assert!(
        listing
            .lines()
            .any(|line| line.contains(&size.to_string()) && line.ends_with("huge")),
        "{listing}"
    );
    assert!(took < Duration::from_secs(600), "{took:?}");
}

// ---------------------------------------------------------------------------------------------
// A hostile base image: a hand-made OCI layout whose layer tries to write outside the rootfs.

/// One raw USTAR header (the `tar` crate refuses to write `..`, which is the point here).
fn tar_header(name: &str, typeflag: u8, size: u64, link: &str, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let oct = |h: &mut [u8; 512], off: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[off..off + len].copy_from_slice(s.as_bytes());
    };
    oct(&mut h, 100, 8, mode as u64);
    oct(&mut h, 108, 8, 0);
    oct(&mut h, 116, 8, 0);
    oct(&mut h, 124, 12, size);
    oct(&mut h, 136, 12, 0);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

struct Tar(Vec<u8>);

impl Tar {
    fn entry(mut self, name: &str, typeflag: u8, data: &[u8], link: &str) -> Self {
        let mode = if typeflag == b'5' { 0o755 } else { 0o644 };
        self.0
            .extend_from_slice(&tar_header(name, typeflag, data.len() as u64, link, mode));
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, pad));
        self
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend([0u8; 1024]);
        self.0
    }
}

/// Writes `bytes` as a blob of the layout; returns (`sha256:…`, size).
fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let hex = sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    (format!("sha256:{hex}"), bytes.len())
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("untested arch {other}"),
    }
}

/// An OCI layout at `layout` tagged `1` whose single (uncompressed) layer is `tar`.
fn hostile_layout(layout: &Path, tar: &[u8]) {
    let (layer, layer_size) = put_blob(layout, tar);
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let (cfg, cfg_size) = put_blob(layout, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    });
    let (m, m_size) = put_blob(layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m, "size": m_size,
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

#[test]
fn hostile_base_layer_cannot_write_outside_the_rootfs() {
    require_run("this test");
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_s = outside.to_str().unwrap().to_string();
    let ctx = work.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    let store = work.path().join("store");
    let run = "COPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox echo run > /esc/from-run; /bin/busybox echo ok\"]\n";

    // 1. `..` in an entry name: refused while unpacking, before anything runs.
    let dotdot = Tar(vec![])
        .entry("etc/", b'5', b"", "")
        .entry("../../../../../../../../../..", b'5', b"", "")
        .entry(
            &format!("../../../../../../../../../..{outside_s}/escape"),
            b'0',
            b"pwned\n",
            "",
        )
        .finish();
    hostile_layout(&ctx.join("l1"), &dotdot);
    write(
        &ctx.join("Dockerfile"),
        format!("FROM oci-layout://l1:1\n{run}"),
    );
    let o = build(&store, &ctx, &[]);
    let err = stderr(&o);
    eprintln!("`..` layer: {}", err.trim());
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error:") && err.contains("unsafe path"),
        "{err}"
    );

    // 2. A symlink to a host directory, then a file written through it (and a RUN writing
    //    through it too): resolved inside the rootfs, so the build succeeds and nothing
    //    appears on the host.
    // The layer creates the host path's directories inside the rootfs too, so an in-root
    // resolution finds them (and a host resolution would find the real ones).
    let mut symlink = Tar(vec![]);
    let mut prefix = String::new();
    for c in outside_s.trim_start_matches('/').split('/') {
        prefix = format!("{prefix}{c}/");
        symlink = symlink.entry(&prefix, b'5', b"", "");
    }
    let symlink = symlink
        .entry("esc", b'2', b"", &outside_s)
        .entry("esc/pwned", b'0', b"pwned\n", "")
        .entry("up", b'2', b"", "../../../../../../../../../..")
        .entry(&format!("up{outside_s}/pwned-up"), b'0', b"pwned\n", "")
        .finish();
    hostile_layout(&ctx.join("l2"), &symlink);
    write(
        &ctx.join("Dockerfile"),
        format!("FROM oci-layout://l2:1\n{run}"),
    );
    let o = build(&store, &ctx, &[]);
    let err = stderr(&o);
    eprintln!("symlink layer: {}", err.trim());
    // Whether this is refused or contained, nothing may reach the host.
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "a hostile layer wrote outside the rootfs: {:?}",
        tree(&outside)
    );
    assert!(!Path::new("/escape").exists() && !Path::new("/pwned").exists());
    digest(&o);
    assert_fsck_clean(&store, "after hostile bases");
}

#[test]
fn sigkill_during_run_steps_leaves_no_mounts_or_leftovers() {
    require_run("this test");
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nARG ROUND=0\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /out && /bin/busybox seq 1 300000 > /out/seq && /bin/busybox cp -r /bin /out/bin && /bin/busybox echo $ROUND > /out/round\"]\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox sort -r /out/seq > /out/rev\"]\n",
    );
    let fresh = work.path().join("fresh");
    let t0 = Instant::now();
    let reference = digest(&build(&fresh, &ctx, &[]));
    let clean_time = t0.elapsed();
    let store = work.path().join("store");
    let mut rng = Rng(0xF00D);
    let max_delay_ms = (clean_time.as_millis() as u64).max(200);
    let started = Instant::now();
    let mut kills = 0;
    for i in 1..=20u64 {
        let round = format!("ROUND={i}");
        let mut child = build_cmd(&store, &ctx, &["--build-arg", &round])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(max_delay_ms)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    // The sandbox dies with strata (PR_SET_PDEATHSIG); its mounts were in its own namespace.
    std::thread::sleep(Duration::from_millis(200));
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let store_s = store.to_str().unwrap();
    assert!(
        !mounts.contains(store_s),
        "mounts left under the store: {mounts}"
    );
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines()
            .any(|l| l.contains("__sandbox-init") && l.contains(store_s)),
        "a sandbox outlived its strata: {ps}"
    );
    eprintln!(
        "RUN kills: {kills} of 20 in {:?} (clean build {clean_time:?})",
        started.elapsed()
    );
    assert_fsck_clean(&store, "after RUN kills");
    assert_eq!(digest(&build(&store, &ctx, &[])), reference);
    assert_eq!(temp_leftovers(&store), 0);
    assert_fsck_clean(&store, "after the final RUN build");
}
