//! Throughput of `write_layer` on ~64 MiB of mixed files read from disk (gzip / zstd / none),
//! of a rewrite after a one-file change (compressed chunks reused from the blob before), and
//! of unpacking that layer into a snapshot directory (the RUN path), and of the gzip writer's
//! test for incompressible blocks, on text and on random bytes.
//!
//! Set `STRATA_BENCH_KEEP=DIR` to write the data set to DIR and keep it, e.g. to compare
//! with `tar -c DIR | gzip -6 | sha256sum`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strata_engine::layer::{
    canonicalize, write_layer, write_layer_cached, ChunkCache, ChunkDir, Compression, Content,
    Entry, EntryKind, Hashing,
};

/// Deterministic mixed content: runs of incompressible bytes and of source-like text.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 64);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (v.len() / 8192) % 3 == 0 {
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(
                format!(
                    "    let value_{} = compute(input, {}); // step {}\n",
                    x % 97,
                    x % 1013,
                    seed
                )
                .as_bytes(),
            );
        }
    }
    v.truncate(len);
    v
}

/// ~64 MiB: 2 × 12 MiB + 4 × 4 MiB large files, 2,000 files of 1–16 KiB, 300 of 16–64 KiB.
fn make_tree(root: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut add = |rel: String, len: usize, seed: u64| {
        let host = root.join(&rel);
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(&host, content(seed, len)).unwrap();
        entries.push(Entry {
            path: rel,
            kind: EntryKind::File {
                size: len as u64,
                content: Content::Path(host),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Default::default(),
        });
    };
    let mut seed = 1;
    for i in 0..2 {
        add(format!("large/blob{i}.bin"), 12 << 20, seed);
        seed += 1;
    }
    for i in 0..4 {
        add(format!("large/mid{i}.dat"), 4 << 20, seed);
        seed += 1;
    }
    for i in 0..2000 {
        add(
            format!("src/mod{}/file{i}.rs", i % 40),
            1024 + (i * 7919) % (15 * 1024),
            seed,
        );
        seed += 1;
    }
    for i in 0..300 {
        add(
            format!("assets/a{}/asset{i}.bin", i % 10),
            (16 << 10) + (i * 104_729) % (48 << 10),
            seed,
        );
        seed += 1;
    }
    canonicalize(entries, 0).unwrap()
}

fn bench(c: &mut Criterion) {
    let keep = std::env::var_os("STRATA_BENCH_KEEP");
    let tmp = tempfile::tempdir().unwrap();
    let root = keep
        .as_ref()
        .map(Path::new)
        .unwrap_or(tmp.path())
        .to_path_buf();
    std::fs::create_dir_all(&root).unwrap();
    let entries = make_tree(&root);
    let mut probe = std::io::sink();
    let total = write_layer(&entries, Compression::None, &mut probe)
        .unwrap()
        .uncompressed_size;

    let mut g = c.benchmark_group("write_layer");
    g.throughput(Throughput::Bytes(total));
    g.sample_size(10);
    for comp in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let mut ratio = 0.0;
        g.bench_function(format!("{comp:?}").to_lowercase(), |b| {
            b.iter(|| {
                let mut sink = std::io::sink();
                let o = write_layer(&entries, comp, &mut sink).unwrap();
                ratio = o.size as f64 / o.uncompressed_size as f64;
            })
        });
        eprintln!("{comp:?}: {total} tar bytes, compressed/uncompressed = {ratio:.3}");
    }

    // One file changed since the layer was last written: only the chunk around it is
    // compressed again; the rest is read back from the earlier blob (tar + sha256 remain).
    let store = tempfile::tempdir().unwrap();
    let blobs = store.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let cache: std::sync::Arc<dyn ChunkCache> = {
        let blobs = blobs.clone();
        std::sync::Arc::new(ChunkDir::new(store.path().join("chunks"), move |d| {
            blobs.join(d.hex())
        }))
    };
    let mut blob = Hashing::new(Vec::new());
    let first =
        write_layer_cached(&entries, Compression::Gzip, &mut blob, Some(cache.clone())).unwrap();
    let blob = blob.into_inner();
    std::fs::write(blobs.join(first.digest.hex()), &blob).unwrap();
    cache.record(&first.digest, &first.chunks);
    let changed = entries
        .iter()
        .find_map(|e| match &e.kind {
            EntryKind::File {
                content: Content::Path(p),
                ..
            } if e.path.starts_with("src/") => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    let mut body = std::fs::read(&changed).unwrap();
    body[0] ^= 1; // same size: the entries stay valid
    std::fs::write(&changed, body).unwrap();
    g.bench_function("gzip one-file change (chunk reuse)", |b| {
        b.iter(|| {
            let mut sink = Hashing::new(std::io::sink());
            write_layer_cached(&entries, Compression::Gzip, &mut sink, Some(cache.clone())).unwrap()
        })
    });
    g.finish();

    // Unpacking the layer for a RUN step. Into /dev/shm when there is one: on ext4 without a
    // journal, creating files right after deleting as many makes the kernel's inode allocator
    // the measurement (see benches/scripts/workload-scenario.sh).
    let mut tar = Vec::new();
    write_layer(&entries, Compression::None, &mut tar).unwrap();
    let shm = Path::new("/dev/shm");
    let mut g = c.benchmark_group("snapshot");
    g.throughput(Throughput::Bytes(total));
    g.sample_size(10);
    g.bench_function("unpack", |b| {
        b.iter_batched(
            || {
                if shm.is_dir() {
                    tempfile::tempdir_in(shm).unwrap()
                } else {
                    tempfile::tempdir().unwrap()
                }
            },
            |dir| {
                strata_engine::sandbox::snapshot::unpack(
                    &tar[..],
                    dir.path(),
                    strata_engine::sandbox::Limits::default(),
                )
                .unwrap();
                dir // removed after the measurement
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// `looks_incompressible` over 16 MiB in 4 KiB blocks (as `gzip_chunk` classifies a chunk): most
/// text fails on the byte values alone; random bytes take both tests.
fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    let len = 16 << 20;
    g.throughput(Throughput::Bytes(len as u64));
    let text: Vec<u8> = (0..)
        .flat_map(|i: u64| format!("fn item_{}() -> u32 {{ {} }}\n", i % 311, i * 7).into_bytes())
        .take(len)
        .collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    for (name, data) in [("text", &text), ("random", &random)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                data.chunks(strata_engine::layer::GZIP_CLASS_BLOCK)
                    .filter(|b| strata_engine::layer::looks_incompressible(b))
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, classify);
criterion_main!(benches);
