//! Splitting a text into statements and parsing each one.

use sqlparser::ast::{self, Ident, ObjectName};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::dialect::FlinkDialect;
use crate::error::{Position, Result, SqlError};
use crate::statement::*;
use crate::types::parse_column_type;
use crate::window::{extract_window_tvfs, rewrite_group_windows, WindowTvf};

/// One statement of a text, with where it is.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub statement: Statement,
    /// The statement's own text.
    pub text: String,
    pub position: Position,
}

/// Parses every `;`-separated statement of `sql`.
pub fn parse(sql: &str) -> Result<Vec<ParsedStatement>> {
    let dialect = FlinkDialect::default();
    let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location()?;
    let mut statements = Vec::new();
    for chunk in split_statements(tokens) {
        let start = chunk[0].span.start;
        let end = chunk[chunk.len() - 1].span.end;
        let text = slice_text(sql, start, end);
        // An error at the end of input has no token to point at: point
        // just past the statement.
        let statement = parse_tokens(chunk, &text).map_err(|e| match e.position {
            Some(_) => e,
            None => e.at(Location::new(end.line, end.column + 1)),
        })?;
        statements.push(ParsedStatement {
            statement,
            text,
            position: start.into(),
        });
    }
    Ok(statements)
}

/// Parses exactly one statement.
pub fn parse_statement(sql: &str) -> Result<Statement> {
    let mut all = parse(sql)?;
    match all.len() {
        1 => Ok(all.remove(0).statement),
        0 => Err(SqlError::new("empty statement")),
        n => Err(SqlError::new(format!("expected one statement, found {n}"))
            .at(all[1].position)
            .with_hint("run one statement at a time here")),
    }
}

/// Whether `text` holds at least one complete statement (ends with `;`
/// outside quotes and comments): what a REPL waits for.
pub fn is_complete(text: &str) -> bool {
    let dialect = FlinkDialect::default();
    match Tokenizer::new(&dialect, text).tokenize_with_location() {
        Ok(tokens) => {
            let ends_with_semicolon = tokens
                .iter()
                .rev()
                .find(|t| !matches!(t.token, Token::Whitespace(_)))
                .is_some_and(|t| t.token == Token::SemiColon);
            // A statement set is complete at its `END;`.
            let open_set = split_statements(tokens)
                .last()
                .is_some_and(|last| opens_statement_set(last) && !ends_with_end(last));
            ends_with_semicolon && !open_set
        }
        // An unterminated string or comment: keep reading.
        Err(_) => false,
    }
}

/// The words that open a statement set: Flink's `EXECUTE STATEMENT SET
/// BEGIN ... END;`, or its SQL client's `BEGIN STATEMENT SET; ... END;`.
fn statement_set_header(tokens: &[TokenWithSpan]) -> Option<usize> {
    let words = upper_words(tokens, 4);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["EXECUTE", "STATEMENT", "SET", "BEGIN"] => Some(4),
        ["BEGIN", "STATEMENT", "SET", ..] => Some(3),
        _ => None,
    }
}

/// Whether `tokens` open a statement set, explained or not.
fn opens_statement_set(tokens: &[TokenWithSpan]) -> bool {
    let words = upper_words(tokens, 3);
    let skip = match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["EXPLAIN", "PLAN", "FOR"] => 3,
        ["EXPLAIN", ..] => 1,
        _ => 0,
    };
    let mut seen = 0;
    let rest: Vec<TokenWithSpan> = tokens
        .iter()
        .skip_while(|t| {
            if seen == skip {
                return false;
            }
            if !matches!(t.token, Token::Whitespace(_)) {
                seen += 1;
            }
            true
        })
        .cloned()
        .collect();
    statement_set_header(&rest).is_some()
}

/// Whether the last word of `tokens` is `END` (a statement set's close).
fn ends_with_end(tokens: &[TokenWithSpan]) -> bool {
    tokens
        .iter()
        .rev()
        .find(|t| !matches!(t.token, Token::Whitespace(_)))
        .is_some_and(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case("END")))
}

fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut depth = 0i32;
    for t in tokens {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            // A statement set's statements end with `;` inside it.
            Token::SemiColon if opens_statement_set(&current) && !ends_with_end(&current) => {}
            Token::SemiColon if depth <= 0 => {
                if current
                    .iter()
                    .any(|t| !matches!(t.token, Token::Whitespace(_)))
                {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        if current.is_empty() && matches!(t.token, Token::Whitespace(_)) {
            continue;
        }
        current.push(t);
    }
    if current
        .iter()
        .any(|t| !matches!(t.token, Token::Whitespace(_)))
    {
        out.push(current);
    }
    // Trailing whitespace and comments are not part of the statement.
    for chunk in &mut out {
        while chunk
            .last()
            .is_some_and(|t| matches!(t.token, Token::Whitespace(_)))
        {
            chunk.pop();
        }
    }
    out
}

fn slice_text(sql: &str, start: Location, end: Location) -> String {
    let offset = |l: Location| -> usize {
        let mut off = 0;
        for (i, line) in sql.split_inclusive('\n').enumerate() {
            if i + 1 == l.line as usize {
                return off
                    + line
                        .char_indices()
                        .nth((l.column as usize).saturating_sub(1))
                        .map_or(line.len(), |(b, _)| b);
            }
            off += line.len();
        }
        sql.len()
    };
    let (a, b) = (offset(start), offset(end).min(sql.len()));
    sql.get(a..b.max(a)).unwrap_or_default().to_string()
}

fn upper_words(tokens: &[TokenWithSpan], n: usize) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .take(n)
        .map(|t| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect()
}

fn parse_tokens(tokens: Vec<TokenWithSpan>, text: &str) -> Result<Statement> {
    let words = upper_words(&tokens, 6);
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let dialect = FlinkDialect::default();

    if let Some(header) = statement_set_header(&tokens) {
        return parse_statement_set(tokens, header, text);
    }

    if w(0) == "EXPLAIN" {
        let mut rest: Vec<TokenWithSpan> = tokens
            .into_iter()
            .skip_while(
                |t| !matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case("EXPLAIN")),
            )
            .skip(1)
            .collect();
        // EXPLAIN PLAN FOR ...
        let lead = upper_words(&rest, 2);
        if lead.first().map(String::as_str) == Some("PLAN")
            && lead.get(1).map(String::as_str) == Some("FOR")
        {
            let mut seen = 0;
            rest.retain(|t| {
                if seen < 2 && !matches!(t.token, Token::Whitespace(_)) {
                    seen += 1;
                    return false;
                }
                true
            });
        }
        let inner = parse_tokens(rest, text)?;
        return Ok(Statement::Explain(Box::new(inner)));
    }

    let is_create_stream = w(0) == "CREATE" && {
        let mut i = 1;
        if w(i) == "OR" && w(i + 1) == "REPLACE" {
            i += 2;
        }
        if w(i) == "TEMPORARY" {
            i += 1;
        }
        matches!(w(i), "TABLE" | "STREAM")
    };

    // CREATE [TEMPORARY [SYSTEM]] FUNCTION [IF NOT EXISTS] name AS 'class'
    // [LANGUAGE JAVA]: Flink's, not sqlparser's.
    let function_at = (w(0) == "CREATE").then(|| {
        let mut i = 1;
        if w(i) == "TEMPORARY" {
            i += 1;
            if w(i) == "SYSTEM" {
                i += 1;
            }
        }
        (w(i) == "FUNCTION").then_some(i + 1)
    });

    let mut windows: Vec<WindowTvf> = Vec::new();
    let tokens = extract_window_tvfs(tokens, &mut windows)?;
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);

    let statement = if is_create_stream {
        parse_create_stream(&mut p)?
    } else if let Some(Some(skip)) = function_at {
        for _ in 0..skip {
            p.next_token();
        }
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = p.parse_object_name(false)?;
        p.expect_keyword(Keyword::AS)?;
        let class = p.parse_literal_string()?;
        let language = if p.parse_keyword(Keyword::LANGUAGE) {
            Some(p.parse_identifier()?.value)
        } else {
            None
        };
        Statement::CreateFunction {
            name,
            class,
            language,
            if_not_exists,
        }
    } else {
        match (w(0), w(1)) {
            ("SHOW", "CREATE") => {
                p.next_token();
                p.next_token();
                let kind = p.next_token();
                let object = match &kind.token {
                    Token::Word(w) if w.value.eq_ignore_ascii_case("VIEW") => ShowCreateKind::View,
                    Token::Word(w)
                        if w.value.eq_ignore_ascii_case("TABLE")
                            || w.value.eq_ignore_ascii_case("STREAM") =>
                    {
                        ShowCreateKind::Stream
                    }
                    other => {
                        return Err(SqlError::new(format!("cannot SHOW CREATE {other}"))
                            .at(kind.span.start)
                            .with_hint("SHOW CREATE TABLE name, SHOW CREATE STREAM name or SHOW CREATE VIEW name"))
                    }
                };
                Statement::ShowCreate {
                    kind: object,
                    name: p.parse_object_name(false)?,
                }
            }
            ("SHOW", kind) => {
                p.next_token();
                p.next_token();
                let object = match kind {
                    "STREAMS" => ShowObject::Streams,
                    "TABLES" => ShowObject::Tables,
                    "VIEWS" => ShowObject::Views,
                    "JOBS" => ShowObject::Jobs,
                    "FUNCTIONS" => ShowObject::Functions,
                    _ => return Err(SqlError::new(format!("cannot SHOW {kind}"))
                        .at(p.peek_nth_token(0).span.start)
                        .with_hint(
                            "SHOW STREAMS, SHOW TABLES, SHOW VIEWS, SHOW JOBS, SHOW FUNCTIONS or SHOW CREATE TABLE name",
                        )),
                };
                Statement::Show(object)
            }
            ("DESCRIBE" | "DESC", "JOB") => {
                p.next_token();
                p.next_token();
                Statement::DescribeJob(parse_name_or_string(&mut p)?)
            }
            ("DESCRIBE" | "DESC", _) => {
                p.next_token();
                Statement::Describe(p.parse_object_name(false)?)
            }
            ("STOP", "JOB") => {
                p.next_token();
                p.next_token();
                Statement::StopJob(parse_name_or_string(&mut p)?)
            }
            ("SET", _) => {
                p.next_token();
                if p.peek_token().token == Token::EOF {
                    Statement::Set {
                        key: None,
                        value: None,
                    }
                } else {
                    let key = parse_name_or_string(&mut p)?;
                    p.expect_token(&Token::Eq)?;
                    let value = parse_name_or_string(&mut p)?;
                    Statement::Set {
                        key: Some(key),
                        value: Some(value),
                    }
                }
            }
            ("RESET", _) => {
                p.next_token();
                let key = if p.peek_token().token == Token::EOF {
                    None
                } else {
                    Some(parse_name_or_string(&mut p)?)
                };
                Statement::Reset { key }
            }
            ("DROP", kind @ ("TABLE" | "STREAM" | "VIEW")) => {
                p.next_token();
                p.next_token();
                let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
                let name = p.parse_object_name(false)?;
                Statement::Drop {
                    kind: if kind == "VIEW" {
                        DropKind::View
                    } else {
                        DropKind::Stream
                    },
                    name,
                    if_exists,
                }
            }
            _ => {
                let parsed = p.parse_statement()?;
                from_sqlparser(parsed, text, &mut windows)?
            }
        }
    };
    let rest = p.peek_token();
    if rest.token != Token::EOF {
        return Err(
            SqlError::new(format!("unexpected {} after the statement", rest.token))
                .at(rest.span.start)
                .with_hint("separate statements with ';'"),
        );
    }
    if !windows.is_empty()
        && !matches!(
            statement,
            Statement::Query(_) | Statement::Insert(_) | Statement::CreateView(_)
        )
    {
        return Err(
            SqlError::new("window functions are only allowed in queries").at(windows[0].position),
        );
    }
    Ok(statement)
}

/// The `INSERT INTO`s of a statement set (after its `header` words,
/// up to its `END`).
fn parse_statement_set(tokens: Vec<TokenWithSpan>, header: usize, text: &str) -> Result<Statement> {
    let mut words = 0;
    let mut body: Vec<TokenWithSpan> = tokens
        .into_iter()
        .skip_while(|t| {
            if words == header {
                return false;
            }
            if !matches!(t.token, Token::Whitespace(_)) {
                words += 1;
            }
            true
        })
        .collect();
    if !ends_with_end(&body) {
        return Err(SqlError::new("a statement set ends with END;")
            .with_hint("EXECUTE STATEMENT SET BEGIN INSERT INTO ...; INSERT INTO ...; END;"));
    }
    while body
        .last()
        .is_some_and(|t| matches!(t.token, Token::Whitespace(_)))
    {
        body.pop();
    }
    let end = body.pop();
    let mut inserts = Vec::new();
    for chunk in split_statements(body) {
        let start = chunk[0].span.start;
        let statement = parse_tokens(chunk, text)?;
        match statement {
            Statement::Insert(insert) => inserts.push(insert),
            _ => {
                return Err(
                    SqlError::new("a statement set holds only INSERT INTO statements")
                        .at(start)
                        .with_hint("run other statements before EXECUTE STATEMENT SET"),
                )
            }
        }
    }
    if inserts.is_empty() {
        let e = SqlError::new("an empty statement set")
            .with_hint("EXECUTE STATEMENT SET BEGIN INSERT INTO ...; INSERT INTO ...; END;");
        return Err(match end {
            Some(end) => e.at(end.span.start),
            None => e,
        });
    }
    Ok(Statement::StatementSet(inserts))
}

fn parse_name_or_string(p: &mut Parser<'_>) -> Result<String> {
    let t = p.next_token();
    match t.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Ok(s),
        Token::Word(w) => {
            // Dotted keys without quotes: execution.checkpointing.interval
            let mut s = w.value;
            while p.consume_token(&Token::Period) {
                match p.next_token().token {
                    Token::Word(w) => {
                        s.push('.');
                        s.push_str(&w.value);
                    }
                    other => {
                        return Err(SqlError::new(format!("unexpected {other}")).at(t.span.start))
                    }
                }
            }
            Ok(s)
        }
        Token::Number(n, _) => Ok(n),
        other => Err(
            SqlError::new(format!("expected a name or a quoted string, found {other}"))
                .at(t.span.start),
        ),
    }
}

/// Converts statements sqlparser parsed (queries, INSERT, CREATE VIEW).
fn from_sqlparser(
    statement: ast::Statement,
    text: &str,
    windows: &mut Vec<WindowTvf>,
) -> Result<Statement> {
    let make_query = |mut query: Box<ast::Query>, windows: &mut Vec<WindowTvf>| -> Result<Query> {
        rewrite_group_windows(&mut query, windows)?;
        crate::over_alias::lift_over_filters(&mut query);
        crate::lookup::mark_temporal_joins(&mut query)?;
        Ok(Query {
            query,
            windows: std::mem::take(windows),
            text: text.to_string(),
        })
    };
    match statement {
        ast::Statement::Query(query) => Ok(Statement::Query(make_query(query, windows)?)),
        ast::Statement::Insert(insert) => {
            let sink = match insert.table {
                ast::TableObject::TableName(name) => name,
                other => return Err(SqlError::new(format!("cannot INSERT INTO {other}"))),
            };
            let source = insert.source.ok_or_else(|| {
                SqlError::new("INSERT INTO needs a SELECT")
                    .with_hint("INSERT INTO sink SELECT ... FROM stream")
            })?;
            Ok(Statement::Insert(Insert {
                sink,
                columns: insert.columns.into_iter().map(column_ident).collect(),
                query: make_query(source, windows)?,
            }))
        }
        ast::Statement::CreateView(view) => Ok(Statement::CreateView(CreateView {
            name: view.name,
            columns: view.columns.into_iter().map(|c| c.name).collect(),
            query: make_query(view.query, windows)?,
            or_replace: view.or_replace,
            if_not_exists: view.if_not_exists,
        })),
        other => {
            let first = other
                .to_string()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            Err(SqlError::new(format!("'{first} ...' is not supported by Weir")).with_hint(
                "Weir runs CREATE STREAM/TABLE, CREATE VIEW, INSERT INTO, SELECT, SET, EXPLAIN, SHOW and DESCRIBE",
            ))
        }
    }
}

fn column_ident(c: ast::ObjectName) -> Ident {
    c.0.last()
        .and_then(|p| p.as_ident().cloned())
        .unwrap_or_else(|| Ident::new(c.to_string()))
}

/// `CREATE [OR REPLACE] [TEMPORARY] TABLE|STREAM [IF NOT EXISTS] name (...) [PARTITIONED BY (...)] [WITH (...)]`
fn parse_create_stream(p: &mut Parser<'_>) -> Result<Statement> {
    let position: Position = p.peek_token().span.start.into();
    p.expect_keyword(Keyword::CREATE)?;
    let or_replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    let _ = p.parse_keyword(Keyword::TEMPORARY);
    let is_stream = match p.next_token().token {
        Token::Word(w) => w.value.eq_ignore_ascii_case("STREAM"),
        _ => false,
    };
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    if p.consume_token(&Token::LParen) && !p.consume_token(&Token::RParen) {
        loop {
            let mut owed_gt = false;
            if word_next(p, "WATERMARK") && {
                p.next_token();
                true
            } {
                p.expect_keyword(Keyword::FOR)?;
                let column = p.parse_identifier()?;
                p.expect_keyword(Keyword::AS)?;
                let expr = p.parse_expr()?;
                if watermark.is_some() {
                    return Err(SqlError::new("a stream can declare only one WATERMARK")
                        .at(column.span.start));
                }
                watermark = Some(WatermarkDef { column, expr });
            } else if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
                primary_key = p.parse_parenthesized_column_list(
                    sqlparser::parser::IsOptional::Mandatory,
                    false,
                )?;
                let _ = p.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]);
            } else if p.parse_keyword(Keyword::CONSTRAINT) {
                p.parse_identifier()?;
                p.expect_keywords(&[Keyword::PRIMARY, Keyword::KEY])?;
                primary_key = p.parse_parenthesized_column_list(
                    sqlparser::parser::IsOptional::Mandatory,
                    false,
                )?;
                let _ = p.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]);
            } else {
                let name = p.parse_identifier()?;
                let kind = if p.parse_keyword(Keyword::AS) {
                    ColumnKind::Computed(Box::new(p.parse_expr()?))
                } else {
                    let data_type = parse_column_type(p, &mut owed_gt)?;
                    if word_next(p, "METADATA") {
                        p.next_token();
                        let key = if p.parse_keyword(Keyword::FROM) {
                            Some(parse_name_or_string(p)?)
                        } else {
                            None
                        };
                        let is_virtual = word_next(p, "VIRTUAL") && {
                            p.next_token();
                            true
                        };
                        ColumnKind::Metadata {
                            data_type,
                            key,
                            is_virtual,
                        }
                    } else {
                        let not_null = p.parse_keywords(&[Keyword::NOT, Keyword::NULL]);
                        if !not_null {
                            let _ = p.parse_keyword(Keyword::NULL);
                        }
                        if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
                            primary_key = vec![name.clone()];
                            let _ = p.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]);
                        }
                        ColumnKind::Physical {
                            data_type,
                            not_null,
                        }
                    }
                };
                let comment = if p.parse_keyword(Keyword::COMMENT) {
                    Some(parse_name_or_string(p)?)
                } else {
                    None
                };
                columns.push(Column {
                    name,
                    kind,
                    comment,
                });
            }
            if p.consume_token(&Token::Comma) {
                continue;
            }
            if p.consume_token(&Token::RParen) {
                break;
            }
            let t = p.peek_token();
            return Err(SqlError::new(format!("expected ',' or ')' after a column, found {}", t.token))
                .at(t.span.start)
                .with_hint("columns are `name TYPE`, `name AS expression` or `WATERMARK FOR column AS expression`"));
        }
    }
    if p.parse_keyword(Keyword::COMMENT) {
        p.next_token();
    }
    let mut partitioned_by = Vec::new();
    if p.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        partitioned_by =
            p.parse_parenthesized_column_list(sqlparser::parser::IsOptional::Mandatory, false)?;
    }
    let mut options = Vec::new();
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        if !p.consume_token(&Token::RParen) {
            loop {
                let key = parse_name_or_string(p)?;
                p.expect_token(&Token::Eq)?;
                let value = parse_name_or_string(p)?;
                options.push((key, value));
                if p.consume_token(&Token::Comma) {
                    continue;
                }
                p.expect_token(&Token::RParen)?;
                break;
            }
        }
    }
    let like_subject = if p.parse_keyword(Keyword::LIKE) {
        let at = p.peek_token();
        match at.token {
            Token::SingleQuotedString(subject) => {
                p.next_token();
                Some((subject, at.span.start.into()))
            }
            other => {
                return Err(SqlError::new(format!(
                    "LIKE takes a schema registry subject in quotes, found {other}"
                ))
                .at(at.span.start)
                .with_hint("LIKE 'bids-value' takes the columns of the subject's latest schema from 'avro-confluent.url'; LIKE of another table is not supported"))
            }
        }
    } else {
        None
    };
    if let Some(w) = watermark.as_ref().filter(|_| like_subject.is_none()) {
        if !columns.iter().any(|c| c.name.value == w.column.value) {
            return Err(
                SqlError::new(format!("WATERMARK FOR {}: no such column", w.column))
                    .at(w.column.span.start)
                    .with_hint("the watermark column must be one of the stream's columns"),
            );
        }
    }
    Ok(Statement::CreateStream(Box::new(CreateStream {
        name,
        columns,
        watermark,
        options,
        partitioned_by,
        primary_key,
        if_not_exists,
        or_replace,
        is_stream,
        like_subject,
        position,
    })))
}

fn word_next(p: &Parser<'_>, word: &str) -> bool {
    matches!(p.peek_token().token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// The schema of the system streams (`weir_metrics.partitions`, ...).
pub const SYSTEM_SCHEMA: &str = "weir_metrics";

/// The catalog name of an object name: its last part as written (a Flink
/// `catalog.database.` prefix is accepted and ignored), except in the
/// system schema, whose names keep their `weir_metrics.` prefix.
pub fn catalog_name(name: &ObjectName) -> String {
    let parts: Vec<&str> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.as_str())
        .collect();
    match parts.as_slice() {
        [.., schema, table] if schema.eq_ignore_ascii_case(SYSTEM_SCHEMA) => system_name(table),
        [.., last] => last.to_string(),
        [] => name.to_string(),
    }
}

/// The catalog name of system stream `table`.
pub fn system_name(table: &str) -> String {
    format!("{SYSTEM_SCHEMA}.{}", table.to_ascii_lowercase())
}
