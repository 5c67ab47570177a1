//! `--explain`: why a step that ran missed the cache, from the explain record of the last key
//! recorded at its location (`keys::location`) and the record of this build.

use strata_cache::{ExplainRecord, Store};

use super::BuildError;
use crate::plan::key::Key;

/// Says why a step missed, comparing what it ran on with the explain record of the last key
/// recorded at this step.
pub(crate) fn explain_miss(
    store: &Store,
    loc: &Key,
    new: &ExplainRecord,
    no_cache: bool,
) -> Result<Vec<String>, BuildError> {
    if no_cache {
        return Ok(vec!["--no-cache".into()]);
    }
    let Some(prev_key) = store.index().get_last_at(loc)? else {
        return Ok(vec!["first build of this step".into()]);
    };
    if store.index().get_step(&prev_key)?.is_none() {
        return Ok(vec![
            "the previous result of this step is no longer in the store".into(),
        ]);
    }
    let Some(old) = store.index().get_explain(&prev_key)? else {
        return Ok(vec![
            "the inputs of the previous build of this step were not recorded (an older strata \
             or a shared cache built it)"
                .into(),
        ]);
    };
    Ok(explain_diff(&old, new))
}

/// The reasons `new` differs from `old`, most general first; the changed files by path.
pub(crate) fn explain_diff(old: &ExplainRecord, new: &ExplainRecord) -> Vec<String> {
    let mut reasons = Vec::new();
    let both_differ = |name: &str| {
        let (o, n) = (old.input(name), new.input(name));
        o.is_some() && n.is_some() && o != n
    };
    if both_differ("parent") {
        reasons.push("the previous step changed".to_string());
    }
    if both_differ("parent-facts") {
        reasons.push(
            "the directories on the way to the destination changed in the parent rootfs \
             (existence, type, mode, owner or symlinks)"
                .to_string(),
        );
    }
    if old.input("instruction") != new.input("instruction") {
        reasons.push("the instruction or a variable it uses changed".to_string());
    }
    if both_differ("sources") {
        reasons.push(
            "the content of a URL or the commit of a git repository it adds changed".to_string(),
        );
    }
    if both_differ("mounts") {
        reasons.push("what a bind mount shows, or the network, changed".to_string());
    }
    if old.input("state") != new.input("state") {
        reasons.push("its result (config or ARG values) changed".to_string());
    }
    // Both lists are sorted by path: one merge, no map of either.
    let (mut o, mut n) = (old.files.cursor(), new.files.cursor());
    let (mut o_at, mut n_at) = (o.advance(), n.advance());
    let mut changed = 0usize;
    let mut files: Vec<(String, Vec<&str>)> = Vec::new();
    let mut note = |path: &str, what: Vec<&'static str>| {
        changed += 1;
        if files.len() < 5 {
            files.push((path.to_string(), what));
        }
    };
    while o_at || n_at {
        let order = match (o_at, n_at) {
            (true, true) => o.path().cmp(n.path()),
            (true, false) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                note(o.path(), vec!["removed"]);
                o_at = o.advance();
            }
            std::cmp::Ordering::Greater => {
                note(n.path(), vec!["added"]);
                n_at = n.advance();
            }
            std::cmp::Ordering::Equal => {
                let mut what = Vec::new();
                if o.content() != n.content() {
                    what.push("content");
                }
                if o.mode() != n.mode() {
                    what.push("mode");
                }
                if !what.is_empty() {
                    note(n.path(), what);
                }
                o_at = o.advance();
                n_at = n.advance();
            }
        }
    }
    if changed > 0 {
        let shown: Vec<String> = files
            .iter()
            .map(|(p, w)| format!("{p} ({})", w.join(", ")))
            .collect();
        reasons.push(format!(
            "{changed} file{} changed: {}{}",
            if changed == 1 { "" } else { "s" },
            shown.join("; "),
            if changed > 5 {
                format!("; and {} more", changed - 5)
            } else {
                String::new()
            }
        ));
    }
    if reasons.is_empty() {
        reasons.push("inputs differ from the last recorded build".into());
    }
    reasons
}
