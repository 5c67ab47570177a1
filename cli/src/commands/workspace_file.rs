//! `strata.toml`, the workspace file of `strata build --all` and `strata lock --all`.
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
//! platforms = ["linux/amd64", "linux/arm64"]   # one index over both (docs/platforms.md)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use strata_engine::context::glob_match;

use crate::args::Shard;

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
    platforms: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceFile {
    #[serde(default)]
    defaults: ImageSpec,
    #[serde(default)]
    image: Vec<ImageSpec>,
}

/// One image of the workspace, its fields resolved (`{dir}`, `{name}` substituted, outputs
/// relative to the workspace file). Outputs and compression are kept as text: a bad one fails
/// that image's build, not the workspace's.
#[derive(Debug, Clone)]
pub(crate) struct WorkspaceImage {
    pub name: String,
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub tags: Vec<String>,
    pub outputs: Vec<String>,
    /// The file's `KEY=VALUE`s (defaults, then the image's), then the command line's.
    pub build_args: Vec<String>,
    pub target: Option<String>,
    pub compression: Option<String>,
    /// The platforms to build (`--platform` on the command line wins), as written: a bad one
    /// fails that image's build.
    pub platforms: Option<Vec<String>>,
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

/// The images `file` lists, in order; `cli_build_args` (`--build-arg`) win over the file's.
pub(crate) fn read(file: &Path, cli_build_args: &[String]) -> anyhow::Result<Vec<WorkspaceImage>> {
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
    let mut out: Vec<WorkspaceImage> = Vec::new();
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
            let dockerfile = ctx.join(
                im.dockerfile
                    .clone()
                    .or(d.dockerfile.clone())
                    .unwrap_or_else(|| "Dockerfile".into()),
            );
            let tags = im
                .tags
                .clone()
                .or(d.tags.clone())
                .unwrap_or_default()
                .iter()
                .map(|t| subst(t))
                .collect();
            let outputs = im
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
            let mut build_args: Vec<String> = ba
                .into_iter()
                .map(|(k, v)| format!("{k}={}", subst(&v)))
                .collect();
            build_args.extend(cli_build_args.iter().cloned());
            let target = im.target.clone().or(d.target.clone());
            let compression = im.compression.clone().or(d.compression.clone());
            let platforms = im.platforms.clone().or(d.platforms.clone());
            if out.iter().any(|p| p.name == name) {
                bail!("`{}`: two images are named `{name}`", file.display());
            }
            out.push(WorkspaceImage {
                name,
                context: ctx,
                dockerfile,
                tags,
                outputs,
                build_args,
                target,
                compression,
                platforms,
            });
        }
    }
    Ok(out)
}

/// Only the images named `names` (all when none is given), and of those only `shard`'s.
pub(crate) fn select(
    mut images: Vec<WorkspaceImage>,
    names: &[String],
    shard: Option<Shard>,
) -> anyhow::Result<Vec<WorkspaceImage>> {
    if !names.is_empty() {
        for want in names {
            if !images.iter().any(|p| &p.name == want) {
                let all: Vec<&str> = images.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "no image `{want}` in the workspace (images: {})",
                    all.join(", ")
                );
            }
        }
        images.retain(|p| names.contains(&p.name));
    }
    if let Some(shard) = shard {
        images.retain(|p| shard.holds(&p.name));
    }
    Ok(images)
}

/// The workspace file of `--workspace FILE`, else `strata.toml`; it must exist.
pub(crate) fn file_of(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    let file = flag
        .cloned()
        .unwrap_or_else(|| PathBuf::from("strata.toml"));
    if !file.is_file() {
        bail!("no workspace file `{}`\nhint: run in the folder that holds strata.toml, or pass --workspace FILE", file.display());
    }
    Ok(file)
}
