//! The Dockerfile parser: text → typed, unexpanded instructions with spans.
//!
//! Follows the behaviour of BuildKit's Dockerfile parser: parser directives at the very top,
//! comments, line continuations (with comment and empty lines inside a continuation skipped),
//! heredocs for RUN/COPY/ADD, flags right after the keyword, exec (JSON) form with a fallback to
//! shell form when the JSON is invalid.
//!
//! As in BuildKit, `--flags` are recognised right after the keyword of every instruction, so
//! an instruction that takes no flags rejects them (`CMD --help` is an unknown flag).
//!
//! As in BuildKit, shell-form COPY/ADD/EXPOSE/VOLUME arguments are split on blanks only (space,
//! tab, `\v`, `\f`, `\r`): quotes and escapes do not group words there (`ADD \conf\\" /.znc` is
//! two words); they are interpreted later, word by word, by the expansion. A path with spaces
//! needs the JSON form. A bracketed argument that is valid JSON but not an array of strings
//! (`CMD ["a", ["b"]]`) is an error, as in BuildKit; text that is not valid JSON is shell form.
//!
//! Differences from BuildKit: flag values must be attached with `=` (`--from=x`, not
//! `--from x`); error messages are worded for strata.

use super::ast::*;
use super::diag::Diagnostic;

const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses `source` (the contents of `file`) into typed instructions.
pub fn parse(file: &str, source: &str) -> Result<Dockerfile, Diagnostic> {
    let lines: Vec<&str> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut p = Parser {
        file,
        source,
        escape: '\\',
        proven: false,
    };
    let mut idx = 0;
    let directives = p.directives(&lines, &mut idx)?;
    p.escape = directives.escape;

    let mut instructions = Vec::new();
    let mut seen_from = false;
    while idx < lines.len() {
        let t = lines[idx].trim_start_matches(is_blank);
        if t.is_empty() || t.starts_with('#') {
            idx += 1;
            continue;
        }
        let logical = read_logical(&lines, &mut idx, p.escape);
        if logical.chars.is_empty() {
            continue;
        }
        let (mut inst, pending) = p.instruction(&logical, Some(seen_from), true)?;
        if matches!(inst.command, Command::From(_)) {
            seen_from = true;
        }
        let mut heredocs = Vec::new();
        for h in pending {
            heredocs.push(p.heredoc_body(&lines, &mut idx, h)?);
        }
        match &mut inst.command {
            Command::Run(r) => r.heredocs = heredocs,
            Command::Copy(c) | Command::Add(c) => c.heredocs = heredocs,
            _ => {}
        }
        instructions.push(inst);
        p.proven = true;
    }
    if !seen_from {
        return Err(p.err(
            Span {
                line: 1,
                col: 1,
                len: 1,
            },
            "no FROM instruction",
        ));
    }
    Ok(Dockerfile {
        directives,
        instructions,
    })
}

/// Parses one ONBUILD trigger (`RUN make`, from a base image's config or an earlier stage's
/// ONBUILD) as the instruction it runs as at the start of a child stage. `file` and `source`
/// are the child's Dockerfile; `at` (its FROM) is where every span of the trigger points, as
/// BuildKit reports a trigger at the stage that runs it.
pub fn parse_trigger(
    file: &str,
    source: &str,
    trigger: &str,
    at: Span,
) -> Result<Instruction, Diagnostic> {
    let p = Parser {
        file,
        source,
        escape: '\\',
        // A trigger is an instruction recorded in an image config: quoting it is safe.
        proven: true,
    };
    let chars: Vec<char> = trigger.trim().chars().collect();
    let pos = vec![(at.line, at.col); chars.len()];
    let lg = Logical { chars, pos };
    let kw: String = lg.chars.iter().take_while(|c| !c.is_whitespace()).collect();
    let kw = kw.to_ascii_uppercase();
    if kw.is_empty() || matches!(kw.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
        return Err(p
            .err(at, format!("`{kw}` isn't allowed as an ONBUILD trigger"))
            .with_hint("a trigger is one instruction other than ONBUILD, FROM and MAINTAINER"));
    }
    let (mut inst, _) = p.instruction(&lg, None, false)?;
    // Spans of a one-line logical all collapse onto `at`; the caret marks the FROM keyword.
    inst.span = at;
    Ok(inst)
}

fn is_blank(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// One instruction after continuation lines are joined: its characters and where each came from.
struct Logical {
    chars: Vec<char>,
    /// (line, col), 1-based, of each char.
    pos: Vec<(usize, usize)>,
}

impl Logical {
    /// The span of `chars[start..end]`; the length is clamped to the start's physical line.
    fn span(&self, start: usize, end: usize) -> Span {
        let Some(&(line, col)) = self.pos.get(start).or(self.pos.last()) else {
            return Span {
                line: 1,
                col: 1,
                len: 1,
            };
        };
        if start >= self.pos.len() {
            // Just past the end of the instruction.
            return Span {
                line,
                col: col + 1,
                len: 1,
            };
        }
        let end = end.min(self.pos.len()).max(start);
        let len = self.pos[start..end]
            .iter()
            .take_while(|p| p.0 == line)
            .count();
        Span {
            line,
            col,
            len: len.max(1),
        }
    }

    fn text(&self, start: usize, end: usize) -> String {
        let end = end.min(self.chars.len());
        self.chars[start.min(end)..end].iter().collect()
    }

    fn word(&self, w: &RawWord) -> Word {
        Word {
            raw: w.raw.clone(),
            span: self.span(w.start, w.end),
        }
    }

    /// A sub-range as its own logical line (for ONBUILD triggers).
    fn slice(&self, start: usize) -> Logical {
        Logical {
            chars: self.chars[start..].to_vec(),
            pos: self.pos[start..].to_vec(),
        }
    }
}

/// Reads one instruction starting at `lines[*idx]`, joining continuation lines.
fn read_logical(lines: &[&str], idx: &mut usize, escape: char) -> Logical {
    let mut chars = Vec::new();
    let mut pos = Vec::new();
    let mut first = true;
    while *idx < lines.len() {
        let line = lines[*idx];
        let lineno = *idx + 1;
        *idx += 1;
        let lc: Vec<char> = line.chars().collect();
        let mut start = 0;
        if first {
            while start < lc.len() && is_blank(lc[start]) {
                start += 1;
            }
        } else {
            let t = line.trim_start_matches(is_blank);
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
        }
        first = false;
        let cont = continuation_at(&lc, escape);
        let end = cont.unwrap_or(lc.len()).max(start);
        for (i, &c) in lc.iter().enumerate().take(end).skip(start) {
            chars.push(c);
            pos.push((lineno, i + 1));
        }
        if cont.is_none() {
            break;
        }
    }
    while chars.last().is_some_and(|c| c.is_whitespace()) {
        chars.pop();
        pos.pop();
    }
    Logical { chars, pos }
}

/// If the line ends with the escape char (then optional spaces/tabs), its index.
fn continuation_at(lc: &[char], escape: char) -> Option<usize> {
    let mut end = lc.len();
    while end > 0 && (lc[end - 1] == ' ' || lc[end - 1] == '\t') {
        end -= 1;
    }
    (end > 0 && lc[end - 1] == escape).then_some(end - 1)
}

/// A word of an instruction's arguments, quotes and escapes kept; `start..end` index chars.
#[derive(Debug, Clone)]
struct RawWord {
    raw: String,
    start: usize,
    end: usize,
}

/// Splits `chars[from..]` on whitespace, respecting quotes and the escape character.
fn split_words(chars: &[char], from: usize, escape: char) -> Vec<RawWord> {
    let mut words = Vec::new();
    let mut i = from;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                None if c.is_whitespace() => break,
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ => {}
            }
            if c == escape && quote != Some('\'') && i + 1 < chars.len() {
                i += 1; // the escaped char belongs to the word, whatever it is
            }
            i += 1;
        }
        words.push(RawWord {
            raw: chars[start..i].iter().collect(),
            start,
            end: i,
        });
    }
    words
}

/// Splits `chars[from..]` on blanks only, as BuildKit's parser does for COPY, ADD, EXPOSE and
/// VOLUME (its `[\t\v\f\r ]+`): quotes and escapes stay inside the words, for the expansion.
fn split_blanks(chars: &[char], from: usize) -> Vec<RawWord> {
    let blank = |c: char| matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r');
    let mut words = Vec::new();
    let mut i = from;
    while i < chars.len() {
        if blank(chars[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !blank(chars[i]) {
            i += 1;
        }
        words.push(RawWord {
            raw: chars[start..i].iter().collect(),
            start,
            end: i,
        });
    }
    words
}

/// What a bracketed argument is: BuildKit decodes it with a JSON decoder; an array of strings
/// is exec form, other valid JSON is an error, anything else is shell form.
#[derive(Debug, PartialEq)]
enum JsonArg {
    Strings(Vec<(String, usize, usize)>),
    /// Valid JSON, but not an array of strings (`["a", ["b"]]`, `[1]`).
    NotStrings,
    NotJson,
}

fn json_arg(chars: &[char], from: usize) -> JsonArg {
    if let Some(items) = parse_json_array(chars, from) {
        return JsonArg::Strings(items);
    }
    let text: String = chars[from.min(chars.len())..].iter().collect();
    let text = text.trim_start();
    if text.starts_with('[') && serde_json::from_str::<serde_json::Value>(text).is_ok() {
        // Starts with `[` and decodes: an array, and since the strict parser refused it, one
        // with an element that is not a string.
        JsonArg::NotStrings
    } else {
        JsonArg::NotJson
    }
}

/// Parses `chars[from..]` as a JSON array of strings: each element with its char range.
fn parse_json_array(chars: &[char], from: usize) -> Option<Vec<(String, usize, usize)>> {
    let mut i = from;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && matches!(chars[*i], ' ' | '\t' | '\n' | '\r') {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if chars.get(i) != Some(&'[') {
        return None;
    }
    i += 1;
    let mut out = Vec::new();
    skip_ws(&mut i);
    if chars.get(i) == Some(&']') {
        i += 1;
    } else {
        loop {
            skip_ws(&mut i);
            if chars.get(i) != Some(&'"') {
                return None;
            }
            let start = i;
            i += 1;
            let mut s = String::new();
            loop {
                let c = *chars.get(i)?;
                i += 1;
                match c {
                    '"' => break,
                    '\\' => {
                        let e = *chars.get(i)?;
                        i += 1;
                        match e {
                            '"' | '\\' | '/' => s.push(e),
                            'b' => s.push('\u{8}'),
                            'f' => s.push('\u{c}'),
                            'n' => s.push('\n'),
                            'r' => s.push('\r'),
                            't' => s.push('\t'),
                            'u' => {
                                let hi = hex4(chars, &mut i)?;
                                let cp = if (0xD800..0xDC00).contains(&hi) {
                                    // A surrogate pair, or a lone surrogate (→ U+FFFD).
                                    let mut j = i;
                                    if chars.get(j) == Some(&'\\') && chars.get(j + 1) == Some(&'u')
                                    {
                                        j += 2;
                                        match hex4(chars, &mut j) {
                                            Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                                                i = j;
                                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                            }
                                            _ => 0xFFFD,
                                        }
                                    } else {
                                        0xFFFD
                                    }
                                } else {
                                    hi
                                };
                                s.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                            }
                            _ => return None,
                        }
                    }
                    c if (c as u32) < 0x20 => return None,
                    c => s.push(c),
                }
            }
            out.push((s, start, i));
            skip_ws(&mut i);
            match chars.get(i) {
                Some(',') => i += 1,
                Some(']') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    skip_ws(&mut i);
    (i == chars.len()).then_some(out)
}

fn hex4(chars: &[char], i: &mut usize) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = v * 16 + chars.get(*i)?.to_digit(16)?;
        *i += 1;
    }
    Some(v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within edit distance 2 (case-insensitive).
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&w, &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A heredoc marker seen on the instruction line; its body follows the instruction.
struct PendingHeredoc {
    name: String,
    chomp: bool,
    expand: bool,
    span: Span,
}

/// Recognises `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` (optionally after a fd number, `3<<EOF`).
fn heredoc_marker(raw: &str) -> Option<(String, bool, bool)> {
    let rest = raw.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let quoted = rest.contains(['\'', '"']);
    let name: String = rest.chars().filter(|c| *c != '\'' && *c != '"').collect();
    if name.is_empty() {
        return None;
    }
    Some((name, chomp, !quoted))
}

/// Whether `name` is a valid build-stage name (already lower-cased).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

struct Parser<'a> {
    file: &'a str,
    source: &'a str,
    escape: char,
    /// An instruction has parsed: the file is a Dockerfile, and its lines may be quoted in
    /// errors. Before that it may be any file (a symlink, a wrong `-f`): see [`Parser::foreign`].
    proven: bool,
}

/// Flags and arguments of one instruction.
struct Args {
    flags: Vec<Flag>,
    /// Index (into the logical line) where the arguments after the flags start.
    start: usize,
    /// The arguments split into words.
    words: Vec<RawWord>,
}

/// An instruction's parts once its keyword and flags are split off (what each instruction's
/// parser gets).
#[derive(Clone, Copy)]
struct Parsed<'a> {
    kw: &'static str,
    kw_span: Span,
    lg: &'a Logical,
    flags: &'a [Flag],
    /// Index (into the logical line) where the arguments after the flags start.
    start: usize,
    words: &'a [RawWord],
    allow_heredocs: bool,
}

/// No flag names: for `check_flags` of an instruction that takes none of a kind.
const NO_NAMES: &[&str] = &[];

impl Parser<'_> {
    /// Refuses every flag: the instruction takes none.
    fn no_flags(&self, kw: &str, flags: &[Flag]) -> Result<(), Diagnostic> {
        self.check_flags(kw, flags, NO_NAMES, NO_NAMES, NO_NAMES)
    }

    /// An error at `span` saying `msg` unless `ok`.
    fn need(&self, span: Span, ok: bool, msg: &str) -> Result<(), Diagnostic> {
        if ok {
            Ok(())
        } else {
            Err(self.err(span, msg.to_string()))
        }
    }

    fn err(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.file, self.source, span, message)
    }

    /// The error for a first line that is no instruction. The file may be anything (`-f` at
    /// the wrong file, a symlink to a secret: issue 18), and CI logs are public: quote the
    /// first word only if it looks like a misspelt keyword, never the line.
    fn foreign(&self, span: Span, word: &str, what: &str) -> Diagnostic {
        let plausible = word.len() <= 20
            && word.starts_with(|c: char| c.is_ascii_alphabetic())
            && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let mut d = if plausible {
            let mut d = self.err(span, format!("{what} `{word}`"));
            d.line_text = word.to_string();
            if let Some(c) = closest(&word.to_ascii_uppercase(), INSTRUCTIONS) {
                d = d.with_hint(format!("did you mean `{c}`?"));
            }
            d
        } else {
            let mut d = self.err(
                Span { len: 1, ..span },
                format!(
                    "line {} does not start with a Dockerfile instruction",
                    span.line
                ),
            );
            d.line_text = "…".to_string();
            d
        };
        if d.hint.is_none() {
            d = d.with_hint(
                "this does not look like a Dockerfile (its content is not shown); check the \
                 file -f names, or the build context's Dockerfile",
            );
        }
        d
    }

    fn directives(&self, lines: &[&str], idx: &mut usize) -> Result<Directives, Diagnostic> {
        let mut d = Directives::default();
        let (mut seen_escape, mut seen_syntax) = (false, false);
        while *idx < lines.len() {
            let Some((name, value, col)) = directive(lines[*idx]) else {
                break;
            };
            let span = Span {
                line: *idx + 1,
                col,
                len: value.chars().count(),
            };
            match name.as_str() {
                "escape" => {
                    if seen_escape {
                        return Err(
                            self.err(span, "only one `escape` parser directive can be used")
                        );
                    }
                    seen_escape = true;
                    d.escape = match value.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        _ => {
                            return Err(self
                                .err(span, format!("invalid escape token `{value}`"))
                                .with_hint("use `# escape=\\` or `# escape=``"))
                        }
                    };
                }
                "syntax" => {
                    if seen_syntax {
                        return Err(
                            self.err(span, "only one `syntax` parser directive can be used")
                        );
                    }
                    seen_syntax = true;
                    d.syntax = Some(value);
                }
                // `check` is a known BuildKit directive; it is accepted and ignored.
                "check" => {}
                // An unknown directive is a comment, and ends the directives.
                _ => break,
            }
            *idx += 1;
        }
        Ok(d)
    }

    fn heredoc_body(
        &self,
        lines: &[&str],
        idx: &mut usize,
        h: PendingHeredoc,
    ) -> Result<Heredoc, Diagnostic> {
        let mut content = String::new();
        loop {
            let Some(line) = lines.get(*idx) else {
                return Err(self
                    .err(h.span, format!("unterminated heredoc `{}`", h.name))
                    .with_hint(format!("end it with a line containing only `{}`", h.name)));
            };
            *idx += 1;
            let line = if h.chomp {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if line == h.name {
                break;
            }
            content.push_str(line);
            content.push('\n');
        }
        Ok(Heredoc {
            name: h.name,
            content,
            expand: h.expand,
            span: h.span,
        })
    }

    /// Splits off the leading `--flags`.
    fn args(&self, lg: &Logical, from: usize) -> Args {
        let mut words = split_words(&lg.chars, from, self.escape);
        let mut flags = Vec::new();
        let mut start = from;
        // A bare `--` ends the flags and is dropped, as in BuildKit: `COPY -- --x /d` copies
        // a file named `--x`.
        let mut n = 0;
        for w in &words {
            if !w.raw.starts_with("--") {
                break;
            }
            n += 1;
            if w.raw == "--" {
                break;
            }
        }
        for w in words.drain(..n) {
            start = w.end;
            if w.raw == "--" {
                continue;
            }
            let body = &w.raw[2..];
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => {
                    let vstart = w.start + 2 + name.chars().count() + 1;
                    let value = Word {
                        raw: value.to_string(),
                        span: lg.span(vstart, w.end),
                    };
                    (name, Some(value))
                }
                None => (body, None),
            };
            let name_end = w.start + 2 + name.chars().count();
            flags.push(Flag {
                name: name.to_string(),
                value,
                span: lg.span(w.start, name_end),
            });
        }
        while start < lg.chars.len() && lg.chars[start].is_whitespace() {
            start += 1;
        }
        Args {
            flags,
            start,
            words,
        }
    }

    /// Rejects flags not in `allowed`, duplicates of non-repeatable ones, and missing values.
    fn check_flags(
        &self,
        kw: &str,
        flags: &[Flag],
        allowed: &[&str],
        repeatable: &[&str],
        boolean: &[&str],
    ) -> Result<(), Diagnostic> {
        for (i, f) in flags.iter().enumerate() {
            if !allowed.contains(&f.name.as_str()) {
                let mut d = self.err(f.span, format!("unknown flag `--{}` for {kw}", f.name));
                if let Some(c) = closest(&f.name, allowed) {
                    d = d.with_hint(format!("did you mean `--{c}`?"));
                }
                return Err(d);
            }
            if !repeatable.contains(&f.name.as_str()) && flags[..i].iter().any(|g| g.name == f.name)
            {
                return Err(self.err(f.span, format!("duplicate flag `--{}` for {kw}", f.name)));
            }
            if boolean.contains(&f.name.as_str()) {
                if let Some(v) = &f.value {
                    if !v.raw.eq_ignore_ascii_case("true") && !v.raw.eq_ignore_ascii_case("false") {
                        return Err(self.err(
                            v.span,
                            format!(
                                "invalid value `{}` for flag `--{}`: expected true or false",
                                v.raw, f.name
                            ),
                        ));
                    }
                }
            } else if f.value.is_none() {
                return Err(self.err(f.span, format!("flag `--{}` requires a value", f.name)));
            }
        }
        Ok(())
    }

    fn flag_value(flags: &[Flag], name: &str) -> Option<Word> {
        flags
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.value.clone())
    }

    /// Exec form if the text is a JSON array of strings, an error if it is other valid JSON,
    /// shell form otherwise.
    fn command_line(
        &self,
        kw: &str,
        lg: &Logical,
        start: usize,
    ) -> Result<CommandLine, Diagnostic> {
        Ok(match self.json_arg(kw, lg, start)? {
            Some(items) => CommandLine::Exec(items.into_iter().map(|(s, _, _)| s).collect()),
            None => CommandLine::Shell(Word {
                raw: lg.text(start, lg.chars.len()),
                span: lg.span(start, lg.chars.len()),
            }),
        })
    }

    /// The JSON (exec) form of the arguments at `start`, `None` when they are not JSON.
    #[allow(clippy::type_complexity)]
    fn json_arg(
        &self,
        kw: &str,
        lg: &Logical,
        start: usize,
    ) -> Result<Option<Vec<(String, usize, usize)>>, Diagnostic> {
        match json_arg(&lg.chars, start) {
            JsonArg::Strings(items) => Ok(Some(items)),
            JsonArg::NotJson => Ok(None),
            JsonArg::NotStrings => Err(self
                .err(
                    lg.span(start, lg.chars.len()),
                    format!("{kw} in JSON array form must be an array of strings only"),
                )
                .with_hint(if kw == "SHELL" {
                    "quote every element, e.g. `SHELL [\"/bin/sh\", \"-c\"]`"
                } else {
                    "quote every element (`[\"echo\", \"hello\"]`), or drop the brackets for the shell form"
                })),
        }
    }

    /// Parses one logical line. `seen_from` is `None` for ONBUILD triggers (no order check).
    fn instruction(
        &self,
        lg: &Logical,
        seen_from: Option<bool>,
        allow_heredocs: bool,
    ) -> Result<(Instruction, Vec<PendingHeredoc>), Diagnostic> {
        let kw_end = lg
            .chars
            .iter()
            .position(|c| c.is_whitespace())
            .unwrap_or(lg.chars.len());
        let kw_raw = lg.text(0, kw_end);
        let kw_span = lg.span(0, kw_end);
        let kw_upper = kw_raw.to_ascii_uppercase();
        let Some(&kw) = INSTRUCTIONS.iter().find(|k| **k == kw_upper) else {
            if !self.proven {
                return Err(self.foreign(kw_span, &kw_raw, "unknown instruction"));
            }
            let mut d = self.err(kw_span, format!("unknown instruction `{kw_raw}`"));
            if let Some(c) = closest(&kw_upper, INSTRUCTIONS) {
                d = d.with_hint(format!("did you mean `{c}`?"));
            }
            return Err(d);
        };
        if seen_from == Some(false) && kw != "FROM" && kw != "ARG" {
            let mut d = self
                .err(kw_span, format!("{kw} instruction before the first FROM"))
                .with_hint("only ARG instructions may come before the first FROM");
            if !self.proven {
                // Only the keyword: the rest of a line of some other file is not ours to show.
                d.line_text = kw_raw.clone();
            }
            return Err(d);
        }
        let mut rest = kw_end;
        while rest < lg.chars.len() && lg.chars[rest].is_whitespace() {
            rest += 1;
        }
        let Args {
            flags,
            start,
            words,
        } = self.args(lg, rest);
        let args_text = lg.text(start, lg.chars.len());
        let args_span = lg.span(start, lg.chars.len());
        let mut pending = Vec::new();
        let whole = || Word {
            raw: args_text.clone(),
            span: args_span,
        };

        let p = Parsed {
            kw,
            kw_span,
            lg,
            flags: &flags,
            start,
            words: &words,
            allow_heredocs,
        };
        let command = match kw {
            "FROM" => self.parse_from(&p)?,
            "ARG" => {
                self.no_flags(kw, &flags)?;
                self.need(
                    kw_span,
                    !words.is_empty(),
                    "ARG requires at least one argument",
                )?;
                Command::Arg(self.key_values(lg, kw, &words, true)?)
            }
            "ENV" | "LABEL" => self.env_or_label(&p)?,
            "WORKDIR" | "USER" | "MAINTAINER" => {
                self.no_flags(kw, &flags)?;
                self.need(
                    kw_span,
                    !words.is_empty(),
                    &format!("{kw} requires exactly one argument"),
                )?;
                match kw {
                    "WORKDIR" => Command::Workdir(whole()),
                    "USER" => Command::User(whole()),
                    _ => Command::Maintainer(whole()),
                }
            }
            "STOPSIGNAL" => {
                self.no_flags(kw, &flags)?;
                if words.len() != 1 {
                    let span = words.get(1).map_or(kw_span, |w| lg.span(w.start, w.end));
                    return Err(self.err(span, "STOPSIGNAL requires exactly one argument"));
                }
                Command::StopSignal(lg.word(&words[0]))
            }
            "CMD" => {
                self.no_flags(kw, &flags)?;
                Command::Cmd(self.command_line(kw, lg, start)?)
            }
            "ENTRYPOINT" => {
                self.no_flags(kw, &flags)?;
                Command::Entrypoint(self.command_line(kw, lg, start)?)
            }
            "RUN" => {
                self.need(
                    kw_span,
                    !words.is_empty(),
                    "RUN requires at least one argument",
                )?;
                let command = self.command_line(kw, lg, start)?;
                if allow_heredocs && matches!(command, CommandLine::Shell(_)) {
                    pending = self.heredoc_markers(lg, &words);
                }
                Command::Run(RunCmd {
                    command,
                    flags,
                    heredocs: Vec::new(),
                })
            }
            "EXPOSE" => {
                self.no_flags(kw, &flags)?;
                self.need(
                    kw_span,
                    !words.is_empty(),
                    "EXPOSE requires at least one argument",
                )?;
                Command::Expose(
                    split_blanks(&lg.chars, start)
                        .iter()
                        .map(|w| lg.word(w))
                        .collect(),
                )
            }
            "VOLUME" => self.volume(&p)?,
            "SHELL" => {
                self.no_flags(kw, &flags)?;
                self.need(
                    kw_span,
                    !words.is_empty(),
                    "SHELL requires at least one argument",
                )?;
                match self.json_arg(kw, lg, start)? {
                    Some(items) if !items.is_empty() => {
                        Command::Shell(items.into_iter().map(|(s, _, _)| s).collect())
                    }
                    Some(_) => {
                        return Err(self.err(args_span, "SHELL requires at least one argument"))
                    }
                    None => {
                        return Err(self
                            .err(args_span, "SHELL requires the arguments to be in JSON form")
                            .with_hint("e.g. `SHELL [\"/bin/sh\", \"-c\"]`"))
                    }
                }
            }
            "HEALTHCHECK" => self.healthcheck(&p)?,
            "ONBUILD" => {
                self.no_flags(kw, &flags)?;
                self.need(
                    kw_span,
                    !words.is_empty(),
                    "ONBUILD requires at least one argument",
                )?;
                let trigger = &words[0];
                let t = trigger.raw.to_ascii_uppercase();
                if matches!(t.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(self.err(
                        lg.span(trigger.start, trigger.end),
                        format!("{t} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                // Validate the trigger as an instruction of its own.
                self.instruction(&lg.slice(start), None, false)?;
                Command::Onbuild(args_text.clone())
            }
            _ => {
                let (cmd, heredocs) = self.copy_or_add(&p)?;
                pending = heredocs;
                cmd
            }
        };
        let inst = Instruction {
            command,
            span: kw_span,
            text: lg.text(0, lg.chars.len()),
        };
        Ok((inst, pending))
    }

    /// `FROM image [AS name]`.
    fn parse_from(&self, p: &Parsed<'_>) -> Result<Command, Diagnostic> {
        let Parsed {
            kw,
            kw_span,
            lg,
            flags,
            words,
            ..
        } = *p;
        self.check_flags(kw, flags, &["platform"], NO_NAMES, NO_NAMES)?;
        if words.len() != 1 && words.len() != 3 {
            let span = words.get(1).map_or(kw_span, |w| lg.span(w.start, w.end));
            return Err(self
                .err(span, "FROM requires either one or three arguments")
                .with_hint("use `FROM image` or `FROM image AS name`"));
        }
        let alias = match words.get(1) {
            None => None,
            Some(as_kw) => {
                if !as_kw.raw.eq_ignore_ascii_case("as") {
                    return Err(self.err(
                        lg.span(as_kw.start, as_kw.end),
                        format!("expected `AS` after the image name, found `{}`", as_kw.raw),
                    ));
                }
                let w = &words[2];
                let name = w.raw.to_lowercase();
                if !valid_stage_name(&name) {
                    return Err(self
                        .err(lg.span(w.start, w.end), format!("invalid build stage name `{}`", w.raw))
                        .with_hint("a stage name starts with a letter and contains only letters, digits, `-`, `_` and `.`"));
                }
                Some(Word {
                    raw: name,
                    span: lg.span(w.start, w.end),
                })
            }
        };
        Ok(Command::From(FromCmd {
            image: lg.word(&words[0]),
            alias,
            platform: Self::flag_value(flags, "platform"),
        }))
    }

    /// `ENV` / `LABEL`: `k=v …`, or the legacy `k v…` (the rest of the line is the value).
    fn env_or_label(&self, p: &Parsed<'_>) -> Result<Command, Diagnostic> {
        let Parsed {
            kw,
            kw_span,
            lg,
            flags,
            words,
            ..
        } = *p;
        self.no_flags(kw, flags)?;
        self.need(
            kw_span,
            !words.is_empty(),
            &format!("{kw} requires at least one argument"),
        )?;
        let pairs = if words[0].raw.contains('=') {
            self.key_values(lg, kw, words, false)?
        } else {
            // Legacy `ENV key value…`: the rest of the line is the value.
            let key = &words[0];
            let mut vstart = key.end;
            while vstart < lg.chars.len() && lg.chars[vstart].is_whitespace() {
                vstart += 1;
            }
            if vstart >= lg.chars.len() {
                return Err(self
                    .err(
                        lg.span(key.start, key.end),
                        format!("{kw} must have two arguments"),
                    )
                    .with_hint(format!("use `{kw} {}=value`", key.raw)));
            }
            vec![KeyValue {
                key: lg.word(key),
                value: Some(Word {
                    raw: lg.text(vstart, lg.chars.len()),
                    span: lg.span(vstart, lg.chars.len()),
                }),
            }]
        };
        Ok(if kw == "ENV" {
            Command::Env(pairs)
        } else {
            Command::Label(pairs)
        })
    }

    /// `VOLUME`: a JSON array or words.
    fn volume(&self, p: &Parsed<'_>) -> Result<Command, Diagnostic> {
        let Parsed {
            kw,
            kw_span,
            lg,
            flags,
            start,
            words,
            ..
        } = *p;
        self.no_flags(kw, flags)?;
        self.need(
            kw_span,
            !words.is_empty(),
            "VOLUME requires at least one argument",
        )?;
        let vols: Vec<Word> = match self.json_arg(kw, lg, start)? {
            Some(items) => items
                .into_iter()
                .map(|(s, a, b)| Word {
                    raw: s,
                    span: lg.span(a, b),
                })
                .collect(),
            None => split_blanks(&lg.chars, start)
                .iter()
                .map(|w| lg.word(w))
                .collect(),
        };
        if let Some(v) = vols.iter().find(|v| v.raw.trim().is_empty()) {
            return Err(self.err(v.span, "VOLUME specified can not be an empty string"));
        }
        self.need(
            kw_span,
            !vols.is_empty(),
            "VOLUME requires at least one argument",
        )?;
        Ok(Command::Volume(vols))
    }

    /// `HEALTHCHECK [flags] CMD …` or `HEALTHCHECK NONE`.
    fn healthcheck(&self, p: &Parsed<'_>) -> Result<Command, Diagnostic> {
        let Parsed {
            kw,
            kw_span,
            lg,
            flags,
            words,
            ..
        } = *p;
        self.check_flags(
            kw,
            flags,
            &[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ],
            NO_NAMES,
            NO_NAMES,
        )?;
        self.need(
            kw_span,
            !words.is_empty(),
            "HEALTHCHECK requires at least one argument",
        )?;
        let typ = &words[0];
        let test = if typ.raw.eq_ignore_ascii_case("NONE") {
            if let Some(extra) = words.get(1) {
                return Err(self.err(
                    lg.span(extra.start, extra.end),
                    "HEALTHCHECK NONE takes no arguments",
                ));
            }
            None
        } else if typ.raw.eq_ignore_ascii_case("CMD") {
            if words.len() < 2 {
                return Err(self.err(
                    lg.span(typ.start, typ.end),
                    "HEALTHCHECK CMD requires a command",
                ));
            }
            Some(self.command_line(kw, lg, words[1].start)?)
        } else {
            return Err(self
                .err(
                    lg.span(typ.start, typ.end),
                    format!("unknown type `{}` in HEALTHCHECK", typ.raw),
                )
                .with_hint("use `HEALTHCHECK [flags] CMD command` or `HEALTHCHECK NONE`"));
        };
        let v = |n: &str| Self::flag_value(flags, n);
        Ok(Command::Healthcheck(HealthcheckCmd {
            test,
            interval: v("interval"),
            timeout: v("timeout"),
            start_period: v("start-period"),
            start_interval: v("start-interval"),
            retries: v("retries"),
        }))
    }

    /// `COPY` / `ADD`: flags, sources and destination (JSON or words), and the heredocs the
    /// sources name.
    fn copy_or_add(&self, p: &Parsed<'_>) -> Result<(Command, Vec<PendingHeredoc>), Diagnostic> {
        let Parsed {
            kw,
            kw_span,
            lg,
            flags,
            start,
            allow_heredocs,
            ..
        } = *p;
        let mut pending = Vec::new();
        // COPY / ADD
        let (allowed, what): (&[&str], _) = if kw == "COPY" {
            (
                &["from", "chown", "chmod", "link", "exclude", "parents"],
                "COPY",
            )
        } else {
            (
                &[
                    "chown",
                    "chmod",
                    "link",
                    "exclude",
                    "checksum",
                    "keep-git-dir",
                ],
                "ADD",
            )
        };
        self.check_flags(
            kw,
            flags,
            allowed,
            &["exclude"],
            &["link", "parents", "keep-git-dir"],
        )?;
        let words = split_blanks(&lg.chars, start);
        let (mut args, json_form) = match self.json_arg(kw, lg, start)? {
            Some(items) => (
                items
                    .into_iter()
                    .map(|(s, a, b)| Word {
                        raw: s,
                        span: lg.span(a, b),
                    })
                    .collect::<Vec<_>>(),
                true,
            ),
            None => (words.iter().map(|w| lg.word(w)).collect(), false),
        };
        if args.len() < 2 {
            return Err(self.err(
                kw_span,
                format!("{what} requires at least two arguments: a source and a destination"),
            ));
        }
        if allow_heredocs && !json_form {
            pending = self.heredoc_markers(lg, &words[..words.len() - 1]);
        }
        let dest = args.pop().expect("at least two arguments");
        let boolean = |name: &str| {
            flags.iter().find(|f| f.name == name).is_some_and(
                |f| !matches!(&f.value, Some(v) if !v.raw.eq_ignore_ascii_case("true")),
            )
        };
        let link = boolean("link");
        let cmd = CopyCmd {
            sources: args,
            dest,
            from: Self::flag_value(flags, "from"),
            chown: Self::flag_value(flags, "chown"),
            chmod: Self::flag_value(flags, "chmod"),
            link,
            parents: boolean("parents"),
            checksum: Self::flag_value(flags, "checksum"),
            keep_git_dir: boolean("keep-git-dir"),
            excludes: flags
                .iter()
                .filter(|f| f.name == "exclude")
                .filter_map(|f| f.value.clone())
                .collect(),
            heredocs: Vec::new(),
            json_form,
        };
        let cmd = if kw == "COPY" {
            Command::Copy(cmd)
        } else {
            Command::Add(cmd)
        };
        Ok((cmd, pending))
    }

    fn heredoc_markers(&self, lg: &Logical, words: &[RawWord]) -> Vec<PendingHeredoc> {
        words
            .iter()
            .filter_map(|w| {
                let (name, chomp, expand) = heredoc_marker(&w.raw)?;
                Some(PendingHeredoc {
                    name,
                    chomp,
                    expand,
                    span: lg.span(w.start, w.end),
                })
            })
            .collect()
    }

    /// `k=v` words (ARG also allows a bare `name`).
    fn key_values(
        &self,
        lg: &Logical,
        kw: &str,
        words: &[RawWord],
        bare_ok: bool,
    ) -> Result<Vec<KeyValue>, Diagnostic> {
        let mut out = Vec::new();
        for w in words {
            let wspan = lg.span(w.start, w.end);
            match w.raw.split_once('=') {
                Some((k, v)) => {
                    if k.is_empty() {
                        return Err(self.err(wspan, format!("{kw} name can't be empty")));
                    }
                    let klen = k.chars().count();
                    out.push(KeyValue {
                        key: Word {
                            raw: k.to_string(),
                            span: lg.span(w.start, w.start + klen),
                        },
                        value: Some(Word {
                            raw: v.to_string(),
                            span: lg.span(w.start + klen + 1, w.end),
                        }),
                    });
                }
                None if bare_ok => out.push(KeyValue {
                    key: lg.word(w),
                    value: None,
                }),
                None => {
                    return Err(self
                        .err(wspan, format!("can't find `=` in `{}`", w.raw))
                        .with_hint(format!("{kw} must be of the form name=value")))
                }
            }
        }
        Ok(out)
    }
}

/// Parses a directive line `# name=value`: (lower-cased name, value, 1-based col of value).
fn directive(line: &str) -> Option<(String, String, usize)> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() && is_blank(chars[i]) {
        i += 1;
    }
    if chars.get(i) != Some(&'#') {
        return None;
    }
    i += 1;
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    let name_start = i;
    if !chars.get(i)?.is_ascii_alphabetic() {
        return None;
    }
    while i < chars.len() && chars[i].is_ascii_alphanumeric() {
        i += 1;
    }
    let name: String = chars[name_start..i].iter().collect();
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    if chars.get(i) != Some(&'=') {
        return None;
    }
    i += 1;
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    let value: String = chars[i..].iter().collect::<String>().trim_end().to_string();
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Dockerfile {
        match parse("Dockerfile", src) {
            Ok(d) => d,
            Err(e) => panic!("unexpected error for {src:?}:\n{e}"),
        }
    }

    fn fail(src: &str) -> Diagnostic {
        match parse("Dockerfile", src) {
            Ok(d) => panic!("expected an error for {src:?}, got {d:?}"),
            Err(e) => e,
        }
    }

    /// Parses `FROM scratch` + `body` and returns the instructions after FROM.
    fn body(b: &str) -> Vec<Instruction> {
        let mut d = ok(&format!("FROM scratch\n{b}"));
        d.instructions.remove(0);
        d.instructions
    }

    fn one(b: &str) -> Command {
        let mut v = body(b);
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0).command
    }

    fn sp(line: usize, col: usize, len: usize) -> Span {
        Span { line, col, len }
    }

    fn w(raw: &str, line: usize, col: usize) -> Word {
        Word {
            raw: raw.into(),
            span: sp(line, col, raw.chars().count()),
        }
    }

    fn raws(ws: &[Word]) -> Vec<&str> {
        ws.iter().map(|w| w.raw.as_str()).collect()
    }

    fn assert_err(src: &str, msg: &str, span: Span) -> Diagnostic {
        let d = fail(src);
        assert_eq!(d.message, msg, "for {src:?}");
        assert_eq!(d.span, span, "for {src:?}");
        d
    }

    #[test]
    fn minimal_from() {
        let d = ok("FROM debian:12\n");
        assert_eq!(d.directives, Directives::default());
        assert_eq!(d.instructions.len(), 1);
        let i = &d.instructions[0];
        assert_eq!(i.span, sp(1, 1, 4));
        assert_eq!(i.text, "FROM debian:12");
        assert_eq!(
            i.command,
            Command::From(FromCmd {
                image: w("debian:12", 1, 6),
                alias: None,
                platform: None
            })
        );
    }

    #[test]
    fn from_with_alias_and_platform() {
        let d = ok("from --platform=$BUILDPLATFORM golang:1.22 As Build.Stage-1\n");
        let Command::From(f) = &d.instructions[0].command else {
            panic!()
        };
        assert_eq!(f.image, w("golang:1.22", 1, 32));
        assert_eq!(f.alias, Some(w("build.stage-1", 1, 47)));
        assert_eq!(f.platform, Some(w("$BUILDPLATFORM", 1, 17)));
    }

    #[test]
    fn from_errors() {
        assert_err(
            "FROM\n",
            "FROM requires either one or three arguments",
            sp(1, 1, 4),
        );
        assert_err(
            "FROM a b\n",
            "FROM requires either one or three arguments",
            sp(1, 8, 1),
        );
        assert_err(
            "FROM a AS\n",
            "FROM requires either one or three arguments",
            sp(1, 8, 2),
        );
        assert_err(
            "FROM a IS b\n",
            "expected `AS` after the image name, found `IS`",
            sp(1, 8, 2),
        );
        let d = assert_err(
            "FROM a AS 1st\n",
            "invalid build stage name `1st`",
            sp(1, 11, 3),
        );
        assert!(d.hint.is_some());
        assert_err(
            "FROM a AS x/y\n",
            "invalid build stage name `x/y`",
            sp(1, 11, 3),
        );
        let d = assert_err(
            "FROM --platfrom=x a\n",
            "unknown flag `--platfrom` for FROM",
            sp(1, 6, 10),
        );
        assert_eq!(d.hint.as_deref(), Some("did you mean `--platform`?"));
        assert_err(
            "FROM --platform a\n",
            "flag `--platform` requires a value",
            sp(1, 6, 10),
        );
        assert_err(
            "FROM --platform=a --platform=b a\n",
            "duplicate flag `--platform` for FROM",
            sp(1, 19, 10),
        );
    }

    /// Issue 18: `ln -s /etc/passwd ctx/Dockerfile` printed ``unknown instruction
    /// `root:x:0:0:root:/root:/bin/bash` ``. Until a line has parsed as an instruction, the
    /// file may be any file: an error quotes at most a keyword-like first word, never a line.
    #[test]
    fn errors_in_a_file_that_is_not_a_dockerfile_do_not_echo_it() {
        let secret = "s3cr3t-value";
        for src in [
            format!("root:x:0:0:root:/root:/bin/bash\n{secret}\n"),
            format!("password {secret}\nFROM a\n"),
            format!("user {secret}\n"),
            format!("{{\"token\": \"{secret}\"}}\n"),
            format!("-----BEGIN KEY-----{secret}\n"),
        ] {
            let d = fail(&src);
            let shown = d.to_string();
            assert!(!shown.contains(secret), "{src:?} shown as:\n{shown}");
            assert!(!shown.contains("root:x"), "{shown}");
        }
        let d = fail("root:x:0:0:root:/root:/bin/bash\n");
        assert_eq!(
            d.message,
            "line 1 does not start with a Dockerfile instruction"
        );
        assert!(d.hint.unwrap().contains("does not look like a Dockerfile"));
        let d = fail("password secret\n");
        assert_eq!(d.message, "unknown instruction `password`");
        // A Dockerfile shows its own lines in full, as before.
        let d = fail("FROM a\nCOPPY a b\n");
        assert_eq!(d.line_text, "COPPY a b");
    }

    #[test]
    fn no_from() {
        assert_err("", "no FROM instruction", sp(1, 1, 1));
        assert_err("\n\n# just a comment\n", "no FROM instruction", sp(1, 1, 1));
        assert_err("ARG X=1\n", "no FROM instruction", sp(1, 1, 1));
    }

    #[test]
    fn only_arg_before_from() {
        let d = ok("ARG BASE=debian\nFROM $BASE\n");
        assert_eq!(d.instructions.len(), 2);
        let e = assert_err(
            "# c\nRUN x\nFROM a\n",
            "RUN instruction before the first FROM",
            sp(2, 1, 3),
        );
        assert!(e.hint.is_some());
        assert_err(
            "  copy a b\nFROM a\n",
            "COPY instruction before the first FROM",
            sp(1, 3, 4),
        );
    }

    #[test]
    fn unknown_instruction() {
        let d = assert_err(
            "FROM a\nCOPPY a b\n",
            "unknown instruction `COPPY`",
            sp(2, 1, 5),
        );
        assert_eq!(d.hint.as_deref(), Some("did you mean `COPY`?"));
        assert_eq!(
            d.to_string(),
            "unknown instruction `COPPY`\n --> Dockerfile:2:1\n  |\n2 | COPPY a b\n  | ^^^^^\nhint: did you mean `COPY`?"
        );
        let d = assert_err(
            "FROM a\nfrobnicate\n",
            "unknown instruction `frobnicate`",
            sp(2, 1, 10),
        );
        assert_eq!(d.hint, None);
        let d = assert_err(
            "FROM a\n  Entrypont x\n",
            "unknown instruction `Entrypont`",
            sp(2, 3, 9),
        );
        assert_eq!(d.hint.as_deref(), Some("did you mean `ENTRYPOINT`?"));
        // An unknown instruction before FROM is reported as unknown.
        assert_err("BLAH\n", "unknown instruction `BLAH`", sp(1, 1, 4));
    }

    #[test]
    fn directives() {
        let d = ok("# syntax=docker/dockerfile:1.7\n# escape=`\nFROM a\n");
        assert_eq!(d.directives.escape, '`');
        assert_eq!(
            d.directives.syntax.as_deref(),
            Some("docker/dockerfile:1.7")
        );
        let d = ok("#ESCAPE = `\nFROM a\n");
        assert_eq!(d.directives.escape, '`');
        let d = ok("# Escape=\\\nFROM a\n");
        assert_eq!(d.directives.escape, '\\');
        // After a comment, an empty line or an instruction, directives are plain comments.
        assert_eq!(ok("# hello\n# escape=`\nFROM a\n").directives.escape, '\\');
        assert_eq!(ok("\n# escape=`\nFROM a\n").directives.escape, '\\');
        assert_eq!(ok("FROM a\n# escape=`\n").directives.escape, '\\');
        // An unknown directive is a comment and ends the directives.
        assert_eq!(
            ok("# foo=bar\n# escape=`\nFROM a\n").directives.escape,
            '\\'
        );
        assert_eq!(
            ok("# check=skip=all\n# escape=`\nFROM a\n")
                .directives
                .escape,
            '`'
        );
    }

    #[test]
    fn directive_errors() {
        let d = assert_err(
            "# escape=x\nFROM a\n",
            "invalid escape token `x`",
            sp(1, 10, 1),
        );
        assert!(d.hint.is_some());
        assert_err(
            "# escape=`\n# escape=\\\nFROM a\n",
            "only one `escape` parser directive can be used",
            sp(2, 10, 1),
        );
        assert_err(
            "# syntax=a\n# syntax=b\nFROM a\n",
            "only one `syntax` parser directive can be used",
            sp(2, 10, 1),
        );
    }

    #[test]
    fn comments_and_blank_lines() {
        let v = body("\n  # indented comment\n\t\nRUN a\r\n# c\nRUN b\n");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].text, "RUN a");
        assert_eq!(v[1].span, sp(7, 1, 3));
    }

    #[test]
    fn continuation_lines() {
        let v = body("RUN apt-get update && \\\n    apt-get install -y \\   \n# a comment\n\n    curl\nUSER me\n");
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].text,
            "RUN apt-get update &&     apt-get install -y     curl"
        );
        let Command::Run(r) = &v[0].command else {
            panic!()
        };
        let CommandLine::Shell(s) = &r.command else {
            panic!()
        };
        assert_eq!(s.raw, "apt-get update &&     apt-get install -y     curl");
        assert_eq!(s.span, sp(2, 5, 18)); // clamped to the first line
        assert_eq!(v[1].span, sp(7, 1, 4));
        // Word spans on continuation lines point at their own line.
        let Command::Expose(ports) = one("EXPOSE 80 \\\n  443/tcp\n") else {
            panic!()
        };
        assert_eq!(ports, vec![w("80", 2, 8), w("443/tcp", 3, 3)]);
        // Keyword alone on the first line.
        let Command::User(u) = one("USER \\\n  app\n") else {
            panic!()
        };
        assert_eq!(u, w("app", 3, 3));
    }

    #[test]
    fn continuation_at_eof_and_lone_escape() {
        let v = body("RUN a \\");
        assert_eq!(v[0].text, "RUN a");
        let v = body("RUN a \\\n");
        assert_eq!(v[0].text, "RUN a");
        // A line that is only an escape joins the next line.
        let v = body("\\\nRUN b\n");
        assert_eq!(v[0].text, "RUN b");
        assert_eq!(v[0].span, sp(3, 1, 3));
        // Only an escape at the end of the file: nothing.
        assert_eq!(body("\\").len(), 0);
    }

    #[test]
    fn windows_escape_continuation() {
        let d = ok("# escape=`\nFROM mcr.microsoft.com/windows\nRUN dir c:\\ `\n  && echo hi\nCOPY a` b c:\\dest\\\n");
        let Command::Run(r) = &d.instructions[1].command else {
            panic!()
        };
        assert_eq!(
            r.command,
            CommandLine::Shell(w("dir c:\\   && echo hi", 3, 5)).with_len(8)
        );
        let Command::Copy(c) = &d.instructions[2].command else {
            panic!()
        };
        // Blanks split COPY's words whatever the escape character (BuildKit).
        assert_eq!(raws(&c.sources), vec!["a`", "b"]);
        assert_eq!(c.dest.raw, "c:\\dest\\");
    }

    impl CommandLine {
        fn with_len(self, len: usize) -> CommandLine {
            match self {
                CommandLine::Shell(mut w) => {
                    w.span.len = len;
                    CommandLine::Shell(w)
                }
                e => e,
            }
        }
    }

    #[test]
    fn exec_and_shell_forms() {
        assert_eq!(
            one("CMD [\"a\", \"b c\"]"),
            Command::Cmd(CommandLine::Exec(vec!["a".into(), "b c".into()]))
        );
        assert_eq!(
            one("ENTRYPOINT []"),
            Command::Entrypoint(CommandLine::Exec(vec![]))
        );
        assert_eq!(
            one("CMD [\"\\u00e9\\n\\\"\\\\\", \"\\ud83d\\ude00\"]"),
            Command::Cmd(CommandLine::Exec(vec!["é\n\"\\".into(), "😀".into()]))
        );
        // Invalid JSON falls back to shell form.
        for bad in [
            "[a, b]",
            "[\"a\",]",
            "[\"a\"",
            "[\"a\" \"b\"]",
            "[\"a\"] x",
            "[\"\\x\"]",
            "[",
        ] {
            assert_eq!(
                one(&format!("CMD {bad}")),
                Command::Cmd(CommandLine::Shell(w(bad, 2, 5))),
                "{bad}"
            );
        }
        assert_eq!(
            one("CMD echo $HOME"),
            Command::Cmd(CommandLine::Shell(w("echo $HOME", 2, 5)))
        );
        // CMD with no arguments: an empty shell command.
        assert_eq!(
            one("CMD"),
            Command::Cmd(CommandLine::Shell(Word {
                raw: String::new(),
                span: sp(2, 4, 1)
            }))
        );
    }

    #[test]
    fn run_flags_and_forms() {
        // `--` ends the flags (BuildKit's extractBuilderFlags): `--x=1` is the command's.
        let Command::Run(r) = one("RUN --network=none -- --x=1 echo") else {
            panic!()
        };
        assert_eq!(r.flags.len(), 1);
        assert_eq!(r.command, CommandLine::Shell(w("--x=1 echo", 2, 23)));
        let Command::Run(r) = one("RUN -- echo") else {
            panic!()
        };
        assert!(r.flags.is_empty());
        assert_eq!(r.command, CommandLine::Shell(w("echo", 2, 8)));
        let Command::Run(r) =
            one("RUN --mount=type=cache,target=/root/.cache --network=none [\"make\", \"-j\"]")
        else {
            panic!()
        };
        assert_eq!(
            r.command,
            CommandLine::Exec(vec!["make".into(), "-j".into()])
        );
        assert_eq!(r.flags.len(), 2);
        assert_eq!(r.flags[0].name, "mount");
        assert_eq!(r.flags[0].span, sp(2, 5, 7));
        assert_eq!(
            r.flags[0].value,
            Some(w("type=cache,target=/root/.cache", 2, 13))
        );
        assert_eq!(r.flags[1].name, "network");
        // Unknown RUN flags are kept for the RUN stage to validate.
        let Command::Run(r) = one("RUN --whatever echo") else {
            panic!()
        };
        assert_eq!(
            r.flags,
            vec![Flag {
                name: "whatever".into(),
                value: None,
                span: sp(2, 5, 10)
            }]
        );
        assert_eq!(r.command, CommandLine::Shell(w("echo", 2, 16)));
        assert_err(
            "FROM a\nRUN\n",
            "RUN requires at least one argument",
            sp(2, 1, 3),
        );
        assert_err(
            "FROM a\nRUN --mount=x\n",
            "RUN requires at least one argument",
            sp(2, 1, 3),
        );
    }

    #[test]
    fn flags_on_instructions_without_flags() {
        assert_err(
            "FROM a\nCMD --help\n",
            "unknown flag `--help` for CMD",
            sp(2, 5, 6),
        );
        assert_err(
            "FROM a\nENV --x=1 A=b\n",
            "unknown flag `--x` for ENV",
            sp(2, 5, 3),
        );
        // A flag-like word after the first argument is an argument.
        assert_eq!(
            one("CMD ls --help"),
            Command::Cmd(CommandLine::Shell(w("ls --help", 2, 5)))
        );
    }

    #[test]
    fn copy_and_add() {
        let v = body("COPY --from=build --chown=1:1 --chmod=644 --link --exclude=*.md --exclude=x a \"b c\" /dst/\n");
        let Command::Copy(c) = &v[0].command else {
            panic!()
        };
        // Blanks split, quotes do not group (BuildKit): the expansion sees `"b` and `c"`.
        assert_eq!(
            c.sources,
            vec![w("a", 2, 77), w("\"b", 2, 79), w("c\"", 2, 82)]
        );
        assert_eq!(c.dest, w("/dst/", 2, 85));
        assert_eq!(c.from, Some(w("build", 2, 13)));
        assert_eq!(c.chown, Some(w("1:1", 2, 27)));
        assert_eq!(c.chmod, Some(w("644", 2, 39)));
        assert!(c.link);
        assert_eq!(raws(&c.excludes), vec!["*.md", "x"]);
        assert!(!c.json_form);
        assert!(c.heredocs.is_empty());
        assert_eq!(v[0].text, "COPY --from=build --chown=1:1 --chmod=644 --link --exclude=*.md --exclude=x a \"b c\" /dst/");

        let Command::Add(a) = one("ADD [\"x y\", \"$Z\", \"/d\"]") else {
            panic!()
        };
        assert!(a.json_form);
        assert_eq!(
            a.sources,
            vec![
                Word {
                    raw: "x y".into(),
                    span: sp(2, 6, 5)
                },
                Word {
                    raw: "$Z".into(),
                    span: sp(2, 13, 4)
                }
            ]
        );
        assert_eq!(
            a.dest,
            Word {
                raw: "/d".into(),
                span: sp(2, 19, 4)
            }
        );
        assert!(!a.link);

        let Command::Copy(c) = one("COPY --link=false a b") else {
            panic!()
        };
        assert!(!c.link);
        let Command::Copy(c) = one("COPY --link=TRUE a b") else {
            panic!()
        };
        assert!(c.link);
        let Command::Copy(c) = one("COPY a\\ b 'c d' e") else {
            panic!()
        };
        assert_eq!(raws(&c.sources), vec!["a\\", "b", "'c", "d'"]);
    }

    #[test]
    fn copy_args_split_on_blanks_only_as_buildkit() {
        // BuildKit's parser testfile `escapes`: an escaped quote does not open a quoted word.
        let Command::Add(a) = one("ADD \\conf\\\\\" /.znc") else {
            panic!()
        };
        assert_eq!(raws(&a.sources), vec!["\\conf\\\\\""]);
        assert_eq!(a.dest.raw, "/.znc");
        // Tabs, vertical tabs, form feeds and CRs are blanks too; other Unicode spaces are not.
        let Command::Copy(c) = one("COPY a\tb\u{b}c\u{c}d\u{a0}e /x/") else {
            panic!()
        };
        assert_eq!(raws(&c.sources), vec!["a", "b", "c", "d\u{a0}e"]);
        let Command::Expose(e) = one("EXPOSE \"80 81\"") else {
            panic!()
        };
        assert_eq!(raws(&e), vec!["\"80", "81\""]);
        let Command::Volume(v) = one("VOLUME 'a b'") else {
            panic!()
        };
        assert_eq!(raws(&v), vec!["'a", "b'"]);
        // Heredoc markers are still found among the blank-split words.
        let Command::Copy(c) = one("COPY <<EOF /x\nhi\nEOF") else {
            panic!()
        };
        assert_eq!(c.heredocs.len(), 1);
    }

    #[test]
    fn escapes_and_continuations_keep_buildkits_words() {
        let d = body(
            "LABEL owner Jo \\\\Doe <jo@example.org>\\\"\n\
             RUN make \\all && \\\n  make \\\"check -j2\n\
             COPY \\etc\\\\\" /cfg\n\
             RUN one \\\n\n two \\\n\n three\n",
        );
        let Command::Label(kv) = &d[0].command else {
            panic!()
        };
        assert_eq!(kv[0].key.raw, "owner");
        assert_eq!(
            kv[0].value.as_ref().unwrap().raw,
            "Jo \\\\Doe <jo@example.org>\\\""
        );
        let Command::Run(r) = &d[1].command else {
            panic!()
        };
        let CommandLine::Shell(w) = &r.command else {
            panic!()
        };
        assert_eq!(w.raw, "make \\all &&   make \\\"check -j2");
        let Command::Copy(c) = &d[2].command else {
            panic!()
        };
        assert_eq!(raws(&c.sources), vec!["\\etc\\\\\""]);
        assert_eq!(c.dest.raw, "/cfg");
        let Command::Run(r) = &d[3].command else {
            panic!()
        };
        let CommandLine::Shell(w) = &r.command else {
            panic!()
        };
        assert_eq!(w.raw, "one  two  three");
    }

    #[test]
    fn double_dash_ends_the_flags() {
        let Command::Copy(c) = one("COPY --chown=1 -- --weird /d/") else {
            panic!()
        };
        assert_eq!(c.chown.as_ref().unwrap().raw, "1");
        assert_eq!(raws(&c.sources), vec!["--weird"]);
        assert_eq!(c.dest.raw, "/d/");
        let Command::Run(r) = one("RUN -- --version") else {
            panic!()
        };
        assert!(r.flags.is_empty());
        assert_eq!(r.command, CommandLine::Shell(w("--version", 2, 8)));
    }

    #[test]
    fn json_arrays_must_hold_strings_only() {
        for (src, kw) in [
            ("CMD [ \"echo\", [ \"nested json\" ] ]", "CMD"),
            ("ENTRYPOINT [1]", "ENTRYPOINT"),
            ("RUN [\"a\", null]", "RUN"),
            ("SHELL [\"sh\", {}]", "SHELL"),
            ("COPY [\"a\", true]", "COPY"),
            ("VOLUME [\"/a\", 2]", "VOLUME"),
            ("HEALTHCHECK CMD [\"a\", 1.5]", "HEALTHCHECK"),
            ("ONBUILD CMD [\"a\", [\"b\"]]", "CMD"),
        ] {
            let d = fail(&format!("FROM a\n{src}\n"));
            assert_eq!(
                d.message,
                format!("{kw} in JSON array form must be an array of strings only"),
                "{src}"
            );
            assert_eq!(d.span.line, 2);
            assert!(d.hint.is_some());
        }
        // Not valid JSON: shell form, as before.
        for src in [
            "CMD [ \"echo\", [ nested ] ]",
            "CMD [\"a\",]",
            "CMD [\"a\"] x",
            "CMD [1",
        ] {
            let Command::Cmd(CommandLine::Shell(w)) = one(src) else {
                panic!("{src}")
            };
            assert_eq!(w.raw, src[4..]);
        }
        assert_eq!(
            one("CMD [ \"echo\", \"x\" ]"),
            Command::Cmd(CommandLine::Exec(vec!["echo".into(), "x".into()]))
        );
    }

    #[test]
    fn copy_errors() {
        assert_err(
            "FROM a\nCOPY a\n",
            "COPY requires at least two arguments: a source and a destination",
            sp(2, 1, 4),
        );
        assert_err(
            "FROM a\nadd\n",
            "ADD requires at least two arguments: a source and a destination",
            sp(2, 1, 3),
        );
        assert_err(
            "FROM a\nCOPY [\"a\"]\n",
            "COPY requires at least two arguments: a source and a destination",
            sp(2, 1, 4),
        );
        let d = assert_err(
            "FROM a\nCOPY --chwon=1 a b\n",
            "unknown flag `--chwon` for COPY",
            sp(2, 6, 7),
        );
        assert_eq!(d.hint.as_deref(), Some("did you mean `--chown`?"));
        let d = assert_err(
            "FROM a\nADD --from=x a b\n",
            "unknown flag `--from` for ADD",
            sp(2, 5, 6),
        );
        assert_eq!(d.hint, None);
        assert_err(
            "FROM a\nADD --parents a b\n",
            "unknown flag `--parents` for ADD",
            sp(2, 5, 9),
        );
        assert_err(
            "FROM a\nCOPY --link=yes a b\n",
            "invalid value `yes` for flag `--link`: expected true or false",
            sp(2, 13, 3),
        );
        assert_err(
            "FROM a\nCOPY --from a b\n",
            "flag `--from` requires a value",
            sp(2, 6, 6),
        );
        assert_err(
            "FROM a\nCOPY --from=a --from=b a b\n",
            "duplicate flag `--from` for COPY",
            sp(2, 15, 6),
        );
    }

    #[test]
    fn heredocs() {
        let v = body("RUN <<EOF\napt-get update\n  echo $HOME\nEOF\nUSER x\n");
        assert_eq!(v.len(), 2);
        let Command::Run(r) = &v[0].command else {
            panic!()
        };
        assert_eq!(r.command, CommandLine::Shell(w("<<EOF", 2, 5)));
        assert_eq!(
            r.heredocs,
            vec![Heredoc {
                name: "EOF".into(),
                content: "apt-get update\n  echo $HOME\n".into(),
                expand: true,
                span: sp(2, 5, 5),
            }]
        );
        assert_eq!(v[0].text, "RUN <<EOF");
        assert_eq!(v[1].span, sp(6, 1, 4));

        // Several heredocs, chomp and quoted delimiters.
        let Command::Copy(c) =
            one("COPY <<-A <<'B' 3<<\"C\" /dst/\n\tone\n\t\ttwo\n\tA\n$x\nB\nC\n")
        else {
            panic!()
        };
        assert_eq!(raws(&c.sources), vec!["<<-A", "<<'B'", "3<<\"C\""]);
        assert_eq!(c.heredocs.len(), 3);
        assert_eq!(
            (
                c.heredocs[0].name.as_str(),
                c.heredocs[0].content.as_str(),
                c.heredocs[0].expand
            ),
            ("A", "one\ntwo\n", true)
        );
        assert_eq!(
            (
                c.heredocs[1].name.as_str(),
                c.heredocs[1].content.as_str(),
                c.heredocs[1].expand
            ),
            ("B", "$x\n", false)
        );
        assert_eq!(
            (
                c.heredocs[2].name.as_str(),
                c.heredocs[2].content.as_str(),
                c.heredocs[2].expand
            ),
            ("C", "", false)
        );

        // Marker in the middle of a command; an empty body line; the terminator needs an exact match.
        let Command::Run(r) = one("RUN cat <<EOF > /x && echo done\n\n EOF\nEOF \nEOF\n") else {
            panic!()
        };
        assert_eq!(
            r.command,
            CommandLine::Shell(w("cat <<EOF > /x && echo done", 2, 5))
        );
        assert_eq!(r.heredocs[0].content, "\n EOF\nEOF \n");

        // Not heredocs: quoted, here-strings, `<<` alone, exec form, other instructions.
        for src in [
            "RUN echo \"<<EOF\"",
            "RUN cat <<<word",
            "RUN echo <<",
            "RUN echo <<''",
            "RUN [\"<<EOF\"]",
            "CMD cat <<EOF",
        ] {
            let v = body(src);
            assert_eq!(v.len(), 1, "{src}");
            if let Command::Run(r) = &v[0].command {
                assert!(r.heredocs.is_empty(), "{src}");
            }
        }
        // The destination of COPY is not a heredoc.
        let Command::Copy(c) = one("COPY a <<EOF") else {
            panic!()
        };
        assert!(c.heredocs.is_empty());
    }

    #[test]
    fn heredoc_errors() {
        let d = assert_err(
            "FROM a\nRUN <<EOF\necho hi\n",
            "unterminated heredoc `EOF`",
            sp(2, 5, 5),
        );
        assert!(d.hint.is_some());
        assert_err(
            "FROM a\nCOPY <<A <<B /x\nbody\nA\n",
            "unterminated heredoc `B`",
            sp(2, 10, 3),
        );
        assert_err(
            "FROM a\nRUN <<EOF",
            "unterminated heredoc `EOF`",
            sp(2, 5, 5),
        );
    }

    #[test]
    fn env_and_label() {
        let Command::Env(e) = one("ENV A=1 B=\"two words\" C='x y'\\ z D=") else {
            panic!()
        };
        assert_eq!(e.len(), 4);
        assert_eq!(
            e[0],
            KeyValue {
                key: w("A", 2, 5),
                value: Some(w("1", 2, 7))
            }
        );
        assert_eq!(
            e[1],
            KeyValue {
                key: w("B", 2, 9),
                value: Some(w("\"two words\"", 2, 11))
            }
        );
        assert_eq!(e[2].value.as_ref().unwrap().raw, "'x y'\\ z");
        assert_eq!(
            e[3].value,
            Some(Word {
                raw: String::new(),
                span: sp(2, 36, 1)
            })
        );
        // Legacy form: one pair, the value is the rest of the line.
        let Command::Env(e) = one("ENV PATH /usr/bin:$PATH  extra") else {
            panic!()
        };
        assert_eq!(
            e,
            vec![KeyValue {
                key: w("PATH", 2, 5),
                value: Some(w("/usr/bin:$PATH  extra", 2, 10))
            }]
        );
        let Command::Label(l) = one("LABEL \"org.x.title\"=\"My App\" version=1") else {
            panic!()
        };
        assert_eq!(
            raws(&l.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>()),
            vec!["\"org.x.title\"", "version"]
        );
        assert_eq!(l[0].value.as_ref().unwrap().raw, "\"My App\"");
        let Command::Label(l) = one("LABEL maintainer me") else {
            panic!()
        };
        assert_eq!(l[0].value.as_ref().unwrap().raw, "me");
    }

    #[test]
    fn env_errors() {
        assert_err(
            "FROM a\nENV\n",
            "ENV requires at least one argument",
            sp(2, 1, 3),
        );
        assert_err(
            "FROM a\nLABEL\n",
            "LABEL requires at least one argument",
            sp(2, 1, 5),
        );
        let d = assert_err(
            "FROM a\nENV A\n",
            "ENV must have two arguments",
            sp(2, 5, 1),
        );
        assert_eq!(d.hint.as_deref(), Some("use `ENV A=value`"));
        let d = assert_err("FROM a\nENV A=1 B\n", "can't find `=` in `B`", sp(2, 9, 1));
        assert_eq!(
            d.hint.as_deref(),
            Some("ENV must be of the form name=value")
        );
        assert_err("FROM a\nENV =x\n", "ENV name can't be empty", sp(2, 5, 2));
    }

    #[test]
    fn arg() {
        let d = ok("ARG A B=2 C=\"x y\"\nFROM a\nARG D\n");
        let Command::Arg(a) = &d.instructions[0].command else {
            panic!()
        };
        assert_eq!(
            a[0],
            KeyValue {
                key: w("A", 1, 5),
                value: None
            }
        );
        assert_eq!(
            a[1],
            KeyValue {
                key: w("B", 1, 7),
                value: Some(w("2", 1, 9))
            }
        );
        assert_eq!(a[2].value.as_ref().unwrap().raw, "\"x y\"");
        assert_err(
            "FROM a\nARG\n",
            "ARG requires at least one argument",
            sp(2, 1, 3),
        );
        assert_err("FROM a\nARG =1\n", "ARG name can't be empty", sp(2, 5, 2));
    }

    #[test]
    fn simple_instructions() {
        assert_eq!(one("WORKDIR /my app"), Command::Workdir(w("/my app", 2, 9)));
        assert_eq!(one("USER 1000:1000"), Command::User(w("1000:1000", 2, 6)));
        assert_eq!(
            one("MAINTAINER Jane <j@x>"),
            Command::Maintainer(w("Jane <j@x>", 2, 12))
        );
        assert_eq!(
            one("STOPSIGNAL SIGKILL"),
            Command::StopSignal(w("SIGKILL", 2, 12))
        );
        assert_eq!(
            one("EXPOSE 80/tcp ${P}"),
            Command::Expose(vec![w("80/tcp", 2, 8), w("${P}", 2, 15)])
        );
        assert_eq!(
            one("SHELL [\"pwsh\", \"-c\"]"),
            Command::Shell(vec!["pwsh".into(), "-c".into()])
        );
        assert_eq!(
            one("VOLUME /a \"/b c\""),
            Command::Volume(vec![w("/a", 2, 8), w("\"/b", 2, 11), w("c\"", 2, 15)])
        );
        assert_eq!(
            one("VOLUME [\"/data\"]"),
            Command::Volume(vec![Word {
                raw: "/data".into(),
                span: sp(2, 9, 7)
            }])
        );
    }

    #[test]
    fn simple_instruction_errors() {
        assert_err(
            "FROM a\nWORKDIR\n",
            "WORKDIR requires exactly one argument",
            sp(2, 1, 7),
        );
        assert_err(
            "FROM a\nUSER\n",
            "USER requires exactly one argument",
            sp(2, 1, 4),
        );
        assert_err(
            "FROM a\nSTOPSIGNAL\n",
            "STOPSIGNAL requires exactly one argument",
            sp(2, 1, 10),
        );
        assert_err(
            "FROM a\nSTOPSIGNAL 9 10\n",
            "STOPSIGNAL requires exactly one argument",
            sp(2, 14, 2),
        );
        assert_err(
            "FROM a\nEXPOSE\n",
            "EXPOSE requires at least one argument",
            sp(2, 1, 6),
        );
        assert_err(
            "FROM a\nVOLUME\n",
            "VOLUME requires at least one argument",
            sp(2, 1, 6),
        );
        assert_err(
            "FROM a\nVOLUME []\n",
            "VOLUME requires at least one argument",
            sp(2, 1, 6),
        );
        assert_err(
            "FROM a\nVOLUME [\"/a\", \"\"]\n",
            "VOLUME specified can not be an empty string",
            sp(2, 15, 2),
        );
        let d = assert_err(
            "FROM a\nSHELL /bin/sh -c\n",
            "SHELL requires the arguments to be in JSON form",
            sp(2, 7, 10),
        );
        assert!(d.hint.is_some());
        assert_err(
            "FROM a\nSHELL []\n",
            "SHELL requires at least one argument",
            sp(2, 7, 2),
        );
        assert_err(
            "FROM a\nSHELL\n",
            "SHELL requires at least one argument",
            sp(2, 1, 5),
        );
    }

    #[test]
    fn healthcheck() {
        assert_eq!(
            one("HEALTHCHECK NONE"),
            Command::Healthcheck(HealthcheckCmd {
                test: None,
                interval: None,
                timeout: None,
                start_period: None,
                start_interval: None,
                retries: None
            })
        );
        let Command::Healthcheck(h) =
            one("HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --start-interval=2s --retries=3 cmd curl -f http://x/")
        else {
            panic!()
        };
        assert_eq!(
            h.test,
            Some(CommandLine::Shell(w("curl -f http://x/", 2, 94)))
        );
        assert_eq!(h.interval, Some(w("5s", 2, 24)));
        assert_eq!(h.timeout.unwrap().raw, "3s");
        assert_eq!(h.start_period.unwrap().raw, "1s");
        assert_eq!(h.start_interval.unwrap().raw, "2s");
        assert_eq!(h.retries.unwrap().raw, "3");
        let Command::Healthcheck(h) = one("HEALTHCHECK CMD [\"/bin/check\"]") else {
            panic!()
        };
        assert_eq!(h.test, Some(CommandLine::Exec(vec!["/bin/check".into()])));
    }

    #[test]
    fn healthcheck_errors() {
        assert_err(
            "FROM a\nHEALTHCHECK\n",
            "HEALTHCHECK requires at least one argument",
            sp(2, 1, 11),
        );
        assert_err(
            "FROM a\nHEALTHCHECK NONE x\n",
            "HEALTHCHECK NONE takes no arguments",
            sp(2, 18, 1),
        );
        assert_err(
            "FROM a\nHEALTHCHECK CMD\n",
            "HEALTHCHECK CMD requires a command",
            sp(2, 13, 3),
        );
        let d = assert_err(
            "FROM a\nHEALTHCHECK curl x\n",
            "unknown type `curl` in HEALTHCHECK",
            sp(2, 13, 4),
        );
        assert!(d.hint.is_some());
        let d = assert_err(
            "FROM a\nHEALTHCHECK --intervl=1s CMD x\n",
            "unknown flag `--intervl` for HEALTHCHECK",
            sp(2, 13, 9),
        );
        assert_eq!(d.hint.as_deref(), Some("did you mean `--interval`?"));
        assert_err(
            "FROM a\nHEALTHCHECK --retries CMD x\n",
            "flag `--retries` requires a value",
            sp(2, 13, 9),
        );
    }

    #[test]
    fn onbuild() {
        assert_eq!(
            one("ONBUILD RUN make  install"),
            Command::Onbuild("RUN make  install".into())
        );
        assert_eq!(
            one("onbuild copy --chown=1 . /app"),
            Command::Onbuild("copy --chown=1 . /app".into())
        );
        assert_err(
            "FROM a\nONBUILD\n",
            "ONBUILD requires at least one argument",
            sp(2, 1, 7),
        );
        assert_err(
            "FROM a\nONBUILD from x\n",
            "FROM isn't allowed as an ONBUILD trigger",
            sp(2, 9, 4),
        );
        assert_err(
            "FROM a\nONBUILD ONBUILD RUN x\n",
            "ONBUILD isn't allowed as an ONBUILD trigger",
            sp(2, 9, 7),
        );
        assert_err(
            "FROM a\nONBUILD MAINTAINER x\n",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
            sp(2, 9, 10),
        );
        let d = assert_err(
            "FROM a\nONBUILD RUNN x\n",
            "unknown instruction `RUNN`",
            sp(2, 9, 4),
        );
        assert_eq!(d.hint.as_deref(), Some("did you mean `RUN`?"));
        assert_err(
            "FROM a\nONBUILD COPY x\n",
            "COPY requires at least two arguments: a source and a destination",
            sp(2, 9, 4),
        );
    }

    #[test]
    fn spans_count_characters() {
        let Command::Env(e) = one("ENV é=ü X=1") else {
            panic!()
        };
        assert_eq!(e[0].value, Some(w("ü", 2, 7)));
        assert_eq!(e[1].key, w("X", 2, 9));
    }

    #[test]
    fn multi_stage() {
        let d = ok(
            "FROM a AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /\nCMD [\"/out\"]\n",
        );
        let kws: Vec<&str> = d.instructions.iter().map(|i| i.command.keyword()).collect();
        assert_eq!(kws, vec!["FROM", "RUN", "FROM", "COPY", "CMD"]);
    }

    #[test]
    fn json_parser() {
        let c: Vec<char> = " [ \"a\" , \"b\" ] ".chars().collect();
        assert_eq!(
            parse_json_array(&c, 0),
            Some(vec![("a".into(), 3, 6), ("b".into(), 9, 12)])
        );
        for bad in [
            "",
            "[",
            "[\"",
            "[\"\\",
            "[\"\\u12\"]",
            "[\"a\"]]",
            "{}",
            "[\"a\"\n,]",
            "[\"\t\"]",
        ] {
            let c: Vec<char> = bad.chars().collect();
            assert_eq!(parse_json_array(&c, 0), None, "{bad:?}");
        }
        let c: Vec<char> = "[\"\\ud800x\"]".chars().collect();
        assert_eq!(
            parse_json_array(&c, 0),
            Some(vec![("\u{FFFD}x".into(), 1, 10)])
        );
    }

    #[test]
    fn word_splitting() {
        let c: Vec<char> = "a \"b c\" 'd\\ e' f\\ g \"h\\\" i\" j\\".chars().collect();
        let ws: Vec<String> = split_words(&c, 0, '\\')
            .into_iter()
            .map(|w| w.raw)
            .collect();
        assert_eq!(
            ws,
            vec!["a", "\"b c\"", "'d\\ e'", "f\\ g", "\"h\\\" i\"", "j\\"]
        );
        let c: Vec<char> = "\"unterminated x".chars().collect();
        assert_eq!(split_words(&c, 0, '\\').len(), 1);
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("COPY", "COPPY"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("chwon", &["from", "chown"]), Some("chown"));
        assert_eq!(closest("zzzzz", &["from", "chown"]), None);
    }

    #[test]
    fn pseudo_random_inputs_never_panic() {
        const PIECES: &[&str] = &[
            "FROM",
            "RUN",
            "COPY",
            "ADD",
            "ENV",
            "ARG",
            "ONBUILD",
            "HEALTHCHECK",
            "CMD",
            "SHELL",
            "VOLUME",
            "LABEL",
            " ",
            "\t",
            "\n",
            "\r\n",
            "\\",
            "`",
            "#",
            "# escape=`\n",
            "<<",
            "<<-",
            "EOF",
            "\"",
            "'",
            "[",
            "]",
            ",",
            "=",
            "--",
            "--from=",
            "--link",
            "$",
            "{",
            "}",
            "é",
            "\u{feff}",
            "a",
            "/x",
            "NONE",
            "AS",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let n = (next() % 24) as usize;
            let mut src = String::new();
            for _ in 0..n {
                src.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            if let Err(d) = parse("Dockerfile", &src) {
                let _ = d.to_string();
            }
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "\\",
            "`",
            "#",
            "# escape=",
            "# escape=`\n`",
            "FROM",
            "FROM a\n<<",
            "FROM a\nRUN <<",
            "FROM a\nRUN <<-",
            "FROM a\nRUN <<\"\"",
            "FROM a\nCOPY [",
            "FROM a\nCOPY [\"",
            "FROM a\nRUN [\"\\u",
            "FROM a\nRUN --",
            "FROM a\nRUN --=",
            "FROM a\nCOPY --=x a b",
            "FROM a\nENV a=\"",
            "FROM a\nENV \"",
            "FROM a\n\u{feff}RUN x",
            "\u{feff}FROM a",
            "FROM a\nONBUILD",
            "FROM a\nONBUILD \\",
            "FROM a\nHEALTHCHECK CMD \\",
            "FROM a\r\nRUN x\r\n",
            "FROM a\nRUN x \\\n\\\n\\",
            "FROM a\n\t\t",
            "FROM a\nLABEL é",
            "FROM a\nEXPOSE \"",
            "FROM a\nRUN <<A\nA",
            "FROM a\nRUN 9<<A\nA\n",
            "FROM a AS B",
            "FROM a\nCOPY <<- /x\n",
        ];
        for src in odd {
            let _ = parse("Dockerfile", src);
            if let Err(d) = parse("Dockerfile", src) {
                let _ = d.to_string();
            }
        }
        assert_eq!(ok("\u{feff}FROM a").instructions[0].span, sp(1, 2, 4));
        let Command::From(f) = &ok("FROM a AS B").instructions[0].command else {
            panic!()
        };
        assert_eq!(f.alias.as_ref().unwrap().raw, "b");
    }
}
