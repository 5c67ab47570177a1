//! Layer entries and their canonical order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use super::whiteout::{self, Whiteout};
use super::LayerError;

/// Extended attributes kept in layers; all others are dropped by [`canonicalize`].
pub const KEPT_XATTRS: &[&str] = &["security.capability"];

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated; no leading `/` or `./`, no trailing `/`, no `.`/`..`/empty
    /// components.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (only `0o7777` is kept).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch (the caller passes SOURCE_DATE_EPOCH).
    pub mtime: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
        content: Content,
    },
    Symlink {
        target: String,
    },
    /// `target` is the path of an earlier (in canonical order) regular-file entry.
    HardLink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A host file, opened with `O_NOFOLLOW` when the layer is written; its size must still
    /// equal the entry's `size` then (else the file changed during the build: an error).
    Path(PathBuf),
    Bytes(Arc<[u8]>),
}

impl Entry {
    /// A directory entry with no xattrs.
    pub fn dir(path: impl Into<String>, mode: u32, uid: u64, gid: u64, mtime: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode,
            uid,
            gid,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }

    /// A regular file with in-memory content, owned by 0:0, no xattrs.
    pub fn file_bytes(path: impl Into<String>, mode: u32, mtime: u64, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size: data.len() as u64,
                content: Content::Bytes(data.into()),
            },
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Sort rank of one path component inside its directory: the opaque marker first, then other
/// whiteouts, then everything else.
fn rank(component: &str) -> u8 {
    match whiteout::classify(component.as_bytes()) {
        Some(Whiteout::Opaque) => 0,
        Some(_) => 1,
        None => 2,
    }
}

/// The canonical order of layer paths: component by component; within a directory
/// `.wh..wh..opq` first, then other `.wh.*` names, then the rest, each group bytewise;
/// a path sorts before the paths below it.
pub fn path_cmp(a: &str, b: &str) -> Ordering {
    let mut ia = a.split('/');
    let mut ib = b.split('/');
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = rank(x)
                    .cmp(&rank(y))
                    .then_with(|| x.as_bytes().cmp(y.as_bytes()));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

fn check_path(path: &str) -> Result<(), LayerError> {
    let bad = |reason| {
        Err(LayerError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    if path.contains('\0') {
        return bad("NUL byte");
    }
    for c in path.split('/') {
        match c {
            "" => return bad("empty component (leading, trailing or doubled `/`)"),
            "." => return bad("`.` component"),
            ".." => return bad("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// Puts entries into canonical form: validates paths (no `..`, `.`, empty components,
/// absolute paths, NUL) and uid/gid (≤ 32 bits), drops xattrs other than [`KEPT_XATTRS`],
/// masks modes to `0o7777`, adds missing parent directories (mode 0755, 0:0, mtime
/// `parent_mtime`), sorts with [`path_cmp`], and rejects duplicates, non-directory parents
/// and hard links whose target is not an earlier regular file.
pub fn canonicalize(mut entries: Vec<Entry>, parent_mtime: u64) -> Result<Vec<Entry>, LayerError> {
    let mut kinds: HashMap<String, bool> = HashMap::with_capacity(entries.len());
    for e in &mut entries {
        check_path(&e.path)?;
        match &e.kind {
            EntryKind::Symlink { target } if target.is_empty() || target.contains('\0') => {
                return Err(LayerError::InvalidPath {
                    path: e.path.clone(),
                    reason: "symlink target is empty or contains NUL",
                });
            }
            EntryKind::HardLink { target } => {
                check_path(target).map_err(|_| LayerError::BadHardLink {
                    path: e.path.clone(),
                    target: target.clone(),
                    reason: "target is not a valid layer path",
                })?;
            }
            _ => {}
        }
        if e.uid > u64::from(u32::MAX) || e.gid > u64::from(u32::MAX) {
            // Linux ids are 32-bit; GNU tar refuses larger PAX uid/gid values.
            return Err(LayerError::Unrepresentable {
                path: e.path.clone(),
                reason: format!("uid/gid {}:{} exceeds 32 bits", e.uid, e.gid),
            });
        }
        e.mode &= 0o7777;
        e.xattrs.retain(|k, _| KEPT_XATTRS.contains(&k.as_str()));
        let is_dir = matches!(e.kind, EntryKind::Dir);
        if kinds.insert(e.path.clone(), is_dir).is_some() {
            return Err(LayerError::Duplicate {
                path: e.path.clone(),
            });
        }
    }
    let mut added = Vec::new();
    for e in &entries {
        let mut p = e.path.as_str();
        while let Some(parent) = parent_of(p) {
            match kinds.get(parent) {
                Some(true) => break,
                Some(false) => {
                    return Err(LayerError::ParentNotDirectory {
                        path: e.path.clone(),
                        parent: parent.to_string(),
                    })
                }
                None => {
                    kinds.insert(parent.to_string(), true);
                    added.push(Entry::dir(parent, 0o755, 0, 0, parent_mtime));
                }
            }
            p = parent;
        }
    }
    entries.extend(added);
    entries.sort_by(|a, b| path_cmp(&a.path, &b.path));
    // Hard links must point at an earlier regular file.
    let mut files = std::collections::HashSet::new();
    for e in &entries {
        match &e.kind {
            EntryKind::File { .. } => {
                files.insert(e.path.as_str());
            }
            EntryKind::HardLink { target } if !files.contains(target.as_str()) => {
                return Err(LayerError::BadHardLink {
                    path: e.path.clone(),
                    target: target.clone(),
                    reason: "target must be a regular file that sorts before the link",
                });
            }
            _ => {}
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn file(path: &str) -> Entry {
        Entry::file_bytes(path, 0o644, 0, b"x")
    }

    #[test]
    fn canonical_order_components_and_whiteouts() {
        let input = [
            "a-b",
            "a/b",
            "a.txt",
            "a/.wh.z",
            "a/.wh..wh..opq",
            "a/-",
            "b",
            "a/B",
            "a/.hidden",
        ];
        let mut entries: Vec<Entry> = input.iter().map(|p| file(p)).collect();
        entries.push(Entry::dir("a", 0o755, 0, 0, 0));
        let out = canonicalize(entries, 0).unwrap();
        assert_eq!(
            paths(&out),
            [
                "a",
                "a/.wh..wh..opq",
                "a/.wh.z",
                "a/-",
                "a/.hidden",
                "a/B",
                "a/b",
                "a-b",
                "a.txt",
                "b"
            ]
        );
        // A plain byte sort would put `a-b` before `a/b`: components keep the subtree together.
        assert!(path_cmp("a/b", "a-b").is_lt());
        assert!("a-b" < "a/b");
        assert!(path_cmp("a", "a/b").is_lt());
        assert!(path_cmp("a/.wh.x", "a/-").is_lt());
        assert!(path_cmp("a/.wh..wh..opq", "a/.wh.-").is_lt());
    }

    #[test]
    fn adds_parents_and_keeps_explicit_ones() {
        let mut explicit = Entry::dir("x", 0o700, 5, 6, 99);
        explicit.xattrs.insert("user.foo".into(), b"bar".to_vec());
        let out = canonicalize(vec![file("x/y/z/f"), explicit], 7).unwrap();
        assert_eq!(paths(&out), ["x", "x/y", "x/y/z", "x/y/z/f"]);
        assert_eq!(
            (out[0].mode, out[0].uid, out[0].gid, out[0].mtime),
            (0o700, 5, 6, 99)
        );
        assert!(out[0].xattrs.is_empty());
        for d in &out[1..3] {
            assert_eq!(d.kind, EntryKind::Dir);
            assert_eq!((d.mode, d.uid, d.gid, d.mtime), (0o755, 0, 0, 7));
        }
    }

    #[test]
    fn rejects_duplicates_and_bad_paths() {
        assert!(matches!(
            canonicalize(vec![file("a/b"), file("a/b")], 0),
            Err(LayerError::Duplicate { .. })
        ));
        assert!(matches!(
            canonicalize(vec![file("a"), Entry::dir("a", 0o755, 0, 0, 0)], 0),
            Err(LayerError::Duplicate { .. })
        ));
        for bad in [
            "", "/a", "a//b", "a/", "./a", "a/./b", "a/../b", "..", "a\0b",
        ] {
            assert!(
                matches!(
                    canonicalize(vec![file(bad)], 0),
                    Err(LayerError::InvalidPath { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            canonicalize(vec![file("a"), file("a/b")], 0),
            Err(LayerError::ParentNotDirectory { .. })
        ));
        let mut big = file("u");
        big.uid = 1 << 32;
        assert!(matches!(
            canonicalize(vec![big], 0),
            Err(LayerError::Unrepresentable { .. })
        ));
    }

    #[test]
    fn xattrs_filtered_and_mode_masked() {
        let mut e = file("bin/ping");
        e.mode = 0o104755;
        e.xattrs
            .insert("security.capability".into(), vec![1, 0, 0, 2]);
        e.xattrs
            .insert("user.com.apple.quarantine".into(), b"q".to_vec());
        e.xattrs
            .insert("trusted.overlay.opaque".into(), b"y".to_vec());
        e.xattrs.insert("security.selinux".into(), b"ctx".to_vec());
        let out = canonicalize(vec![e], 0).unwrap();
        let f = &out[1];
        assert_eq!(f.mode, 0o4755);
        assert_eq!(f.xattrs.keys().collect::<Vec<_>>(), ["security.capability"]);
    }

    #[test]
    fn hard_links_must_follow_their_target() {
        let link = |p: &str, t: &str| Entry {
            kind: EntryKind::HardLink { target: t.into() },
            ..file(p)
        };
        assert!(canonicalize(vec![link("b", "a"), file("a")], 0).is_ok());
        assert!(matches!(
            canonicalize(vec![link("a", "b"), file("b")], 0),
            Err(LayerError::BadHardLink { .. })
        ));
        assert!(matches!(
            canonicalize(vec![link("a", "missing")], 0),
            Err(LayerError::BadHardLink { .. })
        ));
        assert!(matches!(
            canonicalize(vec![link("a", "../etc/passwd")], 0),
            Err(LayerError::BadHardLink { .. })
        ));
    }
}
