//! The Dockerfile frontend: any text either parses or yields a diagnostic, never a panic, and a
//! diagnostic always renders.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match strata_engine::frontend::parse("Dockerfile", &text) {
        Ok(df) => {
            let _ = format!("{df:?}");
        }
        Err(diag) => {
            let _ = diag.to_string();
        }
    }
});
