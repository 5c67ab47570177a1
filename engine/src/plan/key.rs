//! Cache keys: blake3 over an explicit, versioned, canonical byte encoding.
//!
//! Never `std::hash::Hash` (not stable across Rust versions or platforms). Every field is
//! written with a tag and a length prefix, so two different inputs can never encode to the
//! same bytes. See `docs/cache-keys.md` for the list of inputs of every step kind.

/// Version of the key encoding. Bump it (and update `docs/cache-keys.md` and the golden-digest
/// test in `cli/tests`) whenever what goes into a key, or how it is encoded, changes.
pub const KEY_VERSION: u32 = 3;

/// A 32-byte step key.
pub type Key = [u8; 32];

/// Builds a key from tagged, length-prefixed fields.
pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    /// Starts a key for a given domain (`"copy"`, `"config"`, `"base"`, …).
    pub fn new(domain: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"strata-key");
        h.update(&KEY_VERSION.to_le_bytes());
        let mut k = KeyHasher(h);
        k.str("domain", domain);
        k
    }

    pub fn bytes(&mut self, tag: &str, value: &[u8]) -> &mut Self {
        self.0.update(&(tag.len() as u32).to_le_bytes());
        self.0.update(tag.as_bytes());
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    pub fn str(&mut self, tag: &str, value: &str) -> &mut Self {
        self.bytes(tag, value.as_bytes())
    }

    pub fn u64(&mut self, tag: &str, value: u64) -> &mut Self {
        self.bytes(tag, &value.to_le_bytes())
    }

    pub fn opt_str(&mut self, tag: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.bytes(tag, &[&[1u8][..], v.as_bytes()].concat()),
            None => self.bytes(tag, &[0u8]),
        }
    }

    pub fn strs(&mut self, tag: &str, values: &[String]) -> &mut Self {
        self.u64(tag, values.len() as u64);
        for v in values {
            self.str(tag, v);
        }
        self
    }

    pub fn key(&mut self, tag: &str, key: &Key) -> &mut Self {
        self.bytes(tag, key)
    }

    pub fn finish(&self) -> Key {
        *self.0.finalize().as_bytes()
    }
}

/// Short printable form of a key for logs and JSON events.
pub fn short(key: &Key) -> String {
    hex::encode(&key[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_unambiguous() {
        let a = KeyHasher::new("t").str("a", "bc").str("b", "").finish();
        let b = KeyHasher::new("t").str("a", "b").str("b", "c").finish();
        assert_ne!(a, b);
        let c = KeyHasher::new("t").opt_str("x", None).finish();
        let d = KeyHasher::new("t").opt_str("x", Some("")).finish();
        assert_ne!(c, d);
        assert_ne!(KeyHasher::new("t").finish(), KeyHasher::new("u").finish());
    }

    #[test]
    fn key_is_stable() {
        // Golden value: changing the encoding must be deliberate (bump KEY_VERSION).
        let k = KeyHasher::new("golden")
            .str("path", "app/main.rs")
            .u64("mode", 0o644)
            .finish();
        assert_eq!(
            hex::encode(k),
            "aebe3e75dd98f7cf32ec6c8f67fab8dfc5792028a90b475b7f0faf2361a0f91b"
        );
    }
}
