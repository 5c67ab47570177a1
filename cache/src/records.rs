//! The records of build steps and their layers: plain data, shared by the index (which stores
//! them) and by what exports or imports them without an index (the shared step cache).
//!
//! - [`StepRecord`]: what a cache hit reads — the layer, nothing per file.
//! - [`ExplainRecord`]: what `--explain` compares when a later build of the same step misses:
//!   the named inputs of the key and, for a COPY/ADD, [`FileFacts`] — one short entry per
//!   source file. Stored apart from the step record (the index's `e/` records), so a cache hit
//!   never reads it: for a COPY of 55k files it is ~1.5 MB, where the named per-file inputs it
//!   replaces made the step record ~10 MB, decoded at every hit.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// The cached result of one build step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The layer the step produced; `None` for steps that only change the config.
    pub layer: Option<LayerRecord>,
    pub created_unix: u64,
}

/// A layer blob in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob as stored (compressed).
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub uncompressed_size: u64,
}

/// One named input of a step key, e.g. `("instruction", blake3)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainInput {
    pub name: String,
    pub value: [u8; 32],
}

/// What `--explain` needs of a step that ran: its key's named inputs (`parent`,
/// `parent-facts`, `instruction`, `state`) and the facts of each source file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainRecord {
    pub inputs: Vec<ExplainInput>,
    pub files: FileFacts,
}

impl ExplainRecord {
    /// The value of the named input `name`, if the step had one.
    pub fn input(&self, name: &str) -> Option<&[u8; 32]> {
        self.inputs
            .iter()
            .find(|i| i.name == name)
            .map(|i| &i.value)
    }
}

/// Per source file of a COPY/ADD: its path (as `--explain` shows it), a 64-bit fingerprint of
/// its type and content, and its normalised mode — sorted by path, one entry per path.
///
/// Encoded compactly (a file costs ~15–25 bytes instead of two named 32-byte inputs): each
/// entry is `varint(bytes shared with the previous path) varint(suffix length) suffix
/// content-fingerprint(8 bytes LE) varint(mode)`. The fingerprint only has to tell a change
/// apart for `--explain` (a collision would at worst leave a changed file unnamed); the key
/// itself uses full digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    count: u32,
    #[serde(with = "bytes")]
    encoded: Vec<u8>,
}

/// `Vec<u8>` as one serde byte string (bincode: length + raw bytes, not a sequence of u8s).
mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl FileFacts {
    /// How many files.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    /// The entries, in path order.
    pub fn cursor(&self) -> FileCursor<'_> {
        FileCursor {
            rest: &self.encoded,
            left: self.count,
            path: Vec::new(),
            content: 0,
            mode: 0,
        }
    }

    /// Checks that the encoding is well formed (for facts read from the index): every entry
    /// in bounds, paths UTF-8 and strictly increasing. A [`FileCursor`] over checked facts
    /// never fails.
    pub fn check(&self) -> Result<(), DecodeError> {
        let mut c = self.cursor();
        let mut prev: Option<Vec<u8>> = None;
        for _ in 0..self.count {
            c.step()?;
            if std::str::from_utf8(&c.path).is_err() {
                return Err(DecodeError::PathNotUtf8);
            }
            if prev.as_deref().is_some_and(|p| p >= c.path.as_slice()) {
                return Err(DecodeError::OutOfOrder);
            }
            prev = Some(c.path.clone());
        }
        if !c.rest.is_empty() {
            return Err(DecodeError::AfterLastFile(c.rest.len()));
        }
        Ok(())
    }
}

/// Walks [`FileFacts`] in path order: [`FileCursor::advance`], then read the current entry.
pub struct FileCursor<'a> {
    rest: &'a [u8],
    left: u32,
    path: Vec<u8>,
    content: u64,
    mode: u32,
}

impl FileCursor<'_> {
    /// Moves to the next entry; `false` past the last one. Facts that fail
    /// [`FileFacts::check`] end early.
    pub fn advance(&mut self) -> bool {
        self.left > 0 && self.step().is_ok()
    }

    pub fn path(&self) -> &str {
        // Checked by `FileFacts::check` (read from the index) or built from `&str`s.
        std::str::from_utf8(&self.path).unwrap_or("")
    }

    pub fn content(&self) -> u64 {
        self.content
    }

    pub fn mode(&self) -> u32 {
        self.mode
    }

    fn step(&mut self) -> Result<(), DecodeError> {
        let shared = read_varint(&mut self.rest)? as usize;
        let len = read_varint(&mut self.rest)? as usize;
        if shared > self.path.len() {
            return Err(DecodeError::SharedPrefix);
        }
        if self.rest.len() < len + 8 {
            return Err(DecodeError::PastEnd("an entry"));
        }
        self.path.truncate(shared);
        self.path.extend_from_slice(&self.rest[..len]);
        self.content = u64::from_le_bytes(self.rest[len..len + 8].try_into().expect("8 bytes"));
        self.rest = &self.rest[len + 8..];
        let mode = read_varint(&mut self.rest)?;
        self.mode = u32::try_from(mode).map_err(|_| DecodeError::ModeTooLarge)?;
        self.left -= 1;
        Ok(())
    }
}

/// Collects file facts in any order, then sorts them into [`FileFacts`]. Paths go into one
/// buffer (no allocation per file): 55k files cost ~2 MB while building.
#[derive(Default)]
pub struct FileFactsBuilder {
    paths: Vec<u8>,
    /// (start in `paths`, length, content fingerprint, mode)
    items: Vec<(u32, u32, u64, u32)>,
}

impl FileFactsBuilder {
    pub fn with_capacity(files: usize) -> FileFactsBuilder {
        FileFactsBuilder {
            paths: Vec::with_capacity(files * 24),
            items: Vec::with_capacity(files),
        }
    }

    /// Adds a file; of several entries with the same path, the last one added counts (a later
    /// COPY source overwrites an earlier one at the same destination).
    pub fn push(&mut self, path: &str, content: u64, mode: u32) {
        let start = self.paths.len() as u32;
        self.paths.extend_from_slice(path.as_bytes());
        self.items.push((start, path.len() as u32, content, mode));
    }

    pub fn finish(mut self) -> FileFacts {
        let paths = &self.paths;
        let at = |s: u32, l: u32| &paths[s as usize..(s + l) as usize];
        // Stable: equal paths stay in the order added, so the last one is the one kept.
        self.items.sort_by(|a, b| at(a.0, a.1).cmp(at(b.0, b.1)));
        let mut encoded = Vec::with_capacity(self.items.len() * 20);
        let mut count = 0u32;
        let mut prev: &[u8] = &[];
        for (i, &(s, l, content, mode)) in self.items.iter().enumerate() {
            let path = at(s, l);
            if self.items.get(i + 1).is_some_and(|n| at(n.0, n.1) == path) {
                continue;
            }
            let shared = prev.iter().zip(path).take_while(|(a, b)| a == b).count();
            write_varint(&mut encoded, shared as u64);
            write_varint(&mut encoded, (path.len() - shared) as u64);
            encoded.extend_from_slice(&path[shared..]);
            encoded.extend_from_slice(&content.to_le_bytes());
            write_varint(&mut encoded, mode as u64);
            prev = path;
            count += 1;
        }
        encoded.shrink_to_fit();
        FileFacts { count, encoded }
    }
}

pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// What is wrong with an encoded value read from the index (file facts, stat sets); the
/// index reports it as a corrupt entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a number runs past the end")]
    NumberPastEnd,
    #[error("a number longer than 64 bits")]
    NumberTooLong,
    #[error("a shared prefix longer than the previous path")]
    SharedPrefix,
    /// `an entry`, `a path`, `a digest`.
    #[error("{0} runs past the end")]
    PastEnd(&'static str),
    #[error("a mode above 32 bits")]
    ModeTooLarge,
    #[error("a file path is not UTF-8")]
    PathNotUtf8,
    #[error("file paths out of order")]
    OutOfOrder,
    #[error("{0} bytes after the last file")]
    AfterLastFile(usize),
    #[error("{0} bytes after the last entry")]
    AfterLastEntry(usize),
    #[error("schema {found}, expected {expected}")]
    Schema { found: u8, expected: u8 },
    #[error("empty value")]
    Empty,
    #[error("shorter than its header")]
    ShortHeader,
}

pub(crate) fn read_varint(rest: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, tail)) = rest.split_first() else {
            return Err(DecodeError::NumberPastEnd);
        };
        *rest = tail;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::NumberTooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &FileFacts) -> Vec<(String, u64, u32)> {
        let mut c = f.cursor();
        let mut out = Vec::new();
        while c.advance() {
            out.push((c.path().to_string(), c.content(), c.mode()));
        }
        out
    }

    #[test]
    fn file_facts_sort_deduplicate_and_round_trip() {
        let mut b = FileFactsBuilder::default();
        b.push("src/main.rs", 7, 0o644);
        b.push("README", u64::MAX, 0o755);
        b.push("src/lib.rs", 1, 0o644);
        b.push("src/main.rs", 8, 0o600);
        b.push("", 3, 0o644);
        let f = b.finish();
        assert_eq!(f.len(), 4);
        f.check().unwrap();
        assert_eq!(
            all(&f),
            vec![
                ("".to_string(), 3, 0o644),
                ("README".to_string(), u64::MAX, 0o755),
                ("src/lib.rs".to_string(), 1, 0o644),
                ("src/main.rs".to_string(), 8, 0o600),
            ]
        );
        let bytes = bincode::serialize(&f).unwrap();
        let back: FileFacts = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, f);
        // Shared prefixes are stored once: "src/main.rs" costs its suffix "main.rs" only
        // (per entry: 1 + 1 bytes of lengths, 8 of fingerprint, 2 of mode).
        assert_eq!(f.encoded_len(), 4 * 12 + "READMEsrc/lib.rsmain.rs".len());
    }

    #[test]
    fn malformed_file_facts_are_reported() {
        let f = |count, encoded: &[u8]| FileFacts {
            count,
            encoded: encoded.to_vec(),
        };
        // Runs past the end, shares more than the previous path has, trailing bytes, order.
        assert!(f(1, &[0, 5, b'a']).check().is_err());
        assert!(f(1, &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).check().is_err());
        assert!(f(0, &[1]).check().is_err());
        let mut out = Vec::new();
        for p in ["b", "a"] {
            out.extend_from_slice(&[0, 1, p.as_bytes()[0], 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert!(f(2, &out)
            .check()
            .unwrap_err()
            .to_string()
            .contains("order"));
        assert!(f(0, &[]).check().is_ok());
    }
}
