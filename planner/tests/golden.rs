//! Golden plan tests: every `tests/golden/NAME.sql` is planned statement by
//! statement, and its last statement explained (the operator graph and the
//! streaming plan); for `error_*.sql` the first failing statement's error,
//! rendered as the user sees it. The result must equal `NAME.plan`.
//! `WEIR_BLESS=1 cargo test -p weir-planner --test golden` writes the
//! `.plan` files anew (review the diff before committing).
//!
//! Every file runs at parallelism 2 unless it sets another.

use std::path::{Path, PathBuf};

use weir_planner::{Planned, Planner};
use weir_sql::Statement;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// What planning `text` gives: the explained last statement, or the error.
fn outcome(text: &str) -> Result<String, String> {
    let mut planner = Planner::default();
    planner
        .settings_mut()
        .set("parallelism.default", "2")
        .map_err(|e| e.to_string())?;
    let statements = weir_sql::parse(text).map_err(|e| e.render(text))?;
    let Some((last, setup)) = statements.split_last() else {
        return Err("no statement".into());
    };
    for statement in setup {
        planner
            .plan(statement)
            .map_err(|e| e.to_sql().render(text))?;
    }
    let mut last = last.clone();
    if matches!(
        last.statement,
        Statement::Query(_) | Statement::Insert(_) | Statement::StatementSet(_)
    ) {
        last.statement = Statement::Explain(Box::new(last.statement));
    }
    match planner.plan(&last).map_err(|e| e.to_sql().render(text))? {
        Planned::Explain(plan) => Ok(plan),
        Planned::Done(message) => Ok(message),
        _ => Ok("(planned)".into()),
    }
}

#[test]
fn plans_equal_their_golden_files() {
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{} golden cases", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let expects_error = name.starts_with("error_");
        let actual = match (outcome(&text), expects_error) {
            (Ok(plan), false) => plan,
            (Err(error), true) => error,
            (Ok(plan), true) => {
                failures.push(format!("{name}: expected an error, planned:\n{plan}"));
                continue;
            }
            (Err(error), false) => {
                failures.push(format!("{name}: failed:\n{error}"));
                continue;
            }
        };
        let expected_file = file.with_extension("plan");
        if bless {
            std::fs::write(&expected_file, format!("{}\n", actual.trim_end())).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|_| format!("(missing {})", expected_file.display()));
        if expected.trim_end() != actual.trim_end() {
            failures.push(format!(
                "{name}: plan differs\n--- expected\n{}\n--- actual\n{}",
                expected.trim_end(),
                actual.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
