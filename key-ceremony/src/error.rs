//! The ceremony's one error type, grouped by whose fault it is: the plan the
//! dealer asked for, a file on disk (always named), the key material itself.

use std::path::PathBuf;

/// Errors of planning, dealing, writing and loading a threshold key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- The plan (local misuse: never caused by a file's content).
    /// A hospital name is not usable (it must be the hospital's certificate
    /// name in the consortium roster).
    #[error("invalid hospital name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A hospital was named twice.
    #[error("hospital {0:?} is named twice")]
    DuplicateHospital(String),
    /// Too few hospitals for a threshold key that survives a dropout.
    #[error(
        "{hospitals} hospital(s): a threshold key needs at least 3 (a threshold of at least 2 \
         and at most n - 1)"
    )]
    TooFewHospitals {
        /// How many were named.
        hospitals: usize,
    },
    /// The threshold is outside `[2, n - 1]`.
    #[error(
        "threshold {threshold} with {hospitals} hospitals: it must be at least 2 (no single \
         hospital decrypts) and at most {} (n - 1, so that one hospital may drop out)",
        hospitals - 1
    )]
    Threshold {
        /// The threshold asked for.
        threshold: u32,
        /// How many hospitals.
        hospitals: usize,
    },
    /// The key size is outside what the federation accepts.
    #[error("key size {bits} bits: {reason}")]
    KeyBits {
        /// The size asked for.
        bits: usize,
        /// The accepted range.
        reason: String,
    },

    // --- Files (always named).
    /// A file the ceremony would write exists already; nothing was written.
    #[error("{path} exists; a ceremony never overwrites a key file (choose a new directory)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A share file may be read or written by group or others.
    #[error(
        "{path} holds a key share but has mode {mode:03o}; only its owner may read it (run \
         `chmod 600 {path}`)"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file's content is malformed or its key material does not check.
    #[error("{path}: {source}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What the parser or the key checks found.
        source: paillier::Error,
    },
    /// A file is well formed but does not belong with the others.
    #[error("{path}: {reason}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },

    // --- Dealing.
    /// The dealing itself failed.
    #[error("dealing the key: {0}")]
    Deal(#[source] paillier::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
