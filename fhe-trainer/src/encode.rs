//! The data owner's encodings in the clear: the per-feature quantizer
//! (centre, spread and 3 levels, fitted on training data), rows to feature
//! indices (label-flipped for training), real weights to master-weight blocks
//! and back.

use serde::{Deserialize, Serialize};

use crate::circuit::{BatchData, Plan, WeightState, BIAS_ONE, X_INDICES};
use crate::error::{Error, Result};

/// Per-feature preconditioning and 3-level quantization, applied after the
/// min-max scaler. A feature `v` in [-1, 1] becomes `u = (v - centre) /
/// spread`, and its index is the nearest of the levels `[-1, 0, 1]`
/// (`|u| <= 1/2` is 0). The levels are the same public constants for every
/// feature, so the server learns nothing about the data from them. Centre
/// and spread are fitted together by Lloyd's algorithm (assign each training
/// value to the nearest level `centre + spread * l`, then refit both by least
/// squares), starting from the median and the largest deviation, on the
/// training rows, in the clear, by the owner: a feature that is mostly at
/// its minimum (image pixels) gets that minimum as a level of its own.
/// Centring is an affine change of variables the bias absorbs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    centre: Vec<f64>,
    spread: Vec<f64>,
}

/// Lloyd iterations fitting each centre and spread.
const LLOYD_ITERATIONS: usize = 25;

/// Index of a preconditioned value: 0, 1, 2 for the levels -1, 0, 1.
fn level_index(u: f64) -> u8 {
    if u < -0.5 {
        0
    } else if u > 0.5 {
        2
    } else {
        1
    }
}

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
            let mut centre = col[col.len() / 2];
            let mut spread = col.iter().map(|v| (v - centre).abs()).fold(0.0, f64::max);
            if spread > 1e-12 {
                for _ in 0..LLOYD_ITERATIONS {
                    // Least squares of v on its level l: v = centre + spread l.
                    let (mut sl, mut sll, mut sv, mut svl) = (0.0, 0.0, 0.0, 0.0);
                    for &v in &col {
                        let l = f64::from(level_index((v - centre) / spread)) - 1.0;
                        sl += l;
                        sll += l * l;
                        sv += v;
                        svl += v * l;
                    }
                    let rows = col.len() as f64;
                    let det = rows * sll - sl * sl;
                    if det.abs() < 1e-12 {
                        break;
                    }
                    let s_new = (rows * svl - sl * sv) / det;
                    if s_new <= 1e-12 {
                        break;
                    }
                    spread = s_new;
                    centre = (sv - s_new * sl) / rows;
                }
            } else {
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

    /// Level indices of a min-max scaled row, bias column (always 1) last.
    pub fn indices(&self, row: &[f64]) -> Result<Vec<u8>> {
        let mut out: Vec<u8> = self
            .transform_row(row)?
            .into_iter()
            .map(level_index)
            .collect();
        out.push(BIAS_ONE);
        Ok(out)
    }

    /// Training encoding of one batch of min-max scaled rows: the index of
    /// `x * (1 - 2y)` per column (bias included), i.e. `2 - index` when
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
                    idx.into_iter().map(|k| X_INDICES - 1 - k).collect()
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
                assert_eq!(ka + kb, 2);
            }
        }
        assert_eq!(*a.rows[0].last().unwrap(), BIAS_ONE);
        assert_eq!(*b.rows[0].last().unwrap(), 0);
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
    fn centre_and_spread_fit_the_levels() {
        // Values clustered at 0.1, 0.5 and 0.9: centre 0.5, spread 0.4.
        let x: Vec<Vec<f64>> = [0.1, 0.12, 0.08, 0.5, 0.52, 0.48, 0.9, 0.88, 0.92]
            .iter()
            .map(|&v| vec![v])
            .collect();
        let q = Quantizer::fit(&x).unwrap();
        assert!((q.centres()[0] - 0.5).abs() < 0.02, "{:?}", q.centres());
        assert!((q.spreads()[0] - 0.4).abs() < 0.02, "{:?}", q.spreads());
        assert_eq!(q.indices(&[0.9]).unwrap(), [2, BIAS_ONE]);
        assert_eq!(q.indices(&[0.45]).unwrap()[0], 1);
        assert_eq!(q.indices(&[0.1]).unwrap()[0], 0);
    }

    #[test]
    fn a_feature_mostly_at_its_minimum_keeps_it_as_a_level() {
        // Image-like: 70% of the values at -1, the rest spread above it.
        let x: Vec<Vec<f64>> = (0..100)
            .map(|i| {
                vec![if i < 70 {
                    -1.0
                } else {
                    -1.0 + f64::from(i - 69) / 15.0
                }]
            })
            .collect();
        let q = Quantizer::fit(&x).unwrap();
        // The mass at the minimum sits on a level (within 0.1), and the
        // largest values get a higher index than it.
        let k = q.indices(&[-1.0]).unwrap()[0];
        let level = q.centres()[0] + q.spreads()[0] * (f64::from(k) - 1.0);
        assert!(
            (level + 1.0).abs() < 0.1,
            "{:?} {:?}",
            q.centres(),
            q.spreads()
        );
        assert!(q.indices(&[1.0]).unwrap()[0] > k);
    }

    #[test]
    fn constant_feature_is_valid() {
        let x = vec![vec![0.5]; 5];
        let q = Quantizer::fit(&x).unwrap();
        assert_eq!(q.indices(&[0.5]).unwrap(), [1, BIAS_ONE]);
    }
}
