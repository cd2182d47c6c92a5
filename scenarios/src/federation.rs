//! Runs the real federation for a scenario: provisions a work directory (PKI,
//! configs, one CSV per hospital plus `test.csv`), starts the `coordinator`
//! and one `hospital-node` process per hospital on loopback, follows the
//! rounds with a progress bar, surfaces any child's failure with its log tail,
//! and reads the coordinator's results.
//!
//! Finding the sibling binaries: they are looked up next to the running
//! `scenarios` executable (cargo puts all workspace binaries of one profile in
//! the same target directory). When `scenarios` was started by cargo (`cargo
//! run -p scenarios`, `cargo test -p scenarios`: cargo sets `CARGO`) and the
//! workspace it was built from is still there, it first runs `cargo build -p
//! coordinator -p hospital-node` for the same profile and target directory
//! (a no-op when they are up to date), so a fresh clone needs nothing but
//! `cargo run --release -p scenarios -- diabetes` and a run never uses stale
//! siblings. Started any other way, it uses the binaries beside it and says
//! how to build them when they are missing.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use learning::ndarray::Array1;

use crate::prep::Split;
use crate::report::hospital_name;
use crate::scenario::Plan;

/// What the federation produced.
#[derive(Debug)]
pub struct FederationOutcome {
    /// Each hospital's final federated weights, roster order.
    pub final_weights: Vec<Array1<f64>>,
    /// The coordinator's results document plus timings and memory, for results.json.
    pub report: Option<serde_json::Value>,
    /// Each hospital's test MSE after every round, as the hospitals reported
    /// it to the coordinator (when every value is present).
    pub test_mse_history: Option<Vec<Vec<f64>>>,
    /// Seconds since the processes started at which each round's completion
    /// was announced on the coordinator's stdout.
    pub round_done_at: Vec<f64>,
}

/// The two sibling executables.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `coordinator`.
    pub coordinator: PathBuf,
    /// `hospital-node`.
    pub hospital_node: PathBuf,
}

fn exe_name(stem: &str) -> String {
    format!("{stem}{}", std::env::consts::EXE_SUFFIX)
}

/// Finds (building if needed, see the module docs) `coordinator` and `hospital-node`.
pub fn locate_binaries() -> Result<Binaries> {
    let me = std::env::current_exe().context("locating the scenarios executable")?;
    let mut dir = me
        .parent()
        .context("the scenarios executable has no parent directory")?
        .to_path_buf();
    // Test executables live in <target>/<profile>/deps.
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(p) = dir.parent() {
            dir = p.to_path_buf();
        }
    }
    let bins = Binaries {
        coordinator: dir.join(exe_name("coordinator")),
        hospital_node: dir.join(exe_name("hospital-node")),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").filter(|_| manifest.is_file());
    let Some(cargo) = cargo else {
        if bins.coordinator.is_file() && bins.hospital_node.is_file() {
            return Ok(bins);
        }
        bail!(
            "{} or {} not found next to scenarios; build them with \
             `cargo build --release -p coordinator -p hospital-node` \
             (or run via `cargo run --release -p scenarios`)",
            bins.coordinator.display(),
            bins.hospital_node.display()
        );
    };
    let profile_dir = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let target_dir = dir
        .parent()
        .context("cannot tell the target directory of the scenarios executable")?;
    let profile = if profile_dir == "debug" {
        "dev"
    } else {
        profile_dir.as_str()
    };
    // Started by cargo: let cargo bring the siblings up to date (a no-op when
    // they are), so a run never uses binaries older than the sources.
    eprintln!("checking coordinator and hospital-node are built (profile {profile}) ...");
    let status = Command::new(&cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args([
            "--profile",
            profile,
            "-p",
            "coordinator",
            "-p",
            "hospital-node",
        ])
        .status()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("building coordinator and hospital-node failed ({status})");
    }
    if bins.coordinator.is_file() && bins.hospital_node.is_file() {
        Ok(bins)
    } else {
        bail!(
            "cargo built coordinator and hospital-node but they are not in {}",
            dir.display()
        )
    }
}

/// A loopback UDP port free at the time of asking (QUIC runs over UDP).
pub fn free_udp_port() -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr().context("reading the bound port")?.port())
}

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

/// A started child process with its log file.
#[derive(Debug)]
struct Node {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Children are killed when the scenario ends early, so none outlives it.
#[derive(Debug, Default)]
struct Nodes(Vec<Node>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &mut self.0 {
            if matches!(n.child.try_wait(), Ok(None)) {
                let _ = n.child.kill();
                let _ = n.child.wait();
            }
        }
    }
}

impl Nodes {
    /// `Ok(true)` when every child exited successfully, `Ok(false)` while some
    /// still run, and an error quoting the log tails of the failed children
    /// (the coordinator first, since a hospital usually fails because the
    /// coordinator stopped the run) as soon as one failed.
    fn check_failures(&mut self) -> Result<bool> {
        let mut all_done = true;
        let mut failed = false;
        for n in &mut self.0 {
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
            && self
                .0
                .iter_mut()
                .any(|n| matches!(n.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut msg = String::new();
        for n in &mut self.0 {
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

/// Runs the federation for the split and returns its final weights.
pub fn run(
    bins: &Binaries,
    plan: &Plan,
    split: &Split,
    keep_workdir: bool,
) -> Result<FederationOutcome> {
    let tmp = tempfile::Builder::new()
        .prefix("scenario-")
        .tempdir()
        .context("creating the work directory")?;
    let workdir = tmp.path().to_path_buf();
    let result = run_in(bins, &workdir, plan, split);
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

fn run_in(bins: &Binaries, wd: &Path, plan: &Plan, split: &Split) -> Result<FederationOutcome> {
    let names: Vec<String> = (0..split.hospitals.len()).map(hospital_name).collect();
    crate::wire_format::provision(bins, wd, plan, split, &names)?;
    let mut nodes = Nodes::default();
    let coord_log = wd.join("coordinator.log");
    let mut coord = crate::wire_format::coordinator_command(bins, wd)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log_file(&coord_log)?)
        .spawn()
        .with_context(|| format!("starting {}", bins.coordinator.display()))?;
    let stdout = coord.stdout.take().context("coordinator stdout")?;
    nodes.0.push(Node {
        name: "coordinator".into(),
        child: coord,
        log: coord_log,
    });
    for name in &names {
        let log = wd.join(format!("{name}.log"));
        let child = crate::wire_format::hospital_command(bins, wd, name)
            .env("NO_COLOR", "1")
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .spawn()
            .with_context(|| format!("starting {} for {name}", bins.hospital_node.display()))?;
        nodes.0.push(Node {
            name: name.clone(),
            child,
            log,
        });
    }

    // Progress lines come from the coordinator's stdout on a reader thread.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let bar = ProgressBar::new(plan.rounds as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} rounds {bar:40} {pos}/{len} {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("waiting for hospitals");
    let started = Instant::now();
    let mut coord_lines = Vec::new();
    let mut round_done_at = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(done) = crate::wire_format::rounds_done(&line) {
                    round_done_at.push(started.elapsed().as_secs_f64());
                    bar.set_position(done as u64);
                    bar.set_message("training");
                }
                coord_lines.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // The coordinator closed its stdout (it exited): poll the others gently.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50))
            }
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
        if started.elapsed() > Duration::from_secs(3600) {
            bar.abandon_with_message("timed out");
            bail!("the federation did not finish within an hour");
        }
    }
    let _ = reader.join();
    bar.finish_with_message("done");
    let mut outcome =
        crate::wire_format::read_results(wd, &names, &coord_lines, started.elapsed())?;
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
