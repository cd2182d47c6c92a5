//! What a classification scenario reports, as numbers: per hospital the
//! local-only and federated models' test log-loss, accuracy and ROC AUC (the
//! exact AUC, in the clear, on the shared test set) and the log-loss per
//! round; the pooled cleartext reference; and the table as printed. The
//! regression counterpart is [`crate::outcome`] and [`crate::table`].

use anyhow::{Context, Result};
use learning::ndarray::Array1;
use learning::{Dataset, Metrics, Mode, ModelKind, Objective, ReferenceResult, ReferenceRun};
use serde::Serialize;

use crate::nodes::hospital_name;
use crate::prep::Split;

/// One hospital's line.
#[derive(Debug, Clone, Serialize)]
pub struct ClassHospital {
    /// Node name.
    pub name: String,
    /// Training rows.
    pub rows: usize,
    /// Fraction of its training rows that are positive (its case mix).
    pub positive_share: f64,
    /// Its local-only model on the test set.
    pub local: Metrics,
    /// Its federated model on the test set.
    pub federated: Metrics,
    /// Test log-loss at the start (index 0) and after each round.
    pub loss_per_round: Vec<f64>,
}

/// Everything the classification table and plot show.
#[derive(Debug, Clone, Serialize)]
pub struct ClassOutcome {
    /// Per hospital.
    pub hospitals: Vec<ClassHospital>,
    /// Rows of the test set.
    pub test_rows: usize,
    /// Training rows of all hospitals.
    pub pooled_rows: usize,
    /// The model trained in the clear on the pooled rows by the federation's
    /// own gradient steps, on the test set.
    pub pooled: Metrics,
}

fn parts(m: &Metrics) -> (f64, f64, f64) {
    match m {
        Metrics::Classification {
            log_loss,
            accuracy,
            auc,
            ..
        } => (*log_loss, *accuracy, *auc),
        Metrics::Regression { mse, .. } => (*mse, f64::NAN, f64::NAN),
    }
}

/// The test log-loss of `w`.
fn loss(test: &Dataset, w: &Array1<f64>) -> Result<f64> {
    Ok(parts(&Metrics::exact(ModelKind::Logistic, test.x(), test.y(), w)?).0)
}

/// Evaluates a logistic run on the test set (see [`crate::outcome::evaluate`]).
pub fn evaluate(
    split: &Split,
    twin: &ReferenceRun,
    objective: &Objective,
    reference: &ReferenceResult,
    federated_final: &[Array1<f64>],
) -> Result<ClassOutcome> {
    let test = &split.test;
    let exact = |w: &Array1<f64>| Metrics::exact(ModelKind::Logistic, test.x(), test.y(), w);
    let mut hospitals = Vec::new();
    for (i, h) in split.hospitals.iter().enumerate() {
        let start = match twin.mode {
            Mode::Seed => reference.local_weights[i].clone(),
            Mode::Global => Array1::zeros(h.n_features()),
        };
        let mut curve = vec![loss(test, &start)?];
        for r in &reference.weights_per_round {
            curve.push(loss(test, &r[i])?);
        }
        hospitals.push(ClassHospital {
            name: hospital_name(i),
            rows: h.n_rows(),
            positive_share: h.y().sum() / h.n_rows().max(1) as f64,
            local: exact(&reference.local_weights[i])?,
            federated: exact(&federated_final[i])?,
            loss_per_round: curve,
        });
    }
    let pooled = twin
        .pooled_for(objective, &split.hospitals)
        .context("the pooled cleartext reference")?;
    Ok(ClassOutcome {
        hospitals,
        test_rows: test.n_rows(),
        pooled_rows: pooled.pooled.n_rows(),
        pooled: exact(&pooled.weights)?,
    })
}

/// The table as printed: per hospital its case mix and the local-only and
/// federated accuracy and AUC; the pooled reference.
pub fn table(o: &ClassOutcome) -> String {
    let mut s = format!(
        "{:<12} {:>6} {:>9} {:>10} {:>9} {:>10} {:>9}\n",
        "hospital", "rows", "positive", "local acc", "local AUC", "fed. acc", "fed. AUC"
    );
    for h in &o.hospitals {
        let (_, la, lu) = parts(&h.local);
        let (_, fa, fu) = parts(&h.federated);
        s += &format!(
            "{:<12} {:>6} {:>8.1}% {:>9.1}% {:>9.3} {:>9.1}% {:>9.3}\n",
            h.name,
            h.rows,
            100.0 * h.positive_share,
            100.0 * la,
            lu,
            100.0 * fa,
            fu
        );
    }
    let (_, pa, pu) = parts(&o.pooled);
    s += &format!(
        "{:<12} {:>6} {:>9} {:>10} {:>9} {:>9.1}% {:>9.3}   reference: cleartext gradient \
         descent on the pooled rows\n",
        "pooled",
        o.pooled_rows,
        "",
        "",
        "",
        100.0 * pa,
        pu
    );
    s += &format!("test set: {} rows\n", o.test_rows);
    s
}

/// The test log-loss curves for the plot.
pub fn curves(o: &ClassOutcome) -> crate::plot::Curves<'_> {
    crate::plot::Curves {
        hospitals: o
            .hospitals
            .iter()
            .map(|h| {
                (
                    h.name.as_str(),
                    h.loss_per_round.as_slice(),
                    parts(&h.local).0,
                )
            })
            .collect(),
        pooled: parts(&o.pooled).0,
        loss: "test log-loss",
    }
}
