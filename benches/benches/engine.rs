//! Criterion benches for the engine's hot paths outside the layer writer:
//! planning a 500-step Dockerfile, hashing a context (cold, and through the stat cache),
//! and a no-op rebuild (cache lookups only).
//!
//! Run: `cargo bench -p strata-benches --bench engine` (baseline: `-- --save-baseline main`,
//! compare: `-- --baseline main`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata_cache::Store;
use strata_engine::build::{self, BuildOptions, NoProgress};
use strata_engine::context::{self, Context};
use strata_engine::image::Platform;
use strata_engine::layer::Compression;
use strata_engine::plan::{self, PlanRequest};

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
    };
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((files * size) as u64));
    g.bench_function("cold COPY 2000x16KiB (fresh store)", |b| {
        b.iter(|| {
            let s = tempfile::tempdir().unwrap();
            let store = Store::open(s.path()).unwrap();
            build::run(&plan, &ctx, &store, &opts(false), &NoProgress).unwrap()
        })
    });
    let s = tempfile::tempdir().unwrap();
    let store = Store::open(s.path()).unwrap();
    build::run(&plan, &ctx, &store, &opts(false), &NoProgress).unwrap();
    // Let the stat cache entries stop being racy.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build::run(&plan, &ctx, &store, &opts(false), &NoProgress).unwrap();
    g.bench_function("no-op rebuild 2000 files (stat cache + lookups)", |b| {
        b.iter(|| build::run(&plan, &ctx, &store, &opts(false), &NoProgress).unwrap())
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
    };
    let s = tempfile::tempdir().unwrap();
    {
        let store = Store::open(s.path()).unwrap();
        build::run(&plan, &ctx, &store, &opts, &NoProgress).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut g = c.benchmark_group("build");
    g.sample_size(20);
    g.bench_function("no-op rebuild 80 steps (store opened each time)", |b| {
        b.iter(|| {
            let store = Store::open(s.path()).unwrap();
            let out = build::run(&plan, &ctx, &store, &opts, &NoProgress).unwrap();
            assert_eq!(out.steps_executed, 0);
        })
    });
    let store = Store::open(s.path()).unwrap();
    g.bench_function("no-op rebuild 80 steps (store kept open)", |b| {
        b.iter(|| {
            let out = build::run(&plan, &ctx, &store, &opts, &NoProgress).unwrap();
            assert_eq!(out.steps_executed, 0);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_plan, bench_build, bench_noop_80);
criterion_main!(benches);
