//! `ChangelogNormalize`: an upsert source's rows as a full changelog, for
//! consumers that need retractions (Flink's node of the same name). Its
//! input is shuffled by the primary key; it keeps the last row of each key
//! (with the state TTL, if one is set).

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::operators::ChangelogNormalize as Normalize;
use weir_engine::{NodeKind, Operator, OperatorFactory};

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct ChangelogNormalize {
    /// The primary key's columns in the input.
    pub key_columns: Vec<usize>,
    pub key_names: Vec<String>,
    pub ttl: Option<Duration>,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(ChangelogNormalize, "ChangelogNormalize");

impl ChangelogNormalize {
    fn explain(&self) -> String {
        let mut text = format!("last row by [{}]", self.key_names.join(", "));
        if let Some(ttl) = self.ttl {
            text.push_str(&format!(
                ", state TTL {}",
                weir_engine::window::fmt_ms(ttl.as_millis() as i64)
            ));
        }
        text
    }
}

impl StreamingNode for ChangelogNormalize {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        let schema = Arc::new(self.schema.as_arrow().clone());
        let (keys, ttl) = (self.key_columns.clone(), self.ttl);
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(Normalize::new(
                "changelog normalize",
                schema.clone(),
                keys.clone(),
                ttl,
            )?) as Box<dyn Operator>)
        });
        Ok(lowering.add_node(
            input,
            "changelog normalize",
            self.explain(),
            NodeKind::Operator {
                factory,
                late_output: None,
            },
            self.schema.clone(),
            &self.props,
        ))
    }
}
