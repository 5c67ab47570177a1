//! `registries.conf` as a user or a machine image writes it: any text is parsed (TOML, then
//! strata's rules for `[[registry]]` and `[[registry.mirror]]`), and what parses is asked where
//! a few references are pulled from. Never a panic; an error names a line inside the text.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_engine::registry::{Reference, RegistriesConf};

const REFS: [&str; 5] = [
    "debian:12",
    "docker.io/library/debian@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "127.0.0.1:5000/a/b:1",
    "r.example.com/x/y/z:tag",
    "example.com:5000/x:1",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut conf = RegistriesConf::default();
    match conf.add(Path::new("/fuzz/registries.conf"), text) {
        Ok(()) => {
            let _ = conf.insecure_hosts();
            for r in REFS {
                let r = Reference::parse(r).expect("the fixed references are valid");
                if let Ok(eps) = conf.endpoints(&r) {
                    assert!(!eps.is_empty(), "at least the location");
                    assert!(!eps.last().unwrap().mirror, "the location comes last");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
