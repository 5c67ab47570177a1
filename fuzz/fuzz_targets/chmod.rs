//! `COPY/ADD --chmod` values as a Dockerfile gives them: any text is parsed as an octal or a
//! symbolic mode (issue 17). Never a panic; what parses applies to every mode without leaving
//! the permission bits, and its key form parses back to the same change.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::plan::chmod::Chmod;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(chmod) = Chmod::parse(text) else {
        return;
    };
    let again = Chmod::parse(&chmod.key_form()).expect("the key form parses");
    assert_eq!(again, chmod, "the key form names the same change");
    for mode in [0, 0o644, 0o755, 0o700, 0o4755, 0o1777, 0o7777, 0o111] {
        for is_dir in [false, true] {
            let m = chmod.apply(mode, is_dir);
            assert_eq!(m & !0o7777, 0, "{text:?} on {mode:o} gave {m:o}");
            if let Chmod::Octal(o) = chmod {
                assert_eq!(m, o);
            }
        }
    }
});
