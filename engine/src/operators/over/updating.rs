//! OVER aggregates over a changelog, or ordered by a column that is not a
//! time attribute: every row of a partition is kept in `ORDER BY` order
//! (ties by arrival). A row inserted is emitted (`+I`) with its frame's
//! values; a row retracted is deleted (`-D`) with the values it was
//! emitted with; either way the rows whose frames it was in are computed
//! again, and those whose values changed are updated (`-U`, `+U`). So the
//! result is always what a batch query over the current rows gives.
//!
//! A frame is computed from its rows with fresh accumulators: `ROWS n
//! PRECEDING` costs `n + 1` rows for each of the `n + 1` rows a change
//! touches; an unbounded frame costs the partition's rows after the change.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Int64Array, UInt64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::OwnedRow;
use datafusion::common::ScalarValue;

use super::in_order::{batch_of, input_fields};
use super::{expired, Aggregates, Codec, Emitted, Over, OverMode, Preceding};
use crate::changelog::{kinds_of, without_kinds, RowKind};
use crate::error::Result;
use crate::message::{now_millis, Millis};
use crate::operator::{OperatorContext, StateSize};
use crate::row_watermark::strip;
use crate::state::{StateSnapshot, StateTable};

const SEQUENCE: &str = "_weir_sequence";
const TOUCHED: &str = "_weir_touched";

/// Every row kept: its arrival, when its partition was last touched, then
/// the input's columns.
static OVER_UPDATING_ROWS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "over_updating_rows",
        [(SEQUENCE, DataType::UInt64), (TOUCHED, DataType::Int64)],
    )
});

/// Where a row sorts: its sort key, then its arrival.
type Place = (OwnedRow, u64);

struct Entry {
    row: OwnedRow,
    /// The values last emitted with the row; `None` before the first.
    values: Option<Vec<ScalarValue>>,
}

#[derive(Default)]
struct Partition {
    rows: BTreeMap<Place, Entry>,
    touched: Millis,
}

pub(crate) struct UpdatingOver {
    codec: Arc<Codec>,
    emit_before: bool,
    partitions: HashMap<OwnedRow, Partition>,
    next: u64,
    kept: usize,
    bytes: usize,
}

impl UpdatingOver {
    pub fn new(codec: Arc<Codec>) -> Self {
        let emit_before = matches!(codec.spec.mode, OverMode::Updating { emit_before: true });
        UpdatingOver {
            codec,
            emit_before,
            partitions: HashMap::new(),
            next: 0,
            kept: 0,
            bytes: 0,
        }
    }

    fn insert(&mut self, key: &OwnedRow, place: Place, row: OwnedRow, now: Millis) {
        self.kept += 1;
        self.bytes += place.0.as_ref().len() + row.as_ref().len();
        let partition = self.partitions.entry(key.clone()).or_default();
        partition.touched = now;
        partition.rows.insert(place, Entry { row, values: None });
    }

    /// Takes out the first kept row equal to `row` with `sort` key: where
    /// it was, and the values it was emitted with.
    fn remove(
        &mut self,
        key: &OwnedRow,
        sort: &OwnedRow,
        row: &OwnedRow,
        now: Millis,
    ) -> Option<(Place, Entry)> {
        let partition = self.partitions.get_mut(key)?;
        partition.touched = now;
        let place = partition
            .rows
            .range((sort.clone(), 0)..=(sort.clone(), u64::MAX))
            .find(|(_, e)| e.row == *row)
            .map(|(place, _)| place.clone())?;
        let entry = partition.rows.remove(&place)?;
        self.kept -= 1;
        self.bytes -= place.0.as_ref().len() + entry.row.as_ref().len();
        Some((place, entry))
    }

    /// The places whose frames hold a row at `from` (itself, if kept):
    /// the `n` rows after it for `ROWS n`; every row after it for an
    /// unbounded frame, and for `RANGE` its peers before it too.
    fn touched_by(&self, partition: &Partition, from: &Place) -> Vec<Place> {
        let spec = &self.codec.spec;
        let start = if spec.rows {
            from.clone()
        } else {
            (from.0.clone(), 0)
        };
        let after = partition.rows.range(start..).map(|(p, _)| p.clone());
        match spec.preceding {
            Preceding::Rows(n) => {
                let kept = usize::from(partition.rows.contains_key(from));
                after.take(n as usize + kept).collect()
            }
            _ => after.collect(),
        }
    }

    /// The rows of the frame of the row at `place`.
    fn frame<'a>(&self, partition: &'a Partition, place: &Place) -> Vec<&'a OwnedRow> {
        let spec = &self.codec.spec;
        let end = if spec.rows {
            Bound::Included(place.clone())
        } else {
            Bound::Included((place.0.clone(), u64::MAX))
        };
        let upto = partition.rows.range((Bound::Unbounded, end));
        match spec.preceding {
            Preceding::Rows(n) => {
                let mut rows: Vec<&OwnedRow> = upto
                    .rev()
                    .take(n as usize + 1)
                    .map(|(_, e)| &e.row)
                    .collect();
                rows.reverse();
                rows
            }
            _ => upto.map(|(_, e)| &e.row).collect(),
        }
    }

    /// Computes the frames of `places` again, emitting what changed.
    fn recompute(&mut self, key: &OwnedRow, places: Vec<Place>, out: &mut Emitted) -> Result<()> {
        let spec = self.codec.spec.clone();
        let mut computed = Vec::with_capacity(places.len());
        if let Some(partition) = self.partitions.get(key) {
            for place in places {
                let frame = self.frame(partition, &place);
                let mut aggregates = Aggregates::new(&spec, false)?;
                aggregates.update(&spec, &self.codec.decode(frame)?, false)?;
                computed.push((place, aggregates.values()?));
            }
        }
        let Some(partition) = self.partitions.get_mut(key) else {
            return Ok(());
        };
        for (place, values) in computed {
            let Some(entry) = partition.rows.get_mut(&place) else {
                continue;
            };
            match entry.values.take() {
                None => out.push(RowKind::Insert, &entry.row, values.clone()),
                Some(old) if old == values => {}
                Some(old) => {
                    if self.emit_before {
                        out.push(RowKind::UpdateBefore, &entry.row, old);
                    }
                    out.push(RowKind::UpdateAfter, &entry.row, values.clone());
                }
            }
            entry.values = Some(values);
        }
        Ok(())
    }
}

impl Over for UpdatingOver {
    fn on_batch(&mut self, batch: &RecordBatch, _ctx: &mut OperatorContext<'_>) -> Result<Emitted> {
        let kinds = kinds_of(batch)?;
        let data = without_kinds(&strip(batch));
        let encoded = self.codec.encode(&data)?;
        let now = now_millis();
        let mut out = Emitted::default();
        for (i, kind) in kinds.iter().enumerate() {
            let key = encoded.partitions.row(i).owned();
            let sort = encoded.sorts.row(i).owned();
            let row = encoded.rows.row(i).owned();
            let from = if kind.is_accumulate() {
                let place = (sort, self.next);
                self.next += 1;
                self.insert(&key, place.clone(), row, now);
                place
            } else {
                let Some((place, entry)) = self.remove(&key, &sort, &row, now) else {
                    continue;
                };
                if let Some(values) = entry.values {
                    out.push(RowKind::Delete, &entry.row, values);
                }
                place
            };
            let places = self
                .partitions
                .get(&key)
                .map(|p| self.touched_by(p, &from))
                .unwrap_or_default();
            self.recompute(&key, places, &mut out)?;
            if self.partitions.get(&key).is_some_and(|p| p.rows.is_empty()) {
                self.partitions.remove(&key);
            }
        }
        Ok(out)
    }

    fn on_timer(&mut self, now: Millis) {
        let ttl = self.codec.spec.ttl;
        let (mut kept, mut bytes) = (self.kept, self.bytes);
        self.partitions.retain(|_, p| {
            let live = !expired(ttl, p.touched, now);
            if !live {
                kept -= p.rows.len();
                bytes -= p
                    .rows
                    .iter()
                    .map(|(place, e)| place.0.as_ref().len() + e.row.as_ref().len())
                    .sum::<usize>();
            }
            live
        });
        (self.kept, self.bytes) = (kept, bytes);
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let (mut sequences, mut touched, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        for partition in self.partitions.values() {
            for (place, entry) in &partition.rows {
                sequences.push(place.1);
                touched.push(partition.touched);
                rows.push(&entry.row);
            }
        }
        let data = self.codec.decode(rows)?;
        let extra = input_fields(&self.codec, &data);
        let table = OVER_UPDATING_ROWS.write_with(
            vec![
                Arc::new(UInt64Array::from(sequences)),
                Arc::new(Int64Array::from(touched)),
            ],
            extra,
        )?;
        Ok(StateSnapshot {
            tables: vec![table],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Some(table) = OVER_UPDATING_ROWS.read(&state)? else {
            return Ok(());
        };
        let sequences = table.column::<UInt64Array>(SEQUENCE)?.clone();
        let touched = table.column::<Int64Array>(TOUCHED)?.clone();
        let data = batch_of(&self.codec.spec.input, table.extra(), table.num_rows())?;
        let encoded = self.codec.encode(&data)?;
        for i in 0..data.num_rows() {
            let sequence = sequences.value(i);
            self.next = self.next.max(sequence + 1);
            let key = encoded.partitions.row(i).owned();
            let place = (encoded.sorts.row(i).owned(), sequence);
            self.insert(&key, place, encoded.rows.row(i).owned(), touched.value(i));
        }
        // The values each row was emitted with are its frame's now.
        let keys: Vec<OwnedRow> = self.partitions.keys().cloned().collect();
        for key in keys {
            let places: Vec<Place> = self.partitions[&key].rows.keys().cloned().collect();
            self.recompute(&key, places, &mut Emitted::default())?;
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
