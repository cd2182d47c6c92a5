//! What the data owner keeps in the clear: the [`OwnerFile`] written next to
//! the client key by `encrypt`, and the decrypted [`LinearModel`] with its
//! inference. Both are framed, size-limited files ([`crate::io`]) written
//! 0600; the owner file is refused on load when others can read it, since it
//! holds the clear test rows and their labels.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::circuit::CircuitConfig;
use crate::data::MinMaxScaler;
use crate::encode::Quantizer;
use crate::error::{Error, Result};
use crate::float::sigmoid;
use crate::io::{read_file, write_file, FileKind};

/// The data owner's clear side of a training job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerFile {
    /// Hex tag of the key set the batches were encrypted under.
    pub key_id: String,
    /// Name of the label column.
    pub target: String,
    /// Feature column names, in order.
    pub feature_names: Vec<String>,
    /// Min-max scaler fitted on the training rows.
    pub scaler: MinMaxScaler,
    /// Preconditioning and 3-level quantizer fitted on the training rows.
    pub quantizer: Quantizer,
    /// The public circuit config sent to the server.
    pub circuit: CircuitConfig,
    /// Epochs encrypted (each one reshuffled).
    pub epochs: usize,
    /// Classes of the target (2 for binary; one-vs-rest models otherwise).
    pub classes: u8,
    /// Held-out rows (raw features) for scoring the decrypted model.
    pub test_x: Vec<Vec<f64>>,
    /// Their labels.
    pub test_y: Vec<u8>,
}

impl OwnerFile {
    /// Writes the file (mode 0600).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_file(path, FileKind::Owner, self)
    }

    /// Reads the file; refuses it when others can read it.
    pub fn load(path: &Path) -> Result<OwnerFile> {
        read_file(path, FileKind::Owner)
    }
}

/// A decrypted logistic-regression model on raw features: the scaler to
/// [-1, 1], then weights and bias on the scaled features, one row per binary
/// model: one for binary data (probability of class 1), one per class for
/// one-vs-rest (the largest margin wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// Feature column names, in order.
    pub feature_names: Vec<String>,
    /// The scaler fitted on the training rows.
    pub scaler: MinMaxScaler,
    /// Weights on min-max scaled features, one row per binary model.
    pub weights: Vec<Vec<f64>>,
    /// Intercept of each binary model.
    pub bias: Vec<f64>,
    /// Batches trained, per model.
    pub batches_done: u64,
}

impl LinearModel {
    /// Checks that there is one model or at least three (one per class), and
    /// that every weight row matches the scaler's feature count.
    pub fn new(
        feature_names: Vec<String>,
        scaler: MinMaxScaler,
        weights: Vec<Vec<f64>>,
        bias: Vec<f64>,
        batches_done: u64,
    ) -> Result<LinearModel> {
        let n = scaler.n_features();
        if weights.is_empty()
            || weights.len() == 2
            || weights.len() != bias.len()
            || feature_names.len() != n
            || weights.iter().any(|w| w.len() != n)
        {
            return Err(Error::Shape(format!(
                "{} weight rows and {} biases for {} features ({} names): need 1 or >= 3 rows",
                weights.len(),
                bias.len(),
                n,
                feature_names.len()
            )));
        }
        Ok(LinearModel {
            feature_names,
            scaler,
            weights,
            bias,
            batches_done,
        })
    }

    /// Number of classes (2 for one binary model).
    pub fn n_classes(&self) -> usize {
        if self.weights.len() == 1 {
            2
        } else {
            self.weights.len()
        }
    }

    /// Margins `w_m . scale(x) + b_m` of each raw row, one per model.
    pub fn decision_function(&self, x: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
        Ok(self
            .scaler
            .transform(x)?
            .iter()
            .map(|r| {
                self.weights
                    .iter()
                    .zip(&self.bias)
                    .map(|(w, b)| r.iter().zip(w).map(|(a, c)| a * c).sum::<f64>() + b)
                    .collect()
            })
            .collect())
    }

    /// Class probabilities of each raw row: `[1 - p, p]` for a binary model,
    /// normalized one-vs-rest sigmoids otherwise.
    pub fn predict_proba(&self, x: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
        Ok(self
            .decision_function(x)?
            .into_iter()
            .map(|m| {
                if m.len() == 1 {
                    let p = sigmoid(m[0]);
                    vec![1.0 - p, p]
                } else {
                    let s: Vec<f64> = m.iter().map(|&v| sigmoid(v)).collect();
                    let t: f64 = s.iter().sum();
                    s.iter().map(|v| v / t).collect()
                }
            })
            .collect())
    }

    /// Class of each raw row (probability of class 1 >= 0.5 for a binary
    /// model, the largest margin otherwise, ties to the lower class).
    pub fn predict(&self, x: &[Vec<f64>]) -> Result<Vec<u8>> {
        Ok(self
            .decision_function(x)?
            .into_iter()
            .map(|m| {
                if m.len() == 1 {
                    u8::from(m[0] >= 0.0)
                } else {
                    let mut best = 0;
                    for c in 1..m.len() {
                        if m[c] > m[best] {
                            best = c;
                        }
                    }
                    best as u8
                }
            })
            .collect())
    }

    /// Fraction of rows whose predicted class is the label.
    pub fn score(&self, x: &[Vec<f64>], y: &[u8]) -> Result<f64> {
        let p = self.predict(x)?;
        if p.len() != y.len() || y.is_empty() {
            return Err(Error::Shape(format!(
                "{} predictions for {} labels",
                p.len(),
                y.len()
            )));
        }
        Ok(p.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64)
    }

    /// Writes the file (mode 0600).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_file(path, FileKind::Model, self)
    }

    /// Reads the file and checks its shape.
    pub fn load(path: &Path) -> Result<LinearModel> {
        let m: LinearModel = read_file(path, FileKind::Model)?;
        LinearModel::new(m.feature_names, m.scaler, m.weights, m.bias, m.batches_done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_round_trips_and_predicts() {
        let scaler = MinMaxScaler::fit(&[vec![0.0, 0.0], vec![2.0, 4.0]]).unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        let m = LinearModel::new(
            names.clone(),
            scaler.clone(),
            vec![vec![1.0, -1.0]],
            vec![0.0],
            3,
        )
        .unwrap();
        let x = [vec![2.0, 0.0], vec![0.0, 4.0], vec![0.0, 0.0]];
        assert_eq!(m.predict(&x[..2]).unwrap(), [1, 0]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        m.save(&p).unwrap();
        assert_eq!(LinearModel::load(&p).unwrap(), m);
        // One-vs-rest: the largest margin wins; probabilities sum to 1.
        let ovr = LinearModel::new(
            names.clone(),
            scaler.clone(),
            vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![-1.0, -1.0]],
            vec![0.0; 3],
            1,
        )
        .unwrap();
        assert_eq!(ovr.predict(&x).unwrap(), [0, 1, 2]);
        let p = ovr.predict_proba(&x).unwrap();
        assert!(p
            .iter()
            .all(|r| (r.iter().sum::<f64>() - 1.0).abs() < 1e-12));
        assert_eq!(ovr.n_classes(), 3);
        // Two rows, a short row or mismatched names are refused.
        let two = vec![vec![1.0, 0.0]; 2];
        assert!(LinearModel::new(names.clone(), scaler.clone(), two, vec![0.0; 2], 0).is_err());
        assert!(LinearModel::new(names, scaler.clone(), vec![vec![1.0]], vec![0.0], 0).is_err());
        let one_name = vec!["a".to_string()];
        assert!(LinearModel::new(one_name, scaler, vec![vec![1.0, 0.0]], vec![0.0], 0).is_err());
    }
}
