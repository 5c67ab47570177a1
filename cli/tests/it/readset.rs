//! Read-set reuse (docs/read-set.md): after a base patch, a RUN runs again exactly when
//! something it observed changed, and every result is bit-identical to a from-scratch
//! `--no-cache` build against the new base.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::fleet::{build_base, ok, strata};
use crate::support::write;

/// Five RUN steps, each observing one kind of thing of the base.
const APP: &str = "FROM oci-layout://base:1\n\
RUN cat /etc/app.conf > /r1\n\
RUN if [ -e /etc/feature ]; then echo yes; else echo no; fi > /r2\n\
RUN ls /etc/conf.d > /r3\n\
RUN echo x > /srv/data/f\n\
RUN rm -f /etc/old\n";

/// The base's own extra lines: what the RUN steps above observe. `feature`, `more`, `closed`,
/// `keep_old` and `conf` vary it.
fn base_lines(conf: &str, feature: bool, more: bool, closed: bool, keep_old: bool) -> String {
    let mut s = format!(
        "RUN mkdir -p /etc/conf.d /srv/data && echo a > /etc/conf.d/a && echo {conf} > /etc/app.conf\n"
    );
    if feature {
        s.push_str("RUN touch /etc/feature\n");
    }
    if more {
        s.push_str("RUN echo b > /etc/conf.d/b\n");
    }
    if closed {
        s.push_str("RUN chmod 700 /srv/data\n");
    }
    if keep_old {
        s.push_str("RUN touch /etc/old\n");
    }
    s
}

/// `(status tag, RUN text)` of each RUN step in a plain progress log, in order.
fn statuses(err: &str) -> Vec<&'static str> {
    let mut v = Vec::new();
    for line in err.lines() {
        if !line.contains(" RUN ") || !line.starts_with('#') {
            continue;
        }
        if line.contains(" REUSED ") {
            v.push("reused");
        } else if line.contains(" CACHED ") {
            v.push("cached");
        } else if line.contains(" DONE ") {
            v.push("ran");
        }
    }
    v
}

#[test]
fn a_base_patch_reruns_exactly_the_run_steps_that_observed_it() {
    // As root or rootless (.ci/run-rootless-tests runs these as both test users).
    require_busybox();
    let w = tempfile::tempdir().unwrap();
    let base_store = tempfile::tempdir().unwrap();
    let app = w.path().join("app");
    write(&app.join("Dockerfile"), APP);
    let appdir = app.to_str().unwrap();
    let layout = app.join("base");
    let store = tempfile::tempdir().unwrap();
    let build = |store: &Path, extra: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "--explain"];
        args.extend_from_slice(extra);
        args.push(appdir);
        ok(strata(store, w.path(), &args))
    };
    let patch = |level: &str, lines: String| {
        build_base(base_store.path(), w.path(), level, &lines, &layout);
        ok(strata(
            store.path(),
            w.path(),
            &["lock", appdir, "--update"],
        ));
    };
    let fresh = || {
        build(
            tempfile::tempdir().unwrap().path(),
            &["--no-cache", "--no-readset"],
        )
        .0
    };

    patch("1", base_lines("v1", false, false, false, true));
    let (_, err) = build(store.path(), &[]);
    assert_eq!(statuses(&err), ["ran"; 5], "{err}");

    // (1) A file no RUN reads (/etc/patch-level): every RUN is reused.
    patch("2", base_lines("v1", false, false, false, true));
    let (d, err) = build(store.path(), &[]);
    assert_eq!(statuses(&err), ["reused"; 5], "{err}");
    assert!(err.contains("observed paths are unchanged"), "{err}");
    assert!(err.contains("5 reused by read set"), "{err}");
    assert_eq!(d, fresh(), "a reuse is what a from-scratch build gives");

    // (2)–(6): each patch is observed by exactly one RUN (`R` ran again, `.` reused), and
    // each result equals a from-scratch build on the new base.
    let cases: [(&str, [bool; 4], &str, &str); 5] = [
        // conf, [feature, more, closed, keep_old], expected, the reason --explain names
        (
            "v2",
            [false, false, false, true],
            "R....",
            "reads /etc/app.conf",
        ),
        // A new file where a RUN probed and found nothing.
        ("v2", [true, false, false, true], ".R...", "/etc/feature"),
        // A new entry in a directory a RUN listed.
        ("v2", [true, true, false, true], "..R..", "/etc/conf.d"),
        // The mode of a directory a RUN's layer copies up.
        ("v2", [true, true, true, true], "...R.", "/srv/data"),
        // A file a RUN deleted is no longer there: its layer would have no whiteout.
        ("v2", [true, true, true, false], "....R", "/etc/old"),
    ];
    for (conf, [feature, more, closed, keep_old], expected, why) in cases {
        patch("2", base_lines(conf, feature, more, closed, keep_old));
        let (d, err) = build(store.path(), &[]);
        let expected: Vec<&str> = expected
            .chars()
            .map(|c| if c == 'R' { "ran" } else { "reused" })
            .collect();
        assert_eq!(statuses(&err), expected, "{err}");
        assert!(
            err.lines()
                .any(|l| l.contains("why: ran again: it") && l.contains(why)),
            "--explain names {why}: {err}"
        );
        assert_eq!(d, fresh(), "{expected:?}");
    }

    // (7) The shell every RUN executes (busybox) changed: every RUN runs again.
    let busybox = w.path().join("base-ctx/busybox");
    fs::OpenOptions::new()
        .append(true)
        .open(&busybox)
        .unwrap()
        .write_all(b"\0patched")
        .unwrap();
    patch("2", base_lines("v2", true, true, true, false));
    let (d, err) = build(store.path(), &[]);
    assert_eq!(statuses(&err), ["ran"; 5], "{err}");
    assert_eq!(d, fresh());

    // --no-readset: a new base runs every RUN again.
    patch("3", base_lines("v2", true, true, true, false));
    let (_, err) = build(store.path(), &["--no-readset"]);
    assert_eq!(statuses(&err), ["ran"; 5], "{err}");
}

#[test]
fn a_run_with_network_or_a_cache_mount_is_never_reused() {
    // As root or rootless (.ci/run-rootless-tests runs these as both test users).
    require_busybox();
    let w = tempfile::tempdir().unwrap();
    let base_store = tempfile::tempdir().unwrap();
    let app = w.path().join("app");
    write(
        &app.join("Dockerfile"),
        "FROM oci-layout://base:1\n\
         RUN --network=host true\n\
         RUN --mount=type=cache,target=/cache true\n\
         RUN true\n",
    );
    let appdir = app.to_str().unwrap();
    let layout = app.join("base");
    let store = tempfile::tempdir().unwrap();
    let args = ["build", "--progress", "plain", appdir];
    build_base(base_store.path(), w.path(), "1", "", &layout);
    ok(strata(store.path(), w.path(), &args));
    build_base(base_store.path(), w.path(), "2", "", &layout);
    ok(strata(
        store.path(),
        w.path(),
        &["lock", appdir, "--update"],
    ));
    let (_, err) = ok(strata(store.path(), w.path(), &args));
    assert_eq!(statuses(&err), ["ran", "ran", "reused"], "{err}");
}

fn require_busybox() {
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: install busybox-static (.ci/install-deps does)"
    );
}

#[test]
fn read_sets_travel_with_an_exported_cache() {
    require_busybox();
    let w = tempfile::tempdir().unwrap();
    let base_store = tempfile::tempdir().unwrap();
    let app = w.path().join("app");
    write(
        &app.join("Dockerfile"),
        "FROM oci-layout://base:1\nRUN echo built > /built && cat /etc/passwd > /users\n",
    );
    let appdir = app.to_str().unwrap();
    let layout = app.join("base");
    let cache = w.path().join("cache");
    let to = format!("type=local,dest={}", cache.display());
    let from = format!("type=local,src={}", cache.display());
    build_base(base_store.path(), w.path(), "1", "", &layout);

    // Machine A builds on the old base and exports its cache.
    let a = tempfile::tempdir().unwrap();
    ok(strata(
        a.path(),
        w.path(),
        &["build", "--progress", "plain", "--cache-to", &to, appdir],
    ));

    // The base is patched (nothing the RUN reads). Machine B, an empty store with A's cache,
    // reuses the RUN by its exported read set: nothing runs, the layer comes from the cache.
    build_base(base_store.path(), w.path(), "2", "", &layout);
    let b = tempfile::tempdir().unwrap();
    ok(strata(b.path(), w.path(), &["lock", appdir, "--update"]));
    let (d, err) = ok(strata(
        b.path(),
        w.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--cache-from",
            &from,
            appdir,
        ],
    ));
    assert_eq!(statuses(&err), ["reused"], "{err}");
    let (fresh, _) = ok(strata(
        tempfile::tempdir().unwrap().path(),
        w.path(),
        &["build", "--no-cache", "--no-readset", appdir],
    ));
    assert_eq!(d, fresh);
}
