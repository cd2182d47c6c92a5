//! The accuracy suite: public binary data sets shipped under `data/suite/`,
//! five stratified 70/30 splits each and scikit-learn's reference accuracies
//! on exactly those splits (`data/suite/make_suite.py` writes them to
//! `suite.json`). [`run_set`] trains on each split's training rows with a
//! given config and scores the decrypted weights on its test rows, so the
//! crate's defaults can be held to the suite (`tests/suite.rs`) and the table
//! reproduced (`fhe-trainer suite`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{default_epochs, select_config, Fhe, OneVsRest, SgdClassifier, TrainerConfig};

/// Where the suite lives in this crate.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/suite")
}

/// One data set of the suite with its splits and references.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteSet {
    /// Short name.
    pub name: String,
    /// CSV file next to `suite.json`; the label column is `target`.
    pub file: String,
    /// Where the data comes from.
    pub origin: String,
    /// Rows.
    pub rows: usize,
    /// Feature columns.
    pub features: usize,
    /// Distinct labels.
    pub classes: usize,
    /// Test row indices of each split (the rest is the training set).
    pub test_indices: Vec<Vec<usize>>,
    /// scikit-learn `LogisticRegression()` test accuracy on each split.
    pub sklearn_lr: Vec<f64>,
    /// Test accuracy of always answering the training majority class.
    pub majority: Vec<f64>,
}

/// The whole suite file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suite {
    /// What wrote the file.
    pub generator: String,
    /// Fraction of each set held out.
    pub test_size: f64,
    /// Binary sets.
    pub binary: Vec<SuiteSet>,
    /// Multi-class sets.
    pub multiclass: Vec<SuiteSet>,
}

/// Largest `suite.json` read.
const SUITE_LIMIT: u64 = 16 << 20;

impl Suite {
    /// Loads `suite.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Suite> {
        let path = dir.join("suite.json");
        let bytes = crate::io::read_limited(&path, SUITE_LIMIT)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            what: "suite.json",
            detail: e.to_string(),
        })
    }
}

/// Accuracies of one set, one entry per split.
#[derive(Debug, Clone, Serialize)]
pub struct SetResult {
    /// The set's name.
    pub name: String,
    /// Rows and features.
    pub shape: (usize, usize),
    /// Classes.
    pub classes: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// This crate in the requested mode (weights decrypted, scored in float).
    pub ours: Vec<f64>,
    /// The float32 twin (`Fhe::Disable`) on the same preprocessing and batches.
    pub float_twin: Vec<f64>,
    /// scikit-learn's `LogisticRegression()`.
    pub sklearn_lr: Vec<f64>,
    /// Majority class.
    pub majority: Vec<f64>,
    /// One test row, as a fraction of the test set (mean over splits).
    pub one_row: f64,
}

/// Mean of a slice (0 for an empty one).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl SetResult {
    /// Mean accuracy of ours minus scikit-learn's.
    pub fn gap(&self) -> f64 {
        mean(&self.ours) - mean(&self.sklearn_lr)
    }

    /// The bar: within max(1 point, one test row) of scikit-learn
    /// (2 points for multi-class), and above the majority rate wherever
    /// scikit-learn is.
    pub fn meets_target(&self) -> bool {
        let points = if self.classes > 2 { 0.02 } else { 0.01 };
        let tol = self.one_row.max(points);
        let above_majority = mean(&self.sklearn_lr) <= mean(&self.majority)
            || mean(&self.ours) > mean(&self.majority);
        self.gap() >= -tol - 1e-12 && above_majority
    }
}

/// Trains and scores every split of `set` with `config` in `fhe` mode
/// (one-vs-rest for more than two classes); `epochs: None` uses
/// [`default_epochs`]; `select` lets the owner's [`select_config`] pick the
/// hyper-parameters from the training rows of each split (binary sets).
pub fn run_set(
    dir: &Path,
    set: &SuiteSet,
    config: &TrainerConfig,
    fhe: Fhe,
    epochs: Option<usize>,
    select: bool,
) -> Result<SetResult> {
    let path = dir.join(&set.file);
    let d = if set.classes > 2 {
        Dataset::from_csv_path_classes(path, "target")?
    } else {
        Dataset::from_csv_path(path, "target")?
    };
    if d.len() != set.rows || d.n_features() != set.features {
        return Err(Error::Shape(format!(
            "{} has {} x {}, suite.json says {} x {}",
            set.file,
            d.len(),
            d.n_features(),
            set.rows,
            set.features
        )));
    }
    let mut res = SetResult {
        name: set.name.clone(),
        shape: (set.rows, set.features),
        classes: set.classes,
        epochs: 0,
        ours: Vec::new(),
        float_twin: Vec::new(),
        sklearn_lr: set.sklearn_lr.clone(),
        majority: set.majority.clone(),
        one_row: 0.0,
    };
    let mut one_row = Vec::new();
    for test_idx in &set.test_indices {
        let mut is_test = vec![false; d.len()];
        for &i in test_idx {
            *is_test.get_mut(i).ok_or_else(|| {
                Error::Shape(format!("test index {i} out of range in {}", set.name))
            })? = true;
        }
        let train_idx: Vec<usize> = (0..d.len()).filter(|&i| !is_test[i]).collect();
        let (train, test) = (d.select(&train_idx), d.select(test_idx));
        let e = epochs.unwrap_or_else(|| default_epochs(train.len(), config.batch_size()));
        res.epochs = e;
        let config = if select && d.n_classes() == 2 {
            &select_config(config, train.x(), train.y())?
        } else {
            config
        };
        for (mode, out) in [(fhe, &mut res.ours), (Fhe::Disable, &mut res.float_twin)] {
            let acc = if d.n_classes() > 2 {
                let mut m = OneVsRest::new(config.clone(), mode);
                m.fit(train.x(), train.y(), d.n_classes(), e)?;
                m.score(test.x(), test.y())?
            } else {
                let mut m = SgdClassifier::new(config.clone(), mode);
                m.fit(train.x(), train.y(), e)?;
                m.score(test.x(), test.y())?
            };
            out.push(acc);
        }
        one_row.push(1.0 / test.len() as f64);
    }
    res.one_row = mean(&one_row);
    Ok(res)
}

/// A Markdown table of results, one row per set (percentages).
pub fn table(results: &[SetResult], mode: Fhe) -> String {
    let mut s = format!(
        "| data set | rows x features | epochs | {mode:?} | float32 twin | scikit-learn LR | majority | gap | target met |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} x {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | {} |\n",
            r.name,
            r.shape.0,
            r.shape.1,
            r.epochs,
            100.0 * mean(&r.ours),
            100.0 * mean(&r.float_twin),
            100.0 * mean(&r.sklearn_lr),
            100.0 * mean(&r.majority),
            100.0 * r.gap(),
            if r.meets_target() { "yes" } else { "no" }
        ));
    }
    s
}
