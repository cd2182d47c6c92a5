//! Property tests of the homomorphic laws, the phe encoding and packing.

mod common;

use common::key1024;
use num_bigint::BigInt;
use paillier::{BigUint, EncodedNumber, Error, Packer, PackingSpec};
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        // Failing cases are recorded beside this file (tests/regressions/) and committed.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    }
}

fn below_n() -> impl Strategy<Value = BigUint> {
    proptest::collection::vec(any::<u32>(), 1..=32).prop_map(|d| {
        let n = key1024().0.n();
        BigUint::new(d) % n
    })
}

/// Finite floats spanning many magnitudes, both signs.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6f64..1e6,
        -1.0f64..1.0,
        (any::<i32>(), -60i32..60).prop_map(|(m, e)| m as f64 * 2f64.powi(e)),
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
    ]
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn add_is_addition_mod_n(a in below_n(), b in below_n()) {
        let (pk, sk) = key1024();
        let c = pk.encrypt_raw(&a).unwrap().add(&pk.encrypt_raw(&b).unwrap()).unwrap();
        prop_assert_eq!(sk.decrypt_raw(&c).unwrap(), (&a + &b) % pk.n());
    }

    #[test]
    fn add_plain_and_mul_plain(a in below_n(), k in below_n()) {
        let (pk, sk) = key1024();
        let c = pk.encrypt_raw(&a).unwrap();
        prop_assert_eq!(sk.decrypt_raw(&c.add_plain(&k).unwrap()).unwrap(), (&a + &k) % pk.n());
        prop_assert_eq!(sk.decrypt_raw(&c.mul_plain(&k).unwrap()).unwrap(), (&a * &k) % pk.n());
    }

    #[test]
    fn negation_and_subtraction(a in below_n(), b in below_n()) {
        let (pk, sk) = key1024();
        let n = pk.n();
        let ca = pk.encrypt_raw(&a).unwrap();
        let cb = pk.encrypt_raw(&b).unwrap();
        prop_assert_eq!(sk.decrypt_raw(&ca.neg()).unwrap(), (n - &a) % n);
        prop_assert_eq!(sk.decrypt_raw(&ca.sub(&cb).unwrap()).unwrap(), (&a + n - &b) % n);
        prop_assert_eq!(sk.decrypt_raw(&ca.add(&ca.neg()).unwrap()).unwrap(), BigUint::from(0u32));
    }

    #[test]
    fn all_encryption_paths_agree(m in below_n()) {
        let (pk, sk) = key1024();
        prop_assert_eq!(sk.decrypt_raw(&pk.encrypt_raw_textbook(&m).unwrap()).unwrap(), m.clone());
        prop_assert_eq!(sk.decrypt_raw(&sk.encrypt_raw_crt(&m).unwrap()).unwrap(), m.clone());
        prop_assert_eq!(sk.decrypt_raw(&pk.encrypt_raw(&m).unwrap().rerandomize()).unwrap(), m);
    }

    #[test]
    fn f64_encode_decode_roundtrip(x in float()) {
        let (pk, _) = key1024();
        let e = EncodedNumber::encode_f64(pk, x, None).unwrap();
        prop_assert_eq!(e.decode_f64().unwrap(), x);
    }

    #[test]
    fn i64_encode_decode_roundtrip(x in any::<i64>(), me in -8i32..=0) {
        let (pk, _) = key1024();
        let e = EncodedNumber::encode_i64(pk, x, Some(me)).unwrap();
        prop_assert_eq!(e.exponent(), me);
        prop_assert_eq!(e.decode_i64().unwrap(), x);
        prop_assert_eq!(e.decode_f64().unwrap(), x as f64);
    }

    #[test]
    fn encrypted_f64_roundtrip_and_mixed_exponents(a in -1e6f64..1e6, b in float().prop_filter("moderate", |x| x.abs() < 1e12 && (x.abs() > 1e-12 || *x == 0.0))) {
        let (pk, sk) = key1024();
        let ea = pk.encrypt_f64(a).unwrap();
        let eb = pk.encrypt_f64(b).unwrap();
        prop_assert_eq!(sk.decrypt_f64(&ea).unwrap(), a);
        // Exact sums of the two exactly-encoded values, rounded once.
        let exact = |x: f64, y: f64| {
            let ex = EncodedNumber::encode_f64(pk, x, None).unwrap();
            let ey = EncodedNumber::encode_f64(pk, y, None).unwrap();
            let e = ex.exponent().min(ey.exponent());
            let mx = ex.decrease_exponent_to(e).unwrap().mantissa().unwrap();
            let my = ey.decrease_exponent_to(e).unwrap().mantissa().unwrap();
            (mx + my, e)
        };
        let (m, e) = exact(a, b);
        let sum = sk.decrypt_encoded(&ea.add(&eb).unwrap()).unwrap();
        prop_assert_eq!(sum.exponent(), e);
        prop_assert_eq!(sum.mantissa().unwrap(), m);
        prop_assert_eq!(sk.decrypt_f64(&ea.add_f64(b).unwrap()).unwrap(), sk.decrypt_f64(&ea.add(&eb).unwrap()).unwrap());
        prop_assert_eq!(sk.decrypt_f64(&ea.neg().unwrap()).unwrap(), -a);
        let diff = sk.decrypt_f64(&ea.sub(&eb).unwrap()).unwrap();
        prop_assert!((diff - (a - b)).abs() <= 1e-9 * (a.abs() + b.abs() + 1.0));
    }

    #[test]
    fn scalar_multiplication(a in -1e6f64..1e6, k in -1e3f64..1e3, ki in any::<i32>()) {
        let (pk, sk) = key1024();
        let ea = pk.encrypt_f64(a).unwrap();
        // a * k computed exactly by the scheme, then rounded once.
        let prod = sk.decrypt_encoded(&ea.mul_f64(k).unwrap()).unwrap();
        let ma = EncodedNumber::encode_f64(pk, a, None).unwrap();
        let mk = EncodedNumber::encode_f64(pk, k, None).unwrap();
        prop_assert_eq!(prod.exponent(), ma.exponent() + mk.exponent());
        prop_assert_eq!(prod.mantissa().unwrap(), ma.mantissa().unwrap() * mk.mantissa().unwrap());
        prop_assert_eq!(sk.decrypt_f64(&ea.mul_i64(ki as i64).unwrap()).unwrap(), a * ki as f64);
    }

    #[test]
    fn packing_roundtrip(frac in 0u32..24, int in 1u32..24, addends in 1u64..2000, len in 0usize..120, seed in any::<u64>()) {
        let (pk, _) = key1024();
        let spec = PackingSpec { frac_bits: frac, int_bits: int, max_addends: addends };
        let packer = Packer::new(pk, spec).unwrap();
        let limit = 2f64.powi(int as i32);
        let scale = 2f64.powi(frac as i32);
        let mut s = seed;
        let values: Vec<f64> = (0..len).map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
            ((2.0 * u - 1.0) * (limit * scale - 1.0)).round() / scale
        }).collect();
        let pts = packer.encode(&values).unwrap();
        prop_assert_eq!(pts.len(), packer.plaintexts_needed(len));
        prop_assert!(pts.iter().all(|p| p < pk.n()));
        prop_assert_eq!(packer.decode(&pts, len, 1).unwrap(), values.clone());
        // Summing `k` copies (as plaintext integers) decodes to k * v.
        let k = addends.min(7);
        let summed: Vec<BigUint> = pts.iter().map(|p| (p * k) % pk.n()).collect();
        let want: Vec<f64> = values.iter().map(|v| v * k as f64).collect();
        prop_assert_eq!(packer.decode(&summed, len, k).unwrap(), want);
    }
}

#[test]
fn packing_edges() {
    let (pk, sk) = key1024();
    let spec = PackingSpec {
        frac_bits: 8,
        int_bits: 10,
        max_addends: 16,
    };
    let packer = Packer::new(pk, spec).unwrap();
    let ulp = 2f64.powi(-8);
    let max = 1024.0 - ulp;
    // Max slot values and negative extremes, in every slot position.
    let n = packer.slots_per_plaintext() + 3;
    let values: Vec<f64> = (0..n)
        .map(|i| if i % 2 == 0 { max } else { -max })
        .collect();
    let c = packer.encrypt(&values).unwrap();
    assert_eq!(packer.decrypt(sk, &c, 1).unwrap(), values);
    // Exactly max_addends addends decode; one more is an error.
    let mut sum = c.clone();
    for _ in 1..16 {
        sum = sum.add(&c).unwrap();
    }
    let want: Vec<f64> = values.iter().map(|v| v * 16.0).collect();
    assert_eq!(packer.decrypt(sk, &sum, 16).unwrap(), want);
    assert!(matches!(
        packer.decrypt(sk, &sum, 17),
        Err(Error::TooManyAddends {
            addends: 17,
            max_addends: 16
        })
    ));
    // Values at the slot limit are refused.
    for bad in [
        1024.0,
        -1024.0,
        max + ulp / 2.0 + 1e-9,
        f64::NAN,
        f64::INFINITY,
    ] {
        assert!(
            matches!(
                packer.encode(&[0.0, bad]),
                Err(Error::SlotOverflow { index: 1, .. })
            ),
            "{bad}"
        );
    }
    // Summing more than declared and claiming fewer addends is detected.
    let mut over = sum.clone();
    over = over.add(&c).unwrap(); // 17 addends of +max in slot 0
    assert!(matches!(
        packer.decrypt(sk, &over, 16),
        Err(Error::SlotOutOfRange { .. })
    ));
    // Rounding to the fixed-point grid.
    let r = packer
        .decode(&packer.encode(&[0.3]).unwrap(), 1, 1)
        .unwrap();
    assert_eq!(r, vec![(0.3f64 * 256.0).round() / 256.0]);
    // Masks summing to zero mod n cancel (the federation's pairwise masks).
    let v1 = vec![1.5, -2.25, 3.0];
    let v2 = vec![-0.5, 0.25, 100.0];
    let p1 = packer.encode(&v1).unwrap();
    let p2 = packer.encode(&v2).unwrap();
    let mask = BigUint::from(987654321u64) << 700u32;
    let m1: Vec<BigUint> = p1.iter().map(|p| (p + &mask) % pk.n()).collect();
    let m2: Vec<BigUint> = p2.iter().map(|p| (p + pk.n() - &mask) % pk.n()).collect();
    let c1 = paillier::vector::encrypt_raw(pk, &m1).unwrap();
    let c2 = paillier::vector::encrypt_raw(pk, &m2).unwrap();
    let s = paillier::vector::add(&c1, &c2).unwrap();
    let pts = paillier::vector::decrypt_raw(sk, &s).unwrap();
    assert_eq!(packer.decode(&pts, 3, 2).unwrap(), vec![1.0, -2.0, 103.0]);
}

#[test]
fn encoded_bigint_overflow_and_decode_overflow() {
    let (pk, sk) = key1024();
    let too_big = BigInt::from(pk.max_int().clone()) + 1;
    assert!(matches!(
        EncodedNumber::encode_bigint(pk, &too_big, None),
        Err(Error::EncodingOverflow(_))
    ));
    assert!(EncodedNumber::encode_bigint(pk, &(too_big.clone() - BigInt::from(1)), None).is_ok());
    assert!(EncodedNumber::encode_bigint(pk, &-(too_big.clone() - BigInt::from(1)), None).is_ok());
    // A value in the overflow band decodes to an error, never a wrong number.
    let mid = pk.n() / 2u32;
    let e = EncodedNumber::new(pk, mid.clone(), 0).unwrap();
    assert!(matches!(e.decode_f64(), Err(Error::EncodingOverflow(_))));
    let c = pk.encrypt_raw(&mid).unwrap();
    let x = paillier::EncryptedNumber::new(c, 0).unwrap();
    assert!(matches!(
        sk.decrypt_f64(&x),
        Err(Error::EncodingOverflow(_))
    ));
    // Repeated squaring of a large number overflows into an error.
    let mut y = pk.encrypt_i64(i64::MAX).unwrap();
    let mut saw_error = false;
    for _ in 0..40 {
        match y.mul_i64(i64::MAX) {
            Ok(z) => y = z,
            Err(_) => unreachable!("mul by an in-range scalar cannot fail"),
        }
        if sk.decrypt_f64(&y).is_err() {
            saw_error = true;
            break;
        }
    }
    assert!(saw_error);
    assert!(matches!(pk.encrypt_f64(f64::NAN), Err(Error::NonFinite(_))));
    assert!(matches!(
        pk.encrypt_f64(f64::NEG_INFINITY),
        Err(Error::NonFinite(_))
    ));
}

#[test]
fn vector_ops() {
    let (pk, sk) = key1024();
    let xs = [1.0, -2.5, 3.25];
    let ys = [0.5, 0.5, -10.0];
    let ex = paillier::vector::encrypt_f64(pk, &xs).unwrap();
    let ey = paillier::vector::encrypt_f64(pk, &ys).unwrap();
    let s = paillier::vector::add_encrypted(&ex, &ey).unwrap();
    assert_eq!(
        paillier::vector::decrypt_f64(sk, &s).unwrap(),
        vec![1.5, -2.0, -6.75]
    );
    let d = paillier::vector::sub_encrypted(&ex, &ey).unwrap();
    assert_eq!(
        paillier::vector::decrypt_f64(sk, &d).unwrap(),
        vec![0.5, -3.0, 13.25]
    );
    let m = paillier::vector::mul_f64(&ex, &ys).unwrap();
    assert_eq!(
        paillier::vector::decrypt_f64(sk, &m).unwrap(),
        vec![0.5, -1.25, -32.5]
    );
    let sc = paillier::vector::scale_f64(&ex, -2.0).unwrap();
    assert_eq!(
        paillier::vector::decrypt_f64(sk, &sc).unwrap(),
        vec![-2.0, 5.0, -6.5]
    );
    let a = paillier::vector::add_f64(&ex, &ys).unwrap();
    assert_eq!(
        paillier::vector::decrypt_f64(sk, &a).unwrap(),
        vec![1.5, -2.0, -6.75]
    );
    let ng = paillier::vector::neg_encrypted(&ex).unwrap();
    assert_eq!(
        paillier::vector::decrypt_f64(sk, &ng).unwrap(),
        vec![-1.0, 2.5, -3.25]
    );
    let raw: Vec<_> = (1u32..=5)
        .map(|i| pk.encrypt_raw(&BigUint::from(i)).unwrap())
        .collect();
    let total = paillier::vector::sum(&raw).unwrap().unwrap();
    assert_eq!(sk.decrypt_raw(&total).unwrap(), BigUint::from(15u32));
    assert!(paillier::vector::sum(&[]).unwrap().is_none());
    assert!(matches!(
        paillier::vector::add(&raw[..2], &raw[..3]),
        Err(Error::LengthMismatch(_))
    ));
}
