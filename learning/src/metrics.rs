//! Federated evaluation: the sums one hospital contributes for the pooled test
//! metrics ([`local_evaluation`]), the metrics computed from pooled sums
//! ([`Metrics::from_sums`]), and the exact metrics of one data set in the clear
//! ([`Metrics::exact`], [`roc_auc`]) that the pooled ones are checked against.
//!
//! Regression sums: rows, sum of squared errors, sum of absolute errors, sum of
//! targets, sum of squared targets (MSE, MAE and R^2 follow). Classification
//! sums: rows, summed log-loss, correct predictions at 0.5, and two histograms
//! of the scores on the logit scale, one for each label, from which the ROC AUC
//! is computed (pairs in one bin count as ties). It owns no aggregation.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{softplus, ModelKind};

/// Score histogram bins per label.
pub const AUC_BINS: usize = 256;
/// The histograms cover logits in `[-AUC_LOGIT_RANGE, AUC_LOGIT_RANGE]`
/// (probabilities from 3.4e-4 to 0.99966); scores beyond fall in the end bins.
pub const AUC_LOGIT_RANGE: f64 = 8.0;

/// Length of one hospital's evaluation vector for `model`.
pub fn evaluation_len(model: ModelKind) -> usize {
    if model.is_classifier() {
        3 + 2 * AUC_BINS
    } else {
        5
    }
}

fn bin(z: f64) -> usize {
    let t = (z + AUC_LOGIT_RANGE) / (2.0 * AUC_LOGIT_RANGE) * AUC_BINS as f64;
    if t.is_nan() {
        return 0;
    }
    (t.floor().max(0.0) as usize).min(AUC_BINS - 1)
}

/// This hospital's evaluation sums of the model `w` on its rows `(x, y)` (see
/// the module docs for the layout).
pub fn local_evaluation(
    model: ModelKind,
    x: &Array2<f64>,
    y: &Array1<f64>,
    w: &Array1<f64>,
) -> Vec<f64> {
    scored(model, &x.dot(w), y)
}

/// [`local_evaluation`] of the scores `z = X w` (linear predictions, or logits).
fn scored(model: ModelKind, z: &Array1<f64>, y: &Array1<f64>) -> Vec<f64> {
    let n = y.len() as f64;
    if model.is_classifier() {
        let mut out = vec![0.0; evaluation_len(model)];
        out[0] = n;
        for (&zi, &yi) in z.iter().zip(y) {
            let positive = yi == 1.0;
            out[1] += if positive {
                softplus(-zi)
            } else {
                softplus(zi)
            };
            if (zi >= 0.0) == positive {
                out[2] += 1.0;
            }
            let base = if positive { 3 } else { 3 + AUC_BINS };
            out[base + bin(zi)] += 1.0;
        }
        out
    } else {
        let (mut se, mut ae, mut sy, mut sy2) = (0.0, 0.0, 0.0, 0.0);
        for (&p, &t) in z.iter().zip(y) {
            let e = p - t;
            se += e * e;
            ae += e.abs();
            sy += t;
            sy2 += t * t;
        }
        vec![n, se, ae, sy, sy2]
    }
}

/// Test metrics of a model on a set of rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metrics {
    /// A regression model's.
    Regression {
        /// Rows scored.
        rows: u64,
        /// Mean squared error.
        mse: f64,
        /// Mean absolute error.
        mae: f64,
        /// Coefficient of determination, `1 - SSE / SST` (NaN-free: 0 when
        /// the targets are constant).
        r2: f64,
    },
    /// A classifier's.
    Classification {
        /// Rows scored.
        rows: u64,
        /// Mean log-loss.
        log_loss: f64,
        /// Fraction classified correctly at probability 0.5.
        accuracy: f64,
        /// Area under the ROC curve (from the score histograms when pooled).
        auc: f64,
    },
}

impl Metrics {
    /// Metrics from summed evaluation vectors; `None` when no row was scored.
    pub fn from_sums(model: ModelKind, sums: &[f64]) -> Result<Option<Metrics>> {
        if sums.len() != evaluation_len(model) {
            return Err(Error::Shape(format!(
                "{} evaluation values, {model} needs {}",
                sums.len(),
                evaluation_len(model)
            )));
        }
        // Counts are sums of integers; remove the fixed-point residue.
        let n = sums[0].round();
        if n < 1.0 {
            return Ok(None);
        }
        Ok(Some(if model.is_classifier() {
            let pos: Vec<f64> = sums[3..3 + AUC_BINS].iter().map(|v| v.round()).collect();
            let neg: Vec<f64> = sums[3 + AUC_BINS..].iter().map(|v| v.round()).collect();
            Metrics::Classification {
                rows: n as u64,
                log_loss: sums[1] / n,
                accuracy: sums[2].round() / n,
                auc: histogram_auc(&pos, &neg),
            }
        } else {
            let sst = sums[4] - sums[3] * sums[3] / n;
            Metrics::Regression {
                rows: n as u64,
                mse: sums[1] / n,
                mae: sums[2] / n,
                r2: if sst > 0.0 { 1.0 - sums[1] / sst } else { 0.0 },
            }
        }))
    }

    /// The exact metrics of `w` on `(x, y)` in the clear (the AUC exact, ties
    /// counted one half).
    pub fn exact(
        model: ModelKind,
        x: &Array2<f64>,
        y: &Array1<f64>,
        w: &Array1<f64>,
    ) -> Result<Metrics> {
        let z = x.dot(w);
        let m = Metrics::from_sums(model, &scored(model, &z, y))?.ok_or(Error::NoRows)?;
        Ok(match m {
            Metrics::Classification {
                rows,
                log_loss,
                accuracy,
                ..
            } => Metrics::Classification {
                rows,
                log_loss,
                accuracy,
                auc: roc_auc(&z.to_vec(), &y.to_vec()),
            },
            other => other,
        })
    }

    /// Rows scored.
    pub fn rows(&self) -> u64 {
        match self {
            Metrics::Regression { rows, .. } | Metrics::Classification { rows, .. } => *rows,
        }
    }
}

/// ROC AUC from per-bin counts of positives and negatives (bins in increasing
/// score order; pairs in one bin count one half). 0.5 when a class is absent.
pub fn histogram_auc(pos: &[f64], neg: &[f64]) -> f64 {
    let (p, n): (f64, f64) = (pos.iter().sum(), neg.iter().sum());
    if p == 0.0 || n == 0.0 {
        return 0.5;
    }
    let mut below = 0.0;
    let mut wins = 0.0;
    for (pi, ni) in pos.iter().zip(neg) {
        wins += pi * (below + 0.5 * ni);
        below += ni;
    }
    wins / (p * n)
}

/// The exact ROC AUC of `scores` for 0/1 `labels` (Mann-Whitney, ties one
/// half). 0.5 when a class is absent.
pub fn roc_auc(scores: &[f64], labels: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut p, mut n) = (0.0, 0.0);
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 shared: each gets their mean.
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1.0 {
                p += 1.0;
                rank_sum += mean_rank;
            } else {
                n += 1.0;
            }
        }
        i = j + 1;
    }
    if p == 0.0 || n == 0.0 {
        return 0.5;
    }
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;

    #[test]
    fn regression_metrics_from_sums() {
        let x = array![[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]];
        let y = array![1.0, 3.0, 2.0];
        let w = array![0.5, 0.5];
        // predictions 1, 1.5, 2: errors 0, -1.5, 0
        let m = Metrics::exact(ModelKind::Linear, &x, &y, &w).unwrap();
        let Metrics::Regression { rows, mse, mae, r2 } = m else {
            panic!()
        };
        assert_eq!(rows, 3);
        assert!((mse - 0.75).abs() < 1e-12 && (mae - 0.5).abs() < 1e-12);
        // SST = 2
        assert!((r2 - (1.0 - 2.25 / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn auc_known_values() {
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]), 0.75);
        assert_eq!(roc_auc(&[0.5, 0.5], &[0.0, 1.0]), 0.5);
        assert_eq!(roc_auc(&[1.0, 2.0], &[1.0, 1.0]), 0.5);
        assert_eq!(histogram_auc(&[0.0, 2.0], &[2.0, 0.0]), 1.0);
        assert_eq!(histogram_auc(&[1.0, 1.0], &[1.0, 1.0]), 0.5);
    }

    #[test]
    fn empty_sums_give_no_metrics() {
        let zeros = vec![0.0; evaluation_len(ModelKind::Logistic)];
        assert_eq!(
            Metrics::from_sums(ModelKind::Logistic, &zeros).unwrap(),
            None
        );
        assert!(Metrics::from_sums(ModelKind::Linear, &[1.0]).is_err());
    }

    proptest! {
        /// The histogram AUC of well-spread scores is within 0.005 of the exact
        /// one, and evaluation sums are additive over row blocks.
        #[test]
        fn histogram_auc_tracks_the_exact_auc(rows in proptest::collection::vec((-6.0f64..6.0, 0u8..2), 20..200)) {
            let n = rows.len();
            let x = Array2::from_shape_fn((n, 1), |(r, _)| rows[r].0);
            let y = Array1::from_shape_fn(n, |r| rows[r].1 as f64);
            let w = array![1.0];
            let sums = local_evaluation(ModelKind::Logistic, &x, &y, &w);
            let pooled = Metrics::from_sums(ModelKind::Logistic, &sums).unwrap().unwrap();
            let exact = Metrics::exact(ModelKind::Logistic, &x, &y, &w).unwrap();
            let (Metrics::Classification { auc: a, log_loss: l1, .. }, Metrics::Classification { auc: b, log_loss: l2, .. }) = (pooled, exact) else { panic!() };
            // Bins are 1/16 wide on the logit: scores uniform on [-6, 6]
            // leave few pairs in one bin.
            prop_assert!((a - b).abs() < 0.02, "{a} vs {b}");
            prop_assert!((l1 - l2).abs() < 1e-12);
            let half = n / 2;
            let top = local_evaluation(ModelKind::Logistic, &x.slice(ndarray::s![..half, ..]).to_owned(), &y.slice(ndarray::s![..half]).to_owned(), &w);
            let bottom = local_evaluation(ModelKind::Logistic, &x.slice(ndarray::s![half.., ..]).to_owned(), &y.slice(ndarray::s![half..]).to_owned(), &w);
            for ((t, b), s) in top.iter().zip(&bottom).zip(&sums) {
                prop_assert!((t + b - s).abs() <= 1e-9 * (1.0 + s.abs()));
            }
        }
    }
}
