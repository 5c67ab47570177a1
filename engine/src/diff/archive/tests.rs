//! Archives inside files, each kind with fixtures written here: tar (the `tar` crate), gzip
//! (flate2), zip (a small writer below: stored or deflated members, DOS time, optional
//! extended timestamp), ar (a small writer below), xz, zstd, bzip2.

use std::io::Write;

use crate::diff::content::{inspect, look, Ctx};
use crate::diff::{Cause, ContentDetail, FileDiff};

/// 2026-12-02T22:41:07Z.
const NOW: i64 = 1_796_251_267;

struct ZipEntry<'a> {
    name: &'a str,
    data: &'a [u8],
    deflate: bool,
    /// Extended timestamp (0x5455) mtime, written when set.
    unix_mtime: Option<u32>,
    dos: (u16, u16),
    mode: u32,
}

fn ze<'a>(name: &'a str, data: &'a [u8]) -> ZipEntry<'a> {
    ZipEntry {
        name,
        data,
        deflate: true,
        unix_mtime: Some(1_700_000_000),
        // 2023-11-14 22:13:20
        dos: (
            ((2023 - 1980) << 9) | (11 << 5) | 14,
            (22 << 11) | (13 << 5) | 10,
        ),
        mode: 0o100644,
    }
}

/// A zip archive, the way `jar` and `zipfile` lay one out: local headers and data, then the
/// central directory and its end record.
fn zip(entries: &[ZipEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let mut crc = flate2::Crc::new();
        crc.update(e.data);
        let body = if e.deflate {
            let mut w = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
            w.write_all(e.data).unwrap();
            w.finish().unwrap()
        } else {
            e.data.to_vec()
        };
        let extra: Vec<u8> = match e.unix_mtime {
            Some(t) => [
                &0x5455u16.to_le_bytes()[..],
                &5u16.to_le_bytes(),
                &[1],
                &t.to_le_bytes(),
            ]
            .concat(),
            None => Vec::new(),
        };
        let method: u16 = if e.deflate { 8 } else { 0 };
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&method.to_le_bytes());
            v.extend_from_slice(&e.dos.1.to_le_bytes());
            v.extend_from_slice(&e.dos.0.to_le_bytes());
            v.extend_from_slice(&crc.sum().to_le_bytes());
            v.extend_from_slice(&(body.len() as u32).to_le_bytes());
            v.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            v.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(e.name.as_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(&body);

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by Unix 2.0
        common(&mut central);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&(e.mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(e.name.as_bytes());
        central.extend_from_slice(&extra);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A tar of regular files `(path, data, mtime)`.
fn tar(files: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
    for (path, data, mtime) in files {
        let mut h = ::tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(*mtime);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8], mtime: u32) -> Vec<u8> {
    let mut w = flate2::GzBuilder::new()
        .mtime(mtime)
        .write(Vec::new(), flate2::Compression::new(6));
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// A GNU `ar` archive of `(name, data, mtime)`.
fn ar(members: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data, mtime) in members {
        let h = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            format!("{name}/"),
            mtime,
            0,
            0,
            "100644",
            data.len()
        );
        assert_eq!(h.len(), 60);
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// The member diff at `path`, wherever it is nested.
fn member<'a>(d: &'a ContentDetail, path: &str) -> Option<&'a FileDiff> {
    for m in &d.members {
        if m.path == path {
            return Some(m);
        }
        for c in &m.changes {
            if let Some(inner) = c.detail.as_deref().and_then(|i| member(i, path)) {
                return Some(inner);
            }
        }
    }
    None
}

const MANIFEST: &[u8] = b"Manifest-Version: 1.0\nCreated-By: strata\n";

#[test]
fn jar_member_differing_in_mtime_only() {
    let a = zip(&[
        ze("META-INF/MANIFEST.MF", MANIFEST),
        ze("app/Main.class", b"\xca\xfe"),
    ]);
    let mut later = ze("META-INF/MANIFEST.MF", MANIFEST);
    later.unix_mtime = Some(1_700_003_600);
    later.dos.1 += 1 << 11;
    let b = zip(&[later, ze("app/Main.class", b"\xca\xfe")]);
    let d = inspect("/usr/lib/app.jar", &a, &b, NOW);
    assert_eq!(d.archive.as_deref(), Some("zip"));
    assert_eq!(d.members.len(), 1, "{d:#?}");
    let m = &d.members[0];
    assert_eq!(m.path, "/usr/lib/app.jar!/META-INF/MANIFEST.MF");
    // The extended mtime differs: the DOS time's difference is not repeated.
    assert_eq!(m.changes.len(), 1, "{m:#?}");
    assert_eq!(m.changes[0].cause, Cause::Mtime);
    assert_eq!(m.changes[0].a.as_deref(), Some("1700000000"));
    assert_eq!(m.changes[0].b.as_deref(), Some("1700003600"));
    assert!(d.order.is_none() && d.binary.is_none());
}

#[test]
fn zip_dos_time_mode_method_presence_and_order() {
    let plain = |name, data| ZipEntry {
        unix_mtime: None,
        ..ze(name, data)
    };
    let a = zip(&[
        plain("a.txt", b"one"),
        plain("b.txt", b"two"),
        plain("gone", b"x"),
    ]);
    let mut b_entry = plain("a.txt", b"one");
    b_entry.dos.1 += 2 << 5; // two minutes later
    b_entry.mode = 0o100755;
    let mut stored = plain("b.txt", b"two");
    stored.deflate = false;
    let b = zip(&[stored, b_entry, plain("new", b"y")]);
    let d = inspect("/x.whl", &a, &b, NOW);
    let m = member(&d, "/x.whl!/a.txt").expect("a.txt differs");
    let causes: Vec<Cause> = m.changes.iter().map(|c| c.cause).collect();
    assert_eq!(causes, [Cause::Mode, Cause::Mtime], "{m:#?}");
    assert_eq!(m.changes[0].a.as_deref(), Some("0644"));
    assert_eq!(m.changes[1].a.as_deref(), Some("2023-11-14 22:13:20 (DOS)"));
    assert_eq!(m.changes[1].b.as_deref(), Some("2023-11-14 22:15:20 (DOS)"));
    // Same bytes stored instead of deflated: the method, not the content.
    let m = member(&d, "/x.whl!/b.txt").expect("b.txt differs");
    let causes: Vec<Cause> = m.changes.iter().map(|c| c.cause).collect();
    assert_eq!(causes, [Cause::Compression, Cause::Format], "{m:#?}");
    assert_eq!(m.changes[1].a.as_deref(), Some("method deflate"));
    assert_eq!(m.changes[1].b.as_deref(), Some("method stored"));
    assert!(member(&d, "/x.whl!/gone").unwrap().changes[0].b.is_none());
    assert!(member(&d, "/x.whl!/new").unwrap().changes[0].a.is_none());
    let o = d.order.as_ref().expect("a.txt and b.txt swapped");
    assert_eq!(
        (o.a.as_str(), o.b.as_str()),
        ("/x.whl!/a.txt", "/x.whl!/b.txt")
    );
}

#[test]
fn zip_member_content_gets_a_text_diff_and_its_timestamp() {
    let a = zip(&[ze(
        "build-info.txt",
        b"name: app\nbuilt: 2026-12-02T22:41:07Z\nok\n",
    )]);
    let b = zip(&[ze(
        "build-info.txt",
        b"name: app\nbuilt: 2026-12-03T08:00:00Z\nok\n",
    )]);
    let d = inspect("/app.jar", &a, &b, NOW);
    let m = member(&d, "/app.jar!/build-info.txt").unwrap();
    let c = &m.changes[0];
    assert_eq!(c.cause, Cause::Content);
    assert!(c
        .text_diff
        .as_deref()
        .unwrap()
        .contains("-built: 2026-12-02T22:41:07Z"));
    let t = &c.detail.as_ref().unwrap().timestamps;
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].a.as_deref(), Some("2026-12-02T22:41:07Z"));
    assert_eq!(t[0].b.as_deref(), Some("2026-12-03T08:00:00Z"));
    assert_eq!(t[0].a_at.as_deref(), Some("line 2"));
}

#[test]
fn tar_gz_holding_a_jar_is_opened_down_to_the_member() {
    let jar = |v: &'static [u8]| zip(&[ze("META-INF/MANIFEST.MF", MANIFEST), ze("v.txt", v)]);
    let (ja, jb) = (jar(b"1\n"), jar(b"2\n"));
    let a = gzip(&tar(&[("lib/a.jar", &ja, 1), ("etc/x", b"x", 1)]), 0);
    let b = gzip(&tar(&[("lib/a.jar", &jb, 1), ("etc/x", b"x", 2)]), 0);
    let d = inspect("/opt/bundle.tar.gz", &a, &b, NOW);
    assert_eq!(d.archive.as_deref(), Some("gzip+tar"));
    let x = member(&d, "/opt/bundle.tar.gz!/etc/x").unwrap();
    assert_eq!(x.changes[0].cause, Cause::Mtime);
    assert_eq!(
        (x.changes[0].a.as_deref(), x.changes[0].b.as_deref()),
        (Some("1"), Some("2"))
    );
    let v = member(&d, "/opt/bundle.tar.gz!/lib/a.jar!/v.txt").expect("nested member");
    assert_eq!(v.changes[0].cause, Cause::Content);
    assert!(v.changes[0].text_diff.as_deref().unwrap().contains("+2"));
}

#[test]
fn gzip_differing_in_its_header_mtime_only() {
    let a = gzip(b"same payload\n", 1_700_000_000);
    let b = gzip(b"same payload\n", 1_700_003_600);
    let d = inspect("/usr/share/doc/x/changelog.gz", &a, &b, NOW);
    assert_eq!(d.archive.as_deref(), Some("gzip"));
    assert!(
        d.notes[0].contains("same content once decompressed"),
        "{d:#?}"
    );
    let h = &d.members[0];
    assert_eq!(h.path, "/usr/share/doc/x/changelog.gz (gzip header)");
    assert_eq!(h.changes[0].cause, Cause::Mtime);
    assert_eq!(h.changes[0].b.as_deref(), Some("1700003600"));

    // A file name in B's header only (gzip -N vs -n).
    let mut w = flate2::GzBuilder::new()
        .filename("changelog")
        .write(Vec::new(), flate2::Compression::new(6));
    w.write_all(b"same payload\n").unwrap();
    let named = w.finish().unwrap();
    let d = inspect("/c.gz", &gzip(b"same payload\n", 0), &named, NOW);
    let c = &d.members[0].changes[0];
    assert_eq!(
        (c.a.as_deref(), c.b.as_deref()),
        (None, Some("name changelog")),
        "{d:#?}"
    );
}

#[test]
fn ar_static_library_and_deb() {
    let a = ar(&[("a.o", b"\x7fELFaaaa", 0), ("b.o", b"\x7fELFbbb", 0)]);
    let b = ar(&[
        ("a.o", b"\x7fELFaaaa", 1_700_000_000),
        ("b.o", b"\x7fELFbbc", 0),
    ]);
    let d = inspect("/usr/lib/libx.a", &a, &b, NOW);
    assert_eq!(d.archive.as_deref(), Some("ar"));
    let m = member(&d, "/usr/lib/libx.a!/a.o").unwrap();
    assert_eq!(
        (m.changes[0].cause, m.changes[0].b.as_deref()),
        (Cause::Mtime, Some("1700000000"))
    );
    let m = member(&d, "/usr/lib/libx.a!/b.o").unwrap();
    let bin = m.changes[0]
        .detail
        .as_ref()
        .unwrap()
        .binary
        .as_ref()
        .unwrap();
    assert_eq!(bin.offset, 6);

    // A .deb: an ar holding a gzipped tar.
    let deb = |stamp: &[u8]| {
        let data = gzip(&tar(&[("./usr/share/x/stamp", stamp, 0)]), 0);
        ar(&[("debian-binary", b"2.0\n", 0), ("data.tar.gz", &data, 0)])
    };
    let a = deb(b"Wed Dec  2 22:41:07 UTC 2026\n");
    let b = deb(b"Thu Dec  3 09:00:01 UTC 2026\n");
    let d = inspect("/var/cache/x.deb", &a, &b, NOW);
    let m = member(&d, "/var/cache/x.deb!/data.tar.gz!/usr/share/x/stamp").expect("in the deb");
    let t = &m.changes[0].detail.as_ref().unwrap().timestamps;
    assert_eq!(t[0].format, "date");
    assert_eq!(t[0].a.as_deref(), Some("Wed Dec  2 22:41:07 UTC 2026"));
}

#[test]
fn other_compressed_streams() {
    let (x, y) = (b"v=1\n".as_slice(), b"v=2\n".as_slice());
    let xz = |d: &[u8]| {
        let mut w = xz2::write::XzEncoder::new(Vec::new(), 6);
        w.write_all(d).unwrap();
        w.finish().unwrap()
    };
    let zst = |d: &[u8]| zstd::encode_all(d, 3).unwrap();
    let bz = |d: &[u8]| {
        let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(6));
        w.write_all(d).unwrap();
        w.finish().unwrap()
    };
    for (kind, a, b) in [
        ("xz", xz(x), xz(y)),
        ("zstd", zst(x), zst(y)),
        ("bzip2", bz(x), bz(y)),
    ] {
        let d = inspect("/f", &a, &b, NOW);
        assert_eq!(d.archive.as_deref(), Some(kind));
        assert!(
            d.text_diff.as_deref().unwrap().contains("+v=2"),
            "{kind}: {d:#?}"
        );
    }
}

#[test]
fn nesting_and_size_bounds_are_named() {
    // Six zips deep: opened four levels, then said so.
    let mut a = b"inner a".to_vec();
    let mut b = b"inner b".to_vec();
    for _ in 0..6 {
        a = zip(&[ze("z.zip", &a)]);
        b = zip(&[ze("z.zip", &b)]);
    }
    let d = inspect("/n.zip", &a, &b, NOW);
    let deepest = "/n.zip!/z.zip!/z.zip!/z.zip!/z.zip";
    let m = member(&d, deepest).expect("four levels opened");
    let note = &m.changes[0].detail.as_ref().unwrap().notes[0];
    assert!(
        note.contains("nested 4 archives deep: not opened"),
        "{note}"
    );

    // A decompression budget that runs out.
    let a = gzip(&vec![b'a'; 4096], 0);
    let b = gzip(&vec![b'b'; 4096], 0);
    let d = look("/big.gz", &a, &b, &Ctx::with_budget(NOW, 1000), 0);
    assert!(d.notes[0].contains("budget"), "{d:#?}");
    // …and the file is still compared as bytes.
    assert!(d.binary.is_some());
}

#[test]
fn binary_content_names_the_offset_and_an_embedded_time() {
    let mut a = vec![0u8; 64];
    a.extend_from_slice(b"\x00built 1796251267\x00");
    a.extend_from_slice(&[0xffu8; 32]);
    let mut b = a.clone();
    b[64 + 7 + 8] = b'9'; // 1796251297
    let d = inspect("/usr/bin/x", &a, &b, NOW);
    assert!(d.archive.is_none() && d.text_diff.is_none());
    let bin = d.binary.as_ref().unwrap();
    assert_eq!(bin.offset, 79);
    assert!(bin.a[0].contains("1796"), "{:?}", bin.a);
    assert_eq!(d.timestamps.len(), 1, "{d:#?}");
    assert_eq!(d.timestamps[0].format, "unix");
    assert_eq!(d.timestamps[0].a_at.as_deref(), Some("offset 0x47"));
}

#[test]
fn a_file_that_is_not_an_archive_on_one_side() {
    let a = zip(&[ze("x", b"1")]);
    let d = inspect("/x.jar", &a, b"not a zip", NOW);
    assert_eq!(d.notes, ["only A is a zip archive"]);
    assert!(d.binary.is_some());
}

/// Archives cut short or with bytes flipped (a hostile layer may hold anything): never a
/// panic, and still a difference reported.
#[test]
fn truncated_and_corrupt_archives_do_not_panic() {
    let z = zip(&[ze("a.txt", b"one\n"), ze("b/c.txt", b"two\n")]);
    let t = tar(&[("a", b"x", 1), ("b", b"yy", 2)]);
    let a = ar(&[("a.o", b"\x7fELF", 0), ("b.o", b"\x7fELF1", 0)]);
    let g = gzip(&t, 0);
    for whole in [z, t, a, g] {
        for cut in (0..whole.len()).step_by(7) {
            let d = inspect("/f.jar", &whole, &whole[..cut], NOW);
            assert!(!d.is_empty(), "cut at {cut}");
        }
        for at in (0..whole.len()).step_by(5) {
            let mut bad = whole.clone();
            bad[at] ^= 0xff;
            inspect("/f.tar", &whole, &bad, NOW);
        }
    }
}
