//! `fhe-trainer`: the split workflow (`keygen`, `encrypt`, `train`,
//! `decrypt`, `predict`), a one-shot `run`, the accuracy `suite` and a
//! `bench`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use fhe_trainer::circuit::{BatchData, Plan};
use fhe_trainer::data::{Dataset, MinMaxScaler};
use fhe_trainer::encode::{state_from_weights, weights_from_state, Quantizer};
use fhe_trainer::io::{read_file, write_file, write_private, FileKind};
use fhe_trainer::keys::{hex, BatchesFile, Client, Server, ServerKeyFile, WeightsFile};
use fhe_trainer::model::{
    accuracy, default_epochs, epoch_orders, select_config, ExecKeys, Fhe, OneVsRest, SgdClassifier,
    TrainerConfig,
};
use fhe_trainer::owner::{LinearModel, OwnerFile};
use fhe_trainer::{plot, suite};

mod concrete;

#[derive(Parser, Debug)]
#[command(
    name = "fhe-trainer",
    version,
    about = "Logistic regression trained on TFHE-encrypted data"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How `run` and `suite` evaluate the model.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Float32 SGD on the same preprocessing and batches.
    Disable,
    /// The exact integer circuit, in the clear.
    Simulate,
    /// The same circuit under TFHE (generates keys first).
    Execute,
}

impl From<Mode> for Fhe {
    fn from(m: Mode) -> Fhe {
        match m {
            Mode::Disable => Fhe::Disable,
            Mode::Simulate => Fhe::Simulate,
            Mode::Execute => Fhe::Execute,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
struct TrainArgs {
    /// Bits of the encrypted master weights (3 to 6; 6 means 48 levels).
    #[arg(long, default_value_t = 6)]
    n_bits: u8,
    /// Rows per batch (1 to 64).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// SGD learning rate (default: the owner's rule on the training rows, the
    /// largest of 0.1, 0.15, 0.2, 0.3 not above 1 / the largest eigenvalue of
    /// the features' second-moment matrix).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Lower end of the weight range.
    #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
    range_min: f64,
    /// Upper end of the weight range.
    #[arg(long, default_value_t = 1.0)]
    range_max: f64,
    /// Seed of the train/test split and of the epoch shuffles.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of rows held out for testing (stratified; ignored with --test).
    #[arg(long, default_value_t = 0.3)]
    test_fraction: f64,
    /// Score on this CSV instead of a split: every row of --data is trained on.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Epochs, each a fresh shuffle of the training rows in full batches
    /// (default: enough for 300 steps, at most 20).
    #[arg(long)]
    epochs: Option<usize>,
    /// The target holds class indices 0..k-1: train k one-vs-rest models
    /// (`run` then reports the final accuracies only).
    #[arg(long)]
    multiclass: bool,
    /// Owner-side model selection: pick learning rate, weight range and
    /// forward step from a public grid by a Simulate validation split of the
    /// training rows (binary targets; replaces the three options above).
    #[arg(long)]
    select: bool,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainerConfig> {
        let mut b = TrainerConfig::builder()
            .n_bits(self.n_bits)
            .batch_size(self.batch_size)
            .parameters_range(self.range_min, self.range_max)
            .seed(self.seed);
        if let Some(lr) = self.learning_rate {
            b = b.learning_rate(lr);
        }
        Ok(b.build()?)
    }

    /// The config, after the owner's model selection on `train` if asked.
    fn config_for(&self, train: &Dataset) -> Result<TrainerConfig> {
        let cfg = self.config()?;
        if self.select && !self.multiclass {
            let c = select_config(&cfg, train.x(), train.y())?;
            eprintln!(
                "selected learning rate {}, weight range {:?}",
                c.learning_rate(),
                c.parameters_range()
            );
            Ok(c)
        } else {
            Ok(cfg)
        }
    }

    fn epochs(&self, train_rows: usize) -> Result<usize> {
        match self.epochs {
            Some(0) => bail!("--epochs must be at least 1"),
            Some(e) => Ok(e),
            None => Ok(default_epochs(train_rows, self.batch_size)),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate a client key (kept by the data owner) and a compressed server key.
    Keygen {
        /// Where to write the client key (secret; written 0600).
        #[arg(long)]
        client_key: PathBuf,
        /// Where to write the compressed server key (for the server).
        #[arg(long)]
        server_key: PathBuf,
    },
    /// Fit preprocessing on the training rows and encrypt the training batches.
    Encrypt {
        /// The data owner's client key.
        #[arg(long)]
        client_key: PathBuf,
        /// Training CSV with a header row.
        #[arg(long)]
        data: PathBuf,
        /// Name of the 0/1 label column.
        #[arg(long)]
        target: String,
        /// Encrypted batches for the server.
        #[arg(long)]
        out: PathBuf,
        /// Cleartext preprocessing and test rows, kept by the data owner (0600).
        #[arg(long)]
        owner: PathBuf,
        /// Encrypt at most this many batches (default: every batch of every epoch).
        #[arg(long)]
        batches: Option<usize>,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Train on encrypted batches with the server key only.
    Train {
        /// The compressed server key.
        #[arg(long)]
        server_key: PathBuf,
        /// The encrypted batches file from `encrypt`.
        #[arg(long)]
        batches: PathBuf,
        /// Continue from these encrypted weights instead of the initial ones.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Where to write the encrypted weights.
        #[arg(long)]
        out: PathBuf,
        /// Train at most this many batches.
        #[arg(long)]
        max_batches: Option<usize>,
    },
    /// Decrypt trained weights into a cleartext model and score it on the owner's test rows.
    Decrypt {
        /// The data owner's client key.
        #[arg(long)]
        client_key: PathBuf,
        /// The owner file from `encrypt`.
        #[arg(long)]
        owner: PathBuf,
        /// Encrypted weights from `train`.
        #[arg(long)]
        weights: PathBuf,
        /// Where to write the decrypted model (0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Predict with a decrypted model; prints accuracy when the target column is present.
    Predict {
        /// The model file from `decrypt`.
        #[arg(long)]
        model: PathBuf,
        /// CSV with the model's feature columns.
        #[arg(long)]
        data: PathBuf,
        /// Name of the label column, if the CSV has one.
        #[arg(long)]
        target: Option<String>,
        /// Write one probability per line here (0600).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One-shot: train batch by batch, report test accuracy, write results.json and a plot.
    Run {
        /// CSV with a header row (the training rows when --test is given).
        #[arg(long)]
        data: PathBuf,
        /// Name of the 0/1 label column.
        #[arg(long)]
        target: String,
        /// How the model is evaluated.
        #[arg(long, value_enum, default_value_t = Mode::Simulate)]
        mode: Mode,
        /// Number of batches (default: every batch of every epoch); may run past one epoch.
        #[arg(long)]
        batches: Option<usize>,
        /// Directory for results.json and accuracy.png.
        #[arg(long, default_value = "fhe-trainer-out")]
        out_dir: PathBuf,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// The accuracy suite: every shipped data set, its splits, against scikit-learn.
    Suite {
        /// How the model is evaluated.
        #[arg(long, value_enum, default_value_t = Mode::Simulate)]
        mode: Mode,
        /// Directory holding suite.json and the CSVs (default: the crate's data/suite).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only these sets (repeatable; default: all binary sets).
        #[arg(long = "set")]
        sets: Vec<String>,
        /// Run the multi-class sets (one-vs-rest) instead of the binary ones.
        #[arg(long)]
        multiclass: bool,
        /// Epochs (default: the rule of `run`).
        #[arg(long)]
        epochs: Option<usize>,
        /// SGD learning rate (default: the owner's rule on each split's training rows).
        #[arg(long)]
        learning_rate: Option<f64>,
        /// Weight range is [-R, R].
        #[arg(long, default_value_t = 1.0)]
        range: f64,
        /// Largest magnitude of the 5-level forward weight.
        #[arg(long, default_value_t = 1.0)]
        forward_step: f64,
        /// Clip of the margin accumulator (at most 2.5 forward steps).
        #[arg(long, default_value_t = 2.5)]
        forward_clip: f64,
        /// Clip of the gradient reduction tree.
        #[arg(long, default_value_t = 2.0)]
        backward_clip: f64,
        /// Largest raw value in the gradient reduction tree (2, 4 or 6).
        #[arg(long, default_value_t = 4)]
        tree_max: u8,
        /// Let the owner's model selection pick learning rate, range and step
        /// from the training rows of each split (binary sets).
        #[arg(long)]
        select: bool,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Time Execute training on batches of the given shape.
    Bench {
        /// Data to draw batches from (default: seeded random features).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Name of the label column of --data.
        #[arg(long, default_value = "target")]
        target: String,
        /// Features per row.
        #[arg(long, default_value_t = 30)]
        features: usize,
        /// Rows per batch.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Batches to time (with Concrete ML: this many before its run and as many
        /// after, and this many of its batches after its first).
        #[arg(long, default_value_t = 2)]
        batches: usize,
        /// Write the measurements here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also run Concrete ML's encrypted training (`SGDClassifier(fit_encrypted=True)`,
        /// fhe="execute", the shipped bench/concrete_sgd.py) with this Python on the same
        /// rows, and print both per-batch times and their ratio.
        #[arg(long, value_name = "PYTHON")]
        concrete_python: Option<PathBuf>,
        /// As --concrete-python, with the Python of the virtual environment DIR: created
        /// with `python3 -m venv` if missing, given concrete-ml 1.9.0 by pip if it lacks it
        /// (needs PyPI).
        #[arg(long, value_name = "DIR", conflicts_with = "concrete_python")]
        concrete_venv: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Keygen {
            client_key,
            server_key,
        } => keygen(&client_key, &server_key),
        Cmd::Encrypt {
            client_key,
            data,
            target,
            out,
            owner,
            batches,
            train,
        } => encrypt(&client_key, &data, &target, &out, &owner, batches, &train),
        Cmd::Train {
            server_key,
            batches,
            weights,
            out,
            max_batches,
        } => train(&server_key, &batches, weights.as_deref(), &out, max_batches),
        Cmd::Decrypt {
            client_key,
            owner,
            weights,
            out,
        } => decrypt(&client_key, &owner, &weights, &out),
        Cmd::Predict {
            model,
            data,
            target,
            out,
        } => predict(&model, &data, target.as_deref(), out.as_deref()),
        Cmd::Run {
            data,
            target,
            mode,
            batches,
            out_dir,
            train,
        } if train.multiclass => {
            if batches.is_some() {
                bail!("--batches is not supported with --multiclass; use --epochs");
            }
            run_multiclass(&data, &target, mode.into(), &out_dir, &train)
        }
        Cmd::Run {
            data,
            target,
            mode,
            batches,
            out_dir,
            train,
        } => run(&data, &target, mode.into(), batches, &out_dir, &train),
        Cmd::Suite {
            mode,
            dir,
            sets,
            multiclass,
            epochs,
            learning_rate,
            range,
            forward_step,
            forward_clip,
            backward_clip,
            tree_max,
            select,
            json,
        } => {
            let mut b = TrainerConfig::builder()
                .parameters_range(-range, range)
                .forward_step(forward_step)
                .forward_clip(forward_clip)
                .backward_clip(backward_clip)
                .tree_max(tree_max);
            if let Some(lr) = learning_rate {
                b = b.learning_rate(lr);
            }
            let cfg = b.build()?;
            run_suite(mode.into(), dir, &sets, multiclass, epochs, &cfg, select).and_then(
                |results| match json {
                    Some(p) => std::fs::write(&p, serde_json::to_vec_pretty(&results)?)
                        .with_context(|| format!("writing {}", p.display())),
                    None => Ok(()),
                },
            )
        }
        Cmd::Bench {
            data,
            target,
            features,
            batch_size,
            batches,
            json,
            concrete_python,
            concrete_venv,
        } => {
            let concrete = match (concrete_python, concrete_venv) {
                (Some(p), _) => Some(ConcreteSource::Python(p)),
                (None, Some(d)) => Some(ConcreteSource::Venv(d)),
                (None, None) => None,
            };
            bench(
                data.as_deref(),
                &target,
                features,
                batch_size,
                batches,
                json.as_deref(),
                concrete.as_ref(),
            )
        }
    }
}

fn keygen(client_path: &Path, server_path: &Path) -> Result<()> {
    let t = Instant::now();
    let client = Client::generate();
    let sk = client.server_key();
    let secs = t.elapsed().as_secs_f64();
    write_file(client_path, FileKind::ClientKey, &client)
        .with_context(|| format!("writing {}", client_path.display()))?;
    write_file(server_path, FileKind::ServerKey, &sk)
        .with_context(|| format!("writing {}", server_path.display()))?;
    println!(
        "key set {} generated in {secs:.1} s; server key {} bytes",
        hex(&client.key_id()),
        std::fs::metadata(server_path)?.len()
    );
    Ok(())
}

/// Training and test rows: `--test` scores on that file and trains on every
/// row of `data`; otherwise a stratified split of `data`.
fn load_split(data: &Path, target: &str, args: &TrainArgs) -> Result<(Dataset, Dataset)> {
    let load = |p: &Path| {
        if args.multiclass {
            Dataset::from_csv_path_classes(p, target)
        } else {
            Dataset::from_csv_path(p, target)
        }
        .with_context(|| format!("loading {}", p.display()))
    };
    let d = load(data)?;
    match &args.test {
        Some(t) => {
            let test = load(t)?;
            if test.feature_names() != d.feature_names() || test.n_classes() > d.n_classes() {
                bail!(
                    "{} has different feature columns or classes than {}",
                    t.display(),
                    data.display()
                );
            }
            Ok((d, test))
        }
        None => Ok(d.stratified_split(args.test_fraction, args.seed)?),
    }
}

fn encrypt(
    client_path: &Path,
    data: &Path,
    target: &str,
    out: &Path,
    owner: &Path,
    max_batches: Option<usize>,
    args: &TrainArgs,
) -> Result<()> {
    args.config()?;
    let client: Client = read_file(client_path, FileKind::ClientKey)
        .with_context(|| format!("reading client key {}", client_path.display()))?;
    let (train, test) = load_split(data, target, args)?;
    let cfg = args.config_for(&train)?;
    // One model for binary data, one per class for one-vs-rest.
    let models: Vec<Option<u8>> = if args.multiclass {
        (0..train.n_classes()).map(Some).collect()
    } else {
        vec![None]
    };
    let bs = cfg.batch_size();
    if train.len() < bs {
        bail!(
            "{} training rows do not fill one batch of {bs}",
            train.len()
        );
    }
    let epochs = args.epochs(train.len())?;
    let scaler = MinMaxScaler::fit(train.x())?;
    let scaled = scaler.transform(train.x())?;
    let quantizer = Quantizer::fit(&scaled)?;
    let cfg = cfg.resolved(&quantizer, &scaled)?;
    announce_rule_rate(&cfg);
    let circuit = cfg.circuit(&quantizer)?;
    let plan = Plan::new(circuit.clone())?;
    // Each epoch is a fresh shuffle, encrypted anew, in full batches only;
    // every model sees the same rows, with its own labels.
    let mut batches: Vec<Vec<BatchData<u8>>> = vec![Vec::new(); models.len()];
    let mut n_batches = 0;
    'epochs: for order in epoch_orders(train.len(), bs, epochs, cfg.seed()) {
        for idx in order.chunks_exact(bs) {
            if max_batches.is_some_and(|m| n_batches >= m) {
                break 'epochs;
            }
            let xb: Vec<Vec<f64>> = idx.iter().map(|&i| scaled[i].clone()).collect();
            for (m, class) in models.iter().enumerate() {
                let yb: Vec<u8> = idx
                    .iter()
                    .map(|&i| match class {
                        Some(c) => u8::from(train.y()[i] == *c),
                        None => train.y()[i],
                    })
                    .collect();
                batches[m].push(quantizer.training_batch(&xb, &yb)?);
            }
            n_batches += 1;
        }
    }
    let initial = state_from_weights(&plan, &vec![0.0; plan.n_columns()])?;
    let file = client.batches_file(&circuit, &initial, &batches)?;
    write_file(out, FileKind::Batches, &file)
        .with_context(|| format!("writing {}", out.display()))?;
    let owner_file = OwnerFile {
        key_id: hex(&client.key_id()),
        target: target.to_string(),
        feature_names: train.feature_names().to_vec(),
        scaler,
        quantizer,
        circuit,
        epochs,
        classes: train.n_classes(),
        test_x: test.x().to_vec(),
        test_y: test.y().to_vec(),
    };
    owner_file
        .save(owner)
        .with_context(|| format!("writing {}", owner.display()))?;
    println!(
        "encrypted {n_batches} batches of {bs} rows for {} model(s) ({epochs} epochs, {} bytes)",
        models.len(),
        std::fs::metadata(out)?.len()
    );
    Ok(())
}

fn progress(n: usize) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} batches  {per_sec}  ETA {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

fn train(
    server_path: &Path,
    batches_path: &Path,
    weights: Option<&Path>,
    out: &Path,
    max_batches: Option<usize>,
) -> Result<()> {
    let sk: ServerKeyFile = read_file(server_path, FileKind::ServerKey)
        .with_context(|| format!("reading server key {}", server_path.display()))?;
    let server = Server::new(&sk)?;
    let file: BatchesFile = read_file(batches_path, FileKind::Batches)
        .with_context(|| format!("reading batches {}", batches_path.display()))?;
    let plan = Plan::new(file.config.clone())?;
    let models = file.batches.len();
    let (mut states, done) = match weights {
        Some(p) => {
            let w: WeightsFile = read_file(p, FileKind::Weights)
                .with_context(|| format!("reading weights {}", p.display()))?;
            if w.config != file.config {
                bail!(
                    "weights {} were trained with a different circuit config",
                    p.display()
                );
            }
            let states = server.state_from_file(&w)?;
            if states.len() != models {
                bail!(
                    "weights {} hold {} models, the batches {models}",
                    p.display(),
                    states.len()
                );
            }
            (states, w.batches_done)
        }
        None => {
            let initial = server.initial_state(&file)?;
            (vec![initial; models], 0)
        }
    };
    // Continue where the weights left off.
    let per_model = file.batches_per_model();
    let start = usize::try_from(done).unwrap_or(usize::MAX).min(per_model);
    let n = max_batches
        .unwrap_or(per_model - start)
        .min(per_model - start);
    let pb = progress(n * models);
    let t = Instant::now();
    for (batches, state) in file.batches.iter().zip(&mut states) {
        for b in &batches[start..start + n] {
            let batch = server.expand_batch(b)?;
            let tb = Instant::now();
            server.train(&plan, state, &batch)?;
            pb.set_message(format!("{:.1} s/batch", tb.elapsed().as_secs_f64()));
            pb.inc(1);
        }
    }
    pb.finish();
    let wf = server.weights_file(&file.config, (start + n) as u64, &states)?;
    write_file(out, FileKind::Weights, &wf)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "trained {n} batches of {models} model(s) in {:.1} s ({} bootstraps)",
        t.elapsed().as_secs_f64(),
        fhe_trainer::circuit::Backend::pbs_count(server.backend())
    );
    Ok(())
}

fn decrypt(client_path: &Path, owner_path: &Path, weights: &Path, out: &Path) -> Result<()> {
    let client: Client = read_file(client_path, FileKind::ClientKey)
        .with_context(|| format!("reading client key {}", client_path.display()))?;
    let owner =
        OwnerFile::load(owner_path).with_context(|| format!("reading {}", owner_path.display()))?;
    let wf: WeightsFile = read_file(weights, FileKind::Weights)
        .with_context(|| format!("reading weights {}", weights.display()))?;
    if wf.config != owner.circuit {
        bail!(
            "weights were trained with a different circuit config than {}",
            owner_path.display()
        );
    }
    let plan = Plan::new(wf.config.clone())?;
    let (mut ws, mut bs) = (Vec::new(), Vec::new());
    for st in client.decrypt_weights_file(&wf)? {
        let (w, b) = owner
            .quantizer
            .to_scaled_weights(&weights_from_state(&plan, &st));
        ws.push(w);
        bs.push(b);
    }
    let model = LinearModel::new(owner.feature_names, owner.scaler, ws, bs, wf.batches_done)?;
    if model.n_classes() != usize::from(owner.classes) {
        bail!(
            "weights hold a model for {} classes, the owner file is for {}",
            model.n_classes(),
            owner.classes
        );
    }
    let acc = model.score(&owner.test_x, &owner.test_y)?;
    model
        .save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "model after {} batches: test accuracy {acc:.4}",
        model.batches_done
    );
    Ok(())
}

fn predict(model: &Path, data: &Path, target: Option<&str>, out: Option<&Path>) -> Result<()> {
    let m = LinearModel::load(model).with_context(|| format!("reading {}", model.display()))?;
    let (names, x, y) = match target {
        Some(t) => {
            let d = Dataset::from_csv_path_classes(data, t)
                .with_context(|| format!("loading {}", data.display()))?;
            (
                d.feature_names().to_vec(),
                d.x().to_vec(),
                Some(d.y().to_vec()),
            )
        }
        None => {
            let (n, x) = fhe_trainer::data::features_from_csv_path(data)
                .with_context(|| format!("loading {}", data.display()))?;
            (n, x, None)
        }
    };
    if names != m.feature_names {
        bail!(
            "{} has different feature columns than the model",
            data.display()
        );
    }
    if let Some(out) = out {
        // Binary: the probability of class 1; multi-class: the class, then
        // every class probability.
        let probs = m.predict_proba(&x)?;
        let text: String = if m.n_classes() == 2 {
            probs.iter().map(|p| format!("{:.6}\n", p[1])).collect()
        } else {
            m.predict(&x)?
                .iter()
                .zip(&probs)
                .map(|(c, p)| {
                    let ps: Vec<String> = p.iter().map(|v| format!("{v:.6}")).collect();
                    format!("{c},{}\n", ps.join(","))
                })
                .collect()
        };
        write_private(out, text.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    match y {
        Some(y) => println!("accuracy {:.4} on {} rows", m.score(&x, &y)?, y.len()),
        None => println!("predicted {} rows", x.len()),
    }
    Ok(())
}

/// One batch of a run.
#[derive(Debug, Serialize)]
struct BatchRecord {
    batch: usize,
    seconds: f64,
    test_accuracy: f64,
    float_test_accuracy: f64,
}

#[derive(Debug, Serialize)]
struct RunResults {
    mode: Fhe,
    data: String,
    test: Option<String>,
    train_rows: usize,
    test_rows: usize,
    batch_size: usize,
    epochs: usize,
    batches_per_epoch: usize,
    pbs_per_batch: f64,
    seconds_per_batch: f64,
    final_test_accuracy: f64,
    final_float_test_accuracy: f64,
    circuit_inference_accuracy: Option<f64>,
    batches: Vec<BatchRecord>,
}

fn run(
    data: &Path,
    target: &str,
    fhe: Fhe,
    batches: Option<usize>,
    out_dir: &Path,
    args: &TrainArgs,
) -> Result<()> {
    args.config()?;
    let (train, test) = load_split(data, target, args)?;
    let cfg = args.config_for(&train)?;
    let bs = cfg.batch_size();
    let per_epoch = train.len() / bs;
    if per_epoch == 0 {
        bail!(
            "{} training rows do not fill one batch of {bs}",
            train.len()
        );
    }
    let n = match batches {
        Some(0) => bail!("--batches must be at least 1"),
        Some(n) => n,
        None => per_epoch * args.epochs(train.len())?,
    };
    let epochs = n.div_ceil(per_epoch);
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut model = SgdClassifier::new(cfg.clone(), fhe);
    let mut reference = SgdClassifier::new(cfg.clone(), Fhe::Disable);
    if fhe == Fhe::Execute {
        let t = Instant::now();
        eprintln!("generating keys ...");
        model = model.with_keys(ExecKeys::generate());
        eprintln!("keys in {:.1} s", t.elapsed().as_secs_f64());
    }
    // Preprocessing is fitted on all training rows, as the data owner would
    // before encrypting; then batches follow the epoch shuffles.
    model.fit(train.x(), train.y(), 0)?;
    reference.fit(train.x(), train.y(), 0)?;
    announce_rule_rate(model.config());
    let order: Vec<usize> = epoch_orders(train.len(), bs, epochs, cfg.seed())
        .into_iter()
        .flatten()
        .collect();
    let pb = progress(n);
    let mut records = Vec::with_capacity(n);
    let mut total = 0.0;
    for (b, idx) in order.chunks_exact(bs).take(n).enumerate() {
        let xb: Vec<Vec<f64>> = idx.iter().map(|&i| train.x()[i].clone()).collect();
        let yb: Vec<u8> = idx.iter().map(|&i| train.y()[i]).collect();
        let t = Instant::now();
        model.step(&xb, &yb)?;
        let secs = t.elapsed().as_secs_f64();
        total += secs;
        reference.step(&xb, &yb)?;
        let acc = model.score(test.x(), test.y())?;
        let facc = reference.score(test.x(), test.y())?;
        pb.set_message(format!("{secs:.2} s/batch  acc {acc:.3} (float {facc:.3})"));
        pb.inc(1);
        records.push(BatchRecord {
            batch: b + 1,
            seconds: secs,
            test_accuracy: acc,
            float_test_accuracy: facc,
        });
    }
    pb.finish();
    let training_pbs = model.pbs_count();
    let circuit_acc = if fhe == Fhe::Simulate {
        let p = model.predict_proba(test.x())?;
        Some(accuracy(&p, test.y())?)
    } else {
        None
    };
    let last = records.last().context("no batches ran")?;
    let results = RunResults {
        mode: fhe,
        data: data.display().to_string(),
        test: args.test.as_ref().map(|t| t.display().to_string()),
        train_rows: train.len(),
        test_rows: test.len(),
        batch_size: bs,
        epochs,
        batches_per_epoch: per_epoch,
        pbs_per_batch: training_pbs as f64 / n as f64,
        seconds_per_batch: total / n as f64,
        final_test_accuracy: last.test_accuracy,
        final_float_test_accuracy: last.float_test_accuracy,
        circuit_inference_accuracy: circuit_acc,
        batches: records,
    };
    for r in &results.batches {
        println!(
            "batch {:3}: test accuracy {:.4}  float32 {:.4}  ({:.2} s)",
            r.batch, r.test_accuracy, r.float_test_accuracy, r.seconds
        );
    }
    println!(
        "{:?}: {} epochs of {} batches, {} PBS/batch, {:.2} s/batch, final accuracy {:.4} vs float32 {:.4}",
        fhe,
        results.epochs,
        per_epoch,
        results.pbs_per_batch,
        results.seconds_per_batch,
        results.final_test_accuracy,
        results.final_float_test_accuracy
    );
    let json_path = out_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let png = out_dir.join("accuracy.png");
    let series: Vec<(f64, f64)> = results
        .batches
        .iter()
        .map(|r| (r.test_accuracy, r.float_test_accuracy))
        .collect();
    plot::accuracy_plot(&png, &format!("{fhe:?}"), &series)
        .with_context(|| format!("drawing {}", png.display()))?;
    println!("wrote {} and {}", json_path.display(), png.display());
    Ok(())
}

#[derive(Debug, Serialize)]
struct MulticlassResults {
    mode: Fhe,
    data: String,
    test: Option<String>,
    classes: u8,
    train_rows: usize,
    test_rows: usize,
    epochs: usize,
    seconds: f64,
    final_test_accuracy: f64,
    final_float_test_accuracy: f64,
}

fn run_multiclass(
    data: &Path,
    target: &str,
    fhe: Fhe,
    out_dir: &Path,
    args: &TrainArgs,
) -> Result<()> {
    let cfg = args.config()?;
    let (train, test) = load_split(data, target, args)?;
    let epochs = args.epochs(train.len())?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let t = Instant::now();
    let mut model = OneVsRest::new(cfg.clone(), fhe);
    model.fit(train.x(), train.y(), train.n_classes(), epochs)?;
    let seconds = t.elapsed().as_secs_f64();
    let mut twin = OneVsRest::new(cfg, Fhe::Disable);
    twin.fit(train.x(), train.y(), train.n_classes(), epochs)?;
    let results = MulticlassResults {
        mode: fhe,
        data: data.display().to_string(),
        test: args.test.as_ref().map(|t| t.display().to_string()),
        classes: train.n_classes(),
        train_rows: train.len(),
        test_rows: test.len(),
        epochs,
        seconds,
        final_test_accuracy: model.score(test.x(), test.y())?,
        final_float_test_accuracy: twin.score(test.x(), test.y())?,
    };
    println!(
        "{:?}: {} classes one-vs-rest, {epochs} epochs, final accuracy {:.4} vs float32 {:.4}",
        fhe, results.classes, results.final_test_accuracy, results.final_float_test_accuracy
    );
    let json_path = out_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("wrote {}", json_path.display());
    Ok(())
}

fn run_suite(
    fhe: Fhe,
    dir: Option<PathBuf>,
    only: &[String],
    multiclass: bool,
    epochs: Option<usize>,
    cfg: &TrainerConfig,
    select: bool,
) -> Result<Vec<suite::SetResult>> {
    let dir = dir.unwrap_or_else(suite::default_dir);
    let s = suite::Suite::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let sets = if multiclass { &s.multiclass } else { &s.binary };
    for name in only {
        if !sets.iter().any(|b| &b.name == name) {
            bail!("no such set {name:?} in {}", dir.display());
        }
    }
    if epochs == Some(0) {
        bail!("--epochs must be at least 1");
    }
    let mut results = Vec::new();
    for set in sets {
        if !only.is_empty() && !only.contains(&set.name) {
            continue;
        }
        let t = Instant::now();
        let r = suite::run_set(&dir, set, cfg, fhe, epochs, select)
            .with_context(|| format!("running {}", set.name))?;
        eprintln!(
            "{}: {:.1}% (scikit-learn {:.1}%) in {:.1} s",
            set.name,
            100.0 * suite::mean(&r.ours),
            100.0 * suite::mean(&r.sklearn_lr),
            t.elapsed().as_secs_f64()
        );
        results.push(r);
    }
    print!("{}", suite::table(&results, fhe));
    Ok(results)
}

#[derive(Debug, Serialize)]
struct BenchResults {
    params: &'static str,
    features: usize,
    batch_size: usize,
    threads: usize,
    keygen_client_s: f64,
    keygen_server_s: f64,
    server_key_bytes: u64,
    compressed_server_key_bytes: u64,
    pbs_per_batch: f64,
    seconds_per_batch: Vec<f64>,
    /// With Concrete ML: our next batches, timed after its run.
    seconds_per_batch_after_concrete_ml: Vec<f64>,
    /// Mean over all our timed batches.
    mean_seconds_per_batch: f64,
    /// Concrete ML's figures from the same command (`--concrete-python`).
    concrete_ml: Option<concrete::ConcreteResults>,
    /// Concrete ML's mean seconds per batch over ours.
    speedup_over_concrete_ml: Option<f64>,
}

/// Where `bench` finds the Python that runs Concrete ML.
#[derive(Debug, Clone)]
enum ConcreteSource {
    /// `--concrete-python PATH`.
    Python(PathBuf),
    /// `--concrete-venv DIR` (created on request).
    Venv(PathBuf),
}

fn bench(
    data: Option<&Path>,
    target: &str,
    features: usize,
    batch_size: usize,
    batches: usize,
    json: Option<&Path>,
    concrete_source: Option<&ConcreteSource>,
) -> Result<()> {
    if batches == 0 {
        bail!("--batches must be at least 1");
    }
    if concrete_source.is_some() && batch_size != concrete::BATCH_SIZE {
        bail!(
            "Concrete ML's encrypted training has a fixed batch of {} rows: compare with \
             --batch-size {}",
            concrete::BATCH_SIZE,
            concrete::BATCH_SIZE
        );
    }
    // With Concrete ML, our batches run before and after it, so that a load
    // that changes during the run weighs on both sides.
    let rounds = if concrete_source.is_some() { 2 } else { 1 };
    let rows = rounds * batches * batch_size;
    let (x, y): (Vec<Vec<f64>>, Vec<u8>) = match data {
        Some(p) => {
            let d = Dataset::from_csv_path(p, target)
                .with_context(|| format!("loading {}", p.display()))?;
            if d.n_features() < features || d.len() < rows {
                bail!(
                    "{} has too few features or rows for this shape",
                    p.display()
                );
            }
            (
                d.x()[..rows]
                    .iter()
                    .map(|r| r[..features].to_vec())
                    .collect(),
                d.y()[..rows].to_vec(),
            )
        }
        None => {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let x: Vec<Vec<f64>> = (0..rows)
                .map(|_| (0..features).map(|_| rng.gen_range(-1.0..1.0)).collect())
                .collect();
            let y = x.iter().map(|r: &Vec<f64>| u8::from(r[0] > 0.0)).collect();
            (x, y)
        }
    };
    // Find (or create) Concrete ML's Python before the long Execute run.
    let python = match concrete_source {
        Some(ConcreteSource::Python(p)) => Some(concrete::probe(p)?),
        Some(ConcreteSource::Venv(d)) => Some(
            concrete::venv(d)
                .with_context(|| format!("preparing Concrete ML in {}", d.display()))?,
        ),
        None => None,
    };
    if let Some(p) = &python {
        eprintln!("Concrete ML {} found at {}", p.version, p.path.display());
    }
    let t = Instant::now();
    let client = Client::generate();
    let keygen_client_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let sks = client.server_key_uncompressed();
    let keygen_server_s = t.elapsed().as_secs_f64();
    let server_key_bytes = bincode::serialized_size(&sks)?;
    let compressed = client.server_key();
    let compressed_server_key_bytes = bincode::serialized_size(&compressed.key)?;
    let server = Server::from_key(client.key_id(), Arc::new(sks));
    let keys = ExecKeys {
        client: Arc::new(client),
        server: Arc::new(server),
    };
    let cfg = TrainerConfig::builder().batch_size(batch_size).build()?;
    let mut model = SgdClassifier::new(cfg, Fhe::Execute).with_keys(keys);
    model.fit(&x, &y, 0)?;
    let mut step = |b: usize| -> Result<f64> {
        let t = Instant::now();
        model.step(
            &x[b * batch_size..(b + 1) * batch_size],
            &y[b * batch_size..(b + 1) * batch_size],
        )?;
        Ok(t.elapsed().as_secs_f64())
    };
    let pb = progress(batches);
    let mut secs = Vec::new();
    for b in 0..batches {
        secs.push(step(b)?);
        pb.inc(1);
    }
    pb.finish();
    let cml = match &python {
        Some(p) => {
            eprintln!(
                "running Concrete ML {}: a first batch (compilation, key generation), then {batches} timed",
                p.version
            );
            Some(concrete::run(p, &x, &y, batch_size, batches)?)
        }
        None => None,
    };
    let mut secs_after = Vec::new();
    if cml.is_some() {
        eprintln!("fhe-trainer again, {batches} more batches");
        let pb = progress(batches);
        for b in batches..2 * batches {
            secs_after.push(step(b)?);
            pb.inc(1);
        }
        pb.finish();
    }
    let all = secs.len() + secs_after.len();
    let mean_seconds_per_batch = secs.iter().chain(&secs_after).sum::<f64>() / all as f64;
    let res = BenchResults {
        params: "PARAM_MESSAGE_2_CARRY_2_KS32_PBS_TUNIFORM_2M128 (p_fail 2^-129.6), tfhe avx512 \
                 feature on",
        features,
        batch_size,
        threads: rayon::current_num_threads(),
        keygen_client_s,
        keygen_server_s,
        server_key_bytes,
        compressed_server_key_bytes,
        pbs_per_batch: model.pbs_count() as f64 / all as f64,
        mean_seconds_per_batch,
        seconds_per_batch: secs,
        seconds_per_batch_after_concrete_ml: secs_after,
        speedup_over_concrete_ml: cml
            .as_ref()
            .map(|c| c.mean_seconds_per_batch / mean_seconds_per_batch),
        concrete_ml: cml,
    };
    println!("parameters           {}", res.params);
    println!(
        "shape                {} x {} per batch, {} threads",
        res.batch_size, res.features, res.threads
    );
    println!(
        "keygen               client {:.2} s, server {:.2} s",
        res.keygen_client_s, res.keygen_server_s
    );
    println!(
        "server key           {:.1} MB ({:.1} MB compressed)",
        res.server_key_bytes as f64 / 1e6,
        res.compressed_server_key_bytes as f64 / 1e6
    );
    println!("PBS per batch        {}", res.pbs_per_batch);
    if res.seconds_per_batch_after_concrete_ml.is_empty() {
        println!(
            "seconds per batch    {:.2} (each: {:?})",
            res.mean_seconds_per_batch, res.seconds_per_batch
        );
    } else {
        println!(
            "seconds per batch    {:.2} (each, before Concrete ML: {:?}, after: {:?})",
            res.mean_seconds_per_batch,
            res.seconds_per_batch,
            res.seconds_per_batch_after_concrete_ml
        );
    }
    match (&res.concrete_ml, res.speedup_over_concrete_ml) {
        (Some(c), Some(speedup)) => {
            let opt = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.1} s"));
            println!(
                "Concrete ML          {} (concrete-python {}, Python {}), {}, {} CPUs",
                c.concrete_ml, c.concrete_python, c.python, c.model, c.cpus
            );
            println!(
                "Concrete ML batch    {:.2} s per batch (each: {:?}; circuit runs alone: {:?})",
                c.mean_seconds_per_batch, c.seconds_per_batch, c.run_seconds_per_batch
            );
            println!(
                "Concrete ML first    {:.1} s (compilation {}, key generation {}, circuit run {})",
                c.first_batch_s,
                opt(c.compile_s),
                opt(c.keygen_s),
                opt(c.first_run_s)
            );
            println!(
                "speed-up             {speedup:.2}x per {} x {} batch (Concrete ML {:.2} s / fhe-trainer {:.2} s, same command)",
                res.batch_size, res.features, c.mean_seconds_per_batch, res.mean_seconds_per_batch
            );
        }
        _ => println!(
            "Concrete ML          not run (--concrete-python PATH or --concrete-venv DIR runs it side by side)"
        ),
    }
    if let Some(p) = json {
        std::fs::write(p, serde_json::to_vec_pretty(&res)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Says which learning rate the owner's rule chose, when it chose one.
fn announce_rule_rate(cfg: &TrainerConfig) {
    if cfg.learning_rate_rule() {
        eprintln!(
            "learning rate {} (the owner's rule on the training rows)",
            cfg.learning_rate()
        );
    }
}
