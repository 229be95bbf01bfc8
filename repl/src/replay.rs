//! `weir replay-dead-letters job.sql --stream bids`: a stream's dead
//! letters pushed once more, through the stream's current declaration,
//! into the jobs of the file that read it.
//!
//! The file runs as `weir run` would run it, with three changes: the
//! stream is declared over its own dead-letter output (the `dead-letter`
//! connector reading its `'bad-data.path'` or `'bad-data.topic'`, with the
//! stream's columns, watermark, value and key formats: its decoder as it
//! is now); only
//! the `INSERT`s that read the stream (directly or through views) run, and
//! no `SELECT`; and they run as the pipeline `<name>-replay-<stream>`, with
//! checkpoints. The checkpoints keep which letters were replayed, so a run
//! after a restart, or a later run, replays only letters written since: no
//! record is replayed twice. Records that still fail go to `--bad-data`
//! (by default the dead-letter path or topic with `-replayed` added), with
//! the new reason and where they were first read.
//!
//! An `INSERT` that reads the stream together with another stream (a join)
//! is refused: replaying would read the other stream again from its start.

use std::collections::{BTreeSet, HashMap};

use weir::crates::sql::{catalog_name, CreateStream, Insert, ParsedStatement, Statement};
use weir::{Job, Output, Session};

use crate::run::{in_file, parse_all, wait_for_jobs, Failure};

/// Checkpoints of a replay, when the file sets none.
const DEFAULT_INTERVAL: &str = "10s";

/// Runs the replay of `stream`'s dead letters (see the module doc).
pub async fn replay(
    sources: &[(String, String)],
    vars: &HashMap<String, String>,
    stream: &str,
    bad_data: Option<&str>,
) -> Result<(), Failure> {
    let parsed = parse_all(sources, vars)?;
    let statements = parsed.iter().flat_map(|(_, s)| s.iter());
    let plan = ReplayPlan::of(statements.map(|s| &s.statement), stream)?;
    let mut session = Session::new();
    let mut jobs: Vec<Job> = Vec::new();
    for ((text, statements), (_, origin)) in parsed.iter().zip(sources) {
        for statement in statements {
            let Some(statement) = plan.rewrite(statement, bad_data)? else {
                continue;
            };
            if matches!(
                statement.statement,
                Statement::Insert(_) | Statement::StatementSet(_)
            ) {
                name_the_replay(&mut session, stream)?;
            }
            let output = session
                .execute(&statement, text)
                .await
                .map_err(|e| in_file(Failure::Weir(e), origin))?;
            match output {
                Output::Job(job) => {
                    tracing::info!(job = job.id(), sink = job.sink(), "replaying");
                    jobs.push(job);
                }
                Output::Done(message) => tracing::info!("{message}"),
                _ => {}
            }
        }
    }
    wait_for_jobs(&jobs).await
}

/// The pipeline name and checkpoints a replay job runs under: its own, so
/// that its read positions are not the stream's job's.
fn name_the_replay(session: &mut Session, stream: &str) -> Result<(), Failure> {
    let settings = session.planner().settings();
    let name = settings.job_name().map(str::to_string);
    let checkpointing = settings.checkpoint_interval().is_some();
    let replay_name = match name {
        Some(name) if name.ends_with(&format!("-replay-{stream}")) => name,
        Some(name) => format!("{name}-replay-{stream}"),
        None => format!("replay-{stream}"),
    };
    session.set("pipeline.name", &replay_name)?;
    if !checkpointing {
        session.set("execution.checkpointing.interval", DEFAULT_INTERVAL)?;
    }
    Ok(())
}

/// What of a file a replay runs.
struct ReplayPlan {
    stream: String,
    /// The streams the file declares.
    streams: BTreeSet<String>,
    /// The base streams each view reads.
    views: HashMap<String, BTreeSet<String>>,
}

impl ReplayPlan {
    fn of<'a>(
        statements: impl Iterator<Item = &'a Statement>,
        stream: &str,
    ) -> Result<Self, Failure> {
        let mut plan = ReplayPlan {
            stream: stream.to_string(),
            streams: BTreeSet::new(),
            views: HashMap::new(),
        };
        let mut readers = 0;
        for statement in statements {
            match statement {
                Statement::CreateStream(create) => {
                    plan.streams.insert(catalog_name(&create.name));
                }
                Statement::CreateView(view) => {
                    let reads = plan.base_streams(&view.query.relations());
                    plan.views.insert(catalog_name(&view.name), reads);
                }
                Statement::Insert(insert) => readers += usize::from(plan.reads_stream(insert)?),
                Statement::StatementSet(inserts) => {
                    for insert in inserts {
                        readers += usize::from(plan.reads_stream(insert)?);
                    }
                }
                _ => {}
            }
        }
        if !plan.streams.contains(stream) {
            return Err(Failure::Usage(format!(
                "no CREATE TABLE or CREATE STREAM declares '{stream}' in the files"
            )));
        }
        if readers == 0 {
            return Err(Failure::Usage(format!(
                "no INSERT INTO of the files reads '{stream}': nothing to replay into"
            )));
        }
        Ok(plan)
    }

    /// The declared streams `relations` read, through views.
    fn base_streams(&self, relations: &[String]) -> BTreeSet<String> {
        let mut streams = BTreeSet::new();
        for name in relations {
            match self.views.get(name) {
                Some(reads) => streams.extend(reads.iter().cloned()),
                None if self.streams.contains(name) => {
                    streams.insert(name.clone());
                }
                None => {}
            }
        }
        streams
    }

    /// Whether `insert` reads the replayed stream; an error when it reads
    /// another stream as well.
    fn reads_stream(&self, insert: &Insert) -> Result<bool, Failure> {
        let reads = self.base_streams(&insert.query.relations());
        if !reads.contains(&self.stream) {
            return Ok(false);
        }
        let others: Vec<&String> = reads.iter().filter(|s| **s != self.stream).collect();
        if let Some(other) = others.first() {
            return Err(Failure::Usage(format!(
                "INSERT INTO {} reads '{}' together with '{other}': a replay would read '{other}' again from its start. Replay into a job that reads only '{}'",
                insert.sink, self.stream, self.stream
            )));
        }
        Ok(true)
    }

    /// `statement` as the replay runs it, or `None` when it does not.
    fn rewrite(
        &self,
        statement: &ParsedStatement,
        bad_data: Option<&str>,
    ) -> Result<Option<ParsedStatement>, Failure> {
        let replaced = match &statement.statement {
            Statement::CreateStream(create) if catalog_name(&create.name) == self.stream => {
                let mut create = create.clone();
                create.options = replay_options(create.as_ref(), bad_data)?;
                Statement::CreateStream(create)
            }
            Statement::Insert(insert) if !self.reads_stream(insert)? => return Ok(None),
            Statement::StatementSet(inserts) => {
                let mut kept = Vec::new();
                for insert in inserts {
                    if self.reads_stream(insert)? {
                        kept.push(insert.clone());
                    }
                }
                if kept.is_empty() {
                    return Ok(None);
                }
                Statement::StatementSet(kept)
            }
            Statement::Query(_) => return Ok(None),
            other => other.clone(),
        };
        Ok(Some(ParsedStatement {
            statement: replaced,
            ..statement.clone()
        }))
    }
}

/// The options of `create` as a `dead-letter` stream over its own dead
/// letters, decoding them with its value format.
fn replay_options(
    create: &CreateStream,
    bad_data: Option<&str>,
) -> Result<Vec<(String, String)>, Failure> {
    let name = catalog_name(&create.name);
    let get = |key: &str| {
        create
            .options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let format = get("value.format")
        .or_else(|| get("format"))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "'{name}' has no 'format': its records cannot be decoded again"
            ))
        })?;
    let mut options = vec![
        ("connector".to_string(), "dead-letter".to_string()),
        ("stream".to_string(), name.clone()),
        ("format".to_string(), format.clone()),
    ];
    // The format's own options (`json.*`, `protobuf.*`, ...), as Flink
    // writes them for a value format too (`value.json.*`).
    let format_prefix = format!("{}.", format.to_ascii_lowercase());
    for (key, value) in &create.options {
        // The key columns come from the record's key, as declared.
        if key.starts_with("key.") || key == "value.fields-include" {
            options.push((key.clone(), value.clone()));
            continue;
        }
        let key = key.strip_prefix("value.").unwrap_or(key);
        if key.to_ascii_lowercase().starts_with(&format_prefix) {
            options.push((key.to_string(), value.clone()));
        }
    }
    let kept = |prefix: &str| -> Vec<(String, String)> {
        create
            .options
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .cloned()
            .collect()
    };
    match (get("bad-data.path"), get("bad-data.topic")) {
        (Some(path), _) => {
            let again = bad_data
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}-replayed", path.trim_end_matches('/')));
            options.push(("path".into(), path));
            options.push(("bad-data.path".into(), again));
            options.extend(kept("s3."));
        }
        (None, Some(topic)) => {
            let again = bad_data
                .map(str::to_string)
                .unwrap_or_else(|| format!("{topic}-replayed"));
            options.push(("topic".into(), topic));
            options.push(("bad-data.topic".into(), again));
            // The dead-letter topic's own client settings, or the stream's.
            let own: Vec<(String, String)> = kept("bad-data.properties.")
                .into_iter()
                .map(|(k, v)| (k.replacen("bad-data.", "", 1), v))
                .collect();
            match own.is_empty() {
                true => options.extend(kept("properties.")),
                false => options.extend(own),
            }
        }
        (None, None) => {
            return Err(Failure::Usage(format!(
            "'{name}' keeps no dead letters: it sets neither 'bad-data.path' nor 'bad-data.topic'"
        )))
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(sql: &str) -> Vec<ParsedStatement> {
        weir::crates::sql::parse(sql).unwrap()
    }

    #[test]
    fn a_replay_runs_only_the_inserts_that_read_the_stream() {
        let parsed = statements(
            "CREATE TABLE bids (a BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
               WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = 'b:9092',
                     'value.format' = 'json', 'value.json.ignore-parse-errors' = 'false',
                     'key.format' = 'json', 'key.fields' = 'a', 'bad-data.topic' = 'bids-dlq');
             CREATE TABLE people (p BIGINT) WITH ('connector' = 'filesystem', 'path' = '/p', 'format' = 'json');
             CREATE VIEW big AS SELECT * FROM bids WHERE a > 10;
             CREATE TABLE out (n BIGINT) WITH ('connector' = 'print');
             INSERT INTO out SELECT count(*) FROM TABLE(TUMBLE(TABLE big, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;
             INSERT INTO out SELECT p FROM people;
             SELECT * FROM bids;",
        );
        let Ok(plan) = ReplayPlan::of(parsed.iter().map(|s| &s.statement), "bids") else {
            panic!("no plan");
        };
        let kept: Vec<Option<ParsedStatement>> = parsed
            .iter()
            .map(|s| plan.rewrite(s, None).ok().flatten())
            .collect();
        let runs: Vec<bool> = kept.iter().map(Option::is_some).collect();
        assert_eq!(runs, [true, true, true, true, true, false, false]);
        let Some(Statement::CreateStream(create)) = kept[0].as_ref().map(|s| &s.statement) else {
            panic!("not a CREATE");
        };
        let options: Vec<(&str, &str)> = create
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            options,
            [
                ("connector", "dead-letter"),
                ("stream", "bids"),
                ("format", "json"),
                ("json.ignore-parse-errors", "false"),
                ("key.format", "json"),
                ("key.fields", "a"),
                ("topic", "bids-dlq"),
                ("bad-data.topic", "bids-dlq-replayed"),
                ("properties.bootstrap.servers", "b:9092"),
            ]
        );
        assert!(create.watermark.is_some(), "the watermark is kept");
    }

    #[test]
    fn a_join_with_another_stream_or_no_dead_letters_is_refused() {
        let join = statements(
            "CREATE TABLE bids (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/b', 'format' = 'json', 'bad-data.path' = '/dlq');
             CREATE TABLE people (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/p', 'format' = 'json');
             CREATE TABLE out (a BIGINT) WITH ('connector' = 'print');
             INSERT INTO out SELECT b.a FROM bids b JOIN people p ON b.a = p.a;",
        );
        let error = ReplayPlan::of(join.iter().map(|s| &s.statement), "bids")
            .err()
            .map(|f| f.to_string())
            .unwrap_or_default();
        assert!(error.contains("together with 'people'"), "{error}");
        let missing = ReplayPlan::of(join.iter().map(|s| &s.statement), "nothing")
            .err()
            .map(|f| f.to_string())
            .unwrap_or_default();
        assert!(missing.contains("no CREATE TABLE"), "{missing}");
        let Statement::CreateStream(people) = &join[1].statement else {
            panic!("not a CREATE");
        };
        let error = replay_options(people, None).err().map(|f| f.to_string());
        assert!(
            error.unwrap_or_default().contains("keeps no dead letters"),
            "people has no bad-data option"
        );
    }
}
