//! Real overlay mounts (these tests run as root).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::layer::{canonicalize, write_layer, Compression};

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An overlay mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> Mount {
        // overlayfs lists lowers top first.
        let lowerdir = lowers
            .iter()
            .rev()
            .map(|p| p.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!(
            "lowerdir={lowerdir},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
            upper.display(),
            work.display()
        );
        run(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &opts,
                mnt.to_str().unwrap(),
            ],
        );
        Mount(mnt.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// One line per entry: path, kind, mode, owner (and non-empty xattr names).
fn describe(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EntryKind::Dir => "dir".to_string(),
                EntryKind::File { size, content } => match content {
                    Content::Path(_) => format!("file {size}"),
                    Content::Bytes(b) => format!("bytes {}", b.len()),
                },
                EntryKind::Symlink { target } => format!("sym {target}"),
                EntryKind::HardLink { target } => format!("link {target}"),
                EntryKind::CharDevice { major, minor } => format!("chr {major}:{minor}"),
                EntryKind::BlockDevice { major, minor } => format!("blk {major}:{minor}"),
                EntryKind::Fifo => "fifo".to_string(),
            };
            let mut s = format!("{} {kind} {:o} {}:{}", e.path, e.mode, e.uid, e.gid);
            for k in e.xattrs.keys() {
                s.push_str(&format!(" +{k}"));
            }
            s
        })
        .collect()
}

struct Dirs {
    _tmp: tempfile::TempDir,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn dirs(n_lowers: usize) -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let mk = |n: &str| {
        let p = tmp.path().join(n);
        fs::create_dir(&p).unwrap();
        p
    };
    let lowers = (0..n_lowers).map(|i| mk(&format!("lower{i}"))).collect();
    Dirs {
        lowers,
        upper: mk("upper"),
        work: mk("work"),
        mnt: mk("mnt"),
        _tmp: tmp,
    }
}

#[test]
fn captures_overlay_changes() {
    let d = dirs(2);
    // Bottom layer.
    sh(
        &d.lowers[0],
        "umask 022
         mkdir -p etc deldir/sub redo wasdir var proc bin
         echo root > etc/passwd; echo 127.0.0.1 > etc/hosts
         echo k > keep.txt; echo m > modify.txt; echo d > delete.txt
         echo a > deldir/a; echo b > deldir/sub/b
         echo 1 > redo/old1; echo 2 > redo/old2; echo w > wasdir/w
         echo c > chmod.txt; echo o > chown.txt; echo t > bin/tool
         echo was a file > wasfile",
    );
    // Top layer: deletes `wasdir` (overlay form: a 0/0 character device).
    run(
        "mknod",
        &[d.lowers[1].join("wasdir").to_str().unwrap(), "c", "0", "0"],
    );
    let mount = Mount::new(&d.lowers, &d.upper, &d.work, &d.mnt);
    sh(
        &d.mnt,
        "umask 022
         echo n > new.txt
         echo more >> modify.txt
         rm delete.txt
         rm -rf deldir
         rm -rf redo; mkdir redo; echo r > redo/new
         mkdir newdir; echo f > newdir/f
         mkdir wasdir; echo again > wasdir/again
         rm wasfile; mkdir wasfile; echo in > wasfile/in
         mkdir links; echo l > links/b; ln links/b links/a
         ln keep.txt keep2.txt
         ln -s ../keep.txt newdir/sym
         mkfifo newdir/fifo
         chmod 4755 chmod.txt
         chown 1000:1001 chown.txt
         setcap cap_net_raw+ep bin/tool
         setfattr -n user.junk -v x new.txt
         echo 10.0.0.1 >> etc/hosts
         touch etc/resolv.conf
         mkdir -p run/secrets dev var/cache-mnt; touch dev/null run/secrets/token",
    );
    std::os::unix::net::UnixListener::bind(d.mnt.join("newdir/sock")).unwrap();
    let cap = Command::new("getfattr")
        .args(["--only-values", "-n", "security.capability"])
        .arg(d.mnt.join("bin/tool"))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(cap.len(), 20, "a v2 vfs_cap_data");
    drop(mount);

    let exclude: Vec<String> = [
        "/etc/hosts",
        "etc/resolv.conf",
        "dev",
        "proc",
        "run/secrets",
        "var/cache-mnt/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let opts = CaptureOptions {
        upper: &d.upper,
        lowers: &d.lowers,
        mtime: 1234,
        exclude: &exclude,
        id_map: None,
    };
    let entries = capture(&opts).unwrap();
    assert_eq!(
        describe(&entries),
        [
            ".wh.deldir bytes 0 0 0:0",
            ".wh.delete.txt bytes 0 0 0:0",
            "bin dir 755 0:0",
            "bin/tool file 2 644 0:0 +security.capability",
            "chmod.txt file 2 4755 0:0",
            "chown.txt file 2 644 1000:1001",
            "etc dir 755 0:0",
            // In the image before: a change by the RUN, kept.
            "etc/hosts file 19 644 0:0",
            "keep.txt file 2 644 0:0",
            "keep2.txt link keep.txt 644 0:0",
            "links dir 755 0:0",
            "links/a file 2 644 0:0",
            "links/b link links/a 644 0:0",
            "modify.txt file 7 644 0:0",
            "new.txt file 2 644 0:0",
            "newdir dir 755 0:0",
            "newdir/f file 2 644 0:0",
            "newdir/fifo fifo 644 0:0",
            "newdir/sym sym ../keep.txt 777 0:0",
            "redo dir 755 0:0",
            "redo/.wh..wh..opq bytes 0 0 0:0",
            "redo/new file 2 644 0:0",
            // Deleted by the lower layer on top: a new dir, not opaque.
            "wasdir dir 755 0:0",
            "wasdir/again file 6 644 0:0",
            // A dir replacing a lower file: the kernel marks it opaque, spuriously.
            "wasfile dir 755 0:0",
            "wasfile/in file 3 644 0:0",
        ]
    );
    // The kernel did mark `wasfile` opaque; capture dropped the marker on purpose.
    let opq = Command::new("getfattr")
        .args(["--only-values", "-n", "trusted.overlay.opaque"])
        .arg(d.upper.join("wasfile"))
        .output()
        .unwrap();
    assert_eq!(opq.stdout, b"y");
    // Injected paths were in the upper, and were dropped.
    for p in [
        "etc/resolv.conf",
        "dev/null",
        "run/secrets/token",
        "var/cache-mnt",
    ] {
        assert!(d.upper.join(p).symlink_metadata().is_ok(), "{p}");
    }
    let tool = entries.iter().find(|e| e.path == "bin/tool").unwrap();
    assert_eq!(tool.xattrs["security.capability"], cap);
    assert!(entries.iter().all(|e| e.mtime == 1234));
    assert_eq!(
        entries
            .iter()
            .find(|e| e.path == "modify.txt")
            .unwrap()
            .kind,
        EntryKind::File {
            size: 7,
            content: Content::Path(d.upper.join("modify.txt"))
        }
    );

    // Through the layer writer: the whiteouts are real tar entries.
    let canon = canonicalize(entries.clone(), 1234).unwrap();
    assert_eq!(canon, entries, "capture already emits canonical order");
    let tar = d._tmp.path().join("layer.tar");
    let mut f = fs::File::create(&tar).unwrap();
    write_layer(&canon, Compression::None, &mut f).unwrap();
    drop(f);
    let out = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    for want in [
        ".wh.deldir",
        ".wh.delete.txt",
        "redo/.wh..wh..opq",
        "bin/tool",
        "keep2.txt",
    ] {
        assert!(names.contains(&want), "{want} missing from\n{listing}");
    }
    assert!(listing.contains("keep2.txt link to keep.txt"), "{listing}");
    assert!(listing
        .lines()
        .any(|l| l.starts_with("prw-r--r--") && l.contains("newdir/fifo")));
    assert!(listing
        .lines()
        .any(|l| l.starts_with("-rwsr-xr-x") && l.contains("chmod.txt")));
}

#[test]
fn opaque_kept_only_over_a_lower_directory() {
    // Lower 0 has `a/`, lower 1 hides it with an opaque `a/` that has `a/b/`; `c/` only in
    // lower 0 but under a whiteout in lower 1 for `c`.
    let d = dirs(2);
    sh(&d.lowers[0], "umask 022; mkdir -p a/x c/y; touch a/x/f");
    sh(&d.lowers[1], "mkdir -p a/b");
    run(
        "setfattr",
        &[
            "-n",
            "trusted.overlay.opaque",
            "-v",
            "y",
            d.lowers[1].join("a").to_str().unwrap(),
        ],
    );
    run(
        "mknod",
        &[d.lowers[1].join("c").to_str().unwrap(), "c", "0", "0"],
    );
    // The upper, written directly in overlay form: opaque `a/x` (hidden by lower 1's opaque
    // `a`), opaque `a/b` (a lower dir), opaque `c/y` (under a whiteout), opaque `new`.
    sh(&d.upper, "umask 022; mkdir -p a/x a/b c/y new");
    for p in ["a/x", "a/b", "c/y", "new"] {
        run(
            "setfattr",
            &[
                "-n",
                "user.overlay.opaque",
                "-v",
                "y",
                d.upper.join(p).to_str().unwrap(),
            ],
        );
    }
    let opts = CaptureOptions {
        upper: &d.upper,
        lowers: &d.lowers,
        mtime: 0,
        exclude: &[],
        id_map: None,
    };
    let entries = capture(&opts).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["a", "a/b", "a/b/.wh..wh..opq", "a/x", "c", "c/y", "new"]
    );
    assert!(entries.iter().all(|e| e.xattrs.is_empty()));
}

#[test]
fn id_map_reversed_and_unmapped_ids_refused() {
    let d = dirs(1);
    fs::write(d.upper.join("f"), b"x").unwrap();
    std::os::unix::fs::chown(d.upper.join("f"), Some(100_005), Some(100_007)).unwrap();
    let map = IdMap {
        uids: vec![(0, 1000, 1), (1, 100_000, 65536)],
        gids: vec![(0, 1000, 1), (1, 100_000, 65536)],
    };
    let mut opts = CaptureOptions {
        upper: &d.upper,
        lowers: &d.lowers,
        mtime: 0,
        exclude: &[],
        id_map: Some(&map),
    };
    let e = capture(&opts).unwrap();
    assert_eq!((e[0].uid, e[0].gid), (6, 8));
    let narrow = IdMap {
        uids: vec![(0, 1000, 1)],
        gids: vec![(0, 1000, 1)],
    };
    opts.id_map = Some(&narrow);
    assert!(matches!(
        capture(&opts),
        Err(CaptureError::UnmappedId {
            kind: "uid",
            id: 100_005,
            ..
        })
    ));
}

#[test]
fn refuses_redirects_metacopy_and_reserved_names() {
    for (xattr, on_dir) in [
        ("trusted.overlay.redirect", true),
        ("trusted.overlay.metacopy", false),
        ("user.overlay.redirect", true),
    ] {
        let d = dirs(1);
        let p = d.upper.join("x");
        if on_dir {
            fs::create_dir(&p).unwrap();
        } else {
            fs::write(&p, b"").unwrap();
        }
        run("setfattr", &["-n", xattr, "-v", "y", p.to_str().unwrap()]);
        let err = capture(&CaptureOptions {
            upper: &d.upper,
            lowers: &d.lowers,
            mtime: 0,
            exclude: &[],
            id_map: None,
        })
        .unwrap_err();
        assert!(
            matches!(&err, CaptureError::UnsupportedOverlay { path, .. } if path == "x"),
            "{err}"
        );
        assert!(err.to_string().contains("redirect_dir"), "{err}");
    }

    let d = dirs(1);
    fs::create_dir(d.upper.join("d")).unwrap();
    fs::write(d.upper.join("d/.wh.sneaky"), b"").unwrap();
    let err = capture(&CaptureOptions {
        upper: &d.upper,
        lowers: &d.lowers,
        mtime: 0,
        exclude: &[],
        id_map: None,
    })
    .unwrap_err();
    assert!(matches!(&err, CaptureError::ReservedName { path } if path == "d/.wh.sneaky"));
}

#[test]
fn never_follows_symlinks() {
    let d = dirs(1);
    let outside = d._tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();
    symlink(&outside, d.upper.join("escape")).unwrap();
    let entries = capture(&CaptureOptions {
        upper: &d.upper,
        lowers: &d.lowers,
        mtime: 0,
        exclude: &[],
        id_map: None,
    })
    .unwrap();
    assert_eq!(
        describe(&entries),
        [format!("escape sym {} 777 0:0", outside.display())]
    );
    // An excluded path absent from the lowers is dropped, whatever its kind.
    let entries = capture(&CaptureOptions {
        upper: &d.upper,
        lowers: &d.lowers,
        mtime: 0,
        exclude: &["escape".to_string()],
        id_map: None,
    })
    .unwrap();
    assert!(entries.is_empty());
}

#[test]
fn devices_kept_whiteout_devices_translated() {
    let d = dirs(1);
    sh(&d.lowers[0], "umask 022; mkdir -p d; touch d/gone");
    let mount = Mount::new(&d.lowers, &d.upper, &d.work, &d.mnt);
    sh(
        &d.mnt,
        "mknod -m 600 d/null c 1 3; mknod -m 640 d/loop0 b 7 0; rm d/gone",
    );
    drop(mount);
    let entries = capture(&CaptureOptions {
        upper: &d.upper,
        lowers: &d.lowers,
        mtime: 5,
        exclude: &[],
        id_map: None,
    })
    .unwrap();
    assert_eq!(
        describe(&entries),
        [
            "d dir 755 0:0",
            "d/.wh.gone bytes 0 0 0:0",
            "d/loop0 blk 7:0 640 0:0",
            "d/null chr 1:3 600 0:0",
        ]
    );
}
