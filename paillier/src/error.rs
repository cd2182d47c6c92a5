//! The crate's single error type. Every rejection the library makes, whether of
//! local arguments or of bytes received from a peer, is one of these variants.

use crate::fingerprint::KeyFingerprint;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Threshold parameters (parties, threshold) are unusable.
    #[error("threshold key: {0}")]
    ThresholdParams(String),
    /// A threshold key share or partial decryption is invalid.
    #[error("party {index}: {reason}")]
    InvalidShare {
        /// The party (1-based) whose share or partial decryption it is.
        index: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Fewer valid partial decryptions than the threshold.
    #[error("{got} valid partial decryption(s), {needed} needed ({} missing)", needed - got)]
    TooFewShares {
        /// The key's threshold.
        needed: u32,
        /// Valid ones given.
        got: u32,
    },
    /// A key size was requested or parsed that the calling API does not allow
    /// (below the 2048-bit `MIN_KEY_BITS` on the normal path, or odd / tiny on
    /// the insecure test path).
    #[error("key size {bits} bits is not allowed: {reason}")]
    KeySize {
        /// The offending size in bits.
        bits: usize,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A modulus or prime factor failed validation (even, not a product of two
    /// primes of the stated size, inconsistent private key, ...).
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// Two operands (or an operand and a key) belong to different public keys.
    #[error("operands are under different keys: expected key {expected}, found key {found}")]
    KeyMismatch {
        /// Fingerprint of the key the operation runs under.
        expected: KeyFingerprint,
        /// Fingerprint of the other operand's key.
        found: KeyFingerprint,
    },
    /// A plaintext was outside `[0, n)`.
    #[error("plaintext out of range: must be in [0, n)")]
    PlaintextOutOfRange,
    /// A ciphertext value was outside `[1, n^2)` or not a unit (`gcd(c, n) != 1`).
    #[error("invalid ciphertext: {0}")]
    InvalidCiphertext(&'static str),
    /// A number does not fit python-paillier's encoding (|int_rep| > max_int), or
    /// a decrypted encoding lies in the overflow band between the positive and
    /// negative ranges.
    #[error("encoding overflow: {0}")]
    EncodingOverflow(&'static str),
    /// A non-finite float (NaN or infinity) cannot be encoded.
    #[error("cannot encode non-finite value {0}")]
    NonFinite(f64),
    /// An exponent fell outside `[MIN_EXPONENT, MAX_EXPONENT]`.
    #[error("exponent {exponent} out of range [{min}, {max}]")]
    ExponentOutOfRange {
        /// The offending exponent.
        exponent: i64,
        /// Smallest allowed exponent.
        min: i32,
        /// Largest allowed exponent.
        max: i32,
    },
    /// A packing specification is unusable with this key.
    #[error("invalid packing spec: {0}")]
    PackingSpec(String),
    /// A value does not fit its packing slot (|v| >= 2^int_bits or non-finite).
    #[error("value {value} at index {index} does not fit its packing slot (|v| < 2^{int_bits} required)")]
    SlotOverflow {
        /// Position of the value in the input vector.
        index: usize,
        /// The value.
        value: f64,
        /// The spec's integer bits.
        int_bits: u32,
    },
    /// More addends were claimed (or summed) than the packing spec has headroom for.
    #[error("{addends} addends exceed the packing spec's max_addends {max_addends}")]
    TooManyAddends {
        /// Claimed number of addends.
        addends: u64,
        /// The spec's limit.
        max_addends: u64,
    },
    /// A decrypted packed slot is outside the range the addend count allows.
    #[error("packed slot {index} decoded out of range (corrupted or more addends than declared)")]
    SlotOutOfRange {
        /// Slot index in the decoded vector.
        index: usize,
    },
    /// Packed vectors or plaintext lists of inconsistent lengths.
    #[error("length mismatch: {0}")]
    LengthMismatch(String),
    /// Bytes of a compact wire encoding could not be parsed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The type being decoded.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("OS random number generator failed: {0}")]
    Rng(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Error {
        Error::Malformed {
            what,
            reason: reason.into(),
        }
    }
}
