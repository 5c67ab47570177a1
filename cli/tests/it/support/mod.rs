//! Helpers shared by every module of the integration-test binary: the `strata` command, build
//! and run wrappers, fixture contexts, and tree readers.
//!
//! `strata()` removes `SOURCE_DATE_EPOCH` and `STRATA_STORE` from the environment it inherits,
//! always: `SOURCE_DATE_EPOCH` is a key input (it sets layer times and config dates), so a
//! developer's shell exporting it would change every digest and break the golden tests for a
//! reason unrelated to the code; `STRATA_STORE` would point a test at a shared store. A test
//! that wants an epoch passes `--source-date-epoch` or sets the variable on its own command.
#![allow(dead_code)] // each module uses a subset

pub mod platforms;
pub mod registry;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The `strata` binary under test, with a clean environment (see the module docs).
pub fn strata() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.env_remove("SOURCE_DATE_EPOCH").env_remove("STRATA_STORE");
    c
}

/// `strata --store STORE`, to add arguments to.
pub fn strata_at(store: &Path) -> Command {
    let mut c = strata();
    c.arg("--store").arg(store);
    c
}

/// `strata --store STORE ARGS…`, run to completion.
pub fn on_store(store: &Path, args: &[&str]) -> Output {
    strata_at(store).args(args).output().unwrap()
}

/// Its stdout, trimmed, after asserting it succeeded (stderr in the message otherwise).
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `(executed, cached)` from the `done: N steps executed, M cached, in …s` summary line.
pub fn done_counts(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("done: "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(2)
        .map(|w| w.parse().unwrap())
        .collect();
    (n[0], n[1])
}

/// `sha256:<hex>` of `bytes`, by `sha256sum` (not by the code under test).
pub fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// The lower-case hex SHA-256 of `bytes` (by `sha256sum`, as [`sha256`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha256(bytes)["sha256:".len()..].to_string()
}

/// A path under the repository's `testdata/`.
pub fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(p)
}

/// The bundled example context, `testdata/example`.
pub fn example() -> PathBuf {
    testdata("example")
}

/// `strata --store STORE ARGS…` as a [`Run`].
pub fn strata_in(store: &Path, args: &[&str]) -> Run {
    Run {
        out: on_store(store, args),
    }
}

/// A finished `strata build --progress json`.
pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn ok(self) -> Self {
        assert!(
            self.out.status.success(),
            "strata failed:\nstdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn fails(self) -> Self {
        assert!(
            !self.out.status.success(),
            "strata unexpectedly succeeded:\n{}",
            self.stderr()
        );
        self
    }
    pub fn digest(&self) -> String {
        let s = self.stdout();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "stdout must carry exactly one line, got {s:?}"
        );
        assert!(
            lines[0].starts_with("sha256:") && lines[0].len() == 71,
            "not a digest: {s:?}"
        );
        lines[0].to_string()
    }
    /// `--progress json` step events.
    pub fn steps(&self) -> Vec<Value> {
        self.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "step")
            .collect()
    }
    pub fn executed(&self) -> Vec<String> {
        self.steps()
            .into_iter()
            .filter(|s| s["status"] == "executed")
            .map(|s| s["instruction"].as_str().unwrap().to_string())
            .collect()
    }
}

/// `strata --store STORE build --progress json EXTRA… CONTEXT`.
pub fn build(store: &Path, context: &Path, extra: &[&str]) -> Run {
    let out = strata()
        .arg("--store")
        .arg(store)
        .arg("build")
        .args(["--progress", "json"])
        .args(extra)
        .arg(context)
        .output()
        .expect("run strata");
    Run { out }
}

pub fn write(p: &Path, data: impl AsRef<[u8]>) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

pub fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Whether `tool` is on `PATH`.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// RUN steps need root (as `.ci/test` runs the suite) and the static busybox: fail, saying how
/// to provide them, rather than pass untested. `what` names the test(s) in the message.
pub fn require_run(what: &str) {
    assert!(
        is_root(),
        "{what} runs RUN steps as root: run it as root (.ci/test does)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: install busybox-static (.ci/install-deps does)"
    );
}

/// A context whose Dockerfile starts from a busybox rootfs made with RUN itself (with
/// `/etc/passwd` and `/etc/group` naming root and `app` 1000), then `rest`.
pub fn busybox_context(dir: &Path, rest: &str) {
    fs::copy("/bin/busybox", dir.join("busybox"))
        .expect("busybox-static is installed by .ci/install-deps");
    write(
        &dir.join("Dockerfile"),
        format!(
            "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/usr/bin\", \"/sbin\", \"/usr/sbin\", \"/etc\", \"/tmp\"]\nRUN [\"/bin/busybox\", \"--install\", \"-s\"]\nRUN echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'root:x:0:' > /etc/group && echo 'app:x:1000:' >> /etc/group && chmod 1777 /tmp\n{rest}"
        ),
    );
}

/// Every path under `dir` (absolute, depth first, in readdir order); empty if `dir` is missing.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// Every path under `dir`, relative to it, sorted.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}

/// `umoci unpack` of the image `tag` of the OCI layout `oci` into `bundle` (rootless unless
/// root).
pub fn unpack(oci: &Path, tag: &str, bundle: &Path) {
    let mut c = Command::new("umoci");
    c.arg("unpack");
    if !is_root() {
        c.arg("--rootless");
    }
    let st = c
        .arg("--image")
        .arg(format!("{}:{tag}", oci.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// `tar -tvzf` of layer `back` from the top (0 = last) of the image `tag` in `oci`.
pub fn layer_listing(oci: &Path, tag: &str, back: usize) -> String {
    let json =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let blob = |d: &serde_json::Value| {
        oci.join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = json(&oci.join("index.json"));
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in index");
    let manifest = json(&blob(&m["digest"]));
    let layers = manifest["layers"].as_array().unwrap();
    let o = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(blob(&layers[layers.len() - 1 - back]["digest"]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `strata build --all` of the workspace `ws` with a JSON report: (the report, stderr), after
/// asserting it succeeded.
pub fn build_all(ws: &Path, store: &Path, extra: &[&str]) -> (Value, String) {
    let report = ws.join("report.json");
    let o = strata_at(store)
        .current_dir(ws)
        .args(["build", "--all", "--progress", "plain", "--report", "json"])
        .arg(&report)
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    (
        serde_json::from_slice(&fs::read(&report).unwrap()).unwrap(),
        err,
    )
}
