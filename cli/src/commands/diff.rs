//! `strata diff A B`: compare two images; the work is in `strata_engine::diff`.

use strata_engine::diff::{self, DiffError, DiffOptions};

use crate::args::DiffArgs;

/// Exit status: 0 identical (after `--ignore`), 1 different, 2 error.
pub fn run(args: DiffArgs) -> anyhow::Result<i32> {
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
