//! Grouped aggregation state built from DataFusion's machinery.
//!
//! Keys are interned by DataFusion's `GroupValues`; each aggregate function
//! keeps a `GroupsAccumulator` (or an `Accumulator` behind DataFusion's
//! adapter). Every DataFusion aggregate therefore works in a window, and its
//! state can be taken out (`state`) and merged (`merge_batch`): that is what
//! two-phase aggregation, slice sharing and checkpoints are built on.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::error::Result;

/// The group keys and aggregate functions of one aggregation.
#[derive(Debug)]
pub struct AggregateSpec {
    /// Key expressions, evaluated on input rows.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Fields of the key columns.
    pub key_fields: Vec<FieldRef>,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// `FILTER (WHERE ...)` of each aggregate.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
}

impl AggregateSpec {
    pub fn key_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.key_fields.clone()))
    }

    /// The state fields of every aggregate, in order.
    pub fn state_fields(&self) -> Result<Vec<FieldRef>> {
        let mut fields = Vec::new();
        for agg in &self.aggregates {
            fields.extend(agg.state_fields()?);
        }
        Ok(fields)
    }

    /// Number of state columns of each aggregate.
    pub fn state_widths(&self) -> Result<Vec<usize>> {
        self.aggregates
            .iter()
            .map(|a| Ok(a.state_fields()?.len()))
            .collect()
    }

    /// Evaluates keys, aggregate arguments and filters on `batch`.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<AggregateInput> {
        let rows = batch.num_rows();
        let keys = self
            .keys
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(rows)?))
            .collect::<Result<Vec<_>>>()?;
        let mut args = Vec::with_capacity(self.aggregates.len());
        for agg in &self.aggregates {
            let values = agg
                .expressions()
                .iter()
                .map(|e| Ok(e.evaluate(batch)?.into_array(rows)?))
                .collect::<Result<Vec<_>>>()?;
            args.push(values);
        }
        let mut filters = Vec::with_capacity(self.filters.len());
        for filter in &self.filters {
            filters.push(match filter {
                Some(f) => Some(crate::operators::predicate_mask(f, batch)?),
                None => None,
            });
        }
        Ok(AggregateInput {
            keys,
            args,
            filters,
        })
    }
}

/// Evaluated inputs of an aggregation for a set of rows.
#[derive(Debug, Clone)]
pub struct AggregateInput {
    pub keys: Vec<ArrayRef>,
    pub args: Vec<Vec<ArrayRef>>,
    pub filters: Vec<Option<BooleanArray>>,
}

impl AggregateInput {
    /// The rows at `indices`.
    pub fn take(&self, indices: &datafusion::arrow::array::UInt32Array) -> Result<AggregateInput> {
        use datafusion::arrow::compute::take;
        let take_all = |arrays: &[ArrayRef]| -> Result<Vec<ArrayRef>> {
            arrays
                .iter()
                .map(|a| Ok(take(a.as_ref(), indices, None)?))
                .collect()
        };
        let mut filters = Vec::with_capacity(self.filters.len());
        for f in &self.filters {
            filters.push(match f {
                Some(mask) => {
                    let taken = take(mask, indices, None)?;
                    Some(
                        taken
                            .as_any()
                            .downcast_ref::<BooleanArray>()
                            .cloned()
                            .ok_or_else(|| DataFusionError::Internal("take on a mask".into()))?,
                    )
                }
                None => None,
            });
        }
        Ok(AggregateInput {
            keys: take_all(&self.keys)?,
            args: self
                .args
                .iter()
                .map(|a| take_all(a))
                .collect::<Result<_>>()?,
            filters,
        })
    }
}

/// The distinct keys of a group: DataFusion's interner, or a single
/// implicit group when there are no key columns.
enum GroupKeys {
    Values(Box<dyn GroupValues>),
    Global { seen: bool },
}

/// Aggregation state for a set of groups.
pub struct GroupedState {
    keys: GroupKeys,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    group_ids: Vec<usize>,
}

impl std::fmt::Debug for GroupedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedState")
            .field("groups", &self.len())
            .finish()
    }
}

/// Key columns and accumulator state columns of a [`GroupedState`].
#[derive(Debug, Clone)]
pub struct GroupedStateArrays {
    pub keys: Vec<ArrayRef>,
    /// State columns of all aggregates, flattened.
    pub states: Vec<ArrayRef>,
}

impl GroupedStateArrays {
    pub fn num_groups(&self) -> usize {
        self.keys
            .first()
            .or(self.states.first())
            .map_or(0, |a| a.len())
    }
}

/// Creates the accumulator for one aggregate, as DataFusion's hash
/// aggregation does.
pub fn create_groups_accumulator(
    agg: &Arc<AggregateFunctionExpr>,
) -> Result<Box<dyn GroupsAccumulator>> {
    if agg.groups_accumulator_supported() {
        Ok(agg.create_groups_accumulator()?)
    } else {
        let agg = Arc::clone(agg);
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            agg.create_accumulator()
        })))
    }
}

impl GroupedState {
    /// State keyed by `key_schema` (which may have no fields).
    pub fn new(key_schema: SchemaRef, aggregates: &[Arc<AggregateFunctionExpr>]) -> Result<Self> {
        let keys = if key_schema.fields().is_empty() {
            GroupKeys::Global { seen: false }
        } else {
            GroupKeys::Values(new_group_values(key_schema, &GroupOrdering::None)?)
        };
        let accumulators = aggregates
            .iter()
            .map(create_groups_accumulator)
            .collect::<Result<Vec<_>>>()?;
        Ok(GroupedState {
            keys,
            accumulators,
            group_ids: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        match &self.keys {
            GroupKeys::Values(v) => v.len(),
            GroupKeys::Global { seen } => usize::from(*seen),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate memory use in bytes.
    pub fn size(&self) -> usize {
        let keys = match &self.keys {
            GroupKeys::Values(v) => v.size(),
            GroupKeys::Global { .. } => 0,
        };
        keys + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    fn intern(&mut self, keys: &[ArrayRef], rows: usize) -> Result<usize> {
        match &mut self.keys {
            GroupKeys::Values(v) => {
                v.intern(keys, &mut self.group_ids)?;
                Ok(v.len())
            }
            GroupKeys::Global { seen } => {
                self.group_ids.clear();
                self.group_ids.resize(rows, 0);
                *seen |= rows > 0;
                Ok(1)
            }
        }
    }

    /// Adds raw input rows.
    pub fn update(&mut self, input: &AggregateInput, rows: usize) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let groups = self.intern(&input.keys, rows)?;
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            acc.update_batch(
                &input.args[i],
                &self.group_ids,
                input.filters[i].as_ref(),
                groups,
            )?;
        }
        Ok(())
    }

    /// Merges partial state produced by [`GroupedState::take_state`].
    /// `widths` gives the number of state columns per aggregate.
    pub fn merge(&mut self, state: &GroupedStateArrays, widths: &[usize]) -> Result<()> {
        let rows = state.num_groups();
        if rows == 0 {
            return Ok(());
        }
        let groups = self.intern(&state.keys, rows)?;
        let mut offset = 0;
        for (acc, width) in self.accumulators.iter_mut().zip(widths) {
            acc.merge_batch(
                &state.states[offset..offset + width],
                &self.group_ids,
                groups,
            )?;
            offset += width;
        }
        Ok(())
    }

    fn take_keys(&mut self) -> Result<Vec<ArrayRef>> {
        match &mut self.keys {
            GroupKeys::Values(v) => Ok(v.emit(EmitTo::All)?),
            GroupKeys::Global { seen } => {
                *seen = false;
                Ok(Vec::new())
            }
        }
    }

    /// Takes the final values: key columns and one column per aggregate.
    /// The state is empty afterwards.
    pub fn take_final(&mut self) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        let keys = self.take_keys()?;
        let values = self
            .accumulators
            .iter_mut()
            .map(|a| Ok(a.evaluate(EmitTo::All)?))
            .collect::<Result<Vec<_>>>()?;
        Ok((keys, values))
    }

    /// Takes the intermediate state. The state is empty afterwards.
    pub fn take_state(&mut self) -> Result<GroupedStateArrays> {
        let keys = self.take_keys()?;
        let mut states = Vec::new();
        for acc in &mut self.accumulators {
            states.extend(acc.state(EmitTo::All)?);
        }
        Ok(GroupedStateArrays { keys, states })
    }
}
