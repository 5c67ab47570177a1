//! A tar inside a file, read from memory: entries with the metadata layers are compared by
//! ([`EntrySummary`]), their data borrowed from the archive's bytes.

use std::collections::HashMap;

use strata_cache::Digest;

use super::{Data, Listing, Member, Meta};
use crate::diff::layer::entry_summary;

/// Whether the first 512 bytes are a tar header with a valid checksum (v7 tars have no magic).
pub(crate) fn checksum_ok(b: &[u8]) -> bool {
    let Some(h) = b.get(..512) else {
        return false;
    };
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(c)
            }
        })
        .sum();
    sum == stored && h[0] != 0
}

/// The entries of the tar `bytes`; a later entry of a path replaces an earlier one.
pub(crate) fn list(bytes: &[u8]) -> Result<Listing<'_>, String> {
    let mut out = Listing::default();
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut ar = ::tar::Archive::new(bytes);
    let entries = ar
        .entries()
        .map_err(|e| format!("not a readable tar: {e}"))?;
    for e in entries {
        let mut e = match e {
            Ok(e) => e,
            Err(err) => {
                out.notes.push(format!("tar read stopped: {err}"));
                break;
            }
        };
        let (name, mut summary) = match entry_summary(&mut e) {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(err) => {
                out.notes.push(format!("tar read stopped: {err}"));
                break;
            }
        };
        let start = e.raw_file_position() as usize;
        let size = e.size() as usize;
        let data = if summary.kind != "file" {
            Data::None
        } else {
            let Some(raw) = bytes.get(start..start.saturating_add(size)) else {
                out.notes
                    .push(format!("`{name}` runs past the end of the tar"));
                break;
            };
            summary.sha256 = Some(Digest::of(raw));
            summary.size = size as u64;
            if e.header().entry_type().is_gnu_sparse() {
                Data::Opaque {
                    why: "a sparse file".into(),
                    fingerprint: format!("sparse data {}", Digest::of(raw)),
                }
            } else {
                Data::Bytes(raw)
            }
        };
        let m = Member {
            name: name.clone(),
            meta: Meta::Tar(Box::new(summary)),
            data,
        };
        match at.get(&name) {
            Some(&i) => out.members[i] = m,
            None => {
                at.insert(name, out.members.len());
                out.members.push(m);
            }
        }
    }
    Ok(out)
}
