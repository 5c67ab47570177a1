//! Delta snapshots: a layer unpacked as the difference from a similar layer's snapshot.
//!
//! Changing one file of an 800 MB / 50k-file COPY makes a new layer whose snapshot would be
//! 50k new files. On a busy ext4 the inode allocation alone takes seconds to tens of seconds
//! (`find_inode_bit`/`recently_deleted` dominate a profile), more than reading the layer. When a
//! full snapshot `B` of a similar layer exists (the same step's previous layer), the new layer
//! `T` is unpacked instead as an overlay lower dir `D` to be stacked on `B`: `D` holds only the
//! entries of `T` that differ from `B`, the directories on the way to them (with `T`'s owner
//! and mode, since overlay shows the topmost directory's). `T` must have every path `B` has: a
//! whiteout in `D` for a path `T` lacks would also hide what the layers *under* `B` have there
//! (a base's `/app` symlink that `T` writes through), so such a layer is unpacked in full. With
//! that, the lowers `[..., B, D]` show exactly what `[..., T]` would; the unit tests compare the
//! merged view with a full unpack.
//!
//! A file is reused only if `B` has a regular file at the same path with the same size, mode,
//! owner and `security.capability`, and byte-identical content (compared while `T` streams
//! by). `B`'s files keep their own inodes (no hard links: `st_nlink` stays 1, as in a full
//! unpack). Anything the comparison does not model — whiteouts or hard links in `T`, devices,
//! a type change between `B` and `T`, an opaque directory in `B` — makes the delta
//! [`Unsuitable`](Delta::Unsuitable) and the caller unpacks `T` in full.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, XattrFlags};
use rustix::io::Errno;

use super::confined::{join, open_in_root};
use super::snapshot::{stamps, Limits};
use super::SandboxError;
use crate::layer::whiteout;

/// The outcome of [`unpack_delta`].
#[derive(Debug, PartialEq, Eq)]
pub enum Delta {
    /// `dest` holds the delta. Counts: files written into it, files reused from the base.
    Done { written: u64, reused: u64 },
    /// The layer does not fit the delta model; `dest` is partial and must be discarded.
    Unsuitable(String),
}

const CAP: &str = "security.capability";
const BLOCK: usize = 256 * 1024;

type Attrs = (u64, u64, u32, Timespec); // uid, gid, mode, mtime

struct Differ {
    base: OwnedFd,
    dest: OwnedFd,
    limits: Limits,
    is_root: bool,
    bytes: u64,
    /// Owner and mode of every directory of `T` (key: components joined by `/`).
    dirs: HashMap<Vec<u8>, Attrs>,
    /// Directories created in `dest`.
    made: HashSet<Vec<u8>>,
    /// Every path of `T`.
    seen: HashSet<Vec<u8>>,
    /// The last directory looked up in `base`, reused while entries stay in it.
    base_dir: Option<(Vec<u8>, OwnedFd)>,
    written: u64,
    reused: u64,
    buf_t: Vec<u8>,
    buf_b: Vec<u8>,
}

fn key(comps: &[OsString]) -> Vec<u8> {
    join(comps).as_bytes().to_vec()
}

fn unsuitable<T>(why: String) -> Result<Result<T, String>, SandboxError> {
    Ok(Err(why))
}

impl Differ {
    fn io<'a>(op: &'static str, shown: &'a str) -> impl Fn(Errno) -> SandboxError + 'a {
        move |e| SandboxError::io(op, shown, e.into())
    }

    /// `base`'s directory `comps`, which `T` has already shown to be a plain directory there.
    fn base_dir(&mut self, comps: &[OsString]) -> Result<BorrowedFd<'_>, Errno> {
        let k = key(comps);
        if self.base_dir.as_ref().map(|(p, _)| p) != Some(&k) {
            let fd = open_in_root(
                self.base.as_fd(),
                comps,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW,
            )?;
            self.base_dir = Some((k, fd));
        }
        Ok(self.base_dir.as_ref().unwrap().1.as_fd())
    }

    /// `dest`'s directory `comps`, created (with `T`'s owner and mode) with its ancestors.
    fn dest_dir(&mut self, comps: &[OsString]) -> Result<OwnedFd, Errno> {
        for i in 0..comps.len() {
            let k = key(&comps[..=i]);
            if self.made.contains(&k) {
                continue;
            }
            let parent = open_in_root(self.dest.as_fd(), &comps[..i], OFlags::DIRECTORY)?;
            match rfs::mkdirat(&parent, comps[i].as_os_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            let d = open_in_root(
                self.dest.as_fd(),
                &comps[..=i],
                OFlags::DIRECTORY | OFlags::NOFOLLOW,
            )?;
            // A directory `T` does not list gets what a full unpack gives it. (Times are set
            // at the end, once no entry changes them: `set_dir_times`.)
            let (uid, gid, mode, _) = self.attrs(&k);
            self.set_owner_mode(d.as_fd(), uid, gid, mode)?;
            self.made.insert(k);
        }
        open_in_root(self.dest.as_fd(), comps, OFlags::DIRECTORY)
    }

    fn set_owner_mode(
        &self,
        fd: BorrowedFd<'_>,
        uid: u64,
        gid: u64,
        mode: u32,
    ) -> Result<(), Errno> {
        // Deltas are made as real root only (never in a user namespace): every id maps.
        super::snapshot::chown_chmod(fd, self.is_root, (uid, gid), mode, false)
    }

    /// `T`'s attributes of directory `k`, or what a full unpack gives one `T` only implies.
    fn attrs(&self, k: &[u8]) -> Attrs {
        let epoch = super::snapshot::epoch().last_modification;
        self.dirs.get(k).copied().unwrap_or((0, 0, 0o755, epoch))
    }

    /// Sets the times of the root and of every directory made in `dest`, as a full unpack
    /// does once all entries are in.
    fn set_dir_times(&self) -> Result<(), SandboxError> {
        for k in self.made.iter().chain([&b"."[..].to_vec()]) {
            let comps: Vec<OsString> = if k.as_slice() == b"." {
                Vec::new()
            } else {
                k.split(|b| *b == b'/')
                    .map(|c| OsStr::from_bytes(c).to_os_string())
                    .collect()
            };
            let shown = String::from_utf8_lossy(k).into_owned();
            let d = open_in_root(
                self.dest.as_fd(),
                &comps,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW,
            )
            .map_err(Self::io("open directory", &shown))?;
            rfs::futimens(&d, &stamps(self.attrs(k).3))
                .map_err(Self::io("set times of", &shown))?;
        }
        Ok(())
    }

    fn same_owner(&self, st: &rfs::Stat, uid: u64, gid: u64) -> bool {
        // Unprivileged, neither form applies owners: they are the unpacking user's in both.
        !self.is_root || (st.st_uid as u64 == uid && st.st_gid as u64 == gid)
    }

    /// One entry of `T`. `Ok(Err(why))`: the layer does not fit the delta model.
    fn entry<R: Read>(
        &mut self,
        le: &mut crate::layer::LayerEntry<'_, R>,
    ) -> Result<Result<(), String>, SandboxError> {
        let shown = le.shown();
        let is_whiteout = le.whiteout().is_some();
        let comps = std::mem::take(&mut le.components);
        let e = &mut le.entry;
        let h = e.header().clone();
        let kind = h.entry_type();
        let rd = |err| SandboxError::io("read", &shown, err);
        let mode = h.mode().map_err(rd)? & 0o7777;
        let (uid, gid) = (h.uid().map_err(rd)?, h.gid().map_err(rd)?);
        let mtime = super::snapshot::entry_times(e)
            .map_err(rd)?
            .last_modification;
        let k = key(&comps);
        let Some((name, parent)) = comps.split_last() else {
            if !kind.is_dir() {
                return Err(SandboxError::UnsafeEntry {
                    path: shown,
                    reason: "the root can only be a directory",
                });
            }
            self.dirs.insert(k, (uid, gid, mode, mtime));
            self.set_owner_mode(self.dest.as_fd(), uid, gid, mode)
                .map_err(Self::io("set owner and mode of", &shown))?;
            return Ok(Ok(()));
        };
        if is_whiteout {
            return unsuitable(format!("`{shown}` is a whiteout"));
        }
        if !parent.is_empty() && !self.dirs.contains_key(&key(parent)) {
            return unsuitable(format!("`{shown}` comes before its parent directory"));
        }
        if !self.seen.insert(k.clone()) {
            return unsuitable(format!("`{shown}` appears twice"));
        }
        let in_base = match self.base_dir(parent) {
            Ok(d) => match rfs::statat(d, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::NOENT) => None,
                Err(err) => return Err(Self::io("stat in base", &shown)(err)),
            },
            // The parent is new in `T` (not in base): so is this entry.
            Err(Errno::NOENT) => None,
            Err(err) => return Err(Self::io("open in base", &shown)(err)),
        };
        let base_type = in_base
            .as_ref()
            .map(|st| FileType::from_raw_mode(st.st_mode));
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                self.dirs.insert(k, (uid, gid, mode, mtime));
                match base_type {
                    Some(FileType::Directory) => {
                        let st = in_base.unwrap();
                        let d = self
                            .base_dir(&comps)
                            .map_err(Self::io("open in base", &shown))?;
                        for x in whiteout::OPAQUE_XATTRS {
                            if let Ok(_) | Err(Errno::RANGE) = rfs::fgetxattr(d, x, &mut [0u8; 4]) {
                                return unsuitable(format!("`{shown}` is opaque in the base"));
                            }
                        }
                        if st.st_mode & 0o7777 == mode
                            && self.same_owner(&st, uid, gid)
                            && mtime_of(&st) == mtime
                        {
                            return Ok(Ok(()));
                        }
                        self.dest_dir(&comps)
                            .map_err(Self::io("create directory", &shown))?;
                        Ok(Ok(()))
                    }
                    None => {
                        self.dest_dir(&comps)
                            .map_err(Self::io("create directory", &shown))?;
                        Ok(Ok(()))
                    }
                    Some(_) => unsuitable(format!("`{shown}` changes type")),
                }
            }
            T::Regular | T::Continuous => {
                let size = h.size().map_err(rd)?;
                self.bytes = self.bytes.saturating_add(size);
                if self.bytes > self.limits.max_bytes {
                    return Err(SandboxError::Limit {
                        what: "total size",
                        limit: self.limits.max_bytes,
                    });
                }
                let mut cap: Option<Vec<u8>> = None;
                if let Some(exts) = e.pax_extensions().map_err(rd)? {
                    for ext in exts {
                        let ext = ext.map_err(rd)?;
                        if ext.key_bytes() == b"SCHILY.xattr.security.capability" {
                            cap = Some(ext.value_bytes().to_vec());
                        }
                    }
                }
                let base_file = match base_type {
                    None => None,
                    Some(FileType::RegularFile) => {
                        let st = in_base.unwrap();
                        let same_meta = st.st_size as u64 == size
                            && st.st_mode & 0o7777 == mode
                            && self.same_owner(&st, uid, gid)
                            && mtime_of(&st) == mtime;
                        if same_meta {
                            let d = self
                                .base_dir(parent)
                                .map_err(Self::io("open in base", &shown))?;
                            let f = rfs::openat(
                                d,
                                name.as_os_str(),
                                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                                Mode::empty(),
                            )
                            .map_err(Self::io("open in base", &shown))?;
                            let mut v = vec![0u8; 256];
                            let base_cap = match rfs::fgetxattr(&f, CAP, &mut v) {
                                Ok(n) => Some(v[..n].to_vec()),
                                Err(Errno::NODATA) => None,
                                Err(err) => {
                                    return Err(Self::io("read xattr in base", &shown)(err))
                                }
                            };
                            (base_cap == cap).then_some(f)
                        } else {
                            None
                        }
                    }
                    Some(_) => return unsuitable(format!("`{shown}` changes type")),
                };
                // Compare while streaming; `equal` bytes of `T` match the base so far.
                let mut equal = 0u64;
                let mut base_file = base_file.map(std::fs::File::from);
                let mut out: Option<std::fs::File> = None;
                let mut rest = e.take(size);
                loop {
                    let n = read_full(&mut rest, &mut self.buf_t).map_err(rd)?;
                    if n == 0 {
                        break;
                    }
                    if let Some(b) = base_file.as_mut() {
                        let m = read_full(b, &mut self.buf_b[..n]).map_err(rd)?;
                        if m == n && self.buf_b[..n] == self.buf_t[..n] {
                            equal += n as u64;
                            continue;
                        }
                    }
                    if out.is_none() {
                        let mut f = self.create_file(parent, name, &shown)?;
                        if let Some(b) = base_file.take() {
                            // The equal prefix comes from the base copy.
                            copy_prefix(&b, &mut f, equal)
                                .map_err(|err| SandboxError::io("write", &shown, err))?;
                        }
                        out = Some(f);
                    }
                    out.as_mut()
                        .unwrap()
                        .write_all(&self.buf_t[..n])
                        .map_err(|err| SandboxError::io("write", &shown, err))?;
                }
                if base_file.is_some() && out.is_none() && equal == size {
                    self.reused += 1;
                    return Ok(Ok(()));
                }
                let f = match out {
                    Some(f) => f,
                    // Empty or fully equal content whose metadata differs: written anew.
                    None => {
                        let mut f = self.create_file(parent, name, &shown)?;
                        if let Some(b) = base_file.take() {
                            copy_prefix(&b, &mut f, equal)
                                .map_err(|err| SandboxError::io("write", &shown, err))?;
                        }
                        f
                    }
                };
                let written = f.metadata().map(|m| m.len()).unwrap_or(0);
                if written != size {
                    return Err(SandboxError::UnsafeEntry {
                        path: shown,
                        reason: "truncated file content",
                    });
                }
                // chown clears setuid bits and file capabilities: owner, then mode, then xattrs.
                self.set_owner_mode(f.as_fd(), uid, gid, mode)
                    .map_err(Self::io("set owner and mode of", &shown))?;
                if let Some(c) = &cap {
                    rfs::fsetxattr(&f, CAP, c, XattrFlags::empty())
                        .map_err(Self::io("set capabilities of", &shown))?;
                }
                rfs::futimens(&f, &stamps(mtime)).map_err(Self::io("set times of", &shown))?;
                self.written += 1;
                Ok(Ok(()))
            }
            T::Symlink => {
                let target = e
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(SandboxError::UnsafeEntry {
                        path: shown,
                        reason: "invalid symlink target",
                    });
                }
                match base_type {
                    Some(FileType::Symlink) => {
                        let st = in_base.unwrap();
                        let d = self
                            .base_dir(parent)
                            .map_err(Self::io("open in base", &shown))?;
                        let old = rfs::readlinkat(d, name.as_os_str(), Vec::new())
                            .map_err(Self::io("read link in base", &shown))?;
                        if old.as_bytes() == target.as_slice()
                            && self.same_owner(&st, uid, gid)
                            && mtime_of(&st) == mtime
                        {
                            return Ok(Ok(()));
                        }
                    }
                    None => {}
                    Some(_) => return unsuitable(format!("`{shown}` changes type")),
                }
                let d = self
                    .dest_dir(parent)
                    .map_err(Self::io("create parent of", &shown))?;
                rfs::symlinkat(OsStr::from_bytes(&target), &d, name.as_os_str())
                    .map_err(Self::io("create symlink", &shown))?;
                if self.is_root {
                    let u = rustix::process::Uid::from_raw(uid as u32);
                    let g = rustix::process::Gid::from_raw(gid as u32);
                    rfs::chownat(
                        &d,
                        name.as_os_str(),
                        Some(u),
                        Some(g),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(Self::io("chown", &shown))?;
                }
                rfs::utimensat(
                    &d,
                    name.as_os_str(),
                    &stamps(mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(Self::io("set times of", &shown))?;
                Ok(Ok(()))
            }
            other => unsuitable(format!(
                "`{shown}` has tar type {:?} (hard links, devices and fifos are unpacked in full)",
                other.as_byte() as char
            )),
        }
    }

    fn create_file(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        shown: &str,
    ) -> Result<std::fs::File, SandboxError> {
        let d = self
            .dest_dir(parent)
            .map_err(Self::io("create parent of", shown))?;
        let f = rfs::openat(
            &d,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(Self::io("create", shown))?;
        Ok(std::fs::File::from(f))
    }

    /// Whiteouts in `dest` for everything of `base` under `comps` that `T` does not have.
    fn whiteouts(&mut self, comps: &mut Vec<OsString>) -> Result<Result<(), String>, SandboxError> {
        let shown = String::from_utf8_lossy(&key(comps)).into_owned();
        let dir = open_in_root(
            self.base.as_fd(),
            comps,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW,
        )
        .map_err(Self::io("open in base", &shown))?;
        let mut names = Vec::new();
        for ent in rfs::Dir::read_from(&dir).map_err(Self::io("read directory in base", &shown))? {
            let ent = ent.map_err(Self::io("read directory in base", &shown))?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push((OsStr::from_bytes(n).to_os_string(), ent.file_type()));
            }
        }
        for (n, ft) in names {
            comps.push(n);
            let k = key(comps);
            if !self.seen.contains(&k) {
                // A whiteout here would hide not only the similar layer's entry but also
                // whatever the layers below it have at this path (a base's `/app` symlink when
                // the new layer writes through it): `[B, D]` would no longer equal `T` on its
                // own stack. Only layers that keep every path of `B` get a delta.
                return unsuitable(format!(
                    "`{}` is in the similar layer but not in this one",
                    String::from_utf8_lossy(&k)
                ));
            } else if ft == FileType::Directory {
                if let Err(why) = self.whiteouts(comps)? {
                    return Ok(Err(why));
                }
            }
            comps.pop();
        }
        Ok(Ok(()))
    }
}

fn mtime_of(st: &rfs::Stat) -> Timespec {
    super::snapshot::times_of(st).last_modification
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn copy_prefix(from: &std::fs::File, to: &mut std::fs::File, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; BLOCK];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(BLOCK);
        from.read_exact_at(&mut buf[..n], off)?;
        to.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Unpacks the layer tar `reader` into `dest` (an empty directory) as a delta over the full
/// snapshot `base`. The whole stream is read (so a verifying reader checks the digest), and
/// `dest` is synced to disk when the delta is [`Delta::Done`].
pub fn unpack_delta(
    reader: impl Read,
    dest: &Path,
    base: &Path,
    limits: Limits,
) -> Result<Delta, SandboxError> {
    let open = |p: &Path| {
        rfs::open(
            p,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SandboxError::io("open", p.display(), e.into()))
    };
    let mut d = Differ {
        base: open(base)?,
        dest: open(dest)?,
        limits,
        is_root: rustix::process::geteuid().is_root(),
        bytes: 0,
        dirs: HashMap::new(),
        made: HashSet::new(),
        seen: HashSet::new(),
        base_dir: None,
        written: 0,
        reused: 0,
        buf_t: vec![0u8; BLOCK],
        buf_b: vec![0u8; BLOCK],
    };
    // As a full unpack: the root is 0755 unless the layer says otherwise.
    rfs::fchmod(&d.dest, Mode::from_raw_mode(0o755))
        .map_err(|e| SandboxError::io("chmod", dest.display(), e.into()))?;
    d.seen.insert(Vec::from(&b"."[..]));
    let mut verdict = Ok(());
    // The rest is drained too, so a verifying reader sees end of file and checks the digest.
    crate::layer::LayerReader::new(reader, limits).for_each(
        |e| super::snapshot::read_error(e, dest),
        |mut entry| {
            Ok(match d.entry(&mut entry)? {
                Ok(()) => ControlFlow::Continue(()),
                Err(why) => {
                    verdict = Err(why);
                    ControlFlow::Break(())
                }
            })
        },
    )?;
    if let Err(why) = verdict {
        return Ok(Delta::Unsuitable(why));
    }
    if let Err(why) = d.whiteouts(&mut Vec::new())? {
        return Ok(Delta::Unsuitable(why));
    }
    d.set_dir_times()?;
    Ok(Delta::Done {
        written: d.written,
        reused: d.reused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::PathBuf;
    use tar::{EntryType, Header};

    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, u32, Vec<u8>),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        tar_timed(entries, &[])
    }

    /// [`tar_of`] with the given mtimes (the others 0).
    fn tar_timed(entries: &[E<'_>], times: &[(&str, u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            let (E::Dir(p, _) | E::File(p, _, _) | E::Link(p, _) | E::Hard(p, _)) = e;
            let t = times.iter().find(|(q, _)| q == p).map_or(0, |(_, t)| *t);
            h.set_mtime(t);
            match e {
                E::Dir(p, m) => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(*m);
                    h.set_size(0);
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                E::File(p, m, data) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(*m);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, &data[..]).unwrap();
                }
                E::Link(p, t) | E::Hard(p, t) => {
                    h.set_entry_type(if matches!(e, E::Link(..)) {
                        EntryType::Symlink
                    } else {
                        EntryType::Link
                    });
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// What a tree looks like to a process: path → (type, mode, owner, mtime, content or
    /// target).
    type View = BTreeMap<String, (char, u32, u32, u32, i64, Vec<u8>)>;

    fn scan(root: &Path, rel: &str, out: &mut View, whiteouts: &mut Vec<String>) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = if rel.is_empty() {
                n.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", n.to_string_lossy())
            };
            let full = root.join(&p);
            let m = std::fs::symlink_metadata(&full).unwrap();
            let ft = m.file_type();
            let (k, body) = if ft.is_char_device() && m.rdev() == 0 {
                whiteouts.push(p);
                continue;
            } else if ft.is_dir() {
                ('d', Vec::new())
            } else if ft.is_symlink() {
                (
                    'l',
                    std::fs::read_link(&full)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else {
                ('f', std::fs::read(&full).unwrap())
            };
            out.insert(
                p.clone(),
                (k, m.mode() & 0o7777, m.uid(), m.gid(), m.mtime(), body),
            );
            if k == 'd' {
                scan(root, &p, out, whiteouts);
            }
        }
    }

    fn view(dir: &Path) -> View {
        let mut v = View::new();
        let mut w = Vec::new();
        scan(dir, "", &mut v, &mut w);
        assert!(w.is_empty(), "a full unpack has no whiteouts here");
        v
    }

    /// Overlay's merged view of `upper` on `lower` (whiteouts hide, directories merge with the
    /// upper one's attributes, anything else replaces).
    fn merged(lower: &Path, upper: &Path) -> View {
        let mut v = view(lower);
        let (mut up, mut wh) = (View::new(), Vec::new());
        scan(upper, "", &mut up, &mut wh);
        let drop_under = |v: &mut View, p: &str| {
            let pre = format!("{p}/");
            v.retain(|k, _| k != p && !k.starts_with(&pre));
        };
        for p in wh {
            drop_under(&mut v, &p);
        }
        for (p, e) in up {
            let merge = e.0 == 'd' && v.get(&p).is_some_and(|o| o.0 == 'd');
            if !merge {
                drop_under(&mut v, &p);
            }
            v.insert(p, e);
        }
        v
    }

    fn big(seed: u8) -> Vec<u8> {
        (0..700_000u32).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// `t1` unpacked in full as the base, then `t2` as a delta over it and in full:
    /// (their temp dir, `[base, delta, full]`, the delta's outcome).
    fn base_delta_full(t1: &[u8], t2: &[u8]) -> (tempfile::TempDir, [PathBuf; 3], Delta) {
        let t = tempfile::tempdir().unwrap();
        let dirs = ["b", "d", "f"].map(|n| t.path().join(n));
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        let [base, delta, full] = &dirs;
        super::super::snapshot::unpack(t1, base, Limits::default()).unwrap();
        super::super::snapshot::unpack(t2, full, Limits::default()).unwrap();
        let r = unpack_delta(t2, delta, base, Limits::default()).unwrap();
        (t, dirs, r)
    }

    #[test]
    fn delta_over_base_shows_the_same_tree_as_a_full_unpack() {
        let t1 = tar_of(&[
            E::Dir("a", 0o755),
            E::File("a/same", 0o644, b"unchanged".to_vec()),
            E::File("a/edit", 0o644, b"version 1".to_vec()),
            E::File("a/big", 0o644, big(0)),
            E::File("a/mode", 0o644, b"m".to_vec()),
            E::File("a/empty", 0o644, Vec::new()),
            E::Link("a/link", "same"),
            E::Dir("a/sub", 0o755),
            E::File("a/sub/f", 0o600, b"f".to_vec()),
        ]);
        let mut big2 = big(0);
        big2[400_000] ^= 0xff; // differs after more than one comparison block
        let t2 = tar_of(&[
            E::Dir("a", 0o755),
            E::File("a/same", 0o644, b"unchanged".to_vec()),
            E::File("a/edit", 0o644, b"version 2".to_vec()),
            E::File("a/big", 0o644, big2),
            E::File("a/mode", 0o755, b"m".to_vec()),
            E::File("a/empty", 0o644, Vec::new()),
            E::Link("a/link", "edit"),
            E::Dir("a/sub", 0o700),
            E::File("a/sub/f", 0o600, b"f".to_vec()),
            E::File("a/sub/new", 0o644, b"new".to_vec()),
            E::Dir("fresh", 0o750),
            E::File("fresh/n", 0o644, b"n".to_vec()),
        ]);
        let (_t, [base, delta, full], r) = base_delta_full(&t1, &t2);
        assert_eq!(
            r,
            Delta::Done {
                written: 5,
                reused: 3
            },
            "edit, big, mode, sub/new, fresh/n written; same, empty, sub/f reused"
        );
        assert_eq!(merged(&base, &delta), view(&full));
        // Only what changed is in the delta: no copy of the unchanged files.
        assert!(!delta.join("a/same").exists() && !delta.join("a/sub/f").exists());
        assert_eq!(
            std::fs::read(delta.join("a/big")).unwrap(),
            std::fs::read(full.join("a/big")).unwrap()
        );
    }

    #[test]
    fn a_changed_time_alone_puts_the_entry_in_the_delta() {
        let entries = [
            E::Dir("a", 0o755),
            E::File("a/same", 0o644, b"unchanged".to_vec()),
            E::File("a/timed", 0o644, b"same bytes".to_vec()),
            E::Link("a/link", "same"),
            E::Dir("a/sub", 0o755),
            E::File("a/sub/f", 0o644, b"f".to_vec()),
            E::Dir("b", 0o755),
            E::File("b/g", 0o644, b"g".to_vec()),
        ];
        let t1 = tar_timed(&entries, &[("a", 10), ("a/sub", 10), ("b/g", 10)]);
        let t2 = tar_timed(
            &entries,
            &[
                ("a", 10),
                ("a/timed", 5),
                ("a/link", 9),
                ("a/sub", 7),
                ("b/g", 10),
            ],
        );
        let (_t, [base, delta, full], r) = base_delta_full(&t1, &t2);
        assert_eq!(
            r,
            Delta::Done {
                written: 1,
                reused: 3
            },
            "a/timed written; a/same, a/sub/f, b/g reused"
        );
        assert_eq!(merged(&base, &delta), view(&full));
        assert_eq!(view(&full)["a/sub"].4, 7);
        assert_eq!(view(&full)["a/timed"].4, 5);
        // A directory the delta holds only on the way to a changed entry keeps T's time.
        assert_eq!(view(&delta)["a"].4, 10);
        assert!(!delta.join("b").exists(), "b and b/g unchanged");
    }

    #[test]
    fn identical_layers_make_an_empty_delta() {
        let t1 = tar_of(&[E::Dir("a", 0o755), E::File("a/x", 0o644, big(3))]);
        let t = tempfile::tempdir().unwrap();
        let (base, delta) = (t.path().join("b"), t.path().join("d"));
        std::fs::create_dir(&base).unwrap();
        std::fs::create_dir(&delta).unwrap();
        super::super::snapshot::unpack(&t1[..], &base, Limits::default()).unwrap();
        let r = unpack_delta(&t1[..], &delta, &base, Limits::default()).unwrap();
        assert_eq!(
            r,
            Delta::Done {
                written: 0,
                reused: 1
            }
        );
        assert_eq!(std::fs::read_dir(&delta).unwrap().count(), 0);
    }

    #[test]
    fn hard_links_and_type_changes_are_unsuitable() {
        let t1 = tar_of(&[E::Dir("a", 0o755), E::File("a/x", 0o644, b"x".to_vec())]);
        let hard = tar_of(&[
            E::Dir("a", 0o755),
            E::File("a/x", 0o644, b"x".to_vec()),
            E::Hard("a/y", "a/x"),
        ]);
        let retyped = tar_of(&[E::Dir("a", 0o755), E::Dir("a/x", 0o755)]);
        // A path of the similar layer missing from the new one: a whiteout would hide the
        // layers below the similar one too.
        let removed = tar_of(&[E::Dir("a", 0o755)]);
        let moved = tar_of(&[E::Dir("srv", 0o755), E::File("srv/x", 0o644, b"x".to_vec())]);
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("b");
        std::fs::create_dir(&base).unwrap();
        super::super::snapshot::unpack(&t1[..], &base, Limits::default()).unwrap();
        for (i, layer) in [hard, retyped, removed, moved].iter().enumerate() {
            let d = t.path().join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            let r = unpack_delta(&layer[..], &d, &base, Limits::default()).unwrap();
            assert!(matches!(r, Delta::Unsuitable(_)), "{r:?}");
        }
    }
}
