//! Modular inverses: Lehmer's extended Euclid and its lift to `n^2` for
//! public values (variable time), Fermat's inverse and the Hensel lift for
//! secrets.

use super::limbs::wipe;
use super::Monty;
use num_bigint::BigUint;
use num_traits::{One, Zero};

/// Modular inverse by Lehmer's extended Euclidean algorithm. `None` when
/// `gcd(a, m) != 1`.
///
/// Variable time. Leaks both `a` and `m`: the number of steps, the quotients
/// and the sizes of the intermediate values follow the continued fraction of
/// `a / m`. Only for public values (a ciphertext and `n^2`); for a secret
/// prime modulus use [`inverse_mod_prime`].
///
/// Lehmer (Knuth, TAOCP vol. 2, 4.5.2, Algorithm L): the quotients of many
/// consecutive Euclid steps are found from the leading 64 bits alone, and
/// their product matrix is applied to the full numbers at once, so a
/// 2048-bit inverse costs a few dozen multiprecision linear combinations
/// instead of a thousand multiprecision divisions.
pub fn mod_inverse_vartime(a: &BigUint, m: &BigUint) -> Option<BigUint> {
    use num_bigint::BigInt;
    use num_integer::Integer;
    if m.is_zero() {
        return None;
    }
    let m_i = BigInt::from(m.clone());
    // Invariant: s0 a = r0 and s1 a = r1 (mod m), r0 > r1 >= 0.
    let (mut r0, mut r1) = (m_i.clone(), BigInt::from(a % m));
    let (mut s0, mut s1) = (BigInt::zero(), BigInt::one());
    while !r1.is_zero() {
        let bits = r0.bits();
        let (mut aa, mut bb, mut cc, mut dd) = (1i128, 0i128, 0i128, 1i128);
        if bits > 64 {
            let shift = bits - 64;
            let lead = |x: &BigInt| -> i128 {
                let (_, d) = (x >> shift).to_u64_digits();
                d.first().copied().unwrap_or(0) as i128
            };
            let (mut x, mut y) = (lead(&r0), lead(&r1));
            // Both quotient bounds agree: the step is the true Euclid step.
            while y + cc != 0 && y + dd != 0 {
                let q = (x + aa) / (y + cc);
                if q != (x + bb) / (y + dd) {
                    break;
                }
                (aa, cc) = (cc, aa - q * cc);
                (bb, dd) = (dd, bb - q * dd);
                (x, y) = (y, x - q * y);
            }
        }
        if bb == 0 {
            // No step was certain from the leading bits: one full step.
            let (q, r) = r0.div_rem(&r1);
            let s = &s0 - &q * &s1;
            (r0, r1) = (r1, r);
            (s0, s1) = (s1, s);
        } else {
            let lin = |a: i128, x: &BigInt, b: i128, y: &BigInt| -> BigInt {
                BigInt::from(a) * x + BigInt::from(b) * y
            };
            (r0, r1) = (lin(aa, &r0, bb, &r1), lin(cc, &r0, dd, &r1));
            (s0, s1) = (lin(aa, &s0, bb, &s1), lin(cc, &s0, dd, &s1));
        }
    }
    if !r0.is_one() {
        return None;
    }
    s0.mod_floor(&m_i).to_biguint()
}

/// `c^-1 mod n^2`: the inverse mod `n` by extended Euclid on half-size
/// numbers, then one Newton (Hensel) step ([`lift_inverse`]), which doubles
/// the precision from mod `n` to mod `n^2`. Euclid's cost grows with the
/// square of the size, so this is several times faster than
/// [`mod_inverse_vartime`] directly mod `n^2`. `None` when `gcd(c, n) != 1`.
///
/// Variable time. Leaks `c` and `n` (through [`mod_inverse_vartime`]): only
/// for public values, such as a ciphertext and its key's modulus.
pub fn inverse_mod_square_vartime(c: &BigUint, n: &BigUint) -> Option<BigUint> {
    let n2 = n * n;
    let c = c % &n2;
    let x0 = mod_inverse_vartime(&c, n)?;
    Some(lift_inverse(&c, &x0, &n2))
}

/// From `x0 = c^-1 mod n` to `c^-1 mod n^2` (`n2 = n^2`) by one Newton
/// (Hensel) step: `c x0 = 1 + t n`, so `x0 (2 - c x0) = x0 (1 - t n)` is the
/// inverse mod `n^2`. Three products and reductions whatever the values, no
/// branch on them: fit for secrets (as everywhere in this crate, the
/// `num-bigint` products themselves are not claimed constant-time).
pub fn lift_inverse(c: &BigUint, x0: &BigUint, n2: &BigUint) -> BigUint {
    let cx = (c * x0) % n2;
    let two_minus = (n2 + 2u32 - cx) % n2;
    (x0 * two_minus) % n2
}

/// `a^-1 mod p` for an odd prime `p`, by Fermat's little theorem:
/// `a^(p - 2) mod p` through the regular [`Monty::pow`], so the operations
/// performed depend only on the bit length of `p`, never on the bits of `a`
/// or `p`. For secret values (the CRT constants of a private key), where
/// [`mod_inverse_vartime`] would leak both. `None` when `a = 0 mod p` or `p`
/// is not odd and at least 3; a composite `p` gives no inverse either (the
/// result is checked: `a x = 1 mod p`). The Montgomery constants of `p` are
/// wiped before returning.
pub fn inverse_mod_prime(a: &BigUint, p: &BigUint) -> Option<BigUint> {
    let mut mo = Monty::new(p)?;
    let mut e = p - 2u32;
    let mut x = mo.pow(a, &e);
    let mut check = (a * &x) % p;
    // Branches only on the outcome: whether the key is accepted is public.
    let ok = check.is_one();
    wipe(&mut e);
    wipe(&mut check);
    mo.zeroize();
    if ok {
        Some(x)
    } else {
        wipe(&mut x);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::test_rng as rng;
    use num_bigint::RandBigInt;

    /// The inverse num-integer's extended Euclid gives, as an oracle.
    fn inverse_oracle(a: &BigUint, m: &BigUint) -> Option<BigUint> {
        use num_bigint::BigInt;
        use num_integer::Integer;
        let m_i = BigInt::from(m.clone());
        let e = BigInt::from(a % m).extended_gcd(&m_i);
        e.gcd
            .is_one()
            .then(|| e.x.mod_floor(&m_i).to_biguint().unwrap())
    }

    #[test]
    fn lehmer_inverse_matches_extended_gcd() {
        let mut r = rng();
        for bits in [2u64, 8, 63, 64, 65, 127, 128, 129, 300, 1024, 2048, 4096] {
            for _ in 0..20 {
                let m = r.gen_biguint(bits) + 2u32;
                // Unreduced inputs, shared factors and units all occur.
                let a = r.gen_biguint(bits + 3);
                assert_eq!(
                    mod_inverse_vartime(&a, &m),
                    inverse_oracle(&a, &m),
                    "{a} {m}"
                );
                let a = &a | BigUint::one();
                let mut m2 = m.clone();
                m2.set_bit(0, true);
                assert_eq!(mod_inverse_vartime(&a, &m2), inverse_oracle(&a, &m2));
            }
        }
        for (a, m) in [(0u32, 7u32), (1, 1), (5, 1), (6, 9), (1, 2)] {
            let (a, m) = (BigUint::from(a), BigUint::from(m));
            assert_eq!(
                mod_inverse_vartime(&a, &m),
                inverse_oracle(&a, &m),
                "{a} {m}"
            );
        }
        assert_eq!(mod_inverse_vartime(&BigUint::one(), &BigUint::zero()), None);
    }

    #[test]
    fn inverse_mod_square() {
        let mut r = rng();
        for bits in [64u64, 1024, 2048] {
            let mut n = r.gen_biguint(bits);
            n.set_bit(0, true);
            let n2 = &n * &n;
            for _ in 0..4 {
                let c = r.gen_biguint_below(&n2);
                let want = mod_inverse_vartime(&c, &n2);
                assert_eq!(inverse_mod_square_vartime(&c, &n), want);
            }
        }
        let n = BigUint::from(35u32);
        assert_eq!(inverse_mod_square_vartime(&BigUint::from(14u32), &n), None);
        assert_eq!(
            inverse_mod_square_vartime(&BigUint::from(3u32), &n),
            mod_inverse_vartime(&BigUint::from(3u32), &(&n * &n))
        );
    }

    #[test]
    fn fermat_inverse_and_lift_match_euclid() {
        let mut r = rng();
        // Primes: 65537, 2^127 - 1, 2^255 - 19, 2^521 - 1.
        let primes = [
            BigUint::from(65537u32),
            (BigUint::one() << 127u32) - 1u32,
            (BigUint::one() << 255u32) - 19u32,
            (BigUint::one() << 521u32) - 1u32,
        ];
        for p in &primes {
            let p2 = p * p;
            for a in [
                r.gen_biguint_below(p),
                r.gen_biguint(2 * p.bits()),
                BigUint::one(),
                p - 1u32,
            ] {
                let want = mod_inverse_vartime(&a, p);
                assert_eq!(inverse_mod_prime(&a, p), want, "{a} mod {p}");
                if let Some(x0) = want {
                    assert_eq!(
                        Some(lift_inverse(&a, &x0, &p2)),
                        mod_inverse_vartime(&a, &p2)
                    );
                }
            }
            assert_eq!(inverse_mod_prime(&BigUint::zero(), p), None);
            assert_eq!(inverse_mod_prime(p, p), None);
        }
        // Even or tiny moduli, and a composite (no Fermat inverse for 2 mod 91).
        assert_eq!(
            inverse_mod_prime(&BigUint::from(3u32), &BigUint::from(10u32)),
            None
        );
        assert_eq!(
            inverse_mod_prime(&BigUint::from(3u32), &BigUint::one()),
            None
        );
        assert_eq!(
            inverse_mod_prime(&BigUint::from(2u32), &BigUint::from(91u32)),
            None
        );
    }

    #[test]
    fn inverse() {
        let m = BigUint::from(35u32);
        assert_eq!(
            mod_inverse_vartime(&BigUint::from(3u32), &m),
            Some(BigUint::from(12u32))
        );
        assert_eq!(mod_inverse_vartime(&BigUint::from(7u32), &m), None);
    }
}
