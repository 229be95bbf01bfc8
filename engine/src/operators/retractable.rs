//! Aggregates over a changelog: each keeps what it needs to take a row
//! back out again.
//!
//! DataFusion's own accumulators retract `SUM`, `COUNT` and `AVG`
//! (`retract_batch`, from `create_sliding_accumulator`). `MIN`, `MAX` and
//! `COUNT(DISTINCT)` cannot be undone from their result alone, so they
//! keep how often each value is held ([`ValueCounts`], as Flink's
//! `MinWithRetractAggFunction` keeps a map of values to counts): taking
//! out the current minimum finds the next one. Values are kept in Arrow's
//! row format, whose byte order is the values' order.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::{EngineError, Result};

/// What a [`ValueCounts`] computes from the values it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Min,
    Max,
    DistinctCount,
}

/// A retractable accumulator for `aggregate`: DataFusion's own where it
/// can retract, [`ValueCounts`] for `MIN`, `MAX` and `COUNT(DISTINCT)`.
pub fn retractable_accumulator(aggregate: &AggregateFunctionExpr) -> Result<Box<dyn Accumulator>> {
    let name = aggregate.fun().name().to_ascii_lowercase();
    let value_type = || -> Result<DataType> {
        let field = aggregate
            .expressions()
            .first()
            .map(|_| aggregate.field())
            .ok_or_else(|| EngineError::Graph(format!("{name} without an argument")))?;
        Ok(field.data_type().clone())
    };
    let held = match (name.as_str(), aggregate.is_distinct()) {
        ("min", _) => Some(Held::Min),
        ("max", _) => Some(Held::Max),
        ("count", true) => Some(Held::DistinctCount),
        (_, true) => {
            return Err(EngineError::Graph(format!(
                "{}(DISTINCT ...) over rows that can be retracted is not supported; COUNT(DISTINCT ...) is",
                name.to_ascii_uppercase()
            )))
        }
        _ => None,
    };
    match held {
        Some(Held::DistinctCount) => {
            // COUNT(DISTINCT x) keeps a list of x's values: its type is x's.
            let state = aggregate.state_fields()?;
            let value = match state.first().map(|f| f.data_type()) {
                Some(DataType::List(item)) => item.data_type().clone(),
                other => {
                    return Err(EngineError::Graph(format!(
                        "unexpected COUNT(DISTINCT) state {other:?}"
                    )))
                }
            };
            Ok(Box::new(ValueCounts::new(Held::DistinctCount, value)?))
        }
        Some(held) => Ok(Box::new(ValueCounts::new(held, value_type()?)?)),
        None => aggregate.create_sliding_accumulator().map_err(|e| {
            EngineError::Graph(format!(
                "{} cannot take back rows of a changelog: {e}",
                aggregate.name()
            ))
        }),
    }
}

/// How often each value is held, and the minimum, maximum or number of
/// distinct values computed from that. NULLs are ignored, as SQL's
/// aggregates ignore them.
#[derive(Debug)]
pub struct ValueCounts {
    held: Held,
    value_type: DataType,
    converter: RowConverter,
    counts: BTreeMap<OwnedRow, i64>,
}

impl ValueCounts {
    pub fn new(held: Held, value_type: DataType) -> Result<Self> {
        Ok(ValueCounts {
            held,
            converter: RowConverter::new(vec![SortField::new(value_type.clone())])?,
            value_type,
            counts: BTreeMap::new(),
        })
    }

    fn add(&mut self, values: &ArrayRef, sign: i64, times: &[i64]) -> Result<()> {
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(values))?;
        for (i, row) in rows.iter().enumerate() {
            if values.is_null(i) {
                continue;
            }
            let delta = sign * times.get(i).copied().unwrap_or(1);
            let row = row.owned();
            match self.counts.get_mut(&row) {
                Some(count) => {
                    *count += delta;
                    if *count <= 0 {
                        self.counts.remove(&row);
                    }
                }
                None if delta > 0 => {
                    self.counts.insert(row, delta);
                }
                // Taking out a value not held (a retraction after its
                // state expired) changes nothing.
                None => {}
            }
        }
        Ok(())
    }

    fn value(&self, row: Option<&OwnedRow>) -> Result<ScalarValue> {
        match row {
            None => Ok(ScalarValue::try_from(&self.value_type)?),
            Some(row) => {
                let arrays = self.converter.convert_rows([row.row()])?;
                Ok(ScalarValue::try_from_array(&arrays[0], 0)?)
            }
        }
    }
}

fn df(e: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl Accumulator for ValueCounts {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        self.add(&values[0], 1, &[]).map_err(df)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        self.add(&values[0], -1, &[]).map_err(df)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        match self.held {
            Held::Min => self.value(self.counts.keys().next()).map_err(df),
            Held::Max => self.value(self.counts.keys().next_back()).map_err(df),
            Held::DistinctCount => Ok(ScalarValue::Int64(Some(self.counts.len() as i64))),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .counts
                .keys()
                .map(|k| k.as_ref().len() + 32)
                .sum::<usize>()
    }

    /// The values held and their counts, as two lists.
    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        let values = self
            .converter
            .convert_rows(self.counts.keys().map(|k| k.row()))?;
        let counts: ArrayRef =
            Arc::new(Int64Array::from_iter_values(self.counts.values().copied()));
        let list = |array: ArrayRef| -> datafusion::common::Result<ScalarValue> {
            let field = Arc::new(Field::new_list_field(array.data_type().clone(), true));
            let offsets = OffsetBuffer::from_lengths([array.len()]);
            Ok(ScalarValue::List(Arc::new(ListArray::try_new(
                field, offsets, array, None,
            )?)))
        };
        Ok(vec![list(values[0].clone())?, list(counts)?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        let (values, counts) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        for (values, counts) in values.iter().zip(counts.iter()) {
            let (Some(values), Some(counts)) = (values, counts) else {
                continue;
            };
            let counts = counts.as_primitive::<Int64Type>();
            self.add(&values, 1, counts.values()).map_err(df)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn min_and_max_find_the_next_value_when_theirs_is_taken_out() {
        let mut min = ValueCounts::new(Held::Min, DataType::Utf8).unwrap();
        let mut max = ValueCounts::new(Held::Max, DataType::Utf8).unwrap();
        let held = strings(&[Some("b"), Some("a"), None, Some("c"), Some("a")]);
        for acc in [&mut min, &mut max] {
            acc.update_batch(std::slice::from_ref(&held)).unwrap();
        }
        assert_eq!(min.evaluate().unwrap(), ScalarValue::from("a"));
        assert_eq!(max.evaluate().unwrap(), ScalarValue::from("c"));
        // One of two "a"s goes: the minimum stays.
        min.retract_batch(&[strings(&[Some("a")])]).unwrap();
        assert_eq!(min.evaluate().unwrap(), ScalarValue::from("a"));
        min.retract_batch(&[strings(&[Some("a")])]).unwrap();
        assert_eq!(min.evaluate().unwrap(), ScalarValue::from("b"));
        max.retract_batch(&[strings(&[Some("c"), Some("b")])])
            .unwrap();
        assert_eq!(max.evaluate().unwrap(), ScalarValue::from("a"));
        max.retract_batch(&[strings(&[Some("a"), Some("a")])])
            .unwrap();
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Utf8(None));
    }

    #[test]
    fn state_keeps_counts_so_a_restored_value_can_be_taken_out_twice() {
        let mut count = ValueCounts::new(Held::DistinctCount, DataType::Int64).unwrap();
        let values: ArrayRef = Arc::new(Int64Array::from(vec![5, 5, 7]));
        count.update_batch(&[values]).unwrap();
        assert_eq!(count.evaluate().unwrap(), ScalarValue::Int64(Some(2)));
        let state: Vec<ArrayRef> = count
            .state()
            .unwrap()
            .into_iter()
            .map(|s| s.to_array().unwrap())
            .collect();
        let mut restored = ValueCounts::new(Held::DistinctCount, DataType::Int64).unwrap();
        restored.merge_batch(&state).unwrap();
        let five: ArrayRef = Arc::new(Int64Array::from(vec![5]));
        restored.retract_batch(std::slice::from_ref(&five)).unwrap();
        assert_eq!(restored.evaluate().unwrap(), ScalarValue::Int64(Some(2)));
        restored.retract_batch(&[five]).unwrap();
        assert_eq!(restored.evaluate().unwrap(), ScalarValue::Int64(Some(1)));
    }
}
