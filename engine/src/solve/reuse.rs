//! Read-set reuse of RUN steps (docs/read-set.md).
//!
//! A RUN that missed the cache because its parent changed is not run again when nothing it
//! observed of its root file system changed: its earlier layer is committed under the new key.
//! - When a step runs, the sandbox traces it ([`crate::sandbox::trace`]); its observations are
//!   fingerprinted against the parent it ran on ([`crate::readset`]) and kept as a *candidate*
//!   under the step's **reuse key**: the RUN key with the parent left out.
//! - When a later build misses the step's key, the candidates under the same reuse key are
//!   checked against the new parent; the first whose every observation holds is reused.
//!
//! Soundness rules kept here (the fingerprints' own rules are in `readset`):
//! - Only hermetic steps are traced: no network and no SSH agent (what they fetch is not in
//!   the root file system), no cache mounts (their contents are in no key).
//! - A trace that could not see everything (`Observed::blind`) records no candidate.
//! - What the sandbox reads before the command starts: pid 1 records its own reads (the
//!   working directory, `/etc/passwd`, `/etc/group`, the `PATH` search); [`Trace::new`] adds
//!   what the setup depends on (`/`, each mount target).

use std::sync::Arc;

use strata_cache::{LayerRecord, StepRecord, Store};

use crate::image::LayerDesc;
use crate::plan::key::Key;
use crate::plan::{Network, RunStep};
use crate::readset::{ChainView, LayerIndex, ReadSet, READSET_VERSION};
use crate::remote_cache::RemoteSteps;
use crate::sandbox::exec::{injected_paths, RunSpec};
use crate::sandbox::trace::Observed;
use crate::solve::{BuildError, BuildOptions, Shared};

/// Whether a RUN is traced and may be reused by read set.
pub(crate) fn eligible(run: &RunStep, network: Network, opts: &BuildOptions) -> bool {
    !opts.run.no_readset
        && network == Network::None
        && run.cache_mounts.is_empty()
        && !run
            .mounts
            .iter()
            .any(|m| matches!(m.kind, crate::plan::RunMountKind::Ssh { .. }))
}

/// The merged view of `layers` (bottom first), each layer's index loaded or built once (per
/// store on disk, per session in memory).
pub(crate) fn view(
    store: &Store,
    shared: &Shared,
    layers: &[LayerDesc],
) -> Result<ChainView, BuildError> {
    let mut v = Vec::with_capacity(layers.len());
    for l in layers {
        v.push(shared.layer_index(&l.diff_id, || index(store, l))?);
    }
    Ok(ChainView { layers: v })
}

fn index(store: &Store, l: &LayerDesc) -> Result<Arc<LayerIndex>, BuildError> {
    LayerIndex::load_or_build(store, l).map_err(|e| BuildError::ReadSet(e.to_string()))
}

/// The outcome of looking for a reusable earlier run.
pub(crate) enum Found {
    /// An earlier run's layer holds for the new parent: `paths` observations were checked;
    /// `readset` is its read set, which holds for the new step too.
    Reuse {
        record: StepRecord,
        paths: usize,
        readset: Vec<u8>,
    },
    /// Candidates exist but each saw something that changed: the first one's reason.
    Changed(String),
    /// Nothing to compare with.
    Nothing,
}

/// How many candidates of a reuse key are checked besides the one last built at the step's
/// place: a fleet's images share reuse keys (the same RUN over different COPY layers), and
/// each check costs about a millisecond.
const OTHER_CANDIDATES: usize = 8;

/// Looks for a candidate of `reuse` (in the store, then in `--cache-from` caches) whose
/// observations all hold on `parent`. `last` (the step key last built at this place of the
/// Dockerfile) is tried first. `step` gives a candidate's record as a cache hit would:
/// protected from gc for this build, its layer fetched from a remote cache if needed.
pub(crate) fn find(
    store: &Store,
    remote: Option<&dyn RemoteSteps>,
    reuse: &Key,
    last: Option<Key>,
    parent: &dyn Fn() -> Result<Arc<ChainView>, BuildError>,
    step: &dyn Fn(&Key) -> Result<Option<StepRecord>, BuildError>,
) -> Result<Found, BuildError> {
    let mut candidates: Vec<(Key, Vec<u8>, bool)> = Vec::new();
    if let Some(last) = last {
        if let Some((_, b)) = store.index().readset(reuse, &last)? {
            candidates.push((last, b, true));
        }
    }
    for (s, _, b) in store.index().readsets(reuse, OTHER_CANDIDATES + 1)? {
        if candidates.len() <= OTHER_CANDIDATES && !candidates.iter().any(|(c, _, _)| *c == s) {
            candidates.push((s, b, true));
        }
    }
    if let Some(r) = remote {
        for (s, b) in r.readsets(reuse).into_iter().take(OTHER_CANDIDATES) {
            if !candidates.iter().any(|(c, _, _)| *c == s) {
                candidates.push((s, b, false));
            }
        }
    }
    if candidates.is_empty() {
        return Ok(Found::Nothing);
    }
    // A parent that cannot be indexed (a layer the unpacker would refuse, say) only means
    // no reuse: the step runs, and says why with --explain.
    let view = match parent() {
        Ok(v) => v,
        Err(e) => {
            return Ok(Found::Changed(format!(
                "has a parent that cannot be indexed ({e})"
            )))
        }
    };
    let mut first_change = None;
    for (cand, bytes, local) in candidates {
        let Some(rs) = decode(&bytes) else {
            // Another read-set version: never compared, dropped.
            if local {
                store.index().delete_readset(reuse, &cand)?;
            }
            continue;
        };
        match rs.check(&view) {
            Ok(paths) => match step(&cand)? {
                Some(record) if record.layer.is_some() => {
                    return Ok(Found::Reuse {
                        record,
                        paths,
                        readset: bytes,
                    });
                }
                Some(_) => {}
                // Collected by gc since: the candidate goes too.
                None if local => store.index().delete_readset(reuse, &cand)?,
                None => {}
            },
            Err(changed) => {
                if first_change.is_none() {
                    first_change = Some(changed.to_string());
                }
            }
        }
    }
    Ok(first_change.map_or(Found::Nothing, Found::Changed))
}

/// What a traced run observed, with what the sandbox read for it untraced, and the paths that
/// are not the root file system (mounts the sandbox provides: `/proc`, `/dev`, `/etc/hosts`, the
/// step's mount targets). Holds no secret: only paths.
pub(crate) struct Trace {
    observed: Observed,
    mounted: Vec<String>,
}

impl Trace {
    /// pid 1 records what it reads for the command itself (the working directory, `/etc/passwd`,
    /// `/etc/group`, the `PATH` search: `sandbox::init`); added here is what the setup before
    /// it depends on: `/` (the upper dir takes its mode) and each mount target (a stub is made
    /// where there is none).
    pub(crate) fn new(spec: &RunSpec, mut observed: Observed) -> Trace {
        observed.lookups.insert("/".into());
        observed
            .lookups
            .extend(spec.mounts.iter().map(|m| m.target.clone()));
        Trace {
            observed,
            mounted: injected_paths(spec)
                .into_iter()
                .map(|p| format!("/{p}"))
                .collect(),
        }
    }
}

/// The read set of a step that ran on `parent` and produced `layer`, or why there is none.
pub(crate) fn record(
    store: &Store,
    shared: &Shared,
    parent: &ChainView,
    trace: &Trace,
    layer: &LayerRecord,
) -> Result<Result<ReadSet, String>, BuildError> {
    if let Some(why) = &trace.observed.blind {
        return Ok(Err(why.clone()));
    }
    // Through the session's memo: the next step's view has this layer on top.
    let desc = LayerDesc {
        digest: layer.digest,
        size: layer.size,
        media_type: layer.media_type.clone(),
        diff_id: layer.diff_id,
    };
    let own = shared.layer_index(&layer.diff_id, || index(store, &desc));
    let own = match own {
        Ok(o) => o,
        // Not indexable (e.g. a path the unpacker would refuse): no candidate, no failure.
        Err(e) => return Ok(Err(format!("its layer cannot be indexed ({e})"))),
    };
    let skip = |p: &str| {
        trace.mounted.iter().any(|m| {
            p == m
                || p.strip_prefix(m.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    let layer_paths: Vec<String> = own.entries().iter().map(|(p, _)| p.clone()).collect();
    Ok(Ok(ReadSet::record(
        parent,
        &trace.observed.lookups,
        &trace.observed.listings,
        &layer_paths,
        &skip,
    )))
}

/// Read sets are stored as `bincode(ReadSet)`; one of another version is not decoded.
pub(crate) fn encode(rs: &ReadSet) -> Vec<u8> {
    bincode::serialize(rs).expect("serialising a plain struct into a Vec cannot fail")
}

/// The largest read set decoded (a million observations is ~60 MB): candidates also come from
/// `--cache-from` caches, and a length prefix must not make the decoder allocate without bound.
const MAX_READSET_BYTES: u64 = 256 << 20;

fn decode(bytes: &[u8]) -> Option<ReadSet> {
    use bincode::Options;
    // `bincode::serialize`'s own encoding (fixed-width integers, trailing bytes allowed), with
    // a limit.
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MAX_READSET_BYTES)
        .deserialize::<ReadSet>(bytes)
        .ok()
        .filter(|r| r.version == READSET_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], env: &[&str]) -> RunSpec {
        RunSpec {
            lowers: vec![],
            upper: "/u".into(),
            work: "/w".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            cwd: "/app".into(),
            user: String::new(),
            network: crate::sandbox::exec::Network::None,
            hostname: "strata".into(),
            cache_mounts: vec![],
            mounts: vec![],
            limits: Default::default(),
            output: crate::sandbox::exec::Output::Stderr,
            trace: true,
        }
    }

    #[test]
    fn read_sets_round_trip_and_hostile_bytes_are_no_candidate() {
        let rs = ReadSet {
            version: READSET_VERSION,
            items: vec![crate::readset::Item {
                path: "/etc/passwd".into(),
                what: crate::readset::What::Lookup,
                shape: [1; 16],
                content: [2; 16],
            }],
            mounts: vec!["/proc".into()],
        };
        assert_eq!(decode(&encode(&rs)), Some(rs.clone()));
        // Another version is never compared.
        let mut old = rs.clone();
        old.version += 1;
        assert_eq!(decode(&encode(&old)), None);
        // A length prefix claiming 2^60 items, and truncated or random bytes: no candidate,
        // no allocation of that size, no panic.
        let mut bomb = READSET_VERSION.to_le_bytes().to_vec();
        bomb.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(decode(&bomb), None);
        let full = encode(&rs);
        for n in 0..full.len() {
            assert_eq!(decode(&full[..n]), None, "truncated at {n}");
        }
    }

    #[test]
    fn the_setups_own_dependencies_are_observations() {
        // What pid 1 reads for the command (cwd, passwd, group, the PATH search) it records
        // itself: engine/tests/sandbox/trace.rs `trace_records_the_path_search` and
        // `trace_records_lookups_listings_and_execs` assert it on a real sandbox.
        let mut s = spec(&["make", "all"], &["PATH=/usr/bin:bin"]);
        s.mounts.push(crate::sandbox::exec::Mount {
            target: "/run/cfg".into(),
            kind: crate::sandbox::exec::MountKind::Tmpfs { size: None },
        });
        let t = Trace::new(&s, Observed::default());
        for p in ["/", "/run/cfg"] {
            assert!(
                t.observed.lookups.contains(p),
                "{p}: {:?}",
                t.observed.lookups
            );
        }
        assert!(t.mounted.contains(&"/run/cfg".to_string()));
        assert!(t.mounted.contains(&"/proc".to_string()));
    }
}
