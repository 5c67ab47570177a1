//! What pid 1 of a traced RUN reads from an executable the command execs (issue 20): any bytes
//! as the file's content, read from a slice and from a temp file (the two must agree). Never a
//! panic; reads bounded by constants, whatever the headers declare; an interpreter only as the
//! kernel would take it (a `#!` name without separators, a `PT_INTERP` ending in NUL inside
//! the file). The same bytes as path text drive `normalize` and `join`.
#![no_main]
use std::cell::RefCell;
use std::io::Write;

use libfuzzer_sys::fuzz_target;
use strata_engine::sandbox::trace::binfmt::{
    self, ExecInterp, ReadAt, HEAD_LEN, MAX_INTERP_LEN, MAX_PHDRS_LEN,
};
use strata_engine::sandbox::trace::{join, normalize};

/// The content, recording every read asked of it (offset, length asked, length read).
struct Counted<'a> {
    data: &'a [u8],
    reads: RefCell<Vec<(u64, usize, usize)>>,
}

impl ReadAt for Counted<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let n = self.data.read_at(buf, off)?;
        self.reads.borrow_mut().push((off, buf.len(), n));
        Ok(n)
    }
}

fn check_exec(data: &[u8]) {
    let src = Counted {
        data,
        reads: RefCell::new(Vec::new()),
    };
    let got = binfmt::inspect(&src);
    let reads = src.reads.into_inner();
    // Bounded: the head, the program headers, the PT_INTERP, each read once (a short read
    // from a slice is its end: one more call, which reads nothing), into buffers no larger
    // than the constants, whatever the headers say.
    let read: usize = reads.iter().map(|r| r.2).sum();
    assert!(
        read <= HEAD_LEN + MAX_PHDRS_LEN + MAX_INTERP_LEN,
        "{read} bytes read: {reads:?}"
    );
    assert!(reads.iter().all(|r| r.1 <= MAX_PHDRS_LEN), "{reads:?}");
    assert!(reads.len() <= 6, "{reads:?}");
    match &got {
        Ok(ExecInterp::Script(i)) => {
            assert!(data.starts_with(b"#!"));
            assert!(!i.is_empty());
            assert!(
                !i.iter().any(|b| matches!(b, b' ' | b'\t' | b'\n' | 0)),
                "{i:?}"
            );
            // Inside the first 256 bytes, before the last (which the kernel overwrites).
            let at = 2 + data[2..data.len().min(HEAD_LEN)]
                .windows(i.len())
                .position(|w| w == i.as_slice())
                .expect("the name is in the head");
            assert!(at >= 2 && at + i.len() < HEAD_LEN);
        }
        Ok(ExecInterp::Elf(interp)) => {
            assert!(data.starts_with(b"\x7fELF"));
            if let Some(i) = interp {
                // The last read is the PT_INTERP: inside the file, ending in NUL, the path
                // what comes before its first NUL.
                let (off, len, n) = *reads.last().expect("a PT_INTERP read");
                assert_eq!(len, n, "read whole");
                assert!((2..=MAX_INTERP_LEN).contains(&len));
                let off = usize::try_from(off).expect("an offset inside the file");
                let seg = &data[off..off + len];
                assert_eq!(seg[len - 1], 0, "NUL-terminated");
                assert!(!i.contains(&0));
                assert_eq!(&seg[..i.len()], i.as_slice());
                assert_eq!(seg[i.len()], 0);
            }
        }
        Ok(ExecInterp::Unseen(why)) => assert!(!why.is_empty()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
    }
    // pid 1 reads a file: the same answer.
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(data).expect("write temp file");
    let from_file = binfmt::inspect(&file);
    match (&got, &from_file) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("slice {got:?}, file {from_file:?}"),
    }
}

/// The components a normalised path must keep: every non-empty one but `.`, in order.
fn components(p: &str) -> Vec<&str> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

fn check_normal(n: &str, of: &str) {
    assert!(n.starts_with('/'), "{of:?} -> {n:?}");
    assert!(!n.contains("//"), "{of:?} -> {n:?}");
    assert!(!n.contains("/./") && !n.ends_with("/."), "{of:?} -> {n:?}");
    assert!(n == "/" || !n.ends_with('/'), "{of:?} -> {n:?}");
    assert_eq!(normalize(n), n, "idempotent for {of:?}");
}

fn check_paths(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let n = normalize(&text);
    check_normal(&n, &text);
    assert_eq!(components(&n), components(&text), "`..` and names kept");
    // The first line as the base directory, the rest as the path joined to it.
    let (base, rel) = text.split_once('\n').unwrap_or((&text, ""));
    let base = normalize(base);
    let j = join(&base, rel);
    check_normal(&j, rel);
    if rel.starts_with('/') {
        assert_eq!(j, normalize(rel));
    } else {
        let mut want = components(&base);
        want.extend(components(rel));
        assert_eq!(components(&j), want, "{base:?} + {rel:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    check_exec(data);
    check_paths(data);
});
