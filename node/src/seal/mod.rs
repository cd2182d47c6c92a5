//! End-to-end sealing of the hospital-to-hospital messages that the
//! coordinator relays for hospitals that only dial out (design:
//! `docs/relay.md`).
//!
//! Sans-IO like the protocol core: it takes bytes, the time and a random
//! source, and returns bytes; it never touches a socket or a file.
//!
//! Per round attempt (a round and its mask epoch), each hospital makes a
//! fresh X25519 key pair ([`RoundSeal::new`]) and signs its public key, bound
//! to the run, the round, the epoch, its name and
//! [`OFFER_PURPOSE`], with its consortium certificate's key: the [`KeyOffer`],
//! which travels with the certificate. A peer accepts an offer
//! ([`RoundSeal::accept_offer`]) only when the certificate chains to the
//! consortium CA, is not revoked, names the hospital the offer claims to come
//! from, that hospital is in the peer's own roster, and the signature
//! verifies ([`Trust`]). Both then derive, by HKDF-SHA256 from the X25519
//! secret, one ChaCha20-Poly1305 key per direction, bound to the run, round,
//! epoch, both names and both public keys. Every message ([`RoundSeal::seal`],
//! [`RoundSeal::open`]) binds its header (kind, run, round, epoch, sender,
//! recipient, sequence number) as associated data, and its sequence number as
//! the nonce; a receiver accepts sequence numbers in order only.
//!
//! So the relay can drop or delay a message, but whatever else it does is
//! refused with a [`SealError`] that names the hospital the message claimed
//! to come from ([`SealError::claimed_sender`]).
//!
//! What this module does not own: which messages to send (the `protocol`
//! state machines), the transport frame around the sealed bytes and the
//! relay's routing (`transport`, the coordinator), and the files of the PKI
//! ([`crate::pki`]).
//!
//! Secrets: the X25519 secret and shared secret (x25519-dalek) and the AEAD
//! keys (chacha20poly1305) are wiped on drop, as are the derived key bytes
//! and every opened plaintext ([`Opened`]); the HKDF's internal HMAC state
//! (hkdf 0.12 has no zeroize support) lives on the stack for the duration of
//! one [`RoundSeal::accept_offer`].

mod codec;
mod trust;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use protocol::wire::{Kind, RunId};
use rand::{CryptoRng, RngCore};
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::Sha256;
use x25519_dalek::{PublicKey, ReusableSecret};
use zeroize::Zeroizing;

pub use codec::{
    KeyOffer, Relayed, SealedHeader, DH_PUBLIC_BYTES, MAX_CERT_BYTES, MAX_SIGNATURE_BYTES,
    OFFER_PURPOSE, SEAL_TAG_BYTES,
};
pub use trust::{CertRefusal, Trust};

use crate::pki::NodeIdentity;

/// HKDF salt: the extract step is bound to this protocol and version.
const HKDF_SALT: &[u8] = b"private-training relay-seal v1: hkdf salt";
/// HKDF info label of a direction's AEAD key.
const KEY_LABEL: &[u8] = b"private-training relay-seal v1: direction key";

/// Errors of the seal. Three groups: a relayed message or key offer was
/// refused (the relay altered it, or its sender misbehaved: each names the
/// hospital it claimed to come from), bytes that do not parse, and local
/// misuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    // Refused: tampered in relay, or the claimed sender misbehaved.
    /// A key offer's signature does not verify against the certificate it
    /// carries: its key or fields were altered (substituted DH key).
    #[error(
        "key offer claiming to come from {claimed:?}: its signature does not verify \
         (altered or substituted in relay)"
    )]
    BadSignature {
        /// The hospital the offer claimed to come from.
        claimed: String,
    },
    /// A relayed certificate is not a valid consortium certificate.
    #[error("key offer claiming to come from {claimed:?}: certificate refused: {reason}")]
    CertificateRefused {
        /// The hospital the offer claimed to come from.
        claimed: String,
        /// Why.
        reason: CertRefusal,
    },
    /// A relayed certificate certifies another name than the one claimed.
    #[error("key offer claiming to come from {claimed:?} carries a certificate for {certified:?}")]
    CertificateNameMismatch {
        /// The hospital the offer claimed to come from.
        claimed: String,
        /// The DNS names the certificate carries.
        certified: Vec<String>,
    },
    /// The claimed sender is not another member of the ring of the attempt
    /// under way (relay mode).
    #[error("{claimed:?} is not a member of this attempt's ring")]
    NotInRing {
        /// The name claimed.
        claimed: String,
    },
    /// The claimed sender is not a hospital of this hospital's roster.
    #[error("{claimed:?} is not a hospital of this consortium's roster")]
    NotInRoster {
        /// The name claimed.
        claimed: String,
    },
    /// An offer or message of another run, round or attempt (an authentic
    /// old offer replayed, or a header naming another session).
    #[error(
        "{what} claiming to come from {claimed:?} is for run {got_run} round {got_round} \
         epoch {got_epoch}, not this run {run} round {round} epoch {epoch}"
    )]
    WrongSession {
        /// "key offer" or "sealed message".
        what: &'static str,
        /// The hospital it claimed to come from.
        claimed: String,
        /// The run it names.
        got_run: String,
        /// The round it names.
        got_round: u32,
        /// The attempt it names.
        got_epoch: u64,
        /// This session's run.
        run: String,
        /// This session's round.
        round: u32,
        /// This session's attempt.
        epoch: u64,
    },
    /// A second, different key for the same attempt (not verified: the first
    /// stays whatever the second is): the sender misbehaves, or the relay
    /// forged it.
    #[error("a second, different key offer claiming to come from {claimed:?} for this attempt; keeping the first")]
    ConflictingOffer {
        /// The hospital.
        claimed: String,
    },
    /// A DH public key of small order (no shared secret would result).
    #[error("key offer from {claimed:?} carries a low-order X25519 key")]
    WeakKey {
        /// The hospital.
        claimed: String,
    },
    /// A message or key this hospital made, reflected back to it.
    #[error(
        "{what} claiming to come from this hospital ({claimed:?}) itself: reflected by the relay"
    )]
    Reflected {
        /// "key offer" or "sealed message".
        what: &'static str,
        /// This hospital's name.
        claimed: String,
    },
    /// The AEAD refused the message: ciphertext, tag or header altered, or
    /// sealed under another key.
    #[error(
        "sealed {kind} #{seq} claiming to come from {claimed:?} failed authentication \
         (altered in relay)"
    )]
    Tampered {
        /// The hospital it claimed to come from.
        claimed: String,
        /// Its kind.
        kind: Kind,
        /// Its sequence number.
        seq: u64,
    },
    /// An authentic message already received.
    #[error(
        "sealed {kind} #{seq} from {claimed:?} was already received (replay; next expected \
         #{expected})"
    )]
    Replayed {
        /// The sender.
        claimed: String,
        /// Its kind.
        kind: Kind,
        /// Its sequence number.
        seq: u64,
        /// The next number expected.
        expected: u64,
    },
    /// An authentic message ahead of the next expected one: the relay dropped
    /// or reordered the ones between.
    #[error(
        "sealed {kind} #{seq} from {claimed:?} arrived while #{expected} is expected \
         (dropped or reordered in relay)"
    )]
    OutOfOrder {
        /// The sender.
        claimed: String,
        /// Its kind.
        kind: Kind,
        /// Its sequence number.
        seq: u64,
        /// The next number expected.
        expected: u64,
    },
    /// A message addressed to another hospital (redirected by the relay).
    #[error("sealed {kind} claiming to come from {claimed:?} is addressed to {to:?}, not {me:?}")]
    Misdirected {
        /// The hospital it claimed to come from.
        claimed: String,
        /// Its kind.
        kind: Kind,
        /// The recipient its header names.
        to: String,
        /// This hospital.
        me: String,
    },
    /// A message from a hospital whose key offer was not accepted yet.
    #[error("sealed {kind} claiming to come from {claimed:?} arrived before its key offer")]
    NoKey {
        /// The hospital it claimed to come from.
        claimed: String,
        /// Its kind.
        kind: Kind,
    },
    /// A message larger than its kind's limit.
    #[error("sealed {kind} claiming to come from {claimed:?}: {len} bytes, limit {max}")]
    TooLarge {
        /// The hospital it claimed to come from.
        claimed: String,
        /// Its kind.
        kind: Kind,
        /// Plaintext bytes.
        len: usize,
        /// The kind's limit.
        max: usize,
    },
    /// A sealed message of a kind hospitals never send each other.
    #[error(
        "sealed message claiming to come from {claimed:?} carries a {kind}, not a peer message"
    )]
    NotAPeerKind {
        /// The hospital it claimed to come from.
        claimed: String,
        /// The kind.
        kind: Kind,
    },

    // Unparsable.
    /// Bytes that are not a key offer or sealed message (truncated, a bound
    /// exceeded, a bad field).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// "key offer" or "sealed message".
        what: &'static str,
        /// What is wrong, with the field.
        reason: String,
    },

    // Local misuse.
    /// Sealing to a hospital whose offer was not accepted.
    #[error("no key agreed with {peer:?}: accept its key offer before sealing to it")]
    NoPeerKey {
        /// The intended recipient.
        peer: String,
    },
    /// Sealing a kind that is not a hospital-to-hospital message.
    #[error("{kind} is not a hospital-to-hospital message; only those are sealed")]
    NotSealable {
        /// The kind.
        kind: Kind,
    },
    /// The direction's sequence numbers are exhausted (2^64 messages).
    #[error("sequence numbers to {peer:?} exhausted for this round")]
    SequenceExhausted {
        /// The recipient.
        peer: String,
    },
    /// This node's own identity or trust setup is unusable (key type without
    /// a TLS 1.3 signature scheme, CA unusable).
    #[error("seal setup: {0}")]
    LocalSetup(String),
}

impl SealError {
    /// The hospital a refused offer or message claimed to come from (what the
    /// log names), if the bytes got that far.
    pub fn claimed_sender(&self) -> Option<&str> {
        use SealError::*;
        match self {
            BadSignature { claimed }
            | CertificateRefused { claimed, .. }
            | CertificateNameMismatch { claimed, .. }
            | NotInRoster { claimed }
            | NotInRing { claimed }
            | WrongSession { claimed, .. }
            | ConflictingOffer { claimed }
            | WeakKey { claimed }
            | Reflected { claimed, .. }
            | Tampered { claimed, .. }
            | Replayed { claimed, .. }
            | OutOfOrder { claimed, .. }
            | Misdirected { claimed, .. }
            | NoKey { claimed, .. }
            | TooLarge { claimed, .. }
            | NotAPeerKind { claimed, .. } => Some(claimed),
            Malformed { .. }
            | NoPeerKey { .. }
            | NotSealable { .. }
            | SequenceExhausted { .. }
            | LocalSetup(_) => None,
        }
    }
}

/// An opened message: authentic, from `from`, for this hospital, in order.
pub struct Opened {
    /// The sender.
    pub from: String,
    /// The protocol message kind.
    pub kind: Kind,
    /// Its sequence number.
    pub seq: u64,
    /// The plaintext (wiped on drop: it may hold pair seeds).
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("from", &self.from)
            .field("kind", &self.kind)
            .field("seq", &self.seq)
            .field("plaintext_bytes", &self.plaintext.len())
            .finish()
    }
}

/// One direction-pair of keys with one peer, for one round.
struct Channel {
    peer_public: [u8; DH_PUBLIC_BYTES],
    send: ChaCha20Poly1305,
    send_seq: u64,
    recv: ChaCha20Poly1305,
    recv_seq: u64,
}

/// A hospital's seal for one round of one run: its X25519 key pair, its
/// signed offer, and a channel per peer whose offer it accepted.
///
/// Keys are per round attempt (a round and its mask epoch), not per run: an
/// attempt's keys are dropped (wiped) when the attempt ends, so a later compromise of the process exposes no earlier
/// round, and a hospital that restarted and resumes at the next round
/// boundary needs no key state on disk.
pub struct RoundSeal {
    trust: Arc<Trust>,
    run: RunId,
    round: u32,
    epoch: u64,
    secret: ReusableSecret,
    public: [u8; DH_PUBLIC_BYTES],
    offer: Vec<u8>,
    channels: BTreeMap<String, Channel>,
}

impl fmt::Debug for RoundSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the DH secret nor the AEAD keys appear.
        f.debug_struct("RoundSeal")
            .field("me", &self.trust.me())
            .field("run", &self.run)
            .field("round", &self.round)
            .field("epoch", &self.epoch)
            .field("peers", &self.channels.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RoundSeal {
    /// A fresh key pair for `round` of `run`, its offer signed with
    /// `identity`'s certificate key. `trust` must be `identity`'s.
    pub fn new<R: RngCore + CryptoRng>(
        identity: &NodeIdentity,
        trust: Arc<Trust>,
        run: RunId,
        round: u32,
        epoch: u64,
        rng: &mut R,
    ) -> Result<RoundSeal, SealError> {
        if trust.me() != identity.name() {
            return Err(SealError::LocalSetup(format!(
                "trust is {:?}'s, identity is {:?}'s",
                trust.me(),
                identity.name()
            )));
        }
        let secret = ReusableSecret::random_from_rng(rng);
        let public = PublicKey::from(&secret).to_bytes();
        let key = rustls::crypto::ring::sign::any_supported_type(&identity.key())
            .map_err(|e| SealError::LocalSetup(format!("certificate key unusable: {e}")))?;
        let signer = key.choose_scheme(trust::OFFER_SCHEMES).ok_or_else(|| {
            SealError::LocalSetup(format!(
                "the certificate key ({:?}) has no TLS 1.3 signature scheme",
                key.algorithm()
            ))
        })?;
        let signed = KeyOffer::signed_bytes(&run, round, epoch, identity.name(), &public);
        let signature = signer
            .sign(&signed)
            .map_err(|e| SealError::LocalSetup(format!("signing the key offer: {e}")))?;
        let offer = KeyOffer {
            run: run.clone(),
            round,
            epoch,
            from: identity.name().to_owned(),
            dh_public: public,
            cert: identity.cert().to_vec(),
            scheme: u16::from(signer.scheme()),
            signature,
        }
        .encode();
        Ok(RoundSeal {
            trust,
            run,
            round,
            epoch,
            secret,
            public,
            offer,
            channels: BTreeMap::new(),
        })
    }

    /// This hospital's signed key offer, to send (relayed) to every peer of
    /// the round; the same bytes every time, so resending is harmless.
    pub fn offer(&self) -> &[u8] {
        &self.offer
    }

    /// The run.
    pub fn run(&self) -> &RunId {
        &self.run
    }

    /// The round.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// The round attempt (mask epoch).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether a channel with `peer` is established.
    pub fn has_peer(&self, peer: &str) -> bool {
        self.channels.contains_key(peer)
    }

    /// Verifies a peer's relayed key offer at `now` and derives the channel
    /// with it; returns the peer's name. The same offer again is accepted
    /// without effect. Nothing changes on error.
    pub fn accept_offer(&mut self, bytes: &[u8], now: UnixTime) -> Result<String, SealError> {
        let offer = KeyOffer::parse(bytes)?;
        let claimed = offer.from.clone();
        if claimed == self.trust.me() {
            return Err(SealError::Reflected {
                what: "key offer",
                claimed,
            });
        }
        // The cheap checks first: an offer of another session, or a repeat
        // of (or a rival to) one already accepted, is refused or ignored
        // before its certificate and signature cost anything.
        if offer.run != self.run || offer.round != self.round || offer.epoch != self.epoch {
            return Err(SealError::WrongSession {
                what: "key offer",
                claimed,
                got_run: offer.run.to_string(),
                got_round: offer.round,
                got_epoch: offer.epoch,
                run: self.run.to_string(),
                round: self.round,
                epoch: self.epoch,
            });
        }
        if let Some(c) = self.channels.get(&claimed) {
            if c.peer_public == offer.dh_public {
                return Ok(claimed);
            }
            return Err(SealError::ConflictingOffer { claimed });
        }
        let cert = CertificateDer::from(offer.cert.as_slice());
        self.trust.check_certificate(&claimed, &cert, now)?;
        let signed = KeyOffer::signed_bytes(
            &offer.run,
            offer.round,
            offer.epoch,
            &claimed,
            &offer.dh_public,
        );
        self.trust
            .verify_signature(&claimed, &cert, offer.scheme, &signed, &offer.signature)?;
        let shared = self
            .secret
            .diffie_hellman(&PublicKey::from(offer.dh_public));
        if !shared.was_contributory() {
            return Err(SealError::WeakKey { claimed });
        }
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), shared.as_bytes());
        let me = self.trust.me();
        let direction = |from: &str, to: &str, from_pub: &[u8; 32], to_pub: &[u8; 32]| {
            let mut okm = Zeroizing::new([0u8; 32]);
            let run = self.run.as_str().as_bytes();
            hk.expand_multi_info(
                &[
                    KEY_LABEL,
                    &[run.len() as u8],
                    run,
                    &self.round.to_be_bytes(),
                    &self.epoch.to_be_bytes(),
                    &[from.len() as u8],
                    from.as_bytes(),
                    &[to.len() as u8],
                    to.as_bytes(),
                    from_pub,
                    to_pub,
                ],
                &mut okm[..],
            )
            // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
            .expect("HKDF-SHA256 yields 32 bytes");
            ChaCha20Poly1305::new(Key::from_slice(&okm[..]))
        };
        let send = direction(me, &claimed, &self.public, &offer.dh_public);
        let recv = direction(&claimed, me, &offer.dh_public, &self.public);
        self.channels.insert(
            claimed.clone(),
            Channel {
                peer_public: offer.dh_public,
                send,
                send_seq: 0,
                recv,
                recv_seq: 0,
            },
        );
        Ok(claimed)
    }

    /// Seals `plaintext`, a message of `kind`, for `to`.
    pub fn seal(&mut self, to: &str, kind: Kind, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        if !Kind::HOSPITAL_TO_HOSPITAL.contains(&kind) {
            return Err(SealError::NotSealable { kind });
        }
        let me = self.trust.me().to_owned();
        let channel = self
            .channels
            .get_mut(to)
            .ok_or_else(|| SealError::NoPeerKey {
                peer: to.to_owned(),
            })?;
        let seq = channel.send_seq;
        let next = seq
            .checked_add(1)
            .ok_or_else(|| SealError::SequenceExhausted {
                peer: to.to_owned(),
            })?;
        let header = SealedHeader {
            kind,
            run: self.run.clone(),
            round: self.round,
            epoch: self.epoch,
            from: me,
            to: to.to_owned(),
            seq,
        };
        let header_len = header.encoded_len();
        let mut out = Vec::with_capacity(header_len + plaintext.len() + SEAL_TAG_BYTES);
        header.encode_into(&mut out);
        out.extend_from_slice(plaintext);
        let (aad, body) = out.split_at_mut(header_len);
        let tag = channel
            .send
            .encrypt_in_place_detached(&nonce(seq), aad, body)
            // Only for plaintexts beyond ChaCha20's 256 GiB per nonce.
            .map_err(|_| SealError::LocalSetup("message too long to seal".into()))?;
        out.extend_from_slice(&tag);
        channel.send_seq = next;
        Ok(out)
    }

    /// Opens a sealed message for this hospital. `max_plaintext` gives each
    /// kind's byte limit (the protocol's `Limits::max_bytes` for the sender),
    /// checked before anything is copied. Nothing changes on error.
    pub fn open(
        &mut self,
        sealed: &[u8],
        max_plaintext: impl Fn(Kind) -> usize,
    ) -> Result<Opened, SealError> {
        let (h, header_len) = SealedHeader::parse(sealed)?;
        let me = self.trust.me();
        let claimed = h.from;
        let kind = h.kind;
        if !Kind::HOSPITAL_TO_HOSPITAL.contains(&kind) {
            return Err(SealError::NotAPeerKind { claimed, kind });
        }
        if claimed == me {
            return Err(SealError::Reflected {
                what: "sealed message",
                claimed,
            });
        }
        // The header is checked before it is authenticated, for a precise
        // error; altering it would fail authentication all the same.
        if h.to != me {
            return Err(SealError::Misdirected {
                claimed,
                kind,
                to: h.to,
                me: me.to_owned(),
            });
        }
        if h.run != self.run || h.round != self.round || h.epoch != self.epoch {
            return Err(SealError::WrongSession {
                what: "sealed message",
                claimed,
                got_run: h.run.to_string(),
                got_round: h.round,
                got_epoch: h.epoch,
                run: self.run.to_string(),
                round: self.round,
                epoch: self.epoch,
            });
        }
        let len = sealed.len() - header_len - SEAL_TAG_BYTES;
        let max = max_plaintext(kind);
        if len > max {
            return Err(SealError::TooLarge {
                claimed,
                kind,
                len,
                max,
            });
        }
        if !self.trust.in_roster(&claimed) {
            return Err(SealError::NotInRoster { claimed });
        }
        let Some(channel) = self.channels.get_mut(&claimed) else {
            return Err(SealError::NoKey { claimed, kind });
        };
        let (aad, body) = sealed.split_at(header_len);
        let (ciphertext, tag) = body.split_at(len);
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        channel
            .recv
            .decrypt_in_place_detached(&nonce(h.seq), aad, &mut plaintext, Tag::from_slice(tag))
            .map_err(|_| SealError::Tampered {
                claimed: claimed.clone(),
                kind,
                seq: h.seq,
            })?;
        // Authentic: now the order is the sender's, and a wrong number is
        // the relay's doing.
        let expected = channel.recv_seq;
        if h.seq < expected {
            return Err(SealError::Replayed {
                claimed,
                kind,
                seq: h.seq,
                expected,
            });
        }
        if h.seq > expected {
            return Err(SealError::OutOfOrder {
                claimed,
                kind,
                seq: h.seq,
                expected,
            });
        }
        channel.recv_seq = expected + 1;
        Ok(Opened {
            from: claimed,
            kind,
            seq: h.seq,
            plaintext,
        })
    }
}

/// The AEAD nonce of sequence number `seq`: unique per direction key, since
/// each direction has its own key and counts from 0.
fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::from(n)
}
