//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in `fhe-trainer`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV file is malformed (bad header, ragged row, text cell, missing value, ...).
    #[error("CSV {what}")]
    Csv {
        /// What was wrong, with row and column.
        what: String,
    },
    /// A label that is not a class index was found (0 or 1 for binary data).
    #[error("row {row}: label {value:?} in column {column:?} is not {}", if *classes == 2 { "0 or 1".to_string() } else { format!("an integer in 0..{classes}") })]
    BadLabel {
        /// Number of classes allowed.
        classes: u8,
        /// 1-based data row (header not counted).
        row: usize,
        /// Name of the label column.
        column: String,
        /// The offending cell.
        value: String,
    },
    /// The requested target column does not exist.
    #[error("target column {0:?} not found in the CSV header")]
    NoSuchColumn(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Input data does not match the model's shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The model has not been fitted yet.
    #[error("model is not fitted")]
    NotFitted,
    /// An encrypted operation was requested without the keys it needs.
    #[error("missing key: {0}")]
    MissingKey(&'static str),
    /// A file has the wrong magic, kind or version.
    #[error("bad file header: {0}")]
    Header(String),
    /// A file exceeds its size limit.
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Deserialization of a payload failed.
    #[error("cannot decode {what}: {detail}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// Serialization of a payload failed.
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        detail: String,
    },
    /// Files from different key sets or circuit plans were combined.
    #[error("incompatible inputs: {0}")]
    Incompatible(String),
    /// A secret file (client key, owner file) can be read by others.
    #[error("{path} has mode {mode:o}: others may read this secret; run chmod 600 on it")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A decrypted block overflowed into tfhe's padding bit: the circuit
    /// plan is wrong or the ciphertext was tampered with.
    #[error("decrypted block {value} is outside the 4-bit block space (padding bit set)")]
    Overflow {
        /// The decoded value, modulo 32.
        value: u64,
    },
    /// The plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
