//! A hospital's state machine: joining, its own policy checks, ring
//! confirmation and pairwise seeds, its masked contribution, the commitment to
//! one member set per model state, the model step and the final report, with
//! no I/O.
//!
//! # How to call it (as quinn-proto's `Connection`)
//!
//! Four kinds of methods: getters ([`name`](HospitalMachine::name),
//! [`weights`](HospitalMachine::weights), ...), handlers named `handle_*` and
//! `peer_*` that feed it input, and `poll_*` that drain its output. After
//! every handler call, drain [`poll_event`](HospitalMachine::poll_event)
//! first, then [`poll_transmit`](HospitalMachine::poll_transmit): a
//! [`HospitalEvent::Persist`] with `sync: true` must be durable before any
//! transmit polled after it is sent (the commitment must survive a crash
//! before anything that relies on it leaves), and a
//! [`HospitalEvent::RingChanged`] tells the driver whom it will send to.
//! Hospitals keep no timers; [`next_deadline`](HospitalMachine::next_deadline)
//! is always `None`.
//!
//! # What it enforces (see the README's threat model)
//!
//! - Its own [`HospitalPolicy`]: a `Setup` with masks off, too many rounds or
//!   an out-of-bounds learning rate, and a ring or member set that names anyone
//!   outside the consortium (the coordinator included), is out of roster order
//!   or smaller than `min_ring`, are refused with an error naming what was
//!   wrong.
//! - Ring confirmation: every member of an attempt sends every other a
//!   [`PeerRound`] carrying the hash of the ring it was given; nothing leaves
//!   for the ring before all confirmed the same ring.
//! - One member set per model state: the contribution is masked with a
//!   self-mask derived from the mask key and the model state, plus pairwise
//!   masks fixed for the round. Unmasking material (the self-mask seed and the
//!   seeds with members outside the set) is released only for a set this node
//!   committed to, persisted durably first, keyed by the model state's digest
//!   (so another run or a replayed round at the same weights is bound by it
//!   too), and only after every member of the set confirmed the same set. Any
//!   other set is refused, naming the committed one.
//! - A replayed history must match the aggregates this node applied.
//! - Nothing derived from its data alone leaves: the report carries weights
//!   only in `global` mode and test metrics only when the policy shares them.

mod policy;
pub(crate) mod state;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use learning::ndarray::Array1;
use learning::schema::local_statistics;
use learning::{
    local_evaluation, ConsortiumSchema, Dataset, Metrics, Mode, ModelFile, ModelKind, Objective,
    Preprocessor, RawTable, TrainingInfo,
};
use paillier::{Ciphertext, PublicKey};

pub use policy::{HospitalPolicy, DEFAULT_MAX_KEY_BITS, MIN_RING};
pub use state::{ring_hash, set_hash, Commitment, HospitalState, STATE_VERSION};

use crate::codec::GradientCodec;
use crate::coordinator::DEFAULT_COORDINATOR_NAME;
use crate::error::{Error, Result};
use crate::masks::{pair_seed, self_seed, MaskSet, Seed, SEED_BYTES};
use crate::plan::{Cursor, Plan, StepKind};
use crate::wire::{
    Abort, Aggregate, AggregateRecord, Body, Bytes, Envelope, Hello, PeerCommit, PeerRound, Report,
    Reveal, RevealedSeed, RingPass, RoundAck, RoundStart, RunId, RunParams, Setup, Unmask,
};

/// Most messages held back because they arrived before what they depend on.
const MAX_DEFERRED: usize = 64;
/// Bytes held back in deferred messages: this many ring passes at the largest
/// size a ring peer may send (see [`deferred_budget`]).
const DEFERRED_RING_PASSES: usize = 4;

/// What a hospital that cannot take part (its data did not load, say) sends
/// the coordinator instead of its hello: a deterministic abort under the
/// pre-run id, so the coordinator stops waiting for it and can say why. The
/// reason is the hospital's own error, cut at
/// [`crate::coordinator::MAX_WITHDRAW_REASON`] bytes; it must name files,
/// columns and kinds of error, never a value of the data.
pub fn withdrawal(name: &str, coordinator_bound_reason: &str) -> Envelope {
    let mut reason = coordinator_bound_reason.to_owned();
    if reason.len() > crate::coordinator::MAX_WITHDRAW_REASON {
        let mut end = crate::coordinator::MAX_WITHDRAW_REASON - 3;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    Envelope::new(
        RunId::none(),
        0,
        name.to_owned(),
        Body::Abort(Abort {
            epoch: 0,
            reason,
            dropped: Vec::new(),
            committed: None,
            deterministic: true,
        }),
    )
}

/// What messages of a run look like to a hospital with `features` features
/// under `policy`: its roster, its bound on rounds, and the largest key the
/// paillier crate accepts (the key is the coordinator's choice).
/// `features` bounds every step's vector (see [`crate::plan::max_vector_values`]).
pub fn run_shape(policy: &HospitalPolicy, features: usize) -> crate::limits::RunShape {
    crate::limits::RunShape {
        key_bits: policy.max_key_bits.min(paillier::MAX_KEY_BITS),
        features,
        hospitals: policy.roster.len(),
        rounds: policy.max_rounds,
    }
}

/// What a hospital accepts, per sender: its coordinator's kinds from the
/// coordinator, ring peers' kinds from everyone else, each within
/// `max_message_bytes`.
pub fn inbound_limits(
    coordinator: &str,
    policy: &HospitalPolicy,
    features: usize,
    max_message_bytes: usize,
) -> crate::limits::PeerLimits {
    use crate::limits::{Limits, PeerLimits};
    let shape = run_shape(policy, features);
    PeerLimits::new(Limits::hospital_to_hospital(&shape).capped(max_message_bytes)).with(
        coordinator,
        Limits::coordinator_to_hospital(&shape).capped(max_message_bytes),
    )
}

/// Bytes of deferred messages a hospital with `features` features holds at
/// most: [`DEFERRED_RING_PASSES`] ring passes at the size limit of its peers.
pub fn deferred_budget(policy: &HospitalPolicy, features: usize) -> usize {
    let shape = run_shape(policy, features);
    crate::limits::Limits::hospital_to_hospital(&shape)
        .max_bytes(crate::wire::Kind::RingPass)
        .saturating_mul(DEFERRED_RING_PASSES)
}

/// Bytes an envelope holds in memory, roughly (its vectors and a fixed part).
fn held_bytes(env: &Envelope) -> usize {
    256 + match &env.body {
        Body::RingPass(p) => p.ciphertexts.iter().map(|c| c.0.len() + 24).sum(),
        Body::PeerRound(p) => p.ring_hash.0.len() + p.seed.0.len(),
        Body::PeerCommit(p) => p.set_hash.0.len(),
        _ => 0,
    }
}

/// Configuration of a hospital node.
#[derive(Clone, Debug)]
pub struct HospitalConfig {
    /// This node's name (its certificate's name).
    pub name: String,
    /// The coordinator's node name, [`DEFAULT_COORDINATOR_NAME`] by default.
    pub coordinator: String,
    /// Address where peers reach this node, announced in the hello (None: the
    /// coordinator's roster address is used).
    pub address: Option<String>,
    /// This hospital's own policy.
    pub policy: HospitalPolicy,
    /// INSECURE, tests only: accept public keys below `paillier::MIN_KEY_BITS`
    /// from the coordinator. `false` by default; has an effect only when the
    /// crate's `hazmat-insecure-small-keys` feature is on.
    pub dangerous_accept_small_test_keys: bool,
    /// This hospital's share of the consortium's threshold key, if the
    /// consortium has one. A hospital with a share takes part only in runs
    /// under that key (a `Setup` with another key is refused), and gives a
    /// partial decryption only of the sum its member set agreed on.
    pub key_share: Option<std::sync::Arc<paillier::threshold::KeyShare>>,
}

impl HospitalConfig {
    /// A configuration with the default coordinator name and the default
    /// policy for the consortium `roster` (hospital names, ring order).
    pub fn new(name: impl Into<String>, roster: Vec<String>) -> HospitalConfig {
        HospitalConfig {
            name: name.into(),
            coordinator: DEFAULT_COORDINATOR_NAME.to_owned(),
            address: None,
            policy: HospitalPolicy::new(roster),
            dangerous_accept_small_test_keys: false,
            key_share: None,
        }
    }
}

/// What the cached local-only model was trained for.
type LocalKey = (Mode, u32, u64, ModelKind, u64, Option<u64>);

/// Something the driver should know about.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum HospitalEvent {
    /// The coordinator set this node up (again) for a run.
    SetUp {
        /// The run.
        run_id: RunId,
        /// Rounds already completed (replayed from the history).
        completed_rounds: u32,
    },
    /// A round attempt uses this ring; make sure connections to these peers
    /// exist (direct mode) or that the round's relay seal does (relay mode).
    RingChanged {
        /// The run.
        run_id: RunId,
        /// The round.
        round: u32,
        /// Mask epoch.
        epoch: u64,
        /// The ring, head first (includes this node), with addresses.
        ring: Vec<crate::wire::Member>,
    },
    /// Write this state (atomically, mode 0600). When `sync`, it must be
    /// durable (fsynced) before any transmit polled after this event is sent.
    Persist {
        /// The state to write.
        state: Box<HospitalState>,
        /// Whether later transmits depend on it being durable.
        sync: bool,
    },
    /// The statistics step completed: the data are scaled and imputed with
    /// the pooled statistics.
    Prepared {
        /// The preprocessing every node of the run derived.
        preprocessor: Box<Preprocessor>,
    },
    /// The evaluation step completed.
    Evaluated {
        /// The pooled test metrics of the federated model (None: no test rows).
        pooled: Option<Metrics>,
    },
    /// A training round completed and the step was taken.
    RoundCompleted {
        /// The training round (0-based).
        round: u32,
        /// Weights after the step.
        weights: Vec<f64>,
        /// Test MSE after the step (if there is a test set).
        test_mse: Option<f64>,
    },
    /// The coordinator abandoned a round attempt.
    RoundAborted {
        /// The round.
        round: u32,
        /// Why.
        reason: String,
    },
    /// The coordinator dropped this node; it asked to rejoin.
    Dropped {
        /// Why.
        reason: String,
    },
    /// The run is complete; this node's own full report (it keeps it: what
    /// went to the coordinator is the reduced [`Report`]).
    Finished(LocalReport),
    /// The coordinator stopped the run.
    Failed(Error),
}

/// This node's own end-of-run record, for its local report file: everything,
/// including what never leaves the node.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalReport {
    /// Weights of the local-only model.
    pub local_weights: Vec<f64>,
    /// Weights of the federated model.
    pub weights: Vec<f64>,
    /// Test MSE of the local-only model, when there is a test set.
    pub local_test_mse: Option<f64>,
    /// Test MSE of the federated model, when there is a test set.
    pub federated_test_mse: Option<f64>,
    /// Test metrics of the local-only model on this node's test rows.
    pub local_metrics: Option<Metrics>,
    /// Test metrics of the federated model on this node's test rows.
    pub federated_metrics: Option<Metrics>,
    /// The pooled test metrics of the federated model (evaluation step).
    pub pooled_metrics: Option<Metrics>,
    /// The trained model, as its file.
    pub model: ModelFile,
}

#[derive(Debug)]
struct RunState {
    run_id: RunId,
    params: RunParams,
    pk: PublicKey,
    /// The codec of the next step.
    codec: GradientCodec,
    cursor: Cursor,
    objective: Objective,
    local_weights: Array1<f64>,
    weights: Array1<f64>,
    history: Vec<AggregateRecord>,
    pooled_metrics: Option<Metrics>,
    /// Members of the last training round this node took part in.
    members: Vec<String>,
}

/// The model's data, once preprocessed.
#[derive(Clone, Debug)]
struct Prepared {
    preprocessor: Preprocessor,
    train: Dataset,
    test: Option<Dataset>,
}

/// The codec of `kind` in `plan` under `pk`.
fn codec_for(pk: &PublicKey, plan: &Plan, kind: StepKind) -> Result<GradientCodec> {
    GradientCodec::new(
        pk,
        plan.fixed_point(kind),
        plan.params().pack,
        plan.vector_len(kind),
    )
}

impl RunState {
    fn completed(&self) -> u32 {
        self.history.len() as u32
    }
}

/// One attempt of the current round.
struct Attempt {
    epoch: u64,
    names: Vec<String>,
    ring_hash: Vec<u8>,
    confirmed: BTreeSet<String>,
    incoming: Option<Vec<Ciphertext>>,
    /// This node's contribution, encrypted ahead, with the masking set it
    /// was masked for.
    own: Option<(Vec<String>, Vec<Ciphertext>)>,
    sent: bool,
    /// The tail only: [`crate::wire::sum_digest`] of the sum it sent the
    /// coordinator, which it vouches for in its commit hash.
    sent_digest: Option<Vec<u8>>,
}

/// The latest `Unmask` this node committed for, as it confirms it to the
/// other members.
struct UnmaskRequest {
    /// The attempt it is for.
    epoch: u64,
    /// Threshold runs: the digest of the sum to decrypt.
    digest: Option<Vec<u8>>,
    /// The commit hash sent in `PeerCommit` (binding the set, and in
    /// threshold runs the epoch and digest).
    hash: Vec<u8>,
}

/// The current round: what holds across its attempts.
struct RoundState {
    round: u32,
    /// Digest of the model state this round's gradient is computed at.
    state: [u8; 32],
    /// Pairwise seeds of this round, drawn or received, by peer.
    seeds: BTreeMap<String, Seed>,
    /// The masking set, fixed once this node's contribution was computed.
    masked_for: Option<Vec<String>>,
    /// The committed member set (also persisted).
    committed: Option<Vec<String>>,
    /// Set hashes other members committed to.
    peer_commits: BTreeMap<String, Vec<u8>>,
    /// Whether the reveal for the latest `Unmask` went out.
    revealed: bool,
    /// The latest `Unmask` this node committed for.
    unmask: Option<UnmaskRequest>,
    /// Threshold runs: the attempt and sum digest every member of the set
    /// agreed on before this node revealed: the one sum it decrypts.
    agreed: Option<(u64, Vec<u8>)>,
    /// Its partial decryption of that sum, re-sent byte for byte if asked again.
    partial: Option<(Vec<u8>, crate::wire::Partial)>,
    attempt: Option<Attempt>,
}

/// A hospital's protocol state machine.
pub struct HospitalMachine {
    config: HospitalConfig,
    /// The consortium schema (`None`: columns used as given).
    consortium: Option<ConsortiumSchema>,
    /// The schema the data are read with (the consortium's, or "as given").
    schema: ConsortiumSchema,
    /// The raw training and test rows, kept only while the statistics step
    /// needs them (the schema scales or imputes); otherwise the prepared rows
    /// are the only copy.
    raw: Option<(RawTable, Option<RawTable>)>,
    /// Training rows.
    rows: u64,
    /// The model's data: from the start without statistics, after the
    /// statistics step with them.
    prepared: Option<Prepared>,
    data: [u8; 32],
    test_digest: [u8; 32],
    mask_key: Seed,
    /// Local-only model, cached by (mode, rounds, eta, model, l2, tolerance).
    local_cache: Option<(LocalKey, Array1<f64>)>,
    persisted: HospitalState,
    run: Option<RunState>,
    round: Option<RoundState>,
    deferred: VecDeque<(String, Envelope)>,
    report_sent: Option<LocalReport>,
    /// Latest peak RSS the driver measured; goes into the report.
    peak_rss_bytes: Option<u64>,
    finished: bool,
    transmits: VecDeque<(String, Envelope)>,
    events: VecDeque<HospitalEvent>,
}

impl std::fmt::Debug for HospitalMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The mask key and the round's seeds are secrets: never printed.
        f.debug_struct("HospitalMachine")
            .field("name", &self.config.name)
            .field("run", &self.run.as_ref().map(|r| r.run_id.as_str()))
            .field("completed_rounds", &self.completed_rounds())
            .field("round", &self.round.as_ref().map(|r| r.round))
            .field("commitments", &self.persisted.commitments.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl HospitalMachine {
    /// A hospital with its training data, optional test data, its secret mask
    /// key (32 random bytes the driver keeps in a 0600 file: the same key must
    /// come back after a restart) and the state it persisted last (`None` on
    /// first start).
    pub fn new(
        config: HospitalConfig,
        train: Dataset,
        test: Option<Dataset>,
        mask_key: [u8; SEED_BYTES],
        persisted: Option<HospitalState>,
    ) -> Result<HospitalMachine> {
        if let Some(t) = &test {
            if t.schema() != train.schema() {
                return Err(Error::Config(format!(
                    "{}: the test set's columns differ from the training set's",
                    config.name
                )));
            }
        }
        let schema = ConsortiumSchema::as_given(train.feature_names(), train.target_name())
            .map_err(|e| Error::Config(format!("{}: {e}", config.name)))?;
        let data = state::data_digest(&train);
        let test_digest = test.as_ref().map_or([0; 32], state::data_digest);
        // The data sets move into the prepared form: used as given.
        let prepared = Prepared {
            preprocessor: Preprocessor::without_statistics(&schema)
                .map_err(|e| Error::Config(e.to_string()))?,
            train,
            test,
        };
        Self::build(
            config,
            None,
            schema,
            None,
            Some(prepared),
            (data, test_digest),
            mask_key,
            persisted,
        )
    }

    /// A hospital whose data follow the consortium `schema`: its raw training
    /// rows, optional raw test rows, its mask key and persisted state (see
    /// [`HospitalMachine::new`]). When the schema scales or imputes, the rows
    /// are preprocessed after the run's statistics step.
    pub fn with_schema(
        config: HospitalConfig,
        schema: ConsortiumSchema,
        train: RawTable,
        test: Option<RawTable>,
        mask_key: [u8; SEED_BYTES],
        persisted: Option<HospitalState>,
    ) -> Result<HospitalMachine> {
        let prepared = if schema.needs_statistics() {
            None
        } else {
            let pre = Preprocessor::without_statistics(&schema)
                .map_err(|e| Error::Config(e.to_string()))?;
            Some(prepare(&config.name, &schema, pre, &train, test.as_ref())?)
        };
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(schema.hash());
        h.update(train.digest());
        let data: [u8; 32] = h.finalize().into();
        let test_digest = test.as_ref().map_or([0; 32], RawTable::digest);
        // Raw rows are kept only for the statistics step.
        let raw = prepared.is_none().then_some((train, test));
        Self::build(
            config,
            Some(schema.clone()),
            schema,
            raw,
            prepared,
            (data, test_digest),
            mask_key,
            persisted,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        config: HospitalConfig,
        consortium: Option<ConsortiumSchema>,
        schema: ConsortiumSchema,
        raw: Option<(RawTable, Option<RawTable>)>,
        prepared: Option<Prepared>,
        (data, test_digest): ([u8; 32], [u8; 32]),
        mask_key: [u8; SEED_BYTES],
        persisted: Option<HospitalState>,
    ) -> Result<HospitalMachine> {
        if config.name.is_empty() || config.name == config.coordinator {
            return Err(Error::Config(format!(
                "hospital name {:?} is empty or the coordinator's",
                config.name
            )));
        }
        config
            .policy
            .validate(&config.name, &config.coordinator)
            .map_err(|e| Error::Config(format!("{}: {e}", config.name)))?;
        let rows = match (&prepared, &raw) {
            (Some(p), _) => p.train.n_rows(),
            (None, Some((t, _))) => t.n_rows(),
            (None, None) => 0,
        };
        if rows == 0 {
            return Err(Error::Config(format!(
                "{} has no training rows",
                config.name
            )));
        }
        let persisted = match persisted {
            Some(s) if s.version != STATE_VERSION => {
                return Err(Error::Config(format!(
                    "the state file has format version {} (this build reads {STATE_VERSION})",
                    s.version
                )))
            }
            Some(s) if s.name != config.name => {
                return Err(Error::Config(format!(
                    "the state file belongs to {:?}, not {:?}",
                    s.name, config.name
                )))
            }
            Some(s) => s,
            None => HospitalState::new(config.name.clone()),
        };
        Ok(HospitalMachine {
            config,
            consortium,
            schema,
            raw,
            rows: rows as u64,
            prepared,
            data,
            test_digest,
            mask_key: zeroize::Zeroizing::new(mask_key),
            local_cache: None,
            persisted,
            run: None,
            round: None,
            deferred: VecDeque::new(),
            report_sent: None,
            peak_rss_bytes: None,
            finished: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The current weights, once set up.
    pub fn weights(&self) -> Option<&Array1<f64>> {
        self.run.as_ref().map(|r| &r.weights)
    }

    /// Rounds completed in the current run.
    pub fn completed_rounds(&self) -> u32 {
        self.run.as_ref().map_or(0, RunState::completed)
    }

    /// The state this node would persist now.
    pub fn state(&self) -> &HospitalState {
        &self.persisted
    }

    /// Records this process's peak resident set size in bytes, as the driver
    /// measured it (the machine does no I/O). The latest value goes into the
    /// final [`Report`].
    pub fn set_peak_rss_bytes(&mut self, bytes: u64) {
        self.peak_rss_bytes = Some(bytes);
    }

    /// Whether the run is complete (report accepted) or stopped.
    pub fn is_done(&self) -> bool {
        self.finished
    }

    /// The next message to send: (recipient node name, envelope).
    pub fn poll_transmit(&mut self) -> Option<(String, Envelope)> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<HospitalEvent> {
        self.events.pop_front()
    }

    /// Hospitals keep no timers (the coordinator owns all deadlines): always `None`.
    pub fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Nothing to do (see [`next_deadline`](Self::next_deadline)); present so both
    /// machines share one driver shape.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// The transport connected an authenticated peer; for the coordinator this
    /// sends the hello (or a rejoin carrying the current run's progress).
    pub fn peer_connected(&mut self, _now: Instant, name: &str) {
        if name == self.config.coordinator && !self.finished {
            self.say_hello();
        }
    }

    /// The transport lost a peer. Nothing to do: the coordinator detects stalls,
    /// and the driver reconnects to the coordinator and calls `peer_connected`.
    pub fn peer_lost(&mut self, _now: Instant, _name: &str) {}

    fn say_hello(&mut self) {
        // After a restart the persisted run says where this node was.
        let (run_id, completed) = match (&self.run, &self.persisted.run) {
            (Some(r), _) => (Some(r.run_id.clone()), r.completed()),
            (None, Some((id, h))) => (Some(id.clone()), h.len() as u32),
            (None, None) => (None, 0),
        };
        let hello = Hello {
            name: self.config.name.clone(),
            schema: learning::Schema {
                feature_names: self.schema.feature_names().to_vec(),
                target_name: self.schema.target().to_owned(),
            },
            rows: self.rows,
            address: self.config.address.clone(),
            completed_rounds: run_id.as_ref().map(|_| completed),
            schema_hash: self.consortium.as_ref().map(ConsortiumSchema::hash_hex),
        };
        let (run_id, body) = match run_id {
            Some(id) => (id, Body::Rejoin(hello)),
            None => (RunId::none(), Body::Hello(hello)),
        };
        let env = Envelope::new(run_id, completed, self.config.name.clone(), body);
        self.transmits
            .push_back((self.config.coordinator.clone(), env));
    }

    fn send(&mut self, to: &str, round: u32, body: Body) {
        let run_id = self
            .run
            .as_ref()
            .map(|r| r.run_id.clone())
            .expect("only sends within a run");
        let env = Envelope::new(run_id, round, self.config.name.clone(), body);
        self.transmits.push_back((to.to_owned(), env));
    }

    fn send_coordinator(&mut self, round: u32, body: Body) {
        let c = self.config.coordinator.clone();
        self.send(&c, round, body);
    }

    fn persist(&mut self, sync: bool) {
        self.events.push_back(HospitalEvent::Persist {
            state: Box::new(self.persisted.clone()),
            sync,
        });
    }

    /// Handles one message from the authenticated peer `from`. An `Err` means the
    /// message was rejected and otherwise ignored; log it.
    pub fn handle_message(&mut self, now: Instant, from: &str, env: Envelope) -> Result<()> {
        let result = self.dispatch(now, from, env);
        if result.is_ok() {
            self.retry_deferred(now);
        }
        result
    }

    fn retry_deferred(&mut self, now: Instant) {
        // Re-offer held-back messages until none makes progress.
        loop {
            let before = self.deferred.len();
            let pending: Vec<_> = self.deferred.drain(..).collect();
            for (from, env) in pending {
                // Errors of deferred messages were already excused once; a message
                // that turns out invalid now is simply discarded.
                let _ = self.dispatch(now, &from, env);
            }
            if self.deferred.len() >= before {
                break;
            }
        }
    }

    /// Holds `env` back until what it depends on arrives, within a bound on
    /// count and bytes ([`deferred_budget`]; the oldest go first).
    fn defer(&mut self, from: &str, env: Envelope) {
        self.deferred.push_back((from.to_owned(), env));
        let budget = deferred_budget(&self.config.policy, self.max_values());
        let mut bytes: usize = self.deferred.iter().map(|(_, e)| held_bytes(e)).sum();
        while self.deferred.len() > MAX_DEFERRED || bytes > budget {
            match self.deferred.pop_front() {
                Some((_, e)) => bytes -= held_bytes(&e),
                None => break,
            }
        }
    }

    /// Bytes held in deferred messages now (bounded by [`deferred_budget`]).
    pub fn deferred_bytes(&self) -> usize {
        self.deferred.iter().map(|(_, e)| held_bytes(e)).sum()
    }

    fn dispatch(&mut self, _now: Instant, from: &str, env: Envelope) -> Result<()> {
        env.check_header(from)?;
        let kind = env.body.kind();
        if self.finished {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind,
                why: "this node's run is over".into(),
            });
        }
        let from_coordinator = from == self.config.coordinator;
        let peer_message = matches!(
            env.body,
            Body::PeerRound(_) | Body::PeerCommit(_) | Body::RingPass(_)
        );
        if !from_coordinator {
            if self.config.policy.position(from).is_none() {
                return Err(Error::UnknownPeer {
                    peer: from.to_owned(),
                    role: "a hospital of this consortium",
                });
            }
            if !peer_message {
                return Err(Error::Unexpected {
                    peer: from.to_owned(),
                    kind,
                    why: "hospitals only send ring confirmations, commitments and ring passes \
                          to each other"
                        .into(),
                });
            }
        } else if peer_message {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind,
                why: "only hospitals send it".into(),
            });
        }
        if let Body::Setup(s) = env.body {
            return self.on_setup(from, env.run_id, s);
        }
        if let Body::Stop { reason } = &env.body {
            // A stop for our run (or before any run) ends this node.
            if self.run.as_ref().is_none_or(|r| r.run_id == env.run_id) {
                self.finished = true;
                self.events
                    .push_back(HospitalEvent::Failed(Error::Stopped(reason.clone())));
                return Ok(());
            }
        }
        let Some(run) = &self.run else {
            if !from_coordinator {
                // A peer that already got its RoundStart: hold until our Setup.
                self.defer(from, env);
                return Ok(());
            }
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind,
                why: "this node has not been set up yet".into(),
            });
        };
        if env.run_id != run.run_id {
            return Err(Error::WrongRun {
                peer: from.to_owned(),
                got: env.run_id,
                expected: run.run_id.clone(),
            });
        }
        let round = env.round;
        let completed = run.completed();
        // One freshness rule for every round-scoped message: older rounds are
        // over; a peer's message for the next round waits for its RoundStart.
        if !matches!(env.body, Body::Finish | Body::Done | Body::Abort(_)) {
            if round < completed {
                return Err(Error::StaleRound {
                    peer: from.to_owned(),
                    got: round,
                    current: completed,
                });
            }
            if round > completed {
                if !from_coordinator && round == completed + 1 {
                    self.defer(from, env);
                    return Ok(());
                }
                if from_coordinator {
                    // We missed aggregates (e.g. a lost message): ask to be set up again.
                    self.say_hello();
                }
                return Err(Error::FutureRound {
                    peer: from.to_owned(),
                    got: round,
                    current: completed,
                });
            }
        }
        if !from_coordinator && !self.ready_for(&env.body) {
            // Its RoundStart (or the attempt it belongs to) has not reached us yet.
            self.defer(from, env);
            return Ok(());
        }
        match env.body {
            Body::RoundStart(rs) => self.on_round_start(from, round, rs),
            Body::PeerRound(m) => self.on_peer_round(from, round, m),
            Body::RingPass(p) => self.on_ring_pass(from, round, p),
            Body::Unmask(u) => self.on_unmask(from, round, u),
            Body::Decrypt(p) => self.on_decrypt(from, round, p),
            Body::PeerCommit(c) => self.on_peer_commit(from, round, c),
            Body::Aggregate(a) => self.on_aggregate(from, round, a),
            Body::Abort(a) => self.on_abort(from, round, a),
            Body::Finish => self.on_finish(from, round),
            Body::Done => {
                let report = self.report_sent.clone().ok_or_else(|| Error::Unexpected {
                    peer: from.to_owned(),
                    kind,
                    why: "no report was sent".into(),
                })?;
                self.finished = true;
                self.events.push_back(HospitalEvent::Finished(report));
                Ok(())
            }
            other => Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: other.kind(),
                why: "hospitals do not accept it".into(),
            }),
        }
    }

    /// Whether a peer's message can be handled now: its round attempt is here.
    fn ready_for(&self, body: &Body) -> bool {
        let attempt_epoch = self
            .round
            .as_ref()
            .and_then(|r| r.attempt.as_ref())
            .map(|a| a.epoch);
        match body {
            Body::PeerRound(PeerRound { epoch, .. }) | Body::RingPass(RingPass { epoch, .. }) => {
                attempt_epoch.is_some_and(|e| e >= *epoch)
            }
            Body::PeerCommit(_) => self.round.is_some(),
            _ => true,
        }
    }

    /// An upper bound on any step's vector length, in gradient values (see
    /// [`crate::plan::max_vector_values`]): what this node's message limits
    /// are sized for.
    pub fn max_values(&self) -> usize {
        crate::plan::max_vector_values(
            self.schema.feature_names().len(),
            self.schema.statistics_len(),
        )
    }

    /// The local-only model on the prepared training rows (zeros before the
    /// statistics step prepared them).
    fn local_model(&mut self, p: &RunParams, objective: &Objective) -> Array1<f64> {
        let Some(prep) = &self.prepared else {
            return Array1::zeros(self.schema.feature_names().len());
        };
        let key = (
            p.mode,
            p.rounds,
            p.eta.to_bits(),
            objective.model,
            objective.l2.to_bits(),
            objective.tolerance.map(f64::to_bits),
        );
        if let Some((k, w)) = &self.local_cache {
            if *k == key {
                return w.clone();
            }
        }
        let w = train_local_on(prep, p, objective);
        self.local_cache = Some((key, w.clone()));
        w
    }

    /// The plan of a run with `p` over this node's schema.
    fn plan(&self, p: &RunParams) -> Plan {
        Plan::new(
            p,
            self.schema.feature_names().len(),
            self.schema.statistics_len(),
            self.schema.intercept_index(),
        )
    }

    /// Checks the run's data-related parameters against this node's schema
    /// and data: the same consortium schema, the statistics step exactly when
    /// the schema needs it, sane penalty and tolerance, 0/1 labels for
    /// logistic regression.
    fn check_data_params(&self, p: &RunParams) -> std::result::Result<(), String> {
        let mine = self.consortium.as_ref().map(ConsortiumSchema::hash_hex);
        if p.schema != mine {
            return Err(match (&p.schema, &mine) {
                (Some(theirs), Some(mine)) => format!(
                    "the run's consortium schema has hash {theirs}, this hospital's {mine}                      (the schema files differ)"
                ),
                (Some(_), None) => "the run names a consortium schema; this hospital has none                                     configured"
                    .into(),
                _ => "this hospital's data follow a consortium schema; the run names none".into(),
            });
        }
        let needs = self
            .consortium
            .as_ref()
            .is_some_and(ConsortiumSchema::needs_statistics);
        if p.statistics != needs {
            return Err(if needs {
                "the schema scales or imputes, but the run has no statistics step".into()
            } else {
                "the run asks for a statistics step the schema does not need".into()
            });
        }
        if !(p.l2.is_finite() && p.l2 >= 0.0) {
            return Err(format!("l2 {} is not a non-negative number", p.l2));
        }
        if let Some(t) = p.tolerance {
            if !(t.is_finite() && t > 0.0) || p.mode != Mode::Global {
                return Err(format!(
                    "tolerance {t} needs global mode and a positive finite value"
                ));
            }
        }
        if p.model == ModelKind::Logistic {
            let target = self.schema.target();
            let targets: [(&str, Option<&Array1<f64>>); 2] = match (&self.prepared, &self.raw) {
                (Some(p), _) => [
                    ("training", Some(p.train.y())),
                    ("test", p.test.as_ref().map(Dataset::y)),
                ],
                (None, Some((train, test))) => [
                    ("training", train.y()),
                    ("test", test.as_ref().and_then(RawTable::y)),
                ],
                (None, None) => [("training", None), ("test", None)],
            };
            for (which, y) in targets {
                if let Some(y) = y {
                    ModelKind::Logistic
                        .check_target(target, y)
                        .map_err(|e| format!("the {which} data: {e}"))?;
                }
            }
        }
        Ok(())
    }

    fn on_setup(&mut self, from: &str, run_id: RunId, s: Setup) -> Result<()> {
        let invalid = |reason: String| Error::InvalidMessage {
            peer: from.to_owned(),
            kind: "setup",
            reason,
        };
        // Without the hazmat feature the flag cannot lower the 2048-bit floor.
        let pk = match self.config.dangerous_accept_small_test_keys {
            #[cfg(feature = "hazmat-insecure-small-keys")]
            true => PublicKey::from_bytes_insecure_for_tests(&s.public_key.0),
            _ => PublicKey::from_bytes(&s.public_key.0),
        }
        .map_err(|e| invalid(format!("public key: {e}")))?;
        if pk.fingerprint() != s.key_fingerprint {
            return Err(invalid(format!(
                "the key's fingerprint is {}, the message claims {}",
                pk.fingerprint(),
                s.key_fingerprint
            )));
        }
        if let Some(share) = &self.config.key_share {
            if !s.params.masks {
                return Err(Error::PolicyRefused {
                    peer: from.to_owned(),
                    kind: "setup",
                    reason: "a run under the threshold key needs masks (members agree on the \
                             sum they decrypt while committing to its set)"
                        .into(),
                });
            }
            let theirs = share.key().public_key();
            if *theirs != pk {
                return Err(Error::PolicyRefused {
                    peer: from.to_owned(),
                    kind: "setup",
                    reason: format!(
                        "the run's key {} is not the consortium's threshold key {}; this \
                         hospital holds a share of that key and encrypts under no other",
                        pk.fingerprint(),
                        theirs.fingerprint()
                    ),
                });
            }
        }
        self.config
            .policy
            .check_key_bits(pk.bits())
            .map_err(|e| Error::PolicyRefused {
                peer: from.to_owned(),
                kind: "setup",
                reason: e,
            })?;
        let p = &s.params;
        self.config
            .policy
            .check_params(p)
            .map_err(|e| Error::PolicyRefused {
                peer: from.to_owned(),
                kind: "setup",
                reason: e,
            })?;
        self.check_data_params(p)
            .map_err(|e| Error::PolicyRefused {
                peer: from.to_owned(),
                kind: "setup",
                reason: e,
            })?;
        let plan = self.plan(p);
        if s.history.len() > plan.max_steps() {
            return Err(invalid("history is longer than the run".into()));
        }
        // A replayed history must extend what this node itself applied.
        if let Some((id, mine)) = &self.persisted.run {
            if *id == run_id {
                if s.history.len() < mine.len() {
                    return Err(Error::PolicyRefused {
                        peer: from.to_owned(),
                        kind: "setup",
                        reason: format!(
                            "the history has {} steps, but this hospital already applied {} \
                             (was the coordinator restarted from an old checkpoint?)",
                            s.history.len(),
                            mine.len()
                        ),
                    });
                }
                if let Some(i) = (0..mine.len()).find(|&i| s.history[i] != mine[i]) {
                    return Err(Error::PolicyRefused {
                        peer: from.to_owned(),
                        kind: "setup",
                        reason: format!(
                            "step {} of the history differs from the aggregate this hospital \
                             applied",
                            i + 1
                        ),
                    });
                }
            }
        }
        let objective = plan.objective();
        let mut cursor = plan.cursor();
        // With a statistics step, nothing is prepared until its aggregate
        // (replayed here, or still to come).
        let mut prepared = None;
        let mut local = if p.statistics {
            Array1::zeros(self.schema.feature_names().len())
        } else {
            self.local_model(p, &objective)
        };
        let mut weights = match p.mode {
            Mode::Seed => local.clone(),
            Mode::Global => Array1::zeros(self.schema.feature_names().len()),
        };
        let mut pooled_metrics = None;
        for (i, r) in s.history.iter().enumerate() {
            let kind = cursor
                .advance(r)
                .map_err(|e| invalid(format!("history entry {}: {e}", i + 1)))?;
            match kind {
                StepKind::Statistics => {
                    let prep = self.prepare_from(r).map_err(|e| invalid(e.to_string()))?;
                    local = train_local_on(&prep, p, &objective);
                    if p.mode == Mode::Seed {
                        weights = local.clone();
                    }
                    prepared = Some(prep);
                }
                StepKind::Training { .. } => apply(p.mode, &objective, &mut weights, r, p.eta),
                StepKind::Evaluation => {
                    pooled_metrics =
                        Metrics::from_sums(p.model, &r.sum).map_err(|e| invalid(e.to_string()))?
                }
            }
        }
        let next = cursor.next().unwrap_or(StepKind::Evaluation);
        let codec = codec_for(&pk, &plan, next).map_err(|e| invalid(e.to_string()))?;
        // The key's fixed-base table (tens of milliseconds, built once per key
        // and shared by its clones) is built now on another thread, while the
        // ring confirms, not by the first encryption on the ring's critical
        // path. It holds only public values (powers of the key's public
        // `h^n`); an encryption that comes first does not wait for it (one
        // regular exponentiation instead).
        // A plain thread, not a rayon worker: a worker blocked on the table
        // could be handed the table's own parallel work.
        // Sized for the run's encryptions: its rounds left times the
        // ciphertexts of one contribution.
        let rounds_left = u64::from(p.rounds.saturating_sub(s.history.len() as u32)).max(1);
        let encryptions = rounds_left * codec.ciphertext_count() as u64;
        let table_key = pk.clone();
        std::thread::spawn(move || table_key.precompute_for(encryptions));
        // Likewise the threshold key's table of v, which the partial
        // decryption's proof uses (shared by the share's clones of the key).
        if let Some(share) = &self.config.key_share {
            let key = share.key().clone();
            std::thread::spawn(move || key.precompute());
        }
        if self.run.as_ref().is_some_and(|r| r.run_id != run_id) {
            // Another run: nothing of the old one may leak into it.
            self.deferred.retain(|(_, e)| e.run_id == run_id);
        }
        if p.statistics {
            self.prepared = prepared;
            self.local_cache = None;
        }
        let completed = s.history.len() as u32;
        self.persisted.run = Some((run_id.clone(), s.history.clone()));
        self.run = Some(RunState {
            run_id: run_id.clone(),
            params: s.params,
            pk,
            codec,
            cursor,
            objective,
            local_weights: local,
            weights,
            history: s.history,
            pooled_metrics,
            members: Vec::new(),
        });
        self.round = None;
        self.report_sent = None;
        self.persist(false);
        self.events.push_back(HospitalEvent::SetUp {
            run_id,
            completed_rounds: completed,
        });
        Ok(())
    }

    /// This node's rows prepared with the preprocessing derived from the
    /// pooled statistics in `r`.
    fn prepare_from(&self, r: &AggregateRecord) -> Result<Prepared> {
        let pre = Preprocessor::from_statistics(&self.schema, &r.sum, r.n_total_rows)
            .map_err(|e| Error::Config(format!("the pooled statistics: {e}")))?;
        let (train, test) = self.raw_rows()?;
        prepare(&self.config.name, &self.schema, pre, train, test)
    }

    /// The raw rows the statistics step reads.
    fn raw_rows(&self) -> Result<(&RawTable, Option<&RawTable>)> {
        // The statistics step runs only for a schema that needs it (checked at
        // setup), and exactly such a node keeps its raw rows.
        self.raw
            .as_ref()
            .map(|(t, e)| (t, e.as_ref()))
            .ok_or_else(|| Error::Config("no raw rows are kept for a statistics step".into()))
    }

    /// The round state of `round`, created (with the persisted commitment of
    /// its model state, if any) when this is the first message of the round.
    fn round_state(&mut self, round: u32) -> &mut RoundState {
        if self.round.as_ref().is_none_or(|r| r.round != round) {
            let run = self.run.as_ref().expect("within a run");
            let state = self.step_state(run);
            let commitment = self.persisted.commitments.get(&state::hex(&state));
            self.round = Some(RoundState {
                round,
                state,
                seeds: BTreeMap::new(),
                masked_for: commitment.map(|c| c.masked_for.clone()),
                committed: commitment.map(|c| c.members.clone()),
                peer_commits: BTreeMap::new(),
                revealed: false,
                unmask: None,
                agreed: None,
                partial: None,
                attempt: None,
            });
        }
        self.round.as_mut().expect("just set")
    }

    /// Digest of what this node's contribution to the next step is a
    /// function of, keying its commitment and self-mask: the data and weights
    /// of a gradient (and the model kind, for other models than linear), the
    /// schema and raw rows of the statistics, the test rows and weights of the
    /// evaluation. Two steps with one digest contribute the same values.
    fn step_state(&self, run: &RunState) -> [u8; 32] {
        match run.cursor.next() {
            Some(StepKind::Training { .. }) | None if run.params.model == ModelKind::Linear => {
                state::model_state(&self.data, &run.weights)
            }
            Some(StepKind::Training { .. }) | None => state::step_state(
                &format!("training/{}", run.params.model),
                &[&self.data],
                &run.weights,
            ),
            Some(StepKind::Statistics) => {
                state::step_state("statistics", &[&self.data], &Array1::zeros(0))
            }
            Some(StepKind::Evaluation) => state::step_state(
                &format!("evaluation/{}", run.params.model),
                &[&self.data, &self.test_digest],
                &run.weights,
            ),
        }
    }

    fn refuse_set(
        &mut self,
        kind: &'static str,
        from: &str,
        round: u32,
        epoch: u64,
        why: String,
    ) -> Error {
        let committed = self.round.as_ref().and_then(|r| r.committed.clone());
        self.send_coordinator(
            round,
            Body::Abort(Abort {
                epoch,
                reason: format!("{} refuses: {why}", self.config.name),
                dropped: Vec::new(),
                committed,
                deterministic: false,
            }),
        );
        Error::PolicyRefused {
            peer: from.to_owned(),
            kind,
            reason: why,
        }
    }

    fn receipt(&mut self, round: u32, epoch: u64, stage: crate::wire::ReceiptStage) {
        self.send_coordinator(round, Body::Receipt(crate::wire::Receipt { epoch, stage }));
    }

    fn on_round_start(&mut self, from: &str, round: u32, rs: RoundStart) -> Result<()> {
        let run = self.run.as_ref().expect("checked by dispatch");
        if run.cursor.next().is_none() {
            return Err(Error::InvalidMessage {
                peer: from.to_owned(),
                kind: "round_start",
                reason: format!(
                    "step {} is beyond the run's last step ({} training rounds done{})",
                    round + 1,
                    run.cursor.trained(),
                    if run.cursor.converged() {
                        ", converged"
                    } else {
                        ""
                    }
                ),
            });
        }
        let names: Vec<String> = rs.ring.iter().map(|m| m.name.clone()).collect();
        if let Err(why) = self.config.policy.check_set(&self.config.name, &names) {
            let why = format!("the ring {names:?} is refused: {why}");
            return Err(self.refuse_set("round_start", from, round, rs.epoch, why));
        }
        let me = self.config.name.clone();
        let r = self.round_state(round);
        if let Some(a) = &r.attempt {
            if rs.epoch <= a.epoch {
                return Err(Error::WrongEpoch {
                    peer: from.to_owned(),
                    got: rs.epoch,
                    current: a.epoch,
                });
            }
        }
        if let Some(c) = &r.committed {
            if *c != names {
                let why = format!(
                    "this model state is committed to the member set {c:?}; the ring {names:?} \
                     is another"
                );
                return Err(self.refuse_set("round_start", from, round, rs.epoch, why));
            }
        }
        if let Some(m) = &r.masked_for {
            if let Some(x) = names.iter().find(|n| !m.contains(n)) {
                let why = format!(
                    "{x} is not in the set this round's contribution was masked for ({m:?})"
                );
                return Err(self.refuse_set("round_start", from, round, rs.epoch, why));
            }
        }
        let run = self.run.as_ref().expect("checked");
        let ring_hash = state::ring_hash(&run.run_id, round, rs.epoch, &names);
        let history = state::history_digest(&run.history);
        let run_id = run.run_id.clone();
        let my_pos = self.config.policy.position(&me).expect("validated");
        let mut out = Vec::new();
        let r = self.round.as_mut().expect("present");
        // Every other member gets this node's view of the ring; with it, the
        // seed of the pair when this node comes first (and draws it). Nothing
        // of this round's sum leaves before every member confirmed the same
        // ring, so a coordinator telling members different rings gets no sum.
        for peer in names.iter().filter(|n| **n != me) {
            if my_pos < self.config.policy.position(peer).expect("checked") {
                let s = pair_seed(&self.mask_key, run_id.as_str(), round, &history, peer);
                let bytes = Bytes(s.to_vec());
                r.seeds.insert(peer.clone(), s);
                out.push((peer.clone(), bytes));
            } else {
                out.push((peer.clone(), Bytes(Vec::new())));
            }
        }
        r.attempt = Some(Attempt {
            epoch: rs.epoch,
            names,
            ring_hash: ring_hash.clone(),
            confirmed: BTreeSet::new(),
            incoming: None,
            own: None,
            sent: false,
            sent_digest: None,
        });
        for (peer, seed) in out {
            let body = Body::PeerRound(PeerRound {
                epoch: rs.epoch,
                ring_hash: Bytes(ring_hash.clone()),
                seed,
            });
            self.send(&peer, round, body);
        }
        let run_id = self.run.as_ref().expect("in a run").run_id.clone();
        self.events.push_back(HospitalEvent::RingChanged {
            run_id,
            round,
            epoch: rs.epoch,
            ring: rs.ring,
        });
        self.receipt(round, rs.epoch, crate::wire::ReceiptStage::Started);
        self.progress()
    }

    fn on_peer_round(&mut self, from: &str, round: u32, m: PeerRound) -> Result<()> {
        let me = self.config.name.clone();
        let my_pos = self.config.policy.position(&me).expect("validated");
        let from_pos = self.config.policy.position(from).expect("checked");
        let r = self.round.as_mut().expect("ready_for checked");
        let a = r.attempt.as_mut().expect("ready_for checked");
        if m.epoch < a.epoch {
            return Err(Error::WrongEpoch {
                peer: from.to_owned(),
                got: m.epoch,
                current: a.epoch,
            });
        }
        if !a.names.iter().any(|n| n == from) {
            return Err(Error::UnknownPeer {
                peer: from.to_owned(),
                role: "in this attempt's ring",
            });
        }
        if m.ring_hash.0 != a.ring_hash {
            let epoch = a.epoch;
            let why = format!("{from} was given another ring for this attempt than this node");
            self.send_coordinator(
                round,
                Body::Abort(Abort {
                    epoch,
                    reason: format!("{me}: {why}"),
                    dropped: Vec::new(),
                    committed: None,
                    deterministic: false,
                }),
            );
            return Err(Error::PolicyRefused {
                peer: from.to_owned(),
                kind: "peer_round",
                reason: why,
            });
        }
        if from_pos > my_pos {
            // A later member's confirmation: this node drew that pair's seed.
            if !m.seed.0.is_empty() {
                return Err(Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "peer_round",
                    reason: "it sent a seed for a pair this node draws".into(),
                });
            }
            a.confirmed.insert(from.to_owned());
            return self.progress();
        }
        let seed: [u8; SEED_BYTES] =
            m.seed
                .0
                .as_slice()
                .try_into()
                .map_err(|_| Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "peer_round",
                    reason: format!("seed has {} bytes, expected {SEED_BYTES}", m.seed.0.len()),
                })?;
        if let Some(old) = r.seeds.get(from) {
            if **old != seed {
                return Err(Error::Unexpected {
                    peer: from.to_owned(),
                    kind: "peer_round",
                    why: "a different seed for this round was already agreed".into(),
                });
            }
        }
        r.seeds
            .insert(from.to_owned(), zeroize::Zeroizing::new(seed));
        a.confirmed.insert(from.to_owned());
        self.progress()
    }

    fn on_ring_pass(&mut self, from: &str, round: u32, p: RingPass) -> Result<()> {
        let me = self.config.name.clone();
        let r = self.round.as_ref().expect("ready_for checked");
        let a = r.attempt.as_ref().expect("ready_for checked");
        if p.epoch < a.epoch {
            return Err(Error::WrongEpoch {
                peer: from.to_owned(),
                got: p.epoch,
                current: a.epoch,
            });
        }
        let pos = a.names.iter().position(|n| *n == me).expect("validated");
        if pos == 0 || a.names[pos - 1] != from {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "ring_pass",
                why: "it is not this node's predecessor in the ring".into(),
            });
        }
        if a.incoming.is_some() || a.sent {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "ring_pass",
                why: "this attempt's sum was already received".into(),
            });
        }
        let epoch = a.epoch;
        let run = self.run.as_ref().expect("checked");
        match run.codec.parse(from, &p) {
            Ok(cts) => {
                let r = self.round.as_mut().expect("present");
                r.attempt.as_mut().expect("present").incoming = Some(cts);
                // The receipt makes this node the provable holder of the sum.
                self.receipt(round, epoch, crate::wire::ReceiptStage::SumReceived);
                self.progress()
            }
            Err(err) => {
                // Tell the coordinator so it can abort and retry the round.
                let body = Body::Abort(Abort {
                    epoch,
                    reason: format!("rejected the running sum from {from}: {err}"),
                    dropped: Vec::new(),
                    committed: None,
                    deterministic: false,
                });
                self.send_coordinator(round, body);
                Err(err)
            }
        }
    }

    /// Whether this node's own masked contribution to the current attempt
    /// can be encrypted ahead (every other member confirmed the ring) while
    /// it waits for its predecessor's running sum.
    pub fn has_pending_work(&self) -> bool {
        let (Some(_), Some(r)) = (&self.run, &self.round) else {
            return false;
        };
        let Some(a) = &r.attempt else {
            return false;
        };
        !self.finished
            && !a.sent
            && a.own.is_none()
            && a.incoming.is_none()
            && a.confirmed.len() + 1 == a.names.len()
    }

    /// Encrypts this node's masked contribution ahead (see
    /// [`has_pending_work`](Self::has_pending_work)); call it after the
    /// transmits polled so far were sent. The ciphertexts are kept with the
    /// attempt and added to the running sum when it arrives (an aborted
    /// attempt drops them); the masked plaintext is the same function of the
    /// model state, the seeds and the masking set as when it is computed on
    /// arrival, so no byte sent changes, and nothing leaves here except a
    /// deterministic abort when the values cannot be encoded (which the
    /// sum's arrival would send too).
    pub fn handle_pending_work(&mut self, _now: Instant) {
        if !self.has_pending_work() {
            return;
        }
        let me = self.config.name.clone();
        let r = self.round.as_ref().expect("checked");
        let a = r.attempt.as_ref().expect("checked");
        // The set the contribution is masked for, as `progress` fixes it.
        let masked_for = r.masked_for.clone().unwrap_or_else(|| a.names.clone());
        match self.contribution(&me, &masked_for) {
            Ok(Some(own)) => {
                let r = self.round.as_mut().expect("checked");
                r.attempt.as_mut().expect("checked").own = Some((masked_for, own));
            }
            // Failed: the node stopped and told the coordinator.
            Ok(None) => {}
            // Left for `progress`, which reports it when the sum arrives.
            Err(_) => {}
        }
    }

    /// Sends this node's contribution once everything it needs is there.
    fn progress(&mut self) -> Result<()> {
        let me = self.config.name.clone();
        let Some(r) = &mut self.round else {
            return Ok(());
        };
        if self.run.is_none() {
            return Ok(());
        }
        let Some(a) = &mut r.attempt else {
            return Ok(());
        };
        let pos = a.names.iter().position(|n| *n == me).expect("validated");
        // Every other member must have confirmed this ring (the earlier ones
        // with their seeds).
        if a.sent || a.confirmed.len() + 1 < a.names.len() {
            return Ok(());
        }
        if pos > 0 && a.incoming.is_none() {
            return Ok(());
        }
        let masked_for = r.masked_for.get_or_insert_with(|| a.names.clone()).clone();
        let (round, epoch) = (r.round, a.epoch);
        let mine = match a.own.take() {
            Some((set, own)) if set == masked_for => own,
            _ => match self.contribution(&me, &masked_for)? {
                Some(own) => own,
                None => return Ok(()),
            },
        };
        let run = self.run.as_ref().expect("checked");
        let r = self.round.as_mut().expect("present");
        let a = r.attempt.as_mut().expect("present");
        let total = match a.incoming.take() {
            Some(inc) => run.codec.add(&inc, &mine)?,
            None => mine,
        };
        let pass = run.codec.to_wire(epoch, &total);
        a.sent = true;
        let next = a.names.get(pos + 1).cloned();
        if next.is_none() {
            a.sent_digest = Some(crate::wire::sum_digest(&total));
        }
        match next {
            Some(succ) => self.send(&succ, round, Body::RingPass(pass)),
            None => self.send_coordinator(round, Body::RingPass(pass)),
        }
        Ok(())
    }

    /// This node's masked, encrypted contribution to the current round for
    /// masking set `masked_for`; `None` when its values cannot be encoded
    /// (then it told the coordinator and stopped).
    fn contribution(&mut self, me: &str, masked_for: &[String]) -> Result<Option<Vec<Ciphertext>>> {
        let me = me.to_owned();
        let (Some(run), Some(r)) = (&self.run, &self.round) else {
            return Err(Error::Config("no round is running".into()));
        };
        let Some(a) = &r.attempt else {
            return Err(Error::Config("no attempt is running".into()));
        };
        let masks = if run.params.masks {
            let mut seeds = Vec::with_capacity(masked_for.len());
            for peer in masked_for.iter().filter(|n| **n != me) {
                match r.seeds.get(peer) {
                    Some(s) => seeds.push((peer.clone(), s.clone())),
                    // A member of the masking set that is not in this attempt
                    // and whose seed never arrived: cannot happen, since the set
                    // was fixed only once every member had confirmed.
                    None => {
                        return Err(Error::Config(format!(
                            "no pairwise seed with {peer} for round {}",
                            r.round + 1
                        )))
                    }
                }
            }
            Some(MaskSet::new(
                me.clone(),
                r.round,
                Some(self_seed(&self.mask_key, &r.state)),
                seeds,
            ))
        } else {
            None
        };
        let kind = run
            .cursor
            .next()
            .expect("a round runs only before the last step");
        let values = match (kind, &self.prepared) {
            (StepKind::Statistics, _) => match &self.raw {
                Some((train, _)) => local_statistics(train),
                None => {
                    return Err(Error::Config(
                        "no raw rows are kept for a statistics step".into(),
                    ))
                }
            },
            (StepKind::Training { .. }, Some(prep)) => run
                .params
                .model
                .gradient(prep.train.x(), prep.train.y(), &run.weights)
                .to_vec(),
            (StepKind::Evaluation, Some(prep)) => match &prep.test {
                Some(t) => local_evaluation(run.params.model, t.x(), t.y(), &run.weights),
                // No test rows: a zero contribution (it counts no row).
                None => vec![0.0; learning::evaluation_len(run.params.model)],
            },
            (_, None) => {
                return Err(Error::Config(format!(
                    "{} needs the statistics step first",
                    kind.describe()
                )))
            }
        };
        let (round, epoch) = (r.round, a.epoch);
        let mine = match run.codec.encrypt(&values, masks.as_ref()) {
            Ok(mine) => mine,
            Err(err) => {
                // E.g. a gradient value beyond the fixed-point range: the run
                // cannot go on as configured; the coordinator must hear why.
                // Name the cause and the remedy; never a value of the
                // gradient itself (a function of this hospital's data).
                let reason = match kind {
                    StepKind::Training { index } => format!(
                        "its gradient at round {} does not fit the fixed-point encoding \
                             ({}): the model is diverging or the features are not scaled; \
                             standardize the features or lower eta",
                        index + 1,
                        encoding_failure(&err)
                    ),
                    other => format!(
                        "its sums for {} do not fit the fixed-point encoding ({}): \
                             values beyond 2^{} are not supported",
                        other.describe(),
                        encoding_failure(&err),
                        crate::plan::WIDE_FIXED_POINT_BITS.1
                    ),
                };
                let body = Body::Abort(Abort {
                    epoch,
                    reason: reason.clone(),
                    dropped: Vec::new(),
                    committed: None,
                    deterministic: true,
                });
                self.send_coordinator(round, body);
                // It would fail the same way at every retry: this node stops
                // (the coordinator goes on without it when the others suffice).
                self.finished = true;
                self.events
                    .push_back(HospitalEvent::Failed(Error::CannotContribute(reason)));
                return Ok(None);
            }
        };
        Ok(Some(mine))
    }

    fn on_unmask(&mut self, from: &str, round: u32, u: Unmask) -> Result<()> {
        let me = self.config.name.clone();
        let masks_on = self.run.as_ref().expect("checked").params.masks;
        let refuse = |reason: String| Error::PolicyRefused {
            peer: from.to_owned(),
            kind: "unmask",
            reason,
        };
        if !masks_on {
            return Err(refuse("the run has no masks to remove".into()));
        }
        if self.config.key_share.is_some() {
            let Some(d) = &u.sum_digest else {
                return Err(refuse(
                    "a threshold run's unmask must name the digest of the sum to decrypt".into(),
                ));
            };
            // Only the ring of this node's current attempt, to whose sum it
            // contributed, is unmasked: so the set always holds the attempt's
            // tail, which vouches for the digest (it must be the sum it sent;
            // the others see the tail's commit hash, which binds the epoch).
            let Some(a) = self
                .round
                .as_ref()
                .and_then(|r| r.attempt.as_ref())
                .filter(|a| a.epoch == u.epoch && a.names == u.members && a.sent)
            else {
                return Err(refuse(
                    "a threshold run unmasks only the ring of this node's current attempt, \
                     after this node passed its sum on"
                        .into(),
                ));
            };
            if a.names.last() == Some(&me) && a.sent_digest.as_ref() != Some(&d.0) {
                return Err(refuse(
                    "the sum digest is not the one of the sum this node (the tail) sent".into(),
                ));
            }
        }
        let Some(r) = self.round.as_ref().filter(|r| r.round == round) else {
            return Err(refuse(format!(
                "this node has not contributed to round {}",
                round + 1
            )));
        };
        let Some(masked_for) = r.masked_for.clone() else {
            return Err(refuse(format!(
                "this node has not contributed to round {}",
                round + 1
            )));
        };
        if let Err(why) = self.config.policy.check_set(&me, &u.members) {
            let why = format!("the member set {:?} is refused: {why}", u.members);
            return Err(self.refuse_set("unmask", from, round, u.epoch, why));
        }
        if let Some(x) = u.members.iter().find(|n| !masked_for.contains(n)) {
            let why = format!("{x} is not in the set this contribution was masked for");
            return Err(self.refuse_set("unmask", from, round, u.epoch, why));
        }
        let r = self.round.as_mut().expect("present");
        match &r.committed {
            Some(c) if *c != u.members => {
                let why = format!(
                    "this model state is committed to the member set {c:?}; refusing {:?}",
                    u.members
                );
                return Err(self.refuse_set("unmask", from, round, u.epoch, why));
            }
            Some(_) => {}
            None => {
                // Commit, durably, before anything that relies on it leaves.
                r.committed = Some(u.members.clone());
                let key = state::hex(&r.state);
                self.persisted.commitments.insert(
                    key,
                    Commitment {
                        members: u.members.clone(),
                        masked_for,
                    },
                );
                self.persist(true);
            }
        }
        let r = self.round.as_mut().expect("present");
        r.revealed = false;
        let run_id = &self.run.as_ref().expect("checked").run_id;
        let hash = state::set_hash(
            run_id,
            round,
            &u.members,
            u.sum_digest.as_ref().map(|d| (u.epoch, &d.0[..])),
        );
        r.unmask = Some(UnmaskRequest {
            epoch: u.epoch,
            digest: u.sum_digest.map(|d| d.0),
            hash: hash.clone(),
        });
        for peer in u.members.iter().filter(|n| **n != me) {
            let body = Body::PeerCommit(PeerCommit {
                set_hash: Bytes(hash.clone()),
            });
            self.send(peer, round, body);
        }
        self.maybe_reveal(round)
    }

    fn on_peer_commit(&mut self, from: &str, round: u32, c: PeerCommit) -> Result<()> {
        let r = self.round.as_mut().expect("ready_for checked");
        r.peer_commits.insert(from.to_owned(), c.set_hash.0);
        self.maybe_reveal(round)
    }

    /// Releases the unmasking material once this node committed and every
    /// other member of the set confirmed the same set.
    fn maybe_reveal(&mut self, round: u32) -> Result<()> {
        let me = self.config.name.clone();
        let run_id = self.run.as_ref().expect("checked").run_id.clone();
        let Some(r) = self.round.as_mut() else {
            return Ok(());
        };
        let (Some(members), Some(masked_for)) = (&r.committed, &r.masked_for) else {
            return Ok(());
        };
        if r.revealed {
            return Ok(());
        }
        // The hash this node sent for the latest Unmask; a committed node
        // restarted before any Unmask reached it confirms the set alone.
        let hash = match &r.unmask {
            Some(u) => u.hash.clone(),
            None => state::set_hash(&run_id, round, members, None),
        };
        for peer in members.iter().filter(|n| **n != me) {
            match r.peer_commits.get(peer) {
                None => return Ok(()),
                Some(h) if *h != hash => {
                    return Err(Error::PolicyRefused {
                        peer: peer.clone(),
                        kind: "peer_commit",
                        reason: "it committed to another member set (or sum) than this node".into(),
                    })
                }
                Some(_) => {}
            }
        }
        let mut pair_seeds = Vec::new();
        for peer in masked_for
            .iter()
            .filter(|n| **n != me && !members.contains(n))
        {
            let s = r
                .seeds
                .get(peer)
                .ok_or_else(|| Error::Config(format!("no pairwise seed with {peer} to reveal")))?;
            pair_seeds.push(RevealedSeed {
                peer: peer.clone(),
                seed: Bytes(s.to_vec()),
            });
        }
        let reveal = Reveal {
            set_hash: Bytes(hash),
            self_seed: Bytes(self_seed(&self.mask_key, &r.state).to_vec()),
            pair_seeds,
        };
        r.revealed = true;
        if let Some(UnmaskRequest {
            epoch,
            digest: Some(d),
            ..
        }) = &r.unmask
        {
            r.agreed = Some((*epoch, d.clone()));
        }
        self.send_coordinator(round, Body::Reveal(reveal));
        Ok(())
    }

    /// Threshold runs: the partial decryption of the round's sum, given only
    /// for the sum this node's member set agreed on (its digest bound into
    /// every member's commit hash, the tail's included) after this node
    /// revealed for that set; the same answer is re-sent if asked again.
    fn on_decrypt(&mut self, from: &str, round: u32, p: RingPass) -> Result<()> {
        let refuse = |reason: String| Error::PolicyRefused {
            peer: from.to_owned(),
            kind: "decrypt",
            reason,
        };
        let Some(share) = self.config.key_share.clone() else {
            return Err(refuse("this hospital holds no threshold key share".into()));
        };
        let Some(r) = self.round.as_ref().filter(|r| r.round == round) else {
            return Err(refuse(format!(
                "this node did not take part in round {}",
                round + 1
            )));
        };
        let Some((epoch, digest)) = r.agreed.clone() else {
            return Err(refuse(format!(
                "this node's member set has not agreed on a sum of round {}",
                round + 1
            )));
        };
        if p.epoch != epoch {
            return Err(refuse(format!(
                "the sum is of attempt {}, this node's set agreed on attempt {epoch}'s",
                p.epoch
            )));
        }
        let run = self.run.as_ref().expect("checked");
        let cts = run.codec.parse(from, &p)?;
        if crate::wire::sum_digest(&cts) != digest {
            return Err(refuse(
                "these ciphertexts are not the sum this node's member set agreed on".into(),
            ));
        }
        if let Some((d, part)) = &r.partial {
            if *d == digest {
                let body = Body::Partial(part.clone());
                self.send_coordinator(round, body);
                return Ok(());
            }
        }
        let batch = share.partial_decrypt_batch(&cts).map_err(Error::Crypto)?;
        let part = crate::wire::Partial {
            epoch,
            values: batch
                .values
                .iter()
                .map(|v| Bytes(v.to_bytes_be()))
                .collect(),
            challenge: Bytes(batch.challenge.to_bytes_be()),
            response: Bytes(batch.response.to_bytes_be()),
        };
        self.round.as_mut().expect("present").partial = Some((digest, part.clone()));
        self.send_coordinator(round, Body::Partial(part));
        Ok(())
    }

    fn on_aggregate(&mut self, from: &str, round: u32, a: Aggregate) -> Result<()> {
        let record = a.record;
        let masks_on = self.run.as_ref().expect("checked").params.masks;
        let Some(r) = self.round.as_ref().filter(|r| r.round == round) else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "aggregate",
                why: "no round is running here".into(),
            });
        };
        let members = if masks_on {
            r.committed.clone()
        } else {
            r.attempt
                .as_ref()
                .filter(|a| a.sent)
                .map(|a| a.names.clone())
        };
        let Some(members) = members else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "aggregate",
                why: "this node did not take part in this round's sum".into(),
            });
        };
        let run = self.run.as_ref().expect("checked");
        let mut cursor = run.cursor.clone();
        let invalid = |reason: String| Error::InvalidMessage {
            peer: from.to_owned(),
            kind: "aggregate",
            reason,
        };
        let kind = cursor.advance(&record).map_err(invalid)?;
        if record.round != round || record.n_hospitals as usize != members.len() {
            return Err(invalid(format!(
                "expected step {}'s sum over {} hospitals",
                round + 1,
                members.len()
            )));
        }
        let share = self.config.policy.share_metrics;
        let mut ack_loss = None;
        let event = match kind {
            StepKind::Statistics => {
                let prep = self
                    .prepare_from(&record)
                    .map_err(|e| invalid(e.to_string()))?;
                let preprocessor = Box::new(prep.preprocessor.clone());
                self.prepared = Some(prep);
                self.local_cache = None;
                let run = self.run.as_ref().expect("checked");
                let (params, objective) = (run.params.clone(), run.objective);
                let local = self.local_model(&params, &objective);
                let run = self.run.as_mut().expect("checked");
                if params.mode == Mode::Seed {
                    run.weights = local.clone();
                }
                run.local_weights = local;
                HospitalEvent::Prepared { preprocessor }
            }
            StepKind::Training { index } => {
                let run = self.run.as_mut().expect("checked");
                apply(
                    run.params.mode,
                    &run.objective,
                    &mut run.weights,
                    &record,
                    run.params.eta,
                );
                run.members.clone_from(&members);
                let test_mse = test_loss(run.params.model, self.prepared.as_ref(), &run.weights);
                ack_loss = test_mse;
                HospitalEvent::RoundCompleted {
                    round: index,
                    weights: run.weights.to_vec(),
                    test_mse,
                }
            }
            StepKind::Evaluation => {
                let run = self.run.as_mut().expect("checked");
                let pooled = Metrics::from_sums(run.params.model, &record.sum)
                    .map_err(|e| invalid(e.to_string()))?;
                run.pooled_metrics.clone_from(&pooled);
                HospitalEvent::Evaluated { pooled }
            }
        };
        let run = self.run.as_mut().expect("checked");
        // A new codec only where the next step's shape differs (after the
        // statistics step, before the evaluation): not once per round.
        if let Some(next) = cursor.next() {
            let plan = cursor.plan();
            if !run
                .codec
                .fits(plan.fixed_point(next), plan.vector_len(next))
            {
                run.codec = codec_for(&run.pk, plan, next)?;
            }
        }
        run.cursor = cursor;
        run.history.push(record);
        if let Some((_, h)) = &mut self.persisted.run {
            h.clone_from(&run.history);
        }
        // The round's seeds are never needed again.
        self.round = None;
        self.persist(false);
        self.send_coordinator(
            round,
            Body::RoundAck(RoundAck {
                test_mse: ack_loss.filter(|_| share),
            }),
        );
        self.events.push_back(event);
        Ok(())
    }

    fn on_abort(&mut self, from: &str, round: u32, a: Abort) -> Result<()> {
        if a.dropped.iter().any(|n| n == &self.config.name) {
            if let Some(r) = &mut self.round {
                r.attempt = None;
            }
            self.events
                .push_back(HospitalEvent::Dropped { reason: a.reason });
            // Still alive: ask to come back at the next round boundary.
            self.say_hello();
            return Ok(());
        }
        let completed = self.completed_rounds();
        if round < completed {
            return Err(Error::StaleRound {
                peer: from.to_owned(),
                got: round,
                current: completed,
            });
        }
        // The attempt ends; what holds for the round (seeds, masking set,
        // commitment) stays.
        if let Some(r) = &mut self.round {
            if r.attempt.as_ref().is_some_and(|x| x.epoch == a.epoch) {
                r.attempt = None;
            }
        }
        self.events.push_back(HospitalEvent::RoundAborted {
            round,
            reason: a.reason,
        });
        Ok(())
    }

    fn on_finish(&mut self, from: &str, round: u32) -> Result<()> {
        let run = self.run.as_ref().expect("checked");
        let completed = run.completed();
        if round != completed || run.cursor.next().is_some() {
            // Missed aggregates: ask for a Setup with the full history first.
            let (trained, rounds) = (run.cursor.trained(), run.params.rounds);
            self.say_hello();
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "finish",
                why: format!("finish after {trained} of {rounds} rounds"),
            });
        }
        let Some(prep) = &self.prepared else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "finish",
                why: "the data were never prepared (no statistics step)".into(),
            });
        };
        let model = run.params.model;
        let on_test = |w: &Array1<f64>| {
            prep.test
                .as_ref()
                .and_then(|t| Metrics::exact(model, t.x(), t.y(), w).ok())
        };
        let mse = |w: &Array1<f64>| {
            prep.test
                .as_ref()
                .filter(|_| !model.is_classifier())
                .map(|t| learning::mse(t.x(), t.y(), w))
        };
        let schema_hash = self
            .consortium
            .as_ref()
            .map(ConsortiumSchema::hash_hex)
            .unwrap_or_default();
        let file = ModelFile {
            format: learning::MODEL_FORMAT.into(),
            version: learning::MODEL_VERSION,
            model,
            features: self.schema.feature_names().to_vec(),
            weights: run.weights.to_vec(),
            schema: self.schema.file().clone(),
            preprocessing: prep.preprocessor.clone(),
            training: TrainingInfo {
                run_id: run.run_id.as_str().to_owned(),
                mode: run.params.mode,
                rounds: run.cursor.trained(),
                max_rounds: run.params.rounds,
                converged: run.cursor.converged(),
                eta: run.params.eta,
                l2: run.params.l2,
                hospitals: run.members.clone(),
                schema_hash,
            },
        };
        let local = LocalReport {
            local_weights: run.local_weights.to_vec(),
            weights: run.weights.to_vec(),
            local_test_mse: mse(&run.local_weights),
            federated_test_mse: mse(&run.weights),
            local_metrics: on_test(&run.local_weights),
            federated_metrics: on_test(&run.weights),
            pooled_metrics: run.pooled_metrics.clone(),
            model: file,
        };
        let share = self.config.policy.share_metrics;
        let report = Report {
            weights: (run.params.mode == Mode::Global).then(|| local.weights.clone()),
            local_test_mse: local.local_test_mse.filter(|_| share),
            federated_test_mse: local.federated_test_mse.filter(|_| share),
            peak_rss_bytes: self.peak_rss_bytes,
        };
        self.report_sent = Some(local);
        self.send_coordinator(round, Body::Report(report));
        Ok(())
    }
}

/// One step with an aggregate, via the learning crate's update rule.
fn apply(mode: Mode, objective: &Objective, w: &mut Array1<f64>, r: &AggregateRecord, eta: f64) {
    let sum = Array1::from(r.sum.clone());
    objective.apply(
        mode,
        w,
        &sum,
        r.n_hospitals as usize,
        r.n_total_rows as usize,
        eta,
    );
}

/// The per-round test loss: MSE for regression, mean log-loss for logistic.
fn test_loss(model: ModelKind, prep: Option<&Prepared>, w: &Array1<f64>) -> Option<f64> {
    let t = prep?.test.as_ref()?;
    if model.is_classifier() {
        // From the evaluation sums (no sort for an AUC nobody reads here).
        let sums = local_evaluation(model, t.x(), t.y(), w);
        Some(sums[1] / sums[0].max(1.0))
    } else {
        Some(learning::mse(t.x(), t.y(), w))
    }
}

/// What went wrong when encoding a gradient, without the value itself.
fn encoding_failure(err: &Error) -> String {
    match err {
        Error::Crypto(paillier::Error::SlotOverflow {
            index, int_bits, ..
        }) => format!(
            "gradient value {} has magnitude 2^{int_bits} or more",
            index + 1
        ),
        Error::Crypto(paillier::Error::NonFinite(_)) => "a gradient value is not finite".into(),
        Error::Crypto(paillier::Error::EncodingOverflow(_)) => {
            "a gradient value is out of the encoding's range".into()
        }
        Error::Crypto(_) => "a cryptographic error".into(),
        _ => "an encoding error".into(),
    }
}

/// The local-only model on prepared rows.
fn train_local_on(prep: &Prepared, p: &RunParams, objective: &Objective) -> Array1<f64> {
    objective.train_local(
        p.mode,
        prep.train.x(),
        prep.train.y(),
        p.rounds as usize,
        p.eta,
    )
}

/// Rows preprocessed with `pre`; an error names the data set.
fn prepare(
    name: &str,
    schema: &ConsortiumSchema,
    pre: Preprocessor,
    train: &RawTable,
    test: Option<&RawTable>,
) -> Result<Prepared> {
    let train = pre
        .transform(schema, train)
        .map_err(|e| Error::Config(format!("{name}: the training data: {e}")))?;
    let test = test
        .map(|t| pre.transform(schema, t))
        .transpose()
        .map_err(|e| Error::Config(format!("{name}: the test data: {e}")))?;
    Ok(Prepared {
        preprocessor: pre,
        train,
        test,
    })
}
