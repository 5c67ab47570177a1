//! `--cache-to` / `--cache-from`: the step cache shared between machines
//! ([`crate::remote_cache`] has the format).
//!
//! `type=local,dest=DIR[,tag=T]` / `type=local,src=DIR[,tag=T]`: an OCI layout (a CI cache
//! directory); `registry:REF` / `type=registry,ref=REF`: a registry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use strata_cache::{Digest, LayerRecord};

use super::Session;
use crate::plan::key::Key;
use crate::registry::{self, Reference};
use crate::remote_cache::{self, CacheRecords, ImportedCaches, RemoteSteps};

/// Where a cache goes to or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    Local { dir: PathBuf, tag: String },
    Registry { reference: String },
}

/// Parses a `--cache-to` (`to`) or `--cache-from` spec.
pub fn parse(spec: &str, to: bool) -> anyhow::Result<CacheLocation> {
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

impl Session {
    /// Imports every `--cache-from` (in order). Missing caches are empty, not errors.
    pub fn import_caches(&self, specs: &[String]) -> anyhow::Result<Option<Arc<dyn RemoteSteps>>> {
        let blobs = self.store().blobs();
        if specs.is_empty() {
            return Ok(None);
        }
        let mut caches = Vec::new();
        for s in specs {
            let c = match parse(s, false)? {
                CacheLocation::Local { dir, tag } => remote_cache::import_from_layout(&dir, &tag)?,
                CacheLocation::Registry { reference } => {
                    let r = Reference::parse(&reference)
                        .with_context(|| format!("--cache-from {s}"))?;
                    registry::cache::pull_cache(Arc::new(self.registry_client()), blobs, &r)
                        .with_context(|| format!("--cache-from {s}"))?
                }
            };
            caches.push(c);
        }
        Ok(Some(Arc::new(ImportedCaches(caches))))
    }

    /// Exports `steps` (and the read sets of its RUN steps) to each location; returns the cache
    /// manifest digests.
    pub fn export_caches(
        &self,
        targets: &[CacheLocation],
        steps: &[(Key, Option<LayerRecord>)],
        readsets: &[(Key, Key, Vec<u8>)],
    ) -> anyhow::Result<Vec<Digest>> {
        let blobs = self.store().blobs();
        let mut records = CacheRecords::default();
        for (k, l) in steps {
            records.insert(*k, l.clone());
        }
        for (reuse, step, rs) in readsets {
            records.insert_readset(*reuse, *step, rs.clone());
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
                        registry::cache::push_cache(&self.registry_client(), blobs, &records, &r)
                            .with_context(|| format!("--cache-to registry:{reference}"))?;
                    out.push(report.digest.expect("a push reports its digest"));
                }
            }
        }
        Ok(out)
    }
}

/// Checks every `--cache-to` spec before the build runs.
pub fn check_targets(specs: &[String]) -> anyhow::Result<Vec<CacheLocation>> {
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
