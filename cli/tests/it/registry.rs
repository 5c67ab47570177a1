//! Registries end to end, against the real CNCF distribution registry (`docker-registry`,
//! installed by .ci/install-deps) and skopeo on the other side, plus a fake registry on a
//! `TcpListener` for the failures a real one does not produce on demand.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::registry::Registry;
use crate::support::{self, build, strata, strata_in, write, Run};

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

    // Pulling needs the credentials too: FROM the pushed image, in a fresh store.
    let ctx2 = work.path().join("ctx2");
    write(
        &ctx2.join("Dockerfile"),
        format!("FROM {target}\nCOPY b.txt /b.txt\n"),
    );
    write(&ctx2.join("b.txt"), "b\n");
    let from = |env: &[(&str, &Path)], store: &Path| Run {
        out: strata()
            .env("HOME", &empty_home)
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--store")
            .arg(store)
            .args(["build", "--progress", "plain"])
            .arg(&ctx2)
            .output()
            .unwrap(),
    };
    let fresh = tempfile::tempdir().unwrap();
    let e = from(&[], fresh.path()).fails().stderr();
    assert!(
        e.contains("authentication required (HTTP 401)") && e.contains("hint: log in"),
        "{e}"
    );
    assert!(e.contains("Dockerfile:1"), "points at the FROM line: {e}");
    from(&[("REGISTRY_AUTH_FILE", &auth)], fresh.path())
        .ok()
        .digest();
    let fresh = tempfile::tempdir().unwrap();
    from(&[("DOCKER_CONFIG", &dcfg)], fresh.path())
        .ok()
        .digest();
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

/// One canned response of the fake registry.
#[derive(Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send a `Content-Length` (else the body ends when the connection closes).
    length: bool,
    /// Close the connection after this many body bytes.
    cut_at: Option<usize>,
}

impl Reply {
    pub fn ok(body: Vec<u8>, content_type: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
            length: true,
            cut_at: None,
        }
    }
    pub fn status(status: u16, headers: &[(&str, &str)]) -> Reply {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: br#"{"errors":[{"code":"FAKE","message":"canned"}]}"#.to_vec(),
            length: true,
            cut_at: None,
        }
    }
}

type Route = dyn Fn(&str, &str, Option<&str>) -> Reply + Send + Sync;

/// A registry that answers every request with what `route(method, path, authorization)` says,
/// one request per connection, and counts them.
pub struct FakeRegistry {
    pub host: String,
    pub hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeRegistry {
    pub fn start(
        route: impl Fn(&str, &str, Option<&str>) -> Reply + Send + Sync + 'static,
    ) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = hits.clone();
        let route: std::sync::Arc<Route> = std::sync::Arc::new(route);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let route = route.clone();
                let h = h.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut auth = None;
                    loop {
                        let mut l = String::new();
                        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("authorization") {
                                auth = Some(v.trim().to_string());
                            }
                        }
                    }
                    let mut parts = line.split(' ');
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    h.lock().unwrap().push(format!("{method} {path}"));
                    let r = route(&method, &path, auth.as_deref());
                    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", r.status);
                    for (k, v) in &r.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    if r.length {
                        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
                    }
                    head.push_str("\r\n");
                    let _ = conn.write_all(head.as_bytes());
                    if method != "HEAD" {
                        let body = &r.body[..r.cut_at.unwrap_or(r.body.len()).min(r.body.len())];
                        let _ = conn.write_all(body);
                    }
                    let _ = conn.flush();
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        FakeRegistry { host, hits }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.contains(needle))
            .count()
    }
}

/// A one-layer image (a gzip tar holding `/hello.txt`) as the fake registry serves it.
struct FakeImage {
    manifest: Vec<u8>,
    manifest_digest: String,
    config: Vec<u8>,
    config_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
}

fn fake_image(work: &Path) -> FakeImage {
    let root = work.join("layer-root");
    write(&root.join("hello.txt"), "hello from the fake registry\n");
    let tgz = work.join("layer.tar.gz");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--owner=0", "--group=0", "-czf"])
        .arg(&tgz)
        .arg("hello.txt")
        .status()
        .unwrap();
    assert!(st.success());
    let layer = fs::read(&tgz).unwrap();
    let tar = Command::new("gzip")
        .args(["-dc"])
        .arg(&tgz)
        .output()
        .unwrap()
        .stdout;
    let layer_digest = support::sha256(&layer);
    let diff_id = support::sha256(&tar);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["FROM_FAKE=1"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    )
    .into_bytes();
    let config_digest = support::sha256(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    )
    .into_bytes();
    let manifest_digest = support::sha256(&manifest);
    FakeImage {
        manifest,
        manifest_digest,
        config,
        config_digest,
        layer,
        layer_digest,
    }
}

/// Serves `img` as `fake/img:1`; `special` may answer a request differently first.
fn serve(
    img: &FakeImage,
    special: impl Fn(&str, &str) -> Option<Reply> + Send + Sync + 'static,
) -> FakeRegistry {
    let (m, md, c, cd, l, ld) = (
        img.manifest.clone(),
        img.manifest_digest.clone(),
        img.config.clone(),
        img.config_digest.clone(),
        img.layer.clone(),
        img.layer_digest.clone(),
    );
    FakeRegistry::start(move |method, path, _auth| {
        if let Some(r) = special(method, path) {
            return r;
        }
        if path == "/v2/fake/img/manifests/1" || path == format!("/v2/fake/img/manifests/{md}") {
            let mut r = Reply::ok(m.clone(), "application/vnd.oci.image.manifest.v1+json");
            r.headers.push(("Docker-Content-Digest".into(), md.clone()));
            return r;
        }
        if path == format!("/v2/fake/img/blobs/{cd}") {
            return Reply::ok(c.clone(), "application/octet-stream");
        }
        if path == format!("/v2/fake/img/blobs/{ld}") {
            return Reply::ok(l.clone(), "application/octet-stream");
        }
        Reply::status(404, &[])
    })
}

fn build_from(store: &Path, work: &Path, base: &str) -> Run {
    let ctx = work.join("ctx");
    write(
        &ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY a.txt /a.txt\n"),
    );
    write(&ctx.join("a.txt"), "a\n");
    build(store, &ctx, &[])
}

fn assert_not_stored(store: &Path, digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        !store_blobs(store).iter().any(|b| b == hex),
        "{digest} must not be in the store"
    );
    let tmp: Vec<_> = fs::read_dir(store.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        tmp.iter()
            .all(|n| !n.to_string_lossy().starts_with("blob-")),
        "no partial blob left in tmp/: {tmp:?}"
    );
}

#[test]
fn registry_fake_serving_corrupt_truncated_or_oversized_content_is_refused_and_nothing_kept() {
    let work = tempfile::tempdir().unwrap();
    let img = fake_image(work.path());

    // A good image first: the fake serves something strata can build on.
    let fake = serve(&img, |_, _| None);
    let store = tempfile::tempdir().unwrap();
    let ok = build_from(
        store.path(),
        work.path(),
        &format!("{}/fake/img:1", fake.host),
    )
    .ok();
    ok.digest();
    assert!(store_blobs(store.path()).contains(&img.layer_digest[7..].to_string()));

    // A layer whose content does not hash to its digest (same size, one byte changed).
    let mut bad = img.layer.clone();
    let n = bad.len();
    bad[n - 5] ^= 0xff;
    let ld = img.layer_digest.clone();
    let fake = serve(&img, move |_, p| {
        (p == format!("/v2/fake/img/blobs/{ld}"))
            .then(|| Reply::ok(bad.clone(), "application/octet-stream"))
    });
    let store = tempfile::tempdir().unwrap();
    let e = build_from(
        store.path(),
        work.path(),
        &format!("{}/fake/img:1", fake.host),
    )
    .fails()
    .stderr();
    assert!(
        e.contains("hashes to") && e.contains(&img.layer_digest),
        "{e}"
    );
    assert!(
        e.contains("nothing was stored") && e.contains("fake/img"),
        "{e}"
    );
    assert_not_stored(store.path(), &img.layer_digest);

    // A truncated layer: the connection closes halfway; retried, then refused.
    let ld = img.layer_digest.clone();
    let layer = img.layer.clone();
    let fake = serve(&img, move |_, p| {
        (p == format!("/v2/fake/img/blobs/{ld}")).then(|| {
            let mut r = Reply::ok(layer.clone(), "application/octet-stream");
            r.cut_at = Some(layer.len() / 2);
            r
        })
    });
    let store = tempfile::tempdir().unwrap();
    let e = build_from(
        store.path(),
        work.path(),
        &format!("{}/fake/img:1", fake.host),
    )
    .fails()
    .stderr();
    assert!(e.contains("blob truncated: received"), "{e}");
    assert!(e.contains("after 5 attempts"), "{e}");
    assert_eq!(
        fake.count(&format!("GET /v2/fake/img/blobs/{}", img.layer_digest)),
        5
    );
    assert_not_stored(store.path(), &img.layer_digest);

    // A config that does not match its digest: refused at plan time.
    let cd = img.config_digest.clone();
    let fake = serve(&img, move |_, p| {
        (p == format!("/v2/fake/img/blobs/{cd}")).then(|| {
            Reply::ok(
                br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
                "application/octet-stream",
            )
        })
    });
    let store = tempfile::tempdir().unwrap();
    let e = build_from(
        store.path(),
        work.path(),
        &format!("{}/fake/img:1", fake.host),
    )
    .fails()
    .stderr();
    assert!(e.contains("blob size") || e.contains("hashes to"), "{e}");
    assert_not_stored(store.path(), &img.config_digest);

    // A manifest whose bytes are not what the registry's Docker-Content-Digest says.
    let m = img.manifest.clone();
    let fake = serve(&img, move |_, p| {
        (p == "/v2/fake/img/manifests/1").then(|| {
            let mut r = Reply::ok(m.clone(), "application/vnd.oci.image.manifest.v1+json");
            r.headers.push((
                "Docker-Content-Digest".into(),
                format!("sha256:{}", "0".repeat(64)),
            ));
            r
        })
    });
    let store = tempfile::tempdir().unwrap();
    let e = build_from(
        store.path(),
        work.path(),
        &format!("{}/fake/img:1", fake.host),
    )
    .fails()
    .stderr();
    assert!(e.contains("hashes to") && e.contains("manifest"), "{e}");
    assert_not_stored(store.path(), &img.manifest_digest);

    // An oversized manifest (5 MiB, no Content-Length: the limit holds while reading).
    let fake = serve(&img, move |_, p| {
        (p == "/v2/fake/img/manifests/1").then(|| {
            let mut body = br#"{"schemaVersion":2,"x":""#.to_vec();
            body.extend(std::iter::repeat_n(b'a', 5 << 20));
            let mut r = Reply::ok(body, "application/vnd.oci.image.manifest.v1+json");
            r.length = false;
            r
        })
    });
    let store = tempfile::tempdir().unwrap();
    let e = build_from(
        store.path(),
        work.path(),
        &format!("{}/fake/img:1", fake.host),
    )
    .fails()
    .stderr();
    assert!(e.contains("larger than 4194304 bytes"), "{e}");
    assert!(store_blobs(store.path()).is_empty(), "nothing stored");
}

#[test]
fn registry_fake_statuses_each_get_their_message_and_retries_are_bounded() {
    let work = tempfile::tempdir().unwrap();
    let img = fake_image(work.path());
    let cases: [(u16, &str, &str); 3] = [
        (404, "not found (HTTP 404)", "hint: check the name and tag"),
        (
            403,
            "access denied (HTTP 403)",
            "hint: the credentials in use are not allowed",
        ),
        (
            429,
            "too many requests (HTTP 429), still refused after 5 attempts",
            "hint: the registry is rate-limiting",
        ),
    ];
    for (status, msg, hint) in cases {
        let fake = serve(&img, move |_, p| {
            (p == "/v2/fake/img/manifests/1")
                .then(|| Reply::status(status, &[("Retry-After", "0")]))
        });
        let store = tempfile::tempdir().unwrap();
        let e = build_from(
            store.path(),
            work.path(),
            &format!("{}/fake/img:1", fake.host),
        )
        .fails()
        .stderr();
        assert!(e.contains(msg) && e.contains(hint), "{status}: {e}");
        assert!(
            e.contains(&format!(
                "registry `{}`, repository `fake/img`: pull manifest `1`",
                fake.host
            )),
            "names registry, repository and operation: {e}"
        );
        if status != 429 {
            assert!(
                e.contains("FAKE: canned"),
                "the registry's own message: {e}"
            );
        }
        let expected = if status == 429 { 5 } else { 1 };
        assert_eq!(
            fake.count("GET /v2/fake/img/manifests/1"),
            expected,
            "{status}"
        );
        assert!(store_blobs(store.path()).is_empty());
    }

    // A 503 then success: retried, and the build goes through.
    let failed_once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = failed_once.clone();
    let fake = serve(&img, move |_, p| {
        (p == "/v2/fake/img/manifests/1" && !f.swap(true, std::sync::atomic::Ordering::SeqCst))
            .then(|| Reply::status(503, &[]))
    });
    let store = tempfile::tempdir().unwrap();
    build_from(
        store.path(),
        work.path(),
        &format!("{}/fake/img:1", fake.host),
    )
    .ok();
    assert_eq!(fake.count("GET /v2/fake/img/manifests/1"), 2);
}

#[test]
fn registry_fake_anonymous_bearer_token_flow() {
    let work = tempfile::tempdir().unwrap();
    let img = fake_image(work.path());
    let host = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let h = host.clone();
    let fake = serve(&img, move |_, _| None);
    // A second fake in front: demands a token, issues it at /token, then proxies to `fake`'s
    // canned answers through the same routing.
    let (m, md, c, cd, l, ld) = (
        img.manifest.clone(),
        img.manifest_digest.clone(),
        img.config.clone(),
        img.config_digest.clone(),
        img.layer.clone(),
        img.layer_digest.clone(),
    );
    drop(fake);
    let guarded = FakeRegistry::start(move |_, p, auth| {
        if p.starts_with("/token?") {
            assert!(p.contains("service=fake-service"), "{p}");
            assert!(p.contains("scope=repository%3Afake%2Fimg%3Apull"), "{p}");
            return Reply::ok(br#"{"token":"t0k"}"#.to_vec(), "application/json");
        }
        if auth != Some("Bearer t0k") {
            let realm = format!(
                r#"Bearer realm="http://{}/token",service="fake-service",scope="repository:fake/img:pull""#,
                h.lock().unwrap()
            );
            return Reply::status(401, &[("WWW-Authenticate", &realm)]);
        }
        if p == "/v2/fake/img/manifests/1" {
            let mut r = Reply::ok(m.clone(), "application/vnd.oci.image.manifest.v1+json");
            r.headers.push(("Docker-Content-Digest".into(), md.clone()));
            return r;
        }
        if p == format!("/v2/fake/img/blobs/{cd}") {
            return Reply::ok(c.clone(), "application/octet-stream");
        }
        if p == format!("/v2/fake/img/blobs/{ld}") {
            return Reply::ok(l.clone(), "application/octet-stream");
        }
        Reply::status(404, &[])
    });
    *host.lock().unwrap() = guarded.host.clone();
    let store = tempfile::tempdir().unwrap();
    build_from(
        store.path(),
        work.path(),
        &format!("{}/fake/img:1", guarded.host),
    )
    .ok();
    assert_eq!(
        guarded.count("GET /token?"),
        1,
        "one token for the whole pull"
    );
}

/// The busybox base built by strata (FROM scratch + COPY busybox), as an OCI layout at `dir`
/// tagged `1`, with `MARK=amd64` in its environment.
fn busybox_base(store: &Path, work: &Path, dir: &Path, extra: &[&str]) -> String {
    let ctx = work.join("base-ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox"))
        .expect("busybox-static is installed by .ci/install-deps");
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENV MARK=amd64\n",
    );
    let out = format!("type=oci,dest={}", dir.display());
    let mut args = vec!["-t", "base:1", "--output", &out];
    args.extend_from_slice(extra);
    build(store, &ctx, &args).ok().digest()
}

/// Adds to the layout at `dir` an index `multi` of two manifests: the image tagged `1`
/// (linux/amd64) and a linux/arm64 copy whose config says `MARK=arm64`.
fn add_two_platform_index(dir: &Path) {
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let put = |bytes: &[u8]| -> String {
        let d = support::sha256(bytes);
        fs::write(blob(&d), bytes).unwrap();
        d
    };
    let mut index: Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let amd = index["manifests"][0].clone();
    let md = amd["digest"].as_str().unwrap();
    let mut manifest: Value = serde_json::from_slice(&fs::read(blob(md)).unwrap()).unwrap();
    let cd = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: Value = serde_json::from_slice(&fs::read(blob(&cd)).unwrap()).unwrap();
    config["architecture"] = "arm64".into();
    config["config"]["Env"] = serde_json::json!(["MARK=arm64"]);
    let cbytes = serde_json::to_vec(&config).unwrap();
    let arm_cd = put(&cbytes);
    manifest["config"]["digest"] = arm_cd.into();
    manifest["config"]["size"] = cbytes.len().into();
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let arm_md = put(&mbytes);
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_md, "size": mbytes.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": amd["size"],
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    let ibytes = serde_json::to_vec(&nested).unwrap();
    let id = put(&ibytes);
    index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": ibytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}
    }));
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// The content of `path` in the last layer of the image tagged `tag` in the layout `dir`.
fn file_in_top_layer(dir: &Path, path: &str) -> String {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(&fs::read(blob(md)).unwrap()).unwrap();
    let top = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(blob(&top))
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn registry_pull_what_skopeo_pushed_and_run_on_top() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let base_store = tempfile::tempdir().unwrap();
    let layout = work.path().join("base");
    busybox_base(base_store.path(), work.path(), &layout, &[]);
    add_two_platform_index(&layout);
    let src = format!("oci:{}:1", layout.display());
    let h = &reg.host;
    // Uncompressed layers: the source of the zstd copy (skopeo 1.9 recompresses only
    // uncompressed layers) and, pushed by strata, an uncompressed base. Both go to a second
    // registry: skopeo's blob-info cache would otherwise reuse the gzip blob of the same content
    // that it pushed to the first one instead of compressing with zstd.
    let reg2 = Registry::start();
    let h2 = &reg2.host;
    let plain = work.path().join("plain");
    busybox_base(
        base_store.path(),
        work.path(),
        &plain,
        &["--compression", "none"],
    );
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd",
        &format!("oci:{}:1", plain.display()),
        &format!("docker://{h2}/base/zstd:1"),
    ]);
    strata_in(
        base_store.path(),
        &["push", "base:1", &format!("{h2}/base/plain:1")],
    )
    .ok();
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &src,
        &format!("docker://{h}/base/oci:1"),
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &src,
        &format!("docker://{h}/base/docker:1"),
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--all",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{h}/base/multi:1"),
    ]);
    let zstd: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{h2}/base/zstd:1"),
    ]))
    .unwrap();
    assert!(
        zstd["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .ends_with("+zstd"),
        "{zstd}"
    );
    let docker: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{h}/base/docker:1"),
    ]))
    .unwrap();
    assert_eq!(
        docker["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    let store = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for (host, repo) in [
        (h, "oci"),
        (h, "docker"),
        (h2, "zstd"),
        (h, "multi"),
        (h2, "plain"),
    ] {
        let ctx = work.path().join(format!("ctx-{repo}"));
        write(
            &ctx.join("Dockerfile"),
            format!(
                "FROM {host}/base/{repo}:1\nCOPY a.txt /a.txt\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $MARK > /mark\"]\n"
            ),
        );
        write(&ctx.join("a.txt"), "a\n");
        let out = work.path().join(format!("out-{repo}"));
        let run = build(
            store.path(),
            &ctx,
            &["--output", &format!("type=oci,dest={}", out.display())],
        )
        .ok();
        // The index resolves to linux/amd64 (the host's platform), not the arm64 entry.
        assert_eq!(file_in_top_layer(&out, "mark"), "amd64\n", "{repo}");
        digests.push(run.digest());
    }
    // Same base content (OCI and Docker shapes, and the amd64 entry of the index, share layers
    // and config), so the oci, docker and multi images agree; zstd layers differ in digest.
    assert_eq!(
        digests[0], digests[3],
        "multi's amd64 entry is the oci image"
    );
    let plain_raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{h2}/base/plain:1"),
    ]))
    .unwrap();
    assert_eq!(
        plain_raw["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar",
        "{plain_raw}"
    );

    // By digest, once in the store: no network needed.
    let pinned: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{h}/base/oci:1"),
    ]))
    .unwrap();
    let pinned = pinned["Digest"].as_str().unwrap().to_string();
    let ctx = work.path().join("ctx-pinned");
    write(
        &ctx.join("Dockerfile"),
        format!("FROM {h}/base/oci@{pinned}\nCOPY b.txt /b.txt\n"),
    );
    write(&ctx.join("b.txt"), "b\n");
    build(store.path(), &ctx, &[]).ok();
    drop(reg);
    write(&ctx.join("b.txt"), "b, changed, offline\n");
    build(store.path(), &ctx, &[]).ok();
}

/// Two machines share one registry cache: store A builds FROM a registry base with
/// `--cache-to registry:…`; store B, empty, builds with `--cache-from`: no step executes, the
/// digest is the same, and B's pushed image equals A's.
#[test]
fn registry_cache_shared_by_two_stores_executes_nothing_on_the_second() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let seed = tempfile::tempdir().unwrap();
    // A base in the registry: strata's busybox image, pushed.
    let layout = work.path().join("base-layout");
    busybox_base(seed.path(), work.path(), &layout, &[]);
    let base_ref = format!("{}/lib/busybox:1", reg.host);
    strata_in(seed.path(), &["push", "base:1", &base_ref]).ok();

    let ctx = work.path().join("app");
    write(
        &ctx.join("Dockerfile"),
        format!(
            "FROM {base_ref}\nCOPY app.txt /app/app.txt\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox wc -c /app/app.txt > /app/size\"]\n\
             ENV APP=1\n"
        ),
    );
    write(&ctx.join("app.txt"), "the app\n");
    let cache = format!("registry:{}/ci/cache:main", reg.host);

    // An empty cache is not an error (the first CI run).
    let a = tempfile::tempdir().unwrap();
    let ra = build(
        a.path(),
        &ctx,
        &["--cache-from", &cache, "--cache-to", &cache],
    )
    .ok();
    let da = ra.digest();
    assert!(ra.executed().len() >= 2, "A runs COPY and RUN");

    // B: another store (another machine), and the lock A wrote pins the same base.
    let b = tempfile::tempdir().unwrap();
    let rb = build(
        b.path(),
        &ctx,
        &[
            "--locked",
            "--cache-from",
            &cache,
            "--output",
            &format!("type=registry,name={}/apps/app:1", reg.host),
        ],
    )
    .ok();
    assert_eq!(rb.digest(), da, "same digest on the second machine");
    assert!(
        rb.executed().is_empty(),
        "nothing executes on B: {:?}",
        rb.executed()
    );
    let inspected = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/apps/app:1", reg.host),
    ]);
    assert_eq!(
        support::sha256(inspected.trim_end().as_bytes()),
        da,
        "the registry serves B's manifest under A's digest"
    );
    // The cache artifact is a manifest skopeo can read, with the strata artifact type.
    let m = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/ci/cache:main", reg.host),
    ]);
    assert!(m.contains("application/vnd.strata.cache.v1"), "{m}");
}

/// strata.lock with a registry base: a tag moved in the registry changes nothing until
/// `strata lock --update`, which says what moved; `--locked` fails on a stale lock (a reference
/// it does not pin).
#[test]
fn registry_tag_moves_change_nothing_until_the_lock_is_updated() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let seed = tempfile::tempdir().unwrap();
    let base_ref = format!("{}/lib/base:1", reg.host);
    let push_base = |marker: &str| {
        let ctx = work.path().join(format!("base-{marker}"));
        write(
            &ctx.join("Dockerfile"),
            format!("FROM scratch\nCOPY m /etc/marker\nENV MARK={marker}\n"),
        );
        write(&ctx.join("m"), marker);
        build(seed.path(), &ctx, &["-t", &format!("base:{marker}")]).ok();
        strata_in(seed.path(), &["push", &format!("base:{marker}"), &base_ref])
            .ok()
            .stdout()
            .trim()
            .to_string()
    };
    let v1 = push_base("one");
    let ctx = work.path().join("app");
    write(
        &ctx.join("Dockerfile"),
        format!("FROM {base_ref}\nCOPY app.txt /app/\n"),
    );
    write(&ctx.join("app.txt"), "app\n");
    let store = tempfile::tempdir().unwrap();
    let d1 = build(store.path(), &ctx, &[]).ok().digest();
    let lock = fs::read_to_string(ctx.join("strata.lock")).unwrap();
    assert!(
        lock.contains(&format!("\"{base_ref}\" = \"{v1}\"")),
        "{lock}"
    );

    // The tag moves in the registry (a patched base): the lock keeps the build where it was,
    // even from an empty store (the pinned manifest is fetched by digest).
    let v2 = push_base("two");
    assert_ne!(v1, v2);
    assert_eq!(build(store.path(), &ctx, &["--locked"]).ok().digest(), d1);
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(build(empty.path(), &ctx, &["--locked"]).ok().digest(), d1);

    let moved = strata_in(store.path(), &["lock", ctx.to_str().unwrap(), "--update"])
        .ok()
        .stdout();
    assert_eq!(moved.trim(), format!("{base_ref}: {v1} -> {v2}"));
    let d2 = build(store.path(), &ctx, &["--locked"]).ok().digest();
    assert_ne!(d2, d1);

    // A stale lock: the Dockerfile names a reference the lock does not pin.
    write(
        &ctx.join("Dockerfile"),
        format!("FROM {}/lib/base:2\nCOPY app.txt /app/\n", reg.host),
    );
    let r = build(store.path(), &ctx, &["--locked"]).fails();
    assert!(
        r.stderr().contains("is not pinned") && r.stderr().contains("strata lock"),
        "{}",
        r.stderr()
    );
}

/// A fleet split over two shards, each a separate process with its own store, sharing the
/// registry cache: a step every image has runs once in all.
#[test]
fn registry_two_shards_with_separate_stores_run_a_shared_step_once() {
    let reg = Registry::start();
    let ws = tempfile::tempdir().unwrap();
    let names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    for n in names {
        let app = ws.path().join("apps").join(n);
        write(
            &app.join("Dockerfile"),
            "FROM scratch\nCOPY shared.txt /shared.txt\nCOPY own.txt /own.txt\n",
        );
        write(&app.join("shared.txt"), "every app has this\n");
        write(&app.join("own.txt"), n);
    }
    write(
        &ws.path().join("strata.toml"),
        "[[image]]\ncontext = \"apps/*\"\nname = \"{dir}\"\n",
    );
    let cache = |s: &str| format!("registry:{}/ci/cache:{s}", reg.host);
    let shard = |i: u32, extra: &[&str]| -> Value {
        let store = tempfile::tempdir().unwrap();
        let report = ws.path().join(format!("report-{i}.json"));
        let spec = format!("{i}/2");
        let mut args = vec![
            "build",
            "--all",
            "--shard",
            &spec,
            "--report",
            "json",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = strata()
            .current_dir(ws.path())
            .arg("--store")
            .arg(store.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&fs::read(&report).unwrap()).unwrap()
    };
    let (c1, c2) = (cache("shard-1"), cache("shard-2"));
    let r1 = shard(1, &["--cache-to", &c1]);
    let r2 = shard(2, &["--cache-from", &c1, "--cache-to", &c2]);
    let images = |r: &Value| r["images"].as_array().unwrap().clone();
    let (i1, i2) = (images(&r1), images(&r2));
    assert!(!i1.is_empty() && !i2.is_empty(), "both shards have images");
    assert_eq!(
        i1.len() + i2.len(),
        names.len(),
        "every image in exactly one shard"
    );
    let executed: u64 = i1
        .iter()
        .chain(&i2)
        .map(|i| i["executed"].as_u64().unwrap())
        .sum();
    assert_eq!(
        executed,
        names.len() as u64 + 1,
        "each image's own COPY, and the shared COPY once: {r1} {r2}"
    );
}
