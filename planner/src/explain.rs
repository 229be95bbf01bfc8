//! `EXPLAIN`: the operator graph a statement runs (parallelism, edges,
//! chaining) and the streaming plan it lowers from (node names, keys,
//! windows, watermarks, changelog kinds).

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use weir_engine::{Graph, SinkFactory};
use weir_sql::{SqlError, Statement};

use crate::error::Result;
use crate::Planner;

impl Planner {
    pub(crate) fn explain(&self, statement: &Statement, text: &str) -> Result<String> {
        let (graph, plan, bounded) = match statement {
            Statement::Query(q) => {
                let plan = self.plan_query(q)?;
                let bounded = plan.bounded;
                let streaming = plan.streaming_plan.clone();
                let sink: SinkFactory =
                    Arc::new(|_| Err(weir_engine::EngineError::Graph("explain only".into())));
                (plan.with_sink(sink), vec![streaming], bounded)
            }
            Statement::Insert(i) => {
                let plan = self.plan_insert(i, text)?;
                (plan.graph, plan.streaming_plans, plan.bounded)
            }
            Statement::StatementSet(inserts) => {
                let plan = self.plan_job(inserts, text)?;
                (plan.graph, plan.streaming_plans, plan.bounded)
            }
            _ => {
                return Err(SqlError::new(
                    "EXPLAIN works on SELECT, INSERT INTO and EXECUTE STATEMENT SET",
                )
                .into())
            }
        };
        Ok(render(&graph, &plan, bounded))
    }
}

/// The graph, then the streaming plan.
pub(crate) fn render(graph: &Graph, plans: &[LogicalPlan], bounded: bool) -> String {
    let plans: Vec<String> = plans.iter().map(streaming_plan_text).collect();
    format!(
        "{} job, {} operators:\n{graph}\nstreaming plan{}:\n{}",
        if bounded { "bounded" } else { "unbounded" },
        graph.nodes.len(),
        if plans.len() == 1 { "" } else { "s" },
        plans.join("\n\n")
    )
}

/// The streaming plan, one node per line, without Weir's internal window
/// table names.
pub fn streaming_plan_text(plan: &LogicalPlan) -> String {
    crate::lower::without_placeholders(&plan.display_indent().to_string())
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
