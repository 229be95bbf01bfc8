//! Helpers shared by the tests of the `weir` binary.

pub mod broker;
pub mod seaweed;

/// The data rows, sorted, that `weir run --format csv` printed; fails with
/// what it printed on stderr if it did not succeed.
pub fn csv_rows(output: std::process::Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rows: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// Fails naming the rows only one side has (not all of them).
#[allow(dead_code)] // not every test file compares rows
pub fn assert_same_rows(actual: &[String], expected: &[String]) {
    let missing: Vec<&String> = expected.iter().filter(|r| !actual.contains(r)).collect();
    let extra: Vec<&String> = actual.iter().filter(|r| !expected.contains(r)).collect();
    assert!(
        actual == expected,
        "{} rows, expected {}; missing {} (first: {:?}), unexpected {} (first: {:?})",
        actual.len(),
        expected.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
}

/// A child process killed when the test ends, also when it fails.
#[allow(dead_code)] // not every test file starts one
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`-STOP`, `-CONT`, ...) to process `pid`.
#[allow(dead_code)] // not every test file signals a process
pub fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// The Prometheus page a process serves on `port` (empty if it does not
/// answer within five seconds).
#[allow(dead_code)] // not every test file scrapes
pub fn scrape(port: u16) -> String {
    let output = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}
