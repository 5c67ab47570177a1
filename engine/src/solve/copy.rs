//! COPY and ADD: compute the step's key from its inputs, and, on a miss, write its layer.
//!
//! Key inputs (see `docs/cache-keys.md`): what the layer reads of the parent rootfs, the
//! expanded instruction (dest, chown, chmod, link, excludes, ADD-ness), the compression, and
//! per source file its path relative to the source, type, normalised mode and content digest
//! (BLAKE3; the stat cache avoids re-reading unchanged files). `--from` sources are keyed by the
//! source stage's key or image digest instead of their content.
//!
//! What the layer reads of the parent rootfs depends on the kind of COPY:
//! - `--link` without a user name in `--chown`: nothing — no parent input at all.
//! - a COPY from the context with a numeric or no `--chown`: only what [`entries`] asks its
//!   [`ParentView`] (how the destination resolves through symlinks, and for each directory on
//!   the way whether it exists and its mode, owner and xattrs). The view writes every question
//!   and answer, in order, into a digest — the *parent facts* — and that digest replaces the
//!   parent key. `entries` is deterministic in its inputs and the view's answers, so two
//!   parents with equal facts give the same layer bytes: a base patch that leaves the
//!   destination's directories alone reuses the layer, without re-reading the context.
//! - anything else (ADD, `--from`, `--chown` by name): the parent key, as before.
//!
//! Because such a key no longer identifies the rootfs after the step, the next step's parent
//! is the *chain key* `blake3(parent, step key)` ([`chain`]), never the step key itself.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strata_cache::{ExplainInput, ExplainRecord, FileFactsBuilder, StatEntry, Store};

use crate::attest::provenance::ContextFile;
use crate::context::{self, Context, ContextEntry, ContextKind, ResolvedSource};
use crate::image::LayerDesc;
use crate::layer::{self, Content, Entry, EntryKind};
use crate::plan::key::Key;
use crate::plan::{CopySource, CopySpec};
use crate::solve::keys::{self, LayerForm, ParentFacts, ParentInput, ParentUse};
use crate::solve::layer_tree::{self, NodeKind, Tree};
use crate::solve::shared::Shared;
use crate::solve::BuildError;

/// One prepared source of a COPY/ADD.
pub(crate) enum Prepared {
    Context {
        resolved: ResolvedSource,
        /// Per entry of `resolved`, the content digest of a file (`None` for the others):
        /// kept for the explain record, built only if the step misses.
        hashes: Vec<Option<[u8; 32]>>,
    },
    Heredoc {
        name: String,
        content: String,
    },
    /// A path or glob in another stage's or image's rootfs.
    Tree {
        pattern: String,
    },
    /// A file downloaded for `ADD <url>` (`solve::remote`): named `name` in a destination
    /// directory, mode 0600 unless `--chmod`, never extracted.
    Download {
        name: String,
        path: std::path::PathBuf,
        size: u64,
    },
}

pub(crate) struct PreparedCopy {
    pub key: Key,
    /// Whether `key` includes the parent key; if not, the next step's parent is
    /// [`chain`]`(parent, key)`.
    pub includes_parent: bool,
    /// The named inputs of the key for `--explain` (the per-file ones come from `sources`:
    /// [`PreparedCopy::explain_record`]).
    pub inputs: Vec<ExplainInput>,
    pub sources: Vec<Prepared>,
    /// The layer's entries, when they were built to compute the parent facts.
    pub entries: Option<Vec<Entry>>,
    /// The memoised answers of the parent view, and the facts they must give.
    parent_answers: Option<(Vec<Answer>, Key)>,
    pub files: usize,
    pub hashed: usize,
    pub bytes_hashed: u64,
}

/// What a directory on the way to the destination contributes to the layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// One question [`entries`] asked of the parent rootfs, with its answer. The answers are
/// memoised beside the parent facts: a step that must run after an edit that changed no path
/// (its facts memo hits) replays them instead of reading the parent layers again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Answer {
    Resolve {
        path: String,
        follow_last: bool,
        resolved: String,
    },
    Dir {
        path: String,
        meta: Option<DirMeta>,
    },
    Text {
        path: String,
        text: Option<String>,
    },
}

impl Answer {
    /// Whether `self` and `other` answer the same question.
    fn same_question(&self, other: &Answer) -> bool {
        match (self, other) {
            (
                Answer::Resolve {
                    path: a,
                    follow_last: fa,
                    ..
                },
                Answer::Resolve {
                    path: b,
                    follow_last: fb,
                    ..
                },
            ) => a == b && fa == fb,
            (Answer::Dir { path: a, .. }, Answer::Dir { path: b, .. })
            | (Answer::Text { path: a, .. }, Answer::Text { path: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// Where a [`ParentView`] gets its answers.
enum Source<'a> {
    Tree(&'a Tree),
    /// Recorded answers; a question not among them is a miss (the caller then asks a tree).
    Replay {
        answers: &'a [Answer],
        missed: Cell<bool>,
    },
}

/// The only way [`entries`] reads the parent rootfs. When recording, every question and its
/// answer go, in order, into a digest: the parent facts of the step key; and into a list: the
/// answers a later run can replay ([`ParentView::replaying`]).
pub(crate) struct ParentView<'a> {
    src: Source<'a>,
    log: Option<RefCell<(ParentFacts, Vec<Answer>)>>,
}

impl<'a> ParentView<'a> {
    pub fn new(tree: &'a Tree) -> Self {
        ParentView {
            src: Source::Tree(tree),
            log: None,
        }
    }

    pub fn recording(tree: &'a Tree) -> Self {
        ParentView {
            src: Source::Tree(tree),
            log: Some(Self::empty_log()),
        }
    }

    /// A view answering from `answers` (recorded by an earlier [`recording`](Self::recording)
    /// view), recording too, so that the caller can check that the replay gives the very facts
    /// it was recorded with ([`missed`](Self::missed), [`finish`](Self::finish)).
    pub fn replaying(answers: &'a [Answer]) -> Self {
        ParentView {
            src: Source::Replay {
                answers,
                missed: Cell::new(false),
            },
            log: Some(Self::empty_log()),
        }
    }

    fn empty_log() -> RefCell<(ParentFacts, Vec<Answer>)> {
        RefCell::new((ParentFacts::new(), Vec::new()))
    }

    /// Whether a replaying view was asked a question it has no answer for.
    pub fn missed(&self) -> bool {
        matches!(&self.src, Source::Replay { missed, .. } if missed.get())
    }

    /// Answers `question` (an [`Answer`] whose answer part is what a replay without an answer
    /// returns) from the tree or the recorded answers, and records it.
    fn ask(
        &self,
        question: Answer,
        from_tree: impl FnOnce(&Tree) -> Result<Answer, BuildError>,
    ) -> Result<Answer, BuildError> {
        let a = match &self.src {
            Source::Tree(t) => from_tree(t)?,
            Source::Replay { answers, missed } => {
                match answers.iter().find(|a| a.same_question(&question)) {
                    Some(a) => a.clone(),
                    None => {
                        missed.set(true);
                        question
                    }
                }
            }
        };
        if let Some(l) = &self.log {
            let (k, answers) = &mut *l.borrow_mut();
            k.answer(&a);
            answers.push(a.clone());
        }
        Ok(a)
    }

    /// `path` with every symlink on the way resolved in-root (see [`Tree::resolve`]).
    fn resolve(&self, path: &str, follow_last: bool) -> Result<String, BuildError> {
        let q = |resolved: String| Answer::Resolve {
            path: path.to_string(),
            follow_last,
            resolved,
        };
        match self.ask(q(path.to_string()), |t| {
            Ok(q(t.resolve(path, follow_last)?))
        })? {
            Answer::Resolve { resolved, .. } => Ok(resolved),
            _ => unreachable!("an answer to the question asked"),
        }
    }

    /// The metadata of `path` if it is a directory.
    fn dir(&self, path: &str) -> Option<DirMeta> {
        let q = |meta: Option<DirMeta>| Answer::Dir {
            path: path.to_string(),
            meta,
        };
        let a = self.ask(q(None), |t| {
            Ok(q(match t.get(path) {
                Some(n) if matches!(n.kind, NodeKind::Dir) => Some(DirMeta {
                    mode: n.mode,
                    uid: n.uid,
                    gid: n.gid,
                    xattrs: n.xattrs.clone(),
                }),
                _ => None,
            }))
        });
        match a {
            Ok(Answer::Dir { meta, .. }) => meta,
            _ => unreachable!("an answer to the question asked"),
        }
    }

    /// A spooled text file (`/etc/passwd`, `/etc/group`).
    fn read_text(&self, path: &str) -> Option<String> {
        let q = |text: Option<String>| Answer::Text {
            path: path.to_string(),
            text,
        };
        match self.ask(q(None), |t| Ok(q(t.read_spooled(path)))) {
            Ok(Answer::Text { text, .. }) => text,
            _ => unreachable!("an answer to the question asked"),
        }
    }

    /// The parent facts (the digest of every question and answer), if recording.
    fn finish(&self) -> Option<Key> {
        self.log.as_ref().map(|l| l.borrow().0.finish())
    }

    /// The answers recorded so far, in the order they were asked.
    fn answers(&self) -> Vec<Answer> {
        self.log
            .as_ref()
            .map(|l| l.borrow().1.clone())
            .unwrap_or_default()
    }
}

/// The parent rootfs as `entries` needs it: nothing for `--link` (unless `--chown` names a user),
/// `/etc/passwd` and `/etc/group` spooled when it does, otherwise metadata only (shared).
pub(crate) fn parent_tree(
    store: &Store,
    shared: &Shared,
    spec: &CopySpec,
    parent_layers: &[LayerDesc],
    spool: &Path,
) -> Result<Arc<Tree>, BuildError> {
    let names = keys::chown_needs_names(spec);
    if parent_layers.is_empty() || (spec.link && !names) {
        return Ok(Arc::new(Tree::default()));
    }
    if names {
        let want = |p: &str| p == "etc/passwd" || p == "etc/group";
        return Ok(Arc::new(Tree::scan(
            store.blobs(),
            parent_layers,
            &want,
            spool,
        )?));
    }
    let id = keys::layers(parent_layers);
    let slot = shared.tree_slot(id);
    // Held while scanning: other images wanting the same parent wait and share the result.
    let mut g = slot.lock().unwrap();
    if let Some(t) = &*g {
        return Ok(t.clone());
    }
    let t = Arc::new(Tree::scan(store.blobs(), parent_layers, &|_| false, spool)?);
    *g = Some(t.clone());
    Ok(t)
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
    thread_local! {
        // One buffer per thread: a fresh zeroed 256 KiB per file cost more than hashing a
        // tree of small files (an mmap, page faults and zeroing for each).
        static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 256 * 1024]);
    }
    let mut h = blake3::Hasher::new();
    let mut n_total = 0u64;
    BUF.with_borrow_mut(|buf| {
        loop {
            let n = f.read(buf)?;
            if n == 0 {
                break;
            }
            n_total += n as u64;
            h.update(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })?;
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

/// What preparing a COPY needs beyond the step: where it reads and spools, and the build's
/// layer form.
pub(crate) struct CopyEnv<'a> {
    pub store: &'a Store,
    /// The session's parent trees.
    pub shared: &'a Shared,
    pub ctx: &'a Context,
    pub form: LayerForm<'a>,
    /// `--no-cache`: the parent facts memo is not read (it is still written).
    pub no_cache: bool,
    pub spool: &'a Path,
}

/// Resolves and hashes the sources, and computes the step key ([`keys::CopyKeys`]).
pub(crate) fn prepare(
    env: &CopyEnv<'_>,
    spec: &CopySpec,
    parent: &Key,
    parent_layers: &[LayerDesc],
    from: &FromSource<'_>,
) -> Result<PreparedCopy, BuildError> {
    let CopyEnv {
        store,
        shared,
        ctx,
        form,
        no_cache,
        spool,
    } = *env;
    let sde = form.source_date_epoch;
    let mut inputs = Vec::new();
    // The stat cache affects speed only, never keys: used even with --no-cache.
    let use_stat_cache = true;
    let mut keys = keys::CopyKeys::new(
        spec,
        match from {
            FromSource::Context => None,
            FromSource::Rootfs { key, .. } => Some(key),
        },
        form,
    );
    // First every source is resolved (a walk of the context: no file is read), which gives
    // the instruction and the shape; then the files are hashed. When the parent facts are not
    // memoised, the parent layers are read meanwhile (on a cold build that is the base image
    // being decompressed): the two are independent.
    let mut sources = Vec::new();
    for s in &spec.sources {
        match s {
            CopySource::Heredoc { name, content } => {
                keys.heredoc(name, content);
                sources.push(Prepared::Heredoc {
                    name: name.clone(),
                    content: content.clone(),
                });
            }
            CopySource::Url(_) | CopySource::Git(_) => {
                unreachable!("an ADD of remote sources is prepared by solve::remote")
            }
            CopySource::Path(p) if !matches!(from, FromSource::Context) => {
                keys.rootfs_path(p);
                sources.push(Prepared::Tree { pattern: p.clone() });
            }
            CopySource::Path(p) => {
                keys.pattern(p);
                let resolved =
                    ctx.resolve_with(std::slice::from_ref(p), &spec.excludes, spec.parents)?;
                for r in resolved {
                    keys.shape_source(&r.rel, r.is_dir);
                    for e in &r.entries {
                        let target = match &e.kind {
                            ContextKind::Symlink { target } => Some(target.as_str()),
                            _ => None,
                        };
                        keys.shape_entry(&e.rel_in_source, kind_name(&e.kind), target);
                    }
                    sources.push(Prepared::Context {
                        resolved: r,
                        hashes: Vec::new(),
                    });
                }
            }
        }
    }
    let (ins_key, shape, mut body) = keys.finish_instruction();
    let use_of_parent = keys::parent_use(spec);
    let memo = keys::parent_facts_memo(parent, &shape);
    let known = if use_of_parent == ParentUse::Facts && !no_cache {
        store.index().get_parent_facts(&memo)?
    } else {
        None
    };
    let needs_tree = use_of_parent == ParentUse::Facts && known.is_none();
    let mut files = 0;
    let mut hashed = 0;
    let mut bytes_hashed = 0;
    let (tree, hashing) = std::thread::scope(|sc| {
        let scan =
            needs_tree.then(|| sc.spawn(|| parent_tree(store, shared, spec, parent_layers, spool)));
        let hashing = (|| -> Result<(), BuildError> {
            for src in sources.iter_mut() {
                let Prepared::Context {
                    resolved: r,
                    hashes,
                } = src
                else {
                    continue;
                };
                let (hs, n_hashed, n_bytes) = hash_entries(store, ctx, r, use_stat_cache)?;
                files += r.entries.len();
                hashed += n_hashed;
                bytes_hashed += n_bytes;
                body.source(&r.rel, r.is_dir);
                for (e, h) in r.entries.iter().zip(&hs) {
                    let (kind, content) = kind_and_content(e, h);
                    body.entry(
                        &e.rel_in_source,
                        kind,
                        normalise_context_mode(&e.kind, e.mode),
                        content,
                    );
                }
                *hashes = hs;
            }
            Ok(())
        })();
        let tree = scan.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (tree, hashing)
    });
    hashing?;
    let tree = tree.transpose()?;
    let body = body.finish(&ins_key);
    inputs.push(ExplainInput {
        name: "instruction".into(),
        value: ins_key,
    });
    let mut entries_built = None;
    let mut answers = None;
    let mut facts_key = None;
    let includes_parent = match use_of_parent {
        ParentUse::None => false,
        ParentUse::Whole => {
            inputs.push(ExplainInput {
                name: "parent".into(),
                value: *parent,
            });
            true
        }
        ParentUse::Facts => {
            // The facts are a function of the parent rootfs (which the parent key identifies)
            // and of which paths the layer writes: `entries` asks the parent only about the
            // destination and the directories on the way to each target path, whatever the
            // files hold (only a COPY from the context gets here: no archive is looked into).
            // Memoised under both (`memo`), a rebuild on the same parent — or after an edit
            // that adds, removes or renames no file — reads no layer.
            let facts = match (known, tree) {
                (Some(f), _) => {
                    // Undecodable answers only cost a read of the parent layers on a miss.
                    answers = bincode::deserialize(&f.answers).ok();
                    f.facts
                }
                (None, tree) => {
                    let tree = tree.expect("the parent is scanned when its facts are not known");
                    let view = ParentView::recording(&tree);
                    let es = entries(store, spec, &sources, &view, from, sde, spool)?;
                    let f = view.finish().expect("a recording view");
                    let rec = strata_cache::ParentFacts {
                        facts: f,
                        answers: bincode::serialize(&view.answers()).expect("answers serialise"),
                    };
                    store.index().put_parent_facts(&memo, &rec)?;
                    entries_built = Some(es);
                    f
                }
            };
            facts_key = Some(facts);
            inputs.push(ExplainInput {
                name: "parent-facts".into(),
                value: facts,
            });
            false
        }
    };
    let key = keys::copy(
        spec.add,
        match (use_of_parent, &facts_key) {
            (ParentUse::Whole, _) => ParentInput::Whole(parent),
            (ParentUse::Facts, Some(f)) => ParentInput::Facts(f),
            _ => ParentInput::None,
        },
        &body,
    );
    Ok(PreparedCopy {
        key,
        includes_parent,
        inputs,
        sources,
        entries: entries_built,
        parent_answers: answers.zip(facts_key),
        files,
        hashed,
        bytes_hashed,
    })
}

/// The layer's entries for a step that must run: the ones [`prepare`] built, else built from
/// the memoised answers of the parent view when replaying them gives the very facts of the key,
/// else from the parent layers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_entries(
    env: &CopyEnv<'_>,
    spec: &CopySpec,
    prep: &mut PreparedCopy,
    parent_layers: &[LayerDesc],
    from: &FromSource<'_>,
) -> Result<Vec<Entry>, BuildError> {
    let (store, shared, spool) = (env.store, env.shared, env.spool);
    let sde = env.form.source_date_epoch;
    if let Some(es) = prep.entries.take() {
        return Ok(es);
    }
    if let Some((answers, facts)) = &prep.parent_answers {
        let view = ParentView::replaying(answers);
        let es = entries(store, spec, &prep.sources, &view, from, sde, spool)?;
        if !view.missed() && view.finish().as_ref() == Some(facts) {
            return Ok(es);
        }
    }
    let tree = parent_tree(store, shared, spec, parent_layers, spool)?;
    entries(
        store,
        spec,
        &prep.sources,
        &ParentView::new(&tree),
        from,
        sde,
        spool,
    )
}

/// What a context entry contributes to the key besides its path and mode: its type, and the
/// content digest (file) or target (symlink).
fn kind_and_content<'a>(
    e: &'a ContextEntry,
    hash: &'a Option<[u8; 32]>,
) -> (&'static str, &'a [u8]) {
    let content: &[u8] = match (&e.kind, hash) {
        (ContextKind::File { .. }, Some(h)) => h,
        (ContextKind::Dir, _) => &[],
        (ContextKind::Symlink { target }, _) => target.as_bytes(),
        (ContextKind::File { .. }, None) => unreachable!("files are hashed"),
    };
    (kind_name(&e.kind), content)
}

/// The type of a context entry as keys spell it.
fn kind_name(kind: &ContextKind) -> &'static str {
    match kind {
        ContextKind::File { .. } => "f",
        ContextKind::Dir => "d",
        ContextKind::Symlink { .. } => "l",
    }
}

impl PreparedCopy {
    /// What `--explain` compares when a later build of this step misses: the named inputs and,
    /// per context entry, its path as the user wrote it (source + path in it), a fingerprint
    /// of its type and content, and its mode. Built only when the step runs (a cache hit
    /// stores nothing), from what [`prepare`] kept.
    pub(crate) fn explain_record(&self) -> ExplainRecord {
        let n = self
            .sources
            .iter()
            .map(|s| match s {
                Prepared::Context { resolved, .. } => resolved.entries.len(),
                _ => 0,
            })
            .sum();
        let mut files = FileFactsBuilder::with_capacity(n);
        let mut shown = String::new();
        for s in &self.sources {
            let Prepared::Context {
                resolved: r,
                hashes,
            } = s
            else {
                continue;
            };
            for (e, h) in r.entries.iter().zip(hashes) {
                let (kind, content) = kind_and_content(e, h);
                shown.clear();
                shown.push_str(&r.rel);
                if !r.rel.is_empty() && !e.rel_in_source.is_empty() {
                    shown.push('/');
                }
                shown.push_str(&e.rel_in_source);
                let fp = h32(&[kind.as_bytes(), content]);
                files.push(
                    &shown,
                    u64::from_le_bytes(fp[..8].try_into().expect("8 bytes")),
                    normalise_context_mode(&e.kind, e.mode),
                );
            }
        }
        ExplainRecord {
            inputs: self.inputs.clone(),
            files: files.finish(),
        }
    }
}

impl PreparedCopy {
    /// The context files this COPY reads, for the provenance's context digest
    /// ([`crate::attest::provenance::context_digest`]): path from the context root (where
    /// the source leads, symlinks followed), type, normalised mode and the content the key was
    /// computed from. Nothing is read again.
    pub(crate) fn context_files(&self) -> Vec<ContextFile> {
        let mut out = Vec::new();
        for s in &self.sources {
            let Prepared::Context {
                resolved: r,
                hashes,
            } = s
            else {
                continue;
            };
            for (e, h) in r.entries.iter().zip(hashes) {
                let content = match (&e.kind, h) {
                    (ContextKind::File { .. }, Some(h)) => {
                        blake3::Hash::from(*h).to_hex().to_string()
                    }
                    (ContextKind::Symlink { target }, _) => target.clone(),
                    _ => String::new(),
                };
                out.push(ContextFile {
                    path: join(&r.resolved_rel, &e.rel_in_source),
                    kind: kind_name(&e.kind),
                    mode: normalise_context_mode(&e.kind, e.mode),
                    content,
                });
            }
        }
        out
    }
}

/// Orders paths as the context walk does: component by component, siblings bytewise (`a/b`
/// before `a.txt`) — bytewise with `/` below every other byte.
pub(crate) fn componentwise(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let key = |c: &u8| if *c == b'/' { 0u16 } else { *c as u16 + 1 };
    a.iter().map(key).cmp(b.iter().map(key))
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
    let old = if use_stat_cache {
        store.index().get_stat_set(&set_id)?
    } else {
        None
    };
    // File timestamps come from the kernel's coarse clock, which can lag the real time by a
    // tick: a write made just after this moment may carry an mtime slightly before it. Backdate
    // the record by a safe margin so such an entry counts as racy and is hashed again.
    let recorded_ns = now_ns() - 50_000_000;
    let mut out: Vec<Option<[u8; 32]>> = vec![None; entries.len()];
    // The set is in the order of the previous walk, and walks are sorted component-wise: one
    // merge finds each file's entry, a file added or removed only shifts it. (A set in another
    // order would only cost re-hashes: an entry is trusted only if all stat fields match.)
    let mut reused = 0;
    if let Some(old) = &old {
        let mut cur = old.cursor();
        let mut at = cur.advance();
        for &i in &file_idx {
            let e = &entries[i];
            let path = e.host_path.as_os_str().as_bytes();
            while at && componentwise(cur.path(), path) == std::cmp::Ordering::Less {
                at = cur.advance();
            }
            if !at || cur.path() != path {
                continue;
            }
            let c = cur.entry().expect("advanced");
            if c.matches(e.dev, e.ino, e.size, e.mtime_ns, e.ctime_ns, e.mode) {
                out[i] = Some(c.blake3);
                reused += 1;
            }
            at = cur.advance();
        }
    }
    let old_len = old.as_ref().map_or(0, |s| s.len());
    drop(old);
    let to_hash: Vec<usize> = file_idx
        .iter()
        .copied()
        .filter(|&i| out[i].is_none())
        .collect();
    let results: Vec<Result<([u8; 32], u64), BuildError>> = to_hash
        .par_iter()
        .map(|&i| {
            let e = &entries[i];
            let (h, n) = hash_file(&e.host_path).map_err(|err| BuildError::Io {
                path: e.host_path.clone(),
                source: err,
            })?;
            if n != e.size {
                return Err(BuildError::ContextChanged {
                    path: e.host_path.clone(),
                });
            }
            Ok((h, n))
        })
        .collect();
    let hashed = to_hash.len();
    let mut bytes = 0;
    for (&i, r) in to_hash.iter().zip(results) {
        let (h, n) = r?;
        out[i] = Some(h);
        bytes += n;
    }
    if use_stat_cache && (hashed > 0 || reused != old_len) {
        let mut set = strata_cache::index::StatSetBuilder::new(recorded_ns, file_idx.len());
        for &i in &file_idx {
            let e = &entries[i];
            set.push(
                e.host_path.as_os_str().as_bytes(),
                &StatEntry {
                    dev: e.dev,
                    ino: e.ino,
                    size: e.size,
                    mtime_ns: e.mtime_ns,
                    ctime_ns: e.ctime_ns,
                    mode: e.mode,
                    recorded_ns,
                    blake3: out[i].expect("every file is hashed"),
                },
            );
        }
        store.index().put_stat_set(&set_id, &set.finish())?;
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
///
/// Everything read of the parent rootfs goes through `parent` (metadata of existing directories
/// on the way to the destination, symlinks in it, user names for --chown): the output is a
/// function of the other arguments and the view's answers only.
pub(crate) fn entries(
    store: &Store,
    spec: &CopySpec,
    sources: &[Prepared],
    parent: &ParentView<'_>,
    from: &FromSource<'_>,
    sde: u64,
    spool: &Path,
) -> Result<Vec<Entry>, BuildError> {
    let names = keys::chown_needs_names(spec);
    let owner = match &spec.chown {
        Some(c) => Some(
            layer_tree::resolve_chown(
                c,
                names
                    .then(|| parent.read_text("etc/passwd"))
                    .flatten()
                    .as_deref(),
                names
                    .then(|| parent.read_text("etc/group"))
                    .flatten()
                    .as_deref(),
            )
            .map_err(|msg| BuildError::Chown {
                spec: c.clone(),
                message: msg,
            })?,
        ),
        None => None,
    };
    let link_mode = spec.link;
    let dir_of = |p: &str| -> Option<DirMeta> {
        if link_mode {
            None
        } else {
            parent.dir(p)
        }
    };

    // The matches of `--from` sources, found before the destination is decided: how many
    // sources there are after expansion decides whether a bare destination is a file.
    let from_tree = match from {
        FromSource::Rootfs { layers, .. }
            if sources.iter().any(|s| matches!(s, Prepared::Tree { .. })) =>
        {
            Some(scan_from_sources(store, layers, sources, spool)?)
        }
        _ => None,
    };
    let n_items: usize = sources
        .iter()
        .enumerate()
        .map(|(i, s)| match (s, &from_tree) {
            (Prepared::Tree { .. }, Some((_, m))) => m[i].len(),
            _ => 1,
        })
        .sum();

    // Destination: resolve symlinks on the way (e.g. `/lib → usr/lib`), in-root.
    let dest_syntax_dir = spec.dest.ends_with('/');
    let dest_written = spec.dest.trim_matches('/').to_string();
    let resolved_dest = if link_mode {
        dest_written.clone()
    } else {
        parent.resolve(&dest_written, true)?
    };
    // The destination's own metadata when it already is a directory: the layer writes it
    // unchanged (BuildKit copies into an existing destination without touching its mode,
    // owner or xattrs — a `/tmp` stays 1777). The same answer decides whether it is one.
    let dest_meta = dir_of(&resolved_dest);
    let dest_exists_dir = dest_meta.is_some();
    // With `--parents` every source keeps a path below the destination: a directory.
    let dest_is_dir = dest_syntax_dir || dest_exists_dir || dest_written.is_empty() || spec.parents;
    if n_items > 1 && !dest_is_dir {
        // BuildKit overwrites the one destination file with each source in turn
        // (moby/buildkit#1853), buildah makes a directory, the classic builder refuses: the
        // only answer that cannot silently lose files is to refuse.
        return Err(BuildError::CopyDestNotDir {
            dest: spec.dest.clone(),
            sources: n_items,
        });
    }
    let dest_rel = if dest_is_dir {
        resolved_dest.clone()
    } else {
        let dir = parent.resolve(Tree::parent(&dest_written), true)?;
        join(&dir, basename(&dest_written))
    };

    let ctx_owner = owner.unwrap_or((0, 0));
    let file_mode = |m: u32, is_dir: bool| spec.chmod.as_ref().map_or(m, |c| c.apply(m, is_dir));
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
    // The directories `--parents` keeps, in the order met (see below the loop).
    let mut kept_dirs: Vec<String> = Vec::new();
    for (src_index, src) in sources.iter().enumerate() {
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
                    file_mode(0o644, false),
                    ctx_owner,
                ));
            }
            Prepared::Download { name, path, size } => {
                let target = if dest_is_dir {
                    join(&dest_rel, name)
                } else {
                    dest_rel.clone()
                };
                put(mk(
                    target,
                    EntryKind::File {
                        size: *size,
                        content: Content::Path(path.clone()),
                    },
                    // Docker documents 0600 for a file from a URL; BuildKit writes the same.
                    file_mode(0o600, false),
                    ctx_owner,
                ));
            }
            Prepared::Context { resolved, .. } => {
                let kept = spec
                    .parents
                    .then(|| kept_parents(&resolved.pattern, &resolved.rel));
                if let Some(k) = &kept {
                    kept_dirs.extend(kept_dir_paths(&dest_rel, k, resolved.is_dir));
                }
                for e in &resolved.entries {
                    let mode = normalise_context_mode(&e.kind, e.mode);
                    let is_file_source = !resolved.is_dir;
                    let target = if let Some(k) = &kept {
                        join(&join(&dest_rel, k), &e.rel_in_source)
                    } else if is_file_source {
                        if dest_is_dir {
                            join(&dest_rel, basename(&resolved.rel))
                        } else {
                            dest_rel.clone()
                        }
                    } else {
                        join(&dest_rel, &e.rel_in_source)
                    };
                    if spec.add && is_file_source && !spec.is_remote() {
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
                    let mode = match e.kind {
                        ContextKind::Symlink { .. } => mode,
                        ContextKind::Dir => file_mode(mode, true),
                        ContextKind::File { .. } => file_mode(mode, false),
                    };
                    put(mk(target, kind, mode, ctx_owner));
                }
            }
            Prepared::Tree { pattern } => {
                let (st, all) = from_tree
                    .as_ref()
                    .expect("--from sources are scanned before the destination is decided");
                let matches = &all[src_index];
                for (m, matched) in matches {
                    let is_dir =
                        m.is_empty() || matches!(st.get(m).map(|n| &n.kind), Some(NodeKind::Dir));
                    let kept = spec.parents.then(|| kept_parents(pattern, matched));
                    let base = match &kept {
                        Some(k) => {
                            kept_dirs.extend(kept_dir_paths(&dest_rel, k, is_dir));
                            join(&dest_rel, k)
                        }
                        None => dest_rel.clone(),
                    };
                    for (p, node) in st.subtree(m) {
                        if is_dir && p == m {
                            continue;
                        }
                        let rel_in = if is_dir {
                            p[m.len()..].trim_start_matches('/')
                        } else {
                            ""
                        };
                        let target = if kept.is_some() {
                            if is_dir {
                                join(&base, rel_in)
                            } else {
                                base.clone()
                            }
                        } else if !is_dir {
                            // Named by the source as matched, not by where a symlink led.
                            if dest_is_dir {
                                join(&dest_rel, basename(matched))
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
                        let mode = match kind {
                            EntryKind::Symlink { .. } => node.mode,
                            EntryKind::Dir => file_mode(node.mode, true),
                            _ => file_mode(node.mode, false),
                        };
                        let mut e = mk(target, kind, mode, owner.unwrap_or((node.uid, node.gid)));
                        e.xattrs = node.xattrs.clone();
                        put(e);
                    }
                }
            }
        }
    }
    // The directories of the paths `--parents` keeps: an existing one keeps its metadata (as
    // the destination does); one the step creates is a copy of the source's directory —
    // 0755 (context modes are normalised), `--chmod`, `--chown` — as BuildKit creates it.
    for d in kept_dirs {
        if out.contains_key(&d) {
            continue;
        }
        let e = match dir_of(&d) {
            Some(m) => Entry {
                path: d.clone(),
                kind: EntryKind::Dir,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime: sde,
                xattrs: m.xattrs,
            },
            None => mk(d.clone(), EntryKind::Dir, file_mode(0o755, true), ctx_owner),
        };
        out.insert(d, e);
    }
    // The destination directory and every parent on the way: existing ones keep their
    // metadata from the parent rootfs; created ones are 0755, owned by --chown (or root).
    if dest_dir_needed {
        // `dest_meta` describes `resolved_dest`, which is `dest_rel` whenever the destination
        // is an existing directory.
        let existing = dest_meta.filter(|_| dest_rel == resolved_dest);
        out.entry(dest_rel.clone())
            .or_insert_with(|| match existing {
                Some(d) => Entry {
                    path: dest_rel.clone(),
                    kind: EntryKind::Dir,
                    mode: d.mode,
                    uid: d.uid,
                    gid: d.gid,
                    mtime: sde,
                    xattrs: d.xattrs,
                },
                None => Entry {
                    path: dest_rel.clone(),
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    uid: ctx_owner.0,
                    gid: ctx_owner.1,
                    mtime: sde,
                    xattrs: BTreeMap::new(),
                },
            });
    }
    let paths: Vec<String> = out.keys().cloned().collect();
    for p in paths {
        let mut cur = Tree::parent(&p).to_string();
        while !cur.is_empty() && !out.contains_key(&cur) {
            let entry = match dir_of(&cur) {
                Some(n) => Entry {
                    path: cur.clone(),
                    kind: EntryKind::Dir,
                    mode: n.mode,
                    uid: n.uid,
                    gid: n.gid,
                    mtime: sde,
                    xattrs: n.xattrs,
                },
                None => {
                    let on_dest = dest_rel == cur || dest_rel.starts_with(&format!("{cur}/"));
                    let (uid, gid) = if on_dest { ctx_owner } else { (0, 0) };
                    Entry::dir(cur.clone(), 0o755, uid, gid, sde)
                }
            };
            out.insert(cur.clone(), entry);
            cur = Tree::parent(&cur).to_string();
        }
    }
    Ok(out.into_values().collect())
}

/// Per `--from` source (by index in `sources`; empty for the others), what it matches in the
/// source rootfs: `(path, matched)` pairs — the path every symlink on the way, the last one
/// included, resolved in-root (BuildKit follows a source that is a symlink and copies what
/// it points to), and the path as matched, whose last component names it at the destination.
type FromMatches = Vec<Vec<(String, String)>>;

/// Reads the `--from` rootfs, spooling the contents the sources reach, and matches them.
fn scan_from_sources(
    store: &Store,
    layers: &[LayerDesc],
    sources: &[Prepared],
    spool: &Path,
) -> Result<(Tree, FromMatches), BuildError> {
    let pats: Vec<String> = sources
        .iter()
        .filter_map(|s| match s {
            Prepared::Tree { pattern } => Some(pattern.trim_matches('/').to_string()),
            _ => None,
        })
        .collect();
    let under = |roots: &[String], p: &str| {
        roots
            .iter()
            .any(|r| r.is_empty() || p == r || p.starts_with(&format!("{r}/")))
    };
    // First the paths as written (a wildcard: everything).
    let roots: Vec<String> = pats
        .iter()
        .map(|p| {
            if context::has_meta(p) {
                String::new()
            } else {
                layer_tree::clean_rel(p).unwrap_or_default()
            }
        })
        .collect();
    let st = Tree::scan(store.blobs(), layers, &|p| under(&roots, p), spool)?;
    let matches = match_from_sources(&st, sources)?;
    // A symlink may lead elsewhere, and a hard link inside a copied tree may point outside
    // it: spool those too (a second pass, only then).
    let spooled = |p: &str| {
        let mut cur = p.to_string();
        for _ in 0..40 {
            match st.get(&cur).map(|n| &n.kind) {
                Some(NodeKind::HardLink(t)) => cur = t.clone(),
                Some(NodeKind::File { spool, .. }) => return spool.is_some(),
                _ => return true,
            }
        }
        true
    };
    let mut more: Vec<String> = Vec::new();
    for (m, _) in matches.iter().flatten() {
        for (p, node) in st.subtree(m) {
            match &node.kind {
                NodeKind::File { spool: None, .. } => more.push(p.clone()),
                NodeKind::HardLink(t) if !spooled(t) => more.push(t.clone()),
                _ => {}
            }
        }
    }
    if more.is_empty() {
        return Ok((st, matches));
    }
    // Hard links are followed through chains of at most 40 (as the copy loop does).
    for _ in 0..40 {
        let next: Vec<String> = more
            .iter()
            .filter_map(|p| match st.get(p).map(|n| &n.kind) {
                Some(NodeKind::HardLink(t)) if !more.contains(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        if next.is_empty() {
            break;
        }
        more.extend(next);
    }
    let mut roots: Vec<String> = matches.iter().flatten().map(|(m, _)| m.clone()).collect();
    roots.extend(more);
    let dir = spool.join("from");
    std::fs::create_dir_all(&dir).map_err(|e| BuildError::Io {
        path: dir.clone(),
        source: e,
    })?;
    let st = Tree::scan(store.blobs(), layers, &|p| under(&roots, p), &dir)?;
    let matches = match_from_sources(&st, sources)?;
    Ok((st, matches))
}

fn match_from_sources(st: &Tree, sources: &[Prepared]) -> Result<FromMatches, BuildError> {
    let mut all = Vec::with_capacity(sources.len());
    for s in sources {
        let Prepared::Tree { pattern } = s else {
            all.push(Vec::new());
            continue;
        };
        let pat = pattern.trim_matches('/');
        let found: Vec<String> = if context::has_meta(pat) {
            // The literal directories before the first wildcard are resolved first, symlinks
            // included (`/lib/*.so` where /lib → usr/lib, as in merged-/usr images); the
            // wildcard part is matched below what they lead to, and named as written.
            let comps: Vec<&str> = pat
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            let lit = comps.iter().take_while(|c| !context::has_meta(c)).count();
            let prefix = comps[..lit].join("/");
            let rest = comps[lit..].join("/");
            let depth = comps.len() - lit;
            let base = st.resolve(&prefix, true)?;
            st.subtree(&base)
                .map(|(k, _)| {
                    if base.is_empty() {
                        k.as_str()
                    } else {
                        k[base.len()..].trim_start_matches('/')
                    }
                })
                .filter(|rel| !rel.is_empty() && rel.split('/').count() == depth)
                .filter(|rel| context::glob_match(&rest, rel).unwrap_or(false))
                .map(|rel| join(&prefix, rel))
                .collect()
        } else {
            vec![pat.to_string()]
        };
        let mut out = Vec::new();
        for f in found {
            let r = st.resolve(&f, true)?;
            if r.is_empty() || st.get(&r).is_some() {
                out.push((r, f));
            }
        }
        if out.is_empty() {
            return Err(BuildError::FromSourceMissing {
                path: pattern.clone(),
            });
        }
        all.push(out);
    }
    Ok(all)
}

/// The part of a matched source path `--parents` keeps: everything after a `/./` pivot in
/// the pattern (rsync's `--relative` rule), else the whole path. `matched` is the path as
/// matched, cleaned (no `.` components); the pivot is counted in components of the
/// pattern before it, so a wildcard before the pivot works too.
fn kept_parents(pattern: &str, matched: &str) -> String {
    let mut p = pattern.trim_start_matches('/');
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.trim_start_matches('/');
    }
    let skip = match p.find("/./") {
        Some(i) => p[..i]
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .count(),
        None => 0,
    };
    matched
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .skip(skip)
        .collect::<Vec<_>>()
        .join("/")
}

/// The directories on the way to `dest/kept` below `dest`, the last one too when the source
/// is a directory.
fn kept_dir_paths(dest: &str, kept: &str, source_is_dir: bool) -> Vec<String> {
    let comps: Vec<&str> = kept.split('/').filter(|c| !c.is_empty()).collect();
    let n = if source_is_dir {
        comps.len()
    } else {
        comps.len().saturating_sub(1)
    };
    (1..=n).map(|i| join(dest, &comps[..i].join("/"))).collect()
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
        let Some(rel) = layer_tree::clean_rel(&raw) else {
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
            let Some(t) = layer_tree::clean_rel(&t) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::CopyFrom;
    use crate::solve::layer_tree::Node;

    fn dir(mode: u32) -> Node {
        Node {
            kind: NodeKind::Dir,
            mode,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        }
    }

    fn base() -> Tree {
        let mut t = Tree::default();
        t.nodes.insert("etc".into(), dir(0o755));
        t.nodes.insert(
            "etc/os-release".into(),
            Node {
                kind: NodeKind::File {
                    size: 3,
                    spool: None,
                },
                ..dir(0o644)
            },
        );
        t.nodes.insert("srv".into(), dir(0o755));
        t
    }

    /// The parent facts and the entries of `COPY <<f /app/sub/` over `tree`.
    fn run(tree: &Tree) -> (Key, Vec<(String, u32, u64, bool)>) {
        let view = ParentView::recording(tree);
        let shown = run_with(&view)
            .iter()
            .map(|e| {
                (
                    e.path.clone(),
                    e.mode,
                    e.uid,
                    matches!(e.kind, EntryKind::Dir),
                )
            })
            .collect();
        (view.finish().unwrap(), shown)
    }

    /// The entries of `COPY --chown=7 <<f /app/sub/`, asking `view` about the parent.
    fn run_with(view: &ParentView<'_>) -> Vec<Entry> {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let spec = CopySpec {
            add: false,
            from: CopyFrom::Context,
            sources: vec![],
            dest: "/app/sub/".into(),
            chown: Some("7".into()),
            chmod: None,
            link: false,
            excludes: vec![],
            parents: false,
        };
        assert_eq!(keys::parent_use(&spec), ParentUse::Facts);
        let sources = vec![Prepared::Heredoc {
            name: "f".into(),
            content: "x".into(),
        }];
        entries(
            &store,
            &spec,
            &sources,
            view,
            &FromSource::Context,
            0,
            store_dir.path(),
        )
        .unwrap()
    }

    /// The entries (path, mode, uid, gid) of `COPY [--chown=…] <<f DEST` over `tree`.
    fn heredoc_copy(tree: &Tree, dest: &str, chown: Option<&str>) -> Vec<(String, u32, u64, u64)> {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let spec = CopySpec {
            add: false,
            from: CopyFrom::Context,
            sources: vec![],
            dest: dest.into(),
            chown: chown.map(str::to_string),
            chmod: None,
            link: false,
            excludes: vec![],
            parents: false,
        };
        let sources = vec![Prepared::Heredoc {
            name: "f".into(),
            content: "x".into(),
        }];
        entries(
            &store,
            &spec,
            &sources,
            &ParentView::recording(tree),
            &FromSource::Context,
            0,
            store_dir.path(),
        )
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.mode, e.uid, e.gid))
        .collect()
    }

    /// `COPY a.txt /tmp` onto a base whose /tmp is 1777 and /root 0700: the layer carried the
    /// destination directory as 0755, and every non-root process lost /tmp. An existing
    /// destination keeps its mode, owner and xattrs; only directories the step creates get
    /// the defaults (0755, `--chown`'s owner).
    #[test]
    fn existing_destination_directory_keeps_its_metadata() {
        let mut t = base();
        t.nodes.insert("tmp".into(), dir(0o1777));
        t.nodes.insert(
            "root".into(),
            Node {
                uid: 0,
                gid: 0,
                xattrs: BTreeMap::from([("security.capability".into(), vec![9])]),
                ..dir(0o700)
            },
        );
        t.nodes.insert(
            "home/app".into(),
            Node {
                uid: 1000,
                gid: 1000,
                ..dir(0o750)
            },
        );
        t.nodes.insert("home".into(), dir(0o755));
        for dest in ["/tmp", "/tmp/"] {
            assert_eq!(
                heredoc_copy(&t, dest, None),
                vec![("tmp".into(), 0o1777, 0, 0), ("tmp/f".into(), 0o644, 0, 0)],
                "{dest}"
            );
        }
        assert_eq!(
            heredoc_copy(&t, "/root/", Some("7:8")),
            vec![("root".into(), 0o700, 0, 0), ("root/f".into(), 0o644, 7, 8)]
        );
        assert_eq!(
            heredoc_copy(&t, "/home/app/new/", Some("7:8")),
            vec![
                ("home".into(), 0o755, 0, 0),
                ("home/app".into(), 0o750, 1000, 1000),
                ("home/app/new".into(), 0o755, 7, 8),
                ("home/app/new/f".into(), 0o644, 7, 8),
            ],
            "created directories get the defaults, existing ones keep theirs"
        );
        // The xattrs of the existing destination are kept too.
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let spec = CopySpec {
            add: false,
            from: CopyFrom::Context,
            sources: vec![],
            dest: "/root/".into(),
            chown: None,
            chmod: None,
            link: false,
            excludes: vec![],
            parents: false,
        };
        let es = entries(
            &store,
            &spec,
            &[Prepared::Heredoc {
                name: "f".into(),
                content: "x".into(),
            }],
            &ParentView::new(&t),
            &FromSource::Context,
            0,
            store_dir.path(),
        )
        .unwrap();
        assert_eq!(es[0].xattrs, t.nodes["root"].xattrs);
    }

    #[test]
    fn parents_keep_the_path_after_the_pivot() {
        assert_eq!(kept_parents("./x/a.txt", "x/a.txt"), "x/a.txt");
        assert_eq!(kept_parents("x/a.txt", "x/a.txt"), "x/a.txt");
        assert_eq!(kept_parents("./x/./y/*.txt", "x/y/b.txt"), "y/b.txt");
        assert_eq!(kept_parents("/src/./x/y", "src/./x/y"), "x/y");
        assert_eq!(kept_parents("*/./y/f", "a/y/f"), "y/f");
        assert_eq!(kept_parents("a/b/./", "a/b"), "");
        assert_eq!(
            kept_dir_paths("dest", "x/y/f", false),
            vec!["dest/x".to_string(), "dest/x/y".into()]
        );
        assert_eq!(kept_dir_paths("", "x", true), vec!["x".to_string()]);
    }

    /// A step that must run after a content edit replays the memoised answers instead of
    /// reading the parent layers: the replay gives the very entries and facts the parent
    /// gives, and a question the answers do not cover is reported (the caller then reads the
    /// parent), never guessed.
    #[test]
    fn replayed_answers_give_the_entries_and_facts_of_the_parent() {
        let mut t = base();
        t.nodes.insert(
            "app".into(),
            Node {
                uid: 3,
                ..dir(0o700)
            },
        );
        let rec = ParentView::recording(&t);
        let es = run_with(&rec);
        let answers = rec.answers();
        assert!(answers.len() >= 2, "{answers:?}");
        let bytes = bincode::serialize(&answers).unwrap();
        let answers: Vec<Answer> = bincode::deserialize(&bytes).unwrap();

        let replay = ParentView::replaying(&answers);
        assert_eq!(run_with(&replay), es);
        assert!(!replay.missed());
        assert_eq!(replay.finish(), rec.finish());
        assert_eq!(replay.answers(), answers);

        for i in 0..answers.len() {
            let mut fewer = answers.clone();
            fewer.remove(i);
            let partial = ParentView::replaying(&fewer);
            let _ = run_with(&partial);
            assert!(partial.missed(), "answer {i} removed: a miss");
        }
    }

    /// The parent-facts memo is keyed by the shape of the layer (paths and kinds), not its
    /// file contents or modes: a content edit reuses the memo (no parent layer is read) and
    /// gives the very key a fresh computation gives; an added file computes the facts again.
    #[test]
    fn parent_facts_memo_survives_content_edits_and_not_new_paths() {
        use std::os::unix::fs::PermissionsExt;
        let work = tempfile::tempdir().unwrap();
        let store = Store::open(&work.path().join("store")).unwrap();
        let ctx_dir = work.path().join("ctx");
        std::fs::create_dir_all(ctx_dir.join("src/sub")).unwrap();
        std::fs::write(ctx_dir.join("src/a.txt"), "one").unwrap();
        std::fs::write(ctx_dir.join("src/sub/b.txt"), "two").unwrap();
        let spec = CopySpec {
            add: false,
            from: CopyFrom::Context,
            sources: vec![CopySource::Path("src".into())],
            dest: "/app/".into(),
            chown: None,
            chmod: None,
            link: false,
            excludes: vec![],
            parents: false,
        };
        assert_eq!(keys::parent_use(&spec), ParentUse::Facts);
        let shared = Shared::default();
        let prepared = |no_cache: bool| {
            // A fresh context each time: the walk sees the edits.
            let ctx = Context::open(&ctx_dir, crate::context::IgnoreMatcher::empty()).unwrap();
            let env = CopyEnv {
                store: &store,
                shared: &shared,
                ctx: &ctx,
                form: LayerForm {
                    compression: "gzip-test",
                    source_date_epoch: 0,
                },
                no_cache,
                spool: work.path(),
            };
            prepare(&env, &spec, &[9; 32], &[], &FromSource::Context).unwrap()
        };
        let prep = |no_cache: bool| {
            let p = prepared(no_cache);
            (p.key, p.entries.is_some())
        };
        let (k0, computed) = prep(false);
        assert!(computed, "first build: the facts are computed");
        assert_eq!(prep(false), (k0, false), "memo hit, same key");

        std::fs::write(ctx_dir.join("src/a.txt"), "one, edited").unwrap();
        let f = ctx_dir.join("src/sub/b.txt");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (k1, computed) = prep(false);
        assert_ne!(k1, k0, "the content is in the key");
        assert!(!computed, "a content or mode edit reuses the parent facts");
        // ... and the step, which must run, builds its entries from the memoised answers.
        let mut hit = prepared(false);
        assert!(hit.parent_answers.is_some(), "the answers are memoised");
        let fresh = prepared(true).entries.expect("computed afresh");
        let ctx = Context::open(&ctx_dir, crate::context::IgnoreMatcher::empty()).unwrap();
        let env = CopyEnv {
            store: &store,
            shared: &shared,
            ctx: &ctx,
            form: LayerForm {
                compression: "gzip-test",
                source_date_epoch: 0,
            },
            no_cache: false,
            spool: work.path(),
        };
        let replayed = build_entries(&env, &spec, &mut hit, &[], &FromSource::Context).unwrap();
        assert_eq!(replayed, fresh);
        assert_eq!(
            prep(true).0,
            k1,
            "the same key as computing the facts afresh"
        );

        std::fs::write(ctx_dir.join("src/sub/c.txt"), "new").unwrap();
        let (k2, computed) = prep(false);
        assert_ne!(k2, k1);
        assert!(computed, "a new path asks the parent new questions");
        assert_eq!(prep(true).0, k2);
    }

    /// The parent facts are part of the key of every COPY from the context: their byte form
    /// is pinned (a change to it must bump the key version, docs/cache-keys.md).
    #[test]
    fn golden_parent_facts() {
        let mut t = base();
        t.nodes.insert(
            "app".into(),
            Node {
                uid: 3,
                xattrs: BTreeMap::from([("security.capability".into(), vec![1, 2])]),
                ..dir(0o700)
            },
        );
        let (facts, _) = run(&t);
        let hex: String = facts.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "fc6e98502cc65855ef5ff92094145dfb6e1668d110c9044513e692f067a2fd95"
        );
    }

    #[test]
    fn parent_facts_change_exactly_when_the_layer_can() {
        let (f0, e0) = run(&base());
        assert_eq!(
            e0,
            vec![
                ("app".into(), 0o755, 7, true),
                ("app/sub".into(), 0o755, 7, true),
                ("app/sub/f".into(), 0o644, 7, false),
            ]
        );

        // A patch elsewhere: same facts, same entries.
        let mut t = base();
        t.nodes.get_mut("etc").unwrap().mode = 0o700;
        t.nodes.insert("usr".into(), dir(0o755));
        assert_eq!(run(&t), (f0, e0.clone()));

        // /app exists with its own mode and owner: the layer carries them, the facts differ.
        let mut t = base();
        t.nodes.insert(
            "app".into(),
            Node {
                uid: 3,
                ..dir(0o700)
            },
        );
        let (f1, e1) = run(&t);
        assert_ne!(f1, f0);
        assert_eq!(e1[0], ("app".into(), 0o700, 3, true));

        // /app is a symlink to /srv: the files land elsewhere, the facts differ.
        let mut t = base();
        t.nodes.insert(
            "app".into(),
            Node {
                kind: NodeKind::Symlink("/srv".into()),
                ..dir(0o777)
            },
        );
        let (f2, e2) = run(&t);
        assert_ne!(f2, f0);
        assert_ne!(f2, f1);
        assert!(e2.iter().any(|e| e.0 == "srv/sub/f"), "{e2:?}");

        // /app is a file: replaced by a directory, but the fact is recorded.
        let mut t = base();
        t.nodes.insert(
            "app".into(),
            Node {
                kind: NodeKind::File {
                    size: 1,
                    spool: None,
                },
                ..dir(0o644)
            },
        );
        let (f3, e3) = run(&t);
        assert_eq!(e3, e0);
        // Same answers as "absent" (entries() only asks whether it is a directory).
        assert_eq!(f3, f0);
    }

    #[test]
    fn who_reads_the_parent() {
        let spec = |add: bool, link: bool, chown: Option<&str>, from: CopyFrom| CopySpec {
            add,
            from,
            sources: vec![],
            dest: "/a/".into(),
            chown: chown.map(str::to_string),
            chmod: None,
            link,
            excludes: vec![],
            parents: false,
        };
        let c = CopyFrom::Context;
        assert_eq!(
            keys::parent_use(&spec(false, true, None, c.clone())),
            ParentUse::None
        );
        assert_eq!(
            keys::parent_use(&spec(false, true, Some("1:2"), c.clone())),
            ParentUse::None
        );
        assert_eq!(
            keys::parent_use(&spec(false, true, Some("app"), c.clone())),
            ParentUse::Whole
        );
        assert_eq!(
            keys::parent_use(&spec(false, false, None, c.clone())),
            ParentUse::Facts
        );
        assert_eq!(
            keys::parent_use(&spec(false, false, Some("app"), c.clone())),
            ParentUse::Whole
        );
        assert_eq!(
            keys::parent_use(&spec(true, false, None, c.clone())),
            ParentUse::Whole
        );
        assert_eq!(
            keys::parent_use(&spec(false, false, None, CopyFrom::Stage(0))),
            ParentUse::Whole
        );
    }
}
