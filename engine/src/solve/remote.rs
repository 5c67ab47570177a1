//! `ADD <url>` and `ADD <git url>`: the step's key from the content identity of its sources,
//! and, on a miss, their contents as the sources of [`copy::entries`].
//!
//! Key inputs (`docs/cache-keys.md`, "ADD from a URL or git"): the parent key (none with
//! `--link`), the expanded instruction (destination, `--chown`, `--chmod`, `--link`,
//! `--exclude`), compression and SOURCE_DATE_EPOCH, and per source:
//! - a URL: the file name it gets in a destination directory and the sha256 of its content —
//!   from `--checksum`, else from the pin in `strata.lock`, else from fetching it now (the
//!   first build, which then pins it). Not the URL: the same bytes from a mirror are the same
//!   layer.
//! - a git repository: the commit (from the pin, else resolved now), the subdirectory and
//!   `--keep-git-dir`; with `--keep-git-dir` also the repository URL and the ref (both written
//!   into `.git`) and the git version (which writes its pack).
//!
//! A cached step needs no network at all when every digest and commit is known up front.

use std::path::Path;

use strata_cache::{Digest, ExplainInput, ExplainRecord};

use crate::context::{Context, IgnoreMatcher};
use crate::fetch::{self, git, http, FetchError, FetchOptions, GitSource, UrlSource};
use crate::image::LayerDesc;
use crate::layer::Entry;
use crate::plan::key::Key;
use crate::plan::{CopySource, CopySpec};
use crate::solve::copy::{self, CopyEnv, FromSource, ParentView, Prepared};
use crate::solve::keys::{self, GitInput, LayerForm, ParentUse, RemoteKeys};
use crate::solve::BuildError;

/// Where a URL's expected digest came from (for the error when the content differs).
enum Expected {
    Checksum,
    Pin,
    /// Fetched by this build: the file is at hand.
    Fetched,
}

enum Item {
    Url {
        src: UrlSource,
        digest: Digest,
        expected: Expected,
        file: Option<http::Downloaded>,
    },
    Git {
        src: GitSource,
        commit: String,
        full_ref: Option<String>,
    },
}

pub(crate) struct PreparedRemote {
    pub key: Key,
    /// Whether `key` includes the parent key; if not, the next step's parent is
    /// [`keys::chain`]`(parent, key)`.
    pub includes_parent: bool,
    inputs: Vec<ExplainInput>,
    items: Vec<Item>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Resolves every source to its content identity (fetching only what has none yet) and
/// computes the step key.
pub(crate) fn prepare(
    spec: &CopySpec,
    parent: &Key,
    fetch_opts: &FetchOptions,
    form: LayerForm<'_>,
    scratch: &Path,
) -> Result<PreparedRemote, BuildError> {
    let pins = fetch_opts.pins.as_deref();
    let mut items = Vec::new();
    let mut keys = RemoteKeys::new(spec, form);
    for s in &spec.sources {
        match s {
            CopySource::Url(u) => {
                if let Some(e) = fetch::missing_pin(fetch::RemoteRef::Url(u), fetch_opts) {
                    return Err(e.into());
                }
                let (digest, expected, file) =
                    match (u.checksum, pins.and_then(|p| p.url_pin(&u.url))) {
                        (Some(d), _) => (d, Expected::Checksum, None),
                        (None, Some(d)) => (d, Expected::Pin, None),
                        (None, None) => {
                            let f = http::download(&u.url, fetch_opts, scratch)?;
                            (f.digest, Expected::Fetched, Some(f))
                        }
                    };
                if u.checksum.is_none() {
                    if let Some(p) = pins {
                        p.record_url(&u.url, digest);
                    }
                }
                keys.url(&u.url, &u.file_name(), &digest);
                items.push(Item::Url {
                    src: u.clone(),
                    digest,
                    expected,
                    file,
                });
            }
            CopySource::Git(g) => {
                if let Some(e) = fetch::missing_pin(fetch::RemoteRef::Git(g), fetch_opts) {
                    return Err(e.into());
                }
                let key = g.lock_key();
                let commit = match pins.and_then(|p| p.git_pin(&key)) {
                    Some(c) => c,
                    None => git::resolve(g, fetch_opts)?.commit,
                };
                // Decided from the Dockerfile alone, so that `.git` is the same whether the
                // ref was resolved now or pinned before.
                let full_ref = ref_kind(g);
                if let Some(want) = &g.checksum {
                    if !commit.starts_with(want.as_str()) {
                        return Err(FetchError::Git {
                            remote: g.remote.clone(),
                            message: format!(
                                "checksum mismatch: --checksum expects commit {want} but `{}` is {commit}",
                                g.reference.as_deref().unwrap_or("HEAD")
                            ),
                            hint: "update --checksum if the ref moved on purpose".into(),
                        }
                        .into());
                    }
                }
                if !g.names_commit() {
                    if let Some(p) = pins {
                        p.record_git(&key, &commit);
                    }
                }
                let git_version = if g.keep_git_dir {
                    git::version().unwrap_or_default()
                } else {
                    String::new()
                };
                keys.git(&GitInput {
                    commit: &commit,
                    subdir: g.subdir.as_deref(),
                    keep_git_dir: g.keep_git_dir,
                    remote: &g.remote,
                    full_ref: full_ref.as_deref(),
                    git_version: &git_version,
                    lock_key: &key,
                });
                items.push(Item::Git {
                    src: g.clone(),
                    commit,
                    full_ref,
                });
            }
            _ => unreachable!("the planner refuses local sources beside remote ones"),
        }
    }
    let includes_parent = keys::parent_use(spec) != ParentUse::None;
    let (key, ins_key, body) = keys.finish(spec, includes_parent.then_some(parent), form);
    let mut inputs = vec![
        ExplainInput {
            name: "instruction".into(),
            value: ins_key,
        },
        ExplainInput {
            name: "sources".into(),
            value: body,
        },
    ];
    if includes_parent {
        inputs.push(ExplainInput {
            name: "parent".into(),
            value: *parent,
        });
    }
    Ok(PreparedRemote {
        key,
        includes_parent,
        inputs,
        items,
    })
}

/// Which ref `--keep-git-dir` names in `.git`: a ref written in full (`refs/heads/main`,
/// `refs/tags/v1`); a short name (`main`, `v1`) leaves HEAD detached at the commit, since
/// whether it is a branch or a tag would otherwise depend on asking the remote.
fn ref_kind(g: &GitSource) -> Option<String> {
    let r = g.reference.as_deref()?;
    if r.starts_with("refs/") {
        return Some(r.to_string());
    }
    None
}

impl PreparedRemote {
    pub(crate) fn explain_record(&self) -> ExplainRecord {
        ExplainRecord {
            inputs: self.inputs.clone(),
            files: Default::default(),
        }
    }
}

/// The layer's entries: each URL downloaded (unless this build already has it) and checked
/// against its expected digest, each commit fetched and checked out; then laid out exactly as
/// COPY lays out its sources ([`copy::entries`]).
pub(crate) fn build_entries(
    env: &CopyEnv<'_>,
    spec: &CopySpec,
    prep: &mut PreparedRemote,
    parent_layers: &[LayerDesc],
    fetch_opts: &FetchOptions,
) -> Result<Vec<Entry>, BuildError> {
    let (store, sde, scratch) = (env.store, env.form.source_date_epoch, env.spool);
    let mut sources = Vec::new();
    for (n, item) in prep.items.iter_mut().enumerate() {
        match item {
            Item::Url {
                src,
                digest,
                expected,
                file,
            } => {
                let f = match file.take() {
                    Some(f) => f,
                    None => http::download(&src.url, fetch_opts, scratch)?,
                };
                if f.digest != *digest {
                    let _ = std::fs::remove_file(&f.path);
                    return Err(match expected {
                        Expected::Checksum => FetchError::ChecksumMismatch {
                            url: src.url.clone(),
                            expected: *digest,
                            actual: f.digest,
                        },
                        _ => FetchError::PinMismatch {
                            url: src.url.clone(),
                            lock: fetch_opts
                                .pins
                                .as_ref()
                                .map(|p| p.path().display().to_string())
                                .unwrap_or_else(|| crate::lock::LOCK_FILE.to_string()),
                            expected: *digest,
                            actual: f.digest,
                        },
                    }
                    .into());
                }
                sources.push(Prepared::Download {
                    name: src.file_name(),
                    path: f.path,
                    size: f.size,
                });
            }
            Item::Git {
                src,
                commit,
                full_ref,
            } => {
                let gd = git::fetch(src, commit, fetch_opts, scratch)?;
                let out = scratch.join(format!("checkout-{n}"));
                if out.exists() {
                    std::fs::remove_dir_all(&out).map_err(io(&out))?;
                }
                let written = git::checkout(src, &gd, commit, &out).and_then(|()| {
                    if src.keep_git_dir && src.subdir.is_none() {
                        git::write_git_dir(src, &gd, commit, full_ref.as_deref(), &out)
                    } else {
                        Ok(())
                    }
                });
                // The scratch repository (`…/git-XXXX/git`) is not needed any more.
                let _ = std::fs::remove_dir_all(gd.parent().unwrap_or(&gd));
                written?;
                let ctx = Context::open(&out, IgnoreMatcher::empty())?;
                let what = src.subdir.clone().unwrap_or_else(|| ".".to_string());
                let mut resolved = ctx.resolve(std::slice::from_ref(&what), &spec.excludes)
                    .map_err(|e| FetchError::Git {
                        remote: src.remote.clone(),
                        message: format!("`{what}` in commit {commit}: {e}"),
                        hint: "the part after `:` in `#REF:SUBDIR` names a directory of the repository".into(),
                    })?;
                if resolved.len() != 1 || !resolved[0].is_dir {
                    return Err(FetchError::Git {
                        remote: src.remote.clone(),
                        message: format!("`{what}` in commit {commit} is not a directory"),
                        hint: "the part after `:` in `#REF:SUBDIR` names a directory of the repository".into(),
                    }
                    .into());
                }
                sources.push(Prepared::Context {
                    resolved: resolved.remove(0),
                    hashes: Vec::new(),
                });
            }
        }
    }
    let tree = copy::parent_tree(store, env.shared, spec, parent_layers, scratch)?;
    copy::entries(
        store,
        spec,
        &sources,
        &ParentView::new(&tree),
        &FromSource::Context,
        sde,
        scratch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sources: Vec<CopySource>, dest: &str) -> CopySpec {
        CopySpec {
            add: true,
            from: crate::plan::CopyFrom::Context,
            sources,
            dest: dest.into(),
            chown: None,
            chmod: None,
            link: false,
            excludes: Vec::new(),
            parents: false,
        }
    }

    fn url(u: &str, content: &[u8]) -> CopySource {
        CopySource::Url(UrlSource {
            url: u.into(),
            checksum: Some(Digest::of(content)),
        })
    }

    fn git_at(commit: char, subdir: Option<&str>) -> CopySource {
        CopySource::Git(GitSource {
            remote: "https://h/r.git".into(),
            reference: Some(commit.to_string().repeat(40)),
            subdir: subdir.map(str::to_string),
            keep_git_dir: false,
            checksum: None,
        })
    }

    const FORM: LayerForm<'static> = LayerForm {
        compression: "gzip",
        source_date_epoch: 0,
    };

    /// The key of a step whose identities are known up front (checksums, full commit ids):
    /// nothing is fetched.
    fn key(s: &CopySpec) -> Key {
        let dir = tempfile::tempdir().unwrap();
        prepare(s, &[7; 32], &FetchOptions::default(), FORM, dir.path())
            .unwrap()
            .key
    }

    #[test]
    fn golden_add_remote_key_follows_content_identity_and_destination_not_the_url() {
        let base = key(&spec(vec![url("https://a/f.txt", b"x")], "/d/"));
        // Golden: the encoding of this step kind changes only on purpose (REMOTE_SEMANTICS).
        assert_eq!(
            hex::encode(base),
            "817bfaa709f2431a8ba6a23e166c7e7328f122b99397f06525e5794040e64063"
        );
        // Another host serving the same bytes under the same name: the same step.
        assert_eq!(
            base,
            key(&spec(vec![url("https://mirror/x/f.txt", b"x")], "/d/"))
        );
        for other in [
            spec(vec![url("https://a/f.txt", b"y")], "/d/"),
            spec(vec![url("https://a/g.txt", b"x")], "/d/"),
            spec(vec![url("https://a/f.txt", b"x")], "/e/"),
            CopySpec {
                chown: Some("1:1".into()),
                ..spec(vec![url("https://a/f.txt", b"x")], "/d/")
            },
            CopySpec {
                chmod: Some(crate::plan::chmod::Chmod::parse("644").unwrap()),
                ..spec(vec![url("https://a/f.txt", b"x")], "/d/")
            },
            CopySpec {
                link: true,
                ..spec(vec![url("https://a/f.txt", b"x")], "/d/")
            },
        ] {
            assert_ne!(base, key(&other), "{other:?}");
        }
        let g = key(&spec(vec![git_at('a', None)], "/src/"));
        assert_ne!(g, key(&spec(vec![git_at('b', None)], "/src/")));
        assert_ne!(g, key(&spec(vec![git_at('a', Some("docs"))], "/src/")));
        let keep = CopySource::Git(GitSource {
            keep_git_dir: true,
            ..match git_at('a', None) {
                CopySource::Git(g) => g,
                _ => unreachable!(),
            }
        });
        assert_ne!(g, key(&spec(vec![keep], "/src/")));
    }

    #[test]
    fn a_step_with_link_does_not_include_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let s = CopySpec {
            link: true,
            ..spec(vec![url("https://a/f.txt", b"x")], "/d/")
        };
        let p = |parent: u8| {
            prepare(
                &s,
                &[parent; 32],
                &FetchOptions::default(),
                FORM,
                dir.path(),
            )
            .unwrap()
        };
        assert!(!p(1).includes_parent);
        assert_eq!(p(1).key, p(2).key);
        let s = spec(vec![url("https://a/f.txt", b"x")], "/d/");
        let q = |parent: u8| {
            prepare(
                &s,
                &[parent; 32],
                &FetchOptions::default(),
                FORM,
                dir.path(),
            )
            .unwrap()
        };
        assert!(q(1).includes_parent);
        assert_ne!(q(1).key, q(2).key);
    }
}
