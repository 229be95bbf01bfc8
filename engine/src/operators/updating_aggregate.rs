//! A GROUP BY without a window: an updating aggregate, as Flink's
//! `GroupAggFunction` runs it.
//!
//! Each input batch updates the accumulators of the keys it holds, then
//! emits, per key, what changed (as Flink's mini-batch aggregate does for
//! a bundle): `+I` for a new key; for a key whose values changed its old
//! row as `-U` (when a consumer needs retractions: [`AggregateOptions::
//! emit_before`]) and its new row as `+U`; `-D` with its old row when its
//! last input row was retracted. Input can itself be a changelog: `+I` and
//! `+U` rows are accumulated, `-U` and `-D` rows retracted (with
//! retractable accumulators, [`super::retractable`]). Rows are counted per
//! key, so a key whose rows are all retracted is deleted.
//!
//! With a state TTL, a key untouched for that long (processing time, as
//! Flink's state TTL) is dropped; its next row starts from nothing, and
//! (as Flink) unchanged values are re-emitted, so that consumers with a
//! TTL of their own keep the key alive.

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

use crate::aggregate::{AggregateInput, AggregateSpec};
use crate::changelog::{kind_array, kinds_of, with_kinds, RowKind};
use crate::error::{EngineError, Result};
use crate::message::{now_millis, Millis};
use crate::operator::{Operator, OperatorContext, StateSize};
use crate::operators::retractable::retractable_accumulator;
use crate::state::{StateSnapshot, StateTable};
use crate::window::OutputLayout;

const TOUCHED: &str = "_weir_touched";
const ROWS: &str = "_weir_rows";

/// Live groups: when each was last updated, then its key columns, its row
/// count and each aggregate's state columns.
static GROUPS: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("groups", [(TOUCHED, DataType::Int64)]));

/// How an updating aggregate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateOptions {
    /// How long a key is kept after its last update; `None`: for ever.
    pub ttl: Option<Duration>,
    /// Whether input rows can be retractions (`-U`, `-D`).
    pub retracting_input: bool,
    /// Whether a changed row is preceded by its old row as `-U`.
    pub emit_before: bool,
}

struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Rows accumulated minus rows retracted: at 0 the key is deleted.
    rows: i64,
    /// Wall clock of its last update.
    touched: Millis,
}

/// The changes one batch makes: per output row, its key, values and kind.
#[derive(Default)]
struct Changes {
    keys: Vec<OwnedRow>,
    values: Vec<Vec<ScalarValue>>,
    kinds: Vec<RowKind>,
}

impl Changes {
    fn push(&mut self, key: &OwnedRow, values: Vec<ScalarValue>, kind: RowKind) {
        self.keys.push(key.clone());
        self.values.push(values);
        self.kinds.push(kind);
    }
}

pub struct UpdatingAggregate {
    name: String,
    spec: Arc<AggregateSpec>,
    layout: Arc<OutputLayout>,
    options: AggregateOptions,
    /// Turns key values into comparable rows (a constant column when there
    /// are no keys: one global group).
    converter: RowConverter,
    /// State columns per aggregate, and their types (from an empty
    /// accumulator: retractable ones keep other state than plain ones).
    state_types: Vec<Vec<DataType>>,
    groups: HashMap<OwnedRow, Group>,
}

impl UpdatingAggregate {
    pub fn new(
        name: impl Into<String>,
        spec: Arc<AggregateSpec>,
        layout: Arc<OutputLayout>,
        options: AggregateOptions,
    ) -> Result<Self> {
        let fields: Vec<SortField> = if spec.key_fields.is_empty() {
            vec![SortField::new(DataType::Boolean)]
        } else {
            spec.key_fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect()
        };
        let mut op = UpdatingAggregate {
            name: name.into(),
            converter: RowConverter::new(fields)?,
            spec,
            layout,
            options,
            state_types: Vec::new(),
            groups: HashMap::new(),
        };
        op.state_types = op
            .new_accumulators()?
            .iter_mut()
            .map(|acc| {
                Ok(acc
                    .state()?
                    .iter()
                    .map(ScalarValue::data_type)
                    .collect::<Vec<_>>())
            })
            .collect::<Result<_>>()?;
        Ok(op)
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.spec
            .aggregates
            .iter()
            .map(|a| {
                if self.options.retracting_input {
                    retractable_accumulator(a)
                } else {
                    Ok(a.create_accumulator()?)
                }
            })
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

    fn expire(&mut self, now: Millis) {
        if let Some(ttl) = self.options.ttl {
            let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            self.groups
                .retain(|_, g| now.saturating_sub(g.touched) < ttl);
        }
    }

    /// Applies the rows of one key (`rows` of `input`, of `kinds`) and
    /// records what changed.
    fn apply(
        &mut self,
        key: OwnedRow,
        mut rows: Vec<u32>,
        input: &AggregateInput,
        kinds: &[RowKind],
        now: Millis,
        changes: &mut Changes,
    ) -> Result<()> {
        let first = !self.groups.contains_key(&key);
        if first {
            // A retraction of a key without state (its first row, or after
            // the state expired) is dropped, as Flink drops it.
            let leading = rows
                .iter()
                .take_while(|r| !kinds[**r as usize].is_accumulate())
                .count();
            rows.drain(..leading);
            if rows.is_empty() {
                return Ok(());
            }
            let group = Group {
                accumulators: self.new_accumulators()?,
                rows: 0,
                touched: now,
            };
            self.groups.insert(key.clone(), group);
        }
        let group = self
            .groups
            .get_mut(&key)
            .ok_or_else(|| EngineError::Graph("an updated group went missing".into()))?;
        let before = if first {
            Vec::new()
        } else {
            evaluate(&mut group.accumulators)?
        };
        let (added, taken): (Vec<u32>, Vec<u32>) = rows
            .iter()
            .partition(|r| kinds[**r as usize].is_accumulate());
        for (indices, accumulate) in [(added, true), (taken, false)] {
            if indices.is_empty() {
                continue;
            }
            group.rows += if accumulate { 1 } else { -1 } * indices.len() as i64;
            let taken = input.take(&UInt32Array::from(indices))?;
            for (i, acc) in group.accumulators.iter_mut().enumerate() {
                let args = match &taken.filters[i] {
                    Some(mask) => taken.args[i]
                        .iter()
                        .map(|a| Ok(filter(a.as_ref(), mask)?))
                        .collect::<Result<Vec<_>>>()?,
                    None => taken.args[i].clone(),
                };
                if accumulate {
                    acc.update_batch(&args)?;
                } else {
                    acc.retract_batch(&args)?;
                }
            }
        }
        group.touched = now;
        if group.rows <= 0 {
            self.groups.remove(&key);
            if !first {
                changes.push(&key, before, RowKind::Delete);
            }
            return Ok(());
        }
        let after = evaluate(&mut group.accumulators)?;
        if first {
            changes.push(&key, after, RowKind::Insert);
        } else if before != after || self.options.ttl.is_some() {
            if self.options.emit_before {
                changes.push(&key, before, RowKind::UpdateBefore);
            }
            changes.push(&key, after, RowKind::UpdateAfter);
        }
        Ok(())
    }

    /// The rows of `changes`, with their kinds.
    fn emit(&self, changes: Changes, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if changes.kinds.is_empty() {
            return Ok(());
        }
        let key_columns = self.key_columns(&changes.keys)?;
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.spec.aggregates.len()];
        for row in changes.values {
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        let values = columns
            .into_iter()
            .map(|c| Ok(ScalarValue::iter_to_array(c)?))
            .collect::<Result<Vec<_>>>()?;
        let none = vec![0; changes.kinds.len()];
        let batch =
            self.layout
                .assemble(none.clone(), none, &key_columns, &values, ctx.watermark())?;
        ctx.emit(with_kinds(&batch, kind_array(&changes.kinds))?);
        Ok(())
    }
}

/// Each accumulator's current value.
fn evaluate(accumulators: &mut [Box<dyn Accumulator>]) -> Result<Vec<ScalarValue>> {
    accumulators.iter_mut().map(|a| Ok(a.evaluate()?)).collect()
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
        let kinds = kinds_of(&batch)?;
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
        let mut changes = Changes::default();
        for (key, indices) in touched {
            self.apply(key, indices, &input, &kinds, now, &mut changes)?;
        }
        self.emit(changes, ctx)
    }

    fn timer_interval(&self) -> Option<Duration> {
        self.options
            .ttl
            .map(|ttl| (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(10)))
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
        let types: Vec<&DataType> = self.state_types.iter().flatten().collect();
        let mut states: Vec<Vec<ScalarValue>> = vec![Vec::new(); types.len()];
        let mut touched = Vec::with_capacity(keys.len());
        let mut counts = Vec::with_capacity(keys.len());
        for key in &keys {
            let group = self
                .groups
                .get_mut(key)
                .ok_or_else(|| EngineError::Graph("a group went missing".into()))?;
            let mut offset = 0;
            for (acc, types) in group.accumulators.iter_mut().zip(&self.state_types) {
                let state = acc.state()?;
                for (j, value) in state.into_iter().take(types.len()).enumerate() {
                    states[offset + j].push(value);
                }
                offset += types.len();
            }
            touched.push(group.touched);
            counts.push(group.rows);
        }
        fields.push(Field::new(ROWS, DataType::Int64, true));
        columns.push(Arc::new(Int64Array::from(counts)));
        for (i, (values, data_type)) in states.into_iter().zip(types).enumerate() {
            let array = if values.is_empty() {
                datafusion::arrow::array::new_empty_array(data_type)
            } else {
                ScalarValue::iter_to_array(values)?
            };
            fields.push(Field::new(
                format!("_weir_state_{i}"),
                array.data_type().clone(),
                true,
            ));
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
        let columns = table.extra();
        let keys = self.key_rows(&columns[..key_count], table.num_rows())?;
        let touched = table.column::<Int64Array>(TOUCHED)?;
        let counts = table.column::<Int64Array>(ROWS)?;
        for (row, key) in keys.iter().enumerate() {
            let mut accumulators = self.new_accumulators()?;
            let mut offset = key_count + 1;
            for (acc, types) in accumulators.iter_mut().zip(&self.state_types) {
                let width = types.len();
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
                    rows: counts.value(row),
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
            sides: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::{attach_kinds, with_op_column};
    use crate::testing::{count_per_key, keyed_rows, Harness};
    use datafusion::assert_batches_eq;

    fn options(emit_before: bool, retracting_input: bool) -> AggregateOptions {
        AggregateOptions {
            ttl: None,
            retracting_input,
            emit_before,
        }
    }

    fn count(options: AggregateOptions) -> UpdatingAggregate {
        let c = count_per_key(false).unwrap();
        UpdatingAggregate::new("u", c.spec, c.layout, options).unwrap()
    }

    fn changes(h: &mut Harness) -> Vec<RecordBatch> {
        h.take_output()
            .iter()
            .map(|b| with_op_column(b).unwrap())
            .collect()
    }

    /// Each batch emits, once per key it touched and in the order the
    /// keys first appear: `+I` for a new key, `-U` then `+U` for a changed
    /// one; and the state survives a restore.
    #[test]
    fn each_batch_emits_the_changes_of_the_keys_it_touched() {
        let mut h = Harness::new(count(options(true, false)));
        h.batch(keyed_rows(&[(Some(1), 0), (Some(2), 1), (Some(1), 2)]).unwrap())
            .unwrap();
        h.batch(keyed_rows(&[(Some(2), 3), (None, 4)]).unwrap())
            .unwrap();
        assert_batches_eq!(
            [
                "+----+---+---+",
                "| op | k | n |",
                "+----+---+---+",
                "| +I | 1 | 2 |",
                "| +I | 2 | 1 |",
                "| -U | 2 | 1 |",
                "| +U | 2 | 2 |",
                "| +I |   | 1 |",
                "+----+---+---+",
            ],
            &changes(&mut h)
        );
        let state = h.barrier().unwrap();
        let mut restored = count(options(false, false));
        restored.restore(state).unwrap();
        let mut h = Harness::new(restored);
        h.batch(keyed_rows(&[(Some(1), 5)]).unwrap()).unwrap();
        // Without -U: an upsert.
        assert_batches_eq!(
            [
                "+----+---+---+",
                "| op | k | n |",
                "+----+---+---+",
                "| +U | 1 | 3 |",
                "+----+---+---+",
            ],
            &changes(&mut h)
        );
    }

    /// Retracted rows are taken out: a key whose every row is retracted is
    /// deleted; a retraction of a key never seen changes nothing.
    #[test]
    fn retractions_take_rows_out_and_delete_emptied_keys() {
        let rows = |rows: &[(Option<i64>, i64)], kinds: &[RowKind]| {
            attach_kinds(&keyed_rows(rows).unwrap(), kind_array(kinds)).unwrap()
        };
        let mut h = Harness::new(count(options(true, true)));
        h.batch(rows(
            &[(Some(1), 0), (Some(1), 1), (Some(9), 2), (Some(2), 3)],
            &[
                RowKind::Insert,
                RowKind::Insert,
                RowKind::Delete,
                RowKind::Insert,
            ],
        ))
        .unwrap();
        h.batch(rows(
            &[(Some(1), 1), (Some(2), 3), (Some(2), 4)],
            &[RowKind::UpdateBefore, RowKind::Delete, RowKind::UpdateAfter],
        ))
        .unwrap();
        h.batch(rows(&[(Some(1), 0)], &[RowKind::Delete])).unwrap();
        assert_batches_eq!(
            [
                "+----+---+---+",
                "| op | k | n |",
                "+----+---+---+",
                "| +I | 1 | 2 |",
                "| +I | 2 | 1 |",
                "| -U | 1 | 2 |",
                "| +U | 1 | 1 |",
                "| -D | 1 | 1 |",
                "+----+---+---+",
            ],
            &changes(&mut h)
        );
        // Key 2: one row out, one in, in the same batch: its count is the
        // same, so (without a TTL) nothing is emitted for it.
        assert_eq!(h.operator().state_size().rows, 1);
    }
}
