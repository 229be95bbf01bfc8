//! Early and late firing of window aggregates: Flink's
//! `table.exec.emit.early-fire.*`, `table.exec.emit.late-fire.*` and
//! `table.exec.emit.allow-lateness`.
//!
//! A window that fires more than once emits a changelog, as Flink's
//! `AggregateWindowOperator` does with `produceUpdates`: its first result
//! per key is `+I`; a later firing emits, for each key whose values
//! changed, the old row as `-U` and the new one as `+U`, and nothing for a
//! key whose values did not change. So applying the changelog gives, at
//! every step, the window's result so far, and at the end the same rows as
//! a window that fires once.
//!
//! [`Updates`] keeps what each window last emitted and which windows took
//! rows since; the window operator decides *when* to fire.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::changelog::{kind_array, RowKind};
use crate::error::Result;
use crate::message::Millis;
use crate::state::{StateSnapshot, StateTable};

/// When a window aggregate emits besides the watermark passing its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd)]
pub struct EmitStrategy {
    /// Emit a window's result so far before it closes: `Some(0)` after
    /// every input batch, `Some(d)` every `d` ms of processing time.
    pub early_fire: Option<Millis>,
    /// How a closed window's updates from rows within the allowed lateness
    /// are emitted: `Some(d)` every `d` ms of processing time; `None` or
    /// `Some(0)` after every input batch.
    pub late_fire: Option<Millis>,
    /// How long (event time) after its end a window still takes rows.
    pub allow_lateness: Millis,
}

impl EmitStrategy {
    /// Whether a window can fire more than once, so its output is a
    /// changelog.
    pub fn produces_updates(&self) -> bool {
        self.early_fire.is_some() || self.allow_lateness > 0
    }

    /// The processing-time period of the firings that follow the clock.
    pub fn timer_period(&self) -> Option<Millis> {
        let late = self.late_fire.filter(|_| self.allow_lateness > 0);
        [self.early_fire, late]
            .into_iter()
            .flatten()
            .filter(|d| *d > 0)
            .min()
    }

    /// For EXPLAIN: `early every 1s, late at once within 1min`.
    pub fn describe(&self) -> String {
        let every = |delay: Option<Millis>| match delay {
            Some(d) if d > 0 => format!("every {}", super::fmt_ms(d)),
            _ => "at once".to_string(),
        };
        let mut parts = Vec::new();
        if self.early_fire.is_some() {
            parts.push(format!("early {}", every(self.early_fire)));
        }
        if self.allow_lateness > 0 {
            parts.push(format!(
                "late {} within {}",
                every(self.late_fire),
                super::fmt_ms(self.allow_lateness)
            ));
        }
        parts.join(", ")
    }
}

/// Which firings a call makes: before or after a window's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Early,
    Late,
}

const END: &str = "_weir_window_end";

/// What each window last emitted: its end, then the key and value columns.
static EMITTED: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("emitted", [(END, DataType::Int64)]));

/// A window's result: the group keys and the aggregate values.
pub(crate) struct WindowResult {
    pub keys: Vec<ArrayRef>,
    pub values: Vec<ArrayRef>,
}

impl WindowResult {
    fn columns(&self) -> Vec<ArrayRef> {
        self.keys.iter().chain(&self.values).cloned().collect()
    }

    pub fn rows(&self) -> usize {
        self.keys
            .first()
            .or(self.values.first())
            .map_or(1, |a| a.len())
    }
}

/// The rows a firing emits: from the previous result (`-U`) and from the
/// new one (`+I` or `+U`).
pub(crate) struct Changes {
    pub before: Option<WindowResult>,
    pub after: WindowResult,
    pub after_kinds: Vec<RowKind>,
}

impl Changes {
    /// The kinds of every row: the `before` rows (`-U`) first.
    pub fn kinds(&self) -> ArrayRef {
        let before = self.before.as_ref().map_or(0, |b| b.rows());
        let mut kinds = vec![RowKind::UpdateBefore; before];
        kinds.extend(&self.after_kinds);
        kind_array(&kinds)
    }
}

/// The emitted results and the windows that changed since.
pub(crate) struct Updates {
    pub strategy: EmitStrategy,
    key_count: usize,
    emitted: BTreeMap<Millis, Vec<ArrayRef>>,
    /// Windows that took rows since they last fired.
    pub dirty: BTreeSet<Millis>,
    /// When the periodic early and late firings are next due.
    next_fire: [Millis; 2],
}

impl Updates {
    pub fn new(strategy: EmitStrategy, key_count: usize) -> Self {
        Updates {
            strategy,
            key_count,
            emitted: BTreeMap::new(),
            dirty: BTreeSet::new(),
            next_fire: [Millis::MIN; 2],
        }
    }

    /// Whether rows in `phase` fire after the batch that brought them.
    pub fn fires_at_once(&self, phase: Phase) -> bool {
        match phase {
            Phase::Early => self.strategy.early_fire == Some(0),
            Phase::Late => self.strategy.late_fire.unwrap_or(0) == 0,
        }
    }

    /// Whether the periodic firing of `phase` is due at `now`; if so, the
    /// next one is a period later.
    pub fn periodic_due(&mut self, phase: Phase, now: Millis) -> bool {
        let delay = match phase {
            Phase::Early => self.strategy.early_fire,
            Phase::Late => self.strategy.late_fire,
        };
        let Some(delay) = delay.filter(|d| *d > 0) else {
            return false;
        };
        let next = &mut self.next_fire[phase as usize];
        if *next == Millis::MIN {
            // The first period starts with the first tick, as Flink's
            // trigger starts with the first row.
            *next = now + delay;
            return false;
        }
        if now < *next {
            return false;
        }
        *next = now + delay;
        true
    }

    /// The changes from what the window ending at `end` last emitted to
    /// `result`, remembering `result`; `None` when nothing changed.
    pub fn changes(&mut self, end: Millis, result: WindowResult) -> Result<Option<Changes>> {
        self.dirty.remove(&end);
        let Some(previous) = self.emitted.get(&end) else {
            self.emitted.insert(end, result.columns());
            let after_kinds = vec![RowKind::Insert; result.rows()];
            return Ok(Some(Changes {
                before: None,
                after: result,
                after_kinds,
            }));
        };
        let columns = result.columns();
        let (before, after, kinds) = diff(previous, &columns, self.key_count)?;
        if after.is_empty() {
            return Ok(None);
        }
        let pick = |source: &[ArrayRef], rows: Vec<u32>| -> Result<WindowResult> {
            let rows = UInt32Array::from(rows);
            let taken = source
                .iter()
                .map(|c| take(c.as_ref(), &rows, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let values = taken[self.key_count..].to_vec();
            let mut keys = taken;
            keys.truncate(self.key_count);
            Ok(WindowResult { keys, values })
        };
        let changes = Changes {
            before: Some(pick(previous, before)?),
            after: pick(&columns, after)?,
            after_kinds: kinds,
        };
        self.emitted.insert(end, columns);
        Ok(Some(changes))
    }

    /// Forgets the windows ending at or before `end` (closed for good).
    pub fn forget_until(&mut self, end: Millis) {
        self.emitted.retain(|e, _| *e > end);
        self.dirty.retain(|e| *e > end);
    }

    pub fn snapshot(&self) -> Result<Option<(String, RecordBatch)>> {
        let Some(first) = self.emitted.values().next() else {
            return Ok(None);
        };
        let types: Vec<DataType> = first.iter().map(|c| c.data_type().clone()).collect();
        let mut ends = Vec::new();
        let mut columns: Vec<Vec<&dyn Array>> = vec![Vec::new(); types.len()];
        for (end, result) in &self.emitted {
            let rows = result.first().map_or(1, |c| c.len());
            ends.extend(std::iter::repeat_n(*end, rows));
            for (i, c) in result.iter().enumerate() {
                columns[i].push(c.as_ref());
            }
        }
        let mut extra = Vec::with_capacity(types.len());
        for (i, (parts, data_type)) in columns.iter().zip(types).enumerate() {
            extra.push((Field::new(format!("c{i}"), data_type, true), concat(parts)?));
        }
        let ends: ArrayRef = Arc::new(Int64Array::from(ends));
        EMITTED.write_with(vec![ends], extra).map(Some)
    }

    pub fn restore(&mut self, state: &StateSnapshot) -> Result<()> {
        let Some(table) = EMITTED.read(state)? else {
            return Ok(());
        };
        let ends = table.column::<Int64Array>(END)?;
        let extra = table.extra();
        let mut from = 0;
        while from < ends.len() {
            let end = ends.value(from);
            let mut to = from + 1;
            while to < ends.len() && ends.value(to) == end {
                to += 1;
            }
            let columns = extra.iter().map(|c| c.slice(from, to - from)).collect();
            self.emitted.insert(end, columns);
            from = to;
        }
        Ok(())
    }

    pub fn size(&self) -> usize {
        self.emitted
            .values()
            .flatten()
            .map(|c| c.get_array_memory_size())
            .sum()
    }
}

/// Rows of `previous` to retract, rows of `current` to emit and their
/// kinds: a key new to the window is `+I`, a key whose values changed is
/// `-U` (old row) and `+U` (new row); unchanged keys emit nothing. Results
/// only gain keys (a window's accumulators only take rows).
fn diff(
    previous: &[ArrayRef],
    current: &[ArrayRef],
    key_count: usize,
) -> Result<(Vec<u32>, Vec<u32>, Vec<RowKind>)> {
    let converter = |columns: &[ArrayRef]| -> Result<RowConverter> {
        let fields = columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        Ok(RowConverter::new(fields)?)
    };
    let rows_of = |columns: &[ArrayRef], rows: usize| -> Vec<ArrayRef> {
        if columns.is_empty() {
            // No keys: the window's one group.
            vec![Arc::new(Int64Array::from(vec![0i64; rows])) as ArrayRef]
        } else {
            columns.to_vec()
        }
    };
    let previous_rows = previous.first().map_or(1, |c| c.len());
    let current_rows = current.first().map_or(1, |c| c.len());
    let key_columns = rows_of(&current[..key_count], current_rows);
    let keys = converter(&key_columns)?;
    let old_keys = keys.convert_columns(&rows_of(&previous[..key_count], previous_rows))?;
    let new_keys = keys.convert_columns(&key_columns)?;
    let (old_values, new_values) = if current.len() > key_count {
        let values = converter(&current[key_count..])?;
        (
            Some(values.convert_columns(&previous[key_count..])?),
            Some(values.convert_columns(&current[key_count..])?),
        )
    } else {
        (None, None)
    };
    let old: HashMap<_, usize> = old_keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let (mut before, mut after, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
    for (i, key) in new_keys.iter().enumerate() {
        match old.get(&key) {
            None => {
                after.push(i as u32);
                kinds.push(RowKind::Insert);
            }
            Some(&j) => {
                let same = match (&old_values, &new_values) {
                    (Some(o), Some(n)) => o.row(j) == n.row(i),
                    _ => true,
                };
                if !same {
                    before.push(j as u32);
                    after.push(i as u32);
                    kinds.push(RowKind::UpdateAfter);
                }
            }
        }
    }
    Ok((before, after, kinds))
}
