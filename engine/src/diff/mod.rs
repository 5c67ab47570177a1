//! `strata diff`: compares two images top-down and reports every difference.
//!
//! - [`load_image`] opens an OCI layout, OCI archive or docker-archive into an [`ImageSource`].
//! - [`diff`] compares two of them: index/manifest, config field by field, then layers pairwise
//!   (in parallel); a layer pair whose blobs differ is compared file by file.
//! - [`DiffReport`] is the result (serde; schema in `docs/diff.md`), [`render_text`] its
//!   rendering for people.
//!
//! [`DiffOptions::ignore`] drops whole causes (mtime, uid, order, …) for semantic comparisons.
//!
//! A file whose content differs is looked into ([`content`]): archives inside it are opened
//! ([`archive`]: tar, zip/jar/wheel, `ar`/`.deb`, gzip/xz/zstd/bzip2 streams) down to the member
//! that differs, text gets a unified diff, binaries the offset of their first difference
//! ([`binary`]), and what looks like an embedded build timestamp is flagged ([`stamp`]).
//! [`diffoscope`] runs the external tool for the full report when it is installed.

mod archive;
mod binary;
mod content;
pub mod diffoscope;
mod layer;
mod source;
mod stamp;
#[cfg(test)]
mod tests;
mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use strata_cache::Digest;

pub use layer::{contains, find_in_layer};
pub use source::{load_image, ImageSource, LayerRef, SourceKind};
pub use text::{render_text, summary};

use crate::layer::LayerError;

/// Why two things differ. The order is the rendering order: most telling first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Only one side has it.
    Presence,
    Content,
    Type,
    /// Hard-link structure: file vs hard link, or a different hard-link target.
    Hardlink,
    /// Symlink target.
    Link,
    /// A config or manifest value.
    Value,
    Mode,
    Uid,
    Gid,
    Uname,
    Gname,
    /// PAX records other than path/size/ids/times: xattrs (`SCHILY.xattr.*`) and the like.
    Xattrs,
    /// Layer blobs (or their media types) that differ only by compression.
    Compression,
    /// The config's `created` and history `created` dates.
    Created,
    /// History entries (other than their dates).
    History,
    /// Entry times: mtime (and PAX atime/ctime).
    Mtime,
    /// Entry or descriptor order.
    Order,
    /// Tar header format (ustar, gnu, pax, v7).
    Format,
}

impl Cause {
    pub const ALL: [Cause; 18] = [
        Cause::Presence,
        Cause::Content,
        Cause::Type,
        Cause::Hardlink,
        Cause::Link,
        Cause::Value,
        Cause::Mode,
        Cause::Uid,
        Cause::Gid,
        Cause::Uname,
        Cause::Gname,
        Cause::Xattrs,
        Cause::Compression,
        Cause::Created,
        Cause::History,
        Cause::Mtime,
        Cause::Order,
        Cause::Format,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cause::Presence => "presence",
            Cause::Content => "content",
            Cause::Type => "type",
            Cause::Hardlink => "hardlink",
            Cause::Link => "link",
            Cause::Value => "value",
            Cause::Mode => "mode",
            Cause::Uid => "uid",
            Cause::Gid => "gid",
            Cause::Uname => "uname",
            Cause::Gname => "gname",
            Cause::Xattrs => "xattrs",
            Cause::Compression => "compression",
            Cause::Created => "created",
            Cause::History => "history",
            Cause::Mtime => "mtime",
            Cause::Order => "order",
            Cause::Format => "format",
        }
    }
}

/// What to compare.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Causes dropped from the report (counted in [`DiffReport::ignored`]).
    pub ignore: BTreeSet<Cause>,
}

impl DiffOptions {
    /// Parses `--ignore` values: any [`Cause`] name; `uid` also ignores `uname`, `gid` also
    /// `gname`; `owner` is `uid,gid`.
    pub fn parse_ignore<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<DiffOptions, DiffError> {
        let mut ignore = BTreeSet::new();
        for n in names.into_iter().map(str::trim).filter(|n| !n.is_empty()) {
            match n {
                "uid" => ignore.extend([Cause::Uid, Cause::Uname]),
                "gid" => ignore.extend([Cause::Gid, Cause::Gname]),
                "owner" => ignore.extend([Cause::Uid, Cause::Uname, Cause::Gid, Cause::Gname]),
                _ => match Cause::ALL.iter().find(|c| c.name() == n) {
                    Some(c) => {
                        ignore.insert(*c);
                    }
                    None => return Err(DiffError::UnknownIgnore(n.to_string())),
                },
            }
        }
        Ok(DiffOptions { ignore })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("`{spec}`: {what} images are not supported yet")]
    NotSupported { spec: String, what: String },
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is not an image: {reason}", path.display())]
    NotAnImage { path: PathBuf, reason: String },
    #[error("`{}` has no image tagged `{tag}` (tags: {available})", path.display())]
    NoSuchTag {
        path: PathBuf,
        tag: String,
        available: String,
    },
    #[error("`{}` holds several images and none is tagged `latest` (tags: {available})", path.display())]
    Ambiguous { path: PathBuf, available: String },
    #[error("layer `{}`: {reason}", path.display())]
    BadLayer { path: PathBuf, reason: String },
    #[error("unknown --ignore value `{0}`")]
    UnknownIgnore(String),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

impl DiffError {
    /// A likely fix, shown as `hint:` by the CLI.
    pub fn hint(&self) -> Option<String> {
        match self {
            DiffError::NotSupported { .. } => Some(
                "name an image in strata's store `store:NAME[:TAG]`, one in a registry `registry:HOST/NAME:TAG`; for other sources, export the image first (`skopeo copy … oci:DIR`) and diff `oci:DIR`".into(),
            ),
            DiffError::Io { .. } | DiffError::NotAnImage { .. } => Some(
                "give `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE`, a path to one of them, `store:NAME[:TAG]` or `registry:REF`".into(),
            ),
            DiffError::NoSuchTag { .. } | DiffError::Ambiguous { .. } => {
                Some("name the image as `oci:DIR:TAG`".into())
            }
            DiffError::UnknownIgnore(_) => Some(format!(
                "known: owner, {}",
                Cause::ALL.map(Cause::name).join(", ")
            )),
            _ => None,
        }
    }
}

/// One side's identity in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SideInfo {
    pub spec: String,
    pub kind: SourceKind,
    pub manifest_digest: Option<Digest>,
    pub config_digest: Digest,
}

/// A manifest or config field that differs. `a`/`b` are `None` when absent on that side.
#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub cause: Cause,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    pub cause: Cause,
    pub a: Option<String>,
    pub b: Option<String>,
    /// For UTF-8 files whose content differs: a unified diff (at most ~20 lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_diff: Option<String>,
    /// For content that differs: what a deeper look found (archive members, the first binary
    /// difference, embedded timestamps, limits hit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<ContentDetail>>,
}

impl FileChange {
    pub(crate) fn new(cause: Cause, a: Option<String>, b: Option<String>) -> FileChange {
        FileChange {
            cause,
            a,
            b,
            text_diff: None,
            detail: None,
        }
    }

    /// Attaches what [`content::inspect`] found: its text diff as `text_diff`, the rest as
    /// `detail` (unless empty).
    pub(crate) fn attach(&mut self, mut d: ContentDetail) {
        if let Some(t) = d.text_diff.take() {
            self.text_diff = Some(t);
        }
        if !d.is_empty() {
            self.detail = Some(Box::new(d));
        }
    }
}

/// What a deeper look into two differing contents found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContentDetail {
    /// What both sides were opened as: `tar`, `zip`, `ar`, or a compression (`gzip`, `xz`,
    /// `zstd`, `bzip2`) followed by what it holds (`gzip+tar`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Members that differ, most telling first; paths are `OUTER!/MEMBER`, nested as deep as
    /// archives were opened.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<FileDiff>,
    /// Members in another order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderDiff>,
    /// Moved into [`FileChange::text_diff`] when attached.
    #[serde(skip)]
    pub text_diff: Option<String>,
    /// Binary content: where it first differs and what is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryDiff>,
    /// Values in the differing regions that look like dates or times and differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timestamps: Vec<Timestamp>,
    /// Limits hit, formats not opened, differences outside the members.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ContentDetail {
    pub fn is_empty(&self) -> bool {
        self.archive.is_none()
            && self.members.is_empty()
            && self.order.is_none()
            && self.text_diff.is_none()
            && self.binary.is_none()
            && self.timestamps.is_empty()
            && self.notes.is_empty()
    }
}

/// Where two binary contents first differ, with a hex and ASCII window of both sides there.
#[derive(Debug, Clone, Serialize)]
pub struct BinaryDiff {
    /// Byte offset of the first difference (the shorter length when one is a prefix).
    pub offset: u64,
    pub a_size: u64,
    pub b_size: u64,
    /// Bytes that differ, when both sides have the same length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differing_bytes: Option<u64>,
    /// `xxd`-style lines around `offset`.
    pub a: Vec<String>,
    pub b: Vec<String>,
}

/// A value that looks like a build timestamp, on one side or both, in a differing region.
#[derive(Debug, Clone, Serialize)]
pub struct Timestamp {
    /// `iso8601`, `date` (the `date` command's default output), `rfc2822`, `unix` (seconds);
    /// `A / B` when the two sides write it in different formats.
    pub format: String,
    pub a: Option<String>,
    pub b: Option<String>,
    /// Where: `line N` in text, `offset 0x…` in binary content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileDiff {
    /// Absolute path in the image (`/` + layer path).
    pub path: String,
    /// Most telling first.
    pub changes: Vec<FileChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderDiff {
    /// Paths in both layers.
    pub common_paths: usize,
    /// Both layers hold exactly the same paths.
    pub same_set: bool,
    /// Index (among common paths) of the first difference, and the paths there.
    pub first_at: usize,
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerStatus {
    /// Same blob digest.
    Identical,
    /// Same diff_id (uncompressed tar), different blobs.
    CompressionOnly,
    /// Different tars; see `files` and `order`.
    Different,
    OnlyInA,
    OnlyInB,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub digest: Option<Digest>,
    /// sha256 of the tar as read (`None` when not read: identical blobs).
    pub diff_id: Option<Digest>,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerDiff {
    /// 0-based.
    pub index: usize,
    pub status: LayerStatus,
    /// Whether a difference remains after `--ignore`.
    pub differs: bool,
    pub a: Option<LayerInfo>,
    pub b: Option<LayerInfo>,
    pub files: Vec<FileDiff>,
    pub order: Option<OrderDiff>,
    /// Bounds of the look into differing files that were hit for this layer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Schema version of this JSON (docs/diff.md).
    pub version: u32,
    pub a: SideInfo,
    pub b: SideInfo,
    pub notes: Vec<String>,
    pub manifest: Vec<FieldChange>,
    pub config: Vec<FieldChange>,
    pub layers: Vec<LayerDiff>,
    /// Differences dropped by `--ignore`, counted by cause.
    pub ignored: BTreeMap<Cause, usize>,
    /// What `--diffoscope DIR` did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diffoscope: Option<diffoscope::Outcome>,
}

impl DiffReport {
    /// No difference left after the ignores.
    pub fn is_identical(&self) -> bool {
        self.manifest.is_empty() && self.config.is_empty() && !self.layers.iter().any(|l| l.differs)
    }
}

fn side(s: &ImageSource) -> SideInfo {
    SideInfo {
        spec: s.spec.clone(),
        kind: s.kind,
        manifest_digest: s.manifest_digest,
        config_digest: s.config_digest,
    }
}

/// Compares `a` with `b`. Errors only when an image cannot be read.
pub fn diff(a: &ImageSource, b: &ImageSource, opts: &DiffOptions) -> Result<DiffReport, DiffError> {
    let ign = |c: Cause| opts.ignore.contains(&c);
    let mut ignored = BTreeMap::new();
    let mut notes = Vec::new();

    let n = a.layers.len().max(b.layers.len());
    let pairs: Vec<(LayerDiff, BTreeMap<Cause, usize>)> = (0..n)
        .into_par_iter()
        .map(|i| diff_layer(i, a.layers.get(i), b.layers.get(i), &ign))
        .collect::<Result<_, _>>()?;
    let mut layers = Vec::with_capacity(n);
    for (l, counts) in pairs {
        for (c, k) in counts {
            *ignored.entry(c).or_default() += k;
        }
        layers.push(l);
    }

    for (name, img, side) in [("A", a, 0), ("B", b, 1)] {
        for l in &layers {
            let info = if side == 0 { &l.a } else { &l.b };
            let (Some(found), Some(claimed)) = (
                info.as_ref().and_then(|i| i.diff_id),
                img.config["rootfs"]["diff_ids"][l.index].as_str(),
            ) else {
                continue;
            };
            if found.to_string() != claimed {
                notes.push(format!(
                    "{name}: layer {} has diff_id {found}, its config says {claimed}",
                    l.index + 1
                ));
            }
        }
    }

    let mut manifest = Vec::new();
    match (&a.manifest, &b.manifest) {
        (Some(ma), Some(mb)) => {
            // index.json is the layout's table of contents, not part of the image: tag names
            // and the index's own fields differ between copies of one image. Compare the
            // image's descriptor without its names; mention the rest as notes.
            let mut index_notes = Vec::new();
            let ia = strip_index(a.index.as_ref());
            let ib = strip_index(b.index.as_ref());
            walk("index", &ia, &ib, &mut index_notes, &|_| Cause::Value);
            notes.extend(index_notes.iter().map(|c| {
                format!("index.json differs (not compared as part of the image): {}", c.field)
            }));
            let da = strip_descriptor(a.descriptor.as_ref());
            let db = strip_descriptor(b.descriptor.as_ref());
            walk("descriptor", &da, &db, &mut manifest, &|_| Cause::Value);
            let (ma, la) = strip_manifest(ma);
            let (mb, lb) = strip_manifest(mb);
            walk("manifest", &ma, &mb, &mut manifest, &|_| Cause::Value);
            manifest_layers(&la, &lb, &layers, &mut manifest);
        }
        _ => notes.push(
            "an old-shape docker-archive has no OCI index or manifest: they were not compared, nor layer compression".into(),
        ),
    }

    let mut config = Vec::new();
    walk("", &a.config, &b.config, &mut config, &config_cause);
    // rootfs.diff_ids follow from the layers: keep them only where the layers still differ.
    config.retain(|c| match c.field.strip_prefix("rootfs.diff_ids[") {
        Some(rest) => {
            let i: usize = rest.trim_end_matches(']').parse().unwrap_or(usize::MAX);
            !matches!(layers.get(i), Some(l) if !l.differs)
        }
        None => true,
    });

    let keep = |list: &mut Vec<FieldChange>, ignored: &mut BTreeMap<Cause, usize>| {
        list.retain(|c| {
            let history = c.field.starts_with("history");
            let drop = ign(c.cause) || (history && ign(Cause::History));
            if drop {
                *ignored.entry(c.cause).or_default() += 1;
            }
            !drop
        });
        // rootfs.diff_ids follow from the layers: the least telling, listed last.
        list.sort_by_key(|c| (c.field.starts_with("rootfs.diff_ids"), c.cause));
    };
    keep(&mut manifest, &mut ignored);
    keep(&mut config, &mut ignored);

    Ok(DiffReport {
        version: 1,
        a: side(a),
        b: side(b),
        notes,
        manifest,
        config,
        layers,
        ignored,
        diffoscope: None,
    })
}

fn info(l: &LayerRef, diff_id: Option<Digest>) -> LayerInfo {
    LayerInfo {
        digest: l.digest,
        diff_id,
        media_type: l.media_type.clone(),
        size: l.size,
    }
}

type LayerResult = Result<(LayerDiff, BTreeMap<Cause, usize>), DiffError>;

fn diff_layer(
    index: usize,
    la: Option<&LayerRef>,
    lb: Option<&LayerRef>,
    ign: &(dyn Fn(Cause) -> bool + Sync),
) -> LayerResult {
    let mut counts = BTreeMap::new();
    let mut d = LayerDiff {
        index,
        status: LayerStatus::Identical,
        differs: false,
        a: la.map(|l| info(l, None)),
        b: lb.map(|l| info(l, None)),
        files: Vec::new(),
        order: None,
        notes: Vec::new(),
    };
    let (la, lb) = match (la, lb) {
        (Some(x), Some(y)) => (x, y),
        (Some(_), None) | (None, Some(_)) => {
            d.status = if la.is_some() {
                LayerStatus::OnlyInA
            } else {
                LayerStatus::OnlyInB
            };
            d.differs = true;
            return Ok((d, counts));
        }
        (None, None) => unreachable!("index below the longer layer list"),
    };
    if la.digest.is_some() && la.digest == lb.digest {
        return Ok((d, counts));
    }
    let (sa, sb) = rayon::join(|| layer::summarize(la), || layer::summarize(lb));
    let (sa, sb) = (sa?, sb?);
    d.a = Some(info(la, sa.diff_id));
    d.b = Some(info(lb, sb.diff_id));
    if sa.diff_id == sb.diff_id {
        // An old-shape docker-archive has no blob of its own: nothing to say about compression.
        if la.digest.is_some() && lb.digest.is_some() {
            d.status = LayerStatus::CompressionOnly;
            if ign(Cause::Compression) {
                counts.insert(Cause::Compression, 1);
            } else {
                d.differs = true;
            }
        }
        return Ok((d, counts));
    }
    d.status = LayerStatus::Different;
    let (mut files, order) = layer::compare(&sa, &sb, ign, &mut counts);
    d.notes = layer::add_details(&mut files, la, lb, &sa, &sb)?;
    // Different tars with no modelled difference left (all ignored, or e.g. only padding
    // differs) count as equal: `status` still says the tars differ.
    d.differs = !files.is_empty() || order.is_some();
    d.files = files;
    d.order = order;
    Ok((d, counts))
}

/// `index.json` without what the layer and config comparisons already cover.
fn strip_index(v: Option<&Value>) -> Value {
    let mut v = v.cloned().unwrap_or(Value::Null);
    if let Some(ms) = v.get_mut("manifests").and_then(Value::as_array_mut) {
        for m in ms {
            if let Some(o) = m.as_object_mut() {
                o.remove("digest");
                o.remove("size");
            }
        }
    }
    v
}

/// The manifest's descriptor without digest, size, and the annotations that name it.
fn strip_descriptor(v: Option<&Value>) -> Value {
    let mut v = v.cloned().unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("digest");
        o.remove("size");
        if let Some(a) = o.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("org.opencontainers.image.ref.name");
            a.remove("io.containerd.image.name");
            if a.is_empty() {
                o.remove("annotations");
            }
        }
    }
    v
}

/// The manifest without its layer list (compared by [`manifest_layers`]) and config digest.
fn strip_manifest(m: &Value) -> (Value, Vec<Value>) {
    let mut m = m.clone();
    let layers = m
        .as_object_mut()
        .and_then(|o| o.remove("layers"))
        .and_then(|l| l.as_array().cloned())
        .unwrap_or_default();
    if let Some(c) = m.get_mut("config").and_then(Value::as_object_mut) {
        c.remove("digest");
        c.remove("size");
    }
    (m, layers)
}

fn manifest_layers(la: &[Value], lb: &[Value], layers: &[LayerDiff], out: &mut Vec<FieldChange>) {
    if la.len() != lb.len() {
        out.push(FieldChange {
            field: "manifest.layers.length".into(),
            cause: Cause::Value,
            a: Some(la.len().into()),
            b: Some(lb.len().into()),
        });
    }
    let digests = |l: &[Value]| -> Vec<String> {
        l.iter()
            .map(|d| d["digest"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (da, db) = (digests(la), digests(lb));
    if da != db {
        let (mut sa, mut sb) = (da.clone(), db.clone());
        sa.sort();
        sb.sort();
        if sa == sb {
            out.push(FieldChange {
                field: "manifest.layers (descriptor order)".into(),
                cause: Cause::Order,
                a: Some(da.into()),
                b: Some(db.into()),
            });
        }
    }
    for (i, (x, y)) in la.iter().zip(lb).enumerate() {
        let mut x = x.clone();
        let mut y = y.clone();
        for v in [&mut x, &mut y] {
            if let Some(o) = v.as_object_mut() {
                o.remove("digest");
                o.remove("size");
            }
        }
        let compression_only = layers
            .get(i)
            .is_some_and(|l| l.status == LayerStatus::CompressionOnly);
        walk(&format!("manifest.layers[{i}]"), &x, &y, out, &|f| {
            if f.ends_with(".mediaType") && compression_only {
                Cause::Compression
            } else {
                Cause::Value
            }
        });
    }
}

fn config_cause(field: &str) -> Cause {
    if field == "created" || (field.starts_with("history[") && field.ends_with("].created")) {
        Cause::Created
    } else if field.starts_with("history") {
        Cause::History
    } else {
        Cause::Value
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Field-by-field comparison: objects per key; `Env` per variable; `history` and
/// `rootfs.diff_ids` per index; other arrays as whole values.
fn walk(
    field: &str,
    a: &Value,
    b: &Value,
    out: &mut Vec<FieldChange>,
    cause: &dyn Fn(&str) -> Cause,
) {
    if a == b {
        return;
    }
    let push = |out: &mut Vec<FieldChange>, f: String, x: Option<&Value>, y: Option<&Value>| {
        out.push(FieldChange {
            cause: cause(&f),
            field: f,
            a: x.cloned(),
            b: y.cloned(),
        });
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let f = join(field, k);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(&f, va, vb, out, cause),
                    (va, vb) => push(out, f, va, vb),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if field.ends_with("Env") => {
            let vars = |l: &[Value]| -> BTreeMap<String, Value> {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(|s| {
                        let (k, v) = s.split_once('=').unwrap_or((s, ""));
                        (k.to_string(), Value::String(v.to_string()))
                    })
                    .collect()
            };
            let (vx, vy) = (vars(x), vars(y));
            if vx == vy {
                out.push(FieldChange {
                    field: format!("{field} (order)"),
                    cause: Cause::Order,
                    a: Some(a.clone()),
                    b: Some(b.clone()),
                });
                return;
            }
            let keys: BTreeSet<&String> = vx.keys().chain(vy.keys()).collect();
            for k in keys {
                if vx.get(k) != vy.get(k) {
                    push(out, format!("{field}[{k}]"), vx.get(k), vy.get(k));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if field == "history" || field == "rootfs.diff_ids" => {
            for i in 0..x.len().max(y.len()) {
                let f = format!("{field}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(&f, va, vb, out, cause),
                    (va, vb) => push(out, f, va, vb),
                }
            }
        }
        _ => push(out, field.to_string(), Some(a), Some(b)),
    }
}
