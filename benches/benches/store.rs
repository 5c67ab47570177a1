//! Criterion benches for the content store's write path: a 256 MiB blob through
//! `BlobWriter` (hashed, written in 8 MiB blocks with O_DIRECT where the file system takes it,
//! fsynced, renamed), against the baseline of the same bytes hashed, written through the page
//! cache and fsynced (the writer before O_DIRECT) — measured in the same run: compare the ratio.
//! Wall time only: the point of O_DIRECT is the CPU it saves for the compressor threads (on VMs
//! where a fresh page-cache page is a host fault), which criterion does not show.
//!
//! The store goes in `$STRATA_BENCH_DIR` (default: the system temp dir). Point it at the disk
//! the store lives on: a file system without O_DIRECT (tmpfs before Linux 6.6) takes the
//! page-cache path in both.
//!
//! Also what one open + lookup + close of the RocksDB index costs (docs/store.md quotes it),
//! against a lookup on an open handle.
//!
//! Run: `cargo bench -p strata-benches --bench store` (baseline: `-- --save-baseline main`,
//! compare: `-- --baseline main`).

use std::io::Write;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata_cache::{StepRecord, Store};

const SIZE: usize = 256 << 20;
/// The layer writer hands the store compressed chunks of about this size.
const PIECE: usize = 1 << 20;

fn bench_dir() -> PathBuf {
    std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn bench_blob_writer(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    // Incompressible-looking bytes, like a compressed layer.
    let mut data = vec![0u8; SIZE];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut g = c.benchmark_group("store");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    let mut round = 0u64;
    g.bench_function(
        "blob writer 256 MiB (hash, direct blocks, fsync, rename)",
        |b| {
            b.iter(|| {
                // A different first byte each time: a new blob, never "already stored".
                round += 1;
                let mut w = store.blobs().writer().unwrap();
                w.write_all(&round.to_le_bytes()).unwrap();
                for piece in data.chunks(PIECE) {
                    w.write_all(piece).unwrap();
                }
                let (d, _) = w.commit().unwrap();
                std::fs::remove_file(store.blobs().path(&d)).unwrap();
            })
        },
    );
    let plain = dir.path().join("plain");
    g.bench_function("baseline: hash + page-cache write 256 MiB + fsync", |b| {
        b.iter(|| {
            let mut f = std::fs::File::create(&plain).unwrap();
            let mut h = strata_cache::Sha256Hasher::new();
            for piece in data.chunks(PIECE) {
                h.update(piece);
                f.write_all(piece).unwrap();
            }
            std::hint::black_box(h.finish());
            f.sync_all().unwrap();
            drop(f);
            std::fs::remove_file(&plain).unwrap();
        })
    });
    g.finish();
}

/// One open + get + close of the index (what a process pays per batch of index work), one
/// open + unsynced put + close, one open + synced put + close, and a get on an open handle.
/// (Was the ignored unit test `index::tests::measure_open_and_close`.)
fn bench_index_open_close(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let ix = store.index();
    for i in 0..2000u32 {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        ix.put_step(
            &k,
            &StepRecord {
                layer: None,
                created_unix: 1,
            },
            None,
        )
        .unwrap();
    }
    ix.release();
    let mut g = c.benchmark_group("index");
    g.sample_size(20);
    g.bench_function("open + get + close, nothing written", |b| {
        b.iter(|| {
            ix.get_step(&[0; 32]).unwrap();
            ix.release();
        })
    });
    let mut t = 0u64;
    g.bench_function("open + unsynced put + close", |b| {
        b.iter(|| {
            t += 1;
            ix.touch_step_at(&[0; 32], t).unwrap();
            ix.release();
        })
    });
    g.bench_function("open + synced put + close", |b| {
        b.iter(|| {
            ix.put_step(
                &[0; 32],
                &StepRecord {
                    layer: None,
                    created_unix: 1,
                },
                None,
            )
            .unwrap();
            ix.release();
        })
    });
    ix.get_step(&[0; 32]).unwrap();
    g.bench_function("get on an open handle", |b| {
        b.iter(|| ix.get_step(&[0; 32]).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_blob_writer, bench_index_open_close);
criterion_main!(benches);
