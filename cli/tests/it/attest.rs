//! Attestations (`strata build --provenance`): the attested index reproduces across stores, the
//! provenance names what the build resolved and never a secret, skopeo reads and copies the
//! attestation manifest, docker-archive refuses it (docs/attestations.md).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::registry::Registry;
use crate::support::{
    self, build, busybox_context, copy_tree, ok, on_store, strata_in, testdata, write,
};

/// The golden digest of the bundled example's index with `--provenance` (min mode): the image
/// (`build::GOLDEN_EXAMPLE`, unchanged) and its provenance. It changes with the image, the
/// provenance's fields (`attest::provenance`), the strata version (in `internalParameters`)
/// or the key version — on purpose, in the same commit, with a note in docs/attestations.md.
const GOLDEN_ATTESTED_EXAMPLE: &str =
    "sha256:1175fed66bf11a2f10f37ca113c200ea1856dc0f610e52bd0851f9039e2eefea";

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The image index `index.json` of `layout` names first, and its attestation manifest's
/// first statement: (index, statement).
fn attested(layout: &Path) -> (Value, Value) {
    let top = json_file(&layout.join("index.json"));
    let d = top["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index = json_file(&blob(layout, d));
    let am = json_file(&blob(
        layout,
        index["manifests"][1]["digest"].as_str().unwrap(),
    ));
    let statement = json_file(&blob(layout, am["layers"][0]["digest"].as_str().unwrap()));
    (index, statement)
}

/// Every blob's bytes in an OCI layout.
fn all_blobs(layout: &Path) -> Vec<Vec<u8>> {
    fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn attest_golden_index_of_bundled_example_reproduces_across_stores() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let ra = build(
        &work.path().join("store-a"),
        &testdata("example"),
        &[
            "--provenance",
            "--output",
            &format!("type=oci,dest={}", a.display()),
        ],
    )
    .ok();
    // Another store, another copy of the context at another path, another -j.
    let ctx = work.path().join("elsewhere/ctx");
    fs::create_dir_all(&ctx).unwrap();
    copy_tree(&testdata("example"), &ctx);
    let rb = build(
        &work.path().join("store-b"),
        &ctx,
        &[
            "--provenance=mode=min",
            "-j",
            "1",
            "--output",
            &format!("type=oci,dest={}", b.display()),
        ],
    )
    .ok();
    assert_eq!(ra.digest(), rb.digest(), "the whole index reproduces");
    assert_eq!(
        fs::read(a.join("index.json")).unwrap(),
        fs::read(b.join("index.json")).unwrap()
    );
    let (index, statement) = attested(&a);
    assert_eq!(
        index["manifests"][0]["digest"],
        "sha256:79c7be85463b08877dee45dc7cd6f197a41d226294a65901580ecd6396bfcac7",
        "the image inside is the golden image, unchanged by --provenance"
    );
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    let p = &statement["predicate"];
    assert_eq!(
        p["buildDefinition"]["buildType"],
        "https://strata.dev/build/v1"
    );
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    assert!(
        p["buildDefinition"]["internalParameters"]
            .get("buildConfig")
            .is_none(),
        "min mode has no step DAG"
    );
    // Nothing of the host: neither the context's path, nor a store path, nor a time.
    let text = statement.to_string();
    for host in [
        ctx.to_str().unwrap(),
        work.path().to_str().unwrap(),
        "startedOn",
        "finishedOn",
        "invocationId",
    ] {
        assert!(!text.contains(host), "`{host}` in the provenance: {text}");
    }
    assert_eq!(ra.digest(), GOLDEN_ATTESTED_EXAMPLE);

    // max mode adds every step with its key; the same image.
    let m = work.path().join("max");
    let rm = build(
        &work.path().join("store-a"),
        &testdata("example"),
        &[
            "--provenance=mode=max",
            "--output",
            &format!("type=oci,dest={}", m.display()),
        ],
    )
    .ok();
    assert_ne!(rm.digest(), ra.digest());
    let (mi, ms) = attested(&m);
    assert_eq!(mi["manifests"][0], index["manifests"][0]);
    let stages = ms["predicate"]["buildDefinition"]["internalParameters"]["buildConfig"]["stages"]
        .as_array()
        .unwrap();
    let steps: Vec<&Value> = stages
        .iter()
        .flat_map(|s| s["steps"].as_array().unwrap())
        .collect();
    assert!(steps
        .iter()
        .any(|s| s["instruction"] == "COPY --from=assets /srv /srv"
            && s["key"].as_str().unwrap().len() == 64));

    // --provenance=false is the default: the plain image.
    let off = build(
        &work.path().join("store-a"),
        &testdata("example"),
        &["--provenance=false"],
    )
    .ok();
    assert_eq!(
        off.digest(),
        "sha256:79c7be85463b08877dee45dc7cd6f197a41d226294a65901580ecd6396bfcac7"
    );
}

/// Builds a base image into the layout `dest` (in the app's context), tagged `1`.
fn base(store: &Path, work: &Path, dest: &Path) -> String {
    let b = work.join("base-src");
    write(&b.join("Dockerfile"), "FROM scratch\nCOPY etc/ /etc/\n");
    write(&b.join("etc/os-release"), "VERSION=1\n");
    ok(on_store(
        store,
        &[
            "build",
            "-t",
            "base:1",
            "--output",
            &format!("type=oci,dest={}", dest.display()),
            b.to_str().unwrap(),
        ],
    ))
}

#[test]
fn attest_provenance_names_the_pinned_base_and_follows_build_args() {
    let w = tempfile::tempdir().unwrap();
    let store = w.path().join("store");
    let app = w.path().join("app");
    let base_digest = base(&store, w.path(), &app.join("layouts"));
    write(
        &app.join("Dockerfile"),
        "FROM oci-layout://layouts:1\nARG FLAVOUR=plain\nCOPY main.txt /app/main.txt\nLABEL flavour=$FLAVOUR\n",
    );
    write(&app.join("main.txt"), "the app\n");
    write(&app.join(".dockerignore"), "layouts\n");
    let out = |name: &str, extra: &[&str]| -> (String, Value) {
        let dest = w.path().join(name);
        let mut args = vec![
            "--provenance".to_string(),
            "--output".into(),
            format!("type=oci,dest={}", dest.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = build(&store, &app, &args).ok();
        (r.digest(), attested(&dest).1)
    };
    let (d1, p1) = out("one", &[]);
    let lock = fs::read_to_string(app.join("strata.lock")).unwrap();
    assert!(lock.contains(&base_digest), "{lock}");
    let deps = &p1["predicate"]["buildDefinition"]["resolvedDependencies"];
    let dep = deps
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["uri"] == "oci-layout://layouts:1")
        .unwrap_or_else(|| panic!("no base in {deps}"));
    assert_eq!(
        dep["digest"]["sha256"],
        base_digest.trim_start_matches("sha256:"),
        "the digest strata.lock pins"
    );
    let context = deps
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "context")
        .unwrap();
    assert_eq!(context["digest"]["sha256"].as_str().unwrap().len(), 64);

    // The same inputs again: the same index.
    assert_eq!(out("again", &[]).0, d1);
    // A build arg changes the provenance (and names its value).
    let (d2, p2) = out("two", &["--build-arg", "FLAVOUR=spicy"]);
    assert_ne!(d2, d1);
    assert_eq!(
        p2["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]["FLAVOUR"],
        "spicy"
    );
    assert_ne!(p1, p2);
    // A file no step reads leaves the context digest alone; one COPY reads changes it.
    write(&app.join("unused.txt"), "not copied\n");
    let (_, p3) = out("three", &[]);
    assert_eq!(p3, p1);
    write(&app.join("main.txt"), "the app, changed\n");
    let (_, p4) = out("four", &[]);
    let ctx_of = |p: &Value| {
        p["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "context")
            .unwrap()
            .clone()
    };
    assert_ne!(ctx_of(&p4), ctx_of(&p1));
}

#[test]
fn attest_secret_values_appear_in_no_blob() {
    support::require_run("attest_secret_values_appear_in_no_blob");
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let tok = secret_dir.path().join("tok");
    write(&tok, "hunter2-very-secret");
    busybox_context(
        ctx.path(),
        "FROM base\nARG VISIBLE=yes\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo done > /done\n\
         RUN --mount=type=secret,id=tok,env=TOK test -n \"$TOK\"\n",
    );
    let oci = ctx.path().join("../attest-secret-oci");
    let secret_arg = format!("id=tok,src={}", tok.display());
    let r = build(
        store.path(),
        ctx.path(),
        &[
            "--provenance=mode=max",
            "--compression",
            "none",
            "--secret",
            &secret_arg,
            "--build-arg",
            "VISIBLE=shown",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
        ],
    )
    .ok();
    let (_, statement) = attested(&oci);
    assert_eq!(
        statement["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]["VISIBLE"],
        "shown"
    );
    let blobs = all_blobs(&oci);
    assert!(blobs.len() > 5);
    for b in &blobs {
        assert!(!contains(b, b"hunter2"), "the secret is in a blob");
    }
    assert!(!r.stderr().contains("hunter2"));
    let _ = fs::remove_dir_all(&oci);
}

#[test]
fn attest_skopeo_reads_the_attestation_and_copy_all_to_a_registry_and_back_keeps_it() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let oci = work.path().join("oci");
    let target = format!("{}/team/attested:1", reg.host);
    let r = build(
        &store,
        &testdata("example"),
        &[
            "--provenance",
            "-t",
            "ex:1",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            "--output",
            &format!("type=registry,name={target}"),
        ],
    )
    .ok();
    let digest = r.digest();
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:1", oci.display()),
    ]))
    .unwrap();
    let entries = raw["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[1]["platform"],
        serde_json::json!({"architecture": "unknown", "os": "unknown"})
    );
    assert_eq!(
        entries[1]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        entries[1]["annotations"]["vnd.docker.reference.digest"],
        entries[0]["digest"]
    );

    // strata's push: the registry serves the index under the tag, byte for byte.
    let pushed = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert_eq!(
        support::sha256(pushed.trim_end_matches('\n').as_bytes()),
        digest
    );

    // skopeo copy --all to the registry and back keeps the attestation manifest.
    let via = format!("{}/team/copied:1", reg.host);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", oci.display()),
        &format!("docker://{via}"),
    ]);
    let back = work.path().join("back");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{via}"),
        &format!("oci:{}:1", back.display()),
    ]);
    let (index, statement) = attested(&back);
    assert_eq!(
        json_file(&back.join("index.json"))["manifests"][0]["digest"],
        digest.as_str(),
        "the index came back unchanged"
    );
    assert_eq!(index["manifests"][1]["platform"]["os"], "unknown");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");

    // `strata inspect` lists the attestation; the tag keeps it (export writes it again).
    let inspect: Value =
        serde_json::from_str(&strata_in(&store, &["inspect", "ex:1"]).ok().stdout()).unwrap();
    assert_eq!(inspect["digest"], digest.as_str());
    assert_eq!(inspect["manifestDigest"], index["manifests"][0]["digest"]);
    let att = &inspect["attestations"][0];
    assert_eq!(att["predicateType"], "https://slsa.dev/provenance/v1");
    assert!(att["size"].as_u64().unwrap() > 100);
    let exported = work.path().join("exported");
    let e = strata_in(
        &store,
        &[
            "export",
            "ex:1",
            "--output",
            &format!("type=oci,dest={}", exported.display()),
        ],
    )
    .ok();
    assert_eq!(e.digest(), digest);
    assert_eq!(
        fs::read(exported.join("index.json")).unwrap(),
        fs::read(oci.join("index.json")).unwrap()
    );
    // gc keeps a tagged image's attestations, and fsck finds the tag whole.
    strata_in(&store, &["gc", "--keep-storage", "0"]).ok();
    let exported2 = work.path().join("exported2");
    strata_in(
        &store,
        &[
            "export",
            "ex:1",
            "--output",
            &format!("type=oci,dest={}", exported2.display()),
        ],
    )
    .ok();
    assert_eq!(attested(&exported2).1, statement);
    strata_in(&store, &["fsck"]).ok();
}

#[test]
fn attest_docker_archive_refuses_provenance_and_export_drops_it_with_a_note() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let tar = work.path().join("img.tar");
    let r = build(
        &store,
        &testdata("example"),
        &[
            "--provenance",
            "--output",
            &format!("type=docker-archive,dest={}", tar.display()),
        ],
    );
    let out = r.fails();
    let err = out.stderr();
    assert!(
        err.contains("docker-archive cannot carry attestations") && err.contains("hint:"),
        "{err}"
    );
    assert!(!err.contains("done:"), "refused before building: {err}");
    assert!(!tar.exists());

    // An attested tag exported to a docker-archive: the image alone, said on stderr.
    build(
        &store,
        &testdata("example"),
        &["--provenance", "-t", "ex:2"],
    )
    .ok();
    let e = strata_in(
        &store,
        &[
            "export",
            "ex:2",
            "--output",
            &format!("type=docker-archive,dest={}", tar.display()),
        ],
    )
    .ok();
    assert!(e.stderr().contains("without them"), "{}", e.stderr());
    assert!(tar.is_file());
}

/// `strata verify --provenance`: every run attests, and the whole index is what is compared.
#[test]
fn attest_verify_matrix_reproduces_the_attested_index() {
    let store = tempfile::tempdir().unwrap();
    let v = strata_in(
        store.path(),
        &[
            "verify",
            "--runs",
            "3",
            "--provenance=mode=max",
            testdata("example").to_str().unwrap(),
        ],
    )
    .ok();
    assert!(
        v.stderr().contains("reproducible (3 runs)"),
        "{}",
        v.stderr()
    );
    let b = build(
        store.path(),
        &testdata("example"),
        &["--provenance=mode=max"],
    )
    .ok();
    assert_eq!(v.digest(), b.digest());
    assert_ne!(b.digest(), GOLDEN_ATTESTED_EXAMPLE, "max is not min");
}

/// The statements of the attestation manifest of the image index `index.json` of `layout`
/// names first, by predicate type.
fn statements(layout: &Path) -> std::collections::BTreeMap<String, Value> {
    let top = json_file(&layout.join("index.json"));
    let index = json_file(&blob(
        layout,
        top["manifests"][0]["digest"].as_str().unwrap(),
    ));
    let am = json_file(&blob(
        layout,
        index["manifests"][1]["digest"].as_str().unwrap(),
    ));
    am["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let s = json_file(&blob(layout, l["digest"].as_str().unwrap()));
            assert_eq!(
                l["annotations"]["in-toto.io/predicate-type"], s["predicateType"],
                "{l}"
            );
            (s["predicateType"].as_str().unwrap().to_string(), s)
        })
        .collect()
}

/// A context whose image holds package metadata of three ecosystems (written here, not taken
/// from any project): two dpkg packages (one removed, so not installed), a Python wheel's
/// dist-info and a scoped npm package.
fn packages_context(dir: &Path) {
    write(
        &dir.join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nCOPY app/ /app/\n",
    );
    write(
        &dir.join("root/var/lib/dpkg/status"),
        "Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:2.3-4\n\n\
         Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\n\
         Package: bar-utils\nStatus: install ok installed\nArchitecture: all\nVersion: 0.9\n",
    );
    write(
        &dir.join("root/etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    );
    write(
        &dir.join("root/usr/lib/python3/dist-packages/Frob_Lib-2.0.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: Frob_Lib\nVersion: 2.0\nLicense: MIT\n",
    );
    write(
        &dir.join("app/node_modules/@acme/widget/package.json"),
        r#"{"name":"@acme/widget","version":"3.1.4","license":"ISC"}"#,
    );
}

/// `--sbom`: an SPDX document of the image's packages in the attestation manifest; the whole
/// index reproduces across stores and tags; `--sbom=format=cyclonedx` attaches CycloneDX;
/// with `--provenance` both share one attestation manifest.
#[test]
fn attest_sbom_lists_the_image_packages_and_reproduces() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    packages_context(&ctx);
    let out = |n: &str| work.path().join(n);
    let run = |store: &str, dest: &str, extra: &[&str]| {
        let o = format!("type=oci,dest={}", out(dest).display());
        let mut args = vec!["--output", &o];
        args.extend_from_slice(extra);
        build(&out(store), &ctx, &args).ok()
    };
    let a = run("s1", "a", &["--sbom"]);
    let b = run(
        "s2",
        "b",
        &["--sbom=format=spdx", "-t", "other:tag", "-j", "1"],
    );
    assert_eq!(a.digest(), b.digest(), "the attested index reproduces");
    let st = statements(&out("a"));
    let spdx = &st["https://spdx.dev/Document"];
    assert_eq!(spdx["_type"], "https://in-toto.io/Statement/v1");
    let doc = &spdx["predicate"];
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    let mut found: Vec<(String, String, String)> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let purl = p["externalRefs"]
                .as_array()?
                .iter()
                .find(|r| r["referenceType"] == "purl")?["referenceLocator"]
                .as_str()?
                .to_string();
            (!purl.starts_with("pkg:oci/")).then(|| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["versionInfo"].as_str().unwrap().to_string(),
                    purl,
                )
            })
        })
        .collect();
    found.sort();
    let names: Vec<_> = found.iter().map(|(n, v, _)| format!("{n}@{v}")).collect();
    assert_eq!(
        names,
        [
            "@acme/widget@3.1.4",
            "Frob_Lib@2.0",
            "bar-utils@0.9",
            "libfoo1@1:2.3-4"
        ],
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(_, _, p)| p.starts_with("pkg:deb/debian/libfoo1@")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(_, _, p)| p.starts_with("pkg:npm/%40acme/widget@3.1.4")),
        "{found:?}"
    );

    // CycloneDX, and both attestations in one manifest with the provenance.
    run("s1", "c", &["--sbom=format=cyclonedx", "--provenance"]);
    let st = statements(&out("c"));
    assert_eq!(
        st.keys().collect::<Vec<_>>(),
        [
            "https://cyclonedx.org/bom",
            "https://slsa.dev/provenance/v1"
        ]
    );
    let bom = &st["https://cyclonedx.org/bom"]["predicate"];
    assert_eq!(bom["specVersion"], "1.5");
    assert_eq!(bom["components"].as_array().unwrap().len(), 4, "{bom}");
    // A docker-archive cannot carry it: refused before building.
    let tar = out("img.tar");
    let e = build(
        &out("s1"),
        &ctx,
        &[
            "--sbom",
            "--output",
            &format!("type=docker-archive,dest={}", tar.display()),
        ],
    )
    .fails();
    assert!(e.stderr().contains("--sbom"), "{}", e.stderr());
    assert!(!tar.exists());
}

/// `strata verify --attest-verification --output …`, returning the run.
fn verify_attested(store: &Path, out: &Path, extra: &[&str], sde: Option<&str>) -> support::Run {
    let mut cmd = support::strata_at(store);
    cmd.args([
        "verify",
        "--runs",
        "2",
        "--attest-verification",
        "-t",
        "ex:1",
    ])
    .args(extra)
    .arg("--output")
    .arg(format!("type=oci,dest={}", out.display()))
    .arg(testdata("example"));
    match sde {
        Some(v) => cmd.env("SOURCE_DATE_EPOCH", v),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    support::Run {
        out: cmd.output().expect("run strata"),
    }
}

#[test]
fn attest_verification_summary_is_attached_beside_provenance_and_reproduces() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (a, b) = (w.join("a"), w.join("b"));
    let va = verify_attested(&w.join("s1"), &a, &["--provenance"], None).ok();
    let vb = verify_attested(&w.join("s2"), &b, &["--provenance"], None).ok();
    assert!(
        va.stderr().contains("reproducible (2 runs)"),
        "{}",
        va.stderr()
    );
    // The whole attested index reproduces, and the outputs name it.
    assert_eq!(va.digest(), vb.digest());
    assert_ne!(va.digest(), GOLDEN_ATTESTED_EXAMPLE);
    let top = json_file(&a.join("index.json"));
    let tagged: Vec<&Value> = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "1")
        .collect();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["digest"], va.digest().as_str());
    let by_type = statements(&a);
    let vsa = &by_type["https://slsa.dev/verification_summary/v1"];
    let prov = &by_type["https://slsa.dev/provenance/v1"];
    assert_eq!(
        vsa["subject"], prov["subject"],
        "both about the image manifest"
    );
    let p = &vsa["predicate"];
    assert_eq!(p["verificationResult"], "PASSED");
    assert_eq!(p["verifiedLevels"][0], "STRATA_REPRODUCIBLE");
    assert_eq!(p["policy"]["annotations"]["runs"], 2);
    assert_eq!(
        p["policy"]["annotations"]["digest"], GOLDEN_ATTESTED_EXAMPLE,
        "the digest every run produced: the provenance-attested index"
    );
    assert!(p["policy"]["annotations"]["variations"]
        .as_array()
        .unwrap()
        .contains(&Value::from("umask")));
    assert_eq!(
        p["inputAttestations"][0]["uri"],
        "https://slsa.dev/provenance/v1"
    );
    assert!(p["resourceUri"].as_str().unwrap().starts_with("ex@sha256:"));
    assert!(
        p.get("timeVerified").is_none(),
        "no time without SOURCE_DATE_EPOCH"
    );

    // With SOURCE_DATE_EPOCH: timeVerified is it; without other attestations, the VSA alone.
    let c = w.join("c");
    verify_attested(&w.join("s3"), &c, &[], Some("1700000000")).ok();
    let by_type = statements(&c);
    assert_eq!(by_type.len(), 1);
    let p = &by_type["https://slsa.dev/verification_summary/v1"]["predicate"];
    assert_eq!(p["timeVerified"], "2023-11-14T22:13:20Z");
    assert!(p.get("inputAttestations").is_none());

    // Nowhere to write it: refused before building.
    let r = strata_in(
        &w.join("s4"),
        &[
            "verify",
            "--attest-verification",
            testdata("example").to_str().unwrap(),
        ],
    )
    .fails();
    assert!(r.stderr().contains("needs an --output"), "{}", r.stderr());
}

/// `strata verify --sbom --provenance` over an image that holds packages: every run of the
/// matrix attaches both, and the whole index (image, SBOM, provenance) reproduces.
#[test]
fn attest_verify_matrix_reproduces_the_sbom_and_provenance_index() {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    packages_context(&ctx);
    let store = work.path().join("store");
    let v = strata_in(
        &store,
        &[
            "verify",
            "--runs",
            "3",
            "--sbom",
            "--provenance",
            ctx.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(
        v.stderr().contains("reproducible (3 runs)"),
        "{}",
        v.stderr()
    );
    let out = work.path().join("out");
    let b = build(
        &store,
        &ctx,
        &[
            "--sbom",
            "--provenance",
            "--output",
            &format!("type=oci,dest={}", out.display()),
        ],
    )
    .ok();
    assert_eq!(v.digest(), b.digest(), "verify compared the attested index");
    let st = statements(&out);
    assert!(st.contains_key("https://spdx.dev/Document"), "{st:?}");
    assert!(st.contains_key("https://slsa.dev/provenance/v1"), "{st:?}");
}
