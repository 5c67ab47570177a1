//! Images written by hand (tar + flate2 + serde_json) into temp dirs, then diffed.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use strata_cache::Digest;

use super::*;

#[derive(Clone)]
enum Kind {
    File(Vec<u8>),
    /// A regular file preceded by a PAX header with these records.
    PaxFile(Vec<u8>, Vec<(&'static str, &'static str)>),
    /// A regular file with a GNU (not ustar) header.
    GnuFile(Vec<u8>),
    Dir,
    Hardlink(&'static str),
}

#[derive(Clone)]
struct E {
    path: &'static str,
    kind: Kind,
    mode: u32,
    uid: u64,
    mtime: u64,
}

fn file(path: &'static str, data: &[u8]) -> E {
    E {
        path,
        kind: Kind::File(data.to_vec()),
        mode: 0o644,
        uid: 0,
        mtime: 0,
    }
}

fn dir(path: &'static str) -> E {
    E {
        path,
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        mtime: 0,
    }
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(0);
        h.set_mtime(e.mtime);
        match &e.kind {
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, e.path, &d[..]).unwrap();
            }
            Kind::PaxFile(d, records) => {
                let mut data = Vec::new();
                for (k, v) in records {
                    let body = format!(" {k}={v}\n");
                    // The length counts its own digits.
                    let mut len = body.len() + 1;
                    while format!("{len}{body}").len() != len {
                        len += 1;
                    }
                    data.extend_from_slice(format!("{len}{body}").as_bytes());
                }
                let mut x = tar::Header::new_ustar();
                x.set_entry_type(tar::EntryType::XHeader);
                x.set_size(data.len() as u64);
                b.append_data(&mut x, "././@PaxHeader", &data[..]).unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, e.path, &d[..]).unwrap();
            }
            Kind::GnuFile(d) => {
                let mut g = tar::Header::new_gnu();
                g.set_mode(e.mode);
                g.set_uid(e.uid);
                g.set_gid(0);
                g.set_mtime(e.mtime);
                g.set_entry_type(tar::EntryType::Regular);
                g.set_size(d.len() as u64);
                b.append_data(&mut g, e.path, &d[..]).unwrap();
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), &[][..])
                    .unwrap();
            }
            Kind::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, e.path, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

fn config_for(tars: &[Vec<u8>], env: &[&str], labels: Value) -> Value {
    let diff_ids: Vec<String> = tars.iter().map(|t| Digest::of(t).to_string()).collect();
    json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "Labels": labels, "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": tars.iter().map(|_| json!({"created": "1970-01-01T00:00:00Z", "created_by": "COPY . /"})).collect::<Vec<_>>(),
    })
}

fn put_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d
}

/// Writes an OCI layout of `tars` (gzip at `level`) and `config` into `dir`.
fn write_layout(dir: &Path, tars: &[Vec<u8>], level: u32, config: &Value) {
    write_layout_with(
        dir,
        tars,
        &|t| {
            (
                gzip(t, level),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        },
        config,
    )
}

type Compress<'a> = &'a dyn Fn(&[u8]) -> (Vec<u8>, &'static str);

fn write_layout_with(dir: &Path, tars: &[Vec<u8>], compress: Compress<'_>, config: &Value) {
    let cfg = serde_json::to_vec(config).unwrap();
    let cd = put_blob(dir, &cfg);
    let layers: Vec<Value> = tars
        .iter()
        .map(|t| {
            let (blob, media_type) = compress(t);
            let d = put_blob(dir, &blob);
            json!({"mediaType": media_type, "digest": d.to_string(), "size": blob.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cfg.len()},
        "layers": layers,
    }))
    .unwrap();
    let md = put_blob(dir, &manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes an old-shape docker-archive (`manifest.json`, `<id>/layer.tar`, `<hex>.json`).
fn write_docker_archive(file: &Path, tars: &[Vec<u8>], config: &Value) {
    let cfg = serde_json::to_vec(config).unwrap();
    let cfg_name = format!("{}.json", Digest::of(&cfg).hex());
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut layer_names = Vec::new();
    for t in tars {
        let name = format!("{}/layer.tar", Digest::of(t).hex());
        add(&name, t);
        layer_names.push(name);
    }
    add(&cfg_name, &cfg);
    let m = json!([{"Config": cfg_name, "RepoTags": ["example:latest"], "Layers": layer_names}]);
    add("manifest.json", &serde_json::to_vec(&m).unwrap());
}

fn base_layers() -> Vec<Vec<E>> {
    vec![
        vec![dir("etc"), file("etc/hostname", b"box\n")],
        vec![
            dir("app"),
            file("app/main.py", b"import os\nprint('hello')\nprint('bye')\n"),
            file("app/data.bin", &[0u8, 1, 2, 3]),
        ],
    ]
}

fn default_config(tars: &[Vec<u8>]) -> Value {
    config_for(tars, &["PATH=/bin", "FOO=1"], json!({"a": "1"}))
}

struct Pair {
    _tmp: tempfile::TempDir,
    a: ImageSource,
    b: ImageSource,
}

/// Two OCI layouts: `a` from `la`, `b` from `lb` (gzip level 6), configs built by `cfg`.
fn pair_with(
    la: &[Vec<E>],
    lb: &[Vec<E>],
    cfg_a: &dyn Fn(&[Vec<u8>]) -> Value,
    cfg_b: &dyn Fn(&[Vec<u8>]) -> Value,
) -> Pair {
    let tmp = tempfile::tempdir().unwrap();
    let ta: Vec<Vec<u8>> = la.iter().map(|l| tar_of(l)).collect();
    let tb: Vec<Vec<u8>> = lb.iter().map(|l| tar_of(l)).collect();
    write_layout(&tmp.path().join("a"), &ta, 6, &cfg_a(&ta));
    write_layout(&tmp.path().join("b"), &tb, 6, &cfg_b(&tb));
    let a = load_image(&format!("oci:{}", tmp.path().join("a").display())).unwrap();
    let b = load_image(&format!("oci:{}:latest", tmp.path().join("b").display())).unwrap();
    Pair { _tmp: tmp, a, b }
}

fn pair(la: &[Vec<E>], lb: &[Vec<E>]) -> Pair {
    pair_with(la, lb, &default_config, &default_config)
}

fn run(p: &Pair, ignore: &str) -> DiffReport {
    let opts = DiffOptions::parse_ignore(ignore.split(',')).unwrap();
    diff(&p.a, &p.b, &opts).unwrap()
}

fn only_layer_diff(r: &DiffReport) -> &LayerDiff {
    let d: Vec<&LayerDiff> = r.layers.iter().filter(|l| l.differs).collect();
    assert_eq!(d.len(), 1, "{}", render_text(r));
    d[0]
}

#[test]
fn diff_identical_images() {
    let p = pair(&base_layers(), &base_layers());
    let r = run(&p, "");
    assert!(r.is_identical(), "{}", render_text(&r));
    assert!(r.layers.iter().all(|l| l.status == LayerStatus::Identical));
    assert!(render_text(&r).trim_end().ends_with("identical"));
}

#[test]
fn diff_mtime_only() {
    let mut lb = base_layers();
    lb[1][1].mtime = 1_700_000_000;
    let p = pair(&base_layers(), &lb);
    let r = run(&p, "");
    assert!(!r.is_identical());
    let l = only_layer_diff(&r);
    assert_eq!(l.index, 1);
    assert_eq!(l.status, LayerStatus::Different);
    assert_eq!(l.files.len(), 1);
    assert_eq!(l.files[0].path, "/app/main.py");
    assert_eq!(l.files[0].changes.len(), 1);
    assert_eq!(l.files[0].changes[0].cause, Cause::Mtime);
    // The diff_id in the config differs too: reported as a config value.
    assert!(r.config.iter().any(|c| c.field == "rootfs.diff_ids[1]"));
    assert!(
        summary(&r).contains("1 file by mtime only: /app/main.py"),
        "{}",
        summary(&r)
    );

    let r = run(&p, "mtime");
    assert!(r.is_identical(), "{}", render_text(&r));
    assert_eq!(r.ignored.get(&Cause::Mtime), Some(&1));
}

#[test]
fn diff_uid_only() {
    let mut lb = base_layers();
    lb[0][1].uid = 1000;
    let p = pair(&base_layers(), &lb);
    let r = run(&p, "");
    let l = only_layer_diff(&r);
    assert_eq!(l.files[0].path, "/etc/hostname");
    assert_eq!(l.files[0].changes[0].cause, Cause::Uid);
    assert_eq!(l.files[0].changes[0].a.as_deref(), Some("0"));
    assert_eq!(l.files[0].changes[0].b.as_deref(), Some("1000"));
    assert!(run(&p, "uid").is_identical());
    assert!(!run(&p, "gid,mtime").is_identical());
}

#[test]
fn diff_compression_only() {
    // Enough compressible, varied data that gzip levels 1 and 9 give different bytes.
    let text: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("line {} {}\n", i, i.wrapping_mul(2_654_435_761) % 97).into_bytes())
        .collect();
    let t = tar_of(&[dir("d"), file("d/big.txt", &text)]);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = default_config(std::slice::from_ref(&t));
    write_layout(&tmp.path().join("a"), std::slice::from_ref(&t), 1, &cfg);
    write_layout(&tmp.path().join("b"), std::slice::from_ref(&t), 9, &cfg);
    let a = load_image(&tmp.path().join("a").display().to_string()).unwrap();
    let b = load_image(&tmp.path().join("b").display().to_string()).unwrap();
    let r = diff(&a, &b, &DiffOptions::default()).unwrap();
    assert!(!r.is_identical());
    let l = only_layer_diff(&r);
    assert_eq!(l.status, LayerStatus::CompressionOnly);
    assert!(l.files.is_empty());
    assert!(r.config.is_empty(), "{:?}", r.config);
    assert!(render_text(&r).contains("compression only"));
    let r = diff(&a, &b, &DiffOptions::parse_ignore(["compression"]).unwrap()).unwrap();
    assert!(r.is_identical(), "{}", render_text(&r));
}

#[test]
fn diff_entry_order() {
    let mut lb = base_layers();
    lb[1].swap(1, 2);
    let p = pair(&base_layers(), &lb);
    let r = run(&p, "");
    let l = only_layer_diff(&r);
    assert!(l.files.is_empty());
    let o = l.order.as_ref().expect("an order difference");
    assert!(o.same_set);
    assert_eq!(
        (o.a.as_str(), o.b.as_str()),
        ("/app/main.py", "/app/data.bin")
    );
    assert!(run(&p, "order").is_identical());
}

#[test]
fn diff_config_env_and_label() {
    let p = pair_with(&base_layers(), &base_layers(), &default_config, &|t| {
        config_for(t, &["PATH=/bin", "FOO=2"], json!({"a": "1", "b": "x"}))
    });
    let r = run(&p, "");
    assert!(r.layers.iter().all(|l| !l.differs));
    let fields: Vec<&str> = r.config.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        ["config.Env[FOO]", "config.Labels.b"],
        "{}",
        render_text(&r)
    );
    assert_eq!(r.config[0].a, Some(json!("1")));
    assert_eq!(r.config[0].b, Some(json!("2")));
    assert_eq!(r.config[1].a, None);
    assert!(!r.is_identical());
}

#[test]
fn diff_created_and_history_ignorable() {
    let p = pair_with(&base_layers(), &base_layers(), &default_config, &|t| {
        let mut c = default_config(t);
        c["created"] = json!("2024-01-01T00:00:00Z");
        c["history"][0]["created"] = json!("2024-01-01T00:00:00Z");
        c["history"][1]["created_by"] = json!("COPY x /");
        c
    });
    let r = run(&p, "");
    let causes: Vec<Cause> = r.config.iter().map(|c| c.cause).collect();
    assert_eq!(causes, [Cause::Created, Cause::Created, Cause::History]);
    assert!(!run(&p, "created").is_identical());
    assert!(run(&p, "created,history").is_identical());
}

#[test]
fn diff_content_shows_text_diff() {
    let mut lb = base_layers();
    lb[1][1] = file(
        "app/main.py",
        b"import os\nprint('hello, world')\nprint('bye')\n",
    );
    let p = pair(&base_layers(), &lb);
    let r = run(&p, "");
    let l = only_layer_diff(&r);
    let c = &l.files[0].changes[0];
    assert_eq!(c.cause, Cause::Content);
    let t = c.text_diff.as_deref().expect("a text diff");
    assert!(t.contains("-print('hello')"), "{t}");
    assert!(t.contains("+print('hello, world')"), "{t}");
    assert!(t.lines().count() <= 21);
    assert!(
        summary(&r).contains("1 file by content only: /app/main.py"),
        "{}",
        summary(&r)
    );
}

#[test]
fn diff_binary_content_has_no_text_diff() {
    let mut lb = base_layers();
    lb[1][2] = file("app/data.bin", &[0u8, 1, 2, 4]);
    let p = pair(&base_layers(), &lb);
    let r = run(&p, "");
    let c = &only_layer_diff(&r).files[0].changes[0];
    assert_eq!(c.cause, Cause::Content);
    assert!(c.text_diff.is_none());
    // Instead: where it first differs, and what is there.
    let b = c
        .detail
        .as_ref()
        .unwrap()
        .binary
        .as_ref()
        .expect("a binary diff");
    assert_eq!((b.a_size, b.b_size), (4, 4), "{b:?}");
    assert!(render_text(&r).contains("first difference at offset"));
}

#[test]
fn only_ten_files_a_layer_are_looked_into_and_the_rest_are_counted() {
    const NAMES: [&str; 12] = [
        "app/f00", "app/f01", "app/f02", "app/f03", "app/f04", "app/f05", "app/f06", "app/f07",
        "app/f08", "app/f09", "app/f10", "app/f11",
    ];
    let (mut la, mut lb) = (base_layers(), base_layers());
    for n in NAMES {
        la[1].push(file(n, b"built 2026-12-02\n"));
        lb[1].push(file(n, b"built 2026-12-03\n"));
    }
    let r = run(&pair(&la, &lb), "");
    let l = only_layer_diff(&r);
    let looked = l
        .files
        .iter()
        .filter(|f| f.changes[0].text_diff.is_some())
        .count();
    assert_eq!(looked, 10);
    assert_eq!(
        l.notes,
        ["2 more files whose content differs were not looked into (the first 10 of a layer are)"]
    );
    let t = &l.files[0].changes[0].detail.as_ref().unwrap().timestamps[0];
    assert_eq!(
        (t.a.as_deref(), t.b.as_deref()),
        (Some("2026-12-02"), Some("2026-12-03"))
    );
    assert!(render_text(&r).contains("  note: 2 more files"));
}

#[test]
fn diff_file_only_in_one_image() {
    let mut lb = base_layers();
    lb[0].push(file("etc/motd", b"hi\n"));
    let p = pair(&base_layers(), &lb);
    let r = run(&p, "");
    let f = &only_layer_diff(&r).files[0];
    assert_eq!(f.path, "/etc/motd");
    assert_eq!(f.changes[0].cause, Cause::Presence);
    assert!(f.changes[0].a.is_none());
    // Ignoring everything else must not hide it.
    assert!(!run(&p, "mtime,uid,gid,order,format,history,created,compression").is_identical());
}

#[test]
fn diff_hardlink_vs_copy() {
    let mut la = base_layers();
    la[0].push(file("etc/hostname2", b"box\n"));
    let mut lb = base_layers();
    lb[0].push(E {
        kind: Kind::Hardlink("etc/hostname"),
        ..file("etc/hostname2", b"")
    });
    let p = pair(&la, &lb);
    let r = run(&p, "");
    let f = &only_layer_diff(&r).files[0];
    assert_eq!(f.changes[0].cause, Cause::Hardlink);
}

#[test]
fn diff_layer_count() {
    let mut lb = base_layers();
    lb.push(vec![file("extra", b"x")]);
    let p = pair(&base_layers(), &lb);
    let r = run(&p, "");
    let l = only_layer_diff(&r);
    assert_eq!(l.status, LayerStatus::OnlyInB);
    assert!(r
        .manifest
        .iter()
        .any(|c| c.field == "manifest.layers.length"));
}

#[test]
fn diff_docker_archive_vs_oci_layout_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let tars: Vec<Vec<u8>> = base_layers().iter().map(|l| tar_of(l)).collect();
    let cfg = default_config(&tars);
    write_layout(&tmp.path().join("oci"), &tars, 6, &cfg);
    let archive = tmp.path().join("image.tar");
    write_docker_archive(&archive, &tars, &cfg);
    let a = load_image(&format!("docker-archive:{}", archive.display())).unwrap();
    assert_eq!(a.kind, SourceKind::DockerArchive);
    // A bare path to the same file is detected as a docker-archive too.
    let bare = load_image(&archive.display().to_string()).unwrap();
    assert_eq!(bare.kind, SourceKind::DockerArchive);
    let b = load_image(&format!("oci:{}", tmp.path().join("oci").display())).unwrap();
    let r = diff(&a, &b, &DiffOptions::default()).unwrap();
    assert!(r.is_identical(), "{}", render_text(&r));
    assert!(!r.notes.is_empty());
}

#[test]
fn diff_json_schema_fields() {
    let mut lb = base_layers();
    lb[1][1].mode = 0o755;
    let p = pair(&base_layers(), &lb);
    let r = run(&p, "");
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["version"], 1);
    let l = &v["layers"][1];
    assert_eq!(l["status"], "different");
    assert_eq!(l["differs"], true);
    assert_eq!(l["files"][0]["changes"][0]["cause"], "mode");
    assert_eq!(l["files"][0]["changes"][0]["a"], "0644");
    assert_eq!(l["files"][0]["changes"][0]["b"], "0755");
    assert_eq!(v["a"]["kind"], "oci");
}

#[test]
fn diff_bad_inputs_are_clear_errors() {
    let e = load_image("docker://alpine:3").unwrap_err();
    assert!(matches!(e, DiffError::NotSupported { .. }), "{e}");
    assert!(e.to_string().contains("not supported yet"));
    let e = load_image("alpine:3").unwrap_err();
    assert!(matches!(e, DiffError::NotSupported { .. }), "{e}");
    let e = load_image("oci:/nonexistent/strata-diff-x").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/strata-diff-x"), "{e}");
    assert!(e.hint().is_some());
    let tmp = tempfile::tempdir().unwrap();
    let e = load_image(&tmp.path().display().to_string()).unwrap_err();
    assert!(matches!(e, DiffError::NotAnImage { .. }), "{e}");
    let not_tar = tmp.path().join("x.txt");
    std::fs::write(&not_tar, b"hello").unwrap();
    assert!(load_image(&not_tar.display().to_string()).is_err());
    assert!(DiffOptions::parse_ignore(["mtime", "bogus"]).is_err());
    // A tag that is not there names the tags that are.
    let tars = vec![tar_of(&base_layers()[0])];
    write_layout(&tmp.path().join("l"), &tars, 6, &default_config(&tars));
    let e = load_image(&format!("oci:{}:v2", tmp.path().join("l").display())).unwrap_err();
    assert!(e.to_string().contains("latest"), "{e}");
}

#[test]
fn unified_diff_is_capped() {
    let a: String = (0..100).map(|i| format!("{i}\n")).collect();
    let b: String = (0..100).map(|i| format!("{}\n", i * 2)).collect();
    let t = text::unified("/f", &a, &b, 20);
    assert_eq!(t.lines().count(), 21);
    assert!(t.lines().last().unwrap().contains("more lines"));
}

#[test]
fn diff_xattr_in_pax_record() {
    let mut la = base_layers();
    la[0].push(E {
        kind: Kind::PaxFile(b"x".to_vec(), vec![("SCHILY.xattr.user.k", "one")]),
        ..file("etc/x", b"")
    });
    let mut lb = base_layers();
    lb[0].push(E {
        kind: Kind::PaxFile(b"x".to_vec(), vec![("SCHILY.xattr.user.k", "two")]),
        ..file("etc/x", b"")
    });
    let p = pair(&la, &lb);
    let r = run(&p, "");
    let f = &only_layer_diff(&r).files[0];
    assert_eq!(f.path, "/etc/x");
    assert_eq!(f.changes.len(), 1, "{:?}", f.changes);
    assert_eq!(f.changes[0].cause, Cause::Xattrs);
    assert_eq!(f.changes[0].a.as_deref(), Some("SCHILY.xattr.user.k=one"));
    assert!(run(&p, "xattrs").is_identical());
}

#[test]
fn diff_tar_header_format() {
    let mut la = base_layers();
    la[0].push(file("etc/y", b"y"));
    let mut lb = base_layers();
    lb[0].push(E {
        kind: Kind::GnuFile(b"y".to_vec()),
        ..file("etc/y", b"")
    });
    let p = pair(&la, &lb);
    let r = run(&p, "");
    let c = &only_layer_diff(&r).files[0].changes;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].cause, Cause::Format);
    assert_eq!(
        (c[0].a.as_deref(), c[0].b.as_deref()),
        (Some("ustar"), Some("gnu"))
    );
    assert!(run(&p, "format").is_identical());
}

#[test]
fn diff_missing_bare_name_is_not_found_but_name_tag_is_unsupported() {
    let e = load_image("no-such-image-dir").unwrap_err();
    assert!(matches!(e, DiffError::Io { .. }), "{e}");
    let e = load_image("example:1.0").unwrap_err();
    assert!(e.to_string().contains("not supported yet"), "{e}");
}

#[test]
fn diff_gzip_vs_zstd_is_compression_only() {
    let tars: Vec<Vec<u8>> = base_layers().iter().map(|l| tar_of(l)).collect();
    let cfg = default_config(&tars);
    let tmp = tempfile::tempdir().unwrap();
    write_layout(&tmp.path().join("a"), &tars, 6, &cfg);
    let zstd = |t: &[u8]| {
        (
            zstd::encode_all(t, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        )
    };
    write_layout_with(&tmp.path().join("b"), &tars, &zstd, &cfg);
    let a = load_image(&oci_spec(&tmp.path().join("a"))).unwrap();
    let b = load_image(&oci_spec(&tmp.path().join("b"))).unwrap();
    let r = diff(&a, &b, &DiffOptions::default()).unwrap();
    assert!(r
        .layers
        .iter()
        .all(|l| l.status == LayerStatus::CompressionOnly));
    // The media types differ in the manifest: a compression cause too.
    assert!(!r.manifest.is_empty());
    assert!(
        r.manifest.iter().all(|c| c.cause == Cause::Compression),
        "{:?}",
        r.manifest
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let r = diff(&a, &b, &DiffOptions::parse_ignore(["compression"]).unwrap()).unwrap();
    assert!(r.is_identical(), "{}", render_text(&r));
}

fn oci_spec(p: &Path) -> String {
    format!("oci:{}", p.display())
}

#[test]
fn diff_rejects_a_blob_that_does_not_match_its_digest() {
    let mut lb = base_layers();
    lb[0][1].mtime = 5;
    let p = pair(&base_layers(), &lb);
    // Swap B's first layer bytes for another valid gzip of a different tar, under the old name.
    let path = p.b.layers[0].path.clone();
    std::fs::write(&path, gzip(&tar_of(&base_layers()[1]), 6)).unwrap();
    let e = diff(&p.a, &p.b, &DiffOptions::default()).unwrap_err();
    assert!(e.to_string().contains("does not match its digest"), "{e}");
}

#[test]
fn diff_notes_a_config_diff_id_that_does_not_match_the_layer() {
    // Checked only for layers that are read (blobs that differ).
    let mut lb = base_layers();
    lb[0][1].mtime = 5;
    let p = pair_with(&base_layers(), &lb, &default_config, &|t| {
        let mut c = default_config(t);
        c["rootfs"]["diff_ids"][0] = json!(Digest::of(b"other").to_string());
        c
    });
    let r = run(&p, "");
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("B: layer 1 has diff_id")),
        "{:?}",
        r.notes
    );
}
