//! Row kinds: what a row of a changelog stream does to the result.
//!
//! A stream is append-only (every row is new), an upsert stream (a row
//! replaces the row with its key; deletes by key) or a retract stream
//! (every change of a row is preceded by the retraction of the old row),
//! as Flink's `ChangelogMode`. The rows of an updating stream carry their
//! kind, Flink's `RowKind`, in a hidden column just before the row
//! watermark ([`ROW_KIND`]); append-only batches have no such column and
//! all their rows are inserts. Operators that pass rows through
//! (projection, filter, exchange) keep the column; sinks that take
//! changelogs read it; append-only sinks never see it (the planner refuses
//! them an updating stream).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int8Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{EngineError, Result};
use crate::row_watermark::ROW_WATERMARK;

/// Name of the row-kind column.
pub const ROW_KIND: &str = "_weir_row_kind";

/// Flink's `RowKind`, with Flink's byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i8)]
pub enum RowKind {
    /// `+I`: a new row.
    Insert = 0,
    /// `-U`: the old row of an update, retracted before its new row.
    UpdateBefore = 1,
    /// `+U`: the new row of an update.
    UpdateAfter = 2,
    /// `-D`: a row deleted.
    Delete = 3,
}

impl RowKind {
    pub fn from_i8(value: i8) -> Result<RowKind> {
        Ok(match value {
            0 => RowKind::Insert,
            1 => RowKind::UpdateBefore,
            2 => RowKind::UpdateAfter,
            3 => RowKind::Delete,
            other => {
                return Err(EngineError::Graph(format!(
                    "{other} is not a row kind (0 to 3)"
                )))
            }
        })
    }

    /// Flink's short form: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    /// The kind from its short form.
    pub fn from_short(text: &str) -> Option<RowKind> {
        Some(match text {
            "+I" => RowKind::Insert,
            "-U" => RowKind::UpdateBefore,
            "+U" => RowKind::UpdateAfter,
            "-D" => RowKind::Delete,
            _ => return None,
        })
    }

    /// Whether the row adds to the result (`+I`, `+U`), as opposed to
    /// taking a row out of it (`-U`, `-D`).
    pub fn is_accumulate(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }
}

/// The row-kind field.
pub fn row_kind_field() -> Field {
    Field::new(ROW_KIND, DataType::Int8, false)
}

/// The position of the row-kind column in `schema`, if it has one: the
/// last column, or the one before the row watermark.
pub fn row_kind_index(schema: &Schema) -> Option<usize> {
    let fields = schema.fields();
    let n = fields.len();
    let last = |i: usize| fields[i].name() == ROW_KIND;
    if n >= 1 && last(n - 1) {
        return Some(n - 1);
    }
    if n >= 2 && fields[n - 1].name() == ROW_WATERMARK && last(n - 2) {
        return Some(n - 2);
    }
    None
}

/// The row kinds of `batch`, if it is a changelog batch.
pub fn row_kinds(batch: &RecordBatch) -> Option<&Int8Array> {
    let i = row_kind_index(batch.schema_ref())?;
    batch.column(i).as_any().downcast_ref::<Int8Array>()
}

/// The kind of each row of `batch`: its row kinds, or all inserts.
pub fn kinds_of(batch: &RecordBatch) -> Result<Vec<RowKind>> {
    match row_kinds(batch) {
        Some(kinds) => kinds
            .values()
            .iter()
            .map(|k| RowKind::from_i8(*k))
            .collect(),
        None => Ok(vec![RowKind::Insert; batch.num_rows()]),
    }
}

/// A row-kind column of `kinds`.
pub fn kind_array(kinds: &[RowKind]) -> ArrayRef {
    Arc::new(Int8Array::from_iter_values(kinds.iter().map(|k| *k as i8)))
}

/// `schema` (data columns, no hidden ones) with the row-kind column added.
pub fn with_row_kind(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(row_kind_field()));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `data` (columns without hidden ones) with `kinds` appended: a
/// changelog batch without a row watermark.
pub fn attach_kinds(data: &RecordBatch, kinds: ArrayRef) -> Result<RecordBatch> {
    let schema = with_row_kind(data.schema_ref());
    let mut columns = data.columns().to_vec();
    columns.push(kinds);
    let options = RecordBatchOptions::new().with_row_count(Some(data.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

/// `batch` (data columns, then perhaps the row watermark) with `kinds`
/// put in as its row-kind column, before the row watermark.
pub fn with_kinds(batch: &RecordBatch, kinds: ArrayRef) -> Result<RecordBatch> {
    match crate::row_watermark::row_watermarks(batch) {
        Ok(watermarks) => {
            let watermarks: ArrayRef = Arc::new(watermarks.clone());
            let data = crate::row_watermark::strip(batch);
            crate::row_watermark::attach(&attach_kinds(&data, kinds)?, watermarks)
        }
        Err(_) => attach_kinds(batch, kinds),
    }
}

/// `batch` without its row-kind column: the data (and row watermark).
pub fn without_kinds(batch: &RecordBatch) -> RecordBatch {
    match row_kind_index(batch.schema_ref()) {
        Some(i) => {
            let indices: Vec<usize> = (0..batch.num_columns()).filter(|c| *c != i).collect();
            // Projecting a subset of existing columns cannot fail.
            batch.project(&indices).unwrap_or_else(|_| batch.clone())
        }
        None => batch.clone(),
    }
}

/// The changelog as Flink's SQL client shows it: an `op` column of short
/// row kinds, then the data columns. Append-only batches get `+I`.
pub fn with_op_column(batch: &RecordBatch) -> Result<RecordBatch> {
    let kinds = kinds_of(batch)?;
    let data = without_kinds(&crate::row_watermark::strip(batch));
    let op: ArrayRef = Arc::new(StringArray::from_iter_values(
        kinds.iter().map(|k| k.short()),
    ));
    let mut fields = vec![Arc::new(Field::new("op", DataType::Utf8, false))];
    fields.extend(data.schema().fields().iter().cloned());
    let mut columns = vec![op];
    columns.extend(data.columns().iter().cloned());
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &options,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn kinds_travel_before_the_row_watermark_and_come_off_again() {
        let data =
            RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)])
                .unwrap();
        let changes = attach_kinds(
            &data,
            kind_array(&[RowKind::UpdateBefore, RowKind::UpdateAfter]),
        )
        .unwrap();
        let with_watermark = crate::row_watermark::attach_constant(&changes, 7).unwrap();
        assert_eq!(row_kind_index(with_watermark.schema_ref()), Some(1));
        assert_eq!(
            kinds_of(&with_watermark).unwrap(),
            vec![RowKind::UpdateBefore, RowKind::UpdateAfter]
        );
        assert_eq!(without_kinds(&changes), data);
        assert_eq!(kinds_of(&data).unwrap(), vec![RowKind::Insert; 2]);
        let shown = with_op_column(&with_watermark).unwrap();
        datafusion::assert_batches_eq!(
            [
                "+----+---+",
                "| op | x |",
                "+----+---+",
                "| -U | 1 |",
                "| +U | 2 |",
                "+----+---+",
            ],
            &[shown]
        );
    }
}
