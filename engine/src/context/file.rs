//! Reading the Dockerfile and `.dockerignore` of a build context without leaving it.
//!
//! A context is untrusted input (a checked-out repository, a pull request). If its
//! `Dockerfile` or `.dockerignore` were a symlink to `/etc/shadow` and strata followed it, the
//! parse error would print the host file's first line into a CI log (issue 18). So a file that
//! lies in the context is opened *beneath* the context root: symlinks are followed as long as
//! they stay inside (as for COPY sources, an absolute one naming a path in the context is
//! fine), and one that leads out is refused, whatever its target. The kernel does the
//! confinement (`openat2(RESOLVE_BENEATH)`), so a symlink swapped in between a check and the
//! open cannot escape either. A file in the context must be a regular file: a FIFO would block
//! the build and a device (`/dev/zero`) would never end.
//!
//! A file named explicitly outside the context (`-f /elsewhere/Dockerfile`) is the user's own
//! choice and is read as given, within the same size limit.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Reading a context file failed.
#[derive(Debug, thiserror::Error)]
pub enum ContextFileError {
    /// A symlink on the way leads out of the build context.
    #[error("{what} `{}` is a symlink that points outside the build context", path.display())]
    Outside { what: &'static str, path: PathBuf },
    /// Not a regular file (a directory, FIFO, socket or device).
    #[error("{what} `{}` is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        what: &'static str,
        path: PathBuf,
        kind: &'static str,
    },
    /// Larger than the limit.
    #[error("{what} `{}` is larger than {limit} bytes", path.display())]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        limit: u64,
    },
    #[error("cannot read {what} `{}`: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ContextFileError {
    /// A suggestion for the user.
    pub fn hint(&self) -> String {
        match self {
            ContextFileError::Outside { .. } => "the Dockerfile and .dockerignore of a build \
                context are read inside the context only (a hostile context must not make \
                strata read host files); copy the file into the context, or name a file \
                outside the context explicitly with -f"
                .to_string(),
            ContextFileError::NotRegular { .. } => {
                "point -f at a regular file (reading a Dockerfile from stdin is not supported yet)"
                    .to_string()
            }
            ContextFileError::TooLarge { .. } => "a Dockerfile is text of at most a few hundred \
                kilobytes; check that -f names the right file"
                .to_string(),
            ContextFileError::Io { .. } => "check that the file exists and is readable".to_string(),
        }
    }
}

/// Reads `path` (`what` names it in errors: "the Dockerfile", ".dockerignore"), at most `limit`
/// bytes. When `path` lies in `context` (a directory), it is resolved beneath the context root
/// (module docs). `Ok(None)` if it does not exist.
pub fn read_context_file(
    context: &Path,
    path: &Path,
    what: &'static str,
    limit: u64,
) -> Result<Option<Vec<u8>>, ContextFileError> {
    let io_err = |source: io::Error| ContextFileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let loc = in_context(context, path).map_err(io_err)?;
    let inside = loc.is_some();
    let fd: rustix::fd::OwnedFd = match loc {
        Some((root, rel)) => match open_beneath(&root, &rel, path, what)? {
            Some(fd) => fd,
            None => return Ok(None),
        },
        None => match std::fs::File::open(path) {
            Ok(f) => f.into(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        },
    };
    let st = rfs::fstat(&fd).map_err(|e| io_err(e.into()))?;
    let kind = rfs::FileType::from_raw_mode(st.st_mode);
    let kind_name = match kind {
        rfs::FileType::RegularFile => None,
        rfs::FileType::Directory => Some("directory"),
        rfs::FileType::Fifo => Some("FIFO"),
        rfs::FileType::Socket => Some("socket"),
        rfs::FileType::CharacterDevice => Some("character device"),
        rfs::FileType::BlockDevice => Some("block device"),
        _ => Some("special file"),
    };
    // Outside the context, a pipe (`-f <(generate)`) or a device is the user's choice; the size
    // limit still ends `/dev/zero`. A directory is never a Dockerfile.
    if let Some(kind) = kind_name.filter(|k| inside || *k == "directory") {
        return Err(ContextFileError::NotRegular {
            what,
            path: path.to_path_buf(),
            kind,
        });
    }
    if kind_name.is_none() && st.st_size as u64 > limit {
        return Err(ContextFileError::TooLarge {
            what,
            path: path.to_path_buf(),
            limit,
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(ContextFileError::TooLarge {
            what,
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some(bytes))
}

/// Where `path` lies in `context`: the context's canonical root and the rest of the path
/// relative to it, or `None` if it is outside. Compared lexically (`.` and `..` folded) with
/// the context as given and as canonicalised, so `ctx/Dockerfile` and `/abs/ctx/Dockerfile`
/// are both inside whatever symlinks they name; then by its resolved directory.
fn in_context(context: &Path, path: &Path) -> io::Result<Option<(PathBuf, PathBuf)>> {
    let cwd = std::env::current_dir()?;
    let canon = std::fs::canonicalize(context)?;
    let abs = lexical(&cwd.join(path));
    for root in [lexical(&cwd.join(context)), canon.clone()] {
        if let Ok(rel) = abs.strip_prefix(&root) {
            return Ok(Some((canon, rel.to_path_buf())));
        }
    }
    // The context named through a symlinked path (`/tmp/link/ctx` for `/real/ctx`) and the
    // file through the same one: its directory is in the context once resolved.
    if let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) {
        if let Ok(dir) = std::fs::canonicalize(dir) {
            if let Ok(rel) = dir.strip_prefix(&canon) {
                return Ok(Some((canon.clone(), rel.join(name))));
            }
        }
    }
    Ok(None)
}

/// `path` with `.` dropped and `..` taking off the component before it (never above `/`).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Opens `rel` beneath `root`; `None` if it does not exist.
fn open_beneath(
    root: &Path,
    rel: &Path,
    path: &Path,
    what: &'static str,
) -> Result<Option<rustix::fd::OwnedFd>, ContextFileError> {
    let io_err = |e: Errno| ContextFileError::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    };
    let outside = || ContextFileError::Outside {
        what,
        path: path.to_path_buf(),
    };
    let dir =
        rfs::open(root, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(io_err)?;
    // Non-blocking: opening a FIFO for reading would wait for a writer. (Reads of a regular
    // file ignore the flag; anything else is refused before it is read.)
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let open = |rel: &Path, resolve: ResolveFlags| loop {
        match rfs::openat2(&dir, rel, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) => continue,
            r => return r,
        }
    };
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    match open(rel, beneath) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        // An absolute symlink, or `..` above the root: `RESOLVE_BENEATH` refuses both. An
        // absolute symlink may still name a path in the context (as COPY allows): resolve it
        // on the host, and open the result, symlink-free, beneath the root once more.
        Err(Errno::XDEV) => {
            let real = match std::fs::canonicalize(root.join(rel)) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(outside()),
                Err(e) => return Err(io_err(Errno::from_io_error(&e).unwrap_or(Errno::IO))),
            };
            let Ok(inner) = real.strip_prefix(root) else {
                return Err(outside());
            };
            let inner = if inner.as_os_str().is_empty() {
                Path::new(".")
            } else {
                inner
            };
            match open(inner, beneath | ResolveFlags::NO_SYMLINKS) {
                Ok(fd) => Ok(Some(fd)),
                // Swapped for a symlink since: refused rather than followed.
                Err(Errno::LOOP | Errno::XDEV) => Err(outside()),
                Err(Errno::NOENT) => Ok(None),
                Err(e) => Err(io_err(e)),
            }
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const LIMIT: u64 = 1 << 20;

    fn read(ctx: &Path, p: &Path) -> Result<Option<Vec<u8>>, ContextFileError> {
        read_context_file(ctx, p, "the Dockerfile", LIMIT)
    }

    /// Issue 18: `ln -s /etc/passwd ctx/Dockerfile` made strata read the host file.
    #[test]
    fn a_symlink_out_of_the_context_is_refused_and_one_inside_followed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), "root:x:0:0\n").unwrap();
        std::fs::write(ctx.join("sub/real"), "FROM scratch\n").unwrap();
        symlink("/etc/passwd", ctx.join("abs")).unwrap();
        symlink("../secret", ctx.join("rel")).unwrap();
        symlink(dir.path().join("secret"), ctx.join("abs_outer")).unwrap();
        symlink("../..", ctx.join("sub/up2")).unwrap();
        symlink("sub/real", ctx.join("inside")).unwrap();
        symlink(ctx.join("sub/real"), ctx.join("abs_inside")).unwrap();
        for name in ["abs", "rel", "abs_outer", "sub/up2/secret", "../ctx/rel"] {
            let e = read(&ctx, &ctx.join(name)).unwrap_err();
            assert!(
                matches!(e, ContextFileError::Outside { .. }),
                "{name}: {e:?}"
            );
            assert!(!e.to_string().contains("root:x"), "{e}");
        }
        for name in ["inside", "abs_inside", "sub/real", "sub/../sub/real"] {
            assert_eq!(
                read(&ctx, &ctx.join(name)).unwrap().unwrap(),
                b"FROM scratch\n",
                "{name}"
            );
        }
        assert!(read(&ctx, &ctx.join("missing")).unwrap().is_none());
        // Named explicitly outside the context: read as given.
        assert_eq!(
            read(&ctx, &dir.path().join("secret")).unwrap().unwrap(),
            b"root:x:0:0\n"
        );
    }

    /// Issue 18: `-f /dev/zero` never returned. In the context only regular files are read;
    /// outside, the size limit ends an endless device.
    #[test]
    fn devices_fifos_and_oversized_files_fail_fast() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        let fifo = ctx.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rfs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = read(ctx, &fifo).unwrap_err();
        assert!(
            matches!(e, ContextFileError::NotRegular { kind: "FIFO", .. }),
            "{e:?}"
        );
        symlink("/dev/zero", ctx.join("zero")).unwrap();
        assert!(matches!(
            read(ctx, &ctx.join("zero")).unwrap_err(),
            ContextFileError::Outside { .. }
        ));
        let e = read(ctx, Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(e, ContextFileError::TooLarge { .. }), "{e:?}");
        std::fs::write(ctx.join("big"), vec![b'#'; LIMIT as usize + 1]).unwrap();
        let e = read(ctx, &ctx.join("big")).unwrap_err();
        assert!(matches!(e, ContextFileError::TooLarge { .. }), "{e:?}");
        let e = read(ctx, ctx).unwrap_err();
        assert!(matches!(e, ContextFileError::NotRegular { .. }), "{e:?}");
    }
}
