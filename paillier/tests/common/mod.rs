//! Keys cached per test binary: key generation is the slowest step, so each
//! size is generated once and shared by every test in the binary.
#![allow(dead_code)]

use paillier::{generate_keypair, generate_keypair_insecure_for_tests, PrivateKey, PublicKey};
use std::sync::OnceLock;

/// A 1024-bit key (INSECURE, tests only): fast homomorphic-law checks.
pub fn key1024() -> &'static (PublicKey, PrivateKey) {
    static K: OnceLock<(PublicKey, PrivateKey)> = OnceLock::new();
    K.get_or_init(|| generate_keypair_insecure_for_tests(1024).expect("keygen"))
}

/// A second 1024-bit key, for key-mismatch tests.
pub fn other1024() -> &'static (PublicKey, PrivateKey) {
    static K: OnceLock<(PublicKey, PrivateKey)> = OnceLock::new();
    K.get_or_init(|| generate_keypair_insecure_for_tests(1024).expect("keygen"))
}

/// A 2048-bit key: the smallest the normal (serialization) paths accept.
pub fn key2048() -> &'static (PublicKey, PrivateKey) {
    static K: OnceLock<(PublicKey, PrivateKey)> = OnceLock::new();
    K.get_or_init(|| generate_keypair(2048).expect("keygen"))
}
