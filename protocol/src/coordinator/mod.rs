//! The coordinator's state machine: admission of hospitals, the round loop, fault
//! handling and checkpoints, with no I/O.
//!
//! The driver feeds it authenticated messages ([`CoordinatorMachine::handle_message`]),
//! connection changes ([`peer_connected`](CoordinatorMachine::peer_connected),
//! [`peer_lost`](CoordinatorMachine::peer_lost)) and the clock
//! ([`handle_timeout`](CoordinatorMachine::handle_timeout) at
//! [`next_deadline`](CoordinatorMachine::next_deadline)), and drains
//! [`poll_transmit`](CoordinatorMachine::poll_transmit) and
//! [`poll_event`](CoordinatorMachine::poll_event) after every call.
//!
//! # How to call it (as quinn-proto's `Connection`)
//!
//! Getters ([`run_id`](CoordinatorMachine::run_id),
//! [`next_round`](CoordinatorMachine::next_round), ...), handlers
//! (`handle_message`, `handle_timeout`, `peer_connected`, `peer_lost`) and
//! `poll_*`. After every handler call drain `poll_event` first, then
//! `poll_transmit`: a [`CoordinatorEvent::Checkpoint`] must be durable before
//! any transmit polled after it is sent (the round's aggregate is in it, and
//! `--resume` re-sends that same aggregate). Call `handle_timeout` once
//! `next_deadline` has passed.
//!
//! # Round flow
//!
//! `RoundStart` to the ring; members confirm the ring to each other
//! (`PeerRound`, with pairwise seeds) and pass the encrypted, masked, packed
//! running sum head to tail, each receiver sending a `Receipt`; the tail sends
//! the sum here. The coordinator decrypts it (still masked) and asks the ring
//! to `Unmask` exactly its member set; each member commits to that set, tells
//! the others, and once all agree sends its `Reveal` (self-mask seed, and seeds
//! with masking-set members outside the set). With every reveal in, the
//! coordinator removes the masks, decodes with `addends = set size`, makes the
//! aggregate durable (a `Checkpoint` event) and broadcasts it as an
//! `Aggregate`; the round completes when every member acknowledged the step.
//!
//! # Faults
//!
//! A timeout while the sum travels drops the last member that provably held it
//! (the head, or the latest member whose receipt arrived); a lost connection
//! drops the node at once. Retries of a round reuse each member's contribution
//! (hospitals mask it per model state), so a retry reveals nothing new. Once a
//! set was asked to unmask, the round completes with exactly that set or not at
//! all: a missing member stops the run, naming it. A member that forces a second
//! abort in one round (complaints, reconnects) is dropped with that reason.
//! Dropping happens only while at least `min_hospitals` remain, otherwise the
//! run fails naming the missing nodes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use num_bigint::BigUint;
use paillier::{KeyFingerprint, PrivateKey};
use serde::{Deserialize, Serialize};

use crate::codec::GradientCodec;
use crate::error::{Error, Result};
use crate::masks::{MaskSet, SEED_BYTES};
use crate::wire::{
    Abort, Aggregate, AggregateRecord, Body, Bytes, Envelope, Hello, Member, Report, Reveal,
    RingPass, RoundAck, RoundStart, RunId, RunParams, Schema, Setup, Unmask,
};

/// Default node name of the coordinator.
pub const DEFAULT_COORDINATOR_NAME: &str = "coordinator";

/// The fewest hospitals a run may ever have: with two, each hospital learns the
/// other's gradient by subtracting its own from the aggregate.
pub const MIN_HOSPITALS: usize = 3;

/// Version of the [`Checkpoint`] format.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Configuration of a coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Id of the run (a resumed machine takes the checkpoint's instead).
    pub run_id: RunId,
    /// This node's name, [`DEFAULT_COORDINATOR_NAME`] by default.
    pub name: String,
    /// The hospitals, in ring order, with their default addresses.
    pub roster: Vec<Member>,
    /// Hyper-parameters sent to the hospitals.
    pub params: RunParams,
    /// Fewest hospitals to run with; never below [`MIN_HOSPITALS`] (default 3).
    pub min_hospitals: usize,
    /// How long to wait for the whole roster before starting with those present
    /// (default 120 s).
    pub join_timeout: Duration,
    /// Deadline of each round phase (passing the sum, acknowledging; default 60 s).
    pub round_timeout: Duration,
    /// Attempts per round before the run fails (default 5).
    pub max_attempts: u32,
}

impl CoordinatorConfig {
    /// A configuration with the default name, minimum and timeouts.
    pub fn new(run_id: RunId, roster: Vec<Member>, params: RunParams) -> CoordinatorConfig {
        CoordinatorConfig {
            run_id,
            name: DEFAULT_COORDINATOR_NAME.to_owned(),
            roster,
            params,
            min_hospitals: MIN_HOSPITALS,
            join_timeout: Duration::from_secs(120),
            round_timeout: Duration::from_secs(60),
            max_attempts: 5,
        }
    }
}

/// Per-round record of who took part and the test MSE each reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// The round (0-based).
    pub round: u32,
    /// The ring of the successful attempt, head first.
    pub participants: Vec<String>,
    /// Test MSE after the step, per hospital that acknowledged (None: no test set).
    pub test_mse: BTreeMap<String, Option<f64>>,
    /// Attempts the round took.
    pub attempts: u32,
}

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
    /// Per round.
    pub rounds: Vec<RoundSummary>,
    /// Aggregates of all rounds.
    pub history: Vec<AggregateRecord>,
}

/// Something the driver should know about (log, persist, report).
#[derive(Debug)]
#[non_exhaustive]
pub enum CoordinatorEvent {
    /// A roster hospital said hello; it joins at the next round boundary.
    HospitalJoined {
        /// Its name.
        name: String,
        /// Its training rows.
        rows: u64,
    },
    /// An attempt of a round started.
    RoundStarted {
        /// The round.
        round: u32,
        /// Its mask epoch.
        epoch: u64,
        /// The ring, head first.
        ring: Vec<String>,
    },
    /// An attempt of a round was abandoned; it will be retried.
    RoundAborted {
        /// The round.
        round: u32,
        /// Why.
        reason: String,
    },
    /// A hospital was dropped from the ring.
    NodeDropped {
        /// Its name.
        name: String,
        /// The round during which it was dropped.
        round: u32,
        /// Why.
        reason: String,
    },
    /// A round completed.
    RoundCompleted(RoundSummary),
    /// Persist this (atomically) to be able to resume.
    Checkpoint(Box<Checkpoint>),
    /// The run finished; write the results.
    Finished(Box<RunResults>),
    /// The run stopped with an error (hospitals were told to stop).
    Failed(Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    /// Never said hello (or lost before joining).
    Absent,
    /// Said hello; enters the ring (and gets a `Setup`) at the next round boundary.
    Waiting,
    /// A ring member that reconnected: gets a `Setup` again and stays in the ring.
    Resync,
    /// In the ring, set up.
    Active,
    /// Dropped for a fault; may say hello again.
    Dropped,
}

#[derive(Debug)]
struct Node {
    roster_address: String,
    address: String,
    schema: Option<Schema>,
    rows: u64,
    connected: bool,
    state: NodeState,
}

#[derive(Debug)]
enum Step {
    Collecting {
        /// Members that showed they are alive in this attempt.
        started: BTreeSet<String>,
        /// Members that acknowledged receiving the running sum.
        received: BTreeSet<String>,
    },
    Unmasking {
        /// The decrypted, still masked sum.
        plaintexts: Vec<BigUint>,
        /// Reveals received, by member.
        reveals: BTreeMap<String, Reveal>,
        /// How many times `Unmask` went out to this set. A repeat is safe:
        /// each member has committed to exactly this set and answers a repeat
        /// with the same material (or not at all), so a lost message costs a
        /// timeout, not the run.
        requests: u32,
    },
    Acking {
        acked: BTreeMap<String, Option<f64>>,
    },
}

#[derive(Debug)]
struct RoundState {
    round: u32,
    epoch: u64,
    ring: Vec<String>,
    deadline: Instant,
    step: Step,
}

#[derive(Debug)]
enum Phase {
    Joining {
        deadline: Instant,
    },
    Round(RoundState),
    Reporting {
        deadline: Instant,
        expected: Vec<String>,
        reports: BTreeMap<String, Report>,
    },
    Finished,
    Failed,
}

/// The coordinator's protocol state machine.
#[derive(Debug)]
pub struct CoordinatorMachine {
    config: CoordinatorConfig,
    run_id: RunId,
    sk: PrivateKey,
    nodes: BTreeMap<String, Node>,
    schema: Option<Schema>,
    codec: Option<GradientCodec>,
    incarnation: u32,
    epoch_counter: u32,
    next_round: u32,
    attempts: u32,
    history: Vec<AggregateRecord>,
    summaries: Vec<RoundSummary>,
    /// The member set `next_round` must be completed with, once asked to
    /// unmask (or learned from a hospital committed to it).
    committed: Option<Vec<String>>,
    /// Aborts each member forced in the current round.
    forced_aborts: BTreeMap<String, u32>,
    phase: Phase,
    transmits: VecDeque<(String, Envelope)>,
    events: VecDeque<CoordinatorEvent>,
}

impl CoordinatorMachine {
    /// A coordinator for a new run, waiting for the roster's hellos.
    ///
    /// Fails if the configuration is invalid or the roster has fewer than
    /// `min_hospitals` (at least 3) hospitals.
    pub fn new(
        config: CoordinatorConfig,
        private_key: PrivateKey,
        now: Instant,
    ) -> Result<CoordinatorMachine> {
        validate_config(&config, &private_key)?;
        let run_id = config.run_id.clone();
        Ok(Self::build(config, run_id, private_key, now))
    }

    /// A coordinator continuing the run saved in `checkpoint`. The configuration's
    /// roster and hyper-parameters must match the checkpoint's, and the key its
    /// fingerprint; timeouts and addresses may differ. Hospitals that say hello
    /// get the aggregate history and recompute their weights, so the run ends with
    /// the same model as an uninterrupted one.
    pub fn resume(
        config: CoordinatorConfig,
        private_key: PrivateKey,
        checkpoint: Checkpoint,
        now: Instant,
    ) -> Result<CoordinatorMachine> {
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
        let consecutive =
            cp.history.iter().enumerate().all(|(i, r)| {
                r.round as usize == i && r.sum.len() == cp.schema.feature_names.len()
            });
        if cp.history.len() != cp.next_round as usize
            || !consecutive
            || cp.next_round > cp.params.rounds
        {
            return Err(Error::CheckpointMismatch(format!(
                "history of {} rounds is inconsistent with next round {}",
                cp.history.len(),
                cp.next_round
            )));
        }
        let mut m = Self::build(config, cp.run_id.clone(), private_key, now);
        m.codec = Some(m.make_codec(cp.schema.feature_names.len())?);
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

    fn build(
        config: CoordinatorConfig,
        run_id: RunId,
        sk: PrivateKey,
        now: Instant,
    ) -> CoordinatorMachine {
        let nodes = config
            .roster
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    Node {
                        roster_address: m.address.clone(),
                        address: m.address.clone(),
                        schema: None,
                        rows: 0,
                        connected: false,
                        state: NodeState::Absent,
                    },
                )
            })
            .collect();
        let deadline = now + config.join_timeout;
        CoordinatorMachine {
            config,
            run_id,
            sk,
            nodes,
            schema: None,
            codec: None,
            incarnation: 0,
            epoch_counter: 0,
            next_round: 0,
            attempts: 0,
            history: Vec::new(),
            summaries: Vec::new(),
            committed: None,
            forced_aborts: BTreeMap::new(),
            phase: Phase::Joining { deadline },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The roster's hospital names, ring order.
    pub fn roster(&self) -> Vec<String> {
        self.config.roster.iter().map(|m| m.name.clone()).collect()
    }

    /// The first round not yet completed.
    pub fn next_round(&self) -> u32 {
        self.next_round
    }

    /// Whether the run is over (finished or failed).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Finished | Phase::Failed)
    }

    /// The next message to send: (recipient node name, envelope).
    pub fn poll_transmit(&mut self) -> Option<(String, Envelope)> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<CoordinatorEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Joining { deadline } | Phase::Reporting { deadline, .. } => Some(*deadline),
            Phase::Round(rs) => Some(rs.deadline),
            Phase::Finished | Phase::Failed => None,
        }
    }

    /// The transport connected an authenticated peer.
    pub fn peer_connected(&mut self, _now: Instant, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.connected = true;
        }
    }

    /// The transport lost its connection to a peer. A ring member is dropped at
    /// once if enough hospitals remain; otherwise the round's timeout decides.
    pub fn peer_lost(&mut self, now: Instant, name: &str) {
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        node.connected = false;
        if node.state == NodeState::Waiting {
            node.state = NodeState::Absent;
        }
        let in_ring = match &self.phase {
            Phase::Round(rs) => rs.ring.iter().any(|n| n == name),
            _ => false,
        };
        let committed = self
            .committed
            .as_ref()
            .is_some_and(|c| c.iter().any(|n| n == name));
        if in_ring && !committed {
            let ring_len = match &self.phase {
                Phase::Round(rs) => rs.ring.len(),
                _ => 0,
            };
            if ring_len > self.min_hospitals() {
                self.abort_round(
                    now,
                    format!("lost the connection to {name}"),
                    vec![name.to_owned()],
                );
            }
        }
    }

    /// Advances timers; call at (or after) [`next_deadline`](Self::next_deadline).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        match &self.phase {
            Phase::Joining { .. } => self.try_start(now, true),
            Phase::Round(rs) => match &rs.step {
                Step::Collecting { started, received } => {
                    // A member that never showed it was alive in this attempt
                    // is blamed first (every member waits for every other's
                    // ring confirmation, so a silent one stalls them all).
                    // Otherwise the last member that provably held the sum
                    // (the head, or the latest whose receipt arrived) is.
                    let silent = rs.ring.iter().find(|n| !started.contains(*n));
                    let (culprit, reason) = match silent {
                        Some(s) => (
                            s.clone(),
                            format!(
                                "round {} timed out: {s} never answered this attempt",
                                rs.round + 1
                            ),
                        ),
                        None => {
                            let holder = rs
                                .ring
                                .iter()
                                .rposition(|n| received.contains(n))
                                .unwrap_or(0);
                            (
                                rs.ring[holder].clone(),
                                format!(
                                    "round {} timed out: {} held the sum last and did not pass \
                                     it on",
                                    rs.round + 1,
                                    rs.ring[holder]
                                ),
                            )
                        }
                    };
                    self.abort_round(now, reason, vec![culprit]);
                }
                Step::Unmasking {
                    reveals, requests, ..
                } => {
                    let missing: Vec<String> = rs
                        .ring
                        .iter()
                        .filter(|n| !reveals.contains_key(*n))
                        .cloned()
                        .collect();
                    let all_connected = missing.iter().all(|n| self.nodes[n].connected);
                    if all_connected && *requests < self.config.max_attempts {
                        // Someone's PeerCommit or Reveal was lost: ask the same
                        // set again (every member, since a lost PeerCommit
                        // leaves a member that did reveal waiting on nothing).
                        self.repeat_unmask(now);
                        return;
                    }
                    let err = Error::SetIncomplete {
                        round: rs.round,
                        members: rs.ring.clone(),
                        missing,
                    };
                    self.fail(err);
                }
                Step::Acking { acked, .. } => {
                    let missing: Vec<String> = rs
                        .ring
                        .iter()
                        .filter(|n| {
                            !acked.contains_key(*n) && self.nodes[*n].state != NodeState::Dropped
                        })
                        .cloned()
                        .collect();
                    let remaining = rs
                        .ring
                        .iter()
                        .filter(|n| {
                            !missing.contains(n) && self.nodes[*n].state != NodeState::Dropped
                        })
                        .count();
                    let round = rs.round;
                    if remaining < self.min_hospitals() {
                        let err = self.too_few(remaining, &missing);
                        self.fail(err);
                        return;
                    }
                    let epoch = rs.epoch;
                    let reason = format!("no acknowledgement of round {} in time", round + 1);
                    for name in &missing {
                        if self.nodes[name].connected {
                            let body = Body::Abort(Abort {
                                epoch,
                                reason: reason.clone(),
                                dropped: vec![name.clone()],
                                committed: None,
                                deterministic: false,
                            });
                            self.send(name, round, body);
                        }
                        self.drop_node(name, round, reason.clone());
                    }
                    self.complete_round(now);
                }
            },
            Phase::Reporting { .. } => self.finish(),
            Phase::Finished | Phase::Failed => {}
        }
    }

    /// Handles one message from the authenticated peer `from`. An `Err` means the
    /// message was rejected (and otherwise ignored); log it. The machine may also
    /// have aborted the round because of it.
    pub fn handle_message(&mut self, now: Instant, from: &str, env: Envelope) -> Result<()> {
        if self.is_done() {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: env.body.kind(),
                why: "the run is over".into(),
            });
        }
        env.check_header(from)?;
        if !self.nodes.contains_key(from) {
            return Err(Error::UnknownPeer {
                peer: from.to_owned(),
                role: "in the roster",
            });
        }
        let kind = env.body.kind();
        if let Body::Hello(h) | Body::Rejoin(h) = env.body {
            return self.on_hello(now, from, h);
        }
        if env.run_id != self.run_id {
            return Err(Error::WrongRun {
                peer: from.to_owned(),
                got: env.run_id,
                expected: self.run_id.clone(),
            });
        }
        match env.body {
            Body::RingPass(p) => self.on_ring_pass(now, from, env.round, p),
            Body::Receipt(r) => {
                let rs = self.current_round(from, kind, env.round, r.epoch)?;
                if let Step::Collecting { started, received } = &mut rs.step {
                    match r.stage {
                        crate::wire::ReceiptStage::Started => started.insert(from.to_owned()),
                        crate::wire::ReceiptStage::SumReceived => {
                            started.insert(from.to_owned());
                            received.insert(from.to_owned())
                        }
                    };
                }
                Ok(())
            }
            Body::Reveal(r) => self.on_reveal(now, from, env.round, r),
            Body::RoundAck(a) => self.on_ack(now, from, env.round, a),
            Body::Abort(a) => self.on_hospital_abort(now, from, env.round, a),
            Body::Report(r) => self.on_report(from, env.round, r),
            other => Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: other.kind(),
                why: "hospitals do not send it to the coordinator".into(),
            }),
        }
    }

    fn min_hospitals(&self) -> usize {
        self.config.min_hospitals.max(MIN_HOSPITALS)
    }

    fn make_codec(&self, len: usize) -> Result<GradientCodec> {
        GradientCodec::new(
            self.sk.public_key(),
            self.config.params.fixed_point,
            self.config.params.pack,
            len,
        )
    }

    fn send(&mut self, to: &str, round: u32, body: Body) {
        let env = Envelope::new(self.run_id.clone(), round, self.config.name.clone(), body);
        self.transmits.push_back((to.to_owned(), env));
    }

    fn too_few(&self, available: usize, missing_first: &[String]) -> Error {
        let mut missing: Vec<String> = missing_first.to_vec();
        for name in self.config.roster.iter().map(|m| &m.name) {
            let active = self.nodes[name].state == NodeState::Active;
            if !active && !missing.contains(name) {
                missing.push(name.clone());
            }
        }
        Error::TooFewHospitals {
            available,
            min: self.min_hospitals(),
            missing,
        }
    }

    /// Current round attempt for a message of `kind` from ring member `from`.
    fn current_round(
        &mut self,
        from: &str,
        kind: &'static str,
        round: u32,
        epoch: u64,
    ) -> Result<&mut RoundState> {
        let next_round = self.next_round;
        let rs = match &mut self.phase {
            Phase::Round(rs) => rs,
            _ if round < next_round => {
                return Err(Error::StaleRound {
                    peer: from.to_owned(),
                    got: round,
                    current: next_round,
                })
            }
            _ => {
                return Err(Error::Unexpected {
                    peer: from.to_owned(),
                    kind,
                    why: "no round is running".into(),
                })
            }
        };
        if round < rs.round {
            return Err(Error::StaleRound {
                peer: from.to_owned(),
                got: round,
                current: rs.round,
            });
        }
        if round > rs.round {
            return Err(Error::FutureRound {
                peer: from.to_owned(),
                got: round,
                current: rs.round,
            });
        }
        if epoch != rs.epoch {
            return Err(Error::WrongEpoch {
                peer: from.to_owned(),
                got: epoch,
                current: rs.epoch,
            });
        }
        if !rs.ring.iter().any(|n| n == from) {
            return Err(Error::UnknownPeer {
                peer: from.to_owned(),
                role: "in this round's ring",
            });
        }
        Ok(rs)
    }

    fn on_hello(&mut self, now: Instant, from: &str, h: Hello) -> Result<()> {
        let invalid = |reason: String| Error::InvalidMessage {
            peer: from.to_owned(),
            kind: "hello",
            reason,
        };
        if h.name != from {
            return Err(invalid(format!("names itself {:?}", h.name)));
        }
        if h.rows == 0 {
            return Err(invalid("announces 0 training rows".into()));
        }
        if h.schema.feature_names.is_empty() {
            return Err(invalid("announces no feature columns".into()));
        }
        if let Some(run_schema) = &self.schema {
            if let Some(detail) = schema_diff(run_schema, &h.schema) {
                return Err(Error::SchemaMismatch {
                    hospital: from.to_owned(),
                    reference: "the run's schema".into(),
                    detail,
                });
            }
        }
        if matches!(self.phase, Phase::Finished | Phase::Failed) {
            return Ok(());
        }
        let rows = h.rows;
        let node = self.nodes.get_mut(from).expect("checked by the caller");
        node.address = h.address.unwrap_or_else(|| node.roster_address.clone());
        node.schema = Some(h.schema);
        node.rows = rows;
        node.connected = true;
        let previous = node.state;
        self.events.push_back(CoordinatorEvent::HospitalJoined {
            name: from.to_owned(),
            rows,
        });
        match &self.phase {
            Phase::Joining { .. } => {
                self.nodes.get_mut(from).expect("present").state = NodeState::Waiting;
                self.try_start(now, false);
            }
            Phase::Round(rs) => {
                let in_ring = rs.ring.iter().any(|n| n == from);
                if previous == NodeState::Active && in_ring {
                    // It lost its state or our messages: set it up again and
                    // restart the attempt with it, once per round.
                    self.nodes.get_mut(from).expect("present").state = NodeState::Resync;
                    if self.count_forced_abort(from) {
                        self.abort_round(
                            now,
                            format!("{from} reconnected a second time in this round"),
                            vec![from.to_owned()],
                        );
                    } else {
                        self.abort_round(now, format!("{from} reconnected"), vec![]);
                    }
                } else if previous != NodeState::Resync {
                    self.nodes.get_mut(from).expect("present").state = NodeState::Waiting;
                }
            }
            Phase::Reporting { expected, .. } => {
                if expected.iter().any(|n| n == from) {
                    let setup = self.setup_body();
                    self.send(from, self.next_round, setup);
                    self.send(from, self.next_round, Body::Finish);
                } else {
                    self.nodes.get_mut(from).expect("present").state = NodeState::Waiting;
                }
            }
            Phase::Finished | Phase::Failed => {}
        }
        Ok(())
    }

    fn try_start(&mut self, now: Instant, deadline_passed: bool) {
        let joined: Vec<String> = self
            .config
            .roster
            .iter()
            .filter(|m| self.nodes[&m.name].state == NodeState::Waiting)
            .map(|m| m.name.clone())
            .collect();
        let all = joined.len() == self.config.roster.len();
        if !all && !deadline_passed {
            return;
        }
        if joined.len() < self.min_hospitals() {
            let missing: Vec<String> = self
                .config
                .roster
                .iter()
                .filter(|m| !joined.contains(&m.name))
                .map(|m| m.name.clone())
                .collect();
            let err = Error::TooFewHospitals {
                available: joined.len(),
                min: self.min_hospitals(),
                missing,
            };
            self.fail(err);
            return;
        }
        if self.schema.is_none() {
            let reference = &joined[0];
            let ref_schema = self.nodes[reference]
                .schema
                .clone()
                .expect("joined nodes have a schema");
            for name in &joined[1..] {
                let s = self.nodes[name].schema.as_ref().expect("joined");
                if let Some(detail) = schema_diff(&ref_schema, s) {
                    let err = Error::SchemaMismatch {
                        hospital: name.clone(),
                        reference: reference.clone(),
                        detail,
                    };
                    self.fail(err);
                    return;
                }
            }
            match self.make_codec(ref_schema.feature_names.len()) {
                Ok(c) => self.codec = Some(c),
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
            self.schema = Some(ref_schema);
        }
        self.begin_round(now);
    }

    fn setup_body(&self) -> Body {
        let pk = self.sk.public_key();
        Body::Setup(Setup {
            public_key: Bytes(pk.to_bytes()),
            key_fingerprint: pk.fingerprint(),
            params: self.config.params.clone(),
            history: self.history.clone(),
        })
    }

    /// Starts an attempt of `next_round` with a fresh mask epoch. On a round's first
    /// attempt (a round boundary) waiting hospitals are set up and enter the ring;
    /// retries only re-admit ring members that reconnected, so a flapping node
    /// cannot stall a round.
    fn begin_round(&mut self, now: Instant) {
        let boundary = self.attempts == 0;
        let waiting: Vec<String> = self
            .config
            .roster
            .iter()
            .filter(|m| match self.nodes[&m.name].state {
                NodeState::Resync => true,
                NodeState::Waiting => boundary,
                _ => false,
            })
            .map(|m| m.name.clone())
            .collect();
        if !waiting.is_empty() {
            let setup = self.setup_body();
            for name in waiting {
                self.send(&name, self.next_round, setup.clone());
                self.nodes.get_mut(&name).expect("roster").state = NodeState::Active;
            }
        }
        if self.next_round >= self.config.params.rounds {
            self.start_reporting(now);
            return;
        }
        let ring: Vec<Member> = self
            .config
            .roster
            .iter()
            .filter(|m| self.nodes[&m.name].state == NodeState::Active)
            .filter(|m| self.committed.as_ref().is_none_or(|c| c.contains(&m.name)))
            .map(|m| Member {
                name: m.name.clone(),
                address: self.nodes[&m.name].address.clone(),
            })
            .collect();
        if let Some(c) = &self.committed {
            if ring.len() != c.len() {
                let present: Vec<&String> = ring.iter().map(|m| &m.name).collect();
                let err = Error::SetIncomplete {
                    round: self.next_round,
                    members: c.clone(),
                    missing: c.iter().filter(|n| !present.contains(n)).cloned().collect(),
                };
                self.fail(err);
                return;
            }
        }
        if ring.len() < self.min_hospitals() {
            let err = self.too_few(ring.len(), &[]);
            self.fail(err);
            return;
        }
        if ring.len() as u64 > self.config.params.fixed_point.max_addends {
            let err = Error::Config(format!(
                "{} hospitals exceed the fixed-point encoding's max_addends {}",
                ring.len(),
                self.config.params.fixed_point.max_addends
            ));
            self.fail(err);
            return;
        }
        self.epoch_counter += 1;
        let epoch = (u64::from(self.incarnation) << 32) | u64::from(self.epoch_counter);
        let n_total_rows = ring.iter().map(|m| self.nodes[&m.name].rows).sum();
        let names: Vec<String> = ring.iter().map(|m| m.name.clone()).collect();
        let start = Body::RoundStart(RoundStart {
            epoch,
            ring,
            n_total_rows,
        });
        for name in &names {
            self.send(name, self.next_round, start.clone());
        }
        self.events.push_back(CoordinatorEvent::RoundStarted {
            round: self.next_round,
            epoch,
            ring: names.clone(),
        });
        self.attempts += 1;
        self.phase = Phase::Round(RoundState {
            round: self.next_round,
            epoch,
            ring: names,
            deadline: now + self.config.round_timeout,
            step: Step::Collecting {
                started: BTreeSet::new(),
                received: BTreeSet::new(),
            },
        });
    }

    fn drop_node(&mut self, name: &str, round: u32, reason: String) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.state = NodeState::Dropped;
        }
        self.events.push_back(CoordinatorEvent::NodeDropped {
            name: name.to_owned(),
            round,
            reason,
        });
    }

    /// Abandons the current attempt, drops `drop` (if enough remain) and retries.
    fn abort_round(&mut self, now: Instant, reason: String, drop: Vec<String>) {
        let (round, epoch, ring, acking) = match &self.phase {
            Phase::Round(rs) => (
                rs.round,
                rs.epoch,
                rs.ring.clone(),
                matches!(rs.step, Step::Acking { .. }),
            ),
            _ => return,
        };
        if let Some(c) = &self.committed {
            if !acking && drop.iter().any(|n| c.contains(n)) {
                // The set was asked to unmask: it completes as it is or not at all.
                let err = Error::SetIncomplete {
                    round,
                    members: c.clone(),
                    missing: drop.clone(),
                };
                self.fail(err);
                return;
            }
        }
        let remaining = ring
            .iter()
            .filter(|n| !drop.contains(n) && self.nodes[*n].state != NodeState::Dropped)
            .count();
        if remaining < self.min_hospitals() {
            let err = self.too_few(remaining, &drop);
            self.fail(err);
            return;
        }
        if acking {
            // The aggregate is out and hospitals are applying it: the round cannot
            // be redone. Drop who must go and complete once the rest acknowledged;
            // a reconnected member is set up again at the next round.
            for name in &drop {
                self.drop_node(name, round, reason.clone());
            }
            if self.acks_complete() {
                self.complete_round(now);
            }
            return;
        }
        for name in &ring {
            if self.nodes[name].connected {
                let body = Body::Abort(Abort {
                    epoch,
                    reason: reason.clone(),
                    dropped: drop.clone(),
                    committed: None,
                    deterministic: false,
                });
                self.send(name, round, body);
            }
        }
        self.events.push_back(CoordinatorEvent::RoundAborted {
            round,
            reason: reason.clone(),
        });
        for name in &drop {
            self.drop_node(name, round, reason.clone());
        }
        if self.attempts >= self.config.max_attempts {
            self.fail(Error::RoundFailed {
                round,
                attempts: self.attempts,
                reason,
            });
            return;
        }
        self.begin_round(now);
    }

    fn on_ring_pass(&mut self, now: Instant, from: &str, round: u32, p: RingPass) -> Result<()> {
        let rs = self.current_round(from, "ring_pass", round, p.epoch)?;
        let tail = rs.ring.last().expect("rings are never empty");
        if tail != from {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "ring_pass",
                why: format!("only the tail ({tail}) sends the sum to the coordinator"),
            });
        }
        if !matches!(rs.step, Step::Collecting { .. }) {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "ring_pass",
                why: "the round's sum was already received".into(),
            });
        }
        let codec = self.codec.as_ref().expect("a running round has a codec");
        let decrypted = codec
            .parse(from, &p)
            .and_then(|cts| codec.decrypt_raw(&self.sk, &cts));
        let plaintexts = match decrypted {
            Ok(pt) => pt,
            Err(err) => {
                self.abort_round(now, format!("rejected the sum: {err}"), vec![]);
                return Err(err);
            }
        };
        if !self.config.params.masks {
            return self.finalize_aggregate(now, from, plaintexts);
        }
        // Ask exactly this attempt's members to unmask; from now on the round
        // completes with this set or not at all.
        let Phase::Round(rs) = &mut self.phase else {
            unreachable!("checked above")
        };
        rs.step = Step::Unmasking {
            plaintexts,
            reveals: BTreeMap::new(),
            requests: 0,
        };
        self.committed = Some(rs.ring.clone());
        self.repeat_unmask(now);
        Ok(())
    }

    /// Sends `Unmask` for the committed set to every member of the current
    /// attempt and restarts the round timer.
    fn repeat_unmask(&mut self, now: Instant) {
        let Phase::Round(rs) = &mut self.phase else {
            return;
        };
        let Step::Unmasking { requests, .. } = &mut rs.step else {
            return;
        };
        *requests += 1;
        rs.deadline = now + self.config.round_timeout;
        let (round, epoch, ring) = (rs.round, rs.epoch, rs.ring.clone());
        let body = Body::Unmask(Unmask {
            epoch,
            members: ring.clone(),
        });
        for name in &ring {
            self.send(name, round, body.clone());
        }
    }

    fn on_reveal(&mut self, now: Instant, from: &str, round: u32, r: Reveal) -> Result<()> {
        let next_round = self.next_round;
        let run_id = self.run_id.clone();
        let roster: Vec<String> = self.config.roster.iter().map(|m| m.name.clone()).collect();
        let rs = match &mut self.phase {
            Phase::Round(rs) if rs.round == round => rs,
            _ => {
                return Err(if round < next_round {
                    Error::StaleRound {
                        peer: from.to_owned(),
                        got: round,
                        current: next_round,
                    }
                } else {
                    Error::Unexpected {
                        peer: from.to_owned(),
                        kind: "reveal",
                        why: "no round is being unmasked".into(),
                    }
                })
            }
        };
        if !rs.ring.iter().any(|n| n == from) {
            return Err(Error::UnknownPeer {
                peer: from.to_owned(),
                role: "in the set being unmasked",
            });
        }
        let Step::Unmasking { reveals, .. } = &mut rs.step else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "reveal",
                why: "no set is being unmasked".into(),
            });
        };
        let invalid = |reason: String| Error::InvalidMessage {
            peer: from.to_owned(),
            kind: "reveal",
            reason,
        };
        if r.set_hash.0 != crate::hospital::state::set_hash(&run_id, round, &rs.ring) {
            return Err(invalid("it is for another member set".into()));
        }
        if r.self_seed.0.len() != SEED_BYTES {
            return Err(invalid("the self-mask seed is not 32 bytes".into()));
        }
        let mut peers = BTreeSet::new();
        for p in &r.pair_seeds {
            if p.seed.0.len() != SEED_BYTES
                || rs.ring.contains(&p.peer)
                || !roster.contains(&p.peer)
                || !peers.insert(p.peer.as_str())
            {
                return Err(invalid(format!(
                    "its seed with {:?} is malformed, repeated or with a member of the set",
                    p.peer
                )));
            }
        }
        reveals.insert(from.to_owned(), r);
        if reveals.len() < rs.ring.len() {
            return Ok(());
        }
        // Every member revealed: remove the masks.
        let Step::Unmasking {
            mut plaintexts,
            reveals,
            ..
        } = std::mem::replace(
            &mut rs.step,
            Step::Collecting {
                started: BTreeSet::new(),
                received: BTreeSet::new(),
            },
        )
        else {
            unreachable!("matched above")
        };
        let seed = |b: &Bytes| {
            let mut s = zeroize::Zeroizing::new([0u8; SEED_BYTES]);
            s.copy_from_slice(&b.0);
            s
        };
        let masks: Vec<MaskSet> = reveals
            .iter()
            .map(|(name, r)| {
                let pairs = r
                    .pair_seeds
                    .iter()
                    .map(|p| (p.peer.clone(), seed(&p.seed)))
                    .collect();
                MaskSet::new(name.clone(), round, Some(seed(&r.self_seed)), pairs)
            })
            .collect();
        let codec = self.codec.as_ref().expect("a running round has a codec");
        codec.unmask(&mut plaintexts, &masks);
        self.finalize_aggregate(now, from, plaintexts)
    }

    /// Decodes the unmasked sum of the current attempt, makes it durable (a
    /// checkpoint event, before any transmit) and broadcasts it.
    fn finalize_aggregate(
        &mut self,
        now: Instant,
        from: &str,
        plaintexts: Vec<BigUint>,
    ) -> Result<()> {
        let Phase::Round(rs) = &self.phase else {
            unreachable!("only within a round")
        };
        let (round, ring) = (rs.round, rs.ring.clone());
        let codec = self.codec.as_ref().expect("a running round has a codec");
        let sum = match codec.decode_sum(&plaintexts, ring.len() as u64) {
            Ok(sum) if sum.iter().all(|v| v.is_finite()) => sum,
            Ok(_) => {
                let err = Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "ring_pass",
                    reason: "the aggregate decodes to non-finite values".into(),
                };
                self.fail(err);
                return Ok(());
            }
            Err(err) => {
                // The set is fixed: this cannot be retried with other members.
                let err = Error::RoundFailed {
                    round,
                    attempts: self.attempts,
                    reason: format!("the unmasked aggregate does not decode: {err}"),
                };
                self.fail(err);
                return Ok(());
            }
        };
        let record = AggregateRecord {
            round,
            sum,
            n_hospitals: ring.len() as u32,
            n_total_rows: ring.iter().map(|n| self.nodes[n].rows).sum(),
        };
        self.history.push(record.clone());
        self.summaries.push(RoundSummary {
            round,
            participants: ring.clone(),
            test_mse: BTreeMap::new(),
            attempts: self.attempts,
        });
        self.next_round += 1;
        self.committed = None;
        // Durable before it is broadcast: a resumed coordinator re-sends this
        // very aggregate instead of collecting a second one.
        let checkpoint = self.checkpoint();
        self.events
            .push_back(CoordinatorEvent::Checkpoint(Box::new(checkpoint)));
        let body = Body::Aggregate(Aggregate { record });
        for name in &ring {
            self.send(name, round, body.clone());
        }
        let Phase::Round(rs) = &mut self.phase else {
            unreachable!("only within a round")
        };
        rs.step = Step::Acking {
            acked: BTreeMap::new(),
        };
        rs.deadline = now + self.config.round_timeout;
        Ok(())
    }

    /// A hospital's `Abort`: a complaint about the attempt, or a refusal that
    /// names the set it is committed to.
    fn on_hospital_abort(&mut self, now: Instant, from: &str, round: u32, a: Abort) -> Result<()> {
        // Only a member of the attempt under way may abort it (a dropped
        // member aiming at the retry's epoch would otherwise exhaust the
        // round's attempts).
        self.current_round(from, "abort", round, a.epoch)?;
        if a.deterministic {
            // Retrying cannot help: stop now, with the cause.
            let err = Error::RoundFailed {
                round,
                attempts: self.attempts,
                reason: format!("{from} reported: {}", a.reason),
            };
            self.fail(err);
            return Ok(());
        }
        if let Some(set) = a.committed {
            let roster: Vec<&String> = self.config.roster.iter().map(|m| &m.name).collect();
            if set.len() < self.min_hospitals() || set.iter().any(|n| !roster.contains(&n)) {
                return Err(Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "abort",
                    reason: format!("it claims to be committed to an impossible set {set:?}"),
                });
            }
            match &self.committed {
                Some(c) if *c != set => {
                    let err = Error::RoundFailed {
                        round,
                        attempts: self.attempts,
                        reason: format!(
                            "{from} is committed to the member set {set:?}, others to {c:?}; \
                             the round cannot complete"
                        ),
                    };
                    self.fail(err);
                    return Ok(());
                }
                _ => self.committed = Some(set),
            }
            self.abort_round(now, format!("{from} refused: {}", a.reason), vec![]);
            return Ok(());
        }
        if self.count_forced_abort(from) {
            self.abort_round(
                now,
                format!("{from} forced a second abort of this round: {}", a.reason),
                vec![from.to_owned()],
            );
        } else {
            self.abort_round(now, format!("{from} reported: {}", a.reason), vec![]);
        }
        Ok(())
    }

    /// Counts an abort `name` caused; `true` when it is its second this round.
    fn count_forced_abort(&mut self, name: &str) -> bool {
        let n = self.forced_aborts.entry(name.to_owned()).or_insert(0);
        *n += 1;
        *n >= 2
    }

    fn on_ack(&mut self, now: Instant, from: &str, round: u32, a: RoundAck) -> Result<()> {
        let next_round = self.next_round;
        let rs = match &mut self.phase {
            Phase::Round(rs) if rs.round == round => rs,
            _ if round < next_round => {
                return Err(Error::StaleRound {
                    peer: from.to_owned(),
                    got: round,
                    current: next_round,
                })
            }
            _ if round > next_round => {
                return Err(Error::FutureRound {
                    peer: from.to_owned(),
                    got: round,
                    current: next_round,
                })
            }
            _ => {
                return Err(Error::Unexpected {
                    peer: from.to_owned(),
                    kind: "round_ack",
                    why: format!("round {} is not running", round + 1),
                })
            }
        };
        if !rs.ring.iter().any(|n| n == from) {
            return Err(Error::UnknownPeer {
                peer: from.to_owned(),
                role: "in this round's ring",
            });
        }
        let Step::Acking { acked } = &mut rs.step else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "round_ack",
                why: "the round's aggregate was not sent yet".into(),
            });
        };
        if let Some(mse) = a.test_mse {
            if !mse.is_finite() || mse < 0.0 {
                return Err(Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "round_ack",
                    reason: format!("test MSE {mse} is not a finite non-negative number"),
                });
            }
        }
        acked.insert(from.to_owned(), a.test_mse);
        if self.acks_complete() {
            self.complete_round(now);
        }
        Ok(())
    }

    /// Whether every ring member still in the run acknowledged the aggregate.
    fn acks_complete(&self) -> bool {
        match &self.phase {
            Phase::Round(RoundState {
                ring,
                step: Step::Acking { acked },
                ..
            }) => ring
                .iter()
                .all(|n| acked.contains_key(n) || self.nodes[n].state == NodeState::Dropped),
            _ => false,
        }
    }

    fn complete_round(&mut self, now: Instant) {
        let Phase::Round(rs) = std::mem::replace(&mut self.phase, Phase::Failed) else {
            return;
        };
        let Step::Acking { acked } = rs.step else {
            self.phase = Phase::Round(rs);
            return;
        };
        let summary = self.summaries.last_mut().expect("finalized before acks");
        summary.test_mse = acked;
        let summary = summary.clone();
        self.attempts = 0;
        self.forced_aborts.clear();
        self.events
            .push_back(CoordinatorEvent::RoundCompleted(summary));
        self.begin_round(now);
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

    fn start_reporting(&mut self, now: Instant) {
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

    fn on_report(&mut self, from: &str, round: u32, r: Report) -> Result<()> {
        let n_features = self
            .schema
            .as_ref()
            .map(|s| s.feature_names.len())
            .unwrap_or(0);
        let rounds = self.config.params.rounds;
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
        if round != rounds {
            return Err(Error::StaleRound {
                peer: from.to_owned(),
                got: round,
                current: rounds,
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

    fn finish(&mut self) {
        let Phase::Reporting {
            expected,
            mut reports,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Finished)
        else {
            return;
        };
        for name in &expected {
            self.send(name, self.config.params.rounds, Body::Done);
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
        let results = RunResults {
            run_id: self.run_id.clone(),
            params: self.config.params.clone(),
            schema: self.schema.clone().expect("a finished run has a schema"),
            hospitals,
            rounds: self.summaries.clone(),
            history: self.history.clone(),
        };
        self.events
            .push_back(CoordinatorEvent::Finished(Box::new(results)));
    }

    fn fail(&mut self, err: Error) {
        let reason = err.to_string();
        let round = self.next_round;
        let names: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.connected && n.state != NodeState::Absent)
            .map(|(k, _)| k.clone())
            .collect();
        for name in names {
            self.send(
                &name,
                round,
                Body::Stop {
                    reason: reason.clone(),
                },
            );
        }
        self.phase = Phase::Failed;
        self.events.push_back(CoordinatorEvent::Failed(err));
    }
}

fn validate_config(config: &CoordinatorConfig, sk: &PrivateKey) -> Result<()> {
    let p = &config.params;
    if config.min_hospitals < MIN_HOSPITALS {
        return Err(Error::Config(format!(
            "min_hospitals {} is below {MIN_HOSPITALS}: with two hospitals each learns \
             the other's gradient from the aggregate",
            config.min_hospitals
        )));
    }
    let mut seen = BTreeSet::new();
    for m in &config.roster {
        if m.name.is_empty() || m.name == config.name || !seen.insert(m.name.as_str()) {
            return Err(Error::Config(format!(
                "roster name {:?} is empty, repeated or the coordinator's own",
                m.name
            )));
        }
    }
    if config.roster.len() < config.min_hospitals {
        return Err(Error::TooFewHospitals {
            available: config.roster.len(),
            min: config.min_hospitals,
            missing: Vec::new(),
        });
    }
    if !(p.eta.is_finite() && p.eta > 0.0) {
        return Err(Error::Config(format!(
            "eta {} is not a positive finite number",
            p.eta
        )));
    }
    if (config.roster.len() as u64) > p.fixed_point.max_addends {
        return Err(Error::Config(format!(
            "{} hospitals exceed the fixed-point encoding's max_addends {}",
            config.roster.len(),
            p.fixed_point.max_addends
        )));
    }
    if config.max_attempts == 0 {
        return Err(Error::Config("max_attempts must be at least 1".into()));
    }
    // Fails early if the encoding does not fit the key at all.
    GradientCodec::new(sk.public_key(), p.fixed_point, p.pack, 1)?;
    Ok(())
}

/// How `b` differs from `a`, naming columns; `None` if equal.
pub fn schema_diff(a: &Schema, b: &Schema) -> Option<String> {
    if a == b {
        return None;
    }
    let mut parts = Vec::new();
    if a.target_name != b.target_name {
        parts.push(format!(
            "target column {:?} instead of {:?}",
            b.target_name, a.target_name
        ));
    }
    let missing: Vec<&str> = a
        .feature_names
        .iter()
        .filter(|c| !b.feature_names.contains(c))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = b
        .feature_names
        .iter()
        .filter(|c| !a.feature_names.contains(c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        parts.push(format!("missing columns {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("unexpected columns {}", extra.join(", ")));
    }
    if missing.is_empty() && extra.is_empty() && a.feature_names != b.feature_names {
        parts.push(format!(
            "columns in another order: {} instead of {}",
            b.feature_names.join(", "),
            a.feature_names.join(", ")
        ));
    }
    if parts.is_empty() {
        parts.push("schemas differ".into());
    }
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(cols: &[&str], target: &str) -> Schema {
        Schema {
            feature_names: cols.iter().map(|c| c.to_string()).collect(),
            target_name: target.into(),
        }
    }

    #[test]
    fn schema_diff_names_the_columns() {
        let a = schema(&["age", "bmi", "bp"], "target");
        assert_eq!(schema_diff(&a, &a), None);
        let d = schema_diff(&a, &schema(&["age", "bmi", "s1"], "target")).unwrap();
        assert!(
            d.contains("missing columns bp") && d.contains("unexpected columns s1"),
            "{d}"
        );
        let d = schema_diff(&a, &schema(&["bmi", "age", "bp"], "target")).unwrap();
        assert!(d.contains("another order"), "{d}");
        let d = schema_diff(&a, &schema(&["age", "bmi", "bp"], "y")).unwrap();
        assert!(d.contains("\"y\""), "{d}");
    }
}
