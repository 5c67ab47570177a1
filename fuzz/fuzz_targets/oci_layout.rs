//! OCI layout reading (`index.json`, nested indexes, manifests, configs: `image::layout::load`).
//!
//! Input: `index.json`, then `\n--\n`, the manifest, `\n--\n`, the config. So that the fuzzer
//! gets past the digest checks, `MANIFEST_DIGEST`/`MANIFEST_SIZE` in the index and
//! `CONFIG_DIGEST`/`CONFIG_SIZE` in the manifest are replaced by the real digest and size of the
//! manifest and config blobs, which are stored under those digests. Never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};
use strata_engine::image::{layout, Platform};

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn split3(data: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let sep = b"\n--\n";
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 2 {
        match rest.windows(sep.len()).position(|w| w == sep) {
            Some(i) => {
                parts.push(rest[..i].to_vec());
                rest = &rest[i + sep.len()..];
            }
            None => break,
        }
    }
    parts.push(rest.to_vec());
    parts.resize(3, Vec::new());
    let mut it = parts.into_iter();
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

fn replace(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    String::from_utf8_lossy(data).replace(from, to).into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let (index, manifest, config) = split3(data);
    let dir = tempfile::tempdir().expect("temp dir");
    let layout_dir = dir.path().join("img");
    let blobs = layout_dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("create layout");
    let manifest = replace(
        &manifest,
        "CONFIG_DIGEST",
        &format!("sha256:{}", hex(&config)),
    );
    let manifest = replace(&manifest, "CONFIG_SIZE", &config.len().to_string());
    let index = replace(
        &index,
        "MANIFEST_DIGEST",
        &format!("sha256:{}", hex(&manifest)),
    );
    let index = replace(&index, "MANIFEST_SIZE", &manifest.len().to_string());
    std::fs::write(blobs.join(hex(&config)), &config).expect("write config");
    std::fs::write(blobs.join(hex(&manifest)), &manifest).expect("write manifest");
    std::fs::write(layout_dir.join("index.json"), &index).expect("write index");
    std::fs::write(
        layout_dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let platform = Platform::host();
    for spec in ["img", "img:latest", "img:v1"] {
        let _ = layout::load(spec, dir.path(), &platform);
    }
    let _ = layout::parse_layout_ref(&String::from_utf8_lossy(&index[..index.len().min(200)]));
});
