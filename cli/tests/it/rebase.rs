//! `strata rebase`: swapping base layers is bit-identical to rebuilding against the new base,
//! and refused when a layer above the base depends on it.

use crate::support::{ok, on_store, write};

#[test]
fn rebase_equals_rebuild_and_refuses_base_dependent_layers() {
    let w = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let app = w.path().join("app");
    let layouts = app.join("layouts");
    // Two versions of a base: same config, patched content.
    for (tag, release) in [("b1", "1.0"), ("b2", "1.1 (security fix)")] {
        let b = w.path().join(format!("base-{tag}"));
        write(
            &b.join("Dockerfile"),
            "FROM scratch\nCOPY etc/ /etc/\nENV BASE=yes\n",
        );
        write(&b.join("etc/os-release"), format!("VERSION={release}\n"));
        ok(on_store(
            s,
            &[
                "build",
                "-t",
                &format!("base:{tag}"),
                "--output",
                &format!("type=oci,dest={}", layouts.display()),
                b.to_str().unwrap(),
            ],
        ));
    }
    write(&app.join("Dockerfile"), "ARG BASE=b1\nFROM oci-layout://layouts:${BASE}\nCOPY --link app.txt /app/\nCMD [\"/app/app.txt\"]\n");
    write(&app.join("app.txt"), "the app\n");
    write(
        &app.join("Dockerfile.plain"),
        "FROM oci-layout://layouts:b1\nCOPY app.txt /app/\n",
    );
    let appdir = app.to_str().unwrap();
    ok(on_store(s, &["build", "-t", "app:1", appdir]));
    let onto = format!("oci-layout://{}:b2", layouts.display());
    let rebased = ok(on_store(
        s,
        &["rebase", "app:1", "--onto", &onto, "-t", "app:rebased"],
    ));
    let rebuilt = ok(on_store(s, &["build", "--build-arg", "BASE=b2", appdir]));
    assert_eq!(
        rebased, rebuilt,
        "rebase must give the digest of a from-scratch build against the new base"
    );

    // A plain COPY may depend on the base (existing directories, symlinks): refused.
    ok(on_store(
        s,
        &[
            "build",
            "-t",
            "plain:1",
            "-f",
            app.join("Dockerfile.plain").to_str().unwrap(),
            appdir,
        ],
    ));
    let refused = on_store(s, &["rebase", "plain:1", "--onto", &onto]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("depend on the base") && err.contains("COPY app.txt /app/"),
        "{err}"
    );
    ok(on_store(
        s,
        &["rebase", "plain:1", "--onto", &onto, "--force"],
    ));
}
