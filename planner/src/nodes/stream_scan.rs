//! `StreamScan`: a declared stream read by its connector, with its computed
//! columns and its watermark, and the columns the query uses.

use std::sync::Arc;

use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use weir_connectors::{BadDataPolicy, TableSpec};
use weir_engine::graph::SourceNode;
use weir_engine::operators::Projection;
use weir_engine::window::fmt_ms;
use weir_engine::{NodeKind, WatermarkSpec};

use super::{node_core, StreamProps, StreamingNode};
use crate::catalog::StreamDef;
use crate::error::Result;
use crate::lower::{Lowered, Lowering};
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
    pub props: StreamProps,
    /// Always `None`: a scan has no input.
    pub input: Option<LogicalPlan>,
}

node_core!(StreamScan, "StreamScan");

impl StreamScan {
    pub fn new(
        stream: Arc<StreamDef>,
        projection: Option<Vec<usize>>,
        schema: DFSchemaRef,
        settings: &Settings,
    ) -> Result<Self> {
        let spec = source_spec(&stream)?;
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
        Ok(StreamScan {
            stream,
            projection,
            schema,
            props: StreamProps::append(parallelism, bounded),
            input: None,
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
        text
    }
}

/// What the connector is given to read `stream`.
fn source_spec(stream: &StreamDef) -> Result<TableSpec> {
    Ok(TableSpec {
        name: stream.name.clone(),
        schema: stream.physical_schema.clone(),
        options: stream.options.clone(),
        partitioned_by: Vec::new(),
        bad_data: BadDataPolicy::from_options(&stream.name, &stream.options)?,
        metadata: stream.metadata.clone(),
        checkpointing: false,
    })
}

impl StreamingNode for StreamScan {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, _inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let def = &self.stream;
        let spec = source_spec(def)?;
        let factory = def.connector.source(&spec)?;
        let physical =
            DFSchema::try_from_qualified_schema(def.name.as_str(), &def.physical_schema)?;
        let full = Arc::new(DFSchema::try_from_qualified_schema(
            def.name.as_str(),
            &def.schema,
        )?);
        let computed = if def.computed.iter().any(Option::is_some) {
            let mut exprs = Vec::with_capacity(def.computed.len());
            let mut physical_index = 0;
            for (i, computed) in def.computed.iter().enumerate() {
                exprs.push(match computed {
                    Some(expr) => lowering.physical(expr, &physical)?,
                    None => {
                        let name = def.schema.field(i).name();
                        physical_index += 1;
                        Arc::new(Column::new(name, physical_index - 1)) as Arc<dyn PhysicalExpr>
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
                expr: lowering.physical(&w.expr, &full)?,
                display: w.text.clone(),
                idle_timeout: def
                    .options
                    .duration("scan.watermark.idle-timeout")?
                    .or(lowering.settings.idle_timeout()),
                idle_advance: def
                    .options
                    .bool("scan.watermark.idle-advance")?
                    .unwrap_or(false),
            }),
            None => None,
        };
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
            }),
        );
        let source = Lowered::new(node, full, &self.props);
        match &self.projection {
            None => Ok(Lowered {
                schema: self.schema.clone(),
                ..source
            }),
            Some(indices) => {
                let exprs = indices
                    .iter()
                    .map(|i| {
                        let field = source.schema.field(*i);
                        Arc::new(Column::new(field.name(), *i)) as Arc<dyn PhysicalExpr>
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
