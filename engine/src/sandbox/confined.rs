//! Path resolution confined to a root directory fd.
//!
//! Every lookup goes through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: `..` stops at the
//! root, absolute symlinks resolve inside it and `/proc/self/fd/N` tricks are refused by the
//! kernel. Creation (`mkdirat`, `mknodat`, ...) only ever happens relative to a directory fd that
//! was obtained this way, on a final component that is never followed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

// Splits a layer or container path into its components: leading `/` and `./` are dropped
// (tar files carry both), empty and `.` components are skipped, and `..` is refused — a
// well-formed layer never needs it, and refusing is clearer than silently clamping. (Defined
// with the layer reader, which checks every entry with it.)
pub(crate) use crate::layer::path_components as components;

pub(crate) fn join(comps: &[OsString]) -> OsString {
    if comps.is_empty() {
        return OsString::from(".");
    }
    let mut s = OsString::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            s.push("/");
        }
        s.push(c);
    }
    s
}

/// Opens `comps` (following symlinks, inside the root only).
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    comps: &[OsString],
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    open_resolved(root, comps, flags, RESOLVE)
}

/// Opens `comps` inside the root through no symlink at all (`ELOOP` if one is on the way).
pub(crate) fn open_in_root_no_symlinks(
    root: BorrowedFd<'_>,
    comps: &[OsString],
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    open_resolved(root, comps, flags, RESOLVE.union(ResolveFlags::NO_SYMLINKS))
}

fn open_resolved(
    root: BorrowedFd<'_>,
    comps: &[OsString],
    flags: OFlags,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let p = join(comps);
    loop {
        match rfs::openat2(root, &p, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
            // openat2 returns EAGAIN when a concurrent rename raced the lookup; retry.
            Err(Errno::AGAIN) => continue,
            r => return r,
        }
    }
}

/// `mkdir -p` inside the root; returns a directory fd for the last component.
pub(crate) fn mkdir_all_in_root(
    root: BorrowedFd<'_>,
    comps: &[OsString],
    mode: u32,
) -> Result<OwnedFd, Errno> {
    let dir_flags = OFlags::DIRECTORY | OFlags::RDONLY;
    // Usually the directory is there already: one in-root open of the whole path.
    match open_in_root(root, comps, dir_flags) {
        Err(Errno::NOENT) => {}
        r => return r,
    }
    let mut cur = open_in_root(root, &[], dir_flags)?;
    for i in 0..comps.len() {
        cur = match open_in_root(root, &comps[..=i], dir_flags) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rfs::mkdirat(&cur, comps[i].as_os_str(), Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                open_in_root(root, &comps[..=i], dir_flags)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// Creates the regular file `name` in `dir` for writing: fails on anything already there
/// (`EEXIST`), and never follows a symlink in its place.
pub(crate) fn create_new_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
}

/// Removes `name` in `dir` and, if it is a directory, everything below it — never following
/// a symlink.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Directory {
        return rfs::unlinkat(dir, name, AtFlags::empty());
    }
    let fd = rfs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in names {
        remove_all_at(fd.as_fd(), &n)?;
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_strip_roots_and_refuse_dotdot() {
        let c = |p: &str| components(p.as_bytes());
        assert_eq!(c("/etc//x/./y/").unwrap(), ["etc", "x", "y"]);
        assert_eq!(c("./a").unwrap(), ["a"]);
        assert!(c(".").unwrap().is_empty());
        assert!(c("a/../b").is_err());
        assert!(c("../escape").is_err());
    }
}
