//! Relay mode: hospital-to-hospital messages travel through the coordinator,
//! sealed end to end ([`crate::seal`]), so a hospital needs one outbound
//! connection and no listening socket.
//!
//! - [`RelayClient`] (a hospital): makes the round's [`RoundSeal`] when the
//!   machine announces a round's ring, sends its signed key offer, seals what
//!   the machine sends to a ring peer (holding it until that peer's offer is
//!   accepted), and opens what the coordinator relays before the machine
//!   sees it. A relayed message that does not open is refused, and the
//!   refusal names the hospital it claimed to come from.
//! - [`RelayForwarder`] (the coordinator): routes a relay frame on its
//!   cleartext header alone, after checking that it claims to come from the
//!   authenticated peer that sent it; a key offer fans out to the ring.
//!
//! What this module does not own: the protocol's rules (the state machines
//! are the same in both modes; the plaintext of a sealed message is the JSON
//! of the message the machine sent), the cryptography (in [`crate::seal`]),
//! and the links (the [`crate::transport::Hub`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use protocol::wire::{Kind, RunId};
use protocol::PeerLimits;
use rustls::pki_types::UnixTime;
use zeroize::Zeroizing;

use crate::pki::NodeIdentity;
use crate::seal::{Relayed, RoundSeal, SealError, Trust};

/// A relayed message opened for the machine: its sender, and its frame
/// payload (kind byte and JSON; wiped on drop, it may hold pair seeds).
pub type Delivery = (String, Zeroizing<Vec<u8>>);

/// Most relay payloads a hospital holds for a round it has not reached yet.
const MAX_EARLY: usize = 64;
/// Most bytes of such payloads.
const MAX_EARLY_BYTES: usize = 32 << 20;
/// Most messages a hospital holds for one peer whose offer has not arrived.
const MAX_HELD_PER_PEER: usize = 64;

/// Why the coordinator refused to forward a relay frame (the sender
/// misbehaved or the frame is malformed; nothing is forwarded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayRefusal {
    /// The payload does not parse.
    #[error("relay frame from {peer:?}: {source}")]
    Malformed {
        /// The authenticated sender.
        peer: String,
        /// What is wrong.
        source: Box<SealError>,
    },
    /// The payload claims another sender than the authenticated one.
    #[error("relay frame from {peer:?} claims to come from {claimed:?}")]
    WrongSender {
        /// The authenticated sender.
        peer: String,
        /// The sender it names.
        claimed: String,
    },
    /// A sealed message for a node that is not another member of the ring
    /// under way.
    #[error("relay frame from {peer:?} is for {to:?}, not another member of the ring under way")]
    UnknownRecipient {
        /// The authenticated sender.
        peer: String,
        /// The recipient it names.
        to: String,
    },
    /// The sender is not a member of the ring under way, or the frame names
    /// another run, round or attempt.
    #[error(
        "relay frame from {peer:?} is for run {run} round {round} epoch {epoch}, not the \
         attempt under way with {peer:?} in its ring"
    )]
    NotThisAttempt {
        /// The authenticated sender.
        peer: String,
        /// The run it names.
        run: String,
        /// The round it names.
        round: u32,
        /// The attempt it names.
        epoch: u64,
    },
    /// More frames from one sender in one attempt than the protocol sends.
    #[error("relay frame from {peer:?}: {what} beyond what one attempt needs; dropped")]
    TooMany {
        /// The authenticated sender.
        peer: String,
        /// "a second key offer" or "more sealed messages to <peer>".
        what: String,
    },
}

/// Sealed messages one hospital sends one peer in one attempt: a ring
/// confirmation, a running sum, a commit hash, each possibly re-sent when the
/// coordinator asks again; anything beyond this is not forwarded.
const MAX_SEALED_PER_PAIR: u32 = 16;

/// The attempt the coordinator relays for.
#[derive(Debug)]
struct Attempt {
    run: RunId,
    round: u32,
    epoch: u64,
    ring: BTreeSet<String>,
    offered: BTreeSet<String>,
    sealed: BTreeMap<(String, String), u32>,
}

/// The coordinator's side: where a relay frame goes. It forwards only
/// within the attempt under way, between members of its ring, one key offer
/// per member and at most [`MAX_SEALED_PER_PAIR`] sealed messages per pair, so
/// a hospital cannot use it to flood the others.
#[derive(Debug)]
pub struct RelayForwarder {
    roster: BTreeSet<String>,
    attempt: Option<Attempt>,
}

impl RelayForwarder {
    /// A forwarder among the hospitals of `roster`.
    pub fn new(roster: impl IntoIterator<Item = String>) -> RelayForwarder {
        RelayForwarder {
            roster: roster.into_iter().collect(),
            attempt: None,
        }
    }

    /// The attempt under way: `epoch` of `round` of `run`, with `ring` (key
    /// offers fan out to it; frames of any other attempt are refused).
    pub fn set_attempt(&mut self, run: RunId, round: u32, epoch: u64, ring: Vec<String>) {
        let ring = ring
            .into_iter()
            .filter(|n| self.roster.contains(n))
            .collect();
        self.attempt = Some(Attempt {
            run,
            round,
            epoch,
            ring,
            offered: BTreeSet::new(),
            sealed: BTreeMap::new(),
        });
    }

    /// The recipients of `payload`, a relay frame's payload from the
    /// authenticated `peer`: a sealed message's named recipient, or a key
    /// offer's ring peers. Only the cleartext header is read.
    pub fn route(&mut self, peer: &str, payload: &[u8]) -> Result<Vec<String>, RelayRefusal> {
        let parsed = Relayed::parse(payload).map_err(|source| RelayRefusal::Malformed {
            peer: peer.to_owned(),
            source: Box::new(source),
        })?;
        if parsed.from() != peer {
            return Err(RelayRefusal::WrongSender {
                peer: peer.to_owned(),
                claimed: parsed.from().to_owned(),
            });
        }
        let not_this = || RelayRefusal::NotThisAttempt {
            peer: peer.to_owned(),
            run: parsed.run().to_string(),
            round: parsed.round(),
            epoch: parsed.epoch(),
        };
        let Some(a) = self.attempt.as_mut() else {
            return Err(not_this());
        };
        if *parsed.run() != a.run
            || parsed.round() != a.round
            || parsed.epoch() != a.epoch
            || !a.ring.contains(peer)
        {
            return Err(not_this());
        }
        match parsed {
            Relayed::Offer(_) => {
                if !a.offered.insert(peer.to_owned()) {
                    return Err(RelayRefusal::TooMany {
                        peer: peer.to_owned(),
                        what: "a second key offer".into(),
                    });
                }
                Ok(a.ring
                    .iter()
                    .filter(|n| n.as_str() != peer)
                    .cloned()
                    .collect())
            }
            Relayed::Sealed(h) => {
                if h.to == peer || !a.ring.contains(&h.to) {
                    return Err(RelayRefusal::UnknownRecipient {
                        peer: peer.to_owned(),
                        to: h.to,
                    });
                }
                let n = a.sealed.entry((peer.to_owned(), h.to.clone())).or_insert(0);
                if *n >= MAX_SEALED_PER_PAIR {
                    return Err(RelayRefusal::TooMany {
                        peer: peer.to_owned(),
                        what: format!("more sealed messages to {:?}", h.to),
                    });
                }
                *n += 1;
                Ok(vec![h.to])
            }
        }
    }
}

/// What a relay payload from the coordinator produced at a hospital.
#[derive(Default)]
pub struct Incoming {
    /// Relay payloads to send the coordinator (messages that were waiting for
    /// the offer that just arrived).
    pub send: Vec<Vec<u8>>,
    /// Opened messages for the machine: sender, and the frame payload (kind
    /// byte and JSON) to decode under the sender's limits.
    pub deliver: Vec<Delivery>,
    /// Refused payloads, each naming the hospital it claimed to come from.
    pub refused: Vec<SealError>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("send", &self.send.len())
            .field(
                "deliver",
                &self.deliver.iter().map(|d| &d.0).collect::<Vec<_>>(),
            )
            .field("refused", &self.refused)
            .finish()
    }
}

/// A message held for a peer whose offer has not arrived: its kind and JSON.
type Held = (Kind, Zeroizing<Vec<u8>>);

/// A hospital's side of relay mode.
pub struct RelayClient {
    identity: NodeIdentity,
    trust: Arc<Trust>,
    seal: Option<RoundSeal>,
    /// The other members of the attempt's ring: the only senders accepted.
    ring: BTreeSet<String>,
    /// Messages for peers whose offer has not arrived yet: kind and JSON.
    held: BTreeMap<String, Vec<Held>>,
    /// Key offers of an attempt this hospital has not reached yet, with
    /// their claimed senders.
    early: VecDeque<(String, Vec<u8>)>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("seal", &self.seal)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .field("early", &self.early.len())
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// Relay mode for `identity` among the hospitals of `roster` (the
    /// hospital's own config's).
    pub fn new(
        identity: &NodeIdentity,
        roster: impl IntoIterator<Item = String>,
    ) -> Result<RelayClient, SealError> {
        let trust = Arc::new(Trust::new(identity, roster)?);
        Ok(RelayClient {
            identity: identity.clone(),
            trust,
            seal: None,
            ring: BTreeSet::new(),
            held: BTreeMap::new(),
            early: VecDeque::new(),
        })
    }

    /// The coordinator set this hospital up (again), after a restart of either
    /// side: nothing held for the attempt in flight is sent any more (the
    /// next attempt has its own keys).
    pub fn reset(&mut self) {
        self.seal = None;
        self.held.clear();
        self.early.clear();
    }

    /// The machine announced the ring of attempt `epoch` of `round` of `run`.
    /// A new attempt gets a new key pair (the last attempt's keys, and what
    /// was held for it, are dropped: its messages may have been lost with a
    /// restarted peer or coordinator, and sequence numbers start over), and
    /// offers of this attempt that arrived early are taken. Returns this
    /// hospital's offer, to send the coordinator (the same bytes for the same
    /// attempt, a harmless repeat), and the early offers refused.
    pub fn on_ring(
        &mut self,
        run: &RunId,
        round: u32,
        epoch: u64,
        ring: impl IntoIterator<Item = String>,
    ) -> Result<(Vec<u8>, Vec<SealError>), SealError> {
        let current = self
            .seal
            .as_ref()
            .is_some_and(|s| s.run() == run && s.round() == round && s.epoch() == epoch);
        let mut refused = Vec::new();
        if !current {
            self.seal = None;
            self.held.clear();
            let seal = RoundSeal::new(
                &self.identity,
                self.trust.clone(),
                run.clone(),
                round,
                epoch,
                &mut rand::rngs::OsRng,
            )?;
            self.seal = Some(seal);
            let me = self.trust.me().to_owned();
            self.ring = ring.into_iter().filter(|n| *n != me).collect();
            // Nothing is held for a new attempt, so accepting an early offer
            // sends nothing and opens nothing: only refusals come out.
            let early: Vec<(String, Vec<u8>)> = self.early.drain(..).collect();
            for (_, p) in early {
                refused.extend(self.receive(&p, None).refused);
            }
        }
        let offer = self.seal.as_ref().expect("made above").offer().to_vec();
        Ok((offer, refused))
    }

    /// Seals `payload` (a frame payload: kind byte and JSON) for ring peer
    /// `to`: the relay payload to send the coordinator, or `None` when it is
    /// held until `to`'s offer arrives.
    pub fn outgoing(&mut self, to: &str, payload: &[u8]) -> Result<Option<Vec<u8>>, SealError> {
        let Some((&byte, json)) = payload.split_first() else {
            return Err(SealError::LocalSetup("empty frame payload".into()));
        };
        let kind = Kind::from_byte(byte)
            .ok_or_else(|| SealError::LocalSetup(format!("unknown kind byte {byte}")))?;
        match &mut self.seal {
            Some(seal) if seal.has_peer(to) => seal.seal(to, kind, json).map(Some),
            _ => {
                let held = self.held.entry(to.to_owned()).or_default();
                if held.len() >= MAX_HELD_PER_PEER {
                    held.remove(0);
                }
                held.push((kind, Zeroizing::new(json.to_vec())));
                Ok(None)
            }
        }
    }

    /// A relay payload from the coordinator; sealed messages are opened
    /// under their claimed sender's `limits`.
    pub fn incoming(&mut self, payload: &[u8], limits: &PeerLimits) -> Incoming {
        self.receive(payload, Some(limits))
    }

    /// [`incoming`](Self::incoming); without `limits` (early offers) a sealed
    /// message is dropped.
    fn receive(&mut self, payload: &[u8], limits: Option<&PeerLimits>) -> Incoming {
        let mut out = Incoming::default();
        let parsed = match Relayed::parse(payload) {
            Ok(p) => p,
            Err(e) => {
                out.refused.push(e);
                return out;
            }
        };
        // Epochs grow with every attempt, across restarts of the coordinator.
        let ahead = self
            .seal
            .as_ref()
            .is_none_or(|s| parsed.run() != s.run() || parsed.epoch() > s.epoch());
        if ahead {
            // An attempt (or run) this hospital has not reached yet.
            self.hold_early(parsed, payload);
            return out;
        }
        let seal = self.seal.as_mut().expect("not ahead of a missing seal");
        if parsed.epoch() < seal.epoch() {
            tracing::debug!(
                claimed = parsed.from(),
                "relayed payload of a past attempt dropped"
            );
            return out;
        }
        if !self.ring.contains(parsed.from()) {
            out.refused.push(SealError::NotInRing {
                claimed: parsed.from().to_owned(),
            });
            return out;
        }
        match parsed {
            Relayed::Offer(_) => match seal.accept_offer(payload, UnixTime::now()) {
                Ok(peer) => {
                    for (kind, json) in self.held.remove(&peer).unwrap_or_default() {
                        match seal.seal(&peer, kind, &json) {
                            Ok(p) => out.send.push(p),
                            Err(e) => out.refused.push(e),
                        }
                    }
                }
                Err(e) => out.refused.push(e),
            },
            Relayed::Sealed(h) => {
                let Some(limits) = limits else {
                    return out;
                };
                let sender_limits = limits.get(&h.from);
                match seal.open(payload, |k| sender_limits.max_bytes(k)) {
                    Ok(o) => {
                        let mut p = Zeroizing::new(Vec::with_capacity(1 + o.plaintext.len()));
                        p.push(o.kind.byte());
                        p.extend_from_slice(&o.plaintext);
                        out.deliver.push((o.from, p));
                    }
                    Err(e) => out.refused.push(e),
                }
            }
        }
        out
    }

    /// Holds a key offer of an attempt this hospital has not reached; a
    /// sealed message of such an attempt cannot be for this hospital's keys
    /// (they do not exist yet), so it is dropped. One offer per claimed
    /// sender (the latest).
    fn hold_early(&mut self, parsed: Relayed, payload: &[u8]) {
        let Relayed::Offer(o) = parsed else {
            return;
        };
        self.early.retain(|(from, _)| from != o.from());
        self.early
            .push_back((o.from().to_owned(), payload.to_vec()));
        let mut bytes: usize = self.early.iter().map(|(_, p)| p.len()).sum();
        while self.early.len() > MAX_EARLY || bytes > MAX_EARLY_BYTES {
            match self.early.pop_front() {
                Some((_, p)) => bytes -= p.len(),
                None => break,
            }
        }
    }
}
