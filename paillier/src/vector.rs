//! Element-wise operations on vectors of ciphertexts and encrypted numbers,
//! run in parallel with rayon. Every function checks that all operands are
//! under one key and that lengths agree.

use crate::ciphertext::Ciphertext;
use crate::encoding::EncryptedNumber;
use crate::error::{Error, Result};
use crate::keys::{PrivateKey, PublicKey};
use num_bigint::BigUint;
use rayon::prelude::*;

fn same_len(a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::LengthMismatch(format!(
            "vectors of lengths {a} and {b}"
        )))
    }
}

/// Encrypts each plaintext (DJN path).
pub fn encrypt_raw(pk: &PublicKey, ms: &[BigUint]) -> Result<Vec<Ciphertext>> {
    ms.par_iter().map(|m| pk.encrypt_raw(m)).collect()
}

/// Decrypts each ciphertext.
pub fn decrypt_raw(sk: &PrivateKey, cs: &[Ciphertext]) -> Result<Vec<BigUint>> {
    cs.par_iter().map(|c| sk.decrypt_raw(c)).collect()
}

/// `a[i] + b[i]`.
pub fn add(a: &[Ciphertext], b: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
    same_len(a.len(), b.len())?;
    a.par_iter().zip(b).map(|(x, y)| x.add(y)).collect()
}

/// `a[i] - b[i]`.
pub fn sub(a: &[Ciphertext], b: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
    same_len(a.len(), b.len())?;
    a.par_iter().zip(b).map(|(x, y)| x.sub(y)).collect()
}

/// `a[i] + k[i]` (plaintext).
pub fn add_plain(a: &[Ciphertext], k: &[BigUint]) -> Result<Vec<Ciphertext>> {
    same_len(a.len(), k.len())?;
    a.par_iter().zip(k).map(|(x, y)| x.add_plain(y)).collect()
}

/// `a[i] * k[i]` (plaintext).
pub fn mul_plain(a: &[Ciphertext], k: &[BigUint]) -> Result<Vec<Ciphertext>> {
    same_len(a.len(), k.len())?;
    a.par_iter().zip(k).map(|(x, y)| x.mul_plain(y)).collect()
}

/// `-a[i]`.
pub fn neg(a: &[Ciphertext]) -> Vec<Ciphertext> {
    a.par_iter().map(|x| x.neg()).collect()
}

/// Fresh randomness on each ciphertext.
pub fn rerandomize(a: &[Ciphertext]) -> Vec<Ciphertext> {
    a.par_iter().map(|x| x.rerandomize()).collect()
}

/// Sum of all ciphertexts (a parallel tree reduction); `None` when empty.
pub fn sum(a: &[Ciphertext]) -> Result<Option<Ciphertext>> {
    a.par_iter().map(|c| Ok(Some(c.clone()))).try_reduce(
        || None,
        |x, y| match (x, y) {
            (Some(x), Some(y)) => x.add(&y).map(Some),
            (x, None) => Ok(x),
            (None, y) => Ok(y),
        },
    )
}

/// Encodes (phe style) and encrypts each float.
pub fn encrypt_f64(pk: &PublicKey, xs: &[f64]) -> Result<Vec<EncryptedNumber>> {
    xs.par_iter().map(|&x| pk.encrypt_f64(x)).collect()
}

/// Decrypts and decodes each number.
pub fn decrypt_f64(sk: &PrivateKey, xs: &[EncryptedNumber]) -> Result<Vec<f64>> {
    xs.par_iter().map(|x| sk.decrypt_f64(x)).collect()
}

/// `a[i] + b[i]` for encrypted numbers (exponents aligned as phe does).
pub fn add_encrypted(a: &[EncryptedNumber], b: &[EncryptedNumber]) -> Result<Vec<EncryptedNumber>> {
    same_len(a.len(), b.len())?;
    a.par_iter().zip(b).map(|(x, y)| x.add(y)).collect()
}

/// `a[i] - b[i]` for encrypted numbers.
pub fn sub_encrypted(a: &[EncryptedNumber], b: &[EncryptedNumber]) -> Result<Vec<EncryptedNumber>> {
    same_len(a.len(), b.len())?;
    a.par_iter().zip(b).map(|(x, y)| x.sub(y)).collect()
}

/// `a[i] + k[i]` for float scalars.
pub fn add_f64(a: &[EncryptedNumber], k: &[f64]) -> Result<Vec<EncryptedNumber>> {
    same_len(a.len(), k.len())?;
    a.par_iter().zip(k).map(|(x, &y)| x.add_f64(y)).collect()
}

/// `a[i] * k[i]` for float scalars.
pub fn mul_f64(a: &[EncryptedNumber], k: &[f64]) -> Result<Vec<EncryptedNumber>> {
    same_len(a.len(), k.len())?;
    a.par_iter().zip(k).map(|(x, &y)| x.mul_f64(y)).collect()
}

/// `a[i] * k` for one float scalar.
pub fn scale_f64(a: &[EncryptedNumber], k: f64) -> Result<Vec<EncryptedNumber>> {
    a.par_iter().map(|x| x.mul_f64(k)).collect()
}

/// `-a[i]` for encrypted numbers.
pub fn neg_encrypted(a: &[EncryptedNumber]) -> Result<Vec<EncryptedNumber>> {
    a.par_iter().map(|x| x.neg()).collect()
}
