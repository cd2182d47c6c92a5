//! The coordinator's side of the run's key: the Paillier private key it holds
//! (the default), or the public part of a threshold key whose shares the
//! hospitals hold, so that the coordinator alone decrypts nothing.
//!
//! This module owns the mapping from hospital names to party indices and
//! the checks that a threshold key fits the roster; the decryption rules of
//! the round live in `round.rs`, the mathematics in `paillier::threshold`.

use std::collections::BTreeSet;

use paillier::threshold::ThresholdKey;
use paillier::{PrivateKey, PublicKey};

use crate::error::{Error, Result};

/// The key a run's sums are decrypted with.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunKey {
    /// The coordinator holds the private key (shared with the decryptions
    /// the driver runs on another thread, see
    /// [`CoordinatorMachine::poll_work`](super::CoordinatorMachine::poll_work)).
    Private(std::sync::Arc<PrivateKey>),
    /// A t-of-n threshold key: the coordinator combines `t` hospitals'
    /// verified partial decryptions.
    Threshold(ThresholdRun),
}

impl From<PrivateKey> for RunKey {
    fn from(sk: PrivateKey) -> RunKey {
        RunKey::Private(std::sync::Arc::new(sk))
    }
}

impl From<ThresholdRun> for RunKey {
    fn from(t: ThresholdRun) -> RunKey {
        RunKey::Threshold(t)
    }
}

impl RunKey {
    /// The Paillier public key hospitals encrypt under.
    pub fn public_key(&self) -> &PublicKey {
        match self {
            RunKey::Private(sk) => sk.public_key(),
            RunKey::Threshold(t) => t.key.public_key(),
        }
    }

    /// The threshold key, in a threshold run.
    pub fn threshold(&self) -> Option<&ThresholdRun> {
        match self {
            RunKey::Threshold(t) => Some(t),
            RunKey::Private(_) => None,
        }
    }
}

/// A threshold key with the hospital that holds each party's share.
/// Existence means: one distinct name per party, in party order.
#[derive(Debug, Clone)]
pub struct ThresholdRun {
    key: ThresholdKey,
    parties: Vec<String>,
}

impl ThresholdRun {
    /// `parties[i]` holds the share of party `i + 1` (the key ceremony's
    /// public file lists them in that order).
    pub fn new(key: ThresholdKey, parties: Vec<String>) -> Result<ThresholdRun> {
        if parties.len() != key.parties() as usize {
            return Err(Error::Config(format!(
                "the threshold key has {} parties, but {} hospitals are named for them",
                key.parties(),
                parties.len()
            )));
        }
        let mut seen = BTreeSet::new();
        if let Some(p) = parties.iter().find(|p| !seen.insert(p.as_str())) {
            return Err(Error::Config(format!(
                "{p:?} is named for two parties of the threshold key"
            )));
        }
        Ok(ThresholdRun { key, parties })
    }

    /// The public threshold key.
    pub fn key(&self) -> &ThresholdKey {
        &self.key
    }

    /// Partial decryptions needed, `t`.
    pub fn threshold(&self) -> u32 {
        self.key.threshold()
    }

    /// The hospitals in party order.
    pub fn parties(&self) -> &[String] {
        &self.parties
    }

    /// Party index (1-based) of `hospital`.
    pub fn index_of(&self, hospital: &str) -> Option<u32> {
        self.parties
            .iter()
            .position(|p| p == hospital)
            .map(|i| i as u32 + 1)
    }
}
