//! The lookup join: Flink's processing-time temporal join, `JOIN dim FOR
//! SYSTEM_TIME AS OF probe.proc_time`. Each subtask holds the whole
//! dimension table, read when the first row comes and read again when it
//! is older than its TTL (as Flink's filesystem lookup with
//! `'lookup.join.cache.ttl'`); each probe row is joined with the rows of
//! its key as they are then, and never updated after. `INNER` drops a
//! probe row without a match, `LEFT` pads it with NULLs. The result only
//! appends; the operator keeps no state a checkpoint needs (the table is
//! read again after a restore).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{EngineError, Result};
use crate::operator::{Operator, OperatorContext};
use crate::operators::predicate_mask;
use crate::row_watermark::{attach, row_watermarks, strip};

/// The rows of a table, once read.
pub type Loading<'a> = Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>>> + Send + 'a>>;

/// Reads a dimension table whole.
pub trait LookupTable: Send + Sync {
    /// The table's rows now.
    fn load(&self) -> Loading<'_>;
}

/// Reads `table`, waiting for it: on a thread of its own with its own
/// runtime, so that an operator on any runtime can (as Flink's lookup
/// function reads its table synchronously).
fn load_now(table: &dyn LookupTable) -> Result<Vec<RecordBatch>> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| EngineError::Task(e.to_string()))?
                    .block_on(table.load())
            })
            .join()
            .map_err(|_| EngineError::Task("the lookup table reader panicked".into()))?
    })
}

/// What a lookup join needs to know.
pub struct LookupSpec {
    /// The probe side's key expressions, on its rows.
    pub probe_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The dimension table's key expressions, on its rows.
    pub table_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The dimension table's columns.
    pub table_schema: SchemaRef,
    /// Pad a probe row without a match (`LEFT`), or drop it (`INNER`).
    pub left: bool,
    /// Conditions on the joined row besides the keys (`INNER` only).
    pub residual: Option<Arc<dyn PhysicalExpr>>,
    /// The probe's columns, then the table's.
    pub output: SchemaRef,
    /// Read the table again when it is older than this.
    pub ttl: Duration,
    pub table: Arc<dyn LookupTable>,
}

/// The table as loaded: its rows and, per key, the rows holding it.
struct Loaded {
    rows: RecordBatch,
    by_key: HashMap<Vec<u8>, Vec<u32>>,
    at: Instant,
}

pub struct LookupJoin {
    name: String,
    spec: Arc<LookupSpec>,
    /// The table's key types, which the probe's keys are cast to.
    key_types: Vec<DataType>,
    keys: RowConverter,
    loaded: Option<Loaded>,
}

impl LookupJoin {
    pub fn new(name: impl Into<String>, spec: Arc<LookupSpec>) -> Result<Self> {
        let key_types = spec
            .table_keys
            .iter()
            .map(|e| Ok(e.data_type(&spec.table_schema)?))
            .collect::<Result<Vec<DataType>>>()?;
        Ok(LookupJoin {
            name: name.into(),
            keys: RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?,
            key_types,
            spec,
            loaded: None,
        })
    }

    /// Key bytes of each row of `batch` by `exprs`; `None` for a row with a
    /// NULL key (which matches nothing).
    fn key_rows(
        &self,
        batch: &RecordBatch,
        exprs: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let n = batch.num_rows();
        let columns = exprs
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        // The probe's key types may differ from the table's: cast them.
        let columns = columns
            .iter()
            .zip(&self.key_types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c.clone())
                } else {
                    Ok(datafusion::arrow::compute::cast(c, t)?)
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let rows = self.keys.convert_columns(&columns)?;
        Ok((0..n)
            .map(|i| {
                let null = columns.iter().any(|c| c.is_null(i));
                (!null).then(|| rows.row(i).as_ref().to_vec())
            })
            .collect())
    }

    /// The table, read again if it is missing or older than the TTL.
    fn table(&mut self) -> Result<&Loaded> {
        let stale = self
            .loaded
            .as_ref()
            .is_none_or(|l| l.at.elapsed() >= self.spec.ttl);
        if stale {
            let batches = load_now(self.spec.table.as_ref())?;
            let rows = concat_batches(&self.spec.table_schema, &batches)?;
            let mut by_key: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
            for (i, key) in self
                .key_rows(&rows, &self.spec.table_keys)?
                .into_iter()
                .enumerate()
            {
                if let Some(key) = key {
                    by_key.entry(key).or_default().push(i as u32);
                }
            }
            tracing::debug!(rows = rows.num_rows(), "lookup table read");
            self.loaded = Some(Loaded {
                rows,
                by_key,
                at: Instant::now(),
            });
        }
        self.loaded
            .as_ref()
            .ok_or_else(|| EngineError::Graph("the lookup table went missing".into()))
    }
}

impl Operator for LookupJoin {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext<'_>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let data = strip(&batch);
        let spec = self.spec.clone();
        let probe_keys = self.key_rows(&data, &spec.probe_keys)?;
        let left = self.spec.left;
        let table = self.table()?;
        let (mut probe, mut found) = (Vec::new(), Vec::new());
        for (i, key) in probe_keys.iter().enumerate() {
            match key.as_ref().and_then(|k| table.by_key.get(k)) {
                Some(rows) => {
                    for row in rows {
                        probe.push(i as u32);
                        found.push(Some(*row));
                    }
                }
                None if left => {
                    probe.push(i as u32);
                    found.push(None);
                }
                None => {}
            }
        }
        if probe.is_empty() {
            return Ok(());
        }
        let probe = UInt32Array::from(probe);
        let found = UInt32Array::from(found);
        let mut columns = data
            .columns()
            .iter()
            .map(|c| Ok(take(c.as_ref(), &probe, None)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        for column in table.rows.columns() {
            columns.push(take(column.as_ref(), &found, None)?);
        }
        let joined = RecordBatch::try_new(self.spec.output.clone(), columns)?;
        let mut joined = match row_watermarks(&batch) {
            Ok(watermarks) => attach(&joined, take(watermarks, &probe, None)?)?,
            Err(_) => joined,
        };
        if let Some(residual) = &self.spec.residual {
            let mask = predicate_mask(residual, &strip(&joined))?;
            joined = filter_record_batch(&joined, &mask)?;
        }
        ctx.emit(joined);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::col;

    use super::*;
    use crate::testing::Harness;

    /// A table of one row, `(1, n)`, where `n` counts the reads.
    struct Counting(AtomicI64);

    impl LookupTable for Counting {
        fn load(&self) -> Loading<'_> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                Ok(vec![RecordBatch::try_from_iter([
                    ("key", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                    ("n", Arc::new(Int64Array::from(vec![n])) as ArrayRef),
                ])?])
            })
        }
    }

    fn join(ttl: Duration) -> LookupJoin {
        let probe = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        let table = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("key", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let spec = LookupSpec {
            probe_keys: vec![col("k", &probe).unwrap()],
            table_keys: vec![col("key", &table).unwrap()],
            table_schema: table,
            left: true,
            residual: None,
            output,
            ttl,
            table: Arc::new(Counting(AtomicI64::new(0))),
        };
        LookupJoin::new("lookup", Arc::new(spec)).unwrap()
    }

    fn probe(keys: &[Option<i64>]) -> RecordBatch {
        RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(keys.to_vec())) as ArrayRef)])
            .unwrap()
    }

    /// The `n` of each output row.
    fn reads(h: &mut Harness) -> Vec<Option<i64>> {
        h.take_output()
            .iter()
            .flat_map(|b| {
                let n = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
                n.iter().collect::<Vec<_>>()
            })
            .collect()
    }

    /// The table is read at the first row and again once its TTL passed;
    /// a probe row without a match (or with a NULL key) is padded.
    #[test]
    fn the_table_is_read_again_after_its_ttl() {
        let mut h = Harness::new(join(Duration::from_secs(3600)));
        h.batch(probe(&[Some(1), Some(2), None])).unwrap();
        h.batch(probe(&[Some(1)])).unwrap();
        assert_eq!(reads(&mut h), [Some(1), None, None, Some(1)]);
        let mut h = Harness::new(join(Duration::ZERO));
        h.batch(probe(&[Some(1)])).unwrap();
        h.batch(probe(&[Some(1)])).unwrap();
        assert_eq!(reads(&mut h), [Some(1), Some(2)]);
    }
}
