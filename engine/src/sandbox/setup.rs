//! The sandbox's filesystem setup as data: [`plan`] lists the [`Op`]s that build the container's
//! root (pure, unit-tested with a recording [`Sys`]); [`RealSys`] performs them with syscalls.
//!
//! Every target inside the rootfs is resolved with `openat2(RESOLVE_IN_ROOT)` and mounted on
//! through `/proc/self/fd/N` (as runc does), so an image whose `/etc` or `/dev` is a symlink to
//! a host path can only ever redirect a mount to somewhere inside its own rootfs
//! (CVE-2024-1753, CVE-2024-9675 were bind/cache mounts escaping this way).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::confined::{components, create_new_file, mkdir_all_in_root, open_in_root};
use super::exec::{MountKind, Network, RunSpec};
use super::init::NsKind;

/// Host device nodes bind-mounted into the container's `/dev` (Docker's set).
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Overlay of `lowers` (bottom first) + upper/work, mounted on `target` (a host path).
    Overlay {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
        /// In a user namespace: overlay's own xattrs are `user.overlay.*` (Linux 5.11).
        userxattr: bool,
    },
    /// Remember the times of these directories of the rootfs (those that exist) ...
    KeepTimes(Vec<String>),
    /// ... and put back those that the setup's mount points and injected files changed: the
    /// command must see the image's times, not when its container was set up.
    RestoreTimes,
    /// `mkdir -p` inside the rootfs.
    MakeDir(String),
    /// An empty file inside the rootfs to mount on, unless something is already there.
    MakeFile(String),
    Symlink {
        target: String,
        path: String,
    },
    /// A fresh file system (`proc`, `tmpfs`, `devpts`, ...) on `target` inside the rootfs.
    Mount {
        fstype: &'static str,
        target: String,
        flags: libc::c_ulong,
        data: String,
        /// Failure is ignored (e.g. sysfs, which some environments refuse).
        optional: bool,
    },
    /// A host file bind-mounted on `target` inside the rootfs (created empty if missing). An
    /// image whose `target` cannot hold a mount (a dangling symlink, `/etc` not a directory)
    /// runs without it, with a warning: that is the image's choice, not an error.
    InjectFile {
        source: PathBuf,
        target: String,
    },
    /// A host path bind-mounted on `target` inside the rootfs.
    Bind {
        source: PathBuf,
        target: String,
    },
    /// Remount the bind mount on `target` read-only, keeping the flags it has (a user
    /// namespace may not drop `nosuid`/`nodev` it inherited); unlike [`Op::ReadOnly`], binaries
    /// on it still run.
    ReadOnlyBind(String),
    /// Write a secret to file `name` of the sandbox's private secrets tmpfs (mounted on first
    /// use, in pid 1's own mount namespace: it goes away with the sandbox).
    WriteSecret {
        name: String,
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Hide a path of /proc or /sys (`/dev/null` over a file, an empty read-only tmpfs over a
    /// directory); missing paths are skipped.
    Mask(String),
    /// Bind a path onto itself read-only; missing paths are skipped.
    ReadOnly(String),
    /// A host file bind-mounted over the existing file `target` (of /proc or /sys); skipped
    /// when `target` is missing (sysfs not mounted).
    Cover {
        source: PathBuf,
        target: String,
    },
    /// Make the rootfs `/` and detach the old root.
    PivotRoot,
    SetHostname(String),
    SetDomainname(String),
    LoopbackUp,
}

/// Where `plan` finds the helper's files on the host.
pub(crate) struct HostFiles {
    pub rootfs: PathBuf,
    pub empty_lower: PathBuf,
    pub hosts: PathBuf,
    pub resolv: PathBuf,
    pub hostname: PathBuf,
    /// An empty directory for [`Op::WriteSecret`]'s tmpfs.
    pub secrets: PathBuf,
    /// `strata verify`'s variation ([`super::vary`]): the CPU list to show as
    /// `/sys/devices/system/cpu/online`, and the domain name to set.
    pub cpu_online: Option<PathBuf>,
    pub domainname: Option<String>,
    /// `strata verify`'s kernel variation: (host file, target under `proc/`) to bind over the
    /// kernel's version files.
    pub proc_covers: Vec<(PathBuf, String)>,
}

/// The setup of the container, in order. `ns`: the user namespace the helper is in, if any.
pub(crate) fn plan(spec: &RunSpec, files: &HostFiles, ns: Option<NsKind>) -> Vec<Op> {
    let mut ops = vec![Op::Overlay {
        lowers: if spec.lowers.is_empty() {
            vec![files.empty_lower.clone()]
        } else {
            spec.lowers.clone()
        },
        upper: spec.upper.clone(),
        work: spec.work.clone(),
        target: files.rootfs.clone(),
        userxattr: ns.is_some(),
    }];
    // Every directory the setup may add an entry to.
    let mut parents = vec![String::new(), "etc".to_string()];
    let targets = spec
        .cache_mounts
        .iter()
        .map(|(_, t)| t)
        .chain(spec.mounts.iter().map(|m| &m.target));
    for target in targets {
        let t = target.trim_matches('/');
        for (i, _) in t.match_indices('/') {
            parents.push(t[..i].to_string());
        }
    }
    parents.sort();
    parents.dedup();
    ops.push(Op::KeepTimes(parents));
    for (src, dst) in [
        (&files.hosts, "etc/hosts"),
        (&files.resolv, "etc/resolv.conf"),
        (&files.hostname, "etc/hostname"),
    ] {
        ops.push(Op::InjectFile {
            source: src.clone(),
            target: dst.into(),
        });
    }
    ops.push(Op::MakeDir("proc".into()));
    ops.push(Op::Mount {
        fstype: "proc",
        target: "proc".into(),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: String::new(),
        optional: false,
    });
    // Docker's masked and read-only paths: kernel memory, keys and timers stay hidden, and
    // the kernel's knobs cannot be turned (the command has no CAP_SYS_ADMIN to undo this).
    for p in [
        "proc/acpi",
        "proc/asound",
        "proc/interrupts",
        "proc/kcore",
        "proc/keys",
        "proc/latency_stats",
        "proc/timer_list",
        "proc/timer_stats",
        "proc/sched_debug",
        "proc/scsi",
    ] {
        ops.push(Op::Mask(p.into()));
    }
    for p in [
        "proc/bus",
        "proc/fs",
        "proc/irq",
        "proc/sys",
        "proc/sysrq-trigger",
    ] {
        ops.push(Op::ReadOnly(p.into()));
    }
    for (source, target) in &files.proc_covers {
        ops.push(Op::Cover {
            source: source.clone(),
            target: target.clone(),
        });
    }
    ops.push(Op::MakeDir("sys".into()));
    ops.push(Op::Mount {
        fstype: "sysfs",
        target: "sys".into(),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
        data: String::new(),
        optional: true,
    });
    for p in ["sys/firmware", "sys/devices/virtual/powercap"] {
        ops.push(Op::Mask(p.into()));
    }
    if let Some(online) = &files.cpu_online {
        ops.push(Op::Cover {
            source: online.clone(),
            target: "sys/devices/system/cpu/online".into(),
        });
    }
    ops.push(Op::MakeDir("dev".into()));
    ops.push(Op::Mount {
        fstype: "tmpfs",
        target: "dev".into(),
        flags: libc::MS_NOSUID | libc::MS_STRICTATIME,
        data: "mode=755,size=65536k".into(),
        optional: false,
    });
    for d in DEVICES {
        ops.push(Op::MakeFile(format!("dev/{d}")));
        ops.push(Op::Bind {
            source: Path::new("/dev").join(d),
            target: format!("dev/{d}"),
        });
    }
    ops.push(Op::MakeDir("dev/pts".into()));
    ops.push(Op::Mount {
        fstype: "devpts",
        target: "dev/pts".into(),
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        // Group `tty` (5) exists only if mapped; with a single id devpts keeps the caller's.
        data: if ns == Some(NsKind::Single) {
            "newinstance,ptmxmode=0666,mode=0620".into()
        } else {
            "newinstance,ptmxmode=0666,mode=0620,gid=5".into()
        },
        optional: false,
    });
    for (target, path) in [
        ("pts/ptmx", "dev/ptmx"),
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ] {
        ops.push(Op::Symlink {
            target: target.into(),
            path: path.into(),
        });
    }
    ops.push(Op::MakeDir("dev/shm".into()));
    ops.push(Op::Mount {
        fstype: "tmpfs",
        target: "dev/shm".into(),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: "mode=1777,size=65536k".into(),
        optional: false,
    });
    for (host, target) in &spec.cache_mounts {
        let t = target.trim_start_matches('/').to_string();
        ops.push(Op::MakeDir(t.clone()));
        ops.push(Op::Bind {
            source: host.clone(),
            target: t,
        });
    }
    // Parents before what is mounted inside them (`/a` before `/a/b`).
    let mut mounts: Vec<_> = spec.mounts.iter().enumerate().collect();
    mounts.sort_by(|a, b| a.1.target.cmp(&b.1.target));
    for (i, m) in mounts {
        let t = m.target.trim_matches('/').to_string();
        match &m.kind {
            MountKind::Bind { source, dir, rw } => {
                ops.push(if *dir {
                    Op::MakeDir(t.clone())
                } else {
                    Op::MakeFile(t.clone())
                });
                ops.push(Op::Bind {
                    source: source.clone(),
                    target: t.clone(),
                });
                if !rw {
                    ops.push(Op::ReadOnlyBind(t));
                }
            }
            MountKind::Tmpfs { size } => {
                ops.push(Op::MakeDir(t.clone()));
                ops.push(Op::Mount {
                    fstype: "tmpfs",
                    target: t,
                    flags: libc::MS_NOSUID | libc::MS_NODEV,
                    data: match size {
                        Some(n) => format!("mode=1777,size={n}"),
                        None => "mode=1777".into(),
                    },
                    optional: false,
                });
            }
            MountKind::Secret {
                data,
                mode,
                uid,
                gid,
            } => {
                let name = format!("secret-{i}");
                ops.push(Op::WriteSecret {
                    name: name.clone(),
                    data: data.clone(),
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                });
                ops.push(Op::MakeFile(t.clone()));
                ops.push(Op::Bind {
                    source: files.secrets.join(name),
                    target: t.clone(),
                });
                ops.push(Op::ReadOnlyBind(t));
            }
        }
    }
    ops.push(Op::RestoreTimes);
    ops.push(Op::PivotRoot);
    ops.push(Op::SetHostname(spec.hostname.clone()));
    if let Some(d) = &files.domainname {
        ops.push(Op::SetDomainname(d.clone()));
    }
    if spec.network == Network::None {
        ops.push(Op::LoopbackUp);
    }
    ops
}

/// The secrets tmpfs: small, root's only, never executable.
const SECRETS_TMPFS: &str = "mode=700,size=16m";

/// Performs [`Op`]s. The real implementation makes syscalls; tests record.
pub(crate) trait Sys {
    fn apply(&mut self, op: &Op) -> Result<(), String>;
}

/// Syscalls, for a process that owns its mount namespace.
#[derive(Default)]
pub(crate) struct RealSys {
    /// The rootfs, once mounted; dropped at pivot so no fd to it outlives the setup.
    root: Option<OwnedFd>,
    /// [`Op::KeepTimes`]: directories of the rootfs and their times.
    kept: Vec<(Vec<std::ffi::OsString>, rfs::Timestamps)>,
    /// Where [`Op::WriteSecret`] mounted its tmpfs, once it has.
    secrets: Option<PathBuf>,
    /// The host dir for that tmpfs (from [`HostFiles`]).
    secrets_dir: PathBuf,
}

fn cstr(p: impl AsRef<std::ffi::OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).unwrap_or_default()
}

fn errno_msg(what: impl std::fmt::Display) -> impl FnOnce(Errno) -> String {
    move |e| format!("{what}: {}", io::Error::from(e))
}

fn last_err(what: impl std::fmt::Display) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn mount_raw(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let (s, t, f, d) = (cstr(source), cstr(target), cstr(fstype), cstr(data));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                f.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    };
    if r != 0 {
        return Err(last_err(format_args!(
            "mount {fstype} `{source}` on `{target}`"
        )));
    }
    Ok(())
}

impl RealSys {
    /// `secrets_dir`: [`HostFiles::secrets`].
    pub(crate) fn new(secrets_dir: PathBuf) -> Self {
        RealSys {
            secrets_dir,
            ..RealSys::default()
        }
    }

    fn root(&self) -> Result<std::os::fd::BorrowedFd<'_>, String> {
        self.root
            .as_ref()
            .map(|f| f.as_fd())
            .ok_or_else(|| "rootfs not mounted".to_string())
    }

    /// An `O_PATH` fd for `path` inside the rootfs, as a `/proc/self/fd/N` mount target.
    fn target(&self, path: &str) -> Result<(OwnedFd, String), String> {
        let comps =
            components(path.as_bytes()).map_err(|r| format!("mount target `{path}`: {r}"))?;
        let fd = open_in_root(self.root()?, &comps, OFlags::PATH)
            .map_err(errno_msg(format_args!("resolve `/{path}` in the rootfs")))?;
        let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
        Ok((fd, p))
    }

    fn overlay(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
        userxattr: bool,
    ) -> Result<(), String> {
        use rustix::mount::*;
        // A `volatile` mount leaves `work/incompat/volatile/` behind, and overlay refuses any
        // later mount of that workdir until it is removed (its sign that the system may have
        // crashed with the upper dir half-written). A RUN's upper is scratch and every build
        // makes new ones, so a workdir is only ever reused within one boot (a caller running
        // twice over the same upper): that is safe to clear.
        let _ = std::fs::remove_dir_all(work.join("work/incompat"));
        // The layers are named to overlay as `/proc/self/fd/N` of O_PATH fds, not by their
        // paths: overlay shows its options as given in the RUN's `/proc/self/mountinfo`, and
        // the store's snapshot paths (its location, the user's home) are none of the command's
        // business. The fds live until the mount is made.
        let open_dir = |p: &Path| {
            rfs::open(
                p,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno_msg(format_args!("open `{}`", p.display())))
        };
        let held: Vec<OwnedFd> = lowers
            .iter()
            .map(|l| open_dir(l))
            .chain([open_dir(upper), open_dir(work)])
            .collect::<Result<_, _>>()?;
        let named: Vec<PathBuf> = held
            .iter()
            .map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
            .collect();
        let (lowers, rest) = named.split_at(lowers.len());
        let (upper, work) = (rest[0].as_path(), rest[1].as_path());
        let new_api = || -> Result<(), Errno> {
            let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
            // `lowerdir+` (Linux 6.8) takes one layer per call: no page-size limit on the
            // option string and no escaping of `:` or `,` in paths. Top layer first.
            for l in lowers.iter().rev() {
                fsconfig_set_string(&fs, "lowerdir+", l.as_path())?;
            }
            fsconfig_set_string(&fs, "upperdir", upper)?;
            fsconfig_set_string(&fs, "workdir", work)?;
            // Plain copy-up semantics for capture: no redirect xattrs for renamed directories,
            // no metadata-only copies, no hard-link index.
            // (`off` may mean `follow`, which `userxattr` refuses; `nofollow` is the same
            // for us: no redirects created.)
            let redirect = if userxattr { "nofollow" } else { "off" };
            for (k, v) in [
                ("redirect_dir", redirect),
                ("index", "off"),
                ("metacopy", "off"),
            ] {
                fsconfig_set_string(&fs, k, v)?;
            }
            if userxattr {
                fsconfig_set_flag(&fs, "userxattr")?;
            }
            // No sync of the upper file system at unmount (Linux 5.10): the upper dir is
            // scratch, captured into a layer blob that is synced on its own. Without it, the
            // unmount waited for all of that file system's dirty data (the snapshots just
            // unpacked: about a second on issue 7's workload). Best effort.
            let _ = fsconfig_set_flag(&fs, "volatile");
            fsconfig_create(&fs)?;
            let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
            move_mount(
                &m,
                "",
                rfs::CWD,
                target,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        let redirect = if userxattr { "nofollow" } else { "off" };
        match new_api() {
            Ok(()) => Ok(()),
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                let lower = lowers
                    .iter()
                    .rev()
                    .map(|l| l.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":");
                let data = format!(
                    "lowerdir={lower},upperdir={},workdir={},redirect_dir={redirect},index=off,metacopy=off{}",
                    upper.display(),
                    work.display(),
                    if userxattr { ",userxattr" } else { "" }
                );
                let target = target.display().to_string();
                mount_raw(
                    "overlay",
                    &target,
                    "overlay",
                    0,
                    &format!("{data},volatile"),
                )
                .or_else(|_| mount_raw("overlay", &target, "overlay", 0, &data))
            }
            Err(e) => Err(errno_msg("mount overlay")(e)),
        }
    }
}

impl Sys for RealSys {
    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Overlay {
                lowers,
                upper,
                work,
                target,
                userxattr,
            } => {
                Self::overlay(lowers, upper, work, target, *userxattr)?;
                let fd = rfs::open(
                    target,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno_msg(format_args!("open `{}`", target.display())))?;
                self.root = Some(fd);
                Ok(())
            }
            Op::MakeDir(path) => {
                let comps = components(path.as_bytes()).map_err(|r| format!("`{path}`: {r}"))?;
                mkdir_all_in_root(self.root()?, &comps, 0o755)
                    .map(drop)
                    .map_err(errno_msg(format_args!(
                        "create directory `/{path}` in the rootfs"
                    )))
            }
            Op::MakeFile(path) => {
                let comps = components(path.as_bytes()).map_err(|r| format!("`{path}`: {r}"))?;
                let Some((name, parent)) = comps.split_last() else {
                    return Err(format!("`{path}`: not a file path"));
                };
                match open_in_root(self.root()?, &comps, OFlags::PATH) {
                    Ok(_) => return Ok(()),
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(errno_msg(format_args!("`/{path}`"))(e)),
                }
                let dir = mkdir_all_in_root(self.root()?, parent, 0o755)
                    .map_err(errno_msg(format_args!("create parent of `/{path}`")))?;
                create_new_file(dir.as_fd(), name.as_os_str(), 0o644)
                    .map(drop)
                    .map_err(errno_msg(format_args!("create `/{path}` in the rootfs")))
            }
            Op::Symlink { target, path } => {
                let comps = components(path.as_bytes()).map_err(|r| format!("`{path}`: {r}"))?;
                let Some((name, parent)) = comps.split_last() else {
                    return Err(format!("`{path}`: not a file path"));
                };
                let dir = mkdir_all_in_root(self.root()?, parent, 0o755)
                    .map_err(errno_msg(format_args!("create parent of `/{path}`")))?;
                rfs::symlinkat(target.as_str(), &dir, name.as_os_str())
                    .map_err(errno_msg(format_args!("symlink `/{path}`")))
            }
            Op::Mount {
                fstype,
                target,
                flags,
                data,
                optional,
            } => {
                let (_fd, t) = self.target(target)?;
                match mount_raw(fstype, &t, fstype, *flags, data) {
                    Err(_) if *optional => Ok(()),
                    r => r.map_err(|e| format!("{e} (/{target})")),
                }
            }
            Op::Bind { source, target } => {
                let (_fd, t) = self.target(target)?;
                let flags = libc::MS_BIND | libc::MS_REC;
                mount_raw(&source.display().to_string(), &t, "", flags, "")
                    .map_err(|e| format!("{e} (/{target})"))?;
                // Bind mounts of host devices keep nosuid; everything stays private.
                Ok(())
            }
            Op::InjectFile { source, target } => {
                if let Err(e) = self.apply(&Op::MakeFile(target.clone())) {
                    eprintln!("strata: warning: RUN without an injected /{target}: {e}");
                    return Ok(());
                }
                let (_fd, t) = match self.target(target) {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("strata: warning: RUN without an injected /{target}: {e}");
                        return Ok(());
                    }
                };
                mount_raw(&source.display().to_string(), &t, "", libc::MS_BIND, "")
                    .map_err(|e| format!("{e} (/{target})"))
            }
            Op::Mask(path) => {
                let (fd, t) = match self.target(path) {
                    Ok(x) => x,
                    Err(_) => return Ok(()), // absent (or not resolvable): nothing to hide
                };
                let is_dir = rfs::fstat(&fd)
                    .map(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
                    .map_err(errno_msg(format_args!("stat /{path}")))?;
                if is_dir {
                    mount_raw("tmpfs", &t, "tmpfs", libc::MS_RDONLY, "size=0")
                } else {
                    mount_raw("/dev/null", &t, "", libc::MS_BIND, "")
                }
                .map_err(|e| format!("{e} (mask /{path})"))
            }
            Op::ReadOnlyBind(path) => {
                let (fd, t) = self.target(path)?;
                let st = rfs::fstatvfs(&fd).map_err(errno_msg(format_args!("statfs /{path}")))?;
                let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                for (st_flag, ms) in [
                    (rfs::StatVfsMountFlags::NOSUID, libc::MS_NOSUID),
                    (rfs::StatVfsMountFlags::NODEV, libc::MS_NODEV),
                    (rfs::StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
                    (rfs::StatVfsMountFlags::NOATIME, libc::MS_NOATIME),
                    (rfs::StatVfsMountFlags::NODIRATIME, libc::MS_NODIRATIME),
                    (rfs::StatVfsMountFlags::RELATIME, libc::MS_RELATIME),
                ] {
                    if st.f_flag.contains(st_flag) {
                        flags |= ms;
                    }
                }
                mount_raw("", &t, "", flags, "").map_err(|e| format!("{e} (read-only /{path})"))
            }
            Op::WriteSecret {
                name,
                data,
                mode,
                uid,
                gid,
            } => {
                if self.secrets.is_none() {
                    let d = self.secrets_dir.display().to_string();
                    mount_raw(
                        "tmpfs",
                        &d,
                        "tmpfs",
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        SECRETS_TMPFS,
                    )?;
                    self.secrets = Some(self.secrets_dir.clone());
                }
                let p = self.secrets_dir.join(name);
                let f = rfs::open(
                    &p,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(errno_msg("create a secret file"))?;
                let mut written = 0;
                while written < data.len() {
                    written += rustix::io::write(&f, &data[written..])
                        .map_err(errno_msg("write a secret file"))?;
                }
                rfs::fchown(
                    &f,
                    Some(rfs::Uid::from_raw(*uid)),
                    Some(rfs::Gid::from_raw(*gid)),
                )
                .map_err(errno_msg(format_args!(
                    "give a secret file to uid {uid}, gid {gid}"
                )))?;
                rfs::fchmod(&f, Mode::from_raw_mode(*mode & 0o7777))
                    .map_err(errno_msg("chmod a secret file"))
            }
            Op::ReadOnly(path) => {
                let Ok((_fd, t)) = self.target(path) else {
                    return Ok(());
                };
                mount_raw(&t, &t, "", libc::MS_BIND | libc::MS_REC, "")
                    .map_err(|e| format!("{e} (/{path})"))?;
                // Re-resolve: the new fd is on the bind mount just made.
                let (_fd2, t2) = self.target(path)?;
                let flags = libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC;
                mount_raw("", &t2, "", flags, "").map_err(|e| format!("{e} (read-only /{path})"))
            }
            Op::KeepTimes(paths) => {
                for path in paths {
                    let comps =
                        components(path.as_bytes()).map_err(|r| format!("`{path}`: {r}"))?;
                    let Ok(d) = open_in_root(self.root()?, &comps, OFlags::DIRECTORY) else {
                        continue; // not there (or not a directory): nothing to keep
                    };
                    let st = rfs::fstat(&d).map_err(errno_msg(format_args!("stat `/{path}`")))?;
                    self.kept.push((comps, super::snapshot::times_of(&st)));
                }
                Ok(())
            }
            Op::RestoreTimes => {
                for (comps, kept) in std::mem::take(&mut self.kept) {
                    let shown = super::confined::join(&comps);
                    let shown = shown.to_string_lossy();
                    let d = open_in_root(self.root()?, &comps, OFlags::DIRECTORY)
                        .map_err(errno_msg(format_args!("open `/{shown}`")))?;
                    let st = rfs::fstat(&d).map_err(errno_msg(format_args!("stat `/{shown}`")))?;
                    // Only what changed: setting the times of a directory nobody touched would
                    // copy it up into the layer.
                    if super::snapshot::times_of(&st).last_modification != kept.last_modification {
                        rfs::futimens(&d, &kept)
                            .map_err(errno_msg(format_args!("set times of `/{shown}`")))?;
                    }
                }
                Ok(())
            }
            Op::PivotRoot => {
                let root = self.root.take().ok_or("rootfs not mounted")?;
                rustix::process::fchdir(&root).map_err(errno_msg("chdir to the rootfs"))?;
                drop(root);
                // pivot_root(".", "."): the old root ends up stacked under the new one and is
                // detached right away, leaving no path back to the host.
                rustix::process::pivot_root(".", ".").map_err(errno_msg("pivot_root"))?;
                rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
                    .map_err(errno_msg("detach the old root"))?;
                rustix::process::chdir("/").map_err(errno_msg("chdir /"))
            }
            Op::SetHostname(h) => {
                rustix::system::sethostname(h.as_bytes()).map_err(errno_msg("sethostname"))
            }
            Op::SetDomainname(d) => {
                // SAFETY: a valid buffer and its length.
                if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
                    return Err(last_err("setdomainname"));
                }
                Ok(())
            }
            Op::Cover { source, target } => {
                let Ok((_fd, t)) = self.target(target) else {
                    return Ok(()); // absent: nothing to cover
                };
                mount_raw(&source.display().to_string(), &t, "", libc::MS_BIND, "")
                    .map_err(|e| format!("{e} (cover /{target})"))
            }
            Op::LoopbackUp => loopback_up(),
        }
    }
}

/// `ip link set lo up` without `ip`: SIOCGIFFLAGS / SIOCSIFFLAGS on a datagram socket.
fn loopback_up() -> Result<(), String> {
    // SAFETY: plain syscalls on a socket we own; `ifreq` is zero-initialised and the name fits.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(last_err("socket"));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let r = if libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            Err(last_err("SIOCGIFFLAGS lo"))
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(s, libc::SIOCSIFFLAGS as _, &req) < 0 {
                Err(last_err("SIOCSIFFLAGS lo"))
            } else {
                Ok(())
            }
        };
        libc::close(s);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::exec::Output;

    #[derive(Default)]
    struct Recorder(Vec<Op>);

    impl Sys for Recorder {
        fn apply(&mut self, op: &Op) -> Result<(), String> {
            self.0.push(op.clone());
            Ok(())
        }
    }

    fn spec(network: Network) -> RunSpec {
        RunSpec {
            lowers: vec![],
            upper: "/u".into(),
            work: "/w".into(),
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network,
            hostname: "strata".into(),
            cache_mounts: vec![("/host/cache".into(), "/root/.cache".into())],
            mounts: vec![],
            limits: Default::default(),
            output: Output::Stderr,
            trace: false,
        }
    }

    fn files() -> HostFiles {
        HostFiles {
            rootfs: "/t/root".into(),
            empty_lower: "/t/empty".into(),
            hosts: "/t/hosts".into(),
            resolv: "/t/resolv.conf".into(),
            hostname: "/t/hostname".into(),
            secrets: "/t/secrets".into(),
            cpu_online: None,
            domainname: None,
            proc_covers: Vec::new(),
        }
    }

    fn recorded(s: &RunSpec) -> Vec<Op> {
        let mut r = Recorder::default();
        for op in plan(s, &files(), None) {
            r.apply(&op).unwrap();
        }
        r.0
    }

    #[test]
    fn a_verify_variation_covers_the_cpu_list_after_sysfs_and_sets_the_domain() {
        let plain = recorded(&spec(Network::None));
        assert!(!plain
            .iter()
            .any(|o| matches!(o, Op::Cover { .. } | Op::SetDomainname(_))));
        let mut f = files();
        f.cpu_online = Some("/t/cpu-online".into());
        f.domainname = Some("verify.invalid".into());
        let ops = plan(&spec(Network::None), &f, None);
        let at = |want: &dyn Fn(&Op) -> bool| ops.iter().position(want).unwrap();
        let sysfs = at(&|o| {
            matches!(
                o,
                Op::Mount {
                    fstype: "sysfs",
                    ..
                }
            )
        });
        let cover = at(&|o| {
            *o == Op::Cover {
                source: "/t/cpu-online".into(),
                target: "sys/devices/system/cpu/online".into(),
            }
        });
        let pivot = at(&|o| *o == Op::PivotRoot);
        assert!(sysfs < cover && cover < pivot, "{ops:?}");
        let host = at(&|o| matches!(o, Op::SetHostname(_)));
        assert_eq!(ops[host + 1], Op::SetDomainname("verify.invalid".into()));
    }

    #[test]
    fn the_kernel_variation_covers_proc_version_files_after_proc_sys_is_read_only() {
        let mut f = files();
        f.proc_covers = vec![("/t/osrelease".into(), "proc/sys/kernel/osrelease".into())];
        let ops = plan(&spec(Network::None), &f, None);
        let at = |want: &dyn Fn(&Op) -> bool| ops.iter().position(want).unwrap();
        let ro = at(&|o| *o == Op::ReadOnly("proc/sys".into()));
        let cover = at(&|o| {
            *o == Op::Cover {
                source: "/t/osrelease".into(),
                target: "proc/sys/kernel/osrelease".into(),
            }
        });
        let pivot = at(&|o| *o == Op::PivotRoot);
        assert!(ro < cover && cover < pivot, "{ops:?}");
    }

    #[test]
    fn scratch_uses_the_empty_lower_and_network_none_brings_up_lo() {
        let ops = recorded(&spec(Network::None));
        assert!(
            matches!(&ops[0], Op::Overlay { lowers, .. } if lowers == &[PathBuf::from("/t/empty")])
        );
        assert_eq!(ops.last(), Some(&Op::LoopbackUp));
        let host = recorded(&spec(Network::Host));
        assert!(!host.contains(&Op::LoopbackUp));
    }

    #[test]
    fn every_mount_happens_before_pivot_and_targets_are_relative() {
        let ops = recorded(&spec(Network::None));
        let pivot = ops.iter().position(|o| *o == Op::PivotRoot).unwrap();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Mount { target, .. } | Op::Bind { target, .. } => {
                    assert!(i < pivot);
                    assert!(!target.starts_with('/'), "{target}");
                }
                _ => {}
            }
        }
        assert!(ops.contains(&Op::Bind {
            source: "/host/cache".into(),
            target: "root/.cache".into()
        }));
        assert!(ops.contains(&Op::InjectFile {
            source: "/t/hosts".into(),
            target: "etc/hosts".into()
        }));
        assert!(ops.contains(&Op::SetHostname("strata".into())));
    }

    #[test]
    fn directory_times_are_kept_around_everything_the_setup_changes() {
        let ops = recorded(&spec(Network::None));
        assert_eq!(
            ops[1],
            Op::KeepTimes(vec!["".into(), "etc".into(), "root".into()]),
            "right after the overlay, with the parents of the cache mount /root/.cache"
        );
        let restore = ops.iter().position(|o| *o == Op::RestoreTimes).unwrap();
        assert_eq!(ops[restore + 1], Op::PivotRoot);
        for op in &ops[2..restore] {
            assert!(!matches!(op, Op::KeepTimes(_) | Op::RestoreTimes), "{op:?}");
        }
    }

    #[test]
    fn mount_points_are_created_before_they_are_mounted_on() {
        let ops = recorded(&spec(Network::None));
        for (i, op) in ops.iter().enumerate() {
            if let Op::Mount { target, .. } | Op::Bind { target, .. } = op {
                let made = ops[..i]
                    .iter()
                    .any(|o| matches!(o, Op::MakeDir(p) | Op::MakeFile(p) if p == target));
                assert!(made, "{target} mounted on before it was created");
            }
        }
    }

    #[test]
    fn run_mounts_are_planned_parents_first_read_only_unless_rw() {
        use crate::sandbox::exec::Mount;
        let mut s = spec(Network::None);
        let m = |target: &str, kind: MountKind| Mount {
            target: target.into(),
            kind,
        };
        s.mounts = vec![
            m(
                "/src/sub",
                MountKind::Bind {
                    source: "/h/sub".into(),
                    dir: false,
                    rw: true,
                },
            ),
            m(
                "/src",
                MountKind::Bind {
                    source: "/h/src".into(),
                    dir: true,
                    rw: false,
                },
            ),
            m("/tmp/t", MountKind::Tmpfs { size: Some(4096) }),
            m(
                "/run/secrets/tok",
                MountKind::Secret {
                    data: b"s3cret".to_vec(),
                    mode: 0o400,
                    uid: 1,
                    gid: 2,
                },
            ),
        ];
        let ops = recorded(&s);
        let at = |op: &Op| {
            ops.iter()
                .position(|o| o == op)
                .unwrap_or_else(|| panic!("{op:?} not in {ops:?}"))
        };
        let src = at(&Op::Bind {
            source: "/h/src".into(),
            target: "src".into(),
        });
        let sub = at(&Op::Bind {
            source: "/h/sub".into(),
            target: "src/sub".into(),
        });
        assert!(src < sub, "the parent mount first");
        assert!(at(&Op::MakeDir("src".into())) < src);
        assert!(at(&Op::MakeFile("src/sub".into())) < sub);
        assert!(at(&Op::ReadOnlyBind("src".into())) > src);
        assert!(!ops.contains(&Op::ReadOnlyBind("src/sub".into())), "rw");
        assert!(ops.contains(&Op::Mount {
            fstype: "tmpfs",
            target: "tmp/t".into(),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: "mode=1777,size=4096".into(),
            optional: false,
        }));
        let secret = ops
            .iter()
            .position(|o| matches!(o, Op::WriteSecret { data, mode: 0o400, uid: 1, gid: 2, .. } if data == b"s3cret"))
            .unwrap();
        let bind = at(&Op::Bind {
            source: "/t/secrets/secret-3".into(),
            target: "run/secrets/tok".into(),
        });
        assert!(secret < bind && bind < at(&Op::ReadOnlyBind("run/secrets/tok".into())));
        let Op::KeepTimes(kept) = &ops[1] else {
            panic!()
        };
        for p in ["src", "tmp", "run", "run/secrets"] {
            assert!(kept.contains(&p.to_string()), "{p} in {kept:?}");
        }
        let pivot = at(&Op::PivotRoot);
        assert!(ops[..pivot]
            .iter()
            .any(|o| matches!(o, Op::ReadOnlyBind(p) if p == "run/secrets/tok")));
    }
}
