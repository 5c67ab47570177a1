//! Integration tests of the RUN sandbox (root only; they fail, saying so, otherwise).
//!
//! This binary is also the sandbox helper: `run` re-executes `STRATA_SANDBOX_EXE`, which we
//! point at ourselves, and `main` dispatches `__sandbox-init` as the `strata` CLI does.
//! Run: `cargo test --release -p strata-engine --test sandbox`. Rootless (in a user namespace,
//! as strata runs for a non-root user): the binary as that user with `STRATA_TEST_ROOTLESS=1`
//! and a filter (`trace_`; .ci/run-rootless-tests does so).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_engine::sandbox::{injected_paths, run, Network, Output, RunOutcome, RunSpec};

const BUSYBOX: &str = "/bin/busybox";

#[path = "sandbox/trace.rs"]
mod trace;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__sandbox-init") {
        strata_engine::sandbox::init_main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("__trace-probe") {
        trace::probe_main();
    }
    // `STRATA_TEST_ROOTLESS=1`: run (the tests named by the filter) unprivileged, in a user
    // namespace, as strata does for a non-root user.
    let rootless = std::env::var_os("STRATA_TEST_ROOTLESS").is_some();
    // Fail, saying how to provide what is missing, rather than pass untested.
    if !(rootless || rustix::process::geteuid().is_root()) || !Path::new(BUSYBOX).exists() {
        eprintln!(
            "error: the sandbox tests need root and {BUSYBOX}: run them as root (.ci/test does) with busybox-static installed (.ci/install-deps)"
        );
        std::process::exit(1);
    }
    // `STRATA_SANDBOX_EXE=target/release/strata` runs the same tests through the real CLI.
    if std::env::var_os("STRATA_SANDBOX_EXE").is_none() {
        std::env::set_var("STRATA_SANDBOX_EXE", std::env::current_exe().unwrap());
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let tests: &[(&str, fn())] = &[
        (
            "runs_a_shell_in_a_hermetic_root",
            runs_a_shell_in_a_hermetic_root,
        ),
        (
            "environment_is_exactly_the_given_one",
            environment_is_exactly_the_given_one,
        ),
        (
            "orphaned_child_does_not_hold_the_step",
            orphaned_child_does_not_hold_the_step,
        ),
        ("exit_code_propagates", exit_code_propagates),
        ("signal_is_reported", signal_is_reported),
        (
            "user_is_resolved_in_the_rootfs",
            user_is_resolved_in_the_rootfs,
        ),
        (
            "whiteout_in_an_upper_lower_hides_the_file",
            whiteout_in_an_upper_lower_hides_the_file,
        ),
        (
            "cache_mount_is_shared_and_not_in_upper",
            cache_mount_is_shared_and_not_in_upper,
        ),
        (
            "scratch_with_missing_command_is_127",
            scratch_with_missing_command_is_127,
        ),
        (
            "host_network_sees_host_interfaces",
            host_network_sees_host_interfaces,
        ),
        ("root_confined", root_in_the_sandbox_is_confined),
        (
            "dangling_resolv_conf",
            dangling_resolv_conf_symlink_is_tolerated,
        ),
        (
            "trace_records_lookups_listings_and_execs",
            trace::trace_records_lookups_listings_and_execs,
        ),
        (
            "trace_records_the_path_search",
            trace::trace_records_the_path_search,
        ),
        (
            "trace_keeps_exit_code_and_output",
            trace::trace_keeps_exit_code_and_output,
        ),
        (
            "trace_follows_pipelines_and_background_processes",
            trace::trace_follows_pipelines_and_background_processes,
        ),
        (
            "trace_sees_threads_and_the_dynamic_loader",
            trace::trace_sees_threads_and_the_dynamic_loader,
        ),
        (
            "trace_records_script_interpreters",
            trace::trace_records_script_interpreters,
        ),
        (
            "trace_records_the_interpreter_at_the_kernels_depth",
            trace::trace_records_the_interpreter_at_the_kernels_depth,
        ),
        (
            "trace_follows_proc_magic_links_and_is_blind_after_chroot",
            trace::trace_follows_proc_magic_links_and_is_blind_after_chroot,
        ),
        (
            "trace_is_blind_for_an_emulated_binary",
            trace::trace_is_blind_for_an_emulated_binary,
        ),
        ("trace_overhead", trace::trace_overhead),
    ];
    let mut failed = 0;
    for (name, t) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let ok = std::panic::catch_unwind(t).is_ok();
        eprintln!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        eprintln!("{failed} sandbox test(s) failed");
        std::process::exit(1);
    }
}

struct Fx {
    tmp: tempfile::TempDir,
}

impl Fx {
    /// A busybox rootfs as the single lower, plus empty upper and work dirs.
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        std::fs::create_dir_all(lower.join("bin")).unwrap();
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(lower.join("tmp")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(lower.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        std::fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        let list = std::process::Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(
            lower.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            lower.join("etc/group"),
            "root:x:0:\nwheel:x:10:app\napp:x:1000:\n",
        )
        .unwrap();
        for d in ["upper", "work"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        Fx { tmp }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    fn spec(&self, script: &str) -> RunSpec {
        RunSpec {
            lowers: vec![self.p("lower")],
            upper: self.p("upper"),
            work: self.p("work"),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into(), "HOME=/root".into()],
            cwd: "/".into(),
            user: String::new(),
            network: Network::None,
            hostname: "strata".into(),
            cache_mounts: vec![],
            mounts: vec![],
            limits: Default::default(),
            output: Output::File(self.p("log")),
            trace: false,
        }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.p("log")).unwrap()
    }
}

/// The text between `--NAME--` and the next `--` marker line.
fn section<'a>(log: &'a str, name: &str) -> &'a str {
    let start = log
        .find(&format!("--{name}--\n"))
        .unwrap_or_else(|| panic!("no {name} in {log}"));
    let rest = &log[start + name.len() + 5..];
    &rest[..rest.find("\n--").map(|i| i + 1).unwrap_or(rest.len())]
}

fn runs_a_shell_in_a_hermetic_root() {
    let fx = Fx::new();
    let mut spec = fx.spec(
        "echo hi > /out; echo --id--; id; echo --hostname--; hostname; echo --hosts--; cat /etc/hosts; \
         echo --dev--; ls /dev; echo --home--; echo $HOME; echo --pwd--; pwd; \
         echo --net--; cat /proc/net/dev; echo --fds--; ls /proc/self/fd; echo --pid--; echo $$; echo --end--",
    );
    spec.cwd = "/work/dir".into();
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0), "{}", fx.log());
    let log = fx.log();
    assert_eq!(std::fs::read_to_string(fx.p("upper/out")).unwrap(), "hi\n");
    assert!(
        section(&log, "id").starts_with("uid=0(root) gid=0(root)"),
        "{log}"
    );
    assert_eq!(section(&log, "hostname"), "strata\n");
    assert!(
        section(&log, "hosts").contains("127.0.0.1\tlocalhost strata"),
        "{log}"
    );
    let dev: Vec<&str> = section(&log, "dev").split_whitespace().collect();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm",
    ] {
        assert!(dev.contains(&d), "/dev lacks {d}: {dev:?}");
    }
    assert_eq!(section(&log, "home"), "/root\n");
    assert_eq!(section(&log, "pwd"), "/work/dir\n");
    let ifaces: Vec<&str> = section(&log, "net")
        .lines()
        .filter_map(|l| l.split_once(':').map(|(i, _)| i.trim()))
        .filter(|i| !i.contains('|'))
        .collect();
    assert_eq!(ifaces, ["lo"], "{log}");
    // `ls` itself holds fd 3 (the directory it lists); nothing else may be open.
    let fds: Vec<&str> = section(&log, "fds").split_whitespace().collect();
    assert!(
        fds.iter().all(|f| ["0", "1", "2", "3"].contains(f)),
        "leaked fds: {fds:?}"
    );
    // The shell is pid 2: pid 1 is our init.
    assert_eq!(section(&log, "pid"), "2\n");
    // Only injected paths (and the working directory the sandbox created) reach the upper dir.
    let injected = injected_paths(&spec);
    let mut top: Vec<String> = std::fs::read_dir(fx.p("upper"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    for name in &top {
        assert!(
            name == "out" || name == "work" || name == "etc" || injected.contains(name),
            "unexpected {name} in upper"
        );
    }
    for name in std::fs::read_dir(fx.p("upper/etc")).unwrap() {
        let n = format!("etc/{}", name.unwrap().file_name().into_string().unwrap());
        assert!(injected.contains(&n), "unexpected {n} in upper");
    }
}

fn environment_is_exactly_the_given_one() {
    let fx = Fx::new();
    let mut spec = fx.spec("");
    spec.argv = vec!["env".into()];
    spec.env = vec!["PATH=/bin".into(), "FOO=bar baz".into(), "EMPTY=".into()];
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0));
    let mut got: Vec<String> = fx.log().lines().map(String::from).collect();
    got.sort();
    let mut want = spec.env.clone();
    want.sort();
    assert_eq!(got, want);
}

fn orphaned_child_does_not_hold_the_step() {
    let fx = Fx::new();
    let start = Instant::now();
    let spec = fx.spec("sleep 1000 & sleep 1000 & exit 0");
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0));
    assert!(start.elapsed() < Duration::from_secs(30));
}

fn exit_code_propagates() {
    let fx = Fx::new();
    assert_eq!(run(&fx.spec("exit 7")).unwrap(), RunOutcome::Exited(7));
}

fn signal_is_reported() {
    let fx = Fx::new();
    assert_eq!(
        run(&fx.spec("kill -9 $$")).unwrap(),
        RunOutcome::Signaled(9)
    );
}

fn user_is_resolved_in_the_rootfs() {
    let fx = Fx::new();
    let mut spec = fx.spec("id; touch /tmp/mine; stat -c %u:%g /tmp/mine");
    spec.user = "app".into();
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0), "{}", fx.log());
    let log = fx.log();
    assert!(
        log.starts_with("uid=1000(app) gid=1000(app) groups=10(wheel)"),
        "{log}"
    );
    assert!(log.contains("1000:1000"), "{log}");
    let mut spec = fx.spec("true");
    spec.user = "nobody".into();
    let err = run(&spec).unwrap_err().to_string();
    assert!(err.contains("unable to find user `nobody`"), "{err}");
}

fn whiteout_in_an_upper_lower_hides_the_file() {
    let fx = Fx::new();
    std::fs::write(fx.p("lower/gone"), "x").unwrap();
    let top = fx.p("top");
    std::fs::create_dir(&top).unwrap();
    let dir = rustix::fs::open(
        &top,
        rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        &dir,
        "gone",
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    let mut spec = fx.spec("test ! -e /gone && test -x /bin/sh");
    spec.lowers.push(top);
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0), "{}", fx.log());
}

fn cache_mount_is_shared_and_not_in_upper() {
    let fx = Fx::new();
    std::fs::create_dir(fx.p("cache")).unwrap();
    let mut spec = fx.spec("echo data > /var/cache/x/f");
    spec.cache_mounts = vec![(fx.p("cache"), "/var/cache/x".into())];
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0), "{}", fx.log());
    assert_eq!(std::fs::read_to_string(fx.p("cache/f")).unwrap(), "data\n");
    assert!(!fx.p("upper/var/cache/x/f").exists());
    assert!(injected_paths(&spec).contains(&"var/cache/x".to_string()));
}

fn scratch_with_missing_command_is_127() {
    let fx = Fx::new();
    let mut spec = fx.spec("");
    spec.lowers.clear();
    spec.argv = vec!["/bin/sh".into()];
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(127));
    spec.argv = vec!["nonesuch".into()];
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(127));
    assert!(fx.log().contains("not found in $PATH"), "{}", fx.log());
}

fn host_network_sees_host_interfaces() {
    let fx = Fx::new();
    let mut spec = fx.spec("cat /proc/net/dev | wc -l");
    spec.network = Network::Host;
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0), "{}", fx.log());
    let host = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count();
    assert_eq!(fx.log().trim(), host.to_string());
}

fn root_in_the_sandbox_is_confined() {
    let fx = Fx::new();
    let spec = fx.spec(
        "mkdir -p /mnt; mount -t tmpfs t /mnt 2>/dev/null && echo MOUNTED; \
         umount /proc/kcore 2>/dev/null && echo UNMASKED; \
         echo x 2>/dev/null > /proc/sys/kernel/domainname && echo WROTE; \
         test -s /proc/kcore && echo KCORE; \
         test -e /dev/tty && (exec 3</dev/tty) 2>/dev/null && echo TTY; \
         grep CapBnd /proc/self/status",
    );
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0), "{}", fx.log());
    let log = fx.log();
    for bad in ["MOUNTED", "UNMASKED", "WROTE", "KCORE", "TTY"] {
        assert!(!log.contains(bad), "{bad}: {log}");
    }
    // Docker's default capability set.
    assert!(log.contains("CapBnd:\t00000000a80425fb"), "{log}");
}

fn dangling_resolv_conf_symlink_is_tolerated() {
    let fx = Fx::new();
    std::os::unix::fs::symlink(
        "/run/systemd/resolve/stub-resolv.conf",
        fx.p("lower/etc/resolv.conf"),
    )
    .unwrap();
    let spec = fx.spec("grep -q strata /etc/hosts");
    assert_eq!(run(&spec).unwrap(), RunOutcome::Exited(0), "{}", fx.log());
    assert!(
        fx.log().contains("without an injected /etc/resolv.conf"),
        "{}",
        fx.log()
    );
    // The image's symlink is left alone.
    assert!(!fx.p("upper/etc/resolv.conf").exists());
}
