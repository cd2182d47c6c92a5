//! The coordinator's driver: binds the QUIC endpoint, feeds the protocol's
//! `CoordinatorMachine` with authenticated messages, connection changes and
//! timeouts, sends what it polls, persists checkpoints and results, and
//! prints one JSON progress line per event on stdout.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use node::driver::{self, Flow, Role};
use node::logging::progress;
use node::pki::NodeIdentity;
use node::process::peak_rss_bytes;
use node::transport::{Endpoint, Hub, TransportOptions};
use protocol::plan::StepKind;
use protocol::{Checkpoint, CoordinatorConfig, CoordinatorEvent, CoordinatorMachine, RunResults};
use serde::Serialize;
use serde_json::json;

use crate::config::{Config, Overrides};
use crate::files::load_or_generate_key;
use node::files::{write_atomic, Journal};
use node::relay::RelayForwarder;
use protocol::encode_relay_frame;

/// Per-hospital entry of the results file.
#[derive(Serialize)]
struct HospitalOut {
    name: String,
    rows: u64,
    local_test_mse: Option<f64>,
    federated_test_mse: Option<f64>,
    /// Test MSE after each round (null where it took no part or has no test set).
    test_mse_history: Vec<Option<f64>>,
    /// Only in `global` mode (seed-mode weights stay at the hospital).
    final_weights: Option<Vec<f64>>,
    /// From the hospital's report (null if it sent none or did not measure).
    peak_rss_bytes: Option<u64>,
}

#[derive(Serialize)]
struct RoundOut {
    /// The step's number, 1-based over every kind of step.
    round: u32,
    #[serde(flatten)]
    step: protocol::plan::StepKind,
    participants: Vec<String>,
    attempts: u32,
    latency_s: Option<f64>,
    test_mse: BTreeMap<String, Option<f64>>,
}

#[derive(Serialize)]
struct Timings {
    training_s: Option<f64>,
    round_latency_s: Vec<Option<f64>>,
    median_round_latency_s: Option<f64>,
    key_setup_s: f64,
}

#[derive(Serialize)]
struct ResultsOut<'a> {
    format: &'static str,
    run_id: String,
    mode: String,
    rounds: u32,
    trained_rounds: u32,
    converged: bool,
    model: learning::ModelKind,
    l2: f64,
    eta: f64,
    masks: bool,
    pack: bool,
    key_bits: usize,
    resumed: bool,
    feature_names: &'a [String],
    target_name: &'a str,
    scaler: Option<&'a learning::Scaler>,
    pooled_metrics: Option<&'a learning::Metrics>,
    hospitals: Vec<HospitalOut>,
    rounds_detail: Vec<RoundOut>,
    timings: Timings,
    coordinator_peak_rss_bytes: Option<u64>,
    protocol: &'a RunResults,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

struct Timer {
    key_setup_s: f64,
    started: BTreeMap<u32, Instant>,
    latency: BTreeMap<u32, f64>,
    first_start: Option<Instant>,
    last_done: Option<Instant>,
}

fn build_results<'a>(
    cfg: &Config,
    res: &'a RunResults,
    t: &Timer,
    resumed: bool,
) -> ResultsOut<'a> {
    let hospitals = res
        .hospitals
        .iter()
        .map(|h| HospitalOut {
            name: h.name.clone(),
            rows: h.rows,
            local_test_mse: h.report.as_ref().and_then(|r| r.local_test_mse),
            federated_test_mse: h.report.as_ref().and_then(|r| r.federated_test_mse),
            test_mse_history: res
                .rounds
                .iter()
                .filter(|r| matches!(r.step, StepKind::Training { .. }))
                .map(|r| r.test_mse.get(&h.name).copied().flatten())
                .collect(),
            final_weights: h.report.as_ref().and_then(|r| r.weights.clone()),
            peak_rss_bytes: h.report.as_ref().and_then(|r| r.peak_rss_bytes),
        })
        .collect();
    let rounds_detail: Vec<RoundOut> = res
        .rounds
        .iter()
        .map(|r| RoundOut {
            round: r.round + 1,
            step: r.step,
            participants: r.participants.clone(),
            attempts: r.attempts,
            latency_s: t.latency.get(&r.round).copied(),
            test_mse: r.test_mse.clone(),
        })
        .collect();
    // The median over training rounds (the statistics and evaluation
    // steps' latencies are in `round_latency_s`).
    let lat: Vec<f64> = rounds_detail
        .iter()
        .filter(|r| matches!(r.step, StepKind::Training { .. }))
        .filter_map(|r| r.latency_s)
        .collect();
    ResultsOut {
        format: "federation-results/1",
        run_id: res.run_id.to_string(),
        mode: res.params.mode.to_string(),
        rounds: res.params.rounds,
        trained_rounds: res.trained_rounds,
        converged: res.converged,
        model: res.model,
        l2: res.params.l2,
        eta: res.params.eta,
        masks: res.params.masks,
        pack: res.params.pack,
        key_bits: cfg.key_bits,
        resumed,
        feature_names: &res.schema.feature_names,
        target_name: &res.schema.target_name,
        scaler: res.scaler.as_ref(),
        pooled_metrics: res.pooled_metrics.as_ref(),
        hospitals,
        timings: Timings {
            training_s: match (t.first_start, t.last_done) {
                (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
                _ => None,
            },
            round_latency_s: rounds_detail.iter().map(|r| r.latency_s).collect(),
            median_round_latency_s: median(&lat),
            key_setup_s: t.key_setup_s,
        },
        rounds_detail,
        coordinator_peak_rss_bytes: peak_rss_bytes(),
        protocol: res,
    }
}

/// The checkpoint journal at `path` and its newest checkpoint, if there is one.
fn read_checkpoint(path: &Path) -> Result<(Journal, Option<Checkpoint>)> {
    Journal::open_json(path, 0o600).context("reading the checkpoint")
}

/// A resumed run keeps the parameters it started with: they come from the
/// checkpoint, and a command-line override that contradicts them is refused
/// in plain words (a config file's values are superseded, with a note).
fn adopt_checkpoint(cfg: &mut Config, cp: &Checkpoint, ov: &Overrides) -> Result<()> {
    let p = &cp.params;
    let mut conflicts = Vec::new();
    if let Some(r) = ov.rounds.filter(|r| *r != p.rounds) {
        conflicts.push(format!("--rounds {r} (the run has {})", p.rounds));
    }
    if let Some(e) = ov.eta.filter(|e| *e != p.eta) {
        conflicts.push(format!("--eta {e} (the run has {})", p.eta));
    }
    if let Some(m) = ov.mode.filter(|m| *m != p.mode) {
        conflicts.push(format!("--mode {m:?} (the run has {:?})", p.mode).to_lowercase());
    }
    if ov.no_masks && p.masks {
        conflicts.push("--no-masks (the run has masks on)".into());
    }
    if ov.no_pack && p.pack {
        conflicts.push("--no-pack (the run packs values)".into());
    }
    if let Some(id) = ov
        .run_id
        .as_ref()
        .filter(|id| id.as_str() != cp.run_id.as_str())
    {
        conflicts.push(format!("--run-id {id} (the run is {})", cp.run_id));
    }
    if !conflicts.is_empty() {
        bail!(
            "--resume continues run {} with the parameters it started with; these options \
             contradict them: {}. Drop them to resume, or start a new run with another \
             checkpoint path",
            cp.run_id,
            conflicts.join(", ")
        );
    }
    if cfg.params != *p || cfg.run_id != cp.run_id {
        tracing::info!(
            run_id = %cp.run_id,
            rounds = p.rounds,
            eta = p.eta,
            "resuming with the checkpoint's run id and parameters (the config's differ)"
        );
    }
    cfg.params = p.clone();
    cfg.run_id = cp.run_id.clone();
    Ok(())
}

/// Runs (or with `resume`, continues) the coordinator until the run finishes
/// (Ok) or fails (Err); `ov` are the command-line overrides already applied to `cfg`, checked against a resumed
/// checkpoint.
pub async fn run(mut cfg: Config, resume: bool, ov: &Overrides) -> Result<()> {
    let identity = NodeIdentity::load(&cfg.pki).context("loading the coordinator's certificate")?;
    if identity.name() != cfg.name {
        bail!(
            "certificate {} is issued to {:?} but this node is configured as {:?}",
            cfg.pki.cert.display(),
            identity.name(),
            cfg.name
        );
    }
    let (checkpoints, existing) = read_checkpoint(&cfg.checkpoint_path)?;
    let checkpoint = match (resume, existing) {
        (true, None) => bail!(
            "--resume: there is no checkpoint at {} to continue",
            cfg.checkpoint_path.display()
        ),
        (true, Some(cp)) if cp.finished => {
            tracing::info!(run_id = %cp.run_id, "the run already finished; nothing to resume");
            progress(&json!({
                "event": "finished",
                "already": true,
                "run_id": cp.run_id.to_string(),
                "rounds": cp.params.rounds,
                "results": cfg.results_path.display().to_string(),
            }));
            return Ok(());
        }
        (true, Some(cp)) => {
            adopt_checkpoint(&mut cfg, &cp, ov)?;
            Some(cp)
        }
        (false, Some(cp)) if cp.finished => bail!(
            "{} holds run {}, which finished after {} rounds (results in {}); to start a new \
             run, delete that checkpoint or choose another with --checkpoint",
            cfg.checkpoint_path.display(),
            cp.run_id,
            cp.params.rounds,
            cfg.results_path.display()
        ),
        (false, Some(cp)) => bail!(
            "{} holds run {}, stopped after {} of {} rounds: continue it with --resume, or \
             delete the checkpoint to start over",
            cfg.checkpoint_path.display(),
            cp.run_id,
            cp.next_round,
            cp.params.rounds
        ),
        (false, None) => None,
    };
    let t0 = Instant::now();
    let sk: protocol::RunKey = match &cfg.threshold_key {
        Some(path) => {
            let public = key_ceremony::files::load_public(path)
                .context("reading the threshold key's public file")?;
            let run =
                protocol::ThresholdRun::new(public.key().clone(), public.hospitals().to_vec())
                    .with_context(|| format!("the threshold key of {}", path.display()))?;
            tracing::info!(
                fingerprint = %run.key().public_key().fingerprint(),
                threshold = run.threshold(),
                parties = run.parties().len(),
                "threshold key: any {} of the hospitals {:?} decrypt together, the coordinator \
                 alone cannot",
                run.threshold(),
                run.parties()
            );
            // The table every verification uses, built off the first round.
            let key = run.key().clone();
            std::thread::spawn(move || key.precompute());
            run.into()
        }
        None => {
            if resume && !cfg.key_path.exists() {
                bail!(
                    "--resume needs the run's Paillier key, but {} does not exist",
                    cfg.key_path.display()
                );
            }
            let (sk, generated) = load_or_generate_key(&cfg.key_path, cfg.key_bits)?;
            tracing::info!(
                fingerprint = %sk.public_key().fingerprint(),
                generated,
                "Paillier key ready in {:.2} s",
                t0.elapsed().as_secs_f64()
            );
            sk.into()
        }
    };
    // The limits and the results name the key actually used.
    cfg.key_bits = sk.public_key().bits();
    let key_setup_s = t0.elapsed().as_secs_f64();

    let mut mcfg =
        CoordinatorConfig::new(cfg.run_id.clone(), cfg.roster.clone(), cfg.params.clone());
    mcfg.name = cfg.name.clone();
    mcfg.min_hospitals = cfg.min_hospitals;
    mcfg.join_timeout = cfg.join_timeout;
    mcfg.round_timeout = cfg.round_timeout;
    mcfg.max_attempts = cfg.max_attempts;
    mcfg.max_features = Some(cfg.max_features);
    mcfg.consortium = cfg.consortium.clone();
    let now = Instant::now();
    let last_checkpoint = checkpoint.clone();
    let mut machine = match checkpoint {
        Some(cp) => CoordinatorMachine::resume(mcfg, sk, cp, now)
            .context("the checkpoint does not fit this configuration")?,
        None => CoordinatorMachine::new(mcfg, sk, now).context("invalid run configuration")?,
    };

    let limits = cfg.inbound_limits();
    let options =
        TransportOptions::for_node(cfg.max_message_bytes, limits.clone(), cfg.idle_timeout);
    let peers = cfg.roster.iter().map(|m| m.name.clone());
    let endpoint = Endpoint::bind(cfg.listen, &identity, peers, options)?;
    let local = endpoint.local_addr()?;
    tracing::info!(%local, run_id = %machine.run_id(), "coordinator listening");
    progress(&json!({
        "event": "listening",
        "addr": local.to_string(),
        "run_id": machine.run_id().to_string(),
        "resumed": resume,
        "next_round": machine.next_round() + 1,
        "rounds": cfg.params.rounds,
    }));
    let (mut hub, mut net) = Hub::start(endpoint);

    let (output, batches) = std::sync::mpsc::channel::<Vec<Job>>();
    let output_thread = std::thread::spawn(move || write_outputs(batches));
    let mut role = CoordinatorRole {
        cfg: &cfg,
        timer: Timer {
            key_setup_s,
            started: BTreeMap::new(),
            latency: BTreeMap::new(),
            first_start: None,
            last_done: None,
        },
        resumed: resume,
        failure: None,
        jobs: Vec::new(),
        output,
        output_thread: &output_thread,
        last_checkpoint,
        checkpoints,
        relay: RelayForwarder::new(cfg.roster.iter().map(|m| m.name.clone())),
        run_id: machine.run_id().clone(),
    };
    // A signal stops the loop between two calls into the machine: every
    // completed round's checkpoint is already durable (written before its
    // aggregate went out), so `--resume` continues from the round in flight.
    let (looped, stopped) = driver::run_until_signal(
        &mut machine,
        &mut role,
        &mut hub,
        &mut net,
        cfg.max_message_bytes,
        &limits,
    )
    .await;
    let failure = role.failure.take();
    drop(role);
    let written = output_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the output writer panicked"))?;
    // Deliver the final Done / Stop messages before closing.
    hub.shutdown(Duration::from_secs(5)).await;
    looped?;
    written?;
    if let Some(s) = stopped {
        let done = machine.next_round();
        tracing::warn!(
            "{s} after {done} completed round(s); the checkpoint is durable: continue with \
             `coordinator run --resume`"
        );
        progress(&json!({
            "event": "stopped",
            "signal": s.name,
            "completed_rounds": done,
            "rounds": cfg.params.rounds,
            "checkpoint": cfg.checkpoint_path.display().to_string(),
        }));
        return Err(anyhow::Error::new(s));
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The coordinator's side of the driver loop: turns events into progress
/// lines and files, handed in batches to the output thread.
struct CoordinatorRole<'a> {
    cfg: &'a Config,
    timer: Timer,
    resumed: bool,
    failure: Option<anyhow::Error>,
    jobs: Vec<Job>,
    output: std::sync::mpsc::Sender<Vec<Job>>,
    output_thread: &'a std::thread::JoinHandle<Result<()>>,
    /// The latest checkpoint written (or resumed from), marked finished at the end.
    last_checkpoint: Option<Checkpoint>,
    /// The checkpoint file, appended to after every round.
    checkpoints: Journal,
    /// Routes the sealed hospital-to-hospital traffic of relay-mode hospitals.
    relay: RelayForwarder,
    /// The run (relayed frames of any other are refused).
    run_id: protocol::RunId,
}

impl Role<CoordinatorMachine> for CoordinatorRole<'_> {
    type Error = anyhow::Error;

    fn on_event(&mut self, ev: CoordinatorEvent, _hub: &mut Hub) -> Result<Flow> {
        if let CoordinatorEvent::RoundStarted {
            round, epoch, ring, ..
        } = &ev
        {
            self.relay
                .set_attempt(self.run_id.clone(), *round, *epoch, ring.clone());
        }
        handle_event(self, ev)?;
        Ok(Flow::Continue)
    }

    fn on_relay(
        &mut self,
        peer: &str,
        payload: &[u8],
        _limits: &protocol::PeerLimits,
        hub: &mut Hub,
    ) -> Vec<node::relay::Delivery> {
        // Forwarded as it came: only the cleartext routing header is read.
        match self.relay.route(peer, payload) {
            Ok(to) => {
                match encode_relay_frame(payload, self.cfg.max_message_bytes) {
                    Ok(frame) => {
                        for name in to {
                            // A full queue drops this frame, never the recipient's
                            // link: a hospital must not get another disconnected.
                            if !hub.send_or_drop(&name, frame.clone()) {
                                tracing::debug!(%peer, to = %name, "relay recipient not connected or not reading; dropped");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(%peer, "relay frame not forwarded: {e}"),
                }
            }
            Err(e) => tracing::warn!("relay frame refused: {e}"),
        }
        Vec::new()
    }

    fn after_events(&mut self) -> Result<Flow> {
        // One batch per drain: a send error means the writer stopped on an
        // error, which joining it reports.
        if !self.jobs.is_empty() && self.output.send(std::mem::take(&mut self.jobs)).is_err() {
            return Ok(Flow::Stop);
        }
        if self.output_thread.is_finished() {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }
}

/// Output produced by the round loop, handled in order off the loop.
enum Job {
    /// Write this file atomically (checkpoint, results).
    File(std::path::PathBuf, Vec<u8>),
    /// Print this progress line.
    Line(serde_json::Value),
}

/// Handles the batches of outputs of the loop (one batch per drain of the
/// machine's events) off the loop, so fsyncs never stall the rounds. Within a
/// batch the files are written first, so a round's line appears only once its
/// checkpoint (emitted in the same drain) is durable, and "finished" only once
/// the results file is.
fn write_outputs(batches: std::sync::mpsc::Receiver<Vec<Job>>) -> Result<()> {
    for batch in batches {
        let mut lines = Vec::new();
        for job in batch {
            match job {
                // Results hold per-hospital figures: owner-only.
                Job::File(path, bytes) => write_atomic(&path, &bytes, 0o600, true)?,
                Job::Line(v) => lines.push(v),
            }
        }
        lines.iter().for_each(progress);
    }
    Ok(())
}

fn handle_event(role: &mut CoordinatorRole<'_>, ev: CoordinatorEvent) -> Result<()> {
    let CoordinatorRole {
        cfg,
        timer: t,
        resumed,
        failure,
        jobs,
        last_checkpoint,
        checkpoints,
        ..
    } = role;
    let (cfg, resumed) = (*cfg, *resumed);
    match ev {
        CoordinatorEvent::HospitalJoined { name, rows } => {
            tracing::info!(hospital = %name, rows, "hospital joined");
            jobs.push(Job::Line(
                json!({"event": "joined", "hospital": name, "rows": rows}),
            ));
        }
        CoordinatorEvent::HospitalWithdrew { name, reason } => {
            tracing::warn!(hospital = %name, "cannot take part: {reason}");
            jobs.push(Job::Line(
                json!({"event": "withdrew", "hospital": name, "reason": reason}),
            ));
        }
        CoordinatorEvent::RoundStarted {
            round, epoch, ring, ..
        } => {
            let now = Instant::now();
            t.started.entry(round).or_insert(now);
            t.first_start.get_or_insert(now);
            tracing::debug!(round = round + 1, epoch, ?ring, "round started");
        }
        CoordinatorEvent::RoundAborted { round, reason } => {
            tracing::warn!(round = round + 1, "round aborted: {reason}");
            jobs.push(Job::Line(
                json!({"event": "aborted", "round": round + 1, "reason": reason}),
            ));
        }
        CoordinatorEvent::NodeDropped {
            name,
            round,
            reason,
        } => {
            tracing::warn!(hospital = %name, round = round + 1, "dropped: {reason}");
            jobs.push(Job::Line(
                json!({"event": "dropped", "hospital": name, "round": round + 1, "reason": reason}),
            ));
        }
        CoordinatorEvent::RoundCompleted(s) => {
            let now = Instant::now();
            t.last_done = Some(now);
            let latency = t.started.get(&s.round).map(|a| (now - *a).as_secs_f64());
            if let Some(l) = latency {
                t.latency.insert(s.round, l);
            }
            let (event, round) = match s.step {
                StepKind::Statistics => ("statistics", None),
                StepKind::Training { index } => ("round", Some(index + 1)),
                StepKind::Evaluation => ("evaluation", None),
            };
            jobs.push(Job::Line(json!({
                "event": event,
                "step": s.round + 1,
                "round": round,
                "rounds": cfg.params.rounds,
                "participants": s.participants,
                "attempts": s.attempts,
                "latency_s": latency,
                "test_mse": s.test_mse,
            })));
        }
        CoordinatorEvent::Checkpoint(cp) => {
            // Durable before the loop sends the aggregate it holds: written
            // here, synchronously, not on the output thread.
            let json = serde_json::to_vec(&*cp).context("serializing the checkpoint")?;
            checkpoints
                .append(&json, true)
                .context("writing the checkpoint")?;
            *last_checkpoint = Some(*cp);
        }
        CoordinatorEvent::Finished(res) => {
            let out = build_results(cfg, &res, t, resumed);
            let json = serde_json::to_vec_pretty(&out).context("serializing the results")?;
            jobs.push(Job::File(cfg.results_path.clone(), json));
            // After the results (same batch, written in order): the
            // checkpoint says the run is over, so neither a restart nor a
            // --resume runs it again. It replaces the journal by this one
            // record (nothing is appended after it).
            if let Some(mut cp) = last_checkpoint.take() {
                cp.finished = true;
                let mut json = serde_json::to_vec(&cp).context("serializing the checkpoint")?;
                json.push(b'\n');
                jobs.push(Job::File(cfg.checkpoint_path.clone(), json));
            }
            jobs.push(Job::Line(json!({
                "event": "finished",
                "results": cfg.results_path.display().to_string(),
                "training_s": out.timings.training_s,
                "median_round_latency_s": out.timings.median_round_latency_s,
            })));
        }
        CoordinatorEvent::Failed(e) => {
            let e = anyhow::Error::new(e).context("the run failed");
            jobs.push(Job::Line(
                json!({"event": "failed", "error": format!("{e:#}")}),
            ));
            *failure = Some(e);
        }
        other => tracing::debug!("event: {other:?}"),
    }
    Ok(())
}
