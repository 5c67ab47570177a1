//! The build context: `.dockerignore` rules, Go-style globbing, and safe
//! resolution of `COPY`/`ADD` sources.
//!
//! - [`glob`]: `filepath.Match`-compatible patterns ([`glob_match`], [`has_meta`]).
//! - [`ignore`]: `.dockerignore` parsing and matching with Docker's semantics
//!   ([`IgnoreMatcher`], [`load_ignore`]).
//! - [`file`]: reading the Dockerfile and `.dockerignore` without following a symlink out
//!   of the context ([`read_context_file`]).
//! - [`source`]: [`Context::resolve`] expands sources, follows top-level
//!   symlinks without leaving the context, and walks directories with `*at`
//!   system calls, applying `.dockerignore` and `--exclude`.

pub mod file;
pub mod glob;
pub mod ignore;
pub mod source;

pub use file::{read_context_file, ContextFileError};
pub use glob::{glob_match, has_meta, GlobError};
pub use ignore::{load_ignore, IgnoreError, IgnoreMatcher};
pub use source::{Context, ContextEntry, ContextError, ContextKind, ResolvedSource};
