//! Fingerprints of what a RUN observed: a path walk with the kernel's rules over a
//! [`ChainView`], hashed node by node.
//!
//! The walk ([`resolve`]): from the root, per component: `.` is skipped, `..` goes to the
//! physical parent (never above the root), a symlink in the middle (and at the end when
//! following) is replaced by its target (absolute: from the root; relative: from the directory
//! holding it), at most [`MAX_SYMLINKS`] of them ([`Outcome::Loop`]); a non-directory in the
//! middle is [`Outcome::NotDir`], a missing component [`Outcome::NotFound`]. A trailing `/`
//! follows the last symlink and asks for a directory.
//!
//! What is hashed (the `shape` part), in walk order: each directory walked through, with what
//! a walk can observe of it (mode, owner, xattrs: search permission; not its times or size,
//! which change with every sibling added and which only a `stat` of the directory itself
//! observes, a lookup of its own) and the name looked up in it; each `..`; each symlink
//! followed, with its target (and all its facts when it is the last component: `lstat`
//! observes them); a mount point entered; then the outcome and, for a node found, all its
//! facts (kind, mode, uid, gid, mtime, nlink, xattrs, size, device numbers, link target).
//! Names, `..` and targets in walk order determine every physical path on the way. The
//! `content` part is the BLAKE3 of the content of the regular file reached, zeros otherwise.
//! Both are the first 16 bytes of a BLAKE3.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::index::{path_hash, Entry, EntryKind, Prehashed};
use super::view::{kind_tag, ChainView, DirRange, Node};

/// The kernel's limit of symlinks followed in one walk (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: u32 = 40;

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Found,
    /// `ENOENT`: the walk's path is the missing one.
    NotFound,
    /// `ENOTDIR`: the walk's path is the non-directory it had to walk through.
    NotDir,
    /// `ELOOP`: more than [`MAX_SYMLINKS`] symlinks.
    Loop,
    /// The walk entered a mount point (not the root file system): the walk's path.
    Mount,
}

/// Where a walk ended.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    /// The physical relative path reached (or that failed: see [`Outcome`]).
    pub path: String,
    /// The node reached ([`Outcome::Found`]) or the last directory walked.
    pub node: Node<'a>,
    pub outcome: Outcome,
}

/// A fingerprint in two parts, so a change can be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub shape: [u8; 16],
    pub content: [u8; 16],
}

/// Walks `abs_path` over `view` with the kernel's rules (module docs), following a symlink at
/// the end if `follow_last`.
pub fn resolve<'a>(view: &'a ChainView, abs_path: &str, follow_last: bool) -> Resolved<'a> {
    Walker::new(view).walk(abs_path, follow_last, &mut |_| false, &mut Feed(None))
}

/// The fingerprint of a lookup of `abs_path` ([`Walker::lookup`]).
pub fn lookup(
    view: &ChainView,
    abs_path: &str,
    mount: &mut dyn FnMut(&str) -> bool,
) -> Fingerprint {
    Walker::new(view).lookup(abs_path, mount)
}

/// The fingerprint of a listing of `abs_path` ([`Walker::listing`]).
pub fn listing(
    view: &ChainView,
    abs_path: &str,
    mount: &mut dyn FnMut(&str) -> bool,
) -> Fingerprint {
    Walker::new(view).listing(abs_path, mount)
}

/// Walks over one view, remembering the directories it found: the walks of a read set share
/// most of their directories, and a directory's node costs a lookup in every layer.
pub struct Walker<'a> {
    view: &'a ChainView,
    root: Node<'a>,
    /// Directories found, by [`path_hash`] (a path whose hash another one took first is just
    /// not remembered).
    dirs: HashMap<u64, (String, Node<'a>), BuildHasherDefault<Prehashed>>,
    /// The facts of the walk being fingerprinted, hashed at once at its end.
    buf: Vec<u8>,
}

impl<'a> Walker<'a> {
    pub fn new(view: &'a ChainView) -> Walker<'a> {
        Walker {
            view,
            root: view.root(),
            dirs: HashMap::default(),
            buf: Vec::with_capacity(1024),
        }
    }

    /// The node at `path` among the children of a directory whose children come from
    /// `parent` (the view's [`ChainView::child`], remembered for directories).
    fn child(&mut self, parent: DirRange, path: &str) -> Option<Node<'a>> {
        let hash = path_hash(path);
        if let Some((p, n)) = self.dirs.get(&hash) {
            if p == path {
                return Some(*n);
            }
        }
        let n = self.view.child_hashed(parent, path, hash)?;
        if n.dir.is_some() {
            self.dirs
                .entry(hash)
                .or_insert_with(|| (path.to_string(), n));
        }
        Some(n)
    }

    /// The fingerprint of a lookup of `abs_path` (any syscall that named it): the walk
    /// following the last symlink, the link itself included. `mount(rel)` says whether the
    /// physical path `rel` is a mount point the walk must not enter.
    pub fn lookup(&mut self, abs_path: &str, mount: &mut dyn FnMut(&str) -> bool) -> Fingerprint {
        let mut h = std::mem::take(&mut self.buf);
        h.clear();
        h.extend_from_slice(b"lookup\0");
        let r = self.walk(abs_path, true, mount, &mut Feed(Some(&mut h)));
        let fp = Fingerprint {
            shape: first16(&h),
            content: content_of(&r),
        };
        self.buf = h;
        fp
    }

    /// The fingerprint of a listing of the directory `abs_path`: its lookup's shape, then its
    /// merged children's names and kind tags.
    pub fn listing(&mut self, abs_path: &str, mount: &mut dyn FnMut(&str) -> bool) -> Fingerprint {
        let mut h = std::mem::take(&mut self.buf);
        h.clear();
        h.extend_from_slice(b"listing\0");
        let r = self.walk(abs_path, true, mount, &mut Feed(Some(&mut h)));
        if let (Outcome::Found, Some(dir)) = (r.outcome, r.node.dir) {
            let children = self.view.children_of(dir, &r.path);
            put_int(&mut h, children.len() as u64);
            let mut tag = [0u8; 4];
            for (name, kind) in children {
                put_str(&mut h, name);
                h.extend_from_slice(kind.encode_utf8(&mut tag).as_bytes());
            }
        }
        let fp = Fingerprint {
            shape: first16(&h),
            content: [0; 16],
        };
        self.buf = h;
        fp
    }
}

/// The fingerprint of the entry at exactly the relative path `rel` (nothing followed; every
/// parent must be a directory, else it is absent): what the step's own layer replaced or
/// copied up there.
pub fn layer_entry(view: &ChainView, rel: &str) -> Fingerprint {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(b"entry\0");
    put_str(&mut h, rel);
    let e = view.lookup(rel);
    match e {
        Some(e) => facts(&mut h, e),
        None => {
            h.extend_from_slice(b"A");
        }
    }
    Fingerprint {
        shape: first16(&h),
        content: e.map_or([0; 16], file_content),
    }
}

fn first16(h: &[u8]) -> [u8; 16] {
    let mut out = [0; 16];
    out.copy_from_slice(&blake3::hash(h).as_bytes()[..16]);
    out
}

fn file_content(e: &Entry) -> [u8; 16] {
    match &e.kind {
        EntryKind::File { blake3, .. } => {
            let mut out = [0; 16];
            out.copy_from_slice(&blake3[..16]);
            out
        }
        _ => [0; 16],
    }
}

fn content_of(r: &Resolved<'_>) -> [u8; 16] {
    match r.outcome {
        Outcome::Found => file_content(r.node.entry),
        _ => [0; 16],
    }
}

/// A number as LEB128 (self-delimiting, and short: most facts are small numbers, and the
/// fewer bytes, the fewer BLAKE3 blocks per walk).
fn put_int(h: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        h.push((n as u8) | 0x80);
        n >>= 7;
    }
    h.push(n as u8);
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    put_int(h, s.len() as u64);
    h.extend_from_slice(s.as_bytes());
}

/// Everything `lstat` (and `readlink`) shows of `e`, but its content.
fn facts(h: &mut Vec<u8>, e: &Entry) {
    let mut tag = [0u8; 4];
    h.extend_from_slice(kind_tag(e).encode_utf8(&mut tag).as_bytes());
    match &e.kind {
        EntryKind::File { size, .. } => {
            put_int(h, *size);
        }
        EntryKind::Symlink(t) | EntryKind::HardLink(t) => put_str(h, t),
        EntryKind::Char(a, b) | EntryKind::Block(a, b) => {
            put_int(h, u64::from(*a));
            put_int(h, u64::from(*b));
        }
        EntryKind::Dir { .. } | EntryKind::Fifo | EntryKind::Whiteout => {}
    }
    put_int(h, u64::from(e.mode));
    put_int(h, e.uid);
    put_int(h, e.gid);
    put_int(h, ((e.mtime << 1) ^ (e.mtime >> 63)) as u64);
    put_int(h, u64::from(e.mtime_nsec));
    put_int(h, u64::from(e.nlink));
    xattrs(h, e);
}

fn xattrs(h: &mut Vec<u8>, e: &Entry) {
    put_int(h, e.xattrs.len() as u64);
    for (k, v) in &e.xattrs {
        put_str(h, k);
        put_int(h, v.len() as u64);
        h.extend_from_slice(v);
    }
}

/// Where the walk's facts go (nowhere for a plain [`resolve`]).
pub(crate) struct Feed<'h>(pub(crate) Option<&'h mut Vec<u8>>);

impl Feed<'_> {
    fn tag(&mut self, t: &[u8]) {
        if let Some(h) = self.0.as_deref_mut() {
            h.extend_from_slice(t);
        }
    }

    /// A directory walked through (what search permission depends on) and the name looked up
    /// in it. (Names, `..` and symlink targets in walk order determine every physical path.)
    fn dir(&mut self, e: &Entry, name: &str) {
        if let Some(h) = self.0.as_deref_mut() {
            h.extend_from_slice(b"D");
            put_str(h, name);
            put_int(h, u64::from(e.mode));
            put_int(h, e.uid);
            put_int(h, e.gid);
            xattrs(h, e);
        }
    }

    /// A symlink followed (all its facts when it is the last component).
    fn link(&mut self, e: &Entry, last: bool) {
        if let Some(h) = self.0.as_deref_mut() {
            h.extend_from_slice(b"L");
            if let EntryKind::Symlink(t) = &e.kind {
                put_str(h, t);
            }
            if last {
                facts(h, e);
            }
        }
    }

    fn end(&mut self, r: &Resolved<'_>) {
        let Some(h) = self.0.as_deref_mut() else {
            return;
        };
        match r.outcome {
            Outcome::Found => {
                h.extend_from_slice(b"F");
                facts(h, r.node.entry);
            }
            Outcome::NotFound => {
                h.extend_from_slice(b"A");
            }
            Outcome::NotDir => {
                h.extend_from_slice(b"N");
                let mut tag = [0u8; 4];
                h.extend_from_slice(kind_tag(r.node.entry).encode_utf8(&mut tag).as_bytes());
            }
            Outcome::Loop => {
                h.extend_from_slice(b"O");
            }
            Outcome::Mount => {
                h.extend_from_slice(b"M");
            }
        }
    }
}

/// The walk (module docs), feeding what it visits to `feed`.
impl<'a> Walker<'a> {
    pub(crate) fn walk(
        &mut self,
        abs: &str,
        follow_last: bool,
        mount: &mut dyn FnMut(&str) -> bool,
        feed: &mut Feed<'_>,
    ) -> Resolved<'a> {
        let must_dir = abs.len() > 1 && abs.ends_with('/');
        let follow_last = follow_last || must_dir;
        let mut todo: Vec<&str> = Vec::with_capacity(16);
        todo.extend(abs.rsplit('/').filter(|c| !c.is_empty()));
        let mut path = String::with_capacity(abs.len() + 32);
        let mut node = self.root;
        // The directories above `node`: the length of `path` there, and the node.
        let mut up: Vec<(usize, Node<'a>)> = Vec::new();
        let mut hops = 0;
        let outcome = loop {
            if abs.is_empty() {
                break Outcome::NotFound; // the kernel's answer to an empty path
            }
            let Some(c) = todo.pop() else {
                if must_dir && node.dir.is_none() {
                    break Outcome::NotDir;
                }
                break Outcome::Found;
            };
            if node.dir.is_none() {
                // Even `.` and `..` need a directory to be looked up in.
                break Outcome::NotDir;
            }
            match c {
                "." => continue,
                ".." => {
                    feed.tag(b"..");
                    if let Some((len, parent)) = up.pop() {
                        path.truncate(len);
                        node = parent;
                    }
                    continue;
                }
                _ => {}
            }
            let Some(range) = node.dir else {
                break Outcome::NotDir;
            };
            feed.dir(node.entry, c);
            let len = path.len();
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(c);
            if mount(&path) {
                feed.tag(b"M");
                // At a mount's root, `..` leads back to the mount point's parent.
                while todo.last() == Some(&".") {
                    todo.pop();
                }
                if todo.last() == Some(&"..") {
                    todo.pop();
                    feed.tag(b"..");
                    path.truncate(len);
                    continue;
                }
                break Outcome::Mount;
            }
            let Some(child) = self.child(range, &path) else {
                break Outcome::NotFound;
            };
            if let EntryKind::Symlink(target) = &child.entry.kind {
                let last = todo.is_empty();
                if !last || follow_last {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        break Outcome::Loop;
                    }
                    feed.link(child.entry, last);
                    if target.is_empty() {
                        break Outcome::NotFound;
                    }
                    path.truncate(len);
                    if target.starts_with('/') {
                        path.clear();
                        up.clear();
                        node = self.root;
                    }
                    todo.extend(target.rsplit('/').filter(|c| !c.is_empty()));
                    continue;
                }
            }
            up.push((len, node));
            node = child;
        };
        let r = Resolved {
            path,
            node,
            outcome,
        };
        feed.end(&r);
        r
    }
}
