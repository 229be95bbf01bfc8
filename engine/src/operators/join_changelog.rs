//! A regular join whose output is a changelog, as Flink's
//! `StreamingJoinOperator` runs it: outer joins, and joins of inputs that
//! retract rows (the result of a `GROUP BY` without a window, another
//! outer join, a CDC stream).
//!
//! Each stored row counts the rows of the other side it meets. A row of an
//! outer side that meets nothing is emitted at once, padded with NULLs
//! (`+I[row, null]`); when its first match arrives, that padded row is
//! retracted (`-D[row, null]`) before the pair is emitted, and when its
//! last match is retracted, the padded row comes back. A retracted input
//! row (`-U`, `-D`) is taken out of its side's state and retracts every
//! pair it made. An inner join of two sides passes the input's row kind
//! on (`+I`/`+U`, `-U`/`-D`); anything involving an outer side emits `+I`
//! and `-D`, as Flink does.
//!
//! Rows of a batch are processed in runs of additions and retractions, in
//! their order, so a retraction finds the row it retracts even when both
//! came in the same batch.

use std::ops::Range;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{OwnedRow, Rows};

use super::join::{all_valid, Stored, StreamingJoin};
use crate::changelog::{attach_kinds, kind_array, kinds_of, without_kinds, RowKind};
use crate::error::Result;
use crate::message::{hold_back, now_millis};
use crate::operator::{Operator, OperatorContext};
use crate::operators::predicate_mask;
use crate::row_watermark::{attach_constant, strip};

/// The rows a batch emits: per row, its kind and its left and right parts
/// in Arrow's row format (a NULL row for a padded side).
#[derive(Default)]
struct Out {
    kinds: Vec<RowKind>,
    sides: [Vec<OwnedRow>; 2],
}

impl Out {
    fn push(&mut self, kind: RowKind, left: OwnedRow, right: OwnedRow) {
        self.kinds.push(kind);
        self.sides[0].push(left);
        self.sides[1].push(right);
    }
}

/// One input batch, decoded for matching.
struct Input<'a> {
    side: usize,
    data: &'a RecordBatch,
    kinds: Vec<RowKind>,
    valid: Vec<bool>,
    keys: Rows,
    rows: Rows,
}

impl StreamingJoin {
    /// Joins the rows of `batch` (from `side`) and emits the changes they
    /// make to the result.
    pub(super) fn join_changes(
        &mut self,
        side: usize,
        batch: &RecordBatch,
        ctx: &mut OperatorContext<'_>,
    ) -> Result<()> {
        let data = without_kinds(&strip(batch));
        let keys = self.side_keys(side, &data)?;
        ctx.observe_keys(&keys);
        let input = Input {
            side,
            kinds: kinds_of(batch)?,
            valid: all_valid(&keys, data.num_rows()),
            keys: self.sides[side].keys.convert_columns(&keys)?,
            rows: self.sides[side].rows.convert_columns(data.columns())?,
            data: &data,
        };
        let nulls = [self.null_row(0)?, self.null_row(1)?];
        let mut out = Out::default();
        let mut start = 0;
        while start < input.kinds.len() {
            let adds = input.kinds[start].is_accumulate();
            let end = (start..input.kinds.len())
                .find(|i| input.kinds[*i].is_accumulate() != adds)
                .unwrap_or(input.kinds.len());
            self.run(&input, start..end, &nulls, &mut out)?;
            start = end;
        }
        if out.kinds.is_empty() {
            return Ok(());
        }
        let columns = [
            self.sides[0]
                .rows
                .convert_rows(out.sides[0].iter().map(|r| r.row()))?,
            self.sides[1]
                .rows
                .convert_rows(out.sides[1].iter().map(|r| r.row()))?,
        ]
        .concat();
        let options = RecordBatchOptions::new().with_row_count(Some(out.kinds.len()));
        let pairs = RecordBatch::try_new_with_options(self.spec.output.clone(), columns, &options)?;
        let changes = attach_kinds(&pairs, kind_array(&out.kinds))?;
        let watermark = hold_back(ctx.watermark(), self.watermark_delay());
        ctx.emit(attach_constant(&changes, watermark)?);
        Ok(())
    }

    /// The rows `range` of `input`, all additions or all retractions.
    fn run(
        &mut self,
        input: &Input<'_>,
        range: Range<usize>,
        nulls: &[OwnedRow; 2],
        out: &mut Out,
    ) -> Result<()> {
        let side = input.side;
        let other = 1 - side;
        let kind = self.spec.kind;
        let (own_outer, other_outer) = (kind.is_outer(side), kind.is_outer(other));
        let residual = self.spec.residual.clone();
        let pairs_schema = self.spec.pairs.clone();
        let [left, right] = &mut self.sides;
        let (own_side, other_side) = if side == 0 {
            (left, &*right)
        } else {
            (right, &*left)
        };
        let keys: Vec<Option<OwnedRow>> = range
            .clone()
            .map(|i| input.valid[i].then(|| input.keys.row(i).owned()))
            .collect();
        // Every stored row of the other side with each row's key.
        let mut mine: Vec<u32> = Vec::new();
        let mut theirs: Vec<&Stored> = Vec::new();
        for (i, key) in range.clone().zip(&keys) {
            if let Some(stored) = key.as_ref().and_then(|k| other_side.by_key.get(k)) {
                for m in stored {
                    mine.push(i as u32);
                    theirs.push(m);
                }
            }
        }
        // Which of them also pass the residual condition.
        let passing: BooleanArray = match (&residual, mine.is_empty()) {
            (Some(condition), false) => {
                let others = other_side
                    .rows
                    .convert_rows(theirs.iter().map(|m| m.row.row()))?;
                let indices = UInt32Array::from(mine.clone());
                let own: Vec<ArrayRef> = input
                    .data
                    .columns()
                    .iter()
                    .map(|c| Ok(take(c.as_ref(), &indices, None)?))
                    .collect::<Result<_>>()?;
                let columns = if side == 0 {
                    [own, others].concat()
                } else {
                    [others, own].concat()
                };
                let options = RecordBatchOptions::new().with_row_count(Some(mine.len()));
                let pairs = RecordBatch::try_new_with_options(pairs_schema, columns, &options)?;
                predicate_mask(condition, &pairs)?
            }
            _ => BooleanArray::from(vec![true; mine.len()]),
        };
        let pair = |own: OwnedRow, theirs: OwnedRow| {
            if side == 0 {
                (own, theirs)
            } else {
                (theirs, own)
            }
        };
        let mut emit =
            |kind: RowKind, (left, right): (OwnedRow, OwnedRow)| out.push(kind, left, right);
        let now = now_millis();
        let mut p = 0;
        for (i, key) in range.zip(keys) {
            let mut matched: Vec<&Stored> = Vec::new();
            while p < mine.len() && mine[p] as usize == i {
                if passing.value(p) && passing.is_valid(p) {
                    matched.push(theirs[p]);
                }
                p += 1;
            }
            let row = input.rows.row(i).owned();
            let row_kind = input.kinds[i];
            if row_kind.is_accumulate() {
                if own_outer && matched.is_empty() {
                    emit(RowKind::Insert, pair(row.clone(), nulls[other].clone()));
                }
                for m in &matched {
                    if other_outer {
                        if m.matches.get() == 0 {
                            emit(RowKind::Delete, pair(nulls[side].clone(), m.row.clone()));
                        }
                        m.matches.set(m.matches.get().saturating_add(1));
                    }
                    let kind = if own_outer || other_outer {
                        RowKind::Insert
                    } else {
                        row_kind
                    };
                    emit(kind, pair(row.clone(), m.row.clone()));
                }
                let stored = Stored::regular(row, now, matched.len() as u32);
                match key {
                    Some(key) => own_side.store(key, stored),
                    // A NULL key meets nothing; an outer side keeps the row
                    // so that its retraction finds it.
                    None if own_outer => own_side.store_unkeyed(stored),
                    None => {}
                }
            } else {
                // As Flink, the pairs are retracted even when the row was
                // no longer kept (its state expired).
                own_side.remove(key.as_ref(), &row);
                if own_outer && matched.is_empty() {
                    emit(RowKind::Delete, pair(row.clone(), nulls[other].clone()));
                }
                for m in &matched {
                    let kind = if own_outer || other_outer {
                        RowKind::Delete
                    } else {
                        row_kind
                    };
                    emit(kind, pair(row.clone(), m.row.clone()));
                    if other_outer {
                        let count = m.matches.get();
                        if count == 1 {
                            emit(RowKind::Insert, pair(nulls[side].clone(), m.row.clone()));
                        }
                        m.matches.set(count.saturating_sub(1));
                    }
                }
            }
        }
        Ok(())
    }

    /// A row of `side` with every column NULL, in its row format: the
    /// padding of an outer join.
    fn null_row(&self, side: usize) -> Result<OwnedRow> {
        let nulls: Vec<ArrayRef> = self.spec.schemas[side]
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), 1))
            .collect();
        Ok(self.sides[side]
            .rows
            .convert_columns(&nulls)?
            .row(0)
            .owned())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::col;

    use super::*;
    use crate::changelog::with_op_column;
    use crate::operators::{JoinKind, JoinSpec};
    use crate::testing::Harness;

    fn full_join() -> Arc<JoinSpec> {
        let left = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("a", DataType::Utf8, true),
        ]));
        let right = Arc::new(Schema::new(vec![
            Field::new("k2", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]));
        let output = Arc::new(Schema::new(
            [left.fields().to_vec(), right.fields().to_vec()]
                .concat()
                .into_iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        Arc::new(JoinSpec {
            keys: [
                vec![col("k", &left).unwrap()],
                vec![col("k2", &right).unwrap()],
            ],
            schemas: [left.clone(), right.clone()],
            pairs: Arc::new(Schema::new(
                [left.fields().to_vec(), right.fields().to_vec()].concat(),
            )),
            output,
            residual: None,
            kind: JoinKind::Full,
            ttl: [None, None],
            window_end: None,
            interval: None,
            changelog: true,
            decide_at_end: false,
        })
    }

    fn rows(keys: &[i64], values: ArrayRef, names: [&str; 2], kinds: &[RowKind]) -> RecordBatch {
        let data = RecordBatch::try_from_iter([
            (
                names[0],
                Arc::new(Int64Array::from(keys.to_vec())) as ArrayRef,
            ),
            (names[1], values),
        ])
        .unwrap();
        attach_kinds(&data, kind_array(kinds)).unwrap()
    }

    /// Flink's sequence: a row without a match is padded at once; its
    /// first match retracts the padded row; when that match is retracted,
    /// the padded row comes back. An outer join emits +I and -D only.
    #[test]
    fn padded_rows_are_retracted_when_a_match_comes_and_back_when_it_goes() {
        use RowKind::*;
        let mut h = Harness::new(StreamingJoin::new("join", full_join()).unwrap());
        let left = |kinds: &[RowKind]| {
            rows(
                &[1],
                Arc::new(StringArray::from(vec!["x"])),
                ["k", "a"],
                kinds,
            )
        };
        let right = |b: i64, kinds: &[RowKind]| {
            rows(
                &[1],
                Arc::new(Int64Array::from(vec![b])),
                ["k2", "b"],
                kinds,
            )
        };
        h.batch_on(0, left(&[Insert])).unwrap();
        h.batch_on(1, right(10, &[Insert])).unwrap();
        h.batch_on(1, right(11, &[Insert])).unwrap();
        h.batch_on(1, right(10, &[UpdateBefore])).unwrap();
        h.batch_on(1, right(11, &[Delete])).unwrap();
        h.batch_on(0, left(&[Delete])).unwrap();
        let shown: Vec<RecordBatch> = h
            .take_output()
            .iter()
            .map(|b| with_op_column(b).unwrap())
            .collect();
        datafusion::assert_batches_eq!(
            [
                "+----+---+---+----+----+",
                "| op | k | a | k2 | b  |",
                "+----+---+---+----+----+",
                "| +I | 1 | x |    |    |",
                "| -D | 1 | x |    |    |",
                "| +I | 1 | x | 1  | 10 |",
                "| +I | 1 | x | 1  | 11 |",
                "| -D | 1 | x | 1  | 10 |",
                "| -D | 1 | x | 1  | 11 |",
                "| +I | 1 | x |    |    |",
                "| -D | 1 | x |    |    |",
                "+----+---+---+----+----+",
            ],
            &shown
        );
        assert_eq!(h.operator().state_size().rows, 0);
    }
}
