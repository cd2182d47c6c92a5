//! Cost of the relay seal: per message (seal, open) at the sizes the ring
//! sends (a peer confirmation, a mid-size and a 1000-feature ring pass), side
//! by side in the same run with a plain copy and SHA-256 of the same bytes;
//! and per round (making a key pair and its signed offer, accepting a peer's
//! offer: certificate chain and revocation check, signature, X25519, HKDF).
//!
//! `CARGO_TARGET_DIR=... cargo bench -p node --bench seal`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use node::pki::{self, NodeIdentity, PkiPaths};
use node::seal::{RoundSeal, Trust};
use protocol::wire::{Kind, RunId};
use rustls::pki_types::UnixTime;
use sha2::{Digest, Sha256};

const A: &str = "hospital-1";
const B: &str = "hospital-2";

struct Fixture {
    _dir: tempfile::TempDir,
    ids: Vec<NodeIdentity>,
    trusts: Vec<Arc<Trust>>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = [A, B].iter().map(|s| s.to_string()).collect();
    pki::provision(dir.path(), &names).unwrap();
    let ids: Vec<NodeIdentity> = names
        .iter()
        .map(|n| NodeIdentity::load(&PkiPaths::in_dir(dir.path(), n)).unwrap())
        .collect();
    let trusts = ids
        .iter()
        .map(|id| Arc::new(Trust::new(id, names.clone()).unwrap()))
        .collect();
    Fixture {
        _dir: dir,
        ids,
        trusts,
    }
}

fn run() -> RunId {
    RunId::from_random([7; 16])
}

fn new_seal(f: &Fixture, i: usize) -> RoundSeal {
    RoundSeal::new(
        &f.ids[i],
        f.trusts[i].clone(),
        run(),
        3,
        30,
        &mut rand::thread_rng(),
    )
    .unwrap()
}

fn per_message(c: &mut Criterion) {
    let f = fixture();
    let mut a = new_seal(&f, 0);
    let mut b = new_seal(&f, 1);
    b.accept_offer(a.offer(), UnixTime::now()).unwrap();
    a.accept_offer(b.offer(), UnixTime::now()).unwrap();
    let limit = |_| usize::MAX;

    let mut g = c.benchmark_group("seal");
    // 256 B: a peer confirmation with its seed; 64 KiB; 2 MiB: a ring pass of
    // 1000 features at one 3072-bit ciphertext per value (about 2 MiB JSON).
    for len in [256usize, 64 << 10, 2 << 20] {
        let msg: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        let sealed = a.seal(B, Kind::RingPass, &msg).unwrap();
        println!(
            "seal/{len}: {} bytes sealed, overhead {} bytes",
            sealed.len(),
            sealed.len() - len
        );
        g.bench_with_input(BenchmarkId::new("copy", len), &msg, |bn, m| {
            bn.iter(|| black_box(m.to_vec()))
        });
        g.bench_with_input(BenchmarkId::new("sha256", len), &msg, |bn, m| {
            bn.iter(|| black_box(Sha256::digest(m)))
        });
        g.bench_with_input(BenchmarkId::new("seal", len), &msg, |bn, m| {
            bn.iter(|| black_box(a.seal(B, Kind::RingPass, m).unwrap()))
        });
        // Fresh receiver for open: its counter must follow the sender's.
        let mut a2 = new_seal(&f, 0);
        let mut b2 = new_seal(&f, 1);
        b2.accept_offer(a2.offer(), UnixTime::now()).unwrap();
        a2.accept_offer(b2.offer(), UnixTime::now()).unwrap();
        let size = if len > (64 << 10) {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        g.bench_with_input(BenchmarkId::new("open", len), &msg, |bn, m| {
            bn.iter_batched(
                || a2.seal(B, Kind::RingPass, m).unwrap(),
                |s| black_box(b2.open(&s, limit).unwrap()),
                size,
            )
        });
    }
    g.finish();
}

fn per_round(c: &mut Criterion) {
    let f = fixture();
    let a = new_seal(&f, 0);
    println!("offer: {} bytes", a.offer().len());
    let mut g = c.benchmark_group("round");
    g.bench_function("new_key_pair_and_signed_offer", |bn| {
        bn.iter(|| black_box(new_seal(&f, 1)))
    });
    g.bench_function("accept_offer", |bn| {
        bn.iter_batched(
            || new_seal(&f, 1),
            |mut b| {
                b.accept_offer(a.offer(), UnixTime::now()).unwrap();
                b
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, per_message, per_round);
criterion_main!(benches);
