//! `'connector' = 'nexmark'`: the Nexmark auction-event generator.
//!
//! Events are those of the `nexmark` crate (the Nexmark generator as ported
//! by RisingWave, same model as Flink's): an event's content is a function
//! of its number, so the data is deterministic; its timestamp is
//! `base-time + number / rate`. Options follow Flink's Nexmark connector.
//! Subtask `i` of `p` generates events `i, i + p, i + 2p, ...`, one split,
//! in timestamp order. They are written straight into Arrow columns
//! ([`columns`]) from the crate's model ([`model`]), not built as structs
//! of strings first.

mod columns;
mod model;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{
    DataType, Field, Fields, Int64Type, Schema, SchemaRef, TimeUnit,
};
use nexmark::config::NexmarkConfig;
use weir_engine::{
    EngineError, Result, Source, SourceFactory, SourcePoll, SplitId, StateSnapshot, StateTable,
};

use columns::{ColumnarGenerator, Wanted};
use model::Model;

use crate::options::Options;
use crate::registry::{Connector, ConnectorError, TableSpec};

pub struct NexmarkConnector;

/// How many events were emitted, then the generator's base time.
static POSITION: LazyLock<StateTable> =
    LazyLock::new(|| StateTable::new("position", [("emitted", DataType::Int64)]));

const OPTIONS: &[&str] = &[
    "events.num",
    "first-event.rate",
    "next-event.rate",
    "rate.shape",
    "rate.period",
    "person.proportion",
    "auction.proportion",
    "bid.proportion",
    "base-time",
    "scan.batch-size",
    "scan.rate-limit",
];

/// Settings of a Nexmark source.
#[derive(Debug, Clone)]
struct Settings {
    config: NexmarkConfig,
    /// Total events over all subtasks; `None` is unbounded.
    events: Option<u64>,
    batch_size: usize,
    /// Events per second over all subtasks, if throttled.
    rate_limit: Option<f64>,
}

/// The `nexmark` crate's configuration with the words Flink's generator
/// draws from: its states are upper case (`'OR'`, as Nexmark q3 filters
/// by) and its names and cities capitalised, where the crate's are lower
/// case. The draws are the same; only the words differ.
fn flink_config() -> NexmarkConfig {
    let words = |text: &str| text.split(',').map(str::to_string).collect();
    NexmarkConfig {
        us_states: words("AZ,CA,ID,OR,WA,WY"),
        us_cities: words(
            "Phoenix,Los Angeles,San Francisco,Boise,Portland,Bend,Redmond,Seattle,Kent,Cheyenne",
        ),
        first_names: words("Peter,Paul,Luke,John,Saul,Vicky,Kate,Julie,Sarah,Deiter,Walter"),
        last_names: words("Shultz,Abrams,Spencer,White,Bartels,Walton,Smith,Jones,Noris"),
        ..NexmarkConfig::default()
    }
}

fn settings(options: &Options) -> std::result::Result<Settings, ConnectorError> {
    options.check_known("nexmark", OPTIONS, &[])?;
    let mut config = flink_config();
    let first: Option<usize> = options.parse("first-event.rate")?;
    let next: Option<usize> = options.parse("next-event.rate")?;
    if let Some(r) = first {
        config.first_rate = r.max(1);
        config.next_rate = r.max(1);
    }
    if let Some(r) = next {
        config.next_rate = r.max(1);
    }
    if let Some(shape) = options.get("rate.shape") {
        config.rate_shape = match shape.to_ascii_lowercase().as_str() {
            "square" => nexmark::config::RateShape::Square,
            "sine" => nexmark::config::RateShape::Sine,
            other => {
                return Err(ConnectorError::option(
                    "rate.shape",
                    format!("'{other}' is not square or sine"),
                ))
            }
        };
    }
    if let Some(p) = options.parse("rate.period")? {
        config.rate_period = p;
    }
    if let Some(p) = options.parse("person.proportion")? {
        config.person_proportion = p;
    }
    if let Some(p) = options.parse("auction.proportion")? {
        config.auction_proportion = p;
    }
    if let Some(p) = options.parse("bid.proportion")? {
        config.bid_proportion = p;
    }
    if config.person_proportion + config.auction_proportion + config.bid_proportion == 0 {
        return Err(ConnectorError::option(
            "bid.proportion",
            "and the other proportions cannot all be 0",
        ));
    }
    config.base_time = match options.get("base-time") {
        None => weir_engine::message::now_millis() as u64,
        Some(v) => parse_base_time(v).ok_or_else(|| {
            ConnectorError::option(
                "base-time",
                format!("'{v}' is neither epoch milliseconds nor 'yyyy-MM-dd HH:mm:ss'"),
            )
        })?,
    };
    let events = match options.parse::<u64>("events.num")? {
        Some(0) | None => None,
        Some(n) => Some(n),
    };
    let batch_size = options
        .parse::<usize>("scan.batch-size")?
        .unwrap_or(4096)
        .max(1);
    let rate_limit = options
        .parse::<f64>("scan.rate-limit")?
        .filter(|r| *r > 0.0);
    Ok(Settings {
        config,
        events,
        batch_size,
        rate_limit,
    })
}

fn parse_base_time(v: &str) -> Option<u64> {
    if let Ok(ms) = v.trim().parse::<u64>() {
        return Some(ms);
    }
    let t = chrono::NaiveDateTime::parse_from_str(v.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    Some(t.and_utc().timestamp_millis() as u64)
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Flink's Nexmark table, `dateTime` included as a physical column.
pub fn default_schema() -> SchemaRef {
    let f = |n: &str, t: DataType| Field::new(n, t, true);
    let person = Fields::from(vec![
        f("id", DataType::Int64),
        f("name", DataType::Utf8),
        f("emailAddress", DataType::Utf8),
        f("creditCard", DataType::Utf8),
        f("city", DataType::Utf8),
        f("state", DataType::Utf8),
        f("dateTime", ts()),
        f("extra", DataType::Utf8),
    ]);
    let auction = Fields::from(vec![
        f("id", DataType::Int64),
        f("itemName", DataType::Utf8),
        f("description", DataType::Utf8),
        f("initialBid", DataType::Int64),
        f("reserve", DataType::Int64),
        f("dateTime", ts()),
        f("expires", ts()),
        f("seller", DataType::Int64),
        f("category", DataType::Int64),
        f("extra", DataType::Utf8),
    ]);
    let bid = Fields::from(vec![
        f("auction", DataType::Int64),
        f("bidder", DataType::Int64),
        f("price", DataType::Int64),
        f("channel", DataType::Utf8),
        f("url", DataType::Utf8),
        f("dateTime", ts()),
        f("extra", DataType::Utf8),
    ]);
    Arc::new(Schema::new(vec![
        f("event_type", DataType::Int32),
        f("person", DataType::Struct(person)),
        f("auction", DataType::Struct(auction)),
        f("bid", DataType::Struct(bid)),
        f("dateTime", ts()),
    ]))
}

/// Checks that every declared column (and ROW field) is one the generator
/// fills, with a type it can be cast to.
fn check_schema(schema: &Schema) -> std::result::Result<(), ConnectorError> {
    let known = default_schema();
    for field in schema.fields() {
        let Ok(k) = known.field_with_name(field.name()) else {
            return Err(ConnectorError::new(format!(
                "the nexmark connector has no column '{}'; its columns: event_type, person, auction, bid, dateTime",
                field.name()
            )));
        };
        if let (DataType::Struct(declared), DataType::Struct(generated)) =
            (field.data_type(), k.data_type())
        {
            for sub in declared {
                if !generated.iter().any(|g| g.name() == sub.name()) {
                    return Err(ConnectorError::new(format!(
                        "the nexmark {} row has no field '{}'; its fields: {}",
                        field.name(),
                        sub.name(),
                        generated
                            .iter()
                            .map(|g| g.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
    }
    Ok(())
}

impl Connector for NexmarkConnector {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    fn default_schema(&self, _options: &Options) -> Option<SchemaRef> {
        Some(default_schema())
    }

    /// As Flink's Nexmark DDL: `WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND`.
    fn default_watermark(&self, _options: &Options) -> Option<(String, i64)> {
        Some(("dateTime".into(), 4000))
    }

    fn validate(&self, options: &Options) -> std::result::Result<(), ConnectorError> {
        settings(options).map(|_| ())
    }

    fn check_schema(&self, schema: &SchemaRef) -> std::result::Result<(), ConnectorError> {
        check_schema(schema)
    }

    fn expected_rows(&self, options: &Options) -> Option<u64> {
        options
            .parse::<u64>("events.num")
            .ok()
            .flatten()
            .filter(|n| *n > 0)
    }

    /// Row columns left out are not generated.
    fn reads_projection(&self, _options: &Options) -> bool {
        true
    }

    /// A row column declared with only its `dateTime` is timed, not
    /// generated.
    fn reads_row_fields(&self, _options: &Options) -> bool {
        true
    }

    fn is_bounded(&self, options: &Options) -> bool {
        matches!(options.parse::<u64>("events.num"), Ok(Some(n)) if n > 0)
    }

    fn source(&self, spec: &TableSpec) -> std::result::Result<SourceFactory, ConnectorError> {
        let settings = settings(&spec.options)?;
        check_schema(&spec.schema)?;
        let schema = spec.schema.clone();
        let wanted = Wanted::of(&schema, &spec.read_fields);
        Ok(Arc::new(move |info| {
            Ok(Box::new(NexmarkSource::new(
                settings.clone(),
                schema.clone(),
                wanted.clone(),
                info.index,
                info.parallelism,
            )) as Box<dyn Source>)
        }))
    }
}

struct NexmarkSource {
    settings: Settings,
    schema: SchemaRef,
    wanted: Wanted,
    generator: ColumnarGenerator,
    subtask: u64,
    parallelism: u64,
    /// Events this subtask has emitted.
    emitted: u64,
    /// Events this subtask will emit in all (`None`: unbounded).
    quota: Option<u64>,
    started: Instant,
    /// Events emitted before `started` (restored from a checkpoint).
    emitted_before: u64,
}

impl NexmarkSource {
    fn new(
        settings: Settings,
        schema: SchemaRef,
        wanted: Wanted,
        subtask: usize,
        parallelism: usize,
    ) -> Self {
        let (subtask, parallelism) = (subtask as u64, parallelism.max(1) as u64);
        let quota = settings.events.map(|n| {
            if n > subtask {
                (n - subtask).div_ceil(parallelism)
            } else {
                0
            }
        });
        let generator = Self::generator(&settings, &wanted, subtask, parallelism);
        tracing::info!(
            subtask,
            base_time = settings.config.base_time,
            "nexmark generator: base time {}",
            settings.config.base_time
        );
        NexmarkSource {
            settings,
            schema,
            wanted,
            generator,
            subtask,
            parallelism,
            emitted: 0,
            quota,
            started: Instant::now(),
            emitted_before: 0,
        }
    }

    /// A generator of events `first, first + step, ...`.
    fn generator(settings: &Settings, wanted: &Wanted, first: u64, step: u64) -> ColumnarGenerator {
        ColumnarGenerator::new(
            Arc::new(Model::new(settings.config.clone())),
            first,
            step,
            wanted.clone(),
        )
    }

    /// How many events may be emitted now under the rate limit.
    fn allowance(&self) -> u64 {
        let Some(rate) = self.settings.rate_limit else {
            return u64::MAX;
        };
        let per_subtask = rate / self.parallelism as f64;
        let due =
            (self.started.elapsed().as_secs_f64() * per_subtask) as u64 + 1 + self.emitted_before;
        due.saturating_sub(self.emitted)
    }
}

#[async_trait]
impl Source for NexmarkSource {
    fn splits(&self) -> Vec<SplitId> {
        vec![0]
    }

    fn split_name(&self, _split: SplitId) -> String {
        format!("nexmark-{}", self.subtask)
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        let remaining = self.quota.map_or(u64::MAX, |q| q - self.emitted);
        if remaining == 0 {
            return Ok(SourcePoll::End);
        }
        let allowed = self.allowance();
        if allowed == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Ok(SourcePoll::Pending);
        }
        let n = (self.settings.batch_size as u64)
            .min(remaining)
            .min(allowed) as usize;
        let batch = self.generator.next_batch(n, &self.schema)?;
        self.emitted += n as u64;
        Ok(SourcePoll::Batch { split: 0, batch })
    }

    /// The events emitted and the clock they were generated on: without
    /// `'base-time'` that clock is the wall clock at the job's first start,
    /// and a restored job must keep it, or the events after a restart would
    /// carry other timestamps than an uninterrupted run's.
    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let base_time = Arc::new(Int64Array::from(vec![
            self.settings.config.base_time as i64,
        ]));
        let table = POSITION.write_with(
            vec![Arc::new(Int64Array::from(vec![self.emitted as i64]))],
            vec![(Field::new("base_time", DataType::Int64, true), base_time)],
        )?;
        Ok(StateSnapshot {
            tables: vec![table],
        })
    }

    fn restore(&mut self, state: StateSnapshot) -> Result<()> {
        let Some(table) = POSITION.read(&state)? else {
            return Ok(());
        };
        let emitted = table
            .first::<Int64Type>("emitted")?
            .ok_or_else(|| EngineError::connector("nexmark", "bad checkpoint position"))?;
        // Checkpoints from before the base time was stored keep the
        // configured one.
        if table.has_column("base_time") {
            if let Some(base_time) = table.first::<Int64Type>("base_time")? {
                self.settings.config.base_time = base_time.max(0) as u64;
            }
        }
        self.emitted = emitted.max(0) as u64;
        self.emitted_before = self.emitted;
        self.started = Instant::now();
        self.generator = Self::generator(
            &self.settings,
            &self.wanted,
            self.subtask + self.emitted * self.parallelism,
            self.parallelism,
        );
        tracing::info!(
            subtask = self.subtask,
            base_time = self.settings.config.base_time,
            emitted = self.emitted,
            "nexmark generator restored: base time {}, {} events emitted",
            self.settings.config.base_time,
            self.emitted
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        new_null_array, Array, ArrayRef, Int32Array, StructArray, TimestampMillisecondArray,
    };
    use datafusion::arrow::record_batch::RecordBatch;
    use std::collections::{BTreeMap, BTreeSet};

    /// The events as the `nexmark` crate builds them, one struct of
    /// strings each, turned into a batch field by field: the reference
    /// the columnar generator must equal.
    mod reference {
        use std::collections::HashMap;
        use std::sync::Arc;

        use datafusion::arrow::array::{
            ArrayRef, Int32Array, Int64Builder, StringBuilder, StructArray,
            TimestampMillisecondArray,
        };
        use datafusion::arrow::buffer::NullBuffer;
        use datafusion::arrow::compute::cast;
        use datafusion::arrow::datatypes::{DataType, Field, Fields, SchemaRef};
        use datafusion::arrow::record_batch::RecordBatch;
        use nexmark::event::Event;
        use weir_engine::{EngineError, Result};

        use super::super::default_schema;

        /// Values of one generated column, before casting to the declared type.
        enum Values {
            Int(Int64Builder),
            Text(StringBuilder),
            Time(Vec<Option<i64>>),
        }

        impl Values {
            fn for_type(t: &DataType, n: usize) -> Values {
                match t {
                    DataType::Utf8 => Values::Text(StringBuilder::with_capacity(n, n * 16)),
                    DataType::Timestamp(..) => Values::Time(Vec::with_capacity(n)),
                    _ => Values::Int(Int64Builder::with_capacity(n)),
                }
            }

            fn finish(self) -> ArrayRef {
                match self {
                    Values::Int(mut b) => Arc::new(b.finish()),
                    Values::Text(mut b) => Arc::new(b.finish()),
                    Values::Time(v) => Arc::new(TimestampMillisecondArray::from(v)),
                }
            }

            fn null(&mut self) {
                match self {
                    Values::Int(b) => b.append_null(),
                    Values::Text(b) => b.append_null(),
                    Values::Time(v) => v.push(None),
                }
            }

            fn int(&mut self, v: i64) {
                if let Values::Int(b) = self {
                    b.append_value(v)
                }
            }

            fn text(&mut self, v: &str) {
                if let Values::Text(b) = self {
                    b.append_value(v)
                }
            }

            fn time(&mut self, v: u64) {
                if let Values::Time(t) = self {
                    t.push(Some(v as i64))
                }
            }
        }

        /// One value of a Nexmark event field.
        enum Value<'a> {
            Int(i64),
            Text(&'a str),
            Time(u64),
        }

        fn field_value<'a>(event: &'a Event, field: &str) -> Option<Value<'a>> {
            use Value::*;
            Some(match (event, field) {
                (Event::Person(p), "id") => Int(p.id as i64),
                (Event::Person(p), "name") => Text(&p.name),
                (Event::Person(p), "emailAddress") => Text(&p.email_address),
                (Event::Person(p), "creditCard") => Text(&p.credit_card),
                (Event::Person(p), "city") => Text(&p.city),
                (Event::Person(p), "state") => Text(&p.state),
                (Event::Person(p), "dateTime") => Time(p.date_time),
                (Event::Person(p), "extra") => Text(&p.extra),
                (Event::Auction(a), "id") => Int(a.id as i64),
                (Event::Auction(a), "itemName") => Text(&a.item_name),
                (Event::Auction(a), "description") => Text(&a.description),
                (Event::Auction(a), "initialBid") => Int(a.initial_bid as i64),
                (Event::Auction(a), "reserve") => Int(a.reserve as i64),
                (Event::Auction(a), "dateTime") => Time(a.date_time),
                (Event::Auction(a), "expires") => Time(a.expires),
                (Event::Auction(a), "seller") => Int(a.seller as i64),
                (Event::Auction(a), "category") => Int(a.category as i64),
                (Event::Auction(a), "extra") => Text(&a.extra),
                (Event::Bid(b), "auction") => Int(b.auction as i64),
                (Event::Bid(b), "bidder") => Int(b.bidder as i64),
                (Event::Bid(b), "price") => Int(b.price as i64),
                (Event::Bid(b), "channel") => Text(&b.channel),
                (Event::Bid(b), "url") => Text(&b.url),
                (Event::Bid(b), "dateTime") => Time(b.date_time),
                (Event::Bid(b), "extra") => Text(&b.extra),
                _ => return None,
            })
        }

        fn is_kind(event: &Event, column: &str) -> bool {
            matches!(
                (event, column),
                (Event::Person(_), "person")
                    | (Event::Auction(_), "auction")
                    | (Event::Bid(_), "bid")
            )
        }

        /// Builds a column of `field`'s declared type from `values`.
        fn finish_as(values: Values, field: &Field) -> Result<ArrayRef> {
            let array = values.finish();
            if array.data_type() == field.data_type() {
                Ok(array)
            } else {
                Ok(cast(&array, field.data_type())?)
            }
        }

        fn struct_column(events: &[Event], column: &str, fields: &Fields) -> Result<ArrayRef> {
            let n = events.len();
            let generated = default_schema();
            let generated = match generated
                .field_with_name(column)
                .map(|f| f.data_type().clone())
            {
                Ok(DataType::Struct(f)) => f,
                _ => {
                    return Err(EngineError::connector(
                        "nexmark",
                        format!("no row column {column}"),
                    ))
                }
            };
            let mut builders: HashMap<&str, Values> = fields
                .iter()
                .map(|f| {
                    let t = generated
                        .iter()
                        .find(|g| g.name() == f.name())
                        .map(|g| g.data_type().clone())
                        .unwrap_or(DataType::Utf8);
                    (f.name().as_str(), Values::for_type(&t, n))
                })
                .collect();
            let mut valid = Vec::with_capacity(n);
            for event in events {
                let present = is_kind(event, column);
                valid.push(present);
                for (name, builder) in builders.iter_mut() {
                    match (present, field_value(event, name)) {
                        (true, Some(Value::Int(v))) => builder.int(v),
                        (true, Some(Value::Text(v))) => builder.text(v),
                        (true, Some(Value::Time(v))) => builder.time(v),
                        _ => builder.null(),
                    }
                }
            }
            let children = fields
                .iter()
                .map(|f| {
                    let values = builders.remove(f.name().as_str()).ok_or_else(|| {
                        EngineError::connector("nexmark", format!("duplicate field {}", f.name()))
                    })?;
                    finish_as(values, f)
                })
                .collect::<Result<Vec<_>>>()?;
            let array =
                StructArray::try_new(fields.clone(), children, Some(NullBuffer::from(valid)))?;
            Ok(Arc::new(array))
        }

        pub fn events_to_batch(events: &[Event], schema: &SchemaRef) -> Result<RecordBatch> {
            let mut columns = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let column: ArrayRef = match (field.name().as_str(), field.data_type()) {
                    ("event_type", t) => {
                        let kinds: Int32Array = events
                            .iter()
                            .map(|e| {
                                Some(match e {
                                    Event::Person(_) => 0,
                                    Event::Auction(_) => 1,
                                    Event::Bid(_) => 2,
                                })
                            })
                            .collect();
                        let kinds: ArrayRef = Arc::new(kinds);
                        if t == &DataType::Int32 {
                            kinds
                        } else {
                            cast(&kinds, t)?
                        }
                    }
                    ("dateTime", _) => {
                        let mut values = Values::Time(Vec::with_capacity(events.len()));
                        for e in events {
                            values.time(e.timestamp());
                        }
                        finish_as(values, field)?
                    }
                    (name, DataType::Struct(fields)) => struct_column(events, name, fields)?,
                    (name, _) => {
                        return Err(EngineError::connector(
                            "nexmark",
                            format!("column '{name}' must be a ROW of the event's fields"),
                        ))
                    }
                };
                columns.push(column);
            }
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        }
    }

    fn source(events: u64, subtask: usize, parallelism: usize) -> NexmarkSource {
        let options = Options::new([
            ("events.num", events.to_string()),
            ("base-time", "0".to_string()),
        ]);
        NexmarkSource::new(
            settings(&options).unwrap(),
            default_schema(),
            Wanted::default_for(&default_schema()),
            subtask,
            parallelism,
        )
    }

    async fn drain(mut s: NexmarkSource) -> Vec<RecordBatch> {
        let mut out = vec![];
        loop {
            match s.poll().await.unwrap() {
                SourcePoll::Batch { batch, .. } => out.push(batch),
                SourcePoll::End => return out,
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn subtasks_split_the_events_and_proportions_hold() {
        let all: usize = drain(source(1000, 0, 1))
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(all, 1000);
        let mut parts = 0;
        let mut bids = 0;
        for i in 0..3 {
            for b in drain(source(1000, i, 3)).await {
                parts += b.num_rows();
                let kinds = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
                bids += kinds.values().iter().filter(|k| **k == 2).count();
            }
        }
        assert_eq!(parts, 1000);
        assert_eq!(bids, 920, "46 of every 50 events are bids");
    }

    /// A source on the wall clock (no `'base-time'`), restored in a later
    /// process, continues the first one's timestamps.
    #[tokio::test]
    async fn a_restored_generator_keeps_its_clock() {
        let wall_clock = || {
            let options = Options::new([
                ("events.num", "3000".to_string()),
                ("scan.batch-size", "500".to_string()),
            ]);
            NexmarkSource::new(
                settings(&options).unwrap(),
                default_schema(),
                Wanted::default_for(&default_schema()),
                0,
                1,
            )
        };
        let mut first = wall_clock();
        let mut before = Vec::new();
        while before.iter().map(RecordBatch::num_rows).sum::<usize>() < 1000 {
            if let SourcePoll::Batch { batch, .. } = first.poll().await.unwrap() {
                before.push(batch);
            }
        }
        let state = first.snapshot().unwrap();
        let uninterrupted = drain(first).await;

        std::thread::sleep(Duration::from_millis(20));
        let mut restarted = wall_clock();
        assert_ne!(
            restarted.settings.config.base_time,
            uninterrupted_base(&before),
            "a later process starts on another clock"
        );
        restarted.restore(state).unwrap();
        assert_eq!(drain(restarted).await, uninterrupted);
    }

    /// The time of the first event: the base time.
    fn uninterrupted_base(batches: &[RecordBatch]) -> u64 {
        let times = batches[0]
            .column_by_name("dateTime")
            .unwrap()
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        times.value(0) as u64
    }

    #[tokio::test]
    async fn generation_is_deterministic() {
        let a = drain(source(200, 0, 1)).await;
        let b = drain(source(200, 0, 1)).await;
        assert_eq!(a, b);
        let bid = a[0]
            .column(3)
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        assert!(bid.is_null(0), "event 0 is a person");
        assert!(bid.is_null(3), "events 1-3 are auctions");
        assert!(bid.is_valid(4), "event 4 is a bid");
    }

    /// Events `offset, offset + step, ...` of `config`, from the crate and
    /// from the columnar generator, as batches of `schema` of which the
    /// generator reads only `read_fields`.
    fn both(
        config: NexmarkConfig,
        offset: u64,
        step: u64,
        n: usize,
        schema: &SchemaRef,
        read_fields: &BTreeMap<String, BTreeSet<String>>,
    ) -> (RecordBatch, RecordBatch) {
        let events: Vec<nexmark::event::Event> = nexmark::EventGenerator::new(config.clone())
            .with_offset(offset)
            .with_step(step)
            .take(n)
            .collect();
        let expected = reference::events_to_batch(&events, schema).unwrap();
        let mut columnar = ColumnarGenerator::new(
            Arc::new(Model::new(config)),
            offset,
            step,
            Wanted::of(schema, read_fields),
        );
        let mut batches = Vec::new();
        // In several batches, so the generator's position carries over.
        for size in [n / 3, n / 3, n - 2 * (n / 3)] {
            batches.push(columnar.next_batch(size, schema).unwrap());
        }
        let actual = datafusion::arrow::compute::concat_batches(schema, &batches).unwrap();
        (expected, actual)
    }

    /// `batch` with the row fields not in `read_fields` null.
    fn only_read(
        batch: &RecordBatch,
        read_fields: &BTreeMap<String, BTreeSet<String>>,
    ) -> RecordBatch {
        let columns = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| match read_fields.get(field.name()) {
                Some(read) => {
                    let row = column.as_any().downcast_ref::<StructArray>().unwrap();
                    let (fields, children, nulls) = row.clone().into_parts();
                    let children = fields
                        .iter()
                        .zip(children)
                        .map(|(f, c)| match read.contains(f.name()) {
                            true => c,
                            false => new_null_array(f.data_type(), c.len()),
                        })
                        .collect();
                    Arc::new(StructArray::new(fields, children, nulls)) as ArrayRef
                }
                None => column.clone(),
            })
            .collect();
        RecordBatch::try_new(batch.schema(), columns).unwrap()
    }

    /// The columnar generator writes exactly the events of the `nexmark`
    /// crate: every option Weir exposes, subtask offsets and steps, and a
    /// declared schema with fewer fields, another order and other types.
    #[test]
    fn columnar_events_equal_the_crates() {
        let base = NexmarkConfig {
            base_time: 1_700_000_000_000,
            ..NexmarkConfig::default()
        };
        let configs = [
            base.clone(),
            NexmarkConfig {
                first_rate: 10_000_000,
                next_rate: 10_000_000,
                ..base.clone()
            },
            NexmarkConfig {
                first_rate: 5000,
                next_rate: 1000,
                rate_shape: nexmark::config::RateShape::Sine,
                rate_period: 10,
                ..base.clone()
            },
            NexmarkConfig {
                first_rate: 500,
                next_rate: 20,
                rate_shape: nexmark::config::RateShape::Square,
                rate_period: 3,
                ..base.clone()
            },
            NexmarkConfig {
                person_proportion: 1,
                auction_proportion: 1,
                bid_proportion: 1,
                ..base.clone()
            },
            NexmarkConfig {
                person_proportion: 10,
                auction_proportion: 5,
                bid_proportion: 85,
                ..base.clone()
            },
        ];
        for (i, config) in configs.iter().enumerate() {
            for (offset, step) in [(0, 1), (1, 3), (123_456, 2)] {
                let (expected, actual) = both(
                    config.clone(),
                    offset,
                    step,
                    3000,
                    &default_schema(),
                    &BTreeMap::new(),
                );
                assert_eq!(expected, actual, "config {i}, offset {offset}, step {step}");
            }
        }
        let partial = Arc::new(Schema::new(vec![
            Field::new(
                "dateTime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new(
                "bid",
                DataType::Struct(Fields::from(vec![
                    Field::new("price", DataType::Float64, true),
                    Field::new("auction", DataType::Int64, true),
                    Field::new("url", DataType::Utf8, true),
                ])),
                true,
            ),
            Field::new("event_type", DataType::Int64, true),
        ]));
        let (expected, actual) = both(base.clone(), 7, 1, 2000, &partial, &BTreeMap::new());
        assert_eq!(expected, actual, "a partial schema");
        // What a scan of Flink's DDL reads for a count of bids per auction:
        // of people and auctions only the time (for the computed
        // `dateTime`), of bids the auction and the time. The rest is null.
        let fields = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let read_fields = BTreeMap::from([
            ("person".to_string(), fields(&["dateTime"])),
            ("auction".to_string(), fields(&["dateTime"])),
            ("bid".to_string(), fields(&["auction", "dateTime"])),
        ]);
        let wanted = Wanted::of(&default_schema(), &read_fields);
        assert!(!wanted.person && !wanted.auction && wanted.bid && !wanted.bid_extra);
        let (expected, actual) = both(base, 0, 2, 3000, &default_schema(), &read_fields);
        let expected = only_read(&expected, &read_fields);
        assert_eq!(expected, actual, "row columns with only their time");
    }
}
