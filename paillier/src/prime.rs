//! Probable-prime generation for key generation: random odd candidates of an
//! exact bit length, sieved incrementally by the small primes, then
//! Miller-Rabin with random bases, with the round counts of FIPS 186-5
//! (Table B.1) for the prime sizes of 2048- and 3072-bit moduli.

use crate::arith::Monty;
use num_bigint::{BigUint, RandBigInt};
use num_traits::ToPrimitive;
use rand::{CryptoRng, RngCore};
use std::sync::OnceLock;

/// Upper bound of the trial-division sieve. Removing candidates with a factor
/// below 2^16 leaves about 1 in 10 odd numbers for Miller-Rabin.
const SIEVE_LIMIT: u32 = 1 << 16;

pub(crate) fn small_primes() -> &'static [u32] {
    static PRIMES: OnceLock<Vec<u32>> = OnceLock::new();
    PRIMES.get_or_init(|| {
        let n = SIEVE_LIMIT as usize;
        let mut composite = vec![false; n];
        let mut out = Vec::new();
        for i in 2..n {
            if !composite[i] {
                out.push(i as u32);
                let mut j = i * i;
                while j < n {
                    composite[j] = true;
                    j += i;
                }
            }
        }
        out
    })
}

/// Miller-Rabin rounds for a prime of `bits` bits. FIPS 186-5 Table B.1 gives
/// 5 rounds for 1024-bit primes (2048-bit modulus) and 4 for 1536-bit primes
/// (3072-bit modulus) at the error probabilities those sizes call for; smaller
/// (test-only) primes get many more rounds since they are cheap.
pub fn mr_rounds(bits: usize) -> usize {
    match bits {
        0..=511 => 40,
        512..=1023 => 7,
        1024..=1535 => 5,
        _ => 4,
    }
}

/// Miller-Rabin with `rounds` random bases in `[2, n-2]`. Also handles tiny `n`.
pub fn is_probable_prime<R: RngCore + CryptoRng>(n: &BigUint, rounds: usize, rng: &mut R) -> bool {
    if let Some(small) = n.to_u32() {
        if small < 2 {
            return false;
        }
        if small < SIEVE_LIMIT {
            return small_primes().binary_search(&small).is_ok();
        }
    }
    if !n.bit(0) {
        return false;
    }
    for &p in small_primes().iter().take(256) {
        if (n % p).to_u32() == Some(0) {
            return false;
        }
    }
    miller_rabin(n, rounds, rng)
}

fn miller_rabin<R: RngCore + CryptoRng>(n: &BigUint, rounds: usize, rng: &mut R) -> bool {
    let n1 = n - 1u32;
    let s = n1.trailing_zeros().unwrap_or(0);
    let d = &n1 >> s;
    let mo = Monty::new(n).expect("odd modulus");
    let one_m = mo.one().to_vec();
    let minus_one_m = mo.to_mont(&n1);
    let k = mo.limbs();
    let two = BigUint::from(2u32);
    let mut x = vec![0u64; k];
    let mut tmp = vec![0u64; k];
    'rounds: for _ in 0..rounds {
        let a = rng.gen_biguint_range(&two, &n1);
        mo.pow_mont_into(&mo.to_mont(&a), &d, &mut x);
        if x == one_m || x == minus_one_m {
            continue;
        }
        for _ in 1..s {
            mo.sqr_into(&x, &mut tmp);
            std::mem::swap(&mut x, &mut tmp);
            if x == minus_one_m {
                continue 'rounds;
            }
            if x == one_m {
                return false;
            }
        }
        return false;
    }
    true
}

/// A random probable prime of exactly `bits` bits whose two top bits are set
/// (so a product of two such primes has exactly the sum of their lengths).
pub fn random_prime<R: RngCore + CryptoRng>(bits: usize, rng: &mut R) -> BigUint {
    assert!(bits >= 16, "prime too small");
    let primes = small_primes();
    let rounds = mr_rounds(bits);
    loop {
        let mut base = rng.gen_biguint(bits as u64);
        base.set_bit(bits as u64 - 1, true);
        base.set_bit(bits as u64 - 2, true);
        base.set_bit(0, true);
        // Residues of the base; candidates are base + delta for even delta.
        let residues: Vec<u32> = primes[1..]
            .iter()
            .map(|&p| (&base % p).to_u32().unwrap_or(0))
            .collect();
        let mut delta: u32 = 0;
        // Scan a window of candidates; restart with a fresh base if it is
        // exhausted or would change the bit length.
        while delta < (1 << 20) {
            let ok = primes[1..]
                .iter()
                .zip(&residues)
                .all(|(&p, &r)| !(r as u64 + delta as u64).is_multiple_of(p as u64));
            if ok {
                let cand = &base + delta;
                if cand.bits() as usize != bits {
                    break;
                }
                if miller_rabin(&cand, rounds, rng) {
                    return cand;
                }
            }
            delta += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_traits::One;
    use rand::rngs::OsRng;

    #[test]
    fn known_primes_and_composites() {
        let mut rng = OsRng;
        // 2^127 - 1 is prime; 2^128 + 1 is not.
        let m127 = (BigUint::one() << 127u32) - 1u32;
        assert!(is_probable_prime(&m127, 20, &mut rng));
        let f7 = (BigUint::one() << 128u32) + 1u32;
        assert!(!is_probable_prime(&f7, 20, &mut rng));
        // Carmichael number 561 and a large Carmichael number (Arnault-style
        // strong pseudoprimes to small bases still fail random bases).
        assert!(!is_probable_prime(&BigUint::from(561u32), 20, &mut rng));
        let carmichael = BigUint::parse_bytes(b"3825123056546413051", 10).unwrap();
        assert!(!is_probable_prime(&carmichael, 20, &mut rng));
        assert!(is_probable_prime(&BigUint::from(65537u32), 20, &mut rng));
        assert!(is_probable_prime(&BigUint::from(2u32), 20, &mut rng));
        assert!(!is_probable_prime(&BigUint::from(1u32), 20, &mut rng));
        // Product of two primes above the sieve limit.
        let p = BigUint::from(1_000_003u32) * BigUint::from(1_000_033u32);
        assert!(!is_probable_prime(&p, 20, &mut rng));
    }

    #[test]
    fn random_prime_has_exact_length() {
        let mut rng = OsRng;
        for bits in [64usize, 256, 512] {
            let p = random_prime(bits, &mut rng);
            assert_eq!(p.bits() as usize, bits);
            assert!(p.bit(bits as u64 - 2));
            assert!(is_probable_prime(&p, 30, &mut rng));
        }
    }
}
