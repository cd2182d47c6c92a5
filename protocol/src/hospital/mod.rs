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
use learning::{Dataset, Mode};
use paillier::{Ciphertext, PublicKey};

pub use policy::{HospitalPolicy, MIN_RING};
pub use state::{ring_hash, set_hash, Commitment, HospitalState, STATE_VERSION};

use crate::codec::GradientCodec;
use crate::coordinator::DEFAULT_COORDINATOR_NAME;
use crate::error::{Error, Result};
use crate::masks::{pair_seed, self_seed, MaskSet, Seed, SEED_BYTES};
use crate::wire::{
    Abort, Aggregate, AggregateRecord, Body, Bytes, Envelope, Hello, PeerCommit, PeerRound, Report,
    Reveal, RevealedSeed, RingPass, RoundAck, RoundStart, RunId, RunParams, Setup, Unmask,
};

/// Most messages held back because they arrived before what they depend on.
const MAX_DEFERRED: usize = 64;
/// Bytes held back in deferred messages: this many ring passes at the largest
/// size a ring peer may send (see [`deferred_budget`]).
const DEFERRED_RING_PASSES: usize = 4;

/// What messages of a run look like to a hospital with `features` features
/// under `policy`: its roster, its bound on rounds, and the largest key the
/// paillier crate accepts (the key is the coordinator's choice).
pub fn run_shape(policy: &HospitalPolicy, features: usize) -> crate::limits::RunShape {
    crate::limits::RunShape {
        key_bits: paillier::MAX_KEY_BITS,
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
        }
    }
}

/// Something the driver should know about.
#[derive(Debug)]
#[non_exhaustive]
pub enum HospitalEvent {
    /// The coordinator set this node up (again) for a run.
    SetUp {
        /// The run.
        run_id: RunId,
        /// Rounds already completed (replayed from the history).
        completed_rounds: u32,
    },
    /// A round attempt uses this ring; make sure connections to these peers exist.
    RingChanged {
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
    /// A round completed and the step was taken.
    RoundCompleted {
        /// The round.
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
}

#[derive(Debug)]
struct RunState {
    run_id: RunId,
    params: RunParams,
    codec: GradientCodec,
    local_weights: Array1<f64>,
    weights: Array1<f64>,
    history: Vec<AggregateRecord>,
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
    sent: bool,
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
    attempt: Option<Attempt>,
}

/// A hospital's protocol state machine.
pub struct HospitalMachine {
    config: HospitalConfig,
    train: Dataset,
    test: Option<Dataset>,
    data: [u8; 32],
    mask_key: Seed,
    /// Local-only model, cached by (mode, rounds, eta bits).
    local_cache: Option<((Mode, u32, u64), Array1<f64>)>,
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
        if train.n_rows() == 0 {
            return Err(Error::Config(format!(
                "{} has no training rows",
                config.name
            )));
        }
        if let Some(t) = &test {
            if t.schema() != train.schema() {
                return Err(Error::Config(format!(
                    "{}: the test set's columns differ from the training set's",
                    config.name
                )));
            }
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
        let data = state::data_digest(&train);
        Ok(HospitalMachine {
            config,
            train,
            test,
            data,
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
            schema: self.train.schema(),
            rows: self.train.n_rows() as u64,
            address: self.config.address.clone(),
            completed_rounds: run_id.as_ref().map(|_| completed),
        };
        let (run_id, body) = match run_id {
            Some(id) => (id, Body::Rejoin(hello)),
            None => (RunId::new("none").expect("valid"), Body::Hello(hello)),
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
        let budget = deferred_budget(&self.config.policy, self.train.n_features());
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

    fn local_model(&mut self, mode: Mode, rounds: u32, eta: f64) -> Array1<f64> {
        let key = (mode, rounds, eta.to_bits());
        if let Some((k, w)) = &self.local_cache {
            if *k == key {
                return w.clone();
            }
        }
        let w =
            learning::train_local_for(mode, self.train.x(), self.train.y(), rounds as usize, eta);
        self.local_cache = Some((key, w.clone()));
        w
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
        let p = &s.params;
        self.config
            .policy
            .check_params(p)
            .map_err(|e| Error::PolicyRefused {
                peer: from.to_owned(),
                kind: "setup",
                reason: e,
            })?;
        let n_features = self.train.n_features();
        if s.history.len() > p.rounds as usize {
            return Err(invalid("history is longer than the run".into()));
        }
        for (i, r) in s.history.iter().enumerate() {
            let ok = r.round as usize == i
                && r.sum.len() == n_features
                && r.sum.iter().all(|v| v.is_finite())
                && r.n_hospitals > 0
                && r.n_total_rows > 0;
            if !ok {
                return Err(invalid(format!("history entry {i} is malformed")));
            }
        }
        // A replayed history must extend what this node itself applied.
        if let Some((id, mine)) = &self.persisted.run {
            if *id == run_id {
                if s.history.len() < mine.len() {
                    return Err(Error::PolicyRefused {
                        peer: from.to_owned(),
                        kind: "setup",
                        reason: format!(
                            "the history has {} rounds, but this hospital already applied {} \
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
                            "round {} of the history differs from the aggregate this hospital \
                             applied",
                            i + 1
                        ),
                    });
                }
            }
        }
        let codec = GradientCodec::new(&pk, p.fixed_point, p.pack, n_features)
            .map_err(|e| invalid(e.to_string()))?;
        let local = self.local_model(p.mode, p.rounds, p.eta);
        let mut weights = match p.mode {
            Mode::Seed => local.clone(),
            Mode::Global => Array1::zeros(n_features),
        };
        for r in &s.history {
            apply(p.mode, &mut weights, r, p.eta);
        }
        if self.run.as_ref().is_some_and(|r| r.run_id != run_id) {
            // Another run: nothing of the old one may leak into it.
            self.deferred.retain(|(_, e)| e.run_id == run_id);
        }
        let completed = s.history.len() as u32;
        self.persisted.run = Some((run_id.clone(), s.history.clone()));
        self.run = Some(RunState {
            run_id: run_id.clone(),
            params: s.params,
            codec,
            local_weights: local,
            weights,
            history: s.history,
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

    /// The round state of `round`, created (with the persisted commitment of
    /// its model state, if any) when this is the first message of the round.
    fn round_state(&mut self, round: u32) -> &mut RoundState {
        if self.round.as_ref().is_none_or(|r| r.round != round) {
            let run = self.run.as_ref().expect("within a run");
            let state = state::model_state(&self.data, &run.weights);
            let commitment = self.persisted.commitments.get(&state::hex(&state));
            self.round = Some(RoundState {
                round,
                state,
                seeds: BTreeMap::new(),
                masked_for: commitment.map(|c| c.masked_for.clone()),
                committed: commitment.map(|c| c.members.clone()),
                peer_commits: BTreeMap::new(),
                revealed: false,
                attempt: None,
            });
        }
        self.round.as_mut().expect("just set")
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
        if round >= run.params.rounds {
            return Err(Error::InvalidMessage {
                peer: from.to_owned(),
                kind: "round_start",
                reason: format!(
                    "round {} is beyond the run's {} rounds",
                    round + 1,
                    run.params.rounds
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
            sent: false,
        });
        for (peer, seed) in out {
            let body = Body::PeerRound(PeerRound {
                epoch: rs.epoch,
                ring_hash: Bytes(ring_hash.clone()),
                seed,
            });
            self.send(&peer, round, body);
        }
        self.events.push_back(HospitalEvent::RingChanged {
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

    /// Sends this node's contribution once everything it needs is there.
    fn progress(&mut self) -> Result<()> {
        let me = self.config.name.clone();
        let (Some(run), Some(r)) = (&self.run, &mut self.round) else {
            return Ok(());
        };
        let Some(a) = &r.attempt else {
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
        let grad = learning::gradient(self.train.x(), self.train.y(), &run.weights).to_vec();
        let (round, epoch) = (r.round, a.epoch);
        let mine = match run.codec.encrypt(&grad, masks.as_ref()) {
            Ok(mine) => mine,
            Err(err) => {
                // E.g. a gradient value beyond the fixed-point range: the run
                // cannot go on as configured; the coordinator must hear why.
                let body = Body::Abort(Abort {
                    epoch,
                    // Name the cause and the remedy; never a value of the
                    // gradient itself (a function of this hospital's data).
                    reason: format!(
                        "its gradient at round {} does not fit the fixed-point encoding \
                         ({}): the model is diverging or the features are not scaled; \
                         standardize the features or lower eta",
                        round + 1,
                        encoding_failure(&err)
                    ),
                    dropped: Vec::new(),
                    committed: None,
                    deterministic: true,
                });
                self.send_coordinator(round, body);
                return Err(err);
            }
        };
        let a = r.attempt.as_mut().expect("present");
        let total = match a.incoming.take() {
            Some(inc) => run.codec.add(&inc, &mine)?,
            None => mine,
        };
        let pass = run.codec.to_wire(epoch, &total);
        a.sent = true;
        let next = a.names.get(pos + 1).cloned();
        match next {
            Some(succ) => self.send(&succ, round, Body::RingPass(pass)),
            None => self.send_coordinator(round, Body::RingPass(pass)),
        }
        Ok(())
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
        let hash = state::set_hash(run_id, round, &u.members);
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
        let hash = state::set_hash(&run_id, round, members);
        for peer in members.iter().filter(|n| **n != me) {
            match r.peer_commits.get(peer) {
                None => return Ok(()),
                Some(h) if *h != hash => {
                    return Err(Error::PolicyRefused {
                        peer: peer.clone(),
                        kind: "peer_commit",
                        reason: "it committed to another member set than this node".into(),
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
        self.send_coordinator(round, Body::Reveal(reveal));
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
        let n_features = self.train.n_features();
        if record.round != round
            || record.sum.len() != n_features
            || !record.sum.iter().all(|v| v.is_finite())
            || record.n_hospitals as usize != members.len()
            || record.n_total_rows == 0
        {
            return Err(Error::InvalidMessage {
                peer: from.to_owned(),
                kind: "aggregate",
                reason: format!(
                    "expected round {}'s {n_features} finite values summed over {} hospitals",
                    round + 1,
                    members.len()
                ),
            });
        }
        let share = self.config.policy.share_metrics;
        let run = self.run.as_mut().expect("checked");
        apply(run.params.mode, &mut run.weights, &record, run.params.eta);
        run.history.push(record);
        let weights = run.weights.to_vec();
        let test_mse = self
            .test
            .as_ref()
            .map(|t| learning::mse(t.x(), t.y(), &run.weights));
        if let Some((_, h)) = &mut self.persisted.run {
            h.clone_from(&run.history);
        }
        // The round's seeds are never needed again.
        self.round = None;
        self.persist(false);
        self.send_coordinator(
            round,
            Body::RoundAck(RoundAck {
                test_mse: test_mse.filter(|_| share),
            }),
        );
        self.events.push_back(HospitalEvent::RoundCompleted {
            round,
            weights,
            test_mse,
        });
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
        let (completed, rounds) = (run.completed(), run.params.rounds);
        if round != rounds || completed != rounds {
            // Missed aggregates: ask for a Setup with the full history first.
            self.say_hello();
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "finish",
                why: format!("finish after {completed} of {rounds} rounds"),
            });
        }
        let mse = |w: &Array1<f64>| self.test.as_ref().map(|t| learning::mse(t.x(), t.y(), w));
        let local = LocalReport {
            local_weights: run.local_weights.to_vec(),
            weights: run.weights.to_vec(),
            local_test_mse: mse(&run.local_weights),
            federated_test_mse: mse(&run.weights),
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
fn apply(mode: Mode, w: &mut Array1<f64>, r: &AggregateRecord, eta: f64) {
    let sum = Array1::from(r.sum.clone());
    learning::apply_aggregate(
        mode,
        w,
        &sum,
        r.n_hospitals as usize,
        r.n_total_rows as usize,
        eta,
    );
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
