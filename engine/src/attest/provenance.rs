//! The SLSA provenance v1 predicate (https://slsa.dev/spec/v1.0/provenance) of a strata build.
//!
//! Everything in it is an input of the build or derived from one, never an observation of the
//! run: no host name, no start or end time, no invocation id, no store or context path. Two
//! builds of the same inputs write the same bytes, so the attested index reproduces
//! (docs/attestations.md says field by field where each value comes from). BuildKit's
//! provenance cannot: it records `startedOn`/`finishedOn`, an invocation id and the builder's
//! host details.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Map, Value};
use strata_cache::Digest;

use super::Statement;
use crate::image::{BaseImage, Platform};
use crate::layer::Compression;
use crate::lock::LockedImages;
use crate::plan::key::{Key, KEY_VERSION};
use crate::plan::{Base, CopyFrom, CopySource, Plan, RunMountKind, StepKind};

/// `predicateType` of SLSA provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// `buildDefinition.buildType`: names this predicate's schema (what `externalParameters` and
/// `internalParameters` hold). Bumped when their meaning changes.
pub const BUILD_TYPE: &str = "https://strata.dev/build/v1";
/// `runDetails.builder.id`.
pub const BUILDER_ID: &str = "https://strata.dev/builder";

/// How much the provenance says (`--provenance=mode=min|max`, as buildx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvenanceMode {
    /// The parameters and the resolved dependencies.
    #[default]
    Min,
    /// Also the step DAG: every step's instruction and cache key.
    Max,
}

impl ProvenanceMode {
    /// Parses a `--provenance` value: `true`/`1`/`mode=min` → min, `mode=max` → max,
    /// `false`/`0` → none. An empty value (bare `--provenance`) is min.
    pub fn parse_flag(v: &str) -> Result<Option<ProvenanceMode>, String> {
        let mut mode = Some(ProvenanceMode::Min);
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "true" | "1" => {}
                "false" | "0" => mode = None,
                "mode=min" => mode = Some(ProvenanceMode::Min),
                "mode=max" => mode = Some(ProvenanceMode::Max),
                other => {
                    return Err(format!(
                        "unknown --provenance value `{other}` (expected mode=min, mode=max, true or false)"
                    ))
                }
            }
        }
        Ok(mode)
    }
}

/// What a build's provenance is made of. The caller takes each from what the build resolved,
/// never from the host.
pub struct ProvenanceInputs<'a> {
    pub mode: ProvenanceMode,
    pub plan: &'a Plan,
    /// The Dockerfile's path relative to the context (`Dockerfile`, `app/Dockerfile`).
    pub dockerfile: &'a str,
    /// sha256 of the Dockerfile's bytes.
    pub dockerfile_digest: Digest,
    pub target: Option<&'a str>,
    /// `--build-arg`s as given. Secrets are never build args: `--secret` values reach RUN
    /// steps only and nothing here sees them.
    pub build_args: &'a BTreeMap<String, String>,
    pub platform: &'a Platform,
    pub compression: Compression,
    pub source_date_epoch: u64,
    /// The digest of the context as the build read it ([`context_digest`]); `None` when no
    /// step read the context.
    pub context: Option<Digest>,
    /// Where ADD URLs and git refs were pinned (`strata.lock`).
    pub lock: Option<&'a LockedImages>,
    /// Every step's key, by (stage, step).
    pub step_keys: &'a BTreeMap<(usize, usize), Key>,
}

/// The Dockerfile path recorded in the provenance: relative to the context when it is inside
/// it, else its file name (an absolute path would name the host's directories).
pub fn dockerfile_path(context_dir: &Path, dockerfile: &Path) -> String {
    let abs = std::fs::canonicalize(dockerfile).unwrap_or_else(|_| dockerfile.to_path_buf());
    match abs.strip_prefix(context_dir) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into()),
    }
}

/// One file of the context a step read: its path from the context root, type (`f`, `d`,
/// `l`), normalised mode and content (a file's BLAKE3 as the solver computed it for the step
/// key, a link's target).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContextFile {
    pub path: String,
    pub kind: &'static str,
    pub mode: u32,
    pub content: String,
}

/// The digest of the canonical tree of the context files the build read: sha256 over one
/// line per file, sorted by path, `KIND MODE CONTENT PATH\0`. What the build did not read
/// (ignored files, files no COPY names) is not in it, so it changes exactly when an input of
/// the image does.
pub fn context_digest(files: &BTreeSet<ContextFile>) -> Option<Digest> {
    if files.is_empty() {
        return None;
    }
    let mut text = Vec::new();
    for f in files {
        text.extend(format!("{} {:o} {} {}\0", f.kind, f.mode, f.content, f.path).as_bytes());
    }
    Some(Digest::of(&text))
}

/// A base or `--from` image as a resource descriptor: the reference as written, the digest
/// `strata.lock` pins (an index or a manifest), and the platform's manifest when it differs.
fn image_dependency(img: &BaseImage) -> Value {
    let mut d = json!({
        "uri": img.reference,
        "digest": { "sha256": img.pinned.hex() },
    });
    if img.manifest_digest != img.pinned {
        d["annotations"] = json!({ "manifestDigest": img.manifest_digest.to_string() });
    }
    d
}

/// Every input the build resolved to a digest: images, ADD URLs and git commits, and the
/// context. Sorted by URI, duplicates dropped.
fn resolved_dependencies(inp: &ProvenanceInputs<'_>) -> Vec<Value> {
    let mut deps: BTreeMap<String, Value> = BTreeMap::new();
    let mut add = |v: Value| {
        let key = crate::image::canonical_json(&v);
        deps.insert(String::from_utf8_lossy(&key).into_owned(), v);
    };
    for &s in &inp.plan.order {
        let stage = &inp.plan.stages[s];
        if let Base::Image(img) = &stage.base {
            add(image_dependency(img));
        }
        for step in &stage.steps {
            match &step.kind {
                StepKind::Copy(spec) => {
                    if let CopyFrom::Image(img) = &spec.from {
                        add(image_dependency(img));
                    }
                    for src in &spec.sources {
                        match src {
                            CopySource::Url(u) => {
                                let pin = inp.lock.and_then(|l| l.url_pin(&u.url)).or(u.checksum);
                                let mut d = json!({ "uri": u.url });
                                if let Some(p) = pin {
                                    d["digest"] = json!({ "sha256": p.hex() });
                                }
                                add(d);
                            }
                            CopySource::Git(g) => {
                                let commit = inp
                                    .lock
                                    .and_then(|l| l.git_pin(&g.lock_key()))
                                    .or_else(|| g.checksum.clone().filter(|c| c.len() == 40));
                                let mut d = json!({ "uri": g.lock_key() });
                                if let Some(c) = commit {
                                    d["digest"] = json!({ "gitCommit": c });
                                }
                                add(d);
                            }
                            CopySource::Path(_) | CopySource::Heredoc { .. } => {}
                        }
                    }
                }
                StepKind::Run(r) => {
                    for m in &r.mounts {
                        if let RunMountKind::Bind {
                            from: CopyFrom::Image(img),
                            ..
                        } = &m.kind
                        {
                            add(image_dependency(img));
                        }
                    }
                    for c in &r.cache_mounts {
                        if let Some((CopyFrom::Image(img), _)) = &c.from {
                            add(image_dependency(img));
                        }
                    }
                }
                StepKind::Config { .. } | StepKind::Workdir(_) => {}
            }
        }
    }
    let mut out: Vec<Value> = deps.into_values().collect();
    if let Some(c) = inp.context {
        // The context last: it has no URI of its own, only a name.
        out.push(json!({
            "name": "context",
            "digest": { "sha256": c.hex() },
        }));
    }
    out
}

/// `max` mode: the stages that were built, each with what it stands on, the stages it uses
/// and its steps (instruction as written, step key).
fn step_dag(inp: &ProvenanceInputs<'_>) -> Value {
    let stages: Vec<Value> = inp
        .plan
        .order
        .iter()
        .map(|&s| {
            let stage = &inp.plan.stages[s];
            let base = match &stage.base {
                Base::Scratch => json!("scratch"),
                Base::Stage(i) => json!(format!("stage:{i}")),
                Base::Image(img) => json!(img.reference),
            };
            let steps: Vec<Value> = stage
                .steps
                .iter()
                .enumerate()
                .map(|(i, st)| {
                    let mut v = json!({ "instruction": st.text });
                    if let Some(k) = inp.step_keys.get(&(s, i)) {
                        v["key"] = json!(hex::encode(k));
                    }
                    v
                })
                .collect();
            let mut v = json!({
                "index": s,
                "base": base,
                "dependsOn": stage.deps,
                "steps": steps,
            });
            if let Some(n) = &stage.name {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    json!({ "stages": stages, "target": inp.plan.target })
}

/// The provenance statement of a build.
pub fn provenance(inp: &ProvenanceInputs<'_>) -> Statement {
    let mut external = Map::new();
    external.insert(
        "configSource".into(),
        json!({
            "path": inp.dockerfile,
            "digest": { "sha256": inp.dockerfile_digest.hex() },
        }),
    );
    if let Some(t) = inp.target {
        external.insert("target".into(), json!(t));
    }
    external.insert("buildArgs".into(), json!(inp.build_args));
    external.insert("platforms".into(), json!([inp.platform.to_string()]));
    external.insert("sourceDateEpoch".into(), json!(inp.source_date_epoch));
    let mut internal = json!({
        "strataVersion": env!("CARGO_PKG_VERSION"),
        "keyVersion": KEY_VERSION,
        "compression": inp.compression.id(),
    });
    if inp.mode == ProvenanceMode::Max {
        internal["buildConfig"] = step_dag(inp);
    }
    Statement {
        predicate_type: PREDICATE_TYPE.into(),
        predicate: json!({
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": Value::Object(external),
                "internalParameters": internal,
                "resolvedDependencies": resolved_dependencies(inp),
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": { "strata": env!("CARGO_PKG_VERSION") },
                },
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_parse_as_buildx_spells_them() {
        assert_eq!(
            ProvenanceMode::parse_flag("").unwrap(),
            Some(ProvenanceMode::Min)
        );
        assert_eq!(
            ProvenanceMode::parse_flag("true").unwrap(),
            Some(ProvenanceMode::Min)
        );
        assert_eq!(
            ProvenanceMode::parse_flag("mode=max").unwrap(),
            Some(ProvenanceMode::Max)
        );
        assert_eq!(ProvenanceMode::parse_flag("false").unwrap(), None);
        assert!(ProvenanceMode::parse_flag("mode=full")
            .unwrap_err()
            .contains("mode=full"));
    }

    #[test]
    fn context_digest_depends_on_every_field_and_not_on_order() {
        let f = |path: &str, content: &str| ContextFile {
            path: path.into(),
            kind: "f",
            mode: 0o644,
            content: content.into(),
        };
        let a: BTreeSet<_> = [f("a", "1"), f("b", "2")].into_iter().collect();
        let b: BTreeSet<_> = [f("b", "2"), f("a", "1")].into_iter().collect();
        assert_eq!(context_digest(&a), context_digest(&b));
        let c: BTreeSet<_> = [f("a", "1"), f("b", "3")].into_iter().collect();
        assert_ne!(context_digest(&a), context_digest(&c));
        assert_eq!(context_digest(&BTreeSet::new()), None);
    }
}
