//! Operator state as Arrow: what a checkpoint stores, and the tables an
//! operator declares to store it in.
//!
//! An operator names each table it checkpoints once, as a [`StateTable`]
//! with its columns. Writing goes through the declaration, and so does
//! reading: a restore asks for a column by name and type and gets a clear
//! error, never a silently wrong position, when a checkpoint does not match.
//!
//! ```
//! use std::sync::{Arc, LazyLock};
//! use datafusion::arrow::array::{Int64Array, StringArray};
//! use datafusion::arrow::datatypes::DataType;
//! use weir_engine::state::{StateSnapshot, StateTable};
//!
//! static FILES: LazyLock<StateTable> = LazyLock::new(|| {
//!     StateTable::new("files", [("path", DataType::Utf8), ("consumed", DataType::Int64)])
//! });
//!
//! let table = FILES
//!     .write(vec![
//!         Arc::new(StringArray::from(vec!["a.json"])),
//!         Arc::new(Int64Array::from(vec![42])),
//!     ])
//!     .unwrap();
//! let snapshot = StateSnapshot { tables: vec![table] };
//! let rows = FILES.read(&snapshot).unwrap().unwrap();
//! assert_eq!(rows.column::<Int64Array>("consumed").unwrap().value(0), 42);
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{EngineError, Result};

/// The state of one operator subtask: named Arrow tables.
///
/// Arrow-native so a checkpoint can write it as Arrow IPC or Parquet without
/// a second serialisation format, and so accumulator state produced by
/// DataFusion's `state()` can be stored as is.
#[derive(Debug, Clone, Default)]
pub struct StateSnapshot {
    pub tables: Vec<(String, RecordBatch)>,
}

impl StateSnapshot {
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|(_, b)| b.num_rows() == 0)
    }

    pub fn table(&self, name: &str) -> Option<&RecordBatch> {
        self.tables.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }
}

/// One table an operator checkpoints: its name and the columns it always
/// has. Tables whose width depends on the query (aggregate state, buffered
/// rows) declare their fixed columns and carry the rest after them.
#[derive(Debug, Clone)]
pub struct StateTable {
    name: &'static str,
    schema: SchemaRef,
}

impl StateTable {
    pub fn new<'a>(
        name: &'static str,
        columns: impl IntoIterator<Item = (&'a str, DataType)>,
    ) -> Self {
        let fields: Vec<Field> = columns
            .into_iter()
            .map(|(n, t)| Field::new(n, t, true))
            .collect();
        StateTable {
            name,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The table from its declared columns, in declaration order.
    pub fn write(&self, columns: Vec<ArrayRef>) -> Result<(String, RecordBatch)> {
        self.write_with(columns, Vec::new())
    }

    /// The table from its declared columns followed by `extra` ones whose
    /// names and types the query decides.
    pub fn write_with(
        &self,
        columns: Vec<ArrayRef>,
        extra: Vec<(Field, ArrayRef)>,
    ) -> Result<(String, RecordBatch)> {
        if columns.len() != self.schema.fields().len() {
            return Err(self.error(format!(
                "written with {} columns, declared {}",
                columns.len(),
                self.schema.fields().len()
            )));
        }
        let rows = columns.first().or(extra.first().map(|(_, a)| a));
        let rows = rows.map_or(0, |a| a.len());
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut arrays = columns;
        for (field, array) in extra {
            fields.push(field);
            arrays.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        Ok((self.name.to_string(), batch))
    }

    /// The table in `snapshot`, checked against the declaration; `None` when
    /// the snapshot has no such table (an operator that had nothing to keep).
    pub fn read(&self, snapshot: &StateSnapshot) -> Result<Option<StateRows>> {
        snapshot
            .table(self.name)
            .map(|batch| self.check(batch.clone()))
            .transpose()
    }

    /// Like [`read`](Self::read), removing the table from `snapshot`.
    pub fn take(&self, snapshot: &mut StateSnapshot) -> Result<Option<StateRows>> {
        let Some(i) = snapshot.tables.iter().position(|(n, _)| n == self.name) else {
            return Ok(None);
        };
        let (_, batch) = snapshot.tables.remove(i);
        self.check(batch).map(Some)
    }

    fn check(&self, batch: RecordBatch) -> Result<StateRows> {
        for (i, field) in self.schema.fields().iter().enumerate() {
            let found = batch.schema_ref().fields().get(i).cloned();
            match found {
                Some(f) if f.name() == field.name() && f.data_type() == field.data_type() => {}
                Some(f) => {
                    return Err(self.error(format!(
                        "column {i} is {} {}, declared {} {}",
                        f.name(),
                        f.data_type(),
                        field.name(),
                        field.data_type()
                    )))
                }
                None => return Err(self.error(format!("column {} is missing", field.name()))),
            }
        }
        Ok(StateRows {
            table: self.name,
            fixed: self.schema.fields().len(),
            batch,
        })
    }

    fn error(&self, message: String) -> EngineError {
        EngineError::State {
            table: self.name.to_string(),
            message,
        }
    }
}

/// A checkpointed table read back through its [`StateTable`].
#[derive(Debug, Clone)]
pub struct StateRows {
    table: &'static str,
    fixed: usize,
    batch: RecordBatch,
}

impl StateRows {
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Whether the table has a column: for one added to a table later, which
    /// older checkpoints lack.
    pub fn has_column(&self, name: &str) -> bool {
        self.batch.column_by_name(name).is_some()
    }

    /// A column as its Arrow array type.
    pub fn column<A: Array + 'static>(&self, name: &str) -> Result<&A> {
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| EngineError::State {
                table: self.table.to_string(),
                message: format!("no column {name}"),
            })?;
        column
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| EngineError::State {
                table: self.table.to_string(),
                message: format!("column {name} is {}", column.data_type()),
            })
    }

    /// The first value of a declared column: tables that hold one scalar.
    pub fn first<T: ArrowPrimitiveType>(&self, name: &str) -> Result<Option<T::Native>> {
        let column = self.column::<PrimitiveArray<T>>(name)?;
        Ok((!column.is_empty() && column.is_valid(0)).then(|| column.value(0)))
    }

    /// The whole table: for one whose layout its operator shares with the
    /// stream it processes (partial aggregates), checked there.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// The columns after the declared ones, in the order they were written.
    pub fn extra(&self) -> &[ArrayRef] {
        &self.batch.columns()[self.fixed..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, UInt32Array};
    use datafusion::arrow::datatypes::Int64Type;

    fn table() -> StateTable {
        StateTable::new("t", [("a", DataType::Int64), ("b", DataType::Utf8)])
    }

    #[test]
    fn reads_back_what_it_wrote_with_extra_columns() {
        let written = table()
            .write_with(
                vec![
                    Arc::new(Int64Array::from(vec![7, 8])),
                    Arc::new(StringArray::from(vec!["x", "y"])),
                ],
                vec![(
                    Field::new("c0", DataType::UInt32, true),
                    Arc::new(UInt32Array::from(vec![1, 2])),
                )],
            )
            .unwrap();
        let mut snapshot = StateSnapshot {
            tables: vec![written],
        };
        let rows = table().take(&mut snapshot).unwrap().unwrap();
        assert!(snapshot.tables.is_empty());
        assert_eq!(rows.num_rows(), 2);
        assert_eq!(rows.first::<Int64Type>("a").unwrap(), Some(7));
        assert_eq!(rows.column::<StringArray>("b").unwrap().value(1), "y");
        assert_eq!(rows.extra().len(), 1);
        assert!(table().read(&snapshot).unwrap().is_none());
    }

    #[test]
    fn a_mismatched_table_is_an_error_naming_it() {
        let other = StateTable::new("t", [("a", DataType::Utf8)]);
        let written = other
            .write(vec![Arc::new(StringArray::from(vec!["x"]))])
            .unwrap();
        let snapshot = StateSnapshot {
            tables: vec![written],
        };
        let err = table().read(&snapshot).unwrap_err().to_string();
        assert_eq!(
            err,
            "checkpointed state table 't': column 0 is a Utf8, declared a Int64"
        );
        let rows = other.read(&snapshot).unwrap().unwrap();
        let err = rows.column::<Int64Array>("a").unwrap_err().to_string();
        assert_eq!(err, "checkpointed state table 't': column a is Utf8");
    }
}
