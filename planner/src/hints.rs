//! Flink's `STATE_TTL` query hint: `SELECT /*+ STATE_TTL('orders' = '1d',
//! 'customers' = '20d') */ ...` sets the state TTL of a regular join's
//! side, or of a group aggregate, by the name (or alias) of its input, in
//! place of `'table.exec.state.ttl'`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use weir_connectors::options::parse_duration;
use weir_sql::sqlparser::ast::{Query, SetExpr, TableFactor, TableWithJoins};
use weir_sql::SqlError;

/// The `STATE_TTL` hints of a query, by input name.
#[derive(Debug, Default)]
pub(crate) struct StateTtlHints {
    ttl: HashMap<String, Duration>,
    /// The names a join or aggregate asked for: every hint must name one.
    used: Mutex<Vec<String>>,
}

impl StateTtlHints {
    /// The hints of every `SELECT` of `query`.
    pub fn of(query: &Query) -> Result<Self, SqlError> {
        let mut texts = Vec::new();
        collect(query, &mut texts);
        let mut ttl = HashMap::new();
        for text in texts {
            let text = text.trim();
            let Some(body) = strip_call(text, "STATE_TTL") else {
                continue;
            };
            for pair in body.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, value) = pair.split_once('=').ok_or_else(|| malformed(text))?;
                let (name, value) = (unquote(name), unquote(value));
                let duration = parse_duration(&value).map_err(|e| {
                    SqlError::new(format!("STATE_TTL of '{name}': {e}"))
                        .with_hint("a duration such as '1d', '12 h' or '30min'")
                })?;
                ttl.insert(name, duration);
            }
        }
        Ok(StateTtlHints {
            ttl,
            used: Mutex::new(Vec::new()),
        })
    }

    /// The TTL hinted for the input called `name`, if any.
    pub fn ttl(&self, name: Option<&str>) -> Option<Duration> {
        let name = name?;
        if let Ok(mut used) = self.used.lock() {
            used.push(name.to_string());
        }
        self.ttl.get(name).copied()
    }

    /// An error for a hint that names no input of a join or aggregate.
    pub fn check_used(&self) -> Result<(), SqlError> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let mut unknown: Vec<&String> = self.ttl.keys().filter(|k| !used.contains(k)).collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(name) => Err(SqlError::new(format!(
                "STATE_TTL names '{name}', which is not an input of a join or GROUP BY of this query"
            ))
            .with_hint(if used.is_empty() {
                "STATE_TTL sets the state TTL of a regular join's inputs or of a GROUP BY without a window".to_string()
            } else {
                format!("inputs with state: {}", used.join(", "))
            })),
        }
    }
}

fn malformed(text: &str) -> SqlError {
    SqlError::new(format!("cannot read the hint {text}"))
        .with_hint("STATE_TTL('input' = '1d', 'other' = '12h')")
}

/// `NAME(body)` → `body`.
fn strip_call<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let rest = text.get(..name.len())?;
    if !rest.eq_ignore_ascii_case(name) {
        return None;
    }
    text[name.len()..]
        .trim()
        .strip_prefix('(')?
        .trim_end()
        .strip_suffix(')')
}

fn unquote(text: &str) -> String {
    let text = text.trim();
    text.strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(text)
        .to_string()
}

/// The hint texts of every SELECT in `query`, subqueries in FROM included.
fn collect(query: &Query, out: &mut Vec<String>) {
    collect_set(&query.body, out);
}

fn collect_set(set: &SetExpr, out: &mut Vec<String>) {
    match set {
        SetExpr::Select(select) => {
            out.extend(select.optimizer_hints.iter().map(|h| h.text.clone()));
            for table in &select.from {
                collect_table(table, out);
            }
        }
        SetExpr::Query(query) => collect(query, out),
        SetExpr::SetOperation { left, right, .. } => {
            collect_set(left, out);
            collect_set(right, out);
        }
        _ => {}
    }
}

fn collect_table(table: &TableWithJoins, out: &mut Vec<String>) {
    let factor = |f: &TableFactor, out: &mut Vec<String>| {
        if let TableFactor::Derived { subquery, .. } = f {
            collect(subquery, out);
        }
    };
    factor(&table.relation, out);
    for join in &table.joins {
        factor(&join.relation, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(sql: &str) -> StateTtlHints {
        let statements = weir_sql::parse(sql).unwrap();
        let weir_sql::Statement::Query(q) = &statements[0].statement else {
            panic!("not a query");
        };
        StateTtlHints::of(&q.query).unwrap()
    }

    #[test]
    fn state_ttl_hints_name_inputs() {
        let h =
            hints("SELECT /*+ STATE_TTL('o' = '1d', 'c'='12 h') */ * FROM o JOIN c ON o.id = c.id");
        assert_eq!(h.ttl(Some("o")), Some(Duration::from_secs(86_400)));
        assert_eq!(h.ttl(Some("c")), Some(Duration::from_secs(12 * 3600)));
        assert!(h.check_used().is_ok());
        let unused = hints("SELECT /*+ STATE_TTL('x' = '1d') */ * FROM o");
        assert!(unused.check_used().unwrap_err().message.contains("'x'"));
    }
}
