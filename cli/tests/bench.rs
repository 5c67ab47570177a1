//! `strata bench` end to end: scenarios, figures and advice on a small Dockerfile.

use std::fs;
use std::process::Command;

use serde_json::Value;

#[test]
fn bench_reports_scenarios_and_advice() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::create_dir_all(c.join("src")).unwrap();
    for i in 0..20 {
        fs::write(c.join(format!("src/f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    fs::write(c.join("lock.txt"), "lock\n").unwrap();
    fs::write(
        c.join("Dockerfile"),
        "FROM scratch\nARG V=1\nCOPY . /app/\nENV X=$V\nCOPY lock.txt /lock\nLABEL l=1\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let (json, html) = (out.path().join("r.json"), out.path().join("r.html"));
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("bench")
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg(c)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let sc = r["scenarios"].as_array().unwrap();
    let by = |n: &str| {
        sc.iter()
            .find(|s| s["name"].as_str().unwrap().starts_with(n))
            .unwrap_or_else(|| panic!("no scenario {n}: {r}"))
    };
    assert_eq!(by("cold")["executed"], 5);
    assert_eq!(by("no-op")["executed"], 0);
    let arg = by("build-arg V");
    // ARG V (the first step) and every config step after it; the COPY layers cannot depend on
    // V (their key has the parent facts, not the parent key: docs/cache-keys.md), so they hit.
    assert_eq!(arg["executed"], 3, "{arg}");
    // Changing any context file re-runs `COPY .` and the config steps after it, not `COPY lock.txt`.
    let change = sc
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("change "))
        .unwrap();
    assert_eq!(change["executed"], 3, "{change}");
    assert!(
        r["advice"][0].as_str().unwrap().contains("COPY . /app/"),
        "{}",
        r["advice"]
    );
    let page = fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && !page.contains("<script"),
        "self-contained HTML with SVG charts"
    );
    // The user's context is untouched.
    assert_eq!(
        fs::read_to_string(c.join("src/f0.txt")).unwrap(),
        "file 0\n"
    );
}
