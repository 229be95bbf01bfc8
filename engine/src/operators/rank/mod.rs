//! Top-N and deduplication: `ROW_NUMBER()` (or `RANK()`, `DENSE_RANK()`)
//! `OVER (PARTITION BY ... ORDER BY ...)` filtered by the rank, as Flink
//! runs it.
//!
//! Three ways to run it, by what the plan says ([`RankMode`]):
//! - [`updating`]: over an unbounded stream, an updating result: each
//!   change of a partition's top N is emitted at once, as Flink's
//!   `AppendOnlyTopNFunction` / `RetractableTopNFunction` (and its
//!   deduplication, the top 1 by a time attribute);
//! - [`window`]: per window (the partition holds `window_end`), the top N
//!   of each window's rows, emitted once when the window closes, as
//!   Flink's `WindowRankOperator`;
//! - [`keep_first`]: deduplication keeping the first row by event time:
//!   the earliest row of each key, emitted once the watermark passes it
//!   (append-only).
//!
//! Rows are kept in Arrow's row format: partition keys, sort keys (whose
//! byte order is the `ORDER BY`'s, directions and NULL placement
//! included) and whole rows.

mod keep_first;
mod updating;
mod window;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::OwnedRow;
use datafusion::physical_expr::PhysicalExpr;

use crate::changelog::{attach_kinds, kind_array, RowKind};
use crate::error::Result;
use crate::message::Millis;
use crate::operator::{Operator, OperatorContext, StateSize};
use crate::operators::keyed_rows::{Encoded, KeyedRows};
use crate::row_watermark::attach_constant;
use crate::state::StateSnapshot;

pub use keep_first::KeepFirst;
pub use updating::UpdatingTopN;
pub use window::WindowTopN;

/// How rows with equal sort keys rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankFunction {
    /// 1, 2, 3, ...: ties broken by arrival (the earlier first).
    RowNumber,
    /// Ties share a rank, and the next rank skips: 1, 1, 3.
    Rank,
    /// Ties share a rank, and the next follows: 1, 1, 2.
    DenseRank,
}

/// What runs the ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RankMode {
    /// An updating top N of an unbounded stream.
    Updating {
        /// Input rows can be retractions: every row is kept, so that a
        /// retracted top row's place is taken by the next.
        retracting_input: bool,
        /// A changed rank is preceded by its old row as `-U`.
        emit_before: bool,
        /// Deduplication by a time attribute (Flink's `Deduplicate`): a
        /// replaced row is updated (`-U`, `+U`) rather than deleted and
        /// inserted; the later of two rows with equal times wins for
        /// keep-last.
        deduplicate: bool,
        /// Rows are only ever inserted (keep-first by arrival): the output
        /// is append-only and carries no row kinds.
        append_only: bool,
        ttl: Option<Duration>,
    },
    /// The top N of each window, at its close; `window_end` is this input
    /// column (epoch ms or a timestamp). Without one, the whole (bounded)
    /// input is one window, closed by the final watermark.
    Window { window_end: Option<usize> },
    /// The earliest row of each key by the event time in this column,
    /// emitted when the watermark passes it; a key seen is remembered for
    /// the TTL.
    KeepFirst { time: usize, ttl: Option<Duration> },
}

/// What a ranking needs to know.
#[derive(Debug, Clone)]
pub struct RankSpec {
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// Sort keys and their directions.
    pub order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    /// Ranks `1..=limit` are kept.
    pub limit: usize,
    pub function: RankFunction,
    /// Whether the rank is an output column (the last one).
    pub emit_rank: bool,
    /// Of two rows with equal sort keys the later ranks first (Flink's
    /// keep-last deduplication); else the earlier.
    pub later_wins: bool,
    /// The input's columns (no hidden ones).
    pub input: SchemaRef,
    /// The output's columns: the input's, then the rank if emitted.
    pub output: SchemaRef,
    pub mode: RankMode,
}

/// Turns a batch's rows into partition keys, sort keys and whole rows.
pub(crate) struct Codec {
    spec: Arc<RankSpec>,
    keyed: KeyedRows,
}

impl Codec {
    fn new(spec: Arc<RankSpec>) -> Result<Self> {
        Ok(Codec {
            keyed: KeyedRows::new(&spec.partition, &spec.order, &spec.input)?,
            spec,
        })
    }

    /// `data` (the input's columns) in row format.
    fn encode(&self, data: &RecordBatch) -> Result<Encoded> {
        self.keyed.encode(data)
    }

    /// Whole rows back as the input's columns.
    fn decode(&self, rows: &[&OwnedRow]) -> Result<Vec<ArrayRef>> {
        self.keyed.decode(rows.iter().copied())
    }
}

/// Rows to emit: each row's kind, its whole row and its rank.
#[derive(Default)]
pub(crate) struct Emitted {
    pub kinds: Vec<RowKind>,
    pub rows: Vec<OwnedRow>,
    pub ranks: Vec<u64>,
}

impl Emitted {
    pub fn push(&mut self, kind: RowKind, row: &OwnedRow, rank: u64) {
        self.kinds.push(kind);
        self.rows.push(row.clone());
        self.ranks.push(rank);
    }

    /// The batch of these rows: the input's columns, the rank if emitted,
    /// the row kinds if `changelog`, and `watermark` as row watermark.
    fn batch(
        self,
        codec: &Codec,
        changelog: bool,
        watermark: Millis,
    ) -> Result<Option<RecordBatch>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let spec = &codec.spec;
        let mut columns = codec.decode(&self.rows.iter().collect::<Vec<_>>())?;
        if spec.emit_rank {
            columns.push(Arc::new(UInt64Array::from(self.ranks)));
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows.len()));
        let batch = RecordBatch::try_new_with_options(spec.output.clone(), columns, &options)?;
        let batch = if changelog {
            attach_kinds(&batch, kind_array(&self.kinds))?
        } else {
            batch
        };
        Ok(Some(attach_constant(&batch, watermark)?))
    }
}

/// The state of one way of ranking.
trait Ranking: Send {
    fn on_batch(&mut self, batch: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<Emitted>;

    fn on_watermark(&mut self, _watermark: Millis) -> Result<Emitted> {
        Ok(Emitted::default())
    }

    fn on_timer(&mut self, _now: Millis) {}

    fn timer_interval(&self) -> Option<Duration> {
        None
    }

    fn snapshot(&self) -> Result<StateSnapshot>;

    fn restore(&mut self, state: StateSnapshot) -> Result<()>;

    fn state_size(&self) -> StateSize;
}

/// The ranking operator.
pub struct TopN {
    name: String,
    codec: Arc<Codec>,
    /// Whether the output carries row kinds (an updating result).
    changelog: bool,
    ranking: Box<dyn Ranking>,
}

impl TopN {
    pub fn new(name: impl Into<String>, spec: Arc<RankSpec>) -> Result<Self> {
        let codec = Arc::new(Codec::new(spec.clone())?);
        let (changelog, ranking): (bool, Box<dyn Ranking>) = match &spec.mode {
            RankMode::Updating { append_only, .. } => {
                (!append_only, Box::new(UpdatingTopN::new(codec.clone())?))
            }
            RankMode::Window { .. } => (false, Box::new(WindowTopN::new(codec.clone())?)),
            RankMode::KeepFirst { .. } => (false, Box::new(KeepFirst::new(codec.clone())?)),
        };
        Ok(TopN {
            name: name.into(),
            codec,
            changelog,
            ranking,
        })
    }

    fn emit(&self, emitted: Emitted, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if let Some(batch) = emitted.batch(&self.codec, self.changelog, ctx.watermark())? {
            ctx.emit(batch);
        }
        Ok(())
    }
}

impl Operator for TopN {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let emitted = self.ranking.on_batch(&batch, ctx)?;
        self.emit(emitted, ctx)
    }

    fn on_watermark(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let emitted = self.ranking.on_watermark(watermark)?;
        self.emit(emitted, ctx)
    }

    fn timer_interval(&self) -> Option<Duration> {
        self.ranking.timer_interval()
    }

    fn on_timer(&mut self, now: Millis, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        self.ranking.on_timer(now);
        Ok(())
    }

    fn snapshot(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        self.ranking.snapshot()
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        self.ranking.restore(state)
    }

    fn state_size(&self) -> StateSize {
        self.ranking.state_size()
    }
}

/// How often to look for expired state, for a TTL.
fn ttl_timer(ttl: Option<Duration>) -> Option<Duration> {
    ttl.map(|ttl| (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(10)))
}
