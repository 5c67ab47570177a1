//! COPY and ADD semantics end to end, as BuildKit gives them: the built image is unpacked by
//! umoci and its tree checked.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{build, write, Run};

/// A built and unpacked image.
struct Built {
    _dir: tempfile::TempDir,
    root: PathBuf,
    run: Run,
}

impl Built {
    fn meta(&self, p: &str) -> fs::Metadata {
        fs::symlink_metadata(self.root.join(p)).unwrap_or_else(|e| panic!("/{p}: {e}"))
    }
    fn mode(&self, p: &str) -> u32 {
        self.meta(p).mode() & 0o7777
    }
    fn owner(&self, p: &str) -> (u32, u32) {
        let m = self.meta(p);
        (m.uid(), m.gid())
    }
    fn read(&self, p: &str) -> String {
        fs::read_to_string(self.root.join(p)).unwrap_or_else(|e| panic!("/{p}: {e}"))
    }
    fn exists(&self, p: &str) -> bool {
        fs::symlink_metadata(self.root.join(p)).is_ok()
    }
}

/// Builds `ctx` (which holds its Dockerfile) into an OCI layout and unpacks it.
fn build_unpacked(ctx: &Path) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let oci = dir.path().join("oci");
    let run = build(
        &store,
        ctx,
        &[
            "-t",
            "t:1",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
        ],
    )
    .ok();
    let bundle = dir.path().join("bundle");
    crate::support::unpack(&oci, "1", &bundle);
    Built {
        root: bundle.join("rootfs"),
        _dir: dir,
        run,
    }
}

fn build_fails(ctx: &Path) -> Run {
    let store = tempfile::tempdir().unwrap();
    build(store.path(), ctx, &[]).fails()
}

/// A base whose /tmp is 1777 and /root 0700 (made by RUN in busybox, as images have them).
const BUSYBOX_BASE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\n\
    RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /tmp /root /home/app && \
    /bin/busybox chmod 1777 /tmp && /bin/busybox chmod 700 /root && \
    /bin/busybox chown 1000:1000 /home/app && /bin/busybox chmod 750 /home/app\"]\n";

/// `COPY a.txt /tmp` (and `/tmp/`, `/root/`) onto a base whose /tmp is 1777 and /root 0700
/// gave an image whose /tmp and /root were 0755 (every non-root process lost /tmp). An
/// existing destination keeps its mode and owner; directories the step creates get 0755.
#[test]
fn copy_into_an_existing_directory_keeps_its_mode_and_owner() {
    let ctx = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("busybox-static is installed by .ci/install-deps");
    write(&ctx.path().join("a.txt"), "a\n");
    write(&ctx.path().join("b.txt"), "b\n");
    write(
        &ctx.path().join("Dockerfile"),
        format!(
            "{BUSYBOX_BASE}FROM base\nCOPY a.txt /tmp\nCOPY b.txt /tmp/\nCOPY a.txt /root/\n\
             COPY --chown=1000:1000 b.txt /home/app/new/\nCOPY --link a.txt /linked/\n"
        ),
    );
    let b = build_unpacked(ctx.path());
    assert_eq!(b.mode("tmp"), 0o1777);
    assert_eq!(b.read("tmp/a.txt"), "a\n");
    assert_eq!(b.read("tmp/b.txt"), "b\n");
    assert_eq!(b.mode("root"), 0o700);
    assert_eq!(b.read("root/a.txt"), "a\n");
    assert_eq!(
        (b.mode("home/app"), b.owner("home/app")),
        (0o750, (1000, 1000))
    );
    assert_eq!(
        (b.mode("home/app/new"), b.owner("home/app/new")),
        (0o755, (1000, 1000)),
        "a directory the step creates: 0755, --chown's owner"
    );
    assert_eq!(b.owner("home/app/new/b.txt"), (1000, 1000));
    assert_eq!(b.mode("linked"), 0o755);
}

/// `COPY *.txt /dest` where the wildcard matches one file copies it to /dest (BuildKit,
/// buildah, the classic builder); it was refused at plan time. Several sources go into a
/// bare destination that is an existing directory (as BuildKit), and are refused otherwise.
#[test]
fn a_wildcard_matching_one_file_copies_it_to_a_bare_destination() {
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("only.txt"), "only\n");
    write(&ctx.path().join("x.md"), "x\n");
    write(&ctx.path().join("y.md"), "y\n");
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY *.txt /dest\nCOPY only.txt /dir/\nCOPY *.md /dir\n\
         COPY x.md y.md /dir2/\nCOPY x.md y.md /dir2\n",
    );
    let b = build_unpacked(ctx.path());
    assert!(b.meta("dest").is_file(), "/dest is the file itself");
    assert_eq!(b.read("dest"), "only\n");
    assert_eq!(b.read("dir/x.md"), "x\n");
    assert_eq!(b.read("dir/y.md"), "y\n");
    assert_eq!(b.read("dir2/y.md"), "y\n");

    for df in [
        "FROM scratch\nCOPY *.md /nope\n",
        "FROM scratch\nCOPY x.md y.md /nope\n",
        "FROM scratch\nCOPY only.txt /f\nCOPY x.md y.md /f\n",
    ] {
        write(&ctx.path().join("Dockerfile"), df);
        let r = build_fails(ctx.path());
        let err = r.stderr();
        let line = df.lines().count();
        for want in [
            format!("Dockerfile:{line}:"),
            "must be a directory ending in `/`".into(),
            "2 sources".into(),
            "hint: write `/".into(),
        ] {
            assert!(err.contains(&want), "{df:?}: {want:?} in:\n{err}");
        }
    }
}

/// `COPY --from=stage /bin/ls /test/` where /bin/ls is a symlink in that stage copied the
/// link, dangling in the new image: a source path is followed (in the stage's root) and
/// what it points to is copied under the source's name. Links inside a copied directory
/// stay links; a top-level symlink in the context is followed the same way.
#[test]
fn a_symlink_source_is_followed_and_named_by_the_source() {
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("bin/real"), "real\n");
    std::os::unix::fs::symlink("real", ctx.path().join("bin/ls")).unwrap();
    std::os::unix::fs::symlink("/bin/real", ctx.path().join("bin/abs")).unwrap();
    write(&ctx.path().join("lib/x/f"), "f\n");
    std::os::unix::fs::symlink("lib", ctx.path().join("libs")).unwrap();
    std::os::unix::fs::symlink("bin/real", ctx.path().join("top")).unwrap();
    // A stage whose /lib is a symlink to usr/lib: a wildcard below it is matched there.
    fs::create_dir(ctx.path().join("l")).unwrap();
    std::os::unix::fs::symlink("usr/lib", ctx.path().join("l/lib")).unwrap();
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch AS s\nCOPY bin/ /bin/\n\
         COPY bin/ /usr/lib/\nCOPY l/ /\n\
         FROM scratch\nCOPY --from=s /bin/ls /test/\nCOPY --from=s /bin/abs /test/abs2\n\
         COPY --from=s /lib/re* /merged-usr/\n\
         COPY --from=s /bin/l* /glob/\nCOPY --from=s /bin /whole/\nCOPY top /ctx/\n\
         COPY libs /libs-link-dir/\n",
    );
    let b = build_unpacked(ctx.path());
    // The context's `libs` is a symlink to a directory: its content is copied.
    assert_eq!(b.read("libs-link-dir/x/f"), "f\n");
    for p in [
        "test/ls",
        "test/abs2",
        "glob/ls",
        "ctx/top",
        "merged-usr/real",
    ] {
        assert!(b.meta(p).is_file(), "/{p} is a regular file");
        assert_eq!(b.read(p), "real\n", "/{p}");
    }
    assert!(
        b.meta("whole/ls").file_type().is_symlink(),
        "inside a tree: a link"
    );
    assert_eq!(
        fs::read_link(b.root.join("whole/abs")).unwrap(),
        Path::new("/bin/real")
    );
    assert!(!b.exists("test/real"));
}

/// `ADD local.tar /x/` reset the owners of the archive's entries: they keep the uid/gid the
/// archive records, unless `--chown` says otherwise.
#[test]
fn add_of_a_local_archive_keeps_the_owners_it_records() {
    let ctx = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("d/f"), "f\n");
    let st = Command::new("tar")
        .args(["--owner=1234", "--group=5678", "--numeric-owner", "-cf"])
        .arg(ctx.path().join("local.tar"))
        .arg("-C")
        .arg(src.path())
        .arg("d")
        .status()
        .unwrap();
    assert!(st.success());
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nADD local.tar /x/\nADD --chown=7:8 local.tar /y/\n",
    );
    let b = build_unpacked(ctx.path());
    assert_eq!(b.read("x/d/f"), "f\n");
    assert_eq!(b.owner("x/d"), (1234, 5678));
    assert_eq!(b.owner("x/d/f"), (1234, 5678));
    assert_eq!(b.owner("y/d/f"), (7, 8));
    assert_eq!(b.owner("y/d"), (7, 8));
}

/// `COPY --parents` keeps each source's path below the destination; a `/./` in the source
/// path keeps only what follows it (rsync's `--relative`).
#[test]
fn copy_parents_keeps_the_source_paths() {
    let ctx = tempfile::tempdir().unwrap();
    for p in [
        "x/a.txt",
        "y/a.txt",
        "x/y/b.txt",
        "x/y/c.txt",
        "x/y/z/d.txt",
        "x/y/z/e.md",
    ] {
        write(&ctx.path().join(p), p);
    }
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch AS s\nCOPY x/ /src/x/\n\
         FROM scratch\nCOPY ./x/a.txt ./y/a.txt /no_parents/\n\
         COPY --parents ./x/a.txt ./y/a.txt /parents/\n\
         COPY --parents ./x/./y/*.txt /pivot/\n\
         COPY --parents --chown=5:6 x/y /dirs/\n\
         COPY --from=s --parents /src/./x/y/b.txt /from/\n\
         COPY --parents x/**/*.txt /deep/\n",
    );
    let b = build_unpacked(ctx.path());
    assert_eq!(b.read("no_parents/a.txt"), "y/a.txt");
    assert_eq!(b.read("parents/x/a.txt"), "x/a.txt");
    assert_eq!(b.read("parents/y/a.txt"), "y/a.txt");
    assert_eq!(b.read("pivot/y/b.txt"), "x/y/b.txt");
    assert_eq!(b.read("pivot/y/c.txt"), "x/y/c.txt");
    assert!(!b.exists("pivot/x"));
    assert_eq!(b.read("dirs/x/y/z/d.txt"), "x/y/z/d.txt");
    assert_eq!(
        b.owner("dirs/x"),
        (5, 6),
        "kept parents are owned by --chown"
    );
    assert_eq!(b.owner("dirs/x/y"), (5, 6));
    assert_eq!(b.mode("dirs/x"), 0o755);
    assert_eq!(b.read("from/x/y/b.txt"), "x/y/b.txt");
    for p in ["x/a.txt", "x/y/b.txt", "x/y/c.txt", "x/y/z/d.txt"] {
        assert_eq!(b.read(&format!("deep/{p}")), p, "`**` matches at any depth");
    }
    assert!(!b.exists("deep/x/y/z/e.md"));
}

/// Symbolic `--chmod` (`u+x,g-w`, `a=rX`, as chmod(1) takes it) on COPY and ADD, and
/// `--chown`/`--exclude` on ADD.
#[test]
fn symbolic_chmod_and_add_flags() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("a.txt"), "a\n");
    write(&ctx.path().join("run.sh"), "#!/bin/sh\n");
    fs::set_permissions(ctx.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&ctx.path().join("d/f.txt"), "f\n");
    write(&ctx.path().join("d/skip.md"), "md\n");
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY --chmod=u+x,g-w a.txt /m/\nCOPY --chmod=a=rX d/ run.sh /rx/\n\
         COPY --chmod=go= a.txt /m/private\n\
         ADD --chmod=600 --chown=7:8 --exclude=*.md d/ /add/\n",
    );
    let b = build_unpacked(ctx.path());
    assert_eq!(b.mode("m/a.txt"), 0o744);
    assert_eq!(b.mode("rx/f.txt"), 0o444);
    assert_eq!(b.mode("rx/run.sh"), 0o555);
    assert_eq!(b.mode("m/private"), 0o600);
    assert_eq!(b.mode("add/f.txt"), 0o600);
    assert_eq!(b.owner("add/f.txt"), (7, 8));
    assert!(!b.exists("add/skip.md"));
    assert!(
        b.run.stderr().contains("COPY --chmod=u+x,g-w"),
        "{}",
        b.run.stderr()
    );

    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY --chmod=u+q a.txt /m/\n",
    );
    let err = build_fails(ctx.path()).stderr();
    for want in [
        "Dockerfile:2:",
        "invalid --chmod value `u+q`",
        "hint:",
        "u=rwX",
    ] {
        assert!(err.contains(want), "{want:?} in:\n{err}");
    }
}

/// A hard link inside a `--from` directory whose target lies outside it was dropped (the
/// target's content was never read): it is copied as a file.
#[test]
fn copy_from_a_tree_with_a_hard_link_to_outside_copies_its_content() {
    let ctx = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("busybox-static is installed by .ci/install-deps");
    write(
        &ctx.path().join("Dockerfile"),
        "FROM scratch AS s\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /a /b && \
         echo hl > /a/f && /bin/busybox ln /a/f /b/g\"]\n\
         FROM scratch\nCOPY --from=s /b /hb/\n",
    );
    let b = build_unpacked(ctx.path());
    assert!(b.meta("hb/g").is_file());
    assert_eq!(b.read("hb/g"), "hl\n");
}
