//! What the kernel opens, besides the file itself, when a traced process execs a file: the
//! interpreter of a `#!` line, or the `PT_INTERP` of an ELF executable. pid 1 reads these from
//! the executable's content, which comes from the image being built: hostile input, so every
//! read is bounded by a constant (never by a size the file declares) and every field is checked
//! as the kernel checks it (fs/binfmt_script.c, fs/binfmt_elf.c, x86_64). What the kernel
//! rejects (ENOEXEC) could still be run by a binfmt_misc handler pid 1 cannot see, so it is
//! never "no interpreter" but [`ExecInterp::Unseen`] or an error: the caller turns reuse off.
//!
//! Public (hidden) only for the `trace_exec` fuzz target.

use std::io::{Error, ErrorKind, Result};

/// The kernel's `BINPRM_BUF_SIZE`: how much of a file the binary format handlers look at.
pub const HEAD_LEN: usize = 256;
/// The most program header bytes the kernel reads (`load_elf_phdrs`: `ELF_MIN_ALIGN`).
pub const MAX_PHDRS_LEN: usize = 65536;
/// The longest `PT_INTERP` the kernel reads (`PATH_MAX`).
pub const MAX_INTERP_LEN: usize = 4096;

/// The bytes of an executable, read at offsets: the file pid 1 opened, or (tests, fuzzing) a
/// slice.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `off`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, off)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let Some(rest) = usize::try_from(off).ok().and_then(|o| self.get(o..)) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// Fills `buf` from `off` as far as the source goes; the number of bytes read.
pub fn read_full_at<R: ReadAt + ?Sized>(src: &R, buf: &mut [u8], off: u64) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        // A range reaching past i64 (an offset from a header field) is past any file's end
        // (`MAX_LFS_FILESIZE`): the end, as for a slice, not the EINVAL `pread` gives.
        let at = off.saturating_add(n as u64);
        if at.saturating_add((buf.len() - n) as u64) > i64::MAX as u64 {
            break;
        }
        match src.read_at(&mut buf[n..], at) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What an exec of a file makes the kernel open besides the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInterp {
    /// `#!` and the interpreter named on the line: not empty, no space, tab, NUL or newline.
    Script(Vec<u8>),
    /// An ELF the kernel loads itself (x86_64, or i386), and its `PT_INTERP` path without its
    /// NUL (empty: the kernel looks nothing up and the exec fails).
    Elf(Option<Vec<u8>>),
    /// Nothing the kernel runs itself: only a binfmt_misc handler could, opening files pid 1
    /// does not see. Why.
    Unseen(&'static str),
}

/// What the kernel makes of the executable `src` (its first [`HEAD_LEN`] bytes, and an ELF's
/// program headers and `PT_INTERP`). An error for an ELF the kernel would reject, or a read
/// error.
pub fn inspect<R: ReadAt + ?Sized>(src: &R) -> Result<ExecInterp> {
    // The kernel zero-fills what the file does not cover.
    let mut head = [0u8; HEAD_LEN];
    read_full_at(src, &mut head, 0)?;
    if head.starts_with(b"#!") {
        return Ok(match shebang(&head) {
            Some(i) => ExecInterp::Script(i.to_vec()),
            None => ExecInterp::Unseen("a #! line the kernel rejects (binfmt_misc may run it)"),
        });
    }
    if !head.starts_with(b"\x7fELF") {
        return Ok(ExecInterp::Unseen(
            "an executable with no #! that is not ELF (binfmt_misc may run it)",
        ));
    }
    let class = match elf_class(&head) {
        Ok(c) => c,
        Err(why) => return Ok(ExecInterp::Unseen(why)),
    };
    elf_interp(src, &head, class).map(ExecInterp::Elf)
}

fn spacetab(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The interpreter of the `#!` line in `head` (zero-padded to [`HEAD_LEN`]), as
/// `load_script` finds it; `None` where it returns ENOEXEC (no name, or a name that may be
/// truncated).
pub fn shebang(head: &[u8; HEAD_LEN]) -> Option<&[u8]> {
    let last = HEAD_LEN - 1;
    // The line ends at a newline found before any NUL (`strnchr`).
    let newline = head
        .iter()
        .take_while(|b| **b != 0)
        .position(|b| *b == b'\n');
    let mut end = match newline {
        Some(nl) => nl,
        None => {
            // No newline: the name must be followed by a space, tab or NUL (the last byte
            // included), or it may be cut short. The last byte is then overwritten (NUL).
            let start = (2..=last).find(|i| !spacetab(head[*i]))?;
            (start..=last).find(|i| matches!(head[*i], b' ' | b'\t' | 0))?;
            last
        }
    };
    while end > 2 && spacetab(head[end - 1]) {
        end -= 1;
    }
    let name = (2..end).find(|i| !spacetab(head[*i]))?;
    let stop = (name..end)
        .find(|i| matches!(head[*i], b' ' | b'\t' | 0))
        .unwrap_or(end);
    if stop == name {
        // A NUL right after the spaces: an empty name, which nothing opens.
        return None;
    }
    Some(&head[name..stop])
}

/// The ELF layout the kernel reads a header with: `true` for 64-bit. The kernel picks the
/// loader by `e_machine` alone (x86_64: the 64-bit one, then x32's 32-bit one if that fails;
/// i386: the 32-bit one) and ignores `EI_CLASS` and `EI_DATA`; a header whose class or byte
/// order disagrees with its machine is one pid 1 will not second-guess.
fn elf_class(head: &[u8; HEAD_LEN]) -> std::result::Result<bool, &'static str> {
    const EM_386: u16 = 3;
    const EM_X86_64: u16 = 62;
    const ET_EXEC: u16 = 2;
    const ET_DYN: u16 = 3;
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let (class, data) = (head[4], head[5]);
    let is64 = match machine {
        EM_X86_64 if class == 2 && data == 1 => true,
        EM_386 if class == 1 && data == 1 => false,
        EM_X86_64 | EM_386 => {
            return Err("an ELF whose class or byte order does not match its machine")
        }
        _ => return Err("an executable of another machine (run by binfmt_misc)"),
    };
    let e_type = u16::from_le_bytes([head[16], head[17]]);
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err("an ELF that is not an executable (binfmt_misc may run it)");
    }
    Ok(is64)
}

fn invalid(why: &str) -> Error {
    Error::new(ErrorKind::InvalidData, why.to_string())
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |v, x| (v << 8) | u64::from(*x))
}

/// The `PT_INTERP` of the ELF `src` whose header is `head`, as `load_elf_binary` reads it: the
/// first one, 2 to [`MAX_INTERP_LEN`] bytes ending in a NUL; the path is what precedes the
/// first NUL. Program headers of another size than the kernel's, none, or more than
/// [`MAX_PHDRS_LEN`] bytes of them: an error, as for the kernel.
fn elf_interp<R: ReadAt + ?Sized>(
    src: &R,
    head: &[u8; HEAD_LEN],
    is64: bool,
) -> Result<Option<Vec<u8>>> {
    // (e_phoff, e_phentsize, e_phnum) offsets and sizes, the entry size, and p_type,
    // p_offset, p_filesz in an entry.
    let (phoff, phentsize, phnum) = if is64 {
        (le(&head[32..40]), le(&head[54..56]), le(&head[56..58]))
    } else {
        (le(&head[28..32]), le(&head[42..44]), le(&head[44..46]))
    };
    let (entsize, off_at, size_at, word) = if is64 { (56, 8, 32, 8) } else { (32, 4, 16, 4) };
    if phentsize != entsize {
        return Err(invalid("program headers of the wrong size"));
    }
    let len = (phentsize * phnum) as usize; // at most 65535 * 56
    if len == 0 || len > MAX_PHDRS_LEN {
        return Err(invalid("no program headers, or too many"));
    }
    let mut phdrs = vec![0u8; len];
    if read_full_at(src, &mut phdrs, phoff)? != len {
        return Err(invalid("truncated program headers"));
    }
    const PT_INTERP: u64 = 3;
    let Some(ph) = phdrs
        .chunks_exact(entsize as usize)
        .find(|ph| le(&ph[0..4]) == PT_INTERP)
    else {
        return Ok(None);
    };
    let off = le(&ph[off_at..off_at + word]);
    let size = le(&ph[size_at..size_at + word]);
    if !(2..=MAX_INTERP_LEN as u64).contains(&size) {
        return Err(invalid("a PT_INTERP of a bad size"));
    }
    let mut buf = vec![0u8; size as usize];
    if read_full_at(src, &mut buf, off)? != buf.len() {
        return Err(invalid("a truncated PT_INTERP"));
    }
    if buf.last() != Some(&0) {
        return Err(invalid("a PT_INTERP not ending in NUL"));
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    buf.truncate(end);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(s: &[u8]) -> ExecInterp {
        inspect(s).unwrap()
    }

    #[test]
    fn shebang_lines_as_the_kernel_reads_them() {
        let s = |i: &[u8]| ExecInterp::Script(i.to_vec());
        assert_eq!(script(b"#! /bin/sh -e\necho"), s(b"/bin/sh"));
        assert_eq!(script(b"#!/usr/bin/env\tpython3\n"), s(b"/usr/bin/env"));
        assert_eq!(script(b"#!/bin/sh"), s(b"/bin/sh"));
        assert_eq!(script(b"#!/bin/sh \t\n"), s(b"/bin/sh"));
        for rejected in [&b"#!\n/bin/sh"[..], b"#!  \t\n", b"#!", b"#! \0/bin/sh\n"] {
            assert!(
                matches!(script(rejected), ExecInterp::Unseen(_)),
                "{rejected:?}"
            );
        }
        // A name running to the end of the 256 bytes may be cut short: ENOEXEC.
        let mut long = b"#!/".to_vec();
        long.resize(300, b'a');
        assert!(matches!(script(&long), ExecInterp::Unseen(_)));
        // The same name ended by a space before the last byte is whole.
        long[254] = b' ';
        assert_eq!(script(&long), s(&long[2..254]));
    }

    /// A minimal 64-bit x86_64 ELF with one program header, a `PT_INTERP` of `interp`.
    fn elf64(interp: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[16] = 3; // ET_DYN
        e[18] = 62;
        e[32] = 64; // e_phoff
        e[54] = 56;
        e[56] = 1;
        e[64] = 3; // PT_INTERP
        e[64 + 8] = 120; // p_offset
        e[64 + 32] = interp.len() as u8;
        e.extend_from_slice(interp);
        e
    }

    #[test]
    fn elf_interpreters_are_read_as_the_kernel_reads_them() {
        let elf = |i: &[u8]| inspect(&elf64(i)[..]);
        assert_eq!(
            elf(b"/lib/ld.so\0").unwrap(),
            ExecInterp::Elf(Some(b"/lib/ld.so".to_vec()))
        );
        assert_eq!(
            elf(b"/a\0b\0").unwrap(),
            ExecInterp::Elf(Some(b"/a".to_vec()))
        );
        // Not NUL-terminated, or too short: the kernel refuses the file.
        assert!(elf(b"/lib/ld.so").is_err());
        assert!(elf(b"\0").is_err());
        // The class decides nothing for the kernel: a mismatch is not second-guessed.
        let mut e = elf64(b"/lib/ld.so\0");
        e[4] = 1;
        assert!(matches!(inspect(&e[..]).unwrap(), ExecInterp::Unseen(_)));
        e[4] = 2;
        e[18] = 183; // aarch64
        assert!(matches!(inspect(&e[..]).unwrap(), ExecInterp::Unseen(_)));
        e[18] = 62;
        e[16] = 1; // ET_REL
        assert!(matches!(inspect(&e[..]).unwrap(), ExecInterp::Unseen(_)));
        e[16] = 2;
        e[54] = 64; // e_phentsize other than the kernel's
        assert!(inspect(&e[..]).is_err());
        e[54] = 56;
        e[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff past everything
        assert!(inspect(&e[..]).is_err());
        assert!(matches!(script(b"echo hi\n"), ExecInterp::Unseen(_)));
    }

    #[test]
    fn a_pt_interp_offset_past_any_file_is_its_end_from_a_slice_and_a_file_alike() {
        // Found by the trace_exec fuzz target: `pread` says EINVAL past i64, a slice ends.
        for off in [u64::MAX - 3, i64::MAX as u64 + 1, i64::MAX as u64 - 1] {
            let mut e = elf64(b"/lib/ld.so\0");
            e[64 + 8..64 + 16].copy_from_slice(&off.to_le_bytes());
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &e).unwrap();
            for got in [inspect(&e[..]), inspect(&file)] {
                let err = got.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidData);
                assert_eq!(err.to_string(), "a truncated PT_INTERP");
            }
        }
    }
}
