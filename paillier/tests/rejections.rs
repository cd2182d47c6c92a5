//! Every rejection path: each test feeds the bad input and checks the typed error.

mod common;

use common::{key1024, key2048, other1024};
use paillier::{
    generate_keypair, generate_keypair_insecure_for_tests, BigUint, Ciphertext, EncryptedNumber,
    Error, PackedCiphertext, Packer, PackingSpec, PrivateKey, PublicKey,
};

#[test]
fn bad_moduli() {
    let (pk, _) = key2048();
    // Even n.
    let even = pk.n() + 1u32;
    assert!(matches!(
        PublicKey::from_n(even.clone()),
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        PublicKey::from_n_insecure_for_tests(even),
        Err(Error::InvalidKey(_))
    ));
    // Too small on the normal path, fine on the insecure one.
    let (small, _) = key1024();
    assert!(matches!(
        PublicKey::from_n(small.n().clone()),
        Err(Error::KeySize { bits: 1024, .. })
    ));
    assert!(PublicKey::from_n_insecure_for_tests(small.n().clone()).is_ok());
    assert!(matches!(
        PublicKey::from_n(BigUint::from(0u32)),
        Err(Error::KeySize { .. })
    ));
    assert!(matches!(
        PublicKey::from_n_insecure_for_tests(BigUint::from(0xffff_fffbu32)),
        Err(Error::KeySize { .. })
    ));
    // Too large.
    let huge = (BigUint::from(1u32) << 8200u32) + 1u32;
    assert!(matches!(
        PublicKey::from_n(huge),
        Err(Error::KeySize { .. })
    ));
    // Odd but with a small factor.
    let with_factor = pk.n() * 3u32;
    assert!(matches!(
        PublicKey::from_n(with_factor),
        Err(Error::InvalidKey(_))
    ));
}

#[test]
fn bad_key_generation_requests() {
    assert!(matches!(
        generate_keypair(1024),
        Err(Error::KeySize { bits: 1024, .. })
    ));
    assert!(matches!(generate_keypair(2047), Err(Error::KeySize { .. })));
    assert!(matches!(
        generate_keypair(16384),
        Err(Error::KeySize { .. })
    ));
    assert!(matches!(
        generate_keypair_insecure_for_tests(32),
        Err(Error::KeySize { .. })
    ));
    assert!(matches!(
        generate_keypair_insecure_for_tests(513),
        Err(Error::KeySize { .. })
    ));
}

#[test]
fn bad_private_keys() {
    let (_, sk) = key1024();
    let p = sk.p().clone();
    assert!(matches!(
        PrivateKey::from_primes_insecure_for_tests(p.clone(), p.clone()),
        Err(Error::InvalidKey(_))
    ));
    // A composite "prime" (odd, no small factor).
    let composite = &p * sk.q();
    assert!(matches!(
        PrivateKey::from_primes_insecure_for_tests(p.clone(), composite),
        Err(Error::InvalidKey(_))
    ));
    // Secure path refuses the 1024-bit key.
    assert!(matches!(
        PrivateKey::from_primes(p, sk.q().clone()),
        Err(Error::KeySize { .. })
    ));
    // JSON private key of 1024 bits is refused; malformed hex is refused.
    let js = serde_json::to_string(sk).unwrap();
    assert!(serde_json::from_str::<PrivateKey>(&js).is_err());
    assert!(serde_json::from_str::<PrivateKey>(r#"{"p":"zz","q":"07"}"#).is_err());
    assert!(format!("{sk:?}").find(&sk.p().to_string()).is_none());
}

#[test]
fn bad_public_key_bytes_and_json() {
    let (pk, _) = key2048();
    let good = pk.to_bytes();
    assert_eq!(PublicKey::from_bytes(&good).unwrap(), *pk);
    // Truncated at every length.
    for cut in [0, 1, 2, 3, good.len() / 2, good.len() - 1] {
        assert!(
            matches!(
                PublicKey::from_bytes(&good[..cut]),
                Err(Error::Malformed { .. })
            ),
            "cut {cut}"
        );
    }
    // Trailing byte, wrong tag, zero length, leading zero.
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        PublicKey::from_bytes(&trailing),
        Err(Error::Malformed { .. })
    ));
    let mut tag = good.clone();
    tag[0] = b'X';
    assert!(matches!(
        PublicKey::from_bytes(&tag),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        PublicKey::from_bytes(&[b'K', 0, 0]),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        PublicKey::from_bytes(&[b'K', 0, 2, 0, 7]),
        Err(Error::Malformed { .. })
    ));
    // Even n in valid framing.
    let mut even = good.clone();
    *even.last_mut().unwrap() ^= 1;
    assert!(matches!(
        PublicKey::from_bytes(&even),
        Err(Error::InvalidKey(_))
    ));
    // A small key through the normal path is a typed error.
    let small = key1024().0.to_bytes();
    assert!(matches!(
        PublicKey::from_bytes(&small),
        Err(Error::KeySize { .. })
    ));
    assert!(PublicKey::from_bytes_insecure_for_tests(&small).is_ok());
    // JSON.
    let small_json = serde_json::to_string(&key1024().0).unwrap();
    assert!(serde_json::from_str::<PublicKey>(&small_json).is_err());
    assert!(serde_json::from_str::<PublicKey>(r#"{"n":"not hex"}"#).is_err());
    assert!(serde_json::from_str::<PublicKey>(r#"{"n":"1234"}"#).is_err());
    assert!(serde_json::from_str::<PublicKey>(r#"{"n":""}"#).is_err());
    let extra = format!(r#"{{"n":"{}","x":1}}"#, pk.n().to_str_radix(16));
    assert!(serde_json::from_str::<PublicKey>(&extra).is_err());
}

#[test]
fn bad_ciphertext_values() {
    let (pk, sk) = key1024();
    assert!(matches!(
        Ciphertext::from_biguint(pk, BigUint::from(0u32)),
        Err(Error::InvalidCiphertext("c = 0"))
    ));
    assert!(matches!(
        Ciphertext::from_biguint(pk, pk.n_squared().clone()),
        Err(Error::InvalidCiphertext("c >= n^2"))
    ));
    assert!(matches!(
        Ciphertext::from_biguint(pk, pk.n_squared() + 5u32),
        Err(Error::InvalidCiphertext("c >= n^2"))
    ));
    // gcd(c, n) != 1: multiples of p, of q, and of n.
    for c in [sk.p().clone(), sk.q() * 7u32, pk.n().clone()] {
        assert!(matches!(
            Ciphertext::from_biguint(pk, c),
            Err(Error::InvalidCiphertext("gcd(c, n) != 1"))
        ));
    }
    assert!(Ciphertext::from_biguint(pk, BigUint::from(1u32)).is_ok());
    assert!(Ciphertext::from_biguint(pk, pk.n_squared() - 1u32).is_ok());
    // Bad nonces for the known-answer path.
    let m = BigUint::from(1u32);
    assert!(pk.encrypt_raw_with_nonce(&m, &BigUint::from(0u32)).is_err());
    assert!(pk.encrypt_raw_with_nonce(&m, sk.p()).is_err());
    assert!(pk.encrypt_raw_with_nonce(&m, pk.n()).is_err());
    assert!(matches!(
        pk.encrypt_raw_textbook(pk.n()),
        Err(Error::PlaintextOutOfRange)
    ));
    assert!(matches!(
        sk.encrypt_raw_crt(pk.n()),
        Err(Error::PlaintextOutOfRange)
    ));
}

#[test]
fn bad_ciphertext_bytes() {
    let (pk, sk) = key1024();
    let (pk2, _) = other1024();
    let c = pk.encrypt_raw(&BigUint::from(9u32)).unwrap();
    let good = c.to_bytes();
    assert_eq!(Ciphertext::from_bytes(pk, &good).unwrap(), c);
    // Wrong key fingerprint.
    assert!(matches!(
        Ciphertext::from_bytes(pk2, &good),
        Err(Error::KeyMismatch { .. })
    ));
    // Truncated / trailing / wrong tag.
    for cut in [0, 1, 20, 33, good.len() - 1] {
        assert!(matches!(
            Ciphertext::from_bytes(pk, &good[..cut]),
            Err(Error::Malformed { .. })
        ));
    }
    let mut trailing = good.clone();
    trailing.push(1);
    assert!(matches!(
        Ciphertext::from_bytes(pk, &trailing),
        Err(Error::Malformed { .. })
    ));
    let mut tag = good.clone();
    tag[0] = b'E';
    assert!(matches!(
        Ciphertext::from_bytes(pk, &tag),
        Err(Error::Malformed { .. })
    ));
    // Value checks behind valid framing: zero, >= n^2, non-unit.
    let framed = |v: &BigUint| {
        let mut b = good[..33].to_vec();
        let w = good.len() - 33;
        let vb = v.to_bytes_be();
        b.resize(33 + w - vb.len(), 0);
        b.extend_from_slice(&vb);
        b
    };
    assert!(matches!(
        Ciphertext::from_bytes(pk, &framed(&BigUint::from(0u32))),
        Err(Error::InvalidCiphertext(_))
    ));
    let w_max = (BigUint::from(1u32) << (8 * (good.len() - 33))) - 1u32;
    assert!(matches!(
        Ciphertext::from_bytes(pk, &framed(&w_max)),
        Err(Error::InvalidCiphertext(_))
    ));
    assert!(matches!(
        Ciphertext::from_bytes(pk, &framed(sk.p())),
        Err(Error::InvalidCiphertext(_))
    ));
}

#[test]
fn bad_ciphertext_json() {
    let (pk, sk) = key2048();
    let c = pk.encrypt_raw(&BigUint::from(3u32)).unwrap();
    let js = serde_json::to_value(&c).unwrap();
    let with_c = |v: String| {
        let mut j = js.clone();
        j["c"] = serde_json::Value::String(v);
        serde_json::from_value::<Ciphertext>(j)
    };
    assert!(with_c("0".into()).is_err());
    assert!(with_c(pk.n_squared().to_str_radix(16)).is_err());
    assert!(with_c(sk.p().to_str_radix(16)).is_err());
    assert!(with_c("xyz".into()).is_err());
    assert!(with_c(c.value().to_str_radix(16)).is_ok());
    // A ciphertext that parses under another (valid) key fails to decrypt here.
    let (pk_other, _) = paillier::generate_keypair(2048).unwrap();
    let foreign = pk_other.encrypt_raw(&BigUint::from(3u32)).unwrap();
    let back: Ciphertext = serde_json::from_str(&serde_json::to_string(&foreign).unwrap()).unwrap();
    assert!(matches!(
        sk.decrypt_raw(&back),
        Err(Error::KeyMismatch { .. })
    ));
}

#[test]
fn wrong_key_operations() {
    let (pk, sk) = key1024();
    let (pk2, sk2) = other1024();
    let a = pk.encrypt_f64(1.0).unwrap();
    let b = pk2.encrypt_f64(1.0).unwrap();
    assert!(matches!(a.add(&b), Err(Error::KeyMismatch { .. })));
    assert!(matches!(a.sub(&b), Err(Error::KeyMismatch { .. })));
    assert!(matches!(sk.decrypt_f64(&b), Err(Error::KeyMismatch { .. })));
    assert!(matches!(
        a.ciphertext().sub(b.ciphertext()),
        Err(Error::KeyMismatch { .. })
    ));
    let enc2 = paillier::EncodedNumber::encode_f64(pk2, 2.0, None).unwrap();
    assert!(matches!(
        a.add_encoded(&enc2),
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(
        a.mul_encoded(&enc2),
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(
        pk.encrypt_encoded(&enc2),
        Err(Error::KeyMismatch { .. })
    ));
    // Fingerprint in the error names both keys.
    match a.add(&b) {
        Err(Error::KeyMismatch { expected, found }) => {
            assert_eq!(expected, pk.fingerprint());
            assert_eq!(found, pk2.fingerprint());
            let msg = a.add(&b).unwrap_err().to_string();
            assert!(msg.contains(&pk.fingerprint().to_string()), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // Packed vectors.
    let spec = PackingSpec {
        frac_bits: 8,
        int_bits: 8,
        max_addends: 4,
    };
    let p1 = Packer::new(pk, spec).unwrap();
    let p2 = Packer::new(pk2, spec).unwrap();
    let c1 = p1.encrypt(&[1.0, 2.0]).unwrap();
    let c2 = p2.encrypt(&[1.0, 2.0]).unwrap();
    assert!(matches!(c1.add(&c2), Err(Error::KeyMismatch { .. })));
    assert!(matches!(
        p1.decrypt(sk, &c2, 1),
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(
        p1.decrypt(sk2, &c1, 1),
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(
        PackedCiphertext::from_parts(pk, c2.ciphertexts().to_vec(), 2),
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(
        PackedCiphertext::from_bytes(pk2, &c1.to_bytes()),
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(
        EncryptedNumber::from_bytes(pk2, &a.to_bytes()),
        Err(Error::KeyMismatch { .. })
    ));
}

#[test]
fn exponents_out_of_range() {
    let (pk, sk) = key1024();
    let c = pk.encrypt_raw(&BigUint::from(1u32)).unwrap();
    assert!(matches!(
        EncryptedNumber::new(c.clone(), 5000),
        Err(Error::ExponentOutOfRange { exponent: 5000, .. })
    ));
    assert!(matches!(
        EncryptedNumber::new(c.clone(), -5000),
        Err(Error::ExponentOutOfRange { .. })
    ));
    // Binary form with an out-of-range exponent.
    let x = EncryptedNumber::new(c, -3).unwrap();
    let mut b = x.to_bytes();
    assert_eq!(EncryptedNumber::from_bytes(pk, &b).unwrap(), x);
    b[33..37].copy_from_slice(&(-4097i32).to_be_bytes());
    assert!(matches!(
        EncryptedNumber::from_bytes(pk, &b),
        Err(Error::ExponentOutOfRange {
            exponent: -4097,
            ..
        })
    ));
    let good = x.to_bytes();
    for cut in [0, 10, 36, good.len() - 1] {
        assert!(matches!(
            EncryptedNumber::from_bytes(pk, &good[..cut]),
            Err(Error::Malformed { .. })
        ));
    }
    // Arithmetic that would leave the range is refused: repeated multiplication
    // by a float whose exponent is very negative.
    let mut y = pk.encrypt_f64(1.0).unwrap();
    let tiny = 1e-300; // exponent about -263
    let mut refused = false;
    for _ in 0..20 {
        match y.mul_f64(tiny) {
            Ok(z) => y = z,
            Err(Error::ExponentOutOfRange { .. }) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused);
    // Decreasing an exponent upwards is refused.
    assert!(matches!(
        x.decrease_exponent_to(0),
        Err(Error::ExponentOutOfRange { .. })
    ));
    // Aligning exponents so far apart that 16^diff exceeds max_int is an overflow.
    let big_exp = EncryptedNumber::new(pk.encrypt_raw(&BigUint::from(1u32)).unwrap(), 300).unwrap();
    let small_exp = pk.encrypt_f64(0.5).unwrap();
    assert!(matches!(
        big_exp.add(&small_exp),
        Err(Error::EncodingOverflow(_))
    ));
    let _ = sk;
}

#[test]
fn bad_exponent_json() {
    let (pk, _) = key2048();
    let x = pk.encrypt_f64(2.5).unwrap();
    let mut j = serde_json::to_value(&x).unwrap();
    assert_eq!(
        serde_json::from_value::<EncryptedNumber>(j.clone()).unwrap(),
        x
    );
    j["exponent"] = serde_json::json!(99999);
    assert!(serde_json::from_value::<EncryptedNumber>(j.clone()).is_err());
    j["exponent"] = serde_json::json!("x");
    assert!(serde_json::from_value::<EncryptedNumber>(j).is_err());
}

#[test]
fn bad_packing() {
    let (pk, sk) = key1024();
    let spec = |frac_bits, int_bits, max_addends| PackingSpec {
        frac_bits,
        int_bits,
        max_addends,
    };
    assert!(matches!(
        Packer::new(pk, spec(8, 8, 0)),
        Err(Error::PackingSpec(_))
    ));
    assert!(matches!(
        Packer::new(pk, spec(60, 60, 1)),
        Err(Error::PackingSpec(_))
    ));
    assert!(matches!(
        Packer::new(pk, spec(100, 10, 1)),
        Err(Error::PackingSpec(_))
    ));
    let tiny = generate_keypair_insecure_for_tests(64).unwrap().0;
    assert!(matches!(
        Packer::new(&tiny, spec(40, 40, 1 << 20)),
        Err(Error::PackingSpec(_))
    ));
    let packer = Packer::new(pk, spec(8, 4, 3)).unwrap();
    // Value out of the slot's range.
    assert!(matches!(
        packer.encode(&[1.0, 16.0]),
        Err(Error::SlotOverflow { index: 1, .. })
    ));
    assert!(matches!(
        packer.encrypt(&[-16.0]),
        Err(Error::SlotOverflow { index: 0, .. })
    ));
    let pts = packer.encode(&[1.0, -2.0]).unwrap();
    // Addends 0 or above the spec; wrong plaintext count; plaintext >= n.
    assert!(matches!(
        packer.decode(&pts, 2, 0),
        Err(Error::TooManyAddends { .. })
    ));
    assert!(matches!(
        packer.decode(&pts, 2, 4),
        Err(Error::TooManyAddends { .. })
    ));
    assert!(matches!(
        packer.decode(&pts, 2000, 1),
        Err(Error::LengthMismatch(_))
    ));
    assert!(matches!(
        packer.decode(&[pk.n().clone()], 2, 1),
        Err(Error::PlaintextOutOfRange)
    ));
    // Garbage above the used slots is detected.
    let garbage = &pts[0] + (BigUint::from(1u32) << 900u32);
    assert!(matches!(
        packer.decode(&[garbage], 2, 1),
        Err(Error::SlotOutOfRange { .. })
    ));
    // A slot over its range (e.g. a decrypted random value).
    let c = packer.encrypt(&[1.0, -2.0]).unwrap();
    let mangled = c.ciphertexts()[0]
        .mul_plain(&BigUint::from(1u64 << 40))
        .unwrap();
    let bad = PackedCiphertext::from_parts(pk, vec![mangled], 2).unwrap();
    assert!(packer.decrypt(sk, &bad, 1).is_err());
    // Shape mismatches.
    let other = packer.encrypt(&[1.0, 2.0, 3.0]).unwrap();
    assert!(matches!(c.add(&other), Err(Error::LengthMismatch(_))));
    assert!(matches!(
        PackedCiphertext::from_parts(pk, vec![], 3),
        Err(Error::LengthMismatch(_))
    ));
    assert!(matches!(c.add_plain(&[]), Err(Error::LengthMismatch(_))));
}

#[test]
fn bad_packed_bytes_and_json() {
    let (pk, _) = key2048();
    let packer = Packer::new(
        pk,
        PackingSpec {
            frac_bits: 16,
            int_bits: 16,
            max_addends: 8,
        },
    )
    .unwrap();
    let c = packer.encrypt(&vec![0.5; 100]).unwrap();
    let good = c.to_bytes();
    assert_eq!(PackedCiphertext::from_bytes(pk, &good).unwrap(), c);
    for cut in [0, 5, 33, 40, 41, good.len() - 1] {
        assert!(matches!(
            PackedCiphertext::from_bytes(pk, &good[..cut]),
            Err(Error::Malformed { .. })
        ));
    }
    // A count that promises more ciphertexts than present (no huge allocation).
    let mut lie = good.clone();
    lie[37..41].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        PackedCiphertext::from_bytes(pk, &lie),
        Err(Error::Malformed { .. })
    ));
    let js = serde_json::to_value(&c).unwrap();
    assert_eq!(
        serde_json::from_value::<PackedCiphertext>(js.clone()).unwrap(),
        c
    );
    let mut bad = js.clone();
    bad["ciphertexts"][0] = serde_json::json!("0");
    assert!(serde_json::from_value::<PackedCiphertext>(bad).is_err());
    let mut bad_len = js;
    bad_len["len"] = serde_json::json!(0);
    assert!(serde_json::from_value::<PackedCiphertext>(bad_len).is_err());
}
