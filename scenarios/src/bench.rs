//! `scenarios bench`: python-paillier running the same protocol in one process
//! against this project's multi-process federation (training seconds and
//! ratio, same data, key size, rounds), then the scaling table of round latency
//! against hospitals and features at each key size, with peak RSS per process.
//!
//! The Python side is `python/paillier_federation.py`; its virtual environment
//! (`.venv` at the workspace root, ignored by git) is created and given `phe`,
//! `gmpy2` and `numpy` with pip when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use learning::ndarray::{Array1, Array2};
use learning::{Dataset, Mode};
use serde::Serialize;
use serde_json::Value;

use crate::binaries::{self, Binaries};
use crate::federation;
use crate::nodes::{self, Timings};
use crate::numpy_rng::RandomState;
use crate::plan::Plan;
use crate::prep::{self, Split, SplitKind};
use crate::verify::{self, max_abs_diff};

const PYTHON_SCRIPT: &str = include_str!("../python/paillier_federation.py");

/// Options of `scenarios bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Paillier key size in bits of the side-by-side comparison with python-paillier
    #[arg(long, default_value_t = 2048, value_name = "BITS")]
    pub key_bits: usize,
    /// Rounds of the side-by-side comparison (diabetes, 3 hospitals, seed split)
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub rounds: usize,
    /// Skip the python-paillier comparison (and so the Python set-up) [default: run it]
    #[arg(long)]
    pub skip_python: bool,
    /// Python interpreter used to create the virtual environment
    #[arg(long, default_value = "python3", value_name = "PYTHON")]
    pub python: String,
    /// Virtual environment for python-paillier, created and given phe, gmpy2 and numpy with
    /// pip when missing [default: .venv at the workspace root]
    #[arg(long, value_name = "DIR")]
    pub venv: Option<PathBuf>,
    /// Skip the scaling table [default: run it]
    #[arg(long)]
    pub skip_scaling: bool,
    /// Hospital counts of the scaling table, comma separated (each at least 3)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "3,8,16,32",
        value_name = "N,.."
    )]
    pub scaling_hospitals: Vec<usize>,
    /// Feature counts of the scaling table, comma separated
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,100,1000",
        value_name = "N,.."
    )]
    pub scaling_features: Vec<usize>,
    /// Key sizes in bits of the scaling table, comma separated (each at least 2048)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2048,3072",
        value_name = "BITS,.."
    )]
    pub scaling_key_bits: Vec<usize>,
    /// Rounds per scaling run (the median round latency is reported)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub scaling_rounds: usize,
    /// Training rows per hospital in the scaling runs
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub scaling_rows: usize,
    /// Skip the secure statistics step's cost (breast cancer, raw rows scaled by the
    /// federation, against the same run on rows scaled beforehand) [default: run it]
    #[arg(long)]
    pub skip_statistics: bool,
    /// Instead of the benchmark: peak RSS of the coordinator and of hospital-1 in a
    /// diabetes run (3 hospitals, --rounds, --key-bits) without, then with, the last
    /// hospital flooding every recipient with N junk frames per message kind at each
    /// kind's size limit after each of its messages
    #[arg(long, value_name = "N")]
    pub flood: Option<u32>,
    /// Instead of the benchmark: the median round of --threshold-hospitals x
    /// --threshold-features (2048 bits, --scaling-rounds rounds) decrypted by the
    /// coordinator's own key, then by each threshold T given (t-of-n keys dealt to the
    /// hospitals; 0 stands for the default, the majority), side by side in one run
    #[arg(long, value_delimiter = ',', value_name = "T,..")]
    pub threshold_round: Option<Vec<u32>>,
    /// Hospitals of the --threshold-round runs
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub threshold_hospitals: usize,
    /// Features of the --threshold-round runs
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub threshold_features: usize,
    /// How the hospitals' ring messages travel in every run of the benchmark: relay
    /// (through the coordinator, sealed end to end) or direct
    #[arg(long, value_enum, default_value = "relay", value_name = "MODE")]
    pub transport: hospital_node::config::Transport,
    /// Output directory for bench.json
    #[arg(long, value_name = "DIR", default_value = "out/bench")]
    pub out: PathBuf,
}

/// One side-by-side measurement.
#[derive(Debug, Serialize)]
struct SideBySide {
    key_bits: usize,
    rounds: usize,
    python_training_seconds: f64,
    python_keygen_seconds: f64,
    ours_training_seconds: f64,
    ratio: f64,
    python_max_abs_weight_diff: f64,
    ours_max_abs_weight_diff: f64,
    ours_peak_rss_bytes: Vec<(String, Option<u64>)>,
}

/// The secure statistics step's cost against a training round's.
#[derive(Debug, Serialize)]
struct StatisticsCost {
    key_bits: usize,
    hospitals: usize,
    features: usize,
    statistics_values: usize,
    gradient_values: usize,
    training_rounds: usize,
    /// Latency of the statistics step in the run with it.
    statistics_seconds: f64,
    /// Median training round latency of the same run.
    median_round_seconds: f64,
    /// `statistics_seconds / median_round_seconds`.
    ratio: f64,
    /// Whole training time of the run with the statistics step.
    with_statistics_seconds: f64,
    /// The same run on rows scaled beforehand: no statistics step.
    without_statistics_seconds: f64,
    /// `with - without`: what the step added to the run.
    added_seconds: f64,
    /// `added_seconds / median_round_seconds`.
    added_median_rounds: f64,
    /// The first round of the run without the step (it sets up what the
    /// statistics step sets up in the other run: connections, seeds).
    first_round_without_seconds: f64,
    /// `statistics_seconds / first_round_without_seconds`: the step against
    /// the first step of a run without it, which does the same set-up.
    ratio_to_first_round: f64,
    /// `added_seconds / first_round_without_seconds`: the step's cost in
    /// first rounds, at most 1 when it adds at most one round's latency.
    added_first_rounds: f64,
    max_abs_weight_diff: f64,
}

/// One cell of the scaling table.
#[derive(Debug, Serialize)]
struct ScalingCell {
    key_bits: usize,
    hospitals: usize,
    features: usize,
    median_round_seconds: f64,
    training_seconds: f64,
    max_abs_weight_diff: f64,
    peak_rss_bytes: Vec<(String, Option<u64>)>,
}

/// The benchmarks' plan: the seed split and mode, masks and packing on, no
/// statistics or evaluation step.
pub(crate) fn bench_plan(
    hospitals: usize,
    rounds: usize,
    eta: f64,
    key_bits: usize,
    data: &str,
) -> Plan {
    Plan {
        data: data.to_owned(),
        hospitals,
        rounds,
        eta,
        key_bits,
        seed: 42,
        split: SplitKind::Seed,
        mode: Mode::Seed,
        test_size: None,
        scaled: true,
        scaling: crate::plan::Scaling::None,
        model: learning::ModelKind::Linear,
        l2: 0.0,
        tolerance: None,
        evaluate: false,
        masks: true,
        pack: true,
        transport: hospital_node::config::Transport::Relay,
        flood: 0,
        threshold: None,
    }
}

/// Training rows of all hospitals.
fn split_rows(split: &Split) -> usize {
    split.hospitals.iter().map(Dataset::n_rows).sum()
}

/// Runs the federation and checks it against the cleartext twin.
fn run_checked(
    bins: &Binaries,
    plan: &Plan,
    split: &Split,
) -> Result<(Timings, f64, Vec<Array1<f64>>)> {
    let fed = federation::run(bins, plan, split, None, false)?;
    let (twin, diff) = verify::against_twin(plan, &learning::Objective::LINEAR, split, &fed)
        .context("benchmark run checked against its cleartext twin")?;
    let timings = nodes::timings(&fed)?;
    Ok((timings, diff, twin.final_weights))
}

/// `scenarios bench --threshold-round T,..`: the single-key round against
/// t-of-n rounds, in one run.
fn run_threshold_round(args: &BenchArgs, ts: &[u32]) -> Result<()> {
    let (h, f, bits) = (args.threshold_hospitals, args.threshold_features, 2048);
    ensure!(
        h >= 3,
        "--threshold-hospitals: {h} is below the federation's minimum of 3"
    );
    let bins = binaries::locate()?;
    let mut rows = Vec::new();
    for t in std::iter::once(None).chain(ts.iter().map(|&t| {
        Some(if t == 0 {
            key_ceremony::default_threshold(h)
        } else {
            t
        })
    })) {
        let what = t.map_or("the coordinator's key".to_owned(), |t| {
            format!("a {t}-of-{h} threshold key")
        });
        println!(
            "running {h} hospitals x {f} features, {bits} bits, {} rounds, {what} ...",
            args.scaling_rounds
        );
        let cell = scaling_cell(args, &bins, bits, h, f, t)
            .with_context(|| format!("threshold benchmark run ({what})"))?;
        let diff = cell.max_abs_weight_diff;
        ensure!(diff < 1e-6, "the run drifted from the twin: {diff:e}");
        rows.push((t, cell.median_round_seconds, diff));
    }
    let single = rows[0].1;
    let transport = clap::ValueEnum::to_possible_value(&args.transport)
        .map_or_else(String::new, |v| v.get_name().to_owned());
    println!("\nmedian round, {h} hospitals x {f} features, {bits} bits, {transport} transport");
    println!(
        "{:<28} {:>10} {:>14}",
        "decryption", "round s", "x single key"
    );
    let mut out = Vec::new();
    for (t, s, diff) in &rows {
        let name = t.map_or("coordinator's key".to_owned(), |t| {
            format!("threshold {t}-of-{h}")
        });
        println!("{name:<28} {s:>10.3} {:>14.2}", s / single);
        out.push(serde_json::json!({
            "threshold": t, "hospitals": h, "features": f, "key_bits": bits,
            "median_round_seconds": s, "ratio_to_single_key": s / single,
            "max_abs_weight_diff": diff,
        }));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let path = args.out.join("threshold-round.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `scenarios bench --flood N`: peak RSS flooded against unflooded.
fn run_flood(args: &BenchArgs, frames: u32) -> Result<()> {
    ensure!(frames >= 1, "--flood must be at least 1");
    let bins = binaries::locate()?;
    let data = prep::diabetes()?;
    let split = prep::split(&data, SplitKind::Seed, 3, 50, 42)?;
    let mut rss = Vec::new();
    for flood in [0, frames] {
        let eta = learning::eta_from_summed(0.01, split_rows(&split), 3);
        let mut plan = bench_plan(3, args.rounds, eta, args.key_bits, "built-in diabetes");
        plan.transport = args.transport;
        plan.flood = flood;
        println!(
            "running diabetes, 3 hospitals, {} rounds, {} bits, flood {flood} ...",
            args.rounds, args.key_bits
        );
        let (t, diff, _) = run_checked(&bins, &plan, &split)
            .with_context(|| format!("flood benchmark run (flood {flood})"))?;
        ensure!(diff < 1e-6, "flooded run drifted from the twin: {diff:e}");
        print_rss(&t.peak_rss_bytes);
        rss.push(t.peak_rss_bytes);
    }
    let get =
        |v: &[(String, Option<u64>)], n: &str| v.iter().find(|(k, _)| k == n).and_then(|(_, b)| *b);
    let mut out = serde_json::Map::new();
    println!(
        "\npeak RSS, unflooded -> flooded ({frames} junk frames per kind at its limit after \
         each message of hospital-3)"
    );
    for node in ["coordinator", "hospital-1"] {
        let (Some(a), Some(b)) = (get(&rss[0], node), get(&rss[1], node)) else {
            bail!("{node} reported no peak RSS");
        };
        let ratio = b as f64 / a as f64;
        println!(
            "{node:<12} {:>10} -> {:>10}  ratio {ratio:.2}",
            mib(Some(a)),
            mib(Some(b))
        );
        out.insert(
            node.to_owned(),
            serde_json::json!({"unflooded": a, "flooded": b, "ratio": ratio}),
        );
        ensure!(
            ratio <= 2.0,
            "{node}'s peak RSS grew {ratio:.2}x under the flood"
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let path = args.out.join("flood.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&out)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `scenarios bench`.
pub fn run_bench(args: &BenchArgs) -> Result<()> {
    if let Some(frames) = args.flood {
        return run_flood(args, frames);
    }
    if let Some(ts) = &args.threshold_round {
        return run_threshold_round(args, ts);
    }
    ensure!(
        args.rounds >= 1 && args.scaling_rounds >= 1,
        "rounds must be at least 1"
    );
    ensure!(args.scaling_rows >= 1, "--scaling-rows must be at least 1");
    for &h in &args.scaling_hospitals {
        ensure!(
            h >= 3,
            "--scaling-hospitals: {h} is below the federation's minimum of 3"
        );
    }
    for &b in args.scaling_key_bits.iter().chain([&args.key_bits]) {
        ensure!(b >= 2048, "key size {b} is below 2048 bits");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let bins = binaries::locate()?;
    let mut report = serde_json::Map::new();

    if !args.skip_python {
        let sbs = side_by_side(args, &bins)?;
        println!(
            "\npython-paillier (one process) vs this project (multi-process), diabetes, 3 hospitals, {} rounds, {} bits",
            sbs.rounds, sbs.key_bits
        );
        println!("{:<34} {:>12}", "", "training s");
        println!(
            "{:<34} {:>12.3}",
            "python-paillier", sbs.python_training_seconds
        );
        println!("{:<34} {:>12.3}", "this project", sbs.ours_training_seconds);
        println!("{:<34} {:>11.1}x", "ratio (python / ours)", sbs.ratio);
        print_rss(&sbs.ours_peak_rss_bytes);
        println!(
            "both agree with the cleartext twin: max abs weight difference python {:.1e}, ours {:.1e}",
            sbs.python_max_abs_weight_diff, sbs.ours_max_abs_weight_diff
        );
        report.insert("side_by_side".into(), serde_json::to_value(&sbs)?);
    }
    if !args.skip_statistics {
        let c = statistics_cost(args, &bins)?;
        println!(
            "\nsecure statistics step, breast cancer, {} hospitals, {} features ({} sums against {} \
             gradient values), {} bits, {} training rounds",
            c.hospitals,
            c.features,
            c.statistics_values,
            c.gradient_values,
            c.key_bits,
            c.training_rounds
        );
        println!(
            "statistics step {:.4} s; median training round {:.4} s (ratio {:.2}); first round \
             of the same run without the step {:.4} s (ratio {:.2})",
            c.statistics_seconds,
            c.median_round_seconds,
            c.ratio,
            c.first_round_without_seconds,
            c.ratio_to_first_round
        );
        println!(
            "training with the step {:.3} s, on rows scaled beforehand {:.3} s: the step added \
             {:.3} s ({:.2} first rounds)",
            c.with_statistics_seconds,
            c.without_statistics_seconds,
            c.added_seconds,
            c.added_first_rounds,
        );
        report.insert("statistics".into(), serde_json::to_value(&c)?);
    }
    if !args.skip_scaling {
        let mut cells = Vec::new();
        for &bits in &args.scaling_key_bits {
            println!(
                "\nround latency (median of {} rounds), {bits}-bit key, seconds",
                args.scaling_rounds
            );
            print!("{:>10}", "hospitals");
            for f in &args.scaling_features {
                print!(" {:>12}", format!("{f} features"));
            }
            println!();
            for &h in &args.scaling_hospitals {
                print!("{h:>10}");
                for &f in &args.scaling_features {
                    let cell = scaling_cell(args, &bins, bits, h, f, None)?;
                    print!(" {:>12.4}", cell.median_round_seconds);
                    use std::io::Write;
                    let _ = std::io::stdout().flush();
                    cells.push(cell);
                }
                println!();
            }
        }
        println!("\npeak RSS per process (MiB): coordinator / largest hospital");
        for c in &cells {
            let coord = c
                .peak_rss_bytes
                .iter()
                .find(|(n, _)| n == "coordinator")
                .and_then(|x| x.1);
            let hosp = c
                .peak_rss_bytes
                .iter()
                .filter(|(n, _)| n != "coordinator")
                .filter_map(|x| x.1)
                .max();
            println!(
                "  {} bits, {:>2} hospitals, {:>4} features: {} / {}",
                c.key_bits,
                c.hospitals,
                c.features,
                mib(coord),
                mib(hosp)
            );
        }
        report.insert("scaling".into(), serde_json::to_value(&cells)?);
    }
    let path = args.out.join("bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(report))?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "n/a".into(),
        |b| format!("{:.1}", b as f64 / (1024.0 * 1024.0)),
    )
}

fn print_rss(rss: &[(String, Option<u64>)]) {
    let parts: Vec<String> = rss
        .iter()
        .map(|(n, b)| format!("{n} {}", mib(*b)))
        .collect();
    println!("peak RSS (MiB): {}", parts.join(", "));
}

fn side_by_side(args: &BenchArgs, bins: &Binaries) -> Result<SideBySide> {
    let data = prep::diabetes()?;
    let split = prep::split(&data, SplitKind::Seed, 3, 50, 42)?;
    // python-paillier's 0.01 on summed gradients, as the one meaning of eta.
    let eta = learning::eta_from_summed(0.01, split_rows(&split), 3);
    let mut plan = bench_plan(3, args.rounds, eta, args.key_bits, "built-in diabetes");
    plan.transport = args.transport;

    let python = ensure_python(args)?;
    let dir = tempfile::Builder::new().prefix("bench-python-").tempdir()?;
    let script = dir.path().join("paillier_federation.py");
    std::fs::write(&script, PYTHON_SCRIPT)?;
    let mut csvs = Vec::new();
    for (i, h) in split.hospitals.iter().enumerate() {
        let p = dir.path().join(format!("hospital-{}.csv", i + 1));
        h.write_csv(&p)?;
        csvs.push(p);
    }
    println!(
        "running python-paillier ({} rounds, {} bits) ...",
        args.rounds, args.key_bits
    );
    let out = Command::new(&python)
        .arg(&script)
        .args([
            "--key-bits",
            &args.key_bits.to_string(),
            "--rounds",
            &args.rounds.to_string(),
        ])
        .args([
            "--eta",
            "0.01",
            "--mode",
            "seed",
            "--target",
            prep::DIABETES_TARGET,
        ])
        .args(&csvs)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "python-paillier run failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let py: Value =
        serde_json::from_slice(&out.stdout).context("parsing the Python script's JSON")?;
    let py_train = py["training_seconds"]
        .as_f64()
        .context("python: training_seconds")?;
    let py_weights: Vec<Array1<f64>> = py["final_weights"]
        .as_array()
        .context("python: final_weights")?
        .iter()
        .map(|w| {
            w.as_array()
                .context("python: a weight vector")?
                .iter()
                .map(|v| v.as_f64().context("python: a weight"))
                .collect::<Result<Vec<f64>>>()
                .map(Array1::from_vec)
        })
        .collect::<Result<_>>()?;

    println!(
        "running this project's federation ({} rounds, {} bits) ...",
        args.rounds, args.key_bits
    );
    let (timings, diff, reference) = run_checked(bins, &plan, &split)?;
    let py_diff = max_abs_diff(&py_weights, &reference)?;
    Ok(SideBySide {
        key_bits: args.key_bits,
        rounds: args.rounds,
        python_training_seconds: py_train,
        python_keygen_seconds: py["keygen_seconds"].as_f64().unwrap_or(f64::NAN),
        ours_training_seconds: timings.training_seconds,
        ratio: py_train / timings.training_seconds,
        python_max_abs_weight_diff: py_diff,
        ours_max_abs_weight_diff: diff,
        ours_peak_rss_bytes: timings.peak_rss_bytes,
    })
}

/// The statistics step's cost: breast cancer's raw rows with a schema that
/// scales (the statistics step, then training) against the same rows scaled
/// beforehand with a schema that does not (training only), same key, split
/// and rounds; both held to the cleartext twin.
fn statistics_cost(args: &BenchArgs, bins: &Binaries) -> Result<StatisticsCost> {
    let data = prep::breast_cancer()?;
    let hospitals = 3;
    let raw = prep::split(&data, SplitKind::Random, hospitals, 50, 42)?;
    let scaling = prep::schema_for(&data, true)?;
    let (scaled, _) = prep::preprocess(&scaling, &raw)?;
    let features = scaling.feature_names().len();
    let model = learning::ModelKind::Logistic;
    let mut plan = bench_plan(hospitals, args.rounds, 0.0, args.key_bits, "breast cancer");
    plan.transport = args.transport;
    plan.mode = Mode::Global;
    plan.model = model;
    plan.eta = learning::converging_eta(model, features, 0.0);
    let objective = plan.objective(scaling.intercept_index());
    let run = |plan: &Plan, split: &Split, schema: &learning::ConsortiumSchema, what: &str| {
        println!(
            "running breast cancer {what} ({} rounds, {} bits) ...",
            plan.rounds, plan.key_bits
        );
        let fed = federation::run(bins, plan, split, Some(schema), false)
            .with_context(|| format!("statistics benchmark run {what}"))?;
        let (_, diff) = verify::against_twin(plan, &objective, &scaled, &fed)
            .with_context(|| format!("statistics benchmark run {what} against its twin"))?;
        let t = nodes::timings(&fed)?;
        anyhow::Ok((fed, t, diff))
    };
    let mut with_plan = plan.clone();
    with_plan.scaling = crate::plan::Scaling::Federated;
    let (fed, with, diff_with) = run(&with_plan, &raw, &scaling, "scaled by the federation")?;
    // The scaled rows already hold the intercept column: this schema takes it
    // as a column and adds none, so both runs train on the same features.
    let given = learning::ConsortiumSchema::numeric(
        scaled.test.feature_names(),
        scaled.test.target_name(),
        false,
        false,
    )?;
    let (fed_without, without, diff_without) =
        run(&plan, &scaled, &given, "on rows scaled beforehand")?;
    let first_round_without_seconds = fed_without
        .report
        .as_ref()
        .and_then(|r| r["rounds_detail"][0]["latency_s"].as_f64())
        .context("the run without the step has no first-round latency")?;
    let report = fed
        .report
        .as_ref()
        .context("the federation wrote no results")?;
    let statistics_seconds = report["rounds_detail"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["kind"] == "statistics"))
        .and_then(|r| r["latency_s"].as_f64())
        .context("the results have no statistics step latency")?;
    let m = with.median_round_seconds;
    Ok(StatisticsCost {
        key_bits: args.key_bits,
        hospitals,
        features,
        statistics_values: scaling.statistics_len(),
        gradient_values: features,
        training_rounds: args.rounds,
        statistics_seconds,
        median_round_seconds: m,
        ratio: statistics_seconds / m,
        with_statistics_seconds: with.training_seconds,
        without_statistics_seconds: without.training_seconds,
        added_seconds: with.training_seconds - without.training_seconds,
        added_median_rounds: (with.training_seconds - without.training_seconds) / m,
        first_round_without_seconds,
        ratio_to_first_round: statistics_seconds / first_round_without_seconds,
        added_first_rounds: (with.training_seconds - without.training_seconds)
            / first_round_without_seconds,
        max_abs_weight_diff: diff_with.max(diff_without),
    })
}

/// Synthetic regression data: `features` uniform features in [-0.5, 0.5)
/// from NumPy's legacy stream, a fixed true model and small noise.
fn synthetic(hospitals: usize, rows: usize, features: usize, seed: u32) -> Result<Split> {
    let mut rs = RandomState::new(seed);
    let n = hospitals * rows + rows;
    let x = Array2::from_shape_fn((n, features), |_| rs.random_sample() - 0.5);
    let w_true = Array1::from_shape_fn(features, |j| ((j % 7) as f64 - 3.0) / 3.0);
    let noise = Array1::from_shape_fn(n, |_| rs.random_sample() - 0.5);
    let y = x.dot(&w_true) + noise;
    let names = (0..features).map(|j| format!("x{j}")).collect();
    let ds = Dataset::new(names, "y".into(), x, y)?;
    let hs = (0..hospitals)
        .map(|h| ds.select_rows(&(h * rows..(h + 1) * rows).collect::<Vec<_>>()))
        .collect();
    let test = ds.select_rows(&(hospitals * rows..n).collect::<Vec<_>>());
    Ok(Split {
        hospitals: hs,
        test,
        dropped_rows: 0,
    })
}

fn scaling_cell(
    args: &BenchArgs,
    bins: &Binaries,
    bits: usize,
    h: usize,
    f: usize,
    threshold: Option<u32>,
) -> Result<ScalingCell> {
    let split = synthetic(h, args.scaling_rows, f, 7)?;
    // A small step keeps the synthetic model well inside the fixed-point range.
    let eta = learning::eta_from_summed(0.001, split_rows(&split), h);
    let mut plan = bench_plan(h, args.scaling_rounds, eta, bits, "synthetic");
    plan.transport = args.transport;
    plan.threshold = threshold;
    let (t, diff, _) = run_checked(bins, &plan, &split)
        .with_context(|| format!("scaling run: {bits} bits, {h} hospitals, {f} features"))?;
    Ok(ScalingCell {
        key_bits: bits,
        hospitals: h,
        features: f,
        median_round_seconds: t.median_round_seconds,
        training_seconds: t.training_seconds,
        max_abs_weight_diff: diff,
        peak_rss_bytes: t.peak_rss_bytes,
    })
}

/// The venv's interpreter, creating the venv and installing phe, gmpy2 and
/// numpy when they are missing.
fn ensure_python(args: &BenchArgs) -> Result<PathBuf> {
    let venv = args
        .venv
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    let py = venv.join("bin").join("python");
    let has_modules = |py: &Path| {
        Command::new(py)
            .args(["-c", "import phe, gmpy2, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if py.is_file() && has_modules(&py) {
        return Ok(py);
    }
    if !py.is_file() {
        println!(
            "creating a Python virtual environment in {} ...",
            venv.display()
        );
        let st = Command::new(&args.python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .with_context(|| format!("running {} -m venv", args.python))?;
        ensure!(
            st.success(),
            "creating the virtual environment failed ({st})"
        );
    }
    println!(
        "installing phe, gmpy2 and numpy into {} ...",
        venv.display()
    );
    let st = Command::new(&py)
        .args(["-m", "pip", "install", "--quiet", "phe", "gmpy2", "numpy"])
        .status()
        .context("running pip")?;
    ensure!(st.success(), "pip install phe gmpy2 numpy failed ({st})");
    ensure!(
        has_modules(&py),
        "phe, gmpy2 or numpy still missing in {}",
        venv.display()
    );
    Ok(py)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_has_the_requested_shape() {
        let s = synthetic(4, 5, 10, 1).unwrap();
        assert_eq!(s.hospitals.len(), 4);
        assert!(s
            .hospitals
            .iter()
            .all(|h| h.n_rows() == 5 && h.n_features() == 10));
        assert_eq!(s.test.n_rows(), 5);
        // Deterministic: the same seed gives the same data.
        assert_eq!(synthetic(4, 5, 10, 1).unwrap().test, s.test);
    }
}
