//! Reading only the fields of a `ROW` column that a query uses.
//!
//! Flink's Nexmark views read one event kind's fields out of a `ROW`
//! column (`bid.auction`); a query over the view uses a few of them. When
//! a projection over (filters over) a stream scan uses a `ROW` column only
//! through `column.field`, the scan is told which fields are read
//! ([`StreamTable::read_fields`]), and a connector that
//! [`weir_connectors::Connector::reads_row_fields`] leaves the others null
//! instead of producing them. Types stay as declared, so nothing above
//! the scan changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, Projection, TableScan};

use crate::catalog::StreamTable;
use crate::error::Result;

/// The columns some expressions use: whole, or (a `ROW` column used only
/// through `column.field`) by field.
#[derive(Debug, Default)]
pub(crate) struct Uses {
    pub whole: BTreeSet<String>,
    pub fields: BTreeMap<String, BTreeSet<String>>,
}

impl Uses {
    pub fn add(&mut self, expr: &Expr) {
        // Visiting cannot fail: the closure never returns an error.
        let _ = expr.apply(|e| {
            if let Some((column, field)) = field_access(e) {
                self.fields
                    .entry(column.name.clone())
                    .or_default()
                    .insert(field.to_string());
                return Ok(TreeNodeRecursion::Jump);
            }
            if let Expr::Column(c) = e {
                self.whole.insert(c.name.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }

    /// The columns used only by field, and those fields.
    pub fn by_field_only(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.fields
            .iter()
            .filter(|(column, _)| !self.whole.contains(*column))
            .map(|(c, f)| (c.clone(), f.clone()))
            .collect()
    }
}

/// `column.field` on a column: `get_field(column, 'field')`.
pub(crate) fn field_access(expr: &Expr) -> Option<(&Column, &str)> {
    let Expr::ScalarFunction(f) = expr else {
        return None;
    };
    match (f.func.name(), f.args.as_slice()) {
        ("get_field", [Expr::Column(c), Expr::Literal(ScalarValue::Utf8(Some(field)), _)]) => {
            Some((c, field.as_str()))
        }
        _ => None,
    }
}

/// `projection` with the stream scan under it (through filters) told
/// which fields of its `ROW` columns are read; `None` when the plan has
/// another shape, the connector reads whole rows, or every field is used.
pub(crate) fn narrowed(projection: &Projection) -> Result<Option<LogicalPlan>> {
    let mut filters: Vec<&Filter> = Vec::new();
    let mut node = projection.input.as_ref();
    let scan = loop {
        match node {
            LogicalPlan::Filter(f) => {
                filters.push(f);
                node = f.input.as_ref();
            }
            LogicalPlan::TableScan(scan) => break scan,
            _ => return Ok(None),
        }
    };
    let Some(table) = scan.source.downcast_ref::<StreamTable>() else {
        return Ok(None);
    };
    let def = &table.def;
    if !table.read_fields.is_empty() || !def.connector.reads_row_fields(&def.options) {
        return Ok(None);
    }
    let mut uses = Uses::default();
    for expr in projection
        .expr
        .iter()
        .chain(filters.iter().map(|f| &f.predicate))
    {
        uses.add(expr);
    }
    let read_fields: BTreeMap<String, BTreeSet<String>> = uses
        .by_field_only()
        .into_iter()
        .filter(|(column, fields)| fewer_fields(scan, column, fields))
        .collect();
    if read_fields.is_empty() {
        return Ok(None);
    }
    let table = StreamTable {
        def: def.clone(),
        as_of: table.as_of.clone(),
        read_fields,
    };
    let mut plan = LogicalPlan::TableScan(TableScan {
        source: Arc::new(table),
        ..scan.clone()
    });
    for filter in filters.iter().rev() {
        plan = LogicalPlan::Filter(Filter::try_new(filter.predicate.clone(), Arc::new(plan))?);
    }
    Ok(Some(LogicalPlan::Projection(
        Projection::try_new_with_schema(
            projection.expr.clone(),
            Arc::new(plan),
            projection.schema.clone(),
        )?,
    )))
}

/// Whether `column` of the scan is a `ROW` with more fields than `fields`.
fn fewer_fields(scan: &TableScan, column: &str, fields: &BTreeSet<String>) -> bool {
    match scan
        .projected_schema
        .field_with_unqualified_name(column)
        .map(|f| f.data_type())
    {
        Ok(datafusion::arrow::datatypes::DataType::Struct(all)) => {
            all.iter().any(|f| !fields.contains(f.name()))
        }
        _ => false,
    }
}
