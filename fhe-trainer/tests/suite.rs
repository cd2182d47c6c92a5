//! The accuracy suite in Simulate with the crate's defaults: every shipped
//! binary data set, five stratified splits each, scored against
//! scikit-learn's `LogisticRegression()` on the same splits
//! (`data/suite/suite.json`, written by `data/suite/make_suite.py`).
//!
//! `BASELINE` holds the mean test accuracy the defaults reached when they
//! were last changed (`cargo run --release -p fhe-trainer -- suite`); the
//! test fails if a change costs more than half a point on any set, and
//! checks the bar (within max(1 point, one test row) of scikit-learn,
//! above the majority rate) on the sets listed as meeting it.

use fhe_trainer::model::{Fhe, TrainerConfig};
use fhe_trainer::suite::{self, mean, Suite};

/// (set, mean Simulate accuracy with the defaults, meets the bar).
const BASELINE: &[(&str, f64, bool)] = &[
    ("breast_cancer", 0.9567, false),
    ("wine_class0", 0.9667, true),
    ("iris_versicolor_virginica", 0.9533, true),
    ("synthetic_noisy20", 0.7222, false),
    ("digits_ge5", 0.8522, false),
    ("ordinal_survey8", 0.7550, true),
    ("diabetes_high", 0.7519, true),
];

/// The same for the multi-class sets (one-vs-rest), bar 2 points.
const MULTICLASS_BASELINE: &[(&str, f64, bool)] = &[
    ("iris3", 0.7689, false),
    ("wine3", 0.9667, true),
    ("digits10", 0.9278, false),
];

fn check(results: &[suite::SetResult], baseline: &[(&str, f64, bool)]) {
    assert_eq!(results.len(), baseline.len(), "one baseline per set");
    for (r, &(name, base, meets)) in results.iter().zip(baseline) {
        assert_eq!(r.name, name);
        let ours = mean(&r.ours);
        assert!(
            ours >= base - 0.005,
            "{name}: {ours:.4} is more than half a point below the baseline {base:.4}"
        );
        if meets {
            assert!(r.meets_target(), "{name} no longer meets the bar");
        }
    }
}

#[test]
fn multiclass_defaults_hold_on_the_suite() {
    let dir = suite::default_dir();
    let s = Suite::load(&dir).unwrap();
    let cfg = TrainerConfig::default();
    let results: Vec<_> = s
        .multiclass
        .iter()
        .map(|set| suite::run_set(&dir, set, &cfg, Fhe::Simulate, None, false).unwrap())
        .collect();
    eprint!("{}", suite::table(&results, Fhe::Simulate));
    assert!(results.iter().all(|r| r.classes >= 3));
    check(&results, MULTICLASS_BASELINE);
}

#[test]
fn defaults_hold_on_the_suite() {
    let dir = suite::default_dir();
    let s = Suite::load(&dir).unwrap();
    assert!(
        s.binary.len() >= 6,
        "the suite needs at least six binary sets"
    );
    let cfg = TrainerConfig::default();
    let mut results = Vec::new();
    for set in &s.binary {
        results.push(suite::run_set(&dir, set, &cfg, Fhe::Simulate, None, false).unwrap());
    }
    eprint!("{}", suite::table(&results, Fhe::Simulate));
    check(&results, BASELINE);
}
