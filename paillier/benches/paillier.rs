//! Criterion benches of the operations named in issue 2, at 2048 and 3072
//! bits: `cargo bench -p paillier`. Filter with e.g. `cargo bench -p paillier -- 2048`.
//! Keygen runs with a small sample (it is slow by nature).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use num_bigint::RandBigInt;
use paillier::arith::Monty;
use paillier::{generate_keypair, BigUint, Packer, PackingSpec};
use rand::rngs::OsRng;
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 2] = [2048, 3072];

/// The spec of `paillier bench`'s `packed_encrypt_64` row (paillier-cli's
/// `BENCH_PACKING`): 16 fractional and 16 integer bits, 1024 addends.
const PACKING: PackingSpec = PackingSpec {
    frac_bits: 16,
    int_bits: 16,
    max_addends: 1024,
};

fn keygen(c: &mut Criterion) {
    let mut g = c.benchmark_group("keygen");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for bits in SIZES {
        g.bench_function(BenchmarkId::from_parameter(bits), |b| {
            b.iter(|| generate_keypair(bits).unwrap())
        });
    }
    g.finish();
}

fn ops(c: &mut Criterion) {
    for bits in SIZES {
        let (pk, sk) = generate_keypair(bits).unwrap();
        pk.precompute();
        let m = OsRng.gen_biguint_below(pk.n());
        let ct = pk.encrypt_raw(&m).unwrap();
        let ct2 = pk.encrypt_raw(&m).unwrap();
        let x = pk.encrypt_f64(3.25).unwrap();
        let mut g = c.benchmark_group(format!("{bits}"));
        g.sample_size(20).measurement_time(Duration::from_secs(3));
        g.bench_function("encrypt_djn", |b| {
            b.iter(|| pk.encrypt_raw(black_box(&m)).unwrap())
        });
        g.bench_function("encrypt_textbook", |b| {
            b.iter(|| pk.encrypt_raw_textbook(black_box(&m)).unwrap())
        });
        g.bench_function("encrypt_crt", |b| {
            b.iter(|| sk.encrypt_raw_crt(black_box(&m)).unwrap())
        });
        g.bench_function("decrypt_parallel", |b| {
            b.iter(|| sk.decrypt_raw(black_box(&ct)).unwrap())
        });
        g.bench_function("decrypt_single_thread", |b| {
            b.iter(|| sk.decrypt_raw_single_thread(black_box(&ct)).unwrap())
        });
        g.bench_function("add", |b| b.iter(|| black_box(&ct).add(&ct2).unwrap()));
        g.bench_function("mul_f64", |b| {
            b.iter(|| black_box(&x).mul_f64(0.123).unwrap())
        });
        // A negative scalar costs an inverse mod n^2 on top (phe's `_raw_mul`).
        g.bench_function("mul_f64_negative", |b| {
            b.iter(|| black_box(&x).mul_f64(-0.123).unwrap())
        });
        let packer = Packer::new(&pk, PACKING).unwrap();
        let values: Vec<f64> = (0..64).map(|i| (i as f64 - 31.5) * 0.37).collect();
        g.bench_function("packed_encrypt_64", |b| {
            b.iter(|| packer.encrypt(black_box(&values)).unwrap())
        });
        g.finish();
    }
}

/// Our Montgomery exponentiation against num-bigint's `modpow` at the sizes
/// decryption (mod p^2) and encryption (mod n^2) use.
fn modpow(c: &mut Criterion) {
    let mut g = c.benchmark_group("modpow");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (mbits, ebits) in [(2048u64, 1024u64), (3072, 1536), (4096, 2048)] {
        let mut m = OsRng.gen_biguint(mbits);
        m.set_bit(0, true);
        m.set_bit(mbits - 1, true);
        let mo = Monty::new(&m).unwrap();
        let base = OsRng.gen_biguint_below(&m);
        let e: BigUint = OsRng.gen_biguint(ebits);
        g.bench_function(format!("num_bigint_{mbits}_{ebits}"), |b| {
            b.iter(|| black_box(&base).modpow(&e, &m))
        });
        g.bench_function(format!("monty_{mbits}_{ebits}"), |b| {
            b.iter(|| mo.pow(black_box(&base), &e))
        });
    }
    g.finish();
}

criterion_group!(benches, ops, modpow, keygen);
criterion_main!(benches);
