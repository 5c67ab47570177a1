//! OCI whiteouts: how a layer says that something of the layers below is gone.
//!
//! In a layer tar (OCI image-spec `layer.md`), an entry `dir/.wh.x` removes `dir/x` and
//! everything below it; an entry `dir/.wh..wh..opq` makes `dir` opaque (the lower layers'
//! children of `dir` are hidden). Names starting with `.wh.` are therefore reserved: no file of
//! that name can be stored in a layer. overlayfs spells the same facts as a char 0/0 device `x`
//! and an `overlay.opaque` xattr on `dir`.
//!
//! This module is the one place those names are known: [`classify`] reads an entry's last path
//! component, [`name_for`] writes the whiteout of a name. Every reader of layers (snapshots,
//! deltas, the COPY parent view) and every writer (RUN capture, the canonical order) goes
//! through it.

/// The prefix of every whiteout name.
pub const PREFIX: &str = ".wh.";
/// The opaque-directory marker.
pub const OPAQUE: &str = ".wh..wh..opq";
/// overlayfs' opaque-directory xattr as root sets it.
pub const OPAQUE_XATTR_TRUSTED: &str = "trusted.overlay.opaque";
/// overlayfs' opaque-directory xattr under `userxattr` (in a user namespace).
pub const OPAQUE_XATTR_USER: &str = "user.overlay.opaque";
/// Both spellings of the opaque xattr.
pub const OPAQUE_XATTRS: [&str; 2] = [OPAQUE_XATTR_TRUSTED, OPAQUE_XATTR_USER];

/// What a whiteout name means. `T` is the name's type (`&[u8]` or `&str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteout<T> {
    /// `.wh..wh..opq`: the directory holding it is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` (in the same directory) is removed. `<name>` is as written: it may
    /// be empty, `.` or `..`, which a reader that applies whiteouts must refuse or ignore.
    Remove(T),
    /// `.wh..wh.<x>` other than the opaque marker: aufs metadata (`.wh..wh.plnk`, hard-link
    /// directories), meaningless to an OCI reader. Carries what follows the first `.wh.`
    /// (itself starting with `.wh.`).
    AufsMeta(T),
}

/// The whiteout an entry's last path component `name` is, or `None` for an ordinary name.
pub fn classify(name: &[u8]) -> Option<Whiteout<&[u8]>> {
    if name == OPAQUE.as_bytes() {
        return Some(Whiteout::Opaque);
    }
    let target = name.strip_prefix(PREFIX.as_bytes())?;
    Some(if target.starts_with(PREFIX.as_bytes()) {
        Whiteout::AufsMeta(target)
    } else {
        Whiteout::Remove(target)
    })
}

/// [`classify`] for a UTF-8 name.
pub fn classify_str(name: &str) -> Option<Whiteout<&str>> {
    // The target is a suffix of `name` after an ASCII prefix: still UTF-8.
    let rest = || &name[PREFIX.len()..];
    Some(match classify(name.as_bytes())? {
        Whiteout::Opaque => Whiteout::Opaque,
        Whiteout::Remove(_) => Whiteout::Remove(rest()),
        Whiteout::AufsMeta(_) => Whiteout::AufsMeta(rest()),
    })
}

/// Whether `name` is reserved for whiteouts (cannot be the name of a file in a layer).
pub fn is_reserved(name: &[u8]) -> bool {
    classify(name).is_some()
}

/// The layer name of the whiteout that removes `name`.
pub fn name_for(name: &str) -> String {
    format!("{PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_kind_of_name() {
        assert_eq!(classify(b".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(classify(b".wh.x"), Some(Whiteout::Remove(&b"x"[..])));
        assert_eq!(classify(b".wh."), Some(Whiteout::Remove(&b""[..])));
        assert_eq!(
            classify(b".wh..wh.plnk"),
            Some(Whiteout::AufsMeta(&b".wh.plnk"[..]))
        );
        assert_eq!(classify(b"x.wh.y"), None);
        assert_eq!(classify(b".whx"), None);
        assert_eq!(classify_str(".wh.é"), Some(Whiteout::Remove("é")));
        assert_eq!(classify_str(OPAQUE), Some(Whiteout::Opaque));
        assert!(is_reserved(name_for("anything").as_bytes()));
        assert_eq!(name_for("x"), ".wh.x");
    }
}
