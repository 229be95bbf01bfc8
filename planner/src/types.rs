//! Flink column types as Arrow types.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use weir_sql::sqlparser::ast::{self, ExactNumberInfo, TimezoneInfo};
use weir_sql::{ColumnType, SqlError};

/// The Arrow type of a Flink column type.
///
/// `TIMESTAMP(p)` keeps Flink's precision: `p <= 3` is milliseconds (so
/// `TIMESTAMP(3)` is Arrow `Timestamp(Millisecond)`), `p <= 6` microseconds;
/// `TIMESTAMP_LTZ` and `WITH (LOCAL) TIME ZONE` carry the UTC zone.
pub fn arrow_type(ty: &ColumnType) -> Result<DataType, SqlError> {
    match ty {
        ColumnType::Row(fields) => {
            let fields = fields
                .iter()
                .map(|(name, ty)| {
                    Ok(Arc::new(Field::new(
                        name.value.clone(),
                        arrow_type(ty)?,
                        true,
                    )))
                })
                .collect::<Result<Vec<_>, SqlError>>()?;
            Ok(DataType::Struct(Fields::from(fields)))
        }
        ColumnType::Array(element) => Ok(DataType::List(Arc::new(Field::new(
            "element",
            arrow_type(element)?,
            true,
        )))),
        ColumnType::Map(key, value) => {
            let entries = Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(key)?, false),
                    Field::new("value", arrow_type(value)?, true),
                ])),
                false,
            );
            Ok(DataType::Map(Arc::new(entries), false))
        }
        ColumnType::Scalar(t) => scalar_type(t),
    }
}

fn timestamp_unit(precision: Option<u64>) -> TimeUnit {
    match precision {
        Some(0..=3) => TimeUnit::Millisecond,
        Some(4..=6) | None => TimeUnit::Microsecond,
        Some(_) => TimeUnit::Nanosecond,
    }
}

fn scalar_type(t: &ast::DataType) -> Result<DataType, SqlError> {
    use ast::DataType as T;
    Ok(match t {
        T::Timestamp(p, tz) => {
            let zone = match tz {
                TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => Some("UTC".into()),
                _ => None,
            };
            DataType::Timestamp(timestamp_unit(*p), zone)
        }
        T::Decimal(info) | T::Numeric(info) | T::Dec(info) => match info {
            ExactNumberInfo::None => DataType::Decimal128(10, 0),
            ExactNumberInfo::Precision(p) => DataType::Decimal128(*p as u8, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => DataType::Decimal128(*p as u8, *s as i8),
        },
        T::Date => DataType::Date32,
        T::Boolean | T::Bool => DataType::Boolean,
        _ => {
            let text = t.to_string().to_ascii_uppercase();
            let base = text.split(['(', ' ']).next().unwrap_or("");
            match base {
                "BIGINT" | "INT8" | "INT64" => DataType::Int64,
                "INT" | "INTEGER" | "INT4" | "INT32" => DataType::Int32,
                "SMALLINT" | "INT2" => DataType::Int16,
                "TINYINT" => DataType::Int8,
                "DOUBLE" | "FLOAT8" | "FLOAT64" => DataType::Float64,
                "FLOAT" | "REAL" | "FLOAT4" | "FLOAT32" => DataType::Float32,
                "VARCHAR" | "CHAR" | "STRING" | "TEXT" | "CHARACTER" | "NVARCHAR" => DataType::Utf8,
                "BYTES" | "VARBINARY" | "BINARY" | "BYTEA" | "BLOB" => DataType::Binary,
                "TIME" => DataType::Time64(TimeUnit::Microsecond),
                _ => {
                    return Err(SqlError::new(format!("unsupported column type {t}")).with_hint(
                        "Weir supports BIGINT, INT, SMALLINT, TINYINT, DOUBLE, FLOAT, DECIMAL(p, s), VARCHAR/STRING, BOOLEAN, BYTES, DATE, TIME, TIMESTAMP(p), TIMESTAMP_LTZ(p), ROW<...>, ARRAY<...>, MAP<...>",
                    ))
                }
            }
        }
    })
}

/// A type as Flink writes it, for DESCRIBE.
pub fn flink_type_name(t: &DataType) -> String {
    match t {
        DataType::Int64 => "BIGINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Timestamp(unit, tz) => {
            let p = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            };
            if tz.is_some() {
                format!("TIMESTAMP_LTZ({p})")
            } else {
                format!("TIMESTAMP({p})")
            }
        }
        DataType::Struct(fields) => format!(
            "ROW<{}>",
            fields
                .iter()
                .map(|f| format!("`{}` {}", f.name(), flink_type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DataType::List(f) => format!("ARRAY<{}>", flink_type_name(f.data_type())),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP<{}, {}>",
                flink_type_name(kv[0].data_type()),
                flink_type_name(kv[1].data_type())
            ),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}
