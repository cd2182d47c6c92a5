//! The seal against an adversarial relay: every attack of `docs/relay.md`
//! ("What the relay can try") is run here, and each must be refused with its
//! named error, naming the hospital the message claimed to come from; an
//! honest exchange must round-trip; random tampering (proptest) must never
//! be accepted nor change a channel's state.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use common::{roster, Consortium, A, B, C, ROSTER};
use node::pki::{self, ca, NodeIdentity};
use node::seal::{CertRefusal, KeyOffer, RoundSeal, SealError, SealedHeader, Trust};
use proptest::prelude::*;
use protocol::wire::{Kind, RunId};
use rustls::pki_types::UnixTime;

const NO_LIMIT: fn(Kind) -> usize = |_| 1 << 24;

impl Consortium {
    fn trust(&self, name: &str) -> Arc<Trust> {
        Arc::new(Trust::new(&self.identity(name), roster()).unwrap())
    }

    fn seal(&self, name: &str, run: &str, round: u32) -> RoundSeal {
        seal_for(&self.identity(name), self.trust(name), run, round)
    }

    /// Revokes `name`'s certificate and distributes the new list.
    fn revoke(&self, name: &str) {
        let mut authority = ca::Ca::open(&self.path().join(pki::LOCAL_CA_DIR)).unwrap();
        let serial = authority
            .serial_of(&self.path().join(format!("{name}.pem")))
            .unwrap();
        authority
            .revoke(&serial, ca::RevokeReason::KeyCompromise)
            .unwrap();
        let crl: PathBuf = self.path().join(pki::CRL_FILE);
        std::fs::remove_file(&crl).unwrap();
        std::fs::copy(authority.crl_path(), &crl).unwrap();
    }
}

fn seal_for(id: &NodeIdentity, trust: Arc<Trust>, run: &str, round: u32) -> RoundSeal {
    RoundSeal::new(
        id,
        trust,
        RunId::new(run).unwrap(),
        round,
        // One attempt per round here: the epoch follows the round.
        u64::from(round),
        &mut rand::thread_rng(),
    )
    .unwrap()
}

fn now() -> UnixTime {
    UnixTime::now()
}

/// Two hospitals with an established channel.
fn pair(c: &Consortium, run: &str, round: u32) -> (RoundSeal, RoundSeal) {
    let mut a = c.seal(A, run, round);
    let mut b = c.seal(B, run, round);
    assert_eq!(b.accept_offer(a.offer(), now()).unwrap(), A);
    assert_eq!(a.accept_offer(b.offer(), now()).unwrap(), B);
    (a, b)
}

/// A shared consortium for the property tests (provisioning is the slow part).
fn shared() -> &'static Consortium {
    static C: OnceLock<Consortium> = OnceLock::new();
    C.get_or_init(Consortium::new)
}

/// Offset of the DH public key inside an offer of `run` from `from`.
fn dh_offset(run: &str, from: &str) -> usize {
    1 + 1 + run.len() + 4 + 8 + 1 + from.len()
}

/// Offset of the recipient name inside a sealed message.
fn to_offset(run: &str, from: &str) -> usize {
    1 + 1 + 1 + run.len() + 4 + 8 + 1 + from.len() + 1
}

fn claimed(e: &SealError) -> &str {
    e.claimed_sender()
        .unwrap_or_else(|| panic!("{e} names no sender"))
}

#[test]
fn an_honest_exchange_round_trips_both_ways_in_order() {
    let c = Consortium::new();
    let (mut a, mut b) = pair(&c, "run-1", 0);
    // Resending an offer (a retry) changes nothing.
    assert_eq!(b.accept_offer(a.offer(), now()).unwrap(), A);
    for (i, (kind, len)) in [
        (Kind::PeerRound, 0),
        (Kind::RingPass, 70_000),
        (Kind::PeerCommit, 32),
    ]
    .into_iter()
    .enumerate()
    {
        let msg: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let sealed = a.seal(B, kind, &msg).unwrap();
        assert!(!sealed.windows(16).any(|w| len >= 16 && w == &msg[..16]));
        let opened = b.open(&sealed, NO_LIMIT).unwrap();
        assert_eq!(
            (opened.from.as_str(), opened.kind, opened.seq),
            (A, kind, i as u64)
        );
        assert_eq!(&opened.plaintext[..], &msg[..]);
        let back = b.seal(A, kind, &msg).unwrap();
        assert_eq!(&a.open(&back, NO_LIMIT).unwrap().plaintext[..], &msg[..]);
    }
    // The relay can read the routing header, nothing else.
    let sealed = a.seal(B, Kind::PeerCommit, b"commit").unwrap();
    let (h, _) = SealedHeader::parse(&sealed).unwrap();
    assert_eq!((h.from.as_str(), h.to.as_str(), h.seq), (A, B, 3));
    // Debug output carries no key material.
    let dbg = format!("{a:?}");
    assert!(
        dbg.contains("hospital-1") && !dbg.contains("secret"),
        "{dbg}"
    );
}

#[test]
fn a_substituted_dh_key_fails_the_signature_naming_the_claimed_sender() {
    let c = Consortium::new();
    let a = c.seal(A, "run-1", 0);
    let mallory = c.seal(C, "run-1", 0);
    let mut b = c.seal(B, "run-1", 0);
    // The relay puts another key (here hospital-3's) into hospital-1's offer.
    let mut forged = a.offer().to_vec();
    let at = dh_offset("run-1", A);
    forged[at..at + 32].copy_from_slice(&mallory.offer()[at..at + 32]);
    let e = b.accept_offer(&forged, now()).unwrap_err();
    assert!(
        matches!(&e, SealError::BadSignature { claimed } if claimed == A),
        "{e}"
    );
    assert!(e.to_string().contains(A), "{e}");
    // Or presents hospital-3's whole signed offer as hospital-1's.
    let mut relabelled = mallory.offer().to_vec();
    let name_at = 1 + 1 + 5 + 4 + 8 + 1;
    relabelled[name_at..name_at + A.len()].copy_from_slice(A.as_bytes());
    let e = b.accept_offer(&relabelled, now()).unwrap_err();
    assert!(
        matches!(&e, SealError::CertificateNameMismatch { claimed, certified }
            if claimed == A && certified == &[C.to_string()]),
        "{e}"
    );
    // Or hospital-1's certificate with hospital-3's key and signature.
    let mut spliced = KeyOffer::parse(&relabelled).unwrap().encode();
    let cert_at = dh_offset("run-1", A) + 32;
    let a_offer = a.offer();
    let a_tail = &a_offer[cert_at..];
    let a_cert_len = u16::from_be_bytes([a_tail[0], a_tail[1]]) as usize;
    let m_tail = spliced[cert_at..].to_vec();
    let m_cert_len = u16::from_be_bytes([m_tail[0], m_tail[1]]) as usize;
    spliced.truncate(cert_at);
    spliced.extend_from_slice(&a_tail[..2 + a_cert_len]);
    spliced.extend_from_slice(&m_tail[2 + m_cert_len..]);
    let e = b.accept_offer(&spliced, now()).unwrap_err();
    assert!(
        matches!(&e, SealError::BadSignature { claimed } if claimed == A),
        "{e}"
    );
    // None of it left a channel behind; the genuine offer still works.
    assert!(!b.has_peer(A));
    assert_eq!(b.accept_offer(a.offer(), now()).unwrap(), A);
}

#[test]
fn a_replayed_message_is_refused() {
    let c = Consortium::new();
    let (mut a, mut b) = pair(&c, "run-1", 0);
    let m0 = a.seal(B, Kind::PeerRound, b"seed").unwrap();
    b.open(&m0, NO_LIMIT).unwrap();
    let e = b.open(&m0, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&e, SealError::Replayed { claimed, seq: 0, expected: 1, .. } if claimed == A),
        "{e}"
    );
}

#[test]
fn reordered_messages_are_refused_until_delivered_in_order() {
    let c = Consortium::new();
    let (mut a, mut b) = pair(&c, "run-1", 0);
    let m0 = a.seal(B, Kind::PeerRound, b"first").unwrap();
    let m1 = a.seal(B, Kind::PeerCommit, b"second").unwrap();
    let e = b.open(&m1, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&e, SealError::OutOfOrder { claimed, seq: 1, expected: 0, .. } if claimed == A),
        "{e}"
    );
    // Delay is all the relay achieved: in order, both open.
    assert_eq!(&b.open(&m0, NO_LIMIT).unwrap().plaintext[..], b"first");
    assert_eq!(&b.open(&m1, NO_LIMIT).unwrap().plaintext[..], b"second");
    // A dropped message leaves a gap that stays refused: the round stalls.
    let _dropped = a.seal(B, Kind::PeerRound, b"dropped").unwrap();
    let m3 = a.seal(B, Kind::PeerRound, b"after").unwrap();
    let e = b.open(&m3, NO_LIMIT).unwrap_err();
    assert!(
        matches!(
            e,
            SealError::OutOfOrder {
                seq: 3,
                expected: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_message_redirected_to_another_hospital_is_refused() {
    let c = Consortium::new();
    let (mut a, mut b) = pair(&c, "run-1", 0);
    let mut c3 = c.seal(C, "run-1", 0);
    c3.accept_offer(a.offer(), now()).unwrap();
    a.accept_offer(c3.offer(), now()).unwrap();
    let for_b = a.seal(B, Kind::RingPass, b"running sum").unwrap();
    // As is: the header names hospital-2.
    let e = c3.open(&for_b, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&e, SealError::Misdirected { claimed, to, me, .. }
            if claimed == A && to == B && me == C),
        "{e}"
    );
    // With the header rewritten to hospital-3: sealed under the 1->2 key, bound
    // to the 1->2 header, it fails authentication.
    let mut rewritten = for_b.clone();
    let at = to_offset("run-1", A);
    rewritten[at..at + C.len()].copy_from_slice(C.as_bytes());
    let e = c3.open(&rewritten, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&e, SealError::Tampered { claimed, .. } if claimed == A),
        "{e}"
    );
    // hospital-2 still gets it.
    assert_eq!(
        &b.open(&for_b, NO_LIMIT).unwrap().plaintext[..],
        b"running sum"
    );
}

#[test]
fn every_flipped_bit_is_refused_and_changes_nothing() {
    let c = Consortium::new();
    let (mut a, mut b) = pair(&c, "run-1", 0);
    let msg = a.seal(B, Kind::PeerCommit, b"commit hash").unwrap();
    let (_, header_len) = SealedHeader::parse(&msg).unwrap();
    for byte in 0..msg.len() {
        for bit in 0..8 {
            let mut m = msg.clone();
            m[byte] ^= 1 << bit;
            let e = b
                .open(&m, NO_LIMIT)
                .expect_err("a flipped bit was accepted");
            if byte >= header_len {
                assert!(
                    matches!(&e, SealError::Tampered { claimed, seq: 0, .. } if claimed == A),
                    "byte {byte} bit {bit}: {e}"
                );
            }
        }
    }
    assert_eq!(
        &b.open(&msg, NO_LIMIT).unwrap().plaintext[..],
        b"commit hash"
    );
}

#[test]
fn a_message_or_offer_of_another_round_or_run_is_refused() {
    let c = Consortium::new();
    let (mut a0, _b0) = pair(&c, "run-1", 0);
    let (_a1, mut b1) = pair(&c, "run-1", 1);
    let old = a0.seal(B, Kind::PeerRound, b"round 0").unwrap();
    let e = b1.open(&old, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&e, SealError::WrongSession { claimed, got_round: 0, round: 1, .. }
            if claimed == A),
        "{e}"
    );
    // The round and epoch fields rewritten to round 1's: wrong key and
    // header, not authentic.
    let mut moved = old.clone();
    let at = 1 + 1 + 1 + 5;
    moved[at..at + 4].copy_from_slice(&1u32.to_be_bytes());
    moved[at + 4..at + 12].copy_from_slice(&1u64.to_be_bytes());
    let e = b1.open(&moved, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&e, SealError::Tampered { claimed, .. } if claimed == A),
        "{e}"
    );
    // An authentic offer of round 0 replayed in round 1.
    let mut b1_fresh = c.seal(B, "run-1", 1);
    let e = b1_fresh.accept_offer(a0.offer(), now()).unwrap_err();
    assert!(
        matches!(&e, SealError::WrongSession { what: "key offer", claimed, .. } if claimed == A),
        "{e}"
    );
    // Another run, same round.
    let (mut x, _) = pair(&c, "run-x", 0);
    let (_, mut y) = pair(&c, "run-y", 0);
    let e = y
        .open(&x.seal(B, Kind::PeerRound, b"x").unwrap(), NO_LIMIT)
        .unwrap_err();
    assert!(
        matches!(&e, SealError::WrongSession { got_run, .. } if got_run == "run-x"),
        "{e}"
    );
    let mut y_b = c.seal(B, "run-y", 0);
    let e = y_b.accept_offer(x.offer(), now()).unwrap_err();
    assert!(matches!(e, SealError::WrongSession { .. }), "{e}");
}

#[test]
fn a_revoked_certificate_is_refused() {
    let c = Consortium::new();
    let offender = c.seal(C, "run-1", 0);
    c.revoke(C);
    // hospital-1 with the new revocation list.
    let mut a = c.seal(A, "run-1", 0);
    let e = a.accept_offer(offender.offer(), now()).unwrap_err();
    assert!(
        matches!(&e, SealError::CertificateRefused { claimed, reason: CertRefusal::Revoked }
            if claimed == C),
        "{e}"
    );
    assert!(e.to_string().contains("revoked"), "{e}");
}

#[test]
fn a_certificate_of_another_consortium_or_outside_the_roster_is_refused() {
    let ours = Consortium::new();
    let theirs = Consortium::new();
    let mut a = ours.seal(A, "run-1", 0);
    // A hospital-3 certified by another CA (with its own valid signature).
    let foreign = theirs.seal(C, "run-1", 0);
    let e = a.accept_offer(foreign.offer(), now()).unwrap_err();
    assert!(
        matches!(&e, SealError::CertificateRefused { claimed, reason: CertRefusal::UnknownIssuer }
            if claimed == C),
        "{e}"
    );
    // Our own coordinator, with a valid consortium certificate, is a relay,
    // not a peer.
    let coordinator = ours.seal("coordinator", "run-1", 0);
    let e = a.accept_offer(coordinator.offer(), now()).unwrap_err();
    assert!(
        matches!(&e, SealError::NotInRoster { claimed } if claimed == "coordinator"),
        "{e}"
    );
    // An expired check: at a time past the certificate's validity.
    let b = ours.seal(B, "run-1", 0);
    let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        UnixTime::now().as_secs() + 3 * 365 * 86400,
    ));
    let e = a.accept_offer(b.offer(), later).unwrap_err();
    assert!(
        matches!(&e, SealError::CertificateRefused { claimed, reason: CertRefusal::Expired }
            if claimed == B),
        "{e}"
    );
}

#[test]
fn conflicting_reflected_early_and_oversized_messages_are_refused() {
    let c = Consortium::new();
    let (mut a, mut b) = pair(&c, "run-1", 0);
    // A second key for the same round: the first stays.
    let again = c.seal(A, "run-1", 0);
    let e = b.accept_offer(again.offer(), now()).unwrap_err();
    assert!(
        matches!(&e, SealError::ConflictingOffer { claimed } if claimed == A),
        "{e}"
    );
    // Reflection of a hospital's own offer and messages.
    let e = a
        .accept_offer(a.offer().to_vec().as_slice(), now())
        .unwrap_err();
    assert!(
        matches!(&e, SealError::Reflected { claimed, .. } if claimed == A),
        "{e}"
    );
    // A message before its offer; sealing before the offer.
    let mut c3 = c.seal(C, "run-1", 0);
    c3.accept_offer(a.offer(), now()).unwrap();
    let early = c3.seal(A, Kind::PeerRound, b"early").unwrap();
    let e = a.open(&early, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&e, SealError::NoKey { claimed, .. } if claimed == C),
        "{e}"
    );
    let e = a.seal(C, Kind::PeerRound, b"x").unwrap_err();
    assert!(
        matches!(&e, SealError::NoPeerKey { peer } if peer == C),
        "{e}"
    );
    // Over the kind's limit: refused before it is copied.
    let big = a.seal(B, Kind::PeerRound, &[0; 600]).unwrap();
    let e = b
        .open(&big, |k| if k == Kind::PeerRound { 512 } else { 1 << 20 })
        .unwrap_err();
    assert!(
        matches!(&e, SealError::TooLarge { claimed, len: 600, max: 512, .. } if claimed == A),
        "{e}"
    );
    // Only peer kinds are sealed; a header naming another kind is refused.
    let e = a.seal(B, Kind::Reveal, b"x").unwrap_err();
    assert!(
        matches!(e, SealError::NotSealable { kind: Kind::Reveal }),
        "{e}"
    );
    let mut relabelled = a.seal(B, Kind::PeerRound, b"x").unwrap();
    relabelled[1] = Kind::Reveal.byte();
    let e = b.open(&relabelled, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&e, SealError::NotAPeerKind { claimed, .. } if claimed == A),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_tampering_of_a_sealed_message_is_refused_and_harmless(
        len in 0usize..3000,
        kind in prop::sample::select(Kind::HOSPITAL_TO_HOSPITAL.to_vec()),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let c = shared();
        let (mut a, mut b) = pair(c, "run-p", 5);
        let msg: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let sealed = a.seal(B, kind, &msg).unwrap();
        let mut bad = sealed.clone();
        for (i, mask) in &edits {
            let at = i.index(bad.len());
            bad[at] ^= mask;
        }
        if let Some(i) = cut {
            bad.truncate(i.index(bad.len()));
        }
        bad.extend_from_slice(&extra);
        prop_assume!(bad != sealed);
        prop_assert!(b.open(&bad, NO_LIMIT).is_err());
        // The channel is as it was: the genuine message opens, then the next.
        prop_assert_eq!(&b.open(&sealed, NO_LIMIT).unwrap().plaintext[..], &msg[..]);
        let next = a.seal(B, kind, b"next").unwrap();
        prop_assert_eq!(b.open(&next, NO_LIMIT).unwrap().seq, 1);
    }

    #[test]
    fn random_tampering_of_a_key_offer_is_refused(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..3),
    ) {
        let c = shared();
        let a = c.seal(A, "run-p", 5);
        let mut b = c.seal(B, "run-p", 5);
        let mut bad = a.offer().to_vec();
        for (i, mask) in &edits {
            let at = i.index(bad.len());
            bad[at] ^= mask;
        }
        prop_assume!(bad != a.offer());
        let e = b.accept_offer(&bad, now()).unwrap_err();
        // Past the sender's name, the error names the claimed sender.
        if let Some(name) = e.claimed_sender() {
            prop_assert!(ROSTER.contains(&name) || name.len() <= 63);
        }
        prop_assert!(!b.has_peer(A) || e.claimed_sender() != Some(A));
        prop_assert_eq!(b.accept_offer(a.offer(), now()).unwrap(), A);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let c = shared();
        let mut b = c.seal(B, "run-p", 5);
        prop_assert!(b.open(&bytes, NO_LIMIT).is_err());
        prop_assert!(b.accept_offer(&bytes, now()).is_err());
        let _ = SealedHeader::parse(&bytes);
        let _ = KeyOffer::parse(&bytes);
    }

    #[test]
    fn honest_messages_of_any_size_and_kind_round_trip(
        msgs in prop::collection::vec(
            (prop::sample::select(Kind::HOSPITAL_TO_HOSPITAL.to_vec()),
             prop::collection::vec(any::<u8>(), 0..2000)),
            1..6),
    ) {
        let c = shared();
        let (mut a, mut b) = pair(c, "run-p", 5);
        for (i, (kind, m)) in msgs.iter().enumerate() {
            let opened = b.open(&a.seal(B, *kind, m).unwrap(), NO_LIMIT).unwrap();
            prop_assert_eq!((opened.kind, opened.seq), (*kind, i as u64));
            prop_assert_eq!(&opened.plaintext[..], &m[..]);
        }
    }
}

#[test]
fn errors_name_the_claimed_sender() {
    // The claimed_sender accessor drives the log line; make sure helpers agree.
    let e = SealError::Tampered {
        claimed: A.into(),
        kind: Kind::RingPass,
        seq: 4,
    };
    assert_eq!(claimed(&e), A);
    assert!(e.to_string().contains("hospital-1") && e.to_string().contains("ring_pass"));
}
