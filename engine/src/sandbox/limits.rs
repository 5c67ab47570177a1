//! A process limit per RUN step: a fork bomb inside RUN ends the step, not the machine.
//!
//! The sandbox helper puts itself into a fresh cgroup of the `pids` controller before it forks
//! pid 1, so every process of the step is counted; `pids.max` caps them at [`PIDS_MAX`]. A step
//! that reaches the cap is stopped at once (SIGKILL to its pid 1 kills the whole pid namespace)
//! and fails with a message that says why: a program that cannot fork usually loops or hangs
//! rather than failing, so waiting for it would only hide the cause.
//!
//! Where: the cgroup v2 hierarchy when it has the `pids` controller enabled for our cgroup's
//! children, else the v1 `pids` hierarchy; either way under the cgroup this process is in.
//! Creating a cgroup needs write access there: as root it works on ordinary hosts; rootless
//! (unless a cgroup was delegated to the user) it does not, and the step runs without a limit —
//! docs/security.md says so. Memory and CPU are not limited.

use std::fs;
use std::path::{Path, PathBuf};

/// Processes (threads included) one RUN step may have at once. Far above what builds use
/// (`make -j64` with compilers and shells is a few hundred) and far below what exhausts a host.
pub(crate) const PIDS_MAX: u32 = 8192;

/// A cgroup of one RUN step; removed on drop (after its processes are gone).
pub(crate) struct PidsCgroup {
    dir: PathBuf,
    /// The cgroup this process came from, to move back to before removing `dir`.
    parent_procs: PathBuf,
}

impl PidsCgroup {
    /// Creates the step's cgroup with `pids.max` and moves the calling process into it (its
    /// children follow). `None` when no writable `pids` hierarchy is found.
    pub(crate) fn enter(max: u32) -> Option<PidsCgroup> {
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let base = pids_base(&own, &mounts)?;
        sweep_dead(&base);
        let dir = base.join(format!("strata-run-{}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        let cg = PidsCgroup {
            parent_procs: base.join("cgroup.procs"),
            dir,
        };
        fs::write(cg.dir.join("pids.max"), max.to_string()).ok()?;
        fs::write(cg.dir.join("cgroup.procs"), std::process::id().to_string()).ok()?;
        Some(cg)
    }

    /// How many times a fork was refused because the cap was reached (`pids.events`).
    pub(crate) fn times_at_max(&self) -> u64 {
        fs::read_to_string(self.dir.join("pids.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("max ").map(|n| n.trim().parse().ok()))
                    .flatten()
            })
            .unwrap_or(0)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = fs::write(&self.parent_procs, std::process::id().to_string());
        // The step's processes may still be exiting: a few tries, then leave it (an empty
        // cgroup costs nothing and `strata-run-<pid>` names its owner).
        // Usually empty at the first try; 1 ms steps keep a RUN's teardown short when not.
        for _ in 0..500 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
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

/// The directory of this process's own cgroup in a hierarchy with the `pids` controller.
fn pids_base(proc_cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    // v1: a `N:pids:/path` line and a cgroup mount with the `pids` super option.
    if let Some(path) = proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == "pids").then_some(path)
    }) {
        if let Some(m) = mount_point(mountinfo, |fstype, opts| {
            fstype == "cgroup" && opts.split(',').any(|o| o == "pids")
        }) {
            return Some(join_cgroup(&m, path));
        }
    }
    // v2: the `0::/path` line; usable if `pids` is enabled for our cgroup's children.
    let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let m = mount_point(mountinfo, |fstype, _| fstype == "cgroup2")?;
    let base = join_cgroup(&m, path);
    let ctrls = fs::read_to_string(base.join("cgroup.subtree_control")).ok()?;
    ctrls
        .split_whitespace()
        .any(|c| c == "pids")
        .then_some(base)
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
            pids_base(own, V1),
            Some(PathBuf::from("/sys/fs/cgroup/pids/ci/job"))
        );
    }

    #[test]
    fn no_pids_controller_means_no_limit() {
        let own = "4:memory:/x\n";
        assert_eq!(pids_base(own, V1), None);
        assert_eq!(pids_base("0::/user.slice\n", V1), None);
    }
}
