//! Serialization: the compact binary wire forms and the serde (JSON) forms of
//! the public types. Every parser validates what it reads (through the same
//! constructors as the rest of the crate), bounds every length before
//! allocating, and reports failures as typed errors; none panics on input.
//!
//! Binary forms (all integers big-endian):
//!
//! | type               | layout                                                         |
//! |--------------------|----------------------------------------------------------------|
//! | `PublicKey`        | `'K'`, u16 byte length `L`, `n` (`L` bytes, no leading zero)   |
//! | `Ciphertext`       | `'C'`, key fingerprint (32), `c` (`W` bytes)                   |
//! | `EncryptedNumber`  | `'E'`, fingerprint (32), i32 exponent, `c` (`W` bytes)         |
//! | `PackedCiphertext` | `'V'`, fingerprint (32), u32 len, u32 count, count x `c` (`W`) |
//!
//! where `W` is the byte length of `n^2`; ciphertexts are zero-padded to it.
//!
//! JSON forms: big integers are lowercase hex strings; a ciphertext-bearing
//! value carries its public key (`{"n": hex}`) so it can be parsed without
//! context; parsing validates the key (size >= 2048 bits) and each value.

use crate::ciphertext::Ciphertext;
use crate::encoding::{check_exponent, EncryptedNumber};
use crate::error::{Error, Result};
use crate::fingerprint::KeyFingerprint;
use crate::keys::{byte_len, PrivateKey, PublicKey, MAX_KEY_BITS};
use crate::packing::PackedCiphertext;
use num_bigint::BigUint;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::hex::{hex_decode, hex_encode};

/// A `BigUint` from hex digits (any length, either case), bounded in size.
pub(crate) fn biguint_from_hex(what: &'static str, s: &str) -> Result<BigUint> {
    if s.is_empty() {
        return Err(Error::malformed(what, "empty hex string"));
    }
    if s.len() > MAX_KEY_BITS / 2 + 16 {
        return Err(Error::malformed(what, "hex string too long"));
    }
    if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::malformed(what, "not a hex string"));
    }
    BigUint::parse_bytes(s.as_bytes(), 16).ok_or_else(|| Error::malformed(what, "not a hex string"))
}

fn biguint_to_hex(x: &BigUint) -> String {
    x.to_str_radix(16)
}

/// Bounded reader over untrusted bytes.
struct Reader<'a> {
    what: &'static str,
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(Error::malformed(
                self.what,
                format!("truncated: needed {n} more bytes, {} left", self.b.len()),
            ));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn tag(&mut self, t: u8) -> Result<()> {
        let got = self.u8()?;
        if got != t {
            return Err(Error::malformed(
                self.what,
                format!("wrong type tag 0x{got:02x}, expected 0x{t:02x}"),
            ));
        }
        Ok(())
    }
    fn fingerprint(&mut self, pk: &PublicKey) -> Result<()> {
        let fp: [u8; 32] = self.take(32)?.try_into().expect("32 bytes");
        let found = KeyFingerprint(fp);
        if found != pk.fingerprint() {
            return Err(Error::KeyMismatch {
                expected: pk.fingerprint(),
                found,
            });
        }
        Ok(())
    }
    fn finish(&self) -> Result<()> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(Error::malformed(
                self.what,
                format!("{} trailing bytes", self.b.len()),
            ))
        }
    }
}

/// Width in bytes of a ciphertext under `pk`.
pub fn ciphertext_width(pk: &PublicKey) -> usize {
    byte_len(pk.n_squared())
}

fn put_fixed(out: &mut Vec<u8>, x: &BigUint, width: usize) {
    let b = x.to_bytes_be();
    out.resize(out.len() + width - b.len(), 0);
    out.extend_from_slice(&b);
}

const TAG_KEY: u8 = b'K';
const TAG_CT: u8 = b'C';
const TAG_ENC: u8 = b'E';
const TAG_PACKED: u8 = b'V';

impl PublicKey {
    /// Compact binary form (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let nb = self.n().to_bytes_be();
        let mut out = Vec::with_capacity(3 + nb.len());
        out.push(TAG_KEY);
        out.extend_from_slice(&(nb.len() as u16).to_be_bytes());
        out.extend_from_slice(&nb);
        out
    }

    /// Parses and validates the binary form (normal path: >= 2048 bits).
    pub fn from_bytes(b: &[u8]) -> Result<PublicKey> {
        PublicKey::from_n(Self::n_from_bytes(b)?)
    }

    /// Parses the binary form accepting small keys. INSECURE: tests only
    /// (feature `hazmat-insecure-small-keys`).
    #[cfg(feature = "hazmat-insecure-small-keys")]
    pub fn from_bytes_insecure_for_tests(b: &[u8]) -> Result<PublicKey> {
        PublicKey::from_n_insecure_for_tests(Self::n_from_bytes(b)?)
    }

    fn n_from_bytes(b: &[u8]) -> Result<BigUint> {
        let mut r = Reader {
            what: "public key",
            b,
        };
        r.tag(TAG_KEY)?;
        let len = r.u16()? as usize;
        if len == 0 || len > MAX_KEY_BITS / 8 {
            return Err(Error::malformed(
                "public key",
                format!("modulus length {len} bytes"),
            ));
        }
        let nb = r.take(len)?;
        if nb[0] == 0 {
            return Err(Error::malformed(
                "public key",
                "modulus has a leading zero byte",
            ));
        }
        r.finish()?;
        Ok(BigUint::from_bytes_be(nb))
    }
}

fn read_ct(r: &mut Reader<'_>, pk: &PublicKey) -> Result<Ciphertext> {
    let c = BigUint::from_bytes_be(r.take(ciphertext_width(pk))?);
    Ciphertext::from_biguint(pk, c)
}

impl Ciphertext {
    /// Compact binary form: tag, key fingerprint, fixed-width `c`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let w = ciphertext_width(self.public_key());
        let mut out = Vec::with_capacity(33 + w);
        out.push(TAG_CT);
        out.extend_from_slice(self.key_fingerprint().as_bytes());
        put_fixed(&mut out, self.value(), w);
        out
    }

    /// Parses and validates the binary form under `pk` (fingerprint must match).
    pub fn from_bytes(pk: &PublicKey, b: &[u8]) -> Result<Ciphertext> {
        let mut r = Reader {
            what: "ciphertext",
            b,
        };
        r.tag(TAG_CT)?;
        r.fingerprint(pk)?;
        let c = read_ct(&mut r, pk)?;
        r.finish()?;
        Ok(c)
    }
}

impl EncryptedNumber {
    /// Compact binary form: tag, fingerprint, exponent, fixed-width `c`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let pk = self.public_key();
        let w = ciphertext_width(pk);
        let mut out = Vec::with_capacity(37 + w);
        out.push(TAG_ENC);
        out.extend_from_slice(pk.fingerprint().as_bytes());
        out.extend_from_slice(&self.exponent().to_be_bytes());
        put_fixed(&mut out, self.ciphertext().value(), w);
        out
    }

    /// Parses and validates the binary form under `pk`.
    pub fn from_bytes(pk: &PublicKey, b: &[u8]) -> Result<EncryptedNumber> {
        let mut r = Reader {
            what: "encrypted number",
            b,
        };
        r.tag(TAG_ENC)?;
        r.fingerprint(pk)?;
        let e = check_exponent(r.i32()? as i64)?;
        let c = read_ct(&mut r, pk)?;
        r.finish()?;
        EncryptedNumber::new(c, e)
    }
}

impl PackedCiphertext {
    /// Compact binary form: tag, fingerprint, len, count, fixed-width ciphertexts.
    pub fn to_bytes(&self) -> Vec<u8> {
        let pk = self.public_key();
        let w = ciphertext_width(pk);
        let mut out = Vec::with_capacity(41 + w * self.cts.len());
        out.push(TAG_PACKED);
        out.extend_from_slice(pk.fingerprint().as_bytes());
        out.extend_from_slice(&(self.len as u32).to_be_bytes());
        out.extend_from_slice(&(self.cts.len() as u32).to_be_bytes());
        for c in &self.cts {
            put_fixed(&mut out, c.value(), w);
        }
        out
    }

    /// Parses and validates the binary form under `pk`.
    pub fn from_bytes(pk: &PublicKey, b: &[u8]) -> Result<PackedCiphertext> {
        let what = "packed ciphertext";
        let mut r = Reader { what, b };
        r.tag(TAG_PACKED)?;
        r.fingerprint(pk)?;
        let len = r.u32()? as usize;
        let count = r.u32()? as usize;
        let w = ciphertext_width(pk);
        // Check the exact size before allocating anything proportional to count.
        if r.b.len() != count.saturating_mul(w) {
            return Err(Error::malformed(
                what,
                format!(
                    "{} ciphertexts need {} bytes, {} present",
                    count,
                    count.saturating_mul(w),
                    r.b.len()
                ),
            ));
        }
        let mut cts = Vec::with_capacity(count);
        for _ in 0..count {
            cts.push(read_ct(&mut r, pk)?);
        }
        r.finish()?;
        PackedCiphertext::from_parts(pk, cts, len)
    }
}

impl KeyFingerprint {
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<KeyFingerprint> {
        let b =
            hex_decode(s).ok_or_else(|| Error::malformed("key fingerprint", "not a hex string"))?;
        let arr: [u8; 32] = b
            .try_into()
            .map_err(|_| Error::malformed("key fingerprint", "must be 32 bytes (64 hex digits)"))?;
        Ok(KeyFingerprint(arr))
    }
}

// ---- serde (JSON) forms ----

impl serde::Serialize for KeyFingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for KeyFingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyFingerprint::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyJson {
    n: String,
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        PublicKeyJson {
            n: biguint_to_hex(self.n()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let j = PublicKeyJson::deserialize(d)?;
        let n = biguint_from_hex("public key", &j.n).map_err(serde::de::Error::custom)?;
        PublicKey::from_n(n).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateKeyJson {
    p: String,
    q: String,
}

impl Serialize for PrivateKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut j = PrivateKeyJson {
            p: biguint_to_hex(self.p()),
            q: biguint_to_hex(self.q()),
        };
        let r = j.serialize(s);
        zeroize::Zeroize::zeroize(&mut j.p);
        zeroize::Zeroize::zeroize(&mut j.q);
        r
    }
}

impl<'de> Deserialize<'de> for PrivateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut j = PrivateKeyJson::deserialize(d)?;
        let parsed = (|| {
            let p = biguint_from_hex("private key", &j.p)?;
            let q = biguint_from_hex("private key", &j.q)?;
            PrivateKey::from_primes(p, q)
        })();
        zeroize::Zeroize::zeroize(&mut j.p);
        zeroize::Zeroize::zeroize(&mut j.q);
        parsed.map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CiphertextJson {
    public_key: PublicKey,
    c: String,
}

impl Serialize for Ciphertext {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        CiphertextJson {
            public_key: self.public_key().clone(),
            c: biguint_to_hex(self.value()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Ciphertext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let j = CiphertextJson::deserialize(d)?;
        let c = biguint_from_hex("ciphertext", &j.c).map_err(serde::de::Error::custom)?;
        Ciphertext::from_biguint(&j.public_key, c).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptedNumberJson {
    public_key: PublicKey,
    c: String,
    exponent: i32,
}

impl Serialize for EncryptedNumber {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        EncryptedNumberJson {
            public_key: self.public_key().clone(),
            c: biguint_to_hex(self.ciphertext().value()),
            exponent: self.exponent(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for EncryptedNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let j = EncryptedNumberJson::deserialize(d)?;
        let parse = || -> Result<EncryptedNumber> {
            let c = biguint_from_hex("encrypted number", &j.c)?;
            EncryptedNumber::new(Ciphertext::from_biguint(&j.public_key, c)?, j.exponent)
        };
        parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackedJson {
    public_key: PublicKey,
    len: usize,
    ciphertexts: Vec<String>,
}

impl Serialize for PackedCiphertext {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        PackedJson {
            public_key: self.public_key().clone(),
            len: self.len(),
            ciphertexts: self.cts.iter().map(|c| biguint_to_hex(c.value())).collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PackedCiphertext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let j = PackedJson::deserialize(d)?;
        let parse = || -> Result<PackedCiphertext> {
            let cts = j
                .ciphertexts
                .iter()
                .map(|h| {
                    Ciphertext::from_biguint(
                        &j.public_key,
                        biguint_from_hex("packed ciphertext", h)?,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            PackedCiphertext::from_parts(&j.public_key, cts, j.len)
        };
        parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        assert_eq!(hex_encode(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(hex_decode("0001abFF"), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(hex_decode("0g"), None);
        assert_eq!(hex_decode("abc"), None);
        assert!(biguint_from_hex("x", "").is_err());
        assert!(biguint_from_hex("x", "12_34").is_err());
        assert!(biguint_from_hex("x", "+1").is_err());
        assert_eq!(biguint_from_hex("x", "ff").unwrap(), BigUint::from(255u32));
    }
}
