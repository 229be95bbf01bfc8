//! `WindowRows`: the rows of a window table function (`TUMBLE`, `HOP`,
//! `CUMULATE`, `SESSION`) with `window_start`, `window_end` and
//! `window_time` added.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::{Column, DFSchemaRef};
use datafusion::logical_expr::{cast, Expr, LogicalPlan};
use weir_engine::operators::Projection;
use weir_engine::window::{AssignWindows, SliceWindows};
use weir_sql::{SqlError, WindowKind, WindowTvf};

use super::{node_core, StreamProps, StreamingNode};
use crate::error::Result;
use crate::lower::{Lowered, Lowering};

/// How the window columns are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum RowsMode {
    /// Each row once per window it belongs to (a window TVF read as a
    /// table).
    PerWindow,
    /// Each row once, its time in the window columns: a window aggregate
    /// above assigns the windows itself.
    Rowtime,
}

#[derive(Debug, Clone)]
pub(crate) struct WindowRows {
    pub tvf: WindowTvf,
    pub mode: RowsMode,
    /// The time attribute's column in the input.
    pub time_index: usize,
    pub processing_time: bool,
    /// The input's columns plus the three window columns.
    pub window_schema: SchemaRef,
    pub schema: DFSchemaRef,
    pub props: StreamProps,
    pub inputs: Vec<LogicalPlan>,
}

node_core!(WindowRows, "WindowRows");

impl WindowRows {
    fn explain(&self) -> String {
        format!(
            "{} on {} ({}), {}",
            self.tvf.kind.name(),
            self.tvf.time_column,
            if self.processing_time {
                "processing time"
            } else {
                "event time"
            },
            match self.mode {
                RowsMode::PerWindow => "a row per window",
                RowsMode::Rowtime => "rowtime for the aggregate",
            }
        )
    }
}

/// The slicing of a tumbling, hopping or cumulating window.
pub(crate) fn slice_windows(kind: &WindowKind) -> Result<SliceWindows> {
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
            return Err(SqlError::new(
                "a SESSION window without aggregation is not supported on a stream yet",
            )
            .with_hint("aggregate it: GROUP BY window_start, window_end, ...")
            .into())
        }
    };
    Ok(windows.map_err(|e| SqlError::new(e.to_string()))?)
}

impl StreamingNode for WindowRows {
    fn props(&self) -> &StreamProps {
        &self.props
    }

    fn lower(&self, inputs: Vec<Lowered>, lowering: &mut Lowering<'_>) -> Result<Lowered> {
        let input = Lowered::single(inputs)?;
        match self.mode {
            RowsMode::Rowtime => {
                let time =
                    Expr::Column(Column::from(input.schema.qualified_field(self.time_index)));
                let as_ms = cast(time, DataType::Timestamp(TimeUnit::Millisecond, None));
                let mut exprs: Vec<Expr> = (0..input.schema.fields().len())
                    .map(|i| Expr::Column(Column::from(input.schema.qualified_field(i))))
                    .collect();
                exprs.extend([as_ms.clone(), as_ms.clone(), as_ms]);
                let exprs = exprs
                    .iter()
                    .map(|e| lowering.physical(e, &input.schema))
                    .collect::<Result<Vec<_>>>()?;
                let projection =
                    Projection::new("window rowtime", exprs, self.window_schema.clone());
                let detail = format!("time attribute {}", self.tvf.time_column);
                Ok(lowering.add_operator(
                    input,
                    "window rowtime",
                    detail,
                    projection,
                    self.schema.clone(),
                ))
            }
            RowsMode::PerWindow => {
                let windows = slice_windows(&self.tvf.kind)?;
                let assign =
                    AssignWindows::new(windows, self.time_index, self.window_schema.clone());
                Ok(lowering.add_operator(
                    input,
                    "assign windows",
                    windows.describe(),
                    assign,
                    self.schema.clone(),
                ))
            }
        }
    }
}

impl WindowRows {
    /// The window TVF's rows over `input`.
    pub fn new(
        window: &crate::catalog::WindowTable,
        placeholder: &str,
        mode: RowsMode,
        input: LogicalPlan,
        props: StreamProps,
    ) -> Result<Self> {
        let schema = Arc::new(datafusion::common::DFSchema::try_from_qualified_schema(
            placeholder,
            &window.schema,
        )?);
        if mode == RowsMode::PerWindow {
            // Checked here so the error names the window, not the lowering.
            slice_windows(&window.tvf.kind)?;
        }
        Ok(WindowRows {
            tvf: window.tvf.clone(),
            mode,
            time_index: window.time_index,
            processing_time: window.processing_time,
            window_schema: window.schema.clone(),
            schema,
            props,
            inputs: vec![input],
        })
    }
}
