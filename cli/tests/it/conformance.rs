//! The conformance corpus: `testdata/conformance/<case>/`, one directory per behaviour taken
//! from BuildKit's documentation and frontend tests (format: docs/conformance.md).
//!
//! Every case is built by strata into an OCI layout and its expectations are checked twice:
//! on the tree strata's own reader gets by applying the layers in order (whiteouts included),
//! and on the rootfs and runtime config `umoci unpack` makes of the same layout. A case that
//! fails must be listed in `testdata/conformance/KNOWN_FAILURES` with a reason, and a listed
//! case that passes fails the test too: fixes make the list shrink, never go unnoticed.
//!
//! `CONFORMANCE_FILTER=substring` runs only the cases whose name contains it;
//! `CONFORMANCE_JOBS=N` sets how many cases build at once (default 4).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;
use strata_cache::Digest;

use crate::support::{strata, testdata, write};

/// Cases that name an OCI layout get the busybox base as `base/` in their context:
/// `FROM oci-layout://base`.
const BASE_REF: &str = "oci-layout://";

/// The busybox base, built once per run: a shell and its applets, `/tmp` 1777, `/root` 0700,
/// and the users root (0), http (33) and app (1000) with groups of the same ids.
fn build_base(work: &Path, store: &Path) -> PathBuf {
    let ctx = work.join("base-context");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox"))
        .expect("busybox-static is installed by .ci/install-deps");
    write(
        &ctx.join("Dockerfile"),
        r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/etc", "/tmp", "/root", "/home/app"]
RUN ["/bin/busybox", "--install", "-s"]
RUN printf 'root:x:0:0:root:/root:/bin/sh\nhttp:x:33:33:http:/srv/http:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' > /etc/passwd \
 && printf 'root:x:0:\nhttp:x:33:\napp:x:1000:\n' > /etc/group \
 && chmod 1777 /tmp && chmod 0700 /root && chown 1000:1000 /home/app
"#,
    );
    let layout = work.join("base");
    let out = strata()
        .arg("--store")
        .arg(store)
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "base:latest",
            "--output",
        ])
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the busybox base failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    layout
}

/// One checked path of `expect.tree`.
#[derive(Debug)]
struct Expect {
    line: usize,
    path: String,
    kind: String,
    mode: Option<u32>,
    owner: Option<(u64, u64)>,
    /// `sha256:HEX` of a file, target of a symlink, `[a,b]` children of a directory.
    content: Option<String>,
}

fn parse_tree(text: &str) -> Result<Vec<Expect>, String> {
    let mut v = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("expect.tree:{}: {why}: `{raw}`", i + 1);
        // A path with spaces is written as a JSON string.
        let (path, rest) = if line.starts_with('"') {
            let mut de = serde_json::Deserializer::from_str(line).into_iter::<String>();
            let p = de
                .next()
                .ok_or_else(|| bad("no path"))?
                .map_err(|e| bad(&e.to_string()))?;
            (p, &line[de.byte_offset()..])
        } else {
            let (p, r) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (p.to_string(), r)
        };
        let path = norm(&path);
        let mut it = rest.trim().splitn(4, char::is_whitespace).map(str::trim);
        let kind = it.next().ok_or_else(|| bad("no type"))?.to_string();
        if !["file", "dir", "symlink", "absent"].contains(&kind.as_str()) {
            return Err(bad("type must be file, dir, symlink or absent"));
        }
        fn field(f: Option<&str>) -> Option<&str> {
            f.filter(|s| !s.is_empty() && *s != "-")
        }
        let mode = match field(it.next()) {
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| bad("mode is octal"))?),
            None => None,
        };
        let owner = match field(it.next()) {
            Some(o) => {
                let (u, g) = o.split_once(':').ok_or_else(|| bad("owner is UID:GID"))?;
                Some((
                    u.parse().map_err(|_| bad("uid"))?,
                    g.parse().map_err(|_| bad("gid"))?,
                ))
            }
            None => None,
        };
        let content = match field(it.next().map(str::trim)) {
            Some(c) if c.starts_with('"') => {
                let s: String = serde_json::from_str(c).map_err(|e| bad(&e.to_string()))?;
                Some(Digest::of(s.as_bytes()).to_string())
            }
            Some(c) => Some(c.to_string()),
            None => None,
        };
        v.push(Expect {
            line: i + 1,
            path,
            kind,
            mode,
            owner,
            content,
        });
    }
    Ok(v)
}

/// Paths without leading `./` or `/` or trailing `/`; the root is ``.
fn norm(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// One path of a final tree, as either reader sees it.
#[derive(Debug, Clone)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    /// `sha256:…` of a file, the target of a symlink.
    content: Option<String>,
}

type Tree = BTreeMap<String, Node>;

fn children(tree: &Tree, dir: &str) -> Vec<String> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    tree.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| &k[prefix.len()..])
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .map(str::to_string)
        .collect()
}

fn remove_under(tree: &mut Tree, dir: &str) {
    let prefix = format!("{dir}/");
    let doomed: Vec<String> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        tree.remove(&k);
    }
}

/// strata's reading of the image: the layers applied in order, whiteouts and opaque markers
/// of a layer acting on the layers below it.
fn tree_from_layers(img: &strata_engine::diff::ImageSource) -> Result<Tree, String> {
    let mut tree = Tree::new();
    for layer in &img.layers {
        let Some(mut archive) = strata_engine::layer::open_archive(&layer.path)
            .map_err(|e| format!("layer {}: {e}", layer.path.display()))?
        else {
            // open_archive sees no tar header in an empty layer (only the end-of-archive
            // zeros, e.g. a RUN that wrote only to a cache mount); anything else is an error.
            let f = fs::File::open(&layer.path).map_err(|e| e.to_string())?;
            let mut r = strata_engine::layer::decompress_reader(Box::new(f), &layer.media_type)
                .map_err(|e| e.to_string())?;
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
            if bytes.iter().all(|&b| b == 0) {
                continue;
            }
            return Err(format!("layer {} is not a tar", layer.path.display()));
        };
        let mut added: Vec<(String, Node)> = Vec::new();
        let mut links: Vec<(String, String, Node)> = Vec::new();
        let mut whiteouts: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        for e in archive.entries().map_err(|e| e.to_string())? {
            let mut e = e.map_err(|e| e.to_string())?;
            let path = norm(&e.path().map_err(|e| e.to_string())?.to_string_lossy());
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == ".wh..wh..opq" {
                opaque.push(dir);
                continue;
            }
            if let Some(name) = base.strip_prefix(".wh.") {
                whiteouts.push(if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                });
                continue;
            }
            let h = e.header();
            let t = h.entry_type();
            let mut node = Node {
                kind: if t.is_dir() {
                    "dir"
                } else if t.is_symlink() {
                    "symlink"
                } else if t.is_file() || t.is_hard_link() {
                    "file"
                } else {
                    "other"
                },
                mode: h.mode().map_err(|e| e.to_string())? & 0o7777,
                uid: h.uid().map_err(|e| e.to_string())?,
                gid: h.gid().map_err(|e| e.to_string())?,
                content: None,
            };
            if t.is_symlink() || t.is_hard_link() {
                let target = e
                    .link_name()
                    .map_err(|e| e.to_string())?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if t.is_hard_link() {
                    links.push((path, norm(&target), node));
                    continue;
                }
                node.content = Some(target);
            } else if t.is_file() {
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                node.content = Some(Digest::of(&buf).to_string());
            }
            added.push((path, node));
        }
        for d in opaque {
            remove_under(&mut tree, &d);
        }
        for w in whiteouts {
            remove_under(&mut tree, &w);
            tree.remove(&w);
        }
        for (path, node) in added {
            if node.kind != "dir" {
                remove_under(&mut tree, &path);
            }
            tree.insert(path, node);
        }
        for (path, target, mut node) in links {
            let t = tree
                .get(&target)
                .ok_or_else(|| format!("hard link {path} to missing {target}"))?;
            node.content = t.content.clone();
            tree.insert(path, node);
        }
    }
    Ok(tree)
}

/// umoci's reading: the unpacked rootfs, only at the paths the case checks.
fn node_on_disk(root: &Path, path: &str) -> Option<Node> {
    let p = root.join(path);
    let m = fs::symlink_metadata(&p).ok()?;
    let ft = m.file_type();
    let (kind, content) = if ft.is_dir() {
        ("dir", None)
    } else if ft.is_symlink() {
        (
            "symlink",
            Some(fs::read_link(&p).ok()?.to_string_lossy().into_owned()),
        )
    } else if ft.is_file() {
        ("file", Some(Digest::of(&fs::read(&p).ok()?).to_string()))
    } else {
        ("other", None)
    };
    Some(Node {
        kind,
        mode: m.permissions().mode() & 0o7777,
        uid: m.uid().into(),
        gid: m.gid().into(),
        content,
    })
}

fn check_tree(
    who: &str,
    expects: &[Expect],
    get: &dyn Fn(&str) -> Option<Node>,
    list: &dyn Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let mut errs = Vec::new();
    for x in expects {
        let at = format!("{who}: expect.tree:{}: /{}", x.line, x.path);
        let node = get(&x.path);
        let Some(n) = node else {
            if x.kind != "absent" {
                errs.push(format!("{at}: missing, expected a {}", x.kind));
            }
            continue;
        };
        if x.kind == "absent" {
            errs.push(format!("{at}: exists (a {}), expected absent", n.kind));
            continue;
        }
        if n.kind != x.kind {
            errs.push(format!("{at}: is a {}, expected a {}", n.kind, x.kind));
            continue;
        }
        if let Some(m) = x.mode {
            if m != n.mode {
                errs.push(format!("{at}: mode {:04o}, expected {m:04o}", n.mode));
            }
        }
        if let Some((u, g)) = x.owner {
            if (u, g) != (n.uid, n.gid) {
                errs.push(format!("{at}: owner {}:{}, expected {u}:{g}", n.uid, n.gid));
            }
        }
        if let Some(c) = &x.content {
            if x.kind == "dir" {
                let want: BTreeSet<&str> = c
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                let got = list(&x.path);
                let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
                if want != got {
                    errs.push(format!("{at}: holds {got:?}, expected {want:?}"));
                }
            } else if n.content.as_deref() != Some(c.as_str()) {
                errs.push(format!(
                    "{at}: {} {}, expected {c}",
                    if x.kind == "symlink" {
                        "points to"
                    } else {
                        "content"
                    },
                    n.content.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    errs
}

/// `expect.config.json` is a subset of the image config: each top-level field listed and each
/// field listed under `config` must equal the image's exactly; `null` means absent.
fn check_config(expected: &Value, actual: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(top) = expected.as_object() else {
        return vec!["expect.config.json must be an object".into()];
    };
    let mut one = |name: String, want: &Value, got: Option<&Value>| {
        let got = got.unwrap_or(&Value::Null);
        if want != got {
            errs.push(format!("image {name}: {got}, expected {want}"));
        }
    };
    for (k, v) in top {
        if k == "config" {
            if let Some(inner) = v.as_object() {
                for (ck, cv) in inner {
                    one(format!("config.{ck}"), cv, actual["config"].get(ck));
                }
                continue;
            }
        }
        one(k.clone(), v, actual.get(k));
    }
    errs
}

/// The same expectations against umoci's runtime config, for the fields it carries: Env,
/// Entrypoint+Cmd (process.args), WorkingDir (cwd), a numeric User, Labels, ExposedPorts,
/// StopSignal and author (annotations, as the OCI image spec's conversion rules say).
fn check_umoci_config(expected: &Value, image: &Value, spec: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let want = &expected["config"];
    let img = &image["config"];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(env) = want.get("Env") {
        // umoci starts from the runtime-tools defaults and sets the image's variables over
        // them, in place when the name is already there.
        let mut merged: Vec<String> = vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "TERM=xterm".into(),
        ];
        for e in strs(env) {
            let name = e.split('=').next().unwrap_or("").to_string();
            match merged
                .iter_mut()
                .find(|m| m.split('=').next() == Some(name.as_str()))
            {
                Some(m) => *m = e,
                None => merged.push(e),
            }
        }
        let mut got = strs(&spec["process"]["env"]);
        // umoci adds HOME (the user's home from the rootfs's /etc/passwd) when the image sets
        // none: not part of the image config.
        if !merged.iter().any(|m| m.starts_with("HOME=")) {
            if let Some(i) = got.iter().rposition(|g| g.starts_with("HOME=")) {
                got.remove(i);
            }
        }
        if merged != got {
            errs.push(format!("umoci process.env {got:?}, expected {merged:?}"));
        }
    }
    if want.get("Cmd").is_some() || want.get("Entrypoint").is_some() {
        let pick = |k: &str| strs(want.get(k).unwrap_or(&img[k]));
        let mut args = pick("Entrypoint");
        args.extend(pick("Cmd"));
        let got = strs(&spec["process"]["args"]);
        if !args.is_empty() && args != got {
            errs.push(format!("umoci process.args {got:?}, expected {args:?}"));
        }
    }
    if let Some(wd) = want.get("WorkingDir") {
        let wd = wd.as_str().filter(|s| !s.is_empty()).unwrap_or("/");
        if spec["process"]["cwd"] != wd {
            errs.push(format!(
                "umoci process.cwd {}, expected {wd}",
                spec["process"]["cwd"]
            ));
        }
    }
    if let Some(user) = want.get("User").and_then(Value::as_str) {
        let (u, g) = user.split_once(':').unwrap_or((user, ""));
        if let Ok(u) = u.parse::<u64>() {
            if spec["process"]["user"]["uid"] != u {
                errs.push(format!(
                    "umoci process.user.uid {}, expected {u}",
                    spec["process"]["user"]["uid"]
                ));
            }
            if let Ok(g) = g.parse::<u64>() {
                if spec["process"]["user"]["gid"] != g {
                    errs.push(format!(
                        "umoci process.user.gid {}, expected {g}",
                        spec["process"]["user"]["gid"]
                    ));
                }
            }
        }
    }
    let ann = &spec["annotations"];
    if let Some(labels) = want.get("Labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if &ann[k] != v {
                errs.push(format!("umoci annotation {k}: {}, expected {v}", ann[k]));
            }
        }
    }
    if let Some(ports) = want.get("ExposedPorts").and_then(Value::as_object) {
        let mut keys: Vec<&String> = ports.keys().collect();
        keys.sort();
        let joined = keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let got = &ann["org.opencontainers.image.exposedPorts"];
        if got != &Value::String(joined.clone()) {
            errs.push(format!(
                "umoci annotation exposedPorts: {got}, expected {joined:?}"
            ));
        }
    }
    if let Some(author) = expected.get("author") {
        let got = &ann["org.opencontainers.image.author"];
        if got != author {
            errs.push(format!("umoci annotation author: {got}, expected {author}"));
        }
    }
    if let Some(sig) = want.get("StopSignal").and_then(Value::as_str) {
        let got = &ann["org.opencontainers.image.stopSignal"];
        if got != sig {
            errs.push(format!(
                "umoci annotation stopSignal: {got}, expected {sig:?}"
            ));
        }
    }
    errs
}

/// The part of a failed build's stderr an `expect.error` line must be found in: without the
/// Dockerfile excerpt and the command output (lines `N | …` and `  | …`), and with every
/// Dockerfile line of several words that is quoted in the message blanked out — otherwise an
/// error about something else would match text the case's own Dockerfile contains.
fn error_message(stderr: &str, dockerfile: &str) -> String {
    let mut msg: String = stderr
        .lines()
        .filter(|l| {
            !l.trim_start()
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start()
                .starts_with('|')
        })
        .collect::<Vec<_>>()
        .join("\n");
    for l in dockerfile.lines().map(str::trim) {
        if l.split_whitespace().count() > 1 {
            msg = msg.replace(l, "<source>");
        }
    }
    msg
}

/// Gives the copied context the modes a git checkout with umask 022 gives (git records only
/// the executable bit), so expectations do not depend on the umask of whoever runs the tests.
fn normalise_modes(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let mode = if m.is_dir() {
            normalise_modes(&e.path());
            0o755
        } else if m.is_file() {
            if m.permissions().mode() & 0o100 != 0 {
                0o755
            } else {
                0o644
            }
        } else {
            continue;
        };
        fs::set_permissions(e.path(), fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Builds one case and checks it; `Err` carries every mismatch found.
fn run_case(case: &Path, name: &str, base: &Path, store: &Path, work: &Path) -> Result<(), String> {
    let tmp = tempfile::tempdir_in(work).map_err(|e| e.to_string())?;
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    if case.join("context").is_dir() {
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", case.join("context").display()))
            .arg(&ctx)
            .status()
            .unwrap();
        assert!(st.success(), "copy the context of {name}");
    }
    normalise_modes(&ctx);
    let dockerfile =
        fs::read_to_string(case.join("Dockerfile")).map_err(|e| format!("no Dockerfile: {e}"))?;
    fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
    if dockerfile.contains(BASE_REF) {
        // The base layout must be inside the context (strata confines oci-layout:// there);
        // hard links keep that cheap, and `.dockerignore` keeps it out of `COPY .`.
        let st = Command::new("cp")
            .arg("-al")
            .arg(base)
            .arg(ctx.join("base"))
            .status()
            .unwrap();
        assert!(st.success(), "link the base into {name}");
        let ign = ctx.join(".dockerignore");
        let mut text = fs::read_to_string(&ign).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("base\n");
        fs::write(&ign, text).unwrap();
    }
    let args: Vec<String> = fs::read_to_string(case.join("build.args"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let out = tmp.path().join("out");
    let o = strata()
        .arg("--store")
        .arg(store)
        .args(["build", "--progress", "plain", "-t"])
        .arg(format!("conformance:{name}"))
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .args(&args)
        .arg(&ctx)
        .current_dir(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let tail = |s: &str| -> String {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n    ")
    };
    if let Ok(want) = fs::read_to_string(case.join("expect.error")) {
        if o.status.success() {
            return Err(format!("built, but expected an error containing {want:?}"));
        }
        let message = error_message(&stderr, &dockerfile);
        let missing: Vec<&str> = want
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !message.contains(l))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "failed without {missing:?} in its error:\n    {}",
                tail(&stderr)
            ));
        }
        return Ok(());
    }
    if !o.status.success() {
        return Err(format!("build failed:\n    {}", tail(&stderr)));
    }

    let expects = match fs::read_to_string(case.join("expect.tree")) {
        Ok(t) => parse_tree(&t)?,
        Err(_) => Vec::new(),
    };
    let config: Option<Value> = match fs::read(case.join("expect.config.json")) {
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| format!("expect.config.json: {e}"))?),
        Err(_) => None,
    };
    if expects.is_empty() && config.is_none() {
        return Err("the case checks nothing: add expect.tree or expect.config.json".into());
    }
    let mut errs = Vec::new();

    // 1. strata's own reader.
    let img = strata_engine::diff::load_image(&format!("oci:{}:{name}", out.display()))
        .map_err(|e| format!("load the output: {e}"))?;
    let tree = tree_from_layers(&img)?;
    errs.extend(check_tree(
        "strata",
        &expects,
        &|p| tree.get(p).cloned(),
        &|p| children(&tree, p),
    ));
    if let Some(c) = &config {
        errs.extend(check_config(c, &img.config));
    }

    // 2. umoci.
    let bundle = tmp.path().join("bundle");
    let u = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{name}", out.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    if !u.status.success() {
        errs.push(format!(
            "umoci unpack failed: {}",
            String::from_utf8_lossy(&u.stderr).trim()
        ));
    } else {
        let root = bundle.join("rootfs");
        errs.extend(check_tree(
            "umoci",
            &expects,
            &|p| node_on_disk(&root, p),
            &|p| {
                fs::read_dir(root.join(p))
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            },
        ));
        if let Some(c) = &config {
            let spec: Value =
                serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
            errs.extend(check_umoci_config(c, &img.config, &spec));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n    "))
    }
}

/// `KNOWN_FAILURES`: `case-name  reason`, one a line; `#` comments.
fn known_failures(root: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(root.join("KNOWN_FAILURES"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((n, r)) => (n.to_string(), r.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

#[test]
fn conformance_corpus() {
    let root = testdata("conformance");
    let filter = std::env::var("CONFORMANCE_FILTER").unwrap_or_default();
    let jobs: usize = std::env::var("CONFORMANCE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(4)
        .max(1);
    let mut all: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    all.sort();
    let known = known_failures(&root);
    let stale: Vec<&String> = known.keys().filter(|k| !all.contains(k)).collect();
    assert!(
        stale.is_empty(),
        "KNOWN_FAILURES names cases that do not exist: {stale:?}"
    );
    let cases: Vec<&String> = all.iter().filter(|n| n.contains(&filter)).collect();
    assert!(!cases.is_empty(), "no case matches {filter:?}");

    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let started = Instant::now();
    let base = build_base(work.path(), &store);

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, Result<(), String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(cases.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(name) = cases.get(i) else { break };
                let r = run_case(&root.join(name), name, &base, &store, work.path());
                results.lock().unwrap().push((name.to_string(), r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));

    let mut unexpected = Vec::new();
    let mut fixed = Vec::new();
    let mut pass = 0;
    for (name, r) in &results {
        match (r, known.get(name)) {
            (Ok(()), None) => pass += 1,
            (Ok(()), Some(_)) => {
                pass += 1;
                fixed.push(name.clone());
            }
            (Err(e), Some(reason)) => {
                eprintln!("known failure {name} ({reason}):\n    {e}");
            }
            (Err(e), None) => {
                eprintln!("FAIL {name}:\n    {e}");
                unexpected.push(name.clone());
            }
        }
    }
    let total = results.len();
    println!(
        "conformance: {pass}/{total} pass ({:.1}%), {} known failures, in {:.1}s",
        100.0 * pass as f64 / total as f64,
        total - pass - unexpected.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "conformance: {pass}/{total} pass ({:.1}%)",
        100.0 * pass as f64 / total as f64
    );
    assert!(
        unexpected.is_empty(),
        "cases failed that KNOWN_FAILURES does not list (see above): {unexpected:?}"
    );
    assert!(
        fixed.is_empty(),
        "cases listed in testdata/conformance/KNOWN_FAILURES now pass; remove them from it: {fixed:?}"
    );
}

#[test]
fn conformance_error_match_ignores_the_dockerfile_excerpt() {
    let dockerfile = "FROM scratch\nRUN --mount=type=bind,target=/ctx touch /ctx/new\n";
    // Refused for another reason: the excerpt quotes the expected text, which must not count.
    let refused = "error: unsupported mount\n --> Dockerfile:2:5\n  |\n2 | RUN --mount=type=bind,target=/ctx touch /ctx/new\n  |     ^^^^^^^\nhint: only cache mounts\n";
    assert!(!error_message(refused, dockerfile).contains("touch /ctx/new"));
    // The right failure names the command in its own words.
    let failed = "error: Dockerfile:2: stage 0, step 1 (`RUN --mount=type=bind,target=/ctx touch /ctx/new`): RUN failed: `touch /ctx/new` exited with code 1\n  | touch: /ctx/new: Read-only file system\n";
    let m = error_message(failed, dockerfile);
    assert!(m.contains("`touch /ctx/new` exited with code 1"), "{m}");
    assert!(
        !m.contains("Read-only"),
        "command output is not the message: {m}"
    );
}

#[test]
fn conformance_tree_lines_parse() {
    let t = parse_tree(
        "# comment\n/dest dir 0755 0:0 [a.txt,b.txt]\n\"/d/a b.txt\" file - 7:8 \"x\\n\"\n/l symlink - - ../t\n/gone absent\n",
    )
    .unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(
        (t[0].path.as_str(), t[0].mode, t[0].owner),
        ("dest", Some(0o755), Some((0, 0)))
    );
    assert_eq!(t[0].content.as_deref(), Some("[a.txt,b.txt]"));
    assert_eq!(
        (t[1].path.as_str(), t[1].mode, t[1].owner),
        ("d/a b.txt", None, Some((7, 8)))
    );
    assert_eq!(t[1].content, Some(Digest::of(b"x\n").to_string()));
    assert_eq!(t[2].content.as_deref(), Some("../t"));
    assert_eq!(t[3].kind, "absent");
    assert!(parse_tree("/x blob").is_err(), "unknown types are refused");
}
