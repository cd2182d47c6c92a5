//! `scenarios diabetes --data` with bad CSVs: a clear error naming what is
//! wrong, a failing exit code, and no results left that look complete.

use std::path::Path;
use std::process::Command;

fn run_with_csv(csv: &str, extra: &[&str]) -> (bool, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let out = dir.path().join("out");
    // A stale complete-looking result from an earlier run must not survive.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("results.json"), "{\"complete\": true}").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_scenarios"))
        .arg("diabetes")
        .arg("--data")
        .arg(&data)
        .args(["--target", "y", "--out"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr, dir)
}

fn assert_no_results(dir: &Path) {
    assert!(
        !dir.join("out/results.json").exists(),
        "stale results.json survived"
    );
    assert!(!dir.join("out/mse_per_round.png").exists());
}

fn rows(n: usize) -> String {
    let mut s = String::from("a,b,y\n");
    for i in 0..n {
        s += &format!("{},{},{}\n", i, (i * 7) % 5, i * 2);
    }
    s
}

#[test]
fn missing_target_column() {
    let (ok, err, dir) = run_with_csv("a,b,c\n1,2,3\n", &[]);
    assert!(!ok);
    assert!(err.contains("target column \"y\" not found"), "{err}");
    assert!(err.contains("[\"a\", \"b\", \"c\"]"), "{err}");
    assert_no_results(dir.path());
}

#[test]
fn text_cell_names_row_and_column() {
    let mut csv = rows(20);
    csv = csv.replacen("3,1,6\n", "3,one,6\n", 1);
    let (ok, err, dir) = run_with_csv(&csv, &[]);
    assert!(!ok);
    assert!(
        err.contains("row 4 (line 5), column \"b\": \"one\" is not a finite number"),
        "{err}"
    );
    assert_no_results(dir.path());
}

#[test]
fn ragged_row() {
    let mut csv = rows(20);
    csv += "1,2\n";
    let (ok, err, dir) = run_with_csv(&csv, &[]);
    assert!(!ok);
    assert!(
        err.contains("row 21 (line 22): expected 3 cells like the header, found 2"),
        "{err}"
    );
    assert_no_results(dir.path());
}

#[test]
fn missing_cell() {
    let csv = "a,b,y\n1,2,3\n4,,6\n";
    let (ok, err, dir) = run_with_csv(csv, &[]);
    assert!(!ok);
    assert!(
        err.contains("row 2 (line 3), column \"b\": missing value"),
        "{err}"
    );
    assert_no_results(dir.path());
}

#[test]
fn fewer_rows_than_hospitals() {
    let (ok, err, dir) = run_with_csv(&rows(5), &["--hospitals", "5"]);
    assert!(!ok);
    assert!(err.contains("fewer rows than hospitals"), "{err}");
    assert_no_results(dir.path());
}

#[test]
fn empty_file_and_header_only() {
    let (ok, err, _d) = run_with_csv("", &[]);
    assert!(!ok);
    assert!(err.contains("empty"), "{err}");
    let (ok, err, _d) = run_with_csv("a,y\n", &[]);
    assert!(!ok);
    assert!(err.contains("no data rows"), "{err}");
}

#[test]
fn two_hospitals_are_refused_with_the_reason() {
    let (ok, err, _d) = run_with_csv(&rows(30), &["--hospitals", "2"]);
    assert!(!ok);
    assert!(err.contains("at least 3 hospitals"), "{err}");
}
