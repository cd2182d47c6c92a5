//! The trained model as a file: [`ModelFile`], a versioned JSON document with
//! everything needed to score new rows (the consortium schema it was trained
//! under, the preprocessing derived from the pooled statistics, the feature
//! names, the weights, the model kind) and how it was trained. Every hospital
//! writes one at the end of a run; in `global` mode they are identical.
//!
//! It owns reading, writing and scoring; training is elsewhere.

use std::path::Path;

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::federated::Mode;
use crate::metrics::Metrics;
use crate::model::ModelKind;
use crate::schema::{ConsortiumSchema, Preprocessor, RawTable, SchemaFile, Target};

/// The `format` field of a model file.
pub const MODEL_FORMAT: &str = "private-training/model";
/// The model file version this build writes and reads.
pub const MODEL_VERSION: u32 = 1;
/// Largest model file read (a bound before parsing).
pub const MAX_MODEL_FILE_BYTES: u64 = 64 << 20;

/// How a model was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingInfo {
    /// The run's identifier.
    pub run_id: String,
    /// `seed` or `global`.
    pub mode: Mode,
    /// Training rounds completed.
    pub rounds: u32,
    /// The round limit.
    pub max_rounds: u32,
    /// Whether training stopped at the gradient-norm tolerance.
    pub converged: bool,
    /// Learning rate.
    pub eta: f64,
    /// L2 penalty.
    pub l2: f64,
    /// Hospitals of the consortium that took part.
    pub hospitals: Vec<String>,
    /// Hex SHA-256 of the consortium schema.
    pub schema_hash: String,
}

/// A trained model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// Always [`MODEL_VERSION`].
    pub version: u32,
    /// The model kind.
    pub model: ModelKind,
    /// Feature names, in weight order.
    pub features: Vec<String>,
    /// Weights.
    pub weights: Vec<f64>,
    /// The consortium schema the rows must follow.
    pub schema: SchemaFile,
    /// Imputation and scaling.
    pub preprocessing: Preprocessor,
    /// How it was trained.
    pub training: TrainingInfo,
}

/// A model file that was read and checked, ready to score rows.
#[derive(Clone, Debug)]
pub struct Model {
    file: ModelFile,
    schema: ConsortiumSchema,
    weights: Array1<f64>,
}

impl Model {
    /// A model from its parts (checked as a read file would be).
    pub fn new(file: ModelFile) -> Result<Model> {
        let bad = |reason: String| Err(Error::Schema(format!("model file: {reason}")));
        if let Some(reason) = crate::schema::header_problem(
            (&file.format, file.version),
            (MODEL_FORMAT, MODEL_VERSION),
        ) {
            return bad(reason);
        }
        let schema = ConsortiumSchema::new(file.schema.clone())?;
        if file.features != schema.feature_names() {
            return bad("its feature names differ from its schema's".into());
        }
        if file.weights.len() != file.features.len() || !file.weights.iter().all(|w| w.is_finite())
        {
            return bad(format!(
                "{} weights for {} features (or a weight is not finite)",
                file.weights.len(),
                file.features.len()
            ));
        }
        let n_num = schema.numeric_columns().count();
        let p = &file.preprocessing;
        if p.impute.len() != n_num
            || p.scaler.as_ref().is_some_and(|s| {
                s.mean.len() != n_num
                    || s.std.len() != n_num
                    || s.std.iter().any(|v| !(v.is_finite() && *v > 0.0))
                    || s.mean.iter().any(|v| !v.is_finite())
            })
            || p.scaler.is_some() != schema.file().scale
        {
            return bad("its preprocessing does not fit its schema".into());
        }
        let weights = Array1::from(file.weights.clone());
        Ok(Model {
            file,
            schema,
            weights,
        })
    }

    /// Reads and checks a model file.
    pub fn from_path(path: &Path) -> Result<Model> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_MODEL_FILE_BYTES {
            return Err(Error::Schema(format!(
                "{}: model file of {len} bytes is larger than {MAX_MODEL_FILE_BYTES}",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let file: ModelFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Schema(format!("{}: {e}", path.display())))?;
        Model::new(file).map_err(|e| match e {
            Error::Schema(r) => Error::Schema(format!("{}: {r}", path.display())),
            other => other,
        })
    }

    /// The file's contents.
    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    /// The schema rows must follow.
    pub fn schema(&self) -> &ConsortiumSchema {
        &self.schema
    }

    /// The weights.
    pub fn weights(&self) -> &Array1<f64> {
        &self.weights
    }

    /// Reads a CSV of rows to score (the target column optional).
    pub fn read_rows(&self, path: &Path) -> Result<RawTable> {
        RawTable::from_csv_path(path, &self.schema, Target::Optional)
    }

    /// Scores rows: predictions for regression, `P(y = 1)` for logistic.
    pub fn predict(&self, rows: &RawTable) -> Result<Array1<f64>> {
        let x = self.file.preprocessing.features(&self.schema, rows)?;
        Ok(self.file.model.predict(&x, &self.weights))
    }

    /// Scores rows (as [`Model::predict`]) and, when they carry the target,
    /// the model's exact metrics on them (what the federation's evaluation
    /// reports for them), from one preprocessing of the rows.
    pub fn score(&self, rows: &RawTable) -> Result<(Array1<f64>, Option<Metrics>)> {
        let x = self.file.preprocessing.features(&self.schema, rows)?;
        let scores = self.file.model.predict(&x, &self.weights);
        let Some(y) = rows.y() else {
            return Ok((scores, None));
        };
        if self.file.model.is_classifier() {
            self.file.model.check_target(self.schema.target(), y)?;
        }
        let metrics = Metrics::exact(self.file.model, &x, y, &self.weights)?;
        Ok((scores, Some(metrics)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::local_statistics;

    const SCHEMA: &str = r#"{"format": "private-training/schema", "version": 1,
        "target": "y",
        "columns": [
            {"name": "age", "type": "numeric"},
            {"name": "smoker", "type": "categorical", "categories": ["no", "yes"]}
        ]}"#;

    fn file() -> (ModelFile, RawTable) {
        let schema = ConsortiumSchema::from_json(SCHEMA.as_bytes()).unwrap();
        let csv = "age,smoker,y\n50,yes,1\n30,no,0\n40,no,1\n";
        let rows = RawTable::from_csv_reader(csv.as_bytes(), &schema, Target::Required).unwrap();
        let pre = Preprocessor::from_statistics(&schema, &local_statistics(&rows), 3).unwrap();
        let file = ModelFile {
            format: MODEL_FORMAT.into(),
            version: MODEL_VERSION,
            model: ModelKind::Logistic,
            features: schema.feature_names().to_vec(),
            weights: vec![0.5, -0.25, 0.75, 0.1],
            schema: schema.file().clone(),
            preprocessing: pre,
            training: TrainingInfo {
                run_id: "run-1".into(),
                mode: Mode::Global,
                rounds: 3,
                max_rounds: 10,
                converged: true,
                eta: 0.5,
                l2: 0.0,
                hospitals: vec!["hospital-1".into()],
                schema_hash: schema.hash_hex(),
            },
        };
        (file, rows)
    }

    #[test]
    fn a_written_model_scores_rows_as_the_trainer_would() {
        let (file, rows) = file();
        let dir = std::env::temp_dir().join(format!("model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
        let model = Model::from_path(&path).unwrap();
        assert_eq!(model.file(), &file);
        let schema = model.schema().clone();
        let x = file.preprocessing.features(&schema, &rows).unwrap();
        let expected = ModelKind::Logistic.predict(&x, &Array1::from(file.weights.clone()));
        assert_eq!(model.predict(&rows).unwrap(), expected);
        // Scoring rows need no target; columns are matched by name.
        let unlabelled = "smoker,age\nno,35\n";
        std::fs::write(dir.join("rows.csv"), unlabelled).unwrap();
        let p = model
            .predict(&model.read_rows(&dir.join("rows.csv")).unwrap())
            .unwrap();
        assert!(p.len() == 1 && p[0] > 0.0 && p[0] < 1.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn inconsistent_model_files_are_refused_naming_the_problem() {
        type Edit = fn(&mut ModelFile);
        let cases: [(Edit, &str); 4] = [
            (
                |f| {
                    f.weights.pop();
                },
                "weights for",
            ),
            (|f| f.version = 2, "version"),
            (|f| f.features.reverse(), "feature names"),
            (|f| f.preprocessing.scaler = None, "preprocessing"),
        ];
        for (edit, needle) in cases {
            let (mut f, _) = file();
            edit(&mut f);
            let e = Model::new(f).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
