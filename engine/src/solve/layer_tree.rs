//! A read-only view of a stage's root filesystem, rebuilt from its layers.
//!
//! Used by COPY/ADD when they miss the cache: to find what already exists on the way to the
//! destination (directory metadata, symlinks such as `/lib → usr/lib`), to resolve `--chown`
//! names against `/etc/passwd` and `/etc/group`, and to read the files of `COPY --from`.
//! Layers are applied in order with OCI whiteout semantics. Only the contents of wanted paths
//! are spooled to temporary files; everything else is metadata only.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use strata_cache::BlobStore;

use crate::image::LayerDesc;
use crate::layer;
use crate::layer::whiteout::Whiteout;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    /// `spool` holds the content when it was wanted.
    File {
        size: u64,
        spool: Option<PathBuf>,
    },
    Symlink(String),
    /// A hard link to another path of the tree.
    HardLink(String),
    CharDevice(u32, u32),
    BlockDevice(u32, u32),
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Paths are relative (no leading `/`), `/`-separated; the root is "".
#[derive(Debug, Default)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("reading layer {digest}: {source}")]
    Read { digest: String, source: io::Error },
    #[error("layer {digest} has an unsafe path `{path}`")]
    UnsafePath { digest: String, path: String },
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        source: layer::LayerError,
    },
    #[error("layer {digest}: entry `{path}`: {reason} (a tar whose PAX and ustar sizes disagree is refused: CVE-2025-62518)")]
    PaxSizeDesync {
        digest: String,
        path: String,
        reason: String,
    },
    #[error("layer {digest}: {reason}")]
    Limit { digest: String, reason: String },
    #[error("too many levels of symbolic links resolving `/{0}`")]
    SymlinkLoop(String),
    #[error("store: {0}")]
    Store(#[from] strata_cache::StoreError),
}

/// A refusal of the layer reader, for layer `digest`.
fn read_error(e: layer::ReadError, digest: &str) -> RootfsError {
    use layer::ReadError as R;
    let digest = digest.to_string();
    match e {
        R::Stream(source) | R::PaxHeader { source, .. } => RootfsError::Read { digest, source },
        R::PaxSizeDesync { path, reason } => RootfsError::PaxSizeDesync {
            digest,
            path,
            reason,
        },
        R::UnsafePath { path, .. } => RootfsError::UnsafePath { digest, path },
        e @ R::Limit { .. } => RootfsError::Limit {
            digest,
            reason: e.to_string(),
        },
    }
}

/// Normalises a tar entry path; `None` if it would leave the root.
pub fn clean_rel(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn parent_of(p: &str) -> &str {
    p.rfind('/').map(|i| &p[..i]).unwrap_or("")
}

/// A [`Tree`] being built from the entries of its layers, bottom layer first: what
/// [`Tree::scan`] does with each entry it reads, for a caller that reads the layers itself
/// (`solve::base_scan` builds a base's tree in the same pass as its read-set index).
pub(crate) struct TreeBuilder<'w> {
    tree: Tree,
    want: &'w dyn Fn(&str) -> bool,
    spool_dir: &'w Path,
    n_spool: usize,
    /// The paths the current layer added.
    added_here: BTreeSet<String>,
}

impl<'w> TreeBuilder<'w> {
    /// `want` says which paths' contents to spool into `spool_dir`.
    pub(crate) fn new(want: &'w dyn Fn(&str) -> bool, spool_dir: &'w Path) -> Self {
        TreeBuilder {
            tree: Tree::default(),
            want,
            spool_dir,
            n_spool: 0,
            added_here: BTreeSet::new(),
        }
    }

    /// A tree of metadata only (no content spooled).
    pub(crate) fn metadata_only() -> TreeBuilder<'static> {
        TreeBuilder::new(&|_| false, Path::new(""))
    }

    /// The next entries are the next layer's.
    pub(crate) fn begin_layer(&mut self) {
        self.added_here.clear();
    }

    /// Applies one entry of the current layer (`dg`: its digest, for errors).
    pub(crate) fn entry<R: Read>(
        &mut self,
        le: &mut layer::LayerEntry<'_, R>,
        dg: &str,
    ) -> Result<(), RootfsError> {
        self.tree.apply(
            le,
            dg,
            self.want,
            self.spool_dir,
            &mut self.n_spool,
            &mut self.added_here,
        )
    }

    /// Reads layer `l` from the store and applies its entries (after [`begin_layer`]).
    ///
    /// [`begin_layer`]: Self::begin_layer
    fn read_layer_with(
        &mut self,
        blobs: &BlobStore,
        l: &LayerDesc,
        limits: layer::Limits,
    ) -> Result<(), RootfsError> {
        let dg = l.digest.to_string();
        let reader = blobs.open(&l.digest)?;
        let reader =
            layer::LayerReader::open(Box::new(reader), &l.media_type, limits).map_err(|e| {
                RootfsError::Layer {
                    digest: dg.to_string(),
                    source: e,
                }
            })?;
        // The rest of the stream is read too: the blob's digest is checked at its end, so
        // a damaged blob is an error here, not facts from wrong bytes.
        reader.for_each(
            |e| read_error(e, &dg),
            |mut entry| {
                self.entry(&mut entry, &dg)?;
                Ok(ControlFlow::Continue(()))
            },
        )
    }

    pub(crate) fn finish(self) -> Tree {
        self.tree
    }
}

impl Tree {
    /// Applies `layers` (bottom first). `want` says which paths' contents to spool into `spool_dir`.
    pub fn scan(
        blobs: &BlobStore,
        layers: &[LayerDesc],
        want: &dyn Fn(&str) -> bool,
        spool_dir: &Path,
    ) -> Result<Tree, RootfsError> {
        // The limits snapshots for RUN have: a layer too large to unpack is too large to scan.
        Tree::scan_with(blobs, layers, want, spool_dir, layer::Limits::default())
    }

    /// [`scan`](Tree::scan) under other limits.
    pub(crate) fn scan_with(
        blobs: &BlobStore,
        layers: &[LayerDesc],
        want: &dyn Fn(&str) -> bool,
        spool_dir: &Path,
        limits: layer::Limits,
    ) -> Result<Tree, RootfsError> {
        let mut b = TreeBuilder::new(want, spool_dir);
        for l in layers {
            b.begin_layer();
            b.read_layer_with(blobs, l, limits)?;
        }
        Ok(b.finish())
    }

    /// Applies one entry of a layer to the tree; `added_here`: the paths that layer added.
    fn apply<R: Read>(
        &mut self,
        le: &mut layer::LayerEntry<'_, R>,
        dg: &str,
        want: &dyn Fn(&str) -> bool,
        spool_dir: &Path,
        n_spool: &mut usize,
        added_here: &mut BTreeSet<String>,
    ) -> Result<(), RootfsError> {
        let rd = |e: io::Error| RootfsError::Read {
            digest: dg.to_string(),
            source: e,
        };
        let raw = le.shown();
        // (The layer reader refused paths that leave the root.)
        let path = clean_rel(&raw).ok_or_else(|| RootfsError::UnsafePath {
            digest: dg.to_string(),
            path: raw.clone(),
        })?;
        let dir = match path.rfind('/') {
            Some(i) => &path[..i],
            None => "",
        };
        match le.whiteout() {
            None => {}
            Some(Whiteout::Opaque) => {
                let prefix = if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                };
                let doomed: Vec<String> = self
                    .nodes
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .filter(|(k, _)| !k.is_empty() && !added_here.contains(*k) && **k != dir)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    self.nodes.remove(&k);
                }
                return Ok(());
            }
            // aufs metadata too: this view has always treated every `.wh.` name as a removal.
            Some(Whiteout::Remove(target) | Whiteout::AufsMeta(target)) => {
                let target = String::from_utf8_lossy(target);
                let victim = if dir.is_empty() {
                    target.into_owned()
                } else {
                    format!("{dir}/{target}")
                };
                self.remove_subtree(&victim);
                return Ok(());
            }
        }
        let entry = &mut le.entry;
        let h = entry.header();
        let mode = h.mode().map_err(rd)? & 0o7777;
        let uid = h.uid().map_err(rd)?;
        let gid = h.gid().map_err(rd)?;
        let et = h.entry_type();
        let link = || -> Result<String, RootfsError> {
            Ok(entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned())
                .unwrap_or_default())
        };
        let kind = if et.is_dir() {
            NodeKind::Dir
        } else if et.is_symlink() {
            NodeKind::Symlink(link()?)
        } else if et.is_hard_link() {
            let t = link()?;
            let t = clean_rel(&t).ok_or_else(|| RootfsError::UnsafePath {
                digest: dg.to_string(),
                path: t.clone(),
            })?;
            NodeKind::HardLink(t)
        } else if et.is_character_special() || et.is_block_special() {
            let ma = h.device_major().map_err(rd)?.unwrap_or(0);
            let mi = h.device_minor().map_err(rd)?.unwrap_or(0);
            if et.is_character_special() {
                NodeKind::CharDevice(ma, mi)
            } else {
                NodeKind::BlockDevice(ma, mi)
            }
        } else if et.is_fifo() {
            NodeKind::Fifo
        } else if et.is_file() || et == tar::EntryType::Continuous {
            let size = entry.size();
            let spool = if want(&path) {
                *n_spool += 1;
                let p = spool_dir.join(format!("f{n_spool}"));
                let mut f = std::fs::File::create(&p).map_err(rd)?;
                io::copy(&mut entry.take(size), &mut f).map_err(rd)?;
                Some(p)
            } else {
                None
            };
            NodeKind::File { size, spool }
        } else {
            // PAX/GNU metadata entries are consumed by the tar reader; anything else
            // (sockets cannot be in tar) is skipped.
            return Ok(());
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Ok(k) = ext.key() {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        if name == "security.capability" {
                            xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                        }
                    }
                }
            }
        }
        if !matches!(kind, NodeKind::Dir) {
            self.remove_subtree(&path);
        }
        added_here.insert(path.clone());
        self.nodes.insert(
            path,
            Node {
                kind,
                mode,
                uid,
                gid,
                xattrs,
            },
        );
        Ok(())
    }

    fn remove_subtree(&mut self, path: &str) {
        self.nodes.remove(path);
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Resolves every symlink along `path` inside the tree (absolute targets are relative to
    /// the root, `..` stops at the root), including the last component when `follow_last`.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, RootfsError> {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        todo.reverse();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            let is_last = todo.is_empty();
            let p = cur.join("/");
            if let Some(Node {
                kind: NodeKind::Symlink(t),
                ..
            }) = self.nodes.get(&p)
            {
                if is_last && !follow_last {
                    break;
                }
                hops += 1;
                if hops > 40 {
                    return Err(RootfsError::SymlinkLoop(path.to_string()));
                }
                cur.pop();
                if t.starts_with('/') {
                    cur.clear();
                }
                for part in t.split('/').rev().filter(|c| !c.is_empty()) {
                    todo.push(part.to_string());
                }
            }
        }
        Ok(cur.join("/"))
    }

    /// Reads a spooled file's content (for /etc/passwd and /etc/group).
    pub fn read_spooled(&self, path: &str) -> Option<String> {
        let mut p = path.to_string();
        for _ in 0..40 {
            match &self.nodes.get(&p)?.kind {
                NodeKind::File { spool: Some(s), .. } => return std::fs::read_to_string(s).ok(),
                NodeKind::HardLink(t) => p = t.clone(),
                _ => return None,
            }
        }
        None
    }

    /// All paths at or below `path` ("" = everything), in tree order.
    pub fn subtree<'a>(
        &'a self,
        path: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let own = self.nodes.get_key_value(path);
        own.into_iter().chain(
            self.nodes
                .range(prefix.clone()..)
                .take_while(move |(k, _)| k.starts_with(&prefix))
                .filter(|(k, _)| !k.is_empty()),
        )
    }

    pub fn parent(p: &str) -> &str {
        parent_of(p)
    }
}

/// Looks `user[:group]` up in passwd/group text. Numeric ids pass through; a user without a
/// group gets its primary group (names) or the same number (ids), as Docker does.
pub fn resolve_chown(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(u64, u64), String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let find = |text: Option<&str>, name: &str| -> Option<Vec<String>> {
        text?
            .lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.first().map(String::as_str) == Some(name))
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, None),
        Err(_) => {
            let f = find(passwd, user)
                .ok_or_else(|| format!("user `{user}` not found in the image's /etc/passwd"))?;
            let uid = f
                .get(2)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad /etc/passwd entry for `{user}`"))?;
            let gid = f.get(3).and_then(|s| s.parse().ok());
            (uid, gid)
        }
    };
    let gid = match grp {
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let f = find(group, g)
                    .ok_or_else(|| format!("group `{g}` not found in the image's /etc/group"))?;
                f.get(2)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad /etc/group entry for `{g}`"))?
            }
        },
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: NodeKind) -> Node {
        Node {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        }
    }

    /// A scan reads each layer to its end: a blob that fails verification is an error, not
    /// facts from the wrong bytes (even when the damage lies past the last entry read).
    #[test]
    fn scan_reads_to_the_end_and_verifies_the_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let store = strata_cache::Store::open(&tmp.path().join("store")).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let layer_tar = |big: &[u8]| {
            let mut b = tar::Builder::new(Vec::new());
            let mut add = |path: &str, kind: tar::EntryType, link: &str, data: &[u8]| {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(kind);
                h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_size(data.len() as u64);
                if !link.is_empty() {
                    h.set_link_name(link).unwrap();
                }
                b.append_data(&mut h, path, data).unwrap();
            };
            add("etc", tar::EntryType::Directory, "", b"");
            add("etc/os-release", tar::EntryType::Regular, "", b"ID=test\n");
            add("lib", tar::EntryType::Symlink, "usr/lib", b"");
            add("big", tar::EntryType::Regular, "", big);
            b.into_inner().unwrap()
        };
        let bytes = layer_tar(&big);
        let (digest, size) = store.blobs().put(&bytes).unwrap();
        let mt = "application/vnd.oci.image.layer.v1.tar";
        let desc = |digest: &strata_cache::Digest, size| LayerDesc {
            digest: *digest,
            size,
            media_type: mt.into(),
            diff_id: *digest,
        };
        let spool = tmp.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let scan = |layers: &[LayerDesc]| Tree::scan(store.blobs(), layers, &|_| false, &spool);
        let tree = scan(&[desc(&digest, size)]).unwrap();
        assert!(matches!(
            tree.get("lib").unwrap().kind,
            NodeKind::Symlink(_)
        ));
        assert!(matches!(
            tree.get("big").unwrap().kind,
            NodeKind::File {
                size: 3_000_000,
                ..
            }
        ));
        // The damage is in the last file's data, which the scan does not need.
        let mut other = big.clone();
        other[0] ^= 1;
        let (d2, size2) = store.blobs().put(&layer_tar(&other)).unwrap();
        other[2_999_999] ^= 1;
        std::fs::write(store.blobs().path(&d2), layer_tar(&other)).unwrap();
        assert!(scan(&[desc(&d2, size2)]).is_err());
        // Nothing is unpacked by a scan.
        assert!(!store.root().join("snapshots-v2").exists());
        // The layer reader's limits apply (the entry cap was missing here before it).
        let three = layer::Limits {
            max_entries: 3,
            ..layer::Limits::default()
        };
        let capped = Tree::scan_with(
            store.blobs(),
            &[desc(&digest, size)],
            &|_| false,
            &spool,
            three,
        );
        assert_eq!(
            capped.unwrap_err().to_string(),
            format!("layer {digest}: layer exceeds the entry count limit of 3 (a decompression bomb or an unusually large layer)")
        );
    }

    #[test]
    fn resolves_symlinks_in_root() {
        let mut t = Tree::default();
        t.nodes.insert("usr".into(), node(NodeKind::Dir));
        t.nodes.insert("usr/lib".into(), node(NodeKind::Dir));
        t.nodes
            .insert("lib".into(), node(NodeKind::Symlink("usr/lib".into())));
        t.nodes.insert(
            "abs".into(),
            node(NodeKind::Symlink("/usr/../../usr".into())),
        );
        t.nodes
            .insert("loop".into(), node(NodeKind::Symlink("loop".into())));
        assert_eq!(t.resolve("lib/x", false).unwrap(), "usr/lib/x");
        assert_eq!(t.resolve("abs/lib", true).unwrap(), "usr/lib");
        assert_eq!(t.resolve("lib", false).unwrap(), "lib");
        assert!(t.resolve("loop/x", true).is_err());
        assert_eq!(t.resolve("../../etc", true).unwrap(), "etc");
    }

    #[test]
    fn chown_lookup() {
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(
            resolve_chown("app", Some(passwd), Some(group)).unwrap(),
            (1000, 1001)
        );
        assert_eq!(
            resolve_chown("app:staff", Some(passwd), Some(group)).unwrap(),
            (1000, 50)
        );
        assert_eq!(resolve_chown("10", None, None).unwrap(), (10, 10));
        assert_eq!(resolve_chown("10:20", None, None).unwrap(), (10, 20));
        assert!(resolve_chown("nobody", Some(passwd), Some(group)).is_err());
        assert!(resolve_chown("1:nogroup", Some(passwd), Some(group)).is_err());
    }

    #[test]
    fn cleans_entry_paths() {
        assert_eq!(clean_rel("./a/b/").as_deref(), Some("a/b"));
        assert_eq!(clean_rel("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(clean_rel("a/../../b"), None);
    }
}
