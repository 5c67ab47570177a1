//! `--cache-to` / `--cache-from`: a second machine (an empty store) gets cache hits from an
//! exported cache, executes nothing that was cached, fetches only the layers it needs, and
//! produces the same digest; a damaged cache blob is refused and the step runs instead.

use std::fs;
use std::path::Path;

use crate::support::{done_counts, on_store, write};

/// (digest, executed, cached, stderr)
fn build(store: &Path, args: &[&str]) -> (String, usize, usize, String) {
    let mut a = vec!["build", "--progress", "plain"];
    a.extend_from_slice(args);
    let o = on_store(store, &a);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{stderr}");
    let (executed, cached) = done_counts(&stderr);
    (
        String::from_utf8(o.stdout).unwrap().trim().to_string(),
        executed,
        cached,
        stderr,
    )
}

fn blob_names(store: &Path) -> std::collections::BTreeSet<String> {
    fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

#[test]
fn an_empty_store_builds_from_an_exported_cache_without_executing() {
    let w = tempfile::tempdir().unwrap();
    let ctx = w.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    write(&ctx.join("app.txt"), "the app\n");
    write(&ctx.join("big.bin"), "x".repeat(200_000));
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch AS tools\nCOPY big.bin /big.bin\n\
         FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox echo built > /built\"]\n\
         ENV A=1\nCOPY app.txt /app/\nCOPY --from=tools /big.bin /big.bin\n",
    );
    let c = ctx.to_str().unwrap();
    let cache = w.path().join("cache");
    let to = format!("type=local,dest={}", cache.display());
    let from = format!("type=local,src={}", cache.display());

    let a = w.path().join("store-a");
    let (da, ea, _, _) = build(&a, &["--cache-to", &to, c]);
    assert!(ea >= 5, "a cold build executes its steps");
    assert!(cache.join("index.json").is_file());

    // Machine B: an empty store, the cache only.
    let b = w.path().join("store-b");
    let (db, eb, cb, stderr) = build(&b, &["--cache-from", &from, c]);
    assert_eq!(db, da, "same inputs, same digest");
    assert_eq!(eb, 0, "nothing cached is executed:\n{stderr}");
    assert!(cb >= 5);
    // B holds exactly what A holds: the layers of the steps it reused (fetched and verified),
    // the config and manifest it assembled — nothing else from the cache.
    assert_eq!(blob_names(&b), blob_names(&a));

    // A changed source on machine C: that COPY runs, the rest comes from the cache.
    let ctx2 = w.path().join("ctx2");
    fs::create_dir_all(&ctx2).unwrap();
    for f in ["busybox", "app.txt", "big.bin", "Dockerfile"] {
        fs::copy(ctx.join(f), ctx2.join(f)).unwrap();
    }
    write(&ctx2.join("app.txt"), "the app, v2\n");
    let c3 = w.path().join("store-c");
    let (_, ec, _, _) = build(&c3, &["--cache-from", &from, ctx2.to_str().unwrap()]);
    assert_eq!(
        ec, 2,
        "only the COPY of the changed file and the step after it run"
    );

    // A damaged blob in the cache: refused (digest check), the step runs, same digest.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(cache.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(cache.join("blobs/sha256").join(&md[7..])).unwrap())
            .unwrap();
    // Damage the biggest layer (big.bin's).
    let big = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap();
    let p = cache
        .join("blobs/sha256")
        .join(&big["digest"].as_str().unwrap()[7..]);
    let mut bytes = fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&p, bytes).unwrap();
    let d = w.path().join("store-d");
    let (dd, ed, _, stderr) = build(&d, &["--cache-from", &from, c]);
    assert_eq!(dd, da);
    assert!(ed >= 1, "the step whose layer was damaged runs");
    assert!(stderr.contains("could not be fetched"), "{stderr}");
    let fsck = on_store(&d, &["fsck"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );

    // Unknown things are refused clearly.
    let o = on_store(&b, &["build", "--cache-from", "type=s3,bucket=x", c]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown cache type"));
}
