//! What a scenario reports, as numbers: per-hospital test MSE (local-only,
//! federated, per round) and the pooled cleartext references, computed with
//! `learning`'s twin. Turning them into text is [`crate::table`]'s job, into a
//! picture [`crate::plot`]'s.

use anyhow::Result;
use learning::ndarray::Array1;
use learning::{least_squares, mse, Mode, ReferenceResult, ReferenceRun};
use serde::Serialize;

use crate::nodes::hospital_name;
use crate::prep::Split;

/// One hospital's line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct HospitalOutcome {
    /// Node name (`hospital-1`, ...).
    pub name: String,
    /// Training rows held by the hospital.
    pub rows: usize,
    /// Test MSE of its local-only model.
    pub local_mse: f64,
    /// Test MSE of its model after the federated rounds.
    pub federated_mse: f64,
    /// Test MSE of its model at the start (index 0) and after each round.
    pub mse_per_round: Vec<f64>,
}

/// Everything the table and plot show.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Per-hospital results.
    pub hospitals: Vec<HospitalOutcome>,
    /// Rows of the test set.
    pub test_rows: usize,
    /// Training rows of all hospitals together.
    pub pooled_rows: usize,
    /// Test MSE of a model trained in the clear on the pooled training rows by
    /// the federation's own gradient steps ([`ReferenceRun::pooled`]).
    pub pooled_mse: f64,
    /// How the pooled model was trained, in words.
    pub pooled_method: String,
    /// Test MSE of the least-squares optimum on the pooled training rows
    /// (`None` when the features are collinear).
    pub pooled_least_squares_mse: Option<f64>,
}

/// Evaluates the run on the test set. `twin` is the cleartext twin's run of
/// the federation (`mode`, `rounds`, `eta`), `federated_final` the weights the
/// (encrypted) federation produced and `federated_history` the per-round test
/// MSE its hospitals reported; without it the per-round curve comes from the
/// cleartext twin, which the caller has checked agrees with the federation.
pub fn evaluate(
    split: &Split,
    twin: &ReferenceRun,
    reference: &ReferenceResult,
    federated_final: &[Array1<f64>],
    federated_history: Option<&[Vec<f64>]>,
) -> Result<Outcome> {
    let (tx, ty) = (split.test.x(), split.test.y());
    let hospitals = split
        .hospitals
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let start = match twin.mode {
                Mode::Seed => reference.local_weights[i].clone(),
                Mode::Global => Array1::zeros(h.n_features()),
            };
            let mut curve = vec![mse(tx, ty, &start)];
            match federated_history.and_then(|hs| hs.get(i)) {
                Some(hist) if hist.len() == reference.weights_per_round.len() => {
                    curve.extend(hist.iter().copied())
                }
                _ => curve.extend(
                    reference
                        .weights_per_round
                        .iter()
                        .map(|r| mse(tx, ty, &r[i])),
                ),
            }
            HospitalOutcome {
                name: hospital_name(i),
                rows: h.n_rows(),
                local_mse: mse(tx, ty, &reference.local_weights[i]),
                federated_mse: mse(tx, ty, &federated_final[i]),
                mse_per_round: curve,
            }
        })
        .collect();
    let pooled = twin.pooled(&split.hospitals)?;
    let pooled_least_squares_mse = least_squares(pooled.pooled.x(), pooled.pooled.y())
        .ok()
        .map(|w| mse(tx, ty, &w));
    Ok(Outcome {
        hospitals,
        test_rows: split.test.n_rows(),
        pooled_rows: pooled.pooled.n_rows(),
        pooled_mse: mse(tx, ty, &pooled.weights),
        pooled_method: format!(
            "cleartext gradient descent on the pooled rows, {} steps of eta on the mean gradient",
            pooled.steps
        ),
        pooled_least_squares_mse,
    })
}

/// Whether a number prints sensibly with two decimals.
pub fn is_readable(v: f64) -> bool {
    v.is_finite() && v.abs() < 1e12
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::prep::{self, SplitKind};

    /// The published example's outcome from the cleartext twin alone.
    pub(crate) fn example() -> Outcome {
        let data = prep::diabetes().unwrap();
        let split = prep::split(&data, SplitKind::Seed, 3, 50, 42).unwrap();
        let twin = ReferenceRun {
            mode: Mode::Seed,
            rounds: 50,
            eta: 1.3,
        };
        let r = twin.run(&split.hospitals).unwrap();
        evaluate(&split, &twin, &r, &r.final_weights, None).unwrap()
    }
}
