//! The hospital node's driver: loads its data, binds the QUIC endpoint, keeps
//! a link to the coordinator (reconnecting to a resumed one), opens links to
//! ring peers on demand, and feeds the protocol's `HospitalMachine`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use learning::{Dataset, Metrics, RawTable, Target};
use node::driver::{self, Flow, Role};
use node::logging::progress;
use node::pki::NodeIdentity;
use node::process::peak_rss_bytes;
use node::transport::{Endpoint, Hub, TransportOptions};
use paillier::threshold::KeyShare;
use protocol::encode_relay_frame;
use protocol::wire::{Body, Kind, LENGTH_PREFIX_BYTES};
use protocol::{
    Envelope, HospitalConfig, HospitalEvent, HospitalMachine, HospitalState, LocalReport,
};
use serde::Serialize;
use serde_json::json;

use crate::config::{Config, Transport};

/// This node's own report file.
#[derive(Serialize)]
struct NodeReport {
    format: &'static str,
    name: String,
    rows: usize,
    local_test_mse: Option<f64>,
    federated_test_mse: Option<f64>,
    /// The local-only model on this node's test rows.
    local_metrics: Option<Metrics>,
    /// The federated model on this node's test rows.
    federated_metrics: Option<Metrics>,
    /// The federated model on every hospital's test rows (the evaluation step).
    pooled_metrics: Option<Metrics>,
    /// The model file written.
    model_path: String,
    test_mse_history: BTreeMap<u32, Option<f64>>,
    local_weights: Vec<f64>,
    final_weights: Vec<f64>,
    peak_rss_bytes: Option<u64>,
}

/// Bytes of paillier's compact ciphertext form before the value itself.
const CIPHERTEXT_HEADER_BYTES: usize = 33;

/// TEST FAULT INJECTION: zeroes the value of a ring pass's ciphertexts (the
/// header stays intact): c = 0 is no valid Paillier ciphertext, so the
/// receiver must reject it.
fn corrupt(env: &mut Envelope) -> bool {
    if let Body::RingPass(rp) = &mut env.body {
        for c in &mut rp.ciphertexts {
            let start = CIPHERTEXT_HEADER_BYTES.min(c.0.len());
            c.0[start..].iter_mut().for_each(|b| *b = 0);
        }
        return true;
    }
    false
}

/// Frames waiting for one ring peer's link at most (the oldest go first).
const MAX_PENDING_FRAMES: usize = 64;

/// TEST FAULT INJECTION: a junk frame of `kind` whose JSON is exactly `max`
/// bytes, built to make a receiver allocate as much as it lets it: a vector of
/// the cheapest elements for the kinds with vectors, one long string (the
/// sender name) for the others.
fn flood_frame(kind: Kind, max: usize) -> Vec<u8> {
    let head = r#"{"version":2,"run_id":"flood","round":0,"#;
    let empty = r#""","#;
    let (open, unit): (&str, &str) = match kind {
        Kind::RingPass => (r#""from":"x","body":{"ciphertexts":["#, empty),
        Kind::Reveal => (
            r#""from":"x","body":{"pair_seeds":["#,
            r#"{"peer":"","seed":""},"#,
        ),
        Kind::Abort => (r#""from":"x","body":{"dropped":["#, empty),
        Kind::Unmask => (r#""from":"x","body":{"members":["#, empty),
        Kind::Report => (r#""from":"x","body":{"weights":["#, "0,"),
        Kind::Aggregate => (r#""from":"x","body":{"record":{"sum":["#, "0,"),
        Kind::Setup => (r#""from":"x","body":{"history":[{"sum":["#, "0,"),
        Kind::RoundStart => (
            r#""from":"x","body":{"ring":["#,
            r#"{"name":"","address":""},"#,
        ),
        Kind::Hello | Kind::Rejoin => (r#""from":"x","body":{"schema":{"feature_names":["#, empty),
        _ => (r#""from":""#, "a"),
    };
    let mut json = Vec::with_capacity(max);
    json.extend_from_slice(head.as_bytes());
    json.extend_from_slice(open.as_bytes());
    while json.len() + unit.len() <= max {
        json.extend_from_slice(unit.as_bytes());
    }
    json.resize(max, b' ');
    let mut frame = ((max + 1) as u32).to_be_bytes().to_vec();
    frame.push(kind.byte());
    frame.extend(json);
    frame
}

/// This hospital's share of the consortium's threshold key (config
/// `threshold`), checked: the public file and the share parse and agree, the
/// share is readable by its owner only and is this hospital's.
pub fn load_key_share(cfg: &Config) -> Result<Option<std::sync::Arc<KeyShare>>> {
    let Some(t) = &cfg.threshold else {
        return Ok(None);
    };
    let public = key_ceremony::files::load_public(&t.public)
        .context("reading the threshold key's public file (config `threshold.public`)")?;
    let share = key_ceremony::files::load_share(&t.share, &public)
        .context("reading this hospital's key share (config `threshold.share`)")?;
    if share.hospital() != cfg.name {
        bail!(
            "{} (config `threshold.share`) is the key share of {:?}, not of this hospital {:?}",
            t.share.display(),
            share.hospital(),
            cfg.name
        );
    }
    tracing::info!(
        fingerprint = %public.key().public_key().fingerprint(),
        threshold = public.key().threshold(),
        "holding a share of the consortium's threshold key: runs under any other key are \
         refused"
    );
    Ok(Some(std::sync::Arc::new(share.share().clone())))
}

/// Runs the node until the run completes (Ok) or fails (Err).
pub async fn run(cfg: Config) -> Result<()> {
    // The identity first: with it, a node whose data cannot be used can still
    // tell the coordinator why instead of leaving it waiting.
    let identity = NodeIdentity::load(&cfg.pki)
        .with_context(|| format!("loading the certificate of {}", cfg.name))?;
    if identity.name() != cfg.name {
        bail!(
            "certificate {} is issued to {:?} but this node is configured as {:?}",
            cfg.pki.cert.display(),
            identity.name(),
            cfg.name
        );
    }
    // A share that cannot be used is a configuration error the coordinator
    // hears of too, as one in the data is.
    let key_share = match load_key_share(&cfg) {
        Ok(s) => s,
        Err(e) => {
            withdraw(&cfg, &identity, &e).await;
            return Err(e);
        }
    };
    let data = match load_data(&cfg) {
        Ok(d) => d,
        Err(e) => {
            withdraw(&cfg, &identity, &e).await;
            return Err(e);
        }
    };
    let rows = data.rows();
    if cfg.test_fault_flood > 0 {
        tracing::warn!(
            n = cfg.test_fault_flood,
            "TEST FAULT INJECTION enabled: flooding every recipient with junk frames"
        );
    }
    if cfg.test_fault_corrupt_ring_passes > 0 {
        tracing::warn!(
            n = cfg.test_fault_corrupt_ring_passes,
            "TEST FAULT INJECTION enabled: corrupting outgoing ring passes"
        );
    }

    let mask_key = load_or_create_mask_key(&cfg.mask_key_path)?;
    let (state_journal, state) = load_state(&cfg.state_path)?;
    let audit = node::audit::AuditLog::open(&cfg.audit_log_path)?;

    let limits = inbound_limits(&cfg, data.max_values());
    let options =
        TransportOptions::for_node(cfg.max_message_bytes, limits.clone(), cfg.idle_timeout);
    let endpoint = make_endpoint(&cfg, &identity, options)?;
    let local = endpoint.local_addr()?;
    let relay = match cfg.transport {
        Transport::Relay => Some(
            node::relay::RelayClient::new(&identity, cfg.policy.roster.clone())
                .context("setting up relay mode")?,
        ),
        Transport::Direct => None,
    };
    let mut hcfg = HospitalConfig::new(cfg.name.clone(), cfg.policy.roster.clone());
    hcfg.coordinator = cfg.coordinator_name.clone();
    hcfg.policy = cfg.policy.clone();
    hcfg.key_share = key_share;
    // Peers dial what the hello announces: the bound address (port 0 resolved)
    // unless that is 0.0.0.0/[::], which no peer can dial; then the roster's.
    // Relay mode announces no address: nobody dials this node.
    hcfg.address = match cfg.transport {
        Transport::Relay => None,
        Transport::Direct => cfg
            .advertise
            .clone()
            .or_else(|| (!local.ip().is_unspecified()).then(|| local.to_string())),
    };
    let machine = match data {
        Data::AsGiven { train, test } => HospitalMachine::new(hcfg, train, test, mask_key, state),
        Data::Schema {
            schema,
            train,
            test,
        } => HospitalMachine::with_schema(hcfg, schema, train, test, mask_key, state),
    }
    .context("invalid hospital setup");
    let mut machine = match machine {
        Ok(m) => m,
        Err(e) => {
            drop(endpoint);
            withdraw(&cfg, &identity, &e).await;
            return Err(e);
        }
    };
    tracing::info!(name = %cfg.name, %local, rows, "hospital node up");
    match cfg.transport {
        Transport::Direct => {
            progress(&json!({"event": "listening", "name": cfg.name, "addr": local.to_string()}))
        }
        // The UDP port of the one outbound connection; it answers no handshake.
        Transport::Relay => progress(
            &json!({"event": "dialing", "name": cfg.name, "transport": "relay", "addr": local.to_string()}),
        ),
    }
    let (mut hub, mut net) = Hub::start(endpoint);
    hub.dial(
        &cfg.coordinator_name,
        cfg.coordinator_address,
        Instant::now() + cfg.coordinator_retry,
    );

    let mut role = HospitalRole {
        cfg: &cfg,
        ring_addr: HashMap::new(),
        pending: HashMap::new(),
        history: BTreeMap::new(),
        faults_left: cfg.test_fault_corrupt_ring_passes,
        outcome: None,
        audit,
        state_journal,
        relay,
        flood: (cfg.test_fault_flood > 0).then(|| {
            // Ring peers run this node's configuration: their limits are ours.
            let peers = limits.get("").clone();
            let coordinator = match cfg.test_fault_flood_coordinator {
                Some((key_bits, features)) => {
                    let shape = protocol::RunShape {
                        key_bits,
                        features,
                        hospitals: cfg.policy.roster.len(),
                        rounds: cfg.policy.max_rounds,
                    };
                    protocol::Limits::hospital_to_coordinator(&shape).capped(cfg.max_message_bytes)
                }
                None => protocol::Limits::uniform(0),
            };
            (coordinator, peers)
        }),
    };
    // A signal stops the loop between two calls into the machine; whatever
    // must survive was persisted before it was relied on.
    let (looped, stopped) = driver::run_until_signal(
        &mut machine,
        &mut role,
        &mut hub,
        &mut net,
        cfg.max_message_bytes,
        &limits,
    )
    .await;
    if let Some(s) = stopped {
        hub.shutdown(Duration::from_secs(1)).await;
        progress(&json!({"event": "stopped", "name": cfg.name, "signal": s.name}));
        return Err(anyhow::Error::new(s));
    }
    hub.shutdown(Duration::from_secs(3)).await;
    looped?;
    let history = role.history;
    let report: LocalReport = match role.outcome {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(e),
        None => bail!("the run ended without a report"),
    };
    // The model first: a run that finished has a model even if the report
    // cannot be written.
    let model_json = serde_json::to_vec_pretty(&report.model).context("serializing the model")?;
    node::files::write_atomic(&cfg.model_path, &model_json, 0o600, true)
        .with_context(|| format!("writing the model {}", cfg.model_path.display()))?;
    let out = NodeReport {
        format: "hospital-report/1",
        name: cfg.name.clone(),
        rows,
        local_test_mse: report.local_test_mse,
        federated_test_mse: report.federated_test_mse,
        local_metrics: report.local_metrics,
        federated_metrics: report.federated_metrics,
        pooled_metrics: report.pooled_metrics,
        model_path: cfg.model_path.display().to_string(),
        test_mse_history: history,
        local_weights: report.local_weights,
        final_weights: report.weights,
        peak_rss_bytes: peak_rss_bytes(),
    };
    if let Some(p) = &cfg.report_path {
        // The local-only model never leaves this node: owner-only.
        let json = serde_json::to_vec_pretty(&out).context("serializing the report")?;
        node::files::write_atomic(p, &json, 0o600, true)
            .with_context(|| format!("writing report {}", p.display()))?;
    }
    progress(&json!({
        "event": "finished",
        "name": out.name,
        "local_test_mse": out.local_test_mse,
        "federated_test_mse": out.federated_test_mse,
        "local_metrics": out.local_metrics,
        "federated_metrics": out.federated_metrics,
        "pooled_metrics": out.pooled_metrics,
        "model": out.model_path,
        "peak_rss_bytes": out.peak_rss_bytes,
    }));
    Ok(())
}

/// The hospital's side of the driver loop: ring addresses, frames waiting for
/// a ring peer's link, progress lines and the final outcome.
struct HospitalRole<'a> {
    cfg: &'a Config,
    ring_addr: HashMap<String, SocketAddr>,
    pending: HashMap<String, Vec<Vec<u8>>>,
    history: BTreeMap<u32, Option<f64>>,
    faults_left: u32,
    outcome: Option<Result<LocalReport>>,
    audit: node::audit::AuditLog,
    /// The protocol state file, appended to on every `Persist`.
    state_journal: node::files::Journal,
    /// Relay mode's sealing client (None in direct mode).
    relay: Option<node::relay::RelayClient>,
    /// TEST FAULT INJECTION: limits of the coordinator and of ring peers, to flood at.
    flood: Option<(protocol::Limits, protocol::Limits)>,
}

/// Logs relayed messages the relay client refused, naming the hospital each
/// claimed to come from.
fn log_refused(refused: &[node::seal::SealError]) {
    for e in refused {
        match e.claimed_sender() {
            Some(claimed) => {
                tracing::warn!(%claimed, "refused a relayed message claiming to come from {claimed}: {e}")
            }
            None => tracing::warn!("refused a relayed message: {e}"),
        }
    }
}

impl HospitalRole<'_> {
    /// Sends a relay payload to the coordinator; the frame's size if it went.
    fn relay_to_coordinator(&mut self, payload: &[u8], hub: &mut Hub) -> Option<usize> {
        match encode_relay_frame(payload, self.cfg.max_message_bytes) {
            Ok(f) => {
                let bytes = f.len();
                if hub.send(&self.cfg.coordinator_name, f) {
                    return Some(bytes);
                }
                tracing::debug!("coordinator not connected; relayed message dropped");
            }
            Err(e) => tracing::error!("cannot relay message: {e}"),
        }
        None
    }
}

impl Role<HospitalMachine> for HospitalRole<'_> {
    type Error = anyhow::Error;

    fn on_event(&mut self, ev: HospitalEvent, hub: &mut Hub) -> Result<Flow> {
        match ev {
            HospitalEvent::SetUp {
                run_id,
                completed_rounds,
            } => {
                tracing::info!(%run_id, completed_rounds, "set up by the coordinator");
                if let Some(relay) = &mut self.relay {
                    relay.reset();
                }
            }
            HospitalEvent::RingChanged {
                run_id,
                round,
                epoch,
                ring,
            } if self.relay.is_some() => {
                let relay = self.relay.as_mut().expect("checked");
                let names = ring.iter().map(|m| m.name.clone());
                let (offer, refused) = relay
                    .on_ring(&run_id, round, epoch, names)
                    .context("making the round's relay keys")?;
                log_refused(&refused);
                if let Some(bytes) = self.relay_to_coordinator(&offer, hub) {
                    // The key offer (DH key and certificate) leaves this node
                    // too, to the coordinator, which hands it to the ring; the
                    // sealed messages are recorded when the machine sends them.
                    let to = self.cfg.coordinator_name.clone();
                    self.audit.record(&to, "key_offer", round, bytes);
                }
                tracing::debug!(epoch, ring = ?ring.iter().map(|m| &m.name).collect::<Vec<_>>(), "ring changed (relayed)");
            }
            HospitalEvent::RingChanged { epoch, ring, .. } => {
                self.ring_addr.clear();
                for m in &ring {
                    if m.name == self.cfg.name {
                        continue;
                    }
                    match m.address.parse::<SocketAddr>() {
                        Ok(a) => {
                            self.ring_addr.insert(m.name.clone(), a);
                        }
                        Err(_) => tracing::warn!(
                            peer = %m.name,
                            "ring address {:?} is not an IP:port", m.address
                        ),
                    }
                }
                let mut allowed: Vec<String> = self.ring_addr.keys().cloned().collect();
                allowed.push(self.cfg.coordinator_name.clone());
                hub.endpoint().set_allowed(allowed);
                tracing::debug!(epoch, ring = ?ring.iter().map(|m| &m.name).collect::<Vec<_>>(), "ring changed");
            }
            HospitalEvent::RoundCompleted {
                round, test_mse, ..
            } => {
                self.history.insert(round + 1, test_mse);
                progress(&json!({"event": "round", "round": round + 1, "test_mse": test_mse}));
            }
            HospitalEvent::Prepared { preprocessor } => {
                // Pooled figures only: every node of the run derives the same.
                progress(&json!({
                    "event": "statistics",
                    "scaled": preprocessor.scaler.as_ref().map(|s| &s.features),
                    "imputed": preprocessor.impute.iter().filter(|v| v.is_some()).count(),
                }));
            }
            HospitalEvent::Evaluated { pooled } => {
                progress(&json!({"event": "evaluation", "pooled_metrics": pooled}));
            }
            HospitalEvent::RoundAborted { round, reason } => {
                tracing::warn!(round = round + 1, "round aborted: {reason}");
            }
            HospitalEvent::Dropped { reason } => {
                tracing::warn!("dropped by the coordinator: {reason}");
            }
            HospitalEvent::Persist { state, sync } => {
                // Before any later transmit: the driver loop sends them after
                // this returns.
                let json = serde_json::to_vec(&*state).context("serializing the state")?;
                self.state_journal
                    .append(&json, sync)
                    .context("persisting the hospital's protocol state")?;
            }
            HospitalEvent::Finished(report) => self.outcome = Some(Ok(report)),
            HospitalEvent::Failed(e) => {
                // The error says it was the coordinator; no second context.
                self.outcome = Some(Err(anyhow::Error::new(e)))
            }
            other => tracing::debug!("event: {other:?}"),
        }
        Ok(if self.outcome.is_some() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    fn on_transmit(&mut self, to: &str, env: &mut Envelope) {
        if self.faults_left > 0 && corrupt(env) {
            self.faults_left -= 1;
            tracing::warn!(to = %to, "TEST FAULT INJECTION: sent a corrupted ring pass");
        }
    }

    fn on_encoded(&mut self, to: &str, env: &Envelope, bytes: usize) {
        self.audit.record(to, env.body.kind(), env.round, bytes);
    }

    fn after_sent(&mut self, to: &str, hub: &mut Hub) {
        let Some((coordinator, peers)) = &self.flood else {
            return;
        };
        let limits = if to == self.cfg.coordinator_name {
            coordinator
        } else {
            peers
        };
        for _ in 0..self.cfg.test_fault_flood {
            for kind in Kind::ALL {
                let max = limits.max_bytes(kind);
                if max > 0 {
                    hub.send(to, flood_frame(kind, max));
                }
            }
        }
    }

    fn undeliverable(&mut self, to: &str, frame: Vec<u8>, hub: &mut Hub) {
        if to == self.cfg.coordinator_name {
            // The machine says hello again on reconnect and resyncs then.
            tracing::debug!("coordinator not connected; message dropped");
        } else if let Some(addr) = self.ring_addr.get(to) {
            let queue = self.pending.entry(to.to_owned()).or_default();
            if queue.len() >= MAX_PENDING_FRAMES {
                queue.remove(0);
            }
            queue.push(frame);
            hub.dial(to, *addr, Instant::now() + self.cfg.peer_dial);
        } else {
            tracing::warn!(peer = %to, "no address for ring peer; message dropped");
        }
    }

    fn route(&mut self, to: &str, frame: Vec<u8>) -> Option<(String, Vec<u8>)> {
        let coordinator = &self.cfg.coordinator_name;
        let Some(relay) = self.relay.as_mut().filter(|_| to != coordinator) else {
            return Some((to.to_owned(), frame));
        };
        match relay.outgoing(to, &frame[LENGTH_PREFIX_BYTES..]) {
            Ok(Some(sealed)) => match encode_relay_frame(&sealed, self.cfg.max_message_bytes) {
                Ok(f) => Some((coordinator.clone(), f)),
                Err(e) => {
                    tracing::error!(peer = %to, "cannot relay message: {e}");
                    None
                }
            },
            // Sent once `to`'s key offer arrives.
            Ok(None) => None,
            Err(e) => {
                tracing::error!(peer = %to, "cannot seal message: {e}");
                None
            }
        }
    }

    fn on_relay(
        &mut self,
        peer: &str,
        payload: &[u8],
        limits: &protocol::PeerLimits,
        hub: &mut Hub,
    ) -> Vec<node::relay::Delivery> {
        let Some(relay) = self
            .relay
            .as_mut()
            .filter(|_| peer == self.cfg.coordinator_name)
        else {
            tracing::warn!(%peer, "relay frame refused: not in relay mode, or not from the coordinator");
            return Vec::new();
        };
        let incoming = relay.incoming(payload, limits);
        log_refused(&incoming.refused);
        for p in &incoming.send {
            self.relay_to_coordinator(p, hub);
        }
        incoming.deliver
    }

    fn on_link_up(&mut self, peer: &str, hub: &mut Hub) {
        for frame in self.pending.remove(peer).unwrap_or_default() {
            hub.send(peer, frame);
        }
    }

    fn on_dial_failed(&mut self, peer: &str, reason: &str) -> Result<()> {
        if peer == self.cfg.coordinator_name {
            bail!(
                "cannot reach the coordinator {peer} at {}: {reason}",
                self.cfg.coordinator_address
            );
        }
        let dropped = self.pending.remove(peer).map_or(0, |v| v.len());
        tracing::warn!(%peer, dropped, "cannot reach ring peer: {reason}");
        Ok(())
    }

    fn on_peer_lost(&mut self, peer: &str, reason: &str, machine: &HospitalMachine, hub: &mut Hub) {
        tracing::info!(%peer, "connection closed: {reason}");
        if peer == self.cfg.coordinator_name && !machine.is_done() {
            // A resumed coordinator comes back at the same address.
            hub.dial(
                peer,
                self.cfg.coordinator_address,
                Instant::now() + self.cfg.coordinator_retry,
            );
        }
    }

    fn before_message(&mut self, env: &Envelope, machine: &mut HospitalMachine) {
        // The machine puts this figure into the final report it sends on
        // `Finish`, so the coordinator's results carry it; reading /proc only
        // then keeps it off the per-message path.
        if matches!(env.body, Body::Finish) {
            if let Some(bytes) = peak_rss_bytes() {
                machine.set_peak_rss_bytes(bytes);
            }
        }
    }
}

/// This node's secret mask key: created (0600) on first start, refused when
/// others can read it.
/// Per-sender limits of what this hospital accepts (see
/// [`protocol::hospital::inbound_limits`]).
/// A hospital's rows as loaded: used as given, or read against the
/// consortium schema (raw, preprocessed inside the run).
enum Data {
    AsGiven {
        train: Dataset,
        test: Option<Dataset>,
    },
    Schema {
        schema: learning::ConsortiumSchema,
        train: RawTable,
        test: Option<RawTable>,
    },
}

impl Data {
    fn rows(&self) -> usize {
        match self {
            Data::AsGiven { train, .. } => train.n_rows(),
            Data::Schema { train, .. } => train.n_rows(),
        }
    }

    /// The longest vector any step of a run over these data may carry.
    fn max_values(&self) -> usize {
        match self {
            Data::AsGiven { train, .. } => protocol::plan::max_vector_values(train.n_features(), 0),
            Data::Schema { schema, .. } => protocol::plan::max_vector_values(
                schema.feature_names().len(),
                schema.statistics_len(),
            ),
        }
    }
}

/// Loads the training and test CSVs, before anything touches the network: a
/// bad file fails here, naming the file, its row and its column.
/// What this node tells the coordinator of `err`: its outermost context
/// (which file, which step) and its root cause, the data's values left out
/// ([`learning::Error::without_values`]); the middle of the chain, which may
/// repeat a value in its own words, is not sent.
fn refusal_reason(err: &anyhow::Error) -> String {
    let top = err.to_string();
    let root = match err.chain().find_map(|c| {
        c.downcast_ref::<learning::Error>()
            .map(learning::Error::without_values)
    }) {
        Some(r) => r,
        None => match err
            .chain()
            .find_map(|c| c.downcast_ref::<protocol::Error>())
        {
            Some(protocol::Error::Learning(e)) => e.without_values(),
            _ => err.root_cause().to_string(),
        },
    };
    if top == root {
        top
    } else {
        format!("{top}: {root}")
    }
}

/// Tells the coordinator that this node cannot take part, and why
/// ([`refusal_reason`]), so that it stops waiting for it; best effort within
/// a few seconds: when the coordinator cannot be reached, only this node's own
/// error reports the failure.
async fn withdraw(cfg: &Config, identity: &NodeIdentity, err: &anyhow::Error) {
    let reason = refusal_reason(err);
    let told = async {
        let options = TransportOptions::for_node(
            cfg.max_message_bytes,
            inbound_limits(cfg, 1),
            cfg.idle_timeout,
        );
        // This endpoint only dials out.
        let endpoint = client_endpoint(cfg, identity, options)?;
        let (mut hub, mut net) = Hub::start(endpoint);
        let give_up = Instant::now() + cfg.coordinator_retry.min(Duration::from_secs(10));
        hub.dial(&cfg.coordinator_name, cfg.coordinator_address, give_up);
        loop {
            match net.recv().await {
                Some(node::transport::NetEvent::Up {
                    peer,
                    id,
                    out,
                    handle,
                }) if peer == cfg.coordinator_name => {
                    hub.link_up(&peer, id, out, handle);
                    break;
                }
                Some(node::transport::NetEvent::Down { id: 0, reason, .. }) => bail!("{reason}"),
                Some(_) => {}
                None => bail!("the endpoint closed"),
            }
        }
        let env = protocol::hospital::withdrawal(&cfg.name, &reason);
        let frame = protocol::wire::encode_frame(&env, cfg.max_message_bytes)?;
        if let Ok(mut audit) = node::audit::AuditLog::open(&cfg.audit_log_path) {
            audit.record(&cfg.coordinator_name, env.body.kind(), 0, frame.len());
        }
        hub.send(&cfg.coordinator_name, frame);
        hub.shutdown(Duration::from_secs(2)).await;
        anyhow::Ok(())
    };
    match told.await {
        Ok(()) => tracing::info!("told the coordinator why this node cannot take part: {reason}"),
        Err(e) => {
            tracing::warn!("could not tell the coordinator why this node cannot take part: {e:#}")
        }
    }
}

fn load_data(cfg: &Config) -> Result<Data> {
    let train_ctx = || format!("loading training data {}", cfg.train_csv.display());
    let test_ctx = |p: &std::path::Path| format!("loading test data {}", p.display());
    Ok(match &cfg.schema {
        None => Data::AsGiven {
            train: Dataset::from_csv_path(&cfg.train_csv, &cfg.target).with_context(train_ctx)?,
            test: cfg
                .test_csv
                .as_deref()
                .map(|p| Dataset::from_csv_path(p, &cfg.target).with_context(|| test_ctx(p)))
                .transpose()?,
        },
        Some(schema) => Data::Schema {
            train: RawTable::from_csv_path(&cfg.train_csv, schema, Target::Required)
                .with_context(train_ctx)?,
            test: cfg
                .test_csv
                .as_deref()
                .map(|p| {
                    RawTable::from_csv_path(p, schema, Target::Required)
                        .with_context(|| test_ctx(p))
                })
                .transpose()?,
            schema: schema.clone(),
        },
    })
}

fn inbound_limits(cfg: &Config, features: usize) -> protocol::PeerLimits {
    protocol::hospital::inbound_limits(
        &cfg.coordinator_name,
        &cfg.policy,
        features,
        cfg.max_message_bytes,
    )
}

fn load_or_create_mask_key(path: &std::path::Path) -> Result<[u8; 32]> {
    if !path.exists() {
        let key: [u8; 32] = rand::random();
        node::files::create_secret(path, &key)
            .with_context(|| format!("creating the mask key {}", path.display()))?;
        return Ok(key);
    }
    let bytes = node::files::read_secret(path)?;
    bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "mask key {} holds {} bytes, expected 32",
            path.display(),
            bytes.len()
        )
    })
}

/// The state journal at `path` and the state this node persisted last, if any.
fn load_state(path: &std::path::Path) -> Result<(node::files::Journal, Option<HospitalState>)> {
    node::files::Journal::open_json(path, 0o600).context("loading the hospital's protocol state")
}

/// A client-only endpoint on an ephemeral port of the coordinator address's
/// family: it dials the coordinator and answers no inbound handshake (it has
/// no server configuration).
fn client_endpoint(
    cfg: &Config,
    identity: &NodeIdentity,
    options: TransportOptions,
) -> Result<Endpoint> {
    let any: std::net::IpAddr = match cfg.coordinator_address {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let coordinator = [cfg.coordinator_name.clone()];
    Ok(Endpoint::client(
        SocketAddr::new(any, 0),
        identity,
        coordinator,
        options,
    )?)
}

/// Direct mode: a QUIC server and client on `listen`. Relay mode: a
/// [`client_endpoint`].
fn make_endpoint(
    cfg: &Config,
    identity: &NodeIdentity,
    options: TransportOptions,
) -> Result<Endpoint> {
    match cfg.listen {
        Some(listen) => {
            let coordinator = [cfg.coordinator_name.clone()];
            Ok(Endpoint::bind(listen, identity, coordinator, options)?)
        }
        None => client_endpoint(cfg, identity, options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &std::path::Path, name: &str, share_of: &str) -> Config {
        let path = dir.join("hospital.json");
        let body = serde_json::json!({
            "name": name,
            "train_csv": "a.csv",
            "roster": ["hospital-1", "hospital-2", "hospital-3"],
            "threshold": {
                "public": "ceremony/threshold-key.json",
                "share": format!("ceremony/{share_of}.share.json"),
            },
        });
        std::fs::write(&path, body.to_string()).unwrap();
        Config::load(Some(&path), &crate::config::Overrides::default()).unwrap()
    }

    #[test]
    fn a_key_share_must_be_this_hospitals_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=3).map(|i| format!("hospital-{i}")).collect();
        let plan = key_ceremony::Plan::new(names, None, 2048).unwrap();
        let (key, shares) = plan.deal(&mut rand::rngs::OsRng).unwrap();
        let ceremony = dir.path().join("ceremony");
        key_ceremony::files::write_ceremony(&ceremony, &plan, &key, &shares).unwrap();
        // Its own share loads.
        let own = load_key_share(&config(dir.path(), "hospital-1", "hospital-1")).unwrap();
        assert_eq!(own.expect("configured").index(), 1);
        // Another hospital's share is refused, naming both.
        let e = load_key_share(&config(dir.path(), "hospital-1", "hospital-2")).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("key share of \"hospital-2\", not of this hospital \"hospital-1\""),
            "{e}"
        );
        // A share others can read is refused, naming the file.
        let p = ceremony.join("hospital-3.share.json");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_key_share(&config(dir.path(), "hospital-3", "hospital-3")).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("hospital-3.share.json") && e.contains("threshold.share"),
            "{e}"
        );
        // No threshold configured: no share.
        let mut c = config(dir.path(), "hospital-2", "hospital-2");
        c.threshold = None;
        assert!(load_key_share(&c).unwrap().is_none());
    }
}
