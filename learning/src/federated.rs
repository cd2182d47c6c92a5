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
use crate::model::{gradient, train_local};

/// How hospitals combine the aggregated gradient with their models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// python-paillier's federated example: each hospital starts from its
    /// local-only model (`train_local` with the same rounds and eta) and each
    /// round applies `w_i -= eta * (sum_h grad_h(w_h)) / n_hospitals`, every
    /// hospital's gradient taken at its own model.
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

/// One hospital's step with the decrypted aggregate (the sum of all hospitals'
/// gradients): `w -= eta * aggregate_sum / n_hospitals` in [`Mode::Seed`],
/// `w -= eta * aggregate_sum / n_total_rows` in [`Mode::Global`].
pub fn apply_aggregate(
    mode: Mode,
    w: &mut Array1<f64>,
    aggregate_sum: &Array1<f64>,
    n_hospitals: usize,
    n_total_rows: usize,
    eta: f64,
) {
    let divisor = match mode {
        Mode::Seed => n_hospitals,
        Mode::Global => n_total_rows,
    } as f64;
    // Same operation order as python-paillier (aggregate / n, then w -= eta * g)
    // so the cleartext twin matches encrypted runs bit for bit where possible.
    let averaged = aggregate_sum / divisor;
    w.scaled_add(-eta, &averaged);
}

/// Local-only training with the update rule of `mode`, from zeros:
/// [`Mode::Seed`] steps with the summed gradient (`w -= eta * gradient`, as
/// python-paillier's example does, see [`train_local`]); [`Mode::Global`] steps
/// with the mean gradient over the hospital's own rows (`w -= eta * gradient /
/// rows`), the same rule the federated model follows on the pooled rows, so the
/// local-only baseline is trained with the same `eta` on a comparable scale.
pub fn train_local_for(
    mode: Mode,
    x: &Array2<f64>,
    y: &Array1<f64>,
    iterations: usize,
    eta: f64,
) -> Array1<f64> {
    match mode {
        Mode::Seed => train_local(x, y, iterations, eta),
        Mode::Global => {
            let rows = x.nrows().max(1) as f64;
            let mut w = Array1::zeros(x.ncols());
            for _ in 0..iterations {
                let g = gradient(x, y, &w) / rows;
                w.scaled_add(-eta, &g);
            }
            w
        }
    }
}

/// The cleartext twin of the federated protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceRun {
    /// Update rule.
    pub mode: Mode,
    /// Number of federated rounds (and of local-only iterations).
    pub rounds: usize,
    /// Learning rate.
    pub eta: f64,
}

/// Weights produced by a [`ReferenceRun`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceResult {
    /// Each hospital's local-only model ([`train_local_for`] with `mode`, `rounds`, `eta`).
    pub local_weights: Vec<Array1<f64>>,
    /// `weights_per_round[r][h]`: hospital `h`'s model after round `r + 1`.
    pub weights_per_round: Vec<Vec<Array1<f64>>>,
    /// Each hospital's model after the last round (its starting model when `rounds` is 0).
    pub final_weights: Vec<Array1<f64>>,
}

impl ReferenceRun {
    /// Runs the protocol in the clear over the hospitals' data sets, which must
    /// share one schema.
    pub fn run(&self, hospitals: &[Dataset]) -> Result<ReferenceResult> {
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
        let n_h = hospitals.len();
        let n_total: usize = hospitals.iter().map(Dataset::n_rows).sum();
        let local_weights: Vec<Array1<f64>> = hospitals
            .iter()
            .map(|h| train_local_for(self.mode, h.x(), h.y(), self.rounds, self.eta))
            .collect();
        let mut weights: Vec<Array1<f64>> = match self.mode {
            Mode::Seed => local_weights.clone(),
            Mode::Global => vec![Array1::zeros(first.n_features()); n_h],
        };
        let mut weights_per_round = Vec::with_capacity(self.rounds);
        for _ in 0..self.rounds {
            // The ring adds gradients in hospital order, head first.
            let mut sum = Array1::<f64>::zeros(first.n_features());
            for (h, w) in hospitals.iter().zip(&weights) {
                sum += &gradient(h.x(), h.y(), w);
            }
            for w in &mut weights {
                apply_aggregate(self.mode, w, &sum, n_h, n_total, self.eta);
            }
            weights_per_round.push(weights.clone());
        }
        Ok(ReferenceResult {
            local_weights,
            weights_per_round,
            final_weights: weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mse;
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
        apply_aggregate(Mode::Seed, &mut w, &array![3.0, -6.0], 3, 100, 0.5);
        assert_eq!(w, array![0.5, 2.0]);
        let mut w = array![1.0, 1.0];
        apply_aggregate(Mode::Global, &mut w, &array![10.0, -20.0], 3, 10, 0.5);
        assert_eq!(w, array![0.5, 2.0]);
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
            assert_eq!(w, &train_local(h.x(), h.y(), 4, 0.1));
            sum += &gradient(h.x(), h.y(), w);
        }
        for (i, w) in r.local_weights.iter().enumerate() {
            let expect = w - &(&sum / 3.0 * 0.1);
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
