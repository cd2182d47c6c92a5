//! Model maths: the model kinds the federation trains ([`ModelKind`]: linear,
//! ridge, binary logistic), their gradients (sums over rows, as
//! python-paillier's example computes them), predictions, mean squared error,
//! local gradient-descent training and the pooled least-squares optimum.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the federation trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Linear regression on half the summed squared error.
    #[default]
    Linear,
    /// Linear regression with an L2 penalty `l2/2 |w|^2` (the intercept not
    /// penalized) on the mean squared error.
    Ridge,
    /// Binary logistic regression (target 0 or 1) on the summed log-loss.
    Logistic,
}

impl ModelKind {
    /// The lowercase name used in configs and results.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Linear => "linear",
            ModelKind::Ridge => "ridge",
            ModelKind::Logistic => "logistic",
        }
    }

    /// Whether the model is a classifier.
    pub fn is_classifier(self) -> bool {
        self == ModelKind::Logistic
    }

    /// Gradient of this model's summed loss over the rows of `(x, y)` at `w`:
    /// `X^T (X w - y)` for the linear kinds (the penalty is applied by the
    /// update rule, not here: it is no function of any hospital's data),
    /// `X^T (sigmoid(X w) - y)` for logistic.
    pub fn gradient(self, x: &Array2<f64>, y: &Array1<f64>, w: &Array1<f64>) -> Array1<f64> {
        match self {
            ModelKind::Linear | ModelKind::Ridge => gradient(x, y, w),
            ModelKind::Logistic => {
                let delta = x.dot(w).mapv(sigmoid) - y;
                x.t().dot(&delta)
            }
        }
    }

    /// Predictions: `X w` for the linear kinds, `P(y = 1)` for logistic.
    pub fn predict(self, x: &Array2<f64>, w: &Array1<f64>) -> Array1<f64> {
        match self {
            ModelKind::Linear | ModelKind::Ridge => x.dot(w),
            ModelKind::Logistic => x.dot(w).mapv(sigmoid),
        }
    }

    /// Checks that `y` suits the model: 0/1 labels for logistic regression.
    /// The error names the first offending row (1-based).
    pub fn check_target(self, target: &str, y: &Array1<f64>) -> Result<()> {
        if self == ModelKind::Logistic {
            if let Some(i) = y.iter().position(|&v| v != 0.0 && v != 1.0) {
                return Err(Error::InvalidParameter {
                    name: "target",
                    reason: format!(
                        "row {} of column {target:?} is {}; logistic regression needs 0 or 1",
                        i + 1,
                        y[i]
                    ),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<ModelKind> {
        match s {
            "linear" => Ok(ModelKind::Linear),
            "ridge" => Ok(ModelKind::Ridge),
            "logistic" => Ok(ModelKind::Logistic),
            other => Err(Error::InvalidParameter {
                name: "model",
                reason: format!("{other:?} is not one of \"linear\", \"ridge\", \"logistic\""),
            }),
        }
    }
}

/// The logistic function, without overflow for large `|z|`.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^z)`, without overflow: the log-loss of a label the model scored
/// `-z` on the logit scale.
pub fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Predictions `X w`.
pub fn predict(x: &Array2<f64>, w: &Array1<f64>) -> Array1<f64> {
    x.dot(w)
}

/// Gradient of half the summed squared error: `X^T (X w - y)` (a sum over rows, not a mean).
pub fn gradient(x: &Array2<f64>, y: &Array1<f64>, w: &Array1<f64>) -> Array1<f64> {
    let delta = x.dot(w) - y;
    x.t().dot(&delta)
}

/// Mean squared error of the model `w` on `(x, y)`: `mean((X w - y)^2)`.
pub fn mse(x: &Array2<f64>, y: &Array1<f64>, w: &Array1<f64>) -> f64 {
    let delta = x.dot(w) - y;
    delta.dot(&delta) / y.len() as f64
}

/// Local-only training as in python-paillier's example: `w = 0`, then
/// `iterations` times `w -= eta * gradient(x, y, w)`.
pub fn train_local(x: &Array2<f64>, y: &Array1<f64>, iterations: usize, eta: f64) -> Array1<f64> {
    let mut w = Array1::zeros(x.ncols());
    for _ in 0..iterations {
        let g = gradient(x, y, &w);
        w.scaled_add(-eta, &g);
    }
    w
}

/// The least-squares optimum `argmin_w |X w - y|^2`, from the normal equations
/// `X^T X w = X^T y` solved by Gaussian elimination with partial pivoting.
/// The best any linear model can do on the given (pooled) training data.
pub fn least_squares(x: &Array2<f64>, y: &Array1<f64>) -> Result<Array1<f64>> {
    if x.nrows() != y.len() {
        return Err(Error::Shape(format!(
            "{} rows for {} targets",
            x.nrows(),
            y.len()
        )));
    }
    let d = x.ncols();
    let mut a = x.t().dot(x);
    let mut b = x.t().dot(y);
    let scale = a.diag().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return Err(Error::Singular);
    }
    for col in 0..d {
        let pivot = (col..d)
            .max_by(|&i, &j| a[[i, col]].abs().total_cmp(&a[[j, col]].abs()))
            .unwrap_or(col);
        if a[[pivot, col]].abs() <= scale * 1e-12 {
            return Err(Error::Singular);
        }
        if pivot != col {
            for k in 0..d {
                a.swap([pivot, k], [col, k]);
            }
            b.swap(pivot, col);
        }
        for r in col + 1..d {
            let f = a[[r, col]] / a[[col, col]];
            if f != 0.0 {
                for k in col..d {
                    a[[r, k]] -= f * a[[col, k]];
                }
                b[r] -= f * b[col];
            }
        }
    }
    let mut w = Array1::<f64>::zeros(d);
    for r in (0..d).rev() {
        let s: f64 = (r + 1..d).map(|k| a[[r, k]] * w[k]).sum();
        w[r] = (b[r] - s) / a[[r, r]];
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        let x = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let y = array![1.0, 2.0, 3.0];
        let w = array![0.5, -1.0];
        assert_eq!(predict(&x, &w), array![-1.5, -2.5, -3.5]);
        // delta = [-2.5, -4.5, -6.5]; X^T delta = [-2.5-13.5-32.5, -5-18-39]
        assert_eq!(gradient(&x, &y, &w), array![-48.5, -62.0]);
        assert!((mse(&x, &y, &w) - (6.25 + 20.25 + 42.25) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn train_local_converges_to_least_squares() {
        let x = array![
            [1.0, 0.0, 1.0],
            [0.0, 1.0, 1.0],
            [1.0, 1.0, 1.0],
            [0.5, 0.2, 1.0]
        ];
        let y = array![3.0, -1.0, 2.5, 1.0];
        let w_ls = least_squares(&x, &y).unwrap();
        let w_gd = train_local(&x, &y, 5000, 0.1);
        for (a, b) in w_ls.iter().zip(w_gd.iter()) {
            assert!((a - b).abs() < 1e-9, "{w_ls} vs {w_gd}");
        }
        // Zero iterations leave the model at zero.
        assert_eq!(train_local(&x, &y, 0, 0.1), Array1::<f64>::zeros(3));
    }

    #[test]
    fn singular_normal_equations_are_an_error() {
        let x = array![[1.0, 2.0], [2.0, 4.0]];
        assert!(matches!(
            least_squares(&x, &array![1.0, 2.0]),
            Err(Error::Singular)
        ));
        let z = Array2::<f64>::zeros((3, 2));
        assert!(matches!(
            least_squares(&z, &array![1.0, 2.0, 3.0]),
            Err(Error::Singular)
        ));
    }

    proptest! {
        /// The gradient is zero at the least-squares optimum, and it is additive
        /// over row blocks (what makes the federated sum exact).
        #[test]
        fn gradient_laws(rows in proptest::collection::vec(
            (-10.0f64..10.0, -10.0f64..10.0, -100.0f64..100.0), 4..30)) {
            let n = rows.len();
            let x = Array2::from_shape_fn((n, 3), |(r, c)| match c { 0 => rows[r].0, 1 => rows[r].1, _ => 1.0 });
            let y = Array1::from_shape_fn(n, |r| rows[r].2);
            let w = array![0.3, -0.7, 2.0];
            let split = n / 2;
            let top = gradient(&x.slice(ndarray::s![..split, ..]).to_owned(), &y.slice(ndarray::s![..split]).to_owned(), &w);
            let bottom = gradient(&x.slice(ndarray::s![split.., ..]).to_owned(), &y.slice(ndarray::s![split..]).to_owned(), &w);
            let whole = gradient(&x, &y, &w);
            for i in 0..3 {
                prop_assert!((top[i] + bottom[i] - whole[i]).abs() <= 1e-9 * (1.0 + whole[i].abs()));
            }
            if let Ok(opt) = least_squares(&x, &y) {
                let g = gradient(&x, &y, &opt);
                let scale = x.iter().map(|v| v.abs()).sum::<f64>() * y.iter().map(|v| v.abs()).sum::<f64>();
                for gi in g.iter() {
                    prop_assert!(gi.abs() <= 1e-7 * (1.0 + scale));
                }
            }
        }
    }
}
