//! DDL: `CREATE STREAM`/`CREATE TABLE`, `CREATE VIEW` and `DROP` change the
//! catalog. A stream's declaration is checked against its connector (its
//! options, its columns, its metadata keys) and its computed columns and
//! watermark are planned once, here.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};
use weir_connectors::{Connector, MetadataColumn, Options};
use weir_sql::sqlparser::ast;
use weir_sql::{catalog_name, ColumnKind, CreateStream, CreateView, SqlError};

use crate::catalog::{StreamDef, ViewDef, WatermarkDef};
use crate::context::Context;
use crate::error::{PlanError, Result};
use crate::functions::PROCTIME;
use crate::types::{arrow_type, flink_type_name};
use crate::{Planned, Planner};

/// The columns of a declaration: what the connector reads, and every
/// column with the computed ones in place.
struct Columns {
    physical: SchemaRef,
    metadata: Vec<MetadataColumn>,
    schema: SchemaRef,
    computed: Vec<Option<Expr>>,
    proctime: Vec<String>,
}

/// The key Flink's legacy connector options (before Flink 1.11, as
/// Nexmark q13 writes them) are now known by.
fn current_key(key: &str) -> &str {
    match key.to_ascii_lowercase().as_str() {
        "connector.type" => "connector",
        "connector.path" => "path",
        "format.type" => "format",
        "format.field-delimiter" => "csv.field-delimiter",
        _ => key,
    }
}

impl Planner {
    /// Whether `name` may be (re)defined; `false` when it exists and the
    /// statement says `IF NOT EXISTS`.
    fn check_new_name(&self, name: &str, or_replace: bool, if_not_exists: bool) -> Result<bool> {
        if self.catalog.contains(name) {
            if if_not_exists {
                return Ok(false);
            }
            if !or_replace {
                return Err(SqlError::new(format!("'{name}' already exists"))
                    .with_hint("use CREATE OR REPLACE, or DROP it first")
                    .into());
            }
        }
        Ok(true)
    }

    pub(crate) fn create_stream(&mut self, c: &CreateStream) -> Result<Planned> {
        let name = catalog_name(&c.name);
        if !self.check_new_name(&name, c.or_replace, c.if_not_exists)? {
            return Ok(Planned::Done(format!("'{name}' already exists")));
        }
        let at = |e: PlanError| e.or_at(c.position);
        let options = Options::new(c.options.iter().map(|(k, v)| (current_key(k), v.clone())));
        let connector = self.connector_of(&name, &options).map_err(at)?;
        let columns = self
            .columns(c, &name, connector.as_ref(), &options)
            .map_err(at)?;
        let primary_key: Vec<String> = c.primary_key.iter().map(|i| i.value.clone()).collect();
        for key in &primary_key {
            if columns.physical.field_with_name(key).is_err() {
                return Err(at(SqlError::new(format!(
                    "PRIMARY KEY column '{key}' is not a column of '{name}'"
                ))
                .into()));
            }
        }
        connector
            .check_primary_key(&primary_key)
            .map_err(|e| at(e.into()))?;
        let watermark = self.watermark(c, &name, &columns, connector.as_ref(), &options)?;
        let def = StreamDef {
            name: name.clone(),
            create: c.clone(),
            physical_schema: columns.physical,
            schema: columns.schema,
            computed: columns.computed,
            watermark,
            options,
            connector,
            proctime_columns: columns.proctime,
            metadata: columns.metadata,
        };
        self.catalog.views.remove(&name);
        self.catalog.streams.insert(name.clone(), Arc::new(def));
        Ok(Planned::Done(format!("created stream {name}")))
    }

    /// The connector `'connector'` names, with the options checked.
    fn connector_of(&self, name: &str, options: &Options) -> Result<Arc<dyn Connector>> {
        let connector_name = options.get("connector").ok_or_else(|| {
            SqlError::new(format!("'{name}' has no 'connector' option")).with_hint(format!(
                "WITH ('connector' = '...'); connectors: {}",
                self.registry.names().join(", ")
            ))
        })?;
        let connector = self.registry.get(connector_name)?;
        connector.validate(options)?;
        Ok(connector)
    }

    /// The physical, metadata and computed columns of a declaration.
    fn columns(
        &self,
        c: &CreateStream,
        name: &str,
        connector: &dyn Connector,
        options: &Options,
    ) -> Result<Columns> {
        let (physical, metadata) = physical_columns(c, name, connector, options)?;
        connector.check_schema(&physical)?;
        let physical_df = DFSchema::try_from_qualified_schema(name, &physical)?;
        let context = Context::new(&self.catalog, &self.state, &[]);
        let mut fields = Vec::new();
        let mut computed = Vec::new();
        let mut proctime = Vec::new();
        if c.columns.is_empty() {
            fields.extend(physical.fields().iter().map(|f| f.as_ref().clone()));
            computed.extend(physical.fields().iter().map(|_| None));
        }
        for column in &c.columns {
            let column_name = &column.name.value;
            match &column.kind {
                ColumnKind::Computed(expr) => {
                    let planned =
                        self.coerce(context.plan_expr(expr, &physical_df)?, &physical_df)?;
                    let data_type = planned.to_field(&physical_df)?.1.data_type().clone();
                    if matches!(&planned, Expr::ScalarFunction(f) if f.name() == PROCTIME) {
                        proctime.push(column_name.clone());
                    }
                    fields.push(Field::new(column_name.clone(), data_type, true));
                    computed.push(Some(planned));
                }
                ColumnKind::Physical { .. } | ColumnKind::Metadata { .. } => {
                    let field = physical
                        .field_with_name(column_name)
                        .map_err(|e| SqlError::new(e.to_string()))?;
                    fields.push(field.clone());
                    computed.push(None);
                }
            }
        }
        Ok(Columns {
            physical,
            metadata,
            schema: Arc::new(Schema::new(fields)),
            computed,
            proctime,
        })
    }

    /// `WATERMARK FOR col AS expr`, or the connector's default one for a
    /// stream declared without columns.
    fn watermark(
        &self,
        c: &CreateStream,
        name: &str,
        columns: &Columns,
        connector: &dyn Connector,
        options: &Options,
    ) -> Result<Option<WatermarkDef>> {
        let default = match (&c.watermark, c.columns.is_empty()) {
            (None, true) => default_watermark(connector, options)?,
            _ => None,
        };
        let Some(w) = c.watermark.as_ref().or(default.as_ref()) else {
            return Ok(None);
        };
        let schema = &columns.schema;
        let field = schema.field_with_name(&w.column.value).map_err(|_| {
            SqlError::new(format!("WATERMARK FOR {}: no such column", w.column))
                .at(w.column.span.start)
        })?;
        if !matches!(field.data_type(), DataType::Timestamp(..)) {
            return Err(SqlError::new(format!(
                "WATERMARK FOR {}: the column is {}, but must be a TIMESTAMP",
                w.column,
                flink_type_name(field.data_type())
            ))
            .at(w.column.span.start)
            .into());
        }
        let full = DFSchema::try_from_qualified_schema(name, schema)?;
        let context = Context::new(&self.catalog, &self.state, &[]);
        let expr = self.coerce(context.plan_expr(&w.expr, &full)?, &full)?;
        let data_type = expr.to_field(&full)?.1.data_type().clone();
        if !matches!(data_type, DataType::Timestamp(..)) {
            return Err(SqlError::new(format!(
                "the WATERMARK expression must be a TIMESTAMP, it is {data_type}"
            ))
            .into());
        }
        Ok(Some(WatermarkDef {
            column: w.column.value.clone(),
            expr,
            text: w.expr.to_string(),
        }))
    }

    /// `expr` with the casts DataFusion's type coercion adds.
    pub(crate) fn coerce(&self, expr: Expr, schema: &DFSchema) -> Result<Expr> {
        use datafusion::optimizer::simplify_expressions::ExprSimplifier;
        let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .with_config_options(self.state.config_options().clone())
            .build();
        Ok(ExprSimplifier::new(context).coerce(expr, schema)?)
    }

    pub(crate) fn create_view(&mut self, v: &CreateView) -> Result<Planned> {
        let name = catalog_name(&v.name);
        if !self.check_new_name(&name, v.or_replace, v.if_not_exists)? {
            return Ok(Planned::Done(format!("'{name}' already exists")));
        }
        let context = Context::new(&self.catalog, &self.state, &v.query.windows);
        let plan = context.plan_query(&v.query.query)?;
        let schema = Arc::new(plan.schema().as_arrow().clone());
        self.catalog.streams.remove(&name);
        self.catalog.views.insert(
            name.clone(),
            Arc::new(ViewDef {
                name: name.clone(),
                query: v.query.clone(),
                schema,
            }),
        );
        Ok(Planned::Done(format!("created view {name}")))
    }

    pub(crate) fn drop(&mut self, name: &ast::ObjectName, if_exists: bool) -> Result<Planned> {
        let n = catalog_name(name);
        let removed =
            self.catalog.streams.remove(&n).is_some() || self.catalog.views.remove(&n).is_some();
        if !removed && !if_exists {
            return Err(self.unknown_name(&n).into());
        }
        Ok(Planned::Done(format!("dropped {n}")))
    }
}

/// The columns the connector reads (declared or its default), and which
/// of them it fills from metadata.
fn physical_columns(
    c: &CreateStream,
    name: &str,
    connector: &dyn Connector,
    options: &Options,
) -> Result<(SchemaRef, Vec<MetadataColumn>)> {
    let mut physical = Vec::new();
    let mut metadata = Vec::new();
    for column in &c.columns {
        let at = column.name.span.start;
        match &column.kind {
            ColumnKind::Physical {
                data_type,
                not_null,
            } => physical.push(Field::new(
                column.name.value.clone(),
                arrow_type(data_type).map_err(|e| e.at(at))?,
                !not_null,
            )),
            ColumnKind::Metadata { data_type, key, .. } => {
                let key = key.clone().unwrap_or_else(|| column.name.value.clone());
                let known = connector.metadata_keys();
                if !known.contains(&key.as_str()) {
                    let hint = if known.is_empty() {
                        format!("the '{}' connector has no metadata", connector.name())
                    } else {
                        format!("metadata of '{}': {}", connector.name(), known.join(", "))
                    };
                    return Err(SqlError::new(format!(
                        "METADATA column '{}': no metadata key '{key}'",
                        column.name
                    ))
                    .at(at)
                    .with_hint(hint)
                    .into());
                }
                metadata.push(MetadataColumn {
                    index: physical.len(),
                    key,
                });
                physical.push(Field::new(
                    column.name.value.clone(),
                    arrow_type(data_type).map_err(|e| e.at(at))?,
                    true,
                ));
            }
            ColumnKind::Computed(_) => {}
        }
    }
    if c.columns.is_empty() {
        let schema = connector.default_schema(options).ok_or_else(|| {
            SqlError::new(format!("'{name}' declares no columns"))
                .with_hint("list its columns: CREATE STREAM s (a BIGINT, ...)")
        })?;
        return Ok((schema, metadata));
    }
    Ok((Arc::new(Schema::new(physical)), metadata))
}

/// The connector's default `WATERMARK` (Nexmark's `dateTime - 4 s`).
fn default_watermark(
    connector: &dyn Connector,
    options: &Options,
) -> Result<Option<weir_sql::WatermarkDef>> {
    let Some((column, delay)) = connector.default_watermark(options) else {
        return Ok(None);
    };
    let text = format!("`{column}` - INTERVAL '{delay}' MILLISECOND");
    let expr = weir_sql::sqlparser::parser::Parser::new(&weir_sql::FlinkDialect::default())
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map_err(SqlError::from)?;
    Ok(Some(weir_sql::WatermarkDef {
        column: ast::Ident::with_quote('`', column),
        expr,
    }))
}
