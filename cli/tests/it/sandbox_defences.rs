//! The RUN sandbox's defences seen from inside a RUN step: Docker's default seccomp profile and
//! `no_new_privs`, no host paths in `/proc/self/mountinfo`, the process limit (docs/security.md). Each check is a shell test inside the step, so the build
//! succeeds only if every defence holds.

use crate::support::{build, busybox_context};

#[test]
fn run_has_the_seccomp_profile_and_no_new_privs_cannot_unshare_or_mount_and_sees_no_host_paths() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        &format!("FROM base\n\
         RUN set -e; \\\n\
           if grep -F -e '{store}' -e strata-sandbox- /proc/self/mountinfo >&2; then echo 'host paths in mountinfo' >&2; exit 1; fi; \\\n\
           if grep -E ' - (ext[234]|xfs|btrfs) ' /proc/self/mountinfo >&2; then echo 'a host block device in mountinfo' >&2; exit 1; fi; \\\n\
           grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status || {{ echo 'no seccomp filter' >&2; exit 1; }}; \\\n\
           grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/self/status || {{ echo 'no no_new_privs' >&2; exit 1; }}; \\\n\
           if unshare -U true 2>/dev/null; then echo 'nested user namespace allowed' >&2; exit 1; fi; \\\n\
           if unshare -m true 2>/dev/null; then echo 'mount namespace allowed' >&2; exit 1; fi; \\\n\
           mkdir -p /mnt/t; if mount -t tmpfs t /mnt/t 2>/dev/null; then echo 'mount allowed' >&2; exit 1; fi; \\\n\
           echo ordinary work still runs > /ok; sh -c 'cat /ok' | grep -q ordinary\n",
            store = store.path().display()
        ),
    );
    let r = build(store.path(), ctx.path(), &[]);
    assert!(
        r.out.status.success(),
        "a defence is missing inside RUN:\n{}",
        r.stderr()
    );
}

/// A RUN that starts processes without bound is stopped at the per-step limit, with a message
/// that says so, and its cgroup is removed (and those of helpers killed earlier are swept). Bounded on purpose (10,000 `sleep`s, not an exponential
/// bomb), so a host without the limit only sees the test fail. Root only: rootless builds have
/// no writable cgroup (docs/security.md), so .ci/run-rootless-tests does not run it.
#[test]
fn run_with_too_many_processes_is_stopped_at_the_limit() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc_geteuid() },
        0,
        "this test needs root (a writable pids cgroup): run it from .ci/test"
    );
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nRUN i=0; while [ $i -lt 10000 ]; do sleep 120 & i=$((i+1)); done; echo launched-$i >&2\n",
    );
    let r = build(store.path(), ctx.path(), &[]).fails();
    let err = r.stderr();
    assert!(
        err.contains("reached the limit of 8192 processes") && err.contains("hint: "),
        "{err}"
    );
    assert!(!err.contains("launched-10000"), "{err}");
    // Step cgroups of helpers that are gone (this one, or any SIGKILLed earlier and swept by
    // the RUNs of this build) are removed; live ones belong to RUNs of tests running beside.
    let leftover: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/pids")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix("strata-run-")?.to_string();
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(name)
        })
        .collect();
    assert!(
        leftover.is_empty(),
        "step cgroups left behind: {leftover:?}"
    );
}

/// `--memory`: a RUN that holds more than the limit is ended by the OOM killer, and the error
/// names the limit, not only the signal. The same build without the flag succeeds, so it is the
/// limit that ended it. As root a memory cgroup is writable; as an unprivileged user without a
/// delegated cgroup the flag is refused before anything runs (`.ci/run-rootless-tests`).
#[test]
fn run_over_the_memory_limit_fails_naming_it() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    // The shell keeps the whole command substitution (96 MiB) in memory.
    busybox_context(
        ctx.path(),
        "FROM base\nRUN x=\"$(head -c 100663296 /dev/zero | tr '\\0' a)\"; echo held ${#x} >&2\n",
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        let r = build(store.path(), ctx.path(), &["--memory", "32m"]).fails();
        let err = r.stderr();
        assert!(
            err.contains("--memory needs the `memory` cgroup controller") && err.contains("hint: "),
            "{err}"
        );
        return;
    }
    let r = build(store.path(), ctx.path(), &["--memory", "32m"]).fails();
    let err = r.stderr();
    assert!(
        err.contains("ran out of memory") && err.contains("32.0 MiB") && err.contains("hint: "),
        "{err}"
    );
    assert!(!err.contains("held 100663296"), "{err}");
    let r = build(store.path(), ctx.path(), &["--memory", "512m"]);
    assert!(r.out.status.success(), "{}", r.stderr());
    assert!(r.stderr().contains("held 100663296"), "{}", r.stderr());
}

/// `--cpus`: the step's cgroup gets the CFS quota while it runs (read from outside, as the
/// kernel holds it), and bad values are refused before building.
#[test]
fn run_with_cpus_gets_its_quota_and_bad_values_are_refused() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path(), "FROM base\nRUN echo hi\n");
    for (bad, says) in [("0", "from 0.01"), ("many", "not a number")] {
        let r = build(store.path(), ctx.path(), &["--cpus", bad]).fails();
        assert!(r.stderr().contains(says), "{}", r.stderr());
    }
    let r = build(store.path(), ctx.path(), &["--memory", "1m"]).fails();
    assert!(r.stderr().contains("minimum"), "{}", r.stderr());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        return;
    }
    // While the RUN sleeps, its cgroup (`strata-run-<helper pid>` under this process's own cpu
    // cgroup, where strata starts too) holds the quota; only this test sets one.
    busybox_context(ctx.path(), "FROM base\nRUN sleep 3\n");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = own
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == "cpu")
                .then(|| path.to_string())
        })
        .expect("a v1 cpu hierarchy (this machine's layout; v2 hosts: cpu.max)");
    let base = std::path::Path::new("/sys/fs/cgroup/cpu").join(path.trim_start_matches('/'));
    let mut child = crate::support::strata()
        .arg("--store")
        .arg(store.path())
        .args(["build", "--cpus", "0.5"])
        .arg(ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = None;
    while child.try_wait().unwrap().is_none() && seen.is_none() {
        seen = std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("strata-run-"))
            .find_map(|e| {
                let q = std::fs::read_to_string(e.path().join("cpu.cfs_quota_us")).ok()?;
                let p = std::fs::read_to_string(e.path().join("cpu.cfs_period_us")).ok()?;
                (q.trim() == "50000").then(|| p.trim().to_string())
            });
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        seen.as_deref(),
        Some("100000"),
        "no step cgroup with the quota of 0.5 CPUs"
    );
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
