//! [`Ciphertext`]: a raw Paillier ciphertext bound to its public key, and the
//! homomorphic operations on it. A `Ciphertext` that exists is valid: its value
//! is in `[1, n^2)` and is a unit (`gcd(c, n) = 1`).

use crate::error::{Error, Result};
use crate::fingerprint::KeyFingerprint;
use crate::keys::PublicKey;
use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::One;
use std::fmt;

/// A raw Paillier ciphertext `c` in `Z*_{n^2}`, bound to its key.
///
/// Homomorphic results are *not* re-randomized (as in python-paillier, where
/// arithmetic results stay un-obfuscated until published): call
/// [`rerandomize`](Self::rerandomize) before sending a result to anyone who
/// saw its inputs.
#[derive(Clone)]
pub struct Ciphertext {
    pk: PublicKey,
    c: BigUint,
}

impl PartialEq for Ciphertext {
    fn eq(&self, other: &Self) -> bool {
        self.pk == other.pk && self.c == other.c
    }
}
impl Eq for Ciphertext {}

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.c.to_str_radix(16);
        let shown = &hex[..hex.len().min(16)];
        write!(
            f,
            "Ciphertext(key {}, c = 0x{shown}...)",
            self.pk.fingerprint()
        )
    }
}

impl Ciphertext {
    /// For values the library computed itself (always valid by construction).
    pub(crate) fn new_unchecked(pk: PublicKey, c: BigUint) -> Ciphertext {
        debug_assert!(&c < pk.n_squared() && c.bits() > 0);
        Ciphertext { pk, c }
    }

    /// Validates `c` under `pk`: `1 <= c < n^2` and `gcd(c, n) = 1`.
    pub fn from_biguint(pk: &PublicKey, c: BigUint) -> Result<Ciphertext> {
        if c.bits() == 0 {
            return Err(Error::InvalidCiphertext("c = 0"));
        }
        if &c >= pk.n_squared() {
            return Err(Error::InvalidCiphertext("c >= n^2"));
        }
        if !c.gcd(pk.n()).is_one() {
            return Err(Error::InvalidCiphertext("gcd(c, n) != 1"));
        }
        Ok(Ciphertext { pk: pk.clone(), c })
    }

    /// The value `c`.
    pub fn value(&self) -> &BigUint {
        &self.c
    }

    /// The key this ciphertext is under.
    pub fn public_key(&self) -> &PublicKey {
        &self.pk
    }

    /// Fingerprint of the key this ciphertext is under.
    pub fn key_fingerprint(&self) -> KeyFingerprint {
        self.pk.fingerprint()
    }

    /// `a b mod n^2` (two Montgomery multiplications: cheaper than a
    /// multiply-and-divide at these sizes).
    fn mulmod(&self, b: &BigUint) -> BigUint {
        let mo = self.pk.monty_n2();
        let k = mo.limbs();
        let a = crate::arith::to_limbs(&self.c, k);
        let bb = crate::arith::to_limbs(b, k);
        let mut t = vec![0u64; k];
        mo.mul_into(&a, &bb, &mut t);
        let mut out = vec![0u64; k];
        mo.mul_into(&t, mo.r2(), &mut out);
        crate::arith::from_limbs(&out)
    }

    /// Homomorphic addition: decrypts to `m1 + m2 mod n`.
    pub fn add(&self, other: &Ciphertext) -> Result<Ciphertext> {
        self.pk.check_same(&other.pk)?;
        Ok(Ciphertext::new_unchecked(
            self.pk.clone(),
            self.mulmod(&other.c),
        ))
    }

    /// Adds a plaintext: decrypts to `m + k mod n` (`k` is reduced mod `n`).
    pub fn add_plain(&self, k: &BigUint) -> Result<Ciphertext> {
        let k = k % self.pk.n();
        let gk = self.pk.g_pow(&k);
        Ok(Ciphertext::new_unchecked(self.pk.clone(), self.mulmod(&gk)))
    }

    /// Multiplies by a plaintext: decrypts to `m k mod n` (`k` is reduced mod `n`).
    pub fn mul_plain(&self, k: &BigUint) -> Result<Ciphertext> {
        let k = k % self.pk.n();
        let c = self.pk.monty_n2().pow(&self.c, &k);
        Ok(Ciphertext::new_unchecked(self.pk.clone(), c))
    }

    /// Negation: decrypts to `-m mod n` (the inverse of `c` mod `n^2`).
    pub fn neg(&self) -> Ciphertext {
        // Variable time in c and n^2, both public.
        let inv = crate::arith::mod_inverse_vartime(&self.c, self.pk.n_squared())
            .expect("a valid ciphertext is a unit mod n^2");
        Ciphertext::new_unchecked(self.pk.clone(), inv)
    }

    /// Homomorphic subtraction: decrypts to `m1 - m2 mod n`.
    pub fn sub(&self, other: &Ciphertext) -> Result<Ciphertext> {
        self.pk.check_same(&other.pk)?;
        self.add(&other.neg())
    }

    /// The same plaintext under fresh randomness (multiplies by a fresh DJN
    /// `n`-th residue), unlinkable to `self`.
    pub fn rerandomize(&self) -> Ciphertext {
        let c = self.pk.mul_by_mont(&self.c, &self.pk.djn_noise_mont());
        Ciphertext::new_unchecked(self.pk.clone(), c)
    }

    /// Wraps a value that is known to be valid for this key (library-internal).
    pub(crate) fn with_value(&self, c: BigUint) -> Ciphertext {
        Ciphertext::new_unchecked(self.pk.clone(), c)
    }
}

impl<'a> std::ops::Add<&'a Ciphertext> for &'a Ciphertext {
    type Output = Result<Ciphertext>;
    fn add(self, rhs: &'a Ciphertext) -> Result<Ciphertext> {
        Ciphertext::add(self, rhs)
    }
}
