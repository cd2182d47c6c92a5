//! [`Plan`]: the checked settings of one scenario run, which the command
//! lines produce and everything downstream (the node configs, the federation,
//! the cleartext twin, `results.json`) reads. It depends on nothing else of
//! the crate but the split kinds.

use hospital_node::config::Transport;
use learning::{Mode, ModelKind, Objective};
use serde::Serialize;

use crate::prep::SplitKind;

/// Checked settings of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Where the data came from.
    pub data: String,
    /// Hospitals.
    pub hospitals: usize,
    /// Rounds.
    pub rounds: usize,
    /// Learning rate.
    pub eta: f64,
    /// Key size.
    pub key_bits: usize,
    /// Split seed.
    pub seed: u32,
    /// Split kind.
    pub split: SplitKind,
    /// Mode.
    pub mode: Mode,
    /// Test rows (resolved).
    pub test_size: Option<usize>,
    /// Whether --data features were scaled.
    pub scaled: bool,
    /// Who scales the features.
    pub scaling: Scaling,
    /// The model trained.
    pub model: ModelKind,
    /// Its L2 penalty.
    pub l2: f64,
    /// Global mode's early stop on the mean gradient's norm.
    pub tolerance: Option<f64>,
    /// Whether the run ends with the secure evaluation step.
    pub evaluate: bool,
    /// Pairwise masks on.
    pub masks: bool,
    /// Gradient packing on.
    pub pack: bool,
    /// How the hospitals' ring messages travel.
    pub transport: Transport,
    /// TEST FAULT INJECTION: the last hospital floods every recipient with
    /// this many junk frames per kind, at each kind's limit, after each of its
    /// messages (0: off).
    #[serde(skip_serializing_if = "is_zero")]
    pub flood: u32,
    /// Decrypt with a t-of-n threshold key dealt to the hospitals before the
    /// run (`Some(t)`), instead of the coordinator's own key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Who standardizes the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Nobody: the rows are used as they are (the built-in data come
    /// pre-scaled; `--no-scale`).
    None,
    /// The federation, from the securely aggregated statistics of the
    /// hospitals' training rows: what a real consortium can do.
    Federated,
    /// The launcher, on the whole file before it is split: a reproduction
    /// aid (python-paillier's example with current scikit-learn) that no
    /// real consortium could use, since nobody holds the pooled rows.
    Pooled,
}

impl Plan {
    /// What the federation optimizes, with the intercept at `intercept`.
    pub fn objective(&self, intercept: Option<usize>) -> Objective {
        Objective {
            model: self.model,
            l2: self.l2,
            intercept,
            tolerance: self.tolerance,
        }
    }

    /// The cleartext twin of this plan's federation.
    pub fn twin(&self) -> learning::ReferenceRun {
        learning::ReferenceRun {
            mode: self.mode,
            rounds: self.rounds,
            eta: self.eta,
        }
    }
}
