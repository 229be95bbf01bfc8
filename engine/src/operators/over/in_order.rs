//! OVER aggregates in time order: on event time, rows wait for the
//! watermark and then go through in time order; on processing time, as
//! they come. A partition keeps its accumulators and, for a bounded frame,
//! the rows in it (taken back out as they leave it), as Flink's
//! `RowTime*PrecedingFunction` and `ProcTime*PrecedingFunction` do.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, Int8Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::OwnedRow;
use datafusion::common::ScalarValue;

use super::{expired, Aggregates, Codec, Emitted, Over, OverMode, Preceding};
use crate::changelog::RowKind;
use crate::error::{EngineError, Result};
use crate::message::{now_millis, Millis, NO_WATERMARK};
use crate::operator::{OperatorContext, StateSize};
use crate::row_watermark::{row_watermarks, strip};
use crate::state::{StateSnapshot, StateTable};
use crate::window::timestamps_millis;

const ROLE: &str = "_weir_role";
const TIME: &str = "_weir_time";
const FIRED: &str = "_weir_fired";
const TOUCHED: &str = "_weir_touched";

/// Rows kept: waiting for the watermark (role 0) or in a frame (role 1),
/// with their time, their partition's last computed time, and when it was
/// last touched; then the input's columns.
static OVER_ROWS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "over_rows",
        [
            (ROLE, DataType::Int8),
            (TIME, DataType::Int64),
            (FIRED, DataType::Int64),
            (TOUCHED, DataType::Int64),
        ],
    )
});

/// An unbounded frame's accumulators: a row of the partition (for its
/// key), its last computed time, then each accumulator's state.
static OVER_ACCUMULATORS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "over_accumulators",
        [(FIRED, DataType::Int64), (TOUCHED, DataType::Int64)],
    )
});

struct Partition {
    aggregates: Aggregates,
    /// A bounded frame's rows, oldest first, with their times.
    frame: VecDeque<(Millis, OwnedRow)>,
    /// Rows waiting for the watermark, by time, in arrival order.
    pending: BTreeMap<Millis, Vec<OwnedRow>>,
    /// The last time computed (Flink's `lastTriggeringTs`).
    fired: Option<Millis>,
    touched: Millis,
    /// A row of the partition, whose key a checkpoint keeps.
    sample: OwnedRow,
}

pub(crate) struct InOrder {
    codec: Arc<Codec>,
    /// The event-time column, or `None` for processing time.
    time: Option<usize>,
    partitions: HashMap<OwnedRow, Partition>,
    /// (time, partition) of every pending group, in time order.
    due: BTreeSet<(Millis, OwnedRow)>,
    watermark: Millis,
    rows: usize,
    bytes: usize,
}

impl InOrder {
    pub fn new(codec: Arc<Codec>) -> Self {
        let time = match codec.spec.mode {
            OverMode::EventTime { time } => Some(time),
            _ => None,
        };
        InOrder {
            codec,
            time,
            partitions: HashMap::new(),
            due: BTreeSet::new(),
            watermark: NO_WATERMARK,
            rows: 0,
            bytes: 0,
        }
    }

    fn bounded(&self) -> bool {
        self.codec.spec.preceding != Preceding::Unbounded
    }

    fn partition(&mut self, key: &OwnedRow, row: &OwnedRow, now: Millis) -> Result<&mut Partition> {
        if !self.partitions.contains_key(key) {
            let aggregates = Aggregates::new(&self.codec.spec, self.bounded())?;
            self.partitions.insert(
                key.clone(),
                Partition {
                    aggregates,
                    frame: VecDeque::new(),
                    pending: BTreeMap::new(),
                    fired: None,
                    touched: now,
                    sample: row.clone(),
                },
            );
        }
        let partition = self
            .partitions
            .get_mut(key)
            .ok_or_else(|| EngineError::Graph("a partition went missing".into()))?;
        partition.touched = now;
        Ok(partition)
    }

    /// Whether a row at `time`, produced under `row_watermark`, is late
    /// for `key`'s partition.
    fn is_late(&self, key: &OwnedRow, time: Millis, row_watermark: Millis) -> bool {
        let watermark = row_watermark.max(self.watermark);
        if !self.bounded() {
            return time <= watermark;
        }
        // The last time the partition computed when the watermark stood at
        // the row's: what it fired, or what it would have fired by then.
        let Some(partition) = self.partitions.get(key) else {
            return false;
        };
        let would = partition
            .pending
            .range(..=watermark)
            .next_back()
            .map(|(t, _)| *t);
        partition.fired.max(would).is_some_and(|last| time <= last)
    }

    /// Computes `key`'s rows at `time` (in arrival order), emitting each.
    fn fire(
        &mut self,
        key: &OwnedRow,
        time: Millis,
        rows: Vec<OwnedRow>,
        out: &mut Emitted,
    ) -> Result<()> {
        let spec = self.codec.spec.clone();
        let codec = self.codec.clone();
        let Some(partition) = self.partitions.get_mut(key) else {
            return Ok(());
        };
        partition.fired = Some(time);
        let bounded = spec.preceding != Preceding::Unbounded;
        if !spec.rows {
            // RANGE: the rows at `time` are peers, one frame for all.
            if let Preceding::Range(range) = spec.preceding {
                let mut leaving = Vec::new();
                while partition
                    .frame
                    .front()
                    .is_some_and(|(t, _)| *t < time.saturating_sub(range))
                {
                    if let Some((_, row)) = partition.frame.pop_front() {
                        self.rows -= 1;
                        self.bytes -= row.as_ref().len();
                        leaving.push(row);
                    }
                }
                partition
                    .aggregates
                    .update(&spec, &codec.decode(&leaving)?, true)?;
            }
            partition
                .aggregates
                .update(&spec, &codec.decode(&rows)?, false)?;
            let values = partition.aggregates.values()?;
            for row in rows {
                out.push(RowKind::Insert, &row, values.clone());
                if bounded {
                    self.rows += 1;
                    self.bytes += row.as_ref().len();
                    partition.frame.push_back((time, row));
                }
            }
            return Ok(());
        }
        for row in rows {
            partition
                .aggregates
                .update(&spec, &codec.decode([&row])?, false)?;
            if let Preceding::Rows(n) = spec.preceding {
                self.rows += 1;
                self.bytes += row.as_ref().len();
                partition.frame.push_back((time, row.clone()));
                while partition.frame.len() as u64 > n + 1 {
                    if let Some((_, old)) = partition.frame.pop_front() {
                        self.rows -= 1;
                        self.bytes -= old.as_ref().len();
                        partition
                            .aggregates
                            .update(&spec, &codec.decode([&old])?, true)?;
                    }
                }
            }
            out.push(RowKind::Insert, &row, partition.aggregates.values()?);
        }
        Ok(())
    }

    /// Every pending group at or before `watermark`, in time order.
    fn fire_until(&mut self, watermark: Millis, out: &mut Emitted) -> Result<()> {
        while let Some((time, key)) = self.due.first().cloned() {
            if time > watermark {
                break;
            }
            self.due.pop_first();
            let rows = self
                .partitions
                .get_mut(&key)
                .and_then(|p| p.pending.remove(&time))
                .unwrap_or_default();
            for row in &rows {
                self.rows -= 1;
                self.bytes -= row.as_ref().len();
            }
            self.fire(&key, time, rows, out)?;
        }
        Ok(())
    }

    fn snapshot_rows(&self) -> Result<(String, RecordBatch)> {
        let (mut roles, mut times, mut fired, mut touched, mut rows) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for partition in self.partitions.values() {
            let waiting = partition
                .pending
                .iter()
                .flat_map(|(t, rows)| rows.iter().map(move |r| (0i8, *t, r)));
            let framed = partition.frame.iter().map(|(t, r)| (1i8, *t, r));
            for (role, time, row) in waiting.chain(framed) {
                roles.push(role);
                times.push(time);
                fired.push(partition.fired);
                touched.push(partition.touched);
                rows.push(row);
            }
        }
        let data = self.codec.decode(rows)?;
        OVER_ROWS.write_with(
            vec![
                Arc::new(Int8Array::from(roles)),
                Arc::new(Int64Array::from(times)),
                Arc::new(Int64Array::from(fired)),
                Arc::new(Int64Array::from(touched)),
            ],
            input_fields(&self.codec, &data),
        )
    }

    fn snapshot_accumulators(&mut self) -> Result<(String, RecordBatch)> {
        let spec = &self.codec.spec;
        let mut states: Vec<Vec<ScalarValue>> = Vec::new();
        let (mut fired, mut touched, mut samples) = (Vec::new(), Vec::new(), Vec::new());
        for partition in self.partitions.values_mut() {
            let mut values = Vec::new();
            for accumulator in &mut partition.aggregates.accumulators {
                values.extend(accumulator.state()?);
            }
            if states.is_empty() {
                states = vec![Vec::new(); values.len()];
            }
            for (column, value) in states.iter_mut().zip(values) {
                column.push(value);
            }
            fired.push(partition.fired);
            touched.push(partition.touched);
            samples.push(partition.sample.clone());
        }
        let data = self.codec.decode(&samples)?;
        let mut extra = input_fields(&self.codec, &data);
        let types: Vec<DataType> = spec
            .aggregates
            .iter()
            .map(|a| Ok(a.state_fields()?))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .map(|f| f.data_type().clone())
            .collect();
        for (i, data_type) in types.iter().enumerate() {
            let column = states.get(i).cloned().unwrap_or_default();
            let array = if column.is_empty() {
                datafusion::arrow::array::new_empty_array(data_type)
            } else {
                ScalarValue::iter_to_array(column)?
            };
            extra.push((
                Field::new(format!("_weir_state_{i}"), array.data_type().clone(), true),
                array,
            ));
        }
        OVER_ACCUMULATORS.write_with(
            vec![
                Arc::new(Int64Array::from(fired)),
                Arc::new(Int64Array::from(touched)),
            ],
            extra,
        )
    }
}

/// The input's columns of `data`, as a state table's extra columns.
pub(super) fn input_fields(
    codec: &Codec,
    data: &RecordBatch,
) -> Vec<(Field, datafusion::arrow::array::ArrayRef)> {
    codec
        .spec
        .input
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .zip(data.columns().iter().cloned())
        .collect()
}

impl Over for InOrder {
    fn on_batch(
        &mut self,
        batch: &RecordBatch,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<super::Emitted> {
        let data = strip(batch);
        let encoded = self.codec.encode(&data)?;
        let now = now_millis();
        let mut out = Emitted::default();
        let Some(time_column) = self.time else {
            // Processing time: the batch's rows arrive now, in order.
            let mut groups: Vec<(OwnedRow, Vec<OwnedRow>)> = Vec::new();
            for i in 0..data.num_rows() {
                let key = encoded.partitions.row(i).owned();
                let row = encoded.rows.row(i).owned();
                self.partition(&key, &row, now)?;
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, rows)) => rows.push(row),
                    None => groups.push((key, vec![row])),
                }
            }
            for (key, rows) in groups {
                self.fire(&key, now, rows, &mut out)?;
            }
            return Ok(out);
        };
        let times = timestamps_millis(data.column(time_column).as_ref())?;
        let watermarks = row_watermarks(batch).ok().cloned();
        let mut late = vec![false; data.num_rows()];
        for (i, is_late) in late.iter_mut().enumerate() {
            // A row without a time cannot be placed: it goes where late
            // rows go.
            if times.is_null(i) {
                *is_late = true;
                continue;
            }
            let key = encoded.partitions.row(i).owned();
            let row_watermark = watermarks.as_ref().map_or(NO_WATERMARK, |w| w.value(i));
            let time = times.value(i);
            if self.is_late(&key, time, row_watermark) {
                *is_late = true;
                continue;
            }
            let row = encoded.rows.row(i).owned();
            self.rows += 1;
            self.bytes += row.as_ref().len();
            let partition = self.partition(&key, &row, now)?;
            partition.pending.entry(time).or_default().push(row);
            self.due.insert((time, key));
        }
        if late.contains(&true) {
            ctx.emit_late(filter_record_batch(batch, &BooleanArray::from(late))?);
        }
        Ok(out)
    }

    fn on_watermark(&mut self, watermark: Millis) -> Result<Emitted> {
        self.watermark = self.watermark.max(watermark);
        let mut out = Emitted::default();
        self.fire_until(watermark, &mut out)?;
        Ok(out)
    }

    fn on_timer(&mut self, now: Millis) {
        let ttl = self.codec.spec.ttl;
        let (mut rows, mut bytes) = (self.rows, self.bytes);
        self.partitions.retain(|_, p| {
            // A partition with rows waiting for the watermark stays.
            let live = !p.pending.is_empty() || !expired(ttl, p.touched, now);
            if !live {
                rows -= p.frame.len();
                bytes -= p.frame.iter().map(|(_, r)| r.as_ref().len()).sum::<usize>();
            }
            live
        });
        (self.rows, self.bytes) = (rows, bytes);
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let mut tables = vec![self.snapshot_rows()?];
        if !self.bounded() {
            tables.push(self.snapshot_accumulators()?);
        }
        Ok(StateSnapshot { tables })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let spec = self.codec.spec.clone();
        if let Some(table) = OVER_ACCUMULATORS.read(&state)? {
            let fired = table.column::<Int64Array>(FIRED)?.clone();
            let touched = table.column::<Int64Array>(TOUCHED)?.clone();
            let inputs = spec.input.fields().len();
            let data = batch_of(&spec.input, &table.extra()[..inputs], table.num_rows())?;
            let encoded = self.codec.encode(&data)?;
            let states = &table.extra()[inputs..];
            for i in 0..table.num_rows() {
                let key = encoded.partitions.row(i).owned();
                let row = encoded.rows.row(i).owned();
                let partition = self.partition(&key, &row, touched.value(i))?;
                partition.fired = fired.is_valid(i).then(|| fired.value(i));
                let mut offset = 0;
                for (aggregate, accumulator) in spec
                    .aggregates
                    .iter()
                    .zip(&mut partition.aggregates.accumulators)
                {
                    let width = aggregate.state_fields()?.len();
                    let slice: Vec<_> = states[offset..offset + width]
                        .iter()
                        .map(|a| a.slice(i, 1))
                        .collect();
                    accumulator.merge_batch(&slice)?;
                    offset += width;
                }
            }
        }
        let Some(table) = OVER_ROWS.read(&state)? else {
            return Ok(());
        };
        let roles = table.column::<Int8Array>(ROLE)?.clone();
        let times = table.column::<Int64Array>(TIME)?.clone();
        let fired = table.column::<Int64Array>(FIRED)?.clone();
        let touched = table.column::<Int64Array>(TOUCHED)?.clone();
        let data = batch_of(&spec.input, table.extra(), table.num_rows())?;
        let encoded = self.codec.encode(&data)?;
        let mut framed: HashMap<OwnedRow, Vec<OwnedRow>> = HashMap::new();
        for i in 0..table.num_rows() {
            let key = encoded.partitions.row(i).owned();
            let row = encoded.rows.row(i).owned();
            let time = times.value(i);
            self.rows += 1;
            self.bytes += row.as_ref().len();
            let partition = self.partition(&key, &row, touched.value(i))?;
            partition.fired = fired.is_valid(i).then(|| fired.value(i));
            if roles.value(i) == 0 {
                partition.pending.entry(time).or_default().push(row);
                self.due.insert((time, key));
            } else {
                partition.frame.push_back((time, row.clone()));
                framed.entry(key).or_default().push(row);
            }
        }
        // A bounded frame's accumulators hold exactly its rows.
        for (key, rows) in framed {
            let batch = self.codec.decode(&rows)?;
            if let Some(partition) = self.partitions.get_mut(&key) {
                partition.aggregates.update(&spec, &batch, false)?;
            }
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        let accumulators: usize = self.partitions.values().map(|p| p.aggregates.size()).sum();
        StateSize {
            rows: self.rows as u64,
            bytes: (self.bytes + accumulators) as u64,
            sides: None,
        }
    }
}

/// A batch of `schema` from a state table's columns.
pub(super) fn batch_of(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    columns: &[datafusion::arrow::array::ArrayRef],
    rows: usize,
) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns.to_vec(),
        &options,
    )?)
}
