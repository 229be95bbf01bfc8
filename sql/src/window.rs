//! Window table functions.
//!
//! sqlparser cannot parse Flink's window TVFs
//! (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))`,
//! `SESSION(TABLE t PARTITION BY k, ...)`), so they are cut out of the token
//! stream before parsing and replaced by a placeholder table name; the
//! planner resolves the placeholder to the windowed input. Legacy group
//! windows (`GROUP BY TUMBLE(ts, ...)` with `TUMBLE_START(...)` in the select
//! list) are rewritten on the AST into the same form. Tokens keep their
//! original positions, so errors still point at the user's text.

use std::ops::ControlFlow;

use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName,
    ObjectNamePart, Query, SelectItem, SetExpr, TableFactor,
};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Whitespace, Word};

use crate::dialect::FlinkDialect;
use crate::error::{Position, Result, SqlError};
use crate::interval::interval_millis;

/// The kind and size of a window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumble {
        size: i64,
        offset: i64,
    },
    Hop {
        slide: i64,
        size: i64,
        offset: i64,
    },
    Cumulate {
        step: i64,
        max_size: i64,
        offset: i64,
    },
    Session {
        gap: i64,
    },
}

impl WindowKind {
    pub fn name(&self) -> &'static str {
        match self {
            WindowKind::Tumble { .. } => "TUMBLE",
            WindowKind::Hop { .. } => "HOP",
            WindowKind::Cumulate { .. } => "CUMULATE",
            WindowKind::Session { .. } => "SESSION",
        }
    }
}

/// What a window is computed over.
#[derive(Debug, Clone)]
pub enum WindowInput {
    /// `TABLE name`: a stream or view.
    Table(ObjectName),
    /// A sub-query (legacy group windows over a derived table).
    Query(Box<Query>),
}

/// One window table function in a query.
#[derive(Debug, Clone)]
pub struct WindowTvf {
    /// The table name standing in for the TVF in the query.
    pub placeholder: String,
    pub kind: WindowKind,
    pub input: WindowInput,
    /// The time attribute (`DESCRIPTOR(col)`).
    pub time_column: Ident,
    /// Session key columns: `PARTITION BY` of a session TVF.
    pub partition_by: Vec<Ident>,
    /// Legacy `GROUP BY SESSION(...)`: every other grouping column is a
    /// session key.
    pub partition_by_group_keys: bool,
    pub position: Position,
}

/// The window columns a TVF adds.
pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";
pub const WINDOW_TIME: &str = "window_time";

/// The prefix of placeholder table names.
pub const PLACEHOLDER_PREFIX: &str = "__weir_window_";

fn word_is(token: &Token, name: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name))
}

fn tvf_kind_name(token: &Token) -> Option<&'static str> {
    ["TUMBLE", "HOP", "CUMULATE", "SESSION"]
        .into_iter()
        .find(|n| word_is(token, n))
}

/// Index of the token closing the parenthesis opened at `open`.
fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Result<usize> {
    let mut depth = 0i32;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err(SqlError::new("unclosed parenthesis").at(tokens[open].span.start))
}

/// Finds `TABLE ( TUMBLE|HOP|CUMULATE|SESSION ( ... ) )` in `tokens`,
/// records each as a [`WindowTvf`] and replaces it with its placeholder.
pub(crate) fn extract_window_tvfs(
    tokens: Vec<TokenWithSpan>,
    windows: &mut Vec<WindowTvf>,
) -> Result<Vec<TokenWithSpan>> {
    // Whitespace goes, but for query hints (`/*+ STATE_TTL(...) */`),
    // which the parser reads.
    let significant = |t: &TokenWithSpan| match &t.token {
        Token::Whitespace(Whitespace::MultiLineComment(c)) => c.starts_with('+'),
        Token::Whitespace(_) => false,
        _ => true,
    };
    let tokens: Vec<TokenWithSpan> = tokens.into_iter().filter(significant).collect();
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let is_tvf = word_is(&tokens[i].token, "TABLE")
            && matches!(tokens.get(i + 1).map(|t| &t.token), Some(Token::LParen))
            && tokens
                .get(i + 2)
                .and_then(|t| tvf_kind_name(&t.token))
                .is_some()
            && matches!(tokens.get(i + 3).map(|t| &t.token), Some(Token::LParen));
        if !is_tvf {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let outer_close = matching_paren(&tokens, i + 1)?;
        let inner_close = matching_paren(&tokens, i + 3)?;
        if inner_close + 1 != outer_close {
            return Err(SqlError::new("expected ')' after the window function")
                .at(tokens[inner_close + 1].span.start));
        }
        let kind_name = tvf_kind_name(&tokens[i + 2].token).unwrap_or("TUMBLE");
        let args = tokens[i + 4..inner_close].to_vec();
        let placeholder = format!("{PLACEHOLDER_PREFIX}{}", windows.len());
        let tvf = parse_tvf_args(
            kind_name,
            args,
            tokens[inner_close].span.start,
            placeholder.clone(),
            tokens[i].span.start,
        )?;
        windows.push(tvf);
        out.push(TokenWithSpan {
            token: Token::Word(Word {
                value: placeholder,
                quote_style: None,
                keyword: Keyword::NoKeyword,
            }),
            span: Span::new(tokens[i].span.start, tokens[outer_close].span.end),
        });
        i = outer_close + 1;
    }
    Ok(out)
}

/// One argument of a window TVF.
enum TvfArg {
    Table {
        name: ObjectName,
        partition_by: Vec<Ident>,
    },
    Descriptor(Ident),
    Value(Box<Expr>),
}

fn parse_tvf_args(
    kind: &str,
    tokens: Vec<TokenWithSpan>,
    end: Location,
    placeholder: String,
    position: Location,
) -> Result<WindowTvf> {
    let dialect = FlinkDialect::default();
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut positional: Vec<(TvfArg, Location)> = Vec::new();
    let mut named: Vec<(String, TvfArg, Location)> = Vec::new();
    loop {
        if p.peek_token().token == Token::EOF {
            break;
        }
        let start = p.peek_token().span.start;
        // name => value
        let name = match (p.peek_token().token, p.peek_nth_token(1).token) {
            (Token::Word(w), Token::RArrow) => {
                p.next_token();
                p.next_token();
                Some(w.value.to_ascii_uppercase())
            }
            _ => None,
        };
        let arg = if p.parse_keyword(Keyword::TABLE) {
            let name = p.parse_object_name(false)?;
            let mut partition_by = Vec::new();
            if p.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
                let parens = p.consume_token(&Token::LParen);
                partition_by.push(p.parse_identifier()?);
                // `PARTITION BY a, b, DESCRIPTOR(ts), ...`: the key list
                // ends where the next argument starts.
                while p.peek_token().token == Token::Comma && {
                    let next = p.peek_nth_token(1).token;
                    let after = p.peek_nth_token(2).token;
                    matches!(next, Token::Word(_))
                        && !word_is(&next, "DESCRIPTOR")
                        && !matches!(after, Token::LParen | Token::RArrow)
                        && (parens || matches!(after, Token::Comma))
                } {
                    p.next_token();
                    partition_by.push(p.parse_identifier()?);
                }
                if parens {
                    p.expect_token(&Token::RParen)?;
                }
            }
            TvfArg::Table { name, partition_by }
        } else if word_is(&p.peek_token().token, "DESCRIPTOR") {
            p.next_token();
            p.expect_token(&Token::LParen)?;
            let column = p.parse_identifier()?;
            p.expect_token(&Token::RParen)?;
            TvfArg::Descriptor(column)
        } else {
            TvfArg::Value(Box::new(p.parse_expr()?))
        };
        match name {
            Some(n) => named.push((n, arg, start)),
            None => positional.push((arg, start)),
        }
        if !p.consume_token(&Token::Comma) {
            let t = p.peek_token();
            if t.token != Token::EOF {
                return Err(SqlError::new(format!(
                    "expected ',' or ')' in {kind}(...), found {}",
                    t.token
                ))
                .at(t.span.start));
            }
            break;
        }
    }
    let usage = match kind {
        "TUMBLE" => "TUMBLE(TABLE t, DESCRIPTOR(ts), size [, offset])",
        "HOP" => "HOP(TABLE t, DESCRIPTOR(ts), slide, size [, offset])",
        "CUMULATE" => "CUMULATE(TABLE t, DESCRIPTOR(ts), step, max_size [, offset])",
        _ => "SESSION(TABLE t [PARTITION BY k], DESCRIPTOR(ts), gap)",
    };
    let value_names: &[&str] = match kind {
        "TUMBLE" => &["SIZE", "OFFSET"],
        "HOP" => &["SLIDE", "SIZE", "OFFSET"],
        "CUMULATE" => &["STEP", "MAX_SIZE", "OFFSET"],
        _ => &["GAP"],
    };
    let mut slots: Vec<(String, Option<(TvfArg, Location)>)> = ["DATA", "TIMECOL"]
        .iter()
        .chain(value_names)
        .map(|n| (n.to_string(), None))
        .collect();
    if positional.len() > slots.len() {
        return Err(SqlError::new(format!("too many arguments to {kind}"))
            .at(positional[slots.len()].1)
            .with_hint(usage));
    }
    for (slot, arg) in slots.iter_mut().zip(positional) {
        slot.1 = Some(arg);
    }
    for (name, arg, at) in named {
        match slots.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = Some((arg, at)),
            None => {
                return Err(SqlError::new(format!("{kind} has no parameter {name}"))
                    .at(at)
                    .with_hint(usage))
            }
        }
    }
    let missing = |what: &str| {
        SqlError::new(format!("{kind} is missing its {what} argument"))
            .at(end)
            .with_hint(usage)
    };
    let mut slots = slots.into_iter().map(|(_, a)| a);
    let (input, partition_by) = match slots.next().flatten() {
        Some((TvfArg::Table { name, partition_by }, _)) => (WindowInput::Table(name), partition_by),
        Some((_, at)) => {
            return Err(
                SqlError::new(format!("the first argument of {kind} must be TABLE name"))
                    .at(at)
                    .with_hint(usage),
            )
        }
        None => return Err(missing("TABLE")),
    };
    let time_column = match slots.next().flatten() {
        Some((TvfArg::Descriptor(c), _)) => c,
        Some((_, at)) => {
            return Err(SqlError::new(format!(
                "the time column of {kind} must be DESCRIPTOR(column)"
            ))
            .at(at)
            .with_hint(usage))
        }
        None => return Err(missing("DESCRIPTOR(time column)")),
    };
    let mut millis = Vec::new();
    for (i, slot) in slots.enumerate() {
        match slot {
            Some((TvfArg::Value(e), _)) => millis.push(Some(interval_millis(&e)?)),
            Some((_, at)) => {
                return Err(SqlError::new(format!("expected an INTERVAL in {kind}"))
                    .at(at)
                    .with_hint(usage))
            }
            None if value_names[i] == "OFFSET" => millis.push(None),
            None => return Err(missing(&value_names[i].to_ascii_lowercase())),
        }
    }
    let kind = match kind {
        "TUMBLE" => WindowKind::Tumble {
            size: millis[0].unwrap_or(0),
            offset: millis[1].unwrap_or(0),
        },
        "HOP" => WindowKind::Hop {
            slide: millis[0].unwrap_or(0),
            size: millis[1].unwrap_or(0),
            offset: millis[2].unwrap_or(0),
        },
        "CUMULATE" => WindowKind::Cumulate {
            step: millis[0].unwrap_or(0),
            max_size: millis[1].unwrap_or(0),
            offset: millis[2].unwrap_or(0),
        },
        _ => WindowKind::Session {
            gap: millis[0].unwrap_or(0),
        },
    };
    if kind.name() != "SESSION" && !partition_by.is_empty() {
        return Err(SqlError::new("PARTITION BY is only allowed in SESSION").at(position));
    }
    validate_sizes(&kind, position)?;
    Ok(WindowTvf {
        placeholder,
        kind,
        input,
        time_column,
        partition_by,
        partition_by_group_keys: false,
        position: position.into(),
    })
}

fn validate_sizes(kind: &WindowKind, position: Location) -> Result<()> {
    let check = |what: &str, v: i64| {
        if v <= 0 {
            Err(SqlError::new(format!(
                "the {what} of a {} window must be positive",
                kind.name()
            ))
            .at(position))
        } else {
            Ok(())
        }
    };
    match *kind {
        WindowKind::Tumble { size, .. } => check("size", size),
        WindowKind::Hop { slide, size, .. } => check("slide", slide).and(check("size", size)),
        WindowKind::Cumulate { step, max_size, .. } => {
            check("step", step)?;
            check("max size", max_size)?;
            if max_size % step != 0 {
                return Err(SqlError::new(
                    "the max size of a CUMULATE window must be a multiple of its step",
                )
                .at(position));
            }
            Ok(())
        }
        WindowKind::Session { gap } => check("gap", gap),
    }
}

/// Rewrites legacy group windows (`GROUP BY TUMBLE(ts, size)` and friends)
/// in `query` and its sub-queries into window placeholders.
pub(crate) fn rewrite_group_windows(query: &mut Query, windows: &mut Vec<WindowTvf>) -> Result<()> {
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            rewrite_group_windows(&mut cte.query, windows)?;
        }
    }
    rewrite_set_expr(&mut query.body, windows)
}

fn rewrite_set_expr(body: &mut SetExpr, windows: &mut Vec<WindowTvf>) -> Result<()> {
    match body {
        SetExpr::Select(select) => {
            for table in &mut select.from {
                rewrite_factor(&mut table.relation, windows)?;
                for join in &mut table.joins {
                    rewrite_factor(&mut join.relation, windows)?;
                }
            }
            rewrite_select(select, windows)
        }
        SetExpr::Query(q) => rewrite_group_windows(q, windows),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, windows)?;
            rewrite_set_expr(right, windows)
        }
        _ => Ok(()),
    }
}

fn rewrite_factor(factor: &mut TableFactor, windows: &mut Vec<WindowTvf>) -> Result<()> {
    if let TableFactor::Derived { subquery, .. } = factor {
        rewrite_group_windows(subquery, windows)?;
    }
    Ok(())
}

fn function_name(f: &ast::Function) -> String {
    f.name.to_string().to_ascii_uppercase()
}

fn function_args(f: &ast::Function) -> Vec<Expr> {
    match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn last_ident(expr: &Expr) -> Option<Ident> {
    match expr {
        Expr::Identifier(i) => Some(i.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().cloned(),
        Expr::Nested(e) => last_ident(e),
        _ => None,
    }
}

fn expr_position(expr: &Expr) -> Location {
    use sqlparser::ast::Spanned;
    expr.span().start
}

fn rewrite_select(select: &mut ast::Select, windows: &mut Vec<WindowTvf>) -> Result<()> {
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(());
    };
    let Some(index) = exprs.iter().position(|e| {
        matches!(e, Expr::Function(f) if matches!(function_name(f).as_str(), "TUMBLE" | "HOP" | "SESSION"))
    }) else {
        return Ok(());
    };
    let Expr::Function(function) = exprs.remove(index) else {
        return Ok(());
    };
    let name = function_name(&function);
    let at = expr_position(&Expr::Function(function.clone()));
    let args = function_args(&function);
    let usage = format!("GROUP BY {name}(time_column, INTERVAL ...)");
    let time_column = args.first().and_then(last_ident).ok_or_else(|| {
        SqlError::new(format!(
            "the first argument of {name} must be a time column"
        ))
        .at(at)
        .with_hint(usage.clone())
    })?;
    let interval = |i: usize| -> Result<i64> {
        match args.get(i) {
            Some(e) => interval_millis(e),
            None => Err(SqlError::new(format!(
                "{name} needs {} arguments",
                if name == "HOP" { 3 } else { 2 }
            ))
            .at(at)
            .with_hint(usage.clone())),
        }
    };
    let kind = match name.as_str() {
        "TUMBLE" => WindowKind::Tumble {
            size: interval(1)?,
            offset: 0,
        },
        "HOP" => WindowKind::Hop {
            slide: interval(1)?,
            size: interval(2)?,
            offset: 0,
        },
        _ => WindowKind::Session { gap: interval(1)? },
    };
    validate_sizes(&kind, at)?;
    exprs.push(Expr::Identifier(Ident::new(WINDOW_START)));
    exprs.push(Expr::Identifier(Ident::new(WINDOW_END)));

    // The FROM clause becomes the window's input.
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(SqlError::new(format!(
            "a GROUP BY {name}(...) window needs exactly one table in FROM"
        ))
        .at(at)
        .with_hint("window a join through a view: CREATE VIEW v AS SELECT ... FROM a JOIN b ..."));
    }
    let placeholder = format!("{PLACEHOLDER_PREFIX}{}", windows.len());
    let relation = &mut select.from[0].relation;
    let placeholder_factor = |alias: Option<ast::TableAlias>| TableFactor::Table {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
            placeholder.clone(),
        ))]),
        alias,
        args: None,
        with_hints: vec![],
        version: None,
        with_ordinality: false,
        partitions: vec![],
        json_path: None,
        sample: None,
        index_hints: vec![],
    };
    let input = match relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => {
            let input = WindowInput::Table(name.clone());
            *relation = placeholder_factor(alias.clone());
            input
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => {
            let input = WindowInput::Query(subquery.clone());
            *relation = placeholder_factor(alias.clone());
            input
        }
        _ => {
            return Err(SqlError::new(format!(
                "unsupported FROM clause for a GROUP BY {name}(...) window"
            ))
            .at(at))
        }
    };
    windows.push(WindowTvf {
        placeholder,
        kind,
        input,
        time_column,
        partition_by: Vec::new(),
        partition_by_group_keys: name == "SESSION",
        position: at.into(),
    });

    // TUMBLE_START(...) → window_start, and so on.
    let prefix = format!("{name}_");
    let replace = |expr: &mut Expr| {
        if let Expr::Function(f) = expr {
            let fname = function_name(f);
            if let Some(suffix) = fname.strip_prefix(&prefix) {
                let column = match suffix {
                    "START" => Some(WINDOW_START),
                    "END" => Some(WINDOW_END),
                    "ROWTIME" | "PROCTIME" => Some(WINDOW_TIME),
                    _ => None,
                };
                if let Some(column) = column {
                    *expr = Expr::Identifier(Ident::new(column));
                }
            }
        }
        ControlFlow::<()>::Continue(())
    };
    for item in &mut select.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            let _ = ast::visit_expressions_mut(e, replace);
        }
    }
    if let Some(having) = &mut select.having {
        let _ = ast::visit_expressions_mut(having, replace);
    }
    Ok(())
}
