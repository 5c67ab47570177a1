//! Build events. The engine reports; the CLI decides how to show them (bars, plain lines, JSON).

use std::time::Duration;

/// What happened to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// The step's key was in the store: nothing ran.
    Cached,
    /// The step ran and its result is now in the store.
    Executed,
    /// A RUN that missed the cache but was not run: nothing it observed of its root file
    /// system changed, so its earlier layer was taken (read-set reuse, docs/read-set.md).
    Reused,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Cached => "cached",
            StepStatus::Executed => "executed",
            StepStatus::Reused => "reused",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    StageStart {
        stage: usize,
        name: Option<String>,
        steps: usize,
    },
    StepStart {
        stage: usize,
        step: usize,
        text: String,
    },
    StepDone {
        stage: usize,
        step: usize,
        text: String,
        status: StepStatus,
        /// Short form of the step's cache key.
        key: String,
        duration: Duration,
        /// Bytes of the layer this step produced (0 for config-only steps).
        layer_bytes: u64,
        /// Why the step missed the cache (`--explain`), one line per reason.
        explain: Vec<String>,
    },
    /// Tar bytes of the layer a step wrote that went through the compressor, and those whose
    /// compressed chunk was reused from an earlier layer.
    Compressed {
        stage: usize,
        step: usize,
        compressed: u64,
        reused: u64,
    },
    /// Files hashed vs served from the stat cache, for one COPY/ADD.
    Hashing {
        stage: usize,
        step: usize,
        files: usize,
        hashed: usize,
        bytes_hashed: u64,
    },
    /// Where an executed RUN step's time went, phase by phase ([`RunCost`]).
    RunCost {
        stage: usize,
        step: usize,
        cost: RunCost,
    },
    Warning(String),
    Exported {
        kind: String,
        dest: String,
    },
}

/// The phases of an executed RUN step, in order. Their sum is a little less than the step's
/// duration (the cache lookup and the step record are not in it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCost {
    /// The parent's root file system: snapshots unpacked (or found), the upper dir made.
    pub rootfs: Duration,
    /// Mount sources, cache and secret mounts prepared.
    pub mounts: Duration,
    /// The sandbox set up, the command run, the sandbox gone (what `time` around the
    /// command would show, plus namespace and mount setup).
    pub command: Duration,
    /// The upper dir captured, canonicalized, written as a compressed layer, stored.
    pub layer: Duration,
    /// The read set recorded: the parent's view (waited for, if it is still being made) and
    /// the new layer indexed and fingerprinted. Zero when the step is not traced.
    pub readset: Duration,
}

impl RunCost {
    /// `(name, duration)` of each phase, in order.
    pub fn phases(&self) -> [(&'static str, Duration); 5] {
        [
            ("rootfs", self.rootfs),
            ("mounts", self.mounts),
            ("command", self.command),
            ("layer", self.layer),
            ("readset", self.readset),
        ]
    }
}

/// Receives build events. Must be cheap: it is called from build threads.
pub trait Progress: Send + Sync {
    fn event(&self, e: &Event);

    /// An event of the build for `platform`, one of several a multi-platform build runs at
    /// once (their stage and step numbers repeat). By default the platform is not told.
    fn platform_event(&self, platform: &str, e: &Event) {
        let _ = platform;
        self.event(e)
    }
}

/// The events of one platform's build, passed on with the platform ([`Progress::platform_event`]).
pub struct ForPlatform<'a> {
    pub inner: &'a dyn Progress,
    pub platform: String,
}

impl Progress for ForPlatform<'_> {
    fn event(&self, e: &Event) {
        self.inner.platform_event(&self.platform, e)
    }
}

/// Discards every event.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: &Event) {}
}
