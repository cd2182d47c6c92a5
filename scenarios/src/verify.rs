//! Holding a federation's result to `learning`'s cleartext twin: the twin is
//! fed the participants each round really had (as the coordinator's results
//! record them), so a run in which a hospital dropped out or rejoined is held
//! to the weights it should have produced, and the encrypted weights must
//! agree within [`WEIGHT_TOLERANCE`].

use anyhow::{bail, ensure, Context, Result};
use learning::ndarray::Array1;
use learning::{Objective, ReferenceResult};

use crate::nodes::{hospital_name, FederationOutcome};
use crate::plan::Plan;
use crate::prep::Split;

/// Largest allowed absolute difference between the encrypted run's weights and
/// the cleartext twin's.
pub const WEIGHT_TOLERANCE: f64 = 1e-6;

/// Largest absolute difference between two sets of per-hospital weights.
pub fn max_abs_diff(a: &[Array1<f64>], b: &[Array1<f64>]) -> Result<f64> {
    ensure!(
        a.len() == b.len(),
        "{} models against {} hospitals",
        a.len(),
        b.len()
    );
    let mut m = 0.0f64;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        ensure!(
            x.len() == y.len(),
            "{}: {} weights, expected {}",
            hospital_name(i),
            x.len(),
            y.len()
        );
        for (u, v) in x.iter().zip(y) {
            let d = (u - v).abs();
            // NaN compares false with everything: treat it as an infinite gap.
            m = if d.is_nan() { f64::INFINITY } else { m.max(d) };
        }
    }
    Ok(m)
}

/// The twin's run of `objective` with the federation's participants (`split`
/// holds the rows as the federation trains on them), and the largest
/// weight difference to the federation, which must be within
/// [`WEIGHT_TOLERANCE`].
pub fn against_twin(
    plan: &Plan,
    objective: &Objective,
    split: &Split,
    fed: &FederationOutcome,
) -> Result<(ReferenceResult, f64)> {
    let names: Vec<String> = (0..split.hospitals.len()).map(hospital_name).collect();
    let participants = learning::participant_indices(&names, &fed.participants)
        .context("the coordinator's results name an unknown hospital")?;
    let twin = plan
        .twin()
        .run_rounds_for(objective, &split.hospitals, &participants)
        .context("cleartext twin of the run")?;
    let diff = max_abs_diff(&fed.final_weights, &twin.final_weights)?;
    if diff.is_nan() || diff > WEIGHT_TOLERANCE {
        bail!(
            "the encrypted run disagrees with the cleartext reference: max abs weight difference \
             {diff:e} > {WEIGHT_TOLERANCE:e}"
        );
    }
    Ok((twin, diff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_abs_diff_treats_nan_as_mismatch() {
        let a = vec![Array1::from_vec(vec![1.0, 2.0])];
        let b = vec![Array1::from_vec(vec![1.0, f64::NAN])];
        assert_eq!(max_abs_diff(&a, &b).unwrap(), f64::INFINITY);
        assert!(max_abs_diff(&a, &[]).is_err());
    }
}
