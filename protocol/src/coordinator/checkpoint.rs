//! What survives a coordinator restart: the [`Checkpoint`] a machine emits after
//! every completed round (before that round's aggregate goes out) and resuming
//! from it. It does not own writing it to disk (the driver does).

use super::*;

/// Everything needed to resume a run after the coordinator stopped; emitted after
/// every completed round. Holds no secret: the private key is referenced by its
/// fingerprint and loaded separately.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// The run.
    pub run_id: RunId,
    /// Its hyper-parameters.
    pub params: RunParams,
    /// Roster names in ring order.
    pub roster: Vec<String>,
    /// Fingerprint of the run's public key.
    pub key_fingerprint: KeyFingerprint,
    /// The agreed schema.
    pub schema: Schema,
    /// How many times the coordinator was (re)started; keeps mask epochs unique.
    pub incarnation: u32,
    /// First round not yet completed.
    pub next_round: u32,
    /// Aggregates of the completed rounds; hospitals replay them to restore weights.
    pub history: Vec<AggregateRecord>,
    /// Per-round summaries of the completed rounds.
    pub rounds: Vec<RoundSummary>,
    /// The member set `next_round` was asked to unmask, if it was: a resumed
    /// coordinator can complete that round with this set only.
    #[serde(default)]
    pub committed: Option<Vec<String>>,
    /// Set by the driver once the run finished and its results were written;
    /// such a checkpoint is not resumed (there is nothing left to do).
    #[serde(default)]
    pub finished: bool,
}

impl CoordinatorMachine {
    /// A coordinator continuing the run saved in `checkpoint`. The configuration's
    /// roster and hyper-parameters must match the checkpoint's, and the key its
    /// fingerprint; timeouts and addresses may differ. Hospitals that say hello
    /// get the aggregate history and recompute their weights, so the run ends with
    /// the same model as an uninterrupted one.
    pub fn resume(
        config: CoordinatorConfig,
        key: impl Into<RunKey>,
        checkpoint: Checkpoint,
        now: Instant,
    ) -> Result<CoordinatorMachine> {
        let private_key = key.into();
        validate_config(&config, &private_key)?;
        let cp = checkpoint;
        if cp.finished {
            return Err(Error::CheckpointMismatch(format!(
                "run {} finished; there is nothing to resume",
                cp.run_id
            )));
        }
        if cp.version != CHECKPOINT_VERSION {
            return Err(Error::CheckpointMismatch(format!(
                "format version {} (this build reads {CHECKPOINT_VERSION})",
                cp.version
            )));
        }
        let fp = private_key.public_key().fingerprint();
        if cp.key_fingerprint != fp {
            return Err(Error::CheckpointMismatch(format!(
                "it was made with key {}, the loaded key is {fp}",
                cp.key_fingerprint
            )));
        }
        if cp.params != config.params {
            return Err(Error::CheckpointMismatch(format!(
                "hyper-parameters {:?} differ from the configuration's {:?}",
                cp.params, config.params
            )));
        }
        let roster: Vec<String> = config.roster.iter().map(|m| m.name.clone()).collect();
        if cp.roster != roster {
            return Err(Error::CheckpointMismatch(format!(
                "roster {:?} differs from the configuration's {roster:?}",
                cp.roster
            )));
        }
        if cp.history.len() != cp.next_round as usize {
            return Err(Error::CheckpointMismatch(format!(
                "history of {} steps is inconsistent with next step {}",
                cp.history.len(),
                cp.next_round + 1
            )));
        }
        let mut m = Self::build(config, cp.run_id.clone(), private_key, now);
        // The history must be the run's plan, step by step.
        let mut cursor = m.plan(cp.schema.feature_names.len()).cursor();
        for (i, r) in cp.history.iter().enumerate() {
            cursor
                .advance(r)
                .map_err(|e| Error::CheckpointMismatch(format!("history entry {}: {e}", i + 1)))?;
        }
        m.cursor = Some(cursor);
        m.schema = Some(cp.schema);
        m.incarnation = cp
            .incarnation
            .checked_add(1)
            .ok_or_else(|| Error::CheckpointMismatch("incarnation counter exhausted".into()))?;
        m.next_round = cp.next_round;
        m.history = cp.history;
        m.summaries = cp.rounds;
        m.committed = cp.committed;
        Ok(m)
    }

    /// The state to persist now (also emitted as an event after every round).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            run_id: self.run_id.clone(),
            params: self.config.params.clone(),
            roster: self.config.roster.iter().map(|m| m.name.clone()).collect(),
            key_fingerprint: self.sk.public_key().fingerprint(),
            schema: self.schema.clone().unwrap_or_else(|| Schema {
                feature_names: Vec::new(),
                target_name: String::new(),
            }),
            incarnation: self.incarnation,
            next_round: self.next_round,
            history: self.history.clone(),
            rounds: self.summaries.clone(),
            committed: self.committed.clone(),
            finished: false,
        }
    }
}
