//! The interactive shell: `weir` with no arguments.
//!
//! Reads statements (multi-line, until `;`) with rustyline: history in the
//! user's data directory, tab completion of keywords, streams, views,
//! columns and functions, keyword highlighting. Queries print rows as
//! windows fire; Ctrl-C cancels a query and returns to the prompt; Ctrl-D
//! exits. `INSERT INTO` starts a background job.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, Helper};
use weir::{Output, ResultStream, Session, WeirError};

use crate::changing::{terminal_height, ChangingTable};
use crate::live::LiveTable;
use crate::render::table;

const PROMPT: &str = "weir> ";
const CONTINUATION: &str = "   -> ";

/// Keywords completed and highlighted.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "ORDER",
    "LIMIT",
    "AS",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "BETWEEN",
    "LIKE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "INTERVAL",
    "SECOND",
    "SECONDS",
    "MINUTE",
    "MINUTES",
    "HOUR",
    "MILLISECOND",
    "DAY",
    "CREATE",
    "STREAM",
    "TABLE",
    "VIEW",
    "WITH",
    "INSERT",
    "INTO",
    "WATERMARK",
    "FOR",
    "TUMBLE",
    "HOP",
    "CUMULATE",
    "SESSION",
    "DESCRIPTOR",
    "PARTITION",
    "EXPLAIN",
    "SHOW",
    "STREAMS",
    "TABLES",
    "VIEWS",
    "JOBS",
    "FUNCTIONS",
    "DESCRIBE",
    "JOB",
    "STOP",
    "SET",
    "RESET",
    "DROP",
    "DISTINCT",
    "COUNT",
    "SUM",
    "MIN",
    "MAX",
    "AVG",
    "BIGINT",
    "INT",
    "DOUBLE",
    "DECIMAL",
    "VARCHAR",
    "STRING",
    "BOOLEAN",
    "TIMESTAMP",
    "ROW",
    "TRUE",
    "FALSE",
    "PROCTIME",
    "window_start",
    "window_end",
    "window_time",
];

/// Completion and highlighting for SQL.
struct SqlHelper {
    /// Names from the catalog: streams, views, columns, functions.
    names: Arc<RwLock<Vec<String>>>,
}

impl SqlHelper {
    fn candidates(&self, prefix: &str) -> Vec<String> {
        let lower = prefix.to_ascii_lowercase();
        let mut out: Vec<String> = Vec::new();
        if let Ok(names) = self.names.read() {
            out.extend(names.iter().filter(|n| n.starts_with(prefix)).cloned());
            if out.is_empty() {
                out.extend(
                    names
                        .iter()
                        .filter(|n| n.to_ascii_lowercase().starts_with(&lower))
                        .cloned(),
                );
            }
        }
        for k in KEYWORDS {
            if k.to_ascii_lowercase().starts_with(&lower) {
                // Keep the case the user types in.
                let keyword = if prefix.chars().all(|c| c.is_ascii_lowercase()) {
                    k.to_ascii_lowercase()
                } else {
                    k.to_string()
                };
                out.push(keyword);
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Completer for SqlHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !is_word(c))
            .map_or(0, |i| i + 1);
        let prefix = &line[start..pos];
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let pairs = self
            .candidates(prefix)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for SqlHelper {
    type Hint = String;
}

impl Validator for SqlHelper {}

impl Highlighter for SqlHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        let mut out = String::with_capacity(line.len() + 16);
        let mut word = String::new();
        let mut in_string = false;
        let flush = |word: &mut String, out: &mut String| {
            if !word.is_empty() {
                if KEYWORDS.iter().any(|k| {
                    k.eq_ignore_ascii_case(word) && k.chars().all(|c| c.is_ascii_uppercase())
                }) {
                    out.push_str("\x1b[1;34m");
                    out.push_str(word);
                    out.push_str("\x1b[0m");
                } else {
                    out.push_str(word);
                }
                word.clear();
            }
        };
        for c in line.chars() {
            if c == '\'' {
                flush(&mut word, &mut out);
                in_string = !in_string;
                out.push(c);
            } else if !in_string && is_word(c) {
                word.push(c);
            } else {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
        flush(&mut word, &mut out);
        Cow::Owned(out)
    }

    /// Redraws only where highlighting can change: when a word has just
    /// ended (a space, a quote, a parenthesis typed), when text is inserted
    /// before the end of the line, and on the final refresh. Typing a word
    /// echoes its characters instead of redrawing the whole line for each.
    fn highlight_char(&self, line: &str, pos: usize, kind: CmdKind) -> bool {
        match kind {
            CmdKind::ForcedRefresh => true,
            CmdKind::MoveCursor => false,
            CmdKind::Other => {
                let typed = line.get(..pos).and_then(|before| before.chars().last());
                pos < line.len() || !typed.is_some_and(is_word)
            }
        }
    }
}

impl Helper for SqlHelper {}

/// Where history is kept: `$XDG_DATA_HOME/weir/history` or
/// `~/.local/share/weir/history`.
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    let dir = base.join("weir");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}

const HELP: &str = "\
Statements end with ';' and may span lines.
  CREATE STREAM s (...) WITH ('connector' = ...);   declare a stream (or CREATE TABLE)
  CREATE VIEW v AS SELECT ...;                      a named query
  SELECT ...;                                       run a query; rows print as windows fire, Ctrl-C stops it
  INSERT INTO sink SELECT ...;                      start a background job
  SHOW STREAMS | VIEWS | JOBS | FUNCTIONS;          list
  DESCRIBE s;  DESCRIBE JOB id;  STOP JOB id;       inspect and control
  SELECT * FROM weir_metrics.partitions;            jobs' metrics as streams: operators, partitions,
                                                    alerts, hot_keys, checkpoints, tasks (sampled every second)
  EXPLAIN SELECT ...;                               the operator graph
  SET 'key' = 'value';  SET;                        settings (parallelism.default, ...)
  \\i file.sql                                       run a file
  help                                              this text
Ctrl-C clears the line or cancels a query; Ctrl-D exits.";

pub struct Shell {
    session: Session,
    runtime: tokio::runtime::Runtime,
    names: Arc<RwLock<Vec<String>>>,
}

impl Shell {
    pub fn new(
        runtime: tokio::runtime::Runtime,
        metrics_addr: Option<&str>,
    ) -> rustyline::Result<Self> {
        let mut session = Session::new();
        if let Some(address) = metrics_addr {
            session.set("metrics.address", address).map_err(|e| {
                rustyline::error::ReadlineError::Io(std::io::Error::other(e.to_string()))
            })?;
        }
        Ok(Shell {
            session,
            runtime,
            names: Arc::new(RwLock::new(Vec::new())),
        })
    }

    fn refresh_names(&self) {
        let planner = self.session.planner();
        let catalog = planner.catalog();
        let mut names = catalog.names();
        for stream in catalog.streams() {
            names.extend(stream.schema.fields().iter().map(|f| f.name().clone()));
        }
        for view in catalog.views() {
            names.extend(view.schema.fields().iter().map(|f| f.name().clone()));
        }
        names.extend(planner.function_names());
        names.sort();
        names.dedup();
        if let Ok(mut slot) = self.names.write() {
            *slot = names;
        }
    }

    pub fn run(mut self) -> rustyline::Result<()> {
        let config = Config::builder().auto_add_history(false).build();
        let mut editor: Editor<SqlHelper, DefaultHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(SqlHelper {
            names: self.names.clone(),
        }));
        let history = history_path();
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        println!(
            "Weir {} — streaming SQL. Type help for help, Ctrl-D to exit.",
            env!("CARGO_PKG_VERSION")
        );
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                PROMPT
            } else {
                CONTINUATION
            };
            match editor.readline(prompt) {
                Ok(line) => {
                    let trimmed = line.trim();
                    if buffer.is_empty() {
                        if trimmed.is_empty() {
                            continue;
                        }
                        if let Some(command) = self.meta_command(trimmed) {
                            let _ = editor.add_history_entry(trimmed);
                            command();
                            continue;
                        }
                        if let Some(file) = trimmed.strip_prefix("\\i ") {
                            let _ = editor.add_history_entry(trimmed);
                            self.run_file(file.trim());
                            continue;
                        }
                    }
                    buffer.push_str(&line);
                    buffer.push('\n');
                    if weir::crates::sql::is_complete(&buffer) {
                        let text = std::mem::take(&mut buffer);
                        let _ = editor.add_history_entry(text.trim_end());
                        self.run_text(&text);
                        self.refresh_names();
                    }
                }
                Err(ReadlineError::Interrupted) => {
                    buffer.clear();
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e),
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        println!("bye");
        Ok(())
    }

    fn meta_command(&self, line: &str) -> Option<Box<dyn Fn()>> {
        match line.trim_end_matches(';').to_ascii_lowercase().as_str() {
            "help" | "\\h" | "\\?" => Some(Box::new(|| println!("{HELP}"))),
            "exit" | "quit" | "\\q" => Some(Box::new(|| std::process::exit(0))),
            _ => None,
        }
    }

    fn run_file(&mut self, path: &str) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                self.run_text(&text);
                self.refresh_names();
            }
            Err(e) => eprintln!("error: cannot read {path}: {e}"),
        }
    }

    /// Runs every statement of `text`; an error stops the rest and is shown.
    fn run_text(&mut self, text: &str) {
        let statements = match weir::crates::sql::parse(text) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}", e.render(text));
                return;
            }
        };
        for statement in &statements {
            let output = self.runtime.block_on(self.session.execute(statement, text));
            match output {
                Ok(output) => self.show(output),
                Err(e) => {
                    eprintln!("{}", e.render());
                    return;
                }
            }
        }
    }

    fn show(&mut self, output: Output) {
        match output {
            Output::Done(message) => println!("{message}"),
            Output::Rows(rows) => println!("{}", table(&rows)),
            Output::Tables(tables) => {
                for (title, rows) in tables {
                    println!("{title}\n{}", table(&rows));
                }
            }
            Output::Explain(plan) | Output::Text(plan) => println!("{plan}"),
            Output::Job(job) => println!(
                "job {} started: {} (SHOW JOBS, DESCRIBE JOB {0}, STOP JOB {0})",
                job.id(),
                job.name()
            ),
            Output::Query(results)
                if results.is_updating()
                    && !self.session.planner().settings().changelog_results() =>
            {
                self.changing_results(results)
            }
            Output::Query(results) => self.stream_results(results),
        }
    }

    /// An updating result as its table, redrawn in place as it changes,
    /// until the query ends or Ctrl-C.
    fn changing_results(&mut self, mut results: ResultStream) {
        let mut changing = match ChangingTable::new(results.data_schema(), terminal_height()) {
            Ok(c) => c,
            Err(e) => return eprintln!("{}", e.render()),
        };
        let outcome: Result<bool, WeirError> = self.runtime.block_on(async {
            let mut stdout = std::io::stdout();
            let interrupted = interrupt();
            tokio::pin!(interrupted);
            loop {
                tokio::select! {
                    batch = results.next_changes() => match batch? {
                        Some(batch) => changing.apply(&batch, &mut stdout)?,
                        None => return Ok(false),
                    },
                    _ = tokio::time::sleep(crate::changing::REDRAW) => changing.draw(&mut stdout)?,
                    _ = &mut interrupted => {
                        results.cancel();
                        return Ok(true);
                    }
                }
            }
        });
        let _ = changing.draw(&mut std::io::stdout());
        match outcome {
            Ok(true) => println!("query cancelled ({} rows)", changing.rows()),
            Ok(false) => println!("{} rows", changing.rows()),
            Err(e) => eprintln!("{}", e.render()),
        }
    }

    /// Prints rows as they arrive until the query ends or Ctrl-C.
    fn stream_results(&mut self, mut results: ResultStream) {
        let mut live = LiveTable::new(results.schema(), terminal_width());
        let outcome: Result<bool, WeirError> = self.runtime.block_on(async {
            let mut stdout = std::io::stdout();
            let interrupted = interrupt();
            tokio::pin!(interrupted);
            loop {
                tokio::select! {
                    batch = results.next_batch() => match batch? {
                        Some(batch) => {
                            let _ = live.print(&batch, &mut stdout);
                            let _ = stdout.flush();
                        }
                        None => return Ok(false),
                    },
                    _ = &mut interrupted => {
                        results.cancel();
                        return Ok(true);
                    }
                }
            }
        });
        let mut stdout = std::io::stdout();
        let _ = live.finish(&mut stdout);
        match outcome {
            Ok(true) => println!("query cancelled ({} rows)", live.rows()),
            Ok(false) => println!("{} rows", live.rows()),
            Err(e) => eprintln!("{}", e.render()),
        }
    }
}

/// Resolves at the next Ctrl-C. One future for the whole query, polled
/// from its first moment: a `ctrl_c()` made anew in every turn of a loop
/// misses a Ctrl-C that arrives while the loop draws or applies a batch
/// (tokio delivers a signal only to listeners already waiting), which a
/// busy machine made likely (a shell test's Ctrl-C was lost on CI).
async fn interrupt() {
    let _ = tokio::signal::ctrl_c().await;
}

fn terminal_width() -> usize {
    comfy_table::Table::new()
        .width()
        .map_or(120, |w| w as usize)
        .max(40)
}
