//! The crafted layers of `testdata/malicious/` (one attack each, see its README) unpacked the
//! way base layers are for RUN: every test checks the specific outcome AND that nothing was
//! written outside the unpack directory (a `sentinel/` directory three levels up, where the
//! layers aim, stays exactly as it was).

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use strata_engine::layer::decompress_reader_limited;
use strata_engine::sandbox::snapshot::unpack;
use strata_engine::sandbox::Limits;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/malicious")
        .join(name)
}

/// `<tmp>/sentinel/secret` and the unpack dir `<tmp>/a/b/unpack`.
struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("sentinel")).unwrap();
        fs::write(tmp.path().join("sentinel/secret"), b"host\n").unwrap();
        fs::create_dir_all(tmp.path().join("a/b/unpack")).unwrap();
        Fixture { tmp }
    }

    fn dest(&self) -> PathBuf {
        self.tmp.path().join("a/b/unpack")
    }

    /// Decompresses (by extension) and unpacks `name` with `limits`.
    fn unpack(&self, name: &str, limits: Limits) -> Result<(), String> {
        let media_type = if name.ends_with(".gz") {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else if name.ends_with(".zst") {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let file = fs::File::open(testdata(name)).unwrap();
        let reader: Box<dyn Read + Send> =
            decompress_reader_limited(Box::new(file), media_type, limits.zstd_window_log_max)
                .map_err(|e| e.to_string())?;
        unpack(reader, &self.dest(), limits).map_err(|e| e.to_string())
    }

    fn fails(&self, name: &str, limits: Limits, expected: &str) -> String {
        let err = self
            .unpack(name, limits)
            .expect_err(&format!("{name} must be refused"));
        assert!(
            err.contains(expected),
            "{name}: expected `{expected}` in: {err}"
        );
        self.assert_contained();
        err
    }

    /// Nothing outside the unpack dir was created or changed: `<tmp>` holds exactly `a` and
    /// `sentinel`, `sentinel/` exactly the untouched `secret` (one link), `a/` and `a/b/` only
    /// the way down.
    fn assert_contained(&self) {
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let t = self.tmp.path();
        assert_eq!(names(t), ["a", "sentinel"]);
        assert_eq!(names(&t.join("sentinel")), ["secret"], "sentinel/ changed");
        assert_eq!(fs::read(t.join("sentinel/secret")).unwrap(), b"host\n");
        assert_eq!(fs::metadata(t.join("sentinel/secret")).unwrap().nlink(), 1);
        assert_eq!(names(&t.join("a")), ["b"]);
        assert_eq!(names(&t.join("a/b")), ["unpack"]);
        assert!(!Path::new("/etc/strata-malicious-pwned").exists());
    }
}

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn dotdot_components_are_refused() {
    let f = Fixture::new();
    f.fails(
        "dotdot.tar",
        limits(),
        "unsafe layer entry `../../../sentinel/pwned`: `..` component",
    );
}

#[test]
fn absolute_symlink_escape_lands_inside() {
    let f = Fixture::new();
    f.unpack("abs-symlink-escape.tar", limits()).unwrap();
    f.assert_contained();
    // `/etc` resolved in the unpack root: the write went to the layer's own `etc/`.
    assert_eq!(
        fs::read(f.dest().join("etc/strata-malicious-pwned")).unwrap(),
        b"pwned\n"
    );
    assert_eq!(
        fs::read_link(f.dest().join("evil")).unwrap(),
        Path::new("/etc")
    );
}

#[test]
fn relative_symlink_escape_lands_inside() {
    let f = Fixture::new();
    f.unpack("rel-symlink-escape.tar", limits()).unwrap();
    f.assert_contained();
    // `..` stops at the unpack root: `../../../sentinel` is the layer's own `/sentinel`.
    assert_eq!(
        fs::read(f.dest().join("sentinel/pwned")).unwrap(),
        b"pwned\n"
    );
}

#[test]
fn directory_replaced_by_symlink_then_written_below_is_refused() {
    let f = Fixture::new();
    f.fails(
        "symlink-replaces-dir.tar",
        limits(),
        "create parent directories of `d/pwned`: No such file or directory",
    );
    // The directory was replaced (its content went with it); nothing was followed out.
    assert!(fs::symlink_metadata(f.dest().join("d"))
        .unwrap()
        .is_symlink());
}

#[test]
fn hard_links_to_outside_are_refused() {
    let f = Fixture::new();
    f.fails(
        "hardlink-outside.tar",
        limits(),
        "unsafe layer entry `h`: `..` component",
    );
    let nlink = fs::metadata("/etc/passwd").unwrap().nlink();
    f.fails(
        "hardlink-absolute.tar",
        limits(),
        "resolve hard link target of `h`: No such file or directory",
    );
    assert!(!f.dest().join("h").exists());
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), nlink);
}

#[test]
fn root_replaced_by_a_symlink_is_refused() {
    for name in ["symlink-dot.tar", "symlink-slash.tar"] {
        let f = Fixture::new();
        f.fails(name, limits(), "the root can only be a directory");
        assert!(fs::symlink_metadata(f.dest()).unwrap().is_dir());
        assert!(!f.dest().join("pwned").exists());
    }
}

#[test]
fn pax_and_ustar_sizes_that_disagree_are_refused() {
    for (name, reason) in [
        (
            "pax-size-smaller.tar",
            "PAX `size` 0 disagrees with the ustar header size 1024",
        ),
        (
            "pax-size-larger.tar",
            "PAX `size` 1024 disagrees with the ustar header size 0",
        ),
    ] {
        let f = Fixture::new();
        let err = f.fails(name, limits(), reason);
        assert!(err.contains("unsafe layer entry `innocent`"), "{err}");
        assert!(err.contains("CVE-2025-62518"), "{err}");
        // Refused before anything of it was written, hidden entry included.
        assert!(!f.dest().join("innocent").exists() && !f.dest().join("etc").exists());
    }
}

#[test]
fn too_long_a_path_is_refused() {
    let f = Fixture::new();
    f.fails(
        "long-path.tar",
        limits(),
        "layer exceeds the path length limit of 4096",
    );
    assert!(!f.dest().join("d").exists());
}

#[test]
fn too_many_entries_are_refused() {
    let f = Fixture::new();
    let lim = Limits {
        max_entries: 1000,
        ..limits()
    };
    f.fails(
        "too-many-entries.tar.gz",
        lim,
        "layer exceeds the entry count limit of 1000",
    );
    // The same layer fits the default limit.
    let g = Fixture::new();
    g.unpack("too-many-entries.tar.gz", limits()).unwrap();
    g.assert_contained();
    assert!(g.dest().join("d1000").is_dir());
}

#[test]
fn gzip_bombs_are_refused() {
    let lim = Limits {
        max_bytes: 16 << 20,
        ..limits()
    };
    for name in ["gzip-bomb.tar.gz", "gzip-bomb-trailer.tar.gz"] {
        let f = Fixture::new();
        f.fails(
            name,
            lim,
            "layer exceeds the uncompressed size limit of 16777216",
        );
        if let Ok(m) = fs::metadata(f.dest().join("zeros")) {
            assert!(m.len() <= 16 << 20, "wrote {} bytes", m.len());
        }
    }
}

#[test]
fn zstd_window_over_the_limit_is_refused() {
    let f = Fixture::new();
    f.fails(
        "zstd-window.tar.zst",
        limits(),
        "zstd frame needs a window of 2147483648 bytes, more than the limit of 2^27",
    );
    assert!(!f.dest().join("ok").exists());
    // The frame itself is well formed: with a large enough limit it unpacks.
    let g = Fixture::new();
    g.unpack(
        "zstd-window.tar.zst",
        Limits {
            zstd_window_log_max: 31,
            ..limits()
        },
    )
    .unwrap();
    assert_eq!(fs::read(g.dest().join("ok")).unwrap(), b"ok\n");
    g.assert_contained();
}

#[test]
fn every_committed_layer_is_tested_and_described() {
    let readme = fs::read_to_string(testdata("README.md")).unwrap();
    let this = include_str!("malicious.rs");
    for e in fs::read_dir(testdata("")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".tar") || name.ends_with(".gz") || name.ends_with(".zst") {
            assert!(
                readme.contains(&format!("`{name}`")),
                "{name} not in README.md"
            );
            assert!(this.contains(&format!("\"{name}\"")), "{name} not tested");
        }
    }
}
