//! Paillier additively homomorphic encryption, built to be fast and hard to
//! misuse, and compatible with python-paillier's (phe 1.5) number encoding.
//!
//! Layers, lowest first; a module names only modules of lower layers (checked
//! from the sources by `tests/layers.rs`):
//!
//! 1. [`arith`] (Montgomery arithmetic on 64-bit limbs, modular
//!    exponentiation, the fixed-base table, inverses) and `hex`: no
//!    dependency inside the crate.
//! 2. [`prime`] (probable-prime generation) and `fingerprint`
//!    ([`KeyFingerprint`], the SHA-256 of a modulus).
//! 3. `error`: the crate's [`Error`].
//! 4. [`keys`]: keys, their derived constants and DJN table, key generation.
//! 5. [`ciphertext`]: validated ciphertexts and homomorphic operations.
//! 6. [`scheme`]: the three encryption paths (DJN fixed-base default,
//!    textbook, key holder's CRT) and CRT decryption.
//! 7. [`encoding`]: phe's `EncodedNumber` / `EncryptedNumber`; [`threshold`]:
//!    t-of-l threshold decryption (dealing, partial decryptions with proofs,
//!    combining).
//! 8. [`packing`] (many fixed-point values per plaintext) and [`vector`]
//!    (parallel vector operations), independent of each other.
//! 9. [`wire`]: compact binary forms and serde (JSON) forms, all validating.
//!
//! Security notes: keys below 2048 bits exist only through APIs named
//! `_insecure_for_tests`, compiled only with the cargo feature
//! `hazmat-insecure-small-keys` (off by default; for dev-dependencies). The default encryption path rests on the
//! short-exponent DCR assumption of Damgard-Jurik-Nielsen (see [`scheme`]).
//! Homomorphic results are not re-randomized; call `rerandomize` before
//! publishing one. Modular exponentiation is regular and uses masked table
//! lookups, but no constant-time guarantee is claimed (see [`arith`]).
//!
//! What this crate does not do: I/O of any kind, python-paillier's JSON key and
//! ciphertext files, the command-line tool and its bench table (those live in
//! the `paillier-cli` package: its `phe` module and the `paillier` binary).
//!
//! ```
//! let (pk, sk) = paillier::generate_keypair(2048).unwrap();
//! let a = pk.encrypt_f64(1.5).unwrap();
//! let b = pk.encrypt_f64(-0.25).unwrap();
//! let sum = a.add(&b).unwrap().mul_f64(2.0).unwrap();
//! assert_eq!(sk.decrypt_f64(&sum).unwrap(), 2.5);
//! ```

pub mod arith;
pub mod ciphertext;
pub mod encoding;
mod error;
mod fingerprint;
mod hex;
pub mod keys;
pub mod packing;
pub mod prime;
pub mod scheme;
pub mod threshold;
pub mod vector;
pub mod wire;

pub use ciphertext::Ciphertext;
pub use encoding::{EncodedNumber, EncryptedNumber};
pub use error::{Error, Result};
pub use keys::{
    generate_keypair, KeyFingerprint, PrivateKey, PublicKey, DEFAULT_KEY_BITS, MAX_KEY_BITS,
    MIN_KEY_BITS,
};
#[cfg(feature = "hazmat-insecure-small-keys")]
pub use keys::{generate_keypair_insecure_for_tests, MIN_INSECURE_KEY_BITS};
pub use num_bigint::{BigInt, BigUint};
pub use packing::{PackedCiphertext, Packer, PackingSpec};
