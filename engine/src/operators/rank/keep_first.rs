//! Deduplication keeping the first row of each key by event time: the
//! row with the earliest time wins (the earlier arrival among equal
//! times), and is emitted once the watermark passes it, when no earlier
//! row can come any more. The output only appends. A key already emitted
//! ignores its later rows until the state TTL forgets it; a row at or
//! before the watermark when it arrives is late (counted, and sent to the
//! late-data output).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::OwnedRow;

use super::{ttl_timer, Codec, Emitted, RankMode, Ranking};
use crate::changelog::RowKind;
use crate::error::{EngineError, Result};
use crate::message::{now_millis, Millis, NO_WATERMARK};
use crate::operator::{OperatorContext, StateSize};
use crate::row_watermark::{row_watermarks, strip};
use crate::state::{StateSnapshot, StateTable};
use crate::window::{timestamps_millis, WATERMARK_TABLE};

const EMITTED: &str = "_weir_emitted";
const TOUCHED: &str = "_weir_touched";

/// Each key's first row: whether it was emitted, when it was touched,
/// then the input's columns.
static FIRST_ROWS: LazyLock<StateTable> = LazyLock::new(|| {
    StateTable::new(
        "first_rows",
        [(EMITTED, DataType::Boolean), (TOUCHED, DataType::Int64)],
    )
});

struct First {
    row: OwnedRow,
    time: Millis,
    emitted: bool,
    touched: Millis,
}

pub struct KeepFirst {
    codec: Arc<Codec>,
    time: usize,
    ttl: Option<Duration>,
    keys: HashMap<OwnedRow, First>,
    /// The watermark rows were last emitted at.
    fired: Millis,
    bytes: usize,
}

impl KeepFirst {
    pub(crate) fn new(codec: Arc<Codec>) -> Result<Self> {
        let RankMode::KeepFirst { time, ttl } = codec.spec.mode else {
            return Err(EngineError::Graph("not a keep-first deduplication".into()));
        };
        Ok(KeepFirst {
            codec,
            time,
            ttl,
            keys: HashMap::new(),
            fired: NO_WATERMARK,
            bytes: 0,
        })
    }

    fn keep(&mut self, key: OwnedRow, first: First) {
        self.bytes += key.as_ref().len() + first.row.as_ref().len();
        if let Some(old) = self.keys.insert(key, first) {
            self.bytes -= old.row.as_ref().len();
        }
    }
}

impl Ranking for KeepFirst {
    fn on_batch(&mut self, batch: &RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<Emitted> {
        let data = strip(batch);
        let times = timestamps_millis(data.column(self.time).as_ref())?;
        let watermarks = row_watermarks(batch).ok().cloned();
        let late: Vec<bool> = (0..data.num_rows())
            .map(|i| {
                let row_watermark = watermarks.as_ref().map_or(NO_WATERMARK, |w| w.value(i));
                times.is_valid(i) && times.value(i) <= row_watermark.max(self.fired)
            })
            .collect();
        if late.contains(&true) {
            ctx.emit_late(filter_record_batch(
                batch,
                &BooleanArray::from(late.clone()),
            )?);
        }
        let encoded = self.codec.encode(&data)?;
        let now = now_millis();
        for (i, late) in late.iter().enumerate() {
            if *late || times.is_null(i) {
                continue;
            }
            let key = encoded.partitions.row(i).owned();
            let time = times.value(i);
            match self.keys.get_mut(&key) {
                Some(first) if first.emitted || first.time <= time => first.touched = now,
                _ => self.keep(
                    key,
                    First {
                        row: encoded.rows.row(i).owned(),
                        time,
                        emitted: false,
                        touched: now,
                    },
                ),
            }
        }
        Ok(Emitted::default())
    }

    /// The first rows the watermark passed, in time order.
    fn on_watermark(&mut self, watermark: Millis) -> Result<Emitted> {
        self.fired = self.fired.max(watermark);
        let mut due: Vec<&mut First> = self
            .keys
            .values_mut()
            .filter(|f| !f.emitted && f.time <= watermark)
            .collect();
        due.sort_by_key(|f| f.time);
        let mut out = Emitted::default();
        for first in due {
            first.emitted = true;
            out.push(RowKind::Insert, &first.row, 1);
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
        let mut bytes = self.bytes;
        self.keys.retain(|key, f| {
            let live = now.saturating_sub(f.touched) < ttl;
            if !live {
                bytes -= key.as_ref().len() + f.row.as_ref().len();
            }
            live
        });
        self.bytes = bytes;
    }

    fn snapshot(&self) -> Result<StateSnapshot> {
        let firsts: Vec<&First> = self.keys.values().collect();
        let rows: Vec<&OwnedRow> = firsts.iter().map(|f| &f.row).collect();
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
        let table = FIRST_ROWS.write_with(
            vec![
                Arc::new(BooleanArray::from(
                    firsts.iter().map(|f| f.emitted).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from_iter_values(
                    firsts.iter().map(|f| f.touched),
                )),
            ],
            extra,
        )?;
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
        let Some(table) = FIRST_ROWS.read(&state)? else {
            return Ok(());
        };
        let emitted = table.column::<BooleanArray>(EMITTED)?.clone();
        let touched = table.column::<Int64Array>(TOUCHED)?.clone();
        let options = RecordBatchOptions::new().with_row_count(Some(table.num_rows()));
        let data = RecordBatch::try_new_with_options(
            self.codec.spec.input.clone(),
            table.extra().to_vec(),
            &options,
        )?;
        let times = timestamps_millis(data.column(self.time).as_ref())?;
        let encoded = self.codec.encode(&data)?;
        for i in 0..data.num_rows() {
            self.keep(
                encoded.partitions.row(i).owned(),
                First {
                    row: encoded.rows.row(i).owned(),
                    time: times.value(i),
                    emitted: emitted.value(i),
                    touched: touched.value(i),
                },
            );
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: self.keys.len() as u64,
            bytes: self.bytes as u64,
            sides: None,
        }
    }
}
