//! Modular exponentiation on a [`Monty`]: the regular fixed-window
//! [`Monty::pow`] / [`Monty::pow_mont_into`] with masked table selection, and
//! the sliding-window [`Monty::pow_vartime`] for public short exponents.

use super::limbs::{ct_select, extract_bits};
use super::Monty;
use num_bigint::BigUint;

impl Monty {
    /// `base^exp mod m` with a fixed window and masked table selection (see the
    /// module docs for what that does and does not promise).
    pub fn pow(&self, base: &BigUint, exp: &BigUint) -> BigUint {
        let k = self.limbs();
        let b = self.to_mont(base);
        let mut acc = vec![0u64; k];
        self.pow_mont_into(&b, exp, &mut acc);
        self.from_mont(&acc)
    }

    /// `base^exp mod m` by a left-to-right sliding window over odd powers,
    /// for short exponents (`k` squarings and about `k / (w + 1)`
    /// multiplications for a `k`-bit exponent, against `k / w` plus a
    /// table twice as large for [`pow`](Self::pow)).
    ///
    /// Variable time. Leaks `exp`: the sequence of squarings and
    /// multiplications follows its bits and length (as GMP's `mpz_powm`,
    /// which python-paillier uses for the same operation). `base` and the
    /// modulus go through the same regular multiplications as [`pow`](Self::pow)
    /// and are not what leaks. Only for exponents whose bit pattern may leak
    /// through timing, such as a plaintext scalar the caller does not keep
    /// secret from observers of its timing.
    pub fn pow_vartime(&self, base: &BigUint, exp: &BigUint) -> BigUint {
        let k = self.limbs();
        let ebits = exp.bits();
        if ebits == 0 {
            return self.from_mont(&self.one);
        }
        let w: u64 = match ebits {
            0..=8 => 1,
            9..=24 => 2,
            25..=80 => 3,
            81..=240 => 4,
            241..=672 => 5,
            _ => 6,
        };
        // table[i] = b^(2i + 1).
        let half = 1usize << (w - 1);
        let b = self.to_mont(base);
        let mut table = vec![0u64; half * k];
        table[..k].copy_from_slice(&b);
        if half > 1 {
            let mut b2 = vec![0u64; k];
            self.sqr_into(&b, &mut b2);
            for i in 1..half {
                let (prev, cur) = table.split_at_mut(i * k);
                self.mul_into(&prev[(i - 1) * k..], &b2, &mut cur[..k]);
            }
        }
        let mut acc = vec![0u64; k];
        let mut tmp = vec![0u64; k];
        let mut started = false;
        // Bits above `i` are consumed; `i + 1` avoids underflow at bit 0.
        let mut i = ebits;
        while i > 0 {
            if !exp.bit(i - 1) {
                if started {
                    self.sqr_into(&acc, &mut tmp);
                    std::mem::swap(&mut acc, &mut tmp);
                }
                i -= 1;
                continue;
            }
            // Longest window of at most w bits ending in a set bit.
            let mut lo = i.saturating_sub(w);
            while !exp.bit(lo) {
                lo += 1;
            }
            let mut val = 0usize;
            for t in (lo..i).rev() {
                val = (val << 1) | exp.bit(t) as usize;
            }
            let entry = &table[(val >> 1) * k..(val >> 1) * k + k];
            if started {
                for _ in lo..i {
                    self.sqr_into(&acc, &mut tmp);
                    std::mem::swap(&mut acc, &mut tmp);
                }
                self.mul_into(&acc, entry, &mut tmp);
                std::mem::swap(&mut acc, &mut tmp);
            } else {
                acc.copy_from_slice(entry);
                started = true;
            }
            i = lo;
        }
        self.from_mont(&acc)
    }

    /// `prod_k bases[k]^exps[k] mod m` for public short exponents, by
    /// Straus's interleaving: one chain of squarings shared by every base
    /// (the longest exponent's bits) and, per 4-bit window, one multiplication
    /// per base whose digit is not zero. For many bases with 128-bit
    /// exponents this costs about a third of separate exponentiations.
    ///
    /// Variable time. Leaks the exponents (their digits decide which
    /// multiplications happen) and their lengths, as [`pow_vartime`](Self::pow_vartime);
    /// only for public exponents.
    pub fn multi_pow_vartime(&self, bases: &[&BigUint], exps: &[BigUint]) -> BigUint {
        assert_eq!(bases.len(), exps.len(), "one exponent per base");
        const W: usize = 4;
        let k = self.limbs();
        let size = 1usize << W;
        // tables[j][d] = bases[j]^d, d < 16, in Montgomery form.
        let mut tables = vec![0u64; bases.len() * size * k];
        for (j, b) in bases.iter().enumerate() {
            let t = &mut tables[j * size * k..(j + 1) * size * k];
            t[..k].copy_from_slice(&self.one);
            t[k..2 * k].copy_from_slice(&self.to_mont(b));
            for d in 2..size {
                let (prev, cur) = t.split_at_mut(d * k);
                self.mul_into(&prev[(d - 1) * k..], &prev[k..2 * k], &mut cur[..k]);
            }
        }
        let digits: Vec<Vec<u64>> = exps.iter().map(|e| e.to_u64_digits()).collect();
        let bits = exps.iter().map(|e| e.bits() as usize).max().unwrap_or(0);
        let windows = bits.div_ceil(W);
        let mut acc = self.one.clone();
        let mut tmp = vec![0u64; k];
        for i in (0..windows).rev() {
            if i + 1 < windows {
                for _ in 0..W {
                    self.sqr_into(&acc, &mut tmp);
                    std::mem::swap(&mut acc, &mut tmp);
                }
            }
            for (j, d) in digits.iter().enumerate() {
                let v = extract_bits(d, i * W, W);
                if v != 0 {
                    let e = &tables[(j * size + v) * k..(j * size + v + 1) * k];
                    self.mul_into(&acc, e, &mut tmp);
                    std::mem::swap(&mut acc, &mut tmp);
                }
            }
        }
        self.from_mont(&acc)
    }

    /// Montgomery-form exponentiation: `out = b^exp` with `b`, `out` in
    /// Montgomery form.
    pub fn pow_mont_into(&self, b: &[u64], exp: &BigUint, out: &mut [u64]) {
        let k = self.limbs();
        let ebits = exp.bits() as usize;
        out.copy_from_slice(&self.one);
        if ebits == 0 {
            return;
        }
        let w = window_for(ebits);
        let size = 1usize << w;
        // table[i] = b^i, flattened; even entries by the cheaper squaring.
        let mut table = vec![0u64; size * k];
        table[..k].copy_from_slice(&self.one);
        table[k..2 * k].copy_from_slice(b);
        for i in 2..size {
            let (prev, cur) = table.split_at_mut(i * k);
            if i.is_multiple_of(2) {
                self.sqr_into(&prev[(i / 2) * k..(i / 2 + 1) * k], &mut cur[..k]);
            } else {
                self.mul_into(&prev[(i - 1) * k..], b, &mut cur[..k]);
            }
        }
        let digits = exp.to_u64_digits();
        let windows = ebits.div_ceil(w);
        // Ping-pong between two buffers instead of copying after every step.
        let mut acc = self.one.clone();
        let mut tmp = vec![0u64; k];
        let mut sel = vec![0u64; k];
        for wi in (0..windows).rev() {
            if wi != windows - 1 {
                for _ in 0..w {
                    self.sqr_into(&acc, &mut tmp);
                    std::mem::swap(&mut acc, &mut tmp);
                }
            }
            let d = extract_bits(&digits, wi * w, w);
            ct_select(&table, k, d, &mut sel);
            self.mul_into(&acc, &sel, &mut tmp);
            std::mem::swap(&mut acc, &mut tmp);
        }
        out.copy_from_slice(&acc);
    }
}

/// Window size minimizing table building (`2^w - 2` multiplications) plus
/// one multiplication per window, with the squarings fixed at `ebits`:
/// `w = 5` wins up to about 960-bit exponents and ties `w = 6` at 1024 bits
/// (decryption mod `p^2` at 2048-bit keys), where its 32-entry table also
/// halves the masked-scan cost; `w = 6` wins at 1536 bits (3072-bit keys).
fn window_for(ebits: usize) -> usize {
    match ebits {
        0..=24 => 1,
        25..=80 => 3,
        81..=240 => 4,
        241..=1100 => 5,
        _ => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::test_rng as rng;
    use num_bigint::RandBigInt;
    use num_traits::One;

    #[test]
    fn pow_vartime_matches_num_bigint() {
        let mut r = rng();
        for bits in [64u64, 192, 1024, 2048, 4096] {
            let mut m = r.gen_biguint(bits);
            m.set_bit(0, true);
            m.set_bit(bits - 1, true);
            let mo = Monty::new(&m).unwrap();
            let a = r.gen_biguint_below(&m);
            for ebits in [
                0u64, 1, 2, 7, 8, 9, 24, 25, 53, 64, 80, 81, 200, 256, 700, 1100,
            ] {
                for e in [
                    r.gen_biguint(ebits),
                    (BigUint::one() << ebits) - 1u32,
                    BigUint::one() << ebits,
                ] {
                    assert_eq!(mo.pow_vartime(&a, &e), a.modpow(&e, &m), "{bits} {e}");
                }
            }
        }
    }

    #[test]
    fn multi_pow_vartime_matches_separate_powers() {
        let mut r = rng();
        for bits in [64u64, 1024, 4096] {
            let mut m = r.gen_biguint(bits);
            m.set_bit(0, true);
            m.set_bit(bits - 1, true);
            let mo = Monty::new(&m).unwrap();
            for n in [0usize, 1, 2, 5] {
                let bases: Vec<BigUint> = (0..n).map(|_| r.gen_biguint_below(&m)).collect();
                // Exponents of different lengths, zero and all-ones among them.
                let exps: Vec<BigUint> = (0..n)
                    .map(|i| match i % 3 {
                        0 => r.gen_biguint(130),
                        1 => BigUint::from(0u32),
                        _ => (BigUint::one() << (7 * i + 1)) - 1u32,
                    })
                    .collect();
                let refs: Vec<&BigUint> = bases.iter().collect();
                let want = bases
                    .iter()
                    .zip(&exps)
                    .fold(BigUint::one() % &m, |acc, (b, e)| {
                        acc * b.modpow(e, &m) % &m
                    });
                assert_eq!(
                    mo.multi_pow_vartime(&refs, &exps),
                    want,
                    "{bits} bits, {n} bases"
                );
            }
        }
    }
}
