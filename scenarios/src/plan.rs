//! [`Plan`]: the checked settings of one scenario run, which the command
//! lines produce and everything downstream (the node configs, the federation,
//! the cleartext twin, `results.json`) reads. It depends on nothing else of
//! the crate but the split kinds.

use learning::Mode;
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
    /// Pairwise masks on.
    pub masks: bool,
    /// Gradient packing on.
    pub pack: bool,
    /// TEST FAULT INJECTION: the last hospital floods every recipient with
    /// this many junk frames per kind, at each kind's limit, after each of its
    /// messages (0: off).
    #[serde(skip_serializing_if = "is_zero")]
    pub flood: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Plan {
    /// The cleartext twin of this plan's federation.
    pub fn twin(&self) -> learning::ReferenceRun {
        learning::ReferenceRun {
            mode: self.mode,
            rounds: self.rounds,
            eta: self.eta,
        }
    }
}
