//! Runs the real federation for a scenario: provisions a work directory (PKI,
//! configs, one CSV per hospital plus `test.csv`), starts the `coordinator`
//! on a port the system picks, reads the address it bound, then starts one
//! `hospital-node` process per hospital pointed at it; follows the rounds
//! with a progress bar, surfaces any child's failure with its log tail, and
//! reads the coordinator's results.
//!
//! Every node started is registered with this module, which stops them all
//! when the run ends, fails, or `scenarios` receives SIGINT, SIGTERM or
//! SIGHUP ([`stop_nodes_on_signals`]), so no node outlives the scenario that
//! started it. One federation runs at a time per process.
//!
//! What the configs and command lines hold is [`crate::nodes`]'; finding the
//! binaries is [`crate::binaries`]'.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use learning::ConsortiumSchema;

use crate::binaries::Binaries;
use crate::nodes::{self, FederationOutcome, Progress};
use crate::plan::Plan;
use crate::prep::Split;

/// How long the coordinator may take to generate its key and bind.
const LISTEN_DEADLINE: Duration = Duration::from_secs(600);
/// How long a whole run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(3600);

/// The last `max_lines` lines of a log file (for error reports).
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let lines: Vec<&str> = buf.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..]
        .iter()
        .map(|l| strip_ansi(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Removes terminal colour sequences (ESC [ ... letter) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A started node process with its log file.
#[derive(Debug)]
struct Node {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The nodes started and not yet reaped, shared with the signal thread.
#[derive(Debug)]
struct Registry {
    nodes: Vec<Node>,
    /// Set by a signal: nothing more may start.
    stopping: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    nodes: Vec::new(),
    stopping: false,
});

/// The registry, even if a panicking thread held it (killing children must
/// still work then).
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Kills and reaps every node still running and forgets them all.
    fn stop_all(&mut self) {
        for n in &mut self.nodes {
            if matches!(n.child.try_wait(), Ok(None)) {
                let _ = n.child.kill();
            }
            let _ = n.child.wait();
        }
        self.nodes.clear();
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP stop every node this process started
/// before it exits (with 128 + the signal's number, as a shell reports it).
/// Without this a SIGTERM to `scenarios` alone would leave the nodes running:
/// only a terminal's Ctrl-C reaches the whole process group.
pub fn stop_nodes_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing the signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let mut r = registry();
                r.stopping = true;
                if !r.nodes.is_empty() {
                    eprintln!(
                        "\nscenarios: signal {sig}: stopping the {} nodes it started",
                        r.nodes.len()
                    );
                }
                r.stop_all();
                // Exits holding the registry, so nothing new starts meanwhile.
                std::process::exit(128 + sig);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Starts `cmd` as node `name` and registers it; returns its stdout when
/// `cmd` pipes it.
fn start(name: &str, cmd: &mut Command, log: PathBuf) -> Result<Option<ChildStdout>> {
    let mut r = registry();
    if r.stopping {
        bail!("stopping: {name} not started");
    }
    let mut child = cmd
        .env("NO_COLOR", "1")
        .spawn()
        .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
    let stdout = child.stdout.take();
    r.nodes.push(Node {
        name: name.to_owned(),
        child,
        log,
    });
    Ok(stdout)
}

/// Stops the run's nodes when it ends, however it ends.
#[derive(Debug)]
struct Nodes;

impl Drop for Nodes {
    fn drop(&mut self) {
        registry().stop_all();
    }
}

impl Nodes {
    /// `Ok(true)` when every node exited successfully, `Ok(false)` while some
    /// still run, and an error quoting the log tails of the failed nodes
    /// (the coordinator first, since a hospital usually fails because the
    /// coordinator stopped the run) as soon as one failed.
    fn check_failures(&self) -> Result<bool> {
        let mut all_done = true;
        let mut failed = false;
        for n in &mut registry().nodes {
            match n
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", n.name))?
            {
                Some(st) if !st.success() => failed = true,
                Some(_) => {}
                None => all_done = false,
            }
        }
        if !failed {
            return Ok(all_done);
        }
        // Give the others a moment to fail with their own reasons.
        let grace = Instant::now() + Duration::from_secs(2);
        while Instant::now() < grace
            && registry()
                .nodes
                .iter_mut()
                .any(|n| matches!(n.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut msg = String::new();
        for n in &mut registry().nodes {
            if let Ok(Some(st)) = n.child.try_wait() {
                if !st.success() {
                    if msg.is_empty() {
                        msg = format!("{} exited with {st}", n.name);
                    }
                    msg += &format!(
                        "\n--- last lines of {} ({}):\n{}",
                        n.log.display(),
                        n.name,
                        log_tail(&n.log, 20)
                    );
                }
            }
        }
        bail!("{msg}")
    }
}

/// Runs the federation for the split and returns its final weights. With a
/// consortium `schema` every node names it and the hospitals read their CSVs
/// against it (the rows as the hospitals export them: the schema adds the
/// intercept and, when it scales, the federation scales); without one the
/// CSVs are used as given.
pub fn run(
    bins: &Binaries,
    plan: &Plan,
    split: &Split,
    schema: Option<&ConsortiumSchema>,
    keep_workdir: bool,
) -> Result<FederationOutcome> {
    let tmp = tempfile::Builder::new()
        .prefix("scenario-")
        .tempdir()
        .context("creating the work directory")?;
    let workdir = tmp.path().to_path_buf();
    let result = run_in(bins, &workdir, plan, split, schema);
    if keep_workdir {
        let kept = tmp.keep();
        println!("work directory kept: {}", kept.display());
    } else if result.is_err() {
        // Keep the evidence of a failed run (the logs are named in the error).
        let kept = tmp.keep();
        eprintln!("work directory of the failed run kept: {}", kept.display());
    }
    result
}

/// PKI, data and the coordinator's config in `wd`.
fn provision(
    bins: &Binaries,
    wd: &Path,
    plan: &Plan,
    split: &Split,
    schema: Option<&ConsortiumSchema>,
    names: &[String],
) -> Result<()> {
    let log = wd.join("pki.log");
    let out = nodes::pki_init_command(bins, wd, names)
        .output()
        .with_context(|| format!("running {} pki init", bins.coordinator.display()))?;
    fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat())
        .with_context(|| format!("writing {}", log.display()))?;
    if !out.status.success() {
        bail!(
            "coordinator pki init failed ({}):\n{}",
            out.status,
            log_tail(&log, 30)
        );
    }
    split
        .test
        .write_csv(&wd.join(nodes::TEST_CSV))
        .context("writing the test set")?;
    for (name, h) in names.iter().zip(&split.hospitals) {
        let csv = wd.join(nodes::train_csv(name));
        h.write_csv(&csv)
            .with_context(|| format!("writing {}", csv.display()))?;
    }
    if let Some(s) = schema {
        nodes::write_config(&wd.join(nodes::SCHEMA), s.file())?;
    }
    let mut config = nodes::coordinator_config(plan, names, schema.is_some())?;
    // The coordinator's limits follow from the data's real width.
    config.max_features = model_width(split, schema);
    if let Some(t) = plan.threshold {
        // What `key-ceremony deal` does: check, deal, write the public file
        // and one 0600 share per hospital, forget the factors.
        let ceremony = key_ceremony::Plan::new(names.to_vec(), Some(t), plan.key_bits)
            .context("the threshold key ceremony")?;
        key_ceremony::files::deal_into(
            &wd.join(nodes::CEREMONY_DIR),
            &ceremony,
            &mut rand::rngs::OsRng,
        )
        .context("dealing the threshold key")?;
        config.threshold_key = Some(nodes::threshold_public(wd));
    }
    nodes::write_coordinator_config(wd, &config)
}

/// Lines of the coordinator's stdout, read on a thread of their own.
fn read_lines(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the coordinator's `listening` line and returns the address.
fn wait_listening(lines: &Receiver<String>, nodes: &Nodes) -> Result<SocketAddr> {
    let started = Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Progress::Listening(addr) = Progress::parse(&line) {
                    return Ok(addr);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                nodes.check_failures()?;
                bail!("the coordinator closed its stdout without saying where it listens");
            }
        }
        nodes.check_failures()?;
        if started.elapsed() > LISTEN_DEADLINE {
            bail!("the coordinator did not start listening within {LISTEN_DEADLINE:?}");
        }
    }
}

/// Features of the model trained on `split`'s rows.
fn model_width(split: &Split, schema: Option<&ConsortiumSchema>) -> usize {
    schema.map_or(split.test.n_features(), |s| s.feature_names().len())
}

fn run_in(
    bins: &Binaries,
    wd: &Path,
    plan: &Plan,
    split: &Split,
    schema: Option<&ConsortiumSchema>,
) -> Result<FederationOutcome> {
    let names: Vec<String> = (0..split.hospitals.len())
        .map(nodes::hospital_name)
        .collect();
    provision(bins, wd, plan, split, schema, &names)?;
    let nodes = Nodes;
    let coord_log = wd.join("coordinator.log");
    let stdout = start(
        "coordinator",
        nodes::coordinator_command(bins, wd)
            .stdout(Stdio::piped())
            .stderr(log_file(&coord_log)?),
        coord_log,
    )?
    .context("coordinator stdout")?;
    let lines = read_lines(stdout);
    let bar = ProgressBar::new(plan.rounds as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} rounds {bar:40} {pos}/{len} {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("starting the coordinator");
    let coordinator = match wait_listening(&lines, &nodes) {
        Ok(a) => a,
        Err(e) => {
            bar.abandon_with_message("failed");
            return Err(e);
        }
    };
    let target = split.test.target_name();
    for name in &names {
        let mut cfg = nodes::hospital_config(
            name,
            target,
            coordinator,
            &names,
            plan.masks,
            schema.is_some(),
            plan.transport,
        );
        if plan.threshold.is_some() {
            cfg.threshold = Some(hospital_node::config::ThresholdFiles {
                public: nodes::threshold_public(wd),
                share: nodes::threshold_share(wd, name),
            });
        }
        if plan.flood > 0 && names.last() == Some(name) {
            cfg.test_fault_flood = plan.flood;
            cfg.test_fault_flood_coordinator = Some((plan.key_bits, model_width(split, schema)));
        }
        nodes::write_hospital_config(wd, &cfg)?;
        let log = wd.join(format!("{name}.log"));
        start(
            name,
            nodes::hospital_command(bins, wd, name)
                .stdout(log_file(&log)?)
                .stderr(log_file(&log)?),
            log,
        )?;
    }

    bar.set_message("waiting for hospitals");
    let started = Instant::now();
    let mut round_done_at = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Progress::RoundDone(done) = Progress::parse(&line) {
                    round_done_at.push(started.elapsed().as_secs_f64());
                    bar.set_position(done as u64);
                    bar.set_message("training");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The coordinator closed its stdout (it exited): poll the others gently.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(50)),
        }
        let all_done = match nodes.check_failures() {
            Ok(d) => d,
            Err(e) => {
                bar.abandon_with_message("failed");
                return Err(e);
            }
        };
        if all_done {
            break;
        }
        if started.elapsed() > RUN_DEADLINE {
            bar.abandon_with_message("timed out");
            bail!("the federation did not finish within {RUN_DEADLINE:?}");
        }
    }
    drop(nodes);
    bar.finish_with_message("done");
    let mut outcome = nodes::read_results(wd, &names, started.elapsed())?;
    outcome.round_done_at = round_done_at;
    Ok(outcome)
}

fn log_file(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_sequences_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2mtime\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x=1"),
            "time  INFO x=1"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        fs::write(
            &p,
            (1..=50).map(|i| format!("line {i}\n")).collect::<String>(),
        )
        .unwrap();
        assert_eq!(log_tail(&p, 2), "line 49\nline 50");
        assert!(log_tail(&dir.path().join("none.log"), 2).contains("no log"));
    }
}
