//! Weir's SQL dialect: Flink SQL on top of sqlparser.
//!
//! [`parse`] turns a text into [`Statement`]s. sqlparser parses the
//! standard parts; this crate adds what it cannot: `CREATE STREAM/TABLE`
//! column lists with computed columns, `WATERMARK FOR`, `METADATA` columns
//! and nested `ROW<...>` types; window table functions
//! (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))`) and
//! legacy group windows; `SHOW`, `DESCRIBE`, `SET`, `EXPLAIN` and job
//! statements. Every error carries a line and column.
//!
//! ```
//! # fn main() -> Result<(), weir_sql::SqlError> {
//! let statements = weir_sql::parse(
//!     "CREATE STREAM s (ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
//!        WITH ('connector' = 'nexmark');
//!      SELECT window_start, count(*) FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND))
//!      GROUP BY window_start, window_end;",
//! )?;
//! assert_eq!(statements.len(), 2);
//! # Ok(()) }
//! ```

mod dialect;
mod error;
mod interval;
mod lookup;
mod over_alias;
mod parser;
mod secrets;
mod statement;
mod types;
mod vars;
mod window;

pub use dialect::FlinkDialect;
pub use error::{Position, Result, SqlError};
pub use interval::interval_millis;
pub use lookup::{lookup_name, parse_lookup_name};
pub use parser::{
    catalog_name, is_complete, parse, parse_statement, system_name, ParsedStatement, SYSTEM_SCHEMA,
};
pub use secrets::{is_secret_key, mask_secrets, secret_spans, MASK};
pub use sqlparser;
pub use statement::*;
pub use vars::substitute_vars;
pub use window::{
    WindowInput, WindowKind, WindowTvf, PLACEHOLDER_PREFIX, WINDOW_END, WINDOW_START, WINDOW_TIME,
};
