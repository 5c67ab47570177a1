//! `--peer buildah`: the same scenarios built with `buildah bud --layers`, in its own throwaway
//! storage, so the report can put buildah's wall time beside strata's.
//!
//! Buildah runs in the bench's copy of the context (so it sees exactly the change each scenario
//! made) with `--isolation chroot`; its storage lives under the bench's temp dir (overlay if it
//! works there, else vfs). `FROM oci-layout://DIR:TAG` is BuildKit syntax; buildah spells the
//! same image `oci:DIR:TAG`, so the peer reads a copy of the Dockerfile with that one rewrite
//! (paths stay relative to the context: buildah runs with the context as its working dir).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::{tail, which};

pub struct Buildah {
    exe: PathBuf,
    root: PathBuf,
    runroot: PathBuf,
    /// `overlay` until a build fails with it, then `vfs`.
    pub driver: &'static str,
    dockerfile: PathBuf,
    ctx_dir: PathBuf,
    target: Option<String>,
    builds: usize,
}

/// buildah's path, or the error the user sees when it is missing.
pub fn find() -> anyhow::Result<PathBuf> {
    match which("buildah") {
        Some(p) => Ok(p),
        None => bail!("error: `--peer buildah`: `buildah` is not on PATH\nhint: install it (Debian: `apt-get install buildah`), or run `strata bench` without `--peer`"),
    }
}

impl Buildah {
    /// Finds buildah (a clear error when it is missing) and prepares its storage dirs and
    /// Dockerfile under `work`.
    pub fn new(
        work: &Path,
        dockerfile: &Path,
        ctx_dir: &Path,
        target: Option<String>,
    ) -> anyhow::Result<Buildah> {
        let exe = find()?;
        let dir = work.join("buildah");
        let (root, runroot) = (dir.join("root"), dir.join("runroot"));
        for d in [&root, &runroot] {
            std::fs::create_dir_all(d).with_context(|| format!("creating `{}`", d.display()))?;
        }
        let text = std::fs::read_to_string(dockerfile)
            .with_context(|| format!("reading `{}`", dockerfile.display()))?;
        let peer_df = dir.join("Dockerfile");
        std::fs::write(&peer_df, text.replace("oci-layout://", "oci:"))
            .with_context(|| format!("writing `{}`", peer_df.display()))?;
        Ok(Buildah {
            exe,
            root,
            runroot,
            driver: "overlay",
            dockerfile: peer_df,
            ctx_dir: ctx_dir.to_path_buf(),
            target,
            builds: 0,
        })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--storage-driver")
            .arg(self.driver)
            .current_dir(&self.ctx_dir)
            .stdin(Stdio::null());
        c
    }

    fn bud(
        &self,
        build_args: &BTreeMap<String, String>,
    ) -> anyhow::Result<(Duration, bool, String)> {
        let mut c = self.command();
        c.args([
            "bud",
            "--layers",
            "--isolation",
            "chroot",
            "--quiet",
            "-t",
            "strata-bench-peer",
            "-f",
        ])
        .arg(&self.dockerfile);
        for (k, v) in build_args {
            c.arg("--build-arg").arg(format!("{k}={v}"));
        }
        if let Some(t) = &self.target {
            c.arg("--target").arg(t);
        }
        c.arg(".");
        let t0 = Instant::now();
        let out = c.output().context("running buildah")?;
        let wall = t0.elapsed();
        Ok((
            wall,
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// One `buildah bud --layers` of the context as it is now; its wall time.
    pub fn build(&mut self, build_args: &BTreeMap<String, String>) -> anyhow::Result<Duration> {
        let (wall, ok, err) = self.bud(build_args)?;
        self.builds += 1;
        if ok {
            return Ok(wall);
        }
        // Overlay storage needs a file system (and privileges) that supports it; the first
        // (cold) build tells. vfs always works, at the cost of full copies per layer.
        if self.driver == "overlay" && self.builds == 1 {
            self.cleanup();
            for d in [&self.root, &self.runroot] {
                let _ = std::fs::remove_dir_all(d);
                std::fs::create_dir_all(d)?;
            }
            self.driver = "vfs";
            let (wall, ok, err2) = self.bud(build_args)?;
            if ok {
                return Ok(wall);
            }
            bail!(
                "`buildah bud` failed with overlay storage:\n{}\nand with vfs storage:\n{}",
                tail(&err),
                tail(&err2)
            );
        }
        bail!(
            "`buildah bud` failed ({} storage):\n{}",
            self.driver,
            tail(&err)
        )
    }

    /// Removes buildah's containers and images so its storage can be deleted (overlay leaves
    /// mounts and read-only dirs otherwise).
    fn cleanup(&self) {
        for args in [&["rm", "--all"][..], &["rmi", "--all", "--force"][..]] {
            let _ = self
                .command()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        self.cleanup();
    }
}
