//! Planning `RUN`: the command, its environment, `--network`, and every `--mount` checked into
//! a [`RunStep`].

use super::*;

/// What [`Planner::run_mount`] parsed.
enum Mount {
    Cache(CacheMount),
    Other(RunMount),
}

/// `64m`, `1g`, `4096`, `10kb` (BuildKit's units: k, m, g, with an optional `b`) → bytes.
fn parse_size(v: &str) -> Option<u64> {
    let l = v.trim().to_ascii_lowercase();
    let l = l.strip_suffix('b').unwrap_or(&l);
    let (num, mult) = match l.chars().last()? {
        'k' => (&l[..l.len() - 1], 1u64 << 10),
        'm' => (&l[..l.len() - 1], 1 << 20),
        'g' => (&l[..l.len() - 1], 1 << 30),
        _ => (l, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

impl Planner<'_> {
    pub(super) fn run_step(
        &self,
        r: &ast::RunCmd,
        cfg: &ConfigState,
        args: &BTreeMap<String, Option<String>>,
        names: &[Option<String>],
        index: usize,
    ) -> Result<RunStep, Diagnostic> {
        let mut network = None;
        let mut cache_mounts = Vec::new();
        let mut mounts = Vec::new();
        let lookup = |n: &str| {
            cfg.env_get(n)
                .map(str::to_string)
                .or_else(|| args.get(n).cloned().flatten())
        };
        for f in &r.flags {
            let value = f.value.as_ref().map(|w| w.raw.as_str()).unwrap_or("");
            match f.name.as_str() {
                "network" => {
                    // `default` is the build's network (`strata build --network`), as in BuildKit.
                    network = match value {
                        "default" => None,
                        "none" => Some(Network::None),
                        "host" => Some(Network::Host),
                        other => {
                            return Err(self
                                .diag(f.span, format!("unknown RUN --network value `{other}`"))
                                .with_hint("use --network=none, --network=host or --network=default (the build's, none unless `strata build --network host`)"))
                        }
                    }
                }
                "mount" => {
                    let value = match &f.value {
                        Some(w) => self.expand(w, &lookup)?,
                        None => String::new(),
                    };
                    let ssh_count = mounts
                        .iter()
                        .filter(|m: &&RunMount| matches!(m.kind, RunMountKind::Ssh { .. }))
                        .count();
                    match self.run_mount(f.span, &value, cfg, names, index, ssh_count)? {
                        Mount::Cache(c) => cache_mounts.push(c),
                        Mount::Other(m) => mounts.push(m),
                    }
                }
                "security" => {
                    return Err(self.diag(
                        f.span,
                        format!("error: RUN --security={value} is not supported yet"),
                    ))
                }
                other => {
                    return Err(self
                        .diag(f.span, format!("unknown flag `--{other}` for RUN"))
                        .with_hint("RUN takes --network and --mount"))
                }
            }
        }
        let mut targets: Vec<&str> = cache_mounts
            .iter()
            .map(|m| m.target.as_str())
            .chain(mounts.iter().map(|m| m.target.as_str()))
            .filter(|t| !t.is_empty())
            .collect();
        targets.sort_unstable();
        if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
            return Err(self
                .diag(
                    r.flags[0].span,
                    format!("two RUN --mount have the target `{}`", w[0]),
                )
                .with_hint("give each mount its own target"));
        }
        let argv = match &r.command {
            CommandLine::Exec(v) => {
                if v.is_empty() {
                    return Err(self.diag(Span::default(), "RUN with an empty command"));
                }
                v.clone()
            }
            CommandLine::Shell(w) => {
                // Heredocs go to the shell as written: the shell expands unquoted ones at run
                // time with the container's environment, exactly as BuildKit does.
                let mut script = w.raw.clone();
                let only_heredoc = r.heredocs.len() == 1 && heredoc_name(w.raw.trim()).is_some();
                if only_heredoc {
                    script = r.heredocs[0].content.clone();
                } else {
                    for h in &r.heredocs {
                        script.push('\n');
                        script.push_str(&h.content);
                        script.push_str(&h.name);
                    }
                }
                if script.trim().is_empty() {
                    return Err(self.diag(w.span, "RUN with an empty command"));
                }
                let mut v = cfg.shell_or_default();
                v.push(script);
                v
            }
        };
        let mut env: Vec<String> = cfg.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (k, v) in args {
            if cfg.env_get(k).is_none() {
                if let Some(v) = v {
                    env.push(format!("{k}={v}"));
                }
            }
        }
        Ok(RunStep {
            argv,
            env,
            user: cfg.user.clone().unwrap_or_default(),
            workdir: cfg.workdir.clone().unwrap_or_else(|| "/".to_string()),
            network,
            cache_mounts,
            mounts,
        })
    }

    /// One `RUN --mount=…` value (variables expanded): comma-separated `key[=value]` options,
    /// as BuildKit's Dockerfile reference describes them for each type.
    #[allow(clippy::too_many_arguments)]
    fn run_mount(
        &self,
        span: Span,
        value: &str,
        cfg: &ConfigState,
        names: &[Option<String>],
        index: usize,
        ssh_count: usize,
    ) -> Result<Mount, Diagnostic> {
        let mut kv: Vec<(String, Option<String>)> = Vec::new();
        for part in value.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
                None => (part.trim(), None),
            };
            kv.push((k.to_ascii_lowercase(), v));
        }
        let ty = kv
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.clone().unwrap_or_default())
            .unwrap_or_else(|| "bind".into());
        let allowed: &[&str] = match ty.as_str() {
            "bind" => &["source", "src", "from", "rw", "readwrite", "ro", "readonly"],
            "cache" => &[
                "id", "sharing", "from", "source", "src", "mode", "uid", "gid", "ro", "readonly",
            ],
            "tmpfs" => &["size"],
            "secret" => &["id", "required", "mode", "uid", "gid", "env"],
            "ssh" => &["id", "required", "mode", "uid", "gid"],
            other => {
                return Err(self
                    .diag(span, format!("unknown RUN --mount type `{other}`"))
                    .with_hint("use type=bind, cache, tmpfs, secret or ssh"))
            }
        };
        let mut get = std::collections::HashMap::new();
        for (k, v) in &kv {
            let k = k.as_str();
            if k == "type" {
                continue;
            }
            let canonical = match k {
                "target" | "dst" | "destination" => "target",
                "src" => "source",
                "readwrite" => "rw",
                "readonly" => "ro",
                k => k,
            };
            if canonical != "target" && !allowed.contains(&k) {
                return Err(self
                    .diag(
                        span,
                        format!("unknown option `{k}` for RUN --mount=type={ty}"),
                    )
                    .with_hint(format!(
                        "type={ty} takes target={}{}",
                        if allowed.is_empty() { "" } else { ", " },
                        allowed.join(", ")
                    )));
            }
            get.insert(canonical, v.clone());
        }
        let flag = |name: &str| -> Result<bool, Diagnostic> {
            match get.get(name) {
                None => Ok(false),
                Some(None) => Ok(true),
                Some(Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Ok(true),
                    "false" | "0" | "no" => Ok(false),
                    _ => Err(self
                        .diag(
                            span,
                            format!("RUN --mount option `{name}={v}` is not a boolean"),
                        )
                        .with_hint(format!("write `{name}`, `{name}=true` or `{name}=false`"))),
                },
            }
        };
        let text = |name: &str| get.get(name).cloned().flatten().filter(|v| !v.is_empty());
        let number = |name: &str, radix: u32| -> Result<Option<u32>, Diagnostic> {
            match text(name) {
                None => Ok(None),
                Some(v) => u32::from_str_radix(&v, radix).map(Some).map_err(|_| {
                    self.diag(
                        span,
                        format!("RUN --mount option `{name}={v}` is not a number"),
                    )
                    .with_hint(if radix == 8 {
                        "use an octal mode such as 0400".to_string()
                    } else {
                        format!("use a numeric {name}")
                    })
                }),
            }
        };
        let abs = |t: &str| {
            if t.starts_with('/') {
                clean_abs(t, false)
            } else {
                clean_abs(
                    &format!("{}/{t}", cfg.workdir.as_deref().unwrap_or("/")),
                    false,
                )
            }
        };
        let from = |kw: &str| -> Result<Option<CopyFrom>, Diagnostic> {
            let Some(v) = text("from") else {
                return Ok(None);
            };
            let lv = v.to_ascii_lowercase();
            if let Some(i) = names.iter().position(|n| n.as_deref() == Some(lv.as_str())) {
                if i == index {
                    return Err(
                        self.diag(span, format!("{kw} from= refers to its own stage `{v}`"))
                    );
                }
                return Ok(Some(CopyFrom::Stage(i)));
            }
            if let Ok(i) = v.parse::<usize>() {
                if i >= index {
                    return Err(self
                        .diag(
                            span,
                            format!("{kw} from={i}: stage index must refer to an earlier stage"),
                        )
                        .with_hint(format!("this is stage {index}; stages are numbered from 0")));
                }
                return Ok(Some(CopyFrom::Stage(i)));
            }
            let word = Word {
                raw: v.clone(),
                span,
            };
            Ok(Some(CopyFrom::Image(self.resolve_image(
                &word,
                &v,
                &self.req.platform,
            )?)))
        };
        if ty == "ssh" {
            // The host's agent socket is bound as it is: its owner and mode are the host's.
            for o in ["mode", "uid", "gid"] {
                if get.contains_key(o) {
                    return Err(self
                        .diag(
                            span,
                            format!(
                                "error: RUN --mount=type=ssh option `{o}` is not supported yet"
                            ),
                        )
                        .with_hint("leave it out: the agent socket keeps its own owner and mode"));
                }
            }
            let id = text("id").unwrap_or_else(|| "default".into());
            let n = ssh_count;
            let target = text("target").unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}"));
            return Ok(Mount::Other(RunMount {
                target: self.mount_target(span, &abs(&target))?,
                kind: RunMountKind::Ssh {
                    id,
                    required: flag("required")?,
                },
            }));
        }
        if ty == "secret" {
            let id = text("id");
            let target = text("target");
            let env = text("env");
            if let Some(e) = &env {
                if e.contains('=') || e.contains('\0') {
                    return Err(self
                        .diag(
                            span,
                            format!("RUN --mount=type=secret: invalid variable name `{e}`"),
                        )
                        .with_hint("env= names an environment variable, e.g. env=API_TOKEN"));
                }
            }
            // BuildKit: with `env=` and no target, the secret is only in the environment.
            let file = target.is_some() || env.is_none();
            let (id, target) = match (id, target) {
                (Some(id), _) if !file => (id, String::new()),
                (Some(id), t) => {
                    let t = t.unwrap_or_else(|| format!("/run/secrets/{id}"));
                    (id, abs(&t))
                }
                // BuildKit: without an id, the target's base name.
                (None, Some(t)) => {
                    let t = abs(&t);
                    let id = t.rsplit('/').next().unwrap_or_default().to_string();
                    (id, t)
                }
                (None, None) => {
                    return Err(self
                        .diag(span, "RUN --mount=type=secret needs id=ID or target=PATH")
                        .with_hint(
                            "e.g. --mount=type=secret,id=token (mounted at /run/secrets/token)",
                        ))
                }
            };
            return Ok(Mount::Other(RunMount {
                target: if file {
                    self.mount_target(span, &target)?
                } else {
                    target
                },
                kind: RunMountKind::Secret {
                    id,
                    file,
                    env,
                    required: flag("required")?,
                    mode: number("mode", 8)?.unwrap_or(0o400),
                    uid: number("uid", 10)?.unwrap_or(0),
                    gid: number("gid", 10)?.unwrap_or(0),
                },
            }));
        }
        let target = text("target").ok_or_else(|| {
            self.diag(span, format!("RUN --mount=type={ty} needs target=PATH"))
                .with_hint(format!("e.g. --mount=type={ty},target=/mnt"))
        })?;
        let target = self.mount_target(span, &abs(&target))?;
        let source = text("source").unwrap_or_default();
        if source.split('/').any(|c| c == "..") {
            return Err(self
                .diag(
                    span,
                    format!("RUN --mount source `{source}` leaves its root"),
                )
                .with_hint("name a path inside the context, stage or image"));
        }
        Ok(match ty.as_str() {
            "cache" => {
                let from = from("RUN --mount=type=cache")?;
                if from.is_none() && !source.is_empty() {
                    return Err(self
                        .diag(span, "RUN --mount=type=cache: source= needs from=STAGE")
                        .with_hint(
                            "add from=STAGE (the cache then starts with that stage's SOURCE)",
                        ));
                }
                if let Some(v) = text("sharing") {
                    if !["shared", "private", "locked"].contains(&v.as_str()) {
                        return Err(self
                            .diag(span, format!("unknown RUN --mount sharing `{v}`"))
                            .with_hint("use sharing=shared, private or locked"));
                    }
                }
                let id = text("id").unwrap_or_else(|| target.clone());
                Mount::Cache(CacheMount {
                    id,
                    target,
                    from: from.map(|f| (f, source)),
                    readonly: flag("ro")?,
                    mode: number("mode", 8)?,
                    uid: number("uid", 10)?,
                    gid: number("gid", 10)?,
                })
            }
            "tmpfs" => {
                let size = match text("size") {
                    None => None,
                    Some(v) => Some(parse_size(&v).ok_or_else(|| {
                        self.diag(span, format!("RUN --mount=type=tmpfs: invalid size `{v}`"))
                            .with_hint("use bytes or a unit, e.g. size=64m")
                    })?),
                };
                Mount::Other(RunMount {
                    target,
                    kind: RunMountKind::Tmpfs { size },
                })
            }
            _ => {
                if flag("rw")? && flag("ro")? {
                    return Err(self.diag(span, "RUN --mount=type=bind: both rw and ro"));
                }
                Mount::Other(RunMount {
                    target,
                    kind: RunMountKind::Bind {
                        from: from("RUN --mount=type=bind")?.unwrap_or(CopyFrom::Context),
                        source,
                        rw: flag("rw")?,
                    },
                })
            }
        })
    }

    /// A mount target other than `/`.
    fn mount_target(&self, span: Span, target: &str) -> Result<String, Diagnostic> {
        if target == "/" {
            return Err(self
                .diag(span, "RUN --mount cannot be mounted on `/`")
                .with_hint("mount it on a directory such as /mnt"));
        }
        Ok(target.to_string())
    }
}
