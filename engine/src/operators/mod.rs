//! Stateless operators: expressions evaluated on batches.

mod filter;
mod projection;

pub use filter::Filter;
pub use projection::Projection;
