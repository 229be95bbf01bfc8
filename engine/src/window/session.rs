//! Session window aggregation.
//!
//! A row at `t` opens the window `[t, t + gap)`; windows of the same session
//! key that intersect (touching ends included, so rows exactly `gap` apart
//! share a session) merge. A session fires when the watermark reaches its
//! `end - 1`. Rows are buffered until their session fires and are then
//! aggregated in one vectorised pass, so merging sessions needs no
//! accumulator surgery. A row joins only sessions still open at its own
//! watermark (or the operator's); it is late when it joins none and its own
//! window has closed too.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, UInt32Array,
};
use datafusion::arrow::compute::{interleave, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::hash_utils::RandomState;
use datafusion::common::DataFusionError;

use super::{OutputLayout, TimeSource, WATERMARK_TABLE};
use crate::aggregate::{AggregateInput, AggregateSpec, GroupedState};
use crate::error::Result;
use crate::message::{now_millis, Millis, FINAL_WATERMARK, NO_WATERMARK};
use crate::operator::{Operator, OperatorContext, StateSize};
use crate::state::{StateSnapshot, StateTable};

/// Open sessions: the key's row encoding, start and end.
static SESSIONS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "sessions",
        [
            ("key", DataType::Binary),
            ("start", DataType::Int64),
            ("end", DataType::Int64),
        ],
    )
});

/// Buffered rows: the ordinal of their session in `SESSIONS`, then the
/// input's columns.
static ROWS: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("rows", [("_session", DataType::UInt32)]));

type BufferId = u64;

struct Session {
    start: Millis,
    end: Millis,
    rows: Vec<(BufferId, u32)>,
}

/// Evaluated aggregate inputs of one input batch, kept until every row that
/// belongs to an open session has fired.
struct Buffer {
    /// Keys, then every aggregate argument, then filters.
    columns: Vec<ArrayRef>,
    live: usize,
}

/// A keyed session window aggregation.
pub struct SessionWindowAggregate {
    name: String,
    gap: Millis,
    spec: Arc<AggregateSpec>,
    /// Which of `spec.keys` form the session key (`PARTITION BY`).
    partition_keys: Vec<usize>,
    time: TimeSource,
    layout: Arc<OutputLayout>,
    converter: RowConverter,
    fire_key_schema: SchemaRef,
    /// Open sessions by key (row encoding of the session key).
    sessions: OpenSessions,
    /// Session ends by key number: a timer is two integers, so moving a
    /// session's end (every row that extends it) allocates nothing.
    timers: BTreeSet<(Millis, u64)>,
    buffers: HashMap<BufferId, Buffer>,
    next_buffer: BufferId,
    buffered_rows: usize,
    watermark: Millis,
}

/// The open sessions of one key.
#[derive(Default)]
struct KeySessions {
    key: Vec<u8>,
    list: Vec<Session>,
}

/// The open sessions of every key, keys numbered for the timers.
#[derive(Default)]
struct OpenSessions {
    ids: HashMap<Vec<u8>, u64, RandomState>,
    by_id: HashMap<u64, KeySessions, RandomState>,
    next_id: u64,
}

impl OpenSessions {
    /// The number of `key`, numbering it if it has no open session.
    fn id(&mut self, key: &[u8]) -> u64 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.ids.insert(key.to_vec(), id);
        self.by_id.insert(
            id,
            KeySessions {
                key: key.to_vec(),
                list: Vec::new(),
            },
        );
        id
    }

    fn get(&self, key: &[u8]) -> Option<&Vec<Session>> {
        let id = self.ids.get(key)?;
        self.by_id.get(id).map(|k| &k.list)
    }

    fn list(&mut self, id: u64) -> &mut Vec<Session> {
        &mut self.by_id.entry(id).or_default().list
    }

    /// Forgets key number `id` when it has no open session left.
    fn forget_if_empty(&mut self, id: u64) {
        if self.by_id.get(&id).is_some_and(|k| k.list.is_empty()) {
            if let Some(k) = self.by_id.remove(&id) {
                self.ids.remove(&k.key);
            }
        }
    }
}

impl SessionWindowAggregate {
    pub fn new(
        name: impl Into<String>,
        gap: Millis,
        spec: Arc<AggregateSpec>,
        partition_keys: Vec<usize>,
        time: TimeSource,
        layout: Arc<OutputLayout>,
    ) -> Result<Self> {
        if gap <= 0 {
            return Err(DataFusionError::Plan(format!(
                "session gap must be positive, got {gap} ms"
            ))
            .into());
        }
        let sort_fields = partition_keys
            .iter()
            .map(|i| {
                spec.key_fields
                    .get(*i)
                    .map(|f| SortField::new(f.data_type().clone()))
                    .ok_or_else(|| DataFusionError::Internal(format!("no session key {i}")))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut fire_keys = vec![Arc::new(Field::new(
            "_weir_session",
            DataType::UInt32,
            false,
        ))];
        fire_keys.extend(spec.key_fields.iter().cloned());
        Ok(SessionWindowAggregate {
            name: name.into(),
            gap,
            converter: RowConverter::new(sort_fields)?,
            fire_key_schema: Arc::new(Schema::new(fire_keys)),
            spec,
            partition_keys,
            time,
            layout,
            sessions: OpenSessions::default(),
            timers: BTreeSet::new(),
            buffers: HashMap::new(),
            next_buffer: 0,
            buffered_rows: 0,
            watermark: NO_WATERMARK,
        })
    }

    fn flatten(input: AggregateInput) -> Vec<ArrayRef> {
        let mut columns = input.keys;
        for args in input.args {
            columns.extend(args);
        }
        for filter in input.filters.into_iter().flatten() {
            columns.push(Arc::new(filter));
        }
        columns
    }

    fn unflatten(&self, columns: Vec<ArrayRef>) -> Result<AggregateInput> {
        let mut it = columns.into_iter();
        let keys = it.by_ref().take(self.spec.keys.len()).collect();
        let args = self
            .spec
            .aggregates
            .iter()
            .map(|a| it.by_ref().take(a.expressions().len()).collect())
            .collect();
        let mut filters = Vec::with_capacity(self.spec.filters.len());
        for f in &self.spec.filters {
            filters.push(match f {
                None => None,
                Some(_) => Some(
                    it.next()
                        .and_then(|a| a.as_any().downcast_ref::<BooleanArray>().cloned())
                        .ok_or_else(|| DataFusionError::Internal("session filter column".into()))?,
                ),
            });
        }
        Ok(AggregateInput {
            keys,
            args,
            filters,
        })
    }

    fn add_rows(&mut self, batch: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let times = self.time.row_times(batch, self.watermark, now_millis())?;
        let input = self.spec.evaluate(batch)?;
        ctx.observe_keys(&input.keys);
        let session_keys: Vec<ArrayRef> = self
            .partition_keys
            .iter()
            .map(|i| input.keys[*i].clone())
            .collect();
        let rows = self.converter.convert_columns(&session_keys)?;
        let buffer = self.next_buffer;
        let mut live = 0;
        let mut late = Vec::new();
        for i in 0..batch.num_rows() {
            let Some(t) = times.times[i] else {
                late.push(i as u32);
                continue;
            };
            let key = rows.row(i);
            let key = key.as_ref();
            let threshold = times.thresholds[i];
            // Only sessions still open at the row's watermark can take it:
            // one that has closed (end - 1 <= threshold) fired, as far as
            // this row is concerned, even if the operator has not fired it
            // yet. So batching never changes which rows share a session.
            let (mut start, mut end) = (t, t.saturating_add(self.gap));
            let open = self.sessions.get(key);
            let overlapping: Vec<usize> = open.map_or(Vec::new(), |list| {
                list.iter()
                    .enumerate()
                    .filter(|(_, s)| s.end - 1 > threshold && s.start <= end && s.end >= start)
                    .map(|(j, _)| j)
                    .collect()
            });
            if let Some(list) = open {
                for j in &overlapping {
                    start = start.min(list[*j].start);
                    end = end.max(list[*j].end);
                }
            }
            if end - 1 <= threshold {
                late.push(i as u32);
                continue;
            }
            live += 1;
            let id = self.sessions.id(key);
            let list = self.sessions.list(id);
            // The merged session grows from the largest one it takes in, so
            // a row joining a long session costs one push, not a copy of it.
            let mut merged = Session {
                start,
                end,
                rows: Vec::new(),
            };
            for j in overlapping.into_iter().rev() {
                let mut old = list.swap_remove(j);
                self.timers.remove(&(old.end, id));
                if old.rows.len() > merged.rows.len() {
                    std::mem::swap(&mut old.rows, &mut merged.rows);
                }
                merged.rows.extend(old.rows);
            }
            merged.rows.push((buffer, i as u32));
            list.push(merged);
            self.timers.insert((end, id));
        }
        if !late.is_empty() {
            ctx.emit_late(take_record_batch(batch, &UInt32Array::from(late))?);
        }
        if live > 0 {
            self.buffers.insert(
                buffer,
                Buffer {
                    columns: Self::flatten(input),
                    live,
                },
            );
            self.next_buffer += 1;
            self.buffered_rows += live;
        }
        Ok(())
    }

    /// Fires sessions with `end - 1 <= watermark`; `false` when it yielded
    /// with sessions left (see [`OperatorContext::call_again`]).
    fn fire_until(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<bool> {
        let mut fired: Vec<Session> = Vec::new();
        let mut rows = 0;
        let mut done = true;
        while let Some((end, _)) = self.timers.first() {
            if end.saturating_sub(1) > watermark {
                break;
            }
            if rows >= crate::operator::OUTPUT_ROWS_PER_CALL {
                ctx.call_again();
                done = false;
                break;
            }
            let Some((end, id)) = self.timers.pop_first() else {
                break;
            };
            // A timer outlives its session when a later row moved the end.
            let Some(KeySessions { list, .. }) = self.sessions.by_id.get_mut(&id) else {
                continue;
            };
            if let Some(j) = list.iter().position(|s| s.end == end) {
                let session = list.swap_remove(j);
                rows += session.rows.len();
                fired.push(session);
            }
            self.sessions.forget_if_empty(id);
        }
        if !fired.is_empty() {
            for session in &fired {
                ctx.observe_window_emit(session.end);
            }
            let row_watermark = self.watermark;
            let batch = self.aggregate_sessions(&fired, row_watermark)?;
            ctx.emit(batch);
        }
        Ok(done)
    }

    /// Aggregates the buffered rows of `sessions` in one pass and releases them.
    fn aggregate_sessions(
        &mut self,
        sessions: &[Session],
        row_watermark: Millis,
    ) -> Result<RecordBatch> {
        let mut ids: Vec<BufferId> = sessions
            .iter()
            .flat_map(|s| s.rows.iter().map(|(b, _)| *b))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let position: HashMap<BufferId, usize> =
            ids.iter().enumerate().map(|(p, id)| (*id, p)).collect();
        let mut indices = Vec::new();
        let mut ordinals = Vec::new();
        for (ordinal, session) in sessions.iter().enumerate() {
            for (buffer, row) in &session.rows {
                indices.push((position[buffer], *row as usize));
                ordinals.push(ordinal as u32);
            }
        }
        let buffers: Vec<&Buffer> = ids
            .iter()
            .map(|id| {
                self.buffers
                    .get(id)
                    .ok_or_else(|| DataFusionError::Internal("session buffer missing".into()))
            })
            .collect::<std::result::Result<_, _>>()?;
        let width = buffers.first().map_or(0, |b| b.columns.len());
        let mut columns = Vec::with_capacity(width);
        for c in 0..width {
            let arrays: Vec<&dyn Array> = buffers.iter().map(|b| b.columns[c].as_ref()).collect();
            columns.push(interleave(&arrays, &indices)?);
        }
        let mut input = self.unflatten(columns)?;
        input.keys.insert(0, Arc::new(UInt32Array::from(ordinals)));
        let mut state = GroupedState::new(self.fire_key_schema.clone(), &self.spec.aggregates)?;
        state.update(&input, indices.len())?;
        let (mut keys, values) = state.take_final()?;
        let ordinal = keys.remove(0);
        let ordinal = ordinal
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| DataFusionError::Internal("session ordinal".into()))?;
        let starts = ordinal
            .values()
            .iter()
            .map(|o| sessions[*o as usize].start)
            .collect();
        let ends = ordinal
            .values()
            .iter()
            .map(|o| sessions[*o as usize].end)
            .collect();

        for session in sessions {
            for (buffer, _) in &session.rows {
                if let Some(b) = self.buffers.get_mut(buffer) {
                    b.live -= 1;
                    if b.live == 0 {
                        self.buffers.remove(buffer);
                    }
                }
            }
            self.buffered_rows -= session.rows.len();
        }
        self.layout
            .assemble(starts, ends, &keys, &values, row_watermark)
    }
}

impl SessionWindowAggregate {
    /// Open sessions and their buffered rows as Arrow tables.
    fn snapshot_tables(&self) -> Result<StateSnapshot> {
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut owners = Vec::new();
        let mut refs: Vec<(usize, usize)> = Vec::new();
        let ids: Vec<BufferId> = self.buffers.keys().copied().collect();
        let position: HashMap<BufferId, usize> =
            ids.iter().enumerate().map(|(p, id)| (*id, p)).collect();
        for KeySessions { key, list } in self.sessions.by_id.values() {
            for session in list {
                let ordinal = starts.len() as u32;
                keys.push(key.as_slice());
                starts.push(session.start);
                ends.push(session.end);
                for (buffer, row) in &session.rows {
                    owners.push(ordinal);
                    refs.push((position[buffer], *row as usize));
                }
            }
        }
        let mut tables = vec![
            SESSIONS.write(vec![
                Arc::new(BinaryArray::from(keys)),
                Arc::new(Int64Array::from(starts)),
                Arc::new(Int64Array::from(ends)),
            ])?,
            WATERMARK_TABLE.write(vec![Arc::new(Int64Array::from(vec![self.watermark]))])?,
        ];
        if !refs.is_empty() {
            let buffers: Vec<&Buffer> = ids.iter().filter_map(|id| self.buffers.get(id)).collect();
            let width = buffers.first().map_or(0, |b| b.columns.len());
            let mut columns = Vec::with_capacity(width);
            for c in 0..width {
                let arrays: Vec<&dyn Array> =
                    buffers.iter().map(|b| b.columns[c].as_ref()).collect();
                let column = interleave(&arrays, &refs)?;
                let field = Field::new(format!("c{c}"), column.data_type().clone(), true);
                columns.push((field, column));
            }
            tables.push(ROWS.write_with(vec![Arc::new(UInt32Array::from(owners))], columns)?);
        }
        Ok(StateSnapshot { tables })
    }

    fn restore_tables(&mut self, state: &StateSnapshot) -> Result<()> {
        let bad = || DataFusionError::Internal("bad session window state".into());
        if let Some(w) = WATERMARK_TABLE.read(state)? {
            if let Some(v) = w.first::<Int64Type>("watermark")? {
                self.watermark = v;
            }
        }
        let Some(sessions) = SESSIONS.read(state)? else {
            return Ok(());
        };
        let keys = sessions.column::<BinaryArray>("key")?;
        let starts = sessions.column::<Int64Array>("start")?;
        let ends = sessions.column::<Int64Array>("end")?;
        let mut restored: Vec<Session> = (0..sessions.num_rows())
            .map(|i| Session {
                start: starts.value(i),
                end: ends.value(i),
                rows: Vec::new(),
            })
            .collect();
        if let Some(rows) = ROWS.read(state)? {
            let owners = rows.column::<UInt32Array>("_session")?;
            let buffer = self.next_buffer;
            self.next_buffer += 1;
            for (row, owner) in owners.values().iter().enumerate() {
                restored
                    .get_mut(*owner as usize)
                    .ok_or_else(bad)?
                    .rows
                    .push((buffer, row as u32));
            }
            self.buffered_rows += rows.num_rows();
            self.buffers.insert(
                buffer,
                Buffer {
                    columns: rows.extra().to_vec(),
                    live: rows.num_rows(),
                },
            );
        }
        for (i, session) in restored.into_iter().enumerate() {
            let end = session.end;
            let id = self.sessions.id(keys.value(i));
            self.sessions.list(id).push(session);
            self.timers.insert((end, id));
        }
        Ok(())
    }
}

impl Operator for SessionWindowAggregate {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        self.add_rows(&batch, ctx)
    }

    fn on_watermark(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if !self.time.is_processing_time() && self.fire_until(watermark, ctx)? {
            self.watermark = self.watermark.max(watermark);
        }
        Ok(())
    }

    fn timer_interval(&self) -> Option<std::time::Duration> {
        self.time.timer_interval()
    }

    fn on_timer(&mut self, now: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        // Only processing-time sessions follow the clock.
        if !self.time.is_processing_time() {
            return Ok(());
        }
        self.fire_until(now - 1, ctx).map(|_| ())
    }

    fn on_end(&mut self, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if self.time.is_processing_time() {
            self.fire_until(FINAL_WATERMARK, ctx)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        self.snapshot_tables()
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        self.restore_tables(&state)
    }

    fn state_size(&self) -> StateSize {
        let bytes: usize = self
            .buffers
            .values()
            .flat_map(|b| b.columns.iter().map(|c| c.get_array_memory_size()))
            .sum();
        StateSize {
            rows: self.buffered_rows as u64,
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

    fn operator() -> SessionWindowAggregate {
        let c = count_per_key(true).unwrap();
        SessionWindowAggregate::new(
            "s",
            10,
            c.spec,
            vec![0],
            TimeSource::EventTime { column: 1 },
            c.layout,
        )
        .unwrap()
    }

    fn rows(rows: &[(i64, i64)]) -> RecordBatch {
        let rows: Vec<(Option<i64>, i64)> = rows.iter().map(|(k, t)| (Some(*k), *t)).collect();
        keyed_rows(&rows).unwrap()
    }

    /// Key 1: 0, 5, 12 merge ([0, 22)); 30, 35 ([30, 45)). Key 2: 3 and 14
    /// are 11 apart, more than the gap: two sessions. Key 3: 100.
    const EXPECTED: [&str; 9] = [
        "+---+-------------------------+-------------------------+---+",
        "| k | window_start            | window_end              | n |",
        "+---+-------------------------+-------------------------+---+",
        "| 1 | 1970-01-01T00:00:00     | 1970-01-01T00:00:00.022 | 3 |",
        "| 1 | 1970-01-01T00:00:00.030 | 1970-01-01T00:00:00.045 | 2 |",
        "| 2 | 1970-01-01T00:00:00.003 | 1970-01-01T00:00:00.013 | 1 |",
        "| 2 | 1970-01-01T00:00:00.014 | 1970-01-01T00:00:00.024 | 1 |",
        "| 3 | 1970-01-01T00:00:00.100 | 1970-01-01T00:00:00.110 | 1 |",
        "+---+-------------------------+-------------------------+---+",
    ];

    #[test]
    fn rows_of_a_key_merge_into_sessions() {
        let mut h = Harness::new(operator());
        h.batch(rows(&[(1, 0), (1, 5), (2, 3), (1, 30)])).unwrap();
        h.batch(rows(&[(1, 12), (2, 14), (1, 35), (3, 100)]))
            .unwrap();
        assert_batches_sorted_eq!(EXPECTED, &h.end().unwrap().take_output());
    }

    /// A timer (meant for another operator of the chain) does not close
    /// event-time sessions: the watermark does.
    #[test]
    fn a_timer_does_not_close_event_time_sessions() {
        let mut h = Harness::new(operator());
        h.batch(rows(&[(1, 0), (1, 5), (2, 3), (1, 30)])).unwrap();
        h.timer(1_700_000_000_000).unwrap();
        assert!(h.take_output().is_empty());
        h.batch(rows(&[(1, 12), (2, 14), (1, 35), (3, 100)]))
            .unwrap();
        assert_batches_sorted_eq!(EXPECTED, &h.end().unwrap().take_output());
    }

    /// Rows exactly `gap` apart share a session, as in Flink.
    #[test]
    fn rows_exactly_a_gap_apart_share_a_session() {
        let mut h = Harness::new(operator());
        h.batch(rows(&[(1, 0), (1, 10), (1, 20)])).unwrap();
        let out = h.end().unwrap().take_output();
        assert_batches_sorted_eq!(
            [
                "+---+---------------------+-------------------------+---+",
                "| k | window_start        | window_end              | n |",
                "+---+---------------------+-------------------------+---+",
                "| 1 | 1970-01-01T00:00:00 | 1970-01-01T00:00:00.030 | 3 |",
                "+---+---------------------+-------------------------+---+",
            ],
            &out
        );
    }

    #[test]
    fn a_restored_operator_continues_the_same_sessions() {
        let mut original = Harness::new(operator());
        original
            .batch(rows(&[(1, 0), (1, 5), (2, 3), (1, 30)]))
            .unwrap();
        let state = original.barrier().unwrap();
        assert!(original.take_output().is_empty());
        let mut restored = operator();
        restored.restore(state).unwrap();
        let mut restored = Harness::new(restored);
        restored
            .batch(rows(&[(1, 12), (2, 14), (1, 35), (3, 100)]))
            .unwrap();
        assert_batches_sorted_eq!(EXPECTED, &restored.end().unwrap().take_output());
    }
}
