//! Compute cost of federated training through the state machines, in memory (no
//! sockets, zero simulated latency): what every round costs in encryption,
//! masking, homomorphic addition, decryption and model maths. Network time comes
//! on top in the real binaries.
//!
//! `cargo bench -p protocol --bench rounds`

#[path = "../tests/util/mod.rs"]
mod util;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use learning::Mode;
use util::{coordinator_config, params, synthetic, Sim};

fn run(c: &mut Criterion, bits: usize, hospitals: usize, features: usize, rounds: u32) {
    let (_, key) = paillier::generate_keypair(bits).expect("key");
    let data: Vec<_> = (0..hospitals)
        .map(|i| synthetic(100, features - 1, i as u64))
        .collect();
    let name = format!("training/{hospitals}x{features}/{bits}bit/{rounds}rounds");
    c.bench_function(&name, |b| {
        b.iter_batched(
            || {
                let mut sim = Sim::with_key(
                    coordinator_config(hospitals, params(Mode::Seed, rounds)),
                    key.clone(),
                    data.clone(),
                );
                sim.latency = Duration::ZERO;
                sim.jitter = Duration::ZERO;
                sim
            },
            |mut sim| {
                sim.run_to_end();
                assert!(sim.finished().is_some());
            },
            BatchSize::PerIteration,
        )
    });
}

fn benches(c: &mut Criterion) {
    for bits in [2048, 3072] {
        run(c, bits, 3, 11, 50);
        run(c, bits, 16, 1000, 1);
    }
}

criterion_group! {
    name = rounds;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(rounds);
