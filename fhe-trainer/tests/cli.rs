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
    assert_eq!(json["pbs_per_batch"].as_f64().unwrap(), 981.0);
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
            "owner.json",
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
            "owner.json",
            "--weights",
            "w2.bin",
            "--out",
            "model.json",
        ],
    ));
    assert!(stdout.contains("after 2 batches"), "{stdout}");
    let stdout = ok(&run(
        d,
        &[
            "predict",
            "--model",
            "model.json",
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
