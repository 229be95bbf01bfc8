//! The tokenizer/parser dialect: sqlparser's generic dialect with Flink's
//! identifier quoting (backticks), aggregate `FILTER` and query hints
//! (`SELECT /*+ STATE_TTL('t' = '1d') */ ...`).

use sqlparser::dialect::{Dialect, GenericDialect};

#[derive(Debug, Default)]
pub struct FlinkDialect {
    generic: GenericDialect,
}

impl Dialect for FlinkDialect {
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`' || ch == '"'
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.generic.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.generic.is_identifier_part(ch)
    }

    /// `JOIN dim FOR SYSTEM_TIME AS OF probe.proc_time`: Flink's temporal
    /// (lookup) join.
    fn supports_table_versioning(&self) -> bool {
        true
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }

    fn supports_group_by_expr(&self) -> bool {
        true
    }

    fn supports_named_fn_args_with_rarrow_operator(&self) -> bool {
        true
    }

    fn supports_comment_optimizer_hint(&self) -> bool {
        true
    }
}
