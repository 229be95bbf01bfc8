//! The table an updating result describes: its changes applied in order.
//!
//! `+I` and `+U` add a row, `-U` and `-D` take out one row equal to theirs
//! (Flink's SQL client materialises its table mode the same way). A row
//! that is updated keeps its place: the `+U` after a `-U` takes the slot
//! the `-U` freed, so a table shown on a terminal changes in place.
//!
//! ```
//! # use std::sync::Arc;
//! # use weir::arrow::array::{ArrayRef, Int64Array};
//! # use weir::arrow::record_batch::RecordBatch;
//! use weir::changelog::{attach_kinds, kind_array, RowKind};
//! use weir::ChangelogTable;
//!
//! let rows = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1, 1, 2])) as ArrayRef)])?;
//! let changes = attach_kinds(&rows, kind_array(&[RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter]))?;
//! let mut table = ChangelogTable::new(rows.schema())?;
//! table.apply(&changes)?;
//! assert_eq!(table.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use weir_engine::changelog::{kinds_of, without_kinds, RowKind};
use weir_engine::row_watermark::strip;

use crate::error::Result;

/// The rows of an updating result, kept as its changes arrive.
pub struct ChangelogTable {
    schema: SchemaRef,
    converter: RowConverter,
    /// Rows in the order they were placed; a taken-out row leaves `None`.
    slots: Vec<Option<OwnedRow>>,
    /// Where each distinct row is.
    places: HashMap<OwnedRow, Vec<usize>>,
    /// The slot the last `-U` freed, for the `+U` after it.
    freed: Option<usize>,
    len: usize,
    /// Changes since [`ChangelogTable::take_changed`].
    changed: bool,
}

impl ChangelogTable {
    /// An empty table of `schema` (the data columns, no row kind).
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(ChangelogTable {
            converter: RowConverter::new(fields).map_err(weir_engine::EngineError::from)?,
            schema,
            slots: Vec::new(),
            places: HashMap::new(),
            freed: None,
            len: 0,
            changed: false,
        })
    }

    /// Rows in the table now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether anything changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Applies the changes of `batch` (with a row-kind column, or rows of
    /// an append-only result, all inserts).
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<()> {
        let kinds = kinds_of(batch)?;
        let data = without_kinds(&strip(batch));
        let rows = self
            .converter
            .convert_columns(data.columns())
            .map_err(weir_engine::EngineError::from)?;
        for (row, kind) in rows.iter().zip(kinds) {
            self.changed = true;
            if kind.is_accumulate() {
                let slot = match self.freed.take() {
                    Some(slot) if kind == RowKind::UpdateAfter => slot,
                    _ => {
                        self.slots.push(None);
                        self.slots.len() - 1
                    }
                };
                self.slots[slot] = Some(row.owned());
                self.places.entry(row.owned()).or_default().push(slot);
                self.len += 1;
                continue;
            }
            self.freed = None;
            let owned = row.owned();
            let Some(places) = self.places.get_mut(&owned) else {
                // Taking out a row that is not there (it expired upstream,
                // or the result started after it): nothing to do.
                continue;
            };
            if let Some(slot) = places.pop() {
                self.slots[slot] = None;
                self.len -= 1;
                if kind == RowKind::UpdateBefore {
                    self.freed = Some(slot);
                }
            }
            if places.is_empty() {
                self.places.remove(&owned);
            }
        }
        self.compact();
        Ok(())
    }

    /// Drops the slots taken-out rows left, once they outnumber the rows,
    /// so a long-running result's memory follows its rows.
    fn compact(&mut self) {
        if self.slots.len() <= 2 * self.len + 1024 {
            return;
        }
        let freed = self.freed;
        let mut slots = Vec::with_capacity(self.len + 1);
        self.places.clear();
        self.freed = None;
        for (i, slot) in std::mem::take(&mut self.slots).into_iter().enumerate() {
            match slot {
                Some(row) => {
                    self.places
                        .entry(row.clone())
                        .or_default()
                        .push(slots.len());
                    slots.push(Some(row));
                }
                None if Some(i) == freed => {
                    self.freed = Some(slots.len());
                    slots.push(None);
                }
                None => {}
            }
        }
        self.slots = slots;
    }

    /// The rows now, in their places.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let rows: Vec<&OwnedRow> = self.slots.iter().flatten().collect();
        let columns = self
            .converter
            .convert_rows(rows.iter().map(|r| r.row()))
            .map_err(weir_engine::EngineError::from)?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(
            RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
                .map_err(weir_engine::EngineError::from)?,
        )
    }
}
