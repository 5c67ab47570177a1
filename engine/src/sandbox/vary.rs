//! What `strata verify` varies inside every RUN of runs 2+ (issue 23): the CPUs the command may
//! run on, the host and domain names, the monotonic and boot clocks, the kernel version string
//! ([`uname`]) and the address-space layout.
//!
//! The variation is process-wide: `strata verify` starts each build as a child `strata build`
//! with [`ENV`] set, and every sandbox helper of that process applies it. It is never part of a
//! cache key, a layer or a record: a varied build is only ever run into verify's throwaway
//! store. Not covered (the README's `strata verify` says why each): the wall clock
//! (`CLOCK_REALTIME` cannot be shifted per namespace; verify makes runs start in different
//! seconds and looks for run 1's date in what RUN steps wrote), `/proc/cpuinfo` and
//! `nproc --all`, the numeric kernel version, the user name and `HOME`.

use serde::{Deserialize, Serialize};

pub(crate) mod uname;

/// The environment variable of a `strata build` that carries its [`Variation`] as JSON (set by
/// `strata verify` only; internal).
pub const ENV: &str = "STRATA_VERIFY_VARIATION";

/// Conditions inside the sandbox that differ from a plain build's. `Default`: none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variation {
    /// Run the command on only this many of the CPUs strata may use (`sched_setaffinity`,
    /// inherited by everything it starts), and show the same count in
    /// `/sys/devices/system/cpu/online`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<usize>,
    /// The UTS host name (also in `/etc/hostname` and `/etc/hosts`) instead of `strata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The UTS (NIS) domain name instead of the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// Seconds added to `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` (a time namespace), so uptime,
    /// `/proc/uptime` and monotonic timestamps differ. Positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset: Option<u64>,
    /// What follows the numeric kernel version in `uname -r` (`6.8.0-TAG`), and `uname -v`
    /// (`#1 SMP TAG`), also in `/proc/version` and `/proc/sys/kernel/{osrelease,version}`
    /// ([`uname`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// `personality(ADDR_NO_RANDOMIZE)` for the command: the same address-space layout in
    /// every run with it (inherited across exec, dropped by a set-user-ID one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixed_layout: bool,
}

impl Variation {
    pub fn is_none(&self) -> bool {
        *self == Variation::default()
    }

    /// The variation of this process ([`ENV`]), read once.
    pub fn current() -> Result<&'static Variation, String> {
        static CURRENT: std::sync::OnceLock<Result<Variation, String>> = std::sync::OnceLock::new();
        CURRENT
            .get_or_init(|| match std::env::var(ENV) {
                Err(_) => Ok(Variation::default()),
                Ok(s) => Self::parse(&s),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn parse(s: &str) -> Result<Variation, String> {
        let v: Variation = serde_json::from_str(s)
            .map_err(|e| format!("{ENV}=`{s}`: {e} (it is set by `strata verify` only)"))?;
        v.check()?;
        Ok(v)
    }

    fn check(&self) -> Result<(), String> {
        if self.cpus == Some(0) {
            return Err(format!("{ENV}: cpus must be at least 1"));
        }
        for n in [&self.hostname, &self.domainname].into_iter().flatten() {
            // The kernel's limit (__NEW_UTS_LEN), and a name that fits in /etc/hosts.
            if n.is_empty() || n.len() > 64 || !n.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{ENV}: `{n}` is not a host or domain name (1-64 printable characters)"
                ));
            }
        }
        if let Some(t) = &self.kernel {
            // Room for the numeric version before it in the 64 bytes of a release.
            if t.is_empty() || t.len() > 40 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{ENV}: kernel `{t}` is not a release tag (1-40 printable characters)"
                ));
            }
        }
        // The kernel refuses offsets that could overflow the clock (KTIME_SEC_MAX / 2).
        if self.clock_offset.is_some_and(|s| s > 1 << 40) {
            return Err(format!("{ENV}: clock_offset is too large"));
        }
        Ok(())
    }
}

/// The CPUs this process may run on, in order (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity into a zeroed cpu_set_t of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Restricts this process (and what it starts) to the first `n` of its allowed CPUs; returns
/// them in the kernel's list form (`0`, `0-3`, `0,2`) for `/sys/devices/system/cpu/online`.
pub(crate) fn restrict_cpus(n: usize) -> Result<String, String> {
    let allowed = allowed_cpus();
    if allowed.is_empty() {
        return Err(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    let chosen: Vec<usize> = allowed.into_iter().take(n.max(1)).collect();
    // SAFETY: a zeroed cpu_set_t filled with CPU_SET, passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in &chosen {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity to {n} CPUs: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(cpu_list(&chosen))
}

/// Sorted CPU numbers in the kernel's list form: ranges joined by commas.
pub(crate) fn cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Writes the offsets of the time namespace this process made with `unshare(CLONE_NEWTIME)`
/// (its children's), before any process is in it.
pub(crate) fn set_clock_offset(secs: u64) -> Result<(), String> {
    let text = format!("monotonic {secs} 0\nboottime {secs} 0\n");
    std::fs::write("/proc/self/timens_offsets", text)
        .map_err(|e| format!("write /proc/self/timens_offsets (shift the clocks by {secs} s): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_use_the_kernels_form() {
        assert_eq!(cpu_list(&[0]), "0");
        assert_eq!(cpu_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(cpu_list(&[0, 2, 3, 5]), "0,2-3,5");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn variations_parse_and_bad_ones_are_refused() {
        let v = Variation::parse(
            r#"{"cpus":1,"hostname":"h2","clock_offset":5,"kernel":"v2","fixed_layout":true}"#,
        )
        .unwrap();
        assert_eq!(v.cpus, Some(1));
        assert_eq!(v.kernel.as_deref(), Some("v2"));
        assert!(v.fixed_layout);
        assert!(Variation::parse(r#"{"kernel":"a b"}"#).is_err());
        assert_eq!(v.hostname.as_deref(), Some("h2"));
        assert!(v.domainname.is_none());
        assert!(Variation::parse("{}").unwrap().is_none());
        assert!(Variation::parse(r#"{"cpus":0}"#).is_err());
        assert!(Variation::parse(r#"{"hostname":"a b"}"#).is_err());
        assert!(Variation::parse(r#"{"hostname":""}"#).is_err());
        assert!(Variation::parse("nope")
            .unwrap_err()
            .contains("strata verify"));
        let back: Variation = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }
}
