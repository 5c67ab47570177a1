//! Resource limits per RUN step: a fork bomb or a runaway allocation inside RUN ends the step,
//! not the machine.
//!
//! The sandbox helper puts itself into a fresh cgroup (`strata-run-<pid>`) of each controller it
//! needs before it forks pid 1, so every process of the step is counted:
//! - `pids`: always where it can, capped at [`PIDS_MAX`]. A step that reaches the cap is stopped
//!   at once (SIGKILL to its pid 1 kills the whole pid namespace) and fails saying why: a program
//!   that cannot fork usually loops or hangs rather than failing, so waiting would hide the cause.
//! - `memory` (`strata build --memory`): RAM of all the step's processes together, no swap on
//!   top. When the kernel's OOM killer ends one of them, the step fails naming the limit.
//! - `cpu` (`strata build --cpus`): CPU time per 100 ms period (CFS quota).
//!
//! None by default but pids, as `docker build`; the limits never enter a cache key (they decide
//! whether a step finishes, not what it writes). Where: the cgroup v2 hierarchy when the
//! controller is enabled for our cgroup's children, else the controller's v1 hierarchy; either
//! way under the cgroup this process is in. Creating a cgroup needs write access there: as root
//! it works on ordinary hosts; rootless (unless a cgroup was delegated to the user) it does not —
//! the pids cap is then skipped and `--memory`/`--cpus` are refused (docs/security.md).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Processes (threads included) one RUN step may have at once. Far above what builds use
/// (`make -j64` with compilers and shells is a few hundred) and far below what exhausts a host.
pub(crate) const PIDS_MAX: u32 = 8192;

/// The CFS period `--cpus` is a share of, in microseconds (Docker's).
const CPU_PERIOD_US: u64 = 100_000;

/// `strata build --memory`, `--cpus`: what each RUN step may use (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Bytes of memory the step's processes may use together (no swap beyond it).
    pub memory: Option<u64>,
    /// CPU time per [`CPU_PERIOD_US`] period, in microseconds (`--cpus 1.5` = 150000).
    pub cpu_quota_us: Option<u64>,
}

/// Why a `--cpus` or `--memory` value is refused (the CLI puts the flag's name before it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("`{0}` is not a number of CPUs (e.g. 0.5 or 2)")]
    NotCpus(String),
    #[error("`{0}` CPUs: give a number from 0.01 to 4096")]
    CpusOutOfRange(String),
    #[error("`{0}` is not a memory size (e.g. 512m or 2g)")]
    NotMemory(String),
    #[error("`{0}` is too large")]
    MemoryTooLarge(String),
    #[error("`{0}` is below the minimum of 6m")]
    MemoryTooSmall(String),
}

impl ResourceLimits {
    /// `--cpus`: a positive decimal number of CPUs (`0.5`, `2`), at least 0.01.
    pub fn parse_cpus(v: &str) -> Result<u64, LimitError> {
        let n: f64 = v
            .trim()
            .parse()
            .map_err(|_| LimitError::NotCpus(v.to_string()))?;
        if !n.is_finite() || !(0.01..=4096.0).contains(&n) {
            return Err(LimitError::CpusOutOfRange(v.to_string()));
        }
        Ok((n * CPU_PERIOD_US as f64).round() as u64)
    }

    /// `--memory`: bytes with an optional unit `b`, `k`, `m`, `g` (powers of 1024, as docker's
    /// `--memory`), at least 6 MiB (docker's minimum; less cannot start a shell).
    pub fn parse_memory(v: &str) -> Result<u64, LimitError> {
        let t = v.trim().to_ascii_lowercase();
        let t = t.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&t);
        let (num, shift) = match t.chars().last() {
            Some('k') => (&t[..t.len() - 1], 10),
            Some('m') => (&t[..t.len() - 1], 20),
            Some('g') => (&t[..t.len() - 1], 30),
            Some('t') => (&t[..t.len() - 1], 40),
            _ => (t, 0),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| LimitError::NotMemory(v.to_string()))?;
        let bytes = n
            .checked_mul(1u64 << shift)
            .ok_or_else(|| LimitError::MemoryTooLarge(v.to_string()))?;
        if bytes < 6 << 20 {
            return Err(LimitError::MemoryTooSmall(v.to_string()));
        }
        Ok(bytes)
    }
}

/// The cgroups of one RUN step (one per hierarchy: v1 mounts each controller apart, v2 has one);
/// removed on drop, after this process moved back out.
pub(crate) struct StepCgroup {
    groups: Vec<Group>,
    /// The group with `pids.events`, when the pids cap is on.
    pids: Option<usize>,
    /// The group with the memory limit, its version and the limit.
    memory: Option<(usize, bool, u64)>,
}

struct Group {
    dir: PathBuf,
    /// The cgroup this process came from, to move back to before removing `dir`.
    parent_procs: PathBuf,
}

impl StepCgroup {
    /// Creates the step's cgroups with their limits and moves the calling process into them (its
    /// children follow). The pids cap is skipped where no writable hierarchy has it; a requested
    /// memory or CPU limit that cannot be set is an error.
    pub(crate) fn enter(limits: &ResourceLimits) -> Result<StepCgroup, String> {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut cg = StepCgroup {
            groups: Vec::new(),
            pids: None,
            memory: None,
        };
        if let Some((base, _)) = controller_base(&own, &mounts, "pids") {
            if let Ok(i) = cg.group(&base) {
                if fs::write(cg.groups[i].dir.join("pids.max"), PIDS_MAX.to_string()).is_ok() {
                    cg.pids = Some(i);
                }
            }
        }
        let unavailable = |flag: &str, ctrl: &str, why: String| {
            format!(
                "{flag} needs the `{ctrl}` cgroup controller, writable by this user: {why}\n\
                 hint: run as root, or in a cgroup v2 subtree delegated to this user with `{ctrl}` \
                 enabled for its children (systemd: `Delegate=yes`); or build without {flag}"
            )
        };
        if let Some(bytes) = limits.memory {
            let (base, v2) = controller_base(&own, &mounts, "memory")
                .ok_or_else(|| unavailable("--memory", "memory", "none found".into()))?;
            let i = cg
                .group(&base)
                .map_err(|e| unavailable("--memory", "memory", e))?;
            let dir = &cg.groups[i].dir;
            let set = |file: &str, value: String| {
                fs::write(dir.join(file), value)
                    .map_err(|e| unavailable("--memory", "memory", format!("{file}: {e}")))
            };
            if v2 {
                set("memory.max", bytes.to_string())?;
                if dir.join("memory.swap.max").exists() {
                    set("memory.swap.max", "0".into())?;
                }
            } else {
                set("memory.limit_in_bytes", bytes.to_string())?;
                // Memory plus swap capped at the same: no swap on top (only with swap accounting).
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    set("memory.memsw.limit_in_bytes", bytes.to_string())?;
                }
            }
            cg.memory = Some((i, v2, bytes));
        }
        if let Some(quota) = limits.cpu_quota_us {
            let (base, v2) = controller_base(&own, &mounts, "cpu")
                .ok_or_else(|| unavailable("--cpus", "cpu", "none found".into()))?;
            let i = cg
                .group(&base)
                .map_err(|e| unavailable("--cpus", "cpu", e))?;
            let dir = &cg.groups[i].dir;
            let set = |file: &str, value: String| {
                fs::write(dir.join(file), value)
                    .map_err(|e| unavailable("--cpus", "cpu", format!("{file}: {e}")))
            };
            if v2 {
                set("cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                set("cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                set("cpu.cfs_quota_us", quota.to_string())?;
            }
        }
        // Last, once every limit is in place: this process and all it starts are counted.
        let me = std::process::id().to_string();
        for g in &cg.groups {
            fs::write(g.dir.join("cgroup.procs"), &me)
                .map_err(|e| format!("entering cgroup `{}`: {e}", g.dir.display()))?;
        }
        Ok(cg)
    }

    /// The index of the step's group under `base`, created on first use.
    fn group(&mut self, base: &Path) -> Result<usize, String> {
        let dir = base.join(format!("strata-run-{}", std::process::id()));
        if let Some(i) = self.groups.iter().position(|g| g.dir == dir) {
            return Ok(i);
        }
        sweep_dead(base);
        fs::create_dir(&dir).map_err(|e| format!("creating `{}`: {e}", dir.display()))?;
        self.groups.push(Group {
            parent_procs: base.join("cgroup.procs"),
            dir,
        });
        Ok(self.groups.len() - 1)
    }

    /// Whether the pids cap is on for this step.
    pub(crate) fn limits_pids(&self) -> bool {
        self.pids.is_some()
    }

    /// How many times a fork was refused because the cap was reached (`pids.events`).
    pub(crate) fn times_at_max(&self) -> u64 {
        let Some(i) = self.pids else { return 0 };
        counter(&self.groups[i].dir.join("pids.events"), "max")
    }

    /// The memory limit (bytes), when the OOM killer killed one of the step's processes at it
    /// (v2 `memory.events`, v1 `memory.oom_control`).
    pub(crate) fn memory_hit(&self) -> Option<u64> {
        let (i, v2, bytes) = self.memory?;
        let file = if v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        (counter(&self.groups[i].dir.join(file), "oom_kill") > 0).then_some(bytes)
    }
}

/// The number after `name ` in a flat-keyed cgroup file (0 when absent).
fn counter(file: &Path, name: &str) -> u64 {
    fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        let me = std::process::id().to_string();
        for g in &self.groups {
            let _ = fs::write(&g.parent_procs, &me);
        }
        for g in &self.groups {
            // The step's processes may still be exiting: a few tries, then leave it (an empty
            // cgroup costs nothing, `strata-run-<pid>` names its owner and the next step sweeps
            // it). Usually empty at the first try; 1 ms steps keep a RUN's teardown short.
            for _ in 0..500 {
                if fs::remove_dir(&g.dir).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

/// Removes the step cgroups of helpers that are gone without cleaning up (SIGKILLed with
/// strata, by `PR_SET_PDEATHSIG`): an empty cgroup's rmdir is all it takes. Errors are ignored
/// (another helper may sweep the same one).
fn sweep_dead(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("strata-run-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(e.path());
        }
    }
}

/// The directory of this process's own cgroup in a hierarchy with controller `ctrl`, and whether
/// it is cgroup v2. v1 first (a `N:ctrl,…:/path` line and a cgroup mount with `ctrl` among its
/// super options); else v2, usable when `ctrl` is enabled for our cgroup's children.
fn controller_base(proc_cgroup: &str, mountinfo: &str, ctrl: &str) -> Option<(PathBuf, bool)> {
    if let Some(path) = proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == ctrl).then_some(path)
    }) {
        if let Some(m) = mount_point(mountinfo, |fstype, opts| {
            fstype == "cgroup" && opts.split(',').any(|o| o == ctrl)
        }) {
            return Some((join_cgroup(&m, path), false));
        }
    }
    let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let m = mount_point(mountinfo, |fstype, _| fstype == "cgroup2")?;
    let base = join_cgroup(&m, path);
    let ctrls = fs::read_to_string(base.join("cgroup.subtree_control")).ok()?;
    ctrls
        .split_whitespace()
        .any(|c| c == ctrl)
        .then_some((base, true))
}

fn join_cgroup(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

/// The mount point of the first mount whose file system type and super options pass `want`.
fn mount_point(mountinfo: &str, want: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTS
        let (left, right) = l.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let (fstype, _src, superopts) = (r.next()?, r.next()?, r.next().unwrap_or(""));
        want(fstype, superopts).then(|| PathBuf::from(point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str =
        "30 25 0:26 / /sys/fs/cgroup/pids rw,nosuid shared:12 - cgroup cgroup rw,pids\n\
                      31 25 0:27 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory\n";

    #[test]
    fn finds_the_v1_pids_hierarchy_under_our_own_cgroup() {
        let own = "4:memory:/x\n8:pids:/ci/job\n0::/\n";
        assert_eq!(
            controller_base(own, V1, "pids"),
            Some((PathBuf::from("/sys/fs/cgroup/pids/ci/job"), false))
        );
        assert_eq!(
            controller_base(own, V1, "memory"),
            Some((PathBuf::from("/sys/fs/cgroup/memory/x"), false))
        );
    }

    #[test]
    fn no_pids_controller_means_no_limit() {
        let own = "4:memory:/x\n";
        assert_eq!(controller_base(own, V1, "pids"), None);
        assert_eq!(controller_base("0::/user.slice\n", V1, "pids"), None);
        assert_eq!(controller_base(own, V1, "cpu"), None);
    }

    #[test]
    fn cpus_and_memory_parse_as_docker_takes_them() {
        assert_eq!(ResourceLimits::parse_cpus("1.5"), Ok(150_000));
        assert_eq!(ResourceLimits::parse_cpus("0.5"), Ok(50_000));
        assert_eq!(ResourceLimits::parse_cpus("2"), Ok(200_000));
        assert!(ResourceLimits::parse_cpus("0").is_err());
        assert!(ResourceLimits::parse_cpus("-1").is_err());
        assert!(ResourceLimits::parse_cpus("NaN").is_err());
        assert!(ResourceLimits::parse_cpus("two").is_err());
        assert_eq!(ResourceLimits::parse_memory("512m"), Ok(512 << 20));
        assert_eq!(ResourceLimits::parse_memory("2G"), Ok(2 << 30));
        assert_eq!(ResourceLimits::parse_memory("64mb"), Ok(64 << 20));
        assert_eq!(ResourceLimits::parse_memory("10485760"), Ok(10 << 20));
        assert_eq!(ResourceLimits::parse_memory("8192k"), Ok(8 << 20));
        assert!(ResourceLimits::parse_memory("1m")
            .unwrap_err()
            .to_string()
            .contains("minimum"));
        assert!(ResourceLimits::parse_memory("lots").is_err());
        assert!(ResourceLimits::parse_memory("").is_err());
        assert!(ResourceLimits::parse_memory("99999999999t").is_err());
    }

    #[test]
    fn counters_read_flat_keyed_files() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("memory.oom_control");
        fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(counter(&f, "oom_kill"), 3);
        assert_eq!(counter(&f, "under_oom"), 0);
        assert_eq!(counter(&f, "missing"), 0);
        assert_eq!(counter(&d.path().join("absent"), "oom_kill"), 0);
    }
}
