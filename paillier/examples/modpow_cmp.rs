//! Compares `arith::Monty::pow` with num-bigint's `modpow`:
//! `cargo run --release -p paillier --example modpow_cmp`.

use num_bigint::RandBigInt;
use paillier::arith::Monty;
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
        println!("mod {mbits} exp {ebits}: num-bigint {nb:.3} ms, ours {ours:.3} ms, ratio {:.2}x; mul {mul_us:.2} us sqr {sqr_us:.2} us", nb / ours);
    }
}
