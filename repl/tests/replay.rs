//! Dead-letter replay: records whose field changed type upstream land in
//! the dead letters; after the column is redeclared, a `dead-letter`
//! stream (or `weir replay-dead-letters`) pushes them through the new
//! decoder into the output once, even when the replay runs again.

mod common;

use std::path::Path;
use std::process::Command;

fn weir_run(sql: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--format", "csv", "-e", sql])
        .output()
        .unwrap()
}

fn succeeds(sql: &str) {
    let output = weir_run(sql);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Auction `i`'s line: its price a number, or for every tenth auction
/// (from 3) a decimal string, as a producer that changed the field's type
/// writes it; auction 57's price is not a number at all.
fn line(i: i64) -> String {
    match i {
        57 => format!("{{\"auction\": {i}, \"price\": \"n/a\"}}\n"),
        i if i % 10 == 3 => format!("{{\"auction\": {i}, \"price\": \"{i}.50\"}}\n"),
        i => format!("{{\"auction\": {i}, \"price\": {}}}\n", i * 10),
    }
}

/// The output rows of auctions `0..n` once the changed ones are replayed:
/// every auction but 57, priced as [`line`] wrote it.
fn all_but_the_bad_one(n: i64) -> Vec<String> {
    let mut rows: Vec<String> = (0..n)
        .filter(|i| *i != 57)
        .map(|i| match i % 10 {
            3 => format!("{i},{i}.5"),
            _ => format!("{i},{}.0", i * 10),
        })
        .collect();
    rows.sort();
    rows
}

fn output_rows(out: &Path) -> Vec<String> {
    common::csv_rows(weir_run(&format!(
        "CREATE STREAM back (auction BIGINT, price DOUBLE)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         SELECT auction, price FROM back;",
        out.display()
    )))
}

#[test]
fn replayed_dead_letters_arrive_once_through_the_fixed_decoder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    // Two files: letters carry the file and line they were read at.
    let (first, second): (Vec<i64>, Vec<i64>) = (0..200).partition(|i| i % 2 == 0);
    for (name, ids) in [("a.jsonl", first), ("b.jsonl", second)] {
        let text: String = ids.into_iter().map(line).collect();
        std::fs::write(input.join(name), text).unwrap();
    }
    let (dlq, dlq_again, out) = (dir.join("dlq"), dir.join("dlq-again"), dir.join("out"));
    std::fs::create_dir_all(&out).unwrap();

    // The job as it was: prices are BIGINT, the changed records are dead.
    succeeds(&format!(
        "SET 'execution.checkpointing.interval' = '200ms';
         SET 'state.checkpoints.dir' = '{chk}';
         SET 'pipeline.name' = 'bids';
         CREATE STREAM bids (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem',
           'path' = '{input}', 'format' = 'json', 'bad-data.path' = '{dlq}');
         CREATE TABLE out (auction BIGINT, price DOUBLE)
           WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json');
         INSERT INTO out SELECT auction, CAST(price AS DOUBLE) FROM bids;",
        chk = dir.join("chk").display(),
        input = input.display(),
        dlq = dlq.display(),
        out = out.display(),
    ));
    let expected_before: Vec<String> = {
        let mut rows: Vec<String> = (0..200)
            .filter(|i| i % 10 != 3 && *i != 57)
            .map(|i| format!("{i},{}.0", i * 10))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(output_rows(&out), expected_before);

    // The dead letters, read as a stream: the reason and where each was.
    let letters = common::csv_rows(weir_run(&format!(
        "CREATE STREAM bad WITH ('connector' = 'dead-letter', 'stream' = 'bids', 'path' = '{}');
         SELECT location, raw FROM bad;",
        dlq.display()
    )));
    let mut expected_letters: Vec<String> = (0..200)
        .filter(|i| i % 10 == 3 || *i == 57)
        .map(|i| {
            let file = if i % 2 == 0 { "a.jsonl" } else { "b.jsonl" };
            let line = line(i).trim_end().replace('"', "\"\"");
            format!("{file}:{},\"{line}\"", i / 2 + 1)
        })
        .collect();
    expected_letters.sort();
    assert_eq!(letters, expected_letters);

    // The column redeclared: the replay decodes the letters again.
    let replay = format!(
        "SET 'execution.checkpointing.interval' = '200ms';
         SET 'state.checkpoints.dir' = '{chk}';
         SET 'pipeline.name' = 'bids-replay';
         CREATE STREAM bids_again (auction BIGINT, price DOUBLE) WITH ('connector' = 'dead-letter',
           'stream' = 'bids', 'path' = '{dlq}', 'format' = 'json', 'bad-data.path' = '{again}');
         CREATE TABLE out (auction BIGINT, price DOUBLE)
           WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json');
         INSERT INTO out SELECT auction, price FROM bids_again;",
        chk = dir.join("chk").display(),
        dlq = dlq.display(),
        again = dlq_again.display(),
        out = out.display(),
    );
    succeeds(&replay);
    let expected = all_but_the_bad_one(200);
    assert_eq!(output_rows(&out), expected);

    // Run again (a restart after the replay finished): nothing twice.
    succeeds(&replay);
    assert_eq!(output_rows(&out), expected);

    // What still fails stays dead, with the new decoder's reason.
    let still = common::csv_rows(weir_run(&format!(
        "CREATE STREAM bad WITH ('connector' = 'dead-letter', 'stream' = 'bids_again', 'path' = '{}');
         SELECT reason, location, raw FROM bad;",
        dlq_again.display()
    )));
    assert_eq!(still.len(), 1, "{still:?}");
    assert!(
        still[0].contains("n/a")
            && still[0].contains("dead letter from")
            && still[0].contains("b.jsonl:29"),
        "{still:?}"
    );
}

#[test]
fn a_replay_cannot_write_its_dead_letters_where_it_reads() {
    let root = tempfile::tempdir().unwrap();
    let dlq = root.path().display().to_string();
    let output = weir_run(&format!(
        "CREATE STREAM again (a BIGINT) WITH ('connector' = 'dead-letter', 'stream' = 's',
           'path' = '{dlq}', 'format' = 'json', 'bad-data.path' = '{dlq}');
         SELECT a FROM again;"
    ));
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("elsewhere"), "{err}");
}

/// Runs `weir` with `args` in `dir`; fails the test when it fails.
fn weir_in(dir: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "weir {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `weir replay-dead-letters job.sql --stream bids`, with the defaults: the
/// job file sets no checkpoints and no pipeline name. After the column is
/// redeclared in the file, the command replays the dead letters into the
/// INSERT that reads `bids` (not the file's other INSERT), once: a second
/// run adds nothing. What still fails is in `<dlq>-replayed`.
#[test]
fn the_replay_command_pushes_each_dead_letter_once_through_the_files_declaration() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let text: String = (0..100).map(line).collect();
    std::fs::write(input.join("bids.jsonl"), text).unwrap();
    let (dlq, out, other) = (dir.join("dlq"), dir.join("out"), dir.join("other"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let job = |price: &str| {
        format!(
            "CREATE STREAM bids (auction BIGINT, price {price}) WITH ('connector' = 'filesystem',
               'path' = '{input}', 'format' = 'json', 'bad-data.path' = '{dlq}');
             CREATE TABLE out (auction BIGINT, price DOUBLE)
               WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json');
             CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '10');
             CREATE TABLE other (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{other}', 'format' = 'json');
             INSERT INTO out SELECT auction, CAST(price AS DOUBLE) FROM bids;
             INSERT INTO other SELECT count(*) AS n FROM events;",
            input = input.display(),
            dlq = dlq.display(),
            out = out.display(),
            other = other.display(),
        )
    };
    let file = dir.join("job.sql");
    std::fs::write(&file, job("BIGINT")).unwrap();
    weir_in(dir, &["run", "job.sql"]);
    let files_in = |d: &Path| std::fs::read_dir(d).unwrap().count();
    let other_files = files_in(&other);
    assert_eq!(output_rows(&out).len(), 100 - 11, "10 changed and 1 bad");

    std::fs::write(&file, job("DOUBLE")).unwrap();
    weir_in(dir, &["replay-dead-letters", "job.sql", "--stream", "bids"]);
    let expected = all_but_the_bad_one(100);
    assert_eq!(output_rows(&out), expected);
    assert_eq!(
        files_in(&other),
        other_files,
        "the other INSERT did not run"
    );
    assert!(
        dir.join("weir-checkpoints").join("replay-bids").is_dir(),
        "checkpointed under the default directory and the replay's name"
    );

    // Again (a restart, or a later run): nothing twice.
    weir_in(dir, &["replay-dead-letters", "job.sql", "--stream", "bids"]);
    assert_eq!(output_rows(&out), expected);

    let replayed = dir.join("dlq-replayed");
    let still = common::csv_rows(weir_run(&format!(
        "CREATE STREAM bad WITH ('connector' = 'dead-letter', 'stream' = 'bids', 'path' = '{}');
         SELECT reason, location, raw FROM bad;",
        replayed.display()
    )));
    assert_eq!(still.len(), 1, "{still:?}");
    assert!(
        still[0].contains("n/a") && still[0].contains("dead letter from"),
        "{still:?}"
    );
}
