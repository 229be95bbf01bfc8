//! `StreamScan`: a declared stream read by its connector, with its computed
//! columns and its watermark, and the columns the query uses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use weir_connectors::{BadDataPolicy, TableSpec};
use weir_engine::graph::{ConnectorOptions, SourceNode};
use weir_engine::operators::Projection;
use weir_engine::window::fmt_ms;
use weir_engine::{NodeKind, WatermarkSpec};

use super::{node_core, StreamProps, StreamingNode};
use crate::catalog::StreamDef;
use crate::error::Result;
use crate::lower::{Lowered, Lowering};
use crate::row_fields::{field_access, Uses};
use crate::settings::Settings;

/// The scan of one stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamScan {
    pub stream: Arc<StreamDef>,
    /// Columns of the stream's schema the query reads, in order; `None`
    /// for all.
    pub projection: Option<Vec<usize>>,
    /// The projected columns, qualified by the scan's name.
    pub schema: DFSchemaRef,
    /// The columns read, when the connector can read only some
    /// ([`weir_connectors::Connector::reads_projection`]).
    pub read: Option<Columns>,
    pub props: StreamProps,
    /// Always `None`: a scan has no input.
    pub inputs: Vec<LogicalPlan>,
}

node_core!(StreamScan, "StreamScan");

impl StreamScan {
    pub fn new(
        stream: Arc<StreamDef>,
        projection: Option<Vec<usize>>,
        schema: DFSchemaRef,
        read_fields: &BTreeMap<String, BTreeSet<String>>,
        settings: &Settings,
    ) -> Result<Self> {
        let spec = source_spec(&stream, &Columns::all(&stream).physical)?;
        let parallelism = settings
            .parallelism()
            .min(
                stream
                    .connector
                    .max_source_parallelism(&spec)
                    .unwrap_or(usize::MAX),
            )
            .max(1);
        let bounded = stream.connector.is_bounded(&stream.options);
        let read = projection
            .as_ref()
            .and_then(|p| Columns::pruned(&stream, p, read_fields));
        Ok(StreamScan {
            stream,
            projection,
            schema,
            read,
            props: StreamProps::append(parallelism, bounded),
            inputs: Vec::new(),
        })
    }

    fn explain(&self) -> String {
        let s = &self.stream;
        let mut text = format!("{}, connector={}", s.name, s.connector.name());
        if let Some(w) = &s.watermark {
            text.push_str(&format!(", watermark: {} AS {}", w.column, w.text));
        }
        if let Some(p) = &self.projection {
            let names: Vec<&str> = p
                .iter()
                .map(|i| s.schema.field(*i).name().as_str())
                .collect();
            text.push_str(&format!(", columns [{}]", names.join(", ")));
        }
        if let Some(read) = &self.read {
            let names: Vec<String> = read
                .physical
                .iter()
                .map(|i| {
                    let name = s.physical_schema.field(*i).name();
                    match read.row_fields.get(i) {
                        Some(fields) => {
                            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
                            format!("{name}({})", fields.join(", "))
                        }
                        None => name.clone(),
                    }
                })
                .collect();
            text.push_str(&format!(", reads only [{}]", names.join(", ")));
        }
        text
    }
}

/// Which columns a scan reads and produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Columns {
    /// Physical columns the connector reads (indices into its schema).
    pub physical: Vec<usize>,
    /// Columns of the stream the source node produces (indices into the
    /// stream's schema, computed ones included), in declaration order.
    pub produced: Vec<usize>,
    /// `ROW` columns of `physical` of which only some fields are read (the
    /// query and the computed columns use them by field name, and the
    /// connector [`weir_connectors::Connector::reads_row_fields`]): their
    /// indices and those fields.
    pub row_fields: BTreeMap<usize, BTreeSet<String>>,
}

impl Columns {
    /// What two scans of one stream read together (`None`: every column).
    pub fn union(a: Option<&Columns>, b: Option<&Columns>) -> Option<Columns> {
        let (a, b) = (a?, b?);
        let merge = |x: &[usize], y: &[usize]| {
            let mut all: Vec<usize> = x.iter().chain(y).copied().collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        // A row column stays narrowed only where every scan reading it
        // reads it narrowed.
        let physical = merge(&a.physical, &b.physical);
        let mut row_fields = BTreeMap::new();
        for &i in &physical {
            let narrowed = |c: &Columns| match c.row_fields.get(&i) {
                Some(fields) => Some(fields.clone()),
                None if c.physical.contains(&i) => None,
                None => Some(BTreeSet::new()),
            };
            if let (Some(x), Some(y)) = (narrowed(a), narrowed(b)) {
                row_fields.insert(i, x.union(&y).cloned().collect());
            }
        }
        Some(Columns {
            physical,
            produced: merge(&a.produced, &b.produced),
            row_fields,
        })
    }

    /// The fields read of each narrowed row column, by column name.
    pub fn read_fields(&self, stream: &StreamDef) -> BTreeMap<String, BTreeSet<String>> {
        self.row_fields
            .iter()
            .map(|(i, fields)| {
                (
                    stream.physical_schema.field(*i).name().clone(),
                    fields.clone(),
                )
            })
            .collect()
    }

    /// Every column.
    fn all(stream: &StreamDef) -> Self {
        Columns {
            physical: (0..stream.physical_schema.fields().len()).collect(),
            produced: (0..stream.schema.fields().len()).collect(),
            row_fields: BTreeMap::new(),
        }
    }

    /// The columns `projection` needs, when the connector can read only
    /// some: the projected ones, what the watermark uses, and the physical
    /// columns their computed columns use. `None` when that is all of them
    /// (or the connector reads whole rows, or fills metadata columns).
    fn pruned(
        stream: &StreamDef,
        projection: &[usize],
        read_fields: &BTreeMap<String, BTreeSet<String>>,
    ) -> Option<Self> {
        if !stream.metadata.is_empty() || !stream.connector.reads_projection(&stream.options) {
            return None;
        }
        let schema = &stream.schema;
        let mut produced = vec![false; schema.fields().len()];
        for i in projection {
            *produced.get_mut(*i)? = true;
        }
        for column in stream.watermark.iter().flat_map(|w| w.expr.column_refs()) {
            produced[schema.index_of(&column.name).ok()?] = true;
        }
        let mut uses = Uses::default();
        for (i, computed) in stream.computed.iter().enumerate() {
            if !produced[i] {
                continue;
            }
            match computed {
                Some(expr) => uses.add(expr),
                None => {
                    let name = schema.field(i).name();
                    match read_fields.get(name) {
                        Some(fields) => {
                            let used = uses.fields.entry(name.clone()).or_default();
                            used.extend(fields.iter().cloned());
                        }
                        None => {
                            uses.whole.insert(name.clone());
                        }
                    }
                }
            }
        }
        let index = |name: &str| stream.physical_schema.index_of(name).ok();
        let mut physical = vec![false; stream.physical_schema.fields().len()];
        for name in uses.whole.iter().chain(uses.fields.keys()) {
            physical[index(name)?] = true;
        }
        let mut row_fields = BTreeMap::new();
        if stream.connector.reads_row_fields(&stream.options) {
            for (name, fields) in uses.by_field_only() {
                row_fields.insert(index(&name)?, fields);
            }
        }
        let columns = Columns {
            physical: (0..physical.len()).filter(|i| physical[*i]).collect(),
            produced: (0..produced.len()).filter(|i| produced[*i]).collect(),
            row_fields,
        };
        (columns != Columns::all(stream)).then_some(columns)
    }
}

/// What the connector is given to read `stream`: the physical columns of
/// `read`.
pub(crate) fn source_spec(stream: &StreamDef, read: &[usize]) -> Result<TableSpec> {
    let schema = if read.len() == stream.physical_schema.fields().len() {
        stream.physical_schema.clone()
    } else {
        Arc::new(
            stream
                .physical_schema
                .project(read)
                .map_err(DataFusionError::from)?,
        )
    };
    Ok(TableSpec {
        name: stream.name.clone(),
        schema,
        options: stream.options.clone(),
        partitioned_by: Vec::new(),
        bad_data: BadDataPolicy::from_options(&stream.name, &stream.options)?,
        metadata: stream.metadata.clone(),
        checkpointing: false,
        primary_key: stream.primary_key(),
        read_fields: BTreeMap::new(),
    })
}

impl StreamingNode for StreamScan {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, _inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let def = &self.stream;
        // A stream several scans of the job read is read once, with the
        // columns all of them need, and its rows go to each.
        let (source, columns) = match lowering.shared_source(&def.name) {
            Some(shared) => shared,
            None => {
                let columns = lowering
                    .planned_read(&def.name)
                    .unwrap_or_else(|| self.read.clone())
                    .unwrap_or_else(|| Columns::all(def));
                let source = self.add_source(&columns, lowering)?;
                lowering.share_source(&def.name, source.clone(), columns.clone());
                (source, columns)
            }
        };
        self.project(source, &columns, lowering)
    }
}

impl StreamScan {
    /// The source node reading `columns` of the stream.
    fn add_source(&self, columns: &Columns, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let def = &self.stream;
        let mut spec = source_spec(def, &columns.physical)?;
        spec.read_fields = columns.read_fields(def);
        let factory = def.connector.source(&spec)?;
        let physical = DFSchema::try_from_qualified_schema(def.name.as_str(), &spec.schema)?;
        let produced = Arc::new(
            def.schema
                .project(&columns.produced)
                .map_err(DataFusionError::from)?,
        );
        let full = Arc::new(DFSchema::try_from_qualified_schema(
            def.name.as_str(),
            &produced,
        )?);
        let computed = computed_columns(def, columns, &spec, &physical, &produced, lowering)?;
        let watermark = watermark(def, &full, lowering)?;
        lowering
            .expected
            .push(def.connector.expected_rows(&def.options));
        let mut detail = format!("connector={}", def.connector.name());
        if let Some(w) = &watermark {
            detail.push_str(&format!(", watermark: {}", w.display));
            if let Some(t) = w.idle_timeout {
                detail.push_str(&format!(", idle-timeout {}", fmt_ms(t.as_millis() as i64)));
            }
        }
        detail.push_str(if self.props.bounded {
            ", bounded"
        } else {
            ", unbounded"
        });
        let node = lowering.graph.add_node(
            format!("source: {}", def.name),
            detail,
            self.props.parallelism,
            NodeKind::Source(SourceNode {
                factory,
                computed,
                watermark,
                connector: ConnectorOptions {
                    name: def.connector.name().to_string(),
                    options: def
                        .options
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                },
            }),
        );
        Ok(Lowered::new(node, full, &self.props))
    }

    /// This scan's columns of `source`, which produces `columns`.
    fn project(
        &self,
        source: Lowered,
        columns: &Columns,
        lowering: &mut Lowering<'_>,
    ) -> Result<Lowered> {
        let every: Vec<usize>;
        let projection = match &self.projection {
            None if columns.produced.len() == self.stream.schema.fields().len() => None,
            None => {
                every = (0..self.stream.schema.fields().len()).collect();
                Some(&every)
            }
            Some(indices) => Some(indices),
        };
        match projection {
            None => Ok(Lowered {
                schema: self.schema.clone(),
                ..source
            }),
            Some(indices) => {
                let exprs = indices
                    .iter()
                    .map(|i| {
                        // Column `i` of the stream, where the source puts it.
                        let at = columns.produced.iter().position(|p| p == i).unwrap_or(*i);
                        let field = source.schema.field(at);
                        Arc::new(Column::new(field.name(), at)) as Arc<dyn PhysicalExpr>
                    })
                    .collect();
                let projection = Projection::new(
                    "projection",
                    exprs,
                    Arc::new(self.schema.as_arrow().clone()),
                );
                let names: Vec<&str> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                Ok(lowering.add_operator(
                    source,
                    "projection",
                    names.join(", "),
                    projection,
                    self.schema.clone(),
                ))
            }
        }
    }
}

/// The computed columns of `columns.produced`, evaluated on what the
/// connector read; empty when the stream computes none of them.
///
/// A `ROW` field a computed column reads (`bid.dateTime`) is taken out of
/// its row first, in a projection of its own, and the computed columns
/// read it as a plain column: DataFusion's `CASE` filters the columns its
/// branches use for each branch, and a whole row column (strings and all)
/// costs far more to filter than one timestamp.
fn computed_columns(
    def: &StreamDef,
    columns: &Columns,
    spec: &TableSpec,
    physical: &DFSchema,
    produced: &SchemaRef,
    lowering: &Lowering<'_>,
) -> Result<Vec<Arc<Projection>>> {
    if !columns.produced.iter().any(|i| def.computed[*i].is_some()) {
        return Ok(Vec::new());
    }
    let mut stages = Vec::new();
    let mut fields = FieldColumns::default();
    let computed: Vec<Option<Expr>> = columns
        .produced
        .iter()
        .map(|i| {
            def.computed[*i]
                .as_ref()
                .map(|e| fields.extract(e))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let read = if fields.accesses.is_empty() {
        physical.clone()
    } else {
        let (stage, schema) = fields.projection(def, physical, lowering)?;
        stages.push(Arc::new(stage));
        schema
    };
    let exprs = columns
        .produced
        .iter()
        .zip(&computed)
        .map(|(i, computed)| match computed {
            Some(expr) => lowering.physical(expr, &read),
            None => {
                let name = def.schema.field(*i).name();
                let at = spec.schema.index_of(name).map_err(DataFusionError::from)?;
                Ok(Arc::new(Column::new(name, at)) as Arc<dyn PhysicalExpr>)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    stages.push(Arc::new(Projection::new(
        "computed columns",
        exprs,
        produced.clone(),
    )));
    Ok(stages)
}

/// The `ROW` fields computed columns read, as columns of their own.
#[derive(Default)]
struct FieldColumns {
    /// Each distinct `column.field` and the name of its column.
    accesses: Vec<(Expr, String)>,
}

impl FieldColumns {
    /// `expr` reading each `column.field` from a column of its own.
    fn extract(&mut self, expr: &Expr) -> Result<Expr> {
        let rewritten = expr.clone().transform_down(|e| {
            let Some((column, field)) = field_access(&e) else {
                return Ok(Transformed::no(e));
            };
            let name = format!("__weir_field:{}.{field}", column.name);
            if !self.accesses.iter().any(|(_, n)| *n == name) {
                self.accesses.push((e.clone(), name.clone()));
            }
            let column = datafusion::common::Column::new(column.relation.clone(), name);
            Ok(Transformed::new(
                Expr::Column(column),
                true,
                TreeNodeRecursion::Jump,
            ))
        })?;
        Ok(rewritten.data)
    }

    /// The projection passing every read column through and adding the
    /// field columns, and the schema it produces.
    fn projection(
        &self,
        def: &StreamDef,
        physical: &DFSchema,
        lowering: &Lowering<'_>,
    ) -> Result<(Projection, DFSchema)> {
        let read = physical.as_arrow();
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> = read
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let mut fields: Vec<_> = read.fields().iter().cloned().collect();
        for (access, name) in &self.accesses {
            let expr = lowering.physical(access, physical)?;
            let field = expr.return_field(read)?;
            fields.push(Arc::new(field.as_ref().clone().with_name(name)));
            exprs.push(expr);
        }
        let schema = Arc::new(Schema::new(fields));
        let qualified = DFSchema::try_from_qualified_schema(def.name.as_str(), &schema)?;
        Ok((Projection::new("row fields", exprs, schema), qualified))
    }
}

/// The stream's `WATERMARK`, evaluated on the columns the source produces.
fn watermark(
    def: &StreamDef,
    full: &DFSchema,
    lowering: &Lowering<'_>,
) -> Result<Option<WatermarkSpec>> {
    let Some(w) = &def.watermark else {
        return Ok(None);
    };
    Ok(Some(WatermarkSpec {
        expr: lowering.physical(&w.expr, full)?,
        display: w.text.clone(),
        idle_timeout: def
            .options
            .duration("scan.watermark.idle-timeout")?
            .or(lowering.settings.idle_timeout()),
        idle_advance: def
            .options
            .bool("scan.watermark.idle-advance")?
            .unwrap_or(false),
    }))
}
