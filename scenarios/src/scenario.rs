//! The `diabetes` scenario: its options, data loading and splitting, the
//! cleartext twin, the federated run held to it, and the outputs in `--out`.
//! The pieces are the modules below it (`prep`, `federation`, `verify`,
//! `outcome`, `table`, `plot`); this module only strings them together.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use learning::{ConsortiumSchema, Dataset, Metrics, Mode, ModelKind, Preprocessor};
use serde::Serialize;

use crate::classify::{self, ClassOutcome};
use crate::outcome::{self, Outcome};
use crate::plan::{Plan, Scaling};
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

/// Model kind as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelArg {
    /// Least squares.
    Linear,
    /// Least squares with an L2 penalty (`--l2`), the intercept unpenalized.
    Ridge,
    /// Binary logistic regression (0/1 targets).
    Logistic,
}

impl From<ModelArg> for ModelKind {
    fn from(m: ModelArg) -> ModelKind {
        match m {
            ModelArg::Linear => ModelKind::Linear,
            ModelArg::Ridge => ModelKind::Ridge,
            ModelArg::Logistic => ModelKind::Logistic,
        }
    }
}

/// Which built-in scenario runs (it picks the data and the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// python-paillier's federated diabetes example (regression).
    Diabetes,
    /// Breast cancer diagnosis (classification), hospitals with different case mixes.
    BreastCancer,
}

/// Options of `scenarios diabetes` and `scenarios breast-cancer`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiabetesArgs {
    /// Number of hospitals, one process each (at least 3: with two, each learns the
    /// other's gradient from the aggregate)
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub hospitals: usize,
    /// Federated rounds, also the local-only training iterations [default: 50 for the
    /// example; 300 when the federation scales the rows]
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Learning rate: the step on the mean gradient, in every mode [default: in seed
    /// mode the example's 0.01 on summed gradients, i.e. 0.01 x rows per hospital (1.3
    /// for 130 rows); on standardized rows in global mode 1 / (d + l2) for least
    /// squares and 1 / (d / 4 + l2) for logistic regression, d the number of features
    /// with the intercept: below 2 / (largest curvature) whatever the data, so gradient
    /// descent converges; else 0.01]
    #[arg(long, value_name = "RATE")]
    pub eta: Option<f64>,
    /// Paillier key size in bits (below 2048 is refused as insecure; larger is slower)
    #[arg(long, default_value_t = 2048, value_name = "BITS")]
    pub key_bits: usize,
    /// Seed of NumPy's legacy RandomState used for the split (42 is the published example's)
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
    /// How rows are split into the test set and the hospitals [default: seed (the
    /// example's); biased for breast-cancer]
    #[arg(long, value_enum)]
    pub split: Option<SplitKind>,
    /// Update rule of the federation [default: seed for the example; global when the
    /// federation scales the rows]
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// The model [default: linear; logistic for breast-cancer]
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
    /// L2 penalty on the mean loss (ridge; also allowed for logistic)
    #[arg(long, default_value_t = 0.0, value_name = "LAMBDA")]
    pub l2: f64,
    /// Global mode only: stop once the mean gradient's norm is below this [default:
    /// run every round]
    #[arg(long, value_name = "NORM")]
    pub tolerance: Option<f64>,
    /// CSV (header row, numeric cells) to use instead of the built-in data: every
    /// hospital gets raw, unscaled rows and the federation standardizes them from the
    /// securely summed statistics of the hospitals' training rows; the intercept is
    /// added by the system [default: the built-in data]
    #[arg(long, value_name = "CSV")]
    pub data: Option<PathBuf>,
    /// Target column of --data
    #[arg(long, value_name = "COL", default_value = "target")]
    pub target: String,
    /// Test-set rows [default: 50, or a fifth of the rows for small data]
    #[arg(long, value_name = "N")]
    pub test_size: Option<usize>,
    /// Use the rows as they are, unscaled (the intercept is still added)
    #[arg(long, conflicts_with = "pooled_scaling")]
    pub no_scale: bool,
    /// REPRODUCTION AID, not something a consortium can do: scale the whole file before
    /// splitting it (scikit-learn's load_diabetes does this, so python-paillier's example
    /// with a current scikit-learn is reproduced); no real party holds the pooled rows
    #[arg(long)]
    pub pooled_scaling: bool,
    /// Output directory for results.json and the plot [default: out/diabetes or
    /// out/breast-cancer]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
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
    /// How the hospitals' ring messages travel: relay (through the coordinator, sealed
    /// end to end; no hospital listens) or direct (each hospital listens for its ring
    /// predecessor) [default: relay]
    #[arg(long, value_enum, default_value = "relay", value_name = "MODE")]
    pub transport: hospital_node::config::Transport,
    /// Decrypt with a threshold key instead of the coordinator's own: a dealer (this
    /// command, as `key-ceremony deal` does) deals one share per hospital before the run;
    /// each round's sum is decrypted by T hospitals together, the coordinator alone cannot
    /// [default T: the majority of the hospitals]
    #[arg(long, value_name = "T", num_args = 0..=1, require_equals = true)]
    pub threshold: Option<Option<u32>>,
}

impl DiabetesArgs {
    /// The output directory.
    pub fn out_dir(&self, kind: Builtin) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(match kind {
                Builtin::Diabetes => "out/diabetes",
                Builtin::BreastCancer => "out/breast-cancer",
            })
        })
    }

    /// Checks the options before any file is read or written.
    pub fn plan(&self, kind: Builtin) -> Result<Plan> {
        ensure!(
            self.hospitals >= 3,
            "--hospitals {}: at least 3 hospitals are needed; with two, each could \
             subtract its own gradient from the aggregate and learn the other's",
            self.hospitals
        );
        ensure!(self.rounds != Some(0), "--rounds must be at least 1");
        if let Some(eta) = self.eta {
            ensure!(
                eta.is_finite() && eta > 0.0,
                "--eta {eta} must be a positive number"
            );
        }
        ensure!(
            self.key_bits >= 2048,
            "--key-bits {}: keys below 2048 bits are not secure",
            self.key_bits
        );
        ensure!(!self.target.is_empty(), "--target must name a column");
        ensure!(
            self.l2.is_finite() && self.l2 >= 0.0,
            "--l2 {} must be a non-negative number",
            self.l2
        );
        let prescaled = self.data.is_none() && kind == Builtin::Diabetes;
        if prescaled && (self.no_scale || self.pooled_scaling) {
            bail!(
                "--no-scale and --pooled-scaling apply to raw rows (--data, breast-cancer); the \
                 built-in diabetes data is already scaled"
            );
        }
        let scaling = if prescaled || self.no_scale {
            Scaling::None
        } else if self.pooled_scaling {
            Scaling::Pooled
        } else {
            Scaling::Federated
        };
        let model: ModelKind = self.model.map(Into::into).unwrap_or(match kind {
            Builtin::Diabetes => ModelKind::Linear,
            Builtin::BreastCancer => ModelKind::Logistic,
        });
        if model == ModelKind::Ridge {
            ensure!(self.l2 > 0.0, "--model ridge needs a positive --l2");
        }
        let mode: Mode = self.mode.map(Into::into).unwrap_or(match scaling {
            Scaling::Federated => Mode::Global,
            Scaling::None | Scaling::Pooled => Mode::Seed,
        });
        if self.tolerance.is_some() {
            ensure!(mode == Mode::Global, "--tolerance needs --mode global");
            ensure!(
                self.tolerance.is_some_and(|t| t.is_finite() && t > 0.0),
                "--tolerance must be a positive number"
            );
        }
        let rounds = self.rounds.unwrap_or(match scaling {
            Scaling::Federated => 300,
            Scaling::None | Scaling::Pooled => 50,
        });
        let data = match (&self.data, kind) {
            (Some(p), _) => p.display().to_string(),
            (None, Builtin::Diabetes) => "built-in diabetes (scikit-learn load_diabetes)".into(),
            (None, Builtin::BreastCancer) => {
                "built-in breast cancer (Wisconsin diagnostic, scikit-learn)".into()
            }
        };
        Ok(Plan {
            data,
            hospitals: self.hospitals,
            rounds,
            // The default needs the data's width and rows per hospital:
            // resolved then (see `resolve_eta`).
            eta: self.eta.unwrap_or(f64::NAN),
            key_bits: self.key_bits,
            seed: self.seed,
            split: self.split.unwrap_or(match kind {
                Builtin::Diabetes => SplitKind::Seed,
                Builtin::BreastCancer => SplitKind::Biased,
            }),
            mode,
            test_size: self.test_size,
            scaled: scaling != Scaling::None,
            scaling,
            model,
            l2: self.l2,
            tolerance: self.tolerance,
            evaluate: true,
            masks: !self.no_masks,
            pack: !self.no_pack,
            transport: self.transport,
            flood: 0,
            threshold: self
                .threshold
                .map(|t| t.unwrap_or_else(|| key_ceremony::default_threshold(self.hospitals))),
        })
    }

    /// Loads the rows as the hospitals export them, without an intercept: the
    /// built-in data, or `--data` (scaled here only with `--pooled-scaling`).
    pub fn load(&self, kind: Builtin) -> Result<Dataset> {
        let raw = match (&self.data, kind) {
            (None, Builtin::Diabetes) => return prep::diabetes_features(),
            (None, Builtin::BreastCancer) => prep::breast_cancer()?,
            (Some(path), _) => Dataset::from_csv_path(path, &self.target)
                .with_context(|| format!("reading --data {}", path.display()))?,
        };
        ensure!(
            !raw.feature_names().iter().any(|n| n == prep::INTERCEPT),
            "the data already have a column named {:?}; rename it (the system adds the \
             intercept)",
            prep::INTERCEPT
        );
        if self.pooled_scaling {
            return learning::sklearn_scale(&raw).context("scaling the whole file");
        }
        Ok(raw)
    }
}

/// The plan's learning rate: as given, or by default [`learning::converging_eta`]
/// on standardized rows in global mode, python-paillier's 0.01 on summed
/// gradients ([`learning::eta_from_summed`]) in seed mode, else 0.01.
fn resolve_eta(plan: &mut Plan, features: usize, split: &Split) {
    if plan.eta.is_nan() {
        let rows = split.hospitals.iter().map(Dataset::n_rows).sum();
        plan.eta = match plan.mode {
            Mode::Global if plan.scaling != Scaling::None => {
                learning::converging_eta(plan.model, features, plan.l2)
            }
            Mode::Seed => learning::eta_from_summed(0.01, rows, split.hospitals.len()),
            Mode::Global => 0.01,
        };
    }
}

/// A scenario's data: the rows the hospitals export (`raw`), the consortium
/// schema every node names, and the same rows preprocessed as the federation
/// will (`model`, the cleartext twin's input).
pub struct Prepared {
    /// The hospitals' exports and the test set, as written to their CSVs.
    pub raw: Split,
    /// The consortium schema.
    pub schema: ConsortiumSchema,
    /// The rows as the federation trains on them.
    pub model: Split,
    /// The preprocessing derived from the hospitals' pooled training rows.
    pub preprocessor: Preprocessor,
}

/// Loads, splits and preprocesses the data; resolves the learning rate.
pub fn prepare(args: &DiabetesArgs, kind: Builtin, plan: &mut Plan) -> Result<Prepared> {
    let data = args.load(kind)?;
    let test_size = plan
        .test_size
        .unwrap_or_else(|| prep::default_test_size(data.n_rows()));
    let raw = prep::split(&data, plan.split, plan.hospitals, test_size, plan.seed)?;
    let schema = prep::schema_for(&data, plan.scaling == Scaling::Federated)?;
    if plan.model == ModelKind::Logistic {
        plan.model
            .check_target(schema.target(), data.y())
            .context("--model logistic")?;
    }
    let (model, preprocessor) = prep::preprocess(&schema, &raw)?;
    resolve_eta(plan, schema.feature_names().len(), &model);
    Ok(Prepared {
        raw,
        schema,
        model,
        preprocessor,
    })
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
    /// Test MSE per hospital, per round, pooled reference (regression).
    pub outcome: Option<&'a Outcome>,
    /// Test log-loss, accuracy and AUC per hospital, pooled reference
    /// (classification).
    pub classification: Option<&'a ClassOutcome>,
    /// The federated model's metrics over every hospital's test rows, from
    /// the federation's secure evaluation step (each hospital holds the
    /// shared test set here, so every test row counts once per hospital).
    pub pooled_metrics: Option<Metrics>,
    /// The secure statistics held to the cleartext ones.
    pub statistics: Option<StatisticsCheck>,
    /// Verification against the cleartext twin.
    pub verification: Verification,
    /// Final federated weights per hospital.
    pub federated_weights: Vec<Vec<f64>>,
    /// Local-only weights per hospital.
    pub local_weights: Vec<Vec<f64>>,
    /// What the federation itself reported (timings, memory), when it ran.
    pub federation: Option<serde_json::Value>,
}

/// The scaling the federation derived from its secure statistics step
/// against the one computed in the clear from the hospitals' rows.
#[derive(Debug, Clone, Serialize)]
pub struct StatisticsCheck {
    /// Largest relative difference of a mean or standard deviation.
    pub max_rel_diff: f64,
    /// The bound it must respect.
    pub tolerance: f64,
}

/// Bound on the relative difference of the securely aggregated scaling to
/// the cleartext one: the fixed-point encoding of the statistics resolves
/// 2^-36 per value.
pub const STATISTICS_TOLERANCE: f64 = 1e-9;

/// Holds the scaler in the coordinator's results to `pre`'s.
fn check_statistics(
    report: Option<&serde_json::Value>,
    pre: &Preprocessor,
) -> Result<Option<StatisticsCheck>> {
    let Some(expected) = &pre.scaler else {
        return Ok(None);
    };
    let got: learning::Scaler = serde_json::from_value(
        report
            .map(|r| r["scaler"].clone())
            .context("the federation reported no results")?,
    )
    .context("the coordinator's results hold no scaler")?;
    ensure!(
        got.features == expected.features,
        "the federation scaled {:?}, expected {:?}",
        got.features,
        expected.features
    );
    let mut max = 0.0f64;
    for (a, b) in got
        .mean
        .iter()
        .chain(&got.std)
        .zip(expected.mean.iter().chain(&expected.std))
    {
        let rel = (a - b).abs() / b.abs().max(f64::MIN_POSITIVE);
        max = if rel.is_nan() {
            f64::INFINITY
        } else {
            max.max(rel)
        };
    }
    ensure!(
        max <= STATISTICS_TOLERANCE,
        "the secure statistics disagree with the hospitals' rows: relative difference {max:e} > \
         {STATISTICS_TOLERANCE:e}"
    );
    Ok(Some(StatisticsCheck {
        max_rel_diff: max,
        tolerance: STATISTICS_TOLERANCE,
    }))
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
    for name in [
        "results.json",
        "log_loss_per_round.png",
        "mse_per_round.png",
    ] {
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
    run_scenario(args, Builtin::Diabetes)
}

/// `scenarios breast-cancer`.
pub fn run_breast_cancer(args: &DiabetesArgs) -> Result<()> {
    run_scenario(args, Builtin::BreastCancer)
}

fn describe_scaling(s: Scaling) -> &'static str {
    match s {
        Scaling::None => "rows used as given",
        Scaling::Federated => "scaled by the federation from its secure statistics",
        Scaling::Pooled => "whole file scaled before the split (reproduction aid)",
    }
}

fn run_scenario(args: &DiabetesArgs, kind: Builtin) -> Result<()> {
    let mut plan = args.plan(kind)?;
    let out = args.out_dir(kind);
    clear_outputs(&out)?;
    let prepared = prepare(args, kind, &mut plan)?;
    let split = &prepared.model;
    println!(
        "data: {} | {} hospitals, {} test rows, {} features (intercept included), split {}, \
         seed {}, model {}, mode {}, {} rounds, eta {:.4}, {}",
        plan.data,
        plan.hospitals,
        split.test.n_rows(),
        split.test.n_features(),
        format!("{:?}", plan.split).to_lowercase(),
        plan.seed,
        plan.model,
        plan.mode,
        plan.rounds,
        plan.eta,
        describe_scaling(plan.scaling),
    );
    if plan.mode == Mode::Seed {
        let per = split.hospitals.iter().map(Dataset::n_rows).sum::<usize>() as f64
            / split.hospitals.len() as f64;
        println!(
            "eta is the step on the mean gradient: {} here is python-paillier's {:.4} on summed \
             gradients with {per} rows per hospital",
            plan.eta,
            plan.eta / per
        );
    }

    // The hospitals get their raw exports and the schema; the federation's
    // final weights are held to the cleartext twin on the preprocessed rows.
    let bins = crate::binaries::locate()?;
    let fed = crate::federation::run(
        &bins,
        &plan,
        &prepared.raw,
        Some(&prepared.schema),
        args.keep_workdir,
    )?;
    let objective = plan.objective(prepared.schema.intercept_index());
    let (twin, diff) = crate::verify::against_twin(&plan, &objective, split, &fed)?;
    let statistics = check_statistics(fed.report.as_ref(), &prepared.preprocessor)?;
    let pooled_metrics: Option<Metrics> = fed
        .report
        .as_ref()
        .and_then(|r| serde_json::from_value(r["pooled_metrics"].clone()).ok());
    let trained = twin.weights_per_round.len();

    println!();
    let plot = out.join(if plan.model.is_classifier() {
        "log_loss_per_round.png"
    } else {
        "mse_per_round.png"
    });
    let title_loss = if plan.model.is_classifier() {
        "log-loss"
    } else {
        "MSE"
    };
    let title = format!(
        "Test {title_loss} per round ({} hospitals, {} {}, eta {:.4})",
        plan.hospitals, plan.model, plan.mode, plan.eta
    );
    let (regression, classification) = if plan.model == ModelKind::Logistic {
        let o = classify::evaluate(split, &plan.twin(), &objective, &twin, &fed.final_weights)?;
        print!("{}", classify::table(&o));
        crate::plot::write_plot(&plot, &classify::curves(&o), &title)?;
        (None, Some(o))
    } else {
        let o = outcome::evaluate(
            split,
            &plan.twin(),
            &twin,
            &fed.final_weights,
            fed.test_mse_history.as_deref(),
        )?;
        print!("{}", crate::table::table(&o));
        crate::plot::write_plot(&plot, &crate::plot::Curves::mse(&o), &title)?;
        (Some(o), None)
    };
    if trained < plan.rounds {
        println!(
            "stopped at the tolerance after {trained} of {} rounds",
            plan.rounds
        );
    }
    if let Some(m) = &pooled_metrics {
        println!(
            "secure evaluation (federated model, every hospital's test rows): {}",
            describe_metrics(m)
        );
    }
    if let Some(c) = &statistics {
        println!(
            "verified: the federation's scaling from its secure statistics equals the scaling of \
             the hospitals' pooled rows (max relative difference {:.2e} <= {:e})",
            c.max_rel_diff, c.tolerance
        );
    }
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
    let results = Results {
        complete: true,
        plan: &plan,
        dropped_rows: split.dropped_rows,
        outcome: regression.as_ref(),
        classification: classification.as_ref(),
        pooled_metrics,
        statistics,
        verification: Verification {
            max_abs_weight_diff: diff,
            tolerance: WEIGHT_TOLERANCE,
        },
        federated_weights: fed.final_weights.iter().map(|w| w.to_vec()).collect(),
        local_weights: twin.local_weights.iter().map(|w| w.to_vec()).collect(),
        federation: fed.report,
    };
    let path = write_results(&out, &results)?;
    println!("wrote {} and {}", path.display(), plot.display());
    Ok(())
}

/// Metrics in one line.
fn describe_metrics(m: &Metrics) -> String {
    match m {
        Metrics::Regression { rows, mse, mae, r2 } => {
            format!("MSE {mse:.2}, MAE {mae:.2}, R^2 {r2:.3} over {rows} rows")
        }
        Metrics::Classification {
            rows,
            log_loss,
            accuracy,
            auc,
        } => format!(
            "log-loss {log_loss:.4}, accuracy {:.1}%, AUC {auc:.3} over {rows} rows",
            100.0 * accuracy
        ),
    }
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
        let a = args(&[]);
        let mut p = a.plan(Builtin::Diabetes).unwrap();
        assert_eq!((p.hospitals, p.rounds, p.seed), (3, 50, 42));
        // The example's 0.01 on summed gradients, 130 rows per hospital.
        prepare(&a, Builtin::Diabetes, &mut p).unwrap();
        assert_eq!(p.eta, 1.3);
        assert_eq!((p.split, p.mode), (SplitKind::Seed, Mode::Seed));
        assert!(p.masks && p.pack);
    }

    #[test]
    fn bad_options_are_refused_before_io() {
        let e = args(&["--hospitals", "2"])
            .plan(Builtin::Diabetes)
            .unwrap_err();
        assert!(format!("{e:#}").contains("at least 3"), "{e:#}");
        assert!(args(&["--eta=-1"]).plan(Builtin::Diabetes).is_err());
        assert!(args(&["--rounds", "0"]).plan(Builtin::Diabetes).is_err());
        assert!(args(&["--key-bits", "1024"])
            .plan(Builtin::Diabetes)
            .is_err());
        assert!(args(&["--no-scale"]).plan(Builtin::Diabetes).is_err());
    }

    /// The outcome of the cleartext twin alone for these options.
    fn twin_outcome(extra: &[&str]) -> Outcome {
        let a = args(extra);
        let mut plan = a.plan(Builtin::Diabetes).unwrap();
        let split = prepare(&a, Builtin::Diabetes, &mut plan).unwrap().model;
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
        let o = twin_outcome(&["--data", path, "--pooled-scaling"]);
        let fed: Vec<f64> = o.hospitals.iter().map(|h| h.federated_mse).collect();
        let python = [3695.765644829551, 3855.134253455481, 3598.623919743417];
        for (a, b) in fed.iter().zip(python) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
