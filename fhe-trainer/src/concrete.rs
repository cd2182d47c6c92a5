//! `fhe-trainer bench`'s side-by-side run of Concrete ML (a module of the
//! binary): finding or creating a Python that has Concrete ML, running the
//! shipped `bench/concrete_sgd.py` on the bench's own rows, and reading its
//! JSON answer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// The Concrete ML benchmark script, built into the binary.
pub const SCRIPT: &str = include_str!("../bench/concrete_sgd.py");

/// The `schema` field the script writes.
pub const SCHEMA: &str = "fhe-trainer/concrete-sgd-bench/1";

/// What `--concrete-venv` installs: the version the README's figures were
/// measured with.
pub const PIN: &str = "concrete-ml==1.9.0";

/// The rows per batch of Concrete ML's encrypted training (fixed in 1.9).
pub const BATCH_SIZE: usize = 8;

/// A Python interpreter that imports `concrete.ml`.
#[derive(Debug, Clone)]
pub struct Python {
    /// The interpreter.
    pub path: PathBuf,
    /// `concrete.ml.__version__`.
    pub version: String,
}

const PROBE: &str = "import sys
try:
    import concrete.ml as m
except Exception as e:
    sys.stderr.write(f'{type(e).__name__}: {e}')
    sys.exit(3)
sys.stdout.write(m.__version__)
";

fn fix_hint(python: &Path) -> String {
    format!(
        "install it with `{} -m pip install {PIN}`, or let the bench create a virtual \
         environment with it: `fhe-trainer bench --concrete-venv DIR`",
        python.display()
    )
}

/// Checks that `python` runs and imports `concrete.ml`.
pub fn probe(python: &Path) -> Result<Python> {
    let out = Command::new(python)
        .args(["-c", PROBE])
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (give --concrete-python the path of a Python interpreter that \
                 has Concrete ML, or create one with `fhe-trainer bench --concrete-venv DIR`)",
                python.display()
            )
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    match out.status.code() {
        Some(0) => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            ensure!(
                !version.is_empty(),
                "{} imports concrete.ml but reports no version",
                python.display()
            );
            Ok(Python {
                path: python.to_path_buf(),
                version,
            })
        }
        Some(3) => bail!(
            "{} has no Concrete ML ({stderr}); {}",
            python.display(),
            fix_hint(python)
        ),
        _ => bail!(
            "{} did not run `import concrete.ml` ({}): {stderr}",
            python.display(),
            out.status
        ),
    }
}

/// The Python of the virtual environment `dir`, which is created with
/// `python3 -m venv` if it does not exist, and given [`PIN`] with pip if it
/// lacks Concrete ML (that needs PyPI). Tool output goes to standard error.
pub fn venv(dir: &Path) -> Result<Python> {
    let python = dir.join("bin").join("python");
    if !python.exists() {
        eprintln!("creating a virtual environment in {}", dir.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(dir)
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .context("cannot run python3 to create the virtual environment")?;
        ensure!(
            status.success(),
            "`python3 -m venv {}` failed ({status})",
            dir.display()
        );
    }
    if let Ok(p) = probe(&python) {
        return Ok(p);
    }
    eprintln!("installing {PIN} into {} (from PyPI)", dir.display());
    let status = Command::new(&python)
        .args(["-m", "pip", "install", PIN])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    ensure!(
        status.success(),
        "`{} -m pip install {PIN}` failed ({status}; it needs PyPI, see pip's messages above)",
        python.display()
    );
    probe(&python)
}

/// What `concrete_sgd.py` measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConcreteResults {
    /// [`SCHEMA`].
    pub schema: String,
    /// Concrete ML's version.
    pub concrete_ml: String,
    /// concrete-python's version.
    pub concrete_python: String,
    /// The interpreter's version.
    pub python: String,
    /// The model and how it was called.
    pub model: String,
    /// Bits of Concrete ML's training circuit.
    pub n_bits_training: u32,
    /// Concrete ML's (constant) learning rate.
    pub learning_rate: f64,
    /// Rows the batches were drawn from.
    pub rows: usize,
    /// Features per row.
    pub features: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// CPUs the process could use.
    pub cpus: usize,
    /// Wall time of the first batch, compilation and key generation included.
    pub first_batch_s: f64,
    /// Concrete ML's compilation time (from its verbose output).
    pub compile_s: Option<f64>,
    /// Concrete ML's key generation time (from its verbose output).
    pub keygen_s: Option<f64>,
    /// Concrete ML's time of the first batch's circuit run.
    pub first_run_s: Option<f64>,
    /// Wall time of each batch after the first (quantize, encrypt, run,
    /// decrypt).
    pub seconds_per_batch: Vec<f64>,
    /// Concrete ML's own time of each of those circuit runs.
    pub run_seconds_per_batch: Vec<f64>,
    /// Mean of `seconds_per_batch`.
    pub mean_seconds_per_batch: f64,
}

/// Reads the script's standard output (its last non-empty line is the JSON
/// object) and checks it against the bench's shape.
pub fn parse(
    stdout: &str,
    features: usize,
    batch_size: usize,
    batches: usize,
) -> Result<ConcreteResults> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("Concrete ML's benchmark printed nothing on standard output")?;
    let r: ConcreteResults = serde_json::from_str(line.trim())
        .with_context(|| format!("Concrete ML's benchmark printed no valid result: {line:?}"))?;
    ensure!(
        r.schema == SCHEMA,
        "Concrete ML's benchmark answered schema {:?}, expected {SCHEMA:?}",
        r.schema
    );
    ensure!(
        r.features == features && r.batch_size == batch_size,
        "Concrete ML ran {} x {} batches, the bench {batch_size} x {features}",
        r.batch_size,
        r.features
    );
    ensure!(
        r.seconds_per_batch.len() == batches,
        "Concrete ML timed {} batches after the first, expected {batches}",
        r.seconds_per_batch.len()
    );
    let positive = |v: f64| v.is_finite() && v > 0.0;
    ensure!(
        r.seconds_per_batch.iter().all(|&s| positive(s))
            && positive(r.first_batch_s)
            && positive(r.mean_seconds_per_batch),
        "Concrete ML's benchmark reported a time that is not a positive number"
    );
    let mean = r.seconds_per_batch.iter().sum::<f64>() / batches as f64;
    ensure!(
        (mean - r.mean_seconds_per_batch).abs() <= 1e-6 * mean,
        "Concrete ML's mean_seconds_per_batch {} is not the mean of its batches ({mean})",
        r.mean_seconds_per_batch
    );
    Ok(r)
}

/// The rows as a CSV with a header (`f0`, `f1`, ..., `target`).
pub fn to_csv(x: &[Vec<f64>], y: &[u8]) -> String {
    let features = x.first().map_or(0, Vec::len);
    let mut s: String = (0..features).map(|j| format!("f{j},")).collect();
    s.push_str("target\n");
    for (row, label) in x.iter().zip(y) {
        for v in row {
            s.push_str(&format!("{v},"));
        }
        s.push_str(&format!("{label}\n"));
    }
    s
}

/// Runs the script with `python` on the rows `x`, `y` (sent on its
/// standard input): one first batch, then `batches` timed ones.
pub fn run(
    python: &Python,
    x: &[Vec<f64>],
    y: &[u8],
    batch_size: usize,
    batches: usize,
) -> Result<ConcreteResults> {
    let features = x.first().map_or(0, Vec::len);
    let mut child = Command::new(&python.path)
        .args([
            "-c",
            SCRIPT,
            "--data",
            "-",
            "--target",
            "target",
            "--batches",
        ])
        .arg(batches.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", python.path.display()))?;
    let csv = to_csv(x, y);
    let mut stdin = child.stdin.take().context("no pipe to the script")?;
    let writer = std::thread::spawn(move || stdin.write_all(csv.as_bytes()));
    let out = child
        .wait_with_output()
        .context("waiting for Concrete ML's benchmark")?;
    // A script that fails early closes its input: its own error says why.
    let wrote = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?;
    ensure!(
        out.status.success(),
        "Concrete ML's benchmark ({} -c <bench/concrete_sgd.py>) failed ({}); its messages are above",
        python.path.display(),
        out.status
    );
    wrote.context("sending the rows to Concrete ML's benchmark")?;
    parse(
        &String::from_utf8_lossy(&out.stdout),
        features,
        batch_size,
        batches,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(batches: &[f64]) -> String {
        let mean = batches.iter().sum::<f64>() / batches.len() as f64;
        serde_json::json!({
            "schema": SCHEMA, "concrete_ml": "1.9.0", "concrete_python": "2.10.0",
            "python": "3.11.7", "model": "SGDClassifier(fit_encrypted=True)",
            "n_bits_training": 6, "learning_rate": 1.0, "rows": 16, "features": 30,
            "batch_size": 8, "cpus": 2, "first_batch_s": 70.7, "compile_s": 3.5,
            "keygen_s": 12.0, "first_run_s": 52.0, "seconds_per_batch": batches,
            "run_seconds_per_batch": batches, "mean_seconds_per_batch": mean,
        })
        .to_string()
    }

    #[test]
    fn parses_the_last_line_and_checks_the_shape() {
        let out = format!("noise\n{}\n\n", doc(&[52.5, 53.0]));
        let r = parse(&out, 30, 8, 2).unwrap();
        assert_eq!(r.concrete_ml, "1.9.0");
        assert_eq!(r.keygen_s, Some(12.0));
        assert!((r.mean_seconds_per_batch - 52.75).abs() < 1e-9);
        let e = format!("{:#}", parse(&out, 20, 8, 2).unwrap_err());
        assert!(e.contains("8 x 30"), "{e}");
        let e = format!("{:#}", parse(&out, 30, 8, 3).unwrap_err());
        assert!(e.contains("timed 2 batches"), "{e}");
        assert!(parse("", 30, 8, 2).is_err());
        assert!(parse("{\"schema\": 1}", 30, 8, 2).is_err());
        assert!(parse(&doc(&[52.5, -1.0]), 30, 8, 2).is_err());
    }

    #[test]
    fn csv_has_a_header_and_round_trips_values() {
        let s = to_csv(&[vec![0.1, -2.5e-7], vec![3.0, 4.0]], &[1, 0]);
        assert_eq!(s, "f0,f1,target\n0.1,-0.00000025,1\n3,4,0\n");
    }
}
