//! Criterion benches for the engine's hot paths outside the layer writer:
//! planning a 500-step Dockerfile, walking a 51k-entry context (with and without
//! `.dockerignore` patterns, against a plain `std::fs` walk), hashing a context (cold, and
//! through the stat cache), and a no-op rebuild (cache lookups only).
//!
//! Run: `cargo bench -p strata-benches --bench engine` (baseline: `-- --save-baseline main`,
//! compare: `-- --baseline main`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata_cache::Store;
use strata_engine::context::{self, Context};
use strata_engine::image::Platform;
use strata_engine::layer::Compression;
use strata_engine::plan::{self, PlanRequest};
use strata_engine::solve::{self, BuildOptions, NoProgress};

fn request(dir: &Path, source: String) -> PlanRequest {
    PlanRequest {
        dockerfile_name: "Dockerfile".into(),
        source,
        context_dir: dir.to_path_buf(),
        build_args: BTreeMap::new(),
        target: None,
        platform: Platform::host(),
        images: None,
    }
}

fn make_context(dir: &Path, files: usize, size: usize) {
    for i in 0..files {
        let d = dir.join(format!("src/d{}", i % 50));
        fs::create_dir_all(&d).unwrap();
        let body: Vec<u8> = (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
        fs::write(d.join(format!("f{i}")), body).unwrap();
    }
}

fn bench_plan(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut df = String::from("ARG BASE=scratch\nFROM ${BASE} AS build\nARG V=1\n");
    for i in 0..500 {
        match i % 5 {
            0 => df.push_str(&format!("ENV K{i}=v{i} PATH=/bin:$PATH\n")),
            1 => df.push_str(&format!("LABEL l{i}=\"value ${{V}}\"\n")),
            2 => df.push_str(&format!("WORKDIR /w/{i}\n")),
            3 => df.push_str(&format!("COPY --chmod=644 src/d{} ./dst{i}/\n", i % 50)),
            _ => df.push_str(&format!("EXPOSE {}\n", 1000 + i)),
        }
    }
    c.bench_function("plan/500-step Dockerfile", |b| {
        b.iter(|| plan::plan(&request(dir.path(), df.clone())).unwrap())
    });
}

fn bench_build(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (files, size) = (2000, 16 * 1024);
    make_context(dir.path(), files, size);
    let df = "FROM scratch\nCOPY src/ /src/\n".to_string();
    fs::write(dir.path().join("Dockerfile"), &df).unwrap();
    let plan = plan::plan(&request(dir.path(), df)).unwrap();
    let ctx = Context::open(dir.path(), context::IgnoreMatcher::empty()).unwrap();
    let opts = |no_cache| BuildOptions {
        compression: Compression::Gzip,
        source_date_epoch: 0,
        no_cache,
        jobs: 2,
        explain_scope: "bench".into(),
        dockerfile: "Dockerfile".into(),
        sde_env: None,
        explain: false,
        remote: None,
        run: Default::default(),
        fetch: Default::default(),
        shared: Default::default(),
    };
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((files * size) as u64));
    g.bench_function("cold COPY 2000x16KiB (fresh store)", |b| {
        b.iter(|| {
            let s = tempfile::tempdir().unwrap();
            let store = Store::open(s.path()).unwrap();
            solve::run(&plan, &ctx, &store, &opts(false), &NoProgress).unwrap()
        })
    });
    let s = tempfile::tempdir().unwrap();
    let store = Store::open(s.path()).unwrap();
    solve::run(&plan, &ctx, &store, &opts(false), &NoProgress).unwrap();
    // Let the stat cache entries stop being racy.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    solve::run(&plan, &ctx, &store, &opts(false), &NoProgress).unwrap();
    g.bench_function("no-op rebuild 2000 files (stat cache + lookups)", |b| {
        b.iter(|| solve::run(&plan, &ctx, &store, &opts(false), &NoProgress).unwrap())
    });
    g.finish();
}

/// A no-op rebuild of an 80-step Dockerfile (40 COPY, 40 ENV): 80 index lookups, which share
/// one open of the index (docs/store.md). "store opened each time" includes `Store::open`,
/// as a `strata build` process pays it.
fn bench_noop_80(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut df = String::from("FROM scratch\n");
    for i in 0..40 {
        fs::create_dir_all(dir.path().join("src")).unwrap();
        fs::write(dir.path().join(format!("src/f{i}")), format!("file {i}\n")).unwrap();
        df.push_str(&format!("COPY src/f{i} /data/f{i}\nENV K{i}=v{i}\n"));
    }
    let plan = plan::plan(&request(dir.path(), df)).unwrap();
    let ctx = Context::open(dir.path(), context::IgnoreMatcher::empty()).unwrap();
    let opts = BuildOptions {
        compression: Compression::Gzip,
        source_date_epoch: 0,
        no_cache: false,
        jobs: 2,
        explain_scope: "bench80".into(),
        dockerfile: "Dockerfile".into(),
        sde_env: None,
        explain: false,
        remote: None,
        run: Default::default(),
        fetch: Default::default(),
        shared: Default::default(),
    };
    let s = tempfile::tempdir().unwrap();
    {
        let store = Store::open(s.path()).unwrap();
        solve::run(&plan, &ctx, &store, &opts, &NoProgress).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut g = c.benchmark_group("build");
    g.sample_size(20);
    g.bench_function("no-op rebuild 80 steps (store opened each time)", |b| {
        b.iter(|| {
            let store = Store::open(s.path()).unwrap();
            let out = solve::run(&plan, &ctx, &store, &opts, &NoProgress).unwrap();
            assert_eq!(out.steps_executed, 0);
        })
    });
    let store = Store::open(s.path()).unwrap();
    g.bench_function("no-op rebuild 80 steps (store kept open)", |b| {
        b.iter(|| {
            let out = solve::run(&plan, &ctx, &store, &opts, &NoProgress).unwrap();
            assert_eq!(out.steps_executed, 0);
        })
    });
    g.finish();
}

/// Resolving `.` in a context of 500 directories × 100 files (51,000 entries), with no ignore
/// file and with patterns that match nothing (each entry still tested), against the baseline of
/// a sequential `std::fs` walk with an lstat per entry. (Was the ignored unit test
/// `context::source::tests::large_tree`.)
fn bench_context_walk(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for d in 0..500 {
        let sub = dir.path().join(format!("d{d:03}/sub"));
        fs::create_dir_all(&sub).unwrap();
        for i in 0..100 {
            fs::write(sub.join(format!("f{i}.rs")), "").unwrap();
        }
    }
    let mut g = c.benchmark_group("context walk 51k entries");
    g.sample_size(10);
    g.throughput(Throughput::Elements(500 * 102));
    for (name, ignore) in [
        ("no ignore file", ""),
        ("3 patterns", "**/*.tmp\n!keep\nd0*/x\n"),
    ] {
        let ctx =
            Context::open(dir.path(), context::IgnoreMatcher::parse(ignore).unwrap()).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = ctx.resolve(&[".".to_string()], &[]).unwrap();
                assert_eq!(r[0].entries.len(), 500 * 102);
            })
        });
    }
    fn walk_std(p: &Path, n: &mut usize) {
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            *n += 1;
            if md.is_dir() {
                walk_std(&e.path(), n);
            }
        }
    }
    g.bench_function("baseline: std::fs walk + lstat", |b| {
        b.iter(|| {
            let mut n = 0;
            walk_std(dir.path(), &mut n);
            assert_eq!(n, 500 * 102);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_plan,
    bench_context_walk,
    bench_build,
    bench_noop_80
);
criterion_main!(benches);
