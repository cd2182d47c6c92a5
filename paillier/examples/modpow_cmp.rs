//! Compares `arith::Monty::pow` with num-bigint's `modpow`, Montgomery
//! multiplication with squaring, and the ways of running decryption's two
//! CRT halves on two threads:
//! `cargo run --release -p paillier --example modpow_cmp`.

use num_bigint::RandBigInt;
use paillier::arith::{inverse_mod_square_vartime, mod_inverse_vartime, Monty};
use std::time::Instant;

/// Minimum over 7 repetitions of the mean of `iters` runs (the machine is shared).
fn time_min(iters: usize, mut f: impl FnMut()) -> f64 {
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut rng = rand::thread_rng();
    for (mbits, ebits) in [(1024u64, 512u64), (2048, 1024), (3072, 1536), (4096, 2048)] {
        let mut m = rng.gen_biguint(mbits);
        m.set_bit(0, true);
        m.set_bit(mbits - 1, true);
        let mo = Monty::new(&m).unwrap();
        let b = rng.gen_biguint_below(&m);
        let e = rng.gen_biguint(ebits);
        let nb = time_min(5, || {
            std::hint::black_box(b.modpow(&e, &m));
        }) * 1e3;
        let ours = time_min(5, || {
            std::hint::black_box(mo.pow(&b, &e));
        }) * 1e3;
        let k = mo.limbs();
        let x = mo.to_mont(&b);
        let mut out = vec![0u64; k];
        let mul_us = time_min(500, || {
            mo.mul_into(&x, &x, &mut out);
            std::hint::black_box(&out);
        }) * 1e6;
        let sqr_us = time_min(500, || {
            mo.sqr_into(&x, &mut out);
            std::hint::black_box(&out);
        }) * 1e6;
        let by_mul = time_min(5, || {
            std::hint::black_box(pow_squaring_by_mul(&mo, &b, &e));
        }) * 1e3;
        println!("mod {mbits} exp {ebits}: num-bigint {nb:.3} ms, ours {ours:.3} ms, ratio {:.2}x; mul {mul_us:.2} us sqr {sqr_us:.2} us; \
                  squaring by multiplication, window 6 (before the dedicated square) {by_mul:.3} ms", nb / ours);
    }
    two_halves(&mut rng);
    scalar_mul(&mut rng);
}

/// Decryption-shaped work (two exponentiations with `|m|/2`-bit exponents,
/// mod `p^2` and `q^2`) run sequentially and by each two-thread strategy, in
/// the same process so the machine's load hits them alike.
fn two_halves(rng: &mut impl rand::Rng) {
    for mbits in [2048u64, 3072] {
        let mk = |rng: &mut dyn rand::RngCore| {
            let mut m = rng.gen_biguint(mbits);
            m.set_bit(0, true);
            m.set_bit(mbits - 1, true);
            (Monty::new(&m).unwrap(), rng.gen_biguint_below(&m))
        };
        let (mp, bp) = mk(rng);
        let (mq, bq) = mk(rng);
        let e = rng.gen_biguint(mbits / 2);
        let fp = || std::hint::black_box(mp.pow(&bp, &e));
        let fq = || std::hint::black_box(mq.pow(&bq, &e));
        // Warm the pool so its start-up is not timed.
        rayon::join(|| (), || ());
        let seq = time_min(5, || {
            fp();
            fq();
        }) * 1e3;
        let join = time_min(5, || {
            rayon::join(fp, fq);
        }) * 1e3;
        let in_place = time_min(5, || {
            rayon::in_place_scope(|s| {
                s.spawn(|_| {
                    fq();
                });
                fp();
            });
        }) * 1e3;
        let scoped = time_min(5, || {
            std::thread::scope(|s| {
                s.spawn(fq);
                fp();
            });
        }) * 1e3;
        println!(
            "two halves mod {mbits}-bit: sequential {seq:.3} ms, rayon::join {join:.3} ms, \
             in_place_scope {in_place:.3} ms, thread::scope {scoped:.3} ms"
        );
    }
}

/// Multiplication of a ciphertext by a float's encoding (a 55-bit exponent
/// mod `n^2`): the regular fixed-window `pow` against the sliding-window
/// `pow_vartime`, and the inverse a negative scalar needs, directly mod `n^2`
/// against mod `n` lifted to `n^2`.
fn scalar_mul(rng: &mut impl rand::Rng) {
    for nbits in [2048u64, 3072] {
        let mut n = rng.gen_biguint(nbits);
        n.set_bit(0, true);
        n.set_bit(nbits - 1, true);
        let n2 = &n * &n;
        let mo = Monty::new(&n2).unwrap();
        let c = rng.gen_biguint_below(&n2);
        let e = rng.gen_biguint(55);
        let fixed = time_min(20, || {
            std::hint::black_box(mo.pow(&c, &e));
        }) * 1e3;
        let sliding = time_min(20, || {
            std::hint::black_box(mo.pow_vartime(&c, &e));
        }) * 1e3;
        let inv_direct = time_min(5, || {
            std::hint::black_box(mod_inverse_vartime(&c, &n2));
        }) * 1e3;
        let inv_lifted = time_min(5, || {
            std::hint::black_box(inverse_mod_square_vartime(&c, &n));
        }) * 1e3;
        let modinv_n = time_min(5, || {
            std::hint::black_box((&c % &n).modinv(&n));
        }) * 1e3;
        let inv_n = time_min(5, || {
            std::hint::black_box(mod_inverse_vartime(&c, &n));
        }) * 1e3;
        println!(
            "n {nbits}: inverse mod n: num-bigint modinv {modinv_n:.3} ms, \
             mod_inverse_vartime (Lehmer) {inv_n:.3} ms"
        );
        println!(
            "n {nbits}: 55-bit exponent mod n^2: pow {fixed:.3} ms, pow_vartime {sliding:.3} ms; \
             inverse mod n^2: direct {inv_direct:.3} ms, lifted from mod n {inv_lifted:.3} ms"
        );
    }
}

/// The exponentiation as it was before the dedicated squaring: 6-bit fixed
/// windows with every squaring done by `mul_into` (the table is indexed
/// directly, which only flatters it).
fn pow_squaring_by_mul(
    mo: &Monty,
    base: &num_bigint::BigUint,
    e: &num_bigint::BigUint,
) -> num_bigint::BigUint {
    let k = mo.limbs();
    let w = 6usize;
    let b = mo.to_mont(base);
    let mut table = vec![mo.one().to_vec(), b.clone()];
    for i in 2..1usize << w {
        let mut t = vec![0u64; k];
        mo.mul_into(&table[i - 1], &b, &mut t);
        table.push(t);
    }
    let bits = e.bits() as usize;
    let windows = bits.div_ceil(w);
    let mut acc = mo.one().to_vec();
    let mut tmp = vec![0u64; k];
    for wi in (0..windows).rev() {
        if wi != windows - 1 {
            for _ in 0..w {
                mo.mul_into(&acc, &acc, &mut tmp);
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        let mut d = 0usize;
        for bit in (wi * w..(wi * w + w).min(bits)).rev() {
            d = (d << 1) | e.bit(bit as u64) as usize;
        }
        mo.mul_into(&acc, &table[d], &mut tmp);
        std::mem::swap(&mut acc, &mut tmp);
    }
    mo.from_mont(&acc)
}
