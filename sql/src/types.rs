//! Flink column types, including the nested `ROW<...>`, `ARRAY<...>` and
//! `MAP<...>` that sqlparser does not parse.

use sqlparser::ast::DataType;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::error::{Result, SqlError};
use crate::statement::ColumnType;

/// Parses a type. `owed_gt` tracks a `>` consumed as half of a `>>` token.
pub(crate) fn parse_column_type(p: &mut Parser<'_>, owed_gt: &mut bool) -> Result<ColumnType> {
    let token = p.peek_token();
    let word = match &token.token {
        Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let next = p.peek_nth_token(1).token;
    let nested_open = matches!(next, Token::Lt | Token::LParen);
    match word.as_str() {
        "ROW" | "STRUCT" if nested_open => {
            p.next_token();
            let angle = matches!(p.next_token().token, Token::Lt);
            let mut fields = Vec::new();
            if !close(p, angle, owed_gt)? {
                loop {
                    let name = p.parse_identifier()?;
                    let ty = parse_column_type(p, owed_gt)?;
                    skip_comment(p);
                    fields.push((name, ty));
                    if *owed_gt && angle {
                        // `>>` closed an inner type and this one.
                        *owed_gt = false;
                        return Ok(ColumnType::Row(fields));
                    }
                    if p.consume_token(&Token::Comma) {
                        continue;
                    }
                    if close(p, angle, owed_gt)? {
                        break;
                    }
                    return Err(expected(p, "',' or the end of the ROW type"));
                }
            }
            Ok(ColumnType::Row(fields))
        }
        "ARRAY" if matches!(next, Token::Lt) => {
            p.next_token();
            p.next_token();
            let element = parse_column_type(p, owed_gt)?;
            if *owed_gt {
                *owed_gt = false;
            } else if !close(p, true, owed_gt)? {
                return Err(expected(p, "'>' after the ARRAY element type"));
            }
            Ok(ColumnType::Array(Box::new(element)))
        }
        "MAP" if matches!(next, Token::Lt) => {
            p.next_token();
            p.next_token();
            let key = parse_column_type(p, owed_gt)?;
            p.expect_token(&Token::Comma)?;
            let value = parse_column_type(p, owed_gt)?;
            if *owed_gt {
                *owed_gt = false;
            } else if !close(p, true, owed_gt)? {
                return Err(expected(p, "'>' after the MAP value type"));
            }
            Ok(ColumnType::Map(Box::new(key), Box::new(value)))
        }
        "STRING" => {
            p.next_token();
            Ok(ColumnType::Scalar(DataType::String(None)))
        }
        "TIMESTAMP_LTZ" => {
            p.next_token();
            let precision = parse_precision(p)?;
            Ok(ColumnType::Scalar(DataType::Timestamp(
                precision,
                sqlparser::ast::TimezoneInfo::WithTimeZone,
            )))
        }
        _ => {
            let ty = p.parse_data_type()?;
            // TIMESTAMP(3) WITH LOCAL TIME ZONE
            if matches!(ty, DataType::Timestamp(..)) {
                let save = p.index();
                if p.parse_keyword(sqlparser::keywords::Keyword::WITH)
                    && p.parse_keyword(sqlparser::keywords::Keyword::LOCAL)
                {
                    p.expect_keyword(sqlparser::keywords::Keyword::TIME)?;
                    p.expect_keyword(sqlparser::keywords::Keyword::ZONE)?;
                    if let DataType::Timestamp(precision, _) = ty {
                        return Ok(ColumnType::Scalar(DataType::Timestamp(
                            precision,
                            sqlparser::ast::TimezoneInfo::WithTimeZone,
                        )));
                    }
                } else {
                    while p.index() > save {
                        p.prev_token();
                    }
                }
            }
            Ok(ColumnType::Scalar(ty))
        }
    }
}

fn parse_precision(p: &mut Parser<'_>) -> Result<Option<u64>> {
    if p.consume_token(&Token::LParen) {
        let n = match p.next_token().token {
            Token::Number(n, _) => n.parse().ok(),
            _ => None,
        };
        p.expect_token(&Token::RParen)?;
        Ok(n)
    } else {
        Ok(None)
    }
}

/// Consumes the closing bracket of a nested type if it is next.
fn close(p: &mut Parser<'_>, angle: bool, owed_gt: &mut bool) -> Result<bool> {
    if !angle {
        return Ok(p.consume_token(&Token::RParen));
    }
    if p.consume_token(&Token::Gt) {
        return Ok(true);
    }
    if p.consume_token(&Token::ShiftRight) {
        *owed_gt = true;
        return Ok(true);
    }
    Ok(false)
}

fn skip_comment(p: &mut Parser<'_>) {
    if p.parse_keyword(sqlparser::keywords::Keyword::COMMENT) {
        p.next_token();
    }
}

fn expected(p: &Parser<'_>, what: &str) -> SqlError {
    let found = p.peek_token();
    SqlError::new(format!("expected {what}, found {}", found.token)).at(found.span.start)
}
