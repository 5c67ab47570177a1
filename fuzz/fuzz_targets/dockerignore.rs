//! The `.dockerignore` matcher: the patterns are the input up to the first NUL byte, the paths
//! to test are the NUL-separated rest. Parsing and matching never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::context::IgnoreMatcher;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let patterns = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let Ok(m) = IgnoreMatcher::parse(&patterns) else {
        return;
    };
    for p in parts.take(64) {
        let p = String::from_utf8_lossy(p);
        let _ = m.is_excluded(&p);
        let _ = m.may_reinclude_below(&p);
    }
});
