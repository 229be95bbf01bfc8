//! `timestamp ± INTERVAL` of a fixed length as `timestamp ± duration`.
//!
//! DataFusion types `INTERVAL '4' SECOND` as a month-day-nano interval, and
//! arrow adds such an interval to each timestamp through calendar
//! arithmetic (time zone parsed, months and days applied, per row). An
//! interval without months or days is a fixed number of nanoseconds, so
//! the same values come from subtracting a duration in the timestamp's
//! unit: plain integer arithmetic. A source's watermark evaluates
//! `ts - INTERVAL ...` on every row, so this is on the hot path.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;

/// `expr` with every `timestamp ± fixed interval` as `timestamp ± duration`.
pub(crate) fn as_durations(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(expr
        .transform_up(|e| {
            let rewritten = duration_form(&e, schema);
            Ok(match rewritten {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(e),
            })
        })
        .data()?)
}

fn duration_form(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    if !matches!(binary.op(), Operator::Plus | Operator::Minus) {
        return None;
    }
    let literal = binary.right().downcast_ref::<Literal>()?;
    let ScalarValue::IntervalMonthDayNano(Some(interval)) = literal.value() else {
        return None;
    };
    if interval.months != 0 || interval.days != 0 {
        return None;
    }
    let DataType::Timestamp(unit, _) = binary.left().data_type(schema).ok()? else {
        return None;
    };
    let duration = duration(unit, interval.nanoseconds)?;
    Some(Arc::new(BinaryExpr::new(
        binary.left().clone(),
        *binary.op(),
        Arc::new(Literal::new(duration)),
    )))
}

/// `nanos` as a duration in `unit`, when it is a whole number of them.
fn duration(unit: TimeUnit, nanos: i64) -> Option<ScalarValue> {
    let per_unit = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    if nanos % per_unit != 0 {
        return None;
    }
    let n = Some(nanos / per_unit);
    Some(match unit {
        TimeUnit::Second => ScalarValue::DurationSecond(n),
        TimeUnit::Millisecond => ScalarValue::DurationMillisecond(n),
        TimeUnit::Microsecond => ScalarValue::DurationMicrosecond(n),
        TimeUnit::Nanosecond => ScalarValue::DurationNanosecond(n),
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, IntervalMonthDayNano};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    fn shifted(interval: IntervalMonthDayNano, op: Operator) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(
            Arc::new(Column::new("ts", 0)),
            op,
            Arc::new(Literal::new(ScalarValue::IntervalMonthDayNano(Some(
                interval,
            )))),
        ))
    }

    /// The rewritten expression gives the calendar arithmetic's values;
    /// intervals with days or months, or finer than the unit, stay as
    /// they are.
    #[test]
    fn fixed_intervals_become_durations_with_the_same_values() {
        let schema = Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        )]);
        let ts: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            Some(0),
            Some(1_700_000_000_123),
            None,
            Some(-5_000),
        ]));
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![ts]).unwrap();
        let eval = |e: &Arc<dyn PhysicalExpr>| {
            e.evaluate(&batch)
                .unwrap()
                .into_array(batch.num_rows())
                .unwrap()
        };
        for op in [Operator::Minus, Operator::Plus] {
            let expr = shifted(IntervalMonthDayNano::new(0, 0, 4_000_000_000), op);
            let fast = as_durations(expr.clone(), &schema).unwrap();
            assert!(
                format!("{fast:?}").contains("DurationMillisecond(\"4000\")"),
                "{fast:?}"
            );
            assert_eq!(eval(&fast).as_ref(), eval(&expr).as_ref());
        }
        for kept in [
            IntervalMonthDayNano::new(0, 1, 0),
            IntervalMonthDayNano::new(1, 0, 0),
            IntervalMonthDayNano::new(0, 0, 1_500),
        ] {
            let expr = shifted(kept, Operator::Minus);
            let same = as_durations(expr.clone(), &schema).unwrap();
            assert_eq!(format!("{same:?}"), format!("{expr:?}"));
        }
    }
}
