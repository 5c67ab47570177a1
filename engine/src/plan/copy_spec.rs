//! Planning `COPY` / `ADD`: flags, sources and destination expanded and checked into a
//! [`CopySpec`].

use super::*;

impl Planner<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy_spec(
        &self,
        add: bool,
        c: &CopyCmd,
        ins: &ast::Instruction,
        cfg: &ConfigState,
        args: &BTreeMap<String, Option<String>>,
        global: &dyn Fn(&str) -> Option<String>,
        names: &[Option<String>],
        index: usize,
    ) -> Result<CopySpec, Diagnostic> {
        let kw = if add { "ADD" } else { "COPY" };
        let l = |n: &str| {
            cfg.env_get(n)
                .map(str::to_string)
                .or_else(|| args.get(n).cloned().flatten())
        };
        let mut sources = Vec::new();
        for w in &c.sources {
            if let Some(name) = heredoc_name(&w.raw) {
                let Some(h) = c.heredocs.iter().find(|h| h.name == name) else {
                    return Err(self.diag(w.span, format!("heredoc `{name}` has no body")));
                };
                let content = if h.expand {
                    let c = expand_heredoc(&h.content, self.escape, &l).map_err(|e| {
                        self.diag(h.span, format!("cannot expand heredoc `{name}`: {e}"))
                    })?;
                    self.charge(h.span, c.len())?;
                    c
                } else {
                    h.content.clone()
                };
                sources.push(CopySource::Heredoc {
                    name: name.to_string(),
                    content,
                });
                continue;
            }
            let s = if c.json_form {
                w.raw.clone()
            } else {
                self.expand_path(kw, w, &l)?
            };
            if s.is_empty() {
                return Err(self.diag(
                    w.span,
                    format!("{kw} source `{}` expanded to an empty path", w.raw),
                ));
            }
            if add && crate::fetch::is_git_source(&s) {
                let mut g = crate::fetch::parse_git(&s).map_err(|e| {
                    self.diag(w.span, format!("invalid git source `{s}`: {e}"))
                        .with_hint(
                            "write REPOSITORY#REF[:SUBDIR], e.g. https://host/repo.git#v1.0:docs",
                        )
                })?;
                g.keep_git_dir = c.keep_git_dir;
                sources.push(CopySource::Git(g));
                continue;
            }
            if add && crate::fetch::is_http_url(&s) {
                crate::fetch::check_url(&s).map_err(|e| {
                    self.diag(w.span, format!("invalid URL `{s}`: {e}"))
                        .with_hint("write a full URL such as https://example.com/file.tar.gz")
                })?;
                sources.push(CopySource::Url(crate::fetch::UrlSource {
                    url: s,
                    checksum: None,
                }));
                continue;
            }
            if add && s.contains("://") {
                return Err(self
                    .diag(
                        w.span,
                        format!(
                            "ADD source `{s}`: only http://, https:// and git URLs are fetched"
                        ),
                    )
                    .with_hint(
                        "download the file into the build context and ADD or COPY it from there",
                    ));
            }
            sources.push(CopySource::Path(s));
        }
        let n_remote = sources.iter().filter(|s| s.is_remote()).count();
        if n_remote > 0 && n_remote < sources.len() {
            return Err(self
                .diag(
                    ins.span,
                    "ADD cannot mix URLs or git repositories with local sources in one instruction",
                )
                .with_hint("split it into two ADD instructions"));
        }
        if let Some(w) = &c.checksum {
            let v = self.expand(w, &l)?;
            if sources.len() != 1 || n_remote != 1 {
                return Err(self
                    .diag(
                        w.span,
                        "ADD --checksum needs exactly one source, a URL or a git repository",
                    )
                    .with_hint("give each URL its own ADD --checksum=sha256:… instruction"));
            }
            match &mut sources[0] {
                CopySource::Url(u) => {
                    let d = v
                        .strip_prefix("sha256:")
                        .and_then(|h| strata_cache::Digest::from_hex(h).ok())
                        .ok_or_else(|| {
                            self.diag(w.span, format!("invalid --checksum `{v}`"))
                                .with_hint("write --checksum=sha256:<64 lower-case hex digits> (the sha256 of the file, as `sha256sum` prints it)")
                        })?;
                    u.checksum = Some(d);
                }
                CopySource::Git(g) => {
                    let ok =
                        (4..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit());
                    if !ok {
                        return Err(self
                            .diag(w.span, format!("invalid --checksum `{v}` for a git source"))
                            .with_hint("for a git repository, --checksum is the commit id the ref must resolve to"));
                    }
                    g.checksum = Some(v.to_ascii_lowercase());
                }
                _ => unreachable!("one remote source"),
            }
        }
        let dest_raw = if c.json_form {
            c.dest.raw.clone()
        } else {
            self.expand_path(kw, &c.dest, &l)?
        };
        if dest_raw.is_empty() {
            return Err(self.diag(c.dest.span, format!("{kw} destination is empty")));
        }
        let dir_like = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let joined = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", cfg.workdir.as_deref().unwrap_or("/"))
        };
        let dest = clean_abs(&joined, dir_like);
        // Several sources, or a wildcard, with a destination not ending in `/`: whether that
        // is a file or an existing directory is known only from the parent rootfs, so it is
        // decided when the step runs (a single match is copied to the destination as a file,
        // several into an existing directory, else refused: `copy::entries`).
        let from = match &c.from {
            None => CopyFrom::Context,
            Some(w) => {
                let v = self.expand(w, &l)?;
                // BuildKit finds the stages a stage depends on before it runs any, with only the
                // global ARGs: a `--from` that needs a stage's own ARG (or ENV) is refused.
                if w.raw.contains('$') && self.expand(w, global).ok().as_deref() != Some(&v) {
                    return Err(self
                        .diag(
                            w.span,
                            format!(
                                "{kw} --from={}: variable expansion is not supported for --from \
                                 (only ARGs declared before the first FROM are expanded here)",
                                w.raw
                            ),
                        )
                        .with_hint(
                            "define a new stage with `FROM ${ARG} AS name`, using an ARG from \
                             the global scope, and copy with --from=name",
                        ));
                }
                let lv = v.to_ascii_lowercase();
                if let Some(i) = names.iter().position(|n| n.as_deref() == Some(lv.as_str())) {
                    if i == index {
                        return Err(
                            self.diag(w.span, format!("{kw} --from refers to its own stage `{v}`"))
                        );
                    }
                    if i > index {
                        return Err(self
                            .diag(
                                w.span,
                                format!(
                                    "{kw} --from refers to stage `{v}`, which is defined later"
                                ),
                            )
                            .with_hint(format!(
                                "a stage can only copy from stages above it: move stage `{v}` \
                                 before this one"
                            )));
                    }
                    CopyFrom::Stage(i)
                } else if let Ok(i) = v.parse::<usize>() {
                    if i >= index {
                        return Err(self
                            .diag(
                                w.span,
                                format!(
                                    "{kw} --from={i}: stage index must refer to an earlier stage"
                                ),
                            )
                            .with_hint(format!(
                                "this is stage {index}; stages are numbered from 0"
                            )));
                    }
                    CopyFrom::Stage(i)
                } else {
                    CopyFrom::Image(self.resolve_image(w, &v, &self.req.platform)?)
                }
            }
        };
        let chown = match &c.chown {
            Some(w) => {
                let v = self.expand(w, &l)?;
                if v.is_empty()
                    || v.starts_with(':')
                    || v.ends_with(':')
                    || v.matches(':').count() > 1
                {
                    return Err(self
                        .diag(w.span, format!("invalid --chown value `{v}`"))
                        .with_hint("use USER, USER:GROUP, UID or UID:GID"));
                }
                Some(v)
            }
            None => None,
        };
        let chmod = match &c.chmod {
            Some(w) => {
                let v = self.expand(w, &l)?;
                Some(chmod::Chmod::parse(&v).map_err(|e| {
                    self.diag(w.span, format!("invalid --chmod value `{v}`: {e}"))
                        .with_hint(
                            "use an octal mode such as 755 or 0644, or a symbolic one such as \
                             u+x,g-w or u=rwX,go=rX",
                        )
                })?)
            }
            None => None,
        };
        let mut excludes = Vec::new();
        for w in &c.excludes {
            excludes.push(self.expand(w, &l)?);
        }
        if add && c.from.is_some() {
            return Err(self.diag(ins.span, "ADD does not take --from"));
        }
        Ok(CopySpec {
            add,
            from,
            sources,
            dest,
            chown,
            chmod,
            link: c.link,
            excludes,
            parents: c.parents,
        })
    }
}
