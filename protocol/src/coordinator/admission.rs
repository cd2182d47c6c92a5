//! Admission: hospitals joining (and rejoining) a run, the start of the run
//! once enough have joined, and the `Setup` each receives. It does not own the
//! rounds (see `round`).

use super::*;

/// Longest reason a withdrawing hospital may give, in bytes.
pub const MAX_WITHDRAW_REASON: usize = 2048;

/// Most training rows one hospital may announce: row sums of a whole roster
/// stay far from `u64::MAX` (and from what `f64` counts exactly).
pub(super) const MAX_ROWS: u64 = 1 << 40;

/// How `b` differs from `a`, naming columns; `None` if equal.
pub fn schema_diff(a: &Schema, b: &Schema) -> Option<String> {
    if a == b {
        return None;
    }
    let mut parts = Vec::new();
    if a.target_name != b.target_name {
        parts.push(format!(
            "target column {:?} instead of {:?}",
            b.target_name, a.target_name
        ));
    }
    let missing: Vec<&str> = a
        .feature_names
        .iter()
        .filter(|c| !b.feature_names.contains(c))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = b
        .feature_names
        .iter()
        .filter(|c| !a.feature_names.contains(c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        parts.push(format!("missing columns {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("unexpected columns {}", extra.join(", ")));
    }
    if missing.is_empty() && extra.is_empty() && a.feature_names != b.feature_names {
        parts.push(format!(
            "columns in another order: {} instead of {}",
            b.feature_names.join(", "),
            a.feature_names.join(", ")
        ));
    }
    if parts.is_empty() {
        parts.push("schemas differ".into());
    }
    Some(parts.join("; "))
}

impl CoordinatorMachine {
    pub(super) fn on_hello(&mut self, now: Instant, from: &str, h: Hello) -> Result<()> {
        let invalid = |reason: String| Error::InvalidMessage {
            peer: from.to_owned(),
            kind: "hello",
            reason,
        };
        if h.name != from {
            return Err(invalid(format!("names itself {:?}", h.name)));
        }
        if h.rows == 0 || h.rows > MAX_ROWS {
            return Err(invalid(format!(
                "announces {} training rows (1 to {MAX_ROWS} accepted)",
                h.rows
            )));
        }
        if let Some(max) = self.config.max_features {
            if h.schema.feature_names.len() > max {
                return Err(invalid(format!(
                    "announces {} feature columns; this coordinator accepts at most {max} \
                     (its `max_features`)",
                    h.schema.feature_names.len()
                )));
            }
        }
        if let Some(a) = &h.address {
            // A peer address the others will dial: an IP and port, nothing else.
            if a.len() > 64 || a.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "announces an address that is not an IP:port".into(),
                ));
            }
        }
        if h.schema.feature_names.is_empty() {
            return Err(invalid("announces no feature columns".into()));
        }
        self.check_consortium(from, &h)?;
        if let Some(run_schema) = &self.schema {
            if let Some(detail) = schema_diff(run_schema, &h.schema) {
                return Err(Error::SchemaMismatch {
                    hospital: from.to_owned(),
                    reference: "the run's schema".into(),
                    detail,
                });
            }
        }
        if matches!(self.phase, Phase::Finished | Phase::Failed) {
            return Ok(());
        }
        let rows = h.rows;
        let node = self.nodes.get_mut(from).expect("checked by the caller");
        node.address = h.address.unwrap_or_else(|| node.roster_address.clone());
        node.schema = Some(h.schema);
        node.rows = rows;
        node.connected = true;
        let previous = node.state;
        if node.excluded.is_some() {
            // It reported a failure of its own that retrying cannot heal.
            return Ok(());
        }
        self.events.push_back(CoordinatorEvent::HospitalJoined {
            name: from.to_owned(),
            rows,
        });
        match &self.phase {
            Phase::Joining { .. } => {
                self.nodes.get_mut(from).expect("present").state = NodeState::Waiting;
                self.try_start(now, false);
            }
            Phase::Round(rs) => {
                let in_ring = rs.ring.iter().any(|n| n == from);
                if previous == NodeState::Active && in_ring {
                    // It lost its state or our messages: set it up again and
                    // restart the attempt with it, once per round.
                    self.nodes.get_mut(from).expect("present").state = NodeState::Resync;
                    if self.count_forced_abort(from) {
                        self.abort_round(
                            now,
                            format!("{from} reconnected a second time in this round"),
                            vec![from.to_owned()],
                        );
                    } else {
                        self.abort_round(now, format!("{from} reconnected"), vec![]);
                    }
                } else if previous != NodeState::Resync {
                    self.nodes.get_mut(from).expect("present").state = NodeState::Waiting;
                }
            }
            Phase::Reporting { expected, .. } => {
                if expected.iter().any(|n| n == from) {
                    let setup = self.setup_body();
                    self.send(from, self.next_round, setup);
                    self.send(from, self.next_round, Body::Finish);
                } else {
                    self.nodes.get_mut(from).expect("present").state = NodeState::Waiting;
                }
            }
            Phase::Finished | Phase::Failed => {}
        }
        Ok(())
    }

    /// A hello's data must follow the run's consortium schema (the same
    /// file, by hash), or none when the run has none; a mismatch names the
    /// columns that differ where the feature names show it.
    fn check_consortium(&self, from: &str, h: &Hello) -> Result<()> {
        let mismatch = |detail: String| Error::SchemaMismatch {
            hospital: from.to_owned(),
            reference: "the consortium schema".into(),
            detail,
        };
        let Some(c) = &self.config.consortium else {
            return match &h.schema_hash {
                Some(_) => Err(mismatch(
                    "the hospital's data follow a consortium schema, but this run has none \
                     configured (set `schema` in the coordinator's config)"
                        .into(),
                )),
                None => Ok(()),
            };
        };
        let expected = Schema {
            feature_names: c.feature_names().to_vec(),
            target_name: c.target().to_owned(),
        };
        let columns = schema_diff(&expected, &h.schema);
        match &h.schema_hash {
            None => Err(mismatch(format!(
                "the hospital has no consortium schema configured (it reads its CSV columns as \
                 given){}",
                columns.map(|d| format!(": {d}")).unwrap_or_default()
            ))),
            Some(hash) if *hash != c.hash_hex() => Err(mismatch(match columns {
                Some(d) => format!("its schema file differs: {d}"),
                None => format!(
                    "its schema file differs (hash {hash}, the run's {}) in imputation, \
                     scaling or ignored columns",
                    c.hash_hex()
                ),
            })),
            Some(_) => match columns {
                // The same hash with other feature names: not what a node
                // built from that file announces.
                Some(d) => Err(Error::InvalidMessage {
                    peer: from.to_owned(),
                    kind: "hello",
                    reason: format!("its features do not match its schema hash: {d}"),
                }),
                None => Ok(()),
            },
        }
    }

    /// A roster hospital that cannot take part says why (before it joined;
    /// in a round the same message is a deterministic abort): the run stops
    /// waiting for it, and stops at once, with every reason given, when the
    /// others can no longer reach the minimum.
    pub(super) fn on_withdraw(&mut self, now: Instant, from: &str, reason: &str) -> Result<()> {
        if reason.len() > MAX_WITHDRAW_REASON {
            return Err(Error::InvalidMessage {
                peer: from.to_owned(),
                kind: "abort",
                reason: format!(
                    "its reason has {} bytes (at most {MAX_WITHDRAW_REASON})",
                    reason.len()
                ),
            });
        }
        let node = self.nodes.get_mut(from).expect("checked by the caller");
        if node.state == NodeState::Active {
            // A member of the run: its failures arrive in the round.
            return Err(Error::Unexpected {
                peer: from.to_owned(),
                kind: "abort",
                why: "a withdrawal from a hospital already in the run".into(),
            });
        }
        node.excluded = Some(reason.to_owned());
        node.state = NodeState::Dropped;
        self.events.push_back(CoordinatorEvent::HospitalWithdrew {
            name: from.to_owned(),
            reason: reason.to_owned(),
        });
        if let Phase::Joining { .. } = self.phase {
            self.try_start(now, false);
        }
        Ok(())
    }

    pub(super) fn try_start(&mut self, now: Instant, deadline_passed: bool) {
        let joined: Vec<String> = self
            .config
            .roster
            .iter()
            .filter(|m| self.nodes[&m.name].state == NodeState::Waiting)
            .map(|m| m.name.clone())
            .collect();
        let excluded = self
            .config
            .roster
            .iter()
            .filter(|m| self.nodes[&m.name].excluded.is_some())
            .count();
        // Hospitals that withdrew are not waited for.
        let all = joined.len() + excluded == self.config.roster.len();
        let hopeless = self.config.roster.len() - excluded < self.min_hospitals();
        if hopeless {
            // Whoever else joins, the run cannot reach its minimum: say so now,
            // with the reasons of those that cannot take part.
            let missing: Vec<String> = self
                .config
                .roster
                .iter()
                .filter(|m| self.nodes[&m.name].excluded.is_some())
                .map(|m| m.name.clone())
                .collect();
            let reasons = self.exclusion_reasons(&missing);
            let err = Error::TooFewHospitals {
                available: self.config.roster.len() - excluded,
                min: self.min_hospitals(),
                missing,
                reasons,
            };
            self.fail(err);
            return;
        }
        if !all && !deadline_passed {
            return;
        }
        if joined.len() < self.min_hospitals() {
            let missing: Vec<String> = self
                .config
                .roster
                .iter()
                .filter(|m| !joined.contains(&m.name))
                .map(|m| m.name.clone())
                .collect();
            let reasons = self.exclusion_reasons(&missing);
            let err = Error::TooFewHospitals {
                available: joined.len(),
                min: self.min_hospitals(),
                missing,
                reasons,
            };
            self.fail(err);
            return;
        }
        if self.schema.is_none() {
            let reference = &joined[0];
            let ref_schema = self.nodes[reference]
                .schema
                .clone()
                .expect("joined nodes have a schema");
            for name in &joined[1..] {
                let s = self.nodes[name].schema.as_ref().expect("joined");
                if let Some(detail) = schema_diff(&ref_schema, s) {
                    let err = Error::SchemaMismatch {
                        hospital: name.clone(),
                        reference: reference.clone(),
                        detail,
                    };
                    self.fail(err);
                    return;
                }
            }
            self.cursor = Some(self.plan(ref_schema.feature_names.len()).cursor());
            self.schema = Some(ref_schema);
        }
        self.begin_round(now);
    }

    pub(super) fn setup_body(&self) -> Body {
        let pk = self.sk.public_key();
        Body::Setup(Setup {
            public_key: Bytes(pk.to_bytes()),
            key_fingerprint: pk.fingerprint(),
            params: self.config.params.clone(),
            history: self.history.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(cols: &[&str], target: &str) -> Schema {
        Schema {
            feature_names: cols.iter().map(|c| c.to_string()).collect(),
            target_name: target.into(),
        }
    }

    #[test]
    fn schema_diff_names_the_columns() {
        let a = schema(&["age", "bmi", "bp"], "target");
        assert_eq!(schema_diff(&a, &a), None);
        let d = schema_diff(&a, &schema(&["age", "bmi", "s1"], "target")).unwrap();
        assert!(
            d.contains("missing columns bp") && d.contains("unexpected columns s1"),
            "{d}"
        );
        let d = schema_diff(&a, &schema(&["bmi", "age", "bp"], "target")).unwrap();
        assert!(d.contains("another order"), "{d}");
        let d = schema_diff(&a, &schema(&["age", "bmi", "bp"], "y")).unwrap();
        assert!(d.contains("\"y\""), "{d}");
    }
}
