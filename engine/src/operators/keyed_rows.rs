//! Rows in Arrow's row format with their partition and sort keys: what
//! ranking ([`super::rank`]) and OVER aggregates ([`super::over`]) keep.
//! Sort keys compare as bytes in the `ORDER BY`'s order, directions and
//! NULL placement included.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;

/// Encodes rows, their partition keys and their sort keys.
pub(crate) struct KeyedRows {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    partitions: RowConverter,
    sorts: RowConverter,
    rows: RowConverter,
}

/// One batch in row format.
pub(crate) struct Encoded {
    pub partitions: Rows,
    pub sorts: Rows,
    pub rows: Rows,
}

impl KeyedRows {
    /// Rows of `input` by `partition` and `order` (either may be empty: a
    /// single partition, or no order).
    pub fn new(
        partition: &[Arc<dyn PhysicalExpr>],
        order: &[(Arc<dyn PhysicalExpr>, SortOptions)],
        input: &SchemaRef,
    ) -> Result<Self> {
        let mut partitions = partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(input)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut sorts = order
            .iter()
            .map(|(e, options)| Ok(SortField::new_with_options(e.data_type(input)?, *options)))
            .collect::<Result<Vec<_>>>()?;
        // No keys: one constant key for all rows.
        for fields in [&mut partitions, &mut sorts] {
            if fields.is_empty() {
                fields.push(SortField::new(DataType::Boolean));
            }
        }
        let rows = input
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(KeyedRows {
            partition: partition.to_vec(),
            order: order.to_vec(),
            partitions: RowConverter::new(partitions)?,
            sorts: RowConverter::new(sorts)?,
            rows: RowConverter::new(rows)?,
        })
    }

    /// `data` (the input's columns) in row format.
    pub fn encode(&self, data: &RecordBatch) -> Result<Encoded> {
        let n = data.num_rows();
        let evaluate = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
            let mut arrays = exprs
                .map(|e| Ok(e.evaluate(data)?.into_array(n)?))
                .collect::<Result<Vec<ArrayRef>>>()?;
            if arrays.is_empty() {
                arrays.push(Arc::new(BooleanArray::from(vec![true; n])));
            }
            Ok::<_, crate::error::EngineError>(arrays)
        };
        let partitions = evaluate(&mut self.partition.iter())?;
        let sorts = evaluate(&mut self.order.iter().map(|(e, _)| e))?;
        Ok(Encoded {
            partitions: self.partitions.convert_columns(&partitions)?,
            sorts: self.sorts.convert_columns(&sorts)?,
            rows: self.rows.convert_columns(data.columns())?,
        })
    }

    /// Whole rows back as the input's columns.
    pub fn decode<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a OwnedRow>,
    ) -> Result<Vec<ArrayRef>> {
        Ok(self.rows.convert_rows(rows.into_iter().map(|r| r.row()))?)
    }
}
