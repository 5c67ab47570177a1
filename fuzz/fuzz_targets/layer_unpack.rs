//! The snapshot unpacker (a base image's layer tar, possibly gzip/zstd compressed, into an
//! overlayfs lower dir): never a panic, and nothing is ever written outside the destination —
//! checked after each input by listing the destination's parent, which must hold only it.
#![no_main]
use std::io::Read;

use libfuzzer_sys::fuzz_target;
use strata_engine::sandbox::{snapshot, Limits};

fuzz_target!(|data: &[u8]| {
    let parent = tempfile::tempdir().expect("temp dir");
    let dest = parent.path().join("dest");
    std::fs::create_dir(&dest).expect("create dest");
    let media_type = match data {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    };
    let reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(data.to_vec()));
    let limits = Limits {
        max_bytes: 16 << 20,
        max_entries: 4096,
        max_path_len: 4096,
        // A small window: the fuzzer must not be able to make the decoder allocate much.
        zstd_window_log_max: 22,
    };
    if let Ok(reader) = strata_engine::layer::decompress_reader_limited(
        reader,
        media_type,
        limits.zstd_window_log_max,
    ) {
        let _ = snapshot::unpack(reader, &dest, limits);
    }
    let names: Vec<_> = std::fs::read_dir(parent.path())
        .expect("list parent")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("dest")],
        "wrote outside dest"
    );
});
