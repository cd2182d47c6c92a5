//! The coordinator's configuration file (`coordinator.json`) and its CLI
//! overrides, parsed and checked before any I/O.
//!
//! Relative paths in the file are resolved against the file's directory, so a
//! provisioned work directory can be moved as a whole; paths given on the
//! command line are relative to the current directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use learning::{ConsortiumSchema, Mode, ModelKind};
pub use node::config::PkiFiles;
use node::config::{read_json, resolve, secs};
use protocol::{FixedPoint, Member};
use serde::{Deserialize, Serialize};

/// `coordinator.json`. Every field is optional and has the default given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Node name; must be the name in the coordinator's certificate. Default "coordinator".
    pub name: String,
    /// UDP address to listen on. Default "0.0.0.0:7000".
    pub listen: String,
    /// PKI files. Default `pki/ca.pem`, `pki/<name>.pem`, `pki/<name>.key`.
    pub pki: Option<PkiFiles>,
    /// The hospitals, in ring order: `[{"name": "hospital-1", "address": "10.0.0.5:7001"}, ...]`.
    /// Names must match the hospitals' certificates. Default: empty (an error: at least 3 needed).
    pub roster: Vec<Member>,
    /// Paillier modulus size in bits (2048 minimum). Default 3072.
    pub key_bits: usize,
    /// Paillier key file (JSON holding the primes, mode 0600): loaded if it exists, else a new key
    /// is generated and saved there (needed by `--resume`). Default "paillier-key.json".
    pub key_path: PathBuf,
    /// The key ceremony's public file (`key-ceremony deal`): the run's key is then that
    /// t-of-n threshold key, whose shares the roster's hospitals hold. The coordinator
    /// holds no private key (`key_path` and `key_bits` are not used) and decrypts a
    /// round's sum only by combining t hospitals' verified partial decryptions; needs
    /// masks. Default none: the coordinator's own key (`key_path`).
    pub threshold_key: Option<PathBuf>,
    /// The consortium schema (JSON, the same file every hospital names): columns and
    /// their types, categories, imputation, the target, scaling, the intercept. With
    /// it, the run starts with a secure statistics step when the schema scales or
    /// imputes. Default none: hospitals train on their CSV columns as given.
    pub schema: Option<PathBuf>,
    /// The model: "linear", "ridge" (set `l2`) or "logistic" (0/1 targets). Default
    /// "linear".
    pub model: ModelKind,
    /// L2 penalty on the mean loss, the intercept unpenalized (ridge; also allowed for
    /// logistic). Default 0.
    pub l2: f64,
    /// In global mode, stop once the norm of the penalized mean gradient falls below
    /// this. Default none: run every round.
    pub tolerance: Option<f64>,
    /// End with a step that aggregates the federated model's test metrics over every
    /// hospital's test rows (MSE, MAE, R^2; log-loss, accuracy, AUC). Default true.
    pub evaluate: bool,
    /// Training mode, "seed" or "global". Default "seed".
    pub mode: Mode,
    /// Training rounds. Default 300.
    pub rounds: u32,
    /// Learning rate: the step on the mean gradient (per row), in every mode.
    /// Default: with a schema that standardizes the features, 1 / (d + l2) for
    /// linear and ridge, 1 / (d / 4 + l2) for logistic regression (d features,
    /// the intercept included), a step that converges whatever the rows hold;
    /// else 0.01. python-paillier's example (0.01 on summed gradients, 130 rows
    /// per hospital) is 1.3.
    pub eta: Option<f64>,
    /// Pairwise masks that cancel in the sum (collusion resistance). Default true.
    pub masks: bool,
    /// Pack a whole gradient into as few ciphertexts as possible. Default true.
    pub pack: bool,
    /// Fixed-point encoding of gradient values. Default frac_bits 40, int_bits 24, and
    /// max_addends following the roster (see [`FixedPointConfig`]).
    pub fixed_point: FixedPointConfig,
    /// Deadline (seconds) of each round phase before the silent node is dropped. Default 60.
    pub round_timeout_secs: f64,
    /// How long (seconds) to wait for the whole roster before starting with those present
    /// (at least `min_hospitals`). Default 120.
    pub join_timeout_secs: f64,
    /// Attempts per round before the run fails. Default 5.
    pub max_attempts: u32,
    /// Fewest hospitals to run with (never below 3). Default 3.
    pub min_hospitals: usize,
    /// Checkpoint written atomically after every round. Default "checkpoint.json".
    pub checkpoint_path: PathBuf,
    /// Results JSON written at the end. Default "results.json".
    pub results_path: PathBuf,
    /// Run id (1-64 of A-Z a-z 0-9 _ . -). Default: random.
    pub run_id: Option<String>,
    /// Size cap of one message in bytes. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Most features a hospital's data may have. Bounds what a hospital may send (hellos,
    /// ring passes, reports are refused above the size such data needs). Default 1000.
    pub max_features: usize,
    /// How long (seconds) a silent connection stays open. Default 30.
    pub idle_timeout_secs: f64,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            name: protocol::coordinator::DEFAULT_COORDINATOR_NAME.to_owned(),
            listen: "0.0.0.0:7000".to_owned(),
            pki: None,
            roster: Vec::new(),
            key_bits: paillier::DEFAULT_KEY_BITS,
            key_path: PathBuf::from("paillier-key.json"),
            threshold_key: None,
            schema: None,
            model: ModelKind::Linear,
            l2: 0.0,
            tolerance: None,
            evaluate: true,
            mode: Mode::Seed,
            rounds: 300,
            eta: None,
            masks: true,
            pack: true,
            fixed_point: FixedPointConfig::default(),
            round_timeout_secs: 60.0,
            join_timeout_secs: 120.0,
            max_attempts: 5,
            min_hospitals: protocol::coordinator::MIN_HOSPITALS,
            checkpoint_path: PathBuf::from("checkpoint.json"),
            results_path: PathBuf::from("results.json"),
            run_id: None,
            max_message_bytes: protocol::DEFAULT_MAX_MESSAGE_BYTES,
            max_features: 1000,
            idle_timeout_secs: 30.0,
        }
    }
}

/// `fixed_point` in `coordinator.json`: the encoding of gradient values
/// ([`FixedPoint`]), each field optional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FixedPointConfig {
    /// Fractional bits (resolution 2^-frac_bits). Default 40.
    pub frac_bits: u32,
    /// Integer bits (every gradient value below 2^int_bits in magnitude). Default 24.
    pub int_bits: u32,
    /// Most gradients summed in one packed slot, so at least the ring size. Default: the
    /// larger of 64 and the roster's size, so a roster of any size fits; set it only to
    /// pin the wire encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_addends: Option<u64>,
}

impl Default for FixedPointConfig {
    fn default() -> Self {
        FixedPointConfig {
            frac_bits: FixedPoint::DEFAULT.frac_bits,
            int_bits: FixedPoint::DEFAULT.int_bits,
            max_addends: None,
        }
    }
}

impl FixedPointConfig {
    /// The encoding for a roster of `roster_len` hospitals. The headroom
    /// follows the roster because a ring never has more members than the
    /// roster; it never goes below [`FixedPoint::DEFAULT`]'s so that rosters
    /// up to that size keep the same wire encoding.
    pub fn for_roster(&self, roster_len: usize) -> FixedPoint {
        let derived = FixedPoint::DEFAULT.max_addends.max(roster_len as u64);
        FixedPoint {
            frac_bits: self.frac_bits,
            int_bits: self.int_bits,
            max_addends: self.max_addends.unwrap_or(derived),
        }
    }
}

/// Command-line overrides of [`FileConfig`] fields: each flag replaces the
/// config file's value, whose default is given in its help.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// UDP address (IP:port) to listen on for the hospitals; port 0 picks a free port,
    /// announced in the `listening` line on stdout [config `listen`, default 0.0.0.0:7000]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// Training rounds [config `rounds`, default 300]
    #[arg(long, value_name = "N")]
    pub rounds: Option<u32>,
    /// Learning rate: the step on the mean gradient, in every mode [config `eta`; default
    /// 1 / (d + l2), or 1 / (d / 4 + l2) for logistic, when the schema standardizes the d
    /// features (intercept included), else 0.01]
    #[arg(long, value_name = "RATE")]
    pub eta: Option<f64>,
    /// Update rule: `seed` (each hospital from its local model, python-paillier's example)
    /// or `global` (one shared model from zeros) [config `mode`, default seed]
    #[arg(long, value_name = "MODE")]
    pub mode: Option<Mode>,
    /// Paillier modulus size in bits for a newly generated key; smaller is faster and weaker,
    /// below 2048 is refused [config `key_bits`, default 3072]
    #[arg(long, value_name = "BITS")]
    pub key_bits: Option<usize>,
    /// Paillier key file: loaded when it exists, else generated and saved there (mode 0600);
    /// it holds the secret key that decrypts every aggregate
    /// [config `key_path`, default paillier-key.json beside the config]
    #[arg(long, value_name = "FILE")]
    pub key_path: Option<PathBuf>,
    /// The key ceremony's public file: decrypt with a t-of-n threshold key whose shares
    /// the hospitals hold, instead of a key of the coordinator's own
    /// [config `threshold_key`, default none]
    #[arg(long, value_name = "FILE")]
    pub threshold_key: Option<PathBuf>,
    /// Consortium schema file (the same file every hospital names) [config `schema`,
    /// default none: columns as given]
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Model: linear, ridge (with --l2) or logistic (0/1 targets) [config `model`,
    /// default linear]
    #[arg(long, value_name = "MODEL")]
    pub model: Option<ModelKind>,
    /// L2 penalty on the mean loss (ridge; the intercept is not penalized)
    /// [config `l2`, default 0]
    #[arg(long, value_name = "LAMBDA")]
    pub l2: Option<f64>,
    /// Global mode only: stop once the mean gradient's norm is below this
    /// [config `tolerance`, default none]
    #[arg(long, value_name = "NORM")]
    pub tolerance: Option<f64>,
    /// Skip the final step that aggregates the pooled test metrics
    /// [config `evaluate`, default true]
    #[arg(long)]
    pub no_evaluate: bool,
    /// Ask for a run without masks. WEAKENS PRIVACY: without masks the coordinator
    /// colluding with a hospital's two ring neighbours learns that hospital's gradient;
    /// with masks it would need every other member of the unmasked set. Each hospital
    /// refuses such a run unless its own config sets `allow_unmasked` [config `masks`,
    /// default true]
    #[arg(long)]
    pub no_masks: bool,
    /// Send one ciphertext per gradient value instead of packing many values into each;
    /// the same privacy, more traffic and slower rounds [config `pack`, default true]
    #[arg(long)]
    pub no_pack: bool,
    /// Seconds each round phase may take before the silent node is dropped and the round
    /// retried [config `round_timeout_secs`, default 60]
    #[arg(long, value_name = "SECS")]
    pub round_timeout_secs: Option<f64>,
    /// Seconds to wait for the whole roster before starting with those present (at least
    /// `min_hospitals`) [config `join_timeout_secs`, default 120]
    #[arg(long, value_name = "SECS")]
    pub join_timeout_secs: Option<f64>,
    /// Fewest hospitals to train with; never below 3, since with two each learns the
    /// other's gradient from the aggregate [config `min_hospitals`, default 3]
    #[arg(long, value_name = "N")]
    pub min_hospitals: Option<usize>,
    /// Checkpoint file, rewritten after every round and read by `--resume`
    /// [config `checkpoint_path`, default checkpoint.json beside the config]
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Results file written at the end [config `results_path`, default results.json beside
    /// the config]
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Run id, 1-64 of A-Z a-z 0-9 _ . - (binds every message to this run)
    /// [config `run_id`, default random]
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
}

/// The checked configuration the driver runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub listen: SocketAddr,
    pub pki: node::pki::PkiPaths,
    pub roster: Vec<Member>,
    pub key_bits: usize,
    pub key_path: PathBuf,
    pub threshold_key: Option<PathBuf>,
    pub params: protocol::RunParams,
    pub consortium: Option<ConsortiumSchema>,
    pub round_timeout: Duration,
    pub join_timeout: Duration,
    pub max_attempts: u32,
    pub min_hospitals: usize,
    pub checkpoint_path: PathBuf,
    pub results_path: PathBuf,
    pub run_id: protocol::RunId,
    pub max_message_bytes: usize,
    pub max_features: usize,
    pub idle_timeout: Duration,
}

impl Config {
    /// What the coordinator accepts from each hospital: per-kind limits from
    /// the key size, `max_features`, the roster and the rounds, within
    /// `max_message_bytes`.
    pub fn inbound_limits(&self) -> protocol::PeerLimits {
        let stats = self
            .consortium
            .as_ref()
            .map_or(0, ConsortiumSchema::statistics_len);
        let shape = protocol::RunShape {
            key_bits: self.key_bits,
            features: protocol::plan::max_vector_values(self.max_features, stats),
            hospitals: self.roster.len(),
            rounds: protocol::plan::Plan::new(&self.params, 0, stats, None).max_steps() as u32,
        };
        protocol::PeerLimits::new(
            protocol::Limits::hospital_to_coordinator(&shape).capped(self.max_message_bytes),
        )
    }

    /// Reads `path` (if given), applies `ov` and checks everything.
    pub fn load(path: Option<&Path>, ov: &Overrides) -> Result<Config> {
        let (mut fc, base) = read_json::<FileConfig>(path)?;
        let pki = fc
            .pki
            .clone()
            .unwrap_or_else(|| PkiFiles::for_node(&fc.name));
        fc.key_path = resolve(&base, &fc.key_path);
        fc.checkpoint_path = resolve(&base, &fc.checkpoint_path);
        fc.results_path = resolve(&base, &fc.results_path);
        fc.schema = fc.schema.map(|p| resolve(&base, &p));
        fc.threshold_key = fc.threshold_key.map(|p| resolve(&base, &p));
        let pki = pki.resolve(&base);
        if let Some(v) = &ov.listen {
            fc.listen = v.clone();
        }
        if let Some(v) = ov.rounds {
            fc.rounds = v;
        }
        if let Some(v) = ov.eta {
            fc.eta = Some(v);
        }
        if let Some(v) = ov.mode {
            fc.mode = v;
        }
        if let Some(v) = &ov.schema {
            fc.schema = Some(v.clone());
        }
        if let Some(v) = ov.model {
            fc.model = v;
        }
        if let Some(v) = ov.l2 {
            fc.l2 = v;
        }
        if let Some(v) = ov.tolerance {
            fc.tolerance = Some(v);
        }
        if ov.no_evaluate {
            fc.evaluate = false;
        }
        if let Some(v) = ov.key_bits {
            fc.key_bits = v;
        }
        if let Some(v) = &ov.key_path {
            fc.key_path = v.clone();
        }
        if let Some(v) = &ov.threshold_key {
            fc.threshold_key = Some(v.clone());
        }
        if ov.no_masks {
            fc.masks = false;
        }
        if ov.no_pack {
            fc.pack = false;
        }
        if let Some(v) = ov.round_timeout_secs {
            fc.round_timeout_secs = v;
        }
        if let Some(v) = ov.join_timeout_secs {
            fc.join_timeout_secs = v;
        }
        if let Some(v) = ov.min_hospitals {
            fc.min_hospitals = v;
        }
        if let Some(v) = &ov.checkpoint {
            fc.checkpoint_path = v.clone();
        }
        if let Some(v) = &ov.results {
            fc.results_path = v.clone();
        }
        if let Some(v) = &ov.run_id {
            fc.run_id = Some(v.clone());
        }
        Self::check(fc, pki)
    }

    fn check(fc: FileConfig, pki: node::pki::PkiPaths) -> Result<Config> {
        node::pki::validate_node_name(&fc.name).context("config field `name`")?;
        let listen: SocketAddr = fc
            .listen
            .parse()
            .with_context(|| format!("config field `listen`: {:?} is not an IP:port", fc.listen))?;
        if fc.min_hospitals < protocol::coordinator::MIN_HOSPITALS {
            bail!(
                "min_hospitals is {} but must be at least {}: with two hospitals each learns the \
                 other's gradient by subtracting its own from the aggregate",
                fc.min_hospitals,
                protocol::coordinator::MIN_HOSPITALS
            );
        }
        if fc.roster.len() < fc.min_hospitals {
            bail!(
                "the roster lists {} hospitals but at least {} are required (min_hospitals; with \
                 fewer than 3 a hospital could learn another's gradient from the aggregate)",
                fc.roster.len(),
                fc.min_hospitals
            );
        }
        for (i, m) in fc.roster.iter().enumerate() {
            node::pki::validate_node_name(&m.name)
                .with_context(|| format!("roster entry {}", i + 1))?;
            if m.name == fc.name {
                bail!(
                    "roster entry {} uses the coordinator's name {:?}",
                    i + 1,
                    m.name
                );
            }
            if fc.roster[..i].iter().any(|o| o.name == m.name) {
                bail!("roster lists {:?} twice", m.name);
            }
            m.address.parse::<SocketAddr>().with_context(|| {
                format!(
                    "roster entry {:?}: address {:?} is not an IP:port",
                    m.name, m.address
                )
            })?;
        }
        if fc.key_bits < paillier::MIN_KEY_BITS {
            bail!(
                "key_bits {} is below the {}-bit minimum",
                fc.key_bits,
                paillier::MIN_KEY_BITS
            );
        }
        if fc.rounds == 0 {
            bail!("rounds must be at least 1");
        }
        if fc.threshold_key.is_some() && !fc.masks {
            bail!(
                "a threshold_key needs masks: its members decrypt only the sum they agreed on \
                 while committing to its member set (drop --no-masks or masks: false)"
            );
        }
        if let Some(eta) = fc.eta {
            if !(eta.is_finite() && eta > 0.0) {
                bail!("eta must be a positive number, got {eta}");
            }
        }
        if fc.max_attempts == 0 {
            bail!("max_attempts must be at least 1");
        }
        if fc.max_message_bytes < 1024 {
            bail!("max_message_bytes {} is too small", fc.max_message_bytes);
        }
        if fc.max_features == 0 {
            bail!("max_features must be at least 1");
        }
        let run_id = match &fc.run_id {
            Some(s) => protocol::RunId::new(s.clone())
                .with_context(|| format!("config field `run_id` {s:?}"))?,
            None => protocol::RunId::from_random(rand::random()),
        };
        if !(fc.l2.is_finite() && fc.l2 >= 0.0) {
            bail!("l2 must be a non-negative number, got {}", fc.l2);
        }
        if fc.model == ModelKind::Ridge && fc.l2 == 0.0 {
            bail!("model \"ridge\" needs a positive `l2` (with l2 0 it is \"linear\")");
        }
        if let Some(t) = fc.tolerance {
            if !(t.is_finite() && t > 0.0) {
                bail!("tolerance must be a positive number, got {t}");
            }
            if fc.mode != Mode::Global {
                bail!(
                    "tolerance needs mode \"global\": in seed mode every hospital's weights differ, \
                     so there is no one gradient norm to stop at"
                );
            }
        }
        let consortium = fc
            .schema
            .as_ref()
            .map(|p| ConsortiumSchema::from_path(p).context("config field `schema`"))
            .transpose()?;
        if let Some(c) = &consortium {
            if c.feature_names().len() > fc.max_features {
                bail!(
                    "the schema has {} features, more than max_features {}",
                    c.feature_names().len(),
                    fc.max_features
                );
            }
        }
        let eta = fc
            .eta
            .unwrap_or_else(|| default_eta(consortium.as_ref(), fc.model, fc.l2));
        let fixed_point = fc.fixed_point.for_roster(fc.roster.len());
        Ok(Config {
            name: fc.name,
            listen,
            pki,
            roster: fc.roster,
            key_bits: fc.key_bits,
            key_path: fc.key_path,
            threshold_key: fc.threshold_key,
            params: protocol::RunParams {
                fixed_point,
                pack: fc.pack,
                masks: fc.masks,
                model: fc.model,
                l2: fc.l2,
                tolerance: fc.tolerance,
                statistics: consortium
                    .as_ref()
                    .is_some_and(ConsortiumSchema::needs_statistics),
                evaluate: fc.evaluate,
                schema: consortium.as_ref().map(ConsortiumSchema::hash_hex),
                ..protocol::RunParams::new(fc.mode, fc.rounds, eta)
            },
            consortium,
            round_timeout: secs("round_timeout_secs", fc.round_timeout_secs)?,
            join_timeout: secs("join_timeout_secs", fc.join_timeout_secs)?,
            max_attempts: fc.max_attempts,
            min_hospitals: fc.min_hospitals,
            checkpoint_path: fc.checkpoint_path,
            results_path: fc.results_path,
            run_id,
            max_message_bytes: fc.max_message_bytes,
            max_features: fc.max_features,
            idle_timeout: secs("idle_timeout_secs", fc.idle_timeout_secs)?,
        })
    }
}

/// The learning rate when the config gives none: the converging step
/// [`learning::converging_eta`] when the schema puts every feature on unit
/// scale, else 0.01 (no bound on the curvature is known for columns as
/// given).
pub fn default_eta(schema: Option<&ConsortiumSchema>, model: ModelKind, l2: f64) -> f64 {
    match schema {
        Some(s) if s.unit_scale() => learning::converging_eta(model, s.feature_names().len(), l2),
        _ => 0.01,
    }
}

#[cfg(test)]
mod tests {

    use learning::Dataset;

    /// Three hospitals' raw rows, standardized as the federation's statistics
    /// step would (pooled mean and population deviation of the training
    /// rows): the hospitals' training sets and the test set.
    fn standardized(csv: &str, target: &str) -> (ConsortiumSchema, Vec<Dataset>, Dataset) {
        use learning::schema::local_statistics;
        use learning::{Preprocessor, RawTable};
        let all = Dataset::from_csv_reader(csv.as_bytes(), target).unwrap();
        let n = all.n_rows();
        // Every fifth row is a test row; the others go round-robin to three sites.
        let test: Vec<usize> = (0..n).filter(|r| r % 5 == 0).collect();
        let train: Vec<usize> = (0..n).filter(|r| r % 5 != 0).collect();
        let sites: Vec<Dataset> = (0..3)
            .map(|h| {
                let rows: Vec<usize> = train.iter().copied().skip(h).step_by(3).collect();
                all.select_rows(&rows)
            })
            .collect();
        let schema =
            ConsortiumSchema::numeric(all.feature_names(), all.target_name(), true, true).unwrap();
        let tables: Vec<RawTable> = sites.iter().map(RawTable::from_dataset).collect();
        let mut pooled = vec![0.0; schema.statistics_len()];
        for t in &tables {
            for (p, v) in pooled.iter_mut().zip(local_statistics(t)) {
                *p += v;
            }
        }
        let pre = Preprocessor::from_statistics(&schema, &pooled, train.len() as u64).unwrap();
        let sites = tables
            .iter()
            .map(|t| pre.transform(&schema, t).unwrap())
            .collect();
        let test = pre
            .transform(&schema, &RawTable::from_dataset(&all.select_rows(&test)))
            .unwrap();
        (schema, sites, test)
    }

    /// The defaults of a config that names only the schema (mode global):
    /// eta and rounds as `Config::load` resolves them.
    fn default_run(schema: &ConsortiumSchema, model: ModelKind) -> learning::ReferenceRun {
        learning::ReferenceRun {
            mode: Mode::Global,
            rounds: FileConfig::default().rounds as usize,
            eta: default_eta(Some(schema), model, FileConfig::default().l2),
        }
    }

    /// The defaults reach within 5% of the pooled least-squares test loss on
    /// standardized rows (the cleartext twin, which the encrypted runs are
    /// held to in the protocol and binary tests).
    #[test]
    fn the_default_step_and_rounds_converge_on_standardized_rows() {
        let (schema, sites, test) =
            standardized(include_str!("../../scenarios/data/diabetes.csv"), "target");
        let run = default_run(&schema, ModelKind::Linear);
        let fed = run.run(&sites).unwrap().final_weights[0].clone();
        let pooled = Dataset::concat(&sites).unwrap();
        let ls = learning::least_squares(pooled.x(), pooled.y()).unwrap();
        let (fed_mse, ls_mse) = (
            learning::mse(test.x(), test.y(), &fed),
            learning::mse(test.x(), test.y(), &ls),
        );
        assert!(
            fed_mse <= 1.05 * ls_mse,
            "{fed_mse} vs least squares {ls_mse}"
        );

        // Logistic regression against the pooled optimum (gradient descent
        // run a hundred times longer).
        let (schema, sites, test) = standardized(
            include_str!("../../scenarios/data/breast_cancer.csv"),
            "target",
        );
        let obj = learning::Objective {
            model: ModelKind::Logistic,
            intercept: schema.intercept_index(),
            ..learning::Objective::LINEAR
        };
        let run = default_run(&schema, ModelKind::Logistic);
        let fed = run.run_for(&obj, &sites).unwrap().final_weights[0].clone();
        let long = learning::ReferenceRun {
            rounds: 100 * run.rounds,
            ..run
        };
        let opt = long.pooled_for(&obj, &sites).unwrap().weights;
        let loss = |w| match learning::Metrics::exact(ModelKind::Logistic, test.x(), test.y(), w)
            .unwrap()
        {
            learning::Metrics::Classification { log_loss, .. } => log_loss,
            other => panic!("{other:?}"),
        };
        let (fed_loss, opt_loss) = (loss(&fed), loss(&opt));
        assert!(
            fed_loss <= 1.05 * opt_loss,
            "{fed_loss} vs pooled optimum {opt_loss}"
        );
    }

    /// The documented example in docs/federation.md is a valid config (so the
    /// document cannot drift from the parser).
    #[test]
    fn the_documented_example_loads() {
        let doc = include_str!("../../docs/federation.md");
        let start = doc.find("## coordinator.json").expect("section");
        let block = &doc[start..];
        let open = block.find("```json\n").expect("example") + 8;
        let close = open + block[open..].find("```").expect("end of example");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("example.json");
        std::fs::write(&p, &block[open..close]).unwrap();
        let c = Config::load(Some(&p), &Overrides::default()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.roster.len(), 3);
    }
    use super::*;

    fn roster(n: usize) -> Vec<Member> {
        (1..=n)
            .map(|i| Member {
                name: format!("hospital-{i}"),
                address: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        let fc = FileConfig {
            roster: roster(3),
            ..FileConfig::default()
        };
        std::fs::write(&p, serde_json::to_string(&fc).unwrap()).unwrap();
        let ov = Overrides {
            rounds: Some(7),
            no_masks: true,
            ..Overrides::default()
        };
        let c = Config::load(Some(&p), &ov).unwrap();
        assert_eq!(c.params.rounds, 7);
        assert!(!c.params.masks && c.params.pack);
        assert_eq!(c.key_bits, 3072);
        assert_eq!(c.pki.ca, dir.path().join("pki/ca.pem"));
        assert_eq!(c.checkpoint_path, dir.path().join("checkpoint.json"));
    }

    #[test]
    fn packing_headroom_follows_the_roster_unless_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        let load = |fc: &FileConfig| {
            std::fs::write(&p, serde_json::to_string(fc).unwrap()).unwrap();
            Config::load(Some(&p), &Overrides::default()).unwrap()
        };
        let small = load(&FileConfig {
            roster: roster(3),
            ..FileConfig::default()
        });
        assert_eq!(small.params.fixed_point, FixedPoint::DEFAULT);
        let large = load(&FileConfig {
            roster: roster(100),
            ..FileConfig::default()
        });
        assert_eq!(large.params.fixed_point.max_addends, 100);
        let pinned = load(&FileConfig {
            roster: roster(100),
            fixed_point: FixedPointConfig {
                max_addends: Some(128),
                ..FixedPointConfig::default()
            },
            ..FileConfig::default()
        });
        assert_eq!(pinned.params.fixed_point.max_addends, 128);
        // A partial `fixed_point` keeps the other fields' defaults.
        std::fs::write(
            &p,
            r#"{"roster":[{"name":"a","address":"127.0.0.1:1"},{"name":"b","address":"127.0.0.1:2"},
                {"name":"c","address":"127.0.0.1:3"}], "fixed_point": {"frac_bits": 30}}"#,
        )
        .unwrap();
        let c = Config::load(Some(&p), &Overrides::default()).unwrap();
        assert_eq!(
            c.params.fixed_point,
            FixedPoint {
                frac_bits: 30,
                ..FixedPoint::DEFAULT
            }
        );
    }

    #[test]
    fn refuses_fewer_than_three_hospitals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"roster":[{"name":"a","address":"127.0.0.1:1"},{"name":"b","address":"127.0.0.1:2"}]}"#).unwrap();
        let e = format!(
            "{:#}",
            Config::load(Some(&p), &Overrides::default()).unwrap_err()
        );
        assert!(e.contains("at least 3"), "{e}");
        std::fs::write(&p, r#"{"roster":[], "min_hospitals": 2}"#).unwrap();
        let e = format!(
            "{:#}",
            Config::load(Some(&p), &Overrides::default()).unwrap_err()
        );
        assert!(e.contains("subtracting"), "{e}");
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"roundz": 3}"#).unwrap();
        let e = format!(
            "{:#}",
            Config::load(Some(&p), &Overrides::default()).unwrap_err()
        );
        assert!(e.contains("roundz"), "{e}");
        let mut fc = FileConfig {
            roster: roster(3),
            ..FileConfig::default()
        };
        fc.roster[1].address = "nowhere".into();
        std::fs::write(&p, serde_json::to_string(&fc).unwrap()).unwrap();
        let e = format!(
            "{:#}",
            Config::load(Some(&p), &Overrides::default()).unwrap_err()
        );
        assert!(e.contains("hospital-2") && e.contains("nowhere"), "{e}");
    }
}
