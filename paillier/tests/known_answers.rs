//! Known-answer tests against vectors computed independently (Python's
//! built-in `pow`, cross-checked with python-paillier 1.5; see
//! `tests/data/gen_vectors.py`).

use paillier::{BigUint, Ciphertext, EncodedNumber, PrivateKey, PublicKey};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("vector file")).expect("json")
}

fn big(v: &Value) -> BigUint {
    v.as_str().unwrap().parse().unwrap()
}

fn key(v: &Value) -> PrivateKey {
    PrivateKey::from_primes_insecure_for_tests(big(&v["p"]), big(&v["q"])).unwrap()
}

#[test]
fn raw_encryption_vectors() {
    let data = load("kat_raw.json");
    let mut checked = 0;
    for k in data["keys"].as_array().unwrap() {
        let sk = key(k);
        let pk = sk.public_key();
        assert_eq!(pk.n(), &big(&k["n"]));
        assert_eq!(pk.bits() as u64, k["bits"].as_u64().unwrap());
        for case in k["cases"].as_array().unwrap() {
            let (m, r, c) = (big(&case["m"]), big(&case["r"]), big(&case["c"]));
            let ours = pk.encrypt_raw_with_nonce(&m, &r).unwrap();
            assert_eq!(ours.value(), &c, "encryption of m = {m}");
            let parsed = Ciphertext::from_biguint(pk, c).unwrap();
            assert_eq!(sk.decrypt_raw(&parsed).unwrap(), m);
            assert_eq!(sk.decrypt_raw_single_thread(&parsed).unwrap(), m);
            checked += 1;
        }
        // The 2048-bit vector key also goes through the normal (secure) parsers.
        if pk.bits() >= 2048 {
            assert_eq!(PublicKey::from_n(pk.n().clone()).unwrap(), *pk);
            assert!(PrivateKey::from_primes(big(&k["p"]), big(&k["q"])).is_ok());
        }
    }
    assert_eq!(checked, 20);
}

fn f(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn phe_encoding_vectors() {
    let data = load("phe_encoding.json");
    let sk = key(&data);
    let pk = sk.public_key();
    assert_eq!(pk.max_int(), &big(&data["max_int"]));
    let encs = data["encodings"].as_array().unwrap();
    for e in encs {
        let max_exp = e.get("max_exponent").map(|m| m.as_i64().unwrap() as i32);
        let enc = match e["kind"].as_str().unwrap() {
            "f64" => EncodedNumber::encode_f64(pk, f(&e["x"]), max_exp).unwrap(),
            _ => EncodedNumber::encode_i64(pk, e["x"].as_str().unwrap().parse().unwrap(), max_exp)
                .unwrap(),
        };
        assert_eq!(
            enc.encoding(),
            &big(&e["encoding"]),
            "encoding of {}",
            e["x"]
        );
        assert_eq!(
            enc.exponent() as i64,
            e["exponent"].as_i64().unwrap(),
            "exponent of {}",
            e["x"]
        );
        assert_eq!(
            enc.decode_f64().unwrap().to_bits(),
            f(&e["decoded"]).to_bits(),
            "decode {}",
            e["x"]
        );
    }
    assert_eq!(encs.len(), 34);
}

#[test]
fn phe_arithmetic_vectors() {
    let data = load("phe_encoding.json");
    let sk = key(&data);
    let pk = sk.public_key();
    let ops = data["ops"].as_array().unwrap();
    for o in ops {
        let encrypt = |v: &Value, is_int: bool| {
            if is_int {
                pk.encrypt_i64(v.as_str().unwrap().parse().unwrap())
                    .unwrap()
            } else {
                pk.encrypt_f64(f(v)).unwrap()
            }
        };
        let a_int = o["a_int"].as_bool().unwrap();
        let b_int = o["b_int"].as_bool().unwrap();
        let a = encrypt(&o["a"], a_int);
        let res = match o["op"].as_str().unwrap() {
            "add" => a.add(&encrypt(&o["b"], b_int)).unwrap(),
            "sub" => a.sub(&encrypt(&o["b"], b_int)).unwrap(),
            "add_scalar" if b_int => a
                .add_i64(o["b"].as_str().unwrap().parse().unwrap())
                .unwrap(),
            "add_scalar" => a.add_f64(f(&o["b"])).unwrap(),
            "mul_scalar" if b_int => a
                .mul_i64(o["b"].as_str().unwrap().parse().unwrap())
                .unwrap(),
            "mul_scalar" => a.mul_f64(f(&o["b"])).unwrap(),
            "neg" => a.neg().unwrap(),
            other => panic!("unknown op {other}"),
        };
        let d = sk.decrypt_encoded(&res).unwrap();
        let what = format!("{} {} {}", o["op"], o["a"], o["b"]);
        assert_eq!(
            d.exponent() as i64,
            o["exponent"].as_i64().unwrap(),
            "{what}"
        );
        assert_eq!(d.encoding(), &big(&o["encoding"]), "{what}");
        assert_eq!(
            sk.decrypt_f64(&res).unwrap().to_bits(),
            f(&o["decoded"]).to_bits(),
            "{what}"
        );
    }
    assert_eq!(ops.len(), 40);
}
