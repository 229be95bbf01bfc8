//! Flink's temporal join, `JOIN dim FOR SYSTEM_TIME AS OF probe.t AS d`:
//! the versioned relation is renamed so that the planner's catalog knows
//! it is joined as of `t` ([`lookup_name`]), and the clause is taken out
//! of the statement so DataFusion plans an ordinary join. Without an
//! alias, the relation keeps its own name as its alias.

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, SetExpr, TableAlias, TableFactor, TableVersion,
};

use crate::error::{Result, SqlError};

const PREFIX: &str = "__weir_lookup__";
const AS_OF: &str = "__as_of__";

/// The catalog name of `table` joined `FOR SYSTEM_TIME AS OF` column
/// `as_of`.
pub fn lookup_name(table: &str, as_of: &str) -> String {
    format!("{PREFIX}{as_of}{AS_OF}{table}")
}

/// `(table, as_of)` of a name from [`lookup_name`].
pub fn parse_lookup_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (as_of, table) = rest.split_once(AS_OF)?;
    Some((table, as_of))
}

/// Renames every relation of `query` joined `FOR SYSTEM_TIME AS OF`.
pub(crate) fn mark_temporal_joins(query: &mut Query) -> Result<()> {
    set_expr(&mut query.body)
}

fn set_expr(body: &mut SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) => {
            for table in &mut select.from {
                factor(&mut table.relation)?;
                for join in &mut table.joins {
                    factor(&mut join.relation)?;
                }
            }
            Ok(())
        }
        SetExpr::Query(q) => mark_temporal_joins(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr(left)?;
            set_expr(right)
        }
        _ => Ok(()),
    }
}

fn factor(factor: &mut TableFactor) -> Result<()> {
    match factor {
        TableFactor::Derived { subquery, .. } => mark_temporal_joins(subquery),
        TableFactor::Table {
            name,
            alias,
            version,
            ..
        } => {
            let Some(found) = version.take() else {
                return Ok(());
            };
            let TableVersion::ForSystemTimeAsOf(expr) = found else {
                return Err(SqlError::new(
                    "only FOR SYSTEM_TIME AS OF <time attribute> versions a table",
                ));
            };
            let as_of = match &expr {
                Expr::Identifier(ident) => ident.value.clone(),
                Expr::CompoundIdentifier(parts) => parts
                    .last()
                    .map(|i| i.value.clone())
                    .unwrap_or_default(),
                other => {
                    return Err(SqlError::new(format!(
                        "FOR SYSTEM_TIME AS OF {other}: expected a time attribute of the other side, as o.proc_time"
                    )))
                }
            };
            let Some(ObjectNamePart::Identifier(table)) = name.0.last().cloned() else {
                return Ok(());
            };
            if alias.is_none() {
                *alias = Some(TableAlias {
                    explicit: true,
                    name: table.clone(),
                    columns: vec![],
                    at: None,
                });
            }
            let renamed = Ident::with_quote('`', lookup_name(&table.value, &as_of));
            *name = ObjectName(vec![ObjectNamePart::Identifier(renamed)]);
            Ok(())
        }
        _ => Ok(()),
    }
}
