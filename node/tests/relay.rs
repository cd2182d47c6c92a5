//! Relay mode in memory: three hospitals' [`RelayClient`]s talk through the
//! coordinator's [`RelayForwarder`] and a relay that may tamper. An honest
//! relay delivers every message exactly, in order, from its real sender
//! (messages sent before the recipient's key offer arrived are held and then
//! delivered); a relay that flips a byte, replays a message or swaps two
//! hospitals' DH keys is detected, each refusal naming the hospital the
//! message claimed to come from; the forwarder refuses a hospital that claims
//! to be another.

use std::collections::BTreeMap;
mod common;

use common::{roster, Consortium, A, B, C, ROSTER};
use node::relay::{Incoming, RelayClient, RelayForwarder, RelayRefusal};
use node::seal::SealError;
use protocol::wire::{Kind, RunId};
use protocol::{Limits, PeerLimits};

fn limits() -> PeerLimits {
    PeerLimits::new(Limits::uniform(1 << 20))
}

/// A frame payload of `kind` (kind byte, then the "JSON").
fn payload(kind: Kind, body: &str) -> Vec<u8> {
    let mut p = vec![kind.byte()];
    p.extend_from_slice(body.as_bytes());
    p
}

/// The consortium, its hospitals' relay clients, the coordinator's forwarder,
/// and the relay's queue: (recipient, relay payload).
struct Net {
    _consortium: Consortium,
    clients: BTreeMap<String, RelayClient>,
    forwarder: RelayForwarder,
    queue: Vec<(String, Vec<u8>)>,
    delivered: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    refused: BTreeMap<String, Vec<SealError>>,
}

impl Net {
    fn new() -> Net {
        let consortium = Consortium::new();
        let clients = ROSTER
            .iter()
            .map(|n| {
                let c = RelayClient::new(&consortium.identity(n), roster()).unwrap();
                (n.to_string(), c)
            })
            .collect();
        let forwarder = RelayForwarder::new(roster());
        Net {
            _consortium: consortium,
            clients,
            forwarder,
            queue: Vec::new(),
            delivered: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// `from`'s relay payloads go to the forwarder, which routes them.
    fn sent(&mut self, from: &str, payloads: Vec<Vec<u8>>) {
        for p in payloads {
            for to in self.forwarder.route(from, &p).unwrap() {
                self.queue.push((to, p.clone()));
            }
        }
    }

    fn take(&mut self, who: &str, inc: Incoming) {
        let Incoming {
            send,
            deliver,
            refused,
        } = inc;
        self.sent(who, send);
        for (from, p) in deliver {
            self.delivered
                .entry(who.to_owned())
                .or_default()
                .push((from, p.to_vec()));
        }
        self.refused
            .entry(who.to_owned())
            .or_default()
            .extend(refused);
    }

    /// Every hospital learns the ring of round `round` (its first attempt).
    fn ring(&mut self, round: u32) {
        self.attempt(round, u64::from(round) * 10);
    }

    /// A net whose hospitals hold each other's keys for round 0.
    fn established() -> Net {
        let mut net = Net::new();
        net.ring(0);
        net.flush(honest);
        net
    }

    /// Every hospital learns the ring of attempt `epoch` of round `round`.
    fn attempt(&mut self, round: u32, epoch: u64) {
        self.attempt_with(round, epoch, &ROSTER);
    }

    /// The members of `ring` learn it as attempt `epoch` of round `round`.
    fn attempt_with(&mut self, round: u32, epoch: u64, ring: &[&str]) {
        let run = RunId::new("run-1").unwrap();
        let names: Vec<String> = ring.iter().map(|s| s.to_string()).collect();
        self.forwarder
            .set_attempt(run.clone(), round, epoch, names.clone());
        for n in ring {
            let (offer, refused) = self
                .clients
                .get_mut(*n)
                .unwrap()
                .on_ring(&run, round, epoch, names.clone())
                .unwrap();
            self.take(
                n,
                Incoming {
                    send: vec![offer],
                    refused,
                    ..Incoming::default()
                },
            );
        }
    }

    /// `from` sends `payload` to `to` (sealed, or held).
    fn send(&mut self, from: &str, to: &str, payload: &[u8]) {
        let out = self
            .clients
            .get_mut(from)
            .unwrap()
            .outgoing(to, payload)
            .unwrap();
        if let Some(p) = out {
            self.sent(from, vec![p]);
        }
    }

    /// Delivers the queue, letting `tamper` change (or drop, or add to) each
    /// payload on the way.
    fn flush(&mut self, mut tamper: impl FnMut(&str, Vec<u8>) -> Vec<Vec<u8>>) {
        while !self.queue.is_empty() {
            let batch = std::mem::take(&mut self.queue);
            for (to, p) in batch {
                for p in tamper(&to, p) {
                    let inc = self.clients.get_mut(&to).unwrap().incoming(&p, &limits());
                    self.take(&to, inc);
                }
            }
        }
    }

    fn delivered(&self, who: &str) -> Vec<(String, Vec<u8>)> {
        self.delivered.get(who).cloned().unwrap_or_default()
    }

    fn refused(&self, who: &str) -> &[SealError] {
        self.refused.get(who).map_or(&[], Vec::as_slice)
    }
}

fn honest(_: &str, p: Vec<u8>) -> Vec<Vec<u8>> {
    vec![p]
}

fn is_sealed(p: &[u8]) -> bool {
    p.first() == Some(&b'S')
}

#[test]
fn an_honest_relay_delivers_exactly_in_order_from_the_real_sender() {
    let mut net = Net::new();
    net.ring(0);
    // Sent before any offer was delivered: held, then sealed.
    let first = payload(Kind::PeerRound, r#"{"seed":"a-to-b"}"#);
    let second = payload(Kind::RingPass, r#"{"sum":"a-to-b"}"#);
    net.send(A, B, &first);
    net.send(A, B, &second);
    net.flush(honest);
    net.send(C, B, &payload(Kind::PeerCommit, r#"{"h":"c"}"#));
    net.flush(honest);
    assert_eq!(
        net.delivered(B),
        vec![
            (A.to_string(), first),
            (A.to_string(), second),
            (C.to_string(), payload(Kind::PeerCommit, r#"{"h":"c"}"#)),
        ]
    );
    assert!(net.delivered(A).is_empty() && net.delivered(C).is_empty());
    for n in ROSTER {
        assert!(net.refused(n).is_empty(), "{n}: {:?}", net.refused(n));
    }
    // The same ring again (a retried attempt) keeps the round's keys.
    net.ring(0);
    net.send(A, B, &payload(Kind::PeerRound, "retry"));
    net.flush(honest);
    assert_eq!(net.delivered(B).len(), 4);
    assert!(net.refused(B).is_empty(), "{:?}", net.refused(B));
}

#[test]
fn a_flipped_byte_is_refused_naming_the_claimed_sender_and_the_genuine_message_still_opens() {
    let mut net = Net::established();
    let msg = payload(Kind::RingPass, r#"{"sum":"123"}"#);
    net.send(A, B, &msg);
    net.flush(|_, p| {
        if is_sealed(&p) {
            let mut bad = p.clone();
            let last = bad.len() - 20;
            bad[last] ^= 1;
            vec![bad, p]
        } else {
            vec![p]
        }
    });
    let refused = net.refused(B);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        matches!(&refused[0], SealError::Tampered { claimed, .. } if claimed == A),
        "{:?}",
        refused[0]
    );
    assert_eq!(refused[0].claimed_sender(), Some(A));
    assert_eq!(net.delivered(B), vec![(A.to_string(), msg)]);
}

#[test]
fn a_replayed_message_is_refused_naming_the_claimed_sender() {
    let mut net = Net::established();
    let msg = payload(Kind::PeerCommit, r#"{"h":"x"}"#);
    net.send(A, B, &msg);
    net.flush(|_, p| {
        if is_sealed(&p) {
            vec![p.clone(), p]
        } else {
            vec![p]
        }
    });
    assert_eq!(net.delivered(B), vec![(A.to_string(), msg)]);
    let refused = net.refused(B);
    assert!(
        matches!(refused, [SealError::Replayed { claimed, seq: 0, expected: 1, .. }] if claimed == A),
        "{refused:?}"
    );
}

#[test]
fn swapped_dh_keys_are_refused_and_nothing_is_sealed_to_the_relay() {
    let mut net = Net::new();
    // The relay holds back the offers, swaps the DH keys of A's and C's (the
    // names have the same length, so the keys sit at the same offset), and
    // delivers the forgeries to B.
    net.ring(0);
    let offers: Vec<(String, Vec<u8>)> = std::mem::take(&mut net.queue);
    let of = |who: &str| {
        offers
            .iter()
            .find(|(to, p)| to == B && p.windows(who.len()).any(|w| w == who.as_bytes()))
            .map(|(_, p)| p.clone())
            .unwrap()
    };
    let (mut a, mut c) = (of(A), of(C));
    let at = 1 + 1 + "run-1".len() + 4 + 8 + 1 + A.len();
    let (ka, kc) = (a[at..at + 32].to_vec(), c[at..at + 32].to_vec());
    a[at..at + 32].copy_from_slice(&kc);
    c[at..at + 32].copy_from_slice(&ka);
    for p in [a, c] {
        let inc = net.clients.get_mut(B).unwrap().incoming(&p, &limits());
        net.take(B, inc);
    }
    let refused = net.refused(B);
    assert_eq!(refused.len(), 2, "{refused:?}");
    let claimed: Vec<Option<&str>> = refused.iter().map(SealError::claimed_sender).collect();
    assert_eq!(claimed, vec![Some(A), Some(C)]);
    assert!(refused
        .iter()
        .all(|e| matches!(e, SealError::BadSignature { .. })));
    // B holds its message for A until a valid offer from A arrives: nothing
    // sealed under a key the relay chose ever leaves.
    let before = net.queue.len();
    net.send(B, A, &payload(Kind::PeerRound, "for A"));
    assert_eq!(net.queue.len(), before);
}

#[test]
fn the_forwarder_routes_on_the_header_and_refuses_a_hospital_claiming_to_be_another() {
    let mut net = Net::new();
    net.ring(0);
    // A's offer fanned out to B and C only, once.
    let offers: Vec<(String, Vec<u8>)> = std::mem::take(&mut net.queue);
    let a_offer = offers
        .iter()
        .find(|(_, p)| p.windows(A.len()).any(|w| w == A.as_bytes()))
        .unwrap()
        .1
        .clone();
    let to_of_a: Vec<&str> = offers
        .iter()
        .filter(|(_, p)| *p == a_offer)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(to_of_a, vec![B, C]);
    let e = net.forwarder.route(A, &a_offer).unwrap_err();
    assert!(
        matches!(&e, RelayRefusal::TooMany { peer, .. } if peer == A),
        "{e}"
    );
    // C relays A's offer as if it were its own: refused.
    let e = net.forwarder.route(C, &a_offer).unwrap_err();
    assert!(
        matches!(&e, RelayRefusal::WrongSender { peer, claimed } if peer == C && claimed == A),
        "{e}"
    );
    // Junk is refused, naming the sender.
    let e = net.forwarder.route(B, b"junk").unwrap_err();
    assert!(e.to_string().contains(B), "{e}");
    // A sealed message goes only to the hospital its header names.
    for (to, p) in offers {
        let inc = net.clients.get_mut(&to).unwrap().incoming(&p, &limits());
        net.take(&to, inc);
    }
    net.flush(honest);
    let sealed = net
        .clients
        .get_mut(A)
        .unwrap()
        .outgoing(B, &payload(Kind::PeerRound, "x"))
        .unwrap()
        .unwrap();
    assert_eq!(net.forwarder.route(A, &sealed).unwrap(), vec![B]);
    assert!(matches!(
        net.forwarder.route(B, &sealed).unwrap_err(),
        RelayRefusal::WrongSender { .. }
    ));
    // A hospital cannot use the relay to flood another: past what one
    // attempt needs, nothing more is forwarded.
    let mut forwarded = 1;
    loop {
        let p = net
            .clients
            .get_mut(A)
            .unwrap()
            .outgoing(B, &payload(Kind::PeerRound, "x"))
            .unwrap()
            .unwrap();
        match net.forwarder.route(A, &p) {
            Ok(_) => forwarded += 1,
            Err(e) => {
                assert!(
                    matches!(&e, RelayRefusal::TooMany { peer, .. } if peer == A),
                    "{e}"
                );
                break;
            }
        }
        assert!(forwarded < 100);
    }
    assert_eq!(forwarded, 16);
    // A frame of another attempt is not forwarded.
    net.attempt(0, 1);
    let e = net.forwarder.route(A, &a_offer).unwrap_err();
    assert!(
        matches!(&e, RelayRefusal::NotThisAttempt { epoch: 0, .. }),
        "{e}"
    );
}

/// A hospital outside the attempt's ring can neither get frames forwarded
/// nor, if a coordinator forwards them anyway, reach a member's machine.
#[test]
fn a_hospital_outside_the_ring_is_refused_by_the_relay_and_by_the_members() {
    let mut net = Net::new();
    net.attempt_with(2, 20, &[A, B]);
    net.flush(honest);
    // C, not in this ring, makes an offer of this very attempt.
    let run = RunId::new("run-1").unwrap();
    let (c_offer, _) = net
        .clients
        .get_mut(C)
        .unwrap()
        .on_ring(&run, 2, 20, roster())
        .unwrap();
    let e = net.forwarder.route(C, &c_offer).unwrap_err();
    assert!(
        matches!(&e, RelayRefusal::NotThisAttempt { peer, .. } if peer == C),
        "{e}"
    );
    // A coordinator that forwards it anyway: B refuses it, naming C.
    let inc = net
        .clients
        .get_mut(B)
        .unwrap()
        .incoming(&c_offer, &limits());
    net.take(B, inc);
    assert!(
        matches!(net.refused(B), [SealError::NotInRing { claimed }] if claimed == C),
        "{:?}",
        net.refused(B)
    );
    assert!(net.delivered(B).is_empty());
}

/// A retried attempt (after a restart, say, lost messages of the first) gets
/// new keys and sequence numbers: what the old attempt sent is dropped, and
/// the new attempt's messages open from sequence number 0.
#[test]
fn a_retried_attempt_starts_over_whatever_the_last_one_lost() {
    let mut net = Net::new();
    net.attempt(4, 40);
    net.flush(honest);
    // A's first message to B is lost with a restarted relay.
    net.send(A, B, &payload(Kind::PeerRound, "lost"));
    net.queue.clear();
    net.attempt(4, 41);
    net.flush(honest);
    net.send(A, B, &payload(Kind::PeerRound, "retry"));
    net.flush(honest);
    assert_eq!(
        net.delivered(B),
        vec![(A.to_string(), payload(Kind::PeerRound, "retry"))]
    );
    assert!(net.refused(B).is_empty(), "{:?}", net.refused(B));
}

#[test]
fn a_new_round_gets_new_keys_and_last_rounds_messages_are_dropped() {
    let mut net = Net::established();
    let old = net
        .clients
        .get_mut(A)
        .unwrap()
        .outgoing(B, &payload(Kind::PeerRound, "round 0"))
        .unwrap()
        .unwrap();
    net.ring(1);
    net.flush(honest);
    // Round 0's message arrives late: dropped, neither delivered nor refused.
    let inc = net.clients.get_mut(B).unwrap().incoming(&old, &limits());
    net.take(B, inc);
    assert!(net.delivered(B).is_empty());
    assert!(net.refused(B).is_empty(), "{:?}", net.refused(B));
    net.send(A, B, &payload(Kind::PeerRound, "round 1"));
    net.flush(honest);
    assert_eq!(
        net.delivered(B),
        vec![(A.to_string(), payload(Kind::PeerRound, "round 1"))]
    );
}
