//! Size and length limits of incoming messages, per message kind and per
//! sender, derived from the run's configuration.
//!
//! Every frame's header names its message [`Kind`] (see [`crate::wire`]), so
//! the [`FrameDecoder`](crate::wire::FrameDecoder) checks the announced length
//! against *that kind's* limit before it buffers a byte of the payload, and
//! [`decode_payload`](crate::wire::decode_payload) deserializes the concrete
//! struct of that kind straight from the bytes (no intermediate buffering of
//! an internally tagged enum, which costs serde tens of bytes per JSON token).
//!
//! Two kinds of limits hold:
//! - **bytes per kind** ([`Limits::max_bytes`]): the big kinds (`ring_pass`,
//!   `setup` with its history, `report`, `aggregate`, `round_start`, ...) get
//!   what the largest honest message of the run needs, computed from a
//!   [`RunShape`] (key bits, features, roster size, rounds); the small kinds
//!   (`receipt`, `peer_round`, `peer_commit`, `round_ack`, ...) a small fixed
//!   limit; kinds the sender never sends in this direction (a hospital never
//!   sends `setup`, a ring peer never sends `hello`) limit 0, which refuses
//!   them before their payload is read.
//! - **items per vector** ([`ItemLimits`]): gradient values, ciphertexts,
//!   members and history records are counted *while* they are deserialized
//!   and the decode fails at the first element past the bound, so a frame of
//!   `"ciphertexts":["","",...]` allocates at most that many elements, not
//!   eight times its own size.
//!
//! serde has no way to hand context to a `Deserialize` impl, so the item
//! limits of the decode in progress sit in a thread-local for the duration of
//! one [`decode_payload`](crate::wire::decode_payload) call (and are unbounded
//! outside it, e.g. when a checkpoint file is read).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::wire::Kind;

/// What a run looks like as far as message sizes go: the upper bounds a node
/// knows from its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunShape {
    /// Largest Paillier modulus in bits (the run's key where known, else the
    /// largest the paillier crate accepts).
    pub key_bits: usize,
    /// Gradient length: the number of features.
    pub features: usize,
    /// Hospitals in the consortium's roster.
    pub hospitals: usize,
    /// Most rounds of the run (bounds the history replayed in `setup`).
    pub rounds: u32,
}

/// Most elements of each kind of vector inside one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemLimits {
    /// Gradient-sized `f64` vectors (sums, weights).
    pub values: usize,
    /// Ciphertexts of one ring pass.
    pub ciphertexts: usize,
    /// Names or members (rings, member sets, dropped lists, revealed seeds).
    pub members: usize,
    /// Aggregate records of a `setup`'s history.
    pub history: usize,
}

impl ItemLimits {
    /// No bound beyond the message's byte limit.
    pub const UNBOUNDED: ItemLimits = ItemLimits {
        values: usize::MAX,
        ciphertexts: usize::MAX,
        members: usize::MAX,
        history: usize::MAX,
    };
}

/// Limits for the messages of one sender: bytes of JSON per kind, items per vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    bytes: [usize; Kind::COUNT],
    items: ItemLimits,
}

/// Fixed limit of the small kinds (and the fixed part of every big one):
/// envelope header, epochs, hashes, seeds, one reason text.
pub const SMALL_MESSAGE_BYTES: usize = 4096;
/// Room in a relay frame for a key offer's certificate and signature, or a
/// sealed message's routing header and tag (both far smaller).
pub const RELAY_OFFER_BYTES: usize = 20 << 10;
/// The largest relay frame payload when one message may be `max_bytes`: the
/// message sealed (its header and tag, or a key offer, fit the room added).
pub fn relay_frame_max(max_bytes: usize) -> usize {
    max_bytes.saturating_add(RELAY_OFFER_BYTES)
}

/// Room for one node name or address in JSON (quotes, escapes, comma).
const NAME_JSON: usize = 256;
/// Room for one `f64` in JSON (`-1.2345678901234567e-308,`).
const F64_JSON: usize = 26;

fn b64(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

impl Limits {
    /// The same byte limit for every kind and no item bound: tests, the fuzz
    /// target, tools that read foreign frames.
    pub fn uniform(max_bytes: usize) -> Limits {
        Limits {
            bytes: [max_bytes; Kind::COUNT],
            items: ItemLimits::UNBOUNDED,
        }
    }

    /// Every kind at what the largest honest message of a run of `shape` needs.
    pub fn for_run(shape: &RunShape) -> Limits {
        let f = shape.features;
        let h = shape.hospitals;
        let rounds = shape.rounds as usize;
        let small = SMALL_MESSAGE_BYTES;
        // A ciphertext in paillier's compact form: tag, fingerprint, value mod n^2.
        let ct_json = b64(64 + shape.key_bits.div_ceil(4)) + 3;
        let values = f.saturating_mul(F64_JSON);
        let names = h.saturating_mul(NAME_JSON);
        let record = 256usize.saturating_add(values);
        let bytes_of = |k: Kind| -> usize {
            match k {
                // Schema: one name per feature and the target.
                Kind::Hello | Kind::Rejoin => small.saturating_add(f.saturating_mul(NAME_JSON)),
                Kind::Setup => small
                    .saturating_add(b64(64 + shape.key_bits.div_ceil(4)))
                    .saturating_add(rounds.saturating_mul(record)),
                Kind::RoundStart => small.saturating_add(names.saturating_mul(2)),
                // One ciphertext per value is the worst case (packing off).
                Kind::RingPass | Kind::Decrypt => small.saturating_add(f.saturating_mul(ct_json)),
                // One value mod n^2 per ciphertext, and the proof's response
                // (the secret exponent's bits and 384, with Delta's at most
                // 1700 for 256 parties).
                Kind::Partial => small
                    .saturating_add(f.saturating_mul(ct_json))
                    .saturating_add(b64(shape.key_bits.div_ceil(4) + 512)),
                Kind::Unmask => small.saturating_add(names),
                Kind::Reveal => small.saturating_add(h.saturating_mul(NAME_JSON + 64)),
                Kind::Aggregate | Kind::Report => small.saturating_add(record),
                Kind::Abort => small.saturating_add(names.saturating_mul(2)),
                Kind::Stop => small.saturating_add(names),
                // The largest hospital-to-hospital message sealed (its
                // header and tag within the fixed part), or a key offer
                // with its certificate.
                Kind::Relay => small
                    .saturating_add(RELAY_OFFER_BYTES)
                    .saturating_add(f.saturating_mul(ct_json)),
                Kind::PeerRound
                | Kind::Receipt
                | Kind::PeerCommit
                | Kind::RoundAck
                | Kind::Finish
                | Kind::Done => small,
            }
        };
        let mut bytes = [0; Kind::COUNT];
        for k in Kind::ALL {
            bytes[k.index()] = bytes_of(k);
        }
        Limits {
            bytes,
            items: ItemLimits {
                values: f,
                ciphertexts: f,
                members: h,
                history: rounds,
            },
        }
    }

    /// These limits with every kind not in `kinds` refused (limit 0).
    pub fn only(mut self, kinds: &[Kind]) -> Limits {
        for k in Kind::ALL {
            if !kinds.contains(&k) {
                self.bytes[k.index()] = 0;
            }
        }
        self
    }

    /// What a coordinator accepts from a hospital of a run of `shape`.
    pub fn hospital_to_coordinator(shape: &RunShape) -> Limits {
        Limits::for_run(shape).only(&Kind::HOSPITAL_TO_COORDINATOR)
    }

    /// What a hospital accepts from its coordinator.
    pub fn coordinator_to_hospital(shape: &RunShape) -> Limits {
        Limits::for_run(shape).only(&Kind::COORDINATOR_TO_HOSPITAL)
    }

    /// What a hospital accepts from another hospital (its ring peers).
    pub fn hospital_to_hospital(shape: &RunShape) -> Limits {
        Limits::for_run(shape).only(&Kind::HOSPITAL_TO_HOSPITAL)
    }

    /// These limits with no kind above `max_bytes` (the configured cap of one
    /// message), a relay frame above [`relay_frame_max`] of it (a message at
    /// the cap still fits, sealed).
    pub fn capped(mut self, max_bytes: usize) -> Limits {
        for k in Kind::ALL {
            let cap = if k == Kind::Relay {
                relay_frame_max(max_bytes)
            } else {
                max_bytes
            };
            let b = &mut self.bytes[k.index()];
            *b = (*b).min(cap);
        }
        self
    }

    /// Largest JSON payload accepted for `kind` (0: the kind is refused).
    pub fn max_bytes(&self, kind: Kind) -> usize {
        self.bytes[kind.index()]
    }

    /// The largest limit of any kind.
    pub fn largest(&self) -> usize {
        self.bytes.iter().copied().max().unwrap_or(0)
    }

    /// Per-vector element bounds.
    pub fn items(&self) -> ItemLimits {
        self.items
    }
}

/// Limits per sender: those of named peers, else a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLimits {
    default: Limits,
    named: BTreeMap<String, Limits>,
}

impl PeerLimits {
    /// `default` for every peer.
    pub fn new(default: Limits) -> PeerLimits {
        PeerLimits {
            default,
            named: BTreeMap::new(),
        }
    }

    /// `limits` for the peer `name`.
    pub fn with(mut self, name: impl Into<String>, limits: Limits) -> PeerLimits {
        self.named.insert(name.into(), limits);
        self
    }

    /// The limits of `peer`.
    pub fn get(&self, peer: &str) -> &Limits {
        self.named.get(peer).unwrap_or(&self.default)
    }

    /// The largest limit of any kind and peer.
    pub fn largest(&self) -> usize {
        self.named
            .values()
            .map(Limits::largest)
            .fold(self.default.largest(), usize::max)
    }
}

thread_local! {
    static ITEMS: Cell<ItemLimits> = const { Cell::new(ItemLimits::UNBOUNDED) };
}

/// Runs `f` with `items` as the bounds of the vectors it deserializes.
pub(crate) fn with_items<R>(items: ItemLimits, f: impl FnOnce() -> R) -> R {
    struct Restore(ItemLimits);
    impl Drop for Restore {
        fn drop(&mut self) {
            ITEMS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ITEMS.with(|c| c.replace(items)));
    f()
}

fn current() -> ItemLimits {
    ITEMS.with(|c| c.get())
}

struct BoundedVisitor<T> {
    max: usize,
    what: &'static str,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} {}", self.max, self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let hint = seq.size_hint().unwrap_or(0).min(self.max).min(1024);
        let mut out = Vec::with_capacity(hint);
        while let Some(x) = seq.next_element()? {
            if out.len() >= self.max {
                return Err(serde::de::Error::custom(format!(
                    "more than {} {} in one message",
                    self.max, self.what
                )));
            }
            out.push(x);
        }
        Ok(out)
    }
}

struct OptionVisitor<T>(BoundedVisitor<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OptionVisitor<T> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "null or ")?;
        self.0.expecting(f)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self.0).map(Some)
    }
}

fn seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(BoundedVisitor {
        max,
        what,
        _t: PhantomData,
    })
}

fn opt_seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
    what: &'static str,
) -> Result<Option<Vec<T>>, D::Error> {
    d.deserialize_option(OptionVisitor(BoundedVisitor {
        max,
        what,
        _t: PhantomData,
    }))
}

/// `deserialize_with` helpers bounding vectors by the current [`ItemLimits`].
pub(crate) mod bounded {
    use super::*;

    pub(crate) fn values<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        seq(d, current().values, "gradient values")
    }

    pub(crate) fn opt_values<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<f64>>, D::Error> {
        opt_seq(d, current().values, "gradient values")
    }

    pub(crate) fn ciphertexts<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        seq(d, current().ciphertexts, "ciphertexts")
    }

    pub(crate) fn members<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        seq(d, current().members, "members")
    }

    pub(crate) fn opt_members<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Vec<T>>, D::Error> {
        opt_seq(d, current().members, "members")
    }

    pub(crate) fn history<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        seq(d, current().history, "history records")
    }
}
