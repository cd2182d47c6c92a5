//! A hospital's state machine: joining, mask-seed agreement, its part of each
//! round, the model step and the final report, with no I/O.
//!
//! The driver feeds it authenticated messages from the coordinator and from ring
//! peers, tells it when the coordinator connection comes up (it then says hello),
//! and drains [`poll_transmit`](HospitalMachine::poll_transmit) (to the coordinator
//! or to a ring peer, whom the driver connects to on demand using the addresses in
//! [`HospitalEvent::RingChanged`]) and [`poll_event`](HospitalMachine::poll_event).
//!
//! The model is always a pure function of the local data and the aggregate history:
//! on every `Setup` the hospital recomputes its weights from its local-only model
//! (mode `seed`) or from zeros (mode `global`) by replaying the history, so a
//! hospital that rejoins, or meets a resumed coordinator, ends with exactly the
//! model of an uninterrupted run.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use learning::ndarray::Array1;
use learning::{Dataset, Mode};
use paillier::{Ciphertext, PublicKey};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::codec::GradientCodec;
use crate::coordinator::DEFAULT_COORDINATOR_NAME;
use crate::error::{Error, Result};
use crate::masks::{MaskSet, SEED_BYTES};
use crate::wire::{
    Abort, AggregateRecord, Body, Bytes, Envelope, Forwarded, Hello, MaskSeed, Member, Report,
    RingPass, RoundAck, RoundStart, RunId, RunParams, Setup,
};

/// Most messages held back because they arrived before what they depend on.
const MAX_DEFERRED: usize = 64;
/// How far ahead of the current epoch a mask seed may be (epochs of a later
/// coordinator incarnation jump by 2^32, so "ahead" is bounded by count instead).
const MAX_STORED_SEEDS: usize = 1024;

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
    /// INSECURE, tests only: accept public keys below `paillier::MIN_KEY_BITS`
    /// from the coordinator. `false` by default.
    pub dangerous_accept_small_test_keys: bool,
}

impl HospitalConfig {
    /// A configuration with the default coordinator name.
    pub fn new(name: impl Into<String>) -> HospitalConfig {
        HospitalConfig {
            name: name.into(),
            coordinator: DEFAULT_COORDINATOR_NAME.to_owned(),
            address: None,
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
        /// The ring, head first (includes this node).
        ring: Vec<Member>,
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
    /// The final report was accepted; the run is complete.
    Finished(Report),
    /// The coordinator stopped the run.
    Failed(Error),
}

#[derive(Debug)]
struct RunState {
    run_id: RunId,
    params: RunParams,
    codec: GradientCodec,
    local_weights: Array1<f64>,
    weights: Array1<f64>,
    completed: u32,
}

#[derive(Debug)]
struct RoundState {
    round: u32,
    epoch: u64,
    ring: Vec<Member>,
    /// Running sum received from the predecessor, parsed.
    incoming: Option<Vec<Ciphertext>>,
    /// This node's encrypted, masked gradient, computed as soon as its seeds are
    /// in (before the predecessor's sum arrives, so encryption overlaps the ring).
    contribution: Option<Vec<Ciphertext>>,
    sent: bool,
}

/// A hospital's protocol state machine.
#[derive(Debug)]
pub struct HospitalMachine {
    config: HospitalConfig,
    train: Dataset,
    test: Option<Dataset>,
    rng: ChaCha20Rng,
    /// Local-only model, cached by (rounds, eta bits).
    local_cache: Option<((Mode, u32, u64), Array1<f64>)>,
    run: Option<RunState>,
    round: Option<RoundState>,
    seeds: BTreeMap<(u64, String), [u8; SEED_BYTES]>,
    deferred: VecDeque<(String, Envelope)>,
    report: Option<Report>,
    /// Latest peak RSS the driver measured; goes into the report.
    peak_rss_bytes: Option<u64>,
    finished: bool,
    transmits: VecDeque<(String, Envelope)>,
    events: VecDeque<HospitalEvent>,
}

impl HospitalMachine {
    /// A hospital with its training data and optional test data. `rng_seed` seeds
    /// the generator of pairwise mask seeds; the driver passes OS randomness.
    pub fn new(
        config: HospitalConfig,
        train: Dataset,
        test: Option<Dataset>,
        rng_seed: [u8; 32],
    ) -> Result<HospitalMachine> {
        if config.name.is_empty() || config.name == config.coordinator {
            return Err(Error::Config(format!(
                "hospital name {:?} is empty or the coordinator's",
                config.name
            )));
        }
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
        Ok(HospitalMachine {
            config,
            train,
            test,
            rng: ChaCha20Rng::from_seed(rng_seed),
            local_cache: None,
            run: None,
            round: None,
            seeds: BTreeMap::new(),
            deferred: VecDeque::new(),
            report: None,
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
        self.run.as_ref().map_or(0, |r| r.completed)
    }

    /// Records this process's peak resident set size in bytes, as the driver
    /// measured it (the machine does no I/O). The latest value goes into the
    /// final [`Report`]; drivers call this before feeding messages so the
    /// report, produced when `Finish` arrives, carries a recent figure.
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
        let hello = Hello {
            name: self.config.name.clone(),
            schema: self.train.schema(),
            rows: self.train.n_rows() as u64,
            address: self.config.address.clone(),
            completed_rounds: self.run.as_ref().map(|r| r.completed),
        };
        let (run_id, round, body) = match &self.run {
            Some(r) => (r.run_id.clone(), r.completed, Body::Rejoin(hello)),
            None => (RunId::new("none").expect("valid"), 0, Body::Hello(hello)),
        };
        let env = Envelope::new(run_id, round, self.config.name.clone(), body);
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

    fn defer(&mut self, from: &str, env: Envelope) {
        if self.deferred.len() >= MAX_DEFERRED {
            self.deferred.pop_front();
        }
        self.deferred.push_back((from.to_owned(), env));
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
        if !from_coordinator && !matches!(env.body, Body::MaskSeed(_) | Body::RingPass(_)) {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind,
                why: "hospitals only send mask seeds and ring passes to each other".into(),
            });
        }
        if from_coordinator && matches!(env.body, Body::MaskSeed(_) | Body::RingPass(_)) {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind,
                why: "the coordinator never sends it".into(),
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
        match env.body {
            Body::RoundStart(rs) => self.on_round_start(from, round, rs),
            Body::MaskSeed(m) => {
                self.on_mask_seed(from, m)?;
                self.progress()
            }
            Body::RingPass(p) => self.on_ring_pass(from, round, p),
            Body::Aggregate(a) => self.on_aggregate(from, round, a.epoch, a.record),
            Body::Abort(a) => self.on_abort(from, round, a),
            Body::Finish => self.on_finish(from, round),
            Body::Done => {
                let report = self.report.clone().ok_or_else(|| Error::Unexpected {
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
        if !(p.eta.is_finite() && p.eta > 0.0) {
            return Err(invalid(format!("eta {} is not positive and finite", p.eta)));
        }
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
        let completed = s.history.len() as u32;
        if self.run.as_ref().is_some_and(|r| r.run_id != run_id) {
            // Another run: nothing of the old one may leak into it.
            self.seeds.clear();
            self.deferred.retain(|(_, e)| e.run_id == run_id);
        }
        self.run = Some(RunState {
            run_id: run_id.clone(),
            params: s.params,
            codec,
            local_weights: local,
            weights,
            completed,
        });
        self.round = None;
        self.report = None;
        self.events.push_back(HospitalEvent::SetUp {
            run_id,
            completed_rounds: completed,
        });
        Ok(())
    }

    fn on_round_start(&mut self, from: &str, round: u32, rs: RoundStart) -> Result<()> {
        let run = self.run.as_ref().expect("checked by dispatch");
        let (completed, rounds, masks) = (run.completed, run.params.rounds, run.params.masks);
        if round < completed {
            return Err(Error::StaleRound {
                peer: from.to_owned(),
                got: round,
                current: completed,
            });
        }
        if round > completed {
            // We missed aggregates (e.g. a lost message): ask to be set up again.
            self.say_hello();
            return Err(Error::FutureRound {
                peer: from.to_owned(),
                got: round,
                current: completed,
            });
        }
        if round >= rounds {
            return Err(Error::InvalidMessage {
                peer: from.to_owned(),
                kind: "round_start",
                reason: format!("round {round} is beyond the run's {rounds} rounds"),
            });
        }
        if let Some(cur) = &self.round {
            if rs.epoch <= cur.epoch && cur.round == round {
                return Err(Error::WrongEpoch {
                    peer: from.to_owned(),
                    got: rs.epoch,
                    current: cur.epoch,
                });
            }
        }
        let me = self.config.name.clone();
        let mut names: Vec<&str> = rs.ring.iter().map(|m| m.name.as_str()).collect();
        let positions = names.iter().filter(|n| **n == me).count();
        names.sort_unstable();
        names.dedup();
        if positions != 1 || names.len() != rs.ring.len() || rs.ring.len() < 2 {
            return Err(Error::InvalidMessage {
                peer: from.to_owned(),
                kind: "round_start",
                reason: "the ring must name this node once and no node twice".into(),
            });
        }
        // Seeds of older epochs are never needed again.
        self.seeds.retain(|(e, _), _| *e >= rs.epoch);
        if masks {
            // The earlier member of each pair in this epoch's ring draws the seed:
            // a node then only ever waits for nodes before it, so the first ring
            // member that fails to forward is the one at fault.
            let me_pos = rs
                .ring
                .iter()
                .position(|m| m.name == me)
                .expect("validated");
            let later: Vec<String> = rs.ring[me_pos + 1..]
                .iter()
                .map(|m| m.name.clone())
                .collect();
            for peer in later {
                let mut seed = [0u8; SEED_BYTES];
                self.rng.fill_bytes(&mut seed);
                self.seeds.insert((rs.epoch, peer.clone()), seed);
                let body = Body::MaskSeed(MaskSeed {
                    epoch: rs.epoch,
                    seed: Bytes(seed.to_vec()),
                });
                self.send(&peer, round, body);
            }
        }
        self.events.push_back(HospitalEvent::RingChanged {
            epoch: rs.epoch,
            ring: rs.ring.clone(),
        });
        self.round = Some(RoundState {
            round,
            epoch: rs.epoch,
            ring: rs.ring,
            incoming: None,
            contribution: None,
            sent: false,
        });
        self.progress()
    }

    fn on_mask_seed(&mut self, from: &str, m: MaskSeed) -> Result<()> {
        if let Some(cur) = &self.round {
            if m.epoch < cur.epoch {
                return Err(Error::WrongEpoch {
                    peer: from.to_owned(),
                    got: m.epoch,
                    current: cur.epoch,
                });
            }
            if m.epoch == cur.epoch {
                let pos = |n: &str| cur.ring.iter().position(|m| m.name == n);
                let before_me = match (pos(from), pos(&self.config.name)) {
                    (Some(f), Some(me)) => f < me,
                    _ => false,
                };
                if !before_me {
                    return Err(Error::Unexpected {
                        peer: from.to_owned(),
                        kind: "mask_seed",
                        why: "only ring members before this node send it seeds".into(),
                    });
                }
            }
        }
        let seed: [u8; SEED_BYTES] =
            m.seed
                .0
                .as_slice()
                .try_into()
                .map_err(|_| Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "mask_seed",
                    reason: format!("seed has {} bytes, expected {SEED_BYTES}", m.seed.0.len()),
                })?;
        let key = (m.epoch, from.to_owned());
        if let Some(old) = self.seeds.get(&key) {
            if *old != seed {
                return Err(Error::Unexpected {
                    peer: from.to_owned(),
                    kind: "mask_seed",
                    why: format!("a different seed for epoch {} was already agreed", m.epoch),
                });
            }
            return Ok(());
        }
        if self.seeds.len() >= MAX_STORED_SEEDS {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "mask_seed",
                why: "too many seeds held for future epochs".into(),
            });
        }
        self.seeds.insert(key, seed);
        Ok(())
    }

    fn on_ring_pass(&mut self, from: &str, round: u32, p: RingPass) -> Result<()> {
        let completed = self.run.as_ref().expect("checked").completed;
        let (cur_round, cur_epoch) = match &self.round {
            Some(r) => (r.round, r.epoch),
            None => (completed, 0),
        };
        if round < completed || (round == cur_round && p.epoch < cur_epoch) {
            return if round < completed {
                Err(Error::StaleRound {
                    peer: from.to_owned(),
                    got: round,
                    current: completed,
                })
            } else {
                Err(Error::WrongEpoch {
                    peer: from.to_owned(),
                    got: p.epoch,
                    current: cur_epoch,
                })
            };
        }
        let ready = self
            .round
            .as_ref()
            .is_some_and(|r| r.round == round && r.epoch == p.epoch && !r.sent);
        if !ready {
            if round > completed + 1 {
                return Err(Error::FutureRound {
                    peer: from.to_owned(),
                    got: round,
                    current: completed,
                });
            }
            // Its RoundStart has not reached us yet.
            let run_id = self.run.as_ref().expect("checked").run_id.clone();
            let env = Envelope::new(run_id, round, from, Body::RingPass(p));
            self.defer(from, env);
            return Ok(());
        }
        let rs = self.round.as_ref().expect("ready");
        let pos = rs
            .ring
            .iter()
            .position(|m| m.name == self.config.name)
            .expect("validated");
        if pos == 0 || rs.ring[pos - 1].name != from {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "ring_pass",
                why: "it is not this node's predecessor in the ring".into(),
            });
        }
        if rs.incoming.is_some() {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "ring_pass",
                why: "this attempt's sum was already received".into(),
            });
        }
        let run = self.run.as_ref().expect("checked");
        match run.codec.parse(from, &p) {
            Ok(cts) => {
                self.round.as_mut().expect("ready").incoming = Some(cts);
                self.progress()
            }
            Err(err) => {
                // Tell the coordinator so it can abort and retry the round.
                let body = Body::Abort(Abort {
                    epoch: p.epoch,
                    reason: format!("rejected the running sum: {err}"),
                    dropped: Vec::new(),
                });
                let coordinator = self.config.coordinator.clone();
                self.send(&coordinator, round, body);
                Err(err)
            }
        }
    }

    /// Sends this node's contribution once everything it needs is there.
    fn progress(&mut self) -> Result<()> {
        let (Some(run), Some(rs)) = (&self.run, &self.round) else {
            return Ok(());
        };
        if rs.sent {
            return Ok(());
        }
        let me = &self.config.name;
        let pos = rs
            .ring
            .iter()
            .position(|m| &m.name == me)
            .expect("validated");
        let masks = if run.params.masks {
            let mut seeds = Vec::with_capacity(rs.ring.len() - 1);
            for m in rs.ring.iter().filter(|m| &m.name != me) {
                match self.seeds.get(&(rs.epoch, m.name.clone())) {
                    Some(s) => seeds.push((m.name.clone(), *s)),
                    None => return Ok(()),
                }
            }
            Some(MaskSet::new(me.clone(), rs.epoch, seeds))
        } else {
            None
        };
        if rs.contribution.is_none() {
            let grad = learning::gradient(self.train.x(), self.train.y(), &run.weights).to_vec();
            let (round, epoch) = (rs.round, rs.epoch);
            match run.codec.encrypt(&grad, masks.as_ref(), round) {
                Ok(mine) => self.round.as_mut().expect("present").contribution = Some(mine),
                Err(err) => {
                    // E.g. a gradient value beyond the fixed-point range: the run
                    // cannot go on as configured; the coordinator must hear why.
                    let body = Body::Abort(Abort {
                        epoch,
                        reason: format!("cannot encrypt its gradient: {err}"),
                        dropped: Vec::new(),
                    });
                    let coordinator = self.config.coordinator.clone();
                    self.send(&coordinator, round, body);
                    return Err(err);
                }
            }
        }
        let (Some(run), Some(rs)) = (&self.run, &self.round) else {
            return Ok(());
        };
        if pos > 0 && rs.incoming.is_none() {
            return Ok(());
        }
        let mine = rs.contribution.as_ref().expect("computed above");
        let total = match &rs.incoming {
            Some(inc) => run.codec.add(inc, mine)?,
            None => mine.clone(),
        };
        let pass = run.codec.to_wire(rs.epoch, &total);
        let (round, epoch) = (rs.round, rs.epoch);
        let next = rs.ring.get(pos + 1).map(|m| m.name.clone());
        let coordinator = self.config.coordinator.clone();
        match next {
            Some(succ) => {
                self.send(&succ, round, Body::RingPass(pass));
                self.send(&coordinator, round, Body::Forwarded(Forwarded { epoch }));
            }
            None => self.send(&coordinator, round, Body::RingPass(pass)),
        }
        let rs = self.round.as_mut().expect("present");
        rs.sent = true;
        rs.incoming = None;
        rs.contribution = None;
        Ok(())
    }

    fn on_aggregate(
        &mut self,
        from: &str,
        round: u32,
        epoch: u64,
        record: AggregateRecord,
    ) -> Result<()> {
        let completed = self.run.as_ref().expect("checked").completed;
        let Some(rs) = &self.round else {
            return Err(if round < completed {
                Error::StaleRound {
                    peer: from.to_owned(),
                    got: round,
                    current: completed,
                }
            } else {
                Error::Unexpected {
                    peer: from.to_owned(),
                    kind: "aggregate",
                    why: "no round is running here".into(),
                }
            });
        };
        if round != rs.round || record.round != round {
            return Err(if round < rs.round {
                Error::StaleRound {
                    peer: from.to_owned(),
                    got: round,
                    current: rs.round,
                }
            } else {
                Error::FutureRound {
                    peer: from.to_owned(),
                    got: round,
                    current: rs.round,
                }
            });
        }
        if epoch != rs.epoch {
            return Err(Error::WrongEpoch {
                peer: from.to_owned(),
                got: epoch,
                current: rs.epoch,
            });
        }
        let n_features = self.train.n_features();
        if record.sum.len() != n_features
            || !record.sum.iter().all(|v| v.is_finite())
            || record.n_hospitals as usize != rs.ring.len()
            || record.n_total_rows == 0
        {
            return Err(Error::InvalidMessage {
                peer: from.to_owned(),
                kind: "aggregate",
                reason: format!(
                    "expected {n_features} finite values summed over {} hospitals",
                    rs.ring.len()
                ),
            });
        }
        let run = self.run.as_mut().expect("checked");
        apply(run.params.mode, &mut run.weights, &record, run.params.eta);
        run.completed += 1;
        let weights = run.weights.to_vec();
        let test_mse = self
            .test
            .as_ref()
            .map(|t| learning::mse(t.x(), t.y(), &run.weights));
        self.round = None;
        self.send(
            &self.config.coordinator.clone(),
            round,
            Body::RoundAck(RoundAck { test_mse }),
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
            self.round = None;
            self.events
                .push_back(HospitalEvent::Dropped { reason: a.reason });
            // Still alive: ask to come back at the next round boundary.
            self.say_hello();
            return Ok(());
        }
        let completed = self.run.as_ref().expect("checked").completed;
        if round < completed {
            return Err(Error::StaleRound {
                peer: from.to_owned(),
                got: round,
                current: completed,
            });
        }
        if self.round.as_ref().is_some_and(|r| r.epoch == a.epoch) {
            self.round = None;
        }
        self.events.push_back(HospitalEvent::RoundAborted {
            round,
            reason: a.reason,
        });
        Ok(())
    }

    fn on_finish(&mut self, from: &str, round: u32) -> Result<()> {
        let run = self.run.as_ref().expect("checked");
        let (completed, rounds) = (run.completed, run.params.rounds);
        if round != rounds || completed != rounds {
            // Missed aggregates: ask for a Setup with the full history first.
            self.say_hello();
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "finish",
                why: format!("finish for round {round} after {completed} of {rounds} rounds"),
            });
        }
        let run = self.run.as_ref().expect("checked");
        let mse = |w: &Array1<f64>| self.test.as_ref().map(|t| learning::mse(t.x(), t.y(), w));
        let report = Report {
            local_weights: run.local_weights.to_vec(),
            weights: run.weights.to_vec(),
            local_test_mse: mse(&run.local_weights),
            federated_test_mse: mse(&run.weights),
            peak_rss_bytes: self.peak_rss_bytes,
        };
        self.report = Some(report.clone());
        self.send(
            &self.config.coordinator.clone(),
            round,
            Body::Report(report),
        );
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
