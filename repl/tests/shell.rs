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

/// Flink's Nexmark DDL, with its placeholders filled, as table `name`.
fn nexmark_ddl(name: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/nexmark-flink/ddl_gen.sql"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .replace("CREATE TABLE datagen", &format!("CREATE TABLE {name}"))
        .replace("${TPS}", "1000")
        .replace("${EVENTS_NUM}", "1000")
        .replace("${PERSON_PROPORTION}", "1")
        .replace("${AUCTION_PROPORTION}", "3")
        .replace("${BID_PROPORTION}", "46")
}

/// Lines typed ahead, without waiting for a prompt, while the shell is busy
/// running the statements before them and the machine is loaded: what a
/// terminal without bracketed paste, `tmux send-keys` or a fast typist does.
/// Every line must arrive, in order.
#[test]
fn lines_typed_ahead_into_a_busy_shell_all_arrive() {
    // Keep every core busy for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burners: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();

    let home = tempfile::tempdir().unwrap();
    let mut shell = start(home.path());
    const ROUNDS: usize = 10;
    for round in 0..ROUNDS {
        for line in nexmark_ddl(&format!("datagen{round}")).lines() {
            shell.send_line(line).unwrap();
        }
    }
    shell.send_line("SHOW TABLES;").unwrap();
    for round in 0..ROUNDS {
        shell
            .exp_string(&format!("created stream datagen{round}"))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    // The last statement came through after all of them.
    shell.exp_string("datagen9").unwrap();
    shell.exp_string("weir> ").unwrap();

    // Typing a word echoes its letters; the line is redrawn (and
    // highlighted) only when the word ends, not once per keystroke.
    shell.send_line("SELECTION_CHECK;").unwrap();
    let typed = shell.exp_string("SELECTION_CHECK").unwrap();
    let echoed = shell.exp_string("weir> ").unwrap();
    let redraws = typed.matches("weir> SEL").count() + echoed.matches("weir> SEL").count();
    // One redraw at the ';' (matched above) and one at Enter; a redraw per
    // keystroke would be a dozen.
    assert!(
        redraws <= 2,
        "the line was redrawn mid-word: {typed:?} {echoed:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    shell.send_control('d').unwrap();
    shell.exp_eof().unwrap();
}

/// An updating query in the shell: its table, redrawn in place (the
/// cursor goes back over the last drawing, which is cleared) as its rows
/// change; Ctrl-C leaves the last table and says how many rows it has.
#[test]
fn an_updating_result_is_a_table_that_changes_in_place() {
    let home = tempfile::tempdir().unwrap();
    let mut shell = start(home.path());
    shell
        .send_line("CREATE STREAM events WITH ('connector' = 'nexmark', 'first-event.rate' = '2000', 'scan.rate-limit' = '2000');")
        .unwrap();
    shell.exp_string("created stream events").unwrap();
    shell
        .send_line("SET 'table.exec.state.ttl' = '1 h';")
        .unwrap();
    shell.exp_string("weir> ").unwrap();
    shell
        .send_line("SELECT event_type, count(*) AS n FROM events GROUP BY event_type;")
        .unwrap();
    shell.exp_string("event_type").unwrap();
    // Two redraws: back to the table's first line, clear, draw again.
    for _ in 0..2 {
        shell.exp_regex("\x1b\\[\\d+F\x1b\\[J").unwrap();
        shell.exp_string("event_type").unwrap();
    }
    shell.send_control('c').unwrap();
    shell.exp_string("query cancelled (3 rows)").unwrap();
    shell.exp_string("weir> ").unwrap();
    shell.send_control('d').unwrap();
    shell.exp_eof().unwrap();
}
