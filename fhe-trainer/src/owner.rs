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
    /// Preconditioning and 2-bit quantizer fitted on the training rows.
    pub quantizer: Quantizer,
    /// The public circuit config sent to the server.
    pub circuit: CircuitConfig,
    /// Epochs encrypted (each one reshuffled).
    pub epochs: usize,
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
/// [-1, 1], then weights and bias on the scaled features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// Feature column names, in order.
    pub feature_names: Vec<String>,
    /// The scaler fitted on the training rows.
    pub scaler: MinMaxScaler,
    /// Weights on min-max scaled features.
    pub weights: Vec<f64>,
    /// Intercept.
    pub bias: f64,
    /// Batches trained.
    pub batches_done: u64,
}

impl LinearModel {
    /// Checks that the weights match the scaler's feature count.
    pub fn new(
        feature_names: Vec<String>,
        scaler: MinMaxScaler,
        weights: Vec<f64>,
        bias: f64,
        batches_done: u64,
    ) -> Result<LinearModel> {
        if weights.len() != scaler.n_features() || feature_names.len() != weights.len() {
            return Err(Error::Shape(format!(
                "{} weights, {} names, scaler for {} features",
                weights.len(),
                feature_names.len(),
                scaler.n_features()
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

    /// Margin `w . scale(x) + b` of each raw row.
    pub fn decision_function(&self, x: &[Vec<f64>]) -> Result<Vec<f64>> {
        Ok(self
            .scaler
            .transform(x)?
            .iter()
            .map(|r| r.iter().zip(&self.weights).map(|(a, w)| a * w).sum::<f64>() + self.bias)
            .collect())
    }

    /// Probability of class 1 of each raw row.
    pub fn predict_proba(&self, x: &[Vec<f64>]) -> Result<Vec<f64>> {
        Ok(self
            .decision_function(x)?
            .into_iter()
            .map(sigmoid)
            .collect())
    }

    /// Class (probability >= 0.5) of each raw row.
    pub fn predict(&self, x: &[Vec<f64>]) -> Result<Vec<u8>> {
        Ok(self
            .predict_proba(x)?
            .into_iter()
            .map(|p| u8::from(p >= 0.5))
            .collect())
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
        let m = LinearModel::new(
            vec!["a".into(), "b".into()],
            scaler,
            vec![1.0, -1.0],
            0.0,
            3,
        )
        .unwrap();
        assert_eq!(
            m.predict(&[vec![2.0, 0.0], vec![0.0, 4.0]]).unwrap(),
            [1, 0]
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        m.save(&p).unwrap();
        assert_eq!(LinearModel::load(&p).unwrap(), m);
        assert!(LinearModel::new(vec!["a".into()], m.scaler.clone(), vec![1.0], 0.0, 0).is_err());
    }
}
