//! `--output SPEC`: where an image from the store is written, and the writing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};

use super::Session;
use crate::export::{self, ArchiveKind, ImageName, Root};
use crate::registry::push::PushReport;
use crate::registry::{Reference, RegistryError};

/// A parsed `--output`: `type=oci,dest=DIR | type=oci-archive,dest=FILE |
/// type=docker-archive,dest=FILE | type=registry,name=REF`. Parsing checks each file
/// destination before anything is built or written (issue 18): the writers check again, for
/// what changed meanwhile.
#[derive(Debug, Clone)]
pub struct Output {
    spec: String,
    kind: OutputKind,
}

#[derive(Debug, Clone)]
pub enum OutputKind {
    OciDir(PathBuf),
    Archive(ArchiveKind, PathBuf),
    Registry(Reference),
}

/// What [`Session::write_output`] did.
#[derive(Debug)]
pub enum Written {
    /// A file or directory: its `type=` name and path.
    File { kind: &'static str, dest: PathBuf },
    Pushed {
        target: Reference,
        report: PushReport,
    },
}

impl Output {
    /// The spec as given (to pass it on to another `strata`).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    pub fn kind(&self) -> &OutputKind {
        &self.kind
    }

    /// Whether this output can hold an index over several platforms (a docker-archive
    /// cannot).
    pub fn holds_index(&self) -> bool {
        !matches!(self.kind, OutputKind::Archive(ArchiveKind::Docker, _))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spec)
    }
}

impl std::str::FromStr for Output {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> anyhow::Result<Output> {
        Ok(Output {
            spec: spec.to_string(),
            kind: parse(spec)?,
        })
    }
}

fn parse(spec: &str) -> anyhow::Result<OutputKind> {
    let mut kv = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("invalid --output `{spec}`: expected type=…,dest=…"))?;
        kv.insert(k.trim(), v.trim());
    }
    let dest = kv.get("dest").map(PathBuf::from);
    let need_dest = || {
        dest.clone()
            .with_context(|| format!("--output `{spec}` needs dest=PATH"))
    };
    let checked = |e: export::ExportError| anyhow::anyhow!("--output `{spec}`: {e}");
    Ok(match kv.get("type").copied() {
        Some("oci") => {
            let d = need_dest()?;
            export::check_oci_dir(&d).map_err(checked)?;
            OutputKind::OciDir(d)
        }
        Some(t @ ("oci-archive" | "docker-archive" | "docker")) => {
            let d = need_dest()?;
            export::check_archive_dest(&d).map_err(checked)?;
            let kind = if t == "oci-archive" {
                ArchiveKind::Oci
            } else {
                ArchiveKind::Docker
            };
            OutputKind::Archive(kind, d)
        }
        Some("registry") => {
            let name = kv
                .get("name")
                .with_context(|| format!("--output `{spec}` needs name=REF (e.g. type=registry,name=registry.example/app:1)"))?;
            OutputKind::Registry(
                Reference::parse(name)
                    .map_err(RegistryError::from)
                    .with_context(|| format!("--output `{spec}`"))?,
            )
        }
        Some(t @ ("image" | "local" | "tar")) => {
            bail!("--output type={t} is not supported yet (supported: oci, oci-archive, docker-archive, registry)")
        }
        Some(t) => {
            bail!("unknown --output type `{t}` (supported: oci, oci-archive, docker-archive, registry)")
        }
        None => bail!("--output `{spec}` needs type=oci|oci-archive|docker-archive|registry"),
    })
}

impl Session {
    /// Writes `img` (in the store) to `output`, named `names`; archive entries dated `mtime`.
    pub fn write_output<'a>(
        &self,
        img: impl Into<Root<'a>>,
        names: &[ImageName],
        output: &Output,
        mtime: u64,
    ) -> anyhow::Result<Written> {
        let img = img.into();
        let blobs = self.store().blobs();
        Ok(match &output.kind {
            OutputKind::OciDir(d) => {
                export::write_oci_dir(blobs, img, names, d)?;
                Written::File {
                    kind: "oci",
                    dest: d.clone(),
                }
            }
            OutputKind::Archive(kind, f) => {
                export::write_archive(blobs, img, names, *kind, f, mtime)?;
                Written::File {
                    kind: if *kind == ArchiveKind::Oci {
                        "oci-archive"
                    } else {
                        "docker-archive"
                    },
                    dest: f.clone(),
                }
            }
            OutputKind::Registry(r) => Written::Pushed {
                report: self.push(&img.digest(), r)?,
                target: r.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        format!("{:#}", spec.parse::<Output>().unwrap_err())
    }

    #[test]
    fn specs_parse_to_their_kind_and_keep_their_text() {
        let d = tempfile::tempdir().unwrap();
        let spec = format!("type=oci,dest={}", d.path().join("out").display());
        let o: Output = spec.parse().unwrap();
        assert_eq!(o.spec(), spec);
        assert!(matches!(o.kind(), OutputKind::OciDir(p) if p == &d.path().join("out")));
        let a: Output = format!("type=docker,dest={}", d.path().join("a.tar").display())
            .parse()
            .unwrap();
        assert!(matches!(
            a.kind(),
            OutputKind::Archive(ArchiveKind::Docker, _)
        ));
        let r: Output = "type=registry,name=registry.example/app:1".parse().unwrap();
        assert!(matches!(r.kind(), OutputKind::Registry(r) if r.name().ends_with("app")));
    }

    #[test]
    fn bad_specs_say_what_is_missing() {
        assert!(
            err("oci").contains("expected type=…,dest=…"),
            "{}",
            err("oci")
        );
        assert!(err("type=oci").contains("needs dest=PATH"));
        assert!(err("type=registry").contains("needs name=REF"));
        assert!(err("type=tar,dest=x").contains("not supported yet"));
        assert!(err("type=zip,dest=x").contains("unknown --output type `zip`"));
        assert!(err("dest=x").contains("needs type=oci|"));
    }
}
