//! Deterministic key sampling and estimates with 95 % confidence
//! intervals over the sampled keys.
//!
//! - `SAMPLE_KEY(key, fraction)`: whether `key` is in the sample. The key's
//!   text is hashed with xxHash64 (a fixed seed), so a key is in or out the
//!   same way on every process, run and restart; about `fraction` of the
//!   keys are in.
//! - `SAMPLED_SUM(x, key, fraction)`, `SAMPLED_COUNT(key, fraction)` and
//!   `SAMPLED_COUNT_DISTINCT(key, fraction)`: the sum, row count and
//!   distinct-key count of all keys, estimated from the sampled keys' rows,
//!   as `STRUCT<estimate, low, high>` (DOUBLEs; `low`..`high` is the 95 %
//!   interval). They take only the rows of sampled keys themselves, so a
//!   `WHERE SAMPLE_KEY(key, fraction)` before them (which saves the work)
//!   does not change the answer.
//!
//! The key is an argument because the sampling unit is the key, not the
//! row: rows of one key are in or out together, so the variance comes from
//! the per-key totals `y` of the sampled keys. With inclusion probability
//! `f` (Poisson sampling, Horvitz–Thompson):
//!
//! ```text
//! estimate = Σ y / f        variance = (1 − f) / f² · Σ y²       (over sampled keys)
//! interval = estimate ± 1.96 · √variance
//! ```
//!
//! The interval is a normal approximation: it holds when the sample has
//! many keys (dozens at least) and no single key carries a large share of
//! the total.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, UInt64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::physical_expr::expressions::Literal;

/// The seed of the key hash. Changing it changes every sample.
const SEED: u64 = 0x5745_4952; // "WEIR"

/// The z-score of a two-sided 95 % interval.
const Z_95: f64 = 1.959_963_984_540_054;

/// Where `key` (as text) falls in [0, 1): it is sampled at fraction `f`
/// when this is below `f`.
pub fn key_position(key: &[u8]) -> f64 {
    position_of(key_hash(key))
}

fn key_hash(key: &[u8]) -> u64 {
    twox_hash::XxHash64::oneshot(SEED, key)
}

/// A key hash's top 53 bits, as a double in [0, 1).
fn position_of(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Each row's key hash (of the key's text), or `None` for a NULL key:
/// what `SAMPLE_KEY` and the aggregates both decide by.
fn key_hashes(keys: &ArrayRef) -> Result<Vec<Option<u64>>> {
    let text = cast(keys, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    Ok(text
        .iter()
        .map(|k| k.map(|k| key_hash(k.as_bytes())))
        .collect())
}

fn check_fraction(name: &str, fraction: f64) -> Result<f64> {
    if fraction > 0.0 && fraction <= 1.0 {
        Ok(fraction)
    } else {
        plan_err!("{name}: the fraction must be in (0, 1], got {fraction}")
    }
}

/// `SAMPLE_KEY(key, fraction)`: NULL for a NULL key or fraction.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct SampleKey {
    signature: Signature,
}

impl SampleKey {
    pub fn new() -> Self {
        SampleKey {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SampleKey {
    fn name(&self) -> &str {
        "sample_key"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [key, fraction] = args.args.as_slice() else {
            return exec_err!("SAMPLE_KEY takes a key and a fraction");
        };
        let keys = key.to_array(rows)?;
        let fractions = cast(&fraction.to_array(rows)?, &DataType::Float64)?;
        let fractions = fractions.as_primitive::<Float64Type>();
        let sampled: BooleanArray = key_hashes(&keys)?
            .into_iter()
            .zip(fractions.iter())
            .map(|(hash, f)| match (hash, f) {
                (Some(hash), Some(f)) => {
                    Ok(Some(position_of(hash) < check_fraction("SAMPLE_KEY", f)?))
                }
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(ColumnarValue::Array(Arc::new(sampled)))
    }
}

/// What a sampled aggregate estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Estimate {
    /// `SAMPLED_SUM(x, key, fraction)`.
    Sum,
    /// `SAMPLED_COUNT(key, fraction)`.
    Count,
    /// `SAMPLED_COUNT_DISTINCT(key, fraction)`.
    DistinctKeys,
}

impl Estimate {
    /// The arguments before the key.
    fn leading(self) -> usize {
        match self {
            Estimate::Sum => 1,
            Estimate::Count | Estimate::DistinctKeys => 0,
        }
    }
}

/// A sampled aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Sampled {
    estimate: Estimate,
    signature: Signature,
}

impl Sampled {
    fn new(estimate: Estimate) -> Self {
        Sampled {
            estimate,
            signature: Signature::any(estimate.leading() + 2, Volatility::Immutable),
        }
    }

    pub fn sum() -> Self {
        Self::new(Estimate::Sum)
    }

    pub fn count() -> Self {
        Self::new(Estimate::Count)
    }

    pub fn count_distinct() -> Self {
        Self::new(Estimate::DistinctKeys)
    }
}

/// `STRUCT<estimate, low, high>`.
fn estimate_fields() -> Fields {
    ["estimate", "low", "high"]
        .map(|name| Field::new(name, DataType::Float64, false))
        .to_vec()
        .into()
}

impl AggregateUDFImpl for Sampled {
    fn name(&self) -> &str {
        match self.estimate {
            Estimate::Sum => "sampled_sum",
            Estimate::Count => "sampled_count",
            Estimate::DistinctKeys => "sampled_count_distinct",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(estimate_fields()))
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let name = self.name().to_ascii_uppercase();
        let fraction = args
            .exprs
            .last()
            .and_then(|e| e.downcast_ref::<Literal>())
            .and_then(|l| l.value().cast_to(&DataType::Float64).ok());
        let Some(ScalarValue::Float64(Some(fraction))) = fraction else {
            return plan_err!("{name}: the fraction (the last argument) must be a constant");
        };
        Ok(Box::new(SampledAccumulator {
            estimate: self.estimate,
            fraction: check_fraction(&name, fraction)?,
            totals: HashMap::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |name: &str, item: DataType| -> FieldRef {
            Arc::new(Field::new(
                format!("{}[{name}]", args.name),
                DataType::List(Arc::new(Field::new_list_field(item, true))),
                true,
            ))
        };
        Ok(vec![
            list("keys", DataType::UInt64),
            list("totals", DataType::Float64),
        ])
    }
}

/// The per-key totals of the sampled keys.
#[derive(Debug)]
struct SampledAccumulator {
    estimate: Estimate,
    fraction: f64,
    /// Key hash → the key's total (sum, rows, or 1).
    totals: HashMap<u64, f64>,
}

impl SampledAccumulator {
    fn add(&mut self, key: u64, y: f64) {
        let total = self.totals.entry(key).or_insert(0.0);
        match self.estimate {
            Estimate::DistinctKeys => *total = 1.0,
            Estimate::Sum | Estimate::Count => *total += y,
        }
    }
}

impl Accumulator for SampledAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let leading = self.estimate.leading();
        let Some(keys) = values.get(leading) else {
            return exec_err!("a sampled aggregate takes its key after its value");
        };
        let hashes = key_hashes(keys)?;
        let xs = match self.estimate {
            Estimate::Sum => Some(cast(&values[0], &DataType::Float64)?),
            Estimate::Count | Estimate::DistinctKeys => None,
        };
        let xs = xs.as_ref().map(|x| x.as_primitive::<Float64Type>());
        for (row, hash) in hashes.into_iter().enumerate() {
            let Some(hash) = hash else { continue };
            let y = match xs {
                Some(xs) if xs.is_null(row) => continue,
                Some(xs) => xs.value(row),
                None => 1.0,
            };
            // The state keeps the hash, not the key: the sample is small
            // and a collision of 64-bit hashes is negligible.
            if position_of(hash) < self.fraction {
                self.add(hash, y);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let f = self.fraction;
        // Folded from +0.0: an empty sum of f64 is -0.0.
        let sum = self.totals.values().fold(0.0, |a, y| a + y);
        let squares = self.totals.values().fold(0.0, |a, y| a + y * y);
        let estimate = sum / f;
        let margin = Z_95 * ((1.0 - f) / (f * f) * squares).sqrt();
        let columns: Vec<ArrayRef> = [estimate, estimate - margin, estimate + margin]
            .into_iter()
            .map(|v| Arc::new(Float64Array::from(vec![v])) as ArrayRef)
            .collect();
        let row = StructArray::try_new(estimate_fields(), columns, None)?;
        Ok(ScalarValue::Struct(Arc::new(row)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.totals.capacity() * 2 * std::mem::size_of::<u64>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let (keys, totals): (Vec<u64>, Vec<f64>) =
            self.totals.iter().map(|(k, v)| (*k, *v)).unzip();
        let keys =
            ListArray::from_iter_primitive::<UInt64Type, _, _>([Some(keys.into_iter().map(Some))]);
        let totals = ListArray::from_iter_primitive::<Float64Type, _, _>([Some(
            totals.into_iter().map(Some),
        )]);
        Ok(vec![
            ScalarValue::List(Arc::new(keys)),
            ScalarValue::List(Arc::new(totals)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [keys, totals] = states else {
            return exec_err!("a sampled aggregate's state is its keys and their totals");
        };
        let (keys, totals) = (keys.as_list::<i32>(), totals.as_list::<i32>());
        for row in 0..keys.len() {
            if keys.is_null(row) {
                continue;
            }
            let (k, t) = (keys.value(row), totals.value(row));
            let (k, t) = (
                k.as_primitive::<UInt64Type>(),
                t.as_primitive::<Float64Type>(),
            );
            for (key, total) in k.values().iter().zip(t.values().iter()) {
                self.add(*key, *total);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
    use datafusion::prelude::SessionContext;

    /// A fixed pseudo-random sequence (SplitMix64).
    struct Numbers(u64);

    impl Numbers {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % below
        }
    }

    fn context() -> SessionContext {
        let ctx = SessionContext::new();
        ctx.register_udf(ScalarUDF::new_from_impl(SampleKey::new()));
        for f in [Sampled::sum(), Sampled::count(), Sampled::count_distinct()] {
            ctx.register_udaf(AggregateUDF::new_from_impl(f));
        }
        ctx
    }

    fn interval(batch: &RecordBatch, column: &str, row: usize) -> (f64, f64, f64) {
        let s = batch.column_by_name(column).unwrap().as_struct();
        let field = |name: &str| {
            s.column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .value(row)
        };
        (field("estimate"), field("low"), field("high"))
    }

    /// Over 200 independent populations (1000 keys each, 1 to 5 rows per
    /// key, values 0..100), each exact answer (a plain aggregate of the
    /// same query) falls inside its 95 % interval in 90–99 % of them.
    #[tokio::test]
    async fn the_exact_answer_is_inside_the_interval_about_95_percent_of_the_time() {
        const SEEDS: i64 = 200;
        let mut numbers = Numbers(7);
        let (mut seeds, mut keys, mut xs) = (Vec::new(), Vec::new(), Vec::new());
        for seed in 0..SEEDS {
            for key in 0..1000 {
                for _ in 0..=numbers.next(5) {
                    seeds.push(seed);
                    keys.push(seed * 1_000_000 + key);
                    xs.push(numbers.next(100) as i64);
                }
            }
        }
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(
                ["seed", "k", "x"]
                    .map(|n| Field::new(n, DataType::Int64, false))
                    .to_vec(),
            )),
            vec![
                Arc::new(Int64Array::from(seeds)),
                Arc::new(Int64Array::from(keys)),
                Arc::new(Int64Array::from(xs)),
            ],
        )
        .unwrap();
        let ctx = context();
        ctx.register_batch("t", batch).unwrap();
        let results = ctx
            .sql(
                "SELECT seed,
                   sampled_sum(x, k, 0.1) AS s, sum(x) AS exact_s,
                   sampled_count(k, 0.1) AS c, count(*) AS exact_c,
                   sampled_count_distinct(k, 0.1) AS d, count(DISTINCT k) AS exact_d
                 FROM t GROUP BY seed",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut inside = [0usize; 3];
        let mut total = 0;
        for batch in &results {
            for row in 0..batch.num_rows() {
                total += 1;
                for (i, (sampled, exact)) in [("s", "exact_s"), ("c", "exact_c"), ("d", "exact_d")]
                    .into_iter()
                    .enumerate()
                {
                    let (_, low, high) = interval(batch, sampled, row);
                    let exact = batch
                        .column_by_name(exact)
                        .unwrap()
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(row) as f64;
                    if low <= exact && exact <= high {
                        inside[i] += 1;
                    }
                }
            }
        }
        assert_eq!(total, SEEDS as usize);
        for (name, n) in ["sum", "count", "distinct"].iter().zip(inside) {
            let coverage = n as f64 / total as f64;
            assert!(
                (0.90..=0.99).contains(&coverage),
                "{name}: {coverage} of the intervals hold the exact answer"
            );
        }
    }

    /// The estimate over a hand-picked sample: the sampled keys' totals
    /// scaled by the fraction, the interval from their squares.
    #[tokio::test]
    async fn the_estimate_scales_the_sampled_keys_totals() {
        let keys: Vec<i64> = (0..200).collect();
        let sampled: Vec<i64> = keys
            .iter()
            .copied()
            .filter(|k| key_position(k.to_string().as_bytes()) < 0.3)
            .collect();
        assert!((40..80).contains(&sampled.len()), "{}", sampled.len());
        // Key k has k % 3 + 1 rows of value k; one NULL value and one NULL
        // key are skipped.
        let mut rows: Vec<(Option<i64>, Option<i64>)> = Vec::new();
        for k in &keys {
            for _ in 0..(k % 3 + 1) {
                rows.push((Some(*k), Some(*k)));
            }
        }
        rows.push((Some(5), None));
        rows.push((None, Some(1000)));
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(
                ["k", "x"]
                    .map(|n| Field::new(n, DataType::Int64, true))
                    .to_vec(),
            )),
            vec![
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
            ],
        )
        .unwrap();
        let ctx = context();
        ctx.register_batch("t", batch).unwrap();
        let results = ctx
            .sql(
                "SELECT sampled_sum(x, k, 0.3) AS s, sampled_count(k, 0.3) AS c,
                   sampled_count_distinct(k, 0.3) AS d,
                   count(*) FILTER (WHERE sample_key(k, 0.3)) AS rows_in
                 FROM t",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let batch = &results[0];
        let f: f64 = 0.3;
        let expect = |ys: Vec<f64>| {
            let estimate = ys.iter().sum::<f64>() / f;
            let margin =
                Z_95 * ((1.0 - f) / (f * f) * ys.iter().map(|y| y * y).sum::<f64>()).sqrt();
            (estimate, estimate - margin, estimate + margin)
        };
        let rows_of = |k: i64| (k % 3 + 1) as f64;
        let close = |a: (f64, f64, f64), b: (f64, f64, f64)| {
            let near = |x: f64, y: f64| (x - y).abs() <= 1e-9 * y.abs().max(1.0);
            assert!(
                near(a.0, b.0) && near(a.1, b.1) && near(a.2, b.2),
                "{a:?} != {b:?}"
            );
        };
        close(
            interval(batch, "s", 0),
            expect(sampled.iter().map(|k| *k as f64 * rows_of(*k)).collect()),
        );
        // The row with a NULL value still counts as a row of key 5.
        let count_of = |k: i64| rows_of(k) + f64::from(u8::from(k == 5));
        close(
            interval(batch, "c", 0),
            expect(sampled.iter().map(|k| count_of(*k)).collect()),
        );
        close(interval(batch, "d", 0), expect(vec![1.0; sampled.len()]));
        let rows_in = batch.column_by_name("rows_in").unwrap();
        let rows_in = rows_in
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        let expected_rows: f64 = sampled.iter().map(|k| count_of(*k)).sum();
        assert_eq!(rows_in as f64, expected_rows);
    }

    #[tokio::test]
    async fn a_fraction_outside_zero_to_one_or_not_constant_is_an_error() {
        let ctx = context();
        for sql in [
            "SELECT sampled_count(k, 1.5) FROM (VALUES (1)) AS t(k)",
            "SELECT sampled_count(k, k) FROM (VALUES (1)) AS t(k)",
            "SELECT sample_key(k, 0) FROM (VALUES (1)) AS t(k)",
        ] {
            let result = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.map(|_| ()),
                Err(e) => Err(e),
            };
            let err = result.expect_err(sql).to_string();
            assert!(err.contains("fraction"), "{sql}: {err}");
        }
    }
}
