//! The typed syntax tree of a Dockerfile. Words are *raw*: variables are not expanded yet
//! (the planner expands them once ARG/ENV state is known, with [`crate::frontend::expand`]).
//! Every node keeps a [`Span`] so later stages can point errors at the source.

/// A position in the Dockerfile: 1-based line and column (in characters), and a length in
/// characters for the caret (at least 1 when rendered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
    pub len: usize,
}

/// A raw word or text fragment with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text as written, after line continuations are joined; quotes and `$` still in place.
    pub raw: String,
    pub span: Span,
}

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# escape=` — `\\` (default) or `` ` ``.
    pub escape: char,
    /// `# syntax=` — recorded, not acted on.
    pub syntax: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Directives,
    pub instructions: Vec<Instruction>,
}

/// One instruction: its typed command plus source information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub command: Command,
    /// Span of the instruction keyword.
    pub span: Span,
    /// The instruction as written, continuations joined into one line with the escape+newline
    /// removed, flags included, heredoc bodies excluded (e.g. `COPY --chown=1:1 a /b`).
    /// Used for history entries (`created_by`) and `--explain`.
    pub text: String,
}

/// A heredoc body attached to an instruction (`<<EOF`, `<<-EOF`, `<<"EOF"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, without quotes (`EOF`).
    pub name: String,
    /// The body, every line ending in `\n`; with `<<-`, leading tabs already stripped.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"` / `<<'EOF'`): no variable expansion.
    pub expand: bool,
    pub span: Span,
}

/// Exec form (`["a", "b"]`, already JSON-decoded: no expansion applies) or shell form (raw text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(Word),
}

/// A `--name=value` (or bare `--name`) flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<Word>,
    pub span: Span,
}

/// `key=value` pairs of ENV / LABEL / ARG (legacy `ENV key value` gives one pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Raw key word (may contain quotes/variables for LABEL).
    pub key: Word,
    /// Raw value word (quotes still in place); `None` for `ARG name` without default.
    pub value: Option<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromCmd {
    /// The image word (`scratch`, `builder`, `oci-layout://dir:tag`, `${BASE}`, `debian:12`).
    pub image: Word,
    /// `AS name`, lower-cased as Docker does.
    pub alias: Option<Word>,
    /// `--platform=…`.
    pub platform: Option<Word>,
}

/// COPY and ADD share their shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCmd {
    /// Source words (raw). For heredoc sources the word is `<<EOF` and the body is in `heredocs`.
    pub sources: Vec<Word>,
    pub dest: Word,
    /// `--from=stage|index|image`.
    pub from: Option<Word>,
    pub chown: Option<Word>,
    pub chmod: Option<Word>,
    pub link: bool,
    /// `--exclude=pattern` (repeatable).
    pub excludes: Vec<Word>,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--checksum=sha256:HEX` (ADD of a URL; a commit for a git source).
    pub checksum: Option<Word>,
    /// `--keep-git-dir[=true|false]` (ADD of a git repository).
    pub keep_git_dir: bool,
    pub heredocs: Vec<Heredoc>,
    /// True when the sources came from exec (JSON) form — no word splitting was done.
    pub json_form: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCmd {
    pub command: CommandLine,
    /// All flags as written (`--mount`, `--network`, `--security`); validated by the RUN issue.
    pub flags: Vec<Flag>,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCmd {
    /// `HEALTHCHECK NONE` is `None`; otherwise the CMD part.
    pub test: Option<CommandLine>,
    pub interval: Option<Word>,
    pub timeout: Option<Word>,
    pub start_period: Option<Word>,
    pub start_interval: Option<Word>,
    pub retries: Option<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From(FromCmd),
    Arg(Vec<KeyValue>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Workdir(Word),
    User(Word),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    /// Raw words (`80/tcp`, `${PORT}`), split on whitespace.
    Expose(Vec<Word>),
    /// JSON array or whitespace-separated words.
    Volume(Vec<Word>),
    StopSignal(Word),
    /// SHELL takes exec form only.
    Shell(Vec<String>),
    Healthcheck(HealthcheckCmd),
    /// ONBUILD's trigger, recorded verbatim (e.g. `RUN make`). Not executed in this image: a
    /// stage or image built FROM it runs it first (`parse::parse_trigger`).
    Onbuild(String),
    Copy(CopyCmd),
    Add(CopyCmd),
    Run(RunCmd),
    /// `MAINTAINER name` (deprecated; becomes the `author` field).
    Maintainer(Word),
}

impl Command {
    /// The instruction keyword in upper case (`COPY`).
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Arg(_) => "ARG",
            Command::Env(_) => "ENV",
            Command::Label(_) => "LABEL",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Expose(_) => "EXPOSE",
            Command::Volume(_) => "VOLUME",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Shell(_) => "SHELL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Run(_) => "RUN",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }
}
