//! [`KeyFingerprint`]: the SHA-256 of a public key's modulus, which names the
//! key in messages and errors. Parsing one from hex and its serde form live
//! with the other serializations in the `wire` module.

use num_bigint::BigUint;
use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256 of `n`'s big-endian bytes: identifies a key in messages and errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyFingerprint(pub [u8; 32]);

impl KeyFingerprint {
    /// Fingerprint of modulus `n`.
    pub fn of_modulus(n: &BigUint) -> KeyFingerprint {
        KeyFingerprint(Sha256::digest(n.to_bytes_be()).into())
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// All 64 hex digits.
    pub fn to_hex(&self) -> String {
        crate::hex::hex_encode(&self.0)
    }
}

impl fmt::Display for KeyFingerprint {
    /// The first 16 hex digits (64 bits): enough to tell keys apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex()[..16])
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({})", self.to_hex())
    }
}
