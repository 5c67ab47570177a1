//! What can go wrong running a plan.

use std::path::PathBuf;

use strata_cache::{Digest, StoreError};

use super::layer_tree;
use crate::context::ContextError;
use crate::image;
use crate::layer::LayerError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Rootfs(#[from] layer_tree::RootfsError),
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` changed while it was being read; run the build again", path.display())]
    ContextChanged { path: PathBuf },
    #[error("--chown={spec}: {message}")]
    Chown { spec: String, message: String },
    #[error("WORKDIR {path}: {message}")]
    Workdir { path: String, message: String },
    #[error("COPY --from source `{path}` not found in the source stage")]
    FromSourceMissing { path: String },
    #[error(
        "the destination `{dest}` must be a directory ending in `/` (or an existing \
         directory): {sources} sources, after wildcard expansion, would be copied to it\n\
         hint: write `{dest}/` to copy them into a directory"
    )]
    CopyDestNotDir { dest: String, sources: usize },
    #[error("ADD `{}`: {message}", path.display())]
    Archive { path: PathBuf, message: String },
    #[error("base image blob {digest} from {origin}: {source}")]
    BaseBlob {
        digest: Digest,
        origin: String,
        /// Boxed: it would make every `BuildError` larger.
        source: Box<image::BlobFetchError>,
    },
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    /// Indexing a layer for read-set reuse failed (docs/read-set.md).
    #[error("read set: {0}")]
    ReadSet(String),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Capture(#[from] crate::sandbox::capture::CaptureError),
    #[error("RUN failed: `{command}` {status}{}{}", output_tail(.output), network_hint(*.without_network))]
    RunFailed {
        command: String,
        status: String,
        /// The last lines of its combined stdout and stderr (see `sandbox::exec::Tail`).
        output: String,
        /// It ran without network: the error ends with how to allow it.
        without_network: bool,
    },
    #[error("RUN --mount=type=secret,id={id}: no secret `{id}` was given to the build\nhint: pass it with `strata build --secret id={id},src=FILE` (or `env=VAR`), or mark the mount optional by leaving out `required`")]
    MissingSecret { id: String },
    #[error("RUN --mount=type=ssh,id={id}: no SSH agent `{id}` was given to the build\nhint: pass it with `strata build --ssh {id}=SOCKET` (`--ssh default` forwards $SSH_AUTH_SOCK), or leave out `required`")]
    MissingSsh { id: String },
    #[error("RUN --mount=type=secret,id={id},env=…: the secret is not UTF-8 text, so it cannot be an environment variable\nhint: mount it as a file (leave out env=)")]
    SecretNotText { id: String },
    /// A RUN failed while the file system of its upper dir (the store's) was full: the
    /// command's own message is rarely clear about it (`head: standard output: I/O error`).
    #[error(
        "RUN failed: `{command}` {status}, and the store's file system is full: {detail}{}\n\
         hint: free space there (`strata gc --keep-storage SIZE` removes cached layers), or \
         use a store on a larger file system (--store)",
        output_tail(.output)
    )]
    RunDiskFull {
        command: String,
        status: String,
        /// Which path, and how much is free.
        detail: String,
        output: String,
    },
    #[error(
        "layer {digest} is missing from the store (removed while the build ran, e.g. by \
         `strata fsck --repair` in another process)\nhint: run the build again; it rebuilds \
         what is missing"
    )]
    LayerEvicted { digest: Digest },
    #[error("{stage_step}: {source}")]
    Step {
        stage_step: String,
        source: Box<BuildError>,
    },
}

fn output_tail(tail: &str) -> String {
    if tail.is_empty() {
        return "; it printed nothing".into();
    }
    let n = tail.lines().count();
    let mut s = format!(
        "; last {} of its output:",
        if n == 1 {
            "line".to_string()
        } else {
            format!("{n} lines")
        }
    );
    for l in tail.lines() {
        s.push_str("\n  | ");
        s.push_str(l);
    }
    s
}

/// The end of the error of a RUN that failed without network: many failures are that (a
/// download, a package index), and the sandbox does not say so itself.
fn network_hint(without: bool) -> &'static str {
    if without {
        "\nhint: the step ran without network (builds are hermetic by default); if it needs \
         the network, allow it for this step with `RUN --network=host` or for the whole build \
         with `strata build --network host`"
    } else {
        ""
    }
}
