//! Threshold runs in the in-memory harness: the hospitals hold the shares of
//! a t-of-n Paillier key, the coordinator holds none and decrypts each round's
//! agreed sum only by combining `t` members' verified partial decryptions.
//!
//! Attacks played here: a coordinator that asks for a partial decryption of
//! another ciphertext (a single member's contribution), names another sum in
//! its `Unmask`, or runs under a key of its own; a member that answers with a
//! forged partial decryption; members that vanish during decryption (up to
//! `n - t` are survived, more stop the run saying how many are missing).

mod util;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use learning::{Dataset, Mode};
use paillier::threshold::{deal_insecure_for_tests, KeyShare, ThresholdKey};
use protocol::wire::{Body, Envelope};
use protocol::{CoordinatorMachine, Error, ThresholdRun};
use rand::SeedableRng;
use util::*;

type Log = Rc<RefCell<Vec<(String, String, Envelope)>>>;

/// A t-of-n key of 1024 bits (insecure: tests only), dealt once per shape.
fn dealt(n: u32, t: u32) -> &'static (ThresholdKey, Vec<KeyShare>) {
    static K32: OnceLock<(ThresholdKey, Vec<KeyShare>)> = OnceLock::new();
    static K53: OnceLock<(ThresholdKey, Vec<KeyShare>)> = OnceLock::new();
    let cell = match (n, t) {
        (3, 2) => &K32,
        (5, 3) => &K53,
        _ => panic!("no test key of shape {t}-of-{n}"),
    };
    cell.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from(n * 10 + t));
        deal_insecure_for_tests(1024, t, n, &mut rng).expect("deal")
    })
}

fn sites(n: usize) -> Vec<Dataset> {
    (0..n)
        .map(|i| synthetic(30 + 5 * i, 4, 40 + i as u64))
        .collect()
}

/// Every hospital built from now on holds its share (`names[i]` party i + 1).
fn give_shares(sim: &mut Sim, names: &[String], shares: &[KeyShare]) {
    let by_name: BTreeMap<String, Arc<KeyShare>> = names
        .iter()
        .cloned()
        .zip(shares.iter().cloned().map(Arc::new))
        .collect();
    sim.hospital_config = Some(Box::new(move |c| {
        c.key_share = by_name.get(&c.name).cloned();
    }));
}

/// A run of `rounds` global-mode rounds among `n` hospitals holding the
/// shares of a `t`-of-`n` key; the coordinator has the public part only.
fn threshold_sim(n: usize, t: u32, rounds: u32) -> Sim {
    let (key, shares) = dealt(n as u32, t);
    let names: Vec<String> = (0..n).map(hospital_name).collect();
    let config = coordinator_config(n, params(Mode::Global, rounds));
    let run = ThresholdRun::new(key.clone(), names.clone()).expect("parties");
    let now = Instant::now();
    let coord = CoordinatorMachine::new(config, run, now).expect("coordinator");
    let mut sim = Sim::empty(now, Some(coord));
    sim.roster = names.clone();
    give_shares(&mut sim, &names, shares);
    for (i, d) in sites(n).into_iter().enumerate() {
        sim.add_hospital(&hospital_name(i), d, None);
    }
    sim
}

/// Records every message and applies `change` to it (return `false` to drop it).
fn intercept(
    sim: &mut Sim,
    mut change: impl FnMut(&str, &str, &mut Envelope) -> bool + 'static,
) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    sim.tamper = Some(Box::new(move |f, t, env| {
        let keep = change(f, t, env);
        l.borrow_mut()
            .push((f.to_owned(), t.to_owned(), env.clone()));
        keep
    }));
    log
}

/// Runs a threshold run whose every `Unmask` the coordinator sends is changed
/// by `change` (given the recipient; `false` drops it) until the run stops,
/// and checks that nobody revealed and nobody was asked to decrypt.
fn tampered_unmasks_get_nothing(
    n: usize,
    t: u32,
    mut change: impl FnMut(&str, &mut protocol::wire::Unmask) -> bool + 'static,
) -> Sim {
    let mut sim = threshold_sim(n, t, 1);
    let log = intercept(&mut sim, move |f, to, env| match &mut env.body {
        Body::Unmask(u) => {
            assert_eq!(f, COORD);
            change(to, u)
        }
        _ => true,
    });
    sim.run_until(50_000, |s| s.failure().is_some());
    assert_eq!(count(&log, "reveal", None), 0);
    assert_eq!(count(&log, "partial", None), 0);
    sim
}

fn count(log: &Log, kind: &str, to: Option<&str>) -> usize {
    log.borrow()
        .iter()
        .filter(|(_, t, e)| e.body.kind() == kind && to.is_none_or(|to| to == t))
        .count()
}

fn rings(sim: &Sim) -> Vec<Vec<String>> {
    sim.finished()
        .expect("finished")
        .rounds
        .iter()
        .map(|r| r.participants.clone())
        .collect()
}

fn assert_matches_twin(sim: &Sim, rounds: u32) {
    let twin = cleartext_twin(&sim.datasets, Mode::Global, rounds, 0.01, &rings(sim));
    for (name, w) in sim.final_weights() {
        let d = max_abs_diff(&w, twin[&name].as_slice().unwrap());
        assert!(d < 1e-9, "{name}: {d}");
    }
}

#[test]
fn a_threshold_run_matches_the_cleartext_twin_with_t_partial_decryptions_per_round() {
    let mut sim = threshold_sim(3, 2, 3);
    let log = intercept(&mut sim, |_, _, _| true);
    sim.run_to_end();
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    assert_eq!(sim.completed_rounds(), 3);
    assert_matches_twin(&sim, 3);
    // Exactly t members asked and answering per round, the askers rotating.
    assert_eq!(count(&log, "decrypt", None), 2 * 3);
    assert_eq!(count(&log, "partial", Some(COORD)), 2 * 3);
    let asked: std::collections::BTreeSet<String> = log
        .borrow()
        .iter()
        .filter(|(_, _, e)| e.body.kind() == "decrypt")
        .map(|(_, t, _)| t.clone())
        .collect();
    assert_eq!(asked.len(), 3, "every member does its share: {asked:?}");
    // Every unmask names the sum, and the tail vouched for it.
    assert!(log.borrow().iter().all(|(_, _, e)| match &e.body {
        Body::Unmask(u) => u.sum_digest.is_some(),
        _ => true,
    }));
}

#[test]
fn a_member_answers_the_same_request_with_the_same_bytes() {
    let mut sim = threshold_sim(3, 2, 1);
    let log = intercept(&mut sim, |_, _, _| true);
    sim.run_until(100_000, |s| {
        s.coord.as_ref().is_some_and(|c| c.next_round() == 1)
    });
    let (to, decrypt) = log
        .borrow()
        .iter()
        .find(|(_, _, e)| e.body.kind() == "decrypt")
        .map(|(_, t, e)| (t.clone(), e.clone()))
        .expect("a decrypt request");
    let first = log
        .borrow()
        .iter()
        .find(|(f, _, e)| *f == to && e.body.kind() == "partial")
        .map(|(_, _, e)| e.clone())
        .expect("its answer");
    // The coordinator asks again (a lost answer, a restarted driver): the
    // hospital's answer is byte for byte the first.
    let before = log.borrow().len();
    sim.hospitals
        .get_mut(&to)
        .unwrap()
        .handle_message(sim.now, COORD, decrypt)
        .expect("answered");
    let (_, again) = sim
        .hospitals
        .get_mut(&to)
        .unwrap()
        .poll_transmit()
        .expect("sent");
    assert_eq!(again.body, first.body);
    assert_eq!(log.borrow().len(), before);
}

#[test]
fn a_forged_partial_decryption_is_refused_naming_its_sender_and_another_member_answers() {
    let mut sim = threshold_sim(3, 2, 2);
    let log = intercept(&mut sim, |f, _, env| {
        if f == "hospital-2" {
            if let Body::Partial(p) = &mut env.body {
                // One value changed: the batched proof no longer holds.
                let v = &mut p.values[0].0;
                let last = v.len() - 1;
                v[last] ^= 1;
            }
        }
        true
    });
    sim.run_to_end();
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    assert_matches_twin(&sim, 2);
    assert!(count(&log, "partial", Some(COORD)) >= 1);
    let refused: Vec<String> = sim
        .rejected
        .iter()
        .filter(|(to, _)| to == COORD)
        .filter_map(|(_, e)| match e {
            Error::InvalidMessage {
                peer,
                kind: "partial",
                reason,
            } => Some(format!("{peer}: {reason}")),
            _ => None,
        })
        .collect();
    assert!(!refused.is_empty(), "{:?}", sim.rejected);
    assert!(
        refused
            .iter()
            .all(|r| r.starts_with("hospital-2: ") && r.contains("party 2")),
        "{refused:?}"
    );
}

/// Runs until the coordinator's first `decrypt` requests are in flight;
/// returns the members they go to.
fn until_decrypting(sim: &mut Sim) -> Vec<String> {
    sim.run_until(100_000, |s| {
        s.in_flight.iter().any(|p| p.env.body.kind() == "decrypt")
    });
    sim.in_flight
        .iter()
        .filter(|p| p.env.body.kind() == "decrypt")
        .map(|p| p.to.clone())
        .collect()
}

#[test]
fn n_minus_t_members_may_vanish_during_decryption() {
    // 3 of 5: two members go away after every member revealed; the other
    // three decrypt and the round completes.
    let mut sim = threshold_sim(5, 3, 1);
    let asked = until_decrypting(&mut sim);
    assert_eq!(asked.len(), 3, "{asked:?}");
    sim.kill(&asked[0], true);
    sim.kill(&asked[1], false);
    sim.run_until(200_000, |s| {
        s.completed_rounds() == 1 || s.failure().is_some()
    });
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    let summary = sim
        .coord_events
        .iter()
        .find_map(|e| match e {
            protocol::CoordinatorEvent::RoundCompleted(s) => Some(s.clone()),
            _ => None,
        })
        .expect("round 1 completed");
    assert_eq!(summary.participants.len(), 5, "all five contributions");
}

#[test]
fn fewer_than_t_live_members_stop_the_run_saying_how_many_are_missing() {
    let mut sim = threshold_sim(3, 2, 2);
    let log = intercept(&mut sim, |_, _, _| true);
    let asked = until_decrypting(&mut sim);
    let spare = sim
        .roster
        .iter()
        .find(|n| !asked.contains(n))
        .cloned()
        .expect("one not asked");
    // One asked member vanishes silently, the spare visibly: one member is left.
    sim.kill(&asked[0], false);
    sim.kill(&spare, true);
    sim.run_to_end();
    let err = sim.failure().expect("the run stops").to_string();
    assert!(
        matches!(
            sim.failure(),
            Some(Error::TooFewPartials {
                needed: 2,
                missing: 1,
                ..
            })
        ),
        "{err}"
    );
    assert!(
        err.contains("needs 2 partial decryptions") && err.contains("1 is missing"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{spare}: lost the connection")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: no partial decryption", asked[0])),
        "{err}"
    );
    // The coordinator, holding the reveals and at most one partial
    // decryption, broadcast no aggregate: it decrypted nothing.
    assert_eq!(count(&log, "aggregate", None), 0);
    assert!(sim.checkpoints().iter().all(|c| c.history.is_empty()));
}

#[test]
fn members_decrypt_only_the_sum_their_set_agreed_on() {
    // The coordinator keeps the head's running sum (its contribution alone)
    // and asks for a partial decryption of that instead of the round's sum.
    let mut sim = threshold_sim(3, 2, 1);
    let head_pass: Rc<RefCell<Option<protocol::wire::RingPass>>> = Rc::default();
    let hp = head_pass.clone();
    let log = intercept(&mut sim, move |f, t, env| {
        match &mut env.body {
            Body::RingPass(p) if f == "hospital-1" && t == "hospital-2" => {
                *hp.borrow_mut() = Some(p.clone());
            }
            Body::Decrypt(d) if f == COORD => {
                let head = hp.borrow().clone().expect("the head passed first");
                d.ciphertexts = head.ciphertexts;
            }
            _ => {}
        }
        true
    });
    sim.run_until(50_000, |s| s.failure().is_some());
    let refusals: Vec<&Error> = sim
        .rejected
        .iter()
        .filter(|(to, _)| to != COORD)
        .map(|(_, e)| e)
        .filter(|e| {
            matches!(
                e,
                Error::PolicyRefused {
                    kind: "decrypt",
                    ..
                }
            )
        })
        .collect();
    // The two asked refuse; with one member left of the t = 2 needed, the
    // coordinator stops rather than ask it.
    assert_eq!(refusals.len(), 2, "{:?}", sim.rejected);
    assert!(refusals.iter().all(|e| e
        .to_string()
        .contains("not the sum this node's member set agreed on")));
    assert_eq!(
        count(&log, "partial", None),
        0,
        "no partial decryption left any member"
    );
    let err = sim.failure().expect("stopped").to_string();
    assert!(err.contains("cannot be decrypted"), "{err}");
}

#[test]
fn an_unmask_that_names_another_sum_gets_no_reveal() {
    let sim = tampered_unmasks_get_nothing(3, 2, |_, u| {
        u.sum_digest = Some(protocol::wire::Bytes(vec![7; 32]));
        true
    });
    assert!(sim.rejected.iter().any(|(to, e)| to == "hospital-3"
        && e.to_string()
            .contains("not the one of the sum this node (the tail) sent")));
}

#[test]
fn an_unmask_without_a_sum_digest_is_refused_in_a_threshold_run() {
    let sim = tampered_unmasks_get_nothing(3, 2, |_, u| {
        u.sum_digest = None;
        true
    });
    assert!(sim
        .rejected
        .iter()
        .any(|(_, e)| e.to_string().contains("must name the digest of the sum")));
}

#[test]
fn a_hospital_with_a_share_refuses_a_run_under_another_key() {
    // A coordinator with a single key of its own (which it could decrypt
    // with alone) sets up hospitals that hold threshold shares.
    let (_, shares) = dealt(3, 2);
    let names: Vec<String> = (0..3).map(hospital_name).collect();
    let mut sim = Sim::new(coordinator_config(3, params(Mode::Global, 1)), vec![]);
    give_shares(&mut sim, &names, shares);
    let log = intercept(&mut sim, |_, _, _| true);
    for (i, d) in sites(3).into_iter().enumerate() {
        sim.add_hospital(&hospital_name(i), d, None);
    }
    sim.run_until(50_000, |s| s.rejected.len() >= 3 || s.failure().is_some());
    let refused = sim
        .rejected
        .iter()
        .filter(|(_, e)| {
            matches!(e, Error::PolicyRefused { kind: "setup", .. })
                && e.to_string()
                    .contains("is not the consortium's threshold key")
        })
        .count();
    assert_eq!(refused, 3, "{:?}", sim.rejected);
    assert_eq!(count(&log, "ring_pass", None), 0);
    assert_eq!(count(&log, "peer_round", None), 0);
}

#[test]
fn a_threshold_key_must_fit_the_roster_and_the_run() {
    let (key, _) = dealt(3, 2);
    let names: Vec<String> = (0..3).map(hospital_name).collect();
    let now = Instant::now();
    // A party list that is not the key's.
    let e = ThresholdRun::new(key.clone(), names[..2].to_vec()).unwrap_err();
    assert!(e.to_string().contains("3 parties"), "{e}");
    // A roster hospital without a share.
    let other: Vec<String> = vec![
        "hospital-1".into(),
        "hospital-2".into(),
        "hospital-9".into(),
    ];
    let run = ThresholdRun::new(key.clone(), other).unwrap();
    let e = CoordinatorMachine::new(coordinator_config(3, params(Mode::Global, 1)), run, now)
        .unwrap_err();
    assert!(
        e.to_string().contains("\"hospital-3\" holds no share"),
        "{e}"
    );
    // Masks off.
    let mut p = params(Mode::Global, 1);
    p.masks = false;
    let run = ThresholdRun::new(key.clone(), names).unwrap();
    let e = CoordinatorMachine::new(coordinator_config(3, p), run, now).unwrap_err();
    assert!(e.to_string().contains("threshold keys need masks"), "{e}");
}

#[test]
fn a_coordinator_restarted_during_decryption_completes_the_round_with_the_same_set() {
    let (key, _) = dealt(3, 2);
    let names: Vec<String> = (0..3).map(hospital_name).collect();
    let mut sim = threshold_sim(3, 2, 3);
    let log = intercept(&mut sim, |_, _, _| true);
    sim.run_until(100_000, |s| {
        s.coord.as_ref().is_some_and(|c| c.next_round() == 1)
    });
    let asked = until_decrypting(&mut sim);
    assert_eq!(asked.len(), 2);
    // The coordinator dies with round 2's requests in flight and resumes
    // from its last checkpoint (round 1 done).
    let cp = sim.checkpoints().last().cloned().expect("a checkpoint");
    assert_eq!(cp.history.len(), 1);
    sim.crash_coordinator();
    let json = serde_json::to_string(&cp).unwrap();
    let cp: protocol::Checkpoint = serde_json::from_str(&json).unwrap();
    let run = ThresholdRun::new(key.clone(), names.clone()).unwrap();
    let config = coordinator_config(3, params(Mode::Global, 3));
    sim.coord = Some(CoordinatorMachine::resume(config, run, cp, sim.now).unwrap());
    for n in &names {
        sim.connect(n);
    }
    sim.run_to_end();
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    assert_matches_twin(&sim, 3);
    // Round 2 was unmasked for one set only, whatever the restart: every
    // member's reveals of round 2 carry one self-mask seed.
    let reveals: std::collections::BTreeSet<(String, Vec<u8>)> = log
        .borrow()
        .iter()
        .filter(|(_, _, e)| e.round == 1)
        .filter_map(|(f, _, e)| match &e.body {
            Body::Reveal(r) => Some((f.clone(), r.self_seed.0.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(reveals.len(), 3, "one self-mask per member: {reveals:?}");
}

#[test]
fn a_member_restarted_during_decryption_is_replaced() {
    let mut sim = threshold_sim(3, 2, 2);
    let asked = until_decrypting(&mut sim);
    // The asked member's process restarts with the request in flight (the
    // request is lost with it, and its memory of the agreed sum): the round
    // timeout gives up on it and the third member is asked instead.
    sim.restart_hospital(&asked[0]);
    sim.run_to_end();
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    assert_matches_twin(&sim, 2);
}

/// An `Unmask` for another attempt's epoch, naming a sum of the coordinator's
/// choosing: nobody reveals, so nobody is asked to decrypt it.
#[test]
fn an_unmask_for_another_attempt_gets_no_reveal() {
    let sim = tampered_unmasks_get_nothing(3, 2, |_, u| {
        u.epoch += 1000;
        u.sum_digest = Some(protocol::wire::Bytes(vec![9; 32]));
        true
    });
    assert!(sim.rejected.iter().any(|(to, e)| to != COORD
        && e.to_string()
            .contains("only the ring of this node's current attempt")));
}

/// An `Unmask` whose set leaves out the attempt's tail (the member that
/// vouches for the digest), naming a sum of the coordinator's choosing.
#[test]
fn an_unmask_leaving_out_the_tail_gets_no_reveal() {
    tampered_unmasks_get_nothing(5, 3, |to, u| {
        u.members.pop();
        u.sum_digest = Some(protocol::wire::Bytes(vec![9; 32]));
        u.members.iter().any(|m| m == to)
    });
}

/// A member replaced just before the decryption deadline has a full timeout
/// to answer: the deadline blames only members asked a whole timeout ago,
/// so one late loss costs one spare, not two.
#[test]
fn a_member_asked_late_is_not_blamed_at_an_earlier_members_deadline() {
    // 3 of 5: two spares. One asked member is silent; another drops its
    // connection just before the deadline, so a spare is asked then.
    let mut sim = threshold_sim(5, 3, 1);
    let asked = until_decrypting(&mut sim);
    assert_eq!(asked.len(), 3, "{asked:?}");
    sim.kill(&asked[0], false);
    sim.kill(&asked[1], false);
    // The third asked member answers in time.
    sim.run_until(1_000, |s| s.in_flight.is_empty());
    let deadline = sim
        .coord
        .as_ref()
        .unwrap()
        .next_deadline()
        .expect("a deadline");
    sim.now = deadline - std::time::Duration::from_millis(1);
    let now = sim.now;
    sim.coord.as_mut().unwrap().peer_lost(now, &asked[1]);
    sim.collect();
    sim.run_until(200_000, |s| {
        s.completed_rounds() == 1 || s.failure().is_some()
    });
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    let late = sim
        .rejected
        .iter()
        .filter(|(to, e)| to == COORD && e.to_string().contains("not asked"))
        .count();
    assert_eq!(late, 0, "{:?}", sim.rejected);
}

/// An `Abort` from a member while the sum is being decrypted is that
/// member's loss for this decryption only: another member is asked and the
/// round completes with the same set, without a retry.
#[test]
fn an_abort_during_decryption_costs_only_that_members_partial() {
    let mut sim = threshold_sim(3, 2, 1);
    let asked = until_decrypting(&mut sim);
    let who = asked[0].clone();
    // Its Decrypt is lost and it aborts instead.
    sim.in_flight
        .retain(|p| !(p.to == who && p.env.body.kind() == "decrypt"));
    let (run_id, round, epoch) = sim
        .in_flight
        .iter()
        .find_map(|p| match &p.env.body {
            Body::Decrypt(d) => Some((p.env.run_id.clone(), p.env.round, d.epoch)),
            _ => None,
        })
        .expect("another decrypt");
    let abort = protocol::wire::Envelope::new(
        run_id,
        round,
        who.clone(),
        Body::Abort(protocol::wire::Abort {
            epoch,
            reason: "the operator stopped it".into(),
            dropped: vec![],
            committed: None,
            deterministic: false,
        }),
    );
    let before = sim.aborts();
    sim.inject(&who, COORD, abort).expect("taken");
    sim.run_to_end();
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    assert_eq!(sim.aborts(), before, "no retry of the round");
    assert_eq!(rings(&sim)[0].len(), 3, "the same set");
}
