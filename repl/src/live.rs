//! A table that grows as rows arrive: the header once, then each row as
//! soon as its window fires. Column widths are set by the header and the
//! first rows, and wide tables are cut to the terminal width. Only text is
//! ever cut (with `…`): a number or time wider than its column pushes the
//! border out instead, since a cut number reads as a different number.

use std::io::Write;

use weir::arrow::datatypes::{DataType, SchemaRef};
use weir::arrow::record_batch::RecordBatch;

pub struct LiveTable {
    schema: SchemaRef,
    max_width: usize,
    widths: Option<Vec<usize>>,
    rows: usize,
}

fn fit(text: &str, width: usize, may_cut: bool) -> String {
    let count = text.chars().count();
    if count <= width || !may_cut {
        format!("{text:<width$}")
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Columns whose values may be cut to fit.
fn is_text(data_type: &DataType) -> bool {
    !(data_type.is_numeric() || data_type.is_temporal() || *data_type == DataType::Boolean)
}

/// The narrowest a number column starts: later windows often count more
/// than the first, partial one.
const MIN_NUMBER_WIDTH: usize = 6;

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
            .zip(self.schema.fields())
            .map(|((w, v), f)| format!(" {} ", fit(v, *w, is_text(f.data_type()))))
            .collect();
        format!("│{}│", cells.join("│"))
    }

    /// Widths from the header and the first batch, shrunk to fit the terminal.
    fn choose_widths(&self, first: &[Vec<String>]) -> Vec<usize> {
        let mut widths: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                let name = f.name().chars().count();
                if f.data_type().is_numeric() {
                    name.max(MIN_NUMBER_WIDTH)
                } else {
                    name
                }
            })
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
        let values = crate::render::text_rows(batch);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir::arrow::array::{ArrayRef, Int64Array, StringArray};
    use weir::arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(schema: &SchemaRef, name: &str, n: i64) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![name])) as ArrayRef,
                Arc::new(Int64Array::from(vec![n])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn numbers_are_never_cut_text_is() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let mut table = LiveTable::new(schema.clone(), 80);
        let mut out = Vec::new();
        table.print(&batch(&schema, "ab", 812), &mut out).unwrap();
        table
            .print(&batch(&schema, "abcdef", 123_456_789), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text.lines().skip(3).collect();
        assert_eq!(rows, ["│ ab   │ 812    │", "│ abc… │ 123456789 │"]);
    }
}
