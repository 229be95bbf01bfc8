//! Durations written as SQL intervals: `INTERVAL '10' SECOND`,
//! `INTERVAL '1.5' SECONDS`, `INTERVAL '1' MINUTE`, `INTERVAL '00:05' MINUTE TO SECOND`.

use sqlparser::ast::{DateTimeField, Expr, Interval, Value};

use crate::error::{Result, SqlError};

/// Milliseconds of a SQL interval literal.
pub fn interval_millis(expr: &Expr) -> Result<i64> {
    let position = first_position(expr);
    let error = |m: String| {
        let e = SqlError::new(m).with_hint(
            "write durations as INTERVAL '10' SECOND, '5' MINUTE, '100' MILLISECOND ...",
        );
        match position {
            Some(p) => e.at(p),
            None => e,
        }
    };
    let Expr::Interval(Interval {
        value,
        leading_field,
        last_field,
        ..
    }) = expr
    else {
        return Err(error(format!("expected an INTERVAL, found {expr}")));
    };
    let text = match value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
            other => return Err(error(format!("unsupported interval value {other}"))),
        },
        other => return Err(error(format!("unsupported interval value {other}"))),
    };
    let unit = |f: &Option<DateTimeField>| -> Result<f64> {
        Ok(match f {
            None | Some(DateTimeField::Second) | Some(DateTimeField::Seconds) => 1000.0,
            Some(DateTimeField::Millisecond) | Some(DateTimeField::Milliseconds) => 1.0,
            Some(DateTimeField::Minute) | Some(DateTimeField::Minutes) => 60_000.0,
            Some(DateTimeField::Hour) | Some(DateTimeField::Hours) => 3_600_000.0,
            Some(DateTimeField::Day) | Some(DateTimeField::Days) => 86_400_000.0,
            Some(other) => return Err(error(format!("unsupported interval unit {other}"))),
        })
    };
    let millis = match last_field {
        // 'HH:MM' HOUR TO MINUTE, 'MM:SS' MINUTE TO SECOND, ...
        Some(last) => {
            let parts: Vec<&str> = text.trim().split(':').collect();
            let mut scale = unit(&Some(last.clone()))?;
            let mut total = 0.0;
            for part in parts.iter().rev() {
                let v: f64 = part
                    .trim()
                    .parse()
                    .map_err(|_| error(format!("bad interval '{text}'")))?;
                total += v * scale;
                scale *= 60.0;
            }
            total
        }
        None => {
            let v: f64 = text
                .trim()
                .parse()
                .map_err(|_| error(format!("bad interval '{text}'")))?;
            v * unit(leading_field)?
        }
    };
    if !millis.is_finite() || millis.abs() > 1e15 {
        return Err(error(format!("interval '{text}' is out of range")));
    }
    Ok(millis.round() as i64)
}

fn first_position(expr: &Expr) -> Option<sqlparser::tokenizer::Location> {
    use sqlparser::ast::Spanned;
    let span = expr.span();
    (span.start.line > 0).then_some(span.start)
}
