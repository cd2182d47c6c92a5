//! Stopping a scenario stops every node it started: `scenarios diabetes` gets
//! SIGTERM (or SIGINT) once its coordinator and hospitals run, and no node
//! process survives it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `(pid, comm)` of the live children of `parent`, from `/proc`.
fn children(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((comm, state, ppid)) = stat(pid) {
            if ppid == parent && state != 'Z' {
                out.push((pid, comm));
            }
        }
    }
    out
}

/// `(comm, state, ppid)` of a process, `None` once it is gone.
fn stat(pid: u32) -> Option<(String, char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Whether `pid` still runs as `comm` (a zombie or another program is not it).
fn alive(pid: u32, comm: &str) -> bool {
    stat(pid).is_some_and(|(c, state, _)| c == comm && state != 'Z')
}

fn signal(pid: u32, name: &str) {
    let st = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{name} {pid}");
}

/// Kills whatever the test leaves behind, so a failure does not leave nodes
/// training for minutes.
struct Cleanup(Vec<(u32, String)>, Option<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (pid, comm) in &self.0 {
            // Only the node itself, never a process that reused its pid.
            if alive(*pid, comm) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if let Some(c) = self.1.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stopping_stops_every_node(sig: &str, expected_code: i32) {
    common::require_node_binaries();
    let dir = tempfile::tempdir().unwrap();
    // Enough rounds that the run is still going when the signal comes.
    let child = Command::new(common::SCENARIOS)
        .args(["diabetes", "--mode", "global", "--rounds", "20000", "--out"])
        .arg(dir.path().join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut cleanup = Cleanup(Vec::new(), Some(child));
    let deadline = Instant::now() + Duration::from_secs(240);
    let nodes = loop {
        let nodes: Vec<(u32, String)> = children(pid)
            .into_iter()
            .filter(|(_, c)| c == "coordinator" || c == "hospital-node")
            .collect();
        if nodes.len() == 4 {
            break nodes;
        }
        let exited = cleanup.1.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none(),
            "scenarios ended before its nodes ran: {exited:?}"
        );
        assert!(Instant::now() < deadline, "nodes not started: {nodes:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    cleanup.0 = nodes.clone();
    signal(pid, sig);
    let mut child = cleanup.1.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "scenarios ignored SIG{sig}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The nodes were killed and reaped before scenarios exited.
    let survivors: Vec<&(u32, String)> = nodes.iter().filter(|(p, c)| alive(*p, c)).collect();
    assert!(
        survivors.is_empty(),
        "nodes outlived scenarios: {survivors:?}"
    );
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(expected_code), "{stderr}");
    assert!(stderr.contains("stopping the 4 nodes"), "{stderr}");
}

#[test]
fn sigterm_stops_every_node_the_scenario_started() {
    stopping_stops_every_node("TERM", 128 + 15);
}

#[test]
fn sigint_stops_every_node_the_scenario_started() {
    stopping_stops_every_node("INT", 128 + 2);
}
