//! Window Top-N, as Flink's `WindowRankOperator`: the rows of each window
//! (the partition holds `window_end`) are kept until the watermark closes
//! it, then its top N of each partition are emitted once, with their
//! ranks (`ROW_NUMBER`, `RANK` or `DENSE_RANK`). A row whose window had
//! already closed is late: counted and sent to the late-data output.
//! Lateness is decided per row, by the row's watermark and the last one
//! the windows closed at, as the window aggregates decide it. Without a
//! `window_end` column the whole bounded input is one window: the top N
//! is emitted at its end, as a batch query would give it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{BooleanArray, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::OwnedRow;

use super::{Codec, Emitted, RankFunction, RankMode, Ranking};
use crate::changelog::RowKind;
use crate::error::{EngineError, Result};
use crate::message::{Millis, FINAL_WATERMARK, NO_WATERMARK};
use crate::operator::{OperatorContext, StateSize};
use crate::row_watermark::{row_watermarks, strip};
use crate::state::{StateSnapshot, StateTable};
use crate::window::{timestamps_millis, WATERMARK_TABLE};

const SEQUENCE: &str = "_weir_sequence";

/// The rows of open windows: their arrival, then the input's columns.
static WINDOW_ROWS: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("window_rows", [(SEQUENCE, DataType::UInt64)]));

/// One partition of one window: rows by (sort key, arrival).
type Ranked = BTreeMap<(OwnedRow, u64), OwnedRow>;

pub struct WindowTopN {
    codec: Arc<Codec>,
    window_end: Option<usize>,
    /// Open windows by end, then partition.
    windows: BTreeMap<Millis, HashMap<OwnedRow, Ranked>>,
    /// The watermark the windows last closed at.
    fired: Millis,
    next: u64,
    kept: usize,
    bytes: usize,
}

impl WindowTopN {
    pub(crate) fn new(codec: Arc<Codec>) -> Result<Self> {
        let RankMode::Window { window_end } = codec.spec.mode else {
            return Err(EngineError::Graph("not a window top N".into()));
        };
        Ok(WindowTopN {
            codec,
            window_end,
            windows: BTreeMap::new(),
            fired: NO_WATERMARK,
            next: 0,
            kept: 0,
            bytes: 0,
        })
    }

    /// The arrival part of a row's place, reversed when the later of two
    /// equal rows wins (its own inverse).
    fn arrival(&self, sequence: u64) -> u64 {
        if self.codec.spec.later_wins {
            u64::MAX - sequence
        } else {
            sequence
        }
    }

    /// Each row's window end: its column's, or the end of input.
    fn ends(&self, data: &RecordBatch) -> Result<datafusion::arrow::array::Int64Array> {
        match self.window_end {
            Some(column) => timestamps_millis(data.column(column).as_ref()),
            None => Ok(datafusion::arrow::array::Int64Array::from_value(
                FINAL_WATERMARK,
                data.num_rows(),
            )),
        }
    }

    fn keep(&mut self, end: Millis, key: OwnedRow, place: (OwnedRow, u64), row: OwnedRow) {
        self.kept += 1;
        self.bytes += place.0.as_ref().len() + row.as_ref().len();
        let ranked = self.windows.entry(end).or_default().entry(key).or_default();
        ranked.insert(place, row);
        // ROW_NUMBER: rows below the top N never rise again.
        if self.codec.spec.function == RankFunction::RowNumber {
            while ranked.len() > self.codec.spec.limit {
                if let Some((place, row)) = ranked.pop_last() {
                    self.kept -= 1;
                    self.bytes -= place.0.as_ref().len() + row.as_ref().len();
                }
            }
        }
    }

    /// `ranked`'s rows with ranks up to the limit.
    fn top(&self, ranked: &Ranked, out: &mut Emitted) {
        let limit = self.codec.spec.limit as u64;
        let (mut rank, mut dense) = (0u64, 0u64);
        let mut previous: Option<&OwnedRow> = None;
        for (i, ((sort, _), row)) in ranked.iter().enumerate() {
            let tie = previous.is_some_and(|p| p == sort);
            match self.codec.spec.function {
                RankFunction::RowNumber => rank = i as u64 + 1,
                RankFunction::Rank if !tie => rank = i as u64 + 1,
                RankFunction::DenseRank if !tie => {
                    dense += 1;
                    rank = dense;
                }
                _ => {}
            }
            if rank > limit {
                break;
            }
            out.push(RowKind::Insert, row, rank);
            previous = Some(sort);
        }
    }
}

impl Ranking for WindowTopN {
    fn on_batch(&mut self, batch: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<Emitted> {
        let data = strip(batch);
        let ends = self.ends(&data)?;
        let watermarks = row_watermarks(batch).ok().cloned();
        let late: Vec<bool> = (0..data.num_rows())
            .map(|i| {
                let row_watermark = watermarks.as_ref().map_or(NO_WATERMARK, |w| w.value(i));
                ends.value(i) - 1 <= row_watermark.max(self.fired) && self.window_end.is_some()
            })
            .collect();
        if late.contains(&true) {
            ctx.emit_late(filter_record_batch(
                batch,
                &BooleanArray::from(late.clone()),
            )?);
        }
        let encoded = self.codec.encode(&data)?;
        for (i, late) in late.iter().enumerate() {
            if *late {
                continue;
            }
            let place = (encoded.sorts.row(i).owned(), self.arrival(self.next));
            self.next += 1;
            let key = encoded.partitions.row(i).owned();
            self.keep(ends.value(i), key, place, encoded.rows.row(i).owned());
        }
        Ok(Emitted::default())
    }

    /// Windows whose last millisecond the watermark reached close.
    fn on_watermark(&mut self, watermark: Millis) -> Result<Emitted> {
        self.fired = self.fired.max(watermark);
        let mut out = Emitted::default();
        while let Some(entry) = self.windows.first_entry() {
            if entry.key().saturating_sub(1) > watermark {
                break;
            }
            let partitions = entry.remove();
            for ranked in partitions.values() {
                self.top(ranked, &mut out);
                self.kept -= ranked.len();
                self.bytes -= ranked
                    .iter()
                    .map(|((sort, _), row)| sort.as_ref().len() + row.as_ref().len())
                    .sum::<usize>();
            }
        }
        Ok(out)
    }

    fn snapshot(&self) -> Result<StateSnapshot> {
        let mut sequences = Vec::with_capacity(self.kept);
        let mut rows = Vec::with_capacity(self.kept);
        for ranked in self.windows.values().flat_map(HashMap::values) {
            for ((_, arrival), row) in ranked {
                sequences.push(self.arrival(*arrival));
                rows.push(row);
            }
        }
        let columns = self.codec.decode(&rows)?;
        let extra = self
            .codec
            .spec
            .input
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .zip(columns)
            .collect();
        let table = WINDOW_ROWS.write_with(vec![Arc::new(UInt64Array::from(sequences))], extra)?;
        let fired = WATERMARK_TABLE.write(vec![Arc::new(
            datafusion::arrow::array::Int64Array::from(vec![self.fired]),
        )])?;
        Ok(StateSnapshot {
            tables: vec![table, fired],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        if let Some(fired) = WATERMARK_TABLE.read(&state)? {
            self.fired = fired
                .first::<datafusion::arrow::datatypes::Int64Type>("watermark")?
                .unwrap_or(NO_WATERMARK);
        }
        let Some(table) = WINDOW_ROWS.read(&state)? else {
            return Ok(());
        };
        let sequences = table.column::<UInt64Array>(SEQUENCE)?.clone();
        let options = RecordBatchOptions::new().with_row_count(Some(table.num_rows()));
        let data = RecordBatch::try_new_with_options(
            self.codec.spec.input.clone(),
            table.extra().to_vec(),
            &options,
        )?;
        let ends = self.ends(&data)?;
        let encoded = self.codec.encode(&data)?;
        for i in 0..data.num_rows() {
            let sequence = sequences.value(i);
            self.next = self.next.max(sequence + 1);
            let place = (encoded.sorts.row(i).owned(), self.arrival(sequence));
            let key = encoded.partitions.row(i).owned();
            self.keep(ends.value(i), key, place, encoded.rows.row(i).owned());
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: self.kept as u64,
            bytes: self.bytes as u64,
            sides: None,
        }
    }
}
