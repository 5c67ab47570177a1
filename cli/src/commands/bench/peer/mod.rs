//! `--peer`: the bench's scenarios built by another builder too, in its own throwaway storage,
//! so the report can put its wall time beside strata's.
//! - [`buildah`]: `buildah bud --layers`.
//! - [`buildkit`]: `docker build` with BuildKit, against a private dockerd the bench starts.

pub mod buildah;
pub mod buildkit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use buildah::Buildah;
pub use buildkit::BuildKit;

/// The peer of a bench run.
pub enum PeerBuilder {
    Buildah(Buildah),
    BuildKit(BuildKit),
}

impl PeerBuilder {
    /// The peer's name in the report.
    pub fn name(&self) -> &'static str {
        match self {
            PeerBuilder::Buildah(_) => "buildah",
            PeerBuilder::BuildKit(_) => "buildkit",
        }
    }

    /// Its storage driver, for the report.
    pub fn storage(&self) -> &'static str {
        match self {
            PeerBuilder::Buildah(b) => b.driver,
            PeerBuilder::BuildKit(_) => "overlay2",
        }
    }

    /// One build of the context as it is now; its wall time.
    pub fn build(&mut self, build_args: &BTreeMap<String, String>) -> anyhow::Result<Duration> {
        match self {
            PeerBuilder::Buildah(b) => b.build(build_args),
            PeerBuilder::BuildKit(b) => b.build(build_args),
        }
    }
}

/// The first executable `name` on PATH.
pub(super) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last lines of a tool's error output.
pub(super) fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
