//! Stateless operators: expressions evaluated on batches.

mod filter;
mod limit;
mod projection;

pub use filter::Filter;
pub use limit::Limit;
pub use projection::Projection;
