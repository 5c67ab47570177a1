//! `COPY/ADD --chmod`: an octal mode, or a symbolic one as chmod(1) takes it (`u+x,g-w`,
//! `a=rX`, `g=u`, `+t`), applied to each copied file and directory by its own mode.
//!
//! BuildKit (Dockerfile 1.14+) accepts both. Symbolic clauses without a `who` (`+x`, `=rw`)
//! are limited by the umask in chmod(1); strata fixes that umask at 022 — what BuildKit's
//! daemon and an ordinary shell use — so the result never depends on the host. `X` counts
//! for every operator (GNU chmod, and BuildKit since moby/buildkit#5835), and is decided by
//! the mode before the change: the entry is a directory or already executable by someone.

use std::fmt;

/// The umask that limits a clause without `who`.
const UMASK: u32 = 0o022;

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// `755`, `0644`: every entry gets this mode.
    Octal(u32),
    /// `u+x,go-w`: the text as written (it is what cache keys hold) and its clauses.
    Symbolic { text: String, clauses: Vec<Clause> },
}

/// One comma-separated part: who, then one or more operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Bits the clause may touch (`u` = 0o4700, `g` = 0o2070, `o` = 0o0007); 0 = none given.
    who: u32,
    ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Op {
    op: u8,
    perm: Perm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perm {
    /// `r`, `w`, `x`, `s`, `t` as bits (for all classes), and whether `X` was given.
    Bits { bits: u32, big_x: bool },
    /// `u`, `g` or `o`: the permissions that class has now.
    Copy(u8),
}

/// Why a `--chmod` value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChmodError(pub String);

impl fmt::Display for ChmodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Chmod {
    /// Parses `--chmod`'s value.
    pub fn parse(s: &str) -> Result<Chmod, ChmodError> {
        if s.is_empty() {
            return Err(ChmodError("empty mode".into()));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            let m = u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| ChmodError(format!("`{s}` is not an octal mode up to 7777")))?;
            return Ok(Chmod::Octal(m));
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            clauses.push(parse_clause(part).map_err(|why| ChmodError(format!("`{part}`: {why}")))?);
        }
        Ok(Chmod::Symbolic {
            text: s.to_string(),
            clauses,
        })
    }

    /// The form cache keys hold: octal digits (as strata always wrote them), or the
    /// symbolic text as written (never only digits, so the two cannot meet).
    pub fn key_form(&self) -> String {
        match self {
            Chmod::Octal(m) => format!("{m:o}"),
            Chmod::Symbolic { text, .. } => text.clone(),
        }
    }

    /// The mode of an entry whose mode was `mode` (permission bits) before the change.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic { clauses, .. } => {
                let old = mode & 0o7777;
                let mut m = old;
                for c in clauses {
                    m = c.apply(m, old, is_dir);
                }
                m
            }
        }
    }
}

/// Why one clause of a symbolic mode is refused (the message follows the clause).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ClauseError {
    #[error("expected `+`, `-` or `=` at `{0}`")]
    ExpectedOperator(String),
    #[error("`{0}` is not a permission (r, w, x, X, s, t, u, g, o)")]
    NotAPermission(char),
    #[error("no operator (`+`, `-` or `=`)")]
    NoOperator,
}

fn parse_clause(s: &str) -> Result<Clause, ClauseError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut who = 0;
    while i < b.len() {
        who |= match b[i] {
            b'u' => 0o4700,
            b'g' => 0o2070,
            b'o' => 0o0007,
            b'a' => 0o7777,
            _ => break,
        };
        i += 1;
    }
    let mut ops = Vec::new();
    while i < b.len() {
        let op = b[i];
        if !matches!(op, b'+' | b'-' | b'=') {
            return Err(if ops.is_empty() {
                ClauseError::ExpectedOperator(s[i..].to_string())
            } else {
                ClauseError::NotAPermission(s[i..].chars().next().unwrap_or_default())
            });
        }
        i += 1;
        if i < b.len() && matches!(b[i], b'u' | b'g' | b'o') {
            ops.push(Op {
                op,
                perm: Perm::Copy(b[i]),
            });
            i += 1;
            continue;
        }
        let (mut bits, mut big_x) = (0, false);
        while i < b.len() {
            bits |= match b[i] {
                b'r' => 0o444,
                b'w' => 0o222,
                b'x' => 0o111,
                b's' => 0o6000,
                b't' => 0o1000,
                b'X' => {
                    big_x = true;
                    0
                }
                _ => break,
            };
            i += 1;
        }
        ops.push(Op {
            op,
            perm: Perm::Bits { bits, big_x },
        });
    }
    if ops.is_empty() {
        return Err(ClauseError::NoOperator);
    }
    Ok(Clause { who, ops })
}

impl Clause {
    fn apply(&self, mut m: u32, old: u32, is_dir: bool) -> u32 {
        // Without `who`, the clause reaches every class, limited by the umask; the sticky
        // bit is not in a class but `t` reaches it whenever some class but "other" is named.
        let reach = if self.who == 0 {
            0o7777 & !UMASK
        } else {
            self.who | if self.who & 0o0770 != 0 { 0o1000 } else { 0 }
        };
        let classes = if self.who == 0 {
            0o0777
        } else {
            self.who & 0o0777
        };
        for op in &self.ops {
            let value = match &op.perm {
                Perm::Bits { bits, big_x } => {
                    let mut v = *bits;
                    if *big_x && (is_dir || old & 0o111 != 0) {
                        v |= 0o111;
                    }
                    v & reach
                }
                Perm::Copy(c) => {
                    let shift = match c {
                        b'u' => 6,
                        b'g' => 3,
                        _ => 0,
                    };
                    let p = (m >> shift) & 0o7;
                    (p << 6 | p << 3 | p) & classes & if self.who == 0 { !UMASK } else { !0 }
                }
            };
            match op.op {
                b'+' => m |= value,
                b'-' => m &= !value,
                _ => {
                    // `=`: what the named classes had is replaced (their special bits too,
                    // as chmod(1) does for files).
                    let clear = if self.who == 0 { 0o7777 } else { self.who };
                    m = (m & !clear) | value;
                }
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s).unwrap().apply(mode, dir)
    }

    /// Values checked against GNU chmod 9 with umask 022.
    #[test]
    fn symbolic_modes_as_chmod_gives_them() {
        assert_eq!(ap("755", 0o644, false), 0o755);
        assert_eq!(ap("0644", 0o755, true), 0o644);
        assert_eq!(ap("u+x", 0o644, false), 0o744);
        assert_eq!(ap("+x", 0o644, false), 0o755);
        assert_eq!(
            ap("+w", 0o444, false),
            0o644,
            "the umask keeps g/o write off"
        );
        assert_eq!(ap("a+w", 0o444, false), 0o666);
        assert_eq!(ap("g-w", 0o664, false), 0o644);
        assert_eq!(ap("u+x,g-w", 0o664, false), 0o744);
        assert_eq!(ap("a=rX", 0o644, false), 0o444);
        assert_eq!(ap("a=rX", 0o744, false), 0o555);
        assert_eq!(ap("a=rX", 0o700, true), 0o555);
        assert_eq!(ap("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(ap("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(ap("u=rwX,go=rX", 0o700, true), 0o755);
        assert_eq!(ap("g=u", 0o740, false), 0o770);
        assert_eq!(ap("go=u-w", 0o755, false), 0o755);
        assert_eq!(ap("go=u-w", 0o775, false), 0o755);
        assert_eq!(ap("o=", 0o757, false), 0o750);
        assert_eq!(ap("+t", 0o777, true), 0o1777);
        assert_eq!(ap("u+s", 0o755, false), 0o4755);
        assert_eq!(ap("g+s", 0o755, true), 0o2755);
        assert_eq!(ap("o+s", 0o755, false), 0o755, "s means nothing for other");
        assert_eq!(
            ap("u=rw", 0o4755, false),
            0o655,
            "= clears the class's special bits"
        );
        assert_eq!(ap("=r", 0o755, false), 0o444);
        assert_eq!(ap("-X", 0o755, false), 0o644, "X counts for - too");
    }

    #[test]
    fn bad_modes_are_refused() {
        for bad in [
            "", "8", "17777", "u", "u+q", "x+u", "u+x,", ",u+x", "u+x g", "u+é", "é",
        ] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_forms_keep_octal_as_before() {
        assert_eq!(Chmod::parse("0755").unwrap().key_form(), "755");
        assert_eq!(Chmod::parse("u+x").unwrap().key_form(), "u+x");
    }
}
