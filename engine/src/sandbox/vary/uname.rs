//! The kernel version string of runs 2+ ([`super::Variation::kernel`]): `uname(2)` of the RUN's
//! processes is answered by pid 1 (a seccomp user notification, served beside the read-set
//! tracer, `sandbox::trace`), and `/proc/version`, `/proc/sys/kernel/osrelease` and
//! `/proc/sys/kernel/version` are covered with the same strings.
//!
//! Why not `personality(UNAME26)`, which is inherited across exec and costs nothing: the kernel
//! then reports `2.6.<60 + minor>`, and glibc before 2.36 checks the kernel version of static
//! binaries at start (`FATAL: kernel too old` below its `--enable-kernel`, 3.2 on x86_64). The
//! static `ldconfig` of Debian 11 or Ubuntu 22.04 would fail inside `apt-get install`: a
//! correct build would break. So the varied release keeps the kernel's own numeric version
//! (`6.8.0`) and changes only what follows it (`6.8.0-verify-run2`), which no version check
//! reads; `uname -v` is replaced whole.
//!
//! Not covered (README, `strata verify`): i386 and x32 processes (their `uname` is not
//! notified), a process with a `linux32` or `UNAME26` personality or in a UTS namespace of its
//! own (answered by the kernel), and the version note of the vDSO (a number, the same in every
//! run).

use std::os::fd::AsRawFd;

/// The `uname` strings a varied RUN sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kernel {
    pub(crate) release: String,
    pub(crate) version: String,
}

/// `utsname` field length (`__NEW_UTS_LEN + 1`).
const FIELD: usize = 65;

impl Kernel {
    /// The running kernel's strings with the variation's `tag`.
    pub(crate) fn new(tag: &str) -> Result<Kernel, String> {
        let (release, _) = real()?;
        Ok(Kernel::from_release(&release, tag))
    }

    /// `release`'s numeric version (at most `x.y.z`, as glibc reads it) followed by `-tag`.
    fn from_release(release: &str, tag: &str) -> Kernel {
        let mut dots = 0;
        let end = release
            .char_indices()
            .find(|&(_, c)| {
                if c == '.' {
                    dots += 1;
                }
                !(c.is_ascii_digit() || c == '.') || dots >= 3
            })
            .map_or(release.len(), |(i, _)| i);
        let numeric = release[..end].trim_end_matches('.');
        let mut r = format!("{numeric}-{tag}");
        r.truncate(FIELD - 1);
        let mut v = format!("#1 SMP {tag}");
        v.truncate(FIELD - 1);
        Kernel {
            release: r,
            version: v,
        }
    }

    /// `/proc/version`'s text with this release and version in place of the real ones.
    pub(crate) fn proc_version(
        &self,
        text: &str,
        real_release: &str,
        real_version: &str,
    ) -> String {
        let mut t = text.replacen(real_release, &self.release, 1);
        if let Some(at) = t.rfind(real_version) {
            t.replace_range(at..at + real_version.len(), &self.version);
        }
        t
    }
}

/// The running kernel's release and version (`uname -r`, `uname -v`).
pub(crate) fn real() -> Result<(String, String), String> {
    let u = sys_uname()?;
    Ok((field_str(&u.release), field_str(&u.version)))
}

fn sys_uname() -> Result<libc::utsname, String> {
    // SAFETY: uname into a zeroed struct of the right type.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return Err(format!("uname: {}", std::io::Error::last_os_error()));
        }
        Ok(u)
    }
}

fn field_str(f: &[libc::c_char; FIELD]) -> String {
    let bytes: Vec<u8> = f
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn set_field(f: &mut [libc::c_char; FIELD], s: &str) {
    f.fill(0);
    for (d, b) in f.iter_mut().zip(s.bytes().take(FIELD - 1)) {
        *d = b as libc::c_char;
    }
}

/// `PER_LINUX32` (`setarch i686`, `linux32`: `uname -m` says `i686`) and `UNAME26` (the
/// release says `2.6.x`): the kernel's answer then depends on the caller's personality.
const PER_LINUX32: u32 = 0x0008;
const UNAME26: u32 = 0x0002_0000;

/// Whether the kernel would answer `uname` for a process of this personality as for pid 1
/// (`ADDR_NO_RANDOMIZE` and the like change nothing there).
fn plain_personality(p: u32) -> bool {
    p & 0xff != PER_LINUX32 && p & UNAME26 == 0
}

/// Answers the `uname(buf)` of thread `tid` (notification `id` on `listener`): writes this
/// kernel's strings, with the host and domain names of pid 1's UTS namespace, at `buf`. `false`:
/// not answered (another UTS namespace, a personality that changes what `uname` says, or the
/// memory could not be written); the caller lets the syscall run unchanged, so the kernel's own
/// answer (or `EFAULT`) is what the process gets.
pub(crate) fn answer(k: &Kernel, listener: i32, id: u64, tid: u32, buf: u64) -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let theirs = ns(&format!("/proc/{tid}/ns/uts"));
    if theirs.is_none() || theirs != ns("/proc/self/ns/uts") {
        return false;
    }
    let personality = std::fs::read_to_string(format!("/proc/{tid}/personality"))
        .ok()
        .and_then(|t| u32::from_str_radix(t.trim(), 16).ok());
    if !personality.is_some_and(plain_personality) {
        return false;
    }
    let Ok(mut u) = sys_uname() else {
        return false;
    };
    set_field(&mut u.release, &k.release);
    set_field(&mut u.version, &k.version);
    let Ok(mem) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{tid}/mem"))
    else {
        return false;
    };
    // The thread (and so the pid the file was opened by) is still the one that asked: the id
    // is valid only while it waits for the answer.
    // SAFETY: an ioctl on the listener with a valid pointer to the id.
    let valid = unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
            &id as *const u64,
        )
    } == 0;
    if !valid {
        return false;
    }
    let size = std::mem::size_of::<libc::utsname>();
    // SAFETY: `u` is a live struct of `size` bytes; the write goes to the other process.
    let n = unsafe {
        libc::pwrite(
            mem.as_raw_fd(),
            (&u as *const libc::utsname).cast(),
            size,
            buf as libc::off_t,
        )
    };
    n == size as isize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_keeps_the_numeric_version_glibc_checks() {
        let k = Kernel::from_release("6.18.44-fc-v1045", "verify-run2");
        assert_eq!(k.release, "6.18.44-verify-run2");
        assert_eq!(k.version, "#1 SMP verify-run2");
        assert_eq!(
            Kernel::from_release("5.15.0-91-generic", "t").release,
            "5.15.0-t"
        );
        assert_eq!(Kernel::from_release("6.8", "t").release, "6.8-t");
        assert_eq!(Kernel::from_release("4.19.1.2", "t").release, "4.19.1-t");
        let long = "x".repeat(100);
        assert_eq!(Kernel::from_release("6.1", &long).release.len(), FIELD - 1);
    }

    #[test]
    fn only_plain_personalities_are_answered() {
        assert!(plain_personality(0));
        assert!(plain_personality(0x0040000)); // ADDR_NO_RANDOMIZE (verify's own)
        assert!(!plain_personality(PER_LINUX32));
        assert!(!plain_personality(UNAME26));
        assert!(!plain_personality(PER_LINUX32 | 0x0040000));
    }

    #[test]
    fn proc_version_gets_the_varied_strings() {
        let k = Kernel::from_release("6.1.0-13-amd64", "verify-run2");
        let text = "Linux version 6.1.0-13-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)\n";
        assert_eq!(
            k.proc_version(
                text,
                "6.1.0-13-amd64",
                "#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)"
            ),
            "Linux version 6.1.0-verify-run2 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP verify-run2\n"
        );
    }
}
