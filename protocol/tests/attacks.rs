//! The threat model's attacks, run against the real state machines in the
//! in-memory harness. Each test plays an adversary of the issue that named it
//! (a curious or malicious coordinator, a coordinator colluding with
//! hospitals, a hospital that lies) and tries to recover a hospital's gradient
//! or to steer the run; it passes only if the attack fails.
//!
//! - A: the coordinator alone proposes rings or runs outside the hospitals'
//!   policy (itself in the ring, too small a ring, a stranger, masks off).
//! - B: the coordinator is restarted (by accident or from an old checkpoint on
//!   purpose) to collect a second aggregate of a round with another member set.
//! - C: a hospital crashes right after forwarding; the coordinator and the
//!   members after it try to unmask the partial sum it forwarded.
//! - F: blame rests on receipts, not on what a member says of itself; a member
//!   cannot hold the run hostage with aborts or reconnects.

mod util;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use learning::{Dataset, Mode};
use num_bigint::BigUint;
use paillier::Ciphertext;
use protocol::masks::{MaskSet, Seed, SEED_BYTES};
use protocol::wire::{
    Abort, Body, Envelope, Hello, Member, Receipt, ReceiptStage, RoundStart, RunParams, Setup,
};
use protocol::{CoordinatorEvent, Error};
use util::*;

/// Every message the harness carried, as (from, to, envelope).
type Log = Rc<RefCell<Vec<(String, String, Envelope)>>>;

/// Records every message sent to or by one of `parties` (what a coalition of
/// them sees) and delivers it unchanged.
fn observe(sim: &mut Sim, parties: &[&str]) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    let parties: Vec<String> = parties.iter().map(|s| s.to_string()).collect();
    sim.tamper = Some(Box::new(move |f, t, env| {
        if parties.iter().any(|p| p == f || p == t) {
            l.borrow_mut()
                .push((f.to_owned(), t.to_owned(), env.clone()));
        }
        true
    }));
    log
}

fn sites(n: usize) -> Vec<Dataset> {
    (0..n)
        .map(|i| synthetic(30 + 5 * i, 4, 40 + i as u64))
        .collect()
}

fn member(name: &str) -> Member {
    Member {
        name: name.to_owned(),
        address: "127.0.0.1:7999".to_owned(),
    }
}

/// An epoch no honest coordinator of the harness uses.
const EVIL_EPOCH: u64 = 0xdead_beef_0000_0001;

/// Whether `from` sent seeds, a running sum or unmasking material in the
/// messages logged from index `since` on.
fn sent_contribution(log: &Log, from: &str, since: usize) -> bool {
    log.borrow()[since..].iter().any(|(f, _, env)| {
        f == from
            && matches!(
                env.body,
                Body::PeerRound(_) | Body::RingPass(_) | Body::Reveal(_)
            )
    })
}

// ---------------------------------------------------------------- A

#[test]
fn a_rings_outside_the_hospitals_policy_are_refused_before_anything_leaves() {
    let mut sim = Sim::new(coordinator_config(3, params(Mode::Seed, 4)), sites(3));
    let log = observe(&mut sim, &["hospital-1"]);
    sim.run_until(100_000, |s| s.completed_rounds() == 1);
    let run = sim.coord.as_ref().unwrap().run_id().clone();
    let round = 1;
    let cases: [(&[&str], &str); 5] = [
        // The coordinator puts itself in the ring: hospital-1's pass would go
        // to it, and with its seed it would unmask hospital-1 alone.
        (&["hospital-1", COORD], "coordinator"),
        // Two hospitals: each learns the other's gradient from the aggregate.
        (&["hospital-1", "hospital-2"], "at least 3"),
        // A stranger (a party the coordinator controls) makes up the numbers.
        (&["hospital-1", "hospital-2", "mallory"], "mallory"),
        // The ring must follow the roster, so every member sees the same order.
        (&["hospital-2", "hospital-1", "hospital-3"], "order"),
        // Names repeated to reach the floor.
        (&["hospital-1", "hospital-2", "hospital-2"], "hospital-2"),
    ];
    for (ring, why) in cases {
        let since = log.borrow().len();
        let start = Body::RoundStart(RoundStart {
            epoch: EVIL_EPOCH,
            ring: ring.iter().map(|n| member(n)).collect(),
            n_total_rows: 100,
        });
        let err = sim
            .inject(
                COORD,
                "hospital-1",
                Envelope::new(run.clone(), round, COORD, start),
            )
            .expect_err("a ring outside the policy must be refused");
        assert!(
            matches!(err, Error::PolicyRefused { .. } | Error::UnknownPeer { .. }),
            "{ring:?}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(why) || msg.contains("roster"),
            "{ring:?}: the refusal should say what was wrong: {msg}"
        );
        assert!(
            !sent_contribution(&log, "hospital-1", since),
            "{ring:?}: hospital-1 sent seeds or its sum for a refused ring"
        );
    }
    // The refusals left the honest run intact.
    sim.run_to_end();
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    assert_eq!(sim.final_weights().len(), 3);
}

#[test]
fn a_the_coordinator_cannot_switch_masks_off_or_leave_the_hospitals_bounds() {
    let mut sim = Sim::new(coordinator_config(3, params(Mode::Seed, 4)), sites(3));
    let log = observe(&mut sim, &["hospital-1"]);
    sim.run_until(100_000, |s| s.completed_rounds() == 1);
    let setup = setup_sent_to(&log, "hospital-1");
    let run = sim.coord.as_ref().unwrap().run_id().clone();
    let variants: [(ParamChange, &str); 3] = [
        (|p| p.masks = false, "mask"),
        (|p| p.rounds = 1_000_000, "rounds"),
        (|p| p.eta = 5_000.0, "eta"),
    ];
    for (change, why) in variants {
        let mut evil = setup.clone();
        change(&mut evil.params);
        let err = sim
            .inject(
                COORD,
                "hospital-1",
                Envelope::new(run.clone(), 1, COORD, Body::Setup(evil)),
            )
            .expect_err("a Setup outside the policy must be refused");
        assert!(matches!(err, Error::PolicyRefused { .. }), "{why}: {err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    // Masks stayed on: every pass hospital-1 sent afterwards is still masked,
    // and the run ends as the honest one does.
    sim.run_to_end();
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    assert_eq!(sim.final_weights().len(), 3);
}

/// A change to a run's parameters.
type ParamChange = fn(&mut RunParams);

// ---------------------------------------------------------------- B

/// Every aggregate each hospital received, by (hospital, round).
fn aggregates(log: &Log) -> BTreeMap<(String, u32), Vec<protocol::wire::AggregateRecord>> {
    let mut out: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for (_, to, env) in log.borrow().iter() {
        if let Body::Aggregate(a) = &env.body {
            out.entry((to.clone(), a.record.round))
                .or_default()
                .push(a.record.clone());
        }
    }
    out
}

#[test]
fn b_a_coordinator_crash_after_the_broadcast_resends_the_same_aggregate() {
    // The coordinator crashes right after round 3's aggregate reached
    // hospital-1 and is resumed while hospital-4 stays away. Before the fix the
    // round was redone with three members and hospital-1 got a second round-3
    // aggregate: the difference of the two is hospital-4's gradient.
    let config = coordinator_config(4, params(Mode::Seed, 6));
    let mut sim = Sim::new(config.clone(), sites(4));
    let log = observe(
        &mut sim,
        &[
            COORD,
            "hospital-1",
            "hospital-2",
            "hospital-3",
            "hospital-4",
        ],
    );
    let target = 2; // round 3, 0-based
    sim.run_until(200_000, |s| {
        let got = log.borrow().iter().any(|(_, t, env)| {
            t == "hospital-1" && matches!(&env.body, Body::Aggregate(a) if a.record.round == target)
        });
        got && !s
            .in_flight
            .iter()
            .any(|p| p.to == "hospital-1" && matches!(p.env.body, Body::Aggregate(_)))
    });
    sim.crash_coordinator();
    sim.kill("hospital-4", false);
    let checkpoint = sim.checkpoints().last().cloned().expect("a checkpoint");
    assert!(
        checkpoint.next_round > target,
        "the aggregate went out before it was durable (checkpoint at round {})",
        checkpoint.next_round
    );
    sim.resume_coordinator(config, &checkpoint);
    sim.run_until(200_000, |s| s.coord.as_ref().unwrap().is_done());
    for ((h, round), recs) in aggregates(&log) {
        assert!(
            recs.windows(2).all(|w| w[0] == w[1]),
            "{h} received {} different aggregates of round {}",
            recs.len(),
            round + 1
        );
    }
}

#[test]
fn b_resuming_from_an_old_checkpoint_cannot_collect_a_round_again() {
    // On purpose: the operator restarts the coordinator from the checkpoint
    // before round 3 while blocking hospital-4, hoping to collect round 3
    // again from three members and subtract.
    let config = coordinator_config(4, params(Mode::Seed, 6));
    let mut sim = Sim::new(config.clone(), sites(4));
    let log = observe(
        &mut sim,
        &[
            COORD,
            "hospital-1",
            "hospital-2",
            "hospital-3",
            "hospital-4",
        ],
    );
    sim.run_until(200_000, |s| s.completed_rounds() == 3);
    let old = sim
        .checkpoints()
        .into_iter()
        .find(|c| c.next_round == 2)
        .expect("the checkpoint before round 3");
    sim.crash_coordinator();
    sim.kill("hospital-4", false);
    let before = log.borrow().len();
    sim.resume_coordinator(config, &old);
    sim.run_until(200_000, |s| s.coord.as_ref().unwrap().is_done());
    // Nothing of an old round left any hospital again.
    for (from, _, env) in log.borrow()[before..].iter() {
        let contribution = matches!(
            env.body,
            Body::RingPass(_) | Body::PeerRound(_) | Body::Reveal(_)
        );
        assert!(
            !(contribution && env.round <= 2),
            "{from} sent a {} of round {} again",
            env.body.kind(),
            env.round + 1
        );
    }
    for ((h, round), recs) in aggregates(&log) {
        assert!(
            recs.windows(2).all(|w| w[0] == w[1]),
            "{h} received different aggregates of round {}",
            round + 1
        );
    }
    // The hospitals said why they refused.
    let refused = sim
        .rejected
        .iter()
        .filter(|(_, e)| e.to_string().contains("old checkpoint"))
        .count();
    assert!(refused >= 3, "{:?}", sim.rejected);
}

// ------------------------------------------- one member set per model state

#[test]
fn b_a_second_member_set_for_a_committed_round_gets_nothing() {
    // The coordinator asked the four members of round 2 to unmask and got
    // hospital-1's reveal. It now asks hospital-1 to unmask the same
    // contribution for a three-member set, hoping for the difference of two
    // aggregates (hospital-4's gradient). hospital-1 refuses and says which set
    // it is committed to; asked for the committed set again, it re-sends the
    // byte-identical reveal; the commitment survives a restart.
    let mut sim = Sim::new(coordinator_config(4, params(Mode::Seed, 4)), sites(4));
    let log = observe(&mut sim, &[COORD, "hospital-1"]);
    let round = 1;
    let revealed = |log: &Log| -> Vec<Envelope> {
        log.borrow()
            .iter()
            .filter(|(f, _, e)| f == "hospital-1" && e.round == round)
            .filter(|(_, _, e)| matches!(e.body, Body::Reveal(_)))
            .map(|(_, _, e)| e.clone())
            .collect()
    };
    sim.run_until(200_000, |_| !revealed(&log).is_empty());
    let (epoch, members) = log
        .borrow()
        .iter()
        .find_map(|(_, t, e)| match &e.body {
            Body::Unmask(u) if t == "hospital-1" && e.round == round => {
                Some((u.epoch, u.members.clone()))
            }
            _ => None,
        })
        .expect("hospital-1 was asked to unmask");
    assert_eq!(members.len(), 4);
    let run = sim.coord.as_ref().unwrap().run_id().clone();
    let unmask = |set: &[&str]| {
        Envelope::new(
            run.clone(),
            round,
            COORD,
            Body::Unmask(protocol::wire::Unmask {
                epoch,
                members: set.iter().map(|s| s.to_string()).collect(),
                sum_digest: None,
            }),
        )
    };
    let since = log.borrow().len();
    let err = sim
        .inject(
            COORD,
            "hospital-1",
            unmask(&["hospital-1", "hospital-2", "hospital-3"]),
        )
        .expect_err("a second set must be refused");
    assert!(matches!(err, Error::PolicyRefused { .. }), "{err}");
    assert!(err.to_string().contains("committed"), "{err}");
    assert!(!sent_contribution(&log, "hospital-1", since));
    // The refusal tells the coordinator the committed set.
    let told = log.borrow()[since..].iter().any(|(f, _, e)| {
        f == "hospital-1"
            && matches!(&e.body, Body::Abort(a) if a.committed.as_ref() == Some(&members))
    });
    assert!(told, "the refusal names the committed set");
    // Asked again for the committed set: the same bytes as before.
    let names: Vec<&str> = members.iter().map(String::as_str).collect();
    sim.inject(COORD, "hospital-1", unmask(&names)).unwrap();
    let reveals = revealed(&log);
    assert!(reveals.len() >= 2);
    let frame =
        |e: &Envelope| protocol::encode_frame(e, protocol::DEFAULT_MAX_MESSAGE_BYTES).unwrap();
    assert_eq!(frame(&reveals[0]), frame(reveals.last().unwrap()));
    // The commitment was persisted before the reveal left, and a restarted
    // hospital-1 still holds it.
    let persisted = &sim.persisted["hospital-1"];
    assert!(
        persisted.commitments.values().any(|c| c.members == members),
        "{persisted:?}"
    );
    sim.restart_hospital("hospital-1");
    sim.run_to_end();
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    for ((h, r), recs) in aggregates(&log) {
        assert!(recs.windows(2).all(|w| w[0] == w[1]), "{h} round {r}");
    }
}

#[test]
fn b_a_new_run_from_the_same_start_cannot_unmask_another_set() {
    // Commitments are keyed by model state, not by run: a coordinator that
    // starts a second run from the same weights with hospital-4 left out,
    // hoping for round 1 of three members beside round 1 of four, is refused.
    let mut first = Sim::new(coordinator_config(4, params(Mode::Seed, 2)), sites(4));
    first.run_to_end();
    assert!(first.failure().is_none());
    let mut config = coordinator_config(4, params(Mode::Seed, 2));
    config.run_id = protocol::RunId::new("second-run").unwrap();
    config.join_timeout = std::time::Duration::from_secs(1);
    let mut second = Sim::new(config, sites(3));
    let log = observe(
        &mut second,
        &[COORD, "hospital-1", "hospital-2", "hospital-3"],
    );
    for name in ["hospital-1", "hospital-2", "hospital-3"] {
        second
            .persisted
            .insert(name.to_owned(), first.persisted[name].clone());
        second.restart_hospital(name);
    }
    second.run_until(200_000, |s| s.coord.as_ref().unwrap().is_done());
    let reveals = log
        .borrow()
        .iter()
        .filter(|(_, _, e)| e.round == 0 && matches!(e.body, Body::Reveal(_)))
        .count();
    assert_eq!(reveals, 0, "unmasking material of round 1 left again");
    let err = second
        .failure()
        .expect("the second run cannot complete round 1");
    assert!(err.to_string().contains("hospital-4"), "{err}");
}

/// The seeds hospitals revealed in round 1 of a logged run.
fn revealed_seeds(log: &Log) -> Vec<Vec<u8>> {
    log.borrow()
        .iter()
        .filter(|(_, to, e)| to == COORD && e.round == 0)
        .filter_map(|(_, _, e)| match &e.body {
            Body::Reveal(r) => Some(
                std::iter::once(r.self_seed.0.clone())
                    .chain(r.pair_seeds.iter().map(|p| p.seed.0.clone()))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn b_a_second_run_with_another_model_at_the_same_weights_reveals_nothing_of_the_first() {
    // Run A trains linear regression from zeros; run B, started by the same
    // coordinator on the same hospitals, trains logistic regression from the
    // same zeros with hospital-4 left out. B's contributions are another
    // function of the data, so their commitment does not block B; but no seed
    // revealed in B may be one of A's, or the coordinator could strip masks
    // from A's contributions with them.
    let binary: Vec<Dataset> = sites(4)
        .into_iter()
        .map(|d| {
            let y = d.y().mapv(|v| f64::from(u8::from(v > 150.0)));
            Dataset::new(
                d.feature_names().to_vec(),
                d.target_name().to_owned(),
                d.x().clone(),
                y,
            )
            .unwrap()
        })
        .collect();
    let mut first = Sim::new(
        coordinator_config(4, params(Mode::Global, 1)),
        binary.clone(),
    );
    let first_log = observe(&mut first, &[COORD]);
    first.run_to_end();
    assert!(first.failure().is_none(), "{:?}", first.failure());
    let mut p = params(Mode::Global, 1);
    p.model = learning::ModelKind::Logistic;
    let mut config = coordinator_config(4, p);
    config.run_id = protocol::RunId::new("second-run").unwrap();
    config.join_timeout = std::time::Duration::from_secs(1);
    let mut second = Sim::new(config, binary[..3].to_vec());
    let second_log = observe(&mut second, &[COORD]);
    for name in ["hospital-1", "hospital-2", "hospital-3"] {
        second
            .persisted
            .insert(name.to_owned(), first.persisted[name].clone());
        second.restart_hospital(name);
    }
    second.run_to_end();
    assert!(second.failure().is_none(), "{:?}", second.failure());
    let (a, b) = (revealed_seeds(&first_log), revealed_seeds(&second_log));
    // Every member revealed its self seed in each run (B unmasked its round).
    assert!(a.len() >= 4 && b.len() >= 3, "{} {}", a.len(), b.len());
    for seed in &b {
        assert!(
            !a.contains(seed),
            "a seed of the first run was revealed again"
        );
    }
}

#[test]
fn a_members_given_different_rings_contribute_nothing() {
    // The coordinator tells hospital-1 the ring is 1-2-3 and hospital-2 that
    // it is 1-2-4, so that hospital-2 would pass hospital-1's masked sum on to
    // a member hospital-1 never agreed to. The ring hash in the seed agreement
    // exposes the split before any sum leaves.
    let mut sim = Sim::new(coordinator_config(4, params(Mode::Seed, 3)), sites(4));
    sim.run_until(100_000, |s| s.completed_rounds() == 1);
    let log = observe(&mut sim, &["hospital-1", "hospital-2"]);
    // Drop the honest coordinator's traffic so only the forged starts count.
    sim.dead.insert(COORD.to_owned());
    let run = sim.coord.as_ref().unwrap().run_id().clone();
    let round = 1;
    let start = |ring: &[&str]| {
        Envelope::new(
            run.clone(),
            round,
            COORD,
            Body::RoundStart(RoundStart {
                epoch: EVIL_EPOCH,
                ring: ring.iter().map(|n| member(n)).collect(),
                n_total_rows: 100,
            }),
        )
    };
    let since = log.borrow().len();
    let _ = sim.inject(
        COORD,
        "hospital-1",
        start(&["hospital-1", "hospital-2", "hospital-3"]),
    );
    let _ = sim.inject(
        COORD,
        "hospital-2",
        start(&["hospital-1", "hospital-2", "hospital-4"]),
    );
    sim.dead.remove(COORD);
    sim.run_until(10_000, |s| {
        s.in_flight.iter().all(|p| p.to == COORD || p.from == COORD)
    });
    let passes = log.borrow()[since..]
        .iter()
        .filter(|(f, _, e)| (f == "hospital-1" || f == "hospital-2") && is_ring_pass(e))
        .count();
    assert_eq!(
        passes, 0,
        "a running sum left for a ring its members disagree on"
    );
    let refused = sim.rejected.iter().any(|(_, e)| {
        matches!(
            e,
            Error::PolicyRefused {
                kind: "peer_round",
                ..
            }
        )
    });
    assert!(refused, "{:?}", sim.rejected);
}

// ---------------------------------------------------------------- C

/// The plaintexts of a ring pass, decrypted with the coordinator's key.
fn decrypt_pass(env: &Envelope) -> Vec<BigUint> {
    let sk = test_key();
    let Body::RingPass(p) = &env.body else {
        panic!("not a ring pass")
    };
    p.ciphertexts
        .iter()
        .map(|b| {
            let c = Ciphertext::from_bytes(sk.public_key(), &b.0).expect("valid ciphertext");
            sk.decrypt_raw(&c).expect("decrypts")
        })
        .collect()
}

fn seed(bytes: &[u8]) -> Seed {
    let arr: [u8; SEED_BYTES] = bytes.try_into().expect("32-byte seed");
    zeroize::Zeroizing::new(arr)
}

/// Whether every plaintext is an encoding (a small value or a small negative
/// one mod n) rather than a uniform mask value.
fn all_small(values: &[BigUint], n: &BigUint) -> bool {
    values.iter().all(|v| {
        let d = std::cmp::min(v.clone(), n - v);
        d.bits() < 256
    })
}

#[test]
fn c_a_crash_after_forwarding_leaves_the_partial_sum_masked() {
    // Ring of 5. hospital-3 passes its running sum to hospital-4 and crashes;
    // the round is retried without it at the same model state. The coordinator
    // colludes with hospitals 4 and 5: it sees everything they see. Before the
    // fix, decrypting the first attempt's partial sum (g1+g2+g3) and
    // subtracting the retry's aggregate gave g3.
    let mut p = params(Mode::Global, 3);
    p.pack = false; // one value per plaintext: "decodes" is then visible
    let mut sim = Sim::new(coordinator_config(5, p), sites(5));
    let log = observe(&mut sim, &[COORD, "hospital-4", "hospital-5"]);
    let round = 1;
    let passed = |log: &Log| {
        log.borrow().iter().any(|(f, t, env)| {
            f == "hospital-3" && t == "hospital-4" && env.round == round && is_ring_pass(env)
        })
    };
    sim.run_until(200_000, |s| {
        passed(&log)
            && !s
                .in_flight
                .iter()
                .any(|p| p.from == "hospital-3" && is_ring_pass(&p.env))
    });
    sim.kill("hospital-3", true);
    sim.run_until(200_000, |s| s.completed_rounds() > round as usize);
    let summary = sim
        .coord_events
        .iter()
        .find_map(|e| match e {
            CoordinatorEvent::RoundCompleted(r) if r.round == round => Some(r.clone()),
            _ => None,
        })
        .expect("the round completed");
    assert_eq!(
        summary.participants,
        ["hospital-1", "hospital-2", "hospital-4", "hospital-5"]
    );

    // The coalition's knowledge.
    let log = log.borrow();
    let n = test_key().public_key().n().clone();
    let mut pair: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let mut self_seeds: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (from, to, env) in log.iter().filter(|(_, _, e)| e.round == round) {
        match &env.body {
            Body::PeerRound(m) if !m.seed.0.is_empty() => {
                pair.insert((from.clone(), to.clone()), m.seed.0.clone());
            }
            Body::Reveal(r) => {
                self_seeds.insert(from.clone(), r.self_seed.0.clone());
                for s in &r.pair_seeds {
                    pair.insert((from.clone(), s.peer.clone()), s.seed.0.clone());
                }
            }
            _ => {}
        }
    }
    let known_masks = |contributors: &[&str]| -> Vec<MaskSet> {
        contributors
            .iter()
            .map(|c| {
                let seeds = pair
                    .iter()
                    .filter(|((a, b), _)| {
                        a == c && !contributors.contains(&b.as_str())
                            || b == c && !contributors.contains(&a.as_str())
                    })
                    .map(|((a, b), s)| {
                        let other = if a == c { b } else { a };
                        (other.clone(), seed(s))
                    })
                    .collect();
                MaskSet::new(*c, round, self_seeds.get(*c).map(|s| seed(s)), seeds)
            })
            .collect()
    };
    let passes = |from: &str| -> Vec<&Envelope> {
        log.iter()
            .filter(|(f, t, e)| f == from && t == "hospital-4" && e.round == round)
            .filter(|(_, _, e)| is_ring_pass(e))
            .map(|(_, _, e)| e)
            .collect()
    };

    // Control: the same pipeline on the retry's partial sum (hospitals 1 and 2,
    // both unmasked as survivors) yields an encoding. The attack's tools work.
    let retry = passes("hospital-2")
        .last()
        .copied()
        .expect("the retry's pass");
    let mut control = decrypt_pass(retry);
    for m in known_masks(&["hospital-1", "hospital-2"]) {
        m.remove(&mut control, &n);
    }
    assert!(
        all_small(&control, &n),
        "the control decodes (g1+g2 is the aggregate minus g4, g5 anyway)"
    );

    // The attack: hospital-3's forwarded partial sum with everything the
    // coalition knows removed. hospital-3's self-mask was never revealed, so
    // every value is still uniform mod n.
    let first = passes("hospital-3")[0];
    let mut partial = decrypt_pass(first);
    for m in known_masks(&["hospital-1", "hospital-2", "hospital-3"]) {
        m.remove(&mut partial, &n);
    }
    assert!(!self_seeds.contains_key("hospital-3"));
    let small = partial
        .iter()
        .filter(|v| std::cmp::min((*v).clone(), &n - *v).bits() < 256)
        .count();
    assert_eq!(
        small,
        0,
        "{small} of {} values of g1+g2+g3 came out unmasked",
        partial.len()
    );
}

// ---------------------------------------------------------------- F

#[test]
fn f_a_member_that_withholds_its_pass_is_blamed_not_its_successor() {
    // hospital-2 receives the sum and never passes it on. Before the fix it
    // reported "forwarded" and honest hospital-3 was dropped.
    let mut sim = Sim::new(coordinator_config(4, params(Mode::Seed, 3)), sites(4));
    sim.tamper = Some(Box::new(|f, _t, env| {
        !(f == "hospital-2" && env.round == 1 && is_ring_pass(env))
    }));
    sim.run_until(200_000, |s| s.coord.as_ref().unwrap().is_done());
    assert_eq!(sim.dropped(), ["hospital-2"], "{:?}", sim.coord_events);
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn f_a_receipt_in_another_members_name_is_refused() {
    let mut sim = Sim::new(coordinator_config(4, params(Mode::Seed, 3)), sites(4));
    sim.run_until(100_000, |s| s.completed_rounds() == 1);
    let run = sim.coord.as_ref().unwrap().run_id().clone();
    let receipt = Body::Receipt(Receipt {
        epoch: 1,
        stage: ReceiptStage::SumReceived,
    });
    let err = sim
        .inject(
            "hospital-2",
            COORD,
            Envelope::new(run, 1, "hospital-3", receipt),
        )
        .unwrap_err();
    assert!(matches!(err, Error::SenderMismatch { .. }), "{err}");
}

#[test]
fn f_floods_of_aborts_and_reconnects_drop_the_flooder_and_the_run_goes_on() {
    for flood in ["abort", "hello"] {
        let mut sim = Sim::new(coordinator_config(4, params(Mode::Seed, 4)), sites(4));
        sim.run_until(100_000, |s| s.completed_rounds() == 1);
        let run = sim.coord.as_ref().unwrap().run_id().clone();
        let data = &sim.datasets["hospital-2"];
        let hello = Body::Hello(Hello {
            name: "hospital-2".into(),
            schema: data.schema().clone(),
            rows: data.n_rows() as u64,
            address: None,
            completed_rounds: Some(1),
            schema_hash: None,
        });
        for _ in 0..20 {
            // The flooder aims at the attempt under way.
            let epoch = sim
                .coord_events
                .iter()
                .rev()
                .find_map(|e| match e {
                    CoordinatorEvent::RoundStarted { epoch, .. } => Some(*epoch),
                    _ => None,
                })
                .expect("a round started");
            let body = match flood {
                "abort" => Body::Abort(Abort {
                    epoch,
                    reason: "flood".into(),
                    dropped: vec![],
                    committed: None,
                    deterministic: false,
                }),
                _ => hello.clone(),
            };
            let round = sim.completed_rounds() as u32;
            let env = Envelope::new(run.clone(), round, "hospital-2", body);
            let _ = sim.inject("hospital-2", COORD, env);
            for _ in 0..5 {
                sim.step();
            }
        }
        sim.tamper = None;
        sim.run_until(200_000, |s| s.coord.as_ref().unwrap().is_done());
        assert!(sim.failure().is_none(), "{flood}: {:?}", sim.failure());
        let dropped = sim.dropped();
        assert!(
            dropped.iter().all(|d| d == "hospital-2") && !dropped.is_empty(),
            "{flood}: {dropped:?}"
        );
        assert!(sim.aborts() <= 4, "{flood}: {} aborts", sim.aborts());
    }
}

/// A hospital takes part only in runs whose key is within its own policy's
/// `max_key_bits` (which also sizes what it accepts from peers before the
/// key is known): a coordinator with a larger key is refused at Setup,
/// naming the field.
#[test]
fn a_key_larger_than_the_hospitals_policy_is_refused_at_setup() {
    let mut sim = Sim::new(coordinator_config(3, params(Mode::Seed, 2)), sites(3));
    let log = observe(&mut sim, &["hospital-1"]);
    sim.run_until(100_000, |s| s.completed_rounds() == 1);
    let setup = setup_sent_to(&log, "hospital-1");
    let run = sim.coord.as_ref().unwrap().run_id().clone();
    // The test key has 1024 bits; this hospital's policy now allows 512.
    sim.hospital_config = Some(Box::new(|c| c.policy.max_key_bits = 512));
    sim.restart_hospital("hospital-1");
    let err = sim
        .inject(
            COORD,
            "hospital-1",
            Envelope::new(run, 1, COORD, Body::Setup(setup)),
        )
        .expect_err("a key above the policy must be refused");
    assert!(matches!(err, Error::PolicyRefused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("1024 bits") && text.contains("max_key_bits"),
        "{text}"
    );
}

/// The first `Setup` the observed traffic `log` shows going to `to`.
fn setup_sent_to(log: &Log, to: &str) -> Setup {
    log.borrow()
        .iter()
        .find_map(|(_, t, env)| match &env.body {
            Body::Setup(s) if t == to => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{to} was set up"))
}
