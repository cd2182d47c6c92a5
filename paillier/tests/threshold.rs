//! Threshold decryption: any t of l parties decrypt, fewer cannot, a wrong
//! partial decryption is refused naming its party, and an independent
//! implementation of the scheme's formulae (Python integers, below) agrees
//! with ours on the partial decryptions and the combined plaintext.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use num_bigint::BigUint;
use paillier::threshold::{
    deal_insecure_for_tests, BatchPartial, KeyShare, PartialDecryption, ThresholdKey,
};
use paillier::{Ciphertext, Error};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A 3-of-5 key of 512 bits (small: tests only), dealt once per test binary.
fn key() -> &'static (ThresholdKey, Vec<KeyShare>) {
    static K: OnceLock<(ThresholdKey, Vec<KeyShare>)> = OnceLock::new();
    K.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(2017);
        deal_insecure_for_tests(512, 3, 5, &mut rng).expect("deal")
    })
}

fn encrypt(k: &ThresholdKey, m: u64) -> Ciphertext {
    k.public_key().encrypt_raw(&BigUint::from(m)).unwrap()
}

fn parts(c: &Ciphertext, who: &[u32]) -> Vec<PartialDecryption> {
    let (_, shares) = key();
    let mut rng = StdRng::seed_from_u64(7);
    who.iter()
        .map(|&i| shares[i as usize - 1].partial_decrypt(c, &mut rng).unwrap())
        .collect()
}

#[test]
fn every_three_of_five_decrypt_and_sums_stay_homomorphic() {
    let (k, _) = key();
    let a = encrypt(k, 123_456_789);
    let b = encrypt(k, 987_654_321);
    let sum = a.add(&b).unwrap();
    for i in 1..=5u32 {
        for j in i + 1..=5 {
            for l in j + 1..=5 {
                let got = k.combine(&sum, &parts(&sum, &[i, j, l])).unwrap();
                assert_eq!(got, BigUint::from(1_111_111_110u64), "{i} {j} {l}");
            }
        }
    }
    // More than t given: the first t valid ones are used.
    let got = k.combine(&a, &parts(&a, &[5, 1, 3, 2])).unwrap();
    assert_eq!(got, BigUint::from(123_456_789u64));
}

#[test]
fn fewer_than_the_threshold_cannot_decrypt_and_say_how_many_are_missing() {
    let (k, _) = key();
    let c = encrypt(k, 42);
    let e = k.combine(&c, &parts(&c, &[2, 4])).unwrap_err();
    assert!(
        matches!(e, Error::TooFewShares { needed: 3, got: 2 }),
        "{e}"
    );
    assert!(e.to_string().contains("1 missing"), "{e}");
}

#[test]
fn a_wrong_partial_decryption_is_refused_naming_its_party() {
    let (k, _) = key();
    let c = encrypt(k, 42);
    let good = parts(&c, &[1, 2, 3]);
    let n2 = k.public_key().n_squared().clone();
    type Damage = fn(&mut PartialDecryption, &BigUint);
    let cases: [(&str, Damage); 5] = [
        ("value", |p, n2| p.value = (&p.value * 2u32) % n2),
        ("response", |p, _| p.response += 1u32),
        // Too long to be honest: refused before it costs an exponentiation.
        ("an over-long response", |p, _| p.response <<= 100_000),
        ("challenge", |p, _| p.challenge += 1u32),
        // Party 2's honest decryption claimed by party 4.
        ("index", |p, _| p.index = 4),
    ];
    for (what, damage) in cases {
        let mut ps = good.clone();
        damage(&mut ps[1], &n2);
        let e = k.combine(&c, &ps).unwrap_err();
        let blamed = ps[1].index;
        assert!(
            matches!(e, Error::InvalidShare { index, .. } if index == blamed),
            "{what}: {e}"
        );
        assert!(
            e.to_string().contains(&format!("party {blamed}")),
            "{what}: {e}"
        );
    }
    // A party given twice.
    let mut ps = good.clone();
    ps[2] = ps[0].clone();
    let e = k.combine(&c, &ps).unwrap_err();
    assert!(matches!(e, Error::InvalidShare { index: 1, .. }), "{e}");
    // A partial decryption of another ciphertext.
    let other = encrypt(k, 43);
    let e = k.verify(&other, &good[0]).unwrap_err();
    assert!(matches!(e, Error::InvalidShare { index: 1, .. }), "{e}");
}

#[test]
fn shares_are_checked_when_rebuilt_and_never_printed() {
    let (k, shares) = key();
    let s = &shares[2];
    let again = KeyShare::from_parts(k.clone(), 3, s.secret().clone()).unwrap();
    assert_eq!(again.index(), 3);
    let e = KeyShare::from_parts(k.clone(), 4, s.secret().clone()).unwrap_err();
    assert!(matches!(e, Error::InvalidShare { index: 4, .. }), "{e}");
    let shown = format!("{s:?}");
    assert!(!shown.contains(&s.secret().to_string()), "{shown}");
    let rebuilt = ThresholdKey::from_parts(
        k.public_key().clone(),
        3,
        k.verification_base().clone(),
        (1..=5)
            .map(|i| k.verification_key(i).unwrap().clone())
            .collect(),
    )
    .unwrap();
    assert_eq!(&rebuilt, k);
}

#[test]
fn dealing_refuses_unusable_parameters() {
    let mut rng = StdRng::seed_from_u64(1);
    for (t, l) in [(0, 3), (4, 3), (1, 1)] {
        let e = deal_insecure_for_tests(512, t, l, &mut rng).unwrap_err();
        assert!(matches!(e, Error::ThresholdParams(_)), "{t} of {l}: {e}");
    }
    let e = paillier::threshold::deal(1024, 2, 3, &mut rng).unwrap_err();
    assert!(matches!(e, Error::KeySize { .. }), "{e}");
}

/// The scheme's formulae in plain Python integers, written from the paper
/// (Damgard-Jurik 2001, s = 1), not from our code: partial decryptions
/// `c^(2 Delta s_i)` and combining with `mu_i = Delta prod j / (j - i)`.
const REFERENCE: &str = r#"
import json, sys
from fractions import Fraction
from math import factorial
d = json.load(sys.stdin)
n = int(d["n"]); n2 = n * n; c = int(d["c"]); l = d["parties"]
delta = factorial(l)
shares = {int(i): int(s) for i, s in d["shares"].items()}
parts = {i: pow(c, 2 * delta * s, n2) for i, s in shares.items()}
S = sorted(parts)
acc = 1
for i in S:
    mu = Fraction(delta)
    for j in S:
        if j != i:
            mu *= Fraction(j, j - i)
    assert mu.denominator == 1
    mu = int(mu)
    base = parts[i] if mu >= 0 else pow(parts[i], -1, n2)
    acc = acc * pow(base, 2 * abs(mu), n2) % n2
m = (acc - 1) // n * pow(4 * delta * delta, -1, n) % n
print(json.dumps({"m": str(m), "parts": {str(i): str(v) for i, v in parts.items()}}))
"#;

#[test]
fn an_independent_reference_agrees() {
    let python = std::env::var("PHE_PYTHON").unwrap_or_else(|_| "python3".into());
    let (k, shares) = key();
    let c = encrypt(k, 31_415_926_535);
    let who = [1u32, 3, 5];
    let ours = parts(&c, &who);
    let input = serde_json::json!({
        "n": k.public_key().n().to_string(),
        "c": c.value().to_string(),
        "parties": 5,
        "shares": who
            .iter()
            .map(|&i| {
                let s = shares[i as usize - 1].secret().to_string();
                (i.to_string(), serde_json::Value::String(s))
            })
            .collect::<serde_json::Map<_, _>>(),
    });
    let mut child = Command::new(&python)
        .args(["-c", REFERENCE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e} (set PHE_PYTHON to a Python 3.8+)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["m"], "31415926535");
    for p in &ours {
        assert_eq!(
            v["parts"][p.index.to_string()],
            p.value.to_string(),
            "party {}",
            p.index
        );
    }
    assert_eq!(
        k.combine(&c, &ours).unwrap().to_string(),
        v["m"].as_str().unwrap()
    );
}

#[test]
fn key_files_round_trip_and_refuse_damage() {
    use paillier::threshold::files;
    let (k, shares) = key();
    // 512-bit test keys are refused by the file reader (it builds the public
    // key with the 2048-bit floor): the files are for real keys.
    let e = files::public_from_json(&files::public_to_json(k)).unwrap_err();
    assert!(matches!(e, Error::KeySize { .. }), "{e}");
    let text = files::share_to_json(&shares[0]);
    let e = files::share_from_json(&text).unwrap_err();
    assert!(matches!(e, Error::KeySize { .. }), "{e}");
    // With the small-key reader (tests only), the files round-trip.
    let k2 = files::public_from_json_insecure_for_tests(&files::public_to_json(k)).unwrap();
    assert_eq!(&k2, k);
    let s2 = files::share_from_json_insecure_for_tests(&text).unwrap();
    assert_eq!((s2.index(), s2.secret()), (1, shares[0].secret()));
    // A share file whose share was altered is refused against its key.
    let altered = text.replacen("\"index\": 1", "\"index\": 2", 1);
    assert_ne!(altered, *text);
    let e = files::share_from_json_insecure_for_tests(&altered).unwrap_err();
    assert!(matches!(e, Error::InvalidShare { index: 2, .. }), "{e}");
    // Malformed documents are named.
    for bad in [
        "",
        "{}",
        r#"{"format":"x","n":"1","threshold":1,"v":"1","verification":[]}"#,
    ] {
        let e = files::public_from_json(bad).unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{bad}: {e}");
    }
    let big = "9".repeat(files::MAX_FILE_BYTES + 1);
    assert!(matches!(
        files::public_from_json(&big).unwrap_err(),
        Error::Malformed { .. }
    ));
}

/// Dealing at 2048 bits (safe primes), for the record: `cargo test --release
/// -p paillier --test threshold -- --ignored --nocapture`.
#[test]
#[ignore]
fn deal_2048_bits_and_round_trip_the_files() {
    use paillier::threshold::{deal, files};
    for parties in [3u32, 5, 8] {
        let t0 = std::time::Instant::now();
        let mut rng = StdRng::from_entropy();
        let threshold = parties / 2 + 1;
        let (k, shares) = deal(2048, threshold, parties, &mut rng).unwrap();
        let dealt = t0.elapsed();
        let k2 = files::public_from_json(&files::public_to_json(&k)).unwrap();
        assert_eq!(k2, k);
        let s2 = files::share_from_json(&files::share_to_json(&shares[0])).unwrap();
        assert_eq!(s2.index(), 1);
        let c = k.public_key().encrypt_raw(&BigUint::from(7u32)).unwrap();
        let t1 = std::time::Instant::now();
        let ps: Vec<_> = shares[..threshold as usize]
            .iter()
            .map(|s| s.partial_decrypt(&c, &mut rng).unwrap())
            .collect();
        let partial = t1.elapsed() / threshold;
        let t2 = std::time::Instant::now();
        assert_eq!(k.combine(&c, &ps).unwrap(), BigUint::from(7u32));
        println!(
            "{threshold} of {parties}: dealing {:.1} s, one partial decryption with proof {:.1} ms, \
             verifying and combining {threshold} {:.1} ms",
            dealt.as_secs_f64(),
            partial.as_secs_f64() * 1e3,
            t2.elapsed().as_secs_f64() * 1e3
        );
    }
}

#[test]
fn parts_verified_as_they_arrive_combine_only_for_their_ciphertext() {
    let (k, _) = key();
    let c = encrypt(k, 2024);
    let other = encrypt(k, 2025);
    let verified: Vec<_> = parts(&c, &[4, 2, 5])
        .into_iter()
        .map(|p| k.verify_partial(&c, p).unwrap())
        .collect();
    assert_eq!(
        k.combine_verified(&c, &verified).unwrap(),
        BigUint::from(2024u32)
    );
    // Verified for c, offered for another ciphertext: refused, naming the party.
    let e = k.combine_verified(&other, &verified).unwrap_err();
    assert!(matches!(e, Error::InvalidShare { index: 4, .. }), "{e}");
    // Too few, or one party twice.
    let e = k.combine_verified(&c, &verified[..2]).unwrap_err();
    assert!(
        matches!(e, Error::TooFewShares { needed: 3, got: 2 }),
        "{e}"
    );
    let twice = [
        verified[0].clone(),
        verified[1].clone(),
        verified[0].clone(),
    ];
    let e = k.combine_verified(&c, &twice).unwrap_err();
    assert!(matches!(e, Error::InvalidShare { index: 4, .. }), "{e}");
    // A forged part never becomes verified.
    let mut forged = parts(&c, &[1]).pop().unwrap();
    forged.response += 1u32;
    let e = k.verify_partial(&c, forged).unwrap_err();
    assert!(matches!(e, Error::InvalidShare { index: 1, .. }), "{e}");
}

fn batch(cts: &[Ciphertext], who: &[u32]) -> Vec<BatchPartial> {
    let (_, shares) = key();
    who.iter()
        .map(|&i| shares[i as usize - 1].partial_decrypt_batch(cts).unwrap())
        .collect()
}

#[test]
fn batched_partial_decryptions_combine_to_every_plaintext_and_are_deterministic() {
    let (k, _) = key();
    let ms = [0u64, 1, 42, 123_456_789, u64::MAX];
    let cts: Vec<Ciphertext> = ms.iter().map(|&m| encrypt(k, m)).collect();
    for who in [[1u32, 2, 3], [5, 3, 1], [2, 4, 5]] {
        let verified: Vec<_> = batch(&cts, &who)
            .into_iter()
            .map(|p| k.verify_batch(&cts, p).unwrap())
            .collect();
        let plain = k.combine_batch(&cts, &verified).unwrap();
        let want: Vec<BigUint> = ms.iter().map(|&m| BigUint::from(m)).collect();
        assert_eq!(plain, want, "parties {who:?}");
        // The same as combining each ciphertext's unbatched parts.
        assert_eq!(k.combine(&cts[3], &parts(&cts[3], &who)).unwrap(), want[3]);
    }
    // The same request gives the same bytes; each value is the single
    // partial decryption's value.
    let a = batch(&cts, &[2]);
    let b = batch(&cts, &[2]);
    assert_eq!(a, b);
    assert_eq!(a[0].values[1], parts(&cts[1], &[2])[0].value);
    // Fewer than t say how many are missing.
    let two: Vec<_> = batch(&cts, &[1, 2])
        .into_iter()
        .map(|p| k.verify_batch(&cts, p).unwrap())
        .collect();
    let e = k.combine_batch(&cts, &two).unwrap_err();
    assert!(
        matches!(e, Error::TooFewShares { needed: 3, got: 2 }),
        "{e}"
    );
}

#[test]
fn a_forged_batch_is_refused_naming_its_party() {
    let (k, _) = key();
    let cts: Vec<Ciphertext> = [7u64, 8, 9].iter().map(|&m| encrypt(k, m)).collect();
    let good = batch(&cts, &[3]).remove(0);
    let n2 = k.public_key().n_squared().clone();
    type Damage = fn(&mut BatchPartial, &BigUint);
    let cases: [(&str, Damage); 7] = [
        ("one value", |p, n2| {
            p.values[2] = (&p.values[2] * 2u32) % n2
        }),
        // Two values off by factors that cancel in an unweighted product.
        ("two values that cancel", |p, n2| {
            let x = BigUint::from(4u32);
            let inv = x.modinv(n2).unwrap();
            p.values[0] = (&p.values[0] * &x) % n2;
            p.values[1] = (&p.values[1] * inv) % n2;
        }),
        ("swapped values", |p, _| p.values.swap(0, 1)),
        ("response", |p, _| p.response += 1u32),
        ("an over-long response", |p, _| p.response <<= 100_000),
        ("a value missing", |p, _| {
            p.values.pop();
        }),
        ("index", |p, _| p.index = 4),
    ];
    for (what, damage) in cases {
        let mut p = good.clone();
        damage(&mut p, &n2);
        let blamed = p.index;
        let e = k.verify_batch(&cts, p).unwrap_err();
        assert!(
            matches!(e, Error::InvalidShare { index, .. } if index == blamed),
            "{what}: {e}"
        );
        assert!(
            e.to_string().contains(&format!("party {blamed}")),
            "{what}: {e}"
        );
    }
    // An honest batch for other ciphertexts neither verifies here nor combines.
    let other: Vec<Ciphertext> = [7u64, 8, 9].iter().map(|&m| encrypt(k, m)).collect();
    assert!(k.verify_batch(&other, good.clone()).is_err());
    let mut verified: Vec<_> = batch(&other, &[1, 2])
        .into_iter()
        .map(|p| k.verify_batch(&other, p).unwrap())
        .collect();
    verified.push(k.verify_batch(&cts, good).unwrap());
    let e = k.combine_batch(&other, &verified).unwrap_err();
    assert!(matches!(e, Error::InvalidShare { index: 3, .. }), "{e}");
}

/// Timings of one batched partial decryption, its verification and the
/// combination at 2048 bits (`--ignored --nocapture`; figures, not a test of
/// speed).
#[test]
#[ignore]
fn batch_costs_at_2048_bits() {
    use std::time::Instant;
    let mut rng = StdRng::seed_from_u64(5);
    let (k, shares) = paillier::threshold::deal(2048, 2, 16, &mut rng).unwrap();
    let cts: Vec<Ciphertext> = (0..34u64).map(|m| encrypt(&k, m)).collect();
    // Once-per-key set-up (the table of powers of v) outside the figures.
    let warm = shares[2].partial_decrypt_batch(&cts[..1]).unwrap();
    k.verify_batch(&cts[..1], warm).unwrap();
    let t0 = Instant::now();
    let a = shares[0].partial_decrypt_batch(&cts).unwrap();
    let t1 = Instant::now();
    let b = shares[1].partial_decrypt_batch(&cts).unwrap();
    let va = k.verify_batch(&cts, a).unwrap();
    let t2 = Instant::now();
    let vb = k.verify_batch(&cts, b).unwrap();
    let t3 = Instant::now();
    let plain = k.combine_batch(&cts, &[va, vb]).unwrap();
    let t4 = Instant::now();
    assert_eq!(plain[5], BigUint::from(5u32));
    let sk_cts = &cts[..1];
    let t5 = Instant::now();
    let _ = shares[0].partial_decrypt(&sk_cts[0], &mut rng).unwrap();
    let t6 = Instant::now();
    println!(
        "34 ciphertexts: partial+proof {:?}, verify {:?}, combine(2) {:?}; one unbatched partial {:?}",
        t1 - t0,
        t3 - t2,
        t4 - t3,
        t6 - t5
    );
}
