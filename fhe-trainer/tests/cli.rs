//! The `fhe-trainer` binary, run as a process in temporary directories.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_fhe-trainer");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv");

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary starts")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_simulate_writes_results_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "run",
            "--data",
            DATA,
            "--target",
            "target",
            "--mode",
            "simulate",
            "--batches",
            "6",
            "--out-dir",
            "res",
        ],
    );
    let stdout = ok(&out);
    assert!(stdout.contains("batch   6"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("res/results.json")).unwrap())
            .unwrap();
    assert_eq!(json["batches"].as_array().unwrap().len(), 6);
    assert_eq!(json["pbs_per_batch"].as_f64().unwrap(), 1038.0);
    let png = std::fs::read(dir.path().join("res/accuracy.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("a,b,target\n1,2,0\n3,4,2\n", "not 0 or 1"),
        ("a,b,target\n1,x,0\n3,4,1\n", "not a number"),
        ("a,b,target\n1,,0\n3,4,1\n", "missing value"),
    ];
    for (csv, msg) in cases {
        std::fs::write(dir.path().join("bad.csv"), csv).unwrap();
        let out = run(
            dir.path(),
            &["run", "--data", "bad.csv", "--target", "target"],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{err}");
    }
    let out = run(dir.path(), &["run", "--data", DATA, "--target", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
    let out = run(
        dir.path(),
        &[
            "run", "--data", DATA, "--target", "target", "--mode", "fast",
        ],
    );
    assert!(!out.status.success());
}

#[test]
fn split_workflow_on_a_tiny_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("f1,f2,target\n");
    for i in 0..12 {
        let v = f64::from(i) / 11.0;
        csv.push_str(&format!("{v},{},{}\n", 1.0 - v * v, u8::from(i >= 6)));
    }
    std::fs::write(d.join("tiny.csv"), csv).unwrap();
    ok(&run(
        d,
        &["keygen", "--client-key", "c.key", "--server-key", "s.key"],
    ));
    ok(&run(
        d,
        &[
            "encrypt",
            "--client-key",
            "c.key",
            "--data",
            "tiny.csv",
            "--target",
            "target",
            "--out",
            "b.bin",
            "--owner",
            "owner.bin",
            "--batch-size",
            "2",
            "--batches",
            "2",
        ],
    ));
    ok(&run(
        d,
        &[
            "train",
            "--server-key",
            "s.key",
            "--batches",
            "b.bin",
            "--out",
            "w.bin",
            "--max-batches",
            "1",
        ],
    ));
    // Continue from the encrypted weights without the owner.
    ok(&run(
        d,
        &[
            "train",
            "--server-key",
            "s.key",
            "--batches",
            "b.bin",
            "--weights",
            "w.bin",
            "--out",
            "w2.bin",
            "--max-batches",
            "1",
        ],
    ));
    let stdout = ok(&run(
        d,
        &[
            "decrypt",
            "--client-key",
            "c.key",
            "--owner",
            "owner.bin",
            "--weights",
            "w2.bin",
            "--out",
            "model.bin",
        ],
    ));
    assert!(stdout.contains("after 2 batches"), "{stdout}");
    let stdout = ok(&run(
        d,
        &[
            "predict",
            "--model",
            "model.bin",
            "--data",
            "tiny.csv",
            "--target",
            "target",
        ],
    ));
    assert!(stdout.contains("accuracy"), "{stdout}");
    // The server refuses a client key in place of its server key.
    let out = run(
        d,
        &[
            "train",
            "--server-key",
            "c.key",
            "--batches",
            "b.bin",
            "--out",
            "x.bin",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a server key file"));
}

#[test]
fn bench_runs_on_a_tiny_shape() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = ok(&run(
        dir.path(),
        &[
            "bench",
            "--features",
            "2",
            "--batch-size",
            "2",
            "--batches",
            "1",
            "--json",
            "bench.json",
        ],
    ));
    assert!(stdout.contains("PBS per batch"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bench.json")).unwrap()).unwrap();
    assert!(json["pbs_per_batch"].as_f64().unwrap() > 0.0);
    assert!(
        json["server_key_bytes"].as_u64().unwrap()
            > json["compressed_server_key_bytes"].as_u64().unwrap()
    );
}

/// Writes a small separable CSV of `n` rows (seeded by `offset`).
fn tiny_csv(path: &Path, n: usize, offset: usize) {
    let mut csv = String::from("f1,f2,target\n");
    for i in 0..n {
        let v = ((i * 7 + offset) % n) as f64 / n as f64;
        csv.push_str(&format!("{v},{},{}\n", 1.0 - v * v, u8::from(v >= 0.5)));
    }
    std::fs::write(path, csv).unwrap();
}

#[test]
fn run_with_own_test_file_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_csv(&d.join("train.csv"), 40, 0);
    tiny_csv(&d.join("test.csv"), 17, 3);
    let stdout = ok(&run(
        d,
        &[
            "run",
            "--data",
            "train.csv",
            "--test",
            "test.csv",
            "--target",
            "target",
            "--batch-size",
            "4",
            "--epochs",
            "3",
            "--out-dir",
            "res",
        ],
    ));
    assert!(stdout.contains("3 epochs of 10 batches"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("res/results.json")).unwrap()).unwrap();
    // Every row of train.csv is trained on, test.csv is scored.
    assert_eq!(json["train_rows"].as_u64().unwrap(), 40);
    assert_eq!(json["test_rows"].as_u64().unwrap(), 17);
    assert_eq!(json["batches"].as_array().unwrap().len(), 30);
    assert!(json["final_test_accuracy"].as_f64().unwrap() > 0.5);
    // --batches may run past one epoch.
    let stdout = ok(&run(
        d,
        &[
            "run",
            "--data",
            "train.csv",
            "--test",
            "test.csv",
            "--target",
            "target",
            "--batch-size",
            "4",
            "--batches",
            "25",
            "--out-dir",
            "res2",
        ],
    ));
    assert!(stdout.contains("3 epochs of 10 batches"), "{stdout}");
    assert!(stdout.contains("batch  25:"), "{stdout}");
    // A test file with other columns is refused.
    std::fs::write(d.join("bad.csv"), "g1,f2,target\n1,2,0\n").unwrap();
    let out = run(
        d,
        &[
            "run",
            "--data",
            "train.csv",
            "--test",
            "bad.csv",
            "--target",
            "target",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different feature columns"));
}

#[cfg(unix)]
#[test]
fn secrets_are_0600_and_a_readable_client_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_csv(&d.join("tiny.csv"), 12, 0);
    ok(&run(
        d,
        &["keygen", "--client-key", "c.key", "--server-key", "s.key"],
    ));
    let mode = |p: &str| std::fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("c.key"), 0o600);
    let encrypt = [
        "encrypt",
        "--client-key",
        "c.key",
        "--data",
        "tiny.csv",
        "--target",
        "target",
        "--out",
        "b.bin",
        "--owner",
        "owner.bin",
        "--batch-size",
        "2",
        "--batches",
        "1",
    ];
    ok(&run(d, &encrypt));
    assert_eq!(mode("owner.bin"), 0o600);
    std::fs::set_permissions(d.join("c.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(d, &encrypt);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("others may read"), "{err}");
}

#[test]
fn run_multiclass_with_own_test_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/suite/iris3.csv");
    let text = std::fs::read_to_string(data).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let (mut train, mut test) = (format!("{header}\n"), format!("{header}\n"));
    for (i, l) in lines.enumerate() {
        let f = if i % 4 == 0 { &mut test } else { &mut train };
        f.push_str(l);
        f.push('\n');
    }
    std::fs::write(d.join("train.csv"), train).unwrap();
    std::fs::write(d.join("test.csv"), test).unwrap();
    let stdout = ok(&run(
        d,
        &[
            "run",
            "--data",
            "train.csv",
            "--test",
            "test.csv",
            "--target",
            "target",
            "--multiclass",
            "--epochs",
            "3",
            "--out-dir",
            "res",
        ],
    ));
    assert!(stdout.contains("3 classes one-vs-rest"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("res/results.json")).unwrap()).unwrap();
    assert_eq!(json["test_rows"].as_u64().unwrap(), 38);
    // Well above the 1/3 of guessing.
    assert!(
        json["final_test_accuracy"].as_f64().unwrap() > 0.6,
        "{json}"
    );
}

#[test]
fn split_workflow_multiclass() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/suite/iris3.csv");
    ok(&run(
        d,
        &["keygen", "--client-key", "c.key", "--server-key", "s.key"],
    ));
    let stdout = ok(&run(
        d,
        &[
            "encrypt",
            "--client-key",
            "c.key",
            "--data",
            data,
            "--target",
            "target",
            "--multiclass",
            "--out",
            "b.bin",
            "--owner",
            "owner.bin",
            "--batch-size",
            "2",
            "--batches",
            "2",
        ],
    ));
    assert!(stdout.contains("for 3 model(s)"), "{stdout}");
    let stdout = ok(&run(
        d,
        &[
            "train",
            "--server-key",
            "s.key",
            "--batches",
            "b.bin",
            "--out",
            "w.bin",
        ],
    ));
    assert!(
        stdout.contains("trained 2 batches of 3 model(s)"),
        "{stdout}"
    );
    let stdout = ok(&run(
        d,
        &[
            "decrypt",
            "--client-key",
            "c.key",
            "--owner",
            "owner.bin",
            "--weights",
            "w.bin",
            "--out",
            "model.bin",
        ],
    ));
    assert!(stdout.contains("after 2 batches"), "{stdout}");
    ok(&run(
        d,
        &[
            "predict",
            "--model",
            "model.bin",
            "--data",
            data,
            "--target",
            "target",
            "--out",
            "pred.csv",
        ],
    ));
    let pred = std::fs::read_to_string(d.join("pred.csv")).unwrap();
    assert_eq!(pred.lines().count(), 150);
    for line in pred.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 4, "{line}");
        assert!(f[0].parse::<u8>().unwrap() < 3);
        let total: f64 = f[1..].iter().map(|v| v.parse::<f64>().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{line}");
    }
}
