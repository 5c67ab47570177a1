//! WORKDIR's layer: the directory and its missing parents, created as BuildKit's
//! `mkdir -p` file operation creates them.
//!
//! - Created directories: mode 0755, owned by the USER in effect (a name is looked up in the
//!   parent rootfs' `/etc/passwd` and `/etc/group`, as `COPY --chown` does; no USER: root).
//! - Directories that exist keep their mode, owner and xattrs. Those on the way to a created
//!   one are written as explicit entries with that metadata (as an overlay diff would show
//!   them); nothing else of the parent is.
//! - Symlinks on the way are followed inside the rootfs (`WORKDIR /var/run/x` with
//!   `/var/run → /run` creates `/run/x`).
//! - When the directory exists the layer has no entries: an empty layer, as BuildKit emits.
//! - Every entry's mtime is SOURCE_DATE_EPOCH.
//!
//! The layer is a function of the parent rootfs, the path, the user and SOURCE_DATE_EPOCH,
//! which is what the step's key holds (docs/cache-keys.md).

use std::path::Path;

use strata_cache::{LayerRecord, Store};

use super::layer_tree::{resolve_chown, NodeKind, Tree};
use super::{chunk_cache, BuildError, BuildOptions};
use crate::image::LayerDesc;
use crate::layer::{self, Entry, EntryKind};
use crate::plan::WorkdirStep;

/// Whether `user` needs `/etc/passwd` or `/etc/group` (it names a user or a group).
fn needs_names(user: Option<&str>) -> bool {
    user.is_some_and(|u| u.split(':').any(|p| p.parse::<u64>().is_err()))
}

/// The entries of the WORKDIR layer over `tree` (the parent rootfs).
pub(crate) fn entries(
    tree: &Tree,
    path: &str,
    user: Option<&str>,
    sde: u64,
) -> Result<Vec<Entry>, BuildError> {
    let bad = |message: String| BuildError::Workdir {
        path: path.to_string(),
        message,
    };
    let resolved = tree.resolve(path, true)?;
    let parts: Vec<&str> = resolved.split('/').filter(|c| !c.is_empty()).collect();
    let mut existing: Vec<Entry> = Vec::new();
    let mut created: Vec<String> = Vec::new();
    for i in 0..parts.len() {
        let p = parts[..=i].join("/");
        match tree.get(&p) {
            None => created.push(p),
            Some(n) if matches!(n.kind, NodeKind::Dir) => existing.push(Entry {
                path: p,
                kind: EntryKind::Dir,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                mtime: sde,
                xattrs: n.xattrs.clone(),
            }),
            Some(_) => {
                return Err(bad(format!(
                    "`/{p}` exists and is not a directory\nhint: remove it in an earlier step, \
                     or choose another WORKDIR"
                )))
            }
        }
    }
    if created.is_empty() {
        return Ok(Vec::new());
    }
    let (uid, gid) = match user.filter(|u| !u.is_empty()) {
        None => (0, 0),
        Some(u) => resolve_chown(
            u,
            tree.read_spooled("etc/passwd").as_deref(),
            tree.read_spooled("etc/group").as_deref(),
        )
        .map_err(|m| {
            bad(format!(
                "USER {u}: {m}\nhint: WORKDIR creates the directory owned by USER; create the \
                 user in an earlier step, or use a numeric USER uid[:gid]"
            ))
        })?,
    };
    let mut out = existing;
    out.extend(
        created
            .into_iter()
            .map(|p| Entry::dir(p, 0o755, uid, gid, sde)),
    );
    Ok(out)
}

/// Builds and stores the WORKDIR layer over `parent_layers`.
pub(crate) fn execute(
    store: &Store,
    step: &WorkdirStep,
    parent_layers: &[LayerDesc],
    opts: &BuildOptions,
    spool: &Path,
) -> Result<LayerRecord, BuildError> {
    let user = step.user.as_deref();
    let tree = if parent_layers.is_empty() {
        Tree::default()
    } else {
        let names = needs_names(user);
        let want = |p: &str| names && (p == "etc/passwd" || p == "etc/group");
        Tree::scan(store.blobs(), parent_layers, &want, spool)?
    };
    let entries = entries(&tree, &step.path, user, opts.source_date_epoch)?;
    let entries = layer::canonicalize(entries, opts.source_date_epoch)?;
    let mut w = store.blobs().writer()?;
    let chunks = chunk_cache(store);
    let out = layer::write_layer_cached(&entries, opts.compression, &mut w, Some(chunks.clone()))?;
    super::commit_layer(store, w, &out, chunks.as_ref(), opts.compression)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::layer_tree::Node;
    use std::collections::BTreeMap;

    fn node(kind: NodeKind, mode: u32, uid: u64) -> Node {
        Node {
            kind,
            mode,
            uid,
            gid: uid,
            xattrs: BTreeMap::new(),
        }
    }

    fn tree() -> Tree {
        let mut t = Tree::default();
        t.nodes.insert("".into(), node(NodeKind::Dir, 0o755, 0));
        t.nodes.insert("home".into(), node(NodeKind::Dir, 0o755, 0));
        t.nodes
            .insert("home/http".into(), node(NodeKind::Dir, 0o700, 33));
        t.nodes.insert("tmp".into(), node(NodeKind::Dir, 0o1777, 0));
        t.nodes.insert("run".into(), node(NodeKind::Dir, 0o755, 0));
        t.nodes.insert("var".into(), node(NodeKind::Dir, 0o755, 0));
        t.nodes.insert(
            "var/run".into(),
            node(NodeKind::Symlink("/run".into()), 0o777, 0),
        );
        t.nodes.insert("etc".into(), node(NodeKind::Dir, 0o755, 0));
        t.nodes.insert(
            "etc/hostname".into(),
            node(
                NodeKind::File {
                    size: 1,
                    spool: None,
                },
                0o644,
                0,
            ),
        );
        t
    }

    fn summary(e: &[Entry]) -> Vec<(String, u32, u64, u64)> {
        e.iter()
            .map(|e| (e.path.clone(), e.mode, e.uid, e.gid))
            .collect()
    }

    #[test]
    fn workdir_creates_missing_dirs_as_the_user_and_keeps_existing_ones() {
        let e = entries(&tree(), "/home/http/x/y", Some("33:44"), 7).unwrap();
        assert_eq!(
            summary(&e),
            vec![
                ("home".into(), 0o755, 0, 0),
                ("home/http".into(), 0o700, 33, 33),
                ("home/http/x".into(), 0o755, 33, 44),
                ("home/http/x/y".into(), 0o755, 33, 44),
            ]
        );
        assert!(e.iter().all(|e| e.mtime == 7));
        // No USER: root.
        let e = entries(&tree(), "/tmp/w", None, 0).unwrap();
        assert_eq!(
            summary(&e),
            vec![("tmp".into(), 0o1777, 0, 0), ("tmp/w".into(), 0o755, 0, 0)]
        );
    }

    #[test]
    fn workdir_that_exists_is_an_empty_layer() {
        assert!(entries(&tree(), "/home/http", Some("nobody"), 0)
            .unwrap()
            .is_empty());
        assert!(entries(&tree(), "/var/run", None, 0).unwrap().is_empty());
    }

    #[test]
    fn workdir_follows_symlinks_in_the_rootfs() {
        let e = entries(&tree(), "/var/run/app", None, 0).unwrap();
        assert_eq!(
            summary(&e),
            vec![("run".into(), 0o755, 0, 0), ("run/app".into(), 0o755, 0, 0)]
        );
    }

    #[test]
    fn workdir_errors_name_the_problem() {
        let e = entries(&tree(), "/etc/hostname/x", None, 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("/etc/hostname` exists and is not a directory"),
            "{e}"
        );
        let e = entries(&tree(), "/srv/x", Some("http"), 0).unwrap_err();
        assert!(e.to_string().contains("user `http` not found"), "{e}");
    }

    #[test]
    fn workdir_user_names_need_the_passwd_file() {
        assert!(needs_names(Some("http")));
        assert!(needs_names(Some("1000:wheel")));
        assert!(!needs_names(Some("1000:1000")));
        assert!(!needs_names(None));
    }
}
