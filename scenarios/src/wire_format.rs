//! The federation binaries' file formats and command lines as `scenarios`
//! uses them: `coordinator pki init`, the coordinator's and hospitals' JSON
//! configs, the coordinator's progress lines and its results JSON. Kept in one
//! module so that a change of the binaries' interface is a change here only.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use learning::ndarray::Array1;
use serde_json::{json, Value};

use crate::federation::{free_udp_port, log_tail, Binaries, FederationOutcome};
use crate::prep::Split;
use crate::scenario::Plan;

/// Writes PKI, per-hospital CSVs, `test.csv` and the configs into `wd`.
pub fn provision(
    bins: &Binaries,
    wd: &Path,
    plan: &Plan,
    split: &Split,
    names: &[String],
) -> Result<()> {
    let pki = wd.join("pki");
    let log = wd.join("pki.log");
    let out = Command::new(&bins.coordinator)
        .args(["pki", "init", "--out"])
        .arg(&pki)
        .arg("--nodes")
        .arg(names.join(","))
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

    let test_csv = wd.join("test.csv");
    split
        .test
        .write_csv(&test_csv)
        .context("writing test.csv")?;
    let coord_port = free_udp_port()?;
    let mut roster = Vec::new();
    let mut ports = Vec::new();
    for name in names {
        let port = free_udp_port()?;
        ports.push(port);
        roster.push(json!({ "name": name, "address": format!("127.0.0.1:{port}") }));
    }
    // Paths are relative to the work directory (the coordinator resolves them
    // against its config's folder); PKI files take the `pki/<name>.pem` defaults.
    let coordinator = json!({
        "name": "coordinator",
        "listen": format!("127.0.0.1:{coord_port}"),
        "roster": roster,
        "key_bits": plan.key_bits,
        "mode": plan.mode,
        "rounds": plan.rounds,
        "eta": plan.eta,
        "masks": plan.masks,
        "pack": plan.pack,
        "results_path": "results.json",
        "checkpoint_path": "checkpoint.json",
    });
    write_json(&wd.join("coordinator.json"), &coordinator)?;
    for ((name, h), port) in names.iter().zip(&split.hospitals).zip(ports) {
        let csv = wd.join(format!("{name}.csv"));
        h.write_csv(&csv)
            .with_context(|| format!("writing {}", csv.display()))?;
        // Relative paths resolve against the config's folder (the work directory).
        let cfg = json!({
            "name": name,
            "listen": format!("127.0.0.1:{port}"),
            "advertise": format!("127.0.0.1:{port}"),
            "coordinator_address": format!("127.0.0.1:{coord_port}"),
            "train_csv": format!("{name}.csv"),
            "target": h.target_name(),
            "test_csv": "test.csv",
            "report_path": format!("{name}-report.json"),
            "roster": names,
            // The scenario prints every hospital's local-only and federated MSE:
            // its hospitals opt in to sharing their test metrics.
            "share_metrics": true,
            "allow_unmasked": !plan.masks,
            "state_path": format!("{name}-state.json"),
            "mask_key_path": format!("{name}-mask-key"),
            "audit_log_path": format!("{name}-audit.jsonl"),
        });
        write_json(&wd.join(format!("{name}.json")), &cfg)?;
    }
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).context("serializing a config")?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `coordinator run --config <wd>/coordinator.json`.
pub fn coordinator_command(bins: &Binaries, wd: &Path) -> Command {
    let mut c = Command::new(&bins.coordinator);
    c.arg("run")
        .arg("--config")
        .arg(wd.join("coordinator.json"));
    c
}

/// `hospital-node run --config <wd>/<name>.json`.
pub fn hospital_command(bins: &Binaries, wd: &Path, name: &str) -> Command {
    let mut c = Command::new(&bins.hospital_node);
    c.arg("run")
        .arg("--config")
        .arg(wd.join(format!("{name}.json")));
    c
}

/// Rounds completed so far, from one coordinator progress line (a JSON
/// object; `{"event": "round", "round": N, ...}` announces round N done), or
/// `None` for other lines.
pub fn rounds_done(line: &str) -> Option<usize> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["event"] != "round" {
        return None;
    }
    v["round"].as_u64().and_then(|r| usize::try_from(r).ok())
}

/// Reads the coordinator's results JSON: each hospital's final weights.
pub fn read_results(
    wd: &Path,
    names: &[String],
    _coordinator_lines: &[String],
    elapsed: Duration,
) -> Result<FederationOutcome> {
    let path = wd.join("results.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let hospitals = v["hospitals"]
        .as_array()
        .with_context(|| format!("{}: no \"hospitals\" list", path.display()))?;
    let mut final_weights = Vec::new();
    let mut histories: Option<Vec<Vec<f64>>> = Some(Vec::new());
    for name in names {
        let h = hospitals
            .iter()
            .find(|h| h["name"] == name.as_str())
            .with_context(|| format!("{}: no result for {name}", path.display()))?;
        // Seed-mode weights never leave a hospital: read its own report (the
        // scenario plays every party on one machine).
        let own_path = wd.join(format!("{name}-report.json"));
        let own: Value = serde_json::from_str(
            &fs::read_to_string(&own_path)
                .with_context(|| format!("reading {}", own_path.display()))?,
        )
        .with_context(|| format!("parsing {}", own_path.display()))?;
        let w = own["final_weights"]
            .as_array()
            .with_context(|| format!("{}: no final weights", own_path.display()))?;
        let w: Vec<f64> = w
            .iter()
            .map(|x| x.as_f64().context("a weight is not a number"))
            .collect::<Result<_>>()
            .with_context(|| format!("{}: weights of {name}", path.display()))?;
        final_weights.push(Array1::from_vec(w));
        let history: Option<Vec<f64>> = h["test_mse_history"]
            .as_array()
            .and_then(|a| a.iter().map(Value::as_f64).collect());
        histories = histories.zip(history).map(|(mut all, h)| {
            all.push(h);
            all
        });
    }
    ensure!(!final_weights.is_empty(), "no hospital results");
    let mut report = v;
    // Each hospital's own report (peak RSS among others), when it wrote one.
    let mut own = serde_json::Map::new();
    for name in names {
        let p = wd.join(format!("{name}-report.json"));
        if let Ok(text) = fs::read_to_string(&p) {
            if let Ok(r) = serde_json::from_str::<Value>(&text) {
                own.insert(name.clone(), r);
            }
        }
    }
    report["hospital_reports"] = Value::Object(own);
    report["scenario_wall_seconds"] = json!(elapsed.as_secs_f64());
    Ok(FederationOutcome {
        final_weights,
        report: Some(report),
        test_mse_history: histories,
        round_done_at: Vec::new(),
    })
}

/// Timings and memory of one federated run.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Seconds from the first round's start to the last round's end.
    pub training_seconds: f64,
    /// Median seconds of one round.
    pub median_round_seconds: f64,
    /// Peak resident memory per process, when reported.
    pub peak_rss_bytes: Vec<(String, Option<u64>)>,
}

/// Median of a non-empty list.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Timings and peak RSS from the coordinator's results (`timings.training_s`,
/// `timings.median_round_latency_s`, `coordinator_peak_rss_bytes`,
/// `hospitals[].peak_rss_bytes`); the progress lines' arrival times stand in
/// for timings the results lack.
pub fn timings(fed: &FederationOutcome) -> Result<Timings> {
    let report = fed
        .report
        .as_ref()
        .context("the federation wrote no results")?;
    let at = &fed.round_done_at;
    let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let median_round_seconds = match report["timings"]["median_round_latency_s"].as_f64() {
        Some(m) => m,
        None if !gaps.is_empty() => median(&gaps),
        None => bail!("the results have no round timings"),
    };
    let training_seconds = match report["timings"]["training_s"].as_f64() {
        Some(t) => t,
        // The first round's start is not announced: count it as a median round.
        None if !at.is_empty() => at[at.len() - 1] - at[0] + median_round_seconds,
        None => bail!("the results have no training time"),
    };
    let mut peak_rss_bytes = vec![(
        "coordinator".to_owned(),
        report["coordinator_peak_rss_bytes"].as_u64(),
    )];
    if let Some(hs) = report["hospitals"].as_array() {
        for h in hs {
            let name = h["name"].as_str().unwrap_or("?");
            let own = &report["hospital_reports"][name]["peak_rss_bytes"];
            peak_rss_bytes.push((
                name.to_owned(),
                h["peak_rss_bytes"].as_u64().or(own.as_u64()),
            ));
        }
    }
    Ok(Timings {
        training_seconds,
        median_round_seconds,
        peak_rss_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let line = r#"{"event":"round","round":3,"rounds":50,"latency_s":0.01}"#;
        assert_eq!(rounds_done(line), Some(3));
        assert_eq!(
            rounds_done(r#"{"event":"joined","hospital":"hospital-1"}"#),
            None
        );
        assert_eq!(rounds_done("not json"), None);
    }

    fn results_fixture(dir: &Path, weights_of_2: Value) {
        let v = json!({
            "format": "federation-results/1",
            "hospitals": [
                {"name": "hospital-1", "final_weights": [1.0, 2.0], "test_mse_history": [3.0, 2.5], "peak_rss_bytes": 1000},
                {"name": "hospital-2", "final_weights": weights_of_2, "test_mse_history": [4.0, null], "peak_rss_bytes": null},
            ],
            "timings": {"training_s": 0.25, "median_round_latency_s": 0.125},
            "coordinator_peak_rss_bytes": 5000,
        });
        fs::write(dir.join("results.json"), v.to_string()).unwrap();
    }

    #[test]
    fn reads_weights_histories_and_timings() {
        let dir = tempfile::tempdir().unwrap();
        results_fixture(dir.path(), json!([3.0, 4.0]));
        let names = ["hospital-1".to_owned(), "hospital-2".to_owned()];
        let fed = read_results(dir.path(), &names, &[], Duration::from_secs(1)).unwrap();
        assert_eq!(fed.final_weights[1].to_vec(), [3.0, 4.0]);
        // One hospital lacks a value: no federated history at all.
        assert!(fed.test_mse_history.is_none());
        let t = timings(&fed).unwrap();
        assert_eq!((t.training_seconds, t.median_round_seconds), (0.25, 0.125));
        assert_eq!(t.peak_rss_bytes[0], ("coordinator".to_owned(), Some(5000)));
        assert_eq!(t.peak_rss_bytes[2], ("hospital-2".to_owned(), None));
    }

    #[test]
    fn missing_report_is_an_error_naming_the_hospital() {
        let dir = tempfile::tempdir().unwrap();
        results_fixture(dir.path(), Value::Null);
        let names = ["hospital-1".to_owned(), "hospital-2".to_owned()];
        let e = read_results(dir.path(), &names, &[], Duration::from_secs(1)).unwrap_err();
        assert!(format!("{e:#}").contains("hospital-2"), "{e:#}");
        let e =
            read_results(dir.path(), &["hospital-9".to_owned()], &[], Duration::ZERO).unwrap_err();
        assert!(
            format!("{e:#}").contains("no result for hospital-9"),
            "{e:#}"
        );
    }
}
