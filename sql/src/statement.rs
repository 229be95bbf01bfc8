//! Weir's statements.

use std::fmt;

use sqlparser::ast::{self, Ident, ObjectName};

use crate::error::Position;
use crate::window::WindowTvf;

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE STREAM` or Flink's `CREATE TABLE ... WITH ('connector' = ...)`.
    CreateStream(Box<CreateStream>),
    CreateView(CreateView),
    /// `INSERT INTO sink SELECT ...`: a continuous job.
    Insert(Insert),
    /// `EXECUTE STATEMENT SET BEGIN INSERT ...; INSERT ...; END;`: one
    /// job writing to several sinks, reading each stream once.
    StatementSet(Vec<Insert>),
    /// A transient query: results go to the caller.
    Query(Query),
    /// `CREATE [TEMPORARY] FUNCTION name AS 'class' [LANGUAGE JAVA]`:
    /// Flink's user-defined function by its class.
    CreateFunction {
        name: ObjectName,
        class: String,
        language: Option<String>,
        if_not_exists: bool,
    },
    /// `SET 'key' = 'value'`; `SET` alone lists the settings.
    Set {
        key: Option<String>,
        value: Option<String>,
    },
    /// `RESET 'key'` or `RESET`.
    Reset {
        key: Option<String>,
    },
    Explain(Box<Statement>),
    Show(ShowObject),
    /// `SHOW CREATE TABLE|STREAM|VIEW name`: the statement that declares it.
    ShowCreate {
        kind: ShowCreateKind,
        name: ObjectName,
    },
    /// `DESCRIBE name`.
    Describe(ObjectName),
    /// `DESCRIBE JOB id`.
    DescribeJob(String),
    /// `STOP JOB id`.
    StopJob(String),
    Drop {
        kind: DropKind,
        name: ObjectName,
        if_exists: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowObject {
    Streams,
    Tables,
    Views,
    Jobs,
    Functions,
}

/// What `SHOW CREATE` names: a stream (`TABLE` or `STREAM`) or a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowCreateKind {
    Stream,
    View,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    Stream,
    View,
}

/// A query and the window table functions it uses.
///
/// Window TVFs (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))`) and legacy
/// group windows (`GROUP BY TUMBLE(ts, ...)`) are replaced in `query` by a
/// table named [`WindowTvf::placeholder`]; the planner resolves it.
#[derive(Debug, Clone)]
pub struct Query {
    pub query: Box<ast::Query>,
    pub windows: Vec<WindowTvf>,
    /// The statement's text as written.
    pub text: String,
}

impl Query {
    /// The streams and views it reads, by catalog name: the tables of its
    /// FROM clauses and sub-queries and the inputs of its window TVFs
    /// (names of CTEs it defines included; the caller knows its streams).
    pub fn relations(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut visit = |query: &ast::Query| {
            let _ = ast::visit_relations(query, |relation| {
                let name = crate::parser::catalog_name(relation);
                if !name.starts_with(crate::window::PLACEHOLDER_PREFIX) {
                    names.push(name);
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
        };
        visit(&self.query);
        let mut inputs = Vec::new();
        for window in &self.windows {
            match &window.input {
                crate::window::WindowInput::Table(name) => {
                    inputs.push(crate::parser::catalog_name(name))
                }
                crate::window::WindowInput::Query(query) => visit(query),
            }
        }
        names.extend(inputs);
        names.sort();
        names.dedup();
        names
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.text)
    }
}

#[derive(Debug, Clone)]
pub struct CreateStream {
    pub name: ObjectName,
    pub columns: Vec<Column>,
    pub watermark: Option<WatermarkDef>,
    /// `WITH ('k' = 'v', ...)`, keys as written.
    pub options: Vec<(String, String)>,
    pub partitioned_by: Vec<Ident>,
    pub primary_key: Vec<Ident>,
    pub if_not_exists: bool,
    pub or_replace: bool,
    /// Written as `CREATE STREAM` (true) or `CREATE TABLE`.
    pub is_stream: bool,
    /// `LIKE 'subject'`: the physical columns come from the latest schema
    /// of this schema registry subject, before the declared ones.
    pub like_subject: Option<(String, Position)>,
    pub position: Position,
}

impl CreateStream {
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: Ident,
    pub kind: ColumnKind,
    pub comment: Option<String>,
}

#[derive(Debug, Clone)]
pub enum ColumnKind {
    /// Read from the source.
    Physical {
        data_type: ColumnType,
        not_null: bool,
    },
    /// `name AS expr`, computed from the other columns.
    Computed(Box<ast::Expr>),
    /// `name type METADATA [FROM 'key'] [VIRTUAL]`.
    Metadata {
        data_type: ColumnType,
        key: Option<String>,
        is_virtual: bool,
    },
}

/// A column type in Flink's notation.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnType {
    Scalar(ast::DataType),
    /// `ROW<name type, ...>` or `ROW(name type, ...)`.
    Row(Vec<(Ident, ColumnType)>),
    Array(Box<ColumnType>),
    Map(Box<ColumnType>, Box<ColumnType>),
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Scalar(t) => write!(f, "{t}"),
            ColumnType::Row(fields) => {
                write!(f, "ROW<")?;
                for (i, (name, ty)) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{name} {ty}")?;
                }
                write!(f, ">")
            }
            ColumnType::Array(t) => write!(f, "ARRAY<{t}>"),
            ColumnType::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
        }
    }
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    pub column: Ident,
    pub expr: ast::Expr,
}

#[derive(Debug, Clone)]
pub struct CreateView {
    pub name: ObjectName,
    pub columns: Vec<Ident>,
    pub query: Query,
    pub or_replace: bool,
    pub if_not_exists: bool,
}

#[derive(Debug, Clone)]
pub struct Insert {
    pub sink: ObjectName,
    pub columns: Vec<Ident>,
    pub query: Query,
}
