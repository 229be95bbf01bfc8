//! Helpers for end-to-end tests: input files, running Weir, and the
//! DataFusion batch oracle.

#![allow(dead_code)]

pub mod kafka;
pub mod registry;
pub mod slow;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// One input row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub key: Option<i64>,
    pub value: Option<i64>,
    pub ts: i64,
}

/// Shape of generated input.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub rows: usize,
    pub keys: i64,
    /// Share (0..1) of rows on key 0.
    pub hot: f64,
    /// Share of null keys and null values.
    pub nulls: f64,
    /// Mean ms between rows.
    pub step: i64,
    /// Rows are displaced by up to this many ms (out of order).
    pub jitter: i64,
}

/// Random events for `splits` splits, deterministic for `seed`.
pub fn generate(seed: u64, splits: usize, shape: Shape) -> Vec<Vec<Event>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let base = 1_700_000_000_000i64;
    (0..splits)
        .map(|_| {
            (0..shape.rows)
                .map(|i| {
                    let key = if rng.random_bool(shape.nulls) {
                        None
                    } else if rng.random_bool(shape.hot) {
                        Some(0)
                    } else {
                        Some(rng.random_range(0..shape.keys))
                    };
                    let value = if rng.random_bool(shape.nulls) {
                        None
                    } else {
                        Some(rng.random_range(-50..1000))
                    };
                    let jitter = if shape.jitter > 0 {
                        rng.random_range(-shape.jitter..=shape.jitter)
                    } else {
                        0
                    };
                    Event {
                        key,
                        value,
                        ts: base + i as i64 * shape.step + jitter,
                    }
                })
                .collect()
        })
        .collect()
}

fn timestamp_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

/// Writes each split as a JSON-lines file in `dir`.
pub fn write_splits(dir: &Path, splits: &[Vec<Event>]) {
    for (i, split) in splits.iter().enumerate() {
        let mut text = String::new();
        for e in split {
            let key = e.key.map_or("null".to_string(), |k| k.to_string());
            let value = e.value.map_or("null".to_string(), |v| v.to_string());
            text.push_str(&format!(
                r#"{{"k": {key}, "v": {value}, "ts": "{}"}}"#,
                timestamp_text(e.ts)
            ));
            text.push('\n');
        }
        std::fs::write(dir.join(format!("part-{i:03}.json")), text).unwrap();
    }
}

/// The DDL of the test stream over `dir`.
pub fn stream_ddl(dir: &Path, delay_ms: i64, batch_size: usize, extra: &str) -> String {
    format!(
        "CREATE STREAM t (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '{delay_ms}' MILLISECOND)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json', 'scan.batch-size' = '{batch_size}'{extra})",
        dir.display()
    )
}

/// What a Weir query produced.
pub struct Run {
    pub rows: Vec<String>,
    pub late_rows: u64,
}

/// The dead letters (JSON lines) of every file under `dir`.
pub fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let mut letters = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        letters.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
    }
    letters
}

/// Runs DDL then starts a query in a fresh session; fails the test with
/// the rendered error if either fails.
pub async fn start_query(setup: &[String], query: &str) -> weir::ResultStream {
    let mut session = weir::Session::new();
    for sql in setup {
        if let Err(e) = session.sql(sql).await {
            panic!("{}", e.render());
        }
    }
    match session.query(query).await {
        Ok(r) => r,
        Err(e) => panic!("{query}: {}", e.render()),
    }
}

/// Submits `insert` in `session` and waits (a minute at most) for the
/// bounded job to end.
pub async fn run_job(session: &mut weir::Session, insert: &str) {
    let job = match session.submit(insert).await {
        Ok(job) => job,
        Err(e) => panic!("{}", e.render()),
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), job.wait())
        .await
        .expect("the bounded job ends")
        .unwrap();
}

/// Runs DDL then a query in a fresh session; collects rows and late count.
pub async fn run_weir(setup: &[String], query: &str) -> Run {
    let mut results = start_query(setup, query).await;
    let mut batches = Vec::new();
    loop {
        match results.next_batch().await {
            Ok(Some(b)) => batches.push(b),
            Ok(None) => break,
            Err(e) => panic!("{}", e.render()),
        }
    }
    let late_rows = results.metrics().late_rows();
    Run {
        rows: canonical_rows(&batches),
        late_rows,
    }
}

/// Rows as sorted strings; floats rounded so summation order does not matter.
pub fn canonical_rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let values: Vec<String> = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| {
                    let text = f.value(row).to_string();
                    if matches!(c.data_type(), DataType::Float64 | DataType::Float32) {
                        text.parse::<f64>()
                            .map(|v| format!("{v:.6}"))
                            .unwrap_or(text)
                    } else {
                        text
                    }
                })
                .collect();
            rows.push(values.join(" | "));
        }
    }
    rows.sort();
    rows
}

/// Windows `[start, end)` of a hopping window (slide == size: tumbling)
/// containing `t`, by brute force.
pub fn hop_windows(t: i64, size: i64, slide: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = (t - size).div_euclid(slide) * slide;
    while start <= t {
        if t < start + size {
            out.push((start, start + size));
        }
        start += slide;
    }
    out
}

/// Cumulating windows containing `t`.
pub fn cumulate_windows(t: i64, step: i64, max: i64) -> Vec<(i64, i64)> {
    let cycle = t.div_euclid(max) * max;
    (1..=max / step)
        .map(|k| (cycle, cycle + k * step))
        .filter(|(_, end)| t < *end)
        .collect()
}

/// The (row, window) pairs that are on time by the per-split watermark
/// rule: a row counts in a window unless the watermark of its split before
/// it (max of `ts - delay` over the split's earlier rows) reached `end - 1`.
/// Also returns how many rows were late for all their windows.
pub fn on_time_pairs(
    splits: &[Vec<Event>],
    delay: i64,
    windows: impl Fn(i64) -> Vec<(i64, i64)>,
) -> (Vec<(i64, i64, Event)>, u64) {
    let mut pairs = Vec::new();
    let mut late = 0;
    for split in splits {
        let mut watermark = i64::MIN;
        for e in split {
            let mut counted = false;
            for (start, end) in windows(e.ts) {
                if end - 1 > watermark {
                    pairs.push((start, end, *e));
                    counted = true;
                }
            }
            if !counted {
                late += 1;
            }
            watermark = watermark.max(e.ts - delay);
        }
    }
    (pairs, late)
}

/// Runs `sql` with DataFusion over table `w(window_start, window_end, k, v)`.
pub async fn oracle(pairs: &[(i64, i64, Event)], sql: &str) -> Vec<String> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampMillisecondArray::from(
                pairs.iter().map(|p| p.0).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMillisecondArray::from(
                pairs.iter().map(|p| p.1).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                pairs.iter().map(|p| p.2.key).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                pairs.iter().map(|p| p.2.value).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new();
    ctx.register_table(
        "w",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    canonical_rows(&batches)
}

/// Sessions by simulation of Flink's semantics on one split: rows in
/// order; before each row, sessions whose end - 1 <= the watermark fire;
/// a row joins the open sessions its window `[ts, ts + gap)` touches, or
/// is late if it touches none and its own window has closed.
/// Open sessions per key: (start, end, rows).
type OpenSessions = BTreeMap<Option<i64>, Vec<(i64, i64, Vec<Event>)>>;

pub fn simulate_sessions(split: &[Event], delay: i64, gap: i64) -> (Vec<(i64, i64, Event)>, u64) {
    let mut open: OpenSessions = BTreeMap::new();
    let mut fired: Vec<(i64, i64, Event)> = Vec::new();
    let mut late = 0;
    let mut watermark = i64::MIN;
    let fire = |open: &mut OpenSessions, fired: &mut Vec<(i64, i64, Event)>, wm: i64| {
        for sessions in open.values_mut() {
            sessions.retain(|(s, e, rows)| {
                if e - 1 <= wm {
                    fired.extend(rows.iter().map(|r| (*s, *e, *r)));
                    false
                } else {
                    true
                }
            });
        }
    };
    for e in split {
        fire(&mut open, &mut fired, watermark);
        let sessions = open.entry(e.key).or_default();
        let (mut start, mut end) = (e.ts, e.ts + gap);
        let touching: Vec<usize> = sessions
            .iter()
            .enumerate()
            .filter(|(_, (s, en, _))| *s <= end && *en >= start)
            .map(|(i, _)| i)
            .collect();
        if touching.is_empty() && end - 1 <= watermark {
            late += 1;
        } else {
            let mut rows = vec![*e];
            for i in touching.into_iter().rev() {
                let (s, en, r) = sessions.remove(i);
                start = start.min(s);
                end = end.max(en);
                rows.extend(r);
            }
            sessions.push((start, end, rows));
        }
        watermark = watermark.max(e.ts - delay);
    }
    fire(&mut open, &mut fired, i64::MAX);
    (fired, late)
}

/// A connector that replays given batches on one split, then either ends
/// or goes quiet without ending (an unbounded stream with no traffic).
pub struct Scripted {
    pub batches: Vec<RecordBatch>,
    pub ends: bool,
}

impl weir::crates::connectors::Connector for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn is_bounded(&self, _options: &weir::crates::connectors::Options) -> bool {
        self.ends
    }

    fn max_source_parallelism(&self, _spec: &weir::crates::connectors::TableSpec) -> Option<usize> {
        Some(1)
    }

    fn source(
        &self,
        _spec: &weir::crates::connectors::TableSpec,
    ) -> Result<weir::crates::engine::SourceFactory, weir::crates::connectors::ConnectorError> {
        let batches = self.batches.clone();
        let ends = self.ends;
        Ok(Arc::new(move |_| {
            Ok(Box::new(ScriptedSource {
                batches: batches.clone().into(),
                ends,
            }) as Box<dyn weir::crates::engine::Source>)
        }))
    }
}

struct ScriptedSource {
    batches: std::collections::VecDeque<RecordBatch>,
    ends: bool,
}

#[async_trait::async_trait]
impl weir::crates::engine::Source for ScriptedSource {
    fn splits(&self) -> Vec<weir::crates::engine::SplitId> {
        vec![0]
    }

    async fn poll(&mut self) -> weir::crates::engine::Result<weir::crates::engine::SourcePoll> {
        use weir::crates::engine::SourcePoll;
        match self.batches.pop_front() {
            Some(batch) => Ok(SourcePoll::Batch { split: 0, batch }),
            None if self.ends => Ok(SourcePoll::End),
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(SourcePoll::Pending)
            }
        }
    }
}

/// Events as one batch of (k, v, ts) for the scripted connector.
pub fn events_batch(events: &[Event]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(
                events.iter().map(|e| e.key).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                events.iter().map(|e| e.value).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMillisecondArray::from(
                events.iter().map(|e| e.ts).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// Versions of each key's rate: (key, rate, time), in time order.
pub fn versions(keys: i64, per_key: i64, base: i64) -> Vec<(i64, i64, i64)> {
    let mut all: Vec<(i64, i64, i64)> = (0..keys)
        .flat_map(|k| (0..per_key).map(move |j| (k, 100 * k + j, base + j * 97 + k * 13)))
        .collect();
    all.sort_by_key(|v| v.2);
    all
}

/// A version `(key, rate, time)` as a JSON record `{key, rate, rts}`.
pub fn version_json((key, rate, time): (i64, i64, i64)) -> String {
    format!(
        r#"{{"key": {key}, "rate": {rate}, "rts": "{}"}}"#,
        timestamp_text(time)
    )
}

/// The batch answer of a temporal join of `events` (as `o`) with
/// `versions` (as `r`): each order with the latest version of its key at
/// or before its time.
pub async fn temporal_oracle(
    events: &[Event],
    versions: &[(i64, i64, i64)],
    join: &str,
) -> Vec<String> {
    let ctx = SessionContext::new();
    let batch = events_batch(events);
    let mut fields = batch.schema().fields().to_vec();
    fields.push(Arc::new(Field::new("i", DataType::Int64, false)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(
        (0..events.len() as i64).collect::<Vec<_>>(),
    )));
    let orders = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let rates = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("rate", DataType::Int64, false),
            Field::new(
                "rts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ])),
        vec![
            Arc::new(Int64Array::from(
                versions.iter().map(|v| v.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                versions.iter().map(|v| v.1).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMillisecondArray::from(
                versions.iter().map(|v| v.2).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    for (name, batch) in [("o", orders), ("r", rates)] {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table(name, Arc::new(table)).unwrap();
    }
    let sql = format!(
        "SELECT k, v, ts, rate FROM (
           SELECT o.i, o.k, o.v, o.ts, r.rate,
             ROW_NUMBER() OVER (PARTITION BY o.i ORDER BY r.rts DESC) AS rn
           FROM o {join} r ON o.k = r.key AND r.rts <= o.ts)
         WHERE rn = 1"
    );
    canonical_rows(&ctx.sql(&sql).await.unwrap().collect().await.unwrap())
}
