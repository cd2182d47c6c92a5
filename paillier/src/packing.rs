//! Fixed-point packing of many signed values into one plaintext, so a whole
//! vector (a gradient of a few dozen values) is one ciphertext.
//!
//! A value `v` becomes `round(v * 2^frac_bits)`, which must be below
//! `2^(int_bits + frac_bits)` in magnitude; adding the offset
//! `2^(int_bits + frac_bits)` makes it a non-negative slot value below
//! `2^(int_bits + frac_bits + 1)`. A slot is that wide plus
//! `ceil(log2(max_addends))` bits of headroom, so the sum of up to
//! `max_addends` packed vectors never carries into the next slot. Slots are
//! laid out from the least significant end and the packed plaintext stays
//! below `2^(|n| - 1) < n`. Decoding a sum of `a` vectors subtracts
//! `a * offset` from each slot.
//!
//! Sums taken mod `n` that differ from the integer sum by a multiple of `n`
//! (the federation's pairwise masks, which add up to 0 mod `n`) decode
//! correctly, because decryption returns the sum reduced mod `n`, which is the
//! integer sum of the encodings.

use crate::ciphertext::Ciphertext;
use crate::error::{Error, Result};
use crate::fingerprint::KeyFingerprint;
use crate::keys::{PrivateKey, PublicKey};
use num_bigint::BigUint;
use rayon::prelude::*;

/// Widest slot supported (slot sums are handled as `u128`).
pub const MAX_SLOT_BITS: u32 = 127;

/// How values are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackingSpec {
    /// Fractional bits: values are rounded to multiples of `2^-frac_bits`.
    pub frac_bits: u32,
    /// Integer bits: `|v| < 2^int_bits` is required.
    pub int_bits: u32,
    /// How many packed vectors may be summed before decoding (>= 1).
    pub max_addends: u64,
}

impl PackingSpec {
    /// Bits of headroom for `max_addends` summands: `ceil(log2(max_addends))`.
    pub fn headroom_bits(&self) -> u32 {
        if self.max_addends <= 1 {
            0
        } else {
            64 - (self.max_addends - 1).leading_zeros()
        }
    }

    /// Slot width: `int_bits + frac_bits + 1 (sign offset) + headroom`.
    pub fn slot_bits(&self) -> u32 {
        self.int_bits + self.frac_bits + 1 + self.headroom_bits()
    }

    fn validate(&self) -> Result<()> {
        if self.max_addends == 0 {
            return Err(Error::PackingSpec("max_addends must be at least 1".into()));
        }
        // In u64: peer-supplied u32 fields must not overflow (slot_bits adds
        // them in u32, so it is called only once they are known to be small).
        let value_bits = self.int_bits as u64 + self.frac_bits as u64;
        let slot = value_bits + 1 + self.headroom_bits() as u64;
        if slot > MAX_SLOT_BITS as u64 {
            return Err(Error::PackingSpec(format!(
                "slot of {slot} bits exceeds the {MAX_SLOT_BITS}-bit maximum"
            )));
        }
        if value_bits > 100 {
            return Err(Error::PackingSpec(
                "int_bits + frac_bits must be at most 100".into(),
            ));
        }
        Ok(())
    }
}

/// Packs and unpacks `f64` vectors for one key and spec.
#[derive(Clone, Debug)]
pub struct Packer {
    pk: PublicKey,
    spec: PackingSpec,
    slots: usize,
}

impl Packer {
    /// Checks the spec against the key (at least one slot must fit).
    pub fn new(pk: &PublicKey, spec: PackingSpec) -> Result<Packer> {
        spec.validate()?;
        // Keep the packed value below 2^(|n| - 1) < n.
        let usable = pk.bits() - 1;
        let slots = usable / spec.slot_bits() as usize;
        if slots == 0 {
            return Err(Error::PackingSpec(format!(
                "slot of {} bits does not fit a {}-bit key",
                spec.slot_bits(),
                pk.bits()
            )));
        }
        Ok(Packer {
            pk: pk.clone(),
            spec,
            slots,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &PackingSpec {
        &self.spec
    }

    /// The key.
    pub fn public_key(&self) -> &PublicKey {
        &self.pk
    }

    /// Values per plaintext.
    pub fn slots_per_plaintext(&self) -> usize {
        self.slots
    }

    /// Plaintexts (ciphertexts) needed for `len` values.
    pub fn plaintexts_needed(&self, len: usize) -> usize {
        len.div_ceil(self.slots)
    }

    fn offset(&self) -> u128 {
        1u128 << (self.spec.int_bits + self.spec.frac_bits)
    }

    fn encode_value(&self, index: usize, v: f64) -> Result<u128> {
        let err = || Error::SlotOverflow {
            index,
            value: v,
            int_bits: self.spec.int_bits,
        };
        if !v.is_finite() {
            return Err(err());
        }
        let scaled = (v * 2f64.powi(self.spec.frac_bits as i32)).round();
        let limit = self.offset() as f64;
        if scaled.abs() >= limit {
            return Err(err());
        }
        // |scaled| < 2^100, exactly representable as i128.
        Ok((scaled as i128 + self.offset() as i128) as u128)
    }

    /// Packs `values` into plaintexts, each `< n`.
    pub fn encode(&self, values: &[f64]) -> Result<Vec<BigUint>> {
        let w = self.spec.slot_bits() as usize;
        let mut out = Vec::with_capacity(self.plaintexts_needed(values.len()));
        for (ci, chunk) in values.chunks(self.slots).enumerate() {
            // Assemble little-endian u64 limbs directly.
            let mut limbs = vec![0u64; (chunk.len() * w).div_ceil(64) + 2];
            for (i, &v) in chunk.iter().enumerate() {
                let s = self.encode_value(ci * self.slots + i, v)?;
                let pos = i * w;
                let (li, off) = (pos / 64, pos % 64);
                let lo = s << off;
                limbs[li] |= lo as u64;
                limbs[li + 1] |= (lo >> 64) as u64;
                if off > 0 {
                    limbs[li + 2] |= (s >> (128 - off)) as u64;
                }
            }
            out.push(crate::arith::from_limbs(&limbs));
        }
        Ok(out)
    }

    /// Unpacks `len` values from `plaintexts`, which hold the (mod `n`) sum of
    /// `addends` packed vectors. Errors if `addends` exceeds the spec or a slot
    /// is out of the range `addends` allows.
    pub fn decode(&self, plaintexts: &[BigUint], len: usize, addends: u64) -> Result<Vec<f64>> {
        if addends == 0 || addends > self.spec.max_addends {
            return Err(Error::TooManyAddends {
                addends,
                max_addends: self.spec.max_addends,
            });
        }
        if plaintexts.len() != self.plaintexts_needed(len) {
            return Err(Error::LengthMismatch(format!(
                "{} values need {} plaintexts, got {}",
                len,
                self.plaintexts_needed(len),
                plaintexts.len()
            )));
        }
        let w = self.spec.slot_bits() as usize;
        let mask: u128 = if w == 128 {
            u128::MAX
        } else {
            (1u128 << w) - 1
        };
        let total_offset = self.offset() * addends as u128;
        let scale = 2f64.powi(-(self.spec.frac_bits as i32));
        let mut out = Vec::with_capacity(len);
        for (ci, pt) in plaintexts.iter().enumerate() {
            if pt >= self.pk.n() {
                return Err(Error::PlaintextOutOfRange);
            }
            let in_this = (len - ci * self.slots).min(self.slots);
            let limbs = pt.to_u64_digits();
            let limb = |i: usize| limbs.get(i).copied().unwrap_or(0) as u128;
            for i in 0..in_this {
                let pos = i * w;
                let (li, off) = (pos / 64, pos % 64);
                let mut s = limb(li) >> off;
                s |= limb(li + 1) << (64 - off);
                if off > 0 {
                    s |= limb(li + 2) << (128 - off);
                }
                let s = s & mask;
                // Each addend's slot is in [0, 2 offset), so the sum is in
                // [0, 2 addends offset); the decoded value then satisfies
                // |v| < addends 2^int_bits.
                if s >= 2 * total_offset {
                    return Err(Error::SlotOutOfRange {
                        index: ci * self.slots + i,
                    });
                }
                let signed = s as i128 - total_offset as i128;
                out.push(signed as f64 * scale);
            }
            // Bits above the last used slot must be zero.
            let used = in_this * w;
            if pt.bits() as usize > used {
                return Err(Error::SlotOutOfRange {
                    index: ci * self.slots + in_this.saturating_sub(1),
                });
            }
        }
        Ok(out)
    }

    /// Packs and encrypts (DJN path, ciphertexts in parallel).
    pub fn encrypt(&self, values: &[f64]) -> Result<PackedCiphertext> {
        let pts = self.encode(values)?;
        let cts = pts
            .par_iter()
            .map(|m| self.pk.encrypt_raw(m))
            .collect::<Result<Vec<_>>>()?;
        Ok(PackedCiphertext {
            pk: self.pk.clone(),
            cts,
            len: values.len(),
        })
    }

    /// Decrypts (in parallel) and unpacks a sum of `addends` packed vectors.
    pub fn decrypt(&self, sk: &PrivateKey, c: &PackedCiphertext, addends: u64) -> Result<Vec<f64>> {
        self.pk.check_same(sk.public_key())?;
        self.pk.check_same(&c.pk)?;
        let pts = c
            .cts
            .par_iter()
            .map(|ct| sk.decrypt_raw(ct))
            .collect::<Result<Vec<_>>>()?;
        self.decode(&pts, c.len, addends)
    }
}

/// The packed ciphertexts of one vector, plus its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedCiphertext {
    pub(crate) pk: PublicKey,
    pub(crate) cts: Vec<Ciphertext>,
    pub(crate) len: usize,
}

impl PackedCiphertext {
    /// Assembles from parts; every ciphertext must be under `pk`.
    pub fn from_parts(
        pk: &PublicKey,
        cts: Vec<Ciphertext>,
        len: usize,
    ) -> Result<PackedCiphertext> {
        for c in &cts {
            pk.check_same(c.public_key())?;
        }
        if cts.is_empty() && len != 0 {
            return Err(Error::LengthMismatch(
                "a non-empty vector needs at least one ciphertext".into(),
            ));
        }
        if cts.len() > len.max(1) {
            return Err(Error::LengthMismatch(format!(
                "{} ciphertexts for {} values",
                cts.len(),
                len
            )));
        }
        Ok(PackedCiphertext {
            pk: pk.clone(),
            cts,
            len,
        })
    }

    /// Element-wise homomorphic sum (same key, same shape), in parallel.
    pub fn add(&self, other: &PackedCiphertext) -> Result<PackedCiphertext> {
        self.pk.check_same(&other.pk)?;
        if self.len != other.len || self.cts.len() != other.cts.len() {
            return Err(Error::LengthMismatch(format!(
                "packed vectors of {} and {} values",
                self.len, other.len
            )));
        }
        let cts = self
            .cts
            .par_iter()
            .zip(other.cts.par_iter())
            .map(|(a, b)| a.add(b))
            .collect::<Result<Vec<_>>>()?;
        Ok(PackedCiphertext {
            pk: self.pk.clone(),
            cts,
            len: self.len,
        })
    }

    /// Adds a plaintext to every ciphertext (e.g. a pairwise mask per plaintext).
    pub fn add_plain(&self, masks: &[BigUint]) -> Result<PackedCiphertext> {
        if masks.len() != self.cts.len() {
            return Err(Error::LengthMismatch(format!(
                "{} masks for {} ciphertexts",
                masks.len(),
                self.cts.len()
            )));
        }
        let cts = self
            .cts
            .par_iter()
            .zip(masks.par_iter())
            .map(|(c, m)| c.add_plain(m))
            .collect::<Result<Vec<_>>>()?;
        Ok(PackedCiphertext {
            pk: self.pk.clone(),
            cts,
            len: self.len,
        })
    }

    /// Fresh randomness on every ciphertext.
    pub fn rerandomize(&self) -> PackedCiphertext {
        PackedCiphertext {
            pk: self.pk.clone(),
            cts: self.cts.par_iter().map(|c| c.rerandomize()).collect(),
            len: self.len,
        }
    }

    /// The ciphertexts.
    pub fn ciphertexts(&self) -> &[Ciphertext] {
        &self.cts
    }

    /// Number of packed values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty vector.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key.
    pub fn public_key(&self) -> &PublicKey {
        &self.pk
    }

    /// Fingerprint of the key.
    pub fn key_fingerprint(&self) -> KeyFingerprint {
        self.pk.fingerprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_peer_supplied_widths_are_refused_without_overflow() {
        let pk = crate::keys::generate_keypair_insecure_for_tests(512)
            .unwrap()
            .0;
        for (int_bits, frac_bits) in [(u32::MAX, 1), (1, u32::MAX), (u32::MAX, u32::MAX)] {
            let spec = PackingSpec {
                frac_bits,
                int_bits,
                max_addends: u64::MAX,
            };
            assert!(matches!(Packer::new(&pk, spec), Err(Error::PackingSpec(_))));
        }
    }
}
