//! The one feature scaling of the workspace: scikit-learn's `load_diabetes()`
//! scaling, which the scenarios apply to a raw CSV and the coordinator's tests
//! to the raw diabetes file. It owns no other preprocessing (intercept columns
//! are [`Dataset::with_intercept`], splits are the scenarios').

use ndarray::{Array2, Axis};

use crate::data::Dataset;
use crate::error::Result;

/// Scales every feature as scikit-learn's `load_diabetes()` does: subtract the
/// column mean, divide by the population standard deviation times
/// `sqrt(n_rows)`, so each column has mean 0 and sum of squares 1. A constant
/// column becomes all zeros (scikit-learn leaves a zero scale at 1). The target
/// is left raw.
pub fn sklearn_scale(ds: &Dataset) -> Result<Dataset> {
    let n = ds.n_rows() as f64;
    let mut x: Array2<f64> = ds.x().clone();
    for mut col in x.axis_iter_mut(Axis(1)) {
        let mean = col.sum() / n;
        col.mapv_inplace(|v| v - mean);
        let std = (col.dot(&col) / n).sqrt();
        let scale = if std == 0.0 { 1.0 } else { std };
        // Two divisions in scikit-learn's order (scale(), then / sqrt(n)), so
        // the result matches its numbers to the last bit where it can.
        col.mapv_inplace(|v| v / scale);
        col.mapv_inplace(|v| v / n.sqrt());
    }
    Dataset::new(
        ds.feature_names().to_vec(),
        ds.target_name().to_owned(),
        x,
        ds.y().clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn scaling_gives_zero_mean_unit_norm_columns() {
        let d = Dataset::new(
            vec!["a".into(), "c".into()],
            "y".into(),
            array![[1.0, 5.0], [2.0, 5.0], [4.0, 5.0], [9.0, 5.0]],
            array![1.0, 2.0, 3.0, 4.0],
        )
        .unwrap();
        let s = sklearn_scale(&d).unwrap();
        let a = s.x().column(0);
        assert!(a.sum().abs() < 1e-12);
        assert!((a.dot(&a) - 1.0).abs() < 1e-12);
        assert!(
            s.x().column(1).iter().all(|&v| v == 0.0),
            "constant column -> zeros"
        );
        assert_eq!(s.y(), d.y());
    }
}
