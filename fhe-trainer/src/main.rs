//! `fhe-trainer`: the split workflow (`keygen`, `encrypt`, `train`,
//! `decrypt`, `predict`), a one-shot `run` and a `bench`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use fhe_trainer::circuit::{BatchData, CircuitConfig, Plan};
use fhe_trainer::data::{Dataset, MinMaxScaler};
use fhe_trainer::encode::{state_from_weights, weights_from_state, Quantizer};
use fhe_trainer::io::{read_file, write_file, FileKind};
use fhe_trainer::keys::{hex, BatchesFile, Client, Server, ServerKeyFile, WeightsFile};
use fhe_trainer::model::{accuracy, ExecKeys, Fhe, SgdClassifier, TrainerConfig};
use fhe_trainer::plot;

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

#[derive(clap::Args, Debug, Clone)]
struct TrainArgs {
    /// Bits of the encrypted master weights (3 to 6; 6 means 48 levels).
    #[arg(long, default_value_t = 6)]
    n_bits: u8,
    /// Rows per batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 0.3)]
    learning_rate: f64,
    /// Lower end of the weight range.
    #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
    range_min: f64,
    /// Upper end of the weight range.
    #[arg(long, default_value_t = 1.0)]
    range_max: f64,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of rows held out for testing (stratified).
    #[arg(long, default_value_t = 0.3)]
    test_fraction: f64,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainerConfig> {
        Ok(TrainerConfig::builder()
            .n_bits(self.n_bits)
            .batch_size(self.batch_size)
            .learning_rate(self.learning_rate)
            .parameters_range(self.range_min, self.range_max)
            .seed(self.seed)
            .build()?)
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate a client key (kept by the data owner) and a compressed server key.
    Keygen {
        #[arg(long)]
        client_key: PathBuf,
        #[arg(long)]
        server_key: PathBuf,
    },
    /// Fit preprocessing on the training split and encrypt the training batches.
    Encrypt {
        #[arg(long)]
        client_key: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        target: String,
        /// Encrypted batches for the server.
        #[arg(long)]
        out: PathBuf,
        /// Cleartext preprocessing and test split, kept by the data owner.
        #[arg(long)]
        owner: PathBuf,
        /// Encrypt at most this many batches (default: one epoch).
        #[arg(long)]
        batches: Option<usize>,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Train on encrypted batches with the server key only.
    Train {
        #[arg(long)]
        server_key: PathBuf,
        #[arg(long)]
        batches: PathBuf,
        /// Continue from these encrypted weights instead of the initial ones.
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Train at most this many batches.
        #[arg(long)]
        max_batches: Option<usize>,
    },
    /// Decrypt trained weights into a cleartext model.
    Decrypt {
        #[arg(long)]
        client_key: PathBuf,
        #[arg(long)]
        owner: PathBuf,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Predict with a decrypted model; prints accuracy when the target column is present.
    Predict {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        target: String,
        /// Write one probability per line here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One-shot: split, train batch by batch, report accuracy, write JSON and a plot.
    Run {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        target: String,
        /// disable, simulate or execute.
        #[arg(long, default_value = "simulate")]
        mode: String,
        /// Number of batches (default: one epoch).
        #[arg(long)]
        batches: Option<usize>,
        /// Directory for results.json and accuracy.png.
        #[arg(long, default_value = "fhe-trainer-out")]
        out_dir: PathBuf,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Time Execute training on batches of the given shape.
    Bench {
        /// Data to draw batches from (default: seeded random features).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value = "target")]
        target: String,
        #[arg(long, default_value_t = 30)]
        features: usize,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Batches to time.
        #[arg(long, default_value_t = 2)]
        batches: usize,
        /// Write the measurements here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// What the data owner keeps in the clear next to its client key.
#[derive(Debug, Serialize, Deserialize)]
struct OwnerFile {
    key_id: String,
    target: String,
    feature_names: Vec<String>,
    scaler: MinMaxScaler,
    quantizer: Quantizer,
    circuit: CircuitConfig,
    test_x: Vec<Vec<f64>>,
    test_y: Vec<u8>,
}

/// A decrypted model on raw features.
#[derive(Debug, Serialize, Deserialize)]
struct ModelFile {
    feature_names: Vec<String>,
    scaler: MinMaxScaler,
    /// Weights on min-max scaled features.
    weights: Vec<f64>,
    bias: f64,
    batches_done: u64,
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
        } => predict(&model, &data, &target, out.as_deref()),
        Cmd::Run {
            data,
            target,
            mode,
            batches,
            out_dir,
            train,
        } => run(&data, &target, &mode, batches, &out_dir, &train),
        Cmd::Bench {
            data,
            target,
            features,
            batch_size,
            batches,
            json,
        } => bench(
            data.as_deref(),
            &target,
            features,
            batch_size,
            batches,
            json.as_deref(),
        ),
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

fn load_split(data: &Path, target: &str, args: &TrainArgs) -> Result<(Dataset, Dataset)> {
    let d = Dataset::from_csv_path(data, target)
        .with_context(|| format!("loading {}", data.display()))?;
    Ok(d.stratified_split(args.test_fraction, args.seed)?)
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
    let cfg = args.config()?;
    let client: Client = read_file(client_path, FileKind::ClientKey)
        .with_context(|| format!("reading client key {}", client_path.display()))?;
    let (train, test) = load_split(data, target, args)?;
    let scaler = MinMaxScaler::fit(train.x())?;
    let scaled = scaler.transform(train.x())?;
    let quantizer = Quantizer::fit(&scaled)?;
    let circuit = cfg.circuit(&quantizer)?;
    let plan = Plan::new(circuit.clone())?;
    let mut batches: Vec<BatchData<u8>> = Vec::new();
    for (xb, yb) in scaled
        .chunks(cfg.batch_size())
        .zip(train.y().chunks(cfg.batch_size()))
    {
        if max_batches.is_some_and(|m| batches.len() >= m) {
            break;
        }
        batches.push(quantizer.training_batch(xb, yb)?);
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
        test_x: test.x().to_vec(),
        test_y: test.y().to_vec(),
    };
    std::fs::write(owner, serde_json::to_vec_pretty(&owner_file)?)
        .with_context(|| format!("writing {}", owner.display()))?;
    println!(
        "encrypted {} batches of up to {} rows ({} bytes)",
        batches.len(),
        cfg.batch_size(),
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
    let (mut state, done) = match weights {
        Some(p) => {
            let w: WeightsFile = read_file(p, FileKind::Weights)
                .with_context(|| format!("reading weights {}", p.display()))?;
            if w.config != file.config {
                bail!(
                    "weights {} were trained with a different circuit config",
                    p.display()
                );
            }
            (server.state_from_file(&w)?, w.batches_done)
        }
        None => (server.initial_state(&file)?, 0),
    };
    let n = max_batches
        .unwrap_or(file.batches.len())
        .min(file.batches.len());
    let pb = progress(n);
    let t = Instant::now();
    for b in &file.batches[..n] {
        let batch = server.expand_batch(b)?;
        let tb = Instant::now();
        server.train(&plan, &mut state, &batch)?;
        pb.set_message(format!("{:.1} s/batch", tb.elapsed().as_secs_f64()));
        pb.inc(1);
    }
    pb.finish();
    let wf = server.weights_file(&file.config, done + n as u64, &state)?;
    write_file(out, FileKind::Weights, &wf)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "trained {n} batches in {:.1} s ({} bootstraps)",
        t.elapsed().as_secs_f64(),
        fhe_trainer::circuit::Backend::pbs_count(server.backend())
    );
    Ok(())
}

fn decrypt(client_path: &Path, owner_path: &Path, weights: &Path, out: &Path) -> Result<()> {
    let client: Client = read_file(client_path, FileKind::ClientKey)
        .with_context(|| format!("reading client key {}", client_path.display()))?;
    let owner: OwnerFile = serde_json::from_slice(
        &std::fs::read(owner_path).with_context(|| format!("reading {}", owner_path.display()))?,
    )
    .with_context(|| format!("parsing {}", owner_path.display()))?;
    let wf: WeightsFile = read_file(weights, FileKind::Weights)
        .with_context(|| format!("reading weights {}", weights.display()))?;
    if wf.config != owner.circuit {
        bail!(
            "weights were trained with a different circuit config than {}",
            owner_path.display()
        );
    }
    let plan = Plan::new(wf.config.clone())?;
    let st = client.decrypt_weights_file(&wf)?;
    let (w, b) = owner
        .quantizer
        .to_scaled_weights(&weights_from_state(&plan, &st));
    let model = ModelFile {
        feature_names: owner.feature_names,
        scaler: owner.scaler,
        weights: w,
        bias: b,
        batches_done: wf.batches_done,
    };
    let probs = model_proba(&model, &owner.test_x)?;
    std::fs::write(out, serde_json::to_vec_pretty(&model)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "model after {} batches: test accuracy {:.4}",
        model.batches_done,
        accuracy(&probs, &owner.test_y)?
    );
    Ok(())
}

fn model_proba(m: &ModelFile, x: &[Vec<f64>]) -> Result<Vec<f64>> {
    let scaled = m.scaler.transform(x)?;
    Ok(scaled
        .iter()
        .map(|r| {
            fhe_trainer::float::sigmoid(
                r.iter().zip(&m.weights).map(|(a, w)| a * w).sum::<f64>() + m.bias,
            )
        })
        .collect())
}

fn predict(model: &Path, data: &Path, target: &str, out: Option<&Path>) -> Result<()> {
    let m: ModelFile = serde_json::from_slice(
        &std::fs::read(model).with_context(|| format!("reading {}", model.display()))?,
    )
    .with_context(|| format!("parsing {}", model.display()))?;
    let d = Dataset::from_csv_path(data, target)
        .with_context(|| format!("loading {}", data.display()))?;
    if d.feature_names() != m.feature_names.as_slice() {
        bail!(
            "{} has different feature columns than the model",
            data.display()
        );
    }
    let p = model_proba(&m, d.x())?;
    if let Some(out) = out {
        let text: String = p.iter().map(|v| format!("{v:.6}\n")).collect();
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("accuracy {:.4} on {} rows", accuracy(&p, d.y())?, d.len());
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
    train_rows: usize,
    test_rows: usize,
    batch_size: usize,
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
    mode: &str,
    batches: Option<usize>,
    out_dir: &Path,
    args: &TrainArgs,
) -> Result<()> {
    let fhe: Fhe = mode.parse()?;
    let cfg = args.config()?;
    let (train, test) = load_split(data, target, args)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let bs = cfg.batch_size();
    let available = train.len() / bs;
    let n = batches.unwrap_or(available);
    if n == 0 || n > available {
        bail!(
            "--batches {n} is not in 1..={available} for {} training rows",
            train.len()
        );
    }
    let mut model = SgdClassifier::new(cfg.clone(), fhe);
    let mut reference = SgdClassifier::new(cfg, Fhe::Disable);
    if fhe == Fhe::Execute {
        let t = Instant::now();
        eprintln!("generating keys ...");
        model = model.with_keys(ExecKeys::generate());
        eprintln!("keys in {:.1} s", t.elapsed().as_secs_f64());
    }
    let pb = progress(n);
    let mut records = Vec::with_capacity(n);
    let mut total = 0.0;
    for b in 0..n {
        let xb = &train.x()[b * bs..(b + 1) * bs];
        let yb = &train.y()[b * bs..(b + 1) * bs];
        if b == 0 {
            // Preprocessing is fitted on the whole training split, as the
            // data owner would before encrypting.
            model.fit(train.x(), train.y(), 0)?;
            reference.fit(train.x(), train.y(), 0)?;
        }
        let t = Instant::now();
        model.step(xb, yb)?;
        let secs = t.elapsed().as_secs_f64();
        total += secs;
        reference.step(xb, yb)?;
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
        train_rows: train.len(),
        test_rows: test.len(),
        batch_size: bs,
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
        "{:?}: {} PBS/batch, {:.2} s/batch, final accuracy {:.4} vs float32 {:.4}",
        fhe,
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
    mean_seconds_per_batch: f64,
    concrete_ml: String,
}

fn bench(
    data: Option<&Path>,
    target: &str,
    features: usize,
    batch_size: usize,
    batches: usize,
    json: Option<&Path>,
) -> Result<()> {
    if batches == 0 {
        bail!("--batches must be at least 1");
    }
    let rows = batches * batch_size;
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
    let mut secs = Vec::new();
    let pb = progress(batches);
    for b in 0..batches {
        let t = Instant::now();
        model.step(
            &x[b * batch_size..(b + 1) * batch_size],
            &y[b * batch_size..(b + 1) * batch_size],
        )?;
        secs.push(t.elapsed().as_secs_f64());
        pb.inc(1);
    }
    pb.finish();
    let concrete = match std::process::Command::new("python3")
        .args(["-c", "import concrete.ml, sys; sys.stdout.write(concrete.ml.__version__)"])
        .output()
    {
        Ok(o) if o.status.success() => format!(
            "Concrete ML {} is installed; run its SGDClassifier(fit_encrypted=True) benchmark to compare",
            String::from_utf8_lossy(&o.stdout)
        ),
        _ => "Concrete ML is not installed here; the issue's measurement on this machine: 62 s/batch (8x30, fhe=execute)".to_string(),
    };
    let res = BenchResults {
        params: "PARAM_MESSAGE_2_CARRY_2_KS_PBS (TUniform, p_fail 2^-128)",
        features,
        batch_size,
        threads: rayon::current_num_threads(),
        keygen_client_s,
        keygen_server_s,
        server_key_bytes,
        compressed_server_key_bytes,
        pbs_per_batch: model.pbs_count() as f64 / batches as f64,
        mean_seconds_per_batch: secs.iter().sum::<f64>() / secs.len() as f64,
        seconds_per_batch: secs,
        concrete_ml: concrete,
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
    println!(
        "seconds per batch    {:.2} (each: {:?})",
        res.mean_seconds_per_batch, res.seconds_per_batch
    );
    println!("Concrete ML          {}", res.concrete_ml);
    if let Some(p) = json {
        std::fs::write(p, serde_json::to_vec_pretty(&res)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
