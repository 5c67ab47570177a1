//! Planning: the parsed Dockerfile → stages of steps, with ARG/ENV expanded and every
//! config-only instruction resolved.
//!
//! The plan is pure data: building it reads the Dockerfile, and for `oci-layout://` bases the
//! layout's small JSON blobs, nothing else. Cache keys for COPY/ADD need the content of context
//! files, so they are computed by [`crate::build`] when the plan runs; the encoding lives in
//! [`key`].

pub mod chmod;
pub mod config;
mod copy_spec;
pub mod key;
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::frontend::ast::{self, Command, CommandLine, CopyCmd, Span, Word};
use crate::frontend::expand::{expand_word, expand_words};
use crate::frontend::{parse, Diagnostic};
use crate::image::{self, BaseImage, History, Platform};
pub use config::ConfigState;

/// What to plan.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// How the Dockerfile is named in messages (`Dockerfile`, `app/Dockerfile`).
    pub dockerfile_name: String,
    pub source: String,
    /// The build context root (absolute).
    pub context_dir: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    /// Resolves image references (`FROM`, `COPY --from`); `None`: `oci-layout://` in the
    /// context only ([`image::LocalImages`]).
    pub images: Option<std::sync::Arc<dyn image::ImageResolver>>,
}

/// Where a stage starts from.
#[derive(Debug, Clone)]
pub enum Base {
    Scratch,
    Stage(usize),
    Image(Box<BaseImage>),
}

/// Where COPY takes its sources from.
#[derive(Debug, Clone)]
pub enum CopyFrom {
    Context,
    Stage(usize),
    Image(Box<BaseImage>),
}

/// One source of a COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A path or glob, variables expanded.
    Path(String),
    /// A heredoc body that becomes a file named `name`.
    Heredoc { name: String, content: String },
    /// `ADD http(s)://…`: a file downloaded (never extracted).
    Url(crate::fetch::UrlSource),
    /// `ADD <git url>#ref[:subdir]`: the contents of a commit's tree (or a directory of it).
    Git(crate::fetch::GitSource),
}

impl CopySource {
    /// A URL or git source (fetched, not read from the context).
    pub fn is_remote(&self) -> bool {
        matches!(self, CopySource::Url(_) | CopySource::Git(_))
    }
}

/// A fully expanded COPY or ADD.
#[derive(Debug, Clone)]
pub struct CopySpec {
    pub add: bool,
    pub from: CopyFrom,
    pub sources: Vec<CopySource>,
    /// Absolute, cleaned destination (`/app` or `/app/`); a trailing `/` is kept because it
    /// changes the meaning (copy *into* a directory).
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<chmod::Chmod>,
    pub link: bool,
    pub excludes: Vec<String>,
    /// `COPY --parents`: each source keeps its path (after a `/./` pivot, if any) below
    /// the destination.
    pub parents: bool,
}

impl CopySpec {
    /// An ADD of URLs or git repositories (all its sources are remote: the planner refuses a
    /// mix with local ones).
    pub fn is_remote(&self) -> bool {
        self.sources.iter().any(CopySource::is_remote)
    }
}

/// How a RUN step reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Loopback only (the default: builds are hermetic).
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// A `--mount=type=cache` of a RUN step: a directory kept in the store, never in a layer.
#[derive(Debug, Clone)]
pub struct CacheMount {
    /// `id=` or, by default, the target path.
    pub id: String,
    pub target: String,
    /// `from=STAGE|IMAGE` (with `source=`, a path in it): what a new cache starts with.
    pub from: Option<(CopyFrom, String)>,
    /// `ro`/`readonly`.
    pub readonly: bool,
    /// `mode=`, `uid=`, `gid=` of the cache directory when it is created.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A `RUN --mount` other than a cache: what the command sees at `target` while it runs, and
/// never in the layer.
#[derive(Debug, Clone)]
pub struct RunMount {
    /// Absolute, cleaned.
    pub target: String,
    pub kind: RunMountKind,
}

#[derive(Debug, Clone)]
pub enum RunMountKind {
    /// `type=bind`: `source` (relative to the root of `from`) of the context, a stage or an
    /// image; read-only unless `rw` (then writes are thrown away).
    Bind {
        from: CopyFrom,
        source: String,
        rw: bool,
    },
    /// `type=tmpfs`: an empty tmpfs; `size` in bytes.
    Tmpfs { size: Option<u64> },
    /// `type=ssh`: the agent socket `id` of `strata build --ssh` (`SSH_AUTH_SOCK` points to
    /// the first).
    Ssh { id: String, required: bool },
    /// `type=secret`: the secret `id` of `strata build --secret` as a read-only file at the
    /// target (unless `file` is false: `env=` without `target=`), and as the variable `env`.
    Secret {
        id: String,
        file: bool,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// A fully resolved RUN.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// What to execute: exec form as written, shell form through the stage's SHELL (heredocs
    /// included in the script, for the shell to interpret as `sh` would).
    pub argv: Vec<String>,
    /// Exactly the process environment: the image's Env, then the ARGs in scope that Env does
    /// not override. The config always has a PATH: a stage whose base has none starts with
    /// [`DEFAULT_PATH`] in it (as BuildKit).
    pub env: Vec<String>,
    pub user: String,
    /// Absolute working directory (created if missing).
    pub workdir: String,
    /// `--network=…`; `None`: the build's (`strata build --network`, default none).
    pub network: Option<Network>,
    pub cache_mounts: Vec<CacheMount>,
    pub mounts: Vec<RunMount>,
}

/// The PATH BuildKit puts in the config of an image that sets none (scratch included), so RUN
/// and the image's users see it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A WORKDIR other than `/`: like BuildKit, it makes a layer that creates the directory (and
/// missing parents) whether or not a later step uses it, owned by the USER in effect. When the
/// directory exists the layer is empty (BuildKit emits that empty layer too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkdirStep {
    /// Absolute and cleaned.
    pub path: String,
    /// The USER in effect (`name`, `uid`, `name:group`, …); `None`: root.
    pub user: Option<String>,
    /// As for a config step: the config and ARGs in scope after the step.
    pub state: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Run(Box<RunStep>),
    /// A config-only instruction; `state` is the canonical encoding of the config and ARGs in
    /// scope after it, which is all later steps can depend on.
    Config {
        state: Vec<u8>,
    },
    Copy(Box<CopySpec>),
    Workdir(Box<WorkdirStep>),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub keyword: &'static str,
    /// The instruction as written (continuations joined).
    pub text: String,
    pub span: Span,
    pub kind: StepKind,
    /// `None` for instructions that do not appear in image history (ARG).
    pub history: Option<History>,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    pub platform: Platform,
    pub steps: Vec<Step>,
    /// Stages this one needs (its base, `COPY --from`).
    pub deps: Vec<usize>,
    /// The image config after the last step.
    pub config: ConfigState,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub stages: Vec<Stage>,
    pub target: usize,
    /// The stages to build, dependencies first (unused stages are left out, as BuildKit does).
    pub order: Vec<usize>,
    pub warnings: Vec<String>,
}

/// Plans a build. Errors are diagnostics pointing into the Dockerfile.
pub fn plan(req: &PlanRequest) -> Result<Plan, Diagnostic> {
    // The CLI reads no more than this; a library caller may have read more.
    if req.source.len() as u64 > limits::MAX_DOCKERFILE_BYTES {
        let span = Span {
            line: 1,
            col: 1,
            len: 1,
        };
        let mut d = Diagnostic::new(
            &req.dockerfile_name,
            "",
            span,
            format!(
                "the Dockerfile is larger than {} bytes",
                limits::MAX_DOCKERFILE_BYTES
            ),
        );
        d.line_text = "…".into();
        return Err(d);
    }
    let df = parse(&req.dockerfile_name, &req.source)?;
    Planner::new(req, df.directives.escape).run(df)
}

struct Planner<'a> {
    req: &'a PlanRequest,
    escape: char,
    predefined: BTreeMap<String, String>,
    consumed_args: BTreeSet<String>,
    /// Bytes all expansions have produced so far ([`limits::MAX_TOTAL_EXPANSION_BYTES`]).
    expanded: std::cell::Cell<usize>,
}

/// Limits on what one Dockerfile may ask of the planner (issue 18: a Dockerfile is untrusted
/// input, and each of these was a way to exhaust memory or time). Each is far beyond any real
/// Dockerfile; exceeding one is an error that names the line.
pub mod limits {
    /// The largest Dockerfile read (4 MiB). Real ones are a few kilobytes, generated ones a few
    /// hundred; `-f /dev/zero` ended nowhere.
    pub const MAX_DOCKERFILE_BYTES: u64 = 4 << 20;
    /// Stages (FROM lines); a real Dockerfile has a few dozen at most. A chain in which each
    /// stage adds to what it inherits (an ENV) costs time quadratic in its length (each
    /// stage's image config lists the whole chain's history): this bounds it.
    pub const MAX_STAGES: usize = 10_000;
    /// Instructions, all stages together.
    pub const MAX_INSTRUCTIONS: usize = 50_000;
    /// Bytes all variable expansions of one Dockerfile may produce together: with the limit on
    /// one expansion (`frontend::expand::MAX_EXPANSION_BYTES`) alone, thousands of lines each
    /// expanding to 1 MiB would still add up to gigabytes.
    pub const MAX_TOTAL_EXPANSION_BYTES: usize = 64 << 20;
}

/// Names valid as `--build-arg` without being declared (Docker's proxy args).
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

impl<'a> Planner<'a> {
    fn new(req: &'a PlanRequest, escape: char) -> Self {
        let host = Platform::host();
        let mut predefined = BTreeMap::new();
        let p = &req.platform;
        predefined.insert("TARGETPLATFORM".into(), p.to_string());
        predefined.insert("TARGETOS".into(), p.os.clone());
        predefined.insert("TARGETARCH".into(), p.architecture.clone());
        predefined.insert(
            "TARGETVARIANT".into(),
            p.variant.clone().unwrap_or_default(),
        );
        predefined.insert("BUILDPLATFORM".into(), host.to_string());
        predefined.insert("BUILDOS".into(), host.os.clone());
        predefined.insert("BUILDARCH".into(), host.architecture.clone());
        predefined.insert(
            "BUILDVARIANT".into(),
            host.variant.clone().unwrap_or_default(),
        );
        Planner {
            req,
            escape,
            predefined,
            consumed_args: BTreeSet::new(),
            expanded: std::cell::Cell::new(0),
        }
    }

    fn diag(&self, span: Span, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.req.dockerfile_name, &self.req.source, span, msg)
    }

    fn expand(
        &self,
        w: &Word,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, Diagnostic> {
        let out = expand_word(&w.raw, self.escape, lookup).map_err(|e| self.expand_err(w, e))?;
        self.charge(w.span, out.len())?;
        Ok(out)
    }

    fn expand_err(&self, w: &Word, e: crate::frontend::expand::ExpandError) -> Diagnostic {
        let span = Span {
            line: w.span.line,
            col: w.span.col + e.offset,
            len: 1,
        };
        // A word too large to print whole is named by its start.
        let raw: String = w.raw.chars().take(80).collect();
        let more = if raw.len() < w.raw.len() { "…" } else { "" };
        self.diag(span, format!("cannot expand `{raw}{more}`: {}", e.message))
    }

    /// Counts `n` more expanded bytes against [`limits::MAX_TOTAL_EXPANSION_BYTES`].
    fn charge(&self, span: Span, n: usize) -> Result<(), Diagnostic> {
        let total = self.expanded.get().saturating_add(n);
        self.expanded.set(total);
        if total > limits::MAX_TOTAL_EXPANSION_BYTES {
            return Err(self
                .diag(
                    span,
                    format!(
                        "the Dockerfile's variable expansions produce more than {} MiB in total",
                        limits::MAX_TOTAL_EXPANSION_BYTES >> 20
                    ),
                )
                .with_hint("a value that doubles at each ARG or ENV grows without bound"));
        }
        Ok(())
    }

    fn expand_many(
        &self,
        w: &Word,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, Diagnostic> {
        let out = expand_words(&w.raw, self.escape, lookup).map_err(|e| self.expand_err(w, e))?;
        self.charge(w.span, out.iter().map(String::len).sum())?;
        Ok(out)
    }

    /// Expands a shell-form COPY/ADD path. Its words were split on blanks (as BuildKit does), so
    /// a quoted path with a space arrives in pieces and fails on its unmatched quote: say how
    /// to write it.
    fn expand_path(
        &self,
        kw: &str,
        w: &Word,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, Diagnostic> {
        self.expand(w, lookup).map_err(|d| {
            if w.raw.contains(['"', '\'']) && d.message.contains("matching") {
                d.with_hint(format!(
                    "{kw} splits its arguments at spaces, even inside quotes; for a path with spaces use the JSON form: {kw} [\"a b\", \"/dest/\"]"
                ))
            } else {
                d
            }
        })
    }

    fn run(mut self, df: ast::Dockerfile) -> Result<Plan, Diagnostic> {
        if let Some(i) = df.instructions.get(limits::MAX_INSTRUCTIONS) {
            return Err(self
                .diag(
                    i.span,
                    format!(
                        "the Dockerfile has more than {} instructions",
                        limits::MAX_INSTRUCTIONS
                    ),
                )
                .with_hint("split the build into several Dockerfiles"));
        }
        let mut from_lines = df
            .instructions
            .iter()
            .filter(|i| matches!(i.command, Command::From(_)));
        if let Some(i) = from_lines.nth(limits::MAX_STAGES) {
            return Err(self
                .diag(
                    i.span,
                    format!("the Dockerfile has more than {} stages", limits::MAX_STAGES),
                )
                .with_hint("split the build into several Dockerfiles"));
        }
        let mut instrs = df.instructions.into_iter().peekable();
        // Global ARGs (before the first FROM): usable in FROM lines, and as defaults for a
        // stage's `ARG NAME` without a value.
        let mut globals: BTreeMap<String, Option<String>> = BTreeMap::new();
        while let Some(i) = instrs.peek() {
            let Command::Arg(kvs) = &i.command else { break };
            let kvs = kvs.clone();
            instrs.next();
            for kv in kvs {
                let name = kv.key.raw.clone();
                let value = match self.req.build_args.get(&name) {
                    Some(v) => Some(v.clone()),
                    None => match &kv.value {
                        Some(w) => {
                            let look = |n: &str| lookup_global(&globals, &self.predefined, n);
                            Some(self.expand(w, &look)?)
                        }
                        None => self.predefined.get(&name).cloned(),
                    },
                };
                self.consumed_args.insert(name.clone());
                globals.insert(name, value);
            }
        }

        // Split the rest into stages.
        let mut raw_stages: Vec<(ast::Instruction, Vec<ast::Instruction>)> = Vec::new();
        for i in instrs {
            if matches!(i.command, Command::From(_)) {
                raw_stages.push((i, Vec::new()));
            } else if let Some(last) = raw_stages.last_mut() {
                last.1.push(i);
            } else {
                return Err(self.diag(
                    i.span,
                    format!("{} before the first FROM", i.command.keyword()),
                ));
            }
        }
        if raw_stages.is_empty() {
            return Err(self
                .diag(
                    Span {
                        line: 1,
                        col: 1,
                        len: 1,
                    },
                    "no FROM instruction in the Dockerfile",
                )
                .with_hint("a Dockerfile starts with `FROM scratch` or `FROM <image>`"));
        }

        // Stage names first, so COPY --from can refer to any stage and cycles can be found.
        let mut names: Vec<Option<String>> = Vec::new();
        for (from, _) in &raw_stages {
            let Command::From(f) = &from.command else {
                unreachable!()
            };
            let name = f.alias.as_ref().map(|a| a.raw.to_ascii_lowercase());
            if let Some(n) = &name {
                if names.iter().any(|x| x.as_deref() == Some(n.as_str())) {
                    let span = f.alias.as_ref().map(|a| a.span).unwrap_or(from.span);
                    return Err(self.diag(span, format!("duplicate stage name `{n}`")));
                }
            }
            names.push(name);
        }

        let mut stages: Vec<Stage> = Vec::new();
        for (index, (from, body)) in raw_stages.into_iter().enumerate() {
            let stage = self.plan_stage(index, &from, body, &globals, &names, &stages)?;
            stages.push(stage);
        }

        let target = match &self.req.target {
            None => stages.len() - 1,
            Some(t) => {
                let tl = t.to_ascii_lowercase();
                names
                    .iter()
                    .position(|n| n.as_deref() == Some(tl.as_str()))
                    .ok_or_else(|| {
                        let known: Vec<String> =
                            names.iter().flatten().map(|n| format!("`{n}`")).collect();
                        self.diag(
                            Span {
                                line: 1,
                                col: 1,
                                len: 1,
                            },
                            format!("target stage `{t}` not found"),
                        )
                        .with_hint(if known.is_empty() {
                            "the Dockerfile names no stages (`FROM … AS name`)".to_string()
                        } else {
                            format!("stages: {}", known.join(", "))
                        })
                    })?
            }
        };
        let order = self.build_order(&stages, target)?;

        let mut warnings = Vec::new();
        let unused: Vec<&String> = self
            .req
            .build_args
            .keys()
            .filter(|k| !self.consumed_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            warnings.push(format!(
                "build arguments not consumed by any ARG: {}",
                unused
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Plan {
            stages,
            target,
            order,
            warnings,
        })
    }

    /// Depth-first from the target; a stage reached again while on the stack is a cycle.
    fn build_order(&self, stages: &[Stage], target: usize) -> Result<Vec<usize>, Diagnostic> {
        fn visit(
            p: &Planner<'_>,
            stages: &[Stage],
            i: usize,
            state: &mut Vec<u8>,
            order: &mut Vec<usize>,
            path: &mut Vec<usize>,
        ) -> Result<(), Diagnostic> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let cycle: Vec<String> = path
                        .iter()
                        .skip_while(|&&s| s != i)
                        .chain(std::iter::once(&i))
                        .map(|&s| stages[s].name.clone().unwrap_or_else(|| s.to_string()))
                        .collect();
                    return Err(p.diag(
                        stages[i].steps.first().map(|s| s.span).unwrap_or_default(),
                        format!("stages form a cycle: {}", cycle.join(" → ")),
                    ));
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for &d in &stages[i].deps {
                visit(p, stages, d, state, order, path)?;
            }
            path.pop();
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        let mut state = vec![0u8; stages.len()];
        let mut order = Vec::new();
        visit(
            self,
            stages,
            target,
            &mut state,
            &mut order,
            &mut Vec::new(),
        )?;
        Ok(order)
    }

    fn resolve_image(
        &self,
        w: &Word,
        spec: &str,
        platform: &Platform,
    ) -> Result<Box<BaseImage>, Diagnostic> {
        let images = match &self.req.images {
            Some(r) => r.clone(),
            None => image::LocalImages::shared(&self.req.context_dir),
        };
        images.resolve(spec, platform).map(Box::new).map_err(|e| {
            let hint = e.hint();
            let d = self.diag(w.span, format!("{e}"));
            match hint {
                Some(h) => d.with_hint(h),
                None => d,
            }
        })
    }

    fn plan_stage(
        &mut self,
        index: usize,
        from: &ast::Instruction,
        body: Vec<ast::Instruction>,
        globals: &BTreeMap<String, Option<String>>,
        names: &[Option<String>],
        done: &[Stage],
    ) -> Result<Stage, Diagnostic> {
        let Command::From(f) = &from.command else {
            unreachable!()
        };
        let look = |n: &str| lookup_global(globals, &self.predefined, n);
        let mut platform = match &f.platform {
            Some(w) => {
                let p = self.expand(w, &look)?;
                Platform::parse(&p).map_err(|e| {
                    let d = self.diag(w.span, format!("FROM --platform: {e}"));
                    match e.hint() {
                        Some(h) => d.with_hint(h),
                        None => d,
                    }
                })?
            }
            None => self.req.platform.clone(),
        };
        let image_word = self.expand(&f.image, &look)?;
        if image_word.is_empty() {
            return Err(self.diag(
                f.image.span,
                "FROM names no image (the expression expanded to nothing)",
            ));
        }
        let lower = image_word.to_ascii_lowercase();
        let mut deps = Vec::new();
        let (base, mut cfg) = if lower == "scratch" {
            // BuildKit's empty image: WorkingDir `/` (and PATH, below).
            let cfg = ConfigState {
                workdir: Some("/".to_string()),
                ..Default::default()
            };
            (Base::Scratch, cfg)
        } else if let Some(i) = names[..index]
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()))
        {
            deps.push(i);
            // A stage on another stage is of that stage's platform (as in BuildKit): its RUN
            // steps run the binaries that stage holds.
            platform = done[i].platform.clone();
            (Base::Stage(i), done[i].config.clone())
        } else if names[index..]
            .iter()
            .any(|n| n.as_deref() == Some(lower.as_str()))
        {
            return Err(self
                .diag(
                    f.image.span,
                    format!("FROM refers to stage `{lower}`, which is defined later"),
                )
                .with_hint("a stage can only start from a stage defined above it"));
        } else {
            let img = self.resolve_image(&f.image, &image_word, &platform)?;
            // A reference to a single manifest is taken as it is; one of another architecture
            // would give an image whose config lies about what runs in it.
            if !platform.runs_config(&img.config) {
                return Err(self
                    .diag(
                        f.image.span,
                        format!(
                            "image `{image_word}` is for {}/{}, not {platform}",
                            img.config["os"].as_str().unwrap_or("linux"),
                            img.config["architecture"].as_str().unwrap_or("?")
                        ),
                    )
                    .with_hint(
                        "name an image (or index) that has this platform, or build for the image's platform with --platform",
                    ));
            }
            let cfg = ConfigState::from_image_config(&img.config);
            (Base::Image(img), cfg)
        };
        // As BuildKit: an image without PATH gets the default one in its config (appended to
        // Env), so RUN sees it and so does whoever runs the image.
        if cfg.env_get("PATH").is_none() {
            cfg.env_set("PATH".to_string(), DEFAULT_PATH.to_string());
        }
        // ONBUILD triggers of the base (an image's config `OnBuild`, or the ONBUILD instructions
        // of an earlier stage) run first in this stage and are not inherited by its image
        // (BuildKit). A stage's config only ever holds its own ONBUILD instructions.
        let triggers = std::mem::take(&mut cfg.onbuild);
        let mut body = body;
        if !triggers.is_empty() {
            let what = match &base {
                Base::Stage(i) => format!(
                    "stage `{}`",
                    names[*i].clone().unwrap_or_else(|| i.to_string())
                ),
                _ => format!("image `{image_word}`"),
            };
            let mut parsed = Vec::with_capacity(triggers.len());
            for t in &triggers {
                let ins = crate::frontend::parse::parse_trigger(
                    &self.req.dockerfile_name,
                    &self.req.source,
                    t,
                    from.span,
                )
                .map_err(|mut d| {
                    d.message = format!("ONBUILD trigger `{t}` of {what}: {}", d.message);
                    d
                })?;
                parsed.push(ins);
            }
            parsed.extend(body);
            body = parsed;
        }

        let mut args: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut steps = Vec::new();
        let mut cmd_set_here = false;
        for ins in body {
            let lookup_env =
                |cfg: &ConfigState, args: &BTreeMap<String, Option<String>>, n: &str| {
                    cfg.env_get(n)
                        .map(str::to_string)
                        .or_else(|| args.get(n).cloned().flatten())
                };
            let mut history = Some(History {
                created_by: ins.text.clone(),
                empty_layer: true,
            });
            let kind = match &ins.command {
                Command::From(_) => unreachable!("stages are split at FROM"),
                Command::Run(r) => {
                    let step = self.run_step(r, &cfg, &args, names, index)?;
                    let froms = step
                        .cache_mounts
                        .iter()
                        .filter_map(|m| m.from.as_ref().map(|f| &f.0))
                        .chain(step.mounts.iter().filter_map(|m| match &m.kind {
                            RunMountKind::Bind { from, .. } => Some(from),
                            _ => None,
                        }));
                    for from in froms {
                        if let CopyFrom::Stage(s) = from {
                            if !deps.contains(s) {
                                deps.push(*s);
                            }
                        }
                    }
                    history = Some(History {
                        created_by: ins.text.clone(),
                        empty_layer: false,
                    });
                    Some(StepKind::Run(Box::new(step)))
                }
                Command::Arg(kvs) => {
                    history = None;
                    for kv in kvs {
                        let name = kv.key.raw.clone();
                        let value = match self.req.build_args.get(&name) {
                            Some(v) => Some(v.clone()),
                            None => match &kv.value {
                                Some(w) => {
                                    let l = |n: &str| lookup_env(&cfg, &args, n);
                                    Some(self.expand(w, &l)?)
                                }
                                None => globals
                                    .get(&name)
                                    .cloned()
                                    .flatten()
                                    .or_else(|| self.predefined.get(&name).cloned()),
                            },
                        };
                        self.consumed_args.insert(name.clone());
                        args.insert(name, value);
                    }
                    None
                }
                Command::Env(kvs) => {
                    // Every pair sees the environment from *before* this instruction.
                    let before = cfg.clone();
                    for kv in kvs {
                        let l = |n: &str| lookup_env(&before, &args, n);
                        let k = self.expand(&kv.key, &l)?;
                        let v = match &kv.value {
                            Some(w) => self.expand(w, &l)?,
                            None => String::new(),
                        };
                        if k.is_empty() || k.contains('=') {
                            return Err(self.diag(
                                kv.key.span,
                                format!("invalid environment variable name `{k}`"),
                            ));
                        }
                        cfg.env_set(k, v);
                    }
                    None
                }
                Command::Label(kvs) => {
                    let before = cfg.clone();
                    for kv in kvs {
                        let l = |n: &str| lookup_env(&before, &args, n);
                        let k = self.expand(&kv.key, &l)?;
                        let v = match &kv.value {
                            Some(w) => self.expand(w, &l)?,
                            None => String::new(),
                        };
                        if k.is_empty() {
                            return Err(self.diag(kv.key.span, "LABEL with an empty key"));
                        }
                        cfg.labels.insert(k, v);
                    }
                    None
                }
                Command::Workdir(w) => {
                    let l = |n: &str| lookup_env(&cfg, &args, n);
                    let p = self.expand(w, &l)?;
                    if p.is_empty() {
                        return Err(self.diag(w.span, "WORKDIR needs a path"));
                    }
                    let joined = if p.starts_with('/') {
                        p
                    } else {
                        format!("{}/{p}", cfg.workdir.as_deref().unwrap_or("/"))
                    };
                    let path = clean_abs(&joined, false);
                    cfg.workdir = Some(path.clone());
                    if path == "/" {
                        // Nothing to create: a config step, as BuildKit (no layer).
                        None
                    } else {
                        history = Some(History {
                            created_by: ins.text.clone(),
                            empty_layer: false,
                        });
                        Some(StepKind::Workdir(Box::new(WorkdirStep {
                            path,
                            user: cfg.user.clone(),
                            state: encode_state(&cfg, &args),
                        })))
                    }
                }
                Command::User(w) => {
                    let l = |n: &str| lookup_env(&cfg, &args, n);
                    let u = self.expand(w, &l)?;
                    if u.is_empty() {
                        return Err(self.diag(w.span, "USER needs a user name or id"));
                    }
                    cfg.user = Some(u);
                    None
                }
                Command::Cmd(cl) => {
                    cfg.cmd = Some(command_line(cl, &cfg));
                    cmd_set_here = true;
                    None
                }
                Command::Entrypoint(cl) => {
                    cfg.entrypoint = Some(command_line(cl, &cfg));
                    // Docker: an ENTRYPOINT resets a CMD inherited from the base.
                    if !cmd_set_here {
                        cfg.cmd = None;
                    }
                    None
                }
                Command::Expose(words) => {
                    for w in words {
                        let l = |n: &str| lookup_env(&cfg, &args, n);
                        for p in self.expand_many(w, &l)? {
                            for port in
                                expose_ports(&p).map_err(|e| self.diag(w.span, e.to_string()))?
                            {
                                cfg.exposed_ports.insert(port);
                            }
                        }
                    }
                    None
                }
                Command::Volume(words) => {
                    for w in words {
                        let l = |n: &str| lookup_env(&cfg, &args, n);
                        for v in self.expand_many(w, &l)? {
                            if v.is_empty() {
                                return Err(self.diag(w.span, "VOLUME with an empty path"));
                            }
                            cfg.volumes.insert(v);
                        }
                    }
                    None
                }
                Command::StopSignal(w) => {
                    let l = |n: &str| lookup_env(&cfg, &args, n);
                    let sig = self.expand(w, &l)?;
                    if !is_signal(&sig) {
                        return Err(self
                            .diag(w.span, format!("STOPSIGNAL `{sig}` is not a signal"))
                            .with_hint("write a signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or number (1 to 64)"));
                    }
                    cfg.stop_signal = Some(sig);
                    None
                }
                Command::Shell(v) => {
                    cfg.shell = Some(v.clone());
                    None
                }
                Command::Healthcheck(h) => {
                    cfg.healthcheck = Some(self.healthcheck(h, &cfg)?);
                    None
                }
                Command::Onbuild(t) => {
                    cfg.onbuild.push(t.clone());
                    None
                }
                Command::Maintainer(w) => {
                    // Verbatim, as BuildKit keeps it: no expansion, no unescaping (its parser
                    // testfile `escapes`).
                    cfg.author = Some(w.raw.clone());
                    None
                }
                Command::Copy(c) | Command::Add(c) => {
                    let add = matches!(ins.command, Command::Add(_));
                    let spec = self.copy_spec(add, c, &ins, &cfg, &args, &look, names, index)?;
                    if let CopyFrom::Stage(s) = &spec.from {
                        if !deps.contains(s) {
                            deps.push(*s);
                        }
                    }
                    history = Some(History {
                        created_by: ins.text.clone(),
                        empty_layer: false,
                    });
                    Some(StepKind::Copy(Box::new(spec)))
                }
            };
            let kind = kind.unwrap_or_else(|| StepKind::Config {
                state: encode_state(&cfg, &args),
            });
            steps.push(Step {
                keyword: ins.command.keyword(),
                text: ins.text.clone(),
                span: ins.span,
                kind,
                history,
            });
        }
        Ok(Stage {
            index,
            name: names[index].clone(),
            base,
            platform,
            steps,
            deps,
            config: cfg,
        })
    }

    fn healthcheck(&self, h: &ast::HealthcheckCmd, cfg: &ConfigState) -> Result<Value, Diagnostic> {
        let Some(test) = &h.test else {
            return Ok(json!({ "Test": ["NONE"] }));
        };
        let test = match test {
            CommandLine::Exec(v) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(v.iter().cloned());
                t
            }
            CommandLine::Shell(w) => vec!["CMD-SHELL".to_string(), w.raw.clone()],
        };
        let _ = cfg;
        let mut obj = serde_json::Map::new();
        obj.insert("Test".into(), json!(test));
        for (name, w) in [
            ("Interval", &h.interval),
            ("Timeout", &h.timeout),
            ("StartPeriod", &h.start_period),
            ("StartInterval", &h.start_interval),
        ] {
            if let Some(w) = w {
                let ns = parse_duration(&w.raw).ok_or_else(|| {
                    self.diag(w.span, format!("invalid duration `{}`", w.raw))
                        .with_hint("use e.g. 30s, 1m30s, 500ms")
                })?;
                obj.insert(name.into(), json!(ns));
            }
        }
        if let Some(w) = &h.retries {
            let n: u64 = w
                .raw
                .parse()
                .map_err(|_| self.diag(w.span, format!("invalid --retries value `{}`", w.raw)))?;
            obj.insert("Retries".into(), json!(n));
        }
        Ok(Value::Object(obj))
    }
}

fn lookup_global(
    globals: &BTreeMap<String, Option<String>>,
    predefined: &BTreeMap<String, String>,
    n: &str,
) -> Option<String> {
    match globals.get(n) {
        Some(v) => v.clone(),
        None => predefined.get(n).cloned(),
    }
}

fn heredoc_name(raw: &str) -> Option<&str> {
    let rest = raw.strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = rest.trim_matches(|c| c == '"' || c == '\'');
    (!name.is_empty()).then_some(name)
}

/// Why a heredoc body could not be expanded (the message follows `cannot expand heredoc …: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum HeredocError {
    #[error("{}", .0.message)]
    Expand(crate::frontend::expand::ExpandError),
    #[error("the expansion is larger than {} MiB (the limit of one expanded heredoc)", .0 >> 20)]
    TooLarge(usize),
}

/// Expands `$VAR` in a heredoc body line by line, keeping the line structure (quotes are
/// literal in a heredoc, so each line is expanded as if double-quoted).
fn expand_heredoc(
    content: &str,
    escape: char,
    l: &dyn Fn(&str) -> Option<String>,
) -> Result<String, HeredocError> {
    let mut out = String::new();
    for line in content.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        // Protect quotes so the word expander keeps them literally.
        let quoted = format!(
            "\"{}\"",
            body.replace(escape, &format!("{escape}{escape}"))
                .replace('"', &format!("{escape}\""))
        );
        let expanded = expand_word(&quoted, escape, l).map_err(HeredocError::Expand)?;
        out.push_str(&expanded);
        out.push_str(nl);
        if out.len() > crate::frontend::expand::MAX_EXPANSION_BYTES {
            return Err(HeredocError::TooLarge(
                crate::frontend::expand::MAX_EXPANSION_BYTES,
            ));
        }
    }
    Ok(out)
}

fn command_line(cl: &CommandLine, cfg: &ConfigState) -> Vec<String> {
    match cl {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(w) => {
            let mut v = cfg.shell_or_default();
            v.push(w.raw.clone());
            v
        }
    }
}

/// Why an EXPOSE port spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ExposeError {
    #[error("invalid protocol in EXPOSE `{0}` (tcp, udp or sctp)")]
    Protocol(String),
    #[error("invalid port in EXPOSE `{0}`")]
    Port(String),
}

/// `80` → `80/tcp`; `53/udp`; `8000-8002` → three ports.
fn expose_ports(spec: &str) -> Result<Vec<String>, ExposeError> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(ExposeError::Protocol(spec.to_string()));
    }
    let bad = || ExposeError::Port(spec.to_string());
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi || hi as u32 - lo as u32 > 65535 {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Go-style durations: `1h2m3s`, `500ms`, `1.5s`. Returns nanoseconds.
fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(total as u64)
}

/// Cleans an absolute path (`/a/./b/../c` → `/a/c`); keeps one trailing `/` if `dir`.
pub fn clean_abs(p: &str, dir: bool) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if dir && out != "/" {
        out.push('/');
    }
    out
}

/// Canonical encoding of what a config-only step leaves behind: the image config and the ARGs
/// in scope (with their values). Later steps can depend on nothing else.
fn encode_state(cfg: &ConfigState, args: &BTreeMap<String, Option<String>>) -> Vec<u8> {
    let v = json!({
        "config": cfg.to_config_object(),
        "author": cfg.author,
        "args": args,
    });
    image::canonical_json(&v)
}

/// A signal as the runtime will take it (moby's `signal.ParseSignal`, which BuildKit applies to
/// STOPSIGNAL): a Linux signal name with or without `SIG`, in any case, `RTMIN+n`/`RTMAX-n`, or
/// a number from 1 to 64. The config keeps it as written.
fn is_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    const NAMES: [&str; 35] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "UNUSED",
    ];
    if NAMES.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    let offset = |rest: &str, max: u32| rest.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
    if let Some(r) = name.strip_prefix("RTMIN+") {
        return offset(r, 15);
    }
    if let Some(r) = name.strip_prefix("RTMAX-") {
        return offset(r, 14);
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn stopsignal_must_be_a_signal() {
        for ok in [
            "SIGTERM",
            "term",
            "SIGRTMIN+3",
            "RTMAX-1",
            "9",
            "SIGKILL",
            "sigusr1",
        ] {
            assert!(is_signal(ok), "{ok}");
        }
        for bad in ["SIGNOPE", "0", "65", "RTMIN+16", "", "SIG", "TERM "] {
            assert!(!is_signal(bad), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_abs("/a/./b/../c", false), "/a/c");
        assert_eq!(clean_abs("/a/b/", true), "/a/b/");
        assert_eq!(clean_abs("/../..", true), "/");
        assert_eq!(clean_abs("//x//y", false), "/x/y");
    }

    #[test]
    fn ports_and_durations() {
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expose_ports("8000-8002").unwrap().len(), 3);
        assert!(expose_ports("http").is_err());
        assert!(expose_ports("80/foo").is_err());
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
    }

    fn req(src: &str, args: &[(&str, &str)]) -> PlanRequest {
        PlanRequest {
            dockerfile_name: "Dockerfile".into(),
            source: src.into(),
            context_dir: std::env::temp_dir(),
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: None,
            platform: Platform::host(),
            images: None,
        }
    }

    /// The target's Env without the default PATH every scratch stage starts with.
    fn env_of(p: &Plan) -> Vec<(String, String)> {
        let mut env = p.stages[p.target].config.env.clone();
        if env.first() == Some(&("PATH".into(), DEFAULT_PATH.into())) {
            env.remove(0);
        }
        env
    }

    #[test]
    fn arg_scoping_follows_docker() {
        let src = "ARG V=global\nARG ONLY_GLOBAL=g\nFROM scratch\nARG V\nENV A=$V B=${ONLY_GLOBAL:-unset} C=${TARGETARCH:-none}\nARG TARGETARCH\nENV D=$TARGETARCH\n";
        let p = plan(&req(src, &[])).unwrap();
        let env = env_of(&p);
        assert_eq!(env[0], ("A".into(), "global".into()));
        assert_eq!(
            env[1],
            ("B".into(), "unset".into()),
            "global ARGs are not visible in a stage unless redeclared"
        );
        assert_eq!(
            env[2],
            ("C".into(), "none".into()),
            "predefined ARGs need a declaration in the stage"
        );
        assert_eq!(env[3], ("D".into(), Platform::host().architecture));
        let p = plan(&req(src, &[("V", "override")])).unwrap();
        assert_eq!(env_of(&p)[0].1, "override");
    }

    #[test]
    fn env_sees_values_from_before_the_instruction() {
        let p = plan(&req("FROM scratch\nENV X=1\nENV X=2 Y=$X\n", &[])).unwrap();
        assert_eq!(
            env_of(&p),
            vec![("X".into(), "2".into()), ("Y".into(), "1".into())]
        );
    }

    #[test]
    fn workdir_cmd_entrypoint_and_copy_destinations() {
        let src = "FROM scratch AS a\nCMD [\"x\"]\nFROM a\nWORKDIR app\nWORKDIR sub/../src\nENTRYPOINT [\"e\"]\nCOPY f ./\n";
        let p = plan(&req(src, &[])).unwrap();
        let st = &p.stages[p.target];
        assert_eq!(st.config.workdir.as_deref(), Some("/app/src"));
        assert_eq!(st.config.cmd, None, "ENTRYPOINT resets an inherited CMD");
        let StepKind::Copy(c) = &st.steps.last().unwrap().kind else {
            panic!()
        };
        assert_eq!(c.dest, "/app/src/");
        assert_eq!(p.order, vec![0, 1]);
    }

    #[test]
    fn unused_build_args_warn_and_unknown_target_fails() {
        let p = plan(&req(
            "FROM scratch\n",
            &[("NOPE", "1"), ("HTTP_PROXY", "x")],
        ))
        .unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("NOPE"));
        let mut r = req("FROM scratch AS one\n", &[]);
        r.target = Some("two".into());
        let e = plan(&r).unwrap_err();
        assert!(e.message.contains("target stage `two` not found"), "{e}");
        assert!(e.hint.unwrap().contains("`one`"));
    }

    #[test]
    fn run_environment_and_shell_form() {
        let src = "FROM scratch\nARG A=1\nENV A=env B=2\nARG C=3\nSHELL [\"/bin/bash\", \"-ec\"]\nRUN --network=host echo hi\n";
        let p = plan(&req(src, &[])).unwrap();
        let StepKind::Run(r) = &p.stages[0].steps.last().unwrap().kind else {
            panic!()
        };
        assert_eq!(r.argv, vec!["/bin/bash", "-ec", "echo hi"]);
        assert_eq!(
            r.env,
            vec![&format!("PATH={DEFAULT_PATH}"), "A=env", "B=2", "C=3"]
        );
        assert_eq!(r.network, Some(Network::Host));
        let e = plan(&req("FROM scratch\nRUN --security=insecure true\n", &[])).unwrap_err();
        assert!(e.message.contains("not supported yet"), "{e}");
    }

    fn run_of(p: &Plan, stage: usize) -> RunStep {
        match &p.stages[stage].steps.last().unwrap().kind {
            StepKind::Run(r) => (**r).clone(),
            _ => panic!("not a RUN"),
        }
    }

    #[test]
    fn run_mounts_parse_as_buildkit_documents_them() {
        let src = "FROM scratch AS build\nFROM scratch\nWORKDIR /w\nARG T=/mnt/x\nRUN --mount=type=bind,from=build,source=/out,target=$T,rw --mount=type=tmpfs,dst=tmp,size=64m --mount=type=secret,id=tok,required,mode=0440,uid=1 --mount=type=cache,target=/c,from=build,source=/cache,sharing=locked,ro --mount=target=/ctx true\n";
        let p = plan(&req(src, &[])).unwrap();
        let r = run_of(&p, 1);
        assert_eq!(r.network, None, "no --network: the build's");
        let d = plan(&req("FROM scratch\nRUN --network=default true\n", &[])).unwrap();
        assert_eq!(run_of(&d, 0).network, None, "default: the build's");
        assert_eq!(
            p.stages[1].deps,
            vec![0],
            "from=build makes the stage a dependency"
        );
        let m = &r.mounts;
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].target, "/mnt/x", "expanded");
        assert!(
            matches!(&m[0].kind, RunMountKind::Bind { from: CopyFrom::Stage(0), source, rw: true } if source == "/out")
        );
        assert_eq!(m[1].target, "/w/tmp", "relative to WORKDIR");
        assert!(matches!(
            m[1].kind,
            RunMountKind::Tmpfs {
                size: Some(67108864)
            }
        ));
        assert_eq!(m[2].target, "/run/secrets/tok");
        assert!(matches!(
            &m[2].kind,
            RunMountKind::Secret { id, file: true, env: None, required: true, mode: 0o440, uid: 1, gid: 0 } if id == "tok"
        ));
        assert!(
            matches!(&m[3].kind, RunMountKind::Bind { from: CopyFrom::Context, source, rw: false } if source.is_empty()),
            "type defaults to bind, from the context"
        );
        let c = &r.cache_mounts[0];
        assert_eq!(
            (c.id.as_str(), c.target.as_str(), c.readonly),
            ("/c", "/c", true)
        );
        assert!(matches!(&c.from, Some((CopyFrom::Stage(0), s)) if s == "/cache"));
        let p = plan(&req(
            "FROM scratch\nRUN --mount=type=ssh --mount=type=ssh,id=gh,required true\n",
            &[],
        ))
        .unwrap();
        let m = run_of(&p, 0).mounts;
        assert_eq!(m[0].target, "/run/buildkit/ssh_agent.0");
        assert!(matches!(&m[0].kind, RunMountKind::Ssh { id, required: false } if id == "default"));
        assert_eq!(m[1].target, "/run/buildkit/ssh_agent.1");
        assert!(matches!(&m[1].kind, RunMountKind::Ssh { id, required: true } if id == "gh"));
        let p = plan(&req("FROM scratch\nRUN --mount=type=secret,id=a,env=A --mount=type=secret,id=b,env=B,target=/b true\n", &[])).unwrap();
        let m = run_of(&p, 0).mounts;
        assert!(
            matches!(&m[0].kind, RunMountKind::Secret { file: false, env: Some(e), .. } if e == "A")
        );
        assert_eq!(m[0].target, "", "env= alone: no file");
        assert!(
            matches!(&m[1].kind, RunMountKind::Secret { file: true, env: Some(e), .. } if e == "B")
        );
        assert_eq!(m[1].target, "/b");
        // A secret without an id: its target's base name.
        let p = plan(&req(
            "FROM scratch\nRUN --mount=type=secret,target=/etc/key true\n",
            &[],
        ))
        .unwrap();
        assert!(
            matches!(&run_of(&p, 0).mounts[0].kind, RunMountKind::Secret { id, mode: 0o400, .. } if id == "key")
        );
    }

    #[test]
    fn bad_run_mounts_fail_with_the_line_and_a_hint() {
        for (src, msg, hint) in [
            (
                "RUN --mount=type=cache,target=/c,colour=red true",
                "unknown option `colour` for RUN --mount=type=cache",
                "type=cache takes target=",
            ),
            (
                "RUN --mount=type=bind,target=/c,size=1 true",
                "unknown option `size`",
                "type=bind takes",
            ),
            (
                "RUN --mount=type=tmpfs,target=/t,size=lots true",
                "invalid size `lots`",
                "size=64m",
            ),
            (
                "RUN --mount=type=secret true",
                "needs id=ID or target=PATH",
                "--mount=type=secret,id=",
            ),
            (
                "RUN --mount=type=bind,target=/ true",
                "cannot be mounted on `/`",
                "/mnt",
            ),
            (
                "RUN --mount=type=volume,target=/v true",
                "unknown RUN --mount type `volume`",
                "type=bind, cache, tmpfs, secret or ssh",
            ),
            (
                "RUN --mount=type=bind,target=/a,source=../x true",
                "leaves its root",
                "inside",
            ),
            (
                "RUN --mount=type=tmpfs,target=/a --mount=type=cache,target=/a true",
                "two RUN --mount have the target `/a`",
                "own target",
            ),
            (
                "RUN --mount=type=secret,id=a,required=maybe true",
                "is not a boolean",
                "required=true",
            ),
            (
                "RUN --mount=type=ssh,mode=0600 true",
                "`mode` is not supported yet",
                "leave it out",
            ),
        ] {
            let e = plan(&req(&format!("FROM scratch\n{src}\n"), &[])).unwrap_err();
            assert!(e.message.contains(msg), "{src}: {e}");
            assert!(
                e.hint.as_deref().unwrap_or("").contains(hint),
                "{src}: {:?}",
                e.hint
            );
            assert_eq!(e.span.line, 2, "{src}");
        }
    }

    #[test]
    fn images_without_path_get_the_default_path_in_their_config() {
        // Scratch: PATH and WorkingDir `/`, as BuildKit's empty image.
        let p = plan(&req("FROM scratch\n", &[])).unwrap();
        let st = &p.stages[0];
        assert_eq!(st.config.env, vec![("PATH".into(), DEFAULT_PATH.into())]);
        assert!(env_of(&p).is_empty());
        assert_eq!(st.config.workdir.as_deref(), Some("/"));
        let c = st.config.to_config_object();
        assert_eq!(c["Env"][0], format!("PATH={DEFAULT_PATH}"));
        // PATH set by the Dockerfile replaces it in place; RUN sees exactly the config's Env.
        let p = plan(&req("FROM scratch\nENV PATH=/x A=1\nRUN true\n", &[])).unwrap();
        assert_eq!(
            env_of(&p),
            vec![("PATH".into(), "/x".into()), ("A".into(), "1".into())]
        );
        let StepKind::Run(r) = &p.stages[0].steps[1].kind else {
            panic!()
        };
        assert_eq!(r.env, vec!["PATH=/x", "A=1"]);
        // A later stage inherits it once.
        let p = plan(&req("FROM scratch AS a\nFROM a\nENV B=2\n", &[])).unwrap();
        assert_eq!(
            p.stages[1].config.env,
            vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("B".into(), "2".into())
            ]
        );
    }

    #[test]
    fn workdir_is_a_layer_step_owned_by_the_current_user() {
        let src = "FROM scratch\nWORKDIR /\nUSER http\nWORKDIR /home/http/x\nWORKDIR ..\n";
        let p = plan(&req(src, &[])).unwrap();
        let steps = &p.stages[0].steps;
        // `/` has nothing to create: a config step without a layer.
        assert!(matches!(steps[0].kind, StepKind::Config { .. }));
        assert!(steps[0].history.as_ref().unwrap().empty_layer);
        let StepKind::Workdir(w) = &steps[2].kind else {
            panic!("{:?}", steps[2].kind)
        };
        assert_eq!(w.path, "/home/http/x");
        assert_eq!(w.user.as_deref(), Some("http"));
        assert!(!steps[2].history.as_ref().unwrap().empty_layer);
        let StepKind::Workdir(w) = &steps[3].kind else {
            panic!()
        };
        assert_eq!(w.path, "/home/http");
    }

    #[test]
    fn onbuild_triggers_of_the_base_stage_run_first_and_are_not_inherited() {
        let src = "FROM scratch AS base\nONBUILD ENV FROM_TRIGGER=1\nONBUILD COPY a /a\n\
                   FROM base AS child\nENV OWN=2\n";
        let p = plan(&req(src, &[])).unwrap();
        let base = &p.stages[0];
        assert_eq!(base.config.onbuild, vec!["ENV FROM_TRIGGER=1", "COPY a /a"]);
        let child = &p.stages[1];
        let kws: Vec<&str> = child.steps.iter().map(|s| s.keyword).collect();
        assert_eq!(kws, vec!["ENV", "COPY", "ENV"]);
        assert_eq!(child.steps[0].text, "ENV FROM_TRIGGER=1");
        assert_eq!(
            child.steps[0].span.line, 4,
            "a trigger points at the FROM running it"
        );
        assert!(
            child.config.onbuild.is_empty(),
            "triggers are not inherited"
        );
        assert_eq!(child.config.env_get("FROM_TRIGGER"), Some("1"));
        // A grandchild runs nothing of the grandparent's triggers.
        let p = plan(&req(&format!("{src}FROM child\n"), &[])).unwrap();
        assert!(p.stages[2].steps.is_empty());
    }

    #[test]
    fn onbuild_triggers_that_are_invalid_are_refused() {
        let e = crate::frontend::parse::parse_trigger(
            "Dockerfile",
            "FROM img\n",
            "ONBUILD RUN x",
            Span {
                line: 1,
                col: 1,
                len: 4,
            },
        )
        .unwrap_err();
        assert!(
            e.message.contains("isn't allowed as an ONBUILD trigger"),
            "{e}"
        );
        let e = crate::frontend::parse::parse_trigger(
            "Dockerfile",
            "FROM img\n",
            "CMD [\"a\", [1]]",
            Span {
                line: 1,
                col: 1,
                len: 4,
            },
        )
        .unwrap_err();
        assert!(e.message.contains("array of strings"), "{e}");
        assert_eq!(e.span.line, 1);
    }

    #[test]
    fn quoted_copy_path_with_a_space_hints_at_the_json_form() {
        let e = plan(&req("FROM scratch\nCOPY \"a b\" /x/\n", &[])).unwrap_err();
        assert!(e.message.contains("matching double-quote"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("JSON form"), "{e}");
    }

    fn copy_of(p: &Plan, step: usize) -> CopySpec {
        match &p.stages[p.target].steps[step].kind {
            StepKind::Copy(c) => (**c).clone(),
            other => panic!("not a COPY/ADD: {other:?}"),
        }
    }

    #[test]
    fn add_of_urls_and_git_repositories() {
        let hex = "ab".repeat(32);
        let src = format!(
            "FROM scratch\nARG V=1.0\nADD --checksum=sha256:{hex} https://h/f-$V.tgz /opt/\n\
             ADD --keep-git-dir=true https://h/r.git#v$V:sub/dir /src\nADD git@h:o/r.git /g/\n\
             ADD --checksum=0123abcd https://h/r.git#main /m/\n"
        );
        let p = plan(&req(&src, &[])).unwrap();
        let c = copy_of(&p, 1);
        assert!(c.is_remote());
        assert_eq!(
            c.sources,
            vec![CopySource::Url(crate::fetch::UrlSource {
                url: "https://h/f-1.0.tgz".into(),
                checksum: Some(strata_cache::Digest::from_hex(&hex).unwrap()),
            })]
        );
        let CopySource::Git(g) = &copy_of(&p, 2).sources[0] else {
            panic!()
        };
        assert_eq!(
            (
                g.remote.as_str(),
                g.reference.as_deref(),
                g.subdir.as_deref(),
                g.keep_git_dir
            ),
            ("https://h/r.git", Some("v1.0"), Some("sub/dir"), true)
        );
        let CopySource::Git(g) = &copy_of(&p, 3).sources[0] else {
            panic!()
        };
        assert_eq!(
            (g.remote.as_str(), g.reference.as_deref()),
            ("git@h:o/r.git", None)
        );
        let CopySource::Git(g) = &copy_of(&p, 4).sources[0] else {
            panic!()
        };
        assert_eq!(g.checksum.as_deref(), Some("0123abcd"));
        // COPY of a URL is a path, as before; a local ADD is not remote.
        let p = plan(&req("FROM scratch\nADD a.tgz /x/\n", &[])).unwrap();
        assert!(!copy_of(&p, 0).is_remote());
    }

    #[test]
    fn bad_remote_adds_fail_with_the_line_and_a_hint() {
        for (src, msg, hint) in [
            ("ADD https:///x /d", "invalid URL", "full URL"),
            (
                "ADD --checksum=sha256:zz https://h/x /d",
                "invalid --checksum",
                "sha256:<64",
            ),
            (
                "ADD --checksum=sha256:00 a.txt /d",
                "exactly one source",
                "own ADD",
            ),
            ("ADD https://h/a b.txt /d/", "cannot mix", "two ADD"),
            (
                "ADD https://h/r.git#main:../up /d",
                "leaves the repository",
                "REPOSITORY#REF",
            ),
            (
                "ADD ftp://h/x /d",
                "only http://, https:// and git URLs",
                "build context",
            ),
            (
                "ADD --checksum=xyz https://h/r.git /d",
                "for a git source",
                "commit id",
            ),
        ] {
            let e = plan(&req(&format!("FROM scratch\n{src}\n"), &[])).unwrap_err();
            assert!(e.message.contains(msg), "{src}: {e}");
            assert!(
                e.hint.as_deref().unwrap_or("").contains(hint),
                "{src}: {:?}",
                e.hint
            );
            assert_eq!(e.span.line, 2, "{src}");
        }
    }

    #[test]
    fn heredoc_names() {
        assert_eq!(heredoc_name("<<EOF"), Some("EOF"));
        assert_eq!(heredoc_name("<<-\"END\""), Some("END"));
        assert_eq!(heredoc_name("file"), None);
    }
}
