//! What DataFusion's SQL planner asks while planning a Weir query: tables
//! (streams, views, window functions) and functions.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::{plan_err, Result, TableReference};
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner, TypePlanner};
use datafusion::logical_expr::{
    AggregateUDF, Expr, LogicalPlan, LogicalPlanBuilder, ScalarUDF, TableSource, WindowUDF,
};
use datafusion::sql::planner::{ParserOptions, SqlToRel};
use weir_sql::sqlparser::ast;
use weir_sql::{Query, WindowInput, WindowTvf, WINDOW_END, WINDOW_START, WINDOW_TIME};

use crate::catalog::{
    nearest, Catalog, StreamDef, StreamTable, UnknownName, ViewTable, WindowTable,
};
use crate::functions::PROCTIME;
use crate::names::alias_field_accesses;

/// Plans SQL against the catalog.
pub(crate) struct Context<'a> {
    pub catalog: &'a Catalog,
    pub state: &'a SessionState,
    /// The window placeholders of the query being planned.
    pub windows: &'a [WindowTvf],
}

pub(crate) fn parser_options() -> ParserOptions {
    ParserOptions {
        parse_float_as_decimal: true,
        enable_ident_normalization: false,
        support_varchar_with_length: true,
        enable_options_value_normalization: false,
        collect_spans: true,
        map_string_types_to_utf8view: false,
        ..ParserOptions::default()
    }
}

impl<'a> Context<'a> {
    pub fn new(catalog: &'a Catalog, state: &'a SessionState, windows: &'a [WindowTvf]) -> Self {
        Context {
            catalog,
            state,
            windows,
        }
    }

    /// Plans a query (without optimizing it).
    pub fn plan_query(&self, query: &ast::Query) -> Result<LogicalPlan> {
        let planner = SqlToRel::new_with_options(self, parser_options());
        let plan = planner.sql_statement_to_plan(ast::Statement::Query(Box::new(query.clone())))?;
        alias_field_accesses(plan)
    }

    /// Plans a statement sqlparser parsed (INSERT).
    pub fn plan_statement(&self, statement: ast::Statement) -> Result<LogicalPlan> {
        let planner = SqlToRel::new_with_options(self, parser_options());
        planner.sql_statement_to_plan(statement)
    }

    /// Plans an expression over `schema`.
    pub fn plan_expr(
        &self,
        expr: &ast::Expr,
        schema: &datafusion::common::DFSchema,
    ) -> Result<Expr> {
        let planner = SqlToRel::new_with_options(self, parser_options());
        planner.sql_to_expr(expr.clone(), schema, &mut Default::default())
    }

    fn window_table(&self, tvf: &WindowTvf) -> Result<Arc<dyn TableSource>> {
        let input = match &tvf.input {
            WindowInput::Table(name) => {
                let reference = TableReference::bare(weir_sql::catalog_name(name));
                let source = self.get_table_source(reference.clone())?;
                LogicalPlanBuilder::scan(reference, source, None)?.build()?
            }
            WindowInput::Query(query) => self.plan_query(query)?,
        };
        let input_schema = input.schema().as_arrow().clone();
        let time = tvf.time_column.value.as_str();
        let Some(time_index) = input_schema.fields().iter().position(|f| f.name() == time) else {
            let names: Vec<&str> = input_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            let hint = nearest(time, names.iter().copied())
                .map(|n| format!("did you mean `{n}`?"))
                .unwrap_or_else(|| format!("columns: {}", names.join(", ")));
            return plan_err!(
                "{} window: no time column `{time}` in its input; {hint}",
                tvf.kind.name()
            );
        };
        let time_type = input_schema.field(time_index).data_type();
        if !matches!(time_type, DataType::Timestamp(..)) {
            return plan_err!(
                "{} window: the time column `{time}` is {time_type}, but must be a TIMESTAMP",
                tvf.kind.name()
            );
        }
        for name in [WINDOW_START, WINDOW_END, WINDOW_TIME] {
            if input_schema.field_with_name(name).is_ok() {
                return plan_err!(
                    "the input of a window function already has a column named {name}"
                );
            }
        }
        let processing_time = is_proctime(&input, time);
        let stream = source_stream(&input);
        if !processing_time && stream.as_ref().is_some_and(|s| s.watermark.is_none()) {
            let name = stream.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            return plan_err!(
                "{} window over `{time}`: stream '{name}' declares no WATERMARK, so its windows would never fire; add `WATERMARK FOR {time} AS {time} - INTERVAL '5' SECOND` to its CREATE STREAM, or use PROCTIME()",
                tvf.kind.name()
            );
        }
        let mut fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Field::new(WINDOW_START, ts.clone(), false));
        fields.push(Field::new(WINDOW_END, ts.clone(), false));
        fields.push(Field::new(WINDOW_TIME, ts, false));
        Ok(Arc::new(WindowTable {
            tvf: tvf.clone(),
            input,
            schema: Arc::new(Schema::new(fields)),
            time_index,
            processing_time,
            stream,
        }))
    }

    fn view_table(&self, query: &Query) -> Result<Arc<dyn TableSource>> {
        let context = Context::new(self.catalog, self.state, &query.windows);
        let plan = context.plan_query(&query.query)?;
        Ok(Arc::new(ViewTable { plan }))
    }
}

/// Whether `column` of `plan` is a processing-time attribute (`PROCTIME()`).
pub(crate) fn is_proctime(plan: &LogicalPlan, column: &str) -> bool {
    match plan {
        LogicalPlan::Projection(p) => {
            let Some(index) = p.schema.fields().iter().position(|f| f.name() == column) else {
                return false;
            };
            match p.expr[index].clone().unalias() {
                Expr::ScalarFunction(f) => f.name() == PROCTIME,
                Expr::Column(c) => is_proctime(&p.input, &c.name),
                _ => false,
            }
        }
        LogicalPlan::Filter(f) => is_proctime(&f.input, column),
        LogicalPlan::SubqueryAlias(s) => is_proctime(&s.input, column),
        LogicalPlan::TableScan(scan) => scan
            .source
            .downcast_ref::<StreamTable>()
            .is_some_and(|t| t.def.proctime_columns.iter().any(|c| c == column)),
        _ => false,
    }
}

/// The stream a plan reads (the first one found).
pub(crate) fn source_stream(plan: &LogicalPlan) -> Option<Arc<StreamDef>> {
    if let LogicalPlan::TableScan(scan) = plan {
        if let Some(t) = scan.source.downcast_ref::<StreamTable>() {
            return Some(t.def.clone());
        }
        if let Some(w) = scan.source.downcast_ref::<WindowTable>() {
            return w.stream.clone().or_else(|| source_stream(&w.input));
        }
    }
    plan.inputs().into_iter().find_map(source_stream)
}

impl ContextProvider for Context<'_> {
    fn get_table_source(&self, name: TableReference) -> Result<Arc<dyn TableSource>> {
        let system;
        let table = match name.schema() {
            Some(schema) if schema.eq_ignore_ascii_case(weir_sql::SYSTEM_SCHEMA) => {
                system = weir_sql::system_name(name.table());
                system.as_str()
            }
            _ => name.table(),
        };
        if let Some(tvf) = self.windows.iter().find(|w| w.placeholder == table) {
            return self.window_table(tvf);
        }
        if let Some(stream) = self.catalog.stream(table) {
            return Ok(Arc::new(StreamTable {
                def: stream.clone(),
                as_of: None,
                read_fields: Default::default(),
            }));
        }
        if let Some((name, as_of)) = weir_sql::parse_lookup_name(table) {
            if let Some(stream) = self.catalog.stream(name) {
                return Ok(Arc::new(StreamTable {
                    def: stream.clone(),
                    as_of: Some(as_of.to_string()),
                    read_fields: Default::default(),
                }));
            }
        }
        if let Some(view) = self.catalog.view(table) {
            return self.view_table(&view.query);
        }
        let names = self.catalog.names();
        let user_names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.starts_with(weir_sql::SYSTEM_SCHEMA))
            .collect();
        let hint = match nearest(table, names.iter().map(String::as_str)) {
            Some(n) => format!("; did you mean '{n}'?"),
            None if user_names.is_empty() => {
                "; no streams are defined yet (CREATE STREAM ...)".to_string()
            }
            None => format!("; known: {}", user_names.join(", ")),
        };
        Err(DataFusionError::External(Box::new(UnknownName {
            name: table.to_string(),
            hint,
        })))
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_type_planner(&self) -> Option<Arc<dyn TypePlanner>> {
        None
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(
        &self,
        name: &str,
    ) -> Option<Arc<datafusion::logical_expr::HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
