//! `strata build --all`: every image of a workspace (`strata.toml`, [`super::workspace_file`])
//! in one process and one store.
//!
//! Images build in parallel (`-j`); a step shared by several images (same key) runs once — the
//! others wait for it and find it cached. The summary says, per image, its digest, the digest
//! its first tag had before, whether it changed, and how many steps ran.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use serde::Serialize;
use strata_engine::export::ImageName;
use strata_engine::lock::LockMode;
use strata_engine::remote_cache::RemoteSteps;
use strata_engine::session::build::open_lock;
use strata_engine::session::lock::workspace_lock_dir;
use strata_engine::session::{cache, BuildRequest, CacheSource, LockUse, Output};

use super::common::{self, process_env};
use super::workspace_file::{self, WorkspaceImage};
use super::Globals;
use crate::args::{compression_parser, BuildArgs};
use crate::progress::Reporter;

#[derive(Debug, Serialize)]
struct Row {
    image: String,
    digest: Option<String>,
    previous: Option<String>,
    changed: Option<bool>,
    executed: usize,
    cached: usize,
    /// RUN steps reused by read set.
    reused: usize,
    seconds: f64,
    error: Option<String>,
    /// Each platform's image, when the image was built for several (`platforms = [...]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<PlatformRow>,
}

/// One platform of a multi-platform image: its image manifest.
#[derive(Debug, Serialize)]
struct PlatformRow {
    platform: String,
    digest: String,
}

/// The request of one workspace image: the command line's flags with the image's fields, the
/// workspace's lock and imported caches (its `--cache-to` is exported once, after every image).
fn image_request(
    cli: &BuildArgs,
    p: &WorkspaceImage,
    lock: &Arc<strata_engine::lock::LockedImages>,
    remote: &Option<Arc<dyn RemoteSteps>>,
) -> anyhow::Result<BuildRequest> {
    let mut args = cli.clone();
    args.context = p.context.clone();
    args.file = Some(p.dockerfile.clone());
    args.tags = p.tags.clone();
    args.build_args = p.build_args.clone();
    if let Some(t) = &p.target {
        args.target = Some(t.clone());
    }
    args.outputs = p
        .outputs
        .iter()
        .map(|o| o.parse::<Output>())
        .collect::<anyhow::Result<_>>()?;
    if let (None, Some(ps)) = (&args.platform, &p.platforms) {
        args.platform = Some(ps.join(","));
    }
    if let Some(c) = &p.compression {
        args.compression =
            compression_parser(c).map_err(|e| anyhow::anyhow!("--compression: {e}"))?;
    }
    let mut req = common::build_request(&args, &process_env)?;
    req.lock = LockUse::Shared(lock.clone());
    req.cache_from = CacheSource::Imported(remote.clone());
    req.cache_to = Vec::new();
    Ok(req)
}

pub fn run(g: &Globals, cli: BuildArgs) -> anyhow::Result<i32> {
    let file = workspace_file::file_of(cli.workspace.as_ref())?;
    let report = match cli.report.as_slice() {
        [] => None,
        [f, path] if f == "json" || f == "markdown" => Some((f.clone(), PathBuf::from(path))),
        _ => bail!("--report takes FORMAT FILE, with FORMAT json or markdown"),
    };
    let images = workspace_file::read(&file, &cli.build_args)?;
    let images = workspace_file::select(images, &cli.images, cli.shard)?;
    // One strata.lock for the workspace, beside strata.toml.
    let lock_dir = workspace_lock_dir(&file)?;
    let mode = if cli.locked {
        LockMode::Locked
    } else {
        LockMode::Use
    };
    let lock = open_lock(
        &lock_dir,
        strata_engine::image::LocalImages::shared(&lock_dir),
        mode,
    )?;
    let cache_targets = cache::check_targets(&cli.cache_to)?;
    let session = g.session()?;
    let store = session.store();
    let remote = session.import_caches(&cli.cache_from)?;
    let jobs = cli.jobs.unwrap_or_else(common::cpus).max(1);
    let previous: Vec<Option<String>> = images
        .iter()
        .map(|p| {
            let t = p.tags.first()?;
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
    let all_steps = Mutex::new(Vec::new());
    let all_readsets = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..jobs.min(images.len()) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(p) = images.get(i) else { break };
                let r = image_request(&cli, p, &lock, &remote).and_then(|req| {
                    let reporter =
                        Reporter::new(cli.progress, cli.explain).with_label(Some(&p.name));
                    let b = session.build(&req, &reporter)?;
                    common::report_pushes(&b.outputs);
                    reporter.finish(b.executed, b.cached, b.reused, b.elapsed);
                    Ok(b)
                });
                let row = match r {
                    Ok(b) => {
                        all_steps.lock().unwrap().extend(b.steps.iter().cloned());
                        all_readsets
                            .lock()
                            .unwrap()
                            .extend(b.readsets.iter().cloned());
                        Row {
                            image: p.name.clone(),
                            changed: Some(
                                previous[i].as_deref() != Some(b.digest().to_string().as_str()),
                            ),
                            digest: Some(b.digest().to_string()),
                            previous: previous[i].clone(),
                            executed: b.executed,
                            cached: b.cached,
                            reused: b.reused,
                            seconds: b.elapsed.as_secs_f64(),
                            error: None,
                            platforms: if b.images.len() > 1 {
                                b.images
                                    .iter()
                                    .map(|(p, d)| PlatformRow {
                                        platform: p.to_string(),
                                        digest: d.to_string(),
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            },
                        }
                    }
                    Err(e) => {
                        eprintln!("[{}] error: {}", p.name, crate::render(&e));
                        Row {
                            image: p.name.clone(),
                            digest: None,
                            previous: previous[i].clone(),
                            changed: None,
                            executed: 0,
                            cached: 0,
                            reused: 0,
                            seconds: 0.0,
                            error: Some(crate::render(&e)),
                            platforms: Vec::new(),
                        }
                    }
                };
                rows.lock().unwrap().push((i, row));
            });
        }
    });
    let mut rows = rows.into_inner().unwrap();
    session.save_lock(&lock)?;
    if !cache_targets.is_empty() {
        let steps = all_steps.into_inner().unwrap();
        let readsets = all_readsets.into_inner().unwrap();
        session.export_caches(&cache_targets, &steps, &readsets)?;
    }
    rows.sort_by_key(|(i, _)| *i);
    let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    let changed = rows.iter().filter(|r| r.changed == Some(true)).count();
    let mut summary = format!(
        "{:<24} {:<20} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "image", "digest", "changed", "executed", "cached", "reused", "time s"
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
            "{:<24} {:<20} {:>8} {:>8} {:>8} {:>8} {:>8.2}",
            r.image, d, ch, r.executed, r.cached, r.reused, r.seconds
        );
        for p in &r.platforms {
            let _ = writeln!(
                summary,
                "  {:<22} {:<20}",
                p.platform,
                &p.digest[..p.digest.len().min(19)]
            );
        }
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
            let mut m = String::from("| image | digest | previous | changed | executed | cached | reused | time (s) |\n|---|---|---|---|---|---|---|---|\n");
            for r in &rows {
                let _ = writeln!(
                    m,
                    "| {} | `{}` | `{}` | {} | {} | {} | {} | {:.2} |",
                    r.image,
                    r.digest.as_deref().unwrap_or("failed"),
                    r.previous.as_deref().unwrap_or("-"),
                    r.changed
                        .map(|c| if c { "yes" } else { "no" })
                        .unwrap_or("-"),
                    r.executed,
                    r.cached,
                    r.reused,
                    r.seconds
                );
                for p in &r.platforms {
                    let _ = writeln!(
                        m,
                        "| {} {} | `{}` | - | - | - | - | - | - |",
                        r.image, p.platform, p.digest
                    );
                }
            }
            m
        };
        std::fs::write(&path, body)
            .with_context(|| format!("writing the report `{}`", path.display()))?;
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
