//! Capturing a RUN step's output: the overlayfs upper dir → layer entries.
//!
//! The upper dir is walked with `*at` syscalls and `O_NOFOLLOW`, one directory fd at a time,
//! in canonical order, never following symlinks. Overlay's on-disk forms are translated to
//! the OCI layer form (`docs/layer-format.md`):
//!
//! - a whiteout (character device 0/0) `x` → a `.wh.x` entry (empty file, mode 0, 0:0);
//! - an opaque directory (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y` under
//!   `userxattr`) → the directory plus `.wh..wh..opq` — unless no lower has a directory at that
//!   path: the kernel marks some brand-new directories opaque, and those markers would only
//!   churn layers;
//! - hard links inside the upper (same `(dev, ino)`): the first path in canonical order holds
//!   the data, the others are hard-link entries;
//! - sockets are dropped; xattrs other than [`KEPT_XATTRS`] are dropped.
//!
//! Paths in [`CaptureOptions::exclude`] (files injected for the RUN, mount points) are dropped
//! with their subtree when no lower has them; so is a directory that only holds such paths and
//! is either new or unchanged from the lowers (buildah #5592).
//!
//! The cost is proportional to the upper dir: the lowers are only consulted for specific paths
//! (opaque directories and excluded paths).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use crate::layer::whiteout::{self, OPAQUE_XATTRS};
use crate::layer::{path_cmp, Content, Entry, EntryKind, KEPT_XATTRS};
/// Overlay features strata does not enable; an upper dir using them is refused.
const UNSUPPORTED_OVERLAY_XATTRS: [&str; 3] = ["redirect", "metacopy", "whiteout"];

/// What to capture.
#[derive(Debug, Clone, Copy)]
pub struct CaptureOptions<'a> {
    /// The overlay upper dir after the RUN (the mount must be gone or quiesced).
    pub upper: &'a Path,
    /// The lower dirs, bottom first, in overlay form (whiteouts are character devices 0/0,
    /// opaque directories carry `trusted.overlay.opaque=y`).
    pub lowers: &'a [PathBuf],
    /// SOURCE_DATE_EPOCH: the mtime of every entry.
    pub mtime: u64,
    /// Paths (relative or absolute inside the container, e.g. `etc/hosts`, `/proc`) injected
    /// for the RUN. One that exists in the upper but in no lower is dropped with its subtree.
    pub exclude: &'a [String],
    /// Rootless: host ids → container ids. `None`: ids are taken as they are.
    pub id_map: Option<&'a IdMap>,
}

/// A user-namespace id mapping, as in `/proc/<pid>/uid_map`: `(container, host, len)` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<(u32, u32, u32)>,
    pub gids: Vec<(u32, u32, u32)>,
}

impl IdMap {
    /// The container id of host id `host` through `ranges`, if mapped.
    fn to_container(ranges: &[(u32, u32, u32)], host: u32) -> Option<u32> {
        ranges.iter().find_map(|&(container, start, len)| {
            let off = host.checked_sub(start)?;
            (off < len).then(|| container.checked_add(off)).flatten()
        })
    }
}

/// Errors of [`capture`]. Each names the host path or layer path it is about.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("`{}`: the name is not UTF-8, which layer paths must be", path.display())]
    NonUtf8 { path: PathBuf },
    #[error("`{path}`: names starting with `.wh.` are reserved for whiteouts and cannot be stored in a layer")]
    ReservedName { path: String },
    #[error("`{path}` carries the overlayfs xattr `{xattr}`: strata mounts overlay without redirect_dir, metacopy or xattr whiteouts, so this upper dir cannot be captured")]
    UnsupportedOverlay { path: String, xattr: String },
    #[error("`{path}`: host {kind} {id} is not mapped into the container")]
    UnmappedId {
        path: String,
        kind: &'static str,
        id: u32,
    },
}

/// Walks the upper dir and returns the layer entries, in canonical order but not yet
/// canonicalised (the caller runs [`crate::layer::canonicalize`]).
pub fn capture(opts: &CaptureOptions) -> Result<Vec<Entry>, CaptureError> {
    let upper = open_dir(CWD, opts.upper, false).map_err(|e| io_err("opening", opts.upper, e))?;
    let lowers = opts
        .lowers
        .iter()
        .map(|l| open_dir(CWD, l, false).map_err(|e| io_err("opening lower", l, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut exclude = HashSet::new();
    let mut exclude_ancestors = HashSet::new();
    for x in opts.exclude {
        let x = x.trim_matches('/');
        if x.is_empty() {
            continue;
        }
        let mut p = x;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            exclude_ancestors.insert(p.to_string());
        }
        exclude.insert(x.to_string());
    }
    let mut w = Walker {
        opts,
        lowers,
        exclude,
        exclude_ancestors,
        entries: Vec::new(),
        links: HashMap::new(),
    };
    w.walk_dir(upper.as_fd(), "")?;
    let Walker {
        mut entries, links, ..
    } = w;
    for (_, mut idxs) in links {
        if idxs.len() < 2 {
            continue;
        }
        idxs.sort_by(|&a, &b| path_cmp(&entries[a].path, &entries[b].path));
        let target = entries[idxs[0]].path.clone();
        for &i in &idxs[1..] {
            entries[i].kind = EntryKind::HardLink {
                target: target.clone(),
            };
            entries[i].xattrs.clear();
        }
    }
    Ok(entries)
}

struct Walker<'a> {
    opts: &'a CaptureOptions<'a>,
    lowers: Vec<OwnedFd>,
    exclude: HashSet<String>,
    exclude_ancestors: HashSet<String>,
    entries: Vec<Entry>,
    /// Regular files with `st_nlink > 1`, by `(dev, ino)`: indexes into `entries`.
    links: HashMap<(u64, u64), Vec<usize>>,
}

/// What walking one directory produced.
#[derive(Default)]
struct DirSummary {
    /// Entries emitted for direct children (subtrees count once).
    emitted: usize,
    /// Whether a child was dropped as excluded (or as a directory holding only excluded paths).
    dropped: bool,
}

impl Walker<'_> {
    fn host_path(&self, rel: &str) -> PathBuf {
        self.opts.upper.join(rel)
    }

    fn walk_dir(&mut self, dir: BorrowedFd<'_>, rel: &str) -> Result<DirSummary, CaptureError> {
        let mut names = Vec::new();
        let reader =
            rfs::Dir::read_from(dir).map_err(|e| io_err("reading", self.host_path(rel), e))?;
        for ent in reader {
            let ent = ent.map_err(|e| io_err("reading", self.host_path(rel), e))?;
            let raw = ent.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            match std::str::from_utf8(raw) {
                Ok(s) => names.push(s.to_string()),
                Err(_) => {
                    return Err(CaptureError::NonUtf8 {
                        path: self.host_path(rel).join(OsStr::from_bytes(raw)),
                    })
                }
            }
        }
        // Stat every child first: a whiteout sorts by its layer name (`.wh.x`), not by `x`.
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if whiteout::is_reserved(name.as_bytes()) {
                return Err(CaptureError::ReservedName { path });
            }
            let st = rfs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("stat", self.host_path(&path), e))?;
            let layer_name = if is_whiteout(&st) {
                whiteout::name_for(&name)
            } else {
                name.clone()
            };
            children.push((layer_name, name, path, st));
        }
        children.sort_by(|a, b| path_cmp(&a.0, &b.0));

        let mut summary = DirSummary::default();
        for (layer_name, name, path, st) in children {
            if is_whiteout(&st) {
                let wh = if rel.is_empty() {
                    layer_name
                } else {
                    format!("{rel}/{layer_name}")
                };
                self.entries.push(self.marker(wh));
                summary.emitted += 1;
                continue;
            }
            if self.exclude.contains(&path) && self.lower_stat(&path)?.is_none() {
                summary.dropped = true;
                continue;
            }
            let ft = FileType::from_raw_mode(st.st_mode);
            let kind = match ft {
                FileType::Directory => {
                    let fd = open_dir(dir, name.as_str(), true)
                        .map_err(|e| io_err("opening", self.host_path(&path), e))?;
                    let (xattrs, opaque) = self.read_xattrs(fd.as_fd(), &path)?;
                    let idx = self.entries.len();
                    let entry = self.entry(&path, &st, EntryKind::Dir, xattrs)?;
                    self.entries.push(entry);
                    // Only a directory that hides a lower directory is really opaque; the kernel
                    // also marks some brand-new directories (spurious markers).
                    let marker = opaque
                        && self
                            .lower_stat(&path)?
                            .is_some_and(|l| FileType::from_raw_mode(l.st_mode).is_dir());
                    if marker {
                        self.entries
                            .push(self.marker(format!("{path}/{}", whiteout::OPAQUE)));
                    }
                    let sub = self.walk_dir(fd.as_fd(), &path)?;
                    if sub.dropped
                        && sub.emitted == 0
                        && !marker
                        && self.exclude_ancestors.contains(&path)
                        && self.only_holds_injected(&path, &st)?
                    {
                        self.entries.truncate(idx);
                        summary.dropped = true;
                    } else {
                        summary.emitted += 1;
                    }
                    continue;
                }
                FileType::RegularFile => {
                    let fd = rfs::openat(
                        dir,
                        name.as_str(),
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                        Mode::empty(),
                    )
                    .map_err(|e| io_err("opening", self.host_path(&path), e))?;
                    let (xattrs, _) = self.read_xattrs(fd.as_fd(), &path)?;
                    if st.st_nlink > 1 {
                        self.links
                            .entry((st.st_dev, st.st_ino))
                            .or_default()
                            .push(self.entries.len());
                    }
                    let kind = EntryKind::File {
                        size: st.st_size as u64,
                        content: Content::Path(self.host_path(&path)),
                    };
                    let entry = self.entry(&path, &st, kind, xattrs)?;
                    self.entries.push(entry);
                    summary.emitted += 1;
                    continue;
                }
                FileType::Symlink => {
                    let target = rfs::readlinkat(dir, name.as_str(), Vec::new())
                        .map_err(|e| io_err("reading link", self.host_path(&path), e))?;
                    let target = target.into_string().map_err(|_| CaptureError::NonUtf8 {
                        path: self.host_path(&path),
                    })?;
                    EntryKind::Symlink { target }
                }
                FileType::CharacterDevice => EntryKind::CharDevice {
                    major: rfs::major(st.st_rdev),
                    minor: rfs::minor(st.st_rdev),
                },
                FileType::BlockDevice => EntryKind::BlockDevice {
                    major: rfs::major(st.st_rdev),
                    minor: rfs::minor(st.st_rdev),
                },
                FileType::Fifo => EntryKind::Fifo,
                // Sockets (and anything unknown) cannot be stored in a layer.
                _ => continue,
            };
            let entry = self.entry(&path, &st, kind, BTreeMap::new())?;
            self.entries.push(entry);
            summary.emitted += 1;
        }
        Ok(summary)
    }

    /// A whiteout or opaque marker entry.
    fn marker(&self, path: String) -> Entry {
        let mut e = Entry::file_bytes(path, 0, self.opts.mtime, b"");
        e.mode = 0;
        e
    }

    fn entry(
        &self,
        path: &str,
        st: &Stat,
        kind: EntryKind,
        xattrs: BTreeMap<String, Vec<u8>>,
    ) -> Result<Entry, CaptureError> {
        let (uid, gid) = match self.opts.id_map {
            None => (st.st_uid, st.st_gid),
            Some(m) => {
                let unmapped = |kind, id| CaptureError::UnmappedId {
                    path: path.to_string(),
                    kind,
                    id,
                };
                (
                    IdMap::to_container(&m.uids, st.st_uid).ok_or(unmapped("uid", st.st_uid))?,
                    IdMap::to_container(&m.gids, st.st_gid).ok_or(unmapped("gid", st.st_gid))?,
                )
            }
        };
        Ok(Entry {
            path: path.to_string(),
            kind,
            mode: st.st_mode & 0o7777,
            uid: uid.into(),
            gid: gid.into(),
            mtime: self.opts.mtime,
            xattrs,
        })
    }

    /// The kept xattrs of `fd`, and whether it is marked opaque. Refuses overlay features
    /// strata does not use.
    fn read_xattrs(
        &self,
        fd: BorrowedFd<'_>,
        path: &str,
    ) -> Result<(BTreeMap<String, Vec<u8>>, bool), CaptureError> {
        let err = |e| io_err("reading xattrs of", self.host_path(path), e);
        let list = list_xattrs(fd).map_err(err)?;
        let mut kept = BTreeMap::new();
        let mut opaque = false;
        for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if let Some(feature) = name
                .strip_prefix("trusted.overlay.")
                .or_else(|| name.strip_prefix("user.overlay."))
            {
                if UNSUPPORTED_OVERLAY_XATTRS.contains(&feature) {
                    return Err(CaptureError::UnsupportedOverlay {
                        path: path.to_string(),
                        xattr: name.to_string(),
                    });
                }
                if OPAQUE_XATTRS.contains(&name) {
                    opaque |= get_xattr(fd, name).map_err(err)?.as_deref() == Some(b"y");
                }
            } else if KEPT_XATTRS.contains(&name) {
                if let Some(v) = get_xattr(fd, name).map_err(err)? {
                    kept.insert(name.to_string(), v);
                }
            }
        }
        Ok((kept, opaque))
    }

    /// Whether directory `path` (upper stat `st`), all of whose children were dropped as
    /// injected, exists only for them: it is new, or it is an unchanged copy-up of a lower dir.
    fn only_holds_injected(&self, path: &str, st: &Stat) -> Result<bool, CaptureError> {
        Ok(match self.lower_stat(path)? {
            None => true,
            Some(l) => {
                FileType::from_raw_mode(l.st_mode).is_dir()
                    && l.st_mode == st.st_mode
                    && l.st_uid == st.st_uid
                    && l.st_gid == st.st_gid
            }
        })
    }

    /// The stat of `path` in the merged view of the lowers (top layer first; whiteouts, opaque
    /// directories and non-directories hide what is below them), or `None` if absent.
    fn lower_stat(&self, path: &str) -> Result<Option<Stat>, CaptureError> {
        let comps: Vec<&str> = path.split('/').collect();
        'layers: for (li, lower) in self.lowers.iter().enumerate().rev() {
            let err = |e| io_err("looking up", self.opts.lowers[li].join(path), e);
            let mut opened: Option<OwnedFd> = None;
            let mut opaque_above = false;
            for (i, c) in comps.iter().enumerate() {
                let cur = opened.as_ref().map_or(lower.as_fd(), |f| f.as_fd());
                let st = match rfs::statat(cur, *c, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::NOENT) if !opaque_above => continue 'layers,
                    Err(Errno::NOENT) => return Ok(None),
                    Err(e) => return Err(err(e)),
                };
                if is_whiteout(&st) {
                    return Ok(None);
                }
                if i + 1 == comps.len() {
                    return Ok(Some(st));
                }
                if !FileType::from_raw_mode(st.st_mode).is_dir() {
                    return Ok(None);
                }
                let fd = open_dir(cur, *c, true).map_err(err)?;
                for x in OPAQUE_XATTRS {
                    opaque_above |= get_xattr(fd.as_fd(), x).map_err(err)?.as_deref() == Some(b"y");
                }
                opened = Some(fd);
            }
        }
        Ok(None)
    }
}

fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn open_dir<P: rustix::path::Arg>(
    dir: impl AsFd,
    path: P,
    nofollow: bool,
) -> Result<OwnedFd, Errno> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if nofollow {
        flags |= OFlags::NOFOLLOW;
    }
    rfs::openat(dir, path, flags, Mode::empty())
}

fn io_err(op: &'static str, path: impl Into<PathBuf>, e: Errno) -> CaptureError {
    CaptureError::Io {
        op,
        path: path.into(),
        source: e.into(),
    }
}

/// `flistxattr` into a buffer of the right size (retrying if the list grows meanwhile).
fn list_xattrs(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    loop {
        let size = match rfs::flistxattr_query(fd) {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match rfs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `fgetxattr`; `None` when the attribute is absent.
fn get_xattr(fd: BorrowedFd<'_>, name: &str) -> Result<Option<Vec<u8>>, Errno> {
    loop {
        let size = match rfs::fgetxattr_query(fd, name) {
            Ok(n) => n,
            Err(Errno::NODATA) | Err(Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; size];
        match rfs::fgetxattr(fd, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
