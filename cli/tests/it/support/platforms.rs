//! Fixtures for multi-platform builds: a two-platform busybox base (linux/amd64 from the host's
//! busybox-static, linux/arm64 from Debian's busybox-static:arm64 that .ci/install-deps unpacks)
//! as an OCI layout, and pushed to the loopback registry. The layout is written here by hand
//! (tar by GNU tar, digests by sha256sum), not by strata: the base must not depend on the code
//! under test.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use super::{sha256, sha256_hex};

/// Where .ci/install-deps unpacks `busybox-static:arm64` (`dpkg -x`).
pub const ARM64_BUSYBOX: &str = "/var/tmp/strata-fixtures/arm64-busybox/bin/busybox";
/// Where .ci/install-deps unpacks `busybox-static:armhf`.
pub const ARMHF_BUSYBOX: &str = "/var/tmp/strata-fixtures/armhf-busybox/bin/busybox";

/// Fails, saying how to get them, unless the busybox fixtures and the aarch64 and arm
/// binfmt_misc handlers (with the F flag) are there. Root or not: RUN under emulation works
/// rootless too (.ci/run-rootless-tests runs these tests as an unprivileged user).
pub fn require_emulation() {
    for f in ["/bin/busybox", ARM64_BUSYBOX, ARMHF_BUSYBOX] {
        assert!(
            Path::new(f).is_file(),
            "{f} is missing: run .ci/install-deps (it unpacks busybox-static:arm64 and :armhf)"
        );
    }
    for m in ["aarch64", "arm"] {
        let handler =
            fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/qemu-{m}")).unwrap_or_default();
        let flags = handler.lines().find_map(|l| l.strip_prefix("flags:"));
        assert!(
            handler.starts_with("enabled") && flags.is_some_and(|f| f.contains('F')),
            "no enabled qemu-{m} binfmt_misc handler with the F flag: run .ci/install-deps (qemu-user-static, binfmt-support)"
        );
    }
}

/// Writes `data` as a blob of the layout `dir`; its descriptor.
fn blob(dir: &Path, media_type: &str, data: &[u8]) -> Value {
    let hex = sha256_hex(data);
    let p = dir.join("blobs/sha256").join(&hex);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// An uncompressed layer holding `/bin/busybox` (a copy of `busybox`) and `/bin/sh` → busybox.
fn busybox_layer(busybox: &Path) -> Vec<u8> {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(busybox, bin.join("busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
    let out = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "--format=ustar",
            "-C",
        ])
        .arg(root.path())
        .args(["-cf", "-", "bin"])
        .output()
        .expect("GNU tar");
    assert!(out.status.success(), "{}", super::text(&out.stderr));
    out.stdout
}

/// The image manifest's descriptor for a busybox image of `arch` (`variant`).
fn busybox_image(dir: &Path, busybox: &Path, arch: &str, variant: Option<&str>) -> Value {
    let layer = busybox_layer(busybox);
    let diff_id = sha256(&layer);
    let layer_desc = blob(dir, "application/vnd.oci.image.layer.v1.tar", &layer);
    let mut config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let mut platform = json!({"architecture": arch, "os": "linux"});
    if let Some(v) = variant {
        config["variant"] = json!(v);
        platform["variant"] = json!(v);
    }
    let config_desc = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    });
    let mut d = blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    d["platform"] = platform;
    d
}

/// Writes an OCI layout at `dir` whose tag `latest` is an index over a linux/amd64, a
/// linux/arm64/v8 and a linux/arm/v7 busybox image (each: `/bin/busybox`, `/bin/sh`).
pub fn two_platform_layout(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let amd64 = busybox_image(dir, Path::new("/bin/busybox"), "amd64", None);
    let arm64 = busybox_image(dir, Path::new(ARM64_BUSYBOX), "arm64", Some("v8"));
    let arm = busybox_image(dir, Path::new(ARMHF_BUSYBOX), "arm", Some("v7"));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd64, arm64, arm],
    });
    let mut d = blob(
        dir,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    d["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [d]})).unwrap(),
    )
    .unwrap();
}

/// Pushes the two-platform layout (made in a temp dir) to `host/repo:tag` with `skopeo copy
/// --all`.
pub fn push_two_platform(host: &str, repo_tag: &str) {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("base");
    two_platform_layout(&layout);
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{host}/{repo_tag}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", super::text(&out.stderr));
}
