//! The `diabetes` scenario: its options, data loading and splitting, the
//! cleartext twin, the federated run held to it, and the outputs in `--out`.
//! The pieces are the modules below it (`prep`, `federation`, `verify`,
//! `outcome`, `table`, `plot`); this module only strings them together.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use learning::{Dataset, Mode};
use serde::Serialize;

use crate::outcome::{self, Outcome};
use crate::plan::Plan;
use crate::prep::{self, Split, SplitKind};
use crate::verify::WEIGHT_TOLERANCE;

/// Training mode as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Each hospital starts from its local model (python-paillier's example).
    Seed,
    /// One shared model from zeros; equals gradient descent on the pooled data.
    Global,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Seed => Mode::Seed,
            ModeArg::Global => Mode::Global,
        }
    }
}

/// Options of `scenarios diabetes`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiabetesArgs {
    /// Number of hospitals, one process each (at least 3: with two, each learns the
    /// other's gradient from the aggregate)
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub hospitals: usize,
    /// Federated rounds, also the local-only training iterations
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub rounds: usize,
    /// Learning rate of every gradient step
    #[arg(long, default_value_t = 0.01, value_name = "RATE")]
    pub eta: f64,
    /// Paillier key size in bits (below 2048 is refused as insecure; larger is slower)
    #[arg(long, default_value_t = 2048, value_name = "BITS")]
    pub key_bits: usize,
    /// Seed of NumPy's legacy RandomState used for the split (42 is the published example's)
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
    /// How rows are split into the test set and the hospitals
    #[arg(long, value_enum, default_value_t = SplitKind::Seed)]
    pub split: SplitKind,
    /// Update rule of the federation
    #[arg(long, value_enum, default_value_t = ModeArg::Seed)]
    pub mode: ModeArg,
    /// Regression CSV (header row) to use instead of the built-in diabetes data; its
    /// features are scaled like load_diabetes() unless --no-scale, and an intercept
    /// column is appended [default: the built-in diabetes data]
    #[arg(long, value_name = "CSV")]
    pub data: Option<PathBuf>,
    /// Target column of --data
    #[arg(long, value_name = "COL", default_value = "target")]
    pub target: String,
    /// Test-set rows [default: 50, or a fifth of the rows for small data]
    #[arg(long, value_name = "N")]
    pub test_size: Option<usize>,
    /// Use the --data features as they are, without scaling [default: scaled]
    #[arg(long)]
    pub no_scale: bool,
    /// Output directory for results.json and the plot
    #[arg(long, value_name = "DIR", default_value = "out/diabetes")]
    pub out: PathBuf,
    /// Keep the work directory (PKI, configs, CSVs, logs) and print its path [default: removed
    /// after a successful run, kept after a failed one]
    #[arg(long)]
    pub keep_workdir: bool,
    /// Turn off the hospitals' pairwise masks (the classic ring). WEAKENS PRIVACY: the
    /// coordinator colluding with a hospital's two ring neighbours then learns that
    /// hospital's gradient; with masks it would need every other hospital of the ring
    /// [default: masks on]
    #[arg(long)]
    pub no_masks: bool,
    /// Send one ciphertext per gradient value instead of packing several into each: the
    /// same privacy, more traffic, slower rounds [default: packing on]
    #[arg(long)]
    pub no_pack: bool,
}

impl DiabetesArgs {
    /// Checks the options before any file is read or written.
    pub fn plan(&self) -> Result<Plan> {
        ensure!(
            self.hospitals >= 3,
            "--hospitals {}: at least 3 hospitals are needed; with two, each could \
             subtract its own gradient from the aggregate and learn the other's",
            self.hospitals
        );
        ensure!(self.rounds >= 1, "--rounds must be at least 1");
        ensure!(
            self.eta.is_finite() && self.eta > 0.0,
            "--eta {} must be a positive number",
            self.eta
        );
        ensure!(
            self.key_bits >= 2048,
            "--key-bits {}: keys below 2048 bits are not secure",
            self.key_bits
        );
        ensure!(!self.target.is_empty(), "--target must name a column");
        if self.data.is_none() && self.no_scale {
            bail!("--no-scale applies to --data only (the built-in data is already scaled)");
        }
        Ok(Plan {
            data: self.data.as_ref().map_or_else(
                || "built-in diabetes (scikit-learn load_diabetes)".into(),
                |p| p.display().to_string(),
            ),
            hospitals: self.hospitals,
            rounds: self.rounds,
            eta: self.eta,
            key_bits: self.key_bits,
            seed: self.seed,
            split: self.split,
            mode: self.mode.into(),
            test_size: self.test_size,
            scaled: !self.no_scale,
            masks: !self.no_masks,
            pack: !self.no_pack,
            flood: 0,
        })
    }

    /// Loads the data: built-in diabetes, or `--data` scaled plus intercept.
    pub fn load(&self) -> Result<Dataset> {
        match &self.data {
            None => prep::diabetes(),
            Some(path) => {
                let raw = Dataset::from_csv_path(path, &self.target)
                    .with_context(|| format!("reading --data {}", path.display()))?;
                let scaled = if self.no_scale {
                    raw
                } else {
                    learning::sklearn_scale(&raw).context("scaling features")?
                };
                ensure!(
                    !scaled.feature_names().iter().any(|n| n == prep::INTERCEPT),
                    "--data {} already has a column named {:?}; rename it",
                    path.display(),
                    prep::INTERCEPT
                );
                scaled
                    .with_intercept(prep::INTERCEPT)
                    .context("appending the intercept column")
            }
        }
    }
}

/// Loads and splits the data.
pub fn prepare(args: &DiabetesArgs, plan: &Plan) -> Result<Split> {
    let data = args.load()?;
    let test_size = plan
        .test_size
        .unwrap_or_else(|| prep::default_test_size(data.n_rows()));
    prep::split(&data, plan.split, plan.hospitals, test_size, plan.seed)
}

/// Everything written to `results.json`.
#[derive(Debug, Serialize)]
pub struct Results<'a> {
    /// True only when the whole run finished and verified.
    pub complete: bool,
    /// Settings.
    pub plan: &'a Plan,
    /// Training rows dropped by the split.
    pub dropped_rows: usize,
    /// Test MSE per hospital, per round, pooled reference.
    pub outcome: &'a Outcome,
    /// Verification against the cleartext twin.
    pub verification: Verification,
    /// Final federated weights per hospital.
    pub federated_weights: Vec<Vec<f64>>,
    /// Local-only weights per hospital.
    pub local_weights: Vec<Vec<f64>>,
    /// What the federation itself reported (timings, memory), when it ran.
    pub federation: Option<serde_json::Value>,
}

/// Result of holding the encrypted run to its cleartext twin.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Max abs difference between encrypted and cleartext final weights.
    pub max_abs_weight_diff: f64,
    /// The bound it must respect.
    pub tolerance: f64,
}

/// Removes outputs of an earlier run so that a failed run leaves nothing that
/// looks complete.
fn clear_outputs(out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating --out {}", out.display()))?;
    for name in ["results.json", "mse_per_round.png"] {
        let p = out.join(name);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing stale {}", p.display())),
        }
    }
    Ok(())
}

/// Writes `results.json` atomically (temporary file, then rename).
fn write_results(out: &Path, results: &Results<'_>) -> Result<PathBuf> {
    let path = out.join("results.json");
    let tmp = out.join("results.json.partial");
    let text = serde_json::to_string_pretty(results).context("serializing results")?;
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

/// `scenarios diabetes`.
pub fn run_diabetes(args: &DiabetesArgs) -> Result<()> {
    let plan = args.plan()?;
    clear_outputs(&args.out)?;
    let split = &prepare(args, &plan)?;
    println!(
        "data: {} | {} hospitals, {} test rows, {} features (intercept included), split {}, seed {}, mode {}",
        plan.data,
        plan.hospitals,
        split.test.n_rows(),
        split.test.n_features(),
        format!("{:?}", plan.split).to_lowercase(),
        plan.seed,
        plan.mode
    );

    // The encrypted multi-process federation is driven from `federation`; its
    // final weights are held to the cleartext twin of the rounds it ran.
    let bins = crate::binaries::locate()?;
    let fed = crate::federation::run(&bins, &plan, split, args.keep_workdir)?;
    let (twin, diff) = crate::verify::against_twin(&plan, split, &fed)?;

    let outcome = outcome::evaluate(
        split,
        &plan.twin(),
        &twin,
        &fed.final_weights,
        fed.test_mse_history.as_deref(),
    )?;
    println!();
    print!("{}", crate::table::table(&outcome));
    println!(
        "verified: encrypted multi-process weights equal the in-process cleartext run \
         (max abs difference {diff:.2e} <= {WEIGHT_TOLERANCE:e})"
    );
    if split.dropped_rows > 0 {
        println!(
            "note: {} training rows left out by the split (as the example does)",
            split.dropped_rows
        );
    }
    let plot = args.out.join("mse_per_round.png");
    crate::plot::write_plot(
        &plot,
        &outcome,
        &format!(
            "Test MSE per round ({} hospitals, mode {}, eta {})",
            plan.hospitals, plan.mode, plan.eta
        ),
    )?;
    let results = Results {
        complete: true,
        plan: &plan,
        dropped_rows: split.dropped_rows,
        outcome: &outcome,
        verification: Verification {
            max_abs_weight_diff: diff,
            tolerance: WEIGHT_TOLERANCE,
        },
        federated_weights: fed.final_weights.iter().map(|w| w.to_vec()).collect(),
        local_weights: twin.local_weights.iter().map(|w| w.to_vec()).collect(),
        federation: fed.report,
    };
    let path = write_results(&args.out, &results)?;
    println!("wrote {} and {}", path.display(), plot.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: DiabetesArgs,
    }

    fn args(extra: &[&str]) -> DiabetesArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        T::try_parse_from(v).unwrap().a
    }

    #[test]
    fn defaults_are_the_example() {
        let p = args(&[]).plan().unwrap();
        assert_eq!((p.hospitals, p.rounds, p.eta, p.seed), (3, 50, 0.01, 42));
        assert_eq!((p.split, p.mode), (SplitKind::Seed, Mode::Seed));
        assert!(p.masks && p.pack);
    }

    #[test]
    fn bad_options_are_refused_before_io() {
        let e = args(&["--hospitals", "2"]).plan().unwrap_err();
        assert!(format!("{e:#}").contains("at least 3"), "{e:#}");
        assert!(args(&["--eta=-1"]).plan().is_err());
        assert!(args(&["--rounds", "0"]).plan().is_err());
        assert!(args(&["--key-bits", "1024"]).plan().is_err());
        assert!(args(&["--no-scale"]).plan().is_err());
    }

    /// The outcome of the cleartext twin alone for these options.
    fn twin_outcome(extra: &[&str]) -> Outcome {
        let a = args(extra);
        let plan = a.plan().unwrap();
        let split = prepare(&a, &plan).unwrap();
        let reference = plan.twin().run(&split.hospitals).unwrap();
        outcome::evaluate(
            &split,
            &plan.twin(),
            &reference,
            &reference.final_weights,
            None,
        )
        .unwrap()
    }

    /// The cleartext twin on the built-in data reproduces python-paillier's
    /// published table to the two decimals printed.
    #[test]
    fn reference_reproduces_the_published_table() {
        let o = twin_outcome(&[]);
        let local: Vec<String> = o
            .hospitals
            .iter()
            .map(|h| format!("{:.2}", h.local_mse))
            .collect();
        let fed: Vec<String> = o
            .hospitals
            .iter()
            .map(|h| format!("{:.2}", h.federated_mse))
            .collect();
        assert_eq!(local, ["3933.78", "4176.48", "3795.95"]);
        assert_eq!(fed, ["3695.77", "3855.14", "3598.63"]);
        // The curve starts at the local-only level in seed mode.
        for h in &o.hospitals {
            assert_eq!(h.mse_per_round.len(), 51);
            assert_eq!(h.mse_per_round[0], h.local_mse);
            assert_eq!(*h.mse_per_round.last().unwrap(), h.federated_mse);
        }
    }

    /// With the raw file scaled here, the numbers are those python-paillier's
    /// example prints with scikit-learn >= 1.1 (which scales the raw file too).
    #[test]
    fn raw_file_reproduces_current_scikit_learn() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/diabetes.csv");
        let o = twin_outcome(&["--data", path]);
        let fed: Vec<f64> = o.hospitals.iter().map(|h| h.federated_mse).collect();
        let python = [3695.765644829551, 3855.134253455481, 3598.623919743417];
        for (a, b) in fed.iter().zip(python) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
