//! Diagnostics that point into a Dockerfile: `error: …`, `--> file:line:col`, the line, a caret.

use std::fmt;

use crate::frontend::ast::Span;

/// An error located in a source file. `Display` renders it the way users read it:
///
/// ```text
/// error: unknown instruction `COPPY`
///   --> Dockerfile:3:1
///    |
///  3 | COPPY a b
///    | ^^^^^
/// hint: did you mean `COPY`?
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What went wrong, one line, no trailing period.
    pub message: String,
    /// File name as the user gave it (e.g. `Dockerfile`, `app/Dockerfile.prod`).
    pub file: String,
    pub span: Span,
    /// The full text of the line `span.line` (without newline), for the caret display.
    pub line_text: String,
    /// A likely fix, if there is one.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Builds a diagnostic, taking the line text from `source`.
    pub fn new(file: &str, source: &str, span: Span, message: impl Into<String>) -> Self {
        let line_text = source
            .lines()
            .nth(span.line.saturating_sub(1))
            .unwrap_or("")
            .to_string();
        Diagnostic {
            message: message.into(),
            file: file.to_string(),
            span,
            line_text,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The leading `error: ` is printed by whoever reports the error (the CLI prints
        // `error: {diag}`), so Display starts with the message.
        writeln!(f, "{}", self.message)?;
        let num = self.span.line.to_string();
        let pad = " ".repeat(num.len());
        writeln!(
            f,
            "{pad}--> {}:{}:{}",
            self.file, self.span.line, self.span.col
        )?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{num} | {}", self.line_text)?;
        // Columns count characters, so the caret lines up for non-ASCII text too.
        let indent: String = self
            .line_text
            .chars()
            .take(self.span.col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        // Never past the end of the line (an ONBUILD trigger's spans all point at its FROM).
        let room = self
            .line_text
            .chars()
            .count()
            .saturating_sub(self.span.col.saturating_sub(1));
        let carets = "^".repeat(self.span.len.min(room).max(1));
        write!(f, "{pad} | {indent}{carets}")?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_and_caret() {
        let src = "FROM scratch\nCOPPY a b\n";
        let d = Diagnostic::new(
            "Dockerfile",
            src,
            Span {
                line: 2,
                col: 1,
                len: 5,
            },
            "unknown instruction `COPPY`",
        )
        .with_hint("did you mean `COPY`?");
        let s = d.to_string();
        assert_eq!(
            s,
            "unknown instruction `COPPY`\n --> Dockerfile:2:1\n  |\n2 | COPPY a b\n  | ^^^^^\nhint: did you mean `COPY`?"
        );
    }
}
