//! The data owner's encodings in the clear: the per-feature quantizer
//! (centre, spread and 2-bit levels, fitted on training data), rows to 2-bit
//! indices (label-flipped for training), real weights to master-weight blocks
//! and back.

use serde::{Deserialize, Serialize};

use crate::circuit::{BatchData, Plan, WeightState, BIAS_ONE};
use crate::error::{Error, Result};

/// Per-feature preconditioning and 2-bit quantization, applied after the
/// min-max scaler. A feature `v` in [-1, 1] becomes `u = (v - centre) / spread`
/// (centre: training median; spread: mean |v - centre| over the upper half), and
/// its 2-bit index is the sign of `u` and whether `|u|` exceeds the median
/// `|u|`. The levels are `[-1, -r, r, 1]` with `r` the mean of the inner half.
/// Centring is an affine change of variables the bias absorbs; it is what lets
/// two bits per feature match float accuracy (uniform 2-bit levels lose 2
/// points, see the crate docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    centre: Vec<f64>,
    spread: Vec<f64>,
    threshold: Vec<f64>,
    ratio: Vec<f64>,
}

/// Smallest inner level, so a constant feature keeps a valid encoding.
const MIN_RATIO: f64 = 0.05;

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
            threshold: Vec::with_capacity(n),
            ratio: Vec::with_capacity(n),
        };
        for j in 0..n {
            let mut col: Vec<f64> = x.iter().map(|r| r[j]).collect();
            col.sort_by(f64::total_cmp);
            let centre = col[col.len() / 2];
            let mut dev: Vec<f64> = col.iter().map(|v| (v - centre).abs()).collect();
            dev.sort_by(f64::total_cmp);
            let t = dev[dev.len() / 2];
            let (inner, outer): (Vec<f64>, Vec<f64>) = dev.iter().partition(|&&d| d <= t);
            let mean = |v: &[f64]| {
                if v.is_empty() {
                    0.0
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            let mut spread = mean(&outer);
            if spread <= 1e-12 {
                spread = t.max(1e-12);
            }
            let ratio = (mean(&inner) / spread).clamp(MIN_RATIO, 1.0);
            q.centre.push(centre);
            q.spread.push(spread);
            q.threshold.push(t / spread);
            q.ratio.push(ratio);
        }
        Ok(q)
    }

    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.centre.len()
    }

    /// Inner levels, one per feature (for the circuit config).
    pub fn ratios(&self) -> &[f64] {
        &self.ratio
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
            .enumerate()
            .map(|(j, &v)| match (v < 0.0, v.abs() > self.threshold[j]) {
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
        assert!(q.ratios()[0] > 0.0 && q.ratios()[0] <= 1.0);
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
    fn constant_feature_is_valid() {
        let x = vec![vec![0.5]; 5];
        let q = Quantizer::fit(&x).unwrap();
        assert!(q.ratios()[0] >= MIN_RATIO);
        assert_eq!(q.indices(&[0.5]).unwrap().len(), 2);
    }
}
