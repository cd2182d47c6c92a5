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

use learning::{ConsortiumSchema, Metrics, ModelKind, Preprocessor, Scaler};
use num_bigint::BigUint;
use paillier::{KeyFingerprint, PrivateKey};
use serde::{Deserialize, Serialize};

mod admission;
mod checkpoint;
mod config;
mod key;
mod report;
mod round;

pub use admission::{schema_diff, MAX_WITHDRAW_REASON};
pub use checkpoint::Checkpoint;
use config::validate_config;
pub use config::CoordinatorConfig;
pub use key::{RunKey, ThresholdRun};
pub use report::{HospitalResult, RunResults};

use crate::codec::GradientCodec;
use crate::error::{Error, Result};
use crate::masks::{MaskSet, SEED_BYTES};
use crate::plan::{Cursor, Plan, StepKind};
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

/// Per-step record of who took part and the test loss each reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// The step's wire number (0-based, over all kinds of step).
    pub round: u32,
    /// What the step aggregated.
    pub step: StepKind,
    /// The ring of the successful attempt, head first.
    pub participants: Vec<String>,
    /// Test loss after a training step (MSE; mean log-loss for logistic
    /// regression), per hospital that acknowledged and shares it (None: no
    /// test set, not shared, or not a training step).
    pub test_mse: BTreeMap<String, Option<f64>>,
    /// Attempts the round took.
    pub attempts: u32,
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
    /// A roster hospital said it cannot take part, and why (its own words:
    /// the file, column and kind of error, never a value).
    HospitalWithdrew {
        /// Its name.
        name: String,
        /// Its reason.
        reason: String,
    },
    /// An attempt of a round started.
    RoundStarted {
        /// The step's wire number.
        round: u32,
        /// What it aggregates.
        step: StepKind,
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
    /// Why it cannot take part, in its own words: it withdrew before the
    /// run, or was dropped for a failure it reported as deterministic. It
    /// would fail the same way again, so it is not set up again in this run.
    excluded: Option<String>,
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
        /// The still masked sum: its ciphertexts until the driver's
        /// [`DecryptionWork`] or the last reveal decrypts them.
        sum: MaskedSum,
        /// Reveals received, by member.
        reveals: BTreeMap<String, Reveal>,
        /// Threshold runs: the digest of `sum` the members bind into their
        /// commitment (and later decrypt only for).
        digest: Option<Vec<u8>>,
        /// How many times `Unmask` went out to this set. A repeat is safe:
        /// each member has committed to exactly this set and answers a repeat
        /// with the same material (or not at all), so a lost message costs a
        /// timeout, not the run.
        requests: u32,
    },
    /// Threshold runs, once every member revealed: waiting for `t` valid
    /// partial decryptions of the sum.
    Decrypting {
        /// The sum the members agreed on.
        cts: Vec<paillier::Ciphertext>,
        /// The revealed masks, removed once the sum is decrypted.
        masks: Vec<MaskSet>,
        /// Members asked for their partial decryption, with when: each has a
        /// whole `round_timeout` from its own request to answer.
        asked: BTreeMap<String, Instant>,
        /// Valid partial decryptions, by member.
        partials: BTreeMap<String, paillier::threshold::VerifiedBatch>,
        /// Members that cannot give one this round, and why (an invalid
        /// answer, a lost connection, no answer in time).
        unavailable: BTreeMap<String, String>,
    },
    Acking {
        acked: BTreeMap<String, Option<f64>>,
    },
}

/// The sum of an attempt between its arrival and its unmasking.
#[derive(Debug)]
enum MaskedSum {
    /// Validated ciphertexts (parsed against the run's key), not decrypted yet.
    Encrypted(Vec<paillier::Ciphertext>),
    /// Handed to the driver as [`DecryptionWork`]; its result comes back
    /// through [`CoordinatorMachine::handle_work_done`].
    InFlight,
    /// Decrypted plaintexts, still masked.
    Decrypted(Vec<BigUint>),
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

/// A round's masked sum to decrypt, from
/// [`CoordinatorMachine::poll_work`]: `Send`, so that the driver can run it
/// on another thread. It holds a reference to the run's private key, which it
/// does not print.
pub struct DecryptionWork {
    round: u32,
    epoch: u64,
    key: std::sync::Arc<PrivateKey>,
    cts: Vec<paillier::Ciphertext>,
}

impl std::fmt::Debug for DecryptionWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptionWork")
            .field("round", &self.round)
            .field("epoch", &self.epoch)
            .field("ciphertexts", &self.cts.len())
            .finish_non_exhaustive()
    }
}

impl DecryptionWork {
    /// Decrypts the sum (CRT, ciphertexts and halves in parallel on rayon's
    /// pool). The plaintexts are still masked.
    pub fn run(self) -> DecryptionDone {
        let plaintexts = paillier::vector::decrypt_raw(&self.key, &self.cts).map_err(Error::Crypto);
        DecryptionDone {
            round: self.round,
            epoch: self.epoch,
            plaintexts,
        }
    }
}

/// What [`DecryptionWork::run`] returns, for
/// [`CoordinatorMachine::handle_work_done`].
#[derive(Debug)]
pub struct DecryptionDone {
    round: u32,
    epoch: u64,
    plaintexts: Result<Vec<BigUint>>,
}

/// The coordinator's protocol state machine.
#[derive(Debug)]
pub struct CoordinatorMachine {
    config: CoordinatorConfig,
    run_id: RunId,
    sk: RunKey,
    nodes: BTreeMap<String, Node>,
    schema: Option<Schema>,
    /// Where the run stands (set once the schema is agreed).
    cursor: Option<Cursor>,
    /// The codec of the step under way (rebuilt where a step's shape differs).
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
        key: impl Into<RunKey>,
        now: Instant,
    ) -> Result<CoordinatorMachine> {
        let key = key.into();
        validate_config(&config, &key)?;
        let run_id = config.run_id.clone();
        Ok(Self::build(config, run_id, key, now))
    }

    fn build(
        config: CoordinatorConfig,
        run_id: RunId,
        sk: RunKey,
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
                        excluded: None,
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
            cursor: None,
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

    /// The decryption of a sum whose `Unmask` requests already went out, as
    /// work the driver runs on another thread while it keeps relaying and
    /// handling messages, so that it overlaps with the members' commitments
    /// (a relay-mode coordinator forwards their `PeerCommit`s meanwhile,
    /// which a decryption on the driver's own thread would hold up). Hand the
    /// result to [`handle_work_done`](Self::handle_work_done); until then the
    /// machine waits for it (a last reveal that arrives first is kept, and the
    /// round completes when the result comes). Call it after the transmits
    /// polled so far were sent; `None` when there is nothing to do. Calling it
    /// is optional: without it the last reveal decrypts the sum on the spot.
    pub fn poll_work(&mut self) -> Option<DecryptionWork> {
        let RunKey::Private(sk) = &self.sk else {
            return None;
        };
        let Phase::Round(rs) = &mut self.phase else {
            return None;
        };
        let Step::Unmasking { sum, .. } = &mut rs.step else {
            return None;
        };
        if !matches!(sum, MaskedSum::Encrypted(_)) {
            return None;
        }
        let MaskedSum::Encrypted(cts) = std::mem::replace(sum, MaskedSum::InFlight) else {
            unreachable!("matched above")
        };
        Some(DecryptionWork {
            round: rs.round,
            epoch: rs.epoch,
            key: std::sync::Arc::clone(sk),
            cts,
        })
    }

    /// The result of a [`DecryptionWork`] from [`poll_work`](Self::poll_work).
    /// A result for an attempt that ended meanwhile (aborted, timed out) is
    /// dropped. With every reveal already in, the round completes here.
    pub fn handle_work_done(&mut self, now: Instant, done: DecryptionDone) {
        let Phase::Round(rs) = &mut self.phase else {
            return;
        };
        if (rs.round, rs.epoch) != (done.round, done.epoch) {
            return;
        }
        let Step::Unmasking { sum, reveals, .. } = &mut rs.step else {
            return;
        };
        // Only the sum this work was taken from (a result handed in twice
        // finds it decrypted already and leaves it as it is).
        if !matches!(sum, MaskedSum::InFlight) {
            return;
        }
        match done.plaintexts {
            Ok(pt) => *sum = MaskedSum::Decrypted(pt),
            Err(err) => {
                // Not for ciphertexts parsed under the run's key; the set is
                // fixed, so no retry with other members.
                let round = rs.round;
                self.fail_round(round, format!("the sum does not decrypt: {err}"));
                return;
            }
        }
        if reveals.len() == rs.ring.len() {
            // `complete_unmasking` reports its own failures (fail_round).
            let _ = self.complete_unmasking(now);
        }
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
        if self.decryption_lost(now, name, "lost the connection") {
            return;
        }
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
                Step::Decrypting {
                    asked, partials, ..
                } => {
                    // Only members asked a whole timeout ago are late: one
                    // asked in place of a member lost just before this
                    // deadline still has its own time.
                    let timeout = self.config.round_timeout;
                    let silent: Vec<String> = asked
                        .iter()
                        .filter(|(n, at)| !partials.contains_key(*n) && **at + timeout <= now)
                        .map(|(n, _)| n.clone())
                        .collect();
                    let round = rs.round;
                    for name in silent {
                        let why = format!("no partial decryption of round {} in time", round + 1);
                        self.decryption_lost(now, &name, &why);
                    }
                    self.decryption_deadline(now);
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
        if let Body::Abort(a) = &env.body {
            // A hospital that failed before it could join (its data did not
            // load, say) says why under the pre-run id its hello would carry.
            if a.deterministic && env.run_id.as_str() == crate::wire::NO_RUN {
                return self.on_withdraw(now, from, &a.reason);
            }
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
            Body::Partial(p) => self.on_partial(now, from, env.round, p),
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
        // A threshold run also needs t members in every set to decrypt it.
        let t = self.sk.threshold().map_or(0, |t| t.threshold() as usize);
        self.config.min_hospitals.max(MIN_HOSPITALS).max(t)
    }

    /// The plan of this run over data with `n_features` model features: the
    /// statistics length and intercept come from the consortium schema, if
    /// the run has one (data used "as given" have neither).
    fn plan(&self, n_features: usize) -> Plan {
        let consortium = self.config.consortium.as_ref();
        Plan::new(
            &self.config.params,
            n_features,
            consortium.map_or(0, ConsortiumSchema::statistics_len),
            consortium.and_then(ConsortiumSchema::intercept_index),
        )
    }

    /// Makes `self.codec` the one of step `kind` (kept if it already fits).
    fn codec_for(&mut self, kind: StepKind) -> Result<()> {
        let plan = self.cursor.as_ref().expect("set with the schema").plan();
        let (fp, len) = (plan.fixed_point(kind), plan.vector_len(kind));
        if self.codec.as_ref().is_some_and(|c| c.fits(fp, len)) {
            return Ok(());
        }
        self.codec = Some(GradientCodec::new(
            self.sk.public_key(),
            fp,
            self.config.params.pack,
            len,
        )?);
        Ok(())
    }

    /// Steps completed (the wire number of the next one).
    fn steps_done(&self) -> u32 {
        self.cursor.as_ref().map_or(self.next_round, Cursor::steps)
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
        let reasons = self.exclusion_reasons(&missing);
        Error::TooFewHospitals {
            available,
            min: self.min_hospitals(),
            missing,
            reasons,
        }
    }

    /// `"name: reason"` for each of `names` that said why it cannot take part.
    fn exclusion_reasons(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter_map(|n| {
                let why = self.nodes.get(n)?.excluded.as_ref()?;
                Some(format!("{n}: {why}"))
            })
            .collect()
    }

    /// Current round attempt for a message of `kind` from ring member `from`:
    /// the round under way, of this `epoch`.
    fn current_round(
        &mut self,
        from: &str,
        kind: &'static str,
        round: u32,
        epoch: u64,
    ) -> Result<&mut RoundState> {
        let rs = self.running_round(from, kind, round)?;
        if epoch != rs.epoch {
            return Err(Error::WrongEpoch {
                peer: from.to_owned(),
                got: epoch,
                current: rs.epoch,
            });
        }
        Ok(rs)
    }

    /// The one freshness check: the round under way, if `round` is it and
    /// `from` is in its ring; else why not (stale, future, none running, not
    /// a member), naming `from`.
    fn running_round(
        &mut self,
        from: &str,
        kind: &'static str,
        round: u32,
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
        if !rs.ring.iter().any(|n| n == from) {
            return Err(Error::UnknownPeer {
                peer: from.to_owned(),
                role: "in this round's ring",
            });
        }
        Ok(rs)
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
