//! Changelog streams: Flink's row kinds, carried as a column of the batch.
//!
//! An append-only stream's batches have no such column: every row is an
//! insert. A changelog's batches carry [`ROW_KIND`], one [`RowKind`] per row
//! as Flink's `RowKind` byte (`0` = `+I`, `1` = `-U`, `2` = `+U`, `3` =
//! `-D`), just before the row watermark; operators that do not look at it
//! (projection, filter) pass it through, and sinks see it as the last column.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int8Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::Result;
use crate::row_watermark::ROW_WATERMARK;

/// Name of the row-kind column.
pub const ROW_KIND: &str = "_weir_row_kind";

/// What a row of a changelog does, as Flink's `RowKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum RowKind {
    /// `+I`: a new row.
    Insert = 0,
    /// `-U`: the previous version of an updated row, retracted.
    UpdateBefore = 1,
    /// `+U`: the new version of an updated row.
    UpdateAfter = 2,
    /// `-D`: a row deleted.
    Delete = 3,
}

impl RowKind {
    pub fn from_i8(value: i8) -> Option<RowKind> {
        match value {
            0 => Some(RowKind::Insert),
            1 => Some(RowKind::UpdateBefore),
            2 => Some(RowKind::UpdateAfter),
            3 => Some(RowKind::Delete),
            _ => None,
        }
    }

    /// `-U` and `-D` take a row away; `+I` and `+U` add one.
    pub fn is_retraction(self) -> bool {
        matches!(self, RowKind::UpdateBefore | RowKind::Delete)
    }

    /// `+I`, `-U`, `+U` or `-D`, as Flink prints them.
    pub fn short(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }
}

impl fmt::Display for RowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

fn kind_field() -> Field {
    Field::new(ROW_KIND, DataType::Int8, false)
}

/// The row kinds of a changelog batch; `None` for an append-only one.
pub fn row_kinds(batch: &RecordBatch) -> Option<&Int8Array> {
    batch
        .column_by_name(ROW_KIND)
        .and_then(|c| c.as_any().downcast_ref::<Int8Array>())
}

/// The kind of row `i` (`+I` when the batch is append-only).
pub fn kind_at(kinds: Option<&Int8Array>, i: usize) -> RowKind {
    kinds
        .and_then(|k| RowKind::from_i8(k.value(i)))
        .unwrap_or(RowKind::Insert)
}

/// Where the row kind goes in `schema`: before the row watermark, or last.
fn kind_position(schema: &Schema) -> usize {
    let n = schema.fields().len();
    if n > 0 && schema.field(n - 1).name() == ROW_WATERMARK {
        n - 1
    } else {
        n
    }
}

/// `schema` with the row-kind column, in its place.
pub fn with_row_kind(schema: &Schema) -> SchemaRef {
    if schema.column_with_name(ROW_KIND).is_some() {
        return Arc::new(schema.clone());
    }
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.insert(kind_position(schema), Arc::new(kind_field()));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with `kinds` as its row-kind column.
pub fn attach_kinds(batch: &RecordBatch, kinds: Vec<RowKind>) -> Result<RecordBatch> {
    let kinds: ArrayRef = Arc::new(Int8Array::from_iter_values(
        kinds.into_iter().map(|k| k as i8),
    ));
    let schema = batch.schema_ref();
    let at = kind_position(schema);
    let mut columns = batch.columns().to_vec();
    columns.insert(at, kinds);
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        with_row_kind(schema),
        columns,
        &options,
    )?)
}

/// `batch` without its row-kind column, and the kinds (`None` when it had
/// none): what a sink that writes plain rows, or renders kinds itself, needs.
pub fn split_kinds(batch: &RecordBatch) -> (RecordBatch, Option<Int8Array>) {
    let Some((at, _)) = batch.schema_ref().column_with_name(ROW_KIND) else {
        return (batch.clone(), None);
    };
    let kinds = row_kinds(batch).cloned();
    let keep: Vec<usize> = (0..batch.num_columns()).filter(|i| *i != at).collect();
    // Projecting a subset of existing columns cannot fail.
    let rows = batch.project(&keep).unwrap_or_else(|_| batch.clone());
    (rows, kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row_watermark::attach_constant;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn kinds_sit_before_the_row_watermark_and_come_off_again() {
        let batch =
            RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)])
                .unwrap();
        let batch = attach_constant(&batch, 5).unwrap();
        let changelog =
            attach_kinds(&batch, vec![RowKind::UpdateBefore, RowKind::UpdateAfter]).unwrap();
        let names: Vec<&str> = changelog
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["x", ROW_KIND, ROW_WATERMARK]);
        let kinds = row_kinds(&changelog);
        assert_eq!(kind_at(kinds, 0), RowKind::UpdateBefore);
        assert_eq!(kind_at(kinds, 1).short(), "+U");
        assert_eq!(kind_at(None, 0), RowKind::Insert);
        let (rows, kinds) = split_kinds(&changelog);
        assert_eq!(rows, batch);
        assert_eq!(kinds.unwrap().values().to_vec(), vec![1, 2]);
        assert!(split_kinds(&batch).1.is_none());
    }
}
