//! The python-paillier file parsers do what their callers rely on: every
//! valid document parses to the value written and is written back
//! identically; any text at all, arbitrary or a valid document with
//! characters changed, is either rejected with one of the typed errors that
//! parser documents or parses to a value that writes out to a document
//! parsing to the same value again (JSON allows other spellings, so the
//! text itself need not match).

use paillier::{Error, PrivateKey, PublicKey};
use paillier_cli::phe::{ciphertext_to_json, parse_ciphertext, PhePrivateKey, PhePublicKey};
use proptest::prelude::*;
use std::sync::OnceLock;

fn key2048() -> &'static (PublicKey, PrivateKey) {
    static K: OnceLock<(PublicKey, PrivateKey)> = OnceLock::new();
    K.get_or_init(|| paillier::generate_keypair(2048).expect("keygen"))
}

/// Valid documents: a public key, a private key, a ciphertext.
fn documents() -> &'static [String; 3] {
    static D: OnceLock<[String; 3]> = OnceLock::new();
    D.get_or_init(|| {
        let (pk, sk) = key2048();
        let public = PhePublicKey::new(pk.clone(), Some("test key".into()));
        let private = PhePrivateKey::new(sk.clone(), Some("test key".into()), None);
        let ct = pk.encrypt_f64(-12.5).unwrap();
        [public.to_json(), private.to_json(), ciphertext_to_json(&ct)]
    })
}

fn malformed(e: &Error, whats: &[&str]) -> bool {
    matches!(e, Error::Malformed { what, .. } if whats.contains(what))
}

const PUBLIC: &str = "python-paillier public key";
const PRIVATE: &str = "python-paillier private key";
const CIPHERTEXT: &str = "python-paillier ciphertext";

/// Each parser on `text`: a documented error, or a value that is stable
/// under writing and parsing again.
fn check_any(text: &str) -> Result<(), TestCaseError> {
    let (pk, _) = key2048();
    match PhePublicKey::from_json(text) {
        Ok(k) => {
            let again = PhePublicKey::from_json(&k.to_json()).unwrap();
            prop_assert_eq!(again.key(), k.key());
            prop_assert_eq!(again.kid(), k.kid());
        }
        Err(e) => prop_assert!(
            malformed(&e, &[PUBLIC]) || matches!(e, Error::KeySize { .. } | Error::InvalidKey(_)),
            "public key: {:?}",
            e
        ),
    }
    match PhePrivateKey::from_json(text) {
        Ok(k) => {
            let again = PhePrivateKey::from_json(&k.to_json()).unwrap();
            prop_assert_eq!(again.key().public_key(), k.key().public_key());
            prop_assert_eq!(again.kid(), k.kid());
        }
        Err(e) => prop_assert!(
            malformed(&e, &[PRIVATE, PUBLIC])
                || matches!(e, Error::KeySize { .. } | Error::InvalidKey(_)),
            "private key: {:?}",
            e
        ),
    }
    match parse_ciphertext(pk, text) {
        Ok(x) => {
            let again = parse_ciphertext(pk, &ciphertext_to_json(&x)).unwrap();
            prop_assert_eq!(again.ciphertext(), x.ciphertext());
            prop_assert_eq!(again.exponent(), x.exponent());
        }
        Err(e) => prop_assert!(
            // The optional key_fingerprint member is parsed as a fingerprint.
            malformed(&e, &[CIPHERTEXT, "key fingerprint"])
                || matches!(
                    e,
                    Error::KeyMismatch { .. }
                        | Error::InvalidCiphertext(_)
                        | Error::ExponentOutOfRange { .. }
                ),
            "ciphertext: {:?}",
            e
        ),
    }
    Ok(())
}

#[test]
fn valid_documents_round_trip() {
    let (pk, sk) = key2048();
    let [public, private, ct] = documents();
    let p = PhePublicKey::from_json(public).unwrap();
    assert_eq!(
        (p.key(), p.kid(), &p.to_json()),
        (pk, Some("test key"), public)
    );
    let s = PhePrivateKey::from_json(private).unwrap();
    // pheutil's documents order the primes p < q; the generated key may not.
    let sorted = |k: &PrivateKey| {
        let (p, q) = (k.p().clone(), k.q().clone());
        if p < q {
            (p, q)
        } else {
            (q, p)
        }
    };
    assert_eq!(sorted(s.key()), sorted(sk));
    assert_eq!(&s.to_json(), private);
    let x = parse_ciphertext(pk, ct).unwrap();
    assert_eq!(&ciphertext_to_json(&x), ct);
    assert_eq!(sk.decrypt_f64(&x).unwrap(), -12.5);
}

#[test]
fn empty_and_non_json_text_is_malformed() {
    let (pk, _) = key2048();
    for text in ["", "{", "null", "[]", "\"DAJ\"", "{\"kty\": 1}"] {
        assert!(
            malformed(&PhePublicKey::from_json(text).unwrap_err(), &[PUBLIC]),
            "{text}"
        );
        assert!(
            malformed(&PhePrivateKey::from_json(text).unwrap_err(), &[PRIVATE]),
            "{text}"
        );
        assert!(
            malformed(&parse_ciphertext(pk, text).unwrap_err(), &[CIPHERTEXT]),
            "{text}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_is_rejected_or_stable(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        check_any(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn changed_documents_are_rejected_or_stable(
        doc in 0usize..3,
        changes in proptest::collection::vec((any::<usize>(), proptest::char::range(' ', '~')), 1..4),
    ) {
        let mut chars: Vec<char> = documents()[doc].chars().collect();
        for (i, c) in changes {
            let i = i % chars.len();
            chars[i] = c;
        }
        check_any(&chars.into_iter().collect::<String>())?;
    }
}
