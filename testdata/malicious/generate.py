#!/usr/bin/env python3
"""Writes the crafted layer tarballs of testdata/malicious/ (see README.md there).

Every header is built byte by byte: Python's `tarfile` normalises or refuses most of what
these layers need (`..` names, PAX records that disagree with the ustar header, a symlink
named `/`). The output is deterministic (fixed mtimes, gzip without a timestamp, zstd frames
written by hand), so running this again rewrites identical files:

    python3 testdata/malicious/generate.py

The tests (engine/tests/malicious.rs, cli/tests/cli/run_steps.rs) unpack each file into a
directory three levels below the one holding a `sentinel/` directory, so `../../../sentinel`
is exactly where a naive unpacker would write.
"""

import gzip
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCK = 512


def octal(value, width):
    """A NUL-terminated octal field of `width` bytes."""
    digits = "%o" % value
    assert len(digits) < width, (value, width)
    return digits.rjust(width - 1, "0").encode() + b"\0"


def header(name, typeflag, size=0, link="", mode=None, size_field=None):
    """One ustar header block. `size_field` overrides the size written (a desync)."""
    if mode is None:
        mode = {b"5": 0o755, b"2": 0o777}.get(typeflag, 0o644)
    name_b, link_b = name.encode(), link.encode()
    assert len(name_b) <= 100 and len(link_b) <= 100, name
    h = bytearray(BLOCK)
    h[0 : len(name_b)] = name_b
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    h[124:136] = octal(size if size_field is None else size_field, 12)
    h[136:148] = octal(0, 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157 : 157 + len(link_b)] = link_b
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[265:269] = b"root"
    h[297:301] = b"root"
    h[329:337] = octal(0, 8)
    h[337:345] = octal(0, 8)
    h[148:156] = ("%06o" % sum(h)).encode() + b"\0 "
    return bytes(h)


def pad(data):
    return data + b"\0" * (-len(data) % BLOCK)


def pax(records):
    """A PAX `x` header: records are (key, value) pairs, in order, duplicates allowed."""
    data = b""
    for key, value in records:
        body = b" %s=%s\n" % (key.encode(), value.encode())
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n += 1
        data += str(n).encode() + body
    return header("././@PaxHeader", b"x", len(data)) + pad(data)


def entry(name, typeflag=b"0", data=b"", link="", mode=None):
    return header(name, typeflag, len(data), link, mode) + pad(data)


def file(name, data):
    return entry(name, b"0", data)


def dir_(name):
    return entry(name, b"5")


def symlink(name, target):
    return entry(name, b"2", link=target)


def hardlink(name, target):
    return entry(name, b"1", link=target)


END = b"\0" * (2 * BLOCK)


def tar(*entries):
    return b"".join(entries) + END


def zstd_raw_frame(data, window_log):
    """A zstd frame (RFC 8878) holding `data` in raw blocks, whose header asks for a window
    of 2^window_log bytes. No compression is needed for the attack: the window is what a
    decoder allocates."""
    assert 10 <= window_log <= 41
    out = b"\x28\xb5\x2f\xfd"
    out += bytes([0x00])  # FHD: no content size, not single-segment, no checksum, no dict
    out += bytes([(window_log - 10) << 3])  # Window_Descriptor: exponent, mantissa 0
    max_block = min(1 << window_log, 128 << 10)
    chunks = [data[i : i + max_block] for i in range(0, len(data), max_block)] or [b""]
    for i, chunk in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        out += struct.pack("<I", (len(chunk) << 3) | (0 << 1) | last)[:3] + chunk
    return out


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


HIDDEN = file("etc/hidden", b"seen only by a reader that splits the stream here\n")

LAYERS = {
    # `..` components climbing to the sentinel.
    "dotdot.tar": tar(dir_("etc/"), file("../../../sentinel/pwned", b"pwned\n")),
    # An absolute symlink to a host directory, then a file written through it.
    "abs-symlink-escape.tar": tar(
        dir_("etc/"),
        symlink("evil", "/etc"),
        file("evil/strata-malicious-pwned", b"pwned\n"),
    ),
    # A relative symlink climbing out, then a file written through it.
    "rel-symlink-escape.tar": tar(
        dir_("sentinel/"),
        symlink("up", "../../../sentinel"),
        file("up/pwned", b"pwned\n"),
    ),
    # A directory replaced by a symlink mid-archive, then a write below it.
    "symlink-replaces-dir.tar": tar(
        dir_("d/"),
        file("d/keep", b"keep\n"),
        symlink("d", "../../../sentinel"),
        file("d/pwned", b"pwned\n"),
    ),
    # Hard links to files outside: climbing, and absolute.
    "hardlink-outside.tar": tar(
        file("a", b"a\n"), hardlink("h", "../../../sentinel/secret")
    ),
    "hardlink-absolute.tar": tar(file("a", b"a\n"), hardlink("h", "/etc/passwd")),
    # CVE-2021-29136: the root itself replaced by a symlink, then a write "into" it.
    "symlink-dot.tar": tar(symlink(".", "../../../sentinel"), file("pwned", b"pwned\n")),
    "symlink-slash.tar": tar(symlink("/", "../../../sentinel"), file("pwned", b"pwned\n")),
    # CVE-2025-62518: the PAX size disagrees with the ustar size. A reader honouring PAX (as
    # tar-rs does) reads `etc/hidden` out of `innocent`'s content; one honouring ustar sees
    # only `innocent` (smaller), or the reverse (larger).
    "pax-size-smaller.tar": tar(
        pax([("size", "0")]),
        header("innocent", b"0", size_field=len(HIDDEN)),
        HIDDEN,
    ),
    "pax-size-larger.tar": tar(
        pax([("size", str(len(HIDDEN)))]),
        header("innocent", b"0", size_field=0),
        HIDDEN,
    ),
    # 4097-byte path (PAX `path`): over the 4096-byte limit.
    "long-path.tar": tar(
        pax([("path", "d/" * 2048 + "x")]),
        header("long-path-placeholder", b"0"),
    ),
    # 1001 entries: over a limit of 1000 (the tests lower the 4 M default).
    "too-many-entries.tar.gz": gz(tar(*[dir_("d%04d/" % i) for i in range(1001)])),
    # 64 MiB of zeros in ~64 KiB: over a limit of 16 MiB (the tests lower the 64 GiB
    # default). One as a file's content, one hidden after the end-of-archive marker.
    "gzip-bomb.tar.gz": gz(
        header("zeros", b"0", 64 << 20) + b"\0" * (64 << 20) + END
    ),
    "gzip-bomb-trailer.tar.gz": gz(tar(file("ok", b"ok\n")) + b"\0" * (64 << 20)),
    # A zstd frame asking for a 2 GiB window (limit: 2^27 = 128 MiB).
    "zstd-window.tar.zst": zstd_raw_frame(tar(file("ok", b"ok\n")), 31),
}


def main():
    for name, data in sorted(LAYERS.items()):
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        print("%-28s %8d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
