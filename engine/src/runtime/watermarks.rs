//! Watermark generation at a source subtask.
//!
//! Per split, the watermark is the largest watermark candidate
//! (`WATERMARK FOR ... AS expr`) seen so far. Each row carries the split's
//! watermark from *before* it (the row watermark). The subtask's watermark is
//! the minimum over splits that are neither ended nor idle.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::message::{Millis, Watermark, NO_WATERMARK};
use crate::row_watermark::{attach, attach_constant};
use crate::source::{SplitId, WatermarkSpec};
use crate::state::{StateSnapshot, StateTable};
use crate::window::timestamps_millis;

#[derive(Debug, Clone, Copy)]
struct SplitState {
    watermark: Millis,
    last_active: Instant,
    ended: bool,
}

/// A source's per-split watermarks in a checkpoint.
static WATERMARK_TABLE: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "_weir_split_watermarks",
        [
            ("split", DataType::UInt32),
            ("watermark", DataType::Int64),
            ("ended", DataType::Boolean),
        ],
    )
});

pub(crate) struct WatermarkGenerator {
    spec: Option<WatermarkSpec>,
    splits: BTreeMap<SplitId, SplitState>,
    emitted: Option<Watermark>,
    emitted_time: Millis,
}

impl WatermarkGenerator {
    pub(crate) fn new(spec: Option<WatermarkSpec>, splits: Vec<SplitId>) -> Self {
        let now = Instant::now();
        let splits = splits
            .into_iter()
            .map(|s| {
                (
                    s,
                    SplitState {
                        watermark: NO_WATERMARK,
                        last_active: now,
                        ended: false,
                    },
                )
            })
            .collect();
        WatermarkGenerator {
            spec,
            splits,
            emitted: None,
            emitted_time: NO_WATERMARK,
        }
    }

    /// Attaches row watermarks to a batch read from `split`.
    pub(crate) fn assign(&mut self, split: SplitId, batch: &RecordBatch) -> Result<RecordBatch> {
        let state = self.splits.entry(split).or_insert(SplitState {
            watermark: NO_WATERMARK,
            last_active: Instant::now(),
            ended: false,
        });
        state.last_active = Instant::now();
        state.ended = false;
        let Some(spec) = &self.spec else {
            return attach_constant(batch, NO_WATERMARK);
        };
        let candidates = spec.expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let candidates = timestamps_millis(candidates.as_ref())?;
        let mut current = state.watermark;
        let mut row_watermarks = Vec::with_capacity(batch.num_rows());
        for i in 0..candidates.len() {
            row_watermarks.push(current);
            if candidates.is_valid(i) {
                current = current.max(candidates.value(i));
            }
        }
        state.watermark = current;
        attach(batch, Arc::new(Int64Array::from(row_watermarks)))
    }

    pub(crate) fn add_splits(&mut self, splits: &[SplitId]) {
        let now = Instant::now();
        for split in splits {
            self.splits.entry(*split).or_insert(SplitState {
                watermark: NO_WATERMARK,
                last_active: now,
                ended: false,
            });
        }
    }

    /// The watermark of one split.
    pub(crate) fn split_watermark(&self, split: SplitId) -> Option<Millis> {
        self.splits
            .get(&split)
            .map(|s| s.watermark)
            .filter(|w| *w != NO_WATERMARK)
    }

    pub(crate) fn end_split(&mut self, split: SplitId) {
        if let Some(state) = self.splits.get_mut(&split) {
            state.ended = true;
        }
    }

    /// The subtask watermark to send now, if it changed.
    pub(crate) fn update(&mut self, now: Instant) -> Option<Watermark> {
        let spec = self.spec.as_ref()?;
        let idle = |s: &SplitState| {
            spec.idle_timeout
                .is_some_and(|t| now.duration_since(s.last_active) > t)
        };
        let live: Vec<&SplitState> = self.splits.values().filter(|s| !s.ended).collect();
        if live.is_empty() {
            return None;
        }
        let active = live.iter().filter(|s| !idle(s)).map(|s| s.watermark).min();
        let next = match active {
            Some(NO_WATERMARK) => return None,
            Some(t) => Watermark::EventTime(t.max(self.emitted_time)),
            None if spec.idle_advance => {
                // Every split is quiet: let event time follow the wall
                // clock from the last record, so the last windows fire.
                let base = live
                    .iter()
                    .map(|s| s.watermark)
                    .max()
                    .unwrap_or(NO_WATERMARK);
                let last = live.iter().map(|s| s.last_active).max().unwrap_or(now);
                if base == NO_WATERMARK {
                    return None;
                }
                let elapsed = now.duration_since(last).as_millis() as Millis;
                Watermark::EventTime(base.saturating_add(elapsed).max(self.emitted_time))
            }
            None => Watermark::Idle,
        };
        if self.emitted == Some(next) {
            return None;
        }
        if let Watermark::EventTime(t) = next {
            self.emitted_time = t;
        }
        self.emitted = Some(next);
        Some(next)
    }

    /// The per-split watermarks, for a checkpoint.
    pub(crate) fn snapshot(&self) -> Result<(String, RecordBatch)> {
        let splits: Vec<SplitId> = self.splits.keys().copied().collect();
        let marks: Vec<Millis> = self.splits.values().map(|s| s.watermark).collect();
        let ended: Vec<bool> = self.splits.values().map(|s| s.ended).collect();
        WATERMARK_TABLE.write(vec![
            Arc::new(UInt32Array::from(splits)),
            Arc::new(Int64Array::from(marks)),
            Arc::new(BooleanArray::from(ended)),
        ])
    }

    /// Takes the watermark table out of a source's restored state.
    pub(crate) fn restore(&mut self, state: &mut StateSnapshot) -> Result<()> {
        let Some(table) = WATERMARK_TABLE.take(state)? else {
            return Ok(());
        };
        let splits = table.column::<UInt32Array>("split")?;
        let marks = table.column::<Int64Array>("watermark")?;
        let ended = table.column::<BooleanArray>("ended")?;
        let now = Instant::now();
        let mut emitted = NO_WATERMARK;
        for i in 0..table.num_rows() {
            self.splits.insert(
                splits.value(i),
                SplitState {
                    watermark: marks.value(i),
                    last_active: now,
                    ended: ended.value(i),
                },
            );
            if !ended.value(i) {
                emitted = if emitted == NO_WATERMARK {
                    marks.value(i)
                } else {
                    emitted.min(marks.value(i))
                };
            }
        }
        self.emitted_time = emitted;
        Ok(())
    }

    /// How often idleness must be re-checked while nothing arrives.
    pub(crate) fn idle_check(&self) -> Option<Duration> {
        self.spec.as_ref().and_then(|s| s.idle_timeout)
    }
}
