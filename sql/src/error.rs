//! SQL errors that point at the user's text.

use std::fmt;

use sqlparser::parser::ParserError;
use sqlparser::tokenizer::{Location, TokenizerError};

/// A line/column position (both from 1) in the text given to [`crate::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl From<Location> for Position {
    fn from(l: Location) -> Self {
        Position {
            line: l.line,
            column: l.column,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// An error in a SQL text: what is wrong, where, and what might fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
    pub position: Option<Position>,
    pub hint: Option<String>,
}

impl SqlError {
    pub fn new(message: impl Into<String>) -> Self {
        SqlError {
            message: message.into(),
            position: None,
            hint: None,
        }
    }

    pub fn at(mut self, position: impl Into<Position>) -> Self {
        let p = position.into();
        if p.line > 0 {
            self.position = Some(p);
        }
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error with the offending line of `source` and a caret under
    /// the column, the way compilers show it. Secret option values in the
    /// line are masked.
    pub fn render(&self, source: &str) -> String {
        let mut out = format!("error: {}", self.message);
        if let Some(p) = self.position {
            out.push_str(&format!("\n  --> {p}"));
            // Secrets are masked in the echo; the caret stays on its character.
            if let Some((line, column)) = crate::secrets::masked_line(source, p.line, p.column) {
                let number = p.line.to_string();
                let pad = " ".repeat(number.len());
                let caret_at: usize = line
                    .chars()
                    .take((column as usize).saturating_sub(1))
                    .map(|c| if c == '\t' { 4 } else { 1 })
                    .sum();
                let line = line.replace('\t', "    ");
                out.push_str(&format!(
                    "\n {pad} |\n {number} | {line}\n {pad} | {}^",
                    " ".repeat(caret_at)
                ));
            }
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("\n  = hint: {hint}"));
        }
        out
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(p) = self.position {
            write!(f, " (at {p})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SqlError {}

/// Splits sqlparser's "... at Line: L, Column: C" suffix into a position.
fn split_location(message: &str) -> (String, Option<Position>) {
    if let Some(i) = message.rfind(" at Line: ") {
        let rest = &message[i + " at Line: ".len()..];
        let mut parts = rest.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let column = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return (message[..i].to_string(), Some(Position { line, column }));
        }
    }
    (message.to_string(), None)
}

impl From<ParserError> for SqlError {
    fn from(e: ParserError) -> Self {
        let text = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "the statement is nested too deeply".to_string(),
        };
        let (message, position) = split_location(&text);
        let hint = hint_for(&message);
        SqlError {
            message: message
                .replace("Expected: ", "expected ")
                .replace(", found: ", ", found "),
            position,
            hint,
        }
    }
}

impl From<TokenizerError> for SqlError {
    fn from(e: TokenizerError) -> Self {
        SqlError::new(e.message).at(e.location)
    }
}

/// A hint for common mistakes, keyed on the parser's message.
fn hint_for(message: &str) -> Option<String> {
    if message.contains("found: EOF") {
        Some("the statement ended early; is a closing parenthesis or a clause missing?".into())
    } else if message.contains("Expected: end of statement") {
        Some("separate statements with ';'".into())
    } else {
        None
    }
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;
