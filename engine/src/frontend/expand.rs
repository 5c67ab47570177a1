//! BuildKit-compatible word expansion (the behaviour of BuildKit's Dockerfile shell lexer).
//!
//! - Outside quotes, the escape character makes the next character literal (a lone escape at
//!   the end of the word is dropped).
//! - `'…'` is literal; `"…"` allows `$` expansion, and the escape character only escapes `"`,
//!   `$` and itself (any other escape sequence is kept as written).
//! - `$NAME`, `${NAME}`, `${NAME:-w}`, `${NAME-w}`, `${NAME:+w}`, `${NAME+w}`, `${NAME:?msg}`,
//!   `${NAME?msg}`, `${NAME#pat}`, `${NAME##pat}`, `${NAME%pat}`, `${NAME%%pat}`,
//!   `${NAME/pat/repl}`, `${NAME//pat/repl}` (patterns are globs: `*`, `?`, `[…]`).
//! - `$` followed by something that is not a name stays a literal `$`. Special parameters
//!   (`$$`, `$@`, `$1`, …) are looked up like any other name, so they are normally empty.
//! - Unset variables expand to the empty string.

use std::cell::Cell;
use std::fmt;

/// How deep `${…}` may nest inside `${…}` (or quotes inside those). Real Dockerfiles nest two
/// or three levels; a word nested 20,000 deep overflowed the stack (issue 18), and the lexer
/// recurses once per level.
pub const MAX_EXPANSION_DEPTH: usize = 64;

/// The largest result of one expansion, in bytes. A value beyond it could not reach a RUN
/// anyway (Linux refuses an environment string over 128 KiB, `MAX_ARG_STRLEN`), and without a
/// limit 40 lines of `ARG aN=${aN-1}${aN-1}` doubled to gigabytes (issue 18).
pub const MAX_EXPANSION_BYTES: usize = 1 << 20;

/// Steps one `${VAR#…}`, `${VAR%…}` or `${VAR/…}` may spend matching its pattern (one step:
/// one pattern state against one character). Replacing matches of a `*` pattern in a 1 MiB
/// value is quadratic; this ends it after well under a second.
pub const MAX_PATTERN_STEPS: u64 = 50_000_000;

/// An expansion failure. `offset` is a char offset into the word being expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub message: String,
    pub offset: usize,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExpandError {}

/// Expands one word: quotes removed, `$VAR` `${VAR}` `${VAR:-w}` `${VAR-w}` `${VAR:+w}`
/// `${VAR+w}` `${VAR:?msg}` `${VAR?msg}`; escape char handling; single quotes literal; double
/// quotes allow expansion; unset vars expand to "". Whitespace is NOT split.
pub fn expand_word(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut lx = Lexer::new(word, escape, lookup);
    let (s, _) = lx.process_until(None, false)?;
    Ok(s)
}

/// Expands and splits into words on unquoted whitespace (for COPY/ADD/EXPOSE/VOLUME shell-form
/// args and ONBUILD, like BuildKit's ProcessWords): words resulting only from an empty unquoted
/// expansion are dropped. As in BuildKit, a word that ends up empty (e.g. `""`) is dropped too.
pub fn expand_words(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ExpandError> {
    let mut lx = Lexer::new(text, escape, lookup);
    let (_, words) = lx.process_until(None, false)?;
    Ok(words)
}

/// Accumulates words the way BuildKit's lexer does.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// An unquoted, unescaped character (or one from an unquoted expansion): whitespace splits.
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// `${…}` levels open around the current position.
    depth: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &str, escape: char, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            lookup,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn err(&self, message: impl Into<String>, offset: usize) -> ExpandError {
        ExpandError {
            message: message.into(),
            offset,
        }
    }

    fn too_large(&self, offset: usize) -> ExpandError {
        self.err(
            format!(
                "the expansion is larger than {} MiB (the limit of one expanded word)",
                MAX_EXPANSION_BYTES >> 20
            ),
            offset,
        )
    }

    /// Processes until `stop` (consumed) or the end. With `stop` set, reaching the end is an
    /// error. `raw_escapes` keeps escape characters in the result (for glob patterns).
    fn process_until(
        &mut self,
        stop: Option<&[char]>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if result.len() > MAX_EXPANSION_BYTES {
                return Err(self.too_large(self.pos));
            }
            if let Some(stops) = stop {
                if stops.contains(&c) {
                    // Leave the stop char for the caller to inspect.
                    return Ok((result, words.finish()));
                }
            }
            match c {
                '\'' => {
                    let s = self.single_quote()?;
                    words.add_raw_string(&s);
                    result.push_str(&s);
                }
                '"' => {
                    let s = self.double_quote()?;
                    words.add_raw_string(&s);
                    result.push_str(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    words.add_string(&s);
                    result.push_str(&s);
                }
                _ => {
                    self.pos += 1;
                    if c == self.escape {
                        if raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        match self.next() {
                            // A lone escape at the end is dropped.
                            None => break,
                            Some(n) => {
                                words.add_raw_char(n);
                                result.push(n);
                            }
                        }
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if stop.is_some() {
            return Err(self.err("syntax error: missing '}'", self.pos));
        }
        if result.len() > MAX_EXPANSION_BYTES {
            return Err(self.too_large(self.pos));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, ExpandError> {
        let start = self.pos;
        self.pos += 1; // the opening quote
        let mut s = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(self.err(
                        "unexpected end of statement while looking for matching single-quote",
                        start,
                    ))
                }
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ExpandError> {
        let start = self.pos;
        self.pos += 1; // the opening quote
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.err(
                        "unexpected end of statement while looking for matching double-quote",
                        start,
                    ))
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('$') => {
                    s.push_str(&self.dollar()?);
                    if s.len() > MAX_EXPANSION_BYTES {
                        return Err(self.too_large(self.pos));
                    }
                }
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                s.push(n);
                            }
                            // Other escapes (and one right before the end) stay as written.
                            _ => s.push(c),
                        }
                    } else {
                        s.push(c);
                    }
                }
            }
        }
    }

    /// Reads a parameter name: a run of digits, one special character, or `[A-Za-z0-9_]+`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        let start = self.pos;
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok((self.lookup)(&name).unwrap_or_default());
        }
        self.pos += 1; // '{'
        if self.depth >= MAX_EXPANSION_DEPTH {
            return Err(self.err(
                format!("substitutions nested more than {MAX_EXPANSION_DEPTH} levels deep"),
                start,
            ));
        }
        self.depth += 1;
        let r = self.braced(start);
        self.depth -= 1;
        r
    }

    /// `${…}` after its `{`.
    fn braced(&mut self, start: usize) -> Result<String, ExpandError> {
        match self.peek() {
            None => return Err(self.err("syntax error: missing '}'", self.pos)),
            Some('{' | '}' | ':') => {
                return Err(self.err("syntax error: bad substitution", start));
            }
            _ => {}
        }
        let name = self.name();
        let op_pos = self.pos;
        let Some(op) = self.next() else {
            return Err(self.err("syntax error: missing '}'", self.pos));
        };
        let value = (self.lookup)(&name);
        match op {
            '}' => Ok(value.unwrap_or_default()),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let colon = op == ':';
                let op = if colon {
                    match self.next() {
                        Some(c @ ('+' | '-' | '?')) => c,
                        None => return Err(self.err("syntax error: missing '}'", self.pos)),
                        Some(c) => {
                            return Err(self.err(
                                format!("unsupported modifier (:{c}) in substitution"),
                                op_pos,
                            ))
                        }
                    }
                } else {
                    op
                };
                let pattern = op == '#' || op == '%';
                let (word, _) = self.process_until(Some(&['}']), pattern)?;
                self.pos += 1; // '}'
                let empty_is_unset = colon && value.as_deref() == Some("");
                let set = value.is_some() && !empty_is_unset;
                match op {
                    '-' => Ok(if set { value.unwrap_or_default() } else { word }),
                    '+' => Ok(if set { word } else { String::new() }),
                    '?' => {
                        if set {
                            return Ok(value.unwrap_or_default());
                        }
                        let msg = if !word.is_empty() {
                            word
                        } else if value.is_none() {
                            "is not allowed to be unset".to_string()
                        } else {
                            "is not allowed to be empty".to_string()
                        };
                        Err(self.err(format!("{name}: {msg}"), start))
                    }
                    _ => {
                        let value = value.unwrap_or_default();
                        let (greedy, pat) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let pat = Glob::new(pat, self.escape);
                        let trimmed = if op == '#' {
                            pat.trim_prefix(&value, greedy)
                        } else {
                            pat.trim_suffix(&value, greedy)
                        };
                        trimmed.ok_or_else(|| self.too_costly(start))
                    }
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let (pattern, _) = self.process_until(Some(&['/', '}']), true)?;
                let repl = if self.next() == Some('/') {
                    let (r, _) = self.process_until(Some(&['}']), false)?;
                    self.pos += 1;
                    r
                } else {
                    String::new()
                };
                let value = value.unwrap_or_default();
                Glob::new(&pattern, self.escape)
                    .replace(&value, &repl, all)
                    .map_err(|e| match e {
                        GlobLimit::Steps => self.too_costly(start),
                        GlobLimit::Size => self.too_large(start),
                    })
            }
            c => Err(self.err(
                format!("unsupported modifier ({c}) in substitution"),
                op_pos,
            )),
        }
    }
}

impl Lexer<'_> {
    fn too_costly(&self, offset: usize) -> ExpandError {
        self.err(
            format!(
                "matching this pattern takes more than {MAX_PATTERN_STEPS} steps (use a \
                 simpler pattern or a shorter value)"
            ),
            offset,
        )
    }
}

/// Why a pattern operation gave up.
enum GlobLimit {
    /// More than [`MAX_PATTERN_STEPS`].
    Steps,
    /// A result over [`MAX_EXPANSION_BYTES`].
    Size,
}

#[derive(Debug, Clone)]
enum Pat {
    Lit(char),
    Any,
    Star,
    /// Ranges (single chars are `(c, c)`), negated.
    Class(Vec<(char, char)>, bool),
}

/// A shell glob pattern (`*`, `?`, `[a-z]`, `[!x]`; the escape char makes the next char literal),
/// with the matching steps spent so far ([`MAX_PATTERN_STEPS`]).
struct Glob(Vec<Pat>, Cell<u64>);

impl Glob {
    fn new(pattern: &str, escape: char) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                _ if c == escape => match chars.get(i) {
                    Some(&n) => {
                        out.push(Pat::Lit(n));
                        i += 1;
                    }
                    None => out.push(Pat::Lit(c)),
                },
                '*' => out.push(Pat::Star),
                '?' => out.push(Pat::Any),
                '[' => match Self::class(&chars, i) {
                    Some((class, end)) => {
                        out.push(class);
                        i = end;
                    }
                    None => out.push(Pat::Lit('[')),
                },
                _ => out.push(Pat::Lit(c)),
            }
        }
        Glob(out, Cell::new(0))
    }

    /// The pattern that matches the reverse of what this one matches (each element matches
    /// one character or any run of them, so reversing the sequence is enough).
    fn reversed(&self) -> Glob {
        Glob(self.0.iter().rev().cloned().collect(), Cell::new(0))
    }

    /// Parses a bracket class starting after `[`; returns it and the index after `]`.
    fn class(chars: &[char], mut i: usize) -> Option<(Pat, usize)> {
        let mut negated = false;
        if matches!(chars.get(i), Some('!' | '^')) {
            negated = true;
            i += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = *chars.get(i)?;
            if c == ']' && !first {
                return Some((Pat::Class(ranges, negated), i + 1));
            }
            first = false;
            if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
                ranges.push((c, chars[i + 2]));
                i += 3;
            } else {
                ranges.push((c, c));
                i += 1;
            }
        }
    }

    /// `ends[j]` is true when the pattern matches all of `s[..j]`: one NFA pass, O(len · pattern).
    /// `None` once the steps spent exceed [`MAX_PATTERN_STEPS`]. `ends` stops where the pass
    /// died (no state left): it is only as long as the work done, so `replace`, which calls this
    /// at every position of a long value, stays linear in the steps spent (a vector of the whole
    /// remaining length per position was quadratic in memory traffic, found by fuzzing).
    fn match_ends(&self, s: &[char]) -> Option<Vec<bool>> {
        let p = &self.0;
        let closure = |set: &mut Vec<bool>| {
            for k in 0..p.len() {
                if set[k] && matches!(p[k], Pat::Star) {
                    set[k + 1] = true;
                }
            }
        };
        let mut set = vec![false; p.len() + 1];
        set[0] = true;
        closure(&mut set);
        let mut ends = vec![set[p.len()]];
        for &c in s {
            let spent = self.1.get() + p.len() as u64 + 1;
            if spent > MAX_PATTERN_STEPS {
                return None;
            }
            self.1.set(spent);
            let mut next = vec![false; p.len() + 1];
            for k in (0..p.len()).filter(|&k| set[k]) {
                let ok = match &p[k] {
                    Pat::Star => {
                        next[k] = true;
                        continue;
                    }
                    Pat::Any => true,
                    Pat::Lit(l) => *l == c,
                    Pat::Class(ranges, neg) => {
                        ranges.iter().any(|&(a, b)| a <= c && c <= b) != *neg
                    }
                };
                if ok {
                    next[k + 1] = true;
                }
            }
            closure(&mut next);
            if !next.contains(&true) {
                break;
            }
            ends.push(next[p.len()]);
            set = next;
        }
        Some(ends)
    }

    fn trim_prefix(&self, value: &str, greedy: bool) -> Option<String> {
        let v: Vec<char> = value.chars().collect();
        let ends = self.match_ends(&v)?;
        let n = if greedy {
            ends.iter().rposition(|&e| e)
        } else {
            ends.iter().position(|&e| e)
        };
        Some(match n {
            Some(n) => v[n..].iter().collect(),
            None => value.to_string(),
        })
    }

    /// The shortest (or, `greedy`, longest) matching suffix removed: one pass of the reversed
    /// pattern over the reversed value (trying each suffix in turn was quadratic).
    fn trim_suffix(&self, value: &str, greedy: bool) -> Option<String> {
        let v: Vec<char> = value.chars().collect();
        let rev: Vec<char> = v.iter().rev().copied().collect();
        // ends[j]: the suffix of length j matches.
        let ends = self.reversed().match_ends(&rev)?;
        let n = if greedy {
            ends.iter().rposition(|&e| e)
        } else {
            ends.iter().position(|&e| e)
        };
        Some(match n {
            Some(n) => v[..v.len() - n].iter().collect(),
            None => value.to_string(),
        })
    }

    /// Replaces the first (or every) leftmost-longest non-empty match.
    fn replace(&self, value: &str, repl: &str, all: bool) -> Result<String, GlobLimit> {
        let v: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        let mut done = false;
        while i < v.len() {
            if out.len() > MAX_EXPANSION_BYTES {
                return Err(GlobLimit::Size);
            }
            if !done {
                let ends = self.match_ends(&v[i..]).ok_or(GlobLimit::Steps)?;
                if let Some(len) = ends.iter().rposition(|&e| e).filter(|&l| l > 0) {
                    out.push_str(repl);
                    i += len;
                    done = !all;
                    continue;
                }
            }
            out.push(v[i]);
            i += 1;
        }
        if out.len() > MAX_EXPANSION_BYTES {
            return Err(GlobLimit::Size);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "B" => Some("bee".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("x  y z".into()),
            "PATHV" => Some("/usr/local/bin/app.tar.gz".into()),
            "Ü" => Some("umlaut".into()),
            _ => None,
        }
    }

    fn ex(w: &str) -> String {
        expand_word(w, '\\', &env).unwrap()
    }

    fn exw(w: &str) -> Vec<String> {
        expand_words(w, '\\', &env).unwrap()
    }

    fn err(w: &str) -> ExpandError {
        expand_word(w, '\\', &env).unwrap_err()
    }

    #[test]
    fn plain_and_simple_vars() {
        assert_eq!(ex(""), "");
        assert_eq!(ex("hello"), "hello");
        assert_eq!(ex("$A"), "a");
        assert_eq!(ex("${A}"), "a");
        assert_eq!(ex("x$A-y"), "xa-y");
        assert_eq!(ex("$Ax"), ""); // name is `Ax`, unset
        assert_eq!(ex("${A}x"), "ax");
        assert_eq!(ex("$UNSET"), "");
        assert_eq!(ex("${UNSET}"), "");
        assert_eq!(ex("$Ü"), "umlaut");
        assert_eq!(ex("$SP"), "x  y z"); // no splitting
    }

    #[test]
    fn dollar_edge_cases() {
        assert_eq!(ex("$"), "$");
        assert_eq!(ex("a$"), "a$");
        assert_eq!(ex("$ x"), "$ x");
        assert_eq!(ex("$/"), "$/");
        assert_eq!(ex("$$"), ""); // special parameter, unset
        assert_eq!(ex("$1"), "");
        assert_eq!(ex("$12x"), "x");
        assert_eq!(ex("${1}"), "");
    }

    #[test]
    fn default_and_alternative_forms() {
        assert_eq!(ex("${A:-w}"), "a");
        assert_eq!(ex("${UNSET:-w}"), "w");
        assert_eq!(ex("${EMPTY:-w}"), "w");
        assert_eq!(ex("${A-w}"), "a");
        assert_eq!(ex("${UNSET-w}"), "w");
        assert_eq!(ex("${EMPTY-w}"), "");
        assert_eq!(ex("${A:+w}"), "w");
        assert_eq!(ex("${UNSET:+w}"), "");
        assert_eq!(ex("${EMPTY:+w}"), "");
        assert_eq!(ex("${A+w}"), "w");
        assert_eq!(ex("${UNSET+w}"), "");
        assert_eq!(ex("${EMPTY+w}"), "w");
        // Empty words.
        assert_eq!(ex("${UNSET:-}"), "");
        assert_eq!(ex("${A:-}"), "a");
        assert_eq!(ex("${A:+}"), "");
        assert_eq!(ex("${A:?}"), "a");
        assert_eq!(ex("${EMPTY?}"), "");
    }

    #[test]
    fn nested_and_quoted_words_in_modifiers() {
        assert_eq!(ex("${UNSET:-${B}}"), "bee");
        assert_eq!(ex("${UNSET:-${ALSO:-deep}}x"), "deepx");
        assert_eq!(ex("${UNSET:-$A$B}"), "abee");
        assert_eq!(ex("${UNSET:-\"}\"}"), "}");
        assert_eq!(ex("${UNSET:-'a b'}"), "a b");
        assert_eq!(ex("${UNSET:-a\\}b}"), "a}b");
        assert_eq!(ex("${A:+[$A]}"), "[a]");
    }

    #[test]
    fn required_forms_error() {
        let e = err("x${UNSET:?}");
        assert_eq!(e.message, "UNSET: is not allowed to be unset");
        assert_eq!(e.offset, 1);
        assert_eq!(
            err("${UNSET?}").message,
            "UNSET: is not allowed to be unset"
        );
        assert_eq!(
            err("${EMPTY:?}").message,
            "EMPTY: is not allowed to be empty"
        );
        assert_eq!(
            err("${UNSET:?set it please}").message,
            "UNSET: set it please"
        );
        assert_eq!(err("${UNSET?need $A}").message, "UNSET: need a");
        assert_eq!(ex("${EMPTY?msg}"), "");
        assert_eq!(ex("${A?msg}"), "a");
        assert_eq!(err("${A?msg}x${UNSET?no}").to_string(), "UNSET: no");
    }

    #[test]
    fn syntax_errors() {
        for (w, msg, off) in [
            ("${", "syntax error: missing '}'", 2),
            ("${A", "syntax error: missing '}'", 3),
            ("${A:-x", "syntax error: missing '}'", 6),
            ("${A:", "syntax error: missing '}'", 4),
            ("${A:-${B}", "syntax error: missing '}'", 9),
            ("${}", "syntax error: bad substitution", 0),
            ("a${:}", "syntax error: bad substitution", 1),
            ("${{A}}", "syntax error: bad substitution", 0),
            ("${A:#x}", "unsupported modifier (:#) in substitution", 3),
            ("${A:x}", "unsupported modifier (:x) in substitution", 3),
            ("${A x}", "unsupported modifier ( ) in substitution", 3),
            ("${A!}", "unsupported modifier (!) in substitution", 3),
            (
                "'abc",
                "unexpected end of statement while looking for matching single-quote",
                0,
            ),
            (
                "x\"abc",
                "unexpected end of statement while looking for matching double-quote",
                1,
            ),
            (
                "${A:-'x}",
                "unexpected end of statement while looking for matching single-quote",
                5,
            ),
        ] {
            let e = err(w);
            assert_eq!((e.message.as_str(), e.offset), (msg, off), "word {w:?}");
        }
    }

    #[test]
    fn quotes() {
        assert_eq!(ex("'$A'"), "$A");
        assert_eq!(ex("\"$A\""), "a");
        assert_eq!(ex("\"${A}b\""), "ab");
        assert_eq!(ex("'a b'\"c d\"e"), "a bc de");
        assert_eq!(ex("\"it's\""), "it's");
        assert_eq!(ex("'say \"hi\"'"), "say \"hi\"");
        assert_eq!(ex("''"), "");
        assert_eq!(ex("'\\'"), "\\"); // no escapes in single quotes
        assert_eq!(ex("\"\\\"\""), "\""); // \" in double quotes
        assert_eq!(ex("\"\\$A\""), "$A");
        assert_eq!(ex("\"\\\\\""), "\\");
        assert_eq!(ex("\"\\n\""), "\\n"); // other escapes are kept
    }

    #[test]
    fn escapes() {
        assert_eq!(ex("\\$A"), "$A");
        assert_eq!(ex("\\'a"), "'a");
        assert_eq!(ex("\\\"a\\\""), "\"a\"");
        assert_eq!(ex("a\\ b"), "a b");
        assert_eq!(ex("\\\\"), "\\");
        assert_eq!(ex("\\n"), "n");
        assert_eq!(ex("abc\\"), "abc"); // lone escape at the end is dropped
        assert_eq!(ex("\\"), "");
    }

    #[test]
    fn windows_escape() {
        let w = |s: &str| expand_word(s, '`', &env).unwrap();
        assert_eq!(w("C:\\path\\$A"), "C:\\path\\a");
        assert_eq!(w("`$A"), "$A");
        assert_eq!(w("a` b"), "a b");
        assert_eq!(w("\"`\"x`\"\""), "\"x\"");
        assert_eq!(w("\"\\\""), "\\");
        assert_eq!(w("``"), "`");
        assert_eq!(w("x`"), "x");
        assert_eq!(
            expand_words("a` b c:\\d", '`', &env).unwrap(),
            vec!["a b".to_string(), "c:\\d".into()]
        );
    }

    #[test]
    fn pattern_modifiers() {
        assert_eq!(ex("${PATHV#*/}"), "usr/local/bin/app.tar.gz");
        assert_eq!(ex("${PATHV##*/}"), "app.tar.gz");
        assert_eq!(ex("${PATHV%.*}"), "/usr/local/bin/app.tar");
        assert_eq!(ex("${PATHV%%.*}"), "/usr/local/bin/app");
        assert_eq!(ex("${PATHV#nomatch}"), "/usr/local/bin/app.tar.gz");
        assert_eq!(ex("${B#b}"), "ee");
        assert_eq!(ex("${B%?}"), "be");
        assert_eq!(ex("${B#[a-c]}"), "ee");
        assert_eq!(ex("${B#[!a-c]}"), "bee");
        assert_eq!(ex("${B%\\e}"), "be");
        assert_eq!(ex("${B%%e*}"), "b");
        assert_eq!(ex("${UNSET#x}"), "");
        assert_eq!(ex("${B#$A}"), "bee");
        assert_eq!(ex("${B#[}"), "bee"); // unterminated class is a literal `[`
    }

    #[test]
    fn replace_modifiers() {
        assert_eq!(ex("${B/e/E}"), "bEe");
        assert_eq!(ex("${B//e/E}"), "bEE");
        assert_eq!(ex("${B/e}"), "be");
        assert_eq!(ex("${B//e}"), "b");
        assert_eq!(ex("${B/e*/X}"), "bX");
        assert_eq!(ex("${B/x/y}"), "bee");
        assert_eq!(ex("${PATHV//\\//_}"), "_usr_local_bin_app.tar.gz");
        assert_eq!(ex("${UNSET/a/b}"), "");
        assert_eq!(ex("${B/e/$A}"), "bae");
        assert_eq!(err("${B/e").message, "syntax error: missing '}'");
        assert_eq!(err("${B/e/x").message, "syntax error: missing '}'");
    }

    #[test]
    fn patterns_on_long_values_are_fast_enough() {
        let long = "ab".repeat(2000);
        let lk = |n: &str| (n == "L").then(|| long.clone());
        let r = expand_word("${L//a*b/x}", '\\', &lk).unwrap();
        assert_eq!(r, "x");
        let r = expand_word("${L%%b*}", '\\', &lk).unwrap();
        assert_eq!(r, "a");
        let r = expand_word("${L#*b}", '\\', &lk).unwrap();
        assert_eq!(r.len(), 3998);
        let r = expand_word("${L//b/}", '\\', &lk).unwrap();
        assert_eq!(r, "a".repeat(2000));
        // A literal pattern tried at each of 400k positions of a value it never matches: each
        // try dies after one character, and costs only that (the fuzzer's timeout input).
        let big = "ab c".repeat(100_000);
        let lk = |n: &str| (n == "L").then(|| big.clone());
        let r = expand_word("${L/TEMPY:-{:$}", '\\', &lk).unwrap();
        assert_eq!(r, big);
        let r = expand_word("${L/c/x}", '\\', &lk).unwrap();
        assert_eq!(&r[..8], "ab xab c");
    }

    #[test]
    fn words_split_on_unquoted_whitespace() {
        assert_eq!(exw("a b  c"), vec!["a", "b", "c"]);
        assert_eq!(exw("  a\t\nb  "), vec!["a", "b"]);
        assert_eq!(exw("$SP"), vec!["x", "y", "z"]);
        assert_eq!(exw("\"$SP\""), vec!["x  y z"]);
        assert_eq!(exw("'a b' c"), vec!["a b", "c"]);
        assert_eq!(exw("a\\ b"), vec!["a b"]);
        assert_eq!(exw("pre$SP"), vec!["prex", "y", "z"]);
        assert_eq!(exw("x${A}y"), vec!["xay"]);
        assert_eq!(exw("a\"b c\"d e"), vec!["ab cd", "e"]);
        assert_eq!(exw("${UNSET:-x y} z"), vec!["x", "y", "z"]);
        assert_eq!(exw("\"${UNSET:-x y}\""), vec!["x y"]);
        assert_eq!(exw("'$A b'"), vec!["$A b"]);
        assert_eq!(exw("\\$A"), vec!["$A"]);
        assert_eq!(exw(""), Vec::<String>::new());
        assert_eq!(exw("   "), Vec::<String>::new());
    }

    #[test]
    fn words_drop_empty_expansions() {
        assert_eq!(exw("$UNSET"), Vec::<String>::new());
        assert_eq!(exw("a $EMPTY b"), vec!["a", "b"]);
        assert_eq!(exw("a ${UNSET:-} b"), vec!["a", "b"]);
        assert_eq!(exw("a$EMPTY b"), vec!["a", "b"]);
        // BuildKit drops empty words even when quoted.
        assert_eq!(exw("\"\" a"), vec!["a"]);
        assert_eq!(exw("\"$EMPTY\""), Vec::<String>::new());
    }

    #[test]
    fn words_errors() {
        let e = expand_words("a ${B", '\\', &env).unwrap_err();
        assert_eq!(e.message, "syntax error: missing '}'");
        assert_eq!(e.offset, 5);
    }

    #[test]
    fn pseudo_random_inputs_never_panic() {
        const PIECES: &[char] = &[
            '$', '{', '}', ':', '-', '+', '?', '#', '%', '/', '*', '[', ']', '!', '\\', '`', '\'',
            '"', ' ', 'A', 'B', 'E', 'M', 'P', 'T', 'Y', 'x', '1', '@', 'é',
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let n = (next() % 16) as usize;
            let w: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            for esc in ['\\', '`'] {
                if let Err(e) = expand_word(&w, esc, &env) {
                    assert!(e.offset <= w.chars().count(), "{w:?}: {e:?}");
                }
                let _ = expand_words(&w, esc, &env);
            }
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "$",
            "${",
            "${:",
            "${A:",
            "${A:-",
            "${A/",
            "${A//",
            "${A#",
            "${A%%",
            "\\",
            "`",
            "'",
            "\"",
            "\"\\",
            "\"$",
            "\"${",
            "${A/[",
            "${A#[!",
            "${A#[a-",
            "${A#[]",
            "${A#[]]}",
            "${#}",
            "${##}",
            "${-}",
            "${?x}",
            "$\u{1F600}",
            "${\u{1F600}}",
            "${A:-\"\\",
            "${@:-x}",
        ];
        for w in odd {
            let _ = expand_word(w, '\\', &env);
            let _ = expand_word(w, '`', &env);
            let _ = expand_words(w, '\\', &env);
        }
        assert_eq!(ex("${#}"), "");
        assert_eq!(ex("${@:-x}"), "x");
        assert_eq!(ex("${A#[]]}"), "a");
    }

    /// Issue 18: `${a:-${a:-…}}` nested 20,000 deep overflowed the stack (SIGABRT).
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let nest = |n: usize| format!("{}x{}", "${N:-".repeat(n), "}".repeat(n));
        assert_eq!(ex(&nest(MAX_EXPANSION_DEPTH)), "x");
        let e = err(&nest(MAX_EXPANSION_DEPTH + 1));
        assert!(e.message.contains("nested more than 64"), "{e}");
        let e = err(&nest(20_000));
        assert!(e.message.contains("nested"), "{e}");
        // Quotes inside count as the same nesting.
        let q = format!("{}x{}", "${N:-\"".repeat(20_000), "\"}".repeat(20_000));
        assert!(expand_word(&q, '\\', &env).is_err());
    }

    /// Issue 18: `ARG aN=${aN-1}${aN-1}` doubled without bound. One expansion may produce at
    /// most MAX_EXPANSION_BYTES, whichever way it grows (references, replacement).
    #[test]
    fn an_expansion_larger_than_the_limit_is_an_error() {
        let half = "x".repeat(MAX_EXPANSION_BYTES / 2 + 1);
        let big = |name: &str| match name {
            "H" => Some(half.clone()),
            "R" => Some("y".repeat(1000)),
            _ => None,
        };
        assert_eq!(expand_word("$H", '\\', &big).unwrap().len(), half.len());
        for w in [
            "$H$H",
            "\"$H$H\"",
            "${H}${H:+$H}",
            "${H//x/$R}",
            "${N:-$H$H}",
        ] {
            let e = expand_word(w, '\\', &big).unwrap_err();
            assert!(e.message.contains("larger than 1 MiB"), "{w}: {e}");
        }
        let e = expand_words("$H $H", '\\', &big).unwrap_err();
        assert!(e.message.contains("larger than"), "{e}");
    }

    /// Pattern operations stay linear where they can (a suffix trim runs the reversed pattern
    /// once) and give up with an error where they cannot (replacing a `*` pattern).
    #[test]
    fn pattern_operations_on_large_values_end_quickly() {
        let long = "x".repeat(MAX_EXPANSION_BYTES / 2);
        let l = |name: &str| (name == "L").then(|| long.clone());
        let t = std::time::Instant::now();
        assert_eq!(expand_word("${L%*y}", '\\', &l).unwrap().len(), long.len());
        assert_eq!(expand_word("${L%%x*}", '\\', &l).unwrap(), "");
        assert_eq!(
            expand_word("${L%x*}", '\\', &l).unwrap().len(),
            long.len() - 1
        );
        assert_eq!(
            expand_word("${L#*x}", '\\', &l).unwrap().len(),
            long.len() - 1
        );
        let e = expand_word("${L//*y/z}", '\\', &l).unwrap_err();
        assert!(e.message.contains("steps"), "{e}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            t.elapsed()
        );
    }
}
