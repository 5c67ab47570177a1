//! BuildKit word expansion (`$VAR`, `${VAR:-w}`, quotes, escapes): never a panic, with either
//! escape character and with variables whose values contain quotes, `$` and whitespace. The
//! limits hold whatever the input (issue 18): nesting deeper than `MAX_EXPANSION_DEPTH` is an
//! error, not a stack overflow, and no result exceeds `MAX_EXPANSION_BYTES` — `BIG` is a value
//! of a third of it, so three references (or one `${BIG//?/xx}`) reach the limit.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_engine::frontend::expand::{expand_word, expand_words, MAX_EXPANSION_BYTES};

fuzz_target!(|data: &[u8]| {
    static BIG: OnceLock<String> = OnceLock::new();
    let big = BIG.get_or_init(|| "ab c".repeat(MAX_EXPANSION_BYTES / 12));
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
            "BIG" => Some(big.clone()),
            _ => None,
        }
    };
    if let Ok(s) = expand_word(&text, escape, &lookup) {
        assert!(s.len() <= MAX_EXPANSION_BYTES, "{} bytes", s.len());
    }
    if let Ok(words) = expand_words(&text, escape, &lookup) {
        let n: usize = words.iter().map(String::len).sum();
        assert!(n <= MAX_EXPANSION_BYTES, "{n} bytes");
    }
});
