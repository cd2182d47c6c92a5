//! Decoders never panic on hostile input: arbitrary bytes, and valid encodings
//! with bytes flipped, truncated or extended, fed to every parser of peer data
//! (python-paillier's files: `paillier-cli/tests/phe_decoders.rs`). Each
//! either returns a value that passed validation or a typed error.

mod common;

use common::key2048;
use paillier::{Ciphertext, EncryptedNumber, PackedCiphertext, Packer, PackingSpec, PublicKey};
use proptest::prelude::*;

fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: usize, extra: &[u8]) -> Vec<u8> {
    for &(i, x) in flips {
        if !bytes.is_empty() {
            let i = i % bytes.len();
            bytes[i] ^= x;
        }
    }
    bytes.truncate(bytes.len().saturating_sub(cut));
    bytes.extend_from_slice(extra);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_rejected_or_valid(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let (pk, _) = key2048();
        let _ = PublicKey::from_bytes(&bytes);
        if let Ok(c) = Ciphertext::from_bytes(pk, &bytes) {
            prop_assert_eq!(c.key_fingerprint(), pk.fingerprint());
        }
        let _ = EncryptedNumber::from_bytes(pk, &bytes);
        let _ = PackedCiphertext::from_bytes(pk, &bytes);
    }

    #[test]
    fn mutated_encodings_are_rejected_or_valid(
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        cut in 0usize..16,
        extra in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let (pk, _) = key2048();
        let c = pk.encrypt_f64(-12.5).unwrap();
        let packer = Packer::new(pk, PackingSpec { frac_bits: 20, int_bits: 20, max_addends: 4 }).unwrap();
        let packed = packer.encrypt(&[1.0, -2.0, 3.5]).unwrap();

        let _ = PublicKey::from_bytes(&mutate(pk.to_bytes(), &flips, cut, &extra));
        let _ = Ciphertext::from_bytes(pk, &mutate(c.ciphertext().to_bytes(), &flips, cut, &extra));
        let _ = EncryptedNumber::from_bytes(pk, &mutate(c.to_bytes(), &flips, cut, &extra));
        let _ = PackedCiphertext::from_bytes(pk, &mutate(packed.to_bytes(), &flips, cut, &extra));
    }
}
