//! The seccomp profile of RUN commands, modelled on Docker's default profile (moby
//! `profiles/seccomp/default.json`), which BuildKit and podman apply to RUN as well.
//!
//! Docker's profile is an allow-list; its effect for a container without `CAP_SYS_ADMIN` (our
//! RUN keeps Docker's default capabilities, so this is the case that matters) is that the
//! syscalls below fail with `EPERM`. We write that effect down as a deny-list: it is shorter,
//! it cannot break a syscall a newer libc starts to use, and every entry says why it is there.
//! - kernel and machine state: modules (`create_module`, `get_kernel_syms` and `query_module`
//!   are gone from the kernel and answer `ENOSYS` anyway), kexec, reboot, swap, clocks, accounting, quotas,
//!   `syslog`, `_sysctl`/`sysfs`/`ustat`, `iopl`/`ioperm`, `vm86`;
//! - new namespaces: `unshare` and `setns` always, `clone` with any `CLONE_NEW*` flag, and
//!   `clone3` answers `ENOSYS` so libc falls back to `clone`, whose flags a filter can read
//!   (seccomp cannot look into `clone3`'s struct). A nested `unshare -U` is how an unprivileged
//!   process gets `CAP_SYS_ADMIN` over a new mount namespace, the first step of many escapes;
//! - mounting: `mount`, `umount2`, `pivot_root` and the new mount API (`fsopen` … `open_tree`,
//!   `mount_setattr`);
//! - kernel surfaces with a long CVE history: `bpf`, `perf_event_open`, `userfaultfd`, the
//!   keyring (`add_key`, `keyctl`, `request_key`), `io_uring_*` (moby 25 removed it too),
//!   `open_by_handle_at`/`name_to_handle_at` (the "shocker" escape), `kcmp`,
//!   `lookup_dcookie`, NUMA policy (`mbind`, `set_mempolicy`, `get_mempolicy`, `move_pages`);
//! - `personality` with anything but the values Docker allows (0, `PER_LINUX32` 0x8,
//!   `UNAME26` 0x20000, both, and the query 0xffffffff).
//!
//! `ptrace` and `process_vm_readv/writev` stay allowed, as in Docker since kernel 4.8: they only
//! reach processes of the same RUN.
//!
//! The filter is installed with `no_new_privs` set (seccompiler sets it), right before the
//! command's `execve`: a setuid binary inside RUN then runs with the caller's privileges (a
//! `USER app` step cannot `sudo` back to root). That is stricter than `docker build`, on
//! purpose: a RUN step is build automation, not a login session.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The compiled filters, in the order they are installed.
pub(crate) struct Profile {
    pub filters: Vec<BpfProgram>,
}

/// Syscalls that fail with `EPERM` whatever their arguments.
const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("finit_module", libc::SYS_finit_module),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fsopen", libc::SYS_fsopen),
    ("fspick", libc::SYS_fspick),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("init_module", libc::SYS_init_module),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("kcmp", libc::SYS_kcmp),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mbind", libc::SYS_mbind),
    ("mount", libc::SYS_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("move_pages", libc::SYS_move_pages),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pivot_root", libc::SYS_pivot_root),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("syslog", libc::SYS_syslog),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("_sysctl", libc::SYS__sysctl),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("ustat", libc::SYS_ustat),
];

/// Every `CLONE_NEW*` flag: a `clone` with any of them makes a namespace.
const CLONE_NEW_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// `personality` values Docker's profile allows.
const PERSONALITIES: [u64; 5] = [0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn target() -> Option<TargetArch> {
    if cfg!(target_arch = "x86_64") {
        Some(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(TargetArch::aarch64)
    } else if cfg!(target_arch = "riscv64") {
        Some(TargetArch::riscv64)
    } else {
        None
    }
}

/// Compiles the profile for this host's architecture; `None` on an architecture seccompiler
/// cannot target (the caller says so and runs without it).
pub(crate) fn profile() -> Result<Option<Profile>, String> {
    let Some(arch) = target() else {
        return Ok(None);
    };
    let e = |what: &str, err: seccompiler::BackendError| format!("seccomp {what}: {err}");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        rules.insert(*nr, Vec::new());
    }
    // clone(flags, …): one rule per namespace flag, any of them matches.
    let mut clone_rules = Vec::new();
    for flag in CLONE_NEW_FLAGS {
        let c = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(|x| e("clone rule", x))?;
        clone_rules.push(SeccompRule::new(vec![c]).map_err(|x| e("clone rule", x))?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // personality(p): denied unless p is one of the allowed values (all conditions must hold).
    let conds = PERSONALITIES
        .iter()
        .map(|v| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|x| e("personality rule", x))?;
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(conds).map_err(|x| e("personality rule", x))?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|x| e("filter", x))?;
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|x| e("clone3 filter", x))?;
    let compile = |f: SeccompFilter| {
        BpfProgram::try_from(f).map_err(|x| format!("seccomp: compiling the filter: {x}"))
    };
    Ok(Some(Profile {
        filters: vec![compile(deny)?, compile(clone3)?],
    }))
}

/// Installs the profile on the calling thread (sets `no_new_privs` first). Between fork and
/// exec: no allocation.
pub(crate) fn install(p: &Profile) -> Result<(), ()> {
    for f in &p.filters {
        seccompiler::apply_filter(f).map_err(|_| ())?;
    }
    Ok(())
}

/// The names of the syscalls the profile denies outright (for docs and tests).
#[cfg(test)]
pub(crate) fn denied_names() -> Vec<&'static str> {
    DENIED.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_compiles_and_denies_what_docker_denies() {
        let p = profile()
            .unwrap()
            .expect("x86_64 and aarch64 are supported");
        assert_eq!(p.filters.len(), 2);
        let names = denied_names();
        for n in [
            "unshare",
            "mount",
            "keyctl",
            "bpf",
            "setns",
            "io_uring_setup",
            "open_by_handle_at",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "no syscall listed twice");
    }

    /// In a forked child: the filter makes `unshare(CLONE_NEWUSER)` fail with EPERM, `clone3`
    /// with ENOSYS, a harmless `personality` query and `getpid` still work.
    #[test]
    fn installed_profile_refuses_namespaces_and_keeps_ordinary_syscalls() {
        let p = profile().unwrap().unwrap();
        // SAFETY: the child only makes syscalls and `_exit`s.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let code = (|| {
                    if install(&p).is_err() {
                        return 10;
                    }
                    if libc::unshare(libc::CLONE_NEWUSER) == 0
                        || *libc::__errno_location() != libc::EPERM
                    {
                        return 11;
                    }
                    if libc::syscall(libc::SYS_clone3, 0usize, 0usize) != -1
                        || *libc::__errno_location() != libc::ENOSYS
                    {
                        return 12;
                    }
                    if libc::personality(0xffff_ffff) < 0 {
                        return 13;
                    }
                    if libc::personality(0x0040_0000) != -1 {
                        return 14; // ADDR_NO_RANDOMIZE: turning ASLR off is refused
                    }
                    if libc::getpid() <= 0 {
                        return 15;
                    }
                    if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
                        return 16;
                    }
                    0
                })();
                libc::_exit(code);
            }
            let mut st = 0;
            assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
            assert!(libc::WIFEXITED(st));
            assert_eq!(libc::WEXITSTATUS(st), 0, "see the return codes above");
        }
    }
}
