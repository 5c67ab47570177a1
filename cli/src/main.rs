//! The `strata` command line: argument parsing and presentation only; the work is done by
//! `strata-engine` and `strata-cache`.

mod args;
mod commands;
mod progress;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line; diagnostics carry their own
            // multi-line rendering (file:line:col, the line, a caret, a hint).
            eprintln!("error: {}", render(&e));
            2
        }
    };
    std::process::exit(code);
}

fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for (i, cause) in e.chain().enumerate() {
        let s = cause.to_string();
        let s = s.strip_prefix("error: ").unwrap_or(&s);
        if i > 0 {
            if out.contains(s) {
                continue;
            }
            out.push_str(": ");
        }
        out.push_str(s);
    }
    out
}
