//! Rootless: the user namespace every sandbox helper enters when strata does not run as root.
//!
//! With a range for the caller in `/etc/subuid` and `/etc/subgid` and the setuid helpers
//! `newuidmap`/`newgidmap` (package `uidmap`), container id 0 maps to the caller and
//! `1..=N` to the subordinate range. Without them the mapping is the single id `0 → caller`
//! (after `setgroups` is denied), with a warning: ownership by any other id cannot be
//! represented, so `chown` to other users fails and layer files owned by other ids appear
//! as root's.
//!
//! The parent (multi-threaded strata) never enters the namespace: the helper `unshare`s it,
//! signals on fd 4 (a socket), the parent writes the maps and answers, and only then the
//! helper goes on. Snapshot unpacking and removal of trees holding other ids also happen in a
//! helper, so files get their container ids through the mapping.

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::OnceLock;

use super::capture::IdMap;
use super::SandboxError;

/// How the helper's user namespace maps ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNs {
    /// host ↔ container ranges, as written to `uid_map`/`gid_map`.
    pub map: IdMap,
    /// Only `0 → caller`: no subordinate range was available.
    pub single_id: bool,
    /// The caller's user name (for messages).
    pub user: String,
}

/// The fd number of the synchronisation socket in the helper.
pub(crate) const SYNC_FD: i32 = 4;

static CURRENT: OnceLock<Option<UserNs>> = OnceLock::new();

/// `None` when strata runs as root (no user namespace); otherwise the mapping every sandbox
/// helper of this process uses. What the mapping means for RUN steps is said by
/// [`single_id_warning`], which the build reports as a progress event.
pub fn current() -> Option<&'static UserNs> {
    detected()
}

/// The warning for what RUN steps can do under a single-id mapping, the first time it is asked
/// for in this process (later calls, and mappings with a subordinate range, give `None`). The
/// caller reports it (a progress event), so `--progress json` consumers get it as JSON.
#[cfg_attr(not(feature = "store"), allow(dead_code))] // used by build/ (the store feature)
pub(crate) fn single_id_warning() -> Option<String> {
    let ns = detected().filter(|ns| ns.single_id)?;
    static WARNED: std::sync::Once = std::sync::Once::new();
    let mut warning = None;
    WARNED.call_once(|| {
        warning = Some(format!(
            "no /etc/subuid range for {}: RUN steps run with a single id; chown to other users will fail (and files of base layers owned by other ids appear as root's)",
            ns.user
        ))
    });
    warning
}

/// The mapping [`current`] returns (also for what runs no RUN step: `strata gc` removing
/// snapshots).
pub(crate) fn detected() -> Option<&'static UserNs> {
    CURRENT
        .get_or_init(|| {
            let euid = rustix::process::geteuid();
            if euid.is_root() {
                return None;
            }
            Some(detect(
                euid.as_raw(),
                rustix::process::getegid().as_raw(),
                &read("/etc/passwd"),
                &read("/etc/subuid"),
                &read("/etc/subgid"),
                have_tool("newuidmap") && have_tool("newgidmap"),
            ))
        })
        .as_ref()
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn have_tool(name: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"])
        .filter(|d| !d.is_empty())
        .any(|d| std::path::Path::new(d).join(name).is_file());
    found
}

/// The first usable `name:start:count` (or `uid:start:count`) range of `subid` for the user.
fn sub_range(subid: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    subid.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
        (count > 0 && start.checked_add(count).is_some()).then_some((start, count))
    })
}

fn detect(
    uid: u32,
    gid: u32,
    passwd: &str,
    subuid: &str,
    subgid: &str,
    have_tools: bool,
) -> UserNs {
    let user = passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| uid.to_string());
    let ranges = (sub_range(subuid, &user, uid), sub_range(subgid, &user, uid));
    match ranges {
        (Some((us, uc)), Some((gs, gc))) if have_tools => UserNs {
            map: IdMap {
                uids: vec![(0, uid, 1), (1, us, uc)],
                gids: vec![(0, gid, 1), (1, gs, gc)],
            },
            single_id: false,
            user,
        },
        _ => UserNs {
            map: IdMap {
                uids: vec![(0, uid, 1)],
                gids: vec![(0, gid, 1)],
            },
            single_id: true,
            user,
        },
    }
}

impl UserNs {
    /// Distinguishes snapshot forms: files in a snapshot carry host ids through this mapping.
    pub fn key(&self) -> String {
        let r = |v: &[(u32, u32, u32)]| {
            v.iter()
                .map(|(c, h, n)| format!("{c}-{h}-{n}"))
                .collect::<Vec<_>>()
                .join("_")
        };
        format!("u{}-g{}", r(&self.map.uids), r(&self.map.gids))
    }

    /// The helper argument telling it which form of namespace it is in.
    pub(crate) fn helper_arg(&self) -> &'static str {
        if self.single_id {
            "--userns=single"
        } else {
            "--userns=subid"
        }
    }

    /// Writes the maps of the helper `pid` (which has unshared its user namespace).
    fn write_maps(&self, pid: u32) -> Result<(), SandboxError> {
        if !self.single_id {
            for (tool, ranges) in [("newuidmap", &self.map.uids), ("newgidmap", &self.map.gids)] {
                let mut c = Command::new(tool);
                c.arg(pid.to_string());
                for (a, b, n) in ranges {
                    c.args([a.to_string(), b.to_string(), n.to_string()]);
                }
                let out = c.output().map_err(|e| SandboxError::io("run", tool, e))?;
                if !out.status.success() {
                    return Err(SandboxError::Setup(format!(
                        "{tool} {pid} failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
            return Ok(());
        }
        let w = |file: &str, data: String| {
            let p = format!("/proc/{pid}/{file}");
            std::fs::write(&p, data).map_err(|e| SandboxError::io("write", &p, e))
        };
        let (_, uid, _) = self.map.uids[0];
        let (_, gid, _) = self.map.gids[0];
        w("setgroups", "deny".into())?;
        w("uid_map", format!("0 {uid} 1\n"))?;
        w("gid_map", format!("0 {gid} 1\n"))
    }

    /// Parent side of the handshake: waits for the helper to unshare, writes its maps and
    /// lets it go on. An early EOF means the helper failed first (its report says why).
    pub(crate) fn handshake(&self, sock: &mut UnixStream, pid: u32) -> Result<(), SandboxError> {
        use std::io::{Read, Write};
        let mut b = [0u8; 1];
        match sock.read(&mut b) {
            Ok(1) => {}
            _ => return Ok(()),
        }
        self.write_maps(pid)?;
        sock.write_all(b"1")
            .map_err(|e| SandboxError::io("signal", "sandbox helper", e))
    }
}

/// Helper side: unshares the user namespace and waits until the parent has written the maps.
pub(crate) fn enter() -> Result<(), String> {
    let err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain syscalls on fd numbers in a single-threaded process.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            return Err(format!(
                "{} (rootless RUN needs unprivileged user namespaces: check the sysctls kernel.unprivileged_userns_clone / user.max_user_namespaces)",
                err("unshare(CLONE_NEWUSER)")
            ));
        }
        // Credentials changed: the parent-death signal may have been cleared.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::write(SYNC_FD, b"1".as_ptr().cast(), 1) != 1 {
            return Err(err("signal the parent"));
        }
        let mut b = 0u8;
        if libc::read(SYNC_FD, (&mut b as *mut u8).cast(), 1) != 1 {
            return Err("the parent could not write the user namespace's id maps".into());
        }
        libc::close(SYNC_FD);
    }
    Ok(())
}

/// A user `strata verify` (running as root) builds as in its rootless runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootlessUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The fewest subordinate ids a rootless verify run needs: the ids images use (up to
/// `nobody`, 65534) must map, or a correct `chown` would fail where root's succeeds.
const FULL_RANGE: u32 = 65_536;

/// The first user of `/etc/subuid` who can build rootless with the same results as root: a
/// subordinate uid and gid range of at least 65536 ids each, and `newuidmap`/`newgidmap`
/// installed. `Err`: why there is none.
pub fn rootless_user() -> Result<RootlessUser, String> {
    pick_rootless(
        &read("/etc/passwd"),
        &read("/etc/subuid"),
        &read("/etc/subgid"),
        have_tool("newuidmap") && have_tool("newgidmap"),
    )
}

fn pick_rootless(
    passwd: &str,
    subuid: &str,
    subgid: &str,
    have_tools: bool,
) -> Result<RootlessUser, String> {
    if !have_tools {
        return Err("newuidmap and newgidmap (package uidmap) are not installed".into());
    }
    let users = passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some((
            f.first()?.to_string(),
            f.get(2)?.parse::<u32>().ok()?,
            f.get(3)?.parse::<u32>().ok()?,
        ))
    });
    for (name, uid, gid) in users.filter(|(_, uid, _)| *uid != 0) {
        let full = |subid: &str| sub_range(subid, &name, uid).is_some_and(|(_, c)| c >= FULL_RANGE);
        if full(subuid) && full(subgid) {
            return Ok(RootlessUser { name, uid, gid });
        }
    }
    Err(format!(
        "no user with a range of {FULL_RANGE} ids in both /etc/subuid and /etc/subgid"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_picks_a_user_with_full_subordinate_ranges() {
        let passwd = "root:x:0:0::/root:/bin/sh\nsmall:x:1000:1000::/:/bin/sh\nci:x:1001:1002::/home/ci:/bin/sh\n";
        let subuid = "root:100000:65536\nsmall:300000:10\nci:100000:65536\n";
        let subgid = "root:100000:65536\nsmall:300000:10\n1001:100000:65536\n";
        let u = pick_rootless(passwd, subuid, subgid, true).unwrap();
        assert_eq!(
            u,
            RootlessUser {
                name: "ci".into(),
                uid: 1001,
                gid: 1002
            }
        );
        assert!(pick_rootless(passwd, subuid, subgid, false)
            .unwrap_err()
            .contains("newuidmap"));
        assert!(pick_rootless(passwd, "small:300000:10\n", subgid, true).is_err());
    }

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nci:x:1001:1001::/home/ci:/bin/sh\n";

    #[test]
    fn subordinate_ranges_map_container_ids_above_zero() {
        let ns = detect(
            1001,
            1001,
            PASSWD,
            "other:1:5\nci:100000:65536\n",
            "1001:200000:10\n",
            true,
        );
        assert!(!ns.single_id);
        assert_eq!(ns.map.uids, [(0, 1001, 1), (1, 100000, 65536)]);
        assert_eq!(ns.map.gids, [(0, 1001, 1), (1, 200000, 10)]);
        assert_eq!(ns.user, "ci");
        assert_eq!(ns.key(), "u0-1001-1_1-100000-65536-g0-1001-1_1-200000-10");
    }

    #[test]
    fn no_range_or_no_tools_falls_back_to_a_single_id() {
        for (subuid, tools) in [("", true), ("ci:100000:65536\n", false), ("ci:5:0\n", true)] {
            let ns = detect(1001, 1001, PASSWD, subuid, "ci:100000:65536\n", tools);
            assert!(ns.single_id, "{subuid} {tools}");
            assert_eq!(ns.map.uids, [(0, 1001, 1)]);
        }
    }
}
