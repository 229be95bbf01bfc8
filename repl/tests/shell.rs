//! The interactive shell in a real pseudo-terminal.

use rexpect::session::{spawn_command, PtySession};

const TIMEOUT_MS: u64 = 60_000;

fn start(home: &std::path::Path) -> PtySession {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .env("HOME", home)
        .env("XDG_DATA_HOME", home)
        .env("TERM", "xterm");
    let mut shell = spawn_command(command, Some(TIMEOUT_MS)).unwrap();
    shell.exp_string("weir> ").unwrap();
    shell
}

#[test]
fn a_session_in_the_shell() {
    let home = tempfile::tempdir().unwrap();
    let mut shell = start(home.path());

    // A multi-line CREATE STREAM: the continuation prompt until ';'.
    shell
        .send_line("CREATE STREAM nexbids WITH ('connector' = 'nexmark',")
        .unwrap();
    shell.exp_string("-> ").unwrap();
    shell
        .send_line("  'first-event.rate' = '5000', 'scan.rate-limit' = '5000');")
        .unwrap();
    shell.exp_string("created stream nexbids").unwrap();
    shell.exp_string("weir> ").unwrap();

    // Tab completes the stream name.
    shell.send("DESCRIBE nexb").unwrap();
    shell.send("\t").unwrap();
    shell.flush().unwrap();
    shell.exp_string("nexbids").unwrap();
    shell.send_line(";").unwrap();
    shell.exp_string("event_type").unwrap();
    shell.exp_string("weir> ").unwrap();

    // A windowed query prints rows live, as windows fire; Ctrl-C returns
    // to the prompt.
    shell
        .send_line(
            "SELECT window_start, count(*) AS n FROM TABLE(TUMBLE(TABLE nexbids, DESCRIPTOR(dateTime), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;",
        )
        .unwrap();
    shell.exp_string("window_start").unwrap();
    // (rexpect reads bytes, so the box-drawing separators are not matched.)
    let row = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\s+\S+ \d+ ";
    shell.exp_regex(row).unwrap();
    shell.exp_regex(row).unwrap();
    shell.send_control('c').unwrap();
    shell.exp_string("query cancelled").unwrap();
    shell.exp_string("weir> ").unwrap();

    // A typo: the statement with a caret under the column, and a hint.
    shell.send_line("SELECT bidr FROM nexbids;").unwrap();
    shell.exp_string("No field named bidr").unwrap();
    shell.exp_string("SELECT bidr FROM nexbids;").unwrap();
    shell.exp_string("       ^").unwrap();
    // DataFusion's or Weir's suggestion: the column `bid`.
    shell.exp_regex(r"hint: .*\bbid\b").unwrap();
    shell.exp_string("weir> ").unwrap();

    // INSERT starts a background job; the prompt stays usable.
    shell
        .send_line("CREATE TABLE sink (n BIGINT) WITH ('connector' = 'blackhole');")
        .unwrap();
    shell.exp_string("created stream sink").unwrap();
    shell
        .send_line("INSERT INTO sink SELECT bid.price FROM nexbids;")
        .unwrap();
    shell.exp_string("job 1 started").unwrap();
    shell.send_line("SHOW JOBS;").unwrap();
    shell.exp_string("RUNNING").unwrap();
    shell.exp_string("weir> ").unwrap();

    // Ctrl-D exits.
    shell.send_control('d').unwrap();
    shell.exp_string("bye").unwrap();
    shell.exp_eof().unwrap();

    // History was kept for the next session.
    let history = std::fs::read_to_string(home.path().join("weir/history")).unwrap();
    assert!(history.contains("SHOW JOBS;"), "{history}");
}
