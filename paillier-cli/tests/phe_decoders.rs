//! The python-paillier file parsers never panic on hostile input: arbitrary
//! bytes read as text. Each either returns a value that passed validation or a
//! typed error.

use paillier_cli::phe::{parse_ciphertext, PhePrivateKey, PhePublicKey};
use proptest::prelude::*;
use std::sync::OnceLock;

fn key2048() -> &'static (paillier::PublicKey, paillier::PrivateKey) {
    static K: OnceLock<(paillier::PublicKey, paillier::PrivateKey)> = OnceLock::new();
    K.get_or_init(|| paillier::generate_keypair(2048).expect("keygen"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_is_rejected_or_valid(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let (pk, _) = key2048();
        let text = String::from_utf8_lossy(&bytes);
        let _ = PhePublicKey::from_json(&text);
        let _ = PhePrivateKey::from_json(&text);
        let _ = parse_ciphertext(pk, &text);
    }
}
