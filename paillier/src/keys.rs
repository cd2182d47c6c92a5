//! Key types: [`PublicKey`] (with `g = n + 1`, `n^2`, its Montgomery context and
//! the lazily built DJN fixed-base table), [`PrivateKey`] (the CRT constants,
//! zeroized on drop, `Debug` without secrets), [`KeyFingerprint`], and key
//! generation.

use crate::arith::{from_limbs, inverse_mod_prime, lift_inverse, to_limbs, FixedBaseTable, Monty};
use crate::error::{Error, Result};
pub use crate::fingerprint::KeyFingerprint;
use crate::prime;
use num_bigint::{BigUint, RandBigInt};
use num_integer::Integer;
use num_traits::{One, Zero};
use rand::rngs::OsRng;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Default modulus size for [`generate_keypair`] callers that have no
/// reason to choose: 128-bit security per NIST SP 800-57.
pub const DEFAULT_KEY_BITS: usize = 3072;
/// Smallest modulus the normal (non-test) paths accept: 112-bit security.
pub const MIN_KEY_BITS: usize = 2048;
/// Largest modulus any path accepts (bounds the work a peer can cause).
pub const MAX_KEY_BITS: usize = 8192;
/// Smallest modulus even the `_insecure_for_tests` paths accept (feature
/// `hazmat-insecure-small-keys`).
#[cfg(feature = "hazmat-insecure-small-keys")]
pub const MIN_INSECURE_KEY_BITS: usize = 64;

/// Security level in bits of an `n`-bit modulus per NIST SP 800-57 Part 1
/// Table 2 (factoring-based: 1024 -> 80, 2048 -> 112, 3072 -> 128,
/// 7680 -> 192, 15360 -> 256). Sizes between rows get the lower row.
pub fn security_level(bits: usize) -> usize {
    match bits {
        0..=2047 => 80,
        2048..=3071 => 112,
        3072..=7679 => 128,
        7680..=15359 => 192,
        _ => 256,
    }
}

/// The DJN fixed-base data of a key: `h_s = h^n mod n^2` for a random
/// `h` in `Z*_n`, and its windowed table for exponents of `2 * security` bits.
pub(crate) struct DjnTable {
    pub(crate) table: FixedBaseTable,
}

/// The DJN base `h_s = h^n mod n^2` and the noise exponents' length: what an
/// encryption needs before (or without) the table.
pub(crate) struct DjnBase {
    pub(crate) hs: BigUint,
    pub(crate) exponent_bits: usize,
}

pub(crate) struct PublicKeyInner {
    pub(crate) n: BigUint,
    pub(crate) n_squared: BigUint,
    /// python-paillier's `max_int = n // 3 - 1`.
    pub(crate) max_int: BigUint,
    pub(crate) fingerprint: KeyFingerprint,
    pub(crate) monty_n2: Monty,
    pub(crate) djn_base: OnceLock<DjnBase>,
    pub(crate) djn: OnceLock<DjnTable>,
    /// Set by [`PublicKey::precompute`]: the table is being built, so an
    /// encryption that finds it missing does not wait for it.
    pub(crate) djn_building: std::sync::atomic::AtomicBool,
}

/// A Paillier public key (`n`, with `g = n + 1`). Cheap to clone: the modulus,
/// its derived constants and the DJN table are shared behind an `Arc`, and the
/// table is built once, on first encryption, for all clones and threads.
///
/// A `PublicKey` that exists has been validated: `n` is odd, of an allowed size,
/// and has no small prime factor.
#[derive(Clone)]
pub struct PublicKey {
    pub(crate) inner: Arc<PublicKeyInner>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.n == other.inner.n
    }
}
impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.bits())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

fn check_modulus(n: &BigUint, min_bits: usize) -> Result<()> {
    let bits = n.bits() as usize;
    if bits < min_bits {
        return Err(Error::KeySize {
            bits,
            reason: if min_bits == MIN_KEY_BITS {
                "below the 2048-bit minimum (use the _insecure_for_tests API for small test keys)"
            } else {
                "below the minimum for test keys"
            },
        });
    }
    if bits > MAX_KEY_BITS {
        return Err(Error::KeySize {
            bits,
            reason: "above the 8192-bit maximum",
        });
    }
    if !n.bit(0) {
        return Err(Error::InvalidKey("modulus n is even"));
    }
    // A real modulus is a product of two large primes: reject any small factor.
    for &p in prime::small_primes().iter().skip(1).take(2000) {
        if (n % p).is_zero() {
            return Err(Error::InvalidKey("modulus n has a small prime factor"));
        }
    }
    Ok(())
}

impl PublicKey {
    /// Builds a public key from its modulus, validating it: odd, between
    /// [`MIN_KEY_BITS`] and [`MAX_KEY_BITS`] bits, no small prime factor.
    pub fn from_n(n: BigUint) -> Result<PublicKey> {
        check_modulus(&n, MIN_KEY_BITS)?;
        Ok(Self::build(n))
    }

    /// Like [`from_n`](Self::from_n) but accepts moduli down to
    /// [`MIN_INSECURE_KEY_BITS`]. INSECURE: for tests and known-answer vectors only
    /// (feature `hazmat-insecure-small-keys`).
    #[cfg(feature = "hazmat-insecure-small-keys")]
    pub fn from_n_insecure_for_tests(n: BigUint) -> Result<PublicKey> {
        check_modulus(&n, MIN_INSECURE_KEY_BITS)?;
        Ok(Self::build(n))
    }

    /// The public key of a modulus the threshold dealer just built from two
    /// safe primes of the requested size (checked there, not here).
    pub(crate) fn from_dealt_modulus(n: BigUint) -> PublicKey {
        Self::build(n)
    }

    fn build(n: BigUint) -> PublicKey {
        let n_squared = &n * &n;
        let monty_n2 = Monty::new(&n_squared).expect("n odd, so n^2 odd");
        let max_int = &n / 3u32 - 1u32;
        let fingerprint = KeyFingerprint::of_modulus(&n);
        PublicKey {
            inner: Arc::new(PublicKeyInner {
                n,
                n_squared,
                max_int,
                fingerprint,
                monty_n2,
                djn_base: OnceLock::new(),
                djn: OnceLock::new(),
                djn_building: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The modulus `n`.
    pub fn n(&self) -> &BigUint {
        &self.inner.n
    }

    /// `n^2`, the ciphertext modulus.
    pub fn n_squared(&self) -> &BigUint {
        &self.inner.n_squared
    }

    /// The generator `g = n + 1`.
    pub fn g(&self) -> BigUint {
        &self.inner.n + 1u32
    }

    /// python-paillier's `max_int = n // 3 - 1`: encodings above it (and below
    /// `n - max_int`) are reported as overflow.
    pub fn max_int(&self) -> &BigUint {
        &self.inner.max_int
    }

    /// Bit length of `n`.
    pub fn bits(&self) -> usize {
        self.inner.n.bits() as usize
    }

    /// Security level of this modulus in bits (NIST SP 800-57).
    pub fn security_bits(&self) -> usize {
        security_level(self.bits())
    }

    /// SHA-256 of `n`.
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.inner.fingerprint
    }

    /// Errors with [`Error::KeyMismatch`] unless `other` is this key.
    pub(crate) fn check_same(&self, other: &PublicKey) -> Result<()> {
        if self == other {
            Ok(())
        } else {
            Err(Error::KeyMismatch {
                expected: self.fingerprint(),
                found: other.fingerprint(),
            })
        }
    }

    pub(crate) fn monty_n2(&self) -> &Monty {
        &self.inner.monty_n2
    }

    /// `(1 + m n) mod n^2` for `m < n`: `g^m` with `g = n + 1`, no division needed.
    pub(crate) fn g_pow(&self, m: &BigUint) -> BigUint {
        m * self.n() + 1u32
    }

    /// A fresh random `n`-th residue `h_s^a` (DJN), in Montgomery form mod `n^2`.
    pub(crate) fn djn_noise_mont(&self) -> Vec<u64> {
        use std::sync::atomic::Ordering;
        let base = self.djn_base();
        let a = OsRng.gen_biguint(base.exponent_bits as u64);
        if let Some(djn) = self.inner.djn.get() {
            return djn.table.pow_mont(&a);
        }
        if self.inner.djn_building.load(Ordering::Acquire) {
            // The table is being built on another thread (`precompute`): one
            // regular exponentiation of `h_s` (about 8x the table's cost, a
            // few milliseconds) instead of waiting tens of milliseconds for
            // it. Same distribution, same constant-time treatment of `a`.
            let mo = self.monty_n2();
            return mo.to_mont(&mo.pow(&base.hs, &a));
        }
        self.djn().table.pow_mont(&a)
    }

    /// `x * noise mod n^2` where `noise` is in Montgomery form: one
    /// multiplication, result in normal form.
    pub(crate) fn mul_by_mont(&self, x: &BigUint, noise_mont: &[u64]) -> BigUint {
        let mo = self.monty_n2();
        let k = mo.limbs();
        let xl = to_limbs(x, k);
        let mut out = vec![0u64; k];
        mo.mul_into(&xl, noise_mont, &mut out);
        from_limbs(&out)
    }

    /// Builds the DJN table now instead of on first encryption (it takes tens of
    /// milliseconds and a few MiB per key). Encryptions on other threads
    /// meanwhile do not wait for it: each takes one regular exponentiation
    /// instead (a few milliseconds at 2048 bits) until the table is there.
    pub fn precompute(&self) {
        self.build_table(FixedBaseTable::DEFAULT_WINDOW);
    }

    /// As [`precompute`](Self::precompute), with the table's window sized for
    /// about `encryptions` encryptions under this key: building a `w`-bit
    /// window costs `2^w - 2` multiplications per window, and each
    /// encryption one multiplication plus a constant-time scan of `2^w`
    /// entries per window (about `2^w / (8 k)` of a multiplication for `k`
    /// limbs); the window minimizing the total (at most the
    /// default, 6) is used. A run of 50 one-ciphertext rounds takes `w = 4`,
    /// a third of the default's building work, where the default would
    /// spend more on the table than it saves. No effect once a table exists.
    pub fn precompute_for(&self, encryptions: u64) {
        let bits = self.djn_base().exponent_bits;
        let limbs = self.monty_n2().limbs() as f64;
        let cost = |w: usize| {
            let windows = bits.div_ceil(w) as f64;
            let size = (1u64 << w) as f64;
            // A scan of 2^w entries of k limbs (vectorized loads and masks)
            // against a k-limb Montgomery product (2 k^2 multiply-adds):
            // about 2^w / (8 k) products.
            windows * (size - 2.0) + encryptions as f64 * windows * (1.0 + size / (8.0 * limbs))
        };
        let window = (2..=FixedBaseTable::DEFAULT_WINDOW)
            .min_by(|a, b| cost(*a).total_cmp(&cost(*b)))
            .unwrap_or(FixedBaseTable::DEFAULT_WINDOW);
        self.build_table(window);
    }

    /// Builds the table with `window` (if none exists), telling encryptions
    /// on other threads meanwhile not to wait for it.
    fn build_table(&self, window: usize) {
        self.inner
            .djn_building
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.djn_with(window);
    }

    pub(crate) fn djn_base(&self) -> &DjnBase {
        self.inner.djn_base.get_or_init(|| {
            let n = &self.inner.n;
            // h uniform in Z*_n; h_s = h^n mod n^2 generates a subgroup of the
            // n-th residues.
            let h = loop {
                let h = OsRng.gen_biguint_below(n);
                if h > BigUint::one() && h.gcd(n).is_one() {
                    break h;
                }
            };
            // Variable time in the exponent only, which is the public `n`.
            let hs = self.monty_n2().pow_vartime(&h, n);
            DjnBase {
                hs,
                exponent_bits: 2 * self.security_bits(),
            }
        })
    }

    pub(crate) fn djn(&self) -> &DjnTable {
        self.djn_with(FixedBaseTable::DEFAULT_WINDOW)
    }

    /// The table, built with `window` if it does not exist yet.
    fn djn_with(&self, window: usize) -> &DjnTable {
        self.inner.djn.get_or_init(|| {
            let base = self.djn_base();
            let table = FixedBaseTable::new(self.monty_n2(), &base.hs, base.exponent_bits, window);
            DjnTable { table }
        })
    }
}

/// A Paillier private key: the primes and the CRT decryption constants of
/// python-paillier (`hp = L_p(g^(p-1) mod p^2)^-1 mod p`, likewise `hq`, and
/// `p^-1 mod q`), plus the constants of the key holder's CRT encryption.
///
/// Secret fields are overwritten with zeros when the key is dropped
/// (best effort: temporaries inside `num-bigint` arithmetic are not tracked).
/// `Debug` prints only the public part.
pub struct PrivateKey {
    pub(crate) public: PublicKey,
    pub(crate) p: BigUint,
    pub(crate) q: BigUint,
    pub(crate) p_minus_1: BigUint,
    pub(crate) q_minus_1: BigUint,
    pub(crate) hp: BigUint,
    pub(crate) hq: BigUint,
    /// `p^-1 mod q`.
    pub(crate) p_inv_q: BigUint,
    /// `n mod p(p-1)` and `n mod q(q-1)`: exponents for `r^n` modulo `p^2`, `q^2`.
    pub(crate) n_mod_phi_p2: BigUint,
    pub(crate) n_mod_phi_q2: BigUint,
    /// `(p^2)^-1 mod q^2`.
    pub(crate) p2_inv_q2: BigUint,
    pub(crate) monty_p2: Monty,
    pub(crate) monty_q2: Monty,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Clone for PrivateKey {
    fn clone(&self) -> Self {
        PrivateKey {
            public: self.public.clone(),
            p: self.p.clone(),
            q: self.q.clone(),
            p_minus_1: self.p_minus_1.clone(),
            q_minus_1: self.q_minus_1.clone(),
            hp: self.hp.clone(),
            hq: self.hq.clone(),
            p_inv_q: self.p_inv_q.clone(),
            n_mod_phi_p2: self.n_mod_phi_p2.clone(),
            n_mod_phi_q2: self.n_mod_phi_q2.clone(),
            p2_inv_q2: self.p2_inv_q2.clone(),
            monty_p2: self.monty_p2.clone(),
            monty_q2: self.monty_q2.clone(),
        }
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        for x in [
            &mut self.p,
            &mut self.q,
            &mut self.p_minus_1,
            &mut self.q_minus_1,
            &mut self.hp,
            &mut self.hq,
            &mut self.p_inv_q,
            &mut self.n_mod_phi_p2,
            &mut self.n_mod_phi_q2,
            &mut self.p2_inv_q2,
        ] {
            crate::arith::wipe(x);
        }
        self.monty_p2.zeroize();
        self.monty_q2.zeroize();
    }
}

/// `L_p(x) = (x - 1) / p`.
fn l_function(x: &BigUint, p: &BigUint) -> BigUint {
    (x - 1u32) / p
}

impl PrivateKey {
    /// Builds a private key from its primes, validating them: distinct odd
    /// probable primes (Miller-Rabin), `n = p q` of at least [`MIN_KEY_BITS`].
    pub fn from_primes(p: BigUint, q: BigUint) -> Result<PrivateKey> {
        Self::from_primes_min(p, q, MIN_KEY_BITS)
    }

    /// Like [`from_primes`](Self::from_primes) but accepts small keys.
    /// INSECURE: for tests and known-answer vectors only (feature
    /// `hazmat-insecure-small-keys`).
    #[cfg(feature = "hazmat-insecure-small-keys")]
    pub fn from_primes_insecure_for_tests(p: BigUint, q: BigUint) -> Result<PrivateKey> {
        Self::from_primes_min(p, q, MIN_INSECURE_KEY_BITS)
    }

    fn from_primes_min(p: BigUint, q: BigUint, min_bits: usize) -> Result<PrivateKey> {
        if p == q {
            return Err(Error::InvalidKey("p and q are equal"));
        }
        let n = &p * &q;
        check_modulus(&n, min_bits)?;
        for f in [&p, &q] {
            if !prime::is_probable_prime(f, prime::mr_rounds(f.bits() as usize), &mut OsRng) {
                return Err(Error::InvalidKey("a factor is not prime"));
            }
        }
        let public = PublicKey::build(n);
        Self::with_public(public, p, q)
    }

    fn with_public(public: PublicKey, p: BigUint, q: BigUint) -> Result<PrivateKey> {
        // python-paillier orders the primes so that q < p is not required; we
        // keep them as given but the CRT needs p^-1 mod q, which exists for
        // distinct primes.
        let mut p_sq = &p * &p;
        let mut q_sq = &q * &q;
        let monty_p2 = Monty::new(&p_sq).ok_or(Error::InvalidKey("p is even"))?;
        let monty_q2 = Monty::new(&q_sq).ok_or(Error::InvalidKey("q is even"))?;
        let p_minus_1 = &p - 1u32;
        let q_minus_1 = &q - 1u32;
        let g = public.g();
        // Every inverse here has a secret modulus (p, q or q^2), so none may go
        // through mod_inverse_vartime: Fermat's inverse through the regular
        // exponentiation (p and q are prime: checked by Miller-Rabin in
        // from_primes, generated as such otherwise), then a Hensel lift.
        let hp = inverse_mod_prime(&l_function(&monty_p2.pow(&g, &p_minus_1), &p), &p)
            .ok_or(Error::InvalidKey("h_p is not invertible"))?;
        let hq = inverse_mod_prime(&l_function(&monty_q2.pow(&g, &q_minus_1), &q), &q)
            .ok_or(Error::InvalidKey("h_q is not invertible"))?;
        let p_inv_q =
            inverse_mod_prime(&p, &q).ok_or(Error::InvalidKey("p not invertible mod q"))?;
        // (p^2)^-1 mod q is (p^-1)^2 mod q; lifted to q^2. It exists whenever
        // p^-1 mod q does.
        let mut p2_inv_q = (&p_inv_q * &p_inv_q) % &q;
        let p2_inv_q2 = lift_inverse(&p_sq, &p2_inv_q, &q_sq);
        for x in [&mut p2_inv_q, &mut p_sq, &mut q_sq] {
            crate::arith::wipe(x);
        }
        let n = public.n();
        let n_mod_phi_p2 = n % (&p * &p_minus_1);
        let n_mod_phi_q2 = n % (&q * &q_minus_1);
        Ok(PrivateKey {
            public,
            p,
            q,
            p_minus_1,
            q_minus_1,
            hp,
            hq,
            p_inv_q,
            n_mod_phi_p2,
            n_mod_phi_q2,
            p2_inv_q2,
            monty_p2,
            monty_q2,
        })
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The prime `p`. Secret.
    pub fn p(&self) -> &BigUint {
        &self.p
    }

    /// The prime `q`. Secret.
    pub fn q(&self) -> &BigUint {
        &self.q
    }
}

/// Generates a key pair with an `n` of exactly `bits` bits (even, between
/// [`MIN_KEY_BITS`] and [`MAX_KEY_BITS`]). The two primes have `bits / 2` bits
/// each and are generated on two threads.
pub fn generate_keypair(bits: usize) -> Result<(PublicKey, PrivateKey)> {
    if bits < MIN_KEY_BITS {
        return Err(Error::KeySize {
            bits,
            reason: "below the 2048-bit minimum (use generate_keypair_insecure_for_tests for small test keys)",
        });
    }
    generate(bits)
}

/// Like [`generate_keypair`] but accepts sizes down to [`MIN_INSECURE_KEY_BITS`].
/// INSECURE below 2048 bits: for tests only (feature `hazmat-insecure-small-keys`).
#[cfg(feature = "hazmat-insecure-small-keys")]
pub fn generate_keypair_insecure_for_tests(bits: usize) -> Result<(PublicKey, PrivateKey)> {
    if bits < MIN_INSECURE_KEY_BITS {
        return Err(Error::KeySize {
            bits,
            reason: "below the minimum for test keys",
        });
    }
    generate(bits)
}

fn generate(bits: usize) -> Result<(PublicKey, PrivateKey)> {
    if bits > MAX_KEY_BITS {
        return Err(Error::KeySize {
            bits,
            reason: "above the 8192-bit maximum",
        });
    }
    if !bits.is_multiple_of(2) {
        return Err(Error::KeySize {
            bits,
            reason: "must be even (p and q have equal length)",
        });
    }
    let half = bits / 2;
    // FIPS 186-5 A.1.3: |p - q| > 2^(half - 100); for small test keys use a
    // proportional margin.
    let gap_bits = if half > 200 { half - 100 } else { half / 2 };
    loop {
        let (p, q) = rayon::join(
            || prime::random_prime(half, &mut OsRng),
            || prime::random_prime(half, &mut OsRng),
        );
        let diff = if p > q { &p - &q } else { &q - &p };
        if (diff.bits() as usize) <= gap_bits {
            continue;
        }
        let n = &p * &q;
        debug_assert_eq!(n.bits() as usize, bits);
        // For equal-length primes gcd(n, (p-1)(q-1)) = 1 always holds; checked
        // because the scheme's correctness depends on it.
        if !n.gcd(&(&(&p - 1u32) * &(&q - 1u32))).is_one() {
            continue;
        }
        let public = PublicKey::build(n);
        let private = PrivateKey::with_public(public.clone(), p, q)?;
        return Ok((public, private));
    }
}

/// Number of bytes of `x` in minimal big-endian form (0 for zero).
pub(crate) fn byte_len(x: &BigUint) -> usize {
    (x.bits() as usize).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// While `precompute` builds the table elsewhere, encryptions take the
    /// table-free path (and do not build it); both paths decrypt.
    #[test]
    fn encryption_does_not_wait_for_a_table_being_built() {
        let (pk, sk) = generate_keypair_insecure_for_tests(1024).unwrap();
        // As `precompute` on another thread that has not finished yet.
        pk.inner.djn_building.store(true, Ordering::Release);
        for m in [0u32, 7, 123_456] {
            let c = pk.encrypt_raw(&BigUint::from(m)).unwrap();
            assert_eq!(sk.decrypt_raw(&c).unwrap(), BigUint::from(m));
        }
        assert!(pk.inner.djn.get().is_none(), "no table was built");
        pk.precompute();
        assert!(pk.inner.djn.get().is_some());
        let c = pk.encrypt_raw(&BigUint::from(99u32)).unwrap();
        assert_eq!(sk.decrypt_raw(&c).unwrap(), BigUint::from(99u32));
    }

    /// A short run gets a small window, a long one the default; both
    /// encrypt correctly.
    #[test]
    fn the_table_is_sized_by_the_encryptions_it_will_serve() {
        for (encryptions, window) in [(50u64, 4usize), (1_000_000, FixedBaseTable::DEFAULT_WINDOW)]
        {
            let (pk, sk) = generate_keypair_insecure_for_tests(1024).unwrap();
            pk.precompute_for(encryptions);
            let t = &pk.inner.djn.get().expect("built").table;
            assert_eq!(t.window(), window, "{encryptions} encryptions");
            let c = pk.encrypt_raw(&BigUint::from(4242u32)).unwrap();
            assert_eq!(sk.decrypt_raw(&c).unwrap(), BigUint::from(4242u32));
        }
    }

    /// Without `precompute`, the first encryption builds the table.
    #[test]
    fn the_first_encryption_builds_the_table_when_nobody_else_does() {
        let (pk, sk) = generate_keypair_insecure_for_tests(1024).unwrap();
        let c = pk.encrypt_raw(&BigUint::from(5u32)).unwrap();
        assert!(pk.inner.djn.get().is_some());
        assert_eq!(sk.decrypt_raw(&c).unwrap(), BigUint::from(5u32));
    }
}
