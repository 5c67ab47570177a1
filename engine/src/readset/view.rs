//! [`ChainView`]: the root file system a chain of layers makes, as overlayfs merges their
//! snapshots for a RUN, looked up lazily (nothing is merged up front: a check touches a few
//! thousand paths of layers that hold hundreds of thousands).
//!
//! The rules (overlayfs' lookup; `solve::layer_tree` gets the same tree by applying layers in
//! order):
//! - a path is found in the top-most layer that has an entry for it; a whiteout there means it
//!   is absent;
//! - a directory's children come from that layer and the layers below it, down to the first
//!   where the directory is opaque (included) or where the path is a non-directory or a
//!   whiteout (excluded): a non-directory replaces a directory and everything below it;
//! - a path whose parent is absent or not a directory is absent;
//! - a hard link shows its target's entry (one inode: same content and metadata).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::index::{path_hash, Entry, EntryKind, LayerIndex};

/// The layers of a root file system, bottom first.
#[derive(Debug, Clone, Default)]
pub struct ChainView {
    pub layers: Vec<Arc<LayerIndex>>,
}

/// The layers (indices into [`ChainView::layers`], `lo..=hi`) whose entries below a directory
/// are visible in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirRange {
    lo: usize,
    hi: usize,
}

/// A path found in the view: its entry (hard links resolved) and, for a directory, which
/// layers its children come from.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub entry: &'a Entry,
    pub dir: Option<DirRange>,
}

/// The root of an empty chain (`FROM scratch`): a plain directory.
static EMPTY_ROOT: Entry = Entry::IMPLICIT_DIR;

/// The tag a listing shows for an entry's kind (what `d_type` tells).
pub fn kind_tag(e: &Entry) -> char {
    match e.kind {
        EntryKind::Dir { .. } => 'd',
        EntryKind::File { .. } => 'f',
        EntryKind::Symlink(_) => 'l',
        EntryKind::HardLink(_) => 'h',
        EntryKind::Char(..) => 'c',
        EntryKind::Block(..) => 'b',
        EntryKind::Fifo => 'p',
        EntryKind::Whiteout => 'w',
    }
}

impl ChainView {
    pub fn new(layers: Vec<Arc<LayerIndex>>) -> ChainView {
        ChainView { layers }
    }

    /// The root directory.
    pub fn root(&self) -> Node<'_> {
        let Some(top) = self.layers.len().checked_sub(1) else {
            return Node {
                entry: &EMPTY_ROOT,
                dir: Some(DirRange { lo: 0, hi: 0 }),
            };
        };
        let all = DirRange { lo: 0, hi: top };
        match self.child(all, "") {
            Some(n) if n.dir.is_some() => n,
            // Every index has a root directory; an empty layer list was handled above.
            _ => Node {
                entry: &EMPTY_ROOT,
                dir: Some(all),
            },
        }
    }

    /// The entry at `rel` (a full relative path) among the children of a directory whose
    /// children come from `parent`.
    pub fn child(&self, parent: DirRange, rel: &str) -> Option<Node<'_>> {
        self.child_hashed(parent, rel, path_hash(rel))
    }

    /// [`child`](Self::child) with `hash` = [`path_hash`]`(rel)`.
    pub fn child_hashed(&self, parent: DirRange, rel: &str, hash: u64) -> Option<Node<'_>> {
        if self.layers.is_empty() {
            return None;
        }
        for m in (parent.lo..=parent.hi).rev() {
            let layer = &self.layers[m];
            let Some(e) = layer.get_hashed(rel, hash) else {
                continue;
            };
            return match &e.kind {
                EntryKind::Whiteout => None,
                EntryKind::Dir { opaque } => Some(Node {
                    entry: e,
                    dir: Some(DirRange {
                        lo: if *opaque {
                            m
                        } else {
                            self.merge_floor(rel, hash, m, parent.lo)
                        },
                        hi: m,
                    }),
                }),
                _ => Some(Node {
                    entry: layer.effective(e)?,
                    dir: None,
                }),
            };
        }
        None
    }

    /// The lowest layer whose children of directory `rel` merge into those of layer `top`:
    /// going down from `top`, until an opaque directory (included) or a non-directory or
    /// whiteout (excluded). Layers without the path have nothing below it either.
    fn merge_floor(&self, rel: &str, hash: u64, top: usize, floor: usize) -> usize {
        for m in (floor..top).rev() {
            match self.layers[m].get_hashed(rel, hash).map(|e| &e.kind) {
                None | Some(EntryKind::Dir { opaque: false }) => {}
                Some(EntryKind::Dir { opaque: true }) => return m,
                Some(_) => return m + 1,
            }
        }
        floor
    }

    /// The node at the relative path `rel` ("" is the root), following nothing: every parent
    /// must be a directory.
    pub fn node(&self, rel: &str) -> Option<Node<'_>> {
        let mut node = self.root();
        if rel.is_empty() {
            return Some(node);
        }
        for (i, _) in rel.match_indices('/').chain([(rel.len(), "")]) {
            node = self.child(node.dir?, &rel[..i])?;
        }
        Some(node)
    }

    /// The entry at `rel` (hard links resolved), or `None` if it is absent or a parent is not
    /// a directory.
    pub fn lookup(&self, rel: &str) -> Option<&Entry> {
        self.node(rel).map(|n| n.entry)
    }

    /// The merged children of the directory `rel` with their [`kind_tag`]s (empty if it is
    /// not a directory).
    pub fn children(&self, rel: &str) -> BTreeMap<String, char> {
        match self.node(rel).and_then(|n| n.dir) {
            Some(d) => self
                .children_of(d, rel)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            None => BTreeMap::new(),
        }
    }

    /// The merged children of the directory at `rel` whose children come from `dir`.
    pub fn children_of(&self, dir: DirRange, rel: &str) -> BTreeMap<&str, char> {
        let mut out: BTreeMap<&str, char> = BTreeMap::new();
        if self.layers.is_empty() {
            return out;
        }
        let mut hidden: BTreeSet<&str> = BTreeSet::new();
        for m in (dir.lo..=dir.hi).rev() {
            let layer = &self.layers[m];
            for (name, e) in layer.children(rel) {
                if out.contains_key(name) || hidden.contains(&name) {
                    continue;
                }
                match (&e.kind, layer.effective(e)) {
                    (EntryKind::Whiteout, _) | (_, None) => {
                        hidden.insert(name);
                    }
                    (_, Some(e)) => {
                        out.insert(name, kind_tag(e));
                    }
                }
            }
        }
        out
    }
}
