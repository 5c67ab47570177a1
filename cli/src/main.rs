//! The `strata` command line: argument parsing and presentation only; the work is done by
//! `strata-engine` and `strata-cache`.

mod args;
mod commands;
mod progress;
mod signals;

use clap::Parser;

fn main() {
    // The RUN sandbox re-executes this binary; it must not see clap (nor anything else).
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("__sandbox-init")) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        strata_engine::sandbox::init_main(&args);
    }
    let cli = args::Cli::parse();
    if matches!(cli.command, args::Command::Build(_)) {
        signals::install();
    }
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line; diagnostics carry their own
            // multi-line rendering (file:line:col, the line, a caret, a hint).
            eprintln!("error: {}", render(&e));
            signals::exit_code().unwrap_or(2)
        }
    };
    std::process::exit(code);
}

pub(crate) fn render(e: &anyhow::Error) -> String {
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
