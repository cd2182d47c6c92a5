//! What a hospital persists so that no crash, restart or replay makes it
//! release unmasking material for two member sets at one model state: its
//! commitments (model state -> member set), and the aggregates it applied in
//! its current run (a replayed history must match them).
//!
//! This module owns the format and the digests the commitments are keyed by;
//! the driver owns the file (written atomically, 0600, and durably before any
//! later message leaves when the machine asks for it).

use std::collections::BTreeMap;

use learning::ndarray::Array1;
use learning::Dataset;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::{AggregateRecord, RunId};

/// Version of the [`HospitalState`] format.
pub const STATE_VERSION: u32 = 1;

/// A member set this hospital committed to unmask for one model state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commitment {
    /// The committed set, ring order.
    pub members: Vec<String>,
    /// The masking set its contribution was masked for (a superset).
    pub masked_for: Vec<String>,
}

/// The hospital's persisted protocol state. Holds no secret: seeds are
/// re-derived from the mask key, which the driver keeps in its own file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HospitalState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The node's name.
    pub name: String,
    /// Commitments by model-state digest (hex), over every run.
    pub commitments: BTreeMap<String, Commitment>,
    /// The run this node last took part in and the aggregates it applied.
    pub run: Option<(RunId, Vec<AggregateRecord>)>,
}

impl HospitalState {
    /// An empty state for node `name`.
    pub fn new(name: impl Into<String>) -> HospitalState {
        HospitalState {
            version: STATE_VERSION,
            name: name.into(),
            commitments: BTreeMap::new(),
            run: None,
        }
    }
}

/// Digest of a hospital's training data, so that a model state is its data and
/// its weights together.
pub(crate) fn data_digest(d: &Dataset) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"private-training/data/v1");
    h.update((d.n_rows() as u64).to_be_bytes());
    h.update((d.n_features() as u64).to_be_bytes());
    for v in d.x().iter().chain(d.y().iter()) {
        h.update(v.to_bits().to_be_bytes());
    }
    h.finalize().into()
}

/// Digest of the model state a gradient is computed at: the data and the
/// weights, bit for bit. Two runs at the same state compute the same gradient,
/// so commitments are keyed by this, not by run or round.
pub(crate) fn model_state(data: &[u8; 32], weights: &Array1<f64>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"private-training/model-state/v1");
    h.update(data);
    for v in weights {
        h.update(v.to_bits().to_be_bytes());
    }
    h.finalize().into()
}

/// Digest of the state another step's contribution is a function of: a
/// label naming the function (step kind and model), digests of the data it
/// reads, and the weights. Domain-separated from [`model_state`], so no two
/// different functions share a commitment or a self-mask.
pub(crate) fn step_state(label: &str, data: &[&[u8; 32]], weights: &Array1<f64>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"private-training/step-state/v1");
    h.update((label.len() as u64).to_be_bytes());
    h.update(label.as_bytes());
    h.update((data.len() as u64).to_be_bytes());
    for d in data {
        h.update(d);
    }
    h.update((weights.len() as u64).to_be_bytes());
    for v in weights {
        h.update(v.to_bits().to_be_bytes());
    }
    h.finalize().into()
}

/// Digest of an aggregate history (pairwise seeds depend on it).
pub(crate) fn history_digest(history: &[AggregateRecord]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"private-training/history/v1");
    for r in history {
        h.update(r.round.to_be_bytes());
        h.update((r.sum.len() as u64).to_be_bytes());
        for v in &r.sum {
            h.update(v.to_bits().to_be_bytes());
        }
        h.update(r.n_hospitals.to_be_bytes());
        h.update(r.n_total_rows.to_be_bytes());
    }
    h.finalize().into()
}

fn names_digest(
    domain: &[u8],
    run_id: &RunId,
    round: u32,
    extra: u64,
    names: &[String],
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(domain);
    h.update((run_id.as_str().len() as u64).to_be_bytes());
    h.update(run_id.as_str().as_bytes());
    h.update(round.to_be_bytes());
    h.update(extra.to_be_bytes());
    for n in names {
        h.update((n.len() as u64).to_be_bytes());
        h.update(n.as_bytes());
    }
    h.finalize().to_vec()
}

/// Hash of one attempt's ring, as members confirm it to each other.
pub fn ring_hash(run_id: &RunId, round: u32, epoch: u64, ring: &[String]) -> Vec<u8> {
    names_digest(b"private-training/ring/v1", run_id, round, epoch, ring)
}

/// Hash of a committed member set, as members confirm it to each other; in
/// threshold runs with the digest of the sum they will decrypt
/// ([`crate::wire::sum_digest`]), so that members agree on it too.
/// The attempt (epoch) the sum is of is bound in with it.
pub fn set_hash(
    run_id: &RunId,
    round: u32,
    members: &[String],
    sum: Option<(u64, &[u8])>,
) -> Vec<u8> {
    let set = names_digest(b"private-training/unmask-set/v1", run_id, round, 0, members);
    match sum {
        None => set,
        Some((epoch, d)) => {
            let mut h = Sha256::new();
            h.update(b"private-training/unmask-set-and-sum/v1");
            h.update(&set);
            h.update(epoch.to_be_bytes());
            h.update((d.len() as u64).to_be_bytes());
            h.update(d);
            h.finalize().to_vec()
        }
    }
}

/// Lower-case hex of a digest (the commitment map's keys).
pub(crate) fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
