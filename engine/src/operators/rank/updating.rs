//! The updating top N of an unbounded stream, as Flink's
//! `AppendOnlyTopNFunction` (append-only input: only the top N rows of a
//! partition are kept, since a row below them can never rise again) and
//! `RetractableTopNFunction` (a changelog: every row is kept, so that a
//! retracted top row's place is taken by the next).
//!
//! Each input row changes its partition's top N; what changed is emitted
//! at once. With the rank in the output, per rank whose row changed: `+I`
//! for a new rank, `-U` (if a consumer needs it) and `+U` for a rank that
//! now holds another row, `-D` for a rank no longer filled: an upsert by
//! (partition, rank). Without it: `-D` for rows that left the top N, then
//! `+I` for those that entered; for deduplication (the top 1 by a time
//! attribute) a replaced row is an update instead (`-U`, `+U`), an upsert
//! by the partition key. Rows with equal sort keys keep their arrival
//! order (the earlier ranks first), but for deduplication keeping the
//! last row, where the later of two equal times wins.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::OwnedRow;

use super::{ttl_timer, Codec, Emitted, RankMode, Ranking};
use crate::changelog::{kinds_of, without_kinds, RowKind};
use crate::error::{EngineError, Result};
use crate::message::{now_millis, Millis};
use crate::operator::{OperatorContext, StateSize};
use crate::row_watermark::strip;
use crate::state::{StateSnapshot, StateTable};

const SEQUENCE: &str = "_weir_sequence";
const TOUCHED: &str = "_weir_touched";

/// The rows kept: their arrival sequence, when their partition was last
/// touched, then the input's columns.
static TOP_ROWS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "top_rows",
        [(SEQUENCE, DataType::UInt64), (TOUCHED, DataType::Int64)],
    )
});

/// Where a row sorts: its sort key, then its arrival (reversed when the
/// later of equal keys wins).
type Place = (OwnedRow, u64);

struct Partition {
    rows: BTreeMap<Place, OwnedRow>,
    touched: Millis,
}

/// A partition's top N at one moment: each row's arrival and row.
type Top = Vec<(u64, OwnedRow)>;

pub struct UpdatingTopN {
    codec: Arc<Codec>,
    limit: usize,
    retracting_input: bool,
    emit_before: bool,
    deduplicate: bool,
    /// The later of two rows with equal sort keys ranks first.
    later_wins: bool,
    ttl: Option<Duration>,
    partitions: HashMap<OwnedRow, Partition>,
    next: u64,
    kept: usize,
    bytes: usize,
}

impl UpdatingTopN {
    pub(crate) fn new(codec: Arc<Codec>) -> Result<Self> {
        let spec = codec.spec.clone();
        let RankMode::Updating {
            retracting_input,
            emit_before,
            deduplicate,
            ttl,
            ..
        } = spec.mode.clone()
        else {
            return Err(EngineError::Graph("not an updating top N".into()));
        };
        let later_wins = spec.later_wins;
        Ok(UpdatingTopN {
            limit: spec.limit.max(1),
            retracting_input,
            emit_before,
            deduplicate,
            later_wins,
            ttl,
            codec,
            partitions: HashMap::new(),
            next: 0,
            kept: 0,
            bytes: 0,
        })
    }

    /// The arrival part of a row's place.
    fn arrival(&self, sequence: u64) -> u64 {
        if self.later_wins {
            u64::MAX - sequence
        } else {
            sequence
        }
    }

    fn sequence_of(&self, place: &Place) -> u64 {
        if self.later_wins {
            u64::MAX - place.1
        } else {
            place.1
        }
    }

    fn top(&self, partition: &Partition) -> Top {
        partition
            .rows
            .iter()
            .take(self.limit)
            .map(|(place, row)| (self.sequence_of(place), row.clone()))
            .collect()
    }

    fn insert(&mut self, key: &OwnedRow, place: Place, row: OwnedRow, now: Millis) {
        self.kept += 1;
        self.bytes += place.0.as_ref().len() + row.as_ref().len();
        let partition = self.partitions.entry(key.clone()).or_insert(Partition {
            rows: BTreeMap::new(),
            touched: now,
        });
        partition.touched = now;
        partition.rows.insert(place, row);
        // Append-only input: a row below the top N can never rise again.
        if !self.retracting_input {
            while partition.rows.len() > self.limit {
                if let Some((place, row)) = partition.rows.pop_last() {
                    self.kept -= 1;
                    self.bytes -= place.0.as_ref().len() + row.as_ref().len();
                }
            }
        }
    }

    /// Takes out the first kept row equal to `row` with `sort` key.
    fn retract(&mut self, key: &OwnedRow, sort: &OwnedRow, row: &OwnedRow, now: Millis) {
        let Some(partition) = self.partitions.get_mut(key) else {
            return;
        };
        partition.touched = now;
        let found = partition
            .rows
            .range((sort.clone(), 0)..=(sort.clone(), u64::MAX))
            .find(|(_, r)| *r == row)
            .map(|(place, _)| place.clone());
        if let Some(place) = found {
            if let Some(row) = partition.rows.remove(&place) {
                self.kept -= 1;
                self.bytes -= place.0.as_ref().len() + row.as_ref().len();
            }
        }
        if partition.rows.is_empty() {
            self.partitions.remove(key);
        }
    }

    /// What changed between two tops of a partition.
    fn diff(&self, before: &Top, after: &Top, out: &mut Emitted) {
        if self.codec.spec.emit_rank {
            for rank in 0..self.limit {
                let r = rank as u64 + 1;
                match (before.get(rank), after.get(rank)) {
                    (Some(b), Some(a)) if b.0 == a.0 => {}
                    (Some(b), Some(a)) => {
                        if self.emit_before {
                            out.push(RowKind::UpdateBefore, &b.1, r);
                        }
                        out.push(RowKind::UpdateAfter, &a.1, r);
                    }
                    (Some(b), None) => out.push(RowKind::Delete, &b.1, r),
                    (None, Some(a)) => out.push(RowKind::Insert, &a.1, r),
                    (None, None) => break,
                }
            }
            return;
        }
        let removed: Vec<&(u64, OwnedRow)> = before
            .iter()
            .filter(|b| !after.iter().any(|a| a.0 == b.0))
            .collect();
        let added: Vec<&(u64, OwnedRow)> = after
            .iter()
            .filter(|a| !before.iter().any(|b| a.0 == b.0))
            .collect();
        if self.deduplicate && removed.len() == 1 && added.len() == 1 {
            if self.emit_before {
                out.push(RowKind::UpdateBefore, &removed[0].1, 1);
            }
            out.push(RowKind::UpdateAfter, &added[0].1, 1);
            return;
        }
        for b in removed {
            out.push(RowKind::Delete, &b.1, 0);
        }
        for a in added {
            out.push(RowKind::Insert, &a.1, 0);
        }
    }
}

impl Ranking for UpdatingTopN {
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
            if kind.is_accumulate() {
                let place = (sort, self.arrival(self.next));
                self.next += 1;
                // The common case: a full partition's top N, and a row that
                // sorts after all of it, changes nothing.
                let below = self.partitions.get(&key).is_some_and(|p| {
                    !self.retracting_input
                        && p.rows.len() >= self.limit
                        && p.rows
                            .last_key_value()
                            .is_some_and(|(last, _)| place > *last)
                });
                if below {
                    if let Some(p) = self.partitions.get_mut(&key) {
                        p.touched = now;
                    }
                    continue;
                }
                let before = self
                    .partitions
                    .get(&key)
                    .map_or_else(Vec::new, |p| self.top(p));
                self.insert(&key, place, row, now);
                let after = self
                    .partitions
                    .get(&key)
                    .map_or_else(Vec::new, |p| self.top(p));
                self.diff(&before, &after, &mut out);
            } else {
                let before = self
                    .partitions
                    .get(&key)
                    .map_or_else(Vec::new, |p| self.top(p));
                self.retract(&key, &sort, &row, now);
                let after = self
                    .partitions
                    .get(&key)
                    .map_or_else(Vec::new, |p| self.top(p));
                self.diff(&before, &after, &mut out);
            }
        }
        Ok(out)
    }

    fn timer_interval(&self) -> Option<Duration> {
        ttl_timer(self.ttl)
    }

    fn on_timer(&mut self, now: Millis) {
        let Some(ttl) = self.ttl else {
            return;
        };
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let (mut kept, mut bytes) = (self.kept, self.bytes);
        self.partitions.retain(|_, p| {
            let live = now.saturating_sub(p.touched) < ttl;
            if !live {
                kept -= p.rows.len();
                bytes -= p
                    .rows
                    .iter()
                    .map(|(place, row)| place.0.as_ref().len() + row.as_ref().len())
                    .sum::<usize>();
            }
            live
        });
        (self.kept, self.bytes) = (kept, bytes);
    }

    fn snapshot(&self) -> Result<StateSnapshot> {
        let mut sequences = Vec::with_capacity(self.kept);
        let mut touched = Vec::with_capacity(self.kept);
        let mut rows = Vec::with_capacity(self.kept);
        for partition in self.partitions.values() {
            for (place, row) in &partition.rows {
                sequences.push(self.sequence_of(place));
                touched.push(partition.touched);
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
        let table = TOP_ROWS.write_with(
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
        let Some(table) = TOP_ROWS.read(&state)? else {
            return Ok(());
        };
        let sequences = table.column::<UInt64Array>(SEQUENCE)?.clone();
        let touched = table.column::<Int64Array>(TOUCHED)?.clone();
        let options = RecordBatchOptions::new().with_row_count(Some(table.num_rows()));
        let data = RecordBatch::try_new_with_options(
            self.codec.spec.input.clone(),
            table.extra().to_vec(),
            &options,
        )?;
        let encoded = self.codec.encode(&data)?;
        for i in 0..data.num_rows() {
            let sequence = sequences.value(i);
            self.next = self.next.max(sequence + 1);
            let place = (encoded.sorts.row(i).owned(), self.arrival(sequence));
            let key = encoded.partitions.row(i).owned();
            self.insert(&key, place, encoded.rows.row(i).owned(), touched.value(i));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_expr::expressions::col;

    use super::*;
    use crate::changelog::with_op_column;
    use crate::operators::{RankFunction, RankSpec, TopN};
    use crate::testing::Harness;

    /// The top 2 of one partition by `v` descending.
    fn top_two(emit_rank: bool) -> TopN {
        let input = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let mut fields = input.fields().to_vec();
        if emit_rank {
            fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
        }
        let spec = RankSpec {
            partition: Vec::new(),
            order: vec![(
                col("v", &input).unwrap(),
                SortOptions {
                    descending: true,
                    nulls_first: true,
                },
            )],
            limit: 2,
            function: RankFunction::RowNumber,
            emit_rank,
            later_wins: false,
            output: Arc::new(Schema::new(fields)),
            input,
            mode: RankMode::Updating {
                retracting_input: false,
                emit_before: true,
                deduplicate: false,
                append_only: false,
                ttl: None,
            },
        };
        TopN::new("top", Arc::new(spec)).unwrap()
    }

    fn row(name: &str, v: i64) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("name", Arc::new(StringArray::from(vec![name])) as ArrayRef),
            ("v", Arc::new(Int64Array::from(vec![v])) as ArrayRef),
        ])
        .unwrap()
    }

    fn changes(op: TopN) -> Vec<RecordBatch> {
        let mut h = Harness::new(op);
        for (name, v) in [("a", 5), ("b", 7), ("c", 6), ("d", 1)] {
            h.batch(row(name, v)).unwrap();
        }
        h.take_output()
            .iter()
            .map(|b| with_op_column(b).unwrap())
            .collect()
    }

    /// With the rank shown, each rank whose row changed is updated, as
    /// Flink's AppendOnlyTopNFunction does; without it, rows come and go.
    #[test]
    fn ranks_update_in_place_and_rows_come_and_go() {
        datafusion::assert_batches_eq!(
            [
                "+----+------+---+----+",
                "| op | name | v | rn |",
                "+----+------+---+----+",
                "| +I | a    | 5 | 1  |",
                "| -U | a    | 5 | 1  |",
                "| +U | b    | 7 | 1  |",
                "| +I | a    | 5 | 2  |",
                "| -U | a    | 5 | 2  |",
                "| +U | c    | 6 | 2  |",
                "+----+------+---+----+",
            ],
            &changes(top_two(true))
        );
        datafusion::assert_batches_eq!(
            [
                "+----+------+---+",
                "| op | name | v |",
                "+----+------+---+",
                "| +I | a    | 5 |",
                "| +I | b    | 7 |",
                "| -D | a    | 5 |",
                "| +I | c    | 6 |",
                "+----+------+---+",
            ],
            &changes(top_two(false))
        );
    }
}
