//! `.dockerignore` parsing and matching with Docker's (moby `patternmatcher`)
//! semantics — which differ from `.gitignore`:
//!
//! - lines starting with `#` are comments (only in column 0); blank lines are
//!   skipped; a UTF-8 BOM is stripped;
//! - patterns are trimmed, cleaned like Go's `filepath.Clean`, and a leading
//!   `/` is dropped: every pattern is anchored at the context root
//!   (`foo` does **not** match `a/foo`; write `**/foo` for that);
//! - `*` and `?` never cross `/`; `**` matches any number of directories;
//! - a pattern that matches a directory excludes everything below it;
//! - `!pattern` re-includes; the last matching pattern wins, and a `!`
//!   pattern can re-include files below an excluded directory;
//! - the context root itself is never excluded.

use std::path::{Path, PathBuf};

use super::glob::{self, Class, GlobError};

/// An error in a `.dockerignore` file (or an `--exclude` pattern).
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A line holds a malformed pattern.
    #[error("invalid .dockerignore pattern `{pattern}` on line {line}: {reason}")]
    BadPattern {
        /// 1-based line number (for `--exclude` lists, the 1-based index).
        line: usize,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The ignore file exists but could not be read.
    #[error("cannot read ignore file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The ignore file leads out of the context, is not a regular file, or is too large.
    #[error("{}\nhint: {}", .0, .0.hint())]
    File(#[from] super::file::ContextFileError),
}

/// The largest `.dockerignore` read: as for a Dockerfile, real ones are a few kilobytes.
pub const MAX_IGNORE_FILE_BYTES: u64 = 1 << 20;

/// A compiled set of `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    normalized: Vec<String>,
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// No wildcards: the path must equal the pattern.
    Exact(String),
    /// `lit**`: the path must start with `lit`.
    Prefix(String),
    /// `**lit`: moby matches by suffix (`**/foo` also matches `foo`).
    Suffix(String),
    /// Anything else, compiled to a small NFA. `prefix`/`suffix` are the
    /// literal characters the pattern starts/ends with (a cheap prefilter).
    Nfa {
        states: Vec<State>,
        prefix: String,
        suffix: String,
    },
}

#[derive(Debug, Clone)]
enum Test {
    Lit(char),
    NotSlash,
    Any,
    Class(Class),
}

impl Test {
    #[inline]
    fn ok(&self, c: char) -> bool {
        match self {
            Test::Lit(l) => *l == c,
            Test::NotSlash => c != '/',
            Test::Any => true,
            Test::Class(class) => class.matches(c),
        }
    }
}

/// NFA state `i`; the accepting state is `states.len()`.
#[derive(Debug, Clone)]
enum State {
    /// Consume one character passing the test, go to `i+1`.
    Step(Test),
    /// Epsilon to `i+1`; consume a character passing the test, stay in `i`.
    Loop(Test),
    /// `(.*/)?`: epsilon to `i+1` (the inner loop) and to `i+2` (skip).
    OptDirsEnter,
    /// Inner loop of `(.*/)?`: any character stays; `/` may also leave to `i+1`.
    OptDirsInner,
}

impl IgnoreMatcher {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<IgnoreMatcher, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Self::from_lines(text.lines().enumerate().map(|(i, l)| (i + 1, l)))
    }

    /// Compiles a list of patterns with `.dockerignore` line syntax (e.g. a
    /// `COPY --exclude` list). Error line numbers are 1-based indexes.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<IgnoreMatcher, IgnoreError> {
        Self::from_lines(
            patterns
                .iter()
                .enumerate()
                .map(|(i, p)| (i + 1, p.as_ref())),
        )
    }

    fn from_lines<'a>(
        lines: impl Iterator<Item = (usize, &'a str)>,
    ) -> Result<IgnoreMatcher, IgnoreError> {
        let mut m = IgnoreMatcher::default();
        for (line, raw) in lines {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.starts_with('#') {
                continue;
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let bad = |reason: String| IgnoreError::BadPattern {
                line,
                pattern: trimmed.to_string(),
                reason,
            };
            let (exclusion, body) = match trimmed.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, trimmed),
            };
            if body.is_empty() {
                return Err(bad("`!` must be followed by a pattern".into()));
            }
            let mut p = clean(body);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
            // Validate with glob syntax (as moby does via filepath.Match).
            glob::glob_match(&p, ".").map_err(|e: GlobError| bad(e.to_string()))?;
            let kind = compile(&p).map_err(|e| bad(e.to_string()))?;
            m.normalized
                .push(if exclusion { format!("!{p}") } else { p });
            m.patterns.push(Pattern { exclusion, kind });
        }
        Ok(m)
    }

    /// A matcher that excludes nothing.
    pub fn empty() -> IgnoreMatcher {
        IgnoreMatcher::default()
    }

    /// True if there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The normalised patterns (`!` kept as a prefix), e.g. for cache keys.
    pub fn patterns(&self) -> &[String] {
        &self.normalized
    }

    /// Whether `rel` (clean, relative, `/`-separated) is excluded: the last
    /// pattern matching it or one of its parent directories decides.
    pub fn is_excluded(&self, rel: &str) -> bool {
        if rel.is_empty() || rel == "." || self.patterns.is_empty() {
            return false;
        }
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                // Cannot change the outcome.
                continue;
            }
            if p.kind.matches_self_or_parent(rel) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Incremental form of [`is_excluded`](Self::is_excluded) for tree walks:
    /// `parent` holds, per pattern, whether it matched the parent directory
    /// or one of its ancestors (empty for children of the root). Returns the
    /// decision for `rel` and writes the per-pattern state for `rel` to `out`.
    /// `out` may be `None` when `rel` has no children (not a directory).
    pub(crate) fn eval_incremental(
        &self,
        rel: &str,
        parent: &[bool],
        mut out: Option<&mut Vec<bool>>,
    ) -> bool {
        if let Some(o) = out.as_deref_mut() {
            o.clear();
        }
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let hit = parent.get(i).copied().unwrap_or(false) || p.kind.matches(rel);
            if let Some(o) = out.as_deref_mut() {
                o.push(hit);
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// The per-pattern state of `rel` for [`eval_incremental`](Self::eval_incremental).
    pub(crate) fn state_of(&self, rel: &str) -> Vec<bool> {
        if rel.is_empty() {
            return Vec::new();
        }
        self.patterns
            .iter()
            .map(|p| p.kind.matches_self_or_parent(rel))
            .collect()
    }

    /// True if some `!` pattern could re-include a path strictly below
    /// directory `rel`, i.e. a walker must descend into `rel` even though it
    /// is excluded. Conservative: may say `true` when nothing is re-included.
    pub fn may_reinclude_below(&self, rel: &str) -> bool {
        let mut dir = String::with_capacity(rel.len() + 1);
        if !rel.is_empty() && rel != "." {
            dir.push_str(rel);
            dir.push('/');
        }
        self.patterns.iter().any(|p| {
            p.exclusion
                && (p.kind.may_match_below(&dir)
                    // A `!` pattern matching the directory or an ancestor
                    // re-includes its whole subtree (parent matching).
                    || (!dir.is_empty() && p.kind.matches_self_or_parent(rel)))
        })
    }
}

impl Kind {
    fn matches(&self, path: &str) -> bool {
        match self {
            Kind::Exact(s) => path == s,
            Kind::Prefix(s) => path.starts_with(s.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Nfa {
                states,
                prefix,
                suffix,
            } => {
                path.len() >= prefix.len() + suffix.len()
                    && path.starts_with(prefix.as_str())
                    && path.ends_with(suffix.as_str())
                    && nfa_run(states, path, false)
            }
        }
    }

    /// Matches `path` or one of its parent directories.
    fn matches_self_or_parent(&self, path: &str) -> bool {
        self.matches(path)
            || path
                .match_indices('/')
                .any(|(i, _)| self.matches(&path[..i]))
    }

    /// Could this pattern match some path starting with `dir` (which is
    /// empty or ends in `/`)?
    fn may_match_below(&self, dir: &str) -> bool {
        match self {
            Kind::Exact(s) => s.starts_with(dir) && s.len() > dir.len(),
            Kind::Prefix(s) => s.starts_with(dir) || dir.starts_with(s.as_str()),
            Kind::Suffix(_) => true,
            Kind::Nfa { states, .. } => nfa_run(states, dir, true),
        }
    }
}

/// Compiles a cleaned pattern, mirroring moby's regexp translation:
/// `*` → `[^/]*`, `?` → `[^/]`, `**/` and inner `**` → `(.*/)?`,
/// trailing `**` → `.*`, `\c` → literal `c`, classes as in glob.
fn compile(p: &str) -> Result<Kind, GlobError> {
    let special = |c: char| matches!(c, '*' | '?' | '[' | ']' | '\\');
    if !p.contains(special) {
        return Ok(Kind::Exact(p.to_string()));
    }
    if let Some(rest) = p.strip_prefix("**") {
        if !rest.contains(special) {
            return Ok(Kind::Suffix(rest.to_string()));
        }
    }
    if let Some(head) = p.strip_suffix("**") {
        if !head.contains(special) {
            return Ok(Kind::Prefix(head.to_string()));
        }
    }
    let mut states = Vec::new();
    let mut rest = p;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '*' => {
                if let Some(r) = rest.strip_prefix('*') {
                    rest = r.strip_prefix('/').unwrap_or(r);
                    if rest.is_empty() {
                        states.push(State::Loop(Test::Any));
                    } else {
                        states.push(State::OptDirsEnter);
                        states.push(State::OptDirsInner);
                    }
                } else {
                    states.push(State::Loop(Test::NotSlash));
                }
            }
            '?' => states.push(State::Step(Test::NotSlash)),
            '[' => {
                let (class, r) = Class::parse(rest)?;
                rest = r;
                states.push(State::Step(Test::Class(class)));
            }
            '\\' => {
                let e = rest.chars().next().ok_or(GlobError::TrailingBackslash)?;
                rest = &rest[e.len_utf8()..];
                states.push(State::Step(Test::Lit(e)));
            }
            c => states.push(State::Step(Test::Lit(c))),
        }
    }
    let lit = |st: &State| match st {
        State::Step(Test::Lit(c)) => Some(*c),
        _ => None,
    };
    let prefix: String = states.iter().map_while(lit).collect();
    // The suffix must not overlap the prefix (all-literal patterns).
    let rest = &states[prefix.chars().count()..];
    let mut suffix: Vec<char> = rest.iter().rev().map_while(lit).collect();
    suffix.reverse();
    Ok(Kind::Nfa {
        prefix,
        suffix: suffix.into_iter().collect(),
        states,
    })
}

/// A set of NFA states: inline for up to 128 states, else on the heap.
enum Set {
    Small(u128),
    Big(Vec<bool>),
}

impl Set {
    fn new(n: usize) -> Set {
        if n <= 128 {
            Set::Small(0)
        } else {
            Set::Big(vec![false; n])
        }
    }
    #[inline]
    fn insert(&mut self, i: usize) -> bool {
        match self {
            Set::Small(b) => {
                let was = *b & (1 << i) != 0;
                *b |= 1 << i;
                !was
            }
            Set::Big(v) => !std::mem::replace(&mut v[i], true),
        }
    }
    #[inline]
    fn contains(&self, i: usize) -> bool {
        match self {
            Set::Small(b) => *b & (1 << i) != 0,
            Set::Big(v) => v[i],
        }
    }
    fn clear(&mut self) {
        match self {
            Set::Small(b) => *b = 0,
            Set::Big(v) => v.iter_mut().for_each(|x| *x = false),
        }
    }
    fn is_empty(&self) -> bool {
        match self {
            Set::Small(b) => *b == 0,
            Set::Big(v) => !v.iter().any(|x| *x),
        }
    }
}

fn add(states: &[State], set: &mut Set, i: usize) {
    if !set.insert(i) || i == states.len() {
        return;
    }
    match &states[i] {
        State::Loop(_) => add(states, set, i + 1),
        State::OptDirsEnter => {
            add(states, set, i + 1);
            add(states, set, i + 2);
        }
        State::Step(_) | State::OptDirsInner => {}
    }
}

/// Runs the NFA over `input`. With `prefix_only`, reports whether some
/// non-accepting state is still alive (the input is a viable prefix of a
/// longer match); otherwise whether the whole input is accepted.
fn nfa_run(states: &[State], input: &str, prefix_only: bool) -> bool {
    let n = states.len();
    let mut cur = Set::new(n + 1);
    let mut next = Set::new(n + 1);
    add(states, &mut cur, 0);
    for c in input.chars() {
        next.clear();
        for (i, st) in states.iter().enumerate() {
            if !cur.contains(i) {
                continue;
            }
            match st {
                State::Step(t) => {
                    if t.ok(c) {
                        add(states, &mut next, i + 1);
                    }
                }
                State::Loop(t) => {
                    if t.ok(c) {
                        add(states, &mut next, i);
                    }
                }
                State::OptDirsEnter => {}
                State::OptDirsInner => {
                    add(states, &mut next, i);
                    if c == '/' {
                        add(states, &mut next, i + 1);
                    }
                }
            }
        }
        std::mem::swap(&mut cur, &mut next);
        if cur.is_empty() {
            return false;
        }
    }
    if prefix_only {
        (0..n).any(|i| cur.contains(i))
    } else {
        cur.contains(n)
    }
}

/// Go's `path.Clean` for `/`-separated paths.
pub(crate) fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// Loads the ignore file for a build, the first that exists of: `<Dockerfile>.containerignore`
/// and `<Dockerfile>.dockerignore` next to the Dockerfile, `<context>/.containerignore`,
/// `<context>/.dockerignore`; else an empty matcher. The Dockerfile-specific file wins (BuildKit);
/// `.containerignore` is preferred to `.dockerignore` beside it (podman and buildah).
pub fn load_ignore(context_dir: &Path, dockerfile: &Path) -> Result<IgnoreMatcher, IgnoreError> {
    let mut candidates = Vec::with_capacity(4);
    if let Some(name) = dockerfile.file_name() {
        for ext in [".containerignore", ".dockerignore"] {
            let mut n = name.to_os_string();
            n.push(ext);
            candidates.push(dockerfile.with_file_name(n));
        }
    }
    candidates.push(context_dir.join(".containerignore"));
    candidates.push(context_dir.join(".dockerignore"));
    for path in candidates {
        // Inside the context, never through a symlink out of it (context::file).
        let read = super::file::read_context_file(
            context_dir,
            &path,
            "the ignore file",
            MAX_IGNORE_FILE_BYTES,
        )?;
        if let Some(bytes) = read {
            let text = String::from_utf8_lossy(&bytes);
            return IgnoreMatcher::parse(&text);
        }
    }
    Ok(IgnoreMatcher::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(text: &str) -> IgnoreMatcher {
        IgnoreMatcher::parse(text).unwrap()
    }

    fn ex(patterns: &str, path: &str) -> bool {
        pm(patterns).is_excluded(path)
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean(""), ".");
        assert_eq!(clean("."), ".");
        assert_eq!(clean("./a//b/"), "a/b");
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("a/.."), ".");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("//a/./b/../c/"), "/a/c");
    }

    #[test]
    fn parse_normalises() {
        let m = pm("\u{feff}# comment\n\n  foo/  \n/bar\n!  /baz/../qux\n ./a//b\n  # not a comment\r\n**/*.o\n");
        assert_eq!(
            m.patterns(),
            &["foo", "bar", "!qux", "a/b", "# not a comment", "**/*.o"]
        );
        assert!(m.is_excluded("# not a comment"));
        assert!(IgnoreMatcher::empty().patterns().is_empty());
        assert!(!IgnoreMatcher::empty().is_excluded("x"));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = IgnoreMatcher::parse("ok\n# c\n[abc\n").unwrap_err();
        match &e {
            IgnoreError::BadPattern { line, pattern, .. } => {
                assert_eq!(*line, 3);
                assert_eq!(pattern, "[abc");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = IgnoreMatcher::parse("a\n!\n").unwrap_err();
        assert!(
            matches!(e, IgnoreError::BadPattern { line: 2, .. }),
            "{e:?}"
        );
        assert!(IgnoreMatcher::parse("foo\\").is_err());
        assert!(IgnoreMatcher::parse("x/[]").is_err());
    }

    #[test]
    fn anchored_at_root() {
        assert!(ex("foo", "foo"));
        assert!(!ex("foo", "a/foo"));
        assert!(ex("/foo", "foo"));
        assert!(ex("a/b", "a/b"));
        assert!(!ex("a/b", "a"));
        assert!(!ex("foo", "foobar"));
        assert!(!ex("*.go", "src/main.go"));
        assert!(ex("*.go", "main.go"));
        assert!(ex("*/*.go", "src/main.go"));
        assert!(!ex("*/*.go", "src/x/main.go"));
    }

    #[test]
    fn directory_match_excludes_subtree() {
        assert!(ex("foo", "foo/bar/baz.txt"));
        assert!(ex("*/build", "a/build/out/x.o"));
        assert!(ex("a?c", "abc/d"));
        assert!(!ex("a?c", "a/c"));
        assert!(ex("docs/*", "docs/a/b/c"));
        assert!(!ex("docs/*", "docs"));
    }

    #[test]
    fn double_star() {
        assert!(ex("**", "anything/at/all"));
        assert!(ex("**/foo", "foo"));
        assert!(ex("**/foo", "a/b/foo"));
        assert!(ex("**/foo", "a/b/foo/c"));
        assert!(!ex("**/foo", "a/xfoo"));
        assert!(ex("**/*.go", "main.go"));
        assert!(ex("**/*.go", "a/b/main.go"));
        assert!(!ex("**/*.go", "a/b/main.golang"));
        assert!(ex("dir/**", "dir/x"));
        assert!(ex("dir/**", "dir/x/y"));
        assert!(!ex("dir/**", "dir"));
        assert!(!ex("dir/**", "dirx/y"));
        assert!(ex("a/**/b", "a/b"));
        assert!(ex("a/**/b", "a/x/y/b"));
        assert!(!ex("a/**/b", "a/xb"));
        assert!(ex("a/**/*.txt", "a/x/y/z.txt"));
        assert!(ex("a/**/*.txt", "a/z.txt"));
        assert!(ex("a/**", "a/.hidden"));
        // moby quirks kept for compatibility: `**x` is a plain suffix match,
        // and `abc**` a plain prefix match.
        assert!(ex("**.txt", "deep/dir/notes.txt"));
        assert!(ex("**.txt", "x.txt"));
        assert!(ex("abc**", "abcdef/x"));
        assert!(ex("a/**b", "a/b"));
        assert!(ex("a/**b", "a/c/b"));
        assert!(!ex("a/**b", "a/cb"));
        assert!(ex("*/**/x", "a/x"));
        assert!(ex("*/**/x", "a/b/c/x"));
        assert!(!ex("*/**/x", "x"));
        assert!(ex("**/a/**/b", "q/a/r/s/b"));
    }

    #[test]
    fn reinclusion_last_match_wins() {
        let m = pm("*.md\n!README.md\n");
        assert!(m.is_excluded("CHANGES.md"));
        assert!(!m.is_excluded("README.md"));
        let m = pm("!README.md\n*.md\n");
        assert!(m.is_excluded("README.md"));
        let m = pm("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(!m.is_excluded("README-public.md"));
        assert!(m.is_excluded("README-secret.md"));
        assert!(m.is_excluded("x.md"));
        // A re-inclusion that matches nothing changes nothing.
        let m = pm("a\n!b\n");
        assert!(m.is_excluded("a"));
        assert!(!m.is_excluded("b"));
        assert!(!m.is_excluded("c"));
    }

    #[test]
    fn reinclude_below_excluded_dir() {
        let m = pm("docs\n!docs/keep.md\n");
        assert!(m.is_excluded("docs"));
        assert!(m.is_excluded("docs/other.md"));
        assert!(!m.is_excluded("docs/keep.md"));
        assert!(m.may_reinclude_below("docs"));
        assert!(!m.may_reinclude_below("src"));

        let m = pm("vendor\n!vendor/keep\n");
        assert!(
            !m.is_excluded("vendor/keep/a/b"),
            "re-included dir covers its subtree"
        );
        assert!(m.is_excluded("vendor/other/a"));
        assert!(m.may_reinclude_below("vendor"));
        assert!(m.may_reinclude_below("vendor/keep"));
        assert!(!m.may_reinclude_below("vendor/other"));

        let m = pm("**\n!**/*.go\n!Makefile\n");
        assert!(!m.is_excluded("a/b/c.go"));
        assert!(m.is_excluded("a/b/c.rs"));
        assert!(!m.is_excluded("Makefile"));
        assert!(m.may_reinclude_below("a/b"));

        let m = pm("*\n!src/*/main.rs\n");
        assert!(m.may_reinclude_below("src"));
        assert!(m.may_reinclude_below("src/app"));
        assert!(!m.may_reinclude_below("src/app/deep"));
        assert!(!m.may_reinclude_below("target"));
        assert!(!m.is_excluded("src/app/main.rs"));
        assert!(m.is_excluded("src/app/lib.rs"));

        // No exclusion patterns: never descend.
        assert!(!pm("a\n").may_reinclude_below("a"));
        // Prefix patterns.
        let m = pm("a\n!a/b**\n");
        assert!(m.may_reinclude_below("a"));
        assert!(m.may_reinclude_below("a/bcd"));
        assert!(!m.may_reinclude_below("a/c"));
        assert!(!m.is_excluded("a/bcd/e"));
    }

    #[test]
    fn root_never_excluded() {
        assert!(!ex("**", ""));
        assert!(!ex("*", "."));
        assert!(!ex(".", ""));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(ex("[ab].txt", "a.txt"));
        assert!(!ex("[ab].txt", "c.txt"));
        assert!(ex("[^ab].txt", "c.txt"));
        assert!(ex("file\\*", "file*"));
        assert!(ex("\\*", "*"));
        assert!(ex("a\\*b*c\\?", "a*bxyzc?"));
        assert!(!ex("a\\*b*c\\?", "a*bxyzc"));
        assert!(!ex("file\\*", "filex"));
        assert!(ex("x[*]", "x*"));
        assert!(ex("a.b", "a.b"));
        assert!(!ex("a.b", "axb"));
        assert!(ex("a+(b)|{c}$", "a+(b)|{c}$"));
    }

    #[test]
    fn incremental_matches_direct() {
        let m = pm("a\n!a/b\na/b/c*\n!**/keep\n*/x\n");
        let paths = [
            "a",
            "a/b",
            "a/b/c1",
            "a/b/c1/keep",
            "a/b/c1/d",
            "a/b/d",
            "a/x",
            "q/x/y",
            "q/y",
        ];
        for p in paths {
            let parent = match p.rfind('/') {
                Some(i) => m.state_of(&p[..i]),
                None => Vec::new(),
            };
            let mut out = Vec::new();
            assert_eq!(
                m.eval_incremental(p, &parent, Some(&mut out)),
                m.is_excluded(p),
                "{p}"
            );
            assert_eq!(out, m.state_of(p));
            assert_eq!(m.eval_incremental(p, &parent, None), m.is_excluded(p));
        }
    }

    #[test]
    fn long_nfa_pattern() {
        let pat = format!("{}*{}", "a?".repeat(80), "b".repeat(10));
        let path = format!("{}zzz{}", "ax".repeat(80), "b".repeat(10));
        assert!(ex(&pat, &path));
        assert!(!ex(&pat, &format!("{path}c")));
    }

    #[test]
    fn load_picks_dockerfile_specific_file() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        let df = ctx.join("build.Dockerfile");
        assert!(load_ignore(ctx, &df).unwrap().patterns().is_empty());
        std::fs::write(ctx.join(".dockerignore"), "generic\n").unwrap();
        assert_eq!(load_ignore(ctx, &df).unwrap().patterns(), &["generic"]);
        std::fs::write(ctx.join("build.Dockerfile.dockerignore"), "specific\n").unwrap();
        assert_eq!(load_ignore(ctx, &df).unwrap().patterns(), &["specific"]);
        // Another Dockerfile still uses the generic file.
        assert_eq!(
            load_ignore(ctx, &ctx.join("Dockerfile"))
                .unwrap()
                .patterns(),
            &["generic"]
        );
        std::fs::write(ctx.join(".dockerignore"), "ok\n[bad\n").unwrap();
        assert!(load_ignore(ctx, &ctx.join("Dockerfile")).is_err());
    }

    #[test]
    fn containerignore_is_read_and_preferred_beside_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        let cf = ctx.join("Containerfile");
        std::fs::write(ctx.join(".containerignore"), "podman\n").unwrap();
        assert_eq!(load_ignore(ctx, &cf).unwrap().patterns(), &["podman"]);
        // Both in the context: .containerignore wins, as with podman and buildah.
        std::fs::write(ctx.join(".dockerignore"), "docker\n").unwrap();
        assert_eq!(load_ignore(ctx, &cf).unwrap().patterns(), &["podman"]);
        // A file named after the Containerfile wins over both.
        std::fs::write(ctx.join("Containerfile.containerignore"), "own\n").unwrap();
        assert_eq!(load_ignore(ctx, &cf).unwrap().patterns(), &["own"]);
    }
}
