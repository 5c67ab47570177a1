//! Executing one RUN step.
//!
//! - [`Snapshots`] unpacks base layers once per diff_id into overlayfs lower-dir form, resolving
//!   every path inside the snapshot root (`openat2(RESOLVE_IN_ROOT)`), so a hostile layer cannot
//!   write outside it (the umoci/docker/containerd/tar-rs CVEs in docs/DESIGN-NOTES §5).
//! - [`run`] executes a [`RunSpec`] in fresh namespaces over an overlay of those snapshots. The
//!   engine is multi-threaded, so nothing forks in-process: `run` re-executes the `strata` binary
//!   as `strata __sandbox-init`, which lands in [`init_main`] (single-threaded) and does the
//!   namespace, mount and exec work there.

/// What a RUN command sees of its rootfs, as part of every RUN step's cache key: bump it when
/// that view changes (docs/cache-keys.md), so results taken from another view are not reused.
/// `times-v2`: every file, directory and symlink carries its layer's times (docs/store.md).
pub const ROOTFS_VIEW: &str = "times-v2";

pub mod capture;
pub mod delta;
pub mod emulation;
pub mod exec;
pub(crate) mod init;
mod limits;
pub use limits::{LimitError, ResourceLimits};
mod confined;
mod passwd;
mod seccomp;
mod setup;
pub mod snapshot;
pub mod trace;
pub mod userns;
pub mod vary;
pub use vary::Variation;

pub use exec::{
    cancel, cancelled, injected_paths, remove_tree, run, run_logged, run_observed, Mount,
    MountKind, Network, Output, RunOutcome, RunSpec, Tail,
};
pub use init::init_main;
pub use snapshot::{overlay_lowers, Limits, Prefetch, Snapshots};

use std::io;

/// Errors of the sandbox: unpacking snapshots and running a step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// A layer entry that would leave the snapshot root or is otherwise not representable safely.
    #[error("unsafe layer entry `{path}`: {reason}")]
    UnsafeEntry { path: String, reason: &'static str },
    /// CVE-2025-62518: the entry's PAX `size` and ustar size disagree (or are malformed).
    #[error("unsafe layer entry `{path}`: {reason}; readers honouring different size fields would see different entries (CVE-2025-62518), so the layer is refused (hint: rewrite it with a tar that emits consistent headers)")]
    PaxSizeDesync { path: String, reason: String },
    #[error("layer exceeds the {what} limit of {limit} (a decompression bomb or an unusually large layer)")]
    Limit { what: &'static str, limit: u64 },
    /// A rootless helper (capture in the user namespace) failed; the message says what.
    #[error("{0}")]
    Rootless(String),
    #[error("{0}")]
    Unsupported(String),
    /// Stopped by [`exec::cancel`] (Ctrl-C, SIGTERM).
    #[error("interrupted by {}: the sandbox was stopped and nothing of this step was cached", signal_name(*.0))]
    Interrupted(i32),
    #[error("invalid RUN: {0}")]
    Spec(String),
    /// The step had as many processes as `sandbox::limits` allows and was stopped.
    #[error("the RUN step reached the limit of {0} processes at once and was stopped (a fork bomb, or parallelism without a bound such as `make -j` with no number)\nhint: bound the parallelism in the command (`make -j\"$(nproc)\"`)")]
    ProcessLimit(u32),
    /// The kernel's OOM killer ended a process of the step at its `--memory` limit.
    #[error("the RUN step ran out of memory: a process was killed at the limit of {} set by --memory\nhint: raise --memory, or lower what the command uses at once (e.g. fewer parallel jobs)", strata_cache::format_size(*.0))]
    MemoryLimit(u64),
    /// The sandbox helper failed before the command could start (message from inside).
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] strata_cache::StoreError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
}

/// `SIGINT`, `SIGTERM`, … (or `signal N`).
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        n => format!("signal {n}"),
    }
}

impl SandboxError {
    pub(crate) fn io(op: &'static str, path: impl std::fmt::Display, source: io::Error) -> Self {
        SandboxError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }
}
