//! `weir`: run SQL files, or (without arguments) an interactive shell.

mod changing;
mod live;
mod progress;
mod render;
mod replay;
mod run;
mod shell;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Arrow batches are allocated and freed by the megabyte; glibc's malloc
/// hands blocks that size back to the kernel each time (a page fault per
/// page on the next batch), mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: streaming SQL on Arrow, in Flink's dialect"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log level filter (tracing's EnvFilter syntax), e.g. `info` or `weir=debug`.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    /// Log format.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Serve Prometheus `/metrics` and `/healthz` here, e.g. 127.0.0.1:9249
    /// (the same as `SET 'metrics.address' = '...'`).
    #[arg(long = "metrics-addr", global = true)]
    metrics_addr: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the statements of a SQL file (or of -e) in order.
    Run {
        /// SQL files, run in order (e.g. DDL, views, then a query).
        files: Vec<PathBuf>,
        /// SQL text to run instead of a file.
        #[arg(short = 'e', long = "execute")]
        execute: Option<String>,
        /// Fill `${NAME}` placeholders: --var NAME=value (repeatable).
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// How query results are printed.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Start the jobs from this checkpoint folder (…/chk-NNNNNNNNNN)
        /// instead of the newest one of the job.
        #[arg(long = "from-checkpoint")]
        from_checkpoint: Option<String>,
        /// Print an updating result as its changes, each with an `op`
        /// column (+I, -U, +U, -D), rather than as its table (the same as
        /// `SET 'sql-client.execution.result-mode' = 'changelog'`).
        #[arg(long)]
        changelog: bool,
        /// Share the jobs with every other `weir run --cluster` of the same
        /// file, through Kafka and the checkpoint store (the same as
        /// `SET 'execution.target' = 'kafka'`; docs/cluster-protocol.md).
        #[arg(long)]
        cluster: bool,
    },
    /// Push a stream's dead letters once more, through its declaration in
    /// the files as it is now, into the INSERTs of the files that read it.
    /// Checkpointed: a letter is replayed once, across runs.
    ReplayDeadLetters {
        /// The job's SQL files, in order.
        files: Vec<PathBuf>,
        /// The stream whose dead letters to replay.
        #[arg(long)]
        stream: String,
        /// Where records that still fail go (default: the dead-letter path
        /// or topic with `-replayed` added).
        #[arg(long = "bad-data")]
        bad_data: Option<String>,
        /// Fill `${NAME}` placeholders: --var NAME=value (repeatable).
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
    /// Print the operator graph of each query or INSERT in a SQL file.
    Explain {
        /// SQL files, in order.
        files: Vec<PathBuf>,
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not NAME=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Fail points named in FAILPOINTS (tests of the cluster protocol).
    let _fail_points = fail::FailScenario::setup();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(command) = cli.command else {
        return match shell::Shell::new(runtime, cli.metrics_addr.as_deref()).and_then(|s| s.run()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    };
    let result = runtime.block_on(async {
        match command {
            Command::Run {
                files,
                execute,
                vars,
                format,
                from_checkpoint,
                changelog,
                cluster,
            } => {
                let sources = run::sources(&files, execute.as_deref())?;
                let vars = vars.into_iter().collect::<HashMap<_, _>>();
                run::run(
                    &sources,
                    &vars,
                    format,
                    from_checkpoint.as_deref(),
                    cli.metrics_addr.as_deref(),
                    changelog,
                    cluster,
                )
                .await
            }
            Command::ReplayDeadLetters {
                files,
                stream,
                bad_data,
                vars,
            } => {
                let sources = run::sources(&files, None)?;
                let vars = vars.into_iter().collect::<HashMap<_, _>>();
                replay::replay(&sources, &vars, &stream, bad_data.as_deref()).await
            }
            Command::Explain { files, vars } => {
                let sources = run::sources(&files, None)?;
                run::explain(&sources, &vars.into_iter().collect::<HashMap<_, _>>()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}
