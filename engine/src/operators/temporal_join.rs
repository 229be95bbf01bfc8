//! The event-time temporal join, Flink's `TemporalRowTimeJoinOperator`:
//! `FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.order_time AS r ON
//! o.currency = r.currency` joins each order with the version of its
//! currency's rate that was current at the order's time: the version with
//! the latest time at or before it.
//!
//! Side 0 (the probe) waits until the watermark (the slower of both
//! inputs) passes its time, so that every version up to that time has
//! come; then it is joined and emitted, in time order. Side 1 holds the
//! versions of each key by their time: a `+I`/`+U` row starts a version at
//! its time, a `-D` ends the key's versions at its time (no version from
//! then on), a `-U` is followed by the `+U` that replaces it.
//! Versions older than the newest one at or before the watermark are
//! dropped, as no later probe row can see them. A probe row at or before
//! the watermark when it comes is late (counted, and routed); `LEFT`
//! pads a probe row without a version with NULLs. The result only
//! appends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, Int8Array, RecordBatch, UInt64Array,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::changelog::{kinds_of, without_kinds, RowKind};
use crate::error::Result;
use crate::message::{Millis, NO_WATERMARK};
use crate::operator::{Operator, OperatorContext, SideState, StateSize};
use crate::operators::predicate_mask;
use crate::row_watermark::{attach_constant, row_watermarks, strip};
use crate::state::{StateSnapshot, StateTable};
use crate::window::timestamps_millis;

/// What an event-time temporal join needs to know.
pub struct TemporalSpec {
    /// Join keys of each side, on that side's rows.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Each side's time column (the probe's `AS OF`, the versions' rowtime).
    pub times: [usize; 2],
    /// Each side's columns.
    pub schemas: [SchemaRef; 2],
    /// Pad a probe row without a version (`LEFT`), or drop it.
    pub left: bool,
    /// Conditions besides the keys, on the joined row (`INNER` only).
    pub residual: Option<Arc<dyn PhysicalExpr>>,
    /// The probe's columns, then the versions'.
    pub output: SchemaRef,
}

const SIDE: &str = "_weir_side";
const TIME: &str = "_weir_time";
const SEQUENCE: &str = "_weir_sequence";
const DELETED: &str = "_weir_deleted";

/// A side's kept rows: probe rows waiting, or versions (a deletion
/// flagged), then that side's columns.
static TEMPORAL_ROWS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "temporal_rows",
        [
            (SIDE, DataType::Int8),
            (TIME, DataType::Int64),
            (SEQUENCE, DataType::UInt64),
            (DELETED, DataType::Int8),
        ],
    )
});

/// A key's versions by (time, arrival): the row, and whether it deletes
/// the key.
type Versions = BTreeMap<(Millis, u64), (OwnedRow, bool)>;

pub struct TemporalJoin {
    name: String,
    spec: Arc<TemporalSpec>,
    keys: RowConverter,
    rows: [RowConverter; 2],
    /// Probe rows waiting for the watermark: (time, arrival) → (key, row).
    probes: BTreeMap<(Millis, u64), (Option<OwnedRow>, OwnedRow)>,
    versions: HashMap<OwnedRow, Versions>,
    watermark: Millis,
    next: u64,
    bytes: [usize; 2],
    counts: [usize; 2],
}

impl TemporalJoin {
    pub fn new(name: impl Into<String>, spec: Arc<TemporalSpec>) -> Result<Self> {
        let key_fields = spec.keys[1]
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&spec.schemas[1])?)))
            .collect::<Result<Vec<_>>>()?;
        let row_fields = |side: usize| {
            spec.schemas[side]
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect::<Vec<_>>()
        };
        Ok(TemporalJoin {
            name: name.into(),
            keys: RowConverter::new(key_fields)?,
            rows: [
                RowConverter::new(row_fields(0))?,
                RowConverter::new(row_fields(1))?,
            ],
            spec,
            probes: BTreeMap::new(),
            versions: HashMap::new(),
            watermark: NO_WATERMARK,
            next: 0,
            bytes: [0, 0],
            counts: [0, 0],
        })
    }

    /// The key of each row of `data` (side `side`), `None` when NULL.
    fn keys_of(&self, side: usize, data: &RecordBatch) -> Result<Vec<Option<OwnedRow>>> {
        let n = data.num_rows();
        let types: Vec<DataType> = self.spec.keys[1]
            .iter()
            .map(|e| e.data_type(&self.spec.schemas[1]))
            .collect::<std::result::Result<_, _>>()?;
        let columns = self.spec.keys[side]
            .iter()
            .zip(&types)
            .map(|(e, t)| {
                let c = e.evaluate(data)?.into_array(n)?;
                Ok(if c.data_type() == t {
                    c
                } else {
                    datafusion::arrow::compute::cast(&c, t)?
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let rows = self.keys.convert_columns(&columns)?;
        Ok((0..n)
            .map(|i| (!columns.iter().any(|c| c.is_null(i))).then(|| rows.row(i).owned()))
            .collect())
    }

    fn add_version(
        &mut self,
        key: OwnedRow,
        time: Millis,
        sequence: u64,
        row: OwnedRow,
        deleted: bool,
    ) {
        self.next = self.next.max(sequence + 1);
        self.counts[1] += 1;
        self.bytes[1] += key.as_ref().len() + row.as_ref().len();
        self.versions
            .entry(key)
            .or_default()
            .insert((time, sequence), (row, deleted));
    }

    fn add_probe(&mut self, time: Millis, sequence: u64, key: Option<OwnedRow>, row: OwnedRow) {
        self.counts[0] += 1;
        self.bytes[0] += row.as_ref().len();
        self.next = self.next.max(sequence + 1);
        self.probes.insert((time, sequence), (key, row));
    }

    /// Joins and emits the probe rows at or before `watermark`.
    fn fire(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let mut probe_rows = Vec::new();
        let mut version_rows: Vec<Option<OwnedRow>> = Vec::new();
        while let Some(entry) = self.probes.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let ((time, _), (key, row)) = entry.remove_entry();
            self.counts[0] -= 1;
            self.bytes[0] -= row.as_ref().len();
            let version = key
                .as_ref()
                .and_then(|k| self.versions.get(k))
                .and_then(|v| v.range(..=(time, u64::MAX)).next_back())
                .and_then(|(_, (row, deleted))| (!deleted).then(|| row.clone()));
            if version.is_some() || self.spec.left {
                probe_rows.push(row);
                version_rows.push(version);
            }
        }
        self.expire(watermark);
        if probe_rows.is_empty() {
            return Ok(());
        }
        let mut columns = self.rows[0].convert_rows(probe_rows.iter().map(|r| r.row()))?;
        columns.extend(self.version_columns(&version_rows)?);
        let options = RecordBatchOptions::new().with_row_count(Some(probe_rows.len()));
        let mut joined =
            RecordBatch::try_new_with_options(self.spec.output.clone(), columns, &options)?;
        if let Some(residual) = &self.spec.residual {
            let mask = predicate_mask(residual, &joined)?;
            joined = filter_record_batch(&joined, &mask)?;
        }
        ctx.emit(attach_constant(&joined, watermark)?);
        Ok(())
    }

    /// The versions' columns for each joined row, NULL where none.
    fn version_columns(&self, rows: &[Option<OwnedRow>]) -> Result<Vec<ArrayRef>> {
        let present: Vec<&OwnedRow> = rows.iter().flatten().collect();
        let decoded = self.rows[1].convert_rows(present.iter().map(|r| r.row()))?;
        // Spread the decoded rows over their places, NULL elsewhere.
        let mut at = 0u32;
        let indices: datafusion::arrow::array::UInt32Array = rows
            .iter()
            .map(|r| {
                r.as_ref().map(|_| {
                    at += 1;
                    at - 1
                })
            })
            .collect();
        decoded
            .iter()
            .map(|c| {
                Ok(datafusion::arrow::compute::take(
                    c.as_ref(),
                    &indices,
                    None,
                )?)
            })
            .collect()
    }

    /// Drops versions no probe row to come can see: all but the newest at
    /// or before the watermark (and that one too when it is a deletion).
    fn expire(&mut self, watermark: Millis) {
        let (mut counts, mut bytes) = (self.counts[1], self.bytes[1]);
        self.versions.retain(|key, versions| {
            let Some(current) = versions.range(..=(watermark, u64::MAX)).next_back() else {
                return true;
            };
            let current = *current.0;
            let mut kept = versions.split_off(&current);
            if kept.get(&current).is_some_and(|(_, deleted)| *deleted) {
                if let Some(deletion) = kept.remove(&current) {
                    versions.insert(current, deletion);
                }
            }
            for (row, _) in versions.values() {
                counts -= 1;
                bytes -= key.as_ref().len() + row.as_ref().len();
            }
            *versions = kept;
            !versions.is_empty()
        });
        (self.counts[1], self.bytes[1]) = (counts, bytes);
    }
}

impl Operator for TemporalJoin {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        self.on_side_batch(0, batch, ctx)
    }

    fn on_side_batch(
        &mut self,
        side: usize,
        batch: RecordBatch,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let kinds = kinds_of(&batch)?;
        let data = without_kinds(&strip(&batch));
        let times = timestamps_millis(data.column(self.spec.times[side]).as_ref())?;
        let keys = self.keys_of(side, &data)?;
        let rows = self.rows[side].convert_columns(data.columns())?;
        if side == 1 {
            for (i, kind) in kinds.iter().enumerate() {
                let (Some(key), false) = (keys[i].clone(), times.is_null(i)) else {
                    continue;
                };
                let deleted = match kind {
                    RowKind::Insert | RowKind::UpdateAfter => false,
                    RowKind::Delete => true,
                    RowKind::UpdateBefore => continue,
                };
                let sequence = self.next;
                self.add_version(key, times.value(i), sequence, rows.row(i).owned(), deleted);
            }
            return Ok(());
        }
        let watermarks = row_watermarks(&batch).ok().cloned();
        let mut late = vec![false; data.num_rows()];
        for (i, is_late) in late.iter_mut().enumerate() {
            let row_watermark = watermarks.as_ref().map_or(NO_WATERMARK, |w| w.value(i));
            if times.is_null(i) || times.value(i) <= row_watermark.max(self.watermark) {
                *is_late = true;
                continue;
            }
            let sequence = self.next;
            self.add_probe(
                times.value(i),
                sequence,
                keys[i].clone(),
                rows.row(i).owned(),
            );
        }
        if late.contains(&true) {
            ctx.emit_late(filter_record_batch(&batch, &BooleanArray::from(late))?);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        self.fire(watermark, ctx)
    }

    fn snapshot(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        let mut tables = Vec::new();
        for side in 0..2 {
            let (mut times, mut sequences, mut deleted, mut rows) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            if side == 0 {
                for ((time, sequence), (_, row)) in &self.probes {
                    times.push(*time);
                    sequences.push(*sequence);
                    deleted.push(0i8);
                    rows.push(row.clone());
                }
            } else {
                for versions in self.versions.values() {
                    for ((time, sequence), (row, is_deleted)) in versions {
                        times.push(*time);
                        sequences.push(*sequence);
                        deleted.push(i8::from(*is_deleted));
                        rows.push(row.clone());
                    }
                }
            }
            let columns = self.rows[side].convert_rows(rows.iter().map(|r| r.row()))?;
            let extra = self.spec.schemas[side]
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .zip(columns)
                .collect();
            let (name, batch) = TEMPORAL_ROWS.write_with(
                vec![
                    Arc::new(Int8Array::from(vec![side as i8; times.len()])),
                    Arc::new(Int64Array::from(times)),
                    Arc::new(UInt64Array::from(sequences)),
                    Arc::new(Int8Array::from(deleted)),
                ],
                extra,
            )?;
            tables.push((format!("{name}_{side}"), batch));
        }
        Ok(StateSnapshot { tables })
    }

    fn restore(&mut self, mut state: StateSnapshot) -> Result<()> {
        for side in 0..2 {
            let Some(i) = state
                .tables
                .iter()
                .position(|(n, _)| *n == format!("temporal_rows_{side}"))
            else {
                continue;
            };
            let (_, batch) = state.tables.remove(i);
            let table = TEMPORAL_ROWS.read(&StateSnapshot {
                tables: vec![("temporal_rows".into(), batch)],
            })?;
            let Some(table) = table else { continue };
            let times = table.column::<Int64Array>(TIME)?.clone();
            let sequences = table.column::<UInt64Array>(SEQUENCE)?.clone();
            let deleted = table.column::<Int8Array>(DELETED)?.clone();
            let options = RecordBatchOptions::new().with_row_count(Some(table.num_rows()));
            let data = RecordBatch::try_new_with_options(
                self.spec.schemas[side].clone(),
                table.extra().to_vec(),
                &options,
            )?;
            let keys = self.keys_of(side, &data)?;
            let rows = self.rows[side].convert_columns(data.columns())?;
            for (i, key) in keys.into_iter().enumerate() {
                let (time, sequence) = (times.value(i), sequences.value(i));
                if side == 0 {
                    self.add_probe(time, sequence, key, rows.row(i).owned());
                } else if let Some(key) = key {
                    let row = rows.row(i).owned();
                    self.add_version(key, time, sequence, row, deleted.value(i) != 0);
                }
            }
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: (self.counts[0] + self.counts[1]) as u64,
            bytes: (self.bytes[0] + self.bytes[1]) as u64,
            sides: Some([
                SideState {
                    rows: self.counts[0] as u64,
                    bytes: self.bytes[0] as u64,
                },
                SideState {
                    rows: self.counts[1] as u64,
                    bytes: self.bytes[1] as u64,
                },
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{Schema, TimeUnit};
    use datafusion::physical_expr::expressions::col;

    use super::*;
    use crate::changelog::{attach_kinds, kind_array};
    use crate::testing::Harness;

    fn schema(names: [&str; 3]) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(names[0], DataType::Int64, true),
            Field::new(names[1], DataType::Int64, true),
            Field::new(
                names[2],
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]))
    }

    fn join(left: bool) -> TemporalJoin {
        let (probe, versions) = (schema(["k", "v", "ts"]), schema(["key", "rate", "rts"]));
        let mut fields = probe.fields().to_vec();
        fields.extend(versions.fields().iter().cloned());
        let spec = TemporalSpec {
            keys: [
                vec![col("k", &probe).unwrap()],
                vec![col("key", &versions).unwrap()],
            ],
            times: [2, 2],
            schemas: [probe, versions],
            left,
            residual: None,
            output: Arc::new(Schema::new(fields)),
        };
        TemporalJoin::new("temporal", Arc::new(spec)).unwrap()
    }

    fn rows(schema: SchemaRef, rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampMillisecondArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    /// (v, rate) of each joined row.
    fn joined(h: &mut Harness) -> Vec<(i64, Option<i64>)> {
        h.take_output()
            .iter()
            .flat_map(|b| {
                let v = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                let rate = b
                    .column(4)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                (0..b.num_rows())
                    .map(|i| (v.value(i), rate.is_valid(i).then(|| rate.value(i))))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Versions at 10 (rate 1) and 20 (rate 2), deleted at 30; orders at
    /// 5, 15, 25, 35 see none, 1, 2, none, through a checkpoint and a
    /// restore between the versions and the watermark.
    #[test]
    fn each_order_sees_the_version_current_at_its_time() {
        for left in [false, true] {
            let mut h = Harness::new(join(left));
            let versions = rows(
                schema(["key", "rate", "rts"]),
                &[(1, 1, 10), (1, 2, 20), (1, 2, 30)],
            );
            let kinds = kind_array(&[RowKind::Insert, RowKind::UpdateAfter, RowKind::Delete]);
            h.batch_on(1, attach_kinds(&versions, kinds).unwrap())
                .unwrap();
            h.batch_on(
                0,
                rows(
                    schema(["k", "v", "ts"]),
                    &[(1, 5, 5), (1, 15, 15), (1, 25, 25), (1, 35, 35)],
                ),
            )
            .unwrap();
            let state = h.barrier().unwrap();
            let mut h = Harness::new(join(left));
            h.operator().restore(state).unwrap();
            h.watermark(100).unwrap();
            let expected: Vec<(i64, Option<i64>)> = if left {
                vec![(5, None), (15, Some(1)), (25, Some(2)), (35, None)]
            } else {
                vec![(15, Some(1)), (25, Some(2))]
            };
            assert_eq!(joined(&mut h), expected, "left: {left}");
            assert_eq!(
                h.operator().state_size().rows,
                0,
                "expired at the watermark"
            );
        }
    }
}
