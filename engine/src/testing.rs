//! Driving one operator by hand, for tests in any crate: feed it batches,
//! watermarks, barriers and the end of input, as the runtime would, and
//! look at what it emitted.
//!
//! ```
//! use std::sync::Arc;
//! use datafusion::arrow::array::Int64Array;
//! use datafusion::arrow::record_batch::RecordBatch;
//! use weir_engine::operators::Limit;
//! use weir_engine::testing::Harness;
//!
//! let batch = RecordBatch::try_from_iter([(
//!     "x",
//!     Arc::new(Int64Array::from(vec![1, 2, 3])) as _,
//! )])
//! .unwrap();
//! let mut harness = Harness::new(Limit::new(1, Some(1)));
//! harness.batch(batch).unwrap();
//! datafusion::assert_batches_eq!(
//!     ["+---+", "| x |", "+---+", "| 2 |", "+---+"],
//!     &harness.take_output()
//! );
//! ```

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::message::{Millis, FINAL_WATERMARK, NO_WATERMARK};
use crate::metrics::SubtaskMetrics;
use crate::operator::{Operator, OperatorContext};
use crate::row_watermark::{attach_constant, strip, ROW_WATERMARK};
use crate::state::StateSnapshot;

/// One operator and what it has emitted so far.
pub struct Harness {
    operator: Box<dyn Operator>,
    metrics: Arc<SubtaskMetrics>,
    watermark: Millis,
    output: Vec<RecordBatch>,
    late: Vec<RecordBatch>,
}

impl Harness {
    pub fn new(operator: impl Operator + 'static) -> Self {
        Self::boxed(Box::new(operator))
    }

    pub fn boxed(operator: Box<dyn Operator>) -> Self {
        let metrics = Arc::new(SubtaskMetrics::new(0, operator.name(), 0));
        Harness {
            operator,
            metrics,
            watermark: NO_WATERMARK,
            output: Vec::new(),
            late: Vec::new(),
        }
    }

    /// Calls the operator with a context; again while it asks to be.
    fn call(
        &mut self,
        mut action: impl FnMut(&mut dyn Operator, &mut OperatorContext<'_>) -> Result<()>,
    ) -> Result<()> {
        loop {
            let mut ctx = OperatorContext {
                output: &mut self.output,
                late: &mut self.late,
                watermark: self.watermark,
                metrics: &self.metrics,
                call_again: false,
            };
            action(self.operator.as_mut(), &mut ctx)?;
            if !ctx.call_again {
                return Ok(());
            }
        }
    }

    /// A batch of rows. Without a row-watermark column, every row gets the
    /// current watermark as its own.
    pub fn batch(&mut self, batch: RecordBatch) -> Result<&mut Self> {
        self.batch_on(0, batch)
    }

    /// A batch of rows on input `side`, for operators with two inputs.
    pub fn batch_on(&mut self, side: usize, batch: RecordBatch) -> Result<&mut Self> {
        let has_row_watermark = batch
            .schema_ref()
            .fields()
            .last()
            .is_some_and(|f| f.name() == ROW_WATERMARK);
        let batch = if has_row_watermark {
            batch
        } else {
            attach_constant(&batch, self.watermark)?
        };
        let mut batch = Some(batch);
        self.call(|op, ctx| match batch.take() {
            Some(b) => op.on_side_batch(side, b, ctx),
            None => Ok(()),
        })?;
        Ok(self)
    }

    /// The input watermark advances to `watermark`.
    pub fn watermark(&mut self, watermark: Millis) -> Result<&mut Self> {
        self.watermark = self.watermark.max(watermark);
        let t = self.watermark;
        self.call(|op, ctx| op.on_watermark(t, ctx))?;
        Ok(self)
    }

    /// The processing-time timer fires at `now`.
    pub fn timer(&mut self, now: Millis) -> Result<&mut Self> {
        self.call(|op, ctx| op.on_timer(now, ctx))?;
        Ok(self)
    }

    /// A checkpoint barrier: the operator's state.
    pub fn barrier(&mut self) -> Result<StateSnapshot> {
        let mut state = None;
        self.call(|op, ctx| {
            state = Some(op.snapshot(ctx)?);
            Ok(())
        })?;
        Ok(state.unwrap_or_default())
    }

    /// The end of input, after the final watermark, as a bounded source
    /// ends.
    pub fn end(&mut self) -> Result<&mut Self> {
        self.watermark(FINAL_WATERMARK)?;
        self.call(|op, ctx| op.on_end(ctx))?;
        Ok(self)
    }

    /// What the operator emitted since the last call, without the
    /// row-watermark column.
    pub fn take_output(&mut self) -> Vec<RecordBatch> {
        self.output.drain(..).map(|b| strip(&b)).collect()
    }

    /// The rows it found late since the last call.
    pub fn take_late(&mut self) -> Vec<RecordBatch> {
        self.late.drain(..).map(|b| strip(&b)).collect()
    }

    /// Late rows counted (those emitted and those only counted).
    pub fn late_rows(&self) -> u64 {
        self.metrics.snapshot().late_rows
    }

    pub fn operator(&mut self) -> &mut dyn Operator {
        self.operator.as_mut()
    }
}

/// `count(*)` per key `k` of an input `(k BIGINT, ts TIMESTAMP(3))`: the
/// aggregate the window, session and updating operators' tests share. With
/// `windowed`, the output is `(k, window_start, window_end, n)`, else
/// `(k, n)`.
pub fn count_per_key(windowed: bool) -> Result<CountPerKey> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{col, lit};

    use crate::window::OutputColumn;

    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let input = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("ts", ts.clone(), false),
    ]));
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
        .schema(input.clone())
        .alias("n")
        .build()?;
    let spec = Arc::new(crate::aggregate::AggregateSpec {
        keys: vec![col("k", &input)?],
        key_fields: vec![Arc::new(Field::new("k", DataType::Int64, true))],
        aggregates: vec![Arc::new(count)],
        filters: vec![None],
    });
    let (mut fields, mut columns) = (
        vec![Field::new("k", DataType::Int64, true)],
        vec![OutputColumn::Key(0)],
    );
    if windowed {
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts, false));
        columns.extend([OutputColumn::WindowStart, OutputColumn::WindowEnd]);
    }
    fields.push(Field::new("n", DataType::Int64, false));
    columns.push(OutputColumn::Aggregate(0));
    let layout = crate::window::OutputLayout::new(columns, Arc::new(Schema::new(fields)))?;
    Ok(CountPerKey {
        input,
        spec,
        layout: Arc::new(layout),
    })
}

/// What [`count_per_key`] gives.
pub struct CountPerKey {
    pub input: datafusion::arrow::datatypes::SchemaRef,
    pub spec: Arc<crate::aggregate::AggregateSpec>,
    pub layout: Arc<crate::window::OutputLayout>,
}

/// Rows `(k, ts)` of the [`count_per_key`] input.
pub fn keyed_rows(rows: &[(Option<i64>, i64)]) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    Ok(RecordBatch::try_new(
        count_per_key(false)?.input,
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMillisecondArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
        ],
    )?)
}
