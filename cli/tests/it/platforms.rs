//! Multi-platform builds (issue 21): `--platform` for a foreign platform (RUN under QEMU through
//! binfmt_misc), several platforms into one image index, the predefined platform ARGs, shared
//! `FROM --platform=$BUILDPLATFORM` stages, and the errors for bad platforms, bases without the
//! platform and a missing emulator. Bases: support::platforms (amd64 + arm64 busybox).

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::platforms::{push_two_platform, require_emulation, two_platform_layout};
use crate::support::registry::Registry;
use crate::support::{build, write};

fn json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn blob(oci: &Path, d: &Value) -> std::path::PathBuf {
    oci.join("blobs/sha256")
        .join(d.as_str().unwrap().trim_start_matches("sha256:"))
}

/// The manifests of the single image or index that `oci`'s index.json names first: (platform
/// as `os/arch[/variant]` from the image config, manifest).
fn images(oci: &Path) -> Vec<(String, Value)> {
    let top = &json(&oci.join("index.json"))["manifests"][0];
    let top_json = json(&blob(oci, &top["digest"]));
    let manifests: Vec<Value> = match top_json.get("manifests") {
        Some(m) => m
            .as_array()
            .unwrap()
            .iter()
            .map(|d| json(&blob(oci, &d["digest"])))
            .collect(),
        None => vec![top_json],
    };
    manifests
        .into_iter()
        .map(|m| {
            let c = json(&blob(oci, &m["config"]["digest"]));
            let mut p = format!(
                "{}/{}",
                c["os"].as_str().unwrap(),
                c["architecture"].as_str().unwrap()
            );
            if let Some(v) = c["variant"].as_str() {
                p = format!("{p}/{v}");
            }
            (p, m)
        })
        .collect()
}

/// The content of `path` (no leading `/`) in the last layer of `manifest`.
fn file_in_top_layer(oci: &Path, manifest: &Value, path: &str) -> String {
    let layers = manifest["layers"].as_array().unwrap();
    let o = Command::new("tar")
        .arg("-xOf")
        .arg(blob(oci, &layers[layers.len() - 1]["digest"]))
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A context with the two-platform base at `base` and `dockerfile`.
fn context(dir: &Path, dockerfile: &str) -> std::path::PathBuf {
    let ctx = dir.join("ctx");
    two_platform_layout(&ctx.join("base"));
    write(&ctx.join("Dockerfile"), dockerfile);
    ctx
}

const UNAME: &str = "FROM oci-layout://base\nRUN uname -m > /m\n";

#[test]
fn run_under_emulation_gives_each_platform_its_machine() {
    require_emulation();
    let d = tempfile::tempdir().unwrap();
    let ctx = context(d.path(), UNAME);
    let store = d.path().join("store");
    let out = d.path().join("out");
    let both = build(
        &store,
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "app:1",
            "--output",
            &format!("type=oci,dest={}", out.display()),
        ],
    )
    .ok();
    let imgs = images(&out);
    assert_eq!(
        imgs.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    assert_eq!(file_in_top_layer(&out, &imgs[0].1, "m"), "x86_64");
    assert_eq!(file_in_top_layer(&out, &imgs[1].1, "m"), "aarch64");
    // The index is what the build printed, and skopeo reads it as one.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:1", out.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let idx: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(idx["manifests"][1]["platform"]["architecture"], "arm64");
    assert!(idx["manifests"][1]["platform"].get("variant").is_none());
    assert_eq!(crate::support::sha256(&raw.stdout), both.digest());

    // The tag names the index: export writes it again, inspect says what it is.
    let again = d.path().join("again");
    let exported = crate::support::ok(crate::support::on_store(
        &store,
        &[
            "export",
            "app:1",
            "--output",
            &format!("type=oci,dest={}", again.display()),
        ],
    ));
    assert_eq!(exported, both.digest());
    assert_eq!(images(&again).len(), 2);
    let inspect: Value = serde_json::from_str(&crate::support::ok(crate::support::on_store(
        &store,
        &["inspect", "app:1"],
    )))
    .unwrap();
    assert_eq!(
        inspect["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        inspect["index"]["manifests"][1]["platform"]["architecture"],
        "arm64"
    );

    // One platform alone gives that platform's image manifest, the same one the index lists.
    let single = d.path().join("single");
    let one = build(
        &store,
        &ctx,
        &[
            "--platform",
            "linux/arm64",
            "--output",
            &format!("type=oci,dest={}", single.display()),
        ],
    )
    .ok();
    assert_eq!(
        one.digest(),
        idx["manifests"][1]["digest"].as_str().unwrap(),
        "arm64 alone and in the index are the same image"
    );
    let (p, m) = &images(&single)[0];
    assert_eq!(p, "linux/arm64");
    assert_eq!(file_in_top_layer(&single, m, "m"), "aarch64");
}

#[test]
fn platform_args_are_predefined_and_build_platform_stages_run_once() {
    require_emulation();
    let d = tempfile::tempdir().unwrap();
    let ctx = context(
        d.path(),
        "FROM --platform=$BUILDPLATFORM oci-layout://base AS cross\n\
         RUN uname -m > /cross\n\
         FROM oci-layout://base\n\
         ARG TARGETPLATFORM\nARG TARGETARCH\nARG TARGETVARIANT\nARG BUILDPLATFORM\n\
         COPY --from=cross /cross /cross\n\
         RUN echo \"$TARGETPLATFORM $TARGETARCH [$TARGETVARIANT] $BUILDPLATFORM $(uname -m)\" > /args\n",
    );
    let store = d.path().join("store");
    let out = d.path().join("out");
    let run = build(
        &store,
        &ctx,
        &[
            "--platform",
            "linux/arm64,linux/amd64,linux/arm/v7",
            "--output",
            &format!("type=oci,dest={}", out.display()),
        ],
    )
    .ok();
    let cross_runs = run
        .steps()
        .iter()
        .filter(|s| s["instruction"] == "RUN uname -m > /cross" && s["status"] == "executed")
        .count();
    assert_eq!(cross_runs, 1, "the build-platform stage runs once");
    // Each platform's events say which platform they are of; the others found it cached.
    let mut cross: Vec<(String, String)> = run
        .steps()
        .iter()
        .filter(|s| s["instruction"] == "RUN uname -m > /cross")
        .map(|s| {
            (
                s["platform"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    cross.sort();
    assert_eq!(
        cross.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    );
    assert_eq!(cross.iter().filter(|(_, s)| s == "cached").count(), 2);
    let imgs = images(&out);
    let args: Vec<String> = imgs
        .iter()
        .map(|(_, m)| file_in_top_layer(&out, m, "args"))
        .collect();
    assert_eq!(
        args,
        [
            "linux/arm64 arm64 [] linux/amd64 aarch64",
            "linux/amd64 amd64 [] linux/amd64 x86_64",
            "linux/arm/v7 arm [v7] linux/amd64 armv7l",
        ]
    );
    assert_eq!(imgs[2].0, "linux/arm/v7");
}

#[test]
fn a_two_platform_index_goes_to_the_registry_from_a_registry_base() {
    require_emulation();
    let reg = Registry::start();
    push_two_platform(&reg.host, "base/busybox:1");
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        format!("FROM {}/base/busybox:1\nRUN uname -m > /m\n", reg.host),
    );
    let target = format!("{}/app/multi:1", reg.host);
    let built = build(
        &d.path().join("store"),
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=registry,name={target}"),
        ],
    )
    .ok();
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let idx: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let archs: Vec<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    assert_eq!(crate::support::sha256(&raw.stdout), built.digest());
    // The lock pins the base's index once; each platform resolves through it.
    let lock = fs::read_to_string(ctx.join("strata.lock")).unwrap();
    assert_eq!(lock.matches("sha256:").count(), 1, "{lock}");
}

#[test]
fn bad_platforms_bases_without_them_and_missing_emulators_say_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let ctx = context(d.path(), UNAME);
    let store = d.path().join("store");
    let e = build(&store, &ctx, &["--platform", "linux/amd46"])
        .fails()
        .stderr();
    assert!(
        e.contains("`linux/amd46`") && e.contains("unknown architecture") && e.contains("hint:"),
        "{e}"
    );
    let e = build(&store, &ctx, &["--platform", "linux/s390x"])
        .fails()
        .stderr();
    assert!(
        e.contains("no manifest for platform linux/s390x")
            && e.contains("linux/amd64, linux/arm64/v8, linux/arm/v7"),
        "{e}"
    );
    // A layout whose tag names the arm64 manifest itself (no index): not an amd64 base.
    let arm_only = ctx.join("armonly");
    crate::support::copy_tree(&ctx.join("base"), &arm_only);
    let top = &json(&arm_only.join("index.json"))["manifests"][0];
    let mut arm = json(&blob(&arm_only, &top["digest"]))["manifests"][1].clone();
    arm["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    write(
        &arm_only.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [arm]})).unwrap(),
    );
    write(&ctx.join("Dockerfile.arm"), "FROM oci-layout://armonly\n");
    let e = build(
        &store,
        &ctx,
        &[
            "--platform",
            "linux/amd64",
            "-f",
            &ctx.join("Dockerfile.arm").display().to_string(),
        ],
    )
    .fails()
    .stderr();
    assert!(
        e.contains("image `oci-layout://armonly` is for linux/arm64, not linux/amd64")
            && e.contains("hint:"),
        "{e}"
    );
    let no_handlers = d.path().join("binfmt");
    fs::create_dir_all(&no_handlers).unwrap();
    fs::write(no_handlers.join("status"), "enabled\n").unwrap();
    let o = crate::support::strata_at(&store)
        .env("STRATA_BINFMT_MISC", &no_handlers)
        .args(["build", "--platform", "linux/amd64,linux/arm64"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("RUN for linux/arm64 needs a binfmt_misc handler for aarch64")
            && e.contains("hint: apt-get install qemu-user-static binfmt-support"),
        "{e}"
    );
    let e = build(
        &store,
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!(
                "type=docker-archive,dest={}",
                d.path().join("a.tar").display()
            ),
        ],
    )
    .fails()
    .stderr();
    assert!(
        e.contains("docker-archive") && e.contains("type=oci"),
        "{e}"
    );
}

/// Golden digests of a two-platform build of a small example (FROM scratch, so no fixture's
/// bytes enter it): the index, and that the platform enters the keys and the configs only —
/// the COPY layer is the same blob in both images.
#[test]
fn golden_two_platform_index() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch\nARG TARGETPLATFORM\nCOPY hello.txt /hello.txt\nENV BUILT_FOR=$TARGETPLATFORM\n",
    );
    write(&ctx.join("hello.txt"), "hello\n");
    let out = d.path().join("out");
    let run = build(
        &d.path().join("store"),
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=oci,dest={}", out.display()),
        ],
    )
    .ok();
    let imgs = images(&out);
    assert_eq!(imgs[0].1["layers"], imgs[1].1["layers"]);
    let top = &json(&out.join("index.json"))["manifests"][0];
    let digests: Vec<String> = json(&blob(&out, &top["digest"]))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        (
            run.digest().as_str(),
            digests[0].as_str(),
            digests[1].as_str()
        ),
        GOLDEN_INDEX,
        "the two-platform example's digests changed"
    );
}

/// (index, linux/amd64 manifest, linux/arm64 manifest).
const GOLDEN_INDEX: (&str, &str, &str) = (
    "sha256:2d4eeffc39796f11613c046c17c990fc69a552a760e59771a6c448a3e9145ece",
    "sha256:33f41c3147bb3ea06e48cdd2e67172dd1dd028c64ca6688ca3b2947521091cbf",
    "sha256:351c63e93e80c2eaec1d767a8a5813ccd7d3f57be852cd57f13630206fc05f8f",
);

/// `platforms = [...]` in strata.toml (defaults, and per image): `strata build --all` builds
/// every platform of every image in one process; the report has a row per image and, for a
/// multi-platform one, each platform's manifest; `--platform` on the command line wins.
#[test]
fn a_workspace_builds_each_images_platforms() {
    require_emulation();
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    write(
        &w.join("strata.toml"),
        "[defaults]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\n\
         [[image]]\nname = \"app\"\ncontext = \"app\"\n\n\
         [[image]]\nname = \"files\"\ncontext = \"files\"\nplatforms = [\"linux/arm64\"]\n",
    );
    two_platform_layout(&w.join("app/base"));
    write(&w.join("app/Dockerfile"), UNAME);
    write(
        &w.join("files/Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nENV ARCH=$TARGETARCH\n",
    );
    let store = tempfile::tempdir().unwrap();
    let (r, err) = crate::support::build_all(w, store.path(), &[]);
    let row = |n: &str| {
        r["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["image"] == n)
            .unwrap()
            .clone()
    };
    let app = row("app");
    let platforms: Vec<&str> = app["platforms"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{err}");
    assert!(err.contains("linux/arm64"), "{err}");
    assert!(row("files").get("platforms").is_none(), "{r}");

    // The command line's --platform wins over the file's.
    let (r2, _) = crate::support::build_all(w, store.path(), &["--platform", "linux/arm64"]);
    let app2 = r2["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == "app")
        .unwrap()
        .clone();
    assert!(app2.get("platforms").is_none(), "{r2}");
    assert_eq!(app2["digest"], app["platforms"][1]["digest"]);
}

/// Peers read the index: `skopeo copy --all --preserve-digests` copies it whole (same bytes:
/// without that flag skopeo re-serialises the index it writes), and podman picks
/// each platform from it and runs the arm64 image under emulation.
#[test]
fn skopeo_copies_the_index_and_podman_runs_each_platform() {
    require_emulation();
    // podman reads `oci:PATH` as a reference: the path must be lower case.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = tempfile::Builder::new()
        .prefix(&format!("strata-pf-{nanos}"))
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    let ctx = context(
        d.path(),
        &format!("{UNAME}CMD [\"/bin/sh\", \"-c\", \"uname -m; cat /m\"]\n"),
    );
    let out = d.path().join("out");
    let built = build(
        &d.path().join("store"),
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "app:1",
            "--output",
            &format!("type=oci,dest={}", out.display()),
        ],
    )
    .ok();
    let copied = d.path().join("copied");
    let o = Command::new("skopeo")
        .args(["copy", "--all", "--preserve-digests"])
        .arg(format!("oci:{}:1", out.display()))
        .arg(format!("oci:{}:1", copied.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:1", copied.display()))
        .output()
        .unwrap();
    assert_eq!(crate::support::sha256(&raw.stdout), built.digest());

    let (root, run) = (d.path().join("podman-root"), d.path().join("podman-run"));
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&run)
            .args(["--storage-driver", "vfs"]);
        c
    };
    for (platform, machine) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        let o = podman()
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "run",
                "--rm",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "--network",
                "none",
                "--platform",
                platform,
            ])
            .arg(format!("oci:{}:1", out.display()))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "podman run: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("{machine}\n{machine}\n")
        );
    }
    if !crate::support::is_root() {
        // Rootless podman's storage holds files of subordinate ids (see run_steps).
        let _ = podman()
            .args(["unshare", "rm", "-rf"])
            .arg(&root)
            .arg(&run)
            .status();
    }
}

/// `strata verify` reproduces a multi-platform index (RUN under emulation included) across
/// its varied runs.
#[test]
fn verify_reproduces_the_two_platform_index() {
    require_emulation();
    let d = tempfile::tempdir().unwrap();
    let ctx = context(d.path(), UNAME);
    let o = crate::support::strata_at(&d.path().join("store"))
        .args(["verify", "--platform", "linux/amd64,linux/arm64"])
        .arg(&ctx)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("verify: reproducible"), "{err}");
}

/// `strata lock --platform A,B` resolves the references of every platform: a base named per
/// platform (`FROM …base-$TARGETARCH`) gets a pin for each, and a platform an index lacks is
/// an error there, before any build.
#[test]
fn lock_pins_the_bases_of_every_platform() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    two_platform_layout(&ctx.join("base-amd64"));
    two_platform_layout(&ctx.join("base-arm64"));
    write(
        &ctx.join("Dockerfile"),
        "ARG TARGETARCH\nFROM oci-layout://base-$TARGETARCH\nCOPY Dockerfile /\n",
    );
    let store = d.path().join("store");
    crate::support::ok(crate::support::on_store(
        &store,
        &[
            "lock",
            "--platform",
            "linux/amd64,linux/arm64",
            ctx.to_str().unwrap(),
        ],
    ));
    let lock = fs::read_to_string(ctx.join("strata.lock")).unwrap();
    assert!(
        lock.contains("oci-layout://base-amd64") && lock.contains("oci-layout://base-arm64"),
        "{lock}"
    );
    write(
        &ctx.join("Dockerfile.one"),
        "FROM oci-layout://base-amd64\n",
    );
    let o = crate::support::on_store(
        &store,
        &[
            "lock",
            "--platform",
            "linux/amd64,linux/s390x",
            "-f",
            ctx.join("Dockerfile.one").to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no manifest for platform linux/s390x"), "{e}");
    // The locked build of both platforms resolves through those pins.
    build(
        &store,
        &ctx,
        &["--locked", "--platform", "linux/amd64,linux/arm64"],
    )
    .ok();
}
