//! `weir run` and `weir explain`: a SQL file's statements, in order.

use std::collections::HashMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use weir::crates::sql::ParsedStatement;
use weir::{Job, Output, ResultStream, Session, WeirError};

use crate::changing::{terminal_height, ChangingTable};
use crate::render::{table, Printer};
use crate::OutputFormat;

/// Why `weir` exits non-zero.
pub enum Failure {
    Usage(String),
    Weir(WeirError),
    /// An error in one of several files.
    InFile(String, WeirError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) => write!(f, "error: {m}"),
            Failure::Weir(e) => write!(f, "{}", e.render()),
            Failure::InFile(file, e) => write!(f, "{file}: {}", e.render()),
        }
    }
}

impl From<WeirError> for Failure {
    fn from(e: WeirError) -> Self {
        Failure::Weir(e)
    }
}

/// SQL texts to run, in order, each with where it came from.
pub fn sources(files: &[PathBuf], execute: Option<&str>) -> Result<Vec<(String, String)>, Failure> {
    let mut sources = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        sources.push((text, path.display().to_string()));
    }
    if let Some(sql) = execute {
        sources.push((sql.to_string(), "-e".into()));
    }
    if sources.is_empty() {
        return Err(Failure::Usage("give SQL files or -e \"SQL\"".into()));
    }
    Ok(sources)
}

/// Each source's statements, placeholders filled.
pub(crate) fn parse_all(
    sources: &[(String, String)],
    vars: &HashMap<String, String>,
) -> Result<Vec<(String, Vec<ParsedStatement>)>, Failure> {
    sources
        .iter()
        .map(|(text, origin)| {
            let text = substitute(text, vars).map_err(|f| in_file(f, origin))?;
            let statements = weir::crates::sql::parse(&text).map_err(|e| {
                in_file(
                    Failure::Weir(WeirError::Sql {
                        error: e,
                        source_text: text.clone(),
                    }),
                    origin,
                )
            })?;
            Ok((text, statements))
        })
        .collect()
}

pub(crate) fn in_file(failure: Failure, origin: &str) -> Failure {
    match failure {
        Failure::Weir(e) => Failure::InFile(origin.to_string(), e),
        other => other,
    }
}

fn substitute(text: &str, vars: &HashMap<String, String>) -> Result<String, Failure> {
    weir::crates::sql::substitute_vars(text, vars).map_err(|e| {
        Failure::Weir(WeirError::Sql {
            error: e,
            source_text: text.to_string(),
        })
    })
}

/// Runs every statement; waits for the jobs; Ctrl-C or SIGTERM stops them
/// gracefully.
pub async fn run(
    sources: &[(String, String)],
    vars: &HashMap<String, String>,
    format: OutputFormat,
    from_checkpoint: Option<&str>,
    metrics_addr: Option<&str>,
    changelog: bool,
    cluster: bool,
) -> Result<(), Failure> {
    let parsed = parse_all(sources, vars)?;
    let mut session = Session::new();
    if cluster {
        session.set("execution.target", "kafka")?;
    }
    if changelog {
        session.set("sql-client.execution.result-mode", "changelog")?;
    }
    if let Some(address) = metrics_addr {
        session.set("metrics.address", address)?;
    }
    if let Some(path) = from_checkpoint {
        session.set("execution.savepoint.path", path)?;
    }
    let mut jobs: Vec<Job> = Vec::new();
    let stdout = std::io::stdout();
    for ((text, statements), (_, origin)) in parsed.iter().zip(sources) {
        for statement in statements {
            let output = session
                .execute(statement, text)
                .await
                .map_err(|e| in_file(Failure::Weir(e), origin))?;
            match output {
                Output::Done(message) => tracing::info!("{message}"),
                Output::Rows(rows) => {
                    let mut printer = Printer::new(format);
                    let _ = printer.print(&rows, &mut stdout.lock());
                }
                Output::Explain(plan) | Output::Text(plan) => println!("{plan}"),
                Output::Tables(tables) => {
                    for (title, rows) in tables {
                        println!("{title}");
                        let mut printer = Printer::new(format);
                        let _ = printer.print(&rows, &mut stdout.lock());
                    }
                }
                Output::Query(results)
                    if results.is_updating()
                        && !session.planner().settings().changelog_results() =>
                {
                    if show_updating(results, format).await? {
                        return Ok(());
                    }
                }
                Output::Query(results) if results.is_bounded() && format == OutputFormat::Table => {
                    // A bounded result reads best as one table.
                    let schema = results.schema();
                    let batches = results.collect().await?;
                    let all = weir::arrow::compute::concat_batches(&schema, &batches)
                        .map_err(|e| Failure::Usage(e.to_string()))?;
                    let _ = writeln!(stdout.lock(), "{}", table(&all));
                }
                Output::Query(results) => {
                    if stream_rows(results, format).await? {
                        return Ok(());
                    }
                }
                Output::Job(job) => {
                    tracing::info!(job = job.id(), sink = job.sink(), "submitted");
                    jobs.push(job);
                }
            }
        }
    }
    wait_for_jobs(&jobs).await
}

/// Prints each batch of a result as it arrives (an updating result's with
/// its `op` column), until it ends or Ctrl-C / SIGTERM. `true` when
/// stdout was closed (`| head`): the run stops quietly.
async fn stream_rows(mut results: ResultStream, format: OutputFormat) -> Result<bool, Failure> {
    let mut printer = Printer::new(format);
    let stdout = std::io::stdout();
    // One signal future for the whole loop: one made per turn misses a
    // signal that arrives while a batch prints.
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            batch = results.next_batch() => match batch? {
                Some(batch) => {
                    if printer.print(&batch, &mut stdout.lock()).is_err() {
                        results.cancel();
                        return Ok(true);
                    }
                }
                None => return Ok(false),
            },
            _ = &mut stop => {
                results.cancel();
                return Ok(false);
            }
        }
    }
}

/// An updating result, as its table: for a bounded query the final table
/// (its changes applied), in the chosen format; on a terminal, the table
/// redrawn in place as it changes; elsewhere (a pipe, CSV, JSON) each
/// change with its `op` column, since a pipe cannot be redrawn.
async fn show_updating(mut results: ResultStream, format: OutputFormat) -> Result<bool, Failure> {
    let stdout = std::io::stdout();
    if results.is_bounded() {
        let table = results.collect_table().await?;
        let _ = Printer::new(format).print(&table, &mut stdout.lock());
        return Ok(false);
    }
    if format != OutputFormat::Table || !stdout.is_terminal() {
        return stream_rows(results, format).await;
    }
    let mut changing = ChangingTable::new(results.data_schema(), terminal_height())?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            batch = results.next_changes() => match batch? {
                Some(batch) => changing.apply(&batch, &mut stdout.lock())?,
                None => break,
            },
            _ = tokio::time::sleep(crate::changing::REDRAW) => changing.draw(&mut stdout.lock())?,
            _ = &mut stop => {
                results.cancel();
                break;
            }
        }
    }
    changing.draw(&mut stdout.lock())?;
    Ok(false)
}

pub(crate) async fn wait_for_jobs(jobs: &[Job]) -> Result<(), Failure> {
    if jobs.is_empty() {
        return Ok(());
    }
    let _progress = crate::progress::Progress::start(jobs);
    let all = futures::future::join_all(jobs.iter().map(|j| j.wait()));
    tokio::select! {
        results = all => {
            for result in results {
                result?;
            }
            Ok(())
        }
        _ = shutdown_signal() => {
            eprintln!("stopping {} job(s)...", jobs.len());
            for job in jobs {
                job.stop(true).await;
            }
            for job in jobs {
                job.wait().await?;
            }
            Ok(())
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints the graph of every query and INSERT; runs DDL so names resolve.
pub async fn explain(
    sources: &[(String, String)],
    vars: &HashMap<String, String>,
) -> Result<(), Failure> {
    let parsed = parse_all(sources, vars)?;
    let mut session = Session::new();
    let mut out = std::io::stdout().lock();
    for ((text, statements), (_, origin)) in parsed.iter().zip(sources) {
        for statement in statements {
            use weir::Statement;
            let wrapped = match &statement.statement {
                Statement::Query(_) | Statement::Insert(_) | Statement::StatementSet(_) => {
                    let mut s = statement.clone();
                    s.statement = Statement::Explain(Box::new(statement.statement.clone()));
                    s
                }
                _ => statement.clone(),
            };
            match session
                .execute(&wrapped, text)
                .await
                .map_err(|e| in_file(Failure::Weir(e), origin))?
            {
                Output::Explain(plan) => {
                    let _ = writeln!(out, "-- {}\n{plan}", first_line(&statement.text));
                }
                Output::Rows(rows) => {
                    let _ = writeln!(out, "{}", table(&rows));
                }
                Output::Tables(tables) => {
                    for (title, rows) in tables {
                        let _ = writeln!(out, "{title}\n{}", table(&rows));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        .unwrap_or("")
        .trim()
}
