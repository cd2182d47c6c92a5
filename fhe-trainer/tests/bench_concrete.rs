//! `fhe-trainer bench --concrete-python` / `--concrete-venv`, without Concrete
//! ML or the network: a Python that lacks it is a clear error naming the fix,
//! and the side-by-side flow (rows sent on standard input, JSON read back,
//! ratio printed) runs against a stand-in interpreter that answers like
//! `bench/concrete_sgd.py`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_fhe-trainer");

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the binary with `args` in `dir` and checks that it fails saying `why`.
fn refused(dir: &Path, args: &[&str], why: &str) {
    let out = run(dir, args);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains(why), "{e}");
}

/// An executable shell script standing in for Python: answers the
/// `import concrete.ml` probe with 1.9.0 and the benchmark script with
/// `answer` (where `ROWS` becomes the number of data rows it was sent).
fn stand_in(path: &Path, answer: &str) {
    let script = format!(
        r#"#!/bin/sh
case "$2" in
  *"import concrete.ml as m"*) printf '1.9.0'; exit 0 ;;
  *"concrete.ml.sklearn import SGDClassifier"*) ;;
  *) echo "unexpected program" >&2; exit 9 ;;
esac
[ "$3 $4 $5 $6 $7" = "--data - --target target --batches" ] || {{ echo "bad args: $*" >&2; exit 9; }}
rows=$(tail -n +2 | wc -l | tr -d ' ')
echo "Compiling training circuit on device 'cpu'..." >&2
printf '%s\n' '{}' | sed "s/ROWS/$rows/"
"#,
        answer
    );
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn answer(features: usize, batches: &[f64]) -> String {
    let mean = batches.iter().sum::<f64>() / batches.len() as f64;
    serde_json::json!({
        "schema": "fhe-trainer/concrete-sgd-bench/1",
        "concrete_ml": "1.9.0",
        "concrete_python": "2.10.0",
        "python": "3.11.7",
        "model": "SGDClassifier(fit_encrypted=True, parameters_range=(-1.0, 1.0), random_state=42)",
        "n_bits_training": 6,
        "learning_rate": 1.0,
        "rows": 0,
        "features": features,
        "batch_size": 8,
        "cpus": 2,
        "first_batch_s": 70.5,
        "compile_s": 3.5,
        "keygen_s": 15.0,
        "first_run_s": 51.0,
        "seconds_per_batch": batches,
        "run_seconds_per_batch": batches,
        "mean_seconds_per_batch": mean,
    })
    .to_string()
    .replace("\"rows\":0", "\"rows\":ROWS")
}

#[test]
fn a_python_without_concrete_ml_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A fresh virtual environment without pip certainly lacks Concrete ML.
    let venv = d.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status();
    if !matches!(made, Ok(s) if s.success()) {
        eprintln!("python3 -m venv is not available here; skipping the real-Python case");
    } else {
        let py = venv.join("bin/python");
        let out = run(d, &["bench", "--concrete-python", py.to_str().unwrap()]);
        assert!(!out.status.success());
        let e = stderr(&out);
        assert!(e.contains("has no Concrete ML"), "{e}");
        assert!(e.contains("No module named 'concrete'"), "{e}");
        assert!(
            e.contains(&format!(
                "{} -m pip install concrete-ml==1.9.0",
                py.display()
            )),
            "{e}"
        );
        assert!(e.contains("--concrete-venv DIR"), "{e}");
        // Refused before any key generation or encrypted batch.
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let missing = d.join("no-such-python");
    let out = run(
        d,
        &["bench", "--concrete-python", missing.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("cannot run") && e.contains("no-such-python"),
        "{e}"
    );

    let py = d.join("python");
    stand_in(&py, &answer(30, &[50.0]));
    refused(
        d,
        &[
            "bench",
            "--batch-size",
            "4",
            "--concrete-python",
            py.to_str().unwrap(),
        ],
        "fixed batch of 8 rows",
    );

    refused(
        d,
        &[
            "bench",
            "--concrete-python",
            py.to_str().unwrap(),
            "--concrete-venv",
            d.to_str().unwrap(),
        ],
        "cannot be used with",
    );
}

#[test]
fn side_by_side_prints_both_figures_and_the_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An existing virtual environment is used as it is (no venv, no pip).
    std::fs::create_dir_all(d.join("venv/bin")).unwrap();
    stand_in(&d.join("venv/bin/python"), &answer(2, &[50.0, 54.0]));
    let out = run(
        d,
        &[
            "bench",
            "--features",
            "2",
            "--batches",
            "2",
            "--concrete-venv",
            "venv",
            "--json",
            "bench.json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        stderr(&out)
    );
    assert!(
        stdout.contains("Concrete ML batch    52.00 s per batch"),
        "{stdout}"
    );
    assert!(stdout.contains("speed-up"), "{stdout}");
    assert!(stdout.contains("per 8 x 2 batch"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("bench.json")).unwrap()).unwrap();
    let c = &json["concrete_ml"];
    assert_eq!(c["concrete_ml"], "1.9.0");
    // The stand-in counted the data rows it was sent: the bench's 2 x 2 x 8
    // (two batches before Concrete ML's run, two after).
    assert_eq!(c["rows"], 32);
    assert_eq!(json["seconds_per_batch"].as_array().unwrap().len(), 2);
    assert_eq!(
        json["seconds_per_batch_after_concrete_ml"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(c["keygen_s"], 15.0);
    let ours = json["mean_seconds_per_batch"].as_f64().unwrap();
    let ratio = json["speedup_over_concrete_ml"].as_f64().unwrap();
    assert!((ratio - 52.0 / ours).abs() < 1e-9 * ratio, "{json}");
}

#[test]
fn a_malformed_answer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let py = d.join("python");
    // One timed batch where two were asked for.
    stand_in(&py, &answer(2, &[50.0]));
    refused(
        d,
        &[
            "bench",
            "--features",
            "2",
            "--batches",
            "2",
            "--concrete-python",
            py.to_str().unwrap(),
        ],
        "Concrete ML timed 1 batches after the first, expected 2",
    );
}
