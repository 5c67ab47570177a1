//! Signatures (`strata sign`, `build --sign-key`, `strata verify-signature`): cosign's layout,
//! verified by openssl over the bytes strata wrote, deterministic, rejected when tampered with
//! or made by another key, and carried through a registry (docs/signing.md). Keys are made here
//! with openssl.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::registry::Registry;
use crate::support::{build, strata_in, testdata, write};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A P-256 key pair made by openssl in `dir`: (private PKCS#8 PEM, public SPKI PEM).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key.to_str().unwrap(),
        ],
    );
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    (key, public)
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn sig_tag(digest: &str) -> String {
    format!("sha256-{}.sig", digest.strip_prefix("sha256:").unwrap())
}

/// The `index.json` entry of `layout` tagged `tag`.
fn entry(layout: &Path, tag: &str) -> Value {
    json_file(&layout.join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no `{tag}` in {}", layout.display()))
        .clone()
}

fn assert_cosign_layout(m: &Value) {
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert!(layers[0]["annotations"]["dev.cosignproject.cosign/signature"].is_string());
}

fn verify_signature(store: &Path, key: &Path, image: &str) -> crate::support::Run {
    strata_in(
        store,
        &["verify-signature", "--key", key.to_str().unwrap(), image],
    )
}

#[test]
fn sign_build_sign_key_verifies_with_openssl_and_rejects_tampering_and_other_keys() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let store = w.join("store");
    let oci = w.join("oci");
    let (key, public) = keypair(w, "key");
    let (other, other_pub) = keypair(w, "other");
    let digest = build(
        &store,
        &testdata("example"),
        &[
            "-t",
            "ex:1",
            "--sign-key",
            key.to_str().unwrap(),
            "--output",
            &format!("type=oci,dest={}", oci.display()),
        ],
    )
    .ok()
    .digest();

    // The layout holds cosign's layout under `sha256-<hex>.sig`.
    let sig_entry = entry(&oci, &sig_tag(&digest));
    let manifest = json_file(&blob(&oci, sig_entry["digest"].as_str().unwrap()));
    assert_cosign_layout(&manifest);
    let layer = &manifest["layers"][0];
    let payload_path = blob(&oci, layer["digest"].as_str().unwrap());
    let payload = json_file(&payload_path);
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert_eq!(payload["critical"]["identity"]["docker-reference"], "ex");
    assert_eq!(
        payload["critical"]["type"],
        "cosign container image signature"
    );
    let config = json_file(&blob(&oci, manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(config["rootfs"]["diff_ids"][0], layer["digest"]);

    // openssl verifies the signature over the payload bytes strata wrote.
    let b64 = w.join("sig.b64");
    fs::write(
        &b64,
        layer["annotations"]["dev.cosignproject.cosign/signature"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let der = w.join("sig.der");
    run(
        "openssl",
        &[
            "base64",
            "-d",
            "-A",
            "-in",
            b64.to_str().unwrap(),
            "-out",
            der.to_str().unwrap(),
        ],
    );
    let verified = run(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            public.to_str().unwrap(),
            "-signature",
            der.to_str().unwrap(),
            payload_path.to_str().unwrap(),
        ],
    );
    assert!(verified.contains("Verified OK"), "{verified}");

    // verify-signature accepts it, in the store and in the layout; not with another key.
    let ok = verify_signature(&store, &public, "ex:1").ok();
    assert!(ok.stdout().starts_with("verified: "), "{}", ok.stdout());
    assert!(ok.stdout().contains(&digest));
    verify_signature(&store, &public, &format!("oci:{}:1", oci.display())).ok();
    let bad = verify_signature(&store, &other_pub, "ex:1");
    assert_eq!(bad.out.status.code(), Some(1), "{}", bad.stderr());
    assert!(bad.stderr().contains("bad signature"), "{}", bad.stderr());

    // Re-signing gives the same bytes (RFC 6979 nonces); `strata sign` of the layout too.
    let again = strata_in(&store, &["sign", "--key", key.to_str().unwrap(), "ex:1"]).ok();
    assert_eq!(again.digest(), sig_entry["digest"].as_str().unwrap());
    let again = strata_in(
        &store,
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            &format!("oci:{}:1", oci.display()),
        ],
    )
    .ok();
    assert_eq!(again.digest(), sig_entry["digest"].as_str().unwrap());

    // A payload edited to name another image: the signature no longer matches it.
    let edited = fs::read_to_string(&payload_path)
        .unwrap()
        .replace(&digest, &format!("sha256:{}", "0".repeat(64)));
    let edited_digest = crate::support::sha256(edited.as_bytes());
    fs::write(blob(&oci, &edited_digest), &edited).unwrap();
    let m = fs::read_to_string(blob(&oci, sig_entry["digest"].as_str().unwrap()))
        .unwrap()
        .replace(layer["digest"].as_str().unwrap(), &edited_digest);
    let m_digest = crate::support::sha256(m.as_bytes());
    fs::write(blob(&oci, &m_digest), &m).unwrap();
    let index = fs::read_to_string(oci.join("index.json"))
        .unwrap()
        .replace(sig_entry["digest"].as_str().unwrap(), &m_digest);
    fs::write(oci.join("index.json"), index).unwrap();
    let bad = verify_signature(&store, &public, &format!("oci:{}:1", oci.display()));
    assert_eq!(bad.out.status.code(), Some(1), "{}", bad.stderr());
    assert!(bad.stderr().contains("bad signature"), "{}", bad.stderr());

    // Another image's valid signature put under this image's tag: the digest does not match.
    let digest2 = build(
        &store,
        &testdata("example"),
        &["-t", "ex:2", "--build-arg", "APP_VERSION=2"],
    )
    .ok()
    .digest();
    assert_ne!(digest, digest2);
    let unsigned = verify_signature(&store, &public, "ex:2");
    assert_eq!(unsigned.out.status.code(), Some(1));
    assert!(
        unsigned.stderr().contains("no signature"),
        "{}",
        unsigned.stderr()
    );
    let layout2 = w.join("oci2");
    strata_in(
        &store,
        &[
            "export",
            "ex:2",
            "--output",
            &format!("type=oci,dest={}", layout2.display()),
        ],
    )
    .ok();
    strata_in(
        &store,
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            &format!("oci:{}:2", layout2.display()),
        ],
    )
    .ok();
    verify_signature(&store, &public, &format!("oci:{}:2", layout2.display())).ok();
    let index = fs::read_to_string(layout2.join("index.json"))
        .unwrap()
        .replace(&sig_tag(&digest2), &sig_tag(&digest));
    fs::write(layout2.join("index.json"), index).unwrap();
    let copy_over = json_file(&layout2.join("index.json"));
    let mut entries = copy_over["manifests"].as_array().unwrap().clone();
    // The image tagged `2` now stands for image 1 (same tag layout), its signature for image 2.
    for e in &mut entries {
        if e["annotations"]["org.opencontainers.image.ref.name"] == "2" {
            e["digest"] = Value::String(digest.clone());
        }
    }
    for d in fs::read_dir(oci.join("blobs/sha256")).unwrap() {
        let d = d.unwrap();
        let to = layout2.join("blobs/sha256").join(d.file_name());
        if !to.exists() {
            fs::copy(d.path(), to).unwrap();
        }
    }
    fs::write(
        layout2.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap(),
    )
    .unwrap();
    let bad = verify_signature(&store, &public, &format!("oci:{}:2", layout2.display()));
    assert_eq!(bad.out.status.code(), Some(1), "{}", bad.stderr());
    assert!(bad.stderr().contains("digest mismatch"), "{}", bad.stderr());

    // A signature by the other key replaces the first; only the other public key accepts it.
    strata_in(&store, &["sign", "--key", other.to_str().unwrap(), "ex:1"]).ok();
    verify_signature(&store, &other_pub, "ex:1").ok();
    assert_eq!(
        verify_signature(&store, &public, "ex:1").out.status.code(),
        Some(1)
    );
}

#[test]
fn sign_key_formats_sec1_is_read_and_cosign_encrypted_is_refused_with_a_hint() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let store = w.join("store");
    build(&store, &testdata("example"), &["-t", "ex:1"]).ok();
    let sec1 = w.join("sec1.pem");
    run(
        "openssl",
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            sec1.to_str().unwrap(),
        ],
    );
    assert!(fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    let public = w.join("sec1.pub");
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            sec1.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    strata_in(&store, &["sign", "--key", sec1.to_str().unwrap(), "ex:1"]).ok();
    verify_signature(&store, &public, "ex:1").ok();

    let cosign = w.join("cosign.key");
    write(
        &cosign,
        "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
    );
    let r = strata_in(&store, &["sign", "--key", cosign.to_str().unwrap(), "ex:1"]).fails();
    assert!(r.stderr().contains("not supported yet"), "{}", r.stderr());
    assert!(r.stderr().contains("hint: "), "{}", r.stderr());
    assert!(r.stderr().contains("openssl genpkey"), "{}", r.stderr());
    // A build with that key fails before building anything.
    let r = build(
        &store,
        &testdata("example"),
        &["-t", "ex:3", "--sign-key", cosign.to_str().unwrap()],
    )
    .fails();
    assert!(r.steps().is_empty(), "{}", r.stderr());
}

#[test]
fn sign_push_to_registry_keeps_the_signature_and_skopeo_copies_it() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let store = w.join("store");
    let (key, public) = keypair(w, "key");
    let (other, other_pub) = keypair(w, "other");
    let digest = build(
        &store,
        &testdata("example"),
        &["-t", "ex:1", "--sign-key", key.to_str().unwrap()],
    )
    .ok()
    .digest();

    // `strata push` sends the signature tag along.
    let target = format!("{}/team/signed:1", reg.host);
    strata_in(&store, &["push", "ex:1", &target]).ok();
    let sig_ref = format!("{}/team/signed:{}", reg.host, sig_tag(&digest));
    let raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{sig_ref}"),
        ],
    );
    assert_cosign_layout(&serde_json::from_str(&raw).unwrap());
    let ok = verify_signature(&store, &public, &target).ok();
    assert!(ok.stdout().contains(&digest), "{}", ok.stdout());
    assert!(
        ok.stdout().contains("docker-reference `ex`"),
        "{}",
        ok.stdout()
    );

    // skopeo copy --all of image and signature to another repository; verifies there, from a
    // new store (everything comes from the registry).
    let copied = format!("{}/team/copied", reg.host);
    for tag in ["1".to_string(), sig_tag(&digest)] {
        run(
            "skopeo",
            &[
                "copy",
                "--all",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{}/team/signed:{tag}", reg.host),
                &format!("docker://{copied}:{tag}"),
            ],
        );
    }
    let fresh = w.join("fresh");
    verify_signature(&fresh, &public, &format!("{copied}:1")).ok();
    let bad = verify_signature(&fresh, &other_pub, &format!("docker://{copied}:1"));
    assert_eq!(bad.out.status.code(), Some(1), "{}", bad.stderr());

    // `build --output type=registry --sign-key` signs in the registry; `strata sign` of a
    // registry image replaces it.
    let direct = format!("{}/team/direct:1", reg.host);
    build(
        &store,
        &testdata("example"),
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--output",
            &format!("type=registry,name={direct}"),
        ],
    )
    .ok();
    let ok = verify_signature(&fresh, &public, &direct).ok();
    assert!(
        ok.stdout()
            .contains(&format!("docker-reference `{}/team/direct`", reg.host)),
        "{}",
        ok.stdout()
    );
    strata_in(
        &fresh,
        &[
            "sign",
            "--key",
            other.to_str().unwrap(),
            &format!("docker://{direct}"),
        ],
    )
    .ok();
    verify_signature(&fresh, &other_pub, &direct).ok();
    assert_eq!(
        verify_signature(&fresh, &public, &direct).out.status.code(),
        Some(1)
    );
    // Another push of the stored image takes its signature along again.
    let again = format!("{}/team/again:1", reg.host);
    strata_in(&store, &["push", "ex:1", &again]).ok();
    verify_signature(&fresh, &public, &again).ok();

    // An image pushed without a signature: exit 1, `no signature`.
    let plain = format!("{}/team/plain:1", reg.host);
    build(
        &store,
        &testdata("example"),
        &[
            "--build-arg",
            "APP_VERSION=3",
            "--output",
            &format!("type=registry,name={plain}"),
        ],
    )
    .ok();
    let none = verify_signature(&fresh, &public, &plain);
    assert_eq!(none.out.status.code(), Some(1), "{}", none.stderr());
    assert!(none.stderr().contains("no signature"), "{}", none.stderr());
}
