//! Helpers shared by the single-purpose cli test files (`mod common;`): run strata on a store,
//! write fixture files, read the build summary.
#![allow(dead_code)] // each test file uses a subset

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

pub fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// `strata --store STORE ARGS…`
pub fn strata(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// Its stdout, trimmed, after asserting it succeeded (stderr in the message otherwise).
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// `(executed, cached)` from the `done: N steps executed, M cached, in …s` summary line.
pub fn done_counts(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("done: "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(2)
        .map(|w| w.parse().unwrap())
        .collect();
    (n[0], n[1])
}
