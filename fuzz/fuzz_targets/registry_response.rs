//! What a registry (or a shared cache, or a lock file) sends strata: manifests and indexes with
//! any `Content-Type`, platform selection, `WWW-Authenticate` challenges, image references,
//! cache artifacts and their records, `strata.lock`. The first byte picks the parser; the rest
//! is the input. Never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::image::Platform;
use strata_engine::registry::{auth, manifest, Reference};
use strata_engine::{lock, remote_cache};

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 6 {
        0 => {
            let ct = CONTENT_TYPES[(which as usize / 6) % CONTENT_TYPES.len()];
            if let Ok(manifest::Parsed::Index { manifests, .. }) = manifest::parse(rest, ct) {
                for d in &manifests {
                    let _ = d.digest();
                }
                let _ = manifest::select(&manifests, &Platform::host());
            }
        }
        1 => {
            let _ = auth::parse_challenge(&text);
        }
        2 => {
            if let Ok(r) = Reference::parse(&text) {
                // What parses must print back to something that parses the same way.
                let again = Reference::parse(&r.to_string()).expect("a reference re-parses");
                assert_eq!(again.to_string(), r.to_string());
            }
        }
        3 => {
            if let Ok((d, _)) = remote_cache::records_descriptor(rest, "fuzz") {
                let _ = d.to_string();
            }
        }
        4 => {
            if let Ok(r) = remote_cache::CacheRecords::from_json(rest, "fuzz") {
                // Records that parse render canonically and parse back to the same.
                let j = r.to_json();
                let back = remote_cache::CacheRecords::from_json(&j, "fuzz").unwrap();
                assert_eq!(back.to_json(), j);
            }
        }
        _ => {
            if let Ok(l) = lock::Lockfile::parse(&text, std::path::Path::new("strata.lock")) {
                let again = lock::Lockfile::parse(&l.render(), std::path::Path::new("x")).unwrap();
                assert_eq!(again, l);
            }
        }
    }
});
