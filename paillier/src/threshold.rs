//! Threshold Paillier decryption (t of l parties), as Damgard and Jurik
//! (PKC 2001, with s = 1) after Shoup's threshold RSA (Eurocrypt 2000).
//!
//! A dealer ([`deal`]) draws safe primes `p = 2p' + 1`, `q = 2q' + 1`, sets
//! `n = pq`, `m = p'q'` and the secret exponent `d` with `d = 0 mod m` and
//! `d = 1 mod n`, Shamir-shares `d` over `Z_{nm}` with a polynomial of degree
//! `t - 1`, and publishes a verification base `v` (a random square mod `n^2`)
//! and each party's verification key `v_i = v^(Delta s_i)`, `Delta = l!`. It
//! then forgets the factorization: only the shares remain.
//!
//! A party with share `s_i` answers a ciphertext `c` with its partial
//! decryption `c_i = c^(2 Delta s_i) mod n^2` and a non-interactive proof
//! (Fiat-Shamir, SHA-256) that `log_{c^4}(c_i^2) = log_v(v_i)`. Anyone holding
//! the [`ThresholdKey`] verifies a partial decryption ([`ThresholdKey::verify`])
//! and combines any `t` valid ones ([`ThresholdKey::combine`]) with the
//! integer Lagrange coefficients `mu_i = Delta prod_{j != i} j / (j - i)`:
//! `prod c_i^(2 mu_i) = c^(4 Delta^2 d) = 1 + 4 Delta^2 M n (mod n^2)`, so
//! `M = L(.) (4 Delta^2)^-1 mod n`.
//!
//! What this module owns: dealing, shares, partial decryption, the proofs,
//! verification and combining. What it does not: distributing share files
//! (the caller writes them, owner-only), deciding which ciphertexts a party
//! may decrypt (the protocol's rules), and dealer-free key generation. The
//! dealer sees the factorization while it deals and must be trusted then.
//!
//! Timing: a share is used only in [`crate::arith::Monty::pow`] (regular) and in
//! the proof's response `z = r + e Delta s_i`, computed with `num-bigint`
//! arithmetic (not claimed constant-time, as everywhere in this crate).
//! Verification and combining handle public values only and use the
//! `_vartime` inverse on public ciphertexts and keys.

use num_bigint::{BigInt, BigUint, RandBigInt, Sign};
use num_integer::Integer;
use num_traits::{One, Signed, Zero};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::arith::Monty;
use crate::arith::{inverse_mod_square_vartime, mod_inverse_vartime};
use crate::ciphertext::Ciphertext;
use crate::error::{Error, Result};
use crate::keys::PublicKey;
use crate::prime;

/// Bits of the Fiat-Shamir challenge.
const CHALLENGE_BITS: u64 = 256;
/// Statistical hiding of the proof's response, in bits.
const HIDING_BITS: u64 = 128;
/// Most parties a key may be dealt to (`l!` stays a few kilobits).
pub const MAX_PARTIES: u32 = 256;

/// The public part of a threshold key: the Paillier public key, the
/// threshold, and the verification keys of every party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThresholdKey {
    public: PublicKey,
    parties: u32,
    threshold: u32,
    delta: BigUint,
    v: BigUint,
    verification: Vec<BigUint>,
    /// Powers of `v`, built on first use: every proof raises `v` to a
    /// response or nonce of about `2 bits(n) + bits(Delta) + 384` bits.
    v_table: VTable,
}

/// The lazily built fixed-base table of `v` (public values only). Not part of
/// the key's identity: keys compare equal whether or not it was built.
#[derive(Clone, Default)]
struct VTable(std::sync::Arc<std::sync::OnceLock<crate::arith::FixedBaseTable>>);

impl PartialEq for VTable {
    fn eq(&self, _: &VTable) -> bool {
        true
    }
}

impl Eq for VTable {}

impl std::fmt::Debug for VTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "built"
        } else {
            "not built"
        })
    }
}

/// One party's share of the secret exponent. Secret: its `Debug` shows the
/// index only, and the value is wiped when dropped.
#[derive(Clone)]
pub struct KeyShare {
    index: u32,
    share: BigUint,
    key: ThresholdKey,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("index", &self.index)
            .field("share", &"<secret>")
            .finish()
    }
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        crate::arith::wipe_biguint(&mut self.share);
    }
}

/// A party's partial decryption of one ciphertext, with its proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialDecryption {
    /// The party's index (1-based).
    pub index: u32,
    /// `c^(2 Delta s_i) mod n^2`.
    pub value: BigUint,
    /// Fiat-Shamir challenge of the proof.
    pub challenge: BigUint,
    /// Response of the proof.
    pub response: BigUint,
}

fn check_params(parties: u32, threshold: u32) -> Result<()> {
    if !(2..=MAX_PARTIES).contains(&parties) {
        return Err(Error::ThresholdParams(format!(
            "{parties} parties: between 2 and {MAX_PARTIES} are supported"
        )));
    }
    if threshold < 1 || threshold > parties {
        return Err(Error::ThresholdParams(format!(
            "threshold {threshold} must be between 1 and the {parties} parties"
        )));
    }
    Ok(())
}

fn factorial(l: u32) -> BigUint {
    (1..=l).fold(BigUint::one(), |acc, i| acc * i)
}

/// A random safe prime `2p' + 1` of exactly `bits` bits; returns `(p, p')`.
fn safe_prime<R: RngCore + CryptoRng>(bits: usize, rng: &mut R) -> (BigUint, BigUint) {
    let primes = prime::small_primes();
    let rounds = prime::mr_rounds(bits);
    loop {
        // p' of bits - 1 bits with its top two bits set, odd.
        let mut base = rng.gen_biguint(bits as u64 - 1);
        base.set_bit(bits as u64 - 2, true);
        base.set_bit(bits as u64 - 3, true);
        base.set_bit(0, true);
        let residues: Vec<u64> = primes[1..]
            .iter()
            .map(|&r| (&base % r).iter_u64_digits().next().unwrap_or(0))
            .collect();
        let mut delta: u64 = 0;
        while delta < (1 << 22) {
            // Neither p' nor 2p' + 1 divisible by a small prime r: p' mod r
            // is neither 0 nor (r - 1) / 2.
            let ok = primes[1..].iter().zip(&residues).all(|(&r, &x)| {
                let r = r as u64;
                let y = (x + delta) % r;
                y != 0 && y != (r - 1) / 2
            });
            if ok {
                let pp = &base + delta;
                let p: BigUint = (&pp << 1) + 1u32;
                if p.bits() as usize != bits {
                    break;
                }
                // A cheap Fermat test on p first: most candidates fail there.
                let two = BigUint::from(2u32);
                if two.modpow(&(&p - 1u32), &p).is_one()
                    && prime::is_probable_prime(&pp, rounds, rng)
                    && prime::is_probable_prime(&p, rounds, rng)
                {
                    return (p, pp);
                }
            }
            delta += 2;
        }
    }
}

/// Deals a `threshold`-of-`parties` key with an `n` of `bits` bits (at least
/// [`crate::keys::MIN_KEY_BITS`]): the public [`ThresholdKey`] and one
/// [`KeyShare`] per party, index 1 to `parties`. The factorization is
/// dropped (and wiped) before this returns. Safe primes make this slower
/// than [`crate::keys::generate_keypair`] (seconds to a minute at 2048 bits).
pub fn deal<R: RngCore + CryptoRng>(
    bits: usize,
    threshold: u32,
    parties: u32,
    rng: &mut R,
) -> Result<(ThresholdKey, Vec<KeyShare>)> {
    if bits < crate::keys::MIN_KEY_BITS {
        return Err(Error::KeySize {
            bits,
            reason: "threshold keys below 2048 bits are refused",
        });
    }
    deal_unchecked(bits, threshold, parties, rng)
}

/// As [`deal`], for key sizes down to 256 bits. INSECURE: for tests only.
#[cfg(feature = "hazmat-insecure-small-keys")]
pub fn deal_insecure_for_tests<R: RngCore + CryptoRng>(
    bits: usize,
    threshold: u32,
    parties: u32,
    rng: &mut R,
) -> Result<(ThresholdKey, Vec<KeyShare>)> {
    if bits < 256 {
        return Err(Error::KeySize {
            bits,
            reason: "below 256 bits even tests are refused",
        });
    }
    deal_unchecked(bits, threshold, parties, rng)
}

fn deal_unchecked<R: RngCore + CryptoRng>(
    bits: usize,
    threshold: u32,
    parties: u32,
    rng: &mut R,
) -> Result<(ThresholdKey, Vec<KeyShare>)> {
    check_params(parties, threshold)?;
    if !bits.is_multiple_of(2) || bits > crate::keys::MAX_KEY_BITS {
        return Err(Error::KeySize {
            bits,
            reason: "an even size up to MAX_KEY_BITS is required",
        });
    }
    let (mut p, mut pp, mut q, mut qp) = loop {
        let (p, pp) = safe_prime(bits / 2, rng);
        let (q, qp) = safe_prime(bits / 2, rng);
        if p != q && (&p * &q).bits() as usize == bits {
            break (p, pp, q, qp);
        }
    };
    let n = &p * &q;
    let mut m = &pp * &qp;
    let nm = &n * &m;
    // d = 0 mod m, d = 1 mod n: d = m (m^-1 mod n). gcd(m, n) = 1 since the
    // primes are distinct and larger than p', q'.
    // m^-1 mod n by Euler (m^(phi(n) - 1), phi(n) = 4m), through the regular
    // exponentiation: m is secret.
    let mut phi_minus_1 = (&m << 2) - 1u32;
    let mut m_inv = Monty::new(&n)
        .ok_or(Error::InvalidKey("n is even"))?
        .pow(&m, &phi_minus_1);
    let mut d = (&m * &m_inv) % &nm;
    crate::arith::wipe_biguint(&mut phi_minus_1);
    crate::arith::wipe_biguint(&mut m_inv);
    let mut coeffs: Vec<BigUint> = (1..threshold).map(|_| rng.gen_biguint_below(&nm)).collect();
    let public = PublicKey::from_dealt_modulus(n.clone());
    let n2 = public.n_squared().clone();
    let r = loop {
        let r = rng.gen_biguint_below(&n2);
        if !r.is_zero() && r.gcd(&n).is_one() {
            break r;
        }
    };
    let v = (&r * &r) % &n2;
    let delta = factorial(parties);
    let mo = public.monty_n2();
    let mut shares = Vec::with_capacity(parties as usize);
    let mut verification = Vec::with_capacity(parties as usize);
    for i in 1..=parties {
        // f(i) by Horner, mod nm.
        let x = BigUint::from(i);
        let mut s = BigUint::zero();
        for c in coeffs.iter().rev() {
            s = (s * &x + c) % &nm;
        }
        s = (s * &x + &d) % &nm;
        verification.push(mo.pow(&v, &(&delta * &s)));
        shares.push(s);
    }
    let key = ThresholdKey {
        public,
        parties,
        threshold,
        delta,
        v,
        verification,
        v_table: VTable::default(),
    };
    let shares = shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| KeyShare {
            index: i as u32 + 1,
            share,
            key: key.clone(),
        })
        .collect();
    for x in [&mut p, &mut pp, &mut q, &mut qp, &mut m, &mut d] {
        crate::arith::wipe_biguint(x);
    }
    for c in &mut coeffs {
        crate::arith::wipe_biguint(c);
    }
    Ok((key, shares))
}

fn challenge(parts: &[&BigUint]) -> BigUint {
    let mut h = Sha256::new();
    h.update(b"private-training/threshold-paillier/dleq/v1");
    for p in parts {
        let b = p.to_bytes_be();
        h.update((b.len() as u64).to_be_bytes());
        h.update(&b);
    }
    BigUint::from_bytes_be(&h.finalize())
}

impl ThresholdKey {
    /// The Paillier public key ciphertexts are encrypted under.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Number of parties `l`.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// Partial decryptions needed to decrypt, `t`.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The verification base `v`.
    pub fn verification_base(&self) -> &BigUint {
        &self.v
    }

    /// Party `index`'s verification key `v^(Delta s_i)` (index 1-based).
    pub fn verification_key(&self, index: u32) -> Option<&BigUint> {
        index
            .checked_sub(1)
            .and_then(|i| self.verification.get(i as usize))
    }

    /// Rebuilds a key from its published parts (as read from a file),
    /// checking them: sizes, ranges, units mod `n^2`.
    pub fn from_parts(
        public: PublicKey,
        threshold: u32,
        v: BigUint,
        verification: Vec<BigUint>,
    ) -> Result<ThresholdKey> {
        let parties = u32::try_from(verification.len())
            .map_err(|_| Error::ThresholdParams("too many verification keys".into()))?;
        check_params(parties, threshold)?;
        let n = public.n();
        for (what, x) in std::iter::once(("verification base", &v))
            .chain(verification.iter().map(|x| ("a verification key", x)))
        {
            if x.is_zero() || x >= public.n_squared() || !x.gcd(n).is_one() {
                return Err(Error::ThresholdParams(format!(
                    "{what} is not a unit mod n^2"
                )));
            }
        }
        Ok(ThresholdKey {
            delta: factorial(parties),
            public,
            parties,
            threshold,
            v,
            verification,
            v_table: VTable::default(),
        })
    }

    /// Bits of the longest response an honest proof has: `Delta s_i` (with
    /// `s_i < nm < n^2`) plus the nonce's extra bits, with room to spare.
    fn max_response_bits(&self) -> u64 {
        self.delta.bits() + 2 * self.public.n().bits() + CHALLENGE_BITS + HIDING_BITS + 8
    }

    /// Builds the table of powers of `v` that every proof and verification
    /// uses (about 10 MB at 2048 bits, tens of milliseconds), if not built
    /// yet: call it on a thread of its own where the key is loaded, so the
    /// first round does not wait for it. Clones of the key share the table.
    pub fn precompute(&self) {
        self.v_table();
    }

    fn v_table(&self) -> &crate::arith::FixedBaseTable {
        self.v_table.0.get_or_init(|| {
            let bits = self.max_response_bits() as usize;
            crate::arith::FixedBaseTable::new(self.public.monty_n2(), &self.v, bits, 4)
        })
    }

    /// `v^exp mod n^2` through the table (regular: the nonce `r` is secret).
    /// `exp` is a nonce or a response already checked against
    /// [`max_response_bits`](Self::max_response_bits).
    fn v_pow(&self, exp: &BigUint) -> BigUint {
        self.v_table().pow(exp)
    }

    /// Refuses a proof's challenge or response longer than an honest one's:
    /// a long response would cost the verifier an exponentiation of its length.
    fn check_proof_sizes(&self, index: u32, challenge: &BigUint, response: &BigUint) -> Result<()> {
        let invalid = |reason: &'static str| Error::InvalidShare { index, reason };
        if challenge.bits() > CHALLENGE_BITS {
            return Err(invalid("the proof's challenge is too long"));
        }
        if response.bits() > self.max_response_bits() {
            return Err(invalid("the proof's response is too long"));
        }
        Ok(())
    }

    /// Checks a partial decryption of `c`: its index, range and proof.
    pub fn verify(&self, c: &Ciphertext, part: &PartialDecryption) -> Result<()> {
        let invalid = |reason: &'static str| Error::InvalidShare {
            index: part.index,
            reason,
        };
        if c.public_key() != &self.public {
            return Err(Error::KeyMismatch {
                expected: self.public.fingerprint(),
                found: c.key_fingerprint(),
            });
        }
        let vk = self
            .verification_key(part.index)
            .ok_or_else(|| invalid("no party has this index"))?;
        let n = self.public.n();
        let n2 = self.public.n_squared();
        if part.value.is_zero() || &part.value >= n2 || !part.value.gcd(n).is_one() {
            return Err(invalid("the partial decryption is not a unit mod n^2"));
        }
        self.check_proof_sizes(part.index, &part.challenge, &part.response)?;
        let mo = self.public.monty_n2();
        let c4 = mo.pow_vartime(c.value(), &BigUint::from(4u32));
        let ci2 = (&part.value * &part.value) % n2;
        // a = c4^z (ci^2)^-e, b = v^z vk^-e: public values, variable time.
        let ci2_inv = inverse_mod_square_vartime(&ci2, n).ok_or_else(|| invalid("not a unit"))?;
        let vk_inv = inverse_mod_square_vartime(vk, n).ok_or_else(|| invalid("not a unit"))?;
        let a =
            (mo.pow_vartime(&c4, &part.response) * mo.pow_vartime(&ci2_inv, &part.challenge)) % n2;
        let b = (self.v_pow(&part.response) * mo.pow_vartime(&vk_inv, &part.challenge)) % n2;
        let e = challenge(&[&c4, &ci2, &self.v, vk, &a, &b]);
        if e != part.challenge {
            return Err(invalid("its proof of correct decryption does not verify"));
        }
        Ok(())
    }

    /// Verifies `parts` and combines `threshold` of them into the plaintext of
    /// `c` (in `[0, n)`). Fails naming the first invalid part, a repeated
    /// index, or how many valid parts are missing.
    pub fn combine(&self, c: &Ciphertext, parts: &[PartialDecryption]) -> Result<BigUint> {
        let mut used: Vec<VerifiedPartial> = Vec::new();
        for p in parts {
            if used.iter().any(|u| u.part.index == p.index) {
                return Err(Error::InvalidShare {
                    index: p.index,
                    reason: "this party's partial decryption was given twice",
                });
            }
            used.push(self.verify_partial(c, p.clone())?);
            if used.len() as u32 == self.threshold {
                break;
            }
        }
        self.combine_verified(c, &used)
    }

    /// Verifies `part` against `c` ([`ThresholdKey::verify`]) and keeps it as
    /// verified for that ciphertext, so that a caller that verifies parts as
    /// they arrive does not pay for verification twice when combining.
    pub fn verify_partial(
        &self,
        c: &Ciphertext,
        part: PartialDecryption,
    ) -> Result<VerifiedPartial> {
        self.verify(c, &part)?;
        Ok(VerifiedPartial {
            ciphertext: ciphertext_digest(c),
            part,
        })
    }

    /// Combines `threshold` partial decryptions of `c` that verified against
    /// `c` (any more are ignored). Fails on a part verified for another
    /// ciphertext, a repeated index, or too few parts.
    pub fn combine_verified(&self, c: &Ciphertext, parts: &[VerifiedPartial]) -> Result<BigUint> {
        let digest = ciphertext_digest(c);
        let used: Vec<&PartialDecryption> = self
            .select(
                parts,
                |v| v.part.index,
                |v| v.ciphertext == digest,
                "this partial decryption was verified for another ciphertext",
            )?
            .into_iter()
            .map(|v| &v.part)
            .collect();
        let values: Vec<(u32, &BigUint)> = used.iter().map(|p| (p.index, &p.value)).collect();
        self.combine_values(&values)
    }

    /// The first `threshold` of `parts`, each verified for the ciphertext(s)
    /// at hand (`matches`, else `other`) and of a distinct party; fails naming
    /// the offending party, or saying how many are missing.
    fn select<'a, T>(
        &self,
        parts: &'a [T],
        index: impl Fn(&T) -> u32,
        matches: impl Fn(&T) -> bool,
        other: &'static str,
    ) -> Result<Vec<&'a T>> {
        let mut used: Vec<&T> = Vec::new();
        for p in parts {
            if !matches(p) {
                return Err(Error::InvalidShare {
                    index: index(p),
                    reason: other,
                });
            }
            if used.iter().any(|u| index(u) == index(p)) {
                return Err(Error::InvalidShare {
                    index: index(p),
                    reason: "this party's partial decryption was given twice",
                });
            }
            used.push(p);
            if used.len() as u32 == self.threshold {
                break;
            }
        }
        if (used.len() as u32) < self.threshold {
            return Err(Error::TooFewShares {
                needed: self.threshold,
                got: used.len() as u32,
            });
        }
        Ok(used)
    }

    /// The Lagrange combination of `t` distinct parties' values for one
    /// ciphertext (checked by the callers), decoded to the plaintext.
    fn combine_values(&self, used: &[(u32, &BigUint)]) -> Result<BigUint> {
        let n = self.public.n();
        let n2 = self.public.n_squared();
        let mo = self.public.monty_n2();
        let delta = BigInt::from_biguint(Sign::Plus, self.delta.clone());
        let mut acc = BigUint::one();
        for &(index, value) in used {
            let i = BigInt::from(index);
            // mu_i = Delta prod_{j != i} j / (j - i): an integer, since Delta
            // is a multiple of the denominator.
            let (mut num, mut den) = (delta.clone(), BigInt::one());
            for &(other, _) in used {
                if other != index {
                    let j = BigInt::from(other);
                    num *= &j;
                    den *= &j - &i;
                }
            }
            let mu = &num / &den;
            debug_assert!((&mu * &den) == num, "Delta makes mu integral");
            let exp = (mu.abs() * 2u32).to_biguint().expect("absolute value");
            let base = if mu.is_negative() {
                inverse_mod_square_vartime(value, n).ok_or(Error::InvalidShare {
                    index,
                    reason: "not a unit mod n^2",
                })?
            } else {
                value.clone()
            };
            acc = (acc * mo.pow_vartime(&base, &exp)) % n2;
        }
        // acc = 1 + 4 Delta^2 M n mod n^2.
        let l = (&acc - 1u32) / n;
        let four_delta_sq = (&self.delta * &self.delta * 4u32) % n;
        let inv = mod_inverse_vartime(&four_delta_sq, n)
            .ok_or(Error::InvalidKey("4 Delta^2 is not invertible mod n"))?;
        Ok((l * inv) % n)
    }
}

/// A partial decryption that verified against one ciphertext (made by
/// [`ThresholdKey::verify_partial`] only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPartial {
    part: PartialDecryption,
    ciphertext: [u8; 32],
}

impl VerifiedPartial {
    /// The partial decryption.
    pub fn part(&self) -> &PartialDecryption {
        &self.part
    }
}

/// Binds a verified part to the ciphertext it verified against.
fn ciphertext_digest(c: &Ciphertext) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"private-training/threshold-paillier/ciphertext/v1");
    h.update(c.key_fingerprint().0);
    h.update(c.value().to_bytes_be());
    h.finalize().into()
}

impl KeyShare {
    /// This share's party index (1-based).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The public threshold key this share belongs to.
    pub fn key(&self) -> &ThresholdKey {
        &self.key
    }

    /// Rebuilds a share from its index and secret value (as read from a
    /// share file), checking it against the party's verification key.
    pub fn from_parts(key: ThresholdKey, index: u32, share: BigUint) -> Result<KeyShare> {
        let vk = key.verification_key(index).ok_or(Error::InvalidShare {
            index,
            reason: "no party has this index",
        })?;
        let mo = key.public.monty_n2();
        if &mo.pow(&key.v, &(&key.delta * &share)) != vk {
            return Err(Error::InvalidShare {
                index,
                reason: "the share does not match its verification key",
            });
        }
        Ok(KeyShare { index, share, key })
    }

    /// The secret value of the share (for writing the share file).
    pub fn secret(&self) -> &BigUint {
        &self.share
    }

    /// This party's partial decryption of `c`, with its proof.
    pub fn partial_decrypt<R: RngCore + CryptoRng>(
        &self,
        c: &Ciphertext,
        rng: &mut R,
    ) -> Result<PartialDecryption> {
        let key = &self.key;
        if c.public_key() != &key.public {
            return Err(Error::KeyMismatch {
                expected: key.public.fingerprint(),
                found: c.key_fingerprint(),
            });
        }
        let n2 = key.public.n_squared();
        let mo = key.public.monty_n2();
        let mut secret_exp = &key.delta * &self.share;
        let value = mo.pow(c.value(), &(&secret_exp * 2u32));
        let c4 = mo.pow_vartime(c.value(), &BigUint::from(4u32));
        let ci2 = (&value * &value) % n2;
        // r hides e Delta s_i statistically: its length exceeds theirs by
        // HIDING_BITS.
        let r_bits = secret_exp.bits() + CHALLENGE_BITS + HIDING_BITS;
        let mut r = rng.gen_biguint(r_bits);
        let a = mo.pow(&c4, &r);
        let b = key.v_pow(&r);
        let vk = key.verification_key(self.index).expect("dealt");
        let e = challenge(&[&c4, &ci2, &key.v, vk, &a, &b]);
        let response = &r + &e * &secret_exp;
        crate::arith::wipe_biguint(&mut r);
        crate::arith::wipe_biguint(&mut secret_exp);
        Ok(PartialDecryption {
            index: self.index,
            value,
            challenge: e,
            response,
        })
    }
}

/// A party's partial decryptions of several ciphertexts at once, with one
/// proof for all of them (see [`KeyShare::partial_decrypt_batch`]).
#[derive(Clone, PartialEq, Eq)]
pub struct BatchPartial {
    /// The party's index (1-based).
    pub index: u32,
    /// `c_k^(2 Delta s_i) mod n^2` for each ciphertext `c_k`, in order.
    pub values: Vec<BigUint>,
    /// Fiat-Shamir challenge of the batched proof.
    pub challenge: BigUint,
    /// Response of the batched proof.
    pub response: BigUint,
}

impl std::fmt::Debug for BatchPartial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public values, but thousands of digits: the shape is what a log needs.
        f.debug_struct("BatchPartial")
            .field("index", &self.index)
            .field("values", &self.values.len())
            .finish_non_exhaustive()
    }
}

/// A [`BatchPartial`] that verified against one list of ciphertexts (made by
/// [`ThresholdKey::verify_batch`] only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBatch {
    part: BatchPartial,
    ciphertexts: [u8; 32],
}

impl VerifiedBatch {
    /// The batch of partial decryptions.
    pub fn part(&self) -> &BatchPartial {
        &self.part
    }
}

/// Digest of a list of ciphertexts, binding a verified batch to it.
fn batch_digest(cts: &[Ciphertext]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"private-training/threshold-paillier/batch/v1");
    h.update((cts.len() as u64).to_be_bytes());
    for c in cts {
        h.update(ciphertext_digest(c));
    }
    h.finalize().into()
}

/// The batching weights `e_k` (128 bits each), drawn by hashing the whole
/// statement: the key, the party, every ciphertext and every claimed value.
/// A party that fixes its values before the weights exist cannot make a wrong
/// value cancel in the combination except with probability about `2^-128`
/// (the small-exponent batch test of Bellare, Garay and Rabin, 1998; squares
/// keep every element in the subgroup where the single proof is sound).
fn batch_weights(
    key: &ThresholdKey,
    index: u32,
    cts: &[Ciphertext],
    values: &[BigUint],
) -> Vec<BigUint> {
    let mut h = Sha256::new();
    h.update(b"private-training/threshold-paillier/batch-weights/v1");
    h.update(key.public.fingerprint().0);
    h.update(index.to_be_bytes());
    h.update(batch_digest(cts));
    h.update((values.len() as u64).to_be_bytes());
    for v in values {
        let b = v.to_bytes_be();
        h.update((b.len() as u64).to_be_bytes());
        h.update(&b);
    }
    let seed: [u8; 32] = h.finalize().into();
    (0..cts.len() as u64)
        .map(|k| {
            let mut h = Sha256::new();
            h.update(seed);
            h.update(k.to_be_bytes());
            BigUint::from_bytes_be(&h.finalize()[..16])
        })
        .collect()
}

/// `prod_k base_k^(m e_k) mod n^2` for public bases and weights (`m` = 4 for
/// ciphertexts, 2 for partial decryptions: the squares the proof lives in).
fn combine_weighted(
    key: &ThresholdKey,
    bases: &[&BigUint],
    m: u32,
    weights: &[BigUint],
) -> BigUint {
    let exps: Vec<BigUint> = weights.iter().map(|e| e * m).collect();
    key.public.monty_n2().multi_pow_vartime(bases, &exps)
}

/// The proof nonce of a deterministic batch: a function of the secret share
/// and the whole statement (as EdDSA derives its nonce), so the same request
/// is answered byte for byte the same and two statements never share a nonce.
fn derived_nonce(share: &BigUint, statement: &[u8; 32], bits: u64) -> BigUint {
    let mut secret = zeroize::Zeroizing::new(share.to_bytes_be());
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(bits.div_ceil(8) as usize + 32));
    let mut counter: u64 = 0;
    while (out.len() as u64) * 8 < bits {
        let mut h = Sha256::new();
        h.update(b"private-training/threshold-paillier/nonce/v1");
        h.update((secret.len() as u64).to_be_bytes());
        h.update(&*secret);
        h.update(statement);
        h.update(counter.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    use zeroize::Zeroize;
    secret.zeroize();
    let mut r = BigUint::from_bytes_be(&out);
    let excess = (out.len() as u64) * 8 - bits;
    r >>= excess;
    r
}

impl KeyShare {
    /// This party's partial decryptions of every ciphertext in `cts`, with one
    /// proof that all of them are `c_k^(2 Delta s_i)` for the `s_i` behind its
    /// verification key: the DLEQ proof of [`KeyShare::partial_decrypt`] on
    /// the combinations `prod c_k^(4 e_k)` and `prod c_{k,i}^(2 e_k)` with
    /// hashed 128-bit weights `e_k`. Costs one exponentiation per ciphertext
    /// (in parallel) plus about two for the proof, against three per
    /// ciphertext unbatched; verifying costs about four plus two cheap
    /// 128-bit exponentiations per ciphertext.
    ///
    /// Deterministic: the proof's nonce is derived from the share and the
    /// statement, so answering the same ciphertexts twice gives identical
    /// bytes (a party can re-send its answer after a loss without a second,
    /// different proof ever existing).
    pub fn partial_decrypt_batch(&self, cts: &[Ciphertext]) -> Result<BatchPartial> {
        use rayon::prelude::*;
        let key = &self.key;
        if let Some(c) = cts.iter().find(|c| c.public_key() != &key.public) {
            return Err(Error::KeyMismatch {
                expected: key.public.fingerprint(),
                found: c.key_fingerprint(),
            });
        }
        if cts.is_empty() {
            return Err(Error::ThresholdParams("no ciphertexts to decrypt".into()));
        }
        let mo = key.public.monty_n2();
        let mut secret_exp = &key.delta * &self.share;
        let mut exp2 = &secret_exp * 2u32;
        let values: Vec<BigUint> = cts.par_iter().map(|c| mo.pow(c.value(), &exp2)).collect();
        crate::arith::wipe_biguint(&mut exp2);
        let weights = batch_weights(key, self.index, cts, &values);
        let bases: Vec<&BigUint> = cts.iter().map(|c| c.value()).collect();
        let c_tilde = combine_weighted(key, &bases, 4, &weights);
        let value_refs: Vec<&BigUint> = values.iter().collect();
        let v_tilde = combine_weighted(key, &value_refs, 2, &weights);
        let statement = {
            let mut h = Sha256::new();
            h.update(batch_digest(cts));
            h.update(c_tilde.to_bytes_be());
            h.update(v_tilde.to_bytes_be());
            let d: [u8; 32] = h.finalize().into();
            d
        };
        let r_bits = secret_exp.bits() + CHALLENGE_BITS + HIDING_BITS;
        let mut r = derived_nonce(&self.share, &statement, r_bits);
        let a = mo.pow(&c_tilde, &r);
        let b = key.v_pow(&r);
        let vk = key.verification_key(self.index).expect("dealt");
        let e = challenge(&[&c_tilde, &v_tilde, &key.v, vk, &a, &b]);
        let response = &r + &e * &secret_exp;
        crate::arith::wipe_biguint(&mut r);
        crate::arith::wipe_biguint(&mut secret_exp);
        Ok(BatchPartial {
            index: self.index,
            values,
            challenge: e,
            response,
        })
    }
}

impl ThresholdKey {
    /// Checks a batch of partial decryptions of `cts`: its index, one value
    /// per ciphertext, each a unit mod `n^2`, and the batched proof. Keeps it
    /// as verified for exactly these ciphertexts.
    pub fn verify_batch(&self, cts: &[Ciphertext], part: BatchPartial) -> Result<VerifiedBatch> {
        let invalid = |reason: &'static str| Error::InvalidShare {
            index: part.index,
            reason,
        };
        if let Some(c) = cts.iter().find(|c| c.public_key() != &self.public) {
            return Err(Error::KeyMismatch {
                expected: self.public.fingerprint(),
                found: c.key_fingerprint(),
            });
        }
        let vk = self
            .verification_key(part.index)
            .ok_or_else(|| invalid("no party has this index"))?;
        if part.values.len() != cts.len() || cts.is_empty() {
            return Err(invalid(
                "it holds another number of values than there are ciphertexts",
            ));
        }
        let n = self.public.n();
        let n2 = self.public.n_squared();
        if part
            .values
            .iter()
            .any(|x| x.is_zero() || x >= n2 || !x.gcd(n).is_one())
        {
            return Err(invalid("a partial decryption is not a unit mod n^2"));
        }
        self.check_proof_sizes(part.index, &part.challenge, &part.response)?;
        let weights = batch_weights(self, part.index, cts, &part.values);
        let bases: Vec<&BigUint> = cts.iter().map(|c| c.value()).collect();
        let c_tilde = combine_weighted(self, &bases, 4, &weights);
        let value_refs: Vec<&BigUint> = part.values.iter().collect();
        let v_tilde = combine_weighted(self, &value_refs, 2, &weights);
        let mo = self.public.monty_n2();
        let v_inv = inverse_mod_square_vartime(&v_tilde, n).ok_or_else(|| invalid("not a unit"))?;
        let vk_inv = inverse_mod_square_vartime(vk, n).ok_or_else(|| invalid("not a unit"))?;
        let a = (mo.pow_vartime(&c_tilde, &part.response)
            * mo.pow_vartime(&v_inv, &part.challenge))
            % n2;
        let b = (self.v_pow(&part.response) * mo.pow_vartime(&vk_inv, &part.challenge)) % n2;
        let e = challenge(&[&c_tilde, &v_tilde, &self.v, vk, &a, &b]);
        if e != part.challenge {
            return Err(invalid("its proof of correct decryption does not verify"));
        }
        Ok(VerifiedBatch {
            ciphertexts: batch_digest(cts),
            part,
        })
    }

    /// Combines `threshold` verified batches for `cts` (any more are
    /// ignored) into the plaintexts, in order. Fails on a batch verified for
    /// other ciphertexts, a repeated party, or too few batches.
    pub fn combine_batch(
        &self,
        cts: &[Ciphertext],
        parts: &[VerifiedBatch],
    ) -> Result<Vec<BigUint>> {
        let digest = batch_digest(cts);
        let used = self.select(
            parts,
            |p| p.part.index,
            |p| p.ciphertexts == digest,
            "this batch was verified for other ciphertexts",
        )?;
        use rayon::prelude::*;
        (0..cts.len())
            .into_par_iter()
            .map(|k| {
                let values: Vec<(u32, &BigUint)> = used
                    .iter()
                    .map(|u| (u.part.index, &u.part.values[k]))
                    .collect();
                self.combine_values(&values)
            })
            .collect()
    }
}

/// Files of a threshold key: the public part every node reads, and one share
/// per party (secret: the caller writes it owner-only). Numbers are decimal
/// strings; everything is checked when read (sizes, units, each share
/// against its verification key).
pub mod files {
    use super::*;
    use serde::{Deserialize, Serialize};

    /// Format tag of the public file.
    pub const PUBLIC_FORMAT: &str = "threshold-paillier-public/1";
    /// Format tag of a share file.
    pub const SHARE_FORMAT: &str = "threshold-paillier-share/1";
    /// Largest file accepted, checked before parsing (a 4096-bit key with
    /// 256 parties is about 700 KB).
    pub const MAX_FILE_BYTES: usize = 1 << 20;

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PublicFile {
        format: String,
        n: String,
        threshold: u32,
        v: String,
        verification: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ShareFile {
        format: String,
        index: u32,
        share: String,
        public: PublicFile,
    }

    fn number(what: &'static str, s: &str) -> Result<BigUint> {
        if s.is_empty()
            || s.len() > 4 * crate::keys::MAX_KEY_BITS
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Error::Malformed {
                what,
                reason: "a number is not a decimal string of bounded length".into(),
            });
        }
        s.parse().map_err(|_| Error::Malformed {
            what,
            reason: "a number does not parse".into(),
        })
    }

    fn public_file(k: &ThresholdKey) -> PublicFile {
        PublicFile {
            format: PUBLIC_FORMAT.into(),
            n: k.public.n().to_string(),
            threshold: k.threshold,
            v: k.v.to_string(),
            verification: k.verification.iter().map(|x| x.to_string()).collect(),
        }
    }

    fn parse_public(what: &'static str, f: PublicFile, small_ok: bool) -> Result<ThresholdKey> {
        if f.format != PUBLIC_FORMAT {
            return Err(Error::Malformed {
                what,
                reason: format!("format {:?}, expected {PUBLIC_FORMAT:?}", f.format),
            });
        }
        if f.verification.len() > MAX_PARTIES as usize {
            return Err(Error::ThresholdParams(format!(
                "{} verification keys, at most {MAX_PARTIES}",
                f.verification.len()
            )));
        }
        let n = number(what, &f.n)?;
        let public = if small_ok {
            small_public(n)?
        } else {
            PublicKey::from_n(n)?
        };
        let vks = f
            .verification
            .iter()
            .map(|x| number(what, x))
            .collect::<Result<Vec<_>>>()?;
        ThresholdKey::from_parts(public, f.threshold, number(what, &f.v)?, vks)
    }

    fn bounded<'a>(what: &'static str, text: &'a str) -> Result<&'a str> {
        if text.len() > MAX_FILE_BYTES {
            return Err(Error::Malformed {
                what,
                reason: format!("{} bytes, at most {MAX_FILE_BYTES}", text.len()),
            });
        }
        Ok(text)
    }

    /// The public file of `key`.
    pub fn public_to_json(key: &ThresholdKey) -> String {
        serde_json::to_string_pretty(&public_file(key)).expect("plain data")
    }

    #[cfg(feature = "hazmat-insecure-small-keys")]
    fn small_public(n: BigUint) -> Result<PublicKey> {
        PublicKey::from_n_insecure_for_tests(n)
    }

    #[cfg(not(feature = "hazmat-insecure-small-keys"))]
    fn small_public(n: BigUint) -> Result<PublicKey> {
        PublicKey::from_n(n)
    }

    /// Parses and checks a public file (keys of at least 2048 bits).
    pub fn public_from_json(text: &str) -> Result<ThresholdKey> {
        public_from_json_checked(text, false)
    }

    /// As [`public_from_json`], accepting small test keys. INSECURE: tests only.
    #[cfg(feature = "hazmat-insecure-small-keys")]
    pub fn public_from_json_insecure_for_tests(text: &str) -> Result<ThresholdKey> {
        public_from_json_checked(text, true)
    }

    fn public_from_json_checked(text: &str, small_ok: bool) -> Result<ThresholdKey> {
        const WHAT: &str = "threshold public key file";
        let f: PublicFile =
            serde_json::from_str(bounded(WHAT, text)?).map_err(|e| Error::Malformed {
                what: WHAT,
                reason: e.to_string(),
            })?;
        parse_public(WHAT, f, small_ok)
    }

    /// The share file of `share` (contains the secret share).
    pub fn share_to_json(share: &KeyShare) -> zeroize::Zeroizing<String> {
        let f = ShareFile {
            format: SHARE_FORMAT.into(),
            index: share.index,
            share: share.share.to_string(),
            public: public_file(&share.key),
        };
        zeroize::Zeroizing::new(serde_json::to_string_pretty(&f).expect("plain data"))
    }

    /// Parses a share file and checks the share against its verification key.
    pub fn share_from_json(text: &str) -> Result<KeyShare> {
        share_from_json_checked(text, false)
    }

    /// As [`share_from_json`], accepting small test keys. INSECURE: tests only.
    #[cfg(feature = "hazmat-insecure-small-keys")]
    pub fn share_from_json_insecure_for_tests(text: &str) -> Result<KeyShare> {
        share_from_json_checked(text, true)
    }

    fn share_from_json_checked(text: &str, small_ok: bool) -> Result<KeyShare> {
        const WHAT: &str = "threshold key share file";
        let mut f: ShareFile =
            serde_json::from_str(bounded(WHAT, text)?).map_err(|e| Error::Malformed {
                what: WHAT,
                reason: e.to_string(),
            })?;
        if f.format != SHARE_FORMAT {
            return Err(Error::Malformed {
                what: WHAT,
                reason: format!("format {:?}, expected {SHARE_FORMAT:?}", f.format),
            });
        }
        let share = number(WHAT, &f.share);
        zeroize::Zeroize::zeroize(&mut f.share);
        let key = parse_public(WHAT, f.public, small_ok)?;
        KeyShare::from_parts(key, f.index, share?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lagrange_coefficients_times_delta_are_integers() {
        // mu_i for every 3-subset of 5 parties.
        let delta = BigInt::from(120u32);
        for s in [[1, 2, 3], [1, 4, 5], [2, 3, 5]] {
            for &i in &s {
                let (mut num, mut den) = (delta.clone(), BigInt::one());
                for &j in &s {
                    if j != i {
                        num *= j;
                        den *= j - i;
                    }
                }
                assert!((&num % &den).is_zero(), "{s:?} {i}");
            }
        }
    }

    #[test]
    fn safe_primes_are_safe() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (p, pp) = safe_prime(128, &mut rng);
        assert_eq!(p.bits(), 128);
        assert_eq!(p, (&pp << 1) + 1u32);
        assert!(prime::is_probable_prime(&p, 40, &mut rng));
        assert!(prime::is_probable_prime(&pp, 40, &mut rng));
    }
}
