//! Planning errors as [`SqlError`]s: a message, a position, a hint.

use datafusion::error::DataFusionError;
use weir_sql::{Position, SqlError};

/// Converts a DataFusion error, keeping the position DataFusion's
/// diagnostics carry and turning its wording into Weir's.
pub fn df_error(e: DataFusionError) -> SqlError {
    let position = e.diagnostic().and_then(|d| d.span).map(|s| Position {
        line: s.start.line,
        column: s.start.column,
    });
    let hint = e
        .diagnostic()
        .and_then(|d| d.helps.first().map(|h| h.message.clone()))
        .or_else(|| {
            e.diagnostic()
                .and_then(|d| d.notes.first().map(|n| n.message.clone()))
        });
    let mut message = e.strip_backtrace();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Internal error: ",
    ] {
        message = message.replace(prefix, "");
    }
    // "No field named bidr. Valid fields are ..." → suggest the nearest.
    let hint = hint.or_else(|| field_hint(&message));
    SqlError {
        message: message.lines().next().unwrap_or_default().to_string(),
        position,
        hint,
    }
}

fn field_hint(message: &str) -> Option<String> {
    let rest = message.split("No field named ").nth(1)?;
    let (name, valid) = rest.split_once(". Valid fields are ")?;
    let name = name.trim_matches(|c| c == '"' || c == '`' || c == '\'');
    let candidates: Vec<String> = valid
        .trim_end_matches('.')
        .split(", ")
        .map(|f| {
            f.rsplit('.')
                .next()
                .unwrap_or(f)
                .trim_matches(|c| c == '"' || c == '`')
                .to_string()
        })
        .collect();
    let nearest = crate::catalog::nearest(
        name.rsplit('.').next().unwrap_or(name),
        candidates.iter().map(String::as_str),
    )?;
    Some(format!("did you mean `{nearest}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_field() {
        let hint =
            field_hint("No field named bidr. Valid fields are bid.auction, bid.bidder, bid.price.");
        assert_eq!(hint.as_deref(), Some("did you mean `bidder`?"));
    }
}
