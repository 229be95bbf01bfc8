//! Weir's streaming logical plan: DataFusion extension nodes for what a
//! stream needs and a batch plan does not say.
//!
//! After DataFusion's optimizer, [`crate::rewrite`] turns the `LogicalPlan`
//! into one whose streaming parts are these nodes, one file each: the
//! scan of a stream with its watermark ([`StreamScan`]), the rows of a
//! window table function ([`WindowRows`]), window, session and updating
//! aggregates, joins ([`Join`]), and the places where rows are shuffled by key
//! ([`Exchange`]). Each node knows its keys, window, watermark, changelog
//! kind and parallelism, shows them in `EXPLAIN`, and lowers itself to
//! engine operators ([`StreamingNode::lower`]). Stateless nodes
//! (projection, filter, limit, `VALUES`) stay DataFusion's own.

mod changelog_normalize;
mod exchange;
mod join;
mod lookup_join;
mod over;
mod session_aggregate;
pub(crate) mod stream_scan;
mod temporal_join;
mod top_n;
mod union;
mod updating_aggregate;
mod window_aggregate;
mod window_rows;

use std::fmt;
use std::sync::Arc;

use datafusion::logical_expr::{Extension, LogicalPlan, UserDefinedLogicalNode};

pub(crate) use changelog_normalize::ChangelogNormalize;
pub(crate) use exchange::Exchange;
pub(crate) use join::{Join, JoinKind};
pub(crate) use lookup_join::LookupJoin;
pub(crate) use over::{as_aggregate_call, OverAggregate};
pub(crate) use session_aggregate::SessionAggregate;
pub(crate) use stream_scan::{Columns, StreamScan};
pub(crate) use temporal_join::TemporalJoin;
pub(crate) use top_n::TopN;
pub(crate) use union::Union;
pub(crate) use updating_aggregate::UpdatingAggregate;
pub(crate) use window_aggregate::{Phase, WindowAggregate};
pub(crate) use window_rows::{slice_windows, RowsMode, WindowRows};

use crate::error::Result;
use crate::lower::{Lowered, Lowering};

/// What a stream's rows are: appended, or changes to earlier rows
/// (Flink's `ChangelogMode`). Keys are names of the node's output columns
/// that identify a row of the result, when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub enum Changelog {
    /// Every row is new (`+I`).
    AppendOnly,
    /// `+I`, `+U`, `-D`: a row replaces the earlier row with the same key;
    /// no `-U` before it.
    Upsert { keys: Vec<String> },
    /// `+I`, `-U`, `+U`, `-D`: a changed row is retracted (`-U`) before
    /// its new version (`+U`).
    Retract { keys: Vec<String> },
}

impl Changelog {
    /// The columns that identify a row, if known.
    pub fn keys(&self) -> &[String] {
        match self {
            Changelog::AppendOnly => &[],
            Changelog::Upsert { keys } | Changelog::Retract { keys } => keys,
        }
    }

    /// The same kind of changes under other key names.
    pub fn with_keys(&self, keys: Vec<String>) -> Changelog {
        match self {
            Changelog::AppendOnly => Changelog::AppendOnly,
            Changelog::Upsert { .. } => Changelog::Upsert { keys },
            Changelog::Retract { .. } => Changelog::Retract { keys },
        }
    }
}

impl fmt::Display for Changelog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Changelog::AppendOnly => write!(f, "append-only"),
            Changelog::Upsert { keys } => write!(f, "upsert by [{}]", keys.join(", ")),
            Changelog::Retract { keys } if keys.is_empty() => write!(f, "retract"),
            Changelog::Retract { keys } => write!(f, "retract by [{}]", keys.join(", ")),
        }
    }
}

/// What a consumer needs of an updating input (Flink's update kind trait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Upserts by key suffice: `+U` without `-U` before it (an upsert sink
    /// keyed as the stream).
    Upserts,
    /// Every changed row retracted before its new version (aggregates,
    /// filters, joins, print, a query's results).
    Retractions,
}

/// What every streaming node states about its output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct StreamProps {
    /// Subtasks of the operator that produces the rows.
    pub parallelism: usize,
    /// Whether the rows end by themselves.
    pub bounded: bool,
    pub changelog: Changelog,
}

impl StreamProps {
    pub fn append(parallelism: usize, bounded: bool) -> Self {
        StreamProps {
            parallelism,
            bounded,
            changelog: Changelog::AppendOnly,
        }
    }

    pub fn is_updating(&self) -> bool {
        !matches!(self.changelog, Changelog::AppendOnly)
    }
}

impl fmt::Display for StreamProps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parallelism={}, {}, {}",
            self.parallelism,
            if self.bounded { "bounded" } else { "unbounded" },
            self.changelog
        )
    }
}

/// A node of the streaming plan: it lowers itself to engine operators.
pub(crate) trait StreamingNode: UserDefinedLogicalNode {
    fn props(&self) -> &StreamProps;

    /// Adds this node's operators after `inputs` (lowered in order).
    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered>;
}

/// The streaming node behind an extension, if it is one of Weir's.
pub(crate) fn streaming(node: &dyn UserDefinedLogicalNode) -> Option<&dyn StreamingNode> {
    let any = node.as_any();
    if let Some(n) = any.downcast_ref::<StreamScan>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<WindowRows>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<WindowAggregate>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<SessionAggregate>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<UpdatingAggregate>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<Exchange>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<Join>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<ChangelogNormalize>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<TopN>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<Union>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<OverAggregate>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<LookupJoin>() {
        return Some(n);
    }
    if let Some(n) = any.downcast_ref::<TemporalJoin>() {
        return Some(n);
    }
    None
}

/// The declared stream whose rows `plan` carries, through single-input
/// nodes (for a join side's late-data output).
pub(crate) fn stream_of(plan: &LogicalPlan) -> Option<Arc<crate::catalog::StreamDef>> {
    if let LogicalPlan::Extension(e) = plan {
        if let Some(scan) = e.node.as_any().downcast_ref::<StreamScan>() {
            return Some(scan.stream.clone());
        }
    }
    match plan.inputs().as_slice() {
        [input] => stream_of(input),
        _ => None,
    }
}

/// A streaming node as a plan.
pub(crate) fn extension(node: impl UserDefinedLogicalNode + 'static) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    })
}

/// Implements DataFusion's `UserDefinedLogicalNodeCore` for a node that
/// holds its `input`, output `schema` and `props`, and explains itself with
/// `explain(&self) -> String`. Equality and hashing go by what `EXPLAIN`
/// shows, which is everything that makes two nodes differ.
macro_rules! node_core {
    ($node:ident, $name:literal) => {
        impl datafusion::logical_expr::UserDefinedLogicalNodeCore for $node {
            fn name(&self) -> &str {
                $name
            }

            fn inputs(&self) -> Vec<&datafusion::logical_expr::LogicalPlan> {
                self.inputs.iter().collect()
            }

            fn schema(&self) -> &datafusion::common::DFSchemaRef {
                &self.schema
            }

            fn expressions(&self) -> Vec<datafusion::logical_expr::Expr> {
                Vec::new()
            }

            fn fmt_for_explain(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "{}: {}, {}", $name, self.explain(), self.props)
            }

            fn with_exprs_and_inputs(
                &self,
                _exprs: Vec<datafusion::logical_expr::Expr>,
                inputs: Vec<datafusion::logical_expr::LogicalPlan>,
            ) -> datafusion::common::Result<Self> {
                let mut node = self.clone();
                node.inputs = inputs;
                Ok(node)
            }
        }

        impl PartialEq for $node {
            fn eq(&self, other: &Self) -> bool {
                self.explain() == other.explain()
                    && self.props == other.props
                    && self.inputs == other.inputs
            }
        }

        impl Eq for $node {}

        impl PartialOrd for $node {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                self.explain().partial_cmp(&other.explain())
            }
        }

        impl std::hash::Hash for $node {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.explain().hash(state);
                self.inputs.hash(state);
            }
        }
    };
}

pub(crate) use node_core;
