//! strata.lock: the first build pins every image reference; a moved tag changes nothing until
//! `strata lock --update`; `--locked` fails when a pin is missing and never writes the file.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::support::{done_counts, ok, on_store, write};

fn err(o: Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Builds a base image whose /etc/os-release says `release` into the layout `dest`, tagged `tag`.
fn base(store: &Path, work: &Path, dest: &Path, tag: &str, release: &str) -> String {
    let b = work.join(format!("base-src-{release}"));
    write(&b.join("Dockerfile"), "FROM scratch\nCOPY etc/ /etc/\n");
    write(&b.join("etc/os-release"), format!("VERSION={release}\n"));
    ok(on_store(
        store,
        &[
            "build",
            "-t",
            &format!("base:{tag}"),
            "--output",
            &format!("type=oci,dest={}", dest.display()),
            b.to_str().unwrap(),
        ],
    ))
}

#[test]
fn a_moved_tag_changes_nothing_until_the_lock_is_updated() {
    let w = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let app = w.path().join("app");
    let layouts = app.join("layouts");
    let v1 = base(s, w.path(), &layouts, "1", "1.0");
    write(
        &app.join("Dockerfile"),
        "FROM oci-layout://layouts:1\nCOPY . /app/\n",
    );
    write(&app.join("main.txt"), "the app\n");
    // The layouts live in the context but are not part of what COPY . copies.
    write(&app.join(".dockerignore"), "layouts\nother\nDockerfile*\n");
    let appdir = app.to_str().unwrap();
    let lock_path = app.join("strata.lock");

    // --locked without a lock file: refused, nothing written.
    let e = err(on_store(s, &["build", "--locked", appdir]));
    assert!(
        e.contains("no lock file") && e.contains("strata lock"),
        "{e}"
    );
    assert!(!lock_path.exists());

    // The first build pins the reference.
    let d1 = ok(on_store(s, &["build", appdir]));
    let lock = fs::read_to_string(&lock_path).unwrap();
    assert!(
        lock.contains(&format!("\"oci-layout://layouts:1\" = \"{v1}\"")),
        "{lock}"
    );
    // Writing the lock did not change the context: the rebuild executes nothing.
    let o = on_store(s, &["build", "--progress", "plain", appdir]);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(ok(o), d1);
    assert_eq!(done_counts(&stderr).0, 0, "{stderr}");

    // The tag moves to a patched base: builds keep the pinned one.
    let v2 = base(s, w.path(), &layouts, "1", "1.1");
    assert_ne!(v1, v2);
    assert_eq!(ok(on_store(s, &["build", appdir])), d1);
    assert_eq!(ok(on_store(s, &["build", "--locked", appdir])), d1);
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), lock);

    // `strata lock --update` re-resolves and says what moved.
    let moved = ok(on_store(s, &["lock", appdir, "--update"]));
    assert_eq!(moved, format!("oci-layout://layouts:1: {v1} -> {v2}"));
    let d2 = ok(on_store(s, &["build", "--locked", appdir]));
    assert_ne!(d2, d1);
    // Nothing moved since: `strata lock --update` prints nothing and leaves the file.
    let after = fs::read_to_string(&lock_path).unwrap();
    assert_eq!(ok(on_store(s, &["lock", appdir, "--update"])), "");
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), after);

    // A reference the lock does not have: --locked fails and names it.
    write(
        &app.join("Dockerfile.other"),
        "FROM oci-layout://layouts@sha256:0000000000000000000000000000000000000000000000000000000000000000\n",
    );
    write(
        &app.join("Dockerfile.new"),
        "FROM oci-layout://layouts:1 AS a\nFROM oci-layout://other:2\n",
    );
    base(s, w.path(), &app.join("other"), "2", "2.0");
    let newdf = app.join("Dockerfile.new");
    let e = err(on_store(
        s,
        &["build", "--locked", "-f", newdf.to_str().unwrap(), appdir],
    ));
    assert!(
        e.contains("`oci-layout://other:2` is not pinned") && e.contains("strata lock"),
        "{e}"
    );
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), after);
    // `strata lock` pins it (and keeps what is in use, dropping what is not).
    let out = ok(on_store(
        s,
        &["lock", "-f", newdf.to_str().unwrap(), appdir],
    ));
    assert!(
        out.starts_with("oci-layout://other:2: pinned sha256:"),
        "{out}"
    );
    ok(on_store(
        s,
        &["build", "--locked", "-f", newdf.to_str().unwrap(), appdir],
    ));

    // A damaged lock file is an error that names it.
    write(&lock_path, "version = 1\n[images]\n\"x\" = \"sha256:zz\"\n");
    let e = err(on_store(s, &["build", appdir]));
    assert!(
        e.contains("strata.lock") && e.contains("not a valid"),
        "{e}"
    );
}

/// `strata lock` once flattened every build flag, so `--output` (and `--tag`, `--compression`,
/// …) were accepted and ignored: now clap refuses them, and nothing is written.
#[test]
fn lock_refuses_build_only_flags_such_as_output() {
    let w = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    write(&w.path().join("Dockerfile"), "FROM scratch\n");
    let dest = w.path().join("x");
    let spec = format!("type=oci,dest={}", dest.display());
    let ctx = w.path().to_str().unwrap();
    let e = err(on_store(store.path(), &["lock", "--output", &spec, ctx]));
    assert!(e.contains("unexpected argument '--output'"), "{e}");
    assert!(!dest.exists() && !w.path().join("strata.lock").exists());
    let e = err(on_store(store.path(), &["lock", "-t", "app:1", ctx]));
    assert!(e.contains("unexpected argument '-t'"), "{e}");
    // What lock does take still works.
    ok(on_store(store.path(), &["lock", ctx]));
}
