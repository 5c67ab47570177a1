//! Resolving `COPY`/`ADD` sources inside the build context, safely.
//!
//! All file-system access goes through directory file descriptors with
//! `*at` system calls and `O_NOFOLLOW`: path components are opened one at a
//! time and symlinks are only ever followed by this module's own resolver,
//! which keeps the resolution inside the context root. A symlink swapped in
//! concurrently makes the open fail instead of redirecting it.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::glob::{glob_match, has_meta, GlobError};
use super::ignore::{clean, IgnoreError, IgnoreMatcher};

/// Maximum number of symlinks followed while resolving one source (as Linux).
const MAX_SYMLINKS: usize = 40;

/// An error resolving build-context sources.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context root cannot be opened as a directory.
    #[error("cannot open build context {}: {source}", path.display())]
    OpenRoot {
        /// The root as given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A source path, or a symlink on its way, points outside the context.
    #[error("COPY source `{pattern}` points outside the build context (at `{path}`)")]
    OutsideContext {
        /// The source as written.
        pattern: String,
        /// The offending path (the source itself or a symlink inside the context).
        path: String,
    },
    /// A plain source does not exist in the (filtered) context.
    #[error("COPY source `{pattern}` not found in the build context")]
    NotFound {
        /// The source as written.
        pattern: String,
        /// Set when the path exists but `.dockerignore` excludes it: the
        /// context-relative path that is excluded.
        excluded: Option<String>,
    },
    /// Too many symlinks (probably a cycle).
    #[error("too many levels of symbolic links resolving COPY source `{pattern}` (at `{path}`)")]
    SymlinkLoop {
        /// The source as written.
        pattern: String,
        /// The context-relative path of the last symlink followed.
        path: String,
    },
    /// A socket, FIFO or device node would be copied.
    #[error("cannot copy {kind} {} from the build context", path.display())]
    UnsupportedFileType {
        /// Host path of the file.
        path: PathBuf,
        /// `"socket"`, `"fifo"`, `"character device"`, `"block device"` or `"unknown file type"`.
        kind: &'static str,
    },
    /// A file name (or symlink target) is not valid UTF-8.
    #[error("file name is not valid UTF-8: {}", path.display())]
    NonUtf8Path {
        /// Host path of the file.
        path: PathBuf,
    },
    /// A source pattern is malformed.
    #[error("invalid COPY source pattern `{pattern}`: {source}")]
    BadPattern {
        /// The source as written.
        pattern: String,
        /// What is wrong with it.
        #[source]
        source: GlobError,
    },
    /// An `--exclude` pattern is malformed.
    #[error("invalid --exclude pattern: {0}")]
    BadExclude(#[source] IgnoreError),
    /// Any other I/O error.
    #[error("I/O error at {}: {source}", path.display())]
    Io {
        /// Host path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ContextError {
    /// A suggestion for the user, if there is one.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ContextError::OpenRoot { .. } => {
                "the build context must be an existing, readable directory".to_string()
            }
            ContextError::OutsideContext { .. } => "COPY and ADD can only read files inside the \
                 build context: `..` above the context root and symlinks pointing out of it are \
                 rejected; move the files into the context or use a larger context directory"
                .to_string(),
            ContextError::NotFound {
                excluded: Some(path),
                ..
            } => format!(
                "`{path}` exists but is excluded by .dockerignore; remove the matching pattern or \
                 add a `!{path}` line after it"
            ),
            ContextError::NotFound { excluded: None, .. } => "source paths are relative to the \
                 build context root (not to the Dockerfile's directory); check the spelling and \
                 the context directory passed to the build"
                .to_string(),
            ContextError::SymlinkLoop { .. } => {
                "check the context for a cycle of symbolic links".to_string()
            }
            ContextError::UnsupportedFileType { path, .. } => format!(
                "only regular files, directories and symlinks can be copied; exclude `{}` with \
                 .dockerignore or COPY --exclude",
                path.display()
            ),
            ContextError::NonUtf8Path { .. } => {
                "rename the file or exclude it with .dockerignore".to_string()
            }
            ContextError::BadPattern { .. } => {
                "escape a literal `[`, `*`, `?` or `\\` with a backslash".to_string()
            }
            ContextError::BadExclude(_) => {
                "--exclude takes patterns with .dockerignore syntax".to_string()
            }
            ContextError::Io { .. } => return None,
        })
    }
}

/// The type of a context entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextKind {
    /// A regular file (hard links are plain files).
    File {
        /// Size in bytes.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symlink, never followed (inside a directory source).
    Symlink {
        /// The link target as stored.
        target: String,
    },
}

/// One file-system object of a resolved source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    /// `/`-separated path relative to the source root (`""` for a file source).
    pub rel_in_source: String,
    /// Absolute path inside the context.
    pub host_path: PathBuf,
    /// Type.
    pub kind: ContextKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i128,
}

/// One matched source of a `COPY`/`ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSource {
    /// The source pattern as given.
    pub pattern: String,
    /// The matched path relative to the context root, as matched (before a
    /// final symlink is followed; `""` for the root). Its last component is
    /// the name used at the destination.
    pub rel: String,
    /// Where `rel` leads after following symlinks, relative to the root.
    pub resolved_rel: String,
    /// Whether the (followed) source is a directory.
    pub is_dir: bool,
    /// File source: one entry with `rel_in_source == ""`. Directory source:
    /// everything below it (not the directory itself) in depth-first order
    /// with siblings sorted bytewise, i.e. sorted component-wise.
    pub entries: Vec<ContextEntry>,
}

/// Memoised [`Context::resolve`] results, by (sources, excludes, `**` recursive).
type ResolveMemo = std::collections::HashMap<(Vec<String>, Vec<String>, bool), Vec<ResolvedSource>>;

/// An opened build context.
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    root_fd: OwnedFd,
    ignore: IgnoreMatcher,
    /// Results kept by [`Context::prefetch`] (the pre-flight check that fails before anything
    /// is built), handed over to the next [`Context::resolve`] of the same sources.
    memo: std::sync::Mutex<ResolveMemo>,
}

/// The result of resolving one path inside the context.
struct ResolvedPath {
    /// Real path (no symlinks), relative to the root.
    rel: String,
    /// Directory holding the final component (None: the path is the root).
    parent: Option<OwnedFd>,
    /// Final component name.
    name: String,
    stat: Stat,
    /// Context-relative paths of the symlinks followed.
    links: Vec<String>,
}

enum ResolveFail {
    NotFound,
    Err(ContextError),
}

impl From<ContextError> for ResolveFail {
    fn from(e: ContextError) -> Self {
        ResolveFail::Err(e)
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn io_err(path: PathBuf, e: Errno) -> ContextError {
    ContextError::Io {
        path,
        source: e.into(),
    }
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn kind_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Socket => "socket",
        FileType::Fifo => "fifo",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "unknown file type",
    }
}

/// Matchers applied while walking: `.dockerignore` (matched on
/// context-relative paths) and `--exclude` (matched on source-relative
/// paths, as BuildKit does).
struct Filters<'a> {
    ignore: &'a IgnoreMatcher,
    exclude: &'a IgnoreMatcher,
}

/// Per-pattern match state of a directory, for incremental matching.
#[derive(Clone, Default)]
struct FilterState {
    ignore: Vec<bool>,
    exclude: Vec<bool>,
}

impl Filters<'_> {
    /// Returns whether `rel` is excluded by `.dockerignore` and by
    /// `--exclude`, and the per-pattern state of `rel` for its children.
    /// The child state is only computed when `want_state` (directories).
    fn eval(
        &self,
        ctx_rel: &str,
        src_rel: &str,
        parent: &FilterState,
        want_state: bool,
    ) -> (bool, bool, FilterState) {
        let mut st = FilterState::default();
        let ig = !self.ignore.is_empty()
            && self.ignore.eval_incremental(
                ctx_rel,
                &parent.ignore,
                want_state.then_some(&mut st.ignore),
            );
        let ex = !self.exclude.is_empty()
            && self.exclude.eval_incremental(
                src_rel,
                &parent.exclude,
                want_state.then_some(&mut st.exclude),
            );
        (ig, ex, st)
    }

    /// Whether a walker must descend into a directory given how it is excluded.
    fn descend(&self, ctx_rel: &str, src_rel: &str, ig: bool, ex: bool) -> bool {
        (!ig || self.ignore.may_reinclude_below(ctx_rel))
            && (!ex || self.exclude.may_reinclude_below(src_rel))
    }
}

impl Context {
    /// Opens the context at `root` (canonicalised) with its ignore rules.
    pub fn open(root: &Path, ignore: IgnoreMatcher) -> Result<Context, ContextError> {
        let open_err = |source: io::Error| ContextError::OpenRoot {
            path: root.to_path_buf(),
            source,
        };
        let canon = std::fs::canonicalize(root).map_err(open_err)?;
        let root_fd = rustix::fs::open(
            &canon,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_err(e.into()))?;
        Ok(Context {
            memo: Default::default(),
            root: canon,
            root_fd,
            ignore,
        })
    }

    /// The canonical context root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `.dockerignore` rules in effect.
    pub fn ignore(&self) -> &IgnoreMatcher {
        &self.ignore
    }

    fn host(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Resolves the (already variable-expanded) sources of one `COPY`/`ADD`,
    /// applying `.dockerignore` and the instruction's `--exclude` patterns.
    ///
    /// `--exclude` patterns use `.dockerignore` line syntax. As in BuildKit,
    /// inside a directory source they are matched on paths relative to that
    /// source (`COPY --exclude=*.o src/ …` drops `src/x.o` but not
    /// `src/sub/x.o`; use `**/*.o` for that); a matched top-level source is
    /// dropped if its context-relative path matches.
    ///
    /// Wildcard sources expand to their matches in sorted order; a wildcard
    /// matching nothing adds nothing (BuildKit's `AllowEmptyWildcard`: not an
    /// error, unlike the classic builder's "no source files were specified").
    /// A plain source that is
    /// missing or excluded by `.dockerignore` is [`ContextError::NotFound`];
    /// one excluded by `--exclude` is silently dropped.
    pub fn resolve(
        &self,
        sources: &[String],
        excludes: &[String],
    ) -> Result<Vec<ResolvedSource>, ContextError> {
        self.resolve_with(sources, excludes, false)
    }

    /// [`Context::resolve`], where with `doublestar` a path component `**` matches any number
    /// of directories, none included (`COPY --parents`, as BuildKit; plain COPY matches
    /// with Go's `filepath.Match`, where `**` is `*`). Directories reached through symlinks
    /// are not descended into by `**`.
    pub fn resolve_with(
        &self,
        sources: &[String],
        excludes: &[String],
        doublestar: bool,
    ) -> Result<Vec<ResolvedSource>, ContextError> {
        let memo_key = (sources.to_vec(), excludes.to_vec(), doublestar);
        // Taken, not cloned: the pre-flight's result is used once by the build, so a large
        // source tree is never held twice.
        if let Some(hit) = self.memo.lock().unwrap().remove(&memo_key) {
            return Ok(hit);
        }
        let out = self.resolve_uncached(sources, excludes, doublestar)?;
        Ok(out)
    }

    /// Resolves `sources` now (reporting errors now) and keeps the result for the next
    /// [`Context::resolve`] of the same sources.
    pub fn prefetch(&self, sources: &[String], excludes: &[String]) -> Result<(), ContextError> {
        self.prefetch_with(sources, excludes, false)
    }

    /// [`Context::prefetch`] for [`Context::resolve_with`].
    pub fn prefetch_with(
        &self,
        sources: &[String],
        excludes: &[String],
        doublestar: bool,
    ) -> Result<(), ContextError> {
        let out = self.resolve_uncached(sources, excludes, doublestar)?;
        self.memo
            .lock()
            .unwrap()
            .insert((sources.to_vec(), excludes.to_vec(), doublestar), out);
        Ok(())
    }

    fn resolve_uncached(
        &self,
        sources: &[String],
        excludes: &[String],
        doublestar: bool,
    ) -> Result<Vec<ResolvedSource>, ContextError> {
        let exclude = IgnoreMatcher::from_patterns(excludes).map_err(ContextError::BadExclude)?;
        let filters = Filters {
            ignore: &self.ignore,
            exclude: &exclude,
        };
        let mut out = Vec::new();
        for pattern in sources {
            self.resolve_one(pattern, &filters, doublestar, &mut out)?;
        }
        Ok(out)
    }

    fn resolve_one(
        &self,
        pattern: &str,
        filters: &Filters<'_>,
        doublestar: bool,
        out: &mut Vec<ResolvedSource>,
    ) -> Result<(), ContextError> {
        let outside = || ContextError::OutsideContext {
            pattern: pattern.to_string(),
            path: pattern.to_string(),
        };
        let cleaned = clean(pattern);
        let rel = match cleaned.strip_prefix('/') {
            Some(r) => r,
            None if cleaned == "." => "",
            None => &cleaned,
        };
        if rel == ".." || rel.starts_with("../") {
            return Err(outside());
        }
        if pattern.is_empty() {
            return Err(ContextError::NotFound {
                pattern: String::new(),
                excluded: None,
            });
        }

        if !has_meta(rel) {
            let res = match self.resolve_path(pattern, rel) {
                Ok(r) => r,
                Err(ResolveFail::NotFound) => {
                    return Err(ContextError::NotFound {
                        pattern: pattern.to_string(),
                        excluded: None,
                    })
                }
                Err(ResolveFail::Err(e)) => return Err(e),
            };
            match self.build_source(pattern, rel, res, filters)? {
                Built::Ok(src) => out.push(src),
                Built::Ignored(path) => {
                    return Err(ContextError::NotFound {
                        pattern: pattern.to_string(),
                        excluded: Some(path),
                    })
                }
                Built::Excluded => {}
            }
            return Ok(());
        }

        let matches = self.expand(pattern, rel, doublestar)?;
        for m in matches {
            let res = match self.resolve_path(pattern, &m) {
                Ok(r) => r,
                Err(ResolveFail::NotFound) => continue,
                Err(ResolveFail::Err(e)) => return Err(e),
            };
            if let Built::Ok(src) = self.build_source(pattern, &m, res, filters)? {
                out.push(src);
            }
        }
        Ok(())
    }

    /// Expands a wildcard path component by component. Results are in
    /// component-wise sorted order and may not exist (trailing literal
    /// components are not checked here).
    fn expand(
        &self,
        pattern: &str,
        rel: &str,
        doublestar: bool,
    ) -> Result<Vec<String>, ContextError> {
        let mut cands = vec![String::new()];
        for comp in rel.split('/') {
            if doublestar && comp == "**" {
                cands = self.with_descendant_dirs(pattern, cands)?;
                continue;
            }
            if !has_meta(comp) {
                for c in &mut cands {
                    *c = join(c, comp);
                }
                continue;
            }
            // Validate before touching the disk so errors don't depend on content.
            glob_match(comp, "").map_err(|source| ContextError::BadPattern {
                pattern: pattern.to_string(),
                source,
            })?;
            let mut next = Vec::new();
            for cand in &cands {
                let Some((_, names)) = self.list_dir(pattern, cand)? else {
                    continue;
                };
                for (name, _) in names {
                    let hit =
                        glob_match(comp, &name).map_err(|source| ContextError::BadPattern {
                            pattern: pattern.to_string(),
                            source,
                        })?;
                    if hit {
                        next.push(join(cand, &name));
                    }
                }
            }
            cands = next;
        }
        Ok(cands)
    }

    /// The entries of `cand` (resolved in the context) and an fd of it; `None` when it does not
    /// exist or is not a directory.
    fn list_dir(
        &self,
        pattern: &str,
        cand: &str,
    ) -> Result<Option<(OwnedFd, Names)>, ContextError> {
        let res = match self.resolve_path(pattern, cand) {
            Ok(r) => r,
            Err(ResolveFail::NotFound) => return Ok(None),
            Err(ResolveFail::Err(e)) => return Err(e),
        };
        if FileType::from_raw_mode(res.stat.st_mode) != FileType::Directory {
            return Ok(None);
        }
        let fd = self.open_resolved_dir(&res)?;
        let host = self.host(&res.rel);
        let names = read_names(fd.as_fd(), &host)?;
        Ok(Some((fd, names)))
    }

    /// `cands` and every directory below each of them (symlinks not followed), sorted
    /// component-wise, without duplicates: what a `**` component matches.
    fn with_descendant_dirs(
        &self,
        pattern: &str,
        cands: Vec<String>,
    ) -> Result<Vec<String>, ContextError> {
        let mut out = Vec::new();
        let mut stack = cands;
        while let Some(cand) = stack.pop() {
            let Some((fd, names)) = self.list_dir(pattern, &cand)? else {
                continue;
            };
            for (name, ft) in names {
                let is_dir = match ft {
                    FileType::Directory => true,
                    // Some file systems leave the type out of directory entries.
                    FileType::Unknown => {
                        rustix::fs::statat(fd.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                            .is_ok_and(|st| {
                                FileType::from_raw_mode(st.st_mode) == FileType::Directory
                            })
                    }
                    _ => false,
                };
                if is_dir {
                    stack.push(join(&cand, &name));
                }
            }
            out.push(cand);
        }
        out.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        out.dedup();
        Ok(out)
    }

    fn open_resolved_dir(&self, res: &ResolvedPath) -> Result<OwnedFd, ContextError> {
        let fd = match &res.parent {
            None => rustix::io::fcntl_dupfd_cloexec(&self.root_fd, 0),
            Some(p) => open_dir_at(p.as_fd(), &res.name),
        };
        fd.map_err(|e| io_err(self.host(&res.rel), e))
    }

    /// Resolves `rel` component by component from the root, following
    /// symlinks (including a final one) but never leaving the context.
    fn resolve_path(&self, pattern: &str, rel: &str) -> Result<ResolvedPath, ResolveFail> {
        let mut todo: VecDeque<String> = rel
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut links = Vec::new();
        let outside = |path: String| {
            ResolveFail::Err(ContextError::OutsideContext {
                pattern: pattern.to_string(),
                path,
            })
        };
        while let Some(comp) = todo.pop_front() {
            let dir: BorrowedFd<'_> = fds.last().map_or(self.root_fd.as_fd(), |f| f.as_fd());
            match comp.as_str() {
                "." => continue,
                ".." => {
                    if cur.pop().is_none() {
                        return Err(outside(links.last().cloned().unwrap_or_else(|| rel.into())));
                    }
                    fds.pop();
                    continue;
                }
                _ => {}
            }
            let here = join(&cur.join("/"), &comp);
            let st = match rustix::fs::statat(dir, comp.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Err(ResolveFail::NotFound),
                Err(e) => return Err(io_err(self.host(&here), e).into()),
            };
            let ft = FileType::from_raw_mode(st.st_mode);
            if ft == FileType::Symlink {
                if links.len() >= MAX_SYMLINKS {
                    return Err(ContextError::SymlinkLoop {
                        pattern: pattern.to_string(),
                        path: here,
                    }
                    .into());
                }
                let target = rustix::fs::readlinkat(dir, comp.as_str(), Vec::new())
                    .map_err(|e| io_err(self.host(&here), e))?;
                let target = target.into_bytes();
                let target =
                    std::str::from_utf8(&target).map_err(|_| ContextError::NonUtf8Path {
                        path: self.host(&here),
                    })?;
                links.push(here.clone());
                let rest: &str = if target.starts_with('/') {
                    // Absolute targets are only acceptable if they point
                    // into the context itself.
                    // (A root that is not UTF-8 cannot be a prefix of a UTF-8 target.)
                    let Some(root) = self.root.to_str() else {
                        return Err(outside(here));
                    };
                    let t = clean(target);
                    let inner = if t == root {
                        ""
                    } else if root == "/" {
                        &t[1..]
                    } else {
                        match t.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
                            Some(r) => r,
                            None => return Err(outside(here)),
                        }
                    };
                    cur.clear();
                    fds.clear();
                    // Re-parse below.
                    for c in inner.rsplit('/').filter(|c| !c.is_empty()) {
                        todo.push_front(c.to_string());
                    }
                    continue;
                } else {
                    target
                };
                for c in rest.rsplit('/').filter(|c| !c.is_empty()) {
                    todo.push_front(c.to_string());
                }
                continue;
            }
            if todo.is_empty() {
                let parent = match fds.pop() {
                    Some(f) => f,
                    None => rustix::io::fcntl_dupfd_cloexec(&self.root_fd, 0)
                        .map_err(|e| io_err(self.root.clone(), e))?,
                };
                cur.push(comp.clone());
                return Ok(ResolvedPath {
                    rel: cur.join("/"),
                    parent: Some(parent),
                    name: comp,
                    stat: st,
                    links,
                });
            }
            if ft != FileType::Directory {
                return Err(ResolveFail::NotFound);
            }
            let fd = match open_dir_at(dir, &comp) {
                Ok(fd) => fd,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return Err(ResolveFail::NotFound)
                }
                Err(e) => return Err(io_err(self.host(&here), e).into()),
            };
            fds.push(fd);
            cur.push(comp);
        }
        // The path resolved to a directory we already hold (or the root).
        let (parent, name) = if cur.is_empty() {
            (None, String::new())
        } else {
            fds.pop();
            let name = cur.last().cloned().unwrap_or_default();
            let parent = match fds.pop() {
                Some(f) => f,
                None => rustix::io::fcntl_dupfd_cloexec(&self.root_fd, 0)
                    .map_err(|e| io_err(self.root.clone(), e))?,
            };
            (Some(parent), name)
        };
        let st = match &parent {
            None => rustix::fs::fstat(&self.root_fd),
            Some(p) => rustix::fs::statat(p, name.as_str(), AtFlags::SYMLINK_NOFOLLOW),
        }
        .map_err(|e| io_err(self.host(&cur.join("/")), e))?;
        Ok(ResolvedPath {
            rel: cur.join("/"),
            parent,
            name,
            stat: st,
            links,
        })
    }

    /// Applies exclusion rules to a resolved top-level source and collects
    /// its entries.
    fn build_source(
        &self,
        pattern: &str,
        matched: &str,
        res: ResolvedPath,
        filters: &Filters<'_>,
    ) -> Result<Built, ContextError> {
        let ft = FileType::from_raw_mode(res.stat.st_mode);
        let is_dir = ft == FileType::Directory;
        // The source must be present in the filtered context: the matched
        // path, every symlink followed, and the final location.
        let mut ignored_dir = false;
        for p in std::iter::once(matched)
            .chain(res.links.iter().map(String::as_str))
            .chain(std::iter::once(res.rel.as_str()))
        {
            if self.ignore.is_excluded(p) {
                if p == res.rel && is_dir && self.ignore.may_reinclude_below(p) {
                    ignored_dir = true;
                    continue;
                }
                return Ok(Built::Ignored(p.to_string()));
            }
        }
        if filters.exclude.is_excluded(matched) {
            return Ok(Built::Excluded);
        }
        let host = self.host(&res.rel);
        let entries = match ft {
            FileType::Directory => {
                let fd = self.open_resolved_dir(&res)?;
                let dir = DirCtx {
                    ctx_rel: res.rel.clone(),
                    src_rel: String::new(),
                    host: host.clone(),
                    state: FilterState {
                        ignore: self.ignore.state_of(&res.rel),
                        exclude: Vec::new(),
                    },
                };
                let entries = walk_dir(fd.as_fd(), &dir, 0, filters)?;
                if entries.is_empty() && ignored_dir {
                    return Ok(Built::Ignored(res.rel));
                }
                entries
            }
            FileType::RegularFile => vec![entry_from_stat(String::new(), host, &res.stat, None)],
            other => {
                return Err(ContextError::UnsupportedFileType {
                    path: host,
                    kind: kind_name(other),
                })
            }
        };
        Ok(Built::Ok(ResolvedSource {
            pattern: pattern.to_string(),
            rel: matched.to_string(),
            resolved_rel: res.rel,
            is_dir,
            entries,
        }))
    }
}

enum Built {
    Ok(ResolvedSource),
    /// Not in the context because `.dockerignore` excludes this path.
    Ignored(String),
    /// Dropped by `--exclude`.
    Excluded,
}

#[allow(clippy::unnecessary_cast)]
fn entry_from_stat(
    rel_in_source: String,
    host_path: PathBuf,
    st: &Stat,
    link_target: Option<String>,
) -> ContextEntry {
    let size = st.st_size as u64;
    let kind = match link_target {
        Some(target) => ContextKind::Symlink { target },
        None if FileType::from_raw_mode(st.st_mode) == FileType::Directory => ContextKind::Dir,
        None => ContextKind::File { size },
    };
    ContextEntry {
        rel_in_source,
        host_path,
        kind,
        mode: (st.st_mode as u32) & 0o7777,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size,
        mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
        ctime_ns: st.st_ctime as i128 * 1_000_000_000 + st.st_ctime_nsec as i128,
    }
}

/// Lists a directory's entries (without `.`/`..`) with their `d_type`
/// (possibly `Unknown`), sorted bytewise by name.
/// A directory's entries: name and type.
type Names = Vec<(String, FileType)>;

fn read_names(fd: BorrowedFd<'_>, host: &Path) -> Result<Names, ContextError> {
    let dir = Dir::read_from(fd).map_err(|e| io_err(host.to_path_buf(), e))?;
    let mut names = Vec::new();
    for ent in dir {
        let ent = ent.map_err(|e| io_err(host.to_path_buf(), e))?;
        let bytes = ent.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => names.push((s.to_string(), ent.file_type())),
            Err(_) => {
                return Err(ContextError::NonUtf8Path {
                    path: host.join(OsStr::from_bytes(bytes)),
                })
            }
        }
    }
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(names)
}

/// Directories this deep are walked in parallel by recursion; deeper
/// subtrees use an explicit stack so that pathological nesting cannot
/// overflow a thread stack.
const PAR_DEPTH: usize = 48;

/// A directory being walked.
#[derive(Clone)]
struct DirCtx {
    /// Path relative to the context root.
    ctx_rel: String,
    /// Path relative to the source root.
    src_rel: String,
    /// Host path.
    host: PathBuf,
    /// Match state of the directory.
    state: FilterState,
}

/// What to do with one directory entry.
enum Visit {
    Skip,
    Leaf(ContextEntry),
    Dir {
        entry: ContextEntry,
        fd: OwnedFd,
        sub: DirCtx,
        /// Excluded itself, entered only for re-included content: emitted
        /// only if something below it is.
        excluded: bool,
    },
}

/// Stats and classifies entry `name` of directory `parent` (open at `fd`).
fn visit(
    fd: BorrowedFd<'_>,
    parent: &DirCtx,
    name: &str,
    dtype: FileType,
    filters: &Filters<'_>,
) -> Result<Visit, ContextError> {
    let ctx_rel = join(&parent.ctx_rel, name);
    let src_rel = join(&parent.src_rel, name);
    let maybe_dir = matches!(dtype, FileType::Directory | FileType::Unknown);
    let (ig, ex, state) = filters.eval(&ctx_rel, &src_rel, &parent.state, maybe_dir);
    let excluded = ig || ex;
    if excluded && (!maybe_dir || !filters.descend(&ctx_rel, &src_rel, ig, ex)) {
        return Ok(Visit::Skip);
    }
    let host = parent.host.join(name);
    let st = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        // Vanished while walking: treat as absent.
        Err(Errno::NOENT) => return Ok(Visit::Skip),
        Err(e) => return Err(io_err(host, e)),
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let sub_fd = open_dir_at(fd, name).map_err(|e| io_err(host.clone(), e))?;
            Ok(Visit::Dir {
                entry: entry_from_stat(src_rel.clone(), host.clone(), &st, None),
                fd: sub_fd,
                sub: DirCtx {
                    ctx_rel,
                    src_rel,
                    host,
                    state,
                },
                excluded,
            })
        }
        _ if excluded => Ok(Visit::Skip),
        FileType::RegularFile => Ok(Visit::Leaf(entry_from_stat(src_rel, host, &st, None))),
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(fd, name, Vec::new())
                .map_err(|e| io_err(host.clone(), e))?
                .into_string()
                .map_err(|_| ContextError::NonUtf8Path { path: host.clone() })?;
            Ok(Visit::Leaf(entry_from_stat(
                src_rel,
                host,
                &st,
                Some(target),
            )))
        }
        other => Err(ContextError::UnsupportedFileType {
            path: host,
            kind: kind_name(other),
        }),
    }
}

/// Walks the directory `dir` open at `fd`, returning everything below it in
/// component-wise order. Siblings are visited in parallel.
fn walk_dir(
    fd: BorrowedFd<'_>,
    dir: &DirCtx,
    depth: usize,
    filters: &Filters<'_>,
) -> Result<Vec<ContextEntry>, ContextError> {
    if depth >= PAR_DEPTH {
        return walk_iter(fd, dir, filters);
    }
    let names = read_names(fd, &dir.host)?;
    let parts: Vec<Vec<ContextEntry>> = names
        .par_iter()
        .with_min_len(8)
        .map(|(name, dtype)| {
            Ok(match visit(fd, dir, name, *dtype, filters)? {
                Visit::Skip => Vec::new(),
                Visit::Leaf(e) => vec![e],
                Visit::Dir {
                    entry,
                    fd: sub_fd,
                    sub,
                    excluded,
                } => {
                    let below = walk_dir(sub_fd.as_fd(), &sub, depth + 1, filters)?;
                    if excluded && below.is_empty() {
                        Vec::new()
                    } else {
                        let mut v = Vec::with_capacity(below.len() + 1);
                        v.push(entry);
                        v.extend(below);
                        v
                    }
                }
            })
        })
        .collect::<Result<_, ContextError>>()?;
    let total = parts.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    for p in parts {
        out.extend(p);
    }
    Ok(out)
}

/// Sequential depth-first walk with an explicit stack (same output as
/// [`walk_dir`]).
fn walk_iter(
    fd: BorrowedFd<'_>,
    dir: &DirCtx,
    filters: &Filters<'_>,
) -> Result<Vec<ContextEntry>, ContextError> {
    struct Frame {
        fd: OwnedFd,
        names: std::vec::IntoIter<(String, FileType)>,
        dir: DirCtx,
        /// Entry of an excluded directory, emitted once something below is.
        pending: Option<ContextEntry>,
    }
    fn flush(stack: &mut [Frame], npending: &mut usize, out: &mut Vec<ContextEntry>) {
        if *npending > 0 {
            out.extend(stack.iter_mut().filter_map(|f| f.pending.take()));
            *npending = 0;
        }
    }
    let start = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| io_err(dir.host.clone(), e))?;
    let mut stack = vec![Frame {
        names: read_names(start.as_fd(), &dir.host)?.into_iter(),
        fd: start,
        dir: dir.clone(),
        pending: None,
    }];
    let mut npending = 0;
    let mut out = Vec::new();
    while let Some(top) = stack.last_mut() {
        let Some((name, dtype)) = top.names.next() else {
            if stack.pop().is_some_and(|f| f.pending.is_some()) {
                npending -= 1;
            }
            continue;
        };
        match visit(top.fd.as_fd(), &top.dir, &name, dtype, filters)? {
            Visit::Skip => {}
            Visit::Leaf(e) => {
                flush(&mut stack, &mut npending, &mut out);
                out.push(e);
            }
            Visit::Dir {
                entry,
                fd,
                sub,
                excluded,
            } => {
                let names = read_names(fd.as_fd(), &sub.host)?.into_iter();
                let pending = if excluded {
                    npending += 1;
                    Some(entry)
                } else {
                    flush(&mut stack, &mut npending, &mut out);
                    out.push(entry);
                    None
                };
                stack.push(Frame {
                    fd,
                    names,
                    dir: sub,
                    pending,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct Fixture {
        _tmp: tempfile::TempDir,
        outer: PathBuf,
        root: PathBuf,
    }

    /// A context at `<tmp>/ctx`, with `<tmp>/secret.txt` outside it.
    fn fixture(files: &[&str]) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let outer = fs::canonicalize(tmp.path()).unwrap();
        let root = outer.join("ctx");
        fs::create_dir(&root).unwrap();
        fs::write(outer.join("secret.txt"), "secret").unwrap();
        for f in files {
            let p = root.join(f);
            if let Some(d) = f.strip_suffix('/') {
                fs::create_dir_all(root.join(d)).unwrap();
            } else {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, f.as_bytes()).unwrap();
            }
        }
        Fixture {
            _tmp: tmp,
            outer,
            root,
        }
    }

    impl Fixture {
        fn ctx(&self, ignore: &str) -> Context {
            Context::open(&self.root, IgnoreMatcher::parse(ignore).unwrap()).unwrap()
        }
        fn link(&self, at: &str, target: &str) {
            let p = self.root.join(at);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(target, p).unwrap();
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn resolve(ctx: &Context, srcs: &[&str]) -> Result<Vec<ResolvedSource>, ContextError> {
        ctx.resolve(&s(srcs), &[])
    }

    fn rels(src: &ResolvedSource) -> Vec<&str> {
        src.entries
            .iter()
            .map(|e| e.rel_in_source.as_str())
            .collect()
    }

    fn matched(res: &[ResolvedSource]) -> Vec<&str> {
        res.iter().map(|r| r.rel.as_str()).collect()
    }

    #[test]
    fn file_source() {
        let f = fixture(&["a.txt"]);
        fs::set_permissions(f.root.join("a.txt"), fs::Permissions::from_mode(0o751)).unwrap();
        let ctx = f.ctx("");
        assert_eq!(ctx.root(), f.root.as_path());
        let r = resolve(&ctx, &["a.txt"]).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].pattern, "a.txt");
        assert_eq!(r[0].rel, "a.txt");
        assert!(!r[0].is_dir);
        assert_eq!(r[0].entries.len(), 1);
        let e = &r[0].entries[0];
        assert_eq!(e.rel_in_source, "");
        assert_eq!(e.host_path, f.root.join("a.txt"));
        assert_eq!(e.kind, ContextKind::File { size: 5 });
        assert_eq!(e.size, 5);
        assert_eq!(e.mode, 0o751);
        let md = fs::metadata(f.root.join("a.txt")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(e.ino, md.ino());
        assert_eq!(e.dev, md.dev());
        assert_eq!(
            e.mtime_ns,
            md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128
        );
    }

    #[test]
    fn path_forms() {
        let f = fixture(&["a.txt", "d/b.txt"]);
        let ctx = f.ctx("");
        for p in [
            "/a.txt",
            "./a.txt",
            "d/../a.txt",
            "d//..//a.txt",
            "/../a.txt",
        ] {
            let r = resolve(&ctx, &[p]).unwrap();
            assert_eq!(r[0].rel, "a.txt", "{p}");
            assert_eq!(r[0].pattern, p);
        }
        for p in [".", "/", "./", "d/.."] {
            let r = resolve(&ctx, &[p]).unwrap();
            assert_eq!(r[0].rel, "", "{p}");
            assert!(r[0].is_dir);
            assert_eq!(rels(&r[0]), ["a.txt", "d", "d/b.txt"]);
        }
        for p in ["..", "../x", "d/../../x", "../ctx/a.txt"] {
            let e = resolve(&ctx, &[p]).unwrap_err();
            assert!(
                matches!(e, ContextError::OutsideContext { .. }),
                "{p}: {e:?}"
            );
            assert!(e.hint().unwrap().contains("inside the build context"));
        }
    }

    #[test]
    fn not_found() {
        let f = fixture(&["a.txt"]);
        let ctx = f.ctx("");
        for p in ["missing", "a.txt/x", "nodir/x", ""] {
            let e = resolve(&ctx, &[p]).unwrap_err();
            assert!(
                matches!(&e, ContextError::NotFound { excluded: None, .. }),
                "{p}: {e:?}"
            );
        }
        let e = resolve(&ctx, &["missing"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "COPY source `missing` not found in the build context"
        );
        assert!(e
            .hint()
            .unwrap()
            .contains("relative to the build context root"));
    }

    #[test]
    fn dir_contents_sorted_componentwise() {
        let f = fixture(&["d/a/b", "d/a-b", "d/a.c", "d/Z", "d/e/", "d/a/c/d"]);
        f.link("d/ln", "a/b");
        f.link("d/abs", "/etc/passwd");
        let ctx = f.ctx("");
        let r = resolve(&ctx, &["d"]).unwrap();
        assert!(r[0].is_dir);
        assert_eq!(
            rels(&r[0]),
            ["Z", "a", "a/b", "a/c", "a/c/d", "a-b", "a.c", "abs", "e", "ln"]
        );
        let by = |n: &str| r[0].entries.iter().find(|e| e.rel_in_source == n).unwrap();
        assert_eq!(by("a").kind, ContextKind::Dir);
        assert_eq!(by("e").kind, ContextKind::Dir);
        assert_eq!(by("a/b").kind, ContextKind::File { size: 5 });
        assert_eq!(by("a/b").host_path, f.root.join("d/a/b"));
        // Symlinks inside a directory are entries, never followed — even
        // ones that point outside the context.
        assert_eq!(
            by("ln").kind,
            ContextKind::Symlink {
                target: "a/b".into()
            }
        );
        assert_eq!(
            by("abs").kind,
            ContextKind::Symlink {
                target: "/etc/passwd".into()
            }
        );
        // Deterministic across runs.
        assert_eq!(resolve(&ctx, &["d"]).unwrap(), r);
    }

    #[test]
    fn wildcards() {
        let f = fixture(&[
            "b.txt",
            "a.txt",
            "c.md",
            "src/app/main.rs",
            "src/lib/main.rs",
            "src/lib/other.rs",
            "src/x-y/main.rs",
            "src/x/main.rs",
            ".hidden.txt",
        ]);
        let ctx = f.ctx("");
        let r = resolve(&ctx, &["*.txt"]).unwrap();
        assert_eq!(matched(&r), [".hidden.txt", "a.txt", "b.txt"]);
        assert!(r.iter().all(|x| x.pattern == "*.txt"));
        let r = resolve(&ctx, &["src/*/main.rs"]).unwrap();
        assert_eq!(
            matched(&r),
            [
                "src/app/main.rs",
                "src/lib/main.rs",
                "src/x/main.rs",
                "src/x-y/main.rs"
            ]
        );
        let r = resolve(&ctx, &["/src/l?b", "[bc].*"]).unwrap();
        assert_eq!(matched(&r), ["src/lib", "b.txt", "c.md"]);
        assert!(r[0].is_dir);
        assert_eq!(rels(&r[0]), ["main.rs", "other.rs"]);
        // Wildcards matching nothing add nothing (BuildKit's AllowEmptyWildcard).
        assert!(resolve(&ctx, &["*.nope"]).unwrap().is_empty());
        assert!(resolve(&ctx, &["nodir/*"]).unwrap().is_empty());
        assert_eq!(
            matched(&resolve(&ctx, &["*.nope", "b.txt"]).unwrap()),
            ["b.txt"]
        );
        assert!(matches!(
            resolve(&ctx, &["src/[a"]).unwrap_err(),
            ContextError::BadPattern { .. }
        ));
        // A literal `*` can be escaped.
        fs::write(f.root.join("lit*"), "x").unwrap();
        let r = resolve(&ctx, &["lit\\*"]).unwrap();
        assert_eq!(matched(&r), ["lit*"]);
    }

    #[test]
    fn top_level_symlinks_followed_inside() {
        let f = fixture(&["real/f.txt", "file.txt"]);
        f.link("l_dir", "real");
        f.link("l_file", "./real/../file.txt");
        f.link("chain1", "chain2");
        f.link("chain2", "sub/chain3");
        f.link("sub/chain3", "../real/f.txt");
        f.link("l_abs_inside", f.root.join("real").to_str().unwrap());
        f.link("via/x", "../real");
        let ctx = f.ctx("");

        let r = resolve(&ctx, &["l_dir"]).unwrap();
        assert_eq!(r[0].rel, "l_dir");
        assert_eq!(r[0].resolved_rel, "real");
        assert!(r[0].is_dir);
        assert_eq!(rels(&r[0]), ["f.txt"]);
        assert_eq!(r[0].entries[0].host_path, f.root.join("real/f.txt"));

        let r = resolve(&ctx, &["l_file"]).unwrap();
        assert_eq!(r[0].resolved_rel, "file.txt");
        assert!(!r[0].is_dir);
        assert_eq!(r[0].entries[0].kind, ContextKind::File { size: 8 });

        let r = resolve(&ctx, &["chain1"]).unwrap();
        assert_eq!(r[0].resolved_rel, "real/f.txt");

        let r = resolve(&ctx, &["l_abs_inside"]).unwrap();
        assert_eq!(r[0].resolved_rel, "real");

        // Symlinked intermediate directory.
        let r = resolve(&ctx, &["via/x/f.txt", "l_dir/f.txt"]).unwrap();
        assert_eq!(r[0].resolved_rel, "real/f.txt");
        assert_eq!(r[1].resolved_rel, "real/f.txt");
        // Wildcards through a symlinked dir.
        let r = resolve(&ctx, &["l_dir/*.txt"]).unwrap();
        assert_eq!(matched(&r), ["l_dir/f.txt"]);
    }

    /// `**` (with `COPY --parents`) matches any number of directories, none included; without
    /// it, `**` is `*` (Go's `filepath.Match`).
    #[test]
    fn doublestar_matches_any_depth_when_asked() {
        let f = fixture(&["src/a.txt", "src/x/b.txt", "src/x/y/c.txt", "src/x/y/d.md"]);
        let ctx = f.ctx("");
        let r = ctx
            .resolve_with(&["src/**/*.txt".into()], &[], true)
            .unwrap();
        assert_eq!(matched(&r), ["src/a.txt", "src/x/b.txt", "src/x/y/c.txt"]);
        let r = ctx.resolve_with(&["**/c.txt".into()], &[], true).unwrap();
        assert_eq!(matched(&r), ["src/x/y/c.txt"]);
        let r = ctx.resolve(&["src/**/*.txt".into()], &[]).unwrap();
        assert_eq!(matched(&r), ["src/x/b.txt"]);
    }

    #[test]
    fn symlink_escapes_rejected() {
        let f = fixture(&["d/x"]);
        f.link("rel_up", "../../../../../../etc");
        f.link("rel_secret", "../secret.txt");
        f.link("abs", "/etc/passwd");
        f.link("abs_outer", f.outer.join("secret.txt").to_str().unwrap());
        f.link("c1", "d/c2");
        f.link("d/c2", "../c3");
        f.link("c3", "rel_secret");
        f.link("d/up", "..");
        f.link("d/up2", "../..");
        let ctx = f.ctx("");
        for p in [
            "rel_up",
            "rel_up/passwd",
            "rel_secret",
            "abs",
            "abs_outer",
            "c1",
            "d/up2",
            "d/up2/secret.txt",
            "d/up/rel_secret",
        ] {
            let e = resolve(&ctx, &[p]).unwrap_err();
            assert!(
                matches!(&e, ContextError::OutsideContext { pattern, .. } if pattern == p),
                "{p}: {e:?}"
            );
            assert!(e.hint().is_some());
        }
        // `d/up` is the root itself, which is fine.
        let r = resolve(&ctx, &["d/up"]).unwrap();
        assert_eq!(r[0].resolved_rel, "");
        // A wildcard matching an escaping link is an error too.
        assert!(matches!(
            resolve(&ctx, &["rel_s*"]).unwrap_err(),
            ContextError::OutsideContext { .. }
        ));
    }

    #[test]
    fn symlink_loop() {
        let f = fixture(&[]);
        f.link("a", "b");
        f.link("b", "a");
        f.link("self", "self/x");
        let ctx = f.ctx("");
        for p in ["a", "self"] {
            assert!(
                matches!(
                    resolve(&ctx, &[p]).unwrap_err(),
                    ContextError::SymlinkLoop { .. }
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn dockerignore_applies() {
        let f = fixture(&[
            "keep.txt",
            "secret.key",
            "node_modules/x/index.js",
            "docs/a.md",
            "docs/keep.md",
            "docs/sub/keep.md",
            "docs/sub/other.md",
            "build/out/bin",
            "build/out/keep/me",
        ]);
        f.link("link_to_secret", "secret.key");
        let ctx = f.ctx("*.key\nnode_modules\ndocs\n!docs/**/keep.md\nbuild\n!build/out/keep\n");

        let e = resolve(&ctx, &["secret.key"]).unwrap_err();
        assert!(
            matches!(&e, ContextError::NotFound { excluded: Some(p), .. } if p == "secret.key"),
            "{e:?}"
        );
        assert!(e.hint().unwrap().contains("excluded by .dockerignore"));
        // Reaching an ignored file through a symlink does not work either.
        assert!(matches!(
            resolve(&ctx, &["link_to_secret"]).unwrap_err(),
            ContextError::NotFound {
                excluded: Some(_),
                ..
            }
        ));
        assert!(matches!(
            resolve(&ctx, &["node_modules/x/index.js"]).unwrap_err(),
            ContextError::NotFound {
                excluded: Some(_),
                ..
            }
        ));
        // Wildcards skip ignored matches.
        let r = resolve(&ctx, &["*"]).unwrap();
        // (`link_to_secret` leads to an ignored file, so it is skipped.)
        assert_eq!(matched(&r), ["build", "docs", "keep.txt"]);
        assert!(resolve(&ctx, &["*.key"]).unwrap().is_empty());

        let r = resolve(&ctx, &["."]).unwrap();
        assert_eq!(
            rels(&r[0]),
            [
                "build",
                "build/out",
                "build/out/keep",
                "build/out/keep/me",
                "docs",
                "docs/keep.md",
                "docs/sub",
                "docs/sub/keep.md",
                "keep.txt",
                "link_to_secret"
            ]
        );
        // An excluded directory with re-included content is a valid source.
        let r = resolve(&ctx, &["docs"]).unwrap();
        assert_eq!(rels(&r[0]), ["keep.md", "sub", "sub/keep.md"]);
        let e = resolve(&ctx, &["build/out/bin"]).unwrap_err();
        assert!(matches!(
            e,
            ContextError::NotFound {
                excluded: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn excluded_dir_without_reincluded_content_is_not_found() {
        let f = fixture(&["docs/a.md", "docs/sub/b.txt"]);
        let ctx = f.ctx("docs\n!docs/*.keep\n");
        let e = resolve(&ctx, &["docs"]).unwrap_err();
        assert!(
            matches!(
                e,
                ContextError::NotFound {
                    excluded: Some(_),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn copy_exclude_is_source_relative() {
        let f = fixture(&[
            "a.txt",
            "b.md",
            "d/c.txt",
            "d/e.md",
            "d/sub/f.txt",
            "d/sub/keep.md",
            "d/keep/g.txt",
        ]);
        let ctx = f.ctx("");
        let r = ctx
            .resolve(
                &s(&["*", "a.txt"]),
                &s(&["*.txt", "**/sub", "!sub/keep.md"]),
            )
            .unwrap();
        // Top-level: `a.txt` matches `*.txt`, both as a wildcard match and
        // as a plain source (dropped silently).
        assert_eq!(matched(&r), ["b.md", "d"]);
        // Inside `d`: `*.txt` matches `c.txt` (relative to the source) but
        // not `keep/g.txt`; `sub` is excluded except the re-included file.
        assert_eq!(
            rels(&r[1]),
            ["e.md", "keep", "keep/g.txt", "sub", "sub/keep.md"]
        );
        let r = ctx.resolve(&s(&["d"]), &s(&["**/*.txt"])).unwrap();
        assert_eq!(rels(&r[0]), ["e.md", "keep", "sub", "sub/keep.md"]);
        let r = ctx
            .resolve(&s(&["d/"]), &s(&["sub/keep.md", "keep"]))
            .unwrap();
        assert_eq!(rels(&r[0]), ["c.txt", "e.md", "sub", "sub/f.txt"]);
        // Context-relative spelling does not apply inside the source.
        let r = ctx.resolve(&s(&["d"]), &s(&["d/c.txt"])).unwrap();
        assert!(rels(&r[0]).contains(&"c.txt"));
        // Combined with .dockerignore (context-relative).
        let ctx2 = f.ctx("d/e.md\n");
        let r = ctx2.resolve(&s(&["d"]), &s(&["keep", "sub"])).unwrap();
        assert_eq!(rels(&r[0]), ["c.txt"]);

        assert!(ctx
            .resolve(&s(&["*.txt"]), &s(&["*.txt"]))
            .unwrap()
            .is_empty());
        let e = ctx.resolve(&s(&["a.txt"]), &s(&["ok", "[x"])).unwrap_err();
        assert!(matches!(
            e,
            ContextError::BadExclude(IgnoreError::BadPattern { line: 2, .. })
        ));
    }

    #[test]
    fn unsupported_and_non_utf8() {
        let f = fixture(&["d/ok"]);
        let sock = f.root.join("d/sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let ctx = f.ctx("");
        let e = resolve(&ctx, &["d"]).unwrap_err();
        assert!(
            matches!(&e, ContextError::UnsupportedFileType { path, kind: "socket" } if *path == sock),
            "{e:?}"
        );
        assert!(e.hint().is_some());
        assert!(matches!(
            resolve(&ctx, &["d/sock"]).unwrap_err(),
            ContextError::UnsupportedFileType { .. }
        ));
        // Excluded special files are fine.
        let ctx = f.ctx("d/sock\n");
        assert_eq!(rels(&resolve(&ctx, &["d"]).unwrap()[0]), ["ok"]);

        let g = fixture(&["n/ok"]);
        fs::write(g.root.join("n").join(OsStr::from_bytes(b"bad\xff")), "").unwrap();
        let e = resolve(&g.ctx(""), &["n"]).unwrap_err();
        assert!(matches!(e, ContextError::NonUtf8Path { .. }), "{e:?}");
        assert!(
            resolve(&g.ctx("n/bad*\n"), &["n"]).is_err(),
            "name cannot be matched"
        );
        assert!(resolve(&g.ctx("n\n"), &["n/ok"]).is_err());
    }

    #[test]
    fn hard_links_are_files() {
        let f = fixture(&["d/a"]);
        fs::hard_link(f.root.join("d/a"), f.root.join("d/b")).unwrap();
        let r = resolve(&f.ctx(""), &["d"]).unwrap();
        assert_eq!(rels(&r[0]), ["a", "b"]);
        assert_eq!(r[0].entries[0].ino, r[0].entries[1].ino);
        assert!(matches!(r[0].entries[1].kind, ContextKind::File { .. }));
    }

    #[test]
    fn open_errors() {
        let f = fixture(&["file"]);
        assert!(matches!(
            Context::open(&f.root.join("file"), IgnoreMatcher::empty()).unwrap_err(),
            ContextError::OpenRoot { .. }
        ));
        assert!(Context::open(&f.root.join("nope"), IgnoreMatcher::empty()).is_err());
    }

    #[test]
    fn deep_tree() {
        let f = fixture(&[]);
        let mut p = f.root.join("deep");
        let depth = std::env::var("STRATA_DEEP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        for _ in 0..depth {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("leaf"), "").unwrap();
        // An extra subtree deep down (below PAR_DEPTH) without a leaf.
        let mut x = f.root.join("deep");
        for _ in 0..60 {
            x.push("d");
        }
        fs::create_dir_all(x.join("x/y")).unwrap();
        let r = resolve(&f.ctx("**/nothing\n"), &["deep"]).unwrap();
        assert_eq!(r[0].entries.len(), depth + 1 + 2);
        let leaf = format!("{}leaf", "d/".repeat(depth));
        let rels = rels(&r[0]);
        assert_eq!(rels[depth], leaf);
        // `x` sorts after `d`, so the extra subtree comes after the leaf.
        assert_eq!(rels[depth + 2], format!("{}x/y", "d/".repeat(60)));
        // Everything excluded except the leaf: excluded directories on the
        // way are emitted (before their content), the empty `x/y` is not.
        let r = resolve(&f.ctx("deep\n!**/leaf\n"), &["deep"]).unwrap();
        assert_eq!(r[0].entries.len(), depth + 1);
        assert_eq!(r[0].entries.last().unwrap().rel_in_source, leaf);
        assert!(r[0].entries.iter().all(|e| !e.rel_in_source.contains('x')));
        for (i, e) in r[0].entries[..depth].iter().enumerate() {
            assert_eq!(e.rel_in_source, "d/".repeat(i + 1).trim_end_matches('/'));
            assert_eq!(e.kind, ContextKind::Dir);
        }
    }
}
