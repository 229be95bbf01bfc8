//! Parser tests over Flink's forms.

use weir_sql::*;

fn one(sql: &str) -> Statement {
    parse_statement(sql).unwrap_or_else(|e| panic!("{}", e.render(sql)))
}

#[test]
fn nexmark_ddl_parses() {
    let sql = include_str!("../../tests/nexmark-flink/ddl_gen.sql")
        .replace("${TPS}", "10")
        .replace("${EVENTS_NUM}", "10")
        .replace("${PERSON_PROPORTION}", "1")
        .replace("${AUCTION_PROPORTION}", "3")
        .replace("${BID_PROPORTION}", "46");
    let Statement::CreateStream(s) = one(&sql) else {
        panic!()
    };
    assert_eq!(s.name.to_string(), "datagen");
    assert_eq!(s.columns.len(), 5);
    let ColumnKind::Physical {
        data_type: ColumnType::Row(fields),
        ..
    } = &s.columns[1].kind
    else {
        panic!()
    };
    assert_eq!(fields.len(), 8);
    assert_eq!(fields[6].0.value, "dateTime");
    assert!(matches!(s.columns[4].kind, ColumnKind::Computed(_)));
    assert_eq!(s.watermark.as_ref().unwrap().column.value, "dateTime");
    assert_eq!(s.option("connector"), Some("nexmark"));
}

#[test]
fn nested_rows_close_with_shift_right() {
    let Statement::CreateStream(s) = one("CREATE TABLE t (a ROW<b ROW<c INT>>, d ARRAY<ROW<e BIGINT>>, m MAP<STRING, INT>) WITH ('connector'='x')") else { panic!() };
    assert_eq!(s.columns.len(), 3);
    assert_eq!(
        kind_type(&s.columns[0]).unwrap().to_string(),
        "ROW<b ROW<c INT>>"
    );
    assert_eq!(
        kind_type(&s.columns[1]).unwrap().to_string(),
        "ARRAY<ROW<e BIGINT>>"
    );
}

fn kind_type(column: &Column) -> Option<&ColumnType> {
    match &column.kind {
        ColumnKind::Physical { data_type, .. } => Some(data_type),
        _ => None,
    }
}

#[test]
fn window_tvfs_become_placeholders() {
    let Statement::Query(q) = one("SELECT window_start, count(*) FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end") else { panic!() };
    assert_eq!(q.windows.len(), 1);
    assert_eq!(
        q.windows[0].kind,
        WindowKind::Hop {
            slide: 2000,
            size: 10_000,
            offset: 0
        }
    );
    assert_eq!(q.windows[0].time_column.value, "dateTime");
    assert!(q.query.to_string().contains("__weir_window_0"));

    let Statement::Query(q) = one("SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(ts), INTERVAL '10' SECOND))") else { panic!() };
    assert_eq!(q.windows[0].kind, WindowKind::Session { gap: 10_000 });
    assert_eq!(q.windows[0].partition_by[0].value, "bidder");

    let Statement::Query(q) = one("SELECT * FROM TABLE(CUMULATE(DATA => TABLE t, TIMECOL => DESCRIPTOR(ts), STEP => INTERVAL '1' MINUTE, MAX_SIZE => INTERVAL '1' HOUR))") else { panic!() };
    assert_eq!(
        q.windows[0].kind,
        WindowKind::Cumulate {
            step: 60_000,
            max_size: 3_600_000,
            offset: 0
        }
    );
}

#[test]
fn legacy_group_windows_are_rewritten() {
    let sql = include_str!("../../tests/nexmark-flink/q11.sql");
    let statements = parse(sql).unwrap();
    let Statement::Insert(insert) = &statements[1].statement else {
        panic!()
    };
    let w = &insert.query.windows[0];
    assert_eq!(w.kind, WindowKind::Session { gap: 10_000 });
    assert!(w.partition_by_group_keys);
    let text = insert.query.query.to_string();
    assert!(text.contains("window_start AS starttime"), "{text}");
    assert!(text.contains("FROM __weir_window_0 B"), "{text}");
    assert!(
        text.contains("GROUP BY B.bidder, window_start, window_end"),
        "{text}"
    );
}

#[test]
fn errors_point_at_line_and_column() {
    let sql = "CREATE STREAM s (\n  a BIGINT,\n  b BIGNT INT\n) WITH ('connector' = 'x')";
    let err = parse(sql).unwrap_err();
    assert_eq!(err.position.map(|p| p.line), Some(3), "{err}");
    let rendered = err.render(sql);
    assert!(rendered.contains("3 |   b BIGNT INT"), "{rendered}");

    let err = parse("SELECT * FROM TABLE(TUMBLE(TABLE t, ts, INTERVAL '1' SECOND))").unwrap_err();
    assert!(err.message.contains("DESCRIPTOR"), "{err}");
    assert_eq!(
        err.position,
        Some(Position {
            line: 1,
            column: 37
        })
    );

    let err = parse("SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts)))").unwrap_err();
    assert!(err.message.contains("missing its size"), "{err}");
}

#[test]
fn statements_split_and_keep_text() {
    let all = parse("SET 'parallelism.default' = '4';\nSHOW STREAMS; describe bid ; EXPLAIN SELECT 1; STOP JOB 'abc'").unwrap();
    assert_eq!(all.len(), 5);
    assert!(
        matches!(&all[0].statement, Statement::Set { key: Some(k), value: Some(v) } if k == "parallelism.default" && v == "4")
    );
    assert!(matches!(
        all[1].statement,
        Statement::Show(ShowObject::Streams)
    ));
    assert!(matches!(&all[2].statement, Statement::Describe(n) if n.to_string() == "bid"));
    assert!(matches!(all[3].statement, Statement::Explain(_)));
    assert!(matches!(&all[4].statement, Statement::StopJob(id) if id == "abc"));
    assert_eq!(all[1].text, "SHOW STREAMS");
    assert!(is_complete("SELECT 1;"));
    assert!(!is_complete("SELECT ';'"));
}

#[test]
fn a_statement_set_is_one_statement_of_its_inserts() {
    for sql in [
        "SET 'a' = 'b';\nEXECUTE STATEMENT SET\nBEGIN\n  INSERT INTO x SELECT * FROM s;\n  INSERT INTO y SELECT (a) FROM s WHERE b = ';';\nEND;\nSELECT 1;",
        "SET 'a' = 'b';\nBEGIN STATEMENT SET;\n  INSERT INTO x SELECT * FROM s;\n  INSERT INTO y SELECT (a) FROM s WHERE b = ';';\nEND;\nSELECT 1;",
    ] {
        let statements = parse(sql).unwrap_or_else(|e| panic!("{}", e.render(sql)));
        assert_eq!(statements.len(), 3, "{sql}");
        let Statement::StatementSet(inserts) = &statements[1].statement else {
            panic!("{:?}", statements[1].statement)
        };
        let sinks: Vec<String> = inserts.iter().map(|i| i.sink.to_string()).collect();
        assert_eq!(sinks, ["x", "y"]);
        assert!(matches!(statements[2].statement, Statement::Query(_)));
    }
    assert!(!is_complete(
        "EXECUTE STATEMENT SET BEGIN\n INSERT INTO x SELECT 1;"
    ));
    assert!(is_complete(
        "EXECUTE STATEMENT SET BEGIN\n INSERT INTO x SELECT 1;\nEND;"
    ));
    assert!(!is_complete("BEGIN STATEMENT SET;"));
}

#[test]
fn a_where_on_an_over_column_of_its_own_select_filters_its_rows() {
    let Statement::Query(query) = one(
        "SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t WHERE rn <= 1 AND v > 3",
    ) else {
        panic!()
    };
    assert_eq!(
        query.query.to_string(),
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t WHERE v > 3) WHERE rn <= 1"
    );
    // A WHERE on the FROM's columns only is left as it is.
    let Statement::Query(query) =
        one("SELECT k, SUM(v) OVER (ORDER BY ts) AS s FROM t WHERE v > 3")
    else {
        panic!()
    };
    assert_eq!(
        query.query.to_string(),
        "SELECT k, SUM(v) OVER (ORDER BY ts) AS s FROM t WHERE v > 3"
    );
}
