//! Flink's built-in functions that DataFusion lacks, as DataFusion UDFs
//! with Flink's semantics.
//!
//! - `MOD(a, b)`: remainder with the sign of the dividend (Java's `%`).
//! - `PROCTIME()`: the processing-time attribute, the wall clock as
//!   `TIMESTAMP(3)` when the row is read.

use std::sync::Arc;

use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    ColumnarValue, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Every Flink function Weir adds.
pub fn flink_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::new_from_impl(Mod::new())),
        Arc::new(ScalarUDF::new_from_impl(Proctime::new())),
    ]
}

/// Name of the processing-time function.
pub const PROCTIME: &str = "proctime";

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

#[derive(Debug, PartialEq, Eq, Hash)]
struct Proctime {
    signature: Signature,
}

impl Proctime {
    fn new() -> Self {
        Proctime {
            signature: Signature::nullary(Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for Proctime {
    fn name(&self) -> &str {
        PROCTIME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let now = weir_engine::message::now_millis();
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
            Some(now),
            None,
        )))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array};
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
