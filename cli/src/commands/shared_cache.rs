//! `--cache-to` / `--cache-from`: the step cache shared between machines
//! (engine/src/remote_cache.rs has the format).
//!
//! `type=local,dest=DIR[,tag=T]` / `type=local,src=DIR[,tag=T]`: an OCI layout (a CI cache
//! directory); `registry:REF` / `type=registry,ref=REF`: a registry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use strata_cache::{BlobStore, Digest, LayerRecord};
use strata_engine::plan::key::Key;
use strata_engine::registry::{self, Reference};
use strata_engine::remote_cache::{self, CacheRecords, ImportedCaches, RemoteSteps};

/// Where a cache goes to or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheLocation {
    Local { dir: PathBuf, tag: String },
    Registry { reference: String },
}

/// Parses a `--cache-to` (`to`) or `--cache-from` spec.
pub(crate) fn parse(spec: &str, to: bool) -> anyhow::Result<CacheLocation> {
    let flag = if to { "--cache-to" } else { "--cache-from" };
    if let Some(r) = spec.strip_prefix("registry:") {
        if r.is_empty() {
            bail!("{flag} `{spec}`: no image reference after `registry:`");
        }
        return Ok(CacheLocation::Registry {
            reference: r.to_string(),
        });
    }
    let mut kv = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').with_context(|| {
            format!(
                "invalid {flag} `{spec}`: expected registry:REF or type=local,{}=DIR",
                if to { "dest" } else { "src" }
            )
        })?;
        kv.insert(k.trim(), v.trim());
    }
    match kv.get("type").copied() {
        Some("local") => {
            let key = if to { "dest" } else { "src" };
            let dir = kv
                .get(key)
                .with_context(|| format!("{flag} `{spec}` needs {key}=DIR"))?;
            Ok(CacheLocation::Local {
                dir: PathBuf::from(dir),
                tag: kv.get("tag").unwrap_or(&"cache").to_string(),
            })
        }
        Some("registry") => {
            let r = kv
                .get("ref")
                .with_context(|| format!("{flag} `{spec}` needs ref=REF"))?;
            Ok(CacheLocation::Registry {
                reference: r.to_string(),
            })
        }
        Some(t) => bail!("{flag}: unknown cache type `{t}` (supported: registry, local)"),
        None => bail!("{flag} `{spec}` needs type=local|registry (or registry:REF)"),
    }
}

/// Imports every `--cache-from` (in order). Missing caches are empty, not errors.
pub(crate) fn import(
    specs: &[String],
    blobs: &BlobStore,
) -> anyhow::Result<Option<Arc<dyn RemoteSteps>>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut caches = Vec::new();
    for s in specs {
        let c = match parse(s, false)? {
            CacheLocation::Local { dir, tag } => remote_cache::import_from_layout(&dir, &tag)?,
            CacheLocation::Registry { reference } => {
                let r =
                    Reference::parse(&reference).with_context(|| format!("--cache-from {s}"))?;
                registry::cache::pull_cache(Arc::new(super::registry_client()), blobs, &r)
                    .with_context(|| format!("--cache-from {s}"))?
            }
        };
        caches.push(c);
    }
    Ok(Some(Arc::new(ImportedCaches(caches))))
}

/// Checks every `--cache-to` spec before the build runs.
pub(crate) fn check_targets(specs: &[String]) -> anyhow::Result<Vec<CacheLocation>> {
    specs
        .iter()
        .map(|s| {
            let l = parse(s, true)?;
            if let CacheLocation::Registry { reference } = &l {
                Reference::parse(reference).with_context(|| format!("--cache-to {s}"))?;
            }
            Ok(l)
        })
        .collect()
}

/// Exports `steps` to each location; returns the cache manifest digests.
pub(crate) fn export(
    targets: &[CacheLocation],
    steps: &[(Key, Option<LayerRecord>)],
    blobs: &BlobStore,
) -> anyhow::Result<Vec<Digest>> {
    let mut records = CacheRecords::default();
    for (k, l) in steps {
        records.insert(*k, l.clone());
    }
    let mut out = Vec::new();
    for t in targets {
        match t {
            CacheLocation::Local { dir, tag } => {
                out.push(remote_cache::export_to_layout(&records, blobs, dir, tag)?)
            }
            CacheLocation::Registry { reference } => {
                let r = Reference::parse(reference)?;
                let report =
                    registry::cache::push_cache(&super::registry_client(), blobs, &records, &r)
                        .with_context(|| format!("--cache-to registry:{reference}"))?;
                out.push(report.digest.expect("a push reports its digest"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse("registry:host:5000/cache:main", true).unwrap(),
            CacheLocation::Registry {
                reference: "host:5000/cache:main".into()
            }
        );
        assert_eq!(
            parse("type=local,dest=/c", true).unwrap(),
            CacheLocation::Local {
                dir: "/c".into(),
                tag: "cache".into()
            }
        );
        assert_eq!(
            parse("type=local,src=/c,tag=x", false).unwrap(),
            CacheLocation::Local {
                dir: "/c".into(),
                tag: "x".into()
            }
        );
        assert!(parse("type=local,src=/c", true)
            .unwrap_err()
            .to_string()
            .contains("dest=DIR"));
        assert!(parse("type=s3", false)
            .unwrap_err()
            .to_string()
            .contains("unknown cache type"));
        assert!(parse("registry:", false).is_err());
    }
}
