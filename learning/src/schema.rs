//! The consortium's schema and what it turns raw exports into: [`ConsortiumSchema`]
//! (one JSON file every node names in its config: columns and their types,
//! category lists, imputation, the target, scaling and the intercept),
//! [`RawTable`] (a hospital's CSV export read against it, columns matched by name
//! in any order), the per-column sums the federation aggregates securely
//! ([`local_statistics`]) and the [`Preprocessor`] every node derives from the
//! pooled sums (mean imputation, scikit-learn's `StandardScaler` with the
//! population standard deviation, one-hot encoding, the intercept).
//!
//! It owns no aggregation: the sums travel through the `protocol` crate's
//! masked, encrypted path, and the preprocessor is derived from whatever
//! pooled sums it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{parse_number, CsvRows, Dataset};
use crate::error::{Error, Result};

/// The `format` field of a schema file.
pub const SCHEMA_FORMAT: &str = "private-training/schema";
/// The schema file version this build reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Name of the constant feature the system appends when `intercept` is on.
pub const INTERCEPT: &str = "intercept";
/// Most columns a schema may declare (a bound on what a schema file allocates).
pub const MAX_COLUMNS: usize = 4096;
/// Most categories one categorical column may declare.
pub const MAX_CATEGORIES: usize = 1024;
/// Cell texts read as a missing value (besides the empty cell).
pub const MISSING_MARKERS: [&str; 3] = ["NA", "NaN", "nan"];

/// What is wrong with a versioned file's `(format, version)` against the
/// `(format, version)` this build reads, if anything.
pub(crate) fn header_problem(
    (format, version): (&str, u32),
    (expected_format, expected_version): (&str, u32),
) -> Option<String> {
    if format != expected_format {
        return Some(format!(
            "format is {format:?}, expected {expected_format:?}"
        ));
    }
    if version != expected_version {
        return Some(format!(
            "version {version} (this build reads version {expected_version})"
        ));
    }
    None
}

/// A column's type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// A number (scaled when the schema scales).
    Numeric,
    /// One of the declared categories, one-hot encoded in the declared order.
    Categorical,
}

/// What to do with a missing numeric cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Impute {
    /// A missing cell is an error naming its row and column.
    #[default]
    None,
    /// A missing cell takes the pooled mean of the column (from the secure
    /// statistics), as scikit-learn's `SimpleImputer(strategy="mean")`.
    Mean,
}

/// One column of the schema file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The column's name in every hospital's export header.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// The categories of a categorical column, in one-hot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Imputation of missing cells (numeric columns only).
    #[serde(default, skip_serializing_if = "is_none")]
    pub impute: Impute,
}

fn is_none(i: &Impute) -> bool {
    *i == Impute::None
}

fn yes() -> bool {
    true
}

/// The schema file as written (see [`ConsortiumSchema`] for the checked form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaFile {
    /// Always [`SCHEMA_FORMAT`].
    pub format: String,
    /// Always [`SCHEMA_VERSION`].
    pub version: u32,
    /// The target column (numeric; 0/1 for logistic regression).
    pub target: String,
    /// The feature columns, in model order.
    pub columns: Vec<ColumnSpec>,
    /// Columns present in exports but not used (identifiers, dates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// Standardize numeric columns with the pooled mean and population
    /// standard deviation (default true).
    #[serde(default = "yes")]
    pub scale: bool,
    /// Append a constant [`INTERCEPT`] feature (default true).
    #[serde(default = "yes")]
    pub intercept: bool,
}

/// A checked consortium schema: the one description of the data every node of a
/// federation agrees on (its [`hash`](ConsortiumSchema::hash) is compared at join).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsortiumSchema {
    file: SchemaFile,
    hash: [u8; 32],
    feature_names: Vec<String>,
}

impl ConsortiumSchema {
    /// Checks a parsed schema file: format and version, unique non-empty names,
    /// categories only (and at least one, unique) on categorical columns,
    /// imputation only on numeric ones, the target not a feature, and the
    /// intercept name free when the intercept is on.
    pub fn new(file: SchemaFile) -> Result<ConsortiumSchema> {
        let bad = |reason: String| Err(Error::Schema(reason));
        if let Some(reason) = header_problem(
            (&file.format, file.version),
            (SCHEMA_FORMAT, SCHEMA_VERSION),
        ) {
            return bad(reason);
        }
        if file.columns.is_empty() {
            return bad("no feature columns".into());
        }
        if file.columns.len() + file.ignore.len() > MAX_COLUMNS {
            return bad(format!("more than {MAX_COLUMNS} columns"));
        }
        if file.target.is_empty() {
            return bad("the target has an empty name".into());
        }
        let mut names = BTreeSet::new();
        for name in file
            .columns
            .iter()
            .map(|c| &c.name)
            .chain(&file.ignore)
            .chain(std::iter::once(&file.target))
        {
            if name.is_empty() {
                return bad("a column has an empty name".into());
            }
            if !names.insert(name.as_str()) {
                return bad(format!("column {name:?} is declared more than once"));
            }
        }
        for c in &file.columns {
            match c.kind {
                ColumnType::Numeric if !c.categories.is_empty() => {
                    return bad(format!(
                        "column {:?} is numeric but lists categories",
                        c.name
                    ))
                }
                ColumnType::Categorical => {
                    if c.categories.is_empty() {
                        return bad(format!(
                            "categorical column {:?} lists no categories",
                            c.name
                        ));
                    }
                    if c.categories.len() > MAX_CATEGORIES {
                        return bad(format!(
                            "column {:?} lists more than {MAX_CATEGORIES} categories",
                            c.name
                        ));
                    }
                    let mut seen = BTreeSet::new();
                    for cat in &c.categories {
                        if !seen.insert(cat) {
                            return bad(format!(
                                "column {:?} lists category {cat:?} twice",
                                c.name
                            ));
                        }
                    }
                    if c.impute != Impute::None {
                        return bad(format!(
                            "column {:?}: imputation is for numeric columns only",
                            c.name
                        ));
                    }
                }
                ColumnType::Numeric => {}
            }
        }
        let mut feature_names = Vec::new();
        for c in &file.columns {
            match c.kind {
                ColumnType::Numeric => feature_names.push(c.name.clone()),
                ColumnType::Categorical => {
                    feature_names.extend(c.categories.iter().map(|k| format!("{}={k}", c.name)))
                }
            }
        }
        if file.intercept {
            feature_names.push(INTERCEPT.to_owned());
        }
        let mut seen = BTreeSet::new();
        for f in &feature_names {
            if !seen.insert(f.as_str()) {
                return bad(format!(
                    "feature {f:?} arises twice (a column named like a one-hot column or \
                     {INTERCEPT:?})"
                ));
            }
        }
        // The hash of the canonical form: the same schema written with other
        // whitespace or key order hashes the same.
        let canonical = serde_json::to_vec(&file).map_err(|e| Error::Schema(e.to_string()))?;
        let hash = Sha256::digest(&canonical).into();
        Ok(ConsortiumSchema {
            file,
            hash,
            feature_names,
        })
    }

    /// Reads and checks a schema file (JSON).
    pub fn from_path(path: &Path) -> Result<ConsortiumSchema> {
        let text = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Schema(reason) => Error::Schema(format!("{}: {reason}", path.display())),
            other => other,
        })
    }

    /// Parses and checks schema JSON.
    pub fn from_json(bytes: &[u8]) -> Result<ConsortiumSchema> {
        // A schema is small; refuse anything that is not before parsing it.
        if bytes.len() > 1 << 20 {
            return Err(Error::Schema("the schema file is larger than 1 MiB".into()));
        }
        let file: SchemaFile =
            serde_json::from_slice(bytes).map_err(|e| Error::Schema(e.to_string()))?;
        ConsortiumSchema::new(file)
    }

    /// A schema for a data set used "as given": every column numeric, no
    /// scaling, no intercept, no imputation (what nodes without a schema file
    /// train on).
    pub fn as_given(features: &[String], target: &str) -> Result<ConsortiumSchema> {
        ConsortiumSchema::numeric(features, target, false, false)
    }

    /// A schema whose every feature is numeric, without imputation, scaled
    /// when `scale`, with the system's intercept when `intercept`.
    pub fn numeric(
        features: &[String],
        target: &str,
        scale: bool,
        intercept: bool,
    ) -> Result<ConsortiumSchema> {
        ConsortiumSchema::new(SchemaFile {
            format: SCHEMA_FORMAT.into(),
            version: SCHEMA_VERSION,
            target: target.to_owned(),
            columns: features
                .iter()
                .map(|n| ColumnSpec {
                    name: n.clone(),
                    kind: ColumnType::Numeric,
                    categories: Vec::new(),
                    impute: Impute::None,
                })
                .collect(),
            ignore: Vec::new(),
            scale,
            intercept,
        })
    }

    /// The schema file it was made from.
    pub fn file(&self) -> &SchemaFile {
        &self.file
    }

    /// SHA-256 of the canonical JSON form.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The hash as lowercase hex.
    pub fn hash_hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The target column.
    pub fn target(&self) -> &str {
        &self.file.target
    }

    /// Names of the model's features (numeric columns, one-hot columns named
    /// `column=category`, then [`INTERCEPT`] if on), in weight order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Index of the intercept among the features, if the schema adds one.
    pub fn intercept_index(&self) -> Option<usize> {
        self.file.intercept.then(|| self.feature_names.len() - 1)
    }

    /// The numeric columns, in schema order.
    pub fn numeric_columns(&self) -> impl Iterator<Item = &ColumnSpec> {
        self.file
            .columns
            .iter()
            .filter(|c| c.kind == ColumnType::Numeric)
    }

    /// Whether the preprocessing needs pooled statistics (scaling, or mean
    /// imputation of some column).
    pub fn needs_statistics(&self) -> bool {
        self.numeric_columns().next().is_some()
            && (self.file.scale || self.numeric_columns().any(|c| c.impute == Impute::Mean))
    }

    /// Whether every feature the preprocessing makes has a pooled mean square
    /// of at most 1 (standardized numeric columns exactly 1, one-hot columns
    /// their category's share, the intercept 1): then
    /// [`crate::converging_eta`] is a step that converges.
    pub fn unit_scale(&self) -> bool {
        self.file.scale || self.numeric_columns().next().is_none()
    }

    /// Length of the statistics vector: three sums per numeric column.
    pub fn statistics_len(&self) -> usize {
        3 * self.numeric_columns().count()
    }
}

/// Whether a CSV must carry the target column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Training and test data: the target is required in every row.
    Required,
    /// Data to score: the target is read if the header has it.
    Optional,
}

/// A hospital's export read against the schema: numeric cells (NaN where
/// missing and imputation is declared), category indices, and the target.
/// Every cell that exists has been checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTable {
    numeric: Array2<f64>,
    categorical: Array2<u32>,
    y: Option<Array1<f64>>,
}

impl RawTable {
    /// Reads a CSV file against `schema`.
    pub fn from_csv_path(
        path: &Path,
        schema: &ConsortiumSchema,
        target: Target,
    ) -> Result<RawTable> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        RawTable::from_csv_reader(BufReader::new(file), schema, target)
    }

    /// Reads CSV text against `schema`: columns are matched by name in any
    /// order; a missing or undeclared column, an unknown category, a missing
    /// cell without declared imputation and a non-number are errors naming the
    /// column (and the row and line).
    pub fn from_csv_reader<R: Read>(
        reader: R,
        schema: &ConsortiumSchema,
        target: Target,
    ) -> Result<RawTable> {
        let csv = CsvRows::new(reader)?;
        let header = csv.header();
        let position: BTreeMap<&str, usize> = header
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), i))
            .collect();
        let file = schema.file();
        let declared: BTreeSet<&str> = file
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(file.ignore.iter().map(String::as_str))
            .chain(std::iter::once(file.target.as_str()))
            .collect();
        if let Some(extra) = header.iter().find(|h| !declared.contains(h.as_str())) {
            return Err(Error::UnexpectedColumn {
                column: extra.clone(),
            });
        }
        let find = |name: &str| {
            position
                .get(name)
                .copied()
                .ok_or_else(|| Error::MissingColumn {
                    column: name.to_owned(),
                })
        };
        let numeric_cols: Vec<(&ColumnSpec, usize)> = schema
            .numeric_columns()
            .map(|c| find(&c.name).map(|i| (c, i)))
            .collect::<Result<_>>()?;
        let cat_cols: Vec<(&ColumnSpec, usize)> = file
            .columns
            .iter()
            .filter(|c| c.kind == ColumnType::Categorical)
            .map(|c| find(&c.name).map(|i| (c, i)))
            .collect::<Result<_>>()?;
        let target_col = match target {
            Target::Required => Some(find(&file.target)?),
            Target::Optional => position.get(file.target.as_str()).copied(),
        };
        let mut numeric = Vec::new();
        let mut categorical = Vec::new();
        let mut ys = Vec::new();
        let row = csv.for_each(|record, row, line| {
            for (c, i) in &numeric_cols {
                let cell = &record[*i];
                if is_missing(cell) {
                    if c.impute == Impute::Mean {
                        numeric.push(f64::NAN);
                        continue;
                    }
                    return Err(Error::MissingCell {
                        row,
                        line,
                        column: c.name.clone(),
                    });
                }
                numeric.push(parse_number(cell, row, line, &c.name)?);
            }
            for (c, i) in &cat_cols {
                let cell = &record[*i];
                if is_missing(cell) {
                    return Err(Error::MissingCell {
                        row,
                        line,
                        column: c.name.clone(),
                    });
                }
                let k = c.categories.iter().position(|k| k == cell).ok_or_else(|| {
                    Error::UnknownCategory {
                        row,
                        line,
                        column: c.name.clone(),
                        value: cell.to_owned(),
                        categories: c.categories.clone(),
                    }
                })?;
                categorical.push(k as u32);
            }
            if let Some(i) = target_col {
                let cell = &record[i];
                if is_missing(cell) {
                    return Err(Error::MissingCell {
                        row,
                        line,
                        column: file.target.clone(),
                    });
                }
                ys.push(parse_number(cell, row, line, &file.target)?);
            }
            Ok(())
        })?;
        let shape = |e: ndarray::ShapeError| Error::Shape(e.to_string());
        Ok(RawTable {
            numeric: Array2::from_shape_vec((row, numeric_cols.len()), numeric).map_err(shape)?,
            categorical: Array2::from_shape_vec((row, cat_cols.len()), categorical)
                .map_err(shape)?,
            y: target_col.map(|_| Array1::from_vec(ys)),
        })
    }

    /// The table of a data set used "as given" (see [`ConsortiumSchema::as_given`]).
    pub fn from_dataset(ds: &Dataset) -> RawTable {
        RawTable {
            numeric: ds.x().clone(),
            categorical: Array2::zeros((ds.n_rows(), 0)),
            y: Some(ds.y().clone()),
        }
    }

    /// Rows.
    pub fn n_rows(&self) -> usize {
        self.numeric.nrows()
    }

    /// The target values, if the file had the target column.
    pub fn y(&self) -> Option<&Array1<f64>> {
        self.y.as_ref()
    }

    /// A digest of the table's contents (the values, not the file's bytes).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"private-training/raw-table/v1");
        for d in self.numeric.shape().iter().chain(self.categorical.shape()) {
            h.update((*d as u64).to_le_bytes());
        }
        for v in &self.numeric {
            h.update(v.to_bits().to_le_bytes());
        }
        for v in &self.categorical {
            h.update(v.to_le_bytes());
        }
        if let Some(y) = &self.y {
            for v in y {
                h.update(v.to_bits().to_le_bytes());
            }
        }
        h.finalize().into()
    }
}

fn is_missing(cell: &str) -> bool {
    cell.is_empty() || MISSING_MARKERS.contains(&cell)
}

/// This hospital's statistics: for each numeric column in schema order, the
/// count of present cells, their sum and their sum of squares
/// ([`ConsortiumSchema::statistics_len`] values). Summed over hospitals they
/// give the pooled mean and variance; no other use is made of them.
pub fn local_statistics(table: &RawTable) -> Vec<f64> {
    let mut out = Vec::with_capacity(3 * table.numeric.ncols());
    for col in table.numeric.columns() {
        let (mut n, mut s, mut q) = (0.0, 0.0, 0.0);
        for &v in col.iter().filter(|v| !v.is_nan()) {
            n += 1.0;
            s += v;
            q += v * v;
        }
        out.extend([n, s, q]);
    }
    out
}

/// Feature standardization: `(x - mean) / std` per numeric column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    /// The numeric columns scaled, in schema order.
    pub features: Vec<String>,
    /// Their pooled means.
    pub mean: Vec<f64>,
    /// Their pooled population standard deviations (1 where a column is constant,
    /// as scikit-learn leaves it).
    pub std: Vec<f64>,
}

/// Everything that turns a [`RawTable`] into model features: imputation,
/// scaling, one-hot encoding and the intercept. Every node of a run derives the
/// same one from the same pooled statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessor {
    /// Per numeric column (schema order), the value a missing cell takes
    /// (`None`: the column has no imputation).
    pub impute: Vec<Option<f64>>,
    /// The scaling, when the schema scales.
    pub scaler: Option<Scaler>,
}

impl Preprocessor {
    /// The preprocessing of a schema that needs no statistics.
    pub fn without_statistics(schema: &ConsortiumSchema) -> Result<Preprocessor> {
        if schema.needs_statistics() {
            return Err(Error::InvalidParameter {
                name: "statistics",
                reason: "the schema scales or imputes: pooled statistics are needed".into(),
            });
        }
        Ok(Preprocessor {
            impute: schema.numeric_columns().map(|_| None).collect(),
            scaler: None,
        })
    }

    /// The preprocessing from pooled [`local_statistics`] of `n_rows` rows in
    /// all (the mean over present cells; the population variance after mean
    /// imputation, as scikit-learn's imputer followed by its scaler gives).
    pub fn from_statistics(
        schema: &ConsortiumSchema,
        pooled: &[f64],
        n_rows: u64,
    ) -> Result<Preprocessor> {
        let cols: Vec<&ColumnSpec> = schema.numeric_columns().collect();
        let bad = |reason: String| {
            Err(Error::InvalidParameter {
                name: "statistics",
                reason,
            })
        };
        if pooled.len() != 3 * cols.len() {
            return bad(format!(
                "{} values for {} numeric columns",
                pooled.len(),
                cols.len()
            ));
        }
        if n_rows == 0 {
            return bad("no rows".into());
        }
        let total = n_rows as f64;
        let mut impute = Vec::with_capacity(cols.len());
        let (mut means, mut stds) = (Vec::new(), Vec::new());
        for (c, s) in cols.iter().zip(pooled.chunks_exact(3)) {
            // Counts are sums of integers encoded exactly; round off the
            // fixed-point residue.
            let (count, sum, sq) = (s[0].round(), s[1], s[2]);
            if count < 1.0 {
                return bad(format!("column {:?} has no values at any hospital", c.name));
            }
            if count > total + 0.5 || (c.impute == Impute::None && (count - total).abs() > 0.5) {
                return bad(format!(
                    "column {:?} counts {count} values in {n_rows} rows",
                    c.name
                ));
            }
            let mean = sum / count;
            impute.push((c.impute == Impute::Mean).then_some(mean));
            // Sum over present cells of (x - mean)^2 = sq - sum * mean; imputed
            // cells add nothing. Clamped: rounding can make it slightly negative.
            let var = ((sq - sum * mean) / total).max(0.0);
            let std = var.sqrt();
            means.push(mean);
            stds.push(if std == 0.0 { 1.0 } else { std });
        }
        let scaler = schema.file().scale.then(|| Scaler {
            features: cols.iter().map(|c| c.name.clone()).collect(),
            mean: means,
            std: stds,
        });
        Ok(Preprocessor { impute, scaler })
    }

    /// The model's data set: imputed, scaled numeric columns, one-hot columns,
    /// the intercept, the target (which `table` must have).
    pub fn transform(&self, schema: &ConsortiumSchema, table: &RawTable) -> Result<Dataset> {
        let y = table.y.clone().ok_or_else(|| Error::MissingColumn {
            column: schema.target().to_owned(),
        })?;
        let x = self.features(schema, table)?;
        Dataset::new(
            schema.feature_names().to_vec(),
            schema.target().to_owned(),
            x,
            y,
        )
    }

    /// The feature matrix of `table` (no target needed).
    pub fn features(&self, schema: &ConsortiumSchema, table: &RawTable) -> Result<Array2<f64>> {
        let n_num = table.numeric.ncols();
        if self.impute.len() != n_num
            || self
                .scaler
                .as_ref()
                .is_some_and(|s| s.mean.len() != n_num || s.std.len() != n_num)
        {
            return Err(Error::Shape(format!(
                "the preprocessor is for {} numeric columns, the table has {n_num}",
                self.impute.len()
            )));
        }
        let rows = table.n_rows();
        let width = schema.feature_names().len();
        let mut x = Array2::<f64>::zeros((rows, width));
        let mut num_i = 0;
        let mut cat_i = 0;
        let mut out_c = 0;
        for c in &schema.file().columns {
            match c.kind {
                ColumnType::Numeric => {
                    for r in 0..rows {
                        let mut v = table.numeric[[r, num_i]];
                        if v.is_nan() {
                            v = self.impute[num_i].ok_or_else(|| Error::MissingCell {
                                row: r + 1,
                                line: r as u64 + 2,
                                column: c.name.clone(),
                            })?;
                        }
                        if let Some(s) = &self.scaler {
                            v = (v - s.mean[num_i]) / s.std[num_i];
                        }
                        x[[r, out_c]] = v;
                    }
                    num_i += 1;
                    out_c += 1;
                }
                ColumnType::Categorical => {
                    for r in 0..rows {
                        let k = table.categorical[[r, cat_i]] as usize;
                        x[[r, out_c + k]] = 1.0;
                    }
                    cat_i += 1;
                    out_c += c.categories.len();
                }
            }
        }
        if schema.file().intercept {
            x.column_mut(out_c).fill(1.0);
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> ConsortiumSchema {
        ConsortiumSchema::from_json(json.as_bytes()).unwrap()
    }

    const SCHEMA: &str = r#"{"format": "private-training/schema", "version": 1,
        "target": "y",
        "columns": [
            {"name": "age", "type": "numeric"},
            {"name": "smoker", "type": "categorical", "categories": ["no", "yes"]},
            {"name": "bp", "type": "numeric", "impute": "mean"}
        ],
        "ignore": ["id"]}"#;

    #[test]
    fn columns_are_matched_by_name_and_encoded() {
        let s = schema(SCHEMA);
        assert_eq!(
            s.feature_names(),
            ["age", "smoker=no", "smoker=yes", "bp", "intercept"]
        );
        assert!(s.needs_statistics());
        let csv = "y,id,bp,smoker,age\n1,a,120,yes,50\n2,b,,no,30\n3,c,100,no,40\n";
        let t = RawTable::from_csv_reader(csv.as_bytes(), &s, Target::Required).unwrap();
        let stats = local_statistics(&t);
        assert_eq!(
            stats,
            vec![3.0, 120.0, 2500.0 + 900.0 + 1600.0, 2.0, 220.0, 24400.0]
        );
        let p = Preprocessor::from_statistics(&s, &stats, 3).unwrap();
        assert_eq!(p.impute, vec![None, Some(110.0)]);
        let sc = p.scaler.clone().unwrap();
        assert_eq!(sc.mean, vec![40.0, 110.0]);
        // age: population variance (100 + 100 + 0) / 3; bp after imputing
        // 110: (100 + 0 + 100) / 3.
        let sd = (200.0f64 / 3.0).sqrt();
        assert!((sc.std[0] - sd).abs() < 1e-12 && (sc.std[1] - sd).abs() < 1e-12);
        let d = p.transform(&s, &t).unwrap();
        let row1 = d.x().row(1).to_vec();
        assert!((row1[0] + 10.0 / sd).abs() < 1e-12);
        assert_eq!(&row1[1..3], &[1.0, 0.0]);
        assert_eq!(row1[3], 0.0);
        assert_eq!(row1[4], 1.0);
        assert_eq!(d.y().to_vec(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn the_hash_ignores_formatting_but_not_content() {
        let a = schema(SCHEMA);
        let b = schema(&SCHEMA.replace('\n', " ").replace("  ", " "));
        assert_eq!(a.hash(), b.hash());
        let c = schema(&SCHEMA.replace("\"yes\"]", "\"yes\", \"former\"]"));
        assert_ne!(a.hash(), c.hash());
    }

    #[test]
    fn bad_exports_name_the_column() {
        let s = schema(SCHEMA);
        let read = |csv: &str| RawTable::from_csv_reader(csv.as_bytes(), &s, Target::Required);
        assert!(matches!(read("y,id,bp,smoker\n1,a,1,no\n"),
            Err(Error::MissingColumn { column }) if column == "age"));
        assert!(matches!(read("y,id,bp,smoker,age,zip\n1,a,1,no,3,9\n"),
            Err(Error::UnexpectedColumn { column }) if column == "zip"));
        let e = read("y,id,bp,smoker,age\n1,a,1,no,3\n1,a,1,maybe,3\n").unwrap_err();
        assert!(
            matches!(&e, Error::UnknownCategory { row: 2, line: 3, column, .. } if column == "smoker")
        );
        assert!(e.to_string().contains("\"maybe\""), "{e}");
        assert!(matches!(read("y,id,bp,smoker,age\n1,a,1,no,\n"),
            Err(Error::MissingCell { row: 1, line: 2, column }) if column == "age"));
        assert!(matches!(read("y,id,bp,smoker,age\n1,a,1,no,x\n"),
            Err(Error::NonNumeric { column, .. }) if column == "age"));
        assert!(matches!(read("y,id,bp,smoker,age\n,a,1,no,3\n"),
            Err(Error::MissingCell { column, .. }) if column == "y"));
        // Imputed column: missing is fine; "NA" too.
        assert!(read("y,id,bp,smoker,age\n1,a,NA,no,3\n").is_ok());
        // Scoring data may lack the target.
        let t = RawTable::from_csv_reader(
            "id,bp,smoker,age\na,1,no,3\n".as_bytes(),
            &s,
            Target::Optional,
        )
        .unwrap();
        assert!(t.y().is_none());
    }

    #[test]
    fn bad_schemas_are_refused_with_a_reason() {
        let cases = [
            (SCHEMA.replace("private-training/schema", "x"), "format"),
            (
                SCHEMA.replace("\"version\": 1", "\"version\": 2"),
                "version",
            ),
            (SCHEMA.replace("\"bp\"", "\"age\""), "more than once"),
            (
                SCHEMA.replace("[\"no\", \"yes\"]", "[\"no\", \"no\"]"),
                "twice",
            ),
            (SCHEMA.replace("[\"no\", \"yes\"]", "[]"), "no categories"),
            (SCHEMA.replace("\"ignore\"", "\"ignored\""), "unknown field"),
            (
                SCHEMA.replace(
                    "\"age\", \"type\": \"numeric\"",
                    "\"age\", \"type\": \"numeric\", \"categories\": [\"a\"]",
                ),
                "numeric but lists",
            ),
        ];
        for (json, needle) in cases {
            let e = ConsortiumSchema::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn statistics_are_additive_over_hospitals() {
        let s = schema(SCHEMA);
        let a = RawTable::from_csv_reader(
            "y,id,bp,smoker,age\n1,a,120,yes,50\n".as_bytes(),
            &s,
            Target::Required,
        )
        .unwrap();
        let b = RawTable::from_csv_reader(
            "y,id,bp,smoker,age\n2,b,,no,30\n3,c,100,no,40\n".as_bytes(),
            &s,
            Target::Required,
        )
        .unwrap();
        let sum: Vec<f64> = local_statistics(&a)
            .iter()
            .zip(local_statistics(&b))
            .map(|(x, y)| x + y)
            .collect();
        let all = RawTable::from_csv_reader(
            "y,id,bp,smoker,age\n1,a,120,yes,50\n2,b,,no,30\n3,c,100,no,40\n".as_bytes(),
            &s,
            Target::Required,
        )
        .unwrap();
        assert_eq!(sum, local_statistics(&all));
        // A count that does not fit the rows is refused (a non-imputed column must be complete).
        assert!(Preprocessor::from_statistics(&s, &sum, 4).is_err());
    }
}
