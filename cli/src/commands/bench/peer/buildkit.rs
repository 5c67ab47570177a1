//! `--peer buildkit`: the same scenarios built with BuildKit (`docker build`, `DOCKER_BUILDKIT=1`)
//! against a private dockerd the bench starts and stops: its data root, exec root and socket
//! live under the bench's temp dir, so its cache starts empty (a fair cold build) and nothing of
//! the machine's own daemon or images is touched.
//!
//! The daemon runs as these machines run it: `--bridge=none --iptables=false --ip6tables=false`,
//! and builds run with `--network none` (RUN steps are hermetic, as strata's are by default).
//! `FROM oci-layout://DIR:TAG` is a BuildKit named-context feature that `docker build` without
//! buildx lacks, so each such base is copied into the daemon by skopeo (again whenever the
//! layout's `index.json` changes, as the base-image scenario does; that copy is part of the
//! peer's time, as a pull would be) and the peer reads a copy of the Dockerfile that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::{is_executable, tail, which};

/// Debian's client first: another `docker` earlier on PATH may be a build without BuildKit.
const DOCKER_CANDIDATES: &[&str] = &["/usr/bin/docker"];
const DOCKERD_CANDIDATES: &[&str] = &["/usr/sbin/dockerd", "/usr/bin/dockerd"];

/// An `oci-layout://` base of the Dockerfile, as the private daemon knows it.
struct LayoutBase {
    /// As written after `oci-layout://` (`DIR:TAG`), relative to the context.
    written: String,
    /// The image name it is loaded as.
    name: String,
    /// The layout's `index.json` when it was last loaded.
    loaded: Option<Vec<u8>>,
}

pub struct BuildKit {
    docker: PathBuf,
    dir: PathBuf,
    sock: PathBuf,
    daemon: Option<Child>,
    dockerfile: PathBuf,
    ctx_dir: PathBuf,
    target: Option<String>,
    bases: Vec<LayoutBase>,
}

/// `name`: the path in the environment variable `var` when it is set, else the first of
/// `candidates` that exists, else the first on PATH.
fn find_tool(var: &str, candidates: &[&str], name: &str) -> anyhow::Result<PathBuf> {
    let hint = "hint: install Debian's `docker.io` (`apt-get install docker.io`: dockerd and a client whose `docker build` uses BuildKit), or run `strata bench` without `--peer`";
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        bail!(
            "error: `--peer buildkit`: {var}={} is not an executable\n{hint}",
            p.display()
        );
    }
    match candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
        .or_else(|| which(name))
    {
        Some(p) => Ok(p),
        None => bail!(
            "error: `--peer buildkit`: no `{name}` found ({} or on PATH)\n{hint}",
            candidates.join(", ")
        ),
    }
}

/// The docker client and dockerd (`STRATA_DOCKER`, `STRATA_DOCKERD` choose others), or the
/// error the user sees when either is missing or the bench cannot start a daemon. Checked
/// before the bench copies a big context.
pub fn find() -> anyhow::Result<(PathBuf, PathBuf)> {
    let docker = find_tool("STRATA_DOCKER", DOCKER_CANDIDATES, "docker")?;
    let dockerd = find_tool("STRATA_DOCKERD", DOCKERD_CANDIDATES, "dockerd")?;
    if !rustix::process::geteuid().is_root() {
        bail!("error: `--peer buildkit` starts a private dockerd, which needs root\nhint: run the bench as root, or use `--peer buildah`");
    }
    Ok((docker, dockerd))
}

/// The `oci-layout://` references of a Dockerfile's text (each once, in order).
fn layout_refs(text: &str) -> Vec<String> {
    let mut refs: Vec<String> = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        let Some(i) = word.find("oci-layout://") else {
            continue;
        };
        let r = word[i + "oci-layout://".len()..].to_string();
        if !r.is_empty() && !refs.contains(&r) {
            refs.push(r);
        }
    }
    refs
}

impl BuildKit {
    /// Starts the private dockerd under `work` and prepares the peer's Dockerfile.
    pub fn new(
        work: &Path,
        dockerfile: &Path,
        ctx_dir: &Path,
        target: Option<String>,
    ) -> anyhow::Result<BuildKit> {
        let (docker, dockerd) = find()?;
        let text = std::fs::read_to_string(dockerfile)
            .with_context(|| format!("reading `{}`", dockerfile.display()))?;
        let mut peer_text = text.clone();
        let mut bases = Vec::new();
        for (i, r) in layout_refs(&text).into_iter().enumerate() {
            if r.contains('@') {
                bail!("error: `--peer buildkit`: the base `oci-layout://{r}` names its image by digest, which is not supported yet with this peer\nhint: name it by tag (`oci-layout://DIR:TAG`)");
            }
            let name = format!("strata-bench-base-{i}:latest");
            peer_text = peer_text.replace(&format!("oci-layout://{r}"), &name);
            bases.push(LayoutBase {
                written: r,
                name,
                loaded: None,
            });
        }
        if !bases.is_empty() && which("skopeo").is_none() {
            bail!("error: `--peer buildkit`: copying the `oci-layout://` base into the peer's dockerd needs `skopeo`\nhint: apt-get install skopeo");
        }
        let dir = work.join("buildkit");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
        let peer_df = dir.join("Dockerfile");
        std::fs::write(&peer_df, peer_text)
            .with_context(|| format!("writing `{}`", peer_df.display()))?;
        let sock = dir.join("docker.sock");
        let mut bk = BuildKit {
            docker,
            dir: dir.clone(),
            sock,
            daemon: None,
            dockerfile: peer_df,
            ctx_dir: ctx_dir.to_path_buf(),
            target,
            bases,
        };
        bk.start(&dockerd)?;
        Ok(bk)
    }

    fn start(&mut self, dockerd: &Path) -> anyhow::Result<()> {
        let log_path = self.dir.join("dockerd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating `{}`", log_path.display()))?;
        let child = Command::new(dockerd)
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", self.sock.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting `{}`", dockerd.display()))?;
        self.daemon = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            let up = self
                .client()
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.daemon.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!(
                    "error: `--peer buildkit`: the private dockerd exited ({st}):\n{}",
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!(
            "error: `--peer buildkit`: the private dockerd did not answer in 60 s:\n{}",
            tail(&log)
        )
    }

    fn client(&self) -> Command {
        let mut c = Command::new(&self.docker);
        c.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .current_dir(&self.ctx_dir)
            .stdin(Stdio::null());
        c
    }

    /// Copies each `oci-layout://` base whose `index.json` changed since its last copy into the
    /// daemon.
    fn load_bases(&mut self) -> anyhow::Result<()> {
        for b in &mut self.bases {
            let (dir, tag) = match b.written.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') => (d, Some(t)),
                _ => (b.written.as_str(), None),
            };
            let index = self.ctx_dir.join(dir).join("index.json");
            let now =
                std::fs::read(&index).with_context(|| format!("reading `{}`", index.display()))?;
            if b.loaded.as_ref() == Some(&now) {
                continue;
            }
            let src = match tag {
                Some(t) => format!("oci:{dir}:{t}"),
                None => format!("oci:{dir}"),
            };
            let out = Command::new("skopeo")
                .args(["copy", "-q", "--dest-daemon-host"])
                .arg(format!("unix://{}", self.sock.display()))
                .arg(&src)
                .arg(format!("docker-daemon:{}", b.name))
                .current_dir(&self.ctx_dir)
                .stdin(Stdio::null())
                .output()
                .context("running skopeo")?;
            if !out.status.success() {
                bail!(
                    "`skopeo copy {src}` into the peer's dockerd failed:\n{}",
                    tail(&String::from_utf8_lossy(&out.stderr))
                );
            }
            b.loaded = Some(now);
        }
        Ok(())
    }

    /// One `docker build` of the context as it is now (with the bases copied in first when
    /// they changed); its wall time.
    pub fn build(&mut self, build_args: &BTreeMap<String, String>) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.load_bases()?;
        let mut c = self.client();
        c.env("DOCKER_BUILDKIT", "1")
            .args([
                "build",
                "--network",
                "none",
                "-q",
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
        let out = c.output().context("running docker build")?;
        let wall = t0.elapsed();
        if !out.status.success() {
            bail!(
                "`docker build` (BuildKit) failed:\n{}",
                tail(&String::from_utf8_lossy(&out.stderr))
            );
        }
        Ok(wall)
    }

    /// Stops the daemon (TERM, then KILL after 30 s) and unmounts what it left under its
    /// directory, so the bench's temp dir can be removed.
    fn stop(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
            // Its managed containerd outlives a killed dockerd.
            let pidfile = self.dir.join("exec/containerd/containerd.pid");
            if let Some(p) = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
            }
        }
        // Deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefix = format!("{}/", self.dir.display());
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        under.sort_by(|a, b| b.cmp(a));
        for m in under {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

impl Drop for BuildKit {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_layout_reference_once() {
        let df = "FROM oci-layout://base:1 AS a\nFROM \"oci-layout://other:2\"\nCOPY --from=oci-layout://base:1 / /\nFROM alpine\n";
        assert_eq!(layout_refs(df), ["base:1", "other:2"]);
        assert!(layout_refs("FROM scratch\n").is_empty());
    }
}
