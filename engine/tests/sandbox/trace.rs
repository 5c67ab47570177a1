//! Traced RUNs (`RunSpec::trace`, `sandbox::trace`): what the command observed of its rootfs.

use std::path::Path;
use std::time::Instant;

use strata_engine::sandbox::trace::Observed;
use strata_engine::sandbox::{run_observed, RunOutcome, RunSpec};

use super::Fx;

/// `spec` run with tracing on: outcome, log, trace.
fn traced(fx: &Fx, spec: &RunSpec) -> (RunOutcome, String, Observed) {
    let mut spec = spec.clone();
    spec.trace = true;
    let (o, _, obs) = run_observed(&spec).unwrap();
    let obs = obs.expect("a traced run reports a trace");
    if std::env::var_os("STRATA_TEST_SHOW_TRACE").is_some() {
        eprintln!("{:?}: {obs:#?}", spec.argv);
    }
    (o, fx.log(), obs)
}

fn has(set: &std::collections::BTreeSet<String>, p: &str) -> bool {
    set.contains(p)
}

pub fn trace_records_lookups_listings_and_execs() {
    let fx = Fx::new();
    std::fs::create_dir_all(fx.p("lower/usr/share")).unwrap();
    std::fs::write(fx.p("lower/etc/motd"), "hello\n").unwrap();
    let spec = fx.spec(
        "cat /etc/motd; ls /usr; test -e /nonexistent || echo absent; cd /etc && cat ../etc/group",
    );
    let (o, log, obs) = traced(&fx, &spec);
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    assert!(
        log.contains("hello\n") && log.contains("share\n") && log.contains("absent\n"),
        "{log}"
    );
    assert!(log.contains("wheel:x:10:app"), "{log}");
    assert_eq!(obs.blind, None, "{obs:#?}");
    let l = &obs.lookups;
    for p in [
        "/etc/motd",
        "/nonexistent",
        "/etc/../etc/group",
        "/etc",
        "/bin/sh",
    ] {
        assert!(has(l, p), "{p} not in {l:#?}");
    }
    assert!(has(&obs.listings, "/usr"), "{:#?}", obs.listings);
    assert!(obs.syscalls > 5, "{}", obs.syscalls);
    // What pid 1 looked up for the command: its user database and working directory.
    assert!(has(l, "/etc/passwd") && has(l, "/"), "{l:#?}");
    assert!(l.iter().all(|p| p.starts_with('/')), "{l:#?}");
    // busybox is static: no PT_INTERP (`/proc/self/exe`, which busybox may exec, is the
    // shell's, not pid 1's).
    assert!(!l.iter().any(|p| p.contains("ld-linux")), "{l:#?}");
}

/// pid 1's PATH search for `argv[0]` is the command's lookup too (a new `/usr/bin/cat` in a
/// parent would change what runs), also when nothing is found (exit 127).
pub fn trace_records_the_path_search() {
    let fx = Fx::new();
    let mut spec = fx.spec("");
    spec.argv = vec!["cat".into(), "/etc/group".into()];
    spec.env = vec!["PATH=/usr/bin:/bin".into()];
    let (o, log, obs) = traced(&fx, &spec);
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    for p in ["/usr/bin/cat", "/bin/cat", "/etc/group"] {
        assert!(has(&obs.lookups, p), "{p} not in {:#?}", obs.lookups);
    }
    spec.argv = vec!["nosuch".into()];
    let (o, _, obs) = traced(&fx, &spec);
    assert_eq!(o, RunOutcome::Exited(127));
    assert!(has(&obs.lookups, "/usr/bin/nosuch") && has(&obs.lookups, "/bin/nosuch"));
}

pub fn trace_keeps_exit_code_and_output() {
    let fx = Fx::new();
    let spec = fx.spec("echo out; ls /bin | wc -l; echo err >&2; exit 3");
    let plain = run_observed(&spec).unwrap();
    assert_eq!(plain.0, RunOutcome::Exited(3));
    assert!(plain.2.is_none(), "trace: false gives no trace");
    let plain_log = fx.log();
    let (o, log, obs) = traced(&fx, &spec);
    assert_eq!(o, RunOutcome::Exited(3));
    assert_eq!(log, plain_log);
    assert_eq!(obs.blind, None, "{obs:#?}");
    assert!(has(&obs.listings, "/bin"), "{obs:#?}");
    // Under another user (the tracer reads the memory of a process that changed its ids);
    // not in a single-id user namespace, which has no other user.
    let mut spec = fx.spec("cat /etc/group >/dev/null && test -e /tmp/x; echo $?");
    spec.user = "app".into();
    spec.trace = true;
    match run_observed(&spec) {
        Err(e) if e.to_string().contains("single-id") => {}
        r => {
            let (o, _, obs) = r.unwrap();
            let obs = obs.unwrap();
            assert_eq!((o, fx.log().as_str()), (RunOutcome::Exited(0), "1\n"));
            assert_eq!(obs.blind, None, "{obs:#?}");
            assert!(has(&obs.lookups, "/tmp/x"), "{obs:#?}");
        }
    }
    // Off, nothing is installed: Docker's profile is two filters, the trace a third.
    let spec = fx.spec("grep Seccomp_filters /proc/self/status");
    run_observed(&spec).unwrap();
    assert_eq!(fx.log(), "Seccomp_filters:\t2\n");
    traced(&fx, &spec);
    assert_eq!(fx.log(), "Seccomp_filters:\t3\n");
    // A signal, too.
    let (o, _, _) = traced(&fx, &fx.spec("kill -9 $$"));
    assert_eq!(o, RunOutcome::Signaled(9));
}

pub fn trace_follows_pipelines_and_background_processes() {
    let fx = Fx::new();
    std::fs::write(fx.p("lower/etc/a"), "1\n2\n3\n").unwrap();
    let spec = fx.spec(
        "cat /etc/a | grep 2 | wc -l; (sleep 0.2; stat /etc/late >/dev/null 2>&1) & \
         sh -c 'ls /etc/b 2>/dev/null' | cat; wait",
    );
    let (o, log, obs) = traced(&fx, &spec);
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    assert_eq!(log.trim(), "1");
    assert_eq!(obs.blind, None, "{obs:#?}");
    for p in ["/etc/a", "/etc/b", "/etc/late"] {
        assert!(has(&obs.lookups, p), "{p} not in {:#?}", obs.lookups);
    }
    // A process left running is ended with the step; the trace still completes.
    let start = Instant::now();
    let (o, _, obs) = traced(
        &fx,
        &fx.spec("sleep 1000 & stat /etc/passwd >/dev/null; exit 0"),
    );
    assert_eq!(o, RunOutcome::Exited(0));
    assert!(start.elapsed().as_secs() < 30);
    assert!(has(&obs.lookups, "/etc/passwd"));
}

/// The test binary itself (dynamically linked, multi-threaded) with its libraries, run as
/// `/probe/probe __trace-probe`: four threads stat `/probe-N`.
/// The test binary (dynamically linked) at /probe/probe of the lower dir, with its libraries;
/// its `PT_INTERP`.
fn with_probe(fx: &Fx) -> String {
    let exe = std::env::current_exe().unwrap();
    std::fs::create_dir_all(fx.p("lower/probe")).unwrap();
    std::fs::copy(&exe, fx.p("lower/probe/probe")).unwrap();
    let ldd = std::process::Command::new("ldd")
        .arg(&exe)
        .output()
        .unwrap();
    let mut interp = None;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
            None => line.trim().split(' ').next().unwrap_or(""),
        };
        if !path.starts_with('/') {
            continue;
        }
        if line.contains("ld-linux") {
            interp = Some(path.to_string());
        }
        let dest = fx.p("lower").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(path, &dest).unwrap();
    }
    interp.expect("a dynamically linked test binary")
}

pub fn trace_sees_threads_and_the_dynamic_loader() {
    let fx = Fx::new();
    let interp = with_probe(&fx);
    let mut spec = fx.spec("");
    spec.argv = vec!["/probe/probe".into(), "__trace-probe".into()];
    let (o, log, obs) = traced(&fx, &spec);
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    assert!(log.contains("probed 4"), "{log}");
    assert_eq!(obs.blind, None, "{obs:#?}");
    let l = &obs.lookups;
    assert!(has(l, "/probe/probe"), "{l:#?}");
    assert!(has(l, &interp), "PT_INTERP {interp} not in {l:#?}");
    for i in 0..4 {
        assert!(has(l, &format!("/probe-{i}")), "/probe-{i} not in {l:#?}");
    }
    // The loader's own searches (libc), opened with syscalls.
    assert!(l.iter().any(|p| p.contains("libc.so")), "{l:#?}");
}

/// `__trace-probe` mode of the test binary (inside the sandbox).
pub fn probe_main() -> ! {
    let threads: Vec<_> = (0..4)
        .map(|i| std::thread::spawn(move || Path::new(&format!("/probe-{i}")).exists()))
        .collect();
    let mut n = 0;
    for t in threads {
        t.join().unwrap();
        n += 1;
    }
    println!("probed {n}");
    std::process::exit(0)
}

/// A script's `#!` interpreter is recorded (the kernel opens it without a syscall).
pub fn trace_records_script_interpreters() {
    let fx = Fx::new();
    std::fs::write(fx.p("lower/bin/script"), "#!/bin/sh -e\necho from-script\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        fx.p("lower/bin/script"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (o, log, obs) = traced(&fx, &fx.spec("/bin/script"));
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    assert!(log.contains("from-script"));
    assert_eq!(obs.blind, None, "{obs:#?}");
    assert!(has(&obs.lookups, "/bin/script"));
    // An executable that is neither ELF nor a script: binfmt_misc could run it unseen.
    std::fs::write(fx.p("lower/bin/odd"), "echo odd\n").unwrap();
    std::fs::set_permissions(
        fx.p("lower/bin/odd"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (_, _, obs) = traced(&fx, &fx.spec("/bin/odd"));
    assert!(obs.blind.is_some(), "{obs:#?}");
}

/// The kernel follows `#!` lines five deep (`exec_binprm`, depths 0 to 5): an ELF at depth 5
/// still runs, and its `PT_INTERP` is recorded.
pub fn trace_records_the_interpreter_at_the_kernels_depth() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fx::new();
    let interp = with_probe(&fx);
    // /s0 -> /s1 -> ... -> /s4 -> /probe/probe (an ELF, depth 5).
    for i in 0..5 {
        let next = if i == 4 {
            "/probe/probe __trace-probe".to_string()
        } else {
            format!("/s{}", i + 1)
        };
        let p = fx.p(&format!("lower/s{i}"));
        std::fs::write(&p, format!("#!{next}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut spec = fx.spec("");
    spec.argv = vec!["/s0".into()];
    let (o, log, obs) = traced(&fx, &spec);
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    assert!(log.contains("probed 4"), "{log}");
    assert_eq!(obs.blind, None, "{obs:#?}");
    let l = &obs.lookups;
    for i in 1..5 {
        assert!(has(l, &format!("/s{i}")), "/s{i} not in {l:#?}");
    }
    assert!(has(l, "/probe/probe"), "{l:#?}");
    assert!(
        has(l, &interp),
        "PT_INTERP {interp} at depth 5 not in {l:#?}"
    );
}

/// Magic links of /proc are followed to the file system they reach; chroot makes a run blind.
pub fn trace_follows_proc_magic_links_and_is_blind_after_chroot() {
    let fx = Fx::new();
    std::fs::write(fx.p("lower/etc/m"), "m\n").unwrap();
    let (o, log, obs) = traced(
        &fx,
        &fx.spec("cd /etc && cat /proc/self/cwd/m /proc/self/root/etc/m && exec 3</etc && cat /dev/fd/3/m"),
    );
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    assert_eq!(obs.blind, None, "{obs:#?}");
    // `cat` is a separate process (or the shell itself): either way its cwd is /etc.
    assert!(has(&obs.lookups, "/etc/m"), "{:#?}", obs.lookups);
    // A named unix socket is a path (busybox logger connects to /dev/log, which is missing).
    let (_, _, obs) = traced(&fx, &fx.spec("logger hi 2>/dev/null; true"));
    assert_eq!(obs.blind, None, "{obs:#?}");
    assert!(has(&obs.lookups, "/dev/log"), "{:#?}", obs.lookups);
    let (_, _, obs) = traced(&fx, &fx.spec("chroot / /bin/true"));
    assert!(
        obs.blind.as_deref().unwrap_or("").contains("chroot"),
        "{obs:#?}"
    );
}

/// A foreign binary (arm64 busybox, from .ci/install-deps) runs under QEMU through the host's
/// binfmt_misc handler (F flag: opened at registration, so found inside the sandbox), with the
/// seccomp profile on; the tracer cannot follow what the emulator loads for it, so the run is
/// blind and never reused by read set (issue 21).
pub fn trace_is_blind_for_an_emulated_binary() {
    let busybox = "/var/tmp/strata-fixtures/arm64-busybox/bin/busybox";
    assert!(
        Path::new(busybox).is_file(),
        "{busybox} is missing: run .ci/install-deps"
    );
    let fx = Fx::new();
    std::fs::create_dir_all(fx.p("lower/arm64")).unwrap();
    std::fs::copy(busybox, fx.p("lower/arm64/busybox")).unwrap();
    let mut spec = fx.spec("");
    spec.argv = vec!["/arm64/busybox".into(), "uname".into(), "-m".into()];
    let (o, log, obs) = traced(&fx, &spec);
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    assert!(log.contains("aarch64"), "{log}");
    assert!(
        obs.blind
            .as_deref()
            .is_some_and(|b| b.contains("another machine")),
        "{obs:#?}"
    );
    // Under a native shell too: the foreign exec deeper in the tree makes the run blind.
    let (o, log, obs) = traced(&fx, &fx.spec("/arm64/busybox true && echo ran"));
    assert_eq!(o, RunOutcome::Exited(0), "{log}");
    assert!(log.contains("ran"), "{log}");
    assert!(obs.blind.is_some(), "{obs:#?}");
}

/// Overhead: `find / -xdev` over 20 000 files, untraced and traced, in the same run.
pub fn trace_overhead() {
    let fx = Fx::new();
    for d in 0..200 {
        let dir = fx.p(&format!("lower/data/d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f}")), "").unwrap();
        }
    }
    // The sandbox's own cost (namespaces, mounts), traced and not, to set apart.
    let t = Instant::now();
    run_observed(&fx.spec("true")).unwrap();
    let setup = t.elapsed();
    let t = Instant::now();
    traced(&fx, &fx.spec("true"));
    let traced_setup = t.elapsed();
    let spec = fx.spec("find / -xdev | wc -l");
    let t = Instant::now();
    assert_eq!(run_observed(&spec).unwrap().0, RunOutcome::Exited(0));
    let plain = t.elapsed();
    let plain_log = fx.log();
    let t = Instant::now();
    let (o, log, obs) = traced(&fx, &spec);
    let traced_time = t.elapsed();
    assert_eq!(o, RunOutcome::Exited(0));
    assert_eq!(log, plain_log);
    assert_eq!(obs.blind, None);
    assert!(obs.listings.len() > 200);
    // Output to stderr (the build log, through a pipe the parent drains) with a report far
    // larger than a pipe holds: the parent reads both at once, nothing blocks.
    let mut logged = fx.spec("find / -xdev >/dev/null; echo logged");
    logged.output = strata_engine::sandbox::Output::Stderr;
    logged.trace = true;
    let (o, tail, big) = run_observed(&logged).unwrap();
    assert_eq!(o, RunOutcome::Exited(0));
    assert_eq!(tail.text(), "logged");
    let big = big.unwrap();
    assert!(big.lookups.len() > 20_000, "{}", big.lookups.len());
    assert_eq!(big.blind, None);
    let work = plain.saturating_sub(setup).as_secs_f64();
    let traced_work = traced_time.saturating_sub(traced_setup).as_secs_f64();
    eprintln!(
        "trace overhead: find over {} entries: untraced {plain:?}, traced {traced_time:?} \
         ({} notifications): ratio {:.2}; without the sandbox's setup ({setup:?}, traced \
         {traced_setup:?}): ratio {:.2}, {:.1} µs per notification",
        log.trim(),
        obs.syscalls,
        traced_time.as_secs_f64() / plain.as_secs_f64(),
        traced_work / work,
        (traced_work - work) * 1e6 / obs.syscalls as f64,
    );
}
