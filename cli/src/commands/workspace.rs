//! `strata build --all`: every image of a workspace (`strata.toml`) in one process and one store.
//!
//! ```toml
//! [defaults]                       # any image field
//! build_args = { BASE = "oci-layout://base:1" }
//!
//! [[image]]
//! name = "{dir}"                   # `{dir}`: the context directory's name (for globbed contexts)
//! context = "apps/*"               # a directory, or a glob matching several
//! dockerfile = "Dockerfile"        # relative to the context
//! tags = ["{name}:latest"]
//! outputs = ["type=oci,dest=out/{name}"]
//! target = "prod"
//! ```
//!
//! Images build in parallel (`-j`); a step shared by several images (same key) runs once — the
//! others wait for it and find it cached. The summary says, per image, its digest, the digest
//! its first tag had before, whether it changed, and how many steps ran.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use strata_engine::context::glob_match;
use strata_engine::export::ImageName;

use super::build::{build_image, process_env, BuildRequest};
use crate::args::BuildArgs;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSpec {
    name: Option<String>,
    context: Option<String>,
    dockerfile: Option<String>,
    tags: Option<Vec<String>>,
    build_args: Option<BTreeMap<String, String>>,
    target: Option<String>,
    outputs: Option<Vec<String>>,
    compression: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceFile {
    #[serde(default)]
    defaults: ImageSpec,
    #[serde(default)]
    image: Vec<ImageSpec>,
}

/// One image to build, fields resolved.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    context: PathBuf,
    dockerfile: PathBuf,
    args: BuildArgs,
}

#[derive(Debug, Serialize)]
struct Row {
    image: String,
    digest: Option<String>,
    previous: Option<String>,
    changed: Option<bool>,
    executed: usize,
    cached: usize,
    seconds: f64,
    error: Option<String>,
}

/// Directories under `base` matching a `/`-separated glob (components matched one by one).
fn expand_glob(base: &Path, pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut cur = vec![base.to_path_buf()];
    for comp in pattern.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let mut next = Vec::new();
        for dir in &cur {
            if !strata_engine::context::has_meta(comp) {
                let p = dir.join(comp);
                if p.is_dir() {
                    next.push(p);
                }
                continue;
            }
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("reading `{}`", dir.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            for n in names {
                if glob_match(comp, &n)
                    .map_err(|e| anyhow::anyhow!("bad context glob `{pattern}`: {e}"))?
                {
                    next.push(dir.join(n));
                }
            }
        }
        cur = next;
    }
    Ok(cur)
}

fn plan_images(file: &Path, cli: &BuildArgs) -> anyhow::Result<Vec<Planned>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the workspace `{}`", file.display()))?;
    let ws: WorkspaceFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("`{}`: {e}", file.display()))?;
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if ws.image.is_empty() {
        bail!("`{}` lists no [[image]]", file.display());
    }
    let d = &ws.defaults;
    let mut out: Vec<Planned> = Vec::new();
    for (i, im) in ws.image.iter().enumerate() {
        let ctx_pat = im
            .context
            .clone()
            .or(d.context.clone())
            .unwrap_or_else(|| ".".into());
        let contexts = if strata_engine::context::has_meta(&ctx_pat) {
            expand_glob(base, &ctx_pat)?
        } else {
            vec![base.join(&ctx_pat)]
        };
        if contexts.is_empty() {
            bail!(
                "`{}`: image {} context `{ctx_pat}` matches no directory",
                file.display(),
                i + 1
            );
        }
        for ctx in contexts {
            let dir = ctx
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "root".into());
            let name = im
                .name
                .clone()
                .or(d.name.clone())
                .unwrap_or_else(|| "{dir}".into())
                .replace("{dir}", &dir);
            let subst = |s: &str| s.replace("{dir}", &dir).replace("{name}", &name);
            let mut args = cli.clone();
            args.all = false;
            args.workspace = None;
            args.report.clear();
            args.shard = None;
            args.context = ctx.clone();
            let dockerfile = ctx.join(
                im.dockerfile
                    .clone()
                    .or(d.dockerfile.clone())
                    .unwrap_or_else(|| "Dockerfile".into()),
            );
            args.file = Some(dockerfile.clone());
            args.tags = im
                .tags
                .clone()
                .or(d.tags.clone())
                .unwrap_or_default()
                .iter()
                .map(|t| subst(t))
                .collect();
            args.outputs = im
                .outputs
                .clone()
                .or(d.outputs.clone())
                .unwrap_or_default()
                .iter()
                .map(|o| {
                    // Relative output paths are relative to the workspace file.
                    let o = subst(o);
                    match o.split_once("dest=") {
                        Some((pre, dest)) if !dest.starts_with('/') => {
                            format!("{pre}dest={}", base.join(dest).display())
                        }
                        _ => o,
                    }
                })
                .collect();
            let mut ba: BTreeMap<String, String> = d.build_args.clone().unwrap_or_default();
            ba.extend(im.build_args.clone().unwrap_or_default());
            // Command-line --build-arg wins over the file.
            let mut list: Vec<String> = ba
                .into_iter()
                .map(|(k, v)| format!("{k}={}", subst(&v)))
                .collect();
            list.extend(cli.build_args.iter().cloned());
            args.build_args = list;
            if let Some(t) = im.target.clone().or(d.target.clone()) {
                args.target = Some(t);
            }
            if let Some(c) = im.compression.clone().or(d.compression.clone()) {
                args.compression = c;
            }
            if out.iter().any(|p| p.name == name) {
                bail!("`{}`: two images are named `{name}`", file.display());
            }
            out.push(Planned {
                name,
                context: ctx,
                dockerfile,
                args,
            });
        }
    }
    if !cli.images.is_empty() {
        for want in &cli.images {
            if !out.iter().any(|p| &p.name == want) {
                let names: Vec<&str> = out.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "no image `{want}` in the workspace (images: {})",
                    names.join(", ")
                );
            }
        }
        out.retain(|p| cli.images.contains(&p.name));
    }
    if let Some(spec) = &cli.shard {
        let (i, n) = parse_shard(spec)?;
        out.retain(|p| shard_of(&p.name, n) == i);
    }
    Ok(out)
}

/// `I/N` with 1 ≤ I ≤ N.
fn parse_shard(spec: &str) -> anyhow::Result<(u64, u64)> {
    let bad = || {
        anyhow::anyhow!(
            "--shard `{spec}`: expected I/N with 1 ≤ I ≤ N (e.g. --shard 2/4)\nhint: run N builds, with --shard 1/N … N/N"
        )
    };
    let (i, n) = spec.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The shard (1-based) an image belongs to: sha256 of its name, first 8 bytes as a
/// little-endian integer, modulo `n`. Depends on the name only, so every machine agrees and an
/// image stays on its shard when others are added.
fn shard_of(name: &str, n: u64) -> u64 {
    let d = strata_cache::Digest::of(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_le_bytes(b) % n + 1
}

pub fn run(store_dir: &Path, cli: BuildArgs) -> anyhow::Result<i32> {
    let file = match &cli.workspace {
        Some(f) => f.clone(),
        None => PathBuf::from("strata.toml"),
    };
    if !file.is_file() {
        bail!("no workspace file `{}`\nhint: run in the folder that holds strata.toml, or pass --workspace FILE", file.display());
    }
    let report = match cli.report.as_slice() {
        [] => None,
        [f, path] if f == "json" || f == "markdown" => Some((f.clone(), PathBuf::from(path))),
        _ => bail!("--report takes FORMAT FILE, with FORMAT json or markdown"),
    };
    let images = plan_images(&file, &cli)?;
    let store = super::open_store(store_dir)?;
    let jobs = cli.jobs.unwrap_or_else(super::cpus).max(1);
    let previous: Vec<Option<String>> = images
        .iter()
        .map(|p| {
            let t = p.args.tags.first()?;
            let full = ImageName::parse(t).ok()?.full();
            store
                .index()
                .get_tag(&full)
                .ok()
                .flatten()
                .map(|r| r.manifest.to_string())
        })
        .collect();
    let rows: Mutex<Vec<(usize, Row)>> = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..jobs.min(images.len()) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(p) = images.get(i) else { break };
                let r = build_image(&BuildRequest {
                    store_dir,
                    context_dir: &p.context,
                    dockerfile: &p.dockerfile,
                    env: &process_env,
                    args: &p.args,
                    store: Some(&store),
                    label: Some(&p.name),
                });
                let row = match r {
                    Ok(b) => Row {
                        image: p.name.clone(),
                        changed: Some(previous[i].as_deref() != Some(b.manifest_digest.as_str())),
                        digest: Some(b.manifest_digest),
                        previous: previous[i].clone(),
                        executed: b.executed,
                        cached: b.cached,
                        seconds: b.seconds,
                        error: None,
                    },
                    Err(e) => {
                        eprintln!("[{}] error: {}", p.name, crate::render(&e));
                        Row {
                            image: p.name.clone(),
                            digest: None,
                            previous: previous[i].clone(),
                            changed: None,
                            executed: 0,
                            cached: 0,
                            seconds: 0.0,
                            error: Some(crate::render(&e)),
                        }
                    }
                };
                rows.lock().unwrap().push((i, row));
            });
        }
    });
    let mut rows = rows.into_inner().unwrap();
    rows.sort_by_key(|(i, _)| *i);
    let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    let changed = rows.iter().filter(|r| r.changed == Some(true)).count();
    let mut summary = format!(
        "{:<24} {:<20} {:>8} {:>8} {:>8} {:>8}\n",
        "image", "digest", "changed", "executed", "cached", "time s"
    );
    for r in &rows {
        let d = r
            .digest
            .as_deref()
            .map(|d| &d[..d.len().min(19)])
            .unwrap_or("FAILED");
        let ch = match r.changed {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(
            summary,
            "{:<24} {:<20} {:>8} {:>8} {:>8} {:>8.2}",
            r.image, d, ch, r.executed, r.cached, r.seconds
        );
    }
    let _ = write!(
        summary,
        "{} images: {changed} changed, {} unchanged, {failed} failed, in {:.2}s",
        rows.len(),
        rows.len() - changed - failed,
        started.elapsed().as_secs_f64()
    );
    eprintln!("{summary}");
    for r in &rows {
        if let Some(d) = &r.digest {
            println!("{}\t{d}", r.image);
        }
    }
    if let Some((fmt, path)) = report {
        let body = if fmt == "json" {
            serde_json::to_string_pretty(&serde_json::json!({ "images": rows }))?
        } else {
            let mut m = String::from("| image | digest | previous | changed | executed | cached | time (s) |\n|---|---|---|---|---|---|---|\n");
            for r in &rows {
                let _ = writeln!(
                    m,
                    "| {} | `{}` | `{}` | {} | {} | {} | {:.2} |",
                    r.image,
                    r.digest.as_deref().unwrap_or("failed"),
                    r.previous.as_deref().unwrap_or("-"),
                    r.changed
                        .map(|c| if c { "yes" } else { "no" })
                        .unwrap_or("-"),
                    r.executed,
                    r.cached,
                    r.seconds
                );
            }
            m
        };
        std::fs::write(&path, body)
            .with_context(|| format!("writing the report `{}`", path.display()))?;
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_every_name_once_and_stably() {
        let names: Vec<String> = (0..200).map(|i| format!("app{i:04}")).collect();
        let mut counts = [0usize; 4];
        for n in &names {
            let s = shard_of(n, 4);
            assert!((1..=4).contains(&s));
            assert_eq!(s, shard_of(n, 4), "deterministic");
            counts[(s - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 25), "{counts:?}");
        // Pinned: a change to the split moves images between machines.
        // (sha256("app0000")[..8] as LE u64) % 4 + 1, computed independently with Python.
        assert_eq!(shard_of("app0000", 4), 4);
        assert_eq!(shard_of("api", 4), 1);
        assert_eq!(shard_of("web", 1), 1);
        assert!(parse_shard("0/2").is_err() && parse_shard("3/2").is_err());
        assert!(parse_shard("1/0").is_err() && parse_shard("x").is_err());
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
    }
}
