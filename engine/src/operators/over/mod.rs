//! OVER aggregates: `agg(...) OVER (PARTITION BY ... ORDER BY t ROWS|RANGE
//! BETWEEN ... PRECEDING AND CURRENT ROW)`, each input row emitted with
//! the aggregates of its frame, as Flink runs them.
//!
//! Three ways to run one ([`OverMode`]):
//! - on event time ([`in_order`]): rows wait until the watermark passes
//!   their time, then go through in time order, as Flink's
//!   `RowTime*PrecedingFunction`s; the result only appends. A late row is
//!   counted and sent to the late-data output: for an unbounded frame a
//!   row at or before the watermark, for a bounded one a row at or before
//!   the last time its partition computed (Flink's `lastTriggeringTs`).
//! - on processing time: each row's frame is the rows that came before it;
//!   the rows of one input batch share the arrival time;
//! - over a changelog, or ordered by a column that is not a time attribute
//!   ([`updating`]): every row of a partition is kept in `ORDER BY` order; a
//!   row inserted or retracted changes the frames of the rows after it,
//!   which are computed again and updated (`-U`/`+U`). Flink refuses this
//!   (Nexmark q6); the result is what a batch query over the current rows
//!   gives.
//!
//! `RANGE` frames give rows with equal times (peers) the same values.

mod in_order;
mod updating;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::OwnedRow;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;

use crate::changelog::{attach_kinds, kind_array, RowKind};
use crate::error::Result;
use crate::message::Millis;
use crate::operator::{Operator, OperatorContext, StateSize};
use crate::operators::keyed_rows::{Encoded, KeyedRows};
use crate::operators::retractable_accumulator;
use crate::row_watermark::attach_constant;
use crate::state::StateSnapshot;

use in_order::InOrder;
use updating::UpdatingOver;

/// Where a frame starts; it always ends at the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preceding {
    /// Every row of the partition before (`UNBOUNDED PRECEDING`).
    Unbounded,
    /// `ROWS n PRECEDING`: the `n` rows before and the current row.
    Rows(u64),
    /// `RANGE INTERVAL ... PRECEDING`: rows at most this many
    /// milliseconds before the current row's time.
    Range(Millis),
}

/// What runs an OVER aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverMode {
    /// Ordered by the event time in this input column.
    EventTime { time: usize },
    /// Ordered by arrival.
    ProcTime,
    /// Every row kept in `ORDER BY` order, frames updated as rows come and
    /// go.
    Updating {
        /// A changed row is preceded by its old values as `-U`.
        emit_before: bool,
    },
}

/// What an OVER aggregate needs to know.
#[derive(Debug, Clone)]
pub struct OverSpec {
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The `ORDER BY` (used by [`OverMode::Updating`]; the time modes order
    /// by time).
    pub order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    /// `ROWS` (each row its own frame end) or `RANGE` (peers share one).
    pub rows: bool,
    pub preceding: Preceding,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// The input's columns (no hidden ones).
    pub input: SchemaRef,
    /// The input's columns, then one per aggregate.
    pub output: SchemaRef,
    pub mode: OverMode,
    /// A partition not touched for this long is forgotten.
    pub ttl: Option<Duration>,
}

/// Rows in Arrow's row format, for this spec.
pub(crate) struct Codec {
    spec: Arc<OverSpec>,
    keyed: KeyedRows,
}

impl Codec {
    fn new(spec: Arc<OverSpec>) -> Result<Self> {
        Ok(Codec {
            keyed: KeyedRows::new(&spec.partition, &spec.order, &spec.input)?,
            spec,
        })
    }

    fn encode(&self, data: &RecordBatch) -> Result<Encoded> {
        self.keyed.encode(data)
    }

    /// Whole rows back as a batch of the input's columns.
    fn decode<'a>(&self, rows: impl IntoIterator<Item = &'a OwnedRow>) -> Result<RecordBatch> {
        let rows: Vec<&OwnedRow> = rows.into_iter().collect();
        let columns = self.keyed.decode(rows.iter().copied())?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(
            self.spec.input.clone(),
            columns,
            &options,
        )?)
    }
}

/// One accumulator per aggregate of a frame.
pub(crate) struct Aggregates {
    accumulators: Vec<Box<dyn Accumulator>>,
}

impl Aggregates {
    /// Accumulators that can take rows back out when `retracting`.
    fn new(spec: &OverSpec, retracting: bool) -> Result<Self> {
        let accumulators = spec
            .aggregates
            .iter()
            .map(|a| {
                if retracting {
                    retractable_accumulator(a)
                } else {
                    Ok(a.create_accumulator()?)
                }
            })
            .collect::<Result<_>>()?;
        Ok(Aggregates { accumulators })
    }

    /// Adds (or, `retract`, takes out) the rows of `batch`.
    fn update(&mut self, spec: &OverSpec, batch: &RecordBatch, retract: bool) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (aggregate, accumulator) in spec.aggregates.iter().zip(&mut self.accumulators) {
            let args = aggregate
                .expressions()
                .iter()
                .map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?))
                .collect::<Result<Vec<ArrayRef>>>()?;
            if retract {
                accumulator.retract_batch(&args)?;
            } else {
                accumulator.update_batch(&args)?;
            }
        }
        Ok(())
    }

    fn values(&mut self) -> Result<Vec<ScalarValue>> {
        self.accumulators
            .iter_mut()
            .map(|a| Ok(a.evaluate()?))
            .collect()
    }

    fn size(&self) -> usize {
        self.accumulators.iter().map(|a| a.size()).sum()
    }
}

/// Rows to emit: kind, whole input row, the aggregates' values.
#[derive(Default)]
pub(crate) struct Emitted {
    kinds: Vec<RowKind>,
    rows: Vec<OwnedRow>,
    values: Vec<Vec<ScalarValue>>,
}

impl Emitted {
    fn push(&mut self, kind: RowKind, row: &OwnedRow, values: Vec<ScalarValue>) {
        self.kinds.push(kind);
        self.rows.push(row.clone());
        self.values.push(values);
    }

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
        let mut columns = codec.decode(&self.rows)?.columns().to_vec();
        for j in 0..spec.aggregates.len() {
            let field = spec.output.field(spec.input.fields().len() + j);
            let values = self.values.iter().map(|v| v[j].clone());
            let array = ScalarValue::iter_to_array(values)?;
            columns.push(if array.data_type() == field.data_type() {
                array
            } else {
                datafusion::arrow::compute::cast(&array, field.data_type())?
            });
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

/// The state of one way of running.
trait Over: Send {
    fn on_batch(&mut self, batch: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<Emitted>;

    fn on_watermark(&mut self, _watermark: Millis) -> Result<Emitted> {
        Ok(Emitted::default())
    }

    fn on_timer(&mut self, now: Millis);

    fn snapshot(&mut self) -> Result<StateSnapshot>;

    fn restore(&mut self, state: StateSnapshot) -> Result<()>;

    fn state_size(&self) -> StateSize;
}

/// The OVER aggregate operator.
pub struct OverAggregate {
    name: String,
    codec: Arc<Codec>,
    changelog: bool,
    ttl: Option<Duration>,
    over: Box<dyn Over>,
}

impl OverAggregate {
    pub fn new(name: impl Into<String>, spec: Arc<OverSpec>) -> Result<Self> {
        let codec = Arc::new(Codec::new(spec.clone())?);
        let (changelog, over): (bool, Box<dyn Over>) = match &spec.mode {
            OverMode::Updating { .. } => (true, Box::new(UpdatingOver::new(codec.clone()))),
            _ => (false, Box::new(InOrder::new(codec.clone()))),
        };
        Ok(OverAggregate {
            name: name.into(),
            codec,
            changelog,
            ttl: spec.ttl,
            over,
        })
    }

    fn emit(&self, emitted: Emitted, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if let Some(batch) = emitted.batch(&self.codec, self.changelog, ctx.watermark())? {
            ctx.emit(batch);
        }
        Ok(())
    }
}

impl Operator for OverAggregate {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let emitted = self.over.on_batch(&batch, ctx)?;
        self.emit(emitted, ctx)
    }

    fn on_watermark(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let emitted = self.over.on_watermark(watermark)?;
        self.emit(emitted, ctx)
    }

    fn timer_interval(&self) -> Option<Duration> {
        self.ttl
            .map(|ttl| (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(10)))
    }

    fn on_timer(&mut self, now: Millis, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        self.over.on_timer(now);
        Ok(())
    }

    fn snapshot(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        self.over.snapshot()
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        self.over.restore(state)
    }

    fn state_size(&self) -> StateSize {
        self.over.state_size()
    }
}

/// Whether a partition last touched at `touched` outlived `ttl` at `now`.
fn expired(ttl: Option<Duration>, touched: Millis, now: Millis) -> bool {
    ttl.is_some_and(|ttl| {
        now.saturating_sub(touched) >= i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{col, lit};

    use super::*;
    use crate::changelog::with_op_column;
    use crate::testing::Harness;

    /// `count(*)` per `k` over `(k, ts)` with this frame and mode.
    fn counting(rows: bool, preceding: Preceding, mode: OverMode) -> OverAggregate {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ts", ts, false),
        ]));
        let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
            .schema(input.clone())
            .alias("n")
            .build()
            .unwrap();
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new("n", DataType::Int64, true)));
        let spec = OverSpec {
            partition: vec![col("k", &input).unwrap()],
            order: vec![(col("ts", &input).unwrap(), SortOptions::default())],
            rows,
            preceding,
            aggregates: vec![Arc::new(count)],
            output: Arc::new(Schema::new(fields)),
            input,
            mode,
            ttl: None,
        };
        OverAggregate::new("over", Arc::new(spec)).unwrap()
    }

    fn rows(rows: &[(i64, i64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    /// The output's rows as text, in order.
    fn text(batches: &[RecordBatch]) -> Vec<String> {
        let batches: Vec<RecordBatch> = batches
            .iter()
            .map(|b| with_op_column(b).unwrap_or_else(|_| b.clone()))
            .collect();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .skip(3)
            .map(str::to_string)
            .collect()
    }

    /// Runs the input whole, and again with a checkpoint and a restore
    /// into a fresh operator half way: the outputs are the same.
    fn same_after_restore(make: impl Fn() -> OverAggregate, watermarks: bool) {
        let first = rows(&[(1, 10), (2, 12), (1, 11), (1, 30), (2, 31)]);
        let second = rows(&[(1, 40), (2, 41), (1, 42), (2, 60)]);
        let run = |restore: bool| {
            let mut h = Harness::new(make());
            h.batch(first.clone()).unwrap();
            if watermarks {
                h.watermark(20).unwrap();
            }
            let mut out = h.take_output();
            if restore {
                let state = h.barrier().unwrap();
                h = Harness::new(make());
                h.operator().restore(state).unwrap();
            }
            h.batch(second.clone()).unwrap();
            if watermarks {
                h.watermark(100).unwrap();
            }
            out.extend(h.take_output());
            text(&out)
        };
        let whole = run(false);
        assert!(whole.len() > 8, "{whole:?}");
        assert_eq!(run(true), whole);
    }

    #[test]
    fn state_survives_a_restore_in_every_mode() {
        let event_time = OverMode::EventTime { time: 1 };
        same_after_restore(
            || counting(true, Preceding::Rows(1), event_time.clone()),
            true,
        );
        same_after_restore(
            || counting(false, Preceding::Range(15), event_time.clone()),
            true,
        );
        same_after_restore(
            || counting(true, Preceding::Unbounded, event_time.clone()),
            true,
        );
        same_after_restore(
            || {
                counting(
                    true,
                    Preceding::Rows(1),
                    OverMode::Updating { emit_before: true },
                )
            },
            false,
        );
    }
}
