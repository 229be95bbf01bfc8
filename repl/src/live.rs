//! A table that grows as rows arrive: the header once, then each row as
//! soon as its window fires. Column widths are set by the header and the
//! first rows, and wide tables are cut to the terminal width.

use std::io::Write;

use weir::arrow::datatypes::SchemaRef;
use weir::arrow::record_batch::RecordBatch;
use weir::arrow::util::display::{ArrayFormatter, FormatOptions};

pub struct LiveTable {
    schema: SchemaRef,
    max_width: usize,
    widths: Option<Vec<usize>>,
    rows: usize,
}

fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        format!("{text:<width$}")
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

impl LiveTable {
    pub fn new(schema: SchemaRef, max_width: usize) -> Self {
        LiveTable {
            schema,
            max_width,
            widths: None,
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn line(&self, widths: &[usize], left: &str, middle: &str, right: &str) -> String {
        let parts: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{left}{}{right}", parts.join(middle))
    }

    fn row(&self, widths: &[usize], values: &[String]) -> String {
        let cells: Vec<String> = widths
            .iter()
            .zip(values)
            .map(|(w, v)| format!(" {} ", fit(v, *w)))
            .collect();
        format!("│{}│", cells.join("│"))
    }

    /// Widths from the header and the first batch, shrunk to fit the terminal.
    fn choose_widths(&self, first: &[Vec<String>]) -> Vec<usize> {
        let mut widths: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().chars().count())
            .collect();
        for row in first {
            for (w, v) in widths.iter_mut().zip(row) {
                *w = (*w).max(v.chars().count()).min(40);
            }
        }
        let overhead = 3 * widths.len() + 1;
        while widths.iter().sum::<usize>() + overhead > self.max_width {
            let Some(widest) = widths.iter_mut().max() else {
                break;
            };
            if *widest <= 4 {
                break;
            }
            *widest -= 1;
        }
        widths
    }

    pub fn print(&mut self, batch: &RecordBatch, out: &mut impl Write) -> std::io::Result<()> {
        let options = FormatOptions::default().with_null("NULL");
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        let values: Vec<Vec<String>> = (0..batch.num_rows())
            .map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect())
            .collect();
        if self.widths.is_none() {
            let widths = self.choose_widths(&values);
            writeln!(out, "{}", self.line(&widths, "┌", "┬", "┐"))?;
            let header: Vec<String> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            writeln!(out, "{}", self.row(&widths, &header))?;
            writeln!(out, "{}", self.line(&widths, "├", "┼", "┤"))?;
            self.widths = Some(widths);
        }
        if let Some(widths) = &self.widths {
            for row in &values {
                writeln!(out, "{}", self.row(widths, row))?;
            }
        }
        self.rows += values.len();
        Ok(())
    }

    pub fn finish(&self, out: &mut impl Write) -> std::io::Result<()> {
        if let Some(widths) = &self.widths {
            writeln!(out, "{}", self.line(widths, "└", "┴", "┘"))?;
        }
        Ok(())
    }
}
