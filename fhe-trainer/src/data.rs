//! Labelled tabular data: CSV loading (with strict checks), the stratified
//! train/test split and the min-max scaler that maps features to [-1, 1].

use std::io::Read;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A binary-labelled data set with real features. Exists only if every row has
/// the same width, every cell is a finite number and every label is 0 or 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    feature_names: Vec<String>,
    x: Vec<Vec<f64>>,
    y: Vec<u8>,
    classes: u8,
}

/// Most classes a multi-class data set may have.
pub const MAX_CLASSES: u8 = 32;

impl Dataset {
    /// Builds a binary data set from rows, checking shapes, finiteness and
    /// labels (0 or 1).
    pub fn new(feature_names: Vec<String>, x: Vec<Vec<f64>>, y: Vec<u8>) -> Result<Self> {
        Self::with_classes(feature_names, x, y, 2)
    }

    /// Builds a data set whose labels are class indices `0..classes`.
    pub fn with_classes(
        feature_names: Vec<String>,
        x: Vec<Vec<f64>>,
        y: Vec<u8>,
        classes: u8,
    ) -> Result<Self> {
        if !(2..=MAX_CLASSES).contains(&classes) {
            return Err(Error::Shape(format!(
                "{classes} classes is not in 2..={MAX_CLASSES}"
            )));
        }
        if x.len() != y.len() {
            return Err(Error::Shape(format!(
                "{} rows but {} labels",
                x.len(),
                y.len()
            )));
        }
        if feature_names.is_empty() {
            return Err(Error::Shape("no feature columns".into()));
        }
        for (i, row) in x.iter().enumerate() {
            if row.len() != feature_names.len() {
                return Err(Error::Shape(format!(
                    "row {} has {} features, expected {}",
                    i + 1,
                    row.len(),
                    feature_names.len()
                )));
            }
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(Error::Shape(format!(
                    "row {} feature {:?} is not finite",
                    i + 1,
                    feature_names[j]
                )));
            }
        }
        if let Some(i) = y.iter().position(|&l| l >= classes) {
            return Err(Error::Shape(format!(
                "label {} at row {} is not below {classes}",
                y[i],
                i + 1
            )));
        }
        Ok(Dataset {
            feature_names,
            x,
            y,
            classes,
        })
    }

    /// Loads a CSV file with a header row; `target` names the label column.
    pub fn from_csv_path(path: impl AsRef<Path>, target: &str) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Self::from_csv_reader(file, target)
    }

    /// Loads CSV text from any reader; see [`Dataset::from_csv_path`].
    pub fn from_csv_reader(reader: impl Read, target: &str) -> Result<Self> {
        let (names, x, y) = parse_csv(reader, Some((target, 2)))?;
        Dataset::new(names, x, y)
    }

    /// Loads a CSV whose `target` column holds class indices `0, 1, ...,
    /// k - 1` (integers, `k <= MAX_CLASSES`, every class present).
    pub fn from_csv_path_classes(path: impl AsRef<Path>, target: &str) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let (names, x, y) = parse_csv(file, Some((target, MAX_CLASSES)))?;
        let k = y.iter().copied().max().unwrap_or(0) + 1;
        if let Some(c) = (0..k).find(|c| !y.contains(c)) {
            return Err(Error::Shape(format!(
                "class {c} has no row: labels must be 0..{k} with every class present"
            )));
        }
        Dataset::with_classes(names, x, y, k.max(2))
    }

    /// Number of classes (2 for a binary set).
    pub fn n_classes(&self) -> u8 {
        self.classes
    }

    /// Feature column names, in order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Feature rows.
    pub fn x(&self) -> &[Vec<f64>] {
        &self.x
    }

    /// Labels (0 or 1).
    pub fn y(&self) -> &[u8] {
        &self.y
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Number of feature columns.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        Dataset {
            feature_names: self.feature_names.clone(),
            x: idx.iter().map(|&i| self.x[i].clone()).collect(),
            y: idx.iter().map(|&i| self.y[i]).collect(),
            classes: self.classes,
        }
    }

    /// Stratified split: `test_fraction` of each class goes to the test set,
    /// shuffled with `seed`. Returns `(train, test)`, both shuffled.
    pub fn stratified_split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(Error::Config(format!(
                "test fraction {test_fraction} is not in (0, 1)"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut train = Vec::new();
        let mut test = Vec::new();
        for class in 0..self.classes {
            let mut idx: Vec<usize> = (0..self.len()).filter(|&i| self.y[i] == class).collect();
            idx.shuffle(&mut rng);
            let n_test = (idx.len() as f64 * test_fraction).round() as usize;
            test.extend_from_slice(&idx[..n_test]);
            train.extend_from_slice(&idx[n_test..]);
        }
        train.shuffle(&mut rng);
        test.shuffle(&mut rng);
        if train.is_empty() || test.is_empty() {
            return Err(Error::Shape("split left an empty train or test set".into()));
        }
        Ok((self.select(&train), self.select(&test)))
    }
}

/// Feature names and rows of a CSV file without a label column (every
/// column is a feature), for prediction.
pub fn features_from_csv_path(path: impl AsRef<Path>) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let (names, x, _) = parse_csv(file, None)?;
    Ok((names, x))
}

/// Feature names, feature rows and labels of a parsed CSV.
type Parsed = (Vec<String>, Vec<Vec<f64>>, Vec<u8>);

/// Parses a CSV with a header; `target` names the label column, if any, and
/// the number of classes its integer labels must stay below.
fn parse_csv(reader: impl Read, target: Option<(&str, u8)>) -> Result<Parsed> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| Error::Csv {
            what: format!("header: {e}"),
        })?
        .clone();
    let classes = target.map_or(2, |t| t.1);
    let target_idx = match target.map(|t| t.0) {
        Some(t) => Some(
            headers
                .iter()
                .position(|h| h == t)
                .ok_or_else(|| Error::NoSuchColumn(t.to_string()))?,
        ),
        None => None,
    };
    let feature_names: Vec<String> = headers
        .iter()
        .enumerate()
        .filter(|&(i, _)| Some(i) != target_idx)
        .map(|(_, h)| h.to_string())
        .collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (r, rec) in rdr.records().enumerate() {
        let row_no = r + 1;
        let rec = rec.map_err(|e| Error::Csv {
            what: format!("row {row_no}: {e}"),
        })?;
        let mut row = Vec::with_capacity(feature_names.len());
        for (c, cell) in rec.iter().enumerate() {
            let column = headers.get(c).unwrap_or("?");
            if Some(c) == target_idx {
                let label = match cell.strip_suffix(".0").unwrap_or(cell).parse::<u8>() {
                    Ok(l) if l < classes => l,
                    _ => {
                        return Err(Error::BadLabel {
                            row: row_no,
                            column: column.to_string(),
                            value: cell.to_string(),
                            classes,
                        })
                    }
                };
                y.push(label);
                continue;
            }
            if cell.is_empty() {
                return Err(Error::Csv {
                    what: format!("row {row_no}, column {column:?}: missing value"),
                });
            }
            let v: f64 = cell.parse().map_err(|_| Error::Csv {
                what: format!("row {row_no}, column {column:?}: {cell:?} is not a number"),
            })?;
            if !v.is_finite() {
                return Err(Error::Csv {
                    what: format!("row {row_no}, column {column:?}: {cell:?} is not finite"),
                });
            }
            row.push(v);
        }
        x.push(row);
    }
    if x.is_empty() {
        return Err(Error::Csv {
            what: "has no data rows".into(),
        });
    }
    if feature_names.is_empty() {
        return Err(Error::Shape("no feature columns".into()));
    }
    Ok((feature_names, x, y))
}

/// Min-max scaler to [-1, 1], fitted on training data and stored with the model.
/// Values outside the fitted range are clipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinMaxScaler {
    min: Vec<f64>,
    max: Vec<f64>,
}

impl MinMaxScaler {
    /// Fits per-feature minimum and maximum.
    pub fn fit(x: &[Vec<f64>]) -> Result<Self> {
        let first = x
            .first()
            .ok_or_else(|| Error::Shape("cannot fit a scaler on no rows".into()))?;
        let mut min = first.clone();
        let mut max = first.clone();
        for row in x {
            if row.len() != min.len() {
                return Err(Error::Shape("ragged rows".into()));
            }
            for (j, &v) in row.iter().enumerate() {
                min[j] = min[j].min(v);
                max[j] = max[j].max(v);
            }
        }
        Ok(MinMaxScaler { min, max })
    }

    /// Number of features the scaler was fitted on.
    pub fn n_features(&self) -> usize {
        self.min.len()
    }

    /// Scales one row to [-1, 1]; constant features map to 0.
    pub fn transform_row(&self, row: &[f64]) -> Result<Vec<f64>> {
        if row.len() != self.min.len() {
            return Err(Error::Shape(format!(
                "row has {} features, scaler expects {}",
                row.len(),
                self.min.len()
            )));
        }
        Ok(row
            .iter()
            .enumerate()
            .map(|(j, &v)| {
                let span = self.max[j] - self.min[j];
                if span <= 0.0 {
                    0.0
                } else {
                    (2.0 * (v - self.min[j]) / span - 1.0).clamp(-1.0, 1.0)
                }
            })
            .collect())
    }

    /// Scales many rows.
    pub fn transform(&self, x: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
        x.iter().map(|r| self.transform_row(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n";

    #[test]
    fn loads_and_splits_columns() {
        let d = Dataset::from_csv_reader(CSV.as_bytes(), "label").unwrap();
        assert_eq!(d.feature_names(), ["a", "b"]);
        assert_eq!(d.y(), [0, 1, 0, 1]);
        assert_eq!(d.x()[1], vec![3.0, 4.0]);
    }

    #[test]
    fn rejects_bad_label() {
        let e = Dataset::from_csv_reader("a,label\n1,2\n".as_bytes(), "label").unwrap_err();
        assert!(matches!(e, Error::BadLabel { row: 1, .. }), "{e}");
        assert!(e.to_string().contains("\"2\""));
    }

    #[test]
    fn rejects_text_and_missing_cells() {
        let e = Dataset::from_csv_reader("a,label\nfoo,1\n".as_bytes(), "label").unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
        let e = Dataset::from_csv_reader("a,b,label\n1,,1\n".as_bytes(), "label").unwrap_err();
        assert!(e.to_string().contains("missing value"), "{e}");
        let e = Dataset::from_csv_reader("a,b,label\n1,1\n".as_bytes(), "label").unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
        let e = Dataset::from_csv_reader("a,label\nNaN,1\n".as_bytes(), "label").unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
    }

    #[test]
    fn rejects_missing_target() {
        let e = Dataset::from_csv_reader(CSV.as_bytes(), "y").unwrap_err();
        assert!(matches!(e, Error::NoSuchColumn(_)));
    }

    #[test]
    fn split_is_stratified_and_seeded() {
        let x: Vec<Vec<f64>> = (0..100).map(|i| vec![i as f64]).collect();
        let y: Vec<u8> = (0..100).map(|i| u8::from(i % 4 == 0)).collect();
        let d = Dataset::new(vec!["v".into()], x, y).unwrap();
        let (tr, te) = d.stratified_split(0.3, 7).unwrap();
        assert_eq!(tr.len() + te.len(), 100);
        assert_eq!(te.y().iter().filter(|&&l| l == 1).count(), 8); // round(25 * 0.3)
        let (tr2, _) = d.stratified_split(0.3, 7).unwrap();
        assert_eq!(tr, tr2);
    }

    #[test]
    fn scaler_maps_to_unit_interval_and_clips() {
        let s = MinMaxScaler::fit(&[vec![0.0, 5.0], vec![10.0, 5.0]]).unwrap();
        assert_eq!(s.transform_row(&[5.0, 5.0]).unwrap(), vec![0.0, 0.0]);
        assert_eq!(s.transform_row(&[20.0, 1.0]).unwrap(), vec![1.0, 0.0]);
        assert_eq!(s.transform_row(&[0.0, 9.0]).unwrap()[0], -1.0);
        assert!(s.transform_row(&[1.0]).is_err());
    }
}
