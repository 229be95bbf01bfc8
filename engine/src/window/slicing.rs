//! Tumbling, hopping and cumulating window aggregation over slices.
//!
//! Rows are aggregated once into *buckets* keyed by `(slice_end,
//! first_window_end)`: the slice the row falls in, and the first of the
//! slice's windows the row is not late for. Normally that is the slice's
//! first window; a row that is late for some of a hop or cumulate window's
//! earlier windows goes into a bucket that only joins the later ones. So the
//! operator honours per-row lateness exactly while still sharing work.
//!
//! The same operator runs in three modes, as DataFusion's aggregation does:
//! `Single` (rows in, windows out), `Partial` (rows in, pre-aggregated slice
//! state out, before a shuffle) and `Final` (slice state in, windows out).
//! The partial side flushes a bucket as soon as its first window may fire,
//! when it grows past a bound, and at barriers, so it keeps no state a
//! checkpoint needs and a hot key is pre-aggregated on every subtask.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::DataFusionError;

use super::emit::{Changes, EmitStrategy, Phase, Updates, WindowResult};
use super::{OutputLayout, SliceWindows, TimeSource, WATERMARK_TABLE};
use crate::aggregate::{AggregateSpec, GroupedState, GroupedStateArrays};
use crate::changelog::with_kinds;
use crate::error::Result;
use crate::message::{now_millis, Millis, FINAL_WATERMARK, NO_WATERMARK};
use crate::operator::{Operator, OperatorContext, StateSize};
use crate::row_watermark::with_row_watermark;
use crate::state::{StateSnapshot, StateTable};

/// Which half of a two-phase aggregation an operator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateMode {
    Single,
    Partial,
    Final,
}

const SLICE_END: &str = "_weir_slice_end";
const FIRST_WINDOW_END: &str = "_weir_first_window_end";

/// The columns of the partial state ([`partial_schema`]) that hold the
/// group keys: what a two-phase aggregate shuffles by.
pub fn partial_key_columns(spec: &AggregateSpec) -> Vec<usize> {
    (PARTIAL_KEYS_AT..PARTIAL_KEYS_AT + spec.key_fields.len()).collect()
}

/// The first key column of the partial state, after the slice end and the
/// first window end.
const PARTIAL_KEYS_AT: usize = 2;

/// The schema of pre-aggregated slice state between `Partial` and `Final`:
/// slice end, first window end, key columns, state columns, row watermark.
pub fn partial_schema(spec: &AggregateSpec) -> Result<SchemaRef> {
    let mut fields = vec![
        Arc::new(Field::new(SLICE_END, DataType::Int64, false)),
        Arc::new(Field::new(FIRST_WINDOW_END, DataType::Int64, false)),
    ];
    fields.extend(spec.key_fields.iter().cloned());
    fields.extend(spec.state_fields()?);
    Ok(with_row_watermark(&Schema::new(fields)))
}

/// The checkpointed buckets: partial state in [`partial_schema`]'s layout,
/// the one this operator also exchanges.
static BUCKETS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "buckets",
        [
            (SLICE_END, DataType::Int64),
            (FIRST_WINDOW_END, DataType::Int64),
        ],
    )
});

type BucketKey = (Millis, Millis);

enum Bucket {
    Live(GroupedState),
    Sealed(GroupedStateArrays),
}

/// A tumbling, hopping or cumulating window aggregation.
pub struct WindowAggregate {
    name: String,
    mode: AggregateMode,
    windows: SliceWindows,
    spec: Arc<AggregateSpec>,
    time: TimeSource,
    layout: Arc<OutputLayout>,
    key_schema: SchemaRef,
    partial_schema: SchemaRef,
    state_widths: Vec<usize>,
    buckets: BTreeMap<BucketKey, Bucket>,
    /// Window ends that have data and have not fired (Single, Final).
    pending: BTreeSet<Millis>,
    /// Windows ending at or before this + 1 have fired (Single, Final); the
    /// input watermark (Partial).
    watermark: Millis,
    /// A partial aggregation flushes everything past this many groups.
    max_partial_groups: usize,
    /// Set when windows fire more than once (early or late firing).
    updates: Option<Updates>,
}

impl WindowAggregate {
    pub fn new(
        name: impl Into<String>,
        mode: AggregateMode,
        windows: SliceWindows,
        spec: Arc<AggregateSpec>,
        time: TimeSource,
        layout: Arc<OutputLayout>,
    ) -> Result<Self> {
        Ok(WindowAggregate {
            name: name.into(),
            mode,
            windows,
            key_schema: spec.key_schema(),
            partial_schema: partial_schema(&spec)?,
            state_widths: spec.state_widths()?,
            spec,
            time,
            layout,
            buckets: BTreeMap::new(),
            pending: BTreeSet::new(),
            watermark: NO_WATERMARK,
            max_partial_groups: 64 * 1024,
            updates: None,
        })
    }

    /// Fires windows early or late as `strategy` says (Single and Final
    /// mode; a partial aggregation only pre-aggregates). Output is then a
    /// changelog.
    pub fn with_emit(mut self, strategy: EmitStrategy) -> Self {
        self.updates = (strategy.produces_updates() && self.mode != AggregateMode::Partial)
            .then(|| Updates::new(strategy, self.spec.keys.len()));
        self
    }

    /// How long after its end a window still takes rows.
    fn allow_lateness(&self) -> Millis {
        self.updates
            .as_ref()
            .map_or(0, |u| u.strategy.allow_lateness)
    }

    /// Marks the windows a bucket feeds as changed, for early and late
    /// firing.
    fn touch(&mut self, (slice_end, first): BucketKey) {
        if let Some(updates) = &mut self.updates {
            updates
                .dirty
                .extend(self.windows.window_ends_from(slice_end, first));
        }
    }

    /// Caps the groups a partial aggregation holds before flushing.
    pub fn with_max_partial_groups(mut self, groups: usize) -> Self {
        self.max_partial_groups = groups.max(1);
        self
    }

    fn new_state(&self) -> Result<GroupedState> {
        GroupedState::new(self.key_schema.clone(), &self.spec.aggregates)
    }

    /// The live state of a bucket, creating it (and registering its
    /// windows) if needed.
    fn live_bucket(&mut self, key: BucketKey) -> Result<&mut GroupedState> {
        if !self.buckets.contains_key(&key) {
            let state = self.new_state()?;
            self.buckets.insert(key, Bucket::Live(state));
            if self.mode != AggregateMode::Partial {
                // Windows already fired (a row within the allowed
                // lateness) fire late, not again on the watermark.
                let fired = self.watermark;
                self.pending.extend(
                    self.windows
                        .window_ends_from(key.0, key.1)
                        .filter(|end| end.saturating_sub(1) > fired),
                );
            }
        }
        if let Some(Bucket::Sealed(_)) = self.buckets.get(&key) {
            let mut state = self.new_state()?;
            if let Some(Bucket::Sealed(sealed)) = self.buckets.get(&key) {
                state.merge(sealed, &self.state_widths)?;
            }
            self.buckets.insert(key, Bucket::Live(state));
        }
        match self.buckets.get_mut(&key) {
            Some(Bucket::Live(state)) => Ok(state),
            _ => Err(DataFusionError::Internal("window bucket vanished".into()).into()),
        }
    }

    /// Turns a bucket's live state into state arrays that several windows
    /// can merge.
    fn seal(&mut self, key: &BucketKey) -> Result<()> {
        if let Some(bucket) = self.buckets.get_mut(key) {
            if let Bucket::Live(state) = bucket {
                *bucket = Bucket::Sealed(state.take_state()?);
            }
        }
        Ok(())
    }

    /// Rows in: assign each to its bucket, send late ones to the late output.
    fn add_rows(&mut self, batch: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let rows = batch.num_rows();
        let times = self.time.row_times(batch, self.watermark, now_millis())?;
        let lateness = self.allow_lateness();
        let mut groups: Vec<(BucketKey, Vec<u32>)> = Vec::new();
        let mut late = Vec::new();
        for i in 0..rows {
            let key = times.times[i].and_then(|t| {
                let slice_end = self.windows.slice_end(t);
                self.windows
                    .first_window_end(slice_end, times.thresholds[i].saturating_sub(lateness))
                    .map(|first| (slice_end, first))
            });
            match key {
                None => late.push(i as u32),
                Some(key) => match groups.iter_mut().rev().find(|(k, _)| *k == key) {
                    Some((_, idx)) => idx.push(i as u32),
                    None => groups.push((key, vec![i as u32])),
                },
            }
        }
        if !late.is_empty() {
            ctx.emit_late(take_record_batch(batch, &UInt32Array::from(late))?);
        }
        if groups.is_empty() {
            return Ok(());
        }
        let input = self.spec.evaluate(batch)?;
        ctx.observe_keys(&input.keys);
        for (key, indices) in groups {
            let n = indices.len();
            let part = if n == rows {
                input.clone()
            } else {
                input.take(&UInt32Array::from(indices))?
            };
            self.live_bucket(key)?.update(&part, n)?;
            self.touch(key);
        }
        Ok(())
    }

    /// Partial state in (Final mode). Returns the number of groups that
    /// were late for every window of their slice.
    fn merge_partials(&mut self, batch: &RecordBatch) -> Result<u64> {
        let slice_ends = int64_column(batch, 0)?;
        let firsts = int64_column(batch, 1)?;
        let mut groups: Vec<(BucketKey, Vec<u32>)> = Vec::new();
        for i in 0..batch.num_rows() {
            let key = (slice_ends.value(i), firsts.value(i));
            match groups.iter_mut().rev().find(|(k, _)| *k == key) {
                Some((_, idx)) => idx.push(i as u32),
                None => groups.push((key, vec![i as u32])),
            }
        }
        let nkeys = self.spec.keys.len();
        let nstates: usize = self.state_widths.iter().sum();
        let mut late = 0;
        for ((slice_end, first), indices) in groups {
            let n = indices.len();
            // Only an input that was idle can send state for windows that
            // already fired; it joins the windows still open, if any.
            let horizon = self.watermark.saturating_sub(self.allow_lateness());
            let first = if first - 1 <= horizon {
                match self.windows.first_window_end(slice_end, horizon) {
                    Some(f) => f,
                    None => {
                        late += n as u64;
                        continue;
                    }
                }
            } else {
                first
            };
            let part = if n == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(indices))?
            };
            let state = GroupedStateArrays {
                keys: part.columns()[PARTIAL_KEYS_AT..PARTIAL_KEYS_AT + nkeys].to_vec(),
                states: part.columns()[PARTIAL_KEYS_AT + nkeys..PARTIAL_KEYS_AT + nkeys + nstates]
                    .to_vec(),
            };
            let widths = self.state_widths.clone();
            self.live_bucket((slice_end, first))?
                .merge(&state, &widths)?;
            self.touch((slice_end, first));
        }
        Ok(late)
    }

    /// Fires pending windows with `end - 1 <= watermark`; `false` when it
    /// yielded with windows left (see [`OperatorContext::call_again`]).
    fn fire_until(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<bool> {
        let row_watermark = self.watermark;
        while let Some(&end) = self.pending.first() {
            if end.saturating_sub(1) > watermark {
                break;
            }
            if ctx.is_full() {
                ctx.call_again();
                return Ok(false);
            }
            self.pending.pop_first();
            self.fire_window(end, row_watermark, ctx)?;
        }
        Ok(true)
    }

    fn fire_window(
        &mut self,
        end: Millis,
        row_watermark: Millis,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        // A window that can still take late rows keeps its buckets.
        let consume = self.allow_lateness() == 0;
        let Some(result) = self.window_result(end, consume)? else {
            return Ok(());
        };
        ctx.observe_window_emit(end);
        self.emit_result(end, result, row_watermark, ctx)?;
        if consume {
            if let Some(updates) = &mut self.updates {
                updates.forget_until(end);
            }
        }
        Ok(())
    }

    /// The result of the window ending at `end`, if it has rows; with
    /// `consume`, the buckets no later window needs are dropped.
    fn window_result(&mut self, end: Millis, consume: bool) -> Result<Option<WindowResult>> {
        let start = self.windows.window_start(end);
        let first_slice = start + self.windows.slice();
        let keys: Vec<BucketKey> = self
            .buckets
            .range((first_slice, Millis::MIN)..=(end, Millis::MAX))
            .map(|(k, _)| *k)
            .filter(|k| k.1 <= end)
            .collect();
        let (keys, values) = match keys.as_slice() {
            [] => return Ok(None),
            [only] if consume && self.windows.last_window_end(only.0) == end => {
                match self.buckets.remove(only) {
                    Some(Bucket::Live(mut state)) => state.take_final()?,
                    Some(Bucket::Sealed(sealed)) => {
                        let mut state = self.new_state()?;
                        state.merge(&sealed, &self.state_widths)?;
                        state.take_final()?
                    }
                    None => return Ok(None),
                }
            }
            _ => {
                let mut merged = self.new_state()?;
                for key in &keys {
                    self.seal(key)?;
                    if let Some(Bucket::Sealed(sealed)) = self.buckets.get(key) {
                        merged.merge(sealed, &self.state_widths)?;
                    }
                }
                if consume {
                    for key in &keys {
                        if self.windows.last_window_end(key.0) <= end {
                            self.buckets.remove(key);
                        }
                    }
                }
                merged.take_final()?
            }
        };
        Ok(Some(WindowResult { keys, values }))
    }

    /// Emits a window's result: as is, or, when windows fire more than
    /// once, as the changes from what it emitted last.
    fn emit_result(
        &mut self,
        end: Millis,
        result: WindowResult,
        row_watermark: Millis,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let start = self.windows.window_start(end);
        let Some(updates) = &mut self.updates else {
            ctx.emit(self.assemble(start, end, &result, row_watermark)?);
            return Ok(());
        };
        let Some(changes) = updates.changes(end, result)? else {
            return Ok(());
        };
        let Changes { before, after, .. } = &changes;
        let mut parts = Vec::with_capacity(2);
        if let Some(before) = before {
            parts.push(self.assemble(start, end, before, row_watermark)?);
        }
        parts.push(self.assemble(start, end, after, row_watermark)?);
        let batch = concat_batches(parts[0].schema_ref(), &parts)?;
        ctx.emit(with_kinds(&batch, changes.kinds())?);
        Ok(())
    }

    fn assemble(
        &self,
        start: Millis,
        end: Millis,
        result: &WindowResult,
        row_watermark: Millis,
    ) -> Result<RecordBatch> {
        // Keys give the row count when there are no aggregates (GROUP BY
        // only); with neither, the window's one global group had rows.
        let rows = result.rows();
        self.layout.assemble(
            vec![start; rows],
            vec![end; rows],
            &result.keys,
            &result.values,
            row_watermark,
        )
    }

    /// Fires the changed windows of `phase`: before their end (early) or
    /// after it (late, within the allowed lateness).
    fn fire_changed(&mut self, phase: Phase, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let Some(updates) = &self.updates else {
            return Ok(());
        };
        let fired = self.watermark;
        let due: Vec<Millis> = updates
            .dirty
            .iter()
            .copied()
            .filter(|end| (end.saturating_sub(1) > fired) == (phase == Phase::Early))
            .collect();
        for end in due {
            match self.window_result(end, false)? {
                Some(result) => self.emit_result(end, result, fired, ctx)?,
                None => {
                    if let Some(updates) = &mut self.updates {
                        updates.dirty.remove(&end);
                    }
                }
            }
        }
        Ok(())
    }

    /// After every input batch: the firings that do not wait for a clock.
    fn fire_after_batch(&mut self, ctx: &mut OperatorContext<'_>) -> Result<()> {
        for phase in [Phase::Early, Phase::Late] {
            if self
                .updates
                .as_ref()
                .is_some_and(|u| u.fires_at_once(phase))
            {
                self.fire_changed(phase, ctx)?;
            }
        }
        Ok(())
    }

    /// Closes the windows whose allowed lateness the watermark passed:
    /// their last late updates are emitted, then their state dropped.
    fn close_late_windows(&mut self, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let lateness = self.allow_lateness();
        if lateness == 0 {
            return Ok(());
        }
        let horizon = self.watermark.saturating_sub(lateness);
        let closing = self.updates.as_ref().is_some_and(|u| {
            u.dirty
                .first()
                .is_some_and(|end| end.saturating_sub(1) <= horizon)
        });
        if closing {
            self.fire_changed(Phase::Late, ctx)?;
        }
        let windows = self.windows;
        self.buckets
            .retain(|key, _| windows.last_window_end(key.0).saturating_sub(1) > horizon);
        if let Some(updates) = &mut self.updates {
            updates.forget_until(horizon.saturating_add(1));
        }
        Ok(())
    }

    /// Partial mode: sends the state of buckets whose first window may fire
    /// at `watermark` (all of them for `FINAL_WATERMARK`).
    fn flush_partials(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let due: Vec<BucketKey> = self
            .buckets
            .keys()
            .filter(|k| watermark == FINAL_WATERMARK || k.1 - 1 <= watermark)
            .copied()
            .collect();
        for key in due {
            let state = match self.buckets.remove(&key) {
                Some(Bucket::Live(mut state)) => state.take_state()?,
                Some(Bucket::Sealed(sealed)) => sealed,
                None => continue,
            };
            ctx.emit(self.partial_batch(key, &state)?);
        }
        Ok(())
    }

    fn partial_batch(
        &self,
        (slice_end, first): BucketKey,
        state: &GroupedStateArrays,
    ) -> Result<RecordBatch> {
        let rows = state.num_groups();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_value(slice_end, rows)),
            Arc::new(Int64Array::from_value(first, rows)),
        ];
        columns.extend(state.keys.iter().cloned());
        columns.extend(state.states.iter().cloned());
        columns.push(Arc::new(Int64Array::from_value(self.watermark, rows)));
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.partial_schema.clone(),
            columns,
            &options,
        )?)
    }

    fn groups(&self) -> usize {
        self.buckets
            .values()
            .map(|b| match b {
                Bucket::Live(s) => s.len(),
                Bucket::Sealed(s) => s.num_groups(),
            })
            .sum()
    }
}

fn int64_column(batch: &RecordBatch, index: usize) -> Result<&Int64Array> {
    batch
        .column(index)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| {
            DataFusionError::Internal(format!("column {index} of partial state is not Int64"))
                .into()
        })
}

impl Operator for WindowAggregate {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        match self.mode {
            AggregateMode::Single => {
                self.add_rows(&batch, ctx)?;
                self.fire_after_batch(ctx)
            }
            AggregateMode::Partial => {
                self.add_rows(&batch, ctx)?;
                if self.groups() > self.max_partial_groups {
                    self.flush_partials(FINAL_WATERMARK, ctx)?;
                }
                Ok(())
            }
            AggregateMode::Final => {
                let late = self.merge_partials(&batch)?;
                ctx.count_late(late);
                self.fire_after_batch(ctx)
            }
        }
    }

    fn on_watermark(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if self.time.is_processing_time() {
            return Ok(());
        }
        match self.mode {
            AggregateMode::Partial => {
                self.watermark = watermark;
                self.flush_partials(watermark, ctx)
            }
            _ => {
                if self.fire_until(watermark, ctx)? {
                    self.watermark = self.watermark.max(watermark);
                    self.close_late_windows(ctx)?;
                }
                Ok(())
            }
        }
    }

    fn timer_interval(&self) -> Option<std::time::Duration> {
        let periodic = self
            .updates
            .as_ref()
            .and_then(|u| u.strategy.timer_period())
            .map(|ms| std::time::Duration::from_millis(ms as u64));
        [self.time.timer_interval(), periodic]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_timer(&mut self, now: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        // Only processing-time windows close on the clock.
        if self.mode != AggregateMode::Partial && self.time.is_processing_time() {
            self.fire_until(now - 1, ctx)?;
        }
        for phase in [Phase::Early, Phase::Late] {
            if self
                .updates
                .as_mut()
                .is_some_and(|u| u.periodic_due(phase, now))
            {
                self.fire_changed(phase, ctx)?;
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        if self.mode == AggregateMode::Partial {
            self.flush_partials(FINAL_WATERMARK, ctx)?;
            return Ok(StateSnapshot::default());
        }
        let keys: Vec<BucketKey> = self.buckets.keys().copied().collect();
        let mut batches = Vec::with_capacity(keys.len());
        for key in &keys {
            self.seal(key)?;
            if let Some(Bucket::Sealed(state)) = self.buckets.get(key) {
                batches.push(self.partial_batch(*key, state)?);
            }
        }
        let table = concat_batches(&self.partial_schema, &batches)?;
        let watermark =
            WATERMARK_TABLE.write(vec![Arc::new(Int64Array::from(vec![self.watermark]))])?;
        let mut tables = vec![(BUCKETS.name().to_string(), table), watermark];
        if let Some(emitted) = self.updates.as_ref().map(Updates::snapshot).transpose()? {
            tables.extend(emitted);
        }
        Ok(StateSnapshot { tables })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        if let Some(wm) = WATERMARK_TABLE.read(&state)? {
            self.watermark = wm.first::<Int64Type>("watermark")?.unwrap_or(NO_WATERMARK);
        }
        if let Some(buckets) = BUCKETS.read(&state)? {
            // Restored buckets were open at the snapshot, so none is late.
            let watermark = std::mem::replace(&mut self.watermark, NO_WATERMARK);
            let result = self.merge_partials(buckets.batch());
            self.watermark = watermark;
            result?;
        }
        if let Some(updates) = &mut self.updates {
            updates.restore(&state)?;
        }
        Ok(())
    }

    fn on_end(&mut self, ctx: &mut OperatorContext<'_>) -> Result<()> {
        match self.mode {
            AggregateMode::Partial => self.flush_partials(FINAL_WATERMARK, ctx),
            // Processing-time windows fire at the end of input; event-time
            // ones fired at the final watermark.
            _ if self.time.is_processing_time() => {
                self.fire_until(FINAL_WATERMARK, ctx).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    fn state_size(&self) -> StateSize {
        let bytes = self
            .buckets
            .values()
            .map(|b| match b {
                Bucket::Live(s) => s.size(),
                Bucket::Sealed(s) => s
                    .keys
                    .iter()
                    .chain(&s.states)
                    .map(|a| a.get_array_memory_size())
                    .sum(),
            })
            .sum::<usize>()
            + self.updates.as_ref().map_or(0, Updates::size);
        StateSize {
            rows: self.groups() as u64,
            bytes: bytes as u64,
            sides: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{count_per_key, keyed_rows, Harness};
    use datafusion::assert_batches_sorted_eq;

    fn tumble(mode: AggregateMode) -> WindowAggregate {
        let c = count_per_key(true).unwrap();
        WindowAggregate::new(
            "w",
            mode,
            SliceWindows::tumble(10, 0).unwrap(),
            c.spec,
            TimeSource::EventTime { column: 1 },
            c.layout,
        )
        .unwrap()
    }

    const EXPECTED: [&str; 8] = [
        "+---+-------------------------+-------------------------+---+",
        "| k | window_start            | window_end              | n |",
        "+---+-------------------------+-------------------------+---+",
        "|   | 1970-01-01T00:00:00     | 1970-01-01T00:00:00.010 | 1 |",
        "| 1 | 1970-01-01T00:00:00     | 1970-01-01T00:00:00.010 | 3 |",
        "| 1 | 1970-01-01T00:00:00.010 | 1970-01-01T00:00:00.020 | 1 |",
        "| 2 | 1970-01-01T00:00:00.020 | 1970-01-01T00:00:00.030 | 2 |",
        "+---+-------------------------+-------------------------+---+",
    ];

    fn input() -> Vec<RecordBatch> {
        vec![
            keyed_rows(&[(Some(1), 3), (Some(1), 12), (None, 1), (Some(1), 0)]).unwrap(),
            keyed_rows(&[(Some(2), 25), (Some(1), 9), (Some(2), 29)]).unwrap(),
        ]
    }

    /// Out-of-order rows within the watermark, a null key, a window that
    /// fires at `end - 1` and not before.
    #[test]
    fn a_tumble_fires_each_window_once_at_its_end() {
        let mut h = Harness::new(tumble(AggregateMode::Single));
        for batch in input() {
            h.batch(batch).unwrap();
        }
        h.watermark(8).unwrap();
        assert!(h.take_output().is_empty(), "[0, 10) fires at 9");
        h.watermark(9).unwrap();
        assert_eq!(h.take_output()[0].num_rows(), 2);
        h.end().unwrap();
        let mut all = Vec::new();
        let mut again = Harness::new(tumble(AggregateMode::Single));
        for batch in input() {
            again.batch(batch).unwrap();
        }
        all.extend(again.end().unwrap().take_output());
        assert_batches_sorted_eq!(EXPECTED, &all);
    }

    /// The wall clock does not fire an event-time window: a timer (meant
    /// for another operator of its chain) leaves it to the watermark, so
    /// later rows of the window are not split off into a second result.
    #[test]
    fn a_timer_does_not_fire_event_time_windows() {
        let mut h = Harness::new(tumble(AggregateMode::Single));
        let input = input();
        h.batch(input[0].clone()).unwrap();
        h.timer(1_700_000_000_000).unwrap();
        assert!(h.take_output().is_empty());
        h.batch(input[1].clone()).unwrap();
        h.end().unwrap();
        assert_batches_sorted_eq!(EXPECTED, &h.take_output());
    }

    /// A row behind the watermark is late for its window (counted and
    /// emitted as late), not added to the one already fired.
    #[test]
    fn a_row_for_a_fired_window_is_late() {
        let mut h = Harness::new(tumble(AggregateMode::Single));
        h.batch(keyed_rows(&[(Some(1), 3)]).unwrap()).unwrap();
        h.watermark(15).unwrap();
        h.batch(keyed_rows(&[(Some(1), 4), (Some(1), 16)]).unwrap())
            .unwrap();
        assert_eq!(h.late_rows(), 1);
        assert_eq!(h.take_late()[0].num_rows(), 1);
    }

    /// Local pre-aggregation then the global merge equals one phase.
    #[test]
    fn two_phases_equal_one() {
        let mut local = Harness::new(tumble(AggregateMode::Partial));
        let mut global = Harness::new(tumble(AggregateMode::Final));
        for batch in input() {
            local.batch(batch).unwrap();
        }
        local.end().unwrap();
        for partial in local.take_output() {
            global.batch(partial).unwrap();
        }
        assert_batches_sorted_eq!(EXPECTED, &global.end().unwrap().take_output());
    }

    /// State taken at a barrier and restored into a new operator gives the
    /// same windows as an uninterrupted run.
    #[test]
    fn restored_state_fires_the_same_windows() {
        let batches = input();
        let mut first = Harness::new(tumble(AggregateMode::Single));
        first.batch(batches[0].clone()).unwrap();
        let state = first.barrier().unwrap();
        let mut restored = tumble(AggregateMode::Single);
        restored.restore(state).unwrap();
        let mut second = Harness::new(restored);
        second.batch(batches[1].clone()).unwrap();
        assert_batches_sorted_eq!(EXPECTED, &second.end().unwrap().take_output());
    }

    /// Each output row as `op k start end n`, in emitted order.
    fn changelog(batches: &[RecordBatch]) -> Vec<String> {
        use datafusion::arrow::util::display::array_value_to_string;
        let mut rows = Vec::new();
        for batch in batches {
            let shown = crate::changelog::with_op_column(batch).unwrap();
            for r in 0..shown.num_rows() {
                let cells: Vec<String> = shown
                    .columns()
                    .iter()
                    .map(|c| array_value_to_string(c, r).unwrap())
                    .collect();
                rows.push(cells.join(" "));
            }
        }
        rows
    }

    /// Applies a changelog: the rows left, sorted.
    fn applied(changes: &[String]) -> Vec<String> {
        let mut rows: Vec<String> = Vec::new();
        for change in changes {
            let (op, row) = change.split_at(3);
            if op.starts_with('+') {
                rows.push(row.to_string());
            } else {
                let at = rows
                    .iter()
                    .position(|r| r == row)
                    .expect("retracted row exists");
                rows.remove(at);
            }
        }
        rows.sort();
        rows
    }

    fn emitting(strategy: EmitStrategy) -> WindowAggregate {
        tumble(AggregateMode::Single).with_emit(strategy)
    }

    const W0: &str = "1970-01-01T00:00:00 1970-01-01T00:00:00.010";

    /// Early firing after every batch: `+I` for a new key, `-U`/`+U` for a
    /// changed one, nothing for an unchanged one; the watermark adds
    /// nothing once everything was emitted; the changelog applied equals
    /// the windows of a run without early firing.
    #[test]
    fn early_firing_emits_the_window_so_far_as_a_changelog() {
        let mut h = Harness::new(emitting(EmitStrategy {
            early_fire: Some(0),
            ..Default::default()
        }));
        h.batch(keyed_rows(&[(Some(1), 3), (Some(1), 5)]).unwrap())
            .unwrap();
        assert_eq!(changelog(&h.take_output()), [format!("+I 1 {W0} 2")]);
        h.batch(keyed_rows(&[(Some(1), 7), (Some(2), 8)]).unwrap())
            .unwrap();
        assert_eq!(
            changelog(&h.take_output()),
            [
                format!("-U 1 {W0} 2"),
                format!("+U 1 {W0} 3"),
                format!("+I 2 {W0} 1")
            ]
        );
        h.batch(keyed_rows(&[(Some(3), 12)]).unwrap()).unwrap();
        assert_eq!(h.take_output().len(), 1, "window [10, 20) fired early");
        h.watermark(9).unwrap();
        assert!(h.take_output().is_empty(), "nothing changed since");

        let mut all = Harness::new(emitting(EmitStrategy {
            early_fire: Some(0),
            ..Default::default()
        }));
        let mut once = Harness::new(tumble(AggregateMode::Single));
        for batch in input() {
            all.batch(batch.clone()).unwrap();
            once.batch(batch).unwrap();
        }
        all.watermark(20).unwrap().end().unwrap();
        once.end().unwrap();
        let once: Vec<String> = changelog(&once.take_output());
        assert_eq!(applied(&changelog(&all.take_output())), applied(&once));
    }

    /// Rows within the allowed lateness update a fired window (`-U`/`+U`);
    /// past it they are late rows, as without it.
    #[test]
    fn late_rows_within_the_allowed_lateness_update_the_window() {
        let mut h = Harness::new(emitting(EmitStrategy {
            allow_lateness: 5,
            ..Default::default()
        }));
        h.batch(keyed_rows(&[(Some(1), 3)]).unwrap()).unwrap();
        assert!(h.take_output().is_empty(), "no early firing");
        h.watermark(9).unwrap();
        assert_eq!(changelog(&h.take_output()), [format!("+I 1 {W0} 1")]);
        h.batch(keyed_rows(&[(Some(1), 4), (Some(2), 0)]).unwrap())
            .unwrap();
        assert_eq!(
            changelog(&h.take_output()),
            [
                format!("-U 1 {W0} 1"),
                format!("+U 1 {W0} 2"),
                format!("+I 2 {W0} 1")
            ]
        );
        assert_eq!(h.late_rows(), 0);
        h.watermark(13).unwrap();
        h.batch(keyed_rows(&[(Some(1), 5)]).unwrap()).unwrap();
        assert_eq!(changelog(&h.take_output()).len(), 2, "end - 1 + 5 > 13");
        h.watermark(14).unwrap();
        h.batch(keyed_rows(&[(Some(1), 6)]).unwrap()).unwrap();
        assert!(h.take_output().is_empty());
        assert_eq!(h.late_rows(), 1, "the window closed at 9 + 5");
    }

    /// Periodic late firing: updates wait for the clock, and a window
    /// about to close emits what it still holds.
    #[test]
    fn periodic_late_firing_waits_for_the_clock_and_flushes_at_close() {
        let mut h = Harness::new(emitting(EmitStrategy {
            late_fire: Some(100),
            allow_lateness: 5,
            ..Default::default()
        }));
        h.batch(keyed_rows(&[(Some(1), 3)]).unwrap()).unwrap();
        h.watermark(9).unwrap();
        h.take_output();
        h.timer(1_000).unwrap();
        h.batch(keyed_rows(&[(Some(1), 4)]).unwrap()).unwrap();
        assert!(h.take_output().is_empty(), "waits for the next period");
        h.timer(1_050).unwrap();
        assert!(h.take_output().is_empty());
        h.timer(1_100).unwrap();
        assert_eq!(
            changelog(&h.take_output()),
            [format!("-U 1 {W0} 1"), format!("+U 1 {W0} 2")]
        );
        h.batch(keyed_rows(&[(Some(1), 5)]).unwrap()).unwrap();
        h.watermark(14).unwrap();
        assert_eq!(
            changelog(&h.take_output()),
            [format!("-U 1 {W0} 2"), format!("+U 1 {W0} 3")],
            "closing emits the pending update"
        );
    }

    /// What a window emitted survives a restore: the next update retracts
    /// the row emitted before the barrier.
    #[test]
    fn emitted_results_survive_a_restore() {
        let strategy = EmitStrategy {
            early_fire: Some(0),
            ..Default::default()
        };
        let mut first = Harness::new(emitting(strategy));
        first.batch(keyed_rows(&[(Some(1), 3)]).unwrap()).unwrap();
        let state = first.barrier().unwrap();
        let mut restored = emitting(strategy);
        restored.restore(state).unwrap();
        let mut second = Harness::new(restored);
        second.batch(keyed_rows(&[(Some(1), 4)]).unwrap()).unwrap();
        assert_eq!(
            changelog(&second.take_output()),
            [format!("-U 1 {W0} 1"), format!("+U 1 {W0} 2")]
        );
    }
}
