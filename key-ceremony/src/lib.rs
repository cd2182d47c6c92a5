//! The threshold Paillier key ceremony of a federation: a dealer, who is not
//! the coordinator, deals a `t`-of-`n` key ([`paillier::threshold`]) with one
//! share per hospital, writes the files, and forgets the factorization.
//!
//! - [`Plan`]: the ceremony's parameters, checked before anything is dealt or
//!   written (hospital names, a threshold of at least 2 and at most `n - 1`,
//!   the majority by default, the key size).
//! - [`files`]: the public file every node reads (the Paillier public key, the
//!   threshold, the hospitals in party order and their verification keys),
//!   one share file per hospital (0600, created new, never overwriting), and
//!   their checked loading (a share file others may read is refused; every
//!   error names its file).
//! - the `key-ceremony` binary (`src/bin/key-ceremony.rs`): `deal`.
//!
//! Trust: the dealer sees the factorization while it deals. [`paillier::threshold::deal`]
//! wipes it before returning and this crate wipes the share texts it writes,
//! but a dealer that kept a copy, or a dealer's machine that was compromised
//! at that moment, could decrypt everything later. The share files sit in the
//! dealer's output directory until delivered: any `t` of them decrypt.
//!
//! What this crate does not own: delivering share files to the hospitals,
//! the decryption rules (the `protocol` crate's `threshold` module), and
//! dealer-free key generation (`docs/threshold.md`). It depends on no network
//! crate, so the ceremony can run on an offline machine.

mod error;
pub mod files;

pub use error::{Error, Result};

use rand::{CryptoRng, RngCore};

/// A ceremony's checked parameters. Existence means: at least 3 distinct,
/// valid hospital names, `2 <= threshold <= n - 1`, and a key size the
/// federation accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    hospitals: Vec<String>,
    threshold: u32,
    key_bits: usize,
}

/// The default threshold for `hospitals` hospitals: a strict majority.
pub fn default_threshold(hospitals: usize) -> u32 {
    (hospitals / 2 + 1) as u32
}

/// Checks a hospital name: the rule of the consortium's certificate names
/// (1 to 63 characters of `a-z`, `0-9` and `-`, no `-` at either end), so
/// that it is also a safe file name.
pub fn validate_hospital_name(name: &str) -> Result<()> {
    match node::pki::node_name_problem(name) {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Plan {
    /// Checks a plan: `hospitals` in party order (the first is party 1),
    /// `threshold` (default: the majority), `key_bits` (an even size from
    /// [`paillier::MIN_KEY_BITS`] to [`paillier::MAX_KEY_BITS`]).
    pub fn new(hospitals: Vec<String>, threshold: Option<u32>, key_bits: usize) -> Result<Plan> {
        for (i, h) in hospitals.iter().enumerate() {
            validate_hospital_name(h)?;
            if hospitals[..i].contains(h) {
                return Err(Error::DuplicateHospital(h.clone()));
            }
        }
        let n = hospitals.len();
        if n < 3 {
            return Err(Error::TooFewHospitals { hospitals: n });
        }
        if n > paillier::threshold::MAX_PARTIES as usize {
            return Err(Error::Threshold {
                threshold: threshold.unwrap_or_else(|| default_threshold(n)),
                hospitals: n,
            });
        }
        let threshold = threshold.unwrap_or_else(|| default_threshold(n));
        if threshold < 2 || threshold as usize > n - 1 {
            return Err(Error::Threshold {
                threshold,
                hospitals: n,
            });
        }
        if !(paillier::MIN_KEY_BITS..=paillier::MAX_KEY_BITS).contains(&key_bits)
            || !key_bits.is_multiple_of(2)
        {
            return Err(Error::KeyBits {
                bits: key_bits,
                reason: format!(
                    "an even size from {} to {} is required",
                    paillier::MIN_KEY_BITS,
                    paillier::MAX_KEY_BITS
                ),
            });
        }
        Ok(Plan {
            hospitals,
            threshold,
            key_bits,
        })
    }

    /// The hospitals in party order (index 0 is party 1).
    pub fn hospitals(&self) -> &[String] {
        &self.hospitals
    }

    /// Partial decryptions needed to decrypt.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Bits of the modulus.
    pub fn key_bits(&self) -> usize {
        self.key_bits
    }

    /// Deals the key: the public part and one share per hospital, in party
    /// order. The factorization is wiped before this returns.
    pub fn deal<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> Result<(
        paillier::threshold::ThresholdKey,
        Vec<paillier::threshold::KeyShare>,
    )> {
        paillier::threshold::deal(
            self.key_bits,
            self.threshold,
            self.hospitals.len() as u32,
            rng,
        )
        .map_err(Error::Deal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("hospital-{i}")).collect()
    }

    #[test]
    fn the_default_threshold_is_the_majority_and_stays_below_n() {
        for (n, t) in [(3, 2), (4, 3), (5, 3), (6, 4), (8, 5)] {
            let p = Plan::new(names(n), None, 2048).unwrap();
            assert_eq!(p.threshold(), t, "{n}");
        }
    }

    #[test]
    fn unusable_plans_are_refused_naming_the_fault() {
        let e = Plan::new(names(2), None, 2048).unwrap_err();
        assert!(matches!(e, Error::TooFewHospitals { hospitals: 2 }), "{e}");
        for t in [0, 1, 5, 6] {
            let e = Plan::new(names(5), Some(t), 2048).unwrap_err();
            assert!(matches!(e, Error::Threshold { threshold, hospitals: 5 } if threshold == t));
            assert!(e.to_string().contains("at most 4"), "{e}");
        }
        let e = Plan::new(names(3), None, 1024).unwrap_err();
        assert!(matches!(e, Error::KeyBits { bits: 1024, .. }), "{e}");
        let e = Plan::new(names(3), None, 2049).unwrap_err();
        assert!(matches!(e, Error::KeyBits { .. }), "{e}");
        let mut dup = names(3);
        dup.push("hospital-2".into());
        let e = Plan::new(dup, None, 2048).unwrap_err();
        assert!(matches!(e, Error::DuplicateHospital(ref h) if h == "hospital-2"));
        for bad in ["", "Hospital", "../x", "-a", "a b"] {
            let mut v = names(3);
            v[1] = bad.into();
            let e = Plan::new(v, None, 2048).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e}");
        }
    }
}
