//! Big-integer arithmetic under the scheme: Montgomery multiplication over
//! 64-bit limbs, fixed-window modular exponentiation, and the fixed-base
//! exponentiation table used by the DJN encryption path.
//!
//! Why not `num_bigint::BigUint::modpow`: it allocates on every step, uses a
//! plain bit-by-bit ladder and has no dedicated squaring. Here the modulus is
//! fixed per key, so the Montgomery constants are computed once ([`Monty`]),
//! squarings use the symmetric product (about 25% fewer limb products) and the
//! exponent is consumed in fixed windows.
//!
//! Side channels: the exponentiation is *regular*: for a given exponent bit
//! length it performs the same sequence of squarings and multiplications
//! whatever the exponent bits are, table entries are selected with a masked scan
//! of the whole table, and the final Montgomery subtraction is masked. This is
//! a best-effort hardening in safe Rust, not an audited constant-time
//! guarantee (the compiler may still introduce branches). Everything in this
//! module named `_vartime` makes no such attempt and must only see public data.

use num_bigint::BigUint;
use num_traits::{One, Zero};

/// Converts a `BigUint` to exactly `limbs` little-endian 64-bit limbs.
/// `x` must fit; callers reduce first.
pub(crate) fn to_limbs(x: &BigUint, limbs: usize) -> Vec<u64> {
    let mut v = x.to_u64_digits();
    debug_assert!(v.len() <= limbs, "value wider than the modulus");
    v.resize(limbs, 0);
    v
}

/// Converts little-endian 64-bit limbs back to a `BigUint`.
pub(crate) fn from_limbs(limbs: &[u64]) -> BigUint {
    let mut v32 = Vec::with_capacity(limbs.len() * 2);
    for &l in limbs {
        v32.push(l as u32);
        v32.push((l >> 32) as u32);
    }
    BigUint::new(v32)
}

/// Montgomery arithmetic modulo a fixed odd modulus `m > 1`, with `R = 2^(64 k)`
/// where `k` is the modulus' limb count.
#[derive(Clone)]
pub struct Monty {
    m: Vec<u64>,
    /// `-m^{-1} mod 2^64`.
    minv: u64,
    /// `R^2 mod m`, to enter Montgomery form with one multiplication.
    r2: Vec<u64>,
    /// `R mod m`: the Montgomery form of 1.
    one: Vec<u64>,
    modulus: BigUint,
}

impl std::fmt::Debug for Monty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monty")
            .field("bits", &self.modulus.bits())
            .finish_non_exhaustive()
    }
}

impl Monty {
    /// Precomputes the constants for modulus `m`. Returns `None` if `m` is even
    /// or `< 3`.
    pub fn new(m: &BigUint) -> Option<Monty> {
        if m.bits() < 2 || !m.bit(0) {
            return None;
        }
        let limbs = m.to_u64_digits();
        let k = limbs.len();
        // Newton iteration for m0^{-1} mod 2^64: each step doubles the correct bits.
        let m0 = limbs[0];
        let mut inv: u64 = 1;
        for _ in 0..7 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(m0.wrapping_mul(inv)));
        }
        let minv = inv.wrapping_neg();
        let r = BigUint::one() << (64 * k);
        let one = to_limbs(&(&r % m), k);
        let r2 = to_limbs(&((&r * &r) % m), k);
        Some(Monty {
            m: limbs,
            minv,
            r2,
            one,
            modulus: m.clone(),
        })
    }

    /// Overwrites the constants with zeros (used when the modulus is secret,
    /// e.g. `p^2` in a private key).
    pub(crate) fn zeroize(&mut self) {
        use zeroize::Zeroize;
        self.m.zeroize();
        self.r2.zeroize();
        self.one.zeroize();
        self.minv = 0;
        crate::keys::wipe(&mut self.modulus);
    }

    /// The modulus.
    pub fn modulus(&self) -> &BigUint {
        &self.modulus
    }

    /// Number of 64-bit limbs of the modulus.
    pub fn limbs(&self) -> usize {
        self.m.len()
    }

    /// `R^2 mod m`: multiplying by it (Montgomery) enters Montgomery form.
    pub fn r2(&self) -> &[u64] {
        &self.r2
    }

    /// Montgomery form of 1.
    pub fn one(&self) -> &[u64] {
        &self.one
    }

    /// `x R mod m` for any `x` (reduced first if needed).
    pub fn to_mont(&self, x: &BigUint) -> Vec<u64> {
        let k = self.limbs();
        let xr = if x < &self.modulus {
            to_limbs(x, k)
        } else {
            to_limbs(&(x % &self.modulus), k)
        };
        let mut out = vec![0; k];
        self.mul_into(&xr, &self.r2, &mut out);
        out
    }

    /// Leaves Montgomery form: `x R^{-1} mod m`.
    pub fn from_mont(&self, x: &[u64]) -> BigUint {
        let k = self.limbs();
        let mut one = vec![0u64; k];
        one[0] = 1;
        let mut out = vec![0; k];
        self.mul_into(x, &one, &mut out);
        from_limbs(&out)
    }

    /// `out = a b R^{-1} mod m` (CIOS with the multiplication and reduction
    /// chains interleaved in one pass). `a`, `b` < m, each `k` limbs. Common
    /// sizes dispatch to versions specialized on the limb count, which the
    /// compiler unrolls and keeps free of bounds checks.
    pub fn mul_into(&self, a: &[u64], b: &[u64], out: &mut [u64]) {
        macro_rules! fixed {
            ($($n:literal),*) => {
                match self.limbs() {
                    $($n => {
                        return mul_fixed::<$n>(
                            a[..$n].try_into().expect("limbs"),
                            b[..$n].try_into().expect("limbs"),
                            self.m[..].try_into().expect("limbs"),
                            self.minv,
                            (&mut out[..$n]).try_into().expect("limbs"),
                        );
                    })*
                    _ => {}
                }
            };
        }
        fixed!(4, 8, 12, 16, 24, 32, 48, 64, 96, 128);
        self.mul_generic(a, b, out)
    }

    fn mul_generic(&self, a: &[u64], b: &[u64], out: &mut [u64]) {
        let k = self.limbs();
        let m = &self.m[..k];
        let b = &b[..k];
        // t holds k+1 limbs; t < 2m after every outer step.
        let mut t = [0u64; 2 * MAX_STACK_LIMBS + 2];
        let mut heap;
        let t: &mut [u64] = if k < MAX_STACK_LIMBS {
            &mut t[..k + 1]
        } else {
            heap = vec![0u64; k + 1];
            &mut heap[..]
        };
        for &ai in &a[..k] {
            let s0 = t[0] as u128 + ai as u128 * b[0] as u128;
            let u = (s0 as u64).wrapping_mul(self.minv);
            let r0 = (s0 as u64) as u128 + u as u128 * m[0] as u128;
            let mut c1 = (s0 >> 64) as u64;
            let mut c2 = (r0 >> 64) as u64;
            for j in 1..k {
                let s = t[j] as u128 + ai as u128 * b[j] as u128 + c1 as u128;
                c1 = (s >> 64) as u64;
                let r = (s as u64) as u128 + u as u128 * m[j] as u128 + c2 as u128;
                c2 = (r >> 64) as u64;
                t[j - 1] = r as u64;
            }
            let s = t[k] as u128 + c1 as u128 + c2 as u128;
            t[k - 1] = s as u64;
            t[k] = (s >> 64) as u64;
        }
        let top = t[k];
        final_sub(&t[..k], top, m, out);
    }

    /// `out = a^2 R^{-1} mod m`.
    pub fn sqr_into(&self, a: &[u64], out: &mut [u64]) {
        if SQR_VIA_MUL {
            return self.mul_into(a, a, out);
        }
        self.sqr_generic(a, out)
    }

    /// Symmetric schoolbook square then a separate Montgomery reduction
    /// (1.5 k^2 limb products instead of 2 k^2).
    fn sqr_generic(&self, a: &[u64], out: &mut [u64]) {
        let k = self.limbs();
        let a = &a[..k];
        let mut buf = [0u64; 2 * MAX_STACK_LIMBS + 2];
        let mut heap;
        let t: &mut [u64] = if k < MAX_STACK_LIMBS {
            &mut buf[..2 * k]
        } else {
            heap = vec![0u64; 2 * k];
            &mut heap[..]
        };
        // Off-diagonal products a_i a_j, i < j.
        for i in 0..k {
            let ai = a[i];
            let mut c: u64 = 0;
            let row = &mut t[2 * i + 1..i + k];
            for (tj, &aj) in row.iter_mut().zip(&a[i + 1..]) {
                let s = *tj as u128 + ai as u128 * aj as u128 + c as u128;
                *tj = s as u64;
                c = (s >> 64) as u64;
            }
            t[i + k] = c;
        }
        // Double them and add the squares a_i^2 on the diagonal.
        let mut carry_bit: u64 = 0;
        let mut c: u64 = 0;
        for i in 0..k {
            let lo = t[2 * i];
            let hi = t[2 * i + 1];
            let dlo = (lo << 1) | carry_bit;
            let dhi = (hi << 1) | (lo >> 63);
            carry_bit = hi >> 63;
            let sq = a[i] as u128 * a[i] as u128;
            let s = dlo as u128 + (sq as u64) as u128 + c as u128;
            t[2 * i] = s as u64;
            let s2 = dhi as u128 + (sq >> 64) + (s >> 64);
            t[2 * i + 1] = s2 as u64;
            c = (s2 >> 64) as u64;
        }
        // The full square fits 2k limbs, so no carry survives.
        debug_assert_eq!(c + carry_bit, 0);
        self.redc(t, out);
    }

    /// Montgomery reduction of a 2k-limb value `t < m R` into `out`.
    fn redc(&self, t: &mut [u64], out: &mut [u64]) {
        let k = self.limbs();
        let m = &self.m[..k];
        let mut extra: u64 = 0;
        for i in 0..k {
            let u = t[i].wrapping_mul(self.minv);
            let mut c: u64 = 0;
            let row = &mut t[i..i + k];
            for (tj, &mj) in row.iter_mut().zip(m) {
                let s = *tj as u128 + u as u128 * mj as u128 + c as u128;
                *tj = s as u64;
                c = (s >> 64) as u64;
            }
            let s = t[i + k] as u128 + c as u128 + extra as u128;
            t[i + k] = s as u64;
            extra = (s >> 64) as u64;
        }
        final_sub(&t[k..2 * k], extra, m, out);
    }

    /// `base^exp mod m` with a fixed window and masked table selection (see the
    /// module docs for what that does and does not promise).
    pub fn pow(&self, base: &BigUint, exp: &BigUint) -> BigUint {
        let k = self.limbs();
        let b = self.to_mont(base);
        let mut acc = vec![0u64; k];
        self.pow_mont_into(&b, exp, &mut acc);
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
        // table[i] = b^i, flattened.
        let mut table = vec![0u64; size * k];
        table[..k].copy_from_slice(&self.one);
        table[k..2 * k].copy_from_slice(b);
        for i in 2..size {
            let (prev, cur) = table.split_at_mut(i * k);
            self.mul_into(&prev[(i - 1) * k..], b, &mut cur[..k]);
        }
        let digits = exp.to_u64_digits();
        let windows = ebits.div_ceil(w);
        let mut tmp = vec![0u64; k];
        let mut sel = vec![0u64; k];
        for wi in (0..windows).rev() {
            if wi != windows - 1 {
                for _ in 0..w {
                    self.sqr_into(out, &mut tmp);
                    out.copy_from_slice(&tmp);
                }
            }
            let d = extract_bits(&digits, wi * w, w);
            ct_select(&table, k, d, &mut sel);
            self.mul_into(out, &sel, &mut tmp);
            out.copy_from_slice(&tmp);
        }
    }
}

/// Whether squaring reuses the specialized multiplication (faster in practice
/// than the symmetric square with a separate reduction, measured with
/// `examples/modpow_cmp.rs`).
const SQR_VIA_MUL: bool = true;

/// CIOS Montgomery multiplication specialized on the limb count `N`.
#[inline(always)]
fn mul_fixed<const N: usize>(
    a: &[u64; N],
    b: &[u64; N],
    m: &[u64; N],
    minv: u64,
    out: &mut [u64; N],
) {
    let mut t = [0u64; N];
    let mut top: u64 = 0;
    for &ai in a.iter() {
        let s0 = t[0] as u128 + ai as u128 * b[0] as u128;
        let u = (s0 as u64).wrapping_mul(minv);
        let r0 = (s0 as u64) as u128 + u as u128 * m[0] as u128;
        let mut c1 = (s0 >> 64) as u64;
        let mut c2 = (r0 >> 64) as u64;
        for j in 1..N {
            let s = t[j] as u128 + ai as u128 * b[j] as u128 + c1 as u128;
            c1 = (s >> 64) as u64;
            let r = (s as u64) as u128 + u as u128 * m[j] as u128 + c2 as u128;
            c2 = (r >> 64) as u64;
            t[j - 1] = r as u64;
        }
        let s = top as u128 + c1 as u128 + c2 as u128;
        t[N - 1] = s as u64;
        top = (s >> 64) as u64;
    }
    final_sub(&t, top, m, out);
}

/// Limb count up to which scratch space lives on the stack (covers 8192-bit
/// moduli, i.e. n^2 of a 4096-bit key).
const MAX_STACK_LIMBS: usize = 128;

fn window_for(ebits: usize) -> usize {
    match ebits {
        0..=24 => 1,
        25..=80 => 3,
        81..=240 => 4,
        241..=672 => 5,
        _ => 6,
    }
}

/// Reads `w` bits of the little-endian limb array starting at bit `pos`.
fn extract_bits(digits: &[u64], pos: usize, w: usize) -> usize {
    let limb = pos / 64;
    let off = pos % 64;
    let lo = digits.get(limb).copied().unwrap_or(0) >> off;
    let hi = if off + w > 64 && off != 0 {
        digits.get(limb + 1).copied().unwrap_or(0) << (64 - off)
    } else {
        0
    };
    ((lo | hi) & ((1u64 << w) - 1)) as usize
}

/// Copies entry `idx` of a flattened table of `k`-limb entries into `out`,
/// reading every entry so the memory access pattern does not depend on `idx`.
pub(crate) fn ct_select(table: &[u64], k: usize, idx: usize, out: &mut [u64]) {
    out.fill(0);
    for (i, entry) in table.chunks_exact(k).enumerate() {
        // All-ones when i == idx, computed without a branch.
        let diff = (i ^ idx) as u64;
        let mask = ((diff | diff.wrapping_neg()) >> 63).wrapping_sub(1);
        for (o, &e) in out.iter_mut().zip(entry) {
            *o |= e & mask;
        }
    }
}

/// `out = t - m` if `top:t >= m`, else `t`; masked, no data-dependent branch.
fn final_sub(t: &[u64], top: u64, m: &[u64], out: &mut [u64]) {
    let mut borrow: u64 = 0;
    for ((o, &ti), &mi) in out.iter_mut().zip(t).zip(m) {
        let (d1, b1) = ti.overflowing_sub(mi);
        let (d2, b2) = d1.overflowing_sub(borrow);
        *o = d2;
        borrow = (b1 | b2) as u64;
    }
    // Keep the difference when top is set or there was no borrow.
    let keep_diff = top | (borrow ^ 1);
    let mask = keep_diff.wrapping_neg(); // all-ones if keep_diff == 1
    for (o, &ti) in out.iter_mut().zip(t) {
        *o = (*o & mask) | (ti & !mask);
    }
}

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

/// Modular inverse by the extended Euclidean algorithm (variable time: only
/// for public values or values whose timing leaks nothing). `None` when
/// `gcd(a, m) != 1`.
pub fn mod_inverse_vartime(a: &BigUint, m: &BigUint) -> Option<BigUint> {
    use num_bigint::BigInt;
    use num_integer::Integer;
    if m.is_zero() {
        return None;
    }
    let a = BigInt::from(a % m);
    let m_i = BigInt::from(m.clone());
    let e = a.extended_gcd(&m_i);
    if !e.gcd.is_one() {
        return None;
    }
    let x = e.x.mod_floor(&m_i);
    x.to_biguint()
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::RandBigInt;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn mul_sqr_pow_match_num_bigint() {
        let mut r = rng();
        for bits in [64u64, 65, 127, 128, 200, 512, 1024, 2048, 4096] {
            for _ in 0..4 {
                let mut m = r.gen_biguint(bits);
                m.set_bit(0, true);
                m.set_bit(bits - 1, true);
                let mo = Monty::new(&m).unwrap();
                let a = r.gen_biguint_below(&m);
                let b = r.gen_biguint_below(&m);
                let am = mo.to_mont(&a);
                let bm = mo.to_mont(&b);
                let mut out = vec![0; mo.limbs()];
                mo.mul_into(&am, &bm, &mut out);
                assert_eq!(mo.from_mont(&out), (&a * &b) % &m, "mul {bits}");
                mo.sqr_into(&am, &mut out);
                assert_eq!(mo.from_mont(&out), (&a * &a) % &m, "sqr {bits}");
                let e = r.gen_biguint(bits);
                assert_eq!(mo.pow(&a, &e), a.modpow(&e, &m), "pow {bits}");
            }
        }
    }

    #[test]
    fn edge_values() {
        let m = (BigUint::one() << 256u32) - 189u32; // odd
        let mo = Monty::new(&m).unwrap();
        let top = &m - 1u32;
        for a in [BigUint::zero(), BigUint::one(), top.clone()] {
            for e in [
                BigUint::zero(),
                BigUint::one(),
                BigUint::from(2u32),
                top.clone(),
            ] {
                assert_eq!(mo.pow(&a, &e), a.modpow(&e, &m));
            }
        }
        // Base not reduced.
        let big = &m * 3u32 + 5u32;
        assert_eq!(
            mo.pow(&big, &BigUint::from(3u32)),
            big.modpow(&BigUint::from(3u32), &m)
        );
        assert!(Monty::new(&BigUint::from(10u32)).is_none());
        assert!(Monty::new(&BigUint::one()).is_none());
    }

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
