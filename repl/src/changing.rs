//! An updating result on a terminal: the table its changes describe,
//! redrawn in place as they arrive (Flink's SQL client table mode).
//!
//! Changes are applied as they come ([`weir::ChangelogTable`]); the table
//! is redrawn at most every [`REDRAW`], by moving the cursor back over the
//! last drawing and clearing below it, so a fast stream of changes costs
//! one drawing per interval. Rows beyond the terminal's height are
//! counted, not drawn.

use std::io::Write;
use std::time::{Duration, Instant};

use weir::arrow::datatypes::SchemaRef;
use weir::arrow::record_batch::RecordBatch;
use weir::ChangelogTable;

use crate::render::table;

/// The shortest time between two drawings.
pub const REDRAW: Duration = Duration::from_millis(250);

pub struct ChangingTable {
    table: ChangelogTable,
    /// Lines the last drawing took.
    drawn: usize,
    last: Option<Instant>,
    max_rows: usize,
}

impl ChangingTable {
    pub fn new(schema: SchemaRef, terminal_height: usize) -> weir::Result<Self> {
        Ok(ChangingTable {
            table: ChangelogTable::new(schema)?,
            drawn: 0,
            last: None,
            max_rows: terminal_height.saturating_sub(6).max(5),
        })
    }

    /// Rows in the table now.
    pub fn rows(&self) -> usize {
        self.table.len()
    }

    /// Applies a batch of changes, and redraws if it is time.
    pub fn apply(&mut self, batch: &RecordBatch, out: &mut impl Write) -> weir::Result<()> {
        self.table.apply(batch)?;
        if self.last.is_none_or(|t| t.elapsed() >= REDRAW) {
            self.draw(out)?;
        }
        Ok(())
    }

    /// Draws the table as it is now, if it changed.
    pub fn draw(&mut self, out: &mut impl Write) -> weir::Result<()> {
        if !self.table.take_changed() && self.last.is_some() {
            return Ok(());
        }
        self.last = Some(Instant::now());
        let batch = self.table.to_batch()?;
        let shown = batch.slice(0, batch.num_rows().min(self.max_rows));
        let mut text = table(&shown).to_string();
        if shown.num_rows() < batch.num_rows() {
            text.push_str(&format!(
                "\n… and {} more rows",
                batch.num_rows() - shown.num_rows()
            ));
        }
        let mut frame = String::new();
        if self.drawn > 0 {
            // Back to the first line of the last drawing, and clear below.
            frame.push_str(&format!("\x1b[{}F\x1b[J", self.drawn));
        }
        frame.push_str(&text);
        frame.push('\n');
        self.drawn = text.lines().count();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
        Ok(())
    }
}

/// The terminal's height in lines, or a default when it is not known.
pub fn terminal_height() -> usize {
    std::env::var("LINES")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(40)
}
