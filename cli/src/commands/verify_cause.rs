//! `strata verify`: naming the cause of a difference (issue 23). When run `n` differs from run 1,
//! rebuild from run 1's conditions with one of run `n`'s variations at a time, each in a fresh
//! store, and see which brings back each differing file. The first rebuild changes nothing (a
//! control): what differs again under run 1's own conditions is the time or nondeterminism,
//! which no variation can be blamed for. At most `--max-builds` rebuilds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use strata_engine::diff::{self, DiffReport};

use super::verify::{after_second, build_once, compare, now_secs, Conditions, RunResult};
use crate::args::BuildArgs;

/// One aspect of a run's conditions that verify varies, or none (the control build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Aspect {
    Control,
    Layout,
    Cpus,
    Uts,
    Kernel,
    Clock,
    FileOrder,
    Rootless,
    Context,
    Umask,
    Tz,
    Locale,
    Jobs,
}

/// The order rebuilds try: what RUN commands see first (the usual causes), then what only
/// strata itself sees (a difference there would be strata's own bug). The layout right after
/// the control: what differs again under run 1's own conditions may be the layout.
const ORDER: [Aspect; 13] = [
    Aspect::Control,
    Aspect::Layout,
    Aspect::Cpus,
    Aspect::Uts,
    Aspect::FileOrder,
    Aspect::Kernel,
    Aspect::Rootless,
    Aspect::Clock,
    Aspect::Context,
    Aspect::Umask,
    Aspect::Tz,
    Aspect::Locale,
    Aspect::Jobs,
];

impl Aspect {
    /// In the JSON report.
    pub(super) fn name(self) -> &'static str {
        match self {
            Aspect::Control => "none",
            Aspect::Layout => "address_layout",
            Aspect::Cpus => "cpu_count",
            Aspect::Uts => "host_name",
            Aspect::Kernel => "kernel_version",
            Aspect::Clock => "clock",
            Aspect::FileOrder => "file_order",
            Aspect::Rootless => "rootless",
            Aspect::Context => "context",
            Aspect::Umask => "umask",
            Aspect::Tz => "tz",
            Aspect::Locale => "locale",
            Aspect::Jobs => "jobs",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Aspect::Control => "no variation",
            Aspect::Layout => "address-space layout (ASLR)",
            Aspect::Cpus => "CPU count",
            Aspect::Uts => "host name",
            Aspect::Kernel => "kernel version string",
            Aspect::Clock => "uptime (monotonic and boot clocks)",
            Aspect::FileOrder => "file order",
            Aspect::Rootless => "rootless (another user, a user namespace)",
            Aspect::Context => "context location and metadata",
            Aspect::Umask => "umask",
            Aspect::Tz => "TZ",
            Aspect::Locale => "locale and environment",
            Aspect::Jobs => "--jobs",
        }
    }

    /// `base` with this aspect taken from `other`; `None` when they do not differ in it.
    fn apply(self, base: &Conditions, other: &Conditions) -> Option<Conditions> {
        let mut c = base.clone();
        match self {
            Aspect::Control => return Some(c),
            Aspect::Layout => c.vary.fixed_layout = other.vary.fixed_layout,
            Aspect::Cpus => c.vary.cpus = other.vary.cpus,
            Aspect::Kernel => c.vary.kernel = other.vary.kernel.clone(),
            Aspect::Uts => {
                c.vary.hostname = other.vary.hostname.clone();
                c.vary.domainname = other.vary.domainname.clone();
            }
            Aspect::Clock => c.vary.clock_offset = other.vary.clock_offset,
            Aspect::FileOrder => c.store_on = other.store_on.clone(),
            Aspect::Rootless => c.rootless = other.rootless.clone(),
            Aspect::Context => {
                c.context = other.context.clone();
                c.dockerfile = other.dockerfile.clone();
            }
            Aspect::Umask => c.umask = other.umask,
            Aspect::Tz => c.tz = other.tz,
            Aspect::Locale => c.lang = other.lang,
            Aspect::Jobs => c.jobs = other.jobs,
        }
        let same = c.vary == base.vary
            && c.store_on == base.store_on
            && c.rootless == base.rootless
            && c.context == base.context
            && c.umask == base.umask
            && c.tz == base.tz
            && c.lang == base.lang
            && c.jobs == base.jobs;
        (!same).then_some(c)
    }
}

/// One difference between two images: a file (or the entry order) of a layer, or a config field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    layer: Option<usize>,
    what: What,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    File(String),
    Order,
    Layer,
    Config(String),
}

/// The differences of `d` (not the manifest and `rootfs`, which follow from the layers).
fn keys(d: &DiffReport) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    for c in &d.config {
        if !c.field.starts_with("rootfs") {
            out.insert(Key {
                layer: None,
                what: What::Config(c.field.clone()),
            });
        }
    }
    for l in d.layers.iter().filter(|l| l.differs) {
        let layer = Some(l.index);
        for f in &l.files {
            out.insert(Key {
                layer,
                what: What::File(f.path.clone()),
            });
        }
        if l.order.is_some() {
            out.insert(Key {
                layer,
                what: What::Order,
            });
        }
        if l.files.is_empty() && l.order.is_none() {
            out.insert(Key {
                layer,
                what: What::Layer,
            });
        }
    }
    out
}

/// What the search found for one difference.
#[derive(Debug, Clone)]
enum Found {
    Aspect(Aspect),
    /// Differs again with no variation, and holds a time of its run (described).
    Time(String),
    /// Differs again with no variation.
    Nondeterministic,
    /// Every variation was tried alone; none brought it back.
    NoSingle,
    /// `--max-builds` ran out first.
    NotIsolated,
}

struct Item {
    key: Key,
    /// `RUN at Dockerfile:5` (the step that made the key's layer), if known.
    step: Option<String>,
    found: Found,
}

/// The outcome of the search, for the text, JSON and Markdown reports.
pub(super) struct Causes {
    max_builds: u32,
    /// The rebuilds made: what each varied, and its digest (`None`: the build failed).
    tried: Vec<(Aspect, Option<String>)>,
    items: Vec<Item>,
}

pub(super) struct Job<'a> {
    pub exe: &'a Path,
    pub build: &'a BuildArgs,
    /// The global registry flags, passed on to each child build.
    pub registry_args: &'a [std::ffi::OsString],
    /// Where the runs' directories are.
    pub base: &'a Path,
    pub max_builds: u32,
}

/// Rebuilds from `first`'s conditions with one of `other`'s variations at a time until every
/// difference of `d` (`first` against `other`) has a cause or the budget is spent.
pub(super) fn find(
    job: &Job<'_>,
    first: &RunResult,
    other: &RunResult,
    d: &DiffReport,
) -> anyhow::Result<Causes> {
    let all = keys(d);
    let mut open = all.clone();
    let mut found: BTreeMap<Key, Found> = BTreeMap::new();
    let mut tried = Vec::new();
    let mut last = other.ended;
    let mut exhausted = true;
    // What the control brought back and holds no time of the run: random data, or the layout.
    let mut again_in_control: BTreeSet<Key> = BTreeSet::new();
    for aspect in ORDER {
        let layout_to_check = aspect == Aspect::Layout && !again_in_control.is_empty();
        if aspect == Aspect::Layout && !layout_to_check {
            // Two randomized layouts differ too: only what the control brought back can be it.
            continue;
        }
        if open.is_empty() && !layout_to_check {
            break;
        }
        let Some(cond) = aspect.apply(&first.cond, &other.cond) else {
            continue;
        };
        if tried.len() as u32 >= job.max_builds {
            exhausted = false;
            break;
        }
        let k = tried.len() + 1;
        let dir = job.base.join(format!("cause-{k}-{}", aspect.name()));
        fs::create_dir_all(&dir)?;
        let oci = dir.join("oci");
        after_second(Some(last));
        let built = build_once(
            job.exe,
            job.build,
            job.registry_args,
            &dir,
            &cond,
            &oci,
            false,
        );
        last = now_secs();
        let digest = match built {
            Ok(d) => d,
            Err(e) => {
                // That variation alone breaks the build: worth saying, not a verify error.
                eprintln!(
                    "cause search {k}: the build failed with {} alone: {e:#}",
                    aspect.label()
                );
                tried.push((aspect, None));
                continue;
            }
        };
        eprintln!(
            "cause search {k}: {digest} (run 1's conditions, {}{})",
            aspect.label(),
            super::verify::vary_text(&cond.vary)
                + &super::verify::store_text(&cond.store_on)
                + &super::verify::user_text(&cond.rootless)
        );
        tried.push((aspect, Some(digest.clone())));
        let spec = |p: &Path| format!("oci:{}", p.display());
        if layout_to_check {
            // The fixed layout alone gives run `n`'s bytes where the control (randomized, as
            // run 1) did not: the layout it is.
            let left = keys(&compare(&spec(&other.oci), &spec(&oci))?);
            for key in again_in_control.difference(&left) {
                found.insert(key.clone(), Found::Aspect(Aspect::Layout));
            }
        }
        if digest == first.digest {
            continue;
        }
        let again = keys(&compare(&spec(&first.oci), &spec(&oci))?);
        let back: Vec<Key> = open.intersection(&again).cloned().collect();
        for key in back {
            open.remove(&key);
            let f = match aspect {
                Aspect::Control => match time_in(d, &key, first, other) {
                    Some(t) => Found::Time(t),
                    None => {
                        again_in_control.insert(key.clone());
                        Found::Nondeterministic
                    }
                },
                a => Found::Aspect(a),
            };
            found.insert(key, f);
        }
    }
    for key in open {
        found.insert(
            key,
            if exhausted {
                Found::NoSingle
            } else {
                Found::NotIsolated
            },
        );
    }
    let steps = layer_steps(first);
    let items = found
        .into_iter()
        .map(|(key, found)| Item {
            step: key.layer.and_then(|l| steps.get(l).cloned().flatten()),
            key,
            found,
        })
        .collect();
    Ok(Causes {
        max_builds: job.max_builds,
        tried,
        items,
    })
}

/// A time of the run (Unix seconds, or `HH:MM:SS` UTC) in the differing text of `key` (run 1's
/// side or the other run's, during that run): `1764685087, a time during run 1`.
fn time_in(d: &DiffReport, key: &Key, first: &RunResult, other: &RunResult) -> Option<String> {
    let What::File(path) = &key.what else {
        return None;
    };
    let layer = d.layers.iter().find(|l| Some(l.index) == key.layer)?;
    let file = layer.files.iter().find(|f| &f.path == path)?;
    let text = file.changes.iter().find_map(|c| c.text_diff.as_deref())?;
    let run2 = format!("run {}", other.n);
    // Run 1's side first.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| !l.starts_with('-'));
    for line in lines {
        if line.starts_with("---") || line.starts_with("+++") {
            continue;
        }
        let (body, (s, e, which)) = match (line.strip_prefix('-'), line.strip_prefix('+')) {
            (Some(b), _) => (b, (first.started, first.ended, "run 1")),
            (_, Some(b)) => (b, (other.started, other.ended, run2.as_str())),
            _ => continue,
        };
        for tok in body.split(|c: char| !c.is_ascii_digit() && c != ':') {
            {
                // Unix seconds.
                if let Ok(n) = tok.parse::<i64>() {
                    if (s - 1..=e + 1).contains(&n) {
                        return Some(format!("{n}, a time during {which}"));
                    }
                }
                // HH:MM:SS (UTC: the sandbox has no TZ unless the image sets one).
                let hms: Vec<&str> = tok.split(':').collect();
                if let [h, m, sec] = hms[..] {
                    if let (Ok(h), Ok(m), Ok(sec)) =
                        (h.parse::<i64>(), m.parse::<i64>(), sec.parse::<i64>())
                    {
                        let day = h * 3600 + m * 60 + sec;
                        if (s - 1..=e + 1).any(|t| t.rem_euclid(86_400) == day) {
                            return Some(format!("{tok}, a time during {which}"));
                        }
                    }
                }
            }
        }
    }
    None
}

/// For each layer of run 1's image, the step that made it (`RUN at Dockerfile:5`), matched by
/// its history entry's `created_by` against the instructions of the Dockerfile, in order.
pub(super) fn layer_steps(first: &RunResult) -> Vec<Option<String>> {
    let Ok(img) = diff::load_image(&format!("oci:{}", first.oci.display())) else {
        return Vec::new();
    };
    let df = &first.cond.dockerfile;
    let shown = df
        .strip_prefix(&first.cond.context)
        .unwrap_or(df)
        .display()
        .to_string();
    let instructions = fs::read_to_string(df)
        .ok()
        .and_then(|t| strata_engine::frontend::parse(&shown, &t).ok())
        .map(|d| d.instructions)
        .unwrap_or_default();
    let mut at = 0;
    let mut out = Vec::new();
    let history = img.config["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for h in history {
        if h["empty_layer"].as_bool() == Some(true) {
            continue;
        }
        let by = h["created_by"].as_str().unwrap_or_default();
        let hit = (at..instructions.len())
            .chain(0..at)
            .find(|&i| instructions[i].text == by);
        out.push(hit.map(|i| {
            at = i + 1;
            let ins = &instructions[i];
            let word = ins.text.split_whitespace().next().unwrap_or("step");
            format!("{} at {shown}:{}", word.to_uppercase(), ins.span.line)
        }));
    }
    out
}

impl Item {
    /// `RUN at Dockerfile:5 wrote /cpus`.
    fn place(&self) -> String {
        let by = match (&self.step, self.key.layer) {
            (Some(s), _) => s.clone(),
            (None, Some(l)) => format!("layer {}", l + 1),
            (None, None) => String::new(),
        };
        match &self.key.what {
            What::File(p) => format!("{by} wrote {p}"),
            What::Order => format!("{by} wrote its entries in another order"),
            What::Layer => format!("{by} wrote another layer"),
            What::Config(f) => format!("config field `{f}`"),
        }
    }

    fn subject(&self) -> String {
        match &self.key.what {
            What::File(p) => p.clone(),
            What::Order => format!("layer {} (entry order)", self.key.layer.unwrap_or(0) + 1),
            What::Layer => format!("layer {}", self.key.layer.unwrap_or(0) + 1),
            What::Config(f) => format!("config {f}"),
        }
    }

    fn cause_text(&self, max_builds: u32) -> String {
        let place = self.place();
        match &self.found {
            Found::Aspect(a) => format!("cause: {} ({place})", a.label()),
            Found::Time(t) => format!("cause: the time ({place}: it holds {t})"),
            Found::Nondeterministic => format!(
                "cause: nondeterminism ({place}): it differs again under run 1's own conditions (random data, the time, a race)"
            ),
            Found::NoSingle => format!(
                "cause not found ({place}): no single variation brings the difference back (several together, or chance)"
            ),
            Found::NotIsolated => {
                format!("cause not found ({place}) within --max-builds {max_builds}")
            }
        }
    }

    fn cause_name(&self) -> Value {
        match &self.found {
            Found::Aspect(a) => a.name().into(),
            Found::Time(_) => "time".into(),
            Found::Nondeterministic => "nondeterminism".into(),
            Found::NoSingle | Found::NotIsolated => Value::Null,
        }
    }
}

impl Causes {
    /// The lines for stderr, after the diff.
    pub(super) fn text(&self) -> String {
        let mut s = String::new();
        if self.tried.is_empty() && self.max_builds == 0 {
            let _ = writeln!(s, "verify: causes not looked for (--max-builds 0)");
            return s;
        }
        let _ = writeln!(
            s,
            "verify: causes ({} rebuilds from run 1's conditions, one variation each):",
            self.tried.len()
        );
        for it in &self.items {
            let _ = writeln!(s, "  {}: {}", it.subject(), it.cause_text(self.max_builds));
        }
        s
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "max_builds": self.max_builds,
            "builds": self.tried.iter().map(|(a, d)| json!({"varied": a.name(), "digest": d, "failed": d.is_none()})).collect::<Vec<_>>(),
            "isolated": self.items.iter().all(|i| !matches!(i.found, Found::NoSingle | Found::NotIsolated)),
            "differences": self.items.iter().map(|i| json!({
                "layer": i.key.layer,
                "path": match &i.key.what { What::File(p) => Some(p), _ => None },
                "what": match &i.key.what {
                    What::File(_) => "file".to_string(),
                    What::Order => "entry order".to_string(),
                    What::Layer => "layer".to_string(),
                    What::Config(f) => format!("config {f}"),
                },
                "step": i.step,
                "cause": i.cause_name(),
                "text": i.cause_text(self.max_builds),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The Markdown section: what varied inside RUN steps, and the causes found.
pub(super) fn markdown(runs: &[RunResult], causes: Option<&Causes>) -> String {
    let mut s = String::new();
    if let Some(r) = runs.iter().find(|r| r.n == 2) {
        let v = super::verify::vary_text(&r.cond.vary)
            + &super::verify::store_text(&r.cond.store_on)
            + &super::verify::user_text(&r.cond.rootless);
        if !v.is_empty() {
            let _ = writeln!(
                s,
                "\nInside RUN steps, run 2 had{}.",
                v.trim_start_matches(',')
            );
        }
    }
    if let Some(c) = causes {
        let _ = writeln!(s, "\n**Causes:**\n");
        for it in &c.items {
            let _ = writeln!(s, "- `{}`: {}", it.subject(), it.cause_text(c.max_builds));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_texts_name_the_step_and_the_file() {
        let it = Item {
            key: Key {
                layer: Some(4),
                what: What::File("/cpus".into()),
            },
            step: Some("RUN at Dockerfile:5".into()),
            found: Found::Aspect(Aspect::Cpus),
        };
        assert_eq!(
            it.cause_text(4),
            "cause: CPU count (RUN at Dockerfile:5 wrote /cpus)"
        );
        let it = Item {
            step: None,
            found: Found::NotIsolated,
            ..it
        };
        assert_eq!(
            it.cause_text(2),
            "cause not found (layer 5 wrote /cpus) within --max-builds 2"
        );
    }
}
