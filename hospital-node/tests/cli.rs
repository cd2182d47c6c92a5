//! The `hospital-node` binary, run as a binary: what a first start with a bad
//! configuration prints, before any network I/O.
//!
//! (These tests also make `cargo test` build the binary next to
//! `coordinator`, whose federation tests start it.)

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hospital-node");

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("hospital-node starts")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("hospital.json");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn help_names_the_run_command() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["--help"], dir.path());
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("run"));
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["run", "--config", "nope.json"], dir.path());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("nope.json"), "{err}");
}

#[test]
fn an_unknown_config_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"{"name": "hospital-1", "train_csv": "a.csv", "roster": ["hospital-1"], "etaa": 1}"#,
    );
    let o = run(&["run", "--config", &cfg], dir.path());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("etaa"), "{err}");
}

#[test]
fn a_roster_without_this_hospital_is_refused_before_dialing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"{"name": "hospital-1", "train_csv": "a.csv",
            "roster": ["hospital-2", "hospital-3", "hospital-4"]}"#,
    );
    let o = run(&["run", "--config", &cfg], dir.path());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("roster"), "{err}");
    assert!(
        !err.contains("dial"),
        "refused before any network I/O: {err}"
    );
}

#[test]
fn a_privacy_floor_below_three_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"{"name": "hospital-1", "train_csv": "a.csv", "min_ring": 2,
            "roster": ["hospital-1", "hospital-2", "hospital-3"]}"#,
    );
    let o = run(&["run", "--config", &cfg], dir.path());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("min_ring") || err.contains("at least 3"),
        "{err}"
    );
}

#[test]
fn pki_request_writes_an_owner_only_key_and_a_request_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let args = ["pki", "request", "--name", "hospital-1", "--out", "pki"];
    let o = run(&args, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let key = dir.path().join("pki/hospital-1.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let csr = std::fs::read_to_string(dir.path().join("pki/hospital-1.csr")).unwrap();
    assert!(csr.contains("CERTIFICATE REQUEST") && !csr.contains("PRIVATE KEY"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("consortium-ca sign"));
    let before = std::fs::read(&key).unwrap();
    let o = run(&args, dir.path());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&key).unwrap(), before);
    let o = run(
        &["pki", "request", "--name", "Bad Name", "--out", "x"],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Bad Name"), "{}", stderr(&o));
}

/// `predict` scores rows with a model file, and names a missing or an
/// undeclared column of the rows.
#[test]
fn predict_scores_rows_and_names_missing_or_unexpected_columns() {
    let dir = tempfile::tempdir().unwrap();
    let model = r#"{
      "format": "private-training/model", "version": 1, "model": "logistic",
      "features": ["age", "smoker=no", "smoker=yes", "intercept"],
      "weights": [0.5, -0.25, 0.75, 0.1],
      "schema": {"format": "private-training/schema", "version": 1, "target": "y",
        "columns": [{"name": "age", "type": "numeric"},
                    {"name": "smoker", "type": "categorical", "categories": ["no", "yes"]}]},
      "preprocessing": {"impute": [null], "scaler": {"features": ["age"], "mean": [40.0], "std": [10.0]}},
      "training": {"run_id": "r1", "mode": "global", "rounds": 3, "max_rounds": 3,
        "converged": false, "eta": 0.5, "l2": 0.0, "hospitals": ["hospital-1"], "schema_hash": ""}
    }"#;
    std::fs::write(dir.path().join("model.json"), model).unwrap();
    std::fs::write(dir.path().join("rows.csv"), "smoker,age\nyes,50\nno,30\n").unwrap();
    let o = run(
        &["predict", "--model", "model.json", "--data", "rows.csv"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "probability,label");
    // 50 years scaled to 1.0: 0.5 + 0.75 + 0.1 = 1.35, sigmoid 0.794.
    let p: f64 = lines[1].split(',').next().unwrap().parse().unwrap();
    assert!((p - 1.0 / (1.0 + (-1.35f64).exp())).abs() < 1e-12, "{out}");
    assert_eq!(lines.len(), 3);
    std::fs::write(dir.path().join("short.csv"), "age\n50\n").unwrap();
    let o = run(
        &["predict", "--model", "model.json", "--data", "short.csv"],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("smoker"), "{}", stderr(&o));
    std::fs::write(dir.path().join("extra.csv"), "age,smoker,mrn\n50,no,7\n").unwrap();
    let o = run(
        &["predict", "--model", "model.json", "--data", "extra.csv"],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("mrn"), "{}", stderr(&o));
}
