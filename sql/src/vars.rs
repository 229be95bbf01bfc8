//! `${NAME}` placeholders, as Flink's Nexmark runner writes them.

use std::collections::HashMap;

use crate::error::{Position, Result, SqlError};

/// Replaces every `${NAME}` in `text` with its value. A placeholder with no
/// value is an error that names it and points at it.
pub fn substitute_vars(text: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(SqlError::new("unterminated ${ placeholder")
                .at(position_of(text, consumed + start)));
        };
        let name = after[..end].trim();
        match vars.get(name) {
            Some(value) => out.push_str(value),
            None => {
                return Err(
                    SqlError::new(format!("placeholder ${{{name}}} has no value"))
                        .at(position_of(text, consumed + start))
                        .with_hint(format!("pass it with --var {name}=...")),
                )
            }
        }
        let skip = start + 2 + end + 1;
        consumed += skip;
        rest = &rest[skip..];
    }
    out.push_str(rest);
    Ok(out)
}

fn position_of(text: &str, offset: usize) -> Position {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    Position { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_reports_missing() {
        let vars = HashMap::from([("TPS".to_string(), "100".to_string())]);
        assert_eq!(substitute_vars("a ${TPS} b", &vars).unwrap(), "a 100 b");
        let err = substitute_vars("x\n  '${EVENTS}'", &vars).unwrap_err();
        assert!(err.message.contains("${EVENTS}"));
        assert_eq!(err.position, Some(Position { line: 2, column: 4 }));
    }
}
