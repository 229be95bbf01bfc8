//! Early and late firing of window aggregates (Flink's
//! `table.exec.emit.*`), against the window oracle: the changelog a query
//! emits, applied row by row here, must end as the DataFusion batch answer
//! over the rows on time — with the allowed lateness added to the
//! watermark delay for late firing. Out-of-order input from two splits,
//! late rows, nulls, a hot key; parallelism 1 and 4.

mod common;

use common::*;

const AGGREGATES: &str = "count(*) AS n, sum(v) AS s, max(v) AS hi";
const QUERY: &str = "SELECT window_start, window_end, k, count(*) AS n, sum(v) AS s, max(v) AS hi \
     FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) \
     GROUP BY window_start, window_end, k";
const DELAY: i64 = 200;

fn input() -> Vec<Vec<Event>> {
    generate(
        7,
        2,
        Shape {
            rows: 3000,
            keys: 40,
            hot: 0.3,
            nulls: 0.05,
            step: 5,
            jitter: 900,
        },
    )
}

/// The changes a query emitted, as `(op, row)`, in order.
async fn changes(setup: &[String], query: &str) -> (Vec<(String, String)>, u64) {
    let mut results = start_query(setup, query).await;
    assert_eq!(results.schema().field(0).name(), "op", "an updating result");
    let mut out = Vec::new();
    while let Some(batch) = results.next_batch().await.unwrap() {
        let ops = batch.project(&[0]).unwrap();
        let data = batch
            .project(&(1..batch.num_columns()).collect::<Vec<_>>())
            .unwrap();
        // One row at a time keeps each op next to its row.
        for row in 0..batch.num_rows() {
            let op = canonical_rows(&[ops.slice(row, 1)]).remove(0);
            let row = canonical_rows(&[data.slice(row, 1)]).remove(0);
            out.push((op, row));
        }
    }
    (out, results.metrics().late_rows())
}

/// Applies a changelog: `+I`/`+U` add a row, `-U`/`-D` take out an equal
/// row that must be there. The rows left, sorted.
fn apply(changes: &[(String, String)]) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for (op, row) in changes {
        if op.starts_with('+') {
            rows.push(row.clone());
        } else {
            let at = rows
                .iter()
                .position(|r| r == row)
                .unwrap_or_else(|| panic!("{op} {row} retracts a row never emitted"));
            rows.remove(at);
        }
    }
    rows.sort();
    rows
}

fn setup(dir: &std::path::Path, parallelism: usize, emit: &[(&str, &str)]) -> Vec<String> {
    let mut setup = vec![format!("SET 'parallelism.default' = '{parallelism}'")];
    for (key, value) in emit {
        setup.push(format!("SET '{key}' = '{value}'"));
    }
    setup.push(stream_ddl(dir, DELAY, 16, ""));
    setup
}

async fn expected(splits: &[Vec<Event>], delay: i64) -> (Vec<String>, u64) {
    let (pairs, late) = on_time_pairs(splits, delay, |t| hop_windows(t, 1000, 1000));
    let sql = format!(
        "SELECT window_start, window_end, k, {AGGREGATES} FROM w GROUP BY window_start, window_end, k"
    );
    (oracle(&pairs, &sql).await, late)
}

/// Early firing after every batch: windows emit as rows come (`+I`, then
/// `-U`/`+U` pairs), and the changelog ends as the windows of a query
/// without early firing, late rows included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn early_firing_ends_as_the_windows_without_it() {
    let splits = input();
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &splits);
    let (want, late) = expected(&splits, DELAY).await;
    assert!(late > 0, "the input should have late rows");
    for parallelism in [1, 4] {
        let emit = [
            ("table.exec.emit.early-fire.enabled", "true"),
            ("table.exec.emit.early-fire.delay", "0"),
        ];
        let (changes, late_rows) = changes(&setup(dir.path(), parallelism, &emit), QUERY).await;
        let updates = changes.iter().filter(|(op, _)| op == "-U").count();
        assert!(
            updates > want.len(),
            "windows should update as rows come ({updates} updates, {} rows)",
            want.len()
        );
        assert_eq!(changes.iter().filter(|(op, _)| op == "+U").count(), updates);
        assert_eq!(apply(&changes), want, "parallelism {parallelism}");
        assert_eq!(late_rows, late);
    }
}

/// Allowed lateness: rows up to that far behind the watermark still update
/// their window after it fired; the changelog ends as the windows of a
/// watermark that much later, and only the rows later than that are late.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_firing_takes_the_rows_within_the_allowed_lateness() {
    let splits = input();
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &splits);
    let lateness = 300;
    let (want, late) = expected(&splits, DELAY + lateness).await;
    let (strict, _) = expected(&splits, DELAY).await;
    assert_ne!(want, strict, "some rows are late only without lateness");
    assert!(late > 0, "some rows are later than the lateness");
    for (parallelism, late_fire) in [(1, None), (4, Some("0"))] {
        let mut emit = vec![("table.exec.emit.allow-lateness", "300 ms")];
        if let Some(delay) = late_fire {
            emit.push(("table.exec.emit.late-fire.enabled", "true"));
            emit.push(("table.exec.emit.late-fire.delay", delay));
        }
        let (changes, late_rows) = changes(&setup(dir.path(), parallelism, &emit), QUERY).await;
        assert!(changes.iter().any(|(op, _)| op == "-U"), "late updates");
        assert_eq!(apply(&changes), want, "parallelism {parallelism}");
        assert_eq!(late_rows, late);
    }
}

/// Settings Flink refuses are refused here too, with the fix.
#[tokio::test]
async fn emit_settings_that_cannot_work_are_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &input());
    let session_query = "SELECT window_start, k, count(*) AS n \
         FROM TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' SECOND)) \
         GROUP BY window_start, window_end, k";
    // (settings, query, what the error says, what its hint names)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str, &'a str);
    let cases: [Case; 3] = [
        (
            &[("table.exec.emit.early-fire.enabled", "true")],
            QUERY,
            "early firing is enabled without a delay",
            "table.exec.emit.early-fire.delay",
        ),
        (
            &[
                ("table.exec.emit.late-fire.enabled", "true"),
                ("table.exec.emit.late-fire.delay", "1s"),
            ],
            QUERY,
            "no lateness is allowed",
            "table.exec.emit.allow-lateness",
        ),
        (
            &[
                ("table.exec.emit.early-fire.enabled", "true"),
                ("table.exec.emit.early-fire.delay", "1s"),
            ],
            session_query,
            "session window",
            "fires once",
        ),
    ];
    for (emit, query, message, hint) in cases {
        let mut session = weir::Session::new();
        for sql in setup(dir.path(), 1, emit) {
            session.sql(&sql).await.unwrap();
        }
        let error = match session.query(query).await {
            Ok(_) => panic!("{emit:?} should be refused"),
            Err(e) => e.render(),
        };
        assert!(error.contains(message), "{error}");
        assert!(error.contains(hint), "{error}");
    }
}

/// EXPLAIN names the firing, and the window aggregate runs in one phase.
#[tokio::test]
async fn explain_shows_the_firing() {
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &input());
    let mut session = weir::Session::new();
    let emit = [
        ("table.exec.emit.early-fire.enabled", "true"),
        ("table.exec.emit.early-fire.delay", "2s"),
        ("table.exec.emit.allow-lateness", "1 min"),
    ];
    for sql in setup(dir.path(), 4, &emit) {
        session.sql(&sql).await.unwrap();
    }
    let plan = match session
        .sql(&format!("EXPLAIN {QUERY}"))
        .await
        .unwrap()
        .pop()
    {
        Some(weir::Output::Explain(plan)) => plan,
        other => panic!("{other:?}"),
    };
    assert!(
        plan.contains("fires early every 2s, late at once within 1min"),
        "{plan}"
    );
    assert!(
        plan.contains("retract by [window_start, window_end, k]"),
        "{plan}"
    );
    assert!(!plan.contains("local phase"), "{plan}");
}
