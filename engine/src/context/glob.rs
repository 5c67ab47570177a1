//! Shell-style pattern matching with Go `path/filepath.Match` semantics on
//! `/`-separated names.
//!
//! Syntax:
//! - `*` matches any run of characters other than `/` (possibly empty);
//! - `?` matches exactly one character other than `/`;
//! - `[...]` matches one character from a class: single characters and
//!   ranges `a-z`, negated with a leading `^` (or `!`, which Go does not
//!   accept but shells do); like Go, a class may match `/`;
//! - `\c` matches the character `c` literally.
//!
//! Malformed patterns (unterminated class, empty class, dangling `-`,
//! trailing `\`) are reported as [`GlobError`], like Go's `ErrBadPattern`.
//! Like Go, the pattern is validated in full even when the name does not match.

/// A malformed glob pattern (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// The pattern ends with an unescaped `\`.
    #[error("syntax error in pattern: trailing backslash")]
    TrailingBackslash,
    /// A `[` class is never closed.
    #[error("syntax error in pattern: unterminated character class")]
    UnterminatedClass,
    /// A class is empty or a range bound is missing (`[]`, `[a-]`, `[-a]`).
    #[error("syntax error in pattern: malformed character class")]
    MalformedClass,
}

/// True if `s` contains any of the special characters `*`, `?`, `[`, `\`
/// (Go's `hasMeta` on Unix).
pub fn has_meta(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

/// Reports whether `name` matches the shell pattern `pattern`, with Go's
/// `filepath.Match` semantics and `/` as the separator.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, GlobError> {
    let chunks = parse(pattern)?;
    Ok(match_chunks(&chunks, name))
}

/// A character class such as `[a-z0-9]` or `[^/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    pub(crate) fn matches(&self, c: char) -> bool {
        let hit = self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        hit != self.negated
    }

    /// Parses a class body; `s` starts just after the opening `[`.
    /// Returns the class and the remainder after the closing `]`.
    pub(crate) fn parse(s: &str) -> Result<(Class, &str), GlobError> {
        let mut rest = s;
        let mut negated = false;
        if let Some(r) = rest.strip_prefix('^').or_else(|| rest.strip_prefix('!')) {
            negated = true;
            rest = r;
        }
        let mut ranges = Vec::new();
        loop {
            if !ranges.is_empty() {
                if let Some(r) = rest.strip_prefix(']') {
                    return Ok((Class { negated, ranges }, r));
                }
            }
            let (lo, r) = class_char(rest)?;
            rest = r;
            let mut hi = lo;
            if let Some(r) = rest.strip_prefix('-') {
                let (h, r) = class_char(r)?;
                hi = h;
                rest = r;
            }
            ranges.push((lo, hi));
        }
    }
}

/// One (possibly escaped) character of a class, Go's `getEsc`.
fn class_char(s: &str) -> Result<(char, &str), GlobError> {
    let mut chars = s.chars();
    let c = match chars.next() {
        None => return Err(GlobError::UnterminatedClass),
        Some('-') | Some(']') => return Err(GlobError::MalformedClass),
        Some('\\') => match chars.next() {
            None => return Err(GlobError::TrailingBackslash),
            Some(c) => c,
        },
        Some(c) => c,
    };
    let rest = chars.as_str();
    if rest.is_empty() {
        // A class must still be closed after this character.
        return Err(GlobError::UnterminatedClass);
    }
    Ok((c, rest))
}

#[derive(Debug, Clone)]
enum Tok {
    Lit(char),
    Any,
    Class(Class),
}

/// A run of tokens, optionally preceded by a `*`.
#[derive(Debug)]
struct Chunk {
    star: bool,
    toks: Vec<Tok>,
}

fn parse(pattern: &str) -> Result<Vec<Chunk>, GlobError> {
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut cur = Chunk {
        star: false,
        toks: Vec::new(),
    };
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '*' => {
                if !cur.toks.is_empty() {
                    chunks.push(std::mem::replace(
                        &mut cur,
                        Chunk {
                            star: true,
                            toks: Vec::new(),
                        },
                    ));
                } else {
                    cur.star = true;
                }
            }
            '?' => cur.toks.push(Tok::Any),
            '[' => {
                let (class, r) = Class::parse(rest)?;
                rest = r;
                cur.toks.push(Tok::Class(class));
            }
            '\\' => {
                let e = rest.chars().next().ok_or(GlobError::TrailingBackslash)?;
                rest = &rest[e.len_utf8()..];
                cur.toks.push(Tok::Lit(e));
            }
            c => cur.toks.push(Tok::Lit(c)),
        }
    }
    if cur.star || !cur.toks.is_empty() || chunks.is_empty() {
        chunks.push(cur);
    }
    Ok(chunks)
}

/// Matches `toks` against a prefix of `s`; returns the unmatched rest.
fn match_chunk<'a>(toks: &[Tok], s: &'a str) -> Option<&'a str> {
    let mut rest = s;
    for t in toks {
        let c = rest.chars().next()?;
        let ok = match t {
            Tok::Lit(l) => *l == c,
            Tok::Any => c != '/',
            Tok::Class(class) => class.matches(c),
        };
        if !ok {
            return None;
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(rest)
}

/// Go's chunk-wise matching: each chunk after a star is placed at the
/// leftmost position that works (the last chunk must consume the name).
fn match_chunks(chunks: &[Chunk], name: &str) -> bool {
    let mut name = name;
    'chunks: for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        if chunk.star && chunk.toks.is_empty() {
            // Trailing `*` matches the rest unless it has a separator.
            return !name.contains('/');
        }
        if let Some(rest) = match_chunk(&chunk.toks, name) {
            if rest.is_empty() || !last {
                name = rest;
                continue;
            }
        }
        if chunk.star {
            for (idx, c) in name.char_indices() {
                if c == '/' {
                    break;
                }
                if let Some(rest) = match_chunk(&chunk.toks, &name[idx + c.len_utf8()..]) {
                    if last && !rest.is_empty() {
                        continue;
                    }
                    name = rest;
                    continue 'chunks;
                }
            }
        }
        return false;
    }
    name.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        glob_match(p, n).unwrap_or_else(|e| panic!("{p:?}: {e}"))
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(m("abc", "abc"));
        assert!(!m("abc", "abd"));
        assert!(!m("abc", "abcd"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("*", ""));
        assert!(m("*", "anything.txt"));
        assert!(m("*", ".hidden"));
        assert!(!m("*", "a/b"));
        assert!(m("a*", "a"));
        assert!(m("a*", "abc"));
        assert!(m("*c", "abc"));
        assert!(!m("*c", "ab/c"));
        assert!(m("a*b*c*d*e*/f", "axbxcxdxe/f"));
        assert!(m("a*b*c*d*e*/f", "axbxcxdxexxx/f"));
        assert!(!m("a*b*c*d*e*/f", "axbxcxdxe/xxx/f"));
        assert!(!m("a*b*c*d*e*/f", "axbxcxdxexxx/fff"));
        assert!(m("a*b?c*x", "abxbbxdbxebxczzx"));
        assert!(!m("a*b?c*x", "abxbbxdbxebxczzy"));
        assert!(m("*.txt", "notes.txt"));
        assert!(!m("*.txt", "notes.txt.bak"));
        assert!(m("*x", "xxx"));
        assert!(m("src/*/main.rs", "src/app/main.rs"));
        assert!(!m("src/*/main.rs", "src/a/b/main.rs"));
    }

    #[test]
    fn question_mark() {
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(!m("a?c", "ac"));
        assert!(m("??", "éx"));
        assert!(!m("?", ""));
    }

    #[test]
    fn classes() {
        assert!(m("[abc]", "b"));
        assert!(!m("[abc]", "d"));
        assert!(m("[a-z]", "q"));
        assert!(!m("[a-z]", "Q"));
        assert!(m("[^a-z]", "Q"));
        assert!(!m("[^a-z]", "q"));
        assert!(m("[!a-z]", "Q"));
        assert!(!m("[!a-z]", "q"));
        assert!(m("[a-cx-z]", "y"));
        assert!(m("[\\]]", "]"));
        assert!(m("[\\-]", "-"));
        assert!(m("[x\\-]", "-"));
        assert!(m("[*]", "*"));
        assert!(!m("[*]", "a"));
        // Like Go, a class can match the separator.
        assert!(m("a[^x]b", "a/b"));
        assert!(m("[é]", "é"));
    }

    #[test]
    fn escapes() {
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "x"));
        assert!(m("a\\?b", "a?b"));
        assert!(!m("a\\?b", "axb"));
        assert!(m("\\a", "a"));
        assert!(m("a\\\\b", "a\\b"));
    }

    #[test]
    fn bad_patterns() {
        for p in [
            "[", "[^", "[a", "[a-", "[a-]", "[-a]", "[]", "[]a]", "[^]", "a\\", "\\", "[\\",
            "[a\\", "*[",
        ] {
            assert!(glob_match(p, "a").is_err(), "{p:?} should be bad");
            // Validation does not depend on the name matching.
            assert!(glob_match(p, "zzz/zzz").is_err(), "{p:?} should be bad");
        }
        assert_eq!(glob_match("a\\", "x"), Err(GlobError::TrailingBackslash));
        assert_eq!(glob_match("x[a", "y"), Err(GlobError::UnterminatedClass));
        assert_eq!(glob_match("[]", ""), Err(GlobError::MalformedClass));
    }

    #[test]
    fn meta_detection() {
        assert!(!has_meta("plain/path.txt"));
        assert!(has_meta("*.txt"));
        assert!(has_meta("a?"));
        assert!(has_meta("[ab]"));
        assert!(has_meta("a\\b"));
        assert!(!has_meta("a]b{c}"));
    }
}
