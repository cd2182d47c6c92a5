//! Quantization tuning: one epoch of Simulate against the float32 reference
//! over many stratified splits, printing the mean test accuracies.
//!
//! `cargo run -p fhe-trainer --example tune -- [lr] [forward_step]
//! [forward_clip] [backward_clip] [hi_max]`, splits from `SEEDS=0,1,2`
//! (default 0..8).

use fhe_trainer::circuit::{train_batch, Backend, CircuitConfig, ClearBackend, Plan};
use fhe_trainer::data::{Dataset, MinMaxScaler};
use fhe_trainer::encode::{self, Quantizer};
use fhe_trainer::float::FloatModel;

/// Sets one knob of the circuit config.
type Setter = dyn Fn(&mut CircuitConfig, f64);

fn accuracy(w: &[f64], x: &[Vec<f64>], y: &[u8]) -> f64 {
    let n = w.len() - 1;
    let ok = x
        .iter()
        .zip(y)
        .filter(|(r, &l)| {
            let z: f64 = r.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + w[n];
            u8::from(z > 0.0) == l
        })
        .count();
    ok as f64 / y.len() as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let seeds: Vec<u64> = match std::env::var("SEEDS") {
        Ok(s) => s.split(',').map(|v| v.parse()).collect::<Result<_, _>>()?,
        Err(_) => (0..8).collect(),
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv");
    let d = Dataset::from_csv_path(path, "target")?;
    let (mut sum_sim, mut sum_float) = (0.0, 0.0);
    let mut pbs_per_batch = 0;
    for &seed in &seeds {
        let (tr, te) = d.stratified_split(0.3, seed)?;
        let sc = MinMaxScaler::fit(tr.x())?;
        let xtr = sc.transform(tr.x())?;
        let q = Quantizer::fit(&xtr)?;
        let xte: Vec<Vec<f64>> = sc
            .transform(te.x())?
            .iter()
            .map(|r| q.transform_row(r))
            .collect::<Result<_, _>>()?;
        let xtr_u: Vec<Vec<f64>> = xtr
            .iter()
            .map(|r| q.transform_row(r))
            .collect::<Result<_, _>>()?;
        let mut cfg = CircuitConfig::new(q.n_features(), 8);
        cfg.feature_ratios = q.ratios().to_vec();
        let setters: [&Setter; 5] = [
            &|c, v| c.learning_rate = v,
            &|c, v| c.forward_step = v,
            &|c, v| c.forward_clip = v,
            &|c, v| c.backward_clip = v,
            &|c, v| c.hi_max = v as u8,
        ];
        for (set, &v) in setters.iter().zip(&args) {
            set(&mut cfg, v);
        }
        let plan = Plan::new(cfg.clone())?;
        let be = ClearBackend::new();
        let mut st = encode::state_from_weights(&plan, &vec![0.0; plan.n_columns()])?;
        let mut fm = FloatModel::zeros(q.n_features());
        let nb = xtr.len() / 8;
        for b in 0..nb {
            let r = b * 8..b * 8 + 8;
            let batch = q.training_batch(&xtr[r.clone()], &tr.y()[r.clone()])?;
            train_batch(&be, &plan, &mut st, &batch)?;
            fm.sgd_step(
                &xtr_u[r.clone()],
                &tr.y()[r],
                cfg.learning_rate,
                cfg.parameters_range,
            );
        }
        pbs_per_batch = be.pbs_count() / nb as u64;
        let w = encode::weights_from_state(&plan, &st);
        let mut fw: Vec<f64> = fm.weights.iter().map(|&v| f64::from(v)).collect();
        fw.push(f64::from(fm.bias));
        let (a, f) = (accuracy(&w, &xte, te.y()), accuracy(&fw, &xte, te.y()));
        println!("split {seed}: simulate {a:.3} float32 {f:.3}");
        sum_sim += a;
        sum_float += f;
    }
    let n = seeds.len() as f64;
    println!("PBS per batch {pbs_per_batch}");
    println!(
        "mean: simulate {:.4} float32 {:.4}",
        sum_sim / n,
        sum_float / n
    );
    Ok(())
}
