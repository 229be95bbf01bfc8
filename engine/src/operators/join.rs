//! A regular inner join of two append-only streams on equality keys, as
//! Flink's `StreamingJoinOperator` runs it for inputs without updates, and
//! the inner window join (both sides windowed alike, joined on the window).
//!
//! Each side keeps its rows by join key. A row arriving on one side is
//! stored, then matched against the rows the other side has stored: every
//! pair that also passes the residual condition is emitted at once. Inner
//! joins of append-only inputs only ever insert, so the output is
//! append-only too. A row with a NULL key never matches (SQL equality) and
//! is not kept. With a state TTL a stored row is dropped when it has been
//! kept that long (processing time, as Flink's state TTL); without one,
//! both inputs must be bounded.
//!
//! In a window join each row belongs to one window, and the window's end
//! is among the keys: once the watermark passes a window's end, no row of
//! it can arrive on either side, so its rows are dropped then, and a row
//! that arrives after its window's end is late (counted, as Flink's
//! `WindowJoinOperator` drops it).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::changelog::without_kinds;
use crate::error::{EngineError, Result};
use crate::message::{hold_back, now_millis, Millis};
use crate::operator::{Operator, OperatorContext, SideState, StateSize};
use crate::operators::predicate_mask;
use crate::row_watermark::{attach_constant, strip};
use crate::state::{StateSnapshot, StateTable};

const TOUCHED: &str = "_weir_stored_at";
const WINDOW_END: &str = "_weir_window_end";
const MATCHES: &str = "_weir_matches";

/// The rows one side keeps: when each was stored and the end of its window
/// (the largest time for a regular join), then the side's columns.
static LEFT_ROWS: LazyLock<StateTable> = LazyLock::new(|| side_table("left"));
static RIGHT_ROWS: LazyLock<StateTable> = LazyLock::new(|| side_table("right"));

fn side_table(name: &'static str) -> StateTable {
    StateTable::new(
        name,
        [
            (TOUCHED, DataType::Int64),
            (WINDOW_END, DataType::Int64),
            (MATCHES, DataType::Int64),
        ],
    )
}

/// Which rows a join emits. Outer, semi and anti joins are window joins:
/// whether a row found a match is known when its window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    /// The left rows with a match (`IN`, `EXISTS`), each once.
    LeftSemi,
    /// The left rows without a match (`NOT IN`, `NOT EXISTS`).
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl std::fmt::Display for JoinKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinKind::Inner => "inner",
            JoinKind::Left => "left",
            JoinKind::Right => "right",
            JoinKind::Full => "full",
            JoinKind::LeftSemi => "left semi",
            JoinKind::LeftAnti => "left anti",
            JoinKind::RightSemi => "right semi",
            JoinKind::RightAnti => "right anti",
        })
    }
}

/// What a closing window emits of one side's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The rows that never matched, with NULLs for the other side.
    Pad,
    /// The rows that matched, alone.
    Matched,
    /// The rows that never matched, alone.
    Unmatched,
}

impl JoinKind {
    /// Whether `side`'s rows are kept when they match nothing, padded
    /// with NULLs for the other side.
    pub fn is_outer(self, side: usize) -> bool {
        self.at_close(side) == Some(Closing::Pad)
    }

    /// Whether matching pairs are emitted as they are found.
    pub fn emits_pairs(self) -> bool {
        matches!(
            self,
            JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
        )
    }

    fn at_close(self, side: usize) -> Option<Closing> {
        match (self, side) {
            (JoinKind::Left | JoinKind::Full, 0) | (JoinKind::Right | JoinKind::Full, 1) => {
                Some(Closing::Pad)
            }
            (JoinKind::LeftSemi, 0) | (JoinKind::RightSemi, 1) => Some(Closing::Matched),
            (JoinKind::LeftAnti, 0) | (JoinKind::RightAnti, 1) => Some(Closing::Unmatched),
            _ => None,
        }
    }
}

/// What a join needs to know of its inputs and output.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// Join keys of each side, evaluated on that side's rows.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Each side's columns, without the row watermark.
    pub schemas: [SchemaRef; 2],
    /// A pair of rows: the left columns, then the right ones.
    pub pairs: SchemaRef,
    /// What the join emits: `pairs`, or one side's columns (semi, anti).
    pub output: SchemaRef,
    /// A condition on the pair besides key equality.
    pub residual: Option<Arc<dyn PhysicalExpr>>,
    pub kind: JoinKind,
    /// How long each side keeps a stored row; `None` keeps rows until the
    /// end (Flink's `STATE_TTL` hint sets a side's own).
    pub ttl: [Option<Duration>; 2],
    /// For a window join, the `window_end` column of each side.
    pub window_end: Option<[usize; 2]>,
    /// For an interval join, each side's time and the bounds between them.
    pub interval: Option<IntervalBounds>,
    /// A regular join whose output is a changelog: an outer join (its
    /// padded rows are retracted when a match arrives), or one of inputs
    /// that retract rows ([`super::join_changelog`]).
    pub changelog: bool,
    /// A regular outer, semi or anti join of bounded inputs: rows are kept
    /// to the end of input, then padded or picked as a window join's are
    /// when their window closes.
    pub decide_at_end: bool,
}

/// An interval join's time condition: `left time - right time` lies in
/// `[lower, upper]` (ms), with each side's time attribute column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalBounds {
    pub time: [usize; 2],
    pub lower: Millis,
    pub upper: Millis,
}

impl IntervalBounds {
    /// The watermark past which a row of `side` at `time` can meet no row
    /// the other side sends later (those are not before the watermark).
    fn expiry(&self, side: usize, time: Millis) -> Millis {
        match side {
            0 => time.saturating_sub(self.lower).saturating_add(1),
            _ => time.saturating_add(self.upper).saturating_add(1),
        }
    }
}

/// The rows one side has stored, by join key.
pub(super) struct Side {
    /// Whole rows in Arrow's row format, to store exactly what is kept.
    pub(super) rows: RowConverter,
    /// Join keys in Arrow's row format, comparable across both sides.
    pub(super) keys: RowConverter,
    pub(super) by_key: HashMap<OwnedRow, Vec<Stored>>,
    /// Rows with a NULL key: they match nothing, but an outer or anti
    /// window join still emits them when their window closes.
    pub(super) unkeyed: Vec<Stored>,
    stored: usize,
    bytes: usize,
    /// The smallest `window_end` kept: a watermark before it closes
    /// nothing, so it needs no pass over the rows.
    earliest_end: Millis,
}

pub(super) struct Stored {
    pub(super) row: OwnedRow,
    at: Millis,
    window_end: Millis,
    /// How many rows of the other side it meets (outer, semi and anti
    /// joins: whether it met one; a changelog join: when it meets none).
    pub(super) matches: Cell<u32>,
}

impl Stored {
    /// A row of a regular join, stored at `at`, meeting `matches` rows.
    pub(super) fn regular(row: OwnedRow, at: Millis, matches: u32) -> Stored {
        Stored {
            row,
            at,
            window_end: Millis::MAX,
            matches: Cell::new(matches),
        }
    }

    fn matched(&self) -> bool {
        self.matches.get() > 0
    }
}

impl Side {
    fn new(schema: &SchemaRef, key_types: &[DataType]) -> Result<Side> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let keys = key_types.iter().cloned().map(SortField::new).collect();
        Ok(Side {
            rows: RowConverter::new(fields)?,
            keys: RowConverter::new(keys)?,
            by_key: HashMap::new(),
            unkeyed: Vec::new(),
            stored: 0,
            bytes: 0,
            earliest_end: Millis::MAX,
        })
    }

    /// Every stored row, keyed or not.
    fn all(&self) -> impl Iterator<Item = &Stored> {
        self.by_key.values().flatten().chain(&self.unkeyed)
    }

    pub(super) fn store_unkeyed(&mut self, stored: Stored) {
        self.earliest_end = self.earliest_end.min(stored.window_end);
        self.stored += 1;
        self.bytes += stored.row.as_ref().len();
        self.unkeyed.push(stored);
    }

    pub(super) fn store(&mut self, key: OwnedRow, stored: Stored) {
        self.earliest_end = self.earliest_end.min(stored.window_end);
        self.stored += 1;
        self.bytes += stored.row.as_ref().len() + key.as_ref().len();
        self.by_key.entry(key).or_default().push(stored);
    }

    /// Drops the rows `gone` says are.
    fn drop_rows(&mut self, gone: impl Fn(&Stored) -> bool) {
        let (mut stored, mut bytes, mut earliest) = (0, 0, Millis::MAX);
        let mut keep = |r: &Stored, key_len: usize| {
            let kept = !gone(r);
            if kept {
                stored += 1;
                bytes += r.row.as_ref().len() + key_len;
                earliest = earliest.min(r.window_end);
            }
            kept
        };
        self.by_key.retain(|key, rows| {
            rows.retain(|r| keep(r, key.as_ref().len()));
            !rows.is_empty()
        });
        self.unkeyed.retain(|r| keep(r, 0));
        self.stored = stored;
        self.bytes = bytes;
        self.earliest_end = earliest;
    }

    /// Takes out one stored row equal to `row` (a retraction), if there
    /// is one, with the rows it matched.
    pub(super) fn remove(&mut self, key: Option<&OwnedRow>, row: &OwnedRow) -> Option<Stored> {
        let rows = match key {
            Some(key) => self.by_key.get_mut(key)?,
            None => &mut self.unkeyed,
        };
        let at = rows.iter().position(|s| &s.row == row)?;
        let stored = rows.remove(at);
        if rows.is_empty() {
            if let Some(key) = key {
                self.by_key.remove(key);
            }
        }
        self.stored -= 1;
        self.bytes = self
            .bytes
            .saturating_sub(stored.row.as_ref().len() + key.map_or(0, |k| k.as_ref().len()));
        Some(stored)
    }

    /// Every stored row as columns; when each was stored, its window's
    /// end and how many rows it matched.
    #[allow(clippy::type_complexity)]
    fn columns(&self) -> Result<(Vec<ArrayRef>, Vec<Millis>, Vec<Millis>, Vec<i64>)> {
        let stored: Vec<&Stored> = self.all().collect();
        let columns = self.rows.convert_rows(stored.iter().map(|s| s.row.row()))?;
        Ok((
            columns,
            stored.iter().map(|s| s.at).collect(),
            stored.iter().map(|s| s.window_end).collect(),
            stored.iter().map(|s| i64::from(s.matches.get())).collect(),
        ))
    }
}

pub struct StreamingJoin {
    name: String,
    pub(super) spec: Arc<JoinSpec>,
    pub(super) sides: [Side; 2],
}

impl StreamingJoin {
    pub fn new(name: impl Into<String>, spec: Arc<JoinSpec>) -> Result<Self> {
        let types = |side: usize| {
            spec.keys[side]
                .iter()
                .map(|k| Ok(k.data_type(&spec.schemas[side])?))
                .collect::<Result<Vec<_>>>()
        };
        let (key_types, right_types) = (types(0)?, types(1)?);
        if key_types != right_types {
            return Err(EngineError::Graph(format!(
                "join keys differ in type: {key_types:?} and {right_types:?}"
            )));
        }
        Ok(StreamingJoin {
            name: name.into(),
            sides: [
                Side::new(&spec.schemas[0], &key_types)?,
                Side::new(&spec.schemas[1], &key_types)?,
            ],
            spec,
        })
    }

    /// Stores the rows of `batch` (from `side`) and emits their matches.
    fn join(
        &mut self,
        side: usize,
        batch: &RecordBatch,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let rows = batch.num_rows();
        let row_watermark = self.row_watermark(ctx);
        let keys = self.side_keys(side, batch)?;
        ctx.observe_keys(&keys);
        let valid = all_valid(&keys, rows);
        let ends = self.window_ends(side, batch)?;
        // A row is late when its window closed, or its interval passed,
        // before it came. A window join drops it (Flink's
        // WindowJoinOperator); an interval join still matches it against
        // the rows it keeps (Flink's TimeIntervalJoin). Both count it and
        // send it to the late-data output.
        let late: Vec<bool> = match &ends {
            Some(ends) => ends.iter().map(|end| *end <= ctx.watermark()).collect(),
            None => vec![false; rows],
        };
        if late.contains(&true) {
            let rows_late = filter_record_batch(batch, &BooleanArray::from(late.clone()))?;
            ctx.emit_late(SideLateOutputs::tag(side, &without_kinds(&rows_late))?);
        }
        let on_time: Vec<bool> = match self.spec.window_end {
            Some(_) => late.iter().map(|l| !l).collect(),
            None => vec![true; rows],
        };
        // Rows with a NULL key match nothing; an outer or anti side keeps
        // them for its window's end.
        let keep_unkeyed = matches!(
            self.spec.kind.at_close(side),
            Some(Closing::Pad | Closing::Unmatched)
        );
        let valid: Vec<bool> = valid.iter().zip(&on_time).map(|(v, t)| *v && *t).collect();
        let data = strip(batch);
        let key_rows = self.sides[side].keys.convert_columns(&keys)?;
        let whole = self.sides[side].rows.convert_columns(data.columns())?;
        let now = now_millis();
        let [left, right] = &mut self.sides;
        let (own_side, other_side) = if side == 0 {
            (left, &*right)
        } else {
            (right, &*left)
        };
        let keys: Vec<Option<OwnedRow>> = (0..rows)
            .map(|i| valid[i].then(|| key_rows.row(i).owned()))
            .collect();
        let mut mine = Vec::new();
        let mut theirs: Vec<&Stored> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if let Some(matches) = key.as_ref().and_then(|k| other_side.by_key.get(k)) {
                for m in matches {
                    mine.push(i as u32);
                    theirs.push(m);
                }
            }
        }
        let mut matched = vec![false; rows];
        if !mine.is_empty() {
            let others = other_side
                .rows
                .convert_rows(theirs.iter().map(|m| m.row.row()))?;
            let mine_array = UInt32Array::from(mine.clone());
            let own: Vec<ArrayRef> = data
                .columns()
                .iter()
                .map(|c| Ok(take(c.as_ref(), &mine_array, None)?))
                .collect::<Result<_>>()?;
            let columns = if side == 0 {
                [own, others].concat()
            } else {
                [others, own].concat()
            };
            let options = RecordBatchOptions::new().with_row_count(Some(mine.len()));
            let pairs =
                RecordBatch::try_new_with_options(self.spec.pairs.clone(), columns, &options)?;
            let mask = match &self.spec.residual {
                Some(condition) => predicate_mask(condition, &pairs)?,
                None => BooleanArray::from(vec![true; pairs.num_rows()]),
            };
            for (p, ok) in mask.iter().enumerate() {
                if ok == Some(true) {
                    theirs[p]
                        .matches
                        .set(theirs[p].matches.get().saturating_add(1));
                    matched[mine[p] as usize] = true;
                }
            }
            if self.spec.kind.emits_pairs() {
                let joined = filter_record_batch(&pairs, &mask)?;
                if joined.num_rows() > 0 {
                    ctx.emit(attach_constant(&joined, row_watermark)?);
                }
            }
        }
        for (i, key) in keys.into_iter().enumerate() {
            if key.is_none() && !(keep_unkeyed && on_time[i]) {
                continue;
            }
            let stored = Stored {
                row: whole.row(i).owned(),
                at: now,
                window_end: ends.as_ref().map_or(Millis::MAX, |e| e[i]),
                matches: Cell::new(u32::from(matched[i])),
            };
            match key {
                Some(key) => own_side.store(key, stored),
                None => own_side.store_unkeyed(stored),
            }
        }
        Ok(())
    }

    /// Emits what the windows closing at `watermark` owe: unmatched rows of
    /// an outer side padded with NULLs, or a semi or anti join's rows.
    fn close_windows(&self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        for side in 0..2 {
            let Some(closing) = self.spec.kind.at_close(side) else {
                continue;
            };
            if self.sides[side].earliest_end > watermark {
                continue;
            }
            let wanted = |m: &Stored| {
                m.window_end <= watermark && (m.matched() == (closing == Closing::Matched))
            };
            let rows: Vec<&Stored> = self.sides[side].all().filter(|m| wanted(m)).collect();
            if rows.is_empty() {
                continue;
            }
            let own = self.sides[side]
                .rows
                .convert_rows(rows.iter().map(|m| m.row.row()))?;
            let columns = match closing {
                Closing::Pad => {
                    let nulls: Vec<ArrayRef> = self.spec.schemas[1 - side]
                        .fields()
                        .iter()
                        .map(|f| new_null_array(f.data_type(), rows.len()))
                        .collect();
                    if side == 0 {
                        [own, nulls].concat()
                    } else {
                        [nulls, own].concat()
                    }
                }
                Closing::Matched | Closing::Unmatched => own,
            };
            let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
            let batch =
                RecordBatch::try_new_with_options(self.spec.output.clone(), columns, &options)?;
            ctx.emit(attach_constant(&batch, self.row_watermark(ctx))?);
        }
        Ok(())
    }

    /// The row watermark of emitted rows: the input's, held back as the
    /// watermark after the join is ([`Operator::watermark_delay`]).
    fn row_watermark(&self, ctx: &OperatorContext<'_>) -> Millis {
        hold_back(ctx.watermark(), self.watermark_delay())
    }

    /// The join keys of `side` for each row of `batch`.
    pub(super) fn side_keys(&self, side: usize, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let rows = batch.num_rows();
        self.spec.keys[side]
            .iter()
            .map(|k| Ok(k.evaluate(batch)?.into_array(rows)?))
            .collect()
    }

    /// When each row's state ends: its window's end in a window join, the
    /// watermark past its bound in an interval join.
    fn window_ends(&self, side: usize, batch: &RecordBatch) -> Result<Option<Vec<Millis>>> {
        let millis = |column: usize| {
            crate::window::timestamps_millis(batch.column(column).as_ref())
                .map(|a| a.values().to_vec())
        };
        if let Some(columns) = self.spec.window_end {
            return Ok(Some(millis(columns[side])?));
        }
        let Some(bounds) = self.spec.interval else {
            return Ok(None);
        };
        let times = millis(bounds.time[side])?;
        Ok(Some(
            times.into_iter().map(|t| bounds.expiry(side, t)).collect(),
        ))
    }

    fn table(side: usize) -> &'static StateTable {
        if side == 0 {
            &LEFT_ROWS
        } else {
            &RIGHT_ROWS
        }
    }
}

/// The late-data output of a join: each side's late rows go to its own
/// stream's output. The join tags a late batch with its side in the
/// schema's metadata ([`SideLateOutputs::tag`]).
pub struct SideLateOutputs {
    pub outputs: [Option<Arc<dyn crate::source::DeadLetterSink>>; 2],
}

/// The schema metadata key holding a late batch's join side.
const SIDE: &str = "weir.join.side";

impl SideLateOutputs {
    /// `batch` marked as rows of `side`.
    fn tag(side: usize, batch: &RecordBatch) -> Result<RecordBatch> {
        let metadata = [(SIDE.to_string(), side.to_string())].into();
        let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
        Ok(batch.clone().with_schema(schema)?)
    }
}

#[async_trait::async_trait]
impl crate::source::DeadLetterSink for SideLateOutputs {
    async fn write_rows(&self, reason: &str, rows: &RecordBatch) -> Result<()> {
        let side = match rows.schema_ref().metadata().get(SIDE).map(String::as_str) {
            Some("1") => 1,
            _ => 0,
        };
        match &self.outputs[side] {
            Some(output) => output.write_rows(reason, rows).await,
            None => Ok(()),
        }
    }

    async fn write_records(&self, records: Vec<crate::source::BadRecord>) -> Result<()> {
        match self.outputs.iter().flatten().next() {
            Some(output) => output.write_records(records).await,
            None => Ok(()),
        }
    }
}

/// Rows whose keys are all non-null: only they can match.
pub(super) fn all_valid(keys: &[ArrayRef], rows: usize) -> Vec<bool> {
    (0..rows)
        .map(|i| keys.iter().all(|k| k.is_valid(i)))
        .collect()
}

impl Operator for StreamingJoin {
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
        if side > 1 {
            return Err(EngineError::Graph(format!(
                "a join has two inputs, not {}",
                side + 1
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.spec.changelog {
            return self.join_changes(side, &batch, ctx);
        }
        self.join(side, &batch, ctx)
    }

    fn timer_interval(&self) -> Option<Duration> {
        self.spec
            .ttl
            .iter()
            .flatten()
            .min()
            .map(|ttl| (*ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(10)))
    }

    fn on_timer(&mut self, now: Millis, _ctx: &mut OperatorContext<'_>) -> Result<()> {
        for (side, ttl) in self.sides.iter_mut().zip(self.spec.ttl) {
            if let Some(ttl) = ttl {
                let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                let before = now.saturating_sub(ttl);
                side.drop_rows(|r| r.at < before);
            }
        }
        Ok(())
    }

    /// Output rows of an interval join carry both sides' times, the older
    /// as far behind the watermark as the bound reaches.
    fn watermark_delay(&self) -> Millis {
        self.spec
            .interval
            .map_or(0, |b| b.lower.abs().max(b.upper.abs()))
    }

    /// A window closed, or rows passed their interval: they can meet no
    /// more rows.
    fn on_watermark(&mut self, watermark: Millis, ctx: &mut OperatorContext<'_>) -> Result<()> {
        let closes = self.spec.window_end.is_some()
            || self.spec.interval.is_some()
            || (self.spec.decide_at_end && watermark == crate::message::FINAL_WATERMARK);
        if closes {
            self.close_windows(watermark, ctx)?;
            for side in &mut self.sides {
                if side.earliest_end <= watermark {
                    side.drop_rows(|r| r.window_end <= watermark);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, _ctx: &mut OperatorContext<'_>) -> Result<StateSnapshot> {
        let mut tables = Vec::with_capacity(2);
        for (i, side) in self.sides.iter().enumerate() {
            let (columns, at, ends, matched) = side.columns()?;
            let extra = self.spec.schemas[i]
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .zip(columns)
                .collect();
            let fixed: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(at)),
                Arc::new(Int64Array::from(ends)),
                Arc::new(Int64Array::from(matched)),
            ];
            tables.push(Self::table(i).write_with(fixed, extra)?);
        }
        Ok(StateSnapshot { tables })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        for side in 0..2 {
            let Some(table) = Self::table(side).read(&state)? else {
                continue;
            };
            let at = table.column::<Int64Array>(TOUCHED)?.clone();
            let ends = table.column::<Int64Array>(WINDOW_END)?.clone();
            let matches = table.column::<Int64Array>(MATCHES)?.clone();
            let batch = RecordBatch::try_new_with_options(
                self.spec.schemas[side].clone(),
                table.extra().to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(table.num_rows())),
            )?;
            let rows = batch.num_rows();
            let keys = self.side_keys(side, &batch)?;
            let key_rows = self.sides[side].keys.convert_columns(&keys)?;
            let whole = self.sides[side].rows.convert_columns(batch.columns())?;
            for (i, valid) in all_valid(&keys, rows).into_iter().enumerate() {
                let stored = Stored {
                    row: whole.row(i).owned(),
                    at: at.value(i),
                    window_end: ends.value(i),
                    matches: Cell::new(u32::try_from(matches.value(i)).unwrap_or(0)),
                };
                if valid {
                    self.sides[side].store(key_rows.row(i).owned(), stored);
                } else {
                    self.sides[side].store_unkeyed(stored);
                }
            }
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        let side = |s: &Side| SideState {
            rows: s.stored as u64,
            bytes: s.bytes as u64,
        };
        StateSize {
            rows: self.sides.iter().map(|s| s.stored as u64).sum(),
            bytes: self.sides.iter().map(|s| s.bytes as u64).sum(),
            sides: Some([side(&self.sides[0]), side(&self.sides[1])]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Harness;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_expr::expressions::{col, BinaryExpr, Column};

    fn spec(residual: bool, ttl: Option<Duration>) -> Arc<JoinSpec> {
        let left = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("a", DataType::Utf8, true),
        ]));
        let right = Arc::new(Schema::new(vec![
            Field::new("k2", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]));
        let output = Arc::new(Schema::new(
            [left.fields().to_vec(), right.fields().to_vec()].concat(),
        ));
        // b > k: the right value exceeds the key.
        let residual = residual.then(|| {
            Arc::new(BinaryExpr::new(
                Arc::new(Column::new("b", 3)),
                datafusion::logical_expr::Operator::Gt,
                Arc::new(Column::new("k", 0)),
            )) as Arc<dyn PhysicalExpr>
        });
        Arc::new(JoinSpec {
            keys: [
                vec![col("k", &left).unwrap()],
                vec![col("k2", &right).unwrap()],
            ],
            schemas: [left, right],
            pairs: output.clone(),
            output,
            kind: JoinKind::Inner,
            residual,
            ttl: [ttl, ttl],
            window_end: None,
            interval: None,
            changelog: false,
            decide_at_end: false,
        })
    }

    fn left(rows: &[(Option<i64>, &str)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()) as ArrayRef,
            ),
            (
                "a",
                Arc::new(rows.iter().map(|r| Some(r.1)).collect::<StringArray>()) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn right(rows: &[(Option<i64>, i64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "k2",
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()) as ArrayRef,
            ),
            (
                "b",
                Arc::new(rows.iter().map(|r| Some(r.1)).collect::<Int64Array>()) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn each_row_meets_the_rows_the_other_side_stored_before_it() {
        let mut h = Harness::new(StreamingJoin::new("join", spec(false, None)).unwrap());
        h.batch_on(0, left(&[(Some(1), "x"), (None, "n"), (Some(2), "y")]))
            .unwrap();
        assert!(h.take_output().is_empty());
        h.batch_on(
            1,
            right(&[(Some(1), 10), (Some(1), 11), (None, 0), (Some(3), 30)]),
        )
        .unwrap();
        datafusion::assert_batches_eq!(
            [
                "+---+---+----+----+",
                "| k | a | k2 | b  |",
                "+---+---+----+----+",
                "| 1 | x | 1  | 10 |",
                "| 1 | x | 1  | 11 |",
                "+---+---+----+----+",
            ],
            &h.take_output()
        );
        // A later left row meets both stored right rows of its key, and the
        // NULL key stored nowhere.
        h.batch_on(0, left(&[(Some(1), "z"), (Some(3), "w"), (None, "m")]))
            .unwrap();
        datafusion::assert_batches_sorted_eq!(
            [
                "+---+---+----+----+",
                "| k | a | k2 | b  |",
                "+---+---+----+----+",
                "| 1 | z | 1  | 10 |",
                "| 1 | z | 1  | 11 |",
                "| 3 | w | 3  | 30 |",
                "+---+---+----+----+",
            ],
            &h.take_output()
        );
        assert_eq!(h.operator().state_size().rows, 7);
    }

    #[test]
    fn the_residual_condition_filters_pairs_and_state_survives_a_restore() {
        let join = StreamingJoin::new("join", spec(true, None)).unwrap();
        let mut h = Harness::new(join);
        h.batch_on(1, right(&[(Some(5), 4), (Some(5), 6)])).unwrap();
        let state = h.barrier().unwrap();
        let mut restored = StreamingJoin::new("join", spec(true, None)).unwrap();
        restored.restore(state).unwrap();
        let mut h = Harness::new(restored);
        h.batch_on(0, left(&[(Some(5), "p")])).unwrap();
        datafusion::assert_batches_eq!(
            [
                "+---+---+----+---+",
                "| k | a | k2 | b |",
                "+---+---+----+---+",
                "| 5 | p | 5  | 6 |",
                "+---+---+----+---+",
            ],
            &h.take_output()
        );
    }

    #[test]
    fn a_window_join_drops_closed_windows_and_sends_late_rows_out() {
        // The key is the window end.
        let spec = Arc::new(JoinSpec {
            window_end: Some([0, 0]),
            ..spec(false, None).as_ref().clone()
        });
        let mut h = Harness::new(StreamingJoin::new("join", spec).unwrap());
        h.batch_on(0, left(&[(Some(100), "a"), (Some(200), "b")]))
            .unwrap();
        h.watermark(100).unwrap();
        assert_eq!(h.operator().state_size().rows, 1);
        h.batch_on(1, right(&[(Some(100), 1), (Some(200), 2)]))
            .unwrap();
        datafusion::assert_batches_eq!(
            [
                "+-----+---+-----+---+",
                "| k   | a | k2  | b |",
                "+-----+---+-----+---+",
                "| 200 | b | 200 | 2 |",
                "+-----+---+-----+---+",
            ],
            &h.take_output()
        );
        assert_eq!(h.late_rows(), 1);
        datafusion::assert_batches_eq!(
            [
                "+-----+---+",
                "| k2  | b |",
                "+-----+---+",
                "| 100 | 1 |",
                "+-----+---+",
            ],
            &h.take_late()
        );
        h.watermark(200).unwrap();
        assert_eq!(h.operator().state_size().rows, 0);
    }

    /// A side's own TTL (Flink's STATE_TTL hint) ends only its rows.
    #[test]
    fn each_side_keeps_its_rows_for_its_own_ttl() {
        let spec = Arc::new(JoinSpec {
            ttl: [Some(Duration::from_secs(60)), None],
            ..spec(false, None).as_ref().clone()
        });
        let mut h = Harness::new(StreamingJoin::new("join", spec).unwrap());
        h.batch_on(0, left(&[(Some(1), "old")])).unwrap();
        h.batch_on(1, right(&[(Some(2), 2)])).unwrap();
        h.timer(now_millis() + 61_000).unwrap();
        assert_eq!(h.operator().state_size().rows, 1);
        h.batch_on(0, left(&[(Some(2), "new")])).unwrap();
        assert_eq!(
            h.take_output().iter().map(|b| b.num_rows()).sum::<usize>(),
            1
        );
    }

    #[test]
    fn rows_kept_longer_than_the_ttl_no_longer_match() {
        let ttl = Duration::from_secs(60);
        let mut h = Harness::new(StreamingJoin::new("join", spec(false, Some(ttl))).unwrap());
        h.batch_on(0, left(&[(Some(1), "old")])).unwrap();
        h.timer(now_millis() + 61_000).unwrap();
        assert_eq!(h.operator().state_size().rows, 0);
        h.batch_on(1, right(&[(Some(1), 1)])).unwrap();
        assert!(h.take_output().is_empty());
    }
}
