//! RUN steps and what they mount: repeated layers under the overlay, mount stubs kept out of
//! layers, the build's network, bind / tmpfs / secret / cache mounts.

use std::fs;
use std::path::Path;

use crate::support::{build, busybox_context, layer_listing, on_store, text, unpack, write};

/// An OCI output dir and the rootfs umoci unpacks from it.
fn built_tree(
    store: &Path,
    ctx: &Path,
    out: &Path,
    extra: &[&str],
) -> (crate::support::Run, std::path::PathBuf) {
    let oci = out.join("oci");
    let mut args = vec![
        "-t".to_string(),
        "t:1".to_string(),
        "--output".to_string(),
        format!("type=oci,dest={}", oci.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = build(store, ctx, &a).ok();
    let bundle = out.join("b");
    unpack(&oci, "1", &bundle);
    (r, bundle.join("rootfs"))
}

/// Overlay refuses a lower dir given twice (`ELOOP`): three `RUN true` make three identical
/// empty layers, two identical COPYs two identical non-empty ones. Every such sequence mounts.
#[test]
fn repeated_and_empty_layers_mount_under_a_run() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("a.txt"), "a\n");
    busybox_context(
        ctx.path(),
        "FROM base\nRUN true\nRUN true\nRUN true\nRUN true\nCOPY a.txt /a.txt\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b\nRUN true\nCOPY a.txt /a.txt\nRUN true\nRUN cat /a.txt /b > /c\n",
    );
    let out = tempfile::tempdir().unwrap();
    let (_, root) = built_tree(store.path(), ctx.path(), out.path(), &[]);
    assert_eq!(fs::read_to_string(root.join("c")).unwrap(), "a\na\n");
}

/// Mount points the sandbox had to make for a step's mounts never reach its layer (BuildKit
/// removes them), for every mount type; a target that already existed stays as it was.
#[test]
fn mount_stubs_never_reach_the_layer() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("tok"), "s3cr3t-token\n");
    busybox_context(
        ctx.path(),
        "FROM base\nRUN --mount=type=cache,target=/test true\nRUN --mount=type=cache,target=/deep/er/cache --mount=type=tmpfs,target=/t/tmp --mount=type=bind,target=/mnt/ctx --mount=type=secret,id=tok touch /made\nRUN --mount=type=cache,target=/tmp touch /made2\n",
    );
    let out = tempfile::tempdir().unwrap();
    let tok = ctx.path().join("tok");
    let (_, root) = built_tree(
        store.path(),
        ctx.path(),
        out.path(),
        &["--secret", &format!("id=tok,src={}", tok.display())],
    );
    for gone in ["test", "deep", "t", "mnt", "run"] {
        assert!(!root.join(gone).exists(), "/{gone} left in the image");
    }
    assert!(root.join("made").exists() && root.join("made2").exists());
    use std::os::unix::fs::PermissionsExt;
    let m = fs::metadata(root.join("tmp")).unwrap().permissions().mode();
    assert_eq!(m & 0o7777, 0o1777, "an existing target keeps its mode");
    let oci = out.path().join("oci");
    let first = layer_listing(&oci, "1", 2);
    assert!(!first.contains("test"), "{first}");
    let second = layer_listing(&oci, "1", 1);
    assert_eq!(second.lines().count(), 1, "only /made: {second}");
    assert!(layer_listing(&oci, "1", 0).lines().count() == 1);
}

/// `from=STAGE,source=PATH` seeds a new cache with that stage's PATH (BuildKit, buildah).
#[test]
fn cache_mount_from_a_stage_starts_with_its_source() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base AS seed\nRUN mkdir -p /data/sub && echo seeded > /data/sub/f\nFROM base\nRUN --mount=type=cache,target=/c,id=seeded,from=seed,source=/data cat /c/sub/f > /got && echo more > /c/more\nRUN --mount=type=cache,target=/c2,id=seeded cat /c2/more /c2/sub/f > /got2\nRUN --mount=type=cache,target=/c3,id=seeded,ro cat /c3/more > /got3 && if touch /c3/x 2>/dev/null; then echo rw; else echo ro; fi >> /got3\n",
    );
    let out = tempfile::tempdir().unwrap();
    let (_, root) = built_tree(store.path(), ctx.path(), out.path(), &[]);
    assert_eq!(fs::read_to_string(root.join("got")).unwrap(), "seeded\n");
    assert_eq!(
        fs::read_to_string(root.join("got2")).unwrap(),
        "more\nseeded\n",
        "the same cache, kept between steps"
    );
    assert_eq!(
        fs::read_to_string(root.join("got3")).unwrap(),
        "more\nro\n",
        "ro"
    );
    for gone in ["c", "c2", "c3", "data"] {
        assert!(!root.join(gone).exists(), "/{gone}");
    }
}

/// `strata gc --keep-storage 0` collects a cache mount a finished build used (and says so);
/// the next build still works, with an empty cache.
#[test]
fn gc_collects_cache_mounts_and_the_next_build_starts_them_empty() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nRUN --mount=type=cache,target=/c,id=gc-me ls /c > /seen && echo x > /c/mark\n",
    );
    let area = store.path().join("cache-mounts-v1");
    let out = tempfile::tempdir().unwrap();
    let (_, root) = built_tree(store.path(), ctx.path(), out.path(), &[]);
    assert_eq!(fs::read_to_string(root.join("seen")).unwrap(), "");
    let caches: Vec<_> = fs::read_dir(&area)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    assert!(caches[0].join("data/mark").is_file());
    assert!(caches[0].join("last-use").is_file());

    let gc = on_store(store.path(), &["gc", "--keep-storage", "0"]);
    let said = text(&gc.stderr);
    assert!(gc.status.success(), "{said}");
    assert!(said.contains(", 1 cache mounts ("), "{said}");
    assert_eq!(fs::read_dir(&area).unwrap().count(), 0, "{said}");

    // A new RUN on the same cache (the first one is still cached: its image is tagged) runs
    // and finds the cache empty (it would list `mark` had gc left it).
    busybox_context(
        ctx.path(),
        "FROM base\nRUN --mount=type=cache,target=/c,id=gc-me ls /c > /seen && echo x > /c/mark\nRUN --mount=type=cache,target=/c,id=gc-me ls /c > /seen2 && echo y > /c/again\n",
    );
    let out = tempfile::tempdir().unwrap();
    let (_, root) = built_tree(store.path(), ctx.path(), out.path(), &[]);
    assert_eq!(fs::read_to_string(root.join("seen2")).unwrap(), "");
    assert!(caches[0].join("data/again").is_file(), "made again");
}

/// `strata build --network host` is the default of RUN steps without `--network`; a RUN that
/// fails without network ends its error with both ways to allow it.
#[test]
fn build_network_flag_and_the_hint_of_a_run_without_network() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nRUN cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort > /netdevs\nRUN --network=none cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /netdevs-none\n",
    );
    let out = tempfile::tempdir().unwrap();
    let (_, root) = built_tree(store.path(), ctx.path(), out.path(), &[]);
    assert_eq!(fs::read_to_string(root.join("netdevs")).unwrap(), "lo\n");
    let host_devs: Vec<String> = fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .collect();
    let out2 = tempfile::tempdir().unwrap();
    let (r, root) = built_tree(
        store.path(),
        ctx.path(),
        out2.path(),
        &["--network", "host"],
    );
    let mut want = host_devs.clone();
    want.sort();
    assert_eq!(
        fs::read_to_string(root.join("netdevs")).unwrap(),
        want.join("\n") + "\n",
        "the host's network"
    );
    assert_eq!(
        fs::read_to_string(root.join("netdevs-none")).unwrap(),
        "lo\n",
        "a step's own --network wins"
    );
    let ex = r.executed();
    assert!(
        ex.len() > 2 && ex.iter().all(|e| e.starts_with("RUN")),
        "the network is part of the key: no RUN made without network is reused: {ex:?}"
    );
    let r = build(store.path(), ctx.path(), &["--network", "bridge"]).fails();
    assert!(
        r.stderr().contains("--network `bridge`") && r.stderr().contains("hint:"),
        "{}",
        r.stderr()
    );

    // A failing RUN without network says how to allow it; with network it does not.
    write(
        &ctx.path().join("Dockerfile"),
        fs::read_to_string(ctx.path().join("Dockerfile"))
            .unwrap()
            .replace("RUN --network=none", "RUN exit 7\nRUN --network=none"),
    );
    let r = build(store.path(), ctx.path(), &[]).fails();
    let err = r.stderr();
    let last = err.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("hint:")
            && last.contains("`RUN --network=host`")
            && last.contains("`strata build --network host`"),
        "{err}"
    );
    let r = build(store.path(), ctx.path(), &["--network", "host"]).fails();
    assert!(!r.stderr().contains("--network=host`"), "{}", r.stderr());
}

/// Bind mounts of the context (with `.dockerignore`), of a stage (a directory, `rw`, and a
/// file), tmpfs and secret mounts: what they show is seen by the command and never reaches a
/// layer or the output; the context's content enters the key, the secret's never does.
#[test]
fn bind_tmpfs_and_secret_mounts() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("dir/a.txt"), "from the context\n");
    write(&ctx.path().join("dir/ignored"), "no\n");
    write(&ctx.path().join(".dockerignore"), "dir/ignored\n");
    let secret_dir = tempfile::tempdir().unwrap();
    let tok = secret_dir.path().join("tok");
    write(&tok, "s3cr3t-value-1");
    busybox_context(
        ctx.path(),
        "FROM base AS stage\nRUN mkdir /out && echo fromstage > /out/s.txt\nFROM base\n\
         RUN --mount=type=bind,source=dir,target=/src cat /src/a.txt > /from-ctx && ls /src > /ctx-list\n\
         RUN --mount=type=bind,from=stage,source=/out,target=/o,rw echo x > /o/new && cat /o/s.txt > /from-stage\n\
         RUN --mount=type=bind,from=stage,source=/out/s.txt,target=/f.txt cat /f.txt > /file-bind\n\
         RUN --mount=type=bind,target=/ro if touch /ro/x 2>/dev/null; then echo writable; else echo read-only; fi > /ro-result\n\
         RUN --mount=type=tmpfs,target=/scratch,size=1m grep ' /scratch ' /proc/mounts | cut -d' ' -f3 > /tmpfs-type && touch /scratch/x\n\
         RUN --mount=type=secret,id=tok,mode=0440,uid=1000 test \"x$(cut -c7- /run/secrets/tok)\" = x-value-1 && stat -c '%a %u' /run/secrets/tok > /secret-meta\n\
         RUN --mount=type=secret,id=tok,env=TOK test \"${TOK%-value-1}\" = s3cr3t && test ! -e /run/secrets/tok && env | grep -c value-1 > /env-count\n\
         RUN --mount=type=secret,id=absent ls /run/secrets 2>&1 > /optional; true\n",
    );
    let out = tempfile::tempdir().unwrap();
    let secret_arg = format!("id=tok,src={}", tok.display());
    let extra = ["--compression", "none", "--secret", &secret_arg];
    let (r, root) = built_tree(store.path(), ctx.path(), out.path(), &extra);
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("from-ctx"), "from the context\n");
    assert_eq!(read("ctx-list"), "a.txt\n", ".dockerignore applies");
    assert_eq!(read("from-stage"), "fromstage\n");
    assert_eq!(read("file-bind"), "fromstage\n");
    assert_eq!(read("ro-result"), "read-only\n");
    assert_eq!(read("tmpfs-type"), "tmpfs\n");
    assert_eq!(read("secret-meta"), "440 1000\n");
    assert_eq!(
        read("env-count"),
        "1\n",
        "env= puts the secret in the environment"
    );
    for gone in ["src", "o", "out", "f.txt", "ro", "scratch", "run"] {
        assert!(!root.join(gone).exists(), "/{gone} in the image");
    }
    // The secret is in no blob (uncompressed layers, config) and not in the output (the
    // Dockerfile above never spells it whole).
    for e in fs::read_dir(out.path().join("oci/blobs/sha256")).unwrap() {
        let bytes = fs::read(e.unwrap().path()).unwrap();
        assert!(!bytes.windows(14).any(|w| w == b"s3cr3t-value-1"));
    }
    assert!(!r.stderr().contains("s3cr3t-value"), "{}", r.stderr());

    // Another secret value, or an ignored file changed: nothing runs again. A file the bind
    // mount shows changed: its RUN (and what follows it), not the stage it came from.
    write(&tok, "s3cr3t-value-2");
    let again = build(store.path(), ctx.path(), &extra).ok();
    assert!(again.executed().is_empty(), "{:?}", again.executed());
    write(&tok, "s3cr3t-value-1");
    write(&ctx.path().join("dir/ignored"), "changed too\n");
    let again = build(store.path(), ctx.path(), &extra).ok();
    assert!(again.executed().is_empty(), "{:?}", again.executed());
    write(&ctx.path().join("dir/a.txt"), "changed\n");
    let again = build(store.path(), ctx.path(), &extra).ok();
    let ex = again.executed();
    assert!(ex[0].contains("source=dir"), "{ex:?}");
    assert!(!ex.iter().any(|e| e.contains("mkdir /out")), "{ex:?}");

    // A missing required secret fails before anything runs, naming the line, with a hint.
    let df = fs::read_to_string(ctx.path().join("Dockerfile")).unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        &(df + "RUN --mount=type=secret,id=nope,required true\n"),
    );
    let r = build(store.path(), ctx.path(), &extra).fails();
    let err = r.stderr();
    assert!(
        err.contains("Dockerfile:17")
            && err.contains("no secret `nope`")
            && err.contains("hint: pass it with `strata build --secret id=nope"),
        "{err}"
    );
    assert!(r.executed().is_empty());
}

/// `--ssh ID=SOCKET` + `RUN --mount=type=ssh`: the agent socket at
/// `/run/buildkit/ssh_agent.N`, `SSH_AUTH_SOCK` pointing to it, nothing of it in the layer.
#[test]
fn ssh_agent_socket_is_forwarded() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let sock = agent_dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    busybox_context(
        ctx.path(),
        "FROM base\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock-path\nRUN --mount=type=ssh,id=other ls /run > /optional 2>&1; true\n",
    );
    let out = tempfile::tempdir().unwrap();
    let arg = format!("default={}", sock.display());
    let (_, root) = built_tree(store.path(), ctx.path(), out.path(), &["--ssh", &arg]);
    assert_eq!(
        fs::read_to_string(root.join("sock-path")).unwrap(),
        "/run/buildkit/ssh_agent.0\n"
    );
    assert!(!root.join("run").exists());
    let r = build(store.path(), ctx.path(), &["--ssh", "default=/etc/passwd"]).fails();
    assert!(
        r.stderr().contains("is not a socket") && r.stderr().contains("hint:"),
        "{}",
        r.stderr()
    );
    let df = fs::read_to_string(ctx.path().join("Dockerfile")).unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        &(df + "RUN --mount=type=ssh,id=gh,required true\n"),
    );
    let r = build(store.path(), ctx.path(), &["--ssh", &arg]).fails();
    assert!(
        r.stderr().contains("no SSH agent `gh`")
            && r.stderr()
                .contains("hint: pass it with `strata build --ssh gh=SOCKET`"),
        "{}",
        r.stderr()
    );
}
