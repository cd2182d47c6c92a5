//! Execute (TFHE) against Simulate on small shapes, the file exchange between
//! client and server, and the absence of cleartext in what the server reads.
//! Keys are generated once for the whole file.

use std::sync::{Arc, OnceLock};

use fhe_trainer::circuit::{
    infer, train_batch, BatchData, CircuitConfig, ClearBackend, Plan, WeightState,
};
use fhe_trainer::encode::{state_from_weights, Quantizer};
use fhe_trainer::io::{decode, encode, FileKind};
use fhe_trainer::keys::{BatchesFile, Client, Server, ServerKeyFile, WeightsFile};
use fhe_trainer::model::{ExecKeys, Fhe, SgdClassifier, TrainerConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Keys {
    client: Arc<Client>,
    server_file_bytes: Vec<u8>,
    server: Arc<Server>,
}

/// One key set for every test in this file: the server side is rebuilt from
/// the serialized compressed key, as a real server would.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let client = Client::generate();
        let server_file_bytes = encode(FileKind::ServerKey, &client.server_key()).unwrap();
        let sk: ServerKeyFile = decode(FileKind::ServerKey, &server_file_bytes).unwrap();
        let server = Server::new(&sk).unwrap();
        Keys {
            client: Arc::new(client),
            server_file_bytes,
            server: Arc::new(server),
        }
    })
}

fn small_data(rows: usize, features: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<Vec<f64>> = (0..rows)
        .map(|_| (0..features).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect();
    let y = x
        .iter()
        .map(|r: &Vec<f64>| u8::from(r[0] - 0.5 * r[1] + rng.gen_range(-0.3..0.3) > 0.0))
        .collect();
    (x, y)
}

fn setup(features: usize, batch: usize, rows: usize) -> (Plan, Quantizer, Vec<BatchData<u8>>) {
    let (x, y) = small_data(rows, features, 11);
    let q = Quantizer::fit(&x).unwrap();
    let mut cfg = CircuitConfig::new(features, batch);
    cfg.learning_rate = 1.0;
    let plan = Plan::new(cfg).unwrap();
    let batches = x
        .chunks(batch)
        .zip(y.chunks(batch))
        .map(|(xb, yb)| q.training_batch(xb, yb).unwrap())
        .collect();
    (plan, q, batches)
}

#[test]
fn execute_matches_simulate_batch_for_batch() {
    let k = keys();
    // B = 4, d = 5: the backward sums go through a reduction level and the
    // forward tree has two, so every kind of table runs encrypted.
    let (plan, _, batches) = setup(5, 4, 12);
    let be = ClearBackend::new();
    let mut clear = state_from_weights(&plan, &[0.0; 6]).unwrap();
    let mut enc = k.client.encrypt_state(&clear);
    for (i, b) in batches.iter().enumerate() {
        train_batch(&be, &plan, &mut clear, b).unwrap();
        let eb = k
            .server
            .expand_batch(&k.client.encrypt_batch(b).unwrap())
            .unwrap();
        k.server.train(&plan, &mut enc, &eb).unwrap();
        assert_eq!(k.client.decrypt_state(&enc).unwrap(), clear, "batch {i}");
    }
    // The weights moved: the test is not comparing two idle states.
    assert_ne!(clear, state_from_weights(&plan, &[0.0; 6]).unwrap());

    // Encrypted inference agrees with the clear circuit too.
    let rows: Vec<Vec<u8>> = batches
        .iter()
        .flat_map(|b| b.rows.clone())
        .take(3)
        .collect();
    let clear_levels = infer(&be, &plan, &clear, &rows).unwrap();
    let preds = k
        .server
        .predict(&plan, &enc, &k.client.rows_file(&rows).unwrap())
        .unwrap();
    assert_eq!(k.client.decrypt_predictions(&preds).unwrap(), clear_levels);
}

#[test]
fn files_round_trip_and_hold_no_cleartext() {
    let k = keys();
    let features = 8;
    let (plan, _, batches) = setup(features, 2, 4);
    let initial = state_from_weights(&plan, &vec![0.1; features + 1]).unwrap();
    let bf = k
        .client
        .batches_file(plan.config(), &initial, std::slice::from_ref(&batches))
        .unwrap();
    let batch_bytes = encode(FileKind::Batches, &bf).unwrap();

    // What the server reads carries no cleartext row: no row of feature
    // indices appears as a byte string in either file. Rows with fewer than
    // three distinct indices are skipped: runs like 00000000 also occur in
    // the little-endian length and modulus fields.
    let distinctive: Vec<&Vec<u8>> = batches
        .iter()
        .flat_map(|b| &b.rows)
        .filter(|r| {
            let mut v = r.to_vec();
            v.sort_unstable();
            v.dedup();
            v.len() >= 3
        })
        .collect();
    assert!(!distinctive.is_empty());
    for file in [&batch_bytes, &k.server_file_bytes] {
        {
            for row in &distinctive {
                assert!(
                    !file.windows(row.len()).any(|w| w == row.as_slice()),
                    "a cleartext row appears in a server-side file"
                );
            }
        }
    }

    // Server side: decode, train, write weights.
    let bf: BatchesFile = decode(FileKind::Batches, &batch_bytes).unwrap();
    let server_plan = Plan::new(bf.config.clone()).unwrap();
    let mut st = k.server.initial_state(&bf).unwrap();
    assert_eq!(bf.batches.len(), 1);
    for b in &bf.batches[0] {
        let eb = k.server.expand_batch(b).unwrap();
        k.server.train(&server_plan, &mut st, &eb).unwrap();
    }
    let wf = k
        .server
        .weights_file(&bf.config, 2, std::slice::from_ref(&st))
        .unwrap();
    let wbytes = encode(FileKind::Weights, &wf).unwrap();

    // Client side: decrypt and compare with the simulation.
    let wf: WeightsFile = decode(FileKind::Weights, &wbytes).unwrap();
    let got = k.client.decrypt_weights_file(&wf).unwrap().remove(0);
    let be = ClearBackend::new();
    let mut clear: WeightState<u8> = initial;
    for b in &batches {
        train_batch(&be, &plan, &mut clear, b).unwrap();
    }
    assert_eq!(got, clear);
    assert_eq!(wf.batches_done, 2);
}

#[test]
fn files_from_another_key_set_are_refused() {
    let k = keys();
    let (plan, _, batches) = setup(2, 2, 2);
    let other = Client::generate();
    let initial = state_from_weights(&plan, &[0.0; 3]).unwrap();
    let bf = other
        .batches_file(plan.config(), &initial, std::slice::from_ref(&batches))
        .unwrap();
    assert!(k.server.initial_state(&bf).is_err());
}

#[test]
fn classifier_execute_equals_simulate() {
    let k = keys();
    let (x, y) = small_data(6, 3, 5);
    let cfg = TrainerConfig::builder()
        .batch_size(2)
        .learning_rate(1.0)
        .build()
        .unwrap();
    let mut sim = SgdClassifier::new(cfg.clone(), Fhe::Simulate);
    let mut exe = SgdClassifier::new(cfg, Fhe::Execute).with_keys(ExecKeys {
        client: k.client.clone(),
        server: k.server.clone(),
    });
    sim.fit(&x, &y, 1).unwrap();
    exe.fit(&x, &y, 1).unwrap();
    assert_eq!(sim.circuit_state().unwrap(), exe.circuit_state().unwrap());
    assert_eq!(sim.coefficients().unwrap(), exe.coefficients().unwrap());
    assert_eq!(sim.predict(&x[..2]).unwrap(), exe.predict(&x[..2]).unwrap());
    assert!(exe.pbs_count() > 0);
}

/// The reference shape, 8 x 30 on breast cancer: full weight states equal
/// batch for batch (about a minute per batch on two cores; run with
/// `cargo test --release -p fhe-trainer --test execute -- --ignored`).
#[test]
#[ignore]
fn execute_matches_simulate_at_8_by_30() {
    use fhe_trainer::data::{Dataset, MinMaxScaler};
    let k = keys();
    let d = Dataset::from_csv_path(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv"),
        "target",
    )
    .unwrap();
    let sc = MinMaxScaler::fit(d.x()).unwrap();
    let x = sc.transform(d.x()).unwrap();
    let q = Quantizer::fit(&x).unwrap();
    let plan = Plan::new(CircuitConfig::new(30, 8)).unwrap();
    let be = ClearBackend::new();
    let mut clear = state_from_weights(&plan, &[0.0; 31]).unwrap();
    let mut enc = k.client.encrypt_state(&clear);
    for b in 0..3 {
        let batch = q
            .training_batch(&x[b * 8..(b + 1) * 8], &d.y()[b * 8..(b + 1) * 8])
            .unwrap();
        train_batch(&be, &plan, &mut clear, &batch).unwrap();
        let eb = k
            .server
            .expand_batch(&k.client.encrypt_batch(&batch).unwrap())
            .unwrap();
        k.server.train(&plan, &mut enc, &eb).unwrap();
        assert_eq!(k.client.decrypt_state(&enc).unwrap(), clear, "batch {b}");
    }
}

#[test]
fn one_vs_rest_execute_equals_simulate() {
    use fhe_trainer::model::OneVsRest;
    let k = keys();
    let (x, _) = small_data(8, 2, 9);
    // Three classes from the first feature's tercile.
    let y: Vec<u8> = x
        .iter()
        .map(|r| (((r[0] + 1.0) * 1.5) as u8).min(2))
        .collect();
    let cfg = TrainerConfig::builder()
        .batch_size(4)
        .learning_rate(1.0)
        .build()
        .unwrap();
    let mut sim = OneVsRest::new(cfg.clone(), Fhe::Simulate);
    let mut exe = OneVsRest::new(cfg, Fhe::Execute).with_keys(ExecKeys {
        client: k.client.clone(),
        server: k.server.clone(),
    });
    sim.fit(&x, &y, 3, 1).unwrap();
    exe.fit(&x, &y, 3, 1).unwrap();
    assert_eq!(sim.models().len(), 3);
    for (s, e) in sim.models().iter().zip(exe.models()) {
        assert_eq!(s.circuit_state().unwrap(), e.circuit_state().unwrap());
    }
    assert_eq!(
        sim.predict_weights(&x).unwrap(),
        exe.predict_weights(&x).unwrap()
    );
    // Encrypted inference agrees with the clear inference circuit.
    assert_eq!(sim.predict(&x[..3]).unwrap(), exe.predict(&x[..3]).unwrap());
    let p = exe.predict_proba(&x[..3]).unwrap();
    assert!(p.iter().all(|r| (r.iter().sum::<f64>() - 1.0).abs() < 1e-9));
}
