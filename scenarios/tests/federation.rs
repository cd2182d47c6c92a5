//! The real federation driven by `scenarios diabetes`: coordinator and
//! hospital-node processes on loopback, encrypted, held to the cleartext twin.
//! The node binaries are those `cargo test --workspace` built next to
//! `scenarios` (see `common`).

mod common;

use std::process::Command;

use serde_json::Value;

fn scenarios(args: &[&str], out: &std::path::Path) -> (bool, String, String) {
    common::require_node_binaries();
    let o = Command::new(common::SCENARIOS)
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn results(out: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

/// python-paillier's published table, line for line, in what `diabetes` printed.
fn assert_published_table(stdout: &str) {
    for line in [
        "hospital-1      130         3933.78        3695.77",
        "hospital-2      130         4176.48        3855.14",
        "hospital-3      130         3795.95        3598.63",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

/// python-paillier's published table, to the two decimals it prints, from the
/// encrypted multi-process run.
#[test]
fn seed_table_reproduced_by_the_encrypted_federation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, stdout, stderr) = scenarios(&["diabetes", "--key-bits", "2048"], &out);
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_published_table(&stdout);
    assert!(
        stdout.contains("verified: encrypted multi-process weights equal"),
        "{stdout}"
    );
    let r = results(&out);
    assert_eq!(r["complete"], true);
    assert!(r["verification"]["max_abs_weight_diff"].as_f64().unwrap() <= 1e-6);
    let fed: Vec<String> = r["outcome"]["hospitals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{:.2}", h["federated_mse"].as_f64().unwrap()))
        .collect();
    assert_eq!(fed, ["3695.77", "3855.14", "3598.63"]);
    let png = std::fs::read(out.join("mse_per_round.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

/// The same table when a 2-of-3 threshold key decrypts: dealt to the
/// hospitals before the run (one 0600 share each), the coordinator holding
/// no private key at all.
#[test]
fn the_published_table_is_exact_with_a_threshold_key_the_coordinator_never_holds() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, stdout, stderr) = scenarios(
        &[
            "diabetes",
            "--key-bits",
            "2048",
            "--threshold",
            "--keep-workdir",
        ],
        &out,
    );
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_published_table(&stdout);
    let r = results(&out);
    assert_eq!(r["plan"]["threshold"], 2, "{}", r["plan"]);
    let wd = stdout
        .lines()
        .find_map(|l| l.strip_prefix("work directory kept: "))
        .map(std::path::PathBuf::from)
        .expect("the work directory is named");
    // The coordinator never had a private key: no key file, and its log
    // names the threshold key.
    assert!(!wd.join("paillier-key.json").exists());
    let log = std::fs::read_to_string(wd.join("coordinator.log")).unwrap();
    assert!(log.contains("any 2 of the hospitals"), "{log}");
    for i in 1..=3 {
        let share = wd.join(format!("ceremony/hospital-{i}.share.json"));
        let mode = std::fs::metadata(&share).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", share.display());
    }
    std::fs::remove_dir_all(&wd).unwrap();
}

/// Another CSV (the raw diabetes measurements, scaled here), 5 hospitals and a
/// random split: the encrypted run agrees with the reference.
#[test]
fn other_csv_with_five_hospitals_agrees_with_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/diabetes.csv");
    let (ok, stdout, stderr) = scenarios(
        &[
            "diabetes",
            "--data",
            data,
            "--target",
            "target",
            "--hospitals",
            "5",
            "--split",
            "random",
            "--rounds",
            "30",
            "--key-bits",
            "2048",
        ],
        &out,
    );
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
    let r = results(&out);
    assert_eq!(r["complete"], true);
    assert_eq!(r["outcome"]["hospitals"].as_array().unwrap().len(), 5);
    assert!(r["verification"]["max_abs_weight_diff"].as_f64().unwrap() <= 1e-6);
    for i in 1..=5 {
        assert!(stdout.contains(&format!("hospital-{i} ")), "{stdout}");
    }
    assert!(!stdout.contains("diverged"), "{stdout}");
}

/// Global mode: one shared model, equal to gradient descent on the pooled
/// data, which the table's pooled reference line computes in the clear.
#[test]
fn global_mode_equals_pooled_gradient_descent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, stdout, stderr) = scenarios(
        &[
            "diabetes", "--mode", "global", "--split", "even", "--eta", "0.01", "--rounds", "20",
        ],
        &out,
    );
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r = results(&out);
    let w = r["federated_weights"].as_array().unwrap();
    assert!(
        w.iter().all(|x| x == &w[0]),
        "hospitals ended with different models"
    );
    let pooled = r["outcome"]["pooled_mse"].as_f64().unwrap();
    for h in r["outcome"]["hospitals"].as_array().unwrap() {
        let m = h["federated_mse"].as_f64().unwrap();
        assert!((m - pooled).abs() < 1e-6, "{m} vs pooled {pooled}");
    }
}

/// The classification scenario: raw rows scaled by the federation from its
/// secure statistics (equal to the cleartext pooled scaling to 1e-9
/// relative), global logistic regression equal to gradient descent on the
/// pooled rows (the twin is exactly that in global mode; every hospital ends
/// with one model file), the secure evaluation's histogram AUC within 0.005
/// of the exact AUC, and `hospital-node predict` with a hospital's model
/// file reproducing the federated test metrics.
#[test]
fn breast_cancer_classifier_scales_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, stdout, stderr) =
        scenarios(&["breast-cancer", "--rounds", "60", "--keep-workdir"], &out);
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r = results(&out);
    assert_eq!(r["complete"], true);
    assert!(r["statistics"]["max_rel_diff"].as_f64().unwrap() <= 1e-9);
    assert!(r["verification"]["max_abs_weight_diff"].as_f64().unwrap() <= 1e-6);
    let c = &r["classification"];
    let hospitals = c["hospitals"].as_array().unwrap();
    assert_eq!(hospitals.len(), 3);
    // One shared model: the pooled cleartext gradient descent's metrics.
    for h in hospitals {
        for k in ["accuracy", "auc", "log_loss"] {
            let (a, b) = (
                h["federated"][k].as_f64().unwrap(),
                c["pooled"][k].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-9, "{k}: {a} against pooled {b}");
        }
    }
    let exact_auc = c["pooled"]["auc"].as_f64().unwrap();
    let secure = &r["pooled_metrics"];
    assert!(
        (secure["auc"].as_f64().unwrap() - exact_auc).abs() <= 0.005,
        "histogram AUC {secure} against exact {exact_auc}"
    );
    let acc = c["pooled"]["accuracy"].as_f64().unwrap();
    assert!((secure["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12);
    assert!(acc > 0.9, "accuracy {acc}");
    let png = std::fs::read(out.join("log_loss_per_round.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");

    let wd = stdout
        .lines()
        .find_map(|l| l.strip_prefix("work directory kept: "))
        .expect("the kept work directory");
    let wd = std::path::Path::new(wd);
    let models: Vec<String> = (1..=3)
        .map(|i| std::fs::read_to_string(wd.join(format!("hospital-{i}-model.json"))).unwrap())
        .collect();
    assert!(models.iter().all(|m| m == &models[0]), "model files differ");
    let bin = std::path::Path::new(common::SCENARIOS)
        .parent()
        .unwrap()
        .join("hospital-node");
    let o = Command::new(&bin)
        .args(["predict", "--model"])
        .arg(wd.join("hospital-1-model.json"))
        .arg("--data")
        .arg(wd.join("test.csv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = String::from_utf8(o.stdout).unwrap();
    assert!(csv.starts_with("probability,label\n"), "{csv}");
    assert_eq!(csv.lines().count(), 51);
    let summary: Value = String::from_utf8_lossy(&o.stderr)
        .lines()
        .find_map(|l| {
            serde_json::from_str(l)
                .ok()
                .filter(|v: &Value| v["event"] == "predicted")
        })
        .expect("the summary line");
    for k in ["accuracy", "auc", "log_loss"] {
        let (a, b) = (
            summary["metrics"][k].as_f64().unwrap(),
            hospitals[0]["federated"][k].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-9, "{k}: predict {a}, scenario {b}");
    }
    std::fs::remove_dir_all(wd).unwrap();
}
