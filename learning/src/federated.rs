//! The federation's update rule ([`Mode`], [`apply_aggregate`]) and its
//! in-process cleartext twin ([`ReferenceRun`]): the same rounds and steps the
//! encrypted multi-process protocol performs, without encryption or network,
//! so that encrypted runs can be checked weight for weight.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{gradient, ModelKind};

/// How hospitals combine the aggregated gradient with their models.
///
/// `eta` has one meaning in every mode: the step taken on the **mean**
/// gradient of the rows behind it (the loss is the mean loss per row). The
/// modes differ only in where the models start and whose rows the mean is
/// over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// python-paillier's federated example: each hospital starts from its
    /// local-only model (`rounds` steps of `w -= eta * mean gradient of its own
    /// rows`) and each round applies `w_i -= eta * (sum_h grad_h(w_h)) /
    /// n_total_rows`, every hospital's gradient taken at its own model.
    ///
    /// The example itself steps by 0.01 on *summed* gradients with 130 rows
    /// per hospital: that is `eta = 0.01 * 130 = 1.3` here, and the arithmetic
    /// is ordered as the example's (`sum / n_hospitals`, then a step of
    /// `eta * n_hospitals / n_total_rows`), so its published table is
    /// reproduced to the last bit.
    #[default]
    Seed,
    /// One shared model from zeros; each round
    /// `w -= eta * (sum_h grad_h(w)) / n_total_rows`: full-batch gradient
    /// descent on the pooled data with the mean gradient.
    Global,
}

impl Mode {
    /// The lowercase name used in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Seed => "seed",
            Mode::Global => "global",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "seed" => Ok(Mode::Seed),
            "global" => Ok(Mode::Global),
            other => Err(Error::InvalidParameter {
                name: "mode",
                reason: format!("{other:?} is not one of \"seed\", \"global\""),
            }),
        }
    }
}

/// The learning rate at which full-batch gradient descent converges on
/// standardized rows, whatever they hold: the mean loss's curvature (the
/// Hessian's largest eigenvalue) is at most the trace of the features'
/// second-moment matrix, which is at most `features` when every column has
/// mean square at most 1 (a standardized column exactly 1, the intercept 1,
/// a one-hot column its category's share), a quarter of that for logistic
/// regression, plus the penalty `l2`; the step 1 / bound is below
/// 2 / curvature. `features` counts the intercept.
pub fn converging_eta(model: ModelKind, features: usize, l2: f64) -> f64 {
    let curvature = match model {
        ModelKind::Logistic => features as f64 / 4.0,
        ModelKind::Linear | ModelKind::Ridge => features as f64,
    };
    1.0 / (curvature.max(1.0) + l2)
}

/// A learning rate on summed gradients (python-paillier's convention, where
/// each hospital steps by `eta_sum` times the sum of its rows' gradients) as
/// this crate's one meaning, the step on the mean gradient: `eta_sum` times
/// the rows behind each hospital's gradient, `n_rows / n_hospitals`. The
/// published example's 0.01 with 130 rows per hospital is 1.3.
pub fn eta_from_summed(eta_sum: f64, n_rows: usize, n_hospitals: usize) -> f64 {
    eta_sum * (n_rows as f64 / n_hospitals.max(1) as f64)
}

/// What a run trains and when it may stop early: the model kind, its L2
/// penalty (ridge), which feature is the unpenalized intercept, and the
/// tolerance on the norm of the (penalized) mean gradient at which `global`
/// mode stops before its round limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// The model.
    pub model: ModelKind,
    /// L2 penalty strength on the mean loss (0 for none).
    pub l2: f64,
    /// Index of the intercept feature, which is never penalized.
    pub intercept: Option<usize>,
    /// Stop once the norm of the penalized mean gradient is below this
    /// (`global` mode only).
    pub tolerance: Option<f64>,
}

impl Objective {
    /// Plain linear regression, no penalty, no early stop: the original protocol.
    pub const LINEAR: Objective = Objective {
        model: ModelKind::Linear,
        l2: 0.0,
        intercept: None,
        tolerance: None,
    };

    /// Whether training ends after a step whose direction had norm `norm`
    /// (as [`Objective::apply`] returns it): only in `global` mode, once the
    /// norm is below the tolerance. Every node decides this from the same
    /// aggregate and the same weights, so they agree without a message.
    pub fn stops(&self, mode: Mode, norm: f64) -> bool {
        mode == Mode::Global && self.tolerance.is_some_and(|tol| norm < tol)
    }

    /// One hospital's step with the decrypted aggregate (see
    /// [`apply_aggregate`]); returns the norm of the direction it took, for
    /// [`Objective::stops`].
    pub fn apply(
        &self,
        mode: Mode,
        w: &mut Array1<f64>,
        aggregate_sum: &Array1<f64>,
        n_hospitals: usize,
        n_total_rows: usize,
        eta: f64,
    ) -> f64 {
        let divisor = match mode {
            Mode::Seed => n_hospitals,
            Mode::Global => n_total_rows,
        } as f64;
        self.step(w, aggregate_sum, divisor, n_total_rows as f64, eta)
    }

    /// `w -= eta * (sum / rows + penalty)`: a step of `eta` on the mean
    /// gradient over `rows` rows, whose sum is `sum`; the norm of that mean
    /// direction.
    ///
    /// The arithmetic divides `sum` by `divisor` first and then steps by
    /// `eta / (rows / divisor)`. With `divisor == rows` that is the plain
    /// mean-gradient step; `seed` mode divides by the number of hospitals
    /// (the example's order), so that with the example's `eta` on summed
    /// gradients times its rows per hospital the step is the example's own
    /// to the bit.
    fn step(
        &self,
        w: &mut Array1<f64>,
        sum: &Array1<f64>,
        divisor: f64,
        rows: f64,
        eta: f64,
    ) -> f64 {
        // Rows behind each unit of `sum / divisor`: the penalty is scaled up by
        // it so that after the step's division it is `l2 * w` on the mean loss.
        let per = rows / divisor;
        let mut d = sum / divisor;
        if self.l2 != 0.0 {
            for (i, (a, wi)) in d.iter_mut().zip(w.iter()).enumerate() {
                if Some(i) != self.intercept {
                    *a += self.l2 * per * wi;
                }
            }
        }
        // Dividing by `per == 1` is exact: global mode's arithmetic is unchanged.
        w.scaled_add(-(eta / per), &d);
        d.dot(&d).sqrt() / per
    }

    /// Local-only training from zeros: `iterations` steps of `eta` on the
    /// mean gradient of the hospital's own rows (the same rule the federated
    /// model follows on the pooled rows, so the local-only baseline is
    /// trained with the same `eta` on the same scale), with this objective's
    /// model and penalty, and in `global` mode its early stop. In `seed` mode
    /// the arithmetic is python-paillier's `w -= (eta / rows) * summed
    /// gradient`.
    pub fn train_local(
        &self,
        mode: Mode,
        x: &Array2<f64>,
        y: &Array1<f64>,
        iterations: usize,
        eta: f64,
    ) -> Array1<f64> {
        let mut w = Array1::zeros(x.ncols());
        for _ in 0..iterations {
            let g = self.model.gradient(x, y, &w);
            // One hospital's own federation: the aggregate is its gradient.
            let norm = self.apply(mode, &mut w, &g, 1, x.nrows().max(1), eta);
            if self.stops(mode, norm) {
                break;
            }
        }
        w
    }
}

impl Default for Objective {
    fn default() -> Self {
        Objective::LINEAR
    }
}

/// One hospital's step with the decrypted aggregate (the sum of all hospitals'
/// gradients): `w -= eta * aggregate_sum / n_total_rows` in either mode (linear
/// regression; [`Objective::apply`] adds a penalty, and shows how `seed` mode
/// orders the arithmetic).
pub fn apply_aggregate(
    mode: Mode,
    w: &mut Array1<f64>,
    aggregate_sum: &Array1<f64>,
    n_hospitals: usize,
    n_total_rows: usize,
    eta: f64,
) {
    Objective::LINEAR.apply(mode, w, aggregate_sum, n_hospitals, n_total_rows, eta);
}

/// Local-only linear regression from zeros: `iterations` steps of `eta` on the
/// mean gradient of the hospital's own rows (see [`Objective::train_local`];
/// in [`Mode::Seed`] that is python-paillier's [`crate::train_local`] with
/// `eta / rows` on the summed gradient).
pub fn train_local_for(
    mode: Mode,
    x: &Array2<f64>,
    y: &Array1<f64>,
    iterations: usize,
    eta: f64,
) -> Array1<f64> {
    Objective::LINEAR.train_local(mode, x, y, iterations, eta)
}

/// The cleartext twin of the federated protocol: the rounds and steps the
/// encrypted multi-process run performs, in the clear and in one process.
///
/// [`ReferenceRun::run`] is the run in which every hospital takes part in
/// every round; [`ReferenceRun::run_rounds`] follows the participants each
/// round actually had (as the coordinator's results record them), dropouts
/// and rejoins included, so that encrypted runs with failures are held to it
/// too. [`ReferenceRun::pooled`] is the pooled-data comparison the scenario
/// tables print.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceRun {
    /// Update rule.
    pub mode: Mode,
    /// Number of federated rounds (and of local-only iterations).
    pub rounds: usize,
    /// Learning rate: the step on the mean gradient (see [`Mode`]).
    pub eta: f64,
}

/// Weights produced by a [`ReferenceRun`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceResult {
    /// Each hospital's local-only model ([`train_local_for`] with `mode`, `rounds`, `eta`).
    pub local_weights: Vec<Array1<f64>>,
    /// `weights_per_round[r][h]`: hospital `h`'s model after round `r + 1`. A
    /// hospital away from a round keeps the model it had when it left until it
    /// takes part again.
    pub weights_per_round: Vec<Vec<Array1<f64>>>,
    /// Each hospital's model after every aggregate of the run (its starting
    /// model when `rounds` is 0): what a hospital reports at the end, having
    /// replayed the aggregates of rounds it missed.
    pub final_weights: Vec<Array1<f64>>,
}

/// The aggregate of one round as hospitals apply it.
struct Aggregate {
    sum: Array1<f64>,
    n_hospitals: usize,
    n_total_rows: usize,
}

impl ReferenceRun {
    /// Runs the protocol in the clear over the hospitals' data sets, which must
    /// share one schema, every hospital taking part in every round in the
    /// given order.
    pub fn run(&self, hospitals: &[Dataset]) -> Result<ReferenceResult> {
        let everyone: Vec<usize> = (0..hospitals.len()).collect();
        self.run_rounds(hospitals, &vec![everyone; self.rounds])
    }

    /// Runs the protocol in the clear with `participants[r]` (indices into
    /// `hospitals`, in ring order) taking part in round `r`, one list per
    /// round.
    ///
    /// This follows what the hospitals do: a hospital that rejoins first
    /// replays the aggregates of the rounds it missed (as it does on its new
    /// setup) and then computes its gradient; the aggregate of a round is the
    /// sum of its participants' gradients in ring order, averaged over their
    /// rows. With everyone in every
    /// round this is exactly [`ReferenceRun::run`].
    pub fn run_rounds(
        &self,
        hospitals: &[Dataset],
        participants: &[Vec<usize>],
    ) -> Result<ReferenceResult> {
        self.run_rounds_for(&Objective::LINEAR, hospitals, participants)
    }

    /// [`ReferenceRun::run`] for `objective`: its model, its penalty, and in
    /// `global` mode its early stop (the run then has fewer rounds than
    /// `self.rounds`).
    pub fn run_for(&self, objective: &Objective, hospitals: &[Dataset]) -> Result<ReferenceResult> {
        let everyone: Vec<usize> = (0..hospitals.len()).collect();
        self.run_rounds_for(objective, hospitals, &vec![everyone; self.rounds])
    }

    /// [`ReferenceRun::run_rounds`] for `objective` (see [`ReferenceRun::run_for`]).
    pub fn run_rounds_for(
        &self,
        objective: &Objective,
        hospitals: &[Dataset],
        participants: &[Vec<usize>],
    ) -> Result<ReferenceResult> {
        let first = self.check(hospitals)?;
        check_participants(hospitals.len(), self.rounds, participants)?;
        let n_features = first.n_features();
        let local_weights: Vec<Array1<f64>> = hospitals
            .iter()
            .map(|h| objective.train_local(self.mode, h.x(), h.y(), self.rounds, self.eta))
            .collect();
        let mut weights: Vec<Array1<f64>> = match self.mode {
            Mode::Seed => local_weights.clone(),
            Mode::Global => vec![Array1::zeros(n_features); hospitals.len()],
        };
        let mut history: Vec<Aggregate> = Vec::with_capacity(self.rounds);
        // How many aggregates of `history` each hospital has applied.
        let mut applied = vec![0usize; hospitals.len()];
        let mut weights_per_round = Vec::with_capacity(self.rounds);
        for ring in participants {
            for &h in ring {
                self.catch_up(objective, &mut weights[h], &history[applied[h]..]);
                applied[h] = history.len();
            }
            let mut sum = Array1::<f64>::zeros(n_features);
            for &h in ring {
                sum += &objective
                    .model
                    .gradient(hospitals[h].x(), hospitals[h].y(), &weights[h]);
            }
            let aggregate = Aggregate {
                sum,
                n_hospitals: ring.len(),
                n_total_rows: ring.iter().map(|&h| hospitals[h].n_rows()).sum(),
            };
            // In `global` mode every member holds the same model, so the
            // head's step decides the early stop for all.
            let mut stop = false;
            for (i, &h) in ring.iter().enumerate() {
                let norm = objective.apply(
                    self.mode,
                    &mut weights[h],
                    &aggregate.sum,
                    aggregate.n_hospitals,
                    aggregate.n_total_rows,
                    self.eta,
                );
                if i == 0 {
                    stop = objective.stops(self.mode, norm);
                }
                applied[h] += 1;
            }
            history.push(aggregate);
            weights_per_round.push(weights.clone());
            if stop {
                break;
            }
        }
        for (w, done) in weights.iter_mut().zip(&applied) {
            self.catch_up(objective, w, &history[*done..]);
        }
        Ok(ReferenceResult {
            local_weights,
            weights_per_round,
            final_weights: weights,
        })
    }

    /// The pooled-data comparison: all training rows in one place, trained in
    /// the clear from zeros with the federation's own gradient steps.
    /// [`Mode::Seed`]: `2 * rounds` steps of `eta` on the pooled mean gradient
    /// (each federated model took `rounds` local steps and then `rounds` steps
    /// of that rule), in the published reference's arithmetic `w -= (eta_sum
    /// / n_hospitals) * summed gradient` with `eta_sum = eta / (n_rows /
    /// n_hospitals)`; [`Mode::Global`]: `rounds` steps of `w -= eta * grad /
    /// n_rows`, exactly what the federation computes.
    pub fn pooled(&self, hospitals: &[Dataset]) -> Result<PooledResult> {
        self.pooled_for(&Objective::LINEAR, hospitals)
    }

    /// [`ReferenceRun::pooled`] for `objective`; in `global` mode with a
    /// tolerance it stops where the federation would.
    pub fn pooled_for(&self, objective: &Objective, hospitals: &[Dataset]) -> Result<PooledResult> {
        self.check(hospitals)?;
        let pooled = Dataset::concat(hospitals)?;
        let (steps, divisor) = match self.mode {
            Mode::Seed => (2 * self.rounds, PooledDivisor::Hospitals(hospitals.len())),
            Mode::Global => (self.rounds, PooledDivisor::Rows(pooled.n_rows())),
        };
        let d = match divisor {
            PooledDivisor::Hospitals(n) | PooledDivisor::Rows(n) => n as f64,
        };
        let rows = pooled.n_rows() as f64;
        // The published reference steps by `eta_sum / n_hospitals` on the summed
        // gradient; `eta` on the mean is `eta_sum` times the rows per hospital.
        let eta_sum = match divisor {
            PooledDivisor::Hospitals(_) => self.eta / (rows / d),
            PooledDivisor::Rows(_) => self.eta,
        };
        let mut weights = Array1::zeros(pooled.n_features());
        let mut taken = 0;
        for _ in 0..steps {
            taken += 1;
            if *objective == Objective::LINEAR {
                // The published reference's arithmetic (`eta / d` first),
                // which the scenario tables print.
                let g = gradient(pooled.x(), pooled.y(), &weights);
                weights.scaled_add(-eta_sum / d, &g);
                continue;
            }
            let g = objective.model.gradient(pooled.x(), pooled.y(), &weights);
            if objective.stops(
                self.mode,
                objective.step(&mut weights, &g, d, rows, self.eta),
            ) {
                break;
            }
        }
        Ok(PooledResult {
            weights,
            steps: taken,
            divisor,
            pooled,
        })
    }

    /// Applies `aggregates` in order to one hospital's model.
    fn catch_up(&self, objective: &Objective, w: &mut Array1<f64>, aggregates: &[Aggregate]) {
        for a in aggregates {
            objective.apply(
                self.mode,
                w,
                &a.sum,
                a.n_hospitals,
                a.n_total_rows,
                self.eta,
            );
        }
    }

    /// Checks `eta` and that the hospitals share one schema; returns the first.
    fn check<'a>(&self, hospitals: &'a [Dataset]) -> Result<&'a Dataset> {
        let first = hospitals.first().ok_or(Error::NoHospitals)?;
        if !(self.eta.is_finite() && self.eta > 0.0) {
            return Err(Error::InvalidParameter {
                name: "eta",
                reason: format!("{} is not a positive finite number", self.eta),
            });
        }
        let schema = first.schema();
        for (i, h) in hospitals.iter().enumerate().skip(1) {
            let s = h.schema();
            if s != schema {
                return Err(Error::SchemaMismatch {
                    hospital: i + 1,
                    expected: schema,
                    found: s,
                });
            }
        }
        Ok(first)
    }
}

/// One list of participants per round, each non-empty, in range and without repeats.
fn check_participants(
    n_hospitals: usize,
    rounds: usize,
    participants: &[Vec<usize>],
) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidParameter {
            name: "participants",
            reason,
        })
    };
    // Fewer lists than rounds: a run that stopped at its tolerance.
    if participants.len() > rounds {
        return bad(format!("{} lists for {rounds} rounds", participants.len()));
    }
    for (r, ring) in participants.iter().enumerate() {
        if ring.is_empty() {
            return bad(format!("round {} has no participant", r + 1));
        }
        for (i, &h) in ring.iter().enumerate() {
            if h >= n_hospitals {
                return bad(format!(
                    "round {}: hospital index {h} of {n_hospitals}",
                    r + 1
                ));
            }
            if ring[..i].contains(&h) {
                return bad(format!("round {}: hospital index {h} twice", r + 1));
            }
        }
    }
    Ok(())
}

/// Maps each round's participant names (as the coordinator's results record
/// them) to indices into `names` (the order of the data sets given to
/// [`ReferenceRun::run_rounds`]).
pub fn participant_indices<S: AsRef<str>>(
    names: &[S],
    rounds: &[Vec<String>],
) -> Result<Vec<Vec<usize>>> {
    rounds
        .iter()
        .enumerate()
        .map(|(r, ring)| {
            ring.iter()
                .map(|n| {
                    names.iter().position(|x| x.as_ref() == n).ok_or_else(|| {
                        Error::InvalidParameter {
                            name: "participants",
                            reason: format!("round {}: {n:?} is not one of the hospitals", r + 1),
                        }
                    })
                })
                .collect()
        })
        .collect()
}

/// What the pooled model's gradient steps were divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PooledDivisor {
    /// The number of hospitals ([`Mode::Seed`]).
    Hospitals(usize),
    /// The number of pooled rows ([`Mode::Global`]).
    Rows(usize),
}

/// The result of [`ReferenceRun::pooled`].
#[derive(Debug, Clone, PartialEq)]
pub struct PooledResult {
    /// The pooled model.
    pub weights: Array1<f64>,
    /// Gradient steps taken.
    pub steps: usize,
    /// What each step's gradient was divided by.
    pub divisor: PooledDivisor,
    /// All hospitals' training rows, in hospital order.
    pub pooled: Dataset,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{mse, train_local};
    use ndarray::{array, Array2};

    fn hospital(rows: &[[f64; 2]]) -> Dataset {
        let x = Array2::from_shape_fn(
            (rows.len(), 2),
            |(r, c)| if c == 0 { rows[r][0] } else { 1.0 },
        );
        let y = Array1::from_shape_fn(rows.len(), |r| rows[r][1]);
        Dataset::new(vec!["a".into(), "one".into()], "y".into(), x, y).unwrap()
    }

    fn three() -> Vec<Dataset> {
        vec![
            hospital(&[[0.1, 1.0], [0.2, 1.5], [0.3, 1.7]]),
            hospital(&[[-0.1, 0.2], [0.0, 0.9]]),
            hospital(&[[0.5, 3.0], [0.4, 2.2], [0.45, 2.0], [0.0, 1.0]]),
        ]
    }

    #[test]
    fn mode_text_round_trip() {
        for m in [Mode::Seed, Mode::Global] {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{m}\""));
            assert_eq!(serde_json::from_str::<Mode>(&json).unwrap(), m);
        }
        assert!("pooled".parse::<Mode>().is_err());
    }

    #[test]
    fn apply_aggregate_divisors() {
        let mut w = array![1.0, 1.0];
        // Either mode steps by eta on the mean over all rows: [3, -6] / 6.
        apply_aggregate(Mode::Seed, &mut w, &array![3.0, -6.0], 3, 6, 1.0);
        assert_eq!(w, array![0.5, 2.0]);
        let mut w = array![1.0, 1.0];
        apply_aggregate(Mode::Global, &mut w, &array![10.0, -20.0], 3, 10, 0.5);
        assert_eq!(w, array![0.5, 2.0]);
    }

    /// python-paillier's example steps by 0.01 on summed gradients with 130
    /// rows per hospital; as the one meaning that is 1.3, and seed mode's
    /// arithmetic is then the example's own, bit for bit.
    #[test]
    fn seed_mode_with_the_mapped_eta_is_the_examples_arithmetic() {
        let eta = eta_from_summed(0.01, 390, 3);
        assert_eq!(eta, 1.3);
        let x = Array2::from_shape_fn((130, 3), |(r, c)| ((r * 7 + c * 3) % 11) as f64 / 40.0);
        let y = Array1::from_shape_fn(130, |r| (r % 5) as f64);
        let local = Objective::LINEAR.train_local(Mode::Seed, &x, &y, 6, eta);
        assert_eq!(local, train_local(&x, &y, 6, 0.01));
        let sum = gradient(&x, &y, &local) * 3.0;
        let mut w = local.clone();
        apply_aggregate(Mode::Seed, &mut w, &sum, 3, 390, eta);
        let mut expect = local;
        expect.scaled_add(-0.01, &(&sum / 3.0));
        assert_eq!(w, expect);
    }

    /// The converging step's bound is above the mean loss's curvature on
    /// standardized columns, however correlated.
    #[test]
    fn converging_eta_bounds_the_curvature() {
        let n = 200;
        let base = Array1::from_shape_fn(n, |r| ((r * 37) % 101) as f64);
        // Four nearly identical columns (curvature near 4) and the intercept.
        let mut x = Array2::from_shape_fn((n, 5), |(r, c)| {
            if c == 4 {
                1.0
            } else {
                base[r] + ((r * (c + 3)) % 7) as f64 * 0.01
            }
        });
        for c in 0..4 {
            let col = x.column(c).to_owned();
            let (m, sd) = (col.mean().unwrap(), col.std(0.0));
            x.column_mut(c).mapv_inplace(|v| (v - m) / sd);
        }
        let h = x.t().dot(&x) / n as f64;
        // Power iteration for the largest eigenvalue.
        let mut v = Array1::from_elem(5, 1.0);
        let mut lambda = 0.0;
        for _ in 0..200 {
            let hv = h.dot(&v);
            lambda = hv.dot(&v) / v.dot(&v);
            v = &hv / hv.dot(&hv).sqrt();
        }
        assert!(lambda > 3.9, "{lambda}");
        assert!(1.0 / converging_eta(ModelKind::Linear, 5, 0.0) >= lambda);
        assert!(1.0 / converging_eta(ModelKind::Logistic, 5, 0.0) >= lambda / 4.0);
        assert_eq!(converging_eta(ModelKind::Ridge, 5, 1.0), 1.0 / 6.0);
    }

    #[test]
    fn seed_mode_starts_from_local_models_and_follows_the_rule() {
        let hs = three();
        let run = ReferenceRun {
            mode: Mode::Seed,
            rounds: 4,
            eta: 0.1,
        };
        let r = run.run(&hs).unwrap();
        assert_eq!(r.weights_per_round.len(), 4);
        assert_eq!(r.final_weights, r.weights_per_round[3]);
        // Recompute round 1 by hand.
        let mut sum = Array1::zeros(2);
        for (h, w) in hs.iter().zip(&r.local_weights) {
            // eta on the mean gradient: python-paillier's eta / rows on the sum.
            assert_eq!(w, &train_local(h.x(), h.y(), 4, 0.1 / h.n_rows() as f64));
            sum += &gradient(h.x(), h.y(), w);
        }
        for (i, w) in r.local_weights.iter().enumerate() {
            // 9 rows in all: eta / 3 per hospital on the sum over 3 hospitals.
            let expect = w - &(&sum / 3.0 * (0.1 / 3.0));
            for k in 0..2 {
                assert!((expect[k] - r.weights_per_round[0][i][k]).abs() < 1e-15);
            }
        }
        // Hospitals keep different models in seed mode.
        assert_ne!(r.final_weights[0], r.final_weights[1]);
    }

    #[test]
    fn global_mode_is_pooled_gradient_descent() {
        let hs = three();
        let run = ReferenceRun {
            mode: Mode::Global,
            rounds: 200,
            eta: 0.5,
        };
        let r = run.run(&hs).unwrap();
        let pooled = Dataset::concat(&hs).unwrap();
        let n = pooled.n_rows() as f64;
        let mut w = Array1::<f64>::zeros(2);
        for _ in 0..200 {
            let g = gradient(pooled.x(), pooled.y(), &w);
            w.scaled_add(-0.5 / n, &g);
        }
        for fw in &r.final_weights {
            for k in 0..2 {
                assert!((fw[k] - w[k]).abs() < 1e-12, "{fw} vs {w}");
            }
        }
        // Training lowers the pooled error.
        assert!(mse(pooled.x(), pooled.y(), &w) < mse(pooled.x(), pooled.y(), &Array1::zeros(2)));
    }

    #[test]
    fn rounds_with_everyone_are_the_plain_run() {
        let hs = three();
        for mode in [Mode::Seed, Mode::Global] {
            let run = ReferenceRun {
                mode,
                rounds: 3,
                eta: 0.1,
            };
            let all = vec![vec![0, 1, 2]; 3];
            assert_eq!(run.run_rounds(&hs, &all).unwrap(), run.run(&hs).unwrap());
        }
    }

    #[test]
    fn dropouts_and_rejoins_replay_the_missed_aggregates() {
        let hs = three();
        let run = ReferenceRun {
            mode: Mode::Seed,
            rounds: 3,
            eta: 0.1,
        };
        // Hospital 2 (index 1) misses round 2 and rejoins in round 3.
        let rings = vec![vec![0, 1, 2], vec![0, 2], vec![2, 0, 1]];
        let r = run.run_rounds(&hs, &rings).unwrap();
        let mut w: Vec<Array1<f64>> = r.local_weights.clone();
        let step = |w: &mut Vec<Array1<f64>>, ring: &[usize]| {
            let mut sum = Array1::zeros(2);
            for &h in ring {
                sum += &gradient(hs[h].x(), hs[h].y(), &w[h]);
            }
            let rows = ring.iter().map(|&h| hs[h].n_rows()).sum();
            for &h in ring {
                apply_aggregate(Mode::Seed, &mut w[h], &sum, ring.len(), rows, 0.1);
            }
            sum
        };
        let s1 = step(&mut w, &rings[0]);
        let s2 = step(&mut w, &rings[1]);
        assert_eq!(
            r.weights_per_round[1][1], r.weights_per_round[0][1],
            "away: unchanged"
        );
        // Rejoining, hospital 2 first applies round 2's aggregate.
        // Round 2's ring, hospitals 1 and 3, has 3 + 4 rows.
        apply_aggregate(Mode::Seed, &mut w[1], &s2, 2, 7, 0.1);
        step(&mut w, &rings[2]);
        assert_eq!(r.final_weights, w);
        assert_ne!(s1, s2);
        // Away at the end: the run's remaining aggregates are applied.
        let r = run
            .run_rounds(&hs, &[vec![0, 1, 2], vec![0, 1, 2], vec![0, 2]])
            .unwrap();
        let mut w1 = r.weights_per_round[1][1].clone();
        let mut sum = Array1::zeros(2);
        for h in [0, 2] {
            sum += &gradient(hs[h].x(), hs[h].y(), &r.weights_per_round[1][h]);
        }
        apply_aggregate(Mode::Seed, &mut w1, &sum, 2, 7, 0.1);
        assert_eq!(r.final_weights[1], w1);
    }

    #[test]
    fn participants_are_checked_and_named() {
        let hs = three();
        let run = ReferenceRun {
            mode: Mode::Global,
            rounds: 2,
            eta: 0.1,
        };
        for bad in [
            vec![vec![0, 1, 2]; 3],
            vec![vec![0, 1, 2], vec![]],
            vec![vec![0, 1, 3], vec![0]],
            vec![vec![0, 1, 1], vec![0]],
        ] {
            assert!(matches!(
                run.run_rounds(&hs, &bad),
                Err(Error::InvalidParameter {
                    name: "participants",
                    ..
                })
            ));
        }
        let names = ["h-1", "h-2", "h-3"];
        let idx = participant_indices(
            &names,
            &[vec!["h-3".into(), "h-1".into()], vec!["h-2".into()]],
        )
        .unwrap();
        assert_eq!(idx, vec![vec![2, 0], vec![1]]);
        let e = participant_indices(&names, &[vec!["h-9".into()]]).unwrap_err();
        assert!(e.to_string().contains("h-9"), "{e}");
    }

    #[test]
    fn pooled_reference_follows_the_mode() {
        let hs = three();
        let seed = ReferenceRun {
            mode: Mode::Seed,
            rounds: 5,
            eta: 0.1,
        };
        let p = seed.pooled(&hs).unwrap();
        assert_eq!((p.steps, p.divisor), (10, PooledDivisor::Hospitals(3)));
        assert_eq!(p.pooled.n_rows(), 9);
        let global = ReferenceRun {
            mode: Mode::Global,
            ..seed
        };
        let p = global.pooled(&hs).unwrap();
        assert_eq!((p.steps, p.divisor), (5, PooledDivisor::Rows(9)));
        // Global mode's pooled model is the federation's.
        let r = global.run(&hs).unwrap();
        for k in 0..2 {
            assert!((p.weights[k] - r.final_weights[0][k]).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_arguments() {
        let hs = three();
        let run = ReferenceRun {
            mode: Mode::Seed,
            rounds: 1,
            eta: 0.1,
        };
        assert!(matches!(run.run(&[]), Err(Error::NoHospitals)));
        let bad = ReferenceRun {
            eta: f64::NAN,
            ..run
        };
        assert!(matches!(
            bad.run(&hs),
            Err(Error::InvalidParameter { name: "eta", .. })
        ));
        let other = hs[0].with_intercept("extra").unwrap();
        assert!(matches!(
            run.run(&[hs[0].clone(), other]),
            Err(Error::SchemaMismatch { hospital: 2, .. })
        ));
        let zero = ReferenceRun { rounds: 0, ..run }.run(&hs).unwrap();
        assert!(zero.weights_per_round.is_empty());
        assert_eq!(zero.final_weights, zero.local_weights);
    }
}
