//! The current boot, for state that is only valid until the machine restarts.
//!
//! Snapshots (the engine's `sandbox::snapshot`) are a cache derived from verified layer blobs.
//! Making one durable costs a `syncfs` of the whole file system — on issue 7's workload about a
//! second of a cold build waiting for ~1 GB of writeback. Within one boot the page cache is
//! coherent, so a snapshot that was never synced is exactly what was written, even for a
//! process that was killed; only a crash or power loss can leave it torn. So new snapshots go
//! to `snapshots-v2/boot-<id>/` unsynced, are used only while the kernel's boot id is the same,
//! and are rebuilt (from their blobs) after a restart; gc removes the other boots' directories.

use std::sync::OnceLock;

/// Snapshot directories of one boot are named `boot-<16 hex digits>`.
pub const BOOT_DIR_PREFIX: &str = "boot-";

/// The first 16 hex digits (64 bits) of the kernel's random boot id, or `None` where there is
/// none to read (not Linux, no procfs): then nothing may rely on it.
pub fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| parse(&s))
    })
    .as_deref()
}

/// `boot-<id>` for the current boot.
pub fn boot_dir_name() -> Option<String> {
    boot_id().map(|id| format!("{BOOT_DIR_PREFIX}{id}"))
}

fn parse(s: &str) -> Option<String> {
    let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex[..16].to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_form_and_nothing_else() {
        assert_eq!(
            parse("6f1c2b7e-0d1a-4c3e-9b8a-55aa00ff11ee\n").as_deref(),
            Some("6f1c2b7e0d1a4c3e")
        );
        assert_eq!(parse(""), None);
        assert_eq!(parse("not-a-uuid"), None);
        assert_eq!(parse("6f1c2b7e-0d1a-4c3e-9b8a-55aa00ff11zz"), None);
    }

    #[test]
    fn the_boot_id_is_stable_within_a_process() {
        if let Some(id) = boot_id() {
            assert_eq!(id.len(), 16);
            assert_eq!(boot_id(), Some(id));
            assert_eq!(boot_dir_name().unwrap(), format!("boot-{id}"));
        }
    }
}
