//! Round trips through every public entry point of the contract API.

mod common;

use common::{key1024, key2048, other1024};
use paillier::{BigUint, Ciphertext, Error, Packer, PackingSpec, PublicKey};

#[test]
fn raw_roundtrip_all_paths() {
    let (pk, sk) = key1024();
    for m in [0u64, 1, 2, 12345, u64::MAX] {
        let m = BigUint::from(m);
        for c in [
            pk.encrypt_raw(&m).unwrap(),
            pk.encrypt_raw_textbook(&m).unwrap(),
            sk.encrypt_raw_crt(&m).unwrap(),
        ] {
            assert_eq!(sk.decrypt_raw(&c).unwrap(), m);
            assert_eq!(sk.decrypt_raw_single_thread(&c).unwrap(), m);
        }
    }
    let top = pk.n() - 1u32;
    assert_eq!(sk.decrypt_raw(&pk.encrypt_raw(&top).unwrap()).unwrap(), top);
    assert!(matches!(
        pk.encrypt_raw(pk.n()),
        Err(Error::PlaintextOutOfRange)
    ));
}

#[test]
fn homomorphic_ops() {
    let (pk, sk) = key1024();
    let a = BigUint::from(1000u32);
    let b = BigUint::from(234u32);
    let ca = pk.encrypt_raw(&a).unwrap();
    let cb = pk.encrypt_raw(&b).unwrap();
    assert_eq!(
        sk.decrypt_raw(&ca.add(&cb).unwrap()).unwrap(),
        BigUint::from(1234u32)
    );
    assert_eq!(
        sk.decrypt_raw(&ca.sub(&cb).unwrap()).unwrap(),
        BigUint::from(766u32)
    );
    assert_eq!(
        sk.decrypt_raw(&cb.sub(&ca).unwrap()).unwrap(),
        pk.n() - 766u32
    );
    assert_eq!(
        sk.decrypt_raw(&ca.add_plain(&b).unwrap()).unwrap(),
        BigUint::from(1234u32)
    );
    assert_eq!(
        sk.decrypt_raw(&ca.mul_plain(&b).unwrap()).unwrap(),
        BigUint::from(234000u32)
    );
    assert_eq!(sk.decrypt_raw(&ca.neg()).unwrap(), pk.n() - 1000u32);
    let r = ca.rerandomize();
    assert_ne!(r.value(), ca.value());
    assert_eq!(sk.decrypt_raw(&r).unwrap(), a);
}

#[test]
fn floats_and_ints() {
    let (pk, sk) = key1024();
    let x = pk.encrypt_f64(3.5).unwrap();
    let y = pk.encrypt_f64(-1.25).unwrap();
    assert_eq!(sk.decrypt_f64(&x.add(&y).unwrap()).unwrap(), 2.25);
    assert_eq!(sk.decrypt_f64(&x.sub(&y).unwrap()).unwrap(), 4.75);
    assert_eq!(sk.decrypt_f64(&x.mul_f64(-2.0).unwrap()).unwrap(), -7.0);
    assert_eq!(sk.decrypt_f64(&x.add_f64(0.5).unwrap()).unwrap(), 4.0);
    let i = pk.encrypt_i64(-42).unwrap();
    assert_eq!(i.exponent(), 0);
    assert_eq!(sk.decrypt_i64(&i.mul_i64(3).unwrap()).unwrap(), -126);
    assert_eq!(sk.decrypt_f64(&i.add(&x).unwrap()).unwrap(), -38.5);
}

#[test]
fn key_mismatch_is_an_error() {
    let (pk, sk) = key1024();
    let (pk2, _) = other1024();
    let a = pk.encrypt_raw(&BigUint::from(1u32)).unwrap();
    let b = pk2.encrypt_raw(&BigUint::from(1u32)).unwrap();
    assert!(matches!(a.add(&b), Err(Error::KeyMismatch { .. })));
    assert!(matches!(sk.decrypt_raw(&b), Err(Error::KeyMismatch { .. })));
}

#[test]
fn packing_roundtrip_and_sum() {
    let (pk, sk) = key1024();
    let spec = PackingSpec {
        frac_bits: 16,
        int_bits: 8,
        max_addends: 10,
    };
    let packer = Packer::new(pk, spec).unwrap();
    let v: Vec<f64> = (0..50).map(|i| (i as f64 - 25.0) / 8.0).collect();
    let c = packer.encrypt(&v).unwrap();
    assert_eq!(c.ciphertexts().len(), packer.plaintexts_needed(50));
    assert_eq!(packer.decrypt(sk, &c, 1).unwrap(), v);
    let s = c.add(&c).unwrap().add(&c).unwrap();
    let want: Vec<f64> = v.iter().map(|x| 3.0 * x).collect();
    assert_eq!(packer.decrypt(sk, &s, 3).unwrap(), want);
}

#[test]
fn serialization_roundtrips_2048() {
    let (pk, sk) = key2048();
    assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap(), *pk);
    let c = pk.encrypt_raw(&BigUint::from(77u32)).unwrap();
    assert_eq!(Ciphertext::from_bytes(pk, &c.to_bytes()).unwrap(), c);
    let js = serde_json::to_string(&c).unwrap();
    let back: Ciphertext = serde_json::from_str(&js).unwrap();
    assert_eq!(sk.decrypt_raw(&back).unwrap(), BigUint::from(77u32));
    let pkj = serde_json::to_string(pk).unwrap();
    assert_eq!(serde_json::from_str::<PublicKey>(&pkj).unwrap(), *pk);
    let skj = serde_json::to_string(sk).unwrap();
    let sk2: paillier::PrivateKey = serde_json::from_str(&skj).unwrap();
    assert_eq!(sk2.public_key(), pk);
    assert!(!format!("{sk:?}").contains(&sk.p().to_str_radix(16)));
}
