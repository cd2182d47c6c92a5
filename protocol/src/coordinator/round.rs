//! The round loop: ring proposal, the running sum's path and its receipts,
//! unmasking exactly one member set, the durable aggregate, acknowledgements,
//! aborts and retries with blame. It does not own admission or the report.

use super::*;

impl CoordinatorMachine {
    /// Starts an attempt of `next_round` with a fresh mask epoch. On a round's first
    /// attempt (a round boundary) waiting hospitals are set up and enter the ring;
    /// retries only re-admit ring members that reconnected, so a flapping node
    /// cannot stall a round.
    pub(super) fn begin_round(&mut self, now: Instant) {
        let boundary = self.attempts == 0;
        let waiting: Vec<String> = self
            .config
            .roster
            .iter()
            .filter(|m| match self.nodes[&m.name].state {
                NodeState::Resync => true,
                NodeState::Waiting => boundary,
                _ => false,
            })
            .map(|m| m.name.clone())
            .collect();
        if !waiting.is_empty() {
            let setup = self.setup_body();
            for name in waiting {
                self.send(&name, self.next_round, setup.clone());
                self.nodes.get_mut(&name).expect("roster").state = NodeState::Active;
            }
        }
        let Some(kind) = self.cursor.as_ref().and_then(Cursor::next) else {
            self.start_reporting(now);
            return;
        };
        if let Err(e) = self.codec_for(kind) {
            self.fail(e);
            return;
        }
        let ring: Vec<Member> = self
            .config
            .roster
            .iter()
            .filter(|m| self.nodes[&m.name].state == NodeState::Active)
            .filter(|m| self.committed.as_ref().is_none_or(|c| c.contains(&m.name)))
            .map(|m| Member {
                name: m.name.clone(),
                address: self.nodes[&m.name].address.clone(),
            })
            .collect();
        if let Some(c) = &self.committed {
            if ring.len() != c.len() {
                let present: Vec<&String> = ring.iter().map(|m| &m.name).collect();
                let err = Error::SetIncomplete {
                    round: self.next_round,
                    members: c.clone(),
                    missing: c.iter().filter(|n| !present.contains(n)).cloned().collect(),
                };
                self.fail(err);
                return;
            }
        }
        if ring.len() < self.min_hospitals() {
            let err = self.too_few(ring.len(), &[]);
            self.fail(err);
            return;
        }
        if ring.len() as u64 > self.config.params.fixed_point.max_addends {
            let err = Error::Config(format!(
                "{} hospitals exceed the fixed-point encoding's max_addends {}",
                ring.len(),
                self.config.params.fixed_point.max_addends
            ));
            self.fail(err);
            return;
        }
        self.epoch_counter += 1;
        let epoch = (u64::from(self.incarnation) << 32) | u64::from(self.epoch_counter);
        let n_total_rows = ring.iter().map(|m| self.nodes[&m.name].rows).sum();
        let names: Vec<String> = ring.iter().map(|m| m.name.clone()).collect();
        let start = Body::RoundStart(RoundStart {
            epoch,
            ring,
            n_total_rows,
        });
        for name in &names {
            self.send(name, self.next_round, start.clone());
        }
        self.events.push_back(CoordinatorEvent::RoundStarted {
            round: self.next_round,
            step: kind,
            epoch,
            ring: names.clone(),
        });
        self.attempts += 1;
        self.phase = Phase::Round(RoundState {
            round: self.next_round,
            epoch,
            ring: names,
            deadline: now + self.config.round_timeout,
            step: Step::Collecting {
                started: BTreeSet::new(),
                received: BTreeSet::new(),
            },
        });
    }

    /// Fails the run because round `round` cannot complete, for `reason`.
    pub(super) fn fail_round(&mut self, round: u32, reason: String) {
        let err = Error::RoundFailed {
            round,
            attempts: self.attempts,
            reason,
        };
        self.fail(err);
    }

    pub(super) fn drop_node(&mut self, name: &str, round: u32, reason: String) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.state = NodeState::Dropped;
        }
        self.events.push_back(CoordinatorEvent::NodeDropped {
            name: name.to_owned(),
            round,
            reason,
        });
    }

    /// Abandons the current attempt, drops `drop` (if enough remain) and retries.
    pub(super) fn abort_round(&mut self, now: Instant, reason: String, drop: Vec<String>) {
        let (round, epoch, ring, acking) = match &self.phase {
            Phase::Round(rs) => (
                rs.round,
                rs.epoch,
                rs.ring.clone(),
                matches!(rs.step, Step::Acking { .. }),
            ),
            _ => return,
        };
        if let Some(c) = &self.committed {
            if !acking && drop.iter().any(|n| c.contains(n)) {
                // The set was asked to unmask: it completes as it is or not at all.
                let err = Error::SetIncomplete {
                    round,
                    members: c.clone(),
                    missing: drop.clone(),
                };
                self.fail(err);
                return;
            }
        }
        let remaining = ring
            .iter()
            .filter(|n| !drop.contains(n) && self.nodes[*n].state != NodeState::Dropped)
            .count();
        if remaining < self.min_hospitals() {
            let err = self.too_few(remaining, &drop);
            self.fail(err);
            return;
        }
        if acking {
            // The aggregate is out and hospitals are applying it: the round cannot
            // be redone. Drop who must go and complete once the rest acknowledged;
            // a reconnected member is set up again at the next round.
            for name in &drop {
                self.drop_node(name, round, reason.clone());
            }
            if self.acks_complete() {
                self.complete_round(now);
            }
            return;
        }
        for name in &ring {
            if self.nodes[name].connected {
                let body = Body::Abort(Abort {
                    epoch,
                    reason: reason.clone(),
                    dropped: drop.clone(),
                    committed: None,
                    deterministic: false,
                });
                self.send(name, round, body);
            }
        }
        self.events.push_back(CoordinatorEvent::RoundAborted {
            round,
            reason: reason.clone(),
        });
        for name in &drop {
            self.drop_node(name, round, reason.clone());
        }
        if self.attempts >= self.config.max_attempts {
            self.fail_round(round, reason);
            return;
        }
        self.begin_round(now);
    }

    pub(super) fn on_ring_pass(
        &mut self,
        now: Instant,
        from: &str,
        round: u32,
        p: RingPass,
    ) -> Result<()> {
        let rs = self.current_round(from, "ring_pass", round, p.epoch)?;
        let tail = rs.ring.last().expect("rings are never empty");
        if tail != from {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "ring_pass",
                why: format!("only the tail ({tail}) sends the sum to the coordinator"),
            });
        }
        if !matches!(rs.step, Step::Collecting { .. }) {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "ring_pass",
                why: "the round's sum was already received".into(),
            });
        }
        let codec = self.codec.as_ref().expect("a running round has a codec");
        let cts = match codec.parse(from, &p) {
            Ok(cts) => cts,
            Err(err) => {
                self.abort_round(now, format!("rejected the sum: {err}"), vec![]);
                return Err(err);
            }
        };
        if !self.config.params.masks {
            let RunKey::Private(sk) = &self.sk else {
                unreachable!("threshold runs have masks (validate_config)")
            };
            let plaintexts = match codec.decrypt_raw(sk, &cts) {
                Ok(pt) => pt,
                Err(err) => {
                    self.abort_round(now, format!("rejected the sum: {err}"), vec![]);
                    return Err(err);
                }
            };
            return self.finalize_aggregate(now, from, plaintexts);
        }
        // Ask exactly this attempt's members to unmask; from now on the round
        // completes with this set or not at all. The parsed ciphertexts are
        // under the run's key, so decrypting them cannot fail: it is left for
        // the driver's `poll_work` (after the requests went out) or the last
        // reveal, whichever comes first. What is sent, and when it is allowed
        // to be sent, is unchanged.
        let digest = self.sk.threshold().map(|_| crate::wire::sum_digest(&cts));
        let Phase::Round(rs) = &mut self.phase else {
            unreachable!("checked above")
        };
        rs.step = Step::Unmasking {
            sum: MaskedSum::Encrypted(cts),
            reveals: BTreeMap::new(),
            digest,
            requests: 0,
        };
        self.committed = Some(rs.ring.clone());
        self.repeat_unmask(now);
        Ok(())
    }

    /// Sends `Unmask` for the committed set to every member of the current
    /// attempt and restarts the round timer.
    pub(super) fn repeat_unmask(&mut self, now: Instant) {
        let Phase::Round(rs) = &mut self.phase else {
            return;
        };
        let Step::Unmasking {
            requests, digest, ..
        } = &mut rs.step
        else {
            return;
        };
        *requests += 1;
        let sum_digest = digest.clone().map(Bytes);
        rs.deadline = now + self.config.round_timeout;
        let (round, epoch, ring) = (rs.round, rs.epoch, rs.ring.clone());
        let body = Body::Unmask(Unmask {
            epoch,
            members: ring.clone(),
            sum_digest,
        });
        for name in &ring {
            self.send(name, round, body.clone());
        }
    }

    pub(super) fn on_reveal(
        &mut self,
        now: Instant,
        from: &str,
        round: u32,
        r: Reveal,
    ) -> Result<()> {
        let next_round = self.next_round;
        let run_id = self.run_id.clone();
        let roster: Vec<String> = self.config.roster.iter().map(|m| m.name.clone()).collect();
        let rs = match &mut self.phase {
            Phase::Round(rs) if rs.round == round => rs,
            _ => {
                return Err(if round < next_round {
                    Error::StaleRound {
                        peer: from.to_owned(),
                        got: round,
                        current: next_round,
                    }
                } else {
                    Error::Unexpected {
                        peer: from.to_owned(),
                        kind: "reveal",
                        why: "no round is being unmasked".into(),
                    }
                })
            }
        };
        if !rs.ring.iter().any(|n| n == from) {
            return Err(Error::UnknownPeer {
                peer: from.to_owned(),
                role: "in the set being unmasked",
            });
        }
        let Step::Unmasking {
            reveals, digest, ..
        } = &mut rs.step
        else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "reveal",
                why: "no set is being unmasked".into(),
            });
        };
        let invalid = |reason: String| Error::InvalidMessage {
            peer: from.to_owned(),
            kind: "reveal",
            reason,
        };
        if r.set_hash.0
            != crate::hospital::state::set_hash(
                &run_id,
                round,
                &rs.ring,
                digest.as_deref().map(|d| (rs.epoch, d)),
            )
        {
            return Err(invalid("it is for another member set".into()));
        }
        if r.self_seed.0.len() != SEED_BYTES {
            return Err(invalid("the self-mask seed is not 32 bytes".into()));
        }
        let mut peers = BTreeSet::new();
        for p in &r.pair_seeds {
            if p.seed.0.len() != SEED_BYTES
                || rs.ring.contains(&p.peer)
                || !roster.contains(&p.peer)
                || !peers.insert(p.peer.as_str())
            {
                return Err(invalid(format!(
                    "its seed with {:?} is malformed, repeated or with a member of the set",
                    p.peer
                )));
            }
        }
        reveals.insert(from.to_owned(), r);
        if reveals.len() < rs.ring.len() {
            return Ok(());
        }
        self.complete_unmasking(now)
    }

    /// Every member revealed: removes the masks and finalizes the aggregate
    /// (a threshold run asks for partial decryptions instead). Waits while
    /// the sum's decryption is with the driver ([`MaskedSum::InFlight`]):
    /// `handle_work_done` calls this again.
    pub(super) fn complete_unmasking(&mut self, now: Instant) -> Result<()> {
        let Phase::Round(rs) = &mut self.phase else {
            return Ok(());
        };
        if matches!(
            rs.step,
            Step::Unmasking {
                sum: MaskedSum::InFlight,
                ..
            }
        ) {
            return Ok(());
        }
        let round = rs.round;
        // The tail sent the sum: an aggregate that decodes to garbage is
        // reported against its ring pass.
        let from = rs.ring.last().cloned().unwrap_or_default();
        let from = from.as_str();
        let Step::Unmasking { sum, reveals, .. } = std::mem::replace(
            &mut rs.step,
            Step::Collecting {
                started: BTreeSet::new(),
                received: BTreeSet::new(),
            },
        ) else {
            unreachable!("matched above")
        };
        let seed = |b: &Bytes| {
            let mut s = zeroize::Zeroizing::new([0u8; SEED_BYTES]);
            s.copy_from_slice(&b.0);
            s
        };
        let masks: Vec<MaskSet> = reveals
            .iter()
            .map(|(name, r)| {
                let pairs = r
                    .pair_seeds
                    .iter()
                    .map(|p| (p.peer.clone(), seed(&p.seed)))
                    .collect();
                MaskSet::new(name.clone(), round, Some(seed(&r.self_seed)), pairs)
            })
            .collect();
        let sk = match &self.sk {
            RunKey::Private(sk) => sk,
            RunKey::Threshold(_) => {
                // The members decrypt: ask t of them for the agreed sum.
                let MaskedSum::Encrypted(cts) = sum else {
                    unreachable!("threshold sums are never decrypted here")
                };
                rs.step = Step::Decrypting {
                    cts,
                    masks,
                    asked: BTreeMap::new(),
                    partials: BTreeMap::new(),
                    unavailable: BTreeMap::new(),
                };
                self.ask_partials(now);
                self.decryption_deadline(now);
                return Ok(());
            }
        };
        let codec = self.codec.as_ref().expect("a running round has a codec");
        let mut plaintexts = match sum.into_plaintexts(codec, sk) {
            Ok(pt) => pt,
            Err(err) => {
                // Not for ciphertexts parsed under the run's key; the set is
                // fixed, so no retry with other members.
                self.fail_round(round, format!("the sum does not decrypt: {err}"));
                return Ok(());
            }
        };
        codec.unmask(&mut plaintexts, &masks);
        self.finalize_aggregate(now, from, plaintexts)
    }

    /// Threshold runs: asks members of the set for partial decryptions until
    /// `t` valid ones arrived or are outstanding, from members that can
    /// still answer (connected, not refused this round), starting at a
    /// member that rotates with the round so the work is shared. Fails the
    /// run when fewer than `t` can.
    pub(super) fn ask_partials(&mut self, now: Instant) {
        let Some(t) = self.sk.threshold().map(|t| t.threshold() as usize) else {
            return;
        };
        let Phase::Round(rs) = &mut self.phase else {
            return;
        };
        let Step::Decrypting {
            cts,
            asked,
            partials,
            unavailable,
            ..
        } = &mut rs.step
        else {
            return;
        };
        let outstanding = asked
            .keys()
            .filter(|n| !partials.contains_key(*n) && !unavailable.contains_key(*n))
            .count();
        let need = t.saturating_sub(partials.len() + outstanding);
        let len = rs.ring.len();
        let start = rs.round as usize % len;
        let fresh: Vec<String> = (0..len)
            .map(|k| &rs.ring[(start + k) % len])
            .filter(|n| !asked.contains_key(*n) && !unavailable.contains_key(*n))
            .filter(|n| self.nodes[*n].connected)
            .take(need)
            .cloned()
            .collect();
        if fresh.len() < need {
            let mut why: Vec<String> = unavailable
                .iter()
                .map(|(n, w)| format!("{n}: {w}"))
                .collect();
            why.extend(
                rs.ring
                    .iter()
                    .filter(|n| !asked.contains_key(*n) && !unavailable.contains_key(*n))
                    .filter(|n| !self.nodes[*n].connected)
                    .map(|n| format!("{n}: not connected")),
            );
            let pending = (outstanding + fresh.len()) as u32;
            let got = partials.len() as u32;
            let err = Error::TooFewPartials {
                round: rs.round,
                needed: t as u32,
                got,
                pending,
                missing: (t as u32).saturating_sub(got + pending),
                unavailable: why,
            };
            self.fail(err);
            return;
        }
        asked.extend(fresh.iter().map(|n| (n.clone(), now)));
        let codec = self.codec.as_ref().expect("a running round has a codec");
        let body = Body::Decrypt(codec.to_wire(rs.epoch, cts));
        let round = rs.round;
        for name in fresh {
            self.send(&name, round, body.clone());
        }
    }

    /// Threshold runs: `name` will give no partial decryption this round
    /// (`why`); asks another member if it was asked. `true` if the round is
    /// being decrypted (the loss is handled here, whatever else it means).
    pub(super) fn decryption_lost(&mut self, now: Instant, name: &str, why: &str) -> bool {
        let Phase::Round(rs) = &mut self.phase else {
            return false;
        };
        let Step::Decrypting {
            asked,
            partials,
            unavailable,
            ..
        } = &mut rs.step
        else {
            return false;
        };
        if !rs.ring.iter().any(|n| n == name) || partials.contains_key(name) {
            return true;
        }
        unavailable
            .entry(name.to_owned())
            .or_insert_with(|| why.to_owned());
        if asked.contains_key(name) {
            self.ask_partials(now);
        }
        true
    }

    /// Threshold runs: the round's deadline is the earliest of the
    /// outstanding requests' own deadlines.
    pub(super) fn decryption_deadline(&mut self, now: Instant) {
        let timeout = self.config.round_timeout;
        let Phase::Round(rs) = &mut self.phase else {
            return;
        };
        let Step::Decrypting {
            asked,
            partials,
            unavailable,
            ..
        } = &rs.step
        else {
            return;
        };
        rs.deadline = asked
            .iter()
            .filter(|(n, _)| !partials.contains_key(*n) && !unavailable.contains_key(*n))
            .map(|(_, at)| *at + timeout)
            .min()
            .unwrap_or(now + timeout);
    }

    pub(super) fn on_partial(
        &mut self,
        now: Instant,
        from: &str,
        round: u32,
        p: crate::wire::Partial,
    ) -> Result<()> {
        let key = match &self.sk {
            RunKey::Threshold(t) => t.clone(),
            RunKey::Private(_) => {
                return Err(Error::Unexpected {
                    peer: from.to_owned(),
                    kind: "partial",
                    why: "this run's key is not a threshold key".into(),
                })
            }
        };
        let rs = self.current_round(from, "partial", round, p.epoch)?;
        let Step::Decrypting {
            cts,
            asked,
            partials,
            unavailable,
            ..
        } = &mut rs.step
        else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "partial",
                why: "no sum is being decrypted".into(),
            });
        };
        if !asked.contains_key(from) || unavailable.contains_key(from) {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "partial",
                why: "it was not asked for a partial decryption (or already failed to give one)"
                    .into(),
            });
        }
        if partials.contains_key(from) {
            return Ok(());
        }
        let index = key
            .index_of(from)
            .expect("every roster hospital is a party");
        let number = |b: &Bytes| BigUint::from_bytes_be(&b.0);
        let batch = paillier::threshold::BatchPartial {
            index,
            values: p.values.iter().map(number).collect(),
            challenge: number(&p.challenge),
            response: number(&p.response),
        };
        match key.key().verify_batch(cts, batch) {
            Ok(v) => {
                partials.insert(from.to_owned(), v);
            }
            Err(e) => {
                let why = format!("its partial decryption is invalid: {e}");
                unavailable.insert(from.to_owned(), why.clone());
                self.ask_partials(now);
                return Err(Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "partial",
                    reason: why,
                });
            }
        }
        if partials.len() < key.threshold() as usize {
            return Ok(());
        }
        let Step::Decrypting {
            cts,
            masks,
            partials,
            ..
        } = std::mem::replace(
            &mut rs.step,
            Step::Collecting {
                started: BTreeSet::new(),
                received: BTreeSet::new(),
            },
        )
        else {
            unreachable!("matched above")
        };
        let verified: Vec<_> = partials.into_values().collect();
        let mut plaintexts = match key.key().combine_batch(&cts, &verified) {
            Ok(pt) => pt,
            Err(err) => {
                self.fail_round(
                    round,
                    format!("the partial decryptions do not combine: {err}"),
                );
                return Ok(());
            }
        };
        let codec = self.codec.as_ref().expect("a running round has a codec");
        codec.unmask(&mut plaintexts, &masks);
        self.finalize_aggregate(now, from, plaintexts)
    }

    /// Decodes the unmasked sum of the current attempt, makes it durable (a
    /// checkpoint event, before any transmit) and broadcasts it.
    pub(super) fn finalize_aggregate(
        &mut self,
        now: Instant,
        from: &str,
        plaintexts: Vec<BigUint>,
    ) -> Result<()> {
        let Phase::Round(rs) = &self.phase else {
            unreachable!("only within a round")
        };
        let (round, ring) = (rs.round, rs.ring.clone());
        let codec = self.codec.as_ref().expect("a running round has a codec");
        let sum = match codec.decode_sum(&plaintexts, ring.len() as u64) {
            Ok(sum) if sum.iter().all(|v| v.is_finite()) => sum,
            Ok(_) => {
                let err = Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "ring_pass",
                    reason: "the aggregate decodes to non-finite values".into(),
                };
                self.fail(err);
                return Ok(());
            }
            Err(err) => {
                // The set is fixed: this cannot be retried with other members.
                self.fail_round(
                    round,
                    format!("the unmasked aggregate does not decode: {err}"),
                );
                return Ok(());
            }
        };
        let record = AggregateRecord {
            round,
            sum,
            n_hospitals: ring.len() as u32,
            n_total_rows: ring.iter().map(|n| self.nodes[n].rows).sum(),
        };
        let cursor = self.cursor.as_mut().expect("a running round has a plan");
        let step = match cursor.advance(&record) {
            Ok(step) => step,
            Err(reason) => {
                self.fail_round(
                    round,
                    format!("the aggregate does not fit the run's plan: {reason}"),
                );
                return Ok(());
            }
        };
        if let Some(d) = cursor.divergence() {
            // Retrying cannot help and further rounds only grow the model:
            // stop before this aggregate is committed or sent, with the cause.
            let reason = d.to_string();
            self.fail_round(round, reason);
            return Ok(());
        }
        if step == StepKind::Statistics {
            // Every hospital derives its preprocessing from this very sum; a
            // sum it cannot use (a column without values) stops the run here
            // rather than at every hospital.
            if let Err(e) = self.preprocessor(&record) {
                self.fail_round(round, format!("the pooled statistics are unusable: {e}"));
                return Ok(());
            }
        }
        self.history.push(record.clone());
        self.summaries.push(RoundSummary {
            round,
            step,
            participants: ring.clone(),
            test_mse: BTreeMap::new(),
            attempts: self.attempts,
        });
        self.next_round += 1;
        self.committed = None;
        // Durable before it is broadcast: a resumed coordinator re-sends this
        // very aggregate instead of collecting a second one.
        let checkpoint = self.checkpoint();
        self.events
            .push_back(CoordinatorEvent::Checkpoint(Box::new(checkpoint)));
        let body = Body::Aggregate(Aggregate { record });
        for name in &ring {
            self.send(name, round, body.clone());
        }
        let Phase::Round(rs) = &mut self.phase else {
            unreachable!("only within a round")
        };
        rs.step = Step::Acking {
            acked: BTreeMap::new(),
        };
        rs.deadline = now + self.config.round_timeout;
        Ok(())
    }

    /// A hospital's `Abort`: a complaint about the attempt, or a refusal that
    /// names the set it is committed to.
    pub(super) fn on_hospital_abort(
        &mut self,
        now: Instant,
        from: &str,
        round: u32,
        a: Abort,
    ) -> Result<()> {
        // Only a member of the attempt under way may abort it (a dropped
        // member aiming at the retry's epoch would otherwise exhaust the
        // round's attempts).
        let rs = self.current_round(from, "abort", round, a.epoch)?;
        if matches!(rs.step, Step::Decrypting { .. }) {
            // Every member revealed: the set is fixed and needs only t
            // partial decryptions, so an abort now (whoever caused it) is
            // this member's loss for this decryption, not a retry.
            if a.deterministic {
                if let Some(n) = self.nodes.get_mut(from) {
                    n.excluded = Some(a.reason.clone());
                }
            }
            let why = format!("it aborted: {}", a.reason);
            self.decryption_lost(now, from, &why);
            return Ok(());
        }
        if a.deterministic {
            // Retrying with this hospital cannot help. When the others are
            // enough, they go on without it (its data alone may be at fault);
            // else the run stops now, with the cause.
            let remaining = match &self.phase {
                Phase::Round(rs) => rs
                    .ring
                    .iter()
                    .filter(|n| n.as_str() != from && self.nodes[*n].state != NodeState::Dropped)
                    .count(),
                _ => 0,
            };
            if remaining >= self.min_hospitals() {
                if let Some(n) = self.nodes.get_mut(from) {
                    n.excluded = Some(a.reason.clone());
                }
                self.abort_round(
                    now,
                    format!("{from} cannot take part: {}", a.reason),
                    vec![from.to_owned()],
                );
            } else {
                self.fail_round(round, format!("{from} reported: {}", a.reason));
            }
            return Ok(());
        }
        if let Some(set) = a.committed {
            let roster: Vec<&String> = self.config.roster.iter().map(|m| &m.name).collect();
            if set.len() < self.min_hospitals() || set.iter().any(|n| !roster.contains(&n)) {
                return Err(Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "abort",
                    reason: format!("it claims to be committed to an impossible set {set:?}"),
                });
            }
            match &self.committed {
                Some(c) if *c != set => {
                    self.fail_round(
                        round,
                        format!(
                            "{from} is committed to the member set {set:?}, others to {c:?}; \
                             the round cannot complete"
                        ),
                    );
                    return Ok(());
                }
                _ => self.committed = Some(set),
            }
            self.abort_round(now, format!("{from} refused: {}", a.reason), vec![]);
            return Ok(());
        }
        if self.count_forced_abort(from) {
            self.abort_round(
                now,
                format!("{from} forced a second abort of this round: {}", a.reason),
                vec![from.to_owned()],
            );
        } else {
            self.abort_round(now, format!("{from} reported: {}", a.reason), vec![]);
        }
        Ok(())
    }

    /// Counts an abort `name` caused; `true` when it is its second this round.
    pub(super) fn count_forced_abort(&mut self, name: &str) -> bool {
        let n = self.forced_aborts.entry(name.to_owned()).or_insert(0);
        *n += 1;
        *n >= 2
    }

    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        from: &str,
        round: u32,
        a: RoundAck,
    ) -> Result<()> {
        let rs = self.running_round(from, "round_ack", round)?;
        let Step::Acking { acked } = &mut rs.step else {
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "round_ack",
                why: "the round's aggregate was not sent yet".into(),
            });
        };
        if let Some(mse) = a.test_mse {
            if !mse.is_finite() || mse < 0.0 {
                return Err(Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "round_ack",
                    reason: format!("test MSE {mse} is not a finite non-negative number"),
                });
            }
        }
        acked.insert(from.to_owned(), a.test_mse);
        if self.acks_complete() {
            self.complete_round(now);
        }
        Ok(())
    }

    /// Whether every ring member still in the run acknowledged the aggregate.
    pub(super) fn acks_complete(&self) -> bool {
        match &self.phase {
            Phase::Round(RoundState {
                ring,
                step: Step::Acking { acked },
                ..
            }) => ring
                .iter()
                .all(|n| acked.contains_key(n) || self.nodes[n].state == NodeState::Dropped),
            _ => false,
        }
    }

    pub(super) fn complete_round(&mut self, now: Instant) {
        let Phase::Round(rs) = std::mem::replace(&mut self.phase, Phase::Failed) else {
            return;
        };
        let Step::Acking { acked } = rs.step else {
            self.phase = Phase::Round(rs);
            return;
        };
        let summary = self.summaries.last_mut().expect("finalized before acks");
        summary.test_mse = acked;
        let summary = summary.clone();
        self.attempts = 0;
        self.forced_aborts.clear();
        self.events
            .push_back(CoordinatorEvent::RoundCompleted(summary));
        self.begin_round(now);
    }
}

impl MaskedSum {
    /// The still masked plaintexts, decrypted now if they were not.
    pub(super) fn into_plaintexts(
        self,
        codec: &GradientCodec,
        sk: &PrivateKey,
    ) -> Result<Vec<BigUint>> {
        match self {
            MaskedSum::Encrypted(cts) => codec.decrypt_raw(sk, &cts),
            MaskedSum::InFlight => unreachable!("complete_unmasking waits for the work"),
            MaskedSum::Decrypted(pt) => Ok(pt),
        }
    }
}
