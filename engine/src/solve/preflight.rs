//! Checks of a whole plan before any step runs: every context source resolves, every required
//! secret and SSH agent was given, every remote `ADD` is pinned under `--locked`.

use super::{at_step, BuildError, BuildOptions};
use crate::context::{Context, ContextError};
use crate::plan::{self, CopyFrom, Plan, StepKind};

/// A required secret or SSH agent that was not given fails the build before anything runs.
pub(crate) fn check_secrets(plan: &Plan, opts: &BuildOptions) -> Result<(), BuildError> {
    for &s in &plan.order {
        for (i, step) in plan.stages[s].steps.iter().enumerate() {
            let StepKind::Run(run) = &step.kind else {
                continue;
            };
            for m in &run.mounts {
                let missing = match &m.kind {
                    plan::RunMountKind::Secret {
                        id, required: true, ..
                    } if !opts.run.secrets.contains_key(id) => {
                        BuildError::MissingSecret { id: id.clone() }
                    }
                    plan::RunMountKind::Ssh { id, required: true }
                        if !opts.run.ssh.contains_key(id) =>
                    {
                        BuildError::MissingSsh { id: id.clone() }
                    }
                    _ => continue,
                };
                return Err(at_step(&opts.dockerfile, s, i, step, missing));
            }
        }
    }
    Ok(())
}

/// Under `--locked`, an ADD URL or git ref without a pin fails the build before anything runs.
pub(crate) fn check_pins(plan: &Plan, opts: &BuildOptions) -> Result<(), BuildError> {
    for &s in &plan.order {
        for (i, step) in plan.stages[s].steps.iter().enumerate() {
            let StepKind::Copy(spec) = &step.kind else {
                continue;
            };
            for src in &spec.sources {
                let r = match src {
                    plan::CopySource::Url(u) => crate::fetch::RemoteRef::Url(u),
                    plan::CopySource::Git(g) => crate::fetch::RemoteRef::Git(g),
                    _ => continue,
                };
                if let Some(e) = crate::fetch::missing_pin(r, &opts.fetch) {
                    return Err(at_step(&opts.dockerfile, s, i, step, e.into()));
                }
            }
        }
    }
    Ok(())
}

/// A COPY/ADD source that cannot be resolved, found before anything is built.
#[derive(Debug)]
pub struct SourceProblem {
    pub span: crate::frontend::Span,
    pub instruction: String,
    pub error: ContextError,
}

/// Resolves the context sources of every COPY/ADD the build will run, so a missing source or one
/// outside the context fails before any step executes. The results are memoised in `ctx` and
/// reused by the build.
pub fn check_sources(plan: &Plan, ctx: &Context) -> Result<(), Box<SourceProblem>> {
    for &s in &plan.order {
        for step in &plan.stages[s].steps {
            let StepKind::Copy(spec) = &step.kind else {
                continue;
            };
            if !matches!(spec.from, CopyFrom::Context) {
                continue;
            }
            for src in &spec.sources {
                if let plan::CopySource::Path(p) = src {
                    ctx.prefetch_with(std::slice::from_ref(p), &spec.excludes, spec.parents)
                        .map_err(|error| {
                            Box::new(SourceProblem {
                                span: step.span,
                                instruction: step.text.clone(),
                                error,
                            })
                        })?;
                }
            }
        }
    }
    Ok(())
}
