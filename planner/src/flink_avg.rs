//! Flink's `AVG` of an integer column: a number of that type, the sum
//! divided by the count with the quotient truncated (Nexmark q4 relies on
//! it), where DataFusion's `AVG` casts the column to a double.
//!
//! Each `AVG(x)` of an integer `x` in an aggregate becomes `SUM(x)` and
//! `COUNT(x)` (keeping its `DISTINCT` and `FILTER`), and a projection
//! above divides them under the `AVG`'s own output name, so the plan
//! above reads the same column. `SUM` and `COUNT` keep DataFusion's fast
//! grouped accumulators and retract like any other aggregate. An
//! `AVG(x) OVER (...)` becomes `SUM(x)` and `COUNT(x)` over that window
//! the same way.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    cast, Aggregate, BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, Projection, Window,
    WindowFunctionDefinition,
};

use crate::error::Result;

/// `plan` with every integer `AVG` computed as Flink computes it.
pub(crate) fn flink_avg(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up(|node| match node {
            LogicalPlan::Aggregate(agg) => rewrite(agg),
            LogicalPlan::Window(window) => rewrite_window(window),
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
    let rewritten = Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), aggr_expr)?;
    divided(
        &agg.schema,
        LogicalPlan::Aggregate(rewritten),
        groups,
        &parts,
    )
}

/// A projection over `inner` giving `schema`'s columns: each AVG (by
/// `parts`: its position among the aggregates after the first `leading`
/// columns, its count's, its column's type) as its sum divided by its
/// count, the rest as they are.
fn divided(
    schema: &DFSchema,
    inner: LogicalPlan,
    leading: usize,
    parts: &[(usize, usize, DataType)],
) -> datafusion::common::Result<Transformed<LogicalPlan>> {
    let inner = Arc::new(inner);
    let column = |i: usize| Expr::Column(Column::from(inner.schema().qualified_field(i)));
    let mut exprs = Vec::with_capacity(schema.fields().len());
    for (i, (qualifier, field)) in schema.iter().enumerate() {
        let expr = match i.checked_sub(leading) {
            Some(a) => match parts.iter().find(|(at, _, _)| *at == a) {
                Some((_, count, data_type)) => cast(
                    Expr::BinaryExpr(BinaryExpr::new(
                        Box::new(column(i)),
                        Operator::Divide,
                        Box::new(column(leading + count)),
                    )),
                    data_type.clone(),
                ),
                None => column(i),
            },
            None => column(i),
        };
        exprs.push(expr.alias_qualified(qualifier.cloned(), field.name()));
    }
    Ok(Transformed::yes(LogicalPlan::Projection(
        Projection::try_new(exprs, inner)?,
    )))
}

/// The same for `AVG(x) OVER (...)`: `SUM(x)` and `COUNT(x)` over the
/// same window.
fn rewrite_window(window: Window) -> datafusion::common::Result<Transformed<LogicalPlan>> {
    let schema = window.input.schema().clone();
    let mut window_expr = window.window_expr.clone();
    let mut parts = Vec::new();
    for (i, expr) in window.window_expr.iter().enumerate() {
        let inner = match expr {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        let Expr::WindowFunction(f) = inner else {
            continue;
        };
        let WindowFunctionDefinition::AggregateUDF(udaf) = &f.fun else {
            continue;
        };
        let [argument] = f.params.args.as_slice() else {
            continue;
        };
        let data_type = argument.get_type(&schema)?;
        if !udaf.name().eq_ignore_ascii_case("avg") || !data_type.is_integer() {
            continue;
        }
        let with = |func, arg: Expr| {
            let mut function = f.as_ref().clone();
            function.fun = WindowFunctionDefinition::AggregateUDF(func);
            function.params.args = vec![arg];
            Expr::WindowFunction(Box::new(function))
        };
        window_expr[i] = with(sum_udaf(), cast(argument.clone(), DataType::Int64))
            .alias(format!("__weir_avg_sum_{i}"));
        window_expr
            .push(with(count_udaf(), argument.clone()).alias(format!("__weir_avg_count_{i}")));
        parts.push((i, window_expr.len() - 1, data_type));
    }
    if parts.is_empty() {
        return Ok(Transformed::no(LogicalPlan::Window(window)));
    }
    let leading = schema.fields().len();
    let rewritten = Window::try_new(window_expr, window.input.clone())?;
    divided(
        &window.schema,
        LogicalPlan::Window(rewritten),
        leading,
        &parts,
    )
}
