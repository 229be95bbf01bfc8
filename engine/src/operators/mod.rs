//! Operators outside windows: expressions evaluated on batches, LIMIT, the
//! updating (unwindowed) aggregate and the regular join.

mod filter;
mod join;
mod join_changelog;
mod keyed_rows;
mod limit;
mod lookup_join;
mod normalize;
mod over;
mod projection;
mod rank;
mod retractable;
mod temporal_join;
mod union;
mod updating_aggregate;

pub(crate) use filter::predicate_mask;
pub use filter::Filter;
pub use join::{IntervalBounds, JoinKind, JoinSpec, SideLateOutputs, StreamingJoin};
pub use limit::Limit;
pub use lookup_join::{Loading, LookupJoin, LookupSpec, LookupTable};
pub use normalize::ChangelogNormalize;
pub use over::{OverAggregate, OverMode, OverSpec, Preceding};
pub use projection::Projection;
pub use rank::{RankFunction, RankMode, RankSpec, TopN};
pub use retractable::{retractable_accumulator, Held, ValueCounts};
pub use temporal_join::{TemporalJoin, TemporalSpec};
pub use union::Union;
pub use updating_aggregate::{AggregateOptions, UpdatingAggregate};
