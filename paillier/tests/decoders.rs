//! Every decoder of peer data (the compact binary forms and the serde JSON
//! forms; python-paillier's files are checked in
//! `paillier-cli/tests/phe_decoders.rs`) does what its callers rely on:
//!
//! - every valid encoding decodes to the value encoded and re-encodes to the
//!   same bytes;
//! - every malformed input of a known kind (wrong tag, truncated, extended,
//!   foreign key, out-of-range value or exponent) is rejected with the typed
//!   error of that kind;
//! - any input at all, arbitrary or a mutation of a valid encoding, is either
//!   rejected with one of the errors that decoder documents or decodes to a
//!   value whose encoding is exactly that input (the binary forms are
//!   canonical: nothing is silently repaired or ignored).

mod common;

use common::key2048;
use paillier::{
    BigUint, Ciphertext, EncryptedNumber, Error, PackedCiphertext, Packer, PackingSpec, PublicKey,
};
use proptest::prelude::*;

/// Byte offsets shared by the binary forms: tag, then the key fingerprint.
const TAG: usize = 0;
const FINGERPRINT: std::ops::Range<usize> = 1..33;

fn spec() -> PackingSpec {
    PackingSpec {
        frac_bits: 20,
        int_bits: 20,
        max_addends: 4,
    }
}

/// One valid encoding of each kind under the shared 2048-bit key.
struct Samples {
    ct: Ciphertext,
    enc: EncryptedNumber,
    packed: PackedCiphertext,
}

fn samples() -> &'static Samples {
    static S: std::sync::OnceLock<Samples> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let (pk, _) = key2048();
        let enc = pk.encrypt_f64(-12.5).unwrap();
        let packer = Packer::new(pk, spec()).unwrap();
        Samples {
            ct: enc.ciphertext().clone(),
            enc,
            packed: packer.encrypt(&[1.0, -2.0, 3.5]).unwrap(),
        }
    })
}

/// The `what` of a [`Error::Malformed`], else `None`.
fn malformed_what(e: &Error) -> Option<&'static str> {
    match e {
        Error::Malformed { what, .. } => Some(what),
        _ => None,
    }
}

fn malformed_reason(e: &Error) -> &str {
    match e {
        Error::Malformed { reason, .. } => reason,
        other => panic!("expected Error::Malformed, got {other:?}"),
    }
}

/// Which decoder, for the errors it may return and the name in its messages.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Key,
    Ct,
    Enc,
    Packed,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Key, Kind::Ct, Kind::Enc, Kind::Packed];

    fn what(self) -> &'static str {
        match self {
            Kind::Key => "public key",
            Kind::Ct => "ciphertext",
            Kind::Enc => "encrypted number",
            Kind::Packed => "packed ciphertext",
        }
    }

    fn valid(self) -> Vec<u8> {
        let s = samples();
        match self {
            Kind::Key => key2048().0.to_bytes(),
            Kind::Ct => s.ct.to_bytes(),
            Kind::Enc => s.enc.to_bytes(),
            Kind::Packed => s.packed.to_bytes(),
        }
    }

    /// Decodes `b` and, when that succeeds, re-encodes the value.
    fn decode_reencode(self, b: &[u8]) -> Result<Vec<u8>, Error> {
        let pk = &key2048().0;
        match self {
            Kind::Key => PublicKey::from_bytes(b).map(|v| v.to_bytes()),
            Kind::Ct => Ciphertext::from_bytes(pk, b).map(|v| v.to_bytes()),
            Kind::Enc => EncryptedNumber::from_bytes(pk, b).map(|v| v.to_bytes()),
            Kind::Packed => PackedCiphertext::from_bytes(pk, b).map(|v| v.to_bytes()),
        }
    }

    /// Whether `e` is one of the errors this decoder documents.
    fn allows(self, e: &Error) -> bool {
        if let Some(what) = malformed_what(e) {
            return what == self.what();
        }
        match self {
            Kind::Key => matches!(e, Error::KeySize { .. } | Error::InvalidKey(_)),
            Kind::Ct => matches!(e, Error::KeyMismatch { .. } | Error::InvalidCiphertext(_)),
            Kind::Enc => matches!(
                e,
                Error::KeyMismatch { .. }
                    | Error::InvalidCiphertext(_)
                    | Error::ExponentOutOfRange { .. }
            ),
            Kind::Packed => matches!(
                e,
                Error::KeyMismatch { .. } | Error::InvalidCiphertext(_) | Error::LengthMismatch(_)
            ),
        }
    }

    /// The contract on any input: a documented error, or a value whose
    /// encoding is the input itself.
    fn check_any(self, b: &[u8]) -> Result<(), TestCaseError> {
        match self.decode_reencode(b) {
            Ok(again) => prop_assert_eq!(
                again,
                b.to_vec(),
                "{:?} accepted a non-canonical form",
                self
            ),
            Err(e) => prop_assert!(self.allows(&e), "{:?}: unexpected error {:?}", self, e),
        }
        Ok(())
    }
}

#[test]
fn valid_encodings_round_trip() {
    let (pk, _) = key2048();
    let s = samples();
    assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap(), *pk);
    assert_eq!(Ciphertext::from_bytes(pk, &s.ct.to_bytes()).unwrap(), s.ct);
    let enc = EncryptedNumber::from_bytes(pk, &s.enc.to_bytes()).unwrap();
    assert_eq!(enc.ciphertext(), s.enc.ciphertext());
    assert_eq!(enc.exponent(), s.enc.exponent());
    assert_eq!(
        PackedCiphertext::from_bytes(pk, &s.packed.to_bytes()).unwrap(),
        s.packed
    );
    for kind in Kind::ALL {
        assert_eq!(
            kind.decode_reencode(&kind.valid()).unwrap(),
            kind.valid(),
            "{kind:?}"
        );
    }
    // The serde forms: decode to the same value and re-serialize identically.
    let json = serde_json::to_string(pk).unwrap();
    let back: PublicKey = serde_json::from_str(&json).unwrap();
    assert_eq!((&back, serde_json::to_string(&back).unwrap()), (pk, json));
    let json = serde_json::to_string(&s.ct).unwrap();
    let back: Ciphertext = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (&back, serde_json::to_string(&back).unwrap()),
        (&s.ct, json)
    );
    let json = serde_json::to_string(&s.enc).unwrap();
    let back: EncryptedNumber = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    let json = serde_json::to_string(&s.packed).unwrap();
    let back: PackedCiphertext = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (&back, serde_json::to_string(&back).unwrap()),
        (&s.packed, json)
    );
}

#[test]
fn empty_input_is_truncated() {
    for kind in Kind::ALL {
        let e = kind.decode_reencode(&[]).unwrap_err();
        assert_eq!(malformed_what(&e), Some(kind.what()), "{kind:?}: {e:?}");
        assert!(
            malformed_reason(&e).starts_with("truncated"),
            "{kind:?}: {e}"
        );
    }
}

#[test]
fn out_of_range_values_are_invalid_ciphertexts() {
    let (pk, _) = key2048();
    let valid = samples().ct.to_bytes();
    let n2 = pk.n_squared();
    for c in [BigUint::from(0u32), n2.clone(), pk.n().clone()] {
        let mut b = valid[..33].to_vec();
        let cb = c.to_bytes_be();
        b.resize(b.len() + valid.len() - 33 - cb.len(), 0);
        b.extend_from_slice(&cb);
        assert!(
            matches!(
                Ciphertext::from_bytes(pk, &b),
                Err(Error::InvalidCiphertext(_))
            ),
            "c = {c}"
        );
    }
    // Exponents beyond the range in an otherwise valid encrypted number.
    let mut b = samples().enc.to_bytes();
    for e in [i32::MIN, -4097, 4097, i32::MAX] {
        b[33..37].copy_from_slice(&e.to_be_bytes());
        assert!(
            matches!(
                EncryptedNumber::from_bytes(pk, &b),
                Err(Error::ExponentOutOfRange { exponent, .. }) if exponent == e as i64
            ),
            "exponent {e}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_rejected_or_canonical(
        bytes in proptest::collection::vec(any::<u8>(), 0..700),
        tagged in any::<bool>(),
    ) {
        let (pk, _) = key2048();
        if let Ok(c) = Ciphertext::from_bytes(pk, &bytes) {
            prop_assert_eq!(c.key_fingerprint(), pk.fingerprint());
        }
        for kind in Kind::ALL {
            let mut b = bytes.clone();
            // Half the cases get the right tag, so parsing reaches further.
            if tagged && !b.is_empty() {
                b[TAG] = kind.valid()[TAG];
            }
            kind.check_any(&b)?;
        }
    }

    #[test]
    fn mutated_encodings_are_rejected_or_canonical(
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        cut in 0usize..16,
        extra in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        for kind in Kind::ALL {
            let mut b = kind.valid();
            for &(i, x) in &flips {
                let i = i % b.len();
                b[i] ^= x;
            }
            b.truncate(b.len() - cut);
            b.extend_from_slice(&extra);
            kind.check_any(&b)?;
        }
    }

    #[test]
    fn a_wrong_tag_is_named(kind_i in 0usize..4, tag in any::<u8>()) {
        let kind = Kind::ALL[kind_i];
        let mut b = kind.valid();
        prop_assume!(tag != b[TAG]);
        b[TAG] = tag;
        let e = kind.decode_reencode(&b).unwrap_err();
        prop_assert_eq!(malformed_what(&e), Some(kind.what()));
        prop_assert!(malformed_reason(&e).starts_with("wrong type tag"), "{}", e);
    }

    #[test]
    fn a_truncation_is_named(kind_i in 0usize..4, cut in 1usize..600) {
        let kind = Kind::ALL[kind_i];
        let mut b = kind.valid();
        b.truncate(b.len().saturating_sub(cut));
        let e = kind.decode_reencode(&b).unwrap_err();
        prop_assert_eq!(malformed_what(&e), Some(kind.what()));
        let reason = malformed_reason(&e);
        // The packed form checks its total size before reading ciphertexts.
        prop_assert!(
            reason.starts_with("truncated") || reason.contains("ciphertexts need"),
            "{}", e
        );
    }

    #[test]
    fn trailing_bytes_are_named(
        kind_i in 0usize..4,
        extra in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let kind = Kind::ALL[kind_i];
        let mut b = kind.valid();
        b.extend_from_slice(&extra);
        let e = kind.decode_reencode(&b).unwrap_err();
        prop_assert_eq!(malformed_what(&e), Some(kind.what()));
        let reason = malformed_reason(&e);
        prop_assert!(reason.ends_with("trailing bytes") || reason.contains("ciphertexts need"), "{}", e);
    }

    #[test]
    fn a_changed_fingerprint_is_a_key_mismatch(
        kind_i in 1usize..4,
        i in FINGERPRINT,
        x in 1u8..=255,
    ) {
        let kind = Kind::ALL[kind_i];
        let mut b = kind.valid();
        b[i] ^= x;
        let e = kind.decode_reencode(&b).unwrap_err();
        let is_mismatch = matches!(e, Error::KeyMismatch { expected, .. } if expected == key2048().0.fingerprint());
        prop_assert!(is_mismatch, "{:?}", e);
    }

    /// A flipped byte of `c` gives another valid ciphertext, re-encoded
    /// identically, or an invalid one, rejected as such.
    #[test]
    fn a_changed_value_is_valid_or_an_invalid_ciphertext(i in any::<usize>(), x in 1u8..=255) {
        let mut b = samples().ct.to_bytes();
        let i = FINGERPRINT.end + i % (b.len() - FINGERPRINT.end);
        b[i] ^= x;
        match Ciphertext::from_bytes(&key2048().0, &b) {
            Ok(c) => prop_assert_eq!(c.to_bytes(), b),
            Err(e) => prop_assert!(matches!(e, Error::InvalidCiphertext(_)), "{:?}", e),
        }
    }

    /// The JSON forms: a changed hex digit of `c` decodes (to the value of
    /// the changed text) or fails; what decodes serializes to a text that
    /// decodes to the same value again.
    #[test]
    fn changed_json_is_rejected_or_stable(i in any::<usize>(), digit in 0u8..16) {
        let s = samples();
        let mut j = serde_json::to_value(&s.ct).unwrap();
        let mut c: Vec<u8> = j["c"].as_str().unwrap().bytes().collect();
        let i = i % c.len();
        c[i] = b"0123456789abcdef"[digit as usize];
        let text = String::from_utf8(c).unwrap();
        j["c"] = serde_json::Value::String(text.clone());
        if let Ok(back) = serde_json::from_value::<Ciphertext>(j) {
            prop_assert_eq!(back.value(), &BigUint::parse_bytes(text.as_bytes(), 16).unwrap());
            let again: Ciphertext = serde_json::from_str(&serde_json::to_string(&back).unwrap()).unwrap();
            prop_assert_eq!(again, back);
        }
    }
}
