//! Every cache key of the solver, in one place: each key domain, the fields it hashes and their
//! order. The encoding itself (tags, length prefixes, [`KEY_VERSION`](crate::plan::key::KEY_VERSION))
//! is `plan::key`; what each field means is docs/cache-keys.md. Nothing outside this module
//! names a domain or a field tag.
//!
//! Any change here changes keys: it must be deliberate, versioned (`KEY_VERSION`, or the
//! step kind's semantics constant below) and is caught by the golden tests
//! (`solve::tests::golden_*`, `solve::copy::tests::golden_parent_facts`,
//! `solve::remote::tests::golden_*`, and the CLI's `build::golden_digest_of_bundled_example`).
//!
//! The module also owns the one rule for how a COPY/ADD depends on its parent rootfs
//! ([`parent_use`]) and the rule `strata rebase` derives from it ([`base_independent`]).

use strata_cache::Digest;

use crate::image::LayerDesc;
use crate::plan::key::{Key, KeyHasher};
use crate::plan::{self, CopyFrom, CopySpec, RunMountKind, RunStep, WorkdirStep};

use super::copy::Answer;

/// The version of what a COPY/ADD layer holds for given inputs (docs/cache-keys.md): 2 since
/// an existing destination keeps its metadata and `--from` symlink sources are followed. A
/// layer cached under the old rules must not be reused for the new.
const COPY_SEMANTICS: u64 = 2;

/// The version of what an `ADD <url>` / `ADD <git>` layer holds for given content identities.
const REMOTE_SEMANTICS: u64 = 1;

/// The build-wide inputs of every step that writes a layer: its compression (part of the
/// blob's bytes) and `SOURCE_DATE_EPOCH` (every entry's mtime).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerForm<'a> {
    pub compression: &'a str,
    pub source_date_epoch: u64,
}

// ---------------------------------------------------------------------------------------------
// Bases and locations

/// The rootfs of `FROM scratch` for `platform`.
pub(crate) fn scratch(platform: &str) -> Key {
    KeyHasher::new("base")
        .str("scratch", "")
        .str("platform", platform)
        .finish()
}

/// The rootfs of an image by manifest digest: with the platform for `FROM`; without it for
/// `COPY --from=IMAGE` and `RUN --mount=from=IMAGE` sources (their files, not a platform's
/// environment, are what the step uses).
pub(crate) fn image(manifest: &Digest, platform: Option<&str>) -> Key {
    let mut k = KeyHasher::new("base");
    k.str("image", &manifest.to_string());
    if let Some(p) = platform {
        k.str("platform", p);
    }
    k.finish()
}

/// Where a step sits (`--explain` scope, stage, step): the key of its last result is recorded
/// under it, so a later build can say what changed. Not a step key.
pub(crate) fn location(scope: &str, stage: usize, step: usize) -> Key {
    KeyHasher::new("location")
        .str("scope", scope)
        .u64("stage", stage as u64)
        .u64("step", step as u64)
        .finish()
}

/// The rootfs after a step whose key does not include its parent ([`ParentUse`] other than
/// `Whole`): the next step stands on this, so it still changes with the parent.
pub(crate) fn chain(parent: &Key, step: &Key) -> Key {
    KeyHasher::new("chain")
        .key("parent", parent)
        .key("step", step)
        .finish()
}

/// A sequence of layers (which parent tree a COPY reads: an in-process cache id, not stored).
pub(crate) fn layers(layers: &[LayerDesc]) -> Key {
    let mut k = KeyHasher::new("parent-layers");
    for l in layers {
        k.str("layer", &l.digest.to_string());
    }
    k.finish()
}

/// The import of a base image's blobs into the store (a lock of the session: not stored).
pub(crate) fn import(manifest: &Digest) -> Key {
    KeyHasher::new("import")
        .str("manifest", &manifest.to_string())
        .finish()
}

// ---------------------------------------------------------------------------------------------
// Config, WORKDIR, RUN

/// A config-only step: its parent and the config and ARGs in scope after it.
pub(crate) fn config(parent: &Key, state: &[u8]) -> Key {
    KeyHasher::new("config")
        .key("parent", parent)
        .bytes("state", state)
        .finish()
}

/// WORKDIR: it makes a layer (the directory, created as the USER).
pub(crate) fn workdir(parent: &Key, w: &WorkdirStep, form: LayerForm<'_>) -> Key {
    KeyHasher::new("workdir")
        .key("parent", parent)
        .bytes("state", &w.state)
        .str("path", &w.path)
        .opt_str("user", w.user.as_deref())
        .str("compression", form.compression)
        .u64("source-date-epoch", form.source_date_epoch)
        .finish()
}

/// What a RUN step's key is made of beyond the step itself.
pub(crate) struct RunInputs<'a> {
    pub parent: &'a Key,
    /// The environment as the command sees it (with `SOURCE_DATE_EPOCH` when given).
    pub env: &'a [String],
    pub network: plan::Network,
    /// The content key of each bind mount's source, in mount order.
    pub binds: &'a [Key],
    pub form: LayerForm<'a>,
}

fn network_name(n: plan::Network) -> &'static str {
    if n == plan::Network::Host {
        "host"
    } else {
        "none"
    }
}

/// RUN: parent, command, environment, user, workdir, network, layer form, cache mounts by
/// target (never their contents), bind sources by content, tmpfs/ssh/secret mounts by what
/// they are (never a secret's value).
pub(crate) fn run(run: &RunStep, i: &RunInputs<'_>) -> Key {
    let mut k = KeyHasher::new("run");
    k.key("parent", i.parent)
        .str("rootfs", crate::sandbox::ROOTFS_VIEW)
        .strs("argv", &run.argv)
        .strs("env", i.env)
        .str("user", &run.user)
        .str("workdir", &run.workdir)
        .str("network", network_name(i.network))
        .str("compression", i.form.compression)
        .u64("source-date-epoch", i.form.source_date_epoch);
    for m in &run.cache_mounts {
        k.str("cache-mount", &m.target);
        // Only what is set, so the keys of plain cache mounts stay as they were.
        if m.readonly {
            k.u64("cache-ro", 1);
        }
        for (tag, v) in [
            ("cache-mode", m.mode),
            ("cache-uid", m.uid),
            ("cache-gid", m.gid),
        ] {
            if let Some(v) = v {
                k.u64(tag, v as u64);
            }
        }
    }
    let mut binds = i.binds.iter();
    for m in &run.mounts {
        match &m.kind {
            RunMountKind::Bind { rw, .. } => {
                let source = binds.next().expect("a content key for every bind mount");
                k.str("bind-mount", &m.target)
                    .key("bind-source", source)
                    .u64("bind-rw", *rw as u64);
            }
            RunMountKind::Tmpfs { size } => {
                k.str("tmpfs-mount", &m.target)
                    .u64("tmpfs-size", size.unwrap_or(0));
            }
            RunMountKind::Ssh { id, .. } => {
                k.str("ssh-mount", &m.target).str("ssh-id", id);
            }
            RunMountKind::Secret {
                id,
                file,
                env,
                mode,
                uid,
                gid,
                ..
            } => {
                if let Some(v) = env {
                    k.str("secret-env", v);
                }
                k.str("secret-mount", if *file { &m.target } else { "" })
                    .str("secret-id", id)
                    .u64("secret-mode", *mode as u64)
                    .u64("secret-uid", *uid as u64)
                    .u64("secret-gid", *gid as u64);
            }
        }
    }
    k.finish()
}

/// The reuse key of a RUN (docs/read-set.md): its key with the parent left out (a scratch
/// parent of the same platform stands in for it), and the read-set version. Steps with equal
/// reuse keys differ only in their parent; a read set says whether that difference matters.
pub(crate) fn run_reuse(step: &RunStep, i: &RunInputs<'_>, platform: &str) -> Key {
    let without_parent = run(
        step,
        &RunInputs {
            parent: &scratch(platform),
            env: i.env,
            network: i.network,
            binds: i.binds,
            form: i.form,
        },
    );
    KeyHasher::new("run-reuse")
        .key("run", &without_parent)
        .u64("readset", crate::readset::READSET_VERSION as u64)
        .finish()
}

/// For `--explain` only: a RUN's instruction (command, environment, user, workdir).
pub(crate) fn run_instruction(run: &RunStep, env: &[String]) -> Key {
    KeyHasher::new("run-instruction")
        .strs("argv", &run.argv)
        .strs("env", env)
        .str("user", &run.user)
        .str("workdir", &run.workdir)
        .finish()
}

/// For `--explain` only: what a RUN mounts and its network, in one digest.
pub(crate) fn run_mounts(network: plan::Network, binds: &[Key]) -> Key {
    let mut h = KeyHasher::new("run-mounts");
    h.str("network", network_name(network));
    for b in binds {
        h.key("bind-source", b);
    }
    h.finish()
}

/// The (empty) parent a `RUN --mount` source is copied onto.
pub(crate) fn mount_parent() -> Key {
    KeyHasher::new("mount-parent").finish()
}

// ---------------------------------------------------------------------------------------------
// COPY / ADD: the parent rule

/// How a COPY/ADD depends on its parent rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParentUse {
    /// Not at all (`--link`, no user name to look up).
    None,
    /// Only through the facts its `ParentView` records (COPY from the context, numeric or no
    /// `--chown`).
    Facts,
    /// In ways not recorded (ADD's archive detection reads the context; `--from` sources; user
    /// names): the parent key is part of the step key.
    Whole,
}

/// Whether `--chown` names a user or group (looked up in the parent's /etc/passwd, group).
pub(crate) fn chown_needs_names(spec: &CopySpec) -> bool {
    spec.chown
        .as_deref()
        .is_some_and(|c| c.chars().any(|ch| ch.is_ascii_alphabetic()))
}

/// The one rule for how a COPY/ADD's key depends on its parent.
pub(crate) fn parent_use(spec: &CopySpec) -> ParentUse {
    let names = chown_needs_names(spec);
    if spec.link && !names {
        ParentUse::None
    } else if !names && !spec.add && matches!(spec.from, CopyFrom::Context) {
        ParentUse::Facts
    } else {
        ParentUse::Whole
    }
}

/// Whether a step's layer stays valid on any base image (`strata rebase` keeps such layers):
/// it reads nothing of its parent ([`ParentUse::None`]) and its sources do not come from a
/// stage or image, which may themselves stand on the base.
pub(crate) fn base_independent(kind: &plan::StepKind) -> bool {
    match kind {
        plan::StepKind::Copy(spec) => {
            parent_use(spec) == ParentUse::None && matches!(spec.from, CopyFrom::Context)
        }
        _ => false,
    }
}

/// The fields of a COPY/ADD that shape its layer whatever the sources: destination, owner,
/// mode, `--link`, excludes, layer form.
fn destination(k: &mut KeyHasher, spec: &CopySpec, form: LayerForm<'_>) {
    k.str("dest", &spec.dest)
        .opt_str("chown", spec.chown.as_deref())
        .opt_str(
            "chmod",
            spec.chmod.as_ref().map(|c| c.key_form()).as_deref(),
        )
        .u64("link", spec.link as u64)
        .strs("exclude", &spec.excludes)
        .str("compression", form.compression)
        .u64("source-date-epoch", form.source_date_epoch);
}

// ---------------------------------------------------------------------------------------------
// COPY / ADD of local sources

/// The keys of a COPY/ADD being prepared: the instruction (as written, sources by pattern), the
/// shape (which paths and kinds it writes: what its parent facts can depend on) and, once the
/// sources are hashed, the body ([`CopyBody`]).
pub(crate) struct CopyKeys {
    ins: KeyHasher,
    shape: KeyHasher,
    body: KeyHasher,
}

impl CopyKeys {
    /// `from`: the key of the `--from` stage or image rootfs; `None`: the context.
    pub fn new(spec: &CopySpec, from: Option<&Key>, form: LayerForm<'_>) -> Self {
        let mut ins = KeyHasher::new("copy-instruction");
        destination(&mut ins, spec, form);
        if spec.parents {
            // Only when set: the keys of every other COPY stay as they were.
            ins.u64("parents", 1);
        }
        match from {
            None => ins.str("from", "context"),
            Some(k) => ins.key("from", k),
        };
        CopyKeys {
            ins,
            shape: KeyHasher::new("copy-shape"),
            body: KeyHasher::new(if spec.add { "add-body" } else { "copy-body" }),
        }
    }

    pub fn heredoc(&mut self, name: &str, content: &str) {
        self.ins.str("heredoc-name", name).str("heredoc", content);
    }

    /// A source path inside a `--from` rootfs.
    pub fn rootfs_path(&mut self, path: &str) {
        self.ins.str("path", path);
    }

    /// A source pattern of the context.
    pub fn pattern(&mut self, pattern: &str) {
        self.ins.str("pattern", pattern);
    }

    /// A resolved context source (what the pattern matched).
    pub fn shape_source(&mut self, rel: &str, is_dir: bool) {
        self.shape.str("source", rel).u64("is_dir", is_dir as u64);
    }

    pub fn shape_entry(&mut self, path: &str, kind: &str, symlink_target: Option<&str>) {
        self.shape.str("path", path).str("kind", kind);
        if let Some(t) = symlink_target {
            self.shape.str("target", t);
        }
    }

    /// Ends the instruction and the shape: `(instruction, shape, body to hash the sources into)`.
    pub fn finish_instruction(mut self) -> (Key, Key, CopyBody) {
        let ins = self.ins.finish();
        self.shape.key("instruction", &ins);
        (ins, self.shape.finish(), CopyBody(self.body))
    }
}

/// A COPY/ADD's sources by content: everything of the key but its parent.
pub(crate) struct CopyBody(KeyHasher);

impl CopyBody {
    pub fn source(&mut self, rel: &str, is_dir: bool) {
        self.0.str("source", rel).u64("is_dir", is_dir as u64);
    }

    /// One file of a source: its path inside the source, kind, normalised mode and content
    /// digest (or link target).
    pub fn entry(&mut self, path: &str, kind: &str, mode: u32, content: &[u8]) {
        self.0
            .str("path", path)
            .str("kind", kind)
            .u64("mode", mode as u64)
            .bytes("content", content);
    }

    pub fn finish(mut self, instruction: &Key) -> Key {
        self.0.key("instruction", instruction);
        self.0.finish()
    }
}

/// Under which key the parent facts of a COPY are memoised: the parent rootfs and the shape.
/// (v3: the memo also holds the answers the facts were computed from.)
pub(crate) fn parent_facts_memo(parent: &Key, shape: &Key) -> Key {
    KeyHasher::new("parent-facts-memo-v3")
        .key("parent", parent)
        .key("shape", shape)
        .finish()
}

/// The digest of the parent facts a COPY read: every question asked of the parent rootfs and
/// its answer, in the order asked ([`ParentFacts::answer`]).
pub(crate) struct ParentFacts(KeyHasher);

impl ParentFacts {
    pub fn new() -> Self {
        ParentFacts(KeyHasher::new("parent-facts"))
    }

    /// Adds a question and its answer. (This byte form is part of every such COPY's key.)
    pub fn answer(&mut self, a: &Answer) {
        let k = &mut self.0;
        match a {
            Answer::Resolve {
                path,
                follow_last,
                resolved,
            } => {
                k.str("resolve", path)
                    .u64("follow-last", *follow_last as u64)
                    .str("resolved", resolved);
            }
            Answer::Dir { path, meta } => {
                k.str("dir", path);
                match meta {
                    None => {
                        k.u64("is-dir", 0);
                    }
                    Some(d) => {
                        k.u64("is-dir", 1)
                            .u64("mode", d.mode as u64)
                            .u64("uid", d.uid)
                            .u64("gid", d.gid)
                            .u64("xattrs", d.xattrs.len() as u64);
                        for (name, v) in &d.xattrs {
                            k.str("xattr", name).bytes("value", v);
                        }
                    }
                }
            }
            Answer::Text { path, text } => {
                k.str("read", path).opt_str("text", text.as_deref());
            }
        }
    }

    pub fn finish(&self) -> Key {
        self.0.finish()
    }
}

/// How a COPY/ADD's key names its parent.
pub(crate) enum ParentInput<'a> {
    /// [`ParentUse::None`].
    None,
    /// [`ParentUse::Whole`]: the parent's key.
    Whole(&'a Key),
    /// [`ParentUse::Facts`]: the digest of the facts read ([`ParentFacts`]).
    Facts(&'a Key),
}

/// The step key of a COPY/ADD of local sources.
pub(crate) fn copy(add: bool, parent: ParentInput<'_>, body: &Key) -> Key {
    let mut key = KeyHasher::new(if add { "add" } else { "copy" });
    key.u64("copy-semantics", COPY_SEMANTICS);
    match parent {
        ParentInput::None => {}
        ParentInput::Whole(p) => {
            key.key("parent", p);
        }
        ParentInput::Facts(f) => {
            key.key("parent-facts", f);
        }
    }
    key.key("body", body);
    key.finish()
}

// ---------------------------------------------------------------------------------------------
// ADD of URLs and git repositories

/// The keys of an `ADD` of remote sources: sources by content identity (a URL's sha256, a git
/// commit) in the body; the URLs and refs as written only in the instruction (`--explain`).
pub(crate) struct RemoteKeys {
    ins: KeyHasher,
    body: KeyHasher,
}

/// One git source of an ADD, resolved.
pub(crate) struct GitInput<'a> {
    pub commit: &'a str,
    pub subdir: Option<&'a str>,
    pub keep_git_dir: bool,
    /// With `--keep-git-dir` only (they shape `.git`): the remote, the full ref, git's version.
    pub remote: &'a str,
    pub full_ref: Option<&'a str>,
    pub git_version: &'a str,
    /// The source as the lock names it.
    pub lock_key: &'a str,
}

impl RemoteKeys {
    pub fn new(spec: &CopySpec, form: LayerForm<'_>) -> Self {
        let mut ins = KeyHasher::new("add-remote-instruction");
        destination(&mut ins, spec, form);
        RemoteKeys {
            ins,
            body: KeyHasher::new("add-remote-body"),
        }
    }

    pub fn url(&mut self, url: &str, file_name: &str, digest: &Digest) {
        self.body
            .str("url-name", file_name)
            .str("url-digest", &digest.to_string());
        self.ins.str("url", url);
    }

    pub fn git(&mut self, g: &GitInput<'_>) {
        self.body
            .str("git-commit", g.commit)
            .opt_str("git-subdir", g.subdir)
            .u64("keep-git-dir", g.keep_git_dir as u64);
        if g.keep_git_dir {
            self.body
                .str("git-remote", g.remote)
                .opt_str("git-ref", g.full_ref)
                .str("git-version", g.git_version);
        }
        self.ins.str("git", g.lock_key);
    }

    /// `(step key, instruction, body)`; `parent`: `Some` unless [`ParentUse::None`].
    pub fn finish(
        self,
        spec: &CopySpec,
        parent: Option<&Key>,
        form: LayerForm<'_>,
    ) -> (Key, Key, Key) {
        let ins = self.ins.finish();
        let body = self.body.finish();
        let mut key = KeyHasher::new("add-remote");
        key.u64("remote-semantics", REMOTE_SEMANTICS);
        if let Some(p) = parent {
            key.key("parent", p);
        }
        destination(&mut key, spec, form);
        key.key("body", &body);
        (key.finish(), ins, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{CacheMount, Network, RunMount};

    /// The RUN key as the solver composed it inline before `keys.rs` (b75f158,
    /// `build/mod.rs`), field by field: the oracle that `run` still encodes the same bytes.
    fn run_key_as_before(run: &RunStep, i: &RunInputs<'_>) -> Key {
        let mut k = KeyHasher::new("run");
        k.key("parent", i.parent)
            .str("rootfs", crate::sandbox::ROOTFS_VIEW)
            .strs("argv", &run.argv)
            .strs("env", i.env)
            .str("user", &run.user)
            .str("workdir", &run.workdir)
            .str(
                "network",
                if i.network == Network::Host {
                    "host"
                } else {
                    "none"
                },
            )
            .str("compression", i.form.compression)
            .u64("source-date-epoch", i.form.source_date_epoch);
        for m in &run.cache_mounts {
            k.str("cache-mount", &m.target);
            if m.readonly {
                k.u64("cache-ro", 1);
            }
            for (tag, v) in [
                ("cache-mode", m.mode),
                ("cache-uid", m.uid),
                ("cache-gid", m.gid),
            ] {
                if let Some(v) = v {
                    k.u64(tag, v as u64);
                }
            }
        }
        let mut binds = i.binds.iter();
        for m in &run.mounts {
            match &m.kind {
                RunMountKind::Bind { rw, .. } => {
                    k.str("bind-mount", &m.target)
                        .key("bind-source", binds.next().unwrap())
                        .u64("bind-rw", *rw as u64);
                }
                RunMountKind::Tmpfs { size } => {
                    k.str("tmpfs-mount", &m.target)
                        .u64("tmpfs-size", size.unwrap_or(0));
                }
                RunMountKind::Ssh { id, .. } => {
                    k.str("ssh-mount", &m.target).str("ssh-id", id);
                }
                RunMountKind::Secret {
                    id,
                    file,
                    env,
                    mode,
                    uid,
                    gid,
                    ..
                } => {
                    if let Some(v) = env {
                        k.str("secret-env", v);
                    }
                    k.str("secret-mount", if *file { &m.target } else { "" })
                        .str("secret-id", id)
                        .u64("secret-mode", *mode as u64)
                        .u64("secret-uid", *uid as u64)
                        .u64("secret-gid", *gid as u64);
                }
            }
        }
        k.finish()
    }

    fn step(cache_mounts: Vec<CacheMount>, mounts: Vec<RunMount>) -> RunStep {
        RunStep {
            argv: vec!["/bin/sh".into(), "-c".into(), "make".into()],
            env: vec!["PATH=/bin".into()],
            user: "1000".into(),
            workdir: "/src".into(),
            network: None,
            cache_mounts,
            mounts,
        }
    }

    fn mount(target: &str, kind: RunMountKind) -> RunMount {
        RunMount {
            target: target.into(),
            kind,
        }
    }

    #[test]
    fn the_run_key_encodes_what_the_inline_composition_did() {
        let cache = |ro, mode| CacheMount {
            id: "c".into(),
            target: "/root/.cache".into(),
            from: None,
            readonly: ro,
            mode,
            uid: Some(7),
            gid: None,
        };
        let secret = |env: Option<&str>, file| RunMountKind::Secret {
            id: "tok".into(),
            file,
            env: env.map(str::to_string),
            required: true,
            mode: 0o400,
            uid: 0,
            gid: 0,
        };
        let all = vec![
            mount(
                "/src",
                RunMountKind::Bind {
                    from: CopyFrom::Context,
                    source: ".".into(),
                    rw: true,
                },
            ),
            mount(
                "/tmp",
                RunMountKind::Tmpfs {
                    size: Some(1 << 20),
                },
            ),
            mount(
                "/run/ssh",
                RunMountKind::Ssh {
                    id: "default".into(),
                    required: false,
                },
            ),
            mount("/run/secrets/tok", secret(Some("TOKEN"), true)),
            mount("", secret(Some("T2"), false)),
            mount(
                "/b",
                RunMountKind::Bind {
                    from: CopyFrom::Stage(0),
                    source: "/out".into(),
                    rw: false,
                },
            ),
        ];
        let binds = [[1u8; 32], [2u8; 32]];
        let env = ["PATH=/bin".to_string(), "SOURCE_DATE_EPOCH=9".to_string()];
        let mut seen = std::collections::HashSet::new();
        for (run, network, binds) in [
            (step(vec![], vec![]), Network::None, &binds[..0]),
            (step(vec![], vec![]), Network::Host, &binds[..0]),
            (
                step(vec![cache(false, None), cache(true, Some(0o755))], vec![]),
                Network::None,
                &binds[..0],
            ),
            (
                step(vec![cache(false, None)], all),
                Network::None,
                &binds[..],
            ),
        ] {
            let i = RunInputs {
                parent: &[5; 32],
                env: &env,
                network,
                binds,
                form: LayerForm {
                    compression: "gzip-test",
                    source_date_epoch: 9,
                },
            };
            let k = super::run(&run, &i);
            assert_eq!(k, run_key_as_before(&run, &i), "{run:?}");
            assert!(seen.insert(k), "each case is its own key");
        }
    }
}
