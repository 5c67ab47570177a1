//! `registries.conf` end to end: two real registries (the CNCF distribution registry), one the
//! origin and one its mirror, as air-gapped CI has them.

use std::fs;
use std::path::Path;

use crate::support::registry::Registry;
use crate::support::{build, strata, strata_in, write, Run};

/// Builds a one-file scratch image marked `marker` in `seed` and pushes it to each of `refs`;
/// returns the pushed manifest digest (the same everywhere: pushes are byte for byte).
fn push_image(seed: &Path, work: &Path, marker: &str, refs: &[String]) -> String {
    let ctx = work.join(format!("img-{marker}"));
    write(
        &ctx.join("Dockerfile"),
        format!("FROM scratch\nCOPY m /etc/marker\nENV MARK={marker}\n"),
    );
    write(&ctx.join("m"), marker);
    build(seed, &ctx, &["-t", &format!("img:{marker}")]).ok();
    let mut digest = String::new();
    for r in refs {
        let d = strata_in(seed, &["push", &format!("img:{marker}"), r])
            .ok()
            .stdout()
            .trim()
            .to_string();
        assert!(digest.is_empty() || digest == d);
        digest = d;
    }
    digest
}

fn manifest_gets(reg: &Registry, repo: &str) -> usize {
    reg.requests()
        .iter()
        .filter(|(m, u)| m == "GET" && u.starts_with(&format!("/v2/{repo}/manifests/")))
        .count()
}

#[test]
fn mirrors_serve_pulls_the_lock_is_the_same_and_blocked_or_malformed_files_are_clear_errors() {
    let origin = Registry::start();
    let mirror = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let seed = tempfile::tempdir().unwrap();
    // `base` is in both registries (the mirror under `hub/`); `only-origin` is not mirrored.
    let base = format!("{}/lib/base:1", origin.host);
    let v1 = push_image(
        seed.path(),
        work.path(),
        "one",
        &[base.clone(), format!("{}/hub/lib/base:1", mirror.host)],
    );
    let only_origin = format!("{}/lib/only-origin:1", origin.host);
    push_image(
        seed.path(),
        work.path(),
        "two",
        std::slice::from_ref(&only_origin),
    );

    let conf = work.path().join("registries.conf");
    fs::write(
        &conf,
        format!(
            "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nprefix = \"{o}\"\nlocation = \"{o}\"\n\n[[registry.mirror]]\nlocation = \"{m}/hub\"\n",
            o = origin.host,
            m = mirror.host
        ),
    )
    .unwrap();
    let conf_arg = conf.to_str().unwrap();
    let app = |name: &str, from: &str| {
        let ctx = work.path().join(name);
        write(&ctx.join("Dockerfile"), format!("FROM {from}\nCOPY a /a\n"));
        write(&ctx.join("a"), "a\n");
        ctx
    };

    // Without the file: the origin serves, and the lock pins its digest.
    let direct = app("direct", &base);
    let d = build(tempfile::tempdir().unwrap().path(), &direct, &[])
        .ok()
        .digest();
    let lock_direct = fs::read_to_string(direct.join("strata.lock")).unwrap();
    assert!(lock_direct.contains(&v1), "{lock_direct}");
    let origin_gets = manifest_gets(&origin, "lib/base");
    assert!(origin_gets > 0);

    // With it: the mirror serves, the origin is not asked, same image, same lock.
    let mirrored = app("mirrored", &base);
    let store = tempfile::tempdir().unwrap();
    let r = build(store.path(), &mirrored, &["--registries-conf", conf_arg]).ok();
    assert_eq!(r.digest(), d);
    assert_eq!(
        fs::read_to_string(mirrored.join("strata.lock")).unwrap(),
        lock_direct,
        "the pinned digest does not depend on which mirror served"
    );
    assert!(manifest_gets(&mirror, "hub/lib/base") > 0);
    assert_eq!(manifest_gets(&origin, "lib/base"), origin_gets);

    // An image the mirror lacks falls back to the origin.
    let fallback = app("fallback", &only_origin);
    build(
        tempfile::tempdir().unwrap().path(),
        &fallback,
        &["--registries-conf", conf_arg],
    )
    .ok();
    assert!(manifest_gets(&mirror, "hub/lib/only-origin") > 0);
    assert!(manifest_gets(&origin, "lib/only-origin") > 0);

    // Air-gapped: the origin is gone; an empty store builds through the mirror alone, and the
    // file is found through $CONTAINERS_REGISTRIES_CONF as podman finds it.
    drop(origin);
    let gapped = app("gapped", &base);
    let out = strata()
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .arg("--store")
        .arg(tempfile::tempdir().unwrap().path())
        .arg("build")
        .arg(&gapped)
        .output()
        .unwrap();
    let r = Run { out }.ok();
    assert_eq!(r.digest(), d);

    // Blocked: refused before any request, naming the file and the prefix, at the FROM line.
    let blocked = work.path().join("blocked.conf");
    fs::write(
        &blocked,
        format!(
            "[[registry]]\nprefix = \"{}/lib\"\nblocked = true\n",
            mirror.host
        ),
    )
    .unwrap();
    let before = mirror.requests().len();
    let m = app("m", &format!("{}/lib/x:1", mirror.host));
    let r = build(
        tempfile::tempdir().unwrap().path(),
        &m,
        &["--registries-conf", blocked.to_str().unwrap()],
    )
    .fails();
    let err = r.stderr();
    assert!(err.contains("is blocked by"), "{err}");
    assert!(err.contains(blocked.to_str().unwrap()), "{err}");
    assert!(err.contains("Dockerfile:1"), "{err}");
    assert_eq!(mirror.requests().len(), before);

    // A malformed file: its path and line, and a hint.
    let bad = work.path().join("bad.conf");
    fs::write(
        &bad,
        "[[registry]]\nprefix = \"x.io\"\ninsecure = \"yes\"\n",
    )
    .unwrap();
    let r = build(
        tempfile::tempdir().unwrap().path(),
        &gapped,
        &["--registries-conf", bad.to_str().unwrap()],
    )
    .fails();
    let err = r.stderr();
    assert!(err.contains(&format!("`{}`:3:", bad.display())), "{err}");
    assert!(err.contains("hint: "), "{err}");
}
