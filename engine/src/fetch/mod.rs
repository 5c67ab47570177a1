//! Remote sources of `ADD`: a file from an `http(s)://` URL ([`http`]) and a git repository
//! at a ref ([`git`]), with BuildKit's Dockerfile semantics.
//!
//! - [`UrlSource`] / [`GitSource`]: what the planner parsed from the instruction.
//! - [`http::download`]: fetches a URL into a file, hashing it (sha256) as it is written,
//!   within [`limits::MAX_DOWNLOAD_BYTES`].
//! - [`git::resolve`] (ref → commit with `git ls-remote`) and [`git::checkout`] (the commit's
//!   tree in a directory, optionally with a reproducible `.git`), both through the system
//!   `git` binary, as BuildKit does.
//! - [`resolve_pins`]: what `strata lock` does for these sources (no build).
//!
//! The content identity of a URL is its sha256 (`--checksum`, or the pin in `strata.lock`);
//! of a git source, the commit. Cache keys use those, never a URL or ref name alone
//! (`docs/cache-keys.md`).

pub mod git;
pub mod http;

use std::path::PathBuf;
use std::sync::Arc;

use strata_cache::Digest;

use crate::lock::LockedImages;

/// Limits on what a remote source may bring in.
pub mod limits {
    /// The largest file `ADD <url>` downloads (16 GiB): more is an error, and nothing is kept.
    pub const MAX_DOWNLOAD_BYTES: u64 = 16 << 30;
}

/// `ADD [--checksum=sha256:…] http(s)://host/path DEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlSource {
    pub url: String,
    /// `--checksum`: the content digest, known before fetching.
    pub checksum: Option<Digest>,
}

impl UrlSource {
    /// The name of the file at a destination ending in `/` (BuildKit: the last segment of the
    /// URL's path, percent-decoded; `__unnamed__` when there is none).
    pub fn file_name(&self) -> String {
        url_file_name(&self.url)
    }
}

/// `ADD [--keep-git-dir] <git url>[#ref[:subdir]] DEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The repository, without the fragment.
    pub remote: String,
    /// The ref as written (`v1.0`, `main`, `refs/pull/1/head`, a commit); `None`: `HEAD`.
    pub reference: Option<String>,
    /// A directory of the repository whose contents are copied (cleaned, relative).
    pub subdir: Option<String>,
    pub keep_git_dir: bool,
    /// `--checksum`: the commit the ref must resolve to (a full or abbreviated hex id).
    pub checksum: Option<String>,
}

impl GitSource {
    /// The key of this source's pin in `strata.lock` `[git]`: the repository and the ref as
    /// written (`REMOTE#REF`, or `REMOTE` for the default branch). The subdir is left out:
    /// two ADDs of one ref pin one commit.
    pub fn lock_key(&self) -> String {
        match &self.reference {
            Some(r) => format!("{}#{r}", self.remote),
            None => self.remote.clone(),
        }
    }

    /// Whether the ref is a full commit id (nothing to resolve, nothing to pin).
    pub fn names_commit(&self) -> bool {
        self.reference.as_deref().is_some_and(is_full_commit)
    }
}

/// 40 (SHA-1) or 64 (SHA-256) hex digits.
pub fn is_full_commit(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How ADD reaches remote sources.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// `HOST[:PORT]` that may be reached over plain `http://` (`--insecure-registry` hosts);
    /// loopback always may.
    pub insecure: Vec<String>,
    /// The build's `strata.lock`: URL digests and git commits are pinned there. `None`: no
    /// lock (a library caller); the first fetch is then the only identity.
    pub pins: Option<Arc<LockedImages>>,
}

impl FetchOptions {
    /// Whether `authority` (`HOST[:PORT]`) may be reached over plain HTTP.
    pub fn plain_http_allowed(&self, authority: &str) -> bool {
        crate::registry::client::is_loopback(authority)
            || self
                .insecure
                .iter()
                .any(|h| h.eq_ignore_ascii_case(authority))
    }

    fn locked(&self) -> bool {
        self.pins.as_ref().is_some_and(|p| p.is_locked())
    }
}

/// Why a remote source could not be used. Every message ends with a `hint:` line; the build
/// adds the Dockerfile line of the step.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("ADD `{url}`: {message}\nhint: check the URL and that the host is reachable from this machine (strata fetches ADD URLs itself, with the host's network and proxy settings)")]
    Unreachable { url: String, message: String },
    #[error("ADD `{url}`: the server answered HTTP {status}\nhint: check the URL; {}", status_hint(*.status))]
    Status { url: String, status: u16 },
    #[error("ADD `{url}`: more than {limit} bytes; nothing was kept\nhint: download large files in a RUN step, or serve a smaller file")]
    TooLarge { url: String, limit: u64 },
    #[error("ADD `{url}`: plain HTTP to `{host}`, which is not loopback\nhint: use https://, or allow the host explicitly with `--insecure-registry {host}` (plain http is only used for loopback and --insecure-registry hosts)")]
    PlainHttp { url: String, host: String },
    #[error("ADD `{url}`: checksum mismatch: --checksum expects {expected} but the download is {actual}\nhint: if the file changed on purpose, update --checksum to the new digest; otherwise the server sent something else")]
    ChecksumMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("ADD `{url}`: the content changed: `{lock}` pins {expected} but the download is {actual}\nhint: if the change is expected, re-pin it with `strata lock --update {url}` (or add --checksum to the ADD)")]
    PinMismatch {
        url: String,
        lock: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("ADD `{what}` is not pinned in `{lock}` (--locked)\nhint: run `strata lock` (or a build without --locked) and commit strata.lock; for a URL, --checksum=sha256:… pins it in the Dockerfile")]
    NotPinned { what: String, lock: String },
    #[error("ADD `{remote}`: {message}\nhint: {hint}")]
    Git {
        remote: String,
        message: String,
        hint: String,
    },
    #[error("ADD: `{}`: {source}\nhint: check the store's file system (space, permissions)", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "the server wants credentials, which ADD does not send: download the file into the build context instead",
        404 | 410 => "the file is not (or no longer) there",
        500..=599 => "the server failed; try again later",
        _ => "the URL must answer 200 with the file",
    }
}

/// `http://…` or `https://…` (case-insensitive scheme).
pub fn is_http_url(s: &str) -> bool {
    let l = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// Whether an ADD source is a git repository, as BuildKit tells them apart: `git://…`,
/// `ssh://…`, the scp-like `user@host:path`, or an `http(s)://` URL whose path ends in `.git`
/// (the fragment, `#ref:subdir`, aside).
pub fn is_git_source(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    if l.starts_with("git://") || l.starts_with("ssh://") {
        return true;
    }
    if is_http_url(s) {
        let base = s.split('#').next().unwrap_or(s);
        let base = base.split('?').next().unwrap_or(base);
        let base = base.trim_end_matches('/');
        return base.ends_with(".git");
    }
    is_scp_like(s)
}

/// `user@host:path` (no `://`, a user, a host, and a path after the colon).
fn is_scp_like(s: &str) -> bool {
    if s.contains("://") {
        return false;
    }
    let Some((user_host, path)) = s.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && !host.is_empty()
        && !path.is_empty()
        && !user_host.contains('/')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Why an ADD source (a git repository or an `http(s)://` URL) is refused when the build is
/// planned; the planner adds the source and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("the repository URL is empty")]
    EmptyRepository,
    #[error("the repository URL contains white space")]
    RepositoryWhiteSpace,
    #[error("git options in a query string (`?ref=…&subdir=…`) are not supported yet: write `#REF:SUBDIR`")]
    GitQuery,
    #[error("the repository URL names no host")]
    RepositoryNoHost,
    #[error("the repository URL names no repository path")]
    RepositoryNoPath,
    #[error("`{0}` is not a valid git ref")]
    BadRef(String),
    #[error("the subdirectory `{0}` leaves the repository")]
    SubdirOutside(String),
    #[error("not a URL")]
    NotUrl,
    #[error("the URL names no host")]
    UrlNoHost,
    #[error("the URL contains white space")]
    UrlWhiteSpace,
    #[error("credentials in the URL are not supported (they would be written to image history and strata.lock)")]
    UrlCredentials,
}

/// Parses an ADD source that [`is_git_source`]; the error says what is wrong.
pub fn parse_git(s: &str) -> Result<GitSource, SourceError> {
    let (remote, fragment) = match s.split_once('#') {
        Some((r, f)) => (r.to_string(), Some(f)),
        None => (s.to_string(), None),
    };
    if remote.is_empty() {
        return Err(SourceError::EmptyRepository);
    }
    if remote.contains(char::is_whitespace) {
        return Err(SourceError::RepositoryWhiteSpace);
    }
    if remote.contains('?') {
        return Err(SourceError::GitQuery);
    }
    if remote.contains("://") {
        let (_, rest) = remote.split_once("://").expect("checked");
        let host = rest.split('/').next().unwrap_or("");
        let host = host.rsplit('@').next().unwrap_or("");
        if host.is_empty() {
            return Err(SourceError::RepositoryNoHost);
        }
        if rest.len() <= host.len() + 1 {
            return Err(SourceError::RepositoryNoPath);
        }
    }
    let (reference, subdir) = match fragment {
        None => (None, None),
        Some(f) => {
            let (r, d) = match f.split_once(':') {
                Some((r, d)) => (r, Some(d)),
                None => (f, None),
            };
            let r = (!r.is_empty()).then(|| r.to_string());
            if let Some(r) = &r {
                if r.starts_with('-') || r.contains("..") || r.contains(char::is_whitespace) {
                    return Err(SourceError::BadRef(r.clone()));
                }
            }
            let d = match d {
                None => None,
                Some(d) => {
                    let mut parts = Vec::new();
                    for c in d.split('/') {
                        match c {
                            "" | "." => {}
                            ".." => return Err(SourceError::SubdirOutside(d.to_string())),
                            c => parts.push(c),
                        }
                    }
                    (!parts.is_empty()).then(|| parts.join("/"))
                }
            };
            (r, d)
        }
    };
    Ok(GitSource {
        remote,
        reference,
        subdir,
        keep_git_dir: false,
        checksum: None,
    })
}

/// Checks an `http(s)://` ADD source: a host, no white space, no fragment.
pub fn check_url(s: &str) -> Result<(), SourceError> {
    let (_, rest) = s.split_once("://").ok_or(SourceError::NotUrl)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(SourceError::UrlNoHost);
    }
    if s.contains(char::is_whitespace) {
        return Err(SourceError::UrlWhiteSpace);
    }
    if authority.contains('@') {
        return Err(SourceError::UrlCredentials);
    }
    Ok(())
}

/// See [`UrlSource::file_name`].
pub fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let last = path.rsplit('/').next().unwrap_or("");
    let name = percent_decode(last);
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        "__unnamed__".to_string()
    } else {
        name
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A remote source in a plan, as [`resolve_pins`] sees it.
pub enum RemoteRef<'a> {
    Url(&'a UrlSource),
    Git(&'a GitSource),
}

/// What `strata lock` does for remote sources: every URL without `--checksum` is fetched
/// (into `scratch`, then dropped) and its digest recorded, every git ref resolved to a commit
/// and recorded, in `pins` — keeping existing pins unless `pins` is updating them.
pub fn resolve_pins<'a>(
    sources: impl IntoIterator<Item = RemoteRef<'a>>,
    opts: &FetchOptions,
    scratch: &std::path::Path,
) -> Result<(), FetchError> {
    let Some(pins) = &opts.pins else {
        return Ok(());
    };
    for s in sources {
        match s {
            RemoteRef::Url(u) => {
                if u.checksum.is_some() {
                    continue;
                }
                let d = match pins.url_pin(&u.url) {
                    Some(d) => d,
                    None => http::download(&u.url, opts, scratch)?.digest,
                };
                pins.record_url(&u.url, d);
            }
            RemoteRef::Git(g) => {
                if g.names_commit() {
                    continue;
                }
                let c = match pins.git_pin(&g.lock_key()) {
                    Some(c) => c,
                    None => git::resolve(g, opts)?.commit,
                };
                pins.record_git(&g.lock_key(), &c);
            }
        }
    }
    Ok(())
}

/// The pin a `--locked` build needs for `s` and lacks, if any.
pub fn missing_pin(s: RemoteRef<'_>, opts: &FetchOptions) -> Option<FetchError> {
    if !opts.locked() {
        return None;
    }
    let pins = opts.pins.as_ref()?;
    let (what, pinned) = match s {
        RemoteRef::Url(u) => (
            u.url.clone(),
            u.checksum.is_some() || pins.url_pin(&u.url).is_some(),
        ),
        RemoteRef::Git(g) => (
            g.lock_key(),
            g.names_commit() || pins.git_pin(&g.lock_key()).is_some(),
        ),
    };
    (!pinned).then(|| FetchError::NotPinned {
        what,
        lock: pins.path().display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sources_are_told_apart_as_buildkit_does() {
        for s in [
            "https://github.com/moby/buildkit.git",
            "https://host/r.git#v1:sub",
            "http://127.0.0.1:80/repo.git/",
            "git://host/repo",
            "ssh://git@host/repo.git",
            "git@github.com:moby/buildkit.git#main",
        ] {
            assert!(is_git_source(s), "{s}");
        }
        for s in [
            "https://host/file.tar.gz",
            "https://host/x.git.tar",
            "http://127.0.0.1/a",
            "src/",
            "c:/x",
            "a@b",
        ] {
            assert!(!is_git_source(s), "{s}");
        }
    }

    #[test]
    fn git_fragments_give_ref_and_subdir() {
        let g = parse_git("https://h/r.git#v1.0:docs/./api/").unwrap();
        assert_eq!(g.remote, "https://h/r.git");
        assert_eq!(g.reference.as_deref(), Some("v1.0"));
        assert_eq!(g.subdir.as_deref(), Some("docs/api"));
        assert_eq!(g.lock_key(), "https://h/r.git#v1.0");
        let g = parse_git("git@h:o/r.git").unwrap();
        assert_eq!((g.reference, g.subdir), (None, None));
        let g = parse_git("https://h/r.git#:sub").unwrap();
        assert_eq!(
            (g.reference.as_deref(), g.subdir.as_deref()),
            (None, Some("sub"))
        );
        assert!(parse_git("https://h/r.git#main:../x").is_err());
        assert!(parse_git("https://h/r.git#--upload-pack=x").is_err());
        assert!(parse_git("https:///r.git").is_err());
        assert!(parse_git("https://h/r.git?ref=v1")
            .unwrap_err()
            .to_string()
            .contains("#REF:SUBDIR"));
        assert!(is_full_commit(&"a".repeat(40)));
        assert!(!is_full_commit("abc"));
    }

    #[test]
    fn url_file_names_follow_the_last_path_segment() {
        assert_eq!(url_file_name("https://h/a/b/file.tgz?x=1#f"), "file.tgz");
        assert_eq!(url_file_name("https://h/a%20b.txt"), "a b.txt");
        assert_eq!(url_file_name("https://h/"), "__unnamed__");
        assert_eq!(url_file_name("https://h"), "__unnamed__");
        assert_eq!(url_file_name("https://h/a%2Fb"), "__unnamed__");
        assert!(check_url("https://h/x").is_ok());
        assert!(check_url("https:///x").is_err());
        assert!(check_url("https://u:p@h/x").is_err());
    }
}
