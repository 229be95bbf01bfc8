//! Operators outside windows: expressions evaluated on batches, LIMIT, the
//! updating (unwindowed) aggregate and the regular join.

mod filter;
mod join;
mod limit;
mod projection;
mod updating_aggregate;

pub(crate) use filter::predicate_mask;
pub use filter::Filter;
pub use join::{IntervalBounds, JoinKind, JoinSpec, StreamingJoin};
pub use limit::Limit;
pub use projection::Projection;
pub use updating_aggregate::UpdatingAggregate;
