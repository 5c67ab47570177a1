//! `ar` archives: static libraries (`.a`) and Debian packages (`.deb`). GNU long names (`//`
//! table, `/N`) and BSD long names (`#1/N`) are read; thin archives are not supported.

use std::collections::HashMap;

use super::{Data, Listing, Member, Meta};
use crate::diff::Cause;

const MAGIC: &[u8] = b"!<arch>\n";
const HEADER: usize = 60;

fn field(h: &[u8], from: usize, len: usize) -> String {
    String::from_utf8_lossy(&h[from..from + len])
        .trim_end()
        .to_string()
}

/// The members of the `ar` archive `bytes`, in order.
pub(crate) fn list(bytes: &[u8]) -> Result<Listing<'_>, String> {
    if !bytes.starts_with(MAGIC) {
        return Err("not an ar archive".into());
    }
    let mut out = Listing::default();
    let mut seen = HashMap::new();
    let mut long_names: &[u8] = &[];
    let mut pos = MAGIC.len();
    while pos + HEADER <= bytes.len() {
        let h = &bytes[pos..pos + HEADER];
        if &h[58..60] != b"`\n" {
            out.notes
                .push(format!("bad ar header at offset {pos}: read stopped"));
            break;
        }
        let raw_name = field(h, 0, 16);
        let Ok(size) = field(h, 48, 10).parse::<usize>() else {
            out.notes
                .push(format!("bad ar member size at offset {pos}: read stopped"));
            break;
        };
        let start = pos + HEADER;
        let Some(mut data) = bytes.get(start..start.saturating_add(size)) else {
            out.notes
                .push(format!("`{raw_name}` runs past the end of the archive"));
            break;
        };
        pos = start + size + size % 2;
        let name = if raw_name == "//" {
            long_names = data;
            continue;
        } else if raw_name == "/" || raw_name == "/SYM64/" || raw_name.starts_with("__.SYMDEF") {
            "(symbol table)".to_string()
        } else if let Some(n) = raw_name.strip_prefix("#1/") {
            // BSD: the name is the first N bytes of the data.
            let n: usize = n
                .parse()
                .map_err(|_| format!("bad BSD name `{raw_name}`"))?;
            let (name, rest) = data.split_at(n.min(data.len()));
            data = rest;
            String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_string()
        } else if let Some(off) = raw_name
            .strip_prefix('/')
            .and_then(|n| n.parse::<usize>().ok())
        {
            let rest = long_names.get(off..).unwrap_or_default();
            let end = rest
                .windows(2)
                .position(|w| w == b"/\n")
                .or_else(|| rest.iter().position(|&c| c == b'\n'))
                .unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        } else {
            raw_name.trim_end_matches('/').to_string()
        };
        let attrs = vec![
            ("mtime".to_string(), Cause::Mtime, field(h, 16, 12)),
            ("uid".to_string(), Cause::Uid, field(h, 28, 6)),
            ("gid".to_string(), Cause::Gid, field(h, 34, 6)),
            ("mode".to_string(), Cause::Mode, field(h, 40, 8)),
        ];
        out.push(
            Member {
                name,
                meta: Meta::Attrs(attrs),
                data: Data::Bytes(data),
            },
            &mut seen,
        );
    }
    if bytes.starts_with(b"!<thin>\n") {
        out.notes
            .push("a thin ar archive: members are not inside".into());
    }
    Ok(out)
}
