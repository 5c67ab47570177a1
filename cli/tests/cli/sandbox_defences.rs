//! The RUN sandbox's defences seen from inside a RUN step: Docker's default seccomp profile and
//! `no_new_privs` (docs/security.md). Each check is a shell test inside the step, so the build
//! succeeds only if every defence holds.

use super::build;
use super::run_steps::busybox_context;

#[test]
fn run_has_the_seccomp_profile_and_no_new_privs_and_cannot_unshare_or_mount() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\n\
         RUN set -e; \\\n\
           grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status || { echo 'no seccomp filter' >&2; exit 1; }; \\\n\
           grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/self/status || { echo 'no no_new_privs' >&2; exit 1; }; \\\n\
           if unshare -U true 2>/dev/null; then echo 'nested user namespace allowed' >&2; exit 1; fi; \\\n\
           if unshare -m true 2>/dev/null; then echo 'mount namespace allowed' >&2; exit 1; fi; \\\n\
           mkdir -p /mnt/t; if mount -t tmpfs t /mnt/t 2>/dev/null; then echo 'mount allowed' >&2; exit 1; fi; \\\n\
           echo ordinary work still runs > /ok; sh -c 'cat /ok' | grep -q ordinary\n",
    );
    let r = build(store.path(), ctx.path(), &[]);
    assert!(
        r.out.status.success(),
        "a defence is missing inside RUN:\n{}",
        r.stderr()
    );
}
