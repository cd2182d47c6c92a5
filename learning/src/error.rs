//! The crate's one error type: every way reading data or running the cleartext
//! learning maths can fail, with the row and column for bad CSV input.

use std::path::PathBuf;

use crate::data::Schema;

/// Everything that can go wrong in `learning`.
///
/// CSV rows are numbered from 1 for the first *data* row (the header is not
/// counted); `line` is the 1-based line of the file, header included, so a user
/// can jump straight to it in an editor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CSV reader itself failed (invalid UTF-8, I/O while reading, writer failure).
    #[error("CSV error{}: {source}", row.map(|r| format!(" at data row {r}")).unwrap_or_default())]
    Csv {
        /// The 1-based data row being read, when known.
        row: Option<usize>,
        /// The underlying CSV error.
        #[source]
        source: csv::Error,
    },
    /// The input has no header row at all.
    #[error("the CSV is empty: expected a header row naming the columns")]
    EmptyFile,
    /// The header has a blank column name.
    #[error("header column {column_number} has an empty name")]
    EmptyColumnName {
        /// 1-based position of the column in the header.
        column_number: usize,
    },
    /// Two header columns share a name.
    #[error("header names column {column:?} more than once")]
    DuplicateColumn {
        /// The repeated name.
        column: String,
    },
    /// The named target column is not in the header.
    #[error("target column {target:?} not found; the header has columns {columns:?}")]
    MissingTarget {
        /// The target column asked for.
        target: String,
        /// The columns the header does have.
        columns: Vec<String>,
    },
    /// The header has only the target column: nothing to learn from.
    #[error("no feature columns: the CSV has only the target column {target:?}")]
    NoFeatures {
        /// The target column.
        target: String,
    },
    /// The header is there but no data row follows.
    #[error("the CSV has a header but no data rows")]
    NoRows,
    /// A data row has a different number of cells than the header.
    #[error("row {row} (line {line}): expected {expected} cells like the header, found {found}")]
    RaggedRow {
        /// 1-based data row.
        row: usize,
        /// 1-based line in the file.
        line: u64,
        /// Number of header columns.
        expected: usize,
        /// Number of cells in this row.
        found: usize,
    },
    /// A cell is empty.
    #[error("row {row} (line {line}), column {column:?}: missing value (empty cell)")]
    MissingCell {
        /// 1-based data row.
        row: usize,
        /// 1-based line in the file.
        line: u64,
        /// Name of the column.
        column: String,
    },
    /// A cell is not a finite number.
    #[error("row {row} (line {line}), column {column:?}: {value:?} is not a finite number")]
    NonNumeric {
        /// 1-based data row.
        row: usize,
        /// 1-based line in the file.
        line: u64,
        /// Name of the column.
        column: String,
        /// The offending cell text.
        value: String,
    },
    /// A value given to [`crate::Dataset::new`] is NaN or infinite.
    #[error("row {row}, column {column:?}: value {value} is not finite")]
    NonFinite {
        /// 1-based data row.
        row: usize,
        /// Name of the column.
        column: String,
        /// The value.
        value: f64,
    },
    /// Array or name dimensions do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A federation (or reference run) was asked to run with no hospitals.
    #[error("no hospitals given")]
    NoHospitals,
    /// A hospital's data set has a different schema than the first hospital's.
    #[error("hospital {hospital} has schema {found:?}, expected {expected:?} (hospitals must agree on features and target)")]
    SchemaMismatch {
        /// 1-based hospital number.
        hospital: usize,
        /// The first hospital's schema.
        expected: Schema,
        /// This hospital's schema.
        found: Schema,
    },
    /// A hyper-parameter is out of range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A consortium schema file is malformed or inconsistent.
    #[error("schema: {0}")]
    Schema(String),
    /// A column the schema declares is not in the header.
    #[error("column {column:?} of the consortium schema is missing from the header")]
    MissingColumn {
        /// The column.
        column: String,
    },
    /// The header has a column the schema neither uses nor ignores.
    #[error("column {column:?} is not in the consortium schema (declare it, or list it under \"ignore\")")]
    UnexpectedColumn {
        /// The column.
        column: String,
    },
    /// A categorical cell holds a value outside the declared categories.
    #[error("row {row} (line {line}), column {column:?}: {value:?} is not one of the declared categories {categories:?}")]
    UnknownCategory {
        /// 1-based data row.
        row: usize,
        /// 1-based line in the file.
        line: u64,
        /// The column.
        column: String,
        /// The cell's text.
        value: String,
        /// The schema's categories for the column.
        categories: Vec<String>,
    },
    /// The normal equations of a least-squares fit are singular (collinear features).
    #[error("least squares: the normal equations are singular (collinear or constant features)")]
    Singular,
}

impl Error {
    /// The message without any value of the data (a cell's text or number),
    /// for telling another party what went wrong: the row, column and kind
    /// of error stay.
    pub fn without_values(&self) -> String {
        match self {
            Error::NonNumeric {
                row, line, column, ..
            } => format!("row {row} (line {line}), column {column:?}: not a finite number"),
            Error::NonFinite { row, column, .. } => {
                format!("row {row}, column {column:?}: a value is not finite")
            }
            Error::UnknownCategory {
                row,
                line,
                column,
                categories,
                ..
            } => format!(
                "row {row} (line {line}), column {column:?}: not one of the declared categories \
                 {categories:?}"
            ),
            other => other.to_string(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_for_other_parties_hold_no_value() {
        let errors = [
            Error::NonNumeric {
                row: 5,
                line: 6,
                column: "bmi".into(),
                value: "patient-7731".into(),
            },
            Error::NonFinite {
                row: 2,
                column: "bp".into(),
                value: 7731.0,
            },
            Error::UnknownCategory {
                row: 1,
                line: 2,
                column: "smoker".into(),
                value: "patient-7731".into(),
                categories: vec!["never".into(), "current".into()],
            },
        ];
        for e in &errors {
            let text = e.without_values();
            assert!(e.to_string().contains("7731"), "{e}");
            assert!(!text.contains("7731"), "{text}");
            assert!(text.contains("row ") && text.contains("column "), "{text}");
        }
        assert!(errors[2].without_values().contains("\"never\""));
        assert_eq!(Error::NoRows.without_values(), Error::NoRows.to_string());
    }
}
