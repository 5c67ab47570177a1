//! The areas of a store: every name directly under a store's root, in one place.
//!
//! Each area that holds a format carries its version in its name (`index-v1`, `snapshots-v2`,
//! `chunks-v2`): a change of that format is a new name, and the old area is left to gc (the
//! `Legacy*` areas) rather than read wrongly. Bumping a version is deliberate: say so in
//! docs/store.md, and expect the tests that name the directory to change with it. The whole
//! layout's version is in [`Area::Marker`] (`crate::STORE_VERSION`).
//!
//! Code that reaches into a store names an area through [`Area::path`], never by a literal.

use std::path::{Path, PathBuf};

/// One name directly under a store's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// `strata-store.json`: the layout version.
    Marker,
    /// `blobs/sha256/<hex>`: content blobs (OCI image-layout shape, so exports can hard-link).
    Blobs,
    /// `tmp/`: one scratch directory per open store handle, and its lock file.
    Tmp,
    /// `index-v1/`: the RocksDB index.
    Index,
    /// `index-v1.lock`: the index lock.
    IndexLock,
    /// `snapshots-v2/`: layers unpacked by diff_id (rootless builds: `snapshots-v2-rootless-*`,
    /// see [`rootless_snapshots`]).
    Snapshots,
    /// `snapshots-v1/`: snapshots without their layer's times; never used, gc removes them.
    LegacySnapshots,
    /// `snapshots.lock`: orders gc's removal of snapshots and cache mounts with builds' lookups.
    SnapshotLock,
    /// `chunks-v2/`: references to compressed chunks inside layer blobs.
    ChunkRefs,
    /// `chunks-v1/`: copies of compressed chunks, from before references; gc removes them.
    LegacyChunks,
    /// `cache-mounts-v1/<name>/{data/,last-use}`: the directories of `RUN --mount=type=cache`,
    /// by the hash of their id, and their last use ([`crate::cache_mounts`]); gc collects them.
    CacheMounts,
    /// `cache-mounts/`: cache mounts from before their last use was recorded; never used, gc
    /// removes them.
    LegacyCacheMounts,
    /// `readset-index-v1/<diff_id hex>`: the engine's index of a layer's paths for read-set
    /// reuse; each file starts with the `sha256:<hex>` of the blob it was read from, and gc
    /// removes it once that blob is gone (as for chunk references).
    ReadsetIndex,
    /// `sbom-index-v1/<diff_id hex>`: the engine's SBOM scan of a layer (its package metadata);
    /// each file starts with the `sha256:<hex>` of the blob it was read from, and gc removes it
    /// once that blob is gone (as for read-set indexes).
    SbomIndex,
}

impl Area {
    /// Every area, for listings and tests.
    pub const ALL: [Area; 14] = [
        Area::Marker,
        Area::Blobs,
        Area::Tmp,
        Area::Index,
        Area::IndexLock,
        Area::Snapshots,
        Area::LegacySnapshots,
        Area::SnapshotLock,
        Area::ChunkRefs,
        Area::LegacyChunks,
        Area::CacheMounts,
        Area::LegacyCacheMounts,
        Area::ReadsetIndex,
        Area::SbomIndex,
    ];

    /// Its name under the store's root (`Blobs`: the directory of sha256 blobs).
    pub const fn name(self) -> &'static str {
        match self {
            Area::Marker => "strata-store.json",
            Area::Blobs => "blobs/sha256",
            Area::Tmp => "tmp",
            Area::Index => "index-v1",
            Area::IndexLock => "index-v1.lock",
            Area::Snapshots => "snapshots-v2",
            Area::LegacySnapshots => "snapshots-v1",
            Area::SnapshotLock => "snapshots.lock",
            Area::ChunkRefs => "chunks-v2",
            Area::LegacyChunks => "chunks-v1",
            Area::CacheMounts => "cache-mounts-v1",
            Area::LegacyCacheMounts => "cache-mounts",
            Area::ReadsetIndex => "readset-index-v1",
            Area::SbomIndex => "sbom-index-v1",
        }
    }

    /// Where it is in the store at `root`.
    pub fn path(self, root: &Path) -> PathBuf {
        root.join(self.name())
    }
}

/// What the names of every snapshot area start with (any version, rootless or not): the store
/// sweeps stale temp dirs in all of them.
pub const SNAPSHOT_AREAS_PREFIX: &str = "snapshots-v";

/// The snapshot area of rootless builds with the id mapping `mapping` (files there belong to
/// subordinate ids, so each mapping has its own).
pub fn rootless_snapshots(mapping: &str) -> String {
    format!("{}-rootless-{mapping}", Area::Snapshots.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the store's on-disk format: changing one orphans every existing store's
    /// area. This test changes only with a deliberate version bump.
    #[test]
    fn area_names_are_the_on_disk_format() {
        let names: Vec<&str> = Area::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(
            names,
            [
                "strata-store.json",
                "blobs/sha256",
                "tmp",
                "index-v1",
                "index-v1.lock",
                "snapshots-v2",
                "snapshots-v1",
                "snapshots.lock",
                "chunks-v2",
                "chunks-v1",
                "cache-mounts-v1",
                "cache-mounts",
                "readset-index-v1",
                "sbom-index-v1",
            ]
        );
        assert_eq!(
            rootless_snapshots("0-1000-1"),
            "snapshots-v2-rootless-0-1000-1"
        );
        for a in Area::ALL {
            if a.name().starts_with("snapshots-v") {
                assert!(a.name().starts_with(SNAPSHOT_AREAS_PREFIX));
            }
        }
    }
}
