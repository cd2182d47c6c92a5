//! The data owner's encodings in the clear: the per-feature quantizer
//! (centre, spread and 2-bit levels, fitted on training data), rows to 2-bit
//! indices (label-flipped for training), real weights to master-weight blocks
//! and back.

use serde::{Deserialize, Serialize};

use crate::circuit::{BatchData, Plan, WeightState, BIAS_ONE};
use crate::error::{Error, Result};

/// Per-feature preconditioning and 2-bit quantization, applied after the
/// min-max scaler. A feature `v` in [-1, 1] becomes `u = (v - centre) / spread`
/// (centre: training median), and its 2-bit index is the nearest of the
/// levels `[-1, -1/2, 1/2, 1]` (sign of `u`, then `|u|` against 3/4). The
/// inner level is the same public constant [`INNER_RATIO`] for every feature,
/// so the server learns nothing about the data from it, and the forward
/// product `x * (+-s)` lands exactly on the circuit's `s / 2` grid. The spread
/// is fitted by alternating assignment and least squares (Lloyd's algorithm
/// with the level ratio fixed) on the training rows, in the clear, by the
/// owner. Centring is an affine change of variables the bias absorbs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    centre: Vec<f64>,
    spread: Vec<f64>,
}

/// The inner level of every feature (the outer level is 1).
pub const INNER_RATIO: f64 = 0.5;
/// `|u|` above this is the outer level: the midpoint of the two levels.
const THRESHOLD: f64 = (1.0 + INNER_RATIO) / 2.0;
/// Lloyd iterations fitting each spread.
const LLOYD_ITERATIONS: usize = 25;

impl Quantizer {
    /// Fits on min-max scaled training rows.
    pub fn fit(x: &[Vec<f64>]) -> Result<Self> {
        let n = x
            .first()
            .ok_or_else(|| Error::Shape("cannot fit a quantizer on no rows".into()))?
            .len();
        let mut q = Quantizer {
            centre: Vec::with_capacity(n),
            spread: Vec::with_capacity(n),
        };
        for j in 0..n {
            let mut col: Vec<f64> = x.iter().map(|r| r[j]).collect();
            col.sort_by(f64::total_cmp);
            let centre = col[col.len() / 2];
            let dev: Vec<f64> = col.iter().map(|v| (v - centre).abs()).collect();
            let max_dev = dev.iter().cloned().fold(0.0, f64::max);
            // Start from the largest deviation, then alternate: assign each
            // deviation to the nearer level, refit the spread by least squares.
            let mut spread = max_dev;
            for _ in 0..LLOYD_ITERATIONS {
                if spread <= 1e-12 {
                    break;
                }
                let (mut num, mut den) = (0.0, 0.0);
                for &d in &dev {
                    let l = if d > THRESHOLD * spread {
                        1.0
                    } else {
                        INNER_RATIO
                    };
                    num += d * l;
                    den += l * l;
                }
                spread = num / den;
            }
            if spread <= 1e-12 {
                // A constant feature: any spread works, its index never varies.
                spread = 1.0;
            }
            q.centre.push(centre);
            q.spread.push(spread);
        }
        Ok(q)
    }

    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.centre.len()
    }

    /// Inner levels, one per feature (for the circuit config): all
    /// [`INNER_RATIO`].
    pub fn ratios(&self) -> Vec<f64> {
        vec![INNER_RATIO; self.centre.len()]
    }

    /// Feature centres (in min-max units).
    pub fn centres(&self) -> &[f64] {
        &self.centre
    }

    /// Feature spreads (in min-max units).
    pub fn spreads(&self) -> &[f64] {
        &self.spread
    }

    fn check(&self, row: &[f64]) -> Result<()> {
        if row.len() != self.centre.len() {
            return Err(Error::Shape(format!(
                "row has {} features, model has {}",
                row.len(),
                self.centre.len()
            )));
        }
        Ok(())
    }

    /// Preconditioned float features of a min-max scaled row.
    pub fn transform_row(&self, row: &[f64]) -> Result<Vec<f64>> {
        self.check(row)?;
        Ok(row
            .iter()
            .enumerate()
            .map(|(j, v)| (v - self.centre[j]) / self.spread[j])
            .collect())
    }

    /// 2-bit indices of a min-max scaled row, bias column (always 1) last.
    pub fn indices(&self, row: &[f64]) -> Result<Vec<u8>> {
        let u = self.transform_row(row)?;
        let mut out: Vec<u8> = u
            .iter()
            .map(|&v| match (v < 0.0, v.abs() > THRESHOLD) {
                (true, true) => 0,
                (true, false) => 1,
                (false, false) => 2,
                (false, true) => 3,
            })
            .collect();
        out.push(BIAS_ONE);
        Ok(out)
    }

    /// Training encoding of one batch of min-max scaled rows: the index of
    /// `x * (1 - 2y)` per column (bias included), i.e. `3 - index` when
    /// `y = 1`. The label never travels on its own.
    pub fn training_batch(&self, x: &[Vec<f64>], y: &[u8]) -> Result<BatchData<u8>> {
        if x.len() != y.len() {
            return Err(Error::Shape(format!(
                "{} rows but {} labels",
                x.len(),
                y.len()
            )));
        }
        let rows = x
            .iter()
            .zip(y)
            .map(|(row, &label)| {
                let idx = self.indices(row)?;
                Ok(if label == 1 {
                    idx.into_iter().map(|k| 3 - k).collect()
                } else {
                    idx
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BatchData { rows })
    }

    /// Inference encoding (no label): indices of each row, bias last.
    pub fn inference_rows(&self, x: &[Vec<f64>]) -> Result<Vec<Vec<u8>>> {
        x.iter().map(|r| self.indices(r)).collect()
    }

    /// Converts model weights on preconditioned features (bias last) into
    /// weights and bias on the min-max scaled features.
    pub fn to_scaled_weights(&self, w: &[f64]) -> (Vec<f64>, f64) {
        let n = self.centre.len();
        let ws: Vec<f64> = (0..n).map(|j| w[j] / self.spread[j]).collect();
        let bias = w[n] - (0..n).map(|j| ws[j] * self.centre[j]).sum::<f64>();
        (ws, bias)
    }
}

/// Clear state for real weights (bias last), rounded to the master grid.
pub fn state_from_weights(plan: &Plan, weights: &[f64]) -> Result<WeightState<u8>> {
    if weights.len() != plan.n_columns() {
        return Err(Error::Shape(format!(
            "{} weights given, plan has {} columns",
            weights.len(),
            plan.n_columns()
        )));
    }
    let mut st = WeightState {
        hi: Vec::new(),
        lo: Vec::new(),
        fwd: Vec::new(),
    };
    for &w in weights {
        let (hi, lo, f) = plan.weight_blocks(plan.weight_index(w));
        st.hi.push(hi);
        st.lo.push(lo);
        st.fwd.push(f);
    }
    Ok(st)
}

/// Real weights (bias last) of a clear state.
pub fn weights_from_state(plan: &Plan, st: &WeightState<u8>) -> Vec<f64> {
    st.hi
        .iter()
        .zip(&st.lo)
        .map(|(&h, &l)| plan.weight_value(plan.weight_index_of(h, l)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_negates_levels_and_bias() {
        let x: Vec<Vec<f64>> = (0..20).map(|i| vec![f64::from(i) / 10.0 - 1.0]).collect();
        let q = Quantizer::fit(&x).unwrap();
        let a = q.training_batch(&x[..3], &[0, 0, 0]).unwrap();
        let b = q.training_batch(&x[..3], &[1, 1, 1]).unwrap();
        for (ra, rb) in a.rows.iter().zip(&b.rows) {
            for (ka, kb) in ra.iter().zip(rb) {
                assert_eq!(ka + kb, 3);
            }
        }
        assert_eq!(*a.rows[0].last().unwrap(), BIAS_ONE);
        assert_eq!(q.ratios(), [INNER_RATIO]);
    }

    #[test]
    fn scaled_weights_give_same_margin() {
        let x: Vec<Vec<f64>> = (0..10)
            .map(|i| vec![f64::from(i) / 5.0 - 1.0, (f64::from(i) * 0.37).sin()])
            .collect();
        let q = Quantizer::fit(&x).unwrap();
        let w = [0.3, -0.7, 0.2];
        let (ws, b) = q.to_scaled_weights(&w);
        for row in &x {
            let u = q.transform_row(row).unwrap();
            let z1 = u[0] * w[0] + u[1] * w[1] + w[2];
            let z2 = row[0] * ws[0] + row[1] * ws[1] + b;
            assert!((z1 - z2).abs() < 1e-9);
        }
    }

    #[test]
    fn spread_fits_the_levels() {
        // Deviations clustered at 1 and 2 around the median 0: spread 2.
        let x: Vec<Vec<f64>> = [-2.0, -1.0, 0.0, 1.0, 2.0, -2.0, 2.0, -1.0, 1.0]
            .iter()
            .map(|&v| vec![v * 0.4])
            .collect();
        let q = Quantizer::fit(&x).unwrap();
        assert!((q.spreads()[0] - 0.8).abs() < 0.1, "{:?}", q.spreads());
        assert_eq!(q.indices(&[0.8]).unwrap()[0], 3);
        assert_eq!(q.indices(&[0.4]).unwrap()[0], 2);
        assert_eq!(q.indices(&[-0.4]).unwrap()[0], 1);
        assert_eq!(q.indices(&[-0.8]).unwrap()[0], 0);
    }

    #[test]
    fn constant_feature_is_valid() {
        let x = vec![vec![0.5]; 5];
        let q = Quantizer::fit(&x).unwrap();
        assert_eq!(q.ratios(), [INNER_RATIO]);
        assert_eq!(q.indices(&[0.5]).unwrap().len(), 2);
    }
}
