//! The sandbox helper: `strata __sandbox-init`, a fresh single-threaded process.
//!
//! helper (host pid ns, host mount ns): reads the spec, writes /etc/hosts & co. into a temp dir,
//! `unshare(PID|UTS|IPC[|NET])`, forks:
//!   pid 1 (new pid ns): `unshare(NEWNS)`, private mounts, overlay + /proc /dev /sys + binds,
//!   pivot_root, hostname, `lo` up, umask, user lookup; forks the command, reaps every child
//!   until the command is gone, writes the report on fd 3 and exits — the kernel then kills
//!   whatever the command left running in the namespace.
//! The helper waits for pid 1 and removes its temp dir.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use rustix::fs::{Mode, OFlags};

use super::confined::{components, mkdir_all_in_root};
use super::exec::{validate, Network, Output, Report, RunOutcome, RunSpec, DEFAULT_PATH};
use super::passwd::{resolve, ExecUser};
use super::setup::{plan, HostFiles, RealSys, Sys};
use super::trace::Observed;

const REPORT_FD: i32 = 3;

// Errors in this process are `String`s on purpose (here and in `sys`, `user`, `seccomp`,
// `limits::StepCgroup::enter`, `userns::enter`, which run only in the helper): they cross the
// process boundary as `Report::Error(String)`, JSON on fd 3, and the parent wraps the text in a
// typed `SandboxError`. A typed error here would be flattened to the same text anyway.

/// How the helper's user namespace maps ids (`--userns=…`; none as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NsKind {
    /// 0 → caller, 1..=N → the subordinate range.
    SubIds,
    /// Only 0 → caller (setgroups denied).
    Single,
}

/// Entry point of `strata __sandbox-init MODE [--userns=subid|single] ARGS…` (dispatched by the
/// CLI before argument parsing). Modes: `run` (spec as JSON on stdin), `unpack DEST MAX_BYTES
/// MAX_ENTRIES MAX_PATH` (layer tar on stdin), `remove PATH`. Never returns.
pub fn init_main(args: &[String]) -> ! {
    // SAFETY: fcntl on a plain fd number; fails cleanly if fd 3 is not open.
    if unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        eprintln!("error: `strata __sandbox-init` is internal to strata (started without its report pipe)");
        std::process::exit(2);
    }
    let mut rest: Vec<&str> = args.iter().map(String::as_str).collect();
    let mode = if rest.is_empty() {
        "run"
    } else {
        rest.remove(0)
    };
    let ns = match rest.first() {
        Some(&"--userns=subid") => Some(NsKind::SubIds),
        Some(&"--userns=single") => Some(NsKind::Single),
        _ => None,
    };
    if ns.is_some() {
        rest.remove(0);
        // SAFETY: fcntl on a plain fd number.
        unsafe { libc::fcntl(super::userns::SYNC_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        if let Err(e) = super::userns::enter() {
            write_report(&Report::Error(e));
            std::process::exit(0);
        }
    }
    let report = match (mode, rest.as_slice()) {
        ("run", []) => helper(ns),
        ("unpack", [dest, b, e, p]) => Some(unpack_mode(ns, dest, b, e, p)),
        ("remove", [path]) => Some(remove_mode(path)),
        ("capture", []) => Some(capture_mode()),
        _ => Some(Report::Error(format!(
            "sandbox helper: bad arguments {args:?}"
        ))),
    };
    if let Some(report) = report {
        write_report(&report);
    }
    std::process::exit(0)
}

fn unpack_mode(ns: Option<NsKind>, dest: &str, b: &str, e: &str, p: &str) -> Report {
    let limits = match (b.parse(), e.parse(), p.parse()) {
        (Ok(max_bytes), Ok(max_entries), Ok(max_path_len)) => super::snapshot::Limits {
            max_bytes,
            max_entries,
            max_path_len,
            ..Default::default()
        },
        _ => return Report::Error("sandbox helper: bad limits".into()),
    };
    let form = super::snapshot::Form {
        opaque_xattr: if ns.is_some() {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        },
        single_id: ns == Some(NsKind::Single),
        userns: ns.is_some(),
    };
    let stdin = std::io::stdin().lock();
    match super::snapshot::unpack_with(stdin, Path::new(dest), limits, form) {
        Ok(()) => Report::Done(RunOutcome::Exited(0)),
        Err(e) => Report::Error(e.to_string()),
    }
}

/// Captures the upper dir of the job on stdin; the compressed layer goes to stdout. In the user
/// namespace stat shows container ids, so no id map is needed.
fn capture_mode() -> Report {
    use super::exec::{CaptureJob, CapturedLayer};
    let job: CaptureJob = match serde_json::from_reader(std::io::stdin().lock()) {
        Ok(j) => j,
        Err(e) => return Report::Error(format!("capture helper: parse job: {e}")),
    };
    let r = (|| -> Result<CapturedLayer, String> {
        let compression: crate::layer::Compression =
            job.compression.parse().map_err(|e| format!("{e}"))?;
        let entries = super::capture::capture(&super::capture::CaptureOptions {
            upper: &job.upper,
            lowers: &job.lowers,
            mtime: job.mtime,
            exclude: &job.exclude,
            id_map: None,
        })
        .map_err(|e| e.to_string())?;
        let entries = crate::layer::canonicalize(entries, job.mtime).map_err(|e| e.to_string())?;
        // (Not `stdout().lock()`: the layer is written from another thread.)
        let mut out = std::io::BufWriter::new(std::io::stdout());
        let l = crate::layer::write_layer(&entries, compression, &mut out)
            .map_err(|e| e.to_string())?;
        std::io::Write::flush(&mut out).map_err(|e| format!("write layer: {e}"))?;
        Ok(CapturedLayer {
            diff_id: l.diff_id,
            media_type: l.media_type.to_string(),
            uncompressed_size: l.uncompressed_size,
        })
    })();
    match r {
        Ok(l) => Report::Layer(l),
        Err(e) => Report::Error(e),
    }
}

fn remove_mode(path: &str) -> Report {
    match super::snapshot::remove_tree(Path::new(path)) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Report::Done(RunOutcome::Exited(0)),
        Err(e) => Report::Error(format!("remove `{path}`: {e}")),
    }
}

fn write_report(r: &Report) {
    let mut line = serde_json::to_string(r).unwrap_or_else(|_| "\"?\"".into());
    line.push('\n');
    let mut b = line.as_bytes();
    // A traced run's report can be larger than a pipe's buffer: written in as many parts as
    // it takes (the parent reads it meanwhile).
    while !b.is_empty() {
        // SAFETY: writing a valid buffer to an fd number (errors are ignored: the parent then
        // reports a helper without a report).
        let n = unsafe { libc::write(REPORT_FD, b.as_ptr().cast(), b.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

fn last_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// pid 1 of the sandbox once forked (0 before), for [`on_stop_signal`].
static PID1: AtomicI32 = AtomicI32::new(0);
/// A stop signal arrived (before pid 1 existed, or at all).
static STOPPED: AtomicBool = AtomicBool::new(false);
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// SIGTERM/SIGINT/SIGHUP in the helper (from strata's `cancel`, or Ctrl-C to the foreground
/// process group): SIGKILL pid 1, which takes the whole pid namespace and its mounts with it;
/// the helper's wait then returns and it removes its temp dir. Async-signal-safe: atomics and
/// `kill` only.
extern "C" fn on_stop_signal(_: libc::c_int) {
    STOPPED.store(true, Ordering::SeqCst);
    let pid = PID1.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn set_stop_handlers(handler: libc::sighandler_t) {
    // SAFETY: installing a handler that only does async-signal-safe work (or SIG_DFL), and
    // unblocking the signals (strata's threads block them for its signal thread).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = 0; // no SA_RESTART: waitpid returns EINTR, and is retried
        libc::sigemptyset(&mut sa.sa_mask);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Returns the report to write, or `None` when pid 1 already wrote it.
fn helper(ns: Option<NsKind>) -> Option<Report> {
    set_stop_handlers(on_stop_signal as *const () as libc::sighandler_t);
    let mut spec = match read_spec() {
        Ok(s) => s,
        Err(e) => return Some(Report::Error(e)),
    };
    if let Err(e) = redirect_stdio(&spec.output) {
        return Some(Report::Error(e));
    }
    let vary = match super::vary::Variation::current() {
        Ok(v) => v,
        Err(e) => return Some(Report::Error(e)),
    };
    if let Some(h) = &vary.hostname {
        spec.hostname = h.clone();
    }
    // Before the fork: pid 1 and everything it starts inherit the affinity.
    let cpu_online = match vary.cpus.map(super::vary::restrict_cpus).transpose() {
        Ok(c) => c,
        Err(e) => return Some(Report::Error(e)),
    };
    let tmp = match tempfile::Builder::new().prefix("strata-sandbox-").tempdir() {
        Ok(t) => t,
        Err(e) => return Some(Report::Error(format!("create temp dir: {e}"))),
    };
    let mut files = match host_files(&spec, tmp.path()) {
        Ok(f) => f,
        Err(e) => return Some(Report::Error(e)),
    };
    if let Some(list) = cpu_online {
        let p = tmp.path().join("cpu-online");
        if let Err(e) = std::fs::write(&p, format!("{list}\n")) {
            return Some(Report::Error(format!("write `{}`: {e}", p.display())));
        }
        files.cpu_online = Some(p);
    }
    files.domainname = vary.domainname.clone();
    if let Some(tag) = &vary.kernel {
        match kernel_files(tag, tmp.path()) {
            Ok(c) => files.proc_covers = c,
            Err(e) => return Some(Report::Error(e)),
        }
    }
    // Before the fork, so pid 1 and everything it starts is counted (root; rootless without a
    // delegated cgroup runs without the pids cap: docs/security.md).
    let cg = match super::limits::StepCgroup::enter(&spec.limits) {
        Ok(cg) => cg,
        Err(e) => return Some(Report::Error(e)),
    };
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    if vary.clock_offset.is_some() {
        // Pid 1 (this process's child) is the first in it: the offsets are set before.
        flags |= libc::CLONE_NEWTIME;
    }
    // SAFETY: plain syscalls in a single-threaded process; after fork the child only runs
    // code of this single-threaded program and leaves with `_exit`.
    unsafe {
        if libc::unshare(flags) != 0 {
            return Some(Report::Error(last_err("unshare")));
        }
        if let Some(secs) = vary.clock_offset {
            if let Err(e) = super::vary::set_clock_offset(secs) {
                return Some(Report::Error(e));
            }
        }
        let pid = libc::fork();
        if pid < 0 {
            return Some(Report::Error(last_err("fork")));
        }
        if pid == 0 {
            // pid 1 ignores signals it has no handler for; strata stops it with SIGKILL.
            set_stop_handlers(libc::SIG_DFL);
            let r = pid1(&spec, &files, ns);
            write_report(&r);
            libc::_exit(0);
        }
        PID1.store(pid, Ordering::SeqCst);
        if STOPPED.load(Ordering::SeqCst) {
            libc::kill(pid, libc::SIGKILL);
        }
        let (status, at_limit) = if cg.limits_pids() {
            wait_within_limit(pid, &cg)
        } else {
            (wait_for(pid), false)
        };
        let memory_hit = cg.memory_hit();
        drop(cg);
        drop(tmp);
        match status {
            _ if at_limit => Some(Report::ProcessLimit(super::limits::PIDS_MAX)),
            // After pid 1's own report (the command's exit status): this one wins.
            _ if memory_hit.is_some() => memory_hit.map(Report::MemoryLimit),
            _ if STOPPED.load(Ordering::SeqCst) => {
                Some(Report::Error("the sandbox was stopped by a signal".into()))
            }
            Ok(st) if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 => None,
            Ok(st) => Some(Report::Error(format!(
                "sandbox pid 1 died (wait status {st:#x})"
            ))),
            Err(e) => Some(Report::Error(e)),
        }
    }
}

fn read_spec() -> Result<RunSpec, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| format!("read spec: {e}"))?;
    let spec: RunSpec = serde_json::from_slice(&buf).map_err(|e| format!("parse spec: {e}"))?;
    validate(&spec).map_err(|e| e.to_string())?;
    Ok(spec)
}

/// stdin = /dev/null; stdout and stderr as the spec says.
fn redirect_stdio(out: &Output) -> Result<(), String> {
    let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("open /dev/null: {e}"))?;
    dup_onto(&null, 0)?;
    match out {
        Output::Stderr => {
            // SAFETY: dup2 of standard fds.
            if unsafe { libc::dup2(2, 1) } < 0 {
                return Err(last_err("dup2"));
            }
        }
        Output::Pipe => {
            // SAFETY: dup2 of standard fds.
            if unsafe { libc::dup2(1, 2) } < 0 {
                return Err(last_err("dup2"));
            }
        }
        Output::File(p) => {
            let f = rustix::fs::open(
                p,
                OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| format!("open `{}`: {e}", p.display()))?;
            dup_onto(&f, 1)?;
            dup_onto(&f, 2)?;
        }
    }
    Ok(())
}

fn dup_onto(fd: &OwnedFd, n: i32) -> Result<(), String> {
    // SAFETY: dup2 onto a standard fd number.
    if unsafe { libc::dup2(fd.as_raw_fd(), n) } < 0 {
        return Err(last_err("dup2"));
    }
    Ok(())
}

fn host_files(spec: &RunSpec, dir: &Path) -> Result<HostFiles, String> {
    let w = |name: &str, content: &[u8]| -> Result<std::path::PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, content).map_err(|e| format!("write `{}`: {e}", p.display()))?;
        Ok(p)
    };
    let h = &spec.hostname;
    let hosts =
        format!("127.0.0.1\tlocalhost {h}\n::1\tlocalhost ip6-localhost ip6-loopback {h}\n");
    let resolv = match spec.network {
        Network::Host => std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        Network::None => Vec::new(),
    };
    for d in ["root", "empty", "secrets"] {
        std::fs::create_dir(dir.join(d))
            .map_err(|e| format!("create `{}`: {e}", dir.join(d).display()))?;
    }
    Ok(HostFiles {
        rootfs: dir.join("root"),
        empty_lower: dir.join("empty"),
        hosts: w("hosts", hosts.as_bytes())?,
        resolv: w("resolv.conf", &resolv)?,
        hostname: w("hostname", format!("{h}\n").as_bytes())?,
        secrets: dir.join("secrets"),
        cpu_online: None,
        domainname: None,
        proc_covers: Vec::new(),
    })
}

/// The files that cover `/proc/version`, `/proc/sys/kernel/osrelease` and
/// `/proc/sys/kernel/version` with the strings of the kernel variation `tag`
/// ([`super::vary::uname`]), written into `dir`.
fn kernel_files(tag: &str, dir: &Path) -> Result<Vec<(std::path::PathBuf, String)>, String> {
    let (release, version) = super::vary::uname::real()?;
    let k = super::vary::uname::Kernel::new(tag)?;
    let text =
        std::fs::read_to_string("/proc/version").map_err(|e| format!("read /proc/version: {e}"))?;
    let mut out = Vec::new();
    for (name, target, content) in [
        (
            "proc-version",
            "proc/version",
            k.proc_version(&text, &release, &version),
        ),
        (
            "osrelease",
            "proc/sys/kernel/osrelease",
            format!("{}\n", k.release),
        ),
        (
            "kernel-version",
            "proc/sys/kernel/version",
            format!("{}\n", k.version),
        ),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, content).map_err(|e| format!("write `{}`: {e}", p.display()))?;
        out.push((p, target.to_string()));
    }
    Ok(out)
}

/// Moves the helper's temp dir (the injected /etc files, the rootfs mount point) onto a tmpfs
/// in pid 1's own mount namespace. The bind mounts of /etc/hosts & co. then show in the RUN's
/// `/proc/self/mountinfo` as `tmpfs /hosts`, not as the host's block device and a host path.
fn shadow_host_dir(files: &HostFiles) -> Result<(), String> {
    let dir = files
        .hosts
        .parent()
        .ok_or("the sandbox temp dir has no parent")?;
    let keep: Vec<(&Path, Vec<u8>)> = [&files.hosts, &files.resolv, &files.hostname]
        .into_iter()
        .chain(files.cpu_online.as_ref())
        .chain(files.proc_covers.iter().map(|(p, _)| p))
        .map(|p| std::fs::read(p).map(|c| (p.as_path(), c)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("read the injected files: {e}"))?;
    let target = CString::new(dir.as_os_str().as_bytes()).map_err(|_| "NUL in temp dir")?;
    // SAFETY: mount with valid C strings, in pid 1's private mount namespace.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"size=1m,mode=0755".as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(last_err("mount a tmpfs for the injected files"));
    }
    for d in [&files.rootfs, &files.empty_lower, &files.secrets] {
        std::fs::create_dir(d).map_err(|e| format!("create `{}`: {e}", d.display()))?;
    }
    for (p, content) in keep {
        std::fs::write(p, content).map_err(|e| format!("write `{}`: {e}", p.display()))?;
    }
    Ok(())
}

/// Waits for `pid`, retrying on EINTR; returns the raw wait status.
fn wait_for(pid: libc::pid_t) -> Result<i32, String> {
    let mut st = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            return Ok(st);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(last_err("waitpid"));
        }
    }
}

/// Waits for pid 1 like [`wait_for`], and kills it as soon as the step's cgroup refused a fork
/// for reaching its process limit. Returns the wait status and whether that happened.
fn wait_within_limit(
    pid: libc::pid_t,
    cg: &super::limits::StepCgroup,
) -> (Result<i32, String>, bool) {
    // SAFETY: pidfd_open on our own child; the fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return (wait_for(pid), false);
    }
    // SAFETY: a fresh fd from pidfd_open.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd. Readable when pid 1 has exited; else check every 50 ms.
        let r = unsafe { libc::poll(&mut p, 1, 50) };
        if r > 0 {
            return (wait_for(pid), false);
        }
        if cg.times_at_max() > 0 {
            // SAFETY: our child; the kernel then kills the rest of its pid namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return (wait_for(pid), true);
        }
    }
}

/// Everything the command's process needs, prepared before forking it.
struct Exec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    user: ExecUser,
    cwd: OwnedFd,
    /// False in a single-id user namespace, where `setgroups` is denied.
    may_setgroups: bool,
    /// Docker's default seccomp profile (`None` on an architecture it cannot target).
    seccomp: Option<super::seccomp::Profile>,
    /// The notification filter: `RunSpec::trace`'s (`None` on an architecture the tracer does
    /// not know: the trace is then blind), and/or `uname` for `kernel`.
    trace: Option<super::trace::Filter>,
    /// `strata verify`'s kernel variation: pid 1 answers `uname` with these strings.
    kernel: Option<super::vary::uname::Kernel>,
    /// `strata verify`'s fixed address-space layout (`personality(ADDR_NO_RANDOMIZE)`).
    fixed_layout: bool,
}

fn pid1(spec: &RunSpec, files: &HostFiles, ns: Option<NsKind>) -> Report {
    // What pid 1 itself looks up for the command (cwd, user database, PATH search).
    let mut pre = spec.trace.then(Observed::default);
    let done = |o: RunOutcome, obs: Option<Observed>| match obs {
        Some(obs) => Report::Traced(o, obs),
        None => Report::Done(o),
    };
    match pid1_setup(spec, files, ns, pre.as_mut()) {
        Ok(Some(exec)) => match run_command(&exec, pre) {
            Ok((o, obs)) => done(o, obs),
            Err(e) => Report::Error(e),
        },
        // Not found in PATH: reported like a shell would, as exit status 127.
        Ok(None) => done(RunOutcome::Exited(127), pre),
        Err(e) => Report::Error(e),
    }
}

fn pid1_setup(
    spec: &RunSpec,
    files: &HostFiles,
    ns: Option<NsKind>,
    mut pre: Option<&mut Observed>,
) -> Result<Option<Exec>, String> {
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(last_err("unshare(CLONE_NEWNS)"));
        }
        let root = c"/";
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            return Err(last_err("make mounts private"));
        }
    }
    shadow_host_dir(files)?;
    let mut sys = RealSys::new(files.secrets.clone());
    for op in plan(spec, files, ns) {
        sys.apply(&op)?;
    }
    rustix::process::umask(Mode::from_raw_mode(0o022));

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = resolve(&spec.user, &passwd, &group)?;
    if let Some(pre) = pre.as_deref_mut() {
        pre.lookups.insert("/etc/passwd".into());
        pre.lookups.insert("/etc/group".into());
        pre.lookups.insert(super::trace::normalize(&spec.cwd));
    }
    if ns == Some(NsKind::Single) && (user.uid != 0 || user.gid != 0) {
        return Err(format!(
            "USER `{}` (uid {}, gid {}) is not supported yet without an /etc/subuid and /etc/subgid range: the single-id user namespace only maps root",
            spec.user, user.uid, user.gid
        ));
    }

    let root = rustix::fs::open(
        "/",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open /: {e}"))?;
    let cwd_comps = components(spec.cwd.as_bytes())
        .map_err(|r| format!("working directory `{}`: {r}", spec.cwd))?;
    let cwd = mkdir_all_in_root(root.as_fd(), &cwd_comps, 0o755)
        .map_err(|e| format!("working directory `{}`: {e}", spec.cwd))?;
    drop(root);

    let cs = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in `{s}`"));
    let argv = spec
        .argv
        .iter()
        .map(|a| cs(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|a| cs(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut probes = Vec::new();
    let found = find_executable_probing(&spec.argv[0], &spec.env, &mut probes);
    if let Some(pre) = pre.as_deref_mut() {
        // Relative PATH entries were looked up from pid 1's cwd, `/`.
        for p in probes {
            if let Some(p) = p.to_str() {
                let p = super::trace::normalize(&format!("/{p}"));
                pre.lookups.insert(p);
            } else {
                pre.set_blind("a non-UTF-8 PATH entry");
            }
        }
    }
    let Some(path) = found else {
        eprintln!(
            "strata: RUN: `{}`: executable file not found in $PATH",
            spec.argv[0]
        );
        return Ok(None);
    };
    let vary = super::vary::Variation::current()?;
    let kernel = vary
        .kernel
        .as_deref()
        .map(super::vary::uname::Kernel::new)
        .transpose()?;
    Ok(Some(Exec {
        path: CString::new(path.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?,
        argv,
        env,
        user,
        cwd,
        may_setgroups: ns != Some(NsKind::Single),
        // Compiled here, before the fork: the child only installs it.
        seccomp: super::seccomp::profile()?,
        trace: match pre {
            Some(pre) => {
                let f = super::trace::filter(kernel.is_some());
                if f.is_none() {
                    pre.set_blind("tracing is not supported on this architecture");
                }
                f
            }
            None if kernel.is_some() => super::trace::uname_filter(),
            None => None,
        },
        kernel,
        fixed_layout: vary.fixed_layout,
    }))
}

/// `argv[0]` as execvp would find it, but with the PATH of the command's environment.
#[cfg(test)]
fn find_executable(arg0: &str, env: &[String]) -> Option<std::path::PathBuf> {
    find_executable_probing(arg0, env, &mut Vec::new())
}

/// [`find_executable`], adding every candidate it looked at to `probes` (pid 1 looks them up
/// for the command: a traced run observes them).
fn find_executable_probing(
    arg0: &str,
    env: &[String],
    probes: &mut Vec<std::path::PathBuf>,
) -> Option<std::path::PathBuf> {
    if arg0.contains('/') {
        return Some(arg0.into());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let p = Path::new(d).join(arg0);
        probes.push(p.clone());
        let m = std::fs::metadata(&p).ok()?;
        use std::os::unix::fs::PermissionsExt;
        (m.is_file() && m.permissions().mode() & 0o111 != 0).then_some(p)
    })
}

/// Forks the command and reaps children until it has exited. Traced (`pre` is `Some`): serves
/// the command's notifications on a thread meanwhile, and returns what they observed.
fn run_command(e: &Exec, pre: Option<Observed>) -> Result<(RunOutcome, Option<Observed>), String> {
    let mut argv: Vec<*const libc::c_char> = e.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = e.env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = e.user.groups.clone();
    // The command hands its listener over this socket (only with a filter to install).
    let socks = match &e.trace {
        Some(_) => Some(
            std::os::unix::net::UnixStream::pair()
                .map_err(|e| format!("create the trace socket: {e}"))?,
        ),
        None => None,
    };
    let trace = e
        .trace
        .as_ref()
        .zip(socks.as_ref().map(|(_, c)| c.as_raw_fd()));
    // SAFETY: single-threaded process; the child makes only syscalls on prepared data, then
    // execs or `_exit`s.
    let pid = unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(last_err("fork"));
        }
        if pid == 0 {
            child_exec(e, &argv, &envp, &groups, trace);
        }
        pid
    };
    let Some((ours, theirs)) = socks else {
        // Not served: blind already (architecture), or not traced.
        return wait_command(pid).map(|o| (o, pre));
    };
    // Only the kernel variation is served: what it observes is dropped.
    let traced = pre.is_some();
    let mut obs = pre.unwrap_or_default();
    let unserved = |mut obs: Observed, why: String| {
        if traced {
            obs.set_blind(why);
        } else {
            eprintln!("strata: the kernel version string is not varied in this RUN: {why}");
        }
        wait_command(pid).map(|o| (o, traced.then_some(obs)))
    };
    drop(theirs);
    let listener = match super::trace::take_listener(ours.as_raw_fd(), pid) {
        Ok(Some(l)) => l,
        Ok(None) => {
            let why = "the notification filter was not installed (or the command failed before)";
            return unserved(obs, why.into());
        }
        // The command got no confirmation and stops (exit 126).
        Err(err) => return unserved(obs, err),
    };
    drop(ours);
    if !traced {
        obs = Observed::default();
    }
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let served = {
        let done = done.clone();
        let kernel = e.kernel.clone();
        // pid 1 forks nothing after this: a thread is fine here.
        std::thread::Builder::new()
            .name("trace".into())
            .spawn(move || super::trace::serve(listener, obs, kernel, done))
    };
    let served = match served {
        Ok(h) => h,
        Err(err) => {
            // Nobody would answer its notifications: stop the command.
            // SAFETY: our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = wait_command(pid);
            return Err(format!("start the trace thread: {err}"));
        }
    };
    let outcome = wait_command(pid);
    // What the command left running would only be killed when pid 1 exits; the trace ends
    // when the last process under the filter is gone, so end them now and reap them.
    // SAFETY: kill(-1) from a pid namespace's init reaches that namespace only, never pid 1.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    reap_all();
    done.store(true, Ordering::SeqCst);
    let obs = served
        .join()
        .map_err(|_| "the trace thread panicked".to_string())?;
    outcome.map(|o| (o, traced.then_some(obs)))
}

/// Reaps every child of pid 1 until none is left.
fn reap_all() {
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Reaps children until the command `pid` has exited; its outcome.
fn wait_command(pid: libc::pid_t) -> Result<RunOutcome, String> {
    // SAFETY: waitpid with a valid status pointer.
    unsafe {
        loop {
            let mut st = 0;
            let r = libc::waitpid(-1, &mut st, 0);
            if r == pid {
                if libc::WIFSIGNALED(st) {
                    return Ok(RunOutcome::Signaled(libc::WTERMSIG(st)));
                }
                return Ok(RunOutcome::Exited(libc::WEXITSTATUS(st)));
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(last_err("waitpid"));
            }
            // Another process (an orphan re-parented to us) was reaped: keep waiting.
        }
    }
}

/// The command's process, between fork and exec. Never returns. `trace`: the notification
/// filter to install last, and the socket to hand its listener to pid 1 over.
unsafe fn child_exec(
    e: &Exec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    groups: &[libc::gid_t],
    trace: Option<(&super::trace::Filter, i32)>,
) -> ! {
    let fail = |what: &[u8], code: i32| -> ! {
        let err = *libc::__errno_location();
        let msg = format!(
            "strata: RUN: {}: {}\n",
            String::from_utf8_lossy(what),
            std::io::Error::from_raw_os_error(err)
        );
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(code)
    };
    // Rust ignores SIGPIPE; ignored dispositions survive exec, so restore the default.
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    if libc::fchdir(e.cwd.as_raw_fd()) != 0 {
        fail(b"chdir to the working directory", 126);
    }
    // No fd but 0, 1, 2 reaches the command (CVE-2024-21626); the trace socket is closed
    // before the exec.
    let keep = trace.map_or(-1, |(_, s)| s);
    let closed = if keep >= 3 {
        (keep == 3 || libc::syscall(libc::SYS_close_range, 3u32, keep as u32 - 1, 0u32) == 0)
            && libc::syscall(libc::SYS_close_range, keep as u32 + 1, u32::MAX, 0u32) == 0
    } else {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == 0
    };
    if !closed {
        fail(b"close_range", 126);
    }
    // No controlling terminal: the command must not reach the user's tty through /dev/tty.
    libc::setsid();
    if drop_capabilities().is_err() {
        fail(b"drop capabilities", 126);
    }
    if e.may_setgroups && libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
        fail(b"setgroups", 126);
    }
    if libc::setgid(e.user.gid) != 0 {
        fail(b"setgid", 126);
    }
    if libc::setuid(e.user.uid) != 0 {
        fail(b"setuid", 126);
    }
    // `strata verify`'s fixed layout, kept by the exec. Before the profile, which allows
    // `personality` only with the values Docker does.
    if e.fixed_layout {
        let current = libc::personality(0xffff_ffff);
        if current < 0
            || libc::personality(
                (current as libc::c_ulong) | libc::ADDR_NO_RANDOMIZE as libc::c_ulong,
            ) < 0
        {
            fail(b"personality(ADDR_NO_RANDOMIZE)", 126);
        }
    }
    // Last, so nothing above runs under it: no_new_privs, then Docker's default profile.
    if let Some(p) = &e.seccomp {
        if super::seccomp::install(p).is_err() {
            fail(b"install the seccomp profile", 126);
        }
    }
    // After the profile (whose ERRNO takes precedence anyway): from here every path syscall
    // waits for pid 1, the exec included. Not installed: the socket closes unused and pid 1
    // marks the trace blind; the command runs untraced.
    if let Some((f, sock)) = trace {
        // A uid change made this process non-dumpable, and rootless its memory belongs to the
        // host's user namespace (the helper entered its own after exec): pid 1 could neither
        // take the listener nor read the path arguments until the exec. Dumpable again for
        // that window only; the exec sets it by its own rules.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        if let Ok(l) = super::trace::install_listener(f) {
            if super::trace::hand_over(sock, l).is_err() {
                // Nobody serves the listener: any path syscall would hang (pid 1 reports why).
                *libc::__errno_location() = libc::EPERM;
                fail(b"hand the trace listener to pid 1", 126);
            }
            libc::close(l);
        }
        libc::close(sock);
    }
    libc::execve(e.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    let code = if *libc::__errno_location() == libc::ENOENT {
        127
    } else {
        126
    };
    fail(e.path.as_bytes(), code)
}

/// Docker's default capability set: root in the sandbox can chown, mknod, bind low ports, ...
/// but not mount, load modules, trace, or undo the masks on /proc (no CAP_SYS_ADMIN).
pub(crate) const DEFAULT_CAPS: u64 = {
    const CAPS: [u32; 14] = [
        0,  // CHOWN
        1,  // DAC_OVERRIDE
        3,  // FOWNER
        4,  // FSETID
        5,  // KILL
        6,  // SETGID
        7,  // SETUID
        8,  // SETPCAP
        10, // NET_BIND_SERVICE
        13, // NET_RAW
        18, // SYS_CHROOT
        27, // MKNOD
        29, // AUDIT_WRITE
        31, // SETFCAP
    ];
    let mut m = 0u64;
    let mut i = 0;
    while i < CAPS.len() {
        m |= 1 << CAPS[i];
        i += 1;
    }
    m
};

/// Drops every capability outside [`DEFAULT_CAPS`] from the bounding, ambient, effective,
/// permitted and inheritable sets (before the uid change, which clears the rest for non-root).
unsafe fn drop_capabilities() -> Result<(), ()> {
    const PR_CAPBSET_DROP: libc::c_int = 24;
    const PR_CAP_AMBIENT: libc::c_int = 47;
    const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;
    for cap in 0..64u64 {
        if DEFAULT_CAPS & (1 << cap) == 0
            && libc::prctl(PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
            && *libc::__errno_location() != libc::EINVAL
        {
            return Err(());
        }
    }
    libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let half = |m: u64| Data {
        effective: m as u32,
        permitted: m as u32,
        inheritable: m as u32,
    };
    let data = [half(DEFAULT_CAPS), half(DEFAULT_CAPS >> 32)];
    if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
        return Err(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_are_dockers() {
        assert_eq!(DEFAULT_CAPS, 0xa804_25fb);
        assert_eq!(
            DEFAULT_CAPS & (1 << 21),
            0,
            "CAP_SYS_ADMIN must not be granted"
        );
    }

    #[test]
    fn executable_lookup_uses_the_commands_path() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("tool"), "").unwrap();
        std::fs::write(bin.join("data"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", bin.display())];
        assert_eq!(find_executable("tool", &env), Some(bin.join("tool")));
        assert_eq!(find_executable("data", &env), None, "not executable");
        assert_eq!(find_executable("./rel", &env), Some("./rel".into()));
        assert_eq!(
            find_executable("tool", &[]),
            None,
            "default PATH has no such tool"
        );
    }
}
