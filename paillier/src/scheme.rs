//! The raw Paillier scheme on plaintexts in `[0, n)`: three encryption paths
//! that all decrypt with the same key, and CRT decryption.
//!
//! * **DJN (default)**: `c = (1 + m n) * h_s^a mod n^2`, where
//!   `h_s = h^n mod n^2` for a random `h` in `Z*_n` fixed per key, and `a` is a
//!   fresh uniform exponent of `2 * security` bits (224 bits at 2048-bit keys,
//!   256 at 3072). `h_s^a` comes from a windowed fixed-base table built once
//!   per key, so an encryption costs about 40 multiplications mod `n^2`
//!   instead of a full `|n|`-bit exponentiation. Security rests on the
//!   short-exponent variant of the decisional composite residuosity assumption
//!   used by Damgard, Jurik and Nielsen ("A generalization of Paillier's
//!   public-key system with applications to electronic voting", IJIS 2010,
//!   section 4.2): that `h_s^a` with short `a` is indistinguishable from a
//!   uniform `n`-th residue. This is a stronger assumption than plain DCR;
//!   callers that want the textbook reduction use
//!   [`PublicKey::encrypt_raw_textbook`].
//! * **Textbook**: `c = (1 + m n) r^n mod n^2` with `r` uniform in `Z*_n`.
//! * **Key holder's CRT**: the same distribution as textbook, with `r^n`
//!   computed modulo `p^2` and `q^2` and recombined.
//!
//! Decryption is python-paillier's CRT: `m_p = L_p(c^(p-1) mod p^2) h_p mod p`,
//! likewise `m_q`, recombined with `p^-1 mod q`; the halves run on two rayon
//! threads. Randomness comes from the OS CSPRNG.

use crate::arith::Monty;
use crate::ciphertext::Ciphertext;
use crate::error::{Error, Result};
use crate::keys::{PrivateKey, PublicKey};
use num_bigint::{BigUint, RandBigInt};
use num_integer::Integer;
use num_traits::One;
use rand::rngs::OsRng;

impl PublicKey {
    fn check_plaintext(&self, m: &BigUint) -> Result<()> {
        if m >= self.n() {
            Err(Error::PlaintextOutOfRange)
        } else {
            Ok(())
        }
    }

    /// A fresh uniform unit of `Z*_n`.
    pub(crate) fn random_unit(&self) -> BigUint {
        let n = self.n();
        loop {
            let r = OsRng.gen_biguint_below(n);
            if !r.is_one() && r > BigUint::from(0u32) && r.gcd(n).is_one() {
                return r;
            }
        }
    }

    /// Encrypts `m` in `[0, n)` with the default DJN fixed-base path (see the
    /// module docs for the assumption). The first call per key builds the
    /// table (shared by all clones of this key).
    pub fn encrypt_raw(&self, m: &BigUint) -> Result<Ciphertext> {
        self.check_plaintext(m)?;
        let c = self.mul_by_mont(&self.g_pow(m), &self.djn_noise_mont());
        Ok(Ciphertext::new_unchecked(self.clone(), c))
    }

    /// Encrypts `m` in `[0, n)` with the textbook path, `r` uniform in `Z*_n`.
    pub fn encrypt_raw_textbook(&self, m: &BigUint) -> Result<Ciphertext> {
        let r = self.random_unit();
        self.encrypt_raw_with_nonce(m, &r)
    }

    /// Textbook encryption with a caller-chosen `r` in `Z*_n`:
    /// `(1 + m n) r^n mod n^2`. For known-answer tests; reusing `r` breaks
    /// semantic security.
    pub fn encrypt_raw_with_nonce(&self, m: &BigUint, r: &BigUint) -> Result<Ciphertext> {
        self.check_plaintext(m)?;
        if r >= self.n() || r.bits() == 0 || !r.gcd(self.n()).is_one() {
            return Err(Error::InvalidCiphertext("nonce r must be a unit of Z_n"));
        }
        let mo = self.monty_n2();
        let rn = mo.pow(r, self.n());
        let c = (self.g_pow(m) * rn) % self.n_squared();
        Ok(Ciphertext::new_unchecked(self.clone(), c))
    }
}

/// `L_p(x) = (x - 1) / p`.
fn l_function(x: &BigUint, p: &BigUint) -> BigUint {
    (x - 1u32) / p
}

impl PrivateKey {
    fn check_key(&self, c: &Ciphertext) -> Result<()> {
        self.public.check_same(c.public_key())
    }

    fn half(mo: &Monty, c: &BigUint, e: &BigUint, p: &BigUint, h: &BigUint) -> BigUint {
        let x = mo.pow(c, e);
        (l_function(&x, p) * h) % p
    }

    fn combine(&self, mp: BigUint, mq: BigUint) -> BigUint {
        // m = mp + ((mq - mp) p^-1 mod q) p
        let q = &self.q;
        let mp_mod_q = &mp % q;
        let diff = if mq >= mp_mod_q {
            mq - mp_mod_q
        } else {
            mq + q - mp_mod_q
        };
        let u = (diff * &self.p_inv_q) % q;
        mp + u * &self.p
    }

    /// Decrypts with CRT, the two halves on two threads. Errors with
    /// [`Error::KeyMismatch`] if `c` is under another key.
    pub fn decrypt_raw(&self, c: &Ciphertext) -> Result<BigUint> {
        self.check_key(c)?;
        let v = c.value();
        let (mp, mq) = rayon::join(
            || Self::half(&self.monty_p2, v, &self.p_minus_1, &self.p, &self.hp),
            || Self::half(&self.monty_q2, v, &self.q_minus_1, &self.q, &self.hq),
        );
        Ok(self.combine(mp, mq))
    }

    /// CRT decryption on the calling thread only.
    pub fn decrypt_raw_single_thread(&self, c: &Ciphertext) -> Result<BigUint> {
        self.check_key(c)?;
        let v = c.value();
        let mp = Self::half(&self.monty_p2, v, &self.p_minus_1, &self.p, &self.hp);
        let mq = Self::half(&self.monty_q2, v, &self.q_minus_1, &self.q, &self.hq);
        Ok(self.combine(mp, mq))
    }

    /// The key holder's encryption: textbook distribution, with `r^n` computed
    /// modulo `p^2` and `q^2` (halves on two threads) and recombined.
    pub fn encrypt_raw_crt(&self, m: &BigUint) -> Result<Ciphertext> {
        let pk = &self.public;
        pk.check_plaintext(m)?;
        let r = pk.random_unit();
        let (xp, xq) = rayon::join(
            || self.monty_p2.pow(&r, &self.n_mod_phi_p2),
            || self.monty_q2.pow(&r, &self.n_mod_phi_q2),
        );
        // CRT mod n^2: x = xp + p^2 ((xq - xp) (p^2)^-1 mod q^2).
        let p2 = self.monty_p2.modulus();
        let q2 = self.monty_q2.modulus();
        let xp_q = &xp % q2;
        let diff = if xq >= xp_q {
            xq - xp_q
        } else {
            xq + q2 - xp_q
        };
        let u = (diff * &self.p2_inv_q2) % q2;
        let rn = xp + u * p2;
        let c = (pk.g_pow(m) * rn) % pk.n_squared();
        Ok(Ciphertext::new_unchecked(pk.clone(), c))
    }
}
