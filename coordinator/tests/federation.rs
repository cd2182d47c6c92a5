//! End-to-end tests of the federation: real `coordinator` and `hospital-node`
//! processes on 127.0.0.1 with ephemeral ports, each test in its own temporary
//! directory, 2048-bit Paillier keys, the diabetes data split by row blocks.
//!
//! The encrypted multi-process results are held to `learning`'s cleartext
//! twin of the same protocol (`learning::ReferenceRun`: everyone in every
//! round, the rounds' recorded participant lists, or pooled gradient descent).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use learning::ndarray::Array1;
use learning::{Dataset, Mode, ReferenceRun};
use serde_json::{json, Value};

mod util;
use util::*;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scenarios/data/diabetes.csv"
);
const TEST_ROWS: usize = 50;
const ETA: f64 = 0.01;

/// Diabetes features scaled as scikit-learn's `load_diabetes()` (centred, unit
/// L2 norm per column) plus an intercept column.
fn diabetes() -> Dataset {
    let raw = Dataset::from_csv_path(Path::new(DATA), "target").unwrap();
    learning::sklearn_scale(&raw)
        .unwrap()
        .with_intercept("intercept")
        .unwrap()
}

struct Federation {
    dir: tempfile::TempDir,
    names: Vec<String>,
    coord_port: u16,
    /// Training sets as written to (and read back from) the hospitals' CSVs.
    train: Vec<Dataset>,
    rounds: u32,
    mode: Mode,
}

impl Federation {
    fn new(n: usize, rounds: u32, mode: Mode, extra: Value) -> Federation {
        // Built before any process starts, so no join timeout runs meanwhile.
        hospital_bin();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let all = diabetes();
        let idx: Vec<usize> = (0..all.n_rows()).collect();
        all.select_rows(&idx[..TEST_ROWS])
            .write_csv(&d.join("test.csv"))
            .unwrap();
        let rest = &idx[TEST_ROWS..];
        let block = rest.len() / n;
        let names: Vec<String> = (1..=n).map(|i| format!("hospital-{i}")).collect();
        let mut train = Vec::new();
        for i in 0..n {
            let end = if i + 1 == n {
                rest.len()
            } else {
                (i + 1) * block
            };
            let path = d.join(format!("{}.csv", names[i]));
            all.select_rows(&rest[i * block..end])
                .write_csv(&path)
                .unwrap();
            train.push(Dataset::from_csv_path(&path, "target").unwrap());
        }
        let st = Command::new(COORD)
            .args(["pki", "init", "--out"])
            .arg(d.join("pki"))
            .arg("--nodes")
            .arg(names.join(","))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );

        let coord_port = free_udp_port();
        let roster: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "address": format!("127.0.0.1:{}", free_udp_port())}))
            .collect();
        let mut cfg = json!({
            "listen": format!("127.0.0.1:{coord_port}"),
            "roster": roster,
            "key_bits": 2048,
            "mode": mode.as_str(),
            "rounds": rounds,
            "eta": ETA,
            "round_timeout_secs": 8,
            "join_timeout_secs": 60,
            "idle_timeout_secs": 3,
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut cfg, extra) {
            c.extend(e);
        }
        std::fs::write(d.join("coordinator.json"), cfg.to_string()).unwrap();
        for n in &names {
            let h = json!({
                "name": n,
                // Relay mode (the default): the hospital listens on nothing.
                "coordinator_address": format!("127.0.0.1:{coord_port}"),
                "train_csv": format!("{n}.csv"),
                "test_csv": "test.csv",
                "report_path": format!("{n}-report.json"),
                "coordinator_retry_secs": 60,
                "idle_timeout_secs": 3,
                "roster": names,
                // The tests compare per-round metrics: these hospitals opt in.
                "share_metrics": true,
                "state_path": format!("{n}-state.json"),
                "mask_key_path": format!("{n}-mask-key"),
                "audit_log_path": format!("{n}-audit.jsonl"),
            });
            std::fs::write(d.join(format!("{n}.json")), h.to_string()).unwrap();
        }
        Federation {
            dir,
            names,
            coord_port,
            train,
            rounds,
            mode,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Starts the coordinator; its stdout JSON lines arrive on the receiver.
    fn coordinator(&self, args: &[&str], log: &str) -> (Child, mpsc::Receiver<Value>) {
        let mut child = Command::new(COORD)
            .arg("run")
            .arg("--config")
            .arg(self.path("coordinator.json"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.path(log)).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// Starts hospitals `0..n` with no extra arguments.
    fn start_hospitals(&self, procs: &mut Procs, n: usize) {
        for i in 0..n {
            procs.0.push(self.hospital(i, &[]));
        }
    }

    fn hospital(&self, i: usize, args: &[&str]) -> Child {
        let n = &self.names[i];
        Command::new(hospital_bin())
            .arg("run")
            .arg("--config")
            .arg(self.path(&format!("{n}.json")))
            .args(args)
            .stdout(std::fs::File::create(self.path(&format!("{n}.out"))).unwrap())
            .stderr(std::fs::File::create(self.path(&format!("{n}.log"))).unwrap())
            .spawn()
            .unwrap()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                s.push_str(&format!("==== {}\n", p.display()));
                s.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        s
    }

    /// A hospital's own report file (its weights never go to the coordinator
    /// in seed mode), if it wrote one.
    fn own_report(&self, name: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.path(&format!("{name}-report.json"))).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    fn results(&self) -> Value {
        let text = std::fs::read_to_string(self.path("results.json"))
            .unwrap_or_else(|e| panic!("no results.json ({e})\n{}", self.logs()));
        serde_json::from_str(&text).unwrap()
    }
}

fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Waits for the coordinator's `round` progress line for `round` (1-based).
fn wait_round(rx: &mpsc::Receiver<Value>, round: u64, limit: Duration) -> Vec<Value> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < limit {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(100)) {
            let done = v["event"] == "round" && v["round"] == round;
            seen.push(v);
            if done {
                return seen;
            }
        }
    }
    panic!("round {round} not reached; saw {seen:?}");
}

fn weights(v: &Value) -> Array1<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("weights missing: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn max_abs_diff(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Runs everything to completion and asserts every process exits 0.
/// Waits for every process in `procs`, each of which must succeed.
fn succeed_all(f: &Federation, procs: &mut Procs) {
    for (i, p) in procs.0.iter_mut().enumerate() {
        let st = wait(p, Duration::from_secs(240));
        assert!(
            st.is_some_and(|s| s.success()),
            "process {i} ended with {st:?}\n{}",
            f.logs()
        );
    }
}

fn run_all(f: &Federation, hospital_args: &[Vec<&str>]) -> Value {
    let mut procs = Procs::default();
    let (c, _rx) = f.coordinator(&[], "coordinator.log");
    procs.0.push(c);
    for (i, args) in hospital_args.iter().enumerate() {
        procs.0.push(f.hospital(i, args));
    }
    succeed_all(f, &mut procs);
    f.results()
}

/// `learning`'s cleartext twin fed the participants each round had; `None`
/// for the hospitals that were not in the last round (they send no report).
fn replay(f: &Federation, res: &Value) -> Vec<Option<Array1<f64>>> {
    let rings: Vec<Vec<String>> = res["rounds_detail"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "training")
        .map(|r| {
            r["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    let participants = learning::participant_indices(&f.names, &rings).unwrap();
    let twin = ReferenceRun {
        mode: f.mode,
        rounds: f.rounds as usize,
        eta: ETA,
    }
    .run_rounds(&f.train, &participants)
    .unwrap();
    let last = participants.last().unwrap();
    twin.final_weights
        .into_iter()
        .enumerate()
        .map(|(h, w)| last.contains(&h).then_some(w))
        .collect()
}

fn check_against_reference(f: &Federation, res: &Value) {
    let reference = ReferenceRun {
        mode: f.mode,
        rounds: f.rounds as usize,
        eta: ETA,
    }
    .run(&f.train)
    .unwrap();
    let hs = res["hospitals"].as_array().unwrap();
    assert_eq!(hs.len(), f.names.len());
    {
        use std::os::unix::fs::PermissionsExt;
        for p in ["results.json", "checkpoint.json"] {
            let m = std::fs::metadata(f.path(p)).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o600, "{p}");
        }
    }
    for (i, h) in hs.iter().enumerate() {
        assert_eq!(h["name"], f.names[i]);
        assert_eq!(h["rows"].as_u64().unwrap() as usize, f.train[i].n_rows());
        let own = f.own_report(&f.names[i]).expect("hospital report");
        let d = max_abs_diff(&weights(&own["final_weights"]), &reference.final_weights[i]);
        assert!(d <= 1e-6, "{}: max abs diff {d:e}", f.names[i]);
        let mode = |p: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(f.path(p)).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&format!("{}-report.json", f.names[i])), 0o600);
        assert_eq!(mode(&format!("{}-state.json", f.names[i])), 0o600);
        assert_eq!(mode(&format!("{}-mask-key", f.names[i])), 0o600);
        // The audit log lists what left the hospital: its running sums every
        // round, its reveals (masks on), its report; never to a stranger.
        let audit_name = format!("{}-audit.jsonl", f.names[i]);
        assert_eq!(mode(&audit_name), 0o600);
        let audit = std::fs::read_to_string(f.path(&audit_name)).unwrap();
        let lines: Vec<Value> = audit
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect();
        let kinds = |k: &str| lines.iter().filter(|l| l["kind"] == k).count();
        assert!(kinds("ring_pass") >= f.rounds as usize, "{audit}");
        assert!(kinds("reveal") >= f.rounds as usize, "{audit}");
        assert_eq!(kinds("report"), 1, "{audit}");
        // Relay mode: its signed key offer, once per round attempt at least.
        assert!(kinds("key_offer") >= f.rounds as usize, "{audit}");
        for l in &lines {
            let to = l["to"].as_str().unwrap();
            assert!(
                to == "coordinator" || f.names.iter().any(|n| n == to),
                "{l}"
            );
            assert!(l["bytes"].as_u64().unwrap() > 0, "{l}");
        }
        // Seed-mode weights are each hospital's own: they stay with it.
        if f.mode == Mode::Seed {
            assert!(h["final_weights"].is_null(), "{h}");
        }
        // Local-only weights stay at the hospital: never in the results.
        assert!(h.get("local_weights").is_none(), "{h}");
        let d = max_abs_diff(&weights(&own["local_weights"]), &reference.local_weights[i]);
        assert!(d <= 1e-9, "{}: local weights differ by {d:e}", f.names[i]);
        assert_eq!(
            h["test_mse_history"].as_array().unwrap().len(),
            f.rounds as usize
        );
    }
}

#[test]
fn seed_mode_three_hospitals_match_cleartext_reference() {
    let f = Federation::new(3, 20, Mode::Seed, json!({}));
    let res = run_all(&f, &[vec![], vec![], vec![]]);
    check_against_reference(&f, &res);
    for h in res["hospitals"].as_array().unwrap() {
        let local = h["local_test_mse"].as_f64().unwrap();
        let fed = h["federated_test_mse"].as_f64().unwrap();
        assert!(local.is_finite() && fed.is_finite());
    }
    // Twenty training rounds, then the evaluation step (on by default).
    let steps = res["rounds_detail"].as_array().unwrap();
    assert_eq!(steps.len(), 21);
    assert!(steps[..20].iter().all(|s| s["kind"] == "training"));
    assert_eq!(steps[20]["kind"], "evaluation");
    assert!(res["pooled_metrics"]["mse"].as_f64().unwrap() > 0.0);
    assert!(res["timings"]["training_s"].as_f64().unwrap() > 0.0);
    assert!(res["coordinator_peak_rss_bytes"].as_u64().unwrap() > 0);
    // Each hospital's peak RSS travels in its protocol report into the results.
    for h in res["hospitals"].as_array().unwrap() {
        let rss = h["peak_rss_bytes"].as_u64();
        assert!(
            rss.is_some_and(|b| b > 1 << 20),
            "{}: implausible peak_rss_bytes {rss:?}",
            h["name"]
        );
    }
    // The checkpoint of the last round is on disk.
    let cp: Value = checkpoint(&f);
    // Twenty rounds and the evaluation step.
    assert_eq!(cp["next_round"], 21);
    // Each hospital wrote its own report with its peak RSS.
    let rep: Value =
        serde_json::from_str(&std::fs::read_to_string(f.path("hospital-1-report.json")).unwrap())
            .unwrap();
    assert!(rep["peak_rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn global_mode_equals_pooled_gradient_descent() {
    let f = Federation::new(3, 15, Mode::Global, json!({}));
    let res = run_all(&f, &[vec![], vec![], vec![]]);
    let w = ReferenceRun {
        mode: Mode::Global,
        rounds: f.rounds as usize,
        eta: ETA,
    }
    .pooled(&f.train)
    .unwrap()
    .weights;
    for h in res["hospitals"].as_array().unwrap() {
        // In global mode the weights are a function of the aggregates alone,
        // so they do reach the coordinator.
        let d = max_abs_diff(&weights(&h["final_weights"]), &w);
        assert!(d <= 1e-6, "{}: differs from pooled GD by {d:e}", h["name"]);
    }
    check_against_reference(&f, &res);
}

#[test]
fn peer_with_foreign_certificate_is_refused() {
    let f = Federation::new(
        3,
        3,
        Mode::Seed,
        json!({"join_timeout_secs": 6, "min_hospitals": 3}),
    );
    // hospital-3's certificate comes from another consortium; it trusts both
    // CAs, so it reaches the coordinator and presents its certificate.
    let rogue = f.path("rogue");
    let st = Command::new(COORD)
        .args(["pki", "init", "--out"])
        .arg(&rogue)
        .args(["--nodes", "hospital-3"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let mut bundle = std::fs::read(rogue.join("ca.pem")).unwrap();
    bundle.extend(std::fs::read(f.path("pki/ca.pem")).unwrap());
    std::fs::write(rogue.join("bundle.pem"), bundle).unwrap();
    let mut crls = std::fs::read(rogue.join("crl.pem")).unwrap();
    crls.extend(std::fs::read(f.path("pki/crl.pem")).unwrap());
    std::fs::write(rogue.join("crls.pem"), crls).unwrap();
    let mut h3: Value =
        serde_json::from_str(&std::fs::read_to_string(f.path("hospital-3.json")).unwrap()).unwrap();
    h3["pki"] = json!({"ca": "rogue/bundle.pem", "crl": "rogue/crls.pem", "cert": "rogue/hospital-3.pem", "key": "rogue/hospital-3.key"});
    h3["coordinator_retry_secs"] = json!(4);
    std::fs::write(f.path("hospital-3.json"), h3.to_string()).unwrap();

    let mut procs = Procs::default();
    let (c, _rx) = f.coordinator(&[], "coordinator.log");
    procs.0.push(c);
    f.start_hospitals(&mut procs, 3);
    let st = wait(&mut procs.0[0], Duration::from_secs(60)).expect("coordinator hangs");
    assert!(!st.success(), "coordinator ran with a foreign peer");
    let clog = std::fs::read_to_string(f.path("coordinator.log")).unwrap();
    assert!(
        clog.contains("refusing client certificate") && clog.contains("hospital-3"),
        "{clog}"
    );
    // The run stops naming the node that never joined.
    assert!(
        clog.contains("error") && clog.contains("hospital-3"),
        "{clog}"
    );
    let st = wait(&mut procs.0[3], Duration::from_secs(30)).expect("rogue hangs");
    assert!(!st.success());
    let rlog = std::fs::read_to_string(f.path("hospital-3.log")).unwrap();
    let last = rlog
        .lines()
        .rev()
        .find(|l| l.contains("error"))
        .unwrap_or_default();
    // Its own final error says it was refused, not merely unanswered.
    assert!(
        last.contains("refused") || last.contains("certificate"),
        "{last}"
    );
    assert!(!f.path("results.json").exists());
}

#[test]
fn killed_hospital_is_dropped_and_three_continue() {
    // The round timeout exceeds the links' idle timeout (3 s): the coordinator
    // sees the killed process's connection drop before the round in flight
    // times out. (The other way round, the last member that acknowledged the
    // sum would be blamed for the dead successor it could not reach: receipts
    // cannot tell the two apart, see the README's threat model.)
    let f = Federation::new(4, 8, Mode::Seed, json!({"round_timeout_secs": 8}));
    let mut procs = Procs::default();
    let (c, rx) = f.coordinator(&[], "coordinator.log");
    procs.0.push(c);
    f.start_hospitals(&mut procs, 4);
    wait_round(&rx, 2, Duration::from_secs(120));
    procs.0[4].kill().unwrap();
    procs.0[4].wait().unwrap();
    for i in 0..4 {
        let st = wait(&mut procs.0[i], Duration::from_secs(180));
        assert!(
            st.is_some_and(|s| s.success()),
            "process {i}: {st:?}\n{}",
            f.logs()
        );
    }
    let res = f.results();
    let rounds: Vec<&serde_json::Value> = res["rounds_detail"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "training")
        .collect();
    assert_eq!(rounds.len(), 8);
    assert_eq!(rounds[0]["participants"].as_array().unwrap().len(), 4);
    assert_eq!(rounds[7]["participants"].as_array().unwrap().len(), 3);
    assert!(!rounds[7]["participants"]
        .as_array()
        .unwrap()
        .contains(&json!("hospital-4")));
    let expected = replay(&f, &res);
    let hs = res["hospitals"].as_array().unwrap();
    for (i, e) in expected.iter().enumerate() {
        match e {
            Some(w) => {
                let own = f.own_report(&f.names[i]).expect("hospital report");
                let d = max_abs_diff(&weights(&own["final_weights"]), w);
                assert!(d <= 1e-6, "{}: {d:e}", f.names[i]);
            }
            None => assert!(
                hs[i]["report"].is_null() || hs[i]["final_weights"].is_null(),
                "{}",
                hs[i]
            ),
        }
    }
}

#[test]
fn coordinator_killed_and_resumed_ends_with_the_same_model() {
    let f = Federation::new(3, 12, Mode::Seed, json!({}));
    let mut procs = Procs::default();
    let (c, rx) = f.coordinator(&[], "coordinator.log");
    procs.0.push(c);
    f.start_hospitals(&mut procs, 3);
    wait_round(&rx, 5, Duration::from_secs(120));
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    assert!(!f.path("results.json").exists());
    let cp: Value = checkpoint(&f);
    assert!(cp["next_round"].as_u64().unwrap() >= 5);
    // A fresh start over an existing checkpoint is refused.
    let out = Command::new(COORD)
        .arg("run")
        .arg("--config")
        .arg(f.path("coordinator.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    let (c, rx2) = f.coordinator(&["--resume"], "coordinator-resumed.log");
    procs.0[0] = c;
    for i in 0..4 {
        let st = wait(&mut procs.0[i], Duration::from_secs(180));
        assert!(
            st.is_some_and(|s| s.success()),
            "process {i}: {st:?}\n{}",
            f.logs()
        );
    }
    let first: Value = rx2.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(first["event"], "listening");
    assert_eq!(first["resumed"], true);
    let res = f.results();
    assert_eq!(res["resumed"], true);
    check_against_reference(&f, &res);
    let _ = f.coord_port;
}

#[test]
fn tampered_ring_ciphertext_is_rejected_and_the_round_retried() {
    let f = Federation::new(3, 6, Mode::Seed, json!({}));
    let res = run_all(
        &f,
        &[
            vec![],
            vec!["--test-fault-corrupt-ring-passes", "1"],
            vec![],
        ],
    );
    let logs = f.logs();
    assert!(
        logs.contains("invalid ciphertext") && logs.contains("hospital-2"),
        "{logs}"
    );
    let attempts: u64 = res["rounds_detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap())
        .sum();
    assert!(attempts > 6, "no round was retried");
    check_against_reference(&f, &res);
}

#[test]
fn pki_init_writes_private_keys_0600_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let run = || {
        Command::new(COORD)
            .args(["pki", "init", "--out"])
            .arg(&out)
            .args(["--nodes", "hospital-1,hospital-2,hospital-3"])
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    for n in ["coordinator", "hospital-1", "hospital-2", "hospital-3"] {
        let key = out.join(format!("{n}.key"));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
        assert!(out.join(format!("{n}.pem")).exists());
    }
    // The local CA (trials only) keeps its key 0600 in a folder of its own;
    // every node gets the CA certificate and the revocation list.
    let ca_key = out.join("consortium-ca/ca.key");
    let mode = std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", ca_key.display());
    assert!(out.join("ca.pem").exists() && out.join("crl.pem").exists());
    let again = run();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = Command::new(COORD)
        .args(["pki", "init", "--out"])
        .arg(dir.path().join("x"))
        .args(["--nodes", "Bad Name"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Bad Name"));
}

#[test]
fn a_hospital_whose_data_fails_tells_the_coordinator_which_stops_waiting() {
    // hospital-2's export has a text cell: it cannot take part and says why;
    // with three hospitals the run cannot reach its minimum, so the
    // coordinator stops long before its 60 s join timeout, printing the
    // hospital's reason (the row and column, never the cell's text).
    let f = Federation::new(3, 3, Mode::Seed, json!({}));
    let path = f.path("hospital-2.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let cells: Vec<&str> = lines[3].split(',').collect();
    lines[3] = std::iter::once("patient-7731")
        .chain(cells[1..].iter().copied())
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let mut procs = Procs::default();
    let started = std::time::Instant::now();
    let (c, rx) = f.coordinator(&[], "coordinator.log");
    procs.0.push(c);
    f.start_hospitals(&mut procs, 3);
    let st = wait(&mut procs.0[0], Duration::from_secs(50)).expect("the coordinator stops");
    assert!(!st.success());
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "it waited for the join timeout"
    );
    let log = std::fs::read_to_string(f.path("coordinator.log")).unwrap();
    assert!(log.contains("hospital-2: loading training data"), "{log}");
    assert!(
        log.contains("row 3 (line 4)") && log.contains("not a finite number"),
        "{log}"
    );
    assert!(!log.contains("patient-7731"), "{log}");
    let events: Vec<Value> = rx.try_iter().collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "withdrew" && e["hospital"] == "hospital-2"),
        "{events:?}"
    );
    // The hospital's own error has the whole chain.
    let st = wait(&mut procs.0[2], Duration::from_secs(20)).expect("hospital-2 exits");
    assert!(!st.success());
    let own = std::fs::read_to_string(f.path("hospital-2.log")).unwrap();
    assert!(own.contains("told the coordinator why"), "{own}");
}

#[test]
fn refuses_to_run_with_two_hospitals_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        r#"{"roster":[{"name":"hospital-1","address":"127.0.0.1:1"},{"name":"hospital-2","address":"127.0.0.1:2"}]}"#,
    )
    .unwrap();
    let out = Command::new(COORD)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 3"), "{err}");
}

#[test]
fn a_finished_run_is_marked_and_neither_rerun_nor_resumed() {
    let f = Federation::new(3, 3, Mode::Global, json!({}));
    run_all(&f, &[vec![], vec![], vec![]]);
    let cp: Value = checkpoint(&f);
    assert_eq!(cp["finished"], true, "{cp}");
    let run_id = cp["run_id"].as_str().unwrap().to_owned();
    let results_before = std::fs::read(f.path("results.json")).unwrap();

    // Started again in the same directory: says what is there and what to do.
    let (mut c, _rx) = f.coordinator(&[], "again.log");
    let st = wait(&mut c, Duration::from_secs(30)).expect("exits");
    assert!(!st.success());
    let err = std::fs::read_to_string(f.path("again.log")).unwrap();
    assert!(err.contains("finished after 3 rounds"), "{err}");
    assert!(err.contains(&run_id), "{err}");

    // --resume of a finished run: says so and exits 0, touching nothing.
    let (mut c, rx) = f.coordinator(&["--resume"], "resume.log");
    let st = wait(&mut c, Duration::from_secs(30)).expect("exits");
    assert!(st.success(), "{}", f.logs());
    let line = rx.recv_timeout(Duration::from_secs(5)).expect("a line");
    assert_eq!(line["event"], "finished");
    assert_eq!(line["already"], true);
    assert_eq!(
        std::fs::read(f.path("results.json")).unwrap(),
        results_before
    );
}

#[test]
fn resume_takes_the_checkpoints_parameters_and_refuses_contradicting_options() {
    let f = Federation::new(3, 40, Mode::Seed, json!({}));
    let mut procs = Procs::default();
    let (c, rx) = f.coordinator(&[], "coordinator.log");
    procs.0.push(c);
    f.start_hospitals(&mut procs, 3);
    wait_round(&rx, 2, Duration::from_secs(120));
    let _ = procs.0[0].kill();
    let _ = procs.0[0].wait();
    // A contradicting override is refused, naming it.
    let (mut c, _rx) = f.coordinator(&["--resume", "--rounds", "7", "--eta", "0.5"], "bad.log");
    let st = wait(&mut c, Duration::from_secs(30)).expect("exits");
    assert!(!st.success());
    let err = std::fs::read_to_string(f.path("bad.log")).unwrap();
    assert!(err.contains("--rounds 7 (the run has 40)"), "{err}");
    assert!(err.contains("--eta 0.5"), "{err}");
    // The config file saying otherwise does not matter: the checkpoint rules.
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(f.path("coordinator.json")).unwrap())
            .unwrap();
    cfg["rounds"] = json!(9);
    std::fs::write(f.path("coordinator.json"), cfg.to_string()).unwrap();
    let (mut c, rx) = f.coordinator(&["--resume"], "resumed.log");
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("listening line");
    assert_eq!(first["event"], "listening", "{first}");
    assert_eq!(first["rounds"], 40, "{first}");
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn sigint_stops_the_coordinator_cleanly_and_resume_finishes() {
    let f = Federation::new(3, 30, Mode::Global, json!({}));
    let mut procs = Procs::default();
    f.start_hospitals(&mut procs, 3);
    let (mut c, rx) = f.coordinator(&[], "coordinator.log");
    wait_round(&rx, 2, Duration::from_secs(120));
    let st = Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let st = wait(&mut c, Duration::from_secs(30)).expect("stops");
    assert_eq!(st.code(), Some(130), "{}", f.logs());
    let mut stopped = None;
    while let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) {
        if v["event"] == "stopped" {
            stopped = Some(v);
        }
    }
    let stopped = stopped.expect("a stopped line");
    assert_eq!(stopped["signal"], "SIGINT");
    let done = stopped["completed_rounds"].as_u64().unwrap();
    assert!(done >= 2, "{stopped}");
    let log = std::fs::read_to_string(f.path("coordinator.log")).unwrap();
    assert!(log.contains("--resume"), "{log}");
    // The hospitals wait for it; the resumed run finishes.
    let (mut c, rx) = f.coordinator(&["--resume"], "resumed.log");
    let st = wait(&mut c, Duration::from_secs(240)).expect("finishes");
    assert!(st.success(), "{}", f.logs());
    let rounds: Vec<u64> = rx
        .try_iter()
        .filter(|v| v["event"] == "round")
        .map(|v| v["round"].as_u64().unwrap())
        .collect();
    // Progress picks up where the stop left it, without a gap.
    assert_eq!(rounds.first().copied(), Some(done + 1), "{rounds:?}");
    assert_eq!(rounds.last().copied(), Some(30), "{rounds:?}");
    for p in procs.0.iter_mut() {
        let st = wait(p, Duration::from_secs(60));
        assert!(st.is_some_and(|s| s.success()), "{}", f.logs());
    }
    check_against_reference(&f, &f.results());
}

/// The newest checkpoint in the fixture's checkpoint journal.
fn checkpoint(f: &Federation) -> serde_json::Value {
    let newest = node::files::Journal::read_newest(&f.path("checkpoint.json"))
        .unwrap()
        .expect("a checkpoint");
    serde_json::from_slice(&newest).unwrap()
}

/// The sockets of process `pid`, by table of `/proc/net` (`tcp`, `tcp6`,
/// `udp`, `udp6`): each entry's local port.
fn sockets_of(pid: u32) -> std::collections::BTreeMap<&'static str, Vec<u16>> {
    let inodes: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        // A kernel without IPv6 has no tcp6/udp6 table.
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        let ports = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f.get(1)?.rsplit(':').next()?;
                inodes
                    .contains(*f.get(9)?)
                    .then(|| u16::from_str_radix(port, 16).ok())?
            })
            .collect();
        out.insert(table, ports);
    }
    out
}

/// Relay mode (the default) as a firewall sees it: each hospital holds one
/// UDP socket, for its one outbound connection, and no TCP socket at all; a
/// QUIC handshake to that socket, even with a valid consortium certificate,
/// gets no answer; and the relayed run still equals its cleartext twin.
#[test]
fn relay_mode_hospitals_listen_on_nothing_and_answer_no_handshake() {
    let f = Federation::new(3, 20, Mode::Seed, json!({}));
    // The hospitals first: they keep dialing the coordinator, which is not
    // up yet, so they sit with the endpoint they have.
    let mut procs = Procs::default();
    f.start_hospitals(&mut procs, 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let identity =
        node::pki::NodeIdentity::load(&node::pki::PkiPaths::in_dir(&f.path("pki"), "coordinator"))
            .unwrap();
    for (i, n) in f.names.iter().enumerate() {
        let out = f.path(&format!("{n}.out"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let dialing = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains("\"dialing\"")) {
                break serde_json::from_str::<Value>(l).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{n} printed no dialing line\n{}",
                f.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(dialing["transport"], "relay");
        let port: u16 = dialing["addr"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let sockets = sockets_of(procs.0[i].id());
        assert!(
            sockets["tcp"].is_empty() && sockets["tcp6"].is_empty(),
            "{n}: {sockets:?}"
        );
        let udp: Vec<u16> = sockets["udp"]
            .iter()
            .chain(&sockets["udp6"])
            .copied()
            .collect();
        assert_eq!(udp, vec![port], "{n}: {sockets:?}");
        // A consortium member dials it: no answer within two seconds.
        let options = node::transport::TransportOptions::for_node(
            1 << 20,
            protocol::PeerLimits::new(protocol::Limits::uniform(1 << 20)),
            Duration::from_secs(2),
        );
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let tried = rt.block_on(async {
            let ep = node::transport::Endpoint::client(
                "127.0.0.1:0".parse().unwrap(),
                &identity,
                [n.clone()],
                options,
            )
            .unwrap();
            tokio::time::timeout(Duration::from_secs(2), ep.connect(addr, n)).await
        });
        assert!(
            !matches!(tried, Ok(Ok(_))),
            "{n} accepted an inbound QUIC handshake"
        );
    }
    let (c, _rx) = f.coordinator(&[], "coordinator.log");
    procs.0.push(c);
    succeed_all(&f, &mut procs);
    let res = f.results();
    check_against_reference(&f, &res);
    // No hospital ever connected to another: each log names only the coordinator.
    for n in &f.names {
        let log = std::fs::read_to_string(f.path(&format!("{n}.log"))).unwrap();
        for other in f.names.iter().filter(|o| *o != n) {
            assert!(
                !log.contains(&format!("connected peer={other}")),
                "{n} connected to {other}"
            );
        }
    }
}
