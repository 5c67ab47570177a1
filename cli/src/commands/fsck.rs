//! `strata fsck [--repair]`.

use std::path::Path;

use crate::args::FsckArgs;

/// Exit 0 if the store is (now) clean, 1 if problems remain.
pub fn run(store_dir: &Path, a: FsckArgs) -> anyhow::Result<i32> {
    let store = super::open_store(store_dir)?;
    let report = strata_cache::fsck(&store, a.repair)?;
    for p in &report.repaired {
        eprintln!("repaired: {p}");
    }
    for p in &report.problems {
        eprintln!("{p}");
    }
    eprintln!(
        "checked {} blobs: {} problems{}",
        report.blobs_checked,
        report.problems.len(),
        if a.repair {
            format!(", {} repaired", report.repaired.len())
        } else if report.is_clean() {
            String::new()
        } else {
            String::from(
                "\nhint: `strata fsck --repair` deletes what is broken; a rebuild restores it",
            )
        }
    );
    Ok(if report.is_clean() { 0 } else { 1 })
}
