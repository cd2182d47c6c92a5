//! In-memory harness: a coordinator and N hospital machines exchanging envelopes
//! through a simulated network on a simulated clock that can delay, reorder
//! (across links; each link is FIFO like a stream), drop and tamper with messages,
//! kill nodes silently or visibly, and crash and resume the coordinator.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use learning::ndarray::{Array1, Array2};
use learning::{Dataset, Mode, ReferenceRun};
use paillier::PrivateKey;
use protocol::wire::{Body, Envelope, Member, RunId, RunParams};
use protocol::{
    Checkpoint, CoordinatorConfig, CoordinatorEvent, CoordinatorMachine, DecryptionWork, Error,
    HospitalConfig, HospitalEvent, HospitalMachine, HospitalState,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const COORD: &str = "coordinator";

/// One small insecure key per test binary (1024 bits: milliseconds per operation).
pub fn test_key() -> PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        paillier::generate_keypair_insecure_for_tests(1024)
            .expect("test key")
            .1
    })
    .clone()
}

/// A deterministic diabetes-like data set: `rows` rows, `features` features in
/// [-0.1, 0.1] plus an intercept column, target around 150.
pub fn synthetic(rows: usize, features: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let true_w: Vec<f64> = (0..features).map(|j| 300.0 * ((j as f64) - 2.0)).collect();
    let mut x = Array2::<f64>::zeros((rows, features + 1));
    let mut y = Array1::<f64>::zeros(rows);
    for i in 0..rows {
        let mut t = 150.0;
        for j in 0..features {
            let v: f64 = rng.gen_range(-0.1..0.1);
            x[[i, j]] = v;
            t += true_w[j] * v;
        }
        x[[i, features]] = 1.0;
        y[i] = t + rng.gen_range(-20.0..20.0);
    }
    let mut names: Vec<String> = (0..features).map(|j| format!("f{j}")).collect();
    names.push("intercept".into());
    Dataset::new(names, "target".into(), x, y).expect("valid data set")
}

pub fn hospital_name(i: usize) -> String {
    format!("hospital-{}", i + 1)
}

pub fn params(mode: Mode, rounds: u32) -> RunParams {
    RunParams::new(mode, rounds, 0.01)
}

pub fn roster(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            name: hospital_name(i),
            address: format!("127.0.0.1:{}", 7001 + i),
        })
        .collect()
}

pub fn coordinator_config(n: usize, params: RunParams) -> CoordinatorConfig {
    let mut c = CoordinatorConfig::new(RunId::new("test-run").unwrap(), roster(n), params);
    c.join_timeout = Duration::from_secs(10);
    c.round_timeout = Duration::from_secs(5);
    c
}

#[derive(Debug)]
pub struct Packet {
    pub at: Instant,
    pub seq: u64,
    pub from: String,
    pub to: String,
    pub env: Envelope,
}

type Tamper = Box<dyn FnMut(&str, &str, &mut Envelope) -> bool>;

pub struct Sim {
    pub now: Instant,
    pub coord: Option<CoordinatorMachine>,
    pub hospitals: BTreeMap<String, HospitalMachine>,
    pub datasets: BTreeMap<String, Dataset>,
    pub tests: BTreeMap<String, Option<Dataset>>,
    pub in_flight: Vec<Packet>,
    link_clock: BTreeMap<(String, String), Instant>,
    seq: u64,
    pub rng: ChaCha8Rng,
    pub latency: Duration,
    pub jitter: Duration,
    /// Nodes whose traffic is black-holed (a hung or partitioned process).
    pub dead: BTreeSet<String>,
    /// Return `false` to drop the message; may modify it.
    pub tamper: Option<Tamper>,
    pub coord_events: Vec<CoordinatorEvent>,
    pub hospital_events: BTreeMap<String, Vec<HospitalEvent>>,
    /// (receiver, error) of every rejected message.
    pub rejected: Vec<(String, Error)>,
    pub delivered: u64,
    /// The consortium's hospitals in ring order (every hospital's policy roster).
    pub roster: Vec<String>,
    /// Each hospital's latest persisted state (what survives a restart).
    pub persisted: BTreeMap<String, HospitalState>,
    /// Hook applied to every hospital's config before it is built.
    pub hospital_config: Option<ConfigHook>,
    /// The coordinator's decryption is taken with `poll_work` and handed
    /// back with `handle_work_done`, as the driver does: this long after
    /// (the messages meanwhile go on), or at once when `None`.
    pub work_latency: Option<Duration>,
    /// The work taken and when its result is due.
    pub work: Option<(Instant, DecryptionWork)>,
}

/// A change applied to every hospital's config before its machine is built.
pub type ConfigHook = Box<dyn Fn(&mut HospitalConfig)>;

impl Sim {
    /// Coordinator plus hospitals with the given training data, all connected.
    pub fn new(config: CoordinatorConfig, data: Vec<Dataset>) -> Sim {
        Sim::with_key(config, test_key(), data)
    }

    /// As [`Sim::new`] with a given key.
    pub fn with_key(config: CoordinatorConfig, key: PrivateKey, data: Vec<Dataset>) -> Sim {
        let now = Instant::now();
        let roster = config.roster.iter().map(|m| m.name.clone()).collect();
        let masks = config.params.masks;
        let coord = CoordinatorMachine::new(config, key, now).expect("coordinator");
        let mut sim = Sim::empty(now, Some(coord));
        sim.roster = roster;
        if !masks {
            // An unmasked run needs every hospital's own consent.
            sim.hospital_config = Some(Box::new(|c| c.policy.allow_unmasked = true));
        }
        for (i, d) in data.into_iter().enumerate() {
            sim.add_hospital(&hospital_name(i), d, None);
        }
        sim
    }

    pub fn empty(now: Instant, coord: Option<CoordinatorMachine>) -> Sim {
        let roster = coord.as_ref().map(|c| c.roster()).unwrap_or_default();
        Sim {
            now,
            coord,
            hospitals: BTreeMap::new(),
            datasets: BTreeMap::new(),
            tests: BTreeMap::new(),
            in_flight: Vec::new(),
            link_clock: BTreeMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(7),
            latency: Duration::from_millis(2),
            jitter: Duration::from_millis(3),
            dead: BTreeSet::new(),
            tamper: None,
            coord_events: Vec::new(),
            hospital_events: BTreeMap::new(),
            rejected: Vec::new(),
            delivered: 0,
            roster,
            persisted: BTreeMap::new(),
            hospital_config: None,
            work_latency: None,
            work: None,
        }
    }

    pub fn add_hospital(&mut self, name: &str, train: Dataset, test: Option<Dataset>) {
        self.datasets.insert(name.to_owned(), train.clone());
        self.tests.insert(name.to_owned(), test.clone());
        let h = self.build_hospital(name, train, test, None);
        self.hospitals.insert(name.to_owned(), h);
        self.connect(name);
    }

    /// Adds a hospital whose raw rows follow the consortium `schema`, built
    /// with [`HospitalMachine::with_schema`] and connected.
    pub fn add_schema_hospital(
        &mut self,
        name: &str,
        schema: learning::ConsortiumSchema,
        train: learning::RawTable,
        test: Option<learning::RawTable>,
    ) {
        let mut cfg = HospitalConfig::new(name, self.roster.clone());
        cfg.dangerous_accept_small_test_keys = true;
        cfg.policy.share_metrics = true;
        let h = HospitalMachine::with_schema(cfg, schema, train, test, Sim::mask_key(name), None)
            .expect("hospital");
        self.hospitals.insert(name.to_owned(), h);
        self.connect(name);
    }

    /// The mask key of hospital `name` (fixed per name, as a key file would be).
    pub fn mask_key(name: &str) -> [u8; 32] {
        let mut k = [0u8; 32];
        for (i, b) in name.bytes().enumerate() {
            k[i % 32] ^= b.wrapping_mul(31).wrapping_add(i as u8);
        }
        k
    }

    fn build_hospital(
        &self,
        name: &str,
        train: Dataset,
        test: Option<Dataset>,
        state: Option<HospitalState>,
    ) -> HospitalMachine {
        let roster = match (&self.coord, self.roster.is_empty()) {
            (Some(c), true) => c.roster(),
            _ => self.roster.clone(),
        };
        let mut cfg = HospitalConfig::new(name, roster);
        cfg.dangerous_accept_small_test_keys = true;
        // The harness plays the scenarios, which opt in to sharing metrics.
        cfg.policy.share_metrics = true;
        if let Some(f) = &self.hospital_config {
            f(&mut cfg);
        }
        HospitalMachine::new(cfg, train, test, Sim::mask_key(name), state).expect("hospital")
    }

    /// The hospital process `name` crashes and restarts: its memory is lost,
    /// its persisted state and mask key come back; it reconnects.
    pub fn restart_hospital(&mut self, name: &str) {
        self.in_flight.retain(|p| p.from != name && p.to != name);
        let state = self.persisted.get(name).cloned();
        let train = self.datasets[name].clone();
        let test = self.tests[name].clone();
        let h = self.build_hospital(name, train, test, state);
        self.hospitals.insert(name.to_owned(), h);
        self.dead.remove(name);
        let now = self.now;
        if let Some(c) = self.coord.as_mut() {
            c.peer_lost(now, name);
        }
        self.connect(name);
    }

    /// Both ends see the connection between `name` and the coordinator come up.
    pub fn connect(&mut self, name: &str) {
        let now = self.now;
        if let Some(c) = self.coord.as_mut() {
            c.peer_connected(now, name);
        }
        if let Some(h) = self.hospitals.get_mut(name) {
            h.peer_connected(now, COORD);
        }
        self.collect();
    }

    /// Black-holes a node; with `visible` the coordinator sees its connection drop.
    pub fn kill(&mut self, name: &str, visible: bool) {
        self.dead.insert(name.to_owned());
        self.in_flight.retain(|p| p.from != name && p.to != name);
        if visible {
            let now = self.now;
            if let Some(c) = self.coord.as_mut() {
                c.peer_lost(now, name);
            }
            self.collect();
        }
    }

    /// Brings a killed hospital back (same process state); it reconnects.
    pub fn revive(&mut self, name: &str) {
        self.dead.remove(name);
        self.connect(name);
    }

    /// The coordinator process dies; its messages in flight are lost.
    pub fn crash_coordinator(&mut self) {
        self.coord = None;
        self.in_flight.retain(|p| p.from != COORD && p.to != COORD);
    }

    /// A new coordinator process resumes from `checkpoint` (through JSON, as on
    /// disk) and the hospitals reconnect to it.
    pub fn resume_coordinator(&mut self, config: CoordinatorConfig, checkpoint: &Checkpoint) {
        let json = serde_json::to_string(checkpoint).unwrap();
        let cp: Checkpoint = serde_json::from_str(&json).unwrap();
        self.coord = Some(CoordinatorMachine::resume(config, test_key(), cp, self.now).unwrap());
        let names: Vec<String> = self.hospitals.keys().cloned().collect();
        for n in names {
            self.connect(&n);
        }
    }

    fn schedule(&mut self, from: String, to: String, mut env: Envelope) {
        if self.dead.contains(&from) || self.dead.contains(&to) {
            return;
        }
        if let Some(t) = self.tamper.as_mut() {
            if !t(&from, &to, &mut env) {
                return;
            }
        }
        // Every message crosses the real wire format (framing + JSON) and back.
        let frame = protocol::encode_frame(&env, protocol::DEFAULT_MAX_MESSAGE_BYTES)
            .expect("messages fit the cap");
        let mut decoder = protocol::FrameDecoder::new(protocol::Limits::uniform(
            protocol::DEFAULT_MAX_MESSAGE_BYTES,
        ));
        decoder.push(&frame);
        let decoded = decoder
            .next_envelope()
            .expect("own frames parse")
            .expect("complete");
        assert_eq!(
            decoded,
            env,
            "wire round trip changed a {}",
            env.body.kind()
        );
        let env = decoded;
        let jitter_ns = self.rng.gen_range(0..=self.jitter.as_nanos() as u64);
        let mut at = self.now + self.latency + Duration::from_nanos(jitter_ns);
        let key = (from.clone(), to.clone());
        if let Some(last) = self.link_clock.get(&key) {
            if at <= *last {
                at = *last + Duration::from_nanos(1);
            }
        }
        self.link_clock.insert(key, at);
        self.seq += 1;
        self.in_flight.push(Packet {
            at,
            seq: self.seq,
            from,
            to,
            env,
        });
    }

    /// Moves every machine's queued transmits into the network and events into logs.
    pub fn collect(&mut self) {
        loop {
            let mut out = Vec::new();
            if let Some(c) = self.coord.as_mut() {
                while let Some((to, env)) = c.poll_transmit() {
                    out.push((COORD.to_owned(), to, env));
                }
                while let Some(e) = c.poll_event() {
                    self.coord_events.push(e);
                }
            }
            for (name, h) in self.hospitals.iter_mut() {
                while let Some((to, env)) = h.poll_transmit() {
                    out.push((name.clone(), to, env));
                }
                let log = self.hospital_events.entry(name.clone()).or_default();
                while let Some(e) = h.poll_event() {
                    if let HospitalEvent::Persist { state, .. } = &e {
                        // The driver writes it before any later transmit.
                        self.persisted.insert(name.clone(), (**state).clone());
                    }
                    log.push(e);
                }
            }
            if out.is_empty() {
                // Deferred work, as the driver does it once the transmits are out.
                let now = self.now;
                let mut worked = false;
                if let Some(c) = self.coord.as_mut().filter(|_| self.work.is_none()) {
                    if let Some(w) = c.poll_work() {
                        match self.work_latency {
                            Some(latency) => self.work = Some((now + latency, w)),
                            None => {
                                c.handle_work_done(now, w.run());
                                worked = true;
                            }
                        }
                    }
                }
                for h in self.hospitals.values_mut() {
                    if h.has_pending_work() {
                        h.handle_pending_work(now);
                        worked = true;
                    }
                }
                if worked {
                    continue;
                }
                break;
            }
            for (from, to, env) in out {
                self.schedule(from, to, env);
            }
        }
    }

    /// Delivers one envelope directly (bypassing the network), as the driver would.
    pub fn inject(&mut self, from: &str, to: &str, env: Envelope) -> Result<(), Error> {
        let now = self.now;
        let r = if to == COORD {
            self.coord.as_mut().unwrap().handle_message(now, from, env)
        } else {
            self.hospitals
                .get_mut(to)
                .unwrap()
                .handle_message(now, from, env)
        };
        self.collect();
        r
    }

    /// One network event or timer; returns false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        self.collect();
        let next_packet = self
            .in_flight
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| (p.at, p.seq))
            .map(|(i, p)| (i, p.at));
        let deadline = self.coord.as_ref().and_then(|c| c.next_deadline());
        if let Some((due, _)) = &self.work {
            let due = *due;
            if next_packet.is_none_or(|(_, at)| due <= at) && deadline.is_none_or(|d| due <= d) {
                let (_, w) = self.work.take().expect("checked");
                self.now = self.now.max(due);
                let now = self.now;
                if let Some(c) = self.coord.as_mut() {
                    c.handle_work_done(now, w.run());
                }
                self.collect();
                return true;
            }
        }
        let packet_first = match (next_packet, deadline) {
            (Some((_, at)), Some(d)) => at <= d,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        if packet_first {
            let (i, at) = next_packet.expect("some");
            let p = self.in_flight.swap_remove(i);
            self.now = self.now.max(at);
            self.deliver(p);
        } else {
            let d = deadline.expect("some");
            self.now = self.now.max(d);
            let now = self.now;
            self.coord.as_mut().unwrap().handle_timeout(now);
        }
        self.collect();
        true
    }

    fn deliver(&mut self, p: Packet) {
        if self.dead.contains(&p.from) || self.dead.contains(&p.to) {
            return;
        }
        self.delivered += 1;
        let now = self.now;
        let r = if p.to == COORD {
            match self.coord.as_mut() {
                Some(c) => c.handle_message(now, &p.from, p.env),
                None => Ok(()),
            }
        } else {
            match self.hospitals.get_mut(&p.to) {
                Some(h) => h.handle_message(now, &p.from, p.env),
                None => Ok(()),
            }
        };
        if let Err(e) = r {
            self.rejected.push((p.to, e));
        }
    }

    /// Steps until `done` holds or nothing is left; panics after `max` steps.
    pub fn run_until(&mut self, max: usize, mut done: impl FnMut(&Sim) -> bool) {
        for _ in 0..max {
            if done(self) {
                return;
            }
            if !self.step() {
                return;
            }
        }
        panic!("simulation did not settle within {max} steps");
    }

    pub fn run_to_end(&mut self) {
        self.run_until(200_000, |s| s.coord.as_ref().is_some_and(|c| c.is_done()));
        // Let the final Done messages arrive.
        self.run_until(10_000, |s| s.in_flight.is_empty());
    }

    pub fn finished(&self) -> Option<&protocol::RunResults> {
        self.coord_events.iter().find_map(|e| match e {
            CoordinatorEvent::Finished(r) => Some(&**r),
            _ => None,
        })
    }

    pub fn failure(&self) -> Option<&Error> {
        self.coord_events.iter().find_map(|e| match e {
            CoordinatorEvent::Failed(err) => Some(err),
            _ => None,
        })
    }

    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        self.coord_events
            .iter()
            .filter_map(|e| match e {
                CoordinatorEvent::Checkpoint(c) => Some((**c).clone()),
                _ => None,
            })
            .collect()
    }

    pub fn dropped(&self) -> Vec<String> {
        self.coord_events
            .iter()
            .filter_map(|e| match e {
                CoordinatorEvent::NodeDropped { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn aborts(&self) -> usize {
        self.coord_events
            .iter()
            .filter(|e| matches!(e, CoordinatorEvent::RoundAborted { .. }))
            .count()
    }

    pub fn completed_rounds(&self) -> usize {
        self.coord_events
            .iter()
            .filter(|e| matches!(e, CoordinatorEvent::RoundCompleted(_)))
            .count()
    }

    /// Final weights of each hospital whose report reached the coordinator,
    /// from its own local report (seed-mode weights never leave a hospital).
    pub fn final_weights(&self) -> BTreeMap<String, Vec<f64>> {
        let reported: Vec<&str> = self
            .finished()
            .expect("finished")
            .hospitals
            .iter()
            .filter(|h| h.report.is_some())
            .map(|h| h.name.as_str())
            .collect();
        self.hospital_events
            .iter()
            .filter(|(name, _)| reported.contains(&name.as_str()))
            .filter_map(|(name, log)| {
                log.iter().find_map(|e| match e {
                    HospitalEvent::Finished(r) => Some((name.clone(), r.weights.clone())),
                    _ => None,
                })
            })
            .collect()
    }

    pub fn hospital_finished(&self, name: &str) -> bool {
        self.hospital_events
            .get(name)
            .is_some_and(|l| l.iter().any(|e| matches!(e, HospitalEvent::Finished(_))))
    }
}

/// `learning`'s cleartext twin of the protocol with the given ring per round
/// (names as the results record them): every hospital's weights after all
/// rounds (a hospital that was away replays the aggregates it missed).
pub fn cleartext_twin(
    data: &BTreeMap<String, Dataset>,
    mode: Mode,
    rounds: u32,
    eta: f64,
    rings: &[Vec<String>],
) -> BTreeMap<String, Array1<f64>> {
    let names: Vec<&String> = data.keys().collect();
    let datasets: Vec<Dataset> = data.values().cloned().collect();
    let participants = learning::participant_indices(&names, rings).expect("rings name hospitals");
    let twin = ReferenceRun {
        mode,
        rounds: rounds as usize,
        eta,
    }
    .run_rounds(&datasets, &participants)
    .expect("cleartext twin");
    names.into_iter().cloned().zip(twin.final_weights).collect()
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn body_kind(env: &Envelope) -> &'static str {
    env.body.kind()
}

pub fn is_ring_pass(env: &Envelope) -> bool {
    matches!(env.body, Body::RingPass(_))
}
