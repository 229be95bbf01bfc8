//! A GROUP BY without a window over an unbounded stream: an updating
//! aggregate whose per-key state expires after `'table.exec.state.ttl'`.
//!
//! Each input batch updates the accumulators of the keys it holds and emits
//! one row per such key with its new values: an upsert stream keyed by the
//! group keys, where a row replaces the previous row of its key (Flink's
//! `+U`, without the `-U` before it). A key untouched for the TTL (in
//! processing time, as Flink's state TTL) is dropped; its next row starts
//! from nothing.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;

use crate::aggregate::AggregateSpec;
use crate::error::{EngineError, Result};
use crate::message::{now_millis, Millis};
use crate::operator::{Operator, OperatorContext, StateSize};
use crate::state::{StateSnapshot, StateTable};
use crate::window::OutputLayout;

const TOUCHED: &str = "_weir_touched";

/// Live groups: when each was last updated, then its key columns and each
/// aggregate's state columns.
static GROUPS: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("groups", [(TOUCHED, DataType::Int64)]));

struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Wall clock of its last update.
    touched: Millis,
}

pub struct UpdatingAggregate {
    name: String,
    spec: Arc<AggregateSpec>,
    layout: Arc<OutputLayout>,
    ttl: Duration,
    /// Turns key values into comparable rows (a constant column when there
    /// are no keys: one global group).
    converter: RowConverter,
    groups: HashMap<OwnedRow, Group>,
}

impl UpdatingAggregate {
    pub fn new(
        name: impl Into<String>,
        spec: Arc<AggregateSpec>,
        layout: Arc<OutputLayout>,
        ttl: Duration,
    ) -> Result<Self> {
        let fields: Vec<SortField> = if spec.key_fields.is_empty() {
            vec![SortField::new(DataType::Boolean)]
        } else {
            spec.key_fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect()
        };
        Ok(UpdatingAggregate {
            name: name.into(),
            converter: RowConverter::new(fields)?,
            spec,
            layout,
            ttl,
            groups: HashMap::new(),
        })
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.spec
            .aggregates
            .iter()
            .map(|a| Ok(a.create_accumulator()?))
            .collect()
    }

    /// Key rows of `keys` (`rows` long).
    fn key_rows(&self, keys: &[ArrayRef], rows: usize) -> Result<Rows> {
        let constant: Vec<ArrayRef>;
        let columns = if keys.is_empty() {
            constant = vec![Arc::new(datafusion::arrow::array::BooleanArray::from(
                vec![true; rows],
            ))];
            &constant
        } else {
            keys
        };
        Ok(self.converter.convert_columns(columns)?)
    }

    /// Key columns back from key rows.
    fn key_columns(&self, rows: &[OwnedRow]) -> Result<Vec<ArrayRef>> {
        if self.spec.key_fields.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.converter.convert_rows(rows.iter().map(|r| r.row()))?)
    }

    /// The current values of the groups of `keys`.
    fn values(&mut self, keys: &[OwnedRow]) -> Result<Vec<ArrayRef>> {
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.spec.aggregates.len()];
        for key in keys {
            let group = self
                .groups
                .get_mut(key)
                .ok_or_else(|| EngineError::Graph("an updated group went missing".into()))?;
            for (column, acc) in columns.iter_mut().zip(&mut group.accumulators) {
                column.push(acc.evaluate()?);
            }
        }
        columns
            .into_iter()
            .map(|c| Ok(ScalarValue::iter_to_array(c)?))
            .collect()
    }

    fn expire(&mut self, now: Millis) {
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        self.groups
            .retain(|_, g| now.saturating_sub(g.touched) < ttl);
    }
}

impl Operator for UpdatingAggregate {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let input = self.spec.evaluate(&batch)?;
        ctx.observe_keys(&input.keys);
        let keys = self.key_rows(&input.keys, rows)?;
        // Rows per key, keys in order of first appearance; a key is copied
        // once per batch, not once per row.
        let mut position: HashMap<Row<'_>, usize> = HashMap::new();
        let mut touched: Vec<(OwnedRow, Vec<u32>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let index = u32::try_from(i).map_err(|e| EngineError::Graph(e.to_string()))?;
            let at = *position.entry(key).or_insert_with(|| {
                touched.push((key.owned(), Vec::new()));
                touched.len() - 1
            });
            touched[at].1.push(index);
        }
        let now = now_millis();
        let mut order = Vec::with_capacity(touched.len());
        for (key, indices) in touched {
            let taken = input.take(&UInt32Array::from(indices))?;
            let accumulators = match self.groups.get_mut(&key) {
                Some(group) => {
                    group.touched = now;
                    &mut group.accumulators
                }
                None => {
                    let group = Group {
                        accumulators: self.new_accumulators()?,
                        touched: now,
                    };
                    &mut self.groups.entry(key.clone()).or_insert(group).accumulators
                }
            };
            for (i, acc) in accumulators.iter_mut().enumerate() {
                let args = match &taken.filters[i] {
                    Some(mask) => taken.args[i]
                        .iter()
                        .map(|a| Ok(filter(a.as_ref(), mask)?))
                        .collect::<Result<Vec<_>>>()?,
                    None => taken.args[i].clone(),
                };
                acc.update_batch(&args)?;
            }
            order.push(key);
        }
        let key_columns = self.key_columns(&order)?;
        let values = self.values(&order)?;
        let none = vec![0; order.len()];
        ctx.emit(self.layout.assemble(
            none.clone(),
            none,
            &key_columns,
            &values,
            ctx.watermark(),
        )?);
        Ok(())
    }

    fn timer_interval(&self) -> Option<Duration> {
        Some((self.ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(10)))
    }

    fn on_timer(&mut self, now: Millis, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        self.expire(now);
        Ok(())
    }

    fn snapshot(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        let keys: Vec<OwnedRow> = self.groups.keys().cloned().collect();
        let mut fields: Vec<Field> = self
            .spec
            .key_fields
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let mut columns = self.key_columns(&keys)?;
        let widths = self.spec.state_widths()?;
        let state_fields = self.spec.state_fields()?;
        let mut states: Vec<Vec<ScalarValue>> = vec![Vec::new(); state_fields.len()];
        let mut touched = Vec::with_capacity(keys.len());
        for key in &keys {
            let group = self
                .groups
                .get_mut(key)
                .ok_or_else(|| EngineError::Graph("a group went missing".into()))?;
            let mut offset = 0;
            for (acc, width) in group.accumulators.iter_mut().zip(&widths) {
                let state = acc.state()?;
                for (j, value) in state.into_iter().take(*width).enumerate() {
                    states[offset + j].push(value);
                }
                offset += width;
            }
            touched.push(group.touched);
        }
        for (values, field) in states.into_iter().zip(&state_fields) {
            let array = if values.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            fields.push(Field::new(field.name(), array.data_type().clone(), true));
            columns.push(array);
        }
        let extra = fields.into_iter().zip(columns).collect();
        let groups = GROUPS.write_with(vec![Arc::new(Int64Array::from(touched))], extra)?;
        Ok(StateSnapshot {
            tables: vec![groups],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Some(table) = GROUPS.read(&state)? else {
            return Ok(());
        };
        let key_count = self.spec.key_fields.len();
        let widths = self.spec.state_widths()?;
        let columns = table.extra();
        let keys = self.key_rows(&columns[..key_count], table.num_rows())?;
        let touched = table.column::<Int64Array>(TOUCHED)?;
        for (row, key) in keys.iter().enumerate() {
            let mut accumulators = self.new_accumulators()?;
            let mut offset = key_count;
            for (acc, width) in accumulators.iter_mut().zip(&widths) {
                let state: Vec<ArrayRef> = columns[offset..offset + width]
                    .iter()
                    .map(|c| c.slice(row, 1))
                    .collect();
                acc.merge_batch(&state)?;
                offset += width;
            }
            self.groups.insert(
                key.owned(),
                Group {
                    accumulators,
                    touched: touched.value(row),
                },
            );
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        let bytes: usize = self
            .groups
            .iter()
            .map(|(k, g)| k.as_ref().len() + g.accumulators.iter().map(|a| a.size()).sum::<usize>())
            .sum();
        StateSize {
            rows: self.groups.len() as u64,
            bytes: bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{count_per_key, keyed_rows, Harness};
    use datafusion::assert_batches_eq;

    /// Each batch emits the new value of every key it touched, once, in
    /// the order the keys first appear: an upsert stream by key.
    #[test]
    fn each_batch_upserts_the_keys_it_touched() {
        let c = count_per_key(false).unwrap();
        let op = UpdatingAggregate::new("u", c.spec, c.layout, Duration::from_secs(3600)).unwrap();
        let mut h = Harness::new(op);
        h.batch(keyed_rows(&[(Some(1), 0), (Some(2), 1), (Some(1), 2)]).unwrap())
            .unwrap();
        h.batch(keyed_rows(&[(Some(2), 3), (None, 4)]).unwrap())
            .unwrap();
        assert_batches_eq!(
            [
                "+---+---+",
                "| k | n |",
                "+---+---+",
                "| 1 | 2 |",
                "| 2 | 1 |",
                "| 2 | 2 |",
                "|   | 1 |",
                "+---+---+",
            ],
            &h.take_output()
        );
        let state = h.barrier().unwrap();
        let c = count_per_key(false).unwrap();
        let mut restored =
            UpdatingAggregate::new("u", c.spec, c.layout, Duration::from_secs(3600)).unwrap();
        restored.restore(state).unwrap();
        let mut h = Harness::new(restored);
        h.batch(keyed_rows(&[(Some(1), 5)]).unwrap()).unwrap();
        assert_batches_eq!(
            [
                "+---+---+",
                "| k | n |",
                "+---+---+",
                "| 1 | 3 |",
                "+---+---+"
            ],
            &h.take_output()
        );
    }
}
