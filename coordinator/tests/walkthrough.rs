//! The by-hand walkthrough of docs/federation.md, run as written: its `sh`
//! blocks with `sh -e` in one empty directory, each file block written to the
//! path named above it, only the ports and `DATA` substituted. The document
//! cannot drift from the binaries.

mod util;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{free_udp_port, hospital_bin, COORD};

const DOC: &str = include_str!("../../docs/federation.md");
const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scenarios/data/diabetes.csv"
);

#[derive(Debug)]
enum Step {
    Write(String, String),
    Run(String),
}

/// The walkthrough's steps, in document order.
fn steps() -> Vec<Step> {
    let start = DOC
        .find("## Walkthrough")
        .expect("docs/federation.md has a walkthrough");
    let section = &DOC[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    let mut steps = Vec::new();
    let mut lines = section[..end].lines();
    let mut previous = "";
    while let Some(line) = lines.next() {
        let fence = line.trim_start();
        if fence == "```sh" || fence == "```json" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            let text = body.join("\n") + "\n";
            if fence == "```sh" {
                steps.push(Step::Run(text));
            } else {
                let path = previous
                    .trim()
                    .strip_prefix('`')
                    .and_then(|p| p.strip_suffix("`:"))
                    .unwrap_or_else(|| panic!("a file block after {previous:?} names no path"));
                steps.push(Step::Write(path.to_owned(), text));
            }
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    steps
}

/// Runs `script` with `sh -e` in `dir`, in a process group of its own that
/// is killed if it outlives `limit`.
fn run_sh(dir: &Path, script: &str, path: &str, limit: Duration) -> (bool, String) {
    let mut child = Command::new("sh")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env("DATA", DATA)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > limit {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status.is_some_and(|s| s.success()), text)
}

#[test]
fn the_documented_walkthrough_runs_as_written() {
    hospital_bin();
    let steps = steps();
    assert!(
        steps.iter().filter(|s| matches!(s, Step::Run(_))).count() >= 5,
        "{steps:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(COORD).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The documented ports, each replaced by a free one.
    let ports: Vec<(String, String)> = (7000..=7003)
        .map(|p| (format!(":{p}"), format!(":{}", free_udp_port())))
        .collect();
    let localize = |text: &str| {
        ports
            .iter()
            .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
    };
    for step in &steps {
        match step {
            Step::Write(file, text) => {
                std::fs::write(dir.path().join(file), localize(text))
                    .unwrap_or_else(|e| panic!("writing {file}: {e}"));
            }
            Step::Run(script) => {
                let (ok, out) = run_sh(
                    dir.path(),
                    &localize(script),
                    &path,
                    Duration::from_secs(300),
                );
                assert!(ok, "the walkthrough step\n{script}\nfailed:\n{out}");
            }
        }
    }

    // What step 7 says is there.
    let read = |p: &str| -> PathBuf { dir.path().join(p) };
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(read("coordinator/results.json")).unwrap()).unwrap();
    assert_eq!(results["trained_rounds"], 300, "{results}");
    assert_eq!(results["scaler"]["features"].as_array().unwrap().len(), 10);
    let mse = results["pooled_metrics"]["mse"].as_f64().unwrap();
    assert!(mse.is_finite() && mse > 0.0, "{results}");
    let model = std::fs::read(read("hospital-1/model.json")).unwrap();
    for h in ["hospital-2", "hospital-3"] {
        assert_eq!(
            std::fs::read(read(&format!("{h}/model.json"))).unwrap(),
            model,
            "{h}'s model differs"
        );
    }
    let predictions = std::fs::read_to_string(read("hospital-1/predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 52, "{predictions}");
}
