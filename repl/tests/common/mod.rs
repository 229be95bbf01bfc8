//! Helpers shared by the tests of the `weir` binary.

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
