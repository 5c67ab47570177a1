//! Read-set reuse (issue 20): when a RUN's parent changes (a patched base image) but nothing
//! the RUN observed of its root file system did, its old layer can be reused without running
//! it.
//!
//! This module is the sandbox-free part: [`LayerIndex`] (what one layer says about each path,
//! built in one streaming pass and cached in the store), [`ChainView`] (the merged root file
//! system of a layer chain, looked up lazily), [`fingerprint`] (kernel path walks, hashed), and
//! [`ReadSet`] (recording the fingerprints of a RUN's observations on its parent, and checking
//! them on another parent). The rules are in docs/read-set.md.

pub mod fingerprint;
pub mod index;
pub mod view;

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use strata_cache::Digest;

pub use fingerprint::{Fingerprint, Outcome, Resolved};
pub use index::{Entry, EntryKind, LayerIndex};
pub use view::ChainView;

/// The format of [`ReadSet`] and of its fingerprints; a read set of another version never
/// checks out.
pub const READSET_VERSION: u32 = 1;

/// The fingerprints of what a RUN observed of its parent's root file system.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadSet {
    pub version: u32,
    /// Sorted by `(path, what)`, no duplicates.
    pub items: Vec<Item>,
    /// The mount points the recorded walks entered (absolute physical paths for which `skip`
    /// said yes), sorted: a check stops its walks at the same places.
    pub mounts: Vec<String>,
}

/// One observation and its fingerprint on the parent it was recorded on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Absolute, as observed (for [`What::LayerEntry`]: `/` and the layer path).
    pub path: String,
    pub what: What,
    pub shape: [u8; 16],
    pub content: [u8; 16],
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum What {
    /// A syscall named the path (success or failure, executables included).
    Lookup,
    /// The directory's entries were read.
    Listing,
    /// The step's own layer has an entry at this (physical) path.
    LayerEntry,
}

/// Which part of a fingerprint changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Presence, kind, metadata, the walk to it, or a listing's names.
    Shape,
    /// A regular file's content.
    Content,
    /// The read set was recorded by another [`READSET_VERSION`].
    Format,
}

/// The first observation that does not hold on a new parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub path: String,
    pub what: What,
    pub part: Part,
}

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.path;
        match (self.what, self.part) {
            (_, Part::Format) => write!(f, "the read set has another format version"),
            (What::Lookup, Part::Content) => write!(f, "reads {p} (content)"),
            (What::Lookup, Part::Shape) => write!(f, "probed {p} (presence or metadata)"),
            (What::Listing, _) => write!(f, "lists {p}"),
            (What::LayerEntry, Part::Shape) => {
                write!(f, "its layer writes {p} (the parent's metadata there)")
            }
            (What::LayerEntry, Part::Content) => {
                write!(f, "its layer writes {p} (the parent's content there)")
            }
        }
    }
}

/// Why a layer could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum ReadSetError {
    #[error("store: {0}")]
    Store(#[from] strata_cache::StoreError),
    #[error("layer {digest}: {source}")]
    Layer {
        digest: Digest,
        source: crate::layer::LayerError,
    },
    #[error("layer {digest}: {source}")]
    Read {
        digest: Digest,
        source: crate::layer::ReadError,
    },
    /// An entry the snapshot unpacker would refuse too.
    #[error("layer {digest}: entry `{path}`: {reason}")]
    Entry {
        digest: Digest,
        path: String,
        reason: String,
    },
    #[error("layer {digest}: its content has diff_id {found}, not {expected}")]
    DiffId {
        digest: Digest,
        expected: Digest,
        found: Digest,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("encoding the index of layer {digest}: {source}")]
    Encode {
        digest: Digest,
        source: bincode::Error,
    },
}

impl ReadSet {
    /// Records the fingerprints of a RUN's observations on its parent.
    ///
    /// `lookups`/`listings`: absolute paths as traced (a relative one is walked from the root);
    /// `layer_paths`: relative paths of the step's captured layer (whiteouts given as the path
    /// they delete); `skip(abs_path)`: true for paths that are not the root file system (mount
    /// points the sandbox provides).
    ///
    /// `skip` is asked about physical paths only, during each walk, before a component is
    /// looked up: a walk that enters a path `skip` accepts records the way there and that
    /// mount point, nothing of what lies beyond (at the mount's root a `..` leads back out, as
    /// in the kernel). A layer path is not recorded if `skip` accepts it or one of its
    /// parents.
    pub fn record(
        parent: &ChainView,
        lookups: &BTreeSet<String>,
        listings: &BTreeSet<String>,
        layer_paths: &[String],
        skip: &dyn Fn(&str) -> bool,
    ) -> ReadSet {
        let mut mounts = BTreeSet::new();
        let mut abs = String::new();
        let mut mount = |rel: &str| {
            abs.clear();
            abs.push('/');
            abs.push_str(rel);
            let skipped = skip(&abs);
            if skipped {
                mounts.insert(abs.clone());
            }
            skipped
        };
        let mut items = Vec::with_capacity(lookups.len() + listings.len() + layer_paths.len());
        let mut push = |path: String, what: What, fp: Fingerprint| {
            items.push(Item {
                path,
                what,
                shape: fp.shape,
                content: fp.content,
            })
        };
        let mut walker = fingerprint::Walker::new(parent);
        for p in lookups {
            push(p.clone(), What::Lookup, walker.lookup(p, &mut mount));
        }
        for p in listings {
            push(p.clone(), What::Listing, walker.listing(p, &mut mount));
        }
        for rel in layer_paths {
            let rel = rel.trim_matches('/');
            let path = format!("/{rel}");
            let under_mount = path
                .match_indices('/')
                .skip(1)
                .map(|(i, _)| &path[..i])
                .chain([path.as_str()])
                .any(skip);
            if under_mount {
                continue;
            }
            push(
                path,
                What::LayerEntry,
                fingerprint::layer_entry(parent, rel),
            );
        }
        items.sort_by(|a, b| (&a.path, a.what).cmp(&(&b.path, b.what)));
        items.dedup_by(|a, b| a.path == b.path && a.what == b.what);
        ReadSet {
            version: READSET_VERSION,
            items,
            mounts: mounts.into_iter().collect(),
        }
    }

    /// `Ok(number of items)` when every observation holds on `parent`; `Err(first changed
    /// item, in item order)` otherwise.
    pub fn check(&self, parent: &ChainView) -> Result<usize, Changed> {
        if self.version != READSET_VERSION {
            return Err(Changed {
                path: String::new(),
                what: What::Lookup,
                part: Part::Format,
            });
        }
        let mounts: HashSet<&str> = self
            .mounts
            .iter()
            .map(|m| m.trim_start_matches('/'))
            .collect();
        let mut mount = |rel: &str| !mounts.is_empty() && mounts.contains(rel);
        let mut walker = fingerprint::Walker::new(parent);
        for item in &self.items {
            let fp = match item.what {
                What::Lookup => walker.lookup(&item.path, &mut mount),
                What::Listing => walker.listing(&item.path, &mut mount),
                What::LayerEntry => {
                    fingerprint::layer_entry(parent, item.path.trim_start_matches('/'))
                }
            };
            // Content first when a file is a file on both: its new content usually comes with
            // a new size and time, and "reads X (content)" says more than "its metadata".
            let files = fp.content != [0; 16] && item.content != [0; 16];
            let part = if files && fp.content != item.content {
                Part::Content
            } else if fp.shape != item.shape {
                Part::Shape
            } else {
                continue;
            };
            return Err(Changed {
                path: item.path.clone(),
                what: item.what,
                part,
            });
        }
        Ok(self.items.len())
    }
}

#[cfg(test)]
mod tests;
