//! Lowering a streaming plan ([`crate::rewrite`]) to the engine's graph.
//!
//! Weir's nodes lower themselves ([`StreamingNode::lower`]); DataFusion's
//! stateless nodes become chained operators evaluating DataFusion physical
//! expressions (projection, filter), a one-subtask limit, or a bounded
//! source of rows known now (`VALUES`, `SELECT` without `FROM`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, Array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{cast, Expr, FetchType, LogicalPlan, SkipType, Values};
use datafusion::physical_expr::PhysicalExpr;
use weir_connectors::DeadLetterWriter;
use weir_engine::graph::SourceNode;
use weir_engine::operators::{Filter, Limit, Projection};
use weir_engine::{
    DeadLetterSink, EdgeKind, Graph, NodeId, NodeKind, Operator, OperatorFactory, ValuesSource,
};
use weir_sql::SqlError;

use crate::catalog::StreamDef;
use crate::error::Result;
use crate::nodes::{streaming, Columns, StreamProps, StreamScan};
use crate::settings::Settings;

/// A lowered plan: the graph node producing its rows, and how they stream.
#[derive(Debug, Clone)]
pub(crate) struct Lowered {
    pub node: NodeId,
    pub schema: DFSchemaRef,
    pub parallelism: usize,
    pub bounded: bool,
    /// Rows update earlier rows of their key, rather than only append.
    pub updating: bool,
    /// How the next node connects, when an exchange decided it.
    pub edge: Option<EdgeKind>,
}

impl Lowered {
    pub fn new(node: NodeId, schema: DFSchemaRef, props: &StreamProps) -> Self {
        Lowered {
            node,
            schema,
            parallelism: props.parallelism,
            bounded: props.bounded,
            updating: props.is_updating(),
            edge: None,
        }
    }

    /// The one input of a node.
    pub fn single(inputs: Vec<Lowered>) -> Result<Lowered> {
        let mut inputs = inputs.into_iter();
        match (inputs.next(), inputs.next()) {
            (Some(input), None) => Ok(input),
            _ => Err(SqlError::new("a streaming node expected one input").into()),
        }
    }
}

/// Builds the graph of one job.
pub(crate) struct Lowering<'a> {
    pub graph: Graph,
    pub state: &'a SessionState,
    pub settings: &'a Settings,
    /// Per source node: the rows it will read, if known.
    pub expected: Vec<Option<u64>>,
    /// Per stream the job scans: the columns all its scans read
    /// together (`None`: every column), from [`Lowering::plan_reads`].
    reads: HashMap<String, Option<Columns>>,
    /// Per stream: its source node, once lowered, and what it reads.
    sources: HashMap<String, (Lowered, Columns)>,
}

/// An operator that every subtask runs a copy of.
pub(crate) fn op_factory<O: Operator + Clone + Sync + 'static>(op: O) -> OperatorFactory {
    Arc::new(move |_| Ok(Box::new(op.clone()) as Box<dyn Operator>))
}

impl<'a> Lowering<'a> {
    pub fn new(state: &'a SessionState, settings: &'a Settings) -> Self {
        Lowering {
            graph: Graph::new(),
            state,
            settings,
            expected: Vec::new(),
            reads: HashMap::new(),
            sources: HashMap::new(),
        }
    }

    /// Lowers the plans of one job: a stream several of them (or several
    /// branches of one) scan is read by one source, whose rows go to
    /// every scan, as Flink reuses a source.
    pub fn lower_job(&mut self, plans: &[&LogicalPlan]) -> Result<Vec<Lowered>> {
        for plan in plans {
            self.plan_reads(plan);
        }
        plans.iter().map(|plan| self.lower(plan)).collect()
    }

    /// Lowers the plan of a job that has one.
    pub fn lower_one(&mut self, plan: &LogicalPlan) -> Result<Lowered> {
        let mut lowered = self.lower_job(&[plan])?;
        lowered
            .pop()
            .ok_or_else(|| SqlError::new("a job without a plan").into())
    }

    /// Notes the columns every scan in `plan` reads.
    fn plan_reads(&mut self, plan: &LogicalPlan) {
        if let LogicalPlan::Extension(e) = plan {
            if let Some(scan) = e.node.as_any().downcast_ref::<StreamScan>() {
                let read = scan.read.clone();
                let name = scan.stream.name.clone();
                let merged = match self.reads.get(&name) {
                    Some(planned) => Columns::union(planned.as_ref(), read.as_ref()),
                    None => read,
                };
                self.reads.insert(name, merged);
            }
        }
        for input in plan.inputs() {
            self.plan_reads(input);
        }
    }

    /// The columns the scans of `stream` read together, when planned.
    pub fn planned_read(&self, stream: &str) -> Option<Option<Columns>> {
        self.reads.get(stream).cloned()
    }

    /// The source of `stream`, if a scan already added it.
    pub fn shared_source(&self, stream: &str) -> Option<(Lowered, Columns)> {
        self.sources.get(stream).cloned()
    }

    /// Notes the source of `stream` for the job's other scans of it.
    pub fn share_source(&mut self, stream: &str, source: Lowered, columns: Columns) {
        self.sources.insert(stream.to_string(), (source, columns));
    }

    /// Rows the sources of the graph will read, when every one knows.
    pub fn expected_rows(&self) -> Option<u64> {
        self.expected
            .iter()
            .try_fold(0u64, |sum, e| e.map(|n| sum + n))
    }

    pub fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        let physical = self.state.create_physical_expr(expr.clone(), schema)?;
        crate::fixed_interval::as_durations(physical, schema.as_arrow())
    }

    /// Each of `exprs` as a physical expression over `schema`.
    pub fn physical_all(
        &self,
        exprs: &[Expr],
        schema: &DFSchema,
    ) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        exprs.iter().map(|e| self.physical(e, schema)).collect()
    }

    /// An `ORDER BY` as physical sort keys over `schema`.
    pub fn sort_keys(
        &self,
        order: &[datafusion::logical_expr::SortExpr],
        schema: &DFSchema,
    ) -> Result<
        Vec<(
            Arc<dyn PhysicalExpr>,
            datafusion::arrow::compute::SortOptions,
        )>,
    > {
        order
            .iter()
            .map(|s| {
                let options = datafusion::arrow::compute::SortOptions {
                    descending: !s.asc,
                    nulls_first: s.nulls_first,
                };
                Ok((self.physical(&s.expr, schema)?, options))
            })
            .collect()
    }

    /// Adds a node of `props.parallelism` subtasks after `input`.
    pub fn add_node(
        &mut self,
        input: Lowered,
        name: &str,
        detail: String,
        kind: NodeKind,
        schema: DFSchemaRef,
        props: &StreamProps,
    ) -> Lowered {
        self.add_node_after(vec![input], name, detail, kind, schema, props)
    }

    /// Adds a node after each of `inputs`, in order: the input sides the
    /// operator sees (`Operator::on_side_batch`).
    pub fn add_node_after(
        &mut self,
        inputs: Vec<Lowered>,
        name: &str,
        detail: String,
        kind: NodeKind,
        schema: DFSchemaRef,
        props: &StreamProps,
    ) -> Lowered {
        let node = self.graph.add_node(name, detail, props.parallelism, kind);
        for input in inputs {
            let edge = input
                .edge
                .unwrap_or(if input.parallelism == props.parallelism {
                    EdgeKind::Forward
                } else {
                    EdgeKind::Rebalance
                });
            self.graph.connect(input.node, node, edge);
        }
        Lowered::new(node, schema, props)
    }

    /// Adds a stateless operator after `input`, at its parallelism.
    pub fn add_operator<O: Operator + Clone + Sync + 'static>(
        &mut self,
        input: Lowered,
        name: &str,
        detail: String,
        operator: O,
        schema: DFSchemaRef,
    ) -> Lowered {
        let props = StreamProps {
            parallelism: input.parallelism,
            bounded: input.bounded,
            changelog: crate::nodes::Changelog::AppendOnly,
        };
        let updating = input.updating;
        let kind = NodeKind::Operator {
            factory: op_factory(operator),
            late_output: None,
        };
        let lowered = self.add_node(input, name, detail, kind, schema, &props);
        Lowered {
            updating,
            ..lowered
        }
    }

    /// Lowers `plan` (a streaming plan).
    pub fn lower(&mut self, plan: &LogicalPlan) -> Result<Lowered> {
        match plan {
            LogicalPlan::Extension(e) => {
                let node = streaming(e.node.as_ref()).ok_or_else(|| {
                    SqlError::new(format!("cannot run {} on a stream", e.node.name()))
                })?;
                let inputs = e
                    .node
                    .inputs()
                    .into_iter()
                    .map(|i| self.lower(i))
                    .collect::<Result<Vec<_>>>()?;
                node.lower(inputs, self)
            }
            LogicalPlan::Projection(p) => {
                let input = self.lower(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                let detail = p
                    .expr
                    .iter()
                    .map(display_expr)
                    .collect::<Vec<_>>()
                    .join(", ");
                let projection =
                    Projection::new("projection", exprs, Arc::new(p.schema.as_arrow().clone()));
                Ok(self.add_operator(input, "projection", detail, projection, p.schema.clone()))
            }
            LogicalPlan::Filter(f) => {
                let input = self.lower(&f.input)?;
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                let filter = Filter::new("filter", predicate);
                let detail = display_expr(&f.predicate);
                Ok(self.add_operator(input, "filter", detail, filter, f.input.schema().clone()))
            }
            LogicalPlan::SubqueryAlias(s) => {
                let lowered = self.lower(&s.input)?;
                Ok(Lowered {
                    schema: s.schema.clone(),
                    ..lowered
                })
            }
            LogicalPlan::Limit(limit) => self.limit(limit),
            LogicalPlan::EmptyRelation(e) => {
                let options =
                    RecordBatchOptions::new().with_row_count(Some(usize::from(e.produce_one_row)));
                let batch = RecordBatch::try_new_with_options(
                    Arc::new(e.schema.as_arrow().clone()),
                    vec![],
                    &options,
                )
                .map_err(|e| SqlError::new(e.to_string()))?;
                Ok(self.values(batch, e.schema.clone(), "one empty row".into()))
            }
            LogicalPlan::Values(v) => {
                let batch = self.evaluate_values(v)?;
                let detail = format!("{} rows", batch.num_rows());
                Ok(self.values(batch, v.schema.clone(), detail))
            }
            other => Err(SqlError::new(format!(
                "cannot run {} as a streaming query",
                other.display()
            ))
            .into()),
        }
    }

    /// A limit: one subtask counts the rows.
    fn limit(&mut self, limit: &datafusion::logical_expr::Limit) -> Result<Lowered> {
        let skip = match limit.get_skip_type()? {
            SkipType::Literal(n) => n,
            _ => {
                return Err(
                    SqlError::new("a computed OFFSET is not supported on a stream yet")
                        .with_hint("use a number")
                        .into(),
                )
            }
        };
        let fetch = match limit.get_fetch_type()? {
            FetchType::Literal(n) => n,
            _ => {
                return Err(
                    SqlError::new("a computed LIMIT is not supported on a stream yet")
                        .with_hint("use a number")
                        .into(),
                )
            }
        };
        let input = self.lower(&limit.input)?;
        let props = StreamProps {
            parallelism: 1,
            bounded: input.bounded || fetch.is_some(),
            changelog: crate::nodes::Changelog::AppendOnly,
        };
        let updating = input.updating;
        let detail = format!(
            "skip {skip}, fetch {}",
            fetch.map_or("all".to_string(), |f| f.to_string())
        );
        let kind = NodeKind::Operator {
            factory: op_factory(Limit::new(skip, fetch)),
            late_output: None,
        };
        let lowered = self.add_node(
            input,
            "limit",
            detail,
            kind,
            limit.input.schema().clone(),
            &props,
        );
        Ok(Lowered {
            updating,
            ..lowered
        })
    }

    /// A bounded source of rows known now: `VALUES`, or `SELECT` without `FROM`.
    fn values(&mut self, batch: RecordBatch, schema: DFSchemaRef, detail: String) -> Lowered {
        self.expected.push(Some(batch.num_rows() as u64));
        let node = self.graph.add_node(
            "source: values",
            detail,
            1,
            NodeKind::Source(SourceNode {
                factory: ValuesSource::factory(vec![batch]),
                computed: Vec::new(),
                watermark: None,
                connector: Default::default(),
            }),
        );
        Lowered::new(node, schema, &StreamProps::append(1, true))
    }

    /// The rows of a `VALUES` list: each expression evaluated once, cast to
    /// the column's type.
    fn evaluate_values(&self, values: &Values) -> Result<RecordBatch> {
        let schema = Arc::new(values.schema.as_arrow().clone());
        let empty = DFSchema::empty();
        let one_row = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )
        .map_err(|e| SqlError::new(e.to_string()))?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (i, field) in schema.fields().iter().enumerate() {
            let mut cells = Vec::with_capacity(values.values.len());
            for row in &values.values {
                let expr = cast(row[i].clone(), field.data_type().clone());
                let value = self
                    .physical(&expr, &empty)?
                    .evaluate(&one_row)
                    .and_then(|v| v.into_array(1))?;
                cells.push(value);
            }
            let cells: Vec<&dyn Array> = cells.iter().map(|c| c.as_ref()).collect();
            columns.push(if cells.is_empty() {
                new_empty_array(field.data_type())
            } else {
                concat(&cells).map_err(|e| SqlError::new(e.to_string()))?
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(values.values.len()));
        Ok(RecordBatch::try_new_with_options(schema, columns, &options)
            .map_err(|e| SqlError::new(e.to_string()))?)
    }

    /// Adds the sink node after `input`, with `parallelism` subtasks
    /// (`'sink.parallelism'`) or the input's.
    pub fn add_sink(
        &mut self,
        input: &Lowered,
        name: &str,
        detail: String,
        sink: weir_engine::SinkNode,
        parallelism: Option<usize>,
    ) -> NodeId {
        let parallelism = parallelism.unwrap_or(input.parallelism).max(1);
        let node = self
            .graph
            .add_node(name, detail, parallelism, NodeKind::Sink(sink));
        let edge = if parallelism == input.parallelism {
            EdgeKind::Forward
        } else {
            EdgeKind::Rebalance
        };
        self.graph.connect(input.node, node, edge);
        node
    }
}

/// An expression as EXPLAIN shows it, without Weir's internal qualifiers.
/// Join key pairs as EXPLAIN shows them: `[a = b, ...]`, and the
/// conditions besides them.
pub(crate) fn join_condition_text<'a>(
    pairs: impl Iterator<Item = (&'a Expr, &'a Expr)>,
    residual: Option<&[Expr]>,
) -> String {
    let pairs: Vec<String> = pairs
        .map(|(a, b)| format!("{} = {}", display_expr(a), display_expr(b)))
        .collect();
    let mut text = format!("[{}]", pairs.join(", "));
    if let Some(residual) = residual {
        let shown: Vec<String> = residual.iter().map(display_expr).collect();
        text.push_str(&format!(", filter {}", shown.join(" AND ")));
    }
    text
}

pub(crate) fn display_expr(e: &Expr) -> String {
    without_placeholders(&e.human_display().to_string())
}

/// `text` without the qualifiers of Weir's window table placeholders
/// (`__weir_window_0.bid` reads `bid`).
pub(crate) fn without_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(weir_sql::PLACEHOLDER_PREFIX) {
        out.push_str(&rest[..at]);
        let after = &rest[at + weir_sql::PLACEHOLDER_PREFIX.len()..];
        let after = after.trim_start_matches(|c: char| c.is_ascii_digit());
        rest = after.strip_prefix('.').unwrap_or(after);
    }
    out.push_str(rest);
    out
}

/// Where a window's late rows go: `'late-data'` = `dlq` (default) writes
/// them to `'late-data.path'` (or the stream's dead letters, `'bad-data.path'`
/// or `'bad-data.topic'`); `drop` only counts.
pub(crate) fn late_output(stream: &StreamDef) -> Result<Option<Arc<dyn DeadLetterSink>>> {
    let options = &stream.options;
    match options
        .get("late-data")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("drop") => Ok(None),
        None | Some("dlq") => {
            let name = format!("{}-late", stream.name);
            let path = options
                .get("late-data.path")
                .or(options.get("bad-data.path"));
            let writer = match (path, options.get("bad-data.topic")) {
                (Some(path), _) => DeadLetterWriter::to_files(&name, path, options)?,
                (None, Some(topic)) => DeadLetterWriter::to_topic(&name, topic, options)?,
                (None, None) => return Ok(None),
            };
            Ok(Some(Arc::new(writer)))
        }
        Some(other) => Err(weir_connectors::ConnectorError::option(
            "late-data",
            format!("'{other}' must be dlq or drop"),
        )
        .into()),
    }
}
