//! The planner's one error type: what went wrong, kept typed (a SQL
//! mistake Weir found, DataFusion's error, a connector's, a setting's)
//! until the caller renders it as a message with a position and a hint.

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use weir_connectors::ConnectorError;
use weir_sql::{Position, SqlError};

use crate::settings::SettingError;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A mistake in the statement, found by Weir.
    #[error("{0}")]
    Sql(#[from] SqlError),
    /// DataFusion could not plan it.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// A connector refused the stream's options.
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    /// `SET` or `RESET` of an unknown key or a bad value.
    #[error("{0}")]
    Setting(#[from] SettingError),
}

pub type Result<T, E = PlanError> = std::result::Result<T, E>;

impl PlanError {
    /// The error as the user reads it: a message, where, and a hint.
    pub fn to_sql(&self) -> SqlError {
        match self {
            PlanError::Sql(e) => e.clone(),
            PlanError::DataFusion(e) => df_error(e),
            PlanError::Connector(e) => SqlError::new(e.message.clone()),
            PlanError::Setting(e) => SqlError::new(e.to_string()).with_hint(e.hint()),
        }
    }

    /// The error pointing at `position` unless it points somewhere already.
    pub fn or_at(self, position: Position) -> Self {
        let mut error = self.to_sql();
        if error.position.is_none() {
            error.position = Some(position);
        }
        PlanError::Sql(error)
    }
}

/// A DataFusion error in Weir's words, with the position DataFusion's
/// diagnostics carry and, for a missing column, the nearest one.
pub fn df_error(e: &DataFusionError) -> SqlError {
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
        })
        .or_else(|| field_hint(e));
    let mut message = e.strip_backtrace();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Internal error: ",
        "External error: ",
    ] {
        message = message.replace(prefix, "");
    }
    SqlError {
        message: message.lines().next().unwrap_or_default().to_string(),
        position,
        hint,
    }
}

/// "No field named bidr": the nearest field DataFusion lists.
fn field_hint(e: &DataFusionError) -> Option<String> {
    let DataFusionError::SchemaError(schema_error, _) = e.find_root() else {
        return None;
    };
    let SchemaError::FieldNotFound {
        field,
        valid_fields,
    } = schema_error.as_ref()
    else {
        return None;
    };
    let nearest = crate::catalog::nearest(field.name(), valid_fields.iter().map(|f| f.name()))?;
    Some(format!("did you mean `{nearest}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::Column;

    #[test]
    fn suggests_the_nearest_field() {
        let e = DataFusionError::SchemaError(
            Box::new(SchemaError::FieldNotFound {
                field: Box::new(Column::from_name("bidr")),
                valid_fields: ["auction", "bidder", "price"]
                    .iter()
                    .map(|n| Column::new(Some("bid"), *n))
                    .collect(),
            }),
            Box::new(None),
        );
        assert_eq!(df_error(&e).hint.as_deref(), Some("did you mean `bidder`?"));
    }
}
