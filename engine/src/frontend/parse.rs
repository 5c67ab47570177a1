//! The Dockerfile parser. (Being written.)
use super::ast::Dockerfile;
use super::diag::Diagnostic;

/// Parses `source` (the contents of `file`) into typed instructions.
pub fn parse(file: &str, source: &str) -> Result<Dockerfile, Diagnostic> {
    let _ = (file, source);
    unimplemented!("parser")
}
