//! `strata diff A B`: compare two images; the work is in `strata_engine::diff`, the inputs
//! beyond the engine's (`store:`, `registry:`) in [`super::image_input`].

use strata_engine::diff::{self, DiffError, DiffOptions};

use super::image_input::{self, Inputs};
use super::Globals;
use crate::args::DiffArgs;

/// Exit status: 0 identical (after `--ignore`), 1 different, 2 error.
pub fn run(g: &Globals, args: DiffArgs) -> anyhow::Result<i32> {
    let resolved = Inputs::new(g, None, args.platform.as_deref()).and_then(|mut inputs| {
        let a = inputs.resolve(&args.a)?;
        let b = inputs.resolve(&args.b)?;
        Ok((inputs, a, b))
    });
    let (_inputs, a, b) = match resolved {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}", crate::render(&e));
            return Ok(2);
        }
    };
    match compare(&args, &a, &b) {
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

fn compare(
    args: &DiffArgs,
    a: &image_input::Input,
    b: &image_input::Input,
) -> Result<i32, DiffError> {
    let opts = DiffOptions::parse_ignore(args.ignore.iter().map(String::as_str))?;
    let (a, b) = rayon::join(|| image_input::load(a), || image_input::load(b));
    let (a, b) = (a?, b?);
    let mut report = diff::diff(&a, &b, &opts)?;
    if let Some(dir) = &args.diffoscope {
        let outcome = diff::diffoscope::run(&report, &a, &b, dir)?;
        if args.json {
            eprintln!("diffoscope: {}", outcome.note);
        }
        report.diffoscope = Some(outcome);
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        println!("{json}");
    } else {
        print!("{}", diff::render_text(&report));
    }
    Ok(if report.is_identical() { 0 } else { 1 })
}
