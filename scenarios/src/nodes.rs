//! The node binaries' interface as `scenarios` uses it, all in one place: the
//! config files, built from the binaries' own typed schemas
//! ([`coordinator::config::FileConfig`], [`hospital_node::config::FileConfig`],
//! so a renamed or retyped field fails to compile here instead of at run
//! time); their command lines; the progress lines they print on stdout; and
//! the coordinator's results file.
//!
//! What it does not do: find the binaries ([`crate::binaries`]) or start and
//! watch the processes ([`crate::federation`]).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use learning::ndarray::Array1;
use serde::Serialize;
use serde_json::{json, Value};

use crate::binaries::Binaries;
use crate::plan::Plan;

/// Node name of hospital `i` (0-based).
pub fn hospital_name(i: usize) -> String {
    format!("hospital-{}", i + 1)
}

/// Where every node listens: loopback, port 0. The system picks a free port
/// at bind time and each node reports it, so ports cannot race however many
/// nodes start at once (a port picked by binding and releasing it first can
/// be taken again before the node binds it).
const LISTEN: &str = "127.0.0.1:0";

/// Paths in the configs are relative to the work directory (both binaries
/// resolve them against their config's folder); the PKI files take the
/// `pki/<name>.pem` defaults.
const PKI_DIR: &str = "pki";
const COORDINATOR_CONFIG: &str = "coordinator.json";
const RESULTS: &str = "results.json";
/// The consortium schema every node names, in the work directory.
pub const SCHEMA: &str = "schema.json";

/// `coordinator.json` for `plan`'s run with hospitals `names`, naming the
/// consortium schema file [`SCHEMA`] when `schema`.
///
/// The roster's addresses are placeholders: each hospital announces the
/// address it bound in its hello, which the coordinator hands to the ring.
pub fn coordinator_config(
    plan: &Plan,
    names: &[String],
    schema: bool,
) -> Result<coordinator::config::FileConfig> {
    let roster = names
        .iter()
        .map(|name| protocol::Member {
            name: name.clone(),
            address: LISTEN.to_owned(),
        })
        .collect();
    Ok(coordinator::config::FileConfig {
        listen: LISTEN.to_owned(),
        roster,
        key_bits: plan.key_bits,
        mode: plan.mode,
        rounds: u32::try_from(plan.rounds)
            .context("--rounds does not fit the coordinator's u32")?,
        eta: Some(plan.eta),
        masks: plan.masks,
        pack: plan.pack,
        model: plan.model,
        l2: plan.l2,
        tolerance: plan.tolerance,
        evaluate: plan.evaluate,
        schema: schema.then(|| PathBuf::from(SCHEMA)),
        results_path: PathBuf::from(RESULTS),
        checkpoint_path: PathBuf::from("checkpoint.json"),
        ..coordinator::config::FileConfig::default()
    })
}

/// Where a `--threshold` run's key ceremony writes its files.
pub const CEREMONY_DIR: &str = "ceremony";

/// The ceremony's public file in work directory `wd`.
pub fn threshold_public(wd: &Path) -> PathBuf {
    wd.join(CEREMONY_DIR).join(key_ceremony::files::PUBLIC_FILE)
}

/// Hospital `name`'s share file in work directory `wd`.
pub fn threshold_share(wd: &Path, name: &str) -> PathBuf {
    wd.join(CEREMONY_DIR)
        .join(key_ceremony::files::share_file_name(name))
}

/// `<name>.json` of one hospital: its CSV `<name>.csv` with target column
/// `target`, the shared `test.csv`, the coordinator at `coordinator`, the
/// consortium `roster`, its consent to an unmasked run when `masks` is off,
/// and the consortium schema [`SCHEMA`] when `schema`.
/// The scenario prints every hospital's local-only and federated MSE, so its
/// hospitals opt in to sharing their test metrics.
pub fn hospital_config(
    name: &str,
    target: &str,
    coordinator: SocketAddr,
    roster: &[String],
    masks: bool,
    schema: bool,
    transport: hospital_node::config::Transport,
) -> hospital_node::config::FileConfig {
    let direct = transport == hospital_node::config::Transport::Direct;
    hospital_node::config::FileConfig {
        name: Some(name.to_owned()),
        transport,
        // Relay mode listens on nothing.
        listen: direct.then(|| LISTEN.to_owned()),
        // Unset: the hospital announces the address it bound.
        advertise: None,
        coordinator_address: coordinator.to_string(),
        train_csv: Some(train_csv(name)),
        target: target.to_owned(),
        test_csv: Some(PathBuf::from(TEST_CSV)),
        report_path: Some(PathBuf::from(own_report(name))),
        schema: schema.then(|| PathBuf::from(SCHEMA)),
        model_path: PathBuf::from(model_file(name)),
        roster: roster.to_vec(),
        share_metrics: true,
        allow_unmasked: !masks,
        state_path: PathBuf::from(format!("{name}-state.json")),
        mask_key_path: PathBuf::from(format!("{name}-mask-key")),
        audit_log_path: PathBuf::from(format!("{name}-audit.jsonl")),
        ..hospital_node::config::FileConfig::default()
    }
}

/// Hospital `name`'s own report file in the work directory (it holds the
/// weights, which in seed mode never leave the hospital).
pub fn own_report(name: &str) -> String {
    format!("{name}-report.json")
}

/// Hospital `name`'s model file in the work directory.
pub fn model_file(name: &str) -> String {
    format!("{name}-model.json")
}

/// The shared test set's file in the work directory.
pub const TEST_CSV: &str = "test.csv";

/// Hospital `name`'s training CSV in the work directory.
pub fn train_csv(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.csv"))
}

/// Writes a config as pretty JSON.
pub fn write_config<T: Serialize>(path: &Path, config: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(config).context("serializing a config")?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes `coordinator.json` into `wd`.
pub fn write_coordinator_config(wd: &Path, config: &coordinator::config::FileConfig) -> Result<()> {
    write_config(&wd.join(COORDINATOR_CONFIG), config)
}

/// Writes `<name>.json` into `wd`.
pub fn write_hospital_config(wd: &Path, config: &hospital_node::config::FileConfig) -> Result<()> {
    let name = config
        .name
        .as_deref()
        .context("a hospital config without a name")?;
    write_config(&wd.join(format!("{name}.json")), config)
}

/// `coordinator pki init --out <wd>/pki --nodes <names>`.
pub fn pki_init_command(bins: &Binaries, wd: &Path, names: &[String]) -> Command {
    let mut c = Command::new(&bins.coordinator);
    c.args(["pki", "init", "--out"])
        .arg(wd.join(PKI_DIR))
        .arg("--nodes")
        .arg(names.join(","));
    c
}

/// `coordinator run --config <wd>/coordinator.json`.
pub fn coordinator_command(bins: &Binaries, wd: &Path) -> Command {
    let mut c = Command::new(&bins.coordinator);
    c.arg("run")
        .arg("--config")
        .arg(wd.join(COORDINATOR_CONFIG));
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

/// What one line a node prints on stdout says (each line is a JSON object
/// with an `event` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// `{"event": "listening", "addr": "IP:PORT", ...}`: the node is bound there.
    Listening(SocketAddr),
    /// `{"event": "round", "round": N, ...}`: round N (1-based) is done.
    RoundDone(usize),
    /// Any other line.
    Other,
}

impl Progress {
    /// Reads one stdout line.
    pub fn parse(line: &str) -> Progress {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return Progress::Other;
        };
        let event = v["event"].as_str();
        let parsed = match event {
            Some("listening") => v["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .map(Progress::Listening),
            Some("round") => v["round"]
                .as_u64()
                .and_then(|r| usize::try_from(r).ok())
                .map(Progress::RoundDone),
            _ => None,
        };
        parsed.unwrap_or(Progress::Other)
    }
}

/// What the federation produced.
#[derive(Debug)]
pub struct FederationOutcome {
    /// Each hospital's final federated weights, roster order.
    pub final_weights: Vec<Array1<f64>>,
    /// The hospitals that took part in each round, in ring order, as the
    /// coordinator's results record them.
    pub participants: Vec<Vec<String>>,
    /// The coordinator's results document plus timings and memory, for results.json.
    pub report: Option<Value>,
    /// Each hospital's test MSE after every round, as the hospitals reported
    /// it to the coordinator (when every value is present).
    pub test_mse_history: Option<Vec<Vec<f64>>>,
    /// Seconds since the processes started at which each round's completion
    /// was announced on the coordinator's stdout.
    pub round_done_at: Vec<f64>,
}

/// Reads the coordinator's results JSON in `wd`: each hospital's final
/// weights, the rounds' participants, and each hospital's own report.
pub fn read_results(wd: &Path, names: &[String], elapsed: Duration) -> Result<FederationOutcome> {
    let path = wd.join(RESULTS);
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
        let own_path = wd.join(own_report(name));
        let own: Value =
            serde_json::from_str(&fs::read_to_string(&own_path).with_context(|| {
                format!("{name} wrote no report: reading {}", own_path.display())
            })?)
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
    let participants = match v["rounds_detail"].as_array() {
        // Training rounds only: the statistics and evaluation steps train nothing.
        Some(rounds) => rounds
            .iter()
            .filter(|r| r["kind"].as_str().is_none_or(|k| k == "training"))
            .map(|r| {
                r["participants"]
                    .as_array()
                    .and_then(|p| p.iter().map(|n| n.as_str().map(str::to_owned)).collect())
                    .with_context(|| format!("{}: a round without participants", path.display()))
            })
            .collect::<Result<_>>()?,
        None => bail!("{}: no \"rounds_detail\" list", path.display()),
    };
    let mut report = v;
    // Each hospital's own report (peak RSS among others), when it wrote one.
    let mut own = serde_json::Map::new();
    for name in names {
        let p = wd.join(own_report(name));
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
        participants,
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
fn median(v: &[f64]) -> f64 {
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
        assert_eq!(Progress::parse(line), Progress::RoundDone(3));
        let line = r#"{"event":"listening","addr":"127.0.0.1:40123","run_id":"x"}"#;
        assert_eq!(
            Progress::parse(line),
            Progress::Listening("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            Progress::parse(r#"{"event":"joined","hospital":"hospital-1"}"#),
            Progress::Other
        );
        assert_eq!(Progress::parse("not json"), Progress::Other);
    }

    fn plan() -> Plan {
        Plan {
            seed: 1,
            mode: learning::Mode::Global,
            evaluate: true,
            masks: false,
            ..crate::bench::bench_plan(3, 7, 0.5, 2048, "test")
        }
    }

    /// The configs written are what the binaries' own loaders accept, with
    /// every node on port 0 and the settings of the plan.
    #[test]
    fn configs_load_in_the_binaries_own_loaders() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..3).map(hospital_name).collect();
        write_coordinator_config(
            dir.path(),
            &coordinator_config(&plan(), &names, false).unwrap(),
        )
        .unwrap();
        let c = coordinator::config::Config::load(
            Some(&dir.path().join(COORDINATOR_CONFIG)),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.roster.len(), 3);
        assert_eq!((c.params.rounds, c.params.eta), (7, 0.5));
        assert!(!c.params.masks && c.params.pack);
        assert_eq!(c.results_path, dir.path().join(RESULTS));
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let roster: Vec<String> = (1..=3).map(|i| format!("hospital-{i}")).collect();
        write_hospital_config(
            dir.path(),
            &hospital_config(
                "hospital-2",
                "y",
                addr,
                &roster,
                true,
                false,
                hospital_node::config::Transport::Direct,
            ),
        )
        .unwrap();
        let h = hospital_node::config::Config::load(
            Some(&dir.path().join("hospital-2.json")),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            (h.name.as_str(), h.coordinator_address),
            ("hospital-2", addr)
        );
        assert_eq!(h.listen.map(|l| l.port()), Some(0));
        assert!(h.advertise.is_none());
        assert_eq!(h.train_csv, dir.path().join("hospital-2.csv"));
        assert_eq!(h.test_csv, Some(dir.path().join(TEST_CSV)));
    }

    fn results_fixture(dir: &Path, weights_of_2: Value) {
        let v = json!({
            "format": "federation-results/1",
            "hospitals": [
                {"name": "hospital-1", "final_weights": [1.0, 2.0], "test_mse_history": [3.0, 2.5], "peak_rss_bytes": 1000},
                {"name": "hospital-2", "final_weights": weights_of_2, "test_mse_history": [4.0, null], "peak_rss_bytes": null},
            ],
            "rounds_detail": [
                {"round": 1, "participants": ["hospital-1", "hospital-2"]},
                {"round": 2, "participants": ["hospital-2"]},
            ],
            "timings": {"training_s": 0.25, "median_round_latency_s": 0.125},
            "coordinator_peak_rss_bytes": 5000,
        });
        fs::write(dir.join(RESULTS), v.to_string()).unwrap();
        for (name, w) in [
            ("hospital-1", json!([1.0, 2.0])),
            ("hospital-2", weights_of_2),
        ] {
            if !w.is_null() {
                let r = json!({"name": name, "final_weights": w});
                fs::write(dir.join(own_report(name)), r.to_string()).unwrap();
            }
        }
    }

    #[test]
    fn reads_weights_participants_histories_and_timings() {
        let dir = tempfile::tempdir().unwrap();
        results_fixture(dir.path(), json!([3.0, 4.0]));
        let names = ["hospital-1".to_owned(), "hospital-2".to_owned()];
        let fed = read_results(dir.path(), &names, Duration::from_secs(1)).unwrap();
        assert_eq!(fed.final_weights[1].to_vec(), [3.0, 4.0]);
        assert_eq!(fed.participants[1], ["hospital-2"]);
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
        let e = read_results(dir.path(), &names, Duration::from_secs(1)).unwrap_err();
        assert!(format!("{e:#}").contains("hospital-2"), "{e:#}");
        let e = read_results(dir.path(), &["hospital-9".to_owned()], Duration::ZERO).unwrap_err();
        assert!(
            format!("{e:#}").contains("no result for hospital-9"),
            "{e:#}"
        );
    }
}
