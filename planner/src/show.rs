//! What the catalog shows: `SHOW STREAMS | VIEWS | FUNCTIONS`, `DESCRIBE`,
//! `SHOW CREATE TABLE|VIEW` (the declaring statement as Flink's SQL client
//! prints it, secret option values masked) and `SET;`.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use weir_connectors::schema_registry::RegistryConfig;
use weir_sql::{is_secret_key, ColumnKind, ShowCreateKind, ShowObject, SqlError, MASK};

use crate::catalog::{self, StreamDef, ViewDef};
use crate::error::Result;
use crate::types::flink_type_name;
use crate::{string_table, Planned, Planner};

impl Planner {
    /// `SET;`: every setting with its value (set or default) and doc.
    pub(crate) fn settings_table(&self) -> RecordBatch {
        let mut columns = vec![Vec::new(), Vec::new(), Vec::new()];
        for (key, value, doc) in self.settings.listing() {
            let value = if weir_sql::is_secret_key(key) && !value.is_empty() {
                weir_sql::MASK.to_string()
            } else {
                value
            };
            columns[0].push(key.to_string());
            columns[1].push(value);
            columns[2].push(doc.to_string());
        }
        string_table(&["key", "value", "doc"], columns)
    }

    pub(crate) fn show(&self, what: ShowObject) -> RecordBatch {
        match what {
            ShowObject::Streams | ShowObject::Tables => {
                // The system streams are documented, not listed with the user's.
                let streams: Vec<&Arc<StreamDef>> = self
                    .catalog
                    .streams()
                    .filter(|s| !s.name.starts_with(weir_sql::SYSTEM_SCHEMA))
                    .collect();
                string_table(
                    &["name", "connector", "format", "watermark"],
                    vec![
                        streams.iter().map(|s| s.name.clone()).collect(),
                        streams
                            .iter()
                            .map(|s| s.connector.name().to_string())
                            .collect(),
                        streams.iter().map(|s| format_text(s)).collect(),
                        streams
                            .iter()
                            .map(|s| {
                                s.watermark
                                    .as_ref()
                                    .map(|w| format!("{} AS {}", w.column, w.text))
                                    .unwrap_or_default()
                            })
                            .collect(),
                    ],
                )
            }
            ShowObject::Views => {
                let views: Vec<&Arc<ViewDef>> = self.catalog.views().collect();
                string_table(
                    &["name", "query"],
                    vec![
                        views.iter().map(|v| v.name.clone()).collect(),
                        views
                            .iter()
                            .map(|v| weir_sql::mask_secrets(&v.query.text))
                            .collect(),
                    ],
                )
            }
            ShowObject::Functions => string_table(&["function"], vec![self.function_names()]),
            ShowObject::Jobs => string_table(&["id"], vec![vec![]]),
        }
    }

    /// `SHOW CREATE TABLE|VIEW name`: the statement that declares it.
    pub(crate) fn show_create(&self, kind: ShowCreateKind, name: &str) -> Result<String> {
        let error = match (kind, self.catalog.stream(name), self.catalog.view(name)) {
            (ShowCreateKind::Stream, Some(s), _) => return Ok(create_stream_text(s)),
            (ShowCreateKind::View, _, Some(v)) => return Ok(create_view_text(v)),
            (ShowCreateKind::Stream, None, Some(_)) => SqlError::new(format!("'{name}' is a view"))
                .with_hint(format!("SHOW CREATE VIEW {name}")),
            (ShowCreateKind::View, Some(_), None) => SqlError::new(format!("'{name}' is a stream"))
                .with_hint(format!("SHOW CREATE TABLE {name}")),
            _ => self.unknown_name(name),
        };
        Err(error.into())
    }

    pub(crate) fn unknown_name(&self, name: &str) -> SqlError {
        let hint = catalog::nearest(name, self.catalog.names().iter().map(String::as_str))
            .map(|n| format!("did you mean '{n}'?"))
            .unwrap_or_else(|| "SHOW STREAMS lists them".into());
        SqlError::new(format!("unknown stream or view '{name}'")).with_hint(hint)
    }

    /// `DESCRIBE name`: columns, types, and how each is made; for a
    /// stream, then where its records come from and in what format
    /// ([`stream_properties`]).
    pub fn describe(&self, name: &str) -> Result<Planned> {
        if let Some(s) = self.catalog.stream(name) {
            let mut names = Vec::new();
            let mut types = Vec::new();
            let mut extras = Vec::new();
            for (i, field) in s.schema.fields().iter().enumerate() {
                names.push(field.name().clone());
                types.push(flink_type_name(field.data_type()));
                let mut extra = match &s.computed[i] {
                    Some(_) => {
                        let text = s
                            .create
                            .columns
                            .iter()
                            .find(|c| c.name.value == *field.name())
                            .and_then(|c| match &c.kind {
                                ColumnKind::Computed(e) => Some(e.to_string()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        format!("AS {text}")
                    }
                    None => String::new(),
                };
                if let Some(w) = s.watermark.as_ref().filter(|w| w.column == *field.name()) {
                    if !extra.is_empty() {
                        extra.push_str("; ");
                    }
                    extra.push_str(&format!("WATERMARK AS {}", w.text));
                }
                extras.push(extra);
            }
            let columns = string_table(&["column", "type", "extras"], vec![names, types, extras]);
            let (properties, values) = stream_properties(s).into_iter().unzip();
            let stream = string_table(&["property", "value"], vec![properties, values]);
            return Ok(Planned::Tables(vec![
                ("columns".into(), columns),
                ("stream".into(), stream),
            ]));
        }
        if let Some(v) = self.catalog.view(name) {
            let names = v.schema.fields().iter().map(|f| f.name().clone()).collect();
            let types = v
                .schema
                .fields()
                .iter()
                .map(|f| flink_type_name(f.data_type()))
                .collect();
            return Ok(Planned::Rows(string_table(
                &["column", "type"],
                vec![names, types],
            )));
        }
        Err(self.unknown_name(name).into())
    }
}

/// `name` quoted with backticks, as Flink prints identifiers.
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The `CREATE TABLE` (or `CREATE STREAM`, as written) of a stream.
fn create_stream_text(def: &StreamDef) -> String {
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
fn create_view_text(def: &ViewDef) -> String {
    weir_sql::mask_secrets(def.query.text.trim())
}

/// A stream's record format as its options name it: the value format, and
/// the key's when it has one (`json (key: raw)`); a registry format names
/// the subject its schemas are under. Empty for a connector without one
/// (the generator).
fn format_text(stream: &StreamDef) -> String {
    let with_subject = |format: String, subject: Option<String>| match subject {
        Some(subject) => format!("{format} (subject {subject})"),
        None => format,
    };
    let value = with_subject(value_format(stream), subject(stream, false));
    match stream.options.get("key.format") {
        Some(key) => format!(
            "{value} (key: {})",
            with_subject(key.to_string(), subject(stream, true))
        ),
        None => value,
    }
}

fn value_format(stream: &StreamDef) -> String {
    let options = &stream.options;
    let format = options
        .get("value.format")
        .or_else(|| options.get("format"));
    format.unwrap_or_default().to_string()
}

/// The schema registry subject of a stream's values or keys, when their
/// format is a registry one (`avro-confluent`, `protobuf-confluent`).
fn subject(stream: &StreamDef, is_key: bool) -> Option<String> {
    let options = &stream.options;
    let (format, prefix) = match is_key {
        true => (options.get("key.format")?.to_string(), "key."),
        false => (value_format(stream), "value."),
    };
    let format = format.to_ascii_lowercase();
    if !format.ends_with("-confluent") {
        return None;
    }
    let config = RegistryConfig::of_format(options, prefix, &format).ok()?;
    Some(config.subject_for(options.get("topic").unwrap_or_default(), is_key))
}

/// What `DESCRIBE` shows of a stream besides its columns: its connector,
/// formats, the schema subjects or `.proto` message they use.
fn stream_properties(stream: &StreamDef) -> Vec<(String, String)> {
    let options = &stream.options;
    let mut rows = vec![("connector".to_string(), stream.connector.name().to_string())];
    let mut add = |property: &str, value: Option<String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            rows.push((property.to_string(), value));
        }
    };
    add("format", Some(value_format(stream)));
    add("schema subject", subject(stream, false));
    add("key format", options.get("key.format").map(str::to_string));
    add("key schema subject", subject(stream, true));
    for option in ["protobuf.message-class-name", "protobuf.schema-file"] {
        let value = options
            .get(&format!("value.{option}"))
            .or_else(|| options.get(option));
        add(option, value.map(str::to_string));
    }
    rows
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;

    use crate::{Planned, Planner};

    #[test]
    fn show_tables_names_each_streams_format() {
        let mut planner = Planner::default();
        let text = "CREATE STREAM bids (auction BIGINT, price BIGINT) WITH ('connector' = 'kafka',
               'topic' = 'bids', 'properties.bootstrap.servers' = 'b:9092', 'value.format' = 'json',
               'key.format' = 'raw', 'key.fields' = 'auction');
             CREATE STREAM lines (line VARCHAR) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'raw');
             CREATE STREAM events WITH ('connector' = 'nexmark');
             SHOW TABLES";
        let mut shown = None;
        for statement in weir_sql::parse(text).unwrap() {
            if let Planned::Rows(rows) = planner.plan(&statement).unwrap() {
                shown = Some(rows);
            }
        }
        let shown = shown.unwrap();
        let column = |name: &str| -> Vec<String> {
            let array = shown.column_by_name(name).unwrap().as_string::<i32>();
            array
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect()
        };
        let mut rows: Vec<(String, String)> =
            column("name").into_iter().zip(column("format")).collect();
        rows.sort();
        let expected = [
            ("bids", "json (key: raw)"),
            ("events", ""),
            ("lines", "raw"),
        ]
        .map(|(n, f)| (n.to_string(), f.to_string()));
        assert_eq!(rows, expected);
    }

    /// DESCRIBE of a stream: its columns, then the connector and formats,
    /// a registry format with the subject its schemas are under (the
    /// configured one, or the topic's).
    #[test]
    fn describe_names_a_streams_formats_and_schema_subjects() {
        let mut planner = Planner::default();
        let text = "CREATE STREAM orders (id BIGINT, price DOUBLE) WITH ('connector' = 'kafka',
               'topic' = 'orders', 'properties.bootstrap.servers' = 'b:9092',
               'key.format' = 'avro-confluent', 'key.avro-confluent.url' = 'http://r:8081', 'key.fields' = 'id',
               'value.format' = 'protobuf-confluent', 'value.protobuf-confluent.url' = 'http://r:8081',
               'value.protobuf-confluent.subject' = 'shop.Order');
             DESCRIBE orders";
        let mut described = None;
        for statement in weir_sql::parse(text).unwrap() {
            if let Planned::Tables(tables) = planner.plan(&statement).unwrap() {
                described = Some(tables);
            }
        }
        let described = described.unwrap();
        let titles: Vec<&str> = described.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(titles, ["columns", "stream"]);
        let stream = &described[1].1;
        let column = |i: usize| -> Vec<String> {
            let array = stream.column(i).as_string::<i32>();
            array
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect()
        };
        let rows: Vec<(String, String)> = column(0).into_iter().zip(column(1)).collect();
        let expected = [
            ("connector", "kafka"),
            ("format", "protobuf-confluent"),
            ("schema subject", "shop.Order"),
            ("key format", "avro-confluent"),
            ("key schema subject", "orders-key"),
        ]
        .map(|(p, v)| (p.to_string(), v.to_string()));
        assert_eq!(rows, expected);
        let shown = planner.show(weir_sql::ShowObject::Tables);
        let format = shown.column(2).as_string::<i32>().value(0).to_string();
        assert_eq!(
            format,
            "protobuf-confluent (subject shop.Order) (key: avro-confluent (subject orders-key))"
        );
    }
}
