//! Gradient <-> ciphertext conversion shared by both state machines: fixed-point
//! encoding (packed or one value per plaintext), masking, encryption, parsing of
//! ring passes at the boundary, and decryption of the aggregate.

use num_bigint::BigUint;
use paillier::{Ciphertext, Packer, PrivateKey, PublicKey};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::masks::MaskSet;
use crate::wire::{Bytes, FixedPoint, RingPass};

/// Encodes gradients of one fixed length for one key and encoding.
#[derive(Clone, Debug)]
pub(crate) struct GradientCodec {
    pk: PublicKey,
    packer: Packer,
    pack: bool,
    len: usize,
}

impl GradientCodec {
    pub(crate) fn new(
        pk: &PublicKey,
        fixed_point: FixedPoint,
        pack: bool,
        len: usize,
    ) -> Result<GradientCodec> {
        let packer = Packer::new(pk, fixed_point.packing_spec()).map_err(|e| {
            Error::Config(format!(
                "fixed-point encoding {fixed_point:?} does not fit a {}-bit key: {e}",
                pk.bits()
            ))
        })?;
        Ok(GradientCodec {
            pk: pk.clone(),
            packer,
            pack,
            len,
        })
    }

    /// Whether this codec encodes vectors of `len` values with `fixed_point`.
    pub(crate) fn fits(&self, fixed_point: FixedPoint, len: usize) -> bool {
        self.len == len && *self.packer.spec() == fixed_point.packing_spec()
    }

    /// Ciphertexts per gradient.
    pub(crate) fn ciphertext_count(&self) -> usize {
        if self.pack {
            self.packer.plaintexts_needed(self.len)
        } else {
            self.len
        }
    }

    /// Fixed-point plaintexts of `values`, each in `[0, n)`.
    fn encode(&self, values: &[f64]) -> Result<Vec<BigUint>> {
        if values.len() != self.len {
            return Err(Error::Config(format!(
                "gradient has {} values, the run expects {}",
                values.len(),
                self.len
            )));
        }
        if self.pack {
            self.packer.encode(values).map_err(Error::Crypto)
        } else {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                let mut one = self
                    .packer
                    .encode(std::slice::from_ref(v))
                    .map_err(Error::Crypto)?;
                if one.len() != 1 {
                    return Err(Error::Config(
                        "packer produced more than one plaintext for one value".into(),
                    ));
                }
                out.append(&mut one);
            }
            Ok(out)
        }
    }

    /// Encodes, masks (when `masks` is given) and encrypts one gradient.
    pub(crate) fn encrypt(
        &self,
        values: &[f64],
        masks: Option<&MaskSet>,
    ) -> Result<Vec<Ciphertext>> {
        let mut plaintexts = self.encode(values)?;
        if let Some(m) = masks {
            m.apply(&mut plaintexts, self.pk.n());
        }
        // The key's table on this thread first (or waiting here for the
        // thread building it), never inside a rayon worker of the loop below.
        self.pk.precompute();
        plaintexts
            .par_iter()
            .map(|m| self.pk.encrypt_raw(m).map_err(Error::Crypto))
            .collect()
    }

    /// Element-wise homomorphic sum.
    pub(crate) fn add(&self, a: &[Ciphertext], b: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        a.par_iter()
            .zip(b)
            .map(|(x, y)| x.add(y).map_err(Error::Crypto))
            .collect()
    }

    /// The wire form of a running sum.
    pub(crate) fn to_wire(&self, epoch: u64, cts: &[Ciphertext]) -> RingPass {
        RingPass {
            epoch,
            key_fingerprint: self.pk.fingerprint(),
            len: self.len as u32,
            ciphertexts: cts.iter().map(|c| Bytes(c.to_bytes())).collect(),
        }
    }

    /// Parses a ring pass from `peer` against the run's key: fingerprint, length,
    /// ciphertext count, and each ciphertext's range and gcd.
    pub(crate) fn parse(&self, peer: &str, pass: &RingPass) -> Result<Vec<Ciphertext>> {
        let expected = self.pk.fingerprint();
        if pass.key_fingerprint != expected {
            return Err(Error::KeyMismatch {
                peer: peer.to_owned(),
                got: pass.key_fingerprint,
                expected,
            });
        }
        if pass.len as usize != self.len || pass.ciphertexts.len() != self.ciphertext_count() {
            return Err(Error::InvalidMessage {
                peer: peer.to_owned(),
                kind: "ring_pass",
                reason: format!(
                    "{} values in {} ciphertexts, expected {} in {}",
                    pass.len,
                    pass.ciphertexts.len(),
                    self.len,
                    self.ciphertext_count()
                ),
            });
        }
        pass.ciphertexts
            .par_iter()
            .map(|b| {
                Ciphertext::from_bytes(&self.pk, &b.0).map_err(|source| Error::InvalidCiphertext {
                    peer: peer.to_owned(),
                    source,
                })
            })
            .collect()
    }

    /// Decrypts a running sum to its plaintexts in `[0, n)` (still masked).
    pub(crate) fn decrypt_raw(&self, sk: &PrivateKey, cts: &[Ciphertext]) -> Result<Vec<BigUint>> {
        cts.par_iter()
            .map(|c| sk.decrypt_raw(c).map_err(Error::Crypto))
            .collect()
    }

    /// Removes `masks` from plaintexts in place (the survivors' revealed masks).
    pub(crate) fn unmask(&self, plaintexts: &mut [BigUint], masks: &[MaskSet]) {
        let n = self.pk.n();
        for m in masks {
            m.remove(plaintexts, n);
        }
    }

    /// Decodes unmasked plaintexts holding a sum of `addends` gradients.
    pub(crate) fn decode_sum(&self, plaintexts: &[BigUint], addends: u64) -> Result<Vec<f64>> {
        if self.pack {
            self.packer
                .decode(plaintexts, self.len, addends)
                .map_err(Error::Crypto)
        } else {
            let mut out = Vec::with_capacity(self.len);
            for p in plaintexts {
                let v = self
                    .packer
                    .decode(std::slice::from_ref(p), 1, addends)
                    .map_err(Error::Crypto)?;
                out.extend(v);
            }
            Ok(out)
        }
    }
}
