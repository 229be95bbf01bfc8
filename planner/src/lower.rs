//! Lowering a DataFusion logical plan to the engine's streaming graph.
//!
//! Stateless nodes (projection, filter) become chained operators evaluating
//! DataFusion physical expressions; a scan of a stream becomes its source
//! (connector, computed columns, watermark); an aggregate over a window
//! function becomes a window aggregation, two-phase when parallel. What
//! cannot run on an unbounded stream yet is rejected with a reason.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{Column, DFSchema, DFSchemaRef};
use datafusion::execution::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{cast, Expr, LogicalPlan, TableScan, Values};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::PhysicalExpr;
use weir_connectors::{BadDataPolicy, DeadLetterWriter, TableSpec};
use weir_engine::aggregate::AggregateSpec;
use weir_engine::graph::SourceNode;
use weir_engine::operators::{Filter, Limit, Projection, UpdatingAggregate};
use weir_engine::window::{
    fmt_ms, partial_schema, AggregateMode, AssignWindows, OutputColumn, OutputLayout,
    SessionWindowAggregate, SliceWindows, TimeSource, WindowAggregate,
};
use weir_engine::{
    DeadLetterSink, EdgeKind, Graph, NodeId, NodeKind, Operator, OperatorFactory, ValuesSource,
    WatermarkSpec,
};
use weir_sql::{SqlError, WindowKind, WINDOW_END, WINDOW_START, WINDOW_TIME};

use crate::catalog::{StreamDef, StreamTable, WindowTable};
use crate::error::df_error;
use crate::settings::Settings;

type Result<T> = std::result::Result<T, SqlError>;

/// A lowered plan: the node producing its rows.
#[derive(Debug, Clone)]
pub(crate) struct Lowered {
    pub node: NodeId,
    pub schema: DFSchemaRef,
    pub parallelism: usize,
    pub bounded: bool,
    /// Rows update earlier rows of their key (an unwindowed aggregate
    /// upstream), rather than only being appended.
    pub updating: bool,
}

impl Lowering<'_> {
    /// Rows the sources of the graph will read, when every one knows.
    pub fn expected_rows(&self) -> Option<u64> {
        self.expected
            .iter()
            .try_fold(0u64, |sum, e| e.map(|n| sum + n))
    }
}

pub(crate) struct Lowering<'a> {
    pub graph: Graph,
    state: &'a SessionState,
    settings: &'a Settings,
    parallelism: usize,
    /// Window tables whose rows feed a window aggregate: they carry each
    /// row's time in the window columns instead of one row per window.
    rowtime_scans: HashSet<String>,
    /// Per source node: the rows it will read, if known.
    expected: Vec<Option<u64>>,
}

fn unsupported(what: &str, hint: &str) -> SqlError {
    SqlError::new(format!("{what} is not supported on a stream yet")).with_hint(hint)
}

fn op_factory<O: Operator + Clone + Sync + 'static>(op: O) -> OperatorFactory {
    Arc::new(move |_| Ok(Box::new(op.clone()) as Box<dyn Operator>))
}

impl<'a> Lowering<'a> {
    pub fn new(state: &'a SessionState, settings: &'a Settings) -> Self {
        Lowering {
            graph: Graph::new(),
            state,
            settings,
            parallelism: settings.parallelism(),
            rowtime_scans: HashSet::new(),
            expected: Vec::new(),
        }
    }

    fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        self.state
            .create_physical_expr(expr.clone(), schema)
            .map_err(df_error)
    }

    fn add_operator(
        &mut self,
        input: &Lowered,
        name: &str,
        detail: String,
        factory: OperatorFactory,
        schema: DFSchemaRef,
    ) -> Lowered {
        let node = self.graph.add_node(
            name,
            detail,
            input.parallelism,
            NodeKind::Operator {
                factory,
                late_output: None,
            },
        );
        self.graph.connect(input.node, node, EdgeKind::Forward);
        Lowered {
            node,
            schema,
            parallelism: input.parallelism,
            bounded: input.bounded,
            updating: input.updating,
        }
    }

    pub fn lower(&mut self, plan: &LogicalPlan) -> Result<Lowered> {
        match plan {
            LogicalPlan::Projection(p) => {
                let input = self.lower(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                let detail = p.expr.iter().map(display_expr).collect::<Vec<_>>().join(", ");
                let projection = Projection::new("projection", exprs, Arc::new(p.schema.as_arrow().clone()));
                Ok(self.add_operator(&input, "projection", detail, op_factory(projection), p.schema.clone()))
            }
            LogicalPlan::Filter(f) => {
                let input = self.lower(&f.input)?;
                if input.updating {
                    return Err(unsupported(
                        "a filter (WHERE or HAVING) on the result of a GROUP BY without a window",
                        "its rows update earlier ones, and a row that stops matching would have to retract one; filter before the GROUP BY, or group by a window",
                    ));
                }
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                let filter = Filter::new("filter", predicate);
                let detail = display_expr(&f.predicate);
                Ok(self.add_operator(&input, "filter", detail, op_factory(filter), f.input.schema().clone()))
            }
            LogicalPlan::SubqueryAlias(s) => {
                let mut lowered = self.lower(&s.input)?;
                lowered.schema = s.schema.clone();
                Ok(lowered)
            }
            LogicalPlan::TableScan(scan) => self.lower_scan(scan),
            LogicalPlan::Aggregate(agg) => self.lower_aggregate(agg),
            LogicalPlan::Limit(limit) => {
                let skip = match limit.get_skip_type().map_err(df_error)? {
                    datafusion::logical_expr::SkipType::Literal(n) => n,
                    _ => return Err(unsupported("a computed OFFSET", "use a number")),
                };
                let fetch = match limit.get_fetch_type().map_err(df_error)? {
                    datafusion::logical_expr::FetchType::Literal(n) => n,
                    _ => return Err(unsupported("a computed LIMIT", "use a number")),
                };
                let input = self.lower(&limit.input)?;
                let node = self.graph.add_node(
                    "limit",
                    format!("skip {skip}, fetch {}", fetch.map_or("all".to_string(), |f| f.to_string())),
                    1,
                    NodeKind::Operator {
                        factory: op_factory(Limit::new(skip, fetch)),
                        late_output: None,
                    },
                );
                let edge = if input.parallelism == 1 { EdgeKind::Forward } else { EdgeKind::Rebalance };
                self.graph.connect(input.node, node, edge);
                Ok(Lowered {
                    node,
                    schema: limit.input.schema().clone(),
                    parallelism: 1,
                    bounded: input.bounded || fetch.is_some(),
                    updating: input.updating,
                })
            }
            LogicalPlan::Sort(_) => Err(unsupported(
                "ORDER BY",
                "an unbounded stream has no last row to sort by; order the output of a windowed query downstream",
            )),
            LogicalPlan::Join(_) => Err(unsupported("JOIN", "joins are not implemented yet")),
            LogicalPlan::Union(_) => Err(unsupported("UNION", "write each part with its own INSERT INTO the same sink")),
            LogicalPlan::Distinct(_) => Err(unsupported(
                "SELECT DISTINCT",
                "deduplicate within a window: GROUP BY window_start, window_end, <columns>",
            )),
            LogicalPlan::Window(_) => Err(unsupported("an OVER window", "use a window table function (TUMBLE, HOP, SESSION)")),
            LogicalPlan::EmptyRelation(e) => {
                let rows = usize::from(e.produce_one_row);
                let options = RecordBatchOptions::new().with_row_count(Some(rows));
                let batch = RecordBatch::try_new_with_options(Arc::new(e.schema.as_arrow().clone()), vec![], &options)
                    .map_err(|e| SqlError::new(e.to_string()))?;
                Ok(self.add_values(batch, e.schema.clone(), "one empty row".into()))
            }
            LogicalPlan::Values(v) => {
                let batch = self.evaluate_values(v)?;
                let detail = format!("{} rows", batch.num_rows());
                Ok(self.add_values(batch, v.schema.clone(), detail))
            }
            other => Err(SqlError::new(format!("cannot run {} as a streaming query", other.display()))),
        }
    }

    /// A bounded source of rows known now: `VALUES`, or `SELECT` without `FROM`.
    fn add_values(&mut self, batch: RecordBatch, schema: DFSchemaRef, detail: String) -> Lowered {
        self.expected.push(Some(batch.num_rows() as u64));
        let node = self.graph.add_node(
            "source: values",
            detail,
            1,
            NodeKind::Source(SourceNode {
                factory: ValuesSource::factory(vec![batch]),
                computed: None,
                watermark: None,
            }),
        );
        Lowered {
            node,
            schema,
            parallelism: 1,
            bounded: true,
            updating: false,
        }
    }

    /// The rows of a `VALUES` list: each expression evaluated once, cast to
    /// the column's type.
    fn evaluate_values(&self, values: &Values) -> Result<RecordBatch> {
        let schema = Arc::new(values.schema.as_arrow().clone());
        let empty = DFSchema::empty();
        let one_row = RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
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
                    .and_then(|v| v.into_array(1))
                    .map_err(df_error)?;
                cells.push(value);
            }
            let cells: Vec<&dyn datafusion::arrow::array::Array> =
                cells.iter().map(|c| c.as_ref()).collect();
            let column = if cells.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                datafusion::arrow::compute::concat(&cells)
                    .map_err(|e| SqlError::new(e.to_string()))?
            };
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(values.values.len()));
        RecordBatch::try_new_with_options(schema, columns, &options)
            .map_err(|e| SqlError::new(e.to_string()))
    }

    fn lower_scan(&mut self, scan: &TableScan) -> Result<Lowered> {
        let lowered = if let Some(stream) = scan.source.downcast_ref::<StreamTable>() {
            self.lower_source(&stream.def)?
        } else if let Some(window) = scan.source.downcast_ref::<WindowTable>() {
            self.lower_window_table(window, scan.table_name.table())?
        } else {
            return Err(SqlError::new(format!("cannot read {}", scan.table_name)));
        };
        match &scan.projection {
            None => Ok(Lowered {
                schema: scan.projected_schema.clone(),
                ..lowered
            }),
            Some(indices) => {
                let exprs = indices
                    .iter()
                    .map(|i| {
                        let field = lowered.schema.field(*i);
                        Arc::new(datafusion::physical_expr::expressions::Column::new(
                            field.name(),
                            *i,
                        )) as Arc<dyn PhysicalExpr>
                    })
                    .collect();
                let projection = Projection::new(
                    "projection",
                    exprs,
                    Arc::new(scan.projected_schema.as_arrow().clone()),
                );
                let names = scan
                    .projected_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
                    .join(", ");
                Ok(self.add_operator(
                    &lowered,
                    "projection",
                    names,
                    op_factory(projection),
                    scan.projected_schema.clone(),
                ))
            }
        }
    }

    /// The source node of a stream: connector, computed columns, watermark.
    fn lower_source(&mut self, def: &StreamDef) -> Result<Lowered> {
        let bad_data =
            BadDataPolicy::from_options(&def.name, &def.options).map_err(connector_error)?;
        let spec = TableSpec {
            name: def.name.clone(),
            schema: def.physical_schema.clone(),
            options: def.options.clone(),
            partitioned_by: Vec::new(),
            bad_data,
            metadata: def.metadata.clone(),
            checkpointing: false,
        };
        let factory = def.connector.source(&spec).map_err(connector_error)?;
        let parallelism = self
            .parallelism
            .min(
                def.connector
                    .max_source_parallelism(&spec)
                    .unwrap_or(usize::MAX),
            )
            .max(1);
        let physical = DFSchema::try_from_qualified_schema(def.name.as_str(), &def.physical_schema)
            .map_err(df_error)?;
        let full = Arc::new(
            DFSchema::try_from_qualified_schema(def.name.as_str(), &def.schema)
                .map_err(df_error)?,
        );
        let computed = if def.computed.iter().any(Option::is_some) {
            let mut exprs = Vec::with_capacity(def.computed.len());
            let mut physical_index = 0;
            for (i, computed) in def.computed.iter().enumerate() {
                exprs.push(match computed {
                    Some(expr) => self.physical(expr, &physical)?,
                    None => {
                        let name = def.schema.field(i).name();
                        let column = Arc::new(datafusion::physical_expr::expressions::Column::new(
                            name,
                            physical_index,
                        ));
                        physical_index += 1;
                        column as Arc<dyn PhysicalExpr>
                    }
                });
            }
            Some(Arc::new(Projection::new(
                "computed columns",
                exprs,
                def.schema.clone(),
            )))
        } else {
            None
        };
        let watermark = match &def.watermark {
            Some(w) => Some(WatermarkSpec {
                expr: self.physical(&w.expr, &full)?,
                display: w.text.clone(),
                idle_timeout: def
                    .options
                    .duration("scan.watermark.idle-timeout")
                    .map_err(connector_error)?
                    .or(self.settings.idle_timeout()?),
                idle_advance: def
                    .options
                    .bool("scan.watermark.idle-advance")
                    .map_err(connector_error)?
                    .unwrap_or(false),
            }),
            None => None,
        };
        let bounded = def.connector.is_bounded(&def.options);
        self.expected
            .push(def.connector.expected_rows(&def.options));
        let mut detail = format!("connector={}", def.connector.name());
        if let Some(w) = &watermark {
            detail.push_str(&format!(", watermark: {}", w.display));
            if let Some(t) = w.idle_timeout {
                detail.push_str(&format!(", idle-timeout {}", fmt_ms(t.as_millis() as i64)));
            }
        }
        detail.push_str(if bounded { ", bounded" } else { ", unbounded" });
        let node = self.graph.add_node(
            format!("source: {}", def.name),
            detail,
            parallelism,
            NodeKind::Source(SourceNode {
                factory,
                computed,
                watermark,
            }),
        );
        Ok(Lowered {
            node,
            schema: full,
            parallelism,
            bounded,
            updating: false,
        })
    }

    fn slice_windows(kind: &WindowKind) -> Result<SliceWindows> {
        let windows = match *kind {
            WindowKind::Tumble { size, offset } => SliceWindows::tumble(size, offset),
            WindowKind::Hop {
                slide,
                size,
                offset,
            } => SliceWindows::hop(size, slide, offset),
            WindowKind::Cumulate {
                step,
                max_size,
                offset,
            } => SliceWindows::cumulate(step, max_size, offset),
            WindowKind::Session { .. } => {
                return Err(unsupported(
                    "a SESSION window without aggregation",
                    "aggregate it: GROUP BY window_start, window_end, ...",
                ))
            }
        };
        windows.map_err(|e| SqlError::new(e.to_string()))
    }

    /// The rows of a window function: each row with its time in the window
    /// columns (when a window aggregate follows), or once per window.
    fn lower_window_table(&mut self, window: &WindowTable, placeholder: &str) -> Result<Lowered> {
        let input = self.lower(&window.input)?;
        let qualifier = placeholder.to_string();
        let schema = Arc::new(
            DFSchema::try_from_qualified_schema(qualifier.as_str(), &window.schema)
                .map_err(df_error)?,
        );
        if self.rowtime_scans.contains(placeholder) {
            let time = Expr::Column(Column::from(
                input.schema.qualified_field(window.time_index),
            ));
            let as_ms = cast(time, DataType::Timestamp(TimeUnit::Millisecond, None));
            let mut exprs = Vec::new();
            for i in 0..input.schema.fields().len() {
                exprs.push(Expr::Column(Column::from(input.schema.qualified_field(i))));
            }
            exprs.extend([as_ms.clone(), as_ms.clone(), as_ms]);
            let exprs = exprs
                .iter()
                .map(|e| self.physical(e, &input.schema))
                .collect::<Result<Vec<_>>>()?;
            let projection = Projection::new("window rowtime", exprs, window.schema.clone());
            let detail = format!("time attribute {}", window.tvf.time_column);
            return Ok(self.add_operator(
                &input,
                "window rowtime",
                detail,
                op_factory(projection),
                schema,
            ));
        }
        let windows = Self::slice_windows(&window.tvf.kind)?;
        let (time, out) = (window.time_index, window.schema.clone());
        let factory: OperatorFactory = Arc::new(move |_| {
            Ok(Box::new(AssignWindows::new(windows, time, out.clone())) as Box<dyn Operator>)
        });
        Ok(self.add_operator(
            &input,
            "assign windows",
            windows.describe(),
            factory,
            schema,
        ))
    }

    fn lower_aggregate(&mut self, agg: &datafusion::logical_expr::Aggregate) -> Result<Lowered> {
        // A window function under the aggregate, or none: then the whole
        // (bounded) input is one window, fired when the input ends.
        let found = find_window_scan(&agg.input);
        let input_schema = agg.input.schema().clone();

        // Group expressions: window columns, or keys.
        let mut layout = Vec::new();
        let mut keys = Vec::new();
        let mut key_exprs = Vec::new();
        let mut time_column = None;
        for (i, expr) in agg.group_expr.iter().enumerate() {
            let window_column = match expr {
                Expr::Column(c)
                    if found.is_some()
                        && [WINDOW_START, WINDOW_END, WINDOW_TIME].contains(&c.name.as_str()) =>
                {
                    Some(c)
                }
                _ => None,
            };
            match window_column {
                Some(c) => {
                    if c.name == WINDOW_START {
                        time_column = Some(input_schema.index_of_column(c).map_err(df_error)?);
                    }
                    layout.push(match c.name.as_str() {
                        WINDOW_START => OutputColumn::WindowStart,
                        WINDOW_END => OutputColumn::WindowEnd,
                        _ => OutputColumn::WindowTime,
                    });
                }
                None => {
                    layout.push(OutputColumn::Key(keys.len()));
                    keys.push(self.physical(expr, &input_schema)?);
                    key_exprs.push((expr.clone(), agg.schema.field(i).clone()));
                }
            }
        }
        let has_end = layout.contains(&OutputColumn::WindowEnd);
        if found.is_some() && (time_column.is_none() || !has_end) {
            return Err(SqlError::new(
                "a window aggregate must GROUP BY window_start and window_end",
            )
            .with_hint("GROUP BY window_start, window_end, <keys>"));
        }

        // Aggregates.
        let physical_input = input_schema.as_arrow().clone();
        let props = self.state.execution_props();
        let planning = PhysicalPlanningContext::default();
        let mut aggregates = Vec::new();
        let mut filters = Vec::new();
        for (j, expr) in agg.aggr_expr.iter().enumerate() {
            let name = agg.schema.field(agg.group_expr.len() + j).name().clone();
            let lowered = LoweredAggregateBuilder::new(
                expr,
                &input_schema,
                &physical_input,
                props,
                &planning,
            )
            .with_name(name)
            .build()
            .map_err(df_error)?;
            if !lowered.order_bys.is_empty() {
                return Err(unsupported(
                    "an ordered aggregate (WITHIN GROUP / ORDER BY in an aggregate)",
                    "drop the ordering",
                ));
            }
            layout.push(OutputColumn::Aggregate(j));
            aggregates.push(lowered.aggregate);
            filters.push(lowered.filter);
        }
        let spec = Arc::new(AggregateSpec {
            keys,
            key_fields: key_exprs.iter().map(|(_, f)| f.clone()).collect(),
            aggregates,
            filters,
        });
        let layout = Arc::new(
            OutputLayout::new(layout, Arc::new(agg.schema.as_arrow().clone()))
                .map_err(|e| SqlError::new(e.to_string()))?,
        );
        let late = match &found {
            Some((window, _)) => late_output(window).map_err(connector_error)?,
            None => None,
        };

        // The input rows, with their time in the window columns.
        if let Some((_, placeholder)) = &found {
            self.rowtime_scans.insert(placeholder.clone());
        }
        let input = self.lower(&agg.input)?;
        if input.updating {
            return Err(unsupported(
                "an aggregate over the result of a GROUP BY without a window",
                "aggregate once, or group by a window",
            ));
        }
        if found.is_none() && !input.bounded {
            let Some(ttl) = self.settings.state_ttl()? else {
                return Err(SqlError::new("GROUP BY without a window on an unbounded stream needs a state TTL").with_hint(
                    "its state would grow forever: set one (SET 'table.exec.state.ttl' = '1 h'), or group by a window: FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, ...",
                ));
            };
            let key_names: Vec<String> = key_exprs.iter().map(|(e, _)| display_expr(e)).collect();
            let shuffle: Option<Vec<usize>> = key_exprs
                .iter()
                .map(|(e, _)| match e {
                    Expr::Column(c) => input_schema.index_of_column(c).ok(),
                    _ => None,
                })
                .collect::<Option<Vec<usize>>>()
                .filter(|c| !c.is_empty());
            let parallelism = if shuffle.is_some() {
                self.parallelism
            } else {
                1
            };
            let factory: OperatorFactory = Arc::new(move |_| {
                Ok(Box::new(UpdatingAggregate::new(
                    "updating aggregate",
                    spec.clone(),
                    layout.clone(),
                    ttl,
                )?) as Box<dyn Operator>)
            });
            let detail = format!(
                "keys [{}], aggregates: {}, state TTL {}, upserts by key",
                key_names.join(", "),
                aggregate_names(&agg.aggr_expr),
                fmt_ms(ttl.as_millis() as i64)
            );
            let node = self.graph.add_node(
                "updating aggregate",
                detail,
                parallelism,
                NodeKind::Operator {
                    factory,
                    late_output: None,
                },
            );
            let edge = self.shuffle_edge(&input, parallelism, shuffle, &key_names);
            self.graph.connect(input.node, node, edge);
            return Ok(Lowered {
                node,
                schema: agg.schema.clone(),
                parallelism,
                bounded: false,
                updating: true,
            });
        }
        let processing_time = found.as_ref().is_none_or(|(w, _)| w.processing_time);
        let time = match time_column {
            Some(column) if !processing_time => TimeSource::EventTime { column },
            _ => TimeSource::ProcessingTime,
        };
        let key_columns: Option<Vec<usize>> = key_exprs
            .iter()
            .map(|(e, _)| match e {
                Expr::Column(c) => input_schema.index_of_column(c).ok(),
                _ => None,
            })
            .collect();
        let key_names: Vec<String> = key_exprs.iter().map(|(e, _)| display_expr(e)).collect();
        let out_schema = agg.schema.clone();
        let time_note = match (&found, processing_time) {
            (None, _) => "whole bounded input",
            (_, true) => "processing time",
            (_, false) => "event time",
        };

        if let Some((window, _)) = found
            .as_ref()
            .filter(|(w, _)| matches!(w.tvf.kind, WindowKind::Session { .. }))
        {
            let tvf = &window.tvf;
            let WindowKind::Session { gap } = tvf.kind else {
                return Err(SqlError::new("not a session window"));
            };
            let partition: Vec<usize> = if tvf.partition_by_group_keys {
                (0..key_exprs.len()).collect()
            } else {
                tvf.partition_by
                    .iter()
                    .map(|p| {
                        key_exprs
                            .iter()
                            .position(|(e, _)| matches!(e, Expr::Column(c) if c.name == p.value))
                            .ok_or_else(|| {
                                SqlError::new(format!(
                                    "SESSION partition key {p} must also be in GROUP BY"
                                ))
                                .at(p.span.start)
                                .with_hint(format!("GROUP BY window_start, window_end, {p}"))
                            })
                    })
                    .collect::<Result<_>>()?
            };
            let shuffle: Option<Vec<usize>> = key_columns
                .as_ref()
                .map(|cols| partition.iter().map(|i| cols[*i]).collect::<Vec<_>>())
                .filter(|c| !c.is_empty());
            let parallelism = if shuffle.is_some() {
                self.parallelism
            } else {
                1
            };
            let (spec, layout, partition2, time2) =
                (spec.clone(), layout.clone(), partition.clone(), time);
            let factory: OperatorFactory = Arc::new(move |_| {
                Ok(Box::new(SessionWindowAggregate::new(
                    "session window",
                    gap,
                    spec.clone(),
                    partition2.clone(),
                    time2,
                    layout.clone(),
                )?) as Box<dyn Operator>)
            });
            let partition_names: Vec<String> =
                partition.iter().map(|i| key_names[*i].clone()).collect();
            let detail = format!(
                "SESSION(gap={}) by [{}], {time_note}, aggregates: {}",
                fmt_ms(gap),
                partition_names.join(", "),
                aggregate_names(&agg.aggr_expr)
            );
            let node = self.graph.add_node(
                "session window aggregate",
                detail,
                parallelism,
                NodeKind::Operator {
                    factory,
                    late_output: late,
                },
            );
            let edge = self.shuffle_edge(&input, parallelism, shuffle, &partition_names);
            self.graph.connect(input.node, node, edge);
            return Ok(Lowered {
                node,
                schema: out_schema,
                parallelism,
                bounded: input.bounded,
                updating: false,
            });
        }

        // Without a window function, one window spans all time and fires at
        // the end of the input.
        let windows = match &found {
            Some((window, _)) => Self::slice_windows(&window.tvf.kind)?,
            None => SliceWindows::tumble(1 << 60, 0).map_err(|e| SqlError::new(e.to_string()))?,
        };
        let shape = if found.is_some() {
            windows.describe()
        } else {
            "GROUP BY".to_string()
        };
        let describe = format!(
            "{shape}, {time_note}, keys [{}], aggregates: {}",
            key_names.join(", "),
            aggregate_names(&agg.aggr_expr)
        );
        let make = move |mode: AggregateMode,
                         spec: Arc<AggregateSpec>,
                         layout: Arc<OutputLayout>|
              -> OperatorFactory {
            Arc::new(move |_| {
                let name = match mode {
                    AggregateMode::Single => "window aggregate",
                    AggregateMode::Partial => "window aggregate (local)",
                    AggregateMode::Final => "window aggregate (global)",
                };
                Ok(Box::new(WindowAggregate::new(
                    name,
                    mode,
                    windows,
                    spec.clone(),
                    time,
                    layout.clone(),
                )?) as Box<dyn Operator>)
            })
        };
        // Two-phase when parallel in event time: pre-aggregate per input
        // subtask, shuffle the partial state by key, merge.
        let single_subtask =
            input.parallelism == 1 && (key_exprs.is_empty() || self.parallelism == 1);
        let two_phase = (found.is_none() || !processing_time) && !single_subtask;
        if two_phase {
            let partial = self.graph.add_node(
                "window aggregate (local)",
                describe.clone(),
                input.parallelism,
                NodeKind::Operator {
                    factory: make(AggregateMode::Partial, spec.clone(), layout.clone()),
                    late_output: late,
                },
            );
            self.graph.connect(input.node, partial, EdgeKind::Forward);
            let parallelism = if key_exprs.is_empty() {
                1
            } else {
                self.parallelism
            };
            let final_node = self.graph.add_node(
                "window aggregate (global)",
                describe,
                parallelism,
                NodeKind::Operator {
                    factory: make(AggregateMode::Final, spec.clone(), layout),
                    late_output: None,
                },
            );
            let partial_keys: Vec<usize> = (0..key_exprs.len()).map(|i| 2 + i).collect();
            let edge = if parallelism == 1 {
                if input.parallelism == 1 {
                    EdgeKind::Forward
                } else {
                    EdgeKind::Rebalance
                }
            } else {
                EdgeKind::Shuffle {
                    keys: partial_keys,
                    names: key_names.clone(),
                }
            };
            let _ = partial_schema(&spec).map_err(|e| SqlError::new(e.to_string()))?;
            self.graph.connect(partial, final_node, edge);
            return Ok(Lowered {
                node: final_node,
                schema: out_schema,
                parallelism,
                bounded: input.bounded,
                updating: false,
            });
        }
        let shuffle = key_columns.filter(|c| !c.is_empty());
        let parallelism = if shuffle.is_some() {
            self.parallelism
        } else {
            1
        };
        let node = self.graph.add_node(
            "window aggregate",
            describe,
            parallelism,
            NodeKind::Operator {
                factory: make(AggregateMode::Single, spec, layout),
                late_output: late,
            },
        );
        let edge = self.shuffle_edge(&input, parallelism, shuffle, &key_names);
        self.graph.connect(input.node, node, edge);
        Ok(Lowered {
            node,
            schema: out_schema,
            parallelism,
            bounded: input.bounded,
            updating: false,
        })
    }

    /// The edge into a keyed operator of `parallelism` subtasks.
    fn shuffle_edge(
        &self,
        input: &Lowered,
        parallelism: usize,
        keys: Option<Vec<usize>>,
        names: &[String],
    ) -> EdgeKind {
        match keys {
            Some(keys) if parallelism > 1 || input.parallelism > 1 => EdgeKind::Shuffle {
                keys,
                names: names.to_vec(),
            },
            _ if input.parallelism == parallelism => EdgeKind::Forward,
            _ => EdgeKind::Rebalance,
        }
    }

    /// Adds the sink node after `input`.
    /// Adds the sink node after `input`, with `parallelism` subtasks
    /// (`'sink.parallelism'`) or the input's.
    pub fn add_sink(
        &mut self,
        input: &Lowered,
        name: &str,
        detail: String,
        factory: weir_engine::SinkFactory,
        parallelism: Option<usize>,
    ) -> NodeId {
        let parallelism = parallelism.unwrap_or(input.parallelism).max(1);
        let node = self
            .graph
            .add_node(name, detail, parallelism, NodeKind::Sink(factory));
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
fn display_expr(e: &Expr) -> String {
    let text = e.human_display().to_string();
    text.split(' ')
        .map(|word| match word.split_once('.') {
            Some((q, rest))
                if q.trim_start_matches('(')
                    .starts_with(weir_sql::PLACEHOLDER_PREFIX) =>
            {
                format!("{}{rest}", &q[..q.len() - q.trim_start_matches('(').len()])
            }
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn aggregate_names(exprs: &[Expr]) -> String {
    exprs
        .iter()
        .map(display_expr)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The window table under an aggregate's input (through stateless nodes).
fn find_window_scan(plan: &LogicalPlan) -> Option<(&WindowTable, String)> {
    match plan {
        LogicalPlan::TableScan(scan) => scan
            .source
            .downcast_ref::<WindowTable>()
            .map(|w| (w, scan.table_name.table().to_string())),
        LogicalPlan::Projection(p) => find_window_scan(&p.input),
        LogicalPlan::Filter(f) => find_window_scan(&f.input),
        LogicalPlan::SubqueryAlias(s) => find_window_scan(&s.input),
        _ => None,
    }
}

/// Where a window's late rows go: `'late-data'` = `dlq` (default) writes
/// them to `'late-data.path'` (or `'bad-data.path'`); `drop` only counts.
fn late_output(
    window: &WindowTable,
) -> std::result::Result<Option<Arc<dyn DeadLetterSink>>, weir_connectors::ConnectorError> {
    let Some(stream) = &window.stream else {
        return Ok(None);
    };
    let options = &stream.options;
    match options
        .get("late-data")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("drop") => Ok(None),
        None | Some("dlq") => {
            let path = options
                .get("late-data.path")
                .or(options.get("bad-data.path"));
            match path {
                Some(path) => Ok(Some(Arc::new(DeadLetterWriter::new(
                    &format!("{}-late", stream.name),
                    path,
                    options,
                )?))),
                None => Ok(None),
            }
        }
        Some(other) => Err(weir_connectors::ConnectorError::option(
            "late-data",
            format!("'{other}' must be dlq or drop"),
        )),
    }
}

pub(crate) fn connector_error(e: weir_connectors::ConnectorError) -> SqlError {
    SqlError::new(e.message)
}
