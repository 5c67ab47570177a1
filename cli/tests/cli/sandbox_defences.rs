//! The RUN sandbox's defences seen from inside a RUN step: Docker's default seccomp profile and
//! `no_new_privs`, no host paths in `/proc/self/mountinfo`, the process limit (docs/security.md). Each check is a shell test inside the step, so the build
//! succeeds only if every defence holds.

use super::build;
use super::run_steps::busybox_context;

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

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
