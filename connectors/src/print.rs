//! `'connector' = 'print'`: rows to stdout, one per line, as Flink prints
//! them: `+I[v1, v2, ...]` (`-U`, `+U`, `-D` for the changes of an
//! updating result), prefixed by `'print-identifier'` and the
//! subtask when parallel.

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use weir_engine::changelog::{kinds_of, without_kinds};
use weir_engine::{EngineError, Result, Sink, SinkFactory};

use crate::options::Options;
use crate::registry::{Connector, ConnectorError, SinkChanges, TableSpec};

pub struct PrintConnector;

impl Connector for PrintConnector {
    /// Each update is printed as a row.
    fn sink_changes(&self, _options: &Options) -> SinkChanges {
        SinkChanges::All
    }

    fn name(&self) -> &'static str {
        "print"
    }

    fn sink(&self, spec: &TableSpec) -> Result<SinkFactory, ConnectorError> {
        spec.options
            .check_known("print", &["print-identifier", "standard-error"], &[])?;
        let identifier = spec.options.get("print-identifier").map(str::to_string);
        let stderr = spec.options.bool("standard-error")?.unwrap_or(false);
        Ok(Arc::new(move |info| {
            let mut prefix = identifier
                .clone()
                .map(|i| i.to_string())
                .unwrap_or_default();
            if info.parallelism > 1 {
                prefix = if prefix.is_empty() {
                    format!("{}> ", info.index + 1)
                } else {
                    format!("{prefix}:{}> ", info.index + 1)
                };
            } else if !prefix.is_empty() {
                prefix.push_str("> ");
            }
            Ok(Box::new(Print { prefix, stderr }) as Box<dyn Sink>)
        }))
    }
}

struct Print {
    prefix: String,
    stderr: bool,
}

/// Formats each row of `batch` as Flink prints it: its kind (`+I`, `-U`,
/// `+U`, `-D`; `+I` for an append-only batch), then its values.
pub fn format_rows(batch: &RecordBatch) -> Result<Vec<String>> {
    let kinds = kinds_of(batch)?;
    let data = without_kinds(batch);
    let options = FormatOptions::default().with_null("NULL");
    let formatters = data
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((0..data.num_rows())
        .map(|row| {
            let values: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            format!("{}[{}]", kinds[row].short(), values.join(", "))
        })
        .collect())
}

#[async_trait]
impl Sink for Print {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let mut text = String::new();
        for row in format_rows(&batch)? {
            text.push_str(&self.prefix);
            text.push_str(&row);
            text.push('\n');
        }
        let result = if self.stderr {
            std::io::stderr().lock().write_all(text.as_bytes())
        } else {
            std::io::stdout().lock().write_all(text.as_bytes())
        };
        // A closed pipe (`weir run ... | head`) is not an error of the job.
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(EngineError::from),
        }
    }

    async fn prepare_commit(
        &mut self,
        _checkpoint: weir_engine::CheckpointId,
    ) -> Result<weir_engine::StateSnapshot> {
        let _ = std::io::stdout().flush();
        Ok(weir_engine::StateSnapshot::default())
    }
}
