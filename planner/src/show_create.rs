//! `SHOW CREATE TABLE|STREAM|VIEW name`: the statement that declares a
//! stream or a view, as Flink's SQL client prints it, with secret option
//! values masked.

use weir_sql::{is_secret_key, ColumnKind, MASK};

use crate::catalog::{StreamDef, ViewDef};
use crate::types::flink_type_name;

/// `name` quoted with backticks, as Flink prints identifiers.
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The `CREATE TABLE` (or `CREATE STREAM`, as written) of a stream.
pub fn create_stream(def: &StreamDef) -> String {
    let create = &def.create;
    let mut lines: Vec<String> = Vec::new();
    if create.columns.is_empty() {
        // Columns the connector declares.
        for field in def.schema.fields() {
            lines.push(format!(
                "{} {}",
                quoted(field.name()),
                flink_type_name(field.data_type())
            ));
        }
    }
    for column in &create.columns {
        let name = quoted(&column.name.value);
        let mut line = match &column.kind {
            ColumnKind::Physical {
                data_type,
                not_null,
            } => format!(
                "{name} {data_type}{}",
                if *not_null { " NOT NULL" } else { "" }
            ),
            ColumnKind::Computed(expr) => format!("{name} AS {expr}"),
            ColumnKind::Metadata {
                data_type,
                key,
                is_virtual,
            } => format!(
                "{name} {data_type} METADATA{}{}",
                key.as_deref()
                    .map_or(String::new(), |k| format!(" FROM {}", literal(k))),
                if *is_virtual { " VIRTUAL" } else { "" }
            ),
        };
        if let Some(comment) = &column.comment {
            line.push_str(&format!(" COMMENT {}", literal(comment)));
        }
        lines.push(line);
    }
    if let Some(w) = &def.watermark {
        lines.push(format!("WATERMARK FOR {} AS {}", quoted(&w.column), w.text));
    }
    if !create.primary_key.is_empty() {
        let keys: Vec<String> = create
            .primary_key
            .iter()
            .map(|k| quoted(&k.value))
            .collect();
        lines.push(format!("PRIMARY KEY ({}) NOT ENFORCED", keys.join(", ")));
    }
    let mut out = format!(
        "CREATE {} {} (\n  {}\n)",
        if create.is_stream { "STREAM" } else { "TABLE" },
        quoted(&def.name),
        lines.join(",\n  ")
    );
    if !create.partitioned_by.is_empty() {
        let keys: Vec<String> = create
            .partitioned_by
            .iter()
            .map(|k| quoted(&k.value))
            .collect();
        out.push_str(&format!(" PARTITIONED BY ({})", keys.join(", ")));
    }
    let options: Vec<String> = create
        .options
        .iter()
        .map(|(key, value)| {
            let value = if is_secret_key(key) { MASK } else { value };
            format!("{} = {}", literal(key), literal(value))
        })
        .collect();
    out.push_str(&format!(" WITH (\n  {}\n)", options.join(",\n  ")));
    out
}

/// The `CREATE VIEW` of a view, as written.
pub fn create_view(def: &ViewDef) -> String {
    weir_sql::mask_secrets(def.query.text.trim())
}
