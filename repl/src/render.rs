//! Printing result batches as a table, CSV or JSON lines.

use std::io::Write;

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use weir::arrow::record_batch::RecordBatch;
use weir::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::OutputFormat;

/// Prints batches of one result as they arrive.
pub struct Printer {
    format: OutputFormat,
    wrote_header: bool,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Printer {
            format,
            wrote_header: false,
        }
    }

    pub fn print(&mut self, batch: &RecordBatch, out: &mut impl Write) -> std::io::Result<()> {
        if batch.num_rows() == 0 && self.wrote_header {
            return Ok(());
        }
        match self.format {
            OutputFormat::Table => {
                writeln!(out, "{}", table(batch))?;
            }
            OutputFormat::Csv => {
                let mut writer = weir::arrow::csv::WriterBuilder::new()
                    .with_header(!self.wrote_header)
                    .build(&mut *out);
                writer.write(batch).map_err(std::io::Error::other)?;
            }
            OutputFormat::Json => {
                let mut writer = weir::arrow::json::LineDelimitedWriter::new(&mut *out);
                writer.write(batch).map_err(std::io::Error::other)?;
                writer.finish().map_err(std::io::Error::other)?;
            }
        }
        self.wrote_header = true;
        out.flush()
    }
}

/// A batch as a table, fitted to the terminal width when there is one.
pub fn table(batch: &RecordBatch) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    // Fit to the terminal, unless it is too narrow to be one (a pipe, or a
    // pseudo-terminal without a size).
    if table.width().is_some_and(|w| w >= 60) {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    }
    table.set_header(batch.schema().fields().iter().map(|f| f.name().clone()));
    for row in text_rows(batch) {
        table.add_row(row);
    }
    table
}

/// Each row of `batch` as display text, NULL for nulls.
pub fn text_rows(batch: &RecordBatch) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
        .collect();
    (0..batch.num_rows())
        .map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect())
        .collect()
}
