//! `strata gc (--keep-storage SIZE | --keep-duration D) [--dry-run]`.

use std::path::Path;

use anyhow::Context as _;
use strata_cache::gc::{format_size, parse_duration, parse_size};
use strata_cache::{GcOptions, GcPolicy};

use crate::args::GcArgs;

pub fn run(store_dir: &Path, a: GcArgs) -> anyhow::Result<i32> {
    let policy = match (&a.policy.keep_storage, &a.policy.keep_duration) {
        (Some(s), _) => GcPolicy::KeepStorage(parse_size(s).context("--keep-storage")?),
        (None, Some(d)) => GcPolicy::KeepDuration(parse_duration(d).context("--keep-duration")?),
        (None, None) => anyhow::bail!("gc needs --keep-storage SIZE or --keep-duration D"),
    };
    let store = super::open_store(store_dir)?;
    let opts = GcOptions {
        dry_run: a.dry_run,
        // Rootless: this user's snapshots too (their files belong to subordinate ids).
        rootless: strata_engine::sandbox::Snapshots::rootless_gc(),
        ..GcOptions::new(policy)
    };
    let report = strata_cache::gc(&store, &opts)?;
    for why in &report.unremoved {
        eprintln!("warning: {why} (left for the next gc)");
    }
    eprintln!(
        "{} {report}; {} kept",
        if a.dry_run { "would free" } else { "freed" },
        format_size(report.kept_bytes)
    );
    Ok(if report.unremoved.is_empty() { 0 } else { 1 })
}
