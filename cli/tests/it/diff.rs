//! End-to-end tests of `strata diff` on images built by `strata build` from the bundled example.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{example, strata, text};

/// Builds the example into an OCI layout at `dest`.
fn build(store: &Path, dest: &Path, epoch: &str) {
    build_to(store, &[format!("type=oci,dest={}", dest.display())], epoch)
}

fn build_to(store: &Path, outputs: &[String], epoch: &str) {
    let mut cmd = strata();
    cmd.arg("--store")
        .arg(store)
        .args(["build", "-t", "example:1.0", "--progress", "plain"])
        .args(["--source-date-epoch", epoch]);
    for o in outputs {
        cmd.arg("--output").arg(o);
    }
    let out = cmd.arg(example()).output().unwrap();
    assert!(out.status.success(), "build: {}", text(&out.stderr));
}

fn diff(args: &[&str]) -> (i32, Output) {
    let out = strata().arg("diff").args(args).output().unwrap();
    (out.status.code().expect("exited"), out)
}

fn oci(p: &Path) -> String {
    format!("oci:{}", p.display())
}

#[test]
fn diff_builds_of_the_example() {
    // One store per epoch: a shared store reuses the epoch-0 layers for the second build
    // (see `source_date_epoch_changes_layers_with_a_shared_store`).
    let (s0, s1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        out.path().join("a"),
        out.path().join("b"),
        out.path().join("c"),
    );
    build(s0.path(), &a, "0");
    build(s1.path(), &b, "1700000000");
    build(s0.path(), &c, "0");

    // Same flags: identical, exit 0.
    let (code, o) = diff(&[&oci(&a), &oci(&c)]);
    assert_eq!(code, 0, "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).trim_end().ends_with("identical"));

    // Another SOURCE_DATE_EPOCH: entry mtimes and config dates differ, exit 1.
    let (code, o) = diff(&[&oci(&a), &oci(&b)]);
    let s = text(&o.stdout);
    assert_eq!(code, 1, "{s}{}", text(&o.stderr));
    assert!(s.contains("[mtime]"), "{s}");
    assert!(s.contains("created [created]"), "{s}");
    assert!(s.lines().last().unwrap().contains("by mtime only"), "{s}");

    // JSON: the same findings, machine-readable.
    let (code, o) = diff(&["--json", &oci(&a), &oci(&b)]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert!(v["config"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["field"] == "created" && c["cause"] == "created"));
    let causes: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["files"].as_array().unwrap())
        .flat_map(|f| f["changes"].as_array().unwrap())
        .map(|c| c["cause"].as_str().unwrap())
        .collect();
    assert!(!causes.is_empty());
    assert!(causes.iter().all(|&c| c == "mtime"), "{causes:?}");

    // Semantically the same image.
    let (code, o) = diff(&["--ignore", "mtime,created", &oci(&a), &oci(&b)]);
    assert_eq!(code, 0, "{}", text(&o.stdout));
}

/// Regression test, found with `strata diff`: the step cache key did not include
/// SOURCE_DATE_EPOCH, so a rebuild with another epoch in the same store reused layers carrying
/// the old mtimes.
#[test]
fn source_date_epoch_changes_layers_with_a_shared_store() {
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("a"), out.path().join("b"));
    build(store.path(), &a, "0");
    build(store.path(), &b, "1700000000");
    let (code, o) = diff(&["--json", &oci(&a), &oci(&b)]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let differing = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["differs"] == true);
    // Every layer of the example: its WORKDIR (a layer since key version 3), COPY, COPY, ADD,
    // COPY --from.
    assert_eq!(differing.count(), 5, "{}", text(&o.stdout));
}

#[test]
fn diff_oci_layout_vs_skopeo_oci_archive() {
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (a, d) = (out.path().join("a"), out.path().join("docker.tar"));
    build_to(
        store.path(),
        &[
            format!("type=oci,dest={}", a.display()),
            format!("type=docker-archive,dest={}", d.display()),
        ],
        "0",
    );
    // strata's docker-archive (new shape: OCI layout + manifest.json) holds the same image.
    let (code, o) = diff(&[&oci(&a), &format!("docker-archive:{}", d.display())]);
    assert_eq!(code, 0, "{}{}", text(&o.stdout), text(&o.stderr));
    let x = out.path().join("x.tar");
    let st = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:1.0", a.display()))
        .arg(format!("oci-archive:{}", x.display()))
        .output()
        .expect("skopeo is installed");
    assert!(st.status.success(), "skopeo copy: {}", text(&st.stderr));
    let (code, o) = diff(&[&oci(&a), &format!("oci-archive:{}", x.display())]);
    assert_eq!(code, 0, "{}{}", text(&o.stdout), text(&o.stderr));
    // A bare path is detected as an archive.
    let (code, o) = diff(&[&oci(&a), &x.display().to_string()]);
    assert_eq!(code, 0, "{}{}", text(&o.stdout), text(&o.stderr));
}

#[test]
fn diff_bad_input_exits_2_with_a_hint() {
    let missing = "/nonexistent/strata-diff-input";
    let (code, o) = diff(&[&format!("oci:{missing}"), &format!("oci:{missing}")]);
    assert_eq!(code, 2);
    let err = text(&o.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(missing), "{err}");
    assert!(err.contains("hint: "), "{err}");
    let (code, o) = diff(&["docker://alpine", "docker://alpine"]);
    assert_eq!(code, 2);
    assert!(text(&o.stderr).contains("not supported yet"));
    let (code, o) = diff(&["--ignore", "bogus", "a", "b"]);
    assert_eq!(code, 2);
    assert!(text(&o.stderr).contains("`bogus`"));
}

#[test]
fn images_in_the_store_compare_by_name() {
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = out.path().join("a");
    build(store.path(), &a, "0");
    let run = |x: &str, y: &str| {
        let o = strata()
            .arg("--store")
            .arg(store.path())
            .args(["diff", x, y])
            .output()
            .unwrap();
        (o.status.code().unwrap(), text(&o.stderr), text(&o.stdout))
    };
    let (code, err, _) = run("store:example:1.0", &format!("oci:{}:1.0", a.display()));
    assert_eq!(code, 0, "{err}");
    let (code, err, _) = run("store:example:1.0", "store:missing:1");
    assert_eq!(code, 2);
    assert!(err.contains("no image `missing:1` in the store"), "{err}");
}

/// CRC-32 (IEEE), bit by bit: enough for the small fixtures below.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A jar (zip, stored members) of `(name, data, unix mtime)`, each member with its DOS time
/// and an extended timestamp, as `jar`/Info-ZIP write them.
fn jar(members: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data, mtime) in members {
        let extra = [
            &0x5455u16.to_le_bytes()[..],
            &5u16.to_le_bytes(),
            &[1],
            &mtime.to_le_bytes(),
        ]
        .concat();
        let secs = mtime % 86_400;
        let dos_time =
            (((secs / 3600) << 11) | ((secs % 3600 / 60) << 5) | ((secs % 60) / 2)) as u16;
        let dos_date: u16 = (43 << 9) | (11 << 5) | 14; // 2023-11-14
        let fields = |v: &mut Vec<u8>| {
            for x in [20u16, 0, 0, dos_time, dos_date] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.extend_from_slice(&crc32(data).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        };
        let offset = out.len() as u32;
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        fields(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes());
        fields(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&extra);
    }
    let at = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out
}

/// Builds `FROM scratch` + `COPY` of `files` (context path → image path) into an OCI layout.
fn build_files(dir: &Path, files: &[(&str, &[u8], &str)]) -> std::path::PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let mut df = String::from("FROM scratch\n");
    for (name, data, to) in files {
        std::fs::write(ctx.join(name), data).unwrap();
        df.push_str(&format!("COPY {name} {to}\n"));
    }
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    let dest = dir.join("oci");
    let out = strata()
        .arg("--store")
        .arg(dir.join("store"))
        .args(["build", "--progress", "plain", "--output"])
        .arg(format!("type=oci,dest={}", dest.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "build: {}", text(&out.stderr));
    dest
}

/// The differing file `path` of the JSON report's one differing layer.
fn file_change<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["files"].as_array().unwrap())
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in {v}"))
}

#[test]
fn a_jar_whose_manifest_differs_in_mtime_only_is_opened_down_to_the_member() {
    let (x, y) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let manifest = b"Manifest-Version: 1.0\nCreated-By: strata test\n".as_slice();
    let class = b"\xca\xfe\xba\xbe\x00\x00\x00\x34".as_slice();
    let ja = jar(&[
        ("META-INF/MANIFEST.MF", manifest, 1_700_000_000),
        ("app/Main.class", class, 1_700_000_000),
    ]);
    let jb = jar(&[
        ("META-INF/MANIFEST.MF", manifest, 1_700_003_600),
        ("app/Main.class", class, 1_700_000_000),
    ]);
    let a = build_files(x.path(), &[("app.jar", &ja, "/usr/lib/app.jar")]);
    let b = build_files(y.path(), &[("app.jar", &jb, "/usr/lib/app.jar")]);

    let (code, o) = diff(&[&oci(&a), &oci(&b)]);
    let s = text(&o.stdout);
    assert_eq!(code, 1, "{s}{}", text(&o.stderr));
    assert!(
        s.contains("/usr/lib/app.jar!/META-INF/MANIFEST.MF: mtime 1700000000 vs 1700003600"),
        "{s}"
    );
    assert!(!s.contains("app/Main.class"), "{s}");
    assert!(
        s.lines().last().unwrap().ends_with(
            "1 file by content only: /usr/lib/app.jar (/usr/lib/app.jar!/META-INF/MANIFEST.MF by mtime)"
        ),
        "{s}"
    );

    let (code, o) = diff(&["--json", &oci(&a), &oci(&b)]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = file_change(&v, "/usr/lib/app.jar");
    let c = &f["changes"][0];
    assert_eq!(c["cause"], "content", "{f}");
    assert_eq!(c["detail"]["archive"], "zip", "{f}");
    let members = c["detail"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{f}");
    assert_eq!(members[0]["path"], "/usr/lib/app.jar!/META-INF/MANIFEST.MF");
    let m = &members[0]["changes"][0];
    assert_eq!(
        (&m["cause"], &m["a"], &m["b"]),
        (
            &serde_json::json!("mtime"),
            &serde_json::json!("1700000000"),
            &serde_json::json!("1700003600")
        ),
        "{f}"
    );
}

#[test]
fn a_text_file_differing_by_a_date_line_has_the_timestamp_flagged() {
    let (x, y) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let info = |when: &str| format!("name: app\nversion: 1.2.3\nbuilt: {when}\nby: ci\n");
    let a = build_files(
        x.path(),
        &[(
            "info",
            info("2026-12-02T22:41:07Z").as_bytes(),
            "/etc/build-info",
        )],
    );
    let b = build_files(
        y.path(),
        &[(
            "info",
            info("2026-12-03T09:15:00Z").as_bytes(),
            "/etc/build-info",
        )],
    );
    let (code, o) = diff(&[&oci(&a), &oci(&b)]);
    let s = text(&o.stdout);
    assert_eq!(code, 1, "{s}{}", text(&o.stderr));
    assert!(s.contains("-built: 2026-12-02T22:41:07Z"), "{s}");
    assert!(
        s.contains(
            "looks like a build timestamp (iso8601): 2026-12-02T22:41:07Z (A, line 3) vs 2026-12-03T09:15:00Z (B, line 3)"
        ),
        "{s}"
    );
    assert!(
        s.lines()
            .last()
            .unwrap()
            .contains("build timestamps in /etc/build-info"),
        "{s}"
    );
    // The version line is the same on both sides: not flagged.
    assert!(!s.contains("1.2.3 (A"), "{s}");

    // JSON: the same, and --diffoscope without diffoscope says so clearly (exit status
    // unchanged).
    let report_dir = x.path().join("diffoscope");
    let o = strata()
        .env("PATH", "/nonexistent")
        .args(["diff", "--json", "--diffoscope"])
        .arg(&report_dir)
        .args([&oci(&a), &oci(&b)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &file_change(&v, "/etc/build-info")["changes"][0];
    let t = &c["detail"]["timestamps"][0];
    assert_eq!(t["format"], "iso8601", "{c}");
    assert_eq!(t["a"], "2026-12-02T22:41:07Z", "{c}");
    assert_eq!(t["b"], "2026-12-03T09:15:00Z", "{c}");
    assert_eq!(v["diffoscope"]["status"], "missing", "{v}");
    let note = v["diffoscope"]["note"].as_str().unwrap();
    assert!(
        note.contains("diffoscope is not installed") && note.contains("apt-get install diffoscope"),
        "{note}"
    );
    assert!(text(&o.stderr).contains("diffoscope is not installed"));
    assert!(!report_dir.exists());

    // A stand-in `diffoscope` on PATH: strata extracts the differing file from both images
    // and hands the two trees over, asking for an HTML and a text report.
    let bin = x.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("diffoscope");
    std::fs::write(
        &fake,
        "#!/bin/sh\n# --html H --text T A B\necho \"$@\" > \"$2\"\ncat \"$5/layer-1/etc/build-info\" \"$6/layer-1/etc/build-info\" > \"$4\"\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let stand_in = x.path().join("stand-in");
    let o = strata()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .args(["diff", "--json", "--diffoscope"])
        .arg(&stand_in)
        .args([&oci(&a), &oci(&b)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["diffoscope"]["status"], "written", "{v}");
    assert_eq!(v["diffoscope"]["files"], 1, "{v}");
    let both = std::fs::read_to_string(stand_in.join("diffoscope.txt")).unwrap();
    assert!(
        both.contains("built: 2026-12-02T22:41:07Z")
            && both.contains("built: 2026-12-03T09:15:00Z"),
        "{both}"
    );
    assert!(std::fs::read_to_string(stand_in.join("diffoscope.html"))
        .unwrap()
        .starts_with("--html "));

    // With diffoscope installed, its reports are written.
    if Command::new("diffoscope")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED (diffoscope not installed): the run of diffoscope itself");
        return;
    }
    let (code, o) = diff(&[
        "--diffoscope",
        report_dir.to_str().unwrap(),
        &oci(&a),
        &oci(&b),
    ]);
    assert_eq!(code, 1, "{}", text(&o.stderr));
    assert!(
        report_dir.join("diffoscope.html").is_file(),
        "{}",
        text(&o.stdout)
    );
    let report = std::fs::read_to_string(report_dir.join("diffoscope.txt")).unwrap();
    assert!(report.contains("2026-12-03T09:15:00Z"), "{report}");
}
