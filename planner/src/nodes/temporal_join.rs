//! `TemporalJoin`: each probe row joined with the version of its key that
//! was current at its time ([`crate::lookup`]). Both inputs are shuffled
//! by the key.

use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan};
use weir_engine::operators::{TemporalJoin as TemporalOperator, TemporalSpec};
use weir_engine::{NodeKind, Operator, OperatorFactory};

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{join_condition_text, Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct TemporalJoin {
    /// Key pairs: the probe's expression, the versions'.
    pub on: Vec<(Expr, Expr)>,
    /// Each side's time column: the probe's `AS OF`, the versions' rowtime.
    pub times: [usize; 2],
    pub left: bool,
    pub residual: Option<Vec<Expr>>,
    pub table: String,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(TemporalJoin, "TemporalJoin");

impl TemporalJoin {
    fn explain(&self) -> String {
        format!(
            "{} join of '{}' as of event time on {}, at the watermark",
            if self.left { "left" } else { "inner" },
            self.table,
            join_condition_text(
                self.on.iter().map(|(a, b)| (a, b)),
                self.residual.as_deref()
            )
        )
    }
}

impl StreamingNode for TemporalJoin {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let [probe, versions]: [Lowered; 2] = inputs
            .try_into()
            .map_err(|_| weir_sql::SqlError::new("a temporal join has two inputs"))?;
        let keys = [
            self.on
                .iter()
                .map(|(p, _)| lowering.physical(p, &probe.schema))
                .collect::<Result<Vec<_>>>()?,
            self.on
                .iter()
                .map(|(_, v)| lowering.physical(v, &versions.schema))
                .collect::<Result<Vec<_>>>()?,
        ];
        let residual = self
            .residual
            .clone()
            .and_then(conjunction)
            .map(|e| lowering.physical(&e, &self.schema))
            .transpose()?;
        let spec = Arc::new(TemporalSpec {
            keys,
            times: self.times,
            schemas: [
                Arc::new(probe.schema.as_arrow().clone()),
                Arc::new(versions.schema.as_arrow().clone()),
            ],
            left: self.left,
            residual,
            output: Arc::new(self.schema.as_arrow().clone()),
        });
        let late_output = self
            .inputs
            .first()
            .and_then(super::stream_of)
            .map(|stream| crate::lower::late_output(&stream))
            .transpose()?
            .flatten();
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(
                Box::new(TemporalOperator::new("temporal join", spec.clone())?)
                    as Box<dyn Operator>,
            )
        });
        Ok(lowering.add_node_after(
            vec![probe, versions],
            "temporal join",
            self.explain(),
            NodeKind::Operator {
                factory,
                late_output,
            },
            self.schema.clone(),
            &self.props,
        ))
    }
}
