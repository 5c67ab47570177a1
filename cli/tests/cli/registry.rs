//! Registries end to end, against the real CNCF distribution registry (`docker-registry`,
//! installed by .ci/install-deps) and skopeo on the other side, plus a fake registry on a
//! `TcpListener` for the failures a real one does not produce on demand.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{build, strata, write, Run};

/// A `docker-registry serve` on 127.0.0.1, a free port and a temporary root; killed on drop.
pub struct Registry {
    child: Child,
    pub host: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// With htpasswd Basic auth for `user`/`password`.
    pub fn start_with(basic: Option<(&str, &str)>) -> Registry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.is_file(),
            "docker-registry (the CNCF distribution registry) is not installed: run .ci/install-deps"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut auth = String::new();
        if let Some((u, p)) = basic {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils) is not installed: run .ci/install-deps");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                file.display()
            );
        }
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth}",
                dir.path().join("root").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let logf = fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap();
        let r = Registry {
            child,
            host,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(&r.host) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut line = String::new();
                let _ = BufReader::new(s).read_line(&mut line);
                if line.contains(" 200 ") || line.contains(" 401 ") {
                    return r;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer /v2/ within 30 s; its log:\n{}",
                r.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `(method, uri)` of every request the registry logged, in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for l in self.log_text().lines() {
            if !l.contains("response completed") {
                continue;
            }
            let field = |k: &str| {
                let at = l.find(&format!("{k}="))? + k.len() + 1;
                let rest = &l[at..];
                let v = if let Some(q) = rest.strip_prefix('"') {
                    &q[..q.find('"')?]
                } else {
                    rest.split(' ').next()?
                };
                Some(v.to_string())
            };
            if let (Some(m), Some(u)) = (field("http.request.method"), field("http.request.uri")) {
                out.push((m, u));
            }
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic incompressible bytes (xorshift), so a layer is as large as its content.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn oci_manifest_digest(layout: &Path) -> String {
    let idx: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    idx["manifests"][0]["digest"].as_str().unwrap().to_string()
}

#[allow(dead_code)]
fn store_blobs(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.join("blobs/sha256"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn strata_in(store: &Path, args: &[&str]) -> Run {
    Run {
        out: strata()
            .arg("--store")
            .arg(store)
            .args(args)
            .output()
            .unwrap(),
    }
}

#[test]
fn registry_push_is_read_by_skopeo_and_a_second_push_skips_every_blob() {
    let reg = Registry::start();
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch\nCOPY small.txt /small.txt\nCOPY big.bin /big.bin\nCMD [\"/x\"]\n",
    );
    write(&ctx.join("small.txt"), "hello\n");
    // 20 MiB that do not compress: its layer is pushed in chunks (PATCH with Content-Range).
    fs::write(ctx.join("big.bin"), noise(20 << 20, 7)).unwrap();
    let oci = work.path().join("oci");
    let target = format!("{}/team/app:1", reg.host);
    let built = build(
        store.path(),
        &ctx,
        &[
            "-t",
            "app:1",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            "--output",
            &format!("type=registry,name={target}"),
        ],
    )
    .ok();
    let digest = built.digest();
    assert_eq!(
        digest,
        oci_manifest_digest(&oci),
        "the pushed digest is the OCI output's"
    );
    assert!(
        built.stderr().contains("3 blobs uploaded (1 chunked"),
        "{}",
        built.stderr()
    );
    let patches = reg
        .requests()
        .iter()
        .filter(|(m, u)| m == "PATCH" && u.contains("/v2/team/app/blobs/uploads/"))
        .count();
    assert!(
        patches >= 3,
        "a 20 MiB layer in 8 MiB chunks: {patches} PATCHes"
    );

    // skopeo reads what strata pushed, and sees the same manifest digest.
    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], digest);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    let copied = work.path().join("copied");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{target}"),
        &format!("oci:{}:1", copied.display()),
    ]);
    assert_eq!(oci_manifest_digest(&copied), digest);

    // Again: the registry has every blob, so nothing is uploaded.
    let before = reg.requests().len();
    let again = strata_in(store.path(), &["push", "app:1", &target]).ok();
    assert_eq!(again.digest(), digest);
    assert!(
        again
            .stderr()
            .contains("0 blobs uploaded (0 chunked, 0 bytes), 0 mounted, 3 already there"),
        "{}",
        again.stderr()
    );
    let new: Vec<_> = reg.requests().into_iter().skip(before).collect();
    assert!(
        !new.iter()
            .any(|(m, u)| u.contains("/blobs/uploads/") || m == "PATCH"),
        "no upload session on a second push: {new:?}"
    );
    assert_eq!(
        new.iter().filter(|(m, _)| m == "HEAD").count(),
        3,
        "{new:?}"
    );

    // Another repository of the same registry: every blob is mounted, none uploaded.
    let other = format!("{}/other/app:2", reg.host);
    let mounted = strata_in(store.path(), &["push", "app:1", &other]).ok();
    assert_eq!(mounted.digest(), digest);
    assert!(
        mounted
            .stderr()
            .contains("0 blobs uploaded (0 chunked, 0 bytes), 3 mounted"),
        "{}",
        mounted.stderr()
    );
    assert!(reg
        .requests()
        .iter()
        .any(|(m, u)| m == "POST" && u.contains("mount=") && u.contains("from=team/app")));
    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{other}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], digest);
}

#[test]
fn registry_basic_auth_from_auth_files_and_a_clear_401_without() {
    let reg = Registry::start_with(Some(("strata", "pa55word")));
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    write(&ctx.join("Dockerfile"), "FROM scratch\nCOPY a.txt /a.txt\n");
    write(&ctx.join("a.txt"), "a\n");
    build(store.path(), &ctx, &["-t", "app:1"]).ok();
    let target = format!("{}/app:1", reg.host);
    let empty_home = work.path().join("home");
    fs::create_dir_all(&empty_home).unwrap();

    // No credentials anywhere: a 401 with the hint to log in.
    let denied = Run {
        out: strata()
            .env("HOME", &empty_home)
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .arg("--store")
            .arg(store.path())
            .args(["push", "app:1", &target])
            .output()
            .unwrap(),
    }
    .fails();
    let e = denied.stderr();
    assert!(e.contains("authentication required (HTTP 401)"), "{e}");
    assert!(
        e.contains(&reg.host) && e.contains("`app`"),
        "names registry and repository: {e}"
    );
    assert!(
        e.contains("hint: log in") && e.contains("REGISTRY_AUTH_FILE"),
        "{e}"
    );

    // podman's auth.json through $REGISTRY_AUTH_FILE.
    let b64 = base64_encode(b"strata:pa55word");
    let auth = work.path().join("auth.json");
    fs::write(
        &auth,
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host),
    )
    .unwrap();
    let pushed = Run {
        out: strata()
            .env("HOME", &empty_home)
            .env_remove("DOCKER_CONFIG")
            .env("REGISTRY_AUTH_FILE", &auth)
            .arg("--store")
            .arg(store.path())
            .args(["push", "app:1", &target])
            .output()
            .unwrap(),
    }
    .ok();
    let digest = pushed.digest();

    // docker's config.json through $DOCKER_CONFIG, to another tag.
    let dcfg = work.path().join("docker");
    fs::create_dir_all(&dcfg).unwrap();
    fs::write(
        dcfg.join("config.json"),
        format!(
            r#"{{"auths":{{"http://{}":{{"username":"strata","password":"pa55word"}}}}}}"#,
            reg.host
        ),
    )
    .unwrap();
    let target2 = format!("{}/app:2", reg.host);
    let pushed2 = Run {
        out: strata()
            .env("HOME", &empty_home)
            .env("DOCKER_CONFIG", &dcfg)
            .env_remove("REGISTRY_AUTH_FILE")
            .arg("--store")
            .arg(store.path())
            .args(["push", "app:1", &target2])
            .output()
            .unwrap(),
    }
    .ok();
    assert_eq!(pushed2.digest(), digest);
    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "strata:pa55word",
        &format!("docker://{target2}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], digest);
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
