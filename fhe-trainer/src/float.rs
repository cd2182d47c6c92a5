//! The float32 reference (`Fhe::Disable`): mini-batch SGD for logistic
//! regression with the same batches, learning rate and parameter range as the
//! integer circuit, so the two can be compared batch for batch.

/// Logistic sigmoid.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// A float32 logistic-regression model: `weights` then `bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatModel {
    /// One weight per feature.
    pub weights: Vec<f32>,
    /// The intercept.
    pub bias: f32,
}

impl FloatModel {
    /// All-zero model.
    pub fn zeros(n_features: usize) -> Self {
        FloatModel {
            weights: vec![0.0; n_features],
            bias: 0.0,
        }
    }

    /// Probability of class 1 for a scaled row.
    pub fn predict_proba_row(&self, row: &[f64]) -> f64 {
        let z: f32 = self
            .weights
            .iter()
            .zip(row)
            .map(|(w, x)| w * (*x as f32))
            .sum::<f32>()
            + self.bias;
        sigmoid(f64::from(z))
    }

    /// One SGD step on a batch of scaled rows; weights are clipped to `range`.
    pub fn sgd_step(&mut self, x: &[Vec<f64>], y: &[u8], lr: f64, range: (f64, f64)) {
        let n = x.len() as f32;
        let mut gw = vec![0f32; self.weights.len()];
        let mut gb = 0f32;
        for (row, &label) in x.iter().zip(y) {
            let e = self.predict_proba_row(row) as f32 - f32::from(label);
            for (g, v) in gw.iter_mut().zip(row) {
                *g += e * (*v as f32);
            }
            gb += e;
        }
        let (lo, hi) = (range.0 as f32, range.1 as f32);
        for (w, g) in self.weights.iter_mut().zip(gw) {
            *w = (*w - lr as f32 * g / n).clamp(lo, hi);
        }
        self.bias = (self.bias - lr as f32 * gb / n).clamp(lo, hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_separates_a_simple_set() {
        let x = vec![vec![-1.0], vec![-0.5], vec![0.5], vec![1.0]];
        let y = vec![0, 0, 1, 1];
        let mut m = FloatModel::zeros(1);
        for _ in 0..50 {
            m.sgd_step(&x, &y, 1.0, (-10.0, 10.0));
        }
        assert!(m.predict_proba_row(&[1.0]) > 0.9);
        assert!(m.predict_proba_row(&[-1.0]) < 0.1);
    }

    #[test]
    fn weights_stay_in_range() {
        let mut m = FloatModel::zeros(1);
        for _ in 0..100 {
            m.sgd_step(&[vec![1.0]], &[1], 5.0, (-1.0, 1.0));
        }
        assert_eq!(m.weights[0], 1.0);
        assert_eq!(m.bias, 1.0);
    }
}
