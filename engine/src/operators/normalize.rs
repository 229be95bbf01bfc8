//! The full changelog of an upsert stream, as Flink's `ChangelogNormalize`
//! makes it: the last row of every key is kept, so that a new row of a key
//! retracts the old one (`-U` then `+U`) and a delete carries the row it
//! deletes (`-D` of the old row; an upsert source's delete holds only the
//! key). A row equal to its key's last row changes nothing; a delete of a
//! key not held is dropped. With a state TTL a key untouched that long is
//! forgotten.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use crate::changelog::{attach_kinds, kind_array, kinds_of, without_kinds, RowKind};
use crate::error::Result;
use crate::message::{now_millis, Millis};
use crate::operator::{Operator, OperatorContext, StateSize};
use crate::row_watermark::{attach, row_watermarks, strip};
use crate::state::{StateSnapshot, StateTable};

const TOUCHED: &str = "_weir_touched";

/// The last row of each key, with when it was last touched.
static LAST_ROWS: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("last_rows", [(TOUCHED, DataType::Int64)]));

struct Last {
    row: OwnedRow,
    touched: Millis,
}

pub struct ChangelogNormalize {
    name: String,
    /// The stream's columns, without hidden ones.
    schema: SchemaRef,
    /// The key's columns in `schema`.
    key_columns: Vec<usize>,
    ttl: Option<Duration>,
    keys: RowConverter,
    rows: RowConverter,
    last: HashMap<OwnedRow, Last>,
    bytes: usize,
}

impl ChangelogNormalize {
    pub fn new(
        name: impl Into<String>,
        schema: SchemaRef,
        key_columns: Vec<usize>,
        ttl: Option<Duration>,
    ) -> Result<Self> {
        let sort_field = |i: &usize| SortField::new(schema.field(*i).data_type().clone());
        let keys = RowConverter::new(key_columns.iter().map(sort_field).collect())?;
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        let rows = RowConverter::new(all.iter().map(sort_field).collect())?;
        Ok(ChangelogNormalize {
            name: name.into(),
            schema,
            key_columns,
            ttl,
            keys,
            rows,
            last: HashMap::new(),
            bytes: 0,
        })
    }

    fn key_arrays(&self, data: &RecordBatch) -> Vec<ArrayRef> {
        self.key_columns
            .iter()
            .map(|i| data.column(*i).clone())
            .collect()
    }

    fn forget(&mut self, key: &OwnedRow) -> Option<Last> {
        let last = self.last.remove(key)?;
        self.bytes = self
            .bytes
            .saturating_sub(key.as_ref().len() + last.row.as_ref().len());
        Some(last)
    }

    fn keep(&mut self, key: OwnedRow, row: OwnedRow, touched: Millis) {
        self.bytes += key.as_ref().len() + row.as_ref().len();
        self.last.insert(key, Last { row, touched });
    }
}

impl Operator for ChangelogNormalize {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let kinds = kinds_of(&batch)?;
        let watermarks = row_watermarks(&batch).ok().cloned();
        let data = without_kinds(&strip(&batch));
        let keys = self.keys.convert_columns(&self.key_arrays(&data))?;
        ctx.observe_keys(&self.key_arrays(&data));
        let rows = self.rows.convert_columns(data.columns())?;
        let now = now_millis();
        let mut out_rows: Vec<OwnedRow> = Vec::new();
        let mut out_kinds: Vec<RowKind> = Vec::new();
        let mut out_watermarks: Vec<Millis> = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let key = keys.row(i).owned();
            let watermark = watermarks.as_ref().map_or(ctx.watermark(), |w| w.value(i));
            let mut emit = |kind: RowKind, row: OwnedRow| {
                out_kinds.push(kind);
                out_rows.push(row);
                out_watermarks.push(watermark);
            };
            if kind.is_accumulate() {
                let row = rows.row(i).owned();
                match self.forget(&key) {
                    Some(last) if last.row == row => {}
                    Some(last) => {
                        emit(RowKind::UpdateBefore, last.row);
                        emit(RowKind::UpdateAfter, row.clone());
                    }
                    None => emit(RowKind::Insert, row.clone()),
                }
                self.keep(key, row, now);
            } else if let Some(last) = self.forget(&key) {
                emit(RowKind::Delete, last.row);
            }
        }
        if out_rows.is_empty() {
            return Ok(());
        }
        let columns = self.rows.convert_rows(out_rows.iter().map(|r| r.row()))?;
        let options = RecordBatchOptions::new().with_row_count(Some(out_rows.len()));
        let rows = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        let changes = attach_kinds(&rows, kind_array(&out_kinds))?;
        ctx.emit(attach(
            &changes,
            Arc::new(Int64Array::from(out_watermarks)),
        )?);
        Ok(())
    }

    fn timer_interval(&self) -> Option<Duration> {
        self.ttl
            .map(|ttl| (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(10)))
    }

    fn on_timer(&mut self, now: Millis, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        if let Some(ttl) = self.ttl {
            let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            let expired: Vec<OwnedRow> = self
                .last
                .iter()
                .filter(|(_, l)| now.saturating_sub(l.touched) >= ttl)
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                self.forget(&key);
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        let kept: Vec<&Last> = self.last.values().collect();
        let columns = self.rows.convert_rows(kept.iter().map(|l| l.row.row()))?;
        let touched: ArrayRef =
            Arc::new(Int64Array::from_iter_values(kept.iter().map(|l| l.touched)));
        let extra = self
            .schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .zip(columns)
            .collect();
        Ok(StateSnapshot {
            tables: vec![LAST_ROWS.write_with(vec![touched], extra)?],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Some(table) = LAST_ROWS.read(&state)? else {
            return Ok(());
        };
        let touched = table.column::<Int64Array>(TOUCHED)?.clone();
        let options = RecordBatchOptions::new().with_row_count(Some(table.num_rows()));
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            table.extra().to_vec(),
            &options,
        )?;
        let keys = self.keys.convert_columns(&self.key_arrays(&data))?;
        let rows = self.rows.convert_columns(data.columns())?;
        for i in 0..data.num_rows() {
            self.keep(keys.row(i).owned(), rows.row(i).owned(), touched.value(i));
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: self.last.len() as u64,
            bytes: self.bytes as u64,
            sides: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::with_op_column;
    use crate::testing::Harness;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Schema;

    fn upserts(rows: &[(i64, Option<&str>)], kinds: &[RowKind]) -> RecordBatch {
        let data = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "name",
                Arc::new(rows.iter().map(|r| r.1).collect::<StringArray>()) as ArrayRef,
            ),
        ])
        .unwrap();
        attach_kinds(&data, kind_array(kinds)).unwrap()
    }

    #[test]
    fn upserts_become_retractions_and_deletes_carry_the_old_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let op = ChangelogNormalize::new("n", schema.clone(), vec![0], None).unwrap();
        let mut h = Harness::new(op);
        use RowKind::*;
        h.batch(upserts(
            &[
                (1, Some("a")),
                (1, Some("b")),
                (1, Some("b")),
                (2, Some("x")),
            ],
            &[Insert, Insert, Insert, Insert],
        ))
        .unwrap();
        let state = h.barrier().unwrap();
        let mut restored = ChangelogNormalize::new("n", schema, vec![0], None).unwrap();
        restored.restore(state).unwrap();
        let mut h2 = Harness::new(restored);
        // A tombstone holds only the key; a delete of an unknown key is dropped.
        h2.batch(upserts(
            &[(1, None), (3, None), (2, Some("y"))],
            &[Delete, Delete, Insert],
        ))
        .unwrap();
        let shown: Vec<RecordBatch> = h
            .take_output()
            .into_iter()
            .chain(h2.take_output())
            .map(|b| with_op_column(&b).unwrap())
            .collect();
        datafusion::assert_batches_eq!(
            [
                "+----+----+------+",
                "| op | id | name |",
                "+----+----+------+",
                "| +I | 1  | a    |",
                "| -U | 1  | a    |",
                "| +U | 1  | b    |",
                "| +I | 2  | x    |",
                "| -D | 1  | b    |",
                "| -U | 2  | x    |",
                "| +U | 2  | y    |",
                "+----+----+------+",
            ],
            &shown
        );
        assert_eq!(h2.operator().state_size().rows, 1);
    }
}
