//! Observing which paths of its root file system a RUN step looked at (issue 20, read-set
//! reuse), with seccomp user notification (docs/read-set.md, "Tracing").
//!
//! The command's process installs, after Docker's profile, a filter that hands every syscall
//! naming a path (or reading a directory) to pid 1 as a notification ([`filter`],
//! [`install_listener`]); pid 1 takes a copy of the listener fd ([`hand_over`],
//! [`take_listener`]) and serves it on a thread ([`serve`]): it reads the path arguments from the
//! process's memory, makes them absolute with `/proc/<tid>/cwd` or `/proc/<tid>/fd/<n>`, and
//! lets the syscall continue unchanged. pid 1 shares the command's mount namespace and root, so
//! those links read as container paths.
//!
//! Soundness first: whatever cannot be attributed to an absolute path sets [`Observed::blind`]
//! (reuse off) rather than being dropped. Known limits (documented): the path is read before
//! the kernel reads it, so another thread of the process could change it in between; a RUN
//! command that installs its own seccomp listener fails (`EBUSY`) under tracing.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[doc(hidden)]
pub mod binfmt;
use binfmt::ExecInterp;

use super::vary::uname::Kernel;

/// What a traced RUN observed of its root file system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Absolute paths any path syscall named (successful or failed), executables and their interpreters.
    pub lookups: BTreeSet<String>,
    /// Directories whose entries were read (getdents).
    pub listings: BTreeSet<String>,
    /// Why the trace may be incomplete (first reason); `Some` turns reuse off.
    pub blind: Option<String>,
    /// How many notifications were handled (for benchmarks and progress).
    pub syscalls: u64,
}

impl Observed {
    /// Marks the trace incomplete; the first reason is kept.
    pub fn set_blind(&mut self, reason: impl Into<String>) {
        if self.blind.is_none() {
            self.blind = Some(reason.into());
        }
    }

    /// Adds `other` (observations of another part of the same step).
    pub fn merge(&mut self, other: Observed) {
        self.lookups.extend(other.lookups);
        self.listings.extend(other.listings);
        if let Some(b) = other.blind {
            self.set_blind(b);
        }
        self.syscalls += other.syscalls;
    }
}

/// Paths normalised lexically: repeated `/` and `.` components dropped, `..` kept (after a
/// symlink the kernel resolves it physically; the consumer resolves against the layer tree).
pub fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `rel` joined onto the absolute `base`, normalised (`rel` absolute: itself). Public (hidden)
/// for the `trace_exec` fuzz target.
#[doc(hidden)]
pub fn join(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        normalize(rel)
    } else {
        normalize(&format!("{base}/{rel}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The syscalls that name paths (x86_64).

/// Where a syscall's path (or directory) is in its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    /// A path at `args[p]`, relative to the cwd (NULL: `EFAULT`, nothing looked up).
    Path(usize),
    /// A path at `args[p]` relative to the dir fd `args[d]`. An empty or NULL path (with
    /// `AT_EMPTY_PATH`, or `utimensat`'s and `fanotify_mark`'s NULL) names the fd itself.
    At(usize, usize),
    /// The directory of the fd `args[fd]` is listed.
    Listing(usize),
    /// `execve(path)` / `execveat(dirfd, path, .., flags)`: the path, and the interpreters the
    /// kernel opens itself.
    Exec,
    ExecAt,
    /// `openat2(dirfd, path, how, size)`: `RESOLVE_IN_ROOT` changes what an absolute path means.
    OpenAt2,
    /// A `sockaddr` at `args[a]` of length `args[l]`: a named `AF_UNIX` socket is a path.
    SockAddr(usize, usize),
    /// `sendmsg(fd, msghdr)`, `sendmmsg(fd, mmsghdr[], vlen)`: their `msg_name`s.
    MsgHdr,
    MMsgHdr,
    /// Paths after it are relative to another root.
    Chroot,
}

/// The highest syscall number this table knows (`listns`, 6.18): any higher one is notified
/// and makes the run blind, since it might name a path.
const MAX_KNOWN: u32 = 470;

/// Every notified syscall and where its paths are.
#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(i64, &str, &[Arg])] = {
    use libc::*;
    use Arg::*;
    &[
        (SYS_open, "open", &[Path(0)]),
        (SYS_openat, "openat", &[At(0, 1)]),
        (SYS_openat2, "openat2", &[OpenAt2]),
        (SYS_creat, "creat", &[Path(0)]),
        (SYS_stat, "stat", &[Path(0)]),
        (SYS_lstat, "lstat", &[Path(0)]),
        (SYS_newfstatat, "newfstatat", &[At(0, 1)]),
        (SYS_statx, "statx", &[At(0, 1)]),
        (SYS_access, "access", &[Path(0)]),
        (SYS_faccessat, "faccessat", &[At(0, 1)]),
        (SYS_faccessat2, "faccessat2", &[At(0, 1)]),
        (SYS_readlink, "readlink", &[Path(0)]),
        (SYS_readlinkat, "readlinkat", &[At(0, 1)]),
        (SYS_execve, "execve", &[Exec]),
        (SYS_execveat, "execveat", &[ExecAt]),
        (SYS_chdir, "chdir", &[Path(0)]),
        (SYS_chroot, "chroot", &[Path(0), Chroot]),
        (SYS_mkdir, "mkdir", &[Path(0)]),
        (SYS_mkdirat, "mkdirat", &[At(0, 1)]),
        (SYS_rmdir, "rmdir", &[Path(0)]),
        (SYS_unlink, "unlink", &[Path(0)]),
        (SYS_unlinkat, "unlinkat", &[At(0, 1)]),
        (SYS_rename, "rename", &[Path(0), Path(1)]),
        (SYS_renameat, "renameat", &[At(0, 1), At(2, 3)]),
        (SYS_renameat2, "renameat2", &[At(0, 1), At(2, 3)]),
        (SYS_link, "link", &[Path(0), Path(1)]),
        (SYS_linkat, "linkat", &[At(0, 1), At(2, 3)]),
        // The target of a symlink is only text: just the link's own path is looked up.
        (SYS_symlink, "symlink", &[Path(1)]),
        (SYS_symlinkat, "symlinkat", &[At(1, 2)]),
        (SYS_chmod, "chmod", &[Path(0)]),
        (SYS_fchmodat, "fchmodat", &[At(0, 1)]),
        (452, "fchmodat2", &[At(0, 1)]),
        (SYS_chown, "chown", &[Path(0)]),
        (SYS_lchown, "lchown", &[Path(0)]),
        (SYS_fchownat, "fchownat", &[At(0, 1)]),
        (SYS_utime, "utime", &[Path(0)]),
        (SYS_utimes, "utimes", &[Path(0)]),
        (SYS_futimesat, "futimesat", &[At(0, 1)]),
        (SYS_utimensat, "utimensat", &[At(0, 1)]),
        (SYS_truncate, "truncate", &[Path(0)]),
        (SYS_mknod, "mknod", &[Path(0)]),
        (SYS_mknodat, "mknodat", &[At(0, 1)]),
        (SYS_statfs, "statfs", &[Path(0)]),
        (SYS_getxattr, "getxattr", &[Path(0)]),
        (SYS_lgetxattr, "lgetxattr", &[Path(0)]),
        (SYS_setxattr, "setxattr", &[Path(0)]),
        (SYS_lsetxattr, "lsetxattr", &[Path(0)]),
        (SYS_listxattr, "listxattr", &[Path(0)]),
        (SYS_llistxattr, "llistxattr", &[Path(0)]),
        (SYS_removexattr, "removexattr", &[Path(0)]),
        (SYS_lremovexattr, "lremovexattr", &[Path(0)]),
        (463, "setxattrat", &[At(0, 1)]),
        (464, "getxattrat", &[At(0, 1)]),
        (465, "listxattrat", &[At(0, 1)]),
        (466, "removexattrat", &[At(0, 1)]),
        (467, "open_tree_attr", &[At(0, 1)]),
        (468, "file_getattr", &[At(0, 1)]),
        (469, "file_setattr", &[At(0, 1)]),
        (SYS_inotify_add_watch, "inotify_add_watch", &[Path(1)]),
        (SYS_fanotify_mark, "fanotify_mark", &[At(3, 4)]),
        (SYS_uselib, "uselib", &[Path(0)]),
        (SYS_getdents, "getdents", &[Listing(0)]),
        (SYS_getdents64, "getdents64", &[Listing(0)]),
        (SYS_bind, "bind", &[SockAddr(1, 2)]),
        (SYS_connect, "connect", &[SockAddr(1, 2)]),
        // Only with an address (the filter lets `sendto(.., NULL, 0)` through).
        (SYS_sendto, "sendto", &[SockAddr(4, 5)]),
        (SYS_sendmsg, "sendmsg", &[MsgHdr]),
        (SYS_sendmmsg, "sendmmsg", &[MMsgHdr]),
        // Denied by Docker's profile (ERRNO takes precedence over USER_NOTIF), but they name
        // paths: listed so that a profile change cannot silently open a hole.
        (SYS_acct, "acct", &[Path(0)]),
        (SYS_swapon, "swapon", &[Path(0)]),
        (SYS_swapoff, "swapoff", &[Path(0)]),
        (SYS_mount, "mount", &[Path(0), Path(1)]),
        (SYS_umount2, "umount2", &[Path(0)]),
        (SYS_pivot_root, "pivot_root", &[Path(0), Path(1), Chroot]),
        (SYS_quotactl, "quotactl", &[Path(1)]),
        (SYS_open_tree, "open_tree", &[At(0, 1)]),
        (SYS_move_mount, "move_mount", &[At(0, 1), At(2, 3)]),
        (SYS_fspick, "fspick", &[At(0, 1)]),
        (SYS_mount_setattr, "mount_setattr", &[At(0, 1)]),
        (SYS_name_to_handle_at, "name_to_handle_at", &[At(0, 1)]),
        (SYS_open_by_handle_at, "open_by_handle_at", &[]),
        (SYS_io_uring_setup, "io_uring_setup", &[]),
        (SYS_bpf, "bpf", &[]),
    ]
};

#[cfg(not(target_arch = "x86_64"))]
const SYSCALLS: &[(i64, &str, &[Arg])] = &[];

/// Syscalls that may name a path but cannot be decoded: notified, they make the run blind.
fn undecodable(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_open_by_handle_at | libc::SYS_io_uring_setup | libc::SYS_bpf
    )
}

fn lookup_syscall(nr: i64) -> Option<(&'static str, &'static [Arg])> {
    SYSCALLS
        .iter()
        .find(|(n, _, _)| *n == nr)
        .map(|(_, name, args)| (*name, *args))
}

// ---------------------------------------------------------------------------------------------
// The filter.

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A compiled classic-BPF program, built before the fork (the child only installs it).
pub(crate) struct Filter {
    prog: Vec<libc::sock_filter>,
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The notification filter, or `None` on an architecture the table does not describe (the
/// run is then blind). `uname`: `uname` is notified too (`strata verify`'s kernel variation,
/// `sandbox::vary::uname`; a process has only one listener).
pub(crate) fn filter(uname: bool) -> Option<Filter> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W,
        SECCOMP_RET_ALLOW, SECCOMP_RET_USER_NOTIF,
    };
    let ld = |off: u32| stmt(BPF_LD | BPF_W | BPF_ABS, off);
    let ret = |k: u32| stmt(BPF_RET | BPF_K, k);
    let arg_lo = |i: u32| 16 + 8 * i;
    let mut p = vec![
        // A foreign architecture (i386 through int 0x80): notified, blind.
        ld(4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        ret(SECCOMP_RET_USER_NOTIF),
        ld(0),
        // x32 and syscalls newer than the table: notified, blind.
        jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        ret(SECCOMP_RET_USER_NOTIF),
        jump(BPF_JMP | BPF_JGT | BPF_K, MAX_KNOWN, 0, 1),
        ret(SECCOMP_RET_USER_NOTIF),
        // sendto without an address (the common case): allowed. `A` is reloaded after.
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_sendto as u32, 0, 6),
        ld(arg_lo(4)),
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 3),
        ld(arg_lo(4) + 4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
        ret(SECCOMP_RET_ALLOW),
        ret(SECCOMP_RET_USER_NOTIF),
    ];
    for (nr, _, _) in SYSCALLS {
        if *nr == libc::SYS_sendto {
            continue;
        }
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *nr as u32, 0, 1));
        p.push(ret(SECCOMP_RET_USER_NOTIF));
    }
    if uname {
        p.push(jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::SYS_uname as u32,
            0,
            1,
        ));
        p.push(ret(SECCOMP_RET_USER_NOTIF));
    }
    p.push(ret(SECCOMP_RET_ALLOW));
    Some(Filter { prog: p })
}

/// A filter that notifies only x86_64 `uname` (the kernel variation of an untraced run);
/// `None` on another architecture (not varied there).
pub(crate) fn uname_filter() -> Option<Filter> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SECCOMP_RET_ALLOW,
        SECCOMP_RET_USER_NOTIF,
    };
    let ld = |off: u32| stmt(BPF_LD | BPF_W | BPF_ABS, off);
    let ret = |k: u32| stmt(BPF_RET | BPF_K, k);
    let p = vec![
        ld(4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        ret(SECCOMP_RET_ALLOW),
        ld(0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_uname as u32, 0, 1),
        ret(SECCOMP_RET_USER_NOTIF),
        ret(SECCOMP_RET_ALLOW),
    ];
    Some(Filter { prog: p })
}

/// Sets `no_new_privs` and installs `f` with a new listener, returning its fd. Between fork
/// and exec: no allocation.
///
/// # Safety
/// Plain syscalls on valid data; affects the calling thread (and what it execs) for good.
pub(crate) unsafe fn install_listener(f: &Filter) -> Result<RawFd, ()> {
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(());
    }
    let prog = libc::sock_fprog {
        len: f.prog.len() as u16,
        filter: f.prog.as_ptr() as *mut libc::sock_filter,
    };
    let fd = libc::syscall(
        libc::SYS_seccomp,
        libc::SECCOMP_SET_MODE_FILTER,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        &prog as *const libc::sock_fprog,
    );
    if fd < 0 {
        return Err(());
    }
    Ok(fd as RawFd)
}

/// Hands the listener `fd` to pid 1 over the stream socket `sock`: writes its number, and waits
/// for pid 1 to confirm it took a copy (`pidfd_getfd`). Plain `write`/`read`, because `sendmsg`
/// is itself notified (with nobody serving yet). Between fork and exec: no allocation.
///
/// # Safety
/// `sock` and `fd` are open fds.
pub(crate) unsafe fn hand_over(sock: RawFd, fd: RawFd) -> Result<(), ()> {
    let n = fd.to_ne_bytes();
    if libc::write(sock, n.as_ptr().cast(), n.len()) != n.len() as isize {
        return Err(());
    }
    let mut ack = [0u8; 1];
    loop {
        let r = libc::read(sock, ack.as_mut_ptr().cast(), 1);
        if r < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        return if r == 1 && ack[0] == 1 {
            Ok(())
        } else {
            Err(())
        };
    }
}

/// pid 1's side of [`hand_over`]: a copy of the command's listener, taken with `pidfd_getfd`
/// from the process `child`. `None` if the command closed the socket without one (it failed
/// before, or could not install the filter).
pub(crate) fn take_listener(sock: RawFd, child: libc::pid_t) -> Result<Option<OwnedFd>, String> {
    let mut n = [0u8; 4];
    let mut got = 0;
    while got < n.len() {
        // SAFETY: reading into a live buffer.
        let r = unsafe { libc::read(sock, n[got..].as_mut_ptr().cast(), n.len() - got) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if r < 0 {
            return Err(format!(
                "read the trace listener's number: {}",
                std::io::Error::last_os_error()
            ));
        }
        if r == 0 {
            return Ok(None);
        }
        got += r as usize;
    }
    let target = i32::from_ne_bytes(n);
    // SAFETY: pidfd_open/pidfd_getfd on our own child, whose fds it cannot close meanwhile
    // (it waits for the answer below); the fds returned are owned here.
    let fd = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, child, 0);
        if pidfd < 0 {
            -1
        } else {
            let pidfd = OwnedFd::from_raw_fd(pidfd as RawFd);
            libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0)
        }
    };
    let err = std::io::Error::last_os_error();
    let ack = [u8::from(fd >= 0)];
    // SAFETY: writing a live buffer. If the command is gone, so is its need for an answer.
    unsafe { libc::write(sock, ack.as_ptr().cast(), 1) };
    if fd < 0 {
        return Err(format!("take the trace listener (pidfd_getfd): {err}"));
    }
    // SAFETY: a fresh fd from pidfd_getfd.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
}

// ---------------------------------------------------------------------------------------------
// The supervisor.

/// Serves the listener until every process under the filter is gone (`POLLHUP`), or until
/// `done` is set and no notification is pending (pid 1 reaped everything). Every notification
/// gets a response, or its process would hang. `kernel`: answer `uname` with these strings.
pub(crate) fn serve(
    listener: OwnedFd,
    obs: Observed,
    kernel: Option<Kernel>,
    done: Arc<AtomicBool>,
) -> Observed {
    let mut tracer = Tracer {
        obs,
        chroot: false,
        kernel,
    };
    // SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6): the kernel switches straight between the
    // process and this thread, as for a synchronous call. Only speed: errors are ignored.
    let sync_wake_up: u64 = 1;
    // SAFETY: an ioctl on the listener with a valid value.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
            sync_wake_up,
        )
    };
    loop {
        let mut p = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 200) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            tracer.obs.set_blind(format!(
                "poll the trace listener: {}",
                std::io::Error::last_os_error()
            ));
            break;
        }
        if r == 0 {
            if done.load(Ordering::SeqCst) {
                break;
            }
            continue;
        }
        if p.revents & libc::POLLIN != 0 {
            tracer.one(listener.as_raw_fd());
        } else if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            break;
        }
    }
    tracer.obs
}

/// Sends the answer to notification `id`: success with return value 0, or (`flags`
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE`) the syscall runs as asked.
fn respond(listener: RawFd, id: u64, flags: u32) -> std::io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags,
    };
    // SAFETY: an ioctl on the listener with a valid pointer.
    let r = unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &resp as *const libc::seccomp_notif_resp,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The deepest `#!` chain the kernel follows (`exec_binprm`: depths 0 to 5, then ELOOP).
const MAX_EXEC_DEPTH: u32 = 5;

/// A bound on the paths kept (the report is one JSON line): past it the run is blind.
const MAX_PATHS: usize = 2_000_000;

struct Tracer {
    obs: Observed,
    /// A process called `chroot`: absolute paths may be relative to another root from then on.
    chroot: bool,
    /// `strata verify`'s kernel variation: `uname` is answered, not traced.
    kernel: Option<Kernel>,
}

/// One notification's findings, committed only if it is still valid after they were read.
#[derive(Default)]
struct Found {
    lookups: Vec<String>,
    listings: Vec<String>,
    blind: Option<String>,
}

impl Found {
    fn blind(&mut self, reason: String) {
        if self.blind.is_none() {
            self.blind = Some(reason);
        }
    }
}

impl Tracer {
    fn one(&mut self, listener: RawFd) {
        // SAFETY: a plain C struct, which the kernel requires zeroed.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: an ioctl on the listener with a valid pointer.
        let r = unsafe {
            libc::ioctl(
                listener,
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                &mut req as *mut libc::seccomp_notif,
            )
        };
        if r < 0 {
            // ENOENT: the process died (or was signalled) in between; nothing to answer.
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINTR)) {
                self.obs.set_blind(format!("receive a notification: {e}"));
            }
            return;
        }
        if let Some(k) = &self.kernel {
            if req.data.nr as i64 == libc::SYS_uname && req.data.arch == AUDIT_ARCH_X86_64 {
                let done =
                    super::vary::uname::answer(k, listener, req.id, req.pid, req.data.args[0]);
                // Not answered: the kernel runs it (its own strings, or EFAULT for the bad
                // pointer that made the write fail).
                let flags = if done {
                    0
                } else {
                    libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
                };
                // An error: the process is gone, and needs no answer.
                let _ = respond(listener, req.id, flags);
                return;
            }
        }
        self.obs.syscalls += 1;
        // A bug here must not leave the process waiting for an answer: blind, and answered.
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode(&req)))
            .unwrap_or_else(|_| Found {
                blind: Some("the tracer failed on a notification".into()),
                ..Found::default()
            });
        // SAFETY: an ioctl on the listener with a valid pointer to the id.
        let valid = unsafe {
            libc::ioctl(
                listener,
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
                &req.id as *const u64,
            )
        } == 0;
        if valid {
            self.commit(found);
        }
        let r = respond(
            listener,
            req.id,
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        );
        // ENOENT: the process went away meanwhile and needs no answer.
        if let Err(e) = r {
            if e.raw_os_error() != Some(libc::ENOENT) && valid {
                self.obs.set_blind(format!("answer a notification: {e}"));
            }
        }
    }

    /// Adds a valid notification's findings, up to [`MAX_PATHS`] paths in all.
    fn commit(&mut self, found: Found) {
        if let Some(b) = found.blind {
            self.obs.set_blind(b);
        }
        if self.obs.lookups.len() + self.obs.listings.len() >= MAX_PATHS {
            self.obs
                .set_blind(format!("more than {MAX_PATHS} paths observed"));
            return;
        }
        self.obs.lookups.extend(found.lookups);
        self.obs.listings.extend(found.listings);
    }

    fn decode(&mut self, req: &libc::seccomp_notif) -> Found {
        let mut f = Found::default();
        let d = &req.data;
        let nr = d.nr as i64;
        if d.arch != AUDIT_ARCH_X86_64 || !cfg!(target_arch = "x86_64") {
            f.blind(format!("a syscall of another architecture ({:#x})", d.arch));
            return f;
        }
        let Some((name, args)) = lookup_syscall(nr) else {
            f.blind(format!("syscall {nr} is not in the trace table"));
            return f;
        };
        if undecodable(nr) {
            f.blind(format!("{name} names files the tracer cannot see"));
            return f;
        }
        let p = Proc { tid: req.pid };
        for a in args {
            if let Err(e) = self.arg(&p, *a, &d.args, &mut f) {
                f.blind(format!("{name}: {e}"));
            }
        }
        f
    }

    fn arg(&mut self, p: &Proc, a: Arg, args: &[u64; 6], f: &mut Found) -> Result<(), String> {
        match a {
            Arg::Path(i) => {
                if args[i] == 0 {
                    return Ok(());
                }
                let s = p.read_path(args[i])?;
                if !s.is_empty() {
                    f.lookups.push(self.absolute(p, libc::AT_FDCWD, &s)?);
                }
            }
            Arg::At(di, pi) => {
                let dirfd = args[di] as i32;
                let s = if args[pi] == 0 {
                    String::new()
                } else {
                    p.read_path(args[pi])?
                };
                if s.is_empty() {
                    // The fd itself: opened (and observed) before, or not a file system object.
                    if let Some(path) = p.fd_path_if_any(dirfd)? {
                        f.lookups.push(path);
                    }
                } else {
                    f.lookups.push(self.absolute(p, dirfd, &s)?);
                }
            }
            Arg::OpenAt2 => {
                let dirfd = args[0] as i32;
                let s = p.read_path(args[1])?;
                // struct open_how { u64 flags, mode, resolve }
                let mut how = [0u8; 24];
                if args[3] >= 24 {
                    p.read_mem(args[2], &mut how)?;
                }
                let resolve = u64::from_ne_bytes(how[16..24].try_into().unwrap_or_default());
                const RESOLVE_IN_ROOT: u64 = 0x10;
                if resolve & RESOLVE_IN_ROOT != 0 && self.base(p, dirfd)? != "/" {
                    return Err("RESOLVE_IN_ROOT below another directory".into());
                }
                if s.is_empty() {
                    if let Some(path) = p.fd_path_if_any(dirfd)? {
                        f.lookups.push(path);
                    }
                } else {
                    f.lookups.push(self.absolute(p, dirfd, &s)?);
                }
            }
            Arg::Listing(i) => match p.fd_path_if_any(args[i] as i32)? {
                Some(path) => f.listings.push(path),
                None => return Err("a directory fd with no path".into()),
            },
            Arg::Exec | Arg::ExecAt => {
                let (dirfd, pi, empty_ok) = if a == Arg::Exec {
                    (libc::AT_FDCWD, 0, false)
                } else {
                    (args[0] as i32, 1, args[4] & libc::AT_EMPTY_PATH as u64 != 0)
                };
                let s = if args[pi] == 0 {
                    String::new()
                } else {
                    p.read_path(args[pi])?
                };
                let target = if s.is_empty() {
                    if !empty_ok {
                        return Ok(());
                    }
                    // fexecve: the fd's file, read through the fd (it may be a memfd).
                    if let Some(path) = p.fd_path_if_any(dirfd)? {
                        f.lookups.push(path);
                    }
                    ExecTarget::Fd(dirfd)
                } else {
                    let abs = self.absolute(p, dirfd, &s)?;
                    f.lookups.push(abs.clone());
                    ExecTarget::Path(abs)
                };
                if self.chroot {
                    return Err("exec after chroot".into());
                }
                self.interpreters(p, target, 0, f)?;
            }
            Arg::SockAddr(ai, li) => {
                if args[ai] != 0 {
                    if let Some(path) = p.unix_path(args[ai], args[li])? {
                        f.lookups.push(self.absolute(p, libc::AT_FDCWD, &path)?);
                    }
                }
            }
            Arg::MsgHdr => {
                self.msghdr(p, args[1], f)?;
            }
            Arg::MMsgHdr => {
                // struct mmsghdr { struct msghdr (56 bytes); unsigned msg_len; } = 64 bytes.
                let n = (args[2] as u32).min(1024) as u64;
                for i in 0..n {
                    self.msghdr(p, args[1].wrapping_add(64 * i), f)?;
                }
            }
            Arg::Chroot => {
                self.chroot = true;
                return Err("later paths may be relative to another root".into());
            }
        }
        Ok(())
    }

    fn msghdr(&mut self, p: &Proc, addr: u64, f: &mut Found) -> Result<(), String> {
        // struct msghdr { void *msg_name; socklen_t msg_namelen; ... }
        let mut h = [0u8; 12];
        p.read_mem(addr, &mut h)?;
        let name = u64::from_ne_bytes(h[0..8].try_into().unwrap_or_default());
        let len = u32::from_ne_bytes(h[8..12].try_into().unwrap_or_default());
        if name != 0 {
            if let Some(path) = p.unix_path(name, len as u64)? {
                f.lookups.push(self.absolute(p, libc::AT_FDCWD, &path)?);
            }
        }
        Ok(())
    }

    /// The directory a relative path of `dirfd` starts from, as an absolute container path.
    fn base(&self, p: &Proc, dirfd: i32) -> Result<String, String> {
        let link = if dirfd == libc::AT_FDCWD {
            "cwd".to_string()
        } else {
            format!("fd/{dirfd}")
        };
        p.link(&link)
    }

    /// `path` as named by the process, made absolute and normalised; paths through the
    /// magic links of /proc are followed to the file system they reach.
    fn absolute(&self, p: &Proc, dirfd: i32, path: &str) -> Result<String, String> {
        if self.chroot {
            return Err("a path after chroot".into());
        }
        let abs = if path.starts_with('/') {
            normalize(path)
        } else {
            join(&self.base(p, dirfd)?, path)
        };
        through_magic_links(p, abs)
    }

    /// Records the interpreters the kernel opens for an exec of `target` itself: a `#!`
    /// line's (recursively, as deep as the kernel goes) or an ELF's `PT_INTERP`.
    fn interpreters(
        &self,
        p: &Proc,
        target: ExecTarget,
        depth: u32,
        f: &mut Found,
    ) -> Result<(), String> {
        // The kernel hands files at depths 0 to 5 to a format handler (`exec_binprm`): the
        // one at depth 5 still opens its interpreter (an ELF's loads; a script's gets ELOOP).
        if depth > MAX_EXEC_DEPTH {
            return Ok(());
        }
        let Some(kind) = target.read_head(p)? else {
            return Ok(()); // not there, not a regular file: the exec fails
        };
        let (interp, script) = match kind {
            ExecInterp::Script(interp) => (interp, true),
            ExecInterp::Elf(Some(interp)) => (interp, false),
            ExecInterp::Elf(None) => return Ok(()),
            ExecInterp::Unseen(why) => return Err(why.into()),
        };
        // An empty PT_INTERP: the kernel's open fails (ENOENT) before any lookup.
        if interp.is_empty() {
            return Ok(());
        }
        let interp = String::from_utf8(interp).map_err(|_| "a non-UTF-8 interpreter path")?;
        let abs = self.absolute(p, libc::AT_FDCWD, &interp)?;
        f.lookups.push(abs.clone());
        if script {
            self.interpreters(p, ExecTarget::Path(abs), depth + 1, f)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Executables.

enum ExecTarget {
    Path(String),
    Fd(i32),
}

impl ExecTarget {
    /// What the kernel makes of the executable ([`binfmt::inspect`]: its first bytes, an
    /// ELF's `PT_INTERP`). `None` if it is not there or not a regular file.
    fn read_head(&self, p: &Proc) -> Result<Option<ExecInterp>, String> {
        let path = match self {
            ExecTarget::Path(s) => in_process_proc(s, p.tid),
            ExecTarget::Fd(fd) => format!("/proc/{}/fd/{fd}", p.tid),
        };
        let opath = match open_exec(&path) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT)
            | Err(rustix::io::Errno::NOTDIR)
            | Err(rustix::io::Errno::LOOP)
            | Err(rustix::io::Errno::NAMETOOLONG) => return Ok(None),
            Err(rustix::io::Errno::XDEV) => {
                return Err(format!(
                    "the executable `{path}` is reached through a /proc magic link"
                ))
            }
            Err(e) => return Err(format!("open the executable `{path}`: {e}")),
        };
        let st = rustix::fs::fstat(&opath).map_err(|e| format!("stat `{path}`: {e}"))?;
        // Not a regular file, or executable by nobody: the exec fails (EACCES), even for root.
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
            || st.st_mode & 0o111 == 0
        {
            return Ok(None);
        }
        let file = std::fs::File::open(format!("/proc/self/fd/{}", opath.as_raw_fd()))
            .map_err(|e| format!("read the executable `{path}`: {e}"))?;
        binfmt::inspect(&file)
            .map(Some)
            .map_err(|e| format!("read the executable `{path}`: {e}"))
    }
}

/// `path` with `/proc/self`, `/proc/thread-self`, `/dev/fd/N` and `/dev/std{in,out,err}`
/// pointing at the traced thread's own /proc entries, not pid 1's (which opens it).
fn in_process_proc(path: &str, tid: u32) -> String {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    match comps.as_slice() {
        ["proc", "self" | "thread-self", rest @ ..] => {
            format!("/proc/{tid}/{}", rest.join("/"))
        }
        ["dev", "fd", rest @ ..] => format!("/proc/{tid}/fd/{}", rest.join("/")),
        ["dev", "stdin", rest @ ..] => format!("/proc/{tid}/fd/0/{}", rest.join("/")),
        ["dev", "stdout", rest @ ..] => format!("/proc/{tid}/fd/1/{}", rest.join("/")),
        ["dev", "stderr", rest @ ..] => format!("/proc/{tid}/fd/2/{}", rest.join("/")),
        _ => path.to_string(),
    }
}

/// An `O_PATH` fd of the executable at `path` as pid 1 sees it (not opened for reading: a FIFO
/// or a device could block or act). A path through one of the traced process's own /proc
/// entries is followed; any other magic link would resolve in pid 1's context instead of the
/// process's: `EXDEV`.
fn open_exec(path: &str) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    if path.starts_with("/proc/") {
        return rustix::fs::open(path, flags, Mode::empty());
    }
    match rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::NO_MAGICLINKS,
    ) {
        // ELOOP: a symlink loop, or a magic link on the way.
        Err(rustix::io::Errno::LOOP) => match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(_) => Err(rustix::io::Errno::XDEV),
            Err(e) => Err(e),
        },
        r => r,
    }
}

// ---------------------------------------------------------------------------------------------
// The traced process, seen from pid 1.

struct Proc {
    tid: u32,
}

impl Proc {
    /// Reads `buf.len()` bytes at `addr` of the process's memory.
    fn read_mem(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        let n = self.read_some(addr, buf)?;
        if n < buf.len() {
            return Err(format!("memory at {addr:#x} is not readable"));
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `addr`, page by page, stopping at the first page that
    /// is not readable (`process_vm_readv` does not cross into one).
    fn read_some(&self, addr: u64, buf: &mut [u8]) -> Result<usize, String> {
        let mut n = 0;
        while n < buf.len() {
            let at = addr.wrapping_add(n as u64);
            let to_page = 4096 - (at % 4096) as usize;
            let len = to_page.min(buf.len() - n);
            let local = libc::iovec {
                iov_base: buf[n..].as_mut_ptr().cast(),
                iov_len: len,
            };
            let remote = libc::iovec {
                iov_base: at as *mut libc::c_void,
                iov_len: len,
            };
            // SAFETY: `local` points into `buf`, `len` bytes; `remote` is only read by the
            // kernel on the other process's behalf.
            let r = unsafe { libc::process_vm_readv(self.tid as i32, &local, 1, &remote, 1, 0) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if n > 0 && e.raw_os_error() == Some(libc::EFAULT) {
                    break;
                }
                return Err(format!("read the process's memory: {e}"));
            }
            if r == 0 {
                break;
            }
            n += r as usize;
        }
        Ok(n)
    }

    /// The NUL-terminated path at `addr` (at most `PATH_MAX` bytes, as the kernel).
    fn read_path(&self, addr: u64) -> Result<String, String> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        let n = self.read_some(addr, &mut buf)?;
        let Some(end) = buf[..n].iter().position(|b| *b == 0) else {
            if n == buf.len() {
                // ENAMETOOLONG for the kernel too: nothing is looked up. Still, say so.
                return Err("a path longer than PATH_MAX".into());
            }
            return Err("a path running into unreadable memory".into());
        };
        buf.truncate(end);
        String::from_utf8(buf).map_err(|_| "a non-UTF-8 path".to_string())
    }

    /// `readlink /proc/<tid>/<link>`, which must be an absolute path of the container.
    fn link(&self, link: &str) -> Result<String, String> {
        let t = std::fs::read_link(format!("/proc/{}/{link}", self.tid))
            .map_err(|e| format!("readlink /proc/<pid>/{link}: {e}"))?;
        let t = t
            .into_os_string()
            .into_string()
            .map_err(|_| format!("/proc/<pid>/{link} is not UTF-8"))?;
        if !t.starts_with('/') || t.ends_with(" (deleted)") {
            return Err(format!("/proc/<pid>/{link} is `{t}`, not a path"));
        }
        Ok(normalize(&t))
    }

    /// The path of the fd itself (`AT_FDCWD`: the cwd) if it is a file system object with a
    /// path; `None` for pipes, sockets, anonymous inodes and deleted files, which were observed
    /// (if at all) when they were opened.
    fn fd_path_if_any(&self, fd: i32) -> Result<Option<String>, String> {
        let link = if fd == libc::AT_FDCWD {
            "cwd".to_string()
        } else {
            format!("fd/{fd}")
        };
        let t = match std::fs::read_link(format!("/proc/{}/{link}", self.tid)) {
            Ok(t) => t,
            // A closed fd: EBADF for the syscall as well.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && fd != libc::AT_FDCWD => {
                return Ok(None)
            }
            Err(e) => return Err(format!("readlink /proc/<pid>/{link}: {e}")),
        };
        let Ok(t) = t.into_os_string().into_string() else {
            return Err(format!("/proc/<pid>/{link} is not UTF-8"));
        };
        if !t.starts_with('/') || t.ends_with(" (deleted)") {
            return Ok(None);
        }
        Ok(Some(normalize(&t)))
    }

    /// The path of a named `AF_UNIX` socket address (abstract and unnamed ones have none).
    fn unix_path(&self, addr: u64, len: u64) -> Result<Option<String>, String> {
        let len = len.min(110) as usize;
        if len <= 2 {
            return Ok(None);
        }
        let mut sa = vec![0u8; len];
        self.read_mem(addr, &mut sa)?;
        let family = u16::from_ne_bytes([sa[0], sa[1]]);
        if family != libc::AF_UNIX as u16 || sa[2] == 0 {
            return Ok(None);
        }
        let path = &sa[2..];
        let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
        String::from_utf8(path[..end].to_vec())
            .map(Some)
            .map_err(|_| "a non-UTF-8 socket path".into())
    }
}

/// `/proc/<pid>/{root,cwd,fd/N}/rest` (and `/dev/fd/N/rest`, `/dev/std{in,out,err}/rest`)
/// leave /proc through a magic link: followed, so that the path reached is what is recorded
/// (the consumer ignores /proc and /dev). A path that ends at the link names an object observed
/// when it was opened, and is kept as it is.
fn through_magic_links(p: &Proc, mut path: String) -> Result<String, String> {
    for _ in 0..8 {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let (pid, rest): (String, &[&str]) = match comps.as_slice() {
            ["dev", "fd", n, rest @ ..] if !rest.is_empty() => {
                let r = ["fd", n];
                let joined = r.iter().chain(rest).copied().collect::<Vec<_>>().join("/");
                path = format!("/proc/{}/{joined}", p.tid);
                continue;
            }
            ["dev", s @ ("stdin" | "stdout" | "stderr"), rest @ ..] if !rest.is_empty() => {
                let n = match *s {
                    "stdin" => 0,
                    "stdout" => 1,
                    _ => 2,
                };
                path = format!("/proc/{}/fd/{n}/{}", p.tid, rest.join("/"));
                continue;
            }
            ["proc", who, rest @ ..] => {
                let pid = match *who {
                    "self" | "thread-self" => p.tid.to_string(),
                    n if n.bytes().all(|b| b.is_ascii_digit()) => n.to_string(),
                    _ => return Ok(path),
                };
                match rest {
                    ["task", t, rest @ ..] if t.bytes().all(|b| b.is_ascii_digit()) => {
                        (t.to_string(), rest)
                    }
                    _ => (pid, rest),
                }
            }
            _ => return Ok(path),
        };
        let (link, after): (String, &[&str]) = match rest {
            [l @ ("root" | "cwd"), after @ ..] if !after.is_empty() => (l.to_string(), after),
            ["fd", n, after @ ..] if !after.is_empty() => (format!("fd/{n}"), after),
            _ if rest.contains(&"..") => {
                return Err(format!("`..` in `{path}`"));
            }
            _ => return Ok(path),
        };
        if rest
            .iter()
            .take(rest.len() - after.len())
            .any(|c| *c == "..")
        {
            return Err(format!("`..` in `{path}`"));
        }
        let target = Proc {
            tid: pid.parse().map_err(|_| format!("bad pid in `{path}`"))?,
        }
        .link(&link)?;
        path = join(&target, &after.join("/"));
    }
    Err(format!("`{path}`: too many magic links"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_lexically_keeping_dotdot() {
        assert_eq!(normalize("//a/./b//c/"), "/a/b/c");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/a/../b"), "/a/../b");
        assert_eq!(join("/etc", "../etc/x"), "/etc/../etc/x");
        assert_eq!(join("/etc", "/usr"), "/usr");
        assert_eq!(join("/", "."), "/");
    }

    #[test]
    fn self_links_are_the_traced_process() {
        assert_eq!(in_process_proc("/proc/self/exe", 7), "/proc/7/exe");
        assert_eq!(in_process_proc("/dev/fd/3", 7), "/proc/7/fd/3");
        assert_eq!(in_process_proc("/dev/stdin", 7), "/proc/7/fd/0/");
        assert_eq!(in_process_proc("/bin/sh", 7), "/bin/sh");
    }

    #[test]
    fn a_host_elf_names_its_interpreter() {
        // The test binary itself is a dynamically linked x86_64 executable (elsewhere: of
        // another machine, which binfmt_misc would run).
        let exe = std::env::current_exe().unwrap();
        let file = std::fs::File::open(&exe).unwrap();
        match binfmt::inspect(&file).unwrap() {
            ExecInterp::Elf(Some(i)) => {
                assert!(i.starts_with(b"/"), "{}", String::from_utf8_lossy(&i))
            }
            ExecInterp::Elf(None) => {}
            other if cfg!(target_arch = "x86_64") => panic!("{other:?}"),
            _ => {}
        }
    }

    #[test]
    fn the_filter_is_well_formed() {
        let Some(f) = filter(false) else { return };
        assert!(f.prog.len() < 4096);
        // Every notified syscall is decodable or makes the run blind; none is listed twice.
        let mut nrs: Vec<i64> = SYSCALLS.iter().map(|s| s.0).collect();
        nrs.sort();
        let n = nrs.len();
        nrs.dedup();
        assert_eq!(n, nrs.len());
        assert!(nrs.iter().all(|n| *n <= MAX_KNOWN as i64));
    }
}
