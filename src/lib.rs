//! Weir: a streaming SQL engine, embedded.
//!
//! A [`Session`] holds a catalog of streams and views and runs SQL in
//! Flink's dialect: `CREATE STREAM` over a connector, windowed queries whose
//! results arrive as Arrow batches ([`ResultStream`]), and continuous
//! `INSERT INTO` jobs ([`Job`]) with metrics, also readable from SQL as the
//! `weir_metrics.*` system streams ([`system_tables`]). The `weir` command
//! is built on the same API.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), weir::WeirError> {
//! let mut session = weir::Session::new();
//! session.sql("
//!     CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '100000', 'base-time' = '0');
//!     CREATE VIEW bid AS SELECT bid.auction, bid.price, dateTime FROM events WHERE event_type = 2;
//! ").await?;
//! let batches = session.query("
//!     SELECT window_start, auction, count(*) AS bids
//!     FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
//!     GROUP BY window_start, window_end, auction
//! ").await?.collect().await?;
//! # Ok(()) }
//! ```

mod checkpoints;
mod cluster;
mod error;
mod job;
mod jobs;
mod metrics_server;
mod report;
mod results;
mod session;
mod subject;
pub mod system_tables;
mod table;

pub use error::{Result, WeirError};
pub use job::Job;
pub use jobs::SharedJobs;
pub use metrics_server::{prometheus_text, MetricsServer};
pub use report::job_metrics_table;
pub use results::ResultStream;
pub use session::{Output, Session};
pub use table::ChangelogTable;

/// DataFusion, for user-defined functions (`Session::register_udf`).
pub use datafusion;
pub use datafusion::arrow;
/// Row kinds of updating results (`+I`, `-U`, `+U`, `-D`).
pub use weir_engine::changelog;
pub use weir_engine::{JobStatus, MetricsSnapshot};
pub use weir_planner::Planner;
pub use weir_sql::{SqlError, Statement};

/// The crates Weir is built from, for advanced embedding.
pub mod crates {
    pub use weir_connectors as connectors;
    pub use weir_engine as engine;
    pub use weir_planner as planner;
    pub use weir_sql as sql;
}
