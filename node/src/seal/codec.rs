//! The seal's two binary formats: the signed key offer and the sealed
//! message, with a bounded reader that never allocates more than a field's
//! own limit and never more than the bytes actually present.
//!
//! Both formats are length-delimited by the transport frame around them; the
//! last field of a sealed message (ciphertext and tag) runs to its end.
//!
//! Key offer (`KeyOffer`):
//!
//! ```text
//! u8  format = 0x4f ('O')
//! u8  len | run id          (1..=64 bytes, RunId rules)
//! u32 round                 (big-endian)
//! u64 epoch                 (the round attempt's mask epoch, big-endian)
//! u8  len | sender name     (1..=63 bytes, node-name rules)
//! [32] X25519 public key
//! u16 len | certificate DER (1..=MAX_CERT_BYTES)
//! u16 signature scheme      (TLS SignatureScheme code)
//! u16 len | signature       (1..=MAX_SIGNATURE_BYTES)
//! ```
//!
//! The signature covers [`OFFER_PURPOSE`], a zero byte, then the bytes from
//! the format byte through the public key.
//!
//! Sealed message (`SealedHeader` then the AEAD output):
//!
//! ```text
//! u8  format = 0x53 ('S')
//! u8  message kind          (protocol::wire::Kind byte)
//! u8  len | run id
//! u32 round
//! u64 epoch
//! u8  len | sender name
//! u8  len | recipient name
//! u64 sequence number       (per direction, per attempt, from 0)
//! ... ciphertext, then the 16-byte Poly1305 tag
//! ```
//!
//! The header (every byte before the ciphertext) is the AEAD's associated
//! data; the nonce is four zero bytes and the sequence number.

use protocol::wire::{Kind, RunId};

use super::SealError;
use crate::pki::validate_node_name;

/// The purpose label a key offer's signature is bound to, so that no other
/// signature made with a consortium certificate's key (a TLS handshake's, a
/// future feature's) can be passed off as a key offer.
pub const OFFER_PURPOSE: &[u8] = b"private-training relay-seal v1: X25519 key offer";

/// Largest certificate (DER) a key offer may carry.
pub const MAX_CERT_BYTES: usize = 16 * 1024;

/// Largest signature a key offer may carry (RSA-8192 is 1024 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 1024;

/// Bytes of the Poly1305 tag at the end of every sealed message.
pub const SEAL_TAG_BYTES: usize = 16;

/// Bytes of an X25519 public key.
pub const DH_PUBLIC_BYTES: usize = 32;

const OFFER_FORMAT: u8 = b'O';
const SEALED_FORMAT: u8 = b'S';

/// A cursor over peer bytes: every read checks what is left first, and a
/// length-prefixed field is checked against its own bound before anything is
/// copied, so no read allocates more than the smaller of the two.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, at: 0, what }
    }

    fn bad(&self, reason: String) -> SealError {
        SealError::Malformed {
            what: self.what,
            reason,
        }
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], SealError> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(self.bad(format!(
                "{field}: needs {n} bytes at offset {}, {left} left",
                self.at
            )));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self, field: &str) -> Result<u8, SealError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &str) -> Result<u16, SealError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &str) -> Result<u32, SealError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &str) -> Result<u64, SealError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A field of `len_bytes`-byte announced length, within `1..=max`.
    fn field(&mut self, len_bytes: u8, max: usize, field: &str) -> Result<&'a [u8], SealError> {
        let n = match len_bytes {
            1 => usize::from(self.u8(field)?),
            _ => usize::from(self.u16(field)?),
        };
        if n == 0 || n > max {
            return Err(self.bad(format!("{field}: announced {n} bytes, allowed 1 to {max}")));
        }
        self.take(n, field)
    }

    fn run_id(&mut self) -> Result<RunId, SealError> {
        let raw = self.field(1, 64, "run id")?;
        let text = std::str::from_utf8(raw).map_err(|_| self.bad("run id: not UTF-8".into()))?;
        RunId::new(text).map_err(|e| self.bad(format!("run id: {e}")))
    }

    fn name(&mut self, field: &str) -> Result<String, SealError> {
        let raw = self.field(1, 63, field)?;
        let text = std::str::from_utf8(raw).map_err(|_| self.bad(format!("{field}: not UTF-8")))?;
        validate_node_name(text).map_err(|e| self.bad(format!("{field}: {e}")))?;
        Ok(text.to_owned())
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    fn offset(&self) -> usize {
        self.at
    }

    fn finish(&self) -> Result<(), SealError> {
        let left = self.bytes.len() - self.at;
        if left != 0 {
            return Err(self.bad(format!("{left} trailing bytes")));
        }
        Ok(())
    }
}

fn put_short(out: &mut Vec<u8>, field: &[u8]) {
    // Callers pass run ids (<= 64) and node names (<= 63) only.
    debug_assert!(!field.is_empty() && field.len() <= 64);
    out.push(field.len() as u8);
    out.extend_from_slice(field);
}

fn put_long(out: &mut Vec<u8>, field: &[u8]) {
    // Callers pass certificates and signatures checked against their bounds.
    debug_assert!(!field.is_empty() && field.len() <= usize::from(u16::MAX));
    out.extend_from_slice(&(field.len() as u16).to_be_bytes());
    out.extend_from_slice(field);
}

/// A key offer as parsed from bytes: well-formed, **not yet verified** (its
/// certificate and signature are checked by
/// [`RoundSeal::accept_offer`](super::RoundSeal::accept_offer)). The relay
/// may parse it to route it; a hospital never acts on one unverified.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyOffer {
    pub(crate) run: RunId,
    pub(crate) round: u32,
    pub(crate) epoch: u64,
    pub(crate) from: String,
    pub(crate) dh_public: [u8; DH_PUBLIC_BYTES],
    pub(crate) cert: Vec<u8>,
    pub(crate) scheme: u16,
    pub(crate) signature: Vec<u8>,
}

impl std::fmt::Debug for KeyOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyOffer")
            .field("run", &self.run)
            .field("round", &self.round)
            .field("epoch", &self.epoch)
            .field("from", &self.from)
            .field("cert_bytes", &self.cert.len())
            .field("scheme", &format_args!("{:#06x}", self.scheme))
            .finish_non_exhaustive()
    }
}

impl KeyOffer {
    /// The run the offer claims to be for.
    pub fn run(&self) -> &RunId {
        &self.run
    }

    /// The round the offer claims to be for.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// The round attempt (mask epoch) the offer claims to be for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The hospital the offer claims to come from.
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The bytes the sender's signature covers.
    pub(crate) fn signed_bytes(
        run: &RunId,
        round: u32,
        epoch: u64,
        from: &str,
        dh: &[u8; 32],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(OFFER_PURPOSE.len() + 1 + 1 + 65 + 12 + 64 + 32);
        out.extend_from_slice(OFFER_PURPOSE);
        out.push(0);
        out.push(OFFER_FORMAT);
        put_short(&mut out, run.as_str().as_bytes());
        out.extend_from_slice(&round.to_be_bytes());
        out.extend_from_slice(&epoch.to_be_bytes());
        put_short(&mut out, from.as_bytes());
        out.extend_from_slice(dh);
        out
    }

    /// Encodes the offer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            1 + 65 + 12 + 64 + 32 + 2 + self.cert.len() + 2 + 2 + self.signature.len(),
        );
        out.push(OFFER_FORMAT);
        put_short(&mut out, self.run.as_str().as_bytes());
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        put_short(&mut out, self.from.as_bytes());
        out.extend_from_slice(&self.dh_public);
        put_long(&mut out, &self.cert);
        out.extend_from_slice(&self.scheme.to_be_bytes());
        put_long(&mut out, &self.signature);
        out
    }

    /// Parses an offer; refuses anything malformed, oversized or trailing.
    pub fn parse(bytes: &[u8]) -> Result<KeyOffer, SealError> {
        let mut r = Reader::new(bytes, "key offer");
        let format = r.u8("format")?;
        if format != OFFER_FORMAT {
            return Err(r.bad(format!(
                "format byte {format:#04x}, expected {OFFER_FORMAT:#04x}"
            )));
        }
        let run = r.run_id()?;
        let round = r.u32("round")?;
        let epoch = r.u64("epoch")?;
        let from = r.name("sender")?;
        let mut dh_public = [0u8; DH_PUBLIC_BYTES];
        dh_public.copy_from_slice(r.take(DH_PUBLIC_BYTES, "DH public key")?);
        let cert = r.field(2, MAX_CERT_BYTES, "certificate")?.to_vec();
        let scheme = r.u16("signature scheme")?;
        let signature = r.field(2, MAX_SIGNATURE_BYTES, "signature")?.to_vec();
        r.finish()?;
        Ok(KeyOffer {
            run,
            round,
            epoch,
            from,
            dh_public,
            cert,
            scheme,
            signature,
        })
    }
}

/// What a relay frame's payload is, parsed for routing (nothing verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relayed {
    /// A hospital's key offer.
    Offer(KeyOffer),
    /// A sealed hospital-to-hospital message's header.
    Sealed(SealedHeader),
}

impl Relayed {
    /// Parses a relay payload by its format byte.
    pub fn parse(bytes: &[u8]) -> Result<Relayed, SealError> {
        match bytes.first() {
            Some(&OFFER_FORMAT) => KeyOffer::parse(bytes).map(Relayed::Offer),
            Some(&SEALED_FORMAT) => SealedHeader::parse(bytes).map(|(h, _)| Relayed::Sealed(h)),
            Some(&b) => Err(SealError::Malformed {
                what: "relay payload",
                reason: format!(
                    "format byte {b:#04x}, expected {OFFER_FORMAT:#04x} or {SEALED_FORMAT:#04x}"
                ),
            }),
            None => Err(SealError::Malformed {
                what: "relay payload",
                reason: "empty".into(),
            }),
        }
    }

    /// The run it names.
    pub fn run(&self) -> &RunId {
        match self {
            Relayed::Offer(o) => &o.run,
            Relayed::Sealed(h) => &h.run,
        }
    }

    /// The round it names.
    pub fn round(&self) -> u32 {
        match self {
            Relayed::Offer(o) => o.round,
            Relayed::Sealed(h) => h.round,
        }
    }

    /// The round attempt (mask epoch) it names.
    pub fn epoch(&self) -> u64 {
        match self {
            Relayed::Offer(o) => o.epoch,
            Relayed::Sealed(h) => h.epoch,
        }
    }

    /// The hospital it claims to come from.
    pub fn from(&self) -> &str {
        match self {
            Relayed::Offer(o) => &o.from,
            Relayed::Sealed(h) => &h.from,
        }
    }
}

/// The cleartext routing header of a sealed message: what the relay reads to
/// forward it, and what the AEAD binds as associated data (so none of it can
/// be changed undetected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    /// The protocol message kind inside.
    pub kind: Kind,
    /// The run.
    pub run: RunId,
    /// The round.
    pub round: u32,
    /// The round attempt (mask epoch).
    pub epoch: u64,
    /// The hospital it claims to come from.
    pub from: String,
    /// The hospital it is for.
    pub to: String,
    /// Its sequence number in the `from -> to` direction of this round.
    pub seq: u64,
}

impl SealedHeader {
    /// Bytes of the encoded header.
    pub fn encoded_len(&self) -> usize {
        1 + 1 + 1 + self.run.as_str().len() + 4 + 8 + 1 + self.from.len() + 1 + self.to.len() + 8
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(SEALED_FORMAT);
        out.push(self.kind.byte());
        put_short(out, self.run.as_str().as_bytes());
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        put_short(out, self.from.as_bytes());
        put_short(out, self.to.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
    }

    /// Parses the header of a sealed message (for the relay to route it, and
    /// for the recipient before it opens it). Returns the header and its
    /// length in bytes; the rest of `bytes` is the ciphertext and tag, which
    /// must be at least [`SEAL_TAG_BYTES`] long.
    pub fn parse(bytes: &[u8]) -> Result<(SealedHeader, usize), SealError> {
        let mut r = Reader::new(bytes, "sealed message");
        let format = r.u8("format")?;
        if format != SEALED_FORMAT {
            return Err(r.bad(format!(
                "format byte {format:#04x}, expected {SEALED_FORMAT:#04x}"
            )));
        }
        let k = r.u8("kind")?;
        let kind = Kind::from_byte(k).ok_or_else(|| r.bad(format!("unknown kind byte {k}")))?;
        let run = r.run_id()?;
        let round = r.u32("round")?;
        let epoch = r.u64("epoch")?;
        let from = r.name("sender")?;
        let to = r.name("recipient")?;
        let seq = r.u64("sequence number")?;
        if r.rest().len() < SEAL_TAG_BYTES {
            return Err(r.bad(format!(
                "{} bytes after the header, less than the {SEAL_TAG_BYTES}-byte tag",
                r.rest().len()
            )));
        }
        Ok((
            SealedHeader {
                kind,
                run,
                round,
                epoch,
                from,
                to,
                seq,
            },
            r.offset(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> KeyOffer {
        KeyOffer {
            run: RunId::new("run-1").unwrap(),
            round: 7,
            epoch: 9,
            from: "hospital-1".into(),
            dh_public: [9; 32],
            cert: vec![1; 300],
            scheme: 0x0403,
            signature: vec![2; 71],
        }
    }

    #[test]
    fn offer_round_trips_and_refuses_every_truncation_and_trailing_byte() {
        let o = offer();
        let bytes = o.encode();
        assert_eq!(KeyOffer::parse(&bytes).unwrap(), o);
        for n in 0..bytes.len() {
            assert!(
                matches!(
                    KeyOffer::parse(&bytes[..n]),
                    Err(SealError::Malformed { .. })
                ),
                "prefix {n}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        let e = KeyOffer::parse(&long).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
    }

    #[test]
    fn announced_lengths_are_bounded_before_reading() {
        // A certificate length of 65535 with 3 bytes behind it: refused by its
        // bound, before any copy.
        let mut bytes = offer().encode();
        let cert_len_at = 1 + 1 + 5 + 4 + 8 + 1 + 10 + 32;
        assert_eq!(&bytes[cert_len_at..cert_len_at + 2], &300u16.to_be_bytes());
        bytes[cert_len_at..cert_len_at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        bytes.truncate(cert_len_at + 5);
        let e = KeyOffer::parse(&bytes).unwrap_err();
        assert!(e.to_string().contains("allowed 1 to 16384"), "{e}");
        // Zero-length fields and bad names are refused.
        let mut bytes = offer().encode();
        bytes[1] = 0;
        assert!(KeyOffer::parse(&bytes).is_err());
        let mut o = offer();
        o.from = "Hospital".into();
        let e = KeyOffer::parse(&o.encode()).unwrap_err();
        assert!(e.to_string().contains("sender"), "{e}");
    }

    #[test]
    fn sealed_header_round_trips_and_needs_a_tag() {
        let h = SealedHeader {
            kind: Kind::RingPass,
            run: RunId::new("r").unwrap(),
            round: 3,
            epoch: 4,
            from: "a".into(),
            to: "b".into(),
            seq: 42,
        };
        let mut bytes = Vec::new();
        h.encode_into(&mut bytes);
        assert_eq!(bytes.len(), h.encoded_len());
        let header_len = bytes.len();
        bytes.extend_from_slice(&[0; SEAL_TAG_BYTES]);
        assert_eq!(SealedHeader::parse(&bytes).unwrap(), (h, header_len));
        for n in 0..bytes.len() {
            assert!(SealedHeader::parse(&bytes[..n]).is_err(), "prefix {n}");
        }
        bytes[1] = 200;
        let e = SealedHeader::parse(&bytes).unwrap_err();
        assert!(e.to_string().contains("unknown kind"), "{e}");
    }
}
