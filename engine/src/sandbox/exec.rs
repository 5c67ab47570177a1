//! Running one command in a hermetic sandbox: the parent side.
//!
//! [`run`] re-executes the `strata` binary as `strata __sandbox-init` (the engine is
//! multi-threaded, so it never forks and continues running Rust code itself). The helper gets
//! the [`RunSpec`] as JSON on stdin and reports the outcome as one JSON line on fd 3, a pipe
//! that is close-on-exec everywhere except in the helper.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::SandboxError;

/// Which network the command sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A new network namespace with only `lo`, up.
    None,
    /// The host's network (and a copy of its `/etc/resolv.conf`).
    Host,
}

/// Where the command's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// Both to the calling process's stderr (build logs).
    Stderr,
    /// Both to this host file (created or truncated).
    File(PathBuf),
    /// Both to the helper's stdout, a pipe [`run_logged`] reads (internal: it forwards the
    /// output to stderr and keeps its tail).
    Pipe,
}

/// How many lines, and at most how many bytes, of a command's output [`run_logged`] keeps.
pub const TAIL_LINES: usize = 20;
pub const TAIL_BYTES: usize = 4096;

/// The last lines of a command's output: at most [`TAIL_LINES`] lines and [`TAIL_BYTES`]
/// bytes (a longer line keeps its end), invalid UTF-8 and control characters replaced.
#[derive(Debug, Default, Clone)]
pub struct Tail {
    /// The last `2 * TAIL_BYTES` bytes seen.
    buf: std::collections::VecDeque<u8>,
}

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        let keep = 2 * TAIL_BYTES;
        let bytes = &bytes[bytes.len().saturating_sub(keep)..];
        let excess = (self.buf.len() + bytes.len()).saturating_sub(keep);
        self.buf.drain(..excess);
        self.buf.extend(bytes);
    }

    /// The tail as text (empty if there was no output).
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self.buf.iter().copied().collect();
        let s = String::from_utf8_lossy(&bytes);
        let s = s.trim_end_matches(['\n', '\r']);
        let lines: Vec<&str> = s.lines().collect();
        let mut out = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        if out.len() > TAIL_BYTES {
            let mut cut = out.len() - TAIL_BYTES;
            while !out.is_char_boundary(cut) {
                cut += 1;
            }
            out = format!("…{}", &out[cut..]);
        }
        out.chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    '?'
                } else {
                    c
                }
            })
            .collect()
    }
}

/// One RUN: what to run, over which layers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// Snapshot dirs, bottom first (empty = scratch).
    pub lowers: Vec<PathBuf>,
    /// Overlay upper and work dirs: empty, on the same file system, created by the caller.
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Already resolved (shell form = SHELL + [cmd]); `argv[0]` without `/` is looked up in
    /// the `PATH` of `env` (or the default PATH).
    pub argv: Vec<String>,
    /// Exactly this environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Absolute; created (`mkdir -p`, as root) if missing.
    pub cwd: String,
    /// `""` = root; `name`, `uid`, with optional `:group`/`:gid`, resolved against the rootfs.
    pub user: String,
    pub network: Network,
    pub hostname: String,
    /// (host dir, absolute target in the container), bind-mounted read-write.
    pub cache_mounts: Vec<(PathBuf, String)>,
    /// `RUN --mount`s other than caches: binds, tmpfs, secrets.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// `strata build --memory`, `--cpus` (the pids cap is always on where cgroups allow).
    #[serde(default)]
    pub limits: super::limits::ResourceLimits,
    pub output: Output,
    /// Observe which paths the command looks at ([`super::trace`], [`run_observed`]). Off:
    /// no filter, no cost.
    #[serde(default)]
    pub trace: bool,
}

/// A `RUN --mount` other than a cache mount, as the sandbox mounts it. Nothing of it reaches
/// the layer: its target is a mount point like `/proc` ([`injected_paths`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path in the container, other than `/`.
    pub target: String,
    pub kind: MountKind,
}

#[derive(Clone, Serialize, Deserialize)]
pub enum MountKind {
    /// A host directory (`dir`) or file: a private copy made for this step, so `rw` writes are
    /// thrown away with it. Read-only unless `rw`.
    Bind {
        source: PathBuf,
        dir: bool,
        rw: bool,
    },
    /// A fresh tmpfs; `size` in bytes (the kernel's default when `None`).
    Tmpfs { size: Option<u64> },
    /// A read-only file holding `data`, on a tmpfs private to the sandbox's mount namespace:
    /// the bytes never touch a disk.
    Secret {
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl std::fmt::Debug for MountKind {
    // Never the secret's bytes: specs end up in error messages and logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountKind::Bind { source, dir, rw } => f
                .debug_struct("Bind")
                .field("source", source)
                .field("dir", dir)
                .field("rw", rw)
                .finish(),
            MountKind::Tmpfs { size } => f.debug_struct("Tmpfs").field("size", size).finish(),
            MountKind::Secret { mode, uid, gid, .. } => f
                .debug_struct("Secret")
                .field("data", &"<redacted>")
                .field("mode", mode)
                .field("uid", uid)
                .field("gid", gid)
                .finish(),
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    Exited(i32),
    Signaled(i32),
}

/// The helper's one-line report on fd 3.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    Done(RunOutcome),
    /// [`Report::Done`] of a traced run ([`RunSpec::trace`]), with what it observed.
    Traced(RunOutcome, super::trace::Observed),
    Error(String),
    /// The step reached the per-step process limit and was stopped (`sandbox::limits`).
    ProcessLimit(u32),
    /// The OOM killer ended a process of the step at its memory limit (bytes).
    MemoryLimit(u64),
    /// `capture` mode: the layer written to stdout.
    Layer(CapturedLayer),
}

/// What a RUN's upper dir is captured from and into (rootless: done by a helper in the user
/// namespace, where every file is readable by container root and stat shows container ids).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureJob {
    pub upper: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub mtime: u64,
    pub exclude: Vec<String>,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
}

/// The layer a capture wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapturedLayer {
    pub diff_id: strata_cache::Digest,
    pub media_type: String,
    pub uncompressed_size: u64,
}

/// The default `PATH` when `env` has none (Docker's).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths (relative to the rootfs) the sandbox may create in the upper dir as mount points or
/// injected files; they must never be committed to a layer (buildah #5592). Parent
/// directories the sandbox had to create for them (`etc` in a scratch image) are not listed.
pub fn injected_paths(spec: &RunSpec) -> Vec<String> {
    let mut v: Vec<String> = [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "proc",
        "dev",
        "sys",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let targets = spec
        .cache_mounts
        .iter()
        .map(|(_, t)| t)
        .chain(spec.mounts.iter().map(|m| &m.target));
    for target in targets {
        let t = target.trim_matches('/').to_string();
        if !t.is_empty() && !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

pub(crate) fn validate(spec: &RunSpec) -> Result<(), SandboxError> {
    if spec.argv.is_empty() {
        return Err(SandboxError::Spec("empty command".into()));
    }
    if !spec.cwd.starts_with('/') {
        return Err(SandboxError::Spec(format!(
            "working directory `{}` is not absolute",
            spec.cwd
        )));
    }
    if let Some(bad) = spec.env.iter().find(|e| !e.contains('=')) {
        return Err(SandboxError::Spec(format!(
            "environment entry `{bad}` has no `=`"
        )));
    }
    for (host, target) in &spec.cache_mounts {
        if !target.starts_with('/') || target.trim_matches('/').is_empty() {
            return Err(SandboxError::Spec(format!(
                "cache mount target `{target}` must be an absolute path other than `/`"
            )));
        }
        if !host.is_absolute() {
            return Err(SandboxError::Spec(format!(
                "cache mount source `{}` is not absolute",
                host.display()
            )));
        }
    }
    for m in &spec.mounts {
        if !m.target.starts_with('/') || m.target.trim_matches('/').is_empty() {
            return Err(SandboxError::Spec(format!(
                "mount target `{}` must be an absolute path other than `/`",
                m.target
            )));
        }
        if let MountKind::Bind { source, .. } = &m.kind {
            if !source.is_absolute() {
                return Err(SandboxError::Spec(format!(
                    "bind mount source `{}` is not absolute",
                    source.display()
                )));
            }
        }
    }
    let args = spec
        .argv
        .iter()
        .chain(&spec.env)
        .chain([&spec.cwd, &spec.hostname, &spec.user]);
    if args.clone().any(|s| s.contains('\0')) {
        return Err(SandboxError::Spec(
            "NUL byte in command, environment, cwd, user or hostname".into(),
        ));
    }
    Ok(())
}

/// The signal that interrupted the build (0: none), set by [`cancel`].
static CANCELLED: AtomicI32 = AtomicI32::new(0);
/// The running helpers that [`cancel`] stops (`run`, `unpack` and `capture`; never `remove`,
/// which is cleanup), by child id with a pidfd, so a reaped and reused pid is never signalled.
static LIVE: Mutex<Vec<(u32, OwnedFd)>> = Mutex::new(Vec::new());

/// Stops the build's sandboxes (Ctrl-C / SIGTERM; called by the CLI's signal thread): every
/// running helper gets SIGTERM, on which a `run` helper SIGKILLs its pid 1 — the kernel then
/// kills everything in the pid namespace and drops its mounts — removes its temp dir and
/// reports. Helpers started afterwards are refused, and the build records no more steps.
pub fn cancel(signal: i32) {
    CANCELLED.store(signal.max(1), Ordering::SeqCst);
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for (_, fd) in live.iter() {
        let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::TERM);
    }
}

/// The signal passed to [`cancel`], if it was called.
pub fn cancelled() -> Option<i32> {
    match CANCELLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

fn check_cancelled() -> Result<(), SandboxError> {
    match cancelled() {
        Some(s) => Err(SandboxError::Interrupted(s)),
        None => Ok(()),
    }
}

fn register(id: u32) {
    let Some(pid) = rustix::process::Pid::from_raw(id as i32) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    // `cancel` sets the flag before it takes the lock: either it sees this entry, or this
    // sees the flag.
    if cancelled().is_some() {
        let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::TERM);
    }
    live.push((id, fd));
}

fn unregister(id: u32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(i, _)| *i != id);
}

/// Runs `spec` and waits for it. As root directly; otherwise in a user namespace
/// ([`super::userns`]).
pub fn run(spec: &RunSpec) -> Result<RunOutcome, SandboxError> {
    run_logged(spec).map(|(o, _)| o)
}

/// [`run`], also returning the tail of the command's output when it goes to stderr
/// ([`Output::Stderr`]: it passes through a pipe, is forwarded to stderr as it comes, and the
/// last lines are kept for the error message of a failed step).
pub fn run_logged(spec: &RunSpec) -> Result<(RunOutcome, Tail), SandboxError> {
    run_observed(spec).map(|(o, t, _)| (o, t))
}

/// [`run_logged`], also returning what the command observed of its root file system when
/// `spec.trace` is set (`Some` exactly then; docs/read-set.md).
pub fn run_observed(
    spec: &RunSpec,
) -> Result<(RunOutcome, Tail, Option<super::trace::Observed>), SandboxError> {
    validate(spec)?;
    check_cancelled()?;
    // A bad `strata verify` variation fails here, once, not inside every helper.
    super::vary::Variation::current().map_err(SandboxError::Spec)?;
    let ns = super::userns::current();
    let tee = spec.output == Output::Stderr;
    let json = if tee {
        let mut piped = spec.clone();
        piped.output = Output::Pipe;
        serde_json::to_vec(&piped)
    } else {
        serde_json::to_vec(spec)
    }
    .map_err(|e| SandboxError::Spec(e.to_string()))?;
    let mut args = vec!["run".to_string()];
    if let Some(ns) = ns {
        args.push(ns.helper_arg().into());
    }
    let mut h = Helper::spawn_with(&args, ns, tee)?;
    if spec.trace {
        // The report carries the trace, possibly more than a pipe holds: read it meanwhile,
        // or pid 1 would block writing it while this thread waits for the output to end.
        h.read_report_in_background();
    }
    if let Some(mut stdin) = h.child.stdin.take() {
        // An early exit of the helper shows up in the report; ignore EPIPE here.
        let _ = stdin.write_all(&json);
    }
    let mut tail = Tail::default();
    if let Some(mut out) = h.child.stdout.take() {
        // Until every process of the sandbox has closed it: pid 1 exits after the command,
        // and the kernel then kills whatever the command left in the pid namespace.
        let mut buf = [0u8; 8192];
        let mut stderr = std::io::stderr();
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = stderr.write_all(&buf[..n]);
                    tail.push(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    let finished = h.finish_observed();
    // Stopped by `cancel`: whatever the helper reported, the step was interrupted.
    check_cancelled()?;
    let (outcome, observed) = finished?;
    let observed = match (spec.trace, observed) {
        (true, Some(o)) => Some(o),
        (true, None) => Some(super::trace::Observed {
            blind: Some("the sandbox reported no trace".into()),
            ..Default::default()
        }),
        (false, _) => None,
    };
    Ok((outcome, tail, observed))
}

/// Unpacks the layer tar `reader` into `dest` inside the user namespace of `ns`, so files get
/// their container ids through the mapping.
pub(crate) fn unpack_in_userns(
    ns: &super::userns::UserNs,
    mut reader: impl Read,
    dest: &std::path::Path,
    limits: super::snapshot::Limits,
) -> Result<(), SandboxError> {
    check_cancelled()?;
    let args = vec![
        "unpack".to_string(),
        ns.helper_arg().into(),
        dest.display().to_string(),
        limits.max_bytes.to_string(),
        limits.max_entries.to_string(),
        limits.max_path_len.to_string(),
    ];
    let mut h = Helper::spawn(&args, Some(ns))?;
    if let Some(mut stdin) = h.child.stdin.take() {
        let copied = std::io::copy(&mut reader, &mut stdin);
        drop(stdin);
        if let Err(e) = copied {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                let _ = h.child.kill();
                let _ = h.finish();
                return Err(SandboxError::io("read layer for", dest.display(), e));
            }
        }
    }
    let finished = h.finish();
    check_cancelled()?;
    match finished? {
        RunOutcome::Exited(0) => Ok(()),
        o => Err(SandboxError::Setup(format!(
            "unpack helper ended with {o:?}"
        ))),
    }
}

/// Captures `job` inside the user namespace of `ns`, writing the compressed layer to `out`.
pub fn capture_in_userns(
    ns: &super::userns::UserNs,
    job: &CaptureJob,
    out: &mut dyn Write,
) -> Result<CapturedLayer, SandboxError> {
    check_cancelled()?;
    let json = serde_json::to_vec(job).map_err(|e| SandboxError::Spec(e.to_string()))?;
    let args = vec!["capture".to_string(), ns.helper_arg().into()];
    let mut h = Helper::spawn_with(&args, Some(ns), true)?;
    if let Some(mut stdin) = h.child.stdin.take() {
        let _ = stdin.write_all(&json);
    }
    let copied = match h.child.stdout.take() {
        Some(mut stdout) => std::io::copy(&mut stdout, out).map(drop),
        None => Ok(()),
    };
    if let Err(e) = copied {
        let _ = h.child.kill();
        let _ = h.finish_report();
        check_cancelled()?;
        return Err(SandboxError::io("write", "captured layer", e));
    }
    let report = h.finish_report();
    check_cancelled()?;
    match report? {
        Report::Layer(l) => Ok(l),
        Report::Error(e) => Err(SandboxError::Rootless(e)),
        r => Err(SandboxError::Rootless(format!(
            "capture helper: unexpected report {r:?}"
        ))),
    }
}

/// Removes the tree `path` (a RUN's upper/work dirs, a failed snapshot). Rootless, inside the
/// user namespace: it may hold files of other container ids and directories without write
/// permission, which only container root can remove.
pub fn remove_tree(path: &std::path::Path) -> Result<(), SandboxError> {
    // (No single-id warning from here: `strata gc` removes snapshots this way.)
    match super::userns::detected() {
        None => match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(SandboxError::io("remove", path.display(), e))
            }
            _ => Ok(()),
        },
        Some(ns) => {
            let args = vec![
                "remove".to_string(),
                ns.helper_arg().into(),
                path.display().to_string(),
            ];
            let mut h = Helper::spawn(&args, Some(ns))?;
            drop(h.child.stdin.take());
            h.finish().map(drop)
        }
    }
}

/// A running `strata __sandbox-init` (in the user namespace of `ns`, if any, once spawned).
struct Helper {
    child: std::process::Child,
    report: ReportPipe,
    exe: PathBuf,
}

/// The helper's report pipe: read at the end, or by a thread from the start.
enum ReportPipe {
    File(std::fs::File),
    Reading(std::thread::JoinHandle<std::io::Result<String>>),
    Taken,
}

impl Helper {
    fn spawn(args: &[String], ns: Option<&super::userns::UserNs>) -> Result<Helper, SandboxError> {
        Self::spawn_with(args, ns, false)
    }

    /// `pipe_stdout`: the helper's stdout is a pipe (else the caller's stderr).
    fn spawn_with(
        args: &[String],
        ns: Option<&super::userns::UserNs>,
        pipe_stdout: bool,
    ) -> Result<Helper, SandboxError> {
        let exe = match std::env::var_os("STRATA_SANDBOX_EXE") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()
                .map_err(|e| SandboxError::io("find", "the strata executable", e))?,
        };
        let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| SandboxError::io("create", "report pipe", e.into()))?;
        let (mut sync_parent, sync_child) = match ns {
            Some(_) => {
                let (a, b) = std::os::unix::net::UnixStream::pair()
                    .map_err(|e| SandboxError::io("create", "sync socket", e))?;
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| SandboxError::io("dup", "stderr", e))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("__sandbox-init")
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(if pipe_stdout {
                Stdio::piped()
            } else {
                Stdio::from(stdout)
            })
            .stderr(Stdio::inherit());
        // Only for the helper's own temp dir (tests point it elsewhere); the command's
        // environment is exactly the spec's.
        if let Some(t) = std::env::var_os("TMPDIR") {
            cmd.env("TMPDIR", t);
        }
        // `strata verify`'s variation of runs 2+ (`sandbox::vary`): the helper applies it.
        if let Some(v) = std::env::var_os(super::vary::ENV) {
            cmd.env(super::vary::ENV, v);
        }
        let wfd = report_w.as_raw_fd();
        let sfd = sync_child.as_ref().map_or(-1, |s| s.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, prctl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first, so neither dup2 clobbers the other's source.
                let w = libc::fcntl(wfd, libc::F_DUPFD_CLOEXEC, 10);
                if w < 0 || libc::dup2(w, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if sfd >= 0 {
                    let s = libc::fcntl(sfd, libc::F_DUPFD_CLOEXEC, 10);
                    if s < 0 || libc::dup2(s, super::userns::SYNC_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // If this thread dies (strata killed), the helper and with it the pid namespace
                // die too. Callers block this thread until the helper exits.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| SandboxError::io("start sandbox helper", exe.display(), e))?;
        drop(report_w);
        drop(sync_child);
        let cancellable = args.first().is_some_and(|m| m != "remove");
        if cancellable {
            register(child.id());
        }
        let mut h = Helper {
            child,
            report: ReportPipe::File(std::fs::File::from(report_r)),
            exe,
        };
        if let (Some(ns), Some(sock)) = (ns, sync_parent.as_mut()) {
            if let Err(e) = ns.handshake(sock, h.child.id()) {
                let _ = h.child.kill();
                let _ = h.child.wait();
                unregister(h.child.id());
                return Err(e);
            }
        }
        Ok(h)
    }

    /// Reads the report on a thread from now on ([`Helper::finish_report`] joins it).
    fn read_report_in_background(&mut self) {
        if let ReportPipe::File(mut f) = std::mem::replace(&mut self.report, ReportPipe::Taken) {
            self.report = ReportPipe::Reading(std::thread::spawn(move || {
                let mut s = String::new();
                f.read_to_string(&mut s).map(|_| s)
            }));
        }
    }

    /// Waits for the helper and returns the outcome it reports.
    fn finish(self) -> Result<RunOutcome, SandboxError> {
        self.finish_observed().map(|(o, _)| o)
    }

    /// [`Helper::finish`], with the trace of a traced run.
    fn finish_observed(self) -> Result<(RunOutcome, Option<super::trace::Observed>), SandboxError> {
        match self.finish_report()? {
            Report::Done(outcome) => Ok((outcome, None)),
            Report::Traced(outcome, observed) => Ok((outcome, Some(observed))),
            Report::Error(msg) => Err(SandboxError::Setup(msg)),
            Report::ProcessLimit(max) => Err(SandboxError::ProcessLimit(max)),
            Report::MemoryLimit(bytes) => Err(SandboxError::MemoryLimit(bytes)),
            r => Err(SandboxError::Setup(format!(
                "unexpected helper report {r:?}"
            ))),
        }
    }

    /// Waits for the helper and returns its report.
    fn finish_report(mut self) -> Result<Report, SandboxError> {
        drop(self.child.stdin.take());
        drop(self.child.stdout.take());
        let mut report = String::new();
        let read = match std::mem::replace(&mut self.report, ReportPipe::Taken) {
            ReportPipe::File(mut f) => f.read_to_string(&mut report).map(drop),
            ReportPipe::Reading(h) => match h.join() {
                Ok(r) => r.map(|s| report = s),
                Err(_) => Err(std::io::Error::other("the report reader panicked")),
            },
            ReportPipe::Taken => Ok(()),
        };
        let status = self.child.wait();
        unregister(self.child.id());
        let status = status.map_err(|e| SandboxError::io("wait for", "sandbox helper", e))?;
        read.map_err(|e| SandboxError::io("read", "sandbox report", e))?;
        // One line per report; the last one wins: pid 1 may have reported the command's exit
        // just before the helper stopped the step for its process limit (the cause).
        let last = report.trim().lines().last().unwrap_or_default();
        match serde_json::from_str::<Report>(last) {
            Ok(r) => Ok(r),
            Err(_) => Err(SandboxError::Setup(format!(
                "the sandbox helper `{}` exited ({status}) without a report",
                self.exe.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            lowers: vec![],
            upper: "/u".into(),
            work: "/w".into(),
            argv: vec!["true".into()],
            env: vec!["A=1".into()],
            cwd: "/".into(),
            user: String::new(),
            network: Network::None,
            hostname: "strata".into(),
            cache_mounts: vec![("/c".into(), "/root/.cache/".into())],
            mounts: vec![],
            limits: Default::default(),
            output: Output::Stderr,
            trace: false,
        }
    }

    #[test]
    fn injected_paths_include_cache_mount_targets() {
        let p = injected_paths(&spec());
        assert!(p.contains(&"etc/resolv.conf".to_string()));
        assert_eq!(p.last().unwrap(), "root/.cache");
    }

    #[test]
    fn mount_targets_are_injected_and_secrets_never_printed() {
        let mut s = spec();
        s.mounts = vec![Mount {
            target: "/run/secrets/tok".into(),
            kind: MountKind::Secret {
                data: b"hunter2".to_vec(),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        }];
        assert!(injected_paths(&s).contains(&"run/secrets/tok".to_string()));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("104, 117"),
            "{shown}"
        );
        assert!(shown.contains("redacted"), "{shown}");
        s.mounts[0].target = "/".into();
        assert!(validate(&s).is_err());
    }

    #[test]
    fn invalid_specs_are_refused_before_anything_runs() {
        let mut s = spec();
        s.cwd = "rel".into();
        assert!(validate(&s).is_err());
        let mut s = spec();
        s.env = vec!["NOEQ".into()];
        assert!(validate(&s).is_err());
        let mut s = spec();
        s.cache_mounts = vec![("/c".into(), "/".into())];
        assert!(validate(&s).is_err());
        let mut s = spec();
        s.argv.clear();
        assert!(validate(&s).is_err());
        assert!(validate(&spec()).is_ok());
    }

    #[test]
    fn tail_keeps_the_last_lines_bounded() {
        let mut t = Tail::default();
        assert_eq!(t.text(), "");
        for i in 0..100 {
            t.push(format!("line {i}\n").as_bytes());
        }
        let text = t.text();
        assert_eq!(text.lines().count(), TAIL_LINES);
        assert!(
            text.starts_with("line 80\n") && text.ends_with("line 99"),
            "{text}"
        );
        // One huge line: its end, within the byte bound; control characters replaced.
        t.push(&vec![b'x'; 100_000]);
        t.push(b"\x1b[31mend\n");
        let text = t.text();
        assert!(text.len() <= TAIL_BYTES + 3, "{}", text.len());
        assert!(text.ends_with("x?[31mend"), "{text}");
        assert!(text.starts_with('…'));
    }

    #[test]
    fn spec_round_trips_through_json() {
        let s = spec();
        let back: RunSpec = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back.cache_mounts, s.cache_mounts);
        assert_eq!(back.network, Network::None);
    }
}
