//! The layer writer's compressors: whatever the file bytes (the fuzzer's input, split into
//! a few files so runs of stored and deflated blocks meet at every kind of boundary), the gzip
//! and zstd blobs decode to exactly the uncompressed layer through strata's own layer reader
//! (multi-member gzip, multi-frame zstd).
#![no_main]
use std::io::Read;

use libfuzzer_sys::fuzz_target;
use strata_engine::layer::{canonicalize, write_layer, Compression, Entry};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the input is cut into files.
    let (cut, body) = match data.split_first() {
        Some((c, rest)) => (*c as usize * 97 + 1, rest),
        None => return,
    };
    let entries: Vec<Entry> = body
        .chunks(cut.max(1))
        .enumerate()
        .map(|(i, part)| Entry::file_bytes(format!("f{i:05}"), 0o644, 0, part))
        .collect();
    let Ok(entries) = canonicalize(entries, 0) else {
        return;
    };
    let mut plain = Vec::new();
    write_layer(&entries, Compression::None, &mut plain).expect("plain layer");
    for c in [Compression::Gzip, Compression::Zstd] {
        let mut blob = Vec::new();
        let out = write_layer(&entries, c, &mut blob).expect("compressed layer");
        assert_eq!(out.size, blob.len() as u64);
        let mut back = Vec::new();
        let reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(blob));
        strata_engine::layer::decompress_reader_limited(reader, c.media_type(), 22)
            .expect("a reader")
            .read_to_end(&mut back)
            .expect("the blob decodes");
        assert!(back == plain, "{c:?} round trip");
    }
});
