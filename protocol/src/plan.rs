//! What each aggregation step of a run is, the same for both state machines:
//! the optional secure statistics step (per-column sums for the pooled
//! scaling and imputation), the training rounds (gradients; in `global` mode
//! they may stop early at the gradient-norm tolerance), and the optional
//! evaluation step (the sums of the pooled test metrics). Every step travels
//! the same masked, encrypted ring; this module only says which one comes
//! next, how long its vector is and how it is encoded.
//!
//! Steps are numbered on the wire (the envelope's `round`) from 0 over all
//! kinds; [`StepKind`] names what a number means. Both machines derive it from
//! the parameters and the aggregate history alone, so they agree without a
//! message, and a hospital refuses a history that does not fit.

use learning::ndarray::Array1;
use learning::{evaluation_len, Mode, ModelKind, Objective};
use serde::{Deserialize, Serialize};

use crate::wire::{AggregateRecord, FixedPoint, RunParams};

/// What one aggregation step computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum StepKind {
    /// Per-column count, sum and sum of squares of the raw training rows.
    Statistics,
    /// A gradient step; `index` is the 0-based training round.
    Training {
        /// 0-based training round.
        index: u32,
    },
    /// The evaluation sums of the federated model on every hospital's test rows.
    Evaluation,
}

impl StepKind {
    /// How a person reads it: "statistics", "round 3", "evaluation".
    pub fn describe(&self) -> String {
        match self {
            StepKind::Statistics => "the statistics step".into(),
            StepKind::Training { index } => format!("round {}", index + 1),
            StepKind::Evaluation => "the evaluation step".into(),
        }
    }
}

/// Fixed-point encoding of the statistics and evaluation sums: sums of
/// squares of raw values need far more integer room than gradients (|v| <
/// 2^62 = 4.6e18) while keeping a resolution of 2^-36 = 1.5e-11.
pub const WIDE_FIXED_POINT_BITS: (u32, u32) = (36, 62);

/// The shape a run's vectors take, from the data layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    params: RunParams,
    n_features: usize,
    statistics_len: usize,
    intercept: Option<usize>,
}

impl Plan {
    /// The plan of a run with `params` over data with `n_features` model
    /// features, `statistics_len` statistics values (3 per numeric column) and
    /// the intercept at `intercept`.
    pub fn new(
        params: &RunParams,
        n_features: usize,
        statistics_len: usize,
        intercept: Option<usize>,
    ) -> Plan {
        Plan {
            params: params.clone(),
            n_features,
            statistics_len,
            intercept,
        }
    }

    /// The run's parameters.
    pub fn params(&self) -> &RunParams {
        &self.params
    }

    /// What training optimizes.
    pub fn objective(&self) -> Objective {
        Objective {
            model: self.params.model,
            l2: self.params.l2,
            intercept: self.intercept,
            tolerance: self.params.tolerance,
        }
    }

    /// Values in a step's vector.
    pub fn vector_len(&self, kind: StepKind) -> usize {
        match kind {
            StepKind::Statistics => self.statistics_len,
            StepKind::Training { .. } => self.n_features,
            StepKind::Evaluation => evaluation_len(self.params.model),
        }
    }

    /// The encoding of a step's values.
    pub fn fixed_point(&self, kind: StepKind) -> FixedPoint {
        match kind {
            StepKind::Training { .. } => self.params.fixed_point,
            StepKind::Statistics | StepKind::Evaluation => FixedPoint {
                frac_bits: WIDE_FIXED_POINT_BITS.0,
                int_bits: WIDE_FIXED_POINT_BITS.1,
                max_addends: self.params.fixed_point.max_addends,
            },
        }
    }

    /// Steps at most: statistics, every round, evaluation.
    pub fn max_steps(&self) -> usize {
        self.params.statistics as usize
            + self.params.rounds as usize
            + self.params.evaluate as usize
    }

    /// A cursor at the start of the run.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            plan: self.clone(),
            steps: 0,
            trained: 0,
            converged: false,
            evaluated: false,
            weights: (self.params.mode == Mode::Global).then(|| Array1::zeros(self.n_features)),
            smallest: None,
            divergence: None,
        }
    }
}

/// How much the mean gradient's norm may grow over the smallest norm of the
/// run before `global` training is called diverging. On a convex, L-smooth
/// loss (every model here) gradient descent with `eta <= 2 / L` never lets
/// the norm grow (co-coercivity: `|g'|^2 <= |g|^2 - (2 / (eta L) - 1)|g - g'|^2`),
/// so growth means the step is too large; the factor leaves room for the
/// fixed-point encoding's rounding, which only matters near a norm of zero
/// (see [`DIVERGENCE_FLOOR`]).
pub const DIVERGENCE_FACTOR: f64 = 2.0;

/// Norms below this fraction of the first round's are never judged: there
/// the encoding's rounding, not the step, moves the norm.
pub const DIVERGENCE_FLOOR: f64 = 1e-6;

/// `global` training whose mean gradient's norm grew by more than
/// [`DIVERGENCE_FACTOR`]: the step is too large for these rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Divergence {
    /// 0-based training round of the smallest norm.
    pub from_round: u32,
    /// That norm.
    pub from_norm: f64,
    /// 0-based training round at which the growth was seen.
    pub round: u32,
    /// Its norm.
    pub norm: f64,
    /// The run's learning rate.
    pub eta: f64,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the model is diverging: the mean gradient's norm grew from {:.3e} at round {} to \
             {:.3e} at round {}, which gradient descent with a step below 2 / (the loss's \
             largest curvature) never does; eta {} is too large for these rows: lower eta, or \
             standardize the features (a schema with \"scale\": true) and leave eta unset for \
             a step that converges",
            self.from_norm,
            self.from_round + 1,
            self.norm,
            self.round + 1,
            self.eta
        )
    }
}

/// Where a run stands: how many steps of which kind are done and what comes
/// next. Advanced with each aggregate, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    plan: Plan,
    steps: usize,
    trained: u32,
    converged: bool,
    evaluated: bool,
    /// The shared `global` model, tracked to decide the early stop and to
    /// see divergence.
    weights: Option<Array1<f64>>,
    /// The smallest mean-gradient norm so far, its 0-based round, and the
    /// first round's norm (`global` mode).
    smallest: Option<(f64, u32, f64)>,
    /// Set once training is seen diverging.
    divergence: Option<Divergence>,
}

impl Cursor {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Steps done (the next step's wire number).
    pub fn steps(&self) -> u32 {
        self.steps as u32
    }

    /// Training rounds done.
    pub fn trained(&self) -> u32 {
        self.trained
    }

    /// Whether training stopped at the tolerance.
    pub fn converged(&self) -> bool {
        self.converged
    }

    /// Whether `global` training has been seen diverging (the run should
    /// stop with this as its reason).
    pub fn divergence(&self) -> Option<&Divergence> {
        self.divergence.as_ref()
    }

    /// The next step, `None` when the run is complete.
    pub fn next(&self) -> Option<StepKind> {
        let p = &self.plan.params;
        if p.statistics && self.steps == 0 {
            return Some(StepKind::Statistics);
        }
        if self.trained < p.rounds && !self.converged {
            return Some(StepKind::Training {
                index: self.trained,
            });
        }
        if p.evaluate && !self.evaluated {
            return Some(StepKind::Evaluation);
        }
        None
    }

    /// Takes the aggregate of the next step: checks that it is that step's
    /// (round number, vector length, finite values, a contributor) and moves
    /// on. Returns the step's kind.
    pub fn advance(&mut self, record: &AggregateRecord) -> Result<StepKind, String> {
        let kind = self
            .next()
            .ok_or_else(|| "an aggregate after the run's last step".to_string())?;
        let len = self.plan.vector_len(kind);
        if record.round as usize != self.steps
            || record.sum.len() != len
            || !record.sum.iter().all(|v| v.is_finite())
            || record.n_hospitals == 0
            || record.n_total_rows == 0
        {
            return Err(format!(
                "expected the aggregate of {} (step {}): {len} finite values from at least one hospital",
                kind.describe(),
                self.steps + 1
            ));
        }
        match kind {
            StepKind::Statistics => {}
            StepKind::Training { .. } => {
                if let Some(w) = &mut self.weights {
                    let obj = self.plan.objective();
                    let sum = Array1::from(record.sum.clone());
                    let rows = record.n_total_rows as usize;
                    let norm = obj.apply(
                        Mode::Global,
                        w,
                        &sum,
                        record.n_hospitals as usize,
                        rows,
                        self.plan.params.eta,
                    );
                    self.converged = obj.stops(Mode::Global, norm);
                    self.watch(norm);
                }
                self.trained += 1;
            }
            StepKind::Evaluation => self.evaluated = true,
        }
        self.steps += 1;
        Ok(kind)
    }
}

impl Cursor {
    /// Tracks the smallest norm of `global` training and sets
    /// [`Cursor::divergence`] when this round's grew past it.
    fn watch(&mut self, norm: f64) {
        let round = self.trained;
        let eta = self.plan.params.eta;
        match self.smallest {
            None => self.smallest = Some((norm, round, norm)),
            Some((min, min_round, first)) => {
                if norm < min {
                    self.smallest = Some((norm, round, first));
                } else if self.divergence.is_none()
                    && norm > DIVERGENCE_FACTOR * min
                    && norm > DIVERGENCE_FLOOR * first
                {
                    self.divergence = Some(Divergence {
                        from_round: min_round,
                        from_norm: min,
                        round,
                        norm,
                        eta,
                    });
                }
            }
        }
    }
}

/// An upper bound, in gradient-value units, on the values any step's vector
/// of a run with `n_features` features and `statistics_len` statistics may
/// hold, for sizing message limits before the model kind is known: the wide
/// encoding takes less than twice a gradient value's slot.
pub fn max_vector_values(n_features: usize, statistics_len: usize) -> usize {
    n_features
        .max(2 * statistics_len)
        .max(2 * evaluation_len(ModelKind::Logistic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RunParams {
        RunParams {
            statistics: true,
            evaluate: true,
            ..RunParams::new(Mode::Global, 3, 0.5)
        }
    }

    fn record(round: u32, sum: Vec<f64>) -> AggregateRecord {
        AggregateRecord {
            round,
            sum,
            n_hospitals: 3,
            n_total_rows: 10,
        }
    }

    #[test]
    fn steps_go_statistics_rounds_evaluation() {
        let plan = Plan::new(&params(), 2, 3, Some(1));
        let mut c = plan.cursor();
        assert_eq!(c.next(), Some(StepKind::Statistics));
        assert!(c.advance(&record(0, vec![1.0; 2])).is_err(), "wrong length");
        assert_eq!(
            c.advance(&record(0, vec![1.0; 3])),
            Ok(StepKind::Statistics)
        );
        for i in 0..3 {
            assert_eq!(c.next(), Some(StepKind::Training { index: i }));
            assert!(
                c.advance(&record(i + 2, vec![1.0; 2])).is_err(),
                "wrong round"
            );
            c.advance(&record(i + 1, vec![1.0; 2])).unwrap();
        }
        assert_eq!(c.next(), Some(StepKind::Evaluation));
        c.advance(&record(4, vec![0.0; 5])).unwrap();
        assert_eq!(c.next(), None);
        assert!(c.advance(&record(5, vec![0.0; 5])).is_err());
        assert_eq!(plan.max_steps(), 5);
    }

    #[test]
    fn global_training_stops_at_the_tolerance() {
        let mut p = params();
        p.statistics = false;
        p.evaluate = false;
        p.rounds = 10;
        p.tolerance = Some(0.5);
        let plan = Plan::new(&p, 2, 0, None);
        let mut c = plan.cursor();
        // Mean gradient norm 1.0 / 10 rows * 10 = 1.0: not yet.
        c.advance(&record(0, vec![10.0, 0.0])).unwrap();
        assert!(!c.converged());
        // 0.3: stop after this step.
        c.advance(&record(1, vec![3.0, 0.0])).unwrap();
        assert!(c.converged());
        assert_eq!(c.next(), None);
        assert_eq!(c.trained(), 2);
    }

    #[test]
    fn global_training_whose_gradient_grows_is_diverging() {
        let mut p = params();
        p.statistics = false;
        p.evaluate = false;
        p.rounds = 10;
        let plan = Plan::new(&p, 2, 0, None);
        let mut c = plan.cursor();
        // Norms 1.0, 0.5, 0.9 (below twice the smallest), then 1.2.
        for (i, g) in [10.0, 5.0, 9.0].into_iter().enumerate() {
            c.advance(&record(i as u32, vec![g, 0.0])).unwrap();
            assert_eq!(c.divergence(), None, "round {}", i + 1);
        }
        c.advance(&record(3, vec![12.0, 0.0])).unwrap();
        let d = *c.divergence().expect("diverging");
        assert_eq!((d.from_round, d.round), (1, 3));
        assert!((d.from_norm - 0.5).abs() < 1e-12 && (d.norm - 1.2).abs() < 1e-12);
        let text = d.to_string();
        assert!(
            text.contains("round 2") && text.contains("round 4"),
            "{text}"
        );
        assert!(text.contains("lower eta"), "{text}");
        // Seed mode tracks no shared model and judges nothing.
        p.mode = Mode::Seed;
        let mut c = Plan::new(&p, 2, 0, None).cursor();
        for (i, g) in [1.0, 100.0, 1e4].into_iter().enumerate() {
            c.advance(&record(i as u32, vec![g, 0.0])).unwrap();
        }
        assert_eq!(c.divergence(), None);
    }

    #[test]
    fn growth_near_zero_is_rounding_not_divergence() {
        let mut p = params();
        p.statistics = false;
        p.evaluate = false;
        p.rounds = 10;
        let mut c = Plan::new(&p, 2, 0, None).cursor();
        c.advance(&record(0, vec![10.0, 0.0])).unwrap();
        c.advance(&record(1, vec![1e-7, 0.0])).unwrap();
        c.advance(&record(2, vec![5e-7, 0.0])).unwrap();
        assert_eq!(c.divergence(), None);
    }
}
