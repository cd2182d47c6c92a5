//! The sklearn-like front end: [`TrainerConfig`] (built with
//! [`TrainerConfigBuilder`]) and [`SgdClassifier`] with `fit`,
//! `partial_fit`, `predict` and `predict_proba` in all three [`Fhe`] modes.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tfhe::shortint::Ciphertext;

use crate::circuit::{infer, train_batch, CircuitConfig, ClearBackend, Plan, WeightState};
use crate::data::MinMaxScaler;
use crate::encode::{state_from_weights, weights_from_state, Quantizer};
use crate::error::{Error, Result};
use crate::float::{sigmoid, FloatModel};
use crate::keys::{Client, Server};

/// How the model is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fhe {
    /// Float32 reference on the same preprocessing and batches.
    Disable,
    /// The exact integer circuit, in the clear.
    Simulate,
    /// The same circuit under TFHE.
    Execute,
}

impl std::str::FromStr for Fhe {
    type Err = Error;
    fn from_str(s: &str) -> Result<Fhe> {
        match s {
            "disable" => Ok(Fhe::Disable),
            "simulate" => Ok(Fhe::Simulate),
            "execute" => Ok(Fhe::Execute),
            _ => Err(Error::Config(format!(
                "mode {s:?} is not one of disable, simulate, execute"
            ))),
        }
    }
}

/// Training hyper-parameters. Build with [`TrainerConfig::builder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    n_bits: u8,
    batch_size: usize,
    learning_rate: f64,
    /// The learning rate is the owner's rule ([`rule_learning_rate`]) on
    /// the training rows, `learning_rate` its cap, until one is set.
    learning_rate_rule: bool,
    parameters_range: (f64, f64),
    seed: u64,
    forward_step: f64,
    forward_clip: f64,
    backward_clip: f64,
    tree_max: u8,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            n_bits: 6,
            batch_size: 8,
            learning_rate: LEARNING_RATE_GRID[LEARNING_RATE_GRID.len() - 1],
            learning_rate_rule: true,
            parameters_range: (-1.0, 1.0),
            seed: 42,
            forward_step: 1.0,
            forward_clip: 2.5,
            backward_clip: 2.0,
            tree_max: 4,
        }
    }
}

impl TrainerConfig {
    /// A builder starting from the defaults (6-bit weights, batch 8, the
    /// owner's learning-rate rule [`rule_learning_rate`], weights in [-1,
    /// 1], seed 42).
    pub fn builder() -> TrainerConfigBuilder {
        TrainerConfigBuilder {
            cfg: TrainerConfig::default(),
        }
    }

    /// Bits of the encrypted master weights.
    pub fn n_bits(&self) -> u8 {
        self.n_bits
    }
    /// Rows per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// SGD learning rate: the one set, or, while the owner's rule is on,
    /// the rule's choice once a classifier has fitted its preprocessing
    /// (the grid's largest entry, 0.3, before).
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }
    /// Whether the learning rate is the owner's rule on the training rows
    /// ([`rule_learning_rate`]); off once one is set.
    pub fn learning_rate_rule(&self) -> bool {
        self.learning_rate_rule
    }

    /// This config with the learning rate the owner's rule picks on the
    /// min-max scaled training rows `scaled` and their `quantizer` (the
    /// config itself when a learning rate was set).
    pub fn resolved(&self, quantizer: &Quantizer, scaled: &[Vec<f64>]) -> Result<TrainerConfig> {
        let mut c = self.clone();
        if c.learning_rate_rule {
            c.learning_rate = rule_learning_rate(quantizer, scaled)?;
        }
        Ok(c)
    }
    /// Range of every weight.
    pub fn parameters_range(&self) -> (f64, f64) {
        self.parameters_range
    }
    /// Seed of the epoch shuffles.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The circuit config for `n_features` features and the given quantizer.
    pub fn circuit(&self, quantizer: &Quantizer) -> Result<CircuitConfig> {
        let mut c = CircuitConfig::new(quantizer.n_features(), self.batch_size);
        c.learning_rate = self.learning_rate;
        c.parameters_range = self.parameters_range;
        c.hi_max = hi_max_of(self.n_bits);
        c.forward_step = self.forward_step;
        c.forward_clip = self.forward_clip;
        c.backward_clip = self.backward_clip;
        c.tree_max = self.tree_max;
        Plan::new(c.clone())?;
        Ok(c)
    }
}

/// High-digit maximum of an `n_bits` weight: `2^(n - 2) - 1`, capped at 11.
fn hi_max_of(n_bits: u8) -> u8 {
    ((1u16 << (n_bits - 2)) - 1).min(11) as u8
}

/// Builder for [`TrainerConfig`]; `build` checks every value.
#[derive(Debug, Clone)]
pub struct TrainerConfigBuilder {
    cfg: TrainerConfig,
}

impl TrainerConfigBuilder {
    /// Bits of the encrypted master weights: 3, 4, 5 or 6. A weight is a
    /// high digit and a 2-bit low digit; the high digit's carry must fit its
    /// 4-bit block, which caps it at 12 values, so 6 bits means 48 levels.
    pub fn n_bits(mut self, n: u8) -> Self {
        self.cfg.n_bits = n;
        self
    }
    /// Rows per batch (1..=64).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.cfg.batch_size = n;
        self
    }
    /// SGD learning rate (> 0); turns the owner's rule
    /// ([`rule_learning_rate`]) off.
    pub fn learning_rate(mut self, lr: f64) -> Self {
        self.cfg.learning_rate = lr;
        self.cfg.learning_rate_rule = false;
        self
    }
    /// Range of every weight; must contain 0 strictly inside.
    pub fn parameters_range(mut self, lo: f64, hi: f64) -> Self {
        self.cfg.parameters_range = (lo, hi);
        self
    }
    /// Seed of the epoch shuffles.
    pub fn seed(mut self, s: u64) -> Self {
        self.cfg.seed = s;
        self
    }
    /// Largest magnitude of the 5-level forward weight `{-s, -s/2, 0, s/2, s}`
    /// (> 0).
    pub fn forward_step(mut self, v: f64) -> Self {
        self.cfg.forward_step = v;
        self
    }
    /// Clip of the margin accumulator (at least one product step `s / 2`;
    /// at most 2.5 `s` is used).
    pub fn forward_clip(mut self, v: f64) -> Self {
        self.cfg.forward_clip = v;
        self
    }
    /// Clip of the gradient reduction tree (> 0).
    pub fn backward_clip(mut self, v: f64) -> Self {
        self.cfg.backward_clip = v;
        self
    }
    /// Largest raw value in the gradient reduction tree (2, 4 or 6).
    pub fn tree_max(mut self, v: u8) -> Self {
        self.cfg.tree_max = v;
        self
    }
    /// Checks and returns the config.
    pub fn build(self) -> Result<TrainerConfig> {
        let c = self.cfg;
        if !(3..=6).contains(&c.n_bits) {
            return Err(Error::Config(format!(
                "n_bits {} is not in 3..=6",
                c.n_bits
            )));
        }
        // The circuit validates the rest with a placeholder feature count.
        let mut probe = CircuitConfig::new(1, c.batch_size);
        probe.learning_rate = c.learning_rate;
        probe.parameters_range = c.parameters_range;
        probe.forward_step = c.forward_step;
        probe.forward_clip = c.forward_clip;
        probe.backward_clip = c.backward_clip;
        probe.tree_max = c.tree_max;
        Plan::new(probe)?;
        Ok(c)
    }
}

/// Keys for `Fhe::Execute`: the owner's client and an in-process server.
#[derive(Debug, Clone)]
pub struct ExecKeys {
    /// The data owner's side.
    pub client: Arc<Client>,
    /// The evaluating side.
    pub server: Arc<Server>,
}

impl ExecKeys {
    /// Generates a key set (seconds: the server key is large).
    pub fn generate() -> ExecKeys {
        let client = Client::generate();
        let server = Server::from_key(client.key_id(), Arc::new(client.server_key_uncompressed()));
        ExecKeys {
            client: Arc::new(client),
            server: Arc::new(server),
        }
    }
}

#[derive(Debug, Clone)]
struct Prep {
    scaler: MinMaxScaler,
    quantizer: Quantizer,
    plan: Plan,
}

#[derive(Debug, Clone)]
enum State {
    Float(FloatModel),
    Clear(WeightState<u8>),
    Encrypted(WeightState<Ciphertext>),
}

/// Logistic regression trained by mini-batch SGD, in the clear, in the exact
/// integer simulation, or on TFHE ciphertexts.
#[derive(Debug, Clone)]
pub struct SgdClassifier {
    config: TrainerConfig,
    fhe: Fhe,
    keys: Option<ExecKeys>,
    prep: Option<Prep>,
    state: Option<State>,
    batches_done: u64,
    pbs: u64,
}

impl SgdClassifier {
    /// A new, unfitted classifier.
    pub fn new(config: TrainerConfig, fhe: Fhe) -> Self {
        SgdClassifier {
            config,
            fhe,
            keys: None,
            prep: None,
            state: None,
            batches_done: 0,
            pbs: 0,
        }
    }

    /// Uses the given keys for `Fhe::Execute` (otherwise they are generated
    /// on first use).
    pub fn with_keys(mut self, keys: ExecKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The evaluation mode.
    pub fn fhe(&self) -> Fhe {
        self.fhe
    }

    /// The config.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Batches trained since the last `fit`.
    pub fn batches_done(&self) -> u64 {
        self.batches_done
    }

    /// Bootstraps performed by training and inference (0 for `Disable`).
    pub fn pbs_count(&self) -> u64 {
        self.pbs
    }

    /// The circuit plan (after the first fit).
    pub fn plan(&self) -> Option<&Plan> {
        self.prep.as_ref().map(|p| &p.plan)
    }

    /// The fitted scaler.
    pub fn scaler(&self) -> Option<&MinMaxScaler> {
        self.prep.as_ref().map(|p| &p.scaler)
    }

    /// The fitted quantizer.
    pub fn quantizer(&self) -> Option<&Quantizer> {
        self.prep.as_ref().map(|p| &p.quantizer)
    }

    fn keys(&mut self) -> ExecKeys {
        self.keys.get_or_insert_with(ExecKeys::generate).clone()
    }

    /// Forgets any training, fits the preprocessing on `x`, then runs
    /// `epochs` shuffled passes of mini-batch SGD ([`epoch_orders`]: full
    /// batches only, a different shuffle each epoch).
    pub fn fit(&mut self, x: &[Vec<f64>], y: &[u8], epochs: usize) -> Result<&mut Self> {
        self.prep = None;
        self.state = None;
        self.batches_done = 0;
        self.init(x)?;
        let bs = self.config.batch_size;
        for order in epoch_orders(x.len(), bs, epochs, self.config.seed) {
            for idx in order.chunks_exact(bs) {
                let xs: Vec<Vec<f64>> = idx.iter().map(|&i| x[i].clone()).collect();
                let ys: Vec<u8> = idx.iter().map(|&i| y[i]).collect();
                self.step(&xs, &ys)?;
            }
        }
        Ok(self)
    }

    /// Fits the preprocessing (scaler, quantizer) and zero weights.
    fn init(&mut self, x: &[Vec<f64>]) -> Result<()> {
        let scaler = MinMaxScaler::fit(x)?;
        let scaled = scaler.transform(x)?;
        let quantizer = Quantizer::fit(&scaled)?;
        self.config = self.config.resolved(&quantizer, &scaled)?;
        let plan = Plan::new(self.config.circuit(&quantizer)?)?;
        let zeros = vec![0.0; plan.n_columns()];
        let state = match self.fhe {
            Fhe::Disable => State::Float(FloatModel::zeros(quantizer.n_features())),
            Fhe::Simulate => State::Clear(state_from_weights(&plan, &zeros)?),
            Fhe::Execute => {
                let keys = self.keys();
                State::Encrypted(
                    keys.client
                        .encrypt_state(&state_from_weights(&plan, &zeros)?),
                )
            }
        };
        self.prep = Some(Prep {
            scaler,
            quantizer,
            plan,
        });
        self.state = Some(state);
        Ok(())
    }

    /// One pass over `x` in order, in full batches of `batch_size`; rows
    /// past the last full batch are not used (the circuit only ever sees
    /// full batches, so the server never learns an exact row count). Fits
    /// the preprocessing first if this is the first call.
    pub fn partial_fit(&mut self, x: &[Vec<f64>], y: &[u8]) -> Result<&mut Self> {
        if x.len() != y.len() {
            return Err(Error::Shape(format!(
                "{} rows but {} labels",
                x.len(),
                y.len()
            )));
        }
        if self.prep.is_none() {
            self.init(x)?;
        }
        let bs = self.config.batch_size;
        for (xb, yb) in x.chunks_exact(bs).zip(y.chunks_exact(bs)) {
            self.step(xb, yb)?;
        }
        Ok(self)
    }

    /// One SGD step on one batch (exactly `batch_size` rows in `Simulate`
    /// and `Execute`).
    pub fn step(&mut self, x: &[Vec<f64>], y: &[u8]) -> Result<()> {
        if self.prep.is_none() {
            self.init(x)?;
        }
        let keys = if self.fhe == Fhe::Execute {
            Some(self.keys())
        } else {
            None
        };
        let prep = self.prep.as_ref().ok_or(Error::NotFitted)?;
        if y.iter().any(|&l| l > 1) {
            return Err(Error::Shape("labels must be 0 or 1".into()));
        }
        let scaled = prep.scaler.transform(x)?;
        let state = self.state.as_mut().ok_or(Error::NotFitted)?;
        match state {
            State::Float(m) => {
                let u: Vec<Vec<f64>> = scaled
                    .iter()
                    .map(|r| prep.quantizer.transform_row(r))
                    .collect::<Result<_>>()?;
                m.sgd_step(
                    &u,
                    y,
                    self.config.learning_rate,
                    self.config.parameters_range,
                );
            }
            State::Clear(st) => {
                let batch = prep.quantizer.training_batch(&scaled, y)?;
                let be = ClearBackend::new();
                train_batch(&be, &prep.plan, st, &batch)?;
                self.pbs += be_count(&be);
            }
            State::Encrypted(st) => {
                let keys = keys.ok_or(Error::MissingKey("execute keys"))?;
                let clear = prep.quantizer.training_batch(&scaled, y)?;
                let enc = keys.client.encrypt_batch(&clear)?;
                let batch = keys.server.expand_batch(&enc)?;
                let before = crate::circuit::Backend::pbs_count(keys.server.backend());
                keys.server.train(&prep.plan, st, &batch)?;
                self.pbs += crate::circuit::Backend::pbs_count(keys.server.backend()) - before;
            }
        }
        self.batches_done += 1;
        Ok(())
    }

    /// Weights on the preconditioned features, bias last (decrypts in
    /// `Execute`).
    pub fn raw_weights(&self) -> Result<Vec<f64>> {
        let prep = self.prep.as_ref().ok_or(Error::NotFitted)?;
        Ok(match self.state.as_ref().ok_or(Error::NotFitted)? {
            State::Float(m) => {
                let mut w: Vec<f64> = m.weights.iter().map(|&v| f64::from(v)).collect();
                w.push(f64::from(m.bias));
                w
            }
            State::Clear(st) => weights_from_state(&prep.plan, st),
            State::Encrypted(st) => {
                let keys = self.keys.as_ref().ok_or(Error::MissingKey("client key"))?;
                weights_from_state(&prep.plan, &keys.client.decrypt_state(st)?)
            }
        })
    }

    /// Weights and bias on the min-max scaled features ([-1, 1]).
    pub fn coefficients(&self) -> Result<(Vec<f64>, f64)> {
        let prep = self.prep.as_ref().ok_or(Error::NotFitted)?;
        Ok(prep.quantizer.to_scaled_weights(&self.raw_weights()?))
    }

    /// Probability of class 1 computed in float from the (decrypted) trained
    /// weights: what the data owner gets after decrypting the model.
    pub fn predict_proba_weights(&self, x: &[Vec<f64>]) -> Result<Vec<f64>> {
        let prep = self.prep.as_ref().ok_or(Error::NotFitted)?;
        let (w, b) = self.coefficients()?;
        let scaled = prep.scaler.transform(x)?;
        Ok(scaled
            .iter()
            .map(|r| sigmoid(r.iter().zip(&w).map(|(a, c)| a * c).sum::<f64>() + b))
            .collect())
    }

    /// Margin of each row from the (decrypted) trained weights.
    pub fn decision_function_weights(&self, x: &[Vec<f64>]) -> Result<Vec<f64>> {
        let prep = self.prep.as_ref().ok_or(Error::NotFitted)?;
        let (w, b) = self.coefficients()?;
        Ok(prep
            .scaler
            .transform(x)?
            .iter()
            .map(|r| r.iter().zip(&w).map(|(a, c)| a * c).sum::<f64>() + b)
            .collect())
    }

    /// Accuracy of the (decrypted) trained weights on `x`, `y`.
    pub fn score(&self, x: &[Vec<f64>], y: &[u8]) -> Result<f64> {
        let p = self.predict_proba_weights(x)?;
        accuracy(&p, y)
    }

    /// Probability of class 1 in this classifier's mode: float (`Disable`),
    /// the integer inference circuit in the clear (`Simulate`) or encrypted
    /// inference (`Execute`: rows encrypted by the client, evaluated by the
    /// server on encrypted weights, levels decrypted by the client). The
    /// circuit outputs one of four sigmoid levels.
    pub fn predict_proba(&mut self, x: &[Vec<f64>]) -> Result<Vec<f64>> {
        let keys = if self.fhe == Fhe::Execute {
            Some(self.keys())
        } else {
            None
        };
        let prep = self.prep.as_ref().ok_or(Error::NotFitted)?;
        let scaled = prep.scaler.transform(x)?;
        match self.state.as_ref().ok_or(Error::NotFitted)? {
            State::Float(_) => self.predict_proba_weights(x),
            State::Clear(st) => {
                let rows = prep.quantizer.inference_rows(&scaled)?;
                let be = ClearBackend::new();
                let levels = infer(&be, &prep.plan, st, &rows)?;
                self.pbs += be_count(&be);
                Ok(levels.iter().map(|&l| prep.plan.sigmoid_level(l)).collect())
            }
            State::Encrypted(st) => {
                let keys = keys.ok_or(Error::MissingKey("execute keys"))?;
                let rows = prep.quantizer.inference_rows(&scaled)?;
                let file = keys.client.rows_file(&rows)?;
                let before = crate::circuit::Backend::pbs_count(keys.server.backend());
                let preds = keys.server.predict(&prep.plan, st, &file)?;
                self.pbs += crate::circuit::Backend::pbs_count(keys.server.backend()) - before;
                let levels = keys.client.decrypt_predictions(&preds)?;
                Ok(levels.iter().map(|&l| prep.plan.sigmoid_level(l)).collect())
            }
        }
    }

    /// Class predictions (probability >= 0.5) in this classifier's mode.
    pub fn predict(&mut self, x: &[Vec<f64>]) -> Result<Vec<u8>> {
        Ok(self
            .predict_proba(x)?
            .iter()
            .map(|&p| u8::from(p >= 0.5))
            .collect())
    }

    /// The clear circuit state (`Simulate`), or the decrypted one
    /// (`Execute`); `None` for `Disable`.
    pub fn circuit_state(&self) -> Result<Option<WeightState<u8>>> {
        Ok(match self.state.as_ref().ok_or(Error::NotFitted)? {
            State::Float(_) => None,
            State::Clear(st) => Some(st.clone()),
            State::Encrypted(st) => {
                let keys = self.keys.as_ref().ok_or(Error::MissingKey("client key"))?;
                Some(keys.client.decrypt_state(st)?)
            }
        })
    }
}

/// Multi-class logistic regression by one-vs-rest: one binary
/// [`SgdClassifier`] per class (class `c` against the others), all in the
/// same [`Fhe`] mode, sharing the keys in `Execute`. Each binary model is
/// trained on its own label-flipped batches, so the per-batch price is
/// `k` times the binary one.
#[derive(Debug, Clone)]
pub struct OneVsRest {
    config: TrainerConfig,
    fhe: Fhe,
    keys: Option<ExecKeys>,
    models: Vec<SgdClassifier>,
}

impl OneVsRest {
    /// A new, unfitted classifier.
    pub fn new(config: TrainerConfig, fhe: Fhe) -> Self {
        OneVsRest {
            config,
            fhe,
            keys: None,
            models: Vec::new(),
        }
    }

    /// Uses the given keys for `Fhe::Execute` in every binary model.
    pub fn with_keys(mut self, keys: ExecKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The binary models, class by class (after `fit`).
    pub fn models(&self) -> &[SgdClassifier] {
        &self.models
    }

    /// Fits one binary model per class `0..classes` on `epochs` shuffled
    /// passes (the same shuffles for every class).
    pub fn fit(
        &mut self,
        x: &[Vec<f64>],
        y: &[u8],
        classes: u8,
        epochs: usize,
    ) -> Result<&mut Self> {
        if classes < 2 || y.iter().any(|&l| l >= classes) {
            return Err(Error::Shape(format!(
                "labels must be class indices below {classes} (at least 2)"
            )));
        }
        if self.fhe == Fhe::Execute && self.keys.is_none() {
            self.keys = Some(ExecKeys::generate());
        }
        self.models.clear();
        for c in 0..classes {
            let yc: Vec<u8> = y.iter().map(|&l| u8::from(l == c)).collect();
            let mut m = SgdClassifier::new(self.config.clone(), self.fhe);
            if let Some(k) = &self.keys {
                m = m.with_keys(k.clone());
            }
            m.fit(x, &yc, epochs)?;
            self.models.push(m);
        }
        Ok(self)
    }

    /// Class of each row from the decrypted weights: the largest margin.
    pub fn predict_weights(&self, x: &[Vec<f64>]) -> Result<Vec<u8>> {
        let margins = self
            .models
            .iter()
            .map(|m| m.decision_function_weights(x))
            .collect::<Result<Vec<_>>>()?;
        argmax_columns(&margins, x.len())
    }

    /// Accuracy of [`OneVsRest::predict_weights`].
    pub fn score(&self, x: &[Vec<f64>], y: &[u8]) -> Result<f64> {
        let p = self.predict_weights(x)?;
        if p.len() != y.len() || y.is_empty() {
            return Err(Error::Shape(
                "predictions and labels differ in length".into(),
            ));
        }
        Ok(p.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64)
    }

    /// Per-class probabilities in this classifier's mode (float, the clear
    /// inference circuit, or encrypted inference), normalized to sum to 1
    /// (uniform when every class says 0).
    pub fn predict_proba(&mut self, x: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
        if self.models.is_empty() {
            return Err(Error::NotFitted);
        }
        let per_class = self
            .models
            .iter_mut()
            .map(|m| m.predict_proba(x))
            .collect::<Result<Vec<_>>>()?;
        let k = per_class.len();
        Ok((0..x.len())
            .map(|i| {
                let row: Vec<f64> = per_class.iter().map(|p| p[i]).collect();
                let total: f64 = row.iter().sum();
                if total > 0.0 {
                    row.iter().map(|p| p / total).collect()
                } else {
                    vec![1.0 / k as f64; k]
                }
            })
            .collect())
    }

    /// Class predictions in this classifier's mode (largest probability,
    /// ties to the lower class).
    pub fn predict(&mut self, x: &[Vec<f64>]) -> Result<Vec<u8>> {
        let p = self.predict_proba(x)?;
        let cols: Vec<Vec<f64>> = (0..self.models.len())
            .map(|c| p.iter().map(|r| r[c]).collect())
            .collect();
        argmax_columns(&cols, x.len())
    }
}

/// Row-wise argmax of per-class columns (ties to the lower class).
fn argmax_columns(cols: &[Vec<f64>], rows: usize) -> Result<Vec<u8>> {
    if cols.is_empty() {
        return Err(Error::NotFitted);
    }
    Ok((0..rows)
        .map(|i| {
            let mut best = 0;
            for c in 1..cols.len() {
                if cols[c][i] > cols[best][i] {
                    best = c;
                }
            }
            best as u8
        })
        .collect())
}

/// The coarse public grid [`select_config`] draws from: `(learning rate,
/// weight range R for [-R, R], forward step)`. The first entry is the
/// default.
pub const SELECTION_GRID: [(f64, f64, f64); 6] = [
    (0.3, 1.0, 1.0),
    (0.15, 1.0, 1.0),
    (0.6, 1.0, 1.0),
    (0.3, 2.0, 2.0),
    (0.15, 2.0, 2.0),
    (0.3, 2.0, 1.0),
];

/// The owner's model selection, in the clear and on the training rows only:
/// holds out a stratified 30% of them, trains each [`SELECTION_GRID`] entry
/// in `Simulate` (bit for bit what `Execute` would compute) on the rest with
/// [`default_epochs`], and returns `base` with the entry of best validation
/// accuracy (ties to the earlier entry). The server only learns the chosen
/// grid entry, which is public anyway. Binary labels only.
pub fn select_config(base: &TrainerConfig, x: &[Vec<f64>], y: &[u8]) -> Result<TrainerConfig> {
    let names: Vec<String> = (0..x.first().map_or(0, Vec::len))
        .map(|j| format!("f{j}"))
        .collect();
    let d = crate::data::Dataset::new(names, x.to_vec(), y.to_vec())?;
    let (tr, va) = d.stratified_split(0.3, base.seed)?;
    let mut best: Option<(f64, TrainerConfig)> = None;
    for &(lr, range, step) in &SELECTION_GRID {
        let mut c = base.clone();
        c.learning_rate = lr;
        c.learning_rate_rule = false;
        c.parameters_range = (-range, range);
        c.forward_step = step;
        let mut m = SgdClassifier::new(c.clone(), Fhe::Simulate);
        m.fit(tr.x(), tr.y(), default_epochs(tr.len(), c.batch_size))?;
        let acc = m.score(va.x(), va.y())?;
        if best.as_ref().is_none_or(|(b, _)| acc > *b) {
            best = Some((acc, c));
        }
    }
    best.map(|b| b.1)
        .ok_or_else(|| Error::Config("empty selection grid".into()))
}

/// The coarse public grid of the owner's learning-rate rule
/// ([`rule_learning_rate`]), smallest first; its largest entry, 0.3, is the
/// former fixed default.
pub const LEARNING_RATE_GRID: [f64; 4] = [0.1, 0.15, 0.2, 0.3];

/// Largest eigenvalue of the second-moment matrix `E[u u^T]` of the
/// training rows as the circuit sees them: `u` the 3-level feature values
/// (`-1, 0, 1`) and the bias column 1. Power iteration from the all-ones
/// vector (the matrix is symmetric, non-negative definite and has a
/// positive diagonal entry, the bias).
pub fn second_moment_eigenvalue(quantizer: &Quantizer, scaled: &[Vec<f64>]) -> Result<f64> {
    if scaled.is_empty() {
        return Err(Error::Shape("no training rows".into()));
    }
    let rows: Vec<Vec<f64>> = scaled
        .iter()
        .map(|r| {
            Ok(quantizer
                .indices(r)?
                .iter()
                .map(|&i| crate::circuit::X_LEVELS[usize::from(i)])
                .collect())
        })
        .collect::<Result<_>>()?;
    let c = rows[0].len();
    let n = rows.len() as f64;
    let mut m = vec![0.0; c * c];
    for r in &rows {
        for i in 0..c {
            if r[i] != 0.0 {
                for j in 0..c {
                    m[i * c + j] += r[i] * r[j] / n;
                }
            }
        }
    }
    let mut v = vec![1.0 / (c as f64).sqrt(); c];
    let mut lambda = 0.0;
    for _ in 0..500 {
        let w: Vec<f64> = (0..c)
            .map(|i| (0..c).map(|j| m[i * c + j] * v[j]).sum())
            .collect();
        let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm <= 0.0 {
            break;
        }
        v = w.iter().map(|a| a / norm).collect();
        let done = (norm - lambda).abs() <= 1e-12 * norm;
        lambda = norm;
        if done {
            break;
        }
    }
    Ok(lambda)
}

/// The owner's learning-rate rule, in the clear on its training rows: the
/// largest entry of [`LEARNING_RATE_GRID`] not above `1 / lambda`, `lambda`
/// the largest eigenvalue of `E[u u^T]` ([`second_moment_eigenvalue`]); the
/// smallest entry if none is. The logistic loss has curvature at most
/// `lambda / 4`, so this is a quarter of the classical `1 / L` step:
/// data whose features move together (many correlated columns) get a
/// smaller rate, which lowers the noise of the final SGD iterate where the
/// loss is steepest; data with few or independent features keep 0.3. The
/// grid stops at 0.3, the former fixed default, so the rule only ever
/// lowers the rate. The server learns only the grid entry.
pub fn rule_learning_rate(quantizer: &Quantizer, scaled: &[Vec<f64>]) -> Result<f64> {
    let lambda = second_moment_eigenvalue(quantizer, scaled)?;
    Ok(LEARNING_RATE_GRID
        .iter()
        .rev()
        .copied()
        .find(|&lr| lr * lambda <= 1.0)
        .unwrap_or(LEARNING_RATE_GRID[0]))
}

/// Fewest SGD steps the default training length aims for.
pub const MIN_STEPS: usize = 300;
/// Most epochs the default training length uses.
pub const MAX_EPOCHS: usize = 20;

/// The default number of epochs for `rows` training rows: enough epochs for
/// [`MIN_STEPS`] steps, at least 1 and at most [`MAX_EPOCHS`]. A rule on the
/// row count only, which the server learns anyway from the number of batches.
pub fn default_epochs(rows: usize, batch_size: usize) -> usize {
    let per_epoch = (rows / batch_size.max(1)).max(1);
    MIN_STEPS.div_ceil(per_epoch).clamp(1, MAX_EPOCHS)
}

/// The row order of each epoch: a fresh shuffle of `0..rows` per epoch
/// (seeded), cut to a whole number of batches. The rows left over differ
/// from epoch to epoch, so over several epochs every row is used.
pub fn epoch_orders(rows: usize, batch_size: usize, epochs: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..rows).collect();
    let keep = rows - rows % batch_size.max(1);
    (0..epochs)
        .map(|_| {
            order.shuffle(&mut rng);
            order[..keep].to_vec()
        })
        .collect()
}

fn be_count(be: &ClearBackend) -> u64 {
    crate::circuit::Backend::pbs_count(be)
}

/// Fraction of probabilities on the right side of 0.5.
pub fn accuracy(p: &[f64], y: &[u8]) -> Result<f64> {
    if p.len() != y.len() || y.is_empty() {
        return Err(Error::Shape(format!(
            "{} predictions for {} labels",
            p.len(),
            y.len()
        )));
    }
    let ok = p
        .iter()
        .zip(y)
        .filter(|(p, &l)| u8::from(**p >= 0.5) == l)
        .count();
    Ok(ok as f64 / y.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validates() {
        assert!(TrainerConfig::builder().n_bits(7).build().is_err());
        assert!(TrainerConfig::builder().n_bits(2).build().is_err());
        assert!(TrainerConfig::builder().batch_size(0).build().is_err());
        assert!(TrainerConfig::builder()
            .learning_rate(-1.0)
            .build()
            .is_err());
        assert!(TrainerConfig::builder()
            .parameters_range(0.0, 1.0)
            .build()
            .is_err());
        let c = TrainerConfig::builder()
            .n_bits(4)
            .batch_size(4)
            .learning_rate(0.1)
            .parameters_range(-2.0, 2.0)
            .seed(3)
            .build()
            .unwrap();
        assert_eq!((c.n_bits(), c.batch_size(), c.seed()), (4, 4, 3));
    }

    #[test]
    fn selection_picks_a_grid_entry() {
        use rand::{Rng, SeedableRng};
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let x: Vec<Vec<f64>> = (0..120)
            .map(|_| (0..3).map(|_| rng.gen_range(-1.0..1.0)).collect())
            .collect();
        let y: Vec<u8> = x
            .iter()
            .map(|r| u8::from(r[0] + 0.3 * r[1] > 0.0))
            .collect();
        let c = select_config(&TrainerConfig::default(), &x, &y).unwrap();
        let entry = (c.learning_rate, -c.parameters_range.0, c.forward_step);
        assert!(SELECTION_GRID.contains(&entry), "{entry:?}");
        assert_eq!(c.batch_size(), 8);
        assert!(select_config(&TrainerConfig::default(), &x, &[2; 120]).is_err());
    }

    #[test]
    fn learning_rate_rule_follows_the_curvature() {
        // Balanced, independent features on -1, 0, 1 (81 rows): their
        // quantizer is the identity, E[u u^T] = diag(2/3, .., 1) for the bias.
        let level = |i: usize, k: u32| (i / 3usize.pow(k)) % 3;
        let rows = |f: &dyn Fn(usize) -> Vec<f64>| -> (Quantizer, Vec<Vec<f64>>) {
            let x: Vec<Vec<f64>> = (0..81).map(f).collect();
            (Quantizer::fit(&x).unwrap(), x)
        };
        let (q, x) = rows(&|i| (0..2).map(|k| level(i, k) as f64 - 1.0).collect());
        let lambda = second_moment_eigenvalue(&q, &x).unwrap();
        assert!((lambda - 1.0).abs() < 1e-9, "{lambda}");
        assert_eq!(rule_learning_rate(&q, &x).unwrap(), 0.3);
        // `n` copies of one feature: lambda = 2 n / 3.
        for (n, lr) in [(4, 0.3), (6, 0.2), (10, 0.15), (20, 0.1)] {
            let (q, x) = rows(&|i| vec![level(i, 0) as f64 - 1.0; n]);
            let lambda = second_moment_eigenvalue(&q, &x).unwrap();
            assert!(
                (lambda - 2.0 * n as f64 / 3.0).abs() < 1e-6,
                "{n}: {lambda}"
            );
            assert_eq!(rule_learning_rate(&q, &x).unwrap(), lr, "{n} copies");
        }
        // The rule is on by default and applied by the fit; a set rate wins.
        let (_, copies) = rows(&|i| vec![level(i, 0) as f64 - 1.0; 10]);
        let y: Vec<u8> = (0..81).map(|i| u8::from(i % 3 == 2)).collect();
        let mut m = SgdClassifier::new(TrainerConfig::default(), Fhe::Simulate);
        m.fit(&copies, &y, 1).unwrap();
        assert!(m.config().learning_rate_rule());
        assert_eq!(m.config().learning_rate(), 0.15);
        let cfg = TrainerConfig::builder().learning_rate(0.3).build().unwrap();
        assert!(!cfg.learning_rate_rule());
        let mut m = SgdClassifier::new(cfg, Fhe::Simulate);
        m.fit(&copies, &y, 1).unwrap();
        assert_eq!(m.config().learning_rate(), 0.3);
    }

    #[test]
    fn mode_parses() {
        assert_eq!("simulate".parse::<Fhe>().unwrap(), Fhe::Simulate);
        assert!("fast".parse::<Fhe>().is_err());
    }

    #[test]
    fn unfitted_model_errors() {
        let mut m = SgdClassifier::new(TrainerConfig::default(), Fhe::Simulate);
        assert!(matches!(m.predict(&[vec![1.0]]), Err(Error::NotFitted)));
    }
}
