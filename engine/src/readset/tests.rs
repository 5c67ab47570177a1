//! Read-set tests: indexes built from entries (no sandbox), and one real layer.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::fingerprint::{self, Outcome};
use super::*;

fn dir() -> Entry {
    Entry::new(EntryKind::Dir { opaque: false })
}

fn opaque() -> Entry {
    Entry::new(EntryKind::Dir { opaque: true })
}

fn file(data: &[u8]) -> Entry {
    Entry::new(EntryKind::File {
        size: data.len() as u64,
        blake3: *blake3::hash(data).as_bytes(),
    })
}

fn symlink(t: &str) -> Entry {
    Entry::new(EntryKind::Symlink(t.into()))
}

fn hardlink(t: &str) -> Entry {
    Entry::new(EntryKind::HardLink(t.into()))
}

fn whiteout() -> Entry {
    Entry::WHITEOUT
}

fn layer(entries: Vec<(&str, Entry)>) -> Arc<LayerIndex> {
    Arc::new(LayerIndex::from_entries(entries).unwrap())
}

fn chain(layers: &[&Arc<LayerIndex>]) -> ChainView {
    ChainView::new(layers.iter().map(|l| Arc::clone(l)).collect())
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

fn no_skip(_: &str) -> bool {
    false
}

/// A base with `/etc/passwd`, `/etc/hosts`, `/usr/lib/libc.so`, `/lib -> usr/lib`, and a
/// patched base built by `patch` from the same entries.
fn base(patch: impl FnOnce(&mut Vec<(&'static str, Entry)>)) -> Arc<LayerIndex> {
    let mut e = vec![
        ("etc", dir()),
        ("etc/passwd", file(b"root:x:0:0::/root:/bin/sh\n")),
        ("etc/hosts", file(b"127.0.0.1 localhost\n")),
        ("usr/lib", dir()),
        ("usr/lib/libc.so", file(b"ELF libc")),
        ("usr/lib64/libc.so", file(b"ELF libc")),
        ("lib", symlink("usr/lib")),
        ("tmp", dir()),
        ("tmp/old", file(b"old")),
    ];
    patch(&mut e);
    layer(e)
}

fn set_entry(e: &mut [(&'static str, Entry)], path: &str, new: Entry) {
    e.iter_mut().find(|(p, _)| *p == path).unwrap().1 = new;
}

fn record(parent: &ChainView, lookups: &[&str], listings: &[&str], layer: &[&str]) -> ReadSet {
    let layer: Vec<String> = layer.iter().map(|p| p.to_string()).collect();
    ReadSet::record(parent, &set(lookups), &set(listings), &layer, &no_skip)
}

#[test]
fn a_file_nobody_read_may_change() {
    let old = chain(&[&base(|_| {})]);
    let rs = record(&old, &["/etc/passwd", "/lib/libc.so"], &["/etc"], &[]);
    let new = chain(&[&base(|e| {
        set_entry(e, "etc/hosts", file(b"10.0.0.1 other\n"))
    })]);
    // The listing of /etc sees names and kinds, not contents; the walks see /etc's
    // permissions, not its times.
    assert_eq!(rs.check(&new), Ok(3));
    assert_eq!(rs.check(&old), Ok(3));
    // The same observations recorded twice are the same bytes.
    assert_eq!(
        rs,
        record(&old, &["/lib/libc.so", "/etc/passwd"], &["/etc"], &[])
    );
}

#[test]
fn a_read_file_whose_content_changed_is_named() {
    let old = chain(&[&base(|_| {})]);
    let rs = record(&old, &["/etc/passwd", "/etc/hosts"], &[], &[]);
    let new = chain(&[&base(|e| {
        set_entry(e, "etc/passwd", file(b"root:x:0:0::/root:/bin/bash"))
    })]);
    let err = rs.check(&new).unwrap_err();
    assert_eq!((err.what, err.part), (What::Lookup, Part::Content));
    assert_eq!(err.to_string(), "reads /etc/passwd (content)");
    // Same content, other mode: metadata.
    let mut chmod = file(b"root:x:0:0::/root:/bin/sh\n");
    chmod.mode = 0o600;
    let new = chain(&[&base(|e| set_entry(e, "etc/passwd", chmod))]);
    assert_eq!(
        rs.check(&new).unwrap_err().to_string(),
        "probed /etc/passwd (presence or metadata)"
    );
}

#[test]
fn a_probed_absent_path_that_now_exists_is_a_change() {
    let old = chain(&[&base(|_| {})]);
    let rs = record(&old, &["/etc/foo", "/nope/deeper/x"], &[], &[]);
    assert_eq!(rs.check(&old), Ok(2));
    let new = chain(&[&base(|e| e.push(("etc/foo", file(b""))))]);
    let err = rs.check(&new).unwrap_err();
    assert_eq!(err.to_string(), "probed /etc/foo (presence or metadata)");
    // In an upper layer too.
    let new = chain(&[&base(|_| {}), &layer(vec![("nope/deeper", dir())])]);
    assert_eq!(rs.check(&new).unwrap_err().path, "/nope/deeper/x");
}

#[test]
fn a_listed_directory_with_a_new_child_is_a_change() {
    let old = chain(&[&base(|_| {})]);
    let rs = record(&old, &[], &["/usr/lib", "/lib/"], &[]);
    // A child's content: not part of a listing.
    let new = chain(&[&base(|e| {
        set_entry(e, "usr/lib/libc.so", file(b"ELF libc 2"))
    })]);
    assert_eq!(rs.check(&new), Ok(2));
    let new = chain(&[&base(|_| {}), &layer(vec![("usr/lib/libm.so", file(b"m"))])]);
    let err = rs.check(&new).unwrap_err();
    assert_eq!(err.to_string(), "lists /lib/");
    // A child whose kind changed.
    let new = chain(&[&base(|_| {}), &layer(vec![("usr/lib/libc.so", dir())])]);
    assert_eq!(rs.check(&new).unwrap_err().what, What::Listing);
}

#[test]
fn a_changed_symlink_on_the_way_is_a_change() {
    let old = chain(&[&base(|_| {})]);
    let rs = record(&old, &["/lib/libc.so"], &[], &[]);
    // Same content at the new target: the walk changed.
    let new = chain(&[&base(|e| set_entry(e, "lib", symlink("usr/lib64")))]);
    let err = rs.check(&new).unwrap_err();
    assert_eq!((err.what, err.part), (What::Lookup, Part::Shape));
    // An absolute target to the same place is another walk too (over-approximated).
    let new = chain(&[&base(|e| set_entry(e, "lib", symlink("/usr/lib")))]);
    assert!(rs.check(&new).is_err());
    // The target's content.
    let new = chain(&[&base(|e| {
        set_entry(e, "usr/lib/libc.so", file(b"ELF libc 2"))
    })]);
    assert_eq!(rs.check(&new).unwrap_err().part, Part::Content);
}

#[test]
fn dotdot_after_a_symlink_is_physical() {
    let l = layer(vec![
        ("a/link", symlink("/x/y")),
        ("a/f", file(b"lexical")),
        ("x/y", dir()),
        ("x/f", file(b"physical")),
    ]);
    let v = chain(&[&l]);
    let r = fingerprint::resolve(&v, "/a/link/../f", true);
    assert_eq!((r.path.as_str(), r.outcome), ("x/f", Outcome::Found));
    // `..` never goes above the root.
    let r = fingerprint::resolve(&v, "/../../x/./f", true);
    assert_eq!(r.path, "x/f");
    // A relative target starts from the directory holding the link.
    let l2 = layer(vec![("a/rel", symlink("../x")), ("x/f", file(b"1"))]);
    let v2 = chain(&[&l2]);
    let r = fingerprint::resolve(&v2, "/a/rel/f", true);
    assert_eq!(r.path, "x/f");
    // Not following the last symlink.
    let r = fingerprint::resolve(&v, "/a/link", false);
    assert_eq!(r.path, "a/link");
    assert!(matches!(r.node.entry.kind, EntryKind::Symlink(_)));

    let rs = record(&v, &["/a/link/../f"], &[], &[]);
    let other = |path: &'static str| {
        let mut e = vec![
            ("a/link", symlink("/x/y")),
            ("a/f", file(b"lexical")),
            ("x/y", dir()),
            ("x/f", file(b"physical")),
        ];
        set_entry(&mut e, path, file(b"changed"));
        chain(&[&layer(e)])
    };
    assert_eq!(rs.check(&other("a/f")), Ok(1));
    assert_eq!(rs.check(&other("x/f")).unwrap_err().part, Part::Content);
    // A trailing slash asks for a directory.
    assert_eq!(
        fingerprint::resolve(&v, "/x/f/", false).outcome,
        Outcome::NotDir
    );
    for p in ["/x/f/g", "/x/f/.", "/x/f/.."] {
        assert_eq!(
            fingerprint::resolve(&v, p, false).outcome,
            Outcome::NotDir,
            "{p}"
        );
    }
}

#[test]
fn the_view_applies_whiteouts_opaque_dirs_and_replacements() {
    let l0 = layer(vec![
        ("d/a", file(b"a")),
        ("d/b", file(b"b")),
        ("e/x", file(b"x")),
        ("f/deep/z", file(b"z")),
    ]);
    let l1 = layer(vec![
        ("d/a", whiteout()),
        ("e", opaque()),
        ("e/y", file(b"y")),
        ("f", file(b"now a file")),
    ]);
    let v = chain(&[&l0, &l1]);
    assert!(v.lookup("d/a").is_none());
    assert!(v.lookup("d/b").is_some());
    assert!(v.lookup("e/x").is_none());
    assert!(v.lookup("e/y").is_some());
    assert!(v.lookup("f/deep/z").is_none());
    assert_eq!(v.lookup("f").map(|e| e.is_dir()), Some(false));
    let names = |rel: &str, v: &ChainView| v.children(rel).into_keys().collect::<Vec<_>>();
    assert_eq!(names("d", &v), ["b"]);
    assert_eq!(names("e", &v), ["y"]);
    assert_eq!(names("", &v), ["d", "e", "f"]);
    // A directory over the file: the lower directory's children stay hidden.
    let l2 = layer(vec![("f/new", file(b"n"))]);
    let v = chain(&[&l0, &l1, &l2]);
    assert_eq!(names("f", &v), ["new"]);
    assert!(v.lookup("f/deep").is_none());
    // A directory over a directory merges; its metadata is the upper one's.
    let mut d = dir();
    d.mode = 0o700;
    let l3 = layer(vec![("d", d), ("d/c", file(b"c"))]);
    let v = chain(&[&l0, &l1, &l3]);
    assert_eq!(names("d", &v), ["b", "c"]);
    assert_eq!(v.lookup("d").unwrap().mode, 0o700);
    // A whiteout of a directory hides its subtree; the same layer may put it back.
    let l4 = layer(vec![("d", whiteout())]);
    assert!(chain(&[&l0, &l4]).lookup("d/b").is_none());
    assert_eq!(names("", &chain(&[&l0, &l4])), ["e", "f"]);
    // Within one layer, a later non-directory replaces a directory's subtree.
    let l5 = layer(vec![("g/h", file(b"h")), ("g", file(b"g"))]);
    assert!(l5.get("g/h").is_none());
    // An entry under a non-directory of its own layer is refused (as the unpacker does).
    assert!(LayerIndex::from_entries(vec![("g", file(b"g")), ("g/h", file(b"h"))]).is_err());
}

#[test]
fn layer_entry_metadata_and_deletions_are_checked() {
    let old = chain(&[&base(|_| {})]);
    // The RUN copied /etc up (a new file in it) and deleted /tmp/old.
    let rs = record(&old, &[], &[], &["etc", "etc/new", "tmp", "tmp/old"]);
    assert_eq!(rs.check(&old), Ok(4));
    let mut etc = dir();
    etc.mode = 0o700;
    let new = chain(&[&base(|e| set_entry(e, "etc", etc))]);
    let err = rs.check(&new).unwrap_err();
    assert_eq!(
        err.to_string(),
        "its layer writes /etc (the parent's metadata there)"
    );
    // The deleted file is gone from the new parent: the whiteout would not be the same.
    let new = chain(&[&base(|e| e.retain(|(p, _)| *p != "tmp/old"))]);
    let err = rs.check(&new).unwrap_err();
    assert_eq!(
        (err.path.as_str(), err.what),
        ("/tmp/old", What::LayerEntry)
    );
    // Its content changed: the layer would not change, but a RUN's view of it did.
    let new = chain(&[&base(|e| set_entry(e, "tmp/old", file(b"new")))]);
    assert_eq!(rs.check(&new).unwrap_err().part, Part::Content);
}

#[test]
fn hard_links_show_their_targets_content() {
    let make = |content: &[u8]| {
        layer(vec![
            ("bin/a", file(content)),
            ("bin/b", hardlink("bin/a")),
            ("bin/c", hardlink("bin/b")),
        ])
    };
    let v = chain(&[&make(b"one")]);
    let b = v.lookup("bin/b").unwrap();
    assert_eq!(b, v.lookup("bin/a").unwrap());
    assert_eq!(b.nlink, 3);
    assert_eq!(v.children("bin").get("b"), Some(&'f'));
    let rs = record(&v, &["/bin/c"], &[], &[]);
    let err = rs.check(&chain(&[&make(b"two")])).unwrap_err();
    assert_eq!(err.to_string(), "reads /bin/c (content)");
    // The target replaced after the link: the link keeps the old inode.
    let l = layer(vec![
        ("x", file(b"old")),
        ("y", hardlink("x")),
        ("x", file(b"new")),
    ]);
    assert_eq!(
        l.get_effective("y").unwrap().kind,
        file(b"old").kind,
        "{l:?}"
    );
    assert_eq!(l.get("y").unwrap().nlink, 1);
}

#[test]
fn symlink_loops_are_eloop() {
    let l = layer(vec![
        ("loop", symlink("loop")),
        ("a", symlink("b")),
        ("b", symlink("a")),
    ]);
    let v = chain(&[&l]);
    assert_eq!(
        fingerprint::resolve(&v, "/loop", true).outcome,
        Outcome::Loop
    );
    assert_eq!(
        fingerprint::resolve(&v, "/a/x", false).outcome,
        Outcome::Loop
    );
    // Not followed at the end: found.
    assert_eq!(
        fingerprint::resolve(&v, "/loop", false).outcome,
        Outcome::Found
    );
    // 40 links are fine, 41 are not.
    let names: Vec<String> = (0..=41).map(|i| format!("s{i}")).collect();
    let mut e: Vec<(&str, Entry)> = (0..41)
        .map(|i| (names[i].as_str(), symlink(&names[i + 1])))
        .collect();
    e.push(("s41", file(b"end")));
    let v = chain(&[&layer(e)]);
    assert_eq!(
        fingerprint::resolve(&v, "/s1", true).outcome,
        Outcome::Found
    );
    assert_eq!(fingerprint::resolve(&v, "/s0", true).outcome, Outcome::Loop);
    let rs = record(&v, &["/s0"], &[], &[]);
    assert_eq!(rs.check(&v), Ok(1));
}

#[test]
fn walks_stop_at_skipped_mount_points() {
    let with_proc = |extra: bool| {
        let mut e = vec![
            ("proc", dir()),
            ("etc/passwd", file(b"root")),
            ("varrun", symlink("/proc/self")),
        ];
        if extra {
            e.push(("proc/junk", file(b"rootfs file under the mount")));
        }
        chain(&[&layer(e)])
    };
    let skip = |p: &str| p == "/proc" || p.starts_with("/proc/");
    let old = with_proc(false);
    let rs = ReadSet::record(
        &old,
        &set(&["/proc/self/status", "/proc/../etc/passwd", "/varrun/fd/0"]),
        &set(&["/proc", "/proc/self"]),
        &["proc/x".to_string(), "etc".to_string()],
        &skip,
    );
    assert_eq!(rs.mounts, ["/proc"]);
    assert_eq!(rs.items.len(), 6, "{rs:?}");
    // A predicate that names only the mount point itself skips what is below it too.
    let only_point = ReadSet::record(
        &old,
        &set(&["/proc/self/status"]),
        &set(&[]),
        &["proc/x".to_string()],
        &|p: &str| p == "/proc",
    );
    assert_eq!(only_point.items.len(), 1);
    assert_eq!(only_point.mounts, ["/proc"]);
    // What the root file system has under the mount point is not observed.
    assert_eq!(rs.check(&with_proc(true)), Ok(6));
    // The way out of the mount's root is.
    let mut e = vec![
        ("proc", dir()),
        ("etc/passwd", file(b"toor")),
        ("varrun", symlink("/proc/self")),
    ];
    let err = rs.check(&chain(&[&layer(e.clone())])).unwrap_err();
    assert_eq!(err.to_string(), "reads /proc/../etc/passwd (content)");
    // And the symlink leading into it.
    e[1].1 = file(b"root");
    e[2].1 = symlink("/run");
    let err = rs.check(&chain(&[&layer(e)])).unwrap_err();
    assert_eq!(err.path, "/varrun/fd/0");
}

#[test]
fn a_read_set_of_another_version_never_checks_out() {
    let v = chain(&[&base(|_| {})]);
    let mut rs = record(&v, &["/etc/passwd"], &[], &[]);
    rs.version += 1;
    assert_eq!(rs.check(&v).unwrap_err().part, Part::Format);
}

/// A real layer: written by the engine's layer writer, stored, indexed in one pass, cached,
/// and rebuilt when the cached file is damaged.
#[test]
fn indexes_a_real_layer_and_caches_it() {
    use crate::layer::{write_layer, Compression, Entry as LEntry, EntryKind as LKind};
    let tmp = tempfile::tempdir().unwrap();
    let store = strata_cache::Store::open(&tmp.path().join("store")).unwrap();
    let mut entries = vec![
        LEntry::dir("etc", 0o755, 0, 0, 1_700_000_000),
        LEntry::file_bytes("etc/passwd", 0o644, 1_700_000_001, b"root:x:0:0\n"),
        LEntry::file_bytes("usr/bin/tool", 0o755, 5, &[7u8; 300_000]),
    ];
    entries.push(LEntry {
        path: "usr/bin/tool2".into(),
        kind: LKind::HardLink {
            target: "usr/bin/tool".into(),
        },
        ..LEntry::dir("", 0o755, 0, 0, 5)
    });
    entries.push(LEntry {
        path: "lib".into(),
        kind: LKind::Symlink {
            target: "usr/lib".into(),
        },
        ..LEntry::dir("", 0o777, 0, 0, 5)
    });
    entries.push(LEntry {
        path: "gone".into(),
        kind: LKind::CharDevice { major: 0, minor: 0 },
        ..LEntry::dir("", 0o600, 0, 0, 5)
    });
    let mut cap = LEntry::file_bytes("usr/bin/ping", 0o755, 5, b"ping");
    cap.xattrs
        .insert("security.capability".into(), vec![1, 2, 3]);
    entries.push(cap);
    let entries = crate::layer::canonicalize(entries, 0).unwrap();
    let mut blob = Vec::new();
    let out = write_layer(&entries, Compression::Zstd, &mut blob).unwrap();
    let (digest, size) = store.blobs().put(&blob).unwrap();
    assert_eq!(digest, out.digest);
    let desc = crate::image::LayerDesc {
        digest,
        size,
        media_type: out.media_type.to_string(),
        diff_id: out.diff_id,
    };
    let ix = LayerIndex::load_or_build(&store, &desc).unwrap();
    let passwd = ix.get("etc/passwd").unwrap();
    assert_eq!(
        passwd.kind,
        EntryKind::File {
            size: 11,
            blake3: *blake3::hash(b"root:x:0:0\n").as_bytes()
        }
    );
    assert_eq!((passwd.mode, passwd.mtime), (0o644, 1_700_000_001));
    assert_eq!(
        ix.get("lib").unwrap().kind,
        EntryKind::Symlink("usr/lib".into())
    );
    assert_eq!(
        ix.get("usr/bin/tool2").unwrap().kind,
        EntryKind::HardLink("usr/bin/tool".into())
    );
    assert_eq!(ix.get_effective("usr/bin/tool2").unwrap().nlink, 2);
    assert_eq!(
        ix.get("usr/bin/ping")
            .unwrap()
            .xattrs
            .get("security.capability"),
        Some(&vec![1, 2, 3])
    );
    assert!(ix.get("usr").unwrap().is_dir());
    // A char 0/0 device is overlayfs' whiteout once unpacked.
    assert_eq!(ix.get("gone").unwrap().kind, EntryKind::Whiteout);
    let before: Vec<_> = ix.entries().to_vec();
    drop(ix);

    // Cached on disk: loads without the blob.
    let path = index::index_path(store.root(), &desc.diff_id);
    let file_bytes = std::fs::read(&path).unwrap();
    assert!(file_bytes.starts_with(digest.to_string().as_bytes()));
    let blob_path = store.blobs().path(&digest);
    let blob_bytes = std::fs::read(&blob_path).unwrap();
    std::fs::remove_file(&blob_path).unwrap();
    let ix = LayerIndex::load_or_build(&store, &desc).unwrap();
    assert_eq!(ix.entries(), before.as_slice());
    drop(ix);

    // A damaged index is rebuilt (here: it cannot be, the blob is gone).
    let mut damaged = file_bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    assert!(LayerIndex::load_or_build(&store, &desc).is_err());
    std::fs::write(&blob_path, &blob_bytes).unwrap();
    let ix = LayerIndex::load_or_build(&store, &desc).unwrap();
    assert_eq!(ix.entries(), before.as_slice());
    assert_eq!(std::fs::read(&path).unwrap(), file_bytes);

    // A layer description whose diff_id is not its content's is refused.
    let lying = crate::image::LayerDesc {
        diff_id: strata_cache::Digest::of(b"another layer"),
        ..desc.clone()
    };
    assert!(matches!(
        LayerIndex::build(store.blobs(), &lying),
        Err(ReadSetError::DiffId { .. })
    ));

    // Built from a file outside the store (a base's OCI layout during its import): the same
    // index, kept under the same diff_id; a file whose content is not the diff_id's is refused
    // and leaves no index behind.
    let other = tempfile::tempdir().unwrap();
    let store2 = strata_cache::Store::open(&other.path().join("store")).unwrap();
    let outside = other.path().join("layout-blob");
    std::fs::write(&outside, &blob_bytes).unwrap();
    let ix = LayerIndex::build_from(&outside, &desc).unwrap();
    ix.save(&store2, &desc).unwrap();
    assert_eq!(ix.entries(), before.as_slice());
    assert_eq!(
        std::fs::read(index::index_path(store2.root(), &desc.diff_id)).unwrap(),
        file_bytes
    );
    assert!(matches!(
        LayerIndex::build_from(&outside, &lying),
        Err(ReadSetError::DiffId { .. })
    ));
    assert!(!index::index_path(store2.root(), &lying.diff_id).exists());
}

/// The check of 1,000 observations over a chain of 4 layers of 20,000 entries each. Run with
/// `--nocapture` to see the figure.
#[test]
fn check_of_a_thousand_items_is_fast() {
    let mut layers = Vec::new();
    for l in 0..4 {
        let mut e: Vec<(String, Entry)> = Vec::new();
        for d in 0..100 {
            for f in 0..200 {
                let content = format!("{l}-{d}-{f}");
                e.push((
                    format!("usr/lib/pkg{d}/sub/file{f}.so"),
                    file(content.as_bytes()),
                ));
            }
        }
        e.push(("lib".into(), symlink("usr/lib")));
        layers.push(Arc::new(LayerIndex::from_entries(e).unwrap()));
    }
    let v = ChainView::new(layers);
    let mut lookups = BTreeSet::new();
    let mut listings = BTreeSet::new();
    for i in 0..900 {
        let (d, f) = (i % 100, i / 4);
        let root = if i % 3 == 0 { "/lib" } else { "/usr/lib" };
        lookups.insert(format!("{root}/pkg{d}/sub/file{f}.so"));
    }
    for d in 0..100 {
        listings.insert(format!("/usr/lib/pkg{d}"));
    }
    let rs = ReadSet::record(&v, &lookups, &listings, &[], &no_skip);
    assert_eq!(rs.items.len(), 1000);
    let mut times = Vec::new();
    for _ in 0..30 {
        let t = std::time::Instant::now();
        assert_eq!(rs.check(&v), Ok(1000));
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "readset check: 1000 items, 4 layers x 20k entries: median {median:?}, min {:?}",
        times[0]
    );
    // Loose: the machine is shared; the figure is reported, not asserted tightly.
    assert!(median < std::time::Duration::from_millis(20), "{median:?}");
}

/// Indexing a 100 MB layer (zstd): one streaming pass. `--ignored --nocapture` for the figure.
#[test]
#[ignore]
fn index_a_100mb_layer() {
    use crate::layer::{write_layer, Compression, Entry as LEntry};
    let tmp = tempfile::tempdir().unwrap();
    let store = strata_cache::Store::open(&tmp.path().join("store")).unwrap();
    let mut entries = Vec::new();
    let mut seed = 1u64;
    for i in 0..2_000 {
        let data: Vec<u8> = (0..50_000)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 59) as u8 + b'a'
            })
            .collect();
        entries.push(LEntry::file_bytes(
            format!("d{}/f{i}", i % 50),
            0o644,
            0,
            &data,
        ));
    }
    let entries = crate::layer::canonicalize(entries, 0).unwrap();
    let mut blob = Vec::new();
    let out = write_layer(&entries, Compression::Zstd, &mut blob).unwrap();
    let (digest, size) = store.blobs().put(&blob).unwrap();
    let desc = crate::image::LayerDesc {
        digest,
        size,
        media_type: out.media_type.to_string(),
        diff_id: out.diff_id,
    };
    let t = std::time::Instant::now();
    let ix = LayerIndex::build(store.blobs(), &desc).unwrap();
    let built = t.elapsed();
    drop(ix);
    let t = std::time::Instant::now();
    let ix = LayerIndex::load_or_build(&store, &desc).unwrap();
    let first = t.elapsed();
    drop(ix);
    let t = std::time::Instant::now();
    let ix = LayerIndex::load_or_build(&store, &desc).unwrap();
    let loaded = t.elapsed();
    eprintln!(
        "index of {} MB ({} entries, {} KB compressed): build {built:?}, build+write {first:?}, load {loaded:?}",
        out.uncompressed_size >> 20,
        ix.len(),
        size >> 10
    );
}
