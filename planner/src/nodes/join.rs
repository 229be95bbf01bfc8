//! `Join`: a join of two streams on equal keys. Both inputs are shuffled
//! by their join keys, so rows that can match meet in one subtask. A
//! regular join (Flink's streaming join) keeps each side's rows for the
//! state TTL when an input is unbounded, and its result is a changelog
//! when it is an outer join or an input is one; a window join (both sides
//! windowed, joined on `window_end` among the keys) keeps them until the
//! watermark closes their window; an interval join until the watermark
//! passes its time bound.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{Column, DFSchemaRef};
use datafusion::logical_expr::{Expr, LogicalPlan};
pub(crate) use weir_engine::operators::JoinKind;
use weir_engine::operators::{IntervalBounds, JoinSpec, SideLateOutputs, StreamingJoin};
use weir_engine::{NodeKind, Operator, OperatorFactory};
use weir_sql::SqlError;

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{Lowered, Lowering};

#[derive(Debug, Clone)]
pub(crate) struct Join {
    /// The key columns of each side, pairwise equal.
    pub keys: [Vec<Column>; 2],
    /// A condition on the joined row besides key equality.
    pub residual: Option<Expr>,
    /// Each side's state TTL (a regular join's).
    pub ttl: [Option<Duration>; 2],
    /// In a window join, each side's `window_end` column.
    pub window_end: Option<[usize; 2]>,
    /// In an interval join, each side's time and the bounds between them.
    pub interval: Option<IntervalBounds>,
    /// Inner for every join; outer, semi and anti for window joins and
    /// joins of bounded inputs; outer for changelog joins.
    pub kind: JoinKind,
    /// A regular outer, semi or anti join of bounded inputs: it pads or
    /// picks rows at the end of input, so its result only appends.
    pub decide_at_end: bool,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    /// The left input, then the right one.
    pub inputs: Vec<LogicalPlan>,
}

node_core!(Join, "Join");

impl Join {
    fn explain(&self) -> String {
        let pairs: Vec<String> = self.keys[0]
            .iter()
            .zip(&self.keys[1])
            .map(|(l, r)| format!("{} = {}", l.flat_name(), r.flat_name()))
            .collect();
        let kind = if self.window_end.is_some() {
            format!("{} window join", self.kind)
        } else if self.interval.is_some() {
            format!("{} interval join", self.kind)
        } else if self.decide_at_end {
            format!("{} join, decided at the end of input", self.kind)
        } else {
            self.kind.to_string()
        };
        let mut text = format!("{kind} on [{}]", pairs.join(", "));
        if let Some(residual) = &self.residual {
            text.push_str(&format!(", where {residual}"));
        }
        if let Some(b) = self.interval {
            text.push_str(&format!(
                ", left time - right time in [{}, {}], watermark held back {}",
                weir_engine::window::fmt_ms(b.lower),
                weir_engine::window::fmt_ms(b.upper),
                weir_engine::window::fmt_ms(b.lower.abs().max(b.upper.abs()))
            ));
        }
        let ttl = |t: Option<Duration>| {
            t.map_or("none".to_string(), |t| {
                weir_engine::window::fmt_ms(t.as_millis() as i64)
            })
        };
        match (self.window_end, self.ttl) {
            (Some(_), _) => text.push_str(", state kept until the window closes"),
            (None, _) if self.interval.is_some() => {
                text.push_str(", state kept until the watermark passes the bound")
            }
            (None, [None, None]) => text.push_str(", state kept to the end"),
            (None, [l, r]) if l == r => text.push_str(&format!(", state TTL {}", ttl(l))),
            (None, [l, r]) => text.push_str(&format!(
                ", state TTL {} (left), {} (right)",
                ttl(l),
                ttl(r)
            )),
        }
        text
    }
}

impl StreamingNode for Join {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let [left, right]: [Lowered; 2] = inputs
            .try_into()
            .map_err(|_| SqlError::new("a join expected two inputs"))?;
        let keys = |side: usize, input: &Lowered| {
            self.keys[side]
                .iter()
                .map(|c| lowering.physical(&Expr::Column(c.clone()), &input.schema))
                .collect::<Result<Vec<_>>>()
        };
        let pairs = left.schema.join(&right.schema)?;
        let residual = self
            .residual
            .as_ref()
            .map(|r| lowering.physical(r, &pairs))
            .transpose()?;
        let spec = Arc::new(JoinSpec {
            keys: [keys(0, &left)?, keys(1, &right)?],
            schemas: [
                Arc::new(left.schema.as_arrow().clone()),
                Arc::new(right.schema.as_arrow().clone()),
            ],
            pairs: Arc::new(pairs.as_arrow().clone()),
            output: Arc::new(self.schema.as_arrow().clone()),
            kind: self.kind,
            residual,
            ttl: self.ttl,
            window_end: self.window_end,
            interval: self.interval,
            changelog: self.props.is_updating(),
            decide_at_end: self.decide_at_end,
        });
        // Late rows of a window or interval join go to their stream's
        // late-data output.
        let outputs = [0, 1].map(|side| {
            self.inputs
                .get(side)
                .and_then(super::stream_of)
                .map(|stream| crate::lower::late_output(&stream))
                .transpose()
                .map(Option::flatten)
        });
        let [left_late, right_late] = outputs;
        let outputs = [left_late?, right_late?];
        let late_output: Option<Arc<dyn weir_engine::DeadLetterSink>> = match (
            &outputs,
            self.window_end.is_some() || self.interval.is_some(),
        ) {
            ([None, None], _) | (_, false) => None,
            _ => Some(Arc::new(SideLateOutputs { outputs })),
        };
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(StreamingJoin::new("join", spec.clone())?) as Box<dyn Operator>)
        });
        Ok(lowering.add_node_after(
            vec![left, right],
            "join",
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
