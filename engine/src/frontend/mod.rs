//! The Dockerfile frontend: text → [`ast::Dockerfile`] (typed, unexpanded instructions with spans).
//!
//! - [`parse`]: lexical layer — directives (`# escape=`, `# syntax=`), comments, line continuations,
//!   heredocs, exec (JSON) vs shell form, flags. Produces typed instructions whose words are still
//!   raw (unexpanded) text.
//! - [`expand`]: BuildKit-compatible word expansion (`$VAR`, `${VAR:-x}`, quotes, escapes), used by
//!   the planner once ARG/ENV state is known.
//! - [`diag`]: `file:line:col` diagnostics with the offending line and a caret.
//!
//! Nothing here touches the filesystem or the store.

pub mod ast;
pub mod diag;
pub mod expand;
pub mod parse;

pub use ast::*;
pub use diag::Diagnostic;
pub use parse::parse;
