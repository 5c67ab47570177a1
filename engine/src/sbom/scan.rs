//! Reading one layer blob for [`LayerPackages`]: one streaming pass through strata's layer
//! reader (decompression, limits, path checks, whiteouts), the sha256 of the tar stream checked
//! against the diff_id (the result is cached by diff_id, so it must describe it), and only the
//! metadata files read into memory, each bounded.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::ControlFlow;

use strata_cache::{BlobStore, Digest};

use super::{apk, dpkg, npm, python, LayerPackages, MetaFile, OsRelease, SbomError};
use crate::image::LayerDesc;
use crate::layer::{self, whiteout::Whiteout};

/// The most read of a package database (dpkg status, apk installed); a larger one is an error,
/// not a partial list.
pub const DB_LIMIT: u64 = 64 << 20;
/// The most read of a file whose beginning is enough (METADATA headers, copyright, os-release).
pub const PREFIX_LIMIT: u64 = 1 << 20;
/// The largest `package.json` read; a larger one names no package (`MetaFile::Other`).
pub const NPM_LIMIT: u64 = 4 << 20;

/// What kind of metadata file a layer path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    DpkgStatus,
    DpkgStatusD,
    Apk,
    Python,
    Npm,
    OsRelease,
    Copyright,
}

fn classify(rel: &str) -> Option<Kind> {
    Some(match rel {
        "var/lib/dpkg/status" => Kind::DpkgStatus,
        "lib/apk/db/installed" => Kind::Apk,
        "etc/os-release" | "usr/lib/os-release" => Kind::OsRelease,
        _ => {
            if let Some(name) = rel.strip_prefix("var/lib/dpkg/status.d/") {
                // distroless keeps `NAME` and `NAME.md5sums` there.
                let stanza =
                    !name.contains('/') && !name.starts_with('.') && !name.ends_with(".md5sums");
                return stanza.then_some(Kind::DpkgStatusD);
            }
            if let Some(pkg) = rel
                .strip_prefix("usr/share/doc/")
                .and_then(|r| r.strip_suffix("/copyright"))
            {
                return (!pkg.contains('/')).then_some(Kind::Copyright);
            }
            if rel.ends_with(".dist-info/METADATA") {
                return Some(Kind::Python);
            }
            if npm::is_manifest(rel) {
                return Some(Kind::Npm);
            }
            return None;
        }
    })
}

/// Reads `layer` from `blobs` (module docs).
pub(crate) fn scan_blob(blobs: &BlobStore, layer: &LayerDesc) -> Result<LayerPackages, SbomError> {
    let digest = layer.digest;
    let limits = layer::Limits::default();
    let blob = blobs.open(&digest)?;
    let mut s = Scanner {
        digest,
        files: BTreeMap::new(),
        removed: Vec::new(),
        opaque: Vec::new(),
        replaced: Vec::new(),
    };
    let found = layer::for_each_with_diff_id(
        Box::new(blob),
        &layer.media_type,
        limits,
        |source| SbomError::Layer { digest, source },
        |source| SbomError::Read { digest, source },
        |mut le| {
            s.entry(&mut le)?;
            Ok(ControlFlow::Continue(()))
        },
    )?;
    if found != layer.diff_id {
        return Err(SbomError::DiffId {
            digest,
            expected: layer.diff_id,
            found,
        });
    }
    let (mut removed, mut opaque, mut replaced) = (s.removed, s.opaque, s.replaced);
    removed.sort();
    removed.dedup();
    opaque.sort();
    opaque.dedup();
    replaced.sort();
    replaced.dedup();
    Ok(LayerPackages {
        diff_id: layer.diff_id,
        files: s.files.into_iter().map(|(p, f)| (p, f.0)).collect(),
        removed,
        opaque,
        replaced,
    })
}

struct Scanner {
    digest: Digest,
    /// Path → (file, its kind).
    files: BTreeMap<String, (MetaFile, Kind)>,
    removed: Vec<String>,
    opaque: Vec<String>,
    replaced: Vec<u64>,
}

impl Scanner {
    fn entry<R: Read>(&mut self, le: &mut layer::LayerEntry<'_, R>) -> Result<(), SbomError> {
        let parts: Vec<String> = le
            .components
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let Some((name, dir)) = parts.split_last() else {
            return Ok(()); // the root directory
        };
        let dir = dir.join("/");
        let join = |name: &str| {
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        match le.whiteout() {
            None => {}
            Some(Whiteout::Opaque) => {
                self.opaque.push(dir.clone());
                return Ok(());
            }
            Some(Whiteout::Remove(target)) => {
                let target = String::from_utf8_lossy(target);
                if !matches!(&*target, "" | "." | "..") {
                    self.removed.push(join(&target));
                }
                return Ok(());
            }
            Some(Whiteout::AufsMeta(_)) => return Ok(()),
        }
        let path = join(name);
        let h = le.entry.header();
        let et = h.entry_type();
        use tar::EntryType as T;
        if et != T::Directory {
            self.replaced.push(super::path_key(&path));
        }
        if et == T::Char
            && h.device_major().ok().flatten().unwrap_or(0) == 0
            && h.device_minor().ok().flatten().unwrap_or(0) == 0
        {
            // overlayfs' whiteout, as the unpacker makes of it.
            self.removed.push(path.clone());
            self.files.remove(&path);
            return Ok(());
        }
        let Some(kind) = classify(&path) else {
            return Ok(());
        };
        let file = match et {
            T::Regular | T::Continuous => self.read(le, &path, kind)?,
            T::Link => {
                // A hard link is its target's inode: the same file if the target is a
                // metadata file of the same kind, read earlier in this layer.
                let target = le
                    .entry
                    .link_name_bytes()
                    .and_then(|t| layer::path_components(&t).ok())
                    .map(|c| {
                        c.iter()
                            .map(|c| c.to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join("/")
                    });
                match target.and_then(|t| self.files.get(&t)) {
                    Some((f, k)) if *k == kind => f.clone(),
                    _ => MetaFile::Other,
                }
            }
            _ => MetaFile::Other,
        };
        self.files.insert(path, (file, kind));
        Ok(())
    }

    /// Reads and parses the regular file at `path`, within its kind's bound.
    fn read<R: Read>(
        &self,
        le: &mut layer::LayerEntry<'_, R>,
        path: &str,
        kind: Kind,
    ) -> Result<MetaFile, SbomError> {
        let size = le.entry.size();
        let limit = match kind {
            Kind::DpkgStatus | Kind::DpkgStatusD | Kind::Apk => DB_LIMIT,
            Kind::Npm => NPM_LIMIT,
            Kind::Python | Kind::OsRelease | Kind::Copyright => PREFIX_LIMIT,
        };
        let too_large = size > limit;
        match kind {
            Kind::DpkgStatus | Kind::DpkgStatusD | Kind::Apk if too_large => {
                return Err(SbomError::TooLarge {
                    digest: self.digest,
                    path: path.to_string(),
                    limit,
                })
            }
            Kind::Npm if too_large => return Ok(MetaFile::Other),
            _ => {}
        }
        let mut bytes = Vec::with_capacity(size.min(limit) as usize);
        (&mut le.entry)
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| SbomError::Read {
                digest: self.digest,
                source: layer::ReadError::Stream(e),
            })?;
        let text = || String::from_utf8_lossy(&bytes);
        Ok(match kind {
            Kind::DpkgStatus => MetaFile::Dpkg(dpkg::parse_status(&text(), false)),
            Kind::DpkgStatusD => MetaFile::Dpkg(dpkg::parse_status(&text(), true)),
            Kind::Apk => MetaFile::Apk(apk::parse_installed(&text())),
            Kind::Python => {
                python::parse_metadata(&text()).map_or(MetaFile::Other, MetaFile::Python)
            }
            Kind::Npm => npm::parse_manifest(&bytes).map_or(MetaFile::Other, MetaFile::Npm),
            Kind::Copyright => MetaFile::Copyright(dpkg::copyright_license(&text())),
            Kind::OsRelease => MetaFile::OsRelease(parse_os_release(&text())),
        })
    }
}

/// `ID` and `VERSION_ID` of an os-release(5) file (shell-style assignments, values optionally
/// quoted).
pub(crate) fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        let v = Some(v.to_string()).filter(|v| !v.is_empty());
        match k.trim() {
            "ID" => os.id = v,
            "VERSION_ID" => os.version_id = v,
            _ => {}
        }
    }
    os
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_metadata_paths() {
        assert_eq!(classify("var/lib/dpkg/status"), Some(Kind::DpkgStatus));
        assert_eq!(
            classify("var/lib/dpkg/status.d/libc6"),
            Some(Kind::DpkgStatusD)
        );
        assert_eq!(classify("var/lib/dpkg/status.d/libc6.md5sums"), None);
        assert_eq!(classify("var/lib/dpkg/status-old"), None);
        assert_eq!(
            classify("usr/share/doc/bash/copyright"),
            Some(Kind::Copyright)
        );
        assert_eq!(classify("usr/share/doc/bash/examples/copyright"), None);
        assert_eq!(
            classify("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"),
            Some(Kind::Python)
        );
        assert_eq!(classify("app/node_modules/a/package.json"), Some(Kind::Npm));
        assert_eq!(classify("etc/passwd"), None);
    }

    #[test]
    fn os_release_values_unquoted() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        let os = parse_os_release("ID='alpine'\nVERSION_ID=3.20.3\n");
        assert_eq!(
            (os.id.as_deref(), os.version_id.as_deref()),
            (Some("alpine"), Some("3.20.3"))
        );
    }
}
