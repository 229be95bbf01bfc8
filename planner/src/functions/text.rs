//! Flink's string functions that DataFusion lacks: `REGEXP_EXTRACT(s,
//! regex [, group])` and `SPLIT_INDEX(s, separator, index)`; and the
//! Nexmark benchmark's `CountChar` UDF, which `q14` declares by its Java
//! class name.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, Int64Builder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// An argument as strings.
fn strings(value: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let array = cast(&value.to_array(rows)?, &DataType::Utf8)?;
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("not a string".into()))
}

/// An argument as integers.
fn integers(value: &ColumnarValue, rows: usize) -> Result<Int64Array> {
    let array = cast(&value.to_array(rows)?, &DataType::Int64)?;
    array
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("not an integer".into()))
}

fn text_result(args: &[DataType], name: &str, arity: &[usize]) -> Result<DataType> {
    if !arity.contains(&args.len()) {
        return plan_err!("{name} takes {arity:?} arguments, got {}", args.len());
    }
    Ok(DataType::Utf8)
}

/// Flink's `REGEXP_EXTRACT(s, regex [, group])`: group `group` (default 1;
/// 0 is the whole match) of the first match, or NULL without a match or
/// with an invalid pattern or group.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct RegexpExtract {
    signature: Signature,
}

impl RegexpExtract {
    pub fn new() -> Self {
        RegexpExtract {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        text_result(args, "REGEXP_EXTRACT", &[2, 3])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let (text, pattern, group) = match args.args.as_slice() {
            [t, p] => (strings(t, rows)?, strings(p, rows)?, None),
            [t, p, g] => (
                strings(t, rows)?,
                strings(p, rows)?,
                Some(integers(g, rows)?),
            ),
            _ => return exec_err!("REGEXP_EXTRACT takes two or three arguments"),
        };
        // The pattern is almost always one literal: compile it once.
        let mut compiled: Option<(String, Option<regex::Regex>)> = None;
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for i in 0..rows {
            let index = match &group {
                Some(g) if g.is_null(i) => None,
                Some(g) => usize::try_from(g.value(i)).ok(),
                None => Some(1),
            };
            if text.is_null(i) || pattern.is_null(i) {
                out.append_null();
                continue;
            }
            let source = pattern.value(i);
            if compiled.as_ref().is_none_or(|(p, _)| p != source) {
                compiled = Some((source.to_string(), regex::Regex::new(source).ok()));
            }
            let found = compiled
                .as_ref()
                .and_then(|(_, r)| r.as_ref())
                .zip(index)
                .and_then(|(r, index)| r.captures(text.value(i))?.get(index))
                .map(|m| m.as_str());
            out.append_option(found);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}

/// Flink's `SPLIT_INDEX(s, separator, index)`: the `index`-th (from 0)
/// part of `s` split at every `separator` (empty parts kept), or NULL
/// when there is no such part.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct SplitIndex {
    signature: Signature,
}

impl SplitIndex {
    pub fn new() -> Self {
        SplitIndex {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SplitIndex {
    fn name(&self) -> &str {
        "split_index"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        text_result(args, "SPLIT_INDEX", &[3])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [text, separator, index] = args.args.as_slice() else {
            return exec_err!("SPLIT_INDEX takes three arguments");
        };
        let (text, separator, index) = (
            strings(text, rows)?,
            strings(separator, rows)?,
            integers(index, rows)?,
        );
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for i in 0..rows {
            if text.is_null(i) || separator.is_null(i) || index.is_null(i) {
                out.append_null();
                continue;
            }
            let part = usize::try_from(index.value(i)).ok().and_then(|n| {
                let separator = separator.value(i);
                if separator.is_empty() {
                    text.value(i).split_whitespace().nth(n)
                } else {
                    text.value(i).split(separator).nth(n)
                }
            });
            out.append_option(part);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}

/// The Nexmark benchmark's `CountChar(s, c)`: how often the first
/// character of `c` occurs in `s` (0 for NULL), registered under the name
/// a `CREATE FUNCTION ... AS 'com.github.nexmark.flink.udf.CountChar'`
/// gives it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct CountChar {
    name: String,
    signature: Signature,
}

impl CountChar {
    pub fn named(name: &str) -> Self {
        CountChar {
            name: name.to_string(),
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CountChar {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [text, character] = args.args.as_slice() else {
            return exec_err!("count_char takes two arguments");
        };
        let (text, character) = (strings(text, rows)?, strings(character, rows)?);
        let mut out = Int64Builder::with_capacity(rows);
        for i in 0..rows {
            let wanted = (!character.is_null(i))
                .then(|| character.value(i).chars().next())
                .flatten();
            let count = match (text.is_null(i), wanted) {
                (false, Some(c)) => text.value(i).chars().filter(|x| *x == c).count() as i64,
                _ => 0,
            };
            out.append_value(count);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
