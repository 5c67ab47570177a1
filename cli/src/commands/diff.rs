//! `strata diff A B`: compare two images; the work is in `strata_engine::diff`.

use std::path::Path;

use strata_engine::diff::{self, DiffError, DiffOptions};
use strata_engine::export::{self, ImageName};

use crate::args::DiffArgs;

/// Exit status: 0 identical (after `--ignore`), 1 different, 2 error.
pub fn run(store_dir: &Path, mut args: DiffArgs) -> anyhow::Result<i32> {
    // `store:NAME[:TAG]` — an image in strata's store: exported (hard links) to a temporary OCI
    // layout and compared from there, like any other layout.
    let tmp = tempfile::Builder::new().prefix("strata-diff-").tempdir()?;
    for (i, spec) in [&mut args.a, &mut args.b].into_iter().enumerate() {
        if let Some(name) = spec.strip_prefix("store:") {
            match from_store(store_dir, name, &tmp.path().join(format!("img{i}"))) {
                Ok(s) => *spec = s,
                Err(e) => {
                    eprintln!("error: {}", crate::render(&e));
                    return Ok(2);
                }
            }
        }
    }
    match compare(&args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            Ok(2)
        }
    }
}

fn from_store(store_dir: &Path, name: &str, dir: &Path) -> anyhow::Result<String> {
    let store = super::open_store(store_dir)?;
    let (full, tag) = super::find_tag(&store, name)?;
    // The image only: the diff compares images, not their attestations.
    let (img, _) =
        strata_engine::attest::stored_image(store.blobs(), &tag.manifest, &tag.media_type)?;
    let n = ImageName::parse(&full)?;
    export::write_oci_dir(store.blobs(), &img, None, std::slice::from_ref(&n), dir)?;
    Ok(format!("oci:{}:{}", dir.display(), n.tag))
}

fn compare(args: &DiffArgs) -> Result<i32, DiffError> {
    let opts = DiffOptions::parse_ignore(args.ignore.iter().map(String::as_str))?;
    let (a, b) = rayon::join(|| diff::load_image(&args.a), || diff::load_image(&args.b));
    let report = diff::diff(&a?, &b?, &opts)?;
    if args.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        println!("{json}");
    } else {
        print!("{}", diff::render_text(&report));
    }
    Ok(if report.is_identical() { 0 } else { 1 })
}
