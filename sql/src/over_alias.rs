//! A `WHERE` that names an OVER column of its own `SELECT`:
//!
//! ```sql
//! SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY price DESC) AS rownum
//! FROM bids WHERE rownum <= 1
//! ```
//!
//! Standard SQL (and Flink) reads `rownum` before the `SELECT` computes it
//! and fails; Nexmark's q6 is written this way. Weir reads it as DuckDB and
//! Snowflake do (`QUALIFY`): the conditions that name such a column filter
//! the `SELECT`'s rows, the others stay where they are. The `SELECT`
//! becomes `SELECT * FROM (SELECT ... WHERE <others>) WHERE <conditions>`.

use sqlparser::ast::{
    BinaryOperator, Expr, Query, Select, SelectItem, SetExpr, TableFactor, TableWithJoins,
    WildcardAdditionalOptions,
};

/// Rewrites every `SELECT` of `query` (and of its subqueries in `FROM`).
pub(crate) fn lift_over_filters(query: &mut Query) {
    rewrite_set_expr(&mut query.body);
}

fn rewrite_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for table in &mut select.from {
                rewrite_factor(&mut table.relation);
                for join in &mut table.joins {
                    rewrite_factor(&mut join.relation);
                }
            }
            if let Some(lifted) = lift(select) {
                **select = lifted;
            }
        }
        SetExpr::Query(q) => lift_over_filters(q),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left);
            rewrite_set_expr(right);
        }
        _ => {}
    }
}

fn rewrite_factor(factor: &mut TableFactor) {
    if let TableFactor::Derived { subquery, .. } = factor {
        lift_over_filters(subquery);
    }
}

/// The aliases of the `SELECT`'s OVER columns.
fn over_aliases(select: &Select) -> Vec<String> {
    select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { expr, alias } if has_over(expr) => {
                Some(alias.value.to_ascii_lowercase())
            }
            _ => None,
        })
        .collect()
}

fn has_over(expr: &Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(expr, |e| {
        if matches!(e, Expr::Function(f) if f.over.is_some()) {
            found = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

fn names_any(expr: &Expr, aliases: &[String]) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(expr, |e| {
        if let Expr::Identifier(ident) = e {
            if aliases.contains(&ident.value.to_ascii_lowercase()) {
                found = true;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

fn conjuncts(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                *inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, out)
        }
        e => out.push(e),
    }
}

fn and_all(exprs: Vec<Expr>) -> Option<Expr> {
    exprs.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    })
}

/// `select` with the conditions on its OVER columns lifted above it, if
/// its `WHERE` has any.
fn lift(select: &Select) -> Option<Select> {
    let aliases = over_aliases(select);
    let selection = select.selection.clone()?;
    if aliases.is_empty() || !names_any(&selection, &aliases) {
        return None;
    }
    let mut all = Vec::new();
    conjuncts(selection, &mut all);
    let (outer, inner): (Vec<Expr>, Vec<Expr>) =
        all.into_iter().partition(|e| names_any(e, &aliases));
    let mut computed = select.clone();
    computed.selection = and_all(inner);
    let mut filter = select.clone();
    filter.distinct = None;
    filter.group_by = sqlparser::ast::GroupByExpr::Expressions(vec![], vec![]);
    filter.having = None;
    filter.named_window = vec![];
    filter.qualify = None;
    filter.lateral_views = vec![];
    filter.projection = vec![SelectItem::Wildcard(WildcardAdditionalOptions::default())];
    filter.selection = and_all(outer);
    filter.from = vec![TableWithJoins {
        relation: TableFactor::Derived {
            lateral: false,
            subquery: Box::new(Query {
                body: Box::new(SetExpr::Select(Box::new(computed))),
                ..empty_query()
            }),
            // Unnamed, so the outer filter sits right over the OVER
            // columns (a Top-N's rank filter is found there).
            alias: None,
            sample: None,
        },
        joins: vec![],
    }];
    Some(filter)
}

/// A query of nothing but its body.
fn empty_query() -> Query {
    Query {
        with: None,
        body: Box::new(SetExpr::Values(sqlparser::ast::Values {
            explicit_row: false,
            value_keyword: false,
            rows: vec![],
        })),
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks: vec![],
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators: vec![],
    }
}
