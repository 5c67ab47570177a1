//! `strata build --all`: a workspace of several images in one store.

use serde_json::Value;

use crate::support::{build_all, strata, write};

fn row<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == name)
        .unwrap()
}

#[test]
fn workspace_builds_each_image_once_and_reports_what_changed() {
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    write(&w.join("strata.toml"), "[defaults]\ntags = [\"{name}:1\"]\n\n[[image]]\ncontext = \"apps/*\"\noutputs = [\"type=oci,dest=out/{name}\"]\n");
    for app in ["a", "b"] {
        write(
            &w.join(format!("apps/{app}/Dockerfile")),
            "FROM scratch\nCOPY common.txt /common\nCOPY own.txt /own\n",
        );
        write(
            &w.join(format!("apps/{app}/common.txt")),
            "shared by every app\n",
        );
        write(
            &w.join(format!("apps/{app}/own.txt")),
            format!("app {app}\n"),
        );
    }
    let store = tempfile::tempdir().unwrap();
    let (r, _) = build_all(w, store.path(), &[]);
    let (a, b) = (row(&r, "a"), row(&r, "b"));
    assert_eq!(a["changed"], true);
    let executed = a["executed"].as_u64().unwrap() + b["executed"].as_u64().unwrap();
    assert_eq!(
        executed, 3,
        "the identical COPY runs once across images: {r}"
    );
    assert!(w.join("out/a/index.json").is_file() && w.join("out/b/index.json").is_file());

    // Nothing changed: every image unchanged, nothing executed.
    let (r2, err) = build_all(w, store.path(), &[]);
    for n in ["a", "b"] {
        assert_eq!(row(&r2, n)["changed"], false, "{err}");
        assert_eq!(row(&r2, n)["executed"], 0);
        assert_eq!(row(&r2, n)["previous"], row(&r, n)["digest"]);
    }
    assert!(
        err.contains("2 images: 0 changed, 2 unchanged, 0 failed"),
        "{err}"
    );

    // One app's file changes: only that image changes.
    write(&w.join("apps/b/own.txt"), "app b, patched\n");
    let (r3, _) = build_all(w, store.path(), &[]);
    assert_eq!(row(&r3, "a")["changed"], false);
    assert_eq!(row(&r3, "b")["changed"], true);
    assert_eq!(row(&r3, "b")["executed"], 1);

    // A subset.
    let (r4, _) = build_all(w, store.path(), &["--image", "a"]);
    assert_eq!(r4["images"].as_array().unwrap().len(), 1);
}

#[test]
fn shards_split_the_fleet_between_separate_processes_and_stores() {
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    write(&w.join("strata.toml"), "[[image]]\ncontext = \"apps/*\"\n");
    let all: Vec<String> = (0..8).map(|i| format!("app{i}")).collect();
    for app in &all {
        write(
            &w.join(format!("apps/{app}/Dockerfile")),
            "FROM scratch\nCOPY own.txt /own\n",
        );
        write(&w.join(format!("apps/{app}/own.txt")), app);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    for i in 1..=3 {
        let store = tempfile::tempdir().unwrap();
        let (r, _) = build_all(w, store.path(), &["--shard", &format!("{i}/3")]);
        let names: Vec<String> = r["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["image"].as_str().unwrap().to_string())
            .collect();
        // The same shard again picks the same images.
        let (again, _) = build_all(w, store.path(), &["--shard", &format!("{i}/3")]);
        assert_eq!(again["images"].as_array().unwrap().len(), names.len());
        sizes.push(names.len());
        seen.extend(names);
    }
    seen.sort();
    assert_eq!(seen, all, "every image in exactly one shard: {sizes:?}");
    assert!(sizes.iter().filter(|&&n| n > 0).count() >= 2, "{sizes:?}");

    let o = strata()
        .current_dir(w)
        .args(["build", "--all", "--shard", "4/3"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected I/N"));
}
