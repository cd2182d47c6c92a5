//! The limb-level kernels under [`Monty`](super::Monty): schoolbook and
//! symmetric squaring, Montgomery reduction, and the versions specialized on
//! the limb count that [`Monty::mul_into`](super::Monty::mul_into) and
//! [`Monty::sqr_into`](super::Monty::sqr_into) dispatch to. Multiplication and
//! squaring are deliberately separate specializations (see the module docs of
//! [`arith`](super)). Every function here is regular: no branch or memory
//! access depends on limb values.

/// Full square of `a` (`k` limbs) into `t` (`2k` limbs, any contents):
/// off-diagonal products once, doubled, plus the diagonal squares.
#[inline(always)]
pub(super) fn sqr_wide(a: &[u64], t: &mut [u64]) {
    let k = a.len();
    debug_assert_eq!(t.len(), 2 * k);
    t[0] = 0;
    t[2 * k - 1] = 0;
    // Row i writes t[2i+1..i+k] (accumulating onto rows above it, which only
    // reach t[i+k-1]) and stores its carry in the untouched t[i+k].
    if k > 1 {
        t[1..k].fill(0);
    }
    for i in 0..k {
        let ai = a[i];
        let mut c: u64 = 0;
        for (tj, &aj) in t[2 * i + 1..i + k].iter_mut().zip(&a[i + 1..]) {
            let s = *tj as u128 + ai as u128 * aj as u128 + c as u128;
            *tj = s as u64;
            c = (s >> 64) as u64;
        }
        if i + 1 < k {
            t[i + k] = c;
        }
    }
    double_add_diagonal(a, t);
}

/// Doubles the off-diagonal sum in `t` and adds the squares `a_i^2` on the
/// diagonal, in one carry chain.
#[inline(always)]
pub(super) fn double_add_diagonal(a: &[u64], t: &mut [u64]) {
    let mut shifted_out: u64 = 0;
    let mut c: u64 = 0;
    for (i, &ai) in a.iter().enumerate() {
        let lo = t[2 * i];
        let hi = t[2 * i + 1];
        let dlo = (lo << 1) | shifted_out;
        let dhi = (hi << 1) | (lo >> 63);
        shifted_out = hi >> 63;
        let sq = ai as u128 * ai as u128;
        let s = dlo as u128 + (sq as u64) as u128 + c as u128;
        t[2 * i] = s as u64;
        let s2 = dhi as u128 + (sq >> 64) + (s >> 64);
        t[2 * i + 1] = s2 as u64;
        c = (s2 >> 64) as u64;
    }
    // The full square fits 2k limbs, so nothing is left over.
    debug_assert_eq!(c + shifted_out, 0);
}

/// Montgomery reduction of the `2k`-limb `t < m R` into `out` (`k` limbs).
#[inline(always)]
pub(super) fn redc_wide(t: &mut [u64], m: &[u64], minv: u64, out: &mut [u64]) {
    let k = m.len();
    let mut extra: u64 = 0;
    for i in 0..k {
        let u = t[i].wrapping_mul(minv);
        let mut c: u64 = 0;
        for (tj, &mj) in t[i..i + k].iter_mut().zip(m) {
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

/// The rest of rows `i` and `i + 1` of a two-row product step: from column
/// `from` on, adds `x0 y_j` (carry chain `c0`, entering as `carry`) and
/// `x1 y_(j-1)` (chain `c1`) at `t[i + j]`, then the pair's top two limbs at
/// `t[i + N]` and `t[i + N + 1]` (still zero before). The two chains are
/// independent, which is what makes two rows at a time pay.
#[inline(always)]
fn rows_from<const N: usize>(
    t: &mut [u64],
    i: usize,
    (x0, x1): (u128, u128),
    y: &[u64; N],
    from: usize,
    carry: u64,
) {
    let mut c0 = carry;
    let mut c1: u64 = 0;
    for j in from..N {
        let s = t[i + j] as u128 + x0 * y[j] as u128 + c0 as u128;
        c0 = (s >> 64) as u64;
        let r = (s as u64) as u128 + x1 * y[j - 1] as u128 + c1 as u128;
        c1 = (r >> 64) as u64;
        t[i + j] = r as u64;
    }
    let r = c0 as u128 + x1 * y[N - 1] as u128 + c1 as u128;
    t[i + N] = r as u64;
    t[i + N + 1] = (r >> 64) as u64;
}

/// Full square of `a` into `t` (`2N` limbs, zeroed), for even `N`: the
/// off-diagonal rows two at a time with two independent carry chains (as in
/// [`redc_rows`]), then the doubling and the diagonal squares.
#[inline(always)]
pub(super) fn sqr_wide_pairs<const N: usize>(a: &[u64; N], t: &mut [u64]) {
    const { assert!(N.is_multiple_of(2) && N >= 4) };
    debug_assert_eq!(t.len(), 2 * N);
    // Rows i and i + 1: row i adds a_i a_j at i + j for j > i, row i + 1 adds
    // a_(i+1) a_j; positions up to i + N - 1 hold earlier rows' sums, i + N
    // and above are still zero.
    for i in (0..N - 2).step_by(2) {
        let (x0, x1) = (a[i] as u128, a[i + 1] as u128);
        let s = t[2 * i + 1] as u128 + x0 * a[i + 1] as u128;
        t[2 * i + 1] = s as u64;
        let s = t[2 * i + 2] as u128 + x0 * a[i + 2] as u128 + (s >> 64);
        t[2 * i + 2] = s as u64;
        rows_from(t, i, (x0, x1), a, i + 3, (s >> 64) as u64);
    }
    // The last row pair has the single product a_(N-2) a_(N-1).
    let s = t[2 * N - 3] as u128 + a[N - 2] as u128 * a[N - 1] as u128;
    t[2 * N - 3] = s as u64;
    t[2 * N - 2] = (s >> 64) as u64;
    double_add_diagonal(a, t);
}

/// Montgomery reduction of the `2N`-limb `t < m R` into `out`, `B` rows at
/// a time (`B` divides `N`). Row `r` of a block needs `u_r`, fixed by the
/// low limb of position `r` once the block's earlier rows have added their
/// first products there (the prologue); after that the `B` rows add to each
/// position in one pass, each with its own carry chain, so the multiplier
/// has `B` independent chains to work on.
#[inline(always)]
pub(super) fn redc_rows<const N: usize, const B: usize>(
    t: &mut [u64],
    m: &[u64; N],
    minv: u64,
    out: &mut [u64; N],
) {
    const { assert!(B >= 1 && N >= B && N.is_multiple_of(B)) };
    debug_assert_eq!(t.len(), 2 * N);
    // Carry into position i + N left over by the previous block.
    let mut extra: u64 = 0;
    for i in (0..N).step_by(B) {
        let w: &mut [u64] = &mut t[i..i + N + B];
        let mut u = [0u64; B];
        let mut c = [0u64; B];
        // Prologue: positions 0..B, where row p starts.
        for p in 0..B {
            let mut s = w[p] as u128;
            for r in 0..p {
                s = (s as u64) as u128 + u[r] as u128 * m[p - r] as u128 + c[r] as u128;
                c[r] = (s >> 64) as u64;
            }
            u[p] = (s as u64).wrapping_mul(minv);
            let s = (s as u64) as u128 + u[p] as u128 * m[0] as u128;
            c[p] = (s >> 64) as u64;
        }
        // Body: every row adds to every position.
        for p in B..N {
            let mut s = w[p] as u128;
            for r in 0..B {
                s = (s as u64) as u128 + u[r] as u128 * m[p - r] as u128 + c[r] as u128;
                c[r] = (s >> 64) as u64;
            }
            w[p] = s as u64;
        }
        // Epilogue: row r ended at position r + N - 1, its carry lands on
        // r + N; `spill` carries the overflow of those additions upwards.
        let mut spill = extra as u128;
        for p in N..N + B {
            let f = p - N;
            let mut s = w[p] as u128 + c[f] as u128 + spill;
            spill = s >> 64;
            for r in f + 1..B {
                s = (s as u64) as u128 + u[r] as u128 * m[p - r] as u128 + c[r] as u128;
                c[r] = (s >> 64) as u64;
            }
            w[p] = s as u64;
        }
        extra = spill as u64;
    }
    final_sub(&t[N..2 * N], extra, m, out);
}

/// Full product `a b` into `t` (`2N` limbs, zeroed), for even `N`: rows two
/// at a time with two independent carry chains.
#[inline(always)]
pub(super) fn mul_wide_pairs<const N: usize>(a: &[u64; N], b: &[u64; N], t: &mut [u64]) {
    const { assert!(N.is_multiple_of(2) && N >= 2) };
    debug_assert_eq!(t.len(), 2 * N);
    // Earlier pairs wrote positions up to i + N - 1; i + N and i + N + 1 are
    // still zero.
    for i in (0..N).step_by(2) {
        let (x0, x1) = (a[i] as u128, a[i + 1] as u128);
        let s = t[i] as u128 + x0 * b[0] as u128;
        t[i] = s as u64;
        rows_from(t, i, (x0, x1), b, 1, (s >> 64) as u64);
    }
}

/// Montgomery multiplication as a full product then [`redc_rows`].
#[inline(always)]
pub(super) fn mul_separate<const N: usize, const N2: usize, const B: usize>(
    a: &[u64; N],
    b: &[u64; N],
    m: &[u64; N],
    minv: u64,
    out: &mut [u64; N],
) {
    let mut t = [0u64; N2];
    mul_wide_pairs(a, b, &mut t);
    redc_rows::<N, B>(&mut t, m, minv, out);
}

/// Montgomery squaring specialized on the limb count `N` (`N2 = 2 N`, passed
/// separately because stable Rust cannot write `[u64; 2 * N]`): the
/// symmetric square, then [`redc_rows`].
#[inline(always)]
pub(super) fn sqr_fixed<const N: usize, const N2: usize, const B: usize>(
    a: &[u64; N],
    m: &[u64; N],
    minv: u64,
    out: &mut [u64; N],
) {
    let mut t = [0u64; N2];
    sqr_wide_pairs(a, &mut t);
    redc_rows::<N, B>(&mut t, m, minv, out);
}

/// Limb count up to which scratch space lives on the stack (covers 8192-bit
/// moduli, i.e. n^2 of a 4096-bit key).
pub(super) const MAX_STACK_LIMBS: usize = 128;

/// `out = t - m` if `top:t >= m`, else `t`; masked, no data-dependent branch.
pub(super) fn final_sub(t: &[u64], top: u64, m: &[u64], out: &mut [u64]) {
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
