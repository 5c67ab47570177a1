//! COPY and ADD: compute the step's key from its inputs, and, on a miss, write its layer.
//!
//! Key inputs (see `docs/cache-keys.md`): the parent key (not for `--link`), the expanded
//! instruction (dest, chown, chmod, link, excludes, ADD-ness), the compression, and per source
//! file its path relative to the source, type, normalised mode and content digest (BLAKE3; the
//! stat cache avoids re-reading unchanged files). `--from` sources are keyed by the source
//! stage's key or image digest instead of their content.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use strata_cache::{ExplainInput, StatEntry, Store};

use crate::build::rootfs::{self, NodeKind, Tree};
use crate::build::BuildError;
use crate::context::{self, Context, ContextEntry, ContextKind, ResolvedSource};
use crate::image::LayerDesc;
use crate::layer::{self, Content, Entry, EntryKind};
use crate::plan::key::{Key, KeyHasher};
use crate::plan::{CopySource, CopySpec};

/// One prepared source of a COPY/ADD.
pub(crate) enum Prepared {
    Context {
        resolved: ResolvedSource,
    },
    Heredoc {
        name: String,
        content: String,
    },
    /// A path or glob in another stage's or image's rootfs.
    Tree {
        pattern: String,
    },
}

pub(crate) struct PreparedCopy {
    pub key: Key,
    pub explain: Vec<ExplainInput>,
    pub sources: Vec<Prepared>,
    pub files: usize,
    pub hashed: usize,
    pub bytes_hashed: u64,
}

/// The identity of the rootfs `--from` reads from.
pub(crate) enum FromSource<'a> {
    Context,
    Rootfs { key: Key, layers: &'a [LayerDesc] },
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Context file modes: the group/other bits of a checkout depend on the umask, and git only
/// tracks the executable bit, so files become 0644 or 0755 and directories 0755.
pub fn normalise_context_mode(kind: &ContextKind, mode: u32) -> u32 {
    match kind {
        ContextKind::Dir => 0o755,
        ContextKind::Symlink { .. } => 0o777,
        ContextKind::File { .. } => {
            if mode & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        }
    }
}

fn hash_file(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((*h.finalize().as_bytes(), n_total))
}

fn h32(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// Resolves and hashes the sources, and computes the step key.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    store: &Store,
    ctx: &Context,
    spec: &CopySpec,
    parent: &Key,
    from: &FromSource<'_>,
    compression_id: &str,
    sde: u64,
    use_stat_cache: bool,
) -> Result<PreparedCopy, BuildError> {
    let mut k = KeyHasher::new(if spec.add { "add" } else { "copy" });
    let mut explain = Vec::new();
    if !spec.link
        || spec
            .chown
            .as_deref()
            .is_some_and(|c| c.chars().any(|ch| ch.is_ascii_alphabetic()))
    {
        // --link layers do not depend on the parent rootfs, unless --chown names a user that
        // has to be looked up in it.
        k.key("parent", parent);
        explain.push(ExplainInput {
            name: "parent".into(),
            value: *parent,
        });
    }
    let mut ins = KeyHasher::new("copy-instruction");
    ins.str("dest", &spec.dest)
        .opt_str("chown", spec.chown.as_deref())
        .opt_str("chmod", spec.chmod.map(|m| format!("{m:o}")).as_deref())
        .u64("link", spec.link as u64)
        .strs("exclude", &spec.excludes)
        .str("compression", compression_id)
        // Every entry's mtime is SOURCE_DATE_EPOCH: it is part of the layer's bytes.
        .u64("source-date-epoch", sde);
    match from {
        FromSource::Context => {
            ins.str("from", "context");
        }
        FromSource::Rootfs { key, .. } => {
            ins.key("from", key);
        }
    }
    let mut sources = Vec::new();
    let mut files = 0;
    let mut hashed = 0;
    let mut bytes_hashed = 0;
    for s in &spec.sources {
        match s {
            CopySource::Heredoc { name, content } => {
                ins.str("heredoc-name", name).str("heredoc", content);
                sources.push(Prepared::Heredoc {
                    name: name.clone(),
                    content: content.clone(),
                });
            }
            CopySource::Path(p) if !matches!(from, FromSource::Context) => {
                ins.str("path", p);
                sources.push(Prepared::Tree { pattern: p.clone() });
            }
            CopySource::Path(p) => {
                ins.str("pattern", p);
                let resolved = ctx.resolve(std::slice::from_ref(p), &spec.excludes)?;
                for r in resolved {
                    let (hashes, n_hashed, n_bytes) = hash_entries(store, ctx, &r, use_stat_cache)?;
                    files += r.entries.len();
                    hashed += n_hashed;
                    bytes_hashed += n_bytes;
                    k.str("source", &r.rel).u64("is_dir", r.is_dir as u64);
                    for (e, h) in r.entries.iter().zip(&hashes) {
                        let mode = normalise_context_mode(&e.kind, e.mode);
                        let (kind, content): (&str, Vec<u8>) = match (&e.kind, h) {
                            (ContextKind::File { .. }, Some(h)) => ("f", h.to_vec()),
                            (ContextKind::Dir, _) => ("d", Vec::new()),
                            (ContextKind::Symlink { target }, _) => {
                                ("l", target.as_bytes().to_vec())
                            }
                            (ContextKind::File { .. }, None) => unreachable!("files are hashed"),
                        };
                        k.str("path", &e.rel_in_source)
                            .str("kind", kind)
                            .u64("mode", mode as u64)
                            .bytes("content", &content);
                        let shown = if r.rel.is_empty() || e.rel_in_source.is_empty() {
                            format!("{}{}", r.rel, e.rel_in_source)
                        } else {
                            format!("{}/{}", r.rel, e.rel_in_source)
                        };
                        explain.push(ExplainInput {
                            name: format!("content:{shown}"),
                            value: h32(&[kind.as_bytes(), &content]),
                        });
                        explain.push(ExplainInput {
                            name: format!("mode:{shown}"),
                            value: h32(&[&mode.to_le_bytes()]),
                        });
                    }
                    sources.push(Prepared::Context { resolved: r });
                }
            }
        }
    }
    let ins_key = ins.finish();
    k.key("instruction", &ins_key);
    explain.push(ExplainInput {
        name: "instruction".into(),
        value: ins_key,
    });
    Ok(PreparedCopy {
        key: k.finish(),
        explain,
        sources,
        files,
        hashed,
        bytes_hashed,
    })
}

/// Per entry its content hash (files only), how many files were read, how many bytes.
type Hashed = (Vec<Option<[u8; 32]>>, usize, u64);

/// Content hashes for the files among `entries`, from the stat cache where it can be trusted.
fn hash_entries(
    store: &Store,
    ctx: &Context,
    source: &ResolvedSource,
    use_stat_cache: bool,
) -> Result<Hashed, BuildError> {
    use std::os::unix::ffi::OsStrExt;
    let entries: &[ContextEntry] = &source.entries;
    // One stat-cache record per source tree (host path of the context + the source), read in
    // one go: a per-file lookup of 55k files cost more than the rest of a no-op rebuild.
    let set_id = {
        let mut h = blake3::Hasher::new();
        h.update(b"strata-stat-set-v1\0");
        h.update(ctx.root().as_os_str().as_bytes());
        h.update(b"\0");
        h.update(source.rel.as_bytes());
        *h.finalize().as_bytes()
    };
    let file_idx: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, ContextKind::File { .. }))
        .map(|(i, _)| i)
        .collect();
    let keys: Vec<&[u8]> = file_idx
        .iter()
        .map(|&i| entries[i].host_path.as_os_str().as_bytes())
        .collect();
    let set = if use_stat_cache {
        store.index().get_stat_set(&set_id)?.unwrap_or_default()
    } else {
        Vec::new()
    };
    let by_path: std::collections::HashMap<&[u8], &StatEntry> =
        set.iter().map(|(p, e)| (p.as_slice(), e)).collect();
    let cached: Vec<Option<StatEntry>> = keys.iter().map(|k| by_path.get(k).map(|e| **e)).collect();
    let set_matches_paths = set.len() == keys.len();
    // File timestamps come from the kernel's coarse clock, which can lag the real time by a
    // tick: a write made just after this moment may carry an mtime slightly before it. Backdate
    // the record by a safe margin so such an entry counts as racy and is hashed again.
    let recorded_ns = now_ns() - 50_000_000;
    type One = ([u8; 32], Option<StatEntry>, u64);
    let results: Vec<Result<One, BuildError>> = file_idx
        .par_iter()
        .zip(cached.into_par_iter())
        .map(|(&i, c)| {
            let e = &entries[i];
            if let Some(c) = c {
                if c.matches(e.dev, e.ino, e.size, e.mtime_ns, e.ctime_ns, e.mode) && !c.is_racy() {
                    return Ok((c.blake3, None, 0));
                }
            }
            let (h, n) = hash_file(&e.host_path).map_err(|err| BuildError::Io {
                path: e.host_path.clone(),
                source: err,
            })?;
            if n != e.size {
                return Err(BuildError::ContextChanged {
                    path: e.host_path.clone(),
                });
            }
            let st = StatEntry {
                dev: e.dev,
                ino: e.ino,
                size: e.size,
                mtime_ns: e.mtime_ns,
                ctime_ns: e.ctime_ns,
                mode: e.mode,
                recorded_ns,
                blake3: h,
            };
            Ok((h, Some(st), n))
        })
        .collect();
    let mut out = vec![None; entries.len()];
    let mut new_set: Vec<(Vec<u8>, StatEntry)> = Vec::with_capacity(keys.len());
    let mut hashed = 0;
    let mut bytes = 0;
    for (j, (&i, r)) in file_idx.iter().zip(results).enumerate() {
        let (h, st, n) = r?;
        out[i] = Some(h);
        let entry = match st {
            Some(st) => {
                hashed += 1;
                bytes += n;
                st
            }
            None => *by_path[keys[j]],
        };
        new_set.push((keys[j].to_vec(), entry));
    }
    // The old set is no longer needed: free it before the new one is encoded (a 55k-file set
    // is ~10 MB decoded), so a change does not hold both plus the encoding at once.
    drop(by_path);
    drop(set);
    if use_stat_cache && (hashed > 0 || !set_matches_paths) {
        store.index().put_stat_set(&set_id, &new_set)?;
    }
    Ok((out, hashed, bytes))
}

fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), name.is_empty()) {
        (_, true) => dir.to_string(),
        (true, false) => name.to_string(),
        (false, false) => format!("{dir}/{name}"),
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Builds the entries of the layer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn entries(
    store: &Store,
    spec: &CopySpec,
    prepared: &PreparedCopy,
    parent_layers: &[LayerDesc],
    from: &FromSource<'_>,
    sde: u64,
    spool: &Path,
) -> Result<Vec<Entry>, BuildError> {
    let chown_needs_names = spec
        .chown
        .as_deref()
        .is_some_and(|c| c.chars().any(|ch| ch.is_ascii_alphabetic()));
    // The parent rootfs, when the layer depends on it (metadata of existing directories on
    // the way to the destination, symlinks in it, user names for --chown).
    let parent_tree = if (!spec.link || chown_needs_names) && !parent_layers.is_empty() {
        let want = |p: &str| chown_needs_names && (p == "etc/passwd" || p == "etc/group");
        Tree::scan(store.blobs(), parent_layers, &want, spool)?
    } else {
        Tree::default()
    };
    let owner = match &spec.chown {
        Some(c) => Some(
            rootfs::resolve_chown(
                c,
                parent_tree.read_spooled("etc/passwd").as_deref(),
                parent_tree.read_spooled("etc/group").as_deref(),
            )
            .map_err(|msg| BuildError::Chown {
                spec: c.clone(),
                message: msg,
            })?,
        ),
        None => None,
    };
    let link_mode = spec.link;
    let tree_of = |p: &str| -> Option<&rootfs::Node> {
        if link_mode {
            None
        } else {
            parent_tree.get(p)
        }
    };

    // Destination: resolve symlinks on the way (e.g. `/lib → usr/lib`), in-root.
    let dest_syntax_dir = spec.dest.ends_with('/');
    let dest_rel = spec.dest.trim_matches('/').to_string();
    let resolved_dest = if link_mode {
        dest_rel.clone()
    } else {
        parent_tree.resolve(&dest_rel, true)?
    };
    let dest_exists_dir = matches!(
        tree_of(&resolved_dest).map(|n| &n.kind),
        Some(NodeKind::Dir)
    );
    let n_items = prepared.sources.len();
    let dest_is_dir = dest_syntax_dir || dest_exists_dir || n_items > 1 || dest_rel.is_empty();
    let dest_rel = if dest_is_dir || dest_rel.is_empty() {
        resolved_dest
    } else {
        let parent = parent_tree.resolve(Tree::parent(&dest_rel), true)?;
        join(&parent, basename(&dest_rel))
    };

    let ctx_owner = owner.unwrap_or((0, 0));
    let file_mode = |m: u32| spec.chmod.unwrap_or(m);
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let mut put = |e: Entry| {
        out.insert(e.path.clone(), e);
    };
    let mk = |path: String, kind: EntryKind, mode: u32, (uid, gid): (u64, u64)| Entry {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime: sde,
        xattrs: BTreeMap::new(),
    };
    let mut dest_dir_needed = dest_is_dir && !dest_rel.is_empty();
    let mut src_tree_cache: Option<Tree> = None;
    for src in &prepared.sources {
        match src {
            Prepared::Heredoc { name, content } => {
                let target = if dest_is_dir {
                    join(&dest_rel, name)
                } else {
                    dest_rel.clone()
                };
                let bytes: Arc<[u8]> = Arc::from(content.as_bytes());
                put(mk(
                    target,
                    EntryKind::File {
                        size: bytes.len() as u64,
                        content: Content::Bytes(bytes),
                    },
                    file_mode(0o644),
                    ctx_owner,
                ));
            }
            Prepared::Context { resolved, .. } => {
                for e in &resolved.entries {
                    let mode = normalise_context_mode(&e.kind, e.mode);
                    let is_file_source = !resolved.is_dir;
                    let target = if is_file_source {
                        if dest_is_dir {
                            join(&dest_rel, basename(&resolved.rel))
                        } else {
                            dest_rel.clone()
                        }
                    } else {
                        join(&dest_rel, &e.rel_in_source)
                    };
                    if spec.add && is_file_source {
                        if let Some(mut ar) = layer::open_archive(&e.host_path)? {
                            // ADD of a local archive: its contents land in the destination,
                            // which is a directory whether or not it ends in `/` (Docker's rule).
                            let base = dest_rel.clone();
                            dest_dir_needed = !base.is_empty();
                            extract_archive(
                                &mut ar,
                                &base,
                                &e.host_path,
                                sde,
                                owner,
                                spool,
                                &mut put,
                            )?;
                            continue;
                        }
                    }
                    let kind = match &e.kind {
                        ContextKind::File { size } => EntryKind::File {
                            size: *size,
                            content: Content::Path(e.host_path.clone()),
                        },
                        ContextKind::Dir => EntryKind::Dir,
                        ContextKind::Symlink { target } => EntryKind::Symlink {
                            target: target.clone(),
                        },
                    };
                    let mode = if matches!(e.kind, ContextKind::Symlink { .. }) {
                        mode
                    } else {
                        file_mode(mode)
                    };
                    put(mk(target, kind, mode, ctx_owner));
                }
            }
            Prepared::Tree { pattern } => {
                let FromSource::Rootfs { layers, .. } = from else {
                    unreachable!("tree sources need a rootfs")
                };
                if src_tree_cache.is_none() {
                    // Spool every file of the source rootfs that a pattern can reach.
                    let pats: Vec<String> = prepared
                        .sources
                        .iter()
                        .filter_map(|s| match s {
                            Prepared::Tree { pattern } => {
                                Some(pattern.trim_matches('/').to_string())
                            }
                            _ => None,
                        })
                        .collect();
                    let want = |p: &str| {
                        pats.iter().any(|pat| {
                            pat.is_empty()
                                || context::has_meta(pat)
                                || p == pat
                                || p.starts_with(&format!("{pat}/"))
                        })
                    };
                    src_tree_cache = Some(Tree::scan(store.blobs(), layers, &want, spool)?);
                }
                let st = src_tree_cache.as_ref().unwrap();
                let pat = pattern.trim_matches('/');
                let matches: Vec<String> = if context::has_meta(pat) {
                    let depth = pat.split('/').count();
                    st.nodes
                        .keys()
                        .filter(|k| !k.is_empty() && k.split('/').count() == depth)
                        .filter(|k| context::glob_match(pat, k).unwrap_or(false))
                        .cloned()
                        .collect()
                } else {
                    let r = st.resolve(pat, true)?;
                    if r.is_empty() || st.get(&r).is_some() {
                        vec![r]
                    } else {
                        vec![]
                    }
                };
                if matches.is_empty() {
                    return Err(BuildError::FromSourceMissing {
                        path: pattern.clone(),
                    });
                }
                for m in matches {
                    let is_dir =
                        m.is_empty() || matches!(st.get(&m).map(|n| &n.kind), Some(NodeKind::Dir));
                    for (p, node) in st.subtree(&m) {
                        if is_dir && p == &m {
                            continue;
                        }
                        let rel_in = if is_dir {
                            p[m.len()..].trim_start_matches('/')
                        } else {
                            ""
                        };
                        let target = if !is_dir {
                            if dest_is_dir {
                                join(&dest_rel, basename(&m))
                            } else {
                                dest_rel.clone()
                            }
                        } else {
                            join(&dest_rel, rel_in)
                        };
                        let kind = match &node.kind {
                            NodeKind::Dir => EntryKind::Dir,
                            NodeKind::File {
                                size,
                                spool: Some(s),
                            } => EntryKind::File {
                                size: *size,
                                content: Content::Path(s.clone()),
                            },
                            NodeKind::File { spool: None, .. } => continue,
                            NodeKind::Symlink(t) => EntryKind::Symlink { target: t.clone() },
                            NodeKind::HardLink(t) => {
                                // Copy the link's content as a file (its target may be outside
                                // the copied subtree).
                                let mut cur = t.clone();
                                let mut found = None;
                                for _ in 0..40 {
                                    match st.get(&cur).map(|n| &n.kind) {
                                        Some(NodeKind::HardLink(n)) => cur = n.clone(),
                                        Some(NodeKind::File {
                                            size,
                                            spool: Some(s),
                                        }) => {
                                            found = Some(EntryKind::File {
                                                size: *size,
                                                content: Content::Path(s.clone()),
                                            });
                                            break;
                                        }
                                        _ => break,
                                    }
                                }
                                match found {
                                    Some(k) => k,
                                    None => continue,
                                }
                            }
                            NodeKind::CharDevice(a, b) => EntryKind::CharDevice {
                                major: *a,
                                minor: *b,
                            },
                            NodeKind::BlockDevice(a, b) => EntryKind::BlockDevice {
                                major: *a,
                                minor: *b,
                            },
                            NodeKind::Fifo => EntryKind::Fifo,
                        };
                        let mode = if matches!(kind, EntryKind::Symlink { .. }) {
                            node.mode
                        } else {
                            file_mode(node.mode)
                        };
                        let mut e = mk(target, kind, mode, owner.unwrap_or((node.uid, node.gid)));
                        e.xattrs = node.xattrs.clone();
                        put(e);
                    }
                }
            }
        }
    }
    // The destination directory and every parent on the way: existing ones keep their
    // metadata from the parent rootfs; created ones are 0755, owned by --chown (or root).
    if dest_dir_needed {
        out.entry(dest_rel.clone()).or_insert_with(|| Entry {
            path: dest_rel.clone(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: ctx_owner.0,
            gid: ctx_owner.1,
            mtime: sde,
            xattrs: BTreeMap::new(),
        });
    }
    let paths: Vec<String> = out.keys().cloned().collect();
    for p in paths {
        let mut cur = Tree::parent(&p).to_string();
        while !cur.is_empty() && !out.contains_key(&cur) {
            let entry = match tree_of(&cur) {
                Some(n) if matches!(n.kind, NodeKind::Dir) => Entry {
                    path: cur.clone(),
                    kind: EntryKind::Dir,
                    mode: n.mode,
                    uid: n.uid,
                    gid: n.gid,
                    mtime: sde,
                    xattrs: n.xattrs.clone(),
                },
                _ => {
                    let on_dest = dest_rel == cur || dest_rel.starts_with(&format!("{cur}/"));
                    let (uid, gid) = if on_dest { ctx_owner } else { (0, 0) };
                    Entry {
                        path: cur.clone(),
                        kind: EntryKind::Dir,
                        mode: 0o755,
                        uid,
                        gid,
                        mtime: sde,
                        xattrs: BTreeMap::new(),
                    }
                }
            };
            out.insert(cur.clone(), entry);
            cur = Tree::parent(&cur).to_string();
        }
    }
    Ok(out.into_values().collect())
}

/// Puts the entries of a local archive under `base`, with their own metadata (or --chown).
fn extract_archive(
    ar: &mut tar::Archive<Box<dyn Read + Send>>,
    base: &str,
    archive_path: &Path,
    sde: u64,
    owner: Option<(u64, u64)>,
    spool: &Path,
    put: &mut dyn FnMut(Entry),
) -> Result<(), BuildError> {
    let bad = |e: std::io::Error| BuildError::Archive {
        path: archive_path.to_path_buf(),
        message: e.to_string(),
    };
    let mut n = 0usize;
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = rootfs::clean_rel(&raw) else {
            return Err(BuildError::Archive {
                path: archive_path.to_path_buf(),
                message: format!("entry `{raw}` points outside the destination"),
            });
        };
        if rel.is_empty() {
            continue;
        }
        let h = entry.header().clone();
        let mode = h.mode().map_err(bad)? & 0o7777;
        let ids = match owner {
            Some(o) => o,
            None => (h.uid().map_err(bad)?, h.gid().map_err(bad)?),
        };
        let et = h.entry_type();
        let link = || entry_link(&entry);
        let kind = if et.is_dir() {
            EntryKind::Dir
        } else if et.is_symlink() {
            EntryKind::Symlink { target: link() }
        } else if et.is_hard_link() {
            let t = link();
            let Some(t) = rootfs::clean_rel(&t) else {
                return Err(BuildError::Archive {
                    path: archive_path.to_path_buf(),
                    message: format!("hard link `{raw}` points outside the archive"),
                });
            };
            EntryKind::HardLink {
                target: join(base, &t),
            }
        } else if et.is_character_special() || et.is_block_special() {
            let major = h.device_major().map_err(bad)?.unwrap_or(0);
            let minor = h.device_minor().map_err(bad)?.unwrap_or(0);
            if et.is_character_special() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else if et.is_fifo() {
            EntryKind::Fifo
        } else if et.is_file() || et == tar::EntryType::Continuous {
            n += 1;
            let p = spool.join(format!("add{n}"));
            let mut f = std::fs::File::create(&p).map_err(|e| BuildError::Io {
                path: p.clone(),
                source: e,
            })?;
            let size = std::io::copy(&mut entry, &mut f).map_err(bad)?;
            EntryKind::File {
                size,
                content: Content::Path(p),
            }
        } else {
            continue;
        };
        put(Entry {
            path: join(base, &rel),
            kind,
            mode,
            uid: ids.0,
            gid: ids.1,
            mtime: sde,
            xattrs: BTreeMap::new(),
        });
    }
    Ok(())
}

fn entry_link<R: Read>(e: &tar::Entry<'_, R>) -> String {
    e.link_name_bytes()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
