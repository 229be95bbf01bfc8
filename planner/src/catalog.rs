//! The catalog: streams (sources and sinks) and views, by name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableSource};
use weir_connectors::{Connector, Options};
use weir_sql::{CreateStream, Query, WindowTvf};

/// A stream declared with `CREATE STREAM` or `CREATE TABLE`.
pub struct StreamDef {
    pub name: String,
    pub create: CreateStream,
    /// The columns the connector reads or writes.
    pub physical_schema: SchemaRef,
    /// Every column, computed ones included, in declaration order.
    pub schema: SchemaRef,
    /// Per column of `schema`: its expression over the physical columns if computed.
    pub computed: Vec<Option<Expr>>,
    pub watermark: Option<WatermarkDef>,
    pub options: Options,
    pub connector: Arc<dyn Connector>,
    /// Columns defined as `PROCTIME()`.
    pub proctime_columns: Vec<String>,
    /// Physical columns filled from connector metadata.
    pub metadata: Vec<weir_connectors::MetadataColumn>,
}

impl StreamDef {
    /// The columns of `PRIMARY KEY (...) NOT ENFORCED`, if declared.
    pub fn primary_key(&self) -> Vec<String> {
        self.create
            .primary_key
            .iter()
            .map(|i| i.value.clone())
            .collect()
    }
}

impl std::fmt::Debug for StreamDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDef")
            .field("name", &self.name)
            .finish()
    }
}

/// `WATERMARK FOR column AS expr`, planned.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    pub column: String,
    /// Over `schema` of the stream.
    pub expr: Expr,
    /// As written.
    pub text: String,
}

/// A view: a named query, inlined where it is used.
#[derive(Debug, Clone)]
pub struct ViewDef {
    pub name: String,
    pub query: Query,
    pub schema: SchemaRef,
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub(crate) streams: BTreeMap<String, Arc<StreamDef>>,
    pub(crate) views: BTreeMap<String, Arc<ViewDef>>,
}

impl Catalog {
    pub fn stream(&self, name: &str) -> Option<&Arc<StreamDef>> {
        self.streams.get(name)
    }

    pub fn view(&self, name: &str) -> Option<&Arc<ViewDef>> {
        self.views.get(name)
    }

    pub fn streams(&self) -> impl Iterator<Item = &Arc<StreamDef>> {
        self.streams.values()
    }

    pub fn views(&self) -> impl Iterator<Item = &Arc<ViewDef>> {
        self.views.values()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.streams.contains_key(name) || self.views.contains_key(name)
    }

    /// Every name, for suggestions and completion.
    pub fn names(&self) -> Vec<String> {
        self.streams
            .keys()
            .chain(self.views.keys())
            .cloned()
            .collect()
    }
}

/// A table name the catalog does not know, as DataFusion's planner is told
/// (an external error, so that the caller can find it by type and point
/// at the name).
#[derive(Debug, Clone)]
pub(crate) struct UnknownName {
    pub name: String,
    /// What might have been meant, or what is known.
    pub hint: String,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown stream or view '{}'{}", self.name, self.hint)
    }
}

impl std::error::Error for UnknownName {}

/// The known name closest to `name`, if close enough to be a likely typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::levenshtein(&name.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Filters stay in the plan: streams evaluate them as operators.
fn no_pushdown(filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
    Ok(vec![
        TableProviderFilterPushDown::Unsupported;
        filters.len()
    ])
}

/// A stream as DataFusion sees it while planning.
#[derive(Debug)]
pub(crate) struct StreamTable {
    pub def: Arc<StreamDef>,
    /// Joined `FOR SYSTEM_TIME AS OF` this column of the other side.
    pub as_of: Option<String>,
    /// `ROW` columns the query reads only some fields of, and those fields
    /// ([`crate::row_fields`]).
    pub read_fields: BTreeMap<String, BTreeSet<String>>,
}

impl TableSource for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.def.schema.clone()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        no_pushdown(filters)
    }
}

/// A window table function: its input plan plus `window_start`,
/// `window_end` and `window_time`.
#[derive(Debug)]
pub(crate) struct WindowTable {
    pub tvf: WindowTvf,
    pub input: LogicalPlan,
    pub schema: SchemaRef,
    /// Index of the time attribute in the input.
    pub time_index: usize,
    pub processing_time: bool,
    /// The stream the window reads, for its late-data output.
    pub stream: Option<Arc<StreamDef>>,
}

impl TableSource for WindowTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        no_pushdown(filters)
    }
}

/// A view: DataFusion inlines the plan where the view is used.
#[derive(Debug)]
pub(crate) struct ViewTable {
    pub plan: LogicalPlan,
}

impl TableSource for ViewTable {
    fn schema(&self) -> SchemaRef {
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    fn get_logical_plan(&self) -> Option<std::borrow::Cow<'_, LogicalPlan>> {
        Some(std::borrow::Cow::Borrowed(&self.plan))
    }
}
