//! Flink's built-in functions that DataFusion lacks (or has with other
//! semantics), as DataFusion UDFs with Flink's semantics.
//!
//! - `MOD(a, b)`: remainder with the sign of the dividend (Java's `%`).
//! - `PROCTIME()`, `DATE_FORMAT(ts, 'yyyy-MM-dd')` (Java patterns),
//!   `HOUR(ts)` ([`time`]).
//! - `REGEXP_EXTRACT`, `SPLIT_INDEX` ([`text`]).
//!
//! And Weir's own: `SAMPLE_KEY` and the sampled aggregates with confidence
//! intervals ([`sampling`]).
//!
//! `CREATE FUNCTION name AS 'java.Class'` finds a Rust implementation of
//! the class here ([`function_of_class`]): Weir runs no Java.

pub mod sampling;
mod text;
mod time;

use std::sync::Arc;

use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

pub use time::PROCTIME;

/// Every Flink function Weir adds.
pub fn flink_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::new_from_impl(Mod::new())),
        Arc::new(ScalarUDF::new_from_impl(time::Proctime::new())),
        Arc::new(ScalarUDF::new_from_impl(time::DateFormat::new())),
        Arc::new(ScalarUDF::new_from_impl(time::Hour::new())),
        Arc::new(ScalarUDF::new_from_impl(text::RegexpExtract::new())),
        Arc::new(ScalarUDF::new_from_impl(text::SplitIndex::new())),
        Arc::new(ScalarUDF::new_from_impl(sampling::SampleKey::new())),
    ]
}

/// Every aggregate function Weir adds.
pub fn weir_aggregates() -> Vec<Arc<AggregateUDF>> {
    [
        sampling::Sampled::sum(),
        sampling::Sampled::count(),
        sampling::Sampled::count_distinct(),
    ]
    .into_iter()
    .map(|f| Arc::new(AggregateUDF::new_from_impl(f)))
    .collect()
}

/// The Java classes a `CREATE FUNCTION` may name, with what Weir runs in
/// their place: the Nexmark benchmark's user-defined functions.
pub const KNOWN_CLASSES: &[&str] = &["com.github.nexmark.flink.udf.CountChar"];

/// The function `CREATE FUNCTION name AS 'class'` declares, if Weir has a
/// Rust implementation of `class`.
pub fn function_of_class(name: &str, class: &str) -> Option<ScalarUDF> {
    match class {
        "com.github.nexmark.flink.udf.CountChar" => {
            Some(ScalarUDF::new_from_impl(text::CountChar::named(name)))
        }
        _ => None,
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl Mod {
    fn new() -> Self {
        Mod {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !args.iter().all(|t| t.is_numeric() || t.is_null()) {
            return plan_err!("MOD expects two numbers, got {args:?}");
        }
        BinaryTypeCoercer::new(&args[0], &Operator::Modulo, &args[1]).get_result_type()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let target = args.return_field.data_type().clone();
        let rows = args.number_rows;
        let [a, b] = args.args.as_slice() else {
            return plan_err!("MOD expects two arguments");
        };
        let a = a.cast_to(&target, None)?.into_array(rows)?;
        let b = b.cast_to(&target, None)?.into_array(rows)?;
        Ok(ColumnarValue::Array(rem(&a, &b)?))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn eval(sql: &str) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
        let ctx = SessionContext::new();
        for f in flink_functions() {
            ctx.register_udf((*f).clone());
        }
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    #[tokio::test]
    async fn mod_follows_the_dividend_sign_like_flink() {
        // Flink (Java): MOD(7, 3) = 1, MOD(-7, 3) = -1, MOD(7, -3) = 1.
        let batches = eval("SELECT MOD(7, 3), MOD(-7, 3), MOD(7, -3), MOD(246, 123)").await;
        let row: Vec<i64> = (0..4)
            .map(|i| {
                batches[0]
                    .column(i)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0)
            })
            .collect();
        assert_eq!(row, vec![1, -1, 1, 0]);
    }

    /// The text of each column of the one row `sql` gives.
    async fn texts(sql: &str) -> Vec<Option<String>> {
        let batches = eval(sql).await;
        let batch = &batches[0];
        (0..batch.num_columns())
            .map(|i| {
                let column =
                    datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8).unwrap();
                let column = column
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone();
                column.is_valid(0).then(|| column.value(0).to_string())
            })
            .collect()
    }

    /// As Flink's documentation has them.
    #[tokio::test]
    async fn flink_string_and_time_functions() {
        let got = texts(
            "SELECT DATE_FORMAT(TIMESTAMP '2024-03-05 07:08:09.123', 'yyyy-MM-dd'),
                    DATE_FORMAT(TIMESTAMP '2024-03-05 07:08:09.123', 'HH:mm:ss.SSS'),
                    HOUR(TIMESTAMP '2024-03-05 21:08:09'),
                    REGEXP_EXTRACT('foothebar', 'foo(.*?)(bar)', 2),
                    REGEXP_EXTRACT('https://x.com/a?channel_id=77&b=1', '(&|^)channel_id=([^&]*)', 2),
                    REGEXP_EXTRACT('abc', 'x(.)', 1),
                    SPLIT_INDEX('https://www.nexmark.com/abc/def/item.htm', '/', 3),
                    SPLIT_INDEX('a,b', ',', 5)",
        )
        .await;
        let want = [
            Some("2024-03-05"),
            Some("07:08:09.123"),
            Some("21"),
            Some("bar"),
            None,
            None,
            Some("abc"),
            None,
        ];
        assert_eq!(got, want.map(|w| w.map(str::to_string)));
        // The channel id follows '&' there, not the start: no match.
        let found =
            texts("SELECT REGEXP_EXTRACT('q=1&channel_id=77&b', '(&|^)channel_id=([^&]*)', 2)")
                .await;
        assert_eq!(found, [Some("77".to_string())]);
    }

    #[tokio::test]
    async fn proctime_is_now_in_milliseconds() {
        let before = weir_engine::message::now_millis();
        let batches = eval("SELECT PROCTIME()").await;
        let column = batches[0].column(0);
        assert_eq!(
            column.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        let value = column
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampMillisecondArray>()
            .unwrap()
            .value(0);
        assert!(value >= before && value <= weir_engine::message::now_millis());
    }
}
