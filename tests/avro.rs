//! Avro through Kafka (librdkafka's mock cluster) with a schema registry
//! (`common::registry`, the REST API's part Weir calls): a producer that
//! moves through schema versions mid-topic, and rows written by Weir read
//! back. Records are written here with arrow-avro directly, under writer
//! schemas the declared columns do not match.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_avro::schema::{FingerprintStrategy, SCHEMA_METADATA_KEY};
use arrow_avro::writer::format::AvroSoeFormat;
use arrow_avro::writer::WriterBuilder;
use common::kafka::*;
use common::registry::Registry;
use common::*;
use weir::arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use weir::arrow::record_batch::RecordBatch;

/// Rows written with writer schema `text` under registry id `id`, one
/// framed record each.
fn framed(id: u32, text: &str, columns: Vec<(&str, ArrayRef)>) -> Vec<Vec<u8>> {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut metadata = HashMap::new();
    metadata.insert(SCHEMA_METADATA_KEY.to_string(), text.to_string());
    let schema = batch.schema().as_ref().clone().with_metadata(metadata);
    let mut encoder = WriterBuilder::new(schema)
        .with_fingerprint_strategy(FingerprintStrategy::Id(id))
        .build_encoder::<AvroSoeFormat>()
        .unwrap();
    encoder.encode(&batch).unwrap();
    encoder.flush().iter().map(|r| r.to_vec()).collect()
}

/// An Avro object container file of `columns`, written with schema
/// `text` as another program would.
fn avro_file(text: &str, columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut metadata = HashMap::new();
    metadata.insert(SCHEMA_METADATA_KEY.to_string(), text.to_string());
    let schema = batch.schema().as_ref().clone().with_metadata(metadata);
    let mut writer = arrow_avro::writer::AvroWriter::new(Vec::new(), schema).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    writer.into_inner()
}

const V1: &str = r#"{"type":"record","name":"Bid","namespace":"shop","fields":[
    {"name":"k","type":"int"},{"name":"name","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Bid","namespace":"shop","fields":[
    {"name":"k","type":"long"},{"name":"name","type":"string"},
    {"name":"score","type":"float"},{"name":"channel","type":"string"}]}"#;
const V3: &str = r#"{"type":"record","name":"Bid","namespace":"shop","fields":[
    {"name":"k","type":"long"},{"name":"score","type":"double"}]}"#;
const V4: &str = r#"{"type":"record","name":"Bid","namespace":"shop","fields":[
    {"name":"k","type":"string"},{"name":"name","type":"string"}]}"#;

/// A producer moves through three compatible versions (a field added, a
/// field removed and a type widened), then an incompatible one: the rows
/// of the first three come out as the declared columns, the last
/// version's records are dead letters naming the schema id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_whose_producer_evolves_its_schema_reads_with_dead_letters_for_the_break() {
    let registry = Registry::start();
    let (_cluster, bootstrap) = mock_cluster(&[("bids", 1)]);
    let ids: Vec<u32> = [V1, V2, V3, V4]
        .iter()
        .map(|v| registry.register("bids-value", v))
        .collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    let mut records = framed(
        1,
        V1,
        vec![
            ("k", Arc::new(Int32Array::from(vec![1, 2]))),
            ("name", Arc::new(StringArray::from(vec!["a", "b"]))),
        ],
    );
    records.extend(framed(
        2,
        V2,
        vec![
            ("k", Arc::new(Int64Array::from(vec![3]))),
            ("name", Arc::new(StringArray::from(vec!["c"]))),
            ("score", Arc::new(Float32Array::from(vec![1.5]))),
            ("channel", Arc::new(StringArray::from(vec!["web"]))),
        ],
    ));
    records.extend(framed(
        3,
        V3,
        vec![
            ("k", Arc::new(Int64Array::from(vec![4, 5]))),
            ("score", Arc::new(Float64Array::from(vec![2.25, 3.0]))),
        ],
    ));
    records.extend(framed(
        4,
        V4,
        vec![
            ("k", Arc::new(StringArray::from(vec!["six", "seven"]))),
            ("name", Arc::new(StringArray::from(vec!["f", "g"]))),
        ],
    ));
    produce_bytes(&producer(&bootstrap), "bids", &records).await;

    let dead = tempfile::tempdir().unwrap();
    let ddl = format!(
        "CREATE STREAM bids (k BIGINT NOT NULL, name STRING, score DOUBLE) WITH ('connector' = 'kafka',
           'topic' = 'bids', 'properties.bootstrap.servers' = '{bootstrap}',
           'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
           'format' = 'avro-confluent', 'avro-confluent.url' = '{}',
           'bad-data.path' = '{}')",
        registry.url,
        dead.path().display()
    );
    let run = run_weir(&[ddl], "SELECT k, name, score FROM bids").await;
    assert_eq!(
        run.rows,
        [
            "1 | a | NULL",
            "2 | b | NULL",
            "3 | c | 1.500000",
            "4 | NULL | 2.250000",
            "5 | NULL | 3.000000",
        ]
    );
    let mut letters = dead_letters(dead.path());
    letters.sort_by_key(|l| l["location"].as_str().unwrap_or_default().to_string());
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, offset) in letters.iter().zip([5, 6]) {
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .starts_with("schema id 4: "),
            "{letter}"
        );
        assert_eq!(letter["location"], format!("bids-0@{offset}"));
    }
}

/// Rows written by Weir as `avro-confluent` register one schema under
/// `<topic>-value` and read back as they were; plain `avro` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_written_as_avro_read_back_and_register_their_schema() {
    let registry = Registry::start();
    let (_cluster, bootstrap) = mock_cluster(&[("confluent", 1), ("plain", 1), ("keyed", 1)]);
    let rows = "(1, 'a', TIMESTAMP '2024-01-01 00:00:01.250', 1.5), \
                (2, CAST(NULL AS VARCHAR), TIMESTAMP '2024-01-01 00:00:02', CAST(NULL AS DOUBLE)), \
                (3, 'c', CAST(NULL AS TIMESTAMP(3)), -0.25)";
    let table = |name: &str, topic: &str, format: &str| {
        format!(
            "CREATE TABLE {name} (id BIGINT, name STRING, ts TIMESTAMP(3), x DOUBLE) WITH (
               'connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
               {format})"
        )
    };
    let formats = [
        (
            "confluent",
            format!(
                "'format' = 'avro-confluent', 'avro-confluent.url' = '{}'",
                registry.url
            ),
        ),
        ("plain", "'format' = 'avro'".to_string()),
        (
            "keyed",
            format!(
                "'key.format' = 'avro-confluent', 'key.avro-confluent.url' = '{0}', 'key.fields' = 'id',
                 'value.format' = 'avro-confluent', 'value.avro-confluent.url' = '{0}',
                 'value.fields-include' = 'EXCEPT_KEY'",
                registry.url
            ),
        ),
    ];
    for (topic, format) in &formats {
        let mut session = weir::Session::new();
        session.sql(&table("out", topic, format)).await.unwrap();
        run_job(
            &mut session,
            &format!("INSERT INTO out SELECT * FROM (VALUES {rows}) AS t(id, name, ts, x)"),
        )
        .await;
        let back = run_weir(&[table("back", topic, format)], "SELECT * FROM back").await;
        assert_eq!(
            back.rows,
            [
                "1 | a | 2024-01-01T00:00:01.250 | 1.500000",
                "2 | NULL | 2024-01-01T00:00:02 | NULL",
                "3 | c | NULL | -0.250000",
            ],
            "{topic}"
        );
    }
    // One schema per subject; a key's and a value's columns apart.
    let fields = |subject: &str| -> Vec<String> {
        let versions = registry.versions(subject);
        assert_eq!(versions.len(), 1, "{subject}: {versions:?}");
        let schema: serde_json::Value = serde_json::from_str(&versions[0]).unwrap();
        schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(fields("keyed-key"), ["id"]);
    assert_eq!(fields("keyed-value"), ["name", "ts", "x"]);
    assert_eq!(fields("confluent-value"), ["id", "name", "ts", "x"]);
}

/// `CREATE TABLE ... LIKE 'subject'` takes the columns of the subject's
/// latest schema (a watermark declared over one of them); DESCRIBE shows
/// them, SHOW TABLES names the subject, and the rows read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_like_a_subject_takes_its_columns_from_the_registry() {
    let registry = Registry::start();
    let (_cluster, bootstrap) = mock_cluster(&[("clicks", 1)]);
    let schema = r#"{"type":"record","name":"Click","fields":[
        {"name":"user","type":"long"},
        {"name":"page","type":["null","string"],"default":null},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    let id = registry.register("clicks-value", schema);
    let at = weir::arrow::array::TimestampMillisecondArray::from(vec![1_000, 2_500])
        .with_timezone("+00:00");
    let records = framed(
        id,
        schema,
        vec![
            ("user", Arc::new(Int64Array::from(vec![7, 8]))),
            ("page", Arc::new(StringArray::from(vec![Some("/"), None]))),
            ("at", Arc::new(at)),
        ],
    );
    produce_bytes(&producer(&bootstrap), "clicks", &records).await;
    let ddl = format!(
        "CREATE TABLE clicks (WATERMARK FOR `at` AS `at` - INTERVAL '1' SECOND) WITH (
           'connector' = 'kafka', 'topic' = 'clicks', 'properties.bootstrap.servers' = '{bootstrap}',
           'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
           'format' = 'avro-confluent', 'avro-confluent.url' = '{}') LIKE 'clicks-value'",
        registry.url
    );
    let mut session = weir::Session::new();
    if let Err(e) = session.sql(&ddl).await {
        panic!("{}", e.render());
    }
    let table = |output: Vec<weir::Output>| match output.into_iter().next() {
        Some(weir::Output::Rows(rows)) => canonical_rows(&[rows]),
        other => panic!("{other:?}"),
    };
    let tables = match session.sql("DESCRIBE clicks").await.unwrap().pop() {
        Some(weir::Output::Tables(tables)) => tables,
        other => panic!("{other:?}"),
    };
    let described: Vec<(String, Vec<String>)> = tables
        .into_iter()
        .map(|(title, rows)| (title, canonical_rows(&[rows])))
        .collect();
    let expected = [
        (
            "columns",
            vec![
                "at | TIMESTAMP(3) | WATERMARK AS `at` - INTERVAL '1' SECOND",
                "page | STRING | ",
                "user | BIGINT | ",
            ],
        ),
        (
            "stream",
            vec![
                "connector | kafka",
                "format | avro-confluent",
                "schema subject | clicks-value",
            ],
        ),
    ]
    .map(|(title, rows)| {
        (
            title.to_string(),
            rows.into_iter().map(str::to_string).collect(),
        )
    });
    assert_eq!(described, expected);
    let shown = table(session.sql("SHOW TABLES").await.unwrap());
    assert!(
        shown[0].contains("avro-confluent (subject clicks-value)"),
        "{shown:?}"
    );
    let run = run_weir(&[ddl], "SELECT `user`, page, `at` FROM clicks").await;
    assert_eq!(
        run.rows,
        [
            "7 | / | 1970-01-01T00:00:01",
            "8 | NULL | 1970-01-01T00:00:02.500"
        ]
    );

    // An unknown subject is an error at the LIKE, with the fix.
    let missing = format!(
        "CREATE TABLE nothing WITH ('connector' = 'kafka', 'topic' = 'clicks',
           'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'avro-confluent',
           'avro-confluent.url' = '{}') LIKE 'nothing-value'",
        registry.url
    );
    let error = session.sql(&missing).await.unwrap_err().render();
    assert!(error.contains("subject 'nothing-value'"), "{error}");
    assert!(error.contains("404"), "{error}");
}

const ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"com.acme","fields":[
    {"name":"city","type":"string"},{"name":"zip","type":["null","int"],"default":null}]}"#;
/// Takes `Address` from subject `address` (a schema reference): by its
/// short name in its namespace, then by its full name.
const CUSTOMER: &str = r#"{"type":"record","name":"Customer","namespace":"com.acme","fields":[
    {"name":"id","type":"long"},{"name":"home","type":"Address"},
    {"name":"work","type":["null","com.acme.Address"],"default":null}]}"#;

/// A schema that refers to a type of another subject (Confluent's schema
/// references): `LIKE` the subject declares the referred record's fields
/// as a ROW, and records written with the schema read, the type used twice
/// (the second time by name).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schema_that_refers_to_another_subject_reads_with_its_types() {
    use weir::arrow::array::{Array, StructArray};
    use weir::arrow::buffer::NullBuffer;
    use weir::arrow::datatypes::{DataType, Field, Fields};
    let registry = Registry::start();
    let (_cluster, bootstrap) = mock_cluster(&[("customers", 1)]);
    registry.register("address", ADDRESS);
    let id = registry.register_with(
        "customers-value",
        CUSTOMER,
        None,
        serde_json::json!([{"name": "com.acme.Address", "subject": "address", "version": 1}]),
    );
    // The producer writes with the schema written out in full.
    let whole = CUSTOMER.replace(r#""type":"Address""#, &format!(r#""type":{ADDRESS}"#));
    let fields = Fields::from(vec![
        Field::new("city", DataType::Utf8, false),
        Field::new("zip", DataType::Int32, true),
    ]);
    let address = |cities: Vec<&str>, zips: Vec<Option<i32>>, valid: Option<Vec<bool>>| {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(cities)),
            Arc::new(Int32Array::from(zips)),
        ];
        StructArray::new(fields.clone(), columns, valid.map(NullBuffer::from))
    };
    let home = address(vec!["Oslo", "Bergen"], vec![Some(150), None], None);
    let work = address(
        vec!["Oslo", ""],
        vec![Some(151), None],
        Some(vec![true, false]),
    );
    assert_eq!(work.null_count(), 1);
    let records = framed(
        id,
        &whole,
        vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2]))),
            ("home", Arc::new(home)),
            ("work", Arc::new(work)),
        ],
    );
    produce_bytes(&producer(&bootstrap), "customers", &records).await;
    let dead = tempfile::tempdir().unwrap();
    let ddl = format!(
        "CREATE TABLE customers WITH (
           'connector' = 'kafka', 'topic' = 'customers', 'properties.bootstrap.servers' = '{bootstrap}',
           'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
           'format' = 'avro-confluent', 'avro-confluent.url' = '{}', 'bad-data.path' = '{}')
         LIKE 'customers-value'",
        registry.url,
        dead.path().display()
    );
    let run = run_weir(&[ddl], "SELECT * FROM customers").await;
    assert_eq!(dead_letters(dead.path()), Vec::<serde_json::Value>::new());
    assert_eq!(
        run.rows,
        [
            "1 | {city: Oslo, zip: 150} | {city: Oslo, zip: 151}",
            "2 | {city: Bergen, zip: NULL} | NULL"
        ]
    );
}

/// Avro files: rows written by the filesystem sink read back as they
/// were, from the folder and from one file; a file written by another
/// program under an older schema (an `int` key, no `x`) resolves against
/// the declared columns; one whose schema cannot be read names the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn avro_files_round_trip_and_resolve_older_schemas() {
    let out = tempfile::tempdir().unwrap();
    let columns = "(id BIGINT, name STRING, ts TIMESTAMP(3), x DOUBLE)";
    let table = |name: &str, path: &str| {
        format!(
            "CREATE TABLE {name} {columns} WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'avro')"
        )
    };
    let dir = out.path().display().to_string();
    let mut session = weir::Session::new();
    session.sql(&table("files", &dir)).await.unwrap();
    run_job(
        &mut session,
        "INSERT INTO files SELECT * FROM (VALUES \
           (1, 'a', TIMESTAMP '2024-01-01 00:00:01.250', 1.5), \
           (2, CAST(NULL AS VARCHAR), CAST(NULL AS TIMESTAMP(3)), CAST(NULL AS DOUBLE))) AS t(id, name, ts, x)",
    )
    .await;
    let written = [
        "1 | a | 2024-01-01T00:00:01.250 | 1.500000",
        "2 | NULL | NULL | NULL",
    ];
    let back = run_weir(&[table("back", &dir)], "SELECT * FROM back").await;
    assert_eq!(back.rows, written);
    let file = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "avro"))
        .expect("a part file");
    let one = run_weir(
        &[table("one", &file.display().to_string())],
        "SELECT * FROM one",
    )
    .await;
    assert_eq!(one.rows, written);

    // Another program's file under an older schema.
    let older = tempfile::tempdir().unwrap();
    let schema = r#"{"type":"record","name":"Old","fields":[
        {"name":"id","type":"int"},{"name":"name","type":"string"},{"name":"gone","type":"string"}]}"#;
    let file = avro_file(
        schema,
        vec![
            ("id", Arc::new(Int32Array::from(vec![7]))),
            ("name", Arc::new(StringArray::from(vec!["g"]))),
            ("gone", Arc::new(StringArray::from(vec!["-"]))),
        ],
    );
    std::fs::write(older.path().join("old.avro"), file).unwrap();
    let path = older.path().display().to_string();
    let old = run_weir(&[table("old", &path)], "SELECT * FROM old").await;
    assert_eq!(old.rows, ["7 | g | NULL | NULL"]);

    // A key that became text cannot be read as BIGINT.
    let broken = tempfile::tempdir().unwrap();
    let text = r#"{"type":"record","name":"New","fields":[{"name":"id","type":"string"}]}"#;
    let file = avro_file(
        text,
        vec![("id", Arc::new(StringArray::from(vec!["eight"])))],
    );
    std::fs::write(broken.path().join("new.avro"), file).unwrap();
    let mut session = weir::Session::new();
    let path = broken.path().display().to_string();
    session.sql(&table("new", &path)).await.unwrap();
    let error = match session.query("SELECT * FROM new").await {
        Ok(results) => results.collect().await.unwrap_err().render(),
        Err(e) => e.render(),
    };
    assert!(error.contains("new.avro"), "{error}");
    assert!(
        error.contains("cannot be read as the declared columns"),
        "{error}"
    );
}
