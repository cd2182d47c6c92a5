//! [`FixedBaseTable`]: precomputed powers of one base, so that an
//! exponentiation costs one multiplication per window and no squaring (the
//! DJN encryption path).

use super::limbs::{ct_select, extract_bits};
use super::Monty;
use num_bigint::BigUint;

/// A precomputed fixed-base table for `base^e mod m` with exponents of at most
/// `max_bits` bits: `entries[i][d] = base^(d 2^(w i))` in Montgomery form, so an
/// exponentiation costs one multiplication per `w`-bit window and no squarings.
#[derive(Clone)]
pub struct FixedBaseTable {
    monty: Monty,
    window: usize,
    windows: usize,
    /// `windows` blocks of `2^window` entries of `k` limbs each, flattened.
    entries: Vec<u64>,
}

impl std::fmt::Debug for FixedBaseTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedBaseTable")
            .field("window", &self.window)
            .field("windows", &self.windows)
            .field("bytes", &(self.entries.len() * 8))
            .finish()
    }
}

impl FixedBaseTable {
    /// Default window: 64-entry blocks balance table size (a few MiB at 3072-bit
    /// keys) against multiplications per exponentiation.
    pub const DEFAULT_WINDOW: usize = 6;

    /// Builds the table for `base` modulo `monty`'s modulus, for exponents of up
    /// to `max_bits` bits. Blocks are built in parallel.
    pub fn new(monty: &Monty, base: &BigUint, max_bits: usize, window: usize) -> FixedBaseTable {
        use rayon::prelude::*;
        let k = monty.limbs();
        let windows = max_bits.div_ceil(window).max(1);
        let size = 1usize << window;
        // Block starts: base^(2^(w i)), by repeated squaring (sequential, cheap).
        let mut starts = Vec::with_capacity(windows);
        let mut cur = monty.to_mont(base);
        let mut tmp = vec![0u64; k];
        for _ in 0..windows {
            starts.push(cur.clone());
            for _ in 0..window {
                monty.sqr_into(&cur, &mut tmp);
                std::mem::swap(&mut cur, &mut tmp);
            }
        }
        let mut entries = vec![0u64; windows * size * k];
        entries
            .par_chunks_mut(size * k)
            .zip(starts.par_iter())
            .for_each(|(block, g)| {
                block[..k].copy_from_slice(monty.one());
                block[k..2 * k].copy_from_slice(g);
                for d in 2..size {
                    let (prev, cur) = block.split_at_mut(d * k);
                    monty.mul_into(&prev[(d - 1) * k..], g, &mut cur[..k]);
                }
            });
        FixedBaseTable {
            monty: monty.clone(),
            window,
            windows,
            entries,
        }
    }

    /// The window width in bits.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Largest exponent bit length the table supports.
    pub fn max_bits(&self) -> usize {
        self.window * self.windows
    }

    /// `base^exp` in Montgomery form. `exp` must have at most
    /// [`max_bits`](Self::max_bits) bits.
    pub fn pow_mont(&self, exp: &BigUint) -> Vec<u64> {
        assert!(
            exp.bits() as usize <= self.max_bits(),
            "exponent too wide for table"
        );
        let k = self.monty.limbs();
        let size = 1usize << self.window;
        let digits = exp.to_u64_digits();
        let mut acc = self.monty.one().to_vec();
        let mut sel = vec![0u64; k];
        let mut tmp = vec![0u64; k];
        for i in 0..self.windows {
            let d = extract_bits(&digits, i * self.window, self.window);
            let block = &self.entries[i * size * k..(i + 1) * size * k];
            ct_select(block, k, d, &mut sel);
            self.monty.mul_into(&acc, &sel, &mut tmp);
            std::mem::swap(&mut acc, &mut tmp);
        }
        acc
    }

    /// `base^exp mod m` as a `BigUint`.
    pub fn pow(&self, exp: &BigUint) -> BigUint {
        self.monty.from_mont(&self.pow_mont(exp))
    }

    /// The Montgomery context of the table's modulus.
    pub fn monty(&self) -> &Monty {
        &self.monty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::test_rng as rng;
    use num_bigint::RandBigInt;
    use num_traits::{One, Zero};

    #[test]
    fn fixed_base_table_matches() {
        let mut r = rng();
        let mut m = r.gen_biguint(1024);
        m.set_bit(0, true);
        m.set_bit(1023, true);
        let mo = Monty::new(&m).unwrap();
        let g = r.gen_biguint_below(&m);
        for w in [1usize, 4, 6] {
            let t = FixedBaseTable::new(&mo, &g, 200, w);
            for _ in 0..5 {
                let e = r.gen_biguint(200);
                assert_eq!(t.pow(&e), g.modpow(&e, &m));
            }
            assert_eq!(t.pow(&BigUint::zero()), BigUint::one());
        }
    }
}
