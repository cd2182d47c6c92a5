//! python-paillier's signed-number encoding ([`EncodedNumber`]) and the
//! encrypted numbers built on it ([`EncryptedNumber`]).
//!
//! A number is `int_rep * BASE^exponent` with `BASE = 16`; `int_rep` is stored
//! mod `n` (negatives as `n - |v|`) and must satisfy `|int_rep| <= max_int =
//! n/3 - 1`. The exponent is chosen exactly as phe 1.5's
//! `EncodedNumber.encode` with `precision=None`: integers get exponent 0;
//! floats get `floor((frexp(x)[1] - 53) / 4)`, which makes `int_rep` exact (no
//! rounding ever happens). Arithmetic on [`EncryptedNumber`] mirrors phe's
//! `EncryptedNumber` (`_add_encrypted`, `_add_scalar`, `__mul__`, `_raw_mul`),
//! so results decrypt to the same value, and in most cases the same
//! ciphertext value, as phe computes.

use crate::ciphertext::Ciphertext;
use crate::error::{Error, Result};
use crate::keys::{PrivateKey, PublicKey};
use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{One, Signed, Zero};

/// The encoding base (phe `EncodedNumber.BASE`).
pub const BASE: u32 = 16;
/// `log2(BASE)` (phe `EncodedNumber.LOG2_BASE`).
pub const LOG2_BASE: i32 = 4;
/// Bits of an `f64` significand (phe `FLOAT_MANTISSA_BITS`, `sys.float_info.mant_dig`).
pub const FLOAT_MANTISSA_BITS: i32 = 53;
/// Smallest exponent accepted from parsing or produced by arithmetic.
pub const MIN_EXPONENT: i32 = -4096;
/// Largest exponent accepted from parsing or produced by arithmetic.
pub const MAX_EXPONENT: i32 = 4096;

pub(crate) fn check_exponent(e: i64) -> Result<i32> {
    if e < MIN_EXPONENT as i64 || e > MAX_EXPONENT as i64 {
        Err(Error::ExponentOutOfRange {
            exponent: e,
            min: MIN_EXPONENT,
            max: MAX_EXPONENT,
        })
    } else {
        Ok(e as i32)
    }
}

/// `x = m * 2^e` with `m` an integer (sign in `m`), for finite `x`.
fn float_parts(x: f64) -> (i64, i32) {
    let bits = x.to_bits();
    let sign = if bits >> 63 == 1 { -1 } else { 1 };
    let exp_field = ((bits >> 52) & 0x7ff) as i32;
    let frac = (bits & ((1u64 << 52) - 1)) as i64;
    if exp_field == 0 {
        (sign * frac, -1074)
    } else {
        (sign * (frac | (1 << 52)), exp_field - 1075)
    }
}

/// Python's `math.frexp(x)[1]`: `x = f * 2^e` with `0.5 <= |f| < 1` (0 for 0).
pub fn frexp_exponent(x: f64) -> i32 {
    let (m, e) = float_parts(x);
    if m == 0 {
        0
    } else {
        (64 - m.unsigned_abs().leading_zeros()) as i32 + e
    }
}

/// phe's precision exponent for a float:
/// `floor((frexp(x)[1] - FLOAT_MANTISSA_BITS) / LOG2_BASE)`.
pub fn float_exponent(x: f64) -> i32 {
    (frexp_exponent(x) - FLOAT_MANTISSA_BITS).div_euclid(LOG2_BASE)
}

/// Correctly rounded (ties to even) `mag * 2^exp2` as an `f64`; infinite on
/// overflow.
pub(crate) fn scaled_to_f64(mag: &BigUint, exp2: i64) -> f64 {
    if mag.is_zero() {
        return 0.0;
    }
    let b = mag.bits() as i64;
    let top = b + exp2; // value in [2^(top-1), 2^top)
    if top > 1025 {
        return f64::INFINITY;
    }
    // Significand bits available at this magnitude (fewer when subnormal).
    let keep = (top + 1074).min(53);
    if keep < 0 {
        return 0.0;
    }
    let shift = b - keep;
    let q: u64 = if shift > 0 {
        let s = shift as usize;
        let q = mag >> s;
        let rem = mag - (&q << s);
        let half = BigUint::one() << (s - 1);
        let mut q = u64::try_from(&q).expect("at most 53 bits");
        if rem > half || (rem == half && q & 1 == 1) {
            q += 1;
        }
        q
    } else {
        u64::try_from(&(mag << (-shift) as usize)).expect("at most 53 bits")
    };
    ldexp(q as f64, exp2 + shift)
}

/// `x * 2^e`, exact whenever the result is representable: scales in steps that
/// never pass through a less precise intermediate.
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    while e > 1000 {
        x *= 2f64.powi(1000);
        e -= 1000;
        if x.is_infinite() {
            return x;
        }
    }
    while e < -1000 {
        x *= 2f64.powi(-1000);
        e += 1000;
    }
    x * 2f64.powi(e as i32)
}

/// A plaintext number in python-paillier's encoding under one public key.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedNumber {
    pk: PublicKey,
    encoding: BigUint,
    exponent: i32,
}

impl std::fmt::Debug for EncodedNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedNumber")
            .field("key", &self.pk.fingerprint())
            .field("encoding", &self.encoding)
            .field("exponent", &self.exponent)
            .finish()
    }
}

impl EncodedNumber {
    /// Wraps an existing encoding (`encoding < n`, exponent in range).
    pub fn new(pk: &PublicKey, encoding: BigUint, exponent: i32) -> Result<EncodedNumber> {
        if &encoding >= pk.n() {
            return Err(Error::PlaintextOutOfRange);
        }
        check_exponent(exponent as i64)?;
        Ok(EncodedNumber {
            pk: pk.clone(),
            encoding,
            exponent,
        })
    }

    fn from_int_rep(pk: &PublicKey, int_rep: &BigInt, exponent: i32) -> Result<EncodedNumber> {
        check_exponent(exponent as i64)?;
        if int_rep.magnitude() > pk.max_int() {
            return Err(Error::EncodingOverflow(
                "|int_rep| exceeds max_int = n/3 - 1 for this key",
            ));
        }
        let encoding = match int_rep.sign() {
            Sign::Minus => pk.n() - int_rep.magnitude(),
            _ => int_rep.magnitude().clone(),
        };
        Ok(EncodedNumber {
            pk: pk.clone(),
            encoding,
            exponent,
        })
    }

    /// phe `EncodedNumber.encode(pk, x, max_exponent=max_exponent)` for a float.
    pub fn encode_f64(pk: &PublicKey, x: f64, max_exponent: Option<i32>) -> Result<EncodedNumber> {
        if !x.is_finite() {
            return Err(Error::NonFinite(x));
        }
        let prec = float_exponent(x);
        let exponent = max_exponent.map_or(prec, |m| m.min(prec));
        let (m, e) = float_parts(x);
        // x * 16^-exponent = m * 2^(e - 4 exponent); exponent <= prec makes the
        // shift non-negative, so int_rep is exact.
        let shift = e as i64 - LOG2_BASE as i64 * exponent as i64;
        check_exponent(exponent as i64)?;
        let int_rep = if shift >= 0 {
            if shift > pk.bits() as i64 + 64 {
                return Err(Error::EncodingOverflow(
                    "|int_rep| exceeds max_int = n/3 - 1 for this key",
                ));
            }
            BigInt::from(m) << shift as usize
        } else {
            // Only reachable for m == 0 edge cases (x = 0 has e = -1074).
            BigInt::from(m) >> (-shift) as usize
        };
        Self::from_int_rep(pk, &int_rep, exponent)
    }

    /// phe `EncodedNumber.encode(pk, x, max_exponent=max_exponent)` for an int.
    pub fn encode_i64(pk: &PublicKey, x: i64, max_exponent: Option<i32>) -> Result<EncodedNumber> {
        Self::encode_bigint(pk, &BigInt::from(x), max_exponent)
    }

    /// phe's encoding of an arbitrary integer.
    pub fn encode_bigint(
        pk: &PublicKey,
        x: &BigInt,
        max_exponent: Option<i32>,
    ) -> Result<EncodedNumber> {
        let exponent = max_exponent.map_or(0, |m| m.min(0));
        check_exponent(exponent as i64)?;
        let int_rep = x * BigInt::from(BigUint::from(BASE).pow((-exponent) as u32));
        Self::from_int_rep(pk, &int_rep, exponent)
    }

    /// The stored `int_rep mod n`.
    pub fn encoding(&self) -> &BigUint {
        &self.encoding
    }

    /// The base-16 exponent.
    pub fn exponent(&self) -> i32 {
        self.exponent
    }

    /// The key this number is encoded for.
    pub fn public_key(&self) -> &PublicKey {
        &self.pk
    }

    /// The signed mantissa, or an overflow error if the encoding lies between
    /// `max_int` and `n - max_int` (phe's "Overflow detected").
    pub fn mantissa(&self) -> Result<BigInt> {
        let n = self.pk.n();
        let max = self.pk.max_int();
        if &self.encoding >= n {
            return Err(Error::EncodingOverflow("encoding >= n (corrupted number)"));
        }
        if &self.encoding <= max {
            Ok(BigInt::from(self.encoding.clone()))
        } else if self.encoding >= n - max {
            Ok(-BigInt::from(n - &self.encoding))
        } else {
            Err(Error::EncodingOverflow(
                "decrypted value in the overflow band between max_int and n - max_int",
            ))
        }
    }

    /// phe `EncodedNumber.decode()`, as an `f64` (correctly rounded, like
    /// Python's `int / int`). Errors on overflow instead of returning a wrong
    /// number.
    pub fn decode_f64(&self) -> Result<f64> {
        let mant = self.mantissa()?;
        let v = scaled_to_f64(mant.magnitude(), LOG2_BASE as i64 * self.exponent as i64);
        if v.is_infinite() {
            return Err(Error::EncodingOverflow(
                "decoded value exceeds the f64 range",
            ));
        }
        Ok(if mant.is_negative() { -v } else { v })
    }

    /// Decodes to an `i64` when the number is an integer in range.
    pub fn decode_i64(&self) -> Result<i64> {
        let mant = self.mantissa()?;
        let v = if self.exponent >= 0 {
            mant * BigInt::from(BigUint::from(BASE).pow(self.exponent as u32))
        } else {
            let d = BigInt::from(BigUint::from(BASE).pow((-self.exponent) as u32));
            if !(&mant % &d).is_zero() {
                return Err(Error::EncodingOverflow("value is not an integer"));
            }
            mant / d
        };
        i64::try_from(&v).map_err(|_| Error::EncodingOverflow("value exceeds the i64 range"))
    }

    /// phe `decrease_exponent_to`: same value with a smaller exponent.
    pub fn decrease_exponent_to(&self, new_exp: i32) -> Result<EncodedNumber> {
        let factor = exponent_factor(self.exponent, new_exp)?;
        Ok(EncodedNumber {
            pk: self.pk.clone(),
            encoding: (&self.encoding * factor) % self.pk.n(),
            exponent: new_exp,
        })
    }
}

/// `BASE^(exponent - new_exp)`, the factor that lowers an exponent to
/// `new_exp`, which must not exceed `exponent` and must be in range.
fn exponent_factor(exponent: i32, new_exp: i32) -> Result<BigUint> {
    if new_exp > exponent {
        return Err(Error::ExponentOutOfRange {
            exponent: new_exp as i64,
            min: MIN_EXPONENT,
            max: exponent,
        });
    }
    check_exponent(new_exp as i64)?;
    Ok(BigUint::from(BASE).pow((exponent - new_exp) as u32))
}

/// An encrypted python-paillier number: a ciphertext of an encoding plus its
/// (public) exponent.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedNumber {
    ct: Ciphertext,
    exponent: i32,
}

impl std::fmt::Debug for EncryptedNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedNumber")
            .field("ciphertext", &self.ct)
            .field("exponent", &self.exponent)
            .finish()
    }
}

impl EncryptedNumber {
    /// Pairs a ciphertext with an exponent (checked to be in range).
    pub fn new(ct: Ciphertext, exponent: i32) -> Result<EncryptedNumber> {
        check_exponent(exponent as i64)?;
        Ok(EncryptedNumber { ct, exponent })
    }

    /// The raw ciphertext.
    pub fn ciphertext(&self) -> &Ciphertext {
        &self.ct
    }

    /// The base-16 exponent.
    pub fn exponent(&self) -> i32 {
        self.exponent
    }

    /// The key.
    pub fn public_key(&self) -> &PublicKey {
        self.ct.public_key()
    }

    /// phe `EncryptedNumber.decrease_exponent_to`: multiplies by
    /// `16^(exponent - new_exp)`, which must fit as an encoding (phe raises
    /// otherwise too).
    pub fn decrease_exponent_to(&self, new_exp: i32) -> Result<EncryptedNumber> {
        let factor = exponent_factor(self.exponent, new_exp)?;
        let enc = EncodedNumber::encode_bigint(self.public_key(), &BigInt::from(factor), None)?;
        let ct = self.raw_mul(enc.encoding());
        Ok(EncryptedNumber {
            ct,
            exponent: new_exp,
        })
    }

    /// phe `_raw_mul`: `c^k`, or `(c^-1)^(n-k)` when `k` encodes a negative,
    /// so the exponent is the scalar's magnitude (tens of bits for a float),
    /// never the `|n|`-bit `n - |v|`.
    ///
    /// Speed: the inverse is taken mod `n` and lifted to `n^2`
    /// ([`inverse_mod_square_vartime`](crate::arith::inverse_mod_square_vartime)),
    /// and the short exponent goes through a sliding window
    /// ([`Monty::pow_vartime`](crate::arith::Monty::pow_vartime)). Both take
    /// time that depends on the scalar's bits, as python-paillier's
    /// `gmpy2.powmod` and `invert` do; the ciphertext is public.
    fn raw_mul(&self, k: &BigUint) -> Ciphertext {
        let pk = self.public_key();
        let mo = pk.monty_n2();
        if k >= &(pk.n() - pk.max_int()) {
            let inv = crate::arith::inverse_mod_square_vartime(self.ct.value(), pk.n())
                .expect("a valid ciphertext is a unit mod n^2");
            self.ct.with_value(mo.pow_vartime(&inv, &(pk.n() - k)))
        } else {
            self.ct.with_value(mo.pow_vartime(self.ct.value(), k))
        }
    }

    /// phe `_add_encrypted`: aligns the exponents (the larger one decreases),
    /// then adds.
    pub fn add(&self, other: &EncryptedNumber) -> Result<EncryptedNumber> {
        self.public_key().check_same(other.public_key())?;
        let (a, b) = align(self, other)?;
        Ok(EncryptedNumber {
            ct: a.ct.add(&b.ct)?,
            exponent: a.exponent,
        })
    }

    /// phe `_add_encoded`.
    pub fn add_encoded(&self, e: &EncodedNumber) -> Result<EncryptedNumber> {
        self.public_key().check_same(e.public_key())?;
        let (a, b) = if self.exponent > e.exponent {
            (self.decrease_exponent_to(e.exponent)?, e.clone())
        } else if e.exponent > self.exponent {
            (self.clone(), e.decrease_exponent_to(self.exponent)?)
        } else {
            (self.clone(), e.clone())
        };
        Ok(EncryptedNumber {
            ct: a.ct.add_plain(b.encoding())?,
            exponent: a.exponent,
        })
    }

    /// phe `_add_scalar` for a float: encodes with `max_exponent = self.exponent`.
    pub fn add_f64(&self, x: f64) -> Result<EncryptedNumber> {
        let e = EncodedNumber::encode_f64(self.public_key(), x, Some(self.exponent))?;
        self.add_encoded(&e)
    }

    /// phe `_add_scalar` for an int.
    pub fn add_i64(&self, x: i64) -> Result<EncryptedNumber> {
        let e = EncodedNumber::encode_i64(self.public_key(), x, Some(self.exponent))?;
        self.add_encoded(&e)
    }

    /// phe `__mul__` with an already encoded scalar.
    ///
    /// Timing: the running time follows the scalar's value (its magnitude,
    /// bit pattern and sign go through [`Monty::pow_vartime`] and, for a
    /// negative scalar, an inverse), as in python-paillier. Multiply only by
    /// scalars that may leak to whoever can time this process; the
    /// ciphertext's value does not leak beyond what it is (public).
    ///
    /// [`Monty::pow_vartime`]: crate::arith::Monty::pow_vartime
    pub fn mul_encoded(&self, e: &EncodedNumber) -> Result<EncryptedNumber> {
        self.public_key().check_same(e.public_key())?;
        let exponent = check_exponent(self.exponent as i64 + e.exponent as i64)?;
        Ok(EncryptedNumber {
            ct: self.raw_mul(e.encoding()),
            exponent,
        })
    }

    /// phe `__mul__` with a float (encoded with its own precision exponent).
    pub fn mul_f64(&self, x: f64) -> Result<EncryptedNumber> {
        self.mul_encoded(&EncodedNumber::encode_f64(self.public_key(), x, None)?)
    }

    /// phe `__mul__` with an int.
    pub fn mul_i64(&self, x: i64) -> Result<EncryptedNumber> {
        self.mul_encoded(&EncodedNumber::encode_i64(self.public_key(), x, None)?)
    }

    /// Negation (phe `self * -1`).
    pub fn neg(&self) -> Result<EncryptedNumber> {
        self.mul_i64(-1)
    }

    /// phe `__sub__`: `self + other * -1`.
    pub fn sub(&self, other: &EncryptedNumber) -> Result<EncryptedNumber> {
        self.add(&other.neg()?)
    }

    /// `self - x` for a float.
    pub fn sub_f64(&self, x: f64) -> Result<EncryptedNumber> {
        self.add_f64(-x)
    }

    /// Same number under fresh randomness.
    pub fn rerandomize(&self) -> EncryptedNumber {
        EncryptedNumber {
            ct: self.ct.rerandomize(),
            exponent: self.exponent,
        }
    }
}

fn align(a: &EncryptedNumber, b: &EncryptedNumber) -> Result<(EncryptedNumber, EncryptedNumber)> {
    Ok(if a.exponent > b.exponent {
        (a.decrease_exponent_to(b.exponent)?, b.clone())
    } else if a.exponent < b.exponent {
        (a.clone(), b.decrease_exponent_to(a.exponent)?)
    } else {
        (a.clone(), b.clone())
    })
}

impl PublicKey {
    /// Encrypts an encoded number (DJN path).
    pub fn encrypt_encoded(&self, e: &EncodedNumber) -> Result<EncryptedNumber> {
        self.check_same(e.public_key())?;
        Ok(EncryptedNumber {
            ct: self.encrypt_raw(e.encoding())?,
            exponent: e.exponent(),
        })
    }

    /// Encodes (phe style) and encrypts a float.
    pub fn encrypt_f64(&self, x: f64) -> Result<EncryptedNumber> {
        self.encrypt_encoded(&EncodedNumber::encode_f64(self, x, None)?)
    }

    /// Encodes (phe style, exponent 0) and encrypts an integer.
    pub fn encrypt_i64(&self, x: i64) -> Result<EncryptedNumber> {
        self.encrypt_encoded(&EncodedNumber::encode_i64(self, x, None)?)
    }
}

impl PrivateKey {
    /// Decrypts to the encoded number.
    pub fn decrypt_encoded(&self, x: &EncryptedNumber) -> Result<EncodedNumber> {
        let m = self.decrypt_raw(x.ciphertext())?;
        EncodedNumber::new(self.public_key(), m, x.exponent())
    }

    /// Decrypts and decodes to `f64`; overflow is an error.
    pub fn decrypt_f64(&self, x: &EncryptedNumber) -> Result<f64> {
        self.decrypt_encoded(x)?.decode_f64()
    }

    /// Decrypts and decodes to `i64`; non-integers and overflow are errors.
    pub fn decrypt_i64(&self, x: &EncryptedNumber) -> Result<i64> {
        self.decrypt_encoded(x)?.decode_i64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_matches_python() {
        // Values from Python's math.frexp.
        assert_eq!(frexp_exponent(1.0), 1);
        assert_eq!(frexp_exponent(0.5), 0);
        assert_eq!(frexp_exponent(0.0), 0);
        assert_eq!(frexp_exponent(-3.0), 2);
        assert_eq!(frexp_exponent(f64::MIN_POSITIVE), -1021);
        assert_eq!(frexp_exponent(5e-324), -1073);
        assert_eq!(frexp_exponent(f64::MAX), 1024);
        // phe: encode(0.5).exponent == -14, encode(1.0) == -13, encode(0.0) == -14.
        assert_eq!(float_exponent(0.5), -14);
        assert_eq!(float_exponent(1.0), -13);
        assert_eq!(float_exponent(0.0), -14);
        assert_eq!(float_exponent(1e10), -5);
    }

    #[test]
    fn scaled_rounding() {
        let v = BigUint::from(3u32);
        assert_eq!(scaled_to_f64(&v, -1), 1.5);
        assert_eq!(scaled_to_f64(&v, 0), 3.0);
        // 2^53 + 1 rounds to even (2^53); 2^53 + 3 rounds up.
        let two53 = BigUint::one() << 53u32;
        assert_eq!(scaled_to_f64(&(&two53 + 1u32), 0), 9007199254740992.0);
        assert_eq!(scaled_to_f64(&(&two53 + 3u32), 0), 9007199254740996.0);
        // Smallest subnormal and its half (tie to even -> 0), 3/4 (-> up).
        assert_eq!(scaled_to_f64(&BigUint::one(), -1074), 5e-324);
        assert_eq!(scaled_to_f64(&BigUint::one(), -1075), 0.0);
        assert_eq!(scaled_to_f64(&BigUint::from(3u32), -1076), 5e-324);
        assert_eq!(scaled_to_f64(&BigUint::one(), 1024), f64::INFINITY);
        assert_eq!(scaled_to_f64(&BigUint::one(), 1023), 2f64.powi(1023));
    }
}
