//! OVER aggregates in DataFusion's plan (a `Window` node of aggregate
//! functions), and how they run: on event time when ordered by the
//! stream's time attribute, on processing time when ordered by a
//! `PROCTIME()` column, else updating (a changelog input, or an ordinary
//! column: Nexmark q6). As in Flink, every aggregate of one `SELECT` uses
//! the same window, whose frame ends at the current row.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Window, WindowFrameBound, WindowFrameUnits};
use weir_engine::operators::{OverMode, Preceding};
use weir_sql::SqlError;

use crate::error::Result;
use crate::nodes::{
    as_aggregate_call, extension, stream_of, Changelog, Needs, OverAggregate, StreamProps,
    StreamScan,
};
use crate::rewrite::{input_name, rowtime_column, trace_column, Rewriter, Streaming};

fn over_error(message: impl Into<String>) -> SqlError {
    SqlError::new(message).with_hint(
        "write agg(x) OVER (PARTITION BY k ORDER BY time_column ROWS BETWEEN n PRECEDING AND CURRENT ROW), or RANGE BETWEEN INTERVAL '...' PRECEDING AND CURRENT ROW, or UNBOUNDED PRECEDING",
    )
}

/// The column of `plan`'s output declared `PROCTIME()`, if any.
pub(crate) fn proctime_column(plan: &datafusion::logical_expr::LogicalPlan, index: usize) -> bool {
    trace_column(plan, &|node| {
        let scan = node.as_any().downcast_ref::<StreamScan>()?;
        scan.schema
            .fields()
            .iter()
            .position(|f| scan.stream.proctime_columns.contains(f.name()))
    }) == Some(index)
}

/// Milliseconds of an interval literal.
fn interval_millis(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
        ScalarValue::DurationSecond(Some(v)) => Some(v * 1000),
        _ => None,
    }
}

impl Rewriter<'_> {
    /// The streaming plan of an OVER aggregate.
    pub(crate) fn over(&self, window: &Window, needs: Needs) -> Result<Streaming> {
        let mut calls = Vec::new();
        let mut first: Option<&datafusion::logical_expr::expr::WindowFunction> = None;
        let inputs = window.input.schema().fields().len();
        for (i, expr) in window.window_expr.iter().enumerate() {
            let inner = match expr {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            let Expr::WindowFunction(function) = inner else {
                return Err(over_error("an OVER window must call a function").into());
            };
            let Some(call) = as_aggregate_call(function) else {
                return Err(over_error(format!(
                    "{} OVER (...) is not supported on a stream: only aggregates, and ROW_NUMBER/RANK/DENSE_RANK filtered by the rank (Top-N)",
                    function.fun
                ))
                .into());
            };
            match first {
                Some(f)
                    if f.params.partition_by != function.params.partition_by
                        || f.params.order_by != function.params.order_by
                        || f.params.window_frame != function.params.window_frame =>
                {
                    return Err(over_error(
                        "all OVER aggregates of one SELECT must use the same window (as in Flink)",
                    )
                    .into())
                }
                _ => first = Some(function),
            }
            calls.push((call, window.schema.field(inputs + i).name().clone()));
        }
        let Some(function) = first else {
            return Err(over_error("an OVER window without a function").into());
        };
        let params = &function.params;
        let frame = &params.window_frame;
        let [order] = params.order_by.as_slice() else {
            return Err(over_error("an OVER window on a stream must ORDER BY one column").into());
        };
        if frame.end_bound != WindowFrameBound::CurrentRow {
            return Err(over_error("an OVER window on a stream ends at the CURRENT ROW: it cannot see rows that have not come yet").into());
        }
        let rows = match frame.units {
            WindowFrameUnits::Rows => true,
            WindowFrameUnits::Range => false,
            WindowFrameUnits::Groups => {
                return Err(over_error("GROUPS frames are not supported on a stream").into())
            }
        };
        let preceding = match &frame.start_bound {
            WindowFrameBound::Preceding(v) if v.is_null() => Preceding::Unbounded,
            WindowFrameBound::Preceding(v) if rows => match v
                .cast_to(&datafusion::arrow::datatypes::DataType::UInt64)
            {
                Ok(ScalarValue::UInt64(Some(n))) => Preceding::Rows(n),
                _ => {
                    return Err(
                        over_error(format!("ROWS {v} PRECEDING: expected a count of rows")).into(),
                    )
                }
            },
            WindowFrameBound::Preceding(v) => match interval_millis(v) {
                Some(ms) => Preceding::Range(ms),
                None => {
                    return Err(over_error(format!(
                        "RANGE {v} PRECEDING: expected an interval of time, as INTERVAL '10' SECOND"
                    ))
                    .into())
                }
            },
            _ => {
                return Err(
                    over_error("an OVER window on a stream starts at a PRECEDING row").into(),
                )
            }
        };
        let input = self.rewrite(&window.input, Needs::Retractions)?;
        let schema = window.input.schema();
        let index = |e: &Expr| match e {
            Expr::Column(c) => schema.index_of_column(c).ok(),
            _ => None,
        };
        let order_column = index(&order.expr);
        let updating_input = input.props.is_updating();
        let mode = match order_column {
            Some(i) if !updating_input && order.asc && rowtime_column(&input.plan) == Some(i) => {
                OverMode::EventTime { time: i }
            }
            Some(i) if !updating_input && order.asc && proctime_column(&input.plan, i) => {
                OverMode::ProcTime
            }
            _ => OverMode::Updating {
                emit_before: needs == Needs::Retractions,
            },
        };
        let ttl = self
            .hints
            .ttl(input_name(&window.input).as_deref())
            .or(self.settings.state_ttl());
        if let OverMode::Updating { .. } = mode {
            if matches!(preceding, Preceding::Range(_)) {
                return Err(over_error(
                    "RANGE ... PRECEDING by an interval needs the ORDER BY to be the stream's time attribute (its WATERMARK column) or PROCTIME()",
                )
                .into());
            }
            if !input.props.bounded && ttl.is_none() {
                return Err(SqlError::new(
                    "an OVER aggregate of updated rows, or ordered by a column that is not a time attribute, keeps every row of an unbounded stream: it needs a state TTL",
                )
                .with_hint("set one (SET 'table.exec.state.ttl' = '1 h'), or ORDER BY the stream's time attribute")
                .into());
            }
        }
        let partition_columns: Option<Vec<usize>> = params.partition_by.iter().map(index).collect();
        let partition_names: Vec<String> = params
            .partition_by
            .iter()
            .map(|e| e.schema_name().to_string())
            .collect();
        let bounded = input.props.bounded;
        let stream = stream_of(&input.plan);
        let input = self.exchange(
            input,
            partition_columns.filter(|p| !p.is_empty()),
            &partition_names,
        );
        let changelog = match mode {
            OverMode::Updating { .. } => Changelog::Retract { keys: Vec::new() },
            _ => Changelog::AppendOnly,
        };
        let props = StreamProps {
            parallelism: input.props.parallelism,
            bounded,
            changelog,
        };
        let node = OverAggregate {
            partition: params.partition_by.clone(),
            order: params.order_by.clone(),
            rows,
            preceding,
            aggregates: calls,
            mode,
            ttl,
            stream,
            schema: window.schema.clone(),
            props: props.clone(),
            inputs: vec![input.plan],
        };
        Ok(Streaming {
            plan: extension(node),
            props,
        })
    }
}
