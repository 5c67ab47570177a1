//! `ADD <git url>#ref[:subdir]`: the system `git` binary (as BuildKit uses it) resolves the
//! ref to a commit (`git ls-remote`), fetches that commit into a scratch repository, and checks
//! its tree out into a directory that becomes the step's source.
//!
//! git runs without the user's and the system's configuration (`GIT_CONFIG_GLOBAL=/dev/null`,
//! `GIT_CONFIG_NOSYSTEM=1`), without prompts, over `http`, `https`, `git` and `ssh` only: what
//! a checkout holds must not depend on the machine's git settings.
//!
//! With `--keep-git-dir`, the checkout gets a `.git` that strata writes itself rather than the
//! one a clone leaves (which holds timestamps, reflogs with user names, hooks from the
//! installed templates, and packs as the server sent them): see [`write_git_dir`]. It is
//! reproducible for one git version; its pack may differ between git versions, so the git
//! version is part of such a step's key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{is_full_commit, FetchError, FetchOptions, GitSource};

/// A ref resolved to a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRef {
    pub commit: String,
    /// The full ref name it came from (`refs/heads/main`, `refs/tags/v1`), if any.
    pub full_ref: Option<String>,
}

fn err(g: &GitSource, message: impl Into<String>, hint: impl Into<String>) -> FetchError {
    FetchError::Git {
        remote: g.remote.clone(),
        message: message.into(),
        hint: hint.into(),
    }
}

/// `git` with an environment that does not depend on the machine (module docs).
fn git_cmd() -> Command {
    let mut c = Command::new("git");
    for v in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_COMMON_DIR",
        "GIT_CONFIG",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
    ] {
        c.env_remove(v);
    }
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_ALLOW_PROTOCOL", "http:https:git:ssh")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    c
}

/// Runs git; a missing binary and a failure are errors naming the operation.
fn run(g: &GitSource, what: &str, cmd: &mut Command) -> Result<Output, FetchError> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            err(
                g,
                "the `git` program is not installed",
                "install git (Debian: `apt-get install git`); strata runs it to fetch git sources",
            )
        } else {
            err(
                g,
                format!("{what}: cannot run git: {e}"),
                "check that `git` runs",
            )
        }
    })?;
    Ok(out)
}

fn stderr_tail(o: &Output) -> String {
    let s = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    tail.join("; ")
}

/// Plain `http://` only to hosts allowed to (as for URLs).
fn check_transport(g: &GitSource, opts: &FetchOptions) -> Result<(), FetchError> {
    let lower = g.remote.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("http://") {
        let authority = rest.split('/').next().unwrap_or("");
        if !opts.plain_http_allowed(authority) {
            return Err(FetchError::PlainHttp {
                url: g.remote.clone(),
                host: authority.to_string(),
            });
        }
    }
    Ok(())
}

/// The installed git's version line (`git version 2.47.3`): part of the key of a step that
/// keeps `.git`.
pub fn version() -> Option<String> {
    let o = git_cmd().arg("--version").output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Resolves the source's ref to a commit with `git ls-remote`, as git names refs: an exact
/// ref (`HEAD`, `refs/…`), then a tag (peeled to its commit), then a branch. A full commit id
/// is taken as it is (nothing to ask).
pub fn resolve(g: &GitSource, opts: &FetchOptions) -> Result<ResolvedRef, FetchError> {
    check_transport(g, opts)?;
    if let Some(r) = &g.reference {
        if is_full_commit(r) {
            return Ok(ResolvedRef {
                commit: r.to_ascii_lowercase(),
                full_ref: None,
            });
        }
    }
    let out = run(
        g,
        "git ls-remote",
        git_cmd().args(["ls-remote", "--"]).arg(&g.remote),
    )?;
    if !out.status.success() {
        return Err(err(
            g,
            format!("the repository cannot be read: {}", stderr_tail(&out)),
            "check the URL, that the repository exists and that this machine reaches it (git runs without credentials prompts)",
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let refs: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(sha, name)| (sha.trim(), name.trim()))
        .collect();
    let want = g.reference.as_deref().unwrap_or("HEAD");
    let find = |name: &str| refs.iter().find(|(_, n)| *n == name).map(|(s, _)| *s);
    let candidates = [
        want.to_string(),
        format!("refs/{want}"),
        format!("refs/tags/{want}"),
        format!("refs/heads/{want}"),
    ];
    for look in &candidates {
        // An annotated tag is listed twice: its peeled line (`^{}`) names the commit.
        if let Some(sha) = find(&format!("{look}^{{}}")).or_else(|| find(look)) {
            return Ok(ResolvedRef {
                commit: sha.to_ascii_lowercase(),
                full_ref: (look != "HEAD").then(|| look.clone()),
            });
        }
    }
    let mut known: Vec<&str> = refs
        .iter()
        .filter_map(|(_, n)| {
            n.strip_prefix("refs/heads/")
                .or_else(|| n.strip_prefix("refs/tags/"))
        })
        .filter(|n| !n.ends_with("^{}"))
        .collect();
    known.sort_unstable();
    known.dedup();
    let shown: Vec<String> = known.iter().take(8).map(|n| format!("`{n}`")).collect();
    Err(err(
        g,
        format!("unknown ref `{want}`"),
        if shown.is_empty() {
            "the repository has no branches or tags".to_string()
        } else {
            format!(
                "name a branch, a tag or a full commit id after `#`; the repository has {}{}",
                shown.join(", "),
                if known.len() > 8 { ", …" } else { "" }
            )
        },
    ))
}

/// Fetches `commit` of the source into a new scratch repository under `dir` and returns its
/// git dir. A shallow fetch of the commit first; servers that refuse it (the dumb HTTP
/// protocol) get a full fetch of the commit, then of the ref.
pub fn fetch(
    g: &GitSource,
    commit: &str,
    opts: &FetchOptions,
    dir: &Path,
) -> Result<PathBuf, FetchError> {
    check_transport(g, opts)?;
    let io = |path: &Path, source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    };
    let repo = tempfile::Builder::new()
        .prefix("git-")
        .tempdir_in(dir)
        .map_err(|e| io(dir, e))?
        .keep();
    let gd = repo.join("git");
    let empty_template = repo.join("template");
    std::fs::create_dir(&empty_template).map_err(|e| io(&empty_template, e))?;
    let o = run(
        g,
        "git init",
        git_cmd()
            .args(["init", "-q", "--bare"])
            .arg(format!("--template={}", empty_template.display()))
            .arg(&gd),
    )?;
    if !o.status.success() {
        return Err(err(
            g,
            format!("git init failed: {}", stderr_tail(&o)),
            "check the store's scratch directory",
        ));
    }
    let has_commit = |gd: &Path| {
        git_cmd()
            .arg("--git-dir")
            .arg(gd)
            .args(["cat-file", "-e"])
            .arg(format!("{commit}^{{commit}}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let fetch = |extra: &[&str], what: &str| -> Result<Output, FetchError> {
        let mut c = git_cmd();
        c.arg("--git-dir")
            .arg(&gd)
            .args(["fetch", "-q", "--no-tags", "--no-write-fetch-head"])
            .args(extra)
            .arg("--")
            .arg(&g.remote)
            .arg(what);
        run(g, "git fetch", &mut c)
    };
    let mut last = fetch(&["--depth=1"], commit)?;
    if !(last.status.success() && has_commit(&gd)) {
        last = fetch(&[], commit)?;
    }
    if !(last.status.success() && has_commit(&gd)) {
        let refspec = format!(
            "+{}:refs/strata/fetched",
            g.reference.as_deref().unwrap_or("HEAD")
        );
        last = fetch(&[], &refspec)?;
    }
    if !(has_commit(&gd)) {
        return Err(err(
            g,
            format!(
                "commit {commit} cannot be fetched{}",
                if last.status.success() {
                    String::new()
                } else {
                    format!(": {}", stderr_tail(&last))
                }
            ),
            format!(
                "the pinned commit may be gone from the repository (force-pushed); re-pin it with `strata lock --update {}`",
                g.lock_key()
            ),
        ));
    }
    Ok(gd)
}

/// Checks out `commit` of the repository `gd` into `out` (which must not exist), as
/// `git checkout` writes it: regular files 0644/0755 (the umask aside, which the layer
/// normalises), symlinks as symlinks. Submodules are refused: strata does not fetch them yet.
pub fn checkout(g: &GitSource, gd: &Path, commit: &str, out: &Path) -> Result<(), FetchError> {
    let io = |path: &Path, source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    };
    let ls = run(
        g,
        "git ls-tree",
        git_cmd()
            .arg("--git-dir")
            .arg(gd)
            .args(["ls-tree", "-r", "-z", "--full-tree"])
            .arg(commit),
    )?;
    if !ls.status.success() {
        return Err(err(
            g,
            format!("cannot read commit {commit}: {}", stderr_tail(&ls)),
            "the fetched repository is incomplete; run the build again",
        ));
    }
    if let Some(sub) = ls
        .stdout
        .split(|b| *b == 0)
        .find(|e| e.starts_with(b"160000 "))
    {
        let path = String::from_utf8_lossy(sub)
            .split_once('\t')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        return Err(err(
            g,
            format!("commit {commit} has a submodule (`{path}`), and strata does not fetch submodules yet"),
            "ADD the submodule's repository separately, or build from a checkout in the context",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let o = run(
        g,
        "git checkout",
        git_cmd()
            .arg("--git-dir")
            .arg(gd)
            .arg("--work-tree")
            .arg(out)
            .args([
                "-c",
                "core.autocrlf=false",
                "-c",
                "core.symlinks=true",
                "-c",
                "core.bare=false",
                "checkout",
                "-q",
                "-f",
                "--detach",
            ])
            .arg(commit)
            .current_dir(out),
    )?;
    if !o.status.success() {
        return Err(err(
            g,
            format!("git checkout of {commit} failed: {}", stderr_tail(&o)),
            "check the store's scratch directory (space, permissions)",
        ));
    }
    // The scratch repository's index stays with it; `out` holds only the tree.
    Ok(())
}

/// Writes `out/.git` for `--keep-git-dir`, deterministically for one git version:
/// - `objects/pack/`: one pack (written by `git pack-objects --threads=1`) of the commit and
///   its tree only — history is cut at the commit, which `shallow` names when it has parents
///   (as after `git clone --depth 1`);
/// - `HEAD`: `ref: refs/heads/BRANCH` when the ref is a branch (and that ref), otherwise the
///   commit id (detached), with `refs/tags/TAG` naming the commit for a tag;
/// - `config`: a fixed text with `remote.origin.url` set to the repository;
/// - `index`: written by `git read-tree`, with zero stat data (git re-reads the files on the
///   first `git status`; nothing of the build machine is recorded).
///
/// No hooks, logs, `description`, `FETCH_HEAD` or `ORIG_HEAD`.
pub fn write_git_dir(
    g: &GitSource,
    gd: &Path,
    commit: &str,
    full_ref: Option<&str>,
    out: &Path,
) -> Result<(), FetchError> {
    let dot = out.join(".git");
    let io = |path: &Path, source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    };
    for d in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
        let p = dot.join(d);
        std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
    }
    let list = run(
        g,
        "git rev-list",
        git_cmd()
            .arg("--git-dir")
            .arg(gd)
            .args(["rev-list", "--objects", "--no-walk"])
            .arg(commit),
    )?;
    if !list.status.success() {
        return Err(err(
            g,
            format!(
                "cannot list the objects of {commit}: {}",
                stderr_tail(&list)
            ),
            "run the build again",
        ));
    }
    let mut child = git_cmd()
        .arg("--git-dir")
        .arg(gd)
        .args(["-c", "pack.threads=1", "pack-objects", "-q", "--threads=1"])
        .arg(dot.join("objects/pack/pack"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(
                g,
                format!("cannot run git pack-objects: {e}"),
                "check that `git` runs",
            )
        })?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&list.stdout)
            .map_err(|e| err(g, format!("git pack-objects: {e}"), "run the build again"))?;
    }
    let packed = child
        .wait_with_output()
        .map_err(|e| err(g, format!("git pack-objects: {e}"), "run the build again"))?;
    if !packed.status.success() {
        return Err(err(
            g,
            format!("git pack-objects failed: {}", stderr_tail(&packed)),
            "run the build again",
        ));
    }
    let write = |rel: &str, text: &str| -> Result<(), FetchError> {
        let p = dot.join(rel);
        std::fs::write(&p, text).map_err(|e| io(&p, e))
    };
    let (head, named) = match full_ref {
        Some(r) if r.starts_with("refs/heads/") => (format!("ref: {r}\n"), Some(r)),
        Some(r) if r.starts_with("refs/tags/") => (format!("{commit}\n"), Some(r)),
        _ => (format!("{commit}\n"), None),
    };
    write("HEAD", &head)?;
    if let Some(r) = named {
        let p = dot.join(r);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&p, format!("{commit}\n")).map_err(|e| io(&p, e))?;
    }
    write(
        "config",
        &format!(
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\
             \tlogallrefupdates = true\n[remote \"origin\"]\n\turl = {}\n\
             \tfetch = +refs/heads/*:refs/remotes/origin/*\n",
            g.remote
        ),
    )?;
    let parents = run(
        g,
        "git rev-list",
        git_cmd()
            .arg("--git-dir")
            .arg(gd)
            .args(["rev-list", "--parents", "-n", "1"])
            .arg(commit),
    )?;
    if String::from_utf8_lossy(&parents.stdout)
        .split_whitespace()
        .count()
        > 1
    {
        write("shallow", &format!("{commit}\n"))?;
    }
    let idx = run(
        g,
        "git read-tree",
        git_cmd()
            .arg("--git-dir")
            .arg(&dot)
            .env("GIT_INDEX_FILE", dot.join("index"))
            .args(["read-tree"])
            .arg(commit),
    )?;
    if !idx.status.success() {
        return Err(err(
            g,
            format!("git read-tree failed: {}", stderr_tail(&idx)),
            "run the build again",
        ));
    }
    Ok(())
}
