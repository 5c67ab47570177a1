//! Dockerfile semantics as BuildKit has them, end to end: WORKDIR creating its directory as
//! the current user, the default PATH, ONBUILD triggers, JSON-form errors, `Containerfile`
//! and `.containerignore`, `--iidfile` and `--metadata-file`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::support::unpack;
use crate::support::{build, write};

/// The image config and manifest of tag `tag` in the OCI layout `oci`.
fn config_and_manifest(oci: &Path, tag: &str) -> (Value, Value) {
    let blob = |d: &str| {
        let (alg, hex) = d.split_once(':').unwrap();
        serde_json::from_slice::<Value>(&fs::read(oci.join("blobs").join(alg).join(hex)).unwrap())
            .unwrap()
    };
    let index: Value = serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|r| r == tag || r.ends_with(&format!(":{tag}")))
        })
        .unwrap_or_else(|| panic!("tag {tag} in {index}"));
    let manifest = blob(m["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    (config, manifest)
}

fn oci_out(dir: &Path) -> String {
    format!("type=oci,dest={}", dir.display())
}

/// The case: `USER http`, `WORKDIR /home/http/x`, `RUN touch foobar` works, and a
/// WORKDIR no step uses exists in the image; both owned by the user.
#[test]
fn workdir_is_created_as_the_current_user_even_when_unused() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("busybox-static is installed by .ci/install-deps");
    write(
        &ctx.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nhttp:x:33:44::/home/http:/bin/sh\n",
    );
    write(&ctx.path().join("etc/group"), "root:x:0:\nwww:x:44:\n");
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY etc/ /etc/\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         USER http\nWORKDIR /home/http/x\nRUN touch foobar && echo $PATH > path\n\
         WORKDIR /srv/unused\nUSER root\nWORKDIR /home\n",
    );
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("oci");
    build(
        store.path(),
        ctx.path(),
        &["-t", "w:1", "--output", &oci_out(&oci)],
    )
    .ok();
    let bundle = out.path().join("b");
    unpack(&oci, "1", &bundle);
    let root = bundle.join("rootfs");
    let owner = |p: &str| {
        let m = fs::metadata(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(owner("home"), (33, 44, 0o755), "created by WORKDIR as http");
    assert_eq!(owner("home/http/x"), (33, 44, 0o755));
    assert_eq!(
        owner("home/http/x/foobar").0,
        33,
        "RUN as http could write there"
    );
    assert_eq!(
        owner("srv/unused"),
        (33, 44, 0o755),
        "an unused WORKDIR exists"
    );
    assert_eq!(
        fs::read_to_string(root.join("home/http/x/path")).unwrap(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        "RUN sees the default PATH"
    );
    let (cfg, manifest) = config_and_manifest(&oci, "1");
    assert_eq!(
        cfg["config"]["Env"],
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
        "the default PATH is in the image config"
    );
    assert_eq!(cfg["config"]["WorkingDir"], "/home");
    // Every WORKDIR has a layer, the one over an existing directory (`/home`) an empty one,
    // as BuildKit; history says so.
    let hist: Vec<(String, bool)> = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let workdirs: Vec<&(String, bool)> =
        hist.iter().filter(|h| h.0.starts_with("WORKDIR")).collect();
    assert_eq!(workdirs.len(), 3);
    assert!(workdirs.iter().all(|h| !h.1), "{hist:?}");
    let layers = manifest["layers"].as_array().unwrap().len();
    assert_eq!(layers, hist.iter().filter(|h| !h.1).count());
}

#[test]
fn workdir_as_an_unknown_user_names_the_user_and_the_line() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nUSER nobody\nWORKDIR /app\n",
    );
    let r = build(store.path(), ctx.path(), &[]).fails();
    let e = r.stderr();
    assert!(e.contains("Dockerfile:3"), "{e}");
    assert!(e.contains("WORKDIR /app"), "{e}");
    assert!(e.contains("user `nobody` not found"), "{e}");
}

#[test]
fn nested_json_cmd_is_an_error_not_shell_form() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCMD [ \"echo\", [ \"nested json\" ] ]\n",
    );
    let e = build(store.path(), ctx.path(), &[]).fails().stderr();
    assert!(
        e.contains("CMD in JSON array form must be an array of strings only"),
        "{e}"
    );
    assert!(e.contains("Dockerfile:2"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

/// ONBUILD triggers in a base image's config run at the start of the child, before its own
/// instructions, and are not in the child's config.
#[test]
fn onbuild_triggers_of_a_base_image_run_in_the_child() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let base_ctx = work.path().join("base");
    write(
        &base_ctx.join("Dockerfile"),
        "FROM scratch\nONBUILD COPY trigger.txt /from-trigger.txt\nONBUILD ENV TRIGGERED=yes\n",
    );
    let layout = work.path().join("ctx/layout");
    build(
        store.path(),
        &base_ctx,
        &["-t", "base:1", "--output", &oci_out(&layout)],
    )
    .ok();
    let (base_cfg, _) = config_and_manifest(&layout, "1");
    assert_eq!(
        base_cfg["config"]["OnBuild"],
        serde_json::json!(["COPY trigger.txt /from-trigger.txt", "ENV TRIGGERED=yes"])
    );

    let ctx = work.path().join("ctx");
    write(&ctx.join("trigger.txt"), "from the child's context\n");
    write(
        &ctx.join("Dockerfile"),
        "FROM oci-layout://layout:1\nENV SEEN=$TRIGGERED\n",
    );
    let oci = work.path().join("out");
    build(
        store.path(),
        &ctx,
        &["-t", "child:1", "--output", &oci_out(&oci)],
    )
    .ok();
    let bundle = work.path().join("bundle");
    unpack(&oci, "1", &bundle);
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/from-trigger.txt")).unwrap(),
        "from the child's context\n"
    );
    let (cfg, _) = config_and_manifest(&oci, "1");
    assert!(cfg["config"].get("OnBuild").is_none(), "{cfg}");
    let env = cfg["config"]["Env"].to_string();
    assert!(
        env.contains("TRIGGERED=yes") && env.contains("SEEN=yes"),
        "{env}"
    );
}

#[test]
fn containerfile_is_the_default_and_containerignore_is_read() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(
        &ctx.path().join("Containerfile"),
        "FROM scratch\nCOPY . /c/\n",
    );
    write(&ctx.path().join("keep.txt"), "k\n");
    write(&ctx.path().join("secret.txt"), "s\n");
    write(&ctx.path().join(".containerignore"), "secret.txt\n");
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("oci");
    build(
        store.path(),
        ctx.path(),
        &["-t", "c:1", "--output", &oci_out(&oci)],
    )
    .ok();
    let bundle = out.path().join("b");
    unpack(&oci, "1", &bundle);
    assert!(bundle.join("rootfs/c/keep.txt").is_file());
    assert!(!bundle.join("rootfs/c/secret.txt").exists());

    // With a Dockerfile beside it, the Dockerfile is used (docker's name wins).
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCMD [\"docker\"]\n",
    );
    let oci2 = out.path().join("oci2");
    build(
        store.path(),
        ctx.path(),
        &["-t", "c:2", "--output", &oci_out(&oci2)],
    )
    .ok();
    let (cfg, _) = config_and_manifest(&oci2, "2");
    assert_eq!(cfg["config"]["Cmd"][0], "docker");

    // Neither: the error names both and says what to do.
    let empty = tempfile::tempdir().unwrap();
    let e = build(store.path(), empty.path(), &[]).fails().stderr();
    assert!(
        e.contains("no Dockerfile in the build context")
            && e.contains("Containerfile")
            && e.contains("hint:"),
        "{e}"
    );
}

#[test]
fn iidfile_and_metadata_file_have_the_keys_buildx_writes() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("Dockerfile"), "FROM scratch\nCOPY a /a\n");
    write(&ctx.path().join("a"), "a\n");
    let out = tempfile::tempdir().unwrap();
    let iid = out.path().join("iid");
    let meta = out.path().join("meta.json");
    let oci = out.path().join("oci");
    let r = build(
        store.path(),
        ctx.path(),
        &[
            "-t",
            "app:1",
            "-t",
            "app:latest",
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
            "--output",
            &oci_out(&oci),
        ],
    )
    .ok();
    let manifest_digest = r.digest();
    let index: Value = serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(m["digest"], manifest_digest);
    let (_, manifest) = config_and_manifest(&oci, "1");
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    assert_eq!(fs::read_to_string(&iid).unwrap(), config_digest);
    let md: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(md["containerimage.digest"], manifest_digest);
    assert_eq!(md["containerimage.config.digest"], config_digest.as_str());
    assert_eq!(md["containerimage.descriptor"]["digest"], manifest_digest);
    assert_eq!(md["containerimage.descriptor"]["size"], m["size"]);
    assert_eq!(
        md["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(md["image.name"], "app:1,app:latest");
}
