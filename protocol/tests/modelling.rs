//! Federated modelling on raw rows in the in-memory harness: the secure
//! statistics step equals the pooled statistics of the hospitals' rows, the
//! run follows its consortium schema, and a hospital whose schema differs is
//! refused at join with the column named.

mod util;

use learning::ndarray::{Array1, Array2};
use learning::schema::local_statistics;
use learning::{
    ConsortiumSchema, Dataset, Metrics, Mode, ModelKind, Preprocessor, RawTable, Target,
};
use protocol::{Error, RunParams};
use util::*;

const SCHEMA: &str = r#"{"format": "private-training/schema", "version": 1,
    "target": "y",
    "columns": [
        {"name": "age", "type": "numeric"},
        {"name": "dose", "type": "numeric", "impute": "mean"},
        {"name": "smoker", "type": "categorical", "categories": ["no", "yes"]}
    ]}"#;

/// Raw rows of hospital `h`: ages in the tens of years, doses in the
/// thousands (so the statistics need the wide encoding), a missing dose
/// every seventh row, a 0/1 target.
fn rows(h: usize, n: usize) -> String {
    let mut s = String::from("smoker,y,dose,age\n");
    for i in 0..n {
        let age = 30.0 + 7.0 * h as f64 + ((i * 13 + h * 5) % 29) as f64;
        let dose = if i % 7 == 3 {
            String::new()
        } else {
            format!(
                "{}",
                1000.0 * (h + 1) as f64 + ((i * 37) % 101) as f64 * 9.5
            )
        };
        let smoker = if (i + h).is_multiple_of(3) {
            "yes"
        } else {
            "no"
        };
        let y = u8::from(age + if smoker == "yes" { 10.0 } else { 0.0 } > 50.0);
        s += &format!("{smoker},{y},{dose},{age}\n");
    }
    s
}

fn schema() -> ConsortiumSchema {
    ConsortiumSchema::from_json(SCHEMA.as_bytes()).unwrap()
}

fn table(schema: &ConsortiumSchema, csv: &str) -> RawTable {
    RawTable::from_csv_reader(csv.as_bytes(), schema, Target::Required).unwrap()
}

fn params() -> RunParams {
    RunParams {
        model: ModelKind::Logistic,
        l2: 0.01,
        statistics: true,
        evaluate: true,
        schema: Some(schema().hash_hex()),
        ..RunParams::new(Mode::Global, 40, 1.0)
    }
}

fn sim(p: RunParams) -> Sim {
    let mut config = coordinator_config(3, p);
    config.consortium = Some(schema());
    let coord = protocol::CoordinatorMachine::new(config, test_key(), std::time::Instant::now())
        .expect("coordinator");
    let mut sim = Sim::empty(std::time::Instant::now(), Some(coord));
    sim.roster = (0..3).map(hospital_name).collect();
    sim
}

#[test]
fn secure_statistics_equal_the_pooled_ones_and_the_model_is_pooled_gradient_descent() {
    let s = schema();
    let mut sim = sim(params());
    let tables: Vec<RawTable> = (0..3).map(|h| table(&s, &rows(h, 40 + 5 * h))).collect();
    for (h, t) in tables.iter().enumerate() {
        sim.add_schema_hospital(&hospital_name(h), s.clone(), t.clone(), Some(t.clone()));
    }
    sim.run_to_end();
    let res = sim
        .finished()
        .unwrap_or_else(|| panic!("{:?}", sim.failure()))
        .clone();
    // The pooled statistics in the clear.
    let mut pooled = vec![0.0; s.statistics_len()];
    for t in &tables {
        for (p, v) in pooled.iter_mut().zip(local_statistics(t)) {
            *p += v;
        }
    }
    let n: usize = tables.iter().map(RawTable::n_rows).sum();
    let pre = Preprocessor::from_statistics(&s, &pooled, n as u64).unwrap();
    let (got, want) = (res.scaler.clone().unwrap(), pre.scaler.clone().unwrap());
    for (a, b) in got
        .mean
        .iter()
        .chain(&got.std)
        .zip(want.mean.iter().chain(&want.std))
    {
        assert!(((a - b) / b).abs() <= 1e-9, "{a} against {b}");
    }
    // Global logistic regression: full-batch gradient descent on the pooled,
    // preprocessed rows.
    let data: Vec<Dataset> = tables
        .iter()
        .map(|t| pre.transform(&s, t).unwrap())
        .collect();
    let all = Dataset::concat(&data).unwrap();
    let obj = learning::Objective {
        model: ModelKind::Logistic,
        l2: 0.01,
        intercept: s.intercept_index(),
        tolerance: None,
    };
    let mut w = Array1::zeros(all.n_features());
    for _ in 0..40 {
        let g = ModelKind::Logistic.gradient(all.x(), all.y(), &w);
        obj.apply(Mode::Global, &mut w, &g, 3, all.n_rows(), 1.0);
    }
    let fed = res.hospitals[0]
        .report
        .as_ref()
        .unwrap()
        .weights
        .clone()
        .unwrap();
    assert_eq!(fed.len(), w.len());
    for (a, b) in fed.iter().zip(&w) {
        assert!((a - b).abs() <= 1e-6, "{a} against {b}");
    }
    // The secure evaluation: the pooled metrics of that model on every test row.
    let x: Array2<f64> = all.x().clone();
    let exact = Metrics::exact(ModelKind::Logistic, &x, all.y(), &w).unwrap();
    match (res.pooled_metrics.unwrap(), exact) {
        (
            Metrics::Classification {
                rows,
                accuracy,
                auc,
                ..
            },
            Metrics::Classification {
                accuracy: a2,
                auc: u2,
                ..
            },
        ) => {
            assert_eq!(rows as usize, n);
            assert!((accuracy - a2).abs() < 1e-12);
            assert!((auc - u2).abs() <= 0.005, "{auc} against {u2}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(res.model, ModelKind::Logistic);
}

#[test]
fn a_hospital_with_other_categories_is_refused_at_join_naming_the_column() {
    let s = schema();
    let other = ConsortiumSchema::from_json(
        SCHEMA
            .replace(r#"["no", "yes"]"#, r#"["no", "yes", "former"]"#)
            .as_bytes(),
    )
    .unwrap();
    let mut sim = sim(params());
    for h in 0..2 {
        let t = table(&s, &rows(h, 30));
        sim.add_schema_hospital(&hospital_name(h), s.clone(), t, None);
    }
    let t = table(&other, &rows(2, 30));
    sim.add_schema_hospital(&hospital_name(2), other, t, None);
    sim.run_until(10_000, |s| s.coord.as_ref().unwrap().is_done());
    let refused = sim
        .rejected
        .iter()
        .find_map(|(_, e)| match e {
            Error::SchemaMismatch {
                hospital, detail, ..
            } => Some((hospital.clone(), detail.clone())),
            _ => None,
        })
        .expect("a schema mismatch");
    assert_eq!(refused.0, "hospital-3");
    assert!(refused.1.contains("smoker=former"), "{}", refused.1);
}
