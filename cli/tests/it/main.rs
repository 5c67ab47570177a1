//! The integration tests of the `strata` binary, as one test binary (ripgrep's pattern: one link
//! of the engine instead of one per file). Shared helpers live in `support`; each module covers
//! one area. Run one area with `cargo test --release -p strata-cli --test it -- AREA::`.

mod support;

mod attest;
mod bench;
mod build;
mod conformance;
mod copy_add;
mod diff;
mod fleet;
mod frontend;
mod lock;
mod mirrors;
mod platforms;
mod readset;
mod rebase;
mod registry;
mod reliability;
mod remote_add;
mod run_mounts;
mod run_steps;
mod sandbox_defences;
mod shared_cache;
mod sign;
mod store;
mod verify;
mod workspace;
