//! Regression data sets: reading and writing CSV with a header and a named target
//! column, row selection and the schema hospitals must agree on.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;

use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The columns of a data set: ordered feature names and the target name.
/// Hospitals of one federation must have equal schemas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schema {
    /// Feature column names, in the order of the model's weights.
    pub feature_names: Vec<String>,
    /// Name of the target column.
    pub target_name: String,
}

/// A regression data set: numeric features `x` (rows x features) and a numeric
/// target `y`. Every value is finite, there is at least one row and one feature,
/// and column names are unique and non-empty; a `Dataset` that exists has been
/// checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    feature_names: Vec<String>,
    target_name: String,
    x: Array2<f64>,
    y: Array1<f64>,
}

impl Dataset {
    /// Builds a data set from arrays, checking shapes, names and that every value is finite.
    pub fn new(
        feature_names: Vec<String>,
        target_name: String,
        x: Array2<f64>,
        y: Array1<f64>,
    ) -> Result<Dataset> {
        if x.ncols() != feature_names.len() {
            return Err(Error::Shape(format!(
                "{} feature names for {} feature columns",
                feature_names.len(),
                x.ncols()
            )));
        }
        if x.nrows() != y.len() {
            return Err(Error::Shape(format!(
                "{} feature rows for {} target values",
                x.nrows(),
                y.len()
            )));
        }
        if feature_names.is_empty() {
            return Err(Error::NoFeatures {
                target: target_name,
            });
        }
        if x.nrows() == 0 {
            return Err(Error::NoRows);
        }
        check_names(feature_names.iter().chain(std::iter::once(&target_name)))?;
        for ((r, c), v) in x.indexed_iter() {
            if !v.is_finite() {
                return Err(Error::NonFinite {
                    row: r + 1,
                    column: feature_names[c].clone(),
                    value: *v,
                });
            }
        }
        for (r, v) in y.iter().enumerate() {
            if !v.is_finite() {
                return Err(Error::NonFinite {
                    row: r + 1,
                    column: target_name.clone(),
                    value: *v,
                });
            }
        }
        Ok(Dataset {
            feature_names,
            target_name,
            x,
            y,
        })
    }

    /// Reads a CSV file with a header row; `target` names the target column and
    /// every other column is a feature, in file order.
    pub fn from_csv_path(path: &Path, target: &str) -> Result<Dataset> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Dataset::from_csv_reader(BufReader::new(file), target)
    }

    /// Reads CSV text with a header row from any reader; see [`Dataset::from_csv_path`].
    pub fn from_csv_reader<R: Read>(reader: R, target: &str) -> Result<Dataset> {
        let csv = CsvRows::new(reader)?;
        let header = csv.header().to_vec();
        let target_col =
            header
                .iter()
                .position(|h| h == target)
                .ok_or_else(|| Error::MissingTarget {
                    target: target.to_owned(),
                    columns: header.clone(),
                })?;
        let feature_names: Vec<String> = header
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != target_col)
            .map(|(_, h)| h.clone())
            .collect();
        if feature_names.is_empty() {
            return Err(Error::NoFeatures {
                target: target.to_owned(),
            });
        }

        let width = header.len();
        let mut features: Vec<f64> = Vec::new();
        let mut targets: Vec<f64> = Vec::new();
        let row = csv.for_each(|record, row, line| {
            for (c, cell) in record.iter().enumerate() {
                let value = parse_cell(cell, row, line, &header[c])?;
                if c == target_col {
                    targets.push(value);
                } else {
                    features.push(value);
                }
            }
            Ok(())
        })?;
        let x = Array2::from_shape_vec((row, width - 1), features)
            .map_err(|e| Error::Shape(e.to_string()))?;
        Dataset::new(
            feature_names,
            target.to_owned(),
            x,
            Array1::from_vec(targets),
        )
    }

    /// Writes the data set as CSV: a header row (features in order, then the
    /// target) and one row per sample. Values are written in Rust's shortest
    /// round-trip form, so reading the file back gives bit-identical values.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let file = File::create(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut w = csv::Writer::from_writer(BufWriter::new(file));
        let csv_err = |source| Error::Csv { row: None, source };
        w.write_record(
            self.feature_names
                .iter()
                .chain(std::iter::once(&self.target_name)),
        )
        .map_err(csv_err)?;
        let mut cells: Vec<String> = Vec::with_capacity(self.n_features() + 1);
        for (xr, yv) in self.x.rows().into_iter().zip(self.y.iter()) {
            cells.clear();
            cells.extend(xr.iter().map(|v| format!("{v:?}")));
            cells.push(format!("{yv:?}"));
            w.write_record(&cells).map_err(csv_err)?;
        }
        w.flush().map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Feature column names, in weight order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Target column name.
    pub fn target_name(&self) -> &str {
        &self.target_name
    }

    /// Feature matrix, rows x features.
    pub fn x(&self) -> &Array2<f64> {
        &self.x
    }

    /// Target vector.
    pub fn y(&self) -> &Array1<f64> {
        &self.y
    }

    /// Number of samples.
    pub fn n_rows(&self) -> usize {
        self.x.nrows()
    }

    /// Number of features (weights of a model on this data).
    pub fn n_features(&self) -> usize {
        self.x.ncols()
    }

    /// A data set made of the given rows, in the given order (repeats allowed).
    ///
    /// # Panics
    /// If `idx` is empty or an index is out of range: indices come from the
    /// program's own splitting code, never from input.
    pub fn select_rows(&self, idx: &[usize]) -> Dataset {
        assert!(!idx.is_empty(), "select_rows needs at least one row");
        Dataset {
            feature_names: self.feature_names.clone(),
            target_name: self.target_name.clone(),
            x: self.x.select(Axis(0), idx),
            y: self.y.select(Axis(0), idx),
        }
    }

    /// The same data with one more feature column, constant 1, appended last:
    /// the intercept of a linear model.
    pub fn with_intercept(&self, name: &str) -> Result<Dataset> {
        let ones = Array2::<f64>::ones((self.n_rows(), 1));
        let x = ndarray::concatenate(Axis(1), &[self.x.view(), ones.view()])
            .map_err(|e| Error::Shape(e.to_string()))?;
        let mut names = self.feature_names.clone();
        names.push(name.to_owned());
        Dataset::new(names, self.target_name.clone(), x, self.y.clone())
    }

    /// Stacks data sets with equal schemas, rows in order: the pooled data.
    pub fn concat(parts: &[Dataset]) -> Result<Dataset> {
        let first = parts.first().ok_or(Error::NoHospitals)?;
        let schema = first.schema();
        for (i, p) in parts.iter().enumerate().skip(1) {
            let s = p.schema();
            if s != schema {
                return Err(Error::SchemaMismatch {
                    hospital: i + 1,
                    expected: schema,
                    found: s,
                });
            }
        }
        let xs: Vec<_> = parts.iter().map(|p| p.x.view()).collect();
        let ys: Vec<_> = parts.iter().map(|p| p.y.view()).collect();
        let x = ndarray::concatenate(Axis(0), &xs).map_err(|e| Error::Shape(e.to_string()))?;
        let y = ndarray::concatenate(Axis(0), &ys).map_err(|e| Error::Shape(e.to_string()))?;
        Ok(Dataset {
            feature_names: first.feature_names.clone(),
            target_name: first.target_name.clone(),
            x,
            y,
        })
    }

    /// Ordered feature names and target name.
    pub fn schema(&self) -> Schema {
        Schema {
            feature_names: self.feature_names.clone(),
            target_name: self.target_name.clone(),
        }
    }
}

/// A CSV file being read the one way this crate reads CSV: a header row of
/// unique, non-empty names, cells trimmed, and every data row as wide as the
/// header (a ragged row is an error with its row and line number).
pub(crate) struct CsvRows<R: Read> {
    rdr: csv::Reader<R>,
    header: Vec<String>,
}

impl<R: Read> CsvRows<R> {
    /// Reads and checks the header.
    pub(crate) fn new(reader: R) -> Result<CsvRows<R>> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true) // ragged rows are reported by us, with row numbers
            .trim(csv::Trim::All)
            .from_reader(reader);
        let header: Vec<String> = rdr
            .headers()
            .map_err(|source| Error::Csv { row: None, source })?
            .iter()
            .map(str::to_owned)
            .collect();
        if header.is_empty() || header.len() == 1 && header[0].is_empty() {
            return Err(Error::EmptyFile);
        }
        check_names(header.iter())?;
        Ok(CsvRows { rdr, header })
    }

    /// The header's column names.
    pub(crate) fn header(&self) -> &[String] {
        &self.header
    }

    /// Calls `f(record, row, line)` for every data row (row 1-based without
    /// the header, line 1-based in the file); returns the number of rows, at
    /// least one.
    pub(crate) fn for_each(
        mut self,
        mut f: impl FnMut(&csv::StringRecord, usize, u64) -> Result<()>,
    ) -> Result<usize> {
        let width = self.header.len();
        let mut record = csv::StringRecord::new();
        let mut row = 0usize;
        loop {
            let more = self
                .rdr
                .read_record(&mut record)
                .map_err(|source| Error::Csv {
                    row: Some(row + 1),
                    source,
                })?;
            if !more {
                break;
            }
            row += 1;
            let line = record.position().map_or(row as u64 + 1, |p| p.line());
            if record.len() != width {
                return Err(Error::RaggedRow {
                    row,
                    line,
                    expected: width,
                    found: record.len(),
                });
            }
            f(&record, row, line)?;
        }
        if row == 0 {
            return Err(Error::NoRows);
        }
        Ok(row)
    }
}

fn check_names<'a>(names: impl Iterator<Item = &'a String>) -> Result<()> {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if name.is_empty() {
            return Err(Error::EmptyColumnName {
                column_number: i + 1,
            });
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::DuplicateColumn {
                column: name.clone(),
            });
        }
    }
    Ok(())
}

fn parse_cell(cell: &str, row: usize, line: u64, column: &str) -> Result<f64> {
    if cell.is_empty() {
        return Err(Error::MissingCell {
            row,
            line,
            column: column.to_owned(),
        });
    }
    parse_number(cell, row, line, column)
}

/// A non-empty cell as a finite number, or an error naming its row, line and column.
pub(crate) fn parse_number(cell: &str, row: usize, line: u64, column: &str) -> Result<f64> {
    match cell.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        // "nan", "inf" parse as floats but are not data a model can learn from.
        _ => Err(Error::NonNumeric {
            row,
            line,
            column: column.to_owned(),
            value: cell.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn read(text: &str) -> Result<Dataset> {
        Dataset::from_csv_reader(text.as_bytes(), "y")
    }

    #[test]
    fn reads_features_in_order_and_target_anywhere() {
        let d = read("a,y,b\n1,10,2\n3,20,4\n").unwrap();
        assert_eq!(d.feature_names(), ["a", "b"]);
        assert_eq!(d.target_name(), "y");
        assert_eq!(d.x(), &array![[1.0, 2.0], [3.0, 4.0]]);
        assert_eq!(d.y(), &array![10.0, 20.0]);
        assert_eq!((d.n_rows(), d.n_features()), (2, 2));
    }

    #[test]
    fn trims_spaces_and_accepts_exponents() {
        let d = read(" a , y \n 1e-3 , -2.5 \n").unwrap();
        assert_eq!(d.x(), &array![[1e-3]]);
        assert_eq!(d.y(), &array![-2.5]);
    }

    #[test]
    fn missing_target_lists_columns() {
        let e = read("a,b\n1,2\n").unwrap_err();
        assert!(matches!(&e, Error::MissingTarget { columns, .. } if columns == &["a", "b"]));
        assert!(e.to_string().contains("\"y\""), "{e}");
    }

    #[test]
    fn text_cell_names_row_and_column() {
        let e = read("a,y\n1,2\n3,4\nfoo,5\n").unwrap_err();
        match &e {
            Error::NonNumeric {
                row,
                line,
                column,
                value,
            } => {
                assert_eq!((*row, *line), (3, 4));
                assert_eq!(column, "a");
                assert_eq!(value, "foo");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "row 3 (line 4), column \"a\": \"foo\" is not a finite number"
        );
    }

    #[test]
    fn nan_and_inf_are_rejected() {
        assert!(matches!(
            read("a,y\nnan,1\n"),
            Err(Error::NonNumeric { .. })
        ));
        assert!(
            matches!(read("a,y\n1,inf\n"), Err(Error::NonNumeric { column, .. }) if column == "y")
        );
    }

    #[test]
    fn empty_cell_is_missing() {
        let e = read("a,b,y\n1,,3\n").unwrap_err();
        assert!(matches!(e, Error::MissingCell { row: 1, line: 2, ref column } if column == "b"));
    }

    #[test]
    fn ragged_rows_are_reported() {
        let e = read("a,b,y\n1,2,3\n1,2\n").unwrap_err();
        assert!(matches!(
            e,
            Error::RaggedRow {
                row: 2,
                line: 3,
                expected: 3,
                found: 2
            }
        ));
        let e = read("a,b,y\n1,2,3,4\n").unwrap_err();
        assert!(matches!(
            e,
            Error::RaggedRow {
                row: 1,
                found: 4,
                ..
            }
        ));
    }

    #[test]
    fn empty_inputs() {
        assert!(matches!(read(""), Err(Error::EmptyFile)));
        assert!(matches!(read("a,y\n"), Err(Error::NoRows)));
        assert!(matches!(read("y\n1\n"), Err(Error::NoFeatures { .. })));
        assert!(matches!(
            read("a,,y\n1,2,3\n"),
            Err(Error::EmptyColumnName { column_number: 2 })
        ));
        assert!(matches!(
            read("a,a,y\n1,2,3\n"),
            Err(Error::DuplicateColumn { .. })
        ));
    }

    #[test]
    fn new_checks_shapes_and_values() {
        let x = array![[1.0], [2.0]];
        assert!(matches!(
            Dataset::new(vec!["a".into()], "y".into(), x.clone(), array![1.0]),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Dataset::new(
                vec!["a".into(), "b".into()],
                "y".into(),
                x.clone(),
                array![1.0, 2.0]
            ),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Dataset::new(vec!["y".into()], "y".into(), x.clone(), array![1.0, 2.0]),
            Err(Error::DuplicateColumn { .. })
        ));
        assert!(matches!(
            Dataset::new(vec!["a".into()], "y".into(), x, array![1.0, f64::NAN]),
            Err(Error::NonFinite { row: 2, .. })
        ));
    }

    #[test]
    fn write_then_read_is_bit_identical() {
        let dir = std::env::temp_dir().join(format!("learning-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.csv");
        let d = Dataset::new(
            vec!["a".into(), "b".into()],
            "y".into(),
            array![[0.1 + 0.2, -1e-300], [std::f64::consts::PI, 12345.678]],
            array![1.0 / 3.0, -7.0],
        )
        .unwrap();
        d.write_csv(&path).unwrap();
        let back = Dataset::from_csv_path(&path, "y").unwrap();
        assert_eq!(back, d);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_names_path() {
        let e = Dataset::from_csv_path(Path::new("/nonexistent/x.csv"), "y").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.csv"), "{e}");
    }

    #[test]
    fn select_intercept_concat_schema() {
        let d = read("a,y\n1,10\n2,20\n3,30\n").unwrap();
        let s = d.select_rows(&[2, 0]);
        assert_eq!(s.y(), &array![30.0, 10.0]);
        let i = s.with_intercept("intercept").unwrap();
        assert_eq!(i.x(), &array![[3.0, 1.0], [1.0, 1.0]]);
        assert_eq!(i.feature_names(), ["a", "intercept"]);
        let pooled = Dataset::concat(&[d.clone(), s.clone()]).unwrap();
        assert_eq!(pooled.n_rows(), 5);
        assert_eq!(pooled.y()[3], 30.0);
        assert!(matches!(
            Dataset::concat(&[d, i]),
            Err(Error::SchemaMismatch { hospital: 2, .. })
        ));
        assert!(matches!(Dataset::concat(&[]), Err(Error::NoHospitals)));
    }
}
