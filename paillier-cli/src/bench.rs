//! Wall-clock timings of the main operations, for the CLI's `bench`
//! subcommand (criterion benches live in `benches/`). Each row is measured
//! with `std::time::Instant` over `iterations` runs on one fresh key.

use num_bigint::{BigUint, RandBigInt};
use paillier::{generate_keypair, Packer, PackingSpec, PublicKey, Result};
use rand::rngs::OsRng;
use std::time::Instant;

/// One measured operation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchRow {
    /// Operation name (stable identifiers, e.g. `encrypt_djn`).
    pub operation: String,
    /// Key size in bits.
    pub bits: usize,
    /// Runs measured.
    pub iterations: usize,
    /// Median time per run in milliseconds.
    pub median_ms: f64,
    /// Mean time per run in milliseconds.
    pub mean_ms: f64,
    /// Values processed per run (64 for packed encryption, else 1): divide the
    /// times by it for a per-value figure.
    pub values_per_run: usize,
}

impl BenchRow {
    /// Median time per value in milliseconds.
    pub fn median_ms_per_value(&self) -> f64 {
        self.median_ms / self.values_per_run as f64
    }
}

fn measure(
    operation: &str,
    bits: usize,
    iterations: usize,
    values_per_run: usize,
    mut f: impl FnMut(),
) -> BenchRow {
    let iterations = iterations.max(1);
    let mut times: Vec<f64> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = if iterations % 2 == 1 {
        times[iterations / 2]
    } else {
        (times[iterations / 2 - 1] + times[iterations / 2]) / 2.0
    };
    BenchRow {
        operation: operation.to_string(),
        bits,
        iterations,
        median_ms: median,
        mean_ms: times.iter().sum::<f64>() / iterations as f64,
        values_per_run,
    }
}

/// The packing spec used for the `packed_encrypt_64` row: 16 fractional and
/// 16 integer bits, headroom for 1024 addends (a 43-bit slot).
pub const BENCH_PACKING: PackingSpec = PackingSpec {
    frac_bits: 16,
    int_bits: 16,
    max_addends: 1024,
};

/// Measures every operation at `bits` (2048 to 8192, even: the sizes
/// [`generate_keypair`] accepts). Key generation runs `min(iterations, 10)`
/// times.
pub fn run(bits: usize, iterations: usize) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let mut kg_err = None;
    rows.push(measure("keygen", bits, iterations.min(10), 1, || {
        if let Err(e) = generate_keypair(bits) {
            kg_err = Some(e);
        }
    }));
    if let Some(e) = kg_err {
        return Err(e);
    }
    let (pk, sk) = generate_keypair(bits)?;
    let fresh = PublicKey::from_n(pk.n().clone())?;
    rows.push(measure("djn_table_build", bits, 1, 1, || {
        fresh.precompute()
    }));
    pk.precompute();
    let m = OsRng.gen_biguint_below(pk.n());
    let m2 = OsRng.gen_biguint_below(pk.n());
    let c = pk.encrypt_raw(&m)?;
    let c2 = pk.encrypt_raw(&m2)?;
    let x = pk.encrypt_f64(3.25)?;
    let y = pk.encrypt_f64(-1.5e-3)?;
    rows.push(measure("encrypt_djn", bits, iterations, 1, || {
        let _ = pk.encrypt_raw(&m);
    }));
    rows.push(measure("encrypt_textbook", bits, iterations, 1, || {
        let _ = pk.encrypt_raw_textbook(&m);
    }));
    rows.push(measure("encrypt_crt", bits, iterations, 1, || {
        let _ = sk.encrypt_raw_crt(&m);
    }));
    rows.push(measure("encrypt_f64", bits, iterations, 1, || {
        let _ = pk.encrypt_f64(0.123456);
    }));
    rows.push(measure("decrypt_parallel", bits, iterations, 1, || {
        let _ = sk.decrypt_raw(&c);
    }));
    rows.push(measure(
        "decrypt_single_thread",
        bits,
        iterations,
        1,
        || {
            let _ = sk.decrypt_raw_single_thread(&c);
        },
    ));
    rows.push(measure("decrypt_f64", bits, iterations, 1, || {
        let _ = sk.decrypt_f64(&x);
    }));
    rows.push(measure("add", bits, iterations, 1, || {
        let _ = c.add(&c2);
    }));
    rows.push(measure("add_encrypted_f64", bits, iterations, 1, || {
        let _ = x.add(&y);
    }));
    rows.push(measure("mul_f64", bits, iterations, 1, || {
        let _ = x.mul_f64(0.6180339887);
    }));
    let k = BigUint::from(123_456_789u64);
    rows.push(measure("mul_plain_small", bits, iterations, 1, || {
        let _ = c.mul_plain(&k);
    }));
    let packer = Packer::new(&pk, BENCH_PACKING)?;
    let values: Vec<f64> = (0..64).map(|i| (i as f64 - 31.5) * 0.37).collect();
    rows.push(measure("packed_encrypt_64", bits, iterations, 64, || {
        let _ = packer.encrypt(&values);
    }));
    Ok(rows)
}
