//! RUN steps of a foreign platform (an arm64 image built on amd64) run under QEMU user
//! emulation, through the kernel's binfmt_misc: the step execs the image's own `/bin/sh`, the
//! kernel sees an ELF of another machine and hands it to the registered interpreter. strata
//! never starts an emulator itself and never runs a foreign binary another way.
//!
//! The handler must have the `F` (fix-binary) flag, as Debian's `qemu-user-static` registers
//! them: the kernel opens the interpreter at registration, so it is found from inside the
//! sandbox's mount namespace and new root, where `/usr/libexec/qemu-binfmt/…` does not exist.
//! Without it every foreign exec would fail with ENOENT halfway through a build; [`check`]
//! says so before anything is built.
//!
//! Read sets (docs/read-set.md): the tracer sees the emulator's own syscalls (x86_64 ones), but
//! the first exec of a foreign ELF is one it cannot follow (`trace::binfmt` answers `Unseen`),
//! so every emulated RUN is blind and never reused by read set.

use std::path::{Path, PathBuf};

use crate::image::Platform;

/// Where binfmt_misc is mounted.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";
/// Overrides [`BINFMT_MISC`] (tests point it at a directory without handlers; a host that
/// mounts binfmt_misc elsewhere can too).
pub const BINFMT_MISC_ENV: &str = "STRATA_BINFMT_MISC";

/// What the user installs for emulation.
const INSTALL: &str = "apt-get install qemu-user-static binfmt-support";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmulationError {
    #[error("RUN for {platform} needs a binfmt_misc handler for {machine}, and `{}` does not exist{}", path.display(), if *mounted { "" } else { " (binfmt_misc is not mounted)" })]
    NoHandler {
        platform: String,
        machine: String,
        path: PathBuf,
        mounted: bool,
    },
    #[error("RUN for {platform} needs the binfmt_misc handler `{}`, which is disabled", path.display())]
    Disabled { platform: String, path: PathBuf },
    #[error("RUN for {platform}: the binfmt_misc handler `{}` lacks the F (fix-binary) flag (flags: `{flags}`), so its interpreter cannot be found inside the build's root file system", path.display())]
    NotFixBinary {
        platform: String,
        path: PathBuf,
        flags: String,
    },
}

impl EmulationError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            EmulationError::NoHandler { mounted: false, .. } => format!(
                "mount it (`mount -t binfmt_misc binfmt_misc {BINFMT_MISC}`), then {INSTALL} (or `update-binfmts --enable` if it is installed)"
            ),
            EmulationError::NoHandler { .. } => format!(
                "{INSTALL} (Debian's handlers have the F flag strata needs)"
            ),
            EmulationError::Disabled { path, .. } => format!(
                "enable it: `echo 1 > {}` (or `update-binfmts --enable`)",
                path.display()
            ),
            EmulationError::NotFixBinary { .. } => format!(
                "register the handler with the F flag: {INSTALL} registers Debian's static QEMU that way"
            ),
        }
    }
}

/// The binfmt_misc directory this process reads ([`BINFMT_MISC_ENV`], else [`BINFMT_MISC`]).
pub fn binfmt_dir() -> PathBuf {
    std::env::var_os(BINFMT_MISC_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BINFMT_MISC))
}

/// Checks that RUN steps of `platform` can run on this host: natively, or through an enabled
/// binfmt_misc handler `qemu-<machine>` with the `F` flag in `dir`.
pub fn check(dir: &Path, platform: &Platform) -> Result<(), EmulationError> {
    if platform.runs_natively() {
        return Ok(());
    }
    let path = dir.join(format!("qemu-{}", platform.machine()));
    let Ok(entry) = std::fs::read_to_string(&path) else {
        return Err(EmulationError::NoHandler {
            platform: platform.to_string(),
            machine: platform.machine().to_string(),
            mounted: dir.join("status").exists(),
            path,
        });
    };
    let mut lines = entry.lines();
    if lines.next().map(str::trim) != Some("enabled") {
        return Err(EmulationError::Disabled {
            platform: platform.to_string(),
            path,
        });
    }
    let flags = entry
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(str::trim)
        .unwrap_or_default();
    if !flags.contains('F') {
        return Err(EmulationError::NotFixBinary {
            platform: platform.to_string(),
            path,
            flags: flags.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm64() -> Platform {
        Platform::parse("linux/arm64").unwrap()
    }

    fn foreign() -> Platform {
        if Platform::host().architecture == "arm64" {
            Platform::parse("linux/amd64").unwrap()
        } else {
            arm64()
        }
    }

    #[test]
    fn the_host_platform_needs_no_handler() {
        let d = tempfile::tempdir().unwrap();
        check(d.path(), &Platform::host()).unwrap();
    }

    #[test]
    fn a_missing_handler_names_the_platform_and_what_to_install() {
        let d = tempfile::tempdir().unwrap();
        let e = check(d.path(), &foreign()).unwrap_err();
        assert!(e.to_string().contains(&foreign().to_string()), "{e}");
        assert!(e.to_string().contains("not mounted"), "{e}");
        assert!(e.hint().contains("mount -t binfmt_misc"), "{}", e.hint());
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        let e = check(d.path(), &foreign()).unwrap_err();
        assert!(!e.to_string().contains("not mounted"), "{e}");
        assert!(e.hint().contains("qemu-user-static"), "{}", e.hint());
    }

    #[test]
    fn a_handler_must_be_enabled_and_fix_binary() {
        let d = tempfile::tempdir().unwrap();
        let p = foreign();
        let f = d.path().join(format!("qemu-{}", p.machine()));
        std::fs::write(&f, "disabled\ninterpreter /x\nflags: F\n").unwrap();
        assert!(matches!(
            check(d.path(), &p),
            Err(EmulationError::Disabled { .. })
        ));
        std::fs::write(&f, "enabled\ninterpreter /x\nflags: P\noffset 0\n").unwrap();
        let e = check(d.path(), &p).unwrap_err();
        assert!(matches!(e, EmulationError::NotFixBinary { .. }), "{e}");
        std::fs::write(&f, "enabled\ninterpreter /x\nflags: PF\noffset 0\n").unwrap();
        check(d.path(), &p).unwrap();
    }
}
