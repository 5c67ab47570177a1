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
//! a walk can observe of it (kind, mode, owner, xattrs: search permission; not its times or
//! size, which change with every sibling added and which only a `stat` of the directory itself
//! observes, a lookup of its own); each symlink followed, with its target (and all its facts
//! when it is the last component: `lstat` observes them); each `..`; the mount point entered;
//! the node reached with all its facts (kind, mode, uid, gid, mtime, nlink, xattrs, size,
//! device numbers, link target), or where the walk failed and how. The `content` part is the
//! BLAKE3 of the content of the regular file reached, zeros otherwise. Both are the first 16
//! bytes of a BLAKE3.

use super::index::{Entry, EntryKind};
use std::collections::HashMap;

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
    dirs: HashMap<String, Node<'a>>,
}

impl<'a> Walker<'a> {
    pub fn new(view: &'a ChainView) -> Walker<'a> {
        Walker {
            view,
            root: view.root(),
            dirs: HashMap::new(),
        }
    }

    /// The node at `path` among the children of a directory whose children come from
    /// `parent` (the view's [`ChainView::child`], remembered for directories).
    fn child(&mut self, parent: DirRange, path: &str) -> Option<Node<'a>> {
        if let Some(n) = self.dirs.get(path) {
            return Some(*n);
        }
        let n = self.view.child(parent, path)?;
        if n.dir.is_some() {
            self.dirs.insert(path.to_string(), n);
        }
        Some(n)
    }

    /// The fingerprint of a lookup of `abs_path` (any syscall that named it): the walk
    /// following the last symlink, the link itself included. `mount(rel)` says whether the
    /// physical path `rel` is a mount point the walk must not enter.
    pub fn lookup(&mut self, abs_path: &str, mount: &mut dyn FnMut(&str) -> bool) -> Fingerprint {
        let mut h = Vec::with_capacity(512);
        h.extend_from_slice(b"lookup\0");
        let r = self.walk(abs_path, true, mount, &mut Feed(Some(&mut h)));
        Fingerprint {
            shape: first16(&h),
            content: content_of(&r),
        }
    }

    /// The fingerprint of a listing of the directory `abs_path`: its lookup's shape, then its
    /// merged children's names and kind tags.
    pub fn listing(&mut self, abs_path: &str, mount: &mut dyn FnMut(&str) -> bool) -> Fingerprint {
        let mut h = Vec::with_capacity(512);
        h.extend_from_slice(b"listing\0");
        let r = self.walk(abs_path, true, mount, &mut Feed(Some(&mut h)));
        if let (Outcome::Found, Some(dir)) = (r.outcome, r.node.dir) {
            let children = self.view.children_of(dir, &r.path);
            h.extend_from_slice(&(children.len() as u64).to_le_bytes());
            let mut tag = [0u8; 4];
            for (name, kind) in children {
                put_str(&mut h, name);
                h.extend_from_slice(kind.encode_utf8(&mut tag).as_bytes());
            }
        }
        Fingerprint {
            shape: first16(&h),
            content: [0; 16],
        }
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

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u32).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

/// Everything `lstat` (and `readlink`) shows of `e`, but its content.
fn facts(h: &mut Vec<u8>, e: &Entry) {
    let mut tag = [0u8; 4];
    h.extend_from_slice(kind_tag(e).encode_utf8(&mut tag).as_bytes());
    match &e.kind {
        EntryKind::File { size, .. } => {
            h.extend_from_slice(&size.to_le_bytes());
        }
        EntryKind::Symlink(t) | EntryKind::HardLink(t) => put_str(h, t),
        EntryKind::Char(a, b) | EntryKind::Block(a, b) => {
            h.extend_from_slice(&a.to_le_bytes());
            h.extend_from_slice(&b.to_le_bytes());
        }
        EntryKind::Dir { .. } | EntryKind::Fifo | EntryKind::Whiteout => {}
    }
    h.extend_from_slice(&e.mode.to_le_bytes());
    h.extend_from_slice(&e.uid.to_le_bytes());
    h.extend_from_slice(&e.gid.to_le_bytes());
    h.extend_from_slice(&e.mtime.to_le_bytes());
    h.extend_from_slice(&e.mtime_nsec.to_le_bytes());
    h.extend_from_slice(&e.nlink.to_le_bytes());
    xattrs(h, e);
}

fn xattrs(h: &mut Vec<u8>, e: &Entry) {
    h.extend_from_slice(&(e.xattrs.len() as u32).to_le_bytes());
    for (k, v) in &e.xattrs {
        put_str(h, k);
        h.extend_from_slice(&(v.len() as u32).to_le_bytes());
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
            h.extend_from_slice(&e.mode.to_le_bytes());
            h.extend_from_slice(&e.uid.to_le_bytes());
            h.extend_from_slice(&e.gid.to_le_bytes());
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
        let mut todo: Vec<&str> = abs.rsplit('/').filter(|c| !c.is_empty()).collect();
        let mut path = String::new();
        let mut node = self.root;
        // The directories above `node`: the length of `path` there, and the node.
        let mut up: Vec<(usize, Node<'a>)> = Vec::new();
        let mut hops = 0;
        let outcome = loop {
            let Some(c) = todo.pop() else {
                if must_dir && node.dir.is_none() {
                    break Outcome::NotDir;
                }
                break Outcome::Found;
            };
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
