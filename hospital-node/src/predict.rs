//! `hospital-node predict`: scores a CSV with a model file a run wrote.
//!
//! It owns reading the two files and writing the predictions; the model's
//! maths and the file formats are `learning`'s ([`learning::Model`]). Rows are
//! read against the schema the model file carries, so a missing or
//! unexpected column is refused naming it, as at training time.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use learning::{Metrics, Model, ModelKind};
use serde_json::json;

/// What a prediction run produced.
#[derive(Debug)]
pub struct Predicted {
    /// One score per row: the prediction (regression) or `P(y = 1)` (logistic).
    pub scores: Vec<f64>,
    /// The model's metrics on the rows, when they carry the target.
    pub metrics: Option<Metrics>,
    /// The model kind.
    pub model: ModelKind,
}

/// Scores the rows of `data` with the model file at `model`.
pub fn predict(model: &Path, data: &Path) -> Result<Predicted> {
    let m =
        Model::from_path(model).with_context(|| format!("loading model {}", model.display()))?;
    let rows = m
        .read_rows(data)
        .with_context(|| format!("reading rows to score from {}", data.display()))?;
    let (scores, metrics) = m
        .score(&rows)
        .with_context(|| format!("scoring {}", data.display()))?;
    Ok(Predicted {
        scores: scores.to_vec(),
        metrics,
        model: m.file().model,
    })
}

/// The predictions as CSV: a header (`prediction`, or `probability` and the
/// 0/1 `label` at 0.5 for logistic regression), one line per input row.
pub fn write_csv(p: &Predicted, out: &mut dyn Write) -> std::io::Result<()> {
    if p.model.is_classifier() {
        writeln!(out, "probability,label")?;
        for s in &p.scores {
            writeln!(out, "{s},{}", u8::from(*s >= 0.5))?;
        }
    } else {
        writeln!(out, "prediction")?;
        for s in &p.scores {
            writeln!(out, "{s}")?;
        }
    }
    out.flush()
}

/// The one-line JSON summary (rows, and the metrics when the data have the target).
pub fn summary(p: &Predicted, out: Option<&Path>) -> serde_json::Value {
    json!({
        "event": "predicted",
        "rows": p.scores.len(),
        "model": p.model,
        "out": out.map(|o| o.display().to_string()),
        "metrics": p.metrics,
    })
}
