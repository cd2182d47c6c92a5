//! What a hospital itself insists on, whatever the coordinator says: the
//! consortium it belongs to, the smallest set it contributes to, whether masks
//! may be off, bounds on the run's hyper-parameters, and what it shares.
//!
//! This module owns the checks of coordinator-chosen values against that
//! policy (`Setup` parameters, ring and member sets); the machine calls them at
//! the boundary and refuses, naming what was wrong. It does not own the
//! persisted commitments (see [`super::state`]).

use std::collections::BTreeSet;

use crate::wire::RunParams;

/// The fewest members any set a hospital contributes to may have: with two,
/// each learns the other's gradient from the aggregate.
pub const MIN_RING: usize = 3;

/// [`HospitalPolicy::max_key_bits`] by default: twice NIST's 128-bit-security
/// modulus (3072 bits) would be 6144; 4096 leaves room above 3072.
pub const DEFAULT_MAX_KEY_BITS: usize = 4096;

/// A hospital's own privacy policy.
#[derive(Clone, Debug, PartialEq)]
pub struct HospitalPolicy {
    /// The consortium's hospitals in ring order (this node included). A ring or
    /// member set naming anyone else (the coordinator included) is refused.
    pub roster: Vec<String>,
    /// Fewest members of a ring or unmasked set (at least [`MIN_RING`]).
    pub min_ring: usize,
    /// Whether this hospital takes part in runs without masks (the classic
    /// ring: the coordinator colluding with a hospital's two ring neighbours
    /// learns its gradient). `false` by default; masks stay on unless every
    /// hospital's own policy allows them off.
    pub allow_unmasked: bool,
    /// Most rounds a run may have (each round releases one more aggregate).
    pub max_rounds: u32,
    /// Largest learning rate accepted.
    pub max_eta: f64,
    /// Largest Paillier modulus, in bits, of a run this hospital takes part
    /// in. It also sizes what the hospital accepts from its peers before it
    /// learns the run's key: a ring pass of an 8192-bit key is twice that of
    /// a 4096-bit one, and a hostile peer can send one at the limit.
    pub max_key_bits: usize,
    /// Whether per-round and final test metrics go to the coordinator
    /// (`false` by default: they are functions of this hospital's data).
    pub share_metrics: bool,
}

impl HospitalPolicy {
    /// The default policy for a consortium of `roster` (ring order).
    pub fn new(roster: Vec<String>) -> HospitalPolicy {
        HospitalPolicy {
            roster,
            min_ring: MIN_RING,
            allow_unmasked: false,
            max_rounds: 100_000,
            max_eta: 1_000.0,
            max_key_bits: DEFAULT_MAX_KEY_BITS,
            share_metrics: false,
        }
    }

    /// Checks the policy itself for the node `me` of a consortium whose
    /// coordinator is named `coordinator` (a config loader calls it so a bad
    /// policy is refused before any I/O; the machine calls it again).
    pub fn validate(&self, me: &str, coordinator: &str) -> Result<(), String> {
        if self.min_ring < MIN_RING {
            return Err(format!(
                "min_ring {} is below {MIN_RING}: with two hospitals each learns the other's \
                 gradient from the aggregate",
                self.min_ring
            ));
        }
        let mut seen = BTreeSet::new();
        for n in &self.roster {
            if n.is_empty() || n == coordinator || !seen.insert(n.as_str()) {
                return Err(format!(
                    "consortium roster entry {n:?} is empty, repeated or the coordinator"
                ));
            }
        }
        if !seen.contains(me) {
            return Err(format!(
                "the consortium roster does not name this node {me:?}"
            ));
        }
        if self.roster.len() < self.min_ring {
            return Err(format!(
                "the consortium roster has {} hospitals, fewer than min_ring {}",
                self.roster.len(),
                self.min_ring
            ));
        }
        if !(self.max_eta.is_finite() && self.max_eta > 0.0) {
            return Err(format!(
                "max_eta {} is not positive and finite",
                self.max_eta
            ));
        }
        Ok(())
    }

    /// Position of `name` in the consortium roster.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.roster.iter().position(|n| n == name)
    }

    /// Checks a coordinator-chosen set (a ring or a member set to unmask): only
    /// consortium hospitals, in roster order, each once, `me` among them, at
    /// least `min_ring` of them.
    pub(crate) fn check_set(&self, me: &str, set: &[String]) -> Result<(), String> {
        let mut last = None;
        for n in set {
            let Some(p) = self.position(n) else {
                return Err(format!("{n:?} is not a hospital of this consortium"));
            };
            if last.is_some_and(|l| p <= l) {
                return Err(format!(
                    "{n:?} is repeated or out of the consortium's ring order"
                ));
            }
            last = Some(p);
        }
        if !set.iter().any(|n| n == me) {
            return Err("it does not name this node".into());
        }
        if set.len() < self.min_ring {
            return Err(format!(
                "it has {} members, this hospital's policy requires at least {}",
                set.len(),
                self.min_ring
            ));
        }
        Ok(())
    }

    /// Checks the run's key size.
    pub(crate) fn check_key_bits(&self, bits: usize) -> Result<(), String> {
        if bits > self.max_key_bits {
            return Err(format!(
                "the run's Paillier key has {bits} bits, this hospital's policy allows at most {} \
                 (max_key_bits)",
                self.max_key_bits
            ));
        }
        Ok(())
    }

    /// Checks a run's hyper-parameters.
    pub(crate) fn check_params(&self, p: &RunParams) -> Result<(), String> {
        if !p.masks && !self.allow_unmasked {
            return Err("the run has masks off, which this hospital's policy forbids".into());
        }
        if p.rounds > self.max_rounds {
            return Err(format!(
                "the run has {} rounds, this hospital's policy allows at most {}",
                p.rounds, self.max_rounds
            ));
        }
        if !(p.eta.is_finite() && p.eta > 0.0 && p.eta <= self.max_eta) {
            return Err(format!(
                "eta {} is outside this hospital's policy (0, {}]",
                p.eta, self.max_eta
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HospitalPolicy {
        HospitalPolicy::new((1..=4).map(|i| format!("hospital-{i}")).collect())
    }

    fn set(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sets_must_be_consortium_members_in_order() {
        let p = policy();
        assert!(p
            .check_set(
                "hospital-1",
                &set(&["hospital-1", "hospital-2", "hospital-4"])
            )
            .is_ok());
        let e = p
            .check_set(
                "hospital-1",
                &set(&["hospital-1", "coordinator", "hospital-2"]),
            )
            .unwrap_err();
        assert!(e.contains("\"coordinator\" is not a hospital"), "{e}");
        let e = p
            .check_set("hospital-1", &set(&["hospital-1", "hospital-2"]))
            .unwrap_err();
        assert!(e.contains("at least 3"), "{e}");
        let e = p
            .check_set(
                "hospital-1",
                &set(&["hospital-2", "hospital-1", "hospital-3"]),
            )
            .unwrap_err();
        assert!(e.contains("order"), "{e}");
        let e = p
            .check_set(
                "hospital-1",
                &set(&["hospital-2", "hospital-3", "hospital-4"]),
            )
            .unwrap_err();
        assert!(e.contains("does not name this node"), "{e}");
    }

    #[test]
    fn the_policy_itself_is_checked() {
        let mut p = policy();
        assert!(p.validate("hospital-1", "coordinator").is_ok());
        assert!(p.validate("hospital-9", "coordinator").is_err());
        p.min_ring = 2;
        assert!(p
            .validate("hospital-1", "coordinator")
            .unwrap_err()
            .contains("min_ring"));
        let mut p = policy();
        p.roster.push("coordinator".into());
        assert!(p.validate("hospital-1", "coordinator").is_err());
    }
}
