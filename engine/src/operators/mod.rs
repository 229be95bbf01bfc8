//! Operators outside windows: expressions evaluated on batches, LIMIT, and
//! the updating (unwindowed) aggregate.

mod filter;
mod limit;
mod projection;
mod updating_aggregate;

pub use filter::Filter;
pub use limit::Limit;
pub use projection::Projection;
pub use updating_aggregate::UpdatingAggregate;
