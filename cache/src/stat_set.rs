//! [`StatSet`]: the stat cache of one COPY source tree, one index record (`T/`), kept encoded.
//!
//! A set is read and rewritten whole by every build that hashes the tree, so its size is what
//! a no-op rebuild of a large tree pays: 55k files were ~10 MB encoded as `(absolute path,
//! StatEntry)` pairs and ~11 MB more decoded (plus a map over them). Now an entry costs
//! ~70 bytes (front-coded path, varint stat fields, 64-bit times, the digest), one
//! `recorded_ns` serves the whole set, and the engine walks the encoding in the order it walks
//! the tree instead of decoding it into a map.
//!
//! Value layout (after the schema byte [`STAT_SET_SCHEMA`]): `recorded_ns` (i64 LE), the
//! entry count (u32 LE), then per entry `varint(bytes shared with the previous path)
//! varint(suffix length) suffix varint(dev) varint(ino) varint(size) mtime_ns(i64 LE)
//! ctime_ns(i64 LE) varint(mode) blake3(32 bytes)`.
//!
//! Why one `recorded_ns` per set is as safe as one per entry (git's racy rule,
//! [`StatEntry::matches`]): an entry is written either because its file was hashed in this
//! build, after `recorded_ns` was taken, or because it was trusted from the previous set, which
//! needs `max(mtime, ctime) < ` the previous `recorded_ns` `<=` this one. A clock stepped
//! backwards can only make an entry racy (a re-hash), never trusted wrongly.

use crate::index::StatEntry;
use crate::records::{read_varint, write_varint, DecodeError};

/// The schema byte of a stat set value. 1 (older strata): bincode of `Vec<(absolute path,
/// StatEntry)>`, read as no set (the tree is hashed once more, then the set is rewritten).
pub const STAT_SET_SCHEMA: u8 = 2;

/// Stat entries of one source tree, encoded, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatSet {
    recorded_ns: i64,
    count: u32,
    encoded: Vec<u8>,
}

impl StatSet {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// When the set was recorded (ns since the epoch, `CLOCK_REALTIME`): every entry's
    /// [`StatEntry::recorded_ns`].
    pub fn recorded_ns(&self) -> i64 {
        self.recorded_ns
    }

    /// The entries, in the order added.
    pub fn cursor(&self) -> StatCursor<'_> {
        StatCursor {
            rest: &self.encoded,
            left: self.count,
            recorded_ns: self.recorded_ns,
            path: Vec::new(),
            entry: None,
        }
    }

    /// The index value: schema byte + layout above.
    pub(crate) fn to_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13 + self.encoded.len());
        v.push(STAT_SET_SCHEMA);
        v.extend_from_slice(&self.recorded_ns.to_le_bytes());
        v.extend_from_slice(&self.count.to_le_bytes());
        v.extend_from_slice(&self.encoded);
        v
    }

    /// Parses an index value, checking every entry; `Ok(None)` for a schema 1 set (older
    /// strata), which is only a cache: the tree is hashed again.
    pub(crate) fn from_value(v: &[u8]) -> Result<Option<StatSet>, DecodeError> {
        match v.first() {
            Some(&STAT_SET_SCHEMA) => {}
            Some(1) => return Ok(None),
            Some(&found) => {
                return Err(DecodeError::Schema {
                    found,
                    expected: STAT_SET_SCHEMA,
                })
            }
            None => return Err(DecodeError::Empty),
        }
        if v.len() < 13 {
            return Err(DecodeError::ShortHeader);
        }
        let set = StatSet {
            recorded_ns: i64::from_le_bytes(v[1..9].try_into().expect("8 bytes")),
            count: u32::from_le_bytes(v[9..13].try_into().expect("4 bytes")),
            encoded: v[13..].to_vec(),
        };
        let mut c = set.cursor();
        for _ in 0..set.count {
            c.step()?;
        }
        if !c.rest.is_empty() {
            return Err(DecodeError::AfterLastEntry(c.rest.len()));
        }
        Ok(Some(set))
    }
}

/// Walks a [`StatSet`]: [`StatCursor::advance`], then [`StatCursor::path`] and
/// [`StatCursor::entry`].
pub struct StatCursor<'a> {
    rest: &'a [u8],
    left: u32,
    recorded_ns: i64,
    path: Vec<u8>,
    entry: Option<StatEntry>,
}

impl StatCursor<'_> {
    /// Moves to the next entry; `false` past the last one (sets are checked when read).
    pub fn advance(&mut self) -> bool {
        self.left > 0 && self.step().is_ok()
    }

    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The current entry (`None` before the first [`StatCursor::advance`]).
    pub fn entry(&self) -> Option<&StatEntry> {
        self.entry.as_ref()
    }

    fn step(&mut self) -> Result<(), DecodeError> {
        let shared = read_varint(&mut self.rest)? as usize;
        let len = read_varint(&mut self.rest)? as usize;
        if shared > self.path.len() {
            return Err(DecodeError::SharedPrefix);
        }
        if self.rest.len() < len {
            return Err(DecodeError::PastEnd("a path"));
        }
        self.path.truncate(shared);
        self.path.extend_from_slice(&self.rest[..len]);
        self.rest = &self.rest[len..];
        let dev = read_varint(&mut self.rest)?;
        let ino = read_varint(&mut self.rest)?;
        let size = read_varint(&mut self.rest)?;
        if self.rest.len() < 16 {
            return Err(DecodeError::PastEnd("an entry"));
        }
        let mtime = i64::from_le_bytes(self.rest[..8].try_into().expect("8 bytes"));
        let ctime = i64::from_le_bytes(self.rest[8..16].try_into().expect("8 bytes"));
        self.rest = &self.rest[16..];
        let mode =
            u32::try_from(read_varint(&mut self.rest)?).map_err(|_| DecodeError::ModeTooLarge)?;
        if self.rest.len() < 32 {
            return Err(DecodeError::PastEnd("a digest"));
        }
        let blake3: [u8; 32] = self.rest[..32].try_into().expect("32 bytes");
        self.rest = &self.rest[32..];
        self.entry = Some(StatEntry {
            dev,
            ino,
            size,
            mtime_ns: mtime as i128,
            ctime_ns: ctime as i128,
            mode,
            recorded_ns: self.recorded_ns as i128,
            blake3,
        });
        self.left -= 1;
        Ok(())
    }
}

/// Builds a [`StatSet`] entry by entry (in the order the engine walks the tree, so the next
/// build finds them in the same order).
pub struct StatSetBuilder {
    set: StatSet,
    prev: Vec<u8>,
}

impl StatSetBuilder {
    /// A set recorded at `recorded_ns` (taken before any of its files was read), with room
    /// for about `files` entries.
    pub fn new(recorded_ns: i128, files: usize) -> StatSetBuilder {
        StatSetBuilder {
            set: StatSet {
                // Not before 1677 nor after 2262: a clock that far off records nothing
                // trustworthy, and i64::MIN makes every entry racy.
                recorded_ns: i64::try_from(recorded_ns).unwrap_or(i64::MIN),
                count: 0,
                encoded: Vec::with_capacity(files * 72),
            },
            prev: Vec::new(),
        }
    }

    /// Adds the entry of `path`, a file of the tree; its `recorded_ns` is the set's. Returns
    /// `false` (and adds nothing: the file is hashed again next time) if its times do not fit
    /// 64 bits.
    pub fn push(&mut self, path: &[u8], e: &StatEntry) -> bool {
        let (Ok(mtime), Ok(ctime)) = (i64::try_from(e.mtime_ns), i64::try_from(e.ctime_ns)) else {
            return false;
        };
        let out = &mut self.set.encoded;
        let shared = self
            .prev
            .iter()
            .zip(path)
            .take_while(|(a, b)| a == b)
            .count();
        write_varint(out, shared as u64);
        write_varint(out, (path.len() - shared) as u64);
        out.extend_from_slice(&path[shared..]);
        write_varint(out, e.dev);
        write_varint(out, e.ino);
        write_varint(out, e.size);
        out.extend_from_slice(&mtime.to_le_bytes());
        out.extend_from_slice(&ctime.to_le_bytes());
        write_varint(out, e.mode as u64);
        out.extend_from_slice(&e.blake3);
        self.prev.clear();
        self.prev.extend_from_slice(path);
        self.set.count += 1;
        true
    }

    pub fn finish(self) -> StatSet {
        self.set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> StatEntry {
        StatEntry {
            dev: 2049,
            ino: 1_000_000 + n,
            size: n * 100,
            mtime_ns: 1_700_000_000_000_000_000 + n as i128,
            ctime_ns: -5 - n as i128,
            mode: 0o100644,
            recorded_ns: 42,
            blake3: [n as u8; 32],
        }
    }

    #[test]
    fn round_trips_in_order_with_the_set_time() {
        let mut b = StatSetBuilder::new(1_800_000_000_000_000_000, 3);
        let paths: [&[u8]; 3] = [b"/ctx/src/b/x", b"/ctx/src/a", b"/ctx/src/b/y"];
        for (i, p) in paths.iter().enumerate() {
            assert!(b.push(p, &entry(i as u64)));
        }
        let too_late = StatEntry {
            mtime_ns: i64::MAX as i128 + 1,
            ..entry(9)
        };
        assert!(!b.push(b"/ctx/src/z", &too_late));
        let set = b.finish();
        assert_eq!(set.len(), 3);
        let back = StatSet::from_value(&set.to_value()).unwrap().unwrap();
        assert_eq!(back, set);
        let mut c = back.cursor();
        for (i, p) in paths.iter().enumerate() {
            assert!(c.advance());
            assert_eq!(c.path(), *p);
            let want = StatEntry {
                recorded_ns: 1_800_000_000_000_000_000,
                ..entry(i as u64)
            };
            assert_eq!(c.entry(), Some(&want));
        }
        assert!(!c.advance());
        // ~70 bytes an entry here (the digest is 32 of them), not ~190 as before.
        assert!(
            set.to_value().len() < 13 + 3 * 80,
            "{}",
            set.to_value().len()
        );
    }

    #[test]
    fn old_and_malformed_values() {
        assert_eq!(StatSet::from_value(&[1, 8, 0, 0, 0]), Ok(None));
        assert!(StatSet::from_value(&[]).is_err());
        assert!(StatSet::from_value(&[3])
            .unwrap_err()
            .to_string()
            .contains("schema 3"));
        assert!(StatSet::from_value(&[2, 0]).is_err());
        let mut b = StatSetBuilder::new(7, 1);
        b.push(b"/a", &entry(1));
        let mut v = b.finish().to_value();
        assert!(StatSet::from_value(&v).unwrap().is_some());
        v.pop();
        assert!(StatSet::from_value(&v)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
        v.extend_from_slice(&[0, 0]);
        assert!(StatSet::from_value(&v)
            .unwrap_err()
            .to_string()
            .contains("after the last"));
    }
}
