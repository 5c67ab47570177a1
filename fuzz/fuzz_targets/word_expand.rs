//! BuildKit word expansion (`$VAR`, `${VAR:-w}`, quotes, escapes): never a panic, with either
//! escape character and with variables whose values contain quotes, `$` and whitespace.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::frontend::expand::{expand_word, expand_words};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let escape = if first & 1 == 0 { '\\' } else { '`' };
    let text = String::from_utf8_lossy(rest);
    let lookup = |name: &str| -> Option<String> {
        match name {
            "A" => Some("a b".into()),
            "EMPTY" => Some(String::new()),
            "Q" => Some("'\"$A\\".into()),
            "SP" => Some("  ".into()),
            _ => None,
        }
    };
    let _ = expand_word(&text, escape, &lookup);
    let _ = expand_words(&text, escape, &lookup);
});
