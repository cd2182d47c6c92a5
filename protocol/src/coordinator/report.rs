//! The end of a run: collecting each hospital's final report and the
//! [`RunResults`]. It does not own what a hospital chooses to share (its
//! policy does).

use super::*;

/// One hospital's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HospitalResult {
    /// Node name.
    pub name: String,
    /// Training rows it announced (0 if it never joined).
    pub rows: u64,
    /// Its final report, if it sent one.
    pub report: Option<Report>,
}

/// The outcome of a finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// The run.
    pub run_id: RunId,
    /// Its hyper-parameters.
    pub params: RunParams,
    /// The agreed schema.
    pub schema: Schema,
    /// Per hospital, roster order.
    pub hospitals: Vec<HospitalResult>,
    /// The model trained.
    pub model: ModelKind,
    /// Training rounds run (fewer than `params.rounds` when global training
    /// stopped at its tolerance).
    pub trained_rounds: u32,
    /// Whether training stopped at the tolerance.
    pub converged: bool,
    /// The standard scaling every hospital derived from the pooled
    /// statistics (`None`: the schema does not scale, or no schema).
    pub scaler: Option<Scaler>,
    /// The federated model's metrics on all hospitals' test rows together,
    /// from the evaluation step's pooled sums (`None`: no evaluation step, or
    /// no hospital has test rows).
    pub pooled_metrics: Option<Metrics>,
    /// Per step.
    pub rounds: Vec<RoundSummary>,
    /// Aggregates of all steps.
    pub history: Vec<AggregateRecord>,
}

impl CoordinatorMachine {
    pub(super) fn start_reporting(&mut self, now: Instant) {
        let expected: Vec<String> = self
            .config
            .roster
            .iter()
            .filter(|m| self.nodes[&m.name].state == NodeState::Active)
            .map(|m| m.name.clone())
            .collect();
        for name in &expected {
            self.send(name, self.next_round, Body::Finish);
        }
        self.phase = Phase::Reporting {
            deadline: now + self.config.round_timeout,
            expected,
            reports: BTreeMap::new(),
        };
    }

    pub(super) fn on_report(&mut self, from: &str, round: u32, r: Report) -> Result<()> {
        let n_features = self
            .schema
            .as_ref()
            .map(|s| s.feature_names.len())
            .unwrap_or(0);
        let steps = self.steps_done();
        let Phase::Reporting {
            expected, reports, ..
        } = &mut self.phase
        else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "report",
                why: "training is not over".into(),
            });
        };
        if round != steps {
            return Err(Error::StaleRound {
                peer: from.to_owned(),
                got: round,
                current: steps,
            });
        }
        if !expected.iter().any(|n| n == from) {
            return Err(Error::UnknownPeer {
                peer: from.to_owned(),
                role: "a participant at the end of training",
            });
        }
        let weights_ok = |w: &Option<Vec<f64>>| {
            w.as_ref()
                .is_none_or(|v| v.len() == n_features && v.iter().all(|x| x.is_finite()))
        };
        let mse_ok = |m: Option<f64>| m.is_none_or(|x| x.is_finite() && x >= 0.0);
        if !weights_ok(&r.weights) || !mse_ok(r.local_test_mse) || !mse_ok(r.federated_test_mse) {
            return Err(Error::InvalidMessage {
                peer: from.to_owned(),
                kind: "report",
                reason: format!(
                    "expected {n_features} finite weights (if any) and finite non-negative MSEs"
                ),
            });
        }
        reports.insert(from.to_owned(), r);
        if reports.len() == expected.len() {
            self.finish();
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) {
        let Phase::Reporting {
            expected,
            mut reports,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Finished)
        else {
            return;
        };
        let steps = self.steps_done();
        for name in &expected {
            self.send(name, steps, Body::Done);
        }
        let hospitals = self
            .config
            .roster
            .iter()
            .map(|m| HospitalResult {
                name: m.name.clone(),
                rows: self.nodes[&m.name].rows,
                report: reports.remove(&m.name),
            })
            .collect();
        let p = &self.config.params;
        let scaler = p
            .statistics
            .then(|| self.history.first())
            .flatten()
            .and_then(|r| self.preprocessor(r).ok())
            .and_then(|pre| pre.scaler);
        // The evaluation step is the last one, when the run has it.
        let pooled_metrics = self
            .history
            .last()
            .filter(|_| {
                self.summaries
                    .last()
                    .is_some_and(|s| s.step == StepKind::Evaluation)
            })
            .and_then(|r| Metrics::from_sums(p.model, &r.sum).ok().flatten());
        let cursor = self.cursor.as_ref().expect("a finished run has a plan");
        let results = RunResults {
            run_id: self.run_id.clone(),
            params: self.config.params.clone(),
            schema: self.schema.clone().expect("a finished run has a schema"),
            model: p.model,
            trained_rounds: cursor.trained(),
            converged: cursor.converged(),
            scaler,
            pooled_metrics,
            hospitals,
            rounds: self.summaries.clone(),
            history: self.history.clone(),
        };
        self.events
            .push_back(CoordinatorEvent::Finished(Box::new(results)));
    }

    /// The preprocessing every hospital derives from the statistics step's
    /// aggregate `r`.
    pub(super) fn preprocessor(&self, r: &AggregateRecord) -> learning::Result<Preprocessor> {
        let schema = self
            .config
            .consortium
            .as_ref()
            .ok_or(learning::Error::InvalidParameter {
                name: "statistics",
                reason: "the run has no consortium schema".into(),
            })?;
        Preprocessor::from_statistics(schema, &r.sum, r.n_total_rows)
    }
}
