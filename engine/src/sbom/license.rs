//! Licenses as the metadata states them, made SPDX license expressions for the documents.
//!
//! Metadata says `MIT`, `GPL-2+ or Artistic` (Debian's short names), `(MIT OR Apache-2.0)`
//! (npm), `PSF-2.0`. A statement whose every name is a known SPDX identifier (or a Debian short
//! name with an exact SPDX equivalent), joined by `and`/`or`/`with` and parentheses, becomes
//! that SPDX expression; anything else is kept whole as a `LicenseRef-` whose text is the
//! statement (SPDX's extracted licensing info), never guessed.

/// SPDX identifiers recognised as they are (case-insensitively).
const SPDX_IDS: &[&str] = &[
    "0BSD",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.1",
    "Apache-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-4-Clause",
    "BSL-1.0",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "curl",
    "EPL-1.0",
    "EPL-2.0",
    "GFDL-1.2-only",
    "GFDL-1.2-or-later",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-only",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "MIT",
    "MIT-0",
    "MPL-1.1",
    "MPL-2.0",
    "OpenSSL",
    "PSF-2.0",
    "Python-2.0",
    "Ruby",
    "Unicode-DFS-2016",
    "Unlicense",
    "WTFPL",
    "X11",
    "Zlib",
    "ZPL-2.1",
];

/// Exception identifiers allowed after `WITH`.
const SPDX_EXCEPTIONS: &[&str] = &[
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "GCC-exception-2.0",
    "GCC-exception-3.1",
    "LLVM-exception",
    "OpenSSL-exception",
];

/// Debian short names (and deprecated SPDX ids) with an exact SPDX equivalent.
const ALIASES: &[(&str, &str)] = &[
    ("Expat", "MIT"),
    ("Apache-2", "Apache-2.0"),
    ("BSD-2", "BSD-2-Clause"),
    ("BSD-3", "BSD-3-Clause"),
    ("MPL-2", "MPL-2.0"),
    ("PSF-2", "PSF-2.0"),
    ("Zope-2.1", "ZPL-2.1"),
];

/// The GNU licenses, by Debian's and the old SPDX spelling: `GPL-2`, `GPL-2+`, `GPL-2.0`,
/// `GPL-2.0+`, `LGPL-2.1+`.
fn gnu(token: &str) -> Option<String> {
    let (base, plus) = match token.strip_suffix('+') {
        Some(b) => (b, true),
        None => (token, false),
    };
    let (family, version) = base.split_once('-')?;
    let family = ["GPL", "LGPL", "AGPL", "GFDL"]
        .into_iter()
        .find(|f| f.eq_ignore_ascii_case(family))?;
    let version = if version.contains('.') {
        version.to_string()
    } else {
        format!("{version}.0")
    };
    let id = format!(
        "{family}-{version}-{}",
        if plus { "or-later" } else { "only" }
    );
    known(&id)
}

fn known(token: &str) -> Option<String> {
    SPDX_IDS
        .iter()
        .find(|id| id.eq_ignore_ascii_case(token))
        .map(|id| id.to_string())
}

fn license_id(token: &str) -> Option<String> {
    known(token)
        .or_else(|| {
            ALIASES
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(token))
                .map(|(_, id)| id.to_string())
        })
        .or_else(|| gnu(token))
}

/// The SPDX expression of `statement` if every part of it is known (module docs).
pub fn spdx_expression(statement: &str) -> Option<String> {
    let spaced = statement.replace('(', " ( ").replace(')', " ) ");
    let mut out: Vec<String> = Vec::new();
    // What may come next: an operand (license or `(`) or an operator (or `)`).
    let mut want_operand = true;
    let mut after_with = false;
    let mut depth = 0usize;
    for tok in spaced.split_whitespace() {
        let op = ["AND", "OR", "WITH"]
            .into_iter()
            .find(|o| o.eq_ignore_ascii_case(tok));
        match (tok, op) {
            ("(", _) if want_operand => {
                depth += 1;
                out.push("(".into());
            }
            (")", _) if !want_operand && depth > 0 => {
                depth -= 1;
                out.push(")".into());
            }
            (_, Some(op)) if !want_operand => {
                out.push(op.to_string());
                want_operand = true;
                after_with = op == "WITH";
            }
            (_, None) if want_operand && tok != "(" && tok != ")" => {
                let id = if after_with {
                    SPDX_EXCEPTIONS
                        .iter()
                        .find(|e| e.eq_ignore_ascii_case(tok))
                        .map(|e| e.to_string())?
                } else {
                    license_id(tok)?
                };
                out.push(id);
                want_operand = false;
                after_with = false;
            }
            _ => return None,
        }
    }
    if want_operand || depth != 0 {
        return None;
    }
    let mut s = out.join(" ");
    s = s.replace("( ", "(").replace(" )", ")");
    Some(s)
}

/// `statement` as an SPDX expression, with the `(LicenseRef id, text)` of each part that is no
/// SPDX expression: the whole statement when it converts; else, when it is a conjunction at its
/// top level (`A AND (B or C) AND D`, as dpkg's copyright names are joined), each conjunct on
/// its own, so that `Apache-2.0 AND Kazlib` keeps its known half; else one `LicenseRef`.
pub fn spdx_declared(statement: &str) -> (String, Vec<(String, String)>) {
    if let Some(e) = spdx_expression(statement) {
        return (e, Vec::new());
    }
    let parts = top_level_conjuncts(statement);
    let mut refs = Vec::new();
    let mut out = Vec::new();
    let reference = |text: &str, refs: &mut Vec<(String, String)>| {
        let id = license_ref(text);
        refs.push((id.clone(), text.to_string()));
        id
    };
    if parts.len() < 2 {
        let id = reference(statement, &mut refs);
        return (id, refs);
    }
    for part in parts {
        match spdx_expression(part) {
            // A single id, or one already in parentheses, needs none.
            Some(e) if !e.contains(' ') || (e.starts_with('(') && e.ends_with(')')) => out.push(e),
            Some(e) => out.push(format!("({e})")),
            None => {
                let inner = part
                    .strip_prefix('(')
                    .and_then(|p| p.strip_suffix(')'))
                    .unwrap_or(part);
                out.push(reference(inner, &mut refs));
            }
        }
    }
    // `BSD-3-clause` and `BSD-3-Clause` in one copyright file are one license.
    let mut seen = std::collections::HashSet::new();
    out.retain(|e| seen.insert(e.clone()));
    (out.join(" AND "), refs)
}

/// The parts of `s` joined by `AND`/`and` outside parentheses (one part if there is no such
/// `AND`, or if the parentheses do not balance).
fn top_level_conjuncts(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b' ' if depth == 0
                && bytes.len() >= i + 5
                && bytes[i + 1..i + 4].eq_ignore_ascii_case(b"and")
                && bytes[i + 4] == b' ' =>
            {
                parts.push(s[start..i].trim());
                i += 5;
                start = i;
                continue;
            }
            _ => {}
        }
        if depth < 0 {
            return vec![s];
        }
        i += 1;
    }
    if depth != 0 {
        return vec![s];
    }
    parts.push(s[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The `LicenseRef-` identifier of a statement that is no SPDX expression: readable, and unique
/// by a hash of the whole statement.
pub fn license_ref(statement: &str) -> String {
    let mut readable: String = statement
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    readable.truncate(48);
    let readable = readable.trim_matches('-');
    format!(
        "LicenseRef-{readable}-{}",
        super::short_hash(&[statement], 8)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_statements_become_spdx_expressions() {
        let e = |s| spdx_expression(s);
        assert_eq!(e("MIT").as_deref(), Some("MIT"));
        assert_eq!(e("mit").as_deref(), Some("MIT"));
        assert_eq!(e("Expat").as_deref(), Some("MIT"));
        assert_eq!(e("GPL-2+").as_deref(), Some("GPL-2.0-or-later"));
        assert_eq!(e("LGPL-2.1").as_deref(), Some("LGPL-2.1-only"));
        assert_eq!(e("GPL-3.0+").as_deref(), Some("GPL-3.0-or-later"));
        assert_eq!(
            e("(MIT OR Apache-2.0)").as_deref(),
            Some("(MIT OR Apache-2.0)")
        );
        assert_eq!(
            e("GPL-2+ AND (BSD-3-clause or Expat)").as_deref(),
            Some("GPL-2.0-or-later AND (BSD-3-Clause OR MIT)")
        );
        assert_eq!(
            e("GPL-3+ with GCC-exception-3.1").as_deref(),
            Some("GPL-3.0-or-later WITH GCC-exception-3.1")
        );
        for unknown in [
            "public-domain",
            "GPL-2+ or Artistic",
            "MIT AND",
            "(MIT",
            "MIT Apache-2.0",
            "",
            "GPL-9",
            "MIT WITH nonsense",
        ] {
            assert_eq!(e(unknown), None, "{unknown}");
        }
        // A conjunction keeps its known parts.
        let (e, refs) = spdx_declared("Apache-2 AND (GPL or MIT) AND GPL-2+ AND Kazlib");
        let (gpl_or_mit, kazlib) = (license_ref("GPL or MIT"), license_ref("Kazlib"));
        assert_eq!(
            e,
            format!("Apache-2.0 AND {gpl_or_mit} AND GPL-2.0-or-later AND {kazlib}")
        );
        assert_eq!(
            refs,
            [
                (gpl_or_mit, "GPL or MIT".to_string()),
                (kazlib, "Kazlib".to_string())
            ]
        );
        let (e, _) = spdx_declared("(MIT or Apache-2.0) AND Kazlib");
        assert!(
            e.starts_with("(MIT OR Apache-2.0) AND LicenseRef-Kazlib-"),
            "{e}"
        );
        assert_eq!(spdx_declared("MIT").0, "MIT");
        let (e, _) = spdx_declared("BSD-3-clause AND BSD-3-Clause AND Kazlib");
        assert!(e.starts_with("BSD-3-Clause AND LicenseRef-Kazlib-"), "{e}");
        let (e, refs) = spdx_declared("GPL-2+ or Artistic");
        assert_eq!(
            (e.as_str(), refs.len()),
            (license_ref("GPL-2+ or Artistic").as_str(), 1)
        );
        assert_eq!(top_level_conjuncts("(a and b) AND c"), ["(a and b)", "c"]);
        assert_eq!(top_level_conjuncts("a) and (b"), ["a) and (b"]);
        let r = license_ref("GPL-2+ or Artistic");
        assert!(r.starts_with("LicenseRef-GPL-2--or-Artistic-"), "{r}");
        assert!(r
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    }
}
