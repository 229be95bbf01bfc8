//! Flink's `AVG` of an integer column: a number of that type, the sum
//! divided by the count with the quotient truncated (Nexmark q4 relies on
//! it), where DataFusion's `AVG` casts the column to a double.
//!
//! Each `AVG(x)` of an integer `x` in an aggregate becomes `SUM(x)` and
//! `COUNT(x)` (keeping its `DISTINCT` and `FILTER`), and a projection
//! above divides them under the `AVG`'s own output name, so the plan
//! above reads the same column. `SUM` and `COUNT` keep DataFusion's fast
//! grouped accumulators and retract like any other aggregate.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    cast, Aggregate, BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, Projection,
};

use crate::error::Result;

/// `plan` with every integer `AVG` computed as Flink computes it.
pub(crate) fn flink_avg(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up(|node| match node {
            LogicalPlan::Aggregate(agg) => rewrite(agg),
            other => Ok(Transformed::no(other)),
        })?
        .data)
}

/// The integer expression an `AVG` averages, if it is one. This runs on
/// the plan as SQL gives it, before DataFusion's analyzer casts the
/// argument to a double (an `AVG(CAST(x AS DOUBLE))` written so stays).
fn integer_argument(expr: &Expr, schema: &DFSchema) -> Option<(Expr, DataType)> {
    let Expr::AggregateFunction(f) = expr else {
        return None;
    };
    if !f.func.name().eq_ignore_ascii_case("avg") || f.params.args.len() != 1 {
        return None;
    }
    let argument = f.params.args[0].clone();
    let data_type = argument.get_type(schema).ok()?;
    data_type.is_integer().then_some((argument, data_type))
}

fn rewrite(agg: Aggregate) -> datafusion::common::Result<Transformed<LogicalPlan>> {
    let schema = agg.input.schema().clone();
    let averages: Vec<Option<(Expr, DataType)>> = agg
        .aggr_expr
        .iter()
        .map(|e| integer_argument(e, &schema))
        .collect();
    if averages.iter().all(Option::is_none) {
        return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
    }
    let groups = agg.group_expr.len();
    let mut aggr_expr = agg.aggr_expr.clone();
    // Per AVG: its sum's position among the aggregates, its count's, and
    // the type of its column.
    let mut parts = Vec::new();
    for (i, average) in averages.iter().enumerate() {
        let (Some((column, data_type)), Expr::AggregateFunction(f)) = (average, &agg.aggr_expr[i])
        else {
            continue;
        };
        let with = |func, arg: Expr| {
            Expr::AggregateFunction(AggregateFunction::new_udf(
                func,
                vec![arg],
                f.params.distinct,
                f.params.filter.clone(),
                Vec::new(),
                None,
            ))
        };
        // Named apart: a SUM of the same column may be there already.
        aggr_expr[i] = with(sum_udaf(), cast(column.clone(), DataType::Int64))
            .alias(format!("__weir_avg_sum_{i}"));
        aggr_expr.push(with(count_udaf(), column.clone()).alias(format!("__weir_avg_count_{i}")));
        parts.push((i, aggr_expr.len() - 1, data_type.clone()));
    }
    let names: Vec<_> = agg
        .schema
        .iter()
        .map(|(q, f)| (q.cloned(), f.name().clone()))
        .collect();
    let rewritten = Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), aggr_expr)?;
    let inner = Arc::new(LogicalPlan::Aggregate(rewritten));
    let column = |i: usize| Expr::Column(Column::from(inner.schema().qualified_field(i)));
    let mut exprs = Vec::with_capacity(names.len());
    for (i, (qualifier, name)) in names.iter().enumerate() {
        let expr = match i.checked_sub(groups) {
            Some(a) => match parts.iter().find(|(at, _, _)| *at == a) {
                Some((_, count, data_type)) => cast(
                    Expr::BinaryExpr(BinaryExpr::new(
                        Box::new(column(i)),
                        Operator::Divide,
                        Box::new(column(groups + count)),
                    )),
                    data_type.clone(),
                ),
                None => column(i),
            },
            None => column(i),
        };
        exprs.push(expr.alias_qualified(qualifier.clone(), name));
    }
    Ok(Transformed::yes(LogicalPlan::Projection(
        Projection::try_new(exprs, inner)?,
    )))
}
