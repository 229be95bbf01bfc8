//! Output column names as Flink gives them.

use datafusion::common::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};

/// DataFusion names a struct field access `t.bid[auction]`; Flink names
/// it `auction`. Aliases unaliased field accesses in the top projection
/// (the schema a view or query exposes), unless that would clash.
pub fn alias_field_accesses(plan: LogicalPlan) -> Result<LogicalPlan> {
    let LogicalPlan::Projection(projection) = plan else {
        return Ok(plan);
    };
    let field_name = |e: &Expr| -> Option<String> {
        let Expr::ScalarFunction(f) = e else {
            return None;
        };
        if f.name() != "get_field" {
            return None;
        }
        match f.args.last() {
            Some(Expr::Literal(v, _)) => v.try_as_str().flatten().map(str::to_string),
            _ => None,
        }
    };
    let names: Vec<String> = projection
        .expr
        .iter()
        .zip(projection.schema.fields())
        .map(|(e, f)| field_name(e).unwrap_or_else(|| f.name().clone()))
        .collect();
    let unique = names
        .iter()
        .enumerate()
        .all(|(i, n)| !names[..i].contains(n));
    if !unique || projection.expr.iter().all(|e| field_name(e).is_none()) {
        return Ok(LogicalPlan::Projection(projection));
    }
    let expr = projection
        .expr
        .into_iter()
        .map(|e| match field_name(&e) {
            Some(name) => e.alias(name),
            None => e,
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        expr,
        projection.input,
    )?))
}
