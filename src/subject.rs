//! `CREATE TABLE t (...) WITH (... 'format' = 'avro-confluent' ...) LIKE
//! 'subject'`: the table's physical columns from the latest schema of a
//! schema registry subject (Avro, or a `.proto` file's first message with
//! `protobuf-confluent`), fetched before the statement is planned. The
//! columns declared in the statement (a watermark, computed and metadata
//! columns, or a physical column typed otherwise) come after and win.

use weir_connectors::schema_registry::{RegistryConfig, SchemaRegistry};
use weir_connectors::Options;
use weir_sql::{ParsedStatement, SqlError, Statement};

/// `statement` with the columns of its `LIKE 'subject'`, or `None` when
/// it has none.
pub(crate) async fn with_subject_columns(
    statement: &ParsedStatement,
) -> Result<Option<ParsedStatement>, SqlError> {
    let Statement::CreateStream(create) = &statement.statement else {
        return Ok(None);
    };
    let Some((subject, at)) = &create.like_subject else {
        return Ok(None);
    };
    let options = Options::new(create.options.iter().map(|(k, v)| (k, v.clone())));
    // The registry the value format names: 'avro-confluent.url' or
    // 'protobuf-confluent.url'.
    let format = options
        .get("value.format")
        .or_else(|| options.get("format"))
        .unwrap_or("avro-confluent")
        .to_ascii_lowercase();
    let format = match format.as_str() {
        "protobuf-confluent" => "protobuf-confluent",
        _ => "avro-confluent",
    };
    let hint = format!(
        "LIKE 'subject' reads the subject's latest schema from the schema registry at '{format}.url'"
    );
    let config = RegistryConfig::of_format(&options, "value.", format)
        .map_err(|e| SqlError::new(e.to_string()).at(*at).with_hint(&hint))?;
    let fields = SchemaRegistry::new(config)
        .subject_fields(subject)
        .await
        .map_err(|e| SqlError::new(e).at(*at).with_hint(&hint))?;
    let declared = |name: &str| create.columns.iter().any(|c| c.name.value == name);
    let columns: Vec<String> = fields
        .iter()
        .filter(|f| !declared(f.name()))
        .map(|f| {
            let not_null = if f.is_nullable() { "" } else { " NOT NULL" };
            let name = f.name().replace('`', "``");
            let sql_type = weir_planner::flink_type_name(f.data_type());
            format!("`{name}` {sql_type}{not_null}")
        })
        .collect();
    let text = format!("CREATE TABLE t ({})", columns.join(", "));
    let parsed = weir_sql::parse(&text)
        .map_err(|e| SqlError::new(format!("subject '{subject}': {e}")).at(*at))?;
    let Some(Statement::CreateStream(from_subject)) =
        parsed.into_iter().next().map(|p| p.statement)
    else {
        return Err(SqlError::new(format!("subject '{subject}' gave no columns")).at(*at));
    };
    let mut create = create.clone();
    let mut all = from_subject.columns;
    all.append(&mut create.columns);
    create.columns = all;
    create.like_subject = None;
    if let Some(w) = &create.watermark {
        if !create
            .columns
            .iter()
            .any(|c| c.name.value == w.column.value)
        {
            return Err(SqlError::new(format!(
                "WATERMARK FOR {}: no such column in subject '{subject}'",
                w.column
            ))
            .at(w.column.span.start)
            .with_hint(
                "the watermark column must be one of the subject's fields or a declared column",
            ));
        }
    }
    Ok(Some(ParsedStatement {
        statement: Statement::CreateStream(create),
        text: statement.text.clone(),
        position: statement.position,
    }))
}
