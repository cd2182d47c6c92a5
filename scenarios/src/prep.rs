//! Data preparation for the scenarios: the built-in data sets (diabetes,
//! breast cancer), the train/test and per-hospital splits (`seed` reproduces
//! python-paillier's federated example exactly), the consortium schema of a
//! data set, and the cleartext twin's view of the hospitals' rows (the
//! preprocessing the federation derives, applied in the clear). The scaling
//! of a whole raw file (the `--pooled-scaling` reproduction aid) is
//! `learning::sklearn_scale`.

use anyhow::{bail, ensure, Context, Result};
use learning::{ConsortiumSchema, Dataset, Preprocessor, RawTable};
use serde::Serialize;

use crate::numpy_rng::RandomState;

/// Name of the constant feature appended as the model's intercept.
pub const INTERCEPT: &str = "intercept";

/// The diabetes data as scikit-learn (up to 1.0) shipped it pre-scaled: the
/// features python-paillier's published table was computed from.
pub const DIABETES_SCALED_CSV: &str = include_str!("../data/diabetes_sklearn_scaled.csv");
/// Target column of both diabetes files.
pub const DIABETES_TARGET: &str = "target";
/// The Wisconsin diagnostic breast cancer data (569 tumours, 30 features,
/// `target` 1 = benign), as scikit-learn ships it.
pub const BREAST_CANCER_CSV: &str = include_str!("../data/breast_cancer.csv");
/// Target column of the breast cancer file.
pub const BREAST_CANCER_TARGET: &str = "target";

/// How rows are split into a test set and per-hospital training blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    /// python-paillier's example: `RandomState(seed)`; rows permuted; test rows
    /// drawn by `choice(n, test_size, replace=False)` from the permuted rows;
    /// the remaining rows, in order, cut into contiguous blocks of
    /// `n_train / hospitals` rows (the remainder is dropped, as the example does).
    Seed,
    /// Rows shuffled by `RandomState(seed)`; the first `test_size` are the test
    /// set; the rest cut into contiguous blocks whose sizes differ by at most one.
    Random,
    /// No randomness: every (n / test_size)-th row is a test row; the rest, in
    /// file order, cut into contiguous blocks whose sizes differ by at most one.
    Even,
    /// Hospitals with different case mixes: the test rows drawn as `random`
    /// draws them; the training rows sorted by the first feature and cut into
    /// contiguous blocks (sizes differing by at most one), so hospital 1 holds
    /// the smallest values and the last hospital the largest.
    Biased,
}

/// A split data set.
#[derive(Debug, Clone)]
pub struct Split {
    /// One training set per hospital.
    pub hospitals: Vec<Dataset>,
    /// The shared test set.
    pub test: Dataset,
    /// Training rows left out (only `seed` drops the remainder).
    pub dropped_rows: usize,
}

/// The test-set size used when none is given: 50 (the example's) or a fifth
/// of the rows for small data sets.
pub fn default_test_size(n_rows: usize) -> usize {
    50.min(n_rows / 5).max(1)
}

/// Splits `ds` (already scaled, intercept included) for `n_hospitals`.
pub fn split(
    ds: &Dataset,
    kind: SplitKind,
    n_hospitals: usize,
    test_size: usize,
    seed: u32,
) -> Result<Split> {
    let n = ds.n_rows();
    ensure!(n_hospitals > 0, "at least one hospital is needed");
    ensure!(test_size > 0, "the test set needs at least one row");
    if test_size >= n {
        bail!(
            "the data has {n} rows: too few for a test set of {test_size} rows plus training rows"
        );
    }
    let n_train = n - test_size;
    if n_train < n_hospitals {
        bail!(
            "fewer rows than hospitals: {n_train} training rows ({n} rows minus {test_size} test rows) \
             cannot give each of {n_hospitals} hospitals at least one row"
        );
    }
    let (test_rows, train_rows): (Vec<usize>, Vec<usize>) = match kind {
        SplitKind::Seed => {
            let mut rs = RandomState::new(seed);
            let perm = rs.permutation(n);
            let test_pos = rs
                .choice_without_replacement(n, test_size)
                .context("test set larger than the data")?;
            let mut is_test = vec![false; n];
            for &p in &test_pos {
                is_test[p] = true;
            }
            let test = test_pos.iter().map(|&p| perm[p]).collect();
            let train = (0..n).filter(|&p| !is_test[p]).map(|p| perm[p]).collect();
            (test, train)
        }
        SplitKind::Random => {
            let mut perm = RandomState::new(seed).permutation(n);
            let train = perm.split_off(test_size);
            (perm, train)
        }
        SplitKind::Biased => {
            ensure!(
                ds.n_features() > 0,
                "a biased split needs a feature to sort by"
            );
            let mut perm = RandomState::new(seed).permutation(n);
            let mut train = perm.split_off(test_size);
            let key = ds.x().column(0);
            // Stable: equal values keep the shuffled order.
            train.sort_by(|&a, &b| key[a].total_cmp(&key[b]));
            (perm, train)
        }
        SplitKind::Even => {
            let mut is_test = vec![false; n];
            let test: Vec<usize> = (0..test_size).map(|i| i * n / test_size).collect();
            for &t in &test {
                is_test[t] = true;
            }
            (test, (0..n).filter(|&r| !is_test[r]).collect())
        }
    };
    let blocks: Vec<std::ops::Range<usize>> = match kind {
        SplitKind::Seed => {
            let step = n_train / n_hospitals;
            (0..n_hospitals).map(|h| step * h..step * (h + 1)).collect()
        }
        SplitKind::Random | SplitKind::Even | SplitKind::Biased => {
            let (base, extra) = (n_train / n_hospitals, n_train % n_hospitals);
            let mut start = 0;
            (0..n_hospitals)
                .map(|h| {
                    let len = base + usize::from(h < extra);
                    let r = start..start + len;
                    start += len;
                    r
                })
                .collect()
        }
    };
    let used: usize = blocks.iter().map(|b| b.len()).sum();
    let hospitals = blocks
        .into_iter()
        .map(|b| ds.select_rows(&train_rows[b]))
        .collect();
    Ok(Split {
        hospitals,
        test: ds.select_rows(&test_rows),
        dropped_rows: n_train - used,
    })
}

/// The built-in diabetes features as python-paillier's example sees them
/// (pre-scaled), without an intercept.
pub fn diabetes_features() -> Result<Dataset> {
    Dataset::from_csv_reader(DIABETES_SCALED_CSV.as_bytes(), DIABETES_TARGET)
        .context("reading the built-in diabetes data")
}

/// Loads the built-in diabetes data as python-paillier's example sees it:
/// pre-scaled features plus the intercept column.
pub fn diabetes() -> Result<Dataset> {
    diabetes_features()?
        .with_intercept(INTERCEPT)
        .context("appending the intercept column")
}

/// The built-in breast cancer data, raw measurements.
pub fn breast_cancer() -> Result<Dataset> {
    Dataset::from_csv_reader(BREAST_CANCER_CSV.as_bytes(), BREAST_CANCER_TARGET)
        .context("reading the built-in breast cancer data")
}

/// The consortium schema of a data set whose every feature is numeric: its
/// columns, its target, the intercept added by the system, and scaling by
/// the federation when `scale`.
pub fn schema_for(ds: &Dataset, scale: bool) -> Result<ConsortiumSchema> {
    ConsortiumSchema::numeric(ds.feature_names(), ds.target_name(), scale, true)
        .context("the scenario's consortium schema")
}

/// The hospitals' rows as the federation will train on them: the
/// preprocessing derived from the pooled statistics of the hospitals'
/// training rows (what the secure statistics step aggregates; the test rows
/// take no part), applied to every hospital's rows and the test set.
pub fn preprocess(schema: &ConsortiumSchema, raw: &Split) -> Result<(Split, Preprocessor)> {
    let tables: Vec<RawTable> = raw.hospitals.iter().map(RawTable::from_dataset).collect();
    let pre = if schema.needs_statistics() {
        let mut pooled = vec![0.0; schema.statistics_len()];
        for t in &tables {
            for (p, v) in pooled.iter_mut().zip(learning::schema::local_statistics(t)) {
                *p += v;
            }
        }
        let rows = raw.hospitals.iter().map(Dataset::n_rows).sum::<usize>() as u64;
        Preprocessor::from_statistics(schema, &pooled, rows)
    } else {
        Preprocessor::without_statistics(schema)
    }
    .context("the pooled preprocessing")?;
    let hospitals = tables
        .iter()
        .map(|t| pre.transform(schema, t))
        .collect::<learning::Result<Vec<_>>>()
        .context("preprocessing a hospital's rows")?;
    let test = pre
        .transform(schema, &RawTable::from_dataset(&raw.test))
        .context("preprocessing the test rows")?;
    Ok((
        Split {
            hospitals,
            test,
            dropped_rows: raw.dropped_rows,
        },
        pre,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use learning::ndarray::{Array1, Array2};

    /// The raw diabetes measurements (scikit-learn 1.9.1's `diabetes_data_raw`).
    const DIABETES_RAW_CSV: &str = include_str!("../data/diabetes.csv");

    fn toy(n: usize) -> Dataset {
        let x = Array2::from_shape_fn((n, 2), |(r, c)| (r * 2 + c) as f64);
        let y = Array1::from_shape_fn(n, |r| r as f64);
        Dataset::new(vec!["a".into(), "b".into()], "y".into(), x, y).unwrap()
    }

    #[test]
    fn raw_diabetes_scaled_matches_the_shipped_scaled_file() {
        // scikit-learn >= 1.1 computes load_diabetes() from the raw file; the
        // values agree with the pre-scaled file except where the raw file
        // rounds the measurements (bp to 2 decimals, s5 to 4).
        let raw = Dataset::from_csv_reader(DIABETES_RAW_CSV.as_bytes(), DIABETES_TARGET).unwrap();
        let scaled = learning::sklearn_scale(&raw).unwrap();
        let legacy =
            Dataset::from_csv_reader(DIABETES_SCALED_CSV.as_bytes(), DIABETES_TARGET).unwrap();
        assert_eq!(scaled.feature_names(), legacy.feature_names());
        assert_eq!(scaled.y(), legacy.y());
        for (c, name) in legacy.feature_names().iter().enumerate() {
            let diff = (&scaled.x().column(c) - &legacy.x().column(c))
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            let bound = if name == "bp" || name == "s5" {
                2e-5
            } else {
                1e-13
            };
            assert!(diff <= bound, "{name}: {diff}");
        }
    }

    #[test]
    fn seed_split_sizes_match_the_example() {
        let d = diabetes().unwrap();
        assert_eq!((d.n_rows(), d.n_features()), (442, 11));
        let s = split(&d, SplitKind::Seed, 3, 50, 42).unwrap();
        let sizes: Vec<usize> = s.hospitals.iter().map(Dataset::n_rows).collect();
        assert_eq!(sizes, [130, 130, 130]);
        assert_eq!(s.dropped_rows, 2);
        assert_eq!(s.test.n_rows(), 50);
    }

    #[test]
    fn random_and_even_use_every_row_once() {
        let d = toy(23);
        for kind in [SplitKind::Random, SplitKind::Even] {
            let s = split(&d, kind, 4, 5, 7).unwrap();
            let sizes: Vec<usize> = s.hospitals.iter().map(Dataset::n_rows).collect();
            assert_eq!(sizes, [5, 5, 4, 4], "{kind:?}");
            assert_eq!(s.dropped_rows, 0);
            let mut ys: Vec<f64> = s
                .hospitals
                .iter()
                .chain(std::iter::once(&s.test))
                .flat_map(|h| h.y().to_vec())
                .collect();
            ys.sort_by(f64::total_cmp);
            assert_eq!(ys, (0..23).map(|v| v as f64).collect::<Vec<_>>());
        }
        // Even is deterministic and keeps file order inside blocks.
        let e = split(&d, SplitKind::Even, 4, 5, 0).unwrap();
        assert_eq!(e.test.y().to_vec(), [0.0, 4.0, 9.0, 13.0, 18.0]);
        assert_eq!(e.hospitals[0].y().to_vec(), [1.0, 2.0, 3.0, 5.0, 6.0]);
    }

    #[test]
    fn too_few_rows_are_clear_errors() {
        let d = toy(10);
        let e = split(&d, SplitKind::Seed, 9, 2, 1).unwrap_err();
        assert!(
            format!("{e:#}").contains("fewer rows than hospitals"),
            "{e:#}"
        );
        let e = split(&d, SplitKind::Random, 2, 10, 1).unwrap_err();
        assert!(format!("{e:#}").contains("too few"), "{e:#}");
        assert_eq!(default_test_size(442), 50);
        assert_eq!(default_test_size(30), 6);
        assert_eq!(default_test_size(3), 1);
    }
}
