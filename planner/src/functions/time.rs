//! Flink's time functions: `PROCTIME()`, `DATE_FORMAT(ts, pattern)` with
//! Java's `SimpleDateFormat` patterns (`'yyyy-MM-dd HH:mm'`), and
//! `HOUR(ts)`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Builder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use weir_engine::window::timestamps_millis;

/// Name of the processing-time function.
pub const PROCTIME: &str = "proctime";

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Proctime {
    signature: Signature,
}

impl Proctime {
    pub fn new() -> Self {
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

/// The timestamps of `value` in ms (a timestamp, a date, or a string in
/// Flink's `yyyy-MM-dd HH:mm:ss` form).
fn millis(value: &ColumnarValue, rows: usize) -> Result<datafusion::arrow::array::Int64Array> {
    let array = value.to_array(rows)?;
    let array = match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            datafusion::arrow::compute::cast(
                &array,
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?
        }
        _ => array,
    };
    timestamps_millis(array.as_ref())
        .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))
}

/// A Java `SimpleDateFormat` pattern as a chrono format: letters repeat
/// to say the field and width, text in single quotes is literal.
pub fn java_to_chrono(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted text; '' is a quote.
            let mut j = i + 1;
            if chars.get(j) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            while j < chars.len() && chars[j] != '\'' {
                push_literal(&mut out, chars[j]);
                j += 1;
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let mut run = 1;
        while chars.get(i + run) == Some(&c) {
            run += 1;
        }
        let field = match (c, run) {
            ('y', 2) => "%y",
            ('y', _) | ('Y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1) => "%1f",
            ('S', 2) => "%2f",
            ('S', _) => "%3f",
            ('E', 4..) => "%A",
            ('E', _) => "%a",
            ('a', _) => "%p",
            ('z', _) | ('Z', _) | ('X', _) => "%z",
            ('w', _) => "%V",
            ('u', _) => "%u",
            _ => "",
        };
        out.push_str(field);
        i += run;
    }
    out
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

/// Flink's `DATE_FORMAT(timestamp, pattern)`: the time formatted with a
/// Java pattern (in place of DataFusion's, which takes chrono's).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct DateFormat {
    signature: Signature,
}

impl DateFormat {
    pub fn new() -> Self {
        DateFormat {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [t, _] if t.is_temporal() || matches!(t, DataType::Utf8 | DataType::Null) => {
                Ok(DataType::Utf8)
            }
            _ => plan_err!("DATE_FORMAT expects a timestamp and a pattern, got {args:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [time, pattern] = args.args.as_slice() else {
            return exec_err!("DATE_FORMAT expects two arguments");
        };
        let times = millis(time, rows)?;
        let patterns = pattern.to_array(rows)?;
        let patterns = datafusion::arrow::compute::cast(&patterns, &DataType::Utf8)?;
        let patterns = patterns
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("pattern".into()))?;
        // The pattern is almost always one literal: convert it once.
        let mut converted: Option<(String, String)> = None;
        let mut out = StringBuilder::with_capacity(rows, rows * 16);
        for i in 0..rows {
            if times.is_null(i) || patterns.is_null(i) {
                out.append_null();
                continue;
            }
            let pattern = patterns.value(i);
            if converted.as_ref().is_none_or(|(p, _)| p != pattern) {
                converted = Some((pattern.to_string(), java_to_chrono(pattern)));
            }
            let format = converted.as_ref().map_or("", |(_, f)| f.as_str());
            match chrono::DateTime::from_timestamp_millis(times.value(i)) {
                Some(t) => out.append_value(t.naive_utc().format(format).to_string()),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}

/// Flink's `HOUR(timestamp)`: the hour of the day, 0 to 23.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Hour {
    signature: Signature,
}

impl Hour {
    pub fn new() -> Self {
        Hour {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Hour {
    fn name(&self) -> &str {
        "hour"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [t] if t.is_temporal() || matches!(t, DataType::Utf8 | DataType::Null) => {
                Ok(DataType::Int64)
            }
            _ => plan_err!("HOUR expects a timestamp, got {args:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [time] = args.args.as_slice() else {
            return exec_err!("HOUR expects one argument");
        };
        let times = millis(time, rows)?;
        let mut out = Int64Builder::with_capacity(rows);
        for i in 0..rows {
            if times.is_null(i) {
                out.append_null();
            } else {
                out.append_value(times.value(i).div_euclid(3_600_000).rem_euclid(24));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::java_to_chrono;

    #[test]
    fn java_patterns_become_chrono_formats() {
        assert_eq!(java_to_chrono("yyyy-MM-dd"), "%Y-%m-%d");
        assert_eq!(java_to_chrono("HH:mm"), "%H:%M");
        assert_eq!(
            java_to_chrono("yyyy-MM-dd HH:mm:ss.SSS"),
            "%Y-%m-%d %H:%M:%S.%3f"
        );
        assert_eq!(java_to_chrono("'day' d, h a"), "day %-d, %-I %p");
        assert_eq!(java_to_chrono("100%"), "100%%");
    }
}
